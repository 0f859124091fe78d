// SPDX-License-Identifier: GPL-2.0

//! The CPUID-table and register ioctls that need more than a copy:
//! `KVM_GET/SET_CPUID2`, `KVM_SET_SREGS`, `KVM_GET/SET_DEBUGREGS` and
//! `KVM_GET/SET_XCRS`, the FPU state (`KVM_GET/SET_XSAVE`,
//! `KVM_GET_XSAVE2`, `KVM_GET/SET_FPU`), and `KVM_TRANSLATE`.

use super::Vcpu;
use crate::{
    addr::Gva,
    backend::{ArchVcpu, Backend},
    cpuid,
    decode::Vendor,
    guest_cpuid::{self, Policy},
    memory::Paging,
    msr,
    paging::Access,
    sys::uaccess,
    uapi::{
        KvmCpuid2Header, KvmCpuidEntry2, KvmDebugregs, KvmFpu, KvmSregs, KvmTranslation, KvmXcrs,
        KVM_MAX_XCRS,
    },
    vm::Vm,
    xsave::KVM_XSAVE_SIZE,
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
        inner.apic_after_cpuid();
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

    /// `KVM_GET_DEBUGREGS`: DR0-DR3, DR6 and DR7 as the guest last wrote
    /// them (or `SET_DEBUGREGS` set them).
    pub(super) fn get_debugregs(&self, arg: usize) -> Result<isize> {
        let inner = self.inner.lock();
        let d = KvmDebugregs {
            db: inner.state.db,
            dr6: inner.arch.dr6(),
            dr7: inner.state.dr7,
            ..Default::default()
        };
        drop(inner);
        uaccess::write(arg, &d)?;
        Ok(0)
    }

    /// `KVM_SET_DEBUGREGS`: `EINVAL` for flags or bits 63:32 of DR6 or DR7,
    /// as KVM; the values are stored as given.
    pub(super) fn set_debugregs(&self, arg: usize) -> Result<isize> {
        let d: KvmDebugregs = uaccess::read(arg)?;
        if d.flags != 0 || d.dr6 >> 32 != 0 || d.dr7 >> 32 != 0 {
            return Err(EINVAL);
        }
        let mut inner = self.inner.lock();
        inner.state.db = d.db;
        inner.state.dr7 = d.dr7;
        inner.arch.set_dr6(d.dr6);
        inner.update_dr7();
        Ok(0)
    }

    /// `KVM_GET_XCRS`: XCR0 (none where the host has no XSAVE).
    pub(super) fn get_xcrs(&self, arg: usize) -> Result<isize> {
        let inner = self.inner.lock();
        let mut x = KvmXcrs::default();
        if inner.fpu.host_xcr0().is_some() {
            x.nr_xcrs = 1;
            x.xcrs[0].value = inner.state.xcr0;
        }
        drop(inner);
        uaccess::write(arg, &x)?;
        Ok(0)
    }

    /// `KVM_SET_XCRS`: the first XCR0 entry, under the rules of a guest's
    /// XSETBV (without its CPL check); `EINVAL` without host XSAVE, for
    /// more than `KVM_MAX_XCRS` entries, flags, or a refused value.
    pub(super) fn set_xcrs(&self, arg: usize) -> Result<isize> {
        let x: KvmXcrs = uaccess::read(arg)?;
        let mut inner = self.inner.lock();
        let Some(host) = inner.fpu.host_xcr0() else {
            return Err(EINVAL);
        };
        if x.nr_xcrs as usize > KVM_MAX_XCRS || x.flags != 0 {
            return Err(EINVAL);
        }
        if let Some(e) = x.xcrs[..x.nr_xcrs as usize].iter().find(|e| e.xcr == 0) {
            if !msr::xcr0_valid(0, e.value, inner.policy.caps.xcr0 & host) {
                return Err(EINVAL);
            }
            inner.state.xcr0 = e.value;
        }
        Ok(0)
    }

    /// `KVM_GET_XSAVE` and `KVM_GET_XSAVE2` (the same 4 KiB: rkvm offers
    /// no component that would make the image larger): the guest's FPU
    /// state in the standard XSAVE layout, showing the components its
    /// CPUID allows (x87 and SSE always).
    pub(super) fn get_xsave(&self, arg: usize) -> Result<isize> {
        let mut buf = KVec::from_elem(0u8, KVM_XSAVE_SIZE, GFP_KERNEL_ACCOUNT)?;
        let mut inner = self.inner.lock();
        let guest_xcr0 = inner.policy.caps.xcr0 & inner.fpu.host().supported;
        inner.fpu.get_xsave(guest_xcr0, &mut buf);
        drop(inner);
        uaccess::write_user(arg, &buf)?;
        Ok(0)
    }

    /// `KVM_SET_XSAVE`: `EINVAL` for components the host or rkvm lacks,
    /// a compacted image, reserved header bytes or MXCSR bits, as KVM.
    pub(super) fn set_xsave(&self, arg: usize) -> Result<isize> {
        let mut buf = KVec::from_elem(0u8, KVM_XSAVE_SIZE, GFP_KERNEL_ACCOUNT)?;
        uaccess::read_user(arg, &mut buf)?;
        self.inner.lock().fpu.set_xsave(&buf).map_err(|_| EINVAL)?;
        Ok(0)
    }

    /// `KVM_GET_FPU`: the legacy x87/SSE registers as saved.
    pub(super) fn get_fpu(&self, arg: usize) -> Result<isize> {
        let f = self.inner.lock().fpu.get_fpu();
        uaccess::write(arg, &f)?;
        Ok(0)
    }

    /// `KVM_SET_FPU`: the legacy x87/SSE registers but MXCSR.
    pub(super) fn set_fpu(&self, arg: usize) -> Result<isize> {
        let f: KvmFpu = uaccess::read(arg)?;
        self.inner.lock().fpu.set_fpu(&f);
        Ok(0)
    }

    /// `KVM_TRANSLATE`: the guest-physical address of a linear address, as
    /// a supervisor read would find it through the guest's page tables now
    /// (KVM's `kvm_mmu_gva_to_gpa_system`); `valid` 0 and an all-ones
    /// address if the walk fails. KVM reports every page writeable and
    /// none user, whatever the tables say; so does rkvm.
    pub(super) fn translate(&self, vm: &Vm<B>, arg: usize) -> Result<isize> {
        let mut t: KvmTranslation = uaccess::read(arg)?;
        let inner = self.inner.lock();
        let a = &inner.arch;
        let p = Paging::new(
            [a.cr0(), a.cr3(), a.cr4()],
            a.efer(),
            a.rflags(),
            0,
            inner.policy.caps.maxphyaddr,
            B::CPU == Vendor::Amd,
        );
        let mut mem = vm.mem_once();
        let gpa = mem.get().translate(&p, Gva(t.linear_address), Access::READ);
        drop(inner);
        t.physical_address = gpa.map_or(u64::MAX, |g| g.0);
        t.valid = u8::from(gpa.is_ok());
        t.writeable = 1;
        t.usermode = 0;
        uaccess::write(arg, &t)?;
        Ok(0)
    }
}
