// SPDX-License-Identifier: GPL-2.0
/*
 * KVM_RUN with real guests: port IO (single and string), HLT, triple fault,
 * CPUID, and guests in real mode, 32-bit protected mode with paging and
 * 64-bit long mode.
 */
#include "vm_lib.h"

#define RM_DATA 0x500	/* real-mode data, reachable with DS = 0 */

FIXTURE(rm) {
	struct vm vm;
	struct vcpu vcpu;
};

FIXTURE_SETUP(rm)
{
	vm_create(_metadata, &self->vm);
	vcpu_create(_metadata, &self->vm, 0, &self->vcpu);
	vcpu_setup_real(_metadata, &self->vcpu);
}

FIXTURE_TEARDOWN(rm)
{
	vcpu_destroy(&self->vm, &self->vcpu);
	vm_destroy(&self->vm);
}

GUEST_CODE(rm_out8, 16,
	"mov al, 0x42\n"
	"out 0x80, al\n"
	"hlt\n");

TEST_F(rm, out_1_byte_exits_with_io_fields)
{
	struct vcpu *v = &self->vcpu;

	vm_load_code(&self->vm, rm_out8);
	ASSERT_IO(v, KVM_EXIT_IO_OUT, 1, 0x80, 1);
	EXPECT_EQ(0x42, *(uint8_t *)io_data(v));
	/* The data lies inside the vCPU's mapping. */
	EXPECT_LE(v->run->io.data_offset + 1, (uint64_t)self->vm.run_size);
	EXPECT_GE(v->run->io.data_offset, sizeof(struct kvm_run));
	ASSERT_EXIT(v, KVM_EXIT_HLT);
}

GUEST_CODE(rm_out16, 16,
	"mov ax, 0x1234\n"
	"mov dx, 0x3f8\n"
	"out dx, ax\n"
	"hlt\n");

TEST_F(rm, out_2_bytes_to_dx_port)
{
	vm_load_code(&self->vm, rm_out16);
	EXPECT_EQ(0x1234, run_to_out(&self->vcpu, 2, 0x3f8));
	ASSERT_EXIT(&self->vcpu, KVM_EXIT_HLT);
}

GUEST_CODE(rm_out32, 16,
	"mov eax, 0xdeadbeef\n"
	"out 0x10, eax\n"
	"hlt\n");

TEST_F(rm, out_4_bytes)
{
	vm_load_code(&self->vm, rm_out32);
	EXPECT_EQ(0xdeadbeef, run_to_out(&self->vcpu, 4, 0x10));
	ASSERT_EXIT(&self->vcpu, KVM_EXIT_HLT);
}

GUEST_CODE(rm_out_loop, 16,
	"xor bx, bx\n"
	"1: mov ax, bx\n"
	"out 0x11, ax\n"
	"inc bx\n"
	"cmp bx, 100\n"
	"jne 1b\n"
	"hlt\n");

TEST_F(rm, out_loop_resumes_after_each_exit)
{
	vm_load_code(&self->vm, rm_out_loop);
	for (uint32_t i = 0; i < 100; i++)
		ASSERT_EQ(i, run_to_out(&self->vcpu, 2, 0x11));
	ASSERT_EXIT(&self->vcpu, KVM_EXIT_HLT);
}

GUEST_CODE(rm_in8, 16,
	"mov eax, 0xffffffff\n"
	"in al, 0x60\n"
	"out 0x61, al\n"
	"hlt\n");

TEST_F(rm, in_1_byte_sees_data_written_by_userspace)
{
	struct vcpu *v = &self->vcpu;
	struct kvm_regs regs;

	vm_load_code(&self->vm, rm_in8);
	ASSERT_IO(v, KVM_EXIT_IO_IN, 1, 0x60, 1);
	*(uint8_t *)io_data(v) = 0x5a;
	EXPECT_EQ(0x5a, run_to_out(v, 1, 0x61));
	ASSERT_EXIT(v, KVM_EXIT_HLT);
	vcpu_get_regs(_metadata, v, &regs);
	/* IN AL leaves the rest of EAX alone. */
	EXPECT_EQ(0xffffff5aULL, regs.rax);
}

