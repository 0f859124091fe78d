# SPDX-License-Identifier: GPL-2.0
#
# The rkvm-run guest: starts in 16-bit real mode at CODE_GPA, switches itself
# to 32-bit protected mode and then to 64-bit long mode, prints
#
#     Hello from a long-mode guest on <device>
#
# on the COM1 16550 (polling LSR.THRE before each byte written to THR) and
# halts. On entry RSI holds the guest-physical address of the NUL-terminated
# device name. The memory-map constants (CODE_GPA, STACK_TOP, PML4_GPA,
# PDPT_GPA, PD_GPA, COM1) come from src/layout.rs through --defsym.
#
# Assembled by build.rs with GNU as and turned into a flat binary with
# objcopy. No linker runs, so every absolute address is written as
# `label - start + CODE_GPA`, which the assembler resolves itself; build.rs
# rejects an object that still has relocations.

	.intel_syntax noprefix

	.set CR0_PE, 1 << 0
	.set CR0_PG, 1 << 31
	.set CR4_PAE, 1 << 5
	.set MSR_EFER, 0xc0000080
	.set EFER_LME, 1 << 8
	.set PTE_P, 1 << 0		# present
	.set PTE_RW, 1 << 1		# writable
	.set PTE_PS, 1 << 7		# large page (2 MiB in a page directory)
	.set LSR_THRE, 1 << 5		# transmitter holding register empty

	# GDT selectors (see gdt below)
	.set SEL_CODE32, 0x08
	.set SEL_DATA, 0x10
	.set SEL_CODE64, 0x18

	.text
start:
# ---------------------------------------------------------------- real mode
	.code16
	cli
	lgdt	[gdt_ptr - start + CODE_GPA]	# DS.base is 0 after reset
	mov	eax, cr0
	or	eax, CR0_PE
	mov	cr0, eax
	# A far jump loads CS from the GDT: 32-bit code from here on.
	.byte	0x66, 0xea			# jmp far ptr16:32
	.long	pm32 - start + CODE_GPA
	.word	SEL_CODE32

# ------------------------------------------------------ 32-bit protected mode
	.code32
pm32:
	mov	ax, SEL_DATA
	mov	ds, ax
	mov	es, ax
	mov	ss, ax
	mov	esp, STACK_TOP

	# Identity page tables: zero PML4, PDPT and PD (contiguous), then
	# PML4[0] -> PDPT, PDPT[0] -> PD, PD[0] = 2 MiB page at 0.
	mov	edi, PML4_GPA
	xor	eax, eax
	mov	ecx, 3 * 4096 / 4
	cld
	rep stosd
	mov	dword ptr [PML4_GPA], PDPT_GPA | PTE_P | PTE_RW
	mov	dword ptr [PDPT_GPA], PD_GPA | PTE_P | PTE_RW
	mov	dword ptr [PD_GPA], 0 | PTE_P | PTE_RW | PTE_PS

	# Long mode: CR4.PAE, CR3, EFER.LME, then CR0.PG activates it
	# (EFER.LMA) and we run in compatibility mode until CS is reloaded.
	mov	eax, cr4
	or	eax, CR4_PAE
	mov	cr4, eax
	mov	eax, PML4_GPA
	mov	cr3, eax
	mov	ecx, MSR_EFER
	rdmsr
	or	eax, EFER_LME
	wrmsr
	mov	eax, cr0
	or	eax, CR0_PG
	mov	cr0, eax
	.byte	0xea				# jmp far ptr16:32
	.long	lm64 - start + CODE_GPA
	.word	SEL_CODE64

# ------------------------------------------------------------ 64-bit long mode
	.code64
lm64:
	mov	ax, SEL_DATA
	mov	ds, ax
	mov	es, ax
	mov	ss, ax
	mov	esp, STACK_TOP			# zero-extends into RSP
	mov	esi, esi			# upper halves are undefined after
						# the mode switch: clear them
	lea	rdi, [rip + greeting]
	call	puts
	mov	rdi, rsi			# the device name from the VMM
	call	puts
	lea	rdi, [rip + newline]
	call	puts
1:	hlt
	jmp	1b

# puts: write the NUL-terminated string at RDI to COM1, one byte at a time.
# Clobbers RAX, RDX, RDI.
puts:
	mov	dx, COM1 + 5			# LSR
	in	al, dx
	test	al, LSR_THRE
	jz	puts				# wait until THR is empty
	mov	al, [rdi]
	test	al, al
	jz	2f
	mov	dx, COM1			# THR
	out	dx, al
	inc	rdi
	jmp	puts
2:	ret

# -------------------------------------------------------------------- data
greeting:
	.asciz	"Hello from a long-mode guest on "
newline:
	.asciz	"\n"

	.balign	8
gdt:
	.quad	0				# 0x00: null
	.quad	0x00cf9a000000ffff		# 0x08: code, 32-bit, flat 4 GiB
	.quad	0x00cf92000000ffff		# 0x10: data, flat 4 GiB
	.quad	0x00af9a000000ffff		# 0x18: code, 64-bit (L=1)
gdt_end:
gdt_ptr:
	.word	gdt_end - gdt - 1		# limit
	.long	gdt - start + CODE_GPA		# base
