// SPDX-License-Identifier: GPL-2.0
/*
 * C helpers for rkvm's FFI quarantine (sys.rs): kernel functions that are
 * inline or macros in C, and instructions that may fault and so need an
 * exception-table entry, which Rust's asm! cannot emit.
 */

#include "helpers.h"

#include <linux/capability.h>
#include <linux/cpuhotplug.h>
#include <linux/err.h>
#include <linux/eventfd.h>
#include <linux/export.h>
#include <linux/gfp.h>
#include <linux/mm.h>
#include <linux/pgtable.h>
#include <linux/reboot.h>
#include <linux/sched.h>
#include <linux/sched/signal.h>
#include <linux/smp.h>
#include <linux/srcu.h>
#include <linux/timekeeping.h>
#include <trace/events/ipi.h>
#include <linux/vmstat.h>
#include <asm/cpufeature.h>
#include <asm/debugreg.h>
#include <asm/fpu/api.h>
#include <asm/msr.h>
#include <asm/special_insns.h>
#include <asm/tsc.h>

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

/* Whether the kernel made LFENCE dispatch-serialising (AMD's DE_CFG bit). */
bool rkvm_lfence_serializing(void)
{
	return cpu_feature_enabled(X86_FEATURE_LFENCE_RDTSC);
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

/*
 * The SRCU domain of every VM's slot table: one for the module (KVM has one
 * per VM), so that creating a VM sets none up. Readers of one VM's table
 * delay only writers' grace periods, never each other.
 */
DEFINE_STATIC_SRCU(rkvm_srcu);

int rkvm_srcu_read_lock(void)
{
	return srcu_read_lock(&rkvm_srcu);
}

void rkvm_srcu_read_unlock(int idx)
{
	srcu_read_unlock(&rkvm_srcu, idx);
}

void rkvm_srcu_synchronize(void)
{
	synchronize_srcu_expedited(&rkvm_srcu);
}

/*
 * A reference to the eventfd behind @fd (EBADF for no file, EINVAL for a
 * file that is not an eventfd, as eventfd_ctx_fdget says); the ERR_PTR
 * becomes an errno here so that Rust sees an int.
 */
int rkvm_eventfd_ctx_fdget(int fd, struct eventfd_ctx **ctx)
{
	struct eventfd_ctx *c = eventfd_ctx_fdget(fd);

	if (IS_ERR(c))
		return PTR_ERR(c);
	*ctx = c;
	return 0;
}

/* eventfd_signal is inline. */
void rkvm_eventfd_signal(struct eventfd_ctx *ctx)
{
	eventfd_signal(ctx);
}

void rkvm_eventfd_ctx_put(struct eventfd_ctx *ctx)
{
	eventfd_ctx_put(ctx);
}

/* Zeroed, physically contiguous pages (2^order of them). */
struct page *rkvm_alloc_pages(unsigned int order)
{
	return alloc_pages(GFP_KERNEL_ACCOUNT | __GFP_ZERO, order);
}

/*
 * Counts @page as (@nr = 1) or no longer as (-1) a secondary page table, as
 * KVM counts its nested page tables (memory.stat sec_pagetables).
 */
void rkvm_account_pgtable(struct page *page, int nr)
{
	mod_lruvec_page_state(page, NR_SECONDARY_PAGETABLE, nr);
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

/* Whether the calling task may pin memory past RLIMIT_MEMLOCK. */
bool rkvm_capable_ipc_lock(void)
{
	return capable(CAP_IPC_LOCK);
}

/*
 * Charges @n pages to @mm's pinned_vm, as RDMA and io_uring charge their
 * pins: if @limited, against the caller's RLIMIT_MEMLOCK (-ENOMEM past it).
 */
int rkvm_charge_pinned(struct mm_struct *mm, unsigned long n, bool limited)
{
	unsigned long limit = rlimit(RLIMIT_MEMLOCK) >> PAGE_SHIFT;
	u64 pinned = atomic64_add_return(n, &mm->pinned_vm);

	if (limited && pinned > limit) {
		atomic64_sub(n, &mm->pinned_vm);
		return -ENOMEM;
	}
	return 0;
}

void rkvm_uncharge_pinned(struct mm_struct *mm, unsigned long n)
{
	atomic64_sub(n, &mm->pinned_vm);
}

/*
 * Pins one page of @mm, the current process's memory, for a guest mapping.
 * FOLL_LONGTERM: the pin lasts until the slot or VM goes, and makes fork()
 * copy the page for the child instead of sharing it.
 */
int rkvm_pin_user_page(struct mm_struct *mm, unsigned long addr, bool write,
		       struct page **page)
{
	unsigned int flags = FOLL_LONGTERM | (write ? FOLL_WRITE : 0);
	int n;

	if (current->mm != mm)
		return -EFAULT;
	n = pin_user_pages_fast(addr, 1, flags, page);
	if (n == 1)
		return 0;
	return n < 0 ? n : -EFAULT;
}

void rkvm_unpin_user_page(struct page *page, bool dirty)
{
	unpin_user_pages_dirty_lock(&page, 1, dirty);
}

/*
 * Whether @mm maps the 2 MiB of virtual memory around @addr with one huge
 * entry (a PMD leaf, or a PUD leaf covering it) onto the 2 MiB of physical
 * memory at @phys: a guest may get a 2 MiB mapping only of what its VMM
 * maps as one (KVM's host_pfn_mapping_level). Walked without locks, with
 * interrupts off so that the page tables cannot be freed meanwhile; each
 * entry is read once.
 */
bool rkvm_mm_maps_2m(struct mm_struct *mm, unsigned long addr, u64 phys)
{
	unsigned long flags;
	unsigned long pfn = 0;
	bool huge = false;
	pgd_t pgd;
	p4d_t p4d;
	pud_t pud;
	pmd_t pmd;

	local_irq_save(flags);
	pgd = READ_ONCE(*pgd_offset(mm, addr));
	if (pgd_none(pgd))
		goto out;
	p4d = READ_ONCE(*p4d_offset(&pgd, addr));
	if (p4d_none(p4d) || !p4d_present(p4d))
		goto out;
	pud = READ_ONCE(*pud_offset(&p4d, addr));
	if (pud_none(pud) || !pud_present(pud))
		goto out;
	if (pud_leaf(pud)) {
		pfn = pud_pfn(pud) + ((addr & ~PUD_MASK) >> PAGE_SHIFT);
		huge = true;
		goto out;
	}
	pmd = READ_ONCE(*pmd_offset(&pud, addr));
	if (pmd_none(pmd) || !pmd_present(pmd))
		goto out;
	if (pmd_leaf(pmd)) {
		pfn = pmd_pfn(pmd);
		huge = true;
	}
out:
	local_irq_restore(flags);
	return huge && (pfn & ~(unsigned long)(PTRS_PER_PMD - 1)) == PHYS_PFN(phys);
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

/* Loads XCR0 (the caller checked the value is one the CPU accepts). */
void rkvm_xsetbv0(u64 xcr0)
{
	asm volatile("xsetbv" : : "a"((u32)xcr0), "d"((u32)(xcr0 >> 32)), "c"(0) : "memory");
}

/*
 * MXCSR_MASK as this CPU's FXSAVE reports it (what KVM's FPU code calls
 * the MXCSR feature mask before its 0xffbf default): one FXSAVE of the
 * task's own state inside a kernel-FPU section.
 */
u32 rkvm_mxcsr_mask(void)
{
	u8 buf[512] __aligned(16);
	u32 mask;

	kernel_fpu_begin();
	asm volatile("fxsave64 %0" : "=m"(buf) : : "memory");
	kernel_fpu_end();
	memcpy(&mask, buf + 28, sizeof(mask));
	return mask;
}

unsigned long rkvm_task_size(void)
{
	return TASK_SIZE_MAX;
}

unsigned int rkvm_tsc_khz(void)
{
	return tsc_khz;
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

/* Interrupts @cpu without waiting; safe in any context (KVM's kick). */
void rkvm_kick_cpu_async(int cpu)
{
	smp_send_reschedule(cpu);
}

/* CLOCK_MONOTONIC in nanoseconds, the clock hrtimers run on. */
u64 rkvm_now_ns(void)
{
	return ktime_get_ns();
}

/*
 * KVM's kvmclock base (get_kvmclock_base_ns): the raw monotonic clock
 * counted from boot (suspend time included), so that NTP slewing does not
 * change its rate.
 */
u64 rkvm_kvmclock_base_ns(void)
{
	return ktime_to_ns(ktime_add(ktime_get_raw(), ktime_mono_to_any(0, TK_OFFS_BOOT)));
}

/* CLOCK_REALTIME in nanoseconds. */
u64 rkvm_realtime_ns(void)
{
	return ktime_get_real_ns();
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

/* Saves DR0-DR3 in save[] and loads load[] (interrupts are off). */
void rkvm_swap_dr0123(const unsigned long *load, unsigned long *save)
{
	get_debugreg(save[0], 0);
	get_debugreg(save[1], 1);
	get_debugreg(save[2], 2);
	get_debugreg(save[3], 3);
	set_debugreg(load[0], 0);
	set_debugreg(load[1], 1);
	set_debugreg(load[2], 2);
	set_debugreg(load[3], 3);
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
