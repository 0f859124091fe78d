// SPDX-License-Identifier: GPL-2.0
/*
 * The in-kernel local APIC of a split irqchip (KVM_ENABLE_CAP with
 * KVM_CAP_SPLIT_IRQCHIP: the LAPIC in the kernel, PIC, IOAPIC and PIT in the
 * VMM, as QEMU's kernel-irqchip=split): enabling the capability,
 * KVM_GET/SET_LAPIC, the xAPIC page and the x2APIC MSRs as a long-mode guest
 * sees them, IPIs (self, to another vCPU, INIT and SIPI), TPR and CR8,
 * KVM_SIGNAL_MSI, HLT handled in the kernel, the APIC timer (one-shot,
 * periodic, TSC deadline) and the MP states. Linux KVM
 * (arch/x86/kvm/lapic.c, x86.c) is the oracle; each rule names the KVM
 * function it comes from. Every test first asks the device for
 * KVM_CAP_SPLIT_IRQCHIP and is skipped without it.
 *
 * Guests report with OUT to PORT_REPORT (EAX). Vectors 0x20-0xff go to
 * counting stubs (COUNT_GPA(v) += 1, then EOI through the xAPIC page or the
 * x2APIC MSR); #GP goes to a handler that counts and skips the 2-byte
 * RDMSR/WRMSR that faulted, NMI to one that counts. A guest waits for an
 * interrupt with WAIT_COUNT: cli, check the count, sti; hlt, again.
 *
 * With the LAPIC in the kernel a halted vCPU blocks in KVM_RUN, so every
 * KVM_RUN here runs under a watchdog (run_timed()): a timer signal aimed at
 * the running thread ends a KVM_RUN that blocks for too long with EINTR, and
 * a lost interrupt or wake-up fails the test instead of hanging it. The same
 * signal, with a short bound, shows that a vCPU blocks where KVM blocks it.
 */
#include <pthread.h>
#include <sys/eventfd.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "vm_lib.h"

#define S_(x)		#x
#define XS(x)		S_(x)

/* --- the local APIC --- */

#define APIC_GPA	0xfee00000UL
#define APIC_ID		0x20
#define APIC_LVR	0x30
#define APIC_TASKPRI	0x80
#define APIC_PROCPRI	0xa0
#define APIC_EOI	0xb0
#define APIC_LDR	0xd0
#define APIC_DFR	0xe0
#define APIC_SPIV	0xf0
#define APIC_ISR	0x100
#define APIC_TMR	0x180
#define APIC_IRR	0x200
#define APIC_ESR	0x280
#define APIC_ICR	0x300
#define APIC_ICR2	0x310
#define APIC_LVTT	0x320
#define APIC_LVTTHMR	0x330
#define APIC_LVTPC	0x340
#define APIC_LVT0	0x350
#define APIC_LVT1	0x360
#define APIC_LVTERR	0x370
#define APIC_TMICT	0x380
#define APIC_TMCCT	0x390
#define APIC_TDCR	0x3e0

#define APIC_LVT_MASKED	0x10000
#define APIC_DM_EXTINT	0x700

#define MSR_IA32_APICBASE	0x1b
#define MSR_IA32_TSC_DEADLINE	0x6e0
#define APICBASE_BSP		(1ULL << 8)
#define APICBASE_X2APIC		(1ULL << 10)
#define APICBASE_ENABLE		(1ULL << 11)

#define CPUID_1_ECX_X2APIC	(1U << 21)
#define CPUID_1_ECX_TSC_DEADLINE (1U << 24)

/*
 * The version register KVM reports (kvm_apic_set_version()): version 0x14,
 * max LVT entry 5 in bits 23:16 (six LVTs, no CMCI: the vCPU's MCG_CAP has
 * no MCG_CMCI_P), and bit 24 (directed EOI, "suppress EOI broadcast") once
 * the guest's CPUID has x2APIC on a VM whose I/O APIC is not in the kernel.
 */
#define KVM_APIC_VERSION	0x00050014U
#define KVM_APIC_VERSION_X2APIC	0x01050014U

/* --- guest memory (vm_lib.h's map, and this file's) --- */

#define PORT_REPORT	0x10
#define PORT_HANDLER	0x11	/* isr_handler, before its EOI */
#define PORT_AP		0x20	/* the SIPI code: its CS */

#define STUBS_GPA	0x9000	/* 64 bytes per vector from 0x20 */
#define GP_HANDLER_GPA	0xd000
#define NMI_HANDLER_GPA	0xd100
#define ISR_HANDLER_GPA	0xd200
#define AP_CODE_GPA	0xe000	/* a long-mode AP's code */
#define SIPI_GPA	0x10000	/* SIPI vector 0x10 (BSP not paged then) */
#define AP_STACK_TOP	0x70000

#define COUNTS_GPA	0x20000	/* uint32_t per vector, from the stubs */
#define LAST_GPA	0x20400	/* the vector a stub saw last */
#define GP_COUNT_GPA	0x20410
#define GP_ERR_GPA	0x20414
#define NMI_COUNT_GPA	0x20418
#define FLAG_GPA	0x20420	/* two-vCPU tests: the AP's APIC is on */
#define ITER_GPA	0x20424	/* two-vCPU tests: round trips */
#define DELAY_GPA	0x20428	/* two-vCPU tests: BSP spin before a ping */
#define COUNT_GPA(v)	(COUNTS_GPA + 4 * (v))

/* [count of vector v] as a guest memory operand. */
#define COUNT(v)	"dword ptr [" XS(COUNTS_GPA) " + 4 * " XS(v) "]"

/* Waits (cli; check; sti; hlt) until vector v has been taken n times. */
#define WAIT_COUNT(v, n)						\
	"1: cli\n"							\
	"cmp " COUNT(v) ", " XS(n) "\n"					\
	"jae 2f\n"							\
	"sti\n"								\
	"hlt\n"								\
	"jmp 1b\n"							\
	"2: sti\n"

/* RBX = the xAPIC page; SPIV = 0x1ff (software-enabled, spurious 0xff). */
#define XAPIC_ON							\
	"mov ebx, 0xfee00000\n"						\
	"mov dword ptr [rbx + 0xf0], 0x1ff\n"

/* IA32_APIC_BASE.EXTD = 1, then SPIV = 0x1ff through MSR 0x80f. */
#define X2APIC_ON							\
	"mov ecx, 0x1b\n"						\
	"rdmsr\n"							\
	"or eax, 0x400\n"						\
	"wrmsr\n"							\
	"mov ecx, 0x80f\n"						\
	"mov eax, 0x1ff\n"						\
	"xor edx, edx\n"						\
	"wrmsr\n"

#define REPORT_EAX	"out " XS(PORT_REPORT) ", eax\n"

#define RUN_BOUND_MS	5000	/* a KVM_RUN that must return by itself */
#define BLOCK_MS	50	/* a KVM_RUN expected to block */

/* ========================== guest code ========================== */

/* A counting stub, EOI through the xAPIC page; the immediate is the vector. */
GUEST_CODE(count_stub_xapic, 64,
	"push rax\n"
	"mov eax, 0x7fffffff\n"
	"lock inc dword ptr [rax * 4 + " XS(COUNTS_GPA) "]\n"
	"mov dword ptr [" XS(LAST_GPA) "], eax\n"
	"mov eax, 0xfee000b0\n"
	"mov dword ptr [rax], 0\n"
	"pop rax\n"
	"iretq\n");

/* The same, EOI through x2APIC MSR 0x80b. */
GUEST_CODE(count_stub_x2apic, 64,
	"push rax\n"
	"push rcx\n"
	"push rdx\n"
	"mov eax, 0x7fffffff\n"
	"lock inc dword ptr [rax * 4 + " XS(COUNTS_GPA) "]\n"
	"mov dword ptr [" XS(LAST_GPA) "], eax\n"
	"mov ecx, 0x80b\n"
	"xor eax, eax\n"
	"xor edx, edx\n"
	"wrmsr\n"
	"pop rdx\n"
	"pop rcx\n"
	"pop rax\n"
	"iretq\n");

/* #GP: count, keep the error code, skip the 2-byte RDMSR/WRMSR. */
GUEST_CODE(gp_handler, 64,
	"push rax\n"
	"lock inc dword ptr [" XS(GP_COUNT_GPA) "]\n"
	"mov rax, [rsp + 8]\n"
	"mov dword ptr [" XS(GP_ERR_GPA) "], eax\n"
	"pop rax\n"
	"add qword ptr [rsp + 8], 2\n"
	"add rsp, 8\n"
	"iretq\n");

GUEST_CODE(nmi_handler, 64,
	"lock inc dword ptr [" XS(NMI_COUNT_GPA) "]\n"
	"iretq\n");

/* Vector 0x42: reports before its EOI, so the host sees ISR in service. */
GUEST_CODE(isr_handler, 64,
	"push rax\n"
	"mov eax, 0x42\n"
	"out " XS(PORT_HANDLER) ", eax\n"
	"mov eax, 0xfee000b0\n"
	"mov dword ptr [rax], 0\n"
	"lock inc " COUNT(0x42) "\n"
	"pop rax\n"
	"iretq\n");

_Static_assert(PORT_REPORT == 0x10 && PORT_HANDLER == 0x11,
	       "ports in guest code");

/* ========================== helpers ========================== */

static void on_watchdog(int sig)
{
	(void)sig;
}

/*
 * KVM_RUN with a watchdog: SIGUSR1, aimed at this thread, after @ms and
 * every 10 ms from then on (a signal that lands just before the ioctl is
 * followed by another), ends a KVM_RUN that blocks with EINTR. Returns the
 * ioctl's result with its errno.
 */
static int run_timed(struct vcpu *vcpu, long ms)
{
	struct sigaction sa = { .sa_handler = on_watchdog };
	struct sigevent sev = {
		.sigev_notify = SIGEV_THREAD_ID, .sigev_signo = SIGUSR1,
	};
	struct itimerspec its = {
		.it_value = {
			.tv_sec = ms / 1000, .tv_nsec = ms % 1000 * 1000000,
		},
		.it_interval = { .tv_nsec = 10 * 1000000 },
	};
	timer_t t;
	int r, err;

	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGUSR1, &sa, NULL))
		return -1;
	sev._sigev_un._tid = gettid();
	if (timer_create(CLOCK_MONOTONIC, &sev, &t))
		return -1;
	if (timer_settime(t, 0, &its, NULL)) {
		err = errno;
		timer_delete(t);
		errno = err;
		return -1;
	}
	r = ioctl(vcpu->fd, KVM_RUN, 0);
	err = errno;
	timer_delete(t);
	errno = err;
	return r;
}

static void log_exit(struct __test_metadata *_metadata, struct vcpu *vcpu)
{
	struct kvm_run *run = vcpu->run;

	if (run->exit_reason == KVM_EXIT_MMIO)
		TH_LOG("KVM_EXIT_MMIO at 0x%llx len %u write %u",
		       (unsigned long long)run->mmio.phys_addr, run->mmio.len,
		       run->mmio.is_write);
	else if (run->exit_reason == KVM_EXIT_IO)
		TH_LOG("KVM_EXIT_IO port 0x%x size %u dir %u", run->io.port,
		       run->io.size, run->io.direction);
	else
		TH_LOG("exit %s (%u)", exit_reason_name(run->exit_reason),
		       run->exit_reason);
}

/* KVM_RUN, which must return by itself (within RUN_BOUND_MS) and succeed. */
#define vcpu_run_bounded(vcpu) do {					\
	int __r = run_timed((vcpu), RUN_BOUND_MS);			\
	ASSERT_EQ(0, __r) TH_LOG("KVM_RUN: %s%s", strerror(errno),	\
		errno == EINTR ? " (blocked until the watchdog)" : ""); \
} while (0)

/* Runs to a 4-byte OUT to @port and returns its value. */
#define run_to_port(vcpu, _port) ({					\
	uint32_t __v = 0;						\
	vcpu_run_bounded(vcpu);						\
	if ((vcpu)->run->exit_reason != KVM_EXIT_IO ||			\
	    (vcpu)->run->io.port != (_port))				\
		log_exit(_metadata, (vcpu));				\
	ASSERT_EQ(KVM_EXIT_IO, (vcpu)->run->exit_reason);		\
	ASSERT_EQ(KVM_EXIT_IO_OUT, (vcpu)->run->io.direction);		\
	ASSERT_EQ((_port), (vcpu)->run->io.port);			\
	ASSERT_EQ(4, (vcpu)->run->io.size);				\
	memcpy(&__v, io_data(vcpu), 4);					\
	__v; })

#define run_to_report(vcpu) run_to_port(vcpu, PORT_REPORT)

/* The next exit is an OUT of @val to PORT_REPORT. */
#define EXPECT_REPORT(vcpu, val) do {					\
	uint32_t __got = run_to_report(vcpu);				\
	EXPECT_EQ((uint32_t)(val), __got)				\
		TH_LOG("reported 0x%x, expected 0x%x", __got,		\
		       (uint32_t)(val));				\
} while (0)

static int enable_split_irqchip(int vm_fd, uint64_t pins)
{
	struct kvm_enable_cap cap = {
		.cap = KVM_CAP_SPLIT_IRQCHIP, .args = { pins },
	};

	return ioctl(vm_fd, KVM_ENABLE_CAP, &cap);
}

/* KVM_CHECK_EXTENSION(KVM_CAP_SPLIT_IRQCHIP) on the device. */
static int device_has_split_irqchip(void)
{
	int fd = open(kvm_dev_path(), O_RDWR | O_CLOEXEC);
	int r;

	if (fd < 0)
		return 0;
	r = ioctl(fd, KVM_CHECK_EXTENSION, KVM_CAP_SPLIT_IRQCHIP);
	close(fd);
	return r > 0;
}

/* The first statement of every test: skips it without the capability. */
#define REQUIRE_SPLIT_IRQCHIP() do {					\
	if (!device_has_split_irqchip())				\
		SKIP(return, "%s has no KVM_CAP_SPLIT_IRQCHIP",	\
		     kvm_dev_path());					\
} while (0)

/* vm_create() with a split irqchip (24 IOAPIC pins, as QEMU). */
#define split_vm_create(vm) do {					\
	vm_create(_metadata, (vm));					\
	ASSERT_EQ(0, enable_split_irqchip((vm)->fd, 24))		\
		TH_LOG("KVM_ENABLE_CAP(SPLIT_IRQCHIP): %s",		\
		       strerror(errno));				\
} while (0)

static void vcpu_get_lapic(struct __test_metadata *_metadata,
			   struct vcpu *vcpu, struct kvm_lapic_state *s)
{
	memset(s, 0, sizeof(*s));
	ASSERT_EQ(0, ioctl(vcpu->fd, KVM_GET_LAPIC, s))
		TH_LOG("KVM_GET_LAPIC: %s", strerror(errno));
}

static void vcpu_set_lapic(struct __test_metadata *_metadata,
			   struct vcpu *vcpu, struct kvm_lapic_state *s)
{
	ASSERT_EQ(0, ioctl(vcpu->fd, KVM_SET_LAPIC, s))
		TH_LOG("KVM_SET_LAPIC: %s", strerror(errno));
}

static uint32_t lapic_reg(const struct kvm_lapic_state *s, unsigned int off)
{
	uint32_t v;

	memcpy(&v, s->regs + off, sizeof(v));
	return v;
}

