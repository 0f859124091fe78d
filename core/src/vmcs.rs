//! The Intel VMCS model: field encodings with their widths checked at
//! compile time, VM-execution control bits, control computation from the
//! VMX capability MSRs, EPT entries, exit reasons and exit-qualification
//! decoding (Intel SDM volume 3C, chapters 24-28 and appendix A).
//!
//! Nothing here touches hardware: the kernel module reads the MSRs and does
//! the VMREAD/VMWRITE; this file says what the values mean.

use core::marker::PhantomData;

/// The width of a VMCS field, as bits 14:13 of its encoding say.
pub trait Width {
    /// The encoding's width code: 0 16-bit, 1 64-bit, 2 32-bit, 3 natural.
    const CODE: u32;
    /// The Rust type of the field's value.
    type Value: Copy;
    /// Widens a value for VMWRITE.
    fn to_raw(v: Self::Value) -> u64;
    /// Narrows a VMREAD result (the upper bits are zero for narrow fields).
    fn from_raw(v: u64) -> Self::Value;
}

/// A 16-bit field.
#[derive(Clone, Copy, Debug)]
pub struct W16;
/// A 32-bit field.
#[derive(Clone, Copy, Debug)]
pub struct W32;
/// A 64-bit field (accessed whole in 64-bit mode).
#[derive(Clone, Copy, Debug)]
pub struct W64;
/// A natural-width field (64 bits on a 64-bit host).
#[derive(Clone, Copy, Debug)]
pub struct WNat;

impl Width for W16 {
    const CODE: u32 = 0;
    type Value = u16;
    fn to_raw(v: u16) -> u64 {
        u64::from(v)
    }
    fn from_raw(v: u64) -> u16 {
        v as u16
    }
}

impl Width for W32 {
    const CODE: u32 = 2;
    type Value = u32;
    fn to_raw(v: u32) -> u64 {
        u64::from(v)
    }
    fn from_raw(v: u64) -> u32 {
        v as u32
    }
}

impl Width for W64 {
    const CODE: u32 = 1;
    type Value = u64;
    fn to_raw(v: u64) -> u64 {
        v
    }
    fn from_raw(v: u64) -> u64 {
        v
    }
}

impl Width for WNat {
    const CODE: u32 = 3;
    type Value = u64;
    fn to_raw(v: u64) -> u64 {
        v
    }
    fn from_raw(v: u64) -> u64 {
        v
    }
}

/// A VMCS field: its encoding and, in the type, its width.
#[derive(Debug)]
pub struct Field<W: Width> {
    enc: u32,
    _w: PhantomData<W>,
}

impl<W: Width> Clone for Field<W> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<W: Width> Copy for Field<W> {}

impl<W: Width> Field<W> {
    /// A field with encoding `enc`. Used in `const` items, so an encoding
    /// whose width bits disagree with `W` (or a "high" half access) stops
    /// the build.
    pub const fn new(enc: u32) -> Self {
        assert!((enc >> 13) & 3 == W::CODE, "VMCS field width mismatch");
        assert!(enc & 1 == 0, "high-half accesses are for 32-bit hosts");
        assert!(
            enc >> 15 == 0 && enc & (1 << 12) == 0,
            "reserved encoding bits"
        );
        Self {
            enc,
            _w: PhantomData,
        }
    }

    /// The encoding VMREAD/VMWRITE take.
    pub const fn encoding(self) -> u32 {
        self.enc
    }

    /// The field's type: 0 control, 1 VM-exit information, 2 guest state,
    /// 3 host state (encoding bits 11:10).
    #[cfg_attr(rkvm_module, expect(dead_code, reason = "used by the host tests"))]
    pub const fn kind(self) -> u32 {
        (self.enc >> 10) & 3
    }
}

/// Every VMCS field rkvm uses.
#[allow(missing_docs, reason = "the names are the SDM's")]
#[cfg_attr(
    rkvm_module,
    expect(dead_code, reason = "the SDM's fields, beyond what rkvm writes")
)]
pub mod field {
    use super::{Field, WNat, W16, W32, W64};

    pub const VPID: Field<W16> = Field::new(0x0000);
    pub const GUEST_ES_SELECTOR: Field<W16> = Field::new(0x0800);
    pub const GUEST_CS_SELECTOR: Field<W16> = Field::new(0x0802);
    pub const GUEST_SS_SELECTOR: Field<W16> = Field::new(0x0804);
    pub const GUEST_DS_SELECTOR: Field<W16> = Field::new(0x0806);
    pub const GUEST_FS_SELECTOR: Field<W16> = Field::new(0x0808);
    pub const GUEST_GS_SELECTOR: Field<W16> = Field::new(0x080a);
    pub const GUEST_LDTR_SELECTOR: Field<W16> = Field::new(0x080c);
    pub const GUEST_TR_SELECTOR: Field<W16> = Field::new(0x080e);
    pub const HOST_ES_SELECTOR: Field<W16> = Field::new(0x0c00);
    pub const HOST_CS_SELECTOR: Field<W16> = Field::new(0x0c02);
    pub const HOST_SS_SELECTOR: Field<W16> = Field::new(0x0c04);
    pub const HOST_DS_SELECTOR: Field<W16> = Field::new(0x0c06);
    pub const HOST_FS_SELECTOR: Field<W16> = Field::new(0x0c08);
    pub const HOST_GS_SELECTOR: Field<W16> = Field::new(0x0c0a);
    pub const HOST_TR_SELECTOR: Field<W16> = Field::new(0x0c0c);

