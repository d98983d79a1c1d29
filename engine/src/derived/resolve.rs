//! Resolving derived tables: each transform planned against its inputs as the owning
//! domain may read them, in dependency order, after every refresh of the mesh.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use datafusion::datasource::TableProvider;
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::logical_expr::LogicalPlan;
use datafusion::optimizer::analyzer::AnalyzerRule;
use datafusion::prelude::SessionContext;
use meshgate_catalog::{Derivation, DerivedMode, Principal, Product, Table};
use meshgate_connectors::DataSnapshot;

use super::conform::conform;
use super::lineage::lineage_of;
use super::table::DerivedTable;
use crate::config::DerivedConfig;
use crate::error::Error;
use crate::policy::{AggregateOnly, PolicyEngine};
use crate::product::{CompiledProduct, Fault};
use crate::runs::RunStore;
use crate::session::{MeshCatalogList, ReadOnlyCatalog, ReadOnlySchema, ViewFingerprint, plan_sql};

/// Tables by name.
type Tables = BTreeMap<String, Arc<dyn TableProvider>>;

/// `products` with every derived table resolved: a virtual table's provider is its
/// transform, planned against its inputs as `config` says its domain reads them; a
/// materialized table keeps its Delta provider and gains the plan its runs execute.
///
/// A product whose derived table cannot be resolved serves as broken, with a
/// [`Fault::Derived`] naming every problem (for operators): no principal for its domain,
/// an input that is not published or that the domain may not read (alike), an input
/// pinned to another contract major version, an input that is broken, a transform that
/// does not plan or does not match the contract, inputs that depend on each other in a
/// cycle. Products are resolved after the products they read.
pub(crate) async fn resolve_derived(
    products: Vec<CompiledProduct>,
    policy: &PolicyEngine,
    config: &DerivedConfig,
    template: &SessionState,
    runs: Option<&RunStore>,
) -> Vec<CompiledProduct> {
    let locations: Vec<(String, String)> = products
        .iter()
        .flat_map(|p| {
            p.product.tables.iter().filter_map(|t| {
                let location = t.location.as_ref()?;
                Some((
                    format!("{}.{}", p.product.qualified_name(), t.name),
                    location.as_str().to_string(),
                ))
            })
        })
        .collect();
    let (mut pending, plain): (Vec<_>, Vec<_>) = products
        .into_iter()
        .partition(|p| p.product.tables.iter().any(|t| t.derived.is_some()));
    let mut done: BTreeMap<String, CompiledProduct> = plain
        .into_iter()
        .map(|p| (p.product.qualified_name(), p))
        .collect();
    loop {
        let waiting: BTreeSet<String> =
            pending.iter().map(|p| p.product.qualified_name()).collect();
        let (ready, rest): (Vec<_>, Vec<_>) = pending.into_iter().partition(|p| {
            let own = p.product.qualified_name();
            input_products(&p.product).all(|input| input == own || !waiting.contains(&input))
        });
        pending = rest;
        if ready.is_empty() {
            break;
        }
        for compiled in ready {
            let resolved =
                resolve_product(compiled, &done, &locations, policy, config, template, runs).await;
            done.insert(resolved.product.qualified_name(), resolved);
        }
    }
    for compiled in pending {
        let problems = vec![
            "its inputs depend on each other in a cycle; a derived table cannot read itself, \
             even through other products"
                .to_string(),
        ];
        let failed = derived_tables(&compiled.product)
            .map(|(t, _)| (t.name.clone(), problems.clone()))
            .collect();
        let broken = with_derived_faults(compiled, failed);
        done.insert(broken.product.qualified_name(), broken);
    }
    done.into_values().collect()
}

/// `domain.product` of every input of `product`'s derived tables.
fn input_products(product: &Product) -> impl Iterator<Item = String> + '_ {
    derived_tables(product).flat_map(|(_, d)| {
        d.inputs
            .iter()
            .map(|i| format!("{}.{}", i.table.domain, i.table.product))
    })
}

fn derived_tables(product: &Product) -> impl Iterator<Item = (&Table, &Derivation)> {
    product
        .tables
        .iter()
        .filter_map(|t| Some((t, t.derived.as_ref()?)))
}

