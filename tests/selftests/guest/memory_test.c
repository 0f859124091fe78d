// SPDX-License-Identifier: GPL-2.0
/*
 * Guest memory: KVM_SET_USER_MEMORY_REGION(2) validation, the memory
 * capabilities, and slots that move or disappear between runs.
 */
#include "vm_lib.h"

#define PAGE 4096UL

FIXTURE(mem) {
	struct vm vm;
	uint8_t *buf;		/* 16 pages of host memory for the slots */
};

FIXTURE_SETUP(mem)
{
	vm_create_empty(_metadata, &self->vm);
	self->buf = alloc_guest_mem(_metadata, 16 * PAGE);
}

FIXTURE_TEARDOWN(mem)
{
	munmap(self->buf, 16 * PAGE);
	vm_destroy(&self->vm);
}

static int set_region2(struct vm *vm, uint32_t slot, uint32_t flags,
		       uint64_t gpa, uint64_t size, void *hva)
{
	struct kvm_userspace_memory_region2 r = {
		.slot = slot, .flags = flags, .guest_phys_addr = gpa,
		.memory_size = size, .userspace_addr = (uintptr_t)hva,
	};

	return ioctl(vm->fd, KVM_SET_USER_MEMORY_REGION2, &r);
}

TEST(memory_capabilities_are_reported)
{
	int fd = open_kvm_dev(_metadata);
	int vm = create_vm(_metadata, fd);

	EXPECT_EQ(1, ioctl(fd, KVM_CHECK_EXTENSION, KVM_CAP_USER_MEMORY));
	EXPECT_EQ(1, ioctl(vm, KVM_CHECK_EXTENSION, KVM_CAP_USER_MEMORY));
	EXPECT_LT(0, ioctl(fd, KVM_CHECK_EXTENSION, KVM_CAP_USER_MEMORY2));
	EXPECT_LT(0, ioctl(vm, KVM_CHECK_EXTENSION, KVM_CAP_USER_MEMORY2));
	/* KVM on x86 offers 32764 user slots; at least a handful are needed. */
	EXPECT_LE(32, ioctl(fd, KVM_CHECK_EXTENSION, KVM_CAP_NR_MEMSLOTS));
	EXPECT_EQ(ioctl(fd, KVM_CHECK_EXTENSION, KVM_CAP_NR_MEMSLOTS),
		  ioctl(vm, KVM_CHECK_EXTENSION, KVM_CAP_NR_MEMSLOTS));
	close(vm);
	close(fd);
}

TEST_F(mem, valid_region_is_accepted)
{
	EXPECT_EQ(0, vm_set_region(&self->vm, 0, 0, 0, 4 * PAGE, self->buf));
	/* Setting the same region again changes nothing and succeeds. */
	EXPECT_EQ(0, vm_set_region(&self->vm, 0, 0, 0, 4 * PAGE, self->buf));
}

TEST_F(mem, region2_is_accepted)
{
	EXPECT_EQ(0, set_region2(&self->vm, 3, 0, 0x100000, 4 * PAGE,
				 self->buf)) TH_LOG("%s", strerror(errno));
}

TEST_F(mem, misaligned_gpa_is_einval)
{
	EXPECT_ERRNO(EINVAL, vm_set_region(&self->vm, 0, 0, 0x800, PAGE,
					   self->buf));
	EXPECT_ERRNO(EINVAL, set_region2(&self->vm, 0, 0, 1, PAGE, self->buf));
}

TEST_F(mem, misaligned_size_is_einval)
{
	EXPECT_ERRNO(EINVAL, vm_set_region(&self->vm, 0, 0, 0, PAGE + 1,
					   self->buf));
	EXPECT_ERRNO(EINVAL, vm_set_region(&self->vm, 0, 0, 0, 0x800,
					   self->buf));
	EXPECT_ERRNO(EINVAL, set_region2(&self->vm, 0, 0, 0, PAGE - 1,
					 self->buf));
}

