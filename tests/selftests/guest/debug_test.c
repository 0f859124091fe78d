// SPDX-License-Identifier: GPL-2.0
/*
 * Guest debugging: KVM_SET_GUEST_DEBUG (single step, software and hardware
 * breakpoints, #DB/#BP injection, BLOCKIRQ) and the guest's own debug
 * registers and trap flag. Linux KVM is the oracle (x86.c
 * kvm_arch_vcpu_ioctl_set_guest_debug, kvm_skip_emulated_instruction,
 * x86_emulate_instruction; svm.c db/bp_interception; vmx.c
 * handle_exception_nmi); each test names the rule it checks.
 *
 * The guests run in 64-bit mode (vcpu_setup_long) with IDT stubs that
 * report through OUTs: PORT_VEC the vector, PORT_RIP the RIP in the
 * exception frame, PORT_DR6 the guest's DR6.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <linux/hw_breakpoint.h>
#include <linux/perf_event.h>

#include "vm_lib.h"

#define PORT_MAIN	0x10
#define PORT_MAIN2	0x11
#define PORT_VEC	0x40
#define PORT_RIP	0x44
#define PORT_DR6	0x45

#define HANDLER_GPA	(CODE_GPA + 0x1000)
#define DB_HANDLER_GPA	(CODE_GPA + 0x2000)

#define X86_RFLAGS_TF	(1UL << 8)
#define X86_RFLAGS_IF	(1UL << 9)

#define DR6_INIT	0xffff0ff0UL
#define DR6_BS_EXIT	0xffff4ff0UL	/* a single step, as KVM reports it */

#define VALID_MASK	0x1f0003u	/* KVM_GUESTDBG_VALID_MASK */

/* --- guest code --- */

/* A few instructions, an OUT, an MMIO read and write, another OUT, HLT. */
GUEST_CODE(step_code, 64,
	"nop\n"
	".globl step_1\n step_1:\n"
	"mov eax, 1\n"
	".globl step_2\n step_2:\n"
	"add eax, 2\n"
	".globl step_3\n step_3:\n"
	"out 0x10, eax\n"
	".globl step_4\n step_4:\n"
	"mov ebx, 0xd0000000\n"		/* MMIO_GPA, identity-mapped */
	".globl step_5\n step_5:\n"
	"mov eax, [rbx]\n"
	".globl step_6\n step_6:\n"
	"mov [rbx], eax\n"
	".globl step_7\n step_7:\n"
	"out 0x11, eax\n"
	".globl step_8\n step_8:\n"
	"hlt\n"
	".globl step_9\n step_9:\n"
	"out 0x10, eax\n"
	".globl step_10\n step_10:\n"
	"jmp step_9\n");
extern const uint8_t step_1[], step_2[], step_3[], step_4[], step_5[],
	step_6[], step_7[], step_8[], step_9[], step_10[];
#define STEP_GPA(l) (CODE_GPA + (uint64_t)((l) - step_code))

/* INT3, then an OUT; a data write; an OUT. */
GUEST_CODE(bp_code, 64,
	"int3\n"
	".globl bp_1\n bp_1:\n"
	"out 0x10, eax\n"
	".globl bp_2\n bp_2:\n"
	"mov dword ptr [rbx], 5\n"
	".globl bp_3\n bp_3:\n"
	"out 0x11, eax\n"
	"hlt\n");
extern const uint8_t bp_1[], bp_2[], bp_3[];
#define BP_GPA(l) (CODE_GPA + (uint64_t)((l) - bp_code))

/* Reports the vector (patched immediate) and the frame's RIP. */
GUEST_CODE(vec_stub, 64,
	"mov eax, 0x7fffffff\n"
	"out 0x40, eax\n"
	"mov rax, [rsp]\n"
	"out 0x44, eax\n"
	"iretq\n");

/*
 * The guest's #DB handler: reports DR6 and the frame's RIP, clears TF in
 * the frame and disarms DR7 (a code breakpoint would fault again).
 */
