/* SPDX-License-Identifier: GPL-2.0 */
/*
 * A small library for guest-running tests: create a VM with memory, create
 * vCPUs, put a vCPU in real mode, 32-bit protected mode (optionally with
 * paging) or 64-bit long mode, load guest code and run it until an exit.
 *
 * Everything takes the harness's _metadata so that a failed step fails the
 * test where it happened.
 *
 * Guest physical memory map (slot 0, VM_MEM_SIZE bytes from GPA 0):
 *
 *   0x01000  GDT (null, code32 0x08, data 0x10, code64 0x18, TSS 0x20)
 *   0x03000  TSS
 *   0x04000  IDT (IDT_GPA; long mode: 256 16-byte gates, none present)
 *   0x07000  real-mode stack top
 *   0x08000  guest code (CODE_GPA)
 *   0x10000  page tables
 *   0x20000  data (DATA_GPA)
 *   0x80000  protected/long-mode stack top
 *
 * MMIO_GPA (0xd0000000) lies outside every slot and, in long mode, inside
 * the identity map of the first 4 GiB.
 *
 * Guest code is written with GUEST_CODE(): GNU as in .code16/.code32/.code64
 * and Intel syntax, kept in .rodata and copied into guest memory at CODE_GPA.
 * Only relative jumps and absolute constants may be used: the code runs at
 * CODE_GPA, not where the linker put it.
 */
#ifndef RKVM_GUEST_VM_LIB_H
#define RKVM_GUEST_VM_LIB_H

#include <cpuid.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#include "../rkvm_test.h"

#define VM_MEM_SIZE	0x200000UL
#define GDT_GPA		0x1000UL
#define TSS_GPA		0x3000UL
#define IDT_GPA		0x4000UL
#define RM_STACK_TOP	0x7000UL
#define CODE_GPA	0x8000UL
#define PT_GPA		0x10000UL
#define DATA_GPA	0x20000UL
#define STACK_TOP	0x80000UL
#define MMIO_GPA	0xd0000000UL

#define SEL_CODE32	0x08
#define SEL_DATA	0x10
#define SEL_CODE64	0x18
#define SEL_TSS		0x20

#define X86_CR0_PE	(1UL << 0)
#define X86_CR0_ET	(1UL << 4)
#define X86_CR0_NW	(1UL << 29)
#define X86_CR0_CD	(1UL << 30)
#define X86_CR0_PG	(1UL << 31)
#define X86_CR4_PAE	(1UL << 5)
#define EFER_LME	(1UL << 8)
#define EFER_LMA	(1UL << 10)
#define X86_RFLAGS_FIXED 0x2UL
#define X86_RFLAGS_CF	(1UL << 0)
#define X86_RFLAGS_ZF	(1UL << 6)
#define X86_RFLAGS_SF	(1UL << 7)

/*
 * GUEST_CODE(name, bits, "instructions"): defines name[] .. name_end[], the
 * machine code of the instructions assembled for a 16-, 32- or 64-bit code
 * segment.
 */
#define GUEST_CODE(name, bits, text)					\
	extern const uint8_t name[], name##_end[];			\
	asm(".pushsection .rodata.guest." #name ", \"a\"\n"		\
	    ".intel_syntax noprefix\n"					\
	    ".code" #bits "\n"						\
	    ".globl " #name "\n"					\
	    ".globl " #name "_end\n"					\
	    #name ":\n"							\
	    text "\n"							\
	    #name "_end:\n"						\
	    ".code64\n"							\
	    ".att_syntax prefix\n"					\
	    ".popsection\n")

struct vm {
	int sys;		/* the device: /dev/kvm or /dev/rkvm */
	int fd;			/* the VM */
	uint8_t *mem;		/* host view of slot 0 */
	uint64_t mem_size;
	int run_size;		/* KVM_GET_VCPU_MMAP_SIZE */
};

struct vcpu {
	int fd;
	int id;
	struct kvm_run *run;
};

