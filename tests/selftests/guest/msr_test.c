// SPDX-License-Identifier: GPL-2.0
/*
 * The MSRs KVM emulates beyond the architectural core (see policy_test.c),
 * read and written by a guest and through KVM_GET/SET_MSRS: machine checks
 * (IA32_MCG_*, IA32_MCi_*, KVM_CAP_MCE, KVM_X86_GET_MCE_CAP_SUPPORTED,
 * KVM_X86_SETUP_MCE, KVM_X86_SET_MCE and the #MC, shutdown or recording it
 * causes), the MTRRs, IA32_TSC_ADJUST, HWCR, PLATFORM_INFO and CPUID
 * faulting, UCODE_REV, SMI_COUNT, POWER_CTL, the vendor MSRs
 * (IA32_FEATURE_CONTROL and IA32_MCG_EXT_CTL on VT-x, VM_HSAVE_PA on SVM)
 * and KVM_GET_MSR_INDEX_LIST. Linux KVM (arch/x86/kvm/msrs.c, mtrr.c,
 * x86.c, svm/svm.c, vmx/vmx.c) is the oracle; each rule names the KVM
 * function it comes from. Where kvm_amd and kvm_intel differ, each test
 * checks the behaviour of the host's vendor.
 *
 * The guest, msr64, runs one operation per KVM_RUN from a mailbox at
 * DATA_GPA and reports with one OUT to port 0x10: 0 if the instruction
 * completed, 0x100 | vector if it raised #UD, #GP or #MC (through its IDT),
 * with RAX, RDX and the error code in the mailbox.
 */
#include <cpuid.h>
#include <stdint.h>
#include <string.h>

#include "vm_lib.h"
#include "msr_lib.h"

#define MSR_IA32_TSC		0x10
#define MSR_SMI_COUNT		0x34
#define MSR_IA32_FEAT_CTL	0x3a
#define MSR_IA32_TSC_ADJUST	0x3b
#define MSR_IA32_UCODE_WRITE	0x79
#define MSR_IA32_UCODE_REV	0x8b
#define MSR_FSB_FREQ		0xcd
#define MSR_PLATFORM_INFO	0xce
#define MSR_MTRRcap		0xfe
#define MSR_MISC_FEATURES_ENABLES 0x140
#define MSR_IA32_MCG_CAP	0x179
#define MSR_IA32_MCG_STATUS	0x17a
#define MSR_IA32_MCG_CTL	0x17b
#define MSR_IA32_PERF_STATUS	0x198
#define MSR_IA32_POWER_CTL	0x1fc
#define MSR_MTRRphysBase0	0x200
#define MSR_MTRRfix64K_00000	0x250
#define MSR_MTRRfix16K_80000	0x258
#define MSR_MTRRfix4K_C0000	0x268
#define MSR_MTRRfix4K_F8000	0x26f
#define MSR_MTRRdefType		0x2ff
#define MSR_IA32_MC0_CTL2	0x280
#define MSR_IA32_MC0_CTL	0x400
#define MSR_IA32_MCG_EXT_CTL	0x4d0
#define MSR_K7_HWCR		0xc0010015
#define MSR_VM_HSAVE_PA		0xc0010117
/* An index no KVM handles. */
#define MSR_UNKNOWN		0xc0011fff

#define MCi_CTL(i)		(MSR_IA32_MC0_CTL + 4 * (i))
#define MCi_STATUS(i)		(MCi_CTL(i) + 1)
#define MCi_ADDR(i)		(MCi_CTL(i) + 2)
#define MCi_MISC(i)		(MCi_CTL(i) + 3)

#define MCG_CTL_P		(1ULL << 8)
#define MCG_EXT_P		(1ULL << 9)
#define MCG_CMCI_P		(1ULL << 10)
#define MCG_SER_P		(1ULL << 24)
#define MCG_LMCE_P		(1ULL << 27)
#define MCG_STATUS_RIPV		(1ULL << 0)
#define MCG_STATUS_MCIP		(1ULL << 2)
#define MCI_STATUS_VAL		(1ULL << 63)
#define MCI_STATUS_OVER		(1ULL << 62)
#define MCI_STATUS_UC		(1ULL << 61)
#define MCI_STATUS_EN		(1ULL << 60)
#define MCI_STATUS_PCC		(1ULL << 57)
#define MCI_CTL2_CMCI_EN	(1ULL << 30)
#define FEAT_CTL_LOCKED		(1ULL << 0)
#define FEAT_CTL_LMCE		(1ULL << 20)
#define HWCR_MCSTATUSWREN	(1ULL << 18)
#define HWCR_TSCFREQSEL		(1ULL << 24)
#define PLATFORM_INFO_CPUID_FAULT (1ULL << 31)

#define X86_CR4_MCE		(1ULL << 6)

#define VEC_UD			6
#define VEC_GP			13
#define VEC_MC			18

/* A 10-bank MCG_CAP as QEMU sets it (MCE_BANKS_DEF). */
#define QEMU_MCG_CAP		(10 | MCG_CTL_P | MCG_SER_P)

/* --- the host --- */

static int host_is_amd(void)
{
	unsigned int a, b, c, d;

	__cpuid(0, a, b, c, d);
	return b == 0x68747541;	/* "Auth" */
}

/* --- the guest's CPUID --- */

/* 7.0.EBX.TSC_ADJUST. */
static int has_tsc_adjust(struct kvm_cpuid2 *c)
{
	struct kvm_cpuid_entry2 *e = cpuid_entry(c, 7, 0);

	return e && (e->ebx >> 1 & 1);
}

static void clear_tsc_adjust(struct kvm_cpuid2 *c)
{
	struct kvm_cpuid_entry2 *e = cpuid_entry(c, 7, 0);

	if (e)
		e->ebx &= ~(1U << 1);
}

/* 1.EDX.MCE. */
static int has_mce(struct kvm_cpuid2 *c)
{
	struct kvm_cpuid_entry2 *e = cpuid_entry(c, 1, 0);

	return e && (e->edx >> 7 & 1);
}

/* The guest's MAXPHYADDR (0x80000008.EAX[7:0], 36 without the leaf). */
static int cpuid_maxphyaddr(struct kvm_cpuid2 *c)
{
	struct kvm_cpuid_entry2 *e = cpuid_entry(c, 0x80000000, 0);

	if (!e || e->eax < 0x80000008 || !(e = cpuid_entry(c, 0x80000008, 0)))
		return 36;
	return e->eax & 0xff;
}

/* --- MSRs through the KVM API --- */

/* KVM_SET_MSRS / KVM_GET_MSRS that must stop at the entry (none taken). */
#define host_wrmsr_fails(v, index, data)				\
	EXPECT_EQ(0, kvm_set_msr(v, index, data))			\
		TH_LOG("KVM_SET_MSRS 0x%x = 0x%llx was taken", index,	\
		       (unsigned long long)(data))
#define host_rdmsr_fails(v, index) do {					\
	uint64_t __d;							\
	EXPECT_EQ(0, kvm_get_msr(v, index, &__d))			\
		TH_LOG("KVM_GET_MSRS 0x%x was answered", index);	\
} while (0)

/* --- the long-mode guest that runs one operation per KVM_RUN --- */

enum op {
	OP_WRMSR = 1,		/* ECX, EDX:EAX = value */
	OP_RDMSR,		/* ECX */
	OP_CR4_SET,		/* CR4 |= value */
	OP_NOP,
	OP_CPUID,		/* EAX = value */
	OP_CPUID_CPL3,		/* CPUID at CPL 3 (then UD2 if it did not fault) */
	OP_RDTSC,
};

#define MBOX_GPA	DATA_GPA	/* op, ECX, value; results at +0x40 */
_Static_assert(MBOX_GPA == 0x20000, "msr64 hard-codes the mailbox");
#define USER_STACK	0x70000UL
_Static_assert(SEL_CODE64 == 0x18 && SEL_DATA == 0x10, "msr64's selectors");

