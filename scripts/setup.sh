#!/usr/bin/env bash
# Installs what building and testing sluice needs, and only what is missing.
# Safe to run again and again; `make run`, `make test` and `.ci/run` call it.
set -euo pipefail

need_apt=()
have() { command -v "$1" >/dev/null 2>&1; }
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive

# QEMU is one matched set from bookworm-backports (10.0): qemu-system-x86,
# qemu-system-data and qemu-utils. Installing bookworm's qemu-system-x86 7.2
# removes the machine image's backports qemu-utils (FACTS.md), so packages
# and versions are checked, not commands, and checked again afterwards.
QEMU_PKGS=(qemu-system-x86 qemu-system-data qemu-utils)
qemu_major() { dpkg-query -W -f='${db:Status-Abbrev} ${Version}\n' "$1" 2>/dev/null \
    | awk '$1=="ii" { v=$2; sub(/^[0-9]+:/, "", v); split(v, a, "."); print a[1] }'; }
qemu_ok() {
    local p
    for p in "${QEMU_PKGS[@]}"; do
        [ "$(qemu_major "$p")" = "10" ] || return 1
    done
}
if ! qemu_ok; then
    if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
        echo "setup: adding the bookworm-backports source" >&2
        echo 'deb http://deb.debian.org/debian bookworm-backports main' \
            | $SUDO tee /etc/apt/sources.list.d/bookworm-backports.list >/dev/null
    fi
    echo "setup: installing ${QEMU_PKGS[*]} from bookworm-backports" >&2
    $SUDO apt-get update >/dev/null
    $SUDO apt-get install -y --no-install-recommends -t bookworm-backports "${QEMU_PKGS[@]}" >/dev/null
    for p in "${QEMU_PKGS[@]}"; do
        [ "$(qemu_major "$p")" = "10" ] || {
            echo "setup: $p is not QEMU 10 from bookworm-backports after installing it:" >&2
            dpkg-query -W "$p" >&2 || true
            exit 1
        }
    done
fi
# apt-get install [-t RELEASE] PKGS..., quietly, retrying once after an
# update. Packages with daemons (prometheus, libvirt) must not start one:
# without a policy-rc.d saying so, one is in place for the install only.
apt_install() {
    local made_policy=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
        $SUDO chmod +x /usr/sbin/policy-rc.d
        made_policy=1
    fi
    $SUDO apt-get install -y --no-install-recommends "$@" >/dev/null 2>&1 || {
        $SUDO apt-get update >/dev/null
        $SUDO apt-get install -y --no-install-recommends "$@" >/dev/null
    }
    [ -n "$made_policy" ] && $SUDO rm -f /usr/sbin/policy-rc.d
    return 0
}
# libvirt for the test that runs the example domains: bookworm-backports'
# 11.3 (it leaves QEMU 10 alone; bookworm's 9.0 would pull QEMU 7.2 back).
# Installed without starting daemons (no systemd here; the test starts them).
installed() { dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null | grep -q '^ii'; }
if ! installed libvirt-daemon-system || ! installed libvirt-clients; then
    echo "setup: installing libvirt-daemon-system libvirt-clients from bookworm-backports" >&2
    apt_install -t bookworm-backports libvirt-daemon-system libvirt-clients
    for p in libvirt-daemon-system libvirt-clients; do
        installed "$p" || { echo "setup: $p missing after installing it" >&2; exit 1; }
    done
    qemu_ok || { echo "setup: installing libvirt changed QEMU away from 10:" >&2; dpkg-query -W "${QEMU_PKGS[@]}" >&2; exit 1; }
