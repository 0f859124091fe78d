// SPDX-License-Identifier: GPL-2.0
/*
 * System and VM file descriptor ABI: what /dev/kvm and /dev/rkvm must answer
 * the same way (API version, capabilities, VM creation and lifetime, errors).
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <linux/limits.h>

#include "rkvm_test.h"
#include "../../include/uapi/linux/rkvm.h"

/* rkvm's UAPI header must agree with KVM's. */
_Static_assert(RKVM_API_VERSION == KVM_API_VERSION, "api version");
_Static_assert(RKVM_GET_API_VERSION == KVM_GET_API_VERSION, "ioctl");
_Static_assert(RKVM_CREATE_VM == KVM_CREATE_VM, "ioctl");
_Static_assert(RKVM_CHECK_EXTENSION == KVM_CHECK_EXTENSION, "ioctl");
_Static_assert(RKVM_GET_VCPU_MMAP_SIZE == KVM_GET_VCPU_MMAP_SIZE, "ioctl");
_Static_assert(RKVM_X86_DEFAULT_VM == KVM_X86_DEFAULT_VM, "vm type");
_Static_assert(RKVM_CAP_CHECK_EXTENSION_VM == KVM_CAP_CHECK_EXTENSION_VM, "cap");

TEST(api_version_is_12)
{
	int fd = open_kvm_dev(_metadata);

	EXPECT_EQ(12, ioctl(fd, KVM_GET_API_VERSION, 0));
	close(fd);
}

TEST(api_version_rejects_argument)
{
	int fd = open_kvm_dev(_metadata);

	EXPECT_ERRNO(EINVAL, ioctl(fd, KVM_GET_API_VERSION, 1));
	close(fd);
}

TEST(unknown_capability_is_zero)
{
	int fd = open_kvm_dev(_metadata);

	EXPECT_EQ(0, ioctl(fd, KVM_CHECK_EXTENSION, 0x7fffffff));
	EXPECT_EQ(0, ioctl(fd, KVM_CHECK_EXTENSION, -1L));
	EXPECT_EQ(0, ioctl(fd, KVM_CHECK_EXTENSION, 100000));
	close(fd);
}

TEST(check_extension_vm_is_one)
{
	int fd = open_kvm_dev(_metadata);
	int vm = create_vm(_metadata, fd);

	EXPECT_EQ(1, ioctl(fd, KVM_CHECK_EXTENSION, KVM_CAP_CHECK_EXTENSION_VM));
	EXPECT_EQ(1, ioctl(vm, KVM_CHECK_EXTENSION, KVM_CAP_CHECK_EXTENSION_VM));
	EXPECT_EQ(0, ioctl(vm, KVM_CHECK_EXTENSION, 0x7fffffff));
	close(vm);
	close(fd);
}

TEST(vcpu_mmap_size)
{
	int fd = open_kvm_dev(_metadata);
	long page = sysconf(_SC_PAGESIZE);
	int size = ioctl(fd, KVM_GET_VCPU_MMAP_SIZE, 0);

	/* struct kvm_run, then the PIO data page KVM_EXIT_IO points into. */
	EXPECT_GE(size, 2 * page);
	EXPECT_EQ(0, size % page);
	EXPECT_ERRNO(EINVAL, ioctl(fd, KVM_GET_VCPU_MMAP_SIZE, 1));
	close(fd);
}

TEST(unknown_system_ioctl_is_einval)
{
	int fd = open_kvm_dev(_metadata);

	EXPECT_ERRNO(EINVAL, ioctl(fd, _IO(KVMIO, 0x7f), 0));
	EXPECT_ERRNO(EINVAL, ioctl(fd, _IOW('x', 1, int), 0));
	EXPECT_ERRNO(EINVAL, ioctl(fd, 0, 0));
	close(fd);
}

TEST(create_vm_rejects_unknown_type)
{
	int fd = open_kvm_dev(_metadata);

	EXPECT_ERRNO(EINVAL, ioctl(fd, KVM_CREATE_VM, 0xff));
	EXPECT_ERRNO(EINVAL, ioctl(fd, KVM_CREATE_VM, -1L));
	close(fd);
}

TEST(vm_fd_is_cloexec_rdwr_anon_inode)
{
	int fd = open_kvm_dev(_metadata);
	int vm = create_vm(_metadata, fd);
	char path[64], link[PATH_MAX] = { 0 };

	EXPECT_EQ(FD_CLOEXEC, fcntl(vm, F_GETFD) & FD_CLOEXEC);
	EXPECT_EQ(O_RDWR, fcntl(vm, F_GETFL) & O_ACCMODE);
	snprintf(path, sizeof(path), "/proc/self/fd/%d", vm);
	ASSERT_LT(0, readlink(path, link, sizeof(link) - 1));
	EXPECT_STREQ("anon_inode:kvm-vm", link);
	close(vm);
	close(fd);
}

TEST(unknown_vm_ioctl_is_enotty)
{
	int fd = open_kvm_dev(_metadata);
	int vm = create_vm(_metadata, fd);

	EXPECT_ERRNO(ENOTTY, ioctl(vm, _IO(KVMIO, 0x7f), 0));
	EXPECT_ERRNO(ENOTTY, ioctl(vm, _IOR('x', 1, long), 0));
	close(vm);
	close(fd);
}

TEST(vm_survives_system_fd_close)
{
	int fd = open_kvm_dev(_metadata);
	int vm = create_vm(_metadata, fd);

	ASSERT_EQ(0, close(fd));
	EXPECT_EQ(1, ioctl(vm, KVM_CHECK_EXTENSION, KVM_CAP_CHECK_EXTENSION_VM));
	EXPECT_EQ(0, close(vm));
}