GUEST_CODE(db_handler, 64,
	"mov rax, dr6\n"
	"out 0x45, eax\n"
	"mov rax, [rsp]\n"
	"out 0x44, eax\n"
	"and qword ptr [rsp + 16], -257\n"
	"mov eax, 0x400\n"
	"mov dr7, rax\n"
	"iretq\n");

/*
 * The guest arms its own breakpoints: DR0 on own_hit (execute), DR1 on the
 * dword at RBX (write); then runs into both.
 */
GUEST_CODE(own_bp_code, 64,
	"lea rax, [rip + own_hit]\n"
	"mov dr0, rax\n"
	"mov dr1, rbx\n"
	"mov eax, 0x00d00405\n"	/* L0 exec, L1 write 4 bytes */
	"mov dr7, rax\n"
	"nop\n"
	".globl own_hit\n own_hit:\n"
	"out 0x10, eax\n"
	"mov eax, 0x00d00404\n"	/* L1 only */
	"mov dr7, rax\n"
	"mov dword ptr [rbx], 7\n"
	".globl own_after_write\n own_after_write:\n"
	"out 0x11, eax\n"
	"hlt\n");
extern const uint8_t own_hit[], own_after_write[];
#define OWN_GPA(l) (CODE_GPA + (uint64_t)((l) - own_bp_code))

/* The guest sets its own TF; the trap comes after the CPUID. */
GUEST_CODE(own_tf_code, 64,
	"pushfq\n"
	"or qword ptr [rsp], 0x100\n"
	"popfq\n"
	"cpuid\n"
	".globl own_tf_after\n own_tf_after:\n"
	"out 0x10, eax\n"
	"hlt\n");
extern const uint8_t own_tf_after[];

/* Interrupts on, then NOPs. */
GUEST_CODE(nops_code, 64,
	"nop\n"
	".globl nops_1\n nops_1:\n"
	"nop\n"
	"nop\n"
	"out 0x10, eax\n"
	"hlt\n");
extern const uint8_t nops_1[];

_Static_assert(PORT_MAIN == 0x10 && PORT_MAIN2 == 0x11 && PORT_VEC == 0x40 &&
	       PORT_RIP == 0x44 && PORT_DR6 == 0x45, "ports in guest code");

/* --- helpers --- */

static void vm_set_stub(struct vm *vm, int v)
{
	uint64_t gpa = HANDLER_GPA + v * 32;
	uint32_t imm = v;

	vm_load(vm, gpa, vec_stub, vec_stub_end);
	memcpy(vm->mem + gpa + 1, &imm, sizeof(imm));
	vm_set_idt_gate64(vm, v, gpa);
}

static int set_guest_debug(struct vcpu *vcpu, uint32_t control,
			   const uint64_t *dr)
{
	struct kvm_guest_debug d;

	memset(&d, 0, sizeof(d));
	d.control = control;
	if (dr)
		memcpy(d.arch.debugreg, dr, sizeof(d.arch.debugreg));
	return ioctl(vcpu->fd, KVM_SET_GUEST_DEBUG, &d);
}

#define SET_GUEST_DEBUG(vcpu, control, dr)				\
	ASSERT_EQ(0, set_guest_debug(vcpu, control, dr))		\
		TH_LOG("KVM_SET_GUEST_DEBUG 0x%x: %s", (control),	\
		       strerror(errno))

/* Runs to a KVM_EXIT_DEBUG of @ex at @pc_. */
#define EXPECT_DEBUG(vcpu, ex, pc_) do {				\
	ASSERT_EXIT(vcpu, KVM_EXIT_DEBUG);				\
	EXPECT_EQ((uint32_t)(ex), (vcpu)->run->debug.arch.exception);	\
	EXPECT_EQ((uint64_t)(pc_), (vcpu)->run->debug.arch.pc)		\
		TH_LOG("pc 0x%llx, expected 0x%llx",			\
		       (unsigned long long)(vcpu)->run->debug.arch.pc,	\
		       (unsigned long long)(pc_));			\
} while (0)

/* One single step from the current RIP, as QEMU asks for each. */
#define STEP_TO(vcpu, pc_) do {						\
	SET_GUEST_DEBUG(vcpu, KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_SINGLESTEP, NULL); \
	EXPECT_DEBUG(vcpu, 1, pc_);					\
	EXPECT_EQ(DR6_BS_EXIT, (vcpu)->run->debug.arch.dr6);		\
} while (0)

