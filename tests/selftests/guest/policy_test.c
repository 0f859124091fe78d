// SPDX-License-Identifier: GPL-2.0
/*
 * vCPU policy read back from a guest and through KVM_GET/SET_MSRS: what the
 * guest may do with TSC_AUX/RDTSCP/RDPID, RDPMC, XSETBV/XGETBV, EFER,
 * IA32_MISC_ENABLE, IA32_TSC, IA32_PAT and IA32_APIC_BASE, and which
 * exceptions it gets when it may not, with the reset values of those MSRs.
 * Linux KVM (arch/x86/kvm) is the oracle; each rule names the KVM function
 * it comes from.
 *
 * Most tests drive one long-mode guest, ops64, that executes one operation
 * per KVM_RUN from a mailbox at DATA_GPA (RDMSR, WRMSR, RDTSCP, XSETBV,
 * ...) and reports with one OUT to port 0x10: 0 if the instruction
 * completed, 0x100 | vector if it raised #UD or #GP (through the guest's
 * IDT), with RAX, RDX, RCX and the error code in the mailbox.
 */
#include <cpuid.h>
#include <sched.h>
#include <stdint.h>
#include <string.h>

#include "vm_lib.h"
#include "msr_lib.h"

#define MSR_IA32_TSC		0x10
#define MSR_IA32_APICBASE	0x1b
#define MSR_IA32_MISC_ENABLE	0x1a0
#define MSR_IA32_CR_PAT		0x277
#define MSR_EFER		0xc0000080
#define MSR_TSC_AUX		0xc0000103

#define EFER_SCE		(1ULL << 0)
#define X86_CR4_OSXSAVE		(1ULL << 18)

#define MISC_ENABLE_FAST_STRING	(1ULL << 0)
#define MISC_ENABLE_EMON	(1ULL << 7)
#define MISC_ENABLE_BTS_UNAVAIL	(1ULL << 11)
#define MISC_ENABLE_PEBS_UNAVAIL (1ULL << 12)
#define MISC_ENABLE_PREFETCH_DISABLE (1ULL << 9)

#define PAT_RESET		0x0007040600070406ULL

#define XFEATURE_FP		(1ULL << 0)
#define XFEATURE_SSE		(1ULL << 1)
#define XFEATURE_YMM		(1ULL << 2)

#define VEC_UD			6
#define VEC_GP			13

/* --- the guest's CPUID --- */

enum cpuid_reg { EAX, EBX, ECX, EDX };

static uint32_t *cpuid_reg(struct kvm_cpuid_entry2 *e, enum cpuid_reg r)
{
	return r == EAX ? &e->eax : r == EBX ? &e->ebx : r == ECX ? &e->ecx :
	       &e->edx;
}

static int cpuid_has(struct kvm_cpuid2 *c, uint32_t fn, uint32_t index,
		     enum cpuid_reg r, int bit)
{
	struct kvm_cpuid_entry2 *e = cpuid_entry(c, fn, index);

	return e && (*cpuid_reg(e, r) >> bit & 1);
}

static void cpuid_clear(struct kvm_cpuid2 *c, uint32_t fn, uint32_t index,
			enum cpuid_reg r, int bit)
{
	struct kvm_cpuid_entry2 *e = cpuid_entry(c, fn, index);

	if (e)
		*cpuid_reg(e, r) &= ~(1U << bit);
}

#define has_rdtscp(c)	cpuid_has(c, 0x80000001, 0, EDX, 27)
#define has_rdpid(c)	cpuid_has(c, 7, 0, ECX, 22)
#define has_xsave(c)	cpuid_has(c, 1, 0, ECX, 26)

static void clear_rdtscp_rdpid(struct kvm_cpuid2 *c)
{
	cpuid_clear(c, 0x80000001, 0, EDX, 27);
	cpuid_clear(c, 7, 0, ECX, 22);
}

/* XCR0 bits the table's CPUID leaf 0xD allows (EDX:EAX of subleaf 0). */
static uint64_t cpuid_xcr0(struct kvm_cpuid2 *c)
{
	struct kvm_cpuid_entry2 *e = cpuid_entry(c, 0xd, 0);

	return e ? e->eax | (uint64_t)e->edx << 32 : 0;
}

/* The vendor string of leaf 0: "GenuineIntel" or "AuthenticAMD". */
static void cpuid_set_vendor(struct kvm_cpuid2 *c, const char *v)
{
	struct kvm_cpuid_entry2 *e = cpuid_entry(c, 0, 0);

	memcpy(&e->ebx, v, 4);
	memcpy(&e->edx, v + 4, 4);
	memcpy(&e->ecx, v + 8, 4);
}

/* --- the long-mode guest that runs one operation per KVM_RUN --- */

enum op {
	OP_WRMSR = 1,		/* ECX, EDX:EAX = value */
	OP_RDMSR,		/* ECX */
	OP_RDTSC,
	OP_RDTSCP,		/* EDX:EAX, ECX */
	OP_RDPID,		/* RAX */
	OP_RDPMC,		/* ECX */
	OP_XSETBV,		/* ECX, EDX:EAX = value */
	OP_XGETBV,		/* ECX */
	OP_CR4_SET,		/* CR4 |= value */
	OP_CR4_CLEAR,		/* CR4 &= ~value */
	OP_XSETBV_CPL3,		/* XSETBV at CPL 3 (then UD2 if it did not fault) */
};

#define MBOX_GPA	DATA_GPA	/* op, ECX, value; results at +0x40 */
_Static_assert(MBOX_GPA == 0x20000, "ops64 hard-codes the mailbox");
#define USER_STACK	0x70000UL
#define SEL_UDATA	(0x30 | 3)
#define SEL_UCODE64	(0x38 | 3)
_Static_assert(SEL_CODE64 == 0x18 && SEL_DATA == 0x10, "ops64's selectors");