TEST(close_in_every_order)
{
	int fd = open_kvm_dev(_metadata);
	int a = create_vm(_metadata, fd);
	int b = create_vm(_metadata, fd);
	int c = create_vm(_metadata, fd);

	/* Middle first, then the system fd, then oldest, then newest. */
	EXPECT_EQ(0, close(b));
	EXPECT_EQ(0, close(fd));
	EXPECT_EQ(1, ioctl(c, KVM_CHECK_EXTENSION, KVM_CAP_CHECK_EXTENSION_VM));
	EXPECT_EQ(0, close(a));
	EXPECT_EQ(1, ioctl(c, KVM_CHECK_EXTENSION, KVM_CAP_CHECK_EXTENSION_VM));
	EXPECT_EQ(0, close(c));
}

TEST(dup_keeps_vm_alive)
{
	int fd = open_kvm_dev(_metadata);
	int vm = create_vm(_metadata, fd);
	int vm2 = dup(vm);

	ASSERT_GE(vm2, 0);
	EXPECT_EQ(0, close(vm));
	EXPECT_EQ(1, ioctl(vm2, KVM_CHECK_EXTENSION, KVM_CAP_CHECK_EXTENSION_VM));
	EXPECT_EQ(0, close(vm2));
	close(fd);
}

TEST(vm_from_another_process_is_eio)
{
	int fd = open_kvm_dev(_metadata);
	int vm = create_vm(_metadata, fd);
	int status;
	pid_t pid = fork();

	ASSERT_GE(pid, 0);
	if (pid == 0) {
		/* A forked child has a new mm: the VM is not its own. */
		errno = 0;
		int r = ioctl(vm, KVM_CHECK_EXTENSION, KVM_CAP_CHECK_EXTENSION_VM);
		_exit(r == -1 && errno == EIO ? 0 : 1);
	}
	ASSERT_EQ(pid, waitpid(pid, &status, 0));
	EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	/* The parent still owns it. */
	EXPECT_EQ(1, ioctl(vm, KVM_CHECK_EXTENSION, KVM_CAP_CHECK_EXTENSION_VM));
	close(vm);
	close(fd);
}

static int count_open_fds(void)
{
	char path[64];
	int n = 0;

	for (int i = 0; i < 1024; i++) {
		snprintf(path, sizeof(path), "/proc/self/fd/%d", i);
		n += access(path, F_OK) == 0;
	}
	return n;
}

FIXTURE(churn) {};
FIXTURE_SETUP(churn) {}
FIXTURE_TEARDOWN(churn) {}

/*
 * Linux KVM needs about 0.1 s per VM under emulation: allow 10 minutes.
 * RKVM_TEST_SCALE shrinks the count (the Bochs leg).
 */
TEST_F_TIMEOUT(churn, create_close_1000_vms, 600)
{
	int fd = open_kvm_dev(_metadata);
	int before = count_open_fds();
	int n = test_scaled(1000);

	/* Leaks show up in kmemleak's scan at the end of the run. */
	for (int i = 0; i < n; i++) {
		int vm = ioctl(fd, KVM_CREATE_VM, 0);

		ASSERT_GE(vm, 0) TH_LOG("iteration %d: %s", i, strerror(errno));
		ASSERT_EQ(0, close(vm));
	}
	EXPECT_EQ(before, count_open_fds());
	close(fd);
}

/*
 * KVM_GET_MSR_INDEX_LIST: too small an nmsrs is E2BIG with the count
 * written back; the MSRs every VMM saves beyond kvm_sregs are listed, once.
 */
TEST(msr_index_list_e2big_protocol_and_contents)
{
	static const uint32_t must[] = {
		0x10, 0x174, 0x175, 0x176, 0x1a0, 0x277,
		0xc0000081, 0xc0000082, 0xc0000083, 0xc0000084, 0xc0000102,
	};
	struct kvm_msr_list *l;
	struct kvm_msr_list probe = { .nmsrs = 0 };
	int fd = open_kvm_dev(_metadata);
	uint32_t n;

	EXPECT_ERRNO(E2BIG, ioctl(fd, KVM_GET_MSR_INDEX_LIST, &probe));
	n = probe.nmsrs;
	ASSERT_GT(n, 0);
	l = calloc(1, sizeof(*l) + (n + 1) * sizeof(uint32_t));
	ASSERT_NE(NULL, l);
	l->nmsrs = n - 1;
	EXPECT_ERRNO(E2BIG, ioctl(fd, KVM_GET_MSR_INDEX_LIST, l));
	EXPECT_EQ(n, l->nmsrs);
	l->nmsrs = n + 1;
	ASSERT_EQ(0, ioctl(fd, KVM_GET_MSR_INDEX_LIST, l));
	EXPECT_EQ(n, l->nmsrs);
	for (unsigned int i = 0; i < sizeof(must) / sizeof(must[0]); i++) {
		int seen = 0;

		for (uint32_t j = 0; j < n; j++)
			seen += l->indices[j] == must[i];
		EXPECT_EQ(1, seen) TH_LOG("MSR %#x listed %d times", must[i], seen);
	}
	/* EFER travels in kvm_sregs. */
	for (uint32_t j = 0; j < n; j++)
		EXPECT_NE(0xc0000080, l->indices[j]);
	free(l);
	close(fd);
}

TEST_HARNESS_MAIN
