//! Privileged tests of the install step in `scripts/lib.sh` (`install_runtime_deps`), the one
//! `scripts/run.sh` and `scripts/test.sh` start with:
//!
//! - on this (complete) machine, a wrong version pin fails in apt's resolution, names the
//!   version, and changes no package (the historical bug: `qemu-system-data`, an
//!   `Architecture: all` package, pinned to the binNMU version of `qemu-system-x86`);
//! - in a fresh, minimal Debian 12 root without apt lists, the step installs everything,
//!   QEMU and qemu-img come out at one version, and a second run installs nothing.
//!
//! Run with `ROOST_PRIVILEGED_TESTS=1 cargo test --test install -- --test-threads=1`.
//! The fresh-root test needs the network (deb.debian.org), caches its root tarball under
//! `/var/cache/roost/test-roots` and downloaded .debs under
//! `/var/cache/roost/test-apt-archives`.

mod common;

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// Where built roots are cached, one tarball per recipe.
const ROOT_CACHE: &str = "/var/cache/roost/test-roots";
/// Persistent apt archive, bind-mounted over the fresh root's /var/cache/apt/archives.
const APT_ARCHIVES: &str = "/var/cache/roost/test-apt-archives";
/// Bump to rebuild the cached root without changing the mmdebstrap arguments.
const ROOT_RECIPE_TAG: &str = "roost-test-root v1";
/// Lines of the install step's output quoted in a failure message.
const TAIL_LINES: usize = 60;

/// mmdebstrap's options and suite; the target follows, then the mirrors.
const MMDEBSTRAP_OPTIONS: [&str; 4] = [
    "--variant=minbase",
    "--mode=root",
    "--format=tar",
    "bookworm",
];
/// The root's sources.list: the host's mirrors (bookworm, -updates, -security on
/// deb.debian.org). mmdebstrap builds from them and writes them into the root.
const MMDEBSTRAP_MIRRORS: [&str; 3] = [
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
];

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn lib_sh() -> PathBuf {
    repo().join("scripts/lib.sh")
}

