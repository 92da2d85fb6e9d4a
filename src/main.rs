//! The `rota` command: `serve` and `migrate` run a node; `app`, `task`, `schedule`, `workflow`, `traffic`,
//! `cluster` and `events` are clients of a node's REST API; `ring` works offline.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use rota::cli::app::AppCommand;
use rota::cli::client::{ApiArgs, CliError};
use rota::cli::cluster::{ClusterCommand, EventsArgs};
use rota::cli::schedule::ScheduleCommand;
use rota::cli::task::TaskCommand;
use rota::config::{parse_label, Config, ConfigError, LogFormat, MembershipBackend, Overrides};

/// mimalloc instead of glibc's allocator: a drain's rows are decoded on the blocking threads
/// and freed on the runtime's workers, and glibc's malloc and free were a quarter of a node's
/// CPU in a drain. Without transparent huge pages (the `no_thp` feature): with them, the
/// kernel zeroing the huge pages mimalloc faulted in again took a fifth of the node's CPU
/// (perf; docs/architecture.md, docs/benchmarks.md#node-cpu).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "rota", version, about = "A database-as-queue task dispatcher", propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node: dispatch tasks, serve /livez, /readyz, /metrics and the API.
    Serve(ServeArgs),
    /// Apply pending database migrations and exit.
    #[command(after_help = "\
Examples:
  $ rota migrate --database-url sqlite://./rota.db")]
    Migrate(CommonArgs),
    /// Consistent-hash ring tools.
    Ring {
        #[command(subcommand)]
        command: RingCommand,
    },
    /// Applications: create, list, show, update, start, stop, restart, delete (through the REST API).
    App {
        #[command(flatten)]
        api: ApiArgs,
        #[command(subcommand)]
        command: AppCommand,
    },
    /// Tasks: submit, list, show, cancel, children (through the REST API).
    Task {
        #[command(flatten)]
        api: ApiArgs,
        #[command(subcommand)]
        command: TaskCommand,
    },
    /// Traffic policies: which datacenter each group runs in; switch, split, fail over.
    Traffic {
        #[command(flatten)]
        api: ApiArgs,
        #[command(subcommand)]
        command: rota::cli::traffic::TrafficCommand,
    },
    /// Schedules: create (cron or fixed rate), list, show, pause, resume, delete (through the REST API).
    Schedule {
        #[command(flatten)]
        api: ApiArgs,
        #[command(subcommand)]
        command: ScheduleCommand,
    },
    /// Alarm channels: webhooks, chat robots, e-mail; create, test, list (through the REST API).
    Channel {
        #[command(flatten)]
        api: ApiArgs,
        #[command(subcommand)]
        command: rota::cli::alarm::ChannelCommand,
    },
    /// Alarms: which events go to which channels; their deliveries (through the REST API).
    Alarm {
        #[command(flatten)]
        api: ApiArgs,
        #[command(subcommand)]
        command: rota::cli::alarm::AlarmCommand,
    },
    /// The cluster as a node sees it: members, status, key ownership.
    Cluster {
        #[command(flatten)]
        api: ApiArgs,
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// The event history, newest first.
    #[command(after_help = "\
Examples:
  $ rota events --app report
  $ rota events --kind app.state --limit 10
  $ rota events --node node-1 --json")]
    Events {
        #[command(flatten)]
        api: ApiArgs,
        #[command(flatten)]
        args: EventsArgs,
    },
    /// Workflows (DAGs of jobs): create, list, run, show a run, retry a failed node, cancel.
    Workflow {
        #[command(flatten)]
        api: ApiArgs,
        #[command(subcommand)]
        command: rota::cli::workflow::WorkflowCommand,
    },
    /// The watchdog a node starts beside itself (docs/design.md#i1); not for direct use.
    #[command(hide = true)]
    Watchdog {
        /// The marker of the node's supervised children.
        #[arg(long)]
        marker: String,
        /// Log format (the node's).
        #[arg(long, value_name = "text|json", default_value = "text")]
        log_format: LogFormat,
    },
}

#[derive(Subcommand)]
enum RingCommand {
    /// Place K keys on a ring of N nodes: balance, keys moved on join/leave, memory and speed.
    Simulate(rota::cli::ring::SimulateArgs),
}

