// SPDX-License-Identifier: GPL-2.0
/*
 * Event injection and the vCPU event state of a VM without an in-kernel
 * irqchip (the VMM is the interrupt controller): KVM_INTERRUPT, the
 * interrupt window (run->request_interrupt_window, KVM_EXIT_IRQ_WINDOW_OPEN,
 * run->ready_for_interrupt_injection, run->if_flag) and the STI/MOV SS
 * shadow, KVM_NMI and NMI blocking, KVM_GET/SET_VCPU_EVENTS, exceptions
 * injected through KVM_SET_VCPU_EVENTS, events whose delivery faults in the
 * host, and run->cr8 / run->apic_base. Linux KVM (arch/x86/kvm/x86.c) is the
 * oracle; each rule names the KVM function it comes from.
 *
 * Most tests run a long-mode guest (fixture ev) whose IDT sends every
 * vector to a stub that reports it (OUT to PORT_VEC with EAX = vector) and
 * returns with IRETQ, and whose main code reports a counter in EBX (OUT to
 * PORT_MAIN), so the sequence of IO exits shows what ran and in which order.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "vm_lib.h"

#define PORT_MAIN	0x10
#define PORT_VEC	0x40	/* the stub of a vector: EAX = the vector */
#define PORT_NMI	0x41	/* the counting NMI handler, at entry */
#define PORT_NMI_IRET	0x42	/* the counting NMI handler, before IRETQ */
#define PORT_ERR	0x43	/* exception handler: the error code */
#define PORT_FRAME_RIP	0x44	/* exception handler: RIP in the frame */
#define PORT_FRAME_CS	0x45	/* exception handler: CS in the frame */
#define PORT_NMI_R15	0x46	/* nmi_r15: R15 when the NMI came */

#define HANDLER_GPA	(CODE_GPA + 0x1000)	/* a handler of a test */
#define STUB_GPA	(CODE_GPA + 0x2000)	/* 256 stubs of 16 bytes */

#define X86_RFLAGS_IF	(1UL << 9)

#define VEC_NMI		2
#define VEC_UD		6
#define VEC_GP		13

#define KVM_VCPUEVENT_VALID_ALL (KVM_VCPUEVENT_VALID_NMI_PENDING |	\
				 KVM_VCPUEVENT_VALID_SIPI_VECTOR |	\
				 KVM_VCPUEVENT_VALID_SHADOW |		\
				 KVM_VCPUEVENT_VALID_SMM |		\
				 KVM_VCPUEVENT_VALID_PAYLOAD |		\
				 KVM_VCPUEVENT_VALID_TRIPLE_FAULT)

/* --- guest code --- */

/* The stub of one vector: the immediate is patched to the vector. */
GUEST_CODE(vec_stub, 64,
	"mov eax, 0x7fffffff\n"
	"out 0x40, eax\n"
	"iretq\n");

/* Reports 0, 1, 2, ... (EBX: the stubs clobber only EAX). */
GUEST_CODE(main_count, 64,
	"xor ebx, ebx\n"
	"1:\n"
	"mov eax, ebx\n"
	"out 0x10, eax\n"
	"inc ebx\n"
	"jmp 1b\n");

_Static_assert(PORT_MAIN == 0x10 && PORT_VEC == 0x40, "ports in guest code");

/* Writes vector @v's stub and its gate. */
static void vm_set_stub(struct vm *vm, int v)
{
	uint64_t gpa = STUB_GPA + v * 16;
	uint32_t imm = v;

	vm_load(vm, gpa, vec_stub, vec_stub_end);
	memcpy(vm->mem + gpa + 1, &imm, sizeof(imm));	/* B8 imm32 */
	vm_set_idt_gate64(vm, v, gpa);
}

static void vcpu_set_rflags(struct __test_metadata *_metadata,
			    struct vcpu *vcpu, uint64_t rflags)
{
	struct kvm_regs regs;

	vcpu_get_regs(_metadata, vcpu, &regs);
	regs.rflags = rflags;
	vcpu_set_regs(_metadata, vcpu, &regs);
}

/* KVM_INTERRUPT, which must succeed. */
#define vcpu_interrupt(vcpu, vector) do {				\
	struct kvm_interrupt __irq = { .irq = (vector) };		\
	ASSERT_EQ(0, ioctl((vcpu)->fd, KVM_INTERRUPT, &__irq))		\
		TH_LOG("KVM_INTERRUPT %u: %s", __irq.irq, strerror(errno)); \
} while (0)

/* KVM_NMI, which must succeed. */
#define vcpu_nmi(vcpu)							\
	ASSERT_EQ(0, ioctl((vcpu)->fd, KVM_NMI))			\
		TH_LOG("KVM_NMI: %s", strerror(errno))

/* Runs to an OUT of 4 bytes to @port and expects @val. */
#define EXPECT_OUT(vcpu, port, val) do {				\
	uint32_t __got = run_to_out(vcpu, 4, port);			\
	EXPECT_EQ((uint32_t)(val), __got)				\
		TH_LOG("OUT 0x%x: 0x%x, expected 0x%x", port, __got,	\
		       (uint32_t)(val));				\
} while (0)

/* The next exit is the stub of @vec, then main's OUT of @count. */
#define EXPECT_VECTOR_THEN_MAIN(vcpu, vec, count) do {			\
	EXPECT_OUT(vcpu, PORT_VEC, vec);				\
	EXPECT_OUT(vcpu, PORT_MAIN, count);				\
} while (0)

static void log_events(struct __test_metadata *_metadata,
		       const struct kvm_vcpu_events *e)
{
	TH_LOG("events: exception inj %u pend %u nr %u has_err %u err 0x%x; "
	       "interrupt inj %u nr 0x%x soft %u shadow %u; "
	       "nmi inj %u pend %u masked %u; flags 0x%x",
	       e->exception.injected, e->exception.pending, e->exception.nr,
	       e->exception.has_error_code, e->exception.error_code,
	       e->interrupt.injected, e->interrupt.nr, e->interrupt.soft,
	       e->interrupt.shadow, e->nmi.injected, e->nmi.pending,
	       e->nmi.masked, e->flags);
}

#define EXPECT_NMI_STATE(vcpu, inj, pend, mask) do {			\
	struct kvm_vcpu_events __e;					\
	vcpu_get_events(_metadata, vcpu, &__e);				\
	EXPECT_EQ((inj), __e.nmi.injected);				\
	EXPECT_EQ((pend), __e.nmi.pending);				\
	EXPECT_EQ((mask), __e.nmi.masked);				\
	if (__e.nmi.injected != (inj) || __e.nmi.pending != (pend) ||	\
	    __e.nmi.masked != (mask))					\
		log_events(_metadata, &__e);				\
} while (0)

/*
 * A long-mode guest at CODE_GPA running main_count with a stub on every
 * vector, RFLAGS.IF = 0.
 */
FIXTURE(ev) {
	struct vm vm;
	struct vcpu vcpu;
};

FIXTURE_SETUP(ev)
{
	vm_create(_metadata, &self->vm);
	vcpu_create(_metadata, &self->vm, 0, &self->vcpu);
	vcpu_setup_long(_metadata, &self->vm, &self->vcpu);
	for (int v = 0; v < 256; v++)
		vm_set_stub(&self->vm, v);
	vm_load_code(&self->vm, main_count);
}

FIXTURE_TEARDOWN(ev)
{
	vcpu_destroy(&self->vm, &self->vcpu);
	vm_destroy(&self->vm);
}

/* ========================== capabilities ========================== */

/* kvm_vm_ioctl_check_extension(): both are 1, on the device and a VM. */
TEST(vcpu_events_and_user_nmi_are_supported)
{
	int sys = open_kvm_dev(_metadata);
	int vm = create_vm(_metadata, sys);

	EXPECT_EQ(1, ioctl(sys, KVM_CHECK_EXTENSION, KVM_CAP_VCPU_EVENTS));
	EXPECT_EQ(1, ioctl(sys, KVM_CHECK_EXTENSION, KVM_CAP_USER_NMI));
	EXPECT_EQ(1, ioctl(vm, KVM_CHECK_EXTENSION, KVM_CAP_VCPU_EVENTS));
	EXPECT_EQ(1, ioctl(vm, KVM_CHECK_EXTENSION, KVM_CAP_USER_NMI));
	close(vm);
	close(sys);
}

