//! The context map in a descriptor: a table's primary key and its references to other
//! products' tables (`patient_id` references `patients.registry.patients(patient_id)`),
//! across domains.
//!
//! ```yaml
//! tables:
//!   - name: visits
//!     primary_key: [encounter_id]
//!     references:
//!       - { columns: [patient_id], table: patients.registry.patients, to: [patient_id] }
//! ```
//!
//! A descriptor is checked on its own here (its columns exist, the key's columns are not
//! nullable, the referenced name has three parts); whether the referenced table exists
//! is the mesh's business ([`crate::Mesh::dangling_references`]), since it may be
//! published, broken or removed independently.

use serde::{Deserialize, Serialize};

use crate::error::Problem;
use crate::product::Column;

/// References one table may declare: far more than any table relates to, few enough
/// that what is built from them per principal stays small.
pub const MAX_REFERENCES: usize = 64;

/// One `references:` entry of a table descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferenceDescriptor {
    /// The referencing columns of this table, in key order.
    pub columns: Vec<String>,
    /// The referenced table, `domain.product.table`.
    pub table: String,
    /// The referenced columns, in the same order; the same names when absent.
    #[serde(default)]
    pub to: Option<Vec<String>>,
    /// How many rows of this table one referenced row relates to.
    #[serde(default)]
    pub cardinality: Cardinality,
}

/// How rows of a referencing table relate to a referenced row.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Cardinality {
    /// Many referencing rows per referenced row (an ordinary foreign key).
    #[default]
    ManyToOne,
    /// At most one referencing row per referenced row.
    OneToOne,
}

impl std::fmt::Display for Cardinality {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::ManyToOne => "many-to-one",
            Self::OneToOne => "one-to-one",
        })
    }
}

/// A `domain.product.table` name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TableName {
    /// Domain (SQL catalog).
    pub domain: String,
    /// Product (SQL schema).
    pub product: String,
    /// Table.
    pub table: String,
}

impl std::fmt::Display for TableName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.domain, self.product, self.table)
    }
}

/// A validated reference from a table's columns to another table's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// The referencing columns, in key order.
    pub columns: Vec<String>,
    /// The referenced table.
    pub table: TableName,
    /// The referenced columns, one per referencing column.
    pub to: Vec<String>,
    /// How rows relate.
    pub cardinality: Cardinality,
}

/// Checks `primary_key` and `references` of the table at `at` against its validated
/// `columns`; what is wrong goes to `problems`.
pub(crate) fn validate_keys(
    at: &str,
    primary_key: &[String],
    references: &[ReferenceDescriptor],
    columns: &[Column],
    problems: &mut Vec<Problem>,
) -> (Vec<String>, Vec<Reference>) {
    let declared = |name: &str| columns.iter().find(|c| c.name == name);
    let check_columns = |field: String, names: &[String], problems: &mut Vec<Problem>| {
        if names.is_empty() {
            problems.push(Problem::new(&field, "names no column"));
        }
        for (i, name) in names.iter().enumerate() {
            if names[..i].contains(name) {
                problems.push(Problem::new(&field, format!("'{name}' is listed twice")));
            } else if declared(name).is_none() {
                problems.push(Problem::new(
                    &field,
                    format!("'{name}' is not a declared column of this table"),
                ));
            }
        }
    };
    if !primary_key.is_empty() {
        check_columns(format!("{at}.primary_key"), primary_key, problems);
        for name in primary_key {
            if declared(name).is_some_and(|c| c.nullable) {
                problems.push(Problem::new(
                    format!("{at}.primary_key"),
                    format!("'{name}' may hold nulls; a key column is declared nullable: false"),
                ));
            }
        }
    }
    if references.len() > MAX_REFERENCES {
        problems.push(Problem::new(
            format!("{at}.references"),
            format!(
                "declares {} references; a table may declare at most {MAX_REFERENCES}",
                references.len()
            ),
        ));
        return (primary_key.to_vec(), Vec::new());
    }
    let mut validated = Vec::with_capacity(references.len());
    for (i, reference) in references.iter().enumerate() {
        let ref_at = format!("{at}.references[{i}]");
        if references[..i].iter().any(|r| {
            r.columns == reference.columns && r.table == reference.table && r.to == reference.to
        }) {
            problems.push(Problem::new(&ref_at, "repeats an earlier reference"));
            continue;
        }
        let before = problems.len();
        check_columns(format!("{ref_at}.columns"), &reference.columns, problems);
        let table = parse_table_name(&reference.table);
        if table.is_none() {
            problems.push(Problem::new(
                format!("{ref_at}.table"),
                format!(
                    "'{}' is not a table name; write domain.product.table",
                    reference.table
                ),
            ));
        }
        let to = reference
            .to
            .clone()
            .unwrap_or_else(|| reference.columns.clone());
        if to.len() != reference.columns.len() {
            problems.push(Problem::new(
                format!("{ref_at}.to"),
                format!(
                    "names {} columns for {} referencing columns; name one per column",
                    to.len(),
                    reference.columns.len()
                ),
            ));
        }
        if let (Some(table), true) = (table, problems.len() == before) {
            validated.push(Reference {
                columns: reference.columns.clone(),
                table,
                to,
                cardinality: reference.cardinality,
            });
        }
    }
    (primary_key.to_vec(), validated)
}

