//! The series read at scrape time: each VM's figures, hostings by state, capacity, the
//! state directory's file system and the certificates being served. The [`Snapshot`] is
//! plain data that [`super::Source`]s fill; the collector writes exactly what it holds, so
//! a hosting (or certificate) that is gone has no series left.

use std::sync::{Arc, Mutex};

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;

/// Everything read at one scrape.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Every hosting the store has now, with the figures that could be read.
    pub vms: Vec<VmSample>,
    /// Hostings by state, every state listed (zero or not).
    pub states: Vec<(&'static str, u64)>,
    /// Hostings whose VM sleeps while idle (paused by roost, woken by the next visit).
    pub asleep: u64,
    /// The budgets and what the hostings hold (absent when they could not be read).
    pub capacity: Option<Capacity>,
    /// The file system of the state directory, where VM disks live (absent when it could
    /// not be read).
    pub state_dir: Option<StateDir>,
    /// Every certificate being served (none without HTTPS).
    pub certificates: Vec<Certificate>,
}

impl Snapshot {
    /// Adds what `other` holds: its lists after this one's, its single figures where this
    /// one has none. Each source fills its own part, so nothing is counted twice.
    pub fn merge(&mut self, other: Snapshot) {
        self.vms.extend(other.vms);
        self.states.extend(other.states);
        self.asleep += other.asleep;
        self.capacity = self.capacity.or(other.capacity);
        self.state_dir = self.state_dir.or(other.state_dir);
        self.certificates.extend(other.certificates);
    }
}

/// One hosting's figures; `None` for what does not exist now (no QEMU runs, no tap, no
/// disk yet) or could not be read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VmSample {
    /// The hosting id (the `vm` label).
    pub id: String,
    /// The owner's username (the `user` label).
    pub user: String,
    /// CPU time used: its cgroup's, else the QEMU process's.
    pub cpu_seconds: Option<f64>,
    /// Memory used: its cgroup's (page cache included), else the QEMU's resident set.
    pub memory_bytes: Option<u64>,
    /// Bytes allocated on the host to its disk overlay.
    pub disk_bytes: Option<u64>,
    /// The tap's counters, as the host sees them: received = sent by the guest.
    pub tap_rx_bytes: Option<u64>,
    pub tap_tx_bytes: Option<u64>,
}

/// Capacity admission's figures (see `GET /api/v1/admin/capacity`), in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capacity {
    pub vms: u64,
    /// `None`: no count limit besides memory and disk.
    pub max_vms: Option<u64>,
    /// Disk snapshots over all hostings (each holds a disk's worth of `disk_bytes`).
    pub snapshots: u64,
    pub memory_bytes: u64,
    pub memory_budget_bytes: u64,
    pub disk_bytes: u64,
    pub disk_budget_bytes: u64,
}

/// The state directory's file system (`statvfs`), in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateDir {
    /// Available to unprivileged writers (the VMs' QEMUs run as their own uids).
    pub free_bytes: u64,
    /// The file system's size.
    pub size_bytes: u64,
}

/// A certificate being served.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Certificate {
    /// Its slot (the `slot` label): `domain`, `file`, or a custom domain's name.
    pub slot: String,
    /// The end of its validity (notAfter), in Unix seconds.
    pub not_after: i64,
}

/// Encodes the latest snapshot at each scrape.
#[derive(Debug)]
pub(super) struct Collector {
    latest: Arc<Mutex<Snapshot>>,
}

impl Collector {
    pub(super) fn new(latest: Arc<Mutex<Snapshot>>) -> Collector {
        Collector { latest }
    }
}

impl prometheus_client::collector::Collector for Collector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snap = super::lock(&self.latest);
        encode(&snap, &mut enc)
    }
}

type VmLabels<'a> = [(&'static str, &'a str); 2];

/// One family with a sample per VM that has a value; nothing at all when none has one.
fn per_vm<M: EncodeMetric>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Unit,
    vms: &[VmSample],
    value: impl Fn(&VmSample) -> Option<M>,
) -> Result<(), std::fmt::Error> {
    let samples: Vec<(VmLabels, M)> = vms
        .iter()
        .filter_map(|v| {
            Some((
                [("vm", v.id.as_str()), ("user", v.user.as_str())],
                value(v)?,
            ))
        })
        .collect();
    let Some((_, first)) = samples.first() else {
        return Ok(());
    };
    let mut family = enc.encode_descriptor(name, help, Some(&unit), first.metric_type())?;
    for (labels, m) in &samples {
        m.encode(family.encode_family(labels)?)?;
    }
    Ok(())
}

