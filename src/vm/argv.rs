//! The QEMU command line as plain data: [`qemu_argv`] maps a [`VmSpec`] to an argv vector.
//!
//! Nothing here touches the system, so every flag is pinned by table tests. User-controlled
//! text never becomes part of a shell string: each argument is its own vector element, and
//! values embedded in QEMU's `key=value,...` option syntax have their commas doubled (QEMU's
//! escape), so a name or path cannot inject another option.
//!
//! Choices, and why:
//! - `-machine q35`: measured against `pc` (i440fx) with this project's tuned image under TCG
//!   (direct kernel boot, 1 vCPU, seconds from spawn to the guest's nginx answering, three
//!   interleaved triples with scripts/bare-boot.sh on an otherwise idle 2-core host): q35
//!   15.46/15.63/15.26 s, pc 16.02/16.50/16.26 s; q35 won every pair, by 0.9 s (6%) on
//!   average. (An earlier measurement, on the untuned image, to the serial `login:` prompt,
//!   on a host busy with other builds, had pc ahead; the later one is the one roost's create-
//!   to-ready benchmark agrees with.) `microvm` was not tried: it needs virtio-mmio and the
//!   Debian initrd's early module set, and ACPI power-off there differs.
//! - No `-daemonize`: [`super::process`] starts QEMU with `setsid` itself, so it keeps the pid
//!   (and a pidfd) while QEMU still survives the daemon.
//! - The VM id appears in argv as `-uuid` (the ULID's 128 bits as a UUID): `/proc/PID/cmdline`
//!   then identifies the VM for [`super::process::adopt`], and the guest can read it from SMBIOS.
//! - The serial console is a unix socket chardev that roost's console hub holds (QEMU accepts
//!   one client), logged to a file with `logappend=on`, so the log can be truncated in place
//!   while QEMU runs ([`super::process::cap_serial_log`]). Without a socket, a file chardev.
//! - `-sandbox on,...,spawn=deny,elevateprivileges=deny`: QEMU gets its tap as an fd, so it
//!   never needs to exec helpers, and it is started already as its VM's own uid without
//!   capabilities ([`super::confine`]), so it never needs setuid either (no `-runas`).
//! - Under TCG, `tb-size=`[`TCG_TB_MIB`]: QEMU 7.2 reserves 1 GiB for translated code by
//!   default; a fixed size is what the VM's memory limit counts ([`super::cgroup::Limits`]).

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

use ulid::Ulid;

use super::confine::Credentials;

/// The QEMU machine type (see the module docs for why).
pub const MACHINE: &str = "q35";

/// The TCG translation cache, in MiB (`-accel tcg,tb-size=`). A Debian guest's boot and
/// nginx fit with room to spare; when it fills, QEMU flushes it and translates again.
pub const TCG_TB_MIB: u32 = 256;

/// The accelerator QEMU runs the guest with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

/// How the guest boots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Boot {
    /// Direct kernel boot (`-kernel`, `-initrd`, `-append`).
    Kernel {
        kernel: PathBuf,
        initrd: Option<PathBuf>,
        cmdline: String,
    },
    /// The firmware boots the first virtio disk.
    Firmware,
}

/// Everything QEMU needs to know about one VM. Paths are used as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmSpec {
    /// The VM's id; appears in argv (as `-uuid`) so `/proc/PID/cmdline` identifies the VM.
    pub id: Ulid,
    /// A human name for `-name guest=`; may contain anything (commas are escaped).
    pub name: String,
    pub memory_mib: u32,
    pub vcpus: u32,
    pub accel: Accel,
    pub boot: Boot,
    /// The VM's qcow2 overlay (read-write, discard passes through).
    pub overlay: PathBuf,
    /// The cloud-init NoCloud seed (raw, read-only). `None` boots without one.
    pub seed: Option<PathBuf>,
    /// The tap as QEMU will see it: the fd number inside QEMU's process and the guest MAC.
    /// `None` gives the guest no network card.
    pub net: Option<NetSpec>,
    pub qmp_socket: PathBuf,
    pub pidfile: PathBuf,
    pub serial_log: PathBuf,
    /// Where QEMU listens for the serial console's one client (roost's console hub,
    /// [`super::serial`]); everything the guest writes is also appended to `serial_log`.
    /// `None`: the serial console goes to `serial_log` only.
    pub serial_socket: Option<PathBuf>,
    /// Where QEMU listens for roost's side of the guest agent channel (a virtio-serial port
    /// named `org.qemu.guest_agent.0`, see [`super::agent`]). `None`: no channel.
    pub agent_socket: Option<PathBuf>,
    /// The uid, gid and groups QEMU is started with (not part of argv: see
    /// [`super::confine`]). `None` keeps the caller's.
    pub user: Option<Credentials>,
}