/* ========================== KVM_INTERRUPT ========================== */

/* kvm_vcpu_ioctl_interrupt(): irq >= KVM_NR_INTERRUPTS (256). */
TEST_F(ev, interrupt_vector_above_255_is_einval)
{
	struct kvm_interrupt irq = { .irq = 256 };
	struct kvm_vcpu_events e;

	EXPECT_ERRNO(EINVAL, ioctl(self->vcpu.fd, KVM_INTERRUPT, &irq));
	irq.irq = 0xffffffff;
	EXPECT_ERRNO(EINVAL, ioctl(self->vcpu.fd, KVM_INTERRUPT, &irq));
	vcpu_get_events(_metadata, &self->vcpu, &e);
	EXPECT_EQ(0, e.interrupt.injected);
	irq.irq = 255;
	EXPECT_EQ(0, ioctl(self->vcpu.fd, KVM_INTERRUPT, &irq));
}

/*
 * Without an in-kernel irqchip KVM_INTERRUPT puts the vector in the vCPU's
 * injection slot (kvm_queue_interrupt()); the next entry delivers it
 * through the guest's IDT, exactly once.
 */
TEST_F(ev, interrupt_is_delivered_through_its_idt_gate)
{
	vcpu_set_rflags(_metadata, &self->vcpu, X86_RFLAGS_FIXED | X86_RFLAGS_IF);
	vcpu_interrupt(&self->vcpu, 0x21);
	EXPECT_VECTOR_THEN_MAIN(&self->vcpu, 0x21, 0);
	vcpu_interrupt(&self->vcpu, 0x20);
	EXPECT_VECTOR_THEN_MAIN(&self->vcpu, 0x20, 1);
	vcpu_interrupt(&self->vcpu, 0xff);
	EXPECT_VECTOR_THEN_MAIN(&self->vcpu, 0xff, 2);
	EXPECT_OUT(&self->vcpu, PORT_MAIN, 3);
}

/*
 * The queued vector is vCPU state a VMM saves: KVM_GET_VCPU_EVENTS reports
 * it as interrupt.injected/nr and KVM_GET_SREGS as its interrupt_bitmap
 * bit (__get_sregs()) until it is delivered.
 */
TEST_F(ev, queued_interrupt_is_in_vcpu_events_and_sregs_until_delivered)
{
	struct kvm_vcpu_events e;
	struct kvm_sregs sregs;

	vcpu_set_rflags(_metadata, &self->vcpu, X86_RFLAGS_FIXED | X86_RFLAGS_IF);
	vcpu_interrupt(&self->vcpu, 0x73);
	vcpu_get_events(_metadata, &self->vcpu, &e);
	EXPECT_EQ(1, e.interrupt.injected);
	EXPECT_EQ(0x73, e.interrupt.nr);
	EXPECT_EQ(0, e.interrupt.soft);
	vcpu_get_sregs(_metadata, &self->vcpu, &sregs);
	for (int i = 0; i < 4; i++) {
		EXPECT_EQ(i == 0x73 / 64 ? 1ULL << (0x73 % 64) : 0,
			  sregs.interrupt_bitmap[i]) TH_LOG("word %d", i);
	}

	EXPECT_VECTOR_THEN_MAIN(&self->vcpu, 0x73, 0);
	vcpu_get_events(_metadata, &self->vcpu, &e);
	EXPECT_EQ(0, e.interrupt.injected);
	vcpu_get_sregs(_metadata, &self->vcpu, &sregs);
	for (int i = 0; i < 4; i++) {
		EXPECT_EQ(0, sregs.interrupt_bitmap[i]) TH_LOG("word %d", i);
	}
}

/*
 * kvm_vcpu_ioctl_interrupt() without an in-kernel irqchip does not check
 * for a queued vector (api.rst's EEXIST is the split irqchip's
 * pending_external_vector): the one injection slot takes the new vector,
 * and only that one is delivered. A VMM that respects
 * ready_for_interrupt_injection never does this; one that does loses the
 * first vector, it does not get two.
 */
TEST_F(ev, interrupt_queued_twice_before_run_delivers_the_last_vector_once)
{
	struct kvm_interrupt irq = { .irq = 0x20 };
	struct kvm_vcpu_events e;

	vcpu_set_rflags(_metadata, &self->vcpu, X86_RFLAGS_FIXED | X86_RFLAGS_IF);
	EXPECT_EQ(0, ioctl(self->vcpu.fd, KVM_INTERRUPT, &irq));
	irq.irq = 0x21;
	EXPECT_EQ(0, ioctl(self->vcpu.fd, KVM_INTERRUPT, &irq))
		TH_LOG("second KVM_INTERRUPT: %s", strerror(errno));
	vcpu_get_events(_metadata, &self->vcpu, &e);
	EXPECT_EQ(1, e.interrupt.injected);
	EXPECT_EQ(0x21, e.interrupt.nr);
	EXPECT_VECTOR_THEN_MAIN(&self->vcpu, 0x21, 0);
	EXPECT_OUT(&self->vcpu, PORT_MAIN, 1);
}

/*
 * kvm_vcpu_ready_for_interrupt_injection() is false while an event waits
 * for (re)injection (kvm_event_needs_reinjection()), and post_kvm_run_save()
 * fills it in at every return of KVM_RUN, also the EINTR of immediate_exit.
 */
TEST_F(ev, ready_for_injection_is_clear_while_an_interrupt_is_queued)
{
	struct kvm_run *run = self->vcpu.run;

	vcpu_set_rflags(_metadata, &self->vcpu, X86_RFLAGS_FIXED | X86_RFLAGS_IF);
	run->immediate_exit = 1;
	EXPECT_ERRNO(EINTR, ioctl(self->vcpu.fd, KVM_RUN, 0));
	EXPECT_EQ(1, run->ready_for_interrupt_injection);
	EXPECT_EQ(1, run->if_flag);
	vcpu_interrupt(&self->vcpu, 0x22);
	EXPECT_ERRNO(EINTR, ioctl(self->vcpu.fd, KVM_RUN, 0));
	EXPECT_EQ(0, run->ready_for_interrupt_injection);
	EXPECT_EQ(1, run->if_flag);
	run->immediate_exit = 0;
	EXPECT_VECTOR_THEN_MAIN(&self->vcpu, 0x22, 0);
	EXPECT_EQ(1, run->ready_for_interrupt_injection);
	EXPECT_EQ(1, run->if_flag);
}

/* ========================== the interrupt window ========================== */

GUEST_CODE(sti_window, 64,
	"xor ebx, ebx\n"
	"cli\n"
	"mov eax, ebx\n"
	"out 0x10, eax\n"		/* 0, IF = 0 */
	"sti\n"
	"inc r15\n"			/* in the STI shadow */
	".globl sti_window_open\n"
	"sti_window_open:\n"
	"inc ebx\n"
	"mov eax, ebx\n"
	"out 0x10, eax\n"		/* 1 */
	"hlt\n");
extern const uint8_t sti_window_open[];

/*
 * With request_interrupt_window, KVM_RUN returns KVM_EXIT_IRQ_WINDOW_OPEN
 * (vcpu_run(): dm_request_for_irq_injection() and
 * kvm_vcpu_ready_for_interrupt_injection()) at the first instruction
 * boundary where the guest takes interrupts: after STI and the instruction
 * in its shadow. Exits while IF = 0 report ready_for_interrupt_injection =
 * if_flag = 0. A KVM_INTERRUPT at the window is delivered there.
 */
