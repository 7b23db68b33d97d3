#!/bin/bash
# Boot one Debian kernel under QEMU (TCG or KVM), run a command inside, collect its results.
#   usage: run-kernel.sh KERNEL_DIR ROOTFS_IMAGE OUT_DIR 'command'
# KERNEL_DIR comes from build-kernel.sh, ROOTFS_IMAGE from build-rootfs.sh. The project checkout
# is shared read-only over 9p at /project; the root image is a snapshot (writes are discarded),
# so VMs can share it. The command runs as root in /project with $VMTEST_OUT set; whatever it
# leaves there lands in OUT_DIR (with `rc`), the console in OUT_DIR/console.log, the boot-to-
# poweroff seconds in OUT_DIR/wall, `uname -r` of the guest in OUT_DIR/kernel, the accelerator
# in OUT_DIR/accel.
# Exit status: the command's, 124 on timeout, 99 when the VM reported nothing.
# Environment: CORAL_VM_MEM (MiB, default 1536), CORAL_VM_CPUS (default 1),
#              CORAL_VM_TIMEOUT (seconds per boot, default 2400), CORAL_VM_PROJECT (share),
#              CORAL_VM_CPU_MODEL (QEMU -cpu, default max),
#              CORAL_VM_ACCEL (kvm or tcg, default tcg; run-matrix.sh resolves `auto` before
#              calling this script, see choose_accel in lib.sh),
#              CORAL_VM_BEYLA (a real Beyla binary: its directory is shared read-only with the
#              guest as the 9p tag `beyla`, which vmtest-init mounts at /run/beyla).
set -uo pipefail
source "$(dirname "$0")/lib.sh"
KDIR=${1:?usage: run-kernel.sh KERNEL_DIR ROOTFS_IMAGE OUT_DIR command}
IMG=${2:?} OUT=${3:?} CMD=${4:?}
SHARE=${CORAL_VM_PROJECT:-$PROJECT_DIR}
TIMEOUT=${CORAL_VM_TIMEOUT:-2400}
# shellcheck source=/dev/null
source "$KDIR/info"
mkdir -p "$OUT"; rm -rf "${OUT:?}"/*
echo "$ABI" > "$OUT/kernel"
ACCEL=${CORAL_VM_ACCEL:-tcg}
case "$ACCEL" in
    kvm|tcg) ;;
    auto) ACCEL=tcg; log "CORAL_VM_ACCEL=auto: only run-matrix.sh runs the KVM check; using tcg (set kvm to force it)" ;;
    *) die "CORAL_VM_ACCEL must be kvm, tcg or auto, not '$ACCEL'" ;;
esac
echo "$ACCEL" > "$OUT/accel"

# The command travels base64-encoded on the kernel command line (2048 bytes at most on x86).
b64=$(printf '%s' "$CMD" | base64 -w0)
[ ${#b64} -lt 1800 ] || die "command too long for the kernel command line (${#b64} bytes of base64)"

args=(-accel "$ACCEL" -machine q35 -cpu "${CORAL_VM_CPU_MODEL:-max}" -smp "${CORAL_VM_CPUS:-1}" -m "${CORAL_VM_MEM:-1536}"
      -display none -nodefaults -no-reboot
      -serial "file:$OUT/console.log"
      -kernel "$KDIR/vmlinuz" -initrd "$KDIR/initrd.cpio.gz"
      -drive "file=$IMG,if=virtio,format=raw,snapshot=on,cache=unsafe"
      -drive "file=$KDIR/kernel.ext4,if=virtio,format=raw,readonly=on"
      -virtfs "local,path=$SHARE,mount_tag=project,security_model=none,readonly=on"
      -device virtio-serial-pci
      -chardev "file,id=vmout,path=$OUT/out.tar" -device "virtserialport,chardev=vmout,name=vmtest.out"
      -device virtio-rng-pci
      -append "console=ttyS0 panic=-1 quiet loglevel=1 random.trust_cpu=on vmtest.cmd=$b64")
if [ -n "${CORAL_VM_BEYLA:-}" ]; then
    [ -x "$CORAL_VM_BEYLA" ] || die "CORAL_VM_BEYLA=$CORAL_VM_BEYLA is not an executable file"
    [ "$(basename "$CORAL_VM_BEYLA")" = beyla ] || die "CORAL_VM_BEYLA must name a file called beyla, not $CORAL_VM_BEYLA"
    args+=(-virtfs "local,path=$(dirname "$(readlink -f "$CORAL_VM_BEYLA")"),mount_tag=beyla,security_model=none,readonly=on")
fi
start=$(now)
# `timeout` puts QEMU in a process group of its own: stop it ourselves when we are stopped.
timeout --kill-after=10 "$TIMEOUT" qemu-system-x86_64 "${args[@]}" </dev/null >"$OUT/qemu.log" 2>&1 &
vm_pid=$!
trap 'kill "$vm_pid" 2>/dev/null; exit 143' TERM INT HUP
wait "$vm_pid"
qemu_rc=$?
trap - TERM INT HUP
# CPU seconds QEMU used (children of this shell): what the leg would take on an idle core
# (`times` writes to a file: in a pipeline it would run in a subshell, which has no children.)
times > "$OUT/times"
awk 'NR == 2 { split($1, u, /[ms]/); split($2, s, /[ms]/); printf "%.1f\n", u[1] * 60 + u[2] + s[1] * 60 + s[2] }' "$OUT/times" > "$OUT/cpu"
rm -f "$OUT/times"
since "$start" > "$OUT/wall"

if [ -s "$OUT/out.tar" ]; then
    tar -C "$OUT" -xf "$OUT/out.tar" 2>>"$OUT/qemu.log" && rm -f "$OUT/out.tar"
fi
if [ ! -f "$OUT/rc" ]; then
    # Fall back to the console marker, e.g. when the results channel is missing.
    rc=$(sed -n 's/^VMTEST-RC=\([0-9]*\).*/\1/p' "$OUT/console.log" 2>/dev/null | tail -1)
    if [ -n "$rc" ]; then echo "$rc" > "$OUT/rc"
    elif [ "$qemu_rc" = 124 ] || [ "$qemu_rc" = 137 ]; then
        echo 124 > "$OUT/rc"; echo "vmtest: the VM was killed after $TIMEOUT s" >> "$OUT/console.log"
    else
        cat "$OUT/qemu.log" >> "$OUT/console.log"
    fi
fi
rc=$(cat "$OUT/rc" 2>/dev/null || echo 99)
exit "$rc"