static void lapic_set_reg(struct kvm_lapic_state *s, unsigned int off,
			  uint32_t v)
{
	memcpy(s->regs + off, &v, sizeof(v));
}

/*
 * KVM_GET_LAPIC then KVM_SET_LAPIC of the same state, as a VMM that loads
 * the vCPU state does (QEMU's kvm_put_apic()). KVM needs it before an
 * interrupt can reach a new vCPU by its physical APIC ID: it rebuilds its
 * APIC map (kvm_recalculate_apic_map()) while a vCPU is being created, when
 * that vCPU is not yet online, so the map leaves the newest vCPU out until
 * something marks it dirty (SET_LAPIC, a write to SPIV, ID, LDR, DFR or
 * APIC_BASE); until then physical-destination IPIs and MSIs to it are
 * dropped (KVM_SIGNAL_MSI returns 0), shorthand IPIs are not. The tests do
 * not depend on that.
 */
static void vcpu_refresh_lapic(struct __test_metadata *_metadata,
			       struct vcpu *vcpu)
{
	struct kvm_lapic_state s;

	vcpu_get_lapic(_metadata, vcpu, &s);
	vcpu_set_lapic(_metadata, vcpu, &s);
}

/* Whether @vector is set in the 256-bit register at @base (ISR, IRR, TMR). */
static int lapic_vector(const struct kvm_lapic_state *s, unsigned int base,
			int vector)
{
	return lapic_reg(s, base + 0x10 * (vector / 32)) >> (vector % 32) & 1;
}

/* The number of vectors set in the 256-bit register at @base. */
static int lapic_vectors(const struct kvm_lapic_state *s, unsigned int base)
{
	int n = 0;

	for (int i = 0; i < 8; i++)
		n += __builtin_popcount(lapic_reg(s, base + 0x10 * i));
	return n;
}

static uint32_t vcpu_mp_state(struct __test_metadata *_metadata,
			      struct vcpu *vcpu)
{
	struct kvm_mp_state mp = { .mp_state = 0xdead };

	EXPECT_EQ(0, ioctl(vcpu->fd, KVM_GET_MP_STATE, &mp))
		TH_LOG("KVM_GET_MP_STATE: %s", strerror(errno));
	return mp.mp_state;
}

static int vcpu_set_mp_state(struct vcpu *vcpu, uint32_t state)
{
	struct kvm_mp_state mp = { .mp_state = state };

	return ioctl(vcpu->fd, KVM_SET_MP_STATE, &mp);
}

/*
 * KVM_RUN must block until the watchdog (EINTR, KVM_EXIT_INTR) with the
 * vCPU halted in the kernel (KVM_MP_STATE_HALTED). A signal that lands
 * before the guest reached its HLT (a slow host) just runs it again.
 */
static void run_to_halted_eintr(struct __test_metadata *_metadata,
				struct vcpu *vcpu)
{
	uint32_t mp = 0;

	for (int i = 0; i < 10; i++) {
		int r = run_timed(vcpu, BLOCK_MS);

		if (r != -1 || errno != EINTR)
			log_exit(_metadata, vcpu);
		ASSERT_EQ(-1, r) TH_LOG("KVM_RUN returned: no blocking");
		ASSERT_EQ(EINTR, errno);
		ASSERT_EQ(KVM_EXIT_INTR, vcpu->run->exit_reason);
		mp = vcpu_mp_state(_metadata, vcpu);
		if (mp == KVM_MP_STATE_HALTED)
			return;
	}
	ASSERT_EQ(KVM_MP_STATE_HALTED, mp);
}

/* Copies a stub to @gpa with its 0x7fffffff immediate replaced by @imm. */
static void vm_load_patched(struct __test_metadata *_metadata, struct vm *vm,
			    uint64_t gpa, const uint8_t *start,
			    const uint8_t *end, uint32_t imm)
{
	const uint32_t marker = 0x7fffffff;
	uint8_t *p = vm->mem + gpa;
	size_t n = end - start;

	ASSERT_GE(64, n);
	memcpy(p, start, n);
	for (size_t i = 0; i + 4 <= n; i++) {
		if (!memcmp(p + i, &marker, 4)) {
			memcpy(p + i, &imm, 4);
			return;
		}
	}
	ASSERT_TRUE(0) TH_LOG("no immediate to patch");
}

/*
 * The IDT: counting stubs on 0x20-0xff (EOI through the xAPIC page or, with
 * @x2apic, MSR 0x80b), the #GP and NMI handlers; zeroes the counters.
 */
static void vm_set_handlers(struct __test_metadata *_metadata, struct vm *vm,
			    int x2apic)
{
	for (int v = 0x20; v < 0x100; v++) {
		uint64_t gpa = STUBS_GPA + (v - 0x20) * 64;

		if (x2apic)
			vm_load_patched(_metadata, vm, gpa, count_stub_x2apic,
					count_stub_x2apic_end, v);
		else
			vm_load_patched(_metadata, vm, gpa, count_stub_xapic,
					count_stub_xapic_end, v);
		vm_set_idt_gate64(vm, v, gpa);
	}
	vm_load(vm, GP_HANDLER_GPA, gp_handler, gp_handler_end);
	vm_set_idt_gate64(vm, 13, GP_HANDLER_GPA);
	vm_load(vm, NMI_HANDLER_GPA, nmi_handler, nmi_handler_end);
	vm_set_idt_gate64(vm, 2, NMI_HANDLER_GPA);
	memset(vm->mem + COUNTS_GPA, 0, 0x1000);
}

static void vcpu_set_rip_rsp(struct __test_metadata *_metadata,
			     struct vcpu *vcpu, uint64_t rip, uint64_t rsp)
{
	struct kvm_regs regs;

	vcpu_get_regs(_metadata, vcpu, &regs);
	regs.rip = rip;
	regs.rsp = rsp;
	vcpu_set_regs(_metadata, vcpu, &regs);
}

/* The supported CPUID with leaf 1 ECX &= ~@clear, on @vcpu. */
static void vcpu_set_cpuid_without(struct __test_metadata *_metadata,
				   struct vm *vm, struct vcpu *vcpu,
				   uint32_t clear)
{
	int n = 256;
	struct kvm_cpuid2 *cpuid = calloc(1, sizeof(*cpuid) +
					  n * sizeof(cpuid->entries[0]));

	ASSERT_NE(NULL, cpuid);
	cpuid->nent = n;
	ASSERT_EQ(0, ioctl(vm->sys, KVM_GET_SUPPORTED_CPUID, cpuid));
	for (uint32_t i = 0; i < cpuid->nent; i++)
		if (cpuid->entries[i].function == 1)
			cpuid->entries[i].ecx &= ~clear;
	ASSERT_EQ(0, ioctl(vcpu->fd, KVM_SET_CPUID2, cpuid))
		TH_LOG("KVM_SET_CPUID2: %s", strerror(errno));
	free(cpuid);
}

/* Leaf 1 ECX of KVM_GET_SUPPORTED_CPUID. */
static uint32_t supported_cpuid_1_ecx(struct __test_metadata *_metadata,
				      struct vm *vm)
{
	int n = 256;
	struct kvm_cpuid2 *cpuid = calloc(1, sizeof(*cpuid) +
					  n * sizeof(cpuid->entries[0]));
	uint32_t ecx = 0;

	if (!cpuid)
		return 0;
	cpuid->nent = n;
	EXPECT_EQ(0, ioctl(vm->sys, KVM_GET_SUPPORTED_CPUID, cpuid));
	for (uint32_t i = 0; i < cpuid->nent; i++)
		if (cpuid->entries[i].function == 1)
			ecx = cpuid->entries[i].ecx;
	free(cpuid);
	return ecx;
}

/* KVM_SIGNAL_MSI to APIC ID @dest, @address_hi as given. */
static int signal_msi_hi(struct vm *vm, uint32_t address_hi, uint32_t dest,
			 uint32_t vector, uint32_t flags)
{
	struct kvm_msi msi = {
		.address_lo = APIC_GPA | dest << 12, .address_hi = address_hi,
		.data = vector, .flags = flags,
	};

	return ioctl(vm->fd, KVM_SIGNAL_MSI, &msi);
}

static int signal_msi(struct vm *vm, uint32_t dest, uint32_t vector,
		      uint32_t flags)
{
	return signal_msi_hi(vm, 0, dest, vector, flags);
}

/*
 * A long-mode vCPU 0 on a VM with a split irqchip, with the handlers of
 * vm_set_handlers() (xAPIC EOI). RFLAGS.IF = 0.
 */
FIXTURE(lapic) {
	struct vm vm;
	struct vcpu vcpu;
};

FIXTURE_SETUP(lapic)
{
	REQUIRE_SPLIT_IRQCHIP();
	split_vm_create(&self->vm);
	vcpu_create(_metadata, &self->vm, 0, &self->vcpu);
	vcpu_setup_long(_metadata, &self->vm, &self->vcpu);
	vm_set_handlers(_metadata, &self->vm, 0);
}

FIXTURE_TEARDOWN(lapic)
{
	vcpu_destroy(&self->vm, &self->vcpu);
	vm_destroy(&self->vm);
}

/* ======================== KVM_CAP_SPLIT_IRQCHIP ======================== */

/* kvm_vm_ioctl_check_extension(): 1 on the device and on a VM. */
TEST(split_irqchip_is_reported_on_the_device_and_the_vm)
{
	int sys, vm;

	REQUIRE_SPLIT_IRQCHIP();
	sys = open_kvm_dev(_metadata);
	vm = create_vm(_metadata, sys);
	EXPECT_EQ(1, ioctl(sys, KVM_CHECK_EXTENSION, KVM_CAP_SPLIT_IRQCHIP));
	EXPECT_EQ(1, ioctl(vm, KVM_CHECK_EXTENSION, KVM_CAP_SPLIT_IRQCHIP));
	close(vm);
	close(sys);
}

/* kvm_vm_ioctl_enable_cap(): EEXIST once kvm->created_vcpus != 0. */
TEST(enable_split_irqchip_after_a_vcpu_exists_is_eexist)
{
	struct vm vm;
	struct vcpu vcpu;

	REQUIRE_SPLIT_IRQCHIP();
	vm_create_empty(_metadata, &vm);
	vcpu_create(_metadata, &vm, 0, &vcpu);
	EXPECT_ERRNO(EEXIST, enable_split_irqchip(vm.fd, 24));
	vcpu_destroy(&vm, &vcpu);
	vm_destroy(&vm);
}

/* Without an in-kernel LAPIC, KVM_GET/SET_LAPIC are EINVAL. */
TEST(lapic_ioctls_without_irqchip_are_einval)
{
	struct kvm_lapic_state s = {};
	struct vm vm;
	struct vcpu vcpu;

	REQUIRE_SPLIT_IRQCHIP();
	vm_create_empty(_metadata, &vm);
	vcpu_create(_metadata, &vm, 0, &vcpu);
	EXPECT_ERRNO(EINVAL, ioctl(vcpu.fd, KVM_GET_LAPIC, &s));
	EXPECT_ERRNO(EINVAL, ioctl(vcpu.fd, KVM_SET_LAPIC, &s));
	vcpu_destroy(&vm, &vcpu);
	vm_destroy(&vm);
}

/* irqchip_in_kernel() already: EEXIST. */
TEST(enable_split_irqchip_twice_is_eexist)
{
	struct vm vm;

	REQUIRE_SPLIT_IRQCHIP();
	vm_create_empty(_metadata, &vm);
	ASSERT_EQ(0, enable_split_irqchip(vm.fd, 24));
	EXPECT_ERRNO(EEXIST, enable_split_irqchip(vm.fd, 24));
	EXPECT_ERRNO(EEXIST, enable_split_irqchip(vm.fd, 0));
	vm_destroy(&vm);
}

/*
 * args[0] (the IOAPIC pins reserved for the VMM's routes) above
 * KVM_MAX_IRQ_ROUTES (4096) is EINVAL, checked before EEXIST; 0 and 4096
 * are accepted. A non-zero cap.flags is EINVAL for every VM capability.
 */
TEST(enable_split_irqchip_checks_pins_and_flags)
{
	struct kvm_enable_cap cap = {
		.cap = KVM_CAP_SPLIT_IRQCHIP, .flags = 1, .args = { 24 },
	};
	struct vm vm;
	int fd;

	REQUIRE_SPLIT_IRQCHIP();
	vm_create_empty(_metadata, &vm);
	EXPECT_ERRNO(EINVAL, enable_split_irqchip(vm.fd, 4097));
	EXPECT_ERRNO(EINVAL, enable_split_irqchip(vm.fd, 1ULL << 32));
	EXPECT_ERRNO(EINVAL, enable_split_irqchip(vm.fd, -1ULL));
	EXPECT_ERRNO(EINVAL, ioctl(vm.fd, KVM_ENABLE_CAP, &cap));
	EXPECT_EQ(0, enable_split_irqchip(vm.fd, 4096));
	EXPECT_ERRNO(EINVAL, enable_split_irqchip(vm.fd, 4097));
	fd = create_vm(_metadata, vm.sys);
	EXPECT_EQ(0, enable_split_irqchip(fd, 0));
	close(fd);
	vm_destroy(&vm);
}

/* KVM_CREATE_IRQCHIP on a split VM: irqchip_in_kernel(), EEXIST. */
TEST(create_irqchip_after_split_irqchip_is_eexist)
{
	struct vm vm;

	REQUIRE_SPLIT_IRQCHIP();
	vm_create_empty(_metadata, &vm);
	ASSERT_EQ(0, enable_split_irqchip(vm.fd, 24));
	EXPECT_ERRNO(EEXIST, ioctl(vm.fd, KVM_CREATE_IRQCHIP, 0));
	vm_destroy(&vm);
}

/*
 * And the other way round: a full in-kernel irqchip first, EEXIST. A KVM
 * built without CONFIG_KVM_IOAPIC (and rkvm, which has no in-kernel PIC
 * and IOAPIC yet) reports KVM_CAP_IRQCHIP for its local APICs but has no
 * KVM_CREATE_IRQCHIP: ENOTTY, and the split irqchip can still be enabled.
 */
TEST(enable_split_irqchip_after_create_irqchip_is_eexist)
{
	struct vm vm;
	int r;

	REQUIRE_SPLIT_IRQCHIP();
	vm_create_empty(_metadata, &vm);
	if (ioctl(vm.sys, KVM_CHECK_EXTENSION, KVM_CAP_IRQCHIP) <= 0)
		SKIP(goto out, "no KVM_CAP_IRQCHIP");
	r = ioctl(vm.fd, KVM_CREATE_IRQCHIP, 0);
	if (r == -1 && errno == ENOTTY) {
		EXPECT_EQ(0, enable_split_irqchip(vm.fd, 24));
		SKIP(goto out, "no in-kernel PIC and IOAPIC (ENOTTY)");
	}
	ASSERT_EQ(0, r) TH_LOG("KVM_CREATE_IRQCHIP: %s", strerror(errno));
	EXPECT_ERRNO(EEXIST, enable_split_irqchip(vm.fd, 24));
out:
	vm_destroy(&vm);
}

/* ========================== KVM_GET/SET_LAPIC ========================== */

/*
 * kvm_lapic_reset(): ID = vcpu_id << 24, version 0x50014, SPIV 0xff, DFR
 * all ones, TPR/LDR/ESR/ICR/timer 0, IRR/ISR/TMR empty, every LVT masked
 * except the BSP's LINT0, which is ExtINT (0x700, unmasked:
 * KVM_X86_QUIRK_LINT0_REENABLED). IA32_APIC_BASE 0xfee00900 on the BSP,
 * 0xfee00800 on an AP.
 */
