//! The `roost` binary: parses the command line and hands over to the library.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use roost::config::Config;

#[derive(Parser)]
#[command(
    name = "roost",
    version,
    about = "Web hosting on per-user QEMU VMs, in one daemon."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the daemon.
    Serve {
        /// TOML config; every key has an embedded default.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Print a preflight report; exit non-zero when this host cannot run VMs.
    Check {
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Manage accounts without the API.
    User {
        #[command(subcommand)]
        cmd: UserCmd,
    },
}

#[derive(Subcommand)]
enum UserCmd {
    /// Create an account; the password is read from stdin or prompted for.
    /// The daemon must not be running (it holds the database open).
    Add {
        name: String,
        /// Give the account the administrator role.
        #[arg(long)]
        admin: bool,
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn init_logging(cfg: &Config) {
    use tracing_subscriber::{layer::SubscriberExt, util::SubscriberInitExt, EnvFilter};
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&cfg.log_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // netlink-packet-route warns on every link dump about kernel attributes newer than it
    // knows; that is noise, not a problem of this host.
    let filter = match "netlink_packet_route=error".parse() {
        Ok(d) => filter.add_directive(d),
        Err(_) => filter,
    };
    let registry = tracing_subscriber::registry().with(filter);
    // Under systemd, stderr is connected to the journal: log structured fields natively.
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        if let Ok(j) = tracing_journald::layer() {
            registry
                .with(j.with_syslog_identifier("roost".into()))
                .init();
            return;
        }
    }
    registry
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .init();
}

fn read_password() -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        let a = rpassword::prompt_password("password: ")?;
        let b = rpassword::prompt_password("again: ")?;
        anyhow::ensure!(a == b, "the passwords differ");
        Ok(a)
    } else {
        let mut line = String::new();
        stdin.lock().read_line(&mut line)?;
        Ok(line.trim_end_matches(['\r', '\n']).to_owned())
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Serve { config } => {
            let cfg = Config::load(config.as_deref())?;
            init_logging(&cfg);
            let rt = tokio::runtime::Runtime::new().context("tokio runtime")?;
            rt.block_on(roost::daemon::serve(cfg))
        }
        Cmd::Check { config } => {
            let cfg = Config::load(config.as_deref())?;
            // The same decision `serve` makes: KVM only if a test guest really runs.
            let rt = tokio::runtime::Runtime::new().context("tokio runtime")?;
            let accel = rt.block_on(roost::vm::resolve(cfg.vm.accel.into()));
            let findings = roost::check::run(&cfg, accel);
            if !roost::check::print(&findings) {
                std::process::exit(1);
            }
            Ok(())
        }
        Cmd::User {
            cmd:
                UserCmd::Add {
                    name,
                    admin,
                    config,
                },
        } => {
            let cfg = Config::load(config.as_deref())?;
            init_logging(&cfg);
            roost::daemon::prepare_state_dir(&cfg)?;
            let password = read_password()?;
            let store = roost::store::Store::open(&cfg.state_dir)?;
            let secret = roost::auth::jwt::load_or_create_secret(&cfg.state_dir)?;
            let auth = roost::auth::Auth::new(store, &secret, &cfg);
            let role = if admin {
                roost::store::Role::Admin
            } else {
                roost::store::Role::User
            };
            let rt = tokio::runtime::Runtime::new().context("tokio runtime")?;
            let u = rt
                .block_on(auth.register(None, &name, &password, None, role, "cli"))
                .map_err(|e| {
                    anyhow::anyhow!("cannot add user {name:?}: {}", roost::api::error::chain(&e))
                })?;
            println!("created {} {} ({})", u.role.as_str(), u.username, u.id);
            Ok(())
        }
    }
}