GUEST_CODE(ops64, 64,
	"ops_top:\n"
	"mov ebx, 0x20000\n"
	"mov r9d, dword ptr [rbx]\n"
	"mov ecx, dword ptr [rbx + 4]\n"
	"mov r8, qword ptr [rbx + 8]\n"
	"mov eax, r8d\n"
	"mov rdx, r8\n"
	"shr rdx, 32\n"
	"xor r13d, r13d\n"
	"lea r14, [rip + ops_report]\n"	/* where an exception resumes */
	"cmp r9d, 1\n"	"je ops_wrmsr\n"
	"cmp r9d, 2\n"	"je ops_rdmsr\n"
	"cmp r9d, 3\n"	"je ops_rdtsc\n"
	"cmp r9d, 4\n"	"je ops_rdtscp\n"
	"cmp r9d, 5\n"	"je ops_rdpid\n"
	"cmp r9d, 6\n"	"je ops_rdpmc\n"
	"cmp r9d, 7\n"	"je ops_xsetbv\n"
	"cmp r9d, 8\n"	"je ops_xgetbv\n"
	"cmp r9d, 9\n"	"je ops_cr4_set\n"
	"cmp r9d, 10\n"	"je ops_cr4_clear\n"
	"cmp r9d, 11\n"	"je ops_xsetbv_cpl3\n"
	"mov r13d, 0xffff\n"
	"ops_report:\n"
	"mov qword ptr [rbx + 0x40], rax\n"
	"mov qword ptr [rbx + 0x48], rdx\n"
	"mov qword ptr [rbx + 0x50], rcx\n"
	"mov eax, r13d\n"
	"out 0x10, eax\n"
	"jmp ops_top\n"
	"ops_wrmsr: wrmsr\n"		"jmp ops_report\n"
	"ops_rdmsr: rdmsr\n"		"jmp ops_report\n"
	"ops_rdtsc: rdtsc\n"		"jmp ops_report\n"
	"ops_rdtscp: rdtscp\n"		"jmp ops_report\n"
	"ops_rdpid: rdpid rax\n"	"jmp ops_report\n"
	"ops_rdpmc: rdpmc\n"		"jmp ops_report\n"
	"ops_xsetbv: xsetbv\n"		"jmp ops_report\n"
	"ops_xgetbv: xgetbv\n"		"jmp ops_report\n"
	"ops_cr4_set:\n"
	"mov rax, cr4\n"
	"or rax, r8\n"
	"mov cr4, rax\n"
	"jmp ops_report\n"
	"ops_cr4_clear:\n"
	"mov rax, cr4\n"
	"not r8\n"
	"and rax, r8\n"
	"mov cr4, rax\n"
	"jmp ops_report\n"
	"ops_xsetbv_cpl3:\n"
	"mov r12, rsp\n"		/* the handler comes back to CPL 0 here */
	"lea rsi, [rip + ops_user]\n"
	"push 0x33\n"			/* SS = SEL_UDATA */
	"push 0x70000\n"		/* RSP = USER_STACK */
	"push 2\n"			/* RFLAGS */
	"push 0x3b\n"			/* CS = SEL_UCODE64 */
	"push rsi\n"
	"iretq\n"
	"ops_user:\n"
	"xsetbv\n"
	"ud2\n"
	/* #UD: no error code. */
	".globl ops_ud\n"
	"ops_ud:\n"
	"mov r13d, 0x106\n"
	"mov qword ptr [rbx + 0x58], -1\n"
	"jmp ops_exc_ret\n"
	/* #GP: the error code is popped into the mailbox. */
	".globl ops_gp\n"
	"ops_gp:\n"
	"mov r13d, 0x10d\n"
	"pop qword ptr [rbx + 0x58]\n"
	"ops_exc_ret:\n"
	"cmp qword ptr [rsp + 8], 0x18\n"	/* from CPL 3: back to CPL 0 */
	"je 1f\n"
	"mov qword ptr [rsp + 8], 0x18\n"
	"mov qword ptr [rsp + 24], r12\n"
	"mov qword ptr [rsp + 32], 0x10\n"
	"1:\n"
	"mov qword ptr [rsp], r14\n"
	"iretq\n");
extern const uint8_t ops_ud[], ops_gp[];

struct guest {
	struct vm vm;
	struct vcpu v;
};

struct op_res {
	uint32_t status;	/* 0, or 0x100 | vector */
	uint64_t rax, rdx, rcx, err;
};

/* EDX:EAX of a result. */
static inline uint64_t edx_eax(struct op_res r)
{
	return r.rdx << 32 | (uint32_t)r.rax;
}

/* vcpu_setup_long_user() with ops64 and its #UD and #GP gates. */
static void ops_vcpu_setup(struct __test_metadata *_metadata, struct vm *vm,
			   struct vcpu *v, struct kvm_cpuid2 *cpuid)
{
	vcpu_setup_long_user(_metadata, vm, v, cpuid);
	vm_load_code(vm, ops64);
	vm_set_idt_gate64(vm, VEC_UD, CODE_GPA + (ops_ud - ops64));
	vm_set_idt_gate64(vm, VEC_GP, CODE_GPA + (ops_gp - ops64));
}

/*
 * A VM with vCPU 0 running ops64, with @cpuid if given (else the supported
 * CPUID).
 */
static void guest_create(struct __test_metadata *_metadata, struct guest *g,
			 struct kvm_cpuid2 *cpuid)
{
	struct kvm_cpuid2 *c;

	vm_create(_metadata, &g->vm);
	vcpu_create(_metadata, &g->vm, 0, &g->v);
	c = cpuid ? cpuid : supported_cpuid(_metadata, g->vm.sys);
	ops_vcpu_setup(_metadata, &g->vm, &g->v, c);
	if (!cpuid)
		free(c);
}

static void guest_destroy(struct guest *g)
{
	vcpu_destroy(&g->vm, &g->v);
	vm_destroy(&g->vm);
}

static const char *op_name(uint32_t op)
{
	static const char *const n[] = {
		"?", "WRMSR", "RDMSR", "RDTSC", "RDTSCP", "RDPID", "RDPMC",
		"XSETBV", "XGETBV", "MOV CR4 (set)", "MOV CR4 (clear)",
		"XSETBV at CPL 3",
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
	default:
		return "?";
	}
}

/* Runs one operation on vCPU @v of @vm to its report. */
static struct op_res vcpu_op(struct __test_metadata *_metadata, struct vm *vm,
			     struct vcpu *v, uint32_t op, uint32_t ecx,
			     uint64_t val)
{
	uint8_t *m = vm->mem + MBOX_GPA;
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
	ASSERT_EQ(KVM_EXIT_IO_OUT, v->run->io.direction);
	ASSERT_EQ(0x10, v->run->io.port);
	ASSERT_EQ(4, v->run->io.size);
	memcpy(&r.status, io_data(v), 4);
	memcpy(&r.rax, m + 0x40, 8);
	memcpy(&r.rdx, m + 0x48, 8);
	memcpy(&r.rcx, m + 0x50, 8);
	memcpy(&r.err, m + 0x58, 8);
	return r;
}

/* Runs an operation on vCPU @v of @vm that must complete without an exception. */
#define OP_OK_V(vm, v, op, ecx, val) ({					\
	struct op_res __r = vcpu_op(_metadata, vm, v, op, ecx, val);	\
	ASSERT_EQ(0, __r.status)					\
		TH_LOG("%s ECX=0x%x value=0x%llx: %s (error code 0x%llx)",\
		       op_name(op), (uint32_t)(ecx),			\
		       (unsigned long long)(val), status_name(__r.status),\
		       (unsigned long long)__r.err);			\
	__r; })

#define guest_op(g, op, ecx, val) vcpu_op(_metadata, &(g)->vm, &(g)->v, op, ecx, val)
#define OP_OK(g, op, ecx, val) OP_OK_V(&(g)->vm, &(g)->v, op, ecx, val)

/* Runs an operation that must raise @vec (#GP with error code 0). */
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

/* --- host CPUs --- */

/* The CPUs this thread may run on (at most @max). */
static int allowed_cpus(int *cpus, int max)
{
	cpu_set_t set;
	int n = 0;

	if (sched_getaffinity(0, sizeof(set), &set))
		return 0;
	for (int c = 0; c < CPU_SETSIZE && n < max; c++)
		if (CPU_ISSET(c, &set))
			cpus[n++] = c;
	return n;
}

static void pin_to_cpu(struct __test_metadata *_metadata, int cpu)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	ASSERT_EQ(0, sched_setaffinity(0, sizeof(set), &set))
		TH_LOG("sched_setaffinity CPU %d: %s", cpu, strerror(errno));
}

/* The supported CPUID, or SKIP if it lacks RDTSCP. */
#define supported_cpuid_with_rdtscp() ({				\
	int __sys = open_kvm_dev(_metadata);				\
	struct kvm_cpuid2 *__c = supported_cpuid(_metadata, __sys);	\
	close(__sys);							\
	if (!has_rdtscp(__c))						\
		SKIP(return, "RDTSCP is not in the supported CPUID");	\
	__c; })