GUEST_CODE(msr64, 64,
	"m_top:\n"
	"mov ebx, 0x20000\n"
	"mov r9d, dword ptr [rbx]\n"
	"mov ecx, dword ptr [rbx + 4]\n"
	"mov r8, qword ptr [rbx + 8]\n"
	"mov eax, r8d\n"
	"mov rdx, r8\n"
	"shr rdx, 32\n"
	"xor r13d, r13d\n"
	"lea r14, [rip + m_report]\n"	/* where an exception resumes */
	"cmp r9d, 1\n"	"je m_wrmsr\n"
	"cmp r9d, 2\n"	"je m_rdmsr\n"
	"cmp r9d, 3\n"	"je m_cr4_set\n"
	"cmp r9d, 4\n"	"je m_report\n"
	"cmp r9d, 5\n"	"je m_cpuid\n"
	"cmp r9d, 6\n"	"je m_cpuid_cpl3\n"
	"cmp r9d, 7\n"	"je m_rdtsc\n"
	"mov r13d, 0xffff\n"
	"m_report:\n"
	"mov qword ptr [rbx + 0x40], rax\n"
	"mov qword ptr [rbx + 0x48], rdx\n"
	"mov eax, r13d\n"
	"out 0x10, eax\n"
	"jmp m_top\n"
	"m_wrmsr: wrmsr\n"		"jmp m_report\n"
	"m_rdmsr: rdmsr\n"		"jmp m_report\n"
	"m_rdtsc: rdtsc\n"		"jmp m_report\n"
	"m_cpuid: cpuid\n"
	"mov ebx, 0x20000\n"		/* CPUID took RBX */
	"jmp m_report\n"
	"m_cr4_set:\n"
	"mov rax, cr4\n"
	"or rax, r8\n"
	"mov cr4, rax\n"
	"jmp m_report\n"
	"m_cpuid_cpl3:\n"
	"mov r12, rsp\n"		/* the handler comes back to CPL 0 here */
	"lea rsi, [rip + m_user]\n"
	"push 0x33\n"			/* SS = user data */
	"push 0x70000\n"		/* RSP = USER_STACK */
	"push 2\n"			/* RFLAGS */
	"push 0x3b\n"			/* CS = user code64 */
	"push rsi\n"
	"iretq\n"
	"m_user:\n"
	"cpuid\n"
	"mov ebx, 0x20000\n"
	"ud2\n"
	/* #UD and #MC: no error code. */
	".globl m_ud\n"
	"m_ud:\n"
	"mov r13d, 0x106\n"
	"mov qword ptr [rbx + 0x58], -1\n"
	"jmp m_exc_ret\n"
	".globl m_mc\n"
	"m_mc:\n"
	"mov r13d, 0x112\n"
	"mov qword ptr [rbx + 0x58], -1\n"
	"jmp m_exc_ret\n"
	/* #GP: the error code is popped into the mailbox. */
	".globl m_gp\n"
	"m_gp:\n"
	"mov r13d, 0x10d\n"
	"pop qword ptr [rbx + 0x58]\n"
	"m_exc_ret:\n"
	"cmp qword ptr [rsp + 8], 0x18\n"	/* from CPL 3: back to CPL 0 */
	"je 1f\n"
	"mov qword ptr [rsp + 8], 0x18\n"
	"mov qword ptr [rsp + 24], r12\n"
	"mov qword ptr [rsp + 32], 0x10\n"
	"1:\n"
	"mov qword ptr [rsp], r14\n"
	"iretq\n");
extern const uint8_t m_ud[], m_gp[], m_mc[];

struct guest {
	struct vm vm;
	struct vcpu v;
	int amd;		/* the host (so the backend) is AMD */
	int maxphyaddr;		/* the guest's */
};

struct op_res {
	uint32_t status;	/* 0, or 0x100 | vector */
	uint64_t rax, rdx, err;
};

static inline uint64_t edx_eax(struct op_res r)
{
	return r.rdx << 32 | (uint32_t)r.rax;
}

/* vcpu_setup_long_user() with msr64 and its #UD, #GP and #MC gates. */
static void msr_vcpu_setup(struct __test_metadata *_metadata, struct vm *vm,
			   struct vcpu *v, struct kvm_cpuid2 *cpuid)
{
	vcpu_setup_long_user(_metadata, vm, v, cpuid);
	vm_load_code(vm, msr64);
	vm_set_idt_gate64(vm, VEC_UD, CODE_GPA + (m_ud - msr64));
	vm_set_idt_gate64(vm, VEC_GP, CODE_GPA + (m_gp - msr64));
	vm_set_idt_gate64(vm, VEC_MC, CODE_GPA + (m_mc - msr64));
}

/* A VM with vCPU 0 running msr64, with @edit applied to the supported CPUID. */
static void guest_create_edit(struct __test_metadata *_metadata, struct guest *g,
			      void (*edit)(struct kvm_cpuid2 *))
{
	struct kvm_cpuid2 *c;

	vm_create(_metadata, &g->vm);
	vcpu_create(_metadata, &g->vm, 0, &g->v);
	c = supported_cpuid(_metadata, g->vm.sys);
	if (edit)
		edit(c);
	g->amd = host_is_amd();
	g->maxphyaddr = cpuid_maxphyaddr(c);
	msr_vcpu_setup(_metadata, &g->vm, &g->v, c);
	free(c);
}

#define guest_create(_metadata, g) guest_create_edit(_metadata, g, NULL)

static void guest_destroy(struct guest *g)
{
	vcpu_destroy(&g->vm, &g->v);
	vm_destroy(&g->vm);
}

static const char *op_name(uint32_t op)
{
	static const char *const n[] = {
		"?", "WRMSR", "RDMSR", "MOV CR4 (set)", "NOP", "CPUID",
		"CPUID at CPL 3", "RDTSC",
	};

	return op < sizeof(n) / sizeof(n[0]) ? n[op] : "?";
}

static const char *status_name(uint32_t status)
{
	switch (status) {
	case 0:
		return "no exception";
	case 0x100 | VEC_UD:
		return "#UD";
	case 0x100 | VEC_GP:
		return "#GP";
	case 0x100 | VEC_MC:
		return "#MC";
	default:
		return "?";
	}
}

/* Runs one operation to its report. */
static struct op_res guest_op_(struct __test_metadata *_metadata,
			       struct guest *g, uint32_t op, uint32_t ecx,
			       uint64_t val)
{
	uint8_t *m = g->vm.mem + MBOX_GPA;
	struct vcpu *v = &g->v;
	struct op_res r;

	memcpy(m, &op, 4);
	memcpy(m + 4, &ecx, 4);
	memcpy(m + 8, &val, 8);
	memset(m + 0x40, 0xa5, 0x20);
	vcpu_run(_metadata, v);
	ASSERT_EQ(KVM_EXIT_IO, v->run->exit_reason)
		TH_LOG("%s ECX=0x%x value=0x%llx: exit %s (%u)", op_name(op),
		       ecx, (unsigned long long)val,
		       exit_reason_name(v->run->exit_reason),
		       v->run->exit_reason);
	ASSERT_EQ(0x10, v->run->io.port);
	memcpy(&r.status, io_data(v), 4);
	memcpy(&r.rax, m + 0x40, 8);
	memcpy(&r.rdx, m + 0x48, 8);
	memcpy(&r.err, m + 0x58, 8);
	return r;
}

#define guest_op(g, op, ecx, val) guest_op_(_metadata, g, op, ecx, val)

/* An operation that must complete without an exception. */
#define OP_OK(g, op, ecx, val) ({					\
	struct op_res __r = guest_op(g, op, ecx, val);			\
	ASSERT_EQ(0, __r.status)					\
		TH_LOG("%s ECX=0x%x value=0x%llx: %s (error code 0x%llx)",\
		       op_name(op), (uint32_t)(ecx),			\
		       (unsigned long long)(val), status_name(__r.status),\
		       (unsigned long long)__r.err);			\
	__r; })

/* An operation that must raise @vec (#GP with error code 0). */
#define OP_FAULT(g, op, ecx, val, vec) do {				\
	struct op_res __r = guest_op(g, op, ecx, val);			\
	EXPECT_EQ(0x100 | (vec), __r.status)				\
		TH_LOG("%s ECX=0x%x value=0x%llx: %s, expected %s",	\
		       op_name(op), (uint32_t)(ecx),			\
		       (unsigned long long)(val), status_name(__r.status),\
		       status_name(0x100 | (vec)));			\
	if (__r.status == (0x100 | VEC_GP))				\
		EXPECT_EQ(0ULL, __r.err);				\
} while (0)

#define guest_rdmsr(g, index) edx_eax(OP_OK(g, OP_RDMSR, index, 0))
#define guest_wrmsr(g, index, val) OP_OK(g, OP_WRMSR, index, val)
#define guest_rdmsr_gp(g, index) OP_FAULT(g, OP_RDMSR, index, 0, VEC_GP)
#define guest_wrmsr_gp(g, index, val) OP_FAULT(g, OP_WRMSR, index, val, VEC_GP)

