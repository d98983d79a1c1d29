//! [`PlanSnapshot`]: a digest of what a planned query would read and show, so that a
//! statement planned again (on another replica, or after its first execution) can be
//! checked to answer from the same data under the same policy as when it was first
//! planned.

use meshgate_connectors::{ScannedFile, ScannedFiles};

use crate::session::ViewFingerprint;

/// Length of a [`PlanSnapshot`] in bytes.
pub const PLAN_SNAPSHOT_LEN: usize = 32;

/// What a planned query reads and shows, summed up: the principal's view of the
/// products it reads (schemas as seen, rules, time travel; see
/// [`crate::session::ViewDigest::of_tables`]), and every data file its scans read
/// (path, size and modification time, however the files are split among partitions, and
/// also where the optimizer answers from file statistics without a scan), so a new
/// Parquet file, a rewritten one or another Delta version gives another digest. Tables held in
/// memory (`mesh.meta`) are not part of it: they answer as of the process that runs the
/// query.
///
/// Two plans with equal snapshots read the same bytes of the same files under the same
/// rules. It is a digest (SHA-256), not the list, so it reveals neither. A plan that
/// reads tables whose content is made by the process as it goes (the `mesh` catalog's:
/// quality history, freshness, status; `information_schema`, which shows settings) or
/// that explains itself also digests a number drawn for that plan alone: it runs once,
/// where it was planned, and never again elsewhere. Volatile functions (`now()`,
/// `random()`) are evaluated at each execution, as in any database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PlanSnapshot([u8; PLAN_SNAPSHOT_LEN]);

impl PlanSnapshot {
    /// The snapshot of a plan made under `view`, whose table scans recorded `scanned`
    /// (every file table is scanned through its contract, which records its files).
    pub(crate) fn of(
        view: ViewFingerprint,
        scanned: Option<&ScannedFiles>,
        single_use: bool,
    ) -> Self {
        let files: Vec<ScannedFile> = scanned.map(ScannedFiles::files).unwrap_or_default();
        let mut digest = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        let mut part = |bytes: &[u8]| {
            digest.update(&(bytes.len() as u64).to_le_bytes());
            digest.update(bytes);
        };
        part(view.as_bytes());
        if single_use {
            part(&plan_nonce());
        }
        part(&(files.len() as u64).to_le_bytes());
        for (path, size, modified, e_tag, version) in &files {
            part(path.as_bytes());
            part(&size.to_le_bytes());
            part(&modified.to_le_bytes());
            part(e_tag.as_deref().unwrap_or_default().as_bytes());
            part(version.as_deref().unwrap_or_default().as_bytes());
        }
        let mut bytes = [0u8; PLAN_SNAPSHOT_LEN];
        bytes.copy_from_slice(digest.finish().as_ref());
        Self(bytes)
    }

    /// The snapshot as bytes (to carry it in a handle).
    pub fn as_bytes(&self) -> &[u8; PLAN_SNAPSHOT_LEN] {
        &self.0
    }

    /// The snapshot of these bytes; `None` unless there are [`PLAN_SNAPSHOT_LEN`].
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Some(Self(bytes.try_into().ok()?))
    }
}

/// A number drawn for one plan.
fn plan_nonce() -> [u8; 16] {
    let mut nonce = [0u8; 16];
    // The system RNG does not fail on supported platforms; a counter still tells the
    // plans of this process apart if it ever did.
    if aws_lc_rs::rand::fill(&mut nonce).is_err() {
        static PLANS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = PLANS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        nonce[..8].copy_from_slice(&n.to_le_bytes());
        nonce[8..12].copy_from_slice(&std::process::id().to_le_bytes());
    }
    nonce
}
