//! The QEMU guest agent, from the host's side: one command, `guest-set-time`, so that a
//! guest paused while idle has the right time again when it wakes (its clock stood still
//! while QEMU was stopped).
//!
//! The agent runs inside the guest, whose owner is root there: everything that comes back
//! is hostile. roost reads at most [`MAX_READ`] bytes within one deadline, looks only for
//! whether the answer is `return` or `error`, and closes the connection. A guest whose
//! agent is gone, silent or babbling costs one bounded attempt and a log line.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

/// Everything read from the agent in one exchange, at most.
pub const MAX_READ: u64 = 16 * 1024;

/// Why the guest's clock could not be set.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot reach the guest agent's channel")]
    Connect(#[source] std::io::Error),
    #[error("the guest agent's channel failed")]
    Io(#[source] std::io::Error),
    #[error("the guest agent did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the guest agent closed the channel")]
    Closed,
    #[error("the guest agent refused: {0}")]
    Refused(String),
}

/// Sets the guest's clock to `now` through the agent listening behind `socket`.
pub async fn set_time(
    socket: &Path,
    now: SystemTime,
    deadline: Duration,
) -> Result<(), AgentError> {
    let ns = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos().min(i64::MAX as u128) as i64);
    let set = serde_json::json!({"execute": "guest-set-time", "arguments": {"time": ns}});
    tokio::time::timeout(deadline, exchange(socket, &set))
        .await
        .map_err(|_| AgentError::Timeout(deadline))?
}

/// Sets `user`'s password in the guest to the crypt(3) hash `crypted` (the guest never
/// sees the password itself).
pub async fn set_password(
    socket: &Path,
    user: &str,
    crypted: &str,
    deadline: Duration,
) -> Result<(), AgentError> {
    use base64::Engine;
    let set = serde_json::json!({"execute": "guest-set-user-password", "arguments": {
        "username": user,
        "password": base64::engine::general_purpose::STANDARD.encode(crypted),
        "crypted": true,
    }});
    tokio::time::timeout(deadline, exchange(socket, &set))
        .await
        .map_err(|_| AgentError::Timeout(deadline))?
}

/// One command after a `guest-sync`; its answer must be `return`.
async fn exchange(socket: &Path, command: &serde_json::Value) -> Result<(), AgentError> {
    let stream = UnixStream::connect(socket)
        .await
        .map_err(AgentError::Connect)?;
    let (r, mut w) = stream.into_split();
    let mut lines = BufReader::new(r.take(MAX_READ)).lines();
    // An earlier client may have left a half-read answer in the channel: `guest-sync`
    // with a fresh id, and everything before its echo is dropped.
    let id = i64::from(rand::random::<u32>());
    let sync = serde_json::json!({"execute": "guest-sync", "arguments": {"id": id}});
    send(&mut w, &sync).await?;
    while answer(&mut lines)
        .await?
        .get("return")
        .and_then(|r| r.as_i64())
        != Some(id)
    {}
    send(&mut w, command).await?;
    let v = answer(&mut lines).await?;
    if v.get("return").is_some() {
        return Ok(());
    }
    let why = v
        .pointer("/error/desc")
        .and_then(|d| d.as_str())
        .unwrap_or("no answer it could read");
    // The guest wrote this text: keep it short and printable for the log.
    let why: String = why.chars().filter(|c| !c.is_control()).take(200).collect();
    Err(AgentError::Refused(why))
}

/// One command, as one line.
async fn send(
    w: &mut tokio::net::unix::OwnedWriteHalf,
    command: &serde_json::Value,
) -> Result<(), AgentError> {
    w.write_all(format!("{command}\n").as_bytes())
        .await
        .map_err(AgentError::Io)
}

