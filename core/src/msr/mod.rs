//! Model-specific registers: their numbers, and KVM's rules for the ones a
//! vCPU keeps outside the VMCB/VMCS (what a write stores, when it is #GP),
//! for a guest `WRMSR` and for a host `KVM_SET_MSRS` (`host` true), which
//! skips some checks as KVM's `host_initiated` writes do. Machine checks
//! are `mce.rs`, the MTRRs `mtrr.rs`.

use super::cpuid::GuestCaps;
use super::x86::{EFER_LMA, EFER_LME};

pub mod mce;
pub mod mtrr;

/// `IA32_TIME_STAMP_COUNTER`.
pub const TSC: u32 = 0x10;
/// `IA32_APIC_BASE`.
pub const APIC_BASE: u32 = 0x1b;
/// `MSR_SMI_COUNT`: SMIs taken (read-only for the guest).
pub const SMI_COUNT: u32 = 0x34;
/// `IA32_FEATURE_CONTROL` (VT-x only in KVM).
pub const FEATURE_CONTROL: u32 = 0x3a;
/// `IA32_TSC_ADJUST`.
pub const TSC_ADJUST: u32 = 0x3b;
/// `IA32_BIOS_UPDT_TRIG`: microcode loads, ignored.
pub const UCODE_WRITE: u32 = 0x79;
/// `IA32_BIOS_SIGN_ID`: the microcode revision.
pub const UCODE_REV: u32 = 0x8b;
/// `MSR_PLATFORM_INFO` (read-only for the guest).
pub const PLATFORM_INFO: u32 = 0xce;
/// `MSR_MISC_FEATURES_ENABLES`: CPUID faulting.
pub const MISC_FEATURES_ENABLES: u32 = 0x140;
/// `MSR_IA32_POWER_CTL`: stored, no effect.
pub const POWER_CTL: u32 = 0x1fc;
/// `IA32_SYSENTER_CS`.
pub const SYSENTER_CS: u32 = 0x174;
/// `IA32_SYSENTER_ESP`.
pub const SYSENTER_ESP: u32 = 0x175;
/// `IA32_SYSENTER_EIP`.
pub const SYSENTER_EIP: u32 = 0x176;
/// `IA32_MISC_ENABLE`.
pub const MISC_ENABLE: u32 = 0x1a0;
/// `IA32_PAT`.
pub const PAT: u32 = 0x277;
/// `IA32_TSC_DEADLINE`: the LAPIC timer's deadline in TSC-deadline mode.
pub const TSC_DEADLINE: u32 = 0x6e0;
/// First x2APIC register MSR (`APIC_BASE_MSR`): MSR `0x800 + (offset >> 4)`
/// is the register at xAPIC offset `offset`.
pub const X2APIC_FIRST: u32 = 0x800;
/// Last MSR of the x2APIC range KVM routes to the LAPIC.
pub const X2APIC_LAST: u32 = 0x8ff;
/// `IA32_EFER`.
pub const EFER: u32 = 0xc000_0080;
/// `STAR`: SYSCALL/SYSRET segments.
pub const STAR: u32 = 0xc000_0081;
/// `LSTAR`: 64-bit SYSCALL target.
pub const LSTAR: u32 = 0xc000_0082;
/// `CSTAR`: compatibility-mode SYSCALL target.
pub const CSTAR: u32 = 0xc000_0083;
/// `SFMASK`: SYSCALL RFLAGS mask.
pub const SFMASK: u32 = 0xc000_0084;
/// `FS.base`.
pub const FS_BASE: u32 = 0xc000_0100;
/// `GS.base`.
pub const GS_BASE: u32 = 0xc000_0101;
/// `KERNEL_GS_BASE`: what SWAPGS exchanges with GS.base.
pub const KERNEL_GS_BASE: u32 = 0xc000_0102;
/// `TSC_AUX`: what RDTSCP and RDPID return in ECX / the register.
pub const TSC_AUX: u32 = 0xc000_0103;
/// `MSR_K7_HWCR`.
pub const K7_HWCR: u32 = 0xc001_0015;
/// `MSR_VM_HSAVE_PA`: the host save area of nested SVM (AMD only).
pub const VM_HSAVE_PA: u32 = 0xc001_0117;
/// `MSR_AMD64_DE_CFG`: decode configuration (SVM only in KVM).
pub const DE_CFG: u32 = 0xc001_1029;

