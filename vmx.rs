// SPDX-License-Identifier: GPL-2.0

//! Intel VT-x backend.

use crate::{sys::cpu, virt::Backend};
use kernel::prelude::*;

/// CPUID 1 ECX: VMX supported.
const CPUID_VMX: u32 = 1 << 5;
/// `CR4.VMXE`: VMX enabled on this CPU.
const CR4_VMXE: usize = 1 << 13;

/// The Intel VT-x backend.
pub(crate) struct Vmx;

impl Backend for Vmx {
    const NAME: &'static str = "Intel VT-x";

    fn probe() -> Result {
        if cpu::cpuid(1, 0).ecx & CPUID_VMX == 0 {
            return Err(ENODEV);
        }
        Ok(())
    }

    fn enabled_on_this_cpu() -> bool {
        cpu::read_cr4() & CR4_VMXE != 0
    }
}
