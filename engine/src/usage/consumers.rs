//! Who consumes each table, read from a gateway's state directory by a tool (`meshgate
//! lint --against ... --usage DIR`), while that gateway may be running and writing it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::history::HistoryError;

use super::store::{USAGE_DB_FILE, stored_rows};

/// One principal's reads of one table, over every day the state directory keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableConsumer {
    /// `domain.product.table`.
    pub table: String,
    /// The issuer of the principal's tokens.
    pub issuer: String,
    /// The principal's subject.
    pub subject: String,
    /// Queries that read the table.
    pub queries: u64,
    /// When it last read the table.
    pub last_read: SystemTime,
    /// The columns its queries read.
    pub columns: BTreeSet<String>,
}

/// Every consumer of every table recorded in `state_dir`'s usage database, by table,
/// then issuer and subject. Opens the database read-only, beside the gateway that
/// writes it; fails when there is none, or it cannot be read.
pub fn table_consumers(state_dir: &Path) -> Result<Vec<TableConsumer>, HistoryError> {
    let file = state_dir.join(USAGE_DB_FILE);
    let database = |source: redb::Error| HistoryError::Database {
        path: file.clone(),
        source,
    };
    let db = redb::Builder::new()
        .set_concurrency_mode(redb::ConcurrencyMode::SingleWriter)
        .open_read_only(&file)
        .map_err(|e| database(e.into()))?;
    let rows = stored_rows(&db, &|_, _| true).map_err(database)?;
    let mut consumers: BTreeMap<(String, String, String), TableConsumer> = BTreeMap::new();
    for row in rows {
        let key = (
            row.table.clone(),
            row.reader.issuer.clone(),
            row.reader.subject.clone(),
        );
        let last_read = UNIX_EPOCH + Duration::from_micros(row.tally.last_read);
        let consumer = consumers.entry(key).or_insert_with(|| TableConsumer {
            table: row.table,
            issuer: row.reader.issuer,
            subject: row.reader.subject,
            queries: 0,
            last_read,
            columns: BTreeSet::new(),
        });
        consumer.queries += row.tally.queries;
        consumer.last_read = consumer.last_read.max(last_read);
        consumer.columns.extend(row.tally.columns.into_keys());
    }
    Ok(consumers.into_values().collect())
}