/* KVM_X86_SETUP_MCE that must succeed. */
#define setup_mce(g, cap) do {						\
	uint64_t __cap = (cap);						\
	ASSERT_EQ(0, ioctl((g)->v.fd, KVM_X86_SETUP_MCE, &__cap))	\
		TH_LOG("KVM_X86_SETUP_MCE 0x%llx: %s",			\
		       (unsigned long long)__cap, strerror(errno));	\
} while (0)

static int set_mce(struct guest *g, uint8_t bank, uint64_t status,
		   uint64_t mcg_status)
{
	struct kvm_x86_mce m = {
		.status = status,
		.addr = 0x1234000,
		.misc = 0x86,
		.mcg_status = mcg_status,
		.bank = bank,
	};

	return ioctl(g->v.fd, KVM_X86_SET_MCE, &m);
}

/* The supported MCG_CAP bits (KVM_X86_GET_MCE_CAP_SUPPORTED). */
static uint64_t mce_cap_supported(struct __test_metadata *_metadata, int sys)
{
	uint64_t cap = 0;

	EXPECT_EQ(0, ioctl(sys, KVM_X86_GET_MCE_CAP_SUPPORTED, &cap))
		TH_LOG("KVM_X86_GET_MCE_CAP_SUPPORTED: %s", strerror(errno));
	return cap;
}

/* ===================== machine checks: the API ===================== */

/* KVM_CAP_MCE is the bank count, KVM_MAX_MCE_BANKS (kvm_vm_ioctl_check_extension). */
TEST(cap_mce_is_32_banks)
{
	int sys = open_kvm_dev(_metadata);

	EXPECT_EQ(32, ioctl(sys, KVM_CHECK_EXTENSION, KVM_CAP_MCE));
	close(sys);
}

/*
 * KVM_X86_GET_MCE_CAP_SUPPORTED: MCG_CTL_P | MCG_SER_P, and on VT-x also
 * LMCE_P and CMCI_P (kvm_x86_vendor_init, vmx_hardware_setup).
 */
TEST(mce_cap_supported_is_the_vendors)
{
	int sys = open_kvm_dev(_metadata);
	uint64_t want = MCG_CTL_P | MCG_SER_P;

	if (!host_is_amd())
		want |= MCG_LMCE_P | MCG_CMCI_P;
	EXPECT_EQ(want, mce_cap_supported(_metadata, sys));
	EXPECT_ERRNO(EFAULT, ioctl(sys, KVM_X86_GET_MCE_CAP_SUPPORTED, NULL));
	close(sys);
}

/*
 * KVM_X86_SETUP_MCE: EINVAL for no banks, more than 32 or a bit outside the
 * supported ones and the count fields (kvm_vcpu_ioctl_x86_setup_mce);
 * EFAULT for a bad pointer.
 */
TEST(setup_mce_rejects_what_kvm_rejects)
{
	struct guest g;
	uint64_t cap;

	guest_create(_metadata, &g);
	cap = 0;
	EXPECT_ERRNO(EINVAL, ioctl(g.v.fd, KVM_X86_SETUP_MCE, &cap));
	cap = 33;
	EXPECT_ERRNO(EINVAL, ioctl(g.v.fd, KVM_X86_SETUP_MCE, &cap));
	cap = 10 | MCG_EXT_P;
	EXPECT_ERRNO(EINVAL, ioctl(g.v.fd, KVM_X86_SETUP_MCE, &cap));
	cap = 10 | (1ULL << 32);
	EXPECT_ERRNO(EINVAL, ioctl(g.v.fd, KVM_X86_SETUP_MCE, &cap));
	if (g.amd) {
		cap = 10 | MCG_CMCI_P;
		EXPECT_ERRNO(EINVAL, ioctl(g.v.fd, KVM_X86_SETUP_MCE, &cap));
	}
	EXPECT_ERRNO(EFAULT, ioctl(g.v.fd, KVM_X86_SETUP_MCE, NULL));
	/* Refused setups left the creation state: 32 banks. */
	EXPECT_EQ(32ULL, host_rdmsr(&g.v, MSR_IA32_MCG_CAP));
	/*
	 * The count fields (7:0, 23:16) are taken; SVM then keeps bits 8:0
	 * only (svm_setup_mce), after MCG_CTL was set up.
	 */
	setup_mce(&g, 32 | 0x50000 | MCG_SER_P);
	EXPECT_EQ(g.amd ? 32ULL : 32ULL | 0x50000 | MCG_SER_P,
		  host_rdmsr(&g.v, MSR_IA32_MCG_CAP));
	setup_mce(&g, QEMU_MCG_CAP);
	EXPECT_EQ(g.amd ? QEMU_MCG_CAP & 0x1ff : QEMU_MCG_CAP,
		  guest_rdmsr(&g, MSR_IA32_MCG_CAP));
	EXPECT_EQ(~0ULL, guest_rdmsr(&g, MSR_IA32_MCG_CTL));
	guest_destroy(&g);
}

/*
 * A new vCPU has 32 banks and no MCG_CTL: MCG_CTL is #GP for the guest,
 * readable (0) and writable with 0 only by the host; every bank register
 * reads 0 (get_msr_mce, set_msr_mce).
 */
TEST(new_vcpu_has_32_banks_and_no_mcg_ctl)
{
	struct guest g;

	guest_create(_metadata, &g);
	EXPECT_EQ(32ULL, guest_rdmsr(&g, MSR_IA32_MCG_CAP));
	guest_rdmsr_gp(&g, MSR_IA32_MCG_CTL);
	guest_wrmsr_gp(&g, MSR_IA32_MCG_CTL, 0);
	EXPECT_EQ(0ULL, host_rdmsr(&g.v, MSR_IA32_MCG_CTL));
	host_wrmsr(&g.v, MSR_IA32_MCG_CTL, 0);
	host_wrmsr_fails(&g.v, MSR_IA32_MCG_CTL, ~0ULL);
	EXPECT_EQ(0ULL, guest_rdmsr(&g, MCi_CTL(0)));
	EXPECT_EQ(0ULL, guest_rdmsr(&g, MCi_MISC(31)));
	EXPECT_EQ(0ULL, guest_rdmsr(&g, MSR_IA32_MCG_STATUS));
	/* (Bank 32 would be 0x480, where VT-x's capability MSRs start.) */
	guest_destroy(&g);
}

/*
 * After KVM_X86_SETUP_MCE with MCG_CTL_P: MCG_CTL and each MCi_CTL are all
 * ones, banks past the count are gone for guest and host alike.
 */
TEST(setup_mce_sets_ctl_registers_to_all_ones)
{
	struct guest g;

	guest_create(_metadata, &g);
	setup_mce(&g, QEMU_MCG_CAP);
	EXPECT_EQ(~0ULL, guest_rdmsr(&g, MSR_IA32_MCG_CTL));
	for (int b = 0; b < 10; b++) {
		EXPECT_EQ(~0ULL, host_rdmsr(&g.v, MCi_CTL(b)));
		EXPECT_EQ(0ULL, host_rdmsr(&g.v, MCi_STATUS(b)));
	}
	guest_rdmsr_gp(&g, MCi_CTL(10));
	guest_wrmsr_gp(&g, MCi_STATUS(10), 0);
	host_rdmsr_fails(&g.v, MCi_CTL(10));
	host_wrmsr_fails(&g.v, MCi_CTL(10), 0);
	guest_destroy(&g);
}

/* MCG_CAP is read-only for everyone (set_msr_mce has no case for it). */
TEST(mcg_cap_is_read_only)
{
	struct guest g;

	guest_create(_metadata, &g);
	guest_wrmsr_gp(&g, MSR_IA32_MCG_CAP, 32);
	host_wrmsr_fails(&g.v, MSR_IA32_MCG_CAP, 32);
	host_wrmsr_fails(&g.v, MSR_IA32_MCG_CAP, 0);
	guest_destroy(&g);
}

/* MCG_CTL takes 0 or all ones; MCG_STATUS anything (set_msr_mce). */
TEST(mcg_ctl_and_mcg_status_writes)
{
	struct guest g;

	guest_create(_metadata, &g);
	setup_mce(&g, QEMU_MCG_CAP);
	guest_wrmsr(&g, MSR_IA32_MCG_CTL, 0);
	EXPECT_EQ(0ULL, guest_rdmsr(&g, MSR_IA32_MCG_CTL));
	guest_wrmsr_gp(&g, MSR_IA32_MCG_CTL, 1);
	host_wrmsr_fails(&g.v, MSR_IA32_MCG_CTL, 0xff);
	host_wrmsr(&g.v, MSR_IA32_MCG_CTL, ~0ULL);
	guest_wrmsr(&g, MSR_IA32_MCG_STATUS, 0x123456789ULL);
	EXPECT_EQ(0x123456789ULL, host_rdmsr(&g.v, MSR_IA32_MCG_STATUS));
	guest_destroy(&g);
}

