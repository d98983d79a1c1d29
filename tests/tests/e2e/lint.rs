//! `meshgate lint`: what a domain team's CI sees.

use meshgate_gateway::lint::{LintOutcome, lint};

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
    let outcome = lint(dir.path(), &mut out).unwrap();
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
fn an_unreadable_mesh_is_its_own_outcome() {
    let mut out = Vec::new();
    assert_eq!(
        lint(std::path::Path::new("/no/such/mesh"), &mut out).unwrap(),
        LintOutcome::Unreadable
    );
}
