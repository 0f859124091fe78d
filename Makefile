# SPDX-License-Identifier: GPL-2.0
# rkvm: user-facing targets. Kbuild (not this file) describes the module to
# the kernel build. `make help` lists the targets.

SHELL := /bin/bash
TOP := $(CURDIR)
export RKVM_CACHE ?= $(HOME)/.cache/rkvm
BUILD := $(TOP)/build
LLVM := -19
export LIBCLANG_PATH ?= /usr/lib/llvm-19/lib

# KDIR: the kernel build to compile against. Default: the cached test kernel,
# built (once) by scripts/build-kernel. Pass your own Rust-enabled, built tree
# with KDIR=/path.
KDIR_RESOLVED = $(shell scripts/build-kernel)
KSRC = $(RKVM_CACHE)/linux-source-7.3
TEST_CFLAGS = -static -O2 -Wall -Werror -D_GNU_SOURCE \
	-isystem $(KDIR_RESOLVED)/usr-headers/include \
	-I $(if $(KDIR),$(KDIR),$(KSRC))/tools/testing/selftests -I $(TOP)/tests/selftests

TESTS := $(patsubst tests/selftests/%.c,$(BUILD)/tests/%,$(wildcard tests/selftests/*_test.c)) \
	$(patsubst tests/selftests/guest/%.c,$(BUILD)/tests/%,$(wildcard tests/selftests/guest/*_test.c))
TOOLS := $(patsubst tools/%.c,$(BUILD)/tools/%,$(wildcard tools/*.c))
BENCHES := $(patsubst tests/bench/%.c,$(BUILD)/bench/%,$(wildcard tests/bench/*.c))

.PHONY: all help bootstrap kernel module tests host-test lint rustfmt check bochs-check run vm-shell bench clean \
	bochs-kernel bochs-module guest-kernel guest

all: module

help:
	@echo 'rkvm make targets:'
	@echo '  make / make module  build rkvm.ko against the test kernel (or KDIR=...)'
	@echo '  make run            boot the test VM; rkvm-run boots a long-mode guest on'
	@echo '                      /dev/kvm, then on /dev/rkvm, then QEMU boots Linux on'
	@echo '                      /dev/rkvm (VENDOR=intel: the Bochs machine, Intel'
	@echo '                      VT-x, rkvm-run only, instead of QEMU, AMD SVM)'
	@echo '  make check          set up everything and run every test: host tests, lints,'
	@echo '                      the QEMU test VM (AMD SVM), then the Bochs machine'
	@echo '                      (Intel VT-x; BOCHS=0 skips it)'
	@echo '  make bochs-check    only the Bochs machine: kvm, module and rkvm legs on'
	@echo '                      emulated VT-x (BOCHS_TESTS=a_test,b_test picks tests)'
	@echo '  make vm-shell       boot the test VM with rkvm loaded and a shell'
	@echo '  make bench          exit microbenchmarks in the test VM (-icount): KVM vs'
	@echo '                      rkvm (BENCH_GUEST=1: also a Linux guest boot)'
	@echo '  make host-test      cargo test for the host-testable core'
	@echo '  make lint           rustfmt --check and clippy (the module build runs clippy)'
	@echo '  make rustfmt        format the Rust sources'
	@echo '  make bootstrap      install toolchains, QEMU and the kernel source'
	@echo '  make kernel         build the test kernel into $$RKVM_CACHE (once)'
	@echo '  make bochs-kernel   build the light test kernel for Bochs (once)'
	@echo '  make bochs-module   build rkvm.ko against it (in build/bochs-src)'
	@echo '  make guest-kernel   build the guests leg'"'"'s small guest kernel (once)'
	@echo '  make guest          the guest: initramfs and SeaBIOS ISO (build/guest)'
	@echo '  make clean          remove build outputs (not the kernel cache)'
	@echo 'Variables: KDIR=<built kernel tree> (QEMU leg only), EXTRA_TESTS=<dir of'
	@echo '           test binaries>, RKVM_CACHE=<cache dir, default ~/.cache/rkvm>,'
	@echo '           BOCHS=0|1 (default 1), VENDOR=amd|intel (make run),'
	@echo '           VM_LEGS=kvm,module,rkvm,guests, VM_TESTS=a_test,b_test (scripts/vm),'
	@echo '           GUEST_TIMEOUT=<s per guest boot>, RKVM_GUEST_BOOTS=pass|skip|todo,'
	@echo '           VM_GUESTS=rkvm-smp1-kernel,... (those boots only),'
	@echo '           GUEST_SMP2=skip|todo (the 2-vCPU boots), GUEST_REPEAT=<N>'
	@echo '           (each boot N times), VM_MONITOR=<socket>'
	@echo '           BOCHS_LEGS, BOCHS_TESTS, BOCHS_SCALE, BOCHS_CPU, BOCHS_MEGS,'
	@echo '           BOCHS_TIMEOUT (scripts/bochs; Documentation/testing.rst)'

bootstrap:
	@scripts/bootstrap

kernel: bootstrap
	@scripts/build-kernel >/dev/null

# CLIPPY=1: the kernel build runs clippy-driver, so every build is linted;
# Kbuild makes warnings errors.
module: kernel
	@$(MAKE) -s -C $(KDIR_RESOLVED) M=$(TOP) LLVM=$(LLVM) CLIPPY=1 modules

$(BUILD)/tests/% $(BUILD)/tools/% $(BUILD)/bench/%: | kernel
$(BUILD)/tests/%: tests/selftests/%.c tests/selftests/rkvm_test.h
	@mkdir -p $(@D)
	gcc $(TEST_CFLAGS) -o $@ $<
$(BUILD)/tests/%: tests/selftests/guest/%.c $(wildcard tests/selftests/guest/*.h) tests/selftests/rkvm_test.h
	@mkdir -p $(@D)
	gcc $(TEST_CFLAGS) -I $(TOP)/tests/selftests/guest -o $@ $< -lpthread
$(BUILD)/tools/%: tools/%.c $(wildcard tests/bench/*.h)
	@mkdir -p $(@D)
	gcc $(TEST_CFLAGS) -o $@ $<

$(BUILD)/bench/%: tests/bench/%.c $(wildcard tests/bench/*.h)
	@mkdir -p $(@D)
	gcc $(TEST_CFLAGS) -o $@ $<

# rkvm-run, the `make run` VMM (Rust, rust-vmm kvm-ioctls): static, for the
# test VM's busybox initramfs. --target keeps crt-static off the build script.
RKVM_RUN_DIR := tools/rkvm-run
RKVM_RUN_BIN := $(RKVM_RUN_DIR)/target/x86_64-unknown-linux-gnu/release/rkvm-run
$(BUILD)/tools/rkvm-run: $(RKVM_RUN_DIR)/Cargo.toml $(RKVM_RUN_DIR)/Cargo.lock \
		$(RKVM_RUN_DIR)/build.rs $(wildcard $(RKVM_RUN_DIR)/src/*)
	@mkdir -p $(@D)
	cd $(RKVM_RUN_DIR) && RUSTFLAGS="-C target-feature=+crt-static" \
		cargo build -q --release --locked --target x86_64-unknown-linux-gnu
	cp $(RKVM_RUN_BIN) $@

tests: kernel $(TESTS) $(TOOLS)

host-test:
	@if [ -f core/Cargo.toml ]; then cd core && cargo test -q; fi

rustfmt:
	rustfmt --edition 2021 --config-path $(KSRC)/.rustfmt.toml rust/rkvm_main.rs
	@if [ -f core/Cargo.toml ]; then cd core && cargo fmt; fi

lint: module
	rustfmt --check --edition 2021 --config-path $(KSRC)/.rustfmt.toml rust/rkvm_main.rs
	@if [ -f core/Cargo.toml ]; then cd core && cargo fmt --check && cargo clippy -q --all-targets -- -D warnings; fi
	cd $(RKVM_RUN_DIR) && cargo fmt --check && cargo clippy -q --locked --all-targets -- -D warnings

# The Bochs (Intel VT-x) leg runs its own light kernel (scripts/build-kernel
# light) and an rkvm.ko built against it from a copy of the sources in
# build/bochs-src: Kbuild writes its objects beside the sources, and the top
# directory's belong to the QEMU kernel's build.
BOCHS ?= 1
VENDOR ?= amd
BOCHS_SRC := $(BUILD)/bochs-src
BOCHS_KDIR = $(shell scripts/build-kernel light)

# After the debug kernel: one kernel build at a time, even under make -j.
bochs-kernel: kernel
	@scripts/build-kernel light >/dev/null

# The copy: every file git tracks or would (not ignored), as in the work tree.
bochs-module: bochs-kernel
	@rm -rf $(BOCHS_SRC) && mkdir -p $(BOCHS_SRC)
	@git ls-files -z -co --exclude-standard | while IFS= read -r -d '' f; do \
		[ -e "$$f" ] && printf '%s\0' "$$f"; done | tar --null -T - -cf - | tar -C $(BOCHS_SRC) -xf -
	@$(MAKE) -s -C $(BOCHS_KDIR) M=$(BOCHS_SRC) LLVM=$(LLVM) modules

# Both machines run even when the first fails; the last lines add them up.
# The guests leg's Linux guest: its kernel (cached, once) and build/guest.
guest-kernel: bootstrap
	@scripts/build-guest-kernel >/dev/null

guest: guest-kernel
	@scripts/build-guest >/dev/null

check: bootstrap host-test lint module tests guest $(if $(filter 1,$(BOCHS)),bochs-module)
	@rm -f $(BUILD)/vm-check.log.summary $(BUILD)/bochs/summary
	@rc=0; scripts/vm check || rc=1; \
	if [ "$(BOCHS)" = 1 ]; then scripts/bochs check || rc=1; \
	else echo "rkvm: BOCHS=0: the Bochs (Intel VT-x) leg is skipped"; fi; \
	python3 scripts/tap-summary.py --total "QEMU test VM (AMD SVM)=$(BUILD)/vm-check.log.summary" \
		$(if $(filter 1,$(BOCHS)),"Bochs machine (Intel VT-x)=$(BUILD)/bochs/summary") || rc=1; \
	exit $$rc

bochs-check: bochs-module tests
	@scripts/bochs check

run: $(if $(filter intel,$(VENDOR)),bochs-module,module guest) tests $(BUILD)/tools/rkvm-run
	@case "$(VENDOR)" in amd) scripts/vm run ;; intel) scripts/bochs run ;; \
	*) echo "rkvm: error: VENDOR=$(VENDOR): expected amd or intel" >&2; exit 1 ;; esac

vm-shell: module tests
	@scripts/vm shell

bench: module $(if $(filter 1,$(BENCH_GUEST)),guest) $(BENCHES) $(TOOLS)
	@scripts/vm bench

clean:
	@d=$$(bash -c '. scripts/lib.sh; kbuild_dir' 2>/dev/null); \
	if [ -f "$$d/Makefile" ]; then $(MAKE) -s -C $$d M=$(TOP) LLVM=$(LLVM) clean; fi
	rm -rf $(BUILD)
