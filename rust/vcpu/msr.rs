// SPDX-License-Identifier: GPL-2.0

//! MSRs: the guest's RDMSR/WRMSR and `KVM_GET/SET_MSRS`, under KVM's rules
//! (`core/src/msr/`), and the machine-check ioctls (`KVM_X86_SETUP_MCE`,
//! `KVM_X86_SET_MCE`, `KVM_X86_GET_MCE_CAP_SUPPORTED`). The MSRs KVM keeps
//! in `vcpu->arch` live in the generic state ([`VcpuState`] for those the
//! world switch needs, [`MsrState`] for the rest); the VMCB/VMCS holds the
//! segment bases, SYSCALL and SYSENTER MSRs, and the backend reads and
//! writes those.

use super::{host_va_bits, Inner, Vcpu};
use crate::{
    backend::{ArchVcpu, Backend, VcpuState},
    cpuid::GuestCaps,
    decode::Vendor,
    events::MC_VECTOR,
    guest_cpuid,
    msr::{
        self,
        mce::{self, Inject, Mce},
        mtrr::{self, Mtrrs},
        APIC_BASE, DE_CFG, EFER, FEATURE_CONTROL, K7_HWCR, MISC_ENABLE, MISC_FEATURES_ENABLES, PAT,
        PLATFORM_INFO, POWER_CTL, SMI_COUNT, TSC, TSC_ADJUST, TSC_AUX, UCODE_REV, VM_HSAVE_PA,
    },
    sys::{cpu, uaccess},
    uapi::{KvmMsrEntry, KvmMsrsHeader, KvmX86Mce},
    x86::{self, CR0_PG, CR4_MCE},
};
use kernel::prelude::*;

/// The MSR state KVM keeps in `vcpu->arch` that the world switch does not
/// need: machine checks, MTRRs and the emulated platform MSRs.
pub(super) struct MsrState {
    /// `IA32_MCG_*` and the banks.
    pub(super) mce: Mce,
    /// The MTRRs.
    pub(super) mtrr: Mtrrs,
    /// `IA32_TSC_ADJUST`.
    pub(super) tsc_adjust: u64,
    /// `MSR_K7_HWCR`.
    pub(super) hwcr: u64,
    /// `MSR_PLATFORM_INFO`.
    pub(super) platform_info: u64,
    /// `MSR_MISC_FEATURES_ENABLES`.
    pub(super) misc_features: u64,
    /// `IA32_BIOS_SIGN_ID`.
    pub(super) ucode_rev: u64,
    /// `MSR_SMI_COUNT` (no SMM: only the host changes it).
    pub(super) smi_count: u64,
    /// `MSR_IA32_POWER_CTL`.
    pub(super) power_ctl: u64,
    /// `IA32_FEATURE_CONTROL` (VT-x).
    pub(super) feature_control: u64,
    /// `MSR_VM_HSAVE_PA` (SVM; stored only, there is no nesting).
    pub(super) hsave_pa: u64,
    /// `MSR_AMD64_DE_CFG` (SVM).
    pub(super) de_cfg: u64,
}

impl MsrState {
    /// A new vCPU's values (`kvm_arch_vcpu_create` and the vendor's
    /// create/reset).
    pub(super) fn new(amd: bool) -> Self {
        Self {
            mce: Mce::new(),
            mtrr: Mtrrs::default(),
            tsc_adjust: 0,
            hwcr: 0,
            platform_info: msr::PLATFORM_INFO_CPUID_FAULT,
            misc_features: 0,
            ucode_rev: msr::ucode_rev_reset(amd),
            smi_count: 0,
            power_ctl: 0,
            feature_control: 0,
            hsave_pa: 0,
            de_cfg: 0,
        }
    }

    /// What INIT resets (`kvm_vcpu_reset(vcpu, true)`): the SMI count, and
    /// on SVM the microcode revision (`__svm_vcpu_reset`).
    pub(super) fn init(&mut self, amd: bool) {
        self.smi_count = 0;
        if amd {
            self.ucode_rev = msr::ucode_rev_reset(true);
        }
    }

