//! A mesh: every valid product found under a mesh directory, and name resolution.
//!
//! Layout: `<mesh>/<domain>/<product>.yaml` (or `.yml`). Each domain owns its folder.
//! Other files and folders (data directories, READMEs, hidden folders) are ignored.
//! Loading never fails because of one product: a broken descriptor is reported in
//! [`MeshLoad::errors`] and left out, and the rest of the mesh serves.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::descriptor::ProductDescriptor;
use crate::error::{CatalogError, Result};
use crate::product::{Product, Table};
use crate::validate::{DescriptorOrigin, validate_descriptor};

/// The valid products of a mesh, keyed by domain then product name.
#[derive(Debug, Clone, Default)]
pub struct Mesh {
    root: PathBuf,
    products: BTreeMap<String, BTreeMap<String, Arc<Product>>>,
}

/// The outcome of loading a mesh directory.
#[derive(Debug)]
pub struct MeshLoad {
    /// The products that passed validation.
    pub mesh: Mesh,
    /// One entry per descriptor that was left out, with what to fix.
    pub errors: Vec<CatalogError>,
}

impl Mesh {
    /// Reads every descriptor under `root`.
    ///
    /// Returns `Err` only when `root` itself cannot be read; problems with individual
    /// descriptors are collected in [`MeshLoad::errors`].
    pub fn load(root: impl AsRef<Path>) -> Result<MeshLoad> {
        let root = root.as_ref();
        let mut mesh = Mesh {
            root: root.to_path_buf(),
            products: BTreeMap::new(),
        };
        let mut errors = Vec::new();
        for file in descriptor_files(root)? {
            match read_product(root, &file) {
                Ok(product) => {
                    if let Err(e) = mesh.insert(product) {
                        errors.push(e);
                    }
                }
                Err(e) => errors.push(e),
            }
        }
        for error in &errors {
            tracing::warn!(file = %error.path().display(), %error, "descriptor left out of the mesh");
        }
        Ok(MeshLoad { mesh, errors })
    }

    /// Builds a mesh from products already validated (used by tests and tools).
    pub fn from_products(
        root: impl Into<PathBuf>,
        products: impl IntoIterator<Item = Product>,
    ) -> Result<Self> {
        let mut mesh = Mesh {
            root: root.into(),
            products: BTreeMap::new(),
        };
        for product in products {
            mesh.insert(product)?;
        }
        Ok(mesh)
    }

    fn insert(&mut self, product: Product) -> Result<()> {
        let domain = self.products.entry(product.domain.clone()).or_default();
        if let Some(first) = domain.get(&product.name) {
            return Err(CatalogError::Duplicate {
                path: product.source.clone(),
                qualified_name: product.qualified_name(),
                first: first.source.clone(),
            });
        }
        domain.insert(product.name.clone(), Arc::new(product));
        Ok(())
    }

    /// The mesh directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Domains that publish at least one valid product, sorted.
    pub fn domains(&self) -> impl Iterator<Item = &str> {
        self.products.keys().map(String::as_str)
    }

    /// Products of `domain`, sorted by name; empty for an unknown domain.
    pub fn products_in(&self, domain: &str) -> impl Iterator<Item = &Arc<Product>> {
        self.products
            .get(domain)
            .into_iter()
            .flat_map(|p| p.values())
    }

    /// Every product, sorted by domain then name.
    pub fn products(&self) -> impl Iterator<Item = &Arc<Product>> {
        self.products.values().flat_map(|p| p.values())
    }

    /// The product `domain.product`.
    pub fn product(&self, domain: &str, product: &str) -> Option<&Arc<Product>> {
        self.products.get(domain)?.get(product)
    }

    /// Resolves `domain.product.table` to its product and table.
    pub fn resolve(
        &self,
        domain: &str,
        product: &str,
        table: &str,
    ) -> Option<(&Arc<Product>, &Table)> {
        let product = self.product(domain, product)?;
        let table = product.table(table)?;
        Some((product, table))
    }

