// SPDX-License-Identifier: GPL-2.0

//! Guest FPU/SSE/AVX state: kept in an XSAVE area per vCPU and loaded only
//! inside a kernel-FPU section around guest entry.

use super::{
    cpu::{self, NoIrq, NoPreempt},
    mem::Pages,
};
use kernel::prelude::*;

extern "C" {
    fn rkvm_fpu_begin();
    fn rkvm_fpu_end();
    fn rkvm_xsave(area: *mut u8, mask: u64);
    fn rkvm_xrstor(area: *const u8, mask: u64);
    fn rkvm_fxsave(area: *mut u8);
    fn rkvm_fxrstor(area: *const u8);
    fn rkvm_xsetbv0(xcr0: u64);
}

/// One vCPU's FPU state, initialised to the architectural reset values.
pub(crate) struct GuestFpu {
    area: Pages,
    /// XCR0 when XSAVE is in use; `None` means FXSAVE.
    xcr0: Option<u64>,
}

impl GuestFpu {
    /// Allocates the save area for this CPU's XSAVE layout.
    pub(crate) fn new() -> Result<Self> {
        let xcr0 = cpu::host_xcr0();
        let size = match xcr0 {
            Some(_) => cpu::cpuid(0xd, 0).ebx as usize,
            None => 512,
        };
        let order = size
            .div_ceil(super::mem::PAGE_SIZE)
            .next_power_of_two()
            .trailing_zeros();
        let mut area = Pages::new(order)?;
        let b = area.as_bytes_mut();
        // FCW and MXCSR reset values (the XSAVE header is zero: XRSTOR then
        // puts every component in its init state anyway).
        b[0..2].copy_from_slice(&0x037fu16.to_le_bytes());
        b[24..28].copy_from_slice(&0x1f80u32.to_le_bytes());
        Ok(Self { area, xcr0 })
    }

    /// The host's XCR0, if the host uses XSAVE.
    pub(crate) fn host_xcr0(&self) -> Option<u64> {
        self.xcr0
    }

    /// Runs `f` with the guest's FPU state in the registers and interrupts
    /// off, then saves the state back: the window of a world switch.
    /// `xcr0`, if given, is the guest's XCR0, loaded around `f` when it
    /// differs from the host's; it must be valid and within the host's (the
    /// caller checked it with KVM's rules against [`GuestFpu::host_xcr0`]).
    /// `f` must not sleep.
    pub(crate) fn with_loaded<R>(
        &mut self,
        np: &NoPreempt,
        xcr0: Option<u64>,
        f: impl FnOnce(&NoIrq<'_>) -> R,
    ) -> R {
        let p = self.area.as_ptr();
        // SAFETY: the kernel-FPU section protects the task's FPU state;
        // `p` is a 4 KiB-aligned area of at least the XSAVE size, and the
        // mask is the host's XCR0, so XRSTOR/XSAVE touch only valid state.
        unsafe {
            rkvm_fpu_begin();
            match self.xcr0 {
                Some(m) => rkvm_xrstor(p, m),
                None => rkvm_fxrstor(p),
            }
        }
        let irq = NoIrq::new(np);
        let switch = match (self.xcr0, xcr0) {
            (Some(host), Some(guest)) if guest != host && guest & !host == 0 && guest & 1 != 0 => {
                Some(host)
            }
            _ => None,
        };
        if let (Some(_), Some(guest)) = (switch, xcr0) {
            // SAFETY: XSETBV(0) with x87 set and only bits the host enabled
            // (checked above) cannot fault; the FPU registers are the
            // guest's inside this kernel-FPU section, and interrupts are
            // off, so nothing on the host runs with this XCR0.
            unsafe { rkvm_xsetbv0(guest) };
        }
        let r = f(&irq);
        if let Some(host) = switch {
            // SAFETY: restores the host's own XCR0.
            unsafe { rkvm_xsetbv0(host) };
        }
        drop(irq);
        // SAFETY: as above; still inside the kernel-FPU section.
        unsafe {
            match self.xcr0 {
                Some(m) => rkvm_xsave(p, m),
                None => rkvm_fxsave(p),
            }
            rkvm_fpu_end();
        }
        r
    }
}