/* ===================== TSC_AUX, RDTSCP, RDPID ===================== */

/*
 * TSC_AUX is per vCPU, 0 at creation (vcpu_svm->tsc_aux and vmx's user-return
 * MSR slot start zeroed); host reads bypass the guest-CPUID check of
 * __kvm_get_msr() (host_initiated).
 */
TEST(tsc_aux_is_0_after_vcpu_creation)
{
	struct kvm_cpuid2 *c = supported_cpuid_with_rdtscp();
	struct vm vm;
	struct vcpu v;

	free(c);
	vm_create(_metadata, &vm);
	vcpu_create(_metadata, &vm, 0, &v);
	EXPECT_EQ(0ULL, host_rdmsr(&v, MSR_TSC_AUX));
	vcpu_destroy(&vm, &v);
	vm_destroy(&vm);
}

/*
 * The guest's RDTSCP returns the guest's TSC_AUX, 0 after reset, whichever
 * host CPU runs the vCPU: KVM loads the vCPU's value before entry (SVM:
 * svm_prepare_switch_to_guest() through the user-return MSR; VMX: the
 * user-return MSR set up by vmx_setup_uret_msrs()). The host kernel's own
 * TSC_AUX holds the CPU number, so a vCPU run on CPU 1 with the host's value
 * would read 1. Each VM is created on one CPU and run on every CPU.
 */
TEST(rdtscp_gives_0_after_reset_on_every_host_cpu)
{
	struct kvm_cpuid2 *c = supported_cpuid_with_rdtscp();
	int cpus[64], n = allowed_cpus(cpus, 64);

	ASSERT_LE(1, n);
	TH_LOG("%d host CPUs", n);
	for (int i = 0; i < n; i++) {
		struct guest g;

		pin_to_cpu(_metadata, cpus[i]);
		guest_create(_metadata, &g, c);
		for (int j = 0; j < n; j++) {
			pin_to_cpu(_metadata, cpus[j]);
			EXPECT_EQ(0ULL, OP_OK(&g, OP_RDTSCP, 0, 0).rcx & 0xffffffff)
				TH_LOG("vCPU created on CPU %d, run on CPU %d",
				       cpus[i], cpus[j]);
		}
		guest_destroy(&g);
	}
	free(c);
}

/* A guest WRMSR of TSC_AUX is what RDTSCP and KVM_GET_MSRS then read. */
TEST(guest_wrmsr_tsc_aux_is_seen_by_rdtscp_and_kvm_get_msrs)
{
	struct kvm_cpuid2 *c = supported_cpuid_with_rdtscp();
	int cpus[64], n = allowed_cpus(cpus, 64);
	struct guest g;

	guest_create(_metadata, &g, c);
	guest_wrmsr(&g, MSR_TSC_AUX, 0x1234);
	for (int j = 0; j < n; j++) {
		pin_to_cpu(_metadata, cpus[j]);
		EXPECT_EQ(0x1234ULL, OP_OK(&g, OP_RDTSCP, 0, 0).rcx & 0xffffffff)
			TH_LOG("on CPU %d", cpus[j]);
	}
	EXPECT_EQ(0x1234ULL, guest_rdmsr(&g, MSR_TSC_AUX));
	EXPECT_EQ(0x1234ULL, host_rdmsr(&g.v, MSR_TSC_AUX));
	guest_destroy(&g);
	free(c);
}

/* KVM_SET_MSRS of TSC_AUX is what the guest's RDTSCP then reads. */
TEST(kvm_set_msrs_tsc_aux_is_seen_by_rdtscp)
{
	struct kvm_cpuid2 *c = supported_cpuid_with_rdtscp();
	int cpus[64], n = allowed_cpus(cpus, 64);
	struct guest g;

	guest_create(_metadata, &g, c);
	host_wrmsr(&g.v, MSR_TSC_AUX, 0x55);
	for (int j = 0; j < n; j++) {
		pin_to_cpu(_metadata, cpus[j]);
		EXPECT_EQ(0x55ULL, OP_OK(&g, OP_RDTSCP, 0, 0).rcx & 0xffffffff)
			TH_LOG("on CPU %d", cpus[j]);
	}
	EXPECT_EQ(0x55ULL, guest_rdmsr(&g, MSR_TSC_AUX));
	guest_destroy(&g);
	free(c);
}

/* RDPID reads the same TSC_AUX as RDTSCP: 0 after reset, then the guest's. */
TEST(rdpid_reads_the_guests_tsc_aux)
{
	struct kvm_cpuid2 *c = supported_cpuid_with_rdtscp();
	int cpus[64], n = allowed_cpus(cpus, 64);
	struct guest g;

	if (!has_rdpid(c)) {
		free(c);
		SKIP(return, "RDPID is not in the supported CPUID");
	}
	guest_create(_metadata, &g, c);
	for (int j = 0; j < n; j++) {
		pin_to_cpu(_metadata, cpus[j]);
		EXPECT_EQ(0ULL, OP_OK(&g, OP_RDPID, 0, 0).rax)
			TH_LOG("on CPU %d", cpus[j]);
	}
	guest_wrmsr(&g, MSR_TSC_AUX, 0x1234);
	EXPECT_EQ(0x1234ULL, OP_OK(&g, OP_RDPID, 0, 0).rax);
	host_wrmsr(&g.v, MSR_TSC_AUX, 0x55);
	for (int j = 0; j < n; j++) {
		pin_to_cpu(_metadata, cpus[j]);
		EXPECT_EQ(0x55ULL, OP_OK(&g, OP_RDPID, 0, 0).rax)
			TH_LOG("on CPU %d", cpus[j]);
	}
	guest_destroy(&g);
	free(c);
}

/*
 * Without RDTSCP (and RDPID) in the guest's CPUID, RDTSCP is #UD: SVM
 * intercepts it (svm_recalc_instruction_intercepts(): INTERCEPT_RDTSCP,
 * handled by kvm_handle_invalid_op()); VMX leaves SECONDARY_EXEC_ENABLE_RDTSCP
 * clear (vmx_secondary_exec_control()), so the CPU raises #UD itself.
 */
TEST(rdtscp_without_rdtscp_in_guest_cpuid_is_ud)
{
	struct kvm_cpuid2 *c = supported_cpuid_with_rdtscp();
	struct op_res r;
	struct guest g;

	clear_rdtscp_rdpid(c);
	guest_create(_metadata, &g, c);
	r = guest_op(&g, OP_RDTSCP, 0, 0);
	if (host_is_qemu_tcg_svm()) {
		/* QEMU's SVM never takes the RDTSCP intercept KVM sets. */
		TH_LOG("QEMU TCG SVM: RDTSCP gave %s", status_name(r.status));
		EXPECT_TRUE(r.status == 0 || r.status == (0x100 | VEC_UD));
	} else {
		EXPECT_EQ(0x100 | VEC_UD, r.status)
			TH_LOG("RDTSCP: %s, expected #UD", status_name(r.status));
	}
	/* The guest goes on: RDTSC is not affected. */
	OP_OK(&g, OP_RDTSC, 0, 0);
	guest_destroy(&g);
	free(c);
}