    pub const MSR_BITMAP: Field<W64> = Field::new(0x2004);
    pub const EXIT_MSR_STORE_ADDR: Field<W64> = Field::new(0x2006);
    pub const EXIT_MSR_LOAD_ADDR: Field<W64> = Field::new(0x2008);
    pub const ENTRY_MSR_LOAD_ADDR: Field<W64> = Field::new(0x200a);
    pub const TSC_OFFSET: Field<W64> = Field::new(0x2010);
    pub const EPT_POINTER: Field<W64> = Field::new(0x201a);
    pub const GUEST_PHYSICAL_ADDRESS: Field<W64> = Field::new(0x2400);
    pub const VMCS_LINK_POINTER: Field<W64> = Field::new(0x2800);
    pub const GUEST_DEBUGCTL: Field<W64> = Field::new(0x2802);
    pub const GUEST_PAT: Field<W64> = Field::new(0x2804);
    pub const GUEST_EFER: Field<W64> = Field::new(0x2806);
    pub const GUEST_PDPTE0: Field<W64> = Field::new(0x280a);
    pub const GUEST_PDPTE1: Field<W64> = Field::new(0x280c);
    pub const GUEST_PDPTE2: Field<W64> = Field::new(0x280e);
    pub const GUEST_PDPTE3: Field<W64> = Field::new(0x2810);
    pub const HOST_PAT: Field<W64> = Field::new(0x2c00);
    pub const HOST_EFER: Field<W64> = Field::new(0x2c02);

    pub const PIN_CONTROLS: Field<W32> = Field::new(0x4000);
    pub const PROC_CONTROLS: Field<W32> = Field::new(0x4002);
    pub const EXCEPTION_BITMAP: Field<W32> = Field::new(0x4004);
    pub const CR3_TARGET_COUNT: Field<W32> = Field::new(0x400a);
    pub const EXIT_CONTROLS: Field<W32> = Field::new(0x400c);
    pub const EXIT_MSR_STORE_COUNT: Field<W32> = Field::new(0x400e);
    pub const EXIT_MSR_LOAD_COUNT: Field<W32> = Field::new(0x4010);
    pub const ENTRY_CONTROLS: Field<W32> = Field::new(0x4012);
    pub const ENTRY_MSR_LOAD_COUNT: Field<W32> = Field::new(0x4014);
    pub const ENTRY_INTR_INFO: Field<W32> = Field::new(0x4016);
    pub const ENTRY_EXCEPTION_ERROR_CODE: Field<W32> = Field::new(0x4018);
    pub const ENTRY_INSTRUCTION_LEN: Field<W32> = Field::new(0x401a);
    pub const PROC_CONTROLS2: Field<W32> = Field::new(0x401e);
    pub const VM_INSTRUCTION_ERROR: Field<W32> = Field::new(0x4400);
    pub const EXIT_REASON: Field<W32> = Field::new(0x4402);
    pub const EXIT_INTR_INFO: Field<W32> = Field::new(0x4404);
    pub const EXIT_INTR_ERROR_CODE: Field<W32> = Field::new(0x4406);
    pub const IDT_VECTORING_INFO: Field<W32> = Field::new(0x4408);
    pub const IDT_VECTORING_ERROR_CODE: Field<W32> = Field::new(0x440a);
    pub const EXIT_INSTRUCTION_LEN: Field<W32> = Field::new(0x440c);
    pub const EXIT_INSTRUCTION_INFO: Field<W32> = Field::new(0x440e);
    pub const GUEST_ES_LIMIT: Field<W32> = Field::new(0x4800);
    pub const GUEST_CS_LIMIT: Field<W32> = Field::new(0x4802);
    pub const GUEST_SS_LIMIT: Field<W32> = Field::new(0x4804);
    pub const GUEST_DS_LIMIT: Field<W32> = Field::new(0x4806);
    pub const GUEST_FS_LIMIT: Field<W32> = Field::new(0x4808);
    pub const GUEST_GS_LIMIT: Field<W32> = Field::new(0x480a);
    pub const GUEST_LDTR_LIMIT: Field<W32> = Field::new(0x480c);
    pub const GUEST_TR_LIMIT: Field<W32> = Field::new(0x480e);
    pub const GUEST_GDTR_LIMIT: Field<W32> = Field::new(0x4810);
    pub const GUEST_IDTR_LIMIT: Field<W32> = Field::new(0x4812);
    pub const GUEST_ES_AR: Field<W32> = Field::new(0x4814);
    pub const GUEST_CS_AR: Field<W32> = Field::new(0x4816);
    pub const GUEST_SS_AR: Field<W32> = Field::new(0x4818);
    pub const GUEST_DS_AR: Field<W32> = Field::new(0x481a);
    pub const GUEST_FS_AR: Field<W32> = Field::new(0x481c);
    pub const GUEST_GS_AR: Field<W32> = Field::new(0x481e);
    pub const GUEST_LDTR_AR: Field<W32> = Field::new(0x4820);
    pub const GUEST_TR_AR: Field<W32> = Field::new(0x4822);
    pub const GUEST_INTERRUPTIBILITY: Field<W32> = Field::new(0x4824);
    pub const GUEST_ACTIVITY_STATE: Field<W32> = Field::new(0x4826);
    pub const GUEST_SYSENTER_CS: Field<W32> = Field::new(0x482a);
    pub const PREEMPTION_TIMER_VALUE: Field<W32> = Field::new(0x482e);
    pub const HOST_SYSENTER_CS: Field<W32> = Field::new(0x4c00);

