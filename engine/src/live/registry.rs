//! [`MeshRegistry`]: the products a mesh directory describes, kept in step with it.
//!
//! The registry remembers, per descriptor file, the digest of what it last read and the
//! product it serves from it. A refresh re-reads every descriptor (they are small) and
//! re-loads only those whose bytes changed, plus the products whose data is to be
//! re-checked. An invalid change keeps the last good version serving (its health says
//! `degraded` and why); a product whose data breaks its contract serves as `broken`; a
//! removed descriptor removes its product. Each refresh yields a new, immutable
//! [`SessionFactory`]: requests in flight keep the one they started with.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use meshgate_catalog::{descriptor_files, parse_descriptor, product_from_text, transform_texts};

use meshgate_connectors::DomainStorage;

use super::loader::ProductLoader;
use crate::error::{Error, Result};
use crate::policy::PolicyEngine;
use crate::product::{CompiledProduct, HealthState, ProductHealth};
use crate::quality::QualityStore;
use crate::runs::RunStore;
use crate::session::SessionFactory;

/// Which products a refresh re-checks against their data, beyond changed descriptors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataCheck {
    /// Only products whose descriptor changed.
    None,
    /// Every product.
    All,
    /// The products read from these descriptor files.
    Products(BTreeSet<PathBuf>),
}

impl DataCheck {
    fn includes(&self, descriptor: &Path) -> bool {
        match self {
            Self::None => false,
            Self::All => true,
            Self::Products(set) => set.contains(descriptor),
        }
    }
}

/// What one refresh changed, for the start-up report and the log.
#[derive(Debug, Default)]
pub struct RefreshReport {
    /// Products that appeared (`domain.product`).
    pub added: Vec<String>,
    /// Products whose descriptor changed and now serve the new version.
    pub updated: Vec<String>,
    /// Products whose descriptor was removed.
    pub removed: Vec<String>,
    /// Descriptors that are invalid: the file (relative to the mesh) and the reason.
    /// For a product that served before, its last good version keeps serving.
    pub invalid: Vec<(String, String)>,
    /// Products whose state (ok / degraded / broken) changed.
    pub state_changes: Vec<(String, HealthState)>,
    /// Products whose data was re-checked (their health now says what it holds).
    pub rechecked: Vec<String>,
}

impl RefreshReport {
    /// The products whose descriptor changed (added, updated, removed), and those whose
    /// data was re-checked when `check` named them (a change notice for their data);
    /// the products that a timer re-checked are not among them.
    pub fn changed_products(&self, check: &DataCheck) -> BTreeSet<String> {
        let mut products: BTreeSet<String> = self
            .added
            .iter()
            .chain(&self.updated)
            .chain(&self.removed)
            .chain(self.state_changes.iter().map(|(name, _)| name))
            .cloned()
            .collect();
        if matches!(check, DataCheck::Products(_)) {
            products.extend(self.rechecked.iter().cloned());
        }
        products
    }

    /// Whether the set of products or their content changed, so sessions must be rebuilt.
    pub fn changed(&self) -> bool {
        !(self.added.is_empty()
            && self.updated.is_empty()
            && self.removed.is_empty()
            && self.state_changes.is_empty()
            && self.rechecked.is_empty())
    }
}

/// One descriptor file and what serves from it.
#[derive(Debug, Clone)]
struct Entry {
    /// SHA-256 of the bytes last read.
    digest: Vec<u8>,
    /// The product serving from this file (its last good version), if any.
    served: Option<CompiledProduct>,
}

/// The products of one mesh directory, kept in step with it by [`MeshRegistry::refresh`].
#[derive(Debug)]
pub struct MeshRegistry {
    root: PathBuf,
    loader: ProductLoader,
    policy: PolicyEngine,
    entries: BTreeMap<PathBuf, Entry>,
    /// What serves: the entries' products with their derived tables resolved against
    /// each other (after every refresh).
    resolved: Vec<CompiledProduct>,
    quality: Option<Arc<QualityStore>>,
    runs: Option<Arc<RunStore>>,
    usage: Option<Arc<crate::usage::Usage>>,
}

