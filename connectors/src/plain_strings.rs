//! Strings that a file's writer stored under another Arrow type, read as the contract's
//! plain strings.
//!
//! Writers built on Arrow embed their Arrow schema in each Parquet file (the
//! `ARROW:schema` key), and name their own string type there: recent arrow-rs writers
//! (`tpchgen-cli`, DataFusion itself) `Utf8View`, Polars `LargeUtf8`, pandas a dictionary
//! for a categorical column. DataFusion's reader follows that hint, decodes the column as
//! that type, then casts every batch to the table's: it maps plain files onto a table of
//! views, not files of views onto a table of plain strings. A contract declares plain
//! strings (`Utf8`), so each string was built twice, once as the writer's type and once
//! in the cast; TPC-H over `tpchgen-cli`'s files took up to 1.6 times as long as over
//! the same rows written plain.
//!
//! The hint is only a hint: Parquet stores all of these the same way (`BYTE_ARRAY`). For
//! each file whose footer names another string or bytes type than the contract
//! declares, the check of the table's files ([`crate::inspect`]) keeps the file's schema
//! with those columns as declared ([`plain_schema_for`]), and [`PlainStringsTable`]
//! hands it to the reader with the file (`PartitionedFile::arrow_schema`), which then
//! decodes the strings as the contract declares them, once. The schema holds the file's
//! columns (the reader requires all of them, undeclared ones included) and their
//! metadata, not the file's own key-value metadata. A file not among the checked ones,
//! or changed since (listed again after its table's listing left the cache), is read
//! as before.
//!
//! The same holds for the columns the engine reads as views ([`crate::string_views`]):
//! "declared" means as the engine reads them, so a file naming such a column plain,
//! large or as a dictionary is decoded straight into views.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Constraints, Statistics};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfig, FileScanConfigBuilder};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::Result;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use object_store::ObjectMeta;
use object_store::path::Path as StorePath;

use crate::contract::is_lossless_widening;
use crate::wire::wire_type;

/// The schemas to read files with, by location, with the file as it was checked: only
/// files that need one.
pub(crate) type PlainSchemas = HashMap<StorePath, FileSchema>;

/// The schema to read one checked file with.
#[derive(Debug, Clone)]
pub(crate) struct FileSchema {
    /// The file as it was checked.
    pub(crate) checked: ObjectMeta,
    pub(crate) schema: SchemaRef,
}

impl FileSchema {
    /// The schema for the file `meta` describes, or `None` when that file is not the one
    /// that was checked (rewritten since: another size, time or entity tag).
    fn for_file(&self, meta: &ObjectMeta) -> Option<&SchemaRef> {
        let same = meta.size == self.checked.size
            && meta.last_modified == self.checked.last_modified
            && meta.e_tag == self.checked.e_tag;
        same.then_some(&self.schema)
    }
}

/// `file`, a Parquet file's Arrow schema, with each column that `declared` (the table's
/// columns as the engine reads them) declares as strings (`Utf8`, `LargeUtf8`,
/// `Utf8View`) or bytes (`Binary`, `LargeBinary`, `BinaryView`) and the file names as
/// another type that widens to it (a view, the other offset size, a dictionary of them)
/// given the declared type, and without the file's key-value metadata; `None` when
/// there is no such column.
pub(crate) fn plain_schema_for(file: &Schema, declared: &[Field]) -> Option<SchemaRef> {
    let mut changed = false;
    let fields: Vec<Arc<Field>> = file
        .fields()
        .iter()
        .map(|field| {
            let plain = declared
                .iter()
                .find(|d| d.name() == field.name())
                .map(Field::data_type)
                .filter(|to| plain_for(field.data_type(), to));
            match plain {
                Some(to) => {
                    changed = true;
                    Arc::new(field.as_ref().clone().with_data_type(to.clone()))
                }
                None => Arc::clone(field),
            }
        })
        .collect();
    changed.then(|| Arc::new(Schema::new(fields)))
}

/// Whether a column the file names `stored` is read as `declared`: a string or bytes
/// type (plain, or the view the engine reads a plain one as) whose plain type
/// `stored`, another type, widens to.
fn plain_for(stored: &DataType, declared: &DataType) -> bool {
    let strings = matches!(
        declared,
        DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Binary
            | DataType::LargeBinary
            | DataType::Utf8View
            | DataType::BinaryView
    );
    strings && stored != declared && is_lossless_widening(stored, &wire_type(declared))
}

/// A table over Parquet files whose scans read the files of `schemas` with the schema
/// given there (see the module's doc); everything else it reads of the inner table's.
/// Writes are not passed on: the tables of data products are read-only.
#[derive(Debug)]
pub(crate) struct PlainStringsTable {
    inner: Arc<dyn TableProvider>,
    schemas: Arc<PlainSchemas>,
}

