//! The CLI's side of the control socket: one request line out, one reply line back.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Reply, Request};

/// How long the CLI waits for the daemon's answer (a VM list asks every VM over QMP,
/// each with its own deadline).
const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No daemon listens there: no socket file, or one left by a daemon that is gone.
    #[error("no daemon answers on {0}")]
    NotRunning(PathBuf),
    #[error("permission denied on the control socket {0}; run as root")]
    Permission(PathBuf),
    #[error("control socket {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the daemon sent a reply this roost does not understand (is it another version?)")]
    Garbled(#[source] serde_json::Error),
    /// The daemon carried the command out and refused it; the message says why.
    #[error("{0}")]
    Refused(String),
}

/// Sends `req` to the daemon listening on `path`.
pub fn call(path: &Path, req: &Request) -> Result<Reply, ClientError> {
    let io = |source| ClientError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut stream = match UnixStream::connect(path) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Err(ClientError::NotRunning(path.to_path_buf()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Err(ClientError::Permission(path.to_path_buf()))
        }
        Err(e) => return Err(io(e)),
    };
    stream.set_read_timeout(Some(REPLY_TIMEOUT)).map_err(io)?;
    let mut line = serde_json::to_vec(req).map_err(ClientError::Garbled)?;
    line.push(b'\n');
    stream.write_all(&line).map_err(io)?;
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer).map_err(io)?;
    let answer: Result<Reply, String> =
        serde_json::from_str(&answer).map_err(ClientError::Garbled)?;
    answer.map_err(ClientError::Refused)
}