/*
 * Without RDTSCP and RDPID in the guest's CPUID, the guest's RDMSR and WRMSR
 * of TSC_AUX are #GP (__kvm_get_msr(), __kvm_set_msr(): !host_initiated and
 * neither feature).
 */
TEST(tsc_aux_msr_without_rdtscp_or_rdpid_in_guest_cpuid_is_gp)
{
	struct kvm_cpuid2 *c = supported_cpuid_with_rdtscp();
	struct guest g;

	clear_rdtscp_rdpid(c);
	guest_create(_metadata, &g, c);
	OP_FAULT(&g, OP_RDMSR, MSR_TSC_AUX, 0, VEC_GP);
	OP_FAULT(&g, OP_WRMSR, MSR_TSC_AUX, 0x1234, VEC_GP);
	EXPECT_EQ(0ULL, host_rdmsr(&g.v, MSR_TSC_AUX));
	guest_destroy(&g);
	free(c);
}

/*
 * ... but the host's KVM_GET/SET_MSRS of TSC_AUX work whatever the guest's
 * CPUID (host_initiated skips that check).
 */
TEST(kvm_msrs_tsc_aux_ignore_the_guests_cpuid)
{
	struct kvm_cpuid2 *c = supported_cpuid_with_rdtscp();
	struct guest g;

	clear_rdtscp_rdpid(c);
	guest_create(_metadata, &g, c);
	host_wrmsr(&g.v, MSR_TSC_AUX, 0x77);
	EXPECT_EQ(0x77ULL, host_rdmsr(&g.v, MSR_TSC_AUX));
	guest_destroy(&g);
	free(c);
}

/*
 * Bits 63:32 of TSC_AUX (__kvm_set_msr()): reserved for an Intel-compatible
 * guest (its CPUID vendor is not AMD or Hygon: guest_cpuid_is_intel_compatible()),
 * so a write with any of them set fails, from the guest (#GP) and from the
 * host (KVM_SET_MSRS writes 0 MSRs) alike: the check is not host_initiated.
 * The rule follows the guest's CPUID vendor, not the host's, so both vendors
 * are tested on both hosts.
 */
TEST(tsc_aux_bits_63_32_are_gp_for_an_intel_guest)
{
	struct kvm_cpuid2 *c = supported_cpuid_with_rdtscp();
	struct guest g;

	cpuid_set_vendor(c, "GenuineIntel");
	guest_create(_metadata, &g, c);
	guest_wrmsr(&g, MSR_TSC_AUX, 0x66);
	OP_FAULT(&g, OP_WRMSR, MSR_TSC_AUX, 0x100000077ULL, VEC_GP);
	EXPECT_EQ(0x66ULL, guest_rdmsr(&g, MSR_TSC_AUX));
	EXPECT_EQ(0, kvm_set_msr(&g.v, MSR_TSC_AUX, 0xffffffff00000088ULL));
	EXPECT_EQ(0x66ULL, host_rdmsr(&g.v, MSR_TSC_AUX));
	guest_destroy(&g);
	free(c);
}

/* For an AMD guest, bits 63:32 are dropped (__kvm_set_msr(): data = (u32)data). */
TEST(tsc_aux_bits_63_32_are_dropped_for_an_amd_guest)
{
	struct kvm_cpuid2 *c = supported_cpuid_with_rdtscp();
	struct guest g;

	cpuid_set_vendor(c, "AuthenticAMD");
	guest_create(_metadata, &g, c);
	guest_wrmsr(&g, MSR_TSC_AUX, 0x100000077ULL);
	EXPECT_EQ(0x77ULL, guest_rdmsr(&g, MSR_TSC_AUX));
	EXPECT_EQ(0x77ULL, OP_OK(&g, OP_RDTSCP, 0, 0).rcx & 0xffffffff);
	host_wrmsr(&g.v, MSR_TSC_AUX, 0xffffffff00000088ULL);
	EXPECT_EQ(0x88ULL, host_rdmsr(&g.v, MSR_TSC_AUX));
	EXPECT_EQ(0x88ULL, guest_rdmsr(&g, MSR_TSC_AUX));
	guest_destroy(&g);
	free(c);
}

/* ============================== RDPMC ============================== */

/*
 * RDPMC is intercepted whenever the vCPU has no mediated PMU
 * (kvm_need_rdpmc_intercept(), on SVM and VMX) and emulated by
 * kvm_emulate_rdpmc(): with no virtual PMU (pmu->version 0) kvm_pmu_rdpmc()
 * fails and KVM injects #GP(0), at CPL 0 too. A VM has no virtual PMU when
 * KVM's enable_pmu is off, as on a host without a PMU (then
 * KVM_CAP_PMU_CAPABILITY is 0); where the device reports one, the test turns
 * it off for its VM first (KVM_CAP_PMU_CAPABILITY with KVM_PMU_CAP_DISABLE,
 * before any vCPU exists), else counter 0 could be read.
 */
TEST(rdpmc_0_at_cpl0_without_a_virtual_pmu_is_gp)
{
	struct kvm_cpuid2 *c;
	struct guest g;
	int pmu;

	vm_create(_metadata, &g.vm);
	pmu = ioctl(g.vm.sys, KVM_CHECK_EXTENSION, KVM_CAP_PMU_CAPABILITY);
	if (pmu > 0) {
		struct kvm_enable_cap cap = {
			.cap = KVM_CAP_PMU_CAPABILITY,
			.args[0] = KVM_PMU_CAP_DISABLE,
		};

		TH_LOG("the device has a virtual PMU: disabling it");
		ASSERT_EQ(0, ioctl(g.vm.fd, KVM_ENABLE_CAP, &cap))
			TH_LOG("KVM_ENABLE_CAP PMU_CAPABILITY: %s", strerror(errno));
	}
	vcpu_create(_metadata, &g.vm, 0, &g.v);
	c = supported_cpuid(_metadata, g.vm.sys);
	ops_vcpu_setup(_metadata, &g.vm, &g.v, c);
	OP_FAULT(&g, OP_RDPMC, 0, 0, VEC_GP);
	guest_destroy(&g);
	free(c);
}

/* =========================== XSETBV/XGETBV ========================== */

/* The supported CPUID, or SKIP without XSAVE. */
#define supported_cpuid_with_xsave() ({					\
	int __sys = open_kvm_dev(_metadata);				\
	struct kvm_cpuid2 *__c = supported_cpuid(_metadata, __sys);	\
	close(__sys);							\
	if (!has_xsave(__c))						\
		SKIP(return, "XSAVE is not in the supported CPUID");	\
	__c; })

/* A guest with @c and CR4.OSXSAVE set by itself (MOV CR4 is intercepted). */
static void xsave_guest_create(struct __test_metadata *_metadata,
			       struct guest *g, struct kvm_cpuid2 *c)
{
	guest_create(_metadata, g, c);
	OP_OK(g, OP_CR4_SET, 0, X86_CR4_OSXSAVE);
}

/*
 * XCR0 after RESET is FP only: kvm_vcpu_reset() sets it with
 * __kvm_set_xcr(vcpu, 0, XFEATURE_MASK_FP). XGETBV is not intercepted; KVM
 * loads the guest's XCR0 before entry when CR4.OSXSAVE is set
 * (kvm_load_guest_xsave_state()).
 */