/*
 * MCi_CTL takes 0 or all ones, with bits 10 and 0 allowed clear (the K8
 * GART and UnixWare workarounds); MCi_STATUS takes only 0 from the guest
 * (unless HWCR.McStatusWrEn on AMD), anything from the host; ADDR and MISC
 * anything.
 */
TEST(mci_register_writes)
{
	struct guest g;

	guest_create(_metadata, &g);
	setup_mce(&g, QEMU_MCG_CAP);
	guest_wrmsr(&g, MCi_CTL(4), ~(1ULL << 10));
	EXPECT_EQ(~(1ULL << 10), host_rdmsr(&g.v, MCi_CTL(4)));
	guest_wrmsr(&g, MCi_CTL(1), ~1ULL);
	guest_wrmsr(&g, MCi_CTL(1), 0);
	guest_wrmsr_gp(&g, MCi_CTL(1), ~2ULL);
	host_wrmsr_fails(&g.v, MCi_CTL(1), 5);
	guest_wrmsr(&g, MCi_STATUS(2), 0);
	guest_wrmsr_gp(&g, MCi_STATUS(2), MCI_STATUS_VAL);
	host_wrmsr(&g.v, MCi_STATUS(2), MCI_STATUS_VAL | 5);
	EXPECT_EQ(MCI_STATUS_VAL | 5, guest_rdmsr(&g, MCi_STATUS(2)));
	guest_wrmsr(&g, MCi_ADDR(2), 0xdead000ULL);
	guest_wrmsr(&g, MCi_MISC(2), ~0ULL);
	EXPECT_EQ(0xdead000ULL, host_rdmsr(&g.v, MCi_ADDR(2)));
	EXPECT_EQ(~0ULL, host_rdmsr(&g.v, MCi_MISC(2)));
	guest_destroy(&g);
}

/*
 * HWCR.McStatusWrEn lets an AMD-compatible guest write non-zero MCi_STATUS
 * (can_set_mci_status); an Intel-compatible one still gets #GP.
 */
TEST(hwcr_mcstatuswren_allows_mci_status_writes_on_amd)
{
	struct guest g;

	guest_create(_metadata, &g);
	guest_wrmsr(&g, MSR_K7_HWCR, HWCR_MCSTATUSWREN);
	if (g.amd) {
		guest_wrmsr(&g, MCi_STATUS(3), MCI_STATUS_VAL | 7);
		EXPECT_EQ(MCI_STATUS_VAL | 7, host_rdmsr(&g.v, MCi_STATUS(3)));
	} else {
		guest_wrmsr_gp(&g, MCi_STATUS(3), MCI_STATUS_VAL | 7);
	}
	guest_destroy(&g);
}

/*
 * The bank MSRs QEMU sends after KVM_X86_SETUP_MCE (kvm_put_msrs): MCG_STATUS,
 * MCG_CTL and 0x400-0x427 in one KVM_SET_MSRS, all taken.
 */
TEST(kvm_set_msrs_takes_qemus_mce_list)
{
	struct {
		struct kvm_msrs h;
		struct kvm_msr_entry e[42];
	} m = { .h.nmsrs = 42 };
	struct guest g;

	guest_create(_metadata, &g);
	setup_mce(&g, QEMU_MCG_CAP);
	m.e[0].index = MSR_IA32_MCG_STATUS;
	m.e[1].index = MSR_IA32_MCG_CTL;
	m.e[1].data = ~0ULL;
	for (int i = 0; i < 40; i++) {
		m.e[2 + i].index = MSR_IA32_MC0_CTL + i;
		m.e[2 + i].data = i % 4 == 0 ? ~0ULL : 0x100 + i;
	}
	EXPECT_EQ(42, ioctl(g.v.fd, KVM_SET_MSRS, &m));
	EXPECT_EQ(0x100ULL + 5, guest_rdmsr(&g, MCi_STATUS(1)));
	EXPECT_EQ(0x100ULL + 39, host_rdmsr(&g.v, MCi_MISC(9)));
	guest_destroy(&g);
}

/* MCi_CTL2 needs MCG_CMCI_P, which only VT-x offers (set_msr_mce). */
TEST(mci_ctl2_needs_cmci)
{
	struct guest g;

	guest_create(_metadata, &g);
	setup_mce(&g, QEMU_MCG_CAP);
	guest_rdmsr_gp(&g, MSR_IA32_MC0_CTL2);
	EXPECT_EQ(0ULL, host_rdmsr(&g.v, MSR_IA32_MC0_CTL2));
	host_wrmsr(&g.v, MSR_IA32_MC0_CTL2, 0);
	host_wrmsr_fails(&g.v, MSR_IA32_MC0_CTL2, MCI_CTL2_CMCI_EN);
	if (!g.amd) {
		setup_mce(&g, QEMU_MCG_CAP | MCG_CMCI_P);
		guest_wrmsr(&g, MSR_IA32_MC0_CTL2 + 9, MCI_CTL2_CMCI_EN | 3);
		EXPECT_EQ(MCI_CTL2_CMCI_EN | 3,
			  guest_rdmsr(&g, MSR_IA32_MC0_CTL2 + 9));
		guest_wrmsr_gp(&g, MSR_IA32_MC0_CTL2 + 9, 1ULL << 31);
		guest_rdmsr_gp(&g, MSR_IA32_MC0_CTL2 + 10);
	}
	guest_destroy(&g);
}

/* ===================== machine checks: KVM_X86_SET_MCE ===================== */

/* EINVAL for a bank past the count or a status without VAL. */
TEST(set_mce_checks_bank_and_val)
{
	struct guest g;

	guest_create(_metadata, &g);
	setup_mce(&g, QEMU_MCG_CAP);
	EXPECT_ERRNO(EINVAL, set_mce(&g, 10, MCI_STATUS_VAL, 0));
	EXPECT_ERRNO(EINVAL, set_mce(&g, 0, MCI_STATUS_UC, 0));
	EXPECT_ERRNO(EFAULT, ioctl(g.v.fd, KVM_X86_SET_MCE, NULL));
	EXPECT_EQ(0ULL, host_rdmsr(&g.v, MCi_STATUS(0)));
	guest_destroy(&g);
}

/*
 * An uncorrected error with CR4.MCE set: the bank and MCG_STATUS take the
 * error and the guest gets #MC before its next instruction.
 */
TEST(set_mce_uncorrected_error_raises_mc)
{
	uint64_t uc = MCI_STATUS_VAL | MCI_STATUS_UC | MCI_STATUS_EN | MCI_STATUS_PCC;
	struct guest g;
	struct op_res r;
	int sys = open_kvm_dev(_metadata);
	struct kvm_cpuid2 *c = supported_cpuid(_metadata, sys);

	close(sys);
	if (!has_mce(c)) {
		free(c);
		SKIP(return, "MCE is not in the supported CPUID");
	}
	free(c);
	guest_create(_metadata, &g);
	setup_mce(&g, QEMU_MCG_CAP);
	OP_OK(&g, OP_CR4_SET, 0, X86_CR4_MCE);
	ASSERT_EQ(0, set_mce(&g, 3, uc, MCG_STATUS_MCIP | MCG_STATUS_RIPV));
	r = guest_op(&g, OP_NOP, 0, 0);
	EXPECT_EQ(0x100 | VEC_MC, r.status) TH_LOG("got %s", status_name(r.status));
	EXPECT_EQ(uc, guest_rdmsr(&g, MCi_STATUS(3)));
	EXPECT_EQ(0x1234000ULL, guest_rdmsr(&g, MCi_ADDR(3)));
	EXPECT_EQ(0x86ULL, guest_rdmsr(&g, MCi_MISC(3)));
	EXPECT_EQ(MCG_STATUS_MCIP | MCG_STATUS_RIPV,
		  guest_rdmsr(&g, MSR_IA32_MCG_STATUS));
	/* A second one while MCIP is set shuts the vCPU down. */
	ASSERT_EQ(0, set_mce(&g, 3, uc, MCG_STATUS_MCIP));
	vcpu_run(_metadata, &g.v);
	EXPECT_EQ(KVM_EXIT_SHUTDOWN, g.v.run->exit_reason)
		TH_LOG("exit %s", exit_reason_name(g.v.run->exit_reason));
	guest_destroy(&g);
}

