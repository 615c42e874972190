//! The QMP client: the only code in roost that speaks QMP.
//!
//! Built on `qapi` 0.15 (async tokio). Facts this relies on: after
//! `open_uds(..).negotiate().into_parts()`, the events half must be polled all the time
//! because polling it is also what delivers command replies, so a task owns it; a closed socket
//! shows up as an error (ECONNRESET) on that stream, not as its end; and dropping the command
//! half does not end the stream while QEMU keeps the socket open, so [`Qmp`]'s `Drop` aborts
//! the task. Every command has a deadline (500 ms by default, 5 s for run-state and block
//! commands) and fails with [`VmError::QmpTimeout`] instead of hanging on a QEMU that accepted
//! the connection but stopped answering.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use qapi::futures::{QapiService, QmpStreamTokio};
use qapi::qmp::{self, QmpCommand};
use qapi::{Command, Enum, ExecuteError};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use super::VmError;

type Writer = QmpStreamTokio<tokio::io::WriteHalf<tokio::net::UnixStream>>;

/// Per-command deadlines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    /// Greeting plus capabilities negotiation.
    pub connect: Duration,
    /// Cheap queries.
    pub default: Duration,
    /// Run-state changes and block queries, which wait for QEMU's main loop and I/O.
    pub slow: Duration,
    /// Taking or deleting a disk snapshot: QEMU drains the disk's I/O and rewrites the
    /// refcounts of every allocated cluster, which grows with what the guest has written.
    pub snapshot: Duration,
}

impl Default for Deadlines {
    fn default() -> Self {
        Deadlines {
            connect: Duration::from_secs(2),
            default: Duration::from_millis(500),
            slow: Duration::from_secs(5),
            snapshot: Duration::from_secs(60),
        }
    }
}

/// What QEMU tells about a VM, as far as roost cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmEvent {
    /// QEMU is shutting down; `guest` when the guest asked for it (poweroff), with QEMU's
    /// reason (e.g. `guest-shutdown`, `host-qmp-quit`, `host-signal`).
    Shutdown { guest: bool, reason: String },
    /// The guest was reset (reboot from inside, or `system_reset`).
    Reset { guest: bool },
    /// Execution paused.
    Stop,
    /// Execution resumed.
    Resume,
    /// An ACPI power button press was delivered (`system_powerdown`).
    Powerdown,
    /// The QMP connection ended. Without a `Shutdown` before it, callers treat it as one
    /// (and check the process, which may still be alive with QMP lost).
    Disconnected,
}

/// The VM's run state as `query-status` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunState {
    Running,
    Paused,
    Shutdown,
    Prelaunch,
    Suspended,
    GuestPanicked,
    InternalError,
    IoError,
    /// Any other QEMU state (migration, debug, watchdog, ...).
    Other,
}

impl From<qmp::RunState> for RunState {
    fn from(s: qmp::RunState) -> Self {
        match s {
            qmp::RunState::running => RunState::Running,
            qmp::RunState::paused => RunState::Paused,
            qmp::RunState::shutdown => RunState::Shutdown,
            qmp::RunState::prelaunch => RunState::Prelaunch,
            qmp::RunState::suspended => RunState::Suspended,
            qmp::RunState::guest_panicked => RunState::GuestPanicked,
            qmp::RunState::internal_error => RunState::InternalError,
            qmp::RunState::io_error => RunState::IoError,
            _ => RunState::Other,
        }
    }
}

/// I/O counters of one block device.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskStats {
    /// The device (`virtio0`, ...) or qdev path, whichever QEMU names.
    pub device: String,
    pub rd_bytes: u64,
    pub wr_bytes: u64,
    pub rd_operations: u64,
    pub wr_operations: u64,
}

/// `query-blockstats` with its answer left as JSON: the typed answer in `qapi` follows a newer
/// QEMU schema than the host's, and a missing field there would fail the whole reply.
#[derive(Debug, Serialize)]
struct QueryBlockstatsRaw {}

impl Command for QueryBlockstatsRaw {
    type Ok = serde_json::Value;
    const NAME: &'static str = "query-blockstats";
    const ALLOW_OOB: bool = false;
}
impl QmpCommand for QueryBlockstatsRaw {}

