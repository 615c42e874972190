//! `roost check`: a preflight report of whether this host can run roost's VMs.
//!
//! Reads the host (binaries, capabilities, disk) and reports; it changes nothing.

use std::process::Command;

use crate::config::Config;

/// One line of the report.
#[derive(Debug, Clone)]
pub struct Finding {
    pub name: &'static str,
    pub ok: bool,
    /// A failing finding that is fatal makes `roost check` exit non-zero.
    pub fatal: bool,
    pub detail: String,
}

/// Runs every check; `accel` is what `[vm] accel` resolves to on this host, with why.
pub fn run(cfg: &Config, accel: (crate::vm::Accel, String)) -> Vec<Finding> {
    let mut all = vec![
        qemu(cfg),
        kvm(accel),
        net_admin(),
        state_dir(cfg),
        vm_uids(
            cfg,
            &std::fs::read_to_string("/etc/passwd").unwrap_or_default(),
        ),
        free_disk(cfg),
        image(cfg),
    ];
    all.extend(https(cfg, crate::tls::manager::now()));
    all
}

/// What HTTPS will serve: the certificates on disk (issuer, names, expiry) and what is
/// missing. Never fatal: plain HTTP and the VMs work without them.
pub fn https(cfg: &Config, now: i64) -> Vec<Finding> {
    use crate::tls::{certs, manager};
    let warn = |name, detail: String| Finding {
        name,
        ok: false,
        fatal: false,
        detail,
    };
    let describe = |i: &crate::tls::CertInfo| {
        // Whole days elapsed, counted away from now in both directions:
        // ten days and a second ago is "10 days ago", not 11.
        let days = (i.not_after - now).abs() / 86400;
        format!(
            "{} issued by {}; {}",
            i.names.join(", "),
            i.issuer,
            if i.expired(now) {
                format!("EXPIRED {days} days ago")
            } else {
                format!("valid for {days} more days")
            }
        )
    };
    let judge = |name, i: &crate::tls::CertInfo| Finding {
        name,
        ok: !i.expired(now),
        fatal: false,
        detail: describe(i),
    };
    if !cfg.https.enabled {
        return vec![Finding {
            name: "https",
            ok: true,
            fatal: false,
            detail: "off ([https] enabled = false): everything is served over plain HTTP".into(),
        }];
    }
    let mut out = Vec::new();
    if let (Some(cert), Some(key)) = (&cfg.https.cert_file, &cfg.https.key_file) {
        match certs::load_files(manager::FILE_SLOT, cert, key) {
            Ok(l) => {
                let mut f = judge("certificate", &l.info);
                let missing: Vec<String> = [cfg.domain.clone(), format!("x.{}", cfg.domain)]
                    .into_iter()
                    .filter(|n| !l.info.covers(n))
                    .collect();
                if !missing.is_empty() {
                    f.ok = false;
                    f.detail
                        .push_str(&format!("; does not cover {}", missing.join(", ")));
                }
                out.push(f);
            }
            Err(e) => out.push(warn(
                "certificate",
                format!(
                    "{}: HTTPS handshakes will fail until it is fixed",
                    crate::error_chain(&e)
                ),
            )),
        }
        return out;
    }
    out.push(Finding {
        name: "acme",
        ok: true,
        fatal: false,
        detail: format!(
            "certificates from {}{}",
            cfg.acme.directory,
            match cfg.acme.dns_listen {
                Some(a) if !cfg.acme.dns_alias.is_empty() => format!(
                    "; DNS-01 answers on {a} for _acme-challenge.{alias} (delegate it there with an NS record; _acme-challenge.{} must be a CNAME to it)",
                    cfg.domain,
                    alias = cfg.acme.dns_alias
                ),
                Some(a) => format!(
                    "; DNS-01 answers on {a} (delegate _acme-challenge.{} there with an NS record)",
                    cfg.domain
                ),
                None => format!(
                    "; acme.dns_listen unset: no *.{} certificate, so <slug>.{} has no HTTPS",
                    cfg.domain, cfg.domain
                ),
            }
        ),
    });
    let (good, bad) = certs::load_dir(&manager::cert_dir(&cfg.state_dir));
    match good.iter().find(|l| l.info.slot == manager::DOMAIN_SLOT) {
        Some(l) => out.push(judge("certificate", &l.info)),
        None => out.push(warn(
            "certificate",
            format!(
                "none yet for {}: roost orders it when it starts (see its log)",
                cfg.domain
            ),
        )),
    }
    let custom: Vec<&certs::Loaded> = good
        .iter()
        .filter(|l| l.info.slot != manager::DOMAIN_SLOT)
        .collect();
    if !custom.is_empty() {
        let expired = custom.iter().filter(|l| l.info.expired(now)).count();
        out.push(Finding {
            name: "custom_certs",
            ok: expired == 0,
            fatal: false,
            detail: format!(
                "{} custom domain certificates, {expired} expired",
                custom.len()
            ),
        });
    }
    for e in bad {
        out.push(warn("certificate", crate::error_chain(&e)));
    }
    out
}

/// Prints the report; returns whether the host can run VMs.
pub fn print(findings: &[Finding]) -> bool {
    let mut fine = true;
    for f in findings {
        let mark = if f.ok {
            "ok  "
        } else if f.fatal {
            "FAIL"
        } else {
            "warn"
        };
        println!("{mark} {:<14} {}", f.name, f.detail);
        fine &= f.ok || !f.fatal;
    }
    println!(
        "{}",
        if fine {
            "this host can run roost VMs"
        } else {
            "this host cannot run roost VMs"
        }
    );
    fine
}

