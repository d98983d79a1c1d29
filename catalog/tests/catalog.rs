//! Catalog behaviour: descriptor validation as a table of cases, mesh loading that

//! survives broken descriptors, and name resolution.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use meshgate_catalog::{CatalogError, Mesh, TableFormat};

const GOOD: &str = r#"domain: clinical
product: encounters
version: 2.1.0
description: Encounters, one row per encounter.
owner: { team: clinical-data, contact: clinical@example.org }
tags: [phi]
sla: { freshness: 24h }
tables:
  - name: visits
    format: parquet
    location: file:///data/clinical/encounters/visits
    partition_columns: [admit_month]
    columns:
      - { name: encounter_id, type: Int64, nullable: false }
      - { name: admitted_at, type: "Timestamp(Microsecond, None)" }
      - { name: diagnosis_code, type: Utf8, tags: [phi] }
      - { name: admit_month, type: Utf8, nullable: false }
"#;

fn write(dir: &Path, domain: &str, product: &str, text: &str) {
    std::fs::create_dir_all(dir.join(domain)).unwrap();
    std::fs::write(dir.join(domain).join(format!("{product}.yaml")), text).unwrap();
}

fn problems_of(text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "clinical", "encounters", text);
    let load = Mesh::load(dir.path()).unwrap();
    assert_eq!(load.mesh.len(), 0, "descriptor should be rejected:\n{text}");
    assert_eq!(load.errors.len(), 1);
    load.errors[0].to_string()
}

#[test]
fn a_valid_descriptor_loads_with_typed_contract() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "clinical", "encounters", GOOD);
    let load = Mesh::load(dir.path()).unwrap();
    assert!(load.errors.is_empty(), "{:?}", load.errors);
    let (product, table) = load
        .mesh
        .resolve("clinical", "encounters", "visits")
        .unwrap();
    assert_eq!(product.version, "2.1.0");
    assert_eq!(
        product.sla.freshness,
        Some(std::time::Duration::from_secs(86_400))
    );
    assert_eq!(table.format, TableFormat::Parquet);
    assert_eq!(
        table.location.as_ref().unwrap().as_str(),
        "file:///data/clinical/encounters/visits/"
    );
    assert_eq!(table.file_columns().count(), 3);
    let schema = table.contract_schema();
    assert_eq!(schema.field(1).data_type().to_string(), "Timestamp(µs)");
    assert!(!schema.field(0).is_nullable());
    assert!(
        load.mesh
            .resolve("clinical", "encounters", "nope")
            .is_none()
    );
    assert!(
        load.mesh
            .resolve("billing", "encounters", "visits")
            .is_none()
    );
}

#[test]
fn each_broken_rule_names_its_field_and_the_fix() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "domain: clinical",
            "domain: billing",
            "domain: is 'billing' but the descriptor sits in the folder of domain 'clinical'",
        ),
        (
            "product: encounters",
            "product: visits",
            "product: is 'visits' but the file is named 'encounters.yaml'",
        ),
        (
            "version: 2.1.0",
            "version: two",
            "version: 'two' is not a MAJOR.MINOR.PATCH version",
        ),
        (
            "freshness: 24h",
            "freshness: soon",
            "sla.freshness: 'soon' is not a duration",
        ),
        (
            "type: Int64, nullable: false }",
            "type: Integer, nullable: false }",
            "tables[0].columns[0].type: 'Integer' is not an Arrow type",
        ),
        (
            "partition_columns: [admit_month]",
            "partition_columns: [month]",
            "tables[0].partition_columns[0]: 'month' is not a declared column",
        ),
        (
            "name: diagnosis_code",
            "name: Diagnosis",
            "tables[0].columns[2].name: 'Diagnosis' is not a valid name",
        ),
        (
            "name: admitted_at",
            "name: encounter_id",
            "tables[0].columns[1].name: column 'encounter_id' is declared twice",
        ),
        (
            "file:///data/clinical/encounters/visits",
            "http://example.org/visits",
            "tables[0].location: scheme 'http' is not supported",
        ),
        (
            "file:///data/clinical/encounters/visits",
            "s3://key:secret@bucket/visits",
            "tables[0].location: must not carry credentials",
        ),
        ("format: parquet", "format: csv", "unknown variant `csv`"),
        (
            "tags: [phi]",
            "tags: [phi]\nowner_email: x@example.org",
            "unknown field `owner_email`",
        ),
        (
            "tags: [phi]\nsla",
            "tags: [Not A Tag]\nsla",
            "tags[0]: 'Not A Tag' is not a valid tag",
        ),
        (
            "      - { name: admit_month, type: Utf8, nullable: false }\n",
            "      - { name: admit_month, type: Utf8, nullable: false }\npolicy:\n  read: { any_authenticated: true }\n  aggregate_only: { min_group_size: 1 }\n",
            "policy.aggregate_only.min_group_size: must be at least 2",
        ),
        (
            "      - { name: admit_month, type: Utf8, nullable: false }\n",
            "      - { name: admit_month, type: Utf8, nullable: false }\npolicy:\n  read: { any_authenticated: true }\n  aggregate_only: { min_group_size: 5, privacy_unit: patient_id }\n",
            "policy.aggregate_only.privacy_unit: 'patient_id' is not a column of table 'visits'",
        ),
    ];
    for (from, to, expected) in cases {
        assert!(GOOD.contains(from), "case does not apply: {from}");
        let message = problems_of(&GOOD.replacen(from, to, 1));
        assert!(
            message.contains(expected),
            "for `{to}` expected `{expected}` in: {message}"
        );
        assert!(
            message.contains("encounters.yaml"),
            "error must name the file: {message}"
        );
    }
}