    pub const CR0_GUEST_HOST_MASK: Field<WNat> = Field::new(0x6000);
    pub const CR4_GUEST_HOST_MASK: Field<WNat> = Field::new(0x6002);
    pub const CR0_READ_SHADOW: Field<WNat> = Field::new(0x6004);
    pub const CR4_READ_SHADOW: Field<WNat> = Field::new(0x6006);
    pub const EXIT_QUALIFICATION: Field<WNat> = Field::new(0x6400);
    pub const GUEST_LINEAR_ADDRESS: Field<WNat> = Field::new(0x640a);
    pub const GUEST_CR0: Field<WNat> = Field::new(0x6800);
    pub const GUEST_CR3: Field<WNat> = Field::new(0x6802);
    pub const GUEST_CR4: Field<WNat> = Field::new(0x6804);
    pub const GUEST_ES_BASE: Field<WNat> = Field::new(0x6806);
    pub const GUEST_CS_BASE: Field<WNat> = Field::new(0x6808);
    pub const GUEST_SS_BASE: Field<WNat> = Field::new(0x680a);
    pub const GUEST_DS_BASE: Field<WNat> = Field::new(0x680c);
    pub const GUEST_FS_BASE: Field<WNat> = Field::new(0x680e);
    pub const GUEST_GS_BASE: Field<WNat> = Field::new(0x6810);
    pub const GUEST_LDTR_BASE: Field<WNat> = Field::new(0x6812);
    pub const GUEST_TR_BASE: Field<WNat> = Field::new(0x6814);
    pub const GUEST_GDTR_BASE: Field<WNat> = Field::new(0x6816);
    pub const GUEST_IDTR_BASE: Field<WNat> = Field::new(0x6818);
    pub const GUEST_DR7: Field<WNat> = Field::new(0x681a);
    pub const GUEST_RSP: Field<WNat> = Field::new(0x681c);
    pub const GUEST_RIP: Field<WNat> = Field::new(0x681e);
    pub const GUEST_RFLAGS: Field<WNat> = Field::new(0x6820);
    pub const GUEST_PENDING_DBG_EXCEPTIONS: Field<WNat> = Field::new(0x6822);
    pub const GUEST_SYSENTER_ESP: Field<WNat> = Field::new(0x6824);
    pub const GUEST_SYSENTER_EIP: Field<WNat> = Field::new(0x6826);
    pub const HOST_CR0: Field<WNat> = Field::new(0x6c00);
    pub const HOST_CR3: Field<WNat> = Field::new(0x6c02);
    pub const HOST_CR4: Field<WNat> = Field::new(0x6c04);
    pub const HOST_FS_BASE: Field<WNat> = Field::new(0x6c06);
    pub const HOST_GS_BASE: Field<WNat> = Field::new(0x6c08);
    pub const HOST_TR_BASE: Field<WNat> = Field::new(0x6c0a);
    pub const HOST_GDTR_BASE: Field<WNat> = Field::new(0x6c0c);
    pub const HOST_IDTR_BASE: Field<WNat> = Field::new(0x6c0e);
    pub const HOST_SYSENTER_ESP: Field<WNat> = Field::new(0x6c10);
    pub const HOST_SYSENTER_EIP: Field<WNat> = Field::new(0x6c12);
    pub const HOST_RSP: Field<WNat> = Field::new(0x6c14);
    pub const HOST_RIP: Field<WNat> = Field::new(0x6c16);
}

/// The VMX capability MSRs (SDM appendix A).
pub mod msr {
    /// IA32_FEATURE_CONTROL.
    pub const FEATURE_CONTROL: u32 = 0x3a;
    /// IA32_VMX_BASIC.
    pub const BASIC: u32 = 0x480;
    /// IA32_VMX_PINBASED_CTLS.
    pub const PINBASED_CTLS: u32 = 0x481;
    /// IA32_VMX_PROCBASED_CTLS.
    pub const PROCBASED_CTLS: u32 = 0x482;
    /// IA32_VMX_EXIT_CTLS.
    pub const EXIT_CTLS: u32 = 0x483;
    /// IA32_VMX_ENTRY_CTLS.
    pub const ENTRY_CTLS: u32 = 0x484;
    /// IA32_VMX_MISC.
    pub const MISC: u32 = 0x485;
    /// IA32_VMX_CR0_FIXED0.
    pub const CR0_FIXED0: u32 = 0x486;
    /// IA32_VMX_CR0_FIXED1.
    pub const CR0_FIXED1: u32 = 0x487;
    /// IA32_VMX_CR4_FIXED0.
    pub const CR4_FIXED0: u32 = 0x488;
    /// IA32_VMX_CR4_FIXED1.
    pub const CR4_FIXED1: u32 = 0x489;
    /// IA32_VMX_PROCBASED_CTLS2.
    pub const PROCBASED_CTLS2: u32 = 0x48b;
    /// IA32_VMX_EPT_VPID_CAP.
    pub const EPT_VPID_CAP: u32 = 0x48c;
    /// IA32_VMX_TRUE_PINBASED_CTLS.
    pub const TRUE_PINBASED_CTLS: u32 = 0x48d;
    /// IA32_VMX_TRUE_PROCBASED_CTLS.
    pub const TRUE_PROCBASED_CTLS: u32 = 0x48e;
    /// IA32_VMX_TRUE_EXIT_CTLS.
    pub const TRUE_EXIT_CTLS: u32 = 0x48f;
    /// IA32_VMX_TRUE_ENTRY_CTLS.
    pub const TRUE_ENTRY_CTLS: u32 = 0x490;

    /// FEATURE_CONTROL: locked (writes #GP until reset).
    pub const FEATURE_CONTROL_LOCKED: u64 = 1 << 0;
    /// FEATURE_CONTROL: VMXON allowed outside SMX operation.
    pub const FEATURE_CONTROL_VMX_OUTSIDE_SMX: u64 = 1 << 2;
}

/// Pin-based VM-execution controls.
pub mod pin {
    /// External interrupts cause VM exits.
    pub const EXT_INTR_EXITING: u32 = 1 << 0;
    /// NMIs cause VM exits.
    pub const NMI_EXITING: u32 = 1 << 3;
    /// The processor tracks blocking by NMI for the guest (virtual NMIs).
    pub const VIRTUAL_NMIS: u32 = 1 << 5;
    /// The VMX-preemption timer counts down in the guest and exits at 0.
    pub const PREEMPTION_TIMER: u32 = 1 << 6;
}

