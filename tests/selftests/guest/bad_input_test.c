// SPDX-License-Identifier: GPL-2.0
/*
 * Bad input to the ioctls that run guests: bad user pointers (EFAULT),
 * CPUID arrays of the wrong size (E2BIG), unknown vCPU ioctls, KVM_RUN with
 * an argument or without memory.
 */
#include "vm_lib.h"

#define PAGE 4096UL

FIXTURE(bad) {
	struct vm vm;
	struct vcpu vcpu;
	uint8_t *none;		/* a PROT_NONE page */
	uint8_t *edge;		/* the last bytes before an unmapped page */
	uint8_t *two;
};

FIXTURE_SETUP(bad)
{
	vm_create(_metadata, &self->vm);
	vcpu_create(_metadata, &self->vm, 0, &self->vcpu);
	self->none = mmap(NULL, PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS,
			  -1, 0);
	ASSERT_NE(MAP_FAILED, self->none);
	self->two = alloc_guest_mem(_metadata, 2 * PAGE);
	ASSERT_EQ(0, munmap(self->two + PAGE, PAGE));
	self->edge = self->two + PAGE;
}

FIXTURE_TEARDOWN(bad)
{
	munmap(self->none, PAGE);
	munmap(self->two, PAGE);
	vcpu_destroy(&self->vm, &self->vcpu);
	vm_destroy(&self->vm);
}

/* Expects EFAULT from @ioctl on @fd for NULL, unmapped and kernel pointers. */
#define EXPECT_EFAULT_PTRS(fd, req) do {				\
	EXPECT_ERRNO(EFAULT, ioctl(fd, req, NULL));			\
	EXPECT_ERRNO(EFAULT, ioctl(fd, req, self->none));		\
	EXPECT_ERRNO(EFAULT, ioctl(fd, req, (void *)8));		\
	EXPECT_ERRNO(EFAULT, ioctl(fd, req, (void *)0xffff888000000000UL)); \
	EXPECT_ERRNO(EFAULT, ioctl(fd, req, (void *)-1L));		\
} while (0)

TEST_F(bad, get_regs_bad_pointer_is_efault)
{
	EXPECT_EFAULT_PTRS(self->vcpu.fd, KVM_GET_REGS);
	/* A struct that runs into an unmapped page. */
	EXPECT_ERRNO(EFAULT, ioctl(self->vcpu.fd, KVM_GET_REGS, self->edge - 16));
}

TEST_F(bad, set_regs_bad_pointer_is_efault_and_changes_nothing)
{
	struct kvm_regs before, after;

	vcpu_get_regs(_metadata, &self->vcpu, &before);
	EXPECT_EFAULT_PTRS(self->vcpu.fd, KVM_SET_REGS);
	memset(self->edge - 16, 0xff, 16);
	EXPECT_ERRNO(EFAULT, ioctl(self->vcpu.fd, KVM_SET_REGS, self->edge - 16));
	vcpu_get_regs(_metadata, &self->vcpu, &after);
	EXPECT_EQ(0, memcmp(&before, &after, sizeof(before)));
}

TEST_F(bad, get_sregs_bad_pointer_is_efault)
{
	EXPECT_EFAULT_PTRS(self->vcpu.fd, KVM_GET_SREGS);
	EXPECT_ERRNO(EFAULT, ioctl(self->vcpu.fd, KVM_GET_SREGS, self->edge - 16));
}

TEST_F(bad, set_sregs_bad_pointer_is_efault_and_changes_nothing)
{
	struct kvm_sregs before, after;

	vcpu_get_sregs(_metadata, &self->vcpu, &before);
	EXPECT_EFAULT_PTRS(self->vcpu.fd, KVM_SET_SREGS);
	EXPECT_ERRNO(EFAULT, ioctl(self->vcpu.fd, KVM_SET_SREGS, self->edge - 16));
	vcpu_get_sregs(_metadata, &self->vcpu, &after);
	EXPECT_EQ(0, memcmp(&before, &after, sizeof(before)));
}

TEST_F(bad, set_user_memory_region_bad_pointer_is_efault)
{
	EXPECT_EFAULT_PTRS(self->vm.fd, KVM_SET_USER_MEMORY_REGION);
	EXPECT_EFAULT_PTRS(self->vm.fd, KVM_SET_USER_MEMORY_REGION2);
}

TEST_F(bad, set_cpuid2_bad_pointer_is_efault)
{
	struct kvm_cpuid2 *c = (void *)(self->edge - sizeof(*c));

	EXPECT_EFAULT_PTRS(self->vcpu.fd, KVM_SET_CPUID2);
	/* A header that promises one entry the page does not hold. */
	c->nent = 1;
	c->padding = 0;
	EXPECT_ERRNO(EFAULT, ioctl(self->vcpu.fd, KVM_SET_CPUID2, c));
}

