# Shared helpers for the VM test scripts (sourced, not run). Bash only.
#
# Everything these scripts build lives under $CORAL_VM_CACHE (default ~/.cache/coral-ebpf/vm):
# the host's apt sources, dpkg state and /lib/modules are never changed.

VM_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PROJECT_DIR=$(cd "$VM_DIR/../.." && pwd)
CACHE=${CORAL_VM_CACHE:-$HOME/.cache/coral-ebpf/vm}
HOST_PYTHON=/usr/bin/python3   # Debian's python3: the one python3-bpfcc is built for
DEBIAN_KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

log() { printf '[%s %s] %s\n' "$(date +%H:%M:%S)" "${LOG_TAG:-vm}" "$*" >&2; }
die() { log "error: $*"; exit 1; }

need_root() {
    [ "$(id -u)" = 0 ] || die "$1 needs root (debootstrap, chroot, QEMU with 9p); run it with sudo"
}

# ensure_debs PKG...: apt-get install the Debian packages that are missing, and nothing else.
# A second run needs no network and takes no dpkg lock.
ensure_debs() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    need_root "installing ${missing[*]}"
    log "installing Debian packages: ${missing[*]}"
    # Lock::Timeout: other engineers' `make install` may hold the dpkg lock for a while
    apt-get update -qq || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        -o DPkg::Lock::Timeout=600 "${missing[@]}" >/dev/null || die "apt-get install ${missing[*]} failed"
}

# debian_mirrors: sets DEBIAN_MIRROR and DEBIAN_SECURITY_MIRROR from the host's apt configuration
# (deb822 /etc/apt/sources.list.d/*.sources, else one-line sources.list), unless already set.
debian_mirrors() {
    local main="" sec="" files
    files=$(ls /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list.d/*.sources 2>/dev/null | sort -u)
    if [ -n "$files" ]; then
        # shellcheck disable=SC2086
        read -r main sec < <(awk '
            BEGIN { RS = ""; FS = "\n" }
            {
                uris = ""; suites = ""; types = ""
                for (i = 1; i <= NF; i++) {
                    line = $i; sub(/#.*/, "", line)
                    if (line ~ /^URIs:/)   { sub(/^URIs:[ \t]*/, "", line); uris = line }
                    if (line ~ /^Suites:/) { sub(/^Suites:[ \t]*/, "", line); suites = line }
                    if (line ~ /^Types:/)  { types = line }
                }
                if (uris == "" || types !~ /deb([ \t]|$)/) next
                split(uris, u, /[ \t]+/)
                if (suites ~ /-security/) { if (sec == "") sec = u[1] }
                else if (main == "") main = u[1]
            }
            END { print main, sec }' $files)
    fi
    if [ -z "$main" ] && [ -r /etc/apt/sources.list ]; then
        main=$(awk '$1=="deb" && $0 !~ /-security/ { for (i=2;i<=NF;i++) if ($i ~ /:\/\//) { print $i; exit } }' /etc/apt/sources.list)
        sec=$(awk '$1=="deb" && $0 ~ /-security/ { for (i=2;i<=NF;i++) if ($i ~ /:\/\//) { print $i; exit } }' /etc/apt/sources.list)
    fi
    DEBIAN_MIRROR=${DEBIAN_MIRROR:-$main}
    DEBIAN_SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-${sec:-${main%/debian}/debian-security}}
    [ -n "$DEBIAN_MIRROR" ] || die "no Debian mirror found in /etc/apt/sources.list.d/*.sources or /etc/apt/sources.list; set DEBIAN_MIRROR"
    export DEBIAN_MIRROR DEBIAN_SECURITY_MIRROR
}

# Private apt configuration (lists, cache, sources) under $CACHE/apt: used to resolve and
# download guest kernels and to key the caches by package versions.
APT_DIR=$CACHE/apt
private_apt_opts() {
    APT_OPTS=(-o Dir::Etc::SourceList="$APT_DIR/sources.list" -o Dir::Etc::SourceParts=/nonexistent
              -o Dir::State::Lists="$APT_DIR/lists" -o Dir::Cache="$APT_DIR/cache"
              -o Dir::State::status=/dev/null -o Debug::NoLocking=1
              -o APT::Sandbox::User=root -o Acquire::Languages=none)
}