TEST(lapic_of_new_vcpus_is_in_its_reset_state)
{
	static const unsigned int lvts[] = {
		APIC_LVTT, APIC_LVTTHMR, APIC_LVTPC, APIC_LVT0, APIC_LVT1,
		APIC_LVTERR,
	};
	struct kvm_lapic_state s;
	struct kvm_sregs sregs;
	struct vcpu vcpu[2];
	struct vm vm;

	REQUIRE_SPLIT_IRQCHIP();
	vm_create_empty(_metadata, &vm);
	ASSERT_EQ(0, enable_split_irqchip(vm.fd, 24));
	for (int i = 0; i < 2; i++)
		vcpu_create(_metadata, &vm, i, &vcpu[i]);
	for (int i = 0; i < 2; i++) {
		vcpu_get_lapic(_metadata, &vcpu[i], &s);
		EXPECT_EQ((uint32_t)i << 24, lapic_reg(&s, APIC_ID));
		EXPECT_EQ(KVM_APIC_VERSION, lapic_reg(&s, APIC_LVR));
		EXPECT_EQ(0xffu, lapic_reg(&s, APIC_SPIV));
		EXPECT_EQ(0xffffffffu, lapic_reg(&s, APIC_DFR));
		EXPECT_EQ(0u, lapic_reg(&s, APIC_TASKPRI));
		EXPECT_EQ(0u, lapic_reg(&s, APIC_PROCPRI));
		EXPECT_EQ(0u, lapic_reg(&s, APIC_LDR));
		EXPECT_EQ(0u, lapic_reg(&s, APIC_ESR));
		EXPECT_EQ(0u, lapic_reg(&s, APIC_ICR));
		EXPECT_EQ(0u, lapic_reg(&s, APIC_ICR2));
		EXPECT_EQ(0u, lapic_reg(&s, APIC_TDCR));
		EXPECT_EQ(0u, lapic_reg(&s, APIC_TMICT));
		EXPECT_EQ(0u, lapic_reg(&s, APIC_TMCCT));
		EXPECT_EQ(0, lapic_vectors(&s, APIC_IRR));
		EXPECT_EQ(0, lapic_vectors(&s, APIC_ISR));
		EXPECT_EQ(0, lapic_vectors(&s, APIC_TMR));
		for (unsigned int j = 0; j < ARRAY_SIZE(lvts); j++) {
			uint32_t want = i == 0 && lvts[j] == APIC_LVT0 ?
					APIC_DM_EXTINT : APIC_LVT_MASKED;

			EXPECT_EQ(want, lapic_reg(&s, lvts[j]))
				TH_LOG("vCPU %d LVT 0x%x", i, lvts[j]);
		}
		vcpu_get_sregs(_metadata, &vcpu[i], &sregs);
		EXPECT_EQ(APIC_GPA | APICBASE_ENABLE | (i ? 0 : APICBASE_BSP),
			  sregs.apic_base);
	}
	for (int i = 0; i < 2; i++)
		vcpu_destroy(&vm, &vcpu[i]);
	vm_destroy(&vm);
}

/*
 * kvm_apic_set_state() copies the register page as given (then recomputes
 * what it derives from it): ID, TPR, LDR, DFR, SPIV, the LVTs, ICR/ICR2
 * and TDCR read back unchanged.
 */
TEST_F(lapic, set_lapic_round_trips_the_writable_registers)
{
	static const struct { unsigned int reg; uint32_t val; } regs[] = {
		{ APIC_ID, 0x03000000 }, { APIC_TASKPRI, 0x20 },
		{ APIC_LDR, 0x01000000 }, { APIC_DFR, 0x0fffffff },
		{ APIC_SPIV, 0x1ff }, { APIC_LVTT, 0x000200ef },
		{ APIC_LVTTHMR, 0x00010031 }, { APIC_LVTPC, 0x00000400 },
		{ APIC_LVT0, 0x00008700 }, { APIC_LVT1, 0x00000400 },
		{ APIC_LVTERR, 0x000000fe }, { APIC_ICR, 0x000040ee },
		{ APIC_ICR2, 0x02000000 }, { APIC_TDCR, 0xb },
	};
	struct kvm_lapic_state s;
	struct kvm_sregs sregs;

	vcpu_get_lapic(_metadata, &self->vcpu, &s);
	for (unsigned int i = 0; i < ARRAY_SIZE(regs); i++)
		lapic_set_reg(&s, regs[i].reg, regs[i].val);
	vcpu_set_lapic(_metadata, &self->vcpu, &s);
	vcpu_get_lapic(_metadata, &self->vcpu, &s);
	for (unsigned int i = 0; i < ARRAY_SIZE(regs); i++) {
		EXPECT_EQ(regs[i].val, lapic_reg(&s, regs[i].reg))
			TH_LOG("register 0x%x", regs[i].reg);
	}
	/* The TPR is the guest's CR8. */
	vcpu_get_sregs(_metadata, &self->vcpu, &sregs);
	EXPECT_EQ(2u, sregs.cr8);
}

/*
 * After the copy kvm_apic_set_state() rewrites the version
 * (kvm_apic_set_version(): 0x1050014 here, CPUID has x2APIC) and zeroes
 * TMCCT when no timer runs; reserved LVT and TPR bits are kept as given.
 */
TEST_F(lapic, set_lapic_keeps_the_version_and_the_bits_given)
{
	struct kvm_lapic_state s;

	vcpu_get_lapic(_metadata, &self->vcpu, &s);
	EXPECT_EQ(KVM_APIC_VERSION_X2APIC, lapic_reg(&s, APIC_LVR));
	lapic_set_reg(&s, APIC_LVR, 0x12345678);
	lapic_set_reg(&s, APIC_TMCCT, 0x1234);
	lapic_set_reg(&s, APIC_LVTERR, 0xfffeffff);
	lapic_set_reg(&s, APIC_TASKPRI, 0xffffff00);
	vcpu_set_lapic(_metadata, &self->vcpu, &s);
	vcpu_get_lapic(_metadata, &self->vcpu, &s);
	EXPECT_EQ(KVM_APIC_VERSION_X2APIC, lapic_reg(&s, APIC_LVR));
	EXPECT_EQ(0u, lapic_reg(&s, APIC_TMCCT));
	EXPECT_EQ(0xfffeffffu, lapic_reg(&s, APIC_LVTERR));
	EXPECT_EQ(0xffffff00u, lapic_reg(&s, APIC_TASKPRI));
}

/* ========================== the xAPIC page ========================== */

GUEST_CODE(read_xapic, 64,
	"mov ebx, 0xfee00000\n"
	"mov eax, [rbx + 0x20]\n"
	REPORT_EAX
	"mov eax, [rbx + 0x30]\n"
	REPORT_EAX
	"mov eax, [rbx + 0xf0]\n"
	REPORT_EAX
	"mov eax, [rbx + 0x350]\n"
	REPORT_EAX
	"mov eax, [rbx + 0xe0]\n"
	REPORT_EAX
	"cli\n"
	"hlt\n");

/*
 * The xAPIC page at 0xfee00000 is the kernel's (apic_mmio_read()): no
 * KVM_EXIT_MMIO; ID 0, version 0x1050014 (the guest's CPUID has x2APIC),
 * SPIV 0xff, LINT0 ExtINT, DFR all ones.
 */
TEST_F(lapic, guest_reads_the_xapic_page_without_mmio_exits)
{
	vm_load_code(&self->vm, read_xapic);
	EXPECT_REPORT(&self->vcpu, 0);
	EXPECT_REPORT(&self->vcpu, KVM_APIC_VERSION_X2APIC);
	EXPECT_REPORT(&self->vcpu, 0xff);
	EXPECT_REPORT(&self->vcpu, APIC_DM_EXTINT);
	EXPECT_REPORT(&self->vcpu, 0xffffffff);
}

/*
 * An AP made runnable (KVM_SET_MP_STATE) reads its own ID, vcpu_id << 24,
 * and its own LINT0, masked.
 */
TEST(ap_reads_its_own_apic_id)
{
	struct vcpu vcpu[2];
	struct vm vm;

	REQUIRE_SPLIT_IRQCHIP();
	split_vm_create(&vm);
	for (int i = 0; i < 2; i++)
		vcpu_create(_metadata, &vm, i, &vcpu[i]);
	vcpu_setup_long(_metadata, &vm, &vcpu[1]);
	vm_load_code(&vm, read_xapic);
	ASSERT_EQ(0, vcpu_set_mp_state(&vcpu[1], KVM_MP_STATE_RUNNABLE));
	EXPECT_REPORT(&vcpu[1], 0x01000000);
	EXPECT_REPORT(&vcpu[1], KVM_APIC_VERSION_X2APIC);
	EXPECT_REPORT(&vcpu[1], 0xff);
	EXPECT_REPORT(&vcpu[1], APIC_LVT_MASKED);
	for (int i = 0; i < 2; i++)
		vcpu_destroy(&vm, &vcpu[i]);
	vm_destroy(&vm);
}

GUEST_CODE(xapic_hw_disabled, 64,
	"mov ecx, 0x1b\n"
	"rdmsr\n"
	"and eax, 0xfffff7ff\n"
	"wrmsr\n"
	"mov ebx, 0xfee00000\n"
	"mov eax, [rbx + 0x30]\n"
	REPORT_EAX
	"mov dword ptr [rbx + 0x80], 0x50\n"
	"mov rax, cr8\n"
	REPORT_EAX
	"cli\n"
	"hlt\n");

/*
 * With IA32_APIC_BASE.EN clear the page still belongs to the kernel
 * (KVM_X86_QUIRK_LAPIC_MMIO_HOLE): reads are all ones, writes are dropped,
 * no KVM_EXIT_MMIO.
 */
TEST_F(lapic, hw_disabled_apic_page_reads_all_ones)
{
	vm_load_code(&self->vm, xapic_hw_disabled);
	EXPECT_REPORT(&self->vcpu, 0xffffffff);
	EXPECT_REPORT(&self->vcpu, 0);
}

/* ========================== IPIs to self ========================== */

GUEST_CODE(self_ipi_shorthand, 64,
	XAPIC_ON
	"sti\n"
	"mov dword ptr [rbx + 0x300], 0x40040\n"
	WAIT_COUNT(0x40, 1)
	"nop\n"
	"nop\n"
	"mov eax, " COUNT(0x40) "\n"
	REPORT_EAX
	"cli\n"
	"hlt\n");

/*
 * ICR = self shorthand | fixed | 0x40: the handler runs once and its EOI
 * empties ISR (GET_LAPIC after the report).
 */
TEST_F(lapic, self_ipi_by_shorthand_runs_the_handler)
{
	struct kvm_lapic_state s;

	vm_load_code(&self->vm, self_ipi_shorthand);
	EXPECT_REPORT(&self->vcpu, 1);
	EXPECT_EQ(0x40u, mem_read32(&self->vm, LAST_GPA));
	vcpu_get_lapic(_metadata, &self->vcpu, &s);
	EXPECT_EQ(0, lapic_vectors(&s, APIC_ISR));
	EXPECT_EQ(0, lapic_vectors(&s, APIC_IRR));
	EXPECT_EQ(0u, lapic_reg(&s, APIC_PROCPRI));
	EXPECT_EQ(0x40040u, lapic_reg(&s, APIC_ICR));
}

GUEST_CODE(self_ipi_physical, 64,
	XAPIC_ON
	"sti\n"
	"mov dword ptr [rbx + 0x310], 0\n"
	"mov dword ptr [rbx + 0x300], 0x41\n"
	WAIT_COUNT(0x41, 1)
	"nop\n"
	"nop\n"
	"mov eax, " COUNT(0x41) "\n"
	REPORT_EAX
	"mov dword ptr [rbx + 0x310], 0x05000000\n"
	"mov dword ptr [rbx + 0x300], 0x41\n"
	"nop\n"
	"nop\n"
	"mov eax, " COUNT(0x41) "\n"
	REPORT_EAX
	"cli\n"
	"hlt\n");

/*
 * ICR2 = APIC ID 0, ICR = physical | fixed | 0x41: delivered to vCPU 0
 * itself; to APIC ID 5 (no such vCPU) nothing arrives.
 */
TEST_F(lapic, ipi_to_own_physical_id_runs_the_handler)
{
	struct kvm_lapic_state s;

	vm_load_code(&self->vm, self_ipi_physical);
	EXPECT_REPORT(&self->vcpu, 1);
	EXPECT_REPORT(&self->vcpu, 1);
	vcpu_get_lapic(_metadata, &self->vcpu, &s);
	EXPECT_EQ(0, lapic_vectors(&s, APIC_ISR));
	EXPECT_EQ(0, lapic_vectors(&s, APIC_IRR));
}

GUEST_CODE(self_ipi_isr, 64,
	XAPIC_ON
	"sti\n"
	"mov dword ptr [rbx + 0x300], 0x40042\n"
	WAIT_COUNT(0x42, 1)
	"mov eax, " COUNT(0x42) "\n"
	REPORT_EAX
	"cli\n"
	"hlt\n");

/*
 * In the handler, before its EOI: ISR has the vector, IRR not, PPR is the
 * vector's class (apic_update_ppr()); after the EOI all are clear.
 */
TEST_F(lapic, isr_holds_the_vector_until_eoi)
{
	struct kvm_lapic_state s;

	vm_load(&self->vm, ISR_HANDLER_GPA, isr_handler, isr_handler_end);
	vm_set_idt_gate64(&self->vm, 0x42, ISR_HANDLER_GPA);
	vm_load_code(&self->vm, self_ipi_isr);
	EXPECT_EQ(0x42u, run_to_port(&self->vcpu, PORT_HANDLER));
	vcpu_get_lapic(_metadata, &self->vcpu, &s);
	EXPECT_TRUE(lapic_vector(&s, APIC_ISR, 0x42));
	EXPECT_EQ(1, lapic_vectors(&s, APIC_ISR));
	EXPECT_EQ(0, lapic_vectors(&s, APIC_IRR));
	EXPECT_EQ(0x40u, lapic_reg(&s, APIC_PROCPRI));
	EXPECT_REPORT(&self->vcpu, 1);
	vcpu_get_lapic(_metadata, &self->vcpu, &s);
	EXPECT_EQ(0, lapic_vectors(&s, APIC_ISR));
	EXPECT_EQ(0u, lapic_reg(&s, APIC_PROCPRI));
}

GUEST_CODE(self_ipi_disabled, 64,
	"mov ebx, 0xfee00000\n"
	"sti\n"
	"mov dword ptr [rbx + 0x300], 0x40043\n"
	"nop\n"
	"nop\n"
	"mov eax, " COUNT(0x43) "\n"
	REPORT_EAX
	"mov eax, [rbx + 0x220]\n"
	REPORT_EAX
	"cli\n"
	"hlt\n");

/*
 * SPIV bit 8 clear (the reset state): the APIC sends, but drops a fixed
 * interrupt it receives (__apic_accept_irq(): !apic_enabled()).
 */
