//! TPC-H data laid out as a mesh, generated once per scale factor and [`Layout`] into a
//! cache.
//!
//! The `tpch` domain owns three products: `sales` (customer, orders, lineitem), `supply`
//! (part, partsupp, supplier) and `geo` (nation, region). In meshgate's own layout
//! `orders` is a Delta table and the others Parquet, pinned so runs compare: Snappy, row
//! groups of [`ROW_GROUP_ROWS`], one file per [`FILE_ROWS`] rows (each file one `tpchgen`
//! part), strings as plain Utf8. The other layouts are Parquet as a domain would get it
//! from `tpchgen-cli` (the benchmark environment's), whatever meshgate would prefer.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::RecordBatch;
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;
use deltalake::protocol::SaveMode;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use tpchgen::generators::{
    CustomerGenerator, LineItemGenerator, NationGenerator, OrderGenerator, PartGenerator,
    PartSuppGenerator, RegionGenerator, SupplierGenerator,
};
use tpchgen_arrow::{
    CustomerArrow, LineItemArrow, NationArrow, OrderArrow, PartArrow, PartSuppArrow, RegionArrow,
    SupplierArrow,
};

/// Rows per Parquet row group.
pub(crate) const ROW_GROUP_ROWS: usize = 262_144;
/// Rows per Parquet file (at most).
pub(crate) const FILE_ROWS: f64 = 2_097_152.0;
/// Rows per file of [`Layout::SmallFiles`] (at most).
pub(crate) const SMALL_FILE_ROWS: f64 = 65_536.0;
/// Bumped whenever the layout changes, so a cached mesh of an older layout is rebuilt.
const LAYOUT_VERSION: &str = "tpch-mesh-v1";

/// How the tables' files are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Layout {
    /// meshgate's own writer (see the module documentation).
    Meshgate,
    /// `tpchgen-cli parquet` as it writes by default: one file per table, string views
    /// in the Arrow schema, row groups of about 7 MiB, Snappy.
    Tpchgen,
    /// `tpchgen-cli parquet --parts`: files of at most [`SMALL_FILE_ROWS`] rows
    /// (hundreds per table at SF1), otherwise as [`Layout::Tpchgen`].
    SmallFiles,
}

impl Layout {
    /// Its name on the command line and in the cache.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Layout::Meshgate => "meshgate",
            Layout::Tpchgen => "tpchgen",
            Layout::SmallFiles => "small-files",
        }
    }
}

/// One TPC-H table of the mesh.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TpchTable {
    /// TPC-H name.
    pub(crate) name: &'static str,
    /// Product that publishes it.
    pub(crate) product: &'static str,
    /// Rows at scale factor 1 (fixed tables: at any scale).
    rows_at_sf1: f64,
    /// Whether its size is independent of the scale factor.
    fixed: bool,
    /// Whether it is served as Delta (in [`Layout::Meshgate`]).
    delta: bool,
}

/// The eight tables.
pub(crate) const TABLES: [TpchTable; 8] = [
    table("customer", "sales", 150_000.0, false, false),
    table("orders", "sales", 1_500_000.0, false, true),
    table("lineitem", "sales", 6_001_215.0, false, false),
    table("part", "supply", 200_000.0, false, false),
    table("partsupp", "supply", 800_000.0, false, false),
    table("supplier", "supply", 10_000.0, false, false),
    table("nation", "geo", 25.0, true, false),
    table("region", "geo", 5.0, true, false),
];

const fn table(
    name: &'static str,
    product: &'static str,
    rows_at_sf1: f64,
    fixed: bool,
    delta: bool,
) -> TpchTable {
    TpchTable {
        name,
        product,
        rows_at_sf1,
        fixed,
        delta,
    }
}

impl TpchTable {
    /// `tpch.<product>.<table>`, the name every path queries it by.
    pub(crate) fn qualified(&self) -> String {
        format!("tpch.{}.{}", self.product, self.name)
    }

    fn parts(&self, sf: f64) -> i32 {
        if self.fixed {
            1
        } else {
            ((self.rows_at_sf1 * sf / FILE_ROWS).ceil() as i32).max(1)
        }
    }

