// SPDX-License-Identifier: GPL-2.0

//! The SVM world switch (`sys/svm_vmrun.S`), and the VMCB as a page the
//! hardware reads.

use super::{cpu::NoIrq, mem::ZeroPage};
use crate::vmcb::Vmcb;

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
