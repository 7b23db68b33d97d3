#!/bin/bash
# `make vagrant-test`: the integration tests in a Vagrant VM (libvirt provider), end to end:
# packages -> libvirt -> box -> vagrant up -> tests -> vagrant destroy. Exits with the tests'
# status (1 when the VM never came up).
#
# When no system libvirtd answers, it starts virtlogd and libvirtd itself inside a private network
# namespace, so the VM's bridge, dnsmasq and NAT rules exist only there; every command that talks
# to the VM (vagrant, ssh, rsync) runs in that namespace too. It always destroys the VM and stops
# only the daemons it started.
#
# Environment: CORAL_VAGRANT_BOX (default local/bookworm, built offline by build-box.sh),
# CORAL_VAGRANT_DRIVER (kvm, qemu or auto; default auto: kvm only when libvirt's QEMU user can
# open /dev/kvm and a real Linux kernel boots to its init under KVM as that user, else qemu, i.e.
# TCG; see choose_accel in tests/vm/lib.sh), CORAL_KVM_CHECK_TIMEOUT (that boot's bound, default 30 s),
# CORAL_VAGRANT_MEMORY (default 1536), CORAL_VAGRANT_CPUS (default 1), CORAL_VAGRANT_CACHE,
# CORAL_VAGRANT_PYTEST_ARGS (extra pytest arguments), CORAL_VAGRANT_KEEP=1 (leave the VM up).
set -uo pipefail
source "$(dirname "$0")/../tests/vm/lib.sh"
source "$(dirname "$0")/common.sh"
LOG_TAG=vagrant-test
need_root "make vagrant-test"
t_start=$(now)

ensure_debs vagrant vagrant-libvirt libvirt-daemon-system libvirt-clients dnsmasq-base iptables \
    qemu-system-x86 qemu-utils debootstrap fdisk rsync openssh-client busybox-static
export VAGRANT_CHECKPOINT_DISABLE=1 VAGRANT_BOX_UPDATE_CHECK_DISABLE=1 VAGRANT_NO_COLOR=1
export CORAL_VAGRANT_BOX=$BOX
export CORAL_VAGRANT_MEMORY=${CORAL_VAGRANT_MEMORY:-1536} CORAL_VAGRANT_CPUS=${CORAL_VAGRANT_CPUS:-1}
# The accelerator is decided as libvirt will use it: as the user its QEMU runs as (qemu.conf).
qemu_user=$("$HOST_PYTHON" "$VM_DIR/accel.py" libvirt-user)
choose_accel CORAL_VAGRANT_DRIVER "$qemu_user" matrix_vmlinuz
case "$ACCEL" in kvm) CORAL_VAGRANT_DRIVER=kvm ;; *) CORAL_VAGRANT_DRIVER=qemu ;; esac
export CORAL_VAGRANT_DRIVER
RUN_ID=$$
RESULTS=$VCACHE/results; LOGS=$VCACHE/logs
rm -rf "$RESULTS"; mkdir -p "$RESULTS/vagrant" "$LOGS" "$VCACHE/run" "$VCACHE/pool"