# private_apt_update: (re)writes the private sources and refreshes the lists. Returns non-zero
# when the mirror cannot be reached (callers may then fall back to an earlier build).
private_apt_update() {
    debian_mirrors
    mkdir -p "$APT_DIR/lists/partial" "$APT_DIR/cache/archives/partial"
    cat > "$APT_DIR/sources.list" <<EOF
deb [signed-by=$DEBIAN_KEYRING] $DEBIAN_MIRROR bullseye main
deb [signed-by=$DEBIAN_KEYRING] $DEBIAN_SECURITY_MIRROR bullseye-security main
deb [signed-by=$DEBIAN_KEYRING] $DEBIAN_MIRROR bookworm main
deb [signed-by=$DEBIAN_KEYRING] $DEBIAN_MIRROR bookworm-updates main
deb [signed-by=$DEBIAN_KEYRING] $DEBIAN_SECURITY_MIRROR bookworm-security main
deb [signed-by=$DEBIAN_KEYRING] $DEBIAN_MIRROR bookworm-backports main
EOF
    private_apt_opts
    flock "$APT_DIR/.lock" apt-get -qq "${APT_OPTS[@]}" update
}

papt_cache() { private_apt_opts; apt-cache "${APT_OPTS[@]}" "$@"; }
papt_get() { private_apt_opts; apt-get -qq "${APT_OPTS[@]}" "$@"; }

# suite_versions SUITE PKG...: "pkg=version" for each package, its newest version in SUITE
# of the private lists ("pkg=" when absent). One apt-cache call: each costs about a second.
suite_versions() {
    local suite=$1; shift
    papt_cache madison "$@" 2>/dev/null | awk -F'|' -v s=" $suite/" '
        { gsub(/ /, "", $1); gsub(/ /, "", $2) }
        index($3, s) && !($1 in v) { v[$1] = $2 }
        END { for (p in v) print p "=" v[p] }' | sort
}

hash_of() { sha256sum | cut -c1-16; }

# Python requirements of the project for a test guest: runtime dependencies plus the `test`
# extra, without the lint/type-check tools that only `make lint`/`make typecheck` use.
project_requirements() {
    "$HOST_PYTHON" - "$PROJECT_DIR/pyproject.toml" <<'EOF'
import re, sys, tomllib
with open(sys.argv[1], "rb") as f:
    project = tomllib.load(f)["project"]
reqs = list(project.get("dependencies", [])) + list(project.get("optional-dependencies", {}).get("test", []))
lint_only = re.compile(r"^(ruff|mypy|types-[\w.-]+)\b", re.I)
print("\n".join(sorted(r for r in reqs if not lint_only.match(r))))
EOF
}

# Debian packages the project's Makefile installs on a host (its DEB_PACKAGES variable).
project_deb_packages() {
    make -s --no-print-directory -C "$PROJECT_DIR" -f Makefile -f - coral-print-deb-packages <<'EOF'
coral-print-deb-packages: ; @echo $(DEB_PACKAGES)
EOF
}

# build_wheelhouse DIR: wheels for project_requirements, fetched from PyPI with the host's pip
# configuration (index, certificates), so image builds install offline from DIR.
build_wheelhouse() {
    local dir=$1 pipvenv=$CACHE/host-pip
    [ -x "$pipvenv/bin/pip" ] || "$HOST_PYTHON" -m venv "$pipvenv" || die "cannot create $pipvenv (apt-get install python3-venv)"
    mkdir -p "$dir"
    project_requirements > "$dir/requirements.txt"
    "$pipvenv/bin/pip" wheel -q --disable-pip-version-check -w "$dir" -r "$dir/requirements.txt" \
        || die "pip wheel for the guest's Python dependencies failed (is PyPI reachable?)"
}

