/* SPDX-License-Identifier: GPL-2.0 */
/*
 * rkvm's SVM world switch. A .S file rather than Rust asm! because VMRUN,
 * VMLOAD and VMSAVE need exception-table entries (they fault if SVM was
 * switched off under us, e.g. on an emergency reboot), which asm! cannot emit.
 *
 * Called with interrupts disabled, and returns with them disabled. GIF is
 * cleared around the whole switch so that no interrupt or NMI can arrive
 * while GS base and friends hold guest values (between VMRUN and the host
 * VMLOAD); RFLAGS.IF is set only across VMRUN itself.
 */
#include <linux/linkage.h>
#include <asm/asm.h>
#include <asm/frame.h>
#include <asm/nospec-branch.h>

/* Offsets into the guest GPR array, indexed by x86 register number. */
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

.section .noinstr.text, "ax"

/*
 * void rkvm_svm_vmrun(u64 guest_vmcb_pa, u64 *gprs, u64 host_vmcb_pa)
 *
 * Saves the host's VMSAVE state to host_vmcb_pa, loads the guest's from
 * guest_vmcb_pa, runs the guest, and swaps back. gprs[] holds the guest GPRs
 * other than RAX and RSP (those live in the VMCB).
 *
 * If SVM was switched off under us (an emergency reboot), each SVM
 * instruction faults; the exception table then skips just that instruction,
 * as KVM does, and the caller sees that the VMCB's exit code was not written.
 */
SYM_FUNC_START(rkvm_svm_vmrun)
	push %rbp
	mov  %rsp, %rbp
	push %r15
	push %r14
	push %r13
	push %r12
	push %rbx

	push %rdx		/* host VMCB */
	push %rsi		/* gprs */
	push %rdi		/* guest VMCB */

0:	clgi
10:	mov %rdx, %rax
1:	vmsave %rax
11:	mov (%rsp), %rax
2:	vmload %rax
12:

	/*
	 * The host's RFLAGS.IF at VMRUN decides whether physical interrupts
	 * exit the guest (V_INTR_MASKING). GIF=0 keeps them pending in host
	 * code, so setting IF here lets nothing in before #VMEXIT.
	 */
	sti

	mov R_RCX(%rsi), %rcx
	mov R_RDX(%rsi), %rdx
	mov R_RBX(%rsi), %rbx
	mov R_RBP(%rsi), %rbp
	mov R_RDI(%rsi), %rdi
	mov R_R8(%rsi),  %r8
	mov R_R9(%rsi),  %r9
	mov R_R10(%rsi), %r10
	mov R_R11(%rsi), %r11
	mov R_R12(%rsi), %r12
	mov R_R13(%rsi), %r13
	mov R_R14(%rsi), %r14
	mov R_R15(%rsi), %r15
	mov R_RSI(%rsi), %rsi

	/* RAX is restored to the guest VMCB's address by #VMEXIT. */
3:	vmrun %rax
4:	cli
	mov 8(%rsp), %rax	/* gprs */
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

	mov (%rsp), %rax
5:	vmsave %rax
15:	mov 16(%rsp), %rax
6:	vmload %rax
16:
7:	stgi
17:

	/* Guest values must not linger in registers the host may misuse. */
	xor %ecx, %ecx
	xor %edx, %edx
	xor %esi, %esi
	xor %edi, %edi
	xor %r8d, %r8d
	xor %r9d, %r9d
	xor %r10d, %r10d
	xor %r11d, %r11d

	add $24, %rsp
	pop %rbx
	pop %r12
	pop %r13
	pop %r14
	pop %r15
	pop %rbp
	RET

	_ASM_EXTABLE(0b, 10b)
	_ASM_EXTABLE(1b, 11b)
	_ASM_EXTABLE(2b, 12b)
	_ASM_EXTABLE(3b, 4b)
	_ASM_EXTABLE(5b, 15b)
	_ASM_EXTABLE(6b, 16b)
	_ASM_EXTABLE(7b, 17b)
SYM_FUNC_END(rkvm_svm_vmrun)