/// `blockdev-snapshot-delete-internal-sync` with an untyped answer (a `SnapshotInfo` that
/// roost does not read; see [`QueryBlockstatsRaw`] for why untyped).
#[derive(Debug, Serialize)]
struct SnapshotDeleteRaw {
    device: String,
    name: String,
}

impl Command for SnapshotDeleteRaw {
    type Ok = serde_json::Value;
    const NAME: &'static str = "blockdev-snapshot-delete-internal-sync";
    const ALLOW_OOB: bool = false;
}
impl QmpCommand for SnapshotDeleteRaw {}

/// A negotiated QMP connection to one QEMU.
pub struct Qmp {
    service: QapiService<Writer>,
    events: broadcast::Sender<VmEvent>,
    reader: JoinHandle<()>,
    connected: Arc<AtomicBool>,
    /// Set after a command timed out; see [`Qmp::exec`].
    abandoned: AtomicBool,
    deadlines: Deadlines,
}

impl std::fmt::Debug for Qmp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qmp")
            .field("connected", &self.is_connected())
            .field("deadlines", &self.deadlines)
            .finish()
    }
}

impl Drop for Qmp {
    fn drop(&mut self) {
        // The stream does not end on its own while QEMU holds the socket.
        self.reader.abort();
    }
}

impl Qmp {
    /// Connects to `socket` and negotiates capabilities, with the default deadlines.
    pub async fn connect(socket: &Path) -> Result<Qmp, VmError> {
        Self::connect_with(socket, Deadlines::default()).await
    }

