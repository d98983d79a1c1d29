//! Versions a client pins for its session: `clinical.labs.results@v3` makes every
//! statement that names `clinical.labs.results` read version 3, as if it had written
//! `clinical.labs."results@v3"`, so that the statements of a session read the same data
//! while a domain commits new versions (repeatable reads). A pin grants nothing: the
//! version is read under the same rules as a name with a suffix (the owner's
//! `time_travel`, its `max_age`, the principal's policy).

use std::collections::BTreeMap;
use std::ops::ControlFlow;

use datafusion::common::TableReference;
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::{
    Ident, ObjectNamePart, TableAlias, TableFactor, VisitMut, VisitorMut,
};
use meshgate_catalog::{AsOf, split_as_of};

use crate::error::{Error, Result};

/// Most tables one session may pin.
pub(crate) const MAX_PINNED_TABLES: usize = 64;

/// Tables pinned to a version: `domain.product.table` -> the version to read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VersionPins(BTreeMap<String, AsOf>);

impl VersionPins {
    /// Pins from `text`: `domain.product.table@v3` (or `@<instant>`), separated by
    /// commas; empty text pins nothing.
    pub fn parse(text: &str) -> Result<Self> {
        let mut pins = BTreeMap::new();
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let bad = |why: &str| {
                Error::InvalidArgument(format!(
                    "version pin '{entry}': {why}; write domain.product.table@v3 or \
                     domain.product.table@2024-06-01T12:00:00Z"
                ))
            };
            let (table, as_of) = match split_as_of(entry) {
                Some(Ok(parsed)) => parsed,
                Some(Err(e)) => return Err(bad(&e.to_string())),
                None => return Err(bad("no version after '@'")),
            };
            if table.split('.').count() != 3 || table.split('.').any(str::is_empty) {
                return Err(bad("name the table in full"));
            }
            pins.insert(table.to_lowercase(), as_of);
        }
        if pins.len() > MAX_PINNED_TABLES {
            return Err(Error::InvalidArgument(format!(
                "{} tables pinned; a session may pin {MAX_PINNED_TABLES}",
                pins.len()
            )));
        }
        Ok(Self(pins))
    }

    /// Whether nothing is pinned.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The pins as `parse` takes them.
    pub fn to_text(&self) -> String {
        self.0
            .iter()
            .map(|(table, as_of)| format!("{table}@{as_of}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Gives every table of `statement` that is pinned (named without a version, as
    /// resolved with `catalog` and `schema` by default) its pinned version. A table
    /// without an alias keeps its own name as one, so `results.id` still names its
    /// columns.
    pub(crate) fn apply(&self, statement: &mut DFStatement, catalog: &str, schema: &str) {
        if self.0.is_empty() {
            return;
        }
        let DFStatement::Statement(statement) = statement else {
            return;
        };
        let mut pinning = Pinning {
            pins: self,
            catalog,
            schema,
        };
        let _ = statement.as_mut().visit(&mut pinning);
    }
}

/// The walk that pins the tables of one statement.
struct Pinning<'a> {
    pins: &'a VersionPins,
    catalog: &'a str,
    schema: &'a str,
}

/// An identifier as SQL resolves it: folded to lower case unless quoted.
fn normalized(ident: &Ident) -> String {
    match ident.quote_style {
        Some(_) => ident.value.clone(),
        None => ident.value.to_lowercase(),
    }
}

impl VisitorMut for Pinning<'_> {
    type Break = ();

    fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
        let TableFactor::Table { name, alias, .. } = factor else {
            return ControlFlow::Continue(());
        };
        let parts: Option<Vec<String>> = name
            .0
            .iter()
            .map(|part| part.as_ident().map(normalized))
            .collect();
        let reference = match parts.as_deref() {
            Some([t]) => TableReference::bare(t.as_str()),
            Some([s, t]) => TableReference::partial(s.as_str(), t.as_str()),
            Some([c, s, t]) => TableReference::full(c.as_str(), s.as_str(), t.as_str()),
            _ => return ControlFlow::Continue(()),
        };
        let resolved = reference.resolve(self.catalog, self.schema);
        let whole = format!(
            "{}.{}.{}",
            resolved.catalog, resolved.schema, resolved.table
        );
        let Some(as_of) = self.pins.0.get(&whole) else {
            return ControlFlow::Continue(());
        };
        if resolved.table.contains('@') {
            return ControlFlow::Continue(());
        }
        if alias.is_none() {
            *alias = Some(TableAlias {
                explicit: true,
                name: Ident::with_quote('"', resolved.table.as_ref()),
                columns: Vec::new(),
                at: None,
            });
        }
        if let Some(ObjectNamePart::Identifier(last)) = name.0.last_mut() {
            *last = Ident::with_quote('"', format!("{}@{as_of}", resolved.table));
        }
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_parse_and_print() {
        let pins = VersionPins::parse(" clinical.labs.results@v3, billing.claims.claims@v0 ")
            .expect("valid");
        assert_eq!(
            pins.to_text(),
            "billing.claims.claims@v0, clinical.labs.results@v3"
        );
        assert!(VersionPins::parse("").expect("empty").is_empty());
        assert!(VersionPins::parse("results@v3").is_err());
        assert!(VersionPins::parse("clinical.labs.results").is_err());
        assert!(VersionPins::parse("clinical.labs.results@yesterday").is_err());
    }

    fn pinned(sql: &str) -> String {
        use datafusion::sql::parser::DFParser;
        let pins = VersionPins::parse("clinical.labs.results@v1").expect("valid");
        let mut statement = DFParser::parse_sql(sql)
            .expect("parses")
            .pop_front()
            .expect("one");
        pins.apply(&mut statement, "clinical", "labs");
        statement.to_string()
    }

    #[test]
    fn pinned_tables_keep_their_name_as_alias() {
        assert_eq!(
            pinned("SELECT results.id FROM Results"),
            "SELECT results.id FROM \"results@v1\" AS \"results\""
        );
        assert_eq!(
            pinned("SELECT r.id FROM clinical.labs.results r"),
            "SELECT r.id FROM clinical.labs.\"results@v1\" r"
        );
        assert_eq!(
            pinned("SELECT id FROM clinical.labs.\"results@v0\""),
            "SELECT id FROM clinical.labs.\"results@v0\""
        );
    }
}
