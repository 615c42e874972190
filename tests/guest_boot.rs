//! The proof that roost's seed configures a real guest: boot the default image under QEMU
//! (TCG) in a private network namespace with a seed written by `roost::cloudinit`, then check
//! from the host side that nginx serves the page, SSH with the generated key logs in as the
//! right user on the right hostname with exactly the assigned address, and passwords are refused.
//!
//! Privileged: needs root, `ip`, `qemu-system-x86_64`, `qemu-img`, `curl`, `ssh`, and the image
//! at /var/cache/roost/images/default (waited for up to 25 minutes).
mod common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use roost::cloudinit::{generate_ed25519, seed_documents, write_seed_image, SeedInput, Templates};

const IMAGE_DIR: &str = "/var/cache/roost/images/default";
const VM_IP: &str = "10.77.0.10";
const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x77, 0x00, 0x0a];

/// Kills QEMU when the test ends, passed or not, and shows the guest's console on failure.
struct Qemu {
    child: Child,
    serial: PathBuf,
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = fs::read_to_string(&self.serial).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(80)..];
            eprintln!("---- serial console (last {} lines) ----", tail.len());
            for l in tail {
                eprintln!("{l}");
            }
            eprintln!("---- end of serial console ----");
        }
    }
}

fn run(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {cmd}: {e}"))
}

fn run_ok(cmd: &str, args: &[&str]) {
    let out = run(cmd, args);
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ssh_args<'a>(key: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "-i",
        key,
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
        "-o",
        "ConnectTimeout=10",
        "-o",
        "BatchMode=yes",
    ];
    v.extend_from_slice(extra);
    v
}

struct Image {
    kernel: PathBuf,
    initrd: PathBuf,
    disk: PathBuf,
    cmdline: String,
}

fn wait_for_image() -> Image {
    let manifest_path = Path::new(IMAGE_DIR).join("manifest.json");
    let text = common::poll(
        "the guest image manifest",
        Duration::from_secs(25 * 60),
        || fs::read_to_string(&manifest_path).ok(),
    );
    // Resolve the "default" symlink once: a rebuild must not swap files under a running VM.
    let dir = fs::canonicalize(IMAGE_DIR).expect("resolve image dir");
    let m: serde_json::Value = serde_json::from_str(&text).expect("manifest is JSON");
    let field = |k: &str| {
        m[k].as_str()
            .unwrap_or_else(|| panic!("manifest has no {k}"))
            .to_owned()
    };
    assert_eq!(
        field("boot"),
        "kernel",
        "this test boots the kernel directly"
    );
    Image {
        kernel: dir.join(field("kernel")),
        initrd: dir.join(field("initrd")),
        disk: dir.join(field("disk")),
        cmdline: field("cmdline"),
    }
}

#[test]
fn guest_boots_with_roost_seed() {
    if !common::privileged("guest_boot") {
        return;
    }
    let image = wait_for_image();
    common::in_netns(move || boot_and_check(image));
}

