// SPDX-License-Identifier: GPL-2.0

//! Guest FPU/SSE/AVX state: kept in an XSAVE area per vCPU and loaded only
//! inside a kernel-FPU section around guest entry.

use super::{
    cpu::{self, NoIrq},
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

/// CPUID.1:ECX.OSXSAVE: the kernel enabled XSAVE.
const CPUID_OSXSAVE: u32 = 1 << 27;

/// One vCPU's FPU state, initialised to the architectural reset values.
pub(crate) struct GuestFpu {
    area: Pages,
    /// XCR0 when XSAVE is in use; `None` means FXSAVE.
    xcr0: Option<u64>,
}

impl GuestFpu {
    /// Allocates the save area for this CPU's XSAVE layout.
    pub(crate) fn new() -> Result<Self> {
        let xcr0 = (cpu::cpuid(1, 0).ecx & CPUID_OSXSAVE != 0).then(cpu::xgetbv0);
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

    /// Runs `f` with the guest's FPU state in the registers, then saves it
    /// back. Preemption is off inside (kernel-FPU section); `f` must not
    /// sleep. `f` may load the guest's XCR0 for the world switch itself.
    pub(crate) fn with_loaded<R>(&mut self, f: impl FnOnce(&Xcr0Switch) -> R) -> R {
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
        let r = f(&Xcr0Switch { host: self.xcr0 });
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

/// Loads a guest's XCR0 inside a kernel-FPU section ([`GuestFpu::with_loaded`]).
pub(crate) struct Xcr0Switch {
    host: Option<u64>,
}

/// The guest's XCR0 loaded; the host's is put back when this is dropped.
pub(crate) struct GuestXcr0<'a> {
    host: u64,
    _irq: core::marker::PhantomData<&'a NoIrq<'a>>,
}

impl Xcr0Switch {
    /// Loads `xcr0` until the returned guard is dropped, if it differs from
    /// the host's. `xcr0` must be a valid XCR0 within the host's (the
    /// caller checked it with KVM's rules against the host's XCR0); with
    /// interrupts off (`irq`), nothing on the host runs with it.
    pub(crate) fn load<'a>(&self, _irq: &'a NoIrq<'_>, xcr0: u64) -> Option<GuestXcr0<'a>> {
        let host = self.host?;
        if xcr0 == host || xcr0 & !host != 0 || xcr0 & 1 == 0 {
            return None;
        }
        // SAFETY: XSETBV(0) with x87 set and only bits the host enabled
        // (checked above) cannot fault; the FPU registers belong to the
        // guest inside this kernel-FPU section, and the guard puts the
        // host's value back before the section ends.
        unsafe { rkvm_xsetbv0(xcr0) };
        Some(GuestXcr0 {
            host,
            _irq: core::marker::PhantomData,
        })
    }
}

impl Drop for GuestXcr0<'_> {
    fn drop(&mut self) {
        // SAFETY: restores the host's own XCR0.
        unsafe { rkvm_xsetbv0(self.host) };
    }
}
