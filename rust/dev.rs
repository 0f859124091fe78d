// SPDX-License-Identifier: GPL-2.0

//! `/dev/rkvm`: the system file descriptor and its ioctls, as KVM's
//! `kvm_dev_ioctl`.

use crate::{abi, backend::Backend, sys::file, vm::Vm};
use kernel::{
    fs::File,
    miscdevice::{MiscDevice, MiscDeviceRegistration},
    page::PAGE_SIZE,
    prelude::*,
};

/// An open `/dev/rkvm`. It holds no state: VMs live on their own fds.
pub(crate) struct RkvmDev;

#[vtable]
impl MiscDevice for RkvmDev {
    type Ptr = ();

    fn open(_file: &File, _misc: &MiscDeviceRegistration<Self>) -> Result<()> {
        Ok(())
    }

    fn ioctl(_this: (), _file: &File, cmd: u32, arg: usize) -> Result<isize> {
        match cmd {
            abi::KVM_GET_API_VERSION if arg == 0 => Ok(abi::API_VERSION),
            abi::KVM_CREATE_VM => crate::create_vm(arg),
            abi::KVM_CHECK_EXTENSION => Ok(abi::check_extension(arg)),
            abi::KVM_GET_VCPU_MMAP_SIZE if arg == 0 => {
                Ok((abi::VCPU_MMAP_PAGES * PAGE_SIZE) as isize)
            }
            abi::KVM_GET_SUPPORTED_CPUID => crate::guest_cpuid::get_supported_cpuid(arg),
            abi::KVM_GET_MSR_INDEX_LIST => crate::vcpu::msr_index_list(arg),
            abi::KVM_GET_MSR_FEATURE_INDEX_LIST => crate::vcpu::feature_msr_index_list(arg),
            // On the system fd it reads the feature MSRs.
            abi::KVM_GET_MSRS => crate::vcpu::get_feature_msrs(arg),
            abi::KVM_X86_GET_MCE_CAP_SUPPORTED => crate::vcpu::mce_cap_supported(arg),
            // KVM answers EINVAL, not ENOTTY, for unknown system ioctls and
            // for a non-zero argument where none is taken.
            _ => Err(EINVAL),
        }
    }
}

/// `KVM_CREATE_VM` for backend `B` (the composition root picks it).
pub(crate) fn create_vm<B: Backend>(vm_type: usize) -> Result<isize> {
    if vm_type != abi::KVM_X86_DEFAULT_VM {
        return Err(EINVAL);
    }
    let vm = Vm::<B>::new()?;
    Ok(file::install_fd(vm, c"kvm-vm")? as isize)
}
