//! The README, run as a new user would: every command of its `sh` blocks, in order, in one
//! shell, inside a network and mount namespace this test creates (the daemon's default
//! `/var/lib/roost` is a scratch directory there). `scripts/run.sh` really installs, builds
//! and serves; the commands after it create a user and a real VM, reach its site and log
//! into it over SSH. A README example that stops working fails this test.

mod common;

use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The commands of each ```` ```sh ```` block (a command continued with `\` spans its
/// lines, as the shell reads it); lines that are only comments or blank are dropped.
fn sh_blocks(markdown: &str) -> Vec<Vec<String>> {
    let mut blocks = Vec::new();
    let mut current: Option<Vec<String>> = None;
    let mut pending = String::new();
    for line in markdown.lines() {
        match &mut current {
            None if line.trim_start() == "```sh" => current = Some(Vec::new()),
            None => {}
            Some(cmds) if line.trim_start() == "```" => {
                assert!(
                    pending.is_empty(),
                    "a sh block ends inside a continued command"
                );
                blocks.push(std::mem::take(cmds));
                current = None;
            }
            Some(cmds) => {
                if line.ends_with('\\') {
                    pending.push_str(line);
                    pending.push('\n');
                    continue;
                }
                pending.push_str(line);
                let cmd = std::mem::take(&mut pending);
                let t = cmd.trim();
                if !t.is_empty() && !t.starts_with('#') {
                    cmds.push(cmd);
                }
            }
        }
    }
    assert!(current.is_none(), "a sh block is not closed");
    blocks
}

/// The command without its trailing comment, for recognising the two set-up scripts.
fn bare(cmd: &str) -> &str {
    cmd.split(" #").next().unwrap_or(cmd).trim()
}

