#!/bin/bash
# Build a Vagrant box (libvirt provider) of Debian bookworm offline from Debian packages, with
# the project's test dependencies baked in, and add it as $CORAL_VAGRANT_BOX (local/bookworm).
#   usage: build-box.sh [--force]
# Skipped when the box with the same cache key is already added. The key covers the versions of
# the box's Debian packages, the bookworm point release, the project's Python requirements,
# this script and Vagrant's insecure public key.
#
# Box contents: debootstrap minbase + linux-image-amd64 and its headers, grub-pc, systemd, udev,
# openssh-server, sudo, ifupdown + DHCP on eth0 (what Vagrant's Debian guest support expects),
# qemu-guest-agent, dbus, rsync (synced folder), the Debian packages of the project's Makefile,
# a venv /opt/coral-venv with the pyproject dependencies, the `vagrant` user with the insecure key
# (Vagrant replaces it on first `up`) and passwordless sudo.
#
# This host has no partition parser and no udev, so the disk is made like this: the file system
# is written straight into the partition with `mkfs.ext4 -E offset -d`; for GRUB, two loop
# devices (whole disk, partition at 1 MiB) appear in a private /dev as /dev/vda and /dev/vdb
# inside `unshare -m`, which is what grub-probe and update-grub need to find the root device.
set -euo pipefail
source "$(dirname "$0")/../tests/vm/lib.sh"
source "$(dirname "$0")/common.sh"
LOG_TAG=box
need_root "build-box.sh"
reexec_in_private_mounts "$@"
ensure_debs debootstrap fdisk qemu-utils e2fsprogs vagrant vagrant-libvirt util-linux python3-venv debian-archive-keyring
mkdir -p "$VCACHE"
exec 8> "$VCACHE/.box.lock"; flock 8

private_apt_update || die "cannot reach the Debian mirror $DEBIAN_MIRROR"
keydir=$(vagrant_insecure_key)
BOX_DEBS=(linux-image-amd64 grub-pc openssh-server sudo systemd-sysv udev ifupdown
          isc-dhcp-client netbase ca-certificates rsync qemu-guest-agent dbus kmod make python3-venv)
