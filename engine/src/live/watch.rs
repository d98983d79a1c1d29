//! Following the mesh directory while the gateway runs.
//!
//! A file-system watcher (inotify and friends, through `notify`) reports changes under
//! the mesh directory and under local data directories outside it. Changes are
//! debounced, classified (a descriptor, or the data of some products) and applied by one
//! task that owns the [`MeshRegistry`]; when something changed, the service gets a new
//! session factory, while requests in flight finish on the one they started with.
//! Every product's data is also re-checked on a timer, and where the file system gives
//! no notifications, descriptors are re-read on a shorter one.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

use notify::event::{AccessKind, EventKind, ModifyKind};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use super::registry::{DataCheck, MeshRegistry};
use crate::config::ReloadConfig;
use crate::policy::PolicyEngine;
use crate::session::SessionPublisher;

/// A debounce window is extended by new events at most this many times, so a
/// continuous stream of writes still gets a refresh.
const MAX_DEBOUNCE_ROUNDS: u32 = 20;

/// Starts following the mesh of `registry`, publishing each new session factory through
/// `sessions`; the descriptor files sent to `rechecks` have their product's data
/// re-checked at once (a materialization committed a new version). Runs until the
/// runtime shuts down.
///
/// The watcher is registered before this returns, and the task begins by re-reading the
/// descriptors, so a change made after the registry's last refresh is never missed.
///
/// Each [`PolicyEngine`] sent to `policies` (the configuration's platform rules or
/// masking key changed) replaces the registry's, and a session factory under it is
/// published at once: statements planned from then on, prepared statements executed
/// from then on and tickets redeemed from then on see the new policy (their view
/// fingerprint changes with it).
pub fn follow(
    registry: MeshRegistry,
    sessions: SessionPublisher,
    config: &ReloadConfig,
    rechecks: Option<UnboundedReceiver<PathBuf>>,
    policies: Option<UnboundedReceiver<PolicyEngine>>,
) -> tokio::task::JoinHandle<()> {
    let mut follower = Follower::new(registry, sessions, config.clone());
    follower.rechecks = rechecks;
    follower.policies = policies;
    tokio::spawn(follower.run())
}

struct Follower {
    registry: MeshRegistry,
    sessions: SessionPublisher,
    config: ReloadConfig,
    root: PathBuf,
    events: UnboundedReceiver<PathBuf>,
    /// `None` when the file system gives no notifications: then descriptors are polled.
    watcher: Option<RecommendedWatcher>,
    watched_data: BTreeSet<PathBuf>,
    /// Descriptor files whose product's data is to be re-checked now.
    rechecks: Option<UnboundedReceiver<PathBuf>>,
    /// New policies to serve under.
    policies: Option<UnboundedReceiver<PolicyEngine>>,
    /// A new policy is set but not yet published (its refresh failed): the next
    /// successful refresh publishes, changed or not.
    policy_pending: bool,
}

impl Follower {
    fn new(registry: MeshRegistry, sessions: SessionPublisher, config: ReloadConfig) -> Self {
        let root = registry.root().to_path_buf();
        let (sender, events) = unbounded_channel();
        let watcher = match start_watcher(&root, sender) {
            Ok(watcher) => Some(watcher),
            Err(e) => {
                tracing::warn!(error = %e, interval = ?config.poll_interval,
                    "no file-system notifications for the mesh directory; polling descriptors");
                None
            }
        };
        let mut follower = Self {
            registry,
            sessions,
            config,
            root,
            events,
            watcher,
            watched_data: BTreeSet::new(),
            rechecks: None,
            policies: None,
            policy_pending: false,
        };
        follower.watch_data_directories();
        follower
    }

