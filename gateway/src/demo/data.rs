//! Deterministic data for the demo mesh: a longitudinal health record.
//!
//! Every value is a pure function of a row's key (see [`mix`]), so domains agree with
//! each other without sharing state: the patient of encounter 42 is the same in
//! `clinical.encounters.visits`, `clinical.labs.results` and `billing.claims.claims`,
//! and two runs at the same scale produce the same rows.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Date32Array, Decimal128Array, Float64Array, Int32Array, Int64Array,
    RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

/// Regions of the demo, shared by `reference.regions` and every regional column.
pub(super) const REGIONS: [(&str, &str, i64); 6] = [
    ("north", "Northern Highlands", 1_210_000),
    ("south", "Southern Coast", 2_480_000),
    ("east", "Eastern Plains", 1_730_000),
    ("west", "Western Valleys", 960_000),
    ("central", "Central Metropolitan", 3_950_000),
    ("islands", "Outer Islands", 310_000),
];

/// Number of facilities (fixed, whatever the scale).
pub(super) const FACILITIES: i64 = 120;
/// Months of encounters, from 2024-01.
pub(super) const MONTHS: i64 = 24;

const GIVEN: [&str; 24] = [
    "Ada", "Ben", "Chloe", "Daniel", "Elif", "Farah", "Gabriel", "Hana", "Ivan", "Jade", "Kofi",
    "Lena", "Mateo", "Nora", "Omar", "Priya", "Quinn", "Rosa", "Samir", "Tara", "Uma", "Victor",
    "Wei", "Yara",
];
const FAMILY: [&str; 24] = [
    "Andersen", "Bakker", "Costa", "Dubois", "Eriksen", "Fischer", "Garcia", "Haddad", "Ibrahim",
    "Jensen", "Kowalski", "Larsen", "Moreau", "Nakamura", "Okafor", "Petrov", "Quispe", "Rossi",
    "Silva", "Tanaka", "Urban", "Virtanen", "Wagner", "Zhang",
];
const DIAGNOSES: [&str; 16] = [
    "E11.9", "I10", "J45.909", "M54.5", "F32.9", "K21.9", "N39.0", "J06.9", "I25.10", "E78.5",
    "R51", "S72.001A", "O80", "C50.911", "G43.909", "Z00.00",
];
const LAB_TESTS: [(&str, &str, f64, f64); 8] = [
    ("HBA1C", "%", 4.0, 11.0),
    ("GLU", "mmol/L", 3.0, 15.0),
    ("HGB", "g/dL", 8.0, 18.0),
    ("WBC", "10^9/L", 2.0, 16.0),
    ("CRP", "mg/L", 0.1, 120.0),
    ("LDL", "mmol/L", 1.0, 6.5),
    ("CREAT", "umol/L", 40.0, 250.0),
    ("TSH", "mIU/L", 0.1, 8.0),
];
const PAYERS: [&str; 6] = [
    "public-health",
    "mutual-a",
    "mutual-b",
    "private-plus",
    "employer-care",
    "self-pay",
];
const CLAIM_STATUS: [&str; 3] = ["submitted", "paid", "denied"];
const VISIT_KINDS: [&str; 3] = ["outpatient", "emergency", "inpatient"];
const FACILITY_KINDS: [&str; 3] = ["hospital", "clinic", "lab"];

/// Microseconds from the epoch to 2024-01-01T00:00:00.
const EPOCH_2024_US: i64 = 1_704_067_200_000_000;
const DAY_US: i64 = 86_400_000_000;
/// Days from the epoch to 2024-01-01.
const EPOCH_2024_DAYS: i32 = 19_723;

/// Row counts of one demo scale.
#[derive(Debug, Clone, Copy)]
pub struct DemoSize {
    /// Patients in the registry.
    pub patients: i64,
    /// Encounters per month.
    pub visits_per_month: i64,
    /// Lab results.
    pub lab_results: i64,
    /// Claims.
    pub claims: i64,
}

impl DemoSize {
    /// Row counts at `scale` (1.0 = about six million rows in all).
    pub fn at(scale: f64) -> Self {
        let n = |base: f64| ((base * scale).round() as i64).max(1);
        Self {
            patients: n(500_000.0),
            visits_per_month: n(2_000_000.0 / MONTHS as f64),
            lab_results: n(2_000_000.0),
            claims: n(1_500_000.0),
        }
    }

