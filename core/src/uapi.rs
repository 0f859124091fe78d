//! The KVM userspace ABI structures rkvm reads and writes, laid out exactly
//! as `include/uapi/linux/kvm.h` and `arch/x86/include/uapi/asm/kvm.h`.
//!
//! Sizes and offsets are asserted at compile time, so a layout mistake does
//! not build. The structs are plain integer data without padding holes (so
//! the module may mark them `FromBytes`/`AsBytes` and copy them to and
//! from userspace as bytes).

// Field names are the C header's; they are documented there.
#![allow(missing_docs)]

use core::mem::{offset_of, size_of};

/// `struct kvm_regs`: general-purpose registers, RIP and RFLAGS.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvmRegs {
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rsp: u64,
    pub rbp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    pub rip: u64,
    pub rflags: u64,
}

impl KvmRegs {
    /// From GPRs in x86 register-number order (RAX, RCX, RDX, RBX, RSP,
    /// RBP, RSI, RDI, R8-R15), RIP and RFLAGS.
    pub fn from_gprs(g: &[u64; 16], rip: u64, rflags: u64) -> Self {
        Self {
            rax: g[0],
            rcx: g[1],
            rdx: g[2],
            rbx: g[3],
            rsp: g[4],
            rbp: g[5],
            rsi: g[6],
            rdi: g[7],
            r8: g[8],
            r9: g[9],
            r10: g[10],
            r11: g[11],
            r12: g[12],
            r13: g[13],
            r14: g[14],
            r15: g[15],
            rip,
            rflags,
        }
    }

    /// The GPRs in x86 register-number order.
    pub fn gprs(&self) -> [u64; 16] {
        [
            self.rax, self.rcx, self.rdx, self.rbx, self.rsp, self.rbp, self.rsi, self.rdi,
            self.r8, self.r9, self.r10, self.r11, self.r12, self.r13, self.r14, self.r15,
        ]
    }
}

/// `struct kvm_segment`: a segment register in unpacked form.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvmSegment {
    pub base: u64,
    pub limit: u32,
    pub selector: u16,
    pub type_: u8,
    pub present: u8,
    pub dpl: u8,
    pub db: u8,
    pub s: u8,
    pub l: u8,
    pub g: u8,
    pub avl: u8,
    pub unusable: u8,
    pub padding: u8,
}

/// `struct kvm_dtable`: GDTR or IDTR.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvmDtable {
    pub base: u64,
    pub limit: u16,
    pub padding: [u16; 3],
}

/// `KVM_NR_INTERRUPTS`: bits in `kvm_sregs.interrupt_bitmap`.
pub const KVM_NR_INTERRUPTS: usize = 256;

/// `struct kvm_sregs`: segments, descriptor tables, control registers.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvmSregs {
    pub cs: KvmSegment,
    pub ds: KvmSegment,
    pub es: KvmSegment,
    pub fs: KvmSegment,
    pub gs: KvmSegment,
    pub ss: KvmSegment,
    pub tr: KvmSegment,
    pub ldt: KvmSegment,
    pub gdt: KvmDtable,
    pub idt: KvmDtable,
    pub cr0: u64,
    pub cr2: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub cr8: u64,
    pub efer: u64,
    pub apic_base: u64,
    pub interrupt_bitmap: [u64; KVM_NR_INTERRUPTS.div_ceil(64)],
}

/// `struct kvm_userspace_memory_region`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvmUserspaceMemoryRegion {
    pub slot: u32,
    pub flags: u32,
    pub guest_phys_addr: u64,
    pub memory_size: u64,
    pub userspace_addr: u64,
}

/// `struct kvm_userspace_memory_region2`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvmUserspaceMemoryRegion2 {
    pub slot: u32,
    pub flags: u32,
    pub guest_phys_addr: u64,
    pub memory_size: u64,
    pub userspace_addr: u64,
    pub guest_memfd_offset: u64,
    pub guest_memfd: u32,
    pub pad1: u32,
    pub pad2: [u64; 14],
}