/// The next line from the agent as JSON (`null` when it is not JSON).
async fn answer(
    lines: &mut tokio::io::Lines<BufReader<tokio::io::Take<tokio::net::unix::OwnedReadHalf>>>,
) -> Result<serde_json::Value, AgentError> {
    let line = lines
        .next_line()
        .await
        .map_err(AgentError::Io)?
        .ok_or(AgentError::Closed)?;
    Ok(serde_json::from_str(line.trim()).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::UnixListener;

    /// A fake agent: answers each line with what `answer` makes of it.
    fn agent(
        dir: &Path,
        answer: impl Fn(&serde_json::Value) -> Option<String> + Send + 'static,
    ) -> (
        std::path::PathBuf,
        tokio::task::JoinHandle<Vec<serde_json::Value>>,
    ) {
        let path = dir.join("agent.sock");
        let l = UnixListener::bind(&path).expect("bind");
        let task = tokio::spawn(async move {
            let (s, _) = l.accept().await.expect("accept");
            let (r, mut w) = s.into_split();
            let mut lines = BufReader::new(r).lines();
            let mut seen = Vec::new();
            while let Ok(Some(line)) = lines.next_line().await {
                let v: serde_json::Value = serde_json::from_str(&line).expect("json");
                if let Some(a) = answer(&v) {
                    if w.write_all(a.as_bytes()).await.is_err() {
                        break;
                    }
                }
                seen.push(v);
            }
            seen
        });
        (path, task)
    }

    fn sync_echo(v: &serde_json::Value) -> Option<String> {
        (v["execute"] == "guest-sync")
            .then(|| format!("{{\"return\": {}}}\n", v["arguments"]["id"]))
    }

    #[tokio::test]
    async fn sets_the_time_after_a_sync_that_drops_stale_answers() {
        let dir = tempfile::tempdir().expect("tmp");
        let (path, task) = agent(dir.path(), |v| match v["execute"].as_str() {
            Some("guest-sync") => Some(format!(
                "{{\"return\": {{}}}}\n{{\"return\": 7}}\n{{\"return\": {}}}\n",
                v["arguments"]["id"]
            )),
            Some("guest-set-time") => Some("{\"return\": {}}\n".into()),
            _ => None,
        });
        let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        set_time(&path, now, Duration::from_secs(5))
            .await
            .expect("set");
        let seen = task.await.expect("agent");
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[1]["execute"], "guest-set-time");
        assert_eq!(
            seen[1]["arguments"]["time"].as_i64(),
            Some(1_800_000_000 * 1_000_000_000)
        );
    }

    #[tokio::test]
    async fn a_password_is_sent_as_its_crypt_hash_only() {
        use base64::Engine;
        let dir = tempfile::tempdir().expect("tmp");
        let (path, task) = agent(dir.path(), |v| {
            sync_echo(v).or_else(|| Some("{\"return\": {}}\n".into()))
        });
        let hash = "$6$salt$abcdef";
        set_password(&path, "alice", hash, Duration::from_secs(5))
            .await
            .expect("set");
        let seen = task.await.expect("agent");
        let args = &seen[1]["arguments"];
        assert_eq!(seen[1]["execute"], "guest-set-user-password");
        assert_eq!(args["username"], "alice");
        assert_eq!(args["crypted"], true);
        let sent = base64::engine::general_purpose::STANDARD
            .decode(args["password"].as_str().expect("password"))
            .expect("base64");
        assert_eq!(sent, hash.as_bytes());
    }

    #[tokio::test]
    async fn a_refusal_is_reported_without_the_guests_control_characters() {
        let dir = tempfile::tempdir().expect("tmp");
        let (path, _task) = agent(dir.path(), |v| {
            sync_echo(v).or_else(|| {
                Some("{\"error\": {\"class\": \"x\", \"desc\": \"no\\u001b[31m clock\"}}\n".into())
            })
        });
        match set_time(&path, SystemTime::now(), Duration::from_secs(5)).await {
            Err(AgentError::Refused(why)) => assert_eq!(why, "no[31m clock"),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_agent_costs_one_deadline() {
        let dir = tempfile::tempdir().expect("tmp");
        let (path, _task) = agent(dir.path(), |_| None);
        let r = set_time(&path, SystemTime::now(), Duration::from_secs(3)).await;
        assert!(matches!(r, Err(AgentError::Timeout(_))), "{r:?}");
    }

    #[tokio::test]
    async fn a_babbling_agent_is_cut_off_after_the_read_limit() {
        let dir = tempfile::tempdir().expect("tmp");
        // Endless lines that never echo the sync id.
        let path = dir.path().join("agent.sock");
        let l = UnixListener::bind(&path).expect("bind");
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.expect("accept");
            let line = format!("{{\"return\": \"{}\"}}\n", "x".repeat(1000));
            while s.write_all(line.as_bytes()).await.is_ok() {}
        });
        let r = set_time(&path, SystemTime::now(), Duration::from_secs(30)).await;
        assert!(matches!(r, Err(AgentError::Closed)), "{r:?}");
    }

    #[tokio::test]
    async fn no_channel_is_an_error() {
        let dir = tempfile::tempdir().expect("tmp");
        let r = set_time(
            &dir.path().join("none.sock"),
            SystemTime::now(),
            Duration::from_secs(1),
        )
        .await;
        assert!(matches!(r, Err(AgentError::Connect(_))), "{r:?}");
    }
}
