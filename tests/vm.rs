//! Privileged tests of the `vm` module against a real QEMU: QMP control and events, adoption
//! after "daemon death", pidfd exit watching, QMP deadlines, the accelerator probe, and a real
//! boot of the project's image on a tap inside a private network namespace.
//!
//! Run with `ROOST_PRIVILEGED_TESTS=1 cargo test --test vm`.

mod common;

use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use roost::vm::accel::{probe_kvm, resolve, run_test_guest, AccelChoice};
use roost::vm::argv::{escape_opt, vm_uuid, Accel, NetSpec, VmSpec};
use roost::vm::process::{adopt, cap_serial_log, spawn, spawn_argv, SpawnOptions, VmProcess};
use roost::vm::qmp::{Deadlines, Qmp, RunState, VmEvent};
use roost::vm::{create_overlay, graceful_stop, Image, StopOutcome, VmError};
use tokio::sync::broadcast;
use ulid::Ulid;

const IMAGE_DIR: &str = "/var/cache/roost/images/default";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Kills the QEMU it holds when dropped, so a failing test leaves nothing running.
struct Guard(Option<VmProcess>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            if p.is_running() {
                let _ = p.kill();
                let end = Instant::now() + Duration::from_secs(5);
                while p.is_running() && Instant::now() < end {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            // Reap it if it is our child (a no-op otherwise).
            let _ = nix::sys::wait::waitpid(
                nix::unistd::Pid::from_raw(p.pid()),
                Some(nix::sys::wait::WaitPidFlag::WNOHANG),
            );
        }
    }
}

/// A QEMU with no disk and no kernel: SeaBIOS finds nothing to boot and idles, which is all
/// QMP tests need.
struct Bare {
    id: Ulid,
    dir: tempfile::TempDir,
}

