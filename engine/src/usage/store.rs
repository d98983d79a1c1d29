//! [`UsageStore`]: who read what, per day, kept across restarts in `usage.redb` in the
//! state directory.
//!
//! Every query's execution adds to one tally per (day, table, principal): queries,
//! rows its scans read from storage, bytes its scans read from storage,
//! rows the query returned, the columns it read and when it last read. Tallies are
//! added to in memory and written to the database by [`UsageStore::flush`] (every few
//! seconds, and at shutdown), so accounting costs a query a map update, not a disk
//! write; a crash loses at most the last interval. Days older than the retention window
//! are deleted as they expire.
//!
//! The day's spending of each budget scope (a principal, a product, a principal on a
//! product) is also kept in memory, rebuilt from the database at start: budgets read
//! it on every query.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::history::HistoryError;

/// File name of the database inside the state directory.
pub(crate) const USAGE_DB_FILE: &str = "usage.redb";

/// Keys: (day since the Unix epoch, `domain.product.table`, issuer, subject).
const TALLIES: TableDefinition<(u32, &str, &str, &str), &[u8]> = TableDefinition::new("usage");
/// Keys: (day, scope kind, product, issuer, subject; empty where the scope has none);
/// values: (bytes scanned, rows returned).
const SPENT: TableDefinition<SpentKey, (u64, u64)> = TableDefinition::new("spent");

/// (day, scope kind, product, issuer, subject).
type SpentKey = (u32, &'static str, &'static str, &'static str, &'static str);

const MICROS_PER_DAY: u64 = 86_400 * 1_000_000;

/// Who read: a token's issuer and subject.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Reader {
    /// The token's issuer.
    pub(crate) issuer: String,
    /// The token's subject.
    pub(crate) subject: String,
}

/// What one execution of a query took.
#[derive(Debug, Clone)]
pub(crate) struct QueryUse {
    /// When it ended.
    pub(crate) at: SystemTime,
    /// Who ran it.
    pub(crate) reader: Reader,
    /// Rows it returned.
    pub(crate) rows_returned: u64,
    /// Whether it counts as a query (the first part of a result served in parts does;
    /// the others add their rows and bytes only).
    pub(crate) counts_as_query: bool,
    /// Each table it read.
    pub(crate) tables: Vec<TableUse>,
}

/// What one query took from one table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TableUse {
    /// `domain.product.table`.
    pub(crate) table: String,
    /// The columns read.
    pub(crate) columns: Vec<String>,
    /// Rows its scans read from storage (none counted where they are hidden).
    pub(crate) rows_read: u64,
    /// Bytes its scans read from storage.
    pub(crate) bytes_scanned: u64,
}

impl TableUse {
    /// `domain.product` of the table.
    pub(crate) fn product(&self) -> &str {
        product_of(&self.table)
    }
}

/// `domain.product` of `domain.product.table`.
pub(crate) fn product_of(table: &str) -> &str {
    table.rsplit_once('.').map_or(table, |(product, _)| product)
}

/// One (day, table, principal)'s tally.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Tally {
    /// Queries that read the table.
    pub(crate) queries: u64,
    /// Rows they read from it.
    pub(crate) rows_read: u64,
    /// Bytes their scans of it read from storage.
    pub(crate) bytes_scanned: u64,
    /// Rows those queries returned.
    pub(crate) rows_returned: u64,
    /// When it was last read, in microseconds since the Unix epoch.
    pub(crate) last_read: u64,
    /// Queries that read each column.
    pub(crate) columns: BTreeMap<String, u64>,
}

impl Tally {
    fn add(&mut self, other: &Tally) {
        self.queries += other.queries;
        self.rows_read += other.rows_read;
        self.bytes_scanned += other.bytes_scanned;
        self.rows_returned += other.rows_returned;
        self.last_read = self.last_read.max(other.last_read);
        for (column, queries) in &other.columns {
            *self.columns.entry(column.clone()).or_default() += queries;
        }
    }
}

/// One row of usage: a day, a table, a principal and its tally.
#[derive(Debug, Clone)]
pub(crate) struct UsageRow {
    /// Days since the Unix epoch (UTC).
    pub(crate) day: u32,
    /// `domain.product.table`.
    pub(crate) table: String,
    /// Who read it.
    pub(crate) reader: Reader,
    /// How much.
    pub(crate) tally: Tally,
}

