//! The one error type of the `vm` module.

use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong while building, starting, watching or stopping a VM.
///
/// Messages are short and do not repeat their source; the chain is logged by the caller.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("reading image manifest {path}")]
    ManifestRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parsing image manifest {path}")]
    ManifestParse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("image {dir}")]
    ManifestInvalid {
        dir: PathBuf,
        #[source]
        source: super::image::ManifestError,
    },

    #[error("starting qemu")]
    Spawn(#[source] std::io::Error),
    #[error("qemu exited during start-up ({status}); see {log}")]
    ExitedEarly { status: String, log: PathBuf },
    #[error("qemu's QMP socket {path} did not accept within {after:?}")]
    QmpSocketTimeout { path: PathBuf, after: Duration },

    #[error("connecting to QMP socket {path}")]
    QmpConnect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("QMP command {command} got no answer within {after:?}")]
    QmpTimeout {
        command: &'static str,
        after: Duration,
    },
    #[error("QMP connection abandoned after a timeout; not sending {command}")]
    QmpAbandoned { command: &'static str },
    #[error("QMP command {command} failed")]
    QmpCommand {
        command: &'static str,
        #[source]
        source: qapi::Error,
    },
    #[error("QMP connection lost during {command}")]
    QmpIo {
        command: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("unexpected QMP answer to {command}: {detail}")]
    QmpAnswer {
        command: &'static str,
        detail: String,
    },

    #[error("reading pidfile {path}")]
    Pidfile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("pidfd for pid {pid}")]
    Pidfd {
        pid: i32,
        #[source]
        source: std::io::Error,
    },
    #[error("signalling pid {pid}")]
    Signal {
        pid: i32,
        #[source]
        source: std::io::Error,
    },

    #[error("running qemu-img")]
    QemuImg(#[source] std::io::Error),
    #[error("qemu-img failed ({status}): {stderr}")]
    QemuImgFailed { status: String, stderr: String },
    #[error("overlay {0} already exists")]
    OverlayExists(PathBuf),
    #[error("not enough disk space in {dir}: {available} bytes free, {needed} needed plus {reserve} reserve")]
    DiskFull {
        dir: PathBuf,
        needed: u64,
        available: u64,
        reserve: u64,
    },
    #[error("statvfs {dir}")]
    Statvfs {
        dir: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}