/* With CR4.MCE clear an uncorrected error is a shutdown; the bank is left. */
TEST(set_mce_uncorrected_error_without_cr4_mce_shuts_down)
{
	struct guest g;

	guest_create(_metadata, &g);
	setup_mce(&g, QEMU_MCG_CAP);
	OP_OK(&g, OP_NOP, 0, 0);
	ASSERT_EQ(0, set_mce(&g, 0, MCI_STATUS_VAL | MCI_STATUS_UC | MCI_STATUS_PCC,
			     MCG_STATUS_MCIP));
	EXPECT_EQ(0ULL, host_rdmsr(&g.v, MCi_STATUS(0)));
	vcpu_run(_metadata, &g.v);
	EXPECT_EQ(KVM_EXIT_SHUTDOWN, g.v.run->exit_reason)
		TH_LOG("exit %s", exit_reason_name(g.v.run->exit_reason));
	guest_destroy(&g);
}

/*
 * An uncorrected error is dropped when MCG_CTL or the bank's MCi_CTL is not
 * all ones; a corrected one is recorded without #MC, and a second marks
 * OVER (kvm_vcpu_ioctl_x86_set_mce).
 */
TEST(set_mce_disabled_and_corrected_errors)
{
	uint64_t uc = MCI_STATUS_VAL | MCI_STATUS_UC | MCI_STATUS_PCC;
	uint64_t ce = MCI_STATUS_VAL | MCI_STATUS_EN | 0x17;
	struct guest g;

	guest_create(_metadata, &g);
	setup_mce(&g, QEMU_MCG_CAP);
	OP_OK(&g, OP_NOP, 0, 0);
	host_wrmsr(&g.v, MCi_CTL(1), 0);
	ASSERT_EQ(0, set_mce(&g, 1, uc, MCG_STATUS_MCIP));
	EXPECT_EQ(0ULL, guest_rdmsr(&g, MCi_STATUS(1)));
	host_wrmsr(&g.v, MSR_IA32_MCG_CTL, 0);
	ASSERT_EQ(0, set_mce(&g, 2, uc, MCG_STATUS_MCIP));
	EXPECT_EQ(0ULL, guest_rdmsr(&g, MCi_STATUS(2)));
	EXPECT_EQ(0ULL, guest_rdmsr(&g, MSR_IA32_MCG_STATUS));
	ASSERT_EQ(0, set_mce(&g, 2, ce, 0));
	OP_OK(&g, OP_NOP, 0, 0);
	EXPECT_EQ(ce, guest_rdmsr(&g, MCi_STATUS(2)));
	EXPECT_EQ(0x1234000ULL, guest_rdmsr(&g, MCi_ADDR(2)));
	ASSERT_EQ(0, set_mce(&g, 2, ce, 0));
	EXPECT_EQ(ce | MCI_STATUS_OVER, guest_rdmsr(&g, MCi_STATUS(2)));
	guest_destroy(&g);
}

/* ===================== the vendor's MCE MSRs ===================== */

/*
 * VT-x: IA32_FEATURE_CONTROL starts 0 and takes LOCK (LMCE only with
 * MCG_LMCE_P); once locked the guest gets #GP, the host may still write any
 * supported bit (vmx_set_msr). IA32_MCG_EXT_CTL needs LMCE enabled for the
 * guest. SVM: both are #GP, and the host cannot write them.
 */
TEST(feature_control_and_mcg_ext_ctl_are_vt_x_only)
{
	struct guest g;

	guest_create(_metadata, &g);
	if (g.amd) {
		guest_rdmsr_gp(&g, MSR_IA32_FEAT_CTL);
		guest_wrmsr_gp(&g, MSR_IA32_FEAT_CTL, FEAT_CTL_LOCKED);
		host_wrmsr_fails(&g.v, MSR_IA32_FEAT_CTL, FEAT_CTL_LOCKED);
		guest_rdmsr_gp(&g, MSR_IA32_MCG_EXT_CTL);
		host_wrmsr_fails(&g.v, MSR_IA32_MCG_EXT_CTL, 1);
		guest_destroy(&g);
		return;
	}
	EXPECT_EQ(0ULL, guest_rdmsr(&g, MSR_IA32_FEAT_CTL));
	guest_wrmsr_gp(&g, MSR_IA32_FEAT_CTL, FEAT_CTL_LOCKED | FEAT_CTL_LMCE);
	guest_rdmsr_gp(&g, MSR_IA32_MCG_EXT_CTL);
	EXPECT_EQ(0ULL, host_rdmsr(&g.v, MSR_IA32_MCG_EXT_CTL));
	host_wrmsr(&g.v, MSR_IA32_MCG_EXT_CTL, 1);
	host_wrmsr_fails(&g.v, MSR_IA32_MCG_EXT_CTL, 2);
	setup_mce(&g, QEMU_MCG_CAP | MCG_LMCE_P);
	guest_wrmsr(&g, MSR_IA32_FEAT_CTL, FEAT_CTL_LOCKED | FEAT_CTL_LMCE);
	EXPECT_EQ(FEAT_CTL_LOCKED | FEAT_CTL_LMCE, host_rdmsr(&g.v, MSR_IA32_FEAT_CTL));
	EXPECT_EQ(1ULL, guest_rdmsr(&g, MSR_IA32_MCG_EXT_CTL));
	guest_wrmsr(&g, MSR_IA32_MCG_EXT_CTL, 0);
	guest_wrmsr_gp(&g, MSR_IA32_MCG_EXT_CTL, 2);
	guest_wrmsr_gp(&g, MSR_IA32_FEAT_CTL, FEAT_CTL_LOCKED);
	host_wrmsr(&g.v, MSR_IA32_FEAT_CTL, 0);
	host_wrmsr_fails(&g.v, MSR_IA32_FEAT_CTL, 1ULL << 3);
	guest_destroy(&g);
}

/* ===================== MTRRs ===================== */

/* MTRRcap: WC, fixed ranges, 8 variable ranges; read-only (kvm_mtrr_get_msr). */
TEST(mtrrcap_is_read_only)
{
	struct guest g;

	guest_create(_metadata, &g);
	EXPECT_EQ(0x508ULL, guest_rdmsr(&g, MSR_MTRRcap));
	EXPECT_EQ(0x508ULL, host_rdmsr(&g.v, MSR_MTRRcap));
	guest_wrmsr_gp(&g, MSR_MTRRcap, 0x508);
	host_wrmsr_fails(&g.v, MSR_MTRRcap, 0x508);
	guest_destroy(&g);
}

/*
 * MTRRdefType: E, FE and a type in 0xcff; types UC, WC, WT, WP, WB only
 * (kvm_mtrr_valid). All MTRRs start 0.
 */
TEST(mtrr_def_type_rules)
{
	struct guest g;

	guest_create(_metadata, &g);
	EXPECT_EQ(0ULL, guest_rdmsr(&g, MSR_MTRRdefType));
	guest_wrmsr(&g, MSR_MTRRdefType, 0xc06);
	EXPECT_EQ(0xc06ULL, host_rdmsr(&g.v, MSR_MTRRdefType));
	guest_wrmsr_gp(&g, MSR_MTRRdefType, 0x1006);
	guest_wrmsr_gp(&g, MSR_MTRRdefType, 0x802);
	guest_wrmsr_gp(&g, MSR_MTRRdefType, 0x803);
	host_wrmsr_fails(&g.v, MSR_MTRRdefType, 0x7);
	host_wrmsr(&g.v, MSR_MTRRdefType, 0x804);
	EXPECT_EQ(0x804ULL, guest_rdmsr(&g, MSR_MTRRdefType));
	guest_destroy(&g);
}

/* The 11 fixed-range MTRRs: every byte a valid type; holes are #GP. */
TEST(mtrr_fixed_ranges)
{
	static const uint32_t fixed[] = {
		MSR_MTRRfix64K_00000, MSR_MTRRfix16K_80000,
		MSR_MTRRfix16K_80000 + 1, MSR_MTRRfix4K_C0000,
		MSR_MTRRfix4K_C0000 + 1, MSR_MTRRfix4K_C0000 + 2,
		MSR_MTRRfix4K_C0000 + 3, MSR_MTRRfix4K_C0000 + 4,
		MSR_MTRRfix4K_C0000 + 5, MSR_MTRRfix4K_C0000 + 6,
		MSR_MTRRfix4K_F8000,
	};
	struct guest g;

	guest_create(_metadata, &g);
	for (unsigned i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) {
		uint64_t v = 0x0605040100060504ULL + i;

		if ((v & 0xff) > 6 || (v & 0xff) == 2 || (v & 0xff) == 3)
			v = 0x0605040100060504ULL;
		guest_wrmsr(&g, fixed[i], v);
		EXPECT_EQ(v, host_rdmsr(&g.v, fixed[i]));
		guest_wrmsr_gp(&g, fixed[i], 0x0600000000000000ULL | 7ULL << 24);
		host_wrmsr_fails(&g.v, fixed[i], 0x02);
	}
	guest_rdmsr_gp(&g, MSR_MTRRfix64K_00000 + 1);
	guest_wrmsr_gp(&g, MSR_MTRRfix64K_00000 + 1, 0);
	guest_rdmsr_gp(&g, MSR_MTRRphysBase0 + 16);
	host_rdmsr_fails(&g.v, MSR_MTRRfix4K_C0000 - 1);
	guest_destroy(&g);
}

