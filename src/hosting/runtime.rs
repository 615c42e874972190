//! What this host needs to run VMs (bridge and firewall, image, accelerator, templates,
//! cgroups), prepared once at start, or the reason it cannot.

use tracing::{info, warn};

use super::netrt::NetRuntime;
use super::{paths, RuntimeError};
use crate::cloudinit;
use crate::config::{AccelSetting, Config};
use crate::net;
use crate::vm;

/// Everything needed to run VMs; absent when this host cannot (then creation answers 503).
pub(super) struct VmRuntime {
    pub net: NetRuntime,
    pub image: vm::Image,
    pub accel: vm::Accel,
    pub templates: cloudinit::Templates,
    pub subnet: net::Ipv4Net,
    /// Where VM cgroups go (empty when `[vm] cgroups = false` or the host has none).
    pub cgroups: vm::Cgroups,
    /// The `kvm` group QEMUs join under KVM.
    pub kvm_gid: Option<u32>,
    /// roost's DNS forwarder on the gateway, when guests are told to ask there; serves
    /// until the runtime is dropped.
    pub _dns: Option<crate::dns::DnsServer>,
}

/// A VM's cgroup limits under `accel` (also what capacity admission charges it).
pub(super) fn limits(cfg: &Config, accel: vm::Accel) -> vm::Limits {
    vm::Limits::for_vm(cfg.vm.vcpus, cfg.vm.memory_mib, accel)
}

/// The accelerator `[vm] accel` asks for, as this host can run it (KVM only if a test guest
/// really boots under it), and why. `serve` and `roost check` both decide with this.
pub async fn resolve_accel(cfg: &Config) -> (vm::Accel, String) {
    let choice = match cfg.vm.accel {
        AccelSetting::Auto => vm::AccelChoice::Auto,
        AccelSetting::Kvm => vm::AccelChoice::Kvm,
        AccelSetting::Tcg => vm::AccelChoice::Tcg,
    };
    vm::resolve(choice, &cfg.vm.qemu).await
}

/// Prepares what VMs need, or says why this host cannot run them.
pub(super) async fn setup(cfg: &Config) -> Result<VmRuntime, RuntimeError> {
    let subnet = cfg.network.subnet;
    let image = vm::Image::load(&cfg.vm.image).map_err(RuntimeError::Image)?;
    let templates = match &cfg.cloudinit.templates {
        Some(dir) => cloudinit::Templates::load(dir),
        None => cloudinit::Templates::embedded(),
    }
    .map_err(RuntimeError::Templates)?;
    let (accel, why) = resolve_accel(cfg).await;
    info!(?accel, %why, "accelerator");
    let mut net = NetRuntime::setup(cfg, subnet)
        .await
        .map_err(RuntimeError::Network)?;
    // Each QEMU must pass through to its own (0700) directory; no one may list them.
    paths::prepare_vms_dir(&cfg.state_dir).map_err(RuntimeError::StateDir)?;
    let cgroups = if cfg.vm.cgroups {
        vm::Cgroups::discover()
    } else {
        info!("[vm] cgroups = false: QEMUs run without cgroup limits");
        vm::Cgroups::disabled()
    };
    let dns = if cfg.serves_guest_dns() {
        guest_dns(cfg, subnet).await
    } else {
        None
    };
    if dns.is_some() {
        net.open_guest_dns();
    }
    Ok(VmRuntime {
        _dns: dns,
        net,
        image,
        accel,
        templates,
        subnet,
        cgroups,
        kvm_gid: vm::confine::kvm_gid(),
    })
}

/// Starts the guests' resolver on the gateway; without one, guests cannot resolve names,
/// which is logged, not fatal (sites and SSH still work).
async fn guest_dns(cfg: &Config, subnet: net::Ipv4Net) -> Option<crate::dns::DnsServer> {
    let gateway = subnet.gateway();
    let upstreams = if cfg.network.dns_upstreams.is_empty() {
        match crate::dns::host_upstreams(gateway.into()) {
            Ok(u) => u,
            Err(e) => {
                warn!(error = %super::chain(&e), "guests get no DNS: set [network] dns_upstreams");
                return None;
            }
        }
    } else {
        cfg.network.dns_upstreams.clone()
    };
    let plan = crate::dns::DnsPlan {
        listen: std::net::SocketAddr::from((gateway, 53)),
        allow: subnet,
        upstreams,
        per_client_qps: cfg.network.dns_queries_per_sec,
        per_client_burst: cfg.network.dns_burst,
        cache_size: 4096,
    };
    match crate::dns::DnsServer::start(plan).await {
        Ok(s) => Some(s),
        Err(e) => {
            warn!(error = %super::chain(&e), "guests get no DNS");
            None
        }
    }
}