    async fn run(mut self) {
        self.refresh(&DataCheck::None).await;
        let start = tokio::time::Instant::now();
        let mut recheck = tokio::time::interval_at(
            start + self.config.recheck_interval,
            self.config.recheck_interval,
        );
        let mut poll =
            tokio::time::interval_at(start + self.config.poll_interval, self.config.poll_interval);
        loop {
            // Without a watcher the channel is closed (its sender went with the failed
            // watcher): listening to it would return at once, forever.
            let polling = self.watcher.is_none();
            let asked = self.rechecks.is_some();
            let governed = self.policies.is_some();
            let check = tokio::select! {
                policy = recv_policy(&mut self.policies), if governed => {
                    match policy {
                        Some(mut policy) => {
                            // Only the latest of a burst matters.
                            if let Some(queued) = self.policies.as_mut() {
                                while let Ok(newer) = queued.try_recv() {
                                    policy = newer;
                                }
                            }
                            self.apply_policy(policy).await
                        }
                        // The configuration is no longer followed.
                        None => self.policies = None,
                    }
                    continue;
                },
                Some(file) = recv_recheck(&mut self.rechecks), if asked => {
                    let mut files = BTreeSet::from([file]);
                    if let Some(rechecks) = self.rechecks.as_mut() {
                        while let Ok(more) = rechecks.try_recv() {
                            files.insert(more);
                        }
                    }
                    DataCheck::Products(files)
                },
                Some(path) = self.events.recv(), if !polling => match self.collect(path).await {
                    Some(check) => check,
                    None => continue,
                },
                _ = recheck.tick() => DataCheck::All,
                _ = poll.tick(), if polling => DataCheck::None,
            };
            self.refresh(&check).await;
        }
    }

    /// Gathers the events of one burst (until `debounce` passes without one) and says
    /// what to refresh; `None` when nothing relevant changed.
    async fn collect(&mut self, first: PathBuf) -> Option<DataCheck> {
        // A burst repeats paths (one per write): look each up once.
        let mut paths = BTreeSet::from([first]);
        for _ in 0..MAX_DEBOUNCE_ROUNDS {
            match tokio::time::timeout(self.config.debounce, self.events.recv()).await {
                Ok(Some(path)) => {
                    paths.insert(path);
                    while let Ok(more) = self.events.try_recv() {
                        paths.insert(more);
                    }
                }
                Ok(None) | Err(_) => break,
            }
        }
        let mut descriptors = false;
        let mut products = BTreeSet::new();
        for path in &paths {
            if is_descriptor_path(&self.root, path) {
                descriptors = true;
            } else {
                products.extend(self.registry.products_reading(path));
            }
        }
        if products.is_empty() {
            descriptors.then_some(DataCheck::None)
        } else {
            Some(DataCheck::Products(products))
        }
    }

    async fn refresh(&mut self, check: &DataCheck) {
        match self.registry.refresh(check).await {
            Ok(report) if report.changed() || self.policy_pending => {
                let mut changed = report.changed_products(check);
                if std::mem::take(&mut self.policy_pending) {
                    changed.extend(self.registry.product_names());
                }
                self.sessions
                    .publish(self.registry.sessions().with_changes(changed));
                self.watch_data_directories();
                tracing::info!(
                    added = report.added.len(),
                    updated = report.updated.len(),
                    removed = report.removed.len(),
                    rechecked = report.rechecked.len(),
                    "mesh refreshed"
                );
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "mesh directory cannot be read; serving as before")
            }
        }
    }

    /// Serves under `policy` from now on: re-reads the mesh under it and publishes the
    /// sessions even when no descriptor changed, every product counted as changed (so
    /// the result cache keeps none of their answers).
    async fn apply_policy(&mut self, policy: PolicyEngine) {
        self.registry.set_policy(policy);
        match self.registry.refresh(&DataCheck::None).await {
            Ok(_) => {
                let changed = self.registry.product_names();
                self.sessions
                    .publish(self.registry.sessions().with_changes(changed));
                self.watch_data_directories();
                tracing::info!("policy changed: sessions rebuilt under it");
            }
            Err(e) => {
                self.policy_pending = true;
                tracing::warn!(error = %e, "mesh directory cannot be read; the new policy applies at the next refresh")
            }
        }
    }

    /// Watches local data directories outside the mesh directory, as products need.
    fn watch_data_directories(&mut self) {
        let Some(watcher) = self.watcher.as_mut() else {
            return;
        };
        let wanted = self.registry.data_directories();
        for gone in self.watched_data.difference(&wanted) {
            let _ = watcher.unwatch(gone);
        }
        let mut watched = BTreeSet::new();
        for dir in wanted {
            if self.watched_data.contains(&dir)
                || watcher.watch(&dir, RecursiveMode::Recursive).is_ok()
            {
                watched.insert(dir);
            }
        }
        self.watched_data = watched;
    }
}

/// The next re-check request; `None` once every sender is gone (then no more are
/// listened to).
async fn recv_recheck(rechecks: &mut Option<UnboundedReceiver<PathBuf>>) -> Option<PathBuf> {
    let received = rechecks.as_mut()?.recv().await;
    if received.is_none() {
        *rechecks = None;
    }
    received
}