TEST(xgetbv_after_reset_is_fp_only)
{
	struct kvm_cpuid2 *c = supported_cpuid_with_xsave();
	struct guest g;

	xsave_guest_create(_metadata, &g, c);
	EXPECT_EQ(XFEATURE_FP, edx_eax(OP_OK(&g, OP_XGETBV, 0, 0)));
	guest_destroy(&g);
	free(c);
}

/* XSETBV (kvm_emulate_xsetbv()) of FP|SSE is what XGETBV then reads. */
TEST(xsetbv_of_fp_and_sse_reads_back)
{
	struct kvm_cpuid2 *c = supported_cpuid_with_xsave();
	struct guest g;

	if (!(cpuid_xcr0(c) & XFEATURE_SSE)) {
		free(c);
		SKIP(return, "SSE state is not in the supported CPUID 0xD");
	}
	xsave_guest_create(_metadata, &g, c);
	OP_OK(&g, OP_XSETBV, 0, XFEATURE_FP | XFEATURE_SSE);
	EXPECT_EQ(XFEATURE_FP | XFEATURE_SSE, edx_eax(OP_OK(&g, OP_XGETBV, 0, 0)));
	OP_OK(&g, OP_XSETBV, 0, XFEATURE_FP);
	EXPECT_EQ(XFEATURE_FP, edx_eax(OP_OK(&g, OP_XGETBV, 0, 0)));
	guest_destroy(&g);
	free(c);
}

/* A refused XSETBV is #GP(0) and leaves XCR0 as it was. */
static void expect_xsetbv_gp(struct __test_metadata *_metadata,
			     struct guest *g, uint32_t ecx, uint64_t xcr)
{
	OP_FAULT(g, OP_XSETBV, ecx, xcr, VEC_GP);
	EXPECT_EQ(XFEATURE_FP, edx_eax(OP_OK(g, OP_XGETBV, 0, 0)));
}

/* __kvm_set_xcr(): XCR0 must have FP. */
TEST(xsetbv_of_xcr0_without_fp_is_gp)
{
	struct kvm_cpuid2 *c = supported_cpuid_with_xsave();
	struct guest g;

	xsave_guest_create(_metadata, &g, c);
	expect_xsetbv_gp(_metadata, &g, 0, 0);
	expect_xsetbv_gp(_metadata, &g, 0, XFEATURE_SSE);
	guest_destroy(&g);
	free(c);
}

/* __kvm_set_xcr(): only XCR0 (ECX = 0) can be written. */
TEST(xsetbv_of_xcr1_is_gp)
{
	struct kvm_cpuid2 *c = supported_cpuid_with_xsave();
	struct guest g;

	xsave_guest_create(_metadata, &g, c);
	expect_xsetbv_gp(_metadata, &g, 1, XFEATURE_FP);
	expect_xsetbv_gp(_metadata, &g, 1, 0);
	guest_destroy(&g);
	free(c);
}

/*
 * __kvm_set_xcr(): YMM without SSE is #GP. (Without AVX in the supported
 * CPUID, YMM is also a bit the guest's CPUID does not allow: #GP as well.)
 */
TEST(xsetbv_of_ymm_without_sse_is_gp)
{
	struct kvm_cpuid2 *c = supported_cpuid_with_xsave();
	struct guest g;

	xsave_guest_create(_metadata, &g, c);
	expect_xsetbv_gp(_metadata, &g, 0, XFEATURE_FP | XFEATURE_YMM);
	guest_destroy(&g);
	free(c);
}

/*
 * __kvm_set_xcr(): a bit outside the guest's CPUID 0xD (guest_supported_xcr0,
 * from the vCPU's CPUID table) is #GP. YMM is accepted with the supported
 * CPUID and refused once the guest's CPUID leaves it (and AVX) out.
 */
TEST(xsetbv_of_a_feature_not_in_guest_cpuid_is_gp)
{
	struct kvm_cpuid2 *c = supported_cpuid_with_xsave();
	uint64_t x = XFEATURE_FP | XFEATURE_SSE | XFEATURE_YMM;
	struct kvm_cpuid_entry2 *e;
	struct guest g;

	if ((cpuid_xcr0(c) & x) != x) {
		free(c);
		SKIP(return, "AVX (YMM state) is not in the supported CPUID 0xD");
	}
	xsave_guest_create(_metadata, &g, c);
	OP_OK(&g, OP_XSETBV, 0, x);
	EXPECT_EQ(x, edx_eax(OP_OK(&g, OP_XGETBV, 0, 0)));
	guest_destroy(&g);

	e = cpuid_entry(c, 0xd, 0);
	e->eax &= ~XFEATURE_YMM;
	cpuid_clear(c, 1, 0, ECX, 28);	/* AVX */
	xsave_guest_create(_metadata, &g, c);
	expect_xsetbv_gp(_metadata, &g, 0, x);
	guest_destroy(&g);
	free(c);
}

/*
 * __kvm_set_xcr(): bits no guest CPUID can allow: bit 8 (PT, a supervisor
 * state: never in XCR0) and bit 32; and BNDREGS without BNDCSR (refused by
 * the MPX pairing rule, or as unsupported without MPX).
 */
TEST(xsetbv_of_reserved_bits_is_gp)
{
	struct kvm_cpuid2 *c = supported_cpuid_with_xsave();
	struct guest g;

	xsave_guest_create(_metadata, &g, c);
	expect_xsetbv_gp(_metadata, &g, 0, XFEATURE_FP | 1ULL << 8);
	expect_xsetbv_gp(_metadata, &g, 0, XFEATURE_FP | 1ULL << 32);
	expect_xsetbv_gp(_metadata, &g, 0, XFEATURE_FP | 1ULL << 63);
	expect_xsetbv_gp(_metadata, &g, 0, XFEATURE_FP | XFEATURE_SSE | 1ULL << 3);
	guest_destroy(&g);
	free(c);
}

/*
 * XSETBV at CPL 3 is #GP(0): the CPU checks CPL before the intercept, and
 * kvm_emulate_xsetbv() refuses a CPL other than 0 too. (If it did not fault,
 * the guest's UD2 after it reports #UD.)
 */
TEST(xsetbv_at_cpl3_is_gp)
{
	struct kvm_cpuid2 *c = supported_cpuid_with_xsave();
	struct guest g;

	xsave_guest_create(_metadata, &g, c);
	OP_FAULT(&g, OP_XSETBV_CPL3, 0, XFEATURE_FP, VEC_GP);
	/* Back at CPL 0, XCR0 unchanged. */
	EXPECT_EQ(XFEATURE_FP, edx_eax(OP_OK(&g, OP_XGETBV, 0, 0)));
	guest_destroy(&g);
	free(c);
}

/*
 * With CR4.OSXSAVE clear, XSETBV and XGETBV are #UD, raised by the CPU
 * before any intercept ("#UD due to CR4.OSXSAVE=0 has priority over the
 * intercept", kvm_emulate_xsetbv(), which does not check CR4 itself).
 * QEMU's emulated SVM checks the XSETBV intercept first, so there KVM
 * emulates the XSETBV (of FP: accepted); XGETBV is never intercepted.
 */
static void expect_xsetbv_ud(struct __test_metadata *_metadata,
			     struct guest *g)
{
	struct op_res r = guest_op(g, OP_XSETBV, 0, XFEATURE_FP);

