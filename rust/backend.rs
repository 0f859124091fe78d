// SPDX-License-Identifier: GPL-2.0

//! The contract between the generic hypervisor and a vendor backend (KVM's
//! `kvm_x86_ops`): [`Backend`] for the module-wide part, [`ArchVcpu`] for a
//! vCPU. `svm/` (AMD SVM) and `vmx/` (Intel VT-x) implement both.
//!
//! The VM, vCPU and memory code is generic over `B: Backend` and never
//! names a vendor; the composition root (`rkvm_main.rs`) picks the backend
//! at load and instantiates the generic code for it, so calls across the
//! boundary are static. A backend keeps only what lives in its VMCB or
//! VMCS (or exists for its world switch); everything KVM keeps in `x86.c`
//! — GPRs, debug registers, CR8, the MSRs outside the VMCB/VMCS, the reset
//! state, the policy of every register write — is generic
//! ([`VcpuState`], `vcpu/`).

use crate::{
    addr::Gpa,
    cpuid::GuestCaps,
    decode::{self, Segment},
    events::Event,
    mmu::Format,
    sys::cpu::NoIrq,
    uapi::{KvmDtable, KvmSegment},
};
use kernel::prelude::*;

/// A hardware virtualization backend.
pub(crate) trait Backend: Sized + Send + Sync + 'static {
    /// The name used in kernel messages.
    const NAME: &'static str;
    /// Whose instruction semantics (and page-walk reserved-bit rules) the
    /// emulator follows.
    const CPU: decode::Vendor;
    /// The backend's vCPU.
    type Vcpu: ArchVcpu;
    /// What the backend holds while the module is loaded (per-CPU state,
    /// hotplug registration); dropping it undoes [`Backend::init`].
    type Host: Send + Sync;

    /// Checks that this CPU model supports the backend and that firmware
    /// has not disabled it: `ENODEV` with a message if not.
    fn probe() -> Result;

    /// Whether virtualization is already switched on on the calling CPU
    /// (by another hypervisor such as kvm_amd or kvm_intel).
    fn enabled_on_this_cpu() -> bool;

    /// Sets the backend up for the module's lifetime.
    fn init() -> Result<Self::Host>;

    /// The shape of a VM's second-level page table.
    fn mmu() -> MmuShape;
}

/// The second-level page table a backend walks.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MmuShape {
    /// Entry format.
    pub(crate) format: Format,
    /// Levels (4 or 5).
    pub(crate) levels: u32,
    /// 2 MiB leaves allowed.
    pub(crate) huge: bool,
}

/// The vCPU state that is not in the VMCB or VMCS: the generic side owns
/// it, and the world switch reads and writes it.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct VcpuState {
    /// GPRs by x86 number (RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8-R15).
    pub(crate) gprs: [u64; 16],
    /// The task-priority register, as CR8 (0-15).
    pub(crate) cr8: u64,
    /// `IA32_APIC_BASE`.
    pub(crate) apic_base: u64,
    /// `IA32_PAT`, which the backend loads for the guest.
    pub(crate) pat: u64,
    /// Added to the host's TSC to give the guest's.
    pub(crate) tsc_offset: u64,
    /// `TSC_AUX`, which RDTSCP and RDPID read.
    pub(crate) tsc_aux: u64,
    /// `IA32_MISC_ENABLE`.
    pub(crate) misc_enable: u64,
    /// XCR0, loaded while the guest runs.
    pub(crate) xcr0: u64,
    /// DR0-DR3, as the guest wrote them (its MOVs to and from debug
    /// registers are emulated).
    pub(crate) db: [u64; 4],
    /// DR7 as the guest wrote it.
    pub(crate) dr7: u64,
    /// The DR0-DR3 the guest runs with: its own, or userspace's under
    /// `KVM_GUESTDBG_USE_HW_BP` (KVM's `eff_db`). Loaded into the hardware
    /// around the world switch while `eff_dr7` arms a breakpoint; the
    /// host's are put back after.
    pub(crate) eff_db: [u64; 4],
    /// The DR7 the guest runs with (loaded from the VMCB or VMCS).
    pub(crate) eff_dr7: u64,
    /// Which of the values a backend loads into its VMCB/VMCS only when they
    /// change ([`VcpuState::TSC_OFFSET`], [`VcpuState::PAT`],
    /// [`VcpuState::TSC_AUX`]) changed since the last `prepare`.
    pub(crate) changed: u32,
}