/// `DE_CFG.LFENCE_SERIALIZE`: LFENCE is dispatch-serialising.
pub const DE_CFG_LFENCE_SERIALIZE: u64 = 1 << 1;

/// `MSR_PLATFORM_INFO.CPUID_FAULT`: CPUID faulting is available (KVM's
/// value at vCPU creation).
pub const PLATFORM_INFO_CPUID_FAULT: u64 = 1 << 31;
/// `MSR_MISC_FEATURES_ENABLES.CPUID_FAULT`: CPUID at CPL > 0 is #GP.
pub const MISC_FEATURES_CPUID_FAULT: u64 = 1;

/// `IA32_FEATURE_CONTROL.LOCK`.
pub const FEAT_CTL_LOCKED: u64 = 1 << 0;
/// `IA32_FEATURE_CONTROL` VMX inside and outside SMX.
pub const FEAT_CTL_VMX: u64 = (1 << 1) | (1 << 2);
/// `IA32_FEATURE_CONTROL` SGX launch control and SGX enable.
pub const FEAT_CTL_SGX: u64 = (1 << 17) | (1 << 18);
/// `IA32_FEATURE_CONTROL.LMCE_ENABLED`.
pub const FEAT_CTL_LMCE: u64 = 1 << 20;
/// The bits a host write may set (`KVM_SUPPORTED_FEATURE_CONTROL`).
pub const FEAT_CTL_SUPPORTED: u64 = FEAT_CTL_LOCKED | FEAT_CTL_VMX | FEAT_CTL_SGX | FEAT_CTL_LMCE;

/// `HWCR.McStatusWrEn`: the guest may write non-zero `MCi_STATUS`.
pub const HWCR_MC_STATUS_WR_EN: u64 = 1 << 18;
/// `HWCR.TscFreqSel`.
pub const HWCR_TSC_FREQ_SEL: u64 = 1 << 24;

/// The microcode revision a new vCPU reports (`microcode_version`): SVM's
/// `__svm_vcpu_reset` and VMX's `vmx_vcpu_create` values.
pub const fn ucode_rev_reset(amd: bool) -> u64 {
    if amd {
        0x0100_0065
    } else {
        0x1_0000_0000
    }
}

/// What a write of `v` to `MSR_K7_HWCR` stores, or `None` for #GP
/// (`kvm_set_msr_common`, guest and host alike): the flush-filter, IGNNE
/// and TLB-cache-disable bits are dropped; only McStatusWrEn and
/// TscFreqSel may be set.
pub fn hwcr_write(v: u64) -> Option<u64> {
    let v = v & !(0x40 | 0x100 | 0x8);
    (v & !(HWCR_MC_STATUS_WR_EN | HWCR_TSC_FREQ_SEL) == 0).then_some(v)
}

/// Whether `v` may be written to `MSR_MISC_FEATURES_ENABLES` (guest and
/// host alike): only CPUID faulting, and only if `platform_info` offers it.
pub fn misc_features_valid(v: u64, platform_info: u64) -> bool {
    v & !MISC_FEATURES_CPUID_FAULT == 0
        && (v & MISC_FEATURES_CPUID_FAULT == 0 || platform_info & PLATFORM_INFO_CPUID_FAULT != 0)
}

/// Whether `v` may be written to `IA32_FEATURE_CONTROL` (now `cur`) on
/// VT-x (`is_vmx_feature_control_msr_valid`): the guest not once it is
/// locked, and only `guest_valid` bits; the host any supported bit.
pub fn feature_control_valid(v: u64, cur: u64, host: bool, guest_valid: u64) -> bool {
    if host {
        return v & !FEAT_CTL_SUPPORTED == 0;
    }
    cur & FEAT_CTL_LOCKED == 0 && v & !guest_valid == 0
}

/// The `IA32_FEATURE_CONTROL` bits a guest may set
/// (`msr_ia32_feature_control_valid_bits`): LOCK, VMX with VMX in its
/// CPUID, LMCE with `MCG_LMCE_P` in its `MCG_CAP`.
pub fn feature_control_guest_bits(vmx: bool, mcg_cap: u64) -> u64 {
    let mut b = FEAT_CTL_LOCKED;
    if vmx {
        b |= FEAT_CTL_VMX;
    }
    if mcg_cap & mce::MCG_LMCE_P != 0 {
        b |= FEAT_CTL_LMCE;
    }
    b
}