/// `struct kvm_dirty_log` (the bitmap pointer as a 64-bit address).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvmDirtyLog {
    pub slot: u32,
    pub padding1: u32,
    pub dirty_bitmap: u64,
}

/// `struct kvm_cpuid_entry2`: the CPUID core's entry type.
pub use super::cpuid::Entry as KvmCpuidEntry2;

/// The header of `struct kvm_cpuid2` (entries follow it).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvmCpuid2Header {
    pub nent: u32,
    pub padding: u32,
}

/// `struct kvm_msr_entry`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvmMsrEntry {
    pub index: u32,
    pub reserved: u32,
    pub data: u64,
}

/// `struct kvm_x86_mce`, the argument of `KVM_X86_SET_MCE` (KVM does not
/// check the padding).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvmX86Mce {
    pub status: u64,
    pub addr: u64,
    pub misc: u64,
    pub mcg_status: u64,
    pub bank: u8,
    pub pad1: [u8; 7],
    pub pad2: [u64; 3],
}

/// The header of `struct kvm_msrs` (entries follow it).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvmMsrsHeader {
    pub nmsrs: u32,
    pub pad: u32,
}

/// The exit-specific part of `struct kvm_run` (a C union of 256 bytes);
/// accessors below give the typed views rkvm uses.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvmRunExit(pub [u8; 256]);

impl Default for KvmRunExit {
    fn default() -> Self {
        Self([0; 256])
    }
}

/// `struct kvm_run`, the page shared with userspace through the vCPU mmap.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvmRun {
    pub request_interrupt_window: u8,
    pub immediate_exit: u8,
    pub padding1: [u8; 6],
    pub exit_reason: u32,
    pub ready_for_interrupt_injection: u8,
    pub if_flag: u8,
    pub flags: u16,
    pub cr8: u64,
    pub apic_base: u64,
    pub exit: KvmRunExit,
    pub kvm_valid_regs: u64,
    pub kvm_dirty_regs: u64,
    pub sync_regs: SyncRegsArea,
}

/// `kvm_run.s`: the 2 KiB area for `KVM_CAP_SYNC_REGS` (unused by rkvm).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncRegsArea(pub [u8; 2048]);

impl Default for SyncRegsArea {
    fn default() -> Self {
        Self([0; 2048])
    }
}

#[cfg_attr(rkvm_module, expect(dead_code, reason = "the KVM ABI's whole list"))]
/// Exit reasons (`KVM_EXIT_*`) rkvm reports.
pub mod exit {
    pub const UNKNOWN: u32 = 0;
    pub const EXCEPTION: u32 = 1;
    pub const IO: u32 = 2;
    pub const DEBUG: u32 = 4;
    pub const HLT: u32 = 5;
    pub const MMIO: u32 = 6;
    pub const IRQ_WINDOW_OPEN: u32 = 7;
    pub const SHUTDOWN: u32 = 8;
    pub const FAIL_ENTRY: u32 = 9;
    pub const INTR: u32 = 10;
    pub const SET_TPR: u32 = 11;
    pub const INTERNAL_ERROR: u32 = 17;
    pub const IOAPIC_EOI: u32 = 26;
}

#[cfg_attr(rkvm_module, expect(dead_code, reason = "the KVM ABI's whole list"))]
/// `KVM_INTERNAL_ERROR_*` suberrors.
pub mod internal {
    pub const EMULATION: u32 = 1;
    pub const SIMUL_EX: u32 = 2;
    pub const DELIVERY_EV: u32 = 3;
    pub const UNEXPECTED_EXIT_REASON: u32 = 4;
}

/// `kvm_run.io.direction` values.
pub const KVM_EXIT_IO_IN: u8 = 0;
pub const KVM_EXIT_IO_OUT: u8 = 1;