	if (host_is_qemu_tcg_svm()) {
		TH_LOG("QEMU TCG SVM: XSETBV gave %s", status_name(r.status));
		EXPECT_TRUE(r.status == 0 || r.status == (0x100 | VEC_UD));
	} else {
		EXPECT_EQ(0x100 | VEC_UD, r.status)
			TH_LOG("XSETBV: %s, expected #UD", status_name(r.status));
	}
}

TEST(xsetbv_with_cr4_osxsave_clear_is_ud)
{
	struct kvm_cpuid2 *c = supported_cpuid_with_xsave();
	struct guest g;

	guest_create(_metadata, &g, c);
	expect_xsetbv_ud(_metadata, &g);
	OP_FAULT(&g, OP_XGETBV, 0, 0, VEC_UD);
	/* and again after the guest cleared it itself */
	OP_OK(&g, OP_CR4_SET, 0, X86_CR4_OSXSAVE);
	OP_OK(&g, OP_XGETBV, 0, 0);
	OP_OK(&g, OP_CR4_CLEAR, 0, X86_CR4_OSXSAVE);
	expect_xsetbv_ud(_metadata, &g);
	OP_FAULT(&g, OP_XGETBV, 0, 0, VEC_UD);
	guest_destroy(&g);
	free(c);
}

/* =============================== EFER =============================== */

/*
 * set_efer(): a guest write that changes EFER.LME while CR0.PG = 1 is #GP;
 * one that changes another bit (SCE) is accepted, and LMA stays as the vCPU
 * has it.
 */
TEST(guest_efer_lme_change_with_paging_on_is_gp)
{
	struct guest g;
	uint64_t efer;

	guest_create(_metadata, &g, NULL);
	efer = guest_rdmsr(&g, MSR_EFER);
	EXPECT_EQ(EFER_LME | EFER_LMA, efer & (EFER_LME | EFER_LMA));
	guest_wrmsr(&g, MSR_EFER, efer | EFER_SCE);
	EXPECT_EQ(efer | EFER_SCE, guest_rdmsr(&g, MSR_EFER));
	OP_FAULT(&g, OP_WRMSR, MSR_EFER, (efer | EFER_SCE) & ~EFER_LME, VEC_GP);
	EXPECT_EQ(efer | EFER_SCE, guest_rdmsr(&g, MSR_EFER));
	EXPECT_EQ(efer | EFER_SCE, host_rdmsr(&g.v, MSR_EFER));
	guest_destroy(&g);
}

/*
 * set_efer(): a bit outside kvm_caps.supported_efer_bits is #GP for the
 * guest: bits 1-7 and 63 are reserved on AMD and Intel.
 */
TEST(guest_efer_reserved_bit_is_gp)
{
	struct guest g;
	uint64_t efer;

	guest_create(_metadata, &g, NULL);
	efer = guest_rdmsr(&g, MSR_EFER);
	OP_FAULT(&g, OP_WRMSR, MSR_EFER, efer | 1ULL << 1, VEC_GP);
	OP_FAULT(&g, OP_WRMSR, MSR_EFER, efer | 1ULL << 2, VEC_GP);
	OP_FAULT(&g, OP_WRMSR, MSR_EFER, efer | 1ULL << 7, VEC_GP);
	OP_FAULT(&g, OP_WRMSR, MSR_EFER, efer | 1ULL << 63, VEC_GP);
	EXPECT_EQ(efer, guest_rdmsr(&g, MSR_EFER));
	guest_destroy(&g);
}

/*
 * set_efer(): a host-initiated write skips the guest's checks (the LME
 * change under paging, the guest's CPUID): KVM_SET_MSRS clearing LME of a
 * vCPU in long mode is accepted. LMA is never taken from the write but kept
 * from the vCPU (efer &= ~EFER_LMA; efer |= vcpu->arch.efer & EFER_LMA).
 */
TEST(kvm_set_msrs_efer_may_change_lme_with_paging_on)
{
	struct guest g;

	guest_create(_metadata, &g, NULL);
	EXPECT_EQ(EFER_LME | EFER_LMA, host_rdmsr(&g.v, MSR_EFER) &
					(EFER_LME | EFER_LMA));
	host_wrmsr(&g.v, MSR_EFER, 0);
	EXPECT_EQ(EFER_LMA, host_rdmsr(&g.v, MSR_EFER));
	guest_destroy(&g);
}

/* ... and in a real-mode vCPU, LMA written by the host is dropped. */
TEST(kvm_set_msrs_efer_ignores_lma)
{
	struct vm vm;
	struct vcpu v;

	vm_create(_metadata, &vm);
	vcpu_create(_metadata, &vm, 0, &v);
	vcpu_set_supported_cpuid(_metadata, &vm, &v);
	EXPECT_EQ(0ULL, host_rdmsr(&v, MSR_EFER));
	host_wrmsr(&v, MSR_EFER, EFER_LME | EFER_LMA);
	EXPECT_EQ(EFER_LME, host_rdmsr(&v, MSR_EFER));
	vcpu_destroy(&vm, &v);
	vm_destroy(&vm);
}

/*
 * set_efer(): the supported_efer_bits check applies to host writes too:
 * KVM_SET_MSRS of a reserved bit writes 0 MSRs and changes nothing.
 */
TEST(kvm_set_msrs_efer_reserved_bit_is_refused)
{
	struct guest g;
	uint64_t efer;

	guest_create(_metadata, &g, NULL);
	efer = host_rdmsr(&g.v, MSR_EFER);
	EXPECT_EQ(0, kvm_set_msr(&g.v, MSR_EFER, efer | 1ULL << 2));
	EXPECT_EQ(0, kvm_set_msr(&g.v, MSR_EFER, efer | 1ULL << 63));
	EXPECT_EQ(efer, host_rdmsr(&g.v, MSR_EFER));
	guest_destroy(&g);
}

/* ================== exception frames: real vs protected ================== */

#define GP_HANDLER_GPA 0x9000UL

/*
 * Real mode: the IVT's #GP vector points at a handler that reports SP and the
 * frame; RDMSR of a non-existent MSR makes KVM inject #GP
 * (kvm_emulate_rdmsr() -> kvm_inject_gp()), whose error code
 * kvm_inject_exception() drops outside protected mode.
 */
GUEST_CODE(rm_gp, 16,
	"mov word ptr [13 * 4], 0x9000\n"
	"mov word ptr [13 * 4 + 2], 0\n"
	"mov sp, 0x7000\n"
	"mov ecx, 0xdeadbeef\n"
	".globl rm_gp_insn\n"
	"rm_gp_insn:\n"
	"rdmsr\n"
	"hlt\n");
extern const uint8_t rm_gp_insn[];

GUEST_CODE(rm_gp_handler, 16,
	"mov ax, sp\n"
	"out 0x10, ax\n"
	"mov bp, sp\n"
	"mov ax, [bp]\n"		/* IP */
	"out 0x11, ax\n"
	"mov ax, [bp + 2]\n"		/* CS */
	"out 0x12, ax\n"
	"hlt\n");