/// Whether `IA32_MCG_EXT_CTL` may be accessed (VT-x): the host always, the
/// guest once `IA32_FEATURE_CONTROL` enables LMCE.
pub fn mcg_ext_ctl_allowed(host: bool, feature_control: u64) -> bool {
    host || feature_control & FEAT_CTL_LMCE != 0
}

/// What a write of `v` to `MSR_VM_HSAVE_PA` stores, or `None` for #GP
/// (`svm_set_msr`): the guest must give a page-aligned address within its
/// MAXPHYADDR; the host anything (old kernels never checked). The page
/// offset is dropped.
pub fn vm_hsave_pa_write(v: u64, host: bool, maxphyaddr: u8) -> Option<u64> {
    let legal = v & 0xfff == 0 && v.checked_shr(u32::from(maxphyaddr)).unwrap_or(0) == 0;
    (host || legal).then_some(v & !0xfff)
}

/// A write of `v` to `IA32_TSC_ADJUST` (now `cur`): the new value, and
/// what to add to the TSC offset (`kvm_set_msr_common`). Without
/// TSC_ADJUST in the guest's CPUID the write is dropped (no #GP); a host
/// write sets the value only, a guest write moves the TSC by the change.
pub fn tsc_adjust_write(cur: u64, v: u64, host: bool, cpuid: bool) -> (u64, u64) {
    match (cpuid, host) {
        (false, _) => (cur, 0),
        (true, true) => (v, 0),
        (true, false) => (v, v.wrapping_sub(cur)),
    }
}

/// MSRs KVM reads as a constant whatever the guest did (Intel platform and
/// power MSRs, AMD northbridge and configuration MSRs, the RAPL counters),
/// on either vendor.
pub fn constant_read(msr: u32) -> Option<u64> {
    Some(match msr {
        // PLATFORM_ID, EBL_CR_POWERON, PERF_CTL, the RAPL MSRs.
        0x17 | 0x2a | 0x199 | 0x606 | 0x611 | 0x619 | 0x639 | 0x641 => 0,
        // SYSCFG, NB_CFG, INT_PENDING_MSG, MMIO_CONF_BASE, TSEG_ADDR/MASK,
        // DC_CFG, TW_CFG, BU_CFG2, EX_CFG.
        0xc001_0010 | 0xc001_001f | 0xc001_0055 | 0xc001_0058 | 0xc001_0112 | 0xc001_0113 => 0,
        0xc001_1022 | 0xc001_1023 | 0xc001_102a | 0xc001_102c => 0,
        // The LBR MSRs without LBR virtualisation.
        0x1db..=0x1de => 0,
        // FSB frequency: 3.
        0xcd => 3,
        // EBC_FREQUENCY_ID: core/bus ratio 1.
        0x2c => 1 << 24,
        // PERF_STATUS: 1000 per tick, multiplier 4.
        0x198 => 1000 | (4 << 40),
        // BBL_CR_CTL3: a plausible L2 configuration.
        0x11e => 0xbe70_2111,
        // K7_CLK_CTL: the ramp-up count K7 guests expect.
        0xc001_001b => 0x2000_0000,
        _ => return None,
    })
}

/// MSRs whose writes KVM drops without #GP (microcode loads, AMD
/// configuration MSRs, legacy K7/P6 controls); `MMIO_CONF_BASE` takes 0
/// only.
pub fn write_ignored(msr: u32, v: u64) -> bool {
    match msr {
        // UCODE_WRITE, BBL_CR_CTL3, NB_CFG, K7_CLK_CTL, PATCH_LOADER,
        // DC_CFG, TW_CFG, BU_CFG2, EX_CFG.
        UCODE_WRITE | 0x11e | 0xc001_001f | 0xc001_001b | 0xc001_0020 => true,
        0xc001_1022 | 0xc001_1023 | 0xc001_102a | 0xc001_102c => true,
        0xc001_0058 => v == 0,
        _ => false,
    }
}

/// KVM's `tsc_tolerance_ppm`: a guest TSC frequency this close to the
/// host's needs no scaling.
pub const TSC_TOLERANCE_PPM: u64 = 250;

/// Whether a guest TSC of `khz` can run at the host's `host_khz` without
/// TSC scaling (KVM's `kvm_set_tsc_khz` thresholds).
pub fn tsc_khz_matches_host(khz: u32, host_khz: u32) -> bool {
    let h = u64::from(host_khz);
    let lo = h * (1_000_000 - TSC_TOLERANCE_PPM) / 1_000_000;
    let hi = h * (1_000_000 + TSC_TOLERANCE_PPM) / 1_000_000;
    (lo..=hi).contains(&u64::from(khz))
}