#[cfg_attr(rkvm_module, expect(dead_code, reason = "the SDM's whole list"))]
/// Primary processor-based VM-execution controls.
pub mod proc {
    /// Exit as soon as the guest can take a maskable interrupt.
    pub const INTR_WINDOW_EXITING: u32 = 1 << 2;
    /// Exit as soon as the guest can take an NMI (virtual NMIs only).
    pub const NMI_WINDOW_EXITING: u32 = 1 << 22;
    /// HLT exits.
    pub const HLT_EXITING: u32 = 1 << 7;
    /// INVLPG exits.
    pub const INVLPG_EXITING: u32 = 1 << 9;
    /// MWAIT exits.
    pub const MWAIT_EXITING: u32 = 1 << 10;
    /// RDPMC exits.
    pub const RDPMC_EXITING: u32 = 1 << 11;
    /// RDTSC exits.
    pub const RDTSC_EXITING: u32 = 1 << 12;
    /// MOV to CR3 exits.
    pub const CR3_LOAD_EXITING: u32 = 1 << 15;
    /// MOV from CR3 exits.
    pub const CR3_STORE_EXITING: u32 = 1 << 16;
    /// MOV to CR8 exits.
    pub const CR8_LOAD_EXITING: u32 = 1 << 19;
    /// MOV from CR8 exits.
    pub const CR8_STORE_EXITING: u32 = 1 << 20;
    /// TSC offsetting.
    pub const USE_TSC_OFFSETTING: u32 = 1 << 3;
    /// MOV DR exits.
    pub const MOV_DR_EXITING: u32 = 1 << 23;
    /// Every I/O instruction exits (no I/O bitmaps).
    pub const UNCOND_IO_EXITING: u32 = 1 << 24;
    /// MSR accesses consult the MSR bitmap.
    pub const USE_MSR_BITMAPS: u32 = 1 << 28;
    /// MONITOR exits.
    pub const MONITOR_EXITING: u32 = 1 << 29;
    /// The secondary controls are in use.
    pub const SECONDARY_CONTROLS: u32 = 1 << 31;
}

#[cfg_attr(rkvm_module, expect(dead_code, reason = "the SDM's whole list"))]
/// Secondary processor-based VM-execution controls.
pub mod proc2 {
    /// Extended page tables.
    pub const ENABLE_EPT: u32 = 1 << 1;
    /// Descriptor-table instructions exit.
    pub const DESC_TABLE_EXITING: u32 = 1 << 2;
    /// RDTSCP does not #UD.
    pub const ENABLE_RDTSCP: u32 = 1 << 3;
    /// Virtual-processor identifiers.
    pub const ENABLE_VPID: u32 = 1 << 5;
    /// WBINVD exits.
    pub const WBINVD_EXITING: u32 = 1 << 6;
    /// Real and unpaged protected mode run natively.
    pub const UNRESTRICTED_GUEST: u32 = 1 << 7;
    /// INVPCID does not #UD.
    pub const ENABLE_INVPCID: u32 = 1 << 12;
    /// XSAVES/XRSTORS do not #UD.
    pub const ENABLE_XSAVES: u32 = 1 << 20;
}

/// VM-exit controls.
pub mod exit_ctl {
    /// Save debug controls (DR7, DEBUGCTL).
    pub const SAVE_DEBUG_CONTROLS: u32 = 1 << 2;
    /// The host runs in 64-bit mode after exit.
    pub const HOST_ADDR_SPACE_SIZE: u32 = 1 << 9;
    /// Acknowledge the interrupt on exit (rkvm leaves it pending instead).
    pub const ACK_INTR_ON_EXIT: u32 = 1 << 15;
    /// Save the guest's PAT.
    pub const SAVE_PAT: u32 = 1 << 18;
    /// Load the host's PAT.
    pub const LOAD_PAT: u32 = 1 << 19;
    /// Save the guest's EFER.
    pub const SAVE_EFER: u32 = 1 << 20;
    /// Load the host's EFER.
    pub const LOAD_EFER: u32 = 1 << 21;
}

/// VM-entry controls.
pub mod entry_ctl {
    /// Load debug controls (DR7, DEBUGCTL).
    pub const LOAD_DEBUG_CONTROLS: u32 = 1 << 2;
    /// The guest is in IA-32e mode (EFER.LMA).
    pub const IA32E_MODE: u32 = 1 << 9;
    /// Load the guest's PAT.
    pub const LOAD_PAT: u32 = 1 << 14;
    /// Load the guest's EFER.
    pub const LOAD_EFER: u32 = 1 << 15;
}

/// IA32_VMX_BASIC, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Basic {
    /// The VMCS revision identifier (bits 30:0).
    pub revision: u32,
    /// Bytes the VMXON region and VMCS need (at most 4096).
    pub region_size: u32,
    /// The VMCS may be accessed write-back.
    pub write_back: bool,
    /// INS/OUTS exits report address size and segment (bit 54).
    pub ins_outs_info: bool,
    /// The TRUE_* control MSRs exist (bit 55).
    pub true_ctls: bool,
    /// Physical addresses are limited to 32 bits (bit 48).
    pub addr32: bool,
}

impl Basic {
    /// Decodes IA32_VMX_BASIC.
    pub fn from_msr(v: u64) -> Self {
        Self {
            revision: (v & 0x7fff_ffff) as u32,
            region_size: ((v >> 32) & 0x1fff) as u32,
            write_back: (v >> 50) & 0xf == 6,
            ins_outs_info: v & (1 << 54) != 0,
            true_ctls: v & (1 << 55) != 0,
            addr32: v & (1 << 48) != 0,
        }
    }
}