impl PlainStringsTable {
    /// `inner`, whose scans read the files of `schemas` with their schema; `inner` itself
    /// when there is none.
    pub(crate) fn wrap(
        inner: Arc<dyn TableProvider>,
        schemas: PlainSchemas,
    ) -> Arc<dyn TableProvider> {
        if schemas.is_empty() {
            return inner;
        }
        Arc::new(Self {
            inner,
            schemas: Arc::new(schemas),
        })
    }
}

#[async_trait]
impl TableProvider for PlainStringsTable {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn constraints(&self) -> Option<&Constraints> {
        self.inner.constraints()
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    fn get_table_definition(&self) -> Option<&str> {
        self.inner.get_table_definition()
    }

    fn get_column_default(&self, column: &str) -> Option<&Expr> {
        self.inner.get_column_default(column)
    }

    fn statistics(&self) -> Option<Statistics> {
        self.inner.statistics()
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        self.inner.supports_filters_pushdown(filters)
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let plan = self.inner.scan(state, projection, filters, limit).await?;
        plan.transform_up(|node| {
            let Some(config) = node
                .downcast_ref::<DataSourceExec>()
                .and_then(|scan| scan.data_source().downcast_ref::<FileScanConfig>())
            else {
                return Ok(Transformed::no(node));
            };
            Ok(match with_file_schemas(config, &self.schemas) {
                Some(config) => Transformed::yes(DataSourceExec::from_data_source(config) as _),
                None => Transformed::no(node),
            })
        })
        .map(|transformed| transformed.data)
    }
}

/// `config` with each of its files that `schemas` holds (as checked) given that schema;
/// `None` when it reads none of them.
fn with_file_schemas(config: &FileScanConfig, schemas: &PlainSchemas) -> Option<FileScanConfig> {
    let schema_of = |file: &PartitionedFile| {
        schemas
            .get(&file.object_meta.location)
            .and_then(|checked| checked.for_file(&file.object_meta))
    };
    let any = config
        .file_groups
        .iter()
        .any(|group| group.iter().any(|file| schema_of(file).is_some()));
    if !any {
        return None;
    }
    let groups = config
        .file_groups
        .iter()
        .map(|group| {
            FileGroup::new(
                group
                    .iter()
                    .map(|file| match schema_of(file) {
                        Some(schema) => file.clone().with_arrow_schema(Arc::clone(schema)),
                        None => file.clone(),
                    })
                    .collect(),
            )
        })
        .collect();
    Some(
        FileScanConfigBuilder::from(config.clone())
            .with_file_groups(groups)
            .build(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_views_declared_plain_are_read_plain() {
        let dictionary = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
        let file = Schema::new(vec![
            Field::new("name", DataType::Utf8View, true),
            Field::new("blob", DataType::BinaryView, false),
            Field::new("id", DataType::Int64, false),
            Field::new("kept", DataType::Utf8View, true),
            Field::new("undeclared", DataType::Utf8View, true),
            Field::new("large", DataType::LargeUtf8, true),
            Field::new("category", dictionary, true),
            Field::new("bytes_as_text", DataType::Binary, true),
        ]);
        let declared = [
            Field::new("name", DataType::Utf8, true),
            Field::new("blob", DataType::LargeBinary, false),
            Field::new("id", DataType::Int64, false),
            Field::new("kept", DataType::Utf8View, true),
            Field::new("large", DataType::Utf8, true),
            Field::new("category", DataType::Utf8, true),
            Field::new("bytes_as_text", DataType::Utf8, true),
        ];
        let plain = plain_schema_for(&file, &declared).expect("views to read plain");
        let types: Vec<&DataType> = plain.fields().iter().map(|f| f.data_type()).collect();
        assert_eq!(
            types,
            [
                &DataType::Utf8,
                &DataType::LargeBinary,
                &DataType::Int64,
                &DataType::Utf8View,
                &DataType::Utf8View,
                &DataType::Utf8,
                &DataType::Utf8,
                &DataType::Binary,
            ]
        );
        assert!(!plain.field(1).is_nullable(), "nullability is the file's");
    }

    /// A file naming four other string and bytes types, read through a table that
    /// declares them plain: the reader takes the plain schema, and the values are the
    /// file's.
    #[tokio::test]
    async fn files_naming_other_string_types_are_read_as_declared() {
        use arrow::array::{
            Array, AsArray, BinaryViewArray, DictionaryArray, LargeStringArray, RecordBatch,
            StringViewArray,
        };
        use arrow::datatypes::Int32Type;
        use datafusion::datasource::file_format::parquet::ParquetFormat;
        use datafusion::datasource::listing::{
            ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
        };
        use datafusion::physical_plan::collect;
        use datafusion::prelude::SessionContext;

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("part-0.parquet");
        let names = ["ada", "a string longer than twelve bytes", ""];
        let batch = RecordBatch::try_from_iter([
            (
                "name",
                Arc::new(StringViewArray::from_iter_values(names)) as Arc<dyn Array>,
            ),
            (
                "large",
                Arc::new(LargeStringArray::from_iter_values(names)) as _,
            ),
            (
                "category",
                Arc::new(names.into_iter().collect::<DictionaryArray<Int32Type>>()) as _,
            ),
            (
                "blob",
                Arc::new(BinaryViewArray::from_iter_values(names)) as _,
            ),
        ])
        .unwrap();
        let mut writer = parquet::arrow::ArrowWriter::try_new(
            std::fs::File::create(&path).unwrap(),
            batch.schema(),
            None,
        )
        .unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();

        let declared = Schema::new(vec![
            Field::new("name", DataType::Utf8, true),
            Field::new("large", DataType::Utf8, true),
            Field::new("category", DataType::Utf8, true),
            Field::new("blob", DataType::Binary, true),
        ]);
        let file = parquet::arrow::arrow_reader::ArrowReaderMetadata::load(
            &std::fs::File::open(&path).unwrap(),
            Default::default(),
        )
        .unwrap();
        assert_eq!(
            file.schema().field(0).data_type(),
            &DataType::Utf8View,
            "the hint"
        );
        let plain = plain_schema_for(
            file.schema(),
            declared
                .fields()
                .iter()
                .map(|f| f.as_ref().clone())
                .collect::<Vec<_>>()
                .as_slice(),
        )
        .expect("a plain schema");
        use object_store::ObjectStoreExt;
        let location = StorePath::from_filesystem_path(&path).unwrap();
        let checked = object_store::local::LocalFileSystem::new()
            .head(&location)
            .await
            .unwrap();
        let changed = ObjectMeta {
            size: checked.size + 1,
            ..checked.clone()
        };
        let schema = Arc::clone(&plain);
        let file_schema = FileSchema { checked, schema };
        assert!(
            file_schema.for_file(&changed).is_none(),
            "a file rewritten since"
        );

        let url = ListingTableUrl::parse(format!("file://{}/", dir.path().display())).unwrap();
        let listing = ListingTable::try_new(
            ListingTableConfig::new(url)
                .with_listing_options(ListingOptions::new(Arc::new(ParquetFormat::default())))
                .with_schema(Arc::new(declared.clone())),
        )
        .unwrap();
        let table = PlainStringsTable::wrap(
            Arc::new(listing),
            PlainSchemas::from([(location, file_schema)]),
        );
        let ctx = SessionContext::new();
        ctx.register_table("t", table).unwrap();
        let plan = ctx
            .sql("SELECT * FROM t")
            .await
            .unwrap()
            .create_physical_plan()
            .await
            .unwrap();
        let mut given = Vec::new();
        plan.apply(|node| {
            if let Some(config) = node
                .downcast_ref::<DataSourceExec>()
                .and_then(|scan| scan.data_source().downcast_ref::<FileScanConfig>())
            {
                given.extend(
                    config
                        .file_groups
                        .iter()
                        .flat_map(|g| g.iter().map(|f| f.arrow_schema.clone())),
                );
            }
            Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
        })
        .unwrap();
        assert_eq!(given, vec![Some(plain)]);

        let batches = collect(plan, ctx.task_ctx()).await.unwrap();
        assert_eq!(batches.len(), 1);
        let read = &batches[0];
        assert_eq!(read.schema().fields(), declared.fields());
        for column in 0..3 {
            let values: Vec<&str> = read
                .column(column)
                .as_string::<i32>()
                .iter()
                .flatten()
                .collect();
            assert_eq!(values, names, "column {column}");
        }
        let bytes: Vec<&[u8]> = read.column(3).as_binary::<i32>().iter().flatten().collect();
        assert_eq!(bytes, names.map(str::as_bytes));
    }

    #[test]
    fn columns_read_as_views_take_every_other_string_type_as_views() {
        let dictionary = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
        let file = Schema::new(vec![
            Field::new("plain", DataType::Utf8, true),
            Field::new("large", DataType::LargeUtf8, true),
            Field::new("category", dictionary, true),
            Field::new("view", DataType::Utf8View, true),
            Field::new("bytes", DataType::LargeBinary, true),
        ]);
        let declared = [
            Field::new("plain", DataType::Utf8View, true),
            Field::new("large", DataType::Utf8View, true),
            Field::new("category", DataType::Utf8View, true),
            Field::new("view", DataType::Utf8View, true),
            Field::new("bytes", DataType::BinaryView, true),
        ];
        let read = plain_schema_for(&file, &declared).expect("views to read");
        let types: Vec<&DataType> = read.fields().iter().map(|f| f.data_type()).collect();
        assert_eq!(
            types,
            [
                &DataType::Utf8View,
                &DataType::Utf8View,
                &DataType::Utf8View,
                &DataType::Utf8View,
                &DataType::BinaryView
            ]
        );
    }

    #[test]
    fn a_file_without_views_needs_no_schema() {
        let file = Schema::new(vec![Field::new("name", DataType::Utf8, true)]);
        let declared = [Field::new("name", DataType::Utf8, true)];
        assert!(plain_schema_for(&file, &declared).is_none());
    }
}
