//! The demo's product descriptors, one per product, as domain teams would write them.

use std::path::Path;

use super::{DemoError, Result, io_error};

/// Writes `<mesh>/<domain>/<product>.yaml` for every demo product, and the transform
/// files they name; table locations are absolute `file://` URLs under `data_root`.
pub(super) fn write_all(mesh: &Path, data_root: &Path) -> Result<()> {
    let data = url::Url::from_directory_path(data_root)
        .map_err(|()| DemoError::Path(data_root.to_path_buf()))?;
    // Transform files first: a descriptor naming a missing one would not load.
    for (domain, file, text) in TRANSFORM_FILES {
        let dir = mesh.join(domain);
        std::fs::create_dir_all(&dir).map_err(|e| io_error(&dir, e))?;
        let path = dir.join(file);
        std::fs::write(&path, text).map_err(|e| io_error(&path, e))?;
    }
    for (domain, product, text) in DESCRIPTORS {
        let dir = mesh.join(domain);
        std::fs::create_dir_all(&dir).map_err(|e| io_error(&dir, e))?;
        let path = dir.join(format!("{product}.yaml"));
        std::fs::write(&path, text.replace("{data}", data.as_str()))
            .map_err(|e| io_error(&path, e))?;
    }
    Ok(())
}

/// Transform files, written beside the descriptors that name them: (domain, file, SQL).
const TRANSFORM_FILES: [(&str, &str, &str); 1] =
    [("analytics", "readmissions_monthly.sql", MONTHLY_TRANSFORM)];

/// The transform of `analytics.readmissions.monthly`, in a file of its own.
const MONTHLY_TRANSFORM: &str = r#"-- Readmission rate per region and month of admission (analytics.readmissions.monthly).
SELECT region, admit_month, count(*) AS stays,
       sum(CASE WHEN readmitted THEN 1 ELSE 0 END) AS readmissions,
       avg(CASE WHEN readmitted THEN 1.0 ELSE 0.0 END) AS rate
FROM (
  SELECT region, admit_month,
         coalesce(lead(admitted_at) OVER (PARTITION BY patient_id ORDER BY admitted_at)
                  <= discharged_at + INTERVAL '30 days', false) AS readmitted
  FROM clinical.encounters.visits
  WHERE kind = 'inpatient'
) s
GROUP BY region, admit_month
"#;

const DESCRIPTORS: [(&str, &str, &str); 7] = [
    ("reference", "regions", REGIONS),
    ("reference", "facilities", FACILITIES),
    ("patients", "registry", REGISTRY),
    ("clinical", "encounters", ENCOUNTERS),
    ("clinical", "labs", LABS),
    ("billing", "claims", CLAIMS),
    ("analytics", "readmissions", READMISSIONS),
];

const REGIONS: &str = r#"domain: reference
product: regions
version: 1.0.0
description: Health regions of the network, one row per region, with their population.
owner: { team: reference-data, contact: reference-data@example.org }
tags: [reference, public]
sla: { freshness: 365days }
tables:
  - name: regions
    description: One row per health region.
    format: parquet
    location: {data}reference/regions/regions/
    primary_key: [region]
    columns:
      - { name: region, type: Utf8, nullable: false, description: Region code used by every domain }
      - { name: name, type: Utf8, nullable: false, description: Display name }
      - { name: population, type: Int64, nullable: false, description: Residents at the last census }
policy:
  read: { any_authenticated: true }
"#;

const FACILITIES: &str = r#"domain: reference
product: facilities
version: 1.2.0
description: Care facilities (hospitals, clinics, labs) with their region and capacity.
owner: { team: reference-data, contact: reference-data@example.org }
tags: [reference]
sla: { freshness: 30days }
tables:
  - name: facilities
    description: One row per facility.
    format: parquet
    location: {data}reference/facilities/facilities/
    primary_key: [facility_id]
    references:
      - { columns: [region], table: reference.regions.regions }
    columns:
      - { name: facility_id, type: Int32, nullable: false, description: Facility key }
      - { name: name, type: Utf8, nullable: false, description: Display name }
      - { name: region, type: Utf8, nullable: false, description: Key into reference.regions }
      - { name: kind, type: Utf8, nullable: false, description: "hospital, clinic or lab" }
      - { name: beds, type: Int32, nullable: true, description: Inpatient beds (hospitals only) }
policy:
  read: { any_authenticated: true }
"#;