/*
 * Bochs 2.7's VT-x raises TF's single-step trap after the instruction that
 * set TF (VMRESUME itself, IRET) instead of after the next one, so the
 * step exits at the RIP it started from, on kvm_intel as on rkvm. Where
 * that happens in the Bochs leg (RKVM_TEST_SPIN_IF set, see
 * lifecycle_test.c) a single-step test skips.
 */
#define BOCHS_EARLY_STEP "Bochs' VT-x traps TF right after VM entry or " \
	"IRET, before the next instruction ran (kvm_intel too)"
static int step_trapped_early(struct vcpu *v, uint64_t start)
{
	return v->run->exit_reason == KVM_EXIT_DEBUG &&
	       v->run->debug.arch.pc == start && getenv("RKVM_TEST_SPIN_IF");
}

/* The first step from @start: skips where Bochs traps early. */
#define FIRST_STEP_TO(vcpu, start, pc_) do {				\
	SET_GUEST_DEBUG(vcpu, KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_SINGLESTEP, NULL); \
	vcpu_run(_metadata, vcpu);					\
	if (step_trapped_early(vcpu, start))				\
		SKIP(return, BOCHS_EARLY_STEP);				\
	ASSERT_EQ(KVM_EXIT_DEBUG, (vcpu)->run->exit_reason)		\
		TH_LOG("exit %s", exit_reason_name((vcpu)->run->exit_reason)); \
	EXPECT_EQ(1, (vcpu)->run->debug.arch.exception);		\
	EXPECT_EQ((uint64_t)(pc_), (vcpu)->run->debug.arch.pc);		\
	EXPECT_EQ(DR6_BS_EXIT, (vcpu)->run->debug.arch.dr6);		\
} while (0)

#define EXPECT_OUT(vcpu, port, val) do {				\
	uint32_t __got = run_to_out(vcpu, 4, port);			\
	EXPECT_EQ((uint32_t)(val), __got)				\
		TH_LOG("OUT 0x%x: 0x%x, expected 0x%x", port, __got,	\
		       (uint32_t)(val));				\
} while (0)

static uint64_t vcpu_rip(struct __test_metadata *_metadata, struct vcpu *vcpu)
{
	struct kvm_regs regs;

	vcpu_get_regs(_metadata, vcpu, &regs);
	return regs.rip;
}

static uint64_t vcpu_rflags(struct __test_metadata *_metadata,
			    struct vcpu *vcpu)
{
	struct kvm_regs regs;

	vcpu_get_regs(_metadata, vcpu, &regs);
	return regs.rflags;
}

FIXTURE(dbg) {
	struct vm vm;
	struct vcpu vcpu;
};

FIXTURE_SETUP(dbg)
{
	vm_create(_metadata, &self->vm);
	vcpu_create(_metadata, &self->vm, 0, &self->vcpu);
	vcpu_setup_long(_metadata, &self->vm, &self->vcpu);
	for (int v = 0; v < 32; v++)
		vm_set_stub(&self->vm, v);
	vm_set_stub(&self->vm, 0x40);
}

FIXTURE_TEARDOWN(dbg)
{
	vcpu_destroy(&self->vm, &self->vcpu);
	vm_destroy(&self->vm);
}

static void set_rbx(struct __test_metadata *_metadata, struct vcpu *vcpu,
		    uint64_t v)
{
	struct kvm_regs regs;

	vcpu_get_regs(_metadata, vcpu, &regs);
	regs.rbx = v;
	vcpu_set_regs(_metadata, vcpu, &regs);
}

/* ========================== capabilities ========================== */

