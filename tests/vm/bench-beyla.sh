#!/bin/bash
# `make vm-bench-beyla`: bench/beyla_e2e.py in a Debian guest whose kernel has kprobes (the host has
# none), with the real Beyla shared in from $CORAL_TEST_BEYLA. Prints the bench's output; its last
# line is `beyla first data: <s> s`.
# Environment: CORAL_TEST_BEYLA (required), BENCH_KERNEL (series, default 6.12), and the
# run-kernel.sh variables (CORAL_VM_ACCEL: kvm or tcg, default tcg; CORAL_VM_MEM, ...).
set -uo pipefail
source "$(dirname "$0")/lib.sh"
LOG_TAG=vm-bench
need_root "make vm-bench-beyla"
[ -n "${CORAL_TEST_BEYLA:-}" ] || die "set CORAL_TEST_BEYLA to a real Beyla binary (../shared/beyla/install-test-beyla DIR prints one)"
series=${BENCH_KERNEL:-6.12}
"$VM_DIR/build-matrix.sh" "$series" >/dev/null || die "building the VM images failed"
# shellcheck source=/dev/null
source "$CACHE/manifest"
var="KERNEL_${series//[^0-9a-zA-Z]/_}"
out=${CORAL_VM_RESULTS:-$CACHE/results}/bench-beyla
cmd="export PYTHONPATH=/project PYTHONDONTWRITEBYTECODE=1 CORAL_TEST_BEYLA=/run/beyla/beyla; \
cd /project && /opt/coral-venv/bin/python bench/beyla_e2e.py > \$VMTEST_OUT/bench.txt 2>&1"
log "$series: booting $(basename "${!var}") under ${CORAL_VM_ACCEL:-tcg} (load average: $(cut -d' ' -f1-3 /proc/loadavg))"
CORAL_VM_BEYLA=$CORAL_TEST_BEYLA "$VM_DIR/run-kernel.sh" "${!var}" "$ROOTFS" "$out" "$cmd"
rc=$?
[ -f "$out/bench.txt" ] || { tail -40 "$out/console.log" >&2; die "the guest left no bench output (rc $rc)"; }
cat "$out/bench.txt"
exit "$rc"