    /// Batches of `part` (1-based) of `parts`, strings cast to plain Utf8.
    fn generate(
        &self,
        sf: f64,
        part: i32,
        parts: i32,
    ) -> Box<dyn Iterator<Item = Result<RecordBatch, ArrowError>> + Send> {
        match self.name {
            "customer" => Box::new(CustomerArrow::new(CustomerGenerator::new(sf, part, parts))),
            "orders" => Box::new(OrderArrow::new(OrderGenerator::new(sf, part, parts))),
            "lineitem" => Box::new(LineItemArrow::new(LineItemGenerator::new(sf, part, parts))),
            "part" => Box::new(PartArrow::new(PartGenerator::new(sf, part, parts))),
            "partsupp" => Box::new(PartSuppArrow::new(PartSuppGenerator::new(sf, part, parts))),
            "supplier" => Box::new(SupplierArrow::new(SupplierGenerator::new(sf, part, parts))),
            "nation" => Box::new(NationArrow::new(NationGenerator::new(sf, part, parts))),
            "region" => Box::new(RegionArrow::new(RegionGenerator::new(sf, part, parts))),
            other => unreachable!("unknown TPC-H table {other}"),
        }
    }
}

/// A generated mesh: where its descriptors and data are.
#[derive(Debug, Clone)]
pub(crate) struct TpchMesh {
    /// Scale factor.
    pub(crate) sf: f64,
    /// Root of the cache entry.
    pub(crate) dir: PathBuf,
    /// How its files are laid out.
    pub(crate) layout: Layout,
}

impl TpchMesh {
    /// Whether `table` is a Delta table here.
    pub(crate) fn is_delta(&self, table: &TpchTable) -> bool {
        self.layout == Layout::Meshgate && table.delta
    }

    /// The names of its Delta tables.
    pub(crate) fn delta_tables(&self) -> Vec<&'static str> {
        TABLES
            .iter()
            .filter(|t| self.is_delta(t))
            .map(|t| t.name)
            .collect()
    }

    /// The mesh directory (descriptors) the gateway serves.
    pub(crate) fn mesh_dir(&self) -> PathBuf {
        self.dir.join("mesh")
    }

    /// The directory holding one table's files.
    pub(crate) fn table_dir(&self, table: &TpchTable) -> PathBuf {
        self.dir.join("data").join(table.product).join(table.name)
    }

    /// Bytes of Parquet data of all tables.
    pub(crate) fn data_bytes(&self) -> u64 {
        fn walk(dir: &Path) -> u64 {
            std::fs::read_dir(dir)
                .map(|entries| {
                    entries
                        .flatten()
                        .map(|e| match e.file_type() {
                            Ok(t) if t.is_dir() => walk(&e.path()),
                            _ => e.metadata().map(|m| m.len()).unwrap_or(0),
                        })
                        .sum()
                })
                .unwrap_or(0)
        }
        walk(&self.dir.join("data"))
    }
}

/// The mesh at `sf` in `layout` under `cache`, generated unless a complete one is there.
/// Generation writes into a staging directory renamed into place at the end; the
/// foreign layouts run `tpchgen` (the `tpchgen-cli` of the benchmark environment).
pub(crate) async fn ensure_mesh(cache: &Path, sf: f64, layout: Layout, tpchgen: &Path) -> TpchMesh {
    let name = match layout {
        Layout::Meshgate => format!("sf{sf}"),
        other => format!("sf{sf}-{}", other.name()),
    };
    let dir = cache.join(&name);
    let marker = dir.join(".complete");
    let stamp = match layout {
        Layout::Meshgate => {
            format!("{LAYOUT_VERSION} sf={sf} row_group={ROW_GROUP_ROWS} file={FILE_ROWS}")
        }
        other => format!(
            "{LAYOUT_VERSION} sf={sf} layout={} small_file={SMALL_FILE_ROWS} {}",
            other.name(),
            tpchgen_version(tpchgen)
        ),
    };
    if std::fs::read_to_string(&marker).is_ok_and(|s| s == stamp) {
        return TpchMesh { sf, dir, layout };
    }
    let started = Instant::now();
    let staging = cache.join(format!(".{name}.generating-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    let staged = TpchMesh {
        sf,
        dir: staging.clone(),
        layout,
    };
    if layout == Layout::Meshgate {
        let parquet = {
            let staged = staged.clone();
            tokio::task::spawn_blocking(move || write_parquet_tables(&staged))
        };
        for table in TABLES.iter().filter(|t| staged.is_delta(t)) {
            write_delta_table(&staged, table).await;
        }
        parquet.await.expect("parquet generation panicked");
    } else {
        let tpchgen = tpchgen.to_path_buf();
        let staged = staged.clone();
        tokio::task::spawn_blocking(move || run_tpchgen(&staged, &tpchgen))
            .await
            .expect("tpchgen-cli panicked");
    }
    write_descriptors(&staged, &dir.join("data"));
    std::fs::write(staging.join(".complete"), &stamp).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&staging, &dir).unwrap();
    eprintln!(
        "generated TPC-H SF{sf} ({}) in {:.1} s",
        layout.name(),
        started.elapsed().as_secs_f64()
    );
    TpchMesh { sf, dir, layout }
}