impl VcpuState {
    /// `tsc_offset` changed.
    pub(crate) const TSC_OFFSET: u32 = 1 << 0;
    /// `pat` changed.
    pub(crate) const PAT: u32 = 1 << 1;
    /// `tsc_aux` changed.
    pub(crate) const TSC_AUX: u32 = 1 << 2;
    /// Everything (after RESET).
    pub(crate) const ALL: u32 = Self::TSC_OFFSET | Self::PAT | Self::TSC_AUX;
}

/// What the generic run loop tells the backend about one entry.
/// Preemption is off from `prepare` to `complete`.
pub(crate) struct Entry {
    /// The CPU the vCPU enters on.
    pub(crate) cpu: usize,
    /// The second-level page table root (nCR3, or the EPT root).
    pub(crate) root: u64,
    /// Mappings left the second-level table since this vCPU's last entry:
    /// the guest-physical translations it may hold must be flushed before
    /// the guest next runs (on this entry, or on a later one if this one
    /// is called off).
    pub(crate) flush: bool,
    /// Userspace single-steps the guest (VT-x then drops an STI or MOV SS
    /// shadow, which VM entry would refuse with TF set, as KVM does).
    pub(crate) single_step: bool,
    /// #BP exits (`KVM_GUESTDBG_USE_SW_BP`).
    pub(crate) intercept_bp: bool,
}

/// A segment register, for `KVM_GET/SET_SREGS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sreg {
    /// A data or code segment register.
    Seg(Segment),
    /// The LDT register.
    Ldtr,
    /// The task register.
    Tr,
}

/// A descriptor-table register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dtable {
    /// GDTR.
    Gdt,
    /// IDTR.
    Idt,
}