#[test]
fn sh_blocks_are_parsed_as_commands() {
    let md = "text\n```sh\na one   # c\n# only a comment\n\nb \\\n  two\n```\n```toml\nx = 1\n```\n```sh\nc\n```\n";
    assert_eq!(
        sh_blocks(md),
        vec![
            vec!["a one   # c".to_owned(), "b \\\n  two".to_owned()],
            vec!["c".to_owned()]
        ]
    );
    assert_eq!(bare("scripts/run.sh     # install"), "scripts/run.sh");
    // The README starts with the two set-up commands, then uses the service.
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README.md");
    let blocks = sh_blocks(&readme);
    let first: Vec<&str> = blocks[0].iter().map(|c| bare(c)).collect();
    assert_eq!(first, ["scripts/run.sh", "scripts/test.sh"]);
    assert!(
        blocks.len() >= 2,
        "a block of commands that use the service"
    );
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The password the README's `roost user add` reads from stdin.
const OPS_PASSWORD: &str = "ops password 1";

/// Writes the script that runs inside the namespaces.
fn driver(blocks: &[Vec<String>], out: &Path, work: &Path, state: &Path) -> String {
    let mut s = String::new();
    let q = |p: &Path| format!("'{}'", p.display());
    let _ = writeln!(
        s,
        "set -u\nOUT={out}\nip link set lo up\nmount --bind {state} /var/lib/roost\nRUN=\n\
         # This namespace has no network: anything that would need to download fails at once.\n\
         export ROOST_APT_OFFLINE=1 CARGO_NET_OFFLINE=true\n",
        out = q(out),
        state = q(state)
    );
    // Ends the daemon (VMs were deleted through the API before) whatever happened.
    s.push_str(
        "stop_daemon() { [ -n \"$RUN\" ] && kill -TERM \"$RUN\" 2>/dev/null && wait \"$RUN\"; RUN=; }\n\
         trap stop_daemon EXIT\ntrap 'exit 1' TERM INT\n",
    );
    let mut n = 0;
    let mut step = |s: &mut String, text: &str| {
        n += 1;
        let _ = writeln!(
            s,
            "printf '%s' {quoted} > \"$OUT/{n}.cmd\"\n{{\n{text}\n}} > \"$OUT/{n}.out\" 2>&1 < \"$OUT/stdin\"\nrc=$?; echo $rc > \"$OUT/{n}.rc\"; [ $rc = 0 ] || exit 1",
            quoted = shell_quote(text),
        );
    };
    for (i, block) in blocks.iter().enumerate() {
        // The set-up block runs in the checkout; the rest where a user would be, with a
        // home of their own (ssh's known_hosts).
        if i == 0 {
            let _ = writeln!(s, "cd {}", q(&repo()));
        } else if i == 1 {
            // ssh finds ~/.ssh through the password database, not $HOME: the user's
            // known_hosts must be a fresh one here too (a new VM has a new host key).
            let _ = writeln!(
                s,
                "cd {w} && export HOME={w}/home && mkdir -p -m 0700 \"$HOME/.ssh\" && \
                 mount --bind \"$HOME/.ssh\" \"$(getent passwd \"$(id -u)\" | cut -d: -f6)/.ssh\"",
                w = q(work)
            );
        }
        for cmd in block {
            match bare(cmd) {
                "scripts/run.sh" => {
                    // It serves in the foreground: start it, then wait until it answers (or
                    // ends, which is a failure).
                    step(
                        &mut s,
                        &format!(
                            "{} > \"$OUT/run.log\" 2>&1 &\nRUN=$!\n\
                             until curl -sf -m 2 localhost/healthz; do\n\
                             kill -0 $RUN 2>/dev/null || {{ echo 'scripts/run.sh ended'; tail -n 40 \"$OUT/run.log\"; exit 1; }}\n\
                             sleep 1\ndone",
                            bare(cmd)
                        ),
                    );
                }
                "scripts/test.sh" => {
                    // This test is part of scripts/test.sh: running it again here would
                    // recurse. That it runs is what the CI run of scripts/test.sh shows.
                    let covered = std::env::var("ROOST_UNDER_TEST_SH").as_deref() == Ok("1");
                    step(
                        &mut s,
                        &format!(
                            "echo '{}'",
                            if covered {
                                "covered: this test runs inside scripts/test.sh"
                            } else {
                                "not run: only scripts/test.sh itself runs scripts/test.sh"
                            }
                        ),
                    );
                }
                _ => step(&mut s, cmd),
            }
        }
    }
    // Beyond the README: the administrator it created logs in over the API at once and
    // sees the running VM; the CLI shows it running with its QEMU; then everything the
    // README made is removed through the API.
    let checks = [
        format!(
            "ADMIN=$(curl -sf -X POST localhost/api/v1/auth/login -H 'content-type: application/json' \
             -d '{{\"username\":\"ops\",\"password\":\"{OPS_PASSWORD}\"}}' | jq -r .access_token)\n\
             curl -sf localhost/api/v1/admin/vms -H \"authorization: Bearer $ADMIN\" \
             | jq -e '.[] | select(.slug == \"alice\" and .state == \"running\")'"
        ),
        "roost vm list --json | jq -e '.[] | select(.slug == \"alice\" and .state == \"running\" and .pid != null)'".to_owned(),
        "ID=$(curl -sf localhost/api/v1/host -H \"authorization: Bearer $TOKEN\" | jq -r .id)\n\
         curl -sf -X DELETE \"localhost/api/v1/host/$ID\" -H \"authorization: Bearer $TOKEN\"\n\
         for i in $(seq 300); do\n\
         [ \"$(curl -s -o /dev/null -w '%{http_code}' localhost/api/v1/host -H \"authorization: Bearer $TOKEN\")\" = 404 ] && break\n\
         sleep 1\ndone\n\
         roost vm list --json | jq -e 'length == 0'"
            .to_owned(),
    ];
    for c in &checks {
        step(&mut s, c);
    }
    s.push_str("stop_daemon\necho done > \"$OUT/finished\"\n");
    s
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Every recorded step: command, exit code, output.
fn transcript(out: &Path) -> (String, Vec<(String, Option<i32>, String)>) {
    let mut steps = Vec::new();
    for n in 1.. {
        let Ok(cmd) = std::fs::read_to_string(out.join(format!("{n}.cmd"))) else {
            break;
        };
        let rc = std::fs::read_to_string(out.join(format!("{n}.rc")))
            .ok()
            .and_then(|r| r.trim().parse().ok());
        let output = std::fs::read_to_string(out.join(format!("{n}.out"))).unwrap_or_default();
        steps.push((cmd, rc, output));
    }
    let mut text = String::new();
    for (cmd, rc, output) in &steps {
        let tail: Vec<&str> = output.lines().rev().take(30).collect();
        let _ = writeln!(text, "$ {cmd}\n[exit {rc:?}]");
        for l in tail.iter().rev() {
            let _ = writeln!(text, "  {l}");
        }
    }
    (text, steps)
}

/// QEMUs started from the scratch state directory (their pidfiles live there).
fn kill_leftover_qemus(state: &Path) -> usize {
    let mut killed = 0;
    for e in std::fs::read_dir(state.join("vms"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let Ok(pid) = std::fs::read_to_string(e.path().join("qemu.pid")) else {
            continue;
        };
        let Ok(pid) = pid.trim().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains("qemu-system") {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            killed += 1;
        }
    }
    killed
}

#[test]
fn readme_commands_work_as_written() {
    if !common::privileged("readme_commands_work_as_written") {
        return;
    }
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README.md");
    let blocks = sh_blocks(&readme);
    let tmp = tempfile::tempdir().expect("tmp");
    let (out, work, state) = (
        tmp.path().join("out"),
        tmp.path().join("work"),
        tmp.path().join("state"),
    );
    for d in [&out, &work, &work.join("home"), &state] {
        std::fs::create_dir_all(d).expect("mkdir");
    }
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    std::fs::write(out.join("stdin"), format!("{OPS_PASSWORD}\n")).expect("stdin");
    // The mount point of the scratch state directory (empty on a machine without roost).
    std::fs::create_dir_all("/var/lib/roost").expect("mkdir /var/lib/roost");
    // And that of a fresh ~/.ssh (removed again below when this test made it).
    let ssh_dir = PathBuf::from("/root/.ssh");
    let made_ssh_dir = !ssh_dir.exists();
    if made_ssh_dir {
        std::fs::create_dir(&ssh_dir).expect("mkdir /root/.ssh");
        std::fs::set_permissions(&ssh_dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    }
    let script = out.join("driver.sh");
    std::fs::write(&script, driver(&blocks, &out, &work, &state)).expect("driver");

    // One deadline for the whole session: a fresh checkout builds roost in release mode
    // (minutes) and boots a VM under TCG.
    let status = Command::new("timeout")
        .args(["--kill-after=10", "2700", "unshare", "--net", "--mount"])
        .args(["--propagation", "private", "--kill-child", "bash"])
        .arg(&script)
        .status()
        .expect("unshare");
    let leftovers = kill_leftover_qemus(&state);
    if made_ssh_dir {
        let _ = std::fs::remove_dir(&ssh_dir);
    }
    let (text, steps) = transcript(&out);
    let run_log = std::fs::read_to_string(out.join("run.log")).unwrap_or_default();
    let run_tail: Vec<&str> = run_log.lines().rev().take(40).collect();
    let context = format!(
        "{text}\n--- scripts/run.sh (last lines) ---\n{}",
        run_tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    );
    assert!(
        status.success() && out.join("finished").exists(),
        "the README's commands failed ({status}):\n{context}"
    );
    assert_eq!(
        leftovers, 0,
        "a QEMU outlived the README session:\n{context}"
    );

    // What a reader of the README is promised, command by command.
    let output = |starts: &str| -> &str {
        steps
            .iter()
            .find(|(c, _, _)| c.starts_with(starts))
            .map(|(_, _, o)| o.as_str())
            .unwrap_or_else(|| panic!("no README command starting {starts:?}:\n{context}"))
    };
    let users = output("roost user list");
    assert!(
        users
            .lines()
            .any(|l| l.starts_with("ops ") && l.contains("admin")),
        "{users}"
    );
    assert!(output("curl localhost/api/v1/auth/me").contains("\"username\":\"alice\""));
    assert!(output("roost vm list").contains("alice"));
    assert!(
        output("curl localhost/alice/").contains("<html"),
        "{context}"
    );
    assert!(output("curl -s localhost/api/v1/host/access-urls")
        .contains("ssh -p 22000 alice@localhost"));
    assert!(!output("ssh -p 22000").trim().is_empty(), "{context}");
    assert!(
        output("curl -sf localhost/api/v1/host/snapshots -H").contains("\"name\":\"first\""),
        "{context}"
    );
    assert!(output("roost status").contains("running (pid"));
    assert!(output("roost check").contains("qemu"), "{context}");
    eprintln!("--- the README session ---\n{text}");
}