GUEST_CODE(rm_in16, 16,
	"mov dx, 0x1f0\n"
	"in ax, dx\n"
	"hlt\n");

TEST_F(rm, in_2_bytes_from_dx_port)
{
	struct vcpu *v = &self->vcpu;
	struct kvm_regs regs;

	vm_load_code(&self->vm, rm_in16);
	ASSERT_IO(v, KVM_EXIT_IO_IN, 2, 0x1f0, 1);
	*(uint16_t *)io_data(v) = 0xbeef;
	ASSERT_EXIT(v, KVM_EXIT_HLT);
	vcpu_get_regs(_metadata, v, &regs);
	EXPECT_EQ(0xbeefULL, regs.rax & 0xffff);
}

GUEST_CODE(rm_in32, 16,
	"in eax, 0x70\n"
	"hlt\n");

TEST_F(rm, in_4_bytes)
{
	struct vcpu *v = &self->vcpu;
	struct kvm_regs regs;

	vm_load_code(&self->vm, rm_in32);
	ASSERT_IO(v, KVM_EXIT_IO_IN, 4, 0x70, 1);
	*(uint32_t *)io_data(v) = 0x87654321;
	ASSERT_EXIT(v, KVM_EXIT_HLT);
	vcpu_get_regs(_metadata, v, &regs);
	EXPECT_EQ(0x87654321ULL, regs.rax);
}

GUEST_CODE(rm_rep_outsb, 16,
	"cld\n"
	"mov si, 0x500\n"
	"mov cx, 5\n"
	"mov dx, 0x3f8\n"
	"rep outsb\n"
	"hlt\n");

/*
 * String port IO may take several exits, each with io.count elements of
 * io.size bytes at data_offset; their data, in order, is the string. KVM
 * exits once per element for OUTS and once for the whole of a short INS.
 */
TEST_F(rm, rep_outsb_sends_the_string_in_order)
{
	struct vcpu *v = &self->vcpu;
	struct kvm_regs regs;
	char got[8] = { 0 };
	unsigned int n = 0, exits = 0;

	memcpy(self->vm.mem + RM_DATA, "hello", 5);
	vm_load_code(&self->vm, rm_rep_outsb);
	for (;;) {
		vcpu_run(_metadata, v);
		if (v->run->exit_reason != KVM_EXIT_IO)
			break;
		exits++;
		EXPECT_EQ(KVM_EXIT_IO_OUT, v->run->io.direction);
		EXPECT_EQ(1, v->run->io.size);
		EXPECT_EQ(0x3f8, v->run->io.port);
		ASSERT_LE(1, v->run->io.count);
		ASSERT_GE(5, n + v->run->io.count);
		memcpy(got + n, io_data(v), v->run->io.count);
		n += v->run->io.count;
	}
	TH_LOG("%u bytes in %u exits", n, exits);
	ASSERT_EQ(KVM_EXIT_HLT, v->run->exit_reason)
		TH_LOG("exit %s", exit_reason_name(v->run->exit_reason));
	EXPECT_STREQ("hello", got);
	vcpu_get_regs(_metadata, v, &regs);
	EXPECT_EQ(0ULL, regs.rcx & 0xffff);
	EXPECT_EQ(RM_DATA + 5ULL, regs.rsi & 0xffff);
}

GUEST_CODE(rm_rep_insw, 16,
	"cld\n"
	"mov di, 0x600\n"
	"mov cx, 3\n"
	"mov dx, 0x1f0\n"
	"rep insw\n"
	"hlt\n");

