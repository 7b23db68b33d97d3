#!/bin/bash
# Build the Debian bookworm root file system image every test VM boots (whatever its kernel).
#   usage: build-rootfs.sh          (the private apt lists must be fresh: build-matrix.sh does it)
# Prints the image path. Contents: debootstrap minbase + the Debian packages the project's
# Makefile installs on a host (python3-bpfcc, bpftool, iproute2, ...) + kmod + the servers only the
# guests' suites start (GUEST_TEST_DEBS: PostgreSQL and its Python client for the real-Beyla suite,
# tests/integration/test_beyla_vm.py; the host never needs them), and a venv at
# /opt/coral-venv (--system-site-packages, so it sees Debian's bcc) holding the project's
# runtime and test dependencies from pyproject.toml, installed from wheels fetched at build time
# (the guest has no network). The project itself is not in the image: it arrives over 9p.
#
# Cache key: the versions of those Debian packages, the bookworm point release, the Python
# requirement specifiers and this script. Set CORAL_VM_REBUILD=1 to force a rebuild (e.g. to
# pick up new PyPI releases within the same specifiers).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
LOG_TAG=rootfs
need_root "build-rootfs.sh"
reexec_in_private_mounts "$@"
debian_mirrors

GUEST_EXTRA_DEBS=(kmod python3-venv iproute2 procps util-linux)
# Servers and clients the guest suites run (not the agent's needs: so not in the Makefile's DEB_PACKAGES).
GUEST_TEST_DEBS=(postgresql python3-psycopg2)
read -r -a host_debs <<< "$(project_deb_packages)"
mapfile -t debs < <(printf '%s\n' "${host_debs[@]}" "${GUEST_EXTRA_DEBS[@]}" "${GUEST_TEST_DEBS[@]}" | sort -u)
point_release=$(awk '/^Version:/ { print $2; exit }' "$APT_DIR"/lists/*_dists_bookworm_InRelease 2>/dev/null || echo unknown)
versions=$(suite_versions bookworm "${debs[@]}")
key=$( { echo "bookworm $point_release"; echo "$versions"; project_requirements; cat "$VM_DIR/build-rootfs.sh"; } | hash_of)
IMG=$CACHE/rootfs/bookworm-$key.ext4
if [ -f "$IMG" ] && [ "${CORAL_VM_REBUILD:-0}" != 1 ]; then
    echo "$IMG"; exit 0
fi

t0=$(now)
log "building the bookworm image (${debs[*]}; Python: $(project_requirements | tr '\n' ' '))"
mkdir -p "$CACHE/rootfs" "$CACHE/debootstrap-debs"
WORK=$(mktemp -d "$CACHE/rootfs/.build.XXXXXX")
LOGS=$CACHE/logs; mkdir -p "$LOGS"
cleanup() { umount -R "$WORK/root" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
R=$WORK/root

# The wheels download while debootstrap runs.
build_wheelhouse "$CACHE/wheelhouse" > "$LOGS/wheelhouse.log" 2>&1 &
wheel_pid=$!
# Before the packages configure: no service may start inside the build chroot (PostgreSQL's postinst
# would start a server that outlives the build), and no default cluster is made (the tests make
# their own with initdb, on a port and in a directory of their own).
no_services() {
    printf '#!/bin/sh\nexit 101\n' > "$1/usr/sbin/policy-rc.d"; chmod 755 "$1/usr/sbin/policy-rc.d"
    mkdir -p "$1/etc/postgresql-common/createcluster.d"
    echo "create_main_cluster = false" > "$1/etc/postgresql-common/createcluster.d/coral-vmtest.conf"
}
BETWEEN_STAGES=no_services
debootstrap_root "$R" "$LOGS/debootstrap.log" "${debs[@]}"
rm -f "$R/usr/sbin/policy-rc.d"
log "debootstrap done at $(since "$t0") s"
wait "$wheel_pid" || { cat "$LOGS/wheelhouse.log" >&2; die "fetching the Python wheels failed"; }

mkdir -p "$R/tmp/wheelhouse"
cp -a "$CACHE/wheelhouse/." "$R/tmp/wheelhouse/"
# A private mount namespace: the /proc and /dev mounts for the chroot vanish with it.
unshare -m --propagation private bash -euo pipefail -c '
    R=$1
    mount -t proc proc "$R/proc"; mount --rbind /dev "$R/dev"
    chroot "$R" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 sh -euc "
        python3 -m venv --system-site-packages /opt/coral-venv
        /opt/coral-venv/bin/pip install -q --disable-pip-version-check --no-index --find-links /tmp/wheelhouse \
            -r /tmp/wheelhouse/requirements.txt
        /opt/coral-venv/bin/python -c \"import bcc, duckdb, grpc, psycopg2, pyarrow, pytest, pyroute2; assert hasattr(bcc, \\\"BPF\\\")\"
        ls /usr/lib/postgresql/*/bin/initdb
    "' _ "$R" > "$LOGS/venv.log" 2>&1 || { tail -30 "$LOGS/venv.log" >&2; die "installing the Python dependencies in the image failed"; }
log "venv done at $(since "$t0") s"

rm -rf "$R/tmp/wheelhouse" "$R"/var/cache/apt/archives/*.deb "$R"/var/lib/apt/lists/* \
       "$R"/usr/share/doc/* "$R"/usr/share/man/* "$R"/usr/share/info/* "$R"/usr/share/locale/*
echo vmtest > "$R/etc/hostname"
printf '127.0.0.1\tlocalhost vmtest\n::1\tlocalhost ip6-localhost ip6-loopback\n' > "$R/etc/hosts"
mkdir -p "$R/project" "$R/run/kernel"
cat > "$R/etc/coral-vmtest" <<EOF
# built by tests/vm/build-rootfs.sh on $(date -u +%FT%TZ)
BOOKWORM=$point_release
$versions
EOF

size_mb=$(( $(du -sm "$R" | cut -f1) * 12 / 10 + 300 ))   # room for what tests write (snapshot)
truncate -s "${size_mb}M" "$WORK/image.ext4"
mkfs.ext4 -q -F -L vmroot -m 0 -d "$R" "$WORK/image.ext4"
rm -f "$CACHE"/rootfs/bookworm-*.ext4   # older builds
mv "$WORK/image.ext4" "$IMG"
log "built $IMG in $(since "$t0") s ($(du -sh --apparent-size "$IMG" | cut -f1) apparent, $(du -sh "$IMG" | cut -f1) allocated)"
echo "$IMG"
