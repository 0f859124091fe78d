//! Architectural validity rules for CR0, CR3, CR4, EFER, `KVM_SET_SREGS`
//! and `IA32_APIC_BASE` exactly as KVM applies them, and the vCPU RESET
//! state KVM reports.
//!
//! Uses `super::cpuid::GuestCaps`, so the module must include `cpuid.rs`
//! as a sibling of this file.
//!
//! The facts come from arch/x86/kvm/regs.c (`kvm_is_valid_cr0`,
//! `kvm_is_valid_sregs`), regs.h (`__cr4_reserved_bits`,
//! `CR4_RESERVED_BITS`), msrs.c (`kvm_valid_efer`), x86.c
//! (`kvm_setup_efer_caps`, `kvm_vcpu_reset`), cpuid.h
//! (`kvm_vcpu_is_legal_cr3`), lapic.c (`kvm_apic_set_base`,
//! `kvm_lapic_reset`, `kvm_create_lapic`) and svm/svm.c (`init_vmcb`,
//! `svm_is_valid_cr0`/`svm_is_valid_cr4`, which accept everything).

use super::cpuid::GuestCaps;

/// CR0.PE: protection enable.
pub const CR0_PE: u64 = 1 << 0;
/// CR0.MP: monitor coprocessor.
pub const CR0_MP: u64 = 1 << 1;
/// CR0.EM: x87 emulation.
pub const CR0_EM: u64 = 1 << 2;
/// CR0.TS: task switched.
pub const CR0_TS: u64 = 1 << 3;
/// CR0.ET: extension type (always 1).
pub const CR0_ET: u64 = 1 << 4;
/// CR0.NE: numeric error.
pub const CR0_NE: u64 = 1 << 5;
/// CR0.WP: supervisor write protect.
pub const CR0_WP: u64 = 1 << 16;
/// CR0.AM: alignment mask.
pub const CR0_AM: u64 = 1 << 18;
/// CR0.NW: not write-through.
pub const CR0_NW: u64 = 1 << 29;
/// CR0.CD: cache disable.
pub const CR0_CD: u64 = 1 << 30;
/// CR0.PG: paging.
pub const CR0_PG: u64 = 1 << 31;

/// CR4.VME.
pub const CR4_VME: u64 = 1 << 0;
/// CR4.PVI.
pub const CR4_PVI: u64 = 1 << 1;
/// CR4.TSD.
pub const CR4_TSD: u64 = 1 << 2;
/// CR4.DE.
pub const CR4_DE: u64 = 1 << 3;
/// CR4.PSE.
pub const CR4_PSE: u64 = 1 << 4;
/// CR4.PAE.
pub const CR4_PAE: u64 = 1 << 5;
/// CR4.MCE.
pub const CR4_MCE: u64 = 1 << 6;
/// CR4.PGE.
pub const CR4_PGE: u64 = 1 << 7;
/// CR4.PCE.
pub const CR4_PCE: u64 = 1 << 8;
/// CR4.OSFXSR.
pub const CR4_OSFXSR: u64 = 1 << 9;
/// CR4.OSXMMEXCPT.
pub const CR4_OSXMMEXCPT: u64 = 1 << 10;
/// CR4.UMIP.
pub const CR4_UMIP: u64 = 1 << 11;
/// CR4.LA57.
pub const CR4_LA57: u64 = 1 << 12;
/// CR4.VMXE.
pub const CR4_VMXE: u64 = 1 << 13;
#[cfg_attr(
    rkvm_module,
    expect(dead_code, reason = "architectural bit, reserved for guests")
)]
/// CR4.SMXE (always reserved for KVM guests).
pub const CR4_SMXE: u64 = 1 << 14;
/// CR4.FSGSBASE.
pub const CR4_FSGSBASE: u64 = 1 << 16;
/// CR4.PCIDE.
pub const CR4_PCIDE: u64 = 1 << 17;
/// CR4.OSXSAVE.
pub const CR4_OSXSAVE: u64 = 1 << 18;
/// CR4.SMEP.
pub const CR4_SMEP: u64 = 1 << 20;
/// CR4.SMAP.
pub const CR4_SMAP: u64 = 1 << 21;
/// CR4.PKE.
pub const CR4_PKE: u64 = 1 << 22;
/// CR4.CET.
pub const CR4_CET: u64 = 1 << 23;
#[cfg_attr(
    rkvm_module,
    expect(dead_code, reason = "architectural bit, reserved for guests")
)]
/// CR4.LASS (always reserved for KVM guests in this kernel).
pub const CR4_LASS: u64 = 1 << 27;
/// CR4.LAM_SUP.
pub const CR4_LAM_SUP: u64 = 1 << 28;
#[cfg_attr(
    rkvm_module,
    expect(dead_code, reason = "architectural bit, reserved for guests")
)]
/// CR4.FRED (bit 32; KVM 7.3 keeps it reserved even with guest FRED).
pub const CR4_FRED: u64 = 1 << 32;

/// CR3 bit 61: LAM for user pointers, 57-bit.
pub const CR3_LAM_U57: u64 = 1 << 61;
/// CR3 bit 62: LAM for user pointers, 48-bit.
pub const CR3_LAM_U48: u64 = 1 << 62;

/// RFLAGS.TF: single-step.
pub const RFLAGS_TF: u64 = 1 << 8;
/// RFLAGS.RF: resume (no instruction breakpoint on the next one).
pub const RFLAGS_RF: u64 = 1 << 16;
/// RFLAGS.DF: string instructions count down.
pub const RFLAGS_DF: u64 = 1 << 10;
/// RFLAGS.IF: maskable interrupts enabled.
pub const RFLAGS_IF: u64 = 1 << 9;
/// RFLAGS.VM: virtual-8086 mode.
pub const RFLAGS_VM: u64 = 1 << 17;

