//! `meshgate demo`: a realistic mesh for a longitudinal health record, generated on
//! first use and served.
//!
//! Four domains own six products: `reference` (regions, facilities), `patients`
//! (a registry with PII), `clinical` (encounters partitioned by month; lab results as
//! Delta) and `billing` (claims). At scale 1 the mesh holds about six million rows.
//! Generation is deterministic, writes into a temporary folder and renames it into
//! place when complete, so an interrupted run never leaves a half-made mesh behind.

mod data;
mod descriptors;
pub mod help;
mod identity;
pub mod node;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Schema};
use deltalake::DeltaTable;
use deltalake::protocol::SaveMode;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;

pub use data::DemoSize;
pub use identity::{
    DEMO_AUDIENCE, DEMO_ISSUER, PERSONAS, Persona, demo_domain_principals, demo_handle_keys,
    demo_issuer, demo_platform_policies, demo_secret, demo_token, persona_token,
};

use crate::auth::MintError;

/// Result of preparing the demo.
type Result<T, E = DemoError> = std::result::Result<T, E>;

/// Why the demo mesh cannot be prepared.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The asked scale is out of range.
    #[error("--scale must be in (0, 100], got {0}")]
    Scale(f64),
    /// The directory holds a demo mesh of another scale.
    #[error("{} holds a demo mesh of scale {scale}; remove it or choose another --dir", dir.display())]
    OtherScale {
        /// The directory.
        dir: PathBuf,
        /// The scale it holds.
        scale: String,
    },
    /// The directory holds something else.
    #[error("{} exists and is not a demo mesh; choose an empty or absent --dir", .0.display())]
    NotDemo(PathBuf),
    /// A file or directory cannot be written or read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A Parquet file cannot be written.
    #[error("{}: {source}", path.display())]
    Parquet {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// The Delta table cannot be written.
    #[error("writing the demo Delta table: {0}")]
    Delta(#[source] deltalake::DeltaTableError),
    /// A path that is not usable as a table location.
    #[error("{} is not a usable path", .0.display())]
    Path(PathBuf),
    /// Generation stopped.
    #[error("demo generation failed: {0}")]
    Join(#[source] tokio::task::JoinError),
    /// A generation thread panicked.
    #[error("demo generation thread panicked")]
    Panicked,
    /// The system gave no randomness for the demo secret.
    #[error("no randomness for the demo secret")]
    NoRandomness,
    /// A demo token cannot be signed.
    #[error(transparent)]
    Mint(#[from] MintError),
    /// `--domain-node` names no domain of the demo.
    #[error(
        "--domain-node takes a domain of the demo (reference, patients, clinical, billing), not '{0}'"
    )]
    NoSuchDomain(String),
    /// The key the gateway signs its node tokens with cannot be used.
    #[error(transparent)]
    NodeKey(#[from] crate::auth::NodeTokenError),
}

/// Marker file recording the scale a demo mesh was generated at.
const MARKER: &str = ".meshgate-demo";
/// Rows per generated batch.
const BATCH_ROWS: i64 = 65_536;
/// Rows per Parquet row group (small enough that pruning shows at demo scale).
const ROW_GROUP_ROWS: usize = 131_072;
/// Rows per Parquet data page. Each page is indexed (its min and max in the page index),
/// so a lookup by key decodes one small page of each column it reads. With the writer's
/// default of 20,000 rows a point lookup decoded ten times the rows, and that decoding
/// dominated the latency of small queries under load.
const PAGE_ROWS: usize = 2_048;
/// Largest dictionary page of a string column before its pages fall back to plain.
const DICTIONARY_BYTES: usize = 16 * 1024;
/// Rows per file of the unpartitioned Parquet tables.
const FILE_ROWS: i64 = 262_144;

/// What [`ensure_demo_mesh`] did.
#[derive(Debug)]
pub struct DemoMesh {
    /// The mesh directory.
    pub dir: PathBuf,
    /// Whether it was generated now (false: an existing one was reused).
    pub generated: bool,
    /// Rows in all tables.
    pub rows: i64,
    /// Seconds spent generating (zero when reused).
    pub seconds: f64,
}

/// Generates the demo mesh in `dir` at `scale` unless a demo mesh of that scale is there.
///
/// Refuses to touch a non-empty `dir` that is not a demo mesh, and a demo mesh of
/// another scale (remove it or pick another `--dir`).
pub async fn ensure_demo_mesh(dir: &Path, scale: f64) -> Result<DemoMesh> {
    if !(scale > 0.0 && scale <= 100.0) {
        return Err(DemoError::Scale(scale));
    }
    let size = DemoSize::at(scale);
    let rows = total_rows(&size);
    let marker = dir.join(MARKER);
    if marker.exists() {
        let recorded = std::fs::read_to_string(&marker).unwrap_or_default();
        if recorded.trim() == scale.to_string() {
            return Ok(DemoMesh {
                dir: dir.to_path_buf(),
                generated: false,
                rows,
                seconds: 0.0,
            });
        }
        return Err(DemoError::OtherScale {
            dir: dir.to_path_buf(),
            scale: recorded.trim().to_string(),
        });
    }
    if dir.exists()
        && std::fs::read_dir(dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        return Err(DemoError::NotDemo(dir.to_path_buf()));
    }

    let started = Instant::now();
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| io_error(parent, e))?;
    let final_dir = std::path::absolute(dir).map_err(|e| io_error(dir, e))?;
    let staging = parent.join(format!(
        ".{}.generating-{}",
        dir.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("demo-mesh"),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&staging);
    generate(&staging, &final_dir, &size).await?;
    std::fs::write(staging.join(MARKER), scale.to_string()).map_err(|e| io_error(&staging, e))?;
    if dir.exists() {
        std::fs::remove_dir(dir).map_err(|e| io_error(dir, e))?;
    }
    std::fs::rename(&staging, dir).map_err(|e| io_error(dir, e))?;
    Ok(DemoMesh {
        dir: dir.to_path_buf(),
        generated: true,
        rows,
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn total_rows(size: &DemoSize) -> i64 {
    data::REGIONS.len() as i64
        + data::FACILITIES
        + size.patients
        + size.visits()
        + size.lab_results
        + size.claims
}

/// Writes data and descriptors into `staging`; descriptors point at `final_dir`.
async fn generate(staging: &Path, final_dir: &Path, size: &DemoSize) -> Result<()> {
    let data_dir = staging.join("data");
    let size = *size;
    let parquet_dir = data_dir.clone();
    // Parquet tables are written on blocking threads while the Delta table is written here.
    let parquet = tokio::task::spawn_blocking(move || write_parquet_tables(&parquet_dir, &size));
    write_lab_results(&data_dir.join("clinical/labs/results"), &size).await?;
    parquet.await.map_err(DemoError::Join)??;
    descriptors::write_all(staging, &final_dir.join("data"))
}

fn write_parquet_tables(data: &Path, size: &DemoSize) -> Result<()> {
    std::thread::scope(|scope| {
        let jobs = [
            scope.spawn(|| {
                write_file(
                    &data.join("reference/regions/regions/part-0.parquet"),
                    &[data::regions()],
                )?;
                write_file(
                    &data.join("reference/facilities/facilities/part-0.parquet"),
                    &[data::facilities()],
                )
            }),
            scope.spawn(|| {
                let schema = data::patients_schema();
                write_chunked(
                    &data.join("patients/registry/patients"),
                    size.patients,
                    |first, n| data::patients(&schema, first, n),
                )
            }),
            scope.spawn(|| {
                let schema = data::visits_schema();
                for month in 0..data::MONTHS {
                    let dir = data.join(format!(
                        "clinical/encounters/visits/admit_month={}",
                        data::month_label(month)
                    ));
                    let first = month * size.visits_per_month + 1;
                    let batches = batches_of(first, size.visits_per_month, |f, n| {
                        data::visits(&schema, size, f, n)
                    });
                    write_file(&dir.join("part-0.parquet"), &batches)?;
                }
                Ok(())
            }),
            scope.spawn(|| {
                let schema = data::claims_schema();
                write_chunked(
                    &data.join("billing/claims/claims"),
                    size.claims,
                    |first, n| data::claims(&schema, size, first, n),
                )
            }),
        ];
        jobs.into_iter()
            .try_for_each(|job| job.join().map_err(|_| DemoError::Panicked)?)
    })
}

fn batches_of(first: i64, count: i64, make: impl Fn(i64, i64) -> RecordBatch) -> Vec<RecordBatch> {
    let mut out = Vec::new();
    let mut start = first;
    while start < first + count {
        let n = BATCH_ROWS.min(first + count - start);
        out.push(make(start, n));
        start += n;
    }
    out
}

fn write_chunked(dir: &Path, rows: i64, make: impl Fn(i64, i64) -> RecordBatch) -> Result<()> {
    let mut first = 1;
    let mut part = 0;
    while first <= rows {
        let n = FILE_ROWS.min(rows - first + 1);
        write_file(
            &dir.join(format!("part-{part}.parquet")),
            &batches_of(first, n, &make),
        )?;
        first += n;
        part += 1;
    }
    Ok(())
}

/// How the demo writes Parquet, as a product serving lookups would: Snappy, pages of
/// [`PAGE_ROWS`], and dictionary encoding for strings only. A scan reads the dictionary
/// page of every column chunk it touches whole, and the dictionary of a column of ids,
/// dates or amounts is nearly as large as the column: with dictionaries everywhere, a
/// point lookup decompressed some 300 KB of them. The strings here are categorical
/// (names, regions, codes); the one that is not (postcode) falls back to plain pages
/// once its dictionary passes [`DICTIONARY_BYTES`].
fn writer_properties(schema: &Schema) -> WriterProperties {
    let strings = schema
        .fields()
        .iter()
        .filter(|f| f.data_type() == &DataType::Utf8);
    strings
        .fold(
            WriterProperties::builder()
                .set_compression(Compression::SNAPPY)
                .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
                .set_data_page_row_count_limit(PAGE_ROWS)
                .set_dictionary_enabled(false)
                .set_dictionary_page_size_limit(DICTIONARY_BYTES),
            |builder, field| {
                builder.set_column_dictionary_enabled(ColumnPath::from(field.name().as_str()), true)
            },
        )
        .build()
}

fn write_file(path: &Path, batches: &[RecordBatch]) -> Result<()> {
    let Some(first) = batches.first() else {
        return Ok(());
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| io_error(parent, e))?;
    }
    let file = File::create(path).map_err(|e| io_error(path, e))?;
    let schema = first.schema();
    let mut writer =
        ArrowWriter::try_new(file, Arc::clone(&schema), Some(writer_properties(&schema)))
            .map_err(|source| parquet_error(path, source))?;
    for batch in batches {
        writer
            .write(batch)
            .map_err(|source| parquet_error(path, source))?;
    }
    writer
        .close()
        .map_err(|source| parquet_error(path, source))?;
    Ok(())
}

async fn write_lab_results(dir: &Path, size: &DemoSize) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
    let url =
        url::Url::from_directory_path(std::path::absolute(dir).map_err(|e| io_error(dir, e))?)
            .map_err(|()| DemoError::Path(dir.to_path_buf()))?;
    let schema = data::lab_results_schema();
    let batches = batches_of(1, size.lab_results, |first, n| {
        data::lab_results(&schema, size, first, n)
    });
    let delta_err = DemoError::Delta;
    // A new table: build without loading (there is no log to read yet).
    let table: DeltaTable = deltalake::DeltaTableBuilder::from_url(url)
        .map_err(delta_err)?
        .build()
        .map_err(delta_err)?;
    table
        .write(batches)
        .with_save_mode(SaveMode::ErrorIfExists)
        .with_table_name("results")
        .with_writer_properties(writer_properties(&schema))
        .await
        .map_err(delta_err)?;
    Ok(())
}

fn parquet_error(path: &Path, source: parquet::errors::ParquetError) -> DemoError {
    DemoError::Parquet {
        path: path.to_path_buf(),
        source,
    }
}

fn io_error(path: &Path, source: std::io::Error) -> DemoError {
    DemoError::Io {
        path: path.to_path_buf(),
        source,
    }
}