#[test]
fn yaml_syntax_errors_carry_a_position() {
    let message = problems_of("domain: clinical\nproduct: [unclosed\n");
    assert!(message.contains("line"), "{message}");
}

#[test]
fn one_broken_descriptor_leaves_the_rest_of_the_mesh_serving() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "clinical", "encounters", GOOD);
    write(
        dir.path(),
        "billing",
        "claims",
        "domain: billing\nproduct: claims\nversion: [\n",
    );
    std::fs::create_dir_all(dir.path().join("data/clinical")).unwrap();
    std::fs::write(dir.path().join("README.md"), "not a descriptor").unwrap();
    let load = Mesh::load(dir.path()).unwrap();
    assert_eq!(load.mesh.len(), 1);
    assert_eq!(load.errors.len(), 1);
    assert!(matches!(load.errors[0], CatalogError::Parse { .. }));
    assert!(load.errors[0].path().ends_with("billing/claims.yaml"));
    assert_eq!(load.mesh.domains().collect::<Vec<_>>(), ["clinical"]);
}

#[test]
fn relative_locations_resolve_against_the_mesh_root() {
    let dir = tempfile::tempdir().unwrap();
    let text = GOOD.replace(
        "file:///data/clinical/encounters/visits",
        "data/clinical/visits",
    );
    write(dir.path(), "clinical", "encounters", &text);
    let load = Mesh::load(dir.path()).unwrap();
    assert!(load.errors.is_empty(), "{:?}", load.errors);
    let (_, table) = load
        .mesh
        .resolve("clinical", "encounters", "visits")
        .unwrap();
    let root = dir.path().canonicalize().unwrap();
    assert_eq!(
        table.location.as_ref().unwrap().to_file_path().unwrap(),
        root.join("data/clinical/visits")
    );
    assert!(table.location.as_ref().unwrap().as_str().ends_with('/'));
}

#[test]
fn an_unreadable_mesh_directory_is_an_error() {
    assert!(matches!(
        Mesh::load("/definitely/not/here"),
        Err(CatalogError::MeshDirectory { .. })
    ));
}

mod policy {
    use std::path::Path;

    use meshgate_catalog::{
        Access, ColumnEffect, MaskKind, Mesh, PlatformPolicy, Principal, Product, decide,
    };