/// The next policy sent, or `None` once the sender is gone.
async fn recv_policy(
    policies: &mut Option<UnboundedReceiver<PolicyEngine>>,
) -> Option<PolicyEngine> {
    policies.as_mut()?.recv().await
}

/// Watches `root` recursively, sending the paths of relevant events to `sender`.
fn start_watcher(
    root: &Path,
    sender: UnboundedSender<PathBuf>,
) -> notify::Result<RecommendedWatcher> {
    let filter_root = root.to_path_buf();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else {
            return;
        };
        if matches!(
            event.kind,
            EventKind::Access(AccessKind::Open(_) | AccessKind::Read | AccessKind::Any)
        ) {
            return;
        }
        for path in event.paths {
            if is_relevant(&filter_root, &path, &event.kind) {
                let _ = sender.send(path);
            }
        }
    })?;
    watcher.watch(root, RecursiveMode::Recursive)?;
    Ok(watcher)
}

/// Whether a change at `path` can matter: anything inside a domain folder or a data
/// directory, and folders appearing or vanishing at the top of the mesh. Writes to files
/// at the top (such as the demo's audit log) and hidden entries do not.
fn is_relevant(root: &Path, path: &Path, kind: &EventKind) -> bool {
    let Ok(relative) = path.strip_prefix(root) else {
        // A data directory outside the mesh.
        return true;
    };
    let parts: Vec<_> = relative.components().collect();
    let hidden = parts.iter().any(|c| match c {
        Component::Normal(name) => name.to_str().is_some_and(|n| n.starts_with('.')),
        _ => false,
    });
    match parts.len() {
        0 => false,
        1 => {
            !hidden
                && !matches!(
                    kind,
                    EventKind::Modify(ModifyKind::Data(_)) | EventKind::Access(_)
                )
        }
        _ => !hidden,
    }
}

/// Whether `path` is (or may hold) a descriptor or what one reads: a domain folder,
/// `<root>/<domain>/<file>.yaml|yml`, or a transform file (`.sql`) anywhere in a domain
/// folder.
fn is_descriptor_path(root: &Path, path: &Path) -> bool {
    let Ok(relative) = path.strip_prefix(root) else {
        return false;
    };
    let extension = relative.extension().and_then(|e| e.to_str());
    match relative.components().count() {
        0 => false,
        1 => true,
        2 => matches!(extension, Some("yaml" | "yml" | "sql")),
        _ => extension == Some("sql"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_are_yaml_files_in_domain_folders() {
        let root = Path::new("/m");
        assert!(is_descriptor_path(
            root,
            Path::new("/m/clinical/encounters.yaml")
        ));
        assert!(is_descriptor_path(
            root,
            Path::new("/m/clinical/encounters.yml")
        ));
        assert!(is_descriptor_path(root, Path::new("/m/clinical")));
        assert!(!is_descriptor_path(
            root,
            Path::new("/m/clinical/data/x.yaml")
        ));
        assert!(!is_descriptor_path(root, Path::new("/m/clinical/notes.md")));
        // Transform files, beside descriptors or below them.
        assert!(is_descriptor_path(
            root,
            Path::new("/m/analytics/stays.sql")
        ));
        assert!(is_descriptor_path(
            root,
            Path::new("/m/analytics/sql/stays.sql")
        ));
        assert!(!is_descriptor_path(root, Path::new("/elsewhere/d/p.yaml")));
    }

    #[test]
    fn audit_writes_and_hidden_files_are_not_relevant() {
        let root = Path::new("/m");
        let write = EventKind::Modify(ModifyKind::Data(notify::event::DataChange::Any));
        let create = EventKind::Create(notify::event::CreateKind::Folder);
        assert!(!is_relevant(root, Path::new("/m/audit.jsonl"), &write));
        assert!(!is_relevant(
            root,
            Path::new("/m/.meshgate-demo-secret"),
            &create
        ));
        assert!(!is_relevant(
            root,
            Path::new("/m/clinical/.x.yaml.swp"),
            &write
        ));
        assert!(is_relevant(root, Path::new("/m/clinical"), &create));
        assert!(is_relevant(
            root,
            Path::new("/m/clinical/encounters.yaml"),
            &write
        ));
        assert!(is_relevant(
            root,
            Path::new("/m/data/clinical/a.parquet"),
            &write
        ));
        assert!(is_relevant(
            root,
            Path::new("/data/elsewhere/a.parquet"),
            &write
        ));
    }
}
