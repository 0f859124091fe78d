/* SPDX-License-Identifier: GPL-2.0 */
/*
 * rkvm's VMX world switch. A .S file for the same reason as svm_vmrun.S:
 * the host state after a VM exit is the VMCS's (RSP, RIP), which only
 * assembly can arrange.
 *
 * Called with interrupts disabled, in VMX root operation with the vCPU's
 * VMCS current and its launch state clear (sys/vmx_helpers.c VMCLEARs it
 * before every entry); returns with interrupts disabled. External
 * interrupts and NMIs exit the guest (pin-based controls) and stay pending
 * for the host, which takes them once the caller enables interrupts.
 */
#include <linux/linkage.h>
#include <asm/asm.h>
#include <asm/frame.h>
#include <asm/nospec-branch.h>
#include <asm/unwind_hints.h>

/* Offsets into the guest GPR array, indexed by x86 register number. */
#define R_RAX	(0 * 8)
#define R_RCX	(1 * 8)
#define R_RDX	(2 * 8)
#define R_RBX	(3 * 8)
#define R_RBP	(5 * 8)
#define R_RSI	(6 * 8)
#define R_RDI	(7 * 8)
#define R_R8	(8 * 8)
#define R_R9	(9 * 8)
#define R_R10	(10 * 8)
#define R_R11	(11 * 8)
#define R_R12	(12 * 8)
#define R_R13	(13 * 8)
#define R_R14	(14 * 8)
#define R_R15	(15 * 8)

/* VMCS encodings of the host RSP and RIP fields. */
#define HOST_RSP	0x6c14
#define HOST_RIP	0x6c16

.section .noinstr.text, "ax"

/*
 * int rkvm_vmx_launch(u64 *gprs)
 *
 * Loads the guest GPRs other than RSP (the VMCS holds it) from gprs[],
 * VMLAUNCHes, and on VM exit stores them back. Returns 0 after a VM exit
 * (including a failed entry that exits with bit 31 of the exit reason set),
 * 1 if VMLAUNCH itself failed (VM-instruction error in the VMCS, or no
 * current VMCS): then no guest state changed.
 */
SYM_FUNC_START(rkvm_vmx_launch)
	push %rbp
	mov  %rsp, %rbp
	push %r15
	push %r14
	push %r13
	push %r12
	push %rbx
	push %rdi		/* gprs, found again at (%rsp) after the exit */

	mov $HOST_RSP, %eax
	vmwrite %rsp, %rax
	jbe .Lfail
	lea .Lexit(%rip), %rdx
	mov $HOST_RIP, %eax
	vmwrite %rdx, %rax
	jbe .Lfail

	mov R_RAX(%rdi), %rax
	mov R_RCX(%rdi), %rcx
	mov R_RDX(%rdi), %rdx
	mov R_RBX(%rdi), %rbx
	mov R_RBP(%rdi), %rbp
	mov R_RSI(%rdi), %rsi
	mov R_R8(%rdi),  %r8
	mov R_R9(%rdi),  %r9
	mov R_R10(%rdi), %r10
	mov R_R11(%rdi), %r11
	mov R_R12(%rdi), %r12
	mov R_R13(%rdi), %r13
	mov R_R14(%rdi), %r14
	mov R_R15(%rdi), %r15
	mov R_RDI(%rdi), %rdi

	/* The exit resumes below with this stack: tell objtool so. */
	UNWIND_HINT_SAVE
	vmlaunch
	/* Only reached if VMLAUNCH failed; RSP and the stack are intact. */
	jmp .Lfail

	/* Reached only from a VM exit (HOST_RIP), never by falling through. */
SYM_INNER_LABEL_ALIGN(rkvm_vmx_exit, SYM_L_LOCAL)
	UNWIND_HINT_RESTORE
	ENDBR
.Lexit:
	/* VM exit: RSP is HOST_RSP, so (%rsp) is gprs again. */
	push %rax
	mov 8(%rsp), %rax
	pop R_RAX(%rax)
	mov %rcx, R_RCX(%rax)
	mov %rdx, R_RDX(%rax)
	mov %rbx, R_RBX(%rax)
	mov %rbp, R_RBP(%rax)
	mov %rsi, R_RSI(%rax)
	mov %rdi, R_RDI(%rax)
	mov %r8,  R_R8(%rax)
	mov %r9,  R_R9(%rax)
	mov %r10, R_R10(%rax)
	mov %r11, R_R11(%rax)
	mov %r12, R_R12(%rax)
	mov %r13, R_R13(%rax)
	mov %r14, R_R14(%rax)
	mov %r15, R_R15(%rax)
	xor %eax, %eax
	jmp .Lout

.Lfail:
	mov $1, %eax

.Lout:
	/* Guest values must not linger in registers the host may misuse. */
	xor %ecx, %ecx
	xor %edx, %edx
	xor %esi, %esi
	xor %edi, %edi
	xor %r8d, %r8d
	xor %r9d, %r9d
	xor %r10d, %r10d
	xor %r11d, %r11d

	add $8, %rsp
	pop %rbx
	pop %r12
	pop %r13
	pop %r14
	pop %r15
	pop %rbp
	RET
SYM_FUNC_END(rkvm_vmx_launch)