/// `compiled` with its derived tables planned against `done` (the products it may read).
async fn resolve_product(
    mut compiled: CompiledProduct,
    done: &BTreeMap<String, CompiledProduct>,
    locations: &[(String, String)],
    policy: &PolicyEngine,
    config: &DerivedConfig,
    template: &SessionState,
    runs: Option<&RunStore>,
) -> CompiledProduct {
    let product = Arc::clone(&compiled.product);
    let definer = config
        .principals
        .get(&product.domain)
        .map(|p| p.principal());
    let mut failed = Vec::new();
    for (table, derivation) in derived_tables(&product) {
        let qualified = format!("{}.{}", product.qualified_name(), table.name);
        let overlapped = overlapping(&qualified, table, locations);
        let planned = match (&definer, overlapped) {
            (None, _) => Err(vec![format!(
                "domain {} has no principal for its transforms; grant one in the gateway \
                 config (engine.derived.principals.{})",
                product.domain, product.domain
            )]),
            (Some(_), Some(other)) => Err(vec![format!(
                "its location overlaps that of table {other}; a materialized table needs a \
                 directory of its own"
            )]),
            (Some(definer), None) => {
                plan_transform(
                    &compiled, table, derivation, definer, done, policy, template,
                )
                .await
            }
        };
        match planned {
            Ok((plan, rights)) => {
                compiled.derived_rights.insert(table.name.clone(), rights);
                let plan = Arc::new(plan);
                if derivation.mode == DerivedMode::Virtual {
                    compiled.replace_provider(
                        &table.name,
                        Arc::new(DerivedTable::new(qualified, Arc::clone(&plan)))
                            as Arc<dyn TableProvider>,
                    );
                    let snapshot = inputs_snapshot(derivation, done);
                    compiled.set_snapshot(&table.name, snapshot);
                } else if let Some(snapshot) =
                    dated_by_its_run(&compiled, &qualified, &table.name, runs)
                {
                    compiled.set_snapshot(&table.name, snapshot);
                }
                compiled
                    .lineage
                    .insert(table.name.clone(), lineage_of(&plan).into());
                compiled.derived.insert(table.name.clone(), plan);
            }
            Err(problems) => failed.push((table.name.clone(), problems)),
        }
    }
    with_derived_faults(compiled, failed)
}

/// The table among `locations` (other than `qualified` itself) whose location overlaps
/// that of the materialized `table`: the same directory, or one inside the other.
fn overlapping(qualified: &str, table: &Table, locations: &[(String, String)]) -> Option<String> {
    let own = table.location.as_ref()?.as_str();
    locations
        .iter()
        .find(|(name, other)| {
            name != qualified && (own.starts_with(other) || other.starts_with(own))
        })
        .map(|(name, _)| name.clone())
}