    /// Connects with explicit deadlines.
    pub async fn connect_with(socket: &Path, deadlines: Deadlines) -> Result<Qmp, VmError> {
        let negotiated = tokio::time::timeout(deadlines.connect, async {
            QmpStreamTokio::open_uds(socket).await?.negotiate().await
        })
        .await
        .map_err(|_| VmError::QmpTimeout {
            command: "qmp_capabilities",
            after: deadlines.connect,
        })?
        .map_err(|source| VmError::QmpConnect {
            path: socket.to_path_buf(),
            source,
        })?;
        let (service, mut stream) = negotiated.into_parts();
        let (tx, _) = broadcast::channel(64);
        let connected = Arc::new(AtomicBool::new(true));
        let reader = {
            let tx = tx.clone();
            let connected = connected.clone();
            tokio::spawn(async move {
                while let Some(item) = stream.next().await {
                    match item {
                        Ok(ev) => {
                            if let Some(ev) = map_event(ev) {
                                debug!(?ev, "qmp event");
                                // No receiver is fine: nobody is listening right now.
                                let _ = tx.send(ev);
                            }
                        }
                        // A late reply to a command that timed out, or one odd message: the
                        // stream itself is still usable (a broken one ends right after).
                        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                            warn!(error = %e, "ignoring a QMP message");
                        }
                        Err(e) => {
                            debug!(error = %e, "qmp stream closed");
                            break;
                        }
                    }
                }
                connected.store(false, Ordering::SeqCst);
                let _ = tx.send(VmEvent::Disconnected);
            })
        };
        Ok(Qmp {
            service,
            events: tx,
            reader,
            connected,
            abandoned: AtomicBool::new(false),
            deadlines,
        })
    }

    /// A new receiver of events from now on. After the connection ends the last event is
    /// [`VmEvent::Disconnected`].
    pub fn events(&self) -> broadcast::Receiver<VmEvent> {
        self.events.subscribe()
    }

    /// False once the connection has ended.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::SeqCst)
    }

    /// False after a command timed out: the connection is then abandoned and every further
    /// command fails at once; reconnect to talk to this QEMU again.
    pub fn is_usable(&self) -> bool {
        self.is_connected() && !self.abandoned.load(Ordering::SeqCst)
    }

    /// Runs one command with a deadline.
    ///
    /// A timed-out command stays pending inside `qapi`; QEMU answers in order, so every later
    /// reply on this connection would be suspect, and with a peer that does not use command
    /// ids `qapi` would even panic on the next command's (reused) id. Hence the first timeout
    /// abandons the connection.
    async fn exec<C: QmpCommand>(&self, cmd: C, after: Duration) -> Result<C::Ok, VmError> {
        let command = C::NAME;
        if self.abandoned.load(Ordering::SeqCst) {
            return Err(VmError::QmpAbandoned { command });
        }
        match tokio::time::timeout(after, self.service.execute(cmd)).await {
            Err(_) => {
                self.abandoned.store(true, Ordering::SeqCst);
                warn!(
                    command,
                    ?after,
                    "QMP command timed out; abandoning the connection"
                );
                Err(VmError::QmpTimeout { command, after })
            }
            Ok(Ok(v)) => Ok(v),
            Ok(Err(ExecuteError::Qapi(source))) => Err(VmError::QmpCommand { command, source }),
            Ok(Err(ExecuteError::Io(source))) => Err(VmError::QmpIo { command, source }),
        }
    }

    /// `query-status`.
    pub async fn query_status(&self) -> Result<RunState, VmError> {
        let info = self
            .exec(qmp::query_status {}, self.deadlines.default)
            .await?;
        Ok(info.status.into())
    }

    /// `system_powerdown`: presses the ACPI power button; the guest decides what to do.
    pub async fn system_powerdown(&self) -> Result<(), VmError> {
        self.exec(qmp::system_powerdown {}, self.deadlines.slow)
            .await
            .map(drop)
    }

    /// `system_reset`: a hard reset.
    pub async fn system_reset(&self) -> Result<(), VmError> {
        self.exec(qmp::system_reset {}, self.deadlines.slow)
            .await
            .map(drop)
    }

    /// `stop`: pauses the vCPUs.
    pub async fn stop(&self) -> Result<(), VmError> {
        self.exec(qmp::stop {}, self.deadlines.slow).await.map(drop)
    }

    /// `cont`: resumes the vCPUs.
    pub async fn cont(&self) -> Result<(), VmError> {
        self.exec(qmp::cont {}, self.deadlines.slow).await.map(drop)
    }

    /// `quit`: QEMU exits at once (no guest shutdown). The connection closing before the
    /// reply arrives counts as success.
    pub async fn quit(&self) -> Result<(), VmError> {
        match self.exec(qmp::quit {}, self.deadlines.slow).await {
            Ok(_) | Err(VmError::QmpIo { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `blockdev-snapshot-internal-sync`: an internal snapshot `name` of the VM's disk,
    /// taken while the guest runs (see [`super::snapshot`]).
    pub async fn snapshot_create(&self, name: &str) -> Result<(), VmError> {
        let cmd = qmp::BlockdevSnapshotInternal {
            device: super::snapshot::DISK_DEVICE.into(),
            name: name.into(),
        };
        self.exec(
            qmp::blockdev_snapshot_internal_sync(cmd),
            self.deadlines.snapshot,
        )
        .await
        .map(drop)
    }

    /// `blockdev-snapshot-delete-internal-sync` by name.
    pub async fn snapshot_delete(&self, name: &str) -> Result<(), VmError> {
        let cmd = SnapshotDeleteRaw {
            device: super::snapshot::DISK_DEVICE.into(),
            name: name.into(),
        };
        self.exec(cmd, self.deadlines.snapshot).await.map(drop)
    }

    /// `query-blockstats`, reduced to the counters roost reports.
    pub async fn query_blockstats(&self) -> Result<Vec<DiskStats>, VmError> {
        let v = self
            .exec(QueryBlockstatsRaw {}, self.deadlines.slow)
            .await?;
        parse_blockstats(&v).map_err(|detail| VmError::QmpAnswer {
            command: QueryBlockstatsRaw::NAME,
            detail,
        })
    }
}

fn map_event(ev: qmp::Event) -> Option<VmEvent> {
    Some(match ev {
        qmp::Event::SHUTDOWN { data, .. } => VmEvent::Shutdown {
            guest: data.guest,
            reason: data.reason.name().to_string(),
        },
        qmp::Event::RESET { data, .. } => VmEvent::Reset { guest: data.guest },
        qmp::Event::STOP { .. } => VmEvent::Stop,
        qmp::Event::RESUME { .. } => VmEvent::Resume,
        qmp::Event::POWERDOWN { .. } => VmEvent::Powerdown,
        _ => return None,
    })
}

/// Pure part of [`Qmp::query_blockstats`].
fn parse_blockstats(v: &serde_json::Value) -> Result<Vec<DiskStats>, String> {
    let list = v.as_array().ok_or("not a list")?;
    let mut out = Vec::with_capacity(list.len());
    for entry in list {
        let name = ["device", "qdev", "node-name"]
            .iter()
            .filter_map(|k| entry.get(*k).and_then(|d| d.as_str()))
            .find(|s| !s.is_empty())
            .unwrap_or_default()
            .to_string();
        let stats = entry.get("stats").ok_or("an entry has no stats")?;
        let n = |k: &str| stats.get(k).and_then(|x| x.as_u64()).unwrap_or(0);
        out.push(DiskStats {
            device: name,
            rd_bytes: n("rd_bytes"),
            wr_bytes: n("wr_bytes"),
            rd_operations: n("rd_operations"),
            wr_operations: n("wr_operations"),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn blockstats_are_reduced() {
        let v = json!([
            {"device": "virtio0", "qdev": "/machine/peripheral-anon/device[0]",
             "stats": {"rd_bytes": 10, "wr_bytes": 20, "rd_operations": 1, "wr_operations": 2,
                       "flush_operations": 0}},
            {"device": "", "qdev": "/q/1", "stats": {"rd_bytes": 5}}
        ]);
        assert_eq!(
            parse_blockstats(&v),
            Ok(vec![
                DiskStats {
                    device: "virtio0".into(),
                    rd_bytes: 10,
                    wr_bytes: 20,
                    rd_operations: 1,
                    wr_operations: 2
                },
                DiskStats {
                    device: "/q/1".into(),
                    rd_bytes: 5,
                    ..Default::default()
                },
            ])
        );
        assert!(parse_blockstats(&json!({})).is_err());
        assert!(parse_blockstats(&json!([{"device": "x"}])).is_err());
    }

    #[test]
    fn events_are_mapped() {
        let parse = |s: &str| -> Option<VmEvent> {
            let ev: qmp::Event = serde_json::from_str(s).expect("event parses");
            map_event(ev)
        };
        let ts = r#""timestamp":{"seconds":1,"microseconds":2}"#;
        let cases = [
            (
                format!(
                    r#"{{"event":"SHUTDOWN","data":{{"guest":true,"reason":"guest-shutdown"}},{ts}}}"#
                ),
                Some(VmEvent::Shutdown {
                    guest: true,
                    reason: "guest-shutdown".into(),
                }),
            ),
            (
                format!(
                    r#"{{"event":"RESET","data":{{"guest":false,"reason":"host-qmp-system-reset"}},{ts}}}"#
                ),
                Some(VmEvent::Reset { guest: false }),
            ),
            (format!(r#"{{"event":"STOP",{ts}}}"#), Some(VmEvent::Stop)),
            (
                format!(r#"{{"event":"RESUME",{ts}}}"#),
                Some(VmEvent::Resume),
            ),
            (
                format!(r#"{{"event":"POWERDOWN",{ts}}}"#),
                Some(VmEvent::Powerdown),
            ),
            (
                format!(
                    r#"{{"event":"RTC_CHANGE","data":{{"offset":1,"qom-path":"/machine/unattached/device[0]"}},{ts}}}"#
                ),
                None,
            ),
        ];
        for (json, want) in cases {
            assert_eq!(parse(&json), want, "{json}");
        }
    }

    #[test]
    fn run_state_names() {
        assert_eq!(RunState::from(qmp::RunState::running), RunState::Running);
        assert_eq!(RunState::from(qmp::RunState::paused), RunState::Paused);
        assert_eq!(RunState::from(qmp::RunState::colo), RunState::Other);
        assert_eq!(
            serde_json::to_string(&RunState::GuestPanicked).expect("serialises"),
            "\"guest-panicked\""
        );
    }
}