/// EFER.SCE: SYSCALL/SYSRET.
pub const EFER_SCE: u64 = 1 << 0;
/// EFER.LME: long mode enable.
pub const EFER_LME: u64 = 1 << 8;
/// EFER.LMA: long mode active.
pub const EFER_LMA: u64 = 1 << 10;
/// EFER.NXE: no-execute enable.
pub const EFER_NX: u64 = 1 << 11;
/// EFER.SVME: SVM enable.
pub const EFER_SVME: u64 = 1 << 12;
/// EFER.LMSLE: long-mode segment limit enable.
pub const EFER_LMSLE: u64 = 1 << 13;
/// EFER.FFXSR: fast FXSAVE/FXRSTOR.
pub const EFER_FFXSR: u64 = 1 << 14;
/// EFER.AUTOIBRS: automatic IBRS.
pub const EFER_AUTOIBRS: u64 = 1 << 21;

/// `IA32_APIC_BASE.BSP`.
pub const APIC_BASE_BSP: u64 = 1 << 8;
/// `IA32_APIC_BASE.EXTD`: x2APIC mode (`X2APIC_ENABLE`).
pub const APIC_BASE_X2APIC: u64 = 1 << 10;
/// `IA32_APIC_BASE.EN`: the APIC is enabled.
pub const APIC_BASE_ENABLE: u64 = 1 << 11;
/// `APIC_DEFAULT_PHYS_BASE`.
pub const APIC_DEFAULT_PHYS_BASE: u64 = 0xfee0_0000;

/// The CR0 bits KVM lets a guest keep (the complement of
/// `CR0_RESERVED_BITS`); other bits below 32 are silently dropped by
/// `kvm_set_cr0`.
pub const CR0_KNOWN_BITS: u64 = CR0_PE
    | CR0_MP
    | CR0_EM
    | CR0_TS
    | CR0_ET
    | CR0_NE
    | CR0_WP
    | CR0_AM
    | CR0_NW
    | CR0_CD
    | CR0_PG;

/// The CR4 bits KVM can ever allow (the complement of `CR4_RESERVED_BITS`).
pub const CR4_KNOWN_BITS: u64 = CR4_VME
    | CR4_PVI
    | CR4_TSD
    | CR4_DE
    | CR4_PSE
    | CR4_PAE
    | CR4_MCE
    | CR4_PGE
    | CR4_PCE
    | CR4_OSFXSR
    | CR4_PCIDE
    | CR4_OSXSAVE
    | CR4_SMEP
    | CR4_FSGSBASE
    | CR4_OSXMMEXCPT
    | CR4_LA57
    | CR4_VMXE
    | CR4_SMAP
    | CR4_PKE
    | CR4_UMIP
    | CR4_LAM_SUP
    | CR4_CET;

/// `kvm_is_valid_cr0` on a 64-bit host (SVM adds nothing): no bits in
/// 63:32, NW only with CD, PG only with PE. Reserved bits below 32 are not
/// an error (KVM drops them).
pub fn valid_cr0(cr0: u64) -> bool {
    if cr0 >> 32 != 0 {
        return false;
    }
    if cr0 & CR0_NW != 0 && cr0 & CR0_CD == 0 {
        return false;
    }
    !(cr0 & CR0_PG != 0 && cr0 & CR0_PE == 0)
}

/// `__cr4_reserved_bits(guest_cpu_cap_has, vcpu)`: the CR4 bits reserved
/// for a guest with `caps`.
///
/// `!cr4_reserved_bits(&GuestCaps::from_entries(supported_list))` is the
/// `host_cr4_supported` mask for [`valid_cr4`] (KVM's
/// `__cr4_reserved_bits(__kvm_cpu_cap_has, ...)` half).
pub fn cr4_reserved_bits(caps: &GuestCaps) -> u64 {
    let mut r = !CR4_KNOWN_BITS;
    let mut reserve = |has: bool, bits: u64| {
        if !has {
            r |= bits;
        }
    };
    reserve(caps.xsave, CR4_OSXSAVE);
    reserve(caps.smep, CR4_SMEP);
    reserve(caps.smap, CR4_SMAP);
    reserve(caps.fsgsbase, CR4_FSGSBASE);
    reserve(caps.pku, CR4_PKE);
    reserve(caps.la57, CR4_LA57);
    reserve(caps.umip, CR4_UMIP);
    reserve(caps.vmx, CR4_VMXE);
    reserve(caps.pcid, CR4_PCIDE);
    reserve(caps.lam, CR4_LAM_SUP);
    reserve(caps.shstk || caps.ibt, CR4_CET);
    r
}

/// `kvm_is_valid_cr4` (SVM adds nothing): no bit reserved for the guest's
/// `caps` and no bit outside `host_cr4_supported` (the CR4 bits the host
/// and rkvm support).
///
/// This is validity only; `kvm_set_cr4` additionally refuses e.g. clearing
/// PAE in long mode, toggling LA57 in long mode, or PCIDE with CR3[11:0] ≠ 0.
pub fn valid_cr4(cr4: u64, caps: &GuestCaps, host_cr4_supported: u64) -> bool {
    cr4 & (cr4_reserved_bits(caps) | !host_cr4_supported) == 0
}

/// `kvm_setup_efer_caps`: the EFER bits KVM supports given its own
/// capabilities `kvm` (SCE always; LME/LMA with LM; NX; FFXSR with
/// FXSR_OPT; AUTOIBRS; SVME with SVM). `lmsle`: whether the host allows
/// EFER.LMSLE (no `EFER_LMSLE_MBZ`), added only with SVM.
pub fn supported_efer_bits(kvm: &GuestCaps, lmsle: bool) -> u64 {
    let mut bits = EFER_SCE;
    if kvm.lm {
        bits |= EFER_LME | EFER_LMA;
    }
    if kvm.nx {
        bits |= EFER_NX;
    }
    if kvm.fxsr_opt {
        bits |= EFER_FFXSR;
    }
    if kvm.autoibrs {
        bits |= EFER_AUTOIBRS;
    }
    if kvm.svm {
        bits |= EFER_SVME;
        if lmsle {
            bits |= EFER_LMSLE;
        }
    }
    bits
}