/// `tpchgen-cli --version`, which the cache stamp names (another version may write
/// another layout).
fn tpchgen_version(tpchgen: &Path) -> String {
    let output = Command::new(tpchgen)
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", tpchgen.display()));
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// Writes every table of `mesh` with `tpchgen-cli parquet`, its files moved to
/// [`TpchMesh::table_dir`] unchanged.
fn run_tpchgen(mesh: &TpchMesh, tpchgen: &Path) {
    let raw = mesh.dir.join("tpchgen");
    for table in &TABLES {
        let mut command = Command::new(tpchgen);
        command
            .args(["parquet", "--quiet", "--scale-factor"])
            .arg(mesh.sf.to_string())
            .args(["--tables", table.name, "--output-dir"])
            .arg(&raw);
        let parts = match mesh.layout {
            Layout::SmallFiles if !table.fixed => {
                ((table.rows_at_sf1 * mesh.sf / SMALL_FILE_ROWS).ceil() as u64).max(1)
            }
            _ => 1,
        };
        if mesh.layout == Layout::SmallFiles {
            command.arg("--parts").arg(parts.to_string());
        }
        let status = command
            .status()
            .unwrap_or_else(|e| panic!("{}: {e}", tpchgen.display()));
        assert!(status.success(), "tpchgen-cli failed for {}", table.name);
        let dir = mesh.table_dir(table);
        std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
        if mesh.layout == Layout::SmallFiles {
            // <raw>/<table>/<table>.<part>.parquet
            std::fs::rename(raw.join(table.name), &dir).unwrap();
        } else {
            // <raw>/<table>.parquet
            std::fs::create_dir_all(&dir).unwrap();
            let file = format!("{}.parquet", table.name);
            std::fs::rename(raw.join(&file), dir.join(&file)).unwrap();
        }
    }
    let _ = std::fs::remove_dir_all(&raw);
}

fn plain_schema(schema: &Schema) -> SchemaRef {
    Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| {
                let data_type = match f.data_type() {
                    DataType::Utf8View => DataType::Utf8,
                    other => other.clone(),
                };
                Field::new(f.name(), data_type, f.is_nullable())
            })
            .collect::<Vec<_>>(),
    ))
}

/// `batch` with its string views cast to plain Utf8.
fn plain(batch: RecordBatch) -> RecordBatch {
    let schema = plain_schema(&batch.schema());
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| cast(c, f.data_type()).unwrap())
        .collect();
    RecordBatch::try_new(schema, columns).unwrap()
}

fn writer_properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .build()
}

fn write_parquet_tables(mesh: &TpchMesh) {
    let jobs: Vec<(TpchTable, i32, i32)> = TABLES
        .iter()
        .filter(|t| !t.delta)
        .flat_map(|t| {
            let parts = t.parts(mesh.sf);
            (1..=parts).map(move |part| (*t, part, parts))
        })
        .collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some((table, part, parts)) = jobs.get(i) else {
                        break;
                    };
                    let path = mesh.table_dir(table).join(format!("part-{part}.parquet"));
                    write_file(&path, table.generate(mesh.sf, *part, *parts));
                }
            });
        }
    });
}

fn write_file(path: &Path, batches: impl Iterator<Item = Result<RecordBatch, ArrowError>>) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut writer = None;
    for batch in batches {
        let batch = plain(batch.unwrap());
        let writer = writer.get_or_insert_with(|| {
            let file = File::create(path).unwrap();
            ArrowWriter::try_new(file, batch.schema(), Some(writer_properties())).unwrap()
        });
        writer.write(&batch).unwrap();
    }
    if let Some(writer) = writer {
        writer.close().unwrap();
    }
}

