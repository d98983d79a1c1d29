//! Spilling to disk: where queries' operators write what does not fit in their memory,
//! and how much they may write.
//!
//! Sorts, aggregations, sort-merge joins and repartitions spill when their memory is
//! refused (see `crate::session::memory`). Their files go to the gateway's own
//! directory, a [`SpillArea`]: `gateway-*` under `engine.spill_dir` (the OS temporary
//! directory's `meshgate-spill` by default), readable by the gateway's user alone
//! (the directory is `0700`, every file `0600`). Spilled data is what the query's
//! operators hold: rows already filtered and masked by the policies, never more.
//!
//! A file is removed when its query no longer needs it: when the query ends, fails or
//! is cancelled at the latest, because its operators drop it. The directory is removed
//! when the gateway stops, and one left by a gateway that crashed is removed when the
//! next gateway starts over the same `engine.spill_dir` (a lock file held for the
//! gateway's life tells a live gateway's directory from a dead one's). The spill
//! directory must belong to the gateway's user and be writable by it alone, or the
//! gateway does not spill (and says so).
//!
//! What is on disk is bounded twice, on every write: by `engine.query_spill_limit` for
//! one query ([`QuerySpill`]) and by `engine.spill_limit` for the whole gateway. A write
//! past either fails its query with `RESOURCE_EXHAUSTED` naming the limit
//! ([`SpillLimitExceeded`]), and the gateway keeps serving.

mod file;

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub(crate) use file::QuerySpill;

use crate::error::SpillLimitExceeded;

/// Name of the lock file inside a gateway's spill directory.
const LOCK_FILE: &str = "lock";

/// Prefix of every gateway's spill directory under `engine.spill_dir`.
const GATEWAY_DIR_PREFIX: &str = "gateway-";

/// A directory without a lock file is taken for one being created (by a gateway that
/// started a moment ago) for this long; older, for a crashed gateway's.
const UNLOCKED_GRACE: Duration = Duration::from_secs(60);

/// Why the spill directory cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("cannot use the spill directory {dir} (engine.spill_dir): {source}")]
pub struct SpillAreaError {
    dir: PathBuf,
    #[source]
    source: std::io::Error,
}

/// Bytes and files on disk, now or in total.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct SpillUse {
    /// Bytes written.
    pub bytes: u64,
    /// Files created.
    pub files: u64,
}

/// The gateway's spill directory and what its queries hold in it (see the module's doc).
#[derive(Debug)]
pub struct SpillArea {
    /// `gateway-*` under the configured root: removed with everything in it on drop.
    dir: tempfile::TempDir,
    /// Held locked for the gateway's life.
    _lock: File,
    /// `engine.spill_limit`.
    limit: u64,
    /// What every query holds on disk now.
    in_use_bytes: AtomicU64,
    in_use_files: AtomicU64,
    /// What every query has written since the gateway started.
    written_bytes: AtomicU64,
    written_files: AtomicU64,
}

impl SpillArea {
    /// Creates this gateway's spill directory under `root` (created if absent), holding
    /// at most `limit` bytes, after removing the directories of gateways that stopped
    /// without removing theirs.
    pub fn open(root: &Path, limit: u64) -> Result<Arc<Self>, SpillAreaError> {
        let failed = |source| SpillAreaError {
            dir: root.to_path_buf(),
            source,
        };
        create_private_dir(root).map_err(failed)?;
        let dir = tempfile::Builder::new()
            .prefix(GATEWAY_DIR_PREFIX)
            .permissions(owner_only(0o700))
            .tempdir_in(root)
            .map_err(failed)?;
        let owner = std::fs::metadata(dir.path()).map_err(failed)?.uid();
        ensure_private_root(root, owner).map_err(failed)?;
        let lock = File::create(dir.path().join(LOCK_FILE)).map_err(failed)?;
        // Blocks only while another gateway's sweep looks at it (a moment).
        lock.lock().map_err(failed)?;
        remove_left_overs(root, owner);
        Ok(Arc::new(Self {
            dir,
            _lock: lock,
            limit,
            in_use_bytes: AtomicU64::new(0),
            in_use_files: AtomicU64::new(0),
            written_bytes: AtomicU64::new(0),
            written_files: AtomicU64::new(0),
        }))
    }

    /// The default root: `meshgate-spill` in the OS temporary directory.
    pub fn default_root() -> PathBuf {
        std::env::temp_dir().join("meshgate-spill")
    }

    /// This gateway's directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// What the gateway's queries hold on disk now.
    pub fn in_use(&self) -> SpillUse {
        SpillUse {
            bytes: self.in_use_bytes.load(Ordering::Relaxed),
            files: self.in_use_files.load(Ordering::Relaxed),
        }
    }

