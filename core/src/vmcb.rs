//! The AMD SVM Virtual Machine Control Block as types: control area, save
//! area and segment format (AMD APM vol. 2, appendix B), with layout
//! asserts, intercept and exit-code constants.

// Field names follow the APM and Linux's svm.h; they are documented there.
#![allow(missing_docs)]

use core::mem::{offset_of, size_of};

/// One segment register in the VMCB's packed form.
#[repr(C, packed)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VmcbSeg {
    pub selector: u16,
    /// Type, S, DPL, P, AVL, L, DB, G packed in 12 bits.
    pub attrib: u16,
    pub limit: u32,
    pub base: u64,
}

/// The control area: intercepts, exit information, event injection.
#[repr(C, packed)]
#[derive(Clone, Copy, Debug)]
pub struct VmcbControl {
    /// Intercept vectors: CR reads/writes, DR reads/writes, exceptions,
    /// then the instruction words (`INTERCEPT_*` below give word and bit).
    pub intercepts: [u32; 6],
    pub reserved_0x18: [u32; 9],
    pub pause_filter_thresh: u16,
    pub pause_filter_count: u16,
    pub iopm_base_pa: u64,
    pub msrpm_base_pa: u64,
    pub tsc_offset: u64,
    pub asid: u32,
    pub tlb_ctl: u8,
    pub erap_ctl: u8,
    pub reserved_0x5e: [u8; 2],
    pub int_ctl: u32,
    pub int_vector: u32,
    pub int_state: u32,
    pub reserved_0x6c: [u8; 4],
    pub exit_code: u64,
    pub exit_info_1: u64,
    pub exit_info_2: u64,
    pub exit_int_info: u32,
    pub exit_int_info_err: u32,
    /// Bit 0: nested paging enable.
    pub misc_ctl: u64,
    pub avic_vapic_bar: u64,
    pub ghcb_gpa: u64,
    pub event_inj: u32,
    pub event_inj_err: u32,
    pub nested_cr3: u64,
    pub misc_ctl2: u64,
    pub clean: u32,
    pub reserved_0xc4: u32,
    pub next_rip: u64,
    pub insn_len: u8,
    pub insn_bytes: [u8; 15],
    pub reserved_0xe0: [u8; 0x400 - 0xe0],
}

/// The state save area (legacy, non-SEV layout).
#[repr(C, packed)]
#[derive(Clone, Copy, Debug)]
pub struct VmcbSave {
    pub es: VmcbSeg,
    pub cs: VmcbSeg,
    pub ss: VmcbSeg,
    pub ds: VmcbSeg,
    pub fs: VmcbSeg,
    pub gs: VmcbSeg,
    pub gdtr: VmcbSeg,
    pub ldtr: VmcbSeg,
    pub idtr: VmcbSeg,
    pub tr: VmcbSeg,
    pub reserved_0xa0: [u8; 42],
    pub vmpl: u8,
    pub cpl: u8,
    pub reserved_0xcc: [u8; 4],
    pub efer: u64,
    pub reserved_0xd8: [u8; 112],
    pub cr4: u64,
    pub cr3: u64,
    pub cr0: u64,
    pub dr7: u64,
    pub dr6: u64,
    pub rflags: u64,
    pub rip: u64,
    pub reserved_0x180: [u8; 88],
    pub rsp: u64,
    pub s_cet: u64,
    pub ssp: u64,
    pub isst_addr: u64,
    pub rax: u64,
    pub star: u64,
    pub lstar: u64,
    pub cstar: u64,
    pub sfmask: u64,
    pub kernel_gs_base: u64,
    pub sysenter_cs: u64,
    pub sysenter_esp: u64,
    pub sysenter_eip: u64,
    pub cr2: u64,
    pub reserved_0x248: [u8; 32],
    pub g_pat: u64,
    pub dbgctl: u64,
    pub br_from: u64,
    pub br_to: u64,
    pub last_excp_from: u64,
    pub last_excp_to: u64,
    pub reserved_0x298: [u8; 72],
    pub spec_ctrl: u64,
}

