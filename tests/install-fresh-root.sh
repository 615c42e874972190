#!/usr/bin/env bash
# Runs one command in a chroot of a fresh Debian root; used by tests/install.rs.
#
# Usage: install-fresh-root.sh ROOT ARCHIVES COMMAND [ARG...]
#
# The command runs in its own mount and PID namespaces (unshare): /proc, /dev and ARCHIVES
# (a persistent .deb cache, bind-mounted over the root's /var/cache/apt/archives) are
# mounted only there, so they vanish by themselves when the command exits, also when the
# test is killed. Processes the command leaves behind (a daemon started by a postinst)
# die with it. The command sees the environment of a root login, none of the caller's.
set -euo pipefail

if [ "${1:-}" != --in-namespace ]; then
    [ "$#" -ge 3 ] || { echo "usage: $0 ROOT ARCHIVES COMMAND [ARG...]" >&2; exit 2; }
    [ -d "$1/var/cache/apt/archives" ] || { echo "$0: $1 is not a Debian root" >&2; exit 2; }
    [ -d "$2/partial" ] || { echo "$0: $2/partial is missing" >&2; exit 2; }
    exec unshare --mount --propagation private --pid --fork --kill-child -- \
        "${BASH:-bash}" "$0" --in-namespace "$@"
fi
shift
root=$1 archives=$2
shift 2

mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
mount --bind "$archives" "$root/var/cache/apt/archives"
exec chroot "$root" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$@"
