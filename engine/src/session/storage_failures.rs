//! Which table's storage failed during one query: noted where the failure happens (the
//! object store call), before any layer above turns it into text.
//!
//! A domain's store names the table of every failed request in a
//! [`TableStorageError`]. Most readers keep that error on their chain of sources; some
//! do not (Parquet's metadata fetch re-raises it as a message). So stores are handed out
//! observed ([`recording_registry`]): they note the first table that failed in the
//! query's [`StorageFailures`], and the query's result stream attaches it to a storage
//! failure that lost it ([`StorageFailures::attach`]). A query's task context names its
//! sink; stores taken while the query is planned (delta-rs keeps those it takes then)
//! find it in the planning task ([`StorageFailures::scope`]).

use std::sync::{Arc, OnceLock};

use datafusion::error::DataFusionError;
use datafusion::execution::object_store::ObjectStoreRegistry;
use meshgate_connectors::{ObservedRegistry, StoreObserver, TableStorageError};

use crate::error::Error;

tokio::task_local! {
    /// The sink of the query being planned on this task.
    static PLANNING: Arc<StorageFailures>;
}

/// The first table whose storage failed during one query.
#[derive(Debug, Default)]
pub(crate) struct StorageFailures {
    first: OnceLock<String>,
}

impl StorageFailures {
    /// Runs `planning` with this query's sink, so that stores taken meanwhile record here.
    pub(crate) async fn scope<F: std::future::Future>(self: &Arc<Self>, planning: F) -> F::Output {
        PLANNING.scope(Arc::clone(self), planning).await
    }

    /// Notes the table `err` names, if it names one and none was noted before.
    fn note(&self, err: &object_store::Error) {
        // A missing object is often expected (a reader probing for a file); a
        // failure it matters for names its table on the chain itself.
        if matches!(err, object_store::Error::NotFound { .. }) {
            return;
        }
        let mut next: Option<&(dyn std::error::Error + 'static)> = Some(err);
        while let Some(e) = next {
            if let Some(failure) = e.downcast_ref::<TableStorageError>() {
                let _ = self.first.set(failure.table.clone());
                return;
            }
            next = e.source();
        }
    }

    /// The table noted, if any.
    pub(crate) fn first(&self) -> Option<&str> {
        self.first.get().map(String::as_str)
    }

    /// `err` with the failed table on its chain, when it is a storage failure whose
    /// chain lost it: wrapped in a [`TableStorageError`] naming the table noted (its
    /// message unchanged for the log). Any other error is returned as it is.
    pub(crate) fn attach(&self, err: DataFusionError) -> DataFusionError {
        let Some(table) = self.first.get() else {
            return err;
        };
        if !Error::is_storage_failure(&err) || names_a_table(&err) {
            return err;
        }
        DataFusionError::External(Box::new(TableStorageError {
            table: table.clone(),
            source: Box::new(err),
        }))
    }
}

fn names_a_table(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(e) = next {
        if e.is::<TableStorageError>() {
            return true;
        }
        next = e.source();
    }
    false
}

impl StoreObserver for StorageFailures {
    fn failed(&self, err: &object_store::Error) {
        self.note(err);
    }
}

/// `inner`, its stores' failures noted in `failures`.
pub(crate) fn recording_registry(
    inner: Arc<dyn ObjectStoreRegistry>,
    failures: Arc<StorageFailures>,
) -> ObservedRegistry {
    ObservedRegistry::new(inner, failures)
}

/// `inner`, its stores' failures noted in the sink of the query being planned on the
/// task that takes them (none: stores as they are).
pub(crate) fn planning_registry(inner: Arc<dyn ObjectStoreRegistry>) -> ObservedRegistry {
    ObservedRegistry::picking(inner, || {
        PLANNING
            .try_with(|failures| Arc::clone(failures) as Arc<dyn StoreObserver>)
            .ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed_request(table: &str) -> object_store::Error {
        object_store::Error::Generic {
            store: "test",
            source: Box::new(TableStorageError {
                table: table.into(),
                source: "refused".into(),
            }),
        }
    }

    #[test]
    fn only_storage_failures_get_the_noted_table() {
        let failures = StorageFailures::default();
        failures.note(&object_store::Error::NotFound {
            path: "x".into(),
            source: Box::new(TableStorageError {
                table: "d.p.probed".into(),
                source: "absent".into(),
            }),
        });
        assert_eq!(failures.first(), None, "a missing object is not a failure");
        failures.note(&failed_request("d.p.t"));
        failures.note(&failed_request("d.p.later"));
        assert_eq!(failures.first(), Some("d.p.t"), "the first failure is kept");

        let lost = DataFusionError::ParquetError(Box::new(parquet::errors::ParquetError::General(
            "failed to fetch metadata".into(),
        )));
        let named = Error::from(failures.attach(lost));
        assert!(
            matches!(&named, Error::Storage { table: Some(t), .. } if t == "d.p.t"),
            "{named:?}"
        );
        let division =
            DataFusionError::ArrowError(Box::new(arrow::error::ArrowError::DivideByZero), None);
        let kept = Error::from(failures.attach(division));
        assert!(matches!(kept, Error::InvalidSql(_)), "{kept:?}");
    }
}
