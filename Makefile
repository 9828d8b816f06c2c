# sluice: the front door.
#   make image      build the bootable PVH ELF (target/images/sluice.elf)
#   make disk       and a BIOS + UEFI qcow2 disk image (target/images/sluice.qcow2)
#   make run        boot a demo appliance on taps in namespaces sluice-lan/-wan
#   make test       unit tests on the host + qemu-tests on the real image
#   make bench      measurements side by side with a baseline (never in test)
#   make fuzz       the AFL++ fuzz targets, FUZZ_SECONDS (default 600) each
#   make soak       10 minutes of mixed traffic and reloads, sampled and plotted

CARGO   ?= cargo
KERNEL  := target/x86_64-unknown-none/release/sluice-kernel
IMAGE   := target/images/sluice.elf
SLUICE  := target/release/sluice
# Passed to `sluice run`, e.g. make run ARGS="--machine q35-qboot"
ARGS    ?=

PREFIX ?= /usr/local

.PHONY: all setup image disk host run test install unit-test qemu-test fuzz-smoke fuzz soak bench fmt lint clean

all: image host

setup:
	@./scripts/setup.sh

image: setup
	$(CARGO) build --release -p sluice-kernel --target x86_64-unknown-none
	@mkdir -p target/images
	@cp $(KERNEL) target/images/sluice.debug.elf
	@strip --strip-debug -o $(IMAGE) $(KERNEL)
	@echo "image: $(IMAGE) $$(stat -c %s $(IMAGE)) bytes (unstripped: target/images/sluice.debug.elf)"

# A BIOS + UEFI disk image (qcow2) for libvirt/OpenStack: GRUB + the same ELF.
disk: image
	@./images/disk/mkdisk.sh $(IMAGE) target/images

host: setup
	$(CARGO) build --release -p sluice

run: image host
	$(SLUICE) run $(ARGS)

unit-test: setup
	$(CARGO) test -p sluice-vnfs -p sluice-drivers -p sluice

qemu-test: disk
	$(CARGO) test -p sluice-qemu-tests

# Unit tests first (fast), then the qemu-tests on the freshly built image
# and disk image, then a short bounded run of each fuzz target.
test: disk lint
	$(CARGO) test
	@./scripts/fuzz.sh $(FUZZ_SMOKE_SECONDS)

FUZZ_SMOKE_SECONDS ?= 30
FUZZ_SECONDS ?= 600

fuzz-smoke: setup
	@./scripts/fuzz.sh $(FUZZ_SMOKE_SECONDS)

fuzz: setup
	@./scripts/fuzz.sh $(FUZZ_SECONDS)

# SOAK_SECONDS=600 by default; writes target/soak/soak.csv and soak.png.
soak: image host
	$(CARGO) run --release -p sluice-qemu-tests --bin sluice-soak

bench: image host
	# DPDK's testpmd (Debian's dpdk-dev) drives the vhost-user fast path.
	@./scripts/setup.sh bench
	# Every host benchmark in vnfs/benches (a stage adds its own there).
	$(CARGO) bench -p sluice-vnfs
	$(CARGO) run --release -p sluice-qemu-tests --bin sluice-bench
	$(CARGO) run --release -p sluice-qemu-tests --bin sluice-e2e
	# The seed's table: the NAT behind bridge, OVS userspace and OVS-DPDK.
	$(CARGO) run --release -p sluice-qemu-tests --bin sluice-e2e -- switches
	$(CARGO) run --release -p sluice-qemu-tests --bin sluice-fastpath

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy -- -D warnings
	$(CARGO) clippy -p sluice-kernel --target x86_64-unknown-none -- -D warnings

# The host tool (check, run, metrics, logs) on the PATH.
install: host
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 0755 target/release/sluice $(DESTDIR)$(PREFIX)/bin/sluice

clean:
	$(CARGO) clean
