// SPDX-License-Identifier: GPL-2.0

//! A virtual machine: the object behind a VM file descriptor.

use crate::{abi, sys::file::AnonFile};
use kernel::{
    mm::Mm,
    prelude::*,
    sync::{aref::ARef, Arc, ArcBorrow},
};

/// One VM. It belongs to the address space (mm) of the process that
/// created it; ioctls from any other mm fail with `EIO`, as in KVM.
pub(crate) struct Vm {
    mm: ARef<Mm>,
}

impl Vm {
    /// Creates a VM owned by the calling process.
    pub(crate) fn new() -> Result<Arc<Self>> {
        let mm = ARef::<Mm>::from(&**kernel::current!().mm().ok_or(EINVAL)?);
        Ok(Arc::new(Self { mm }, GFP_KERNEL)?)
    }

    fn check_owner(&self) -> Result {
        match kernel::current!().mm() {
            Some(mm) if core::ptr::eq(mm.as_raw(), self.mm.as_raw()) => Ok(()),
            _ => Err(EIO),
        }
    }
}

impl AnonFile for Vm {
    const NAME: &'static CStr = c"kvm-vm";

    fn ioctl(this: ArcBorrow<'_, Self>, cmd: u32, arg: usize) -> Result<isize> {
        this.check_owner()?;
        match cmd {
            abi::KVM_CHECK_EXTENSION => Ok(abi::check_extension(arg)),
            _ => Err(ENOTTY),
        }
    }
}
