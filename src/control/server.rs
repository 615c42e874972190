//! The daemon's control socket: a Unix stream socket in the state directory (mode 0600,
//! in the 0711 state directory, which nobody but root lists) that answers one JSON request
//! line with one JSON reply line.
//! Only root, or the user the daemon runs as, may talk to it: the peer's credentials
//! (`SO_PEERCRED`) are checked on every connection, on top of the file modes.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tracing::Instrument;

use super::{Ops, Reply, Request};

/// Longest request line accepted (a user add with a 1 KiB password is far below it).
const MAX_REQUEST: u64 = 64 * 1024;
/// How long a client may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Commands carried out at once; more connections are told to retry.
const MAX_CONCURRENT: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot create the control socket {path}")]
    Bind {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The bound socket; removes its file when dropped.
pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Binds `path` with mode 0600. A file left there by an earlier daemon is replaced: the
/// store's lock (held by the caller) proves no other daemon uses this state directory.
/// The socket is created under a temporary name and renamed into place, so it is never
/// reachable with looser permissions.
pub fn bind(path: &Path) -> Result<ControlSocket, ServerError> {
    let err = |source| ServerError::Bind {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp).map_err(err)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)?;
    Ok(ControlSocket {
        listener,
        path: path.to_path_buf(),
    })
}

/// Serves commands until the task is dropped.
pub async fn serve(sock: ControlSocket, ops: Arc<Ops>) {
    let slots = Arc::new(Semaphore::new(MAX_CONCURRENT));
    let me = nix::unistd::geteuid().as_raw();
    tracing::info!(path = %sock.path.display(), "control socket ready");
    loop {
        let (stream, _) = match sock.listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "control socket accept failed");
                // EMFILE and the like: give the system a moment instead of spinning.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let ops = ops.clone();
        let slots = slots.clone();
        tokio::spawn(async move {
            if let Err(e) = handle(stream, &ops, &slots, me).await {
                tracing::debug!(error = %e, "control connection ended");
            }
        });
    }
}

async fn handle(
    mut stream: UnixStream,
    ops: &Ops,
    slots: &Semaphore,
    me: u32,
) -> std::io::Result<()> {
    let peer = stream.peer_cred()?;
    if !allowed(peer.uid(), me) {
        tracing::warn!(uid = peer.uid(), pid = ?peer.pid(), "control socket: peer refused");
        return reply(
            &mut stream,
            &Err("permission denied: only root may control roost".into()),
        )
        .await;
    }
    let Ok(_slot) = slots.try_acquire() else {
        return reply(
            &mut stream,
            &Err("the daemon is busy with other commands; try again".into()),
        )
        .await;
    };
    let mut line = String::new();
    let read = {
        let (r, _) = stream.split();
        let mut r = BufReader::new(r.take(MAX_REQUEST));
        tokio::time::timeout(READ_TIMEOUT, r.read_line(&mut line)).await
    };
    let answer = match read {
        Err(_) => Err("no request within 10 s".to_owned()),
        Ok(Err(e)) => Err(format!("cannot read the request: {e}")),
        Ok(Ok(_)) if !line.ends_with('\n') => {
            Err("the request must be one JSON line of at most 64 KiB".to_owned())
        }
        Ok(Ok(_)) => match serde_json::from_str::<Request>(&line) {
            Err(e) => Err(format!("malformed request: {e}")),
            Ok(req) => {
                let span = tracing::info_span!("control", op = op_name(&req), uid = peer.uid());
                async {
                    tracing::info!("operator command");
                    ops.exec(req).await.map_err(|e| e.to_string())
                }
                .instrument(span)
                .await
            }
        },
    };
    reply(&mut stream, &answer).await
}

/// Root, or the user the daemon itself runs as (its files are theirs anyway).
fn allowed(uid: u32, daemon_uid: u32) -> bool {
    uid == 0 || uid == daemon_uid
}

fn op_name(req: &Request) -> &'static str {
    match req {
        Request::UserAdd { .. } => "user_add",
        Request::UserList => "user_list",
        Request::UserSetAdmin { .. } => "user_set_admin",
        Request::UserDisable { .. } => "user_disable",
        Request::UserEnable { .. } => "user_enable",
        Request::UserPassword { .. } => "user_password",
        Request::UserDelete { .. } => "user_delete",
        Request::VmList => "vm_list",
        Request::VmShow { .. } => "vm_show",
        Request::Status => "status",
        Request::Backup { .. } => "backup",
    }
}

async fn reply(stream: &mut UnixStream, answer: &Result<Reply, String>) -> std::io::Result<()> {
    let mut out = serde_json::to_vec(answer)
        .unwrap_or_else(|_| b"{\"Err\":\"cannot encode the reply\"}".to_vec());
    out.push(b'\n');
    stream.write_all(&out).await?;
    stream.shutdown().await?;
    // Read what the client sent beyond its request (or before it was refused), bounded:
    // closing a Unix socket with unread input resets the connection, and the client would
    // see that instead of the reply.
    let mut sink = [0u8; 8192];
    let mut left = 4 * MAX_REQUEST as usize;
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while left > 0 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_root_or_the_daemons_user() {
        assert!(allowed(0, 0));
        assert!(allowed(0, 1000));
        assert!(allowed(1000, 1000));
        assert!(!allowed(1000, 0));
        assert!(!allowed(1001, 1000));
    }
}
