// SPDX-License-Identifier: GPL-2.0

//! AMD SVM backend.

use crate::{sys::cpu, virt::Backend};
use kernel::prelude::*;

/// CPUID 0x8000_0001 ECX: SVM supported.
const CPUID_SVM: u32 = 1 << 2;
/// `MSR_VM_CR`: firmware's SVM lock and disable bits.
const MSR_VM_CR: u32 = 0xc001_0114;
/// `VM_CR.SVMDIS`: SVM disabled (by firmware, when `VM_CR.LOCK` is set).
const VM_CR_SVMDIS: u64 = 1 << 4;
/// `MSR_EFER`.
const MSR_EFER: u32 = 0xc000_0080;
/// `EFER.SVME`: SVM enabled on this CPU.
const EFER_SVME: u64 = 1 << 12;

/// The AMD SVM backend.
pub(crate) struct Svm;

impl Backend for Svm {
    const NAME: &'static str = "AMD SVM";

    fn probe() -> Result {
        if cpu::cpuid(0x8000_0000, 0).eax < 0x8000_0001
            || cpu::cpuid(0x8000_0001, 0).ecx & CPUID_SVM == 0
        {
            return Err(ENODEV);
        }
        if cpu::rdmsr_safe(MSR_VM_CR)? & VM_CR_SVMDIS != 0 {
            pr_err!("rkvm: SVM is disabled by firmware (VM_CR.SVMDIS)\n");
            return Err(ENODEV);
        }
        Ok(())
    }

    fn enabled_on_this_cpu() -> bool {
        cpu::rdmsr_safe(MSR_EFER).is_ok_and(|efer| efer & EFER_SVME != 0)
    }
}