/// The guest's network card, backed by an already-open tap fd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetSpec {
    /// fd number of the tap in the QEMU process (see [`super::process::SpawnOptions::tap`]).
    pub tap_fd: i32,
    /// `52:54:00:xx:xx:xx` style MAC.
    pub mac: String,
}

/// The VM id as QEMU's `-uuid` value: the ULID's 128 bits in 8-4-4-4-12 hex form.
pub fn vm_uuid(id: Ulid) -> String {
    let h = format!("{:032x}", u128::from(id));
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Doubles every comma: QEMU's escape for a value inside a `key=value,...` option string.
pub fn escape_opt(value: &OsStr) -> OsString {
    let mut out = Vec::with_capacity(value.len());
    for &b in value.as_bytes() {
        out.push(b);
        if b == b',' {
            out.push(b',');
        }
    }
    OsString::from_vec(out)
}

/// Concatenates literal option text with escaped values.
fn opt(parts: &[Part<'_>]) -> OsString {
    let mut s = OsString::new();
    for p in parts {
        match p {
            Part::Lit(l) => s.push(l),
            Part::Val(v) => s.push(escape_opt(v)),
        }
    }
    s
}

enum Part<'a> {
    Lit(&'a str),
    Val(&'a OsStr),
}
use Part::{Lit, Val};

/// Builds QEMU's argv (without the program name; see [`QEMU_BINARY`]).
pub fn qemu_argv(spec: &VmSpec) -> Vec<OsString> {
    let mut a: Vec<OsString> = Vec::with_capacity(48);
    let mut push = |items: &[&dyn AsRef<OsStr>]| {
        for i in items {
            a.push(i.as_ref().to_os_string());
        }
    };
    push(&[
        &"-name",
        &opt(&[
            Lit("guest="),
            Val(spec.name.as_ref()),
            Lit(",debug-threads=on"),
        ]),
    ]);
    push(&[&"-uuid", &vm_uuid(spec.id)]);
    push(&[&"-machine", &MACHINE]);
    match spec.accel {
        Accel::Kvm => push(&[&"-accel", &"kvm", &"-cpu", &"host"]),
        Accel::Tcg => push(&[
            &"-accel",
            &format!("tcg,thread=multi,tb-size={TCG_TB_MIB}"),
            &"-cpu",
            &"max",
        ]),
    }
    push(&[
        &"-m",
        &spec.memory_mib.to_string(),
        &"-smp",
        &spec.vcpus.to_string(),
    ]);
    push(&[&"-nodefaults", &"-no-user-config", &"-display", &"none"]);
    let chardev = match &spec.serial_socket {
        // `wait=off`: QEMU does not wait for a client; with none, output goes to the log
        // only, so a guest never stalls on its UART.
        Some(sock) => opt(&[
            Lit("socket,id=serial0,path="),
            Val(sock.as_os_str()),
            Lit(",server=on,wait=off,logfile="),
            Val(spec.serial_log.as_os_str()),
            Lit(",logappend=on"),
        ]),
        None => opt(&[
            Lit("file,id=serial0,path="),
            Val(spec.serial_log.as_os_str()),
            Lit(",append=on"),
        ]),
    };
    push(&[&"-chardev", &chardev, &"-serial", &"chardev:serial0"]);
    match &spec.boot {
        Boot::Kernel {
            kernel,
            initrd,
            cmdline,
        } => {
            // -kernel/-initrd/-append take their whole argument as the value: no escaping.
            push(&[&"-kernel", kernel]);
            if let Some(initrd) = initrd {
                push(&[&"-initrd", initrd]);
            }
            push(&[&"-append", cmdline]);
        }
        Boot::Firmware => {}
    }
    push(&[
        &"-drive",
        &opt(&[
            Lit("file="),
            Val(spec.overlay.as_os_str()),
            Lit(",if=virtio,format=qcow2,discard=unmap,detect-zeroes=unmap"),
        ]),
    ]);
    if let Some(seed) = &spec.seed {
        push(&[
            &"-drive",
            &opt(&[
                Lit("file="),
                Val(seed.as_os_str()),
                Lit(",if=virtio,format=raw,readonly=on"),
            ]),
        ]);
    }
    if let Some(net) = &spec.net {
        push(&[
            &"-netdev",
            &format!("tap,id=n0,fd={},vhost=off", net.tap_fd),
            &"-device",
            &opt(&[Lit("virtio-net-pci,netdev=n0,mac="), Val(net.mac.as_ref())]),
        ]);
    }
    // The guest's sshd and cloud-init want entropy early; a virtio RNG costs nothing.
    push(&[&"-device", &"virtio-rng-pci"]);
    if let Some(sock) = &spec.agent_socket {
        push(&[
            &"-chardev",
            &opt(&[
                Lit("socket,id=agent0,path="),
                Val(sock.as_os_str()),
                Lit(",server=on,wait=off"),
            ]),
            &"-device",
            &"virtio-serial-pci,id=vser0",
            &"-device",
            &"virtserialport,bus=vser0.0,chardev=agent0,name=org.qemu.guest_agent.0",
        ]);
    }
    push(&[
        &"-qmp",
        &opt(&[
            Lit("unix:"),
            Val(spec.qmp_socket.as_os_str()),
            Lit(",server=on,wait=off"),
        ]),
    ]);
    push(&[&"-pidfile", &spec.pidfile]);
    push(&[
        &"-sandbox",
        &"on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
    ]);
    push(&[&"-msg", &"timestamp=on"]);
    a
}

/// The program [`qemu_argv`] is meant for.
pub const QEMU_BINARY: &str = "qemu-system-x86_64";

/// True when `cmdline` (the NUL-separated bytes of `/proc/PID/cmdline`) is a QEMU started for
/// VM `id`: the program name contains `qemu-system` and argv has `-uuid <uuid of id>`.
pub fn cmdline_matches(cmdline: &[u8], id: Ulid) -> bool {
    let mut args = cmdline.split(|&b| b == 0);
    let Some(prog) = args.next() else {
        return false;
    };
    if !contains(prog, b"qemu-system") {
        return false;
    }
    let uuid = vm_uuid(id);
    let mut prev_was_uuid = false;
    for arg in args {
        if prev_was_uuid && arg.eq_ignore_ascii_case(uuid.as_bytes()) {
            return true;
        }
        prev_was_uuid = arg == b"-uuid";
    }
    false
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> Ulid {
        Ulid::from_string("01HZY3J3W8YB6Q4W7S9Q2M5N8K").expect("valid ulid")
    }

    fn spec() -> VmSpec {
        VmSpec {
            id: id(),
            name: "alice".into(),
            memory_mib: 512,
            vcpus: 1,
            accel: Accel::Tcg,
            boot: Boot::Kernel {
                kernel: "/img/vmlinuz".into(),
                initrd: Some("/img/initrd.img".into()),
                cmdline: "root=/dev/vda console=ttyS0".into(),
            },
            overlay: "/vms/x/disk.qcow2".into(),
            seed: Some("/vms/x/seed.img".into()),
            net: Some(NetSpec {
                tap_fd: 3,
                mac: "52:54:00:12:34:56".into(),
            }),
            qmp_socket: "/run/roost/x/qmp.sock".into(),
            pidfile: "/run/roost/x/qemu.pid".into(),
            serial_log: "/vms/x/serial.log".into(),
            serial_socket: None,
            agent_socket: None,
            user: Some(Credentials::for_vm(0x7000_0002, None)),
        }
    }

    fn strs(v: &[OsString]) -> Vec<String> {
        v.iter().map(|s| s.to_string_lossy().into_owned()).collect()
    }

    /// Returns the value following `flag` each time it appears.
    fn values(argv: &[OsString], flag: &str) -> Vec<String> {
        let s = strs(argv);
        s.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].clone())
            .collect()
    }

    #[test]
    fn the_guest_agent_gets_a_virtio_serial_port_of_its_own_name() {
        let mut s = spec();
        s.agent_socket = Some("/vms/a,b/agent.sock".into());
        let argv: Vec<String> = qemu_argv(&s)
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let at = argv
            .iter()
            .position(|a| a.starts_with("socket,id=agent0,"))
            .expect("agent chardev");
        assert_eq!(
            &argv[at - 1..at + 5],
            [
                "-chardev",
                "socket,id=agent0,path=/vms/a,,b/agent.sock,server=on,wait=off",
                "-device",
                "virtio-serial-pci,id=vser0",
                "-device",
                "virtserialport,bus=vser0.0,chardev=agent0,name=org.qemu.guest_agent.0",
            ]
        );
        assert!(!qemu_argv(&spec())
            .iter()
            .any(|a| a.to_string_lossy().contains("agent0")));
    }

    #[test]
    fn full_argv() {
        let want = [
            "-name",
            "guest=alice,debug-threads=on",
            "-uuid",
            "018ffc39-0f88-f2cd-7270-f94dc542d513",
            "-machine",
            "q35",
            "-accel",
            "tcg,thread=multi,tb-size=256",
            "-cpu",
            "max",
            "-m",
            "512",
            "-smp",
            "1",
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-chardev",
            "file,id=serial0,path=/vms/x/serial.log,append=on",
            "-serial",
            "chardev:serial0",
            "-kernel",
            "/img/vmlinuz",
            "-initrd",
            "/img/initrd.img",
            "-append",
            "root=/dev/vda console=ttyS0",
            "-drive",
            "file=/vms/x/disk.qcow2,if=virtio,format=qcow2,discard=unmap,detect-zeroes=unmap",
            "-drive",
            "file=/vms/x/seed.img,if=virtio,format=raw,readonly=on",
            "-netdev",
            "tap,id=n0,fd=3,vhost=off",
            "-device",
            "virtio-net-pci,netdev=n0,mac=52:54:00:12:34:56",
            "-device",
            "virtio-rng-pci",
            "-qmp",
            "unix:/run/roost/x/qmp.sock,server=on,wait=off",
            "-pidfile",
            "/run/roost/x/qemu.pid",
            "-sandbox",
            "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
            "-msg",
            "timestamp=on",
        ];
        assert_eq!(strs(&qemu_argv(&spec())), want);
    }

    #[test]
    fn variants_table() {
        // (description, spec change, flag, expected values of that flag)
        type Case = (
            &'static str,
            fn(&mut VmSpec),
            &'static str,
            Vec<&'static str>,
        );
        let cases: Vec<Case> = vec![
            (
                "kvm uses host cpu",
                |s| s.accel = Accel::Kvm,
                "-cpu",
                vec!["host"],
            ),
            ("kvm accel", |s| s.accel = Accel::Kvm, "-accel", vec!["kvm"]),
            (
                "firmware boot has no kernel",
                |s| s.boot = Boot::Firmware,
                "-kernel",
                vec![],
            ),
            (
                "firmware boot has no append",
                |s| s.boot = Boot::Firmware,
                "-append",
                vec![],
            ),
            (
                "kernel without initrd",
                |s| {
                    s.boot = Boot::Kernel {
                        kernel: "/k".into(),
                        initrd: None,
                        cmdline: "a, b".into(),
                    }
                },
                "-initrd",
                vec![],
            ),
            (
                "cmdline is passed verbatim (commas not doubled)",
                |s| {
                    s.boot = Boot::Kernel {
                        kernel: "/k".into(),
                        initrd: None,
                        cmdline: "a, b".into(),
                    }
                },
                "-append",
                vec!["a, b"],
            ),
            (
                "no seed: one drive",
                |s| s.seed = None,
                "-drive",
                vec!["file=/vms/x/disk.qcow2,if=virtio,format=qcow2,discard=unmap,detect-zeroes=unmap"],
            ),
            ("no net: no netdev", |s| s.net = None, "-netdev", vec![]),
            (
                "serial socket for the console hub, logged to the file",
                |s| s.serial_socket = Some("/vms/a,b/serial.sock".into()),
                "-chardev",
                vec!["socket,id=serial0,path=/vms/a,,b/serial.sock,server=on,wait=off,logfile=/vms/x/serial.log,logappend=on"],
            ),
            ("never -runas", |_| {}, "-runas", vec![]),
            (
                "comma in name cannot inject options",
                |s| s.name = "a,process=evil".into(),
                "-name",
                vec!["guest=a,,process=evil,debug-threads=on"],
            ),
            (
                "comma in socket path is escaped",
                |s| s.qmp_socket = "/run/a,b/q.sock".into(),
                "-qmp",
                vec!["unix:/run/a,,b/q.sock,server=on,wait=off"],
            ),
            (
                "comma in MAC is escaped",
                |s| {
                    s.net = Some(NetSpec {
                        tap_fd: 7,
                        mac: "x,vhost=on".into(),
                    })
                },
                "-device",
                vec!["virtio-net-pci,netdev=n0,mac=x,,vhost=on", "virtio-rng-pci"],
            ),
            (
                "tap fd number",
                |s| {
                    s.net = Some(NetSpec {
                        tap_fd: 7,
                        mac: "m".into(),
                    })
                },
                "-netdev",
                vec!["tap,id=n0,fd=7,vhost=off"],
            ),
            (
                "memory and cpus",
                |s| {
                    s.memory_mib = 2048;
                    s.vcpus = 2
                },
                "-smp",
                vec!["2"],
            ),
        ];
        for (what, change, flag, want) in cases {
            let mut s = spec();
            change(&mut s);
            assert_eq!(values(&qemu_argv(&s), flag), want, "{what}");
        }
    }

    #[test]
    fn uuid_is_the_ulid_bits() {
        let id = Ulid::from(0x0123_4567_89ab_cdef_0011_2233_4455_6677_u128);
        assert_eq!(vm_uuid(id), "01234567-89ab-cdef-0011-223344556677");
    }

    #[test]
    fn cmdline_matching() {
        let uuid = vm_uuid(id());
        let good = format!("/usr/bin/qemu-system-x86_64\0-name\0guest=a\0-uuid\0{uuid}\0");
        let other = Ulid::from(1u128);
        let cases: Vec<(String, Ulid, bool)> = vec![
            (good.clone(), id(), true),
            (good.clone(), other, false),
            (format!("/bin/sleep\0-uuid\0{uuid}\0"), id(), false),
            (format!("qemu-system-x86_64\0-name\0{uuid}\0"), id(), false),
            (
                format!("qemu-system-x86_64\0-uuid\0{}\0", uuid.to_uppercase()),
                id(),
                true,
            ),
            (String::new(), id(), false),
        ];
        for (cmdline, id, want) in cases {
            assert_eq!(cmdline_matches(cmdline.as_bytes(), id), want, "{cmdline:?}");
        }
        // The argv we build matches its own id.
        let mut full = b"qemu-system-x86_64\0".to_vec();
        for a in qemu_argv(&spec()) {
            full.extend_from_slice(a.as_bytes());
            full.push(0);
        }
        assert!(cmdline_matches(&full, id()));
    }
}