fn qemu(cfg: &Config) -> Finding {
    let r = Command::new(&cfg.vm.qemu).arg("--version").output();
    match r {
        Ok(o) if o.status.success() => Finding {
            name: "qemu",
            ok: true,
            fatal: true,
            detail: String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_owned(),
        },
        Ok(o) => Finding {
            name: "qemu",
            ok: false,
            fatal: true,
            detail: format!(
                "{} --version failed: {}",
                cfg.vm.qemu.display(),
                String::from_utf8_lossy(&o.stderr).trim()
            ),
        },
        Err(e) => Finding {
            name: "qemu",
            ok: false,
            fatal: true,
            detail: format!(
                "{} not runnable: {e} (apt-get install qemu-system-x86)",
                cfg.vm.qemu.display()
            ),
        },
    }
}

fn kvm((accel, why): (crate::vm::Accel, String)) -> Finding {
    Finding {
        name: "accel",
        ok: true,
        fatal: false,
        detail: format!("{accel:?}: {why}"),
    }
}

/// CAP_NET_ADMIN is bit 12 of the effective capability set.
fn net_admin() -> Finding {
    let caps = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:").map(|v| v.trim().to_owned()))
        })
        .and_then(|hex| u64::from_str_radix(&hex, 16).ok())
        .unwrap_or(0);
    let ok = caps & (1 << 12) != 0;
    Finding {
        name: "net_admin",
        ok,
        fatal: true,
        detail: if ok {
            "CAP_NET_ADMIN held (bridge and taps can be managed)".into()
        } else {
            "CAP_NET_ADMIN missing: run as root (or with the systemd unit)".into()
        },
    }
}

fn state_dir(cfg: &Config) -> Finding {
    let dir = &cfg.state_dir;
    let probe = dir.join(".roost-check");
    // Created as `roost serve` creates it: 0711, never listable or readable by others.
    let r = std::os::unix::fs::DirBuilderExt::mode(
        std::fs::DirBuilder::new().recursive(true),
        crate::daemon::STATE_DIR_MODE,
    )
    .create(dir)
    .and_then(|_| std::fs::write(&probe, b"x"))
    .and_then(|_| std::fs::remove_file(&probe));
    Finding {
        name: "state_dir",
        ok: r.is_ok(),
        fatal: true,
        detail: match r {
            Ok(()) => format!("{} writable", dir.display()),
            Err(e) => format!("{} not writable: {e}", dir.display()),
        },
    }
}

/// Accounts in `passwd` (the text of `/etc/passwd`) whose uid lies in the VMs' range: such
/// an account could read the files of the VM with its uid and signal its QEMU.
fn vm_uids(cfg: &Config, passwd: &str) -> Finding {
    let Some(range) = cfg.vm_uids() else {
        return Finding {
            name: "vm_uids",
            ok: false,
            fatal: true,
            detail: "vm.uid_base does not give a valid range".into(),
        };
    };
    let clashes: Vec<String> = passwd
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let uid: u32 = f.nth(1)?.parse().ok()?;
            range.contains(&uid).then(|| format!("{name} ({uid})"))
        })
        .collect();
    Finding {
        name: "vm_uids",
        ok: clashes.is_empty(),
        fatal: false,
        detail: if clashes.is_empty() {
            format!(
                "QEMUs run as uids {}-{}, which no account uses",
                range.start(),
                range.end()
            )
        } else {
            format!(
                "accounts inside the VM uid range {}-{}: {} (change [vm] uid_base)",
                range.start(),
                range.end(),
                clashes.join(", ")
            )
        },
    }
}

fn free_disk(cfg: &Config) -> Finding {
    match crate::vm::disk::available_bytes(&cfg.state_dir) {
        Ok(free) => {
            let need = u64::from(cfg.vm.disk_reserve_gib + cfg.vm.disk_gib) << 30;
            Finding {
                name: "free_disk",
                ok: free >= need,
                fatal: false,
                detail: format!(
                    "{:.1} GiB free in {} (one VM at most {} GiB plus a {} GiB reserve)",
                    free as f64 / (1u64 << 30) as f64,
                    cfg.state_dir.display(),
                    cfg.vm.disk_gib,
                    cfg.vm.disk_reserve_gib
                ),
            }
        }
        Err(e) => Finding {
            name: "free_disk",
            ok: false,
            fatal: false,
            detail: format!(
                "cannot stat {}: {}",
                cfg.state_dir.display(),
                crate::error_chain(&e)
            ),
        },
    }
}

fn image(cfg: &Config) -> Finding {
    let m = cfg.vm.image.join("manifest.json");
    let ok = m.is_file();
    Finding {
        name: "image",
        ok,
        fatal: true,
        detail: if ok {
            format!("{} present", m.display())
        } else {
            format!("{} missing: run scripts/build-image.sh", m.display())
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_in_the_vm_uid_range_are_reported() {
        let cfg = Config::default();
        let passwd = "root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534::/:/usr/sbin/nologin\n";
        let f = vm_uids(&cfg, passwd);
        assert!(f.ok, "{}", f.detail);
        let clash = format!(
            "{passwd}intruder:x:{}:100::/:/bin/sh\n",
            cfg.vm.uid_base + 5
        );
        let f = vm_uids(&cfg, &clash);
        assert!(
            !f.ok && !f.fatal && f.detail.contains("intruder"),
            "{}",
            f.detail
        );
    }
}
