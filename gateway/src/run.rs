//! Starting a gateway over a mesh directory, as `serve` and `demo` do.

use std::path::Path;
use std::sync::Arc;

use meshgate_engine::{
    DataCheck, Engine, HealthState, MeshRegistry, PolicyEngine, ProductLoader, QualityStore,
    RunStore, SessionPublisher, Usage, UsageStore, follow, spawn_agent, spawn_materializer,
};

use crate::audit::{AuditLog, Auditor};
use crate::auth::Authenticator;
use crate::config::{GatewayConfig, MaskingConfig};
use crate::config_reload::{ConfigReload, follow_config};
use crate::error::StartupError;
use crate::handle_keys::HandleKeys;
use crate::http_door::HttpDoor;
use crate::pg_door::PgDoor;
use crate::portal::PortalDoor;

/// Result of starting the gateway.
type Result<T, E = StartupError> = std::result::Result<T, E>;
use crate::observability::{Metrics, OpenLineageEmitter, OperatorListener};
use crate::server::BoundServer;
use crate::service::GatewayState;

/// Loads the mesh at `dir`, reports what serves and what was left out, and binds.
///
/// A broken descriptor or a product whose storage or policy cannot be loaded is reported
/// and left out; the rest serves. An unreadable mesh directory, an unusable issuer or
/// TLS configuration, or a missing choice between TLS and plaintext stops the start.
pub async fn start(dir: &Path, config: GatewayConfig) -> Result<BoundServer> {
    // Two crypto providers are linked (aws-lc-rs and ring); name the one rustls uses.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    if config.tls.is_none() && !config.plaintext {
        return Err(StartupError::NoTransportSecurity);
    }
    let nodes = config.nodes.build(&config.engine)?;
    let mut authenticator = Authenticator::new(&config.auth).await?;
    if let Some(presented) = nodes.as_ref().and_then(|n| n.presented.clone()) {
        authenticator = authenticator.remembering(presented);
    }
    let authenticator = Arc::new(authenticator);
    let mask_key = masking_key(&config.masking)?;
    let policy = PolicyEngine::new(config.platform_policies.clone(), &mask_key);

    // Canonical, so that file-system events and table locations compare as paths.
    let root = std::fs::canonicalize(dir).map_err(|source| StartupError::MeshDirectory {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut loader =
        ProductLoader::with_storage(&config.engine, &config.storage, config.store_layer.clone())?;
    if let Some(nodes) = &nodes {
        loader = loader.with_nodes(nodes.domain_nodes.clone());
    }
    let mut registry = MeshRegistry::new(&root, loader, policy);
    let quality = open_quality_store(&config)?;
    registry.set_quality(Arc::clone(&quality));
    let runs = open_run_store(&config)?;
    registry.set_runs(Arc::clone(&runs.store));
    let usage = open_usage(&config)?;
    if let Some(usage) = &usage {
        registry.set_usage(Arc::clone(usage));
    }
    let report = registry.refresh(&DataCheck::All).await?;
    let sessions = registry.sessions();
    let served = sessions.product_count();
    let health = registry.health();
    let domains: std::collections::BTreeSet<&str> = health
        .keys()
        .filter_map(|name| name.split('.').next())
        .collect();
    let broken: Vec<(&String, String)> = health
        .iter()
        .filter(|(_, h)| h.state() == HealthState::Broken)
        .map(|(name, h)| (name, h.full_reason().unwrap_or_default()))
        .collect();
    tracing::info!(
        products = served,
        domains = domains.len(),
        invalid_descriptors = report.invalid.len(),
        broken_products = broken.len(),
        "mesh loaded"
    );
    eprintln!(
        "meshgate: {served} product(s) from {} domain(s) loaded from {}",
        domains.len(),
        dir.display()
    );
    for (file, reason) in &report.invalid {
        eprintln!("meshgate: left out (invalid descriptor): {file}: {reason}");
    }
    for (product, reason) in &broken {
        eprintln!("meshgate: broken (listed, queries fail until fixed): {product}: {reason}");
    }
    let metrics = Arc::new(Metrics::new());
    let storage = registry.storage();
    let mut auditor = Auditor::new(config.audit.statements).with_sink(Arc::clone(&metrics) as _);
    let audit_log = AuditLog::start(&config.audit)?;
    if let Some(log) = &audit_log {
        auditor = auditor.with_sink(Arc::new(log.clone()));
    }
    let auditor = Arc::new(auditor);
    let publisher = SessionPublisher::new(sessions);
    let mut engine = Engine::new(publisher.clone(), &config.engine, Arc::clone(&auditor))?;
    if let Some(distributed) = &config.engine.distributed {
        engine = engine.with_cluster(crate::cluster_roles::route(distributed));
    }
    if let Some(usage) = usage {
        spawn_usage_flush(Arc::clone(usage.store()), config.usage.flush_interval);
        engine = engine.with_usage(usage);
    }
    let engine = Arc::new(engine);
    let keys = Arc::new(handle_keys(&config.handles)?);
    let state = Arc::new(GatewayState::new(engine, &config, Arc::clone(&keys))?);
    let operator = match config.observability.listen {
        Some(addr) => {
            Some(OperatorListener::bind(addr, metrics, Arc::clone(&state), Some(storage)).await?)
        }
        None => None,
    };
    let (rechecks, recheck_requests) = tokio::sync::mpsc::unbounded_channel();
    if config.reload.watch {
        // The configuration file's rules (platform policies, issuers, masking key)
        // change live too, through the same follower.
        let policies = match &config.source {
            Some(path) => {
                let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
                let reload = ConfigReload {
                    path: path.clone(),
                    authenticator: Arc::clone(&authenticator),
                    policies: sender,
                    masking_key: mask_key,
                    debounce: config.reload.debounce,
                };
                match follow_config(reload, &config) {
                    Ok(_) => Some(receiver),
                    Err(e) => {
                        tracing::warn!(error = %e,
                            "cannot watch the configuration file; its changes apply at restart");
                        None
                    }
                }
            }
            None => None,
        };
        follow(
            registry,
            publisher.clone(),
            &config.reload,
            Some(recheck_requests),
            policies,
        );
    }
    if config.engine.derived.materialize && runs.writer {
        let lineage = if config.openlineage.enabled() {
            Some(OpenLineageEmitter::start(&config.openlineage)?)
        } else {
            None
        };
        spawn_materializer(
            &publisher,
            runs.store,
            &config.engine.derived,
            Some(rechecks),
            lineage,
        );
    }
    if config.quality.enabled {
        spawn_agent(&publisher, quality, &config.quality).map_err(StartupError::QualityAgent)?;
    }
    let http = HttpDoor::bind(
        &config,
        Arc::clone(state.engine()),
        Arc::clone(&authenticator),
        Arc::clone(&auditor),
        nodes.as_ref().map(|n| n.signer.jwks()),
    )
    .await?;
    let pg = PgDoor::bind(
        &config,
        Arc::clone(state.engine()),
        Arc::clone(&authenticator),
        Arc::clone(&auditor),
    )
    .await?;
    let portal = PortalDoor::bind(
        &config,
        Arc::clone(state.engine()),
        Arc::clone(&authenticator),
        Arc::clone(&auditor),
        Arc::clone(&keys),
    )
    .await?;
    Ok(
        BoundServer::bind(state, authenticator, auditor, audit_log, config)
            .await?
            .with_operator_listener(operator)
            .with_http_door(http)
            .with_pg_door(pg)
            .with_portal(portal),
    )
}

/// The history of materialization runs, and whether this process may write
/// materialized tables: the one process holding `runs.redb` in the state directory does
/// (replicas on one state directory elect their writer this way); without a state
/// directory, the process does, keeping its runs in memory.
struct RunHistory {
    store: Arc<RunStore>,
    writer: bool,
}

fn open_run_store(config: &GatewayConfig) -> Result<RunHistory> {
    let retention = config.engine.derived.runs_retention;
    let in_memory = |writer| RunHistory {
        store: Arc::new(RunStore::in_memory(retention)),
        writer,
    };
    match &config.state_dir {
        Some(dir) => match RunStore::open(dir, retention) {
            Ok(store) => Ok(RunHistory {
                store: Arc::new(store),
                writer: true,
            }),
            Err(e) if e.is_held_elsewhere() && config.state_dir_may_be_shared => {
                tracing::info!(
                    dir = %dir.display(),
                    "another process holds the run history: it writes materialized tables,                      this one does not"
                );
                Ok(in_memory(false))
            }
            Err(e) => Err(e.into()),
        },
        None => Ok(in_memory(true)),
    }
}

/// Usage accounting and budgets, unless turned off: kept in the state directory, else
/// in memory (with a warning; budgets then restart at zero with the process).
fn open_usage(config: &GatewayConfig) -> Result<Option<Arc<Usage>>> {
    if !config.usage.enabled {
        return Ok(None);
    }
    let retention = config.usage.retention;
    let store = match &config.state_dir {
        Some(dir) => match UsageStore::open(dir, retention) {
            Ok(store) => store,
            Err(e) if e.is_held_elsewhere() && config.state_dir_may_be_shared => {
                tracing::warn!(
                    dir = %dir.display(),
                    "another demo holds the state directory: this one keeps its usage in \
                     memory only"
                );
                UsageStore::in_memory(retention)?
            }
            Err(e) => return Err(e.into()),
        },
        None => {
            tracing::warn!(
                "no state directory configured: usage and budgets are kept in memory only"
            );
            UsageStore::in_memory(retention)?
        }
    };
    Ok(Some(Arc::new(Usage::new(
        Arc::new(store),
        config.budgets.clone(),
        &config.usage,
    ))))
}

/// Writes counted usage to the state directory every `interval`.
fn spawn_usage_flush(store: Arc<UsageStore>, interval: std::time::Duration) {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval.max(std::time::Duration::from_millis(100)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let store = Arc::clone(&store);
            if let Ok(Err(e)) = tokio::task::spawn_blocking(move || store.flush()).await {
                tracing::warn!(error = %e, "usage cannot be written; kept for the next try");
            }
        }
    });
}