fi
have ip || need_apt+=(iproute2)
have ping || need_apt+=(iputils-ping)
have arping || need_apt+=(arping)
have python3 || need_apt+=(python3)
have curl || need_apt+=(curl)
have tracepath || need_apt+=(iputils-tracepath)
have traceroute || need_apt+=(traceroute)
have iperf3 || need_apt+=(iperf3)
# make bench: trafgen sends at a set rate, nft drops at the receiver.
have trafgen || need_apt+=(netsniff-ng)
have nft || need_apt+=(nftables)
# The Linux-VM baseline of make bench: depmod/modprobe and cpio.
have depmod || need_apt+=(kmod)
have cpio || need_apt+=(cpio)
[ -f /usr/share/qemu/qboot.rom ] || { echo "setup: qboot.rom missing from qemu-system-data" >&2; exit 1; }
[ -f /usr/share/seabios/bios-256k.bin ] || need_apt+=(seabios)
# The disk image: GRUB for BIOS and UEFI, xorriso and mtools for
# grub-mkrescue, OVMF to test the UEFI boot.
have grub-mkrescue || need_apt+=(grub-common)
[ -d /usr/lib/grub/i386-pc ] || need_apt+=(grub-pc-bin)
[ -d /usr/lib/grub/x86_64-efi ] || need_apt+=(grub-efi-amd64-bin)
have xorriso || need_apt+=(xorriso)
have mformat || need_apt+=(mtools)
[ -f /usr/share/OVMF/OVMF_CODE.fd ] || need_apt+=(ovmf)
# promtool lints /metrics in the qemu-tests (Debian ships it in prometheus).
have promtool || need_apt+=(prometheus)
# tcpdump reads the appliance's packet captures in the qemu-tests.
have tcpdump || need_apt+=(tcpdump)
# The switches the lab puts sluice behind: OVS's userspace datapath and
# OVS-DPDK with vhost-user (bookworm's OVS 3.1, DPDK 22.11); ethtool turns
# off transmit checksum offload on the veths OVS's datapath carries.
# `setup.sh bench`: what only make bench needs: dpdk-testpmd (in dpdk-dev).
[ "${1:-}" = bench ] && ! have dpdk-testpmd && need_apt+=(dpdk-dev)
# sluice-fastpath builds its generator (qemu-tests/gen/sluice-gen.c)
# against DPDK: a C compiler, pkg-config and DPDK's headers.
if [ "${1:-}" = bench ]; then
    have cc || need_apt+=(gcc)
    have pkg-config || need_apt+=(pkg-config)
    installed libdpdk-dev || need_apt+=(libdpdk-dev)
fi
# DPDK's mempool and vhost drivers are plugins Debian packages apart (and
# only recommends): without librte-mempool-ring every DPDK mempool fails.
for p in openvswitch-switch openvswitch-switch-dpdk ethtool librte-mempool-ring23 librte-net-vhost23; do
    installed "$p" || need_apt+=("$p")
done

if [ ${#need_apt[@]} -gt 0 ]; then
    echo "setup: installing ${need_apt[*]}" >&2
    apt_install "${need_apt[@]}"
fi
have promtool || { echo "setup: promtool missing after installing prometheus" >&2; exit 1; }
for f in /usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk /usr/lib/openvswitch-switch/ovs-vswitchd; do
    [ -x "$f" ] || { echo "setup: $f missing after installing openvswitch-switch(-dpdk)" >&2; exit 1; }
done
have ethtool || { echo "setup: ethtool missing after installing it" >&2; exit 1; }
if [ "${1:-}" = bench ]; then
    have dpdk-testpmd || { echo "setup: dpdk-testpmd missing after installing dpdk-dev" >&2; exit 1; }
    pkg-config --exists libdpdk || { echo "setup: pkg-config finds no libdpdk after installing libdpdk-dev" >&2; exit 1; }
fi

# The qemu-tests parse /metrics with the reference Prometheus parser.
if ! python3 -c 'import prometheus_client' 2>/dev/null; then
    echo "setup: installing prometheus_client (PyPI)" >&2
    PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet prometheus_client >&2 \
        || PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --break-system-packages prometheus_client >&2
fi

# make bench plots its end-to-end table.
if ! python3 -c 'import matplotlib' 2>/dev/null; then
    echo "setup: installing matplotlib (PyPI)" >&2
    PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet matplotlib >&2 \
        || PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --break-system-packages matplotlib >&2
fi

if have rustup; then
    # rust-toolchain.toml names the target; install it even where rustup's
    # auto-install is switched off (RUSTUP_AUTO_INSTALL=0).
    rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-none \
        || rustup target add x86_64-unknown-none >&2
    rustup component list --installed 2>/dev/null | grep -q '^rustfmt' \
        || rustup component add rustfmt >&2
else
    echo "setup: rustup not found: install Rust from https://rustup.rs first" >&2
    exit 1
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "setup: note: the qemu-tests and 'make run' create taps and namespaces and need root" >&2
fi
