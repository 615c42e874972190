//! The operator's CLI against the real binary: the same commands with the daemon running
//! (through its control socket) and stopped (directly on the store), tables and JSON,
//! errors that name their cause once, and the socket's access checks.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::process::{Command, Output, Stdio};

use common::daemon::*;
use reqwest::StatusCode;
use serde_json::Value;

/// Runs `roost ARGS --config <the daemon's config>` with `stdin` fed in.
fn roost(d: &Daemon, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(bin())
        .args(args)
        .arg("--config")
        .arg(&d.config)
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn roost");
    let mut input = child.stdin.take().expect("stdin");
    // The CLI may exit before reading (a refused name): a broken pipe is not a failure.
    let _ = input.write_all(stdin.as_bytes());
    drop(input);
    child.wait_with_output().expect("wait")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The command failed with exit code 1 and one line on stderr; returns that line.
fn refused(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr).trim_end().to_owned();
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("roost: "), "{err}");
    err
}

fn json(out: &Output) -> Value {
    serde_json::from_str(&ok(out)).expect("--json prints JSON")
}

#[test]
fn the_cli_works_the_same_with_the_daemon_running_or_stopped() {
    let mut d = Daemon::start();
    // Stopped hard: the control socket file stays behind, and nothing answers on it.
    d.kill9();
    assert!(d.state_dir().join("control.sock").exists());

    // The README's first step, on a stopped daemon.
    let out = ok(&roost(
        &d,
        &["user", "add", "ops", "--admin"],
        "ops password\n",
    ));
    assert!(
        out.contains("username: ops") && out.contains("role:     admin"),
        "{out}"
    );

    // A reserved name: refused before the password is asked for, the cause said once,
    // and the reserved names listed.
    let err = refused(&roost(&d, &["user", "add", "admin", "--admin"], ""));
    assert_eq!(err.matches("reserved name").count(), 1, "{err}");
    assert!(err.contains("admin, administrator, api"), "{err}");
    let err = refused(&roost(&d, &["user", "add", "Bad Name"], "password123\n"));
    assert!(err.contains("username may only contain"), "{err}");
    let err = refused(&roost(&d, &["user", "add", "shorty"], "short\n"));
    assert_eq!(
        err,
        "roost: cannot add user \"shorty\": password must be at least 8 characters long"
    );

    let offline_users = json(&roost(&d, &["user", "list", "--json"], ""));
    assert_eq!(offline_users[0]["username"], "ops");
    let status = ok(&roost(&d, &["status"], ""));
    assert!(
        status.contains("daemon:") && status.contains("not running"),
        "{status}"
    );
    assert!(status.contains("1 (1 admin, 0 disabled)"), "{status}");
    let list = ok(&roost(&d, &["vm", "list"], ""));
    assert_eq!(list.trim(), "SLUG  OWNER  STATE  IP  SSH  PID  UPTIME  ID");

    // Now with the daemon serving: the same commands go through its socket.
    d.spawn();
    let sock = d.state_dir().join("control.sock");
    let mode = std::fs::metadata(&sock)
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "control socket mode {mode:o}");
    assert_eq!(
        json(&roost(&d, &["user", "list", "--json"], "")),
        offline_users,
        "the same answer from the daemon as from the store"
    );
    let status = json(&roost(&d, &["status", "--json"], ""));
    assert_eq!(
        status["daemon"]["http_listen"],
        format!("127.0.0.1:{}", d.port)
    );
    let status = ok(&roost(&d, &["status"], ""));
    assert!(status.contains("running (pid"), "{status}");

    // An administrator added while the daemon serves logs in at once.
    ok(&roost(
        &d,
        &["user", "add", "ops2", "--admin"],
        "second password\n",
    ));
    let admin = token(&d, "ops2", "second password");
    let (s, users) = get(&d, "/api/v1/admin/users", Some(&admin));
    assert_eq!(s, StatusCode::OK, "{users}");
    assert_eq!(users.as_array().map(Vec::len), Some(2));

    let (s, _) = register(&d, "alice", "alice password");
    assert_eq!(s, StatusCode::CREATED);
    let alice = token(&d, "alice", "alice password");
    let table = ok(&roost(&d, &["user", "list"], ""));
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("USERNAME  ROLE   STATUS"), "{table}");
    assert!(lines[1].starts_with("alice     user   active"), "{table}");
    assert_eq!(lines.len(), 4, "{table}");

    // set-admin takes effect on the next request, whatever the token says.
    ok(&roost(&d, &["user", "set-admin", "alice"], ""));
    assert_eq!(
        get(&d, "/api/v1/admin/users", Some(&alice)).0,
        StatusCode::OK
    );
    ok(&roost(&d, &["user", "set-admin", "alice", "--off"], ""));
    assert_eq!(
        get(&d, "/api/v1/admin/users", Some(&alice)).0,
        StatusCode::FORBIDDEN
    );

    // disable ends the account's tokens and its logins; enable lets it log in again,
    // but the tokens from before stay revoked.
    let out = ok(&roost(&d, &["user", "disable", "alice"], ""));
    assert!(out.contains("disabled since"), "{out}");
    let (s, v) = get(&d, "/api/v1/auth/me", Some(&alice));
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("account_disabled"))
    );
    let (s, v) = login(&d, "alice", "alice password");
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::FORBIDDEN, Some("account_disabled"))
    );
    let (s, v) = login(&d, "alice", "wrong password");
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_credentials")),
        "a wrong password does not learn that the account is disabled"
    );
    ok(&roost(&d, &["user", "enable", "alice"], ""));
    let (s, v) = get(&d, "/api/v1/auth/me", Some(&alice));
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("token_revoked"))
    );
    let fresh = token(&d, "alice", "alice password");
    assert_eq!(get(&d, "/api/v1/auth/me", Some(&fresh)).0, StatusCode::OK);

    // Errors name the cause once and exit 1, through the socket as well.
    assert_eq!(
        refused(&roost(&d, &["user", "disable", "bob"], "")),
        "roost: no user named \"bob\""
    );
    assert_eq!(
        refused(&roost(&d, &["user", "add", "alice"], "alice password\n")),
        "roost: cannot add user \"alice\": username is already taken"
    );
    assert_eq!(
        refused(&roost(&d, &["vm", "show", "nope"], "")),
        "roost: no hosting \"nope\" (give its id or its slug)"
    );

    // Every operator change is audited as the CLI's.
    let (_, audit) = get(&d, "/api/v1/admin/audit", Some(&admin));
    let actions: Vec<(&str, &str)> = audit
        .as_array()
        .expect("audit")
        .iter()
        .filter(|e| e["actor"] == "cli")
        .map(|e| {
            (
                e["action"].as_str().unwrap_or(""),
                e["target"].as_str().unwrap_or(""),
            )
        })
        .collect();
    for want in [
        ("user.create", "ops"),
        ("user.create", "ops2"),
        ("user.set_role", "alice"),
        ("user.disable", "alice"),
        ("user.enable", "alice"),
    ] {
        assert!(actions.contains(&want), "{want:?} in {actions:?}");
    }

    // A clean stop removes the socket; the next command runs on the store again.
    let mut child = d.child.take().expect("daemon");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    assert!(child.wait().expect("wait").success());
    assert!(!sock.exists(), "a clean stop removes the control socket");
    let users = json(&roost(&d, &["user", "list", "--json"], ""));
    assert_eq!(users.as_array().map(Vec::len), Some(3));
    assert!(ok(&roost(&d, &["status"], "")).contains("not running"));
}