/// A whole VMCB: one 4 KiB page.
#[repr(C, align(4096))]
#[derive(Clone, Copy, Debug)]
pub struct Vmcb {
    pub control: VmcbControl,
    pub save: VmcbSave,
    pub reserved_0x6e8: [u8; 4096 - 0x6e8],
}

const _: () = {
    assert!(size_of::<VmcbSeg>() == 16);
    assert!(size_of::<VmcbControl>() == 1024);
    assert!(size_of::<VmcbSave>() == 744);
    assert!(size_of::<Vmcb>() == 4096);
    assert!(offset_of!(VmcbControl, iopm_base_pa) == 0x40);
    assert!(offset_of!(VmcbControl, asid) == 0x58);
    assert!(offset_of!(VmcbControl, int_ctl) == 0x60);
    assert!(offset_of!(VmcbControl, exit_code) == 0x70);
    assert!(offset_of!(VmcbControl, exit_int_info) == 0x88);
    assert!(offset_of!(VmcbControl, misc_ctl) == 0x90);
    assert!(offset_of!(VmcbControl, event_inj) == 0xa8);
    assert!(offset_of!(VmcbControl, nested_cr3) == 0xb0);
    assert!(offset_of!(VmcbControl, clean) == 0xc0);
    assert!(offset_of!(VmcbControl, next_rip) == 0xc8);
    assert!(offset_of!(VmcbControl, insn_len) == 0xd0);
    assert!(offset_of!(VmcbSave, reserved_0xa0) == 0xa0);
    assert!(offset_of!(VmcbSave, cpl) == 0xcb);
    assert!(offset_of!(VmcbSave, efer) == 0xd0);
    assert!(offset_of!(VmcbSave, cr4) == 0x148);
    assert!(offset_of!(VmcbSave, rip) == 0x178);
    assert!(offset_of!(VmcbSave, reserved_0x180) == 0x180);
    assert!(offset_of!(VmcbSave, rsp) == 0x1d8);
    assert!(offset_of!(VmcbSave, rax) == 0x1f8);
    assert!(offset_of!(VmcbSave, cr2) == 0x240);
    assert!(offset_of!(VmcbSave, reserved_0x248) == 0x248);
    assert!(offset_of!(VmcbSave, g_pat) == 0x268);
    assert!(offset_of!(VmcbSave, reserved_0x298) == 0x298);
    assert!(offset_of!(Vmcb, save) == 0x400);
};

/// An intercept: (word index into `intercepts`, bit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Intercept(pub u8, pub u8);

#[cfg_attr(rkvm_module, expect(dead_code, reason = "the APM's whole list"))]
/// Word 3 and 4 intercepts (APM table B-1).
pub mod intercept {
    use super::Intercept;
    pub const INTR: Intercept = Intercept(3, 0);
    pub const NMI: Intercept = Intercept(3, 1);
    pub const SMI: Intercept = Intercept(3, 2);
    pub const INIT: Intercept = Intercept(3, 3);
    pub const VINTR: Intercept = Intercept(3, 4);
    pub const CR0_SEL_WRITE: Intercept = Intercept(3, 5);
    pub const RDPMC: Intercept = Intercept(3, 15);
    pub const CPUID: Intercept = Intercept(3, 18);
    pub const RSM: Intercept = Intercept(3, 19);
    pub const IRET: Intercept = Intercept(3, 20);
    pub const INTN: Intercept = Intercept(3, 21);
    pub const INVD: Intercept = Intercept(3, 22);
    pub const PAUSE: Intercept = Intercept(3, 23);
    pub const HLT: Intercept = Intercept(3, 24);
    pub const INVLPG: Intercept = Intercept(3, 25);
    pub const INVLPGA: Intercept = Intercept(3, 26);
    pub const IOIO_PROT: Intercept = Intercept(3, 27);
    pub const MSR_PROT: Intercept = Intercept(3, 28);
    pub const TASK_SWITCH: Intercept = Intercept(3, 29);
    pub const FERR_FREEZE: Intercept = Intercept(3, 30);
    pub const SHUTDOWN: Intercept = Intercept(3, 31);
    pub const VMRUN: Intercept = Intercept(4, 0);
    pub const VMMCALL: Intercept = Intercept(4, 1);
    pub const VMLOAD: Intercept = Intercept(4, 2);
    pub const VMSAVE: Intercept = Intercept(4, 3);
    pub const STGI: Intercept = Intercept(4, 4);
    pub const CLGI: Intercept = Intercept(4, 5);
    pub const SKINIT: Intercept = Intercept(4, 6);
    pub const RDTSCP: Intercept = Intercept(4, 7);
    pub const ICEBP: Intercept = Intercept(4, 8);
    pub const WBINVD: Intercept = Intercept(4, 9);
    pub const MONITOR: Intercept = Intercept(4, 10);
    pub const MWAIT: Intercept = Intercept(4, 11);
    pub const MWAIT_COND: Intercept = Intercept(4, 12);
    pub const XSETBV: Intercept = Intercept(4, 13);
    pub const RDPRU: Intercept = Intercept(4, 14);
    pub const INVLPGB: Intercept = Intercept(5, 0);
    pub const INVPCID: Intercept = Intercept(5, 2);
    pub const MCOMMIT: Intercept = Intercept(5, 3);
    pub const TLBSYNC: Intercept = Intercept(5, 4);
}