#[cfg_attr(rkvm_module, expect(dead_code, reason = "the SDM's whole list"))]
/// IA32_VMX_EPT_VPID_CAP bits rkvm looks at.
pub mod ept_cap {
    /// Execute-only translations.
    pub const EXECUTE_ONLY: u64 = 1 << 0;
    /// Four-level page walks.
    pub const PWL4: u64 = 1 << 6;
    /// Five-level page walks.
    pub const PWL5: u64 = 1 << 7;
    /// Write-back paging-structure memory type.
    pub const MEMTYPE_WB: u64 = 1 << 14;
    /// 2 MiB pages.
    pub const PAGE_2M: u64 = 1 << 16;
    /// 1 GiB pages.
    pub const PAGE_1G: u64 = 1 << 17;
    /// INVEPT exists.
    pub const INVEPT: u64 = 1 << 20;
    /// Accessed and dirty flags.
    pub const AD: u64 = 1 << 21;
    /// Single-context INVEPT.
    pub const INVEPT_SINGLE: u64 = 1 << 25;
    /// All-context INVEPT.
    pub const INVEPT_ALL: u64 = 1 << 26;
    /// INVVPID exists.
    pub const INVVPID: u64 = 1 << 32;
    /// Single-context INVVPID.
    pub const INVVPID_SINGLE: u64 = 1 << 41;
    /// All-context INVVPID.
    pub const INVVPID_ALL: u64 = 1 << 42;
}

/// A control word from its capability MSR: bits 31:0 are the allowed
/// 0-settings (a 1 there means the bit must be 1), bits 63:32 the allowed
/// 1-settings. Sets `required` and whichever of `optional` the CPU allows;
/// `Err` holds the required bits the CPU cannot set.
pub fn adjust_controls(cap: u64, required: u32, optional: u32) -> Result<u32, u32> {
    let must = cap as u32;
    let may = (cap >> 32) as u32;
    let missing = required & !may;
    if missing != 0 {
        return Err(missing);
    }
    Ok(((required | optional) & may) | must)
}

/// The capability MSR values a VMX configuration is computed from.
#[derive(Clone, Copy, Debug, Default)]
pub struct CapMsrs {
    /// IA32_VMX_BASIC.
    pub basic: u64,
    /// Pin-based controls (the TRUE_ MSR when BASIC bit 55 is set).
    pub pin: u64,
    /// Primary processor-based controls (TRUE_ if available).
    pub proc: u64,
    /// Secondary processor-based controls (0 when the primary MSR does not
    /// allow the secondary controls).
    pub proc2: u64,
    /// VM-exit controls (TRUE_ if available).
    pub exit: u64,
    /// VM-entry controls (TRUE_ if available).
    pub entry: u64,
    /// IA32_VMX_EPT_VPID_CAP (0 without the secondary controls).
    pub ept_vpid: u64,
    /// IA32_VMX_MISC (bits 4:0: the preemption timer's TSC shift).
    pub misc: u64,
    /// IA32_VMX_CR0_FIXED0/1.
    pub cr0_fixed: (u64, u64),
    /// IA32_VMX_CR4_FIXED0/1.
    pub cr4_fixed: (u64, u64),
}

impl CapMsrs {
    /// Which control MSRs to read: the TRUE_ ones if BASIC says they exist.
    /// (pin, proc, exit, entry).
    pub fn control_msrs(basic: u64) -> (u32, u32, u32, u32) {
        if Basic::from_msr(basic).true_ctls {
            (
                msr::TRUE_PINBASED_CTLS,
                msr::TRUE_PROCBASED_CTLS,
                msr::TRUE_EXIT_CTLS,
                msr::TRUE_ENTRY_CTLS,
            )
        } else {
            (
                msr::PINBASED_CTLS,
                msr::PROCBASED_CTLS,
                msr::EXIT_CTLS,
                msr::ENTRY_CTLS,
            )
        }
    }
}

/// Why VMX cannot be used on this CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Missing {
    /// The VMCS does not fit a page, or is not write-back cacheable.
    VmcsRegion,
    /// A required pin-based control (the bits).
    Pin(u32),
    /// A required primary processor-based control.
    Proc(u32),
    /// Extended page tables.
    Ept,
    /// Unrestricted guest.
    UnrestrictedGuest,
    /// A usable EPT format: 4-level walks, write-back tables, INVEPT.
    EptFormat,
    /// A required VM-exit control.
    Exit(u32),
    /// A required VM-entry control.
    Entry(u32),
}

/// How soon (in TSC ticks: about 0.2 ms at 3 GHz) the VMX-preemption
/// timer makes a guest exit when it is entered with RFLAGS.IF clear.
/// External interrupts exit the guest anyway on real CPUs; the timer is a
/// backstop for Bochs 2.7, which re-evaluates interrupt masking at VM entry
/// only when IF changes, so that with the host's IF clear (rkvm enters with
/// interrupts off) and the guest's IF clear, host interrupts never exit a
/// spinning guest. Entries with IF set do not arm the timer.
pub const PREEMPTION_TSC_TICKS: u64 = 1 << 19;

