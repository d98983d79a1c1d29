//! Live reload of the rules the gateway takes from its configuration file: platform
//! policies (`platform_policies`), trusted token issuers (`auth`) and the masking key
//! (`masking`).
//!
//! A file-system watcher reports changes in the directories of the configuration file
//! and of the key files it names (the masking key file, issuers' secret, PEM and JWKS
//! files, and the targets of those that are symlinks); after a quiet `reload.debounce`,
//! and only when their content changed, the configuration is read again. When every part of it is valid (it parses,
//! every issuer's key loads, the masking key reads), the new issuers are trusted from
//! the next call on and the new policy goes to the mesh follower, which publishes
//! sessions under it at once: statements planned, prepared statements executed and
//! tickets redeemed from then on see it (a ticket or prepared statement planned under
//! the old policy is re-planned or refused, as for any change of the caller's view).
//! A change that is not valid is logged and nothing changes. Every other section takes
//! effect at the next start.
//!
//! Without a configured masking key the gateway draws one at start; it is kept across
//! reloads (a new random key would change every hash).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use meshgate_engine::PolicyEngine;
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use crate::auth::{Authenticator, KeySource};
use crate::config::GatewayConfig;
use crate::run::masking_key;

/// What a configuration reload replaces.
pub(crate) struct ConfigReload {
    /// The configuration file.
    pub(crate) path: PathBuf,
    /// The verifier every door shares.
    pub(crate) authenticator: Arc<Authenticator>,
    /// Where new policies go (the mesh follower).
    pub(crate) policies: UnboundedSender<PolicyEngine>,
    /// The masking key in use (kept when the configuration names none).
    pub(crate) masking_key: Vec<u8>,
    /// Quiet time after a change before reading the files.
    pub(crate) debounce: Duration,
}

/// Starts following `reload.path` and the key files it names; runs until the runtime
/// shuts down. Fails only when no watcher can be made (then nothing is followed).
pub(crate) fn follow_config(
    reload: ConfigReload,
    config: &GatewayConfig,
) -> notify::Result<tokio::task::JoinHandle<()>> {
    let (sender, events) = unbounded_channel();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Reading a file is no change (and the reload itself reads them).
        if let Ok(event) = event
            && !matches!(event.kind, EventKind::Access(_))
        {
            let _ = sender.send(());
        }
    })?;
    let mut follower = Follower {
        reload,
        watcher,
        watched_dirs: BTreeSet::new(),
        files: BTreeSet::new(),
        applied: None,
        events,
    };
    follower.watch(config);
    follower.applied = follower.digest();
    Ok(tokio::spawn(follower.run()))
}

/// A debounce window is extended by new events at most this many times, so that a
/// directory written to all the time (an audit log beside a key file) still reloads.
const MAX_DEBOUNCE_ROUNDS: u32 = 20;

struct Follower {
    reload: ConfigReload,
    watcher: RecommendedWatcher,
    /// Directories watched (non-recursively): editors replace files by renaming.
    watched_dirs: BTreeSet<PathBuf>,
    /// The files whose content decides a reload.
    files: BTreeSet<PathBuf>,
    /// The digest of their content when it was last read (applied or refused).
    applied: Option<[u8; 32]>,
    /// Something changed in a watched directory.
    events: UnboundedReceiver<()>,
}

impl Follower {
    /// Watches the configuration file and the key files `config` names.
    fn watch(&mut self, config: &GatewayConfig) {
        let mut files = BTreeSet::from([absolute(&self.reload.path)]);
        files.extend(config.masking.key_file.iter().map(|p| absolute(p)));
        for issuer in &config.auth.issuers {
            match &issuer.key {
                KeySource::SecretFile(path)
                | KeySource::PublicKeyPem(path)
                | KeySource::JwksFile(path) => {
                    files.insert(absolute(path));
                }
                KeySource::SecretEnv(_) | KeySource::JwksUrl(_) => {}
            }
        }
        // A file that is a symlink (a Kubernetes ConfigMap or Secret: `config.yaml` ->
        // `..data/config.yaml`, swapped by renaming `..data`) changes where its target
        // lives: both directories are watched.
        let dirs: BTreeSet<PathBuf> = files
            .iter()
            .flat_map(|f| [Some(f.clone()), std::fs::canonicalize(f).ok()])
            .flatten()
            .filter_map(|f| f.parent().map(Path::to_path_buf))
            .collect();
        for gone in self.watched_dirs.difference(&dirs) {
            let _ = self.watcher.unwatch(gone);
        }
        let mut watched = BTreeSet::new();
        for dir in dirs {
            if self.watched_dirs.contains(&dir) {
                watched.insert(dir);
                continue;
            }
            match self.watcher.watch(&dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    watched.insert(dir);
                }
                Err(e) => tracing::warn!(dir = %dir.display(), error = %e,
                    "cannot watch a configuration directory; its changes apply at restart"),
            }
        }
        self.watched_dirs = watched;
        self.files = files;
    }

    /// One digest of the content of every file that decides a reload (a missing file
    /// counts as empty).
    fn digest(&self) -> Option<[u8; 32]> {
        let mut digest = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        for file in &self.files {
            let content = std::fs::read(file).unwrap_or_default();
            digest.update(file.as_os_str().as_encoded_bytes());
            digest.update(&(content.len() as u64).to_le_bytes());
            digest.update(&content);
        }
        digest.finish().as_ref().try_into().ok()
    }

    async fn run(mut self) {
        while self.events.recv().await.is_some() {
            // Quiet time: an editor writes, renames and touches in a burst.
            for _ in 0..MAX_DEBOUNCE_ROUNDS {
                match tokio::time::timeout(self.reload.debounce, self.events.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            // Events name directories' other files too; only content decides.
            let now = self.digest();
            if now == self.applied {
                continue;
            }
            self.applied = now;
            self.apply().await;
            // The configuration may name other key files now.
            self.applied = self.digest();
        }
    }

    /// Reads the configuration again and applies its rules, all or nothing.
    async fn apply(&mut self) {
        let path = self.reload.path.clone();
        let config = match GatewayConfig::from_file(&path) {
            Ok(config) => config,
            Err(e) => {
                tracing::warn!(error = %e, "configuration change not applied");
                return;
            }
        };
        // Follow the key files it names now, even if one cannot be read yet.
        self.watch(&config);
        let configured_key = config.masking.key_file.is_some() || config.masking.key_env.is_some();
        let key = if configured_key {
            match masking_key(&config.masking) {
                Ok(key) => key,
                Err(e) => {
                    tracing::warn!(error = %e, "configuration change not applied");
                    return;
                }
            }
        } else {
            self.reload.masking_key.clone()
        };
        let issuers = match Authenticator::new(&config.auth).await {
            Ok(issuers) => issuers,
            Err(e) => {
                tracing::warn!(error = %e, "configuration change not applied");
                return;
            }
        };
        self.reload.authenticator.replace_issuers(issuers);
        let policy = PolicyEngine::new(config.platform_policies.clone(), &key);
        self.reload.masking_key = key;
        if self.reload.policies.send(policy).is_err() {
            tracing::warn!("the mesh is no longer followed; the new policy applies at restart");
        }
        tracing::info!(
            platform_policies = config.platform_policies.len(),
            issuers = config.auth.issuers.len(),
            "configuration reloaded: platform policies, issuers and masking key"
        );
    }
}

/// `path` made absolute against the working directory, as the watcher reports paths.
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}