TEST_F(rm, rep_insw_stores_userspace_data)
{
	static const uint16_t in[3] = { 0x1111, 0x2222, 0x3333 };
	struct vcpu *v = &self->vcpu;
	struct kvm_regs regs;
	unsigned int n = 0, exits = 0;

	vm_load_code(&self->vm, rm_rep_insw);
	for (;;) {
		vcpu_run(_metadata, v);
		if (v->run->exit_reason != KVM_EXIT_IO)
			break;
		exits++;
		EXPECT_EQ(KVM_EXIT_IO_IN, v->run->io.direction);
		EXPECT_EQ(2, v->run->io.size);
		EXPECT_EQ(0x1f0, v->run->io.port);
		ASSERT_LE(1, v->run->io.count);
		ASSERT_GE(3, n + v->run->io.count);
		memcpy(io_data(v), in + n, 2 * v->run->io.count);
		n += v->run->io.count;
	}
	TH_LOG("%u words in %u exits", n, exits);
	ASSERT_EQ(KVM_EXIT_HLT, v->run->exit_reason)
		TH_LOG("exit %s", exit_reason_name(v->run->exit_reason));
	EXPECT_EQ(0, memcmp(in, self->vm.mem + 0x600, sizeof(in)));
	vcpu_get_regs(_metadata, v, &regs);
	EXPECT_EQ(0ULL, regs.rcx & 0xffff);
	EXPECT_EQ(0x606ULL, regs.rdi & 0xffff);
}

/*
 * Where RIP is while userspace handles a port IO exit (KVM: on the IN/OUT,
 * advanced by the next KVM_RUN), and what KVM_SET_REGS during the exit does.
 */
GUEST_CODE(rm_out_at, 16,
	"nop\n"
	"out 0x10, al\n"
	"hlt\n");

TEST_F(rm, rip_points_at_out_during_its_exit)
{
	struct kvm_regs regs;

	vm_load_code(&self->vm, rm_out_at);
	run_to_out(&self->vcpu, 1, 0x10);
	vcpu_get_regs(_metadata, &self->vcpu, &regs);
	EXPECT_EQ(CODE_GPA + 1, regs.rip);
	ASSERT_EXIT(&self->vcpu, KVM_EXIT_HLT);
	vcpu_get_regs(_metadata, &self->vcpu, &regs);
	EXPECT_EQ(CODE_GPA + 4, regs.rip);
}

GUEST_CODE(rm_out_7e, 16,
	"nop\n"
	"out 0x7e, al\n"
	"hlt\n");

TEST_F(rm, out_to_port_0x7e_advances_rip_before_its_exit)
{
	struct kvm_regs regs;

	/* KVM_X86_QUIRK_OUT_7E_INC_RIP, on by default. */
	vm_load_code(&self->vm, rm_out_7e);
	run_to_out(&self->vcpu, 1, 0x7e);
	vcpu_get_regs(_metadata, &self->vcpu, &regs);
	EXPECT_EQ(CODE_GPA + 3, regs.rip);
	ASSERT_EXIT(&self->vcpu, KVM_EXIT_HLT);
	vcpu_get_regs(_metadata, &self->vcpu, &regs);
	EXPECT_EQ(CODE_GPA + 4, regs.rip);
}

GUEST_CODE(rm_in_elsewhere, 16,
	"mov ax, 0x1111\n"
	"in al, 0x60\n"
	"hlt\n"
	"hlt\n");

TEST_F(rm, set_regs_moving_rip_during_in_exit_drops_the_in)
{
	struct kvm_regs regs;

	vm_load_code(&self->vm, rm_in_elsewhere);
	ASSERT_IO(&self->vcpu, KVM_EXIT_IO_IN, 1, 0x60, 1);
	*(uint8_t *)io_data(&self->vcpu) = 0x22;
	vcpu_get_regs(_metadata, &self->vcpu, &regs);
	regs.rip = CODE_GPA + 6;	/* the second hlt */
	vcpu_set_regs(_metadata, &self->vcpu, &regs);
	ASSERT_EXIT(&self->vcpu, KVM_EXIT_HLT);
	vcpu_get_regs(_metadata, &self->vcpu, &regs);
	EXPECT_EQ(CODE_GPA + 7, regs.rip);
	EXPECT_EQ(0x1111ULL, regs.rax & 0xffff);
}

GUEST_CODE(rm_hlt, 16,
	"hlt\n");