impl KvmRun {
    /// Fills in a `KVM_EXIT_IO`: `data_offset` is from the start of `kvm_run`.
    /// How many bytes of the exit union the current exit uses (what must
    /// reach userspace; the rest keeps whatever an earlier exit left, as in
    /// KVM).
    pub fn exit_len(&self) -> usize {
        match self.exit_reason {
            exit::IO | exit::FAIL_ENTRY => 16,
            exit::MMIO => 24,
            // A #BP leaves DR6/DR7 as an earlier exit left them, as KVM's
            // bp_interception does.
            exit::DEBUG if self.exit.0[0] == 3 => 16,
            exit::DEBUG => 32,
            exit::IOAPIC_EOI => 1,
            exit::INTERNAL_ERROR => {
                let ndata = u32::from_ne_bytes([
                    self.exit.0[4],
                    self.exit.0[5],
                    self.exit.0[6],
                    self.exit.0[7],
                ]);
                8 + 8 * (ndata as usize).min(16)
            }
            _ => 0,
        }
    }

    pub fn set_io(&mut self, direction: u8, size: u8, port: u16, count: u32, data_offset: u64) {
        self.exit_reason = exit::IO;
        let e = &mut self.exit.0;
        e[0] = direction;
        e[1] = size;
        e[2..4].copy_from_slice(&port.to_ne_bytes());
        e[4..8].copy_from_slice(&count.to_ne_bytes());
        e[8..16].copy_from_slice(&data_offset.to_ne_bytes());
    }

    /// Fills in a `KVM_EXIT_MMIO` (`data` holds the value for a write).
    pub fn set_mmio(&mut self, phys_addr: u64, data: [u8; 8], len: u32, is_write: bool) {
        self.exit_reason = exit::MMIO;
        let e = &mut self.exit.0;
        e[0..8].copy_from_slice(&phys_addr.to_ne_bytes());
        e[8..16].copy_from_slice(&data);
        e[16..20].copy_from_slice(&len.to_ne_bytes());
        e[20] = u8::from(is_write);
    }

    /// Fills in a `KVM_EXIT_DEBUG` (`kvm_debug_exit_arch`); `dr6_dr7` is
    /// left as it was when `None` (as KVM leaves it for a #BP and for
    /// the single step of an instruction it emulated, where only DR6 is
    /// set).
    pub fn set_debug(&mut self, exception: u32, pc: u64, dr6: Option<u64>, dr7: Option<u64>) {
        self.exit_reason = exit::DEBUG;
        let e = &mut self.exit.0;
        e[0..4].copy_from_slice(&exception.to_ne_bytes());
        e[4..8].copy_from_slice(&0u32.to_ne_bytes());
        e[8..16].copy_from_slice(&pc.to_ne_bytes());
        if let Some(v) = dr6 {
            e[16..24].copy_from_slice(&v.to_ne_bytes());
        }
        if let Some(v) = dr7 {
            e[24..32].copy_from_slice(&v.to_ne_bytes());
        }
    }

    /// Fills in a `KVM_EXIT_IOAPIC_EOI` (split irqchip: the guest's EOI of
    /// a vector a userspace IOAPIC route delivers level-triggered).
    pub fn set_ioapic_eoi(&mut self, vector: u8) {
        self.exit_reason = exit::IOAPIC_EOI;
        self.exit.0[0] = vector;
    }

    /// Fills in a `KVM_EXIT_FAIL_ENTRY`.
    pub fn set_fail_entry(&mut self, reason: u64, cpu: u32) {
        self.exit_reason = exit::FAIL_ENTRY;
        let e = &mut self.exit.0;
        e[0..8].copy_from_slice(&reason.to_ne_bytes());
        e[8..12].copy_from_slice(&cpu.to_ne_bytes());
    }

    /// Fills in a `KVM_EXIT_INTERNAL_ERROR` with up to 16 data words.
    pub fn set_internal_error(&mut self, suberror: u32, data: &[u64]) {
        self.exit_reason = exit::INTERNAL_ERROR;
        let n = data.len().min(16);
        let e = &mut self.exit.0;
        e[0..4].copy_from_slice(&suberror.to_ne_bytes());
        e[4..8].copy_from_slice(&(n as u32).to_ne_bytes());
        for (i, d) in data[..n].iter().enumerate() {
            e[8 + i * 8..16 + i * 8].copy_from_slice(&d.to_ne_bytes());
        }
    }
}

