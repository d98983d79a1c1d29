//! `meshgate policy test <cases.yaml>`: a domain's policy cases, run offline against its
//! descriptors and fixture data through the engine every door calls, so that a policy
//! is tested like code in the domain's own CI.
//!
//! A case names a principal (subject, roles, attributes, as a token would carry them),
//! a statement, and what it must get: rows (compared as text, in any order unless
//! `ordered`), or a refusal by class (`not_found`, `permission_denied`, ...). A product
//! the principal may not read is `not_found`, exactly as for any client.
//!
//! ```yaml
//! mesh: mesh                 # relative to this file
//! config: gateway.yaml       # optional: platform rules, storage, masking key
//! cases:
//!   - name: analysts in the north see northern visits only
//!     principal: { subject: ana, roles: [analyst], attributes: { region: north } }
//!     sql: SELECT DISTINCT region FROM clinical.encounters.visits
//!     expect: { rows: [[north]] }
//!   - name: no role, no product
//!     principal: { subject: zed }
//!     sql: SELECT count(*) FROM clinical.encounters.visits
//!     expect: { error: not_found }
//! ```

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use futures::TryStreamExt;
use meshgate_catalog::{Mesh, Principal};
use meshgate_engine::{
    Auditor, Engine, Error as EngineError, Execution, PlanningRecord, PolicyEngine, ProductLoader,
    QueryOptions, QueryRequest, SentBytes, SessionFactory, SessionPublisher, Statement,
    StatementMode,
};
use serde::Deserialize;

use crate::config::GatewayConfig;
use crate::error::StartupError;

/// The issuer a case's principal has unless it names one.
pub const CASE_ISSUER: &str = "meshgate:policy-test";

/// A file of policy cases.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseFile {
    /// The mesh directory, relative to the cases file.
    pub mesh: PathBuf,
    /// A gateway configuration (platform rules, storage, masking key), relative to the
    /// cases file.
    #[serde(default)]
    pub config: Option<PathBuf>,
    /// The cases, run in order.
    pub cases: Vec<Case>,
}

/// One case: who asks what, and what they must get.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// What the case shows, as the report names it.
    pub name: String,
    /// Who asks.
    pub principal: CasePrincipal,
    /// The statement.
    pub sql: String,
    /// What the principal must get.
    pub expect: Expectation,
}

/// A principal, as a verified token would carry it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CasePrincipal {
    /// The subject.
    pub subject: String,
    /// The issuer ([`CASE_ISSUER`] unless given).
    #[serde(default)]
    pub issuer: Option<String>,
    /// Its roles.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Its attributes (bound by row filters' `principal.<name>`).
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

/// What a case must get: rows, or a refusal.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    /// The rows, each a list of values compared as text (numbers as numbers), `null`
    /// for NULL.
    #[serde(default)]
    pub rows: Option<Vec<Vec<serde_yaml::Value>>>,
    /// Whether the rows must come in the order given (else in any order).
    #[serde(default)]
    pub ordered: bool,
    /// The class of the refusal (`not_found`, `permission_denied`, `invalid_argument`,
    /// `resource_exhausted`, `failed_precondition`, `unavailable`, ...).
    #[serde(default)]
    pub error: Option<String>,
}

/// Why the cases could not be run at all (a failing case is not one of these).
#[derive(Debug, thiserror::Error)]
pub enum PolicyTestError {
    /// The cases file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The cases file is not a list of cases.
    #[error("{path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_yaml::Error,
    },
    /// A case expects both rows and an error, or neither.
    #[error("case `{0}`: expect either `rows` or `error`")]
    Expectation(String),
    /// The gateway configuration named does not load, or its masking key.
    #[error(transparent)]
    Config(#[from] StartupError),
    /// The mesh does not load whole: cases run against every product or none.
    #[error("the mesh does not load: {0}")]
    Mesh(String),
    /// The engine cannot start.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The runtime cannot start.
    #[error("cannot start the runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

/// How a run of cases ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Cases that got what they expected.
    pub passed: usize,
    /// Cases that did not.
    pub failed: usize,
}

impl CaseFile {
    /// The cases of `path`, checked.
    pub fn read(path: &Path) -> Result<Self, PolicyTestError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyTestError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut file: Self =
            serde_yaml::from_str(&text).map_err(|source| PolicyTestError::Parse {
                path: path.to_path_buf(),
                source,
            })?;
        for case in &file.cases {
            if case.expect.rows.is_some() == case.expect.error.is_some() {
                return Err(PolicyTestError::Expectation(case.name.clone()));
            }
        }
        let base = path.parent().unwrap_or(Path::new("."));
        file.mesh = base.join(&file.mesh);
        file.config = file.config.map(|c| base.join(c));
        Ok(file)
    }
}