    /// Total encounters.
    pub fn visits(&self) -> i64 {
        self.visits_per_month * MONTHS
    }
}

/// A 64-bit mix of `(stream, key)`: the demo's only source of "randomness".
pub(super) fn mix(stream: u64, key: i64) -> u64 {
    let mut z = (key as u64)
        .wrapping_add(stream.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn pick<T: Copy>(items: &[T], stream: u64, key: i64) -> T {
    items[(mix(stream, key) % items.len() as u64) as usize]
}

fn range(stream: u64, key: i64, lo: i64, hi: i64) -> i64 {
    lo + (mix(stream, key) % (hi - lo) as u64) as i64
}

fn utf8(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Utf8, nullable)
}

fn ts(name: &str, nullable: bool, zone: Option<&str>) -> Field {
    Field::new(
        name,
        DataType::Timestamp(TimeUnit::Microsecond, zone.map(Into::into)),
        nullable,
    )
}

fn batch(schema: &SchemaRef, columns: Vec<ArrayRef>) -> RecordBatch {
    RecordBatch::try_new(Arc::clone(schema), columns).expect("demo columns match their schema")
}

/// Region of a facility.
pub(super) fn facility_region(facility_id: i64) -> &'static str {
    REGIONS[(facility_id % REGIONS.len() as i64) as usize].0
}

/// `reference.regions.regions`.
pub(super) fn regions() -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        utf8("region", false),
        utf8("name", false),
        Field::new("population", DataType::Int64, false),
    ]));
    batch(
        &schema,
        vec![
            Arc::new(StringArray::from_iter_values(REGIONS.iter().map(|r| r.0))),
            Arc::new(StringArray::from_iter_values(REGIONS.iter().map(|r| r.1))),
            Arc::new(Int64Array::from_iter_values(REGIONS.iter().map(|r| r.2))),
        ],
    )
}

/// `reference.facilities.facilities`.
pub(super) fn facilities() -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("facility_id", DataType::Int32, false),
        utf8("name", false),
        utf8("region", false),
        utf8("kind", false),
        Field::new("beds", DataType::Int32, true),
    ]));
    let ids: Vec<i64> = (1..=FACILITIES).collect();
    let kind = |id: i64| FACILITY_KINDS[(id % 7).min(2) as usize];
    batch(
        &schema,
        vec![
            Arc::new(Int32Array::from_iter_values(
                ids.iter().map(|&id| id as i32),
            )),
            Arc::new(StringArray::from_iter_values(ids.iter().map(|&id| {
                format!("{} {} #{id}", capitalize(facility_region(id)), kind(id))
            }))),
            Arc::new(StringArray::from_iter_values(
                ids.iter().map(|&id| facility_region(id)),
            )),
            Arc::new(StringArray::from_iter_values(
                ids.iter().map(|&id| kind(id)),
            )),
            Arc::new(Int32Array::from_iter(ids.iter().map(|&id| {
                (kind(id) == "hospital").then(|| range(11, id, 40, 900) as i32)
            }))),
        ],
    )
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

/// Schema of `patients.registry.patients`.
pub(super) fn patients_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("patient_id", DataType::Int64, false),
        utf8("given_name", false),
        utf8("family_name", false),
        Field::new("birth_date", DataType::Date32, false),
        utf8("sex", false),
        utf8("postcode", false),
        utf8("region", false),
        ts("registered_at", false, None),
    ]))
}

