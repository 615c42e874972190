//! Readiness probes: does a guest answer HTTP on :80 and SSH on :22?

use std::net::Ipv4Addr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Connecting gives up after this: an unanswered SYN is retried by the next round rather
/// than by TCP's one-second retransmission.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Once connected, a busy guest gets this long to answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// One round: each service is probed only while not yet `known` to answer, both at once,
/// so a slow SSH start never delays noticing the web server (and the other way round).
pub(super) async fn round(ip: Ipv4Addr, known: (bool, bool)) -> (bool, bool) {
    tokio::join!(async { known.0 || http(ip).await }, async {
        known.1 || ssh(ip).await
    })
}

async fn connect(ip: Ipv4Addr, port: u16) -> Option<TcpStream> {
    tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((ip, port)))
        .await
        .ok()?
        .ok()
}

/// True when something answers HTTP on ip:80.
async fn http(ip: Ipv4Addr) -> bool {
    let Some(mut s) = connect(ip, 80).await else {
        return false;
    };
    let answer = async {
        s.write_all(b"HEAD / HTTP/1.0\r\nHost: roost-probe\r\n\r\n")
            .await
            .ok()?;
        let mut buf = [0u8; 12];
        s.read_exact(&mut buf).await.ok()?;
        buf.starts_with(b"HTTP/").then_some(())
    };
    matches!(
        tokio::time::timeout(ANSWER_TIMEOUT, answer).await,
        Ok(Some(()))
    )
}

/// True when an SSH server greets on ip:22.
async fn ssh(ip: Ipv4Addr) -> bool {
    let Some(mut s) = connect(ip, 22).await else {
        return false;
    };
    let mut buf = [0u8; 4];
    matches!(
        tokio::time::timeout(ANSWER_TIMEOUT, s.read_exact(&mut buf)).await,
        Ok(Ok(_)) if &buf == b"SSH-"
    )
}