/// `__kvm_valid_efer`: each feature bit of `efer` needs its guest
/// capability (AUTOIBRS, FFXSR ← FXSR_OPT, SVME ← SVM, LME/LMA ← LM,
/// NX). This alone is what a guest `WRMSR` is checked against, after the
/// supported-bits test.
pub fn efer_allowed_by_caps(efer: u64, caps: &GuestCaps) -> bool {
    let needs = |bits: u64, has: bool| efer & bits == 0 || has;
    needs(EFER_AUTOIBRS, caps.autoibrs)
        && needs(EFER_FFXSR, caps.fxsr_opt)
        && needs(EFER_SVME, caps.svm)
        && needs(EFER_LME | EFER_LMA, caps.lm)
        && needs(EFER_NX, caps.nx)
}

/// `kvm_valid_efer`: no bit outside `supported_efer_bits` (see
/// [`supported_efer_bits`]), and [`efer_allowed_by_caps`].
pub fn valid_efer(efer: u64, caps: &GuestCaps, supported_efer_bits: u64) -> bool {
    efer & !supported_efer_bits == 0 && efer_allowed_by_caps(efer, caps)
}

/// `rsvd_bits(maxphyaddr, 63)`: the physical-address bits a guest with
/// this MAXPHYADDR must leave clear (`vcpu->arch.reserved_gpa_bits`).
pub fn reserved_gpa_bits(maxphyaddr: u8) -> u64 {
    u64::MAX.checked_shl(u32::from(maxphyaddr)).unwrap_or(0)
}

/// `kvm_vcpu_is_legal_gpa`.
pub fn legal_gpa(gpa: u64, caps: &GuestCaps) -> bool {
    gpa & reserved_gpa_bits(caps.maxphyaddr) == 0
}

/// `kvm_vcpu_is_legal_cr3`: with LAM the LAM_U48/U57 bits are allowed;
/// every other bit at or above MAXPHYADDR must be clear. (Bits below 12,
/// including PCID and PWT/PCD, are not checked here.)
pub fn legal_cr3(cr3: u64, caps: &GuestCaps) -> bool {
    let cr3 = if caps.lam {
        cr3 & !(CR3_LAM_U48 | CR3_LAM_U57)
    } else {
        cr3
    };
    legal_gpa(cr3, caps)
}

/// The `struct kvm_sregs` fields `kvm_is_valid_sregs` looks at.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SregsView {
    /// EFER.
    pub efer: u64,
    /// CR0.
    pub cr0: u64,
    /// CR3.
    pub cr3: u64,
    /// CR4.
    pub cr4: u64,
    /// CS.L (64-bit code segment).
    pub cs_l: bool,
}

/// `kvm_is_valid_sregs`, the first check of `KVM_SET_SREGS(2)` (`EINVAL`
/// if false):
///
/// * EFER.LME with CR0.PG (long mode): CR4.PAE and EFER.LMA must be set
///   and CR3 legal ([`legal_cr3`]);
/// * otherwise EFER.LMA and CS.L must be clear;
/// * and CR4 ([`valid_cr4`]), CR0 ([`valid_cr0`]) and EFER
///   ([`valid_efer`]) must be valid.
///
/// `KVM_SET_SREGS` then checks `apic_base` with [`valid_apic_base`].
pub fn valid_sregs(
    s: &SregsView,
    caps: &GuestCaps,
    host_cr4_supported: u64,
    supported_efer_bits: u64,
) -> bool {
    if s.efer & EFER_LME != 0 && s.cr0 & CR0_PG != 0 {
        if s.cr4 & CR4_PAE == 0 || s.efer & EFER_LMA == 0 {
            return false;
        }
        if !legal_cr3(s.cr3, caps) {
            return false;
        }
    } else if s.efer & EFER_LMA != 0 || s.cs_l {
        return false;
    }
    valid_cr4(s.cr4, caps, host_cr4_supported)
        && valid_cr0(s.cr0)
        && valid_efer(s.efer, caps, supported_efer_bits)
}

fn apic_base_well_formed(value: u64, caps: &GuestCaps) -> bool {
    let x2apic = if caps.x2apic { 0 } else { APIC_BASE_X2APIC };
    let reserved = reserved_gpa_bits(caps.maxphyaddr) | 0x2ff | x2apic;
    // x2APIC mode without EN is LAPIC_MODE_INVALID.
    let invalid_mode = value & (APIC_BASE_ENABLE | APIC_BASE_X2APIC) == APIC_BASE_X2APIC;
    value & reserved == 0 && !invalid_mode
}

/// `kvm_apic_set_base(vcpu, value, host_initiated = true)`, as used by
/// `KVM_SET_SREGS` and a host `KVM_SET_MSRS`: writing the `current` value
/// always succeeds; otherwise bits 7:0 and 9, bits at or above MAXPHYADDR,
/// and EXTD without an x2APIC-capable guest are reserved, and EXTD without
/// EN is invalid. Mode transitions are not checked for the host.
///
/// KVM stores the value even without an in-kernel LAPIC.
pub fn valid_apic_base(value: u64, current: u64, caps: &GuestCaps) -> bool {
    value == current || apic_base_well_formed(value, caps)
}