/// An operator's password reset (a user who lost theirs): the old password and every
/// token of the account stop working; with the daemon running or not.
#[test]
fn user_passwd_and_user_delete() {
    let mut d = Daemon::start();
    assert_eq!(
        register(&d, "alice", "alice password").0,
        StatusCode::CREATED
    );
    let before = token(&d, "alice", "alice password");
    let out = ok(&roost(
        &d,
        &["user", "passwd", "alice"],
        "reset password 1\n",
    ));
    assert!(out.contains("username: alice"), "{out}");
    assert_eq!(
        get(&d, "/api/v1/auth/me", Some(&before)).0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        login(&d, "alice", "alice password").0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(login(&d, "alice", "reset password 1").0, StatusCode::OK);
    let err = refused(&roost(&d, &["user", "passwd", "alice"], "short\n"));
    assert!(err.contains("at least 8 characters"), "{err}");
    let err = refused(&roost(&d, &["user", "passwd", "nobody"], "long enough 1\n"));
    assert!(err.contains("no user named \"nobody\""), "{err}");
    // On the stopped store too.
    d.kill9();
    assert!(refused(&roost(&d, &["user", "delete", "nobody"], "")).contains("no user named"));
    ok(&roost(
        &d,
        &["user", "passwd", "alice"],
        "reset password 2\n",
    ));
    d.spawn();
    assert_eq!(login(&d, "alice", "reset password 2").0, StatusCode::OK);
    // The operator deletes the account: its logins end with it.
    let out = ok(&roost(&d, &["user", "delete", "alice"], ""));
    assert!(out.contains("username: alice"), "{out}");
    assert_eq!(
        login(&d, "alice", "reset password 2").0,
        StatusCode::UNAUTHORIZED
    );
}

/// `roost backup` while the daemon serves: a consistent copy that never replaces a file,
/// and that restores every account it holds (and none made after it) when put in place.
#[test]
fn a_backup_taken_while_the_daemon_serves_restores_its_accounts() {
    let mut d = Daemon::start();
    let (s, _) = register(&d, "alice", "alice password");
    assert_eq!(s, StatusCode::CREATED);
    let out = tempfile::tempdir().expect("tmp");
    let file = out.path().join("roost-backup.redb");
    let path = file.to_str().expect("utf-8");

    let b = json(&roost(&d, &["backup", path, "--json"], ""));
    assert_eq!(b["rows"]["users"], 1, "{b}");
    assert_eq!(b["path"], path);
    let mode = std::fs::metadata(&file)
        .expect("backup")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "backup mode {mode:o}");
    let err = refused(&roost(&d, &["backup", path], ""));
    assert!(err.contains("exists"), "{err}");
    // A relative path is the operator's working directory's, not the daemon's.
    let here = Command::new(bin())
        .args(["backup", "relative.redb", "--config"])
        .arg(&d.config)
        .current_dir(out.path())
        .output()
        .expect("roost backup");
    assert!(here.status.success(), "{here:?}");
    assert!(out.path().join("relative.redb").exists());

    // Made after the backup: not in it.
    let (s, _) = register(&d, "bob", "bob password");
    assert_eq!(s, StatusCode::CREATED);
    d.kill9();
    // With the daemon stopped, the CLI backs up the store itself.
    let offline = out.path().join("offline.redb");
    let b = json(&roost(
        &d,
        &["backup", offline.to_str().expect("utf-8"), "--json"],
        "",
    ));
    assert_eq!(b["rows"]["users"], 2, "{b}");

    std::fs::copy(&file, d.state_dir().join("roost.redb")).expect("restore");
    d.spawn();
    assert_eq!(login(&d, "alice", "alice password").0, StatusCode::OK);
    assert_eq!(
        login(&d, "bob", "bob password").0,
        StatusCode::UNAUTHORIZED,
        "bob came after the backup"
    );
}