/// `struct kvm_vcpu_events` (`KVM_GET/SET_VCPU_EVENTS`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvmVcpuEvents {
    pub exception_injected: u8,
    pub exception_nr: u8,
    pub exception_has_error_code: u8,
    pub exception_pending: u8,
    pub exception_error_code: u32,
    pub interrupt_injected: u8,
    pub interrupt_nr: u8,
    pub interrupt_soft: u8,
    pub interrupt_shadow: u8,
    pub nmi_injected: u8,
    pub nmi_pending: u8,
    pub nmi_masked: u8,
    pub nmi_pad: u8,
    pub sipi_vector: u32,
    pub flags: u32,
    pub smi_smm: u8,
    pub smi_pending: u8,
    pub smi_smm_inside_nmi: u8,
    pub smi_latched_init: u8,
    pub triple_fault_pending: u8,
    pub reserved: [u8; 26],
    pub exception_has_payload: u8,
    pub exception_payload: u64,
}

/// `struct kvm_guest_debug` (`KVM_SET_GUEST_DEBUG`) on x86.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvmGuestDebug {
    pub control: u32,
    pub pad: u32,
    /// DR0-DR7 (4 and 5 unused).
    pub debugreg: [u64; 8],
}

/// `struct kvm_debugregs` (`KVM_GET/SET_DEBUGREGS`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvmDebugregs {
    pub db: [u64; 4],
    pub dr6: u64,
    pub dr7: u64,
    pub flags: u64,
    pub reserved: [u64; 9],
}

/// `struct kvm_xcr`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvmXcr {
    pub xcr: u32,
    pub reserved: u32,
    pub value: u64,
}

/// `KVM_MAX_XCRS`.
pub const KVM_MAX_XCRS: usize = 16;

/// `struct kvm_xcrs` (`KVM_GET/SET_XCRS`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvmXcrs {
    pub nr_xcrs: u32,
    pub flags: u32,
    pub xcrs: [KvmXcr; KVM_MAX_XCRS],
    pub padding: [u64; 16],
}

/// `struct kvm_fpu` (`KVM_GET/SET_FPU`): the legacy x87/SSE state.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvmFpu {
    pub fpr: [[u8; 16]; 8],
    pub fcw: u16,
    pub fsw: u16,
    pub ftwx: u8,
    pub pad1: u8,
    pub last_opcode: u16,
    pub last_ip: u64,
    pub last_dp: u64,
    pub xmm: [[u8; 16]; 16],
    pub mxcsr: u32,
    pub pad2: u32,
}

/// `struct kvm_clock_data` (`KVM_GET/SET_CLOCK`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvmClockData {
    pub clock: u64,
    pub flags: u32,
    pub pad0: u32,
    pub realtime: u64,
    pub host_tsc: u64,
    pub pad: [u32; 4],
}

/// `struct kvm_enable_cap` (`KVM_ENABLE_CAP`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvmEnableCap {
    pub cap: u32,
    pub flags: u32,
    pub args: [u64; 4],
    pub pad: [u8; 64],
}

/// `struct kvm_msi` (`KVM_SIGNAL_MSI`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvmMsi {
    pub address_lo: u32,
    pub address_hi: u32,
    pub data: u32,
    pub flags: u32,
    pub devid: u32,
    pub pad: [u8; 12],
}

/// `KVM_MSI_VALID_DEVID`: the only `kvm_msi.flags` bit.
pub const KVM_MSI_VALID_DEVID: u32 = 1 << 0;

/// `struct kvm_ioeventfd` (`KVM_IOEVENTFD`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvmIoeventfd {
    pub datamatch: u64,
    pub addr: u64,
    pub len: u32,
    pub fd: i32,
    pub flags: u32,
    pub pad: [u8; 36],
}

/// `struct kvm_irq_routing` (`KVM_SET_GSI_ROUTING`), without its entries.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvmIrqRoutingHeader {
    pub nr: u32,
    pub flags: u32,
}

/// `struct kvm_irq_routing_entry`: `u` is the union (irqchip, MSI, ...)
/// as words; for an MSI route they are `address_lo`, `address_hi`,
/// `data` and `devid`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvmIrqRoutingEntry {
    pub gsi: u32,
    pub type_: u32,
    pub flags: u32,
    pub pad: u32,
    pub u: [u32; 8],
}

