//! The context map as one principal sees it: primary keys and relationships between
//! tables, for the Flight SQL key commands and `mesh.meta.primary_keys` /
//! `mesh.meta.relationships`.
//!
//! A key is shown only if the principal sees every one of its columns in clear (a masked
//! key is no longer unique); a relationship only if it sees both tables and every column
//! at both ends, of the same type, and in clear at both ends or hashed at both ends (other
//! masks destroy the values a join needs). Hidden columns and denied products leave no
//! trace, in names either. References to tables the mesh does not publish, or to columns
//! of another type, are never shown.

use std::collections::BTreeMap;

use arrow::datatypes::DataType;
use meshgate_catalog::{Cardinality, ColumnEffect, MaskKind, TableName};
use meshgate_connectors::wire_type;

use crate::policy::ProductView;

/// A table's primary key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrimaryKey {
    /// The table.
    pub table: TableName,
    /// Its key columns, in key order.
    pub columns: Vec<String>,
}

impl PrimaryKey {
    /// The key's name, as SQL metadata calls it: `<table>_pkey`.
    pub fn name(&self) -> String {
        format!("{}_pkey", self.table.table)
    }
}

/// A reference from one table's columns to another's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relationship {
    /// The referencing table.
    pub from: TableName,
    /// Its referencing columns, in key order.
    pub from_columns: Vec<String>,
    /// The referenced table.
    pub to: TableName,
    /// The referenced columns, one per referencing column.
    pub to_columns: Vec<String>,
    /// How rows relate.
    pub cardinality: Cardinality,
    /// Its name, as SQL metadata names a foreign key: `<table>_<columns>_fkey`, numbered
    /// after the first when one table has two references on the same columns.
    pub name: String,
}

/// The keys and relationships a principal sees.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MeshKeys {
    /// Primary keys, by table.
    pub primary_keys: Vec<PrimaryKey>,
    /// Relationships, by referencing table.
    pub relationships: Vec<Relationship>,
}

impl MeshKeys {
    /// The keys and relationships among the tables of `views`, as the principal they
    /// were made for sees them.
    pub(crate) fn of(views: &[ProductView]) -> Self {
        let seen = SeenColumns::of(views);
        let mut keys = Self::default();
        for view in views {
            for table in &view.product.tables {
                let name = table_name(view, &table.name);
                if !table.primary_key.is_empty()
                    && table
                        .primary_key
                        .iter()
                        .all(|c| matches!(seen.get(&name, c), Some((_, ColumnEffect::Clear))))
                {
                    keys.primary_keys.push(PrimaryKey {
                        table: name.clone(),
                        columns: table.primary_key.clone(),
                    });
                }
                // Relationships seen so far per name, for numbering.
                let mut names: BTreeMap<String, usize> = BTreeMap::new();
                for reference in &table.references {
                    let joins = reference.columns.iter().zip(&reference.to).all(|(a, b)| {
                        seen.get(&name, a)
                            .zip(seen.get(&reference.table, b))
                            .is_some_and(|(ours, theirs)| joinable(ours, theirs))
                    });
                    if !joins {
                        continue;
                    }
                    // Numbered among the relationships the principal sees, so that a name
                    // says nothing of those it does not.
                    let base = format!("{}_{}_fkey", table.name, reference.columns.join("_"));
                    let same = names.entry(base.clone()).or_default();
                    *same += 1;
                    let name_of = if *same == 1 {
                        base
                    } else {
                        format!("{base}{same}")
                    };
                    keys.relationships.push(Relationship {
                        from: name.clone(),
                        from_columns: reference.columns.clone(),
                        to: reference.table.clone(),
                        to_columns: reference.to.clone(),
                        cardinality: reference.cardinality,
                        name: name_of,
                    });
                }
            }
        }
        keys
    }
}

/// Whether two columns, as the principal sees them, still join: the same type, and both
/// in clear or both hashed (with the same key: equal values, equal hashes). Other masks
/// (null, redact, partial) destroy the values a join needs.
fn joinable(ours: (&DataType, ColumnEffect), theirs: (&DataType, ColumnEffect)) -> bool {
    let hashed = |e: ColumnEffect| e == ColumnEffect::Masked(MaskKind::Hash);
    ours.0 == theirs.0
        && ((ours.1 == ColumnEffect::Clear && theirs.1 == ColumnEffect::Clear)
            || (hashed(ours.1) && hashed(theirs.1)))
}

fn table_name(view: &ProductView, table: &str) -> TableName {
    TableName {
        domain: view.product.domain.clone(),
        product: view.product.name.clone(),
        table: table.to_string(),
    }
}

/// Every column the principal sees of every table it may read: its type as served to
/// clients (a string read as a view is the declared plain string) and what the policy
/// does to it.
struct SeenColumns(BTreeMap<TableName, BTreeMap<String, (DataType, ColumnEffect)>>);

impl SeenColumns {
    fn of(views: &[ProductView]) -> Self {
        let mut seen = BTreeMap::new();
        for view in views {
            for (table, provider) in &view.tables {
                let access = view.access.get(table);
                let columns = provider
                    .schema()
                    .fields()
                    .iter()
                    .map(|field| {
                        let effect = access
                            .and_then(|a| a.columns.iter().find(|(n, _)| n == field.name()))
                            .map_or(ColumnEffect::Clear, |(_, effect)| *effect);
                        (field.name().clone(), (wire_type(field.data_type()), effect))
                    })
                    .collect();
                seen.insert(table_name(view, table), columns);
            }
        }
        Self(seen)
    }

    fn get(&self, table: &TableName, column: &str) -> Option<(&DataType, ColumnEffect)> {
        let (data_type, effect) = self.0.get(table)?.get(column)?;
        Some((data_type, *effect))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_columns_that_still_join_make_a_relationship() {
        let clear = ColumnEffect::Clear;
        let hashed = ColumnEffect::Masked(MaskKind::Hash);
        let redacted = ColumnEffect::Masked(MaskKind::Redact);
        let (int, text) = (DataType::Int64, DataType::Utf8);
        assert!(joinable((&int, clear), (&int, clear)));
        assert!(joinable((&text, hashed), (&text, hashed)));
        assert!(
            !joinable((&text, hashed), (&int, clear)),
            "a hash against clear values"
        );
        assert!(
            !joinable((&text, hashed), (&text, clear)),
            "a hash against clear text"
        );
        assert!(!joinable((&text, redacted), (&text, redacted)));
        assert!(
            !joinable((&int, clear), (&DataType::Int32, clear)),
            "types differ"
        );
    }
}