TEST_F(ev, irq_window_opens_after_sti_and_its_shadow)
{
	struct kvm_run *run = self->vcpu.run;
	struct kvm_regs regs;

	vm_load_code(&self->vm, sti_window);
	run->request_interrupt_window = 1;
	EXPECT_OUT(&self->vcpu, PORT_MAIN, 0);
	EXPECT_EQ(0, run->ready_for_interrupt_injection);
	EXPECT_EQ(0, run->if_flag);

	ASSERT_EXIT(&self->vcpu, KVM_EXIT_IRQ_WINDOW_OPEN);
	EXPECT_EQ(1, run->ready_for_interrupt_injection);
	EXPECT_EQ(1, run->if_flag);
	vcpu_get_regs(_metadata, &self->vcpu, &regs);
	EXPECT_EQ(CODE_GPA + (sti_window_open - sti_window), regs.rip);
	EXPECT_EQ(1, regs.r15);		/* the shadowed instruction ran */
	EXPECT_TRUE(regs.rflags & X86_RFLAGS_IF);

	vcpu_interrupt(&self->vcpu, 0x30);
	run->request_interrupt_window = 0;
	EXPECT_OUT(&self->vcpu, PORT_VEC, 0x30);
	/* In the handler (an interrupt gate): IF = 0 again. */
	EXPECT_EQ(0, run->ready_for_interrupt_injection);
	EXPECT_EQ(0, run->if_flag);
	EXPECT_OUT(&self->vcpu, PORT_MAIN, 1);
	ASSERT_EXIT(&self->vcpu, KVM_EXIT_HLT);
}

/*
 * With IF = 1 and no shadow the window is open before the first
 * instruction: KVM_RUN returns KVM_EXIT_IRQ_WINDOW_OPEN at the entry RIP.
 */
TEST_F(ev, irq_window_opens_at_once_when_if_is_set)
{
	struct kvm_run *run = self->vcpu.run;
	struct kvm_regs regs;

	vcpu_set_rflags(_metadata, &self->vcpu, X86_RFLAGS_FIXED | X86_RFLAGS_IF);
	run->request_interrupt_window = 1;
	ASSERT_EXIT(&self->vcpu, KVM_EXIT_IRQ_WINDOW_OPEN);
	EXPECT_EQ(1, run->ready_for_interrupt_injection);
	EXPECT_EQ(1, run->if_flag);
	vcpu_get_regs(_metadata, &self->vcpu, &regs);
	EXPECT_EQ(CODE_GPA, regs.rip);

	/* Asked again without injecting: the window is still open. */
	ASSERT_EXIT(&self->vcpu, KVM_EXIT_IRQ_WINDOW_OPEN);
	vcpu_get_regs(_metadata, &self->vcpu, &regs);
	EXPECT_EQ(CODE_GPA, regs.rip);

	vcpu_interrupt(&self->vcpu, 0x31);
	run->request_interrupt_window = 0;
	EXPECT_VECTOR_THEN_MAIN(&self->vcpu, 0x31, 0);
	EXPECT_OUT(&self->vcpu, PORT_MAIN, 1);
}

/* The counter in EBX: the stubs clobber EAX. */
GUEST_CODE(sti_shadow_out, 64,
	"mov ebx, 2\n"
	"cli\n"
	"mov eax, ebx\n"
	"out 0x10, eax\n"		/* 2, IF = 0 */
	"inc ebx\n"
	"mov eax, ebx\n"
	"sti\n"
	".globl sti_shadow_out_b\n"
	"sti_shadow_out_b:\n"
	"out 0x10, eax\n"		/* 3, in the STI shadow */
	".globl sti_shadow_out_c\n"
	"sti_shadow_out_c:\n"
	"inc ebx\n"
	"mov eax, ebx\n"
	"out 0x10, eax\n"		/* 4 */
	"hlt\n");
extern const uint8_t sti_shadow_out_b[], sti_shadow_out_c[];

/*
 * STI; OUT with the window requested: the OUT in the shadow exits to
 * userspace first. At that exit the OUT has not retired yet (KVM moves RIP
 * past it when the next KVM_RUN completes it: complete_fast_pio_out()), so
 * the vCPU is still in the STI shadow: ready_for_interrupt_injection = 0
 * with if_flag = 1, and KVM_GET_VCPU_EVENTS reports the shadow. The next
 * KVM_RUN completes the OUT and returns KVM_EXIT_IRQ_WINDOW_OPEN right
 * after it; an interrupt injected there runs before the next instruction.
 */
TEST_F(ev, out_in_the_sti_shadow_runs_before_the_interrupt)
{
	struct kvm_run *run = self->vcpu.run;
	struct kvm_vcpu_events e;
	struct kvm_regs regs;

	vm_load_code(&self->vm, sti_shadow_out);
	run->request_interrupt_window = 1;
	EXPECT_OUT(&self->vcpu, PORT_MAIN, 2);
	EXPECT_EQ(0, run->ready_for_interrupt_injection);
	EXPECT_EQ(0, run->if_flag);

	EXPECT_OUT(&self->vcpu, PORT_MAIN, 3);
	EXPECT_EQ(0, run->ready_for_interrupt_injection);
	EXPECT_EQ(1, run->if_flag);
	vcpu_get_regs(_metadata, &self->vcpu, &regs);
	EXPECT_EQ(CODE_GPA + (sti_shadow_out_b - sti_shadow_out), regs.rip);
	vcpu_get_events(_metadata, &self->vcpu, &e);
	/* SVM has one shadow bit, reported as both (see the round trip). */
	EXPECT_TRUE(e.interrupt.shadow == KVM_X86_SHADOW_INT_STI ||
		    e.interrupt.shadow == (KVM_X86_SHADOW_INT_STI |
					   KVM_X86_SHADOW_INT_MOV_SS))
		TH_LOG("interrupt.shadow %u", e.interrupt.shadow);

	ASSERT_EXIT(&self->vcpu, KVM_EXIT_IRQ_WINDOW_OPEN);
	EXPECT_EQ(1, run->ready_for_interrupt_injection);
	EXPECT_EQ(1, run->if_flag);
	vcpu_get_regs(_metadata, &self->vcpu, &regs);
	EXPECT_EQ(CODE_GPA + (sti_shadow_out_c - sti_shadow_out), regs.rip);

	vcpu_interrupt(&self->vcpu, 0x32);
	run->request_interrupt_window = 0;
	EXPECT_OUT(&self->vcpu, PORT_VEC, 0x32);
	EXPECT_OUT(&self->vcpu, PORT_MAIN, 4);
	ASSERT_EXIT(&self->vcpu, KVM_EXIT_HLT);
}

GUEST_CODE(movss_out, 64,
	"mov ebx, 5\n"
	"mov eax, ebx\n"
	"mov ecx, ss\n"
	"mov ss, ecx\n"
	".globl movss_out_b\n"
	"movss_out_b:\n"
	"out 0x10, eax\n"		/* 5, in the MOV SS shadow */
	".globl movss_out_c\n"
	"movss_out_c:\n"
	"inc ebx\n"
	"mov eax, ebx\n"
	"out 0x10, eax\n"		/* 6 */
	"hlt\n");
extern const uint8_t movss_out_b[], movss_out_c[];

/*
 * The same for MOV SS, which blocks interrupts for one instruction with
 * IF = 1 all along: at the exit of the OUT in its shadow
 * ready_for_interrupt_injection is 0 although if_flag is 1; the window
 * opens once the next KVM_RUN has completed the OUT.
 */
TEST_F(ev, out_in_the_mov_ss_shadow_runs_before_the_interrupt)
{
	struct kvm_run *run = self->vcpu.run;
	struct kvm_vcpu_events e;
	struct kvm_regs regs;

	vm_load_code(&self->vm, movss_out);
	vcpu_set_rflags(_metadata, &self->vcpu, X86_RFLAGS_FIXED | X86_RFLAGS_IF);
	EXPECT_OUT(&self->vcpu, PORT_MAIN, 5);
	EXPECT_EQ(0, run->ready_for_interrupt_injection);
	EXPECT_EQ(1, run->if_flag);
	vcpu_get_regs(_metadata, &self->vcpu, &regs);
	EXPECT_EQ(CODE_GPA + (movss_out_b - movss_out), regs.rip);
	vcpu_get_events(_metadata, &self->vcpu, &e);
	EXPECT_TRUE(e.interrupt.shadow == KVM_X86_SHADOW_INT_MOV_SS ||
		    e.interrupt.shadow == (KVM_X86_SHADOW_INT_STI |
					   KVM_X86_SHADOW_INT_MOV_SS))
		TH_LOG("interrupt.shadow %u", e.interrupt.shadow);

	run->request_interrupt_window = 1;
	ASSERT_EXIT(&self->vcpu, KVM_EXIT_IRQ_WINDOW_OPEN);
	EXPECT_EQ(1, run->ready_for_interrupt_injection);
	vcpu_get_regs(_metadata, &self->vcpu, &regs);
	EXPECT_EQ(CODE_GPA + (movss_out_c - movss_out), regs.rip);

	vcpu_interrupt(&self->vcpu, 0x34);
	run->request_interrupt_window = 0;
	EXPECT_OUT(&self->vcpu, PORT_VEC, 0x34);
	EXPECT_OUT(&self->vcpu, PORT_MAIN, 6);
	ASSERT_EXIT(&self->vcpu, KVM_EXIT_HLT);
}