TEST_F(lapic, software_disabled_apic_drops_fixed_interrupts)
{
	struct kvm_lapic_state s;

	vm_load_code(&self->vm, self_ipi_disabled);
	EXPECT_REPORT(&self->vcpu, 0);
	EXPECT_REPORT(&self->vcpu, 0);
	vcpu_get_lapic(_metadata, &self->vcpu, &s);
	EXPECT_EQ(0, lapic_vectors(&s, APIC_IRR));
	EXPECT_EQ(0x40043u, lapic_reg(&s, APIC_ICR));
}

/* ========================== TPR and CR8 ========================== */

GUEST_CODE(tpr_cr8, 64,
	"mov ebx, 0xfee00000\n"
	"mov dword ptr [rbx + 0x80], 0x50\n"
	"mov rax, cr8\n"
	REPORT_EAX
	"mov eax, 3\n"
	"mov cr8, rax\n"
	"mov eax, [rbx + 0x80]\n"
	REPORT_EAX
	"cli\n"
	"hlt\n");

/* CR8 is TPR[7:4] (kvm_get_cr8(), kvm_set_cr8()): both ways. */
TEST_F(lapic, tpr_and_cr8_are_one_register)
{
	struct kvm_lapic_state s;
	struct kvm_sregs sregs;

	vm_load_code(&self->vm, tpr_cr8);
	EXPECT_REPORT(&self->vcpu, 5);
	vcpu_get_sregs(_metadata, &self->vcpu, &sregs);
	EXPECT_EQ(5u, sregs.cr8);
	EXPECT_EQ(5u, self->vcpu.run->cr8);
	EXPECT_REPORT(&self->vcpu, 0x30);
	vcpu_get_lapic(_metadata, &self->vcpu, &s);
	EXPECT_EQ(0x30u, lapic_reg(&s, APIC_TASKPRI));
	/*
	 * PPR is not checked here: kvm_intel with the TPR shadow syncs TPR
	 * back at the exit but recomputes PPR only at the next interrupt
	 * event, so KVM_GET_LAPIC there still shows the old PPR (0x50, seen
	 * in the Bochs machine); kvm_amd and rkvm show 0x30.
	 */
}

GUEST_CODE(tpr_blocks_mmio, 64,
	XAPIC_ON
	"mov dword ptr [rbx + 0x80], 0x50\n"
	"sti\n"
	"mov dword ptr [rbx + 0x300], 0x40055\n"
	"mov dword ptr [rbx + 0x300], 0x40065\n"
	WAIT_COUNT(0x65, 1)
	"nop\n"
	"nop\n"
	"mov eax, " COUNT(0x55) "\n"
	REPORT_EAX
	"mov eax, [rbx + 0x220]\n"
	REPORT_EAX
	"mov dword ptr [rbx + 0x80], 0x40\n"
	WAIT_COUNT(0x55, 1)
	"mov eax, " COUNT(0x55) "\n"
	REPORT_EAX
	"mov eax, [0x20400]\n"
	REPORT_EAX
	"cli\n"
	"hlt\n");

/*
 * With TPR 0x50, 0x65 is delivered and 0x55 (class 5, not above the TPR's)
 * waits in IRR (apic_has_interrupt_for_ppr()); lowering TPR to 0x40
 * through the page delivers it.
 */
TEST_F(lapic, interrupt_at_tpr_class_waits_until_tpr_is_lowered)
{
	struct kvm_lapic_state s;

	vm_load_code(&self->vm, tpr_blocks_mmio);
	EXPECT_REPORT(&self->vcpu, 0);
	EXPECT_REPORT(&self->vcpu, 1u << (0x55 - 0x40));
	vcpu_get_lapic(_metadata, &self->vcpu, &s);
	EXPECT_TRUE(lapic_vector(&s, APIC_IRR, 0x55));
	EXPECT_EQ(0, lapic_vectors(&s, APIC_ISR));
	EXPECT_EQ(0x50u, lapic_reg(&s, APIC_PROCPRI));
	EXPECT_EQ(1u, mem_read32(&self->vm, COUNT_GPA(0x65)));
	EXPECT_REPORT(&self->vcpu, 1);
	EXPECT_REPORT(&self->vcpu, 0x55);
	vcpu_get_lapic(_metadata, &self->vcpu, &s);
	EXPECT_EQ(0, lapic_vectors(&s, APIC_IRR));
}

GUEST_CODE(tpr_blocks_cr8, 64,
	XAPIC_ON
	"mov eax, 5\n"
	"mov cr8, rax\n"
	"sti\n"
	"mov dword ptr [rbx + 0x300], 0x40055\n"
	"nop\n"
	"nop\n"
	"mov eax, " COUNT(0x55) "\n"
	REPORT_EAX
	"mov eax, 4\n"
	"mov cr8, rax\n"
	"nop\n"
	"nop\n"
	"mov eax, " COUNT(0x55) "\n"
	REPORT_EAX
	"cli\n"
	"hlt\n");

/* The same with CR8 = 5, then 4: the write to CR8 delivers it. */
TEST_F(lapic, interrupt_at_cr8_class_waits_until_cr8_is_lowered)
{
	struct kvm_lapic_state s;

	vm_load_code(&self->vm, tpr_blocks_cr8);
	EXPECT_REPORT(&self->vcpu, 0);
	vcpu_get_lapic(_metadata, &self->vcpu, &s);
	EXPECT_TRUE(lapic_vector(&s, APIC_IRR, 0x55));
	EXPECT_EQ(0x50u, lapic_reg(&s, APIC_TASKPRI));
	EXPECT_REPORT(&self->vcpu, 1);
	vcpu_get_lapic(_metadata, &self->vcpu, &s);
	EXPECT_EQ(0, lapic_vectors(&s, APIC_IRR));
	EXPECT_EQ(0x40u, lapic_reg(&s, APIC_TASKPRI));
}

/* ========================== x2APIC ========================== */

GUEST_CODE(x2apic_regs, 64,
	"mov ecx, 0x1b\n"
	"rdmsr\n"
	REPORT_EAX
	"or eax, 0x400\n"
	"wrmsr\n"
	"rdmsr\n"
	REPORT_EAX
	"mov ecx, 0x802\n"
	"rdmsr\n"
	REPORT_EAX
	"mov ecx, 0x803\n"
	"rdmsr\n"
	REPORT_EAX
	"mov ecx, 0x80d\n"
	"rdmsr\n"
	REPORT_EAX
	"mov ecx, 0x80f\n"
	"rdmsr\n"
	REPORT_EAX
	"mov ebx, 0xfee00000\n"
	"mov eax, [rbx + 0x30]\n"
	REPORT_EAX
	"mov eax, [" XS(GP_COUNT_GPA) "]\n"
	REPORT_EAX
	"cli\n"
	"hlt\n");

/*
 * IA32_APIC_BASE 0xfee00900 -> 0xfee00d00 (EXTD): MSR 0x802 is the x2APIC
 * ID (vcpu_id), 0x803 the version, 0x80d the LDR derived from the ID
 * (cluster 0, bit 0), 0x80f SPIV; the xAPIC page now reads all ones
 * (KVM_X86_QUIRK_LAPIC_MMIO_HOLE), still without an exit.
 */
TEST_F(lapic, x2apic_msrs_read_id_version_and_ldr)
{
	struct kvm_sregs sregs;

	vm_load_code(&self->vm, x2apic_regs);
	EXPECT_REPORT(&self->vcpu, 0xfee00900);
	EXPECT_REPORT(&self->vcpu, 0xfee00d00);
	EXPECT_REPORT(&self->vcpu, 0);
	EXPECT_REPORT(&self->vcpu, KVM_APIC_VERSION_X2APIC);
	EXPECT_REPORT(&self->vcpu, 1);
	EXPECT_REPORT(&self->vcpu, 0xff);
	EXPECT_REPORT(&self->vcpu, 0xffffffff);
	EXPECT_REPORT(&self->vcpu, 0);
	vcpu_get_sregs(_metadata, &self->vcpu, &sregs);
	EXPECT_EQ(0xfee00d00u, sregs.apic_base);
}

/* The x2APIC ID of vCPU 3 (made runnable) is 3; its LDR cluster 0, bit 3. */
TEST(x2apic_id_is_the_vcpu_id)
{
	struct vcpu vcpu;
	struct vm vm;

	REQUIRE_SPLIT_IRQCHIP();
	split_vm_create(&vm);
	vcpu_create(_metadata, &vm, 3, &vcpu);
	vcpu_setup_long(_metadata, &vm, &vcpu);
	vm_set_handlers(_metadata, &vm, 1);
	vm_load_code(&vm, x2apic_regs);
	ASSERT_EQ(0, vcpu_set_mp_state(&vcpu, KVM_MP_STATE_RUNNABLE));
	EXPECT_REPORT(&vcpu, 0xfee00800);
	EXPECT_REPORT(&vcpu, 0xfee00c00);
	EXPECT_REPORT(&vcpu, 3);
	EXPECT_REPORT(&vcpu, KVM_APIC_VERSION_X2APIC);
	EXPECT_REPORT(&vcpu, 1u << 3);
	vcpu_destroy(&vm, &vcpu);
	vm_destroy(&vm);
}

GUEST_CODE(x2apic_self_ipi, 64,
	X2APIC_ON
	"sti\n"
	"mov ecx, 0x83f\n"
	"mov eax, 0x44\n"
	"xor edx, edx\n"
	"wrmsr\n"
	WAIT_COUNT(0x44, 1)
	"mov ecx, 0x830\n"
	"mov eax, 0x45\n"
	"xor edx, edx\n"
	"wrmsr\n"
	WAIT_COUNT(0x45, 1)
	"nop\n"
	"nop\n"
	"mov eax, " COUNT(0x44) "\n"
	REPORT_EAX
	"mov eax, " COUNT(0x45) "\n"
	REPORT_EAX
	"cli\n"
	"hlt\n");

/*
 * SELF_IPI (MSR 0x83f) and a 64-bit ICR write (MSR 0x830, destination 0 in
 * EDX) each run the handler once; its EOI through MSR 0x80b empties ISR.
 */
TEST_F(lapic, x2apic_self_ipi_and_icr_run_the_handler)
{
	struct kvm_lapic_state s;

	vm_set_handlers(_metadata, &self->vm, 1);
	vm_load_code(&self->vm, x2apic_self_ipi);
	EXPECT_REPORT(&self->vcpu, 1);
	EXPECT_REPORT(&self->vcpu, 1);
	vcpu_get_lapic(_metadata, &self->vcpu, &s);
	EXPECT_EQ(0, lapic_vectors(&s, APIC_ISR));
	EXPECT_EQ(0, lapic_vectors(&s, APIC_IRR));
}

/* The #GP count after the access just before. */
#define REPORT_GP							\
	"mov eax, [" XS(GP_COUNT_GPA) "]\n"				\
	REPORT_EAX

GUEST_CODE(x2apic_bad_access, 64,
	X2APIC_ON
	"xor eax, eax\n"
	"xor edx, edx\n"
	"mov ecx, 0x831\n"
	"rdmsr\n"
	REPORT_GP
	"xor eax, eax\n"
	"mov ecx, 0x831\n"
	"wrmsr\n"
	REPORT_GP
	"xor eax, eax\n"
	"mov ecx, 0x803\n"
	"wrmsr\n"
	REPORT_GP
	"xor eax, eax\n"
	"mov ecx, 0x802\n"
	"wrmsr\n"
	REPORT_GP
	"mov ecx, 0x80e\n"
	"rdmsr\n"
	REPORT_GP
	"mov eax, 0x100\n"
	"xor edx, edx\n"
	"mov ecx, 0x83f\n"
	"wrmsr\n"
	REPORT_GP
	"mov ecx, 0x83f\n"
	"rdmsr\n"
	REPORT_GP
	"mov eax, 0x10\n"
	"mov edx, 1\n"
	"mov ecx, 0x808\n"
	"wrmsr\n"
	REPORT_GP
	"mov ecx, 0x808\n"
	"rdmsr\n"
	REPORT_GP
	"mov ecx, 0x1b\n"
	"mov eax, 0xfee00900\n"
	"xor edx, edx\n"
	"wrmsr\n"
	REPORT_GP
	"mov eax, [" XS(GP_ERR_GPA) "]\n"
	REPORT_EAX
	"cli\n"
	"hlt\n");

/*
 * #GP (kvm_x2apic_msr_read/write() return 1): ICR2 (0x831) read and write,
 * a write to the version (0x803) or ID (0x802), DFR (0x80e, xAPIC only),
 * SELF_IPI with bits above the vector and its read (write-only), TPR with
 * bits 63:32 set; a plain TPR read does not fault. Leaving x2APIC for xAPIC
 * directly (EXTD 1 -> 0 with EN 1) faults too. Error code 0.
 */
TEST_F(lapic, x2apic_invalid_accesses_are_gp)
{
	vm_set_handlers(_metadata, &self->vm, 1);
	vm_load_code(&self->vm, x2apic_bad_access);
	for (uint32_t i = 1; i <= 8; i++)
		EXPECT_REPORT(&self->vcpu, i);
	EXPECT_REPORT(&self->vcpu, 8);
	EXPECT_REPORT(&self->vcpu, 9);
	EXPECT_REPORT(&self->vcpu, 0);
}

GUEST_CODE(xapic_x2apic_msr, 64,
	"mov ecx, 0x802\n"
	"rdmsr\n"
	REPORT_GP
	"mov ecx, 0x83f\n"
	"mov eax, 0x40\n"
	"xor edx, edx\n"
	"wrmsr\n"
	REPORT_GP
	"cli\n"
	"hlt\n");

/* In xAPIC mode the x2APIC MSRs are #GP (!apic_x2apic_mode()). */
TEST_F(lapic, x2apic_msrs_in_xapic_mode_are_gp)
{
	vm_load_code(&self->vm, xapic_x2apic_msr);
	EXPECT_REPORT(&self->vcpu, 1);
	EXPECT_REPORT(&self->vcpu, 2);
}

GUEST_CODE(x2apic_enable, 64,
	"mov ecx, 0x1b\n"
	"rdmsr\n"
	"or eax, 0x400\n"
	"wrmsr\n"
	REPORT_GP
	"rdmsr\n"
	REPORT_EAX
	"cli\n"
	"hlt\n");

/*
 * kvm_apic_set_base(): EXTD is a reserved bit unless the guest's CPUID has
 * x2APIC (CPUID.1:ECX[21]): #GP, IA32_APIC_BASE unchanged.
 */
TEST_F(lapic, x2apic_enable_without_the_cpuid_bit_is_gp)
{
	vcpu_set_cpuid_without(_metadata, &self->vm, &self->vcpu,
			       CPUID_1_ECX_X2APIC);
	vm_load_code(&self->vm, x2apic_enable);
	EXPECT_REPORT(&self->vcpu, 1);
	EXPECT_REPORT(&self->vcpu, 0xfee00900);
}

/* ================== KVM_INTERRUPT (the VMM's PIC) ================== */

GUEST_CODE(extint_wait, 64,
	WAIT_COUNT(0x30, 1)
	"mov eax, " COUNT(0x30) "\n"
	REPORT_EAX
	"cli\n"
	"hlt\n");

/*
 * With a split irqchip KVM_INTERRUPT is the VMM's PIC output, an ExtINT
 * taken through LINT0 (ExtINT on the BSP at reset), even with the APIC
 * software-disabled: one may be pending (a second is EEXIST:
 * kvm_vcpu_ioctl_interrupt()); it is delivered through the IDT and never
 * enters IRR or ISR.
 */
