// SPDX-License-Identifier: GPL-2.0

//! The CPUID-table and special-register ioctls that need more than a copy:
//! `KVM_GET/SET_CPUID2` and `KVM_SET_SREGS`.

use super::Vcpu;
use crate::{
    backend::{ArchVcpu, Backend},
    cpuid,
    guest_cpuid::{self, Policy},
    sys::uaccess,
    uapi::{KvmCpuid2Header, KvmCpuidEntry2, KvmSregs},
    vm::Vm,
};
use kernel::prelude::*;

impl<B: Backend> Vcpu<B> {
    /// `KVM_GET_CPUID2`: the table `KVM_SET_CPUID2` set; `E2BIG` if it does
    /// not fit in `nent` entries.
    pub(super) fn get_cpuid2(&self, arg: usize) -> Result<isize> {
        let hdr: KvmCpuid2Header = uaccess::read(arg)?;
        let inner = self.inner.lock();
        if (hdr.nent as usize) < inner.cpuid.len() {
            return Err(E2BIG);
        }
        let out = KvmCpuid2Header {
            nent: inner.cpuid.len() as u32,
            padding: 0,
        };
        let mut v = KVec::with_capacity(inner.cpuid.len(), GFP_KERNEL_ACCOUNT)?;
        v.extend_from_slice(&inner.cpuid, GFP_KERNEL_ACCOUNT)?;
        drop(inner);
        uaccess::write(arg, &out)?;
        uaccess::write_array(arg + 8, &v)?;
        Ok(0)
    }

    /// `KVM_SET_CPUID2`. Once the vCPU has run, KVM accepts only the same
    /// table again.
    pub(super) fn set_cpuid2(&self, arg: usize) -> Result<isize> {
        let hdr: KvmCpuid2Header = uaccess::read(arg)?;
        if hdr.nent as usize > cpuid::KVM_MAX_CPUID_ENTRIES {
            return Err(E2BIG);
        }
        let mut entries = uaccess::read_array::<KvmCpuidEntry2>(arg + 8, hdr.nent as usize)?;
        for e in entries.iter_mut() {
            *e = e.sanitized();
        }
        let policy = Policy::new(&entries)?;
        let mut inner = self.inner.lock();
        if inner.has_run {
            return if inner.cpuid[..] == entries[..] {
                Ok(0)
            } else {
                Err(EINVAL)
            };
        }
        inner.cpuid = entries;
        inner.policy = policy;
        inner.arch.after_set_cpuid(&policy.caps);
        Ok(0)
    }

    /// `KVM_SET_SREGS`: `EINVAL` where KVM refuses the values; a PAE
    /// guest's PDPTEs are (re)read, and bad ones are not an error here.
    pub(super) fn set_sregs_ioctl(&self, vm: &Vm<B>, arg: usize) -> Result<isize> {
        let s: KvmSregs = uaccess::read(arg)?;
        let mut inner = self.inner.lock();
        guest_cpuid::check_sregs(&inner.policy, &s, inner.state.apic_base)?;
        inner.set_sregs(&s);
        let mut mem = vm.mem_once();
        self.load_pdptes(&mut mem, &mut inner);
        Ok(0)
    }
}
