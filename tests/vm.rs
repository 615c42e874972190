//! Privileged tests of the `vm` module against a real QEMU: QMP control and events, adoption
//! after "daemon death", pidfd exit watching, QMP deadlines, the accelerator probe, and a real
//! boot of the project's image on a tap inside a private network namespace; each QEMU under
//! its own uid without capabilities, and in its own cgroups.
//!
//! Run with `ROOST_PRIVILEGED_TESTS=1 cargo test --test vm`.

mod common;

use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use roost::vm::accel::{probe_kvm, resolve, run_test_guest, AccelChoice};
use roost::vm::argv::{escape_opt, vm_uuid, Accel, Boot, NetSpec, VmSpec};
use roost::vm::cgroup::{limit_files, Cgroups, Limits};
use roost::vm::confine::{hand_over, vm_uid, Credentials, DEFAULT_UID_BASE};
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
                user: None,
                cgroups: Vec::new(),
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
            snapshot: Duration::from_secs(1),
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
        let t = run_test_guest(
            Path::new("qemu-system-x86_64"),
            Accel::Tcg,
            Duration::from_secs(10),
        )
        .await
        .expect("test firmware exits under TCG");
        assert!(t < Duration::from_secs(5), "{t:?}");

        let start = Instant::now();
        let probe = probe_kvm(Path::new("qemu-system-x86_64")).await;
        eprintln!("kvm probe: {probe:?} in {:?}", start.elapsed());
        assert!(probe.reason.contains("KVM"), "{}", probe.reason);
        assert!(start.elapsed() < Duration::from_secs(8));
        if Path::new("/dev/kvm").exists() && !probe.usable {
            // This project's machines: nested KVM hangs, so the guest must time out.
            assert!(probe.reason.contains("using TCG"), "{}", probe.reason);
        }
        let (accel, reason) = resolve(AccelChoice::Auto, Path::new("qemu-system-x86_64")).await;
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
            // QEMU runs as `nobody` from its first instruction, so its files must be nobody's.
            hand_over(dir.path(), 65534, 65534).expect("hand the directory to nobody");
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
                serial_socket: None,
                agent_socket: None,
                user: Some(Credentials::for_vm(65534, None)),
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

/// What a process running as another uid tries in [`try_as`].
#[derive(Clone, Copy, Debug)]
enum Try {
    Read,
    ReadWrite,
    List,
    Connect,
    Signal(i32),
}

/// Forks a child that becomes `uid:uid` with no groups and tries each item; returns 0 for
/// each that worked, else its errno. The child makes only system calls (no allocation).
fn try_as(uid: u32, tries: &[(&Path, Try)]) -> Vec<i32> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    assert!(tries.len() <= 32);
    let paths: Vec<CString> = tries
        .iter()
        .map(|(p, _)| CString::new(p.as_os_str().as_bytes()).expect("no NUL"))
        .collect();
    let addrs: Vec<libc::sockaddr_un> = tries
        .iter()
        .map(|(p, _)| {
            // SAFETY: an all-zero sockaddr_un is valid.
            let mut a: libc::sockaddr_un = unsafe { std::mem::zeroed() };
            a.sun_family = libc::AF_UNIX as libc::sa_family_t;
            let b = p.as_os_str().as_bytes();
            assert!(b.len() < a.sun_path.len());
            for (d, s) in a.sun_path.iter_mut().zip(b) {
                *d = *s as libc::c_char;
            }
            a
        })
        .collect();
    let (r, w) = nix::unistd::pipe().expect("pipe");
    // SAFETY: the child only makes system calls on data built before the fork, then exits.
    match unsafe { nix::unistd::fork() }.expect("fork") {
        nix::unistd::ForkResult::Child => unsafe {
            let mut out = [0i32; 32];
            if libc::setgroups(0, std::ptr::null()) < 0
                || libc::setresgid(uid, uid, uid) < 0
                || libc::setresuid(uid, uid, uid) < 0
            {
                libc::_exit(2);
            }
            for (i, (_, t)) in tries.iter().enumerate() {
                let p = paths[i].as_ptr();
                let rc = match t {
                    Try::Read => libc::open(p, libc::O_RDONLY | libc::O_CLOEXEC),
                    Try::ReadWrite => libc::open(p, libc::O_RDWR | libc::O_CLOEXEC),
                    Try::List => {
                        libc::open(p, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC)
                    }
                    Try::Connect => {
                        let s =
                            libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
                        if s < 0 {
                            s
                        } else {
                            libc::connect(
                                s,
                                (&addrs[i] as *const libc::sockaddr_un).cast(),
                                std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
                            )
                        }
                    }
                    Try::Signal(pid) => libc::kill(*pid, 0),
                };
                out[i] = if rc < 0 { *libc::__errno_location() } else { 0 };
            }
            let n = tries.len() * 4;
            let ok = libc::write(w.as_raw_fd(), out.as_ptr().cast(), n) == n as isize;
            libc::_exit(if ok { 0 } else { 3 });
        },
        nix::unistd::ForkResult::Parent { child } => {
            drop(w);
            let mut buf = Vec::new();
            std::io::Read::read_to_end(&mut std::fs::File::from(r), &mut buf).expect("read");
            let st = nix::sys::wait::waitpid(child, None).expect("waitpid");
            assert_eq!(
                st,
                nix::sys::wait::WaitStatus::Exited(child, 0),
                "probe child"
            );
            buf.chunks(4)
                .map(|c| i32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        }
    }
}