TEST_F(rm, hlt_exits_with_rip_after_it)
{
	struct kvm_regs regs;

	vm_load_code(&self->vm, rm_hlt);
	ASSERT_EXIT(&self->vcpu, KVM_EXIT_HLT);
	vcpu_get_regs(_metadata, &self->vcpu, &regs);
	EXPECT_EQ(CODE_GPA + 1, regs.rip);
}

GUEST_CODE(rm_hlt_twice, 16,
	"hlt\n"
	"mov al, 7\n"
	"out 0x10, al\n"
	"hlt\n");

TEST_F(rm, run_after_hlt_resumes_after_it)
{
	/* Without an in-kernel local APIC, HLT just exits to userspace. */
	vm_load_code(&self->vm, rm_hlt_twice);
	ASSERT_EXIT(&self->vcpu, KVM_EXIT_HLT);
	EXPECT_EQ(7, run_to_out(&self->vcpu, 1, 0x10));
	ASSERT_EXIT(&self->vcpu, KVM_EXIT_HLT);
}

GUEST_CODE(rm_int3, 16,
	"int3\n"
	"hlt\n");

TEST_F(rm, triple_fault_is_shutdown)
{
	struct kvm_sregs sregs;

	/* An empty IVT: int3 -> #GP -> #DF -> triple fault. */
	vcpu_get_sregs(_metadata, &self->vcpu, &sregs);
	sregs.idt.limit = 0;
	vcpu_set_sregs(_metadata, &self->vcpu, &sregs);
	vm_load_code(&self->vm, rm_int3);
	ASSERT_EXIT(&self->vcpu, KVM_EXIT_SHUTDOWN);
}

GUEST_CODE(rm_cpuid0, 16,
	"xor eax, eax\n"
	"cpuid\n"
	"out 0x10, eax\n"
	"hlt\n");

TEST_F(rm, cpuid_is_handled_in_kernel)
{
	vm_load_code(&self->vm, rm_cpuid0);
	/* The first exit is the OUT after CPUID. */
	run_to_out(&self->vcpu, 4, 0x10);
	ASSERT_EXIT(&self->vcpu, KVM_EXIT_HLT);
}

GUEST_CODE(rm_cpuid_dump, 16,
	"xor eax, eax\n"
	"cpuid\n"
	"mov dword ptr [0x500], eax\n"
	"mov dword ptr [0x504], ebx\n"
	"mov dword ptr [0x508], ecx\n"
	"mov dword ptr [0x50c], edx\n"
	"mov eax, 2\n"
	"cpuid\n"
	"mov dword ptr [0x510], eax\n"
	"mov dword ptr [0x514], ebx\n"
	"mov dword ptr [0x518], ecx\n"
	"mov dword ptr [0x51c], edx\n"
	"hlt\n");

TEST_F(rm, set_cpuid2_sets_what_guest_cpuid_returns)
{
	struct {
		struct kvm_cpuid2 c;
		struct kvm_cpuid_entry2 e[2];
	} cpuid = {
		.c.nent = 2,
		.e = {
			{ .function = 0, .eax = 2, .ebx = 0x6d766b52,
			  .ecx = 0x21757063, .edx = 0x74736554 },
			{ .function = 2, .eax = 0x11111111, .ebx = 0x22222222,
			  .ecx = 0x33333333, .edx = 0x44444444 },
		},
	};
	static const uint32_t want[8] = {
		2, 0x6d766b52, 0x21757063, 0x74736554,
		0x11111111, 0x22222222, 0x33333333, 0x44444444,
	};
	uint32_t got[8];

	ASSERT_EQ(0, ioctl(self->vcpu.fd, KVM_SET_CPUID2, &cpuid))
		TH_LOG("KVM_SET_CPUID2: %s", strerror(errno));
	vm_load_code(&self->vm, rm_cpuid_dump);
	ASSERT_EXIT(&self->vcpu, KVM_EXIT_HLT);
	memcpy(got, self->vm.mem + RM_DATA, sizeof(got));
	for (int i = 0; i < 8; i++) {
		EXPECT_EQ(want[i], got[i]) TH_LOG("register %d", i);
	}
}

