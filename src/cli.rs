//! The operator's commands (`roost user …`, `roost vm …`, `roost status`): where they run
//! and how their answers are printed.
//!
//! A command goes to the running daemon through its control socket; when no daemon
//! answers there, the CLI opens the store itself and runs the very same
//! [`control::Ops::exec`]. Output is an aligned table (or `key: value` lines) by default
//! and the reply as JSON with `--json`.

use std::fmt::Write as _;
use std::sync::Arc;

use crate::auth::Auth;
use crate::config::Config;
use crate::control::{self, client::ClientError, Ops, Reply, Request};
use crate::store::{Store, StoreError};

/// Why a command could not be carried out; the message names the cause once.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Client(#[from] ClientError),
    #[error(
        "{holder}, and its control socket {socket} does not answer (an older roost without one?)"
    )]
    Unreachable {
        holder: String,
        socket: std::path::PathBuf,
    },
    #[error(
        "no roost database at {0}: nothing to show yet (roost serve or roost user add creates it)"
    )]
    NoDatabase(std::path::PathBuf),
    #[error("{0}")]
    Setup(String),
}

/// Where a command was carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Daemon,
    Store,
}

/// Carries out `req` in the running daemon, or on the store when none runs.
pub fn exec(cfg: &Config, req: Request) -> Result<(Reply, Via), CliError> {
    let socket = control::socket_path(&cfg.state_dir);
    match control::client::call(&socket, &req) {
        Ok(r) => return Ok((r, Via::Daemon)),
        Err(ClientError::NotRunning(_)) => {}
        Err(ClientError::Refused(m)) => return Err(CliError::Refused(m)),
        Err(e) => return Err(e.into()),
    }
    let db = cfg.state_dir.join("roost.redb");
    if !matches!(req, Request::UserAdd { .. }) && !db.exists() {
        return Err(CliError::NoDatabase(db));
    }
    if matches!(req, Request::UserAdd { .. }) {
        crate::daemon::prepare_state_dir(cfg).map_err(|e| CliError::Setup(format!("{e:#}")))?;
    }
    // The daemon's own lock: while this command works on the store, a daemon that starts
    // is told which PID holds the state directory (and the other way round).
    let lock = crate::daemon::lock_state_dir(cfg);
    let store = match lock.as_ref().map(|_| Store::open(&cfg.state_dir)) {
        Ok(Ok(s)) => s,
        Err(_) | Ok(Err(StoreError::Locked { .. })) => {
            // A daemon may have started between the two attempts: ask it once more.
            return match control::client::call(&socket, &req) {
                Ok(r) => Ok((r, Via::Daemon)),
                Err(ClientError::Refused(m)) => Err(CliError::Refused(m)),
                Err(ClientError::NotRunning(_)) => Err(CliError::Unreachable {
                    holder: match lock {
                        Err(e) => format!("{e:#}"),
                        Ok(_) => format!("{} is open in another process", db.display()),
                    },
                    socket,
                }),
                Err(e) => Err(e.into()),
            };
        }
        Ok(Err(e)) => return Err(CliError::Setup(crate::error_chain(&e))),
    };
    let secret = crate::auth::jwt::load_or_create_secret(&cfg.state_dir)
        .map_err(|e| CliError::Setup(crate::error_chain(&e)))?;
    let cfg = Arc::new(cfg.clone());
    let auth = Arc::new(Auth::new(store.clone(), &secret, &cfg));
    let ops = Ops::offline(cfg, store, auth);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Setup(format!("tokio runtime: {e}")))?;
    let reply = rt
        .block_on(ops.exec(req))
        .map_err(|e| CliError::Refused(e.to_string()))?;
    drop(lock);
    Ok((reply, Via::Store))
}

