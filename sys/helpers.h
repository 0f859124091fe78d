/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Prototypes of the C helpers in sys/helpers.c; the Rust side declares the
 * same functions in the sys module file that wraps each.
 */
#ifndef RKVM_SYS_HELPERS_H
#define RKVM_SYS_HELPERS_H

#include <linux/types.h>

struct page;

int rkvm_rdmsr_safe(u32 msr, u64 *val);
void rkvm_on_each_cpu(void (*fn)(void *info), void *info);
unsigned long rkvm_read_cr4(void);

#endif
