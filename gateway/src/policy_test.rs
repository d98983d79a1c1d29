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

use std::collections::{BTreeMap, BTreeSet};
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

/// The refusal classes a case may expect (snake case; any case and underscores match).
pub const CLASSES: &[&str] = &[
    "invalid_argument",
    "permission_denied",
    "not_found",
    "resource_exhausted",
    "unimplemented",
    "unavailable",
    "failed_precondition",
    "deadline_exceeded",
    "cancelled",
    "internal",
];

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
    /// A case expects both rows and an error, or neither (or orders a refusal).
    #[error("case `{0}`: expect either `rows` (optionally `ordered`) or `error`")]
    Expectation(String),
    /// A case expects a refusal of a class that does not exist.
    #[error("case `{case}`: `{class}` is not a refusal class; one of {}", CLASSES.join(", "))]
    UnknownClass {
        /// The case.
        case: String,
        /// The class written.
        class: String,
    },
    /// The file holds no case: a run that tests nothing must not pass.
    #[error("{0}: no cases")]
    NoCases(PathBuf),
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
        if file.cases.is_empty() {
            return Err(PolicyTestError::NoCases(path.to_path_buf()));
        }
        for case in &file.cases {
            let expect = &case.expect;
            if expect.rows.is_some() == expect.error.is_some()
                || (expect.error.is_some() && expect.ordered)
            {
                return Err(PolicyTestError::Expectation(case.name.clone()));
            }
            if let Some(class) = &expect.error
                && !CLASSES.iter().any(|c| normalized(c) == normalized(class))
            {
                return Err(PolicyTestError::UnknownClass {
                    case: case.name.clone(),
                    class: class.clone(),
                });
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
        let (engine, tables) = engine_over(&file.mesh, &config).await?;
        let engine = Arc::new(engine);
        let mut outcome = Outcome {
            passed: 0,
            failed: 0,
        };
        let parser = datafusion::prelude::SessionContext::new().state();
        for (i, case) in file.cases.iter().enumerate() {
            let got = answer(&engine, case, i).await;
            let verdict = match unknown_table(case, &tables, &parser) {
                Some(why) => Some(why),
                None => judge(&case.expect, &got),
            };
            match verdict {
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
async fn engine_over(
    mesh: &Path,
    config: &GatewayConfig,
) -> Result<(Engine, BTreeSet<String>), PolicyTestError> {
    let load = Mesh::load(mesh).map_err(|e| PolicyTestError::Mesh(e.to_string()))?;
    if let Some(error) = load.errors.first() {
        return Err(PolicyTestError::Mesh(error.to_string()));
    }
    if load.mesh.is_empty() {
        // Every `not_found` case would hold vacuously.
        return Err(PolicyTestError::Mesh(format!(
            "{} holds no product",
            mesh.display()
        )));
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
    let tables = resolved
        .iter()
        .flat_map(|c| {
            let product = &c.product;
            product
                .tables
                .iter()
                .map(move |t| format!("{}.{}.{}", product.domain, product.name, t.name))
        })
        .collect();
    let factory = SessionFactory::new(loader.template().clone(), resolved, policy);
    let auditor = Arc::new(Auditor::new(StatementMode::None));
    let engine = Engine::new(SessionPublisher::new(factory), &config.engine, auditor)?;
    Ok((engine, tables))
}

/// Why a case expecting a refusal proves nothing, if it does not: it must name every
/// table in full (`domain.product.table`), and each must be in the mesh, so that a
/// misspelt name does not pass as a denied one.
/// `state` parses the statement (one plain session for the whole run).
fn unknown_table(
    case: &Case,
    tables: &BTreeSet<String>,
    state: &datafusion::execution::session_state::SessionState,
) -> Option<String> {
    case.expect.error.as_ref()?;
    let named = state
        .sql_to_statement(&case.sql, &datafusion::config::Dialect::Generic)
        .and_then(|statement| state.resolve_table_references(&statement));
    let named = match named {
        Ok(named) => named,
        // A statement that does not parse is judged by its refusal class.
        Err(_) => return None,
    };
    named.iter().find_map(|reference| match reference {
        datafusion::common::TableReference::Full { .. }
            if tables.contains(&reference.to_string()) =>
        {
            None
        }
        datafusion::common::TableReference::Full { .. } => Some(format!(
            "names {reference}, which the mesh does not hold: a refusal would prove nothing"
        )),
        _ => Some(format!(
            "names {reference}: a case expecting a refusal names its tables in full \
             (domain.product.table)"
        )),
    })
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
            let got = match cells(batches) {
                Ok(got) => got,
                Err(e) => return Some(format!("cannot show the rows: {e}")),
            };
            let wanted: Vec<Vec<Option<String>>> = rows
                .iter()
                .map(|row| row.iter().map(yaml_cell).collect())
                .collect();
            let same_row = |g: &Vec<Cell>, w: &Vec<Option<String>>| {
                g.len() == w.len() && g.iter().zip(w).all(|(a, b)| same_cell(a, b))
            };
            let same = got.len() == wanted.len()
                && if expect.ordered {
                    got.iter().zip(&wanted).all(|(g, w)| same_row(g, w))
                } else {
                    // Each expected row matches a row not matched yet, in any order.
                    let mut matched = vec![false; got.len()];
                    wanted.iter().all(|w| {
                        let found = (0..got.len()).find(|&i| !matched[i] && same_row(&got[i], w));
                        found.map(|i| matched[i] = true).is_some()
                    })
                };
            let texts: Vec<Vec<Option<String>>> = got
                .iter()
                .map(|row| row.iter().map(|c| c.text.clone()).collect())
                .collect();
            let shown = show(&texts);
            (!same).then(|| format!("got rows {shown}, expected {}", show(&wanted)))
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

/// One value of a result: its text (`None` for NULL), and whether its column holds
/// numbers (then it compares as a number).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Cell {
    text: Option<String>,
    numeric: bool,
}

/// Every value of `batches`, row by row.
fn cells(batches: &[RecordBatch]) -> Result<Vec<Vec<Cell>>, arrow::error::ArrowError> {
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
                    .map(|(column, format)| Cell {
                        text: (!column.is_null(row)).then(|| format.value(row).to_string()),
                        numeric: column.data_type().is_numeric(),
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

/// Whether `got` is `wanted`: NULL only as `null`; text exactly; a number as the same
/// number however written (`10.50` and `10.5`), exactly for integers and decimals, within
/// the float's precision for floating-point values.
fn same_cell(got: &Cell, wanted: &Option<String>) -> bool {
    match (&got.text, wanted) {
        (None, None) => true,
        (Some(a), Some(b)) if a == b => true,
        (Some(a), Some(b)) if got.numeric => match (exact_number(a), exact_number(b)) {
            (Some(x), Some(y)) => x == y,
            _ => matches!((a.parse::<f64>(), b.parse::<f64>()),
                (Ok(x), Ok(y)) if x == y || (x - y).abs() <= f64::EPSILON * x.abs().max(y.abs())),
        },
        _ => false,
    }
}

/// A plain decimal number (`-12.50`) in a canonical form (`-12.5`), else `None`.
fn exact_number(text: &str) -> Option<String> {
    let (sign, digits) = match text.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", text.strip_prefix('+').unwrap_or(text)),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    let plain = |s: &str| s.chars().all(|c| c.is_ascii_digit());
    if whole.is_empty() && fraction.is_empty() || !plain(whole) || !plain(fraction) {
        return None;
    }
    let whole = whole.trim_start_matches('0');
    let fraction = fraction.trim_end_matches('0');
    let whole = if whole.is_empty() { "0" } else { whole };
    let sign = if whole == "0" && fraction.is_empty() {
        ""
    } else {
        sign
    };
    Some(match fraction {
        "" => format!("{sign}{whole}"),
        _ => format!("{sign}{whole}.{fraction}"),
    })
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
    fn numbers_compare_exactly_as_numbers_text_as_text_and_null_only_as_null() {
        let some = |s: &str| Some(s.to_string());
        let number = |s: &str| Cell {
            text: some(s),
            numeric: true,
        };
        let text = |s: &str| Cell {
            text: some(s),
            numeric: false,
        };
        assert!(same_cell(&number("3.50"), &some("3.5")));
        assert!(same_cell(&number("-0.0"), &some("0")));
        assert!(!same_cell(
            &number("1234567890123456790"),
            &some("1234567890123456789")
        ));
        assert!(same_cell(&number("1e3"), &some("1000")));
        assert!(!same_cell(&text("007"), &some("7")));
        assert!(same_cell(&text("north"), &some("north")));
        assert!(!same_cell(&text("north"), &some("south")));
        let null = Cell {
            text: None,
            numeric: false,
        };
        assert!(!same_cell(&null, &some("null")));
        assert!(same_cell(&null, &yaml_cell(&serde_yaml::Value::Null)));
    }
}