GUEST_CODE(shadow_inc, 64,
	"inc r15\n"
	".globl shadow_inc_after\n"
	"shadow_inc_after:\n"
	"mov eax, r15d\n"
	"out 0x10, eax\n"
	"hlt\n");
extern const uint8_t shadow_inc_after[];

/*
 * An interrupt shadow restored through KVM_SET_VCPU_EVENTS
 * (KVM_VCPUEVENT_VALID_SHADOW; set_interrupt_shadow()) blocks interrupts
 * for one instruction, as the STI or MOV SS it stands for would: with IF =
 * 1 the window opens after the first instruction, not before it.
 */
TEST_F(ev, shadow_set_through_vcpu_events_holds_the_window_one_instruction)
{
	static const uint8_t shadows[] = {
		KVM_X86_SHADOW_INT_STI, KVM_X86_SHADOW_INT_MOV_SS,
	};
	struct kvm_run *run = self->vcpu.run;

	vm_load_code(&self->vm, shadow_inc);
	for (int i = 0; i < 2; i++) {
		struct kvm_vcpu_events e = {
			.flags = KVM_VCPUEVENT_VALID_SHADOW,
			.interrupt.shadow = shadows[i],
		};
		struct kvm_regs regs;

		TH_LOG("shadow %u", shadows[i]);
		vcpu_get_regs(_metadata, &self->vcpu, &regs);
		regs.rip = CODE_GPA;
		regs.r15 = 0;
		regs.rflags = X86_RFLAGS_FIXED | X86_RFLAGS_IF;
		vcpu_set_regs(_metadata, &self->vcpu, &regs);
		vcpu_set_events(_metadata, &self->vcpu, &e);
		run->request_interrupt_window = 1;
		ASSERT_EXIT(&self->vcpu, KVM_EXIT_IRQ_WINDOW_OPEN);
		vcpu_get_regs(_metadata, &self->vcpu, &regs);
		EXPECT_EQ(CODE_GPA + (shadow_inc_after - shadow_inc), regs.rip);
		EXPECT_EQ(1, regs.r15);
		vcpu_get_events(_metadata, &self->vcpu, &e);
		EXPECT_EQ(0, e.interrupt.shadow);

		vcpu_interrupt(&self->vcpu, 0x33);
		run->request_interrupt_window = 0;
		EXPECT_VECTOR_THEN_MAIN(&self->vcpu, 0x33, 1);
		ASSERT_EXIT(&self->vcpu, KVM_EXIT_HLT);
	}
}

/* ========================== KVM_NMI ========================== */

/* NMIs ignore RFLAGS.IF: vector 2's gate runs with IF = 0. */
TEST_F(ev, nmi_is_delivered_through_vector_2_with_if_clear)
{
	vcpu_nmi(&self->vcpu);
	EXPECT_VECTOR_THEN_MAIN(&self->vcpu, VEC_NMI, 0);
	EXPECT_NMI_STATE(&self->vcpu, 0, 0, 0);
	EXPECT_OUT(&self->vcpu, PORT_MAIN, 1);
}

/* Reports R15. */
GUEST_CODE(nmi_r15, 64,
	"mov eax, r15d\n"
	"out 0x46, eax\n"
	"iretq\n");

_Static_assert(PORT_NMI_R15 == 0x46, "nmi_r15");

/*
 * An interrupt shadow blocks NMIs too (svm_nmi_blocked(),
 * vmx_nmi_blocked()): a KVM_NMI queued while the vCPU is in a shadow
 * restored through KVM_SET_VCPU_EVENTS is delivered after the first
 * instruction, not before it (KVM opens an NMI window instead of
 * injecting).
 */
TEST_F(ev, nmi_waits_for_an_interrupt_shadow)
{
	static const uint8_t shadows[] = {
		KVM_X86_SHADOW_INT_STI, KVM_X86_SHADOW_INT_MOV_SS,
	};

	vm_load_code(&self->vm, shadow_inc);
	vm_load(&self->vm, HANDLER_GPA, nmi_r15, nmi_r15_end);
	vm_set_idt_gate64(&self->vm, VEC_NMI, HANDLER_GPA);
	for (int i = 0; i < 2; i++) {
		struct kvm_vcpu_events e = {
			.flags = KVM_VCPUEVENT_VALID_SHADOW,
			.interrupt.shadow = shadows[i],
		};
		struct kvm_regs regs;

		TH_LOG("shadow %u", shadows[i]);
		vcpu_get_regs(_metadata, &self->vcpu, &regs);
		regs.rip = CODE_GPA;
		regs.r15 = 0;
		regs.rflags = X86_RFLAGS_FIXED | X86_RFLAGS_IF;
		vcpu_set_regs(_metadata, &self->vcpu, &regs);
		vcpu_set_events(_metadata, &self->vcpu, &e);
		vcpu_nmi(&self->vcpu);
		EXPECT_OUT(&self->vcpu, PORT_NMI_R15, 1);
		EXPECT_OUT(&self->vcpu, PORT_MAIN, 1);
		ASSERT_EXIT(&self->vcpu, KVM_EXIT_HLT);
	}
}

/* Counts its runs in R12D, reports at entry and again before its IRETQ. */
GUEST_CODE(nmi_count, 64,
	"inc r12d\n"
	"mov eax, r12d\n"
	"out 0x41, eax\n"
	"out 0x42, eax\n"
	"iretq\n");

_Static_assert(PORT_NMI == 0x41 && PORT_NMI_IRET == 0x42, "nmi_count");

/*
 * process_nmi(): with NMIs unblocked KVM keeps two NMIs (one to inject, one
 * latched) and drops the rest; the second is injected only after the
 * first handler's IRET unblocks NMIs. Inside the handler
 * KVM_GET_VCPU_EVENTS shows NMIs masked with the latched one pending.
 */
TEST_F(ev, second_nmi_waits_for_iret_and_a_third_is_dropped)
{
	vm_load(&self->vm, HANDLER_GPA, nmi_count, nmi_count_end);
	vm_set_idt_gate64(&self->vm, VEC_NMI, HANDLER_GPA);
	vcpu_nmi(&self->vcpu);
	vcpu_nmi(&self->vcpu);
	vcpu_nmi(&self->vcpu);
	EXPECT_NMI_STATE(&self->vcpu, 0, 2, 0);

	EXPECT_OUT(&self->vcpu, PORT_NMI, 1);
	EXPECT_NMI_STATE(&self->vcpu, 0, 1, 1);
	EXPECT_OUT(&self->vcpu, PORT_NMI_IRET, 1);
	EXPECT_OUT(&self->vcpu, PORT_NMI, 2);
	EXPECT_NMI_STATE(&self->vcpu, 0, 0, 1);
	EXPECT_OUT(&self->vcpu, PORT_NMI_IRET, 2);
	EXPECT_OUT(&self->vcpu, PORT_MAIN, 0);
	EXPECT_NMI_STATE(&self->vcpu, 0, 0, 0);
	EXPECT_OUT(&self->vcpu, PORT_MAIN, 1);
}

GUEST_CODE(nmi_iret_main, 64,
	"mov eax, r12d\n"
	"out 0x10, eax\n"		/* 0: NMIs are blocked */
	"mov rax, rsp\n"
	"push 0x10\n"			/* SS */
	"push rax\n"			/* RSP */
	"pushfq\n"
	"push 0x18\n"			/* CS */
	"lea rax, [rip + 1f]\n"
	"push rax\n"
	"iretq\n"			/* unblocks NMIs */
	"1:\n"
	"mov eax, r12d\n"
	"out 0x10, eax\n"		/* 1: the NMI came after the IRETQ */
	"hlt\n");

