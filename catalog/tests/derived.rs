//! Derived tables in descriptors: what each mode takes, and every problem named.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::Duration;

use meshgate_catalog::{DerivedMode, Mesh, TableFormat};

const HEAD: &str = r#"domain: analytics
product: readmissions
version: 1.0.0
description: Readmissions within 30 days.
owner: { team: analytics, contact: analytics@example.org }
tables:
"#;

fn load(tables: &str) -> Result<meshgate_catalog::Product, String> {
    load_with(tables, &[])
}

/// Loads the descriptor with `files` (name, text) beside it in the domain folder.
fn load_with(tables: &str, files: &[(&str, &str)]) -> Result<meshgate_catalog::Product, String> {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("analytics");
    std::fs::create_dir_all(&folder).unwrap();
    for (name, text) in files {
        let path = folder.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    std::fs::write(folder.join("readmissions.yaml"), format!("{HEAD}{tables}")).unwrap();
    let load = Mesh::load(Path::new(dir.path())).unwrap();
    match load.errors.first() {
        Some(e) => Err(e.to_string()),
        None => Ok(load.mesh.products().next().unwrap().as_ref().clone()),
    }
}

/// The first error loading the mesh at `root` reports (there must be one).
fn first_load_error(root: &Path) -> String {
    let load = Mesh::load(root).unwrap();
    load.errors.first().expect("a load error").to_string()
}

#[test]
fn a_virtual_table_has_no_storage() {
    let product = load(
        r#"  - name: readmissions
    derived:
      mode: virtual
      inputs: [clinical.encounters.visits, { table: patients.registry.patients, major: 1 }]
      transform: |
        SELECT v.patient_id FROM clinical.encounters.visits v
    columns: [{ name: patient_id, type: Int64 }]
"#,
    )
    .unwrap();
    let table = &product.tables[0];
    assert_eq!(table.format, TableFormat::Virtual);
    assert!(table.location.is_none());
    let derived = table.derived.as_ref().unwrap();
    assert_eq!(derived.mode, DerivedMode::Virtual);
    assert_eq!(derived.inputs.len(), 2);
    assert_eq!(
        derived.inputs[0].table.to_string(),
        "clinical.encounters.visits"
    );
    assert_eq!(derived.inputs[0].major, None);
    assert_eq!(derived.inputs[1].major, Some(1));
    assert!(derived.transform.starts_with("SELECT v.patient_id"));
}

#[test]
fn a_transform_may_live_in_a_sql_file_beside_the_descriptor() {
    let table = "  - name: t\n    derived: { mode: virtual, inputs: [a.b.c], transform_file: sql/t.sql }\n    columns: [{ name: n, type: Int64 }]\n";
    let product = load_with(table, &[("sql/t.sql", "-- counted\nSELECT n FROM a.b.c\n")]).unwrap();
    let derived = product.tables[0].derived.as_ref().unwrap();
    assert_eq!(derived.transform, "-- counted\nSELECT n FROM a.b.c");
}

#[test]
fn a_transform_file_must_be_a_readable_sql_file_in_the_domain_folder() {
    let cases: &[(&str, &str)] = &[
        ("missing.sql", "transform_file: cannot use 'missing.sql'"),
        (
            "../other/t.sql",
            "must be a path relative to the descriptor, without '..'",
        ),
        ("/etc/passwd", "must be a path relative to the descriptor"),
        ("t.txt", "'t.txt' must be a .sql file"),
    ];
    for (name, expected) in cases {
        let table = format!(
            "  - name: t\n    derived: {{ mode: virtual, inputs: [a.b.c], transform_file: '{name}' }}\n    columns: [{{ name: n, type: Int64 }}]\n"
        );
        let error = load_with(&table, &[("t.txt", "SELECT 1")]).expect_err(name);
        assert!(
            error.contains(expected),
            "{name}\nexpected: {expected}\ngot: {error}"
        );
    }
    let both = "  - name: t\n    derived: { mode: virtual, inputs: [a.b.c], transform: SELECT 1, transform_file: t.sql }\n    columns: [{ name: n, type: Int64 }]\n";
    let error = load_with(both, &[("t.sql", "SELECT 1")]).unwrap_err();
    assert!(
        error.contains("has both transform and transform_file"),
        "{error}"
    );
    let neither = "  - name: t\n    derived: { mode: virtual, inputs: [a.b.c] }\n    columns: [{ name: n, type: Int64 }]\n";
    let error = load(neither).unwrap_err();
    assert!(
        error.contains("tables[0].derived.transform: is missing"),
        "{error}"
    );
}

#[cfg(unix)]
#[test]
fn a_transform_file_that_is_a_fifo_or_a_hard_link_is_refused_without_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("analytics");
    std::fs::create_dir_all(&folder).unwrap();
    let fifo = folder.join("t.sql");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let table = "  - name: t\n    derived: { mode: virtual, inputs: [a.b.c], transform_file: t.sql }\n    columns: [{ name: n, type: Int64 }]\n";
    std::fs::write(folder.join("readmissions.yaml"), format!("{HEAD}{table}")).unwrap();
    let error = first_load_error(dir.path());
    assert!(error.contains("cannot use 't.sql'"), "{error}");

    std::fs::remove_file(&fifo).unwrap();
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("secret.sql");
    std::fs::write(&secret, "SELECT 'host secret'").unwrap();
    std::fs::hard_link(&secret, &fifo).unwrap();
    let error = first_load_error(dir.path());
    assert!(error.contains("cannot use 't.sql'"), "{error}");
    assert!(!error.contains("host secret"), "{error}");
}

