// SPDX-License-Identifier: GPL-2.0

//! Safe access to CPU registers and per-CPU calls (CPUID, MSRs, CR4).

use core::ffi::c_void;
use kernel::prelude::*;

extern "C" {
    fn rkvm_rdmsr_safe(msr: u32, val: *mut u64) -> i32;
    fn rkvm_on_each_cpu(func: unsafe extern "C" fn(*mut c_void), info: *mut c_void);
    fn rkvm_read_cr4() -> usize;
}

/// The four registers CPUID returns.
#[allow(dead_code, reason = "all four registers are part of the CPUID result")]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Cpuid {
    pub(crate) eax: u32,
    pub(crate) ebx: u32,
    pub(crate) ecx: u32,
    pub(crate) edx: u32,
}

/// Executes CPUID with `leaf` in EAX and `subleaf` in ECX on this CPU.
pub(crate) fn cpuid(leaf: u32, subleaf: u32) -> Cpuid {
    let r = core::arch::x86_64::__cpuid_count(leaf, subleaf);
    Cpuid {
        eax: r.eax,
        ebx: r.ebx,
        ecx: r.ecx,
        edx: r.edx,
    }
}

/// Reads an MSR on this CPU; `EIO` if the CPU raises #GP for it.
pub(crate) fn rdmsr_safe(msr: u32) -> Result<u64> {
    let mut val = 0u64;
    // SAFETY: the helper writes only through `val`, a valid local, and
    // recovers from #GP through the exception table.
    let ret = unsafe { rkvm_rdmsr_safe(msr, &mut val) };
    if ret == 0 {
        Ok(val)
    } else {
        Err(EIO)
    }
}

/// Reads this CPU's real CR4 (not the kernel's shadow copy).
pub(crate) fn read_cr4() -> usize {
    // SAFETY: reading CR4 has no side effects; the helper runs in ring 0.
    unsafe { rkvm_read_cr4() }
}

/// Runs `f` on every online CPU (this one too, with interrupts off on the
/// others) and returns when all have finished.
pub(crate) fn on_each_cpu<F: Fn() + Sync>(f: &F) {
    /// # Safety
    ///
    /// `info` must be a `&F` that outlives the call.
    unsafe extern "C" fn trampoline<F: Fn() + Sync>(info: *mut c_void) {
        // SAFETY: `info` is the `&F` passed below, which outlives the call
        // because `rkvm_on_each_cpu` waits for every CPU to finish.
        let f = unsafe { &*info.cast::<F>() };
        f();
    }
    let info = core::ptr::from_ref(f).cast_mut().cast::<c_void>();
    // SAFETY: `trampoline::<F>` only reads `info` as `&F`; `F: Sync` makes
    // sharing it with other CPUs sound; the call waits for completion.
    unsafe { rkvm_on_each_cpu(trampoline::<F>, info) };
}