#[cfg_attr(rkvm_module, expect(dead_code, reason = "the APM's whole list"))]
/// `#VMEXIT` codes (APM appendix C).
pub mod exit {
    pub const READ_CR0: u64 = 0x000;
    pub const WRITE_CR0: u64 = 0x010;
    pub const EXCP_BASE: u64 = 0x040;
    pub const INTR: u64 = 0x060;
    pub const NMI: u64 = 0x061;
    pub const SMI: u64 = 0x062;
    pub const INIT: u64 = 0x063;
    pub const VINTR: u64 = 0x064;
    pub const CR0_SEL_WRITE: u64 = 0x065;
    pub const RDPMC: u64 = 0x06f;
    pub const CPUID: u64 = 0x072;
    pub const RSM: u64 = 0x073;
    pub const IRET: u64 = 0x074;
    pub const SWINT: u64 = 0x075;
    pub const INVD: u64 = 0x076;
    pub const PAUSE: u64 = 0x077;
    pub const HLT: u64 = 0x078;
    pub const INVLPG: u64 = 0x079;
    pub const INVLPGA: u64 = 0x07a;
    pub const IOIO: u64 = 0x07b;
    pub const MSR: u64 = 0x07c;
    pub const TASK_SWITCH: u64 = 0x07d;
    pub const FERR_FREEZE: u64 = 0x07e;
    pub const SHUTDOWN: u64 = 0x07f;
    pub const VMRUN: u64 = 0x080;
    pub const VMMCALL: u64 = 0x081;
    pub const VMLOAD: u64 = 0x082;
    pub const VMSAVE: u64 = 0x083;
    pub const STGI: u64 = 0x084;
    pub const CLGI: u64 = 0x085;
    pub const SKINIT: u64 = 0x086;
    pub const RDTSCP: u64 = 0x087;
    pub const ICEBP: u64 = 0x088;
    pub const WBINVD: u64 = 0x089;
    pub const MONITOR: u64 = 0x08a;
    pub const MWAIT: u64 = 0x08b;
    pub const MWAIT_COND: u64 = 0x08c;
    pub const XSETBV: u64 = 0x08d;
    pub const RDPRU: u64 = 0x08e;
    pub const INVLPGB: u64 = 0x0a0;
    pub const INVPCID: u64 = 0x0a2;
    pub const MCOMMIT: u64 = 0x0a3;
    pub const TLBSYNC: u64 = 0x0a4;
    pub const NPF: u64 = 0x400;
    /// VMRUN failed its consistency checks.
    pub const INVALID: u64 = u64::MAX;
}

impl VmcbControl {
    /// Sets one intercept bit.
    pub fn set_intercept(&mut self, i: Intercept) {
        let mut words = self.intercepts;
        words[i.0 as usize] |= 1 << i.1;
        self.intercepts = words;
    }

