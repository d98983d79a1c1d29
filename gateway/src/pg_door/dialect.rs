//! The Postgres dialect of the door: statements parsed as Postgres clients write them
//! (with the rewrites that make psql's, BI tools' and SQLAlchemy's catalog queries
//! plannable), names of the form `"domain.product".table` made whole, and a session
//! that holds `pg_catalog` and the Postgres functions those queries call.

use std::ops::ControlFlow;
use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::catalog::CatalogProviderList;
use datafusion::common::ScalarValue;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::FunctionRegistry;
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::logical_expr::{ColumnarValue, ScalarUDF, Volatility, create_udf};
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::visit_relations_mut;
use datafusion::sql::sqlparser::ast::{Ident, ObjectName, ObjectNamePart, Statement};
use datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_pg_catalog::pg_catalog::generate_series_arg_coercion::CoerceIntArgsToBigInt;
use datafusion_pg_catalog::pg_catalog::oid_type_planner::PgOidTypePlanner;
use datafusion_pg_catalog::pg_catalog::{
    self as pg, PgCatalogSchemaProvider, PgCatalogStaticTables, array_bounds_udf, format_type,
    has_privilege_udf, pg_get_expr_udf, quote_ident_udf,
};
use datafusion_pg_catalog::sql::PostgresCompatibilityParser;
use meshgate_catalog::Principal;
use meshgate_engine::{SYSTEM_CATALOG, SqlDialect};

use super::catalog::{DATABASE, MeshAsPostgres, PG_CATALOG, WithPgCatalog};

/// The server version the door reports (`server_version`, `version()`): the Postgres
/// release whose catalogs and protocol it follows.
pub(crate) const SERVER_VERSION: &str = "16.6";

/// Principals whose Postgres session state is kept (their `pg_catalog` and functions).
/// Each keeps its principal's view alive beside the engine's own view cache, so few.
const KEPT_SESSIONS: usize = 64;

/// One principal's Postgres session, kept while its view of the mesh is the same.
struct KeptSession {
    /// The catalogs it was built over (the principal's view, by identity).
    catalogs: Arc<dyn CatalogProviderList>,
    state: SessionState,
}

/// The Postgres dialect: parses with the Postgres grammar and the compatibility
/// rewrites, and extends each principal's session with `pg_catalog`.
pub(crate) struct PostgresDialect {
    parser: PostgresCompatibilityParser,
    static_tables: Arc<PgCatalogStaticTables>,
    /// Kept per principal so that object ids (`pg_class.oid`) stay the same from one
    /// statement to the next, as psql's `\d` expects, while the view is unchanged.
    kept: quick_cache::sync::Cache<Principal, Arc<KeptSession>>,
}

impl std::fmt::Debug for PostgresDialect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresDialect").finish_non_exhaustive()
    }
}

impl PostgresDialect {
    /// The dialect, its static catalog tables (types, functions, operators) loaded.
    pub(crate) fn new() -> Result<Self> {
        Ok(Self {
            parser: PostgresCompatibilityParser::new(),
            static_tables: Arc::new(PgCatalogStaticTables::try_new()?),
            kept: quick_cache::sync::Cache::new(KEPT_SESSIONS),
        })
    }

    fn build(
        &self,
        catalogs: &Arc<dyn CatalogProviderList>,
        state: SessionState,
    ) -> Result<SessionState> {
        let pg_catalog = PgCatalogSchemaProvider::try_new(
            MeshAsPostgres::new(Arc::clone(catalogs)),
            Arc::clone(&self.static_tables),
            EmptyContextProvider,
        )?;
        let list = WithPgCatalog::new(Arc::clone(catalogs), Arc::new(pg_catalog));
        let mut state = SessionStateBuilder::new_from_existing(state)
            .with_catalog_list(Arc::new(list))
            .with_type_planner(Arc::new(PgOidTypePlanner))
            .build();
        for udf in functions() {
            state.register_udf(Arc::new(udf))?;
        }
        let context = SessionContext::new_with_state(state);
        context.register_udtf(
            "pg_get_keywords",
            self.static_tables.pg_get_keywords.clone(),
        );
        CoerceIntArgsToBigInt::widen(&context);
        Ok(context.state())
    }
}

/// Client queries the compatibility rewrites do not make plannable, whole, and what
/// answers them: `(query, replacement)`, compared with runs of whitespace as one space.
const CLIENT_QUERIES: &[(&str, &str)] = &[
    // The ADBC Postgres driver's type map at connect: `regproc` columns are names here,
    // so "no receive function" is `-` rather than oid 0.
    (
        "SELECT oid, typname, typreceive, typbasetype, typrelid, typarray FROM pg_catalog.pg_type \
         WHERE (typreceive != 0 OR typsend != 0) AND typtype != 'r' AND typreceive::TEXT != 'array_recv'",
        "SELECT oid, typname, typreceive, typbasetype, typrelid, typarray FROM pg_catalog.pg_type \
         WHERE (typreceive != '-' OR typsend != '-') AND typtype != 'r' AND typreceive != 'array_recv'",
    ),
];

/// `sql` with runs of whitespace as one space, trimmed, without a final semicolon.
fn normalized(sql: &str) -> String {
    sql.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .trim_end_matches(';')
        .trim_end()
        .to_string()
}

impl SqlDialect for PostgresDialect {
    fn name(&self) -> &str {
        "postgres"
    }

    fn parse(&self, sql: &str) -> Result<Vec<Statement>> {
        let normal = normalized(sql);
        let sql = CLIENT_QUERIES
            .iter()
            .find(|(query, _)| normalized(query) == normal)
            .map_or(sql, |(_, replacement)| replacement);
        let mut statements = self
            .parser
            .parse(sql)
            .map_err(|e| DataFusionError::SQL(Box::new(e), None))?;
        for statement in &mut statements {
            qualify_names(statement);
        }
        Ok(statements)
    }