static inline const char *exit_reason_name(uint32_t r)
{
	static const char *const names[] = {
		[KVM_EXIT_UNKNOWN] = "UNKNOWN", [KVM_EXIT_EXCEPTION] = "EXCEPTION",
		[KVM_EXIT_IO] = "IO", [KVM_EXIT_HYPERCALL] = "HYPERCALL",
		[KVM_EXIT_DEBUG] = "DEBUG", [KVM_EXIT_HLT] = "HLT",
		[KVM_EXIT_MMIO] = "MMIO", [KVM_EXIT_IRQ_WINDOW_OPEN] = "IRQ_WINDOW_OPEN",
		[KVM_EXIT_SHUTDOWN] = "SHUTDOWN", [KVM_EXIT_FAIL_ENTRY] = "FAIL_ENTRY",
		[KVM_EXIT_INTR] = "INTR", [KVM_EXIT_SET_TPR] = "SET_TPR",
		[KVM_EXIT_TPR_ACCESS] = "TPR_ACCESS",
		[KVM_EXIT_INTERNAL_ERROR] = "INTERNAL_ERROR",
	};

	return r < sizeof(names) / sizeof(names[0]) && names[r] ? names[r] : "?";
}

/* Sets a user memory region (version 1); returns the ioctl's result. */
static inline int vm_set_region(struct vm *vm, uint32_t slot, uint32_t flags,
				uint64_t gpa, uint64_t size, void *hva)
{
	struct kvm_userspace_memory_region r = {
		.slot = slot, .flags = flags, .guest_phys_addr = gpa,
		.memory_size = size, .userspace_addr = (uintptr_t)hva,
	};

	return ioctl(vm->fd, KVM_SET_USER_MEMORY_REGION, &r);
}

/* Anonymous, zeroed, page-aligned host memory, or fails the test. */
#define alloc_guest_mem(_metadata, size) ({				\
	void *__p = mmap(NULL, (size), PROT_READ | PROT_WRITE,		\
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);		\
	ASSERT_NE(MAP_FAILED, __p) TH_LOG("mmap: %s", strerror(errno));	\
	(uint8_t *)__p; })

/* A VM without memory. */
static inline void vm_create_empty(struct __test_metadata *_metadata,
				   struct vm *vm)
{
	memset(vm, 0, sizeof(*vm));
	vm->sys = open_kvm_dev(_metadata);
	vm->fd = create_vm(_metadata, vm->sys);
	vm->run_size = ioctl(vm->sys, KVM_GET_VCPU_MMAP_SIZE, 0);
	ASSERT_GE(vm->run_size, (int)sizeof(struct kvm_run))
		TH_LOG("KVM_GET_VCPU_MMAP_SIZE: %s", strerror(errno));
}

/* A VM with VM_MEM_SIZE bytes of anonymous memory in slot 0 at GPA 0. */
static inline void vm_create(struct __test_metadata *_metadata, struct vm *vm)
{
	vm_create_empty(_metadata, vm);
	vm->mem_size = VM_MEM_SIZE;
	vm->mem = alloc_guest_mem(_metadata, vm->mem_size);
	ASSERT_EQ(0, vm_set_region(vm, 0, 0, 0, vm->mem_size, vm->mem))
		TH_LOG("KVM_SET_USER_MEMORY_REGION: %s", strerror(errno));
}

static inline void vm_destroy(struct vm *vm)
{
	if (vm->mem)
		munmap(vm->mem, vm->mem_size);
	close(vm->fd);
	close(vm->sys);
}

static inline void vcpu_create(struct __test_metadata *_metadata,
			       struct vm *vm, int id, struct vcpu *vcpu)
{
	vcpu->id = id;
	vcpu->fd = ioctl(vm->fd, KVM_CREATE_VCPU, id);
	ASSERT_GE(vcpu->fd, 0) TH_LOG("KVM_CREATE_VCPU %d: %s", id,
				      strerror(errno));
	vcpu->run = mmap(NULL, vm->run_size, PROT_READ | PROT_WRITE,
			 MAP_SHARED, vcpu->fd, 0);
	ASSERT_NE(MAP_FAILED, vcpu->run) TH_LOG("mmap kvm_run: %s",
						 strerror(errno));
}

static inline void vcpu_destroy(struct vm *vm, struct vcpu *vcpu)
{
	munmap(vcpu->run, vm->run_size);
	close(vcpu->fd);
}

static inline void vcpu_get_regs(struct __test_metadata *_metadata,
				 struct vcpu *vcpu, struct kvm_regs *regs)
{
	ASSERT_EQ(0, ioctl(vcpu->fd, KVM_GET_REGS, regs))
		TH_LOG("KVM_GET_REGS: %s", strerror(errno));
}

static inline void vcpu_set_regs(struct __test_metadata *_metadata,
				 struct vcpu *vcpu, struct kvm_regs *regs)
{
	ASSERT_EQ(0, ioctl(vcpu->fd, KVM_SET_REGS, regs))
		TH_LOG("KVM_SET_REGS: %s", strerror(errno));
}

