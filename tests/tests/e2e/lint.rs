//! `meshgate lint`: what a domain team's CI sees.

use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use meshgate_gateway::lint::{LintOptions, LintOutcome, lint};

const PRODUCT: &str = r#"domain: clinical
product: encounters
version: 1.0.0
description: Encounters.
owner: { team: clinical-data, contact: clinical@example.org }
tables:
  - name: visits
    format: parquet
    location: data/visits
    columns:
      - { name: encounter_id, type: Int64 }
      - { name: region, type: Utf8 }
policy:
  read: { any_role: [clinician] }
  rows:
    - { filter: "region = principal.region" }
"#;

fn lint_text(text: &str) -> (LintOutcome, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("clinical")).unwrap();
    std::fs::write(dir.path().join("clinical/encounters.yaml"), text).unwrap();
    let mut out = Vec::new();
    let outcome = lint(dir.path(), LintOptions::default(), &mut out).unwrap();
    (outcome, String::from_utf8(out).unwrap())
}

#[test]
fn a_valid_mesh_lints_clean() {
    let (outcome, out) = lint_text(PRODUCT);
    assert_eq!(outcome, LintOutcome::Clean, "{out}");
}

#[test]
fn row_filters_are_compiled_against_the_contract() {
    for (filter, expected) in [
        ("facility = principal.region", "facility"),
        ("region", "not a boolean predicate"),
        ("region = = 1", "does not parse"),
    ] {
        let text = PRODUCT.replace("region = principal.region", filter);
        let (outcome, out) = lint_text(&text);
        assert_eq!(outcome, LintOutcome::Invalid, "{filter}: {out}");
        assert!(
            out.contains("encounters.yaml") && out.contains(expected),
            "{filter}: {out}"
        );
    }
}

#[test]
fn quality_checks_are_read_as_their_columns_types() {
    let valid = PRODUCT.replace(
        "{ name: encounter_id, type: Int64 }",
        "{ name: encounter_id, type: Int64, checks: { unique: true, range: { min: 1 } } }",
    );
    let (outcome, out) = lint_text(&valid);
    assert_eq!(outcome, LintOutcome::Clean, "{out}");

    let wrong_type = PRODUCT.replace(
        "{ name: encounter_id, type: Int64 }",
        "{ name: encounter_id, type: Int64, checks: { accepted_values: [1, two] } }",
    );
    let (outcome, out) = lint_text(&wrong_type);
    assert_eq!(outcome, LintOutcome::Invalid, "{out}");
    assert!(
        out.contains("encounter_id") && out.contains("'two' is not a Int64"),
        "{out}"
    );

    let unmeasurable = PRODUCT.replace(
        "tables:",
        "sla: { completeness: \"plenty of rows\" }\ntables:",
    );
    let (outcome, out) = lint_text(&unmeasurable);
    assert_eq!(outcome, LintOutcome::Invalid, "{out}");
    assert!(out.contains("sla.completeness"), "{out}");

    let parquet_versions =
        PRODUCT.replace("format: parquet", "format: parquet\n    time_travel: {}");
    let (outcome, out) = lint_text(&parquet_versions);
    assert_eq!(outcome, LintOutcome::Invalid, "{out}");
    assert!(
        out.contains("only Delta tables keep past versions"),
        "{out}"
    );

    let no_bounds = PRODUCT.replace(
        "{ name: region, type: Utf8 }",
        "{ name: region, type: Utf8, checks: { range: {} } }",
    );
    let (outcome, out) = lint_text(&no_bounds);
    assert_eq!(outcome, LintOutcome::Invalid, "{out}");
    assert!(out.contains("checks.range"), "{out}");
}

#[test]
fn an_unreadable_mesh_is_its_own_outcome() {
    let mut out = Vec::new();
    assert_eq!(
        lint(
            std::path::Path::new("/no/such/mesh"),
            LintOptions::default(),
            &mut out
        )
        .unwrap(),
        LintOutcome::Unreadable
    );
}

#[test]
fn check_data_reports_files_that_break_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("clinical")).unwrap();
    std::fs::create_dir_all(dir.path().join("data/visits")).unwrap();
    std::fs::write(dir.path().join("clinical/encounters.yaml"), PRODUCT).unwrap();
    // `region` is missing from the file.
    let batch = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new(
            "encounter_id",
            DataType::Int64,
            false,
        )])),
        vec![Arc::new(Int64Array::from(vec![1, 2]))],
    )
    .unwrap();
    let file = dir.path().join("data/visits/part-0.parquet");
    super::support::write_parquet(&file, &[batch], None);

    let mut out = Vec::new();
    let descriptors_only = lint(dir.path(), LintOptions::default(), &mut out).unwrap();
    assert_eq!(descriptors_only, LintOutcome::Clean);

    let mut out = Vec::new();
    let with_data = lint(
        dir.path(),
        LintOptions {
            check_data: true,
            config: None,
            against: None,
            usage: None,
        },
        &mut out,
    )
    .unwrap();
    let out = String::from_utf8(out).unwrap();
    assert_eq!(with_data, LintOutcome::Invalid, "{out}");
    assert!(
        out.contains("encounters.yaml")
            && out.contains("'region' is missing")
            && out.contains("part-0.parquet"),
        "{out}"
    );
}