/// The quality store: persistent in the state directory, else in memory (with a warning).
fn open_quality_store(config: &GatewayConfig) -> Result<Arc<QualityStore>> {
    let retention = config.quality.retention;
    match &config.state_dir {
        Some(dir) => match QualityStore::open(dir, retention) {
            Ok(store) => Ok(Arc::new(store)),
            // Two processes on one state directory: the second is a replica started
            // beside the first (as two demos on one directory are).
            Err(e) if e.is_held_elsewhere() && config.state_dir_may_be_shared => {
                tracing::warn!(
                    dir = %dir.display(),
                    "another demo holds the state directory: this one keeps its quality \
                     history in memory only"
                );
                Ok(Arc::new(QualityStore::in_memory(retention)))
            }
            Err(e) => Err(e.into()),
        },
        None => {
            tracing::warn!("no state directory configured: quality history is kept in memory only");
            Ok(Arc::new(QualityStore::in_memory(retention)))
        }
    }
}

/// The keys that seal handles: configured (shared by replicas), or the process's own.
fn handle_keys(config: &crate::config::HandleConfig) -> Result<HandleKeys> {
    let keys = match (&config.keys_file, &config.keys_env) {
        (Some(file), _) => HandleKeys::from_file(file)?,
        (None, Some(var)) => HandleKeys::from_env(var)?,
        (None, None) => {
            tracing::info!(
                "no handle keys configured (handles.keys_file): tickets and prepared \
                 statements are redeemable only on this process"
            );
            HandleKeys::random()?
        }
    };
    Ok(keys)
}

/// The key of the `hash` mask, as `config` says where it is (a random one without).
pub(crate) fn masking_key(config: &MaskingConfig) -> Result<Vec<u8>> {
    if let Some(path) = &config.key_file {
        return std::fs::read(path).map_err(|source| StartupError::MaskingKeyFile {
            path: path.clone(),
            source,
        });
    }
    if let Some(var) = &config.key_env {
        return std::env::var(var)
            .map(String::into_bytes)
            .map_err(|_| StartupError::MaskingKeyEnv(var.clone()));
    }
    tracing::warn!(
        "no masking key configured: hash masks use a random key and change across restarts"
    );
    let mut key = vec![0u8; 32];
    aws_lc_rs::rand::fill(&mut key).map_err(|_| StartupError::NoRandomness("the masking key"))?;
    Ok(key)
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}