/// The `Key:` line of `/proc/PID/status`, split on whitespace.
fn status_field(pid: i32, key: &str) -> Vec<String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    s.lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// Two VMs in one state directory, each QEMU started as its own uid (issue 12): from A's
/// uid, nothing of B (overlay, seed, serial log, pidfile, QMP socket, directory, process)
/// and nothing of the daemon (store, state directory listing) is reachable, while A's own
/// overlay and QMP socket are. QEMU holds no capability and cannot gain one; the daemon
/// (root) still reads the files, speaks QMP and adopts from the pidfile.
#[test]
fn each_qemu_runs_as_its_own_uid() {
    if !common::privileged("each_qemu_runs_as_its_own_uid") {
        return;
    }
    use roost::hosting::paths::{prepare_vms_dir, VmPaths};
    use roost::store::HostingId;
    rt().block_on(async {
        let tmp = tempfile::tempdir().expect("tempdir");
        let cfg = roost::config::Config {
            state_dir: tmp.path().join("state"),
            ..Default::default()
        };
        roost::daemon::prepare_state_dir(&cfg).expect("state dir");
        let store = roost::store::Store::open(&cfg.state_dir).expect("store");
        roost::daemon::tighten_state_files(&cfg).expect("state file modes");
        prepare_vms_dir(&cfg.state_dir).expect("vms dir");
        let subnet = cfg.network.subnet;
        // Above the default range, so never the uid of a VM of a daemon on this host.
        let base = DEFAULT_UID_BASE + 0x0100_0000;
        let mut vms = Vec::new();
        let mut guards = Vec::new();
        for ip in [
            std::net::Ipv4Addr::new(10, 88, 0, 2),
            std::net::Ipv4Addr::new(10, 88, 0, 3),
        ] {
            let id = HostingId::new();
            let p = VmPaths::new(&cfg.state_dir, id);
            std::fs::create_dir(&p.dir).expect("vm dir");
            sh(&[
                "qemu-img",
                "create",
                "-q",
                "-f",
                "qcow2",
                &p.overlay.to_string_lossy(),
                "16M",
            ]);
            std::fs::write(&p.seed, vec![0u8; 1 << 20]).expect("seed");
            let uid = vm_uid(base, subnet.host_offset(ip).expect("in the subnet")).expect("uid");
            hand_over(&p.dir, uid, uid).expect("hand over");
            let spec = VmSpec {
                id: id.0,
                name: format!("confine-{ip}"),
                memory_mib: 64,
                vcpus: 1,
                accel: Accel::Tcg,
                boot: Boot::Firmware,
                overlay: p.overlay.clone(),
                seed: Some(p.seed.clone()),
                net: None,
                qmp_socket: p.qmp.clone(),
                pidfile: p.pidfile.clone(),
                serial_log: p.serial_log.clone(),
                serial_socket: None,
                agent_socket: None,
                user: Some(Credentials::for_vm(uid, None)),
            };
            let proc = spawn(&spec, None, &p.qemu_log).await.unwrap_or_else(|e| {
                panic!("spawn: {e}: {:?}", std::fs::read_to_string(&p.qemu_log))
            });
            guards.push(Guard(Some(proc)));
            vms.push((id, p, uid));
        }
        let pid = |i: usize| guards[i].0.as_ref().expect("held").pid();
        let (a, b) = (&vms[0], &vms[1]);
        assert_ne!(a.2, b.2, "two VMs, two uids");

        for (i, (id, p, uid)) in vms.iter().enumerate() {
            let u = uid.to_string();
            assert_eq!(status_field(pid(i), "Uid:"), [u.as_str(); 4]);
            assert_eq!(status_field(pid(i), "Gid:"), [u.as_str(); 4]);
            assert!(status_field(pid(i), "Groups:").is_empty());
            for caps in ["CapEff:", "CapPrm:", "CapAmb:"] {
                assert_eq!(status_field(pid(i), caps), ["0000000000000000"], "{caps}");
            }
            assert_eq!(status_field(pid(i), "NoNewPrivs:"), ["1"]);
            assert_eq!(status_field(pid(i), "Seccomp:"), ["2"], "-sandbox on");
            // The daemon (root) still speaks QMP, reads the serial log and adopts.
            let qmp = Qmp::connect(&p.qmp).await.expect("root connects to QMP");
            assert_eq!(qmp.query_status().await.expect("status"), RunState::Running);
            drop(qmp);
            std::fs::read(&p.serial_log).expect("root reads the serial log");
            let adopted = adopt(&p.pidfile, id.0).expect("adopt").expect("found");
            assert_eq!(adopted.pid(), pid(i));
        }

        let store_file = cfg.state_dir.join("roost.redb");
        let tries: Vec<(&Path, Try)> = vec![
            (&b.1.overlay, Try::Read),
            (&b.1.seed, Try::Read),
            (&b.1.serial_log, Try::Read),
            (&b.1.pidfile, Try::Read),
            (&b.1.qmp, Try::Connect),
            (&b.1.dir, Try::List),
            (Path::new("/"), Try::Signal(pid(1))),
            (&store_file, Try::Read),
            (&cfg.state_dir, Try::List),
            (&a.1.overlay, Try::ReadWrite),
            (&a.1.qmp, Try::Connect),
        ];
        let got = try_as(a.2, &tries);
        let e = libc::EACCES;
        assert_eq!(
            got,
            [e, e, e, e, e, e, libc::EPERM, e, e, 0, 0],
            "errno per attempt as A's uid: {tries:?}"
        );
        drop(guards);
        drop(store);
    });
}