TEST_F(bad, get_cpuid2_bad_pointer_is_efault)
{
	struct {
		struct kvm_cpuid2 c;
		struct kvm_cpuid_entry2 e[1];
	} set = { .c.nent = 1 };
	struct kvm_cpuid2 *c = (void *)(self->edge - sizeof(*c));

	ASSERT_EQ(0, ioctl(self->vcpu.fd, KVM_SET_CPUID2, &set));
	EXPECT_EFAULT_PTRS(self->vcpu.fd, KVM_GET_CPUID2);
	c->nent = 1;
	EXPECT_ERRNO(EFAULT, ioctl(self->vcpu.fd, KVM_GET_CPUID2, c));
}

TEST_F(bad, get_supported_cpuid_bad_pointer_is_efault)
{
	struct kvm_cpuid2 *c = (void *)(self->edge - sizeof(*c));

	EXPECT_EFAULT_PTRS(self->vm.sys, KVM_GET_SUPPORTED_CPUID);
	c->nent = 100;
	EXPECT_ERRNO(EFAULT, ioctl(self->vm.sys, KVM_GET_SUPPORTED_CPUID, c));
}

TEST_F(bad, set_cpuid2_too_many_entries_is_e2big)
{
	struct kvm_cpuid2 c = { .nent = 257 };	/* KVM_MAX_CPUID_ENTRIES + 1 */

	EXPECT_ERRNO(E2BIG, ioctl(self->vcpu.fd, KVM_SET_CPUID2, &c));
	c.nent = 0xffffffff;
	EXPECT_ERRNO(E2BIG, ioctl(self->vcpu.fd, KVM_SET_CPUID2, &c));
}

TEST_F(bad, get_cpuid2_with_too_small_array_is_e2big)
{
	struct {
		struct kvm_cpuid2 c;
		struct kvm_cpuid_entry2 e[2];
	} set = { .c.nent = 2, .e[1].function = 1 }, get = { .c.nent = 1 };

	ASSERT_EQ(0, ioctl(self->vcpu.fd, KVM_SET_CPUID2, &set));
	EXPECT_ERRNO(E2BIG, ioctl(self->vcpu.fd, KVM_GET_CPUID2, &get));
	get.c.nent = 2;
	EXPECT_EQ(0, ioctl(self->vcpu.fd, KVM_GET_CPUID2, &get));
	EXPECT_EQ(2, get.c.nent);
}

TEST_F(bad, get_supported_cpuid_with_too_small_array_is_e2big)
{
	struct {
		struct kvm_cpuid2 c;
		struct kvm_cpuid_entry2 e[1];
	} get = { .c.nent = 1 };

	EXPECT_ERRNO(E2BIG, ioctl(self->vm.sys, KVM_GET_SUPPORTED_CPUID, &get));
	get.c.nent = 0;
	EXPECT_ERRNO(E2BIG, ioctl(self->vm.sys, KVM_GET_SUPPORTED_CPUID, &get));
}

TEST_F(bad, unknown_vcpu_ioctl_is_einval)
{
	/* KVM's kvm_arch_vcpu_ioctl() answers EINVAL, not ENOTTY. */
	EXPECT_ERRNO(EINVAL, ioctl(self->vcpu.fd, _IO(KVMIO, 0x7f), 0));
	EXPECT_ERRNO(EINVAL, ioctl(self->vcpu.fd, _IOR(KVMIO, 0xfe, long), 0));
	/* Not KVM's ioctl type at all: EINVAL too. */
	EXPECT_ERRNO(EINVAL, ioctl(self->vcpu.fd, _IOW('x', 1, int), 0));
	EXPECT_ERRNO(EINVAL, ioctl(self->vcpu.fd, 0, 0));
}

TEST_F(bad, vcpu_ioctl_on_vm_fd_is_enotty)
{
	struct kvm_regs regs;

	EXPECT_ERRNO(ENOTTY, ioctl(self->vm.fd, KVM_GET_REGS, &regs));
	EXPECT_ERRNO(ENOTTY, ioctl(self->vm.fd, KVM_RUN, 0));
}

TEST_F(bad, vm_ioctl_on_vcpu_fd_is_einval)
{
	EXPECT_ERRNO(EINVAL, ioctl(self->vcpu.fd, KVM_CREATE_VCPU, 1));
}

TEST_F(bad, kvm_run_with_argument_is_einval)
{
	EXPECT_ERRNO(EINVAL, ioctl(self->vcpu.fd, KVM_RUN, 1));
}

