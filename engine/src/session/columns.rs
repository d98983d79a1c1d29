//! Columns of the `mesh.meta` tables: the field and array builders they share.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arrow::array::{ArrayRef, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, TimeUnit};

/// A `Utf8` field.
pub(super) fn utf8(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Utf8, nullable)
}

/// A `Utf8` array of `values`.
pub(super) fn strings<'a>(values: impl Iterator<Item = &'a str>) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(values))
}

/// A nullable microsecond UTC timestamp field.
pub(super) fn timestamp_field(name: &str) -> Field {
    Field::new(
        name,
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        true,
    )
}

/// A microsecond UTC timestamp array of `values`.
pub(super) fn timestamps(values: impl Iterator<Item = Option<SystemTime>>) -> ArrayRef {
    let micros = values.map(|t| {
        t.and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_micros() as i64)
    });
    Arc::new(TimestampMicrosecondArray::from_iter(micros).with_timezone("UTC"))
}
