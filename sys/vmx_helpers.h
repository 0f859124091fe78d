/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Prototypes and shared structs of the VMX C helpers (sys/vmx_helpers.c);
 * sys/vmx.rs declares the same in Rust.
 */
#ifndef RKVM_SYS_VMX_HELPERS_H
#define RKVM_SYS_VMX_HELPERS_H

#include <linux/types.h>

/* The host state a VM exit must land in, read just before each entry. */
struct rkvm_vmx_host {
	u64 cr0, cr3, cr4;
	u64 fs_base, gs_base, kernel_gs_base;
	u64 tr_base, gdt_base, idt_base;
	u64 sysenter_cs, sysenter_esp, sysenter_eip;
	u64 efer, pat, debugctl, dr7;
	u16 cs, ss, ds, es, fs, gs, tr, ldt;
};

int rkvm_vmx_root_enter(u64 vmxon_pa, u64 vmcs_pa, unsigned long *saved_cr4);
void rkvm_vmx_root_leave(u64 vmcs_pa, unsigned long saved_cr4);
void rkvm_vmx_host_save(struct rkvm_vmx_host *h);
void rkvm_vmx_host_restore(const struct rkvm_vmx_host *h);
int rkvm_vmx_invept(u64 type, u64 eptp);
int rkvm_vmx_invvpid(u64 type, u64 vpid);
void rkvm_vmx_nmi(void);
int rkvm_vmx_launch(u64 *gprs);

#endif