impl MeshRegistry {
    /// A registry over the mesh directory `root` whose products `loader` opens, empty
    /// until the first refresh.
    pub fn new(root: &Path, loader: ProductLoader, policy: PolicyEngine) -> Self {
        Self {
            root: root.to_path_buf(),
            loader,
            policy,
            entries: BTreeMap::new(),
            resolved: Vec::new(),
            quality: None,
            runs: None,
            usage: None,
        }
    }

    /// Serves the quality measurements of `store` in the sessions this registry builds.
    pub fn set_quality(&mut self, store: Arc<QualityStore>) {
        self.quality = Some(store);
    }

    /// Serves the usage and budgets of `usage` in the sessions this registry builds
    /// (`mesh.meta.usage`, `column_usage`, `budgets`).
    pub fn set_usage(&mut self, usage: Arc<crate::usage::Usage>) {
        self.usage = Some(usage);
    }

    /// Serves the runs of `store` in the sessions this registry builds (`mesh.meta.runs`)
    /// and dates materialized tables by the inputs of the run that wrote them.
    pub fn set_runs(&mut self, store: Arc<RunStore>) {
        self.runs = Some(store);
    }

    /// Applies `policy` (platform rules, masking key) to the sessions built from now
    /// on; the next refresh resolves derived products' rights under it.
    pub fn set_policy(&mut self, policy: PolicyEngine) {
        self.policy = policy;
    }

    /// The qualified names of the products that serve now.
    pub fn product_names(&self) -> std::collections::BTreeSet<String> {
        self.resolved
            .iter()
            .map(|c| c.product.qualified_name())
            .collect()
    }

    /// The storage every product is read through.
    pub fn storage(&self) -> Arc<DomainStorage> {
        Arc::clone(self.loader.storage())
    }

    /// The mesh directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Re-reads the mesh directory and brings the products in step with it, re-checking
    /// the data of the products `data` names.
    ///
    /// Fails only when the mesh directory itself cannot be read; then nothing changes.
    pub async fn refresh(&mut self, data: &DataCheck) -> Result<RefreshReport> {
        let files =
            descriptor_files(&self.root).map_err(|e| Error::InvalidArgument(e.to_string()))?;
        let mut report = RefreshReport::default();
        let mut previous = std::mem::take(&mut self.entries);
        let mut seen: BTreeMap<String, PathBuf> = BTreeMap::new();
        for file in files {
            let old = previous.remove(&file);
            let entry = self.refresh_one(&file, old, data, &mut report).await;
            if let Some(compiled) = &entry.served {
                let name = compiled.product.qualified_name();
                if let Some(first) = seen.get(&name) {
                    report.invalid.push((
                        self.relative(&file),
                        format!(
                            "product {name} is already published by {}",
                            self.relative(first)
                        ),
                    ));
                    // Retried at every refresh, in case the first one goes away.
                    self.entries.insert(
                        file,
                        Entry {
                            digest: Vec::new(),
                            served: None,
                        },
                    );
                    continue;
                }
                seen.insert(name, file.clone());
            }
            self.entries.insert(file, entry);
        }
        for (_, gone) in previous {
            if let Some(compiled) = gone.served {
                report.removed.push(compiled.product.qualified_name());
            }
        }
        self.resolve(&mut report).await;
        log_report(&report);
        Ok(report)
    }

