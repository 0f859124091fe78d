// SPDX-License-Identifier: GPL-2.0

//! MSRs: the guest's RDMSR/WRMSR and `KVM_GET/SET_MSRS`, under KVM's rules
//! (`core/src/msr.rs`). The MSRs KVM keeps in `vcpu->arch` live in the
//! generic state; the VMCB/VMCS holds the rest (segment bases, SYSCALL and
//! SYSENTER), and the backend reads and writes those.

use super::{host_va_bits, Inner, Vcpu};
use crate::{
    backend::{ArchVcpu, Backend, VcpuState},
    cpuid::GuestCaps,
    guest_cpuid,
    msr::{self, APIC_BASE, EFER, MISC_ENABLE, PAT, TSC, TSC_AUX},
    sys::{cpu, uaccess},
    uapi::{KvmMsrEntry, KvmMsrsHeader},
    x86::{self, CR0_PG},
};
use kernel::prelude::*;

/// KVM's `MAX_IO_MSRS`: the most entries one `KVM_GET/SET_MSRS` takes.
const MAX_IO_MSRS: u32 = 256;

impl<B: Backend> Inner<B> {
    /// Reads MSR `index`: `None` means #GP for the guest (or a stop for
    /// `KVM_GET_MSRS`). `host`: a `KVM_GET_MSRS` read.
    pub(super) fn get_msr(&self, index: u32, host: bool) -> Option<u64> {
        let s = &self.state;
        Some(match index {
            EFER => self.arch.efer(),
            TSC => cpu::rdtsc().wrapping_add(s.tsc_offset),
            PAT => s.pat,
            MISC_ENABLE => s.misc_enable,
            APIC_BASE => s.apic_base,
            TSC_AUX if msr::tsc_aux_readable(host, &self.policy.caps) => s.tsc_aux,
            TSC_AUX => return None,
            _ if self.pvclock.rdmsr(index).is_some() => return self.pvclock.rdmsr(index),
            _ => match self.apic_rdmsr(index) {
                Some(v) => return v,
                None => return self.arch.get_msr(index),
            },
        })
    }

    /// Writes `v` to MSR `index`; `false` means #GP for the guest (or a
    /// stop for `KVM_SET_MSRS`). `host`: a `KVM_SET_MSRS` write.
    pub(super) fn set_msr(&mut self, index: u32, v: u64, host: bool) -> bool {
        if let Some(ok) = self.apic_wrmsr(index, v) {
            return ok;
        }
        if self.pvclock.wrmsr(index, v) {
            return true;
        }
        let caps = &self.policy.caps;
        match index {
            EFER => {
                let paging = self.arch.cr0() & CR0_PG != 0;
                let cur = self.arch.efer();
                match msr::efer_write(v, cur, paging, host, caps, self.policy.efer_bits) {
                    Some(efer) => self.arch.set_efer(efer),
                    None => return false,
                }
            }
            // Guest and host writes set the offset alike (no TSC
            // synchronisation across vCPUs yet).
            TSC => {
                self.state.tsc_offset = v.wrapping_sub(cpu::rdtsc());
                self.state.changed |= VcpuState::TSC_OFFSET;
            }
            PAT if x86::valid_pat(v) => {
                self.state.pat = v;
                self.state.changed |= VcpuState::PAT;
            }
            PAT => return false,
            MISC_ENABLE => match msr::misc_enable_write(self.state.misc_enable, v, host) {
                Some(m) => self.state.misc_enable = m,
                None => return false,
            },
            APIC_BASE => return self.set_apic_base(v, host),
            TSC_AUX => match msr::tsc_aux_write(v, host, caps) {
                Some(aux) => {
                    self.state.tsc_aux = aux;
                    self.state.changed |= VcpuState::TSC_AUX;
                }
                None => return false,
            },
            _ => match msr::address_msr_write(index, v, host_va_bits()) {
                Some(v) => return self.arch.set_msr(index, v),
                None => return false,
            },
        }
        true
    }
}

impl<B: Backend> Vcpu<B> {
    /// `KVM_SET_TSC_KHZ`: 0 means the host's frequency. Without TSC scaling
    /// only the host's (within KVM's 250 ppm) can be given; anything else
    /// is `EINVAL` (KVM refuses a lower one too, and emulates a higher one
    /// by catching up on every entry, which rkvm does not do).
    pub(super) fn set_tsc_khz(&self, arg: usize) -> Result<isize> {
        let host = cpu::tsc_khz();
        let khz = match arg as u32 {
            0 => host,
            k => k,
        };
        if host == 0 || !msr::tsc_khz_matches_host(khz, host) {
            return Err(EINVAL);
        }
        self.inner.lock().tsc_khz = khz;
        Ok(0)
    }

    /// `KVM_GET_MSRS`/`KVM_SET_MSRS`: processes entries until the first
    /// one that fails and returns how many succeeded, as KVM does.
    pub(super) fn msrs(&self, arg: usize, write: bool) -> Result<isize> {
        let hdr: KvmMsrsHeader = uaccess::read(arg)?;
        if hdr.nmsrs >= MAX_IO_MSRS {
            return Err(E2BIG);
        }
        let mut entries = uaccess::read_array::<KvmMsrEntry>(arg + 8, hdr.nmsrs as usize)?;
        let mut inner = self.inner.lock();
        let mut n = 0;
        for e in entries.iter_mut() {
            let ok = if write {
                inner.set_msr(e.index, e.data, true)
            } else {
                match inner.get_msr(e.index, true) {
                    Some(v) => {
                        e.data = v;
                        true
                    }
                    None => false,
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

/// `KVM_GET_MSR_INDEX_LIST` (system ioctl): writes the count back; `E2BIG`
/// if `nmsrs` is too small for the list, which then is not written.
pub(crate) fn msr_index_list(arg: usize) -> Result<isize> {
    let room: u32 = uaccess::read(arg)?;
    let caps = GuestCaps::from_entries(&guest_cpuid::supported()?);
    let mut list = KVec::new();
    for m in msr::saved(caps.rdtscp || caps.rdpid) {
        list.push(m, GFP_KERNEL)?;
    }
    for m in crate::kvmclock::MSRS {
        list.push(m, GFP_KERNEL)?;
    }
    uaccess::write(arg, &(list.len() as u32))?;
    if (room as usize) < list.len() {
        return Err(E2BIG);
    }
    uaccess::write_array(arg + 4, &list)?;
    Ok(0)
}