/// `bash -c 'source lib.sh; install_runtime_deps'` on the host, with English apt messages and
/// no inherited override.
fn host_install_step() -> Command {
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(r#"source "$1"; install_runtime_deps"#)
        .arg("bash")
        .arg(lib_sh())
        .env("LC_ALL", "C.UTF-8")
        .env_remove("ROOST_PKG_OVERRIDE");
    cmd
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn describe(out: &Output) -> String {
    format!(
        "exit: {}\n--- stdout (last {TAIL_LINES} lines) ---\n{}\n\
         --- stderr (last {TAIL_LINES} lines) ---\n{}",
        out.status,
        tail(&String::from_utf8_lossy(&out.stdout), TAIL_LINES),
        tail(&String::from_utf8_lossy(&out.stderr), TAIL_LINES),
    )
}

/// Every installed package as `name=version`, one per line (dpkg's database at `admindir`).
fn dpkg_packages(admindir: &str) -> String {
    let out = Command::new("dpkg-query")
        .arg(format!("--admindir={admindir}"))
        .args(["-W", "-f=${Package}=${Version}\\n"])
        .output()
        .expect("run dpkg-query");
    assert!(
        out.status.success(),
        "dpkg-query failed: {}",
        describe(&out)
    );
    String::from_utf8(out.stdout).expect("dpkg-query output is UTF-8")
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

#[test]
fn install_refuses_a_wrong_pin_on_a_complete_machine() {
    if !common::privileged("install_refuses_a_wrong_pin_on_a_complete_machine") {
        return;
    }

    // Precondition: this machine has roost's packages, the install step has nothing to do.
    let started = Instant::now();
    let out = host_install_step().output().expect("run the install step");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.contains("present"),
        "precondition: the install step must find every package present on this machine \
         (run `bash -c 'source scripts/lib.sh; install_runtime_deps'` once)\n{}",
        describe(&out)
    );
    eprintln!(
        "install step on the complete machine: {}",
        secs(started.elapsed())
    );

    let before = dpkg_packages("/var/lib/dpkg");
    let x86 = before
        .lines()
        .find_map(|l| l.strip_prefix("qemu-system-x86="))
        .expect("qemu-system-x86 is installed")
        .to_owned();
    let data = before
        .lines()
        .find_map(|l| l.strip_prefix("qemu-system-data="))
        .expect("qemu-system-data is installed");
    // The historical bug: the Architecture: all package pinned to the binNMU version of the
    // architecture-dependent one, a version that does not exist. Should a future QEMU build
    // have no binNMU suffix, a made-up one keeps the pin wrong in the same way.
    let wrong = if x86 != data {
        x86
    } else {
        format!("{data}+b1")
    };
    let pin = format!("qemu-system-data={wrong}");
    let started = Instant::now();
    let out = host_install_step()
        .env("ROOST_PKG_OVERRIDE", &pin)
        .env("ROOST_APT_RETRIES", "1")
        // Resolution alone must refuse it; and the host's apt lists must not move under
        // the tests that follow (tests/readme.rs runs the install step without a network).
        .env("ROOST_APT_OFFLINE", "1")
        .output()
        .expect("run the install step with a wrong pin");
    let elapsed = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "install step with ROOST_PKG_OVERRIDE={pin}: {} in {}\n{}",
        out.status,
        secs(elapsed),
        tail(&stderr, TAIL_LINES)
    );

    assert!(
        !out.status.success(),
        "the install step accepted the wrong pin {pin}\n{}",
        describe(&out)
    );
    let not_found = format!("Version '{wrong}' for 'qemu-system-data' was not found");
    assert!(
        stderr.lines().any(|l| l.contains(&not_found)),
        "stderr does not carry apt's `{not_found}`\n{}",
        describe(&out)
    );
    assert!(
        !stderr.contains("==> apt-get install"),
        "the install step went on to install despite the wrong pin\n{}",
        describe(&out)
    );
    let after = dpkg_packages("/var/lib/dpkg");
    assert!(
        before == after,
        "installed packages changed: before-only {:?}, after-only {:?}",
        before
            .lines()
            .filter(|l| !after.lines().any(|a| a == *l))
            .collect::<Vec<_>>(),
        after
            .lines()
            .filter(|l| !before.lines().any(|b| b == *l))
            .collect::<Vec<_>>(),
    );
}

/// The mmdebstrap argument list, with `target` in the target position.
fn mmdebstrap_args(target: &str) -> Vec<String> {
    let mut args: Vec<String> = MMDEBSTRAP_OPTIONS.iter().map(|s| s.to_string()).collect();
    args.push(target.to_owned());
    args.extend(MMDEBSTRAP_MIRRORS.iter().map(|s| s.to_string()));
    args
}

/// The cached tarball of a fresh root; built with mmdebstrap when the recipe has none yet.
/// Returns its path and whether it was built now.
fn fresh_root_tarball() -> (PathBuf, bool) {
    let recipe = format!(
        "{ROOT_RECIPE_TAG}\nmmdebstrap {}",
        mmdebstrap_args("TARGET").join("\n")
    );
    let hash = hex::encode(Sha256::digest(recipe.as_bytes()));
    let path = Path::new(ROOT_CACHE).join(format!("{}.tar", &hash[..16]));
    if path.is_file() {
        return (path, false);
    }
    fs::create_dir_all(ROOT_CACHE).expect("create the root cache");
    // Built beside its final name and renamed into place: a concurrent or killed build never
    // leaves a partial tarball under the final name (the temporary file is removed on drop).
    let partial = tempfile::Builder::new()
        .prefix(&format!(".{}.", &hash[..16]))
        .suffix(".tar.partial")
        .tempfile_in(ROOT_CACHE)
        .expect("create the partial tarball");
    let target = partial.path().to_str().expect("UTF-8 path").to_owned();
    eprintln!(
        "building a fresh root: mmdebstrap {}",
        mmdebstrap_args(&target).join(" ")
    );
    let out = Command::new("mmdebstrap")
        .args(mmdebstrap_args(&target))
        .output()
        .expect("run mmdebstrap");
    assert!(
        out.status.success(),
        "mmdebstrap failed\n{}",
        describe(&out)
    );
    partial
        .persist(&path)
        .expect("rename the built root into place");
    (path, true)
}

/// A run whose stdout and stderr were merged, in order.
struct Run {
    status: ExitStatus,
    output: String,
    elapsed: Duration,
}

impl Run {
    fn failure(&self, what: &str) -> String {
        format!(
            "{what}: {} after {}\n--- output (last {TAIL_LINES} lines) ---\n{}",
            self.status,
            secs(self.elapsed),
            tail(&self.output, TAIL_LINES)
        )
    }
}

/// Runs `argv` in the chroot `root` (tests/install-fresh-root.sh: private mount and PID
/// namespaces, /proc, /dev and the apt archive mounted), echoing its output as it comes.
fn in_root(root: &Path, label: &str, argv: &[&str]) -> Run {
    let (reader, writer) = std::io::pipe().expect("pipe");
    let mut cmd = Command::new("bash");
    cmd.arg(repo().join("tests/install-fresh-root.sh"))
        .arg(root)
        .arg(APT_ARCHIVES)
        .args(argv)
        .stdin(std::process::Stdio::null())
        .stdout(writer.try_clone().expect("dup pipe"))
        .stderr(writer);
    let started = Instant::now();
    let mut child = cmd.spawn().expect("run install-fresh-root.sh");
    // The command holds the write ends: drop it so the pipe reaches EOF when the child exits.
    drop(cmd);
    let mut output = String::new();
    let mut reader = BufReader::new(reader);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line).expect("read output");
        if n == 0 {
            break;
        }
        let text = String::from_utf8_lossy(&line);
        eprint!("  [{label}] {text}");
        if !text.ends_with('\n') {
            eprintln!();
        }
        output.push_str(&text);
    }
    let status = child.wait().expect("wait for install-fresh-root.sh");
    Run {
        status,
        output,
        elapsed: started.elapsed(),
    }
}