    /// Whether CPUID faulting is on (`cpuid_fault_enabled`).
    pub(super) fn cpuid_faulting(&self) -> bool {
        self.misc_features & msr::MISC_FEATURES_CPUID_FAULT != 0
    }
}

/// Whether backend `B` is SVM (whose vendor MSRs differ from VT-x's).
fn svm<B: Backend>() -> bool {
    B::CPU == Vendor::Amd
}

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
                None => return self.get_emulated_msr(index, host),
            },
        })
    }

    /// The rest of [`Inner::get_msr`]: what `kvm_get_msr_common` and the
    /// vendor's `get_msr` emulate, then the VMCB/VMCS.
    fn get_emulated_msr(&self, index: u32, host: bool) -> Option<u64> {
        let m = &self.msrs;
        Some(match index {
            TSC_ADJUST => m.tsc_adjust,
            UCODE_REV => m.ucode_rev,
            SMI_COUNT => m.smi_count,
            POWER_CTL => m.power_ctl,
            // KVM_CAP_MSR_PLATFORM_INFO is not offered: the guest may read.
            PLATFORM_INFO => m.platform_info,
            MISC_FEATURES_ENABLES => m.misc_features,
            K7_HWCR => m.hwcr,
            // Outside SVM, KVM reads it as 0.
            VM_HSAVE_PA => m.hsave_pa,
            DE_CFG if svm::<B>() => m.de_cfg,
            FEATURE_CONTROL if !svm::<B>() => m.feature_control,
            mce::MCG_EXT_CTL if !svm::<B>() => {
                msr::mcg_ext_ctl_allowed(host, m.feature_control).then_some(m.mce.ext_ctl)?
            }
            i if Mce::owns(i) => m.mce.get(i, host)?,
            i if mtrr::owns(i) => m.mtrr.get(i)?,
            i => match msr::constant_read(i) {
                Some(v) => v,
                None => return self.arch.get_msr(index),
            },
        })
    }

    /// The rest of [`Inner::set_msr`], as [`Inner::get_emulated_msr`].
    fn set_emulated_msr(&mut self, index: u32, v: u64, host: bool) -> Option<bool> {
        let caps = &self.policy.caps;
        let m = &mut self.msrs;
        match index {
            TSC_ADJUST => {
                let (adj, delta) = msr::tsc_adjust_write(m.tsc_adjust, v, host, caps.tsc_adjust);
                m.tsc_adjust = adj;
                if delta != 0 {
                    self.state.tsc_offset = self.state.tsc_offset.wrapping_add(delta);
                    self.state.changed |= VcpuState::TSC_OFFSET;
                }
            }
            // The guest's microcode loads are ignored.
            UCODE_REV if host => m.ucode_rev = v,
            UCODE_REV => {}
            SMI_COUNT | PLATFORM_INFO if !host => return Some(false),
            SMI_COUNT => m.smi_count = v,
            PLATFORM_INFO => m.platform_info = v,
            POWER_CTL => m.power_ctl = v,
            MISC_FEATURES_ENABLES if msr::misc_features_valid(v, m.platform_info) => {
                m.misc_features = v
            }
            MISC_FEATURES_ENABLES => return Some(false),
            K7_HWCR => match msr::hwcr_write(v) {
                Some(h) => m.hwcr = h,
                None => return Some(false),
            },
            VM_HSAVE_PA if svm::<B>() => match msr::vm_hsave_pa_write(v, host, caps.maxphyaddr) {
                Some(pa) => m.hsave_pa = pa,
                None => return Some(false),
            },
            // Outside SVM, KVM drops the write.
            VM_HSAVE_PA => {}
            // Guest and host alike: only the bits the host offers.
            DE_CFG if svm::<B>() => {
                let host = msr::FeatureHost {
                    lfence_serializing: cpu::lfence_serializing(),
                    ..Default::default()
                };
                let offered = msr::feature_value(DE_CFG, true, &host).unwrap_or(0);
                if v & !offered != 0 {
                    return Some(false);
                }
                m.de_cfg = v;
            }
            FEATURE_CONTROL if !svm::<B>() => {
                let guest = msr::feature_control_guest_bits(caps.vmx, m.mce.cap);
                if !msr::feature_control_valid(v, m.feature_control, host, guest) {
                    return Some(false);
                }
                m.feature_control = v;
            }
            mce::MCG_EXT_CTL if !svm::<B>() => {
                if !msr::mcg_ext_ctl_allowed(host, m.feature_control)
                    || v & !mce::MCG_EXT_CTL_LMCE_EN != 0
                {
                    return Some(false);
                }
                m.mce.ext_ctl = v;
            }
            i if Mce::owns(i) => {
                let wr_en = caps.amd && m.hwcr & msr::HWCR_MC_STATUS_WR_EN != 0;
                return Some(m.mce.set(i, v, host, wr_en));
            }
            i if mtrr::owns(i) => return Some(m.mtrr.set(i, v, caps.maxphyaddr)),
            i if msr::write_ignored(i, v) => {}
            _ => return None,
        }
        Some(true)
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
            // synchronisation across vCPUs yet); a guest's also moves
            // TSC_ADJUST by as much (whatever its CPUID).
            TSC => {
                let offset = v.wrapping_sub(cpu::rdtsc());
                if !host {
                    let adj = offset.wrapping_sub(self.state.tsc_offset);
                    self.msrs.tsc_adjust = self.msrs.tsc_adjust.wrapping_add(adj);
                }
                self.state.tsc_offset = offset;
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
            _ => {
                if let Some(ok) = self.set_emulated_msr(index, v, host) {
                    return ok;
                }
                match msr::address_msr_write(index, v, host_va_bits()) {
                    Some(v) => return self.arch.set_msr(index, v),
                    None => return false,
                }
            }
        }
        true
    }

    /// Whether `KVM_SET_MSRS` may write `v` to `index`: once the vCPU has
    /// run, a feature MSR (of those rkvm has, `PLATFORM_INFO`) takes only
    /// its current value (`do_set_msr`, `kvm_is_immutable_feature_msr`).
    fn feature_msr_writable(&self, index: u32, v: u64) -> bool {
        !self.has_run || !msr::feature_immutable(index) || self.get_msr(index, true) == Some(v)
    }

    /// `KVM_X86_SET_MCE` on the model; what it asks of the vCPU goes
    /// through the event layer (#MC), the run loop (shutdown) or the APIC
    /// (CMCI).
    fn set_mce(&mut self, m: &KvmX86Mce) -> Result {
        let cr4_mce = self.arch.cr4() & CR4_MCE != 0;
        match self.msrs.mce.inject(m, cr4_mce).ok_or(EINVAL)? {
            Inject::Nothing => {}
            Inject::MachineCheck => self.queue_exception(MC_VECTOR, None),
            Inject::TripleFault => self.triple_fault = true,
            Inject::Cmci => self.apic_local_interrupt(crate::lapic::Lvt::Cmci),
        }
        Ok(())
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

    /// `KVM_X86_SETUP_MCE`: `EINVAL` for a bank count or capability KVM
    /// refuses; the LAPIC gains or loses LVT CMCI with `MCG_CMCI_P`.
    pub(super) fn setup_mce(&self, arg: usize) -> Result<isize> {
        let cap: u64 = uaccess::read(arg)?;
        let mut inner = self.inner.lock();
        if !inner.msrs.mce.setup(cap, !svm::<B>()) {
            return Err(EINVAL);
        }
        inner.apic_after_cpuid();
        Ok(0)
    }

    /// `KVM_X86_SET_MCE`: injects a machine-check error into one bank.
    pub(super) fn set_mce_ioctl(&self, arg: usize) -> Result<isize> {
        let m: KvmX86Mce = uaccess::read(arg)?;
        self.inner.lock().set_mce(&m)?;
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
                inner.feature_msr_writable(e.index, e.data) && inner.set_msr(e.index, e.data, true)
            } else {
                let v = inner.get_msr(e.index, true);
                // KVM zeroes the entry whose read fails, and copies it out.
                e.data = v.unwrap_or(0);
                v.is_some()
            };
            if !ok {
                break;
            }
            n += 1;
        }
        drop(inner);
        if !write {
            uaccess::write_array(arg + 8, &entries[..entries.len().min(n + 1)])?;
        }
        Ok(n as isize)
    }
}

