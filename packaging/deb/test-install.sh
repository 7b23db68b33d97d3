#!/bin/bash
# Install a built coral-ebpf .deb into a clean Debian 12 root, run it, purge it.
#   usage: unshare -m --propagation private packaging/deb/test-install.sh DEB ROOT_TARBALL [APT_CACHE]
# ROOT_TARBALL is a debootstrap'd bookworm minbase (packaging/deb/clean-root.sh). It is unpacked on
# a tmpfs (the host is not changed), `apt-get install ./coral-ebpf.deb` resolves python3 and
# python3-bpfcc from the registry (this step needs the network: run the script in a namespace that
# reaches it), with the apt lists and downloaded .debs kept in APT_CACHE for the next run. Then,
# in a new network namespace with nothing in it, the package runs from the root: --version,
# probe --json (with the host's /proc, /sys and, read-only, its kernel headers under /usr/src,
# which BCC compiles against: they belong to the host's kernel, not to the package),
# config check, and `apt-get remove --purge`. Prints one line per check.
set -euo pipefail
DEB=$1
TARBALL=$2
APT_CACHE=${3:-$HOME/.cache/coral-ebpf/deb-root/apt}
W=$(mktemp -d /tmp/coral-deb-root.XXXXXX)
trap 'umount -R "$W" 2>/dev/null; rmdir "$W" 2>/dev/null' EXIT
mount -t tmpfs -o mode=755 tmpfs "$W"
R=$W/root
mkdir "$R"
t0=$(date +%s.%N)
tar -C "$R" --numeric-owner -xf "$TARBALL"
mkdir -p "$APT_CACHE/lists/partial" "$APT_CACHE/archives/partial"
mount -t proc proc "$R/proc"; mount --rbind /sys "$R/sys"; mount --rbind /dev "$R/dev"
mount -t tmpfs tmpfs "$R/tmp"; mount -t tmpfs tmpfs "$R/run"
mount --bind "$APT_CACHE/lists" "$R/var/lib/apt/lists"
mount --bind "$APT_CACHE/archives" "$R/var/cache/apt/archives"
if [ -d /usr/src ]; then mount --bind /usr/src "$R/usr/src" && mount -o remount,bind,ro "$R/usr/src"; fi
cp /etc/resolv.conf "$R/etc/resolv.conf"
cp "$DEB" "$R/tmp/coral-ebpf.deb"
echo "unpacked: $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s"
# The apt caches are shared between runs: one apt at a time uses them.
in_root() { flock "$APT_CACHE/.lock" chroot "$R" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
    DEBIAN_FRONTEND=noninteractive "$@"; }

test ! -e "$R/usr/bin/python3" && echo "clean: no python3"
in_root sh -ec '
  apt-get -q update >/tmp/apt.log 2>&1 || { cat /tmp/apt.log; exit 1; }
  apt-get -q install -y --no-install-recommends /tmp/coral-ebpf.deb >>/tmp/apt.log 2>&1 || { cat /tmp/apt.log; exit 1; }
  echo "installed: $(dpkg-query -W -f="\${Package} \${Version} \${Status}" coral-ebpf)"
  echo "bcc from: $(dpkg-query -W -f="\${Package} \${Version}" python3-bpfcc)"
'
echo "installed in: $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s"

# From here on nothing needs the network: a namespace of its own, without even loopback up.
unshare -n chroot "$R" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
    DEBIAN_FRONTEND=noninteractive sh -ec '
  echo "which: $(command -v coral-ebpf)"
  echo "version: $(coral-ebpf --version)"
  rc=0; coral-ebpf probe --json > /tmp/probe.json || rc=$?; echo "probe rc: $rc"
  python3 -c "
import json
d = json.load(open(\"/tmp/probe.json\"))
print(\"probe keys:\", sorted(d)[:6])
print(\"probe complete:\", d[\"complete\"])
for name in (\"agent_probes\", \"bcc_discovery\", \"red_bcc\"):
    print(f\"probe {name}:\", \"ok\" if d[\"components\"][name][\"ok\"] else d[\"components\"][name][\"reason\"])
"
  test -f /lib/systemd/system/coral-ebpf.service && test -f /etc/coral-ebpf/config.yaml && echo "files: ok"
  coral-ebpf config check >/dev/null && echo "config check: ok"
  apt-get -q remove --purge -y coral-ebpf >/tmp/purge.log 2>&1 || { cat /tmp/purge.log; exit 1; }
  left=""
  for path in /opt/coral-ebpf /etc/coral-ebpf /var/lib/coral-ebpf /usr/bin/coral-ebpf \
              /lib/systemd/system/coral-ebpf.service /usr/share/doc/coral-ebpf /usr/share/coral-ebpf; do
      test -e "$path" && left="$left $path"
  done
  test -z "$left" && echo "removed: clean" || { echo "left:$left"; exit 1; }
  dpkg -s coral-ebpf >/dev/null 2>&1 && { echo "still registered"; exit 1; } || echo "dpkg: gone"
'
echo "total: $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s"