TEST_F(bad, kvm_run_with_bad_cr8_in_kvm_run_is_einval)
{
	/* Without an in-kernel local APIC, KVM_RUN loads CR8 from kvm_run. */
	self->vcpu.run->cr8 = 16;
	EXPECT_ERRNO(EINVAL, ioctl(self->vcpu.fd, KVM_RUN, 0));
}

TEST(kvm_run_without_memory_is_an_error_exit)
{
	struct vm vm;
	struct vcpu v;
	int r;

	/* The reset vector 0xfffffff0 is in no slot: nothing to execute. */
	vm_create_empty(_metadata, &vm);
	vcpu_create(_metadata, &vm, 0, &v);
	r = ioctl(v.fd, KVM_RUN, 0);
	TH_LOG("KVM_RUN: %d (%s), exit %s, suberror %u", r,
	       r ? strerror(errno) : "-", exit_reason_name(v.run->exit_reason),
	       v.run->internal.suberror);
	/* KVM gives up emulating the fetch: an internal error, not a crash. */
	EXPECT_EQ(0, r);
	EXPECT_EQ(KVM_EXIT_INTERNAL_ERROR, v.run->exit_reason);
	EXPECT_EQ(KVM_INTERNAL_ERROR_EMULATION, v.run->internal.suberror);
	vcpu_destroy(&vm, &v);
	vm_destroy(&vm);
}

/*
 * Slot memory the host cannot provide: the guest's access makes KVM_RUN
 * fail with EFAULT (an error for the VMM, not a crash).
 */
GUEST_CODE(touch_slot1, 64,
	"mov eax, dword ptr [0x40000000]\n"
	"mov dword ptr [0x40000000], 1\n"
	"hlt\n");

static void run_touch_slot1(struct __test_metadata *_metadata, void *hva,
			    int unmap, int *ret, int *err, struct kvm_regs *regs)
{
	struct vm vm;
	struct vcpu v;

	vm_create(_metadata, &vm);
	vcpu_create(_metadata, &vm, 0, &v);
	vcpu_setup_long(_metadata, &vm, &v);
	vm_load_code(&vm, touch_slot1);
	ASSERT_EQ(0, vm_set_region(&vm, 1, 0, 0x40000000, PAGE, hva));
	/* Unmapped now, when nothing else will be mapped there. */
	if (unmap)
		ASSERT_EQ(0, munmap(hva, PAGE));
	errno = 0;
	*ret = ioctl(v.fd, KVM_RUN, 0);
	*err = errno;
	TH_LOG("KVM_RUN: %d (%s), exit %s", *ret, strerror(*err),
	       exit_reason_name(v.run->exit_reason));
	vcpu_get_regs(_metadata, &v, regs);
	vcpu_destroy(&vm, &v);
	vm_destroy(&vm);
}

TEST(guest_access_to_unmapped_slot_memory_is_efault)
{
	uint8_t *p = alloc_guest_mem(_metadata, PAGE);
	struct kvm_regs regs;
	int ret, err;

	run_touch_slot1(_metadata, p, 1, &ret, &err, &regs);
	EXPECT_EQ(-1, ret);
	EXPECT_EQ(EFAULT, err);
	/* The faulting instruction did not complete. */
	EXPECT_EQ(CODE_GPA, regs.rip);
}

TEST(guest_access_to_slot_in_prot_none_mapping_is_efault)
{
	uint8_t *p = mmap(NULL, PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS,
			  -1, 0);
	struct kvm_regs regs;
	int ret, err;

	ASSERT_NE(MAP_FAILED, p);
	run_touch_slot1(_metadata, p, 0, &ret, &err, &regs);
	EXPECT_EQ(-1, ret);
	EXPECT_EQ(EFAULT, err);
	EXPECT_EQ(CODE_GPA, regs.rip);
	munmap(p, PAGE);
}

TEST(guest_write_to_slot_in_readonly_mapping_is_efault)
{
	uint8_t *p = alloc_guest_mem(_metadata, PAGE);
	struct kvm_regs regs;
	int ret, err;

	p[0] = 0x42;
	ASSERT_EQ(0, mprotect(p, PAGE, PROT_READ));
	run_touch_slot1(_metadata, p, 0, &ret, &err, &regs);
	EXPECT_EQ(-1, ret);
	EXPECT_EQ(EFAULT, err);
	/* The read went through; the write did not. */
	EXPECT_EQ(0x42ULL, regs.rax);
	EXPECT_EQ(0x42, p[0]);
	munmap(p, PAGE);
}

TEST_HARNESS_MAIN