/// `kvm_apic_set_base(vcpu, value, host_initiated = false)`: a guest
/// `WRMSR` (#GP if false). As [`valid_apic_base`], and the guest may not
/// go from x2APIC straight to xAPIC mode, nor from disabled straight to
/// x2APIC mode.
pub fn valid_apic_base_guest(value: u64, current: u64, caps: &GuestCaps) -> bool {
    if value == current {
        return true;
    }
    if !apic_base_well_formed(value, caps) {
        return false;
    }
    let mode = |v: u64| v & (APIC_BASE_ENABLE | APIC_BASE_X2APIC);
    let (old, new) = (mode(current), mode(value));
    let x2 = APIC_BASE_ENABLE | APIC_BASE_X2APIC;
    !(old == x2 && new == APIC_BASE_ENABLE || old == 0 && new == x2)
}

/// The state `kvm_vcpu_reset(vcpu, init_event = false)` gives a new vCPU on
/// SVM, as `KVM_GET_REGS`/`KVM_GET_SREGS`/`KVM_GET_MSRS` report it.
pub mod reset {
    /// CR0: ET | NW | CD (`kvm_vcpu_reset` sets NW and CD at RESET).
    pub const CR0: u64 = 0x6000_0010;
    /// CR2, CR3 and CR4 are zero.
    pub const CR3: u64 = 0;
    /// CR4.
    pub const CR4: u64 = 0;
    /// EFER.
    pub const EFER: u64 = 0;
    /// RFLAGS: only the fixed bit 1 (`X86_EFLAGS_FIXED`).
    pub const RFLAGS: u64 = 0x2;
    /// RIP.
    pub const RIP: u64 = 0xfff0;
    /// RDX at RESET: CPUID.1.EAX if the vCPU had a CPUID table, which it
    /// never has at creation, so KVM's P6 default 0x600. Other GPRs are 0.
    pub const RDX: u64 = 0x600;
    /// CS selector.
    pub const CS_SELECTOR: u16 = 0xf000;
    /// CS base (so CS:RIP = 0xffff_fff0).
    pub const CS_BASE: u64 = 0xffff_0000;
    /// Limit of CS, DS, ES, FS, GS, SS, LDTR and TR, and of GDTR and IDTR
    /// (all bases and other selectors are zero).
    pub const SEG_LIMIT: u32 = 0xffff;
    /// Segment types after RESET as `KVM_GET_SREGS` reports them, which
    /// differ by vendor (SVM's `init_vmcb` and `svm_get_segment`, VMX's
    /// `vmx_vcpu_reset`); `amd` picks SVM's. Every segment is present, CS
    /// and the data segments are code/data (S set), LDTR and TR system.
    pub const fn segment_types(amd: bool) -> SegmentTypes {
        if amd {
            // CS execute/read; data segments read/write with the accessed
            // bit svm_get_segment forces; SS without it; LDT; busy 16-bit TSS
            // (init_sys_seg) with the busy bit svm_get_segment forces.
            SegmentTypes {
                cs: 0xa,
                data: 0x3,
                ss: 0x2,
                ldtr: 0x2,
                tr: 0x3,
            }
        } else {
            // seg_setup's 0x93/0x9b access rights; LDT; busy 32-bit TSS.
            SegmentTypes {
                cs: 0xb,
                data: 0x3,
                ss: 0x3,
                ldtr: 0x2,
                tr: 0xb,
            }
        }
    }