/// Runs the cases of `path`, writing one line per case and a summary to `out`.
pub fn run(path: &Path, out: &mut impl Write) -> Result<Outcome, PolicyTestError> {
    let file = CaseFile::read(path)?;
    let mut config = match &file.config {
        Some(config) => GatewayConfig::from_file(config)?,
        None => GatewayConfig::default(),
    };
    // Every case executes: none is answered from another's kept result.
    config.engine.result_cache.enabled = false;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_stack_size(8 * 1024 * 1024)
        .enable_all()
        .build()
        .map_err(PolicyTestError::Runtime)?;
    runtime.block_on(async {
        let engine = Arc::new(engine_over(&file.mesh, &config).await?);
        let mut outcome = Outcome {
            passed: 0,
            failed: 0,
        };
        for (i, case) in file.cases.iter().enumerate() {
            let got = answer(&engine, case, i).await;
            match judge(&case.expect, &got) {
                None => {
                    outcome.passed += 1;
                    let _ = writeln!(out, "ok    {}", case.name);
                }
                Some(why) => {
                    outcome.failed += 1;
                    let _ = writeln!(out, "FAIL  {}: {why}", case.name);
                }
            }
        }
        let _ = writeln!(
            out,
            "{} case(s): {} passed, {} failed",
            file.cases.len(),
            outcome.passed,
            outcome.failed
        );
        Ok(outcome)
    })
}

/// The engine over the products of `mesh`, as a gateway configured by `config` serves
/// them (platform rules, storage, masking key, derived products' principals).
async fn engine_over(mesh: &Path, config: &GatewayConfig) -> Result<Engine, PolicyTestError> {
    let load = Mesh::load(mesh).map_err(|e| PolicyTestError::Mesh(e.to_string()))?;
    if let Some(error) = load.errors.first() {
        return Err(PolicyTestError::Mesh(error.to_string()));
    }
    let key = crate::run::masking_key(&config.masking)?;
    let policy = PolicyEngine::new(config.platform_policies.clone(), &key);
    let loader = ProductLoader::with_storage(&config.engine, &config.storage, None)
        .map_err(|e| PolicyTestError::Mesh(format!("storage: {e}")))?;
    let mut loaded = Vec::new();
    for product in load.mesh.products() {
        let compiled = loader
            .load(Arc::clone(product), None)
            .await
            .map_err(|e| PolicyTestError::Mesh(format!("{}: {e}", product.qualified_name())))?;
        loaded.push(compiled);
    }
    let resolved = loader.resolve(loaded, &policy, None).await;
    if let Some(broken) = resolved.iter().find(|c| c.health.full_reason().is_some()) {
        return Err(PolicyTestError::Mesh(format!(
            "{}: {}",
            broken.product.qualified_name(),
            broken.health.full_reason().unwrap_or_default()
        )));
    }
    let factory = SessionFactory::new(loader.template().clone(), resolved, policy);
    let auditor = Arc::new(Auditor::new(StatementMode::None));
    Ok(Engine::new(
        SessionPublisher::new(factory),
        &config.engine,
        auditor,
    )?)
}

/// What `case` gets: its rows, or the class of its refusal.
async fn answer(engine: &Arc<Engine>, case: &Case, i: usize) -> Result<Vec<RecordBatch>, String> {
    let principal = Principal {
        issuer: case
            .principal
            .issuer
            .clone()
            .unwrap_or_else(|| CASE_ISSUER.to_string()),
        subject: case.principal.subject.clone(),
        roles: case.principal.roles.iter().cloned().collect(),
        attributes: case.principal.attributes.clone(),
    };
    let planned = engine
        .plan(QueryRequest {
            principal: principal.clone(),
            statement: Statement::Sql(case.sql.clone()),
            options: QueryOptions::default(),
            query_id: format!("case-{i}"),
            rpc: "POLICY_TEST",
            span: tracing::Span::none(),
            planning_record: PlanningRecord::OnFailure,
        })
        .await
        .map_err(|e| e.code_name().to_string())?;
    let stream = engine
        .execute(
            Arc::new(planned),
            Execution {
                principal: &principal,
                options: QueryOptions::default(),
                rpc: "POLICY_TEST",
                span: tracing::Span::none(),
                sent: SentBytes::default(),
                part: 0,
            },
        )
        .await
        .map_err(|e| e.code_name().to_string())?;
    stream
        .try_collect()
        .await
        .map_err(|e| EngineError::class_of(&e).name().to_string())
}

