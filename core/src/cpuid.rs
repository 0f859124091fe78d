//! Guest CPUID: the entry table and its lookup, what the guest's `CPUID`
//! instruction returns (KVM's `kvm_cpuid()`), the guest capabilities KVM
//! derives from the table, and rkvm's `KVM_GET_SUPPORTED_CPUID` list.
//!
//! Self-contained. `super::x86` uses [`GuestCaps`] from here, so the module
//! must include this file as a sibling of `x86.rs`.
//!
//! The facts come from arch/x86/kvm/cpuid.c (`kvm_find_cpuid_entry2`,
//! `get_out_of_range_cpuid_entry`, `kvm_cpuid`, `kvm_update_cpuid_runtime`,
//! `kvm_vcpu_after_set_cpuid`, `cpuid_query_maxphyaddr`, `__do_cpuid_func`,
//! `kvm_dev_ioctl_get_cpuid`) and arch/x86/include/asm/cpuid/api.h.
//!
//! # `KVM_GET_SUPPORTED_CPUID` errors (applied by the module, not here)
//!
//! KVM's `kvm_dev_ioctl_get_cpuid` gives:
//!
//! * `nent == 0`: `E2BIG`.
//! * `nent > KVM_MAX_CPUID_ENTRIES` (256): *not* an error; KVM silently
//!   clamps `nent` to 256 before filling the list.
//! * the list does not fit in `nent` entries ([`TooSmall`] here): `E2BIG`,
//!   and `nent` is not written back.
//! * success: `nent` is written back with the number of entries filled.

/// `KVM_CPUID_FLAG_SIGNIFCANT_INDEX` (sic): the entry matches only its own
/// `index`.
pub const KVM_CPUID_FLAG_SIGNIFCANT_INDEX: u32 = 1 << 0;
#[cfg_attr(rkvm_module, expect(dead_code, reason = "KVM UAPI constant"))]
/// `KVM_CPUID_FLAG_STATEFUL_FUNC` (obsolete; never set by KVM).
pub const KVM_CPUID_FLAG_STATEFUL_FUNC: u32 = 1 << 1;
#[cfg_attr(rkvm_module, expect(dead_code, reason = "KVM UAPI constant"))]
/// `KVM_CPUID_FLAG_STATE_READ_NEXT` (obsolete; never set by KVM).
pub const KVM_CPUID_FLAG_STATE_READ_NEXT: u32 = 1 << 2;
/// `KVM_MAX_CPUID_ENTRIES`: the largest table `KVM_SET_CPUID2` accepts and
/// the clamp applied to `nent` by `KVM_GET_SUPPORTED_CPUID`.
pub const KVM_MAX_CPUID_ENTRIES: usize = 256;

/// The MAXPHYADDR KVM assumes when the guest table has no 0x8000_0008 leaf
/// (`cpuid_query_maxphyaddr`).
pub const DEFAULT_MAXPHYADDR: u8 = 36;

/// Largest basic leaf rkvm reports.
pub const MAX_BASIC_LEAF: u32 = 0xd;

/// The XCR0 features rkvm offers a guest where the host has them: x87,
/// SSE and AVX (KVM offers more: MPX, AVX-512, PKRU, AMX, which rkvm does
/// not offer yet).
pub const SUPPORTED_XCR0: u64 = 0x7;
/// XCR0.AVX (YMM state).
const XCR0_YMM: u64 = 1 << 2;
/// The XSAVE area's legacy region and header, before any extended state.
const XSAVE_BASE_SIZE: u32 = 512 + 64;
/// Leaf 1 ECX: FMA, XSAVE, AVX, F16C.
const CPUID_1_ECX_FMA: u32 = 1 << 12;
const CPUID_1_ECX_XSAVE: u32 = 1 << 26;
const CPUID_1_ECX_AVX: u32 = 1 << 28;
const CPUID_1_ECX_F16C: u32 = 1 << 29;
/// Leaf 7.0 EBX: AVX2.
const CPUID_7_EBX_AVX2: u32 = 1 << 5;
/// Leaf 0xD.1 EAX bits rkvm passes through: XSAVEOPT and XGETBV with
/// ECX = 1 (not XSAVEC or XSAVES: no compacted format, no IA32_XSS).
const SUPPORTED_D_1_EAX: u32 = (1 << 0) | (1 << 2);
/// Largest extended leaf rkvm reports.
pub const MAX_EXTENDED_LEAF: u32 = 0x8000_0008;

/// One CPUID entry: `struct kvm_cpuid_entry2` (the UAPI type; its layout
/// is asserted in `uapi.rs`). Equality ignores nothing: tables from
/// userspace get their padding cleared ([`Entry::sanitized`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Entry {
    /// EAX input (leaf).
    pub function: u32,
    /// ECX input (subleaf); matters only with `KVM_CPUID_FLAG_SIGNIFCANT_INDEX`.
    pub index: u32,
    /// `KVM_CPUID_FLAG_*`.
    pub flags: u32,
    /// EAX output.
    pub eax: u32,
    /// EBX output.
    pub ebx: u32,
    /// ECX output.
    pub ecx: u32,
    /// EDX output.
    pub edx: u32,
    /// Reserved (zero).
    pub padding: [u32; 3],
}

impl Entry {
    /// The entry with its padding cleared, as rkvm keeps a table userspace
    /// set (KVM compares only the fields).
    pub const fn sanitized(self) -> Self {
        Entry {
            padding: [0; 3],
            ..self
        }
    }

    /// The outputs as `[eax, ebx, ecx, edx]`.
    pub const fn regs(&self) -> [u32; 4] {
        [self.eax, self.ebx, self.ecx, self.edx]
    }

    /// An entry for `function`/`index` with outputs `regs`; the flags are
    /// those KVM gives a leaf (`KVM_CPUID_FLAG_SIGNIFCANT_INDEX` iff
    /// [`is_indexed`]).
    pub const fn new(function: u32, index: u32, regs: [u32; 4]) -> Self {
        Entry {
            function,
            index,
            flags: if is_indexed(function) {
                KVM_CPUID_FLAG_SIGNIFCANT_INDEX
            } else {
                0
            },
            eax: regs[0],
            ebx: regs[1],
            ecx: regs[2],
            edx: regs[3],
            padding: [0; 3],
        }
    }

    const fn significant_index(&self) -> bool {
        self.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX != 0
    }
}

/// Leaves whose output depends on ECX (`cpuid_function_is_indexed`).
pub const fn is_indexed(function: u32) -> bool {
    matches!(
        function,
        0x4 | 0x7
            | 0xb
            | 0xd
            | 0xf
            | 0x10
            | 0x12
            | 0x14
            | 0x17
            | 0x18
            | 0x1d
            | 0x1e
            | 0x1f
            | 0x23
            | 0x24
            | 0x8000_001d
    )
}

/// The entry the guest sees for `function`/`index`
/// (`kvm_find_cpuid_entry_index`): the first entry with that function whose
/// index is not significant or equals `index`.
pub fn find(entries: &[Entry], function: u32, index: u32) -> Option<&Entry> {
    entries
        .iter()
        .find(|e| e.function == function && (!e.significant_index() || e.index == index))
}

/// The first entry for `function` whatever its index (`kvm_find_cpuid_entry`,
/// i.e. a lookup with `KVM_CPUID_INDEX_NOT_SIGNIFICANT`).
pub fn find_any(entries: &[Entry], function: u32) -> Option<&Entry> {
    entries.iter().find(|e| e.function == function)
}

/// The registers of the entry for `function`/`index`, if there is one
/// (an exact match as [`find`] defines it; no out-of-range fallback).
pub fn lookup(entries: &[Entry], function: u32, index: u32) -> Option<[u32; 4]> {
    find(entries, function, index).map(Entry::regs)
}

/// "AuthenticAMD" in EBX, ECX, EDX order.
const VENDOR_AMD: [u32; 3] = [0x6874_7541, 0x444d_4163, 0x6974_6e65];
/// "AMDisbetter!" (early AMD samples).
const VENDOR_AMD_OLD: [u32; 3] = [0x6944_4d41, 0x2172_6574, 0x7465_6273];
/// "HygonGenuine".
const VENDOR_HYGON: [u32; 3] = [0x6f67_7948, 0x656e_6975, 0x6e65_476e];

/// Whether leaf 0 names an AMD or Hygon CPU (`is_guest_vendor_amd`,
/// `is_guest_vendor_hygon`): such guests get AMD CPUID semantics.
pub fn vendor_is_amd(leaf0: &Entry) -> bool {
    let v = [leaf0.ebx, leaf0.ecx, leaf0.edx];
    v == VENDOR_AMD || v == VENDOR_AMD_OLD || v == VENDOR_HYGON
}

/// The vCPU state behind CPUID's dynamic bits (`kvm_update_cpuid_runtime`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Runtime {
    /// Guest XCR0 (leaf 0xD.0 EBX is the XSAVE size for it).
    pub xcr0: u64,
    /// Guest CR4 (OSXSAVE and PKE are reflected in leaves 1 and 7).
    pub cr4: u64,
    /// `IA32_APIC_BASE` (the enable bit is reflected in leaf 1 EDX.APIC).
    pub apic_base: u64,
}