/// What `KVM_GET_MSR_INDEX_LIST` lists: the MSRs a VMM saves and restores
/// with `KVM_GET/SET_MSRS` (EFER, APIC_BASE and the FS/GS bases travel in
/// `kvm_sregs`), in KVM's order (`msrs_to_save_base`, then
/// `emulated_msrs_all`); `TSC_AUX` only where a guest may have RDTSCP or
/// RDPID. `svm`: the vendor MSRs of SVM (`VM_HSAVE_PA`), else VT-x's
/// (`IA32_FEATURE_CONTROL`, `IA32_MCG_EXT_CTL`). KVM lists neither the
/// MTRRs nor the MCE banks: VMMs derive those from CPUID and `MCG_CAP`.
pub fn saved(tsc_aux: bool, svm: bool) -> impl Iterator<Item = u32> {
    const BASE: [u32; 10] = [
        SYSENTER_CS,
        SYSENTER_ESP,
        SYSENTER_EIP,
        STAR,
        CSTAR,
        KERNEL_GS_BASE,
        SFMASK,
        LSTAR,
        TSC,
        PAT,
    ];
    const EMULATED: [u32; 5] = [
        TSC_ADJUST,
        TSC_DEADLINE,
        MISC_ENABLE,
        mce::MCG_STATUS,
        mce::MCG_CTL,
    ];
    const EMULATED_LATE: [u32; 6] = [
        SMI_COUNT,
        PLATFORM_INFO,
        MISC_FEATURES_ENABLES,
        POWER_CTL,
        UCODE_REV,
        K7_HWCR,
    ];
    BASE.into_iter()
        .chain(svm.then_some(VM_HSAVE_PA))
        .chain((!svm).then_some(FEATURE_CONTROL))
        .chain(tsc_aux.then_some(TSC_AUX))
        .chain(EMULATED)
        .chain((!svm).then_some(mce::MCG_EXT_CTL))
        .chain(EMULATED_LATE)
}

/// What `KVM_GET_MSR_FEATURE_INDEX_LIST` lists: the MSRs that describe
/// what a vCPU may have rather than hold its state, in KVM's order
/// (`msr_based_features_all_except_vmx`). Of KVM's list rkvm has
/// `DE_CFG` (SVM only, as KVM's vendor hook), the microcode revision and
/// `PLATFORM_INFO`; it lacks `ARCH_CAPABILITIES` and `PERF_CAPABILITIES`
/// (neither is virtualised) and the VMX capability MSRs (no nesting).
pub fn features(svm: bool) -> impl Iterator<Item = u32> {
    svm.then_some(DE_CFG)
        .into_iter()
        .chain([UCODE_REV, PLATFORM_INFO])
}

/// The host facts a feature MSR's value comes from.
#[derive(Clone, Copy, Debug, Default)]
pub struct FeatureHost {
    /// The host CPU's microcode revision (`IA32_BIOS_SIGN_ID`).
    pub ucode_rev: u64,
    /// The host kernel made LFENCE serialising (`X86_FEATURE_LFENCE_RDTSC`).
    pub lfence_serializing: bool,
}

/// A feature MSR's value as the system `KVM_GET_MSRS` reads it
/// (`kvm_get_feature_msr`), or `None` if `msr` is not one of
/// [`features`]`(svm)`. For `DE_CFG` it is also the set of bits a write
/// may set.
pub fn feature_value(msr: u32, svm: bool, host: &FeatureHost) -> Option<u64> {
    Some(match msr {
        DE_CFG if svm => {
            if host.lfence_serializing {
                DE_CFG_LFENCE_SERIALIZE
            } else {
                0
            }
        }
        UCODE_REV => host.ucode_rev,
        PLATFORM_INFO => PLATFORM_INFO_CPUID_FAULT,
        _ => return None,
    })
}

/// Whether `msr` is a feature MSR that a `KVM_SET_MSRS` may not change
/// once the vCPU has run (`kvm_is_immutable_feature_msr`): all of
/// [`features`] but the microcode revision, which follows microcode loads.
pub fn feature_immutable(msr: u32) -> bool {
    matches!(msr, DE_CFG | PLATFORM_INFO)
}