/// `struct kvm_irq_level` (`KVM_IRQ_LINE`, `KVM_IRQ_LINE_STATUS`): `irq`
/// in, and the status out in the same word.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvmIrqLevel {
    pub irq: u32,
    pub level: u32,
}

/// `struct kvm_irqfd` (`KVM_IRQFD`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvmIrqfd {
    pub fd: u32,
    pub gsi: u32,
    pub flags: u32,
    pub resamplefd: u32,
    pub pad: [u8; 16],
}

/// `KVM_IRQFD_FLAG_DEASSIGN`.
pub const KVM_IRQFD_FLAG_DEASSIGN: u32 = 1 << 0;
/// `KVM_IRQFD_FLAG_RESAMPLE`.
pub const KVM_IRQFD_FLAG_RESAMPLE: u32 = 1 << 1;

/// `struct kvm_translation` (`KVM_TRANSLATE`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvmTranslation {
    pub linear_address: u64,
    pub physical_address: u64,
    pub valid: u8,
    pub writeable: u8,
    pub usermode: u8,
    pub pad: [u8; 5],
}

/// `kvm_vcpu_events.flags`.
pub mod vcpu_events {
    /// `nmi.pending` is valid.
    pub const VALID_NMI_PENDING: u32 = 0x01;
    /// `sipi_vector` is valid.
    pub const VALID_SIPI_VECTOR: u32 = 0x02;
    /// `interrupt.shadow` is valid.
    pub const VALID_SHADOW: u32 = 0x04;
    /// `smi` is valid.
    pub const VALID_SMM: u32 = 0x08;
    /// The exception payload is valid (`KVM_CAP_EXCEPTION_PAYLOAD`).
    pub const VALID_PAYLOAD: u32 = 0x10;
    /// `triple_fault` is valid (`KVM_CAP_X86_TRIPLE_FAULT_EVENT`).
    pub const VALID_TRIPLE_FAULT: u32 = 0x20;
}

