/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What the MSR-policy tests (policy_test.c, msr_test.c) share: the
 * supported CPUID table and its lookup, one-MSR KVM_GET/SET_MSRS, and a
 * long-mode vCPU with user segments.
 */
#ifndef RKVM_GUEST_MSR_LIB_H
#define RKVM_GUEST_MSR_LIB_H

#include "vm_lib.h"

/* --- the guest's CPUID --- */

static inline struct kvm_cpuid2 *supported_cpuid(struct __test_metadata *_metadata,
					  int sys)
{
	int n = 256;
	struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + n * sizeof(c->entries[0]));

	ASSERT_NE(NULL, c);
	c->nent = n;
	ASSERT_EQ(0, ioctl(sys, KVM_GET_SUPPORTED_CPUID, c))
		TH_LOG("KVM_GET_SUPPORTED_CPUID: %s", strerror(errno));
	return c;
}

static inline struct kvm_cpuid_entry2 *cpuid_entry(struct kvm_cpuid2 *c,
					    uint32_t fn, uint32_t index)
{
	for (uint32_t i = 0; i < c->nent; i++)
		if (c->entries[i].function == fn &&
		    (!(c->entries[i].flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX) ||
		     c->entries[i].index == index))
			return &c->entries[i];
	return NULL;
}

/* --- MSRs through the KVM API --- */

/* KVM_GET_MSRS of one MSR: returns the number of MSRs read (0 or 1). */
static inline int kvm_get_msr(struct vcpu *v, uint32_t index, uint64_t *data)
{
	uint64_t buf[3] = { 0 };
	struct kvm_msrs *m = (struct kvm_msrs *)buf;
	int r;

	m->nmsrs = 1;
	m->entries[0].index = index;
	r = ioctl(v->fd, KVM_GET_MSRS, m);
	*data = m->entries[0].data;
	return r;
}

/* KVM_SET_MSRS of one MSR: returns the number of MSRs written (0 or 1). */
static inline int kvm_set_msr(struct vcpu *v, uint32_t index, uint64_t data)
{
	uint64_t buf[3] = { 0 };
	struct kvm_msrs *m = (struct kvm_msrs *)buf;

	m->nmsrs = 1;
	m->entries[0].index = index;
	m->entries[0].data = data;
	return ioctl(v->fd, KVM_SET_MSRS, m);
}

#define host_rdmsr(v, index) ({						\
	uint64_t __d = 0;						\
	ASSERT_EQ(1, kvm_get_msr(v, index, &__d))			\
		TH_LOG("KVM_GET_MSRS 0x%x: %s", index, strerror(errno));	\
	__d; })

#define host_wrmsr(v, index, data)					\
	ASSERT_EQ(1, kvm_set_msr(v, index, data))			\
		TH_LOG("KVM_SET_MSRS 0x%x = 0x%llx", index,		\
		       (unsigned long long)(data))

/*
 * Long mode as vm_lib's vcpu_setup_long() sets it up, but with the CPUID
 * table @cpuid (set before EFER.LME, which KVM accepts only with long mode
 * in the guest's CPUID), user (CPL 3) segments 0x30 (data) and 0x38
 * (code64) and page-table U bits for the first 2 MiB, TSS.RSP0, and an
 * empty 64-bit IDT; RIP at CODE_GPA. The caller loads the code and its
 * exception gates.
 */
static inline void vcpu_setup_long_user(struct __test_metadata *_metadata,
					struct vm *vm, struct vcpu *v,
					struct kvm_cpuid2 *cpuid)
{
	uint64_t *gdt = (uint64_t *)(vm->mem + GDT_GPA);
	uint64_t *pt = (uint64_t *)(vm->mem + PT_GPA);
	uint64_t rsp0 = STACK_TOP - 0x1000;
	struct kvm_sregs sregs;

	ASSERT_EQ(0, ioctl(v->fd, KVM_SET_CPUID2, cpuid))
		TH_LOG("KVM_SET_CPUID2: %s", strerror(errno));
	vcpu_get_sregs(_metadata, v, &sregs);
	protected_sregs(vm, &sregs, 1);
	gdt[6] = 0x00cff3000000ffffULL;	/* user data, DPL 3 */
	gdt[7] = 0x00affb000000ffffULL;	/* user code64, DPL 3 */
	sregs.gdt.limit = 8 * 8 - 1;
	vm_build_pt64(vm);
	pt[0] |= 4;			/* PML4[0] */
	pt[512] |= 4;			/* PDPT[0] */
	pt[1024] |= 4;			/* PD[0]: the first 2 MiB */
	memcpy(vm->mem + TSS_GPA + 4, &rsp0, 8);
	sregs.cr0 = X86_CR0_PE | X86_CR0_ET | X86_CR0_PG;
	sregs.cr3 = PT_GPA;
	sregs.cr4 = X86_CR4_PAE;
	sregs.efer = EFER_LME | EFER_LMA;
	sregs.idt.base = IDT_GPA;
	sregs.idt.limit = 256 * 16 - 1;
	memset(vm->mem + IDT_GPA, 0, 256 * 16);
	vcpu_set_sregs(_metadata, v, &sregs);
	setup_regs_at_code(_metadata, v);
}

#endif