# Free-running timer helpers
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# reexec_in_private_mounts "$@" (first thing in a script): run the script in its own mount
# namespace, so the tmpfs work trees and chroot bind mounts it makes vanish with it, even when
# it is killed. Building a root tree on tmpfs also spares dpkg's thousands of fsyncs.
reexec_in_private_mounts() {
    [ -n "${CORAL_PRIVATE_MOUNTS:-}" ] && return 0
    CORAL_PRIVATE_MOUNTS=1 exec unshare -m --propagation private "$0" "$@"
}

# debootstrap_root ROOT LOG PKG...: bookworm minbase + PKGs into ROOT (a fresh tmpfs), with the
# package cache shared by every build. A hook may run between the two stages: $BETWEEN_STAGES.
debootstrap_root() {
    local root=$1 logfile=$2; shift 2
    mkdir -p "$root" "$CACHE/debootstrap-debs"
    mount -t tmpfs -o mode=755 tmpfs "$root"
    debootstrap --foreign --variant=minbase --include="$(IFS=,; echo "$*")" \
        --cache-dir="$CACHE/debootstrap-debs" bookworm "$root" "$DEBIAN_MIRROR" > "$logfile" 2>&1 \
        || { tail -20 "$logfile" >&2; die "debootstrap (first stage) failed; log: $logfile"; }
    [ -n "${BETWEEN_STAGES:-}" ] && "$BETWEEN_STAGES" "$root"
    chroot "$root" /debootstrap/debootstrap --second-stage >> "$logfile" 2>&1 \
        || { tail -20 "$logfile" >&2; die "debootstrap (second stage) failed; log: $logfile"; }
    rm -f "$root"/var/cache/apt/archives/*.deb
}

# choose_accel VAR USER KERNEL_FN: sets ACCEL (kvm or tcg) and ACCEL_REASON, and logs one line
# naming the reason. $VAR (CORAL_VM_ACCEL, CORAL_VAGRANT_DRIVER) forces it: kvm, tcg (or qemu,
# libvirt's name for TCG), auto/unset = decide. Deciding is tests/vm/accel.py: KVM only when USER,
# the user QEMU will run as, can open /dev/kvm and a real Linux kernel boots to its init under
# KVM as USER within CORAL_KVM_CHECK_TIMEOUT seconds (default 30). KERNEL_FN prints the vmlinuz
# to boot; it runs only when that boot is needed.
choose_accel() {
    local var=$1 user=$2 kernel_fn=$3 line kernel
    line=$("$HOST_PYTHON" "$VM_DIR/accel.py" precheck --user "$user" --override "${!var:-}" --override-name "$var") \
        || die "cannot choose the VM accelerator"
    if [ "${line%% *}" = check ]; then
        log "$user can open /dev/kvm: booting a kernel under KVM to see whether guests run (up to ${CORAL_KVM_CHECK_TIMEOUT:-30} s)"
        if kernel=$("$kernel_fn") && [ -n "$kernel" ]; then
            line=$("$HOST_PYTHON" "$VM_DIR/accel.py" boot --user "$user" --kernel "$kernel" \
                --timeout "${CORAL_KVM_CHECK_TIMEOUT:-30}") || die "the KVM boot check could not run"
        else
            line="tcg no kernel could be built for the KVM boot check"
        fi
    fi
    ACCEL=${line%% *}
    ACCEL_REASON=${line#* }
    log "accelerator: $ACCEL ($ACCEL_REASON)"
}

# matrix_vmlinuz [SERIES]: builds (or finds in the cache) one VM-matrix kernel, default 6.1, and
# prints its vmlinuz: the kernel the KVM boot check starts when no matrix is built yet.
matrix_vmlinuz() {
    local series=${1:-6.1} dir
    ensure_debs qemu-system-x86 busybox-static kmod cpio xz-utils zstd e2fsprogs debian-archive-keyring
    mkdir -p "$CACHE"
    private_apt_update >&2 || return 1
    dir=$(flock "$CACHE/.build.lock" "$VM_DIR/build-kernel.sh" "$series" | tail -1) || return 1
    [ -f "$dir/vmlinuz" ] || return 1
    echo "$dir/vmlinuz"
}
