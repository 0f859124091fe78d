// SPDX-License-Identifier: GPL-2.0
/*
 * A guest that touches 512 MiB: every first touch is a nested page fault
 * (on rkvm, 2 MiB mappings where a transparent huge page backs the memory),
 * and every byte the guest wrote is what the VMM sees. RKVM_TEST_SCALE
 * shrinks the size, in whole 2 MiB pages (the Bochs leg).
 */
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

#include "vm_lib.h"

#define BIG_GPA		0x40000000UL
#define BIG_SIZE	(512UL << 20)
#define HUGE_SIZE	(2UL << 20)

/* Writes each of EBX pages' own address into it, then checks them all. */
GUEST_CODE(touch_all, 32,
	"mov esi, 0x40000000\n"
	"mov ecx, ebx\n"
	"1: mov [esi], esi\n"
	"add esi, 4096\n"
	"dec ecx\n"
	"jnz 1b\n"
	"mov esi, 0x40000000\n"
	"mov ecx, ebx\n"
	"2: cmp [esi], esi\n"
	"jne 3f\n"
	"add esi, 4096\n"
	"dec ecx\n"
	"jnz 2b\n"
	"mov eax, 0\n"
	"out 0x10, eax\n"
	"hlt\n"
	"3: mov eax, esi\n"
	"out 0x10, eax\n"
	"hlt\n");

FIXTURE(big) {
	struct vm vm;
	struct vcpu vcpu;
	uint8_t *mem;
	uint64_t size;
};

FIXTURE_SETUP(big)
{
	struct kvm_regs regs;
	uint8_t *p;

	self->size = test_scaled(BIG_SIZE / HUGE_SIZE) * HUGE_SIZE;
	/* 2 MiB aligned, so huge pages can back it. */
	p = mmap(NULL, self->size + HUGE_SIZE, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	ASSERT_NE(MAP_FAILED, p);
	self->mem = (uint8_t *)(((uintptr_t)p + HUGE_SIZE - 1) & ~(HUGE_SIZE - 1));
	madvise(self->mem, self->size, MADV_HUGEPAGE);
	vm_create(_metadata, &self->vm);
	ASSERT_EQ(0, vm_set_region(&self->vm, 1, 0, BIG_GPA, self->size, self->mem));
	vcpu_create(_metadata, &self->vm, 0, &self->vcpu);
	vcpu_setup_protected(_metadata, &self->vm, &self->vcpu, 0);
	vcpu_get_regs(_metadata, &self->vcpu, &regs);
	regs.rbx = self->size / 4096;
	vcpu_set_regs(_metadata, &self->vcpu, &regs);
}

FIXTURE_TEARDOWN(big)
{
	vcpu_destroy(&self->vm, &self->vcpu);
	vm_destroy(&self->vm);
}

/* 131072 first touches (unscaled): allow for emulation without huge pages. */
TEST_F_TIMEOUT(big, guest_touches_512_mib, 600)
{
	vm_load_code(&self->vm, touch_all);
	EXPECT_EQ(0, run_to_out(&self->vcpu, 4, 0x10));
	ASSERT_EXIT(&self->vcpu, KVM_EXIT_HLT);
	for (uint64_t off = 0; off < self->size; off += 4096 * 97) {
		uint32_t v;

		memcpy(&v, self->mem + off, 4);
		ASSERT_EQ(BIG_GPA + off, v) TH_LOG("offset %#lx", off);
	}
}

TEST_HARNESS_MAIN
