// SPDX-License-Identifier: GPL-2.0

//! CPUID and special-register policy at the ioctl boundary: the
//! `KVM_GET_SUPPORTED_CPUID` list, conversions to and from KVM's structs,
//! and the `KVM_SET_SREGS` validity checks (rules in core/src/x86.rs).

use crate::{
    cpuid::{self, Entry, GuestCaps},
    sys::{cpu, uaccess},
    uapi::{KvmCpuid2Header, KvmSregs},
    x86,
};
use kernel::{prelude::*, sync::SetOnce};

/// What rkvm can give a guest on this host.
pub(crate) fn supported() -> Result<KVec<Entry>> {
    let mut v = KVec::with_capacity(cpuid::KVM_MAX_CPUID_ENTRIES, GFP_KERNEL_ACCOUNT)?;
    for _ in 0..cpuid::KVM_MAX_CPUID_ENTRIES {
        v.push(Entry::default(), GFP_KERNEL_ACCOUNT)?;
    }
    let host = |leaf, sub| {
        let r = cpu::cpuid(leaf, sub);
        [r.eax, r.ebx, r.ecx, r.edx]
    };
    let xcr0 = cpu::host_xcr0().unwrap_or(0);
    let n = cpuid::supported_with_xsave(host, xcr0, &mut v).map_err(|_| E2BIG)?;
    v.truncate(n);
    // The kvmclock leaves go where KVM lists them: after the basic leaves.
    let at = v
        .iter()
        .position(|e| e.function >= 0x8000_0000)
        .unwrap_or(v.len());
    for (i, e) in crate::kvmclock::cpuid_leaves().into_iter().enumerate() {
        v.insert_within_capacity(at + i, e).map_err(|_| E2BIG)?;
    }
    Ok(v)
}

/// `KVM_GET_SUPPORTED_CPUID`: KVM's rules (E2BIG when `nent` is 0 or too
/// small, `nent` clamped to 256, written back on success).
pub(crate) fn get_supported_cpuid(arg: usize) -> Result<isize> {
    let hdr: KvmCpuid2Header = uaccess::read(arg)?;
    if hdr.nent < 1 {
        return Err(E2BIG);
    }
    let list = supported()?;
    let room = (hdr.nent as usize).min(cpuid::KVM_MAX_CPUID_ENTRIES);
    if list.len() > room {
        return Err(E2BIG);
    }
    let mut out = KVec::with_capacity(list.len(), GFP_KERNEL_ACCOUNT)?;
    for e in list.iter() {
        out.push(*e, GFP_KERNEL_ACCOUNT)?;
    }
    uaccess::write(
        arg,
        &KvmCpuid2Header {
            nent: list.len() as u32,
            padding: 0,
        },
    )?;
    uaccess::write_array(arg + 8, &out)?;
    Ok(0)
}

/// A vCPU's CPUID-derived policy, computed when its CPUID table is set:
/// what the guest may use (its table intersected with what rkvm supports
/// on this host, KVM's `guest_cpu_cap_has`) and the host's limits.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Policy {
    /// The guest's capabilities.
    pub(crate) caps: GuestCaps,
    /// The CR4 bits the host and rkvm support.
    pub(crate) host_cr4: u64,
    /// The EFER bits rkvm supports (`kvm_caps.supported_efer_bits`).
    pub(crate) efer_bits: u64,
}

/// What rkvm supports on this host, as capabilities (computed once).
static HOST_CAPS: SetOnce<GuestCaps> = SetOnce::new();

/// The capabilities of rkvm's supported CPUID on this host.
fn host_caps() -> Result<GuestCaps> {
    if let Some(c) = HOST_CAPS.copy() {
        return Ok(c);
    }
    let c = GuestCaps::from_entries(&supported()?);
    HOST_CAPS.populate(c);
    Ok(c)
}

impl Policy {
    /// The policy for a guest with CPUID table `guest`.
    pub(crate) fn new(guest: &[Entry]) -> Result<Self> {
        let host = host_caps()?;
        Ok(Self {
            caps: GuestCaps::from_entries(guest).intersect(&host),
            host_cr4: !x86::cr4_reserved_bits(&host),
            efer_bits: x86::supported_efer_bits(&host, false),
        })
    }
}

/// `KVM_SET_SREGS` validation: `EINVAL` exactly where KVM refuses.
pub(crate) fn check_sregs(p: &Policy, s: &KvmSregs, apic_base_now: u64) -> Result {
    let view = x86::SregsView {
        efer: s.efer,
        cr0: s.cr0,
        cr3: s.cr3,
        cr4: s.cr4,
        cs_l: s.cs.l != 0,
    };
    if !x86::valid_sregs(&view, &p.caps, p.host_cr4, p.efer_bits) {
        return Err(EINVAL);
    }
    if !x86::valid_apic_base(s.apic_base, apic_base_now, &p.caps) {
        return Err(EINVAL);
    }
    Ok(())
}

/// What the guest's CPUID instruction returns.
pub(crate) fn guest_cpuid(guest: &[Entry], leaf: u32, sub: u32, rt: cpuid::Runtime) -> [u32; 4] {
    cpuid::emulate(guest, leaf, sub, &rt)
}

/// A guest MOV to CR0 or CR4 under KVM's rules (`kvm_set_cr0/cr4`).
pub(crate) fn guest_cr_write(p: &Policy, cr: u8, value: u64, s: &x86::CrState) -> x86::CrWrite {
    match cr {
        0 => x86::guest_set_cr0(value, s),
        _ => x86::guest_set_cr4(value, s, &p.caps, p.host_cr4),
    }
}
