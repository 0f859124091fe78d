//! Host tests for the Intel VMCS model (`rkvm_core::vmcs`).
//!
//! Facts are taken from the Intel SDM volume 3C (chapters 24-28) and
//! volume 3D appendices A-C, and cross-checked against Linux
//! (`arch/x86/include/asm/vmx.h`, `uapi/asm/vmx.h`, `vmxfeatures.h`,
//! `msr-index.h`). The tables below were typed in from those sources,
//! not derived from `vmcs.rs`.
//!
//! Capability MSR values of real CPUs come from VirtualBox's CPU database,
//! `src/VBox/VMM/VMMR3/cpus/*.h` in github.com/VirtualBox/virtualbox
//! (commit 4908d8d1a85c), whose entries are raw MSR dumps that
//! VBoxCpuReport took on the named processors. The Bochs values are what
//! Bochs (github.com/stlintel/Bochs, commit 4d227d15fbc5, `cpu/vmcs.cc`
//! `init_vmx_capabilities` and `cpu/vmx.h`) computes for its
//! `corei7_skylake_x` model; Bochs builds them at run time from the
//! model's feature list, so they are worked out here by hand (see
//! `BOCHS_SKYLAKE_X`).

use proptest::prelude::*;
use rkvm_core::vmcs::{
    self, adjust_controls, entry_ctl, ept, ept_cap, ept_violation, exit_ctl, field, ins_outs_info,
    intr, msr, msr_bitmap_bits, pin, proc2, reason, AccessRights, Basic, CapMsrs, Config, CrAccess,
    Field, IoQual, Missing, WNat, Width, AR_UNUSABLE, W16, W32, W64,
};
use rkvm_core::x86;

// ---------------------------------------------------------------------------
// 1. VMCS field encodings (SDM 24.11.2, appendix B; Linux `enum vmcs_field`)
// ---------------------------------------------------------------------------

/// Width codes, encoding bits 14:13 (SDM table 24-21).
const WID16: u32 = 0;
const WID64: u32 = 1;
const WID32: u32 = 2;
const WIDNAT: u32 = 3;

/// Field types, encoding bits 11:10 (SDM table 24-21).
const CONTROL: u32 = 0;
const EXIT_INFO: u32 = 1;
const GUEST: u32 = 2;
const HOST: u32 = 3;

/// One field constant: what the SDM/Linux say, and what `vmcs.rs` has.
struct Row {
    name: &'static str,
    want: (u32, u32, u32),
    got: (u32, u32, u32),
}

fn row<W: Width>(name: &'static str, f: Field<W>, enc: u32, width: u32, kind: u32) -> Row {
    Row {
        name,
        want: (enc, width, kind),
        got: (f.encoding(), W::CODE, f.kind()),
    }
}

macro_rules! rows {
    ($($name:ident = $enc:literal, $w:ident, $k:ident;)*) => {
        vec![$(row(stringify!($name), field::$name, $enc, $w, $k)),*]
    };
}

/// Every constant of `vmcs::field`, with its encoding from Linux's
/// `enum vmcs_field` (Linux name in the comment where it differs).
fn field_table() -> Vec<Row> {
    rows! {
        VPID = 0x0000, WID16, CONTROL; // VIRTUAL_PROCESSOR_ID
        GUEST_ES_SELECTOR = 0x0800, WID16, GUEST;
        GUEST_CS_SELECTOR = 0x0802, WID16, GUEST;
        GUEST_SS_SELECTOR = 0x0804, WID16, GUEST;
        GUEST_DS_SELECTOR = 0x0806, WID16, GUEST;
        GUEST_FS_SELECTOR = 0x0808, WID16, GUEST;
        GUEST_GS_SELECTOR = 0x080a, WID16, GUEST;
        GUEST_LDTR_SELECTOR = 0x080c, WID16, GUEST;
        GUEST_TR_SELECTOR = 0x080e, WID16, GUEST;
        HOST_ES_SELECTOR = 0x0c00, WID16, HOST;
        HOST_CS_SELECTOR = 0x0c02, WID16, HOST;
        HOST_SS_SELECTOR = 0x0c04, WID16, HOST;
        HOST_DS_SELECTOR = 0x0c06, WID16, HOST;
        HOST_FS_SELECTOR = 0x0c08, WID16, HOST;
        HOST_GS_SELECTOR = 0x0c0a, WID16, HOST;
        HOST_TR_SELECTOR = 0x0c0c, WID16, HOST;

        MSR_BITMAP = 0x2004, WID64, CONTROL;
        EXIT_MSR_STORE_ADDR = 0x2006, WID64, CONTROL; // VM_EXIT_MSR_STORE_ADDR
        EXIT_MSR_LOAD_ADDR = 0x2008, WID64, CONTROL; // VM_EXIT_MSR_LOAD_ADDR
        ENTRY_MSR_LOAD_ADDR = 0x200a, WID64, CONTROL; // VM_ENTRY_MSR_LOAD_ADDR
        TSC_OFFSET = 0x2010, WID64, CONTROL;
        EPT_POINTER = 0x201a, WID64, CONTROL;
        GUEST_PHYSICAL_ADDRESS = 0x2400, WID64, EXIT_INFO;
        VMCS_LINK_POINTER = 0x2800, WID64, GUEST;
        GUEST_DEBUGCTL = 0x2802, WID64, GUEST; // GUEST_IA32_DEBUGCTL
        GUEST_PAT = 0x2804, WID64, GUEST; // GUEST_IA32_PAT
        GUEST_EFER = 0x2806, WID64, GUEST; // GUEST_IA32_EFER
        GUEST_PDPTE0 = 0x280a, WID64, GUEST; // GUEST_PDPTR0
        GUEST_PDPTE1 = 0x280c, WID64, GUEST;
        GUEST_PDPTE2 = 0x280e, WID64, GUEST;
        GUEST_PDPTE3 = 0x2810, WID64, GUEST;
        HOST_PAT = 0x2c00, WID64, HOST; // HOST_IA32_PAT
        HOST_EFER = 0x2c02, WID64, HOST; // HOST_IA32_EFER

        PIN_CONTROLS = 0x4000, WID32, CONTROL; // PIN_BASED_VM_EXEC_CONTROL
        PROC_CONTROLS = 0x4002, WID32, CONTROL; // CPU_BASED_VM_EXEC_CONTROL
        EXCEPTION_BITMAP = 0x4004, WID32, CONTROL;
        CR3_TARGET_COUNT = 0x400a, WID32, CONTROL;
        EXIT_CONTROLS = 0x400c, WID32, CONTROL; // VM_EXIT_CONTROLS
        EXIT_MSR_STORE_COUNT = 0x400e, WID32, CONTROL;
        EXIT_MSR_LOAD_COUNT = 0x4010, WID32, CONTROL;
        ENTRY_CONTROLS = 0x4012, WID32, CONTROL; // VM_ENTRY_CONTROLS
        ENTRY_MSR_LOAD_COUNT = 0x4014, WID32, CONTROL;
        ENTRY_INTR_INFO = 0x4016, WID32, CONTROL; // VM_ENTRY_INTR_INFO_FIELD
        ENTRY_EXCEPTION_ERROR_CODE = 0x4018, WID32, CONTROL;
        ENTRY_INSTRUCTION_LEN = 0x401a, WID32, CONTROL;
        PROC_CONTROLS2 = 0x401e, WID32, CONTROL; // SECONDARY_VM_EXEC_CONTROL
        VM_INSTRUCTION_ERROR = 0x4400, WID32, EXIT_INFO;
        EXIT_REASON = 0x4402, WID32, EXIT_INFO; // VM_EXIT_REASON
        EXIT_INTR_INFO = 0x4404, WID32, EXIT_INFO;
        EXIT_INTR_ERROR_CODE = 0x4406, WID32, EXIT_INFO;
        IDT_VECTORING_INFO = 0x4408, WID32, EXIT_INFO; // IDT_VECTORING_INFO_FIELD
        IDT_VECTORING_ERROR_CODE = 0x440a, WID32, EXIT_INFO;
        EXIT_INSTRUCTION_LEN = 0x440c, WID32, EXIT_INFO;
        EXIT_INSTRUCTION_INFO = 0x440e, WID32, EXIT_INFO; // VMX_INSTRUCTION_INFO
        GUEST_ES_LIMIT = 0x4800, WID32, GUEST;
        GUEST_CS_LIMIT = 0x4802, WID32, GUEST;
        GUEST_SS_LIMIT = 0x4804, WID32, GUEST;
        GUEST_DS_LIMIT = 0x4806, WID32, GUEST;
        GUEST_FS_LIMIT = 0x4808, WID32, GUEST;
        GUEST_GS_LIMIT = 0x480a, WID32, GUEST;
        GUEST_LDTR_LIMIT = 0x480c, WID32, GUEST;
        GUEST_TR_LIMIT = 0x480e, WID32, GUEST;
        GUEST_GDTR_LIMIT = 0x4810, WID32, GUEST;
        GUEST_IDTR_LIMIT = 0x4812, WID32, GUEST;
        GUEST_ES_AR = 0x4814, WID32, GUEST; // GUEST_ES_AR_BYTES
        GUEST_CS_AR = 0x4816, WID32, GUEST;
        GUEST_SS_AR = 0x4818, WID32, GUEST;
        GUEST_DS_AR = 0x481a, WID32, GUEST;
        GUEST_FS_AR = 0x481c, WID32, GUEST;
        GUEST_GS_AR = 0x481e, WID32, GUEST;
        GUEST_LDTR_AR = 0x4820, WID32, GUEST;
        GUEST_TR_AR = 0x4822, WID32, GUEST;
        GUEST_INTERRUPTIBILITY = 0x4824, WID32, GUEST; // GUEST_INTERRUPTIBILITY_INFO
        GUEST_ACTIVITY_STATE = 0x4826, WID32, GUEST;
        GUEST_SYSENTER_CS = 0x482a, WID32, GUEST;
        PREEMPTION_TIMER_VALUE = 0x482e, WID32, GUEST;
        HOST_SYSENTER_CS = 0x4c00, WID32, HOST; // HOST_IA32_SYSENTER_CS

        CR0_GUEST_HOST_MASK = 0x6000, WIDNAT, CONTROL;
        CR4_GUEST_HOST_MASK = 0x6002, WIDNAT, CONTROL;
        CR0_READ_SHADOW = 0x6004, WIDNAT, CONTROL;
        CR4_READ_SHADOW = 0x6006, WIDNAT, CONTROL;
        EXIT_QUALIFICATION = 0x6400, WIDNAT, EXIT_INFO;
        GUEST_LINEAR_ADDRESS = 0x640a, WIDNAT, EXIT_INFO;
        GUEST_CR0 = 0x6800, WIDNAT, GUEST;
        GUEST_CR3 = 0x6802, WIDNAT, GUEST;
        GUEST_CR4 = 0x6804, WIDNAT, GUEST;
        GUEST_ES_BASE = 0x6806, WIDNAT, GUEST;
        GUEST_CS_BASE = 0x6808, WIDNAT, GUEST;
        GUEST_SS_BASE = 0x680a, WIDNAT, GUEST;
        GUEST_DS_BASE = 0x680c, WIDNAT, GUEST;
        GUEST_FS_BASE = 0x680e, WIDNAT, GUEST;
        GUEST_GS_BASE = 0x6810, WIDNAT, GUEST;
        GUEST_LDTR_BASE = 0x6812, WIDNAT, GUEST;
        GUEST_TR_BASE = 0x6814, WIDNAT, GUEST;
        GUEST_GDTR_BASE = 0x6816, WIDNAT, GUEST;
        GUEST_IDTR_BASE = 0x6818, WIDNAT, GUEST;
        GUEST_DR7 = 0x681a, WIDNAT, GUEST;
        GUEST_RSP = 0x681c, WIDNAT, GUEST;
        GUEST_RIP = 0x681e, WIDNAT, GUEST;
        GUEST_RFLAGS = 0x6820, WIDNAT, GUEST;
        GUEST_PENDING_DBG_EXCEPTIONS = 0x6822, WIDNAT, GUEST;
        GUEST_SYSENTER_ESP = 0x6824, WIDNAT, GUEST;
        GUEST_SYSENTER_EIP = 0x6826, WIDNAT, GUEST;
        HOST_CR0 = 0x6c00, WIDNAT, HOST;
        HOST_CR3 = 0x6c02, WIDNAT, HOST;
        HOST_CR4 = 0x6c04, WIDNAT, HOST;
        HOST_FS_BASE = 0x6c06, WIDNAT, HOST;
        HOST_GS_BASE = 0x6c08, WIDNAT, HOST;
        HOST_TR_BASE = 0x6c0a, WIDNAT, HOST;
        HOST_GDTR_BASE = 0x6c0c, WIDNAT, HOST;
        HOST_IDTR_BASE = 0x6c0e, WIDNAT, HOST;
        HOST_SYSENTER_ESP = 0x6c10, WIDNAT, HOST; // HOST_IA32_SYSENTER_ESP
        HOST_SYSENTER_EIP = 0x6c12, WIDNAT, HOST;
        HOST_RSP = 0x6c14, WIDNAT, HOST;
        HOST_RIP = 0x6c16, WIDNAT, HOST;
    }
}