#[cfg(unix)]
#[test]
fn a_transform_file_may_not_lead_out_of_the_domain_folder_through_a_link() {
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("secret.sql");
    std::fs::write(&secret, "SELECT 'host secret'").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("analytics");
    std::fs::create_dir_all(&folder).unwrap();
    std::os::unix::fs::symlink(&secret, folder.join("t.sql")).unwrap();
    let table = "  - name: t\n    derived: { mode: virtual, inputs: [a.b.c], transform_file: t.sql }\n    columns: [{ name: n, type: Int64 }]\n";
    std::fs::write(folder.join("readmissions.yaml"), format!("{HEAD}{table}")).unwrap();
    let error = first_load_error(dir.path());
    assert!(
        error.contains("links leading out of it are refused"),
        "{error}"
    );
    assert!(!error.contains("host secret"), "{error}");
}

#[test]
fn a_materialized_table_is_written_as_delta_on_a_schedule() {
    let product = load(
        r#"  - name: readmissions
    derived:
      mode: materialized
      inputs: [clinical.encounters.visits]
      transform: SELECT 1 AS n
      refresh: 1h
    format: delta
    location: file:///data/analytics/readmissions
    columns: [{ name: n, type: Int64 }]
"#,
    )
    .unwrap();
    let table = &product.tables[0];
    assert_eq!(table.format, TableFormat::Delta);
    assert!(table.location.is_some());
    let derived = table.derived.as_ref().unwrap();
    assert_eq!(derived.refresh, Some(Duration::from_secs(3600)));
}

#[test]
fn each_misdeclared_derivation_names_its_field() {
    let cases: &[(&str, &str)] = &[
        (
            "derived: { mode: virtual, inputs: [], transform: SELECT 1 }",
            "tables[0].derived.inputs: declares no input",
        ),
        (
            "derived: { mode: virtual, inputs: [clinical.visits], transform: SELECT 1 }",
            "tables[0].derived.inputs[0]: 'clinical.visits' is not a table name",
        ),
        (
            "derived: { mode: virtual, inputs: [a.b.c, a.b.c], transform: SELECT 1 }",
            "tables[0].derived.inputs[1]: 'a.b.c' is listed twice",
        ),
        (
            "derived: { mode: virtual, inputs: [analytics.readmissions.t], transform: SELECT 1 }",
            "tables[0].derived.inputs[0]: a table cannot be its own input",
        ),
        (
            "derived: { mode: virtual, inputs: [a.b.c], transform: '  ' }",
            "tables[0].derived.transform: is empty",
        ),
        (
            "derived: { mode: virtual, inputs: [a.b.c], transform: SELECT 1, refresh: 1h }",
            "tables[0].derived.refresh: a virtual table is computed by every query",
        ),
        (
            "derived: { mode: virtual, inputs: [a.b.c], transform: SELECT 1 }\n    format: parquet",
            "tables[0].format: a virtual derived table has no storage",
        ),
        (
            "derived: { mode: virtual, inputs: [a.b.c], transform: SELECT 1 }\n    location: file:///x",
            "tables[0].location: a virtual derived table has no storage",
        ),
        (
            "derived: { mode: materialized, inputs: [a.b.c], transform: SELECT 1 }\n    location: file:///x",
            "tables[0].format: is missing; a materialized table is written as Delta",
        ),
        (
            "derived: { mode: materialized, inputs: [a.b.c], transform: SELECT 1 }\n    format: parquet\n    location: file:///x",
            "tables[0].format: a materialized table is written as Delta",
        ),
        (
            "derived: { mode: materialized, inputs: [a.b.c], transform: SELECT 1 }\n    format: delta",
            "tables[0].location: is missing",
        ),
        (
            "derived: { mode: materialized, inputs: [a.b.c], transform: SELECT 1, refresh: 1s }\n    format: delta\n    location: file:///x",
            "tables[0].derived.refresh: '1s' is not a duration from 10s",
        ),
        (
            "derived: { mode: virtual, inputs: [a.b.c], transform: SELECT 1 }\n    time_travel: {}",
            "tables[0].time_travel: only Delta tables keep past versions",
        ),
        (
            "format: virtual\n    location: file:///x",
            "tables[0].format: only a derived table",
        ),
        (
            "location: file:///x",
            "tables[0].format: is missing; write parquet, delta or flightsql",
        ),
    ];
    for (fields, expected) in cases {
        let text =
            format!("  - name: t\n    {fields}\n    columns: [{{ name: n, type: Int64 }}]\n");
        let error = load(&text).expect_err(fields);
        assert!(
            error.contains(expected),
            "{fields}\nexpected: {expected}\ngot: {error}"
        );
    }
}

#[test]
fn a_transform_larger_than_the_limit_is_refused() {
    let big = "x".repeat(meshgate_catalog::MAX_TRANSFORM_BYTES + 1);
    let text = format!(
        "  - name: t\n    derived: {{ mode: virtual, inputs: [a.b.c], transform: {big} }}\n    columns: [{{ name: n, type: Int64 }}]\n"
    );
    let error = load(&text).unwrap_err();
    assert!(error.contains("at most 262144 are allowed"), "{error}");
}