TEST_F(rm, get_cpuid2_returns_what_was_set)
{
	struct {
		struct kvm_cpuid2 c;
		struct kvm_cpuid_entry2 e[4];
	} set = {
		.c.nent = 1,
		.e[0] = { .function = 0, .eax = 0, .ebx = 1, .ecx = 2, .edx = 3 },
	}, get = { .c.nent = 4 };

	ASSERT_EQ(0, ioctl(self->vcpu.fd, KVM_SET_CPUID2, &set));
	ASSERT_EQ(0, ioctl(self->vcpu.fd, KVM_GET_CPUID2, &get))
		TH_LOG("KVM_GET_CPUID2: %s", strerror(errno));
	ASSERT_EQ(1, get.c.nent);
	EXPECT_EQ(0, get.e[0].function);
	EXPECT_EQ(1, get.e[0].ebx);
	EXPECT_EQ(2, get.e[0].ecx);
	EXPECT_EQ(3, get.e[0].edx);
}

/*
 * The guest switches itself from real mode to protected mode: LGDT, CR0.PE,
 * far jump into the 32-bit code segment, load the data segments.
 */
GUEST_CODE(rm_to_pm, 16,
	"0: cli\n"
	"lgdt [0x0fe0]\n"
	"mov eax, cr0\n"
	"or al, 1\n"
	"mov cr0, eax\n"
	".byte 0x66, 0xea\n"		/* ljmp 0x08:1f (32-bit offset) */
	".long 0x8000 + 1f - 0b\n"
	".word 0x08\n"
	".code32\n"
	"1: mov ax, 0x10\n"
	"mov ds, ax\n"
	"mov es, ax\n"
	"mov ss, ax\n"
	"mov esp, 0x80000\n"
	"push 0x13579bdf\n"
	"pop eax\n"
	"out 0x10, eax\n"
	"mov eax, cr0\n"
	"hlt\n");

TEST_F(rm, guest_switches_to_protected_mode)
{
	struct kvm_sregs sregs;
	struct kvm_regs regs;
	uint8_t *gdtr = self->vm.mem + 0xfe0;
	uint16_t limit = 6 * 8 - 1;
	uint32_t base = GDT_GPA;

	vm_write_gdt(&self->vm);
	memcpy(gdtr, &limit, 2);
	memcpy(gdtr + 2, &base, 4);
	vm_load_code(&self->vm, rm_to_pm);
	EXPECT_EQ(0x13579bdf, run_to_out(&self->vcpu, 4, 0x10));
	ASSERT_EXIT(&self->vcpu, KVM_EXIT_HLT);
	vcpu_get_regs(_metadata, &self->vcpu, &regs);
	EXPECT_EQ(X86_CR0_PE, regs.rax & X86_CR0_PE);
	vcpu_get_sregs(_metadata, &self->vcpu, &sregs);
	EXPECT_EQ(X86_CR0_PE, sregs.cr0 & X86_CR0_PE);
	EXPECT_EQ(SEL_CODE32, sregs.cs.selector);
	EXPECT_EQ(1, sregs.cs.db);
	EXPECT_EQ(SEL_DATA, sregs.ss.selector);
	EXPECT_EQ(GDT_GPA, sregs.gdt.base);
	EXPECT_EQ(limit, sregs.gdt.limit);
}

/* --- 32-bit protected mode --- */

GUEST_CODE(pm_flat, 32,
	"mov eax, 0x12345678\n"
	"mov dword ptr [0x20000], eax\n"
	"push eax\n"
	"pop ebx\n"
	"out 0x10, eax\n"
	"hlt\n");

TEST(protected_mode_guest_without_paging)
{
	struct vm vm;
	struct vcpu v;
	struct kvm_regs regs;

	vm_create(_metadata, &vm);
	vcpu_create(_metadata, &vm, 0, &v);
	vcpu_setup_protected(_metadata, &vm, &v, 0);
	vm_load_code(&vm, pm_flat);
	EXPECT_EQ(0x12345678, run_to_out(&v, 4, 0x10));
	ASSERT_EXIT(&v, KVM_EXIT_HLT);
	EXPECT_EQ(0x12345678, mem_read32(&vm, DATA_GPA));
	vcpu_get_regs(_metadata, &v, &regs);
	EXPECT_EQ(0x12345678ULL, regs.rbx);
	EXPECT_EQ(STACK_TOP, regs.rsp);
	vcpu_destroy(&vm, &v);
	vm_destroy(&vm);
}

