// SPDX-License-Identifier: GPL-2.0
/*
 * C helpers for rkvm's FFI quarantine (sys.rs): kernel functions that are
 * inline or macros in C, and instructions that may fault and so need an
 * exception-table entry, which Rust's asm! cannot emit.
 */

#include "helpers.h"

#include <linux/smp.h>
#include <linux/export.h>
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
