// SPDX-License-Identifier: GPL-2.0

//! Guest FPU/SSE/AVX state: kept in an XSAVE area per vCPU and loaded only
//! inside a kernel-FPU section around guest entry; shown to and loaded
//! from userspace in KVM's formats (`KVM_GET/SET_XSAVE`, `KVM_GET/SET_FPU`)
//! by `core/src/xsave.rs`.

use super::{
    cpu::{self, NoIrq, NoPreempt},
    mem::Pages,
};
use crate::{
    cpuid,
    uapi::KvmFpu,
    xsave::{self, Host, Invalid},
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
    fn rkvm_mxcsr_mask() -> u32;
}

/// Host XSAVE components rkvm never switches: PKRU (KVM swaps it apart,
/// and the kernel does not restore a task's PKRU from its XSAVE image on
/// return to userspace, so an XRSTOR of the guest's would leak into the
/// VMM) and AMX tiles (XFD-armed: XRSTOR would fault). Guests get
/// neither.
const NOT_SWITCHED: u64 = 1 << 9 | 1 << 17 | 1 << 18;

/// What KVM's FPU code knows about this host's XSAVE, for the UAPI
/// conversions.
fn host_info(xcr0: Option<u64>) -> Host {
    let mut layout = [(0, 0); 64];
    let xcr0 = xcr0.unwrap_or(0);
    for (i, l) in layout.iter_mut().enumerate().skip(2) {
        if xcr0 & (1 << i) != 0 {
            let r = cpu::cpuid(0xd, i as u32);
            *l = (r.ebx, r.eax);
        }
    }
    Host {
        layout,
        xcr0,
        supported: xcr0 & cpuid::SUPPORTED_XCR0,
        // SAFETY: one FXSAVE in a kernel-FPU section of its own; this is
        // process context (vCPU creation).
        mxcsr_mask: unsafe { rkvm_mxcsr_mask() },
    }
}

/// `KVM_CAP_XSAVE2`: the `KVM_GET_XSAVE2` buffer size.
pub(crate) fn xsave2_size() -> usize {
    host_info(cpu::host_xcr0()).xsave2_size()
}

/// One vCPU's FPU state, initialised to the architectural reset values.
pub(crate) struct GuestFpu {
    area: Pages,
    /// XCR0 when XSAVE is in use; `None` means FXSAVE.
    xcr0: Option<u64>,
    /// The host's XSAVE facts for the UAPI formats.
    host: Host,
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
        // At least a page: `struct kvm_xsave` is one.
        let mut area = Pages::new(order)?;
        // FCW and MXCSR reset values (the XSAVE header is zero: XRSTOR then
        // puts every component in its init state anyway), as KVM.
        xsave::init_area(area.as_bytes_mut());
        Ok(Self {
            area,
            xcr0,
            host: host_info(xcr0),
        })
    }

    /// The XSAVE facts `KVM_CAP_XSAVE2` and the conversions use.
    pub(crate) fn host(&self) -> &Host {
        &self.host
    }

    /// `KVM_GET_XSAVE`: the image of the state into `out` (zeroed, 4 KiB),
    /// showing what `guest_xcr0` (the guest's supported XCR0) allows.
    pub(crate) fn get_xsave(&mut self, guest_xcr0: u64, out: &mut [u8]) {
        xsave::to_uabi(&self.host, self.area.as_bytes_mut(), guest_xcr0, out);
    }

    /// `KVM_SET_XSAVE`.
    pub(crate) fn set_xsave(&mut self, buf: &[u8]) -> core::result::Result<(), Invalid> {
        xsave::from_uabi(&self.host, buf, self.area.as_bytes_mut())
    }

    /// `KVM_GET_FPU`.
    pub(crate) fn get_fpu(&mut self) -> KvmFpu {
        xsave::fpu_get(self.area.as_bytes_mut())
    }

    /// `KVM_SET_FPU`.
    pub(crate) fn set_fpu(&mut self, f: &KvmFpu) {
        xsave::fpu_set(self.area.as_bytes_mut(), f)
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
        let mask = self.xcr0.map(|m| m & !NOT_SWITCHED);
        // SAFETY: the kernel-FPU section protects the task's FPU state;
        // `p` is a 4 KiB-aligned area of at least the XSAVE size, the mask
        // is within the host's XCR0, so XRSTOR/XSAVE touch only valid
        // state, and the area's header and MXCSR only ever hold what the
        // hardware saved or `xsave::from_uabi` accepted (XCOMP_BV and the
        // reserved bytes zero, XSTATE_BV within XCR0, MXCSR within the
        // feature mask), so XRSTOR cannot fault.
        unsafe {
            rkvm_fpu_begin();
            match mask {
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
            match mask {
                Some(m) => rkvm_xsave(p, m),
                None => rkvm_fxsave(p),
            }
            rkvm_fpu_end();
        }
        r
    }
}