    /// The type field of each segment register after RESET.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct SegmentTypes {
        /// CS.
        pub cs: u8,
        /// DS, ES, FS and GS.
        pub data: u8,
        /// SS.
        pub ss: u8,
        /// LDTR.
        pub ldtr: u8,
        /// TR.
        pub tr: u8,
    }
    /// DR6 (`DR6_ACTIVE_LOW`).
    pub const DR6: u64 = 0xffff_0ff0;
    /// DR7 (`DR7_FIXED_1`).
    pub const DR7: u64 = 0x400;
    /// `IA32_PAT` (`MSR_IA32_CR_PAT_DEFAULT`: WB, WT, UC-, UC twice).
    pub const PAT: u64 = 0x0007_0406_0007_0406;
    /// XCR0: x87 only.
    pub const XCR0: u64 = 0x1;
    /// `IA32_MISC_ENABLE`: PEBS and BTS unavailable.
    pub const MISC_ENABLE: u64 = (1 << 12) | (1 << 11);
    #[cfg_attr(rkvm_module, expect(dead_code, reason = "rkvm has no SMM"))]
    /// SMBASE.
    pub const SMBASE: u64 = 0x3_0000;

    /// `IA32_APIC_BASE` after RESET: `0xfee0_0000 | EN`, plus BSP if
    /// `vcpu_id` is the VM's boot vCPU (`KVM_SET_BOOT_CPU_ID`, default 0).
    ///
    /// `kvm_lapic_reset` writes this *before* it returns early for a vCPU
    /// without an in-kernel LAPIC (`kvm_create_lapic` creates none without
    /// `KVM_CREATE_IRQCHIP`), so KVM reports 0xfee0_0900 for vCPU 0 and
    /// 0xfee0_0800 for the others whether or not there is an irqchip.
    pub const fn apic_base(vcpu_id: u32, bsp_vcpu_id: u32) -> u64 {
        let base = super::APIC_DEFAULT_PHYS_BASE | super::APIC_BASE_ENABLE;
        if vcpu_id == bsp_vcpu_id {
            base | super::APIC_BASE_BSP
        } else {
            base
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 64-bit guest with the usual features and MAXPHYADDR 40.
    fn caps() -> GuestCaps {
        GuestCaps {
            lm: true,
            nx: true,
            pae: true,
            pse: true,
            pge: true,
            fxsr: true,
            xmm: true,
            smep: true,
            smap: true,
            fsgsbase: true,
            maxphyaddr: 40,
            ..Default::default()
        }
    }

    const ALL: u64 = u64::MAX;

    fn efer_bits() -> u64 {
        supported_efer_bits(&caps(), false)
    }

    // kvm_is_valid_cr0.
    #[test]
    fn cr0_high_bits_invalid() {
        assert!(!valid_cr0(1 << 32));
        assert!(!valid_cr0(CR0_PE | (1 << 63)));
    }

    #[test]
    fn cr0_nw_without_cd_invalid() {
        assert!(!valid_cr0(CR0_NW));
        assert!(valid_cr0(CR0_NW | CR0_CD));
        assert!(valid_cr0(CR0_CD));
    }

    #[test]
    fn cr0_pg_without_pe_invalid() {
        assert!(!valid_cr0(CR0_PG));
        assert!(valid_cr0(CR0_PG | CR0_PE));
    }

    // Low reserved bits are dropped by kvm_set_cr0, not refused.
    #[test]
    fn cr0_low_reserved_bits_are_valid() {
        assert!(valid_cr0(1 << 6));
        assert!(valid_cr0(reset::CR0));
    }

    // CR4_RESERVED_BITS.
    #[test]
    fn cr4_unknown_bits_reserved() {
        let c = caps();
        for b in [CR4_SMXE, CR4_LASS, CR4_FRED, 1 << 15, 1 << 19, 1 << 63] {
            assert!(!valid_cr4(b, &c, ALL), "{b:#x}");
        }
    }

    #[test]
    fn cr4_baseline_bits_need_no_caps() {
        let c = GuestCaps::default();
        let base = CR4_VME
            | CR4_PVI
            | CR4_TSD
            | CR4_DE
            | CR4_PSE
            | CR4_PAE
            | CR4_MCE
            | CR4_PGE
            | CR4_PCE
            | CR4_OSFXSR
            | CR4_OSXMMEXCPT;
        assert!(valid_cr4(base, &c, ALL));
    }

    // __cr4_reserved_bits: each feature gates its bit.
    #[test]
    fn cr4_feature_bits_follow_guest_caps() {
        let none = GuestCaps::default();
        type Enable = fn(&mut GuestCaps);
        let cases: [(u64, Enable); 11] = [
            (CR4_OSXSAVE, |c| c.xsave = true),
            (CR4_SMEP, |c| c.smep = true),
            (CR4_SMAP, |c| c.smap = true),
            (CR4_FSGSBASE, |c| c.fsgsbase = true),
            (CR4_PKE, |c| c.pku = true),
            (CR4_LA57, |c| c.la57 = true),
            (CR4_UMIP, |c| c.umip = true),
            (CR4_VMXE, |c| c.vmx = true),
            (CR4_PCIDE, |c| c.pcid = true),
            (CR4_LAM_SUP, |c| c.lam = true),
            (CR4_CET, |c| c.shstk = true),
        ];
        for (bit, set) in cases {
            assert!(!valid_cr4(bit, &none, ALL), "{bit:#x}");
            let mut c = none;
            set(&mut c);
            assert!(valid_cr4(bit, &c, ALL), "{bit:#x}");
        }
    }

    #[test]
    fn cr4_cet_allowed_by_ibt_alone() {
        let c = GuestCaps {
            ibt: true,
            ..Default::default()
        };
        assert!(valid_cr4(CR4_CET, &c, ALL));
    }

    // FRED is not in KVM 7.3's CR4 list even when the guest has FRED.
    #[test]
    fn cr4_fred_reserved_even_with_fred() {
        let c = GuestCaps {
            fred: true,
            ..Default::default()
        };
        assert!(!valid_cr4(CR4_FRED, &c, ALL));
    }

    // kvm_vcpu_after_set_cpuid: kvm-cap reserved bits | guest reserved bits.
    #[test]
    fn cr4_host_mask_also_reserves() {
        let c = caps();
        assert!(valid_cr4(CR4_SMEP, &c, ALL));
        assert!(!valid_cr4(CR4_SMEP, &c, !CR4_SMEP));
    }

    #[test]
    fn cr4_host_mask_from_supported_caps() {
        let host = !cr4_reserved_bits(&caps());
        let guest = GuestCaps {
            la57: true,
            ..caps()
        };
        // The guest claims LA57 but the host list lacks it.
        assert!(!valid_cr4(CR4_LA57, &guest, host));
        assert!(valid_cr4(CR4_SMAP | CR4_PAE, &guest, host));
    }

    // kvm_setup_efer_caps.
    #[test]
    fn supported_efer_bits_follow_kvm_caps() {
        assert_eq!(supported_efer_bits(&GuestCaps::default(), true), EFER_SCE);
        assert_eq!(efer_bits(), EFER_SCE | EFER_LME | EFER_LMA | EFER_NX);
        let svm = GuestCaps {
            svm: true,
            ..Default::default()
        };
        assert_eq!(
            supported_efer_bits(&svm, true),
            EFER_SCE | EFER_SVME | EFER_LMSLE
        );
        assert_eq!(supported_efer_bits(&svm, false), EFER_SCE | EFER_SVME);
        let more = GuestCaps {
            fxsr_opt: true,
            autoibrs: true,
            ..Default::default()
        };
        assert_eq!(
            supported_efer_bits(&more, false),
            EFER_SCE | EFER_FFXSR | EFER_AUTOIBRS
        );
    }

    // kvm_valid_efer: supported bits first.
    #[test]
    fn efer_unsupported_bit_invalid() {
        let c = caps();
        assert!(!valid_efer(EFER_SVME, &c, efer_bits()));
        assert!(!valid_efer(1 << 1, &c, efer_bits()));
        assert!(valid_efer(
            EFER_SCE | EFER_LME | EFER_LMA | EFER_NX,
            &c,
            efer_bits()
        ));
    }

    // __kvm_valid_efer: each bit needs its guest capability.
    #[test]
    fn efer_bits_need_guest_caps() {
        let none = GuestCaps::default();
        for b in [
            EFER_LME,
            EFER_LMA,
            EFER_NX,
            EFER_SVME,
            EFER_FFXSR,
            EFER_AUTOIBRS,
        ] {
            assert!(!valid_efer(b, &none, ALL), "{b:#x}");
        }
        assert!(valid_efer(EFER_SCE, &none, ALL));
        let all = GuestCaps {
            lm: true,
            nx: true,
            svm: true,
            fxsr_opt: true,
            autoibrs: true,
            ..Default::default()
        };
        let bits = EFER_LME | EFER_LMA | EFER_NX | EFER_SVME | EFER_FFXSR | EFER_AUTOIBRS;
        assert!(valid_efer(bits, &all, ALL));
    }

    // rsvd_bits(maxphyaddr, 63).
    #[test]
    fn reserved_gpa_bits_from_maxphyaddr() {
        assert_eq!(reserved_gpa_bits(36), !((1u64 << 36) - 1));
        assert_eq!(reserved_gpa_bits(52), 0xfff0_0000_0000_0000);
        assert_eq!(reserved_gpa_bits(0), u64::MAX);
        assert_eq!(reserved_gpa_bits(64), 0);
    }

    // kvm_vcpu_is_legal_cr3.
    #[test]
    fn cr3_above_maxphyaddr_illegal() {
        let c = caps();
        assert!(legal_cr3((1 << 40) - 0x1000, &c));
        assert!(!legal_cr3(1 << 40, &c));
        // Low bits (PCID, PWT, PCD) are not checked.
        assert!(legal_cr3(0x1000 | 0xfff, &c));
    }

    #[test]
    fn cr3_lam_bits_legal_only_with_lam() {
        let c = caps();
        assert!(!legal_cr3(CR3_LAM_U48, &c));
        let lam = GuestCaps { lam: true, ..c };
        assert!(legal_cr3(CR3_LAM_U48 | CR3_LAM_U57 | 0x1000, &lam));
        assert!(!legal_cr3(1 << 63, &lam));
    }

    fn long_mode() -> SregsView {
        SregsView {
            efer: EFER_LME | EFER_LMA | EFER_SCE | EFER_NX,
            cr0: CR0_PE | CR0_PG | CR0_ET | CR0_WP,
            cr3: 0x1000,
            cr4: CR4_PAE | CR4_PGE | CR4_OSFXSR,
            cs_l: true,
        }
    }

    fn sregs_ok(s: &SregsView) -> bool {
        valid_sregs(s, &caps(), ALL, efer_bits())
    }

    // kvm_is_valid_sregs.
    #[test]
    fn sregs_long_mode_valid() {
        assert!(sregs_ok(&long_mode()));
    }

    #[test]
    fn sregs_long_mode_needs_pae() {
        let s = SregsView {
            cr4: CR4_PGE,
            ..long_mode()
        };
        assert!(!sregs_ok(&s));
    }

    #[test]
    fn sregs_long_mode_needs_lma() {
        let s = SregsView {
            efer: EFER_LME,
            ..long_mode()
        };
        assert!(!sregs_ok(&s));
    }

    #[test]
    fn sregs_long_mode_needs_legal_cr3() {
        let s = SregsView {
            cr3: 1 << 45,
            ..long_mode()
        };
        assert!(!sregs_ok(&s));
    }

    // Outside long mode CR3 is not checked here.
    #[test]
    fn sregs_legacy_mode_does_not_check_cr3() {
        let s = SregsView {
            efer: 0,
            cr0: CR0_PE | CR0_PG,
            cr3: 1 << 45,
            cr4: 0,
            cs_l: false,
        };
        assert!(sregs_ok(&s));
    }

    #[test]
    fn sregs_lma_without_paging_invalid() {
        let s = SregsView {
            efer: EFER_LME | EFER_LMA,
            cr0: CR0_PE,
            ..long_mode()
        };
        assert!(!sregs_ok(&s));
    }

    #[test]
    fn sregs_cs_l_outside_long_mode_invalid() {
        let s = SregsView {
            cs_l: true,
            ..SregsView::default()
        };
        assert!(!sregs_ok(&s));
    }

    #[test]
    fn sregs_checks_cr0_cr4_and_efer() {
        let s = SregsView {
            cr0: CR0_NW | CR0_PE | CR0_PG,
            ..long_mode()
        };
        assert!(!sregs_ok(&s));
        let s = SregsView {
            cr4: CR4_PAE | CR4_OSXSAVE,
            ..long_mode()
        };
        assert!(!sregs_ok(&s));
        let s = SregsView {
            efer: long_mode().efer | EFER_SVME,
            ..long_mode()
        };
        assert!(!sregs_ok(&s));
    }

    #[test]
    fn sregs_reset_state_valid() {
        let s = SregsView {
            efer: reset::EFER,
            cr0: reset::CR0,
            cr3: reset::CR3,
            cr4: reset::CR4,
            cs_l: false,
        };
        assert!(valid_sregs(&s, &GuestCaps::default(), ALL, EFER_SCE));
    }

    // kvm_apic_set_base, host-initiated.
    #[test]
    fn apic_base_reserved_bits_refused() {
        let c = caps();
        let cur = reset::apic_base(0, 0);
        for b in [1, 0x80, 1 << 9, 1 << 40, 1 << 63] {
            assert!(!valid_apic_base(cur | b, cur, &c), "{b:#x}");
        }
        assert!(valid_apic_base(0xfed0_0800, cur, &c));
        assert!(valid_apic_base(0, cur, &c));
    }

    #[test]
    fn apic_base_same_value_always_accepted() {
        let c = caps();
        let odd = 0xfee0_0000 | 0x1;
        assert!(valid_apic_base(odd, odd, &c));
        assert!(valid_apic_base_guest(odd, odd, &c));
    }

    #[test]
    fn apic_base_x2apic_needs_guest_x2apic() {
        let cur = reset::apic_base(0, 0);
        let x2 = cur | APIC_BASE_X2APIC;
        assert!(!valid_apic_base(x2, cur, &caps()));
        let c = GuestCaps {
            x2apic: true,
            ..caps()
        };
        assert!(valid_apic_base(x2, cur, &c));
    }

    #[test]
    fn apic_base_x2apic_without_enable_invalid() {
        let c = GuestCaps {
            x2apic: true,
            ..caps()
        };
        let v = APIC_DEFAULT_PHYS_BASE | APIC_BASE_X2APIC;
        assert!(!valid_apic_base(v, 0, &c));
    }

    // Host-initiated writes skip the mode-transition rules.
    #[test]
    fn apic_base_host_may_jump_between_modes() {
        let c = GuestCaps {
            x2apic: true,
            ..caps()
        };
        let x2 = APIC_DEFAULT_PHYS_BASE | APIC_BASE_ENABLE | APIC_BASE_X2APIC;
        let xapic = APIC_DEFAULT_PHYS_BASE | APIC_BASE_ENABLE;
        assert!(valid_apic_base(xapic, x2, &c));
        assert!(valid_apic_base(x2, APIC_DEFAULT_PHYS_BASE, &c));
        assert!(!valid_apic_base_guest(xapic, x2, &c));
        assert!(!valid_apic_base_guest(x2, APIC_DEFAULT_PHYS_BASE, &c));
        assert!(valid_apic_base_guest(x2, xapic, &c));
        assert!(valid_apic_base_guest(APIC_DEFAULT_PHYS_BASE, x2, &c));
    }

    // kvm_lapic_reset sets apic_base even without an in-kernel LAPIC.
    #[test]
    fn reset_apic_base_bsp_and_ap() {
        assert_eq!(reset::apic_base(0, 0), 0xfee0_0900);
        assert_eq!(reset::apic_base(1, 0), 0xfee0_0800);
        assert_eq!(reset::apic_base(1, 1), 0xfee0_0900);
    }

    #[test]
    fn reset_constants_match_kvm() {
        assert_eq!(reset::CR0, CR0_ET | CR0_NW | CR0_CD);
        assert_eq!(u64::from(reset::CS_SELECTOR) << 4, reset::CS_BASE & 0xffff0);
        assert_eq!(reset::CS_BASE + reset::RIP, 0xffff_fff0);
        assert_eq!(reset::PAT, 0x0007_0406_0007_0406);
        assert_eq!(
            (reset::DR6, reset::DR7, reset::RFLAGS),
            (0xffff_0ff0, 0x400, 2)
        );
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            // valid_cr0 is exactly the three rules of kvm_is_valid_cr0.
            #[test]
            fn cr0_rules(cr0 in any::<u64>()) {
                let want = cr0 >> 32 == 0
                    && !(cr0 & CR0_NW != 0 && cr0 & CR0_CD == 0)
                    && !(cr0 & CR0_PG != 0 && cr0 & CR0_PE == 0);
                prop_assert_eq!(valid_cr0(cr0), want);
            }

            // A valid CR4 never has a bit outside CR4_KNOWN_BITS or the host mask.
            #[test]
            fn cr4_valid_implies_known(cr4 in any::<u64>(), host in any::<u64>()) {
                let c = GuestCaps { xsave: true, pku: true, la57: true, pcid: true, lam: true, shstk: true, umip: true, vmx: true, ..caps() };
                if valid_cr4(cr4, &c, host) {
                    prop_assert_eq!(cr4 & !CR4_KNOWN_BITS, 0);
                    prop_assert_eq!(cr4 & !host, 0);
                }
            }

            // Long mode sregs need PAE, LMA and a legal CR3.
            #[test]
            fn sregs_long_mode_rules(efer in any::<u64>(), cr0 in any::<u64>(), cr3 in any::<u64>(), cr4 in any::<u64>(), cs_l in any::<bool>()) {
                let s = SregsView { efer, cr0, cr3, cr4, cs_l };
                if valid_sregs(&s, &caps(), ALL, efer_bits()) {
                    prop_assert!(valid_cr0(cr0) && valid_cr4(cr4, &caps(), ALL));
                    if efer & EFER_LME != 0 && cr0 & CR0_PG != 0 {
                        prop_assert!(cr4 & CR4_PAE != 0 && efer & EFER_LMA != 0 && legal_cr3(cr3, &caps()));
                    } else {
                        prop_assert!(efer & EFER_LMA == 0 && !cs_l);
                    }
                }
            }

            // Every accepted new APIC base is within MAXPHYADDR and well-formed.
            #[test]
            fn apic_base_accepted_is_well_formed(value in any::<u64>(), current in any::<u64>()) {
                let c = caps();
                if value != current && valid_apic_base(value, current, &c) {
                    prop_assert_eq!(value & reserved_gpa_bits(c.maxphyaddr), 0);
                    prop_assert_eq!(value & 0x6ff, 0);
                }
                if valid_apic_base_guest(value, current, &c) {
                    prop_assert!(valid_apic_base(value, current, &c));
                }
            }
        }
    }
}

