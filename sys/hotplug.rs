// SPDX-License-Identifier: GPL-2.0

//! CPU hotplug and reboot: run a backend's per-CPU enable/disable on CPUs
//! that come and go, and switch virtualization off before a reboot.

use kernel::prelude::*;

extern "C" {
    fn rkvm_cpuhp_setup(
        online: unsafe extern "C" fn(u32) -> i32,
        offline: unsafe extern "C" fn(u32) -> i32,
    ) -> i32;
    fn rkvm_cpuhp_remove(state: i32);
    fn rkvm_reboot_register(cb: unsafe extern "C" fn()) -> i32;
    fn rkvm_reboot_unregister();
}

/// What a backend does on each CPU as it comes up or goes down (called on
/// that CPU), and before the machine reboots.
pub(crate) trait PerCpuHooks: 'static {
    /// The CPU is coming online (or is online when the hooks register).
    fn online(cpu: u32) -> Result;
    /// The CPU is going offline (or the hooks are being removed).
    fn offline(cpu: u32);
    /// The kernel reboots, halts or powers off (process context).
    fn reboot();
}

/// # Safety
///
/// Called by the CPU-hotplug core on the CPU being brought up.
unsafe extern "C" fn online<H: PerCpuHooks>(cpu: u32) -> i32 {
    match H::online(cpu) {
        Ok(()) => 0,
        Err(e) => e.to_errno(),
    }
}

/// # Safety
///
/// Called by the CPU-hotplug core on the CPU going down.
unsafe extern "C" fn offline<H: PerCpuHooks>(cpu: u32) -> i32 {
    H::offline(cpu);
    0
}

/// # Safety
///
/// Called by the reboot notifier chain in process context.
unsafe extern "C" fn reboot<H: PerCpuHooks>() {
    H::reboot();
}

/// A registered hotplug state; removed (running `offline` on every online
/// CPU) when dropped.
pub(crate) struct CpuHotplug(i32);

impl CpuHotplug {
    /// Registers `H`, whose `online` the kernel runs now on every online
    /// CPU and later on each CPU that comes up, and `offline` on each CPU
    /// that goes down.
    pub(crate) fn register<H: PerCpuHooks>() -> Result<Self> {
        // SAFETY: the trampolines are plain functions valid for the module's
        // life; the state is removed in `drop` before the module goes.
        let r = unsafe { rkvm_cpuhp_setup(online::<H>, offline::<H>) };
        if r < 0 {
            return Err(Error::from_errno(r));
        }
        Ok(Self(r))
    }
}

impl Drop for CpuHotplug {
    fn drop(&mut self) {
        // SAFETY: `self.0` is the dynamic state returned by setup.
        unsafe { rkvm_cpuhp_remove(self.0) };
    }
}

/// A reboot notifier running `H::reboot`. Unregistered when dropped.
pub(crate) struct RebootHook(());

impl RebootHook {
    /// Registers `H::reboot`. Only one hook may exist at a time.
    pub(crate) fn register<H: PerCpuHooks>() -> Result<Self> {
        // SAFETY: the trampoline is a plain function valid for the module's
        // life; the notifier is unregistered in `drop`, before the module
        // goes.
        let r = unsafe { rkvm_reboot_register(reboot::<H>) };
        if r < 0 {
            return Err(Error::from_errno(r));
        }
        Ok(Self(()))
    }
}

impl Drop for RebootHook {
    fn drop(&mut self) {
        // SAFETY: registered in `register`.
        unsafe { rkvm_reboot_unregister() };
    }
}