/* x86.c kvm_vm_ioctl_check_extension(). */
TEST(capabilities)
{
	int sys = open_kvm_dev(_metadata);
	int vm = create_vm(_metadata, sys);

	EXPECT_EQ(1, ioctl(sys, KVM_CHECK_EXTENSION, KVM_CAP_SET_GUEST_DEBUG));
	EXPECT_EQ(1, ioctl(sys, KVM_CHECK_EXTENSION, KVM_CAP_X86_ROBUST_SINGLESTEP));
	EXPECT_EQ(VALID_MASK, ioctl(sys, KVM_CHECK_EXTENSION, KVM_CAP_SET_GUEST_DEBUG2));
	EXPECT_EQ(VALID_MASK, ioctl(vm, KVM_CHECK_EXTENSION, KVM_CAP_SET_GUEST_DEBUG2));
	close(vm);
	close(sys);
}

/* ========================== single step ========================== */

/*
 * Each step is one KVM_EXIT_DEBUG: #DB, DR6 = BS, PC the next instruction.
 * The TF KVM sets is hidden from KVM_GET_REGS. An OUT exits to userspace
 * first and reports its step when the next KVM_RUN completes it
 * (kvm_skip_emulated_instruction); so does an MMIO read.
 */
TEST_F(dbg, single_step_through_instructions_io_and_mmio_read)
{
	struct vcpu *v = &self->vcpu;
	struct kvm_regs regs;

	vm_load_code(&self->vm, step_code);
	FIRST_STEP_TO(v, CODE_GPA, STEP_GPA(step_1));
	EXPECT_EQ(0x400, v->run->debug.arch.dr7);
	EXPECT_EQ(0, vcpu_rflags(_metadata, v) & X86_RFLAGS_TF);
	EXPECT_EQ(STEP_GPA(step_1), vcpu_rip(_metadata, v));
	STEP_TO(v, STEP_GPA(step_2));
	STEP_TO(v, STEP_GPA(step_3));
	SET_GUEST_DEBUG(v, KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_SINGLESTEP, NULL);
	EXPECT_OUT(v, PORT_MAIN, 3);
	EXPECT_DEBUG(v, 1, STEP_GPA(step_4));
	EXPECT_EQ(DR6_BS_EXIT, v->run->debug.arch.dr6);
	STEP_TO(v, STEP_GPA(step_5));
	SET_GUEST_DEBUG(v, KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_SINGLESTEP, NULL);
	run_to_mmio_read(v, MMIO_GPA, 4, 0x1234);
	EXPECT_DEBUG(v, 1, STEP_GPA(step_6));
	EXPECT_EQ(DR6_BS_EXIT, v->run->debug.arch.dr6);
	vcpu_get_regs(_metadata, v, &regs);
	EXPECT_EQ(0x1234, regs.rax);
	EXPECT_EQ(0, regs.rflags & X86_RFLAGS_TF);
}

/*
 * An MMIO write: the emulator writes RFLAGS back at the new RIP, which
 * drops KVM's TF, and the write's completion reports no step
 * (complete_emulated_mmio's FIXME): the guest runs on to the next exit.
 */
TEST_F(dbg, single_step_over_mmio_write_runs_on)
{
	struct vcpu *v = &self->vcpu;

	vm_load_code(&self->vm, step_code);
	vcpu_set_rip(_metadata, v, STEP_GPA(step_4));
	FIRST_STEP_TO(v, STEP_GPA(step_4), STEP_GPA(step_5));
	SET_GUEST_DEBUG(v, KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_SINGLESTEP, NULL);
	run_to_mmio_read(v, MMIO_GPA, 4, 0x55);
	EXPECT_DEBUG(v, 1, STEP_GPA(step_6));
	SET_GUEST_DEBUG(v, KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_SINGLESTEP, NULL);
	EXPECT_EQ(0x55, run_to_mmio_write(v, MMIO_GPA, 4));
	EXPECT_OUT(v, PORT_MAIN2, 0x55);
}

/*
 * kvm_emulate_halt(): without an in-kernel APIC, KVM_EXIT_HLT squashes the
 * step of HLT; the step goes on from the next instruction.
 */