/// "7.2.19 (Debian 1:7.2+dfsg-7+deb12u18+b3)" from the first line of a `--version` output.
fn version_of(output: &str) -> Option<String> {
    let first = output.lines().next()?;
    let at = first.find("version ")?;
    Some(first[at + "version ".len()..].trim().to_owned())
}

/// Mount points in this (the host's) mount namespace at or under `dir`.
fn mounts_under(dir: &Path) -> Vec<String> {
    let out = Command::new("findmnt")
        .args(["-rn", "-o", "TARGET"])
        .output()
        .expect("run findmnt");
    assert!(out.status.success(), "findmnt failed: {}", describe(&out));
    let dir = dir.to_str().expect("UTF-8 path");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|m| *m == dir || m.starts_with(&format!("{dir}/")))
        .map(str::to_owned)
        .collect()
}

#[test]
fn install_step_in_a_fresh_debian_root() {
    if !common::privileged("install_step_in_a_fresh_debian_root") {
        return;
    }
    let total = Instant::now();

    // The persistent .deb cache, shared by runs; one test run uses it at a time (apt's own
    // lock in it would fail a second concurrent apt-get instead of waiting).
    fs::create_dir_all(Path::new(APT_ARCHIVES).join("partial")).expect("create the apt archive");
    let lock = fs::File::create(format!("{APT_ARCHIVES}.lock")).expect("create the archive lock");
    let _lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .expect("lock the apt archive");

    let started = Instant::now();
    let (tarball, built) = fresh_root_tarball();
    eprintln!(
        "fresh root {}: {} in {}",
        tarball.display(),
        if built { "built" } else { "cached" },
        secs(started.elapsed())
    );

    let tmp = tempfile::Builder::new()
        .prefix("roost-fresh-root.")
        .tempdir()
        .expect("create a temp dir");
    let root = tmp.path().join("root");
    fs::create_dir(&root).expect("create the root dir");
    let started = Instant::now();
    let out = Command::new("tar")
        .args(["--numeric-owner", "-xpf"])
        .arg(&tarball)
        .arg("-C")
        .arg(&root)
        .output()
        .expect("run tar");
    assert!(
        out.status.success(),
        "extracting {}\n{}",
        tarball.display(),
        describe(&out)
    );
    eprintln!(
        "extracted into {}: {}",
        root.display(),
        secs(started.elapsed())
    );

    // The root is what a fresh machine has: no apt lists (lib.sh must run apt-get update),
    // no .debs, the host's mirrors, and no apt config that deletes downloaded .debs.
    let lists: Vec<_> = fs::read_dir(root.join("var/lib/apt/lists"))
        .expect("read the root's apt lists")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("_Packages"))
        .collect();
    assert!(lists.is_empty(), "the fresh root has apt lists: {lists:?}");
    let sources = fs::read_to_string(root.join("etc/apt/sources.list")).expect("sources.list");
    for mirror in MMDEBSTRAP_MIRRORS {
        assert!(
            sources.lines().any(|l| l.trim() == mirror),
            "the root's sources.list lacks `{mirror}`:\n{sources}"
        );
    }
    for entry in fs::read_dir(root.join("etc/apt/apt.conf.d")).expect("read apt.conf.d") {
        let path = entry.expect("apt.conf.d entry").path();
        let text = fs::read_to_string(&path).unwrap_or_default().to_lowercase();
        assert!(
            !text.contains("/var/cache/apt/archives") && !text.contains("keep-downloaded-packages"),
            "{} would delete downloaded .debs:\n{text}",
            path.display()
        );
    }

    let scripts = root.join("roost/scripts");
    fs::create_dir_all(&scripts).expect("create /roost/scripts in the root");
    fs::copy(lib_sh(), scripts.join("lib.sh")).expect("copy lib.sh into the root");
    let resolv = root.join("etc/resolv.conf");
    let _ = fs::remove_file(&resolv); // may be a dangling symlink in the root
    fs::copy("/etc/resolv.conf", &resolv).expect("copy resolv.conf into the root");

    let install = [
        "bash",
        "-c",
        "source /roost/scripts/lib.sh; install_runtime_deps",
    ];

    // A name that does not resolve (the fresh machine of issue 11): apt-get update is
    // retried with a message, then the step fails saying so.
    fs::write(&resolv, "nameserver 127.0.0.9\n").expect("break resolv.conf");
    let broken = in_root(
        &root,
        "no DNS",
        &[
            "env",
            "ROOST_APT_RETRIES=2",
            "ROOST_APT_RETRY_PAUSE=0",
            "bash",
            "-c",
            "source /roost/scripts/lib.sh; install_runtime_deps",
        ],
    );
    assert!(
        !broken.status.success()
            && broken.output.contains("failed (attempt 1 of 2")
            && broken.output.contains("apt-get update failed 2 times"),
        "{}",
        broken.failure("apt-get update without DNS was not retried and reported")
    );
    fs::copy("/etc/resolv.conf", &resolv).expect("restore resolv.conf in the root");

    let first = in_root(&root, "install 1", &install);
    assert!(
        first.status.success(),
        "{}",
        first.failure("the install step failed in the fresh root")
    );
    assert!(
        first.output.contains("==> apt-get update"),
        "{}",
        first.failure("the install step did not update apt's lists in the fresh root")
    );
    eprintln!("install step in the fresh root: {}", secs(first.elapsed));

    let emulator = in_root(
        &root,
        "qemu-system-x86_64",
        &["qemu-system-x86_64", "--version"],
    );
    assert!(
        emulator.status.success(),
        "{}",
        emulator.failure("qemu-system-x86_64 --version")
    );
    let img = in_root(&root, "qemu-img", &["qemu-img", "--version"]);
    assert!(
        img.status.success(),
        "{}",
        img.failure("qemu-img --version")
    );
    let (ev, iv) = (version_of(&emulator.output), version_of(&img.output));
    assert!(
        ev.is_some() && ev == iv,
        "qemu-system-x86_64 ({ev:?}) and qemu-img ({iv:?}) differ:\n{}\n{}",
        emulator.output,
        img.output
    );
    let debs = fs::read_dir(APT_ARCHIVES)
        .expect("read the apt archive")
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("qemu-system-x86_")
        })
        .count();
    assert!(debs > 0, "no qemu-system-x86 .deb kept in {APT_ARCHIVES}");

    // Idempotent: a second run resolves the same set and installs nothing.
    let admindir = root.join("var/lib/dpkg");
    let admindir = admindir.to_str().expect("UTF-8 path");
    let before = dpkg_packages(admindir);
    let second = in_root(&root, "install 2", &install);
    assert!(
        second.status.success(),
        "{}",
        second.failure("the second install step failed")
    );
    assert!(
        second.output.contains("packages: all") && second.output.contains("present"),
        "{}",
        second.failure("the second install step did not find every package present")
    );
    assert!(
        !second.output.contains("==> apt-get install"),
        "{}",
        second.failure("the second install step installed packages")
    );
    assert!(
        before == dpkg_packages(admindir),
        "the second install step changed the root's packages"
    );
    eprintln!("second install step: {}", secs(second.elapsed));

    // Nothing mounted under the temp dir in this namespace, and the temp dir goes away.
    let leaked = mounts_under(tmp.path());
    assert!(
        leaked.is_empty(),
        "mounts left in the host namespace: {leaked:?}"
    );
    let dir = tmp.path().to_owned();
    tmp.close().expect("remove the temp dir");
    assert!(!dir.exists(), "{} still exists", dir.display());
    eprintln!(
        "qemu {}; fresh-root test total: {}",
        ev.unwrap_or_default(),
        secs(total.elapsed())
    );
}