/// What a budget counts: whose consumption, of what.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Scope {
    /// One principal, across the mesh.
    Principal(Reader),
    /// One product (`domain.product`), all principals together.
    Product(String),
    /// One principal on one product.
    ProductPrincipal(String, Reader),
}

impl Scope {
    /// The scope as a database key: (kind, product, issuer, subject).
    fn key(&self) -> (&'static str, &str, &str, &str) {
        match self {
            Self::Principal(r) => ("principal", "", &r.issuer, &r.subject),
            Self::Product(p) => ("product", p, "", ""),
            Self::ProductPrincipal(p, r) => ("product_principal", p, &r.issuer, &r.subject),
        }
    }

    /// The scope of a database key.
    fn from_key((kind, product, issuer, subject): (&str, &str, &str, &str)) -> Option<Self> {
        let reader = || Reader {
            issuer: issuer.to_string(),
            subject: subject.to_string(),
        };
        match kind {
            "principal" => Some(Self::Principal(reader())),
            "product" => Some(Self::Product(product.to_string())),
            "product_principal" => Some(Self::ProductPrincipal(product.to_string(), reader())),
            _ => None,
        }
    }
}

/// What a scope has spent today.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Spent {
    /// Bytes scanned from storage.
    pub(crate) bytes_scanned: u64,
    /// Rows returned.
    pub(crate) rows_returned: u64,
}

#[derive(Debug, Default)]
struct Today {
    day: u32,
    spent: HashMap<Scope, Spent>,
    /// Whether it changed since it was last written.
    dirty: bool,
}

impl Today {
    fn add(&mut self, scope: Scope, bytes: u64, rows: u64) {
        self.dirty = true;
        let spent = self.spent.entry(scope).or_default();
        spent.bytes_scanned += bytes;
        spent.rows_returned += rows;
    }
}

type Key = (u32, String, Reader);

/// Usage per day, table and principal, within a retention window.
#[derive(Debug)]
pub struct UsageStore {
    db: Database,
    retention_days: u32,
    /// Tallies not yet written to the database.
    pending: Mutex<HashMap<Key, Tally>>,
    today: Mutex<Today>,
    /// Held while flushing: one flush at a time, so an older snapshot of the day's
    /// spending never overwrites a newer one.
    flushing: Mutex<()>,
    /// The last day pruned.
    pruned: std::sync::atomic::AtomicU32,
}

impl UsageStore {
    /// A store kept in memory only (no state directory).
    pub fn in_memory(retention: Duration) -> Result<Self, HistoryError> {
        let db = redb::Builder::new()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(|e| HistoryError::Write(e.into()))?;
        Self::over(db, retention, Path::new("(memory)"))
    }

    /// Opens (or creates) `usage.redb` in `state_dir`. Fails when the directory or
    /// database cannot be created or opened (held by another process, not a redb file).
    pub fn open(state_dir: &Path, retention: Duration) -> Result<Self, HistoryError> {
        std::fs::create_dir_all(state_dir).map_err(|source| HistoryError::StateDir {
            path: state_dir.to_path_buf(),
            source,
        })?;
        let file = state_dir.join(USAGE_DB_FILE);
        // One writer (this process); tools may read it meanwhile (`lint --usage`).
        let db = redb::Builder::new()
            .set_concurrency_mode(redb::ConcurrencyMode::SingleWriter)
            .create(&file)
            .map_err(|e| HistoryError::Database {
                path: file.clone(),
                source: e.into(),
            })?;
        Self::over(db, retention, &file)
    }

    fn over(db: Database, retention: Duration, file: &Path) -> Result<Self, HistoryError> {
        let retention_days = u32::try_from(retention.as_secs().div_ceil(86_400))
            .unwrap_or(u32::MAX)
            .max(1);
        let store = Self {
            db,
            retention_days,
            pending: Mutex::default(),
            today: Mutex::default(),
            flushing: Mutex::default(),
            pruned: std::sync::atomic::AtomicU32::new(0),
        };
        let database = |source: redb::Error| HistoryError::Database {
            path: file.to_path_buf(),
            source,
        };
        let day = day_of(SystemTime::now());
        let txn = store.db.begin_write().map_err(|e| database(e.into()))?;
        store.prune(&txn, day).map_err(database)?;
        txn.commit().map_err(|e| database(e.into()))?;
        let spent = store.stored_spent(day).map_err(database)?;
        *lock(&store.today) = Today {
            day,
            spent,
            dirty: false,
        };
        Ok(store)
    }

