//! The `meshgate` command: serve a mesh, serve the demo mesh, lint a mesh, or export and
//! import contracts.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use meshgate_gateway::contract::{
    ContractError, export_product, import_contract, read_contract, write_descriptor,
};
use meshgate_gateway::error::StartupError;
use meshgate_gateway::lint::{LintOptions, LintOutcome, lint};
use meshgate_gateway::observability::SpanExport;
use meshgate_gateway::{GatewayConfig, auth, demo, run};

mod cli;

use cli::{Cli, Command, ContractAction, PolicyAction, TokenArgs};

/// Why a command failed; printed as `meshgate: <message>`.
#[derive(Debug, thiserror::Error)]
enum CliError {
    /// The gateway cannot start or stopped.
    #[error(transparent)]
    Startup(#[from] StartupError),
    /// The demo mesh or its tokens cannot be prepared.
    #[error(transparent)]
    Demo(#[from] demo::DemoError),
    /// A token cannot be made.
    #[error(transparent)]
    Mint(#[from] auth::MintError),
    /// A key file cannot be read.
    #[error("{}: {source}", path.display())]
    KeyFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The command line asks for something impossible.
    #[error("{0}")]
    Usage(&'static str),
}

/// jemalloc: under many concurrent queries the system allocator kept the memory of
/// finished queries (per-thread arenas, fragmentation) and the process stayed at its
/// peak; jemalloc's decay, purged by its background threads, gives it back.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn token(args: TokenArgs) -> Result<String, CliError> {
    let attributes = args.attributes.into_iter().collect();
    if let Some(dir) = args.demo_dir {
        let secret = demo::demo_secret(&dir)?;
        return Ok(demo::demo_token(
            &secret,
            &args.sub,
            &args.roles,
            attributes,
            args.ttl,
        )?);
    }
    let material = match (&args.secret_file, &args.private_key_pem) {
        (Some(path), None) | (None, Some(path)) => {
            std::fs::read(path).map_err(|source| CliError::KeyFile {
                path: path.clone(),
                source,
            })?
        }
        _ => {
            return Err(CliError::Usage(
                "give one of --demo-dir, --secret-file or --private-key-pem",
            ));
        }
    };
    let key = auth::encoding_key(args.alg, material.trim_ascii())?;
    Ok(auth::mint(
        &auth::TokenRequest {
            issuer: args.issuer,
            audience: args.audience,
            subject: args.sub,
            roles: args.roles,
            attributes,
            ttl: args.ttl,
            key_id: args.kid,
            actor: None,
        },
        args.alg,
        &key,
    )?)
}

/// Runs `meshgate contract export|import`.
fn contract(action: &ContractAction) -> Result<(), ContractError> {
    let write = |path: &Path, text: &str| {
        std::fs::write(path, text).map_err(|source| ContractError::Io {
            path: path.to_path_buf(),
            source,
        })
    };
    match action {
        ContractAction::Export { mesh, product, out } => {
            let yaml = export_product(mesh, product)?;
            match out {
                Some(path) => write(path, &yaml),
                None => {
                    print!("{yaml}");
                    Ok(())
                }
            }
        }
        ContractAction::Import {
            contract,
            mesh,
            force,
        } => {
            let text = read_contract(contract)?;
            let root = mesh.clone().unwrap_or_else(|| PathBuf::from("."));
            let (domain, product, yaml) = import_contract(&text, &root)?;
            match mesh {
                Some(mesh) => {
                    let file = write_descriptor(mesh, (&domain, &product), &yaml, *force)?;
                    eprintln!("meshgate: wrote {}", file.display());
                }
                None => print!("{yaml}"),
            }
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(
        cli.command,
        Command::Token(_) | Command::Lint { .. } | Command::Policy { .. }
    ) {
        init_tracing(None);
    }
    if let Command::HandleKey { id } = &cli.command {
        let line = meshgate_gateway::handle_keys::HandleKeys::generate(id).and_then(|line| {
            // Checked as the gateway will read it (the id's characters and length).
            meshgate_gateway::handle_keys::HandleKeys::parse(&line).map(|_| line)
        });
        return match line {
            Ok(line) => {
                print!("{line}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("meshgate: {e}");
                ExitCode::from(2)
            }
        };
    }
    if let Command::Token(args) = cli.command {
        return match token(args) {
            Ok(token) => {
                println!("{token}");
                ExitCode::SUCCESS
            }
            Err(message) => {
                eprintln!("meshgate: {message}");
                ExitCode::from(2)
            }
        };
    }
    if let Command::Policy {
        action: PolicyAction::Test { cases },
    } = &cli.command
    {
        return match meshgate_gateway::policy_test::run(cases, &mut std::io::stdout()) {
            Ok(outcome) if outcome.failed == 0 => ExitCode::SUCCESS,
            Ok(_) => ExitCode::from(1),
            Err(e) => {
                eprintln!("meshgate: {e}");
                ExitCode::from(2)
            }
        };
    }
    if let Command::Contract { action } = &cli.command {
        return match contract(action) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("meshgate: {e}");
                ExitCode::from(1)
            }
        };
    }
    if let Command::Lint {
        mesh,
        check_data,
        config,
        against,
        usage,
    } = &cli.command
    {
        let config = match config.as_deref().map(GatewayConfig::from_file).transpose() {
            Ok(config) => config,
            Err(e) => {
                eprintln!("meshgate: {e}");
                return ExitCode::from(2);
            }
        };
        let options = LintOptions {
            check_data: *check_data,
            config,
            against: against.clone(),
            usage: usage.clone(),
        };
        return match lint(mesh, options, &mut std::io::stdout()) {
            Ok(LintOutcome::Clean) => ExitCode::SUCCESS,
            Ok(LintOutcome::Invalid) => ExitCode::from(1),
            Ok(LintOutcome::Unreadable) | Err(_) => ExitCode::from(2),
        };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Planning and optimizing recurse over a statement's expression tree; statements
        // are bounded (size, operators, depth), and this leaves a wide margin above that.
        .thread_stack_size(8 * 1024 * 1024)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("meshgate: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    // The OTLP exporter's connection runs on the runtime: start it inside, stop it
    // (flushing the spans still queued) before the runtime goes.
    let export = {
        let _entered = runtime.enter();
        match SpanExport::from_env() {
            Ok(export) => export,
            Err(message) => {
                eprintln!("meshgate: {message}");
                return ExitCode::from(2);
            }
        }
    };
    init_tracing(export.as_ref());
    // Purge freed memory in the background, so that an idle gateway shrinks back.
    if let Err(e) = tikv_jemalloc_ctl::background_thread::write(true) {
        tracing::warn!(error = %e, "jemalloc background purging unavailable");
    }
    let served = runtime.block_on(serve(cli.command));
    if let Some(export) = export {
        export.shutdown();
    }
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("meshgate: {message}");
            ExitCode::from(1)
        }
    }
}

async fn serve(command: Command) -> Result<(), CliError> {
    // Runs for as long as this process serves (`demo --domain-node`).
    let mut domain_node_process = None;
    let (mesh, config, demo_dir) = match command {
        Command::Scheduler {
            listen,
            external_host,
        } => {
            let settings = meshgate_cluster::SchedulerSettings {
                listen,
                external_host,
            };
            meshgate_cluster::run_scheduler(settings)
                .await
                .map_err(StartupError::from)?;
            return Ok(());
        }
        Command::Executor { config, args } => {
            let config = load_config(config.as_deref())?;
            meshgate_gateway::cluster_roles::executor(&config, args).await?;
            return Ok(());
        }
        Command::Serve {
            mesh,
            listen,
            config,
            state_dir,
            metrics_listen,
            http_listen,
            pg_listen,
            portal_listen,
            tls,
        } => {
            let mut config = load_config(config.as_deref())?;
            tls.apply(&mut config);
            if portal_listen.is_some() {
                config.portal.listen = portal_listen;
            }
            if metrics_listen.is_some() {
                config.observability.listen = metrics_listen;
            }
            if http_listen.is_some() {
                config.http.listen = http_listen;
            }
            if pg_listen.is_some() {
                config.postgres.listen = pg_listen;
            }
            if state_dir.is_some() {
                config.state_dir = state_dir;
            }
            if let Some(listen) = listen {
                config.listen = listen;
            }
            let mesh = mesh
                .or_else(|| config.mesh.clone())
                .ok_or(StartupError::NoMesh)?;
            (mesh, config, None)
        }
        Command::Demo {
            listen,
            dir,
            scale,
            config,
            metrics_listen,
            http_listen,
            pg_listen,
            portal_listen,
            domain_node,
            verify_pushdown,
            tls,
        } => {
            let mut config = load_config(config.as_deref())?;
            config.listen = listen;
            config.http.listen = Some(http_listen);
            config.postgres.listen = Some(pg_listen);
            config.portal.listen = Some(portal_listen);
            if metrics_listen.is_some() {
                config.observability.listen = metrics_listen;
            }
            // The demo is a local development tool: plaintext unless TLS is given.
            config.plaintext = true;
            tls.apply(&mut config);
            eprintln!(
                "meshgate: preparing the demo mesh in {} (scale {scale})",
                dir.display()
            );
            let demo = demo::ensure_demo_mesh(&dir, scale).await?;
            if demo.generated {
                eprintln!(
                    "meshgate: generated {} rows in {:.1} s",
                    demo.rows, demo.seconds
                );
            } else {
                eprintln!("meshgate: reusing the demo mesh ({} rows)", demo.rows);
            }
            // The demo adds its issuer, platform rule and keys to the file's: what it
            // serves is not the file alone, so the file is not followed.
            config.source = None;
            let secret = demo::demo_secret(&dir)?;
            config.auth.issuers.push(demo::demo_issuer(&secret));
            config
                .platform_policies
                .extend(demo::demo_platform_policies());
            for (domain, principal) in demo::demo_domain_principals() {
                config
                    .engine
                    .derived
                    .principals
                    .entry(domain)
                    .or_insert(principal);
            }
            if config.audit.file.is_none() && !config.audit.stdout {
                config.audit.file = Some(dir.join("audit.jsonl"));
            }
            if config.masking.key_file.is_none() && config.masking.key_env.is_none() {
                config.masking.key_file = Some(secret.clone());
            }
            // Demos on the same directory are replicas: they share the handle keys.
            if config.handles.keys_file.is_none() && config.handles.keys_env.is_none() {
                config.handles.keys_file = Some(demo::demo_handle_keys(&dir)?);
            }
            // Hidden, so that the mesh watcher ignores the agent's writes.
            config.state_dir.get_or_insert_with(|| dir.join(".state"));
            config.state_dir_may_be_shared = true;
            let mesh = match domain_node {
                Some(domain) => {
                    eprintln!("meshgate: starting the domain node of {domain}");
                    let (mesh, node) = tokio::task::block_in_place(|| {
                        demo::node::start(&dir, &domain, verify_pushdown, &mut config)
                    })?;
                    eprintln!(
                        "meshgate: domain {domain} is served by its node on grpc://{} \
                         (audit: {})",
                        node.addr,
                        demo::node::node_dir(&dir, &domain)
                            .join("audit.jsonl")
                            .display()
                    );
                    domain_node_process = Some(node);
                    mesh
                }
                None => dir,
            };
            (mesh, config, Some(secret))
        }
        Command::DemoNode {
            dir,
            domain,
            listen,
        } => {
            demo::node::exit_with_parent();
            let secret = demo::demo_secret(&dir)?;
            let mut config = demo::node::node_config(&dir, &domain, &secret);
            config.listen = listen;
            let mesh = demo::node::node_dir(&dir, &domain).join("mesh");
            (mesh, config, None)
        }
        Command::Lint { .. }
        | Command::Policy { .. }
        | Command::Token(_)
        | Command::HandleKey { .. }
        | Command::Contract { .. } => {
            return Err(CliError::Usage("this command does not serve"));
        }
    };
    let server = run::start(&mesh, config).await?;
    let addr = server.local_addr()?;
    let http = server.http_url();
    let pg = server.pg_addr();
    let portal = server.portal_url();
    if let Some(secret) = &demo_dir {
        let doors = demo::help::DemoDoors {
            flight: addr,
            http: http.as_deref(),
            pg,
            portal: portal.as_deref(),
        };
        let demo_dir = secret.parent().unwrap_or(&mesh);
        demo::help::print_demo_help(&doors, demo_dir, secret)?;
    }
    if let Some(operator) = server.operator_addr() {
        eprintln!("meshgate: metrics on http://{operator}/metrics (also /health, /ready)");
    }
    if let Some(http) = &http {
        println!("{}{http}", meshgate_gateway::http_door::READY_PREFIX);
    }
    if let Some((pg, _)) = pg {
        println!("{}{pg}", meshgate_gateway::pg_door::READY_PREFIX);
    }
    if let Some(portal) = &portal {
        println!("{}{portal}", meshgate_gateway::portal::READY_PREFIX);
    }
    println!("{}", server.ready_line()?);
    let _ = std::io::stdout().flush();
    server.serve(run::shutdown_signal()).await?;
    drop(domain_node_process);
    Ok(())
}

fn load_config(path: Option<&std::path::Path>) -> Result<GatewayConfig, StartupError> {
    match path {
        Some(path) => GatewayConfig::from_file(path),
        None => Ok(GatewayConfig::default()),
    }
}

/// Logs to stderr, filtered by `MESHGATE_LOG` (default `warn`); with `export`, the
/// gateway's own spans (info and above, without their log events) also go to the OTLP
/// collector.
fn init_tracing(export: Option<&SpanExport>) {
    use tracing_subscriber::filter::{FilterExt, Targets, filter_fn};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, Layer};

    let filter = EnvFilter::try_from_env("MESHGATE_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    let log = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(filter);
    let spans = export.map(|export| {
        tracing_opentelemetry::layer()
            .with_tracer(export.tracer())
            .with_filter(
                Targets::new()
                    .with_target("meshgate_gateway", tracing::Level::INFO)
                    .with_target("meshgate_engine", tracing::Level::INFO)
                    .with_target("meshgate_connectors", tracing::Level::INFO)
                    // Spans only: log events can carry error text with storage paths,
                    // which stays in the server's own log.
                    .and(filter_fn(|metadata| metadata.is_span())),
            )
    });
    tracing_subscriber::registry().with(log).with(spans).init();
}
