// SPDX-License-Identifier: GPL-2.0
/*
 * C helpers for rkvm's VMX backend (sys/vmx.rs): the instructions that may
 * fault and so need exception-table entries (VMXON, VMCLEAR, VMPTRLD, INVEPT,
 * INVVPID), and the host state that VM exits do not restore as Linux expects.
 *
 * CR4.VMXE: Linux 7.3 exports its CR4-shadow helpers only to kvm_intel, so
 * rkvm cannot keep VMX on the way KVM does (a shadow-based CR4 write from an
 * IPI would clear VMXE under it). rkvm turns VMX on only inside an
 * interrupts-off window around each VM entry: set CR4.VMXE by hand, VMXON,
 * VMPTRLD, run, VMCLEAR, VMXOFF, restore CR4. Nothing can write CR4 from the
 * shadow in that window (no IPIs, no preemption), and outside it the CPU is
 * exactly as Linux believes. Documentation/design.rst weighs the cost.
 */

#include "vmx_helpers.h"

#include <linux/percpu.h>
#include <linux/smp.h>
#include <asm/asm.h>
#include <asm/debugreg.h>
#include <asm/desc.h>
#include <asm/gsseg.h>
#include <asm/msr.h>
#include <asm/processor.h>
#include <asm/segment.h>
#include <asm/special_insns.h>

#define RKVM_CR4_VMXE (1UL << 13)

/*
 * Enters VMX root operation on this CPU and makes @vmcs_pa current (after
 * VMCLEAR, so its launch state is clear and VMLAUNCH is the entry). Called
 * with interrupts off. -EBUSY if VMX is already on (another hypervisor),
 * -EIO if VMXON or VMPTRLD fails or faults (firmware disabled VMX, say); on
 * any error CR4 is as it was.
 */
int rkvm_vmx_root_enter(u64 vmxon_pa, u64 vmcs_pa, unsigned long *saved_cr4)
{
	unsigned long cr4 = __read_cr4();

	if (cr4 & RKVM_CR4_VMXE)
		return -EBUSY;
	*saved_cr4 = cr4;
	asm volatile("mov %0, %%cr4" : : "r"(cr4 | RKVM_CR4_VMXE) : "memory");

	asm goto("1: vmxon %0\n\t"
		 "jbe %l[fail]\n\t"
		 _ASM_EXTABLE(1b, %l[fail])
		 : : "m"(vmxon_pa) : "cc", "memory" : fail);
	asm goto("1: vmclear %0\n\t"
		 "jbe %l[fail_off]\n\t"
		 "2: vmptrld %0\n\t"
		 "jbe %l[fail_off]\n\t"
		 _ASM_EXTABLE(1b, %l[fail_off])
		 _ASM_EXTABLE(2b, %l[fail_off])
		 : : "m"(vmcs_pa) : "cc", "memory" : fail_off);
	return 0;

fail_off:
	asm volatile("1: vmxoff\n\t"
		     "2:\n\t"
		     _ASM_EXTABLE(1b, 2b) : : : "cc", "memory");
fail:
	asm volatile("mov %0, %%cr4" : : "r"(cr4) : "memory");
	return -EIO;
}

/*
 * Leaves VMX root operation: VMCLEAR writes the VMCS back to memory (it may
 * be loaded on another CPU next time), VMXOFF, and CR4 as Linux left it.
 */
void rkvm_vmx_root_leave(u64 vmcs_pa, unsigned long saved_cr4)
{
	asm volatile("1: vmclear %0\n\t"
		     "2: vmxoff\n\t"
		     "3:\n\t"
		     _ASM_EXTABLE(1b, 2b)
		     _ASM_EXTABLE(2b, 3b)
		     : : "m"(vmcs_pa) : "cc", "memory");
	asm volatile("mov %0, %%cr4" : : "r"(saved_cr4) : "memory");
}