    /// Adds what one execution took.
    pub(crate) fn record(&self, usage: &QueryUse) {
        // What read no product (the mesh's own tables) is nobody's usage.
        if usage.tables.is_empty() {
            return;
        }
        let day = day_of(usage.at);
        let at = micros(usage.at);
        let queries = u64::from(usage.counts_as_query);
        {
            let mut pending = lock(&self.pending);
            for table in &usage.tables {
                let key = (day, table.table.clone(), usage.reader.clone());
                let tally = pending.entry(key).or_default();
                tally.queries += queries;
                tally.rows_read += table.rows_read;
                tally.bytes_scanned += table.bytes_scanned;
                tally.rows_returned += usage.rows_returned;
                tally.last_read = tally.last_read.max(at);
                for column in &table.columns {
                    *tally.columns.entry(column.clone()).or_default() += queries;
                }
            }
        }
        let mut today = lock(&self.today);
        if today.day != day {
            if day < today.day {
                return;
            }
            *today = Today {
                day,
                spent: HashMap::new(),
                dirty: true,
            };
        }
        let bytes: u64 = usage.tables.iter().map(|t| t.bytes_scanned).sum();
        today.add(
            Scope::Principal(usage.reader.clone()),
            bytes,
            usage.rows_returned,
        );
        let mut products: BTreeMap<&str, u64> = BTreeMap::new();
        for table in &usage.tables {
            *products.entry(table.product()).or_default() += table.bytes_scanned;
        }
        for (product, bytes) in products {
            today.add(
                Scope::Product(product.to_string()),
                bytes,
                usage.rows_returned,
            );
            today.add(
                Scope::ProductPrincipal(product.to_string(), usage.reader.clone()),
                bytes,
                usage.rows_returned,
            );
        }
    }

    /// What `scope` has spent today (UTC).
    pub(crate) fn spent_today(&self, scope: &Scope) -> Spent {
        let today = lock(&self.today);
        if today.day != day_of(SystemTime::now()) {
            return Spent::default();
        }
        today.spent.get(scope).copied().unwrap_or_default()
    }

    /// Writes the pending tallies and the day's spending to the database, and deletes
    /// the days past retention when a day has passed. One flush runs at a time; what a
    /// failed one could not write is kept for the next.
    pub fn flush(&self) -> Result<(), HistoryError> {
        let _one = lock(&self.flushing);
        let pending = std::mem::take(&mut *lock(&self.pending));
        let (day, spent) = {
            let mut today = lock(&self.today);
            let spent: Option<Vec<(Scope, Spent)>> = std::mem::take(&mut today.dirty)
                .then(|| today.spent.iter().map(|(s, v)| (s.clone(), *v)).collect());
            (today.day, spent)
        };
        let now = day_of(SystemTime::now());
        let prune = self.pruned.load(std::sync::atomic::Ordering::Relaxed) != now;
        if pending.is_empty() && spent.is_none() && !prune {
            return Ok(());
        }
        let write = || -> Result<(), redb::Error> {
            let txn = self.db.begin_write()?;
            if let Some(spent) = &spent {
                let mut table = txn.open_table(SPENT)?;
                for (scope, spent) in spent {
                    let (kind, product, issuer, subject) = scope.key();
                    table.insert(
                        (day, kind, product, issuer, subject),
                        (spent.bytes_scanned, spent.rows_returned),
                    )?;
                }
            }
            {
                let mut table = txn.open_table(TALLIES)?;
                for ((day, name, reader), added) in &pending {
                    let key = (
                        *day,
                        name.as_str(),
                        reader.issuer.as_str(),
                        reader.subject.as_str(),
                    );
                    let mut tally = match table.get(key)? {
                        Some(value) => match serde_json::from_slice::<Tally>(value.value()) {
                            Ok(tally) => tally,
                            Err(e) => {
                                tracing::warn!(table = %name, error = %e,
                                    "a usage tally does not decode: it starts again");
                                Tally::default()
                            }
                        },
                        None => Tally::default(),
                    };
                    tally.add(added);
                    let value = serde_json::to_vec(&tally)
                        .map_err(|e| redb::Error::Io(std::io::Error::other(e)))?;
                    table.insert(key, value.as_slice())?;
                }
            }
            if prune {
                self.prune(&txn, now)?;
            }
            txn.commit()?;
            Ok(())
        };
        match write() {
            Ok(()) => {
                if prune {
                    self.pruned.store(now, std::sync::atomic::Ordering::Relaxed);
                }
                Ok(())
            }
            Err(e) => {
                // Nothing was committed: kept for the next flush rather than lost.
                let mut back = lock(&self.pending);
                for (key, tally) in pending {
                    back.entry(key).or_default().add(&tally);
                }
                if spent.is_some() {
                    lock(&self.today).dirty = true;
                }
                Err(HistoryError::Write(e))
            }
        }
    }

