// SPDX-License-Identifier: GPL-2.0
/*
 * A hostile guest: it executes every instruction the hypervisor intercepts
 * because a guest must not run it natively. Each must reach the guest as
 * #UD (the SVM instructions, RDPRU) or be a no-op (MONITOR, MWAIT, INVD,
 * WBINVD), and the hypercall instruction of the CPU's virtualization
 * extension (VMMCALL on AMD SVM, VMCALL on Intel VT-x) must return
 * -KVM_ENOSYS, as with Linux KVM; the host must survive all of it.
 * An alignment check at CPL 3 (which rkvm intercepts on both vendors, so
 * that a guest cannot keep the CPU delivering #AC forever) must still
 * reach the guest's handler with its error code (where the CPU raises
 * #AC at all: QEMU's TCG does not, and the test says so and skips).
 */
#include <cpuid.h>
#include <stdint.h>
#include <string.h>

#include "vm_lib.h"

/*
 * Real mode. The #UD handler (vector 6, at 0x7800) counts in BX and skips
 * the 3-byte instruction. Each group ends with an OUT of its result.
 */
GUEST_CODE(hostile, 16,
	"xor bx, bx\n"
	"mov word ptr [6 * 4], 0x7800\n"
	"mov word ptr [6 * 4 + 2], 0\n"
	".byte 0x0f, 0x01, 0xd8\n"	/* vmrun */
	".byte 0x0f, 0x01, 0xda\n"	/* vmload */
	".byte 0x0f, 0x01, 0xdb\n"	/* vmsave */
	".byte 0x0f, 0x01, 0xdc\n"	/* stgi */
	".byte 0x0f, 0x01, 0xdd\n"	/* clgi */
	".byte 0x0f, 0x01, 0xde\n"	/* skinit */
	".byte 0x0f, 0x01, 0xdf\n"	/* invlpga */
	".byte 0x0f, 0x01, 0xfd\n"	/* rdpru */
	"mov ax, bx\n"
	"out 0x10, ax\n"
	"xor bx, bx\n"
	"monitor\n"
	"mwait\n"
	"invd\n"
	"wbinvd\n"
	"mov ax, bx\n"
	"out 0x11, ax\n"
	"mov eax, 0x12345678\n"
	".globl hostile_hypercall\n"
	"hostile_hypercall:\n"
	".byte 0x0f, 0x01, 0xd9\n"	/* vmmcall; vmcall (0f 01 c1) on VT-x */
	"out 0x12, eax\n"
	"hlt\n");
extern const uint8_t hostile_hypercall[];

/*
 * Whether the CPU that KVM or rkvm drives has Intel VT-x (else AMD SVM).
 * Linux KVM's hypercall is VMCALL with kvm_intel and VMMCALL with kvm_amd;
 * in real mode the other one is not accepted the same way (kvm_intel's
 * emulator refuses VMMCALL outside protected mode: #UD), so the guest uses
 * the native one.
 */
static int cpu_has_vmx(void)
{
	unsigned int a = 0, b = 0, c = 0, d = 0;

	__cpuid(1, a, b, c, d);
	return !!(c & (1U << 5));
}

GUEST_CODE(ud_handler, 16,
	"push bp\n"
	"mov bp, sp\n"
	"add word ptr [bp + 2], 3\n"
	"inc bx\n"
	"pop bp\n"
	"iret\n");

/* DR0 round trip, then DR6 and DR7 at their reset values. */
GUEST_CODE(debugregs, 16,
	"mov eax, 0x12345678\n"
	"mov dr0, eax\n"
	"xor eax, eax\n"
	"mov ebx, dr0\n"
	"mov eax, ebx\n"
	"out 0x20, eax\n"
	"mov eax, dr7\n"
	"out 0x21, eax\n"
	"mov eax, dr6\n"
	"out 0x22, eax\n"
	"hlt\n");

FIXTURE(h) {
	struct vm vm;
	struct vcpu vcpu;
};

FIXTURE_SETUP(h)
{
	vm_create(_metadata, &self->vm);
	vcpu_create(_metadata, &self->vm, 0, &self->vcpu);
	vcpu_setup_real(_metadata, &self->vcpu);
	vm_load_code(&self->vm, hostile);
	if (cpu_has_vmx())
		self->vm.mem[CODE_GPA + (hostile_hypercall - hostile) + 2] = 0xc1;
	vm_load(&self->vm, 0x7800, ud_handler, ud_handler_end);
}

FIXTURE_TEARDOWN(h)
{
	vcpu_destroy(&self->vm, &self->vcpu);
	vm_destroy(&self->vm);
}

TEST_F(h, svm_instructions_and_rdpru_raise_ud)
{
	EXPECT_EQ(8, run_to_out(&self->vcpu, 2, 0x10));
}

TEST_F(h, monitor_mwait_invd_wbinvd_are_no_ops)
{
	run_to_out(&self->vcpu, 2, 0x10);
	EXPECT_EQ(0, run_to_out(&self->vcpu, 2, 0x11));
}

/* VMMCALL on AMD SVM, VMCALL on Intel VT-x. */
TEST_F(h, hypercall_returns_minus_kvm_enosys)
{
	run_to_out(&self->vcpu, 2, 0x10);
	run_to_out(&self->vcpu, 2, 0x11);
	EXPECT_EQ((uint32_t)-1000, run_to_out(&self->vcpu, 4, 0x12));
	ASSERT_EXIT(&self->vcpu, KVM_EXIT_HLT);
}