    fn extend(&self, principal: &Principal, context: SessionContext) -> Result<SessionContext> {
        let state = context.state();
        let catalogs = Arc::clone(state.catalog_list());
        if let Some(kept) = self.kept.get(principal)
            && Arc::ptr_eq(&kept.catalogs, &catalogs)
        {
            return Ok(SessionContext::new_with_state(kept.state.clone()));
        }
        let built = self.build(&catalogs, state)?;
        self.kept.insert(
            principal.clone(),
            Arc::new(KeptSession {
                catalogs,
                state: built.clone(),
            }),
        );
        Ok(SessionContext::new_with_state(built))
    }
}

/// The Postgres functions catalog queries call, beside DataFusion's own.
fn functions() -> Vec<ScalarUDF> {
    let mut functions = vec![
        pg::create_current_database_udf(DATABASE),
        pg::create_current_schema_udf(),
        pg::create_current_schemas_udf(),
        pg::create_pg_get_userbyid_udf(),
        pg::create_pg_table_is_visible(),
        pg::create_session_user_udf(),
        pg::create_pg_get_partkeydef_udf(),
        pg::create_pg_relation_is_publishable_udf(),
        pg::create_pg_get_statisticsobjdef_columns_udf(),
        pg::create_pg_encoding_to_char_udf(),
        pg::create_pg_backend_pid_udf(),
        pg::create_pg_relation_size_udf(),
        pg::create_pg_total_relation_size_udf(),
        pg::create_pg_stat_get_numscans(),
        pg::create_pg_get_constraintdef(),
        pg::create_pg_get_partition_ancestors_udf(),
        format_type::create_format_type_udf(),
        pg_get_expr_udf::create_pg_get_expr_udf(),
        quote_ident_udf::create_quote_ident_udf(),
        quote_ident_udf::create_parse_ident_udf(),
        array_bounds_udf::create_array_upper_udf(),
        array_bounds_udf::create_array_lower_udf(),
        version(),
        always_visible("pg_type_is_visible"),
        always_visible("pg_function_is_visible"),
    ];
    for name in [
        "has_table_privilege",
        "has_schema_privilege",
        "has_database_privilege",
        "has_any_column_privilege",
    ] {
        functions.push(has_privilege_udf::create_has_privilege_udf(name));
    }
    functions
}

/// `name(oid)`, true for every object: everything a session holds is visible to it.
fn always_visible(name: &str) -> ScalarUDF {
    create_udf(
        name,
        vec![DataType::Int32],
        DataType::Boolean,
        Volatility::Stable,
        Arc::new(|args: &[ColumnarValue]| {
            Ok(match &args[0] {
                ColumnarValue::Array(array) => ColumnarValue::Array(Arc::new(
                    datafusion::arrow::array::BooleanArray::from(vec![true; array.len()]),
                )),
                ColumnarValue::Scalar(_) => ColumnarValue::Scalar(ScalarValue::Boolean(Some(true))),
            })
        }),
    )
}

/// `version()` as Postgres clients parse it (`PostgreSQL <major>.<minor> ...`).
fn version() -> ScalarUDF {
    let text = format!(
        "PostgreSQL {SERVER_VERSION} (meshgate {}, Apache DataFusion)",
        env!("CARGO_PKG_VERSION")
    );
    create_udf(
        "version",
        vec![],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(move |_| Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(text.clone()))))),
    )
}

/// Makes the names a Postgres client writes resolve in the mesh: `"domain.product".t`
/// (the schema as `pg_namespace` lists it) becomes `domain.product.t`, and
/// `pg_catalog.t` becomes `mesh.pg_catalog.t`, whatever the session's default catalog.
fn qualify_names(statement: &mut Statement) {
    let _ = visit_relations_mut(statement, |name: &mut ObjectName| {
        let parts: Option<Vec<&Ident>> = name.0.iter().map(ObjectNamePart::as_ident).collect();
        if let Some([schema, table]) = parts.as_deref() {
            let whole = if schema.value == PG_CATALOG {
                Some(vec![
                    Ident::new(SYSTEM_CATALOG),
                    Ident::new(PG_CATALOG),
                    (*table).clone(),
                ])
            } else {
                schema.value.split_once('.').map(|(domain, product)| {
                    vec![
                        Ident::with_quote('"', domain),
                        Ident::with_quote('"', product),
                        (*table).clone(),
                    ]
                })
            };
            if let Some(whole) = whole {
                *name = ObjectName::from(whole);
            }
        }
        ControlFlow::<()>::Continue(())
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qualified(sql: &str) -> String {
        let dialect = PostgresDialect::new().expect("static tables load");
        let statements = dialect.parse(sql).expect("parses");
        statements[0].to_string()
    }

    #[test]
    fn schema_names_with_a_dot_become_domain_and_product() {
        assert_eq!(
            qualified("SELECT * FROM \"sales.orders\".line_items"),
            "SELECT * FROM \"sales\".\"orders\".line_items"
        );
    }

    #[test]
    fn pg_catalog_resolves_in_the_system_catalog() {
        assert!(qualified("SELECT relname FROM pg_class").contains("mesh.pg_catalog.pg_class"));
        assert!(
            qualified("SELECT 1 FROM pg_catalog.pg_namespace")
                .contains("mesh.pg_catalog.pg_namespace")
        );
    }

    #[test]
    fn other_names_are_left_alone() {
        assert_eq!(
            qualified("SELECT * FROM sales.orders.line_items"),
            "SELECT * FROM sales.orders.line_items"
        );
    }
}