/// Why `got` does not meet `expect`, if it does not.
fn judge(expect: &Expectation, got: &Result<Vec<RecordBatch>, String>) -> Option<String> {
    match (got, &expect.error, &expect.rows) {
        (Err(class), Some(wanted), _) => (normalized(class) != normalized(wanted))
            .then(|| format!("refused {class}, expected {wanted}")),
        (Err(class), None, _) => Some(format!("refused {class}, expected rows")),
        (Ok(batches), Some(wanted), _) => Some(format!(
            "got {} row(s), expected a refusal {wanted}",
            batches.iter().map(RecordBatch::num_rows).sum::<usize>()
        )),
        (Ok(batches), None, Some(rows)) => {
            let mut got = match cells(batches) {
                Ok(got) => got,
                Err(e) => return Some(format!("cannot show the rows: {e}")),
            };
            let mut wanted: Vec<Vec<Option<String>>> = rows
                .iter()
                .map(|row| row.iter().map(yaml_cell).collect())
                .collect();
            if !expect.ordered {
                got.sort();
                wanted.sort();
            }
            let same = got.len() == wanted.len()
                && got.iter().zip(&wanted).all(|(g, w)| {
                    g.len() == w.len() && g.iter().zip(w).all(|(a, b)| same_cell(a, b))
                });
            (!same).then(|| format!("got rows {}, expected {}", show(&got), show(&wanted)))
        }
        (Ok(_), None, None) => Some("the case expects nothing".into()),
    }
}

/// A class name as a case may write it: `not_found`, `NotFound` and `NOT_FOUND` alike.
fn normalized(class: &str) -> String {
    class
        .chars()
        .filter(|c| *c != '_')
        .flat_map(char::to_lowercase)
        .collect()
}

/// Every value of `batches` as text, row by row (`None` for NULL).
fn cells(batches: &[RecordBatch]) -> Result<Vec<Vec<Option<String>>>, arrow::error::ArrowError> {
    let options = FormatOptions::default();
    let mut rows = Vec::new();
    for batch in batches {
        let formatters = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()?;
        for row in 0..batch.num_rows() {
            rows.push(
                batch
                    .columns()
                    .iter()
                    .zip(&formatters)
                    .map(|(column, format)| {
                        (!column.is_null(row)).then(|| format.value(row).to_string())
                    })
                    .collect(),
            );
        }
    }
    Ok(rows)
}

/// A YAML value of an expected row as text (`None` for `null`).
fn yaml_cell(value: &serde_yaml::Value) -> Option<String> {
    match value {
        serde_yaml::Value::Null => None,
        serde_yaml::Value::Bool(b) => Some(b.to_string()),
        serde_yaml::Value::Number(n) => Some(n.to_string()),
        serde_yaml::Value::String(s) => Some(s.clone()),
        other => Some(
            serde_yaml::to_string(other)
                .unwrap_or_default()
                .trim()
                .to_string(),
        ),
    }
}

/// Equal text, or equal numbers however written (`3.50` and `3.5`).
fn same_cell(got: &Option<String>, wanted: &Option<String>) -> bool {
    match (got, wanted) {
        (Some(a), Some(b)) => {
            a == b || matches!((a.parse::<f64>(), b.parse::<f64>()), (Ok(x), Ok(y)) if x == y)
        }
        (None, None) => true,
        _ => false,
    }
}

fn show(rows: &[Vec<Option<String>>]) -> String {
    const SHOWN: usize = 5;
    let mut text: Vec<String> = rows
        .iter()
        .take(SHOWN)
        .map(|row| {
            let values: Vec<&str> = row.iter().map(|v| v.as_deref().unwrap_or("null")).collect();
            format!("[{}]", values.join(", "))
        })
        .collect();
    if rows.len() > SHOWN {
        text.push(format!("... ({} rows)", rows.len()));
    }
    format!("[{}]", text.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_names_match_however_written() {
        for written in ["not_found", "NotFound", "NOT_FOUND", "notfound"] {
            assert_eq!(normalized(written), normalized("NotFound"));
        }
        assert_ne!(normalized("not_found"), normalized("PermissionDenied"));
    }

    #[test]
    fn numbers_compare_as_numbers_and_null_only_as_null() {
        let some = |s: &str| Some(s.to_string());
        assert!(same_cell(&some("3.50"), &some("3.5")));
        assert!(same_cell(&some("north"), &some("north")));
        assert!(!same_cell(&some("north"), &some("south")));
        assert!(!same_cell(&None, &some("null")));
        assert!(same_cell(&None, &yaml_cell(&serde_yaml::Value::Null)));
    }
}
