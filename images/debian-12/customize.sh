#!/bin/bash
# mmdebstrap customize hook: runs on the host after all packages are installed.
# Usage: customize.sh ROOTFS RECIPE_DIR
# Everything here must be deterministic and must not need network access.
set -euo pipefail
root=$1
recipe=$2

# Configuration files shipped (also copied before the packages are installed, so
# that e.g. the initramfs is generated once with our settings); copy again so
# that no maintainer script has the last word.
if [ -d "$recipe/files" ]; then
  cp -a --no-preserve=ownership "$recipe/files/." "$root/"
fi

echo debian > "$root/etc/hostname"
cat > "$root/etc/hosts" <<'HOSTS'
127.0.0.1	localhost
::1		localhost ip6-localhost ip6-loopback
ff02::1		ip6-allnodes
ff02::2		ip6-allrouters
HOSTS

# ext4 directly on the whole disk; root is mounted rw by the kernel (cmdline "rw"),
# so no fsck pass is needed at boot.
echo '/dev/vda / ext4 rw,noatime,errors=remount-ro 0 0' > "$root/etc/fstab"

# ifupdown reads the fragments cloud-init renders from network-config.
cat > "$root/etc/network/interfaces" <<'ENI'
# Loopback here; the NIC is configured by cloud-init in interfaces.d.
auto lo
iface lo inet loopback

source /etc/network/interfaces.d/*
ENI
mkdir -p "$root/etc/network/interfaces.d"

chroot "$root" systemctl enable nginx.service ssh.service
grep -v '^\s*#' "$recipe/masked-units" | grep -v '^\s*$' | while read -r unit; do
  ln -sfn /dev/null "$root/etc/systemd/system/$unit"
done

# No login as root by password; users come from cloud-init with SSH keys.
chroot "$root" passwd -l root >/dev/null

# Per-VM identity must not be baked in: every VM makes its own machine-id and
# SSH host keys at first boot (systemd and cloud-init do that).
rm -f "$root"/etc/ssh/ssh_host_*
# Password logins are off in the main sshd_config itself and in the drop-in that Debian's
# cloud-init edits for `ssh_pwauth: false` (files/etc/ssh/sshd_config.d/50-cloud-init.conf):
# cloud-init restarts sshd when that line is not already there, and the restart, seconds
# after sshd first answered, resets the first logins of a just-booted VM.
sed -i -E 's/^#?[[:space:]]*PasswordAuthentication[[:space:]].*/PasswordAuthentication no/' "$root/etc/ssh/sshd_config"
grep -q '^PasswordAuthentication no$' "$root/etc/ssh/sshd_config" || echo 'PasswordAuthentication no' >> "$root/etc/ssh/sshd_config"
: > "$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
rm -f "$root/var/lib/systemd/random-seed"

# Keep the image small.
chroot "$root" apt-get clean
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin \
       "$root"/var/cache/debconf/*-old "$root"/var/lib/dpkg/*-old \
       "$root"/var/log/*.log "$root"/var/log/apt/* "$root"/tmp/* "$root"/var/tmp/*
rm -rf "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/*

# /etc and /var are up to date with /usr: skip the ConditionNeedsUpdate units
# (sysusers, ldconfig, hwdb and catalog updates) at first boot.
touch -r "$root/usr" "$root/etc/.updated" "$root/var/.updated"

# No dynamic motd (pam_motd would run update-motd.d scripts at every login).
sed -i 's/^\(session\s\+optional\s\+pam_motd.so\s\+motd=\/run\/motd.dynamic\)/# roost: \1/' \
  "$root/etc/pam.d/sshd" "$root/etc/pam.d/login"