    /// Resolves the derived tables of what serves now against each other, noting in
    /// `report` the products whose derived tables broke or recovered.
    async fn resolve(&mut self, report: &mut RefreshReport) {
        let served: Vec<CompiledProduct> = self
            .entries
            .values()
            .filter_map(|e| e.served.clone())
            .collect();
        let resolved = self
            .loader
            .resolve(served, &self.policy, self.runs.as_deref())
            .await;
        let before: BTreeMap<String, &CompiledProduct> = self
            .resolved
            .iter()
            .map(|c| (c.product.qualified_name(), c))
            .collect();
        for after in &resolved {
            let derived = after.product.tables.iter().any(|t| t.derived.is_some());
            if !derived {
                continue;
            }
            let name = after.product.qualified_name();
            let changed = before
                .get(&name)
                .is_none_or(|b| b.health.fault != after.health.fault);
            if changed && let Some(reason) = after.health.full_reason() {
                tracing::warn!(product = %name, %reason, "derived product cannot serve");
            }
            if let Some(before) = before.get(&name) {
                note_state_change(before, after, report);
            }
        }
        self.resolved = resolved;
    }

    /// Brings one descriptor file's entry in step with the file.
    async fn refresh_one(
        &self,
        file: &Path,
        old: Option<Entry>,
        data: &DataCheck,
        report: &mut RefreshReport,
    ) -> Entry {
        let (text, modified) = match read_descriptor(file) {
            Ok(read) => read,
            Err(e) => {
                let reason = format!("cannot read: {e}");
                report.invalid.push((self.relative(file), reason.clone()));
                return keep_degraded(old, Vec::new(), reason, report);
            }
        };
        let digest = descriptor_digest(file, &text);
        let old = match old {
            Some(same) if same.digest == digest => {
                return if data.includes(file) {
                    self.recheck(same, report).await
                } else {
                    same
                };
            }
            other => other,
        };
        let product = match product_from_text(&self.root, file, &text) {
            Ok(product) => product,
            Err(e) => {
                let reason = self.strip_root(&e.to_string());
                report.invalid.push((self.relative(file), reason.clone()));
                return keep_degraded(old, digest, reason, report);
            }
        };
        let name = product.qualified_name();
        match self.loader.load(Arc::new(product), modified).await {
            Ok(compiled) => {
                match old.as_ref().and_then(|o| o.served.as_ref()) {
                    Some(before) => {
                        report.updated.push(name);
                        note_state_change(before, &compiled, report);
                    }
                    None => report.added.push(name),
                }
                Entry {
                    digest,
                    served: Some(compiled),
                }
            }
            Err(error) => {
                let reason = error.to_string();
                report.invalid.push((self.relative(file), reason.clone()));
                keep_degraded(old, digest, reason, report)
            }
        }
    }

    /// Re-opens the product serving from an unchanged descriptor, to check its data.
    async fn recheck(&self, entry: Entry, report: &mut RefreshReport) -> Entry {
        let Some(current) = &entry.served else {
            return entry;
        };
        let health = &current.health;
        match self
            .loader
            .load(Arc::clone(&current.product), health.descriptor_modified)
            .await
        {
            Ok(reloaded) => {
                let reloaded = reloaded.with_descriptor_error(health.descriptor_error.clone());
                note_state_change(current, &reloaded, report);
                report.rechecked.push(reloaded.product.qualified_name());
                Entry {
                    digest: entry.digest,
                    served: Some(reloaded),
                }
            }
            // The policy compiled before against the same contract; keep serving it.
            Err(_) => entry,
        }
    }

    /// The session factory serving the products as they are now.
    pub fn sessions(&self) -> SessionFactory {
        SessionFactory::new(
            self.loader.template().clone(),
            self.resolved.clone(),
            self.policy.clone(),
        )
        .with_quality(self.quality.clone())
        .with_runs(self.runs.clone())
        .with_usage(self.usage.clone())
    }

    /// The health of every product serving, by `domain.product`.
    pub fn health(&self) -> BTreeMap<String, Arc<ProductHealth>> {
        self.resolved
            .iter()
            .map(|c| (c.product.qualified_name(), Arc::clone(&c.health)))
            .collect()
    }

