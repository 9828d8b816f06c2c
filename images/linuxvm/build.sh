#!/usr/bin/env bash
# Builds the Linux-VM NAT baseline of `make bench` from Debian packages:
# Debian's kernel, a busybox-static initramfs with the host's nft (Debian's
# nftables and its libraries), the modules for virtio-net and nft
# masquerade loaded with insmod in `modprobe --show-depends` order.
#   build.sh OUT_DIR     -> OUT_DIR/vmlinuz, OUT_DIR/initramfs.cpio.gz,
#                           OUT_DIR/initramfs-testpmd.cpio.gz (with dpdk-testpmd)
# Cached: does nothing if both exist and the initramfs is newer than init.
set -euo pipefail
out=$(mkdir -p "$1" && cd "$1" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
[ -f "$out/vmlinuz" ] && [ "$out/initramfs.cpio.gz" -nt "$here/init" ] \
    && { ! command -v dpdk-testpmd >/dev/null || [ "$out/initramfs-testpmd.cpio.gz" -nt "$here/init-testpmd" ]; } && exit 0
for tool in depmod modprobe cpio nft; do
    command -v "$tool" >/dev/null || { echo "linuxvm: $tool missing (scripts/setup.sh installs it)" >&2; exit 1; }
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
kpkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image/{print $2; exit}')
apt-get download "$kpkg" busybox-static >/dev/null
mkdir x
for d in ./*.deb; do dpkg-deb -x "$d" x; done
kv=$(ls x/lib/modules)
depmod -b x "$kv"
root=$work/root
mkdir -p "$root"/{bin,dev,proc,sys,modules,lib64,lib/x86_64-linux-gnu,usr/lib/x86_64-linux-gnu}
cp x/bin/busybox "$root/bin/busybox"
: > "$root/modules.order"
for m in virtio_pci virtio_net nf_tables nft_chain_nat nft_masq nft_nat; do
    modprobe -d x -S "$kv" --show-depends "$m" | awk '$1 == "insmod" {print $2}'
done | awk '!seen[$0]++' | while read -r ko; do
    cp "$ko" "$root/modules/"
    basename "$ko" >> "$root/modules.order"
done
# nft and the libraries it links, as installed from Debian on this host.
nft_bin=$(command -v nft)
cp "$nft_bin" "$root/bin/nft"
ldd "$nft_bin" | awk '/=>/ {print $3} /ld-linux/ {print $1}' | while read -r lib; do
    [ -f "$lib" ] && cp -L "$lib" "$root$lib"
done
cp "$here/init" "$root/init"
chmod +x "$root/init"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) > "$out/initramfs.cpio.gz"
# The testpmd VM (sluice-fastpath's strongest baseline): the same kernel
# and busybox, uio_pci_generic instead of virtio-net, Debian's dpdk-testpmd
# with its libraries and the three plugins it needs (PCI bus, virtio PMD,
# ring mempool), loaded by path (-d).
if command -v dpdk-testpmd >/dev/null; then
    troot=$work/troot
    mkdir -p "$troot"/{bin,dev,proc,sys,modules,lib64,lib/dpdk,lib/x86_64-linux-gnu,usr/lib/x86_64-linux-gnu}
    cp x/bin/busybox "$troot/bin/busybox"
    : > "$troot/modules.order"
    for m in uio uio_pci_generic; do
        modprobe -d x -S "$kv" --show-depends "$m" | awk '$1 == "insmod" {print $2}'
    done | awk '!seen[$0]++' | while read -r ko; do
        cp "$ko" "$troot/modules/"
        basename "$ko" >> "$troot/modules.order"
    done
    pmds=/usr/lib/x86_64-linux-gnu/dpdk/pmds-23.0
    tp=$(command -v dpdk-testpmd)
    cp "$tp" "$troot/bin/dpdk-testpmd"
    for p in net_virtio mempool_ring; do cp -L "$pmds/librte_$p.so.23" "$troot/lib/dpdk/"; done
    for f in "$tp" "$troot"/lib/dpdk/*.so.23; do ldd "$f"; done | awk '/=>/ {print $3} /ld-linux/ {print $1}' \
        | sort -u | while read -r lib; do
            [ -f "$lib" ] && mkdir -p "$(dirname "$troot$lib")" && cp -L "$lib" "$troot$lib"
        done
    cp "$here/init-testpmd" "$troot/init"
    chmod +x "$troot/init"
    (cd "$troot" && find . | cpio -o -H newc --quiet | gzip -1) > "$out/initramfs-testpmd.cpio.gz"
    echo "linuxvm: $out/initramfs-testpmd.cpio.gz $(stat -c %s "$out/initramfs-testpmd.cpio.gz") bytes"
fi
cp x/boot/vmlinuz-"$kv" "$out/vmlinuz"
echo "linuxvm: $out/vmlinuz ($kv), $out/initramfs.cpio.gz $(stat -c %s "$out/initramfs.cpio.gz") bytes"