/*
 * nmi.masked restored through KVM_SET_VCPU_EVENTS (set_nmi_mask()) blocks
 * NMIs as a running NMI handler would: a KVM_NMI stays pending until the
 * guest's next IRET, whichever IRET it is.
 */
TEST_F(ev, nmi_masked_through_vcpu_events_waits_for_an_iret)
{
	struct kvm_vcpu_events e = { .nmi.masked = 1 };

	vm_load_code(&self->vm, nmi_iret_main);
	vm_load(&self->vm, HANDLER_GPA, nmi_count, nmi_count_end);
	vm_set_idt_gate64(&self->vm, VEC_NMI, HANDLER_GPA);
	vcpu_set_events(_metadata, &self->vcpu, &e);
	vcpu_nmi(&self->vcpu);
	EXPECT_OUT(&self->vcpu, PORT_MAIN, 0);
	EXPECT_NMI_STATE(&self->vcpu, 0, 1, 1);
	EXPECT_OUT(&self->vcpu, PORT_NMI, 1);
	EXPECT_NMI_STATE(&self->vcpu, 0, 0, 1);
	EXPECT_OUT(&self->vcpu, PORT_NMI_IRET, 1);
	EXPECT_OUT(&self->vcpu, PORT_MAIN, 1);
	EXPECT_NMI_STATE(&self->vcpu, 0, 0, 0);
	ASSERT_EXIT(&self->vcpu, KVM_EXIT_HLT);
}

/*
 * process_nmi() caps the pending NMIs at 2 while NMIs are unblocked and at
 * 1 while they are masked or one is being injected, for KVM_NMI and for
 * nmi.pending written by KVM_SET_VCPU_EVENTS alike. (A fresh vCPU each: on
 * AMD with vNMI a pending NMI lives in the VMCB, where a later nmi.pending
 * = 0 does not reach it.)
 */
TEST(nmi_pending_count_is_capped_by_nmi_blocking)
{
	static const struct {
		uint8_t injected, masked, nmis, set_pending, expect;
	} cases[] = {
		{ 0, 0, 1, 0, 1 },
		{ 0, 0, 2, 0, 2 },
		{ 0, 0, 5, 0, 2 },
		{ 0, 1, 5, 0, 1 },
		{ 1, 0, 5, 0, 1 },
		{ 0, 0, 0, 5, 2 },
		{ 0, 1, 0, 5, 1 },
		{ 1, 0, 0, 3, 1 },
	};
	struct vm vm;

	vm_create(_metadata, &vm);
	for (unsigned int i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct kvm_vcpu_events e = {
			.nmi.injected = cases[i].injected,
			.nmi.masked = cases[i].masked,
			.nmi.pending = cases[i].set_pending,
			.flags = cases[i].set_pending ?
				 KVM_VCPUEVENT_VALID_NMI_PENDING : 0,
		};
		struct vcpu v;

		vcpu_create(_metadata, &vm, i, &v);
		vcpu_set_events(_metadata, &v, &e);
		for (int n = 0; n < cases[i].nmis; n++) {
			vcpu_nmi(&v);
		}
		vcpu_get_events(_metadata, &v, &e);
		EXPECT_EQ(cases[i].expect, e.nmi.pending)
			TH_LOG("injected %u masked %u, %u KVM_NMI, nmi.pending %u set",
			       cases[i].injected, cases[i].masked, cases[i].nmis,
			       cases[i].set_pending);
		EXPECT_EQ(cases[i].injected, e.nmi.injected);
		EXPECT_EQ(cases[i].masked, e.nmi.masked);
		vcpu_destroy(&vm, &v);
	}
	vm_destroy(&vm);
}

/* ========================== KVM_GET/SET_VCPU_EVENTS ========================== */

struct one_vcpu {
	struct vm vm;
	struct vcpu v;
};

static void one_vcpu_create(struct __test_metadata *_metadata,
			    struct one_vcpu *o)
{
	vm_create(_metadata, &o->vm);
	vcpu_create(_metadata, &o->vm, 0, &o->v);
}

static void one_vcpu_destroy(struct one_vcpu *o)
{
	vcpu_destroy(&o->vm, &o->v);
	vm_destroy(&o->vm);
}

/*
 * kvm_vcpu_ioctl_x86_get_vcpu_events(): everything zero (the struct is
 * memset) but flags, which always has NMI_PENDING, SHADOW and SMM; PAYLOAD
 * and TRIPLE_FAULT only once their capabilities are enabled.
 */
TEST(vcpu_events_of_a_new_vcpu_are_empty_with_three_valid_flags)
{
	struct kvm_vcpu_events e, zero;
	struct one_vcpu o;

	one_vcpu_create(_metadata, &o);
	memset(&e, 0xa5, sizeof(e));
	vcpu_get_events(_metadata, &o.v, &e);
	EXPECT_EQ(KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SHADOW |
		  KVM_VCPUEVENT_VALID_SMM, e.flags);
	memset(&zero, 0, sizeof(zero));
	zero.flags = e.flags;
	EXPECT_EQ(0, memcmp(&zero, &e, sizeof(e))) log_events(_metadata, &e);
	one_vcpu_destroy(&o);
}

TEST(vcpu_events_round_trip_an_injected_interrupt)
{
	struct kvm_vcpu_events e = {
		.interrupt = { .injected = 1, .nr = 0x42 },
	};
	struct kvm_sregs sregs;
	struct one_vcpu o;

	one_vcpu_create(_metadata, &o);
	vcpu_set_events(_metadata, &o.v, &e);
	memset(&e, 0, sizeof(e));
	vcpu_get_events(_metadata, &o.v, &e);
	EXPECT_EQ(1, e.interrupt.injected);
	EXPECT_EQ(0x42, e.interrupt.nr);
	EXPECT_EQ(0, e.interrupt.soft);
	/* The same slot as KVM_INTERRUPT's: KVM_GET_SREGS shows it. */
	vcpu_get_sregs(_metadata, &o.v, &sregs);
	EXPECT_EQ(1ULL << (0x42 % 64), sregs.interrupt_bitmap[1]);

	e.interrupt.injected = 0;
	vcpu_set_events(_metadata, &o.v, &e);
	vcpu_get_events(_metadata, &o.v, &e);
	EXPECT_EQ(0, e.interrupt.injected);
	one_vcpu_destroy(&o);
}

/* nmi.pending needs KVM_VCPUEVENT_VALID_NMI_PENDING; injected and masked do not. */
TEST(vcpu_events_round_trip_the_nmi_state)
{
	static const struct { uint8_t injected, pending, masked; } cases[] = {
		{ 1, 0, 0 }, { 0, 1, 0 }, { 0, 0, 1 }, { 1, 1, 1 }, { 0, 1, 1 },
	};
	struct vm vm;

	vm_create(_metadata, &vm);
	for (unsigned int i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct kvm_vcpu_events e = {
			.flags = KVM_VCPUEVENT_VALID_NMI_PENDING,
			.nmi = { cases[i].injected, cases[i].pending,
				 cases[i].masked },
		};
		struct vcpu v;

		vcpu_create(_metadata, &vm, i, &v);
		vcpu_set_events(_metadata, &v, &e);
		memset(&e, 0, sizeof(e));
		vcpu_get_events(_metadata, &v, &e);
		EXPECT_EQ(cases[i].injected, e.nmi.injected) TH_LOG("case %u", i);
		EXPECT_EQ(cases[i].pending, e.nmi.pending) TH_LOG("case %u", i);
		EXPECT_EQ(cases[i].masked, e.nmi.masked) TH_LOG("case %u", i);
		vcpu_destroy(&vm, &v);
	}

	/* Without the flag, nmi.pending is not written. */
	{
		struct kvm_vcpu_events e = { .nmi.pending = 1 };
		struct vcpu v;

		vcpu_create(_metadata, &vm, 10, &v);
		vcpu_set_events(_metadata, &v, &e);
		vcpu_get_events(_metadata, &v, &e);
		EXPECT_EQ(0, e.nmi.pending);
		vcpu_destroy(&vm, &v);
	}
	vm_destroy(&vm);
}

