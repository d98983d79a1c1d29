//! `meshgate contract export|import`: a product's contract as an Open Data Contract
//! Standard (ODCS v3.1) document, and back.
//!
//! Both formats share a product's identity, version, description, owner, tags, the
//! freshness SLA, and per table its name, description, storage (as a server named after
//! the table), columns (types, nullability, descriptions, tags), primary and partition
//! keys, relationships and the quality rules ODCS's library names (`nullValues`,
//! `invalidValues`, `duplicateValues`, `rowCount`); those round-trip. What ODCS has no
//! field for travels as ODCS allows and round-trips through meshgate too: a completeness
//! SLA, the quality schedule, derivations, time travel and a relationship's cardinality
//! in `customProperties`, a `range` check as a `custom` rule of engine `meshgate`. A
//! product's policy is not exported, and an imported descriptor has none: it publishes nothing until its owners say who may read it.

mod export;
mod import;
pub mod odcs;

use std::io::Read;
use std::path::{Path, PathBuf};

use meshgate_catalog::{
    DescriptorOrigin, Problem, ProductDescriptor, parse_descriptor, product_from_text,
    validate_descriptor,
};
use serde_json::Value;

pub use export::export;
pub use import::import;
pub use odcs::DataContract;

/// `customProperties` of a contract: the completeness SLA.
const CUSTOM_COMPLETENESS: &str = "meshgateCompleteness";
/// `customProperties` of a contract: how often the quality agent measures.
const CUSTOM_QUALITY_SCHEDULE: &str = "meshgateQualitySchedule";
/// `customProperties` of a schema object: its derivation (inputs, transform, mode).
const CUSTOM_DERIVED: &str = "meshgateDerived";
/// `customProperties` of a schema object: its time-travel window.
const CUSTOM_TIME_TRAVEL: &str = "meshgateTimeTravel";

