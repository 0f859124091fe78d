// SPDX-License-Identifier: GPL-2.0
/*
 * kvm-info: prints what a KVM device (/dev/rkvm or /dev/kvm) reports: API
 * version, vCPU mmap size and every capability that is not 0.
 * Usage: kvm-info [DEVICE]
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <linux/kvm.h>

int main(int argc, char **argv)
{
	const char *dev = argc > 1 ? argv[1] : "/dev/rkvm";
	int fd = open(dev, O_RDWR | O_CLOEXEC);
	int vm, n = 0;

	if (fd < 0) {
		fprintf(stderr, "kvm-info: open %s: %s\n", dev, strerror(errno));
		return 1;
	}
	printf("%s: KVM API version %d\n", dev, ioctl(fd, KVM_GET_API_VERSION, 0));
	printf("%s: vCPU mmap size %d bytes\n", dev, ioctl(fd, KVM_GET_VCPU_MMAP_SIZE, 0));
	vm = ioctl(fd, KVM_CREATE_VM, 0);
	printf("%s: KVM_CREATE_VM -> %s\n", dev, vm >= 0 ? "a VM fd" : strerror(errno));
	for (int cap = 0; cap < 512; cap++) {
		int r = ioctl(fd, KVM_CHECK_EXTENSION, cap);

		if (r > 0) {
			printf("%s: capability %d = %d\n", dev, cap, r);
			n++;
		}
	}
	printf("%s: %d capabilities supported\n", dev, n);
	if (vm >= 0)
		close(vm);
	close(fd);
	return 0;
}
