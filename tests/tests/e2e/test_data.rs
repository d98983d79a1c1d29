//! Small tables for tests of storage: visits (Parquet, several files of several row
//! groups) and claims (Delta), with the descriptors that declare them.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use deltalake::DeltaTable;
use deltalake::protocol::SaveMode;
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;

/// Rows per row group of the visits files.
pub(crate) const ROW_GROUP_ROWS: usize = 5_000;

/// `rows` visits: `visit_id` 0.., `patient_id` = id % 1000, `ward` one of four.
pub(crate) fn visits(first: i64, rows: i64) -> RecordBatch {
    let ids: Vec<i64> = (first..first + rows).collect();
    let wards: Vec<&str> = ids
        .iter()
        .map(|id| ["north", "south", "east", "west"][(id % 4) as usize])
        .collect();
    RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("visit_id", DataType::Int64, false),
            Field::new("patient_id", DataType::Int64, false),
            Field::new("ward", DataType::Utf8, false),
        ])),
        vec![
            Arc::new(Int64Array::from(ids.clone())),
            Arc::new(Int64Array::from(
                ids.iter().map(|id| id % 1000).collect::<Vec<_>>(),
            )),
            Arc::new(StringArray::from(wards)),
        ],
    )
    .unwrap()
}

/// Writes `files` Parquet files of `rows_per_file` visits each into `dir`, in row groups
/// of [`ROW_GROUP_ROWS`]; returns the total row count.
pub(crate) fn write_visits(dir: &Path, files: i64, rows_per_file: i64) -> i64 {
    std::fs::create_dir_all(dir).unwrap();
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .build();
    for f in 0..files {
        let batch = visits(f * rows_per_file, rows_per_file);
        let file = std::fs::File::create(dir.join(format!("part-{f}.parquet"))).unwrap();
        let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(props.clone())).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
    }
    files * rows_per_file
}

/// A Delta table of claims in `dir`: one commit per entry of `commits`, each holding
/// claims for the patients given (`claim_id` = patient * 10 + commit).
pub(crate) async fn write_claims(dir: &Path, commits: &[&[i64]]) {
    std::fs::create_dir_all(dir).unwrap();
    let url = url::Url::from_directory_path(dir).unwrap();
    for (n, patients) in commits.iter().enumerate() {
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("claim_id", DataType::Int64, false),
                Field::new("patient_id", DataType::Int64, false),
            ])),
            vec![
                Arc::new(Int64Array::from(
                    patients
                        .iter()
                        .map(|p| p * 10 + n as i64)
                        .collect::<Vec<_>>(),
                )),
                Arc::new(Int64Array::from(patients.to_vec())),
            ],
        )
        .unwrap();
        let table = if n == 0 {
            deltalake::DeltaTableBuilder::from_url(url.clone())
                .unwrap()
                .build()
                .unwrap()
        } else {
            deltalake::open_table(url.clone()).await.unwrap()
        };
        let mode = if n == 0 {
            SaveMode::ErrorIfExists
        } else {
            SaveMode::Append
        };
        let _: DeltaTable = table.write(vec![batch]).with_save_mode(mode).await.unwrap();
    }
}

/// The descriptor of `domain`.encounters with table `visits` at `location`.
pub(crate) fn visits_descriptor(domain: &str, location: &str) -> String {
    format!(
        r#"domain: {domain}
product: encounters
version: 1.0.0
description: Visits.
owner: {{ team: {domain}, contact: {domain}@example.org }}
tables:
  - name: visits
    format: parquet
    location: {location}
    columns:
      - {{ name: visit_id, type: Int64, nullable: false }}
      - {{ name: patient_id, type: Int64, nullable: false }}
      - {{ name: ward, type: Utf8, nullable: false }}
policy:
  read: {{ any_authenticated: true }}
"#
    )
}

/// The descriptor of `domain`.`product` with Delta table `claims` at `location`.
pub(crate) fn claims_descriptor(domain: &str, product: &str, location: &str) -> String {
    format!(
        r#"domain: {domain}
product: {product}
version: 1.0.0
description: Claims.
owner: {{ team: {domain}, contact: {domain}@example.org }}
tables:
  - name: claims
    format: delta
    location: {location}
    columns:
      - {{ name: claim_id, type: Int64, nullable: false }}
      - {{ name: patient_id, type: Int64, nullable: false }}
policy:
  read: {{ any_authenticated: true }}
"#
    )
}