TEST_F(lapic, kvm_interrupt_is_an_extint_through_lint0)
{
	struct kvm_interrupt irq = { .irq = 0x30 };
	struct kvm_lapic_state s;

	vm_load_code(&self->vm, extint_wait);
	ASSERT_EQ(0, ioctl(self->vcpu.fd, KVM_INTERRUPT, &irq));
	irq.irq = 0x31;
	EXPECT_ERRNO(EEXIST, ioctl(self->vcpu.fd, KVM_INTERRUPT, &irq));
	irq.irq = 256;
	EXPECT_ERRNO(EINVAL, ioctl(self->vcpu.fd, KVM_INTERRUPT, &irq));
	vcpu_get_lapic(_metadata, &self->vcpu, &s);
	EXPECT_EQ(0, lapic_vectors(&s, APIC_IRR));
	EXPECT_REPORT(&self->vcpu, 1);
	EXPECT_EQ(0x30u, mem_read32(&self->vm, LAST_GPA));
	EXPECT_EQ(0u, mem_read32(&self->vm, COUNT_GPA(0x31)));
	vcpu_get_lapic(_metadata, &self->vcpu, &s);
	EXPECT_EQ(0, lapic_vectors(&s, APIC_IRR));
	EXPECT_EQ(0, lapic_vectors(&s, APIC_ISR));
	irq.irq = 0x31;
	EXPECT_EQ(0, ioctl(self->vcpu.fd, KVM_INTERRUPT, &irq));
}

/* ========================== KVM_SIGNAL_MSI ========================== */

GUEST_CODE(msi_wait, 64,
	XAPIC_ON
	"xor eax, eax\n"
	REPORT_EAX
	WAIT_COUNT(0x46, 1)
	"mov eax, " COUNT(0x46) "\n"
	REPORT_EAX
	"mov eax, [" XS(LAST_GPA) "]\n"
	REPORT_EAX
	"cli\n"
	"hlt\n");

/*
 * The guest halts with IF = 1 (blocked in KVM_RUN); KVM_SIGNAL_MSI to APIC
 * ID 0, vector 0x46, returns 1 (one vCPU took it: kvm_set_msi()) and the
 * next KVM_RUN wakes the vCPU into its handler.
 */
TEST_F(lapic, signal_msi_wakes_a_halted_vcpu_into_its_handler)
{
	vm_load_code(&self->vm, msi_wait);
	EXPECT_REPORT(&self->vcpu, 0);
	run_to_halted_eintr(_metadata, &self->vcpu);
	EXPECT_EQ(1, signal_msi(&self->vm, 0, 0x46, 0));
	EXPECT_REPORT(&self->vcpu, 1);
	EXPECT_REPORT(&self->vcpu, 0x46);
	EXPECT_EQ(KVM_MP_STATE_RUNNABLE, vcpu_mp_state(_metadata, &self->vcpu));
}

/*
 * kvm_send_userspace_msi(): flags other than KVM_MSI_VALID_DEVID are
 * EINVAL. An MSI to an APIC ID no vCPU has returns 0 (delivered to none),
 * as does one to a vCPU whose APIC is software-disabled (not accepted);
 * once SPIV enables it, 1, and the vector is in IRR.
 */
TEST_F(lapic, signal_msi_checks_flags_and_counts_the_vcpus_it_reached)
{
	struct kvm_lapic_state s;

	vcpu_refresh_lapic(_metadata, &self->vcpu);
	EXPECT_ERRNO(EINVAL, signal_msi(&self->vm, 0, 0x46, 2));
	EXPECT_ERRNO(EINVAL, signal_msi(&self->vm, 0, 0x46, 0x80000000));
	EXPECT_EQ(0, signal_msi(&self->vm, 0, 0x46, 0));
	EXPECT_EQ(0, signal_msi(&self->vm, 7, 0x46, 0));
	vcpu_get_lapic(_metadata, &self->vcpu, &s);
	EXPECT_EQ(0, lapic_vectors(&s, APIC_IRR));
	lapic_set_reg(&s, APIC_SPIV, 0x1ff);
	vcpu_set_lapic(_metadata, &self->vcpu, &s);
	EXPECT_EQ(0, signal_msi(&self->vm, 7, 0x46, 0));
	EXPECT_EQ(1, signal_msi(&self->vm, 0, 0x46, 0));
	vcpu_get_lapic(_metadata, &self->vcpu, &s);
	EXPECT_TRUE(lapic_vector(&s, APIC_IRR, 0x46));
	EXPECT_EQ(1, lapic_vectors(&s, APIC_IRR));
}

/* Without an in-kernel irqchip KVM_SIGNAL_MSI is EINVAL. */
TEST(signal_msi_without_irqchip_is_einval)
{
	struct vm vm;
	struct vcpu vcpu;

	REQUIRE_SPLIT_IRQCHIP();
	vm_create(_metadata, &vm);
	vcpu_create(_metadata, &vm, 0, &vcpu);
	EXPECT_ERRNO(EINVAL, signal_msi(&vm, 0, 0x46, 0));
	vcpu_destroy(&vm, &vcpu);
	vm_destroy(&vm);
}

/* ================ GSI routing, KVM_IRQ_LINE and KVM_IRQFD ================ */

/* KVM_CHECK_EXTENSION on @fd. */
static int check_ext(int fd, long cap)
{
	return ioctl(fd, KVM_CHECK_EXTENSION, cap);
}

/* An MSI routing entry for @gsi: APIC ID @dest, @vector, level if @level. */
static struct kvm_irq_routing_entry msi_route(uint32_t gsi, uint32_t dest,
					      uint32_t vector, int level)
{
	struct kvm_irq_routing_entry e = {
		.gsi = gsi, .type = KVM_IRQ_ROUTING_MSI,
		.u.msi = {
			.address_lo = APIC_GPA | dest << 12,
			.data = vector | (level ? 1u << 15 : 0),
		},
	};

	return e;
}

/* KVM_SET_GSI_ROUTING with @n entries and @flags. */
static int set_routing(struct vm *vm, const struct kvm_irq_routing_entry *e,
		       uint32_t n, uint32_t flags)
{
	struct kvm_irq_routing *r = calloc(1, sizeof(*r) + (n ? n : 1) *
					   sizeof(r->entries[0]));
	int ret, err;

	if (!r)
		return -1;
	r->nr = n;
	r->flags = flags;
	if (n)
		memcpy(r->entries, e, n * sizeof(*e));
	ret = ioctl(vm->fd, KVM_SET_GSI_ROUTING, r);
	err = errno;
	free(r);
	errno = err;
	return ret;
}

/* KVM_IRQ_LINE_STATUS; returns the ioctl's result, the status in *status. */
static int irq_line_status(struct vm *vm, uint32_t gsi, uint32_t level,
			   int32_t *status)
{
	struct kvm_irq_level l = { .irq = gsi, .level = level };
	int r = ioctl(vm->fd, KVM_IRQ_LINE_STATUS, &l);

	*status = l.status;
	return r;
}

static int irqfd(struct vm *vm, int fd, uint32_t gsi, uint32_t flags)
{
	struct kvm_irqfd a = { .fd = fd, .gsi = gsi, .flags = flags };

	return ioctl(vm->fd, KVM_IRQFD, &a);
}

/* Whether @vector is requested in @vcpu's APIC. */
static int irr_has(struct __test_metadata *_metadata, struct vcpu *vcpu,
		   int vector)
{
	struct kvm_lapic_state s;

	vcpu_get_lapic(_metadata, vcpu, &s);
	return lapic_vector(&s, APIC_IRR, vector);
}

/* Whether @vector gets requested within a second (KVM injects an irqfd
 * already signalled at assign from a work item). */
static int irr_gets(struct __test_metadata *_metadata, struct vcpu *vcpu,
		    int vector)
{
	for (int i = 0; i < 100; i++) {
		if (irr_has(_metadata, vcpu, vector))
			return 1;
		usleep(10000);
	}
	return 0;
}

/* Empties IRR through KVM_SET_LAPIC. */
static void vcpu_clear_irr(struct __test_metadata *_metadata,
			   struct vcpu *vcpu)
{
	struct kvm_lapic_state s;

	vcpu_get_lapic(_metadata, vcpu, &s);
	for (int i = 0; i < 8; i++)
		lapic_set_reg(&s, APIC_IRR + 0x10 * i, 0);
	vcpu_set_lapic(_metadata, vcpu, &s);
}

/* SPIV = 0x1ff through KVM_SET_LAPIC: the APIC accepts fixed interrupts. */
static void vcpu_enable_apic(struct __test_metadata *_metadata,
			     struct vcpu *vcpu)
{
	struct kvm_lapic_state s;

	vcpu_get_lapic(_metadata, vcpu, &s);
	lapic_set_reg(&s, APIC_SPIV, 0x1ff);
	vcpu_set_lapic(_metadata, vcpu, &s);
}

/* ============================ KVM_CAP_X2APIC_API ============================ */

static int enable_x2apic_api(int vm_fd, uint64_t flags)
{
	struct kvm_enable_cap cap = {
		.cap = KVM_CAP_X2APIC_API, .args = { flags },
	};

	return ioctl(vm_fd, KVM_ENABLE_CAP, &cap);
}

/* The host switches @vcpu's APIC to x2APIC mode (KVM_SET_SREGS). */
static void vcpu_enter_x2apic(struct __test_metadata *_metadata,
			      struct vcpu *vcpu)
{
	struct kvm_sregs sregs;

	vcpu_get_sregs(_metadata, vcpu, &sregs);
	sregs.apic_base = APIC_GPA | APICBASE_ENABLE | APICBASE_X2APIC |
			  (vcpu->id ? 0 : APICBASE_BSP);
	vcpu_set_sregs(_metadata, vcpu, &sregs);
}

/*
 * KVM_CAP_X2APIC_API offers USE_32BIT_IDS and DISABLE_BROADCAST_QUIRK (KVM
 * also has EOI-broadcast flags, which rkvm does not); KVM_ENABLE_CAP takes
 * them at any time, with or without an irqchip, again and again; an unknown
 * flag or non-zero cap.flags is EINVAL (kvm_vm_ioctl_enable_cap()).
 */
TEST(x2apic_api_flags_and_enable_cap)
{
	struct kvm_enable_cap cap = {
		.cap = KVM_CAP_X2APIC_API, .flags = 1,
	};
	struct vm vm;

	vm_create(_metadata, &vm);
	EXPECT_EQ(3, check_ext(vm.sys, KVM_CAP_X2APIC_API) & 3);
	EXPECT_EQ(3, check_ext(vm.fd, KVM_CAP_X2APIC_API) & 3);
	EXPECT_ERRNO(EINVAL, enable_x2apic_api(vm.fd, 1ULL << 40));
	EXPECT_ERRNO(EINVAL, ioctl(vm.fd, KVM_ENABLE_CAP, &cap));
	EXPECT_EQ(0, enable_x2apic_api(vm.fd, 0));
	EXPECT_EQ(0, enable_x2apic_api(vm.fd, KVM_X2APIC_API_USE_32BIT_IDS));
	EXPECT_EQ(0, enable_x2apic_api(vm.fd, KVM_X2APIC_API_USE_32BIT_IDS |
					KVM_X2APIC_API_DISABLE_BROADCAST_QUIRK));
	EXPECT_EQ(0, enable_split_irqchip(vm.fd, 24));
	EXPECT_EQ(0, enable_x2apic_api(vm.fd, KVM_X2APIC_API_USE_32BIT_IDS));
	vm_destroy(&vm);
}

/*
 * An APIC in x2APIC mode (kvm_apic_state_fixup()): by default KVM_GET_LAPIC
 * shows the x2APIC ID in ID bits 31:24 and KVM_SET_LAPIC ignores the ID
 * given; with USE_32BIT_IDS the ID is the whole x2APIC ID, and a SET_LAPIC
 * with any other is EINVAL.
 */
TEST(x2apic_format_get_set_lapic_carry_the_whole_id)
{
	struct kvm_lapic_state s;
	struct vcpu vcpu;
	struct vm vm;

	REQUIRE_SPLIT_IRQCHIP();
	split_vm_create(&vm);
	vcpu_create(_metadata, &vm, 3, &vcpu);
	vcpu_setup_long(_metadata, &vm, &vcpu);
	vcpu_enter_x2apic(_metadata, &vcpu);
	vcpu_get_lapic(_metadata, &vcpu, &s);
	EXPECT_EQ(3u << 24, lapic_reg(&s, APIC_ID));
	EXPECT_EQ(1u << 3, lapic_reg(&s, APIC_LDR));
	lapic_set_reg(&s, APIC_ID, 0x55u << 24);
	vcpu_set_lapic(_metadata, &vcpu, &s);
	vcpu_get_lapic(_metadata, &vcpu, &s);
	EXPECT_EQ(3u << 24, lapic_reg(&s, APIC_ID));

	ASSERT_EQ(0, enable_x2apic_api(vm.fd, KVM_X2APIC_API_USE_32BIT_IDS));
	vcpu_get_lapic(_metadata, &vcpu, &s);
	EXPECT_EQ(3u, lapic_reg(&s, APIC_ID));
	lapic_set_reg(&s, APIC_ID, 3u << 24);
	EXPECT_ERRNO(EINVAL, ioctl(vcpu.fd, KVM_SET_LAPIC, &s));
	lapic_set_reg(&s, APIC_ID, 3);
	vcpu_set_lapic(_metadata, &vcpu, &s);
	vcpu_destroy(&vm, &vcpu);
	vm_destroy(&vm);
}

/*
 * MSI address_hi (kvm_msi_to_lapic_irq(), kvm_msi_route_invalid()): by
 * default it is ignored; with USE_32BIT_IDS its bits 31:8 are destination
 * bits 31:8 (so 0x100 misses vCPU 0), and bits 7:0 set make the MSI
 * EINVAL, for KVM_SIGNAL_MSI and for a route of KVM_SET_GSI_ROUTING.
 */
TEST_F(lapic, x2apic_format_msi_destinations)
{
	struct kvm_irq_routing_entry e = msi_route(0, 0, 0x46, 0);

	vcpu_enable_apic(_metadata, &self->vcpu);
	EXPECT_EQ(1, signal_msi_hi(&self->vm, 0x100, 0, 0x46, 0));
	EXPECT_EQ(1, signal_msi_hi(&self->vm, 0x1, 0, 0x46, 0));
	ASSERT_EQ(0, enable_x2apic_api(self->vm.fd, KVM_X2APIC_API_USE_32BIT_IDS));
	EXPECT_EQ(0, signal_msi_hi(&self->vm, 0x100, 0, 0x46, 0));
	EXPECT_ERRNO(EINVAL, signal_msi_hi(&self->vm, 0x1, 0, 0x46, 0));
	EXPECT_EQ(1, signal_msi_hi(&self->vm, 0, 0, 0x46, 0));
	e.u.msi.address_hi = 1;
	EXPECT_ERRNO(EINVAL, set_routing(&self->vm, &e, 1, 0));
	e.u.msi.address_hi = 0x100;
	EXPECT_EQ(0, set_routing(&self->vm, &e, 1, 0));
}

/*
 * KVM's broadcast quirk (kvm_apic_mda(), kvm_apic_is_broadcast_dest()): a
 * device's MSI to 0xff reaches an APIC in x2APIC mode, until
 * DISABLE_BROADCAST_QUIRK; then only the x2APIC broadcast (all ones, with
 * USE_32BIT_IDS) does.
 */
