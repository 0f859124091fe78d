// SPDX-License-Identifier: GPL-2.0

//! rkvm: a KVM-compatible hypervisor module in Rust.
//!
//! Registers `/dev/rkvm`, which speaks the KVM API (version 12). This file
//! is the crate root and the composition root: module metadata, the module
//! list, and the one place that picks a backend (AMD SVM or Intel VT-x) at
//! load and instantiates the generic code for it.

mod abi;
mod backend;
mod dev;
mod guest_cpuid;
mod iobus;
mod irq;
mod memory;
mod mmu;
#[path = "../svm/mod.rs"]
mod svm;
#[path = "../sys/mod.rs"]
mod sys;
mod vclock;
mod vcpu;
mod vm;
#[path = "../vmx/mod.rs"]
mod vmx;

/// The pure-logic core (`core/src`, the `rkvm-core` crate that `cargo test`
/// runs on the host), compiled into the module as it is.
#[path = "../core/src"]
#[allow(unreachable_pub, reason = "public for the host crate and its tests")]
mod logic {
    pub(crate) mod addr;
    pub(crate) mod clock;
    pub(crate) mod cpuid;
    pub(crate) mod debug;
    pub(crate) mod decode;
    pub(crate) mod emulate;
    pub(crate) mod events;
    pub(crate) mod ioeventfd;
    pub(crate) mod kvmclock;
    #[cfg_attr(
        rkvm_module,
        allow(
            dead_code,
            reason = "the model's whole API is host-tested; the module uses part"
        )
    )]
    pub(crate) mod lapic;
    pub(crate) mod memslot;
    pub(crate) mod msr;
    pub(crate) mod paging;
    pub(crate) mod routing;
    pub(crate) mod uapi;
    pub(crate) mod vmcb;
    pub(crate) mod vmcs;
    pub(crate) mod x86;
    pub(crate) mod xsave;
}
use logic::{
    addr, clock, cpuid, debug, decode, emulate, events, ioeventfd, kvmclock, lapic, memslot, msr,
    paging, routing, uapi, vmcb, vmcs, x86, xsave,
};

use backend::Backend;
use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use kernel::{
    miscdevice::{MiscDeviceOptions, MiscDeviceRegistration},
    prelude::*,
};

module! {
    type: RkvmModule,
    name: "rkvm",
    authors: ["The rkvm developers"],
    description: "KVM-compatible hypervisor in Rust (/dev/rkvm)",
    license: "GPL",
}

#[pin_data]
struct RkvmModule {
    // Dropped first: no new VMs once unloading starts (and none exist:
    // every VM fd pins the module).
    #[pin]
    _dev: MiscDeviceRegistration<dev::RkvmDev>,
    /// Dropped after the device: runs the last irqfd shutdowns.
    _irqfd: sys::irqfd::IrqfdQueue,
    _host: Host,
}

/// The backend's load-time state, dropped (switching it off) at unload.
enum Host {
    Svm(#[allow(dead_code, reason = "held for its Drop")] <svm::Svm as Backend>::Host),
    Vmx(#[allow(dead_code, reason = "held for its Drop")] <vmx::Vmx as Backend>::Host),
}

/// The backend in use: 0 before load finished, then `SVM` or `VMX`.
static LOADED: AtomicU8 = AtomicU8::new(0);
const SVM: u8 = 1;
const VMX: u8 = 2;

/// Checks that no other hypervisor holds `B` on any online CPU (`EBUSY`:
/// the hardware serves one) and sets the backend up.
fn start<B: Backend>() -> Result<B::Host> {
    let busy = AtomicUsize::new(0);
    sys::cpu::on_each_cpu(&|| {
        if B::enabled_on_this_cpu() {
            busy.fetch_add(1, Ordering::Relaxed);
        }
    });
    let n = busy.load(Ordering::Relaxed);
    if n > 0 {
        pr_err!(
            "rkvm: {} is already enabled on {} CPU(s), probably by another hypervisor (kvm_amd/kvm_intel): unload it first\n",
            B::NAME,
            n
        );
        return Err(EBUSY);
    }
    let host = B::init()?;
    pr_info!("rkvm: {} ready, /dev/rkvm registered\n", B::NAME);
    Ok(host)
}

/// Picks the backend this CPU supports: `ENODEV` if none.
fn start_any() -> Result<Host> {
    let host = if svm::Svm::probe().is_ok() {
        Host::Svm(start::<svm::Svm>()?)
    } else if vmx::Vmx::probe().is_ok() {
        Host::Vmx(start::<vmx::Vmx>()?)
    } else {
        pr_err!("rkvm: this CPU has neither AMD SVM nor Intel VT-x (or firmware disabled it)\n");
        return Err(ENODEV);
    };
    LOADED.store(
        match host {
            Host::Svm(_) => SVM,
            Host::Vmx(_) => VMX,
        },
        Ordering::Release,
    );
    Ok(host)
}

/// `KVM_CREATE_VM` on the backend in use.
pub(crate) fn create_vm(vm_type: usize) -> Result<isize> {
    match LOADED.load(Ordering::Acquire) {
        SVM => dev::create_vm::<svm::Svm>(vm_type),
        VMX => dev::create_vm::<vmx::Vmx>(vm_type),
        _ => Err(ENODEV),
    }
}

/// The vendor of the backend in use (`None` before load finished), for
/// the system ioctls whose answer depends on it.
pub(crate) fn loaded_cpu() -> Option<decode::Vendor> {
    match LOADED.load(Ordering::Acquire) {
        SVM => Some(svm::Svm::CPU),
        VMX => Some(vmx::Vmx::CPU),
        _ => None,
    }
}

impl kernel::InPlaceModule for RkvmModule {
    fn init(_module: &'static ThisModule) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            _host: start_any()?,
            _irqfd: sys::irqfd::IrqfdQueue::new()?,
            _dev <- MiscDeviceRegistration::register(MiscDeviceOptions { name: c"rkvm" }),
        })
    }
}
