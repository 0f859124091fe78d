// SPDX-License-Identifier: GPL-2.0

//! The SVM world switch (`sys/svm_vmrun.S`), and the VMCB as a page the
//! hardware reads.

use super::{
    cpu::{self, NoIrq},
    mem::{Pages, ZeroPage},
};
use crate::{msr, vmcb::Vmcb, x86::EFER_SVME};
use kernel::prelude::*;

/// `MSR_VM_HSAVE_PA`: where VMRUN saves the host's state.
const MSR_VM_HSAVE_PA: u32 = 0xc001_0117;

/// Enables SVM on this CPU (EFER.SVME) with `hsave` as the area VMRUN saves
/// the host's state in. `EBUSY` if SVM is on already (another hypervisor).
///
/// The hardware writes to `hsave` only during VMRUN, which only rkvm's
/// vCPUs run, while the module and so the backend's per-CPU pages exist;
/// [`disable_on_this_cpu`] runs on every CPU before those pages go.
pub(crate) fn enable_on_this_cpu(hsave: &Pages) -> Result {
    let efer = cpu::rdmsr_safe(msr::EFER)?;
    if efer & EFER_SVME != 0 {
        pr_err!("rkvm: SVM already enabled on this CPU by someone else\n");
        return Err(EBUSY);
    }
    // SAFETY: EFER exists on every x86-64 CPU; setting SVME on a CPU with
    // SVM (the backend probed it) changes no state the kernel relies on.
    // VM_HSAVE_PA exists with SVM and takes a page-aligned physical
    // address, which `hsave` is.
    unsafe {
        cpu::wrmsr(msr::EFER, efer | EFER_SVME);
        cpu::wrmsr(MSR_VM_HSAVE_PA, hsave.phys());
    }
    Ok(())
}

/// Disables SVM on this CPU, leaving EFER.SVME and VM_HSAVE_PA as the
/// kernel found them (clear).
pub(crate) fn disable_on_this_cpu() {
    if let Ok(efer) = cpu::rdmsr_safe(msr::EFER) {
        // SAFETY: as in `enable_on_this_cpu`; clearing both is the state
        // before rkvm loaded (load refuses when SVME was set).
        unsafe {
            cpu::wrmsr(MSR_VM_HSAVE_PA, 0);
            cpu::wrmsr(msr::EFER, efer & !EFER_SVME);
        }
    }
}

// SAFETY: `Vmcb` is a repr(C) page of integers (its size is asserted in
// core/src/vmcb.rs); all-zero is a valid value.
unsafe impl ZeroPage for Vmcb {}

extern "C" {
    fn rkvm_svm_vmrun(guest_vmcb_pa: u64, gprs: *mut u64, host_vmcb_pa: u64);
}

/// Runs the guest described by the VMCB at `guest_vmcb_pa` until #VMEXIT.
///
/// `gprs` holds the guest GPRs by x86 register number (RAX and RSP are
/// ignored: they live in the VMCB). `host_vmcb_pa` is this CPU's page for
/// the host's VMSAVE state. Interrupts must be off (`_irq`).
///
/// # Safety
///
/// SVM must be enabled on this CPU; `guest_vmcb_pa` must be a VMCB page
/// owned by the caller and set up so that VMRUN's checks pass or fail
/// cleanly (intercepts, ASID, IOPM/MSRPM addresses of owned pages, nested
/// page table of owned pages mapping only memory the guest may touch);
/// `host_vmcb_pa` must be an owned page.
pub(crate) unsafe fn vmrun(
    guest_vmcb_pa: u64,
    gprs: &mut [u64; 16],
    host_vmcb_pa: u64,
    _irq: &NoIrq<'_>,
) {
    // SAFETY: the caller guarantees the VMCB and host page; `gprs` is a
    // valid array of 16 registers for the stub to load and store.
    unsafe { rkvm_svm_vmrun(guest_vmcb_pa, gprs.as_mut_ptr(), host_vmcb_pa) };
}
