/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Prototypes of the C helpers in sys/helpers.c; the Rust side declares the
 * same functions in the sys module file that wraps each.
 */
#ifndef RKVM_SYS_HELPERS_H
#define RKVM_SYS_HELPERS_H

#include <linux/types.h>

struct eventfd_ctx;
struct mm_struct;
struct page;

int rkvm_rdmsr_safe(u32 msr, u64 *val);
void rkvm_on_each_cpu(void (*fn)(void *info), void *info);
unsigned long rkvm_read_cr4(void);
bool rkvm_lfence_serializing(void);
void rkvm_local_irq_disable(void);
void rkvm_local_irq_enable(void);
void rkvm_preempt_disable(void);
void rkvm_preempt_enable(void);
int rkvm_smp_processor_id(void);
unsigned int rkvm_nr_cpu_ids(void);
void rkvm_cond_resched(void);
bool rkvm_exit_requested(void);
void rkvm_wrmsr(u32 msr, u64 val);
struct page *rkvm_alloc_pages(unsigned int order);
void rkvm_account_pgtable(struct page *page, int nr);
void rkvm_free_pages(struct page *page, unsigned int order);
u64 rkvm_page_to_phys(struct page *page);
void *rkvm_page_address(struct page *page);
bool rkvm_capable_ipc_lock(void);
int rkvm_charge_pinned(struct mm_struct *mm, unsigned long n, bool limited);
void rkvm_uncharge_pinned(struct mm_struct *mm, unsigned long n);
int rkvm_pin_user_page(struct mm_struct *mm, unsigned long addr, bool write,
		       struct page **page);
bool rkvm_mm_maps_2m(struct mm_struct *mm, unsigned long addr, u64 phys);
void rkvm_unpin_user_page(struct page *page, bool dirty);
int rkvm_cpuhp_setup(int (*online)(unsigned int), int (*offline)(unsigned int));
void rkvm_cpuhp_remove(int state);
void rkvm_fpu_begin(void);
void rkvm_fpu_end(void);
void rkvm_xsave(void *area, u64 mask);
void rkvm_xrstor(void *area, u64 mask);
void rkvm_fxsave(void *area);
void rkvm_fxrstor(void *area);
u64 rkvm_xgetbv0(void);
void rkvm_xsetbv0(u64 xcr0);
u32 rkvm_mxcsr_mask(void);
unsigned long rkvm_task_size(void);
unsigned int rkvm_tsc_khz(void);
unsigned int rkvm_num_online_cpus(void);
void rkvm_kick_cpu(int cpu);
void rkvm_kick_cpu_async(int cpu);
u64 rkvm_now_ns(void);
u64 rkvm_kvmclock_base_ns(void);
u64 rkvm_realtime_ns(void);
unsigned long rkvm_read_dr7(void);
void rkvm_write_dr7(unsigned long v);
void rkvm_swap_dr0123(const unsigned long *load, unsigned long *save);
int rkvm_reboot_register(void (*cb)(void));
void rkvm_reboot_unregister(void);
u64 rkvm_page_huge_2m(struct page *page);
int rkvm_srcu_read_lock(void);
void rkvm_srcu_read_unlock(int idx);
void rkvm_srcu_synchronize(void);

int rkvm_eventfd_ctx_fdget(int fd, struct eventfd_ctx **ctx);
void rkvm_eventfd_signal(struct eventfd_ctx *ctx);
void rkvm_eventfd_ctx_put(struct eventfd_ctx *ctx);

#endif
