// SPDX-License-Identifier: GPL-2.0

//! Safe access to CPU registers and per-CPU calls (CPUID, MSRs, CR4).

use core::ffi::c_void;
use kernel::prelude::*;

extern "C" {
    fn rkvm_rdmsr_safe(msr: u32, val: *mut u64) -> i32;
    fn rkvm_on_each_cpu(func: unsafe extern "C" fn(*mut c_void), info: *mut c_void);
    fn rkvm_read_cr4() -> usize;
    fn rkvm_lfence_serializing() -> bool;
}

/// The four registers CPUID returns.
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

/// Whether the host kernel made LFENCE dispatch-serialising
/// (`X86_FEATURE_LFENCE_RDTSC`), which decides the `DE_CFG` bit KVM offers.
pub(crate) fn lfence_serializing() -> bool {
    // SAFETY: the helper only tests a boot-time CPU capability bit.
    unsafe { rkvm_lfence_serializing() }
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

extern "C" {
    fn rkvm_wrmsr(msr: u32, val: u64);
    fn rkvm_local_irq_disable();
    fn rkvm_local_irq_enable();
    fn rkvm_preempt_disable();
    fn rkvm_preempt_enable();
    fn rkvm_smp_processor_id() -> i32;
    fn rkvm_nr_cpu_ids() -> u32;
    fn rkvm_cond_resched();
    fn rkvm_exit_requested() -> bool;
    fn rkvm_task_size() -> usize;
    fn rkvm_tsc_khz() -> u32;
    fn rkvm_xgetbv0() -> u64;
}

/// Writes an MSR on this CPU (for the purpose-specific wrappers in `sys/`:
/// SVM's enable, `TSC_AUX`).
///
/// # Safety
///
/// The MSR must exist on this CPU and the value must be valid for it, and
/// the write must not change state the kernel relies on.
pub(super) unsafe fn wrmsr(msr: u32, val: u64) {
    // SAFETY: the caller's obligations.
    unsafe { rkvm_wrmsr(msr, val) };
}

/// The number of possible CPU ids (`nr_cpu_ids`).
pub(crate) fn nr_cpu_ids() -> usize {
    // SAFETY: reads a variable fixed at boot.
    unsafe { rkvm_nr_cpu_ids() as usize }
}

/// Gives the scheduler a chance to run something else (may sleep).
pub(crate) fn cond_resched() {
    // SAFETY: `cond_resched` has no preconditions beyond a context that may
    // sleep, which its own `might_sleep` check reports if violated (rkvm
    // calls it from the vCPU ioctl, holding only that vCPU's mutex).
    unsafe { rkvm_cond_resched() };
}

/// Whether a signal or a reschedule is pending for the current task. With
/// interrupts off (`_irq`), right before VM entry: anything that sets
/// either afterwards also interrupts the CPU, which exits the guest, so no
/// wake-up is lost between this check and the entry.
pub(crate) fn exit_requested(_irq: &NoIrq<'_>) -> bool {
    // SAFETY: reads the current task's flags.
    unsafe { rkvm_exit_requested() }
}

/// The host TSC's frequency in kHz (the kernel's calibrated `tsc_khz`; 0
/// if calibration failed).
pub(crate) fn tsc_khz() -> u32 {
    // SAFETY: reads a variable the kernel sets once at boot.
    unsafe { rkvm_tsc_khz() }
}

/// The end of the user address space (`TASK_SIZE_MAX`).
pub(crate) fn task_size() -> u64 {
    // SAFETY: reads a boot-time constant.
    unsafe { rkvm_task_size() as u64 }
}

/// The host's XCR0 if it uses XSAVE (CPUID.1:ECX.OSXSAVE), else `None`.
pub(crate) fn host_xcr0() -> Option<u64> {
    (cpuid(1, 0).ecx & crate::cpuid::feature::OSXSAVE.mask != 0).then(xgetbv0)
}

/// XCR0 of this CPU (the host's enabled XSAVE features).
fn xgetbv0() -> u64 {
    // SAFETY: XGETBV(0) is valid whenever CR4.OSXSAVE is set, which the
    // one caller, `host_xcr0`, checks through CPUID.1:ECX.OSXSAVE first.
    unsafe { rkvm_xgetbv0() }
}

/// Preemption disabled while this lives: the current CPU cannot change.
pub(crate) struct NoPreempt(());

impl NoPreempt {
    /// Disables preemption.
    pub(crate) fn new() -> Self {
        // SAFETY: balanced by `drop`.
        unsafe { rkvm_preempt_disable() };
        Self(())
    }

    /// The CPU this code runs on, stable while `self` lives.
    pub(crate) fn cpu(&self) -> usize {
        // SAFETY: preemption is disabled, so smp_processor_id() is valid.
        unsafe { rkvm_smp_processor_id() as usize }
    }
}

impl Drop for NoPreempt {
    fn drop(&mut self) {
        // SAFETY: balances `new`.
        unsafe { rkvm_preempt_enable() };
    }
}

/// Local interrupts disabled while this lives.
pub(crate) struct NoIrq<'a>(core::marker::PhantomData<&'a NoPreempt>);