async fn write_delta_table(mesh: &TpchMesh, table: &TpchTable) {
    let dir = mesh.table_dir(table);
    std::fs::create_dir_all(&dir).unwrap();
    let url = url::Url::from_directory_path(std::path::absolute(&dir).unwrap()).unwrap();
    let batches: Vec<RecordBatch> = table
        .generate(mesh.sf, 1, 1)
        .map(|b| plain(b.unwrap()))
        .collect();
    let delta = deltalake::DeltaTableBuilder::from_url(url)
        .unwrap()
        .build()
        .unwrap();
    delta
        .write(batches)
        .with_save_mode(SaveMode::ErrorIfExists)
        .with_table_name(table.name)
        .with_writer_properties(writer_properties())
        .await
        .unwrap();
}

/// The descriptors of `mesh`'s three products; tables are read from `data` (absolute).
/// Every layout declares the same contract (strings as Utf8).
fn write_descriptors(mesh: &TpchMesh, data: &Path) {
    let data = url::Url::from_directory_path(std::path::absolute(data).unwrap()).unwrap();
    let dir = mesh.dir.join("mesh/tpch");
    std::fs::create_dir_all(&dir).unwrap();
    for (product, description, policy) in PRODUCTS {
        let mut text = format!(
            "domain: tpch\nproduct: {product}\nversion: 1.0.0\ndescription: {description}\n\
             owner: {{ team: benchmarks, contact: benchmarks@example.org }}\ntags: [benchmark]\n\
             sla: {{ freshness: 3650days }}\ntables:\n"
        );
        for table in TABLES.iter().filter(|t| t.product == product) {
            let schema = schema_of(table);
            text.push_str(&format!(
                "  - name: {}\n    format: {}\n    location: {}{}/{}/\n    columns:\n",
                table.name,
                if mesh.is_delta(table) {
                    "delta"
                } else {
                    "parquet"
                },
                data,
                table.product,
                table.name
            ));
            for field in schema.fields() {
                text.push_str(&format!(
                    "      - {{ name: {}, type: \"{}\", nullable: {} }}\n",
                    field.name(),
                    field.data_type(),
                    field.is_nullable()
                ));
            }
        }
        text.push_str(policy);
        std::fs::write(dir.join(format!("{product}.yaml")), text).unwrap();
    }
}

fn schema_of(table: &TpchTable) -> SchemaRef {
    let schema = match table.name {
        "customer" => CustomerArrow::schema_ref(),
        "orders" => OrderArrow::schema_ref(),
        "lineitem" => LineItemArrow::schema_ref(),
        "part" => PartArrow::schema_ref(),
        "partsupp" => PartSuppArrow::schema_ref(),
        "supplier" => SupplierArrow::schema_ref(),
        "nation" => NationArrow::schema_ref(),
        "region" => RegionArrow::schema_ref(),
        other => unreachable!("unknown TPC-H table {other}"),
    };
    plain_schema(&schema)
}

/// Products, their description and policy. Admins read everything as stored; the
/// restricted principal (role `analyst`, attribute `segment`) sees the customers of its
/// market segment only, with contact details and clerks masked.
const PRODUCTS: [(&str, &str, &str); 3] = [
    (
        "sales",
        "Customers, their orders and order lines (TPC-H).",
        r#"policy:
  read: { any_role: [admin, analyst] }
  rows:
    - { filter: "c_mktsegment = principal.segment", unless_role: [admin], tables: [customer] }
  columns:
    c_phone: { mask: hash, unless_role: [admin] }
    c_address: { mask: "null", unless_role: [admin] }
    o_clerk: { mask: redact, unless_role: [admin] }
"#,
    ),
    (
        "supply",
        "Parts, suppliers and what each supplier stocks (TPC-H).",
        r#"policy:
  read: { any_role: [admin, analyst] }
  columns:
    s_phone: { mask: partial, unless_role: [admin] }
"#,
    ),
    (
        "geo",
        "Nations and regions (TPC-H).",
        "policy:\n  read: { any_authenticated: true }\n",
    ),
];