TEST(real_mode_gp_pushes_no_error_code)
{
	struct vm vm;
	struct vcpu v;

	vm_create(_metadata, &vm);
	vcpu_create(_metadata, &vm, 0, &v);
	vcpu_setup_real(_metadata, &v);
	vm_load_code(&vm, rm_gp);
	vm_load(&vm, GP_HANDLER_GPA, rm_gp_handler, rm_gp_handler_end);
	/* FLAGS, CS, IP: 6 bytes */
	EXPECT_EQ(0x7000 - 6, run_to_out(&v, 2, 0x10));
	EXPECT_EQ(CODE_GPA + (rm_gp_insn - rm_gp), run_to_out(&v, 2, 0x11));
	EXPECT_EQ(0, run_to_out(&v, 2, 0x12));
	ASSERT_EXIT(&v, KVM_EXIT_HLT);
	vcpu_destroy(&vm, &v);
	vm_destroy(&vm);
}

/* The same in 32-bit protected mode: EFLAGS, CS, EIP and the error code. */
GUEST_CODE(pm_gp, 32,
	"mov ecx, 0xdeadbeef\n"
	".globl pm_gp_insn\n"
	"pm_gp_insn:\n"
	"rdmsr\n"
	"hlt\n");
extern const uint8_t pm_gp_insn[];

GUEST_CODE(pm_gp_handler, 32,
	"mov eax, esp\n"
	"out 0x10, eax\n"
	"mov eax, [esp]\n"		/* error code */
	"out 0x11, eax\n"
	"mov eax, [esp + 4]\n"		/* EIP */
	"out 0x12, eax\n"
	"mov eax, [esp + 8]\n"		/* CS */
	"out 0x13, eax\n"
	"hlt\n");

TEST(protected_mode_gp_pushes_an_error_code)
{
	uint32_t *gate = NULL;
	struct kvm_sregs sregs;
	struct vm vm;
	struct vcpu v;

	vm_create(_metadata, &vm);
	vcpu_create(_metadata, &vm, 0, &v);
	vcpu_setup_protected(_metadata, &vm, &v, 0);
	vcpu_get_sregs(_metadata, &v, &sregs);
	sregs.idt.base = IDT_GPA;
	sregs.idt.limit = 256 * 8 - 1;
	vcpu_set_sregs(_metadata, &v, &sregs);
	memset(vm.mem + IDT_GPA, 0, 256 * 8);
	gate = (uint32_t *)(vm.mem + IDT_GPA + VEC_GP * 8);
	gate[0] = (GP_HANDLER_GPA & 0xffff) | SEL_CODE32 << 16;
	gate[1] = (GP_HANDLER_GPA & 0xffff0000) | 0x8e00;	/* 32-bit interrupt gate */
	vm_load_code(&vm, pm_gp);
	vm_load(&vm, GP_HANDLER_GPA, pm_gp_handler, pm_gp_handler_end);
	/* EFLAGS, CS, EIP, error code: 16 bytes */
	EXPECT_EQ(STACK_TOP - 16, run_to_out(&v, 4, 0x10));
	EXPECT_EQ(0, run_to_out(&v, 4, 0x11));
	EXPECT_EQ(CODE_GPA + (pm_gp_insn - pm_gp), run_to_out(&v, 4, 0x12));
	EXPECT_EQ(SEL_CODE32, run_to_out(&v, 4, 0x13));
	ASSERT_EXIT(&v, KVM_EXIT_HLT);
	vcpu_destroy(&vm, &v);
	vm_destroy(&vm);
}

/* ========================= IA32_MISC_ENABLE ========================= */

/* kvm_vcpu_reset(): PEBS_UNAVAIL | BTS_UNAVAIL, for the host and the guest. */
TEST(misc_enable_is_bts_pebs_unavailable_after_vcpu_creation)
{
	struct guest g;

	guest_create(_metadata, &g, NULL);
	EXPECT_EQ(0x1800ULL, host_rdmsr(&g.v, MSR_IA32_MISC_ENABLE));
	EXPECT_EQ(0x1800ULL, guest_rdmsr(&g, MSR_IA32_MISC_ENABLE));
	guest_destroy(&g);
}

/*
 * kvm_set_msr_common(): bits 11 and 12 (MSR_IA32_MISC_ENABLE_PMU_RO_MASK)
 * are read-only for the guest: a write that changes either is #GP.
 */
TEST(guest_misc_enable_write_changing_bit_11_or_12_is_gp)
{
	struct guest g;

	guest_create(_metadata, &g, NULL);
	OP_FAULT(&g, OP_WRMSR, MSR_IA32_MISC_ENABLE, MISC_ENABLE_PEBS_UNAVAIL, VEC_GP);
	OP_FAULT(&g, OP_WRMSR, MSR_IA32_MISC_ENABLE, MISC_ENABLE_BTS_UNAVAIL, VEC_GP);
	OP_FAULT(&g, OP_WRMSR, MSR_IA32_MISC_ENABLE, 0, VEC_GP);
	EXPECT_EQ(0x1800ULL, guest_rdmsr(&g, MSR_IA32_MISC_ENABLE));
	guest_destroy(&g);
}

/*
 * Other bits are the guest's (with the MISC_ENABLE_NO_MWAIT quirk on, the
 * default, even bit 18): they read back, from the guest and the host.
 */
TEST(guest_misc_enable_write_of_other_bits_reads_back)
{
	uint64_t v = 0x1800 | MISC_ENABLE_FAST_STRING | MISC_ENABLE_PREFETCH_DISABLE;
	struct guest g;

	guest_create(_metadata, &g, NULL);
	guest_wrmsr(&g, MSR_IA32_MISC_ENABLE, v);
	EXPECT_EQ(v, guest_rdmsr(&g, MSR_IA32_MISC_ENABLE));
	EXPECT_EQ(v, host_rdmsr(&g.v, MSR_IA32_MISC_ENABLE));
	guest_wrmsr(&g, MSR_IA32_MISC_ENABLE, 0x1800);
	EXPECT_EQ(0x1800ULL, guest_rdmsr(&g, MSR_IA32_MISC_ENABLE));
	guest_destroy(&g);
}

/*
 * kvm_set_msr_common(): EMON (bit 7) is read-only without faulting: a guest
 * write keeps the old value of the bit.
 */
TEST(guest_misc_enable_write_of_emon_is_ignored)
{
	struct guest g;

	guest_create(_metadata, &g, NULL);
	guest_wrmsr(&g, MSR_IA32_MISC_ENABLE, 0x1800 | MISC_ENABLE_EMON);
	EXPECT_EQ(0x1800ULL, guest_rdmsr(&g, MSR_IA32_MISC_ENABLE));
	host_wrmsr(&g.v, MSR_IA32_MISC_ENABLE, 0x1800 | MISC_ENABLE_EMON);
	guest_wrmsr(&g, MSR_IA32_MISC_ENABLE, 0x1800);
	EXPECT_EQ(0x1800 | MISC_ENABLE_EMON, guest_rdmsr(&g, MSR_IA32_MISC_ENABLE));
	guest_destroy(&g);
}

/*
 * The host may write any value (the read-only checks are !host_initiated),
 * which the guest then reads.
 */
TEST(kvm_set_msrs_misc_enable_may_set_any_bit)
{
	struct guest g;

	guest_create(_metadata, &g, NULL);
	host_wrmsr(&g.v, MSR_IA32_MISC_ENABLE, 0);
	EXPECT_EQ(0ULL, host_rdmsr(&g.v, MSR_IA32_MISC_ENABLE));
	EXPECT_EQ(0ULL, guest_rdmsr(&g, MSR_IA32_MISC_ENABLE));
	host_wrmsr(&g.v, MSR_IA32_MISC_ENABLE, MISC_ENABLE_EMON | MISC_ENABLE_BTS_UNAVAIL);
	EXPECT_EQ(MISC_ENABLE_EMON | MISC_ENABLE_BTS_UNAVAIL,
		  guest_rdmsr(&g, MSR_IA32_MISC_ENABLE));
	guest_destroy(&g);
}