#[test]
fn field_encodings_match_the_sdm() {
    for r in field_table() {
        assert_eq!(r.got.0, r.want.0, "{}: encoding", r.name);
        assert_eq!(r.got.1, r.want.1, "{}: width code of its type", r.name);
        assert_eq!(r.got.2, r.want.2, "{}: kind()", r.name);
    }
}

#[test]
fn field_encodings_are_well_formed_and_distinct() {
    let table = field_table();
    for r in &table {
        let enc = r.got.0;
        // The width bits of the encoding agree with the Rust type.
        assert_eq!((enc >> 13) & 3, r.got.1, "{}: bits 14:13", r.name);
        // Full access (bit 0 clear), reserved bits 31:15 and 12 clear.
        assert_eq!(enc & 1, 0, "{}: high-half access", r.name);
        assert_eq!(enc & 0xffff_9000, 0, "{}: reserved encoding bits", r.name);
    }
    let mut encs: Vec<u32> = table.iter().map(|r| r.got.0).collect();
    encs.sort_unstable();
    encs.dedup();
    assert_eq!(
        encs.len(),
        table.len(),
        "two field constants share an encoding"
    );
}

/// The table above covers every constant of `vmcs::field`, with the same
/// width type: read the constants out of the source.
#[test]
fn field_table_covers_every_constant() {
    let src = include_str!("../src/vmcs.rs");
    let start = src.find("pub mod field {").expect("pub mod field");
    let body = &src[start..];
    let end = body.find("\n}\n").expect("end of mod field");
    let mut in_source = Vec::new();
    for line in body[..end].lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("pub const ") {
            let (name, rest) = rest.split_once(':').expect("pub const NAME: Type");
            let ty = rest.trim().split('>').next().unwrap().trim();
            in_source.push((name.trim().to_string(), ty.to_string()));
        }
    }
    let table = field_table();
    assert_eq!(
        in_source.len(),
        table.len(),
        "field constants vs table rows"
    );
    for (name, ty) in in_source {
        let r = table
            .iter()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("{name} is not in the test table"));
        let code = match ty.as_str() {
            "Field<W16" => WID16,
            "Field<W32" => WID32,
            "Field<W64" => WID64,
            "Field<WNat" => WIDNAT,
            other => panic!("{name}: unexpected type {other}"),
        };
        assert_eq!(code, r.want.1, "{name}: declared width");
    }
}

#[test]
fn width_codes_and_value_conversions() {
    assert_eq!(W16::CODE, WID16);
    assert_eq!(W64::CODE, WID64);
    assert_eq!(W32::CODE, WID32);
    assert_eq!(WNat::CODE, WIDNAT);

    assert_eq!(W16::to_raw(0xbeef), 0xbeef);
    assert_eq!(W16::from_raw(0xdead_beef), 0xbeef);
    assert_eq!(W32::to_raw(0xdead_beef), 0xdead_beef);
    assert_eq!(W32::from_raw(0x1234_dead_beef), 0xdead_beef);
    assert_eq!(W64::to_raw(u64::MAX), u64::MAX);
    assert_eq!(W64::from_raw(0x8000_0000_0000_0001), 0x8000_0000_0000_0001);
    assert_eq!(WNat::to_raw(0xffff_8000_0000_1000), 0xffff_8000_0000_1000);
    assert_eq!(WNat::from_raw(0xffff_8000_0000_1000), 0xffff_8000_0000_1000);
}

#[test]
fn field_kind_reads_bits_11_10() {
    assert_eq!(Field::<W16>::new(0x0000).kind(), CONTROL);
    assert_eq!(Field::<W32>::new(0x4400).kind(), EXIT_INFO);
    assert_eq!(Field::<WNat>::new(0x6800).kind(), GUEST);
    assert_eq!(Field::<W64>::new(0x2c00).kind(), HOST);
    // A field the model does not name: I/O RIP (0x6408), read-only data.
    assert_eq!(Field::<WNat>::new(0x6408).kind(), EXIT_INFO);
}

// `Field::new` is const and used in `const` items, where these asserts stop
// the build; called at run time they panic, which is what these check.

#[test]
#[should_panic(expected = "VMCS field width mismatch")]
fn field_new_rejects_a_64_bit_encoding_as_16_bit() {
    let _ = Field::<W16>::new(std::hint::black_box(0x2004));
}

#[test]
#[should_panic(expected = "VMCS field width mismatch")]
fn field_new_rejects_a_natural_encoding_as_32_bit() {
    let _ = Field::<W32>::new(std::hint::black_box(0x6800));
}

#[test]
#[should_panic(expected = "high-half")]
fn field_new_rejects_high_half_access() {
    // TSC_OFFSET_HIGH.
    let _ = Field::<W64>::new(std::hint::black_box(0x2011));
}

#[test]
#[should_panic(expected = "reserved encoding bits")]
fn field_new_rejects_reserved_bit_15() {
    let _ = Field::<W16>::new(std::hint::black_box(0x8000));
}

/// SDM table 24-21: bit 12 of an encoding is reserved (must be 0), like
/// bits 31:15 (Bochs: `VMCS_ENCODING_RESERVED_BITS = 0xffff9000`).
#[test]
#[should_panic(expected = "reserved encoding bits")]
fn field_new_rejects_reserved_bit_12() {
    let _ = Field::<W16>::new(std::hint::black_box(0x1000));
}

// ---------------------------------------------------------------------------
// Constants: MSR indices, control bits, EPT capabilities, exit reasons
// ---------------------------------------------------------------------------

#[test]
fn msr_indices_match_msr_index_h() {
    assert_eq!(msr::FEATURE_CONTROL, 0x3a); // MSR_IA32_FEAT_CTL
    assert_eq!(msr::BASIC, 0x480);
    assert_eq!(msr::PINBASED_CTLS, 0x481);
    assert_eq!(msr::PROCBASED_CTLS, 0x482);
    assert_eq!(msr::EXIT_CTLS, 0x483);
    assert_eq!(msr::ENTRY_CTLS, 0x484);
    assert_eq!(msr::CR0_FIXED0, 0x486);
    assert_eq!(msr::CR0_FIXED1, 0x487);
    assert_eq!(msr::CR4_FIXED0, 0x488);
    assert_eq!(msr::CR4_FIXED1, 0x489);
    assert_eq!(msr::PROCBASED_CTLS2, 0x48b);
    assert_eq!(msr::EPT_VPID_CAP, 0x48c);
    assert_eq!(msr::TRUE_PINBASED_CTLS, 0x48d);
    assert_eq!(msr::TRUE_PROCBASED_CTLS, 0x48e);
    assert_eq!(msr::TRUE_EXIT_CTLS, 0x48f);
    assert_eq!(msr::TRUE_ENTRY_CTLS, 0x490);
    assert_eq!(msr::FEATURE_CONTROL_LOCKED, 1); // FEAT_CTL_LOCKED
    assert_eq!(msr::FEATURE_CONTROL_VMX_OUTSIDE_SMX, 4); // FEAT_CTL_VMX_ENABLED_OUTSIDE_SMX
}

#[test]
fn control_bits_match_vmx_h() {
    // Pin-based (vmxfeatures.h word 0).
    assert_eq!(pin::EXT_INTR_EXITING, 0x1);
    assert_eq!(pin::NMI_EXITING, 0x8);
    assert_eq!(pin::VIRTUAL_NMIS, 0x20);
    assert_eq!(vmcs::proc::INTR_WINDOW_EXITING, 0x4);
    assert_eq!(vmcs::proc::NMI_WINDOW_EXITING, 0x40_0000);
    // Primary processor-based (word 1).
    assert_eq!(vmcs::proc::USE_TSC_OFFSETTING, 1 << 3);
    assert_eq!(vmcs::proc::HLT_EXITING, 1 << 7);
    assert_eq!(vmcs::proc::INVLPG_EXITING, 1 << 9);
    assert_eq!(vmcs::proc::MWAIT_EXITING, 1 << 10);
    assert_eq!(vmcs::proc::RDPMC_EXITING, 1 << 11);
    assert_eq!(vmcs::proc::RDTSC_EXITING, 1 << 12);
    assert_eq!(vmcs::proc::CR3_LOAD_EXITING, 1 << 15);
    assert_eq!(vmcs::proc::CR3_STORE_EXITING, 1 << 16);
    assert_eq!(vmcs::proc::CR8_LOAD_EXITING, 1 << 19);
    assert_eq!(vmcs::proc::CR8_STORE_EXITING, 1 << 20);
    assert_eq!(vmcs::proc::MOV_DR_EXITING, 1 << 23);
    assert_eq!(vmcs::proc::UNCOND_IO_EXITING, 1 << 24);
    assert_eq!(vmcs::proc::USE_MSR_BITMAPS, 1 << 28);
    assert_eq!(vmcs::proc::MONITOR_EXITING, 1 << 29);
    assert_eq!(vmcs::proc::SECONDARY_CONTROLS, 1 << 31);
    // Secondary processor-based (word 2).
    assert_eq!(proc2::ENABLE_EPT, 1 << 1);
    assert_eq!(proc2::DESC_TABLE_EXITING, 1 << 2);
    assert_eq!(proc2::ENABLE_RDTSCP, 1 << 3);
    assert_eq!(proc2::ENABLE_VPID, 1 << 5);
    assert_eq!(proc2::WBINVD_EXITING, 1 << 6);
    assert_eq!(proc2::UNRESTRICTED_GUEST, 1 << 7);
    assert_eq!(proc2::ENABLE_INVPCID, 1 << 12);
    assert_eq!(proc2::ENABLE_XSAVES, 1 << 20);
    // VM-exit controls (VM_EXIT_*).
    assert_eq!(exit_ctl::SAVE_DEBUG_CONTROLS, 0x0000_0004);
    assert_eq!(exit_ctl::HOST_ADDR_SPACE_SIZE, 0x0000_0200);
    assert_eq!(exit_ctl::ACK_INTR_ON_EXIT, 0x0000_8000);
    assert_eq!(exit_ctl::SAVE_PAT, 0x0004_0000);
    assert_eq!(exit_ctl::LOAD_PAT, 0x0008_0000);
    assert_eq!(exit_ctl::SAVE_EFER, 0x0010_0000);
    assert_eq!(exit_ctl::LOAD_EFER, 0x0020_0000);
    // VM-entry controls (VM_ENTRY_*).
    assert_eq!(entry_ctl::LOAD_DEBUG_CONTROLS, 0x0000_0004);
    assert_eq!(entry_ctl::IA32E_MODE, 0x0000_0200);
    assert_eq!(entry_ctl::LOAD_PAT, 0x0000_4000);
    assert_eq!(entry_ctl::LOAD_EFER, 0x0000_8000);
}

