#!/bin/bash
# Build the Debian package: a self-contained /opt/coral-ebpf/lib (the agent and its Python
# dependencies, byte-compiled) run by Debian's python3, which also provides BCC (python3-bpfcc).
#   usage: packaging/deb/build.sh [OUTDIR]      (prints the .deb's path)
# Needs dpkg-deb and a python3 with pip (the project's venv); downloads the dependencies' wheels
# from PyPI (or uses pip's cache). Does not depend on the git checkout at run time.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
OUT=${1:-$REPO/dist}
PIP=${PIP:-$REPO/.venv/bin/pip}
VERSION=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$REPO/coral_ebpf/__init__.py")
ARCH=$(dpkg --print-architecture)
PYVER=$(/usr/bin/python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
NEXT=$(/usr/bin/python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1] + 1}")')
WORK=$(mktemp -d "${TMPDIR:-/tmp}/coral-ebpf-deb.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
ROOT=$WORK/root
umask 022

# The agent and its runtime dependencies (not the test extras), for Debian's python3.
"$PIP" install -q --disable-pip-version-check --target "$ROOT/opt/coral-ebpf/lib" \
    --python-version "$PYVER" --only-binary=:all: --implementation cp "$REPO" >&2 2>"$WORK/pip.log" \
    || { cat "$WORK/pip.log" >&2; exit 1; }
rm -rf "$ROOT/opt/coral-ebpf/lib/bin"
# Byte-compile now, so nothing is written under /opt at run time (and removal leaves nothing behind).
/usr/bin/python3 -m compileall -q -j 0 "$ROOT/opt/coral-ebpf/lib" >/dev/null || true

install -D -m 0755 "$HERE/coral-ebpf" "$ROOT/usr/bin/coral-ebpf"
install -D -m 0644 "$HERE/config.yaml" "$ROOT/etc/coral-ebpf/config.yaml"
sed 's#/usr/local/bin/coral-ebpf#/usr/bin/coral-ebpf#' "$REPO/coral_ebpf/agent/coral-ebpf.service" \
    | install -D -m 0644 /dev/stdin "$ROOT/lib/systemd/system/coral-ebpf.service"
install -d -m 0755 "$ROOT/usr/share/doc/coral-ebpf/docs"
install -m 0644 "$REPO/README.md" "$ROOT/usr/share/doc/coral-ebpf/README.md"
install -m 0644 "$REPO"/docs/*.md "$ROOT/usr/share/doc/coral-ebpf/docs/"
install -D -m 0644 "$REPO/deploy/grafana/coral-ebpf.json" "$ROOT/usr/share/coral-ebpf/grafana/coral-ebpf.json"
install -m 0644 "$HERE/copyright" "$ROOT/usr/share/doc/coral-ebpf/copyright"

install -d -m 0755 "$ROOT/DEBIAN"
for script in postinst prerm postrm; do install -m 0755 "$HERE/$script" "$ROOT/DEBIAN/$script"; done
echo /etc/coral-ebpf/config.yaml > "$ROOT/DEBIAN/conffiles"
SIZE=$(du -sk --exclude=DEBIAN "$ROOT" | cut -f1)
cat > "$ROOT/DEBIAN/control" <<CONTROL
Package: coral-ebpf
Version: $VERSION
Architecture: $ARCH
Maintainer: coral-ebpf developers <coral-ebpf@localhost>
Installed-Size: $SIZE
Depends: python3 (>= $PYVER), python3 (<< $NEXT), python3-bpfcc
Recommends: bpftool
Section: net
Priority: optional
Homepage: https://github.com/coral-ebpf/coral-ebpf
Description: eBPF-native host agent: RED metrics and traces for every service
 coral-ebpf finds the services on a host with its own BPF probes, runs and supervises
 Grafana Beyla (or its built-in BCC probe) to measure them, keeps RED metrics and traces
 in a local DuckDB file, serves Prometheus /metrics and can forward OTLP upstream.
CONTROL
mkdir -p "$OUT"
DEB=$OUT/coral-ebpf_${VERSION}_${ARCH}.deb
dpkg-deb --root-owner-group -Zxz -z1 --build "$ROOT" "$DEB" >&2
echo "$DEB"