/// How rkvm runs guests on this CPU, computed once at load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// The VMCS revision identifier.
    pub revision: u32,
    /// INS/OUTS exits report the address size and segment.
    pub ins_outs_info: bool,
    /// Pin-based controls.
    pub pin: u32,
    /// Primary processor-based controls.
    pub proc: u32,
    /// Secondary processor-based controls.
    pub proc2: u32,
    /// VM-exit controls.
    pub exit: u32,
    /// VM-entry controls, without IA-32e mode (set per entry).
    pub entry: u32,
    /// VPIDs are in use.
    pub vpid: bool,
    /// INVEPT type to flush one EPTP's mappings: 1 single-context,
    /// 2 all-context.
    pub invept_type: u64,
    /// INVVPID type to flush one VPID's mappings: 1 single-context,
    /// 2 all-context.
    pub invvpid_type: u64,
    /// 2 MiB EPT pages.
    pub ept_2m: bool,
    /// The VMX-preemption timer value that makes a running guest exit
    /// after about [`PREEMPTION_TSC_TICKS`] TSC ticks; 0 without the timer.
    pub preemption_timer: u32,
    /// CR0 bits that must be 1 in VMX operation (guest: minus PE and PG,
    /// with unrestricted guest).
    pub cr0_fixed0: u64,
    /// CR0 bits that may be 1.
    pub cr0_fixed1: u64,
    /// CR4 bits that must be 1.
    pub cr4_fixed0: u64,
    /// CR4 bits that may be 1.
    pub cr4_fixed1: u64,
}

impl Config {
    /// Picks the controls rkvm needs and wants from the CPU's capability
    /// MSRs, or says what is missing.
    pub fn compute(c: &CapMsrs) -> Result<Self, Missing> {
        let basic = Basic::from_msr(c.basic);
        if basic.region_size > 4096 || basic.region_size == 0 || !basic.write_back {
            return Err(Missing::VmcsRegion);
        }
        let pin = adjust_controls(
            c.pin,
            pin::EXT_INTR_EXITING | pin::NMI_EXITING | pin::VIRTUAL_NMIS,
            pin::PREEMPTION_TIMER,
        )
        .map_err(Missing::Pin)?;
        let proc = adjust_controls(
            c.proc,
            proc::HLT_EXITING
                | proc::MWAIT_EXITING
                | proc::MONITOR_EXITING
                | proc::CR8_LOAD_EXITING
                | proc::CR8_STORE_EXITING
                | proc::MOV_DR_EXITING
                | proc::RDPMC_EXITING
                | proc::UNCOND_IO_EXITING
                | proc::USE_MSR_BITMAPS
                | proc::USE_TSC_OFFSETTING
                | proc::SECONDARY_CONTROLS,
            0,
        )
        .map_err(Missing::Proc)?;
        // Set per entry, when an interrupt or NMI waits for the guest.
        let windows = proc::INTR_WINDOW_EXITING | proc::NMI_WINDOW_EXITING;
        if (c.proc >> 32) as u32 & windows != windows {
            return Err(Missing::Proc(windows & !((c.proc >> 32) as u32)));
        }
        // With EPT, CR3 accesses need not exit: clear them if the CPU lets
        // us (the "must be 1" bits of an old non-TRUE MSR force them).
        let proc = (proc & !(proc::CR3_LOAD_EXITING | proc::CR3_STORE_EXITING)) | (c.proc as u32);
        let may2 = (c.proc2 >> 32) as u32;
        if may2 & proc2::ENABLE_EPT == 0 {
            return Err(Missing::Ept);
        }
        if may2 & proc2::UNRESTRICTED_GUEST == 0 {
            return Err(Missing::UnrestrictedGuest);
        }
        let ev = c.ept_vpid;
        if ev & ept_cap::PWL4 == 0
            || ev & ept_cap::MEMTYPE_WB == 0
            || ev & ept_cap::INVEPT == 0
            || ev & (ept_cap::INVEPT_SINGLE | ept_cap::INVEPT_ALL) == 0
        {
            return Err(Missing::EptFormat);
        }
        // VPIDs only when INVVPID can flush one of them.
        let vpid = may2 & proc2::ENABLE_VPID != 0
            && ev & ept_cap::INVVPID != 0
            && ev & (ept_cap::INVVPID_SINGLE | ept_cap::INVVPID_ALL) != 0;
        let proc2 = adjust_controls(
            c.proc2,
            proc2::ENABLE_EPT | proc2::UNRESTRICTED_GUEST,
            proc2::ENABLE_RDTSCP
                | proc2::ENABLE_INVPCID
                | if vpid { proc2::ENABLE_VPID } else { 0 },
        )
        .map_err(|_| Missing::Ept)?;
        let exit = adjust_controls(
            c.exit,
            exit_ctl::HOST_ADDR_SPACE_SIZE
                | exit_ctl::SAVE_DEBUG_CONTROLS
                | exit_ctl::SAVE_PAT
                | exit_ctl::LOAD_PAT
                | exit_ctl::SAVE_EFER
                | exit_ctl::LOAD_EFER,
            0,
        )
        .map_err(Missing::Exit)?
            & !exit_ctl::ACK_INTR_ON_EXIT;
        let entry = adjust_controls(
            c.entry,
            entry_ctl::LOAD_DEBUG_CONTROLS | entry_ctl::LOAD_PAT | entry_ctl::LOAD_EFER,
            0,
        )
        .map_err(Missing::Entry)?
            & !entry_ctl::IA32E_MODE;
        Ok(Self {
            revision: basic.revision,
            ins_outs_info: basic.ins_outs_info,
            pin,
            proc,
            proc2,
            exit,
            entry,
            vpid,
            invept_type: if ev & ept_cap::INVEPT_SINGLE != 0 {
                1
            } else {
                2
            },
            invvpid_type: if ev & ept_cap::INVVPID_SINGLE != 0 {
                1
            } else {
                2
            },
            ept_2m: ev & ept_cap::PAGE_2M != 0,
            preemption_timer: if pin & pin::PREEMPTION_TIMER != 0 {
                (PREEMPTION_TSC_TICKS >> (c.misc & 0x1f)) as u32
            } else {
                0
            },
            cr0_fixed0: c.cr0_fixed.0,
            cr0_fixed1: c.cr0_fixed.1,
            cr4_fixed0: c.cr4_fixed.0,
            cr4_fixed1: c.cr4_fixed.1,
        })
    }