#[test]
fn ept_vpid_capability_bits_match_vmx_h() {
    assert_eq!(ept_cap::EXECUTE_ONLY, 1); // VMX_EPT_EXECUTE_ONLY_BIT
    assert_eq!(ept_cap::PWL4, 1 << 6); // VMX_EPT_PAGE_WALK_4_BIT
    assert_eq!(ept_cap::PWL5, 1 << 7);
    assert_eq!(ept_cap::MEMTYPE_WB, 1 << 14); // VMX_EPTP_WB_BIT
    assert_eq!(ept_cap::PAGE_2M, 1 << 16);
    assert_eq!(ept_cap::PAGE_1G, 1 << 17);
    assert_eq!(ept_cap::INVEPT, 1 << 20);
    assert_eq!(ept_cap::AD, 1 << 21);
    assert_eq!(ept_cap::INVEPT_SINGLE, 1 << 25); // VMX_EPT_EXTENT_CONTEXT_BIT
    assert_eq!(ept_cap::INVEPT_ALL, 1 << 26); // VMX_EPT_EXTENT_GLOBAL_BIT
                                              // The VPID bits Linux keeps shifted down by 32.
    assert_eq!(ept_cap::INVVPID, 1 << 32);
    assert_eq!(ept_cap::INVVPID_SINGLE, 1 << (32 + 9));
    assert_eq!(ept_cap::INVVPID_ALL, 1 << (32 + 10));
}

#[test]
fn exit_reasons_match_appendix_c() {
    // (value in vmcs.rs, SDM appendix C / Linux EXIT_REASON_*).
    let table: &[(&str, u16, u16)] = &[
        ("EXCEPTION_NMI", reason::EXCEPTION_NMI, 0),
        ("EXTERNAL_INTERRUPT", reason::EXTERNAL_INTERRUPT, 1),
        ("TRIPLE_FAULT", reason::TRIPLE_FAULT, 2),
        ("INIT", reason::INIT, 3),
        ("SIPI", reason::SIPI, 4),
        ("IO_SMI", reason::IO_SMI, 5),
        ("OTHER_SMI", reason::OTHER_SMI, 6),
        ("TASK_SWITCH", reason::TASK_SWITCH, 9),
        ("CPUID", reason::CPUID, 10),
        ("GETSEC", reason::GETSEC, 11),
        ("HLT", reason::HLT, 12),
        ("INVD", reason::INVD, 13),
        ("RDPMC", reason::RDPMC, 15),
        ("RSM", reason::RSM, 17),
        ("VMCALL", reason::VMCALL, 18),
        ("VMCLEAR", reason::VMCLEAR, 19),
        ("VMLAUNCH", reason::VMLAUNCH, 20),
        ("VMPTRLD", reason::VMPTRLD, 21),
        ("VMPTRST", reason::VMPTRST, 22),
        ("VMREAD", reason::VMREAD, 23),
        ("VMRESUME", reason::VMRESUME, 24),
        ("VMWRITE", reason::VMWRITE, 25),
        ("VMXOFF", reason::VMXOFF, 26),
        ("VMXON", reason::VMXON, 27),
        ("CR_ACCESS", reason::CR_ACCESS, 28),
        ("DR_ACCESS", reason::DR_ACCESS, 29),
        ("IO", reason::IO, 30),
        ("RDMSR", reason::RDMSR, 31),
        ("WRMSR", reason::WRMSR, 32),
        ("INVALID_GUEST_STATE", reason::INVALID_GUEST_STATE, 33),
        ("MSR_LOADING", reason::MSR_LOADING, 34),
        ("MWAIT", reason::MWAIT, 36),
        ("MONITOR", reason::MONITOR, 39),
        ("MACHINE_CHECK", reason::MACHINE_CHECK, 41),
        ("EPT_VIOLATION", reason::EPT_VIOLATION, 48),
        ("EPT_MISCONFIG", reason::EPT_MISCONFIG, 49),
        ("INVEPT", reason::INVEPT, 50),
        ("INVVPID", reason::INVVPID, 53),
        ("XSETBV", reason::XSETBV, 55),
        ("VMFUNC", reason::VMFUNC, 59),
        ("ENCLS", reason::ENCLS, 60),
    ];
    for &(name, got, want) in table {
        assert_eq!(got, want, "exit reason {name}");
    }
    // VMX_EXIT_REASONS_FAILED_VMENTRY.
    assert_eq!(reason::FAILED_ENTRY, 0x8000_0000);
}

// ---------------------------------------------------------------------------
// IA32_VMX_BASIC (SDM A.1)
// ---------------------------------------------------------------------------

#[test]
fn basic_decodes_real_values() {
    // Skylake (i7-6700K): revision 4, 1 KiB, WB, INS/OUTS info, TRUE MSRs.
    let b = Basic::from_msr(0x00da_0400_0000_0004);
    assert_eq!(
        b,
        Basic {
            revision: 4,
            region_size: 1024,
            write_back: true,
            ins_outs_info: true,
            true_ctls: true,
            addr32: false,
        }
    );
    // Penryn (Xeon X5482): 2 KiB region, no TRUE MSRs.
    let b = Basic::from_msr(0x005a_0800_0000_000d);
    assert_eq!((b.revision, b.region_size), (0xd, 2048));
    assert!(b.write_back && b.ins_outs_info && !b.true_ctls && !b.addr32);
    // Merom (Core 2 X6800): neither INS/OUTS information nor TRUE MSRs.
    let b = Basic::from_msr(0x001a_0400_0000_0007);
    assert_eq!((b.revision, b.region_size), (7, 1024));
    assert!(b.write_back && !b.ins_outs_info && !b.true_ctls);
    // Bochs: a full page.
    let b = Basic::from_msr(0x00d8_1000_0000_002b);
    assert_eq!((b.revision, b.region_size), (0x2b, 4096));
    assert!(b.write_back && b.ins_outs_info && b.true_ctls);
    // Yonah (Core Duo T2600): physical addresses limited to 32 bits.
    let b = Basic::from_msr(0x001b_0400_0000_0005);
    assert_eq!((b.revision, b.region_size), (5, 1024));
    assert!(b.addr32 && b.write_back && !b.ins_outs_info && !b.true_ctls);
    // Synthetic: a VMCS in uncacheable memory (type 0 in bits 53:50).
    assert!(!Basic::from_msr(0x400u64 << 32 | 1).write_back);
    // Bit 31 of the low word is not part of the revision.
    assert_eq!(Basic::from_msr(0x8000_0001).revision, 1);
}

#[test]
fn control_msrs_follow_basic_bit_55() {
    let true_msrs = (0x48d, 0x48e, 0x48f, 0x490);
    let legacy = (0x481, 0x482, 0x483, 0x484);
    assert_eq!(CapMsrs::control_msrs(0x00da_0400_0000_0004), true_msrs);
    assert_eq!(CapMsrs::control_msrs(0x005a_0800_0000_000d), legacy);
    assert_eq!(CapMsrs::control_msrs(0x001a_0400_0000_0007), legacy);
    assert_eq!(CapMsrs::control_msrs(1 << 55), true_msrs);
    assert_eq!(CapMsrs::control_msrs(!(1 << 55)), legacy);
}

// ---------------------------------------------------------------------------
// 2. adjust_controls (SDM A.3-A.5: low word allowed-0, high word allowed-1)
// ---------------------------------------------------------------------------

fn cap(must: u32, may: u32) -> u64 {
    u64::from(may) << 32 | u64::from(must)
}

#[test]
fn adjust_forces_must_be_one_bits() {
    // Bits 1, 2, 4 are must-be-1 in every pin-based MSR seen.
    assert_eq!(adjust_controls(cap(0x16, 0x7f), 0, 0), Ok(0x16));
    assert_eq!(adjust_controls(cap(0x16, 0x7f), 0x1, 0), Ok(0x17));
}

#[test]
fn adjust_drops_disallowed_optional_bits() {
    assert_eq!(
        adjust_controls(cap(0, 0b0110), 0b0010, 0b1100),
        Ok(0b0110),
        "bit 3 is not allowed and silently dropped; bit 2 is allowed"
    );
    assert_eq!(adjust_controls(cap(0, 0), 0, u32::MAX), Ok(0));
}

#[test]
fn adjust_reports_exactly_the_missing_required_bits() {
    assert_eq!(
        adjust_controls(cap(0, 0b0011), 0b1111, 0),
        Err(0b1100),
        "only the required bits the CPU cannot set"
    );
    // A missing optional bit is not an error, a missing required one is,
    // even if the optional set names it too.
    assert_eq!(adjust_controls(cap(0, 0b0001), 0b0010, 0b0010), Err(0b0010));
    assert_eq!(adjust_controls(cap(0, 0), 1 << 31, 0), Err(1 << 31));
}