/// One gauge without labels.
fn gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let m = enc.encode_descriptor(name, help, unit.as_ref(), MetricType::Gauge)?;
    ConstGauge::new(value).encode(m)
}

pub(super) fn encode(s: &Snapshot, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    let vms = &s.vms;
    per_vm(
        enc,
        "roost_vm_cpu",
        "CPU time a VM has used: its cgroup's, else its QEMU process's.",
        Unit::Seconds,
        vms,
        |v| v.cpu_seconds.map(ConstCounter::new),
    )?;
    per_vm(
        enc,
        "roost_vm_memory",
        "Memory a VM uses: its cgroup's (page cache included), else its QEMU's resident set.",
        Unit::Bytes,
        vms,
        |v| v.memory_bytes.map(ConstGauge::new),
    )?;
    per_vm(
        enc,
        "roost_vm_disk_allocated",
        "Bytes the host has allocated to a VM's disk overlay.",
        Unit::Bytes,
        vms,
        |v| v.disk_bytes.map(ConstGauge::new),
    )?;
    per_vm(
        enc,
        "roost_vm_tap_receive",
        "Bytes the host received on a VM's tap (sent by the guest).",
        Unit::Bytes,
        vms,
        |v| v.tap_rx_bytes.map(ConstCounter::new),
    )?;
    per_vm(
        enc,
        "roost_vm_tap_transmit",
        "Bytes the host sent on a VM's tap (received by the guest).",
        Unit::Bytes,
        vms,
        |v| v.tap_tx_bytes.map(ConstCounter::new),
    )?;
    if !s.states.is_empty() {
        {
            let mut family = enc.encode_descriptor(
                "roost_hostings",
                "Hostings by state.",
                None,
                MetricType::Gauge,
            )?;
            for (state, n) in &s.states {
                ConstGauge::new(*n).encode(family.encode_family(&[("state", *state)])?)?;
            }
        }
        gauge(
            enc,
            "roost_hostings_asleep",
            "Hostings whose VM sleeps while idle (also counted as paused in roost_hostings).",
            None,
            s.asleep,
        )?;
    }
    if let Some(c) = s.capacity {
        gauge(
            enc,
            "roost_capacity_vms",
            "Hostings holding a reservation (every hosting, stopped or not).",
            None,
            c.vms,
        )?;
        gauge(
            enc,
            "roost_capacity_snapshots",
            "Disk snapshots over all hostings; each holds a virtual disk's size of the disk budget.",
            None,
            c.snapshots,
        )?;
        if let Some(max) = c.max_vms {
            gauge(
                enc,
                "roost_capacity_vms_limit",
                "Hostings this host admits ([limits] max_vms).",
                None,
                max,
            )?;
        }
        gauge(
            enc,
            "roost_capacity_memory_reserved",
            "Memory the hostings hold: each its VM's memory limit.",
            Some(Unit::Bytes),
            c.memory_bytes,
        )?;
        gauge(
            enc,
            "roost_capacity_memory_budget",
            "Memory hostings may hold: RAM minus the reserve, times the overcommit ratio.",
            Some(Unit::Bytes),
            c.memory_budget_bytes,
        )?;
        gauge(
            enc,
            "roost_capacity_disk_reserved",
            "Disk the hostings hold: each its virtual disk size, once more per snapshot.",
            Some(Unit::Bytes),
            c.disk_bytes,
        )?;
        gauge(
            enc,
            "roost_capacity_disk_budget",
            "Disk hostings may hold: the state file system minus the reserve, times the overcommit ratio.",
            Some(Unit::Bytes),
            c.disk_budget_bytes,
        )?;
    }
    if let Some(d) = s.state_dir {
        gauge(
            enc,
            "roost_state_dir_free",
            "Bytes available to unprivileged writers on the state directory's file system (VM disks live there).",
            Some(Unit::Bytes),
            d.free_bytes,
        )?;
        gauge(
            enc,
            "roost_state_dir_size",
            "Size of the state directory's file system.",
            Some(Unit::Bytes),
            d.size_bytes,
        )?;
    }
    if !s.certificates.is_empty() {
        let mut family = enc.encode_descriptor(
            "roost_tls_certificate_expiry_timestamp",
            "When a certificate being served expires (notAfter), in seconds since the Unix epoch, by slot.",
            Some(&Unit::Seconds),
            MetricType::Gauge,
        )?;
        for c in &s.certificates {
            ConstGauge::new(c.not_after)
                .encode(family.encode_family(&[("slot", c.slot.as_str())])?)?;
        }
    }
    Ok(())
}