#[test]
fn keys_and_references_are_checked_in_the_descriptor_and_across_the_mesh() {
    let keyed = |keys: &str| {
        PRODUCT.replace(
            "      - { name: region, type: Utf8 }\n",
            &format!("      - {{ name: region, type: Utf8 }}\n{keys}"),
        )
    };
    // A key on a nullable column, and a reference naming an undeclared column.
    let (outcome, out) = lint_text(&keyed(
        "    primary_key: [encounter_id]\n    references:\n      - { columns: [patient], table: patients.registry.patients }\n",
    ));
    assert_eq!(outcome, LintOutcome::Invalid, "{out}");
    assert!(
        out.contains("primary_key: 'encounter_id' may hold nulls"),
        "{out}"
    );
    assert!(
        out.contains("references[0].columns: 'patient' is not a declared column"),
        "{out}"
    );
    // Well formed, but the referenced table is not in this mesh, or of another type.
    let (outcome, out) = lint_text(&keyed(
        "    references:\n      - { columns: [region], table: reference.regions.regions }\n",
    ));
    assert_eq!(outcome, LintOutcome::Invalid, "{out}");
    assert!(
        out.contains("clinical.encounters.visits: references reference.regions.regions, which this mesh does not publish"),
        "{out}"
    );
    let (outcome, out) = lint_text(&keyed(
        "    references:\n      - { columns: [region], table: clinical.encounters.visits, to: [encounter_id] }\n",
    ));
    assert_eq!(outcome, LintOutcome::Invalid, "{out}");
    assert!(out.contains("of another type (Int64 there)"), "{out}");
    let (outcome, out) = lint_text(&keyed(
        "    references:\n      - { columns: [region], table: clinical.encounters.visits }\n",
    ));
    assert_eq!(outcome, LintOutcome::Clean, "{out}");
}

/// A derived product over `clinical.encounters.visits` (which `PRODUCT` publishes, with
/// `region` hidden from analysts), whose transform and columns are `table`.
fn derived(table: &str) -> String {
    format!(
        r#"domain: analytics
product: counts
version: 1.0.0
description: Counts.
owner: {{ team: analytics, contact: analytics@example.org }}
tables:
{table}
policy:
  read: {{ any_role: [analyst] }}
"#
    )
}

fn lint_derived(derived_text: &str, principal: bool) -> (LintOutcome, String) {
    let dir = tempfile::tempdir().unwrap();
    for folder in ["clinical", "analytics", "data/visits"] {
        std::fs::create_dir_all(dir.path().join(folder)).unwrap();
    }
    let source = PRODUCT
        .replace("any_role: [clinician]", "any_role: [clinician, analyst]")
        .replace(
            "  rows:\n    - { filter: \"region = principal.region\" }\n",
            "  columns:\n    region: { hide: true, unless_role: [clinician] }\n",
        );
    std::fs::write(dir.path().join("clinical/encounters.yaml"), source).unwrap();
    std::fs::write(dir.path().join("analytics/counts.yaml"), derived_text).unwrap();
    let batch = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("encounter_id", DataType::Int64, false),
            Field::new("region", DataType::Utf8, false),
        ])),
        vec![
            Arc::new(Int64Array::from(vec![1, 2])),
            Arc::new(arrow::array::StringArray::from(vec!["north", "south"])),
        ],
    )
    .unwrap();
    super::support::write_parquet(
        &dir.path().join("data/visits/part-0.parquet"),
        &[batch],
        None,
    );
    let mut config = meshgate_gateway::GatewayConfig::default();
    if principal {
        config.engine.derived.principals.insert(
            "analytics".into(),
            meshgate_engine::DomainPrincipal {
                subject: "domain:analytics".into(),
                roles: vec!["analyst".into()],
                attributes: Default::default(),
            },
        );
    }
    let options = LintOptions {
        check_data: true,
        config: Some(config),
        against: None,
        usage: None,
    };
    let mut out = Vec::new();
    let outcome = lint(dir.path(), options, &mut out).unwrap();
    (outcome, String::from_utf8(out).unwrap())
}