// Bits used by the dynamic update and by `GuestCaps`.
const CR4_OSXSAVE: u64 = 1 << 18;
const CR4_PKE: u64 = 1 << 22;
const APIC_BASE_ENABLE: u64 = 1 << 11;

/// Register indices in `[eax, ebx, ecx, edx]`.
const EAX: usize = 0;
const EBX: usize = 1;
const ECX: usize = 2;
const EDX: usize = 3;

fn change(reg: &mut u32, bit: u32, on: bool) {
    if on {
        *reg |= bit;
    } else {
        *reg &= !bit;
    }
}

/// Feature bits, as `(function, index, register, bit)`.
pub mod feature {
    /// Where a feature flag lives in CPUID.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Flag {
        /// Leaf.
        pub function: u32,
        /// Subleaf.
        pub index: u32,
        /// Register index in `[eax, ebx, ecx, edx]`.
        pub reg: usize,
        /// Bit mask within the register.
        pub mask: u32,
    }

    const fn f(function: u32, index: u32, reg: usize, bit: u32) -> Flag {
        Flag {
            function,
            index,
            reg,
            mask: 1 << bit,
        }
    }

    #[cfg_attr(rkvm_module, expect(dead_code, reason = "named for the host tests"))]
    /// 1.EDX.FPU.
    pub const FPU: Flag = f(1, 0, 3, 0);
    /// 1.EDX.DE: debugging extensions (CR4.DE).
    pub const DE: Flag = f(1, 0, 3, 2);
    /// 1.EDX.PSE: 4 MiB pages (CR4.PSE).
    pub const PSE: Flag = f(1, 0, 3, 3);
    /// 1.EDX.TSC.
    pub const TSC: Flag = f(1, 0, 3, 4);
    /// 1.EDX.PAE.
    pub const PAE: Flag = f(1, 0, 3, 6);
    /// 1.EDX.MCE (CR4.MCE).
    pub const MCE: Flag = f(1, 0, 3, 7);
    /// 1.EDX.APIC: the local APIC is present and enabled (dynamic).
    pub const APIC: Flag = f(1, 0, 3, 9);
    /// 1.EDX.PGE: global pages (CR4.PGE).
    pub const PGE: Flag = f(1, 0, 3, 13);
    /// 1.EDX.FXSR: FXSAVE/FXRSTOR (CR4.OSFXSR).
    pub const FXSR: Flag = f(1, 0, 3, 24);
    /// 1.EDX.SSE (`X86_FEATURE_XMM`).
    pub const XMM: Flag = f(1, 0, 3, 25);
    /// 1.ECX.VMX.
    pub const VMX: Flag = f(1, 0, 2, 5);
    /// 1.ECX.PCID (CR4.PCIDE).
    pub const PCID: Flag = f(1, 0, 2, 17);
    /// 1.ECX.X2APIC.
    pub const X2APIC: Flag = f(1, 0, 2, 21);
    /// 1.ECX.XSAVE (CR4.OSXSAVE).
    pub const XSAVE: Flag = f(1, 0, 2, 26);
    /// 1.ECX.OSXSAVE (dynamic: mirrors CR4.OSXSAVE).
    pub const OSXSAVE: Flag = f(1, 0, 2, 27);
    /// 1.ECX.HYPERVISOR.
    pub const HYPERVISOR: Flag = f(1, 0, 2, 31);
    /// 7.0.EBX.FSGSBASE (CR4.FSGSBASE).
    pub const FSGSBASE: Flag = f(7, 0, 1, 0);
    /// 7.0.EBX.TSC_ADJUST (`IA32_TSC_ADJUST`).
    pub const TSC_ADJUST: Flag = f(7, 0, 1, 1);
    /// 7.0.EBX.SMEP (CR4.SMEP).
    pub const SMEP: Flag = f(7, 0, 1, 7);
    /// 7.0.EBX.SMAP (CR4.SMAP).
    pub const SMAP: Flag = f(7, 0, 1, 20);
    /// 7.0.ECX.UMIP (CR4.UMIP).
    pub const UMIP: Flag = f(7, 0, 2, 2);
    /// 7.0.ECX.PKU (CR4.PKE).
    pub const PKU: Flag = f(7, 0, 2, 3);
    /// 7.0.ECX.OSPKE (dynamic: mirrors CR4.PKE).
    pub const OSPKE: Flag = f(7, 0, 2, 4);
    /// 7.0.ECX.SHSTK: CET shadow stacks (CR4.CET).
    pub const SHSTK: Flag = f(7, 0, 2, 7);
    /// 7.0.ECX.LA57: 5-level paging (CR4.LA57).
    pub const LA57: Flag = f(7, 0, 2, 16);
    /// 7.0.EDX.IBT: CET indirect branch tracking (CR4.CET).
    pub const IBT: Flag = f(7, 0, 3, 20);
    /// 7.1.EAX.FRED.
    pub const FRED: Flag = f(7, 1, 0, 17);
    /// 7.1.EAX.LAM: linear address masking (CR4.LAM_SUP, CR3.LAM_U48/U57).
    pub const LAM: Flag = f(7, 1, 0, 26);
    /// 0x8000_0001.ECX.SVM (EFER.SVME).
    pub const SVM: Flag = f(0x8000_0001, 0, 2, 2);
    /// 0x8000_0001.EDX.NX (EFER.NXE).
    pub const NX: Flag = f(0x8000_0001, 0, 3, 20);
    /// 0x8000_0001.EDX.FXSR_OPT: fast FXSAVE/FXRSTOR (EFER.FFXSR).
    pub const FXSR_OPT: Flag = f(0x8000_0001, 0, 3, 25);
    /// 0x8000_0001.EDX.GBPAGES: 1 GiB pages.
    pub const GBPAGES: Flag = f(0x8000_0001, 0, 3, 26);
    /// 0x8000_0001.EDX.LM: long mode (EFER.LME/LMA).
    pub const LM: Flag = f(0x8000_0001, 0, 3, 29);
    /// 0x8000_0021.EAX.AUTOIBRS (EFER.AUTOIBRS).
    pub const AUTOIBRS: Flag = f(0x8000_0021, 0, 0, 8);
    /// 0x8000_0001.EDX.RDTSCP.
    pub const RDTSCP: Flag = f(0x8000_0001, 0, 3, 27);
    /// 7.0.ECX.RDPID.
    pub const RDPID: Flag = f(7, 0, 2, 22);
}

use feature::Flag;

/// Whether the table has `flag` (looked up as KVM's
/// `kvm_vcpu_after_set_cpuid` does, with `kvm_find_cpuid_entry_index`).
pub fn has(entries: &[Entry], flag: Flag) -> bool {
    find(entries, flag.function, flag.index).is_some_and(|e| e.regs()[flag.reg] & flag.mask != 0)
}

fn apply_runtime(entries: &[Entry], entry: &Entry, rt: &Runtime) -> [u32; 4] {
    let mut r = entry.regs();
    // KVM rewrites the table's first leaf-1 entry and its (7, 0) entry in
    // place; whichever lookup lands on those entries sees the new bits.
    if find_any(entries, 1).is_some_and(|e| core::ptr::eq(e, entry)) {
        change(
            &mut r[ECX],
            feature::OSXSAVE.mask,
            rt.cr4 & CR4_OSXSAVE != 0,
        );
        change(
            &mut r[EDX],
            feature::APIC.mask,
            rt.apic_base & APIC_BASE_ENABLE != 0,
        );
    }
    if find(entries, 7, 0).is_some_and(|e| core::ptr::eq(e, entry)) {
        change(&mut r[ECX], feature::OSPKE.mask, rt.cr4 & CR4_PKE != 0);
    }
    if find(entries, 0xd, 0).is_some_and(|e| core::ptr::eq(e, entry)) {
        r[EBX] = xsave_size(|i| lookup(entries, 0xd, i), rt.xcr0);
    }
    r
}

/// The size of a standard-format XSAVE area holding the state components
/// of `xcr0`, from the leaf 0xD subleaves `leaf(i)` gives (EAX size, EBX
/// offset): `xstate_required_size(xcr0, false)`.
pub fn xsave_size(leaf: impl Fn(u32) -> Option<[u32; 4]>, xcr0: u64) -> u32 {
    (2..63)
        .filter(|i| xcr0 & (1 << i) != 0)
        .filter_map(|i| leaf(i).map(|r| r[EBX] + r[EAX]))
        .fold(XSAVE_BASE_SIZE, u32::max)
}

/// `get_out_of_range_cpuid_entry`: for a non-AMD guest, a function beyond
/// the maximum of its class (or in a class with no base leaf) reads the
/// maximum basic leaf, keeping the requested index. `function` becomes that
/// leaf.
fn out_of_range<'a>(entries: &'a [Entry], function: &mut u32, index: u32) -> Option<&'a Entry> {
    let basic = find_any(entries, 0)?;
    if vendor_is_amd(basic) {
        return None;
    }
    let f = *function;
    let class = if (0x4000_0000..=0x4fff_ffff).contains(&f) {
        // Each 0x100-leaf hypervisor range is a class of its own.
        find_any(entries, f & 0xffff_ff00)
    } else if f >= 0xc000_0000 {
        find_any(entries, 0xc000_0000)
    } else {
        find_any(entries, f & 0x8000_0000)
    };
    if class.is_some_and(|c| f <= c.eax) {
        return None;
    }
    *function = basic.eax;
    find(entries, basic.eax, index)
}