/// `IA32_MISC_ENABLE.EMON`: performance monitoring available (read-only
/// for the guest: its writes are ignored).
pub const MISC_ENABLE_EMON: u64 = 1 << 7;
/// `IA32_MISC_ENABLE.BTS_UNAVAIL` (the guest may not change it).
pub const MISC_ENABLE_BTS_UNAVAIL: u64 = 1 << 11;
/// `IA32_MISC_ENABLE.PEBS_UNAVAIL` (the guest may not change it).
pub const MISC_ENABLE_PEBS_UNAVAIL: u64 = 1 << 12;

/// XCR0.X87: always set.
pub const XFEATURE_FP: u64 = 1 << 0;
/// XCR0.SSE.
pub const XFEATURE_SSE: u64 = 1 << 1;
/// XCR0.AVX (YMM upper halves).
pub const XFEATURE_YMM: u64 = 1 << 2;
/// XCR0.BNDREGS and XCR0.BNDCSR (MPX): both or neither.
pub const XFEATURE_BNDREGS: u64 = 1 << 3;
/// See [`XFEATURE_BNDREGS`].
pub const XFEATURE_BNDCSR: u64 = 1 << 4;
/// XCR0 opmask, ZMM_Hi256 and Hi16_ZMM (AVX-512): all or none.
pub const XFEATURE_AVX512: u64 = 0x7 << 5;
/// XCR0 XTILECFG and XTILEDATA (AMX): both or neither.
pub const XFEATURE_XTILE: u64 = 0x3 << 17;

/// What a write of `new` to `IA32_MISC_ENABLE` (now `old`) stores, or
/// `None` for #GP (`kvm_set_msr_common` with KVM's default quirks): the
/// guest may not change BTS_UNAVAIL or PEBS_UNAVAIL, and its writes to
/// EMON are ignored; the host may write anything.
pub fn misc_enable_write(old: u64, new: u64, host: bool) -> Option<u64> {
    if host {
        return Some(new);
    }
    let ro = MISC_ENABLE_BTS_UNAVAIL | MISC_ENABLE_PEBS_UNAVAIL;
    if (old ^ new) & ro != 0 {
        return None;
    }
    Some((new & !MISC_ENABLE_EMON) | (old & MISC_ENABLE_EMON))
}

/// Whether a guest without RDTSCP and RDPID may still access `TSC_AUX`
/// (the host always may).
fn tsc_aux_allowed(host: bool, caps: &GuestCaps) -> bool {
    host || caps.rdtscp || caps.rdpid
}

/// Whether `TSC_AUX` may be read (`kvm_get_msr_common`).
pub fn tsc_aux_readable(host: bool, caps: &GuestCaps) -> bool {
    tsc_aux_allowed(host, caps)
}

/// What a write of `v` to `TSC_AUX` stores, or `None` for #GP
/// (`__kvm_set_msr`): bits 63:32 are reserved for an Intel-compatible
/// guest and dropped for an AMD one.
pub fn tsc_aux_write(v: u64, host: bool, caps: &GuestCaps) -> Option<u64> {
    if !tsc_aux_allowed(host, caps) || (!caps.amd && v >> 32 != 0) {
        return None;
    }
    Some(v & 0xffff_ffff)
}

/// Whether `v` is canonical for `va_bits` bits of virtual address.
pub fn is_canonical(v: u64, va_bits: u32) -> bool {
    canonical(v, va_bits) == v
}

/// `v` sign-extended from bit `va_bits - 1`.
fn canonical(v: u64, va_bits: u32) -> u64 {
    let shift = 64 - va_bits;
    (((v << shift) as i64) >> shift) as u64
}

/// What a write of `v` to an address-holding MSR stores, or `None` for #GP
/// (`__kvm_set_msr`, for guest and host writes alike): FS/GS base,
/// KERNEL_GS_BASE, LSTAR and CSTAR must be canonical for the host's
/// virtual-address width `va_bits` (48, or 57 with 5-level paging);
/// SYSENTER_ESP/EIP are made canonical (AMD ignores their top half).
/// Other MSRs store `v` as it is.
pub fn address_msr_write(msr: u32, v: u64, va_bits: u32) -> Option<u64> {
    match msr {
        FS_BASE | GS_BASE | KERNEL_GS_BASE | LSTAR | CSTAR => is_canonical(v, va_bits).then_some(v),
        SYSENTER_ESP | SYSENTER_EIP => Some(canonical(v, va_bits)),
        _ => Some(v),
    }
}