impl Bare {
    fn new() -> Bare {
        Bare {
            id: Ulid::new(),
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }
    fn sock(&self) -> PathBuf {
        self.dir.path().join("qmp.sock")
    }
    fn pidfile(&self) -> PathBuf {
        self.dir.path().join("qemu.pid")
    }
    fn argv(&self) -> Vec<OsString> {
        let mut qmp = OsString::from("unix:");
        qmp.push(escape_opt(self.sock().as_os_str()));
        qmp.push(",server=on,wait=off");
        let mut a: Vec<OsString> = [
            "-name",
            "guest=bare,debug-threads=on",
            "-uuid",
            &vm_uuid(self.id),
            "-machine",
            "pc",
            "-accel",
            "tcg",
            "-m",
            "32",
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        a.push("-qmp".into());
        a.push(qmp);
        a.push("-pidfile".into());
        a.push(self.pidfile().into());
        a
    }
    async fn spawn(&self) -> VmProcess {
        spawn_argv(
            "qemu-system-x86_64".as_ref(),
            &self.argv(),
            SpawnOptions {
                tap: None,
                stderr_log: self.dir.path().join("qemu.log"),
                qmp_socket: self.sock(),
                ready_deadline: Duration::from_secs(10),
            },
        )
        .await
        .expect("qemu starts")
    }
}

/// Waits for the next event that is not a Powerdown/other noise we ignore, with a deadline.
async fn next_event(rx: &mut broadcast::Receiver<VmEvent>) -> VmEvent {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("an event within 5s")
        .expect("event channel open")
}

#[test]
fn qmp_controls_a_running_qemu() {
    if !common::privileged("qmp_controls_a_running_qemu") {
        return;
    }
    rt().block_on(async {
        let bare = Bare::new();
        let mut guard = Guard(Some(bare.spawn().await));
        let proc = guard.0.as_ref().expect("held");
        let qmp = Qmp::connect(&bare.sock()).await.expect("qmp connects");
        let mut ev = qmp.events();
        assert_eq!(qmp.query_status().await.expect("status"), RunState::Running);

        qmp.stop().await.expect("stop");
        assert_eq!(next_event(&mut ev).await, VmEvent::Stop);
        assert_eq!(qmp.query_status().await.expect("status"), RunState::Paused);

        qmp.cont().await.expect("cont");
        assert_eq!(next_event(&mut ev).await, VmEvent::Resume);
        assert_eq!(qmp.query_status().await.expect("status"), RunState::Running);

        qmp.system_reset().await.expect("reset");
        assert_eq!(next_event(&mut ev).await, VmEvent::Reset { guest: false });

        let stats = qmp.query_blockstats().await.expect("blockstats");
        assert!(stats.is_empty(), "no disks: {stats:?}");

        // QEMU wrote the pidfile adopt() will read.
        let pidfile = std::fs::read_to_string(bare.pidfile()).expect("pidfile written");
        assert_eq!(pidfile.trim(), proc.pid().to_string());

        qmp.quit().await.expect("quit");
        let mut rest = Vec::new();
        while rest.last() != Some(&VmEvent::Disconnected) {
            rest.push(next_event(&mut ev).await);
        }
        assert_eq!(
            rest,
            [
                VmEvent::Shutdown {
                    guest: false,
                    reason: "host-qmp-quit".into()
                },
                VmEvent::Disconnected
            ]
        );
        let code = tokio::time::timeout(Duration::from_secs(5), proc.wait_exit())
            .await
            .expect("exits within 5s")
            .expect("wait works");
        assert_eq!(code, Some(0), "we are the parent, so we see the status");
        assert!(!qmp.is_connected());
        // Commands on a dead connection fail at once.
        let t = Instant::now();
        assert!(qmp.query_status().await.is_err());
        assert!(t.elapsed() < Duration::from_secs(1));
        guard.0.take();
    });
}

#[test]
fn adopt_after_daemon_death() {
    if !common::privileged("adopt_after_daemon_death") {
        return;
    }
    rt().block_on(async {
        let bare = Bare::new();
        let first = bare.spawn().await;
        let pid = first.pid();
        // The guard holds its own pidfd only to clean up; the "daemon's" handles are dropped.
        let _guard = Guard(Some(VmProcess::from_pid(pid).expect("pidfd")));
        {
            let qmp = Qmp::connect(&bare.sock()).await.expect("qmp");
            assert_eq!(qmp.query_status().await.expect("status"), RunState::Running);
            drop(qmp);
            drop(first);
        }
        let adopted = adopt(&bare.pidfile(), bare.id)
            .expect("adopt works")
            .expect("qemu is found");
        assert_eq!(adopted.pid(), pid);
        assert!(adopted.is_running());
        let qmp = Qmp::connect(&bare.sock()).await.expect("qmp reconnects");
        assert_eq!(qmp.query_status().await.expect("status"), RunState::Running);

        // Another VM's id does not adopt this process.
        assert!(adopt(&bare.pidfile(), Ulid::new())
            .expect("no error")
            .is_none());
        // A pidfile naming a live process that is not QEMU is rejected.
        let mut sleeper = Command::new("sleep").arg("30").spawn().expect("sleep");
        let fake = bare.dir.path().join("fake.pid");
        std::fs::write(&fake, format!("{}\n", sleeper.id())).expect("write");
        assert!(adopt(&fake, bare.id).expect("no error").is_none());
        let _ = sleeper.kill();
        let _ = sleeper.wait();
        // A pidfile naming a pid that does not exist is "not running".
        std::fs::write(&fake, format!("{}\n", sleeper.id())).expect("write");
        assert!(adopt(&fake, bare.id).expect("no error").is_none());

        // The adopted handle stops it like a spawned one.
        let out = graceful_stop(Some(&qmp), &adopted, Duration::from_millis(500))
            .await
            .expect("stops");
        // SeaBIOS with no OS ignores the ACPI button, so QEMU is asked to quit.
        assert_eq!(out, StopOutcome::Quit);
        assert!(!adopted.is_running());
    });
}

#[test]
fn pidfd_sees_sigkill_fast() {
    if !common::privileged("pidfd_sees_sigkill_fast") {
        return;
    }
    rt().block_on(async {
        let bare = Bare::new();
        let _guard = Guard(Some(bare.spawn().await));
        let proc = _guard.0.as_ref().expect("held");
        let qmp = Qmp::connect(&bare.sock()).await.expect("qmp");
        let mut ev = qmp.events();
        // Someone else kills it (not through our pidfd).
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(proc.pid()),
            nix::sys::signal::Signal::SIGKILL,
        )
        .expect("kill -9");
        let t = Instant::now();
        let code = tokio::time::timeout(Duration::from_secs(2), proc.wait_exit())
            .await
            .expect("wait_exit fires within 2s")
            .expect("wait works");
        assert_eq!(code, Some(128 + 9));
        assert!(t.elapsed() < Duration::from_secs(2));
        // QMP reports the lost connection with no SHUTDOWN before it.
        assert_eq!(next_event(&mut ev).await, VmEvent::Disconnected);
    });
}

#[test]
fn stop_without_qmp_uses_sigterm() {
    if !common::privileged("stop_without_qmp_uses_sigterm") {
        return;
    }
    rt().block_on(async {
        let bare = Bare::new();
        let _guard = Guard(Some(bare.spawn().await));
        let proc = _guard.0.as_ref().expect("held");
        let out = graceful_stop(None, proc, Duration::from_secs(1))
            .await
            .expect("stops");
        assert_eq!(out, StopOutcome::Quit);
        assert!(!proc.is_running());
        // Stopping again is a no-op.
        let again = graceful_stop(None, proc, Duration::from_secs(1))
            .await
            .expect("no-op");
        assert_eq!(again, StopOutcome::AlreadyExited);
    });
}

#[test]
fn qmp_deadlines_on_a_silent_socket() {
    if !common::privileged("qmp_deadlines_on_a_silent_socket") {
        return;
    }
    rt().block_on(async {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let dir = tempfile::tempdir().expect("tempdir");

        // 1. A socket that accepts and never says anything: connect times out.
        let silent = dir.path().join("silent.sock");
        let l = tokio::net::UnixListener::bind(&silent).expect("bind");
        let hold = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = l.accept().await {
                held.push(s);
            }
        });
        let d = Deadlines {
            connect: Duration::from_millis(500),
            default: Duration::from_millis(500),
            slow: Duration::from_secs(1),
        };
        let t = Instant::now();
        let err = Qmp::connect_with(&silent, d).await.expect_err("times out");
        assert!(matches!(err, VmError::QmpTimeout { .. }), "{err:?}");
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        hold.abort();

        // 2. A socket that greets and negotiates, then stops answering: a command times out
        //    after its own deadline, and the connection is abandoned after that.
        let mute = dir.path().join("mute.sock");
        let l = tokio::net::UnixListener::bind(&mute).expect("bind");
        let server = tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let (r, mut w) = s.into_split();
                    let greeting = b"{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 2, \"major\": 7}, \"package\": \"\"}, \"capabilities\": []}}\n";
                    w.write_all(greeting).await.expect("greet");
                    let mut lines = BufReader::new(r).lines();
                    let first = lines.next_line().await.expect("read").expect("a line");
                    assert!(first.contains("qmp_capabilities"), "{first}");
                    w.write_all(b"{\"return\": {}}\n").await.expect("answer");
                    // Read and ignore everything else, keeping the socket open.
                    while let Ok(Some(_)) = lines.next_line().await {}
                    drop(w);
                });
            }
        });
        let qmp = Qmp::connect_with(&mute, d).await.expect("negotiates");
        let t = Instant::now();
        let err = qmp.query_status().await.expect_err("times out");
        let took = t.elapsed();
        assert!(
            matches!(err, VmError::QmpTimeout { command: "query-status", .. }),
            "{err:?}"
        );
        assert!(
            took >= Duration::from_millis(450) && took < Duration::from_millis(1500),
            "{took:?}"
        );
        assert!(!qmp.is_usable());
        let t = Instant::now();
        let err = qmp.cont().await.expect_err("abandoned");
        assert!(matches!(err, VmError::QmpAbandoned { .. }), "{err:?}");
        assert!(t.elapsed() < Duration::from_millis(100));
        drop(qmp);

        // A run-state command gets the longer deadline.
        let qmp = Qmp::connect_with(&mute, d).await.expect("negotiates again");
        let t = Instant::now();
        let err = qmp.stop().await.expect_err("times out");
        let took = t.elapsed();
        assert!(matches!(err, VmError::QmpTimeout { command: "stop", .. }), "{err:?}");
        assert!(
            took >= Duration::from_millis(950) && took < Duration::from_secs(2),
            "{took:?}"
        );
        drop(qmp);
        server.abort();
    });
}