/// What the guest's `CPUID` with EAX=`function`, ECX=`index` returns, as
/// `[eax, ebx, ecx, edx]` (`kvm_cpuid(..., exact_only = false)`):
///
/// * an entry matching as [`find`] says gives its registers;
/// * otherwise, unless leaf 0 names an AMD/Hygon vendor, a function above
///   its class's maximum (basic 0x0, hypervisor 0x4000_xx00, extended
///   0x8000_0000, Centaur 0xc000_0000), or in a class without a base leaf,
///   reads the highest basic leaf (leaf 0 EAX) with the same `index`
///   (Intel semantics);
/// * anything else reads zeros, except that leaves 0xB and 0x1F with a
///   subleaf-1 entry return ECX = `index & 0xff` and that entry's EDX
///   (the x2APIC ID) for undefined subleaves;
/// * the dynamic bits are applied: 1.ECX.OSXSAVE = CR4.OSXSAVE,
///   1.EDX.APIC = `IA32_APIC_BASE.EN`, 7.0.ECX.OSPKE = CR4.PKE
///   (set or cleared whatever the table says).
///
/// Not modelled: `MSR_IA32_TSX_CTRL` hiding HLE/RTM, Hyper-V's
/// invariant-TSC suppression, the MWAIT bit (only without the default
/// `KVM_X86_QUIRK_MISC_ENABLE_NO_MWAIT`) and 0xD EBX (XSAVE size) — rkvm
/// has none of those.
pub fn emulate(entries: &[Entry], function: u32, index: u32, rt: &Runtime) -> [u32; 4] {
    let mut function = function;
    let entry = match find(entries, function, index) {
        Some(e) => Some(e),
        None => out_of_range(entries, &mut function, index),
    };
    if let Some(e) = entry {
        return apply_runtime(entries, e, rt);
    }
    let mut r = [0; 4];
    if function == 0xb || function == 0x1f {
        if let Some(e) = find(entries, function, 1) {
            r[ECX] = index & 0xff;
            r[EDX] = e.edx;
        }
    }
    r
}

/// The guest capabilities KVM checks architectural state against
/// (`guest_cpu_cap_has`), plus the guest's MAXPHYADDR.
///
/// KVM sets a capability only if it is both in the guest table and
/// supported by KVM; build with [`GuestCaps::from_entries`] on the guest
/// table and [`GuestCaps::intersect`] with the supported list's caps.
/// `mce`, `pse`, `pae`, `de`, `tsc`, `pge`, `fxsr` and `xmm` are not
/// consulted by KVM's CR4 check (those CR4 bits are never reserved) but are
/// kept for callers that need them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuestCaps {
    /// Long mode (0x8000_0001.EDX.LM).
    pub lm: bool,
    /// No-execute (0x8000_0001.EDX.NX).
    pub nx: bool,
    /// SVM (0x8000_0001.ECX.SVM).
    pub svm: bool,
    /// Fast FXSAVE/FXRSTOR (0x8000_0001.EDX.FXSR_OPT).
    pub fxsr_opt: bool,
    /// Automatic IBRS (0x8000_0021.EAX.AUTOIBRS).
    pub autoibrs: bool,
    /// 1 GiB pages (0x8000_0001.EDX.GBPAGES).
    pub gbpages: bool,
    /// XSAVE (1.ECX.XSAVE).
    pub xsave: bool,
    /// SMEP (7.0.EBX.SMEP).
    pub smep: bool,
    /// SMAP (7.0.EBX.SMAP).
    pub smap: bool,
    /// RD/WR{FS,GS}BASE (7.0.EBX.FSGSBASE).
    pub fsgsbase: bool,
    /// Protection keys (7.0.ECX.PKU).
    pub pku: bool,
    /// 5-level paging (7.0.ECX.LA57).
    pub la57: bool,
    /// UMIP (7.0.ECX.UMIP).
    pub umip: bool,
    /// PCID (1.ECX.PCID).
    pub pcid: bool,
    /// VMX (1.ECX.VMX).
    pub vmx: bool,
    /// x2APIC (1.ECX.X2APIC).
    pub x2apic: bool,
    /// Machine check exception (1.EDX.MCE).
    pub mce: bool,
    /// 4 MiB pages (1.EDX.PSE).
    pub pse: bool,
    /// PAE (1.EDX.PAE).
    pub pae: bool,
    /// Debugging extensions (1.EDX.DE).
    pub de: bool,
    /// TSC (1.EDX.TSC).
    pub tsc: bool,
    /// Global pages (1.EDX.PGE).
    pub pge: bool,
    /// FXSAVE/FXRSTOR (1.EDX.FXSR).
    pub fxsr: bool,
    /// SSE (1.EDX.SSE).
    pub xmm: bool,
    /// CET shadow stacks (7.0.ECX.SHSTK).
    pub shstk: bool,
    /// CET indirect branch tracking (7.0.EDX.IBT).
    pub ibt: bool,
    /// Linear address masking (7.1.EAX.LAM).
    pub lam: bool,
    /// FRED (7.1.EAX.FRED).
    pub fred: bool,
    /// RDTSCP (0x8000_0001.EDX.RDTSCP).
    pub rdtscp: bool,
    /// RDPID (7.0.ECX.RDPID).
    pub rdpid: bool,
    /// `IA32_TSC_ADJUST` (7.0.EBX.TSC_ADJUST).
    pub tsc_adjust: bool,
    /// The XCR0 bits the guest may set (leaf 0xD.0 EDX:EAX, FP always):
    /// `vcpu->arch.guest_supported_xcr0`.
    pub xcr0: u64,
    /// Leaf 0 names AMD or Hygon (`vcpu->arch.is_amd_compatible`).
    pub amd: bool,
    /// MAXPHYADDR (0x8000_0008.EAX[7:0], or [`DEFAULT_MAXPHYADDR`]).
    pub maxphyaddr: u8,
}

impl GuestCaps {
    /// The capabilities a CPUID table describes.
    pub fn from_entries(entries: &[Entry]) -> Self {
        let h = |f| has(entries, f);
        GuestCaps {
            lm: h(feature::LM),
            nx: h(feature::NX),
            svm: h(feature::SVM),
            fxsr_opt: h(feature::FXSR_OPT),
            autoibrs: h(feature::AUTOIBRS),
            gbpages: h(feature::GBPAGES),
            xsave: h(feature::XSAVE),
            smep: h(feature::SMEP),
            smap: h(feature::SMAP),
            fsgsbase: h(feature::FSGSBASE),
            pku: h(feature::PKU),
            la57: h(feature::LA57),
            umip: h(feature::UMIP),
            pcid: h(feature::PCID),
            vmx: h(feature::VMX),
            x2apic: h(feature::X2APIC),
            mce: h(feature::MCE),
            pse: h(feature::PSE),
            pae: h(feature::PAE),
            de: h(feature::DE),
            tsc: h(feature::TSC),
            pge: h(feature::PGE),
            fxsr: h(feature::FXSR),
            xmm: h(feature::XMM),
            shstk: h(feature::SHSTK),
            ibt: h(feature::IBT),
            lam: h(feature::LAM),
            fred: h(feature::FRED),
            rdtscp: h(feature::RDTSCP),
            rdpid: h(feature::RDPID),
            tsc_adjust: h(feature::TSC_ADJUST),
            xcr0: find(entries, 0xd, 0).map_or(0, |e| u64::from(e.eax) | (u64::from(e.edx) << 32)),
            amd: find_any(entries, 0).is_some_and(vendor_is_amd),
            maxphyaddr: maxphyaddr(entries),
        }
    }

    /// The features both sides have (guest table ∧ KVM support, as in
    /// `kvm_vcpu_after_set_cpuid`). `amd` and `maxphyaddr` stay `self`'s.
    pub fn intersect(&self, other: &Self) -> Self {
        GuestCaps {
            lm: self.lm && other.lm,
            nx: self.nx && other.nx,
            svm: self.svm && other.svm,
            fxsr_opt: self.fxsr_opt && other.fxsr_opt,
            autoibrs: self.autoibrs && other.autoibrs,
            gbpages: self.gbpages && other.gbpages,
            xsave: self.xsave && other.xsave,
            smep: self.smep && other.smep,
            smap: self.smap && other.smap,
            fsgsbase: self.fsgsbase && other.fsgsbase,
            pku: self.pku && other.pku,
            la57: self.la57 && other.la57,
            umip: self.umip && other.umip,
            pcid: self.pcid && other.pcid,
            vmx: self.vmx && other.vmx,
            x2apic: self.x2apic && other.x2apic,
            mce: self.mce && other.mce,
            pse: self.pse && other.pse,
            pae: self.pae && other.pae,
            de: self.de && other.de,
            tsc: self.tsc && other.tsc,
            pge: self.pge && other.pge,
            fxsr: self.fxsr && other.fxsr,
            xmm: self.xmm && other.xmm,
            shstk: self.shstk && other.shstk,
            ibt: self.ibt && other.ibt,
            lam: self.lam && other.lam,
            fred: self.fred && other.fred,
            rdtscp: self.rdtscp && other.rdtscp,
            rdpid: self.rdpid && other.rdpid,
            tsc_adjust: self.tsc_adjust && other.tsc_adjust,
            xcr0: self.xcr0 & other.xcr0,
            amd: self.amd,
            maxphyaddr: self.maxphyaddr,
        }
    }
}

