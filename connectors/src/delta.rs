//! Delta Lake tables, read with delta-rs through the domain's object store.

use std::sync::{Arc, Once};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use datafusion::datasource::TableProvider;
use deltalake::logstore::{
    LogStore, LogStoreFactory, ObjectStoreRef, StorageConfig, default_logstore, logstore_factories,
};
use deltalake::{DeltaResult, DeltaTableBuilder};
use futures::StreamExt;
use meshgate_catalog::{AsOf, Table};
use url::Url;

use crate::error::{ConnectorError, Result};
use crate::inspect::DataSnapshot;
use crate::storage::ResolvedLocation;

/// Opens the Delta table at `location` (reading its log) and returns delta-rs's provider
/// for its latest version, or the version `as_of` asks for, with the version read and
/// what it holds. Delta's own file skipping (partition values and file statistics from
/// the log) and Parquet pushdown apply to every scan.
pub(crate) async fn delta_table(
    qualified_name: &str,
    table_def: &Table,
    location: &ResolvedLocation,
    as_of: Option<AsOf>,
) -> Result<(Arc<dyn TableProvider>, DataSnapshot)> {
    let delta_err = |source| ConnectorError::Delta {
        table: qualified_name.to_string(),
        source,
    };
    register_log_store();
    // A table the gateway materializes has no log until its first run commits: asked,
    // delta-rs would log an error of its own at every check until then.
    let materialized = table_def
        .derived
        .as_ref()
        .is_some_and(|d| d.mode == meshgate_catalog::DerivedMode::Materialized);
    if materialized && as_of.is_none() && holds_no_log(location).await {
        return Err(ConnectorError::NoDeltaLog {
            table: qualified_name.to_string(),
        });
    }
    let builder = || -> Result<DeltaTableBuilder> {
        Ok(DeltaTableBuilder::from_url(location.delta_url.clone())
            .map_err(delta_err)?
            .with_storage_backend(
                Arc::clone(&location.declared_store),
                location.delta_url.clone(),
            ))
    };
    if let Some(AsOf::Version(asked)) = as_of {
        refuse_future_version(qualified_name, builder()?, asked).await?;
    }
    let asked = match as_of {
        None => builder()?,
        Some(AsOf::Version(v)) => builder()?.with_version(v),
        Some(instant @ AsOf::Timestamp(_)) => builder()?
            .with_datestring(instant.to_string())
            .map_err(delta_err)?,
    };
    let table = match (asked.load().await, as_of) {
        (Ok(table), _) => table,
        (Err(source), None) => {
            return Err(if holds_no_log(location).await {
                ConnectorError::NoDeltaLog {
                    table: qualified_name.to_string(),
                }
            } else {
                delta_err(source)
            });
        }
        // Tell a version the log does not hold from a table that cannot be read at all,
        // whatever error delta-rs chose for it; the client learns only which.
        (Err(source), Some(as_of)) => {
            return Err(match builder()?.load().await {
                Ok(_) => ConnectorError::NoSuchVersion {
                    table: qualified_name.to_string(),
                    as_of: as_of.to_string(),
                },
                Err(_) => delta_err(source),
            });
        }
    };
    let state = table.snapshot().map_err(delta_err)?;
    let version = state.version();
    // delta-rs answers an instant before the first commit with version 0: that version
    // did not exist then.
    if let Some(AsOf::Timestamp(asked)) = as_of
        && state
            .version_timestamp(version)
            .map(millis_to_time)
            .is_some_and(|committed| committed > asked)
    {
        return Err(ConnectorError::NoSuchVersion {
            table: qualified_name.to_string(),
            as_of: format!("{} (its first version is newer)", AsOf::Timestamp(asked)),
        });
    }
    if let (Some(as_of), Some(max_age)) = (as_of, table_def.time_travel.and_then(|t| t.max_age)) {
        let committed = state.version_timestamp(version).map(millis_to_time);
        let oldest = SystemTime::now().checked_sub(max_age);
        if committed.zip(oldest).is_none_or(|(c, oldest)| c < oldest) {
            return Err(ConnectorError::NoSuchVersion {
                table: qualified_name.to_string(),
                as_of: format!(
                    "{as_of} (versions older than {} are not readable)",
                    humantime::format_duration(max_age)
                ),
            });
        }
    }
    let files = state.log_data();
    let snapshot = DataSnapshot {
        files: files.num_files() as u64,
        bytes: files.iter().map(|f| f.size().max(0) as u64).sum(),
        last_modified: state.version_timestamp(version).map(millis_to_time),
        version: i64::try_from(version).ok(),
    };
    let provider = table
        .table_provider()
        .await
        .map_err(|source| ConnectorError::DataFusion {
            table: qualified_name.to_string(),
            source,
        })?;
    Ok((provider, snapshot))
}

/// Whether the table's location lists no object under `_delta_log/` (a listing that
/// fails says nothing: the failure is the caller's to report).
pub(crate) async fn holds_no_log(location: &ResolvedLocation) -> bool {
    let log = object_store::path::Path::from_url_path(location.table_url.path())
        .map(|dir| dir.join("_delta_log"));
    let Ok(log) = log else {
        return false;
    };
    location.store.list(Some(&log)).next().await.is_none()
}

/// Refuses a version past the latest one the log holds, from one listing of the log
/// (no commit, checkpoint or file list read), before delta-rs is asked for it: asked
/// for a version the log does not have, it looks for every commit up to it, which for
/// `v9223372036854775807` never ends.
async fn refuse_future_version(
    qualified_name: &str,
    latest: DeltaTableBuilder,
    asked: u64,
) -> Result<()> {
    let delta_err = |source| ConnectorError::Delta {
        table: qualified_name.to_string(),
        source,
    };
    let newest = latest
        .build()
        .map_err(delta_err)?
        .get_latest_version()
        .await
        .map_err(delta_err)?;
    if asked <= newest {
        return Ok(());
    }
    Err(ConnectorError::NoSuchVersion {
        table: qualified_name.to_string(),
        as_of: format!("{} (the latest version is v{newest})", AsOf::Version(asked)),
    })
}

fn millis_to_time(millis: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(millis.max(0) as u64)
}

/// Lets delta-rs read tables under the domain-scoped URLs of
/// [`crate::DELTA_STORE_SCHEME`]: delta-rs finds a log store by URL scheme. The gateway
/// only reads, so the default log store (whose commit protocol needs no locking)
/// serves, whatever storage is underneath.
pub(crate) fn register_log_store() {
    static REGISTERED: Once = Once::new();
    REGISTERED.call_once(|| {
        if let Ok(scheme) = Url::parse(&format!("{}://", crate::DELTA_STORE_SCHEME)) {
            logstore_factories()
                .entry(scheme)
                .or_insert_with(|| Arc::new(ReadOnlyLogStores));
        }
    });
}

/// Log stores of tables the gateway reads and never writes.
#[derive(Debug)]
struct ReadOnlyLogStores;

impl LogStoreFactory for ReadOnlyLogStores {
    fn with_options(
        &self,
        prefixed_store: ObjectStoreRef,
        root_store: ObjectStoreRef,
        location: &Url,
        options: &StorageConfig,
    ) -> DeltaResult<Arc<dyn LogStore>> {
        Ok(default_logstore(
            prefixed_store,
            root_store,
            location,
            options,
        ))
    }
}