    /// References that do not lead to a table of this mesh with matching columns, as
    /// (`domain.product.table` of the referencing table, what is wrong), and deprecated
    /// products whose successor the mesh does not publish (`domain.product`). Such a
    /// reference is kept (its target may be fixed or published later) but never shown.
    pub fn dangling_references(&self) -> Vec<(String, String)> {
        let mut dangling = Vec::new();
        for product in self.products() {
            if let Some(deprecation) = &product.deprecation {
                let successor = deprecation.successor.split_once('.');
                if successor.and_then(|(d, p)| self.product(d, p)).is_none() {
                    dangling.push((
                        product.qualified_name(),
                        format!(
                            "deprecation.successor is {}, which this mesh does not publish",
                            deprecation.successor
                        ),
                    ));
                }
            }
            for table in &product.tables {
                let from = format!("{}.{}", product.qualified_name(), table.name);
                for reference in &table.references {
                    let target = &reference.table;
                    let Some((_, to)) =
                        self.resolve(&target.domain, &target.product, &target.table)
                    else {
                        dangling.push((
                            from.clone(),
                            format!("references {target}, which this mesh does not publish"),
                        ));
                        continue;
                    };
                    for (column, to_column) in reference.columns.iter().zip(&reference.to) {
                        let ours = table.column(column).map(|c| &c.data_type);
                        match to.column(to_column) {
                            None => dangling.push((
                                from.clone(),
                                format!("references {target}({to_column}), which is not a column of it"),
                            )),
                            Some(theirs) if Some(&theirs.data_type) != ours => dangling.push((
                                from.clone(),
                                format!(
                                    "{column} references {target}({to_column}) of another type ({} there)",
                                    theirs.data_type
                                ),
                            )),
                            Some(_) => {}
                        }
                    }
                }
            }
        }
        dangling
    }

    /// Inputs of derived tables that this mesh cannot serve them, as
    /// (`domain.product.table` of the derived table, what is wrong): a table the mesh
    /// does not publish, or one whose product is not at the contract major version the
    /// input is pinned to. Whether the owning domain may read an input is decided by the
    /// gateway's policies (`meshgate lint --check-data --config`).
    pub fn dangling_inputs(&self) -> Vec<(String, String)> {
        let mut dangling = Vec::new();
        for product in self.products() {
            for table in &product.tables {
                let Some(derivation) = &table.derived else {
                    continue;
                };
                let from = format!("{}.{}", product.qualified_name(), table.name);
                for input in &derivation.inputs {
                    let target = &input.table;
                    let Some((source, _)) =
                        self.resolve(&target.domain, &target.product, &target.table)
                    else {
                        dangling.push((
                            from.clone(),
                            format!("reads {target}, which this mesh does not publish"),
                        ));
                        continue;
                    };
                    let major = source
                        .version
                        .split('.')
                        .next()
                        .and_then(|m| m.parse().ok());
                    if let Some(pinned) = input.major
                        && major != Some(pinned)
                    {
                        dangling.push((
                            from.clone(),
                            format!(
                                "reads {target} at contract major version {pinned}, but its \
                                 product is at version {}",
                                source.version
                            ),
                        ));
                    }
                }
            }
        }
        dangling
    }

    /// Number of valid products.
    pub fn len(&self) -> usize {
        self.products.values().map(BTreeMap::len).sum()
    }

    /// Whether the mesh has no valid product.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Lists `<root>/<domain>/<product>.yaml` (or `.yml`) files, sorted, skipping hidden
/// entries. Fails only when `root` itself cannot be read.
pub fn descriptor_files(root: &Path) -> Result<Vec<PathBuf>> {
    let dir_err = |source| CatalogError::MeshDirectory {
        path: root.to_path_buf(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(root).map_err(dir_err)? {
        let entry = entry.map_err(dir_err)?;
        let path = entry.path();
        if is_hidden(&path) || !path.is_dir() {
            continue;
        }
        let Ok(inner) = std::fs::read_dir(&path) else {
            tracing::warn!(folder = %path.display(), "cannot read domain folder; skipped");
            continue;
        };
        for file in inner.flatten() {
            let file = file.path();
            let is_yaml = file
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| e == "yaml" || e == "yml");
            if is_yaml && !is_hidden(&file) && file.is_file() {
                files.push(file);
            }
        }
    }
    files.sort();
    Ok(files)
}

fn is_hidden(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'))
}

/// Reads, parses and validates one descriptor file.
pub fn read_product(mesh_root: &Path, file: &Path) -> Result<Product> {
    let text = std::fs::read_to_string(file).map_err(|source| CatalogError::Read {
        path: file.to_path_buf(),
        source,
    })?;
    product_from_text(mesh_root, file, &text)
}

/// Parses and validates the text of the descriptor `file` (already read by the caller,
/// for instance to notice whether it changed).
pub fn product_from_text(mesh_root: &Path, file: &Path, text: &str) -> Result<Product> {
    let descriptor = parse_descriptor(file, text)?;
    let folder_domain = file
        .parent()
        .and_then(Path::file_name)
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let file_stem = file
        .file_stem()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    validate_descriptor(
        &descriptor,
        DescriptorOrigin {
            mesh_root,
            folder_domain,
            file_stem,
            file,
        },
    )
    .map_err(|problems| CatalogError::Invalid {
        path: file.to_path_buf(),
        problems,
    })
}

/// Parses descriptor YAML; the error carries the parser's line and column.
pub fn parse_descriptor(file: &Path, text: &str) -> Result<ProductDescriptor> {
    serde_yaml::from_str(text).map_err(|e| CatalogError::Parse {
        path: file.to_path_buf(),
        message: e.to_string(),
    })
}