TEST_F(mem, misaligned_hva_is_einval)
{
	EXPECT_ERRNO(EINVAL, vm_set_region(&self->vm, 0, 0, 0, PAGE,
					   self->buf + 8));
	EXPECT_ERRNO(EINVAL, set_region2(&self->vm, 0, 0, 0, PAGE,
					 self->buf + 0x800));
}

TEST_F(mem, kernel_hva_is_einval)
{
	EXPECT_ERRNO(EINVAL, vm_set_region(&self->vm, 0, 0, 0, PAGE,
					   (void *)0xffff888000000000UL));
	/* A range that wraps past the end of the address space. */
	EXPECT_ERRNO(EINVAL, vm_set_region(&self->vm, 0, 0, 0, 2 * PAGE,
					   (void *)(-PAGE)));
}

TEST_F(mem, gpa_range_that_wraps_is_einval)
{
	EXPECT_ERRNO(EINVAL, vm_set_region(&self->vm, 0, 0, -PAGE, 2 * PAGE,
					   self->buf));
}

TEST_F(mem, slot_id_at_nr_memslots_is_einval)
{
	int nr = ioctl(self->vm.sys, KVM_CHECK_EXTENSION, KVM_CAP_NR_MEMSLOTS);

	ASSERT_LT(0, nr);
	EXPECT_ERRNO(EINVAL, vm_set_region(&self->vm, nr, 0, 0, PAGE,
					   self->buf));
	EXPECT_ERRNO(EINVAL, vm_set_region(&self->vm, 0xffff, 0, 0, PAGE,
					   self->buf));
	/* The last valid slot works. */
	EXPECT_EQ(0, vm_set_region(&self->vm, nr - 1, 0, 0, PAGE, self->buf))
		TH_LOG("slot %d: %s", nr - 1, strerror(errno));
}

TEST_F(mem, address_space_id_beyond_supported_is_einval)
{
	int as = ioctl(self->vm.fd, KVM_CHECK_EXTENSION,
		       KVM_CAP_MULTI_ADDRESS_SPACE);

	/* Bits 16-31 of slot pick the address space (SMM has its own). */
	if (as < 1)
		as = 1;
	EXPECT_ERRNO(EINVAL, vm_set_region(&self->vm, (uint32_t)as << 16, 0, 0,
					   PAGE, self->buf));
	EXPECT_ERRNO(EINVAL, vm_set_region(&self->vm, 0xffff0000, 0, 0, PAGE,
					   self->buf));
}

TEST_F(mem, overlapping_slots_are_eexist)
{
	ASSERT_EQ(0, vm_set_region(&self->vm, 0, 0, 0x10000, 4 * PAGE,
				   self->buf));
	/* Same range, overlap at the start, at the end, and inside. */
	EXPECT_ERRNO(EEXIST, vm_set_region(&self->vm, 1, 0, 0x10000, 4 * PAGE,
					   self->buf + 4 * PAGE));
	EXPECT_ERRNO(EEXIST, vm_set_region(&self->vm, 1, 0, 0xe000, 3 * PAGE,
					   self->buf + 4 * PAGE));
	EXPECT_ERRNO(EEXIST, vm_set_region(&self->vm, 1, 0, 0x13000, 2 * PAGE,
					   self->buf + 4 * PAGE));
	EXPECT_ERRNO(EEXIST, vm_set_region(&self->vm, 1, 0, 0x11000, PAGE,
					   self->buf + 4 * PAGE));
	EXPECT_ERRNO(EEXIST, vm_set_region(&self->vm, 1, 0, 0x8000, 16 * PAGE,
					   self->buf));
	/* Adjacent on both sides is fine. */
	EXPECT_EQ(0, vm_set_region(&self->vm, 1, 0, 0xc000, 4 * PAGE,
				   self->buf + 4 * PAGE));
	EXPECT_EQ(0, vm_set_region(&self->vm, 2, 0, 0x14000, 4 * PAGE,
				   self->buf + 8 * PAGE));
}

