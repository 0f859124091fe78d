/* SPDX-License-Identifier: GPL-2.0 */
/*
 * What the MSR-policy tests (policy_test.c, msr_test.c) share: the
 * supported CPUID table and its lookup, and one-MSR KVM_GET/SET_MSRS.
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

#endif