/// `domain.product.table` split, each part a plain lowercase name.
pub(crate) fn parse_table_name(text: &str) -> Option<TableName> {
    let mut parts = text.split('.');
    let (domain, product, table) = (parts.next()?, parts.next()?, parts.next()?);
    let plain = |s: &str| {
        s.chars().next().is_some_and(|c| c.is_ascii_lowercase())
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    };
    (parts.next().is_none() && plain(domain) && plain(product) && plain(table)).then(|| TableName {
        domain: domain.to_string(),
        product: product.to_string(),
        table: table.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_schema::DataType;

    fn column(name: &str, nullable: bool) -> Column {
        Column {
            name: name.to_string(),
            data_type: DataType::Int64,
            nullable,
            description: None,
            tags: Vec::new(),
            checks: Default::default(),
        }
    }

    fn reference(columns: &[&str], table: &str, to: Option<&[&str]>) -> ReferenceDescriptor {
        ReferenceDescriptor {
            columns: columns.iter().map(|c| c.to_string()).collect(),
            table: table.to_string(),
            to: to.map(|t| t.iter().map(|c| c.to_string()).collect()),
            cardinality: Cardinality::ManyToOne,
        }
    }

    #[test]
    fn a_key_and_a_reference_validate() {
        let columns = [column("id", false), column("patient_id", true)];
        let mut problems = Vec::new();
        let (key, refs) = validate_keys(
            "tables[0]",
            &["id".to_string()],
            &[reference(
                &["patient_id"],
                "patients.registry.patients",
                None,
            )],
            &columns,
            &mut problems,
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(key, ["id"]);
        assert_eq!(refs[0].table.to_string(), "patients.registry.patients");
        assert_eq!(refs[0].to, ["patient_id"]);
    }

    #[test]
    fn every_mistake_is_named() {
        let columns = [column("id", true), column("patient_id", true)];
        let mut problems = Vec::new();
        let (_, refs) = validate_keys(
            "tables[0]",
            &["id".to_string(), "nope".to_string()],
            &[
                reference(&["patient_id"], "patients.registry", None),
                reference(&["patient_id", "x"], "a.b.c", Some(&["y"])),
                reference(&["patient_id"], "A.b.c", None),
                reference(&["patient_id"], "patients.registry", None),
            ],
            &columns,
            &mut problems,
        );
        let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert!(refs.is_empty());
        for expected in [
            "tables[0].primary_key: 'nope' is not a declared column",
            "tables[0].primary_key: 'id' may hold nulls",
            "tables[0].references[0].table: 'patients.registry' is not a table name",
            "tables[0].references[1].columns: 'x' is not a declared column",
            "tables[0].references[1].to: names 1 columns for 2",
            "tables[0].references[2].table: 'A.b.c' is not a table name",
            "tables[0].references[3]: repeats an earlier reference",
        ] {
            assert!(
                text.iter().any(|t| t.starts_with(expected)),
                "{expected} not in {text:?}"
            );
        }
    }

    #[test]
    fn references_are_bounded() {
        let columns = [column("id", false)];
        let many: Vec<_> = (0..=MAX_REFERENCES)
            .map(|i| reference(&["id"], &format!("a.b.t{i}"), None))
            .collect();
        let mut problems = Vec::new();
        let (_, refs) = validate_keys("tables[0]", &[], &many, &columns, &mut problems);
        assert!(refs.is_empty());
        assert!(problems[0].message.contains("at most 64"), "{problems:?}");
    }
}
