//! Strings computed on as views inside the engine, and served as the contract declares.
//!
//! DataFusion's operators hash, compare, filter and group `Utf8View` columns faster than
//! plain `Utf8`, and the Parquet reader decodes a dictionary page into views without
//! copying a string (each view points into the page's dictionary). Reading the strings
//! of `tpchgen-cli`'s files as plain `Utf8` cost the gateway about a fifth of its CPU on
//! TPC-H Q1 (decoding dictionaries, hashing and comparing group keys), against a
//! fourteenth for in-process DataFusion, which reads them as the files hint: as views.
//!
//! So a Parquet table's columns declared `Utf8` (or `Binary`) may be read as `Utf8View`
//! (`BinaryView`): [`read_types`] decides, following [`StringViews`] (a Delta table's
//! are cast to the declared type). The contract table
//! ([`crate::ContractTable`]) then serves them as views, without casting them back,
//! and the engine converts them to the declared plain type once, as results leave it
//! for a door. Only `Utf8` and `Binary` are read as views: the plain type of a view is
//! exactly the declared one, so what leaves the engine is what the contract says (a
//! `LargeUtf8` column stays `LargeUtf8`). Inside SQL, `information_schema` and
//! `DESCRIBE` show the type computed on; the doors' metadata shows the contract's.

use arrow::datatypes::{DataType, Field, Schema};
use serde::Deserialize;

/// Which string and bytes columns of Parquet tables the engine reads as views. Delta
/// tables' are cast to the declared type whatever this says: delta-rs reads them as
/// views, but served as views, string filters reach its Parquet decoder, which made
/// TPC-H Q13 (`o_comment NOT LIKE ...`) 1.4x slower.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StringViews {
    /// None: every column is read as the contract declares it.
    Never,
    /// A column declared `Utf8` (`Binary`) that every file of the table names as a
    /// view (the writer's hint: recent arrow-rs writers such as `tpchgen-cli` and
    /// DataFusion itself).
    #[default]
    Hinted,
    /// Every column declared `Utf8` or `Binary`, whatever its files name (as in-process
    /// DataFusion reads Parquet by default).
    Always,
}

/// The view type a column declared `declared` can be computed on as: `Utf8View` for
/// `Utf8`, `BinaryView` for `Binary`; `None` for any other type.
pub(crate) fn view_of(declared: &DataType) -> Option<DataType> {
    match declared {
        DataType::Utf8 => Some(DataType::Utf8View),
        DataType::Binary => Some(DataType::BinaryView),
        _ => None,
    }
}

/// Whether a column the contract declares `declared` may be served as `stored`, a view
/// whose plain type is exactly `declared`.
pub(crate) fn serves_as_view(stored: &DataType, declared: &DataType) -> bool {
    view_of(declared).as_ref() == Some(stored)
}

/// The file columns `declared` of a Parquet table as the engine reads them under
/// `mode`, given the Arrow schemas its checked files name (`files`): each column
/// declared `Utf8` or `Binary` becomes its view when `mode` is [`StringViews::Always`],
/// or when it is [`StringViews::Hinted`] and every file (at least one) names that view.
/// Names, nullability and metadata are the declared ones.
pub(crate) fn read_types(declared: &[Field], files: &[&Schema], mode: StringViews) -> Vec<Field> {
    declared
        .iter()
        .map(|field| {
            let Some(view) = view_of(field.data_type()) else {
                return field.clone();
            };
            let hinted = !files.is_empty()
                && files.iter().all(|file| {
                    file.field_with_name(field.name())
                        .is_ok_and(|stored| stored.data_type() == &view)
                });
            let as_view = match mode {
                StringViews::Never => false,
                StringViews::Hinted => hinted,
                StringViews::Always => true,
            };
            if as_view {
                field.clone().with_data_type(view)
            } else {
                field.clone()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn declared() -> Vec<Field> {
        vec![
            Field::new("name", DataType::Utf8, true),
            Field::new("blob", DataType::Binary, false),
            Field::new("large", DataType::LargeUtf8, true),
            Field::new("id", DataType::Int64, false),
        ]
    }

    fn types(fields: &[Field]) -> Vec<&DataType> {
        fields.iter().map(Field::data_type).collect()
    }

    #[test]
    fn hinted_columns_are_views_only_when_every_file_hints_them() {
        let hinting = Schema::new(vec![
            Field::new("name", DataType::Utf8View, true),
            Field::new("blob", DataType::BinaryView, false),
            Field::new("large", DataType::Utf8View, true),
            Field::new("id", DataType::Int64, false),
        ]);
        let plain_blob = Schema::new(vec![
            Field::new("name", DataType::Utf8View, true),
            Field::new("blob", DataType::Binary, false),
        ]);
        let read = read_types(&declared(), &[&hinting, &plain_blob], StringViews::Hinted);
        assert_eq!(
            types(&read),
            [
                &DataType::Utf8View,
                &DataType::Binary,
                &DataType::LargeUtf8,
                &DataType::Int64
            ],
            "a file without the hint keeps the column plain; LargeUtf8 is never a view"
        );
        assert!(!read[1].is_nullable(), "the declared nullability");
        assert_eq!(
            types(&read_types(&declared(), &[], StringViews::Hinted))[0],
            &DataType::Utf8,
            "no file, no hint"
        );
        assert_eq!(
            read_types(&declared(), &[&hinting], StringViews::Never),
            declared()
        );
    }

    #[test]
    fn always_reads_every_plain_string_and_bytes_column_as_a_view() {
        let read = read_types(&declared(), &[], StringViews::Always);
        assert_eq!(
            types(&read),
            [
                &DataType::Utf8View,
                &DataType::BinaryView,
                &DataType::LargeUtf8,
                &DataType::Int64
            ]
        );
    }

    #[test]
    fn only_the_view_of_the_declared_type_is_served() {
        assert!(serves_as_view(&DataType::Utf8View, &DataType::Utf8));
        assert!(serves_as_view(&DataType::BinaryView, &DataType::Binary));
        assert!(!serves_as_view(&DataType::Utf8View, &DataType::LargeUtf8));
        assert!(!serves_as_view(&DataType::Utf8, &DataType::Utf8));
        assert_eq!(crate::wire_type(&DataType::Utf8View), DataType::Utf8);
        assert_eq!(crate::wire_type(&DataType::Int8), DataType::Int8);
    }

    #[test]
    fn modes_are_named_in_lowercase() {
        let mode: StringViews = serde_json::from_str("\"always\"").unwrap();
        assert_eq!(mode, StringViews::Always);
        assert_eq!(StringViews::default(), StringViews::Hinted);
    }
}