/*
 * Variable ranges: a base takes a valid type, no bits 11:8 and nothing at
 * or above MAXPHYADDR; a mask no bits 10:0 and nothing at or above
 * MAXPHYADDR (kvm_mtrr_valid, kvm_vcpu_reserved_gpa_bits_raw).
 */
TEST(mtrr_variable_ranges_honour_maxphyaddr)
{
	struct guest g;
	uint64_t top;

	guest_create(_metadata, &g);
	top = 1ULL << g.maxphyaddr;
	for (int i = 0; i < 8; i++) {
		uint32_t base = MSR_MTRRphysBase0 + 2 * i, mask = base + 1;

		guest_wrmsr(&g, base, (top - 0x1000) | 6);
		EXPECT_EQ((top - 0x1000) | 6, host_rdmsr(&g.v, base));
		guest_wrmsr(&g, mask, (top - 0x1000) | 0x800);
		EXPECT_EQ((top - 0x1000) | 0x800, guest_rdmsr(&g, mask));
		guest_wrmsr_gp(&g, base, top | 6);
		guest_wrmsr_gp(&g, base, 0x100 | 6);
		guest_wrmsr_gp(&g, base, 3);
		guest_wrmsr_gp(&g, mask, top | 0x800);
		guest_wrmsr_gp(&g, mask, 0x400);
		host_wrmsr_fails(&g.v, mask, top);
	}
	guest_destroy(&g);
}

/* KVM_SET_MSRS stops at the first MTRR KVM refuses and reports how many it took. */
TEST(kvm_set_msrs_stops_at_an_invalid_mtrr)
{
	struct {
		struct kvm_msrs h;
		struct kvm_msr_entry e[3];
	} m = { .h.nmsrs = 3 };
	struct guest g;

	guest_create(_metadata, &g);
	m.e[0].index = MSR_MTRRdefType;
	m.e[0].data = 0xc06;
	m.e[1].index = MSR_MTRRfix64K_00000;
	m.e[1].data = 0x0202020202020202ULL;
	m.e[2].index = MSR_MTRRfix16K_80000;
	m.e[2].data = 0x0606060606060606ULL;
	EXPECT_EQ(1, ioctl(g.v.fd, KVM_SET_MSRS, &m));
	EXPECT_EQ(0xc06ULL, host_rdmsr(&g.v, MSR_MTRRdefType));
	EXPECT_EQ(0ULL, host_rdmsr(&g.v, MSR_MTRRfix16K_80000));
	guest_destroy(&g);
}

/* ===================== platform MSRs ===================== */

/*
 * HWCR: McStatusWrEn and TscFreqSel only; the flush-filter, IGNNE and
 * TLB-cache-disable bits are dropped, any other bit is #GP, for guest and
 * host alike, on both vendors (kvm_set_msr_common).
 */
TEST(hwcr_takes_kvms_bits)
{
	struct guest g;

	guest_create(_metadata, &g);
	EXPECT_EQ(0ULL, guest_rdmsr(&g, MSR_K7_HWCR));
	guest_wrmsr(&g, MSR_K7_HWCR, HWCR_TSCFREQSEL | 0x148);
	EXPECT_EQ(HWCR_TSCFREQSEL, guest_rdmsr(&g, MSR_K7_HWCR));
	guest_wrmsr_gp(&g, MSR_K7_HWCR, 1);
	guest_wrmsr_gp(&g, MSR_K7_HWCR, 1ULL << 30);
	host_wrmsr_fails(&g.v, MSR_K7_HWCR, 1);
	host_wrmsr(&g.v, MSR_K7_HWCR, HWCR_MCSTATUSWREN);
	EXPECT_EQ(HWCR_MCSTATUSWREN, host_rdmsr(&g.v, MSR_K7_HWCR));
	guest_destroy(&g);
}

/*
 * PLATFORM_INFO offers CPUID faulting at creation; the guest may read it
 * but not write it. MISC_FEATURES_ENABLES takes CPUID_FAULT only
 * (kvm_set_msr_common).
 */
TEST(platform_info_offers_cpuid_faulting)
{
	struct guest g;

	guest_create(_metadata, &g);
	EXPECT_EQ(PLATFORM_INFO_CPUID_FAULT, guest_rdmsr(&g, MSR_PLATFORM_INFO));
	guest_wrmsr_gp(&g, MSR_PLATFORM_INFO, 0);
	EXPECT_EQ(0ULL, guest_rdmsr(&g, MSR_MISC_FEATURES_ENABLES));
	guest_wrmsr_gp(&g, MSR_MISC_FEATURES_ENABLES, 2);
	guest_wrmsr(&g, MSR_MISC_FEATURES_ENABLES, 1);
	EXPECT_EQ(1ULL, host_rdmsr(&g.v, MSR_MISC_FEATURES_ENABLES));
	guest_wrmsr(&g, MSR_MISC_FEATURES_ENABLES, 0);
	host_wrmsr_fails(&g.v, MSR_MISC_FEATURES_ENABLES, 2);
	guest_destroy(&g);
}

/*
 * Before the first KVM_RUN the host may set PLATFORM_INFO; without
 * CPUID_FAULT there, MISC_FEATURES_ENABLES refuses it. Once the vCPU has
 * run, PLATFORM_INFO is a frozen feature MSR: only its value may be
 * written again (do_set_msr).
 */
TEST(platform_info_is_frozen_once_the_vcpu_ran)
{
	struct guest g;

	guest_create(_metadata, &g);
	host_wrmsr(&g.v, MSR_PLATFORM_INFO, 0x1234ULL << 32);
	EXPECT_EQ(0x1234ULL << 32, guest_rdmsr(&g, MSR_PLATFORM_INFO));
	guest_wrmsr_gp(&g, MSR_MISC_FEATURES_ENABLES, 1);
	host_wrmsr_fails(&g.v, MSR_MISC_FEATURES_ENABLES, 1);
	host_wrmsr(&g.v, MSR_PLATFORM_INFO, 0x1234ULL << 32);
	host_wrmsr_fails(&g.v, MSR_PLATFORM_INFO, PLATFORM_INFO_CPUID_FAULT);
	EXPECT_EQ(0x1234ULL << 32, host_rdmsr(&g.v, MSR_PLATFORM_INFO));
	guest_destroy(&g);
}

/* CPUID faulting: CPUID at CPL 3 is #GP, at CPL 0 it still runs (kvm_emulate_cpuid). */
TEST(cpuid_faulting_makes_user_cpuid_gp)
{
	struct guest g;

	guest_create(_metadata, &g);
	/* Without faulting, CPUID at CPL 3 completes and reaches UD2. */
	OP_FAULT(&g, OP_CPUID_CPL3, 0, 0, VEC_UD);
	guest_wrmsr(&g, MSR_MISC_FEATURES_ENABLES, 1);
	OP_FAULT(&g, OP_CPUID_CPL3, 0, 0, VEC_GP);
	OP_OK(&g, OP_CPUID, 0, 0);
	host_wrmsr(&g.v, MSR_MISC_FEATURES_ENABLES, 0);
	OP_FAULT(&g, OP_CPUID_CPL3, 0, 0, VEC_UD);
	guest_destroy(&g);
}

/*
 * UCODE_REV starts at the vendor's value (0x01000065 on SVM, 1 << 32 on
 * VT-x); the guest's writes are dropped without #GP, the host's stored.
 * UCODE_WRITE writes are dropped.
 */
TEST(ucode_rev_is_set_by_the_host_only)
{
	struct guest g;
	uint64_t want;

	guest_create(_metadata, &g);
	want = g.amd ? 0x01000065ULL : 1ULL << 32;
	EXPECT_EQ(want, guest_rdmsr(&g, MSR_IA32_UCODE_REV));
	guest_wrmsr(&g, MSR_IA32_UCODE_REV, 0);
	EXPECT_EQ(want, host_rdmsr(&g.v, MSR_IA32_UCODE_REV));
	host_wrmsr(&g.v, MSR_IA32_UCODE_REV, 0x4200000000ULL);
	EXPECT_EQ(0x4200000000ULL, guest_rdmsr(&g, MSR_IA32_UCODE_REV));
	guest_wrmsr(&g, MSR_IA32_UCODE_WRITE, 0x1000);
	guest_destroy(&g);
}