    /// The rows within the retention window for which `keep` (given the table and the
    /// reader) holds, pending tallies included, oldest day first.
    pub(crate) fn rows(
        &self,
        keep: impl Fn(&str, &Reader) -> bool,
    ) -> Result<Vec<UsageRow>, HistoryError> {
        let pending: Vec<(Key, Tally)> = lock(&self.pending)
            .iter()
            .filter(|((_, table, reader), _)| keep(table, reader))
            .map(|(key, tally)| (key.clone(), tally.clone()))
            .collect();
        let mut rows: BTreeMap<(u32, String, Reader), Tally> = self
            .stored(&keep)
            .map_err(HistoryError::Write)?
            .into_iter()
            .map(|row| ((row.day, row.table, row.reader), row.tally))
            .collect();
        for (key, tally) in pending {
            rows.entry(key).or_default().add(&tally);
        }
        let oldest = day_of(SystemTime::now()).saturating_sub(self.retention_days);
        Ok(rows
            .into_iter()
            .filter(|((day, ..), _)| *day > oldest)
            .map(|((day, table, reader), tally)| UsageRow {
                day,
                table,
                reader,
                tally,
            })
            .collect())
    }

    fn stored(&self, keep: &impl Fn(&str, &Reader) -> bool) -> Result<Vec<UsageRow>, redb::Error> {
        stored_rows(&self.db, keep)
    }

    /// What each scope spent on `day`, as last flushed.
    fn stored_spent(&self, day: u32) -> Result<HashMap<Scope, Spent>, redb::Error> {
        let read = self.db.begin_read()?;
        let table = match read.open_table(SPENT) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(HashMap::new()),
            Err(e) => return Err(e.into()),
        };
        let mut spent = HashMap::new();
        for entry in table.range((day, "", "", "", "")..)? {
            let (key, value) = entry?;
            let (at, kind, product, issuer, subject) = key.value();
            if at != day {
                break;
            }
            let scope = (kind, product, issuer, subject);
            let (bytes_scanned, rows_returned) = value.value();
            if let Some(scope) = Scope::from_key(scope) {
                spent.insert(
                    scope,
                    Spent {
                        bytes_scanned,
                        rows_returned,
                    },
                );
            }
        }
        Ok(spent)
    }

    /// Deletes, in `txn`, the days that fell out of the retention window before
    /// `today`.
    fn prune(&self, txn: &redb::WriteTransaction, today: u32) -> Result<(), redb::Error> {
        let oldest_kept = today.saturating_sub(self.retention_days) + 1;
        {
            let mut table = txn.open_table(TALLIES)?;
            table
                .retain_in::<(u32, &str, &str, &str), _>(..(oldest_kept, "", "", ""), |_, _| {
                    false
                })?;
            // Budgets read only today's spending.
            let mut spent = txn.open_table(SPENT)?;
            spent.retain_in::<SpentKey, _>(..(today, "", "", "", ""), |_, _| false)?;
        }
        Ok(())
    }
}