/* ============================= IA32_TSC ============================= */

/*
 * KVM_SET_MSRS of IA32_TSC (kvm_synchronize_tsc()) sets the guest's TSC:
 * RDTSC then reads at least that, and not far beyond (2^40 cycles: minutes
 * at any clock rate, for slow emulation).
 */
TEST(kvm_set_msrs_tsc_sets_the_guests_tsc)
{
	const uint64_t t = 1ULL << 50;
	struct guest g;
	uint64_t tsc;

	guest_create(_metadata, &g, NULL);
	host_wrmsr(&g.v, MSR_IA32_TSC, t);
	tsc = edx_eax(OP_OK(&g, OP_RDTSC, 0, 0));
	EXPECT_LE(t, tsc);
	EXPECT_GT(t + (1ULL << 40), tsc);
	tsc = host_rdmsr(&g.v, MSR_IA32_TSC);
	EXPECT_LE(t, tsc);
	EXPECT_GT(t + (1ULL << 40), tsc);
	guest_destroy(&g);
}

/*
 * A guest WRMSR of IA32_TSC (kvm_set_msr_common(): adjust_tsc_offset_guest())
 * moves its TSC there, backwards too; KVM_GET_MSRS reads the same clock.
 */
TEST(guest_wrmsr_tsc_sets_the_guests_tsc)
{
	const uint64_t t1 = 1ULL << 52, t2 = 1ULL << 48;
	struct guest g;
	uint64_t tsc;

	guest_create(_metadata, &g, NULL);
	guest_wrmsr(&g, MSR_IA32_TSC, t1);
	tsc = edx_eax(OP_OK(&g, OP_RDTSC, 0, 0));
	EXPECT_LE(t1, tsc);
	EXPECT_GT(t1 + (1ULL << 40), tsc);
	guest_wrmsr(&g, MSR_IA32_TSC, t2);
	tsc = edx_eax(OP_OK(&g, OP_RDTSC, 0, 0));
	EXPECT_LE(t2, tsc);
	EXPECT_GT(t2 + (1ULL << 40), tsc);
	tsc = host_rdmsr(&g.v, MSR_IA32_TSC);
	EXPECT_LE(t2, tsc);
	EXPECT_GT(t2 + (1ULL << 40), tsc);
	guest_destroy(&g);
}

/* ============================= IA32_PAT ============================= */

/* kvm_vcpu_reset(): MSR_IA32_CR_PAT_DEFAULT (WB, WT, UC-, UC, twice). */
TEST(pat_after_vcpu_creation_is_the_reset_value)
{
	struct guest g;

	guest_create(_metadata, &g, NULL);
	EXPECT_EQ(PAT_RESET, host_rdmsr(&g.v, MSR_IA32_CR_PAT));
	EXPECT_EQ(PAT_RESET, guest_rdmsr(&g, MSR_IA32_CR_PAT));
	guest_destroy(&g);
}

/*
 * kvm_pat_valid(): each byte must be a memory type 0, 1, 4, 5, 6 or 7; a
 * guest write of anything else (2, 3, 8 in a byte) is #GP.
 */
TEST(guest_pat_write_of_an_invalid_memory_type_is_gp)
{
	struct guest g;

	guest_create(_metadata, &g, NULL);
	OP_FAULT(&g, OP_WRMSR, MSR_IA32_CR_PAT, (PAT_RESET & ~0xffULL) | 2, VEC_GP);
	OP_FAULT(&g, OP_WRMSR, MSR_IA32_CR_PAT, PAT_RESET | 3ULL << 56, VEC_GP);
	OP_FAULT(&g, OP_WRMSR, MSR_IA32_CR_PAT, PAT_RESET | 8ULL << 24, VEC_GP);
	EXPECT_EQ(PAT_RESET, guest_rdmsr(&g, MSR_IA32_CR_PAT));
	guest_destroy(&g);
}

/* The same check for the host: KVM_SET_MSRS writes 0 MSRs. */
TEST(kvm_set_msrs_pat_of_an_invalid_memory_type_is_refused)
{
	struct guest g;

	guest_create(_metadata, &g, NULL);
	EXPECT_EQ(0, kvm_set_msr(&g.v, MSR_IA32_CR_PAT, (PAT_RESET & ~0xffULL) | 2));
	EXPECT_EQ(0, kvm_set_msr(&g.v, MSR_IA32_CR_PAT, PAT_RESET | 0x80ULL << 40));
	EXPECT_EQ(PAT_RESET, host_rdmsr(&g.v, MSR_IA32_CR_PAT));
	guest_destroy(&g);
}

/* A valid PAT written by the guest or the host reads back on both sides. */
TEST(pat_valid_value_reads_back_in_guest_and_host)
{
	const uint64_t p1 = 0x0105040600070406ULL, p2 = 0x0706050401000604ULL;
	struct guest g;

	guest_create(_metadata, &g, NULL);
	guest_wrmsr(&g, MSR_IA32_CR_PAT, p1);
	EXPECT_EQ(p1, guest_rdmsr(&g, MSR_IA32_CR_PAT));
	EXPECT_EQ(p1, host_rdmsr(&g.v, MSR_IA32_CR_PAT));
	host_wrmsr(&g.v, MSR_IA32_CR_PAT, p2);
	EXPECT_EQ(p2, guest_rdmsr(&g, MSR_IA32_CR_PAT));
	guest_destroy(&g);
}

/* ========================== IA32_APIC_BASE ========================== */

/*
 * kvm_lapic_reset(): APIC_DEFAULT_PHYS_BASE | ENABLE, with BSP for the reset
 * BSP (kvm_vcpu_is_reset_bsp(): vCPU id 0 unless KVM_SET_BOOT_CPU_ID), even
 * without an in-kernel APIC. The guest's RDMSR reads the same.
 */
TEST(apic_base_after_vcpu_creation_has_bsp_for_vcpu_0_only)
{
	struct kvm_cpuid2 *c;
	struct vm vm;
	struct vcpu v0, v1;

	vm_create(_metadata, &vm);
	vcpu_create(_metadata, &vm, 0, &v0);
	vcpu_create(_metadata, &vm, 1, &v1);
	EXPECT_EQ(0xfee00900ULL, host_rdmsr(&v0, MSR_IA32_APICBASE));
	EXPECT_EQ(0xfee00800ULL, host_rdmsr(&v1, MSR_IA32_APICBASE));
	c = supported_cpuid(_metadata, vm.sys);
	ops_vcpu_setup(_metadata, &vm, &v0, c);
	ops_vcpu_setup(_metadata, &vm, &v1, c);
	EXPECT_EQ(0xfee00900ULL,
		  edx_eax(OP_OK_V(&vm, &v0, OP_RDMSR, MSR_IA32_APICBASE, 0)));
	EXPECT_EQ(0xfee00800ULL,
		  edx_eax(OP_OK_V(&vm, &v1, OP_RDMSR, MSR_IA32_APICBASE, 0)));
	free(c);
	vcpu_destroy(&vm, &v1);
	vcpu_destroy(&vm, &v0);
	vm_destroy(&vm);
}

TEST_HARNESS_MAIN
