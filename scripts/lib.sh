# Shared helpers for rkvm's scripts (sourced, not run).

# Where kernel sources and builds are cached, outside the clone.
RKVM_CACHE=${RKVM_CACHE:-$HOME/.cache/rkvm}
mkdir -p "$RKVM_CACHE"

# The repository's top directory.
RKVM_TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

info() { echo "rkvm: $*" >&2; }
die() {
	echo "rkvm: error: $*" >&2
	exit 1
}

# The kernel source tree that bootstrap unpacked.
ksrc() {
	echo "$RKVM_CACHE/linux-source-7.3"
}

# Which test kernel: RKVM_KERNEL=debug (the default; the QEMU test VM's, with
# KASAN, lockdep and kmemleak: tests/vm/kernel.config) or light (the Bochs
# leg's: tests/vm/kernel-light.config on top of kernel.config).
RKVM_KERNEL=${RKVM_KERNEL:-debug}

# The config fragments of the RKVM_KERNEL variant, in merge order (later wins).
kconfig_fragments() {
	echo "$RKVM_TOP/tests/vm/kernel.config"
	case "$RKVM_KERNEL" in
	debug) ;;
	light) echo "$RKVM_TOP/tests/vm/kernel-light.config" ;;
	*) die "RKVM_KERNEL=$RKVM_KERNEL: expected debug or light" ;;
	esac
}

# Cache key of the test kernel build: kernel version, config fragments,
# compilers. (The debug key hashes exactly what it always did, so its cache
# stays valid.)
kbuild_key() {
	kconfig_fragments >/dev/null
	{
		cat "$(ksrc)/Makefile" | head -6
		cat "$RKVM_TOP/tests/vm/kernel.config"
		rustc --version
		bindgen --version
		clang-19 --version | head -1
		if [ "$RKVM_KERNEL" != debug ]; then
			echo "variant $RKVM_KERNEL"
			kconfig_fragments | tail -n +2 | xargs cat
		fi
	} | sha256sum | cut -c1-16
}

# The kernel build (output) directory: the user's KDIR (debug variant only),
# or the cached test kernel of the RKVM_KERNEL variant.
kbuild_dir() {
	if [ -n "${KDIR:-}" ] && [ "$RKVM_KERNEL" = debug ]; then
		echo "$KDIR"
	else
		echo "$RKVM_CACHE/build-$(kbuild_key)"
	fi
}

# THE SWITCH for the guests leg's Linux boots on /dev/rkvm: "pass" (today)
# counts them like the /dev/kvm boots; "todo" reports them as TAP "# TODO"
# (expected failures, neither passed nor failed); "skip" does not boot them.
RKVM_GUEST_BOOTS=${RKVM_GUEST_BOOTS:-pass}
# The 2-vCPU boots, on both devices: "skip" (today), as one can leave this
# TCG test VM hung, Linux KVM's too, and no CI run may hang; "todo" boots
# them as expected failures (Documentation/testing.rst, "The switch").
GUEST_SMP2=${GUEST_SMP2:-skip}

# Cache key of the guest kernel (scripts/build-guest-kernel): kernel
# version, tests/guest/kernel.config, the build script, the compiler.
guest_kbuild_key() {
	{
		head -6 "$(ksrc)/Makefile"
		cat "$RKVM_TOP/tests/guest/kernel.config" "$RKVM_TOP/scripts/build-guest-kernel"
		clang-19 --version | head -1
	} | sha256sum | cut -c1-16
}

# The guest kernel's build directory in the cache.
guest_kbuild_dir() {
	echo "$RKVM_CACHE/guest-$(guest_kbuild_key)"
}

# The guest kernel's command line (the ISO's and the -kernel boots'): the
# serial console, no waiting for a keyboard or a PS/2 probe, poweroff at
# a panic (QEMU then exits with -no-reboot).
guest_cmdline() {
	echo "console=ttyS0 earlyprintk=serial,ttyS0 panic=-1 i8042.noaux i8042.nokbd"
}