// Layouts as in the C headers (sizes from pahole on x86-64).
const _: () = {
    assert!(size_of::<KvmRegs>() == 144);
    assert!(size_of::<KvmSegment>() == 24);
    assert!(size_of::<KvmDtable>() == 16);
    assert!(size_of::<KvmSregs>() == 312);
    assert!(offset_of!(KvmSregs, gdt) == 192);
    assert!(offset_of!(KvmSregs, cr0) == 224);
    assert!(offset_of!(KvmSregs, interrupt_bitmap) == 280);
    assert!(size_of::<KvmUserspaceMemoryRegion>() == 32);
    assert!(size_of::<KvmUserspaceMemoryRegion2>() == 160);
    assert!(size_of::<KvmCpuidEntry2>() == 40);
    assert!(size_of::<KvmDirtyLog>() == 16);
    assert!(size_of::<KvmIoeventfd>() == 64);
    assert!(size_of::<KvmMsrEntry>() == 16);
    assert!(size_of::<KvmX86Mce>() == 64);
    assert!(offset_of!(KvmX86Mce, bank) == 32);
    assert!(size_of::<KvmVcpuEvents>() == 64);
    assert!(size_of::<KvmDebugregs>() == 128);
    assert!(size_of::<KvmGuestDebug>() == 72);
    assert!(size_of::<KvmTranslation>() == 24);
    assert!(size_of::<KvmXcrs>() == 392);
    assert!(size_of::<KvmEnableCap>() == 104);
    assert!(size_of::<KvmMsi>() == 32);
    assert!(size_of::<KvmFpu>() == 416);
    assert!(offset_of!(KvmFpu, last_ip) == 136);
    assert!(offset_of!(KvmFpu, xmm) == 152);
    assert!(size_of::<KvmClockData>() == 48);
    assert!(offset_of!(KvmClockData, realtime) == 16);
    assert!(size_of::<KvmIrqRoutingHeader>() == 8);
    assert!(size_of::<KvmIrqRoutingEntry>() == 48);
    assert!(size_of::<KvmIrqLevel>() == 8);
    assert!(size_of::<KvmIrqfd>() == 32);
    assert!(offset_of!(KvmVcpuEvents, interrupt_injected) == 8);
    assert!(offset_of!(KvmVcpuEvents, nmi_injected) == 12);
    assert!(offset_of!(KvmVcpuEvents, flags) == 20);
    assert!(offset_of!(KvmVcpuEvents, triple_fault_pending) == 28);
    assert!(offset_of!(KvmVcpuEvents, exception_has_payload) == 55);
    assert!(offset_of!(KvmVcpuEvents, exception_payload) == 56);
    assert!(offset_of!(KvmRun, exit_reason) == 8);
    assert!(offset_of!(KvmRun, cr8) == 16);
    assert!(offset_of!(KvmRun, exit) == 32);
    assert!(offset_of!(KvmRun, kvm_valid_regs) == 288);
    assert!(offset_of!(KvmRun, sync_regs) == 304);
    assert!(size_of::<KvmRun>() == 2352);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_exit_fields_land_where_c_reads_them() {
        let mut run = KvmRun::default();
        run.set_debug(1, 0x1234, Some(0xffff_4ff0), Some(0x400));
        assert_eq!(run.exit_reason, exit::DEBUG);
        assert_eq!(run.exit_len(), 32);
        let q = |r: &KvmRun, i: usize| u64::from_ne_bytes(r.exit.0[i..i + 8].try_into().unwrap());
        assert_eq!(
            (q(&run, 8), q(&run, 16), q(&run, 24)),
            (0x1234, 0xffff_4ff0, 0x400)
        );
        // A #BP keeps the DR6/DR7 an earlier exit left.
        run.set_debug(3, 0x99, None, None);
        assert_eq!(run.exit_len(), 16);
        assert_eq!(
            (q(&run, 8), q(&run, 16), q(&run, 24)),
            (0x99, 0xffff_4ff0, 0x400)
        );
    }

    #[test]
    fn io_exit_fields_land_where_c_reads_them() {
        let mut run = KvmRun::default();
        run.set_io(KVM_EXIT_IO_OUT, 2, 0x3f8, 3, 4096);
        assert_eq!(run.exit_reason, exit::IO);
        assert_eq!(run.exit.0[0], 1);
        assert_eq!(run.exit.0[1], 2);
        assert_eq!(u16::from_ne_bytes([run.exit.0[2], run.exit.0[3]]), 0x3f8);
        assert_eq!(u32::from_ne_bytes(run.exit.0[4..8].try_into().unwrap()), 3);
        assert_eq!(
            u64::from_ne_bytes(run.exit.0[8..16].try_into().unwrap()),
            4096
        );
    }

    #[test]
    fn exit_len_covers_each_exits_fields() {
        let mut run = KvmRun::default();
        run.set_io(1, 4, 0x80, 1, 4096);
        assert_eq!(run.exit_len(), 16);
        run.set_mmio(0xfee0_0000, [0; 8], 4, true);
        assert_eq!(run.exit_len(), 24);
        run.set_internal_error(1, &[1, 2, 3]);
        assert_eq!(run.exit_len(), 8 + 24);
        run.exit_reason = exit::HLT;
        assert_eq!(run.exit_len(), 0);
    }

    #[test]
    fn mmio_exit_round_trips_data() {
        let mut run = KvmRun::default();
        run.set_mmio(0xfee0_0000, [1, 2, 3, 4, 5, 6, 7, 8], 4, true);
        assert_eq!(run.exit.0[8..16], [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(run.exit.0[20], 1);
        assert_eq!(
            u32::from_ne_bytes(run.exit.0[16..20].try_into().unwrap()),
            4
        );
    }

    #[test]
    fn internal_error_caps_ndata_at_16() {
        let mut run = KvmRun::default();
        run.set_internal_error(internal::EMULATION, &[7; 20]);
        assert_eq!(u32::from_ne_bytes(run.exit.0[4..8].try_into().unwrap()), 16);
        assert_eq!(
            u64::from_ne_bytes(run.exit.0[128..136].try_into().unwrap()),
            7
        );
    }
}