/*
 * interrupt.shadow with KVM_VCPUEVENT_VALID_SHADOW. SVM has one interrupt
 * shadow bit (svm_get_interrupt_shadow() reports it as STI | MOV_SS);
 * VMX keeps the two apart and reads back what was written. Without the
 * flag the shadow is left alone.
 */
TEST(vcpu_events_round_trip_the_interrupt_shadow)
{
	static const uint8_t shadows[] = {
		KVM_X86_SHADOW_INT_STI, KVM_X86_SHADOW_INT_MOV_SS,
	};
	struct kvm_vcpu_events e;
	struct one_vcpu o;

	one_vcpu_create(_metadata, &o);
	for (int i = 0; i < 2; i++) {
		memset(&e, 0, sizeof(e));
		e.flags = KVM_VCPUEVENT_VALID_SHADOW;
		e.interrupt.shadow = shadows[i];
		vcpu_set_events(_metadata, &o.v, &e);
		vcpu_get_events(_metadata, &o.v, &e);
		EXPECT_TRUE(e.interrupt.shadow == shadows[i] ||
			    e.interrupt.shadow == (KVM_X86_SHADOW_INT_STI |
						   KVM_X86_SHADOW_INT_MOV_SS))
			TH_LOG("set %u, got %u", shadows[i], e.interrupt.shadow);

		e.flags = 0;
		e.interrupt.shadow = 0;
		vcpu_set_events(_metadata, &o.v, &e);
		vcpu_get_events(_metadata, &o.v, &e);
		EXPECT_NE(0, e.interrupt.shadow) TH_LOG("cleared without the flag");

		e.flags = KVM_VCPUEVENT_VALID_SHADOW;
		e.interrupt.shadow = 0;
		vcpu_set_events(_metadata, &o.v, &e);
		vcpu_get_events(_metadata, &o.v, &e);
		EXPECT_EQ(0, e.interrupt.shadow);
	}
	one_vcpu_destroy(&o);
}

/*
 * An injected exception reads back as written. Without
 * KVM_CAP_EXCEPTION_PAYLOAD enabled exception.pending is never reported
 * (pending is conflated into injected).
 */
TEST(vcpu_events_round_trip_an_injected_exception)
{
	struct kvm_vcpu_events e = {
		.exception = { .injected = 1, .nr = VEC_GP,
			       .has_error_code = 1, .error_code = 0x1234 },
	};
	struct one_vcpu o;

	one_vcpu_create(_metadata, &o);
	vcpu_set_events(_metadata, &o.v, &e);
	memset(&e, 0, sizeof(e));
	vcpu_get_events(_metadata, &o.v, &e);
	EXPECT_EQ(1, e.exception.injected);
	EXPECT_EQ(0, e.exception.pending);
	EXPECT_EQ(VEC_GP, e.exception.nr);
	EXPECT_EQ(1, e.exception.has_error_code);
	EXPECT_EQ(0x1234, e.exception.error_code);
	EXPECT_EQ(0, e.exception_has_payload);

	memset(&e, 0, sizeof(e));
	e.exception.injected = 1;
	e.exception.nr = VEC_UD;
	vcpu_set_events(_metadata, &o.v, &e);
	memset(&e, 0xff, sizeof(e));
	vcpu_get_events(_metadata, &o.v, &e);
	EXPECT_EQ(1, e.exception.injected);
	EXPECT_EQ(VEC_UD, e.exception.nr);
	EXPECT_EQ(0, e.exception.has_error_code);
	EXPECT_EQ(0, e.exception.error_code);
	one_vcpu_destroy(&o);
}

/*
 * The API has no instruction length, so GET does not report soft events
 * as injected (kvm_exception_is_soft(): #BP and #OF; interrupt.soft): the
 * guest's RIP still points at the INT3/INTO/INT n, which runs again.
 */
TEST(vcpu_events_hide_soft_exceptions_and_soft_interrupts)
{
	static const uint8_t soft[] = { 3, 4 };
	struct kvm_vcpu_events e;
	struct one_vcpu o;

	one_vcpu_create(_metadata, &o);
	for (int i = 0; i < 2; i++) {
		memset(&e, 0, sizeof(e));
		e.exception.injected = 1;
		e.exception.nr = soft[i];
		vcpu_set_events(_metadata, &o.v, &e);
		vcpu_get_events(_metadata, &o.v, &e);
		EXPECT_EQ(0, e.exception.injected) TH_LOG("vector %u", soft[i]);
		EXPECT_EQ(soft[i], e.exception.nr);
	}

	memset(&e, 0, sizeof(e));
	e.interrupt.injected = 1;
	e.interrupt.soft = 1;
	e.interrupt.nr = 0x80;
	vcpu_set_events(_metadata, &o.v, &e);
	vcpu_get_events(_metadata, &o.v, &e);
	EXPECT_EQ(0, e.interrupt.injected);
	EXPECT_EQ(0, e.interrupt.soft);
	EXPECT_EQ(0x80, e.interrupt.nr);
	one_vcpu_destroy(&o);
}

TEST(set_vcpu_events_rejects_unknown_flags)
{
	struct kvm_vcpu_events e;
	struct one_vcpu o;

	one_vcpu_create(_metadata, &o);
	for (int bit = 6; bit < 32; bit++) {
		memset(&e, 0, sizeof(e));
		e.flags = 1U << bit;
		errno = 0;
		EXPECT_EQ(-1, ioctl(o.v.fd, KVM_SET_VCPU_EVENTS, &e))
			TH_LOG("flag bit %d accepted", bit);
		EXPECT_EQ(EINVAL, errno) TH_LOG("flag bit %d: %s", bit,
						strerror(errno));
	}
	_Static_assert(KVM_VCPUEVENT_VALID_ALL == 0x3f, "the known flags");
	one_vcpu_destroy(&o);
}

/*
 * KVM_VCPUEVENT_VALID_PAYLOAD needs KVM_CAP_EXCEPTION_PAYLOAD enabled and
 * KVM_VCPUEVENT_VALID_TRIPLE_FAULT needs KVM_CAP_X86_TRIPLE_FAULT_EVENT
 * enabled (KVM_ENABLE_CAP); SIPI_VECTOR and SMM (with an SMM state that
 * changes nothing) are accepted.
 */
TEST(set_vcpu_events_rejects_payload_and_triple_fault_without_their_caps)
{
	struct kvm_vcpu_events e;
	struct one_vcpu o;

	one_vcpu_create(_metadata, &o);
	memset(&e, 0, sizeof(e));
	e.flags = KVM_VCPUEVENT_VALID_PAYLOAD;
	EXPECT_ERRNO(EINVAL, ioctl(o.v.fd, KVM_SET_VCPU_EVENTS, &e));
	e.flags = KVM_VCPUEVENT_VALID_TRIPLE_FAULT;
	EXPECT_ERRNO(EINVAL, ioctl(o.v.fd, KVM_SET_VCPU_EVENTS, &e));
	e.flags = KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SHADOW |
		  KVM_VCPUEVENT_VALID_SMM | KVM_VCPUEVENT_VALID_SIPI_VECTOR;
	EXPECT_EQ(0, ioctl(o.v.fd, KVM_SET_VCPU_EVENTS, &e))
		TH_LOG("KVM_SET_VCPU_EVENTS: %s", strerror(errno));
	one_vcpu_destroy(&o);
}

/*
 * exception.nr must be a vector below 32 and not NMI (2) when the exception
 * is injected; without one it is not looked at (a VMM with no exception in
 * flight may well write nr = 0xff).
 */
TEST(set_vcpu_events_checks_the_vector_of_an_injected_exception_only)
{
	static const uint8_t bad[] = { VEC_NMI, 32, 0x80, 0xff };
	struct kvm_vcpu_events e;
	struct one_vcpu o;

	one_vcpu_create(_metadata, &o);
	for (int i = 0; i < 4; i++) {
		memset(&e, 0, sizeof(e));
		e.exception.injected = 1;
		e.exception.nr = bad[i];
		errno = 0;
		EXPECT_EQ(-1, ioctl(o.v.fd, KVM_SET_VCPU_EVENTS, &e))
			TH_LOG("vector %u accepted", bad[i]);
		EXPECT_EQ(EINVAL, errno) TH_LOG("vector %u: %s", bad[i],
						strerror(errno));
		e.exception.injected = 0;
		EXPECT_EQ(0, ioctl(o.v.fd, KVM_SET_VCPU_EVENTS, &e))
			TH_LOG("vector %u, not injected: %s", bad[i],
			       strerror(errno));
	}
	memset(&e, 0, sizeof(e));
	e.exception.injected = 1;
	e.exception.nr = 31;
	EXPECT_EQ(0, ioctl(o.v.fd, KVM_SET_VCPU_EVENTS, &e));
	one_vcpu_destroy(&o);
}

