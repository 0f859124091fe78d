// SPDX-License-Identifier: GPL-2.0

//! The KVM ABI as rkvm speaks it: ioctl numbers and capability numbers,
//! identical to `include/uapi/linux/kvm.h`.

/// `KVM_API_VERSION`: the only version KVM has ever shipped since 2007.
pub(crate) const API_VERSION: isize = 12;

/// The ioctl type byte of every KVM ioctl.
const KVMIO: u32 = 0xAE;

const fn io(nr: u32) -> u32 {
    (KVMIO << 8) | nr
}

// System ioctls (on /dev/rkvm).
pub(crate) const KVM_GET_API_VERSION: u32 = io(0x00);
pub(crate) const KVM_CREATE_VM: u32 = io(0x01);
pub(crate) const KVM_CHECK_EXTENSION: u32 = io(0x03);
pub(crate) const KVM_GET_VCPU_MMAP_SIZE: u32 = io(0x04);

/// `KVM_X86_DEFAULT_VM`: the only VM type rkvm creates.
pub(crate) const KVM_X86_DEFAULT_VM: usize = 0;

// Capabilities (`KVM_CAP_*`). Only those rkvm implements are listed: every
// other number answers 0.
pub(crate) const KVM_CAP_CHECK_EXTENSION_VM: usize = 105;

/// `KVM_CHECK_EXTENSION`, on the system fd or a VM fd: 0 for anything rkvm
/// does not implement, as KVM answers for capabilities it lacks.
pub(crate) fn check_extension(cap: usize) -> isize {
    match cap {
        KVM_CAP_CHECK_EXTENSION_VM => 1,
        _ => 0,
    }
}

/// Pages mapped by the vCPU fd: `struct kvm_run`, then the PIO data page.
pub(crate) const VCPU_MMAP_PAGES: usize = 2;