TEST_F(mem, two_slots_may_share_host_memory)
{
	EXPECT_EQ(0, vm_set_region(&self->vm, 0, 0, 0, 4 * PAGE, self->buf));
	EXPECT_EQ(0, vm_set_region(&self->vm, 1, 0, 0x100000, 4 * PAGE,
				   self->buf));
}

TEST_F(mem, deleting_a_nonexistent_slot_is_einval)
{
	EXPECT_ERRNO(EINVAL, vm_set_region(&self->vm, 5, 0, 0, 0, NULL));
	ASSERT_EQ(0, vm_set_region(&self->vm, 5, 0, 0, PAGE, self->buf));
	EXPECT_EQ(0, vm_set_region(&self->vm, 5, 0, 0, 0, NULL));
	/* Deleted twice. */
	EXPECT_ERRNO(EINVAL, vm_set_region(&self->vm, 5, 0, 0, 0, NULL));
}

TEST_F(mem, deleted_slot_can_be_recreated_with_another_size)
{
	ASSERT_EQ(0, vm_set_region(&self->vm, 1, 0, 0, PAGE, self->buf));
	ASSERT_EQ(0, vm_set_region(&self->vm, 1, 0, 0, 0, NULL));
	EXPECT_EQ(0, vm_set_region(&self->vm, 1, 0, 0x1000, 8 * PAGE,
				   self->buf + PAGE));
}

TEST_F(mem, changing_size_of_a_slot_is_einval)
{
	ASSERT_EQ(0, vm_set_region(&self->vm, 1, 0, 0, 2 * PAGE, self->buf));
	EXPECT_ERRNO(EINVAL, vm_set_region(&self->vm, 1, 0, 0, 4 * PAGE,
					   self->buf));
	EXPECT_ERRNO(EINVAL, vm_set_region(&self->vm, 1, 0, 0, PAGE,
					   self->buf));
}

TEST_F(mem, changing_hva_of_a_slot_is_einval)
{
	ASSERT_EQ(0, vm_set_region(&self->vm, 1, 0, 0, 2 * PAGE, self->buf));
	EXPECT_ERRNO(EINVAL, vm_set_region(&self->vm, 1, 0, 0, 2 * PAGE,
					   self->buf + PAGE));
}

TEST_F(mem, changing_readonly_flag_of_a_slot_is_einval)
{
	ASSERT_EQ(0, vm_set_region(&self->vm, 1, 0, 0, 2 * PAGE, self->buf));
	EXPECT_ERRNO(EINVAL, vm_set_region(&self->vm, 1, KVM_MEM_READONLY, 0,
					   2 * PAGE, self->buf));
}

TEST_F(mem, toggling_dirty_logging_is_accepted)
{
	ASSERT_EQ(0, vm_set_region(&self->vm, 1, 0, 0, 2 * PAGE, self->buf));
	EXPECT_EQ(0, vm_set_region(&self->vm, 1, KVM_MEM_LOG_DIRTY_PAGES, 0,
				   2 * PAGE, self->buf));
	EXPECT_EQ(0, vm_set_region(&self->vm, 1, 0, 0, 2 * PAGE, self->buf));
}

TEST_F(mem, moving_a_slot_is_accepted)
{
	ASSERT_EQ(0, vm_set_region(&self->vm, 1, 0, 0, 2 * PAGE, self->buf));
	EXPECT_EQ(0, vm_set_region(&self->vm, 1, 0, 0x100000, 2 * PAGE,
				   self->buf));
	/* Onto another slot: EEXIST. */
	ASSERT_EQ(0, vm_set_region(&self->vm, 2, 0, 0, 2 * PAGE,
				   self->buf + 2 * PAGE));
	EXPECT_ERRNO(EEXIST, vm_set_region(&self->vm, 1, 0, PAGE, 2 * PAGE,
					   self->buf));
}