/// The guest's MAXPHYADDR (`cpuid_query_maxphyaddr`): 0x8000_0008.EAX[7:0]
/// if 0x8000_0000.EAX reaches 0x8000_0008 and that leaf exists, else 36.
pub fn maxphyaddr(entries: &[Entry]) -> u8 {
    match find_any(entries, 0x8000_0000) {
        Some(e) if e.eax >= 0x8000_0008 => {
            find_any(entries, 0x8000_0008).map_or(DEFAULT_MAXPHYADDR, |e| (e.eax & 0xff) as u8)
        }
        _ => DEFAULT_MAXPHYADDR,
    }
}

/// `out` has no room for the whole supported list (`E2BIG`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooSmall;

const fn bit(n: u32) -> u32 {
    1 << n
}

const fn genmask(hi: u32, lo: u32) -> u32 {
    (u32::MAX >> (31 - hi)) & (u32::MAX << lo)
}

/// Leaf 1 EDX bits rkvm passes through (KVM's list; none of these needs
/// XSAVE, a PMU or nesting). HTT, PSN, DS, ACPI, TM and PBE are dropped as
/// in KVM. MTRR and MCE/MCA stay as in KVM: the module must emulate their
/// MSRs.
pub const SUPPORTED_1_EDX: u32 = bit(0) // FPU
    | bit(1) // VME
    | bit(2) // DE
    | bit(3) // PSE
    | bit(4) // TSC
    | bit(5) // MSR
    | bit(6) // PAE
    | bit(7) // MCE
    | bit(8) // CX8
    | bit(9) // APIC (userspace may emulate the APIC)
    | bit(11) // SEP
    | bit(12) // MTRR
    | bit(13) // PGE
    | bit(14) // MCA
    | bit(15) // CMOV
    | bit(16) // PAT
    | bit(17) // PSE36
    | bit(19) // CLFLUSH
    | bit(23) // MMX
    | bit(24) // FXSR
    | bit(25) // SSE
    | bit(26) // SSE2
    | bit(27); // SS (self-snoop)

/// Leaf 1 ECX bits rkvm passes through (X2APIC and TSC-deadline are
/// [`EMULATED_1_ECX`]). Hidden although KVM reports them: VMX (no
/// nesting), PDCM (no PMU), PCID, XSAVE/OSXSAVE and everything needing
/// XCR0 (AVX, FMA, F16C). MONITOR/MWAIT are hidden, as in KVM.
pub const SUPPORTED_1_ECX: u32 = bit(0) // SSE3
    | bit(1) // PCLMULQDQ
    | bit(9) // SSSE3
    | bit(13) // CX16
    | bit(19) // SSE4.1
    | bit(20) // SSE4.2
    | bit(22) // MOVBE
    | bit(23) // POPCNT
    | bit(25) // AES
    | bit(30); // RDRAND

/// Leaf 7.0 EBX bits rkvm passes through. Hidden: SGX, AVX2 and AVX-512
/// (XCR0), INVPCID, MPX, Intel PT, RDT.
pub const SUPPORTED_7_0_EBX: u32 = bit(0) // FSGSBASE
    | bit(3) // BMI1
    | bit(4) // HLE
    | bit(6) // FDP_EXCPTN_ONLY
    | bit(7) // SMEP
    | bit(8) // BMI2
    | bit(9) // ERMS
    | bit(11) // RTM
    | bit(13) // ZERO_FCS_FDS
    | bit(18) // RDSEED
    | bit(19) // ADX
    | bit(20) // SMAP
    | bit(23) // CLFLUSHOPT
    | bit(24) // CLWB
    | bit(29); // SHA_NI

/// Leaf 7.0 ECX bits rkvm passes through. Hidden: AVX-512/VAES/VPCLMULQDQ
/// (XCR0), PKU/OSPKE (PKRU is XSAVE state), WAITPKG, SHSTK (CET state is
/// XSAVES state), SGX_LC, bus-lock detect (SVM clears it too).
pub const SUPPORTED_7_0_ECX: u32 = bit(2) // UMIP
    | bit(8) // GFNI (legacy-SSE encodings)
    | bit(16) // LA57 (KVM: passthrough)
    | bit(22) // RDPID
    | bit(25) // CLDEMOTE
    | bit(27) // MOVDIRI
    | bit(28); // MOVDIR64B

/// Leaf 7.0 EDX bits rkvm passes through. Hidden: AVX-512, AMX, IBT, and
/// the speculation-control MSRs (SPEC_CTRL, STIBP, SSBD, FLUSH_L1D,
/// ARCH_CAPABILITIES), which rkvm does not virtualise.
pub const SUPPORTED_7_0_EDX: u32 = bit(4) // FSRM
    | bit(10) // MD_CLEAR
    | bit(14) // SERIALIZE
    | bit(16); // TSXLDTRK

/// Leaf 0x8000_0001 ECX bits rkvm passes through. Hidden: SVM (no
/// nesting), OSVW (MSRs), XOP/FMA4 (YMM state), TOPOEXT (no 0x8000_001D/E
/// leaves), PERFCTR_CORE (no PMU).
pub const SUPPORTED_8000_0001_ECX: u32 = bit(0) // LAHF_LM
    | bit(1) // CMP_LEGACY
    | bit(4) // CR8_LEGACY
    | bit(5) // ABM
    | bit(6) // SSE4A
    | bit(7) // MISALIGNSSE
    | bit(8) // 3DNOWPREFETCH
    | bit(21); // TBM

/// Leaf 0x8000_0001 EDX bits rkvm passes through: the AMD copies of the
/// leaf 1 EDX bits, plus SYSCALL, NX, MMXEXT, FXSR_OPT, GBPAGES (hardware
/// walks 1 GiB guest pages under nested paging anyway), RDTSCP, LM and
/// 3DNow!.
pub const SUPPORTED_8000_0001_EDX: u32 = (SUPPORTED_1_EDX & ALIASED_1_EDX)
    | bit(11) // SYSCALL
    | bit(20) // NX
    | bit(22) // MMXEXT
    | bit(25) // FXSR_OPT
    | bit(26) // GBPAGES
    | bit(27) // RDTSCP
    | bit(29) // LM
    | bit(30) // 3DNOWEXT
    | bit(31); // 3DNOW

/// The leaf 1 EDX bits AMD duplicates in 0x8000_0001 EDX.
const ALIASED_1_EDX: u32 = genmask(9, 0) | genmask(17, 12) | bit(23) | bit(24);

/// Leaf 0x8000_0007 EDX: invariant TSC only.
pub const SUPPORTED_8000_0007_EDX: u32 = bit(8);

/// Leaf 0x8000_0008 EBX bits rkvm passes through: CLZERO, XSAVEERPTR,
/// WBNOINVD and the "not affected"/"must be zero" properties. The
/// speculation-control MSR bits are hidden.
pub const SUPPORTED_8000_0008_EBX: u32 = bit(0) // CLZERO
    | bit(2) // XSAVEERPTR
    | bit(9) // WBNOINVD
    | bit(20) // EFER_LMSLE_MBZ
    | bit(26); // AMD_SSB_NO

/// Leaf 1 ECX bits offered whatever the host has, as KVM's `EMULATED_F`:
/// HYPERVISOR, and X2APIC and TSC-deadline, which the in-kernel local APIC
/// provides (a VM without one gets x2APIC mode with every x2APIC MSR #GP,
/// and an inert `IA32_TSC_DEADLINE`, as in KVM).
pub const EMULATED_1_ECX: u32 = feature::HYPERVISOR.mask | feature::X2APIC.mask | bit(24);

/// Leaf 7.0 EBX bits rkvm offers whatever the host has: TSC_ADJUST, whose
/// MSR it emulates (KVM's `EMULATED_F(TSC_ADJUST)`).
pub const EMULATED_7_0_EBX: u32 = feature::TSC_ADJUST.mask;

/// The feature-flag registers [`supported`] filters, as
/// `(function, index, register, mask)`; every other bit of these registers
/// is cleared, and only [`EMULATED_1_ECX`] and [`EMULATED_7_0_EBX`] are
/// ever added.
pub const FEATURE_MASKS: [(u32, u32, usize, u32); 9] = [
    (1, 0, EDX, SUPPORTED_1_EDX),
    (1, 0, ECX, SUPPORTED_1_ECX),
    (7, 0, EBX, SUPPORTED_7_0_EBX),
    (7, 0, ECX, SUPPORTED_7_0_ECX),
    (7, 0, EDX, SUPPORTED_7_0_EDX),
    (0x8000_0001, 0, ECX, SUPPORTED_8000_0001_ECX),
    (0x8000_0001, 0, EDX, SUPPORTED_8000_0001_EDX),
    (0x8000_0007, 0, EDX, SUPPORTED_8000_0007_EDX),
    (0x8000_0008, 0, EBX, SUPPORTED_8000_0008_EBX),
];

/// The largest guest-physical address width KVM's 4-level nested paging
/// can map (`GuestPhysAddrSize` cap when 5-level TDP is unavailable).
const NPT_MAX_GPA_BITS: u32 = 48;