const REGISTRY: &str = r#"domain: patients
product: registry
version: 3.0.1
description: The master patient index, one row per registered patient, with identifying details.
owner: { team: patient-administration, contact: patient-admin@example.org }
tags: [pii, longitudinal-health-record]
sla: { freshness: 24h, completeness: ">= 100 new patients per day" }
tables:
  - name: patients
    description: One row per patient.
    format: parquet
    location: {data}patients/registry/patients/
    primary_key: [patient_id]
    references:
      - { columns: [region], table: reference.regions.regions }
    quality: { min_rows: 1 }
    columns:
      - { name: patient_id, type: Int64, nullable: false, description: Patient key used across the mesh, checks: { unique: true } }
      - { name: given_name, type: Utf8, nullable: false, tags: [pii] }
      - { name: family_name, type: Utf8, nullable: false, tags: [pii] }
      - { name: birth_date, type: Date32, nullable: false, tags: [pii] }
      - { name: sex, type: Utf8, nullable: false, description: "F, M or X", checks: { accepted_values: [F, M, X] } }
      - { name: postcode, type: Utf8, nullable: false, tags: [pii] }
      - { name: region, type: Utf8, nullable: false, description: Region of residence }
      - { name: registered_at, type: "Timestamp(Microsecond, None)", nullable: false }
policy:
  read: { any_role: [clinician, analyst, registrar, admin] }
  rows:
    - { filter: "region = principal.region", unless_role: [analyst, registrar, admin] }
  columns:
    birth_date: { mask: "null", unless_role: [clinician, registrar, admin] }
"#;

const ENCOUNTERS: &str = r#"domain: clinical
product: encounters
version: 2.1.0
description: Hospital encounters (admissions, visits) with diagnoses, one row per encounter.
owner: { team: clinical-data, contact: clinical-data@example.org }
tags: [phi, longitudinal-health-record]
sla: { freshness: 24h }
tables:
  - name: visits
    description: One row per encounter, partitioned by month of admission.
    format: parquet
    location: {data}clinical/encounters/visits/
    primary_key: [encounter_id]
    references:
      - { columns: [patient_id], table: patients.registry.patients }
      - { columns: [facility_id], table: reference.facilities.facilities }
      - { columns: [region], table: reference.regions.regions }
    partition_columns: [admit_month]
    columns:
      - { name: encounter_id, type: Int64, nullable: false, description: Encounter key, checks: { unique: true } }
      - { name: patient_id, type: Int64, nullable: false, description: Key into patients.registry }
      - { name: facility_id, type: Int32, nullable: false, description: Key into reference.facilities }
      - { name: region, type: Utf8, nullable: false, description: Region of the facility }
      - { name: kind, type: Utf8, nullable: false, description: "outpatient, emergency or inpatient", checks: { accepted_values: [outpatient, emergency, inpatient] } }
      - { name: admitted_at, type: "Timestamp(Microsecond, None)", nullable: false }
      - { name: discharged_at, type: "Timestamp(Microsecond, None)", nullable: true, description: Null while admitted }
      - { name: diagnosis_code, type: Utf8, nullable: true, description: ICD-10 code, tags: [phi] }
      - { name: admit_month, type: Utf8, nullable: false, description: "Month of admission, YYYY-MM" }
policy:
  read: { any_role: [clinician, analyst, admin] }
  rows:
    - { filter: "region = principal.region", unless_role: [analyst, admin] }
  columns:
    diagnosis_code: { mask: hash, unless_role: [clinician, admin] }
"#;

const LABS: &str = r#"domain: clinical
product: labs
version: 1.4.0
description: Laboratory results taken during encounters, one row per result.
owner: { team: clinical-data, contact: clinical-data@example.org }
tags: [phi, longitudinal-health-record]
sla: { freshness: 6h }
tables:
  - name: results
    description: One row per lab result.
    format: delta
    location: {data}clinical/labs/results/
    primary_key: [result_id]
    references:
      - { columns: [encounter_id], table: clinical.encounters.visits }
      - { columns: [patient_id], table: patients.registry.patients }
    time_travel: { max_age: 30days }
    columns:
      - { name: result_id, type: Int64, nullable: false, checks: { unique: true } }
      - { name: encounter_id, type: Int64, nullable: false, description: Key into clinical.encounters.visits }
      - { name: patient_id, type: Int64, nullable: false, description: Key into patients.registry }
      - { name: test_code, type: Utf8, nullable: false, description: Local test code }
      - { name: value, type: Float64, nullable: false, tags: [phi] }
      - { name: unit, type: Utf8, nullable: false }
      - { name: taken_at, type: "Timestamp(Microsecond, \"UTC\")", nullable: false }
      - { name: abnormal, type: Boolean, nullable: false, description: Outside the reference range }
policy:
  read: { any_role: [clinician, analyst, admin] }
  # Analysts read results only as aggregates over at least 11 patients per group.
  aggregate_only: { min_group_size: 11, privacy_unit: patient_id, unless_role: [clinician, admin] }
