#!/bin/bash
# Build a tiny busybox initramfs for a Debian kernel extracted with `dpkg -x`.
#   usage: mkinitramfs.sh KTREE OUT.cpio.gz      (KTREE holds lib/modules/<abi> with modules.dep)
# It loads the modules needed to reach the root disk, the headers disk, the 9p share, the
# results channel and the RNG (Debian builds these as modules; some are built in on 6.12),
# mounts /dev/vda and the 9p share, and hands over to the share's tests/vm/vmtest-init.
# Needs on the host: busybox-static, kmod (modprobe), xz-utils, zstd for 6.12+ if zstd-compressed.
set -euo pipefail
KTREE=$(readlink -f "$1"); OUT=$(readlink -f "$2")
MODDIR=$(ls -d "$KTREE"/lib/modules/* | head -1); ABI=$(basename "$MODDIR")
[ -f "$MODDIR/modules.dep" ] || depmod -a -b "$KTREE" "$ABI"
BUSYBOX=/bin/busybox
"$BUSYBOX" --list 2>/dev/null | grep -qx switch_root || { echo "need busybox-static at $BUSYBOX" >&2; exit 1; }

W=$(mktemp -d); trap 'rm -rf "$W"' EXIT
mkdir -p "$W"/{bin,dev,proc,sys,newroot,mods}
cp "$BUSYBOX" "$W/bin/busybox"
for applet in sh mount umount insmod switch_root mkdir cat sleep echo poweroff ls; do ln -s busybox "$W/bin/$applet"; done

: > "$W/mods/order"
modprobe -d "$KTREE" -S "$ABI" --show-depends -a \
        virtio_pci virtio_blk ext4 9pnet_virtio 9p virtio_console virtio_rng 2>/dev/null \
    | awk '$1 == "insmod" { print $2 }' | while read -r path; do
        name=$(basename "$path")
        case "$name" in
            *.xz)  xz -dc "$path" > "$W/mods/${name%.xz}"; name=${name%.xz} ;;
            *.zst) zstd -qdc "$path" > "$W/mods/${name%.zst}"; name=${name%.zst} ;;
            *)     cp "$path" "$W/mods/$name" ;;
        esac
        grep -qx "$name" "$W/mods/order" || echo "$name" >> "$W/mods/order"
    done

cat > "$W/init" <<'EOF'
#!/bin/sh
# Mount the root image and the project share, then run the harness's init from the share.
fail() { echo "vmtest: $*"; echo "VMTEST-RC=97"; poweroff -f; }
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in $(cat /mods/order); do insmod /mods/$m 2>/dev/null; done
i=0; while [ ! -b /dev/vda ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done
mount -t ext4 -o rw /dev/vda /newroot || fail "cannot mount the root image /dev/vda"
mkdir -p /newroot/project
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=512000 project /newroot/project \
    || fail "cannot mount the 9p share 'project'"
[ -x /newroot/project/tests/vm/vmtest-init ] || fail "no executable tests/vm/vmtest-init in the project share"
umount /proc /sys; mount --move /dev /newroot/dev
exec switch_root /newroot /project/tests/vm/vmtest-init
EOF
chmod +x "$W/init"
(cd "$W" && find . | cpio -o -H newc --quiet | gzip -1) > "$OUT"
echo "$OUT: $(du -h "$OUT" | cut -f1), modules: $(tr '\n' ' ' < "$W/mods/order")"
