//! Time travel in table names: `results@v3` reads version 3 of a Delta table,
//! `results@2024-06-01T12:00:00Z` (or `results@2024-06-01`, midnight UTC) the version
//! current at that instant.
//!
//! In SQL the suffixed name is a quoted identifier, which every SQL parser accepts and
//! every Flight SQL client passes through unchanged:
//! `SELECT * FROM clinical.labs."results@v3"`.

use std::fmt;
use std::time::SystemTime;

/// Which version of a table to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsOf {
    /// A version number.
    Version(u64),
    /// The version current at an instant.
    Timestamp(SystemTime),
}

impl fmt::Display for AsOf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Version(v) => write!(f, "v{v}"),
            Self::Timestamp(t) => write!(f, "{}", humantime::format_rfc3339(*t)),
        }
    }
}

/// Splits `name@suffix` into the table name and the version it asks for.
///
/// `None` when the name has no `@`; `Some(Err)` with what to write when the suffix is
/// neither `v<N>`, an RFC 3339 instant nor a date.
pub fn split_as_of(name: &str) -> Option<Result<(&str, AsOf), BadAsOf>> {
    let (table, suffix) = name.split_once('@')?;
    Some(
        parse_suffix(suffix)
            .map(|as_of| (table, as_of))
            .ok_or_else(|| BadAsOf {
                name: name.to_string(),
                table: table.to_string(),
            }),
    )
}

/// A table name whose `@` suffix is neither a version nor an instant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "'{name}': write a version as {table}@v3, or an instant as \
     {table}@2024-06-01T12:00:00Z or {table}@2024-06-01"
)]
pub struct BadAsOf {
    /// The name as written.
    pub name: String,
    /// The table part of it.
    pub table: String,
}

fn parse_suffix(suffix: &str) -> Option<AsOf> {
    if let Some(number) = suffix
        .strip_prefix('v')
        .or_else(|| suffix.strip_prefix('V'))
    {
        return number.parse().ok().map(AsOf::Version);
    }
    let instant = if suffix.len() == 10 {
        format!("{suffix}T00:00:00Z")
    } else {
        suffix.to_string()
    };
    humantime::parse_rfc3339(&instant).ok().map(AsOf::Timestamp)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn suffixes_read_as_versions_or_instants() {
        assert_eq!(split_as_of("results"), None);
        assert_eq!(
            split_as_of("results@v3"),
            Some(Ok(("results", AsOf::Version(3))))
        );
        let june = UNIX_EPOCH + Duration::from_secs(1_717_200_000);
        assert_eq!(
            split_as_of("results@2024-06-01T00:00:00Z"),
            Some(Ok(("results", AsOf::Timestamp(june))))
        );
        assert_eq!(
            split_as_of("results@2024-06-01"),
            Some(Ok(("results", AsOf::Timestamp(june))))
        );
        assert_eq!(AsOf::Timestamp(june).to_string(), "2024-06-01T00:00:00Z");
        for bad in ["results@", "results@v", "results@vx", "results@yesterday"] {
            let error = split_as_of(bad).expect("has a suffix").expect_err(bad);
            assert!(error.to_string().contains("results@v3"), "{error}");
        }
    }
}