TEST_F(lapic, x2apic_broadcast_quirk)
{
	vcpu_enter_x2apic(_metadata, &self->vcpu);
	vcpu_enable_apic(_metadata, &self->vcpu);
	EXPECT_EQ(1, signal_msi_hi(&self->vm, 0, 0xff, 0x46, 0));
	ASSERT_EQ(0, enable_x2apic_api(self->vm.fd,
				       KVM_X2APIC_API_DISABLE_BROADCAST_QUIRK));
	EXPECT_EQ(0, signal_msi_hi(&self->vm, 0, 0xff, 0x46, 0));
	ASSERT_EQ(0, enable_x2apic_api(self->vm.fd, KVM_X2APIC_API_USE_32BIT_IDS));
	EXPECT_EQ(1, signal_msi_hi(&self->vm, 0xffffff00, 0xff, 0x46, 0));
}

/*
 * kvm_vm_ioctl_check_extension_generic() and x86's: an irqchip, irqfds,
 * KVM_MAX_IRQ_ROUTES routes and KVM_IRQ_LINE_STATUS, on the device and on
 * a VM with or without one.
 */
TEST(irqchip_capabilities_on_the_device_and_the_vm)
{
	struct vm vm;

	REQUIRE_SPLIT_IRQCHIP();
	vm_create(_metadata, &vm);
	EXPECT_EQ(1, check_ext(vm.sys, KVM_CAP_IRQCHIP));
	EXPECT_EQ(1, check_ext(vm.sys, KVM_CAP_IRQFD));
	EXPECT_EQ(4096, check_ext(vm.sys, KVM_CAP_IRQ_ROUTING));
	EXPECT_EQ(1, check_ext(vm.sys, KVM_CAP_IRQ_INJECT_STATUS));
	EXPECT_EQ(1, check_ext(vm.fd, KVM_CAP_IRQFD));
	EXPECT_EQ(4096, check_ext(vm.fd, KVM_CAP_IRQ_ROUTING));
	vm_destroy(&vm);
}

/*
 * Without an in-kernel irqchip: KVM_SET_GSI_ROUTING is EINVAL
 * (kvm_arch_can_set_irq_routing()), KVM_IRQ_LINE(_STATUS) ENXIO
 * (kvm_vm_ioctl_irq_line()), KVM_IRQFD EINVAL (kvm_arch_irqfd_allowed())
 * and deassign succeeds (kvm_irqfd_deassign()).
 */
TEST(irq_ioctls_without_irqchip)
{
	struct kvm_irq_routing_entry e = msi_route(0, 0, 0x40, 0);
	struct kvm_irq_level l = { .irq = 0, .level = 1 };
	struct vm vm;
	int32_t status;
	int efd = eventfd(0, EFD_CLOEXEC);

	REQUIRE_SPLIT_IRQCHIP();
	ASSERT_LE(0, efd);
	vm_create(_metadata, &vm);
	EXPECT_ERRNO(EINVAL, set_routing(&vm, &e, 1, 0));
	EXPECT_ERRNO(ENXIO, ioctl(vm.fd, KVM_IRQ_LINE, &l));
	EXPECT_ERRNO(ENXIO, irq_line_status(&vm, 0, 1, &status));
	EXPECT_ERRNO(EINVAL, irqfd(&vm, efd, 0, 4));
	EXPECT_ERRNO(EINVAL, irqfd(&vm, efd, 0, 0));
	EXPECT_EQ(0, irqfd(&vm, efd, 0, KVM_IRQFD_FLAG_DEASSIGN));
	close(efd);
	vm_destroy(&vm);
}

/*
 * kvm_set_irq_routing() with a split irqchip: at most KVM_MAX_IRQ_ROUTES
 * entries, no flags, GSIs below KVM_MAX_IRQ_ROUTES, one MSI per GSI, no
 * PIC or IOAPIC pins (kvm_set_routing_entry()), MSI flags only
 * KVM_MSI_VALID_DEVID; an empty table is fine.
 */
TEST_F(lapic, gsi_routing_follows_kvm_rules)
{
	struct kvm_irq_routing_entry e[2] = {
		msi_route(1, 0, 0x40, 0), msi_route(2, 0, 0x41, 0),
	};
	struct kvm_irq_routing_entry chip = {
		.gsi = 3, .type = KVM_IRQ_ROUTING_IRQCHIP,
		.u.irqchip = { .irqchip = KVM_IRQCHIP_IOAPIC, .pin = 3 },
	};
	struct kvm_irq_routing big = { 0 };

	EXPECT_EQ(0, set_routing(&self->vm, e, 2, 0));
	EXPECT_EQ(0, set_routing(&self->vm, NULL, 0, 0));
	EXPECT_ERRNO(EINVAL, set_routing(&self->vm, e, 2, 1));
	big.nr = 4097;
	EXPECT_ERRNO(EINVAL, ioctl(self->vm.fd, KVM_SET_GSI_ROUTING, &big));
	e[1].gsi = 1;
	EXPECT_ERRNO(EINVAL, set_routing(&self->vm, e, 2, 0));
	e[1].gsi = 4096;
	EXPECT_ERRNO(EINVAL, set_routing(&self->vm, e, 2, 0));
	e[1].gsi = 4095;
	EXPECT_EQ(0, set_routing(&self->vm, e, 2, 0));
	EXPECT_ERRNO(EINVAL, set_routing(&self->vm, &chip, 1, 0));
	e[0].flags = KVM_MSI_VALID_DEVID;
	EXPECT_EQ(0, set_routing(&self->vm, e, 1, 0));
	e[0].flags = 2;
	EXPECT_ERRNO(EINVAL, set_routing(&self->vm, e, 1, 0));
}

/*
 * KVM_IRQ_LINE_STATUS on an MSI route (kvm_set_irq(), kvm_set_msi()):
 * raising it delivers (status 1: one APIC took it), lowering it does
 * nothing (-1), as does a GSI without a route; KVM_IRQ_LINE the same
 * without the status. A new table replaces the old routes.
 */
TEST_F(lapic, irq_line_delivers_the_routed_msi)
{
	struct kvm_irq_routing_entry e = msi_route(5, 0, 0x46, 0);
	struct kvm_irq_level l = { .irq = 5, .level = 1 };
	int32_t status = 0;

	vcpu_enable_apic(_metadata, &self->vcpu);
	ASSERT_EQ(0, set_routing(&self->vm, &e, 1, 0));
	EXPECT_EQ(0, irq_line_status(&self->vm, 5, 0, &status));
	EXPECT_EQ(-1, status);
	EXPECT_FALSE(irr_has(_metadata, &self->vcpu, 0x46));
	EXPECT_EQ(0, irq_line_status(&self->vm, 6, 1, &status));
	EXPECT_EQ(-1, status);
	EXPECT_EQ(0, irq_line_status(&self->vm, 5, 1, &status));
	EXPECT_EQ(1, status);
	EXPECT_TRUE(irr_has(_metadata, &self->vcpu, 0x46));
	e = msi_route(5, 0, 0x47, 0);
	ASSERT_EQ(0, set_routing(&self->vm, &e, 1, 0));
	EXPECT_EQ(0, ioctl(self->vm.fd, KVM_IRQ_LINE, &l));
	EXPECT_TRUE(irr_has(_metadata, &self->vcpu, 0x47));
}

/*
 * A signalled irqfd delivers its GSI's MSI in the kernel (irqfd_wakeup())
 * and consumes the eventfd's count; after deassign it delivers nothing.
 */
TEST_F(lapic, irqfd_delivers_until_deassigned)
{
	struct kvm_irq_routing_entry e = msi_route(7, 0, 0x50, 0);
	uint64_t one = 1, cnt;
	int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);

	ASSERT_LE(0, efd);
	vcpu_enable_apic(_metadata, &self->vcpu);
	ASSERT_EQ(0, set_routing(&self->vm, &e, 1, 0));
	ASSERT_EQ(0, irqfd(&self->vm, efd, 7, 0))
		TH_LOG("KVM_IRQFD: %s", strerror(errno));
	EXPECT_FALSE(irr_has(_metadata, &self->vcpu, 0x50));
	ASSERT_EQ(8, write(efd, &one, 8));
	EXPECT_TRUE(irr_has(_metadata, &self->vcpu, 0x50));
	EXPECT_ERRNO(EAGAIN, read(efd, &cnt, 8));
	vcpu_clear_irr(_metadata, &self->vcpu);
	ASSERT_FALSE(irr_has(_metadata, &self->vcpu, 0x50));
	EXPECT_EQ(0, irqfd(&self->vm, efd, 7, KVM_IRQFD_FLAG_DEASSIGN));
	ASSERT_EQ(8, write(efd, &one, 8));
	EXPECT_FALSE(irr_has(_metadata, &self->vcpu, 0x50));
	EXPECT_EQ(8, read(efd, &cnt, 8));
	EXPECT_EQ(1u, cnt);
	close(efd);
}

/*
 * kvm_irqfd_assign(): an eventfd already signalled delivers once at
 * assign, its count left; an eventfd feeds one irqfd (EBUSY, also for
 * another GSI); a closed fd is EBADF, a pipe EINVAL, unknown flags and
 * resample (no in-kernel IOAPIC) EINVAL; deassigning what is not assigned
 * succeeds; closing the eventfd unhooks its irqfd, so the GSI can take a
 * new one.
 */
TEST_F(lapic, irqfd_assign_rules)
{
	struct kvm_irq_routing_entry e = msi_route(8, 0, 0x51, 0);
	struct kvm_irqfd rs = {
		.gsi = 8, .flags = KVM_IRQFD_FLAG_RESAMPLE,
	};
	uint64_t one = 1, cnt;
	int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	int efd2 = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	int p[2];

	ASSERT_LE(0, efd);
	ASSERT_LE(0, efd2);
	ASSERT_EQ(0, pipe(p));
	vcpu_enable_apic(_metadata, &self->vcpu);
	ASSERT_EQ(0, set_routing(&self->vm, &e, 1, 0));
	ASSERT_EQ(8, write(efd, &one, 8));
	ASSERT_EQ(0, irqfd(&self->vm, efd, 8, 0));
	EXPECT_TRUE(irr_gets(_metadata, &self->vcpu, 0x51));
	EXPECT_EQ(8, read(efd, &cnt, 8));
	EXPECT_ERRNO(EBUSY, irqfd(&self->vm, efd, 8, 0));
	EXPECT_ERRNO(EBUSY, irqfd(&self->vm, efd, 9, 0));
	EXPECT_ERRNO(EBADF, irqfd(&self->vm, 999, 8, 0));
	EXPECT_ERRNO(EINVAL, irqfd(&self->vm, p[0], 8, 0));
	EXPECT_ERRNO(EINVAL, irqfd(&self->vm, efd2, 8, 8));
	rs.fd = efd2;
	rs.resamplefd = efd;
	EXPECT_ERRNO(EINVAL, ioctl(self->vm.fd, KVM_IRQFD, &rs));
	EXPECT_EQ(0, irqfd(&self->vm, efd2, 8, KVM_IRQFD_FLAG_DEASSIGN));
	EXPECT_ERRNO(EBADF, irqfd(&self->vm, 999, 8, KVM_IRQFD_FLAG_DEASSIGN));
	EXPECT_ERRNO(EINVAL, irqfd(&self->vm, p[0], 8,
				   KVM_IRQFD_FLAG_DEASSIGN));
	EXPECT_EQ(0, irqfd(&self->vm, efd2, 8, 0));
	close(efd);
	vcpu_clear_irr(_metadata, &self->vcpu);
	ASSERT_EQ(8, write(efd2, &one, 8));
	EXPECT_TRUE(irr_has(_metadata, &self->vcpu, 0x51));
	close(efd2);
	close(p[0]);
	close(p[1]);
}

/*
 * The VM goes away with irqfds still assigned (kvm_irqfd_release()); the
 * eventfds stay usable and are no longer hooked: another VM can take one.
 */
TEST(vm_close_releases_its_irqfds)
{
	struct kvm_irq_routing_entry e = msi_route(1, 0, 0x40, 0);
	struct vm vm;
	struct vcpu vcpu;
	uint64_t one = 1;
	int efd[4];

	REQUIRE_SPLIT_IRQCHIP();
	split_vm_create(&vm);
	vcpu_create(_metadata, &vm, 0, &vcpu);
	ASSERT_EQ(0, set_routing(&vm, &e, 1, 0));
	for (int i = 0; i < 4; i++) {
		efd[i] = eventfd(0, EFD_CLOEXEC);
		ASSERT_LE(0, efd[i]);
		ASSERT_EQ(0, irqfd(&vm, efd[i], i, 0));
	}
	vcpu_destroy(&vm, &vcpu);
	vm_destroy(&vm);
	ASSERT_EQ(8, write(efd[1], &one, 8));
	split_vm_create(&vm);
	EXPECT_EQ(0, irqfd(&vm, efd[1], 1, 0))
		TH_LOG("KVM_IRQFD after the old VM closed: %s",
		       strerror(errno));
	vm_destroy(&vm);
	for (int i = 0; i < 4; i++)
		close(efd[i]);
}

GUEST_CODE(eoi_wait, 64,
	XAPIC_ON
	"xor eax, eax\n"
	REPORT_EAX
	WAIT_COUNT(0x48, 1)
	"mov eax, 1\n"
	REPORT_EAX
	WAIT_COUNT(0x49, 1)
	"mov eax, 2\n"
	REPORT_EAX
	WAIT_COUNT(0x4a, 1)
	"mov eax, 3\n"
	REPORT_EAX
	"cli\n"
	"hlt\n");

/*
 * Split irqchip: the EOI of a vector that a level-triggered route of one
 * of the reserved IOAPIC pins delivers to this vCPU exits with
 * KVM_EXIT_IOAPIC_EOI (kvm_ioapic_send_eoi(), kvm_scan_ioapic_routes());
 * an edge route's EOI, or a GSI above the reserved pins, does not.
 */
TEST_F(lapic, eoi_of_a_level_ioapic_route_exits_to_userspace)
{
	struct kvm_irq_routing_entry e[3] = {
		msi_route(3, 0, 0x48, 1), msi_route(4, 0, 0x49, 0),
		msi_route(30, 0, 0x4a, 1),
	};
	int32_t status;

	ASSERT_EQ(0, set_routing(&self->vm, e, 3, 0));
	vm_load_code(&self->vm, eoi_wait);
	EXPECT_REPORT(&self->vcpu, 0);
	run_to_halted_eintr(_metadata, &self->vcpu);
	ASSERT_EQ(0, irq_line_status(&self->vm, 3, 1, &status));
	EXPECT_EQ(1, status);
	vcpu_run_bounded(&self->vcpu);
	if (self->vcpu.run->exit_reason != KVM_EXIT_IOAPIC_EOI)
		log_exit(_metadata, &self->vcpu);
	ASSERT_EQ(KVM_EXIT_IOAPIC_EOI, self->vcpu.run->exit_reason);
	EXPECT_EQ(0x48, self->vcpu.run->eoi.vector);
	EXPECT_REPORT(&self->vcpu, 1);
	run_to_halted_eintr(_metadata, &self->vcpu);
	ASSERT_EQ(0, irq_line_status(&self->vm, 4, 1, &status));
	EXPECT_REPORT(&self->vcpu, 2);
	run_to_halted_eintr(_metadata, &self->vcpu);
	ASSERT_EQ(0, irq_line_status(&self->vm, 30, 1, &status));
	EXPECT_REPORT(&self->vcpu, 3);
}