static inline void vcpu_get_sregs(struct __test_metadata *_metadata,
				  struct vcpu *vcpu, struct kvm_sregs *sregs)
{
	ASSERT_EQ(0, ioctl(vcpu->fd, KVM_GET_SREGS, sregs))
		TH_LOG("KVM_GET_SREGS: %s", strerror(errno));
}

static inline void vcpu_set_sregs(struct __test_metadata *_metadata,
				  struct vcpu *vcpu, struct kvm_sregs *sregs)
{
	ASSERT_EQ(0, ioctl(vcpu->fd, KVM_SET_SREGS, sregs))
		TH_LOG("KVM_SET_SREGS: %s", strerror(errno));
}

static inline void vcpu_get_events(struct __test_metadata *_metadata,
				   struct vcpu *vcpu,
				   struct kvm_vcpu_events *events)
{
	ASSERT_EQ(0, ioctl(vcpu->fd, KVM_GET_VCPU_EVENTS, events))
		TH_LOG("KVM_GET_VCPU_EVENTS: %s", strerror(errno));
}

static inline void vcpu_set_events(struct __test_metadata *_metadata,
				   struct vcpu *vcpu,
				   struct kvm_vcpu_events *events)
{
	ASSERT_EQ(0, ioctl(vcpu->fd, KVM_SET_VCPU_EVENTS, events))
		TH_LOG("KVM_SET_VCPU_EVENTS: %s", strerror(errno));
}

static inline void vcpu_set_rip(struct __test_metadata *_metadata,
				struct vcpu *vcpu, uint64_t rip)
{
	struct kvm_regs regs;

	vcpu_get_regs(_metadata, vcpu, &regs);
	regs.rip = rip;
	vcpu_set_regs(_metadata, vcpu, &regs);
}

/* Copies guest code to @gpa in slot 0. */
static inline void vm_load(struct vm *vm, uint64_t gpa, const uint8_t *start,
			   const uint8_t *end)
{
	memcpy(vm->mem + gpa, start, end - start);
}
#define vm_load_code(vm, name) vm_load(vm, CODE_GPA, name, name##_end)

static inline uint32_t mem_read32(struct vm *vm, uint64_t gpa)
{
	uint32_t v;

	memcpy(&v, vm->mem + gpa, sizeof(v));
	return v;
}

static inline void mem_write32(struct vm *vm, uint64_t gpa, uint32_t v)
{
	memcpy(vm->mem + gpa, &v, sizeof(v));
}

/*
 * Real mode, CS = DS = ES = SS = 0 (base 0), IP = CODE_GPA, SP = RM_STACK_TOP.
 * Everything else stays as the vCPU reset left it.
 */
static inline void vcpu_setup_real(struct __test_metadata *_metadata,
				   struct vcpu *vcpu)
{
	struct kvm_sregs sregs;
	struct kvm_regs regs;

	vcpu_get_sregs(_metadata, vcpu, &sregs);
	sregs.cs.selector = 0;
	sregs.cs.base = 0;
	vcpu_set_sregs(_metadata, vcpu, &sregs);

	memset(&regs, 0, sizeof(regs));
	regs.rip = CODE_GPA;
	regs.rsp = RM_STACK_TOP;
	regs.rflags = X86_RFLAGS_FIXED;
	vcpu_set_regs(_metadata, vcpu, &regs);
}

/* A flat segment for KVM_SET_SREGS (code or data, 32- or 64-bit). */
static inline struct kvm_segment flat_segment(uint16_t sel, int code, int l)
{
	struct kvm_segment s = {
		.base = 0, .limit = 0xffffffff, .selector = sel,
		.type = code ? 0xb : 0x3, .present = 1, .dpl = 0,
		.db = l ? 0 : 1, .s = 1, .l = l, .g = 1,
	};

	return s;
}