    /// What the gateway's queries have written since it started.
    pub fn written(&self) -> SpillUse {
        SpillUse {
            bytes: self.written_bytes.load(Ordering::Relaxed),
            files: self.written_files.load(Ordering::Relaxed),
        }
    }

    /// Takes `bytes` more of the gateway's budget, or says it is spent.
    fn charge(&self, bytes: u64) -> Result<(), SpillLimitExceeded> {
        let before = self.in_use_bytes.fetch_add(bytes, Ordering::Relaxed);
        if before.saturating_add(bytes) > self.limit {
            self.in_use_bytes.fetch_sub(bytes, Ordering::Relaxed);
            return Err(SpillLimitExceeded(format!(
                "the gateway's disk limit for spilling, {} (engine.spill_limit), is taken by \
                 the queries running now; retry later",
                human_bytes(self.limit)
            )));
        }
        self.written_bytes.fetch_add(bytes, Ordering::Relaxed);
        Ok(())
    }

    fn release(&self, bytes: u64) {
        self.in_use_bytes.fetch_sub(bytes, Ordering::Relaxed);
    }

    fn file_created(&self) {
        self.in_use_files.fetch_add(1, Ordering::Relaxed);
        self.written_files.fetch_add(1, Ordering::Relaxed);
    }

    fn file_removed(&self) {
        self.in_use_files.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Permissions of `mode` (the owner's bits only).
pub(crate) fn owner_only(mode: u32) -> std::fs::Permissions {
    use std::os::unix::fs::PermissionsExt;
    std::fs::Permissions::from_mode(mode & 0o700)
}

/// Creates `dir` (and its parents) if absent, the last readable by its owner alone.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Refuses a spill root that is not the gateway user's own (`owner`), or that others
/// may write to: they could replace a gateway's directory, or its files, under it.
fn ensure_private_root(root: &Path, owner: u32) -> std::io::Result<()> {
    let meta = std::fs::metadata(root)?;
    if meta.uid() != owner || meta.mode() & 0o022 != 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            "it must belong to the gateway's user and be writable by that user alone",
        ));
    }
    Ok(())
}

/// Removes the spill directories under `root` (directories of `owner`, not links) that
/// no running gateway holds: older than [`UNLOCKED_GRACE`], with a lock file that is
/// not locked (their gateway crashed) or none.
fn remove_left_overs(root: &Path, owner: u32) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let is_gateway_dir = entry
            .file_name()
            .to_str()
            .is_some_and(|name| name.starts_with(GATEWAY_DIR_PREFIX))
            && entry.file_type().is_ok_and(|kind| kind.is_dir())
            && entry.metadata().is_ok_and(|meta| meta.uid() == owner);
        if !is_gateway_dir || held_by_a_live_gateway(&path) {
            continue;
        }
        match std::fs::remove_dir_all(&path) {
            Ok(()) => tracing::info!(
                dir = %path.display(),
                "removed the spill files of a gateway that stopped without removing them"
            ),
            Err(e) => tracing::warn!(
                dir = %path.display(),
                error = %e,
                "cannot remove the spill files of a gateway that stopped"
            ),
        }
    }
}

/// Whether a gateway may hold `dir`: it was made within [`UNLOCKED_GRACE`] (its
/// gateway may be starting), or its lock file is locked (or cannot be told).
fn held_by_a_live_gateway(dir: &Path) -> bool {
    let young = std::fs::metadata(dir)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|modified| modified.elapsed().ok())
        .is_none_or(|age| age < UNLOCKED_GRACE);
    if young {
        return true;
    }
    let lock = dir.join(LOCK_FILE);
    match std::fs::symlink_metadata(&lock) {
        Ok(meta) if meta.file_type().is_file() => match File::open(&lock) {
            Ok(lock) => match lock.try_lock() {
                Ok(()) => false,
                Err(std::fs::TryLockError::WouldBlock) => true,
                // Cannot tell: leave it.
                Err(std::fs::TryLockError::Error(_)) => true,
            },
            Err(_) => true,
        },
        // No lock file, and old: its gateway stopped before making one.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        _ => true,
    }
}

/// `bytes` in MiB or GiB, for messages.
pub(crate) fn human_bytes(bytes: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    let mib = bytes as f64 / MIB;
    if mib >= 1024.0 {
        format!("{:.1} GiB", mib / 1024.0)
    } else {
        format!("{mib:.1} MiB")
    }
}

#[cfg(test)]
mod tests;