/* SMI_COUNT: 0, read-only for the guest; POWER_CTL stores anything. */
TEST(smi_count_and_power_ctl)
{
	struct guest g;

	guest_create(_metadata, &g);
	EXPECT_EQ(0ULL, guest_rdmsr(&g, MSR_SMI_COUNT));
	guest_wrmsr_gp(&g, MSR_SMI_COUNT, 1);
	host_wrmsr(&g.v, MSR_SMI_COUNT, 7);
	EXPECT_EQ(7ULL, guest_rdmsr(&g, MSR_SMI_COUNT));
	EXPECT_EQ(0ULL, guest_rdmsr(&g, MSR_IA32_POWER_CTL));
	guest_wrmsr(&g, MSR_IA32_POWER_CTL, 0xdeadbeefcafeULL);
	EXPECT_EQ(0xdeadbeefcafeULL, host_rdmsr(&g.v, MSR_IA32_POWER_CTL));
	guest_destroy(&g);
}

/* Legacy MSRs KVM answers with constants (kvm_get_msr_common). */
TEST(legacy_msrs_read_kvms_constants)
{
	struct guest g;

	guest_create(_metadata, &g);
	EXPECT_EQ(3ULL, guest_rdmsr(&g, MSR_FSB_FREQ));
	EXPECT_EQ(1000ULL | 4ULL << 40, guest_rdmsr(&g, MSR_IA32_PERF_STATUS));
	EXPECT_EQ(0ULL, guest_rdmsr(&g, 0x17));	/* PLATFORM_ID */
	EXPECT_EQ(0ULL, guest_rdmsr(&g, 0xc0010010));	/* SYSCFG */
	guest_destroy(&g);
}

/* An MSR KVM does not handle is #GP for the guest and stops KVM_GET/SET_MSRS. */
TEST(unhandled_msr_is_gp)
{
	struct guest g;

	guest_create(_metadata, &g);
	guest_rdmsr_gp(&g, MSR_UNKNOWN);
	guest_wrmsr_gp(&g, MSR_UNKNOWN, 0);
	host_rdmsr_fails(&g.v, MSR_UNKNOWN);
	host_wrmsr_fails(&g.v, MSR_UNKNOWN, 1);
	guest_destroy(&g);
}

/*
 * VM_HSAVE_PA: on SVM the guest must give a page-aligned address within
 * its MAXPHYADDR, the host anything, and the page offset is dropped
 * (svm_set_msr). On VT-x the writes are dropped and it reads 0
 * (kvm_set_msr_common, kvm_get_msr_common).
 */
TEST(vm_hsave_pa)
{
	struct guest g;

	guest_create(_metadata, &g);
	EXPECT_EQ(0ULL, guest_rdmsr(&g, MSR_VM_HSAVE_PA));
	if (!g.amd) {
		guest_wrmsr(&g, MSR_VM_HSAVE_PA, 0x5000);
		EXPECT_EQ(0ULL, guest_rdmsr(&g, MSR_VM_HSAVE_PA));
		host_wrmsr(&g.v, MSR_VM_HSAVE_PA, 0x5008);
		EXPECT_EQ(0ULL, host_rdmsr(&g.v, MSR_VM_HSAVE_PA));
		guest_destroy(&g);
		return;
	}
	guest_wrmsr(&g, MSR_VM_HSAVE_PA, 0x5000);
	EXPECT_EQ(0x5000ULL, host_rdmsr(&g.v, MSR_VM_HSAVE_PA));
	guest_wrmsr_gp(&g, MSR_VM_HSAVE_PA, 0x5008);
	guest_wrmsr_gp(&g, MSR_VM_HSAVE_PA, 1ULL << g.maxphyaddr);
	host_wrmsr(&g.v, MSR_VM_HSAVE_PA, 0x6008);
	EXPECT_EQ(0x6000ULL, guest_rdmsr(&g, MSR_VM_HSAVE_PA));
	guest_destroy(&g);
}

/* ===================== TSC_ADJUST ===================== */

/* Whether the supported CPUID has TSC_ADJUST; SKIP if not. */
#define require_tsc_adjust() do {					\
	int __sys = open_kvm_dev(_metadata);				\
	struct kvm_cpuid2 *__c = supported_cpuid(_metadata, __sys);	\
	int __has = has_tsc_adjust(__c);				\
	free(__c);							\
	close(__sys);							\
	if (!__has)							\
		SKIP(return, "TSC_ADJUST is not in the supported CPUID");	\
} while (0)

/*
 * A guest write of TSC_ADJUST moves its TSC by the change; a host write
 * only sets the value (kvm_set_msr_common).
 */
TEST(tsc_adjust_guest_writes_move_the_tsc)
{
	const uint64_t step = 1ULL << 40;
	struct guest g;
	uint64_t t0, t1;

	require_tsc_adjust();
	guest_create(_metadata, &g);
	EXPECT_EQ(0ULL, guest_rdmsr(&g, MSR_IA32_TSC_ADJUST));
	t0 = host_rdmsr(&g.v, MSR_IA32_TSC);
	guest_wrmsr(&g, MSR_IA32_TSC_ADJUST, step);
	t1 = host_rdmsr(&g.v, MSR_IA32_TSC);
	EXPECT_LE(step, t1 - t0);
	EXPECT_GT(step + (1ULL << 36), t1 - t0);
	EXPECT_EQ(step, host_rdmsr(&g.v, MSR_IA32_TSC_ADJUST));
	host_wrmsr(&g.v, MSR_IA32_TSC_ADJUST, 5);
	t0 = host_rdmsr(&g.v, MSR_IA32_TSC);
	EXPECT_GT(t1 + (1ULL << 36), t0);
	EXPECT_EQ(5ULL, guest_rdmsr(&g, MSR_IA32_TSC_ADJUST));
	guest_destroy(&g);
}

/*
 * A guest write of IA32_TSC adds its jump to TSC_ADJUST; a host write does
 * not (kvm_set_msr_common, kvm_synchronize_tsc).
 */
TEST(guest_tsc_writes_move_tsc_adjust)
{
	const uint64_t jump = 1ULL << 44;
	struct guest g;
	uint64_t t, adj;

	require_tsc_adjust();
	guest_create(_metadata, &g);
	t = edx_eax(OP_OK(&g, OP_RDTSC, 0, 0));
	guest_wrmsr(&g, MSR_IA32_TSC, t + jump);
	adj = host_rdmsr(&g.v, MSR_IA32_TSC_ADJUST);
	EXPECT_LE(jump - (1ULL << 36), adj);
	EXPECT_GE(jump, adj);
	host_wrmsr(&g.v, MSR_IA32_TSC, 1000);
	EXPECT_EQ(adj, guest_rdmsr(&g, MSR_IA32_TSC_ADJUST));
	guest_destroy(&g);
}

/* Without TSC_ADJUST in the guest's CPUID its writes are dropped, not #GP. */
TEST(tsc_adjust_without_cpuid_drops_writes)
{
	struct guest g;
	uint64_t t0, t1;

	guest_create_edit(_metadata, &g, clear_tsc_adjust);
	t0 = host_rdmsr(&g.v, MSR_IA32_TSC);
	guest_wrmsr(&g, MSR_IA32_TSC_ADJUST, 1ULL << 44);
	host_wrmsr(&g.v, MSR_IA32_TSC_ADJUST, 1ULL << 44);
	EXPECT_EQ(0ULL, guest_rdmsr(&g, MSR_IA32_TSC_ADJUST));
	t1 = host_rdmsr(&g.v, MSR_IA32_TSC);
	EXPECT_GT(1ULL << 40, t1 - t0);
	guest_destroy(&g);
}

/* ===================== KVM_GET_MSR_INDEX_LIST ===================== */

/* The list @ioctl (an MSR index-list ioctl) gives, by its E2BIG protocol. */
static struct kvm_msr_list *get_msr_list(struct __test_metadata *_metadata,
					 int sys, unsigned long ioctl_nr)
{
	struct kvm_msr_list probe = { .nmsrs = 0 }, *l;

	EXPECT_ERRNO(E2BIG, ioctl(sys, ioctl_nr, &probe));
	l = calloc(1, sizeof(*l) + probe.nmsrs * sizeof(l->indices[0]));
	l->nmsrs = probe.nmsrs;
	EXPECT_EQ(0, ioctl(sys, ioctl_nr, l))
		TH_LOG("MSR list ioctl %#lx: %s", ioctl_nr, strerror(errno));
	return l;
}