/* Writes the GDT and TSS that the segments loaded by the setups describe. */
static inline void vm_write_gdt(struct vm *vm)
{
	uint64_t *gdt = (uint64_t *)(vm->mem + GDT_GPA);
	uint64_t tss_base = TSS_GPA, tss_limit = 0x67;

	gdt[0] = 0;
	gdt[1] = 0x00cf9b000000ffffULL;	/* code32: base 0, 4 GiB, RX accessed */
	gdt[2] = 0x00cf93000000ffffULL;	/* data: base 0, 4 GiB, RW accessed */
	gdt[3] = 0x00af9b000000ffffULL;	/* code64: L=1 */
	/* 64-bit (busy) TSS, 16 bytes: selector 0x20. */
	gdt[4] = tss_limit | (tss_base & 0xffffff) << 16 | 0x8bULL << 40 |
		 (tss_base >> 24 & 0xff) << 56;
	gdt[5] = tss_base >> 32;
}

static inline void protected_sregs(struct vm *vm, struct kvm_sregs *sregs,
				   int code64)
{
	struct kvm_segment data = flat_segment(SEL_DATA, 0, 0);

	vm_write_gdt(vm);
	sregs->cs = code64 ? flat_segment(SEL_CODE64, 1, 1) :
			     flat_segment(SEL_CODE32, 1, 0);
	sregs->ds = sregs->es = sregs->fs = sregs->gs = sregs->ss = data;
	sregs->gdt.base = GDT_GPA;
	sregs->gdt.limit = 6 * 8 - 1;
	sregs->tr = (struct kvm_segment){
		.base = TSS_GPA, .limit = 0x67, .selector = SEL_TSS,
		.type = 0xb, .present = 1,
	};
	sregs->ldt = (struct kvm_segment){ .type = 0x2, .unusable = 1 };
}

static inline void setup_regs_at_code(struct __test_metadata *_metadata,
				      struct vcpu *vcpu)
{
	struct kvm_regs regs;

	memset(&regs, 0, sizeof(regs));
	regs.rip = CODE_GPA;
	regs.rsp = STACK_TOP;
	regs.rflags = X86_RFLAGS_FIXED;
	vcpu_set_regs(_metadata, vcpu, &regs);
}

/*
 * 32-bit paging (CR4.PAE = 0): page directory at PT_GPA; the first 4 MiB
 * identity-mapped with 4 KiB pages; virtual 0x400000 mapped to @alias_gpa
 * and virtual 0x800000 to MMIO_GPA.
 */
#define PROT32_ALIAS_VA 0x400000UL
#define PROT32_MMIO_VA 0x800000UL
static inline void vm_build_pt32(struct vm *vm, uint32_t alias_gpa)
{
	uint32_t *pd = (uint32_t *)(vm->mem + PT_GPA);
	uint32_t *pt = (uint32_t *)(vm->mem + PT_GPA + 0x1000);
	uint32_t *pt2 = (uint32_t *)(vm->mem + PT_GPA + 0x2000);
	uint32_t *pt3 = (uint32_t *)(vm->mem + PT_GPA + 0x3000);

	memset(pd, 0, 0x4000);
	pd[0] = (PT_GPA + 0x1000) | 3;
	pd[1] = (PT_GPA + 0x2000) | 3;
	pd[2] = (PT_GPA + 0x3000) | 3;
	for (int i = 0; i < 1024; i++)
		pt[i] = (i << 12) | 3;
	pt2[0] = alias_gpa | 3;
	pt3[0] = MMIO_GPA | 3;
}

/* 32-bit protected mode at CODE_GPA, flat segments, with or without paging. */
static inline void vcpu_setup_protected(struct __test_metadata *_metadata,
					struct vm *vm, struct vcpu *vcpu,
					int paging)
{
	struct kvm_sregs sregs;

	vcpu_get_sregs(_metadata, vcpu, &sregs);
	protected_sregs(vm, &sregs, 0);
	sregs.cr0 = X86_CR0_PE | X86_CR0_ET;
	sregs.cr4 = 0;
	sregs.efer = 0;
	if (paging) {
		vm_build_pt32(vm, DATA_GPA);
		sregs.cr3 = PT_GPA;
		sregs.cr0 |= X86_CR0_PG;
	}
	vcpu_set_sregs(_metadata, vcpu, &sregs);
	setup_regs_at_code(_metadata, vcpu);
}

/*
 * Gives the vCPU the CPUID that KVM_GET_SUPPORTED_CPUID reports: KVM refuses
 * EFER.LME in KVM_SET_SREGS unless the guest's CPUID has long mode.
 */
static inline void vcpu_set_supported_cpuid(struct __test_metadata *_metadata,
					    struct vm *vm, struct vcpu *vcpu)
{
	int n = 256;
	struct kvm_cpuid2 *cpuid = calloc(1, sizeof(*cpuid) +
					  n * sizeof(cpuid->entries[0]));

