#!/usr/bin/env bash
# Turns the PVH/multiboot2 ELF into a bootable disk image for libvirt and
# OpenStack: a hybrid BIOS + UEFI image made by GRUB's grub-mkrescue
# (Debian's grub-pc-bin and grub-efi-amd64-bin), converted to qcow2.
#   mkdisk.sh ELF OUT_DIR
set -euo pipefail
elf=$1
out=$2
here=$(cd "$(dirname "$0")" && pwd)
root=$(mktemp -d)
trap 'rm -rf "$root" "$root.log"' EXIT
mkdir -p "$root/boot/grub"
cp "$elf" "$root/boot/sluice.elf"
cp "$here/grub.cfg" "$root/boot/grub/grub.cfg"
grub-file --is-x86-multiboot2 "$root/boot/sluice.elf" || { echo "mkdisk: $elf has no multiboot2 header" >&2; exit 1; }
mkdir -p "$out"
grub-mkrescue -o "$out/sluice.img" "$root" 2>"$root.log" || { cat "$root.log" >&2; exit 1; }
qemu-img convert -f raw -O qcow2 "$out/sluice.img" "$out/sluice.qcow2"
echo "disk: $out/sluice.qcow2 $(stat -c %s "$out/sluice.qcow2") bytes (raw: $out/sluice.img)"