TEST_F(dbg, single_step_over_hlt_exits_hlt)
{
	struct vcpu *v = &self->vcpu;

	vm_load_code(&self->vm, step_code);
	vcpu_set_rip(_metadata, v, STEP_GPA(step_8));
	SET_GUEST_DEBUG(v, KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_SINGLESTEP, NULL);
	vcpu_run(_metadata, v);
	if (step_trapped_early(v, STEP_GPA(step_8)))
		SKIP(return, BOCHS_EARLY_STEP);
	ASSERT_EQ(KVM_EXIT_HLT, v->run->exit_reason);
	EXPECT_EQ(STEP_GPA(step_9), vcpu_rip(_metadata, v));
	EXPECT_EQ(0, vcpu_rflags(_metadata, v) & X86_RFLAGS_TF);
	SET_GUEST_DEBUG(v, KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_SINGLESTEP, NULL);
	EXPECT_OUT(v, PORT_MAIN, 0);
	EXPECT_DEBUG(v, 1, STEP_GPA(step_10));
}

/*
 * Turning single-stepping off takes KVM's TF away again
 * (kvm_set_rflags at the end of set_guest_debug): the guest runs freely.
 */
TEST_F(dbg, single_step_off_runs_freely)
{
	struct vcpu *v = &self->vcpu;

	vm_load_code(&self->vm, step_code);
	FIRST_STEP_TO(v, CODE_GPA, STEP_GPA(step_1));
	SET_GUEST_DEBUG(v, 0, NULL);
	EXPECT_EQ(0, vcpu_rflags(_metadata, v) & X86_RFLAGS_TF);
	EXPECT_OUT(v, PORT_MAIN, 3);
}

/*
 * KVM_SET_REGS moving RIP away from where the step was asked leaves TF
 * off (__kvm_set_rflags adds it only at singlestep_rip).
 */
TEST_F(dbg, set_regs_elsewhere_ends_the_step)
{
	struct vcpu *v = &self->vcpu;

	vm_load_code(&self->vm, step_code);
	SET_GUEST_DEBUG(v, KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_SINGLESTEP, NULL);
	vcpu_set_rip(_metadata, v, STEP_GPA(step_2));
	EXPECT_OUT(v, PORT_MAIN, 0x2);	/* EAX 0 + 2 */
}

/*
 * KVM_CAP_X86_ROBUST_SINGLESTEP: an interrupt injected while stepping runs
 * its handler to completion (the gate clears TF), and the step reported
 * is the instruction where the step was asked.
 */
TEST_F(dbg, robust_single_step_over_an_interrupt)
{
	struct vcpu *v = &self->vcpu;
	struct kvm_interrupt irq = { .irq = 0x40 };
	struct kvm_regs regs;

	vm_load_code(&self->vm, nops_code);
	vcpu_get_regs(_metadata, v, &regs);
	regs.rflags |= X86_RFLAGS_IF;
	vcpu_set_regs(_metadata, v, &regs);
	SET_GUEST_DEBUG(v, KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_SINGLESTEP, NULL);
	ASSERT_EQ(0, ioctl(v->fd, KVM_INTERRUPT, &irq));
	EXPECT_OUT(v, PORT_VEC, 0x40);
	EXPECT_OUT(v, PORT_RIP, (uint32_t)CODE_GPA);
	vcpu_run(_metadata, v);
	if (step_trapped_early(v, CODE_GPA))
		SKIP(return, BOCHS_EARLY_STEP);
	ASSERT_EQ(KVM_EXIT_DEBUG, v->run->exit_reason);
	EXPECT_EQ(CODE_GPA + (nops_1 - nops_code), v->run->debug.arch.pc);
	EXPECT_EQ(DR6_BS_EXIT, v->run->debug.arch.dr6);
}

/* BLOCKIRQ: a pending NMI waits while it is set (kvm_check_and_inject_events). */
TEST_F(dbg, blockirq_holds_an_nmi_back)
{
	struct vcpu *v = &self->vcpu;
	struct kvm_vcpu_events e;

	vm_load_code(&self->vm, nops_code);
	ASSERT_EQ(0, ioctl(v->fd, KVM_NMI));
	SET_GUEST_DEBUG(v, KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_SINGLESTEP |
			KVM_GUESTDBG_BLOCKIRQ, NULL);
	vcpu_run(_metadata, v);
	if (step_trapped_early(v, CODE_GPA))
		SKIP(return, BOCHS_EARLY_STEP);
	ASSERT_EQ(KVM_EXIT_DEBUG, v->run->exit_reason);
	EXPECT_EQ(CODE_GPA + (nops_1 - nops_code), v->run->debug.arch.pc);
	vcpu_get_events(_metadata, v, &e);
	EXPECT_EQ(1, e.nmi.pending);
	SET_GUEST_DEBUG(v, 0, NULL);
	EXPECT_OUT(v, PORT_VEC, 2);
}

