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