#[test]
fn the_control_socket_answers_bad_requests_with_an_error() {
    let d = Daemon::start();
    let sock = d.state_dir().join("control.sock");
    let ask = |bytes: &[u8]| {
        let mut s = UnixStream::connect(&sock).expect("connect");
        s.write_all(bytes).expect("write");
        s.shutdown(std::net::Shutdown::Write).expect("shutdown");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read");
        serde_json::from_str::<Value>(&out).expect("a JSON reply")
    };
    let v = ask(b"{\"op\":\"drop_tables\"}\n");
    assert!(
        v["Err"]
            .as_str()
            .is_some_and(|e| e.starts_with("malformed request")),
        "{v}"
    );
    // A request line that never ends is cut at 64 KiB and refused.
    let v = ask(&vec![b'x'; 100 * 1024]);
    assert!(
        v["Err"]
            .as_str()
            .is_some_and(|e| e.contains("one JSON line")),
        "{v}"
    );
    let v = ask(b"{\"op\":\"user_list\"}\n");
    assert_eq!(v["Ok"]["kind"], "users", "{v}");
}

/// Only root (or the daemon's own user) may use the socket: checked by the peer's
/// credentials even when the file modes would let another user in.
#[test]
fn the_control_socket_refuses_other_users() {
    if !common::privileged("the_control_socket_refuses_other_users") {
        return;
    }
    assert!(nix::unistd::geteuid().is_root(), "needs root");
    let d = Daemon::start();
    let dir = d.config.parent().expect("dir").to_path_buf();
    let as_nobody = || {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", bin()])
            .args(["user", "list", "--config"])
            .arg(&d.config)
            .env_remove("RUST_LOG")
            .output()
            .expect("setpriv")
    };
    // The files alone keep others out: the state directory is 0700.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::set_permissions(&d.config, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let err = refused(&as_nobody());
    assert!(err.contains("permission denied"), "{err}");
    // Open the way on purpose: the credentials check still refuses.
    let state = d.state_dir();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::set_permissions(
        state.join("control.sock"),
        std::fs::Permissions::from_mode(0o666),
    )
    .expect("chmod");
    let err = refused(&as_nobody());
    assert_eq!(err, "roost: permission denied: only root may control roost");
}