	ASSERT_NE(NULL, cpuid);
	cpuid->nent = n;
	ASSERT_EQ(0, ioctl(vm->sys, KVM_GET_SUPPORTED_CPUID, cpuid))
		TH_LOG("KVM_GET_SUPPORTED_CPUID: %s", strerror(errno));
	/*
	 * A vCPU that has run keeps its table, and a second
	 * KVM_GET_SUPPORTED_CPUID may differ from the first (leaves 1 and 0xB
	 * carry the APIC ID of the host CPU the thread ran on): then the
	 * refused table is no error here, the vCPU's own stays.
	 */
	if (ioctl(vcpu->fd, KVM_SET_CPUID2, cpuid) < 0) {
		int set_errno = errno;
		struct kvm_cpuid2 probe = { .nent = 0 };

		ASSERT_TRUE(set_errno == EINVAL &&
			    ioctl(vcpu->fd, KVM_GET_CPUID2, &probe) < 0 &&
			    errno == E2BIG)
			TH_LOG("KVM_SET_CPUID2: %s", strerror(set_errno));
	}
	free(cpuid);
}

/*
 * 4-level page tables at PT_GPA: the first 4 GiB identity-mapped with 2 MiB
 * pages, the first GiB mapped again at LONG_ALIAS_VA and the fourth GiB
 * (with MMIO_GPA) at 0xffffffffc0000000 (so MMIO_GPA at LONG_MMIO_VA).
 */
#define LONG_ALIAS_VA 0xffffffff80000000UL
#define LONG_MMIO_VA 0xffffffffd0000000UL
static inline void vm_build_pt64(struct vm *vm)
{
	uint64_t *pml4 = (uint64_t *)(vm->mem + PT_GPA);
	uint64_t *pdpt = (uint64_t *)(vm->mem + PT_GPA + 0x1000);
	uint64_t *pd = (uint64_t *)(vm->mem + PT_GPA + 0x2000);	/* 4 pages */
	uint64_t *pdpt_hi = (uint64_t *)(vm->mem + PT_GPA + 0x6000);

	memset(pml4, 0, 0x7000);
	pml4[0] = (PT_GPA + 0x1000) | 3;
	pml4[511] = (PT_GPA + 0x6000) | 3;
	for (int i = 0; i < 4; i++)
		pdpt[i] = (PT_GPA + 0x2000 + i * 0x1000) | 3;
	for (int i = 0; i < 4 * 512; i++)
		pd[i] = ((uint64_t)i << 21) | 0x83;	/* P, RW, PS */
	pdpt_hi[510] = (PT_GPA + 0x2000) | 3;
	pdpt_hi[511] = (PT_GPA + 0x5000) | 3;
}

/* 64-bit long mode at CODE_GPA with the page tables of vm_build_pt64(). */
static inline void vcpu_setup_long(struct __test_metadata *_metadata,
				   struct vm *vm, struct vcpu *vcpu)
{
	struct kvm_sregs sregs;

	vcpu_set_supported_cpuid(_metadata, vm, vcpu);
	vcpu_get_sregs(_metadata, vcpu, &sregs);
	protected_sregs(vm, &sregs, 1);
	vm_build_pt64(vm);
	sregs.cr0 = X86_CR0_PE | X86_CR0_ET | X86_CR0_PG;
	sregs.cr3 = PT_GPA;
	sregs.cr4 = X86_CR4_PAE;
	sregs.efer = EFER_LME | EFER_LMA;
	sregs.idt.base = IDT_GPA;
	sregs.idt.limit = 256 * 16 - 1;
	memset(vm->mem + IDT_GPA, 0, 256 * 16);
	vcpu_set_sregs(_metadata, vcpu, &sregs);
	setup_regs_at_code(_metadata, vcpu);
}

/* A present 64-bit interrupt gate (DPL 0, no IST) for @vector in @idt. */
static inline void idt_set_gate64(void *idt, int vector, uint64_t rip)
{
	uint64_t *g = (uint64_t *)((uint8_t *)idt + vector * 16);

	g[0] = (rip & 0xffff) | (uint64_t)SEL_CODE64 << 16 |
	       0x8eULL << 40 | (rip >> 16 & 0xffff) << 48;
	g[1] = rip >> 32;
}

/* The same in the IDT at IDT_GPA. */
static inline void vm_set_idt_gate64(struct vm *vm, int vector, uint64_t rip)
{
	idt_set_gate64(vm->mem + IDT_GPA, vector, rip);
}

