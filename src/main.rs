//! The `roost` binary: parses the command line and hands over to the library.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use roost::config::Config;
use roost::control::Request;

#[derive(Parser)]
#[command(
    name = "roost",
    version,
    about = "Web hosting on per-user QEMU VMs, in one daemon."
)]
struct Cli {
    /// TOML config; every key has an embedded default. The operator's commands read it to
    /// find the state directory (and with it the daemon's control socket).
    #[arg(long, global = true, env = "ROOST_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the daemon.
    Serve,
    /// Print a preflight report; exit non-zero when this host cannot run VMs.
    Check,
    /// Accounts. Works the same whether the daemon runs (through its control socket) or not.
    User {
        #[command(subcommand)]
        cmd: UserCmd,
        /// Print the answer as JSON.
        #[arg(long, global = true)]
        json: bool,
    },
    /// Hostings' VMs. Works the same whether the daemon runs or not.
    Vm {
        #[command(subcommand)]
        cmd: VmCmd,
        /// Print the answer as JSON.
        #[arg(long, global = true)]
        json: bool,
    },
    /// Write a consistent copy of the database (accounts, hostings, keys, domains, audit
    /// log) to a new file, while the daemon runs or not. Restore: stop roost, put the file
    /// in place of STATE_DIR/roost.redb, start roost. VM disks are not included.
    Backup {
        /// The file to create; an existing file is never replaced.
        path: PathBuf,
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The daemon, accounts and hostings at a glance.
    Status {
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum UserCmd {
    /// Create an account; the password is read from stdin or prompted for.
    Add {
        name: String,
        /// Give the account the administrator role.
        #[arg(long)]
        admin: bool,
    },
    /// Every account.
    List,
    /// Give an account the administrator role (or take it with --off).
    SetAdmin {
        name: String,
        #[arg(long)]
        off: bool,
    },
    /// Stop an account from logging in and revoke every token it holds.
    Disable { name: String },
    /// Let a disabled account log in again (its old tokens stay revoked).
    Enable { name: String },
    /// Set an account's password (read from stdin, or prompted for); every token and
    /// browser session it has ends.
    Passwd { name: String },
    /// Delete an account with its SSH keys and sessions (its hosting must be deleted first).
    Delete { name: String },
}

#[derive(Subcommand)]
enum VmCmd {
    /// Every hosting's VM: owner, state, address, SSH port, PID, uptime.
    List,
    /// One VM (by hosting id or slug) with its figures and the end of its serial console.
    Show { vm: String },
}

/// `level` overrides the configured log level (the operator's commands log warnings only).
fn init_logging(cfg: &Config, level: Option<&str>) {
    use tracing_subscriber::{layer::SubscriberExt, util::SubscriberInitExt, EnvFilter};
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level.unwrap_or(&cfg.log_level)))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // netlink-packet-route warns on every link dump about kernel attributes newer than it
    // knows; that is noise, not a problem of this host.
    // The DNS crates log every response at info level; guests send those queries, so they
    // must not reach the journal (roost's own dns module logs refusals at debug); rustls
    // warns per handshake about what clients send.
    let filter = std::iter::once("netlink_packet_route=error")
        .chain(roost::dns::QUIET_LOGS)
        .chain(roost::tls::QUIET_LOGS)
        .fold(filter, |f, d| match d.parse() {
            Ok(d) => f.add_directive(d),
            Err(_) => f,
        });
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let cfg = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => return fail(&format!("{e:#}")),
    };
    let result = match cli.cmd {
        Cmd::Serve => {
            init_logging(&cfg, None);
            return match serve(cfg) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&format!("{e:#}")),
            };
        }
        Cmd::Check => return check(cfg),
        Cmd::User { cmd, json } => user(cmd).map(|r| (r, json)),
        Cmd::Vm { cmd, json } => {
            let req = match cmd {
                VmCmd::List => Request::VmList,
                VmCmd::Show { vm } => Request::VmShow { vm },
            };
            Ok((req, json))
        }
        Cmd::Status { json } => Ok((Request::Status, json)),
        // The daemon resolves paths from its own directory: send an absolute one.
        Cmd::Backup { path, json } => std::path::absolute(&path)
            .map(|path| (Request::Backup { path }, json))
            .with_context(|| format!("backup path {}", path.display())),
    };
    let (req, json) = match result {
        Ok(r) => r,
        Err(e) => return fail(&format!("{e:#}")),
    };
    // The operator's commands log only what is wrong; their output is the answer.
    init_logging(&cfg, Some("warn"));
    match roost::cli::exec(&cfg, req) {
        Ok((reply, _via)) => {
            print!("{}", roost::cli::render(&reply, json));
            ExitCode::SUCCESS
        }
        Err(e) => fail(&roost::error_chain(&e)),
    }
}

fn fail(msg: &str) -> ExitCode {
    eprintln!("roost: {msg}");
    ExitCode::FAILURE
}

fn serve(cfg: Config) -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new().context("tokio runtime")?;
    rt.block_on(roost::daemon::serve(cfg))
}

fn check(cfg: Config) -> ExitCode {
    // The same decision `serve` makes: KVM only if a test guest really runs.
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("tokio runtime: {e}")),
    };
    let accel = rt.block_on(roost::hosting::resolve_accel(&cfg));
    let findings = roost::check::run(&cfg, accel);
    if roost::check::print(&findings) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn user(cmd: UserCmd) -> anyhow::Result<Request> {
    Ok(match cmd {
        UserCmd::Add { name, admin } => Request::UserAdd {
            // A name that cannot be an account is refused before the password is asked for.
            password: match roost::auth::validate_username(&name) {
                Ok(()) => read_password()?,
                Err(e) => anyhow::bail!("cannot add user {name:?}: username {e}"),
            },
            username: name,
            admin,
        },
        UserCmd::List => Request::UserList,
        UserCmd::SetAdmin { name, off } => Request::UserSetAdmin {
            username: name,
            admin: !off,
        },
        UserCmd::Disable { name } => Request::UserDisable { username: name },
        UserCmd::Enable { name } => Request::UserEnable { username: name },
        UserCmd::Delete { name } => Request::UserDelete { username: name },
        UserCmd::Passwd { name } => Request::UserPassword {
            password: read_password()?,
            username: name,
        },
    })
}
