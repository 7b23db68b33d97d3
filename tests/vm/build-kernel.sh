#!/bin/bash
# Fetch one Debian kernel series and build what a test VM needs to boot it, cached by version.
#   usage: build-kernel.sh SERIES        (e.g. 5.10, 6.1, 6.12; the private apt lists must be fresh:
#                                         build-matrix.sh runs private_apt_update first)
# Prints the directory holding: vmlinuz, initrd.cpio.gz, kernel.ext4 (headers, kbuild, a
# trimmed module tree and /boot/config, mounted by vmtest-init), info.
#
# The newest linux-image-amd64 (or linux-image-SERIES-amd64) metapackage version of the series
# names the ABI package, because ABI-named packages vanish from -security/-backports when
# superseded. Packages are fetched with `apt-get download` and unpacked with `dpkg -x` into the
# cache: nothing is installed on the host.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
SERIES=${1:?usage: build-kernel.sh SERIES}
LOG_TAG="kernel $SERIES"

meta_version=""; meta_pkg=""
while read -r pkg v; do
    if [ -z "$meta_version" ] || dpkg --compare-versions "$v" gt "$meta_version"; then
        meta_version=$v; meta_pkg=$pkg
    fi
done < <(papt_cache madison linux-image-amd64 "linux-image-$SERIES-amd64" 2>/dev/null \
         | awk -F'|' -v s="$SERIES." '{ gsub(/ /, "", $1); gsub(/ /, "", $2) } index($2, s) == 1 { print $1, $2 }')
[ -n "$meta_version" ] || die "no Debian kernel of series $SERIES in bullseye/bookworm(-security,-backports)"
image_pkg=$(papt_cache depends "$meta_pkg=$meta_version" | awk '/Depends: linux-image-/ { print $2; exit }')
abi=${image_pkg#linux-image-}
# headers-<abi> depends on headers-<abi>-common and linux-kbuild-<series>
header_pkgs=("linux-headers-$abi")
header_pkgs+=($(papt_cache depends "linux-headers-$abi" | awk '/Depends: linux-(headers|kbuild)-/ { print $2 }' | sort -u))
versions=$(papt_cache show --no-all-versions "$image_pkg" "${header_pkgs[@]}" \
           | awk '/^Package:/ { p = $2 } /^Version:/ { print p "=" $2 }')
key=$( { echo "$versions"; cat "$VM_DIR/build-kernel.sh" "$VM_DIR/mkinitramfs.sh"; } | hash_of)
OUT=$CACHE/kernels/$SERIES-$abi-$key
if [ -f "$OUT/info" ]; then
    echo "$OUT"; exit 0
fi

t0=$(now)
log "building $abi ($meta_pkg $meta_version)"
mkdir -p "$CACHE/debs" "$CACHE/kernels"
( cd "$CACHE/debs" && papt_get download "$image_pkg" "${header_pkgs[@]}" ) || die "apt-get download $image_pkg failed"
WORK=$(mktemp -d "$CACHE/kernels/.build-$SERIES.XXXXXX"); trap 'rm -rf "$WORK"' EXIT
K=$WORK/tree
log "downloaded at $(since "$t0") s"
for p in "$image_pkg" "${header_pkgs[@]}"; do
    deb=$(ls -t "$CACHE/debs/${p}_"*.deb | head -1); dpkg -x "$deb" "$K"
done
moddir=$K/lib/modules/$abi
[ -d "$moddir" ] || { [ -d "$K/usr/lib/modules/$abi" ] && mkdir -p "$K/lib/modules" && mv "$K/usr/lib/modules/$abi" "$moddir"; }
[ -d "$moddir" ] || die "$image_pkg holds no lib/modules/$abi"

# Keep the modules tests may autoload (network, file systems, crypto, BPF-related, virtio) and
# drop hardware drivers: the module tree shrinks from 100-400 MB to a few tens of MB.
find "$moddir/kernel" -mindepth 1 -maxdepth 1 -type d \
    ! \( -name arch -o -name crypto -o -name fs -o -name kernel -o -name lib -o -name mm -o -name net \
         -o -name security -o -name virt -o -name drivers \) -exec rm -rf {} +
find "$moddir/kernel/drivers" -mindepth 1 -maxdepth 1 -type d \
    ! \( -name net -o -name block -o -name char -o -name virtio -o -name md \) -exec rm -rf {} +
for d in wireless ethernet usb wwan can ieee802154 hamradio arcnet fddi wan plip slip hyperv phy \
         mdio pcs dsa ipa fjes thunderbolt xen-netback vmxnet3 ppp appletalk; do
    rm -rf "$moddir/kernel/drivers/net/$d"
done
rm -rf "$moddir/kernel/drivers/char/"{ipmi,tpm,agp,xillybus,pcmcia}
log "extracted at $(since "$t0") s"
depmod -a -b "$K" "$abi"
log "depmod at $(since "$t0") s"

"$VM_DIR/mkinitramfs.sh" "$K" "$WORK/initrd.cpio.gz" >&2

# The disk vmtest-init mounts read-only and links into /: headers for BCC, modules, config.
D=$WORK/disk
mkdir -p "$D/usr/src" "$D/usr/lib" "$D/lib/modules" "$D/boot"
cp -a "$K/usr/src/." "$D/usr/src/"
cp -a "$K"/usr/lib/linux-kbuild-* "$D/usr/lib/"
cp -a "$moddir" "$D/lib/modules/"
ln -sfn "/usr/src/linux-headers-$abi" "$D/lib/modules/$abi/build"   # the packaged link is absolute too
common=$(cd "$K/usr/src" && ls -d linux-headers-*-common 2>/dev/null | head -1)
[ -n "$common" ] && ln -sfn "/usr/src/$common" "$D/lib/modules/$abi/source"
cp -a "$K/boot/config-$abi" "$K/boot/System.map-$abi" "$D/boot/" 2>/dev/null || true
size_mb=$(( $(du -sm "$D" | cut -f1) * 13 / 10 + 64 ))
truncate -s "${size_mb}M" "$WORK/kernel.ext4"
mkfs.ext4 -q -F -L kernel -m 0 -d "$D" "$WORK/kernel.ext4"

cp "$K/boot/vmlinuz-$abi" "$WORK/vmlinuz"
cat > "$WORK/info" <<EOF
SERIES=$SERIES
ABI=$abi
PACKAGE="$meta_pkg $meta_version"
VERSIONS="$(echo $versions)"
EOF
rm -rf "$K" "$D"
rm -rf "$CACHE/kernels/$SERIES-"*  # older builds of this series
mv "$WORK" "$OUT"; trap - EXIT
for p in "$image_pkg" "${header_pkgs[@]}"; do rm -f "$CACHE/debs/${p}_"*.deb; done
log "built $abi in $(since "$t0") s: $(du -sh "$OUT" | cut -f1)"
echo "$OUT"
