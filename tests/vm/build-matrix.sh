#!/bin/bash
# Build (or find in the cache) everything the kernel matrix boots: the bookworm root image and,
# per kernel series, vmlinuz + initramfs + kernel disk. Rootfs and kernels build in parallel.
#   usage: build-matrix.sh [SERIES...]     (default: $KERNELS, else "5.10 6.1 6.12")
# Writes $CACHE/manifest (ROOTFS=..., KERNEL_<series>=...) and prints it.
# When the Debian mirror cannot be reached, an earlier build for the same series is reused.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
LOG_TAG=build
need_root "build-matrix.sh"
read -r -a SERIES <<< "${*:-${KERNELS:-5.10 6.1 6.12}}"

ensure_debs qemu-system-x86 qemu-utils debootstrap busybox-static kmod cpio xz-utils zstd e2fsprogs \
    python3 python3-venv debian-archive-keyring
mkdir -p "$CACHE"
exec 9> "$CACHE/.build.lock"
flock 9   # one build at a time per cache

manifest=$CACHE/manifest
var_of() { echo "KERNEL_${1//[^0-9a-zA-Z]/_}"; }

t0=$(now)
if ! private_apt_update; then
    if [ -f "$manifest" ]; then
        # shellcheck source=/dev/null
        source "$manifest"
        ok=1
        for s in "${SERIES[@]}"; do v=$(var_of "$s"); [ -n "${!v:-}" ] && [ -f "${!v}/info" ] || ok=0; done
        if [ "$ok" = 1 ] && [ -f "${ROOTFS:-}" ]; then
            log "warning: the Debian mirror is unreachable; reusing the cached build in $manifest"
            cat "$manifest"; exit 0
        fi
    fi
    die "apt-get update against $DEBIAN_MIRROR failed and there is no cached build for: ${SERIES[*]}"
fi

outputs=$(mktemp -d); trap 'rm -rf "$outputs"' EXIT
pids=()
"$VM_DIR/build-rootfs.sh" > "$outputs/rootfs" & pids+=($!)
for s in "${SERIES[@]}"; do
    "$VM_DIR/build-kernel.sh" "$s" > "$outputs/kernel-$s" & pids+=($!)
done
failed=0
for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
[ "$failed" = 0 ] || die "the build failed (see the messages above)"

{
    echo "ROOTFS=$(tail -1 "$outputs/rootfs")"
    for s in "${SERIES[@]}"; do echo "$(var_of "$s")=$(tail -1 "$outputs/kernel-$s")"; done
} > "$manifest.new"
# keep entries of series not built this time (another KERNELS selection may use them)
[ -f "$manifest" ] && awk -F= 'NR == FNR { seen[$1] = 1; next } /^KERNEL_/ && !($1 in seen)' \
    "$manifest.new" "$manifest" >> "$manifest.new.old" && cat "$manifest.new.old" >> "$manifest.new"
rm -f "$manifest.new.old"
mv "$manifest.new" "$manifest"
log "images ready in $(since "$t0") s"
cat "$manifest"