/// Patients `first..first+count` of the registry.
pub(super) fn patients(schema: &SchemaRef, first: i64, count: i64) -> RecordBatch {
    let ids: Vec<i64> = (first..first + count).collect();
    batch(
        schema,
        vec![
            Arc::new(Int64Array::from_iter_values(ids.iter().copied())),
            Arc::new(StringArray::from_iter_values(
                ids.iter().map(|&id| pick(&GIVEN, 21, id)),
            )),
            Arc::new(StringArray::from_iter_values(
                ids.iter().map(|&id| pick(&FAMILY, 22, id)),
            )),
            Arc::new(Date32Array::from_iter_values(
                ids.iter().map(|&id| range(23, id, -14_600, 18_600) as i32),
            )),
            Arc::new(StringArray::from_iter_values(
                ids.iter()
                    .map(|&id| pick(&["F", "M", "F", "M", "X"], 24, id)),
            )),
            Arc::new(StringArray::from_iter_values(
                ids.iter()
                    .map(|&id| format!("P{:05}", range(25, id, 1000, 99_999))),
            )),
            Arc::new(StringArray::from_iter_values(
                ids.iter().map(|&id| pick(&REGIONS, 26, id).0),
            )),
            Arc::new(TimestampMicrosecondArray::from_iter_values(
                ids.iter()
                    .map(|&id| EPOCH_2024_US - range(27, id, 0, 9 * 365) * DAY_US),
            )),
        ],
    )
}

/// The patient of encounter `encounter_id`.
pub(super) fn patient_of(encounter_id: i64, size: &DemoSize) -> i64 {
    range(31, encounter_id, 1, size.patients + 1)
}

/// The facility of encounter `encounter_id`.
pub(super) fn facility_of(encounter_id: i64) -> i64 {
    range(32, encounter_id, 1, FACILITIES + 1)
}

/// Admission time of encounter `encounter_id` (encounter ids are numbered month by month).
pub(super) fn admitted_at(encounter_id: i64, size: &DemoSize) -> i64 {
    let month = (encounter_id - 1) / size.visits_per_month;
    month_start_us(month) + range(33, encounter_id, 0, 28 * DAY_US)
}

fn month_start_us(month: i64) -> i64 {
    let (year, m) = (2024 + month / 12, month % 12);
    let days_before: [i64; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let leap = year % 4 == 0 && m >= 2;
    let year_days = (year - 2024) * 365 + i64::from(year > 2024);
    EPOCH_2024_US + (year_days + days_before[m as usize] + i64::from(leap)) * DAY_US
}

/// `YYYY-MM` of month index `month`.
pub(super) fn month_label(month: i64) -> String {
    format!("{}-{:02}", 2024 + month / 12, month % 12 + 1)
}

/// Schema of the files of `clinical.encounters.visits` (the partition column is not in them).
pub(super) fn visits_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("encounter_id", DataType::Int64, false),
        Field::new("patient_id", DataType::Int64, false),
        Field::new("facility_id", DataType::Int32, false),
        utf8("region", false),
        utf8("kind", false),
        ts("admitted_at", false, None),
        ts("discharged_at", true, None),
        utf8("diagnosis_code", true),
    ]))
}

/// Encounters `first..first+count`.
pub(super) fn visits(schema: &SchemaRef, size: &DemoSize, first: i64, count: i64) -> RecordBatch {
    let ids: Vec<i64> = (first..first + count).collect();
    batch(
        schema,
        vec![
            Arc::new(Int64Array::from_iter_values(ids.iter().copied())),
            Arc::new(Int64Array::from_iter_values(
                ids.iter().map(|&id| patient_of(id, size)),
            )),
            Arc::new(Int32Array::from_iter_values(
                ids.iter().map(|&id| facility_of(id) as i32),
            )),
            Arc::new(StringArray::from_iter_values(
                ids.iter().map(|&id| facility_region(facility_of(id))),
            )),
            Arc::new(StringArray::from_iter_values(
                ids.iter().map(|&id| pick(&VISIT_KINDS, 34, id)),
            )),
            Arc::new(TimestampMicrosecondArray::from_iter_values(
                ids.iter().map(|&id| admitted_at(id, size)),
            )),
            Arc::new(TimestampMicrosecondArray::from_iter(ids.iter().map(
                |&id| {
                    (mix(35, id) % 100 >= 3)
                        .then(|| admitted_at(id, size) + range(36, id, 1, 240) * 3_600_000_000)
                },
            ))),
            Arc::new(StringArray::from_iter(ids.iter().map(|&id| {
                (!mix(37, id).is_multiple_of(10)).then(|| pick(&DIAGNOSES, 38, id))
            }))),
        ],
    )
}

