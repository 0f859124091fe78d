// SPDX-License-Identifier: GPL-2.0

//! CPU hotplug: run rkvm's per-CPU enable/disable on CPUs that come and go.

use kernel::prelude::*;

extern "C" {
    fn rkvm_cpuhp_setup(
        online: unsafe extern "C" fn(u32) -> i32,
        offline: unsafe extern "C" fn(u32) -> i32,
    ) -> i32;
    fn rkvm_cpuhp_remove(state: i32);
}

/// A registered hotplug state; removed (running `offline` on every online
/// CPU) when dropped.
pub(crate) struct CpuHotplug(i32);

impl CpuHotplug {
    /// Registers `online`/`offline`, which the kernel runs on each CPU as it
    /// comes up or goes down, and runs `online` now on every online CPU.
    pub(crate) fn register(
        online: unsafe extern "C" fn(u32) -> i32,
        offline: unsafe extern "C" fn(u32) -> i32,
    ) -> Result<Self> {
        // SAFETY: the callbacks are plain functions valid for the module's
        // life; the state is removed in `drop` before the module goes.
        let r = unsafe { rkvm_cpuhp_setup(online, offline) };
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

extern "C" {
    fn rkvm_reboot_register(cb: unsafe extern "C" fn()) -> i32;
    fn rkvm_reboot_unregister();
}

/// A reboot notifier: `cb` runs (in process context) when the kernel
/// reboots, halts or powers off. Unregistered when dropped.
pub(crate) struct RebootHook(());

impl RebootHook {
    /// Registers `cb`. Only one hook may exist at a time.
    pub(crate) fn register(cb: unsafe extern "C" fn()) -> Result<Self> {
        // SAFETY: `cb` is a plain function valid for the module's life; the
        // notifier is unregistered in `drop`, before the module goes.
        let r = unsafe { rkvm_reboot_register(cb) };
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