/// A vendor's vCPU: its VMCB or VMCS, and one guest entry in three steps
/// that the generic run loop sequences (it publishes the CPU for kicks,
/// switches the FPU and XCR0, and checks for signals with interrupts off
/// between the steps):
///
/// 1. [`ArchVcpu::prepare`], with preemption off;
/// 2. [`ArchVcpu::switch`], with interrupts off: the world switch itself;
/// 3. [`ArchVcpu::complete`], interrupts on again: decode the exit.
///
/// Register accessors read and write the values the guest sees; callers
/// have already applied KVM's rules (the setters do only what the hardware
/// needs on top, such as VT-x's long-mode entry control following EFER).
pub(crate) trait ArchVcpu: Send + Sized + Unpin + 'static {
    /// The vendor structures of a new vCPU. The generic side then loads
    /// the RESET state through the setters.
    fn new() -> Result<Self>;

    /// Userspace set the guest's CPUID: adjust what depends on it
    /// (intercepts of instructions the guest may not have).
    fn after_set_cpuid(&mut self, caps: &GuestCaps);

    /// Step 1: makes the VMCB/VMCS ready for an entry on `e.cpu` with `s`
    /// (ASID or VPID, TLB flush, the state loaded from `s`). An error means
    /// the guest cannot be entered (`KVM_RUN` fails with it).
    fn prepare(&mut self, s: &VcpuState, e: &Entry) -> Result;

    /// Step 2: runs the guest until the next exit, with interrupts off,
    /// saving the guest's GPRs in `s`. Not called when the entry is called
    /// off after `prepare`.
    fn switch(&mut self, s: &mut VcpuState, irq: &NoIrq<'_>) -> Result;

    /// Step 3: reads back what the guest changed into `s` and says why it
    /// stopped (the generic side then asks for
    /// [`ArchVcpu::interrupted_event`]).
    fn complete(&mut self, s: &mut VcpuState) -> Exit;

    /// RIP.
    fn rip(&self) -> u64;
    /// Sets RIP (the caller ends the interrupt shadow where an
    /// instruction completed).
    fn set_rip(&mut self, v: u64);
    /// RFLAGS.
    fn rflags(&self) -> u64;
    /// Sets RFLAGS (bit 1 is forced on).
    fn set_rflags(&mut self, v: u64);
    /// CR0 as the guest sees it.
    fn cr0(&self) -> u64;
    /// Sets CR0; long mode (EFER.LMA) follows CR0.PG and EFER.LME.
    fn set_cr0(&mut self, v: u64);
    /// CR2.
    fn cr2(&self) -> u64;
    /// Sets CR2.
    fn set_cr2(&mut self, v: u64);
    /// CR3.
    fn cr3(&self) -> u64;
    /// Sets CR3.
    fn set_cr3(&mut self, v: u64);
    /// CR4 as the guest sees it.
    fn cr4(&self) -> u64;
    /// Sets CR4.
    fn set_cr4(&mut self, v: u64);
    /// EFER as the guest sees it.
    fn efer(&self) -> u64;
    /// Sets EFER.
    fn set_efer(&mut self, v: u64);
    /// The current privilege level.
    fn cpl(&self) -> u8;
    /// A segment register in `kvm_segment` form, as KVM reports it for
    /// this vendor.
    fn segment(&self, s: Sreg) -> KvmSegment;
    /// Loads a segment register (validated by the caller).
    fn set_segment(&mut self, s: Sreg, v: &KvmSegment);
    /// A segment's base (the hot path of IO and MMIO emulation).
    fn segment_base(&self, s: Segment) -> u64;
    /// A descriptor-table register.
    fn dtable(&self, t: Dtable) -> KvmDtable;
    /// Loads a descriptor-table register.
    fn set_dtable(&mut self, t: Dtable, v: &KvmDtable);
    /// The guest's DR6 (emulated: a #DB's cause is merged in by the
    /// generic side).
    fn dr6(&self) -> u64;
    /// Sets the guest's DR6 (the caller fixed its reserved bits).
    fn set_dr6(&mut self, v: u64);
    /// The event to deliver at the next entry (SVM EVENTINJ, VT-x VM-entry
    /// interruption information), or none; called before every entry.
    /// Injecting an NMI blocks NMIs until the guest's IRET.
    fn set_event(&mut self, e: Option<&Event>);
    /// After `complete`: the event whose delivery the exit interrupted
    /// (EXITINTINFO, IDT-vectoring information), or the one set for an
    /// entry that never reached the guest. Software events are left out:
    /// their instruction runs again.
    fn interrupted_event(&mut self) -> Option<Event>;
    /// The interrupt shadow, as `KVM_X86_SHADOW_INT_*` bits.
    fn interrupt_shadow(&self) -> u8;
    /// Sets the interrupt shadow (0 ends it).
    fn set_interrupt_shadow(&mut self, shadow: u8);
    /// NMIs are blocked (an NMI handler runs until its IRET).
    fn nmi_masked(&self) -> bool;
    /// Blocks or unblocks NMIs.
    fn set_nmi_masked(&mut self, masked: bool);
    /// Whether the next entry must exit as soon as the guest can take a
    /// maskable interrupt (`irq`) or an NMI (`nmi`); called before every
    /// entry. Such an exit is [`Exit::Resume`].
    fn set_windows(&mut self, irq: bool, nmi: bool);
    /// Reads an MSR the VMCB/VMCS holds (segment bases, SYSCALL and
    /// SYSENTER MSRs): `None` if the vendor holds no such MSR.
    fn get_msr(&self, msr: u32) -> Option<u64>;
    /// Writes an MSR the VMCB/VMCS holds (the caller applied KVM's checks):
    /// `false` if the vendor holds no such MSR.
    fn set_msr(&mut self, msr: u32, v: u64) -> bool;
    /// Whether VM entry loads the PAE PDPTEs from the VMCS (VT-x), so that
    /// the generic side must read them from guest memory whenever the
    /// architecture does (a MOV to CR0, CR3 or CR4, `KVM_SET_SREGS`).
    fn loads_pdptes(&self) -> bool {
        false
    }
    /// The PDPTEs to load (see [`ArchVcpu::loads_pdptes`]).
    fn set_pdptes(&mut self, _pdptes: [u64; 4]) {}
}

