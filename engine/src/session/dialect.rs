//! Dialects of SQL a door may plug in for its clients, on top of the engine's own.

use datafusion::error::DataFusionError;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::Statement;
use meshgate_catalog::Principal;

/// How one door's clients write SQL beyond the engine's own surface: a Postgres
/// client's catalog queries (`pg_catalog.pg_class`, `OPERATOR(pg_catalog.~)`,
/// `'t'::regclass`), for instance.
///
/// A dialect changes how statements parse and what names and functions a session
/// holds; it grants nothing. The engine checks and plans every statement a dialect
/// parses as its own (exactly one read-only statement, within the same bounds), in the
/// principal's session, whose catalogs hold only what the principal may read.
pub trait SqlDialect: Send + Sync + std::fmt::Debug {
    /// The dialect's name (`postgres`): statements of different dialects never share
    /// an answer in the result cache.
    fn name(&self) -> &str;

    /// The statements of `sql` (the engine refuses all but exactly one).
    fn parse(&self, sql: &str) -> Result<Vec<Statement>, DataFusionError>;

    /// `context`, the session of `principal`, with what this dialect's statements
    /// use (schemas beside the mesh's, functions). Its catalogs are the principal's:
    /// whatever the dialect shows of the mesh, it must take from them.
    fn extend(
        &self,
        principal: &Principal,
        context: SessionContext,
    ) -> Result<SessionContext, DataFusionError>;
}
