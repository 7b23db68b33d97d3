#!/bin/bash
# `make vm-test`: the integration tests on the host kernel (natively) and on Debian kernels
# under QEMU (KVM where Linux guests really run under it, else TCG), two at a time; prints one
# row per kernel and exits non-zero if any failed.
#
# Environment:
#   KERNELS               kernel series to boot (default "5.10 6.1 6.12"; "" = host only)
#   CORAL_VM_ACCEL        kvm, tcg or auto (default): auto boots the first kernel under KVM once
#                         (tests/vm/accel.py, bounded by CORAL_KVM_CHECK_TIMEOUT, default 30 s)
#                         and uses KVM only if it reaches its init; the log names the reason
#   CORAL_VM_NATIVE       1 (default) also runs the tests natively on the host kernel; 0 skips it
#   CORAL_VM_JOBS         legs run at once (default 2: the machine has 2 cores)
#   CORAL_VM_MEM          guest memory in MiB (default 1536: BCC's clang + duckdb)
#   CORAL_VM_CPUS         vCPUs per guest (default 1: TCG on a shared 2-core machine)
#   CORAL_VM_TIMEOUT      seconds per guest boot, tests included (default 2400); pytest is
#                         interrupted 180 s before, so the tests that ran are still reported
#   CORAL_VM_SUITE        kernel (default): the integration tests whose outcome depends on the
#                         kernel (pytest marker `kernel`: probe, discovery, BCC, the RED engine,
#                         the agent choosing its engine); all: every integration test
#   CORAL_VM_PYTEST_ARGS  extra pytest arguments for every leg (e.g. "-k discovery -x")
#   CORAL_TEST_BEYLA      a real Beyla binary (.ci/run sets it): shared with the guests of
#                         CORAL_VM_BEYLA_KERNELS, where tests/integration/test_beyla_vm.py runs the
#                         whole agent with it (the other legs skip that module and say why)
#   CORAL_VM_BEYLA_KERNELS  the series that get Beyla (default 6.12: one kprobe kernel, as Beyla
#                         takes 20-40 s to start under TCG; "all" = every series in KERNELS)
#   CORAL_VM_TIME_SCALE   CORAL_TEST_TIME_SCALE in the guests (default 10 under TCG, 2 under KVM;
#                         see tests/helpers/timing.py)
#   CORAL_VM_CACHE        build cache (default ~/.cache/coral-ebpf/vm)
#   CORAL_VM_RESULTS      per-leg logs and junit XML (default $CORAL_VM_CACHE/results)
set -uo pipefail
source "$(dirname "$0")/lib.sh"
LOG_TAG=vm-test
need_root "make vm-test"
read -r -a SERIES <<< "${KERNELS-5.10 6.1 6.12}"
JOBS=${CORAL_VM_JOBS:-2}
RESULTS=${CORAL_VM_RESULTS:-$CACHE/results}
PYTEST_EXTRA=${CORAL_VM_PYTEST_ARGS:-}
t_start=$(now)

# beyla_for SERIES: the Beyla binary that leg's guest gets (empty: none).
BEYLA_KERNELS=${CORAL_VM_BEYLA_KERNELS:-6.12}
beyla_for() {
    [ -n "${CORAL_TEST_BEYLA:-}" ] || return 0
    if [ "$BEYLA_KERNELS" = all ] || [[ " $BEYLA_KERNELS " == *" $1 "* ]]; then echo "$CORAL_TEST_BEYLA"; fi
}
if [ -n "${CORAL_TEST_BEYLA:-}" ]; then
    log "real Beyla $CORAL_TEST_BEYLA for the guests of: $BEYLA_KERNELS"
else
    log "CORAL_TEST_BEYLA is unset: the real-Beyla suite (tests/integration/test_beyla_vm.py) skips"
fi

