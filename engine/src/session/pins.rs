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
use datafusion::sql::sqlparser::ast::{Ident, ObjectName, ObjectNamePart, visit_relations_mut};
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
            pins.insert(table.to_string(), as_of);
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
    /// resolved with `catalog` and `schema` by default) its pinned version.
    pub(crate) fn apply(&self, statement: &mut DFStatement, catalog: &str, schema: &str) {
        if self.0.is_empty() {
            return;
        }
        let DFStatement::Statement(statement) = statement else {
            return;
        };
        let _ = visit_relations_mut(statement.as_mut(), |name: &mut ObjectName| {
            let parts: Option<Vec<&Ident>> = name.0.iter().map(ObjectNamePart::as_ident).collect();
            let reference = match parts.as_deref() {
                Some([t]) => TableReference::bare(t.value.as_str()),
                Some([s, t]) => TableReference::partial(s.value.as_str(), t.value.as_str()),
                Some([c, s, t]) => {
                    TableReference::full(c.value.as_str(), s.value.as_str(), t.value.as_str())
                }
                _ => return ControlFlow::<()>::Continue(()),
            };
            let resolved = reference.resolve(catalog, schema);
            let whole = format!(
                "{}.{}.{}",
                resolved.catalog, resolved.schema, resolved.table
            );
            if let Some(as_of) = self.0.get(&whole)
                && !resolved.table.contains('@')
            {
                let versioned = format!("{}@{as_of}", resolved.table);
                if let Some(ObjectNamePart::Identifier(last)) = name.0.last_mut() {
                    *last = Ident::with_quote('"', versioned);
                }
            }
            ControlFlow::Continue(())
        });
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
}
