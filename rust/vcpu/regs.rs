// SPDX-License-Identifier: GPL-2.0

//! The register-state ioctls: CPUID tables and MSRs.

use super::*;

impl Vcpu {
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
        let mut v = KVec::with_capacity(inner.cpuid.len(), GFP_KERNEL)?;
        for e in inner.cpuid.iter() {
            v.push(guest_cpuid::to_kvm(e), GFP_KERNEL)?;
        }
        uaccess::write(arg, &out)?;
        uaccess::write_array(arg + 8, &v)?;
        Ok(0)
    }

    pub(super) fn set_cpuid2(&self, arg: usize) -> Result<isize> {
        let hdr: KvmCpuid2Header = uaccess::read(arg)?;
        if hdr.nent > abi::MAX_CPUID_ENTRIES {
            return Err(E2BIG);
        }
        let raw = uaccess::read_array::<KvmCpuidEntry2>(arg + 8, hdr.nent as usize)?;
        let mut entries = KVec::with_capacity(raw.len(), GFP_KERNEL)?;
        for e in raw.iter() {
            entries.push(guest_cpuid::from_kvm(e), GFP_KERNEL)?;
        }
        let mut inner = self.inner.lock();
        // After the first entry KVM only accepts the same table again.
        if inner.has_run {
            return if inner.cpuid[..] == entries[..] {
                Ok(0)
            } else {
                Err(EINVAL)
            };
        }
        inner.cpuid = entries;
        Ok(0)
    }
    /// `KVM_GET_MSRS`/`KVM_SET_MSRS`: processes entries until the first
    /// one that fails and returns how many succeeded, as KVM does.
    pub(super) fn msrs(&self, arg: usize, write: bool) -> Result<isize> {
        let hdr: KvmMsrsHeader = uaccess::read(arg)?;
        // KVM's MAX_IO_MSRS.
        if hdr.nmsrs >= 256 {
            return Err(E2BIG);
        }
        let mut entries = uaccess::read_array::<KvmMsrEntry>(arg + 8, hdr.nmsrs as usize)?;
        let mut inner = self.inner.lock();
        let mut n = 0;
        for e in entries.iter_mut() {
            let ok = if write {
                inner.arch.set_msr(e.index, e.data).is_ok()
            } else {
                match inner.arch.get_msr(e.index) {
                    Ok(v) => {
                        e.data = v;
                        true
                    }
                    Err(_) => false,
                }
            };
            if !ok {
                break;
            }
            n += 1;
        }
        drop(inner);
        if !write {
            uaccess::write_array(arg + 8, &entries[..n])?;
        }
        Ok(n as isize)
    }
}