#[derive(Args)]
struct CommonArgs {
    /// Settings file (TOML; see config/default.toml for every key).
    #[arg(long, env = "ROTA_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Database URL: postgres://user@host/db or sqlite://path (default: sqlite://./data/rota.db).
    #[arg(long, env = "ROTA_DATABASE_URL", value_name = "URL")]
    database_url: Option<String>,
    /// Log format.
    #[arg(long, value_name = "text|json")]
    log_format: Option<LogFormat>,
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// HTTP listen address (default 127.0.0.1:8080; port 0 picks a free one).
    #[arg(long, env = "ROTA_LISTEN", value_name = "ADDR")]
    listen: Option<String>,
    /// Node id (default: generated once and kept in DATA_DIR/node-id).
    #[arg(long, value_name = "ID")]
    node_id: Option<String>,
    /// Directory for the node's own files (default ./data).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Do not apply migrations at start.
    #[arg(long)]
    no_migrate: bool,
    /// Membership backend.
    #[arg(long, value_name = "standalone|etcd")]
    membership: Option<MembershipBackend>,
    /// etcd endpoints, comma-separated host:port.
    #[arg(long, value_name = "HOST:PORT,…", value_delimiter = ',')]
    etcd_endpoints: Option<Vec<String>>,
    /// Cluster name (etcd key prefix).
    #[arg(long, value_name = "NAME")]
    cluster: Option<String>,
    /// A node label, key=value (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// Ring weight (0 takes no keys).
    #[arg(long, value_name = "N")]
    weight: Option<u32>,
    /// etcd lease TTL in seconds.
    #[arg(long, value_name = "SECONDS")]
    lease_ttl: Option<u64>,
    /// Address others reach this node at (default: the bound listen address).
    #[arg(long, value_name = "HOST:PORT")]
    advertise_addr: Option<String>,
    /// A variable of the node's environment that `process` and `shell` commands inherit
    /// (repeatable; replaces `drivers.pass_env`).
    #[arg(long = "pass-env", value_name = "NAME")]
    pass_env: Vec<String>,
}

impl CommonArgs {
    fn overrides(&self) -> Overrides {
        Overrides { database_url: self.database_url.clone(), log_format: self.log_format, ..Default::default() }
    }
}

impl ServeArgs {
    fn overrides(&self) -> Overrides {
        Overrides {
            listen: self.listen.clone(),
            node_id: self.node_id.clone(),
            data_dir: self.data_dir.clone(),
            no_migrate: self.no_migrate,
            membership: self.membership,
            etcd_endpoints: self.etcd_endpoints.clone(),
            cluster: self.cluster.clone(),
            labels: (!self.labels.is_empty()).then(|| self.labels.iter().cloned().collect::<BTreeMap<_, _>>()),
            weight: self.weight,
            lease_ttl_s: self.lease_ttl,
            advertise_addr: self.advertise_addr.clone(),
            pass_env: (!self.pass_env.is_empty()).then(|| self.pass_env.clone()),
            ..self.common.overrides()
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => load(args.common.config.as_deref(), &args.overrides()).and_then(|cfg| {
            run_async(async move {
                let shutdown = CancellationToken::new();
                tokio::spawn(forward_signals(shutdown.clone()));
                rota::node::serve(cfg, shutdown).await
            })
        }),
        Command::Migrate(args) => load(args.config.as_deref(), &args.overrides()).and_then(|cfg| {
            let url = rota::store::DbUrl::parse(&cfg.database_url())?;
            let timeout = std::time::Duration::from_millis(cfg.database.connect_timeout_ms);
            let applied = rota::store::migrate_url(&url, timeout).map_err(|e| {
                anyhow::anyhow!("{e} (check --database-url / ROTA_DATABASE_URL and that the server is up)")
            })?;
            if applied.is_empty() {
                println!("database is up to date");
            } else {
                println!("applied {} migration(s): {}", applied.len(), applied.join(", "));
            }
            Ok(())
        }),
        Command::Ring { command: RingCommand::Simulate(args) } => return api_exit(rota::cli::ring::simulate(&args)),
        Command::App { api, command } => return api_exit(rota::cli::app::run(&api, &command)),
        Command::Task { api, command } => return api_exit(rota::cli::task::run(&api, &command)),
        Command::Schedule { api, command } => return api_exit(rota::cli::schedule::run(&api, &command)),
        Command::Cluster { api, command } => return api_exit(rota::cli::cluster::run(&api, &command)),
        Command::Channel { api, command } => return api_exit(rota::cli::alarm::channel(&api, &command)),
        Command::Alarm { api, command } => return api_exit(rota::cli::alarm::alarm(&api, &command)),
        Command::Traffic { api, command } => return api_exit(rota::cli::traffic::run(&api, &command)),
        Command::Events { api, args } => return api_exit(rota::cli::cluster::events(&api, &args)),
        Command::Workflow { api, command } => return api_exit(rota::cli::workflow::run(&api, &command)),
        Command::Watchdog { marker, log_format } => {
            rota::logging::init(log_format, "info");
            return rota::drivers::watchdog::guard::run(&marker);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.downcast_ref::<ConfigError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Client commands: the error's own lines on stderr; exit 2 for a usage error (as clap's own),
/// 1 for any other.
fn api_exit(result: Result<(), CliError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}", e.render());
            ExitCode::from(e.exit_code())
        }
    }
}

/// Load and validate settings, then start logging as they say.
fn load(file: Option<&std::path::Path>, overrides: &Overrides) -> anyhow::Result<Config> {
    let cfg = Config::load(file, overrides)?;
    rota::logging::init(cfg.log.format, &cfg.log.level);
    Ok(cfg)
}

fn run_async<F: std::future::Future<Output = anyhow::Result<()>>>(f: F) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?.block_on(f)
}

/// SIGINT or SIGTERM cancels `shutdown` once; a second signal exits at once.
async fn forward_signals(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("cannot install signal handlers; stop the node with SIGKILL");
        return;
    };
    for round in 0..2 {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        if round == 0 {
            tracing::info!("signal received: graceful shutdown (send again to exit at once)");
            shutdown.cancel();
        } else {
            std::process::exit(130);
        }
    }
}