fn boot_and_check(image: Image) {
    // Host side of the VM's network: a bridge with the gateway address and one tap.
    run_ok("ip", &["link", "add", "br0", "type", "bridge"]);
    run_ok("ip", &["addr", "add", "10.77.0.1/24", "dev", "br0"]);
    run_ok("ip", &["link", "set", "br0", "up"]);
    run_ok("ip", &["tuntap", "add", "tap0", "mode", "tap"]);
    run_ok("ip", &["link", "set", "tap0", "master", "br0"]);
    run_ok("ip", &["link", "set", "tap0", "up"]);

    let tmp = tempfile::tempdir().expect("tempdir");
    let overlay = tmp.path().join("overlay.qcow2");
    let seed_img = tmp.path().join("seed.img");
    let key_path = tmp.path().join("id_ed25519");
    let serial = tmp.path().join("serial.log");
    let base = image.disk.to_str().expect("utf-8 path");
    run_ok(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-F",
            "qcow2",
            "-b",
            base,
            overlay.to_str().expect("utf-8 path"),
        ],
    );

    // A made-up hosting, through roost's own code.
    let (public, private) = generate_ed25519("alice@guest-boot-test").expect("generate key");
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&key_path)
        .and_then(|mut f| f.write_all(private.as_bytes()))
        .expect("write private key");
    let input = SeedInput {
        instance_id: format!("guest-boot-{}", std::process::id()),
        hostname: "alice".into(),
        username: "alice".into(),
        ssh_authorized_keys: vec![public],
        ip: VM_IP.parse().expect("ip"),
        prefix_len: 24,
        gateway: "10.77.0.1".parse().expect("gateway"),
        dns: vec!["10.77.0.1".parse().expect("dns")],
        mac: MAC,
        slug: "alice".into(),
        domain: "roost.test".into(),
        ssh_port: 2222,
        install_nginx: false,
        console_password_hash: None,
    };
    let templates = Templates::embedded().expect("templates");
    let seed = seed_documents(&templates, &input).expect("seed documents");
    write_seed_image(&seed_img, &seed).expect("seed image");

    let mac = MAC
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    let started = Instant::now();
    let child = Command::new("qemu-system-x86_64")
        .args(["-name", "roost-guest-boot-test", "-accel", "tcg"])
        .args(["-machine", "q35", "-cpu", "max", "-smp", "1", "-m", "512"])
        .args(["-nodefaults", "-no-user-config", "-display", "none"])
        .arg("-serial")
        .arg(format!("file:{}", serial.display()))
        .arg("-kernel")
        .arg(&image.kernel)
        .arg("-initrd")
        .arg(&image.initrd)
        .args(["-append", &image.cmdline])
        .arg("-drive")
        .arg(format!(
            "file={},if=virtio,format=qcow2,discard=unmap",
            overlay.display()
        ))
        .arg("-drive")
        .arg(format!(
            "file={},if=virtio,format=raw,readonly=on",
            seed_img.display()
        ))
        .args([
            "-netdev",
            "tap,id=n0,ifname=tap0,script=no,downscript=no",
            "-device",
        ])
        .arg(format!("virtio-net-pci,netdev=n0,mac={mac}"))
        .args(["-device", "virtio-rng-pci"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn qemu");
    let mut qemu = Qemu {
        child,
        serial: serial.clone(),
    };

    // 1. nginx serves the default page with the slug and the SSH hint in it.
    let url = format!("http://{VM_IP}/");
    let page = common::poll("the web page", Duration::from_secs(300), || {
        if let Ok(Some(status)) = qemu.child.try_wait() {
            panic!("qemu exited early: {status}");
        }
        let out = run("curl", &["-sS", "--fail", "--max-time", "3", &url]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    });
    let web_at = started.elapsed();
    assert!(page.contains("<h1>alice</h1>"), "page: {page}");
    assert!(
        page.contains("ssh -p 2222 alice@roost.test"),
        "page: {page}"
    );

    // 2. SSH with the generated key: right user, hostname, sudo, and exactly one address.
    let key = key_path.to_str().expect("utf-8 path");
    let target = format!("alice@{VM_IP}");
    let probe =
        "id; hostname; sudo -n true && echo SUDO-OK; ip -br -4 addr show dev eth0; ip -br addr";
    let out = common::poll("an SSH login", Duration::from_secs(300), || {
        let out = run("ssh", &ssh_args(key, &[&target, probe]));
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    });
    let ssh_at = started.elapsed();
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("uid=") && lines[0].contains("(alice)"),
        "id: {out}"
    );
    assert_eq!(lines[1], "alice", "hostname: {out}");
    assert_eq!(lines[2], "SUDO-OK", "sudo: {out}");
    let eth0: Vec<&str> = lines[3].split_whitespace().collect();
    assert_eq!(eth0, ["eth0", "UP", "10.77.0.10/24"], "eth0: {out}");
    // Every address on any interface other than lo is the assigned one or IPv6 link-local.
    for line in &lines[4..] {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.first() == Some(&"lo") {
            continue;
        }
        for addr in f.iter().skip(2) {
            assert!(
                *addr == "10.77.0.10/24" || addr.starts_with("fe80:"),
                "unexpected address {addr}: {out}"
            );
        }
    }

    // 3. Passwords are refused by the server.
    let out = run(
        "ssh",
        &ssh_args(
            key,
            &[
                "-o",
                "PreferredAuthentications=password,keyboard-interactive",
                "-o",
                "PubkeyAuthentication=no",
                &target,
                "true",
            ],
        ),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "password login succeeded");
    assert!(err.contains("Permission denied"), "ssh said: {err}");

    // 4. cloud-init finishes every stage without errors, and the late, per-instance
    // runcmd handed the site over to its owner.
    // One blocking `status --wait` inside the guest rather than a login every 100 ms: each
    // login costs the single TCG vCPU more than the idle-priority final stage gets.
    let out = run(
        "ssh",
        &ssh_args(
            key,
            &[
                &target,
                "timeout 600 cloud-init status --wait >/dev/null; cloud-init status",
            ],
        ),
    );
    let status = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let done_at = started.elapsed();
    let diag = run(
        "ssh",
        &ssh_args(
            key,
            &[
                &target,
                "stat -c %U /var/www/html/index.html; \
                 sudo grep -E ' (WARNING|ERROR)' /var/log/cloud-init.log; \
                 sudo grep -E 'Running command .*(restart|reload)' /var/log/cloud-init.log | cut -c1-160; \
                 echo ssh-starts=$(sudo journalctl -b -u ssh.service -o cat | grep -c 'Server listening on 0.0.0.0')",
            ],
        ),
    );
    let diag = String::from_utf8_lossy(&diag.stdout).into_owned();
    eprintln!("guest_boot: cloud-init {status}; owner, warnings, sshd starts:\n{diag}");
    assert_eq!(status, "status: done", "cloud-init: {diag}");
    assert_eq!(
        diag.lines().next(),
        Some("alice"),
        "owner of the page: {diag}"
    );
    assert!(!diag.contains(" ERROR"), "cloud-init logged errors: {diag}");

    eprintln!(
        "guest_boot: web 200 after {:.1}s, ssh login after {:.1}s, cloud-init done after {:.1}s (TCG)",
        web_at.as_secs_f64(),
        ssh_at.as_secs_f64(),
        done_at.as_secs_f64()
    );
}