/*
 * KVM_SET_VAPIC_ADDR (kvm_lapic_set_vapic_addr()): EINVAL without an
 * in-kernel APIC and for an address no memory slot backs; 0 and a RAM
 * address are accepted. With the page set, the guest's value is read back
 * after each exit (kvm_lapic_sync_from_vapic()) and, while the APIC is
 * enabled, the APIC's TPR written to it at each entry
 * (kvm_lapic_sync_to_vapic()).
 */
GUEST_CODE(vapic_tpr, 64,
	"mov dword ptr [0x30000], 0x20\n"
	"xor eax, eax\n"
	REPORT_EAX
	"mov eax, 0xfee00080\n"
	"mov eax, [rax]\n"
	REPORT_EAX
	"mov eax, 7\n"
	REPORT_EAX
	"cli\n"
	"hlt\n");

TEST_F(lapic, set_vapic_addr_syncs_the_tpr)
{
	uint64_t addr = 0;
	struct vm vm;
	struct vcpu vcpu;
	struct kvm_lapic_state s;

	vm_create(_metadata, &vm);
	vcpu_create(_metadata, &vm, 0, &vcpu);
	EXPECT_ERRNO(EINVAL, ioctl(vcpu.fd, KVM_SET_VAPIC_ADDR, &addr));
	vcpu_destroy(&vm, &vcpu);
	vm_destroy(&vm);

	EXPECT_EQ(0, ioctl(self->vcpu.fd, KVM_SET_VAPIC_ADDR, &addr));
	addr = 0xf0000000;
	EXPECT_ERRNO(EINVAL, ioctl(self->vcpu.fd, KVM_SET_VAPIC_ADDR, &addr));
	addr = 0x30000;
	ASSERT_EQ(0, ioctl(self->vcpu.fd, KVM_SET_VAPIC_ADDR, &addr));
	vm_load_code(&self->vm, vapic_tpr);
	EXPECT_REPORT(&self->vcpu, 0);
	vcpu_get_lapic(_metadata, &self->vcpu, &s);
	EXPECT_EQ(0x20u, lapic_reg(&s, APIC_TASKPRI));
	EXPECT_REPORT(&self->vcpu, 0x20);
	lapic_set_reg(&s, APIC_TASKPRI, 0x30);
	lapic_set_reg(&s, APIC_SPIV, 0x1ff);
	vcpu_set_lapic(_metadata, &self->vcpu, &s);
	mem_write32(&self->vm, 0x30000, 0);
	EXPECT_REPORT(&self->vcpu, 7);
	EXPECT_EQ(0x30u, mem_read32(&self->vm, 0x30000) & 0xff);
}

/* ========================== HLT in the kernel ========================== */

GUEST_CODE(halt_if_set, 64,
	XAPIC_ON
	"xor eax, eax\n"
	REPORT_EAX
	"sti\n"
	"hlt\n"
	".globl halt_if_set_after_hlt\n"
	"halt_if_set_after_hlt:\n"
	"mov eax, " COUNT(0x47) "\n"
	REPORT_EAX
	"cli\n"
	"hlt\n");

/*
 * HLT with IF = 1 and nothing pending blocks in KVM_RUN, no KVM_EXIT_HLT
 * (kvm_emulate_halt() with the LAPIC in the kernel); a signal ends it with
 * EINTR / KVM_EXIT_INTR, RIP past the HLT, MP state HALTED, again on the
 * next KVM_RUN; an interrupt then wakes it.
 */
extern const uint8_t halt_if_set_after_hlt[];

TEST_F(lapic, hlt_blocks_in_kvm_run_until_a_signal_or_an_interrupt)
{
	const uint64_t hlt_end = CODE_GPA +
				 (halt_if_set_after_hlt - halt_if_set);
	struct kvm_regs regs;

	vm_load_code(&self->vm, halt_if_set);
	EXPECT_REPORT(&self->vcpu, 0);
	run_to_halted_eintr(_metadata, &self->vcpu);
	vcpu_get_regs(_metadata, &self->vcpu, &regs);
	EXPECT_EQ(hlt_end, regs.rip);
	EXPECT_TRUE(regs.rflags & (1UL << 9));
	run_to_halted_eintr(_metadata, &self->vcpu);
	EXPECT_EQ(1, signal_msi(&self->vm, 0, 0x47, 0));
	EXPECT_REPORT(&self->vcpu, 1);
}

GUEST_CODE(halt_if_clear, 64,
	XAPIC_ON
	"xor eax, eax\n"
	REPORT_EAX
	"hlt\n"
	"mov eax, [" XS(NMI_COUNT_GPA) "]\n"
	REPORT_EAX
	"mov eax, " COUNT(0x47) "\n"
	REPORT_EAX
	"cli\n"
	"hlt\n");

/*
 * HLT with IF = 0 blocks too, and a pending fixed interrupt does not wake
 * it (kvm_vcpu_has_events(): !kvm_arch_interrupt_allowed()); KVM_NMI does,
 * into the NMI handler, and the interrupt stays in IRR.
 */
TEST_F(lapic, hlt_with_if_clear_wakes_on_nmi_only)
{
	struct kvm_lapic_state s;

	vm_load_code(&self->vm, halt_if_clear);
	EXPECT_REPORT(&self->vcpu, 0);
	run_to_halted_eintr(_metadata, &self->vcpu);
	EXPECT_EQ(1, signal_msi(&self->vm, 0, 0x47, 0));
	run_to_halted_eintr(_metadata, &self->vcpu);
	ASSERT_EQ(0, ioctl(self->vcpu.fd, KVM_NMI));
	EXPECT_REPORT(&self->vcpu, 1);
	EXPECT_REPORT(&self->vcpu, 0);
	vcpu_get_lapic(_metadata, &self->vcpu, &s);
	EXPECT_TRUE(lapic_vector(&s, APIC_IRR, 0x47));
}

GUEST_CODE(report_then_count, 64,
	"mov eax, " COUNT(0x47) "\n"
	REPORT_EAX
	"cli\n"
	"hlt\n");

/*
 * KVM_SET_MP_STATE(HALTED) halts the vCPU without it running: KVM_RUN
 * blocks (RIP unchanged) until an interrupt it can take arrives.
 */
TEST_F(lapic, set_mp_state_halted_blocks_until_an_interrupt)
{
	struct kvm_lapic_state s;
	struct kvm_regs regs;

	vm_load_code(&self->vm, report_then_count);
	vcpu_get_regs(_metadata, &self->vcpu, &regs);
	regs.rflags |= 1UL << 9;
	vcpu_set_regs(_metadata, &self->vcpu, &regs);
	vcpu_get_lapic(_metadata, &self->vcpu, &s);
	lapic_set_reg(&s, APIC_SPIV, 0x1ff);
	vcpu_set_lapic(_metadata, &self->vcpu, &s);
	ASSERT_EQ(0, vcpu_set_mp_state(&self->vcpu, KVM_MP_STATE_HALTED));
	run_to_halted_eintr(_metadata, &self->vcpu);
	vcpu_get_regs(_metadata, &self->vcpu, &regs);
	EXPECT_EQ(CODE_GPA, regs.rip);
	EXPECT_EQ(1, signal_msi(&self->vm, 0, 0x47, 0));
	EXPECT_REPORT(&self->vcpu, 1);
}

/* ========================== the APIC timer ========================== */

GUEST_CODE(timer_oneshot, 64,
	XAPIC_ON
	"mov dword ptr [rbx + 0x3e0], 0xb\n"
	"mov dword ptr [rbx + 0x320], 0x49\n"
	"mov dword ptr [rbx + 0x380], 100000\n"
	WAIT_COUNT(0x49, 1)
	"mov eax, " COUNT(0x49) "\n"
	REPORT_EAX
	"mov eax, [rbx + 0x390]\n"
	REPORT_EAX
	"cli\n"
	"hlt\n");

/*
 * One-shot LVTT (vector 0x49), divide by 1 (TDCR 0xb), TMICT 100000: 100 us
 * at KVM's 1 GHz APIC bus. The interrupt wakes the halted guest once; TMCCT
 * is 0 once it expired.
 */
TEST_F(lapic, oneshot_timer_wakes_a_halted_guest)
{
	struct kvm_lapic_state s;

	vm_load_code(&self->vm, timer_oneshot);
	EXPECT_REPORT(&self->vcpu, 1);
	EXPECT_REPORT(&self->vcpu, 0);
	vcpu_get_lapic(_metadata, &self->vcpu, &s);
	EXPECT_EQ(0x49u, lapic_reg(&s, APIC_LVTT));
	EXPECT_EQ(100000u, lapic_reg(&s, APIC_TMICT));
	EXPECT_EQ(0u, lapic_reg(&s, APIC_TMCCT));
	EXPECT_EQ(0, lapic_vectors(&s, APIC_ISR));
}

GUEST_CODE(timer_periodic, 64,
	XAPIC_ON
	"mov dword ptr [rbx + 0x3e0], 0xb\n"
	"mov dword ptr [rbx + 0x320], 0x2004a\n"
	"mov dword ptr [rbx + 0x380], 500000\n"
	WAIT_COUNT(0x4a, 5)
	"mov eax, [rbx + 0x390]\n"
	REPORT_EAX
	"mov dword ptr [rbx + 0x380], 0\n"
	"mov eax, [rbx + 0x390]\n"
	REPORT_EAX
	"mov eax, " COUNT(0x4a) "\n"
	REPORT_EAX
	"mov ecx, 1000000\n"
	"3: dec ecx\n"
	"jnz 3b\n"
	"mov eax, " COUNT(0x4a) "\n"
	REPORT_EAX
	"cli\n"
	"hlt\n");

/*
 * Periodic LVTT, 500 us (above KVM's 200 us floor, min_timer_period_us):
 * fires at least five times (more while the guest's report is in
 * userspace); TMCCT stays within TMICT; TMICT = 0 stops it (TMCCT 0, the
 * count no longer moves across another exit and a spin).
 */
TEST_F(lapic, periodic_timer_fires_repeatedly)
{
	uint32_t tmcct, count;

	vm_load_code(&self->vm, timer_periodic);
	tmcct = run_to_report(&self->vcpu);
	EXPECT_GE(500000u, tmcct);
	EXPECT_REPORT(&self->vcpu, 0);
	count = run_to_report(&self->vcpu);
	EXPECT_LE(5u, count);
	EXPECT_REPORT(&self->vcpu, count);
}

GUEST_CODE(timer_countdown, 64,
	"mov ebx, 0xfee00000\n"
	"mov dword ptr [rbx + 0x3e0], 0xb\n"
	"mov dword ptr [rbx + 0x320], 0x1004b\n"
	"mov dword ptr [rbx + 0x380], 0xffffffff\n"
	"mov eax, [rbx + 0x390]\n"
	REPORT_EAX
	"mov eax, [rbx + 0x390]\n"
	REPORT_EAX
	"mov dword ptr [rbx + 0x380], 0\n"
	"mov eax, [rbx + 0x390]\n"
	REPORT_EAX
	"cli\n"
	"hlt\n");

/*
 * TMCCT counts down from TMICT (masked LVTT, software-disabled APIC: the
 * timer still counts); TMICT = 0 stops it at 0.
 */
TEST_F(lapic, tmcct_counts_down_from_tmict)
{
	uint32_t first, second;

	vm_load_code(&self->vm, timer_countdown);
	first = run_to_report(&self->vcpu);
	second = run_to_report(&self->vcpu);
	EXPECT_LT(0u, second);
	EXPECT_LT(second, first);
	EXPECT_REPORT(&self->vcpu, 0);
}

GUEST_CODE(timer_tsc_deadline, 64,
	XAPIC_ON
	"mov dword ptr [rbx + 0x320], 0x40048\n"
	"mov dword ptr [rbx + 0x380], 1000\n"
	"mov eax, [rbx + 0x380]\n"
	REPORT_EAX
	"rdtsc\n"
	"shl rdx, 32\n"
	"or rax, rdx\n"
	"add rax, 100000\n"
	"mov rdx, rax\n"
	"shr rdx, 32\n"
	"mov ecx, 0x6e0\n"
	"wrmsr\n"
	WAIT_COUNT(0x48, 1)
	"mov eax, " COUNT(0x48) "\n"
	REPORT_EAX
	"mov ecx, 0x6e0\n"
	"rdmsr\n"
	"or eax, edx\n"
	REPORT_EAX
	"cli\n"
	"hlt\n");

/*
 * TSC-deadline mode (LVTT bits 18:17 = 10, CPUID.1:ECX[24]): TMICT writes
 * are ignored; IA32_TSC_DEADLINE = TSC + 100000 fires once and reads 0
 * afterwards.
 */
TEST_F(lapic, tsc_deadline_timer_fires)
{
	uint32_t ecx = supported_cpuid_1_ecx(_metadata, &self->vm);

	if (!(ecx & CPUID_1_ECX_TSC_DEADLINE) ||
	    ioctl(self->vm.sys, KVM_CHECK_EXTENSION,
		  KVM_CAP_TSC_DEADLINE_TIMER) <= 0)
		SKIP(return, "no TSC-deadline timer");
	vm_load_code(&self->vm, timer_tsc_deadline);
	EXPECT_REPORT(&self->vcpu, 0);
	EXPECT_REPORT(&self->vcpu, 1);
	EXPECT_REPORT(&self->vcpu, 0);
}

/* ========================== two vCPUs ========================== */

struct runner {
	struct vcpu *vcpu;
	long bound_ms;
	int ret, err;
};

static void *runner_main(void *p)
{
	struct runner *r = p;

	r->ret = run_timed(r->vcpu, r->bound_ms);
	r->err = errno;
	return NULL;
}

/* The BSP: pings the AP [ITER_GPA] times, each after a spin of [DELAY_GPA]. */
GUEST_CODE(pingpong_bsp, 64,
	XAPIC_ON
	"sti\n"
	"1: pause\n"
	"cmp dword ptr [" XS(FLAG_GPA) "], 0\n"
	"je 1b\n"
	"xor esi, esi\n"
	"3: inc esi\n"
	"mov ecx, [" XS(DELAY_GPA) "]\n"
	"4: dec ecx\n"
	"jns 4b\n"
	"mov dword ptr [rbx + 0x310], 0x01000000\n"
	"mov dword ptr [rbx + 0x300], 0x50\n"
	"5: cli\n"
	"cmp " COUNT(0x51) ", esi\n"
	"jae 6f\n"
	"sti\n"
	"hlt\n"
	"jmp 5b\n"
	"6: sti\n"
	"cmp esi, [" XS(ITER_GPA) "]\n"
	"jb 3b\n"
	"mov eax, esi\n"
	REPORT_EAX
	"cli\n"
	"hlt\n");

/* The AP: waits for each ping (halted), answers with a pong. */
GUEST_CODE(pingpong_ap, 64,
	XAPIC_ON
	"mov dword ptr [" XS(FLAG_GPA) "], 1\n"
	"xor esi, esi\n"
	"3: inc esi\n"
	"5: cli\n"
	"cmp " COUNT(0x50) ", esi\n"
	"jae 6f\n"
	"sti\n"
	"hlt\n"
	"jmp 5b\n"
	"6: sti\n"
	"mov dword ptr [rbx + 0x310], 0\n"
	"mov dword ptr [rbx + 0x300], 0x51\n"
	"cmp esi, [" XS(ITER_GPA) "]\n"
	"jb 3b\n"
	"mov eax, esi\n"
	REPORT_EAX
	"cli\n"
	"hlt\n");

