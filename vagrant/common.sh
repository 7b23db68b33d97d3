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