TEST_F(mem, readonly_flag_is_accepted)
{
	EXPECT_EQ(0, vm_set_region(&self->vm, 1, KVM_MEM_READONLY, 0x100000,
				   2 * PAGE, self->buf))
		TH_LOG("%s", strerror(errno));
	EXPECT_EQ(0, set_region2(&self->vm, 2, KVM_MEM_READONLY, 0x200000,
				 2 * PAGE, self->buf))
		TH_LOG("%s", strerror(errno));
}

TEST_F(mem, unknown_flags_are_einval)
{
	EXPECT_ERRNO(EINVAL, vm_set_region(&self->vm, 1, 1u << 10, 0, PAGE,
					   self->buf));
	EXPECT_ERRNO(EINVAL, vm_set_region(&self->vm, 1, 0x80000000u, 0, PAGE,
					   self->buf));
	EXPECT_ERRNO(EINVAL, set_region2(&self->vm, 1, 1u << 10, 0, PAGE,
					 self->buf));
	/* guest_memfd slots need REGION2: version 1 refuses the flag. */
	EXPECT_ERRNO(EINVAL, vm_set_region(&self->vm, 1, KVM_MEM_GUEST_MEMFD, 0,
					   PAGE, self->buf));
}

TEST_F(mem, bad_struct_pointer_is_efault)
{
	void *none = mmap(NULL, PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS,
			  -1, 0);

	ASSERT_NE(MAP_FAILED, none);
	EXPECT_ERRNO(EFAULT, ioctl(self->vm.fd, KVM_SET_USER_MEMORY_REGION,
				   NULL));
	EXPECT_ERRNO(EFAULT, ioctl(self->vm.fd, KVM_SET_USER_MEMORY_REGION,
				   none));
	EXPECT_ERRNO(EFAULT, ioctl(self->vm.fd, KVM_SET_USER_MEMORY_REGION2,
				   NULL));
	EXPECT_ERRNO(EFAULT, ioctl(self->vm.fd, KVM_SET_USER_MEMORY_REGION2,
				   (void *)0xffff888000000000UL));
	munmap(none, PAGE);
}

TEST_F(mem, region2_struct_ending_in_unmapped_page_is_efault)
{
	/* KVM reads all of struct kvm_userspace_memory_region2 (160 bytes). */
	uint8_t *two = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct kvm_userspace_memory_region2 *r;

	ASSERT_NE(MAP_FAILED, two);
	ASSERT_EQ(0, munmap(two + PAGE, PAGE));
	r = (void *)(two + PAGE - 64);	/* v1 fields fit, the rest does not */
	memset(r, 0, 64);
	r->slot = 1;
	r->memory_size = PAGE;
	r->userspace_addr = (uintptr_t)self->buf;
	EXPECT_ERRNO(EFAULT, ioctl(self->vm.fd, KVM_SET_USER_MEMORY_REGION2, r));
	/* Version 1 only reads 32 bytes. */
	EXPECT_EQ(0, ioctl(self->vm.fd, KVM_SET_USER_MEMORY_REGION, r));
	munmap(two, PAGE);
}

/*
 * Long mode guest: reads 0x40000000 and 0x50000000, reports each with OUT
 * (ports 0x10, 0x11), halts, and starts over when run again.
 */
#define GPA_A 0x40000000UL
#define GPA_B 0x50000000UL
GUEST_CODE(read_a_b, 64,
	"1: mov eax, dword ptr [0x40000000]\n"
	"out 0x10, eax\n"
	"mov eax, dword ptr [0x50000000]\n"
	"out 0x11, eax\n"
	"hlt\n"
	"jmp 1b\n");