/// The vCPU state a guest's MOV to CR0 or CR4 is checked against.
#[derive(Clone, Copy, Debug, Default)]
pub struct CrState {
    /// CR0 as the guest sees it.
    pub cr0: u64,
    /// CR3.
    pub cr3: u64,
    /// CR4 as the guest sees it.
    pub cr4: u64,
    /// EFER.
    pub efer: u64,
    /// CS.L.
    pub cs_l: bool,
}

/// What a guest's MOV to CR0 or CR4 does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrWrite {
    /// #GP(0): the write is refused and nothing changes.
    Gp,
    /// Load `value`; if `load_pdptes`, first read the PAE PDPTEs at CR3
    /// and turn the write into #GP if one is invalid ([`pdpte_valid`]).
    Set {
        /// The value to load.
        value: u64,
        /// The PDPTEs must be (re)loaded.
        load_pdptes: bool,
    },
}

/// CR0 bits whose change makes PAE paging reload the PDPTEs.
const CR0_PDPTR_BITS: u64 = CR0_CD | CR0_NW | CR0_PG;
/// CR4 bits whose change makes PAE paging reload the PDPTEs.
const CR4_PDPTR_BITS: u64 = CR4_PGE | CR4_PSE | CR4_PAE | CR4_SMEP;

/// `kvm_set_cr0` for a guest MOV to CR0 (or CLTS/LMSW turned into one).
pub fn guest_set_cr0(cr0: u64, s: &CrState) -> CrWrite {
    if !valid_cr0(cr0) {
        return CrWrite::Gp;
    }
    let cr0 = (cr0 | CR0_ET) & CR0_KNOWN_BITS;
    let lme = s.efer & EFER_LME != 0;
    let pae = s.cr4 & CR4_PAE != 0;
    // Turning paging on with LME enters long mode: needs PAE and a
    // CS that is not already 64-bit.
    if lme && s.cr0 & CR0_PG == 0 && cr0 & CR0_PG != 0 && (!pae || s.cs_l) {
        return CrWrite::Gp;
    }
    let load_pdptes = !lme && cr0 & CR0_PG != 0 && pae && (cr0 ^ s.cr0) & CR0_PDPTR_BITS != 0;
    let long64 = s.efer & EFER_LMA != 0 && s.cs_l;
    if cr0 & CR0_PG == 0 && (long64 || s.cr4 & CR4_PCIDE != 0) {
        return CrWrite::Gp;
    }
    if cr0 & CR0_WP == 0 && s.cr4 & CR4_CET != 0 {
        return CrWrite::Gp;
    }
    CrWrite::Set {
        value: cr0,
        load_pdptes,
    }
}