#[test]
fn derived_tables_are_planned_as_their_domain_and_checked_against_their_contract() {
    let virtual_table = |transform: &str, columns: &str| {
        derived(&format!(
            "  - name: by_id\n    derived: {{ mode: virtual, inputs: [clinical.encounters.visits], transform: \"{transform}\" }}\n    columns: [{columns}]"
        ))
    };
    let good = virtual_table(
        "SELECT encounter_id, count(*) AS n FROM clinical.encounters.visits GROUP BY encounter_id",
        "{ name: encounter_id, type: Int64 }, { name: n, type: Int64 }",
    );
    let (outcome, out) = lint_derived(&good, true);
    assert_eq!(outcome, LintOutcome::Clean, "{out}");

    // Without a principal for the domain, the gateway could not compute it either.
    let (outcome, out) = lint_derived(&good, false);
    assert_eq!(outcome, LintOutcome::Invalid, "{out}");
    assert!(out.contains("domain analytics has no principal"), "{out}");

    // A column the domain may not read does not exist for its transform.
    let hidden = virtual_table(
        "SELECT encounter_id, region FROM clinical.encounters.visits",
        "{ name: encounter_id, type: Int64 }, { name: region, type: Utf8 }",
    );
    let (outcome, out) = lint_derived(&hidden, true);
    assert_eq!(outcome, LintOutcome::Invalid, "{out}");
    assert!(
        out.contains("the transform does not plan") && out.contains("region"),
        "{out}"
    );

    // The contract and the transform's output disagree: every mismatch is named.
    let mismatched = virtual_table(
        "SELECT encounter_id, count(*) AS n, 1 AS extra FROM clinical.encounters.visits GROUP BY encounter_id",
        "{ name: encounter_id, type: Int32 }, { name: n, type: Int64 }, { name: missing, type: Utf8 }",
    );
    let (outcome, out) = lint_derived(&mismatched, true);
    assert_eq!(outcome, LintOutcome::Invalid, "{out}");
    for expected in [
        "column 'encounter_id': the transform produces Int64, the contract declares Int32",
        "the transform produces no column 'missing'",
        "the transform produces column 'extra', which the contract does not declare",
    ] {
        assert!(out.contains(expected), "{expected}: {out}");
    }

    // An input the mesh does not publish, or at another major version: found offline.
    let dangling = derived(
        "  - name: by_id\n    derived: { mode: virtual, inputs: [clinical.encounters.gone, { table: clinical.encounters.visits, major: 2 }], transform: SELECT 1 AS n }\n    columns: [{ name: n, type: Int64 }]",
    );
    let (outcome, out) = lint_derived(&dangling, true);
    assert_eq!(outcome, LintOutcome::Invalid, "{out}");
    assert!(
        out.contains("reads clinical.encounters.gone, which this mesh does not publish"),
        "{out}"
    );
    assert!(
        out.contains("at contract major version 2, but its product is at version 1.0.0"),
        "{out}"
    );
}

#[test]
fn check_data_measures_orphans_and_duplicate_composite_keys() {
    let dir = tempfile::tempdir().unwrap();
    for folder in ["clinical", "billing", "data/visits", "data/claims"] {
        std::fs::create_dir_all(dir.path().join(folder)).unwrap();
    }
    std::fs::write(dir.path().join("clinical/encounters.yaml"), PRODUCT).unwrap();
    std::fs::write(
        dir.path().join("billing/claims.yaml"),
        r#"domain: billing
product: claims
version: 1.0.0
description: Claims.
owner: { team: billing, contact: billing@example.org }
tables:
  - name: claims
    format: parquet
    location: data/claims
    primary_key: [claim_id, encounter_id]
    references:
      - { columns: [encounter_id], table: clinical.encounters.visits }
    columns:
      - { name: claim_id, type: Int64, nullable: false }
      - { name: encounter_id, type: Int64, nullable: false }
policy:
  read: { any_role: [billing] }
"#,
    )
    .unwrap();
    let visits = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("encounter_id", DataType::Int64, false),
            Field::new("region", DataType::Utf8, false),
        ])),
        vec![
            Arc::new(Int64Array::from(vec![1, 2])),
            Arc::new(arrow::array::StringArray::from(vec!["north", "south"])),
        ],
    )
    .unwrap();
    super::support::write_parquet(
        &dir.path().join("data/visits/part-0.parquet"),
        &[visits],
        None,
    );
    // Claim 10 of encounter 1 twice; claim 11 of encounter 3, which does not exist.
    let claims = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("claim_id", DataType::Int64, false),
            Field::new("encounter_id", DataType::Int64, false),
        ])),
        vec![
            Arc::new(Int64Array::from(vec![10, 10, 11])),
            Arc::new(Int64Array::from(vec![1, 1, 3])),
        ],
    )
    .unwrap();
    super::support::write_parquet(
        &dir.path().join("data/claims/part-0.parquet"),
        &[claims],
        None,
    );

    let mut out = Vec::new();
    let options = LintOptions {
        check_data: true,
        config: None,
        against: None,
        usage: None,
    };
    let outcome = lint(dir.path(), options, &mut out).unwrap();
    let out = String::from_utf8(out).unwrap();
    assert_eq!(outcome, LintOutcome::Invalid, "{out}");
    assert!(
        out.contains(
            "table claims: (encounter_id) found in clinical.encounters.visits(encounter_id): \
             1 rows break it (33.33% of the rows checked)"
        ),
        "{out}"
    );
    assert!(
        out.contains("table claims: no duplicate keys (claim_id, encounter_id): 2 rows break it"),
        "{out}"
    );
}