"#;

const CLAIMS: &str = r#"domain: billing
product: claims
version: 1.0.0
description: Claims sent to payers for encounters, one row per claim.
owner: { team: revenue-cycle, contact: revenue-cycle@example.org }
tags: [financial]
sla: { freshness: 48h }
quality: { schedule: 6h }
tables:
  - name: claims
    description: One row per claim.
    format: parquet
    location: {data}billing/claims/claims/
    primary_key: [claim_id]
    references:
      - { columns: [encounter_id], table: clinical.encounters.visits }
      - { columns: [patient_id], table: patients.registry.patients }
    columns:
      - { name: claim_id, type: Int64, nullable: false }
      - { name: encounter_id, type: Int64, nullable: false, description: Key into clinical.encounters.visits }
      - { name: patient_id, type: Int64, nullable: false }
      - { name: payer, type: Utf8, nullable: false }
      - { name: amount, type: "Decimal128(12, 2)", nullable: false, description: Billed amount, checks: { range: { min: 0 } } }
      - { name: status, type: Utf8, nullable: false, description: "submitted, paid or denied", checks: { accepted_values: [submitted, paid, denied] } }
      - { name: submitted_on, type: Date32, nullable: false }
policy:
  read: { any_role: [billing, analyst, admin] }
"#;

/// A derived product: computed from clinical encounters and the patient registry with
/// the analytics domain's own rights (`engine.derived.principals.analytics`, an analyst:
/// diagnoses hashed, identifying columns redacted), and served under its own policy.
const READMISSIONS: &str = r#"domain: analytics
product: readmissions
version: 1.0.0
description: Inpatient stays, and whether the patient was admitted again within 30 days of discharge.
owner: { team: population-health, contact: population-health@example.org }
tags: [phi, derived]
sla: { freshness: 24h }
tables:
  - name: stays
    description: One row per inpatient stay, computed from its inputs by every query.
    primary_key: [encounter_id]
    references:
      - { columns: [encounter_id], table: clinical.encounters.visits, cardinality: one-to-one }
      - { columns: [patient_id], table: patients.registry.patients }
    derived:
      mode: virtual
      inputs:
        - clinical.encounters.visits
        - { table: patients.registry.patients, major: 3 }
      transform: |
        SELECT v.encounter_id, v.patient_id, v.region, p.sex, v.admitted_at, v.discharged_at,
               v.diagnosis_code,
               coalesce(v.next_admitted_at <= v.discharged_at + INTERVAL '30 days', false)
                 AS readmitted_30d
        FROM (
          SELECT encounter_id, patient_id, region, admitted_at, discharged_at, diagnosis_code,
                 lead(admitted_at) OVER (PARTITION BY patient_id ORDER BY admitted_at)
                   AS next_admitted_at
          FROM clinical.encounters.visits
          WHERE kind = 'inpatient'
        ) v
        JOIN patients.registry.patients p ON p.patient_id = v.patient_id
    columns:
      - { name: encounter_id, type: Int64, nullable: false, description: Key into clinical.encounters.visits }
      - { name: patient_id, type: Int64, nullable: false, description: Key into patients.registry }
      - { name: region, type: Utf8, nullable: false, description: Region of the facility }
      - { name: sex, type: Utf8, nullable: false }
      - { name: admitted_at, type: "Timestamp(Microsecond, None)", nullable: false }
      - { name: discharged_at, type: "Timestamp(Microsecond, None)", nullable: true }
      - { name: diagnosis_code, type: Utf8, nullable: true, tags: [phi], description: "ICD-10 code as the analytics domain reads it: hashed" }
      - { name: readmitted_30d, type: Boolean, nullable: false, description: Admitted again within 30 days of discharge }
  - name: monthly
    description: Readmission rate per region and month of admission, rewritten by each run.
    primary_key: [region, admit_month]
    derived:
      mode: materialized
      inputs: [clinical.encounters.visits]
      refresh: 1h
      transform_file: readmissions_monthly.sql
    format: delta
    location: {data}analytics/readmissions/monthly/
    columns:
      - { name: region, type: Utf8, nullable: false }
      - { name: admit_month, type: Utf8, nullable: false, description: "Month of admission, YYYY-MM" }
      - { name: stays, type: Int64, nullable: false, description: Inpatient stays }
      - { name: readmissions, type: Int64, nullable: false, description: Stays followed by another within 30 days }
      - { name: rate, type: Float64, nullable: false, description: readmissions / stays }
policy:
  read: { any_role: [clinician, analyst, admin] }
  rows:
    - { filter: "region = principal.region", unless_role: [analyst, admin] }
  columns:
    stays.patient_id: { mask: hash, unless_role: [admin] }
"#;