read -r -a host_debs <<< "$(project_deb_packages)"
mapfile -t debs < <(printf '%s\n' "${BOX_DEBS[@]}" "${host_debs[@]}" | sort -u)
point_release=$(awk '/^Version:/ { print $2; exit }' "$APT_DIR"/lists/*_dists_bookworm_InRelease 2>/dev/null || echo unknown)
versions=$(suite_versions bookworm "${debs[@]}")
key=$( { echo "bookworm $point_release"; echo "$versions"; project_requirements;
         cat "$VAGRANT_DIR/build-box.sh" "$keydir/vagrant.pub"; } | hash_of)
if [ "${1:-}" != --force ] && box_installed "$BOX" && [ "$(cat "$BOX_KEY_FILE" 2>/dev/null)" = "$key" ]; then
    log "box $BOX is up to date ($key)"; exit 0
fi

t0=$(now)
log "building box $BOX ($key)"
mkdir -p "$VCACHE/build" "$CACHE/debootstrap-debs"
WORK=$(mktemp -d "$VCACHE/build/box.XXXXXX")
R=$WORK/root MNT=$WORK/mnt LOGS=$VCACHE/logs
mkdir -p "$LOGS"
loops=()
cleanup() {
    set +e
    umount -R "$R" 2>/dev/null
    for l in "${loops[@]}"; do losetup -d "$l"; done
    rm -rf "$WORK"
}
trap cleanup EXIT

# Before the kernel package is configured: a small initramfs with only what a virtio/ext4 VM
# needs to mount its root (7 MB instead of 36 MB, and less time spent making it).
small_initramfs() {
    mkdir -p "$1/etc/initramfs-tools/conf.d" "$1/usr/share/initramfs-tools/modules.d"
    echo MODULES=list > "$1/etc/initramfs-tools/conf.d/coral-vagrant"
    printf '%s\n' virtio_pci virtio_blk virtio_scsi virtio_net ext4 > "$1/usr/share/initramfs-tools/modules.d/coral-vagrant"
}
build_wheelhouse "$CACHE/wheelhouse" > "$LOGS/wheelhouse.log" 2>&1 &
wheel_pid=$!
BETWEEN_STAGES=small_initramfs debootstrap_root "$R" "$LOGS/debootstrap.log" "${debs[@]}"
log "debootstrap done at $(since "$t0") s"
wait "$wheel_pid" || { cat "$LOGS/wheelhouse.log" >&2; die "fetching the Python wheels failed"; }

# Headers of the box's kernel, unpacked (BCC needs the tree; installing the package would pull
# in gcc for nothing).
abi=$(ls "$R/lib/modules" | head -1)
hdrs=("linux-headers-$abi")
hdrs+=($(papt_cache depends "linux-headers-$abi" | awk '/Depends: linux-(headers|kbuild)-/ { print $2 }' | sort -u))
kver=$(chroot "$R" dpkg-query -W -f='${Version}' "linux-image-$abi")
mkdir -p "$WORK/debs"
( cd "$WORK/debs" && papt_get download "${hdrs[@]/%/=$kver}" ) || die "apt-get download ${hdrs[*]} ($kver) failed"
# not straight into $R: unpacking ./lib/ over the merged-/usr symlink /lib would replace it
for deb in "$WORK"/debs/*.deb; do dpkg -x "$deb" "$WORK/headers"; done
cp -a "$WORK/headers/usr/." "$R/usr/"
[ -d "$WORK/headers/lib" ] && cp -a "$WORK/headers/lib/." "$R/usr/lib/"
rm -rf "$WORK/debs" "$WORK/headers"
chroot "$R" test -d "/lib/modules/$abi/build/include" || die "headers for $abi did not land in /lib/modules/$abi/build"

mkdir -p "$R/tmp/wheelhouse"
cp -a "$CACHE/wheelhouse/." "$R/tmp/wheelhouse/"
install -m 644 "$keydir/vagrant.pub" "$R/tmp/vagrant.pub"
uuid=$(cat /proc/sys/kernel/random/uuid)
cat > "$R/tmp/configure.sh" <<EOF
set -eu
export DEBIAN_FRONTEND=noninteractive
echo coral-vagrant > /etc/hostname
printf '127.0.0.1\tlocalhost\n127.0.1.1\tcoral-vagrant\n::1\tlocalhost ip6-localhost ip6-loopback\n' > /etc/hosts
echo 'UUID=$uuid / ext4 errors=remount-ro 0 1' > /etc/fstab
# Vagrant's Debian guest support configures networks through ifupdown
printf 'auto lo\niface lo inet loopback\n\nallow-hotplug eth0\niface eth0 inet dhcp\n' > /etc/network/interfaces
useradd -m -s /bin/bash -G sudo vagrant
echo vagrant:vagrant | chpasswd
echo 'vagrant ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/vagrant; chmod 440 /etc/sudoers.d/vagrant
install -d -m 700 -o vagrant -g vagrant /home/vagrant/.ssh
install -m 600 -o vagrant -g vagrant /tmp/vagrant.pub /home/vagrant/.ssh/authorized_keys
echo 'UseDNS no' > /etc/ssh/sshd_config.d/vagrant.conf
# host keys are made on first boot, so every VM from the box has its own
rm -f /etc/ssh/ssh_host_*
mkdir -p /etc/systemd/system/ssh.service.d
printf '[Service]\nExecStartPre=\nExecStartPre=/usr/bin/ssh-keygen -A\nExecStartPre=/usr/sbin/sshd -t\n' \
    > /etc/systemd/system/ssh.service.d/host-keys.conf
: > /etc/machine-id; rm -f /var/lib/dbus/machine-id
# e2scrub_reap costs ~17 s of a TCG boot and checks nothing on a throw-away VM
ln -sf /dev/null /etc/systemd/system/e2scrub_reap.service
cat >> /etc/default/grub <<'GRUB'
GRUB_TIMEOUT=0
GRUB_CMDLINE_LINUX="console=tty0 console=ttyS0,115200 net.ifnames=0 biosdevname=0"
GRUB_TERMINAL="console serial"
GRUB
python3 -m venv --system-site-packages /opt/coral-venv
/opt/coral-venv/bin/pip install -q --disable-pip-version-check --no-index --find-links /tmp/wheelhouse \
    -r /tmp/wheelhouse/requirements.txt
/opt/coral-venv/bin/python -c 'import bcc, duckdb, grpc, pytest; assert hasattr(bcc, "BPF")'
printf '# built by vagrant/build-box.sh (key $key)\nBOOKWORM=$point_release\n' > /etc/coral-ebpf-box
apt-get clean
rm -rf /var/lib/apt/lists/* /tmp/wheelhouse /tmp/vagrant.pub /usr/share/doc/* /usr/share/man/*
EOF
unshare -m --propagation private bash -euo pipefail -c '
    R=$1
    mount -t proc proc "$R/proc"; mount -t sysfs sys "$R/sys"; mount --rbind /dev "$R/dev"
    chroot "$R" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 sh /tmp/configure.sh
' _ "$R" > "$LOGS/configure.log" 2>&1 || { tail -30 "$LOGS/configure.log" >&2; die "configuring the box root failed"; }
rm -f "$R/tmp/configure.sh"
log "configured at $(since "$t0") s"

# The disk: MBR, one bootable partition at 1 MiB, ext4 written straight from the tree.
disk_gib=${CORAL_VAGRANT_DISK_GIB:-8}
part_offset=$((1024 * 1024)) part_bytes=$((disk_gib * 1024 * 1024 * 1024 - 1024 * 1024))
truncate -s "${disk_gib}G" "$WORK/disk.raw"
echo 'start=2048, type=83, bootable' | sfdisk -q "$WORK/disk.raw"
mkfs.ext4 -q -F -U "$uuid" -L root -E offset=$part_offset -d "$R" "$WORK/disk.raw" "$((part_bytes / 1024))k"
umount "$R"   # the tree is in the image now; free its memory

whole=$(losetup -f --show "$WORK/disk.raw"); loops+=("$whole")
part=$(losetup -f --show -o "$part_offset" --sizelimit "$part_bytes" "$WORK/disk.raw"); loops+=("$part")
mkdir -p "$MNT"
# In a private mount namespace, a tmpfs over /dev holds the loop devices as vda/vdb: the root is
# mounted from /dev/vdb, so /proc/self/mountinfo names a path that exists inside the chroot too.
unshare -m --propagation private bash -euo pipefail -c '
    MNT=$1 whole=$2 part=$3 uuid=$4
    whole_dev=$(stat -c "%t %T" "$whole") part_dev=$(stat -c "%t %T" "$part")
    mount -t tmpfs -o mode=755 tmpfs /dev
    read -r ma mi <<< "$whole_dev"; mknod /dev/vda b $((0x$ma)) $((0x$mi))
    read -r ma mi <<< "$part_dev"; mknod /dev/vdb b $((0x$ma)) $((0x$mi))
    for n in null:1:3 zero:1:5 random:1:8 urandom:1:9; do
        IFS=: read -r name ma mi <<< "$n"; mknod -m 666 "/dev/$name" c "$ma" "$mi"
    done
    mkdir -p /dev/disk/by-uuid; ln -s ../../vdb "/dev/disk/by-uuid/$uuid"
    mount /dev/vdb "$MNT"
    mount --rbind /dev "$MNT/dev"; mount -t proc proc "$MNT/proc"; mount -t sysfs sys "$MNT/sys"
    # core.img must find /boot/grub by UUID on a partition: grub takes vdb for a disk of its own
    chroot "$MNT" grub-install --target=i386-pc --modules="part_msdos ext2" /dev/vda
    chroot "$MNT" update-grub
    grep -q "root=UUID=$uuid" "$MNT/boot/grub/grub.cfg" || { echo "update-grub wrote no boot entry" >&2; exit 1; }
' _ "$MNT" "$whole" "$part" "$uuid" > "$LOGS/grub.log" 2>&1 || { cat "$LOGS/grub.log" >&2; die "installing GRUB failed"; }
for l in "${loops[@]}"; do losetup -d "$l"; done; loops=()
log "disk done at $(since "$t0") s"

B=$WORK/box
mkdir -p "$B"
qemu-img convert -O qcow2 "$WORK/disk.raw" "$B/box.img"
rm -f "$WORK/disk.raw"
echo "{\"provider\": \"libvirt\", \"format\": \"qcow2\", \"virtual_size\": $disk_gib}" > "$B/metadata.json"
cat > "$B/Vagrantfile" <<'EOF'
Vagrant.configure("2") do |config|
  config.vm.provider :libvirt do |libvirt|
    libvirt.disk_bus = "virtio"
    libvirt.nic_model_type = "virtio"
  end
end
EOF
tar -C "$B" -cf "$WORK/box.box" metadata.json Vagrantfile box.img
rm -rf "$B"
vagrant box remove -f --provider libvirt "$BOX" >/dev/null 2>&1 || true
vagrant box add -f --name "$BOX" "$WORK/box.box" > "$LOGS/box-add.log" 2>&1 \
    || { cat "$LOGS/box-add.log" >&2; die "vagrant box add failed"; }
echo "$key" > "$BOX_KEY_FILE"
# a libvirt pool keeps a copy of the old box as the base volume of new VMs: drop it
rm -f "$VCACHE/pool/${BOX//\//-VAGRANTSLASH-}_vagrant_box_image_"*
log "box $BOX built and added in $(since "$t0") s"