/// `kvm_set_cr4` for a guest MOV to CR4.
pub fn guest_set_cr4(cr4: u64, s: &CrState, caps: &GuestCaps, host_cr4_supported: u64) -> CrWrite {
    if !valid_cr4(cr4, caps, host_cr4_supported) {
        return CrWrite::Gp;
    }
    let mut load_pdptes = false;
    if s.efer & EFER_LMA != 0 {
        if cr4 & CR4_PAE == 0 || (cr4 ^ s.cr4) & CR4_LA57 != 0 {
            return CrWrite::Gp;
        }
    } else if s.cr0 & CR0_PG != 0 && cr4 & CR4_PAE != 0 && (cr4 ^ s.cr4) & CR4_PDPTR_BITS != 0 {
        load_pdptes = true;
    }
    if cr4 & CR4_PCIDE != 0
        && s.cr4 & CR4_PCIDE == 0
        && (s.cr3 & 0xfff != 0 || s.efer & EFER_LMA == 0)
    {
        return CrWrite::Gp;
    }
    if cr4 & CR4_CET != 0 && s.cr0 & CR0_WP == 0 {
        return CrWrite::Gp;
    }
    CrWrite::Set {
        value: cr4,
        load_pdptes,
    }
}

/// Whether the guest uses PAE paging outside long mode, where the CPU
/// holds the four PDPTEs in registers (loaded by MOV to CR0/CR3/CR4).
pub fn pae_paging(cr0: u64, cr4: u64, efer: u64) -> bool {
    cr0 & CR0_PG != 0 && cr4 & CR4_PAE != 0 && efer & EFER_LMA == 0
}