# The test VM's initramfs (scripts/vm, scripts/bochs): busybox, tests/vm/init,
# rkvm.ko ($RKVM_MODULE, default the one in the top directory), Linux KVM's
# modules from kbuild_dir, build/tests, build/tools, $EXTRA_TESTS in /extra
# and, for MODE bench, build/bench. TESTS (names, space or comma separated)
# keeps only those of build/tests; "none" keeps none. Callers may add files
# to ROOT between initramfs_populate and initramfs_pack (/legs/NAME/ holds
# tests that tests/vm/init runs in leg NAME only).
initramfs_populate() { # initramfs_populate ROOT MODE [TESTS]
	local root=$1 mode=$2 only=${3:-} kdir build m f t
	kdir=$(kbuild_dir)
	build=$RKVM_TOP/build
	rm -rf "$root"
	mkdir -p "$root"/{bin,dev,proc,sys,tmp,lib/rkvm,tests,tools,extra,legs}
	cp /bin/busybox "$root/bin/busybox"
	cp "$RKVM_TOP/tests/vm/init" "$root/init"
	cp "${RKVM_MODULE:-$RKVM_TOP/rkvm.ko}" "$root/lib/rkvm/rkvm.ko"
	for m in irqbypass kvm kvm-amd kvm-intel; do
		f=$(find "$kdir/arch/x86/kvm" "$kdir/virt/lib" -name "$m.ko" | head -1)
		[ -n "$f" ] && cp "$f" "$root/lib/rkvm/"
	done
	if [ -n "$only" ]; then
		for t in ${only//,/ }; do
			[ "$t" = none ] && continue
			[ -f "$build/tests/$t" ] || die "no test $t in $build/tests"
			cp "$build/tests/$t" "$root/tests/"
		done
	else
		cp "$build"/tests/* "$root/tests/" 2>/dev/null || true
	fi
	cp "$build"/tools/* "$root/tools/" 2>/dev/null || true
	if [ -n "${EXTRA_TESTS:-}" ]; then
		[ -d "$EXTRA_TESTS" ] || die "EXTRA_TESTS=$EXTRA_TESTS is not a directory"
		cp -r "$EXTRA_TESTS"/. "$root/extra/"
	fi
	if [ "$mode" = bench ]; then
		mkdir -p "$root/bench"
		cp "$build"/bench/* "$root/bench/" || die "no bench binaries in $build/bench: run make bench"
	fi
}

# The guests leg's part of the test VM's initramfs (scripts/vm, scripts/bochs
# when their legs include guests): the host's qemu-system-x86_64 with the
# shared libraries it links (at their own paths, for the dynamic loader), the
# firmware a -nodefaults pc machine loads (SeaBIOS, the -kernel option ROMs)
# in /guest/qemu (QEMU's -L), and build/guest (scripts/build-guest) in /guest.
initramfs_add_guests() { # initramfs_add_guests ROOT
	local root=$1 qemu lib f
	qemu=$(command -v qemu-system-x86_64) || die "no qemu-system-x86_64: run scripts/bootstrap"
	[ -f "$RKVM_TOP/build/guest/guest.iso" ] || die "no guest in build/guest: run scripts/build-guest"
	mkdir -p "$root/guest/qemu" "$root/usr/bin"
	cp "$qemu" "$root/usr/bin/qemu-system-x86_64"
	for lib in $(ldd "$qemu" | awk '/=> \// { print $3 } /^\t\// { print $1 }'); do
		mkdir -p "$root$(dirname "$lib")"
		cp -L "$lib" "$root$lib"
	done
	for f in /usr/share/seabios/bios-256k.bin /usr/share/qemu/linuxboot_dma.bin \
		/usr/share/qemu/linuxboot.bin /usr/share/qemu/kvmvapic.bin; do
		cp -L "$f" "$root/guest/qemu/"
	done
	cp "$RKVM_TOP"/build/guest/{bzImage,initramfs.cpio.gz,guest.iso,cmdline} "$root/guest/"
}

initramfs_pack() { # initramfs_pack ROOT OUT.cpio.gz
	(cd "$1" && find . | cpio -o -H newc --quiet | gzip -1) >"$2"
}
