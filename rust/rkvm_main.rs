// SPDX-License-Identifier: GPL-2.0

//! rkvm: a KVM-compatible hypervisor module in Rust.
//!
//! Registers `/dev/rkvm`, which speaks the KVM API (version 12). This file
//! is the crate root: module metadata, load-time set-up and the module list.

mod abi;
mod dev;
mod guest_cpuid;
mod mmu;
#[path = "../svm/mod.rs"]
mod svm;
#[path = "../sys/mod.rs"]
mod sys;
mod vcpu;
mod virt;
mod vm;
#[path = "../vmx/mod.rs"]
mod vmx;

// The pure-logic core, shared with the host tests in core/.
#[allow(unreachable_pub, dead_code, reason = "shared with the host crate")]
#[path = "../core/src/cpuid.rs"]
mod cpuid;
#[allow(unreachable_pub, dead_code, reason = "shared with the host crate")]
#[path = "../core/src/decode.rs"]
mod decode;
#[allow(unreachable_pub, dead_code, reason = "shared with the host crate")]
#[path = "../core/src/emulate.rs"]
mod emulate;
#[allow(unreachable_pub, dead_code, reason = "shared with the host crate")]
#[path = "../core/src/memslot.rs"]
mod memslot;
#[allow(unreachable_pub, dead_code, reason = "shared with the host crate")]
#[path = "../core/src/paging.rs"]
mod paging;
#[allow(unreachable_pub, dead_code, reason = "shared with the host crate")]
#[path = "../core/src/uapi.rs"]
mod uapi;
#[allow(unreachable_pub, dead_code, reason = "shared with the host crate")]
#[path = "../core/src/vmcb.rs"]
mod vmcb;
#[allow(unreachable_pub, dead_code, reason = "shared with the host crate")]
#[path = "../core/src/vmcs.rs"]
mod vmcs;
#[allow(unreachable_pub, dead_code, reason = "shared with the host crate")]
#[path = "../core/src/x86.rs"]
mod x86;

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
    _host: Host,
}

/// The backend's load-time state, dropped (switching it off) at unload.
enum Host {
    Svm(#[allow(dead_code, reason = "held for its Drop")] svm::SvmHost),
    Vmx(#[allow(dead_code, reason = "held for its Drop")] vmx::VmxHost),
}

impl kernel::InPlaceModule for RkvmModule {
    fn init(_module: &'static ThisModule) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            _host: {
                let vendor = virt::Vendor::detect()?;
                vendor.check_not_in_use()?;
                let host = match vendor {
                    virt::Vendor::Svm => Host::Svm(svm::SvmHost::new()?),
                    virt::Vendor::Vmx => Host::Vmx(vmx::VmxHost::new()?),
                };
                vendor.set_current();
                pr_info!("rkvm: {} ready, /dev/rkvm registered\n", vendor.name());
                host
            },
            _dev <- MiscDeviceRegistration::register(MiscDeviceOptions { name: c"rkvm" }),
        })
    }
}