    /// The descriptor files of the products that read local data under `path` (a file
    /// or directory that changed), so that a change to data re-checks just them.
    pub fn products_reading(&self, path: &Path) -> BTreeSet<PathBuf> {
        self.entries
            .iter()
            .filter(|(_, e)| {
                e.served.as_ref().is_some_and(|c| {
                    c.product.tables.iter().any(|t| {
                        t.location.as_ref().is_some_and(|location| {
                            location.scheme() == "file"
                                && location.to_file_path().is_ok_and(|dir| {
                                    path.starts_with(&dir) || dir.starts_with(path)
                                })
                        })
                    })
                })
            })
            .map(|(file, _)| file.clone())
            .collect()
    }

    /// Local directories holding the data of products, outside the mesh directory.
    pub fn data_directories(&self) -> BTreeSet<PathBuf> {
        self.entries
            .values()
            .filter_map(|e| e.served.as_ref())
            .flat_map(|c| c.product.tables.iter())
            .filter_map(|t| t.location.as_ref())
            .filter(|location| location.scheme() == "file")
            .filter_map(|location| location.to_file_path().ok())
            .filter(|dir| !dir.starts_with(&self.root))
            .collect()
    }

    fn relative(&self, file: &Path) -> String {
        file.strip_prefix(&self.root)
            .unwrap_or(file)
            .display()
            .to_string()
    }

    /// Removes the mesh directory from a message: consumers see mesh-relative names.
    fn strip_root(&self, message: &str) -> String {
        let root = format!("{}/", self.root.display());
        message.replace(&root, "")
    }
}

/// Reads a descriptor and its modification time.
fn read_descriptor(file: &Path) -> std::io::Result<(String, Option<SystemTime>)> {
    let text = std::fs::read_to_string(file)?;
    let modified = std::fs::metadata(file).and_then(|m| m.modified()).ok();
    Ok((text, modified))
}

/// A digest of what the descriptor `file` (holding `text`) publishes: its text and the
/// transform files it names (a changed transform file changes the product as much as a
/// changed descriptor; one that cannot be used is left out, and fails validation).
fn descriptor_digest(file: &Path, text: &str) -> Vec<u8> {
    let mut digest = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    digest.update(text.as_bytes());
    if let (Ok(descriptor), Some(folder)) = (parse_descriptor(file, text), file.parent()) {
        for transform in transform_texts(&descriptor, folder) {
            let part = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, transform.as_bytes());
            digest.update(b"\0transform_file\0");
            digest.update(part.as_ref());
        }
    }
    digest.finish().as_ref().to_vec()
}

/// The entry of a descriptor whose new version is invalid: its last good version keeps
/// serving, marked degraded with `reason`; without one, nothing serves from it.
fn keep_degraded(
    old: Option<Entry>,
    digest: Vec<u8>,
    reason: String,
    report: &mut RefreshReport,
) -> Entry {
    let served = old.and_then(|o| o.served).map(|before| {
        let after = before.clone().with_descriptor_error(Some(reason));
        note_state_change(&before, &after, report);
        after
    });
    Entry { digest, served }
}

fn note_state_change(
    before: &CompiledProduct,
    after: &CompiledProduct,
    report: &mut RefreshReport,
) {
    let (was, now) = (before.health.state(), after.health.state());
    if was != now || before.health.fault != after.health.fault {
        report
            .state_changes
            .push((after.product.qualified_name(), now));
    }
}

fn log_report(report: &RefreshReport) {
    for name in &report.added {
        tracing::info!(product = %name, "product added");
    }
    for name in &report.updated {
        tracing::info!(product = %name, "product updated");
    }
    for name in &report.removed {
        tracing::info!(product = %name, "product removed");
    }
    for (file, reason) in &report.invalid {
        tracing::warn!(%file, %reason, "descriptor not applied");
    }
    for (name, state) in &report.state_changes {
        match state {
            HealthState::Ok => tracing::info!(product = %name, "product recovered"),
            HealthState::Degraded => tracing::warn!(product = %name, "product degraded"),
            HealthState::Broken => tracing::warn!(product = %name, "product broken"),
        }
    }
}
