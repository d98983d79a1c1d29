//! Freshness: how old a product's newest data is, and a caller's demand that it be no
//! older than some bound.
//!
//! A request may bound the age of the data it reads (the Flight door takes the bound from
//! `x-meshgate-max-staleness: 30m`). Every product its statement reads must then hold
//! data newer than that bound, or the statement fails with `FAILED_PRECONDITION` instead
//! of silently answering from old data.
//! The age of a product is measured from its newest data: the newest Parquet file's
//! modification time, or the commit time of the Delta version served.

use std::time::{Duration, SystemTime};

use super::health::ProductHealth;
use crate::error::{Error, Result};

impl ProductHealth {
    /// When the product's newest data was written, over all its tables; `None` when no
    /// table says (empty tables, or storage that does not tell).
    pub fn newest_data(&self) -> Option<SystemTime> {
        self.tables.values().filter_map(|s| s.last_modified).max()
    }

    /// How old the newest data is at `now`; `None` when unknown.
    pub fn data_age(&self, now: SystemTime) -> Option<Duration> {
        self.newest_data()
            .map(|t| now.duration_since(t).unwrap_or(Duration::ZERO))
    }
}

/// Checks that `product`, whose health is `health`, holds data no older than `bound`.
pub(crate) fn require_fresh(
    product: &str,
    health: &ProductHealth,
    bound: Duration,
    now: SystemTime,
) -> Result<()> {
    match health.data_age(now) {
        Some(age) if age <= bound => Ok(()),
        Some(age) => Err(Error::FailedPrecondition(format!(
            "data product {product} is staler than its freshness bound allows: its newest \
             data is {} old, the request accepts at most {}",
            humantime::format_duration(round_to_seconds(age)),
            humantime::format_duration(bound)
        ))),
        None => Err(Error::FailedPrecondition(format!(
            "data product {product} cannot show that it is fresh enough for \
             the request's freshness bound: the age of its data is unknown"
        ))),
    }
}

fn round_to_seconds(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use meshgate_connectors::DataSnapshot;

    use super::*;

    fn health(newest: Option<SystemTime>) -> ProductHealth {
        ProductHealth {
            fault: None,
            descriptor_error: None,
            descriptor_modified: None,
            checked_at: SystemTime::UNIX_EPOCH,
            tables: BTreeMap::from([(
                "t".to_string(),
                DataSnapshot {
                    last_modified: newest,
                    ..DataSnapshot::default()
                },
            )]),
        }
    }

    #[test]
    fn stale_and_unknown_ages_are_refused() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(100_000);
        let hour = Duration::from_secs(3600);
        let fresh = health(Some(now - Duration::from_secs(60)));
        let stale = health(Some(now - Duration::from_secs(7200)));
        assert!(require_fresh("d.p", &fresh, hour, now).is_ok());
        let error = require_fresh("d.p", &stale, hour, now).unwrap_err();
        assert!(error.to_string().contains("2h old"), "{error}");
        assert!(matches!(error, Error::FailedPrecondition(_)));
        assert!(require_fresh("d.p", &health(None), hour, now).is_err());
    }
}