TEST(moved_and_deleted_slot_change_what_guest_sees)
{
	struct vm vm;
	struct vcpu v;
	uint8_t *page;

	vm_create(_metadata, &vm);
	vcpu_create(_metadata, &vm, 0, &v);
	vcpu_setup_long(_metadata, &vm, &v);
	vm_load_code(&vm, read_a_b);
	page = alloc_guest_mem(_metadata, PAGE);
	memset(page, 0xa1, PAGE);
	ASSERT_EQ(0, vm_set_region(&vm, 1, 0, GPA_A, PAGE, page));

	/* Slot 1 at A: A is memory, B is MMIO. */
	EXPECT_EQ(0xa1a1a1a1, run_to_out(&v, 4, 0x10));
	run_to_mmio_read(&v, GPA_B, 4, 0xbbbb0000);
	EXPECT_EQ(0xbbbb0000, run_to_out(&v, 4, 0x11));
	ASSERT_EXIT(&v, KVM_EXIT_HLT);

	/* Moved to B. */
	ASSERT_EQ(0, vm_set_region(&vm, 1, 0, GPA_B, PAGE, page));
	run_to_mmio_read(&v, GPA_A, 4, 0xaaaa0000);
	EXPECT_EQ(0xaaaa0000, run_to_out(&v, 4, 0x10));
	EXPECT_EQ(0xa1a1a1a1, run_to_out(&v, 4, 0x11));
	ASSERT_EXIT(&v, KVM_EXIT_HLT);

	/* Host writes show through. */
	memset(page, 0x5c, 4);
	run_to_mmio_read(&v, GPA_A, 4, 0);
	run_to_out(&v, 4, 0x10);
	EXPECT_EQ(0x5c5c5c5c, run_to_out(&v, 4, 0x11));
	ASSERT_EXIT(&v, KVM_EXIT_HLT);

	/* Deleted: both MMIO. */
	ASSERT_EQ(0, vm_set_region(&vm, 1, 0, 0, 0, NULL));
	run_to_mmio_read(&v, GPA_A, 4, 1);
	EXPECT_EQ(1, run_to_out(&v, 4, 0x10));
	run_to_mmio_read(&v, GPA_B, 4, 2);
	EXPECT_EQ(2, run_to_out(&v, 4, 0x11));
	ASSERT_EXIT(&v, KVM_EXIT_HLT);

	munmap(page, PAGE);
	vcpu_destroy(&vm, &v);
	vm_destroy(&vm);
}

GUEST_CODE(write_a, 64,
	"mov dword ptr [0x40000000], 0x600df00d\n"
	"hlt\n");

TEST(guest_writes_land_in_host_memory)
{
	struct vm vm;
	struct vcpu v;
	uint8_t *page;

	vm_create(_metadata, &vm);
	vcpu_create(_metadata, &vm, 0, &v);
	vcpu_setup_long(_metadata, &vm, &v);
	vm_load_code(&vm, write_a);
	page = alloc_guest_mem(_metadata, PAGE);
	ASSERT_EQ(0, set_region2(&vm, 7, 0, GPA_A, PAGE, page));
	ASSERT_EXIT(&v, KVM_EXIT_HLT);
	EXPECT_EQ(0x600df00d, *(uint32_t *)page);
	munmap(page, PAGE);
	vcpu_destroy(&vm, &v);
	vm_destroy(&vm);
}

TEST(slot_backed_by_shared_memfd_is_coherent)
{
	struct vm vm;
	struct vcpu v;
	int fd = memfd_create("guest", 0);
	uint8_t *a, *b;

	ASSERT_LE(0, fd);
	ASSERT_EQ(0, ftruncate(fd, PAGE));
	a = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	b = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	ASSERT_NE(MAP_FAILED, a);
	ASSERT_NE(MAP_FAILED, b);
	vm_create(_metadata, &vm);
	vcpu_create(_metadata, &vm, 0, &v);
	vcpu_setup_long(_metadata, &vm, &v);
	vm_load_code(&vm, write_a);
	ASSERT_EQ(0, vm_set_region(&vm, 1, 0, GPA_A, PAGE, a));
	ASSERT_EXIT(&v, KVM_EXIT_HLT);
	/* Seen through the other mapping of the same file. */
	EXPECT_EQ(0x600df00d, *(uint32_t *)b);
	munmap(a, PAGE);
	munmap(b, PAGE);
	close(fd);
	vcpu_destroy(&vm, &v);
	vm_destroy(&vm);
}

TEST_HARNESS_MAIN