/* ========================== breakpoints ========================== */

/*
 * USE_SW_BP: INT3 exits with #BP and PC at the INT3
 * (bp_interception, handle_exception_nmi); INJECT_BP then delivers it to
 * the guest, whose frame points past the INT3.
 */
TEST_F(dbg, sw_breakpoint_exits_and_injects)
{
	struct vcpu *v = &self->vcpu;

	vm_load_code(&self->vm, bp_code);
	SET_GUEST_DEBUG(v, KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_SW_BP, NULL);
	vcpu_run(_metadata, v);
	if (v->run->exit_reason == KVM_EXIT_IO && host_is_qemu_tcg_svm())
		SKIP(return, "QEMU's TCG SVM never intercepts INT3's #BP "
		     "(it checks exception intercepts only for hardware "
		     "exceptions), which USE_SW_BP relies on");
	ASSERT_EQ(KVM_EXIT_DEBUG, v->run->exit_reason);
	EXPECT_EQ(3, v->run->debug.arch.exception);
	EXPECT_EQ(CODE_GPA, v->run->debug.arch.pc);
	EXPECT_EQ(CODE_GPA, vcpu_rip(_metadata, v));
	SET_GUEST_DEBUG(v, KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_SW_BP |
			KVM_GUESTDBG_INJECT_BP, NULL);
	EXPECT_OUT(v, PORT_VEC, 3);
	EXPECT_OUT(v, PORT_RIP, (uint32_t)BP_GPA(bp_1));
}

/* Without USE_SW_BP, INT3 is the guest's. */
TEST_F(dbg, int3_without_sw_bp_is_the_guests)
{
	struct vcpu *v = &self->vcpu;

	vm_load_code(&self->vm, bp_code);
	SET_GUEST_DEBUG(v, KVM_GUESTDBG_ENABLE, NULL);
	EXPECT_OUT(v, PORT_VEC, 3);
	EXPECT_OUT(v, PORT_RIP, (uint32_t)BP_GPA(bp_1));
}

/*
 * USE_HW_BP: userspace's DR0-DR3/DR7 are armed while the guest runs; an
 * execute breakpoint exits before the instruction (DR6.B0, DR7 as given),
 * a write breakpoint after it (DR6.B1).
 */
TEST_F(dbg, hw_execute_and_write_breakpoints)
{
	struct vcpu *v = &self->vcpu;
	uint64_t dr[8] = { 0 };

	vm_load_code(&self->vm, bp_code);
	vcpu_set_rip(_metadata, v, BP_GPA(bp_1));
	set_rbx(_metadata, v, DATA_GPA);
	dr[0] = BP_GPA(bp_3);
	dr[1] = DATA_GPA;
	dr[7] = 0x400 | 0x1 | 0x4 | (1UL << 20) | (3UL << 22);
	SET_GUEST_DEBUG(v, KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_HW_BP, dr);
	EXPECT_OUT(v, PORT_MAIN, 0);
	EXPECT_DEBUG(v, 1, BP_GPA(bp_3));
	/* B1; QEMU's TCG also sets B0, whose address is the next RIP. */
	EXPECT_EQ(0xffff0ff0UL, v->run->debug.arch.dr6 & ~0xfUL);
	EXPECT_EQ(2, v->run->debug.arch.dr6 & 2);
	EXPECT_EQ(dr[7], v->run->debug.arch.dr7);
	EXPECT_EQ(5, mem_read32(&self->vm, DATA_GPA));
	EXPECT_DEBUG(v, 1, BP_GPA(bp_3));
	EXPECT_EQ(0xffff0ff1UL, v->run->debug.arch.dr6);
	/* As QEMU resumes: breakpoints off for the faulting instruction. */
	SET_GUEST_DEBUG(v, KVM_GUESTDBG_ENABLE, NULL);
	EXPECT_OUT(v, PORT_MAIN2, 0);
}