/// A QEMU started through a VM cgroup with a CPU quota of 0.2 cores runs under it from its
/// first instruction: a guest that spins (`jmp $` at the reset vector) uses well under one
/// core. The memory and task limits are written, `/proc/PID/cgroup` names the VM's cgroup,
/// and the cgroup is gone once the VM is removed. Fails without the quota (the guest spins
/// at a whole core) or without joining before exec.
#[test]
fn a_vm_cgroup_holds_its_qemu_to_its_cpu_quota() {
    if !common::privileged("a_vm_cgroup_holds_its_qemu_to_its_cpu_quota") {
        return;
    }
    rt().block_on(async {
        let cgroups = Cgroups::discover();
        let layout = cgroups.layout().clone();
        for c in ["cpu", "memory", "pids"] {
            assert!(
                layout
                    .hierarchies
                    .iter()
                    .any(|h| h.controllers.iter().any(|x| x == c)),
                "this host has no {c} controller for VMs: {layout:?}"
            );
        }
        let id = Ulid::new().to_string();
        let limits = Limits {
            cpu_quota_us: 20_000,
            cpu_period_us: 100_000,
            memory_bytes: 256 << 20,
            pids: 64,
            io_weight: 100,
        };
        let cg = cgroups.create(&id, &limits).expect("cgroup");
        let dirs = cg.dirs.clone();
        // Dropped after the QEMU guard below: removes the cgroups even when the test fails.
        let _cg_guard = CgroupGuard(layout.clone(), dirs.clone());
        assert_eq!(dirs, cgroups.dirs(&id));

        let bare = Bare::new();
        let bios = bare.dir.path().join("spin.bin");
        let mut rom = vec![0u8; 64 << 10];
        rom[0xfff0] = 0xeb; // jmp $ at the reset vector
        rom[0xfff1] = 0xfe;
        std::fs::write(&bios, rom).expect("bios");
        let mut argv = bare.argv();
        argv.extend(["-bios".into(), bios.into_os_string()]);
        let proc = spawn_argv(
            "qemu-system-x86_64".as_ref(),
            &argv,
            SpawnOptions {
                tap: None,
                stderr_log: bare.dir.path().join("qemu.log"),
                qmp_socket: bare.sock(),
                ready_deadline: Duration::from_secs(10),
                user: None,
                cgroups: cg.procs,
            },
        )
        .await
        .expect("qemu starts");
        let guard = Guard(Some(proc));
        let pid = guard.0.as_ref().expect("held").pid();

        // In every VM cgroup, and /proc says so.
        let own = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("cgroup");
        for h in &layout.hierarchies {
            let procs =
                std::fs::read_to_string(h.parent.join(&id).join("cgroup.procs")).expect("procs");
            assert!(
                procs.split_whitespace().any(|p| p == pid.to_string()),
                "{procs}"
            );
        }
        assert!(
            own.lines()
                .filter(|l| l.ends_with(&format!("/{id}")))
                .count()
                >= 1,
            "{own}"
        );
        // Every limit reads back as written.
        for h in &layout.hierarchies {
            for c in &h.controllers {
                for (file, value, optional) in limit_files(h.version, c, &limits) {
                    match std::fs::read_to_string(h.parent.join(&id).join(file)) {
                        Ok(v) => assert_eq!(v.trim(), value, "{file}"),
                        Err(_) if optional => {}
                        Err(e) => panic!("{file}: {e}"),
                    }
                }
            }
        }

        // CPU used against wall time over a window of at least 3 s.
        let usage = || cgroups.cpu_usage(&id).expect("cgroup cpu usage");
        let (u0, t0) = (usage(), Instant::now());
        let (u1, t1) = common::poll("a 3 s window", Duration::from_secs(10), || {
            (t0.elapsed() >= Duration::from_secs(3)).then(|| (usage(), Instant::now()))
        });
        let ratio = (u1 - u0).as_secs_f64() / (t1 - t0).as_secs_f64();
        eprintln!("spinning guest under a 0.2-core quota used {ratio:.3} cores");
        assert!(ratio > 0.05, "the guest does not spin: {ratio}");
        assert!(ratio < 0.5, "the quota does not hold: {ratio}");

        drop(guard);
        cgroups
            .remove(&id, Duration::from_secs(5))
            .await
            .expect("cgroup removed");
        for d in &dirs {
            assert!(!d.exists(), "{} is left", d.display());
        }
    });
}

/// Removes a test's VM cgroups and, when empty, their parents.
struct CgroupGuard(roost::vm::cgroup::Layout, Vec<PathBuf>);

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        for d in &self.1 {
            let end = Instant::now() + Duration::from_secs(5);
            while d.exists() && std::fs::remove_dir(d).is_err() && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        for h in &self.0.hierarchies {
            let _ = std::fs::remove_dir(&h.parent);
        }
    }
}