/// Whether the loaded backend is SVM (for the system ioctls).
fn host_svm() -> bool {
    crate::loaded_cpu() == Some(Vendor::Amd)
}

/// The host facts behind the feature MSRs' values.
fn feature_host() -> msr::FeatureHost {
    msr::FeatureHost {
        // KVM ignores a failed read too (and then offers 0).
        ucode_rev: cpu::rdmsr_safe(UCODE_REV).unwrap_or(0),
        lfence_serializing: cpu::lfence_serializing(),
    }
}

/// What `KVM_GET_MSR_INDEX_LIST` lists (see [`msr::saved`]), with the
/// kvmclock MSRs.
fn saved_msrs() -> Result<KVec<u32>> {
    let caps = GuestCaps::from_entries(&guest_cpuid::supported()?);
    let mut list = KVec::new();
    let saved = msr::saved(caps.rdtscp || caps.rdpid, host_svm());
    for m in Iterator::chain(saved, crate::kvmclock::MSRS) {
        list.push(m, GFP_KERNEL)?;
    }
    Ok(list)
}

/// The `struct kvm_msr_list` protocol: writes the count back; `E2BIG` if
/// `nmsrs` is too small for the list, which then is not written.
fn write_msr_list(arg: usize, list: &[u32]) -> Result<isize> {
    let room: u32 = uaccess::read(arg)?;
    uaccess::write(arg, &(list.len() as u32))?;
    if (room as usize) < list.len() {
        return Err(E2BIG);
    }
    uaccess::write_array(arg + 4, list)?;
    Ok(0)
}