    /// Clears one intercept bit.
    pub fn clear_intercept(&mut self, i: Intercept) {
        let mut words = self.intercepts;
        words[i.0 as usize] &= !(1 << i.1);
        self.intercepts = words;
    }

    #[cfg_attr(rkvm_module, expect(dead_code, reason = "used by the host tests"))]
    /// Whether an intercept bit is set.
    pub fn has_intercept(&self, i: Intercept) -> bool {
        let words = self.intercepts;
        words[i.0 as usize] & (1 << i.1) != 0
    }
}

/// Segment attributes in unpacked (KVM `kvm_segment`) form.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SegAttr {
    pub type_: u8,
    pub s: u8,
    pub dpl: u8,
    pub present: u8,
    pub avl: u8,
    pub l: u8,
    pub db: u8,
    pub g: u8,
}

impl SegAttr {
    /// Packs into the VMCB's 12-bit `attrib` form.
    pub fn pack(&self) -> u16 {
        let bit = |v: u8, shift: u32| u16::from(v & 1) << shift;
        u16::from(self.type_ & 0xf)
            | bit(self.s, 4)
            | (u16::from(self.dpl & 3) << 5)
            | bit(self.present, 7)
            | bit(self.avl, 8)
            | bit(self.l, 9)
            | bit(self.db, 10)
            | bit(self.g, 11)
    }

    /// Unpacks the VMCB's 12-bit `attrib` form.
    pub fn unpack(a: u16) -> Self {
        let bit = |shift: u32| ((a >> shift) & 1) as u8;
        Self {
            type_: (a & 0xf) as u8,
            s: bit(4),
            dpl: ((a >> 5) & 3) as u8,
            present: bit(7),
            avl: bit(8),
            l: bit(9),
            db: bit(10),
            g: bit(11),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attrib_packs_a_flat_code_segment() {
        // 64-bit code: type 0xb, S, P, L, G.
        let code = SegAttr {
            type_: 0xb,
            s: 1,
            present: 1,
            l: 1,
            g: 1,
            ..Default::default()
        };
        assert_eq!(code.pack(), 0xa9b);
        assert_eq!(SegAttr::unpack(0xa9b), code);
        // Real-mode data: type 3, S, P.
        let data = SegAttr {
            type_: 3,
            s: 1,
            present: 1,
            ..Default::default()
        };
        assert_eq!(data.pack(), 0x93);
    }

    #[test]
    fn intercepts_set_the_apm_bits() {
        let mut c = zeroed_control();
        c.set_intercept(intercept::VMRUN);
        c.set_intercept(intercept::HLT);
        let w = c.intercepts;
        assert_eq!(w[4], 1);
        assert_eq!(w[3], 1 << 24);
        assert!(c.has_intercept(intercept::HLT));
        assert!(!c.has_intercept(intercept::CPUID));
    }

    fn zeroed_control() -> VmcbControl {
        VmcbControl {
            intercepts: [0; 6],
            reserved_0x18: [0; 9],
            pause_filter_thresh: 0,
            pause_filter_count: 0,
            iopm_base_pa: 0,
            msrpm_base_pa: 0,
            tsc_offset: 0,
            asid: 0,
            tlb_ctl: 0,
            erap_ctl: 0,
            reserved_0x5e: [0; 2],
            int_ctl: 0,
            int_vector: 0,
            int_state: 0,
            reserved_0x6c: [0; 4],
            exit_code: 0,
            exit_info_1: 0,
            exit_info_2: 0,
            exit_int_info: 0,
            exit_int_info_err: 0,
            misc_ctl: 0,
            avic_vapic_bar: 0,
            ghcb_gpa: 0,
            event_inj: 0,
            event_inj_err: 0,
            nested_cr3: 0,
            misc_ctl2: 0,
            clean: 0,
            reserved_0xc4: 0,
            next_rip: 0,
            insn_len: 0,
            insn_bytes: [0; 15],
            reserved_0xe0: [0; 0x400 - 0xe0],
        }
    }
}