TEST(debug_registers_are_the_guests_own)
{
	struct vm vm;
	struct vcpu v;

	vm_create(_metadata, &vm);
	vcpu_create(_metadata, &vm, 0, &v);
	vcpu_setup_real(_metadata, &v);
	vm_load_code(&vm, debugregs);
	EXPECT_EQ(0x12345678, run_to_out(&v, 4, 0x20));
	EXPECT_EQ(0x400, run_to_out(&v, 4, 0x21));
	EXPECT_EQ(0xffff0ff0, run_to_out(&v, 4, 0x22));
	ASSERT_EXIT(&v, KVM_EXIT_HLT);
	vcpu_destroy(&vm, &v);
	vm_destroy(&vm);
}

/*
 * Long mode, CPL 0: CR0.AM on, then IRETQ to CPL 3 with RFLAGS.AC; the
 * user code reads a misaligned dword. The #AC handler (CPL 0, on the
 * TSS's RSP0) reports its error code and the faulting RIP's offset.
 */
#define AC_USER_CS	(0x30 | 3)
#define AC_USER_SS	(0x38 | 3)
#define AC_RSP0		0x70000UL
#define AC_USER_RSP	0x60000UL
GUEST_CODE(ac_kernel, 64,
	"mov rax, cr0\n"
	"or eax, 1 << 18\n"
	"mov cr0, rax\n"
	"push 0x3b\n"
	"push 0x60000\n"
	"push 0x40202\n"
	"push 0x33\n"
	"lea rax, [rip + ac_user]\n"
	"push rax\n"
	"iretq\n"
	"ac_user:\n"
	".globl ac_fault\n"
	"ac_fault:\n"
	"mov eax, dword ptr [0x20001]\n"
	"out 0x16, al\n"
	"hlt\n");
extern const uint8_t ac_fault[];

GUEST_CODE(ac_handler, 64,
	"mov eax, [rsp]\n"
	"out 0x17, eax\n"
	"mov rax, [rsp + 8]\n"
	"out 0x18, eax\n"
	"mov rax, [rsp + 16]\n"
	"out 0x19, eax\n"
	"hlt\n");

TEST(alignment_check_at_cpl3_reaches_the_guest)
{
	uint64_t *gdt, *pt;
	struct kvm_sregs sregs;
	struct vm vm;
	struct vcpu v;

	vm_create(_metadata, &vm);
	vcpu_create(_metadata, &vm, 0, &v);
	vcpu_setup_long(_metadata, &vm, &v);
	vm_load_code(&vm, ac_kernel);
	vm_load(&vm, CODE_GPA + 0x800, ac_handler, ac_handler_end);
	/* Any other exception: "mov al, n; out 0x1f, al; hlt". */
	for (int n = 0; n < 32; n++) {
		uint8_t *st = vm.mem + CODE_GPA + 0x900 + n * 8;

		memcpy(st, (uint8_t[]){ 0xb0, n, 0xe6, 0x1f, 0xf4 }, 5);
		vm_set_idt_gate64(&vm, n, CODE_GPA + 0x900 + n * 8);
	}
	vm_set_idt_gate64(&vm, 17, CODE_GPA + 0x800);
	/* User code64 and data segments, DPL 3. */
	gdt = (uint64_t *)(vm.mem + GDT_GPA);
	gdt[6] = 0x00affb000000ffffULL;
	gdt[7] = 0x00cff3000000ffffULL;
	vcpu_get_sregs(_metadata, &v, &sregs);
	sregs.gdt.limit = 8 * 8 - 1;
	vcpu_set_sregs(_metadata, &v, &sregs);
	/* RSP0 in the 64-bit TSS. */
	memcpy(vm.mem + TSS_GPA + 4, &(uint64_t){ AC_RSP0 }, 8);
	/* User access to the first 4 GiB. */
	pt = (uint64_t *)(vm.mem + PT_GPA);
	pt[0] |= 4;
	for (int i = 0; i < 4; i++)
		pt[512 + i] |= 4;
	for (int i = 0; i < 4 * 512; i++)
		pt[1024 + i] |= 4;
	/*
	 * QEMU's TCG raises no #AC at all: the user code's OUT then faults
	 * (#GP, which the stubs report on port 0x1f). Say so rather than pass.
	 */
	vcpu_run(_metadata, &v);
	if (v.run->exit_reason == KVM_EXIT_IO && v.run->io.port == 0x1f &&
	    *(uint8_t *)io_data(&v) == 13)
		SKIP(goto out, "this CPU raises no #AC (an emulator without alignment checks)");
	ASSERT_EQ(KVM_EXIT_IO, v.run->exit_reason)
		TH_LOG("exit %s", exit_reason_name(v.run->exit_reason));
	ASSERT_EQ(0x17, v.run->io.port)
		TH_LOG("exception %u instead of #AC", *(uint8_t *)io_data(&v));
	EXPECT_EQ(0, *(uint32_t *)io_data(&v));
	EXPECT_EQ(CODE_GPA + (ac_fault - ac_kernel), run_to_out(&v, 4, 0x18));
	EXPECT_EQ(AC_USER_CS, run_to_out(&v, 4, 0x19));
	ASSERT_EXIT(&v, KVM_EXIT_HLT);
out:
	vcpu_destroy(&vm, &v);
	vm_destroy(&vm);
}

TEST_HARNESS_MAIN