/*
 * The guest's own DR0/DR1/DR7 are armed while it runs: its execute and
 * write breakpoints reach its #DB handler with B0/B1 in DR6, and
 * KVM_GET_DEBUGREGS shows what it wrote.
 */
TEST_F(dbg, guest_hw_breakpoints_reach_its_handler)
{
	struct vcpu *v = &self->vcpu;
	struct kvm_debugregs d;

	vm_load_code(&self->vm, own_bp_code);
	vm_load(&self->vm, DB_HANDLER_GPA, db_handler, db_handler_end);
	vm_set_idt_gate64(&self->vm, 1, DB_HANDLER_GPA);
	set_rbx(_metadata, v, DATA_GPA);
	EXPECT_OUT(v, PORT_DR6, 0xffff0ff1);
	EXPECT_OUT(v, PORT_RIP, (uint32_t)OWN_GPA(own_hit));
	EXPECT_OUT(v, PORT_MAIN, 0x400);
	EXPECT_OUT(v, PORT_DR6, 0xffff0ff2);
	EXPECT_OUT(v, PORT_RIP, (uint32_t)OWN_GPA(own_after_write));
	EXPECT_OUT(v, PORT_MAIN2, 0x400);
	EXPECT_EQ(7, mem_read32(&self->vm, DATA_GPA));
	ASSERT_EQ(0, ioctl(v->fd, KVM_GET_DEBUGREGS, &d));
	EXPECT_EQ(OWN_GPA(own_hit), d.db[0]);
	EXPECT_EQ(DATA_GPA, d.db[1]);
	EXPECT_EQ(0x400, d.dr7);
	EXPECT_EQ(0xffff0ff2UL, d.dr6);
}

/*
 * KVM_SET_DEBUGREGS arms the guest's breakpoints as its own MOVs do: an
 * execute breakpoint set from userspace reaches the guest's handler.
 */
TEST_F(dbg, set_debugregs_arms_the_guests_breakpoint)
{
	struct vcpu *v = &self->vcpu;
	struct kvm_debugregs d;

	vm_load_code(&self->vm, bp_code);
	vm_load(&self->vm, DB_HANDLER_GPA, db_handler, db_handler_end);
	vm_set_idt_gate64(&self->vm, 1, DB_HANDLER_GPA);
	vcpu_set_rip(_metadata, v, BP_GPA(bp_1));
	set_rbx(_metadata, v, DATA_GPA);
	memset(&d, 0, sizeof(d));
	d.db[2] = BP_GPA(bp_3);
	d.dr6 = DR6_INIT;
	d.dr7 = 0x400 | 0x10;		/* L2, execute */
	ASSERT_EQ(0, ioctl(v->fd, KVM_SET_DEBUGREGS, &d));
	EXPECT_OUT(v, PORT_MAIN, 0);
	EXPECT_OUT(v, PORT_DR6, 0xffff0ff4);
	EXPECT_OUT(v, PORT_RIP, (uint32_t)BP_GPA(bp_3));
}

/* The guest's own TF over an instruction KVM completes (CPUID) traps to it. */
TEST_F(dbg, guest_trap_flag_over_cpuid_reaches_its_handler)
{
	struct vcpu *v = &self->vcpu;

	vm_load_code(&self->vm, own_tf_code);
	vm_load(&self->vm, DB_HANDLER_GPA, db_handler, db_handler_end);
	vm_set_idt_gate64(&self->vm, 1, DB_HANDLER_GPA);
	EXPECT_OUT(v, PORT_DR6, 0xffff4ff0);
	EXPECT_OUT(v, PORT_RIP, (uint32_t)(CODE_GPA + (own_tf_after - own_tf_code)));
	ASSERT_IO(v, KVM_EXIT_IO_OUT, 4, PORT_MAIN, 1);
}

/*
 * The host's breakpoints survive a guest that arms all four: a perf
 * hardware breakpoint on a variable of this process still fires after
 * KVM_RUN returns.
 */