struct List<'a> {
    out: &'a mut [Entry],
    n: usize,
    /// The XCR0 features offered (0: no XSAVE).
    xcr0: u64,
}

impl List<'_> {
    fn push(&mut self, e: Entry) -> Result<(), TooSmall> {
        let slot = self.out.get_mut(self.n).ok_or(TooSmall)?;
        *slot = e;
        self.n += 1;
        Ok(())
    }
}

/// rkvm's `KVM_GET_SUPPORTED_CPUID` list: the host's CPUID (`host(leaf,
/// subleaf)` runs CPUID on the host) filtered to what rkvm virtualises, in
/// KVM's order and with KVM's flags. Returns the number of entries written
/// to `out`, or [`TooSmall`].
///
/// rkvm runs guests on SVM with nested paging, no in-kernel LAPIC, no
/// XSAVE, no PMU and no nesting, so compared with KVM (`__do_cpuid_func`):
///
/// * basic leaves stop at min(host, [`MAX_BASIC_LEAF`]) and leaf 0xD
///   (XSAVE) is left out; leaves 3, 5 (MONITOR), 8, 9, 0xA (PMU) and 0xC
///   are all-zero entries as in KVM; leaf 6 is ARAT only; leaf 0xB keeps
///   only the host's EDX (no topology) as in KVM; leaves 2 and 4 (all
///   subleaves until cache type 0) are the host's;
/// * leaf 7 has only subleaf 0, with EAX (max subleaf) = 0;
/// * extended leaves stop at min(host, [`MAX_EXTENDED_LEAF`]): brand
///   string and cache leaves are the host's (0x8000_0006 EDX[17:16]
///   cleared), 0x8000_0001 EBX[27:16] cleared, 0x8000_0008 reports the
///   host's PhysAddrSize, LinAddrSize at least 48, GuestPhysAddrSize
///   min(phys, 48) (4-level NPT), ECX without [31:16] and [11:8], EDX 0;
/// * feature registers are masked by [`FEATURE_MASKS`], and leaf 1 ECX
///   always has [`EMULATED_1_ECX`] (KVM's `EMULATED_F`);
/// * no hypervisor leaves (0x4000_0000: rkvm has no PV features) and no
///   Centaur leaves (KVM lists them only on Centaur/Zhaoxin hosts).
#[cfg_attr(rkvm_module, expect(dead_code, reason = "used by the host tests"))]
pub fn supported(
    host: impl Fn(u32, u32) -> [u32; 4],
    out: &mut [Entry],
) -> Result<usize, TooSmall> {
    supported_with_xsave(host, 0, out)
}

/// [`supported`] on a host that runs with XCR0 `host_xcr0` (0 if it does
/// not use XSAVE): XSAVE and leaf 0xD are offered for the components of
/// [`SUPPORTED_XCR0`] the host enabled, and AVX, AVX2, FMA and F16C where
/// AVX is among them (KVM's leaf 0xD: EAX/EDX the components, EBX/ECX the
/// area's size, subleaf 1 with XSAVEOPT/XGETBV1, one subleaf per
/// component).
pub fn supported_with_xsave(
    host: impl Fn(u32, u32) -> [u32; 4],
    host_xcr0: u64,
    out: &mut [Entry],
) -> Result<usize, TooSmall> {
    let d0 = host(0xd, 0);
    let host_has_xsave = host(1, 0)[ECX] & CPUID_1_ECX_XSAVE != 0;
    let xcr0 = if host_has_xsave && host(0, 0)[EAX] >= 0xd {
        host_xcr0 & SUPPORTED_XCR0 & (u64::from(d0[EAX]) | (u64::from(d0[EDX]) << 32))
    } else {
        0
    };
    let mut list = List {
        out,
        n: 0,
        xcr0: if xcr0 & 1 != 0 { xcr0 } else { 0 },
    };

    let leaf0 = host(0, 0);
    let max_basic = leaf0[EAX].min(MAX_BASIC_LEAF);
    for function in 0..=max_basic {
        basic_leaf(&host, &mut list, function, max_basic)?;
    }

    let leaf = host(0x8000_0000, 0);
    let max_ext = leaf[EAX].min(MAX_EXTENDED_LEAF);
    list.push(Entry::new(
        0x8000_0000,
        0,
        [max_ext, leaf[EBX], leaf[ECX], leaf[EDX]],
    ))?;
    for function in 0x8000_0001..=max_ext {
        extended_leaf(&host, &mut list, function)?;
    }
    Ok(list.n)
}

fn masked(function: u32, index: u32, mut r: [u32; 4]) -> [u32; 4] {
    for &(f, i, reg, mask) in FEATURE_MASKS.iter() {
        if f == function && i == index {
            r[reg] &= mask;
        }
    }
    r
}

fn basic_leaf(
    host: &impl Fn(u32, u32) -> [u32; 4],
    list: &mut List<'_>,
    function: u32,
    max_basic: u32,
) -> Result<(), TooSmall> {
    let raw = host(function, 0);
    let regs = match function {
        0 => [max_basic, raw[EBX], raw[ECX], raw[EDX]],
        1 => {
            let mut r = masked(1, 0, raw);
            r[ECX] |= EMULATED_1_ECX;
            if list.xcr0 != 0 {
                r[ECX] |= raw[ECX] & CPUID_1_ECX_XSAVE;
            }
            if list.xcr0 & XCR0_YMM != 0 {
                r[ECX] |= raw[ECX] & (CPUID_1_ECX_AVX | CPUID_1_ECX_FMA | CPUID_1_ECX_F16C);
            }
            r
        }
        2 => raw,
        4 => {
            // Every subleaf up to and including the first with cache type 0.
            list.push(Entry::new(4, 0, raw))?;
            let mut prev = raw;
            let mut index = 1;
            while prev[EAX] & 0x1f != 0 {
                prev = host(4, index);
                list.push(Entry::new(4, index, prev))?;
                index += 1;
            }
            return Ok(());
        }
        6 => [bit(2), 0, 0, 0],
        7 => {
            let mut r = masked(7, 0, raw);
            r[EBX] |= EMULATED_7_0_EBX;
            if list.xcr0 & XCR0_YMM != 0 {
                r[EBX] |= raw[EBX] & CPUID_7_EBX_AVX2;
            }
            [0, r[EBX], r[ECX], r[EDX]]
        }
        0xb => [0, 0, 0, raw[EDX]],
        0xd => return xsave_leaves(host, list),
        _ => [0; 4],
    };
    list.push(Entry::new(function, 0, regs))
}

/// Leaf 0xD for the XCR0 features offered: nothing without XSAVE.
fn xsave_leaves(host: &impl Fn(u32, u32) -> [u32; 4], list: &mut List<'_>) -> Result<(), TooSmall> {
    let xcr0 = list.xcr0;
    if xcr0 == 0 {
        return Ok(());
    }
    let size = xsave_size(|i| Some(host(0xd, i)), xcr0);
    list.push(Entry::new(
        0xd,
        0,
        [xcr0 as u32, size, size, (xcr0 >> 32) as u32],
    ))?;
    list.push(Entry::new(
        0xd,
        1,
        [host(0xd, 1)[EAX] & SUPPORTED_D_1_EAX, 0, 0, 0],
    ))?;
    for i in 2..63 {
        if xcr0 & (1 << i) != 0 {
            let r = host(0xd, i);
            list.push(Entry::new(0xd, i, [r[EAX], r[EBX], r[ECX], 0]))?;
        }
    }
    Ok(())
}