    /// The CR0 the hardware runs the guest with, for the CR0 the guest
    /// wants: fixed bits forced (but PE and PG are the guest's own, with
    /// unrestricted guest).
    pub fn guest_cr0(&self, wanted: u64) -> u64 {
        let must = self.cr0_fixed0 & !(crate::x86::CR0_PE | crate::x86::CR0_PG);
        (wanted | must) & (self.cr0_fixed1 | must)
    }

    /// The CR4 the hardware runs the guest with (VMXE is forced on).
    pub fn guest_cr4(&self, wanted: u64) -> u64 {
        (wanted | self.cr4_fixed0) & (self.cr4_fixed1 | self.cr4_fixed0)
    }
}

/// Extended-page-table entries and the EPT pointer.
pub mod ept {
    /// Read access.
    pub const READ: u64 = 1 << 0;
    /// Write access.
    pub const WRITE: u64 = 1 << 1;
    /// Execute access.
    pub const EXEC: u64 = 1 << 2;
    /// Memory type write-back, in a leaf (bits 5:3).
    pub const MT_WB: u64 = 6 << 3;
    /// Ignore the guest's PAT: the leaf's type wins.
    pub const IGNORE_PAT: u64 = 1 << 6;
    /// A 2 MiB (or 1 GiB) leaf.
    pub const LARGE: u64 = 1 << 7;
    /// The address bits of an entry.
    pub const ADDR: u64 = 0x000f_ffff_ffff_f000;

    /// An entry pointing at the next-level table at `pa`.
    pub fn table(pa: u64) -> u64 {
        (pa & ADDR) | READ | WRITE | EXEC
    }

    /// A leaf mapping the page (or 2 MiB frame) at `pa`: readable and
    /// executable, writable if `writable`, write-back ignoring the guest
    /// PAT (ordinary RAM; rkvm assigns no devices).
    pub fn leaf(pa: u64, writable: bool, large: bool) -> u64 {
        (pa & ADDR)
            | READ
            | EXEC
            | MT_WB
            | IGNORE_PAT
            | if writable { WRITE } else { 0 }
            | if large { LARGE } else { 0 }
    }

    /// Whether an entry maps anything (any of R, W, X).
    pub fn present(e: u64) -> bool {
        e & (READ | WRITE | EXEC) != 0
    }

    /// The EPT pointer for a `levels`-level table at `root`: write-back
    /// walks, no accessed/dirty flags.
    pub fn pointer(root: u64, levels: u32) -> u64 {
        (root & ADDR) | ((u64::from(levels) - 1) << 3) | 6
    }
}

/// Basic exit reasons (bits 15:0 of the exit reason).
#[allow(missing_docs, reason = "the names are the SDM's")]
#[cfg_attr(rkvm_module, expect(dead_code, reason = "the SDM's whole list"))]
pub mod reason {
    pub const EXCEPTION_NMI: u16 = 0;
    pub const EXTERNAL_INTERRUPT: u16 = 1;
    pub const TRIPLE_FAULT: u16 = 2;
    pub const INIT: u16 = 3;
    pub const SIPI: u16 = 4;
    pub const IO_SMI: u16 = 5;
    pub const OTHER_SMI: u16 = 6;
    pub const INTERRUPT_WINDOW: u16 = 7;
    pub const NMI_WINDOW: u16 = 8;
    pub const TASK_SWITCH: u16 = 9;
    pub const CPUID: u16 = 10;
    pub const GETSEC: u16 = 11;
    pub const HLT: u16 = 12;
    pub const INVD: u16 = 13;
    pub const RSM: u16 = 17;
    pub const VMCALL: u16 = 18;
    pub const VMCLEAR: u16 = 19;
    pub const VMLAUNCH: u16 = 20;
    pub const VMPTRLD: u16 = 21;
    pub const VMPTRST: u16 = 22;
    pub const VMREAD: u16 = 23;
    pub const VMRESUME: u16 = 24;
    pub const VMWRITE: u16 = 25;
    pub const VMXOFF: u16 = 26;
    pub const VMXON: u16 = 27;
    pub const CR_ACCESS: u16 = 28;
    pub const DR_ACCESS: u16 = 29;
    pub const IO: u16 = 30;
    pub const RDMSR: u16 = 31;
    pub const WRMSR: u16 = 32;
    pub const INVALID_GUEST_STATE: u16 = 33;
    pub const MSR_LOADING: u16 = 34;
    pub const MWAIT: u16 = 36;
    pub const MONITOR: u16 = 39;
    pub const MACHINE_CHECK: u16 = 41;
    pub const PREEMPTION_TIMER: u16 = 52;
    pub const EPT_VIOLATION: u16 = 48;
    pub const EPT_MISCONFIG: u16 = 49;
    pub const INVEPT: u16 = 50;
    pub const INVVPID: u16 = 53;
    pub const XSETBV: u16 = 55;
    pub const RDPMC: u16 = 15;
    pub const VMFUNC: u16 = 59;
    pub const ENCLS: u16 = 60;

    /// Bit 31 of the exit reason: VM entry failed.
    pub const FAILED_ENTRY: u32 = 1 << 31;
}

#[cfg_attr(rkvm_module, expect(dead_code, reason = "the SDM's whole list"))]
/// Interruption-information fields (VM-entry injection, exit, IDT
/// vectoring): vector, type, error-code-valid, valid.
pub mod intr {
    /// Valid.
    pub const VALID: u32 = 1 << 31;
    /// An error code is delivered.
    pub const ERROR_CODE: u32 = 1 << 11;
    /// The type field.
    pub const TYPE_MASK: u32 = 7 << 8;
    /// External interrupt.
    pub const TYPE_EXT: u32 = 0;
    /// NMI.
    pub const TYPE_NMI: u32 = 2 << 8;
    /// Hardware exception.
    pub const TYPE_HW_EXCEPTION: u32 = 3 << 8;
    /// Software interrupt (INT n).
    pub const TYPE_SOFT_INTR: u32 = 4 << 8;
    /// Privileged software exception (INT1).
    pub const TYPE_PRIV_SOFT: u32 = 5 << 8;
    /// Software exception (INT3, INTO).
    pub const TYPE_SOFT_EXCEPTION: u32 = 6 << 8;

