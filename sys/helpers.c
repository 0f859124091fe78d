// SPDX-License-Identifier: GPL-2.0
/*
 * C helpers for rkvm's FFI quarantine (sys.rs): kernel functions that are
 * inline or macros in C, and instructions that may fault and so need an
 * exception-table entry, which Rust's asm! cannot emit.
 */

#include "helpers.h"

#include <linux/cpuhotplug.h>
#include <linux/export.h>
#include <linux/gfp.h>
#include <linux/mm.h>
#include <linux/reboot.h>
#include <linux/sched.h>
#include <linux/smp.h>
#include <asm/debugreg.h>
#include <asm/fpu/api.h>
#include <asm/msr.h>
#include <asm/special_insns.h>

/* RDMSR that returns -EIO instead of oopsing on a #GP. */
int rkvm_rdmsr_safe(u32 msr, u64 *val)
{
	return rdmsrq_safe(msr, val);
}

/* Runs @fn(@info) on every online CPU, this one included, and waits. */
void rkvm_on_each_cpu(void (*fn)(void *info), void *info)
{
	on_each_cpu(fn, info, 1);
}

/* The real CR4 of this CPU, not the kernel's per-CPU shadow of it. */
unsigned long rkvm_read_cr4(void)
{
	return __read_cr4();
}

/* Interrupts, preemption and the current CPU: inline or macros in C. */
void rkvm_local_irq_disable(void)
{
	local_irq_disable();
}

void rkvm_local_irq_enable(void)
{
	local_irq_enable();
}

void rkvm_preempt_disable(void)
{
	preempt_disable();
}

void rkvm_preempt_enable(void)
{
	preempt_enable();
}

int rkvm_smp_processor_id(void)
{
	return smp_processor_id();
}

unsigned int rkvm_nr_cpu_ids(void)
{
	return nr_cpu_ids;
}

void rkvm_cond_resched(void)
{
	cond_resched();
}

/*
 * Whether the vCPU thread must leave the guest loop (a signal or a
 * reschedule is pending). Checked with interrupts off just before entry, as
 * KVM does: whatever sets either later also sends an interrupt, which then
 * exits the guest at once.
 */
bool rkvm_exit_requested(void)
{
	return signal_pending(current) || need_resched();
}

void rkvm_wrmsr(u32 msr, u64 val)
{
	wrmsrq(msr, val);
}

/* Zeroed, physically contiguous pages (2^order of them). */
struct page *rkvm_alloc_pages(unsigned int order)
{
	return alloc_pages(GFP_KERNEL_ACCOUNT | __GFP_ZERO, order);
}

void rkvm_free_pages(struct page *page, unsigned int order)
{
	__free_pages(page, order);
}

u64 rkvm_page_to_phys(struct page *page)
{
	return page_to_phys(page);
}

void *rkvm_page_address(struct page *page)
{
	return page_address(page);
}

/*
 * Pins one page of the current process's memory for a guest mapping.
 * FOLL_LONGTERM: the pin lasts until the slot or VM goes, and makes fork()
 * copy the page for the child instead of sharing it.
 */
int rkvm_pin_user_page(unsigned long addr, bool write, struct page **page)
{
	unsigned int flags = FOLL_LONGTERM | (write ? FOLL_WRITE : 0);
	int n = pin_user_pages_fast(addr, 1, flags, page);

	if (n == 1)
		return 0;
	return n < 0 ? n : -EFAULT;
}

void rkvm_unpin_user_page(struct page *page, bool dirty)
{
	unpin_user_pages_dirty_lock(&page, 1, dirty);
}

/* CPU hotplug: callbacks run on the CPU coming up or going down. */
int rkvm_cpuhp_setup(int (*online)(unsigned int), int (*offline)(unsigned int))
{
	return cpuhp_setup_state(CPUHP_AP_ONLINE_DYN, "rkvm:online", online, offline);
}

void rkvm_cpuhp_remove(int state)
{
	cpuhp_remove_state(state);
}

/*
 * Guest FPU state: the kernel-FPU section saves the task's state, so the
 * guest may clobber every register; the guest's own state lives in an
 * XSAVE (or FXSAVE) area that rkvm keeps per vCPU.
 */
void rkvm_fpu_begin(void)
{
	kernel_fpu_begin();
}

void rkvm_fpu_end(void)
{
	kernel_fpu_end();
}

void rkvm_xsave(void *area, u64 mask)
{
	asm volatile("xsave64 %0" : "+m"(*(u8 *)area) : "a"((u32)mask), "d"((u32)(mask >> 32)) : "memory");
}

void rkvm_xrstor(void *area, u64 mask)
{
	asm volatile("xrstor64 %0" : : "m"(*(u8 *)area), "a"((u32)mask), "d"((u32)(mask >> 32)) : "memory");
}

void rkvm_fxsave(void *area)
{
	asm volatile("fxsave64 %0" : "+m"(*(u8 *)area) : : "memory");
}

void rkvm_fxrstor(void *area)
{
	asm volatile("fxrstor64 %0" : : "m"(*(u8 *)area) : "memory");
}

u64 rkvm_xgetbv0(void)
{
	u32 lo, hi;

	asm volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
	return ((u64)hi << 32) | lo;
}

unsigned long rkvm_task_size(void)
{
	return TASK_SIZE_MAX;
}

unsigned int rkvm_num_online_cpus(void)
{
	return num_online_cpus();
}

static void rkvm_nop(void *info)
{
}

/*
 * Makes @cpu take an interrupt and waits for it: a vCPU in guest mode there
 * exits, so it sees changes to its nested page table on its next entry.
 */
void rkvm_kick_cpu(int cpu)
{
	smp_call_function_single(cpu, rkvm_nop, NULL, 1);
}

unsigned long rkvm_read_dr7(void)
{
	unsigned long v;

	get_debugreg(v, 7);
	return v;
}

void rkvm_write_dr7(unsigned long v)
{
	set_debugreg(v, 7);
}

static void (*rkvm_reboot_cb)(void);

static int rkvm_reboot_notify(struct notifier_block *nb, unsigned long code, void *unused)
{
	if (rkvm_reboot_cb)
		rkvm_reboot_cb();
	return NOTIFY_OK;
}

static struct notifier_block rkvm_reboot_nb = {
	.notifier_call = rkvm_reboot_notify,
};

/*
 * Runs @cb when the kernel reboots, halts or powers off, so virtualization
 * is switched off before firmware or a kexec'd kernel takes the CPUs.
 */
int rkvm_reboot_register(void (*cb)(void))
{
	rkvm_reboot_cb = cb;
	return register_reboot_notifier(&rkvm_reboot_nb);
}

void rkvm_reboot_unregister(void)
{
	unregister_reboot_notifier(&rkvm_reboot_nb);
	rkvm_reboot_cb = NULL;
}

/*
 * If @page lies in a folio (THP or hugetlb) that covers the whole 2 MiB
 * aligned physical range around it, returns that range's start; else 0.
 * The caller's pin on @page keeps the folio, and so the range, allocated.
 */
u64 rkvm_page_huge_2m(struct page *page)
{
	struct folio *folio = page_folio(page);
	unsigned long pfn = page_to_pfn(page) & ~(unsigned long)(PTRS_PER_PMD - 1);

	if (folio_order(folio) < PMD_ORDER)
		return 0;
	if (pfn < folio_pfn(folio) || pfn + PTRS_PER_PMD > folio_pfn(folio) + folio_nr_pages(folio))
		return 0;
	return PFN_PHYS(pfn);
}