GUEST_CODE(pm_paging, 32,
	"mov dword ptr [0x400000], 0xcafef00d\n"	/* virtual alias of 0x20000 */
	"mov eax, dword ptr [0x20000]\n"
	"out 0x10, eax\n"
	"mov eax, cr0\n"
	"out 0x11, eax\n"
	"hlt\n");

TEST(protected_mode_guest_with_paging)
{
	struct vm vm;
	struct vcpu v;

	vm_create(_metadata, &vm);
	vcpu_create(_metadata, &vm, 0, &v);
	vcpu_setup_protected(_metadata, &vm, &v, 1);
	vm_load_code(&vm, pm_paging);
	EXPECT_EQ(0xcafef00d, run_to_out(&v, 4, 0x10));
	EXPECT_EQ(X86_CR0_PG | X86_CR0_PE,
		  run_to_out(&v, 4, 0x11) & (X86_CR0_PG | X86_CR0_PE));
	ASSERT_EXIT(&v, KVM_EXIT_HLT);
	EXPECT_EQ(0xcafef00d, mem_read32(&vm, DATA_GPA));
	/* The guest wrote through its page tables, which set A and D. */
	EXPECT_EQ(0x60, mem_read32(&vm, PT_GPA + 0x2000) & 0x60);
	vcpu_destroy(&vm, &v);
	vm_destroy(&vm);
}

/*
 * From 32-bit protected mode the guest enables long mode itself: CR4.PAE,
 * CR3, EFER.LME (WRMSR), CR0.PG, far jump to the 64-bit code segment.
 */
GUEST_CODE(pm_to_lm, 32,
	"0: mov eax, 0x20\n"
	"mov cr4, eax\n"
	"mov eax, 0x10000\n"
	"mov cr3, eax\n"
	"mov ecx, 0xc0000080\n"
	"rdmsr\n"
	"or eax, 0x100\n"
	"wrmsr\n"
	"mov eax, cr0\n"
	"or eax, 0x80000000\n"
	"mov cr0, eax\n"
	".byte 0xea\n"			/* ljmp 0x18:1f */
	".long 0x8000 + 1f - 0b\n"
	".word 0x18\n"
	".code64\n"
	"1: mov rax, 0x1122334455667788\n"
	"mov rbx, rax\n"
	"shr rbx, 32\n"
	"out 0x10, eax\n"
	"hlt\n");

TEST(guest_switches_from_protected_to_long_mode)
{
	struct vm vm;
	struct vcpu v;
	struct kvm_sregs sregs;
	struct kvm_regs regs;

	vm_create(_metadata, &vm);
	vcpu_create(_metadata, &vm, 0, &v);
	vcpu_set_supported_cpuid(_metadata, &vm, &v);
	vcpu_setup_protected(_metadata, &vm, &v, 0);
	vm_build_pt64(&vm);
	vm_load_code(&vm, pm_to_lm);
	EXPECT_EQ(0x55667788, run_to_out(&v, 4, 0x10));
	ASSERT_EXIT(&v, KVM_EXIT_HLT);
	vcpu_get_regs(_metadata, &v, &regs);
	EXPECT_EQ(0x1122334455667788ULL, regs.rax);
	EXPECT_EQ(0x11223344ULL, regs.rbx);
	vcpu_get_sregs(_metadata, &v, &sregs);
	EXPECT_EQ(EFER_LME | EFER_LMA, sregs.efer & (EFER_LME | EFER_LMA));
	EXPECT_EQ(1, sregs.cs.l);
	EXPECT_EQ(SEL_CODE64, sregs.cs.selector);
	vcpu_destroy(&vm, &v);
	vm_destroy(&vm);
}

/* --- 64-bit long mode --- */