/// The rows stored in `db` for which `keep` (given the table and the reader) holds.
pub(super) fn stored_rows(
    db: &impl ReadableDatabase,
    keep: &impl Fn(&str, &Reader) -> bool,
) -> Result<Vec<UsageRow>, redb::Error> {
    let read = db.begin_read()?;
    let table = match read.open_table(TALLIES) {
        Ok(table) => table,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut rows = Vec::new();
    for entry in table.iter()? {
        let (key, value) = entry?;
        let (day, name, issuer, subject) = key.value();
        let reader = Reader {
            issuer: issuer.to_string(),
            subject: subject.to_string(),
        };
        if !keep(name, &reader) {
            continue;
        }
        match serde_json::from_slice::<Tally>(value.value()) {
            Ok(tally) => rows.push(UsageRow {
                day,
                table: name.to_string(),
                reader,
                tally,
            }),
            Err(e) => tracing::warn!(table = name, error = %e,
                "skipping a usage tally that does not decode"),
        }
    }
    Ok(rows)
}

/// Days since the Unix epoch (UTC) of `at`.
pub(crate) fn day_of(at: SystemTime) -> u32 {
    u32::try_from(micros(at) / MICROS_PER_DAY).unwrap_or(u32::MAX)
}

fn micros(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(subject: &str) -> Reader {
        Reader {
            issuer: "https://idp".into(),
            subject: subject.into(),
        }
    }

    fn read(subject: &str, tables: &[(&str, u64)], rows: u64) -> QueryUse {
        QueryUse {
            at: SystemTime::now(),
            reader: reader(subject),
            rows_returned: rows,
            counts_as_query: true,
            tables: tables
                .iter()
                .map(|(t, bytes)| TableUse {
                    table: (*t).into(),
                    columns: vec!["a".into()],
                    rows_read: 10,
                    bytes_scanned: *bytes,
                })
                .collect(),
        }
    }

    #[test]
    fn budgets_count_a_query_once_per_scope() {
        let store = UsageStore::in_memory(Duration::from_secs(86_400 * 30)).unwrap();
        store.record(&read(
            "ana",
            &[("d.p.t1", 100), ("d.p.t2", 50), ("e.q.t", 7)],
            3,
        ));
        let spent = |scope| store.spent_today(&scope);
        assert_eq!(
            spent(Scope::Principal(reader("ana"))),
            Spent {
                bytes_scanned: 157,
                rows_returned: 3
            }
        );
        assert_eq!(
            spent(Scope::Product("d.p".into())),
            Spent {
                bytes_scanned: 150,
                rows_returned: 3
            }
        );
        assert_eq!(
            spent(Scope::ProductPrincipal("e.q".into(), reader("ana"))).bytes_scanned,
            7
        );
        assert_eq!(spent(Scope::Principal(reader("ben"))), Spent::default());
    }

    #[test]
    fn tallies_survive_a_reopen_and_add_up() {
        let dir = tempfile::tempdir().unwrap();
        let retention = Duration::from_secs(86_400 * 30);
        {
            let store = UsageStore::open(dir.path(), retention).unwrap();
            store.record(&read("ana", &[("d.p.t1", 100)], 3));
            store.flush().unwrap();
            store.record(&read("ana", &[("d.p.t1", 1)], 1));
            store.flush().unwrap();
        }
        let store = UsageStore::open(dir.path(), retention).unwrap();
        let rows = store.rows(|_, _| true).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].tally.queries, 2);
        assert_eq!(rows[0].tally.bytes_scanned, 101);
        assert_eq!(rows[0].tally.columns.get("a"), Some(&2));
        assert_eq!(
            store.spent_today(&Scope::ProductPrincipal("d.p".into(), reader("ana"))),
            Spent {
                bytes_scanned: 101,
                rows_returned: 4
            }
        );
    }

    #[test]
    fn a_tool_reads_the_consumers_while_the_gateway_writes() {
        let dir = tempfile::tempdir().unwrap();
        let store = UsageStore::open(dir.path(), Duration::from_secs(86_400 * 30)).unwrap();
        store.record(&read("ana", &[("d.p.t1", 100), ("d.p.t2", 1)], 3));
        store.record(&read("ben", &[("d.p.t1", 5)], 1));
        store.record(&read("ana", &[("d.p.t1", 100)], 3));
        store.flush().unwrap();
        let consumers = super::super::table_consumers(dir.path()).unwrap();
        let seen: Vec<(&str, &str, u64)> = consumers
            .iter()
            .map(|c| (c.table.as_str(), c.subject.as_str(), c.queries))
            .collect();
        assert_eq!(
            seen,
            [
                ("d.p.t1", "ana", 2),
                ("d.p.t1", "ben", 1),
                ("d.p.t2", "ana", 1)
            ]
        );
        assert!(consumers[0].columns.contains("a"));
        // The gateway keeps writing beside the reader.
        store.record(&read("cy", &[("d.p.t1", 5)], 1));
        store.flush().unwrap();
        assert_eq!(super::super::table_consumers(dir.path()).unwrap().len(), 4);
        // A second writer on the same directory is refused.
        assert!(UsageStore::open(dir.path(), Duration::from_secs(86_400)).is_err());
        // No usage recorded there: a clear error.
        let empty = tempfile::tempdir().unwrap();
        assert!(super::super::table_consumers(empty.path()).is_err());
    }
}
