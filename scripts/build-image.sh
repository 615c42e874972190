#!/bin/bash
# Build the default roost guest image (Debian 12) from Debian packages alone.
#
# Usage: scripts/build-image.sh [--force]
#   --force  build even if an image of this recipe exists (as <name>-<UTC time>)
#
# Output: ${ROOST_IMAGE_CACHE:-/var/cache/roost/images}/debian-12-<recipe-hash12>/
#   disk.qcow2  ext4 directly on /dev/vda (no partition table)
#   vmlinuz, initrd.img  the guest's kernel and initramfs (QEMU -kernel/-initrd)
#   manifest.json  see images/README.md
# and the symlink .../default pointing to it (replaced atomically).
#
# The build is keyed by a hash of the recipe (images/debian-12/ + this script): an
# unchanged recipe is not rebuilt. It builds in a temporary directory beside the
# target and renames it into place only when complete. Progress goes to stderr;
# the LAST line of stdout is the image directory.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
recipe="$here/images/debian-12"
cache=${ROOST_IMAGE_CACHE:-/var/cache/roost/images}
suite=bookworm
mirror=${ROOST_DEBIAN_MIRROR:-http://deb.debian.org/debian}
force=0
[ "${1:-}" = "--force" ] && force=1

STEP=init
step() { STEP=$1; echo "==> [$(date +%T)] $1" >&2; }
# shellcheck disable=SC2154 # rc is assigned inside the trap's own text
trap 'rc=$?; echo "build-image: FAILED at step \"$STEP\" (exit $rc)" >&2' ERR

[ "$(id -u)" = 0 ] || { echo "build-image: must run as root" >&2; exit 1; }

step "compute recipe hash"
# README.md files are documentation and do not change the image.
recipe_hash=$(
  {
    (cd "$here/images" && find . -type f ! -name '*.md' -print0 | LC_ALL=C sort -z |
      xargs -0 sha256sum)
    (cd "$here" && sha256sum scripts/build-image.sh)
  } | sha256sum | cut -c1-64)
name="debian-12-${recipe_hash:0:12}"
out="$cache/$name"

link_default() {
  ln -sfn "$name" "$cache/.default.tmp.$$"
  mv -Tf "$cache/.default.tmp.$$" "$cache/default"
}

if [ "$force" = 0 ] && [ -f "$out/manifest.json" ]; then
  echo "build-image: $name is up to date" >&2
  link_default
  echo "$out"
  exit 0
fi

if [ -e "$out" ]; then
  # --force: never replace an existing image in place. VMs' overlays name
  # their base by path, and a different base under the same path would
  # corrupt them; build beside it instead.
  name="$name-$(date -u +%Y%m%d%H%M%S)"
  out="$cache/$name"
fi

step "install build dependencies"
# run.sh and test.sh have just resolved and installed roost's whole package set (which
# holds everything this build uses); run alone, this script does it the same way.
if [ -z "${ROOST_DEPS_OK:-}" ]; then
  # shellcheck source=scripts/lib.sh
  source "$here/scripts/lib.sh"
  ensure_packages
fi

mkdir -p "$cache"
tmp=$(mktemp -d "$cache/.build-$name.XXXXXX")
child=
# Long steps run in the background so that a signal is handled at once (bash
# defers traps until a foreground child exits); cleanup stops the child first.
run() { "$@" & child=$!; wait "$child"; child=; }
cleanup() {
  if [ -n "$child" ] && kill -0 "$child" 2>/dev/null; then
    kill -TERM "$child" 2>/dev/null || true
    wait "$child" 2>/dev/null || true
  fi
  # mmdebstrap mounts /proc, /sys and /dev inside the tree while it runs; if it
  # was interrupted, unmount whatever is left (deepest first) and never let rm
  # cross into another filesystem.
  awk -v t="$tmp/" 'index($2, t) == 1 { print $2 }' /proc/self/mounts | sort -r |
    while read -r m; do umount -l "$m" || true; done
  rm -rf --one-file-system "$tmp"
  rm -f "$cache/.default.tmp.$$"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
rootfs="$tmp/rootfs"
staging="$tmp/$name"
mkdir -p "$staging"

step "mmdebstrap $suite"
include=$(grep -v '^\s*#' "$recipe/packages" | grep -v '^\s*$' | paste -sd, -)
run mmdebstrap --variant=apt --mode=root --format=directory \
  --include="$include" \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-include=/usr/share/locale/locale.alias' \
  --aptopt='Acquire::Languages "none"' \
  --essential-hook="cp -a --no-preserve=ownership '$recipe/files/.' \"\$1/\"" \
  --customize-hook="'$recipe/customize.sh' \"\$1\" '$recipe'" \
  "$suite" "$rootfs" \
  "deb $mirror $suite main" \
  "deb $mirror $suite-updates main" \
  "deb http://deb.debian.org/debian-security $suite-security main" >&2

step "copy kernel and initrd"
kver=$(ls "$rootfs/lib/modules" | sort -V | tail -n1)
cp "$rootfs/boot/vmlinuz-$kver" "$staging/vmlinuz"
cp "$rootfs/boot/initrd.img-$kver" "$staging/initrd.img"
chmod 0644 "$staging/vmlinuz" "$staging/initrd.img"

step "list packages"
dpkg-query --admindir="$rootfs/var/lib/dpkg" -W -f '${Package}\t${Version}\n' |
  LC_ALL=C sort > "$tmp/packages.tsv"

step "make ext4 filesystem"
# Size: used space plus 40% and 256 MiB headroom; cloud-init grows it to the
# overlay's size at first boot (resizefs).
used_kib=$(du -sk --apparent-size "$rootfs" | cut -f1)
size_mib=$(( (used_kib * 14 / 10) / 1024 + 256 ))
truncate -s "${size_mib}M" "$tmp/disk.raw"
mkfs.ext4 -q -F -L roost-root -m 0 -E root_owner=0:0 -d "$rootfs" "$tmp/disk.raw" >&2

step "convert to qcow2"
# Uncompressed: every VM reads its base through a qcow2 overlay, and zlib
# clusters would be inflated again on each cold read.
run qemu-img convert -f raw -O qcow2 "$tmp/disk.raw" "$staging/disk.qcow2"
rm -f "$tmp/disk.raw"

step "write manifest"
files_json='{}'
for f in disk.qcow2 vmlinuz initrd.img; do
  sum=$(sha256sum "$staging/$f" | cut -d' ' -f1)
  size=$(stat -c %s "$staging/$f")
  files_json=$(jq -c --arg f "$f" --arg s "$sum" --argjson n "$size" \
    '. + {($f): {sha256: $s, size: $n}}' <<<"$files_json")
done
cmdline=$(grep -v '^\s*#' "$recipe/cmdline" | tr '\n' ' ' | sed 's/  */ /g; s/^ //; s/ $//')
jq -n \
  --arg name "$name" \
  --arg cmdline "$cmdline" \
  --argjson files "$files_json" \
  --arg built_at "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
  --arg recipe_hash "$recipe_hash" \
  --rawfile pkgs "$tmp/packages.tsv" \
  '{name: $name, boot: "kernel", disk: "disk.qcow2", kernel: "vmlinuz",
    initrd: "initrd.img", cmdline: $cmdline, has_nginx: true, files: $files,
    packages: ($pkgs | split("\n") | map(select(length > 0) | split("\t")
               | {name: .[0], version: .[1]})),
    built_at: $built_at, recipe_hash: $recipe_hash}' > "$staging/manifest.json"

step "install into $out"
rm -rf --one-file-system "$rootfs"
mv -T "$staging" "$out"
link_default
cleanup
trap - EXIT
echo "build-image: built $out" >&2
echo "$out"