/// What a write of `new` to EFER (now `cur`) stores, or `None` for #GP
/// (`set_efer`): no bit outside `supported` (the EFER bits KVM supports);
/// for a guest write also each feature bit's CPUID and no change of LME
/// while paging is on. LMA always stays as it is: the CPU sets it.
pub fn efer_write(
    new: u64,
    cur: u64,
    paging: bool,
    host: bool,
    caps: &GuestCaps,
    supported: u64,
) -> Option<u64> {
    if new & !supported != 0 {
        return None;
    }
    if !host {
        if !super::x86::efer_allowed_by_caps(new, caps) {
            return None;
        }
        if paging && (new ^ cur) & EFER_LME != 0 {
            return None;
        }
    }
    Some((new & !EFER_LMA) | (cur & EFER_LMA))
}

/// Whether XSETBV may set XCR `index` to `xcr0` (`__kvm_set_xcr`): only
/// XCR0; x87 always on; AVX needs SSE; nothing the guest's CPUID does not
/// allow (`guest_supported`); the MPX, AVX-512 and AMX groups whole.
pub fn xcr0_valid(index: u32, xcr0: u64, guest_supported: u64) -> bool {
    if index != 0 || xcr0 & XFEATURE_FP == 0 {
        return false;
    }
    if xcr0 & XFEATURE_YMM != 0 && xcr0 & XFEATURE_SSE == 0 {
        return false;
    }
    if xcr0 & !(guest_supported | XFEATURE_FP) != 0 {
        return false;
    }
    if (xcr0 & XFEATURE_BNDREGS == 0) != (xcr0 & XFEATURE_BNDCSR == 0) {
        return false;
    }
    if xcr0 & XFEATURE_AVX512 != 0
        && (xcr0 & XFEATURE_YMM == 0 || xcr0 & XFEATURE_AVX512 != XFEATURE_AVX512)
    {
        return false;
    }
    !(xcr0 & XFEATURE_XTILE != 0 && xcr0 & XFEATURE_XTILE != XFEATURE_XTILE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::x86::{EFER_NX, EFER_SCE};

    #[test]
    fn feature_list_is_kvms_order_with_de_cfg_on_svm_only() {
        assert!(features(true).eq([DE_CFG, UCODE_REV, PLATFORM_INFO]));
        assert!(features(false).eq([UCODE_REV, PLATFORM_INFO]));
    }

    #[test]
    fn feature_values_follow_the_host() {
        let host = FeatureHost {
            ucode_rev: 0x1234_0000_0000,
            lfence_serializing: true,
        };
        assert_eq!(
            feature_value(UCODE_REV, true, &host),
            Some(0x1234_0000_0000)
        );
        assert_eq!(
            feature_value(DE_CFG, true, &host),
            Some(DE_CFG_LFENCE_SERIALIZE)
        );
        assert_eq!(feature_value(DE_CFG, false, &host), None);
        let plain = FeatureHost::default();
        assert_eq!(feature_value(DE_CFG, true, &plain), Some(0));
        assert_eq!(
            feature_value(PLATFORM_INFO, false, &plain),
            Some(PLATFORM_INFO_CPUID_FAULT)
        );
        // Every listed MSR has a value; nothing else does.
        for svm in [false, true] {
            assert!(features(svm).all(|m| feature_value(m, svm, &plain).is_some()));
        }
        assert_eq!(feature_value(EFER, true, &plain), None);
        assert!(feature_immutable(PLATFORM_INFO) && feature_immutable(DE_CFG));
        assert!(!feature_immutable(UCODE_REV));
    }

    #[test]
    fn misc_enable_guest_cannot_change_pmu_bits() {
        let reset = MISC_ENABLE_BTS_UNAVAIL | MISC_ENABLE_PEBS_UNAVAIL;
        assert_eq!(misc_enable_write(reset, 0, false), None);
        assert_eq!(misc_enable_write(reset, reset | 1, false), Some(reset | 1));
        // EMON writes are dropped, not refused.
        assert_eq!(
            misc_enable_write(reset, reset | MISC_ENABLE_EMON, false),
            Some(reset)
        );
        assert_eq!(misc_enable_write(reset, 0, true), Some(0));
    }

    #[test]
    fn tsc_aux_needs_rdtscp_or_rdpid_for_the_guest() {
        let none = GuestCaps::default();
        assert_eq!(tsc_aux_write(5, false, &none), None);
        assert!(!tsc_aux_readable(false, &none));
        assert_eq!(tsc_aux_write(5, true, &none), Some(5));
        let rdpid = GuestCaps {
            rdpid: true,
            ..Default::default()
        };
        assert_eq!(tsc_aux_write(5, false, &rdpid), Some(5));
    }

    #[test]
    fn tsc_aux_high_bits_are_reserved_on_intel_dropped_on_amd() {
        let intel = GuestCaps {
            rdtscp: true,
            ..Default::default()
        };
        assert_eq!(tsc_aux_write(1 << 32, false, &intel), None);
        let amd = GuestCaps { amd: true, ..intel };
        assert_eq!(tsc_aux_write((1 << 32) | 7, false, &amd), Some(7));
    }

    #[test]
    fn address_msrs_are_checked_or_made_canonical() {
        let nc = 0x0000_8000_0000_0000;
        assert_eq!(address_msr_write(LSTAR, nc, 48), None);
        assert_eq!(address_msr_write(LSTAR, nc, 57), Some(nc));
        assert_eq!(
            address_msr_write(SYSENTER_EIP, nc, 48),
            Some(0xffff_8000_0000_0000)
        );
        assert_eq!(
            address_msr_write(STAR, u64::MAX - 1, 48),
            Some(u64::MAX - 1)
        );
    }

    #[test]
    fn efer_lme_cannot_change_while_paging_for_the_guest() {
        let caps = GuestCaps {
            lm: true,
            nx: true,
            ..Default::default()
        };
        let sup = EFER_SCE | EFER_LME | EFER_LMA | EFER_NX;
        assert_eq!(efer_write(EFER_LME, 0, true, false, &caps, sup), None);
        assert_eq!(
            efer_write(EFER_LME, 0, true, true, &caps, sup),
            Some(EFER_LME)
        );
        assert_eq!(
            efer_write(EFER_LME, 0, false, false, &caps, sup),
            Some(EFER_LME)
        );
        // Reserved bits are refused for both; LMA is the CPU's.
        assert_eq!(efer_write(1 << 20, 0, false, true, &caps, sup), None);
        assert_eq!(
            efer_write(EFER_LME, EFER_LME | EFER_LMA, true, false, &caps, sup),
            Some(EFER_LME | EFER_LMA)
        );
        // A feature bit needs its CPUID for the guest only.
        let no_nx = GuestCaps {
            lm: true,
            ..Default::default()
        };
        assert_eq!(efer_write(EFER_NX, 0, false, false, &no_nx, sup), None);
        assert_eq!(
            efer_write(EFER_NX, 0, false, true, &no_nx, sup),
            Some(EFER_NX)
        );
    }

    #[test]
    fn tsc_khz_tolerance_is_250_ppm() {
        assert!(tsc_khz_matches_host(2_000_000, 2_000_000));
        assert!(tsc_khz_matches_host(2_000_500, 2_000_000));
        assert!(tsc_khz_matches_host(1_999_500, 2_000_000));
        assert!(!tsc_khz_matches_host(2_000_501, 2_000_000));
        assert!(!tsc_khz_matches_host(1_999_499, 2_000_000));
        assert!(!tsc_khz_matches_host(1_000_000, 2_000_000));
        assert!(tsc_khz_matches_host(0, 0));
        assert!(tsc_khz_matches_host(u32::MAX, u32::MAX));
    }

    #[test]
    fn saved_lists_tsc_aux_only_when_asked() {
        assert_eq!(saved(false, true).count(), 22);
        assert_eq!(saved(false, false).count(), 23);
        assert!(!saved(false, true).any(|m| m == TSC_AUX));
        assert_eq!(saved(true, true).filter(|&m| m == TSC_AUX).count(), 1);
        assert!(!saved(true, true).any(|m| m == EFER || m == APIC_BASE || m == FS_BASE));
    }

    #[test]
    fn saved_lists_each_vendors_msrs() {
        let has = |svm, m| saved(true, svm).any(|x| x == m);
        assert!(has(true, VM_HSAVE_PA) && !has(false, VM_HSAVE_PA));
        assert!(has(false, FEATURE_CONTROL) && !has(true, FEATURE_CONTROL));
        assert!(has(false, mce::MCG_EXT_CTL) && !has(true, mce::MCG_EXT_CTL));
        // No duplicates.
        for svm in [false, true] {
            for m in saved(true, svm) {
                assert_eq!(saved(true, svm).filter(|&x| x == m).count(), 1);
            }
        }
    }

    #[test]
    fn hwcr_accepts_kvms_bits_only() {
        assert_eq!(hwcr_write(0), Some(0));
        assert_eq!(
            hwcr_write(HWCR_MC_STATUS_WR_EN | 0x148),
            Some(HWCR_MC_STATUS_WR_EN)
        );
        assert_eq!(hwcr_write(HWCR_TSC_FREQ_SEL), Some(HWCR_TSC_FREQ_SEL));
        assert_eq!(hwcr_write(1), None);
        assert_eq!(hwcr_write(1 << 35), None);
    }

    #[test]
    fn cpuid_faulting_needs_platform_info() {
        assert!(misc_features_valid(0, 0));
        assert!(!misc_features_valid(1, 0));
        assert!(misc_features_valid(1, PLATFORM_INFO_CPUID_FAULT));
        assert!(!misc_features_valid(2, PLATFORM_INFO_CPUID_FAULT));
    }

    #[test]
    fn feature_control_lock_and_bits() {
        let g = feature_control_guest_bits(false, 0);
        assert_eq!(g, FEAT_CTL_LOCKED);
        assert!(feature_control_valid(FEAT_CTL_LOCKED, 0, false, g));
        assert!(!feature_control_valid(
            FEAT_CTL_LOCKED | FEAT_CTL_LMCE,
            0,
            false,
            g
        ));
        assert!(!feature_control_valid(0, FEAT_CTL_LOCKED, false, g));
        assert!(feature_control_valid(
            FEAT_CTL_SUPPORTED,
            FEAT_CTL_LOCKED,
            true,
            g
        ));
        assert!(!feature_control_valid(1 << 3, 0, true, g));
        let l = feature_control_guest_bits(true, mce::MCG_LMCE_P);
        assert_eq!(l, FEAT_CTL_LOCKED | FEAT_CTL_VMX | FEAT_CTL_LMCE);
        assert!(!mcg_ext_ctl_allowed(false, FEAT_CTL_LOCKED));
        assert!(mcg_ext_ctl_allowed(false, FEAT_CTL_LMCE));
        assert!(mcg_ext_ctl_allowed(true, 0));
    }

    #[test]
    fn vm_hsave_pa_checks_guest_writes_only() {
        assert_eq!(vm_hsave_pa_write(0x1000, false, 36), Some(0x1000));
        assert_eq!(vm_hsave_pa_write(0x1008, false, 36), None);
        assert_eq!(vm_hsave_pa_write(1 << 36, false, 36), None);
        assert_eq!(vm_hsave_pa_write(1 << 36, false, 40), Some(1 << 36));
        assert_eq!(vm_hsave_pa_write(0x1008, true, 36), Some(0x1000));
        assert_eq!(vm_hsave_pa_write(u64::MAX, true, 36), Some(!0xfff));
    }

    #[test]
    fn tsc_adjust_moves_the_tsc_for_guest_writes() {
        assert_eq!(tsc_adjust_write(5, 9, false, false), (5, 0));
        assert_eq!(tsc_adjust_write(5, 9, true, true), (9, 0));
        assert_eq!(tsc_adjust_write(5, 9, false, true), (9, 4));
        assert_eq!(tsc_adjust_write(9, 5, false, true), (5, (-4i64) as u64));
    }

    #[test]
    fn constant_and_ignored_msrs() {
        assert_eq!(constant_read(0xcd), Some(3));
        assert_eq!(constant_read(0x1dd), Some(0));
        assert_eq!(constant_read(PAT), None);
        assert!(write_ignored(UCODE_WRITE, 5));
        assert!(write_ignored(0xc001_0058, 0));
        assert!(!write_ignored(0xc001_0058, 1));
        assert!(!write_ignored(0x17, 0));
    }

    #[test]
    fn xcr0_rules() {
        let all = XFEATURE_SSE | XFEATURE_YMM | XFEATURE_AVX512;
        assert!(xcr0_valid(0, 1, 0));
        assert!(xcr0_valid(0, 3, all));
        assert!(!xcr0_valid(0, 0, all));
        assert!(!xcr0_valid(1, 3, all));
        assert!(!xcr0_valid(0, 5, all));
        assert!(!xcr0_valid(0, 3, 0));
        assert!(!xcr0_valid(0, 7 | (1 << 5), all));
        assert!(xcr0_valid(0, 7 | XFEATURE_AVX512, all));
        assert!(!xcr0_valid(0, 1 | XFEATURE_BNDREGS, XFEATURE_BNDREGS));
    }
}
