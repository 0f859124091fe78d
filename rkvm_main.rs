// SPDX-License-Identifier: GPL-2.0

//! rkvm: a KVM-compatible hypervisor module in Rust.
//!
//! Registers `/dev/rkvm`, which speaks the KVM API (version 12). This file
//! is the crate root: module metadata, load-time checks and the module list.

mod abi;
mod dev;
mod svm;
mod sys;
mod virt;
mod vm;
mod vmx;

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
    #[pin]
    _dev: MiscDeviceRegistration<dev::RkvmDev>,
}

impl kernel::InPlaceModule for RkvmModule {
    fn init(_module: &'static ThisModule) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            _dev <- {
                let vendor = virt::Vendor::detect()?;
                vendor.check_not_in_use()?;
                pr_info!("rkvm: {} found, /dev/rkvm ready\n", vendor.name());
                MiscDeviceRegistration::register(MiscDeviceOptions { name: c"rkvm" })
            },
        })
    }
}