impl<'a> NoIrq<'a> {
    /// Disables local interrupts (within a preemption-off section).
    pub(crate) fn new(p: &'a NoPreempt) -> Self {
        // SAFETY: balanced by `drop`; rkvm never sleeps while it lives.
        unsafe { rkvm_local_irq_disable() };
        let _ = p;
        Self(core::marker::PhantomData)
    }
}

impl Drop for NoIrq<'_> {
    fn drop(&mut self) {
        // SAFETY: balances `new`; interrupts were on before (process
        // context in an ioctl).
        unsafe { rkvm_local_irq_enable() };
    }
}

extern "C" {
    fn rkvm_num_online_cpus() -> u32;
    fn rkvm_kick_cpu(cpu: i32);
    fn rkvm_kick_cpu_async(cpu: i32);
    fn rkvm_now_ns() -> u64;
    fn rkvm_kvmclock_base_ns() -> u64;
    fn rkvm_realtime_ns() -> u64;
    fn rkvm_read_dr7() -> usize;
    fn rkvm_write_dr7(v: usize);
    fn rkvm_swap_dr0123(load: *const usize, save: *mut usize);
}

/// The number of online CPUs.
pub(crate) fn num_online_cpus() -> usize {
    // SAFETY: reads a counter.
    unsafe { rkvm_num_online_cpus() as usize }
}

/// Interrupts `cpu` and waits until it has taken the interrupt (may sleep;
/// interrupts must be on).
pub(crate) fn kick_cpu(cpu: usize) {
    // SAFETY: process context with interrupts on (callers: ioctls).
    unsafe { rkvm_kick_cpu(cpu as i32) };
}

/// Interrupts `cpu` without waiting (any context): a vCPU in guest mode
/// there exits.
pub(crate) fn kick_cpu_async(cpu: usize) {
    // SAFETY: sends a reschedule IPI, valid for any online CPU number, in
    // any context.
    unsafe { rkvm_kick_cpu_async(cpu as i32) };
}

/// The host's monotonic clock (`CLOCK_MONOTONIC`, which hrtimers use), in
/// nanoseconds.
pub(crate) fn now_ns() -> u64 {
    // SAFETY: reads the clock.
    unsafe { rkvm_now_ns() }
}

/// KVM's kvmclock base: the raw monotonic clock counted from boot, in
/// nanoseconds.
pub(crate) fn kvmclock_base_ns() -> u64 {
    // SAFETY: reads the clocks.
    unsafe { rkvm_kvmclock_base_ns() }
}

/// The wall clock (`CLOCK_REALTIME`), in nanoseconds.
pub(crate) fn realtime_ns() -> u64 {
    // SAFETY: reads the clock.
    unsafe { rkvm_realtime_ns() }
}

