//! Budgets: how much a consumer may take from the mesh per day (UTC), in bytes its
//! queries scan from storage and rows they return.
//!
//! A product's owner declares them in its descriptor (`serving.budget`: for each
//! consumer, and for all of them together); the platform declares its own in the gateway
//! configuration (per principal across the mesh, and defaults per product). The engine
//! enforces them; this crate only describes them.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What may be taken per day: each limit applies when set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Allowance {
    /// Bytes read from storage by the scans of the queries counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_scanned: Option<ByteCount>,
    /// Rows the queries counted returned to their callers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows_returned: Option<u64>,
}

impl Allowance {
    /// Whether no limit is set.
    pub fn is_unlimited(&self) -> bool {
        self.bytes_scanned.is_none() && self.rows_returned.is_none()
    }
}

/// A product owner's budget for its consumers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProductBudget {
    /// What each consumer (principal) may take from the product per day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_consumer: Option<Allowance>,
    /// What all consumers together may take from the product per day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<Allowance>,
}

/// A number of bytes, written as an integer or with a unit (`500 MB`, `10GiB`; `kB`,
/// `MB`, `GB`, `TB` are powers of 1000, `KiB`, `MiB`, `GiB`, `TiB` of 1024).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteCount(pub u64);

/// A byte count that does not read as one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not a byte count: write an integer, or a number with one of B, kB, MB, GB, TB, \
     KiB, MiB, GiB, TiB"
)]
pub struct BadByteCount(String);

impl std::str::FromStr for ByteCount {
    type Err = BadByteCount;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || BadByteCount(text.to_string());
        let trimmed = text.trim();
        let split = trimmed
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(trimmed.len());
        let (number, unit) = trimmed.split_at(split);
        let scale: u64 = match unit.trim() {
            "" | "B" => 1,
            "kB" | "KB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            "TB" => 1_000_000_000_000,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "TiB" => 1 << 40,
            _ => return Err(bad()),
        };
        if let Ok(whole) = number.parse::<u64>() {
            return whole.checked_mul(scale).map(Self).ok_or_else(bad);
        }
        let fractional: f64 = number.parse().map_err(|_| bad())?;
        let bytes = fractional * scale as f64;
        if !bytes.is_finite() || bytes < 0.0 || bytes >= u64::MAX as f64 {
            return Err(bad());
        }
        Ok(Self(bytes.round() as u64))
    }
}

impl std::fmt::Display for ByteCount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const UNITS: [(&str, u64); 4] = [
            ("TiB", 1 << 40),
            ("GiB", 1 << 30),
            ("MiB", 1 << 20),
            ("KiB", 1 << 10),
        ];
        for (unit, size) in UNITS {
            if self.0 >= size {
                let value = self.0 as f64 / size as f64;
                return if self.0.is_multiple_of(size) {
                    write!(f, "{} {unit}", self.0 / size)
                } else {
                    write!(f, "{value:.1} {unit}")
                };
            }
        }
        write!(f, "{} B", self.0)
    }
}

impl Serialize for ByteCount {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for ByteCount {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Number(u64),
            Text(String),
        }
        match Written::deserialize(deserializer)? {
            Written::Number(n) => Ok(Self(n)),
            Written::Text(text) => text.parse().map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts_read_with_and_without_units() {
        let read = |s: &str| s.parse::<ByteCount>().map(|b| b.0);
        assert_eq!(read("1024"), Ok(1024));
        assert_eq!(read("500 MB"), Ok(500_000_000));
        assert_eq!(read("10GiB"), Ok(10 << 30));
        assert_eq!(read("1.5 KiB"), Ok(1536));
        assert!(read("10 parsecs").is_err());
        assert!(read("-1").is_err());
        assert!(read("99999999999 TiB").is_err());
    }

    #[test]
    fn byte_counts_print_in_binary_units() {
        assert_eq!(ByteCount(10 << 30).to_string(), "10 GiB");
        assert_eq!(ByteCount(1536).to_string(), "1.5 KiB");
        assert_eq!(ByteCount(12).to_string(), "12 B");
    }

    #[test]
    fn a_budget_reads_from_yaml() {
        let budget: ProductBudget = serde_yaml::from_str(
            "{ per_consumer: { bytes_scanned: 1 GiB, rows_returned: 1000 }, total: { bytes_scanned: 100 } }",
        )
        .unwrap();
        assert_eq!(
            budget.per_consumer,
            Some(Allowance {
                bytes_scanned: Some(ByteCount(1 << 30)),
                rows_returned: Some(1000)
            })
        );
        assert_eq!(
            budget.total.and_then(|t| t.bytes_scanned),
            Some(ByteCount(100))
        );
    }
}