fn extended_leaf(
    host: &impl Fn(u32, u32) -> [u32; 4],
    list: &mut List<'_>,
    function: u32,
) -> Result<(), TooSmall> {
    let raw = host(function, 0);
    let regs = match function {
        0x8000_0001 => {
            let mut r = masked(function, 0, raw);
            r[EBX] &= !genmask(27, 16);
            r
        }
        0x8000_0002..=0x8000_0005 => raw,
        0x8000_0006 => [raw[EAX], raw[EBX], raw[ECX], raw[EDX] & !genmask(17, 16)],
        0x8000_0007 => [0, 0, 0, raw[EDX] & SUPPORTED_8000_0007_EDX],
        0x8000_0008 => {
            let phys = raw[EAX] & 0xff;
            let virt = ((raw[EAX] >> 8) & 0xff).max(48);
            let guest_phys = phys.min(NPT_MAX_GPA_BITS);
            [
                phys | (virt << 8) | (guest_phys << 16),
                raw[EBX] & SUPPORTED_8000_0008_EBX,
                raw[ECX] & !(genmask(31, 16) | genmask(11, 8)),
                0,
            ]
        }
        _ => [0; 4],
    };
    list.push(Entry::new(function, 0, regs))
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec;
    use std::vec::Vec;

    const INTEL: [u32; 3] = [0x756e_6547, 0x6c65_746e, 0x4965_6e69]; // GenuineIntel

    fn e(function: u32, index: u32, flags: u32, regs: [u32; 4]) -> Entry {
        Entry {
            function,
            index,
            flags,
            eax: regs[0],
            ebx: regs[1],
            ecx: regs[2],
            edx: regs[3],
            padding: [0; 3],
        }
    }

    fn leaf0(max: u32, vendor: [u32; 3]) -> Entry {
        e(0, 0, 0, [max, vendor[0], vendor[1], vendor[2]])
    }

    fn intel_table() -> Vec<Entry> {
        vec![
            leaf0(0xb, INTEL),
            e(1, 0, 0, [0x906ea, 0x11, 0x22, 0x33]),
            e(7, 0, KVM_CPUID_FLAG_SIGNIFCANT_INDEX, [0, 0x70, 0, 0]),
            e(7, 1, KVM_CPUID_FLAG_SIGNIFCANT_INDEX, [0, 0x71, 0, 0]),
            e(0xb, 0, KVM_CPUID_FLAG_SIGNIFCANT_INDEX, [1, 2, 0x100, 5]),
            e(0xb, 1, KVM_CPUID_FLAG_SIGNIFCANT_INDEX, [4, 8, 0x201, 5]),
            e(0x8000_0000, 0, 0, [0x8000_0008, 0, 0, 0]),
            e(0x8000_0008, 0, 0, [0x3027, 0, 0, 0]),
        ]
    }

    fn amd_table() -> Vec<Entry> {
        let mut t = intel_table();
        t[0] = leaf0(0xb, VENDOR_AMD);
        t
    }

    const RT: Runtime = Runtime {
        xcr0: 1,
        cr4: 0,
        apic_base: 0,
    };

    // kvm_find_cpuid_entry2: the index is ignored unless flagged significant.
    #[test]
    fn lookup_ignores_index_without_significant_flag() {
        let t = intel_table();
        assert_eq!(lookup(&t, 1, 5), Some([0x906ea, 0x11, 0x22, 0x33]));
    }

    // kvm_find_cpuid_entry2: significant index must match.
    #[test]
    fn lookup_matches_significant_index() {
        let t = intel_table();
        assert_eq!(lookup(&t, 7, 1).map(|r| r[1]), Some(0x71));
        assert_eq!(lookup(&t, 7, 2), None);
    }

    // kvm_find_cpuid_entry2: first matching entry wins.
    #[test]
    fn lookup_takes_first_duplicate() {
        let t = [e(1, 0, 0, [1, 0, 0, 0]), e(1, 0, 0, [2, 0, 0, 0])];
        assert_eq!(lookup(&t, 1, 0).map(|r| r[0]), Some(1));
    }

    #[test]
    fn find_any_ignores_significant_index() {
        let t = intel_table();
        assert_eq!(find_any(&t, 7).map(|e| e.index), Some(0));
    }

    // cpuid_function_is_indexed.
    #[test]
    fn indexed_leaves_match_kvm() {
        for f in [
            4, 7, 0xb, 0xd, 0xf, 0x10, 0x12, 0x14, 0x17, 0x18, 0x1d, 0x1e, 0x1f, 0x23, 0x24,
        ] {
            assert!(is_indexed(f), "{f:#x}");
        }
        assert!(is_indexed(0x8000_001d));
        for f in [0, 1, 2, 3, 5, 6, 0xa, 0x8000_0000, 0x8000_0001, 0x4000_0000] {
            assert!(!is_indexed(f), "{f:#x}");
        }
    }

    // kvm_cpuid: exact match returns the entry.
    #[test]
    fn emulate_returns_exact_entry() {
        let t = intel_table();
        assert_eq!(emulate(&t, 7, 1, &RT), [0, 0x71, 0, 0]);
    }

    // get_out_of_range_cpuid_entry: Intel reads the max basic leaf when the
    // basic function is beyond leaf 0's EAX.
    #[test]
    fn intel_basic_beyond_max_reads_last_basic_leaf() {
        let t = intel_table();
        // Max basic is 0xb; 0xb.0 exists.
        assert_eq!(emulate(&t, 0x20, 0, &RT), [1, 2, 0x100, 5]);
    }

    // ... and keeps the requested index.
    #[test]
    fn intel_out_of_range_keeps_index() {
        let t = intel_table();
        assert_eq!(emulate(&t, 0x20, 1, &RT), [4, 8, 0x201, 5]);
    }

    // ... and applies the 0xB/0x1F rule to the redirected leaf (kvm_cpuid).
    #[test]
    fn intel_out_of_range_to_leaf_b_passes_cl_and_x2apic_id() {
        let t = intel_table();
        assert_eq!(emulate(&t, 0x20, 7, &RT), [0, 0, 7, 5]);
    }

    #[test]
    fn intel_extended_beyond_max_reads_last_basic_leaf() {
        let t = intel_table();
        assert_eq!(emulate(&t, 0x8000_0009, 0, &RT), [1, 2, 0x100, 5]);
    }

    // A class with no base leaf is out of range.
    #[test]
    fn intel_missing_class_reads_last_basic_leaf() {
        let t = intel_table();
        assert_eq!(emulate(&t, 0x4000_0000, 0, &RT), [1, 2, 0x100, 5]);
        assert_eq!(emulate(&t, 0xc000_0001, 0, &RT), [1, 2, 0x100, 5]);
    }

    // Hypervisor sub-classes are 0x100 leaves each.
    #[test]
    fn intel_hypervisor_subclass_uses_its_own_base() {
        let mut t = intel_table();
        t.push(e(0x4000_0100, 0, 0, [0x4000_0101, 0, 0, 0]));
        assert_eq!(emulate(&t, 0x4000_0101, 0, &RT), [0; 4]);
        assert_eq!(emulate(&t, 0x4000_0102, 0, &RT), [1, 2, 0x100, 5]);
        // 0x4000_0000 is a separate class with no base entry.
        assert_eq!(emulate(&t, 0x4000_0001, 0, &RT), [1, 2, 0x100, 5]);
    }

    // In range but absent reads zeros even on Intel.
    #[test]
    fn intel_in_range_absent_leaf_reads_zero() {
        let t = intel_table();
        assert_eq!(emulate(&t, 3, 0, &RT), [0; 4]);
        assert_eq!(emulate(&t, 0x8000_0005, 0, &RT), [0; 4]);
    }

    // AMD semantics: anything undefined is zero.
    #[test]
    fn amd_beyond_max_reads_zero() {
        let t = amd_table();
        assert_eq!(emulate(&t, 0x20, 0, &RT), [0; 4]);
        assert_eq!(emulate(&t, 0x8000_0009, 0, &RT), [0; 4]);
        assert_eq!(emulate(&t, 0x4000_0000, 0, &RT), [0; 4]);
    }

    #[test]
    fn hygon_and_amdisbetter_are_amd() {
        assert!(vendor_is_amd(&leaf0(1, VENDOR_HYGON)));
        assert!(vendor_is_amd(&leaf0(1, VENDOR_AMD_OLD)));
        assert!(!vendor_is_amd(&leaf0(1, INTEL)));
    }

    // No leaf 0 at all: no fallback.
    #[test]
    fn without_leaf0_undefined_reads_zero() {
        let t = [e(1, 0, 0, [1, 2, 3, 4])];
        assert_eq!(emulate(&t, 0x20, 0, &RT), [0; 4]);
    }

    // kvm_cpuid: 0xB undefined subleaf passes CL and EDX from subleaf 1.
    #[test]
    fn leaf_b_undefined_subleaf_passes_cl_and_edx() {
        let t = amd_table();
        assert_eq!(emulate(&t, 0xb, 0x1_23, &RT), [0, 0, 0x23, 5]);
    }

    #[test]
    fn leaf_1f_without_subleaf1_reads_zero() {
        let mut t = amd_table();
        t[0].eax = 0x1f;
        t.push(e(0x1f, 0, KVM_CPUID_FLAG_SIGNIFCANT_INDEX, [1, 1, 1, 9]));
        assert_eq!(emulate(&t, 0x1f, 3, &RT), [0; 4]);
    }

    // kvm_update_cpuid_runtime: OSXSAVE and APIC follow CR4 / APIC base.
    #[test]
    fn leaf1_dynamic_bits_follow_cr4_and_apic_base() {
        let mut t = intel_table();
        t[1].ecx = feature::OSXSAVE.mask; // stale: set, but CR4.OSXSAVE = 0
        let r = emulate(&t, 1, 0, &RT);
        assert_eq!(r[2] & feature::OSXSAVE.mask, 0);
        assert_eq!(r[3] & feature::APIC.mask, 0);
        let rt = Runtime {
            xcr0: 1,
            cr4: CR4_OSXSAVE,
            apic_base: 0xfee0_0900,
        };
        let r = emulate(&t, 1, 0, &rt);
        assert_ne!(r[2] & feature::OSXSAVE.mask, 0);
        assert_ne!(r[3] & feature::APIC.mask, 0);
    }

    #[test]
    fn leaf7_ospke_follows_cr4_pke() {
        let t = intel_table();
        let rt = Runtime {
            xcr0: 1,
            cr4: CR4_PKE,
            apic_base: 0,
        };
        assert_ne!(emulate(&t, 7, 0, &rt)[2] & feature::OSPKE.mask, 0);
        assert_eq!(emulate(&t, 7, 1, &rt)[2] & feature::OSPKE.mask, 0);
    }

    // The dynamic bits live in the table entry, so a redirect to leaf 1
    // sees them too.
    #[test]
    fn redirect_to_leaf1_sees_dynamic_bits() {
        let t = [leaf0(1, INTEL), e(1, 0, 0, [0, 0, 0, 0])];
        let rt = Runtime {
            xcr0: 1,
            cr4: 0,
            apic_base: APIC_BASE_ENABLE,
        };
        assert_eq!(emulate(&t, 5, 0, &rt)[3], feature::APIC.mask);
    }

    // cpuid_query_maxphyaddr.
    #[test]
    fn maxphyaddr_defaults_to_36() {
        assert_eq!(maxphyaddr(&[]), 36);
        let t = [
            e(0x8000_0000, 0, 0, [0x8000_0007, 0, 0, 0]),
            e(0x8000_0008, 0, 0, [40, 0, 0, 0]),
        ];
        assert_eq!(maxphyaddr(&t), 36);
        let t = [e(0x8000_0000, 0, 0, [0x8000_0008, 0, 0, 0])];
        assert_eq!(maxphyaddr(&t), 36);
    }

    #[test]
    fn maxphyaddr_reads_leaf_8000_0008() {
        assert_eq!(maxphyaddr(&intel_table()), 0x27);
    }

    #[test]
    fn caps_from_entries_reads_each_flag() {
        let t = [
            leaf0(7, VENDOR_AMD),
            e(
                1,
                0,
                0,
                [
                    0,
                    0,
                    feature::XSAVE.mask | feature::PCID.mask,
                    feature::PAE.mask,
                ],
            ),
            e(
                7,
                0,
                KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
                [1, feature::SMEP.mask, feature::LA57.mask, 0],
            ),
            e(
                7,
                1,
                KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
                [feature::LAM.mask, 0, 0, 0],
            ),
            e(
                0x8000_0001,
                0,
                0,
                [0, 0, 0, feature::LM.mask | feature::NX.mask],
            ),
        ];
        let c = GuestCaps::from_entries(&t);
        assert!(c.xsave && c.pcid && c.pae && c.smep && c.la57 && c.lam && c.lm && c.nx && c.amd);
        assert!(!c.smap && !c.svm && !c.pku && !c.fred && !c.x2apic);
        assert_eq!(c.maxphyaddr, 36);
    }

    #[test]
    fn caps_intersect_keeps_guest_maxphyaddr() {
        let a = GuestCaps {
            lm: true,
            nx: true,
            maxphyaddr: 40,
            ..Default::default()
        };
        let b = GuestCaps {
            lm: true,
            maxphyaddr: 48,
            ..Default::default()
        };
        let c = a.intersect(&b);
        assert!(c.lm && !c.nx);
        assert_eq!(c.maxphyaddr, 40);
    }

    // A plausible AMD Zen host.
    fn zen_host(leaf: u32, sub: u32) -> [u32; 4] {
        match (leaf, sub) {
            (0, _) => [0x10, VENDOR_AMD[0], VENDOR_AMD[1], VENDOR_AMD[2]],
            (1, _) => [0x00a2_0f12, 0x0010_0800, 0xfef8_3203, 0x178b_fbff],
            // AMD reserves leaf 4: all zeros, so one subleaf.
            (4, _) => [0; 4],
            (7, 0) => [1, 0x219c_97a9, 0x0040_068c, 0x10],
            (7, 1) => [0, 0, 0, 0],
            (0xb, _) => [1, 2, 0x100, 7],
            (0xd, _) => [0x207, 0x340, 0x380, 0],
            (0x8000_0000, _) => [0x8000_0028, VENDOR_AMD[0], VENDOR_AMD[1], VENDOR_AMD[2]],
            (0x8000_0001, _) => [0x00a2_0f12, 0x2000_0000, 0x75c2_37ff, 0x2fd3_fbff],
            (0x8000_0006, _) => [0, 0, 0x0200_6140, 0x0803_9140],
            (0x8000_0007, _) => [0, 0x3b, 0, 0x6799],
            (0x8000_0008, _) => [0x0000_3030, 0x791e_f257, 0x0000_500f, 0x10000],
            _ => [0xdead, 0xbeef, 0xdead, 0xbeef],
        }
    }

    fn zen_list() -> Vec<Entry> {
        let mut out = [Entry::default(); KVM_MAX_CPUID_ENTRIES];
        let n = supported(zen_host, &mut out).unwrap();
        out[..n].to_vec()
    }

    // A host whose XSAVE components are x87, SSE, AVX and AVX-512.
    fn xsave_host(leaf: u32, sub: u32) -> [u32; 4] {
        match (leaf, sub) {
            (1, _) => {
                let r = zen_host(1, 0);
                [r[0], r[1], r[2] | (1 << 26) | (1 << 27) | (1 << 28), r[3]]
            }
            (7, 0) => [1, 0x219c_97a9 | (1 << 5), 0x0040_068c, 0x10],
            (0xd, 0) => [0xe7, 0x980, 0x988, 0],
            (0xd, 1) => [0xf, 0x980, 0, 0],
            (0xd, 2) => [0x100, 0x240, 0, 0],
            (0xd, 5) => [0x40, 0x340, 0, 0],
            (0xd, 6) => [0x200, 0x380, 0, 0],
            (0xd, 7) => [0x400, 0x580, 0, 0],
            _ => zen_host(leaf, sub),
        }
    }

    // __do_cpuid_func case 0xd: the offered components, their size, one
    // subleaf each; XSAVE and AVX in leaf 1 only with them.
    #[test]
    fn supported_offers_xsave_for_the_host_xcr0_it_enabled() {
        let mut out = [Entry::default(); KVM_MAX_CPUID_ENTRIES];
        let n = supported_with_xsave(xsave_host, 0xe7, &mut out).unwrap();
        let l = &out[..n];
        let d: Vec<&Entry> = l.iter().filter(|e| e.function == 0xd).collect();
        assert_eq!(d.len(), 3);
        assert_eq!(d[0].regs(), [0x7, 0x340, 0x340, 0]);
        assert_eq!(d[1].regs(), [0x5, 0, 0, 0]);
        assert_eq!((d[2].index, d[2].regs()), (2, [0x100, 0x240, 0, 0]));
        let ecx = l[1].ecx;
        assert_ne!(ecx & (1 << 26), 0);
        assert_ne!(ecx & (1 << 28), 0);
        assert_eq!(ecx & (1 << 27), 0, "OSXSAVE is dynamic");
        let l7 = l.iter().find(|e| e.function == 7).unwrap();
        assert_ne!(l7.ebx & (1 << 5), 0);
        // A host that keeps AVX off in XCR0 gets no AVX and a smaller area.
        let n = supported_with_xsave(xsave_host, 0x3, &mut out).unwrap();
        let l = &out[..n];
        let d0 = l.iter().find(|e| e.function == 0xd).unwrap();
        assert_eq!(d0.regs(), [0x3, 0x240, 0x240, 0]);
        assert_eq!(l[1].ecx & (1 << 28), 0);
        // Without XSAVE in use, nothing of it.
        let n = supported_with_xsave(xsave_host, 0, &mut out).unwrap();
        assert!(out[..n].iter().all(|e| e.function != 0xd));
    }

    // kvm_update_cpuid_runtime: 0xD.0 EBX is the size for the guest's XCR0.
    #[test]
    fn leaf_d_ebx_follows_guest_xcr0() {
        let mut out = [Entry::default(); KVM_MAX_CPUID_ENTRIES];
        let n = supported_with_xsave(xsave_host, 0x7, &mut out).unwrap();
        let t = &out[..n];
        let rt = |xcr0| Runtime { xcr0, ..RT };
        assert_eq!(emulate(t, 0xd, 0, &rt(1))[1], 0x240);
        assert_eq!(emulate(t, 0xd, 0, &rt(7))[1], 0x340);
    }

    #[test]
    fn supported_leaf0_caps_max_basic_and_keeps_vendor() {
        let l = zen_list();
        assert_eq!(
            l[0],
            Entry::new(0, 0, [0xd, VENDOR_AMD[0], VENDOR_AMD[1], VENDOR_AMD[2]])
        );
    }

    #[test]
    fn supported_leaf0_keeps_smaller_host_max() {
        let host = |l, s| if l == 0 { [5, 0, 0, 0] } else { zen_host(l, s) };
        let mut out = [Entry::default(); 64];
        let n = supported(host, &mut out).unwrap();
        assert_eq!(out[0].eax, 5);
        assert!(out[..n]
            .iter()
            .all(|e| e.function <= 5 || e.function >= 0x8000_0000));
    }

    #[test]
    fn supported_lists_leaves_in_kvm_order_without_0xd() {
        let l = zen_list();
        let f: Vec<u32> = l.iter().map(|e| e.function).collect();
        let mut want: Vec<u32> = (0..=0xc).collect();
        want.extend(0x8000_0000..=0x8000_0008);
        assert_eq!(f, want);
    }

    // __do_cpuid_func / do_host_cpuid: flags.
    #[test]
    fn supported_flags_significant_index_on_indexed_leaves() {
        for e in zen_list() {
            assert_eq!(
                e.flags != 0,
                matches!(e.function, 4 | 7 | 0xb),
                "{:#x}",
                e.function
            );
            assert_eq!(e.flags & !KVM_CPUID_FLAG_SIGNIFCANT_INDEX, 0);
        }
    }

    // EMULATED_F(HYPERVISOR).
    #[test]
    fn supported_sets_hypervisor_bit() {
        let l = zen_list();
        assert_ne!(l[1].ecx & feature::HYPERVISOR.mask, 0);
    }

    #[test]
    fn supported_hides_xsave_avx_mwait_vmx_pcid_and_emulates_x2apic() {
        let c = zen_list()[1].ecx;
        for b in [3, 5, 12, 15, 17, 26, 27, 28, 29] {
            assert_eq!(c & bit(b), 0, "1.ECX bit {b}");
        }
        let host_c = zen_host(1, 0)[2];
        assert_eq!(c, (host_c & SUPPORTED_1_ECX) | bit(31) | bit(24) | bit(21));
    }

    #[test]
    fn supported_keeps_baseline_features() {
        let l = zen_list();
        let edx = l[1].edx;
        for b in [0, 4, 5, 6, 8, 15, 16, 17, 19, 23, 24, 25, 26] {
            assert_ne!(edx & bit(b), 0, "1.EDX bit {b}");
        }
        let ecx = l[1].ecx;
        for b in [0, 1, 9, 13, 19, 20, 22, 23, 25, 30] {
            assert_ne!(ecx & bit(b), 0, "1.ECX bit {b}");
        }
        let e1 = l.iter().find(|e| e.function == 0x8000_0001).unwrap();
        for b in [11, 20, 26, 27, 29] {
            assert_ne!(e1.edx & bit(b), 0, "8000_0001.EDX bit {b}");
        }
        assert_ne!(e1.ecx & bit(0), 0); // LAHF_LM
        assert_ne!(e1.ecx & bit(5), 0); // ABM
        assert_eq!(e1.ecx & bit(2), 0); // no SVM
    }

    #[test]
    fn supported_leaf7_only_subleaf0_filtered() {
        let l = zen_list();
        let s: Vec<&Entry> = l.iter().filter(|e| e.function == 7).collect();
        assert_eq!(s.len(), 1);
        let host = zen_host(7, 0);
        assert_eq!(
            s[0].regs(),
            [
                0,
                host[1] & SUPPORTED_7_0_EBX | EMULATED_7_0_EBX,
                host[2] & SUPPORTED_7_0_ECX,
                host[3] & SUPPORTED_7_0_EDX
            ]
        );
        // AVX2 and PKU gone.
        assert_eq!(s[0].ebx & bit(5), 0);
        assert_eq!(s[0].ecx & bit(3), 0);
    }

    // __do_cpuid_func case 0xa without a PMU; case 6; case 0xb.
    #[test]
    fn supported_pmu_thermal_topology_leaves() {
        let l = zen_list();
        assert_eq!(l[0xa].regs(), [0; 4]);
        assert_eq!(l[6].regs(), [4, 0, 0, 0]);
        assert_eq!(l[5].regs(), [0; 4]);
        assert_eq!(l[0xb].regs(), [0, 0, 0, 7]);
    }

    // __do_cpuid_func case 0x80000008 with TDP and 4-level NPT.
    #[test]
    fn supported_reports_address_sizes() {
        let l = zen_list();
        let e = l.iter().find(|e| e.function == 0x8000_0008).unwrap();
        assert_eq!(e.eax, 0x30 | (0x30 << 8) | (0x30 << 16));
        assert_eq!(e.ecx, 0x500f & !genmask(11, 8));
        assert_eq!(e.edx, 0);
    }

    #[test]
    fn supported_caps_guest_phys_at_48_and_raises_virt_to_48() {
        let host = |l, s| {
            if l == 0x8000_0008 {
                [0x2734, 0, 0, 0]
            } else {
                zen_host(l, s)
            }
        };
        let mut out = [Entry::default(); 64];
        let n = supported(host, &mut out).unwrap();
        let e = out[..n].iter().find(|e| e.function == 0x8000_0008).unwrap();
        assert_eq!(e.eax, 0x34 | (48 << 8) | (48 << 16));
    }

    #[test]
    fn supported_extended_max_capped() {
        let l = zen_list();
        let e = l.iter().find(|e| e.function == 0x8000_0000).unwrap();
        assert_eq!(e.eax, MAX_EXTENDED_LEAF);
        assert_eq!(e.ebx, VENDOR_AMD[0]);
    }

    #[test]
    fn supported_leaf4_reads_subleaves_until_type_zero() {
        let host = |l, s: u32| match (l, s) {
            (4, 0..=2) => [0x121 + s, s, s, s],
            (4, _) => [0, 0, 0, 0],
            _ => zen_host(l, s),
        };
        let mut out = [Entry::default(); 64];
        let n = supported(host, &mut out).unwrap();
        let s: Vec<u32> = out[..n]
            .iter()
            .filter(|e| e.function == 4)
            .map(|e| e.index)
            .collect();
        assert_eq!(s, [0, 1, 2, 3]);
    }

    // get_next_cpuid returning NULL -> -E2BIG.
    #[test]
    fn supported_too_small_is_an_error() {
        let n = zen_list().len();
        let mut out = vec![Entry::default(); n - 1];
        assert_eq!(supported(zen_host, &mut out), Err(TooSmall));
        let mut out = vec![Entry::default(); n];
        assert_eq!(supported(zen_host, &mut out), Ok(n));
        assert_eq!(supported(zen_host, &mut []), Err(TooSmall));
    }

    // The supported list, used as a guest table, gives sane caps.
    #[test]
    fn supported_caps_have_no_xsave_or_nesting() {
        let c = GuestCaps::from_entries(&zen_list());
        assert!(!c.xsave && !c.svm && !c.vmx && !c.pku && !c.pcid && !c.shstk);
        assert!(c.x2apic);
        assert!(c.lm && c.nx && c.pae && c.smep && c.smap && c.fsgsbase && c.amd);
        assert_eq!(c.maxphyaddr, 0x30);
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        /// A host whose every register is random, except that leaf 4
        /// terminates and max leaves are in a plausible range.
        fn host_from(
            seed: [u32; 32],
            max_basic: u32,
            max_ext: u32,
        ) -> impl Fn(u32, u32) -> [u32; 4] {
            move |l: u32, s: u32| {
                let h = (l.wrapping_mul(0x9e37_79b9) ^ s.wrapping_mul(0x85eb_ca6b)) as usize;
                let r = |k: usize| seed[(h.wrapping_add(k * 17)) % 32];
                match l {
                    0 => [max_basic, r(1), r(2), r(3)],
                    0x8000_0000 => [max_ext, r(1), r(2), r(3)],
                    4 if s > 0 => [0; 4],
                    _ => [r(0), r(1), r(2), r(3)],
                }
            }
        }

        proptest! {
            #[test]
            fn supported_never_sets_a_bit_the_host_lacks(
                seed in prop::array::uniform32(any::<u32>()),
                max_basic in 0u32..0x30,
                max_ext in 0x8000_0000u32..0x8000_0030,
            ) {
                let host = host_from(seed, max_basic, max_ext);
                let mut out = [Entry::default(); KVM_MAX_CPUID_ENTRIES];
                let n = supported(&host, &mut out).unwrap();
                for e in &out[..n] {
                    for &(f, i, reg, mask) in FEATURE_MASKS.iter() {
                        if e.function != f || e.index != i {
                            continue;
                        }
                        let mut extra = e.regs()[reg] & !host(f, i)[reg];
                        let emulated = match (f, reg) {
                            (1, ECX) => EMULATED_1_ECX,
                            (7, EBX) => EMULATED_7_0_EBX,
                            _ => 0,
                        };
                        extra &= !emulated;
                        prop_assert_eq!(extra, 0, "leaf {:#x} reg {}", f, reg);
                        prop_assert_eq!(e.regs()[reg] & !mask & !emulated, 0);
                    }
                    prop_assert!(e.function != 0xd);
                    prop_assert_eq!(e.flags, if is_indexed(e.function) { KVM_CPUID_FLAG_SIGNIFCANT_INDEX } else { 0 });
                }
                let caps = GuestCaps::from_entries(&out[..n]);
                prop_assert!(!caps.xsave && !caps.svm && !caps.vmx && !caps.pku);
                prop_assert_eq!(caps.x2apic, max_basic >= 1);
                // Shorter buffers fail rather than truncate.
                let mut short = vec![Entry::default(); n - 1];
                prop_assert_eq!(supported(&host, &mut short), Err(TooSmall));
            }

            #[test]
            fn emulate_matches_lookup_on_exact_hits(
                regs in prop::array::uniform4(any::<u32>()),
                function in any::<u32>(),
                index in any::<u32>(),
                significant in any::<bool>(),
            ) {
                prop_assume!(function != 1 && function != 7);
                let flags = if significant { KVM_CPUID_FLAG_SIGNIFCANT_INDEX } else { 0 };
                let t = [e(function, index, flags, regs)];
                prop_assert_eq!(lookup(&t, function, index), Some(regs));
                prop_assert_eq!(emulate(&t, function, index, &RT), regs);
            }

            #[test]
            fn amd_guest_undefined_leaves_are_zero(function in any::<u32>(), index in any::<u32>()) {
                let t = amd_table();
                if find(&t, function, index).is_none() && function != 0xb {
                    prop_assert_eq!(emulate(&t, function, index, &RT), [0; 4]);
                }
            }
        }
    }
}
