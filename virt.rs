// SPDX-License-Identifier: GPL-2.0

//! The vendor backend trait and the choice of backend at load time.
//!
//! The VM, vCPU and API layers only see [`Backend`]; `svm` and `vmx`
//! implement it. KVM's `kvm_x86_ops` plays this role in C.

use crate::{svm::Svm, vmx::Vmx};
use core::sync::atomic::{AtomicUsize, Ordering};
use kernel::prelude::*;

/// What a hardware virtualization backend provides.
pub(crate) trait Backend {
    /// The name used in kernel messages.
    const NAME: &'static str;

    /// Checks that this CPU model supports the backend and that firmware
    /// has not disabled it. `ENODEV` with a message if not.
    fn probe() -> Result;

    /// Whether virtualization is already switched on on the calling CPU
    /// (by another hypervisor such as kvm_amd or kvm_intel).
    fn enabled_on_this_cpu() -> bool;
}

/// The backends rkvm has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Vendor {
    /// AMD SVM.
    Svm,
    /// Intel VT-x.
    Vmx,
}

impl Vendor {
    /// Picks the backend this CPU supports: `ENODEV` if none.
    pub(crate) fn detect() -> Result<Self> {
        if Svm::probe().is_ok() {
            return Ok(Self::Svm);
        }
        if Vmx::probe().is_ok() {
            return Ok(Self::Vmx);
        }
        pr_err!("rkvm: this CPU has neither AMD SVM nor Intel VT-x (or firmware disabled it)\n");
        Err(ENODEV)
    }

    /// The backend's name, for messages.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Svm => Svm::NAME,
            Self::Vmx => Vmx::NAME,
        }
    }

    /// `EBUSY` if another hypervisor has virtualization switched on on any
    /// online CPU: the hardware can only serve one.
    pub(crate) fn check_not_in_use(self) -> Result {
        let busy = AtomicUsize::new(0);
        let check = || {
            let on = match self {
                Self::Svm => Svm::enabled_on_this_cpu(),
                Self::Vmx => Vmx::enabled_on_this_cpu(),
            };
            if on {
                busy.fetch_add(1, Ordering::Relaxed);
            }
        };
        crate::sys::cpu::on_each_cpu(&check);
        let n = busy.load(Ordering::Relaxed);
        if n > 0 {
            pr_err!(
                "rkvm: {} is already enabled on {} CPU(s), probably by another hypervisor (kvm_amd/kvm_intel): unload it first\n",
                self.name(),
                n
            );
            return Err(EBUSY);
        }
        Ok(())
    }
}