    const GOVERNED: &str = r#"domain: clinical
product: encounters
version: 2.1.0
description: Encounters.
owner: { team: clinical-data, contact: clinical@example.org }
tags: [phi]
tables:
  - name: visits
    format: parquet
    location: file:///data/visits
    columns:
      - { name: encounter_id, type: Int64 }
      - { name: region, type: Utf8 }
      - { name: diagnosis_code, type: Utf8, tags: [phi] }
      - { name: postcode, type: Utf8, tags: [pii] }
      - { name: internal_note, type: Utf8 }
  - name: codes
    format: parquet
    location: file:///data/codes
    columns:
      - { name: diagnosis_code, type: Utf8 }
policy:
  read: { any_role: [clinician, analyst, admin] }
  rows:
    - { filter: "region = principal.region", unless_role: [admin], tables: [visits] }
  columns:
    diagnosis_code: { mask: redact, unless_role: [clinician] }
    visits.internal_note: { hide: true, unless_role: [admin] }
"#;

    fn product(text: &str) -> std::sync::Arc<Product> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("clinical")).unwrap();
        std::fs::write(dir.path().join("clinical/encounters.yaml"), text).unwrap();
        let load = Mesh::load(dir.path()).unwrap();
        assert!(load.errors.is_empty(), "{:?}", load.errors);
        load.mesh.product("clinical", "encounters").unwrap().clone()
    }

    fn platform() -> Vec<PlatformPolicy> {
        serde_yaml::from_str(
            r#"
- { name: pii-masking, tag: pii, column: { mask: hash, unless_role: [pii_reader] } }
- { name: phi-readers, tag: phi, read: { any_role: [clinician, analyst, admin, auditor] } }
"#,
        )
        .unwrap()
    }

    fn effects(access: &Access, table: &str) -> Vec<(String, ColumnEffect)> {
        match access {
            Access::Granted(a) => a.tables[table].columns.clone(),
            Access::Denied => panic!("denied"),
        }
    }

    fn filters(access: &Access, table: &str) -> Vec<String> {
        match access {
            Access::Granted(a) => a.tables[table].row_filters.clone(),
            Access::Denied => panic!("denied"),
        }
    }

    #[test]
    fn read_rules_decide_who_sees_the_product() {
        let p = product(GOVERNED);
        let cases = [
            (Principal::new("iss", "ann", ["clinician"]), true),
            (Principal::new("iss", "bob", ["analyst", "billing"]), true),
            (Principal::new("iss", "eve", ["billing"]), false),
            (Principal::new("iss", "nobody", Vec::<String>::new()), false),
            // Platform rule on the `phi` tag: an auditor passes the platform but not the domain.
            (Principal::new("iss", "aud", ["auditor"]), false),
        ];
        for (principal, allowed) in cases {
            let access = decide(&principal, &p, &platform());
            assert_eq!(
                matches!(access, Access::Granted(_)),
                allowed,
                "{}",
                principal.subject
            );
        }
    }

    #[test]
    fn a_product_without_policy_is_closed() {
        let text = GOVERNED[..GOVERNED.find("policy:").unwrap()].to_string();
        let p = product(&text);
        assert_eq!(
            decide(&Principal::new("iss", "root", ["admin"]), &p, &[]),
            Access::Denied
        );
    }

    #[test]
    fn column_and_row_rules_take_the_strictest_effect() {
        let p = product(GOVERNED);
        let analyst = Principal::new("iss", "bob", ["analyst"]).with_attribute("region", "north");
        let access = decide(&analyst, &p, &platform());
        assert_eq!(
            effects(&access, "visits"),
            vec![
                ("encounter_id".into(), ColumnEffect::Clear),
                ("region".into(), ColumnEffect::Clear),
                (
                    "diagnosis_code".into(),
                    ColumnEffect::Masked(MaskKind::Redact)
                ),
                ("postcode".into(), ColumnEffect::Masked(MaskKind::Hash)),
                ("internal_note".into(), ColumnEffect::Hidden),
            ]
        );
        assert_eq!(filters(&access, "visits"), ["region = principal.region"]);
        // The row rule is scoped to `visits`; the column rule applies to every table.
        assert!(filters(&access, "codes").is_empty());
        assert_eq!(
            effects(&access, "codes")[0].1,
            ColumnEffect::Masked(MaskKind::Redact)
        );

        let clinician = Principal::new("iss", "ann", ["clinician", "pii_reader"]);
        let access = decide(&clinician, &p, &platform());
        assert_eq!(effects(&access, "visits")[2].1, ColumnEffect::Clear);
        assert_eq!(effects(&access, "visits")[3].1, ColumnEffect::Clear);

        let admin = Principal::new("iss", "root", ["admin"]);
        let access = decide(&admin, &p, &platform());
        assert!(filters(&access, "visits").is_empty());
        assert_eq!(effects(&access, "visits")[4].1, ColumnEffect::Clear);
        // The platform's pii mask still applies to an admin without pii_reader.
        assert_eq!(
            effects(&access, "visits")[3].1,
            ColumnEffect::Masked(MaskKind::Hash)
        );
    }

    #[test]
    fn a_domain_cannot_loosen_a_platform_rule() {
        // The domain says postcode is clear for analysts; the platform masks pii: masked.
        let text = GOVERNED.replace(
            "    visits.internal_note: { hide: true, unless_role: [admin] }",
            "    visits.internal_note: { hide: true, unless_role: [admin] }\n    postcode: { mask: partial, unless_role: [analyst] }",
        );
        let p = product(&text);
        let analyst = Principal::new("iss", "bob", ["analyst"]);
        assert_eq!(
            effects(&decide(&analyst, &p, &platform()), "visits")[3].1,
            ColumnEffect::Masked(MaskKind::Hash)
        );
        // ...and can tighten it: hide beats the platform's mask.
        let text = text.replace(
            "postcode: { mask: partial, unless_role: [analyst] }",
            "postcode: { hide: true }",
        );
        let p = product(&text);
        assert_eq!(
            effects(&decide(&analyst, &p, &platform()), "visits")[3].1,
            ColumnEffect::Hidden
        );
    }

    #[test]
    fn invalid_policies_are_rejected_with_the_field() {
        let cases = [
            (
                "read: { any_role: [clinician, analyst, admin] }",
                "read: {}",
                "policy.read: states no condition",
            ),
            (
                "read: { any_role: [clinician, analyst, admin] }",
                "read: { any_authenticated: true, any_role: [x] }",
                "cannot be combined",
            ),
            (
                "diagnosis_code: { mask: redact",
                "diagnosis: { mask: redact",
                "policy.columns.diagnosis: 'diagnosis' is not a declared column",
            ),
            (
                "{ mask: redact, unless_role: [clinician] }",
                "{ unless_role: [clinician] }",
                "give exactly one of",
            ),
            (
                "tables: [visits] }",
                "tables: [nope] }",
                "'nope' is not a table of this product",
            ),
            (
                "mask: redact",
                "mask: scramble",
                "unknown variant `scramble`",
            ),
        ];
        for (from, to, expected) in cases {
            assert!(GOVERNED.contains(from), "{from}");
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir_all(dir.path().join("clinical")).unwrap();
            std::fs::write(
                dir.path().join("clinical/encounters.yaml"),
                GOVERNED.replacen(from, to, 1),
            )
            .unwrap();
            let load = Mesh::load(Path::new(dir.path())).unwrap();
            assert_eq!(load.errors.len(), 1, "{to}");
            let message = load.errors[0].to_string();
            assert!(message.contains(expected), "{to}: {message}");
        }
    }

    #[test]
    fn aggregate_only_applies_to_its_tables_unless_a_role_exempts_the_caller() {
        let text = GOVERNED.replace(
            "  columns:\n    diagnosis_code",
            "  aggregate_only: { min_group_size: 11, privacy_unit: encounter_id, unless_role: [clinician], tables: [visits] }\n  columns:\n    diagnosis_code",
        );
        let p = product(&text);
        let threshold = |principal: &Principal, table: &str| match decide(principal, &p, &[]) {
            Access::Granted(a) => a.tables[table].aggregate_only.clone(),
            Access::Denied => panic!("denied"),
        };
        let analyst = Principal::new("iss", "bob", ["analyst"]);
        let rule = threshold(&analyst, "visits").expect("analysts read visits in aggregate");
        assert_eq!(rule.min_group_size, 11);
        assert_eq!(
            rule.describe(),
            "groups of at least 11 distinct encounter_id"
        );
        assert_eq!(
            threshold(&analyst, "codes"),
            None,
            "the rule names visits only"
        );
        let clinician = Principal::new("iss", "ann", ["clinician"]);
        assert_eq!(threshold(&clinician, "visits"), None);
    }
}