TEST(vcpu_events_with_a_bad_pointer_are_efault)
{
	struct one_vcpu o;

	one_vcpu_create(_metadata, &o);
	EXPECT_ERRNO(EFAULT, ioctl(o.v.fd, KVM_GET_VCPU_EVENTS, (void *)8));
	EXPECT_ERRNO(EFAULT, ioctl(o.v.fd, KVM_SET_VCPU_EVENTS, (void *)8));
	one_vcpu_destroy(&o);
}

/* ========================== injected exceptions ========================== */

/* #GP enters at exc_frame (pops the error code), #UD at exc_frame_noerr. */
GUEST_CODE(exc_frame, 64,
	"pop rax\n"
	"out 0x43, eax\n"
	".globl exc_frame_noerr\n"
	"exc_frame_noerr:\n"
	"mov rax, qword ptr [rsp]\n"
	"out 0x44, eax\n"
	"mov rax, qword ptr [rsp + 8]\n"
	"out 0x45, eax\n"
	"hlt\n");
extern const uint8_t exc_frame_noerr[];

_Static_assert(PORT_ERR == 0x43 && PORT_FRAME_RIP == 0x44 &&
	       PORT_FRAME_CS == 0x45, "exc_frame");

/*
 * exception.injected through KVM_SET_VCPU_EVENTS is delivered at the next
 * entry (kvm_check_and_inject_events(): an injected exception first), with
 * the error code pushed when has_error_code says so, and then is gone.
 */
TEST_F(ev, injected_gp_is_delivered_with_its_error_code)
{
	struct kvm_vcpu_events e = {
		.exception = { .injected = 1, .nr = VEC_GP,
			       .has_error_code = 1, .error_code = 0x1234 },
	};

	vm_load(&self->vm, HANDLER_GPA, exc_frame, exc_frame_end);
	vm_set_idt_gate64(&self->vm, VEC_GP, HANDLER_GPA);
	vcpu_set_events(_metadata, &self->vcpu, &e);
	EXPECT_OUT(&self->vcpu, PORT_ERR, 0x1234);
	vcpu_get_events(_metadata, &self->vcpu, &e);
	EXPECT_EQ(0, e.exception.injected);
	EXPECT_OUT(&self->vcpu, PORT_FRAME_RIP, CODE_GPA);
	EXPECT_OUT(&self->vcpu, PORT_FRAME_CS, SEL_CODE64);
	ASSERT_EXIT(&self->vcpu, KVM_EXIT_HLT);
}

TEST_F(ev, injected_ud_is_delivered_without_an_error_code)
{
	struct kvm_vcpu_events e = {
		.exception = { .injected = 1, .nr = VEC_UD },
	};

	vm_load(&self->vm, HANDLER_GPA, exc_frame, exc_frame_end);
	vm_set_idt_gate64(&self->vm, VEC_UD,
			  HANDLER_GPA + (exc_frame_noerr - exc_frame));
	vcpu_set_events(_metadata, &self->vcpu, &e);
	/* With an error code pushed, these would be RIP and CS one slot up. */
	EXPECT_OUT(&self->vcpu, PORT_FRAME_RIP, CODE_GPA);
	EXPECT_OUT(&self->vcpu, PORT_FRAME_CS, SEL_CODE64);
	ASSERT_EXIT(&self->vcpu, KVM_EXIT_HLT);
	vcpu_get_events(_metadata, &self->vcpu, &e);
	EXPECT_EQ(0, e.exception.injected);
}

/* ========================== delivery that faults in the host ========================== */

/*
 * A second slot, added after the guest has run, holds the stack the event
 * frame is pushed to, or the IDT and the handler: its pages were never
 * mapped for the guest, so under KVM the delivery itself takes a nested
 * page fault (NPF / EPT violation). The hypervisor must deliver the event
 * again after fixing the fault (KVM: exit_int_info / IDT-vectoring info,
 * then kvm_queue_interrupt() / re-injection), exactly once.
 */
#define FRESH_SLOT	1
#define FRESH_GPA	0x1000000UL
#define FRESH_SIZE	0x10000UL
#define FRESH_HANDLER	(FRESH_GPA + 0x1000)
#define FRESH_STACK_TOP	(FRESH_GPA + FRESH_SIZE)

enum fresh_event { FRESH_IRQ, FRESH_NMI, FRESH_GP };

FIXTURE(npf) {
	struct vm vm;
	struct vcpu vcpu;
	uint8_t *fresh;
};

FIXTURE_VARIANT(npf) {
	enum fresh_event event;
	int idt_in_fresh;	/* else the stack */
};

FIXTURE_VARIANT_ADD(npf, interrupt_frame) { .event = FRESH_IRQ };
FIXTURE_VARIANT_ADD(npf, interrupt_idt) { .event = FRESH_IRQ, .idt_in_fresh = 1 };
FIXTURE_VARIANT_ADD(npf, nmi_frame) { .event = FRESH_NMI };
FIXTURE_VARIANT_ADD(npf, nmi_idt) { .event = FRESH_NMI, .idt_in_fresh = 1 };
FIXTURE_VARIANT_ADD(npf, gp_frame) { .event = FRESH_GP };
FIXTURE_VARIANT_ADD(npf, gp_idt) { .event = FRESH_GP, .idt_in_fresh = 1 };

/* R14: the stack the event is delivered on. */
GUEST_CODE(npf_main, 64,
	"mov rsp, r14\n"
	"mov eax, r12d\n"
	"out 0x10, eax\n"		/* 0: the host adds the slot here */
	".globl npf_main_event\n"
	"npf_main_event:\n"
	"mov eax, r12d\n"
	"out 0x10, eax\n"		/* 1: the handler ran once */
	"hlt\n");

/* Counts its runs in R12D; #GP's entry (err) pops the error code to R13. */
GUEST_CODE(npf_handler, 64,
	".globl npf_handler_err\n"
	"jmp 1f\n"
	"npf_handler_err:\n"
	"pop r13\n"
	"1:\n"
	"inc r12d\n"
	"mov eax, r12d\n"
	"out 0x40, eax\n"
	"iretq\n");
extern const uint8_t npf_handler_err[], npf_main_event[];

FIXTURE_SETUP(npf)
{
	struct kvm_regs regs;

	vm_create(_metadata, &self->vm);
	vcpu_create(_metadata, &self->vm, 0, &self->vcpu);
	vcpu_setup_long(_metadata, &self->vm, &self->vcpu);
	vm_load_code(&self->vm, npf_main);
	self->fresh = alloc_guest_mem(_metadata, FRESH_SIZE);
	vcpu_get_regs(_metadata, &self->vcpu, &regs);
	regs.r14 = variant->idt_in_fresh ? STACK_TOP : FRESH_STACK_TOP;
	regs.rflags = X86_RFLAGS_FIXED | X86_RFLAGS_IF;
	vcpu_set_regs(_metadata, &self->vcpu, &regs);
}

FIXTURE_TEARDOWN(npf)
{
	munmap(self->fresh, FRESH_SIZE);
	vcpu_destroy(&self->vm, &self->vcpu);
	vm_destroy(&self->vm);
}