/// Whether a PAE page-directory-pointer entry may be loaded: a present
/// entry must have bits 2:1 and 8:5 and the bits above `maxphyaddr` clear.
pub fn pdpte_valid(pdpte: u64, maxphyaddr: u8) -> bool {
    pdpte & 1 == 0 || pdpte & (0x1e6 | reserved_gpa_bits(maxphyaddr)) == 0
}

/// Whether `pat` is a valid IA32_PAT value: each byte a memory type the
/// CPU knows (0, 1, 4, 5, 6, 7); WRMSR of anything else is #GP.
pub fn valid_pat(pat: u64) -> bool {
    (0..8).all(|i| matches!((pat >> (i * 8)) & 0xff, 0 | 1 | 4..=7))
}

/// DR6 as the CPU keeps a written value: reserved bits read as set.
pub fn dr6_fixed(v: u64) -> u64 {
    (v & 0xf00f) | 0xffff_0ff0
}

/// DR7 as the CPU keeps a written value: bit 10 set, reserved bits clear.
pub fn dr7_fixed(v: u64) -> u64 {
    (v & 0xffff_2bff) | 0x400
}

#[cfg(test)]
mod msr_dr_tests {
    use super::*;

    #[test]
    fn pat_bytes_must_be_known_memory_types() {
        assert!(valid_pat(0x0007_0406_0007_0406));
        assert!(!valid_pat(0x0007_0406_0007_0402));
        assert!(!valid_pat(0x0807_0406_0007_0406));
    }

    #[test]
    fn dr6_dr7_keep_fixed_bits() {
        assert_eq!(dr6_fixed(0), 0xffff_0ff0);
        assert_eq!(dr6_fixed(0xf), 0xffff_0fff);
        assert_eq!(dr7_fixed(0), 0x400);
        assert_eq!(dr7_fixed(0xffff_ffff), 0xffff_2fff);
    }
}
