#!/bin/bash
# Install a built coral-ebpf .deb into a throw-away root, run it, purge it.
#   usage: unshare -m --propagation private packaging/deb/test-install.sh DEB [CHECKOUT]
# The root is an overlay of / with a tmpfs upper layer (the host is not changed: dpkg's database,
# /opt, /etc and /usr changes all land in the tmpfs), with the checkout, the venv and any
# /usr/local/bin/coral-ebpf hidden, so the package must work on its own. Prints one line per check.
set -euo pipefail
DEB=$1
CHECKOUT=${2:-}
W=$(mktemp -d /tmp/coral-deb-root.XXXXXX)
trap 'umount -R "$W" 2>/dev/null; rmdir "$W" 2>/dev/null' EXIT
mount -t tmpfs tmpfs "$W"
mkdir "$W/upper" "$W/work" "$W/root"
mount -t overlay overlay -o "lowerdir=/,upperdir=$W/upper,workdir=$W/work" "$W/root"
R=$W/root
mount -t proc proc "$R/proc"; mount --rbind /sys "$R/sys"; mount --rbind /dev "$R/dev"
mount -t tmpfs tmpfs "$R/tmp"; mount -t tmpfs tmpfs "$R/run"
if [ -n "$CHECKOUT" ] && [ -d "$R$CHECKOUT" ]; then mount -t tmpfs tmpfs "$R$CHECKOUT"; fi   # no checkout, no venv
rm -f "$R/usr/local/bin/coral-ebpf"
cp "$DEB" "$R/tmp/coral-ebpf.deb"
chroot "$R" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 /bin/sh -ec '
  dpkg -i /tmp/coral-ebpf.deb >/tmp/dpkg.log 2>&1 || { cat /tmp/dpkg.log; exit 1; }
  echo "which: $(command -v coral-ebpf)"
  echo "version: $(coral-ebpf --version)"
  coral-ebpf probe --json > /tmp/probe.json; echo "probe rc: $?"
  python3 -c "import json; d = json.load(open(\"/tmp/probe.json\")); print(\"probe keys:\", sorted(d)[:6])"
  test -f /lib/systemd/system/coral-ebpf.service && test -f /etc/coral-ebpf/config.yaml && echo "files: ok"
  coral-ebpf config check >/dev/null && echo "config check: ok"
  dpkg --purge coral-ebpf >/tmp/purge.log 2>&1 || { cat /tmp/purge.log; exit 1; }
  left=$(ls -A /opt/coral-ebpf /etc/coral-ebpf /var/lib/coral-ebpf 2>/dev/null || true)
  test ! -e /opt/coral-ebpf && test ! -e /usr/bin/coral-ebpf && test ! -e /etc/coral-ebpf && echo "removed: clean" || { echo "left: $left"; exit 1; }
  dpkg -s coral-ebpf >/dev/null 2>&1 && { echo "still registered"; exit 1; } || echo "dpkg: gone"
'
