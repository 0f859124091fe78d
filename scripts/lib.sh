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

# Cache key of the test kernel build: kernel version, config fragment, compilers.
kbuild_key() {
	{
		cat "$(ksrc)/Makefile" | head -6
		cat "$RKVM_TOP/tests/vm/kernel.config"
		rustc --version
		bindgen --version
		clang-19 --version | head -1
	} | sha256sum | cut -c1-16
}

# The kernel build (output) directory: the user's KDIR, or the cached test kernel.
kbuild_dir() {
	if [ -n "${KDIR:-}" ]; then echo "$KDIR"; else echo "$RKVM_CACHE/build-$(kbuild_key)"; fi
}