/* KVM_RUN, which must succeed. */
static inline void vcpu_run(struct __test_metadata *_metadata,
			    struct vcpu *vcpu)
{
	int r = ioctl(vcpu->fd, KVM_RUN, 0);

	ASSERT_EQ(0, r) TH_LOG("KVM_RUN: %s", strerror(errno));
}

/* Runs the vCPU and asserts the exit reason. */
#define ASSERT_EXIT(vcpu, reason) do {					\
	vcpu_run(_metadata, (vcpu));					\
	ASSERT_EQ((reason), (vcpu)->run->exit_reason)			\
		TH_LOG("exit %s (%u), expected %s",			\
		       exit_reason_name((vcpu)->run->exit_reason),	\
		       (vcpu)->run->exit_reason,			\
		       exit_reason_name(reason));			\
} while (0)

/* The PIO data of the current KVM_EXIT_IO. */
static inline void *io_data(struct vcpu *vcpu)
{
	return (uint8_t *)vcpu->run + vcpu->run->io.data_offset;
}

/* Runs to a KVM_EXIT_IO and checks its direction, size, port and count. */
#define ASSERT_IO(vcpu, dir, sz, p, cnt) do {				\
	ASSERT_EXIT(vcpu, KVM_EXIT_IO);					\
	EXPECT_EQ((dir), (vcpu)->run->io.direction);			\
	EXPECT_EQ((sz), (vcpu)->run->io.size);				\
	EXPECT_EQ((p), (vcpu)->run->io.port);				\
	EXPECT_EQ((cnt), (vcpu)->run->io.count);			\
} while (0)

/* Runs to a one-element OUT and returns its data, zero-extended. */
#define run_to_out(vcpu, sz, p) ({					\
	uint32_t __v = 0;						\
	ASSERT_IO(vcpu, KVM_EXIT_IO_OUT, sz, p, 1);			\
	memcpy(&__v, io_data(vcpu), (sz));				\
	__v; })

/* Runs to an MMIO exit and checks its address, length and direction. */
#define ASSERT_MMIO(vcpu, addr, l, w) do {				\
	ASSERT_EXIT(vcpu, KVM_EXIT_MMIO);				\
	EXPECT_EQ((uint64_t)(addr), (vcpu)->run->mmio.phys_addr);	\
	EXPECT_EQ((l), (vcpu)->run->mmio.len);				\
	EXPECT_EQ((w), (vcpu)->run->mmio.is_write);			\
} while (0)

/* Runs to an MMIO write and returns its data, zero-extended. */
#define run_to_mmio_write(vcpu, addr, l) ({				\
	uint64_t __v = 0;						\
	ASSERT_MMIO(vcpu, addr, l, 1);					\
	memcpy(&__v, (vcpu)->run->mmio.data, (l));			\
	__v; })

/* Runs to an MMIO read and answers it with @val (completed by the next run). */
#define run_to_mmio_read(vcpu, addr, l, val) do {			\
	uint64_t __val = (val);						\
	ASSERT_MMIO(vcpu, addr, l, 0);					\
	memcpy((vcpu)->run->mmio.data, &__val, (l));			\
} while (0)

/*
 * Whether the device runs on QEMU's emulated SVM (TCG: hypervisor leaf
 * "TCGTCGTCGTCG", SVM in 0x80000001 ECX). Some of its intercept checks
 * are not the hardware's: RDTSCP checks only the RDTSC intercept
 * (SVM_EXIT_RDTSC, never SVM_EXIT_RDTSCP), XSETBV checks its intercept
 * before CR4.OSXSAVE, and INT3 never checks the #BP intercept, so KVM's
 * rules that rely on the CPU for those cannot be seen there.
 */
static inline int host_is_qemu_tcg_svm(void)
{
	unsigned int a, b, c, d;
	char sig[13] = { 0 };

	__cpuid(1, a, b, c, d);
	if (!(c & 1U << 31))
		return 0;
	__cpuid(0x40000000, a, b, c, d);
	memcpy(sig, &b, 4);
	memcpy(sig + 4, &c, 4);
	memcpy(sig + 8, &d, 4);
	if (strcmp(sig, "TCGTCGTCGTCG"))
		return 0;
	__cpuid(0x80000001, a, b, c, d);
	return !!(c & 1U << 2);
}

#endif
