// SPDX-License-Identifier: GPL-2.0
/*
 * Loading and unloading rkvm.ko next to Linux KVM. The tests run in order
 * and start with Linux KVM's modules loaded (the VM's init does that):
 * $RKVM_KO is rkvm.ko, $KVM_KO and $KVM_VENDOR_KO are kvm.ko and
 * kvm-amd.ko (or kvm-intel.ko). They end with rkvm loaded and KVM not.
 */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include "rkvm_test.h"

static int load(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	int r;

	if (fd < 0)
		return -1;
	r = syscall(SYS_finit_module, fd, "", 0);
	close(fd);
	return r;
}

static int unload(const char *name)
{
	return syscall(SYS_delete_module, name, O_NONBLOCK);
}

static const char *env(const char *name)
{
	const char *v = getenv(name);

	return v ? v : "";
}

static const char *vendor_name(void)
{
	return strstr(env("KVM_VENDOR_KO"), "intel") ? "kvm_intel" : "kvm_amd";
}

static int loaded(const char *name)
{
	char path[128];

	snprintf(path, sizeof(path), "/sys/module/%s", name);
	return access(path, F_OK) == 0;
}

TEST(load_refused_while_kvm_has_virtualization)
{
	ASSERT_TRUE(loaded(vendor_name())) TH_LOG("precondition: %s loaded", vendor_name());
	EXPECT_ERRNO(EBUSY, load(env("RKVM_KO")));
	EXPECT_FALSE(loaded("rkvm"));
}

TEST(load_after_kvm_unloaded)
{
	ASSERT_EQ(0, unload(vendor_name()));
	ASSERT_EQ(0, unload("kvm"));
	ASSERT_EQ(0, load(env("RKVM_KO"))) TH_LOG("finit_module: %s", strerror(errno));
	EXPECT_EQ(0, access("/dev/rkvm", F_OK));
}

TEST(device_is_root_only)
{
	struct stat st;

	ASSERT_EQ(0, stat("/dev/rkvm", &st));
	EXPECT_TRUE(S_ISCHR(st.st_mode));
	EXPECT_EQ(0600, st.st_mode & 0777);
}

TEST(unload_refused_while_vm_open)
{
	int fd = open("/dev/rkvm", O_RDWR);
	int vm;

	ASSERT_GE(fd, 0);
	vm = ioctl(fd, KVM_CREATE_VM, 0);
	ASSERT_GE(vm, 0);
	close(fd);
	/* The VM fd alone pins the module. */
	EXPECT_ERRNO(EWOULDBLOCK, unload("rkvm"));
	EXPECT_EQ(1, ioctl(vm, KVM_CHECK_EXTENSION, KVM_CAP_CHECK_EXTENSION_VM));
	close(vm);
	EXPECT_EQ(0, unload("rkvm"));
	EXPECT_FALSE(loaded("rkvm"));
}

TEST(kvm_loads_after_rkvm_unloaded)
{
	/* rmmod left every CPU as it found it, so KVM can take over again. */
	ASSERT_FALSE(loaded("rkvm"));
	ASSERT_EQ(0, load(env("KVM_KO")));
	EXPECT_EQ(0, load(env("KVM_VENDOR_KO"))) TH_LOG("%s: %s", env("KVM_VENDOR_KO"), strerror(errno));
	EXPECT_EQ(0, unload(vendor_name()));
	EXPECT_EQ(0, unload("kvm"));
}

TEST(reload_works)
{
	int fd;

	ASSERT_EQ(0, load(env("RKVM_KO"))) TH_LOG("finit_module: %s", strerror(errno));
	fd = open("/dev/rkvm", O_RDWR);
	ASSERT_GE(fd, 0);
	EXPECT_EQ(12, ioctl(fd, KVM_GET_API_VERSION, 0));
	close(fd);
}

TEST_HARNESS_MAIN
