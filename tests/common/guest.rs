//! What the tests with real guests share: logging in over the API, running a command in a
//! guest over SSH, and finding QEMUs and taps a test may have left.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::json;

/// Logs `user` in through the API on the hosting daemon's address; the access token.
pub fn login(user: &str, pw: &str) -> String {
    let (s, v) = super::http(
        "POST",
        "/api/v1/auth/login",
        None,
        Some(&json!({"username": user, "password": pw})),
    );
    assert_eq!(s, 200, "{v}");
    v["access_token"].as_str().expect("token").to_owned()
}

/// `ssh -p port user@127.0.0.1 cmd` with `key` only, no host-key prompts and a 10 s
/// connect timeout.
pub fn ssh(port: u16, user: &str, key: &Path, cmd: &str) -> Output {
    Command::new("ssh")
        .args(["-p", &port.to_string(), "-i"])
        .arg(key)
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=10",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "IdentitiesOnly=yes",
        ])
        .arg(format!("{user}@127.0.0.1"))
        .arg(cmd)
        .stdin(Stdio::null())
        .output()
        .expect("ssh")
}

/// The links of roost's tap shape (`rt…`) in this network namespace.
pub fn roost_taps() -> Vec<String> {
    let out = Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .expect("ip");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_owned())
        .filter(|n| n.starts_with("rt"))
        .collect()
}

/// QEMU processes whose command line names a path under `dir`.
pub fn qemus_under(dir: &Path) -> usize {
    let out = Command::new("pgrep")
        .args(["-af", "qemu-system"])
        .output()
        .expect("pgrep");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&dir.display().to_string()))
        .count()
}
