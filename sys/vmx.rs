// SPDX-License-Identifier: GPL-2.0

//! VMX root operation behind a safe interface: the window around one VM
//! entry (`sys/vmx_helpers.c`, `sys/vmx_entry.S`), VMREAD/VMWRITE, INVEPT,
//! INVVPID, and the host state that VM exits clobber.
//!
//! rkvm is in VMX operation only inside [`Root`], which needs interrupts
//! off: see `vmx_helpers.c` and `Documentation/design.rst` for why.

use super::cpu::NoIrq;
use crate::vmcs::{Field, Width};
use core::marker::PhantomData;
use kernel::prelude::*;

/// The host state a VM exit lands in (`struct rkvm_vmx_host`).
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct HostState {
    pub(crate) cr0: u64,
    pub(crate) cr3: u64,
    pub(crate) cr4: u64,
    pub(crate) fs_base: u64,
    pub(crate) gs_base: u64,
    pub(crate) kernel_gs_base: u64,
    pub(crate) tr_base: u64,
    pub(crate) gdt_base: u64,
    pub(crate) idt_base: u64,
    pub(crate) sysenter_cs: u64,
    pub(crate) sysenter_esp: u64,
    pub(crate) sysenter_eip: u64,
    pub(crate) efer: u64,
    pub(crate) pat: u64,
    pub(crate) debugctl: u64,
    pub(crate) dr7: u64,
    pub(crate) cs: u16,
    pub(crate) ss: u16,
    pub(crate) ds: u16,
    pub(crate) es: u16,
    pub(crate) fs: u16,
    pub(crate) gs: u16,
    pub(crate) tr: u16,
    pub(crate) ldt: u16,
}

extern "C" {
    fn rkvm_vmx_root_enter(vmxon_pa: u64, vmcs_pa: u64, saved_cr4: *mut usize) -> i32;
    fn rkvm_vmx_root_leave(vmcs_pa: u64, saved_cr4: usize);
    fn rkvm_vmx_host_save(h: *mut HostState);
    fn rkvm_vmx_host_restore(h: *const HostState);
    fn rkvm_vmx_invept(ty: u64, eptp: u64) -> i32;
    fn rkvm_vmx_invvpid(ty: u64, vpid: u64) -> i32;
    fn rkvm_vmx_nmi();
    fn rkvm_vmx_launch(gprs: *mut u64) -> i32;
}

impl HostState {
    /// Reads the state of this CPU and task that the VMCS host area needs.
    pub(crate) fn save(_irq: &NoIrq<'_>) -> Self {
        let mut h = Self::default();
        // SAFETY: `h` is a valid `rkvm_vmx_host`; the helper only reads
        // registers and MSRs every x86-64 CPU has.
        unsafe { rkvm_vmx_host_save(&mut h) };
        h
    }

    /// Puts back what a VM exit left different from `self` (GDT and TSS
    /// limits, LDT, non-null data selectors, DEBUGCTL, DR7).
    pub(crate) fn restore(&self, _irq: &NoIrq<'_>) {
        // SAFETY: `self` was read by `save` on this CPU in this
        // interrupts-off section, so it is the state to go back to.
        unsafe { rkvm_vmx_host_restore(self) };
    }
}

/// This CPU in VMX root operation with one VMCS current, interrupts off.
/// Dropping it VMCLEARs the VMCS, leaves VMX operation and restores CR4.
///
/// # Invariants
///
/// VMX operation is on, `vmcs_pa` is the current VMCS, and nothing else on
/// this CPU runs until drop (interrupts are off for `'a`).
pub(crate) struct Root<'a> {
    vmcs_pa: u64,
    saved_cr4: usize,
    _irq: PhantomData<&'a NoIrq<'a>>,
}

impl<'a> Root<'a> {
    /// Enters VMX operation with `vmxon_pa` and makes `vmcs_pa` current.
    /// `EBUSY` if VMX is already on (another hypervisor), `EIO` if the CPU
    /// refuses.
    ///
    /// # Safety
    ///
    /// `vmxon_pa` must be this CPU's VMXON region and `vmcs_pa` a VMCS page
    /// owned by the caller, both page-aligned, zeroed but for the revision
    /// identifier, used by no other CPU at the same time.
    pub(crate) unsafe fn enter(vmxon_pa: u64, vmcs_pa: u64, _irq: &'a NoIrq<'_>) -> Result<Self> {
        let mut saved_cr4 = 0;
        // SAFETY: interrupts are off (`_irq`); the caller vouches for the
        // regions. The helper leaves CR4 as it was on any error.
        let r = unsafe { rkvm_vmx_root_enter(vmxon_pa, vmcs_pa, &mut saved_cr4) };
        if r < 0 {
            return Err(Error::from_errno(r));
        }
        Ok(Self {
            vmcs_pa,
            saved_cr4,
            _irq: PhantomData,
        })
    }