#define msr_index_list(_metadata, sys) \
	get_msr_list(_metadata, sys, KVM_GET_MSR_INDEX_LIST)

static int listed(struct kvm_msr_list *l, uint32_t index)
{
	for (uint32_t i = 0; i < l->nmsrs; i++)
		if (l->indices[i] == index)
			return 1;
	return 0;
}

/*
 * The list has the MSRs QEMU needs to find there (kvm_get_supported_msrs),
 * the vendor's own (VM_HSAVE_PA on SVM; FEATURE_CONTROL and MCG_EXT_CTL on
 * VT-x), but neither MTRRs nor MCE banks; and KVM_GET_MSRS takes the
 * whole list.
 */
TEST(msr_index_list_has_the_emulated_msrs)
{
	static const uint32_t common[] = {
		MSR_IA32_TSC_ADJUST, MSR_IA32_MCG_STATUS, MSR_IA32_MCG_CTL,
		MSR_SMI_COUNT, MSR_PLATFORM_INFO, MSR_MISC_FEATURES_ENABLES,
		MSR_IA32_POWER_CTL, MSR_IA32_UCODE_REV, MSR_K7_HWCR,
		0x6e0 /* TSC_DEADLINE */,
	};
	struct kvm_msr_list *l;
	struct kvm_msrs *m;
	struct guest g;

	guest_create(_metadata, &g);
	l = msr_index_list(_metadata, g.vm.sys);
	for (unsigned i = 0; i < sizeof(common) / sizeof(common[0]); i++) {
		uint32_t want = common[i];

		EXPECT_TRUE(listed(l, want)) TH_LOG("0x%x not listed", want);
	}
	/*
	 * KVM lists these if the host's RDMSR of them works
	 * (kvm_probe_msr_to_save), so an emulated host may show the other
	 * vendor's too.
	 */
	EXPECT_TRUE(listed(l, g.amd ? MSR_VM_HSAVE_PA : MSR_IA32_FEAT_CTL));
	EXPECT_EQ(!g.amd, listed(l, MSR_IA32_MCG_EXT_CTL));
	EXPECT_FALSE(listed(l, MSR_MTRRdefType));
	EXPECT_FALSE(listed(l, MSR_IA32_MC0_CTL));
	EXPECT_FALSE(listed(l, MSR_IA32_MCG_CAP));
	m = calloc(1, sizeof(*m) + l->nmsrs * sizeof(m->entries[0]));
	m->nmsrs = l->nmsrs;
	for (uint32_t i = 0; i < l->nmsrs; i++)
		m->entries[i].index = l->indices[i];
	EXPECT_EQ((int)l->nmsrs, ioctl(g.v.fd, KVM_GET_MSRS, m));
	free(m);
	free(l);
	guest_destroy(&g);
}

/* ===================== feature MSRs ===================== */

#define MSR_AMD64_DE_CFG	0xc0011029
#define DE_CFG_LFENCE_SERIALIZE	(1ULL << 1)

/* KVM_GET_MSRS on the system fd: @n entries of @idx; returns its result. */
static int sys_get_msrs(int sys, const uint32_t *idx, uint64_t *data, int n)
{
	struct kvm_msrs *m = calloc(1, sizeof(*m) + n * sizeof(m->entries[0]));
	int r;

	m->nmsrs = n;
	for (int i = 0; i < n; i++) {
		m->entries[i].index = idx[i];
		m->entries[i].data = data[i];
	}
	r = ioctl(sys, KVM_GET_MSRS, m);
	for (int i = 0; i < n; i++)
		data[i] = m->entries[i].data;
	free(m);
	return r;
}

/*
 * KVM_CAP_GET_MSR_FEATURES: KVM_GET_MSR_FEATURE_INDEX_LIST (E2BIG
 * protocol) lists the microcode revision and PLATFORM_INFO, and DE_CFG
 * on SVM only (svm_get_feature_msr); the system KVM_GET_MSRS reads each
 * of them, PLATFORM_INFO as CPUID faulting (kvm_get_feature_msr). It stops
 * at the first MSR that is not one, zeroing that entry and leaving the
 * rest; an MSR of KVM_GET_MSR_INDEX_LIST reads as 0 (kvm_do_msr_access's
 * advertised-MSR rule); 256 entries are E2BIG (MAX_IO_MSRS).
 */
TEST(feature_msr_list_and_system_get_msrs)
{
	int sys = open_kvm_dev(_metadata);
	struct kvm_msr_list *l;
	struct kvm_msrs *m;
	uint32_t idx[3] = { MSR_PLATFORM_INFO, MSR_UNKNOWN, MSR_IA32_UCODE_REV };
	uint64_t data[3] = { 0, 0x5555, 0x7777 };
	uint32_t adv = MSR_IA32_TSC_ADJUST;
	uint64_t adv_data = 0x99;

	EXPECT_EQ(1, ioctl(sys, KVM_CHECK_EXTENSION, KVM_CAP_GET_MSR_FEATURES));
	l = get_msr_list(_metadata, sys, KVM_GET_MSR_FEATURE_INDEX_LIST);
	ASSERT_GT(l->nmsrs, 1);
	EXPECT_TRUE(listed(l, MSR_IA32_UCODE_REV));
	EXPECT_TRUE(listed(l, MSR_PLATFORM_INFO));
	EXPECT_EQ(host_is_amd(), listed(l, MSR_AMD64_DE_CFG));
	EXPECT_FALSE(listed(l, MSR_UNKNOWN));
	m = calloc(1, sizeof(*m) + l->nmsrs * sizeof(m->entries[0]));
	m->nmsrs = l->nmsrs;
	for (uint32_t i = 0; i < l->nmsrs; i++)
		m->entries[i].index = l->indices[i];
	EXPECT_EQ((int)l->nmsrs, ioctl(sys, KVM_GET_MSRS, m));
	free(m);
	free(l);

	EXPECT_EQ(1, sys_get_msrs(sys, idx, data, 3));
	EXPECT_EQ(PLATFORM_INFO_CPUID_FAULT, data[0]);
	EXPECT_EQ(0ULL, data[1]);
	EXPECT_EQ(0x7777ULL, data[2]);
	EXPECT_EQ(1, sys_get_msrs(sys, &adv, &adv_data, 1));
	EXPECT_EQ(0ULL, adv_data);

	m = calloc(1, sizeof(*m) + 256 * sizeof(m->entries[0]));
	m->nmsrs = 256;
	EXPECT_ERRNO(E2BIG, ioctl(sys, KVM_GET_MSRS, m));
	free(m);
	close(sys);
}

/*
 * DE_CFG, SVM only: a new vCPU has 0; guest and host may set only the
 * bits the feature MSR offers (svm_set_msr), else #GP or a failed
 * KVM_SET_MSRS; once the vCPU ran, the host may not change it
 * (kvm_is_immutable_feature_msr). VT-x has no DE_CFG: #GP.
 */
TEST(de_cfg_takes_the_offered_bits)
{
	uint32_t idx = MSR_AMD64_DE_CFG;
	uint64_t offered = 0;
	struct guest g;

	guest_create(_metadata, &g);
	if (!g.amd) {
		guest_rdmsr_gp(&g, MSR_AMD64_DE_CFG);
		guest_destroy(&g);
		return;
	}
	ASSERT_EQ(1, sys_get_msrs(g.vm.sys, &idx, &offered, 1));
	EXPECT_EQ(0ULL, offered & ~DE_CFG_LFENCE_SERIALIZE);
	EXPECT_EQ(0ULL, host_rdmsr(&g.v, MSR_AMD64_DE_CFG));
	host_wrmsr_fails(&g.v, MSR_AMD64_DE_CFG, 1);
	host_wrmsr(&g.v, MSR_AMD64_DE_CFG, offered);
	EXPECT_EQ(offered, guest_rdmsr(&g, MSR_AMD64_DE_CFG));
	guest_wrmsr_gp(&g, MSR_AMD64_DE_CFG, offered | 1);
	guest_wrmsr(&g, MSR_AMD64_DE_CFG, 0);
	EXPECT_EQ(0ULL, host_rdmsr(&g.v, MSR_AMD64_DE_CFG));
	/* Ran: only the current value may be written. */
	host_wrmsr(&g.v, MSR_AMD64_DE_CFG, 0);
	if (offered)
		host_wrmsr_fails(&g.v, MSR_AMD64_DE_CFG, offered);
	guest_destroy(&g);
}

TEST_HARNESS_MAIN