#[test]
fn accel_probe_decides_with_a_real_guest() {
    if !common::privileged("accel_probe_decides_with_a_real_guest") {
        return;
    }
    rt().block_on(async {
        // The payload itself works: under TCG it finishes almost at once.
        let t = run_test_guest(Accel::Tcg, Duration::from_secs(10))
            .await
            .expect("test firmware exits under TCG");
        assert!(t < Duration::from_secs(5), "{t:?}");

        let start = Instant::now();
        let probe = probe_kvm().await;
        eprintln!("kvm probe: {probe:?} in {:?}", start.elapsed());
        assert!(probe.reason.contains("KVM"), "{}", probe.reason);
        assert!(start.elapsed() < Duration::from_secs(8));
        if Path::new("/dev/kvm").exists() && !probe.usable {
            // This project's machines: nested KVM hangs, so the guest must time out.
            assert!(probe.reason.contains("using TCG"), "{}", probe.reason);
        }
        let (accel, reason) = resolve(AccelChoice::Auto).await;
        assert_eq!(accel == Accel::Kvm, probe.usable);
        assert_eq!(reason, probe.reason, "cached");
        // On the project's hosts the answer is TCG.
        if std::env::var("ROOST_EXPECT_KVM").as_deref() != Ok("1") {
            assert_eq!(accel, Accel::Tcg, "{reason}");
        }
    });
}