GUEST_CODE(lm_basic, 64,
	"mov rbx, 0xffffffff80020000\n"		/* high alias of 0x20000 */
	"mov rax, 0x0123456789abcdef\n"
	"mov [rbx], rax\n"
	"mov rcx, qword ptr [0x20000]\n"
	"mov rdx, rcx\n"
	"shr rdx, 32\n"
	"push rdx\n"
	"pop rsi\n"
	"out 0x10, eax\n"
	"hlt\n");

TEST(long_mode_guest_runs_64bit_code)
{
	struct vm vm;
	struct vcpu v;
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	uint64_t data;

	vm_create(_metadata, &vm);
	vcpu_create(_metadata, &vm, 0, &v);
	vcpu_setup_long(_metadata, &vm, &v);
	vm_load_code(&vm, lm_basic);
	EXPECT_EQ(0x89abcdef, run_to_out(&v, 4, 0x10));
	ASSERT_EXIT(&v, KVM_EXIT_HLT);
	vcpu_get_regs(_metadata, &v, &regs);
	EXPECT_EQ(0x0123456789abcdefULL, regs.rcx);
	EXPECT_EQ(0x01234567ULL, regs.rdx);
	EXPECT_EQ(0x01234567ULL, regs.rsi);
	EXPECT_EQ(STACK_TOP, regs.rsp);
	memcpy(&data, vm.mem + DATA_GPA, 8);
	EXPECT_EQ(0x0123456789abcdefULL, data);
	vcpu_get_sregs(_metadata, &v, &sregs);
	EXPECT_EQ(EFER_LME | EFER_LMA, sregs.efer & (EFER_LME | EFER_LMA));
	EXPECT_EQ(PT_GPA, sregs.cr3);
	vcpu_destroy(&vm, &v);
	vm_destroy(&vm);
}

GUEST_CODE(lm_out_loop, 64,
	"xor ecx, ecx\n"
	"1: mov eax, ecx\n"
	"out 0x12, eax\n"
	"inc ecx\n"
	"cmp ecx, 1000\n"
	"jne 1b\n"
	"hlt\n");

TEST(long_mode_guest_1000_io_exits)
{
	struct vm vm;
	struct vcpu v;

	vm_create(_metadata, &vm);
	vcpu_create(_metadata, &vm, 0, &v);
	vcpu_setup_long(_metadata, &vm, &v);
	vm_load_code(&vm, lm_out_loop);
	for (uint32_t i = 0; i < 1000; i++)
		ASSERT_EQ(i, run_to_out(&v, 4, 0x12));
	ASSERT_EXIT(&v, KVM_EXIT_HLT);
	vcpu_destroy(&vm, &v);
	vm_destroy(&vm);
}

/* --- interrupts and exceptions delivered to the guest --- */

#define HANDLER_GPA (CODE_GPA + 0x800)

GUEST_CODE(rm_int_main, 16,
	"mov al, 5\n"
	"int 0x10\n"
	"mov al, 6\n"
	"out 0x11, al\n"
	"hlt\n");

GUEST_CODE(rm_int_handler, 16,
	"out 0x10, al\n"
	"iret\n");

TEST_F(rm, software_interrupt_goes_through_the_ivt)
{
	uint16_t vec[2] = { HANDLER_GPA, 0 };	/* offset, segment */

	memcpy(self->vm.mem + 0x10 * 4, vec, sizeof(vec));
	vm_load_code(&self->vm, rm_int_main);
	vm_load(&self->vm, HANDLER_GPA, rm_int_handler, rm_int_handler_end);
	EXPECT_EQ(5, run_to_out(&self->vcpu, 1, 0x10));
	EXPECT_EQ(6, run_to_out(&self->vcpu, 1, 0x11));
	ASSERT_EXIT(&self->vcpu, KVM_EXIT_HLT);
}

FIXTURE(lm) {
	struct vm vm;
	struct vcpu vcpu;
};

FIXTURE_SETUP(lm)
{
	vm_create(_metadata, &self->vm);
	vcpu_create(_metadata, &self->vm, 0, &self->vcpu);
	vcpu_setup_long(_metadata, &self->vm, &self->vcpu);
}