/*
 * vCPU 0 and vCPU 1, both long mode, each KVM_RUN on its own thread; the AP
 * (UNINITIALIZED after creation) made RUNNABLE.
 */
FIXTURE(smp) {
	struct vm vm;
	struct vcpu vcpu[2];
};

FIXTURE_SETUP(smp)
{
	REQUIRE_SPLIT_IRQCHIP();
	split_vm_create(&self->vm);
	for (int i = 0; i < 2; i++) {
		vcpu_create(_metadata, &self->vm, i, &self->vcpu[i]);
		vcpu_setup_long(_metadata, &self->vm, &self->vcpu[i]);
	}
	vm_set_handlers(_metadata, &self->vm, 0);
	vm_load_code(&self->vm, pingpong_bsp);
	vm_load(&self->vm, AP_CODE_GPA, pingpong_ap, pingpong_ap_end);
	vcpu_set_rip_rsp(_metadata, &self->vcpu[1], AP_CODE_GPA, AP_STACK_TOP);
	ASSERT_EQ(0, vcpu_set_mp_state(&self->vcpu[1], KVM_MP_STATE_RUNNABLE));
}

FIXTURE_TEARDOWN(smp)
{
	for (int i = 0; i < 2; i++)
		vcpu_destroy(&self->vm, &self->vcpu[i]);
	vm_destroy(&self->vm);
}

/* Runs both vCPUs to their report of @iter; fails on a watchdog EINTR. */
static void run_pingpong(struct __test_metadata *_metadata, struct vm *vm,
			 struct vcpu *vcpu, uint32_t iter, uint32_t delay,
			 long bound_ms)
{
	struct runner r[2];
	pthread_t t[2];

	mem_write32(vm, ITER_GPA, iter);
	mem_write32(vm, DELAY_GPA, delay);
	for (int i = 0; i < 2; i++) {
		r[i] = (struct runner){
			.vcpu = &vcpu[i], .bound_ms = bound_ms,
		};
		ASSERT_EQ(0, pthread_create(&t[i], NULL, runner_main, &r[i]));
	}
	for (int i = 0; i < 2; i++)
		ASSERT_EQ(0, pthread_join(t[i], NULL));
	for (int i = 0; i < 2; i++) {
		uint32_t v = 0;

		EXPECT_EQ(0, r[i].ret)
			TH_LOG("vCPU %d KVM_RUN: %s; pings %u pongs %u", i,
			       strerror(r[i].err),
			       mem_read32(vm, COUNT_GPA(0x50)),
			       mem_read32(vm, COUNT_GPA(0x51)));
		if (r[i].ret)
			continue;
		EXPECT_EQ(KVM_EXIT_IO, vcpu[i].run->exit_reason);
		EXPECT_EQ(PORT_REPORT, vcpu[i].run->io.port);
		memcpy(&v, io_data(&vcpu[i]), 4);
		EXPECT_EQ(iter, v) TH_LOG("vCPU %d", i);
	}
	EXPECT_EQ(iter, mem_read32(vm, COUNT_GPA(0x50)));
	EXPECT_EQ(iter, mem_read32(vm, COUNT_GPA(0x51)));
}

/*
 * A fixed IPI from vCPU 0 (ICR2 = APIC ID 1) reaches vCPU 1, halted on its
 * own thread (vCPU 0 spins first so that it has halted), and its answer
 * comes back.
 */
TEST_F(smp, fixed_ipi_wakes_a_vcpu_halted_on_another_thread)
{
	run_pingpong(_metadata, &self->vm, self->vcpu, 1, 200000, RUN_BOUND_MS);
}

/*
 * 1000 round trips (2000 IPIs) between two vCPUs that halt for every
 * interrupt: a lost wake-up (an IPI that lands while the target goes to
 * sleep) hangs one of them until the 20 s watchdog.
 */
TEST_F(smp, ipi_ping_pong_between_halting_vcpus_loses_no_wakeup)
{
	run_pingpong(_metadata, &self->vm, self->vcpu, test_scaled(1000), 0,
		     20000);
}

/* ========================== INIT and SIPI ========================== */

/* The BSP (32-bit, unpaged): INIT (assert, then de-assert) and SIPI 0x10. */
GUEST_CODE(init_sipi_bsp, 32,
	"mov ebx, 0xfee00000\n"
	"mov dword ptr [ebx + 0x310], 0x01000000\n"
	"mov dword ptr [ebx + 0x300], 0x4500\n"
	"mov dword ptr [ebx + 0x300], 0x8500\n"
	"mov dword ptr [ebx + 0x300], 0x4610\n"
	"mov eax, [ebx + 0x300]\n"
	"out 0x10, eax\n"
	"cli\n"
	"hlt\n");

/* The AP's first code after SIPI 0x10: real mode at 0x1000:0000. */
GUEST_CODE(sipi_ap, 16,
	"mov ax, cs\n"
	"out 0x20, ax\n"
	"cli\n"
	"hlt\n");

static void smp_real_setup(struct __test_metadata *_metadata, struct vm *vm,
			   struct vcpu *vcpu)
{
	for (int i = 0; i < 2; i++)
		vcpu_create(_metadata, vm, i, &vcpu[i]);
	for (int i = 0; i < 2; i++)
		vcpu_refresh_lapic(_metadata, &vcpu[i]);
	vcpu_setup_protected(_metadata, vm, &vcpu[0], 0);
	vm_load_code(vm, init_sipi_bsp);
	vm_load(vm, SIPI_GPA, sipi_ap, sipi_ap_end);
}

/* The AP's exit after SIPI: OUT of CS = 0x1000 to PORT_AP, at 1000:0002. */
static void expect_ap_at_sipi_code(struct __test_metadata *_metadata,
				   struct vcpu *ap)
{
	struct kvm_sregs sregs;
	struct kvm_regs regs;
	uint16_t cs = 0;

	if (ap->run->exit_reason != KVM_EXIT_IO)
		log_exit(_metadata, ap);
	ASSERT_EQ(KVM_EXIT_IO, ap->run->exit_reason);
	EXPECT_EQ(PORT_AP, ap->run->io.port);
	EXPECT_EQ(2, ap->run->io.size);
	memcpy(&cs, io_data(ap), 2);
	EXPECT_EQ(0x1000, cs);
	vcpu_get_sregs(_metadata, ap, &sregs);
	EXPECT_EQ(0x1000, sregs.cs.selector);
	EXPECT_EQ(0x10000u, sregs.cs.base);
	EXPECT_EQ(0u, sregs.cr0 & X86_CR0_PE);
	vcpu_get_regs(_metadata, ap, &regs);
	EXPECT_EQ(2u, regs.rip);
	EXPECT_EQ(KVM_MP_STATE_RUNNABLE, vcpu_mp_state(_metadata, ap));
}

/*
 * kvm_arch_vcpu_create(): with the LAPIC in the kernel the BSP starts
 * RUNNABLE and an AP UNINITIALIZED; KVM_RUN of the AP blocks (no SIPI)
 * until a signal: EINTR, KVM_EXIT_INTR, still UNINITIALIZED.
 */
TEST(ap_is_uninitialized_and_kvm_run_blocks)
{
	struct vcpu vcpu[2];
	struct vm vm;
	int r;

	REQUIRE_SPLIT_IRQCHIP();
	split_vm_create(&vm);
	for (int i = 0; i < 2; i++)
		vcpu_create(_metadata, &vm, i, &vcpu[i]);
	EXPECT_EQ(KVM_MP_STATE_RUNNABLE, vcpu_mp_state(_metadata, &vcpu[0]));
	EXPECT_EQ(KVM_MP_STATE_UNINITIALIZED, vcpu_mp_state(_metadata, &vcpu[1]));
	r = run_timed(&vcpu[1], BLOCK_MS);
	EXPECT_EQ(-1, r);
	EXPECT_EQ(EINTR, errno);
	EXPECT_EQ(KVM_EXIT_INTR, vcpu[1].run->exit_reason);
	EXPECT_EQ(KVM_MP_STATE_UNINITIALIZED, vcpu_mp_state(_metadata, &vcpu[1]));
	for (int i = 0; i < 2; i++)
		vcpu_destroy(&vm, &vcpu[i]);
	vm_destroy(&vm);
}

/* INIT_RECEIVED (wait-for-SIPI) without a SIPI: KVM_RUN blocks too. */
TEST(ap_waiting_for_sipi_does_not_run)
{
	struct kvm_regs regs;
	struct vcpu vcpu[2];
	struct vm vm;
	int r;

	REQUIRE_SPLIT_IRQCHIP();
	split_vm_create(&vm);
	smp_real_setup(_metadata, &vm, vcpu);
	ASSERT_EQ(0, vcpu_set_mp_state(&vcpu[1], KVM_MP_STATE_INIT_RECEIVED));
	vcpu_get_regs(_metadata, &vcpu[1], &regs);
	r = run_timed(&vcpu[1], BLOCK_MS);
	EXPECT_EQ(-1, r);
	EXPECT_EQ(EINTR, errno);
	EXPECT_EQ(KVM_EXIT_INTR, vcpu[1].run->exit_reason);
	EXPECT_EQ(KVM_MP_STATE_INIT_RECEIVED, vcpu_mp_state(_metadata, &vcpu[1]));
	vcpu_get_regs(_metadata, &vcpu[1], &regs);
	EXPECT_EQ(0xfff0u, regs.rip);
	for (int i = 0; i < 2; i++)
		vcpu_destroy(&vm, &vcpu[i]);
	vm_destroy(&vm);
}

/*
 * AP in INIT_RECEIVED, its KVM_RUN blocked on a thread; the BSP sends INIT
 * and SIPI 0x10 through ICR: the AP starts in real mode at CS 0x1000 (base
 * 0x10000), IP 0 (kvm_apic_accept_events(), INIT de-assert ignored).
 */
TEST(init_and_sipi_start_the_ap_at_the_sipi_vector)
{
	struct runner r;
	struct vcpu vcpu[2];
	struct vm vm;
	pthread_t t;

	REQUIRE_SPLIT_IRQCHIP();
	split_vm_create(&vm);
	smp_real_setup(_metadata, &vm, vcpu);
	ASSERT_EQ(0, vcpu_set_mp_state(&vcpu[1], KVM_MP_STATE_INIT_RECEIVED));
	r = (struct runner){ .vcpu = &vcpu[1], .bound_ms = RUN_BOUND_MS };
	ASSERT_EQ(0, pthread_create(&t, NULL, runner_main, &r));
	EXPECT_REPORT(&vcpu[0], 0x4610);
	ASSERT_EQ(0, pthread_join(t, NULL));
	ASSERT_EQ(0, r.ret) TH_LOG("AP KVM_RUN: %s", strerror(r.err));
	expect_ap_at_sipi_code(_metadata, &vcpu[1]);
	for (int i = 0; i < 2; i++)
		vcpu_destroy(&vm, &vcpu[i]);
	vm_destroy(&vm);
}

/*
 * An AP still UNINITIALIZED: the INIT ends its blocked KVM_RUN with EAGAIN
 * (kvm_arch_vcpu_ioctl_run()); the next KVM_RUN takes the SIPI and runs.
 */
TEST(init_ends_the_kvm_run_of_an_uninitialized_ap_with_eagain)
{
	struct runner r;
	struct vcpu vcpu[2];
	struct vm vm;
	pthread_t t;

	REQUIRE_SPLIT_IRQCHIP();
	split_vm_create(&vm);
	smp_real_setup(_metadata, &vm, vcpu);
	r = (struct runner){ .vcpu = &vcpu[1], .bound_ms = RUN_BOUND_MS };
	ASSERT_EQ(0, pthread_create(&t, NULL, runner_main, &r));
	EXPECT_REPORT(&vcpu[0], 0x4610);
	ASSERT_EQ(0, pthread_join(t, NULL));
	EXPECT_EQ(-1, r.ret);
	EXPECT_EQ(EAGAIN, r.err) TH_LOG("AP KVM_RUN: %s", strerror(r.err));
	vcpu_run_bounded(&vcpu[1]);
	expect_ap_at_sipi_code(_metadata, &vcpu[1]);
	for (int i = 0; i < 2; i++)
		vcpu_destroy(&vm, &vcpu[i]);
	vm_destroy(&vm);
}

/* ========================== MP states ========================== */

/*
 * kvm_arch_vcpu_ioctl_set_mpstate() with the LAPIC in the kernel:
 * RUNNABLE, UNINITIALIZED, INIT_RECEIVED, HALTED and AP_RESET_HOLD read
 * back as set; SIPI_RECEIVED becomes INIT_RECEIVED with a SIPI pending,
 * which the next KVM_GET_MP_STATE delivers (RUNNABLE, CS = the last SIPI
 * vector, 0, << 8); STOPPED, CHECK_STOP, OPERATING, LOAD, SUSPENDED and
 * unknown values are EINVAL.
 */
TEST(mp_states_accepted_with_split_irqchip)
{
	static const uint32_t same[] = {
		KVM_MP_STATE_UNINITIALIZED, KVM_MP_STATE_INIT_RECEIVED,
		KVM_MP_STATE_HALTED, KVM_MP_STATE_AP_RESET_HOLD,
		KVM_MP_STATE_RUNNABLE,
	};
	static const uint32_t bad[] = {
		KVM_MP_STATE_STOPPED, KVM_MP_STATE_CHECK_STOP,
		KVM_MP_STATE_OPERATING, KVM_MP_STATE_LOAD,
		KVM_MP_STATE_SUSPENDED, 11, 0xffffffff,
	};
	struct kvm_sregs sregs;
	struct vcpu vcpu[2];
	struct vm vm;

	REQUIRE_SPLIT_IRQCHIP();
	split_vm_create(&vm);
	for (int i = 0; i < 2; i++)
		vcpu_create(_metadata, &vm, i, &vcpu[i]);
	for (int i = 0; i < 2; i++) {
		for (unsigned int j = 0; j < ARRAY_SIZE(same); j++) {
			EXPECT_EQ(0, vcpu_set_mp_state(&vcpu[i], same[j]))
				TH_LOG("vCPU %d state %u: %s", i, same[j],
				       strerror(errno));
			EXPECT_EQ(same[j], vcpu_mp_state(_metadata, &vcpu[i]));
		}
		for (unsigned int j = 0; j < ARRAY_SIZE(bad); j++) {
			EXPECT_ERRNO(EINVAL, vcpu_set_mp_state(&vcpu[i], bad[j]));
			EXPECT_EQ(KVM_MP_STATE_RUNNABLE,
				  vcpu_mp_state(_metadata, &vcpu[i]));
		}
		EXPECT_EQ(0, vcpu_set_mp_state(&vcpu[i],
					       KVM_MP_STATE_SIPI_RECEIVED));
		EXPECT_EQ(KVM_MP_STATE_RUNNABLE,
			  vcpu_mp_state(_metadata, &vcpu[i]));
		vcpu_get_sregs(_metadata, &vcpu[i], &sregs);
		EXPECT_EQ(0, sregs.cs.selector);
		EXPECT_EQ(0u, sregs.cs.base);
	}
	for (int i = 0; i < 2; i++)
		vcpu_destroy(&vm, &vcpu[i]);
	vm_destroy(&vm);
}

TEST_HARNESS_MAIN
