//! The `meshgate` command: serve a mesh, serve the demo mesh, or lint a mesh.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use meshgate_gateway::lint::{LintOutcome, lint};
use meshgate_gateway::{GatewayConfig, READY_PREFIX, demo, run};

#[derive(Debug, Parser)]
#[command(
    name = "meshgate",
    version,
    about = "A federated Arrow Flight SQL gateway for a data mesh"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the mesh in a directory over Flight SQL.
    Serve {
        /// Mesh directory (`<mesh>/<domain>/<product>.yaml`).
        #[arg(long, env = "MESHGATE_MESH")]
        mesh: Option<PathBuf>,
        /// Address to listen on (overrides the config file).
        #[arg(long, env = "MESHGATE_LISTEN")]
        listen: Option<SocketAddr>,
        /// Gateway configuration file (YAML).
        #[arg(long, env = "MESHGATE_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Generate (if absent) and serve the demo mesh of a longitudinal health record.
    Demo {
        /// Address to listen on.
        #[arg(long, env = "MESHGATE_LISTEN", default_value = "127.0.0.1:50051")]
        listen: SocketAddr,
        /// Where the demo mesh lives.
        #[arg(long, env = "MESHGATE_DEMO_DIR", default_value = "./demo-mesh")]
        dir: PathBuf,
        /// Size of the demo: 1 is about six million rows.
        #[arg(long, env = "MESHGATE_DEMO_SCALE", default_value_t = 1.0)]
        scale: f64,
        /// Gateway configuration file (YAML).
        #[arg(long, env = "MESHGATE_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Validate every descriptor of a mesh directory; exits non-zero on any error.
    Lint {
        /// Mesh directory.
        mesh: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    if let Command::Lint { mesh } = &cli.command {
        return match lint(mesh, &mut std::io::stdout()) {
            Ok(LintOutcome::Clean) => ExitCode::SUCCESS,
            Ok(LintOutcome::Invalid) => ExitCode::from(1),
            Ok(LintOutcome::Unreadable) | Err(_) => ExitCode::from(2),
        };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("meshgate: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(serve(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("meshgate: {message}");
            ExitCode::from(1)
        }
    }
}

async fn serve(command: Command) -> Result<(), String> {
    let (mesh, config, demo_dir) = match command {
        Command::Serve {
            mesh,
            listen,
            config,
        } => {
            let mut config = load_config(config.as_deref())?;
            if let Some(listen) = listen {
                config.listen = listen;
            }
            let mesh = mesh
                .or_else(|| config.mesh.clone())
                .ok_or("no mesh directory: pass --mesh <dir> or set `mesh:` in the config file")?;
            (mesh, config, None)
        }
        Command::Demo {
            listen,
            dir,
            scale,
            config,
        } => {
            let mut config = load_config(config.as_deref())?;
            config.listen = listen;
            eprintln!(
                "meshgate: preparing the demo mesh in {} (scale {scale})",
                dir.display()
            );
            let demo = demo::ensure_demo_mesh(&dir, scale)
                .await
                .map_err(|e| e.to_string())?;
            if demo.generated {
                eprintln!(
                    "meshgate: generated {} rows in {:.1} s",
                    demo.rows, demo.seconds
                );
            } else {
                eprintln!("meshgate: reusing the demo mesh ({} rows)", demo.rows);
            }
            (dir, config, Some(()))
        }
        Command::Lint { .. } => unreachable!("lint is handled before the runtime starts"),
    };
    let server = run::start(&mesh, config).await.map_err(|e| e.to_string())?;
    let addr = server.local_addr().map_err(|e| e.to_string())?;
    if demo_dir.is_some() {
        print_demo_help(addr);
    }
    println!("{READY_PREFIX}{addr}");
    let _ = std::io::stdout().flush();
    server
        .serve(run::shutdown_signal())
        .await
        .map_err(|e| e.to_string())
}

fn load_config(path: Option<&std::path::Path>) -> Result<GatewayConfig, String> {
    match path {
        Some(path) => GatewayConfig::from_file(path),
        None => Ok(GatewayConfig::default()),
    }
}

fn print_demo_help(addr: SocketAddr) {
    let host = if addr.ip().is_unspecified() {
        format!("127.0.0.1:{}", addr.port())
    } else {
        addr.to_string()
    };
    println!(
        r#"
Connect from Python (pip install adbc-driver-flightsql pyarrow):

    import adbc_driver_flightsql.dbapi as flightsql
    conn = flightsql.connect("grpc://{host}")
    cur = conn.cursor()
    cur.execute("""
        SELECT v.region, count(*) AS visits, sum(c.amount) AS billed
        FROM clinical.encounters.visits v
        JOIN billing.claims.claims c ON c.encounter_id = v.encounter_id
        WHERE v.admit_month = '2024-03'
        GROUP BY v.region ORDER BY billed DESC""")
    print(cur.fetch_arrow_table())

BI tools (Flight SQL JDBC): jdbc:arrow-flight-sql://{host}?useEncryption=false
Discover products: SELECT * FROM mesh.meta.products
"#
    );
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MESHGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
