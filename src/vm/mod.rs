//! The only code that builds QEMU command lines, spawns or adopts QEMU processes, speaks QMP
//! and creates overlay disks.
//!
//! Layout: [`image`] reads an image directory's manifest; [`argv`] turns a [`VmSpec`] into an
//! argv vector (pure, table-tested); [`accel`] decides between KVM and TCG by running a tiny
//! test guest; [`process`] spawns QEMU in its own session (so it outlives the daemon), adopts a
//! running one from its pidfile and watches it through a pidfd; [`qmp`] is the QMP client with
//! per-command deadlines and an event stream; [`disk`] makes qcow2 overlays and checks free
//! space; [`lifecycle`] composes these into a graceful stop. [`confine`] gives each QEMU its
//! own uid (dropped to before exec, no capabilities); [`cgroup`] puts it in its own cgroups
//! (CPU quota, memory and task limits) on cgroup v1 or v2. [`snapshot`] takes, reverts and
//! deletes internal qcow2 snapshots of an overlay.
//!
//! This module knows nothing about users, hostings or HTTP: callers hand it a [`VmSpec`] and
//! paths, and get processes, QMP handles and events back.

pub mod accel;
pub mod agent;
pub mod argv;
pub mod cgroup;
pub mod confine;
pub mod disk;
pub mod image;
pub mod lifecycle;
pub mod process;
pub mod procfs;
pub mod qmp;
pub mod serial;
pub mod snapshot;

mod error;

pub use accel::{probe_kvm, resolve, AccelChoice, KvmProbe};
pub use argv::{qemu_argv, Accel, Boot, NetSpec, VmSpec};
pub use cgroup::{Cgroups, Limits};
pub use confine::Credentials;
pub use disk::{check_free_space, create_overlay};
pub use error::VmError;
pub use image::{BootMode, Image, ImageManifest};
pub use lifecycle::{graceful_stop, StopOutcome};
pub use process::{adopt, cap_serial_log, spawn, spawn_argv, SpawnOptions, VmProcess};
pub use qmp::{Deadlines, DiskStats, Qmp, RunState, VmEvent};
