#!/bin/bash
# A clean Debian 12 root for the package test: debootstrap --variant=minbase bookworm, packed as
# a tarball under the cache and reused by later runs.
#   usage: packaging/deb/clean-root.sh        (prints the tarball's path; needs root and the mirror)
# The mirror is the host's (tests/vm/lib.sh `debian_mirrors`); the downloaded .debs go to the VM
# image build's debootstrap cache, so either build fills it for the other. Set
# CORAL_DEB_ROOT_REBUILD=1 to build a fresh root (e.g. after a bookworm point release).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../../tests/vm/lib.sh
source "$HERE/../../tests/vm/lib.sh"
LOG_TAG=deb-root
need_root "clean-root.sh"
reexec_in_private_mounts "$@"
debian_mirrors

ROOTS=${CORAL_DEB_ROOT_CACHE:-$HOME/.cache/coral-ebpf/deb-root}
TARBALL=$ROOTS/bookworm-minbase.tar
if [ -f "$TARBALL" ] && [ "${CORAL_DEB_ROOT_REBUILD:-0}" != 1 ]; then
    echo "$TARBALL"; exit 0
fi
mkdir -p "$ROOTS" "$CACHE/debootstrap-debs"
t0=$(now)
WORK=$(mktemp -d "$ROOTS/.build.XXXXXX")
trap 'umount -R "$WORK/root" 2>/dev/null; rm -rf "$WORK"' EXIT
mkdir "$WORK/root"
mount -t tmpfs -o mode=755 tmpfs "$WORK/root"   # dpkg's fsyncs cost nothing on tmpfs
debootstrap --variant=minbase --cache-dir="$CACHE/debootstrap-debs" bookworm "$WORK/root" "$DEBIAN_MIRROR" \
    > "$WORK/debootstrap.log" 2>&1 || { tail -20 "$WORK/debootstrap.log" >&2; die "debootstrap failed"; }
rm -f "$WORK/root"/var/cache/apt/archives/*.deb
cat > "$WORK/root/etc/apt/sources.list" <<SOURCES
deb $DEBIAN_MIRROR bookworm main
deb $DEBIAN_MIRROR bookworm-updates main
deb $DEBIAN_SECURITY_MIRROR bookworm-security main
SOURCES
tar -C "$WORK/root" --numeric-owner -cf "$WORK/root.tar" .
mv "$WORK/root.tar" "$TARBALL"
log "built $TARBALL in $(since "$t0") s ($(du -sh "$TARBALL" | cut -f1))"
echo "$TARBALL"