/// Why the guest stopped, in vendor-neutral terms. Each backend decodes its
/// hardware exit into one of these; `vcpu/run.rs` handles them.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Exit {
    /// Nothing to do (a host interrupt or NMI was taken, or the entry was
    /// called off): enter again.
    Resume,
    /// An IN/OUT/INS/OUTS instruction.
    Io(IoExit),
    /// HLT.
    Hlt { next_rip: Option<u64> },
    /// CPUID, handled in the kernel from the vCPU's CPUID table.
    Cpuid { next_rip: Option<u64> },
    /// RDMSR (`write` false) or WRMSR.
    Msr { write: bool, next_rip: Option<u64> },
    /// RDPMC.
    Rdpmc,
    /// XSETBV.
    Xsetbv { next_rip: Option<u64> },
    /// A triple fault: the VM is reset by userspace or killed.
    Shutdown,
    /// The guest touched a GPA with no (or a too weak) nested mapping.
    Npf { gpa: Gpa, write: bool, fetch: bool },
    /// MOV to or from a debug register (emulated; the registers are
    /// loaded from [`VcpuState::eff_db`] and `eff_dr7`).
    DrAccess,
    /// A #DB in the guest (always intercepted).
    Debug(crate::vcpu::DebugExit),
    /// A #BP in the guest (intercepted only for `KVM_GUESTDBG_USE_SW_BP`);
    /// the address KVM reports.
    Breakpoint { pc: u64 },
    /// An intercepted #UD (VT-x: VMMCALL is emulated, as KVM does).
    InvalidOpcode,
    /// VMMCALL/VMCALL.
    Hypercall { next_rip: Option<u64> },
    /// An instruction KVM treats as a no-op (MONITOR, MWAIT, INVD).
    Nop { next_rip: Option<u64> },
    /// Inject this exception (an instruction the guest may not run).
    Exception { vector: u8, error_code: Option<u32> },
    /// MOV to CR0/CR4/CR8 (and CLTS, LMSW as CR0 writes) on a backend that
    /// intercepts them; `vcpu/run.rs` applies KVM's rules.
    CrWrite {
        cr: u8,
        value: u64,
        next_rip: Option<u64>,
    },
    /// MOV to CR8 without the value (SVM without decode assists): the
    /// generic side decodes the instruction.
    Cr8Write,
    /// MOV from CR8 (the only intercepted read).
    CrRead {
        cr: u8,
        gpr: u8,
        next_rip: Option<u64>,
    },
    /// VM entry failed; the hardware's reason.
    FailEntry(u64),
    /// An exit rkvm does not expect; the hardware's exit code.
    Unexpected(u64),
}

/// An I/O instruction exit, as the hardware reports it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct IoExit {
    pub(crate) port: u16,
    /// Operand size in bytes (1, 2 or 4).
    pub(crate) size: u8,
    pub(crate) input: bool,
    /// INS/OUTS.
    pub(crate) string: bool,
    pub(crate) rep: bool,
    /// Address size in bytes (string forms).
    pub(crate) addr_size: u8,
    /// Source segment of OUTS (INS always writes ES).
    pub(crate) seg: Segment,
    /// RIP after the instruction.
    pub(crate) next_rip: u64,
}

/// The segment register a 3-bit segment-register number names (the
/// encoding both vendors' IO exit information uses: ES, CS, SS, DS, FS,
/// GS).
pub(crate) fn segment_from_number(n: u64) -> Segment {
    match n & 7 {
        0 => Segment::Es,
        1 => Segment::Cs,
        2 => Segment::Ss,
        4 => Segment::Fs,
        5 => Segment::Gs,
        _ => Segment::Ds,
    }
}