/// The reply as the operator reads it.
pub fn render(reply: &Reply, json: bool) -> String {
    if json {
        let v = match reply {
            Reply::User(u) => serde_json::to_string_pretty(u),
            Reply::Users(u) => serde_json::to_string_pretty(u),
            Reply::Vms(v) => serde_json::to_string_pretty(v),
            Reply::Vm(v) => serde_json::to_string_pretty(v),
            Reply::Status(s) => serde_json::to_string_pretty(s),
            Reply::Backup(b) => serde_json::to_string_pretty(b),
        };
        return v.unwrap_or_default() + "\n";
    }
    match reply {
        Reply::User(u) => pairs(&[
            ("username", u.username.clone()),
            ("id", u.id.clone()),
            ("role", u.role.clone()),
            ("status", user_status(u)),
            ("created", u.created_at.clone()),
        ]),
        Reply::Users(users) => table(
            &["USERNAME", "ROLE", "STATUS", "CREATED", "ID"],
            users
                .iter()
                .map(|u| {
                    vec![
                        u.username.clone(),
                        u.role.clone(),
                        user_status(u),
                        u.created_at.clone(),
                        u.id.clone(),
                    ]
                })
                .collect(),
        ),
        Reply::Vms(vms) => table(
            &["SLUG", "OWNER", "STATE", "IP", "SSH", "PID", "UPTIME", "ID"],
            vms.iter()
                .map(|v| {
                    vec![
                        v.slug.clone(),
                        v.owner.clone(),
                        match &v.reason {
                            Some(r) if v.state == "failed" => format!("failed ({r})"),
                            _ => v.state.clone(),
                        },
                        v.ip.clone(),
                        v.ssh_port.to_string(),
                        opt(v.pid),
                        v.uptime_secs.map(duration).unwrap_or_else(|| "-".into()),
                        v.id.clone(),
                    ]
                })
                .collect(),
        ),
        Reply::Vm(d) => {
            let v = &d.vm;
            let mut s = pairs(&[
                ("id", v.id.clone()),
                ("slug", v.slug.clone()),
                ("owner", v.owner.clone()),
                ("state", v.state.clone()),
                ("reason", v.reason.clone().unwrap_or_else(|| "-".into())),
                (
                    "desired",
                    if v.desired_running {
                        "running"
                    } else {
                        "stopped"
                    }
                    .into(),
                ),
                ("ip", v.ip.clone()),
                ("ssh port", v.ssh_port.to_string()),
                ("tap", d.tap.clone()),
                ("mac", d.mac.clone()),
                ("pid", opt(v.pid)),
                (
                    "uptime",
                    v.uptime_secs.map(duration).unwrap_or_else(|| "-".into()),
                ),
                (
                    "qmp status",
                    v.qmp_status.clone().unwrap_or_else(|| "-".into()),
                ),
                (
                    "cpu time",
                    d.cpu_time_secs
                        .map(|c| format!("{c:.1} s"))
                        .unwrap_or_else(|| "-".into()),
                ),
                (
                    "memory",
                    d.memory_bytes.map(mib).unwrap_or_else(|| "-".into()),
                ),
                (
                    "memory (rss)",
                    d.rss_bytes.map(mib).unwrap_or_else(|| "-".into()),
                ),
                (
                    "tap rx/tx",
                    match (d.tap_rx_bytes, d.tap_tx_bytes) {
                        (Some(r), Some(t)) => format!("{} / {}", mib(r), mib(t)),
                        _ => "-".into(),
                    },
                ),
                ("created", v.created_at.clone()),
                (
                    "snapshots",
                    match d.snapshots.is_empty() {
                        true => "-".into(),
                        false => d
                            .snapshots
                            .iter()
                            .map(|(name, at)| format!("{name} ({at})"))
                            .collect::<Vec<_>>()
                            .join(", "),
                    },
                ),
            ]);
            if !d.serial_tail.is_empty() {
                s.push_str("serial console (last lines):\n");
                for l in &d.serial_tail {
                    let _ = writeln!(s, "  {l}");
                }
            }
            s
        }
        Reply::Status(st) => {
            let mut rows = match &st.daemon {
                Some(d) => vec![
                    (
                        "daemon",
                        format!(
                            "running (pid {}, roost {}, up {})",
                            d.pid,
                            d.version,
                            duration(d.uptime_secs)
                        ),
                    ),
                    ("listening", format!("{} for {}", d.http_listen, d.domain)),
                    ("vm hosting", d.vm_hosting.clone()),
                ],
                None => vec![("daemon", "not running".to_owned())],
            };
            rows.push(("state dir", st.state_dir.clone()));
            rows.push((
                "users",
                format!(
                    "{} ({} admin, {} disabled)",
                    st.users, st.admins, st.disabled_users
                ),
            ));
            let by_state = if st.hostings.is_empty() {
                "none".to_owned()
            } else {
                st.hostings
                    .iter()
                    .map(|(k, v)| format!("{v} {k}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            rows.push(("hostings", by_state));
            rows.push(("qemu processes", st.vms_running.to_string()));
            pairs(&rows)
        }
        Reply::Backup(b) => {
            let get = |t: &str| b.rows.get(t).copied().unwrap_or(0);
            pairs(&[
                ("backup", b.path.display().to_string()),
                ("size", format!("{} bytes", b.bytes)),
                (
                    "holds",
                    format!(
                        "{} users, {} hostings, {} ssh keys, {} domains, {} audit entries",
                        get("users"),
                        get("hostings"),
                        get("ssh_keys"),
                        get("domains"),
                        get("audit")
                    ),
                ),
                (
                    "restore",
                    "stop roost, put the file in place of state_dir/roost.redb (0600), start roost"
                        .to_owned(),
                ),
            ])
        }
    }
}

fn user_status(u: &control::UserRow) -> String {
    match &u.disabled_at {
        Some(t) => format!("disabled since {t}"),
        None => "active".into(),
    }
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}

/// `3d 4h`, `2h 5m`, `4m 10s`, `12s`.
pub fn duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// `key: value` lines with the values aligned.
fn pairs(rows: &[(&str, String)]) -> String {
    let w = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    let mut s = String::new();
    for (k, v) in rows {
        let _ = writeln!(s, "{:<w$} {v}", format!("{k}:"));
    }
    s
}

/// Columns aligned by the widest cell, two spaces apart; the header alone when empty.
fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut l = String::new();
        let last = cells.len().saturating_sub(1);
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i == last {
                l.push_str(c);
            } else {
                let _ = write!(l, "{c:<w$}  ");
            }
        }
        l.trim_end().to_owned() + "\n"
    };
    let mut s = line(header.to_vec());
    for r in &rows {
        s.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let t = table(
            &["NAME", "ROLE"],
            vec![
                vec!["alice".into(), "user".into()],
                vec!["operator".into(), "admin".into()],
            ],
        );
        assert_eq!(t, "NAME      ROLE\nalice     user\noperator  admin\n");
        assert_eq!(table(&["A", "B"], vec![]), "A  B\n");
    }

    #[test]
    fn durations() {
        assert_eq!(duration(12), "12s");
        assert_eq!(duration(250), "4m 10s");
        assert_eq!(duration(7500), "2h 5m");
        assert_eq!(duration(3 * 86400 + 4 * 3600 + 5), "3d 4h");
    }

    #[test]
    fn pairs_align_values() {
        assert_eq!(
            pairs(&[("a", "1".into()), ("long key", "2".into())]),
            "a:        1\nlong key: 2\n"
        );
    }
}