    /// A hardware exception to inject.
    pub fn exception(vector: u8, error_code: bool) -> u32 {
        VALID | TYPE_HW_EXCEPTION | u32::from(vector) | if error_code { ERROR_CODE } else { 0 }
    }

    /// Whether an event found in IDT-vectoring information must be injected
    /// again: everything but the software ones, which re-execute because
    /// RIP still points at their instruction.
    pub fn reinject(info: u32) -> bool {
        info & VALID != 0
            && !matches!(
                info & TYPE_MASK,
                TYPE_SOFT_INTR | TYPE_PRIV_SOFT | TYPE_SOFT_EXCEPTION
            )
    }
}

/// An I/O-instruction exit, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoQual {
    /// Port.
    pub port: u16,
    /// Operand size in bytes.
    pub size: u8,
    /// IN/INS.
    pub input: bool,
    /// INS/OUTS.
    pub string: bool,
    /// REP prefixed.
    pub rep: bool,
}

impl IoQual {
    /// Decodes the exit qualification of an I/O exit.
    pub fn decode(q: u64) -> Self {
        Self {
            size: (q & 7) as u8 + 1,
            input: q & (1 << 3) != 0,
            string: q & (1 << 4) != 0,
            rep: q & (1 << 5) != 0,
            port: (q >> 16) as u16,
        }
    }
}

/// The INS/OUTS instruction information: address size in bytes and the
/// segment register number (0 ES, 1 CS, 2 SS, 3 DS, 4 FS, 5 GS).
pub fn ins_outs_info(info: u32) -> (u8, u8) {
    let size = match (info >> 7) & 7 {
        0 => 2,
        1 => 4,
        _ => 8,
    };
    (size, ((info >> 15) & 7) as u8)
}

/// A control-register access exit, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrAccess {
    /// MOV to a control register.
    Write {
        /// The control register.
        cr: u8,
        /// The source GPR's x86 number.
        gpr: u8,
    },
    /// MOV from a control register.
    Read {
        /// The control register.
        cr: u8,
        /// The destination GPR's x86 number.
        gpr: u8,
    },
    /// CLTS.
    Clts,
    /// LMSW with this 16-bit source value.
    Lmsw(u16),
}

impl CrAccess {
    /// Decodes the exit qualification of a control-register access.
    pub fn decode(q: u64) -> Self {
        let cr = (q & 15) as u8;
        let gpr = ((q >> 8) & 15) as u8;
        match (q >> 4) & 3 {
            0 => Self::Write { cr, gpr },
            1 => Self::Read { cr, gpr },
            2 => Self::Clts,
            _ => Self::Lmsw((q >> 16) as u16),
        }
    }
}

/// The EPT-violation exit qualification: (read, write, fetch) of the
/// access that faulted.
pub fn ept_violation(q: u64) -> (bool, bool, bool) {
    (q & 1 != 0, q & 2 != 0, q & 4 != 0)
}

/// Segment access rights: the VMCS form (bit 16 "unusable") from the
/// descriptor attribute bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct AccessRights {
    /// Type (4 bits).
    pub type_: u8,
    /// S: code/data (1) or system (0).
    pub s: u8,
    /// Descriptor privilege level.
    pub dpl: u8,
    /// Present.
    pub present: u8,
    /// Available for software.
    pub avl: u8,
    /// 64-bit code.
    pub l: u8,
    /// Default operation size.
    pub db: u8,
    /// Granularity.
    pub g: u8,
    /// Unusable (a null selector loaded, or not present).
    pub unusable: bool,
}

/// The unusable bit of the VMCS access-rights form.
pub const AR_UNUSABLE: u32 = 1 << 16;

impl AccessRights {
    /// Packs into the VMCS form. An unusable segment keeps its other
    /// bits: SS.DPL is the CPL even when SS is unusable.
    pub fn pack(&self) -> u32 {
        let bit = |v: u8, shift: u32| u32::from(v & 1) << shift;
        u32::from(self.type_ & 0xf)
            | bit(self.s, 4)
            | (u32::from(self.dpl & 3) << 5)
            | bit(self.present, 7)
            | bit(self.avl, 12)
            | bit(self.l, 13)
            | bit(self.db, 14)
            | bit(self.g, 15)
            | if self.unusable { AR_UNUSABLE } else { 0 }
    }

    /// Unpacks the VMCS form.
    pub fn unpack(a: u32) -> Self {
        let bit = |shift: u32| ((a >> shift) & 1) as u8;
        Self {
            type_: (a & 0xf) as u8,
            s: bit(4),
            dpl: ((a >> 5) & 3) as u8,
            present: bit(7),
            avl: bit(12),
            l: bit(13),
            db: bit(14),
            g: bit(15),
            unusable: a & AR_UNUSABLE != 0,
        }
    }
}

/// The MSR bitmap page: bit offsets of the read and write bits of `msr`,
/// or `None` for an MSR outside the two ranges the bitmap covers (those
/// always exit).
pub fn msr_bitmap_bits(msr: u32) -> Option<(usize, usize)> {
    let (base, off) = match msr {
        0..=0x1fff => (0, msr),
        0xc000_0000..=0xc000_1fff => (1024 * 8, msr - 0xc000_0000),
        _ => return None,
    };
    let read = base + off as usize;
    Some((read, read + 2048 * 8))
}