/// Why a contract cannot be exported or imported.
#[derive(Debug, thiserror::Error)]
pub enum ContractError {
    /// A file cannot be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// No descriptor publishes the product asked for.
    #[error("no descriptor {} in the mesh (write domain.product)", .0)]
    NoSuchProduct(String),
    /// The descriptor is not valid.
    #[error(transparent)]
    Descriptor(#[from] meshgate_catalog::CatalogError),
    /// The contract is not ODCS YAML meshgate can read.
    #[error("not an ODCS contract: {0}")]
    Parse(#[source] serde_yaml::Error),
    /// The contract is not a data contract.
    #[error("not an ODCS contract: kind is '{0}', not DataContract")]
    Kind(String),
    /// The contract file is larger than any contract.
    #[error("{}: larger than {MAX_CONTRACT_BYTES} bytes; not a contract", .0.display())]
    TooLarge(PathBuf),
    /// The contract lacks what a descriptor needs.
    #[error("the contract has no {0}; a descriptor needs it")]
    Missing(&'static str),
    /// A field of the contract cannot be read: the field, and what is wrong with it.
    #[error("{0}: {1}")]
    Field(String, String),
    /// The descriptor the contract makes is not valid.
    #[error("the imported descriptor is not valid:\n{}", problems(.0))]
    Invalid(Vec<Problem>),
    /// A descriptor of the product is already in the mesh.
    #[error("{}: a descriptor is already there (--force replaces it)", .0.display())]
    AlreadyThere(PathBuf),
    /// YAML cannot be written.
    #[error("cannot write YAML: {0}")]
    Write(#[source] serde_yaml::Error),
    /// A descriptor cannot be encoded.
    #[error("cannot encode the descriptor: {0}")]
    Encode(#[source] serde_json::Error),
}

/// The largest contract file read, in bytes.
pub const MAX_CONTRACT_BYTES: u64 = 4 * 1024 * 1024;

fn problems(list: &[Problem]) -> String {
    list.iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The ODCS contract (YAML) of the product `name` (`domain.product`) of the mesh at
/// `mesh`, whose descriptor must be valid.
pub fn export_product(mesh: &Path, name: &str) -> Result<String, ContractError> {
    let Some((domain, product)) = name.split_once('.') else {
        return Err(ContractError::NoSuchProduct(name.to_string()));
    };
    let file = ["yaml", "yml"]
        .iter()
        .map(|ext| mesh.join(domain).join(format!("{product}.{ext}")))
        .find(|f| f.is_file())
        .ok_or_else(|| ContractError::NoSuchProduct(name.to_string()))?;
    let text = std::fs::read_to_string(&file).map_err(|source| ContractError::Io {
        path: file.clone(),
        source,
    })?;
    let validated = product_from_text(mesh, &file, &text)?;
    let descriptor = parse_descriptor(&file, &text)?;
    let contract = export(&descriptor, &validated);
    serde_yaml::to_string(&contract).map_err(ContractError::Write)
}

/// Reads the contract file `path`: a regular file of at most [`MAX_CONTRACT_BYTES`].
pub fn read_contract(path: &Path) -> Result<String, ContractError> {
    let io = |source| ContractError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let metadata = file.metadata().map_err(io)?;
    if !metadata.is_file() || metadata.len() > MAX_CONTRACT_BYTES {
        return Err(ContractError::TooLarge(path.to_path_buf()));
    }
    let mut text = String::new();
    file.take(MAX_CONTRACT_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(io)?;
    if text.len() as u64 > MAX_CONTRACT_BYTES {
        return Err(ContractError::TooLarge(path.to_path_buf()));
    }
    Ok(text)
}

/// Writes the descriptor `yaml` of `domain.product` into the mesh at `mesh`, as
/// `<domain>/<product>.yaml`, all at once (written beside, then renamed: the live catalog
/// never reads half a descriptor); refused when a descriptor of the product is there
/// (`.yaml` or `.yml`) unless `replace`. Returns the file written.
pub fn write_descriptor(
    mesh: &Path,
    (domain, product): (&str, &str),
    yaml: &str,
    replace: bool,
) -> Result<PathBuf, ContractError> {
    let folder = mesh.join(domain);
    let file = folder.join(format!("{product}.yaml"));
    let other = folder.join(format!("{product}.yml"));
    if !replace && (file.exists() || other.exists()) {
        return Err(ContractError::AlreadyThere(file));
    }
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ContractError::Io { path, source }
    };
    std::fs::create_dir_all(&folder).map_err(io(&folder))?;
    // Hidden while written: the live catalog skips dot files.
    let staged = folder.join(format!(".{product}.yaml.importing"));
    std::fs::write(&staged, yaml).map_err(io(&staged))?;
    std::fs::rename(&staged, &file).map_err(io(&file))?;
    if replace && other.exists() {
        std::fs::remove_file(&other).map_err(io(&other))?;
    }
    Ok(file)
}

/// The descriptor (YAML) the ODCS contract `text` makes, checked as the gateway would
/// check it at `<mesh>/<domain>/<product>.yaml`: its `domain` and `product`, and the text.
pub fn import_contract(text: &str, mesh: &Path) -> Result<(String, String, String), ContractError> {
    let contract: DataContract = serde_yaml::from_str(text).map_err(ContractError::Parse)?;
    if contract.kind != "DataContract" {
        return Err(ContractError::Kind(contract.kind));
    }
    let descriptor = import(&contract)?;
    let file = mesh
        .join(&descriptor.domain)
        .join(format!("{}.yaml", descriptor.product));
    validate_descriptor(
        &descriptor,
        DescriptorOrigin {
            mesh_root: mesh,
            folder_domain: &descriptor.domain,
            file_stem: &descriptor.product,
            file: &file,
        },
    )
    .map_err(ContractError::Invalid)?;
    let yaml = descriptor_yaml(&descriptor, &contract)?;
    Ok((descriptor.domain, descriptor.product, yaml))
}

/// `descriptor` as YAML a domain team would write: fields left at their defaults
/// omitted, and a note that it has no policy yet.
fn descriptor_yaml(
    descriptor: &ProductDescriptor,
    contract: &DataContract,
) -> Result<String, ContractError> {
    let mut value = serde_json::to_value(descriptor).map_err(ContractError::Encode)?;
    prune(&mut value);
    let body = serde_yaml::to_string(&value).map_err(ContractError::Write)?;
    Ok(format!(
        "# Imported from the ODCS contract {} (version {}).\n\
         # No policy: no one may read this product until you add one (see docs/descriptors.md).\n\
         {body}",
        contract.id, contract.version
    ))
}

/// Removes what descriptors leave out at their defaults, at every depth: nulls, empty
/// lists, unset check flags (`not_null`, `unique`), and `nullable: true`.
fn prune(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|key, v| match v {
                Value::Null => false,
                Value::Array(items) => !items.is_empty(),
                Value::Bool(flag) if key == "nullable" => !*flag,
                Value::Bool(flag) if key == "not_null" || key == "unique" => *flag,
                _ => true,
            });
            map.values_mut().for_each(prune);
        }
        Value::Array(items) => items.iter_mut().for_each(prune),
        _ => {}
    }
}