/* Reads what the VMCS host-state area needs, and what exits clobber. */
void rkvm_vmx_host_save(struct rkvm_vmx_host *h)
{
	struct desc_ptr gdt, idt;
	struct ldttss_desc *tss;

	h->cr0 = read_cr0();
	h->cr3 = __read_cr3();
	h->cr4 = __read_cr4() | RKVM_CR4_VMXE;
	savesegment(cs, h->cs);
	savesegment(ss, h->ss);
	savesegment(ds, h->ds);
	savesegment(es, h->es);
	savesegment(fs, h->fs);
	savesegment(gs, h->gs);
	asm volatile("str %0" : "=g"(h->tr));
	asm volatile("sldt %0" : "=g"(h->ldt));
	native_store_gdt(&gdt);
	store_idt(&idt);
	h->gdt_base = gdt.address;
	h->idt_base = idt.address;
	tss = (struct ldttss_desc *)(gdt.address + (h->tr & ~7));
	h->tr_base = get_desc_base((struct desc_struct *)tss) | ((u64)tss->base3 << 32);
	rdmsrq(MSR_FS_BASE, h->fs_base);
	rdmsrq(MSR_GS_BASE, h->gs_base);
	rdmsrq(MSR_KERNEL_GS_BASE, h->kernel_gs_base);
	rdmsrq(MSR_IA32_SYSENTER_CS, h->sysenter_cs);
	rdmsrq(MSR_IA32_SYSENTER_ESP, h->sysenter_esp);
	rdmsrq(MSR_IA32_SYSENTER_EIP, h->sysenter_eip);
	rdmsrq(MSR_EFER, h->efer);
	rdmsrq(MSR_IA32_CR_PAT, h->pat);
	/* Not every (emulated) CPU has DEBUGCTL: then there is nothing to restore. */
	if (rdmsrq_safe(MSR_IA32_DEBUGCTLMSR, &h->debugctl))
		h->debugctl = 0;
	get_debugreg(h->dr7, 7);
}

/* Reloads TR (limit included) through the writable GDT, as LTR sets busy. */
static void rkvm_reload_tr(void)
{
	struct desc_struct *d = get_current_gdt_rw();
	struct desc_ptr gdt = { .address = (unsigned long)d, .size = GDT_SIZE - 1 };
	tss_desc tss;

	memcpy(&tss, &d[GDT_ENTRY_TSS], sizeof(tss));
	tss.type = DESC_TSS;
	write_gdt_entry(d, GDT_ENTRY_TSS, &tss, DESC_TSS);
	native_load_gdt(&gdt);
	asm volatile("ltr %w0" : : "q"(GDT_ENTRY_TSS * 8));
	load_fixmap_gdt(raw_smp_processor_id());
	this_cpu_write(__tss_limit_invalid, false);
}

/*
 * Puts back what a VM exit left different from @h: the GDT limit (exits
 * set it to 0xffff), the TSS limit (0x67: the I/O bitmap), the LDT, the data
 * and FS/GS selectors when they were not null, DEBUGCTL and DR7. Interrupts
 * are still off.
 */
void rkvm_vmx_host_restore(const struct rkvm_vmx_host *h)
{
	if (h->ldt)
		asm volatile("lldt %0" : : "rm"(h->ldt));
	if (h->gs & 7) {
		load_gs_index(h->gs);
		wrmsrq(MSR_KERNEL_GS_BASE, h->kernel_gs_base);
	}
	if (h->fs & 7)
		loadsegment(fs, h->fs);
	if (h->ds | h->es) {
		loadsegment(ds, h->ds);
		loadsegment(es, h->es);
	}
	/*
	 * As invalidate_tss_limit(), whose TR reload needs load_direct_gdt(),
	 * exported to KVM only: a task using the I/O bitmap gets its TR
	 * reloaded now, others when they next need it.
	 */
	if (test_thread_flag(TIF_IO_BITMAP))
		rkvm_reload_tr();
	else
		this_cpu_write(__tss_limit_invalid, true);
	load_fixmap_gdt(raw_smp_processor_id());
	if (h->debugctl)
		wrmsrq(MSR_IA32_DEBUGCTLMSR, h->debugctl);
	if (h->dr7 != DR7_FIXED_1)
		set_debugreg(h->dr7, 7);
}

/* INVEPT/INVVPID of @type; -EIO if the CPU refuses or faults. */
int rkvm_vmx_invept(u64 type, u64 eptp)
{
	struct { u64 eptp, zero; } desc = { eptp, 0 };

	asm goto("1: invept %0, %1\n\t"
		 "jbe %l[fail]\n\t"
		 _ASM_EXTABLE(1b, %l[fail])
		 : : "m"(desc), "r"(type) : "cc", "memory" : fail);
	return 0;
fail:
	return -EIO;
}

int rkvm_vmx_invvpid(u64 type, u64 vpid)
{
	struct { u64 vpid, gva; } desc = { vpid, 0 };

	asm goto("1: invvpid %0, %1\n\t"
		 "jbe %l[fail]\n\t"
		 _ASM_EXTABLE(1b, %l[fail])
		 : : "m"(desc), "r"(type) : "cc", "memory" : fail);
	return 0;
fail:
	return -EIO;
}

/*
 * An NMI made the guest exit; NMIs stay blocked until the next IRET. Hand
 * it to the host's NMI handler through the IDT, whose IRET unblocks them
 * (kvm_intel calls the handler directly, through a path exported only to
 * it).
 */
void rkvm_vmx_nmi(void)
{
	asm volatile("int $2" : : : "memory");
}