/// Opens a tap the way `net` will: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR, non-persistent.
fn open_tap(name: &str) -> OwnedFd {
    let path = b"/dev/net/tun\0";
    // SAFETY: a NUL-terminated path.
    let fd = unsafe { libc::open(path.as_ptr().cast(), libc::O_RDWR | libc::O_CLOEXEC) };
    assert!(
        fd >= 0,
        "open /dev/net/tun: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: fresh fd we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    #[repr(C)]
    struct IfReq {
        name: [u8; 16],
        flags: libc::c_short,
        _pad: [u8; 22],
    }
    let mut req = IfReq {
        name: [0; 16],
        flags: (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short,
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: TUNSETIFF reads an ifreq-sized struct.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut req) };
    assert!(r >= 0, "TUNSETIFF: {}", std::io::Error::last_os_error());
    fd
}

fn sh(args: &[&str]) {
    let st = Command::new(args[0])
        .args(&args[1..])
        .status()
        .expect("run command");
    assert!(st.success(), "{args:?} failed");
}

/// A NoCloud seed with a static address, built with dosfstools/mtools (test-only; the real
/// seed comes from `cloudinit`).
fn make_seed(dir: &Path, id: Ulid, mac: &str) -> PathBuf {
    let seed = dir.join("seed.img");
    std::fs::write(
        dir.join("meta-data"),
        format!("instance-id: {id}\nlocal-hostname: vmtest\n"),
    )
    .expect("write");
    // The image does not load `evdev`, so logind never sees the ACPI power button (there is
    // no /dev/input); loading it here lets the test check the graceful power-off path.
    std::fs::write(
        dir.join("user-data"),
        "#cloud-config\nbootcmd:\n  - [modprobe, evdev]\n",
    )
    .expect("write");
    std::fs::write(
        dir.join("network-config"),
        format!(
            "version: 2\nethernets:\n  eth0:\n    match:\n      macaddress: \"{mac}\"\n    \
             addresses: [10.0.2.15/24]\n"
        ),
    )
    .expect("write");
    sh(&[
        "mkfs.vfat",
        "-n",
        "CIDATA",
        "-C",
        &seed.to_string_lossy(),
        "1024",
    ]);
    for f in ["meta-data", "user-data", "network-config"] {
        sh(&[
            "mcopy",
            "-i",
            &seed.to_string_lossy(),
            &dir.join(f).to_string_lossy(),
            "::",
        ]);
    }
    seed
}

fn wait_for_image() -> Image {
    let manifest = Path::new(IMAGE_DIR).join("manifest.json");
    common::poll("the guest image", Duration::from_secs(25 * 60), || {
        manifest.exists().then_some(())
    });
    Image::load(Path::new(IMAGE_DIR)).expect("image manifest is valid")
}

#[test]
fn real_image_boots_on_a_tap() {
    if !common::privileged("real_image_boots_on_a_tap") {
        return;
    }
    let image = wait_for_image();
    common::in_netns(move || {
        rt().block_on(async move {
            let dir = tempfile::tempdir().expect("tempdir");
            // QEMU drops to `nobody` after opening its files, sockets and tap.
            let id = Ulid::new();
            let mac = "52:54:00:12:34:56";
            sh(&["ip", "link", "add", "br0", "type", "bridge"]);
            sh(&["ip", "addr", "add", "10.0.2.1/24", "dev", "br0"]);
            sh(&["ip", "link", "set", "br0", "up"]);
            let tap = open_tap("tap0");
            sh(&["ip", "link", "set", "tap0", "master", "br0"]);
            sh(&["ip", "link", "set", "tap0", "up"]);

            let overlay = dir.path().join("disk.qcow2");
            let t = Instant::now();
            create_overlay(&image.disk_path(), &overlay, 4)
                .await
                .expect("overlay");
            eprintln!("overlay created in {:?}", t.elapsed());
            let seed = make_seed(dir.path(), id, mac);
            let spec = VmSpec {
                id,
                name: "vmtest".into(),
                memory_mib: 512,
                vcpus: 2,
                accel: Accel::Tcg,
                boot: image.boot(),
                overlay,
                seed: Some(seed),
                net: Some(NetSpec {
                    tap_fd: -1, // replaced by spawn with the tap's real number
                    mac: mac.into(),
                }),
                qmp_socket: dir.path().join("qmp.sock"),
                pidfile: dir.path().join("qemu.pid"),
                serial_log: dir.path().join("serial.log"),
                run_as: Some("nobody".into()),
            };
            let start = Instant::now();
            let proc = spawn(&spec, Some(tap.as_fd()), &dir.path().join("qemu.log"))
                .await
                .unwrap_or_else(|e| {
                    let log = std::fs::read_to_string(dir.path().join("qemu.log"));
                    panic!("spawn: {e}: {log:?}")
                });
            let guard = Guard(Some(proc));
            let proc = guard.0.as_ref().expect("held");
            drop(tap); // QEMU has its own copy now.
            let qmp = Qmp::connect(&spec.qmp_socket).await.expect("qmp");
            assert_eq!(qmp.query_status().await.expect("status"), RunState::Running);
            // QEMU runs as nobody.
            let status = std::fs::read_to_string(format!("/proc/{}/status", proc.pid()))
                .expect("proc status");
            let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap_or("");
            assert!(uid_line.contains("65534"), "{uid_line}");

            // The guest's sshd and nginx answer on its static address once cloud-init applied
            // it. Polled from this thread: only it (and its children) are in the namespace.
            let serial = spec.serial_log.clone();
            let mut reached = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(240);
            for port in [22u16, 80] {
                while Instant::now() < deadline && proc.is_running() {
                    let addr = std::net::SocketAddr::from(([10, 0, 2, 15], port));
                    let c = tokio::time::timeout(
                        Duration::from_secs(1),
                        tokio::net::TcpStream::connect(addr),
                    )
                    .await;
                    if let Ok(Ok(_)) = c {
                        reached.push(port);
                        break;
                    }
                    // Refused comes back at once: pace the retries.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            let log = std::fs::read_to_string(&serial).unwrap_or_default();
            assert_eq!(reached, [22, 80], "guest not reachable; serial log:\n{log}");
            eprintln!(
                "guest sshd and nginx reachable {:?} after spawn",
                start.elapsed()
            );
            let t = Instant::now();
            common::poll("login prompt", Duration::from_secs(120), || {
                let log = std::fs::read_to_string(&serial).unwrap_or_default();
                log.contains("login:").then_some(())
            });
            eprintln!("login prompt {:?} after spawn", start.elapsed());
            assert!(t.elapsed() < Duration::from_secs(120));

            let stats = qmp.query_blockstats().await.expect("blockstats");
            assert!(
                stats.iter().any(|s| s.rd_bytes > 0 && s.wr_bytes > 0),
                "{stats:?}"
            );
            assert!(!cap_serial_log(&serial, 10 << 20).expect("cap check"));

            // Graceful stop: the ACPI button powers the guest off.
            let mut ev = qmp.events();
            let t = Instant::now();
            let out = graceful_stop(Some(&qmp), proc, Duration::from_secs(30))
                .await
                .expect("stops");
            eprintln!("graceful stop took {:?}", t.elapsed());
            assert_eq!(out, StopOutcome::Powerdown);
            assert!(!proc.is_running());
            let mut saw = Vec::new();
            while let Ok(Ok(e)) = tokio::time::timeout(Duration::from_secs(2), ev.recv()).await {
                let done = e == VmEvent::Disconnected;
                saw.push(e);
                if done {
                    break;
                }
            }
            assert_eq!(
                saw,
                [
                    VmEvent::Powerdown,
                    VmEvent::Shutdown {
                        guest: true,
                        reason: "guest-shutdown".into()
                    },
                    VmEvent::Disconnected
                ]
            );
        })
    });
}
