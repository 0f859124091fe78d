/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Shared helpers for rkvm's kselftest-style ABI tests.
 *
 * Every ABI test takes its device from $KVM_DEV (default /dev/rkvm), so the
 * same binary runs against /dev/rkvm and against Linux KVM's /dev/kvm.
 */
#ifndef RKVM_TEST_H
#define RKVM_TEST_H

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <linux/kvm.h>

#include "kselftest_harness.h"

static inline const char *kvm_dev_path(void)
{
	const char *p = getenv("KVM_DEV");

	return p && *p ? p : "/dev/rkvm";
}

/*
 * test_scaled(n): @n scaled by $RKVM_TEST_SCALE, a percentage (default 100,
 * never below 1). The Bochs leg, where every instruction of the test VM is
 * emulated, sets it to shrink the loop counts and sizes of the slowest tests
 * (1000-VM churn, 512 MiB guest): the same checks on fewer iterations.
 */
static inline unsigned long test_scaled(unsigned long n)
{
	const char *p = getenv("RKVM_TEST_SCALE");
	unsigned long pct = p && *p ? strtoul(p, NULL, 10) : 100;
	unsigned long r;

	if (pct == 0)
		pct = 100;
	r = n * pct / 100;
	if (!r)
		r = 1;
	if (r != n)
		fprintf(stderr, "# RKVM_TEST_SCALE=%lu%%: %lu instead of %lu\n",
			pct, r, n);
	return r;
}

/* Opens the device under test or fails the test. */
#define open_kvm_dev(_metadata) ({                                       \
	int __fd = open(kvm_dev_path(), O_RDWR | O_CLOEXEC);               \
	ASSERT_GE(__fd, 0) TH_LOG("open %s: %s", kvm_dev_path(),          \
				  strerror(errno));                         \
	__fd; })

/* Creates a default-type VM on @devfd or fails the test. */
#define create_vm(_metadata, devfd) ({                                    \
	int __vm = ioctl(devfd, KVM_CREATE_VM, 0);                         \
	ASSERT_GE(__vm, 0) TH_LOG("KVM_CREATE_VM: %s", strerror(errno));  \
	__vm; })

/* Expects @call to fail with errno @err. */
#define EXPECT_ERRNO(err, call) do {                                      \
	errno = 0;                                                         \
	long __r = (call);                                                 \
	EXPECT_EQ(-1, __r);                                                \
	EXPECT_EQ(err, errno) TH_LOG("%s: errno %d (%s)", #call, errno,   \
				     strerror(errno));                      \
} while (0)

#endif