TEST_F(npf, event_is_delivered_once_across_a_host_fault_during_delivery)
{
	int vec = variant->event == FRESH_IRQ ? 0x20 :
		  variant->event == FRESH_NMI ? VEC_NMI : VEC_GP;
	uint64_t entry = variant->event == FRESH_GP ?
			 npf_handler_err - npf_handler : 0;
	uint64_t *frame = (uint64_t *)(self->fresh + FRESH_SIZE - 6 * 8);
	struct kvm_regs regs;

	if (variant->idt_in_fresh) {
		struct kvm_sregs sregs;

		/* IDT at the slot's start, the handler at FRESH_HANDLER. */
		vcpu_get_sregs(_metadata, &self->vcpu, &sregs);
		sregs.idt.base = FRESH_GPA;
		vcpu_set_sregs(_metadata, &self->vcpu, &sregs);
		idt_set_gate64(self->fresh, vec, FRESH_HANDLER + entry);
		memcpy(self->fresh + (FRESH_HANDLER - FRESH_GPA), npf_handler,
		       npf_handler_end - npf_handler);
	} else {
		vm_load(&self->vm, HANDLER_GPA, npf_handler, npf_handler_end);
		vm_set_idt_gate64(&self->vm, vec, HANDLER_GPA + entry);
	}

	EXPECT_OUT(&self->vcpu, PORT_MAIN, 0);
	ASSERT_EQ(0, vm_set_region(&self->vm, FRESH_SLOT, 0, FRESH_GPA,
				   FRESH_SIZE, self->fresh))
		TH_LOG("KVM_SET_USER_MEMORY_REGION: %s", strerror(errno));
	if (variant->event == FRESH_IRQ) {
		vcpu_interrupt(&self->vcpu, vec);
	} else if (variant->event == FRESH_NMI) {
		vcpu_nmi(&self->vcpu);
	} else {
		struct kvm_vcpu_events e = {
			.exception = { .injected = 1, .nr = VEC_GP,
				       .has_error_code = 1,
				       .error_code = 0x5678 },
		};

		vcpu_set_events(_metadata, &self->vcpu, &e);
	}

	EXPECT_OUT(&self->vcpu, PORT_VEC, 1);
	EXPECT_OUT(&self->vcpu, PORT_MAIN, 1);
	ASSERT_EXIT(&self->vcpu, KVM_EXIT_HLT);
	vcpu_get_regs(_metadata, &self->vcpu, &regs);
	EXPECT_EQ(1, regs.r12);
	if (variant->event == FRESH_GP) {
		EXPECT_EQ(0x5678, regs.r13);
	}

	if (!variant->idt_in_fresh) {
		/*
		 * The frame at the top of the new slot: RIP, CS, RFLAGS, RSP,
		 * SS, and below them #GP's error code.
		 */
		uint64_t rip = CODE_GPA + (npf_main_event - npf_main);

		if (variant->event == FRESH_GP) {
			EXPECT_EQ(0x5678, frame[0]);
		}
		EXPECT_EQ(rip, frame[1]);
		EXPECT_EQ(SEL_CODE64, frame[2]);
		EXPECT_TRUE(frame[3] & X86_RFLAGS_IF);
		EXPECT_EQ(FRESH_STACK_TOP, frame[4]);
		EXPECT_EQ(SEL_DATA, frame[5]);
	}
}

/* ========================== run->cr8 and run->apic_base ========================== */

/*
 * post_kvm_run_save(): run->apic_base is the vCPU's IA32_APIC_BASE
 * (0xfee00000 | enabled, with BSP for vCPU 0) after every KVM_RUN.
 */
TEST(run_apic_base_reports_the_bsp_flag_of_each_vcpu)
{
	struct vm vm;
	struct vcpu v[2];

	vm_create(_metadata, &vm);
	for (int i = 0; i < 2; i++) {
		vcpu_create(_metadata, &vm, i, &v[i]);
		vcpu_setup_long(_metadata, &vm, &v[i]);
	}
	vm_load_code(&vm, main_count);
	for (int i = 0; i < 2; i++) {
		struct kvm_sregs sregs;

		EXPECT_OUT(&v[i], PORT_MAIN, 0);
		EXPECT_EQ(i == 0 ? 0xfee00900ULL : 0xfee00800ULL,
			  v[i].run->apic_base) TH_LOG("vCPU %d", i);
		vcpu_get_sregs(_metadata, &v[i], &sregs);
		EXPECT_EQ(sregs.apic_base, v[i].run->apic_base);
		vcpu_destroy(&vm, &v[i]);
	}
	vm_destroy(&vm);
}

GUEST_CODE(cr8_rw, 64,
	"mov rax, cr8\n"
	"out 0x10, eax\n"
	"mov eax, 9\n"
	"mov cr8, rax\n"
	"out 0x11, eax\n"
	"mov rax, cr8\n"
	"out 0x12, eax\n"
	"mov rax, cr8\n"
	"out 0x13, eax\n"
	"hlt\n");

/*
 * Without an in-kernel APIC, run->cr8 is an input of every KVM_RUN
 * (kvm_arch_vcpu_ioctl_run(): kvm_set_cr8(vcpu, kvm_run->cr8)) and an
 * output after it (post_kvm_run_save()): the guest reads what the VMM left
 * there, even over a KVM_SET_SREGS in between, and its own writes show up
 * there and in KVM_GET_SREGS.
 */
TEST_F(ev, run_cr8_is_read_by_kvm_run_and_written_at_each_exit)
{
	struct kvm_run *run = self->vcpu.run;
	struct kvm_sregs sregs;

	vm_load_code(&self->vm, cr8_rw);
	run->cr8 = 6;
	EXPECT_EQ(6, run_to_out(&self->vcpu, 4, 0x10));
	EXPECT_EQ(6, run->cr8);
	EXPECT_EQ(9, run_to_out(&self->vcpu, 4, 0x11));
	EXPECT_EQ(9, run->cr8);
	vcpu_get_sregs(_metadata, &self->vcpu, &sregs);
	EXPECT_EQ(9, sregs.cr8);
	run->cr8 = 12;
	EXPECT_EQ(12, run_to_out(&self->vcpu, 4, 0x12));
	EXPECT_EQ(12, run->cr8);
	vcpu_get_sregs(_metadata, &self->vcpu, &sregs);
	sregs.cr8 = 5;
	vcpu_set_sregs(_metadata, &self->vcpu, &sregs);
	EXPECT_EQ(12, run_to_out(&self->vcpu, 4, 0x13));
	ASSERT_EXIT(&self->vcpu, KVM_EXIT_HLT);
}

GUEST_CODE(cr8_lower, 64,
	"mov eax, 9\n"
	"mov cr8, rax\n"
	"out 0x10, eax\n"
	"mov eax, 3\n"
	"mov cr8, rax\n"
	".globl cr8_lower_after\n"
	"cr8_lower_after:\n"
	"out 0x11, eax\n"
	"hlt\n");
extern const uint8_t cr8_lower_after[];

/*
 * A guest that lowers CR8 may unmask an interrupt the VMM holds back, so
 * KVM returns to userspace with KVM_EXIT_SET_TPR after the MOV
 * (cr8_write_interception() / handle_cr()); raising it does not exit.
 */
TEST_F(ev, guest_lowering_cr8_exits_with_set_tpr)
{
	struct kvm_run *run = self->vcpu.run;
	struct kvm_regs regs;

	vm_load_code(&self->vm, cr8_lower);
	EXPECT_EQ(9, run_to_out(&self->vcpu, 4, 0x10));
	EXPECT_EQ(9, run->cr8);
	ASSERT_EXIT(&self->vcpu, KVM_EXIT_SET_TPR);
	EXPECT_EQ(3, run->cr8);
	vcpu_get_regs(_metadata, &self->vcpu, &regs);
	EXPECT_EQ(CODE_GPA + (cr8_lower_after - cr8_lower), regs.rip);
	EXPECT_EQ(3, run_to_out(&self->vcpu, 4, 0x11));
	EXPECT_EQ(3, run->cr8);
	ASSERT_EXIT(&self->vcpu, KVM_EXIT_HLT);
}

/* kvm_set_cr8() refuses bits above 3:0, so KVM_RUN fails before entry. */
TEST_F(ev, run_cr8_with_reserved_bits_is_einval)
{
	struct kvm_regs regs;

	self->vcpu.run->cr8 = 16;
	EXPECT_ERRNO(EINVAL, ioctl(self->vcpu.fd, KVM_RUN, 0));
	vcpu_get_regs(_metadata, &self->vcpu, &regs);
	EXPECT_EQ(CODE_GPA, regs.rip);
	self->vcpu.run->cr8 = 0;
	EXPECT_OUT(&self->vcpu, PORT_MAIN, 0);
}

TEST_HARNESS_MAIN
