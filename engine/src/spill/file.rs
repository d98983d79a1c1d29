//! One query's spill files: created in the gateway's [`SpillArea`], every byte
//! written charged to the query's budget and the gateway's, removed when dropped.

use std::io::{BufWriter, Write};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SpillFile, SpillWriter, TempFileFactory};
use futures::{Stream, StreamExt};

use super::{SpillArea, SpillUse, human_bytes, owner_only};
use crate::error::{SpillFailed, SpillLimitExceeded};

/// Bytes a spill file's reader takes from disk at a time.
const READ_CHUNK: usize = 128 * 1024;

/// Bytes a spill file's writer gathers before writing (Arrow's IPC writer writes many
/// small pieces).
const WRITE_BUFFER: usize = 64 * 1024;

/// A failure of the gateway's own disk while spilling (full, failing): the query's,
/// never blamed on a product's storage.
fn spill_failed(e: std::io::Error) -> DataFusionError {
    DataFusionError::IoError(std::io::Error::other(SpillFailed(e.to_string())))
}

fn query_limit_exceeded(limit: u64) -> SpillLimitExceeded {
    SpillLimitExceeded(format!(
        "the query needs more than its disk limit of {} for spilling \
         (engine.query_spill_limit)",
        human_bytes(limit)
    ))
}

/// One query's share of the spill area: the factory of its spill files (see
/// [`TempFileFactory`]), and what they hold and have held.
#[derive(Debug, Clone)]
pub(crate) struct QuerySpill {
    account: Arc<Account>,
}

/// What one query's spill files hold, against its limit.
#[derive(Debug)]
struct Account {
    area: Arc<SpillArea>,
    limit: u64,
    in_use: AtomicU64,
    written_bytes: AtomicU64,
    written_files: AtomicU64,
}

impl Account {
    fn charge(&self, bytes: u64) -> std::io::Result<()> {
        let before = self.in_use.fetch_add(bytes, Ordering::Relaxed);
        let refused = if before.saturating_add(bytes) > self.limit {
            Some(query_limit_exceeded(self.limit))
        } else {
            self.area.charge(bytes).err()
        };
        if let Some(refused) = refused {
            self.in_use.fetch_sub(bytes, Ordering::Relaxed);
            return Err(std::io::Error::other(refused));
        }
        self.written_bytes.fetch_add(bytes, Ordering::Relaxed);
        Ok(())
    }

    fn release(&self, bytes: u64) {
        self.in_use.fetch_sub(bytes, Ordering::Relaxed);
        self.area.release(bytes);
    }
}

impl QuerySpill {
    /// A query's share of `area`, holding at most `limit` bytes on disk at once.
    pub(crate) fn new(area: Arc<SpillArea>, limit: u64) -> Self {
        Self {
            account: Arc::new(Account {
                area,
                limit,
                in_use: AtomicU64::new(0),
                written_bytes: AtomicU64::new(0),
                written_files: AtomicU64::new(0),
            }),
        }
    }

    /// What the query has written to disk so far.
    pub(crate) fn written(&self) -> SpillUse {
        SpillUse {
            bytes: self.account.written_bytes.load(Ordering::Relaxed),
            files: self.account.written_files.load(Ordering::Relaxed),
        }
    }
}

impl TempFileFactory for QuerySpill {
    fn create_temp_file(&self, description: &str) -> Result<Arc<dyn SpillFile>> {
        let file = tempfile::Builder::new()
            .prefix("spill-")
            .permissions(owner_only(0o600))
            .tempfile_in(self.account.area.dir())
            .map_err(|e| {
                tracing::warn!(error = %e, "cannot create a spill file while {description}");
                spill_failed(e)
            })?;
        self.account.written_files.fetch_add(1, Ordering::Relaxed);
        self.account.area.file_created();
        Ok(Arc::new(QuerySpillFile {
            file,
            size: Arc::new(AtomicU64::new(0)),
            account: Arc::clone(&self.account),
        }))
    }
}

/// A spill file of one query: its bytes count against the query's budget and the
/// gateway's until it is dropped, which removes it.
struct QuerySpillFile {
    file: tempfile::NamedTempFile,
    /// Bytes written to it.
    size: Arc<AtomicU64>,
    account: Arc<Account>,
}

impl Drop for QuerySpillFile {
    fn drop(&mut self) {
        self.account.release(self.size.load(Ordering::Relaxed));
        self.account.area.file_removed();
    }
}

impl SpillFile for QuerySpillFile {
    fn path(&self) -> Option<&Path> {
        Some(self.file.path())
    }

    fn size(&self) -> Option<u64> {
        Some(self.size.load(Ordering::Relaxed))
    }

    fn read_stream(&self) -> Result<Pin<Box<dyn Stream<Item = Result<Bytes>> + Send>>> {
        let path = self.file.path().to_path_buf();
        let opened = futures::stream::once(async move { tokio::fs::File::open(path).await });
        Ok(Box::pin(opened.flat_map(|opened| {
            match opened {
                Ok(file) => tokio_util::io::ReaderStream::with_capacity(file, READ_CHUNK)
                    .map(|chunk| chunk.map_err(DataFusionError::IoError))
                    .boxed(),
                Err(e) => {
                    futures::stream::once(async move { Err(DataFusionError::IoError(e)) }).boxed()
                }
            }
        })))
    }

    fn open_writer(&self) -> Result<Box<dyn SpillWriter>> {
        // Appends, as DataFusion's own spill files do.
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(self.file.path())
            .map_err(spill_failed)?;
        Ok(Box::new(QuerySpillWriter {
            file: BufWriter::with_capacity(WRITE_BUFFER, file),
            size: Arc::clone(&self.size),
            account: Arc::clone(&self.account),
        }))
    }
}

/// Writes a [`QuerySpillFile`], charging each byte before it is written.
struct QuerySpillWriter {
    file: BufWriter<std::fs::File>,
    size: Arc<AtomicU64>,
    account: Arc<Account>,
}

impl Write for QuerySpillWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let len = buf.len() as u64;
        self.account.charge(len)?;
        if let Err(e) = self.file.write_all(buf) {
            self.account.release(len);
            return Err(std::io::Error::other(SpillFailed(e.to_string())));
        }
        self.size.fetch_add(len, Ordering::Relaxed);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file
            .flush()
            .map_err(|e| std::io::Error::other(SpillFailed(e.to_string())))
    }
}

impl SpillWriter for QuerySpillWriter {
    fn finish(&mut self) -> Result<()> {
        self.file.flush().map_err(spill_failed)
    }
}