/// The transform of `table` planned as `definer` against the inputs it declares, and
/// shaped to the table's contract; with the fingerprint of what the definer sees of the
/// inputs' products (their schemas and the rules applied to it), which a policy change on
/// an input changes.
async fn plan_transform(
    own: &CompiledProduct,
    table: &Table,
    derivation: &Derivation,
    definer: &Principal,
    done: &BTreeMap<String, CompiledProduct>,
    policy: &PolicyEngine,
    template: &SessionState,
) -> Result<(LogicalPlan, [u8; 32]), Vec<String>> {
    let domain = &own.product.domain;
    let own_name = own.product.qualified_name();
    let mut problems = Vec::new();
    let mut sources: BTreeMap<String, &CompiledProduct> = BTreeMap::new();
    for input in &derivation.inputs {
        let product_name = format!("{}.{}", input.table.domain, input.table.product);
        let source = if product_name == own_name {
            Some(own)
        } else {
            done.get(&product_name)
        };
        // A previous major version past its deprecation window is no longer published
        // (the periodic recheck resolves derived tables again, so one reading it breaks
        // within `reload.recheck_interval` of the window's end).
        let now = std::time::SystemTime::now();
        let source = source.filter(|s| {
            !s.product
                .deprecation
                .as_ref()
                .is_some_and(|d| d.has_ended(now))
        });
        let Some(source) = source else {
            problems.push(unreadable(&input.table, domain));
            continue;
        };
        if product_name == own_name
            && own
                .product
                .table(&input.table.table)
                .is_some_and(|t| t.derived.is_some())
        {
            problems.push(format!(
                "input {}: a derived table of the same product; read its inputs instead",
                input.table
            ));
            continue;
        }
        // A virtual input would be planned again inside every plan that reads it: nested,
        // its cost multiplies with each level. Read a materialized table instead.
        if source
            .product
            .table(&input.table.table)
            .and_then(|t| t.derived.as_ref())
            .is_some_and(|d| d.mode == DerivedMode::Virtual)
        {
            problems.push(format!(
                "input {}: a virtual derived table; read its inputs, or materialize it",
                input.table
            ));
            continue;
        }
        if let Some(major) = input.major {
            let version = &source.product.version;
            if major_of(version) != Some(major) {
                problems.push(format!(
                    "input {}: its product is at contract version {version}; the transform \
                     is written for major version {major}",
                    input.table
                ));
            }
        }
        sources.insert(product_name, source);
    }
    let views = policy.view(definer, sources.values().copied());
    let rights = ViewFingerprint::of(&views, policy.mask_key_id());
    let mut catalogs: BTreeMap<String, BTreeMap<String, Tables>> = BTreeMap::new();
    for input in &derivation.inputs {
        let view = views.iter().find(|v| {
            v.product.domain == input.table.domain && v.product.name == input.table.product
        });
        let Some(provider) = view.and_then(|v| v.tables.get(&input.table.table)) else {
            if sources.contains_key(&format!("{}.{}", input.table.domain, input.table.product)) {
                problems.push(unreadable(&input.table, domain));
            }
            continue;
        };
        if let Some(view) = view
            && view.product.qualified_name() != own_name
            && view.health.fault.is_some()
        {
            problems.push(format!("input {}: its product is broken", input.table));
            continue;
        }
        catalogs
            .entry(input.table.domain.clone())
            .or_default()
            .entry(input.table.product.clone())
            .or_default()
            .insert(input.table.table.clone(), Arc::clone(provider));
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let catalogs = catalogs
        .into_iter()
        .map(|(domain, schemas)| {
            let schemas = schemas
                .into_iter()
                .map(|(product, tables)| (product, Arc::new(ReadOnlySchema::new(tables))))
                .collect();
            (domain, Arc::new(ReadOnlyCatalog::new(schemas)))
        })
        .collect();
    let state = SessionStateBuilder::new_from_existing(template.clone())
        .with_catalog_list(Arc::new(MeshCatalogList::new(catalogs)) as _)
        .build();
    let options = state.config_options().clone();
    let plan = plan_sql(
        &SessionContext::new_with_state(state),
        &derivation.transform,
    )
    .await
    .map_err(|e| vec![format!("the transform does not plan: {e}")])?;
    // Inputs the domain reads only in aggregate: a transform returning their rows is
    // refused now, not at every read.
    AggregateOnly
        .analyze(plan.clone(), &options)
        .map_err(|e| vec![format!("the transform does not plan: {}", Error::from(e))])?;
    Ok((conform(plan, table)?, *rights.as_bytes()))
}

/// The problem of an input that is not published or that `domain` may not read: the
/// two read alike, as they do to any caller.
fn unreadable(input: &meshgate_catalog::TableName, domain: &str) -> String {
    format!("input {input}: no such table is published, or domain {domain} may not read it")
}

/// The major version of a `MAJOR.MINOR.PATCH` contract version.
fn major_of(version: &str) -> Option<u64> {
    version.split('.').next()?.parse().ok()
}

/// What a virtual table holds as far as its readers may know: no files or bytes of its
/// own (its inputs' would tell a reader their sizes), and as its newest data the
/// *oldest* input's newest data (a derived row is only as fresh as the stalest input it
/// is computed from: what its freshness SLA measures).
fn inputs_snapshot(
    derivation: &Derivation,
    done: &BTreeMap<String, CompiledProduct>,
) -> DataSnapshot {
    let oldest = derivation
        .inputs
        .iter()
        .filter_map(|input| {
            done.get(&format!("{}.{}", input.table.domain, input.table.product))?
                .health
                .tables
                .get(&input.table.table)?
                .last_modified
        })
        .min();
    DataSnapshot {
        files: 0,
        bytes: 0,
        last_modified: oldest,
        version: None,
    }
}

/// What the materialized `table` (`qualified`) holds, its newest data being the
/// stalest input's newest data when the run that wrote the version serving read them
/// (how fresh a materialized table is); `None` when no recorded run wrote that version
/// (another replica wrote it): then its commit time stands.
fn dated_by_its_run(
    compiled: &CompiledProduct,
    qualified: &str,
    table: &str,
    runs: Option<&RunStore>,
) -> Option<DataSnapshot> {
    let held = compiled.health.tables.get(table)?;
    let version = held.version?;
    let run = runs?.summaries().remove(qualified)?.succeeded?;
    (run.version == Some(version)).then(|| DataSnapshot {
        last_modified: run.oldest_input(),
        ..held.clone()
    })
}

/// `compiled`, broken by `failed` (its derived tables and their problems) when any
/// failed; a fault found earlier (its stored tables) stays.
fn with_derived_faults(
    mut compiled: CompiledProduct,
    failed: Vec<(String, Vec<String>)>,
) -> CompiledProduct {
    let Some((first, _)) = failed.first() else {
        return compiled;
    };
    let table = first.clone();
    let several = failed.len() > 1;
    let problems = failed
        .into_iter()
        .flat_map(|(table, problems)| {
            problems.into_iter().map(move |p| {
                if several {
                    format!("table {table}: {p}")
                } else {
                    p
                }
            })
        })
        .collect();
    if compiled.health.fault.is_none() {
        let mut health = (*compiled.health).clone();
        health.fault = Some(Fault::Derived { table, problems });
        compiled.health = Arc::new(health);
    }
    compiled
}