#[test]
fn adjust_with_real_proc_based_msrs() {
    // i7-6700K IA32_VMX_PROCBASED_CTLS: CR3 load/store exiting (15, 16) are
    // default1 and forced; the TRUE MSR lets them be 0.
    let legacy = 0xfff9_fffe_0401_e172;
    let true_msr = 0xfff9_fffe_0400_6172;
    let want = vmcs::proc::HLT_EXITING;
    let cr3 = vmcs::proc::CR3_LOAD_EXITING | vmcs::proc::CR3_STORE_EXITING;
    assert_eq!(adjust_controls(legacy, want, 0).unwrap() & cr3, cr3);
    assert_eq!(adjust_controls(true_msr, want, 0).unwrap() & cr3, 0);
    // Bits 17 and 18 are reserved-0 on that CPU: never set.
    assert_eq!(adjust_controls(legacy, 0, 3 << 17).unwrap() & (3 << 17), 0);
    assert_eq!(adjust_controls(legacy, 1 << 17, 0), Err(1 << 17));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Bit by bit: an `Ok` word is allowed by the capability and holds every
    /// required bit; an `Err` names exactly the required bits not allowed.
    #[test]
    fn adjust_controls_bitwise(must in any::<u32>(), may in any::<u32>(), req in any::<u32>(), opt in any::<u32>()) {
        // Real MSRs never forbid a bit they force; keep the model sane.
        let may = may | must;
        match adjust_controls(cap(must, may), req, opt) {
            Ok(v) => {
                for i in 0..32 {
                    let b = 1u32 << i;
                    if must & b != 0 { prop_assert!(v & b != 0, "must-be-1 bit {} clear", i); }
                    if may & b == 0 { prop_assert!(v & b == 0, "disallowed bit {} set", i); }
                    if req & b != 0 { prop_assert!(v & b != 0, "required bit {} clear", i); }
                    if opt & b != 0 && may & b != 0 { prop_assert!(v & b != 0, "allowed optional bit {} clear", i); }
                    if v & b != 0 { prop_assert!((must | req | opt) & b != 0, "bit {} from nowhere", i); }
                }
            }
            Err(m) => {
                prop_assert!(m != 0);
                prop_assert_eq!(m, req & !may);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// 3. Config::compute with real capability MSRs
// ---------------------------------------------------------------------------

/// A CPU's VMX capability MSRs, `(index, value)`, as dumped.
type Dump = &'static [(u32, u64)];

/// Intel Core i7-6700K (Skylake, family 6 model 94), VirtualBox
/// `Intel_Core_i7_6700K.h` (VBoxCpuReport, 2015-11-04).
const SKYLAKE_6700K: Dump = &[
    (0x480, 0x00da_0400_0000_0004),
    (0x481, 0x0000_007f_0000_0016),
    (0x482, 0xfff9_fffe_0401_e172),
    (0x483, 0x01ff_ffff_0003_6dff),
    (0x484, 0x0003_ffff_0000_11ff),
    (0x486, 0x8000_0021),
    (0x487, 0xffff_ffff),
    (0x488, 0x2000),
    (0x489, 0x0037_27ff),
    (0x48b, 0x001f_fcff_0000_0000),
    (0x48c, 0x0000_0f01_0633_4141),
    (0x48d, 0x0000_007f_0000_0016),
    (0x48e, 0xfff9_fffe_0400_6172),
    (0x48f, 0x01ff_ffff_0003_6dfb),
    (0x490, 0x0003_ffff_0000_11fb),
];

/// Intel Core i7-5600U (Broadwell, model 61), VirtualBox
/// `Intel_Core_i7_5600U.h` (VBoxCpuReport, 2015-11-04).
const BROADWELL_5600U: Dump = &[
    (0x480, 0x00da_0400_0000_0012),
    (0x481, 0x0000_007f_0000_0016),
    (0x482, 0xfff9_fffe_0401_e172),
    (0x483, 0x007f_ffff_0003_6dff),
    (0x484, 0x0000_ffff_0000_11ff),
    (0x486, 0x8000_0021),
    (0x487, 0xffff_ffff),
    (0x488, 0x2000),
    (0x489, 0x0037_67ff),
    (0x48b, 0x0005_7cff_0000_0000),
    (0x48c, 0x0000_0f01_0633_4141),
    (0x48d, 0x0000_007f_0000_0016),
    (0x48e, 0xfff9_fffe_0400_6172),
    (0x48f, 0x007f_ffff_0003_6dfb),
    (0x490, 0x0000_ffff_0000_11fb),
];

/// Intel Core i5-3570 (Ivy Bridge, model 58), VirtualBox
/// `Intel_Core_i5_3570.h`: no INVPCID control, no 1 GiB EPT pages.
const IVY_BRIDGE_3570: Dump = &[
    (0x480, 0x00da_0400_0000_0010),
    (0x481, 0x0000_007f_0000_0016),
    (0x482, 0xfff9_fffe_0401_e172),
    (0x483, 0x007f_ffff_0003_6dff),
    (0x484, 0x0000_ffff_0000_11ff),
    (0x486, 0x8000_0021),
    (0x487, 0xffff_ffff),
    (0x488, 0x2000),
    (0x489, 0x0017_67ff),
    (0x48b, 0x0000_08ff_0000_0000),
    (0x48c, 0x0000_0f01_0611_4141),
    (0x48d, 0x0000_007f_0000_0016),
    (0x48e, 0xfff9_fffe_0400_6172),
    (0x48f, 0x007f_ffff_0003_6dfb),
    (0x490, 0x0000_ffff_0000_11fb),
];

/// Intel Pentium N3530 (Silvermont Atom, model 55), VirtualBox
/// `Intel_Pentium_N3530_2_16GHz.h`: RDTSCP but no INVPCID control.
const SILVERMONT_N3530: Dump = &[
    (0x480, 0x00da_0400_0000_0002),
    (0x481, 0x0000_007f_0000_0016),
    (0x482, 0xfff9_fffe_0401_e172),
    (0x483, 0x007f_ffff_0003_6dff),
    (0x484, 0x0000_ffff_0000_11ff),
    (0x486, 0x8000_0021),
    (0x487, 0xffff_ffff),
    (0x488, 0x2000),
    (0x489, 0x0010_27ff),
    (0x48b, 0x0000_28ef_0000_0000),
    (0x48c, 0x0000_0f01_0611_4141),
    (0x48d, 0x0000_007f_0000_0016),
    (0x48e, 0xfff9_fffe_0400_6172),
    (0x48f, 0x007f_ffff_0003_6dfb),
    (0x490, 0x0000_ffff_0000_11fb),
];

/// Intel Xeon X5482 (Penryn, model 23), VirtualBox
/// `Intel_Xeon_X5482_3_20GHz.h`: secondary controls without EPT, no TRUE
/// MSRs, no EPT/VPID capability MSR.
const PENRYN_X5482: Dump = &[
    (0x480, 0x005a_0800_0000_000d),
    (0x481, 0x0000_003f_0000_0016),
    (0x482, 0xf7f9_fffe_0401_e172),
    (0x483, 0x0003_ffff_0003_6dff),
    (0x484, 0x0000_3fff_0000_11ff),
    (0x486, 0x8000_0021),
    (0x487, 0xffff_ffff),
    (0x488, 0x2000),
    (0x489, 0x27ff),
    (0x48b, 0x0000_0041_0000_0000),
];

/// Intel Core 2 X6800 (Merom, model 15), VirtualBox
/// `Intel_Core2_X6800_2_93GHz.h`: no secondary controls at all.
const MEROM_X6800: Dump = &[
    (0x480, 0x001a_0400_0000_0007),
    (0x481, 0x0000_001f_0000_0016),
    (0x482, 0x77b9_fffe_0401_e172),
    (0x483, 0x0003_efff_0003_6dff),
    (0x484, 0x0000_1fff_0000_11ff),
    (0x486, 0x8000_0021),
    (0x487, 0xffff_ffff),
    (0x488, 0x2000),
    (0x489, 0x27ff),
];

/// Intel Core Duo T2600 (Yonah, model 14, 32-bit only), VirtualBox
/// `Intel_Core_Duo_T2600_2_16GHz.h`: no CR8 exiting, no secondary controls.
const YONAH_T2600: Dump = &[
    (0x480, 0x001b_0400_0000_0005),
    (0x481, 0x0000_001f_0000_0016),
    (0x482, 0x7781_fffe_0401_e172),
    (0x483, 0x0003_edff_0003_6dff),
    (0x484, 0x0000_1dff_0000_11ff),
    (0x486, 0x8000_0021),
    (0x487, 0xffff_ffff),
    (0x488, 0x2000),
    (0x489, 0x27ff),
];

/// Bochs `corei7_skylake_x` (cpudb/intel/corei7_skylake-x.cc), built with
/// `--enable-vmx=2`, x86-64 and MONITOR/MWAIT, worked out from
/// `cpu/vmx.h` and `cpu/vmcs.cc` at stlintel/Bochs 4d227d15fbc5:
///
/// * BASIC: revision `BX_VMX_VMCS_REVISION_ID` 0x2b; high word
///   `VMX_VMCS_AREA_SIZE` 4096 | WB << 18 | 1 << 22 | 1 << 23.
/// * pin: EXT_INT, NMI, virtual NMI, preemption timer (0x69) | 0x16.
/// * proc: INTR_WINDOW, TSC_OFFSET, HLT, INVLPG, RDPMC, RDTSC, DRx, IO,
///   IO_BITMAPS, MSR_BITMAPS, PAUSE, MWAIT, MONITOR, TPR shadow, CR8
///   load/store, NMI window, CR3 load/store (EPT), secondary — no monitor
///   trap flag — | 0x0401e172; TRUE low word 0x04006172.
/// * proc2: APIC access, EPT, descriptor tables, RDTSCP, x2APIC, VPID,
///   WBINVD, unrestricted guest, APIC registers + virtual interrupt
///   delivery, PLE, RDRAND, INVPCID, VMFUNC (EPTP switching), VMCS
///   shadowing, RDSEED, PML, #VE, XSAVES, MBE, TSC scaling = 0x2577fff.
/// * exit: ACK, SAVE_DBG, host address size, perf global ctrl, PAT, EFER,
///   preemption timer, save perf global ctrl | 0x36dff; TRUE 0x36dfb.
/// * entry: LOAD_DBG, SMM, dual monitor, IA-32e, perf, PAT, EFER | 0x11ff;
///   TRUE 0x11fb.
/// * EPT/VPID: 0x06114141 | 1 GiB pages | A/D, | 0xf01 << 32.
/// * CR4_FIXED1: the model's `cr4_suppmask` (VME..OSXMMEXCPT, VMXE,
///   FSGSBASE, PCIDE, OSXSAVE, SMEP, SMAP) = 0x3727ff.
const BOCHS_SKYLAKE_X: Dump = &[
    (0x480, 0x00d8_1000_0000_002b),
    (0x481, 0x0000_007f_0000_0016),
    (0x482, 0xf7f9_fffe_0401_e172),
    (0x483, 0x407f_ffff_0003_6dff),
    (0x484, 0x0000_ffff_0000_11ff),
    (0x486, 0x8000_0021),
    (0x487, 0xffff_ffff),
    (0x488, 0x2000),
    (0x489, 0x0037_27ff),
    (0x48b, 0x0257_7fff_0000_0000),
    (0x48c, 0x0000_0f01_0633_4141),
    (0x48d, 0x0000_007f_0000_0016),
    (0x48e, 0xf7f9_fffe_0400_6172),
    (0x48f, 0x407f_ffff_0003_6dfb),
    (0x490, 0x0000_ffff_0000_11fb),
];

fn rdmsr(d: Dump, index: u32) -> Option<u64> {
    d.iter().find(|&&(i, _)| i == index).map(|&(_, v)| v)
}

/// Reads the capability MSRs the way the module does: BASIC picks the
/// control MSRs (a missing one panics, so a wrong pick shows), and the
/// secondary controls and EPT/VPID capabilities are read only if the
/// primary controls allow "activate secondary controls" (SDM A.3.3).
fn caps(d: Dump) -> CapMsrs {
    let rd = |i: u32| rdmsr(d, i).unwrap_or_else(|| panic!("MSR {i:#x} read but absent"));
    let basic = rd(0x480);
    let (p, q, x, e) = CapMsrs::control_msrs(basic);
    let proc = rd(q);
    let (proc2, ept_vpid) = if proc >> 63 != 0 {
        (rd(0x48b), rdmsr(d, 0x48c).unwrap_or(0))
    } else {
        (0, 0)
    };
    CapMsrs {
        basic,
        pin: rd(p),
        proc,
        proc2,
        exit: rd(x),
        entry: rd(e),
        ept_vpid,
        misc: rdmsr(d, 0x485).unwrap_or(0),
        cr0_fixed: (rd(0x486), rd(0x487)),
        cr4_fixed: (rd(0x488), rd(0x489)),
    }
}

/// What rkvm cannot run without.
const REQ_PIN: u32 = pin::EXT_INTR_EXITING | pin::NMI_EXITING | pin::VIRTUAL_NMIS;
const REQ_PROC: u32 = vmcs::proc::HLT_EXITING
    | vmcs::proc::MWAIT_EXITING
    | vmcs::proc::MONITOR_EXITING
    | vmcs::proc::CR8_LOAD_EXITING
    | vmcs::proc::CR8_STORE_EXITING
    | vmcs::proc::MOV_DR_EXITING
    | vmcs::proc::RDPMC_EXITING
    | vmcs::proc::UNCOND_IO_EXITING
    | vmcs::proc::USE_MSR_BITMAPS
    | vmcs::proc::USE_TSC_OFFSETTING
    | vmcs::proc::SECONDARY_CONTROLS;
const REQ_PROC2: u32 = proc2::ENABLE_EPT | proc2::UNRESTRICTED_GUEST;
const REQ_EXIT: u32 = exit_ctl::HOST_ADDR_SPACE_SIZE
    | exit_ctl::SAVE_DEBUG_CONTROLS
    | exit_ctl::SAVE_PAT
    | exit_ctl::LOAD_PAT
    | exit_ctl::SAVE_EFER
    | exit_ctl::LOAD_EFER;
const REQ_ENTRY: u32 = entry_ctl::LOAD_DEBUG_CONTROLS | entry_ctl::LOAD_PAT | entry_ctl::LOAD_EFER;
const CR3_EXITING: u32 = vmcs::proc::CR3_LOAD_EXITING | vmcs::proc::CR3_STORE_EXITING;

/// A control word passes the VM-entry checks of SDM 26.2.1 against its
/// capability MSR: every allowed-0 bit (low word) set, nothing outside
/// the allowed-1 bits (high word).
fn assert_allowed(name: &str, ctl: u32, cap: u64) {
    let must = cap as u32;
    let may = (cap >> 32) as u32;
    assert_eq!(
        ctl & must,
        must,
        "{name} {ctl:#x}: must-be-1 bits {must:#x}"
    );
    assert_eq!(ctl & !may, 0, "{name} {ctl:#x}: outside allowed-1 {may:#x}");
}

/// Everything a configuration must satisfy on the CPU it came from.
fn assert_usable(c: &Config, k: &CapMsrs) {
    assert_allowed("pin", c.pin, k.pin);
    assert_allowed("proc", c.proc, k.proc);
    assert_allowed("proc2", c.proc2, k.proc2);
    assert_allowed("exit", c.exit, k.exit);
    assert_allowed("entry", c.entry, k.entry);
    // A 64-bit guest is entered with IA-32e mode set: still allowed.
    assert_allowed("entry|IA32E", c.entry | entry_ctl::IA32E_MODE, k.entry);

    assert_eq!(c.pin & REQ_PIN, REQ_PIN);
    assert_eq!(c.proc & REQ_PROC, REQ_PROC);
    assert_eq!(c.proc2 & REQ_PROC2, REQ_PROC2);
    assert_eq!(c.exit & REQ_EXIT, REQ_EXIT);
    assert_eq!(c.entry & REQ_ENTRY, REQ_ENTRY);

    // With the TRUE MSRs CR3 accesses need not exit under EPT.
    if Basic::from_msr(k.basic).true_ctls {
        assert_eq!(c.proc & CR3_EXITING, 0, "CR3 load/store exiting left on");
    }
    // IA-32e mode is per entry; interrupts stay pending in the guest's
    // IRR rather than being acknowledged on exit.
    assert_eq!(c.entry & entry_ctl::IA32E_MODE, 0);
    assert_eq!(c.exit & exit_ctl::ACK_INTR_ON_EXIT, 0);
    // SDM 26.2.1.3: "entry to SMM" and "deactivate dual-monitor treatment"
    // must be 0 outside SMM.
    assert_eq!(c.entry & (3 << 10), 0);
    // SDM 26.2.1.2: no "save VMX-preemption timer value" without the timer.
    if c.pin & (1 << 6) == 0 {
        assert_eq!(c.exit & (1 << 22), 0);
    }
    // VPID in the controls exactly when the configuration says so.
    assert_eq!(c.proc2 & proc2::ENABLE_VPID != 0, c.vpid);
    assert!(c.invept_type == 1 || c.invept_type == 2);
    if c.invept_type == 1 {
        assert!(k.ept_vpid & ept_cap::INVEPT_SINGLE != 0);
    } else {
        assert!(k.ept_vpid & ept_cap::INVEPT_ALL != 0);
    }
    assert_eq!(c.ept_2m, k.ept_vpid & ept_cap::PAGE_2M != 0);
    assert_eq!((c.cr0_fixed0, c.cr0_fixed1), k.cr0_fixed);
    assert_eq!((c.cr4_fixed0, c.cr4_fixed1), k.cr4_fixed);
    let b = Basic::from_msr(k.basic);
    assert_eq!((c.revision, c.ins_outs_info), (b.revision, b.ins_outs_info));
}

/// The controls rkvm ends up with on a CPU with the TRUE MSRs and INVPCID,
/// worked out by hand: the required bits, plus the default1 bits.
const TRUE_PIN: u32 = 0x3f; // 0x29 | 0x16
const TRUE_PROC: u32 = 0xb598_6dfa; // 0xb1980c88 | 0x04006172
const TRUE_EXIT: u32 = 0x003f_6fff; // 0x003c0204 | 0x00036dfb
const TRUE_ENTRY: u32 = 0xd1ff; // 0xc004 | 0x11fb
const PROC2_ALL: u32 = 0x10aa; // EPT, RDTSCP, VPID, UG, INVPCID
const PROC2_NO_INVPCID: u32 = 0xaa;

/// The preemption-timer bit and value rkvm picks when the CPU has the
/// timer: the bit is optional, the value is `PREEMPTION_TSC_TICKS` scaled
/// by IA32_VMX_MISC's rate.
fn timer(k: &CapMsrs) -> (u32, u32) {
    if (k.pin >> 32) as u32 & pin::PREEMPTION_TIMER != 0 {
        (
            pin::PREEMPTION_TIMER,
            (vmcs::PREEMPTION_TSC_TICKS >> (k.misc & 0x1f)) as u32,
        )
    } else {
        (0, 0)
    }
}

fn expected(k: &CapMsrs, revision: u32, proc2: u32, cr4_fixed1: u64) -> Config {
    let (timer_bit, timer_value) = timer(k);
    Config {
        revision,
        ins_outs_info: true,
        pin: TRUE_PIN | timer_bit,
        proc: TRUE_PROC,
        proc2,
        exit: TRUE_EXIT,
        entry: TRUE_ENTRY,
        vpid: true,
        invept_type: 1,
        invvpid_type: 1,
        ept_2m: true,
        preemption_timer: timer_value,
        cr0_fixed0: 0x8000_0021,
        cr0_fixed1: 0xffff_ffff,
        cr4_fixed0: 0x2000,
        cr4_fixed1,
    }
}

#[test]
fn skylake_i7_6700k() {
    let k = caps(SKYLAKE_6700K);
    // The TRUE MSRs were read, not the legacy ones.
    assert_eq!(k.proc, 0xfff9_fffe_0400_6172);
    let c = Config::compute(&k).unwrap();
    assert_usable(&c, &k);
    assert_eq!(c, expected(&k, 4, PROC2_ALL, 0x0037_27ff));
}

#[test]
fn broadwell_i7_5600u() {
    let k = caps(BROADWELL_5600U);
    let c = Config::compute(&k).unwrap();
    assert_usable(&c, &k);
    assert_eq!(c, expected(&k, 0x12, PROC2_ALL, 0x0037_67ff));
}

#[test]
fn ivy_bridge_i5_3570() {
    let k = caps(IVY_BRIDGE_3570);
    let c = Config::compute(&k).unwrap();
    assert_usable(&c, &k);
    // No INVPCID control on Ivy Bridge: the optional bit is dropped.
    assert_eq!(c.proc2 & proc2::ENABLE_INVPCID, 0);
    assert_eq!(c, expected(&k, 0x10, PROC2_NO_INVPCID, 0x0017_67ff));
}

#[test]
fn silvermont_pentium_n3530() {
    let k = caps(SILVERMONT_N3530);
    let c = Config::compute(&k).unwrap();
    assert_usable(&c, &k);
    assert_eq!(c, expected(&k, 2, PROC2_NO_INVPCID, 0x0010_27ff));
}

#[test]
fn bochs_corei7_skylake_x() {
    let k = caps(BOCHS_SKYLAKE_X);
    assert_eq!(Basic::from_msr(k.basic).region_size, 4096);
    let c = Config::compute(&k).unwrap();
    assert_usable(&c, &k);
    // Bochs has no monitor trap flag (bit 27), which rkvm does not use.
    assert_eq!(c, expected(&k, 0x2b, PROC2_ALL, 0x0037_27ff));
}

#[test]
fn penryn_xeon_x5482_has_no_ept() {
    let k = caps(PENRYN_X5482);
    // No TRUE MSRs: the legacy ones were read (`caps` would have panicked
    // on a TRUE index), and the EPT/VPID MSR is absent.
    assert_eq!(k.pin, 0x0000_003f_0000_0016);
    assert_eq!(k.ept_vpid, 0);
    assert_eq!(Config::compute(&k), Err(Missing::Ept));
}

#[test]
fn merom_core2_x6800_has_no_secondary_controls() {
    let mut k = caps(MEROM_X6800);
    assert_eq!((k.proc2, k.ept_vpid), (0, 0));
    // No virtual NMIs either, which is reported first.
    assert_eq!(Config::compute(&k), Err(Missing::Pin(pin::VIRTUAL_NMIS)));
    k.pin |= u64::from(pin::VIRTUAL_NMIS) << 32;
    assert_eq!(
        Config::compute(&k),
        Err(Missing::Proc(vmcs::proc::SECONDARY_CONTROLS))
    );
}

#[test]
fn yonah_core_duo_t2600_lacks_cr8_exiting_too() {
    // A 32-bit CPU: no CR8, so no CR8 load/store exiting, reported along
    // with the missing secondary controls.
    let mut k = caps(YONAH_T2600);
    assert_eq!(Config::compute(&k), Err(Missing::Pin(pin::VIRTUAL_NMIS)));
    k.pin |= u64::from(pin::VIRTUAL_NMIS) << 32;
    assert_eq!(
        Config::compute(&k),
        Err(Missing::Proc(
            vmcs::proc::CR8_LOAD_EXITING
                | vmcs::proc::CR8_STORE_EXITING
                | vmcs::proc::SECONDARY_CONTROLS
        ))
    );
}

/// Without the TRUE MSRs (BASIC bit 55 clear), the legacy MSRs force CR3
/// load/store exiting (default1 bits 15 and 16, SDM A.3.2); everything else
/// comes out the same.
#[test]
fn legacy_msrs_keep_cr3_exiting() {
    let mut k = caps(SKYLAKE_6700K);
    k.basic &= !(1 << 55);
    assert_eq!(CapMsrs::control_msrs(k.basic), (0x481, 0x482, 0x483, 0x484));
    k.pin = rdmsr(SKYLAKE_6700K, 0x481).unwrap();
    k.proc = rdmsr(SKYLAKE_6700K, 0x482).unwrap();
    k.exit = rdmsr(SKYLAKE_6700K, 0x483).unwrap();
    k.entry = rdmsr(SKYLAKE_6700K, 0x484).unwrap();
    let c = Config::compute(&k).unwrap();
    assert_usable(&c, &k);
    assert_eq!(c.proc & CR3_EXITING, CR3_EXITING);
    assert_eq!(c.proc, TRUE_PROC | CR3_EXITING);
    assert_eq!(c.proc, 0xb599_edfa);
    assert_eq!(
        (c.pin, c.exit, c.entry),
        (TRUE_PIN | timer(&k).0, TRUE_EXIT, TRUE_ENTRY)
    );
}

// Synthetic capability values: a Skylake with one thing taken away.

fn skylake() -> CapMsrs {
    caps(SKYLAKE_6700K)
}

fn without_may(cap: &mut u64, bits: u32) {
    *cap &= !(u64::from(bits) << 32);
}

#[test]
fn missing_ept() {
    let mut k = skylake();
    without_may(&mut k.proc2, proc2::ENABLE_EPT);
    assert_eq!(Config::compute(&k), Err(Missing::Ept));
}

#[test]
fn missing_unrestricted_guest() {
    let mut k = skylake();
    without_may(&mut k.proc2, proc2::UNRESTRICTED_GUEST);
    assert_eq!(Config::compute(&k), Err(Missing::UnrestrictedGuest));
}

#[test]
fn missing_ept_format() {
    let cases: &[(&str, u64)] = &[
        ("4-level walks", ept_cap::PWL4),
        ("write-back paging structures", ept_cap::MEMTYPE_WB),
        ("INVEPT", ept_cap::INVEPT),
        (
            "both INVEPT types",
            ept_cap::INVEPT_SINGLE | ept_cap::INVEPT_ALL,
        ),
    ];
    for &(what, bits) in cases {
        let mut k = skylake();
        k.ept_vpid &= !bits;
        assert_eq!(
            Config::compute(&k),
            Err(Missing::EptFormat),
            "without {what}"
        );
    }
    // Only 5-level walks is no good either: rkvm builds 4-level tables.
    let mut k = skylake();
    k.ept_vpid = (k.ept_vpid & !ept_cap::PWL4) | ept_cap::PWL5;
    assert_eq!(Config::compute(&k), Err(Missing::EptFormat));
    // No EPT/VPID capability MSR at all.
    let mut k = skylake();
    k.ept_vpid = 0;
    assert_eq!(Config::compute(&k), Err(Missing::EptFormat));
}

#[test]
fn invept_type_choice() {
    // Single-context preferred (type 1), all-context (type 2) otherwise.
    let mut k = skylake();
    assert_eq!(Config::compute(&k).unwrap().invept_type, 1);
    k.ept_vpid &= !ept_cap::INVEPT_ALL;
    assert_eq!(Config::compute(&k).unwrap().invept_type, 1);
    let mut k = skylake();
    k.ept_vpid &= !ept_cap::INVEPT_SINGLE;
    let c = Config::compute(&k).unwrap();
    assert_eq!(c.invept_type, 2);
    assert_usable(&c, &k);
}

#[test]
fn vpid_needs_the_control_and_a_usable_invvpid() {
    let mut k = skylake();
    without_may(&mut k.proc2, proc2::ENABLE_VPID);
    let c = Config::compute(&k).unwrap();
    assert!(!c.vpid);
    assert_eq!(c.proc2, PROC2_ALL & !proc2::ENABLE_VPID);
    assert_usable(&c, &k);

    let mut k = skylake();
    k.ept_vpid &= !ept_cap::INVVPID;
    let c = Config::compute(&k).unwrap();
    assert!(!c.vpid && c.proc2 & proc2::ENABLE_VPID == 0);

    // INVVPID with only the individual-address type (bit 40) is not enough.
    let mut k = skylake();
    k.ept_vpid &= !(ept_cap::INVVPID_SINGLE | ept_cap::INVVPID_ALL);
    let c = Config::compute(&k).unwrap();
    assert!(!c.vpid && c.proc2 & proc2::ENABLE_VPID == 0);

    // Either single- or all-context is.
    for drop in [ept_cap::INVVPID_SINGLE, ept_cap::INVVPID_ALL] {
        let mut k = skylake();
        k.ept_vpid &= !drop;
        let c = Config::compute(&k).unwrap();
        assert!(c.vpid && c.proc2 & proc2::ENABLE_VPID != 0);
    }
}

#[test]
fn optional_secondary_controls() {
    let mut k = skylake();
    without_may(&mut k.proc2, proc2::ENABLE_RDTSCP | proc2::ENABLE_INVPCID);
    let c = Config::compute(&k).unwrap();
    assert_eq!(
        c.proc2,
        proc2::ENABLE_EPT | proc2::UNRESTRICTED_GUEST | proc2::ENABLE_VPID
    );
    // A must-be-1 secondary bit is honoured.
    let mut k = skylake();
    k.proc2 |= u64::from(proc2::WBINVD_EXITING);
    let c = Config::compute(&k).unwrap();
    assert_eq!(c.proc2, PROC2_ALL | proc2::WBINVD_EXITING);
    assert_usable(&c, &k);
}

#[test]
fn no_2m_ept_pages() {
    let mut k = skylake();
    k.ept_vpid &= !ept_cap::PAGE_2M;
    assert!(!Config::compute(&k).unwrap().ept_2m);
}

#[test]
fn missing_pin_proc_exit_entry_controls_are_named_exactly() {
    let mut k = skylake();
    without_may(&mut k.pin, pin::NMI_EXITING);
    assert_eq!(Config::compute(&k), Err(Missing::Pin(pin::NMI_EXITING)));
    let mut k = skylake();
    without_may(&mut k.pin, pin::VIRTUAL_NMIS);
    assert_eq!(Config::compute(&k), Err(Missing::Pin(pin::VIRTUAL_NMIS)));
    // The window exits are set per entry, so they must be allowed.
    let mut k = skylake();
    without_may(&mut k.proc, vmcs::proc::NMI_WINDOW_EXITING);
    assert_eq!(
        Config::compute(&k),
        Err(Missing::Proc(vmcs::proc::NMI_WINDOW_EXITING))
    );

    let mut k = skylake();
    let gone = vmcs::proc::HLT_EXITING | vmcs::proc::MONITOR_EXITING;
    without_may(&mut k.proc, gone);
    assert_eq!(Config::compute(&k), Err(Missing::Proc(gone)));

    let mut k = skylake();
    without_may(&mut k.proc, vmcs::proc::USE_MSR_BITMAPS);
    assert_eq!(
        Config::compute(&k),
        Err(Missing::Proc(vmcs::proc::USE_MSR_BITMAPS))
    );

    let mut k = skylake();
    let gone = exit_ctl::LOAD_EFER | exit_ctl::SAVE_PAT;
    without_may(&mut k.exit, gone);
    assert_eq!(Config::compute(&k), Err(Missing::Exit(gone)));

    let mut k = skylake();
    without_may(&mut k.exit, exit_ctl::HOST_ADDR_SPACE_SIZE);
    assert_eq!(
        Config::compute(&k),
        Err(Missing::Exit(exit_ctl::HOST_ADDR_SPACE_SIZE))
    );

    let mut k = skylake();
    without_may(&mut k.entry, entry_ctl::LOAD_PAT);
    assert_eq!(
        Config::compute(&k),
        Err(Missing::Entry(entry_ctl::LOAD_PAT))
    );

    // Not required: losing them changes nothing.
    let mut k = skylake();
    without_may(
        &mut k.proc,
        vmcs::proc::RDTSC_EXITING | vmcs::proc::INVLPG_EXITING,
    );
    without_may(&mut k.exit, exit_ctl::ACK_INTR_ON_EXIT);
    assert_eq!(Config::compute(&k), Config::compute(&skylake()));
}

#[test]
fn vmcs_region_must_fit_a_page_and_be_write_back() {
    let with_basic = |basic: u64| {
        let mut k = skylake();
        k.basic = basic;
        Config::compute(&k)
    };
    let ok = 0x00da_0000_0000_0004u64;
    for size in [1u64, 1024, 4096] {
        assert!(with_basic(ok | size << 32).is_ok(), "size {size}");
    }
    for size in [0u64, 4097, 0x1fff] {
        assert_eq!(
            with_basic(ok | size << 32),
            Err(Missing::VmcsRegion),
            "size {size}"
        );
    }
    // Memory type UC (0) instead of WB (6) in bits 53:50.
    let uc = (ok & !(0xf << 50)) | 0x400 << 32;
    assert_eq!(with_basic(uc), Err(Missing::VmcsRegion));
    // The region is checked first.
    let mut k = skylake();
    k.basic = ok;
    k.pin = 0;
    assert_eq!(Config::compute(&k), Err(Missing::VmcsRegion));
}

#[test]
fn missing_things_are_reported_in_order() {
    // pin before proc before EPT before exit before entry.
    let mut k = skylake();
    without_may(&mut k.pin, pin::EXT_INTR_EXITING);
    without_may(&mut k.proc, vmcs::proc::HLT_EXITING);
    assert_eq!(
        Config::compute(&k),
        Err(Missing::Pin(pin::EXT_INTR_EXITING))
    );

    let mut k = skylake();
    without_may(&mut k.proc2, proc2::ENABLE_EPT | proc2::UNRESTRICTED_GUEST);
    without_may(&mut k.exit, exit_ctl::LOAD_EFER);
    assert_eq!(Config::compute(&k), Err(Missing::Ept));

    let mut k = skylake();
    without_may(&mut k.exit, exit_ctl::LOAD_EFER);
    without_may(&mut k.entry, entry_ctl::LOAD_EFER);
    assert_eq!(Config::compute(&k), Err(Missing::Exit(exit_ctl::LOAD_EFER)));
}

// ---------------------------------------------------------------------------
// 4. Guest CR0/CR4 under the fixed-bit MSRs (SDM A.7, A.8, 26.3.1.1)
// ---------------------------------------------------------------------------

/// A Broadwell: CR0_FIXED0 0x80000021, CR0_FIXED1 0xffffffff, CR4_FIXED0
/// 0x2000, CR4_FIXED1 0x3767ff.
fn broadwell_config() -> Config {
    Config::compute(&caps(BROADWELL_5600U)).unwrap()
}

#[test]
fn guest_cr0_leaves_pe_and_pg_to_the_guest() {
    let c = broadwell_config();
    let (pe, pg, ne) = (x86::CR0_PE, x86::CR0_PG, x86::CR0_NE);
    // Real mode: neither PE nor PG forced, NE is.
    assert_eq!(c.guest_cr0(0), ne);
    // RESET value CD | NW | ET.
    assert_eq!(c.guest_cr0(0x6000_0010), 0x6000_0030);
    assert_eq!(c.guest_cr0(pe), pe | ne);
    assert_eq!(c.guest_cr0(pe | pg), pe | pg | ne);
    // A Linux-style CR0: PG | AM | WP | NE | ET | MP | PE, unchanged.
    assert_eq!(c.guest_cr0(0x8005_0033), 0x8005_0033);
    // Bits above 31 are not allowed by CR0_FIXED1.
    assert_eq!(c.guest_cr0(1 << 40 | pe), pe | ne);
    // The raw MSR is kept; only the guest view drops PE and PG.
    assert_eq!(c.cr0_fixed0, 0x8000_0021);
}

#[test]
fn guest_cr4_forces_vmxe() {
    let c = broadwell_config();
    let vmxe = x86::CR4_VMXE;
    assert_eq!(c.guest_cr4(0), vmxe);
    assert_eq!(c.guest_cr4(x86::CR4_PAE), x86::CR4_PAE | vmxe);
    let linux = x86::CR4_PAE
        | x86::CR4_PGE
        | x86::CR4_OSFXSR
        | x86::CR4_OSXMMEXCPT
        | x86::CR4_FSGSBASE
        | x86::CR4_PCIDE
        | x86::CR4_OSXSAVE
        | x86::CR4_SMEP;
    assert_eq!(c.guest_cr4(linux), linux | vmxe);
    // 0x3767ff has neither UMIP (11) nor LA57 (12) nor PKE (22).
    assert_eq!(
        c.guest_cr4(x86::CR4_LA57 | x86::CR4_UMIP | x86::CR4_PAE),
        x86::CR4_PAE | vmxe
    );
    assert_eq!(c.guest_cr4(1 << 22), vmxe);
}

#[test]
fn guest_cr0_with_pe_pg_outside_fixed1() {
    // Should a CPU not allow PG in FIXED1, it is not forced either.
    let mut c = broadwell_config();
    c.cr0_fixed1 = 0x7fff_ffff;
    assert_eq!(
        c.guest_cr0(x86::CR0_PG | x86::CR0_PE),
        x86::CR0_PE | x86::CR0_NE
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn guest_cr0_cr4_properties(wanted in any::<u64>()) {
        let c = broadwell_config();
        let cr0 = c.guest_cr0(wanted);
        let must0 = 0x8000_0021 & !(x86::CR0_PE | x86::CR0_PG);
        prop_assert_eq!(cr0 & must0, must0);
        prop_assert_eq!(cr0 & !0xffff_ffffu64, 0);
        prop_assert_eq!(cr0 & (x86::CR0_PE | x86::CR0_PG), wanted & (x86::CR0_PE | x86::CR0_PG));
        // Bits allowed either way are the guest's.
        prop_assert_eq!(cr0 & 0xffff_ffff & !must0, wanted & 0xffff_ffff & !must0);

        let cr4 = c.guest_cr4(wanted);
        prop_assert!(cr4 & x86::CR4_VMXE != 0);
        prop_assert_eq!(cr4 & !0x0037_67ffu64, 0);
        prop_assert_eq!(cr4 & 0x0037_67ff & !x86::CR4_VMXE, wanted & 0x0037_67ff & !x86::CR4_VMXE);
    }
}

// ---------------------------------------------------------------------------
// 5. EPT entries and pointer (SDM 28.3.2, 25.6.11)
// ---------------------------------------------------------------------------

#[test]
fn ept_bit_constants() {
    // VMX_EPT_READABLE_MASK etc.; memory type in bits 5:3, WB = 6.
    assert_eq!(ept::READ, 0x1);
    assert_eq!(ept::WRITE, 0x2);
    assert_eq!(ept::EXEC, 0x4);
    assert_eq!(ept::MT_WB, 0x30);
    assert_eq!(ept::IGNORE_PAT, 0x40); // VMX_EPT_IPAT_BIT
    assert_eq!(ept::LARGE, 0x80);
    // Bits 51:12.
    assert_eq!(ept::ADDR, ((1u64 << 52) - 1) & !0xfff);
}

#[test]
fn ept_table_entry() {
    assert_eq!(ept::table(0x1234_5000), 0x1234_5007);
    assert_eq!(ept::table(0), 0x7);
    // Low 12 bits and bits 63:52 of the address are dropped: nothing lands
    // in the memory type, ignore-PAT, large, A/D or suppress-#VE bits.
    assert_eq!(ept::table(u64::MAX), 0x000f_ffff_ffff_f007);
    assert_eq!(ept::table(0x8000_0000_0000_0fff), 0x7);
}

#[test]
fn ept_leaf_entry() {
    // 4 KiB, writable: RWX | WB << 3 | IPAT.
    assert_eq!(ept::leaf(0x5000, true, false), 0x5077);
    assert_eq!(ept::leaf(0x5000, false, false), 0x5075);
    // 2 MiB: plus bit 7.
    assert_eq!(ept::leaf(0x20_0000, true, true), 0x20_00f7);
    assert_eq!(ept::leaf(0x20_0000, false, true), 0x20_00f5);
    for (writable, large) in [(false, false), (false, true), (true, false), (true, true)] {
        let e = ept::leaf(0xf_ffff_ffe0_0000, writable, large);
        assert_eq!(e & ept::ADDR, 0xf_ffff_ffe0_0000);
        assert_eq!(e & 1, 1, "readable");
        assert_eq!(e >> 1 & 1, u64::from(writable), "writable");
        assert_eq!(e >> 2 & 1, 1, "executable");
        assert_eq!(e >> 3 & 7, 6, "memory type WB");
        assert_eq!(e >> 6 & 1, 1, "ignore PAT");
        assert_eq!(e >> 7 & 1, u64::from(large), "large");
        // Accessed, dirty, user-execute, ignored bits and suppress #VE clear.
        assert_eq!(e & 0xf00, 0);
        assert_eq!(e >> 52, 0);
    }
    // Address masking.
    assert_eq!(ept::leaf(u64::MAX, false, false), 0x000f_ffff_ffff_f075);
    assert_eq!(ept::leaf(0x7000 | 0xabc, true, false), 0x7077);
}

#[test]
fn ept_present() {
    assert!(!ept::present(0));
    assert!(ept::present(ept::READ));
    assert!(ept::present(ept::WRITE));
    assert!(ept::present(ept::EXEC));
    // Address, memory type, IPAT and large bits without R/W/X: not present.
    assert!(!ept::present(0x000f_ffff_ffff_f000 | 0xf8));
    assert!(!ept::present(1 << 63));
    assert!(ept::present(ept::table(0x1000)));
    assert!(ept::present(ept::leaf(0x1000, false, false)));
    assert!(ept::present(ept::leaf(0x1000, true, true)));
}

#[test]
fn ept_pointer() {
    // Memory type WB (6) in 2:0, walk length - 1 in 5:3, no A/D (bit 6).
    assert_eq!(ept::pointer(0x1234_5000, 4), 0x1234_501e);
    assert_eq!(ept::pointer(0x1234_5000, 4) & 0x3f, 0x18 | 6); // VMX_EPTP_PWL_4 | VMX_EPTP_MT_WB
    assert_eq!(ept::pointer(0x1234_5000, 5) & 0x3f, 0x20 | 6); // VMX_EPTP_PWL_5
    let p = ept::pointer(0xa_bcde_f000, 4);
    assert_eq!(p & 7, 6);
    assert_eq!(p >> 3 & 7, 3);
    assert_eq!(p & 1 << 6, 0);
    assert_eq!(p & 0xf80, 0, "bits 11:7 reserved");
    assert_eq!(p & ept::ADDR, 0xa_bcde_f000);
    // The root's low bits and bits above 51 do not leak in.
    assert_eq!(ept::pointer(0xfff0_0000_1234_5fff, 4), 0x1234_501e);
}

// ---------------------------------------------------------------------------
// 6. Exit qualifications (SDM 28.2.1) and interruption information (25.8.3,
//    28.2.2-28.2.4)
// ---------------------------------------------------------------------------

/// An I/O exit qualification (SDM table 28-5): size - 1 in 2:0, IN in 3,
/// string 4, REP 5, immediate operand 6, port 31:16.
fn io_qual(port: u16, size: u8, input: bool, string: bool, rep: bool, imm: bool) -> u64 {
    u64::from(size - 1)
        | u64::from(input) << 3
        | u64::from(string) << 4
        | u64::from(rep) << 5
        | u64::from(imm) << 6
        | u64::from(port) << 16
}

#[test]
fn io_qualification_for_each_instruction_and_size() {
    // (what, port, size, input, string, rep, imm)
    let cases: &[(&str, u16, u8, bool, bool, bool, bool)] = &[
        ("in al, dx", 0x3f8, 1, true, false, false, false),
        ("in ax, dx", 0x1f0, 2, true, false, false, false),
        ("in eax, dx", 0xcfc, 4, true, false, false, false),
        ("in al, 0x60", 0x60, 1, true, false, false, true),
        ("in eax, 0x40", 0x40, 4, true, false, false, true),
        ("out dx, al", 0x3f8, 1, false, false, false, false),
        ("out dx, ax", 0x1f0, 2, false, false, false, false),
        ("out dx, eax", 0xcf8, 4, false, false, false, false),
        ("out 0x80, al", 0x80, 1, false, false, false, true),
        ("insb", 0x1f0, 1, true, true, false, false),
        ("insw", 0x1f0, 2, true, true, false, false),
        ("insd", 0x1f0, 4, true, true, false, false),
        ("rep insw", 0x1f0, 2, true, true, true, false),
        ("outsb", 0x3f8, 1, false, true, false, false),
        ("outsw", 0x1f0, 2, false, true, false, false),
        ("outsd", 0xffff, 4, false, true, false, false),
        ("rep outsb", 0x3f8, 1, false, true, true, false),
        ("rep outsd", 0, 4, false, true, true, false),
    ];
    for &(what, port, size, input, string, rep, imm) in cases {
        let q = io_qual(port, size, input, string, rep, imm);
        assert_eq!(
            IoQual::decode(q),
            IoQual {
                port,
                size,
                input,
                string,
                rep
            },
            "{what} ({q:#x})"
        );
    }
}

#[test]
fn io_qualification_real_sample() {
    // A KVM trace of the VMware backdoor (`in eax, dx` on port 0x5658):
    // "reason IO_INSTRUCTION info1 5658000b".
    assert_eq!(
        IoQual::decode(0x5658_000b),
        IoQual {
            port: 0x5658,
            size: 4,
            input: true,
            string: false,
            rep: false
        }
    );
    // Reserved bits 15:7 do not disturb the decode.
    assert_eq!(IoQual::decode(0x5658_ff8b), IoQual::decode(0x5658_000b));
}

#[test]
fn ins_outs_instruction_information() {
    // SDM table 28-8: address size in 9:7 (0 16-bit, 1 32-bit, 2 64-bit),
    // segment in 17:15 (0 ES .. 5 GS); the rest undefined.
    for (code, bytes) in [(0u32, 2u8), (1, 4), (2, 8)] {
        for seg in 0u32..6 {
            let info = code << 7 | seg << 15;
            assert_eq!(ins_outs_info(info), (bytes, seg as u8), "{info:#x}");
            let noisy = info | !(7 << 7 | 7 << 15);
            assert_eq!(ins_outs_info(noisy), (bytes, seg as u8), "{noisy:#x}");
        }
    }
    // OUTS with a DS override in 32-bit code; INS always reports ES.
    assert_eq!(ins_outs_info(1 << 7 | 3 << 15), (4, 3));
    assert_eq!(ins_outs_info(2 << 7), (8, 0));
}

/// A control-register access qualification (SDM table 28-3).
fn cr_qual(cr: u64, access: u64, gpr: u64, lmsw_mem: bool, lmsw: u64) -> u64 {
    cr | access << 4 | u64::from(lmsw_mem) << 6 | gpr << 8 | lmsw << 16
}

#[test]
fn cr_access_mov_to_and_from_each_gpr() {
    for cr in [0u8, 3, 4, 8] {
        for gpr in 0u8..16 {
            let to = cr_qual(cr.into(), 0, gpr.into(), false, 0);
            assert_eq!(
                CrAccess::decode(to),
                CrAccess::Write { cr, gpr },
                "mov cr{cr}, r{gpr}"
            );
            let from = cr_qual(cr.into(), 1, gpr.into(), false, 0);
            assert_eq!(
                CrAccess::decode(from),
                CrAccess::Read { cr, gpr },
                "mov r{gpr}, cr{cr}"
            );
        }
    }
    // A few literal qualifications.
    assert_eq!(CrAccess::decode(0x0), CrAccess::Write { cr: 0, gpr: 0 }); // mov cr0, rax
    assert_eq!(CrAccess::decode(0x404), CrAccess::Write { cr: 4, gpr: 4 }); // mov cr4, rsp
    assert_eq!(CrAccess::decode(0xf03), CrAccess::Write { cr: 3, gpr: 15 }); // mov cr3, r15
    assert_eq!(CrAccess::decode(0x13), CrAccess::Read { cr: 3, gpr: 0 }); // mov rax, cr3
    assert_eq!(CrAccess::decode(0xc18), CrAccess::Read { cr: 8, gpr: 12 }); // mov r12, cr8
}

#[test]
fn cr_access_clts_and_lmsw() {
    assert_eq!(CrAccess::decode(0x20), CrAccess::Clts);
    // LMSW from a register: type 3, source data in 31:16.
    assert_eq!(
        CrAccess::decode(cr_qual(0, 3, 0, false, 0x0001)),
        CrAccess::Lmsw(1)
    );
    assert_eq!(CrAccess::decode(0xfff1_0030), CrAccess::Lmsw(0xfff1));
    // LMSW from memory (bit 6): the data is still in 31:16.
    assert_eq!(
        CrAccess::decode(cr_qual(0, 3, 0, true, 0x000f)),
        CrAccess::Lmsw(0xf)
    );
    for data in [0u16, 1, 0xe, 0x8001, 0xffff] {
        assert_eq!(
            CrAccess::decode(cr_qual(0, 3, 0, false, data.into())),
            CrAccess::Lmsw(data)
        );
    }
}

#[test]
fn ept_violation_access_bits() {
    assert_eq!(ept_violation(0x1), (true, false, false));
    assert_eq!(ept_violation(0x2), (false, true, false));
    assert_eq!(ept_violation(0x4), (false, false, true));
    assert_eq!(ept_violation(0x0), (false, false, false));
    // A write to a read-only page: the entry's permissions (bits 5:3) and
    // the guest-linear-address bits (7, 8) are not the access.
    assert_eq!(ept_violation(0x18a), (false, true, false));
    // A fetch from a readable, writable, non-executable page.
    assert_eq!(ept_violation(0x19c), (false, false, true));
    // A read that walked the guest's page tables (read + bit 7).
    assert_eq!(ept_violation(0x81), (true, false, false));
}

#[test]
fn interruption_info_constants_match_vmx_h() {
    assert_eq!(intr::VALID, 0x8000_0000); // INTR_INFO_VALID_MASK
    assert_eq!(intr::ERROR_CODE, 0x800); // INTR_INFO_DELIVER_CODE_MASK
    assert_eq!(intr::TYPE_MASK, 0x700); // INTR_INFO_INTR_TYPE_MASK
    assert_eq!(intr::TYPE_EXT, 0);
    assert_eq!(intr::TYPE_NMI, 2 << 8);
    assert_eq!(intr::TYPE_HW_EXCEPTION, 3 << 8);
    assert_eq!(intr::TYPE_SOFT_INTR, 4 << 8);
    assert_eq!(intr::TYPE_PRIV_SOFT, 5 << 8);
    assert_eq!(intr::TYPE_SOFT_EXCEPTION, 6 << 8);
}

#[test]
fn exception_injection_info() {
    assert_eq!(intr::exception(14, true), 0x8000_0b0e); // #PF
    assert_eq!(intr::exception(13, true), 0x8000_0b0d); // #GP
    assert_eq!(intr::exception(8, true), 0x8000_0b08); // #DF
    assert_eq!(intr::exception(6, false), 0x8000_0306); // #UD
    assert_eq!(intr::exception(0, false), 0x8000_0300); // #DE
    assert_eq!(intr::exception(18, false), 0x8000_0312); // #MC
    for v in 0u8..32 {
        for ec in [false, true] {
            let i = intr::exception(v, ec);
            assert_eq!(i & 0xff, u32::from(v));
            assert_eq!(i >> 8 & 7, 3, "hardware exception");
            assert_eq!(i >> 11 & 1, u32::from(ec));
            assert_eq!(i & 0x7fff_f000, 0, "reserved bits 30:12");
            assert_eq!(i >> 31, 1);
        }
    }
}

#[test]
fn reinject_by_event_type() {
    let valid = intr::VALID;
    // Injected again: external interrupt, NMI, hardware exception.
    assert!(intr::reinject(valid | 0x20)); // timer vector 0x20
    assert!(intr::reinject(valid | 2 << 8 | 2)); // NMI
    assert!(intr::reinject(valid | 3 << 8 | 1 << 11 | 14)); // #PF with error code
    assert!(intr::reinject(valid | 3 << 8 | 6)); // #UD
                                                 // Re-executed: INT n, INT1 (ICEBP), INT3 / INTO.
    assert!(!intr::reinject(valid | 4 << 8 | 0x80)); // int 0x80
    assert!(!intr::reinject(valid | 5 << 8 | 1)); // int1
    assert!(!intr::reinject(valid | 6 << 8 | 3)); // int3
    assert!(!intr::reinject(valid | 6 << 8 | 4)); // into
                                                  // Nothing to do without the valid bit, whatever the rest says.
    for t in 0u32..8 {
        assert!(!intr::reinject(t << 8 | 0x0e | 1 << 11));
    }
    assert!(!intr::reinject(0));
}

// ---------------------------------------------------------------------------
// 7. Segment access rights (SDM table 24-2)
// ---------------------------------------------------------------------------

#[allow(clippy::too_many_arguments)]
fn ar(type_: u8, s: u8, dpl: u8, present: u8, avl: u8, l: u8, db: u8, g: u8) -> AccessRights {
    AccessRights {
        type_,
        s,
        dpl,
        present,
        avl,
        l,
        db,
        g,
        unusable: false,
    }
}

#[test]
fn access_rights_known_values() {
    let table: &[(&str, u32, AccessRights)] = &[
        ("64-bit kernel code", 0xa09b, ar(0xb, 1, 0, 1, 0, 1, 0, 1)),
        ("64-bit user code", 0xa0fb, ar(0xb, 1, 3, 1, 0, 1, 0, 1)),
        ("32-bit flat code", 0xc09b, ar(0xb, 1, 0, 1, 0, 0, 1, 1)),
        ("32-bit flat data", 0xc093, ar(0x3, 1, 0, 1, 0, 0, 1, 1)),
        ("real-mode code", 0x9b, ar(0xb, 1, 0, 1, 0, 0, 0, 0)),
        ("real-mode data", 0x93, ar(0x3, 1, 0, 1, 0, 0, 0, 0)),
        ("user data", 0xf3, ar(0x3, 1, 3, 1, 0, 0, 0, 0)),
        ("busy 32/64-bit TSS", 0x8b, ar(0xb, 0, 0, 1, 0, 0, 0, 0)),
        ("busy 16-bit TSS", 0x83, ar(0x3, 0, 0, 1, 0, 0, 0, 0)),
        ("LDT", 0x82, ar(0x2, 0, 0, 1, 0, 0, 0, 0)),
        ("AVL set", 0x1093, ar(0x3, 1, 0, 1, 1, 0, 0, 0)),
    ];
    for &(what, vmcs_form, fields) in table {
        assert_eq!(fields.pack(), vmcs_form, "{what}: pack");
        assert_eq!(AccessRights::unpack(vmcs_form), fields, "{what}: unpack");
    }
}

#[test]
fn access_rights_unusable() {
    assert_eq!(AR_UNUSABLE, 0x1_0000); // VMX_AR_UNUSABLE_MASK
    let u = AccessRights {
        unusable: true,
        ..AccessRights::default()
    };
    assert_eq!(u.pack(), 0x1_0000);
    assert_eq!(AccessRights::unpack(0x1_0000), u);
    // As hardware saves a null data segment: unusable plus leftovers.
    let saved = AccessRights::unpack(0x1_c093);
    assert!(saved.unusable);
    assert_eq!((saved.type_, saved.present), (3, 1));
    assert_eq!(saved.pack() & AR_UNUSABLE, AR_UNUSABLE);
}

/// SDM 26.3.2.2: SS.DPL is loaded from the access-rights field even when
/// SS is unusable, and becomes the CPL; 27.3.2: it is saved likewise. A
/// 64-bit guest at CPL 1 or 2 may run with a null (unusable) SS.
#[test]
fn unusable_ss_keeps_its_dpl() {
    for dpl in 0u8..4 {
        let ss = AccessRights {
            dpl,
            unusable: true,
            ..AccessRights::default()
        };
        let packed = ss.pack();
        assert_eq!(packed & AR_UNUSABLE, AR_UNUSABLE);
        assert_eq!(packed >> 5 & 3, u32::from(dpl), "SS.DPL of an unusable SS");
        assert_eq!(AccessRights::unpack(packed).dpl, dpl);
    }
    // VM exit saved an unusable SS at CPL 2; writing it back must not
    // change the CPL.
    let a = 0x1_0000 | 2 << 5;
    assert_eq!(AccessRights::unpack(a).pack(), a);
}

#[test]
fn access_rights_pack_masks_out_of_range_fields() {
    let wide = AccessRights {
        type_: 0x1b,
        dpl: 7,
        ..ar(0, 1, 0, 1, 0, 0, 0, 0)
    };
    assert_eq!(wide.pack(), 0x0000_00fb);
}

/// Access-rights fields with each value in range, usable.
fn usable_ar() -> impl Strategy<Value = AccessRights> {
    (
        0u8..16,
        0u8..2,
        0u8..4,
        0u8..2,
        0u8..2,
        0u8..2,
        0u8..2,
        0u8..2,
    )
        .prop_map(|(t, s, d, p, a, l, db, g)| ar(t, s, d, p, a, l, db, g))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn access_rights_fields_round_trip(a in usable_ar()) {
        prop_assert_eq!(AccessRights::unpack(a.pack()), a);
    }

    /// Every VMCS access-rights value with the reserved bits (31:17, 11:8,
    /// VMX_AR_RESERVD_MASK) and the unusable bit clear survives unpack+pack.
    #[test]
    fn access_rights_vmcs_form_round_trips(raw in any::<u32>()) {
        let a = raw & !0xfffe_0f00 & !AR_UNUSABLE;
        prop_assert_eq!(AccessRights::unpack(a).pack(), a);
    }

    /// Whatever the fields hold, pack never sets a reserved bit, and sets
    /// the unusable bit exactly when asked.
    #[test]
    fn access_rights_pack_is_well_formed(
        f in (any::<u8>(), any::<u8>(), any::<u8>(), any::<u8>(), any::<u8>(), any::<u8>(), any::<u8>(), any::<u8>()),
        unusable in any::<bool>(),
    ) {
        let a = AccessRights { unusable, ..ar(f.0, f.1, f.2, f.3, f.4, f.5, f.6, f.7) };
        let v = a.pack();
        prop_assert_eq!(v & 0xfffe_0f00, 0);
        prop_assert_eq!(v & AR_UNUSABLE != 0, unusable);
    }
}

// ---------------------------------------------------------------------------
// 8. MSR bitmap (SDM 25.6.9): read-low at byte 0, read-high at 1024,
//    write-low at 2048, write-high at 3072.
// ---------------------------------------------------------------------------

/// Sets `msr`'s read and write bits in a 4 KiB bitmap.
fn bitmap_with(msrs: &[u32]) -> [u8; 4096] {
    let mut page = [0u8; 4096];
    for &m in msrs {
        let (r, w) = msr_bitmap_bits(m).unwrap();
        page[r / 8] |= 1 << (r % 8);
        page[w / 8] |= 1 << (w % 8);
    }
    page
}

#[test]
fn msr_bitmap_low_msrs() {
    assert_eq!(msr_bitmap_bits(0), Some((0, 2048 * 8)));
    assert_eq!(msr_bitmap_bits(0x10), Some((0x10, 0x10 + 16384))); // TSC
    assert_eq!(msr_bitmap_bits(0x1fff), Some((0x1fff, 0x1fff + 16384)));
    // IA32_DEBUGCTL (0x1d9): byte 59 bit 1 for reads, byte 2107 for writes.
    let page = bitmap_with(&[0x1d9]);
    assert_eq!(page[59], 0b10);
    assert_eq!(page[2048 + 59], 0b10);
    assert_eq!(page.iter().filter(|&&b| b != 0).count(), 2);
}

#[test]
fn msr_bitmap_high_msrs() {
    // IA32_EFER: read bit in byte 1024 + 0x80 / 8, write bit 2 KiB later.
    assert_eq!(
        msr_bitmap_bits(0xc000_0080),
        Some((8192 + 0x80, 8192 + 0x80 + 16384))
    );
    let page = bitmap_with(&[0xc000_0080]);
    assert_eq!(page[1040], 1);
    assert_eq!(page[3088], 1);
    assert_eq!(msr_bitmap_bits(0xc000_0000), Some((8192, 8192 + 16384)));
    // The last MSR of the high range: the last bit of each half.
    assert_eq!(msr_bitmap_bits(0xc000_1fff), Some((16383, 32767)));
    // FS_BASE, GS_BASE, KERNEL_GS_BASE: bytes 1056, bits 0..2.
    let page = bitmap_with(&[0xc000_0100, 0xc000_0101, 0xc000_0102]);
    assert_eq!(page[1056], 0b111);
    assert_eq!(page[3104], 0b111);
}

#[test]
fn msr_bitmap_out_of_range() {
    for m in [
        0x2000,
        0x4000_0000, // Hyper-V range
        0x4b56_4d00, // KVM paravirtual range
        0xbfff_ffff,
        0xc000_2000,
        0xc001_0000, // AMD range
        u32::MAX,
    ] {
        assert_eq!(msr_bitmap_bits(m), None, "{m:#x}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn msr_bitmap_positions(m in prop_oneof![0u32..0x2000, 0xc000_0000u32..0xc000_2000, any::<u32>()]) {
        let (base, off) = match m {
            0..=0x1fff => (0usize, m),
            0xc000_0000..=0xc000_1fff => (1024, m - 0xc000_0000),
            _ => {
                prop_assert_eq!(msr_bitmap_bits(m), None);
                return Ok(());
            }
        };
        let (r, w) = msr_bitmap_bits(m).unwrap();
        let byte = base + (off / 8) as usize;
        prop_assert_eq!((r / 8, r % 8), (byte, (off % 8) as usize));
        prop_assert_eq!((w / 8, w % 8), (byte + 2048, (off % 8) as usize));
        prop_assert!(r < 2048 * 8 && (2048 * 8..4096 * 8).contains(&w));
    }
}