/// `KVM_GET_MSR_INDEX_LIST` (system ioctl).
pub(crate) fn msr_index_list(arg: usize) -> Result<isize> {
    write_msr_list(arg, &saved_msrs()?)
}

/// `KVM_GET_MSR_FEATURE_INDEX_LIST` (system ioctl): [`msr::features`].
pub(crate) fn feature_msr_index_list(arg: usize) -> Result<isize> {
    let mut list = KVec::new();
    for m in msr::features(host_svm()) {
        list.push(m, GFP_KERNEL)?;
    }
    write_msr_list(arg, &list)
}

/// `KVM_GET_MSRS` on the system fd (`kvm_get_feature_msrs`): the feature
/// MSRs' values, entries in order until the first that fails, which is
/// zeroed; the count read is returned. As KVM, an MSR of
/// `KVM_GET_MSR_INDEX_LIST` that is no feature MSR reads as 0.
pub(crate) fn get_feature_msrs(arg: usize) -> Result<isize> {
    let hdr: KvmMsrsHeader = uaccess::read(arg)?;
    if hdr.nmsrs >= MAX_IO_MSRS {
        return Err(E2BIG);
    }
    let mut entries = uaccess::read_array::<KvmMsrEntry>(arg + 8, hdr.nmsrs as usize)?;
    let (svm, host, saved) = (host_svm(), feature_host(), saved_msrs()?);
    let mut n = 0;
    for e in entries.iter_mut() {
        let v = msr::feature_value(e.index, svm, &host)
            .or_else(|| saved.contains(&e.index).then_some(0));
        e.data = v.unwrap_or(0);
        if v.is_none() {
            break;
        }
        n += 1;
    }
    uaccess::write_array(arg + 8, &entries[..entries.len().min(n + 1)])?;
    Ok(n as isize)
}

/// `KVM_X86_GET_MCE_CAP_SUPPORTED` (system ioctl): the `MCG_CAP` bits
/// `KVM_X86_SETUP_MCE` accepts on this host's backend.
pub(crate) fn mce_cap_supported(arg: usize) -> Result<isize> {
    let vmx = crate::loaded_cpu() == Some(Vendor::Intel);
    uaccess::write(arg, &mce::supported_cap(vmx))?;
    Ok(0)
}