FIXTURE_TEARDOWN(lm)
{
	vcpu_destroy(&self->vm, &self->vcpu);
	vm_destroy(&self->vm);
}

GUEST_CODE(lm_ud2, 64,
	"ud2\n"
	"hlt\n");

GUEST_CODE(lm_ud_handler, 64,
	"mov al, 6\n"
	"out 0x10, al\n"
	"mov rax, qword ptr [rsp]\n"	/* the faulting RIP */
	"out 0x11, eax\n"
	"hlt\n");

TEST_F(lm, invalid_opcode_is_delivered_through_the_idt)
{
	vm_set_idt_gate64(&self->vm, 6, HANDLER_GPA);
	vm_load_code(&self->vm, lm_ud2);
	vm_load(&self->vm, HANDLER_GPA, lm_ud_handler, lm_ud_handler_end);
	EXPECT_EQ(6, run_to_out(&self->vcpu, 1, 0x10));
	EXPECT_EQ(CODE_GPA, run_to_out(&self->vcpu, 4, 0x11));
	ASSERT_EXIT(&self->vcpu, KVM_EXIT_HLT);
}

GUEST_CODE(lm_pf, 64,
	"mov rbx, 0x400000000000\n"	/* PML4 entry 128: not present */
	"mov dword ptr [rbx + 0x10], 1\n"
	"hlt\n");

GUEST_CODE(lm_pf_handler, 64,
	"mov rax, cr2\n"
	"out 0x10, eax\n"
	"shr rax, 32\n"
	"out 0x11, eax\n"
	"mov rax, qword ptr [rsp]\n"	/* error code */
	"out 0x12, eax\n"
	"mov rax, qword ptr [rsp + 8]\n"	/* the faulting RIP */
	"out 0x13, eax\n"
	"hlt\n");

TEST_F(lm, page_fault_is_delivered_with_cr2_and_error_code)
{
	vm_set_idt_gate64(&self->vm, 14, HANDLER_GPA);
	vm_load_code(&self->vm, lm_pf);
	vm_load(&self->vm, HANDLER_GPA, lm_pf_handler, lm_pf_handler_end);
	EXPECT_EQ(0x10, run_to_out(&self->vcpu, 4, 0x10));
	EXPECT_EQ(0x4000, run_to_out(&self->vcpu, 4, 0x11));
	EXPECT_EQ(0x2, run_to_out(&self->vcpu, 4, 0x12));	/* write, not present */
	EXPECT_EQ(CODE_GPA + 10, run_to_out(&self->vcpu, 4, 0x13));
	ASSERT_EXIT(&self->vcpu, KVM_EXIT_HLT);
}

GUEST_CODE(lm_int80, 64,
	"mov al, 1\n"
	"int 0x80\n"
	"mov al, 2\n"
	"out 0x11, al\n"
	"hlt\n");

GUEST_CODE(lm_int80_handler, 64,
	"out 0x10, al\n"
	"iretq\n");

TEST_F(lm, software_interrupt_and_iretq)
{
	vm_set_idt_gate64(&self->vm, 0x80, HANDLER_GPA);
	vm_load_code(&self->vm, lm_int80);
	vm_load(&self->vm, HANDLER_GPA, lm_int80_handler, lm_int80_handler_end);
	EXPECT_EQ(1, run_to_out(&self->vcpu, 1, 0x10));
	EXPECT_EQ(2, run_to_out(&self->vcpu, 1, 0x11));
	ASSERT_EXIT(&self->vcpu, KVM_EXIT_HLT);
}

GUEST_CODE(lm_no_idt_pf, 64,
	"mov rbx, 0x400000000000\n"
	"mov eax, dword ptr [rbx]\n"
	"hlt\n");

TEST_F(lm, page_fault_without_handler_is_shutdown)
{
	/* No gate for #PF: #NP -> #DF -> triple fault. */
	vm_load_code(&self->vm, lm_no_idt_pf);
	ASSERT_EXIT(&self->vcpu, KVM_EXIT_SHUTDOWN);
}

TEST_HARNESS_MAIN
