//! Tap devices through `/dev/net/tun`: the daemon opens the tap, QEMU gets the fd.
//!
//! The tap is not persistent: it lives exactly as long as some process holds an fd to it.
//! The daemon opens it, attaches it to the bridge, passes the fd to QEMU (`-netdev
//! tap,fd=N`) and closes its own copy; from then on the tap lives and dies with QEMU. A
//! daemon restart therefore leaves running VMs' taps in place, and a VM that dies takes its
//! tap with it (the reaper only has to catch taps some other way left behind).

use std::ffi::c_short;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::raw::{c_char, c_int};

use nix::fcntl::{open, OFlag};
use nix::sys::stat::Mode;
use tracing::info;

use super::ident::IFNAME_MAX;
use super::{valid_ifname, NetError};

/// The flags for roost's taps: Ethernet frames, no packet-info header, and a virtio-net
/// header (QEMU checks `IFF_VNET_HDR` on the fd and then offloads checksums and GSO).
pub const TAP_FLAGS: c_short = (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as c_short;

/// `struct ifreq` as `TUNSETIFF` reads it: the name, then the flags in the union.
#[repr(C)]
pub struct IfReq {
    name: [c_char; libc::IFNAMSIZ],
    flags: c_short,
    // The rest of the 24-byte union in `struct ifreq`.
    _pad: [u8; 22],
}

impl IfReq {
    fn new(name: &str, flags: c_short) -> Self {
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            flags,
            _pad: [0; 22],
        };
        // `name` is at most IFNAME_MAX (15) bytes, so a NUL always remains.
        for (dst, src) in req.name.iter_mut().zip(name.bytes().take(IFNAME_MAX)) {
            *dst = src as c_char;
        }
        req
    }
}

// TUNSETIFF is declared `_IOW('T', 202, int)` although it passes a `struct ifreq *`, hence
// the "bad" variant with the request code spelled out.
nix::ioctl_write_ptr_bad!(
    tunsetiff,
    nix::request_code_write!(b'T', 202, std::mem::size_of::<c_int>()),
    IfReq
);
nix::ioctl_write_int!(tunsetpersist, b'T', 203);

/// Creates (or attaches to an unheld leftover) tap `name` and returns its fd.
///
/// The fd has `O_CLOEXEC` set: the code spawning QEMU must place it at a known number in
/// the child without that flag (e.g. `dup2` in `pre_exec`) and pass `fd=N`. If another
/// process already holds the tap, this fails with `EBUSY`.
pub fn open_tap(name: &str) -> Result<OwnedFd, NetError> {
    if !valid_ifname(name) {
        return Err(NetError::InvalidName(name.to_owned()));
    }
    let tun_err = |op| {
        move |source| NetError::Tun {
            name: name.to_owned(),
            op,
            source,
        }
    };
    let raw = open(
        "/dev/net/tun",
        OFlag::O_RDWR | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(tun_err("open /dev/net/tun"))?;
    // SAFETY: `open` just returned this descriptor and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let req = IfReq::new(name, TAP_FLAGS);
    // SAFETY: `fd` is an open tun fd and `req` a valid `struct ifreq` that outlives the call.
    unsafe { tunsetiff(raw, &req) }.map_err(tun_err("TUNSETIFF"))?;
    // Not persistent: the tap goes away with the last fd (QEMU's). This matters when
    // re-attaching to a tap someone made persistent; for a new tap it is the default.
    // SAFETY: `fd` is an open tun fd bound to a device; the argument is a plain integer.
    unsafe { tunsetpersist(raw, 0) }.map_err(tun_err("TUNSETPERSIST"))?;
    info!(tap = name, "tap opened");
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifreq_layout_matches_the_kernel() {
        assert_eq!(
            std::mem::size_of::<IfReq>(),
            std::mem::size_of::<libc::ifreq>()
        );
        let req = IfReq::new("rtabcdefghijklm", TAP_FLAGS);
        assert_eq!(
            req.name[..15].iter().map(|&c| c as u8).collect::<Vec<_>>(),
            b"rtabcdefghijklm"
        );
        assert_eq!(req.name[15], 0);
        assert_eq!(
            req.flags as c_int,
            libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR
        );
    }

    #[test]
    fn rejects_bad_names_before_any_syscall() {
        for bad in ["", "much-too-long-name", "a/b"] {
            assert!(
                matches!(open_tap(bad), Err(NetError::InvalidName(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn request_code_is_tunsetiff() {
        // 0x400454ca on x86_64 and aarch64, as in <linux/if_tun.h>.
        assert_eq!(
            nix::request_code_write!(b'T', 202, std::mem::size_of::<c_int>()) as u64,
            0x4004_54ca
        );
    }
}
