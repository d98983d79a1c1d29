//! A major version kept serving beside its successor for a deprecation window.
//!
//! When a product's contract breaks, its domain publishes the new major version under
//! the product's name and may keep the previous major serving as a product of its own,
//! by convention named with its major (`clinical.encounters_v1`), declaring which
//! product succeeds it and the last day it serves:
//!
//! ```yaml
//! deprecation: { successor: clinical.encounters, until: 2027-03-31 }
//! ```
//!
//! Until the end of that day (UTC) it serves as any product, and every answer reading it
//! says so (a response header on every door); from then on it is no longer served.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::error::Problem;

/// A descriptor's `deprecation` block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeprecationDescriptor {
    /// The product that replaces this one, `domain.product`.
    pub successor: String,
    /// The last day (UTC, `YYYY-MM-DD`) the product serves.
    pub until: String,
}

/// A validated deprecation window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deprecation {
    /// The product that replaces it, `domain.product`.
    pub successor: String,
    /// The last day it serves, `YYYY-MM-DD` (UTC).
    pub until: String,
    /// When it stops serving: the end of `until`.
    pub ends_at: SystemTime,
}

impl Deprecation {
    /// Whether the window has ended at `now`.
    pub fn has_ended(&self, now: SystemTime) -> bool {
        now >= self.ends_at
    }
}

/// The window `descriptor` declares for the product `own` (`domain.product`), or the
/// problems it has.
pub(crate) fn validate_deprecation(
    descriptor: &DeprecationDescriptor,
    own: &str,
    problems: &mut Vec<Problem>,
) -> Option<Deprecation> {
    let mut valid = true;
    let parts: Vec<&str> = descriptor.successor.split('.').collect();
    if parts.len() != 2 || parts.iter().any(|p| p.is_empty()) {
        valid = false;
        problems.push(Problem::new(
            "deprecation.successor",
            format!(
                "'{}' is not a product name (domain.product)",
                descriptor.successor
            ),
        ));
    } else if descriptor.successor == own {
        valid = false;
        problems.push(Problem::new(
            "deprecation.successor",
            "names the product itself; name the product that replaces it",
        ));
    }
    let starts = day_start(&descriptor.until);
    if starts.is_none() {
        valid = false;
        problems.push(Problem::new(
            "deprecation.until",
            format!(
                "'{}' is not a date (YYYY-MM-DD): the last day the product serves",
                descriptor.until
            ),
        ));
    }
    let ends_at = starts? + Duration::from_secs(86_400);
    valid.then(|| Deprecation {
        successor: descriptor.successor.clone(),
        until: descriptor.until.clone(),
        ends_at,
    })
}

/// The start (00:00 UTC) of `date`, written `YYYY-MM-DD`.
fn day_start(date: &str) -> Option<SystemTime> {
    let well_formed = date.len() == 10
        && date.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    if !well_formed {
        return None;
    }
    humantime::parse_rfc3339(&format!("{date}T00:00:00Z")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validated(successor: &str, until: &str) -> Result<Deprecation, Vec<Problem>> {
        let mut problems = Vec::new();
        let descriptor = DeprecationDescriptor {
            successor: successor.into(),
            until: until.into(),
        };
        validate_deprecation(&descriptor, "clinical.encounters_v1", &mut problems).ok_or(problems)
    }

    #[test]
    fn a_window_ends_when_its_last_day_does() {
        let window = validated("clinical.encounters", "2027-03-31").unwrap();
        let last_day = humantime::parse_rfc3339("2027-03-31T23:59:59Z").unwrap();
        let next_day = humantime::parse_rfc3339("2027-04-01T00:00:00Z").unwrap();
        assert!(!window.has_ended(last_day));
        assert!(window.has_ended(next_day));
    }

    #[test]
    fn a_bad_window_names_its_field() {
        for (successor, until, field) in [
            ("clinical.encounters", "2027-02-30", "deprecation.until"),
            ("clinical.encounters", "31/03/2027", "deprecation.until"),
            ("clinical.encounters", "2027-3-31", "deprecation.until"),
            ("encounters", "2027-03-31", "deprecation.successor"),
            (
                "clinical.encounters_v1",
                "2027-03-31",
                "deprecation.successor",
            ),
        ] {
            let problems = validated(successor, until).unwrap_err();
            assert_eq!(problems.len(), 1, "{successor} {until}: {problems:?}");
            assert_eq!(problems[0].field, field, "{successor} {until}");
        }
    }
}
