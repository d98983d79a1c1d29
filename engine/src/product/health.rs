//! [`ProductHealth`]: whether a product serves as declared, and why not.

use std::collections::BTreeMap;
use std::time::SystemTime;

use meshgate_catalog::ColumnEffect;
use meshgate_connectors::{ContractViolation, DataSnapshot};

use super::broken::{Breakage, ProductUnavailable};

/// The state of a product, as `mesh.meta.products` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthState {
    /// Serving its current descriptor, its data matching the contract.
    Ok,
    /// Serving, but not as its descriptor on disk says: the last change of the
    /// descriptor is invalid and the last good version still serves.
    Degraded,
    /// Not serving: its data breaks the contract or its storage cannot be read.
    Broken,
}

impl HealthState {
    /// `ok`, `degraded` or `broken`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Degraded => "degraded",
            Self::Broken => "broken",
        }
    }
}

/// Why a product is broken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Contract violations, per table.
    Contract(Vec<(String, ContractViolation)>),
    /// The storage of a table could not be read (the detail is in the server log only).
    Storage {
        /// The table whose storage failed.
        table: String,
    },
    /// A derived table cannot be computed: an input is missing or not readable by the
    /// owning domain, or the transform does not plan or does not match the contract.
    /// The problems are for operators and the owner (log, `lint`); a reader learns only
    /// which table.
    Derived {
        /// The derived table.
        table: String,
        /// What is wrong, one entry per problem.
        problems: Vec<String>,
    },
}

/// What the gateway knows about one product's ability to serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductHealth {
    /// Why the product does not serve, if it does not.
    pub fault: Option<Fault>,
    /// Why the descriptor on disk is not the one serving (an invalid change), if so.
    pub descriptor_error: Option<String>,
    /// When the descriptor serving was last modified.
    pub descriptor_modified: Option<SystemTime>,
    /// When the data was last checked against the contract.
    pub checked_at: SystemTime,
    /// What each table's storage held at that check (tables that could be read).
    pub tables: BTreeMap<String, DataSnapshot>,
}

impl ProductHealth {
    /// The state this health amounts to: broken beats degraded beats ok.
    pub fn state(&self) -> HealthState {
        if self.fault.is_some() {
            HealthState::Broken
        } else if self.descriptor_error.is_some() {
            HealthState::Degraded
        } else {
            HealthState::Ok
        }
    }

    /// The reason shown to a principal for whom `effects` gives each table's column
    /// effects: violations on columns hidden from it are counted, not named.
    pub fn reason_for(&self, effects: &dyn Fn(&str, &str) -> ColumnEffect) -> Option<String> {
        let fault = self.fault.as_ref().map(|fault| match fault {
            Fault::Storage { table } => format!("table {table}: storage cannot be read"),
            Fault::Derived { table, .. } => {
                format!("table {table}: the transform cannot be computed from its inputs")
            }
            Fault::Contract(violations) => {
                let mut shown = Vec::new();
                let mut withheld = 0;
                for (table, v) in violations {
                    let visible = v
                        .column
                        .as_deref()
                        .is_none_or(|c| effects(table, c) != ColumnEffect::Hidden);
                    if visible {
                        shown.push(format!("table {table}: {v}"));
                    } else {
                        withheld += 1;
                    }
                }
                if withheld > 0 {
                    shown.push(format!("{withheld} more on columns not visible to you"));
                }
                format!("contract violation: {}", shown.join("; "))
            }
        });
        match (fault, &self.descriptor_error) {
            (Some(f), Some(d)) => Some(format!("{f}; descriptor change not applied: {d}")),
            (Some(f), None) => Some(f),
            (None, Some(d)) => Some(format!("descriptor change not applied: {d}")),
            (None, None) => None,
        }
    }

    /// The reason with every violation named, for operators (server log, start-up
    /// report, `lint`), never for a client.
    pub fn full_reason(&self) -> Option<String> {
        let reason = self.reason_for(&|_, _| ColumnEffect::Clear);
        match &self.fault {
            Some(Fault::Derived { problems, .. }) => {
                reason.map(|r| format!("{r}: {}", problems.join("; ")))
            }
            _ => reason,
        }
    }

    /// The error scans of this product fail with, for a principal seeing `effects`;
    /// `None` when the product serves.
    pub fn unavailable(
        &self,
        product: &str,
        effects: &dyn Fn(&str, &str) -> ColumnEffect,
    ) -> Option<ProductUnavailable> {
        let fault = self.fault.as_ref()?;
        let breakage = match fault {
            Fault::Contract(_) | Fault::Derived { .. } => Breakage::Contract,
            Fault::Storage { .. } => Breakage::Storage,
        };
        let reason = self.reason_for(effects).unwrap_or_default();
        Some(ProductUnavailable {
            breakage,
            message: format!("data product {product} is broken: {reason}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn violation(column: &str) -> ContractViolation {
        ContractViolation {
            column: Some(column.into()),
            file: Some("a.parquet".into()),
            problem: format!("column '{column}' is missing"),
        }
    }

    fn health(fault: Option<Fault>, descriptor_error: Option<&str>) -> ProductHealth {
        ProductHealth {
            fault,
            descriptor_error: descriptor_error.map(String::from),
            descriptor_modified: None,
            checked_at: SystemTime::UNIX_EPOCH,
            tables: BTreeMap::new(),
        }
    }

    #[test]
    fn state_orders_broken_over_degraded_over_ok() {
        let broken = Fault::Storage { table: "t".into() };
        assert_eq!(health(None, None).state(), HealthState::Ok);
        assert_eq!(health(None, Some("x")).state(), HealthState::Degraded);
        assert_eq!(health(Some(broken), Some("x")).state(), HealthState::Broken);
    }

    #[test]
    fn violations_on_hidden_columns_are_counted_not_named() {
        let h = health(
            Some(Fault::Contract(vec![
                ("t".into(), violation("shown")),
                ("t".into(), violation("secret")),
            ])),
            None,
        );
        let effects = |_: &str, c: &str| {
            if c == "secret" {
                ColumnEffect::Hidden
            } else {
                ColumnEffect::Clear
            }
        };
        let reason = h.reason_for(&effects).unwrap();
        assert!(reason.contains("'shown'"), "{reason}");
        assert!(!reason.contains("secret"), "{reason}");
        assert!(
            reason.contains("1 more on columns not visible to you"),
            "{reason}"
        );
        let error = h.unavailable("d.p", &effects).unwrap();
        assert_eq!(error.breakage, Breakage::Contract);
        assert!(error.message.starts_with("data product d.p is broken"));
    }
}