legs=()
[ "${CORAL_VM_NATIVE:-1}" = 1 ] && legs+=(host)
if [ ${#SERIES[@]} -gt 0 ]; then
    "$VM_DIR/build-matrix.sh" "${SERIES[@]}" >/dev/null || die "building the VM images failed"
    # shellcheck source=/dev/null
    source "$CACHE/manifest"
    # The legs that run the real-Beyla suite go first: theirs is the longest leg (Beyla starts in
    # 20-40 s under TCG), so starting it early shortens the whole run when legs run in parallel.
    for s in "${SERIES[@]}"; do [ -n "$(beyla_for "$s")" ] && legs+=("$s"); done
    for s in "${SERIES[@]}"; do [ -z "$(beyla_for "$s")" ] && legs+=("$s"); done
fi
[ ${#legs[@]} -gt 0 ] || die "nothing to run: KERNELS is empty and CORAL_VM_NATIVE=0"
first_vmlinuz() { local var="KERNEL_${SERIES[0]//[^0-9a-zA-Z]/_}"; echo "${!var}/vmlinuz"; }
if [ ${#SERIES[@]} -gt 0 ]; then
    # QEMU runs as root here (run-kernel.sh)
    choose_accel CORAL_VM_ACCEL root first_vmlinuz
    export CORAL_VM_ACCEL=$ACCEL
fi
t_built=$(now)
build_seconds=$(awk -v a="$t_start" -v b="$t_built" 'BEGIN { printf "%.1f", b - a }')

# The same pytest command everywhere; in a guest the project is the read-only share at /project
# and the interpreter is the image's venv. Nothing is written into the checkout.
# In a guest, pytest gets SIGINT 3 minutes before the VM's own timeout: it then still prints its
# summary and writes the junit XML for the tests that ran.
# The user-space suites (receiver, storage, Beyla supervision with the stand-in) behave the same on
# every kernel and run natively in `make test`; under TCG they would cost ~10x the time and prove
# nothing more, so by default the guests run the kernel-facing tests.
case "${CORAL_VM_SUITE:-kernel}" in
    kernel) SELECT="-m kernel" ;;
    all) SELECT="" ;;
    *) die "CORAL_VM_SUITE must be kernel or all, not '${CORAL_VM_SUITE}'" ;;
esac
PYTEST="-m pytest tests/integration $SELECT -p no:cacheprovider -q -ra --durations=10"
export CORAL_VM_TIMEOUT=${CORAL_VM_TIMEOUT:-2400}
GUEST_BUDGET=$((CORAL_VM_TIMEOUT - 180))
# Tests stretch their waits by CORAL_TEST_TIME_SCALE (tests/helpers/timing.py): TCG is ~10x slower,
# a KVM guest with one vCPU a little slower than the host.
time_scale=${CORAL_VM_TIME_SCALE:-$([ "${CORAL_VM_ACCEL:-tcg}" = kvm ] && echo 2 || echo 10)}
# The real Beyla, where the runner shared one (vmtest-init mounts it at /run/beyla).
GUEST_CMD="[ -x /run/beyla/beyla ] && export CORAL_TEST_BEYLA=/run/beyla/beyla; \
export PYTHONPATH=/project PYTHONDONTWRITEBYTECODE=1 PY_COLORS=0 HYPOTHESIS_STORAGE_DIRECTORY=/tmp/hypothesis \
CORAL_TEST_TIME_SCALE=$time_scale; \
cd /project && exec timeout -s INT -k 60 $GUEST_BUDGET /opt/coral-venv/bin/python $PYTEST \
--junitxml=\$VMTEST_OUT/junit.xml $PYTEST_EXTRA"

run_native() {
    local out=$RESULTS/host
    mkdir -p "$out"; uname -r > "$out/kernel"; echo native > "$out/accel"
    [ -x "$PROJECT_DIR/.venv/bin/python" ] || { echo "no $PROJECT_DIR/.venv: run make install first" > "$out/console.log"; echo 1 > "$out/rc"; return 1; }
    local start rc
    start=$(now)
    # shellcheck disable=SC2086
    (cd "$PROJECT_DIR" && PY_COLORS=0 HYPOTHESIS_STORAGE_DIRECTORY=/tmp/coral-vm-hypothesis \
        exec .venv/bin/python $PYTEST --junitxml="$out/junit.xml" $PYTEST_EXTRA) > "$out/console.log" 2>&1
    rc=$?
    echo "$rc" > "$out/rc"; since "$start" > "$out/wall"
    return "$rc"
}

run_leg() {
    local leg=$1 rc var kdir
    if [ "$leg" = host ]; then
        log "host $(uname -r): running natively"
        run_native; rc=$?
    else
        var="KERNEL_${leg//[^0-9a-zA-Z]/_}"; kdir=${!var}
        log "$leg: booting $(basename "$kdir") under $CORAL_VM_ACCEL"
        CORAL_VM_BEYLA=$(beyla_for "$leg") "$VM_DIR/run-kernel.sh" "$kdir" "$ROOTFS" "$RESULTS/$leg" "$GUEST_CMD"; rc=$?
    fi
    log "$leg: $([ "$rc" = 0 ] && echo ok || echo "FAILED (rc $rc)") in $(cat "$RESULTS/$leg/wall" 2>/dev/null || echo '?') s"
    return "$rc"
}

rm -rf "$RESULTS"; mkdir -p "$RESULTS"
trap 'kill $(jobs -p) 2>/dev/null; wait; exit 130' INT TERM HUP
running=0
for leg in "${legs[@]}"; do
    if [ "$running" -ge "$JOBS" ]; then wait -n; running=$((running - 1)); fi
    run_leg "$leg" &
    running=$((running + 1))
done
wait

echo
"$HOST_PYTHON" "$VM_DIR/report.py" "$RESULTS" "${legs[@]}" > "$RESULTS/report.txt"
status=$?
for leg in "${legs[@]}"; do
    rc=$(cat "$RESULTS/$leg/rc" 2>/dev/null || echo none)
    [ "$rc" = 0 ] && continue
    echo "==== $leg ($(cat "$RESULTS/$leg/kernel" 2>/dev/null)): exit status $rc; last lines of $RESULTS/$leg/console.log"
    tail -n "${CORAL_VM_TAIL:-60}" "$RESULTS/$leg/console.log" 2>/dev/null | sed 's/^/    /'
    echo
done
echo "build/cache check: $build_seconds s; total: $(since "$t_start") s; logs: $RESULTS"
cat "$RESULTS/report.txt"
exit "$status"