NS=""; POOL_PATH=""; daemons=(); pool_defined=0; vm_created=0
in_ns() { if [ -n "$NS" ]; then ip netns exec "$NS" "$@"; else "$@"; fi; }
virsh_() { virsh -q -c qemu:///system "$@"; }

cleanup() {
    local t
    t=$(now)
    if [ "$vm_created" = 1 ] && [ "${CORAL_VAGRANT_KEEP:-0}" != 1 ]; then
        log "destroying the VM"
        in_ns timeout 300 vagrant destroy -f > "$LOGS/destroy.log" 2>&1 || log "warning: vagrant destroy failed (see $LOGS/destroy.log)"
        rm -rf "$VAGRANT_DOTFILE_PATH"
        log "destroyed in $(since "$t") s"
    fi
    if [ ${#daemons[@]} -gt 0 ]; then
        # Our daemon, our objects: leftover domains and networks (dnsmasq outlives libvirtd).
        for dom in $(virsh_ list --all --name 2>/dev/null | grep "^coral-ebpf-$RUN_ID-"); do
            virsh_ destroy "$dom" >/dev/null 2>&1; virsh_ undefine --remove-all-storage "$dom" >/dev/null 2>&1
        done
        for net in $(virsh_ net-list --name 2>/dev/null); do virsh_ net-destroy "$net" >/dev/null 2>&1; done
    fi
    if [ "$pool_defined" = 1 ]; then
        virsh_ pool-destroy coral-vagrant >/dev/null 2>&1; virsh_ pool-undefine coral-vagrant >/dev/null 2>&1
    fi
    local pid
    for pid in "${daemons[@]}"; do kill "$pid" 2>/dev/null; done
    for pid in "${daemons[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null
    done
    [ -n "$NS" ] && ip netns del "$NS" 2>/dev/null
    [ -n "$POOL_PATH" ] && rmdir "$POOL_PATH" "${POOL_PATH%/pool}" 2>/dev/null
    return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# libvirt: the system daemon when one answers, else ours in a private network namespace.
if timeout 10 virsh -c qemu:///system version >/dev/null 2>&1; then
    log "using the running libvirtd"
else
    NS=coral-vagrant-$RUN_ID
    ip netns add "$NS" || die "cannot create network namespace $NS"
    ip -n "$NS" link set lo up
    # QEMU runs as libvirt-qemu, which cannot traverse a home directory like /root: our libvirtd
    # (own mount namespace) sees the pool under the cache dir at a neutral path instead.
    POOL_PATH=/run/coral-vagrant-$RUN_ID/pool
    mkdir -p "$POOL_PATH"
    for d in virtlogd libvirtd; do
        pidfile=$VCACHE/run/$d.pid; rm -f "$pidfile"
        ip netns exec "$NS" unshare -m --propagation private sh -c \
            'mount --bind "$1" "$2" && exec "$3" -d -p "$4"' _ "$VCACHE/pool" "$POOL_PATH" "$d" "$pidfile" \
            || die "cannot start $d"
        for _ in $(seq 100); do [ -s "$pidfile" ] && break; sleep 0.1; done
        [ -s "$pidfile" ] || die "$d did not start"
        daemons+=("$(cat "$pidfile")")
    done
    for _ in $(seq 100); do virsh -c qemu:///system version >/dev/null 2>&1 && break; sleep 0.2; done
    virsh -c qemu:///system version >/dev/null 2>&1 || die "libvirtd started but does not answer"
    log "started virtlogd and libvirtd (pids ${daemons[*]}) in network namespace $NS"
fi

"$VAGRANT_DIR/build-box.sh" || die "building the box $BOX failed"

# Our daemon gets a storage pool in the cache dir, holding the box's base volume across runs.
# vagrant-libvirt names that volume after the box and its image's mtime; placing a hard link
# there spares the upload of the image through libvirt (1-2 min here).
if [ ${#daemons[@]} -gt 0 ]; then
    virsh_ pool-define-as coral-vagrant dir --target "$POOL_PATH" >/dev/null || die "cannot define the storage pool"
    pool_defined=1
    virsh_ pool-start coral-vagrant >/dev/null || die "cannot start the storage pool at $VCACHE/pool"
    box_img=$VAGRANT_HOME/boxes/${BOX//\//-VAGRANTSLASH-}/0/libvirt/box.img
    volume=$VCACHE/pool/${BOX//\//-VAGRANTSLASH-}_vagrant_box_image_0_$(stat -c %Y "$box_img")_box.img
    [ -f "$volume" ] || ln "$box_img" "$volume" 2>/dev/null || cp --reflink=auto "$box_img" "$volume"
    virsh_ pool-refresh coral-vagrant >/dev/null
    export CORAL_VAGRANT_POOL=coral-vagrant
fi
export CORAL_VAGRANT_PREFIX=coral-ebpf-$RUN_ID-
export VAGRANT_CWD=$VAGRANT_DIR VAGRANT_DOTFILE_PATH=$VCACHE/machines/$RUN_ID
t_ready=$(now)

log "vagrant up (box $BOX, driver $CORAL_VAGRANT_DRIVER, ${CORAL_VAGRANT_MEMORY} MiB, ${CORAL_VAGRANT_CPUS} vCPU)"
vm_created=1
if ! in_ns vagrant up --provider=libvirt --timestamp > "$LOGS/up.log" 2>&1; then
    tail -40 "$LOGS/up.log" >&2
    die "vagrant up failed (log: $LOGS/up.log)"
fi
t_up=$(now)
log "VM up in $(awk -v a="$t_ready" -v b="$t_up" 'BEGIN { printf "%.1f", b - a }') s"

in_ns vagrant ssh -c 'uname -r' 2>/dev/null | tr -d '\r' > "$RESULTS/vagrant/kernel"
# where the guest's boot time went, for whoever tunes the box
in_ns vagrant ssh -c 'systemd-analyze; systemd-analyze blame | head -15' > "$LOGS/boot-analysis.log" 2>&1
# Under TCG the tests stretch their waits (tests/helpers/timing.py).
scale=${CORAL_TEST_TIME_SCALE:-$([ "$CORAL_VAGRANT_DRIVER" = qemu ] && echo 10 || echo 1)}
in_ns vagrant ssh -c "cd /vagrant && sudo CORAL_TEST_TIME_SCALE=$scale CORAL_VM_SUITE=${CORAL_VM_SUITE:-kernel} vagrant/guest-test.sh ${CORAL_VAGRANT_PYTEST_ARGS:-}" 2>&1 \
    | tr -d '\r' | tee "$RESULTS/vagrant/console.log"
rc=${PIPESTATUS[0]}
echo "$rc" > "$RESULTS/vagrant/rc"
echo "$ACCEL" > "$RESULTS/vagrant/accel"
since "$t_up" > "$RESULTS/vagrant/wall"
in_ns vagrant ssh -c 'cat /tmp/coral-integration.xml' 2>/dev/null > "$RESULTS/vagrant/junit.xml"
log "tests done in $(cat "$RESULTS/vagrant/wall") s (exit status $rc)"

cleanup; trap - EXIT
echo
"$HOST_PYTHON" "$VM_DIR/report.py" "$RESULTS" vagrant | sed 's/^vm-test:/vagrant-test:/'
echo "box ready: $(awk -v a="$t_start" -v b="$t_ready" 'BEGIN { printf "%.1f", b - a }') s; vagrant up: $(awk -v a="$t_ready" -v b="$t_up" 'BEGIN { printf "%.1f", b - a }') s; total: $(since "$t_start") s; logs: $LOGS"
exit "$rc"
