//! Model-specific registers: their numbers, and KVM's rules for the ones a
//! vCPU keeps outside the VMCB/VMCS (what a write stores, when it is #GP),
//! for a guest `WRMSR` and for a host `KVM_SET_MSRS` (`host` true), which
//! skips some checks as KVM's `host_initiated` writes do.

use super::cpuid::GuestCaps;
use super::x86::{EFER_LMA, EFER_LME};

/// `IA32_TIME_STAMP_COUNTER`.
pub const TSC: u32 = 0x10;
/// `IA32_APIC_BASE`.
pub const APIC_BASE: u32 = 0x1b;
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
/// `kvm_sregs`), in KVM's order; `TSC_AUX` only where a guest may have
/// RDTSCP or RDPID.
pub fn saved(tsc_aux: bool) -> impl Iterator<Item = u32> {
    const ALWAYS: [u32; 10] = [
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
    ALWAYS
        .into_iter()
        .chain(tsc_aux.then_some(TSC_AUX))
        .chain([MISC_ENABLE])
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
        assert_eq!(saved(false).count(), 11);
        assert!(!saved(false).any(|m| m == TSC_AUX));
        assert_eq!(saved(true).filter(|&m| m == TSC_AUX).count(), 1);
        assert!(!saved(true).any(|m| m == EFER || m == APIC_BASE || m == FS_BASE));
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