/// This CPU's DR7. #VMEXIT resets the host's DR7 to 0x400, so a live host
/// breakpoint (ptrace, perf) must be put back after each exit.
pub(crate) fn read_dr7() -> usize {
    // SAFETY: reading DR7 in ring 0 has no side effects.
    unsafe { rkvm_read_dr7() }
}

/// Writes this CPU's DR7 (the value read before VMRUN).
pub(crate) fn write_dr7(v: usize) {
    // SAFETY: restores the host's own earlier value.
    unsafe { rkvm_write_dr7(v) };
}

/// The host's DR0-DR3 and DR7 while a guest's breakpoint addresses are
/// loaded (KVM's switch of `eff_db`): [`HostDrs::restore`], or dropping it
/// on an error path, puts them back.
#[must_use]
pub(crate) struct HostDrs {
    db: [usize; 4],
    dr7: usize,
}

impl HostDrs {
    /// Disarms the host's breakpoints (so that the guest's addresses never
    /// trigger them in the host) and loads `db` for the guest, whose DR7
    /// the VMCB or VMCS holds. Interrupts are off (`_irq`), so nothing on
    /// the host runs with these values.
    pub(crate) fn load_guest(db: &[u64; 4], _irq: &NoIrq<'_>) -> Self {
        let dr7 = read_dr7();
        if dr7 != 0x400 {
            write_dr7(0x400);
        }
        let load = db.map(|v| v as usize);
        let mut save = [0usize; 4];
        // SAFETY: ring 0 with interrupts off; DR0-DR3 are only addresses
        // while DR7 (the host's, just cleared) arms none of them, and the
        // host's are put back by `restore` before interrupts are on again.
        unsafe { rkvm_swap_dr0123(load.as_ptr(), save.as_mut_ptr()) };
        Self { db: save, dr7 }
    }

    /// Puts the host's DR0-DR3 back, then its DR7 (after the exit reset
    /// DR7 to 0x400), with interrupts still off.
    pub(crate) fn restore(self, _irq: &NoIrq<'_>) {
        drop(self);
    }
}

impl Drop for HostDrs {
    fn drop(&mut self) {
        let mut scratch = [0usize; 4];
        // SAFETY: as in `load_guest`: the exit left DR7 = 0x400, so the
        // addresses arm nothing until DR7 is restored below.
        unsafe { rkvm_swap_dr0123(self.db.as_ptr(), scratch.as_mut_ptr()) };
        if self.dr7 != 0x400 {
            write_dr7(self.dr7);
        }
    }
}

/// Loads `TSC_AUX` (what RDTSCP and RDPID return) with a guest's value,
/// or the host's back, around a world switch: interrupts are off (`_irq`),
/// so nothing on the host reads it meanwhile. The caller checked that the
/// CPU has RDTSCP.
pub(crate) fn write_tsc_aux(v: u64, _irq: &NoIrq<'_>) {
    // SAFETY: TSC_AUX exists on a CPU with RDTSCP (the caller checked) and
    // holds a 32-bit value (callers pass one); writing it affects only
    // RDTSCP/RDPID results, which the host reads with interrupts on, after
    // the caller has put its value back.
    unsafe { wrmsr(crate::msr::TSC_AUX, v & 0xffff_ffff) };
}

/// The host's MAXPHYADDR: CPUID 0x8000_0008 EAX[7:0] (the raw value, as
/// KVM's `kvm_host.maxphyaddr`), or 36 without that leaf.
pub(crate) fn host_maxphyaddr() -> u8 {
    if cpuid(0x8000_0000, 0).eax >= 0x8000_0008 {
        (cpuid(0x8000_0008, 0).eax & 0xff) as u8
    } else {
        36
    }
}

/// The time-stamp counter.
pub(crate) fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no side effects and is allowed in ring 0.
    unsafe { core::arch::x86_64::_rdtsc() }
}