    /// VMREAD of `f` from the current VMCS.
    pub(crate) fn read<W: Width>(&self, f: Field<W>) -> W::Value {
        let v: u64;
        // SAFETY: in VMX root operation with a current VMCS (invariant),
        // VMREAD cannot fault; an unsupported field fails with flags set
        // and leaves `v` as read (0 for rkvm's purposes).
        unsafe {
            core::arch::asm!(
                "xor {v:e}, {v:e}",
                "vmread {v}, {f}",
                f = in(reg) u64::from(f.encoding()),
                v = out(reg) v,
                options(nostack),
            )
        };
        W::from_raw(v)
    }

    /// VMWRITE of `v` to `f` in the current VMCS.
    pub(crate) fn write<W: Width>(&self, f: Field<W>, v: W::Value) {
        // SAFETY: as in `read`; the VMCS is rkvm's own, and VM entry
        // checks every field rkvm writes.
        unsafe {
            core::arch::asm!(
                "vmwrite {f}, {v}",
                f = in(reg) u64::from(f.encoding()),
                v = in(reg) W::to_raw(v),
                options(nostack),
            )
        };
    }

    /// The guest's CR2, which VMX does not switch: the caller loads it
    /// before entry and reads it back after the exit, interrupts off.
    pub(crate) fn read_cr2(&self) -> u64 {
        let v: u64;
        // SAFETY: reading CR2 has no side effects.
        unsafe { core::arch::asm!("mov {}, cr2", out(reg) v, options(nostack, nomem)) };
        v
    }

    /// Loads CR2 (see `read_cr2`).
    pub(crate) fn write_cr2(&self, v: u64) {
        // SAFETY: interrupts are off, so no host page fault handler reads
        // CR2 before the guest's page faults overwrite it or the caller
        // reads it back; Linux's NMI entry saves and restores CR2.
        unsafe { core::arch::asm!("mov cr2, {}", in(reg) v, options(nostack, nomem)) };
    }

    /// Runs the guest until the next VM exit. `Ok` after an exit (the
    /// exit reason says why, including failed entries), `Err` if
    /// VMLAUNCH itself failed (see the VM-instruction error field).
    ///
    /// # Safety
    ///
    /// The current VMCS must be complete: host state for this CPU and task,
    /// pin-based controls that make interrupts and NMIs exit, an EPT of
    /// rkvm-owned tables mapping only memory the guest may use, an MSR
    /// bitmap and MSR lists in owned pages.
    pub(crate) unsafe fn launch(&self, gprs: &mut [u64; 16]) -> Result {
        // SAFETY: the caller guarantees the VMCS; `gprs` is 16 registers.
        match unsafe { rkvm_vmx_launch(gprs.as_mut_ptr()) } {
            0 => Ok(()),
            _ => Err(EIO),
        }
    }

    /// INVEPT of `ty` (1 single-context, 2 all-context) for `eptp`.
    pub(crate) fn invept(&self, ty: u64, eptp: u64) -> Result {
        // SAFETY: in VMX root operation; the helper turns a refusal or
        // fault into an error.
        match unsafe { rkvm_vmx_invept(ty, eptp) } {
            0 => Ok(()),
            _ => Err(EIO),
        }
    }

    /// INVVPID of `ty` (1 single-context, 2 all-context) for `vpid`.
    pub(crate) fn invvpid(&self, ty: u64, vpid: u16) -> Result {
        // SAFETY: as `invept`.
        match unsafe { rkvm_vmx_invvpid(ty, u64::from(vpid)) } {
            0 => Ok(()),
            _ => Err(EIO),
        }
    }
}

impl Drop for Root<'_> {
    fn drop(&mut self) {
        // SAFETY: `vmcs_pa` is current and CR4 was saved by `enter`
        // (invariant); interrupts are still off.
        unsafe { rkvm_vmx_root_leave(self.vmcs_pa, self.saved_cr4) };
    }
}

/// Hands an NMI that exited the guest to the host's NMI handler.
pub(crate) fn deliver_nmi(_irq: &NoIrq<'_>) {
    // SAFETY: called right after an NMI exit, interrupts off; the handler
    // runs as for a real NMI and its IRET unblocks NMIs.
    unsafe { rkvm_vmx_nmi() };
}
