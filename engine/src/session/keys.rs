//! The context map as one principal sees it: primary keys and relationships between
//! tables, for the Flight SQL key commands and `mesh.meta.primary_keys` /
//! `mesh.meta.relationships`.
//!
//! A key is shown only if the principal sees every one of its columns; a relationship
//! only if it sees both tables and every column at both ends (hidden columns and denied
//! products leave no trace; a masked column is seen, masked). References to tables the
//! mesh does not publish are never shown.

use std::collections::BTreeMap;

use meshgate_catalog::{Cardinality, TableName};

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
        // Every visible column of every visible table.
        let mut seen: BTreeMap<TableName, Vec<String>> = BTreeMap::new();
        for view in views {
            for (table, provider) in &view.tables {
                let name = TableName {
                    domain: view.product.domain.clone(),
                    product: view.product.name.clone(),
                    table: table.clone(),
                };
                let columns = provider
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| f.name().clone())
                    .collect();
                seen.insert(name, columns);
            }
        }
        let visible = |table: &TableName, columns: &[String]| {
            seen.get(table)
                .is_some_and(|seen| columns.iter().all(|c| seen.contains(c)))
        };
        let mut keys = Self::default();
        for view in views {
            for table in &view.product.tables {
                let name = TableName {
                    domain: view.product.domain.clone(),
                    product: view.product.name.clone(),
                    table: table.name.clone(),
                };
                if !table.primary_key.is_empty() && visible(&name, &table.primary_key) {
                    keys.primary_keys.push(PrimaryKey {
                        table: name.clone(),
                        columns: table.primary_key.clone(),
                    });
                }
                for (i, reference) in table.references.iter().enumerate() {
                    let same_columns = table.references[..i]
                        .iter()
                        .filter(|r| r.columns == reference.columns)
                        .count();
                    let number = if same_columns > 0 {
                        (same_columns + 1).to_string()
                    } else {
                        String::new()
                    };
                    if visible(&name, &reference.columns)
                        && visible(&reference.table, &reference.to)
                    {
                        keys.relationships.push(Relationship {
                            from: name.clone(),
                            from_columns: reference.columns.clone(),
                            to: reference.table.clone(),
                            to_columns: reference.to.clone(),
                            cardinality: reference.cardinality,
                            name: format!(
                                "{}_{}_fkey{number}",
                                table.name,
                                reference.columns.join("_")
                            ),
                        });
                    }
                }
            }
        }
        keys
    }
}