/// Schema of `clinical.labs.results`.
pub(super) fn lab_results_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("result_id", DataType::Int64, false),
        Field::new("encounter_id", DataType::Int64, false),
        Field::new("patient_id", DataType::Int64, false),
        utf8("test_code", false),
        Field::new("value", DataType::Float64, false),
        utf8("unit", false),
        ts("taken_at", false, Some("UTC")),
        Field::new("abnormal", DataType::Boolean, false),
    ]))
}

/// Lab results `first..first+count`.
pub(super) fn lab_results(
    schema: &SchemaRef,
    size: &DemoSize,
    first: i64,
    count: i64,
) -> RecordBatch {
    let ids: Vec<i64> = (first..first + count).collect();
    let encounter = |id: i64| range(41, id, 1, size.visits() + 1);
    let test = |id: i64| pick(&LAB_TESTS, 42, id);
    let value = |id: i64| {
        let (_, _, lo, hi) = test(id);
        let unit = (mix(43, id) % 10_000) as f64 / 10_000.0;
        ((lo + unit * (hi - lo)) * 100.0).round() / 100.0
    };
    batch(
        schema,
        vec![
            Arc::new(Int64Array::from_iter_values(ids.iter().copied())),
            Arc::new(Int64Array::from_iter_values(
                ids.iter().map(|&id| encounter(id)),
            )),
            Arc::new(Int64Array::from_iter_values(
                ids.iter().map(|&id| patient_of(encounter(id), size)),
            )),
            Arc::new(StringArray::from_iter_values(
                ids.iter().map(|&id| test(id).0),
            )),
            Arc::new(Float64Array::from_iter_values(
                ids.iter().map(|&id| value(id)),
            )),
            Arc::new(StringArray::from_iter_values(
                ids.iter().map(|&id| test(id).1),
            )),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(ids.iter().map(|&id| {
                    admitted_at(encounter(id), size) + range(44, id, 0, 48) * 3_600_000_000
                }))
                .with_timezone("UTC"),
            ),
            Arc::new(BooleanArray::from_iter(ids.iter().map(|&id| {
                let (_, _, lo, hi) = test(id);
                Some(value(id) > lo + 0.85 * (hi - lo))
            }))),
        ],
    )
}

/// Schema of `billing.claims.claims`.
pub(super) fn claims_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("claim_id", DataType::Int64, false),
        Field::new("encounter_id", DataType::Int64, false),
        Field::new("patient_id", DataType::Int64, false),
        utf8("payer", false),
        Field::new("amount", DataType::Decimal128(12, 2), false),
        utf8("status", false),
        Field::new("submitted_on", DataType::Date32, false),
    ]))
}

/// Claims `first..first+count`.
pub(super) fn claims(schema: &SchemaRef, size: &DemoSize, first: i64, count: i64) -> RecordBatch {
    let ids: Vec<i64> = (first..first + count).collect();
    let encounter = |id: i64| range(51, id, 1, size.visits() + 1);
    batch(
        schema,
        vec![
            Arc::new(Int64Array::from_iter_values(ids.iter().copied())),
            Arc::new(Int64Array::from_iter_values(
                ids.iter().map(|&id| encounter(id)),
            )),
            Arc::new(Int64Array::from_iter_values(
                ids.iter().map(|&id| patient_of(encounter(id), size)),
            )),
            Arc::new(StringArray::from_iter_values(
                ids.iter().map(|&id| pick(&PAYERS, 52, id)),
            )),
            Arc::new(
                Decimal128Array::from_iter_values(
                    ids.iter()
                        .map(|&id| i128::from(range(53, id, 2_000, 2_000_000))),
                )
                .with_precision_and_scale(12, 2)
                .expect("valid decimal precision"),
            ),
            Arc::new(StringArray::from_iter_values(
                ids.iter().map(|&id| pick(&CLAIM_STATUS, 54, id)),
            )),
            Arc::new(Date32Array::from_iter_values(ids.iter().map(|&id| {
                let admitted_days = (admitted_at(encounter(id), size) - EPOCH_2024_US) / DAY_US;
                EPOCH_2024_DAYS + (admitted_days + range(55, id, 1, 30)) as i32
            }))),
        ],
    )
}
