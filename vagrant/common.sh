# Settings shared by vagrant/build-box.sh and vagrant/test.sh (sourced after tests/vm/lib.sh).

VAGRANT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
VCACHE=${CORAL_VAGRANT_CACHE:-$HOME/.cache/coral-ebpf/vagrant}
export VAGRANT_HOME=${VAGRANT_HOME:-$VCACHE/vagrant.d}
BOX=${CORAL_VAGRANT_BOX:-local/bookworm}
BOX_KEY_FILE=$VCACHE/box-${BOX//\//-}.key

# Vagrant's well-known insecure key pair, as Debian's vagrant package ships it.
vagrant_insecure_key() {
    local dir
    dir=$(ls -d /usr/share/rubygems-integration/all/gems/vagrant-[0-9]*/keys 2>/dev/null | sort -V | tail -1)
    [ -n "$dir" ] && [ -f "$dir/vagrant.pub" ] || die "Vagrant's insecure key not found (apt-get install vagrant)"
    echo "$dir"
}

# box_installed NAME: the box is in $VAGRANT_HOME for the libvirt provider.
box_installed() {
    [ -f "$VAGRANT_HOME/boxes/${1//\//-VAGRANTSLASH-}/0/libvirt/box.img" ]
}

# kvm_usable: whether a KVM guest really runs here. /dev/kvm can open fine and still be useless
# (nested virtualisation: on this kind of host a boot sector that only exits through
# isa-debug-exit takes ~9 s under KVM against 0.2 s under TCG, and real guests hang), so boot one
# and time it.
kvm_usable() {
    [ -r /dev/kvm ] && [ -w /dev/kvm ] || return 1
    local bs rc start elapsed
    bs=$(mktemp)
    # mov al,0x10; out 0xf4,al (isa-debug-exit: QEMU exits with (0x10 << 1) | 1 = 33); hlt
    printf '\xb0\x10\xe6\xf4\xf4\xeb\xfd' > "$bs"; truncate -s 510 "$bs"; printf '\x55\xaa' >> "$bs"
    start=$(now)
    timeout 5 qemu-system-x86_64 -accel kvm -machine pc -m 16 -display none -nodefaults -no-reboot \
        -device isa-debug-exit,iobase=0xf4,iosize=0x04 -drive "file=$bs,format=raw,if=floppy" >/dev/null 2>&1
    rc=$?
    elapsed=$(since "$start"); rm -f "$bs"
    [ "$rc" = 33 ] && awk -v e="$elapsed" 'BEGIN { exit !(e < 3) }'
}