TEST_F(dbg, host_breakpoints_are_restored)
{
	struct vcpu *v = &self->vcpu;
	static volatile uint32_t watched;
	struct perf_event_attr pe;
	struct kvm_debugregs d;
	uint64_t count = 0;
	int fd;

	memset(&pe, 0, sizeof(pe));
	pe.type = PERF_TYPE_BREAKPOINT;
	pe.size = sizeof(pe);
	pe.bp_type = HW_BREAKPOINT_W;
	pe.bp_addr = (uintptr_t)&watched;
	pe.bp_len = HW_BREAKPOINT_LEN_4;
	pe.exclude_kernel = 1;
	pe.exclude_hv = 1;
	fd = syscall(__NR_perf_event_open, &pe, 0, -1, -1, 0);
	if (fd < 0)
		SKIP(return, "perf_event_open(PERF_TYPE_BREAKPOINT): %s",
		     strerror(errno));
	vm_load_code(&self->vm, bp_code);
	vcpu_set_rip(_metadata, v, BP_GPA(bp_1));
	set_rbx(_metadata, v, DATA_GPA);
	memset(&d, 0, sizeof(d));
	for (int i = 0; i < 4; i++)
		d.db[i] = 0x100000 + i * 8;	/* never touched */
	d.dr6 = DR6_INIT;
	/* L0-L3, each a 4-byte write breakpoint. */
	d.dr7 = 0x400 | 0x55 | (0xd << 16) | (0xd << 20) | (0xd << 24) |
		(0xdUL << 28);
	ASSERT_EQ(0, ioctl(v->fd, KVM_SET_DEBUGREGS, &d));
	watched = 1;
	EXPECT_OUT(v, PORT_MAIN, 0);
	watched = 2;
	ASSERT_EQ(sizeof(count), read(fd, &count, sizeof(count)));
	EXPECT_EQ(2, count);
	close(fd);
}

/* ========================== injection and errors ========================== */

/* INJECT_DB queues #DB for the guest, even without ENABLE. */
TEST_F(dbg, inject_db_reaches_the_guest)
{
	struct vcpu *v = &self->vcpu;

	vm_load_code(&self->vm, step_code);
	SET_GUEST_DEBUG(v, KVM_GUESTDBG_INJECT_DB, NULL);
	EXPECT_OUT(v, PORT_VEC, 1);
	EXPECT_OUT(v, PORT_RIP, (uint32_t)CODE_GPA);
}

/* A second injection while the first is queued is EBUSY. */
TEST_F(dbg, inject_with_an_exception_queued_is_ebusy)
{
	struct vcpu *v = &self->vcpu;

	vm_load_code(&self->vm, step_code);
	SET_GUEST_DEBUG(v, KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_INJECT_DB, NULL);
	EXPECT_ERRNO(EBUSY, set_guest_debug(v, KVM_GUESTDBG_ENABLE |
					    KVM_GUESTDBG_INJECT_BP, NULL));
	EXPECT_ERRNO(EBUSY, set_guest_debug(v, KVM_GUESTDBG_INJECT_DB, NULL));
	/* Without injection the state still changes. */
	SET_GUEST_DEBUG(v, 0, NULL);
	EXPECT_OUT(v, PORT_VEC, 1);
}

/*
 * Flags x86 KVM does not know are accepted and ignored
 * (kvm_arch_vcpu_ioctl_set_guest_debug checks none); a bad pointer is
 * EFAULT.
 */
TEST_F(dbg, unknown_flags_are_ignored_and_bad_pointer_is_efault)
{
	struct vcpu *v = &self->vcpu;

	vm_load_code(&self->vm, step_code);
	EXPECT_EQ(0, set_guest_debug(v, KVM_GUESTDBG_ENABLE | (1u << 30) |
				     (1u << 2), NULL));
	EXPECT_ERRNO(EFAULT, ioctl(v->fd, KVM_SET_GUEST_DEBUG, (void *)8));
	EXPECT_OUT(v, PORT_MAIN, 3);
}

TEST_HARNESS_MAIN
