// SPDX-License-Identifier: GPL-2.0

//! A VT-x vCPU: its VMCS, the guest state rkvm keeps for it, the world
//! switch, and the decoding of VM exits into the vendor-neutral [`Exit`].
//!
//! The VMCS is current only inside the VM-entry window (`sys::vmx::Root`)
//! and is VMCLEARed at the end of every window, so it is never active on
//! two CPUs and a vCPU thread may move between CPUs freely: each entry
//! VMPTRLDs it on the CPU it runs on (what KVM's `loaded_vmcs` tracking
//! achieves with IPIs). Outside the window the guest state lives in
//! [`GuestState`]; each entry writes it to the VMCS and each exit reads back
//! what the guest can change without exiting.

use super::{config, vmxon_pa, Vpid};
use crate::{
    decode::{Mode, Segment},
    sys::{
        cpu::{self, NoIrq, NoPreempt},
        fpu::GuestFpu,
        mem::Pages,
        vmx::{deliver_nmi, HostState, Root},
    },
    uapi::{KvmDtable, KvmRegs, KvmSegment, KvmSregs},
    virt::{Exit, IoExit},
    vmcs::{
        ept, field as f, ins_outs_info, intr, msr_bitmap_bits, reason, AccessRights, Config,
        CrAccess, Field, IoQual, WNat, W16, W32,
    },
    x86::{CR0_PG, CR4_PAE, EFER_LMA, EFER_LME, EFER_NX, EFER_SCE},
};
use core::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use kernel::prelude::*;

const MSR_TSC: u32 = 0x10;
const MSR_APIC_BASE: u32 = 0x1b;
const MSR_SYSENTER_CS: u32 = 0x174;
const MSR_SYSENTER_ESP: u32 = 0x175;
const MSR_SYSENTER_EIP: u32 = 0x176;
const MSR_MISC_ENABLE: u32 = 0x1a0;
const MSR_PAT: u32 = 0x277;
const MSR_EFER: u32 = 0xc000_0080;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SFMASK: u32 = 0xc000_0084;
const MSR_FS_BASE: u32 = 0xc000_0100;
const MSR_GS_BASE: u32 = 0xc000_0101;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;

/// MSRs VMX does not switch, loaded for the guest by the VM-entry MSR-load
/// list and saved by the VM-exit MSR-store list (the same list), and put
/// back for the host by the VM-exit MSR-load list.
const SWITCHED_MSRS: [u32; 5] = [
    MSR_KERNEL_GS_BASE,
    MSR_STAR,
    MSR_LSTAR,
    MSR_CSTAR,
    MSR_SFMASK,
];

/// MSRs the guest reads and writes without exiting: in the VMCS guest
/// area or in the switched list.
const PASSTHROUGH_MSRS: [u32; 10] = [
    MSR_FS_BASE,
    MSR_GS_BASE,
    MSR_KERNEL_GS_BASE,
    MSR_STAR,
    MSR_LSTAR,
    MSR_CSTAR,
    MSR_SFMASK,
    MSR_SYSENTER_CS,
    MSR_SYSENTER_ESP,
    MSR_SYSENTER_EIP,
];

/// Byte offset of the host list in the MSR-list page.
const HOST_MSR_LIST: usize = 2048;

const UD_VECTOR: u8 = 6;
const GP_VECTOR: u8 = 13;
const NMI_VECTOR: u32 = 2;
/// #UD is intercepted for VMMCALL, which KVM runs as a hypercall on Intel
/// too. #AC is intercepted so that a guest whose #AC delivery itself raises #AC
/// (CVE-2015-5307) exits instead of hanging the CPU in microcode.
const AC_VECTOR: u8 = 17;

/// The hardware never exits with this: VMLAUNCH failed.
const NOT_RUN: u32 = 0xffff;
/// Nor with this: the entry was called off for a pending signal or
/// reschedule.
const CANCELLED: u32 = 0xfffe;

/// One segment register in VMCS form.
#[derive(Clone, Copy, Debug, Default)]
struct Seg {
    selector: u16,
    base: u64,
    limit: u32,
    /// Access rights, VMCS form (bit 16: unusable).
    ar: u32,
}

/// Segment registers in VMCS encoding order: ES CS SS DS FS GS LDTR TR.
const ES: usize = 0;
const CS: usize = 1;
const SS: usize = 2;
const DS: usize = 3;
const FS: usize = 4;
const GS: usize = 5;
const LDTR: usize = 6;
const TR: usize = 7;

/// The VMCS fields of each segment register (selector, base, limit,
/// access rights), in the order above.
type SegFields = (Field<W16>, Field<WNat>, Field<W32>, Field<W32>);
const SEG_FIELDS: [SegFields; 8] = [
    (
        f::GUEST_ES_SELECTOR,
        f::GUEST_ES_BASE,
        f::GUEST_ES_LIMIT,
        f::GUEST_ES_AR,
    ),
    (
        f::GUEST_CS_SELECTOR,
        f::GUEST_CS_BASE,
        f::GUEST_CS_LIMIT,
        f::GUEST_CS_AR,
    ),
    (
        f::GUEST_SS_SELECTOR,
        f::GUEST_SS_BASE,
        f::GUEST_SS_LIMIT,
        f::GUEST_SS_AR,
    ),
    (
        f::GUEST_DS_SELECTOR,
        f::GUEST_DS_BASE,
        f::GUEST_DS_LIMIT,
        f::GUEST_DS_AR,
    ),
    (
        f::GUEST_FS_SELECTOR,
        f::GUEST_FS_BASE,
        f::GUEST_FS_LIMIT,
        f::GUEST_FS_AR,
    ),
    (
        f::GUEST_GS_SELECTOR,
        f::GUEST_GS_BASE,
        f::GUEST_GS_LIMIT,
        f::GUEST_GS_AR,
    ),
    (
        f::GUEST_LDTR_SELECTOR,
        f::GUEST_LDTR_BASE,
        f::GUEST_LDTR_LIMIT,
        f::GUEST_LDTR_AR,
    ),
    (
        f::GUEST_TR_SELECTOR,
        f::GUEST_TR_BASE,
        f::GUEST_TR_LIMIT,
        f::GUEST_TR_AR,
    ),
];

/// The guest state rkvm keeps while the VMCS is not current.
#[derive(Clone, Copy, Debug, Default)]
struct GuestState {
    seg: [Seg; 8],
    gdtr: (u64, u32),
    idtr: (u64, u32),
    rip: u64,
    rsp: u64,
    rflags: u64,
    /// CR0 and CR4 as the guest sees them (the read shadows); the hardware
    /// runs with the VMX fixed bits forced on.
    cr0: u64,
    cr3: u64,
    cr4: u64,
    cr2: u64,
    efer: u64,
    pat: u64,
    sysenter_cs: u64,
    sysenter_esp: u64,
    sysenter_eip: u64,
    interruptibility: u32,
    pending_dbg: u64,
    pdpte: [u64; 4],
}

/// What the last exit said.
#[derive(Clone, Copy, Debug, Default)]
struct ExitInfo {
    reason: u32,
    qualification: u64,
    intr_info: u32,
    intr_error: u32,
    idt_vectoring: u32,
    idt_error: u32,
    insn_len: u32,
    insn_info: u32,
    gpa: u64,
    insn_error: u32,
}

/// One VT-x vCPU.
pub(crate) struct VmxVcpu {
    cfg: Config,
    vmcs: Pages,
    msr_bitmap: Pages,
    /// Guest MSR list at 0 (VM-entry load, VM-exit store), host list at
    /// `HOST_MSR_LIST` (VM-exit load). 16-byte entries.
    msr_lists: Pages,
    gprs: [u64; 16],
    /// Taken out while the guest runs (the world switch borrows the rest).
    fpu: Option<GuestFpu>,
    vpid: Option<Vpid>,
    /// The CPU this vCPU last entered on; another one means a flush.
    last_cpu: Option<usize>,
    /// The VM's TLB generation this vCPU last flushed for.
    tlb_gen: u64,
    /// Guest translations must be flushed before the next entry (rkvm
    /// changed the guest's paging registers behind its back).
    flush: bool,
    g: GuestState,
    /// The event to inject on the next entry (interruption-information
    /// form, error code, instruction length).
    event: (u32, u32, u32),
    exit: ExitInfo,
    tsc_offset: u64,
    apic_base: u64,
    cr8: u64,
    misc_enable: u64,
    /// DR0-DR3, DR6 and DR7 as the guest wrote them: emulated, never
    /// loaded (the hardware DR7 the guest runs with stays 0x400).
    db: [u64; 4],
    dr6: u64,
    dr7: u64,
}

impl VmxVcpu {
    /// Creates a vCPU in KVM's reset state.
    pub(crate) fn new(vcpu_id: u32) -> Result<Self> {
        let cfg = *config().ok_or(ENODEV)?;
        let mut msr_bitmap = Pages::new(0)?;
        msr_bitmap.as_bytes_mut().fill(0xff);
        for msr in PASSTHROUGH_MSRS {
            if let Some((r, w)) = msr_bitmap_bits(msr) {
                let b = msr_bitmap.as_bytes_mut();
                b[r / 8] &= !(1 << (r % 8));
                b[w / 8] &= !(1 << (w % 8));
            }
        }
        let mut msr_lists = Pages::new(0)?;
        for (i, &m) in SWITCHED_MSRS.iter().enumerate() {
            // The host's syscall MSRs are the same on every CPU and never
            // change; KERNEL_GS_BASE is the task's and is read per entry.
            let host = cpu::rdmsr_safe(m)?;
            let e = msr_lists.as_u64s();
            e[i * 2] = u64::from(m);
            e[HOST_MSR_LIST / 8 + i * 2] = u64::from(m);
            e[HOST_MSR_LIST / 8 + i * 2 + 1] = host;
        }
        let mut v = Self {
            cfg,
            vmcs: super::revision_page(cfg.revision)?,
            msr_bitmap,
            msr_lists,
            gprs: [0; 16],
            fpu: Some(GuestFpu::new()?),
            vpid: if cfg.vpid { Vpid::alloc() } else { None },
            last_cpu: None,
            tlb_gen: 0,
            flush: true,
            g: GuestState::default(),
            event: (0, 0, 0),
            exit: ExitInfo::default(),
            tsc_offset: 0,
            apic_base: 0,
            cr8: 0,
            misc_enable: 1, // fast-strings, as KVM's reset value
            db: [0; 4],
            dr6: 0xffff_0ff0,
            dr7: 0x400,
        };
        v.reset(vcpu_id);
        Ok(v)
    }

    /// KVM's power-on state (kvm_vcpu_reset + VMX's vcpu reset).
    fn reset(&mut self, vcpu_id: u32) {
        let seg = |selector: u16, base: u64, ar: u32| Seg {
            selector,
            base,
            limit: 0xffff,
            ar,
        };
        let g = &mut self.g;
        g.seg[CS] = seg(0xf000, 0xffff_0000, 0x9b);
        for i in [ES, SS, DS, FS, GS] {
            g.seg[i] = seg(0, 0, 0x93);
        }
        g.seg[LDTR] = seg(0, 0, 0x82);
        g.seg[TR] = seg(0, 0, 0x8b);
        g.gdtr = (0, 0xffff);
        g.idtr = (0, 0xffff);
        g.cr0 = 0x6000_0010;
        g.rflags = 2;
        g.rip = 0xfff0;
        g.pat = 0x0007_0406_0007_0406;
        self.gprs = [0; 16];
        // RDX holds the CPU signature at reset; KVM uses 0x600 until
        // userspace sets CPUID.
        self.gprs[2] = 0x600;
        self.apic_base = 0xfee0_0000 | (1 << 11) | if vcpu_id == 0 { 1 << 8 } else { 0 };
    }

    /// Runs the guest once and says why it stopped. `root` is the EPT root;
    /// `running` is where the vCPU publishes the CPU it is in guest mode on
    /// (for kicks); `tlb_gen` is the VM's TLB generation.
    pub(crate) fn enter(
        &mut self,
        root: u64,
        running: &AtomicI32,
        tlb_gen: &AtomicU64,
    ) -> Result<Exit> {
        self.exit.reason = NOT_RUN;
        let eptp = ept::pointer(root, 4);
        let np = NoPreempt::new();
        let cpu = np.cpu();
        let vmxon = vmxon_pa(cpu).ok_or(EIO)?;
        // Publish before reading the generation: whoever unmaps bumps the
        // generation first and then kicks every published CPU, so either we
        // see the new generation here or we get kicked out of the guest.
        running.store(cpu as i32, Ordering::SeqCst);
        let gen = tlb_gen.load(Ordering::SeqCst);
        // EPT-derived translations are tagged by EPTP, which all vCPUs of
        // the VM share: flush on a new generation, on a CPU this vCPU has
        // not just run on (it may hold stale ones from an earlier visit),
        // and when rkvm changed the guest's paging state.
        let flush =
            core::mem::take(&mut self.flush) || gen != self.tlb_gen || self.last_cpu != Some(cpu);
        self.tlb_gen = gen;
        self.last_cpu = Some(cpu);
        let vmcs_pa = self.vmcs.phys();
        let mut fpu = self.fpu.take().ok_or(EIO)?;
        let r: Result = fpu.with_loaded(|| {
            let irq = NoIrq::new(&np);
            if cpu::exit_requested(&irq) {
                self.exit.reason = CANCELLED;
                return Ok(());
            }
            let host = HostState::save(&irq);
            // SAFETY: `vmxon` is this CPU's region (interrupts are off, so
            // no other window on this CPU), `vmcs_pa` this vCPU's VMCS,
            // which no other CPU has current (every window VMCLEARs it).
            let root = unsafe { Root::enter(vmxon, vmcs_pa, &irq) }?;
            if flush {
                root.invept(self.cfg.invept_type, eptp)?;
                if let Some(v) = &self.vpid {
                    root.invvpid(self.cfg.invvpid_type, v.get())?;
                }
            }
            self.write_vmcs(&root, &host, eptp);
            root.write_cr2(self.g.cr2);
            // SAFETY: `write_vmcs` filled every field: host state of this
            // CPU and task, exits for interrupts and NMIs, rkvm's EPT
            // (owned tables), MSR bitmap and lists in owned pages.
            let launched = unsafe { root.launch(&mut self.gprs) };
            self.g.cr2 = root.read_cr2();
            match launched {
                Ok(()) => self.read_vmcs(&root),
                Err(_) => {
                    self.exit.reason = NOT_RUN;
                    self.exit.insn_error = root.read(f::VM_INSTRUCTION_ERROR);
                }
            }
            drop(root);
            host.restore(&irq);
            if u32::from(self.exit.reason as u16) == u32::from(reason::EXCEPTION_NMI)
                && self.exit.intr_info & intr::TYPE_MASK == intr::TYPE_NMI
            {
                deliver_nmi(&irq);
            }
            Ok(())
        });
        self.fpu = Some(fpu);
        running.store(-1, Ordering::SeqCst);
        drop(np);
        r?;
        if self.exit.reason == CANCELLED {
            // Not entered: a queued event stays queued, and so does any
            // flush (conservatively: one more than needed at worst).
            self.flush = true;
            return Ok(Exit::Resume);
        }
        // Anything injected was delivered, or the exit interrupted its
        // delivery and IDT-vectoring information reports it again.
        self.event = (0, 0, 0);
        let v = self.exit.idt_vectoring;
        if intr::reinject(v) {
            self.event = (v & !(1 << 12), self.exit.idt_error, self.exit.insn_len);
        }
        Ok(self.decode_exit())
    }

    /// Writes the whole VMCS: controls, host state and guest state.
    fn write_vmcs(&mut self, r: &Root<'_>, h: &HostState, eptp: u64) {
        let c = &self.cfg;
        // Controls.
        // The preemption timer only for entries with IF clear (see
        // `PREEMPTION_TSC_TICKS`).
        let timer = c.preemption_timer != 0 && self.g.rflags & (1 << 9) == 0;
        r.write(
            f::PIN_CONTROLS,
            if timer {
                c.pin
            } else {
                c.pin & !crate::vmcs::pin::PREEMPTION_TIMER
            },
        );
        r.write(f::PROC_CONTROLS, c.proc);
        // Without a VPID of its own (all 65535 taken) the vCPU runs with
        // VPID 0: VPIDs off, so entries and exits flush its translations.
        let proc2 = if self.vpid.is_some() {
            c.proc2
        } else {
            c.proc2 & !crate::vmcs::proc2::ENABLE_VPID
        };
        r.write(f::PROC_CONTROLS2, proc2);
        r.write(f::EXIT_CONTROLS, c.exit);
        let ia32e = if self.g.efer & EFER_LMA != 0 {
            crate::vmcs::entry_ctl::IA32E_MODE
        } else {
            0
        };
        r.write(f::ENTRY_CONTROLS, c.entry | ia32e);
        r.write(f::EXCEPTION_BITMAP, (1 << AC_VECTOR) | (1 << UD_VECTOR));
        r.write(f::CR3_TARGET_COUNT, 0);
        r.write(f::MSR_BITMAP, self.msr_bitmap.phys());
        let lists = self.msr_lists.phys();
        let n = SWITCHED_MSRS.len() as u32;
        r.write(f::ENTRY_MSR_LOAD_ADDR, lists);
        r.write(f::ENTRY_MSR_LOAD_COUNT, n);
        r.write(f::EXIT_MSR_STORE_ADDR, lists);
        r.write(f::EXIT_MSR_STORE_COUNT, n);
        r.write(f::EXIT_MSR_LOAD_ADDR, lists + HOST_MSR_LIST as u64);
        r.write(f::EXIT_MSR_LOAD_COUNT, n);
        // KERNEL_GS_BASE is the host task's (its user GS base).
        self.msr_lists.as_u64s()[HOST_MSR_LIST / 8 + 1] = h.kernel_gs_base;
        r.write(f::EPT_POINTER, eptp);
        if let Some(v) = &self.vpid {
            r.write(f::VPID, v.get());
        }
        r.write(f::TSC_OFFSET, self.tsc_offset);
        if timer {
            r.write(f::PREEMPTION_TIMER_VALUE, c.preemption_timer);
        }
        // Every CR0/CR4 bit is the host's: guest writes that change one
        // exit, reads come from the shadows.
        r.write(f::CR0_GUEST_HOST_MASK, u64::MAX);
        r.write(f::CR4_GUEST_HOST_MASK, u64::MAX);
        r.write(f::CR0_READ_SHADOW, self.g.cr0);
        r.write(f::CR4_READ_SHADOW, self.g.cr4);
        r.write(f::VMCS_LINK_POINTER, u64::MAX);
        let (info, err, len) = self.event;
        r.write(f::ENTRY_INTR_INFO, info);
        r.write(f::ENTRY_EXCEPTION_ERROR_CODE, err);
        r.write(f::ENTRY_INSTRUCTION_LEN, len);

        // Host state.
        r.write(f::HOST_CR0, h.cr0);
        r.write(f::HOST_CR3, h.cr3);
        r.write(f::HOST_CR4, h.cr4);
        r.write(f::HOST_CS_SELECTOR, h.cs & !7);
        r.write(f::HOST_SS_SELECTOR, h.ss & !7);
        // Null data selectors are always valid here; non-null ones that a
        // 64-bit kernel does not use are reloaded after the exit.
        r.write(f::HOST_DS_SELECTOR, 0);
        r.write(f::HOST_ES_SELECTOR, 0);
        r.write(f::HOST_FS_SELECTOR, 0);
        r.write(f::HOST_GS_SELECTOR, 0);
        r.write(f::HOST_TR_SELECTOR, h.tr & !7);
        r.write(f::HOST_FS_BASE, h.fs_base);
        r.write(f::HOST_GS_BASE, h.gs_base);
        r.write(f::HOST_TR_BASE, h.tr_base);
        r.write(f::HOST_GDTR_BASE, h.gdt_base);
        r.write(f::HOST_IDTR_BASE, h.idt_base);
        r.write(f::HOST_SYSENTER_CS, h.sysenter_cs as u32);
        r.write(f::HOST_SYSENTER_ESP, h.sysenter_esp);
        r.write(f::HOST_SYSENTER_EIP, h.sysenter_eip);
        r.write(f::HOST_EFER, h.efer);
        r.write(f::HOST_PAT, h.pat);

        // Guest state.
        let g = &self.g;
        for (s, (sel, base, limit, ar)) in g.seg.iter().zip(SEG_FIELDS) {
            r.write(sel, s.selector);
            r.write(base, s.base);
            r.write(limit, s.limit);
            r.write(ar, s.ar);
        }
        r.write(f::GUEST_GDTR_BASE, g.gdtr.0);
        r.write(f::GUEST_GDTR_LIMIT, g.gdtr.1);
        r.write(f::GUEST_IDTR_BASE, g.idtr.0);
        r.write(f::GUEST_IDTR_LIMIT, g.idtr.1);
        r.write(f::GUEST_CR0, c.guest_cr0(g.cr0));
        r.write(f::GUEST_CR3, g.cr3);
        r.write(f::GUEST_CR4, c.guest_cr4(g.cr4));
        r.write(f::GUEST_DR7, 0x400);
        r.write(f::GUEST_DEBUGCTL, 0);
        r.write(f::GUEST_RSP, g.rsp);
        r.write(f::GUEST_RIP, g.rip);
        r.write(f::GUEST_RFLAGS, g.rflags);
        r.write(f::GUEST_EFER, g.efer);
        r.write(f::GUEST_PAT, g.pat);
        r.write(f::GUEST_SYSENTER_CS, g.sysenter_cs as u32);
        r.write(f::GUEST_SYSENTER_ESP, g.sysenter_esp);
        r.write(f::GUEST_SYSENTER_EIP, g.sysenter_eip);
        r.write(f::GUEST_INTERRUPTIBILITY, g.interruptibility);
        r.write(f::GUEST_ACTIVITY_STATE, 0);
        r.write(f::GUEST_PENDING_DBG_EXCEPTIONS, g.pending_dbg);
        if self.pae_paging() {
            r.write(f::GUEST_PDPTE0, g.pdpte[0]);
            r.write(f::GUEST_PDPTE1, g.pdpte[1]);
            r.write(f::GUEST_PDPTE2, g.pdpte[2]);
            r.write(f::GUEST_PDPTE3, g.pdpte[3]);
        }
    }

    /// Reads back the exit information and the guest state the guest can
    /// change without exiting.
    fn read_vmcs(&mut self, r: &Root<'_>) {
        let x = &mut self.exit;
        x.reason = r.read(f::EXIT_REASON);
        x.qualification = r.read(f::EXIT_QUALIFICATION);
        x.intr_info = r.read(f::EXIT_INTR_INFO);
        x.intr_error = r.read(f::EXIT_INTR_ERROR_CODE);
        x.idt_vectoring = r.read(f::IDT_VECTORING_INFO);
        x.idt_error = r.read(f::IDT_VECTORING_ERROR_CODE);
        x.insn_len = r.read(f::EXIT_INSTRUCTION_LEN);
        x.insn_info = r.read(f::EXIT_INSTRUCTION_INFO);
        x.gpa = r.read(f::GUEST_PHYSICAL_ADDRESS);
        if x.reason & reason::FAILED_ENTRY != 0 {
            // The guest did not run: its state is as rkvm wrote it.
            return;
        }
        let g = &mut self.g;
        for (s, (sel, base, limit, ar)) in g.seg.iter_mut().zip(SEG_FIELDS) {
            s.selector = r.read(sel);
            s.base = r.read(base);
            s.limit = r.read(limit);
            s.ar = r.read(ar);
        }
        g.gdtr = (r.read(f::GUEST_GDTR_BASE), r.read(f::GUEST_GDTR_LIMIT));
        g.idtr = (r.read(f::GUEST_IDTR_BASE), r.read(f::GUEST_IDTR_LIMIT));
        g.cr3 = r.read(f::GUEST_CR3);
        g.rsp = r.read(f::GUEST_RSP);
        g.rip = r.read(f::GUEST_RIP);
        g.rflags = r.read(f::GUEST_RFLAGS);
        g.sysenter_cs = u64::from(r.read(f::GUEST_SYSENTER_CS));
        g.sysenter_esp = r.read(f::GUEST_SYSENTER_ESP);
        g.sysenter_eip = r.read(f::GUEST_SYSENTER_EIP);
        g.interruptibility = r.read(f::GUEST_INTERRUPTIBILITY);
        g.pending_dbg = r.read(f::GUEST_PENDING_DBG_EXCEPTIONS);
        if self.pae_paging() {
            let g = &mut self.g;
            g.pdpte = [
                r.read(f::GUEST_PDPTE0),
                r.read(f::GUEST_PDPTE1),
                r.read(f::GUEST_PDPTE2),
                r.read(f::GUEST_PDPTE3),
            ];
        }
    }

    fn next_rip(&self) -> Option<u64> {
        Some(self.g.rip.wrapping_add(u64::from(self.exit.insn_len)))
    }

    fn ud() -> Exit {
        Exit::Exception {
            vector: UD_VECTOR,
            error_code: None,
        }
    }

    fn decode_exit(&mut self) -> Exit {
        let x = self.exit;
        if x.reason == NOT_RUN {
            // VMLAUNCH failed: report the VM-instruction error, as KVM does.
            return Exit::FailEntry(u64::from(x.insn_error));
        }
        if x.reason & reason::FAILED_ENTRY != 0 {
            return Exit::FailEntry(u64::from(x.reason));
        }
        let q = x.qualification;
        match x.reason as u16 {
            reason::EXCEPTION_NMI => {
                let vector = x.intr_info & 0xff;
                if x.intr_info & intr::TYPE_MASK == intr::TYPE_NMI || vector == NMI_VECTOR {
                    Exit::Resume
                } else if vector == u32::from(UD_VECTOR) {
                    Exit::InvalidOpcode
                } else if vector == u32::from(AC_VECTOR) {
                    Exit::Exception {
                        vector: AC_VECTOR,
                        error_code: Some(x.intr_error),
                    }
                } else {
                    Exit::Unexpected(u64::from(x.reason))
                }
            }
            reason::EXTERNAL_INTERRUPT | reason::INIT | reason::SIPI | reason::PREEMPTION_TIMER => {
                Exit::Resume
            }
            reason::TRIPLE_FAULT => Exit::Shutdown,
            reason::IO => {
                let io = IoQual::decode(q);
                let (addr_size, seg) = if self.cfg.ins_outs_info {
                    ins_outs_info(x.insn_info)
                } else {
                    // Without the instruction information: the default
                    // address size and segment of the current mode.
                    let size = match self.mode() {
                        Mode::Bits64 => 8,
                        Mode::Bits32 => 4,
                        Mode::Bits16 => 2,
                    };
                    (size, 3)
                };
                Exit::Io(IoExit {
                    port: io.port,
                    size: io.size,
                    input: io.input,
                    string: io.string,
                    rep: io.rep,
                    addr_size,
                    seg: match seg {
                        0 => Segment::Es,
                        1 => Segment::Cs,
                        2 => Segment::Ss,
                        4 => Segment::Fs,
                        5 => Segment::Gs,
                        _ => Segment::Ds,
                    },
                    next_rip: self.g.rip.wrapping_add(u64::from(x.insn_len)),
                })
            }
            reason::HLT => Exit::Hlt {
                next_rip: self.next_rip(),
            },
            reason::CPUID => Exit::Cpuid {
                next_rip: self.next_rip(),
            },
            reason::RDMSR | reason::WRMSR => Exit::Msr {
                write: x.reason as u16 == reason::WRMSR,
                next_rip: self.next_rip(),
            },
            reason::CR_ACCESS => {
                let next_rip = self.next_rip();
                match CrAccess::decode(q) {
                    CrAccess::Write { cr, gpr } => Exit::CrWrite {
                        cr,
                        value: self.gpr(gpr),
                        next_rip,
                    },
                    CrAccess::Read { cr, gpr } => Exit::CrRead { cr, gpr, next_rip },
                    CrAccess::Clts => Exit::CrWrite {
                        cr: 0,
                        value: self.g.cr0 & !(1 << 3),
                        next_rip,
                    },
                    // LMSW loads CR0 bits 3:0 but cannot clear PE.
                    CrAccess::Lmsw(src) => Exit::CrWrite {
                        cr: 0,
                        value: (self.g.cr0 & !0xe) | u64::from(src & 0xf),
                        next_rip,
                    },
                }
            }
            reason::DR_ACCESS => Exit::DrAccess,
            reason::EPT_VIOLATION => {
                let (_, write, fetch) = crate::vmcs::ept_violation(q);
                Exit::Npf {
                    gpa: x.gpa,
                    write,
                    fetch,
                }
            }
            reason::VMCALL => Exit::Hypercall {
                next_rip: self.next_rip(),
            },
            reason::MWAIT | reason::MONITOR | reason::INVD => Exit::Nop {
                next_rip: self.next_rip(),
            },
            reason::RDPMC => Exit::Exception {
                vector: GP_VECTOR,
                error_code: Some(0),
            },
            reason::VMCLEAR
            | reason::VMLAUNCH
            | reason::VMPTRLD
            | reason::VMPTRST
            | reason::VMREAD
            | reason::VMRESUME
            | reason::VMWRITE
            | reason::VMXOFF
            | reason::VMXON
            | reason::INVEPT
            | reason::INVVPID
            | reason::VMFUNC
            | reason::GETSEC
            | reason::ENCLS
            | reason::RSM
            | reason::XSETBV => Self::ud(),
            _ => Exit::Unexpected(u64::from(x.reason)),
        }
    }

    /// Queues an exception for the next entry.
    pub(crate) fn inject_exception(&mut self, vector: u8, error_code: Option<u32>) {
        // Real-mode exceptions push no error code, and VM entry refuses
        // one there (KVM drops it the same way).
        let error_code = error_code.filter(|_| self.g.cr0 & 1 != 0);
        self.event = (
            intr::exception(vector, error_code.is_some()),
            error_code.unwrap_or(0),
            0,
        );
    }

    /// Reads debug register `n` (0-3, 6, 7).
    pub(crate) fn dr(&self, n: u8) -> u64 {
        match n {
            0..=3 => self.db[usize::from(n)],
            6 => self.dr6,
            _ => self.dr7,
        }
    }

    /// Writes debug register `n` (0-3, 6, 7); the caller checked the value.
    pub(crate) fn set_dr(&mut self, n: u8, v: u64) {
        match n {
            0..=3 => self.db[usize::from(n)] = v,
            // Reserved bits read as set, as the hardware keeps them.
            6 => self.dr6 = crate::x86::dr6_fixed(v),
            _ => self.dr7 = crate::x86::dr7_fixed(v),
        }
    }

    pub(crate) fn cr8(&self) -> u64 {
        self.cr8
    }

    pub(crate) fn set_cr8(&mut self, v: u64) {
        self.cr8 = v;
    }

    pub(crate) fn apic_base(&self) -> u64 {
        self.apic_base
    }

    fn switched_msr(&mut self, msr: u32) -> Option<&mut u64> {
        let i = SWITCHED_MSRS.iter().position(|&m| m == msr)?;
        Some(&mut self.msr_lists.as_u64s()[i * 2 + 1])
    }

    /// RDMSR of an intercepted MSR (or KVM_GET_MSRS); `Err` means #GP.
    pub(crate) fn get_msr(&mut self, msr: u32) -> Result<u64> {
        let g = &self.g;
        Ok(match msr {
            MSR_EFER => g.efer,
            MSR_PAT => g.pat,
            MSR_APIC_BASE => self.apic_base,
            MSR_SYSENTER_CS => g.sysenter_cs,
            MSR_SYSENTER_ESP => g.sysenter_esp,
            MSR_SYSENTER_EIP => g.sysenter_eip,
            MSR_FS_BASE => g.seg[FS].base,
            MSR_GS_BASE => g.seg[GS].base,
            MSR_TSC => cpu::rdtsc().wrapping_add(self.tsc_offset),
            MSR_MISC_ENABLE => self.misc_enable,
            m => match self.switched_msr(m) {
                Some(v) => *v,
                None => return Err(EINVAL),
            },
        })
    }

    /// WRMSR of an intercepted MSR (or KVM_SET_MSRS); `Err` means #GP.
    pub(crate) fn set_msr(&mut self, msr: u32, v: u64) -> Result {
        let canonical = ((v as i64) << 16 >> 16) as u64 == v;
        match msr {
            MSR_EFER => {
                if v & !(EFER_SCE | EFER_LME | EFER_LMA | EFER_NX) != 0 {
                    return Err(EINVAL);
                }
                // LME cannot change while paging is on; LMA is the CPU's.
                if self.g.cr0 & CR0_PG != 0 && (v ^ self.g.efer) & EFER_LME != 0 {
                    return Err(EINVAL);
                }
                self.g.efer = (v & !EFER_LMA) | (self.g.efer & EFER_LMA);
            }
            MSR_PAT => {
                if !crate::x86::valid_pat(v) {
                    return Err(EINVAL);
                }
                self.g.pat = v;
            }
            MSR_SYSENTER_CS => self.g.sysenter_cs = v & 0xffff,
            MSR_SYSENTER_ESP | MSR_SYSENTER_EIP | MSR_FS_BASE | MSR_GS_BASE if !canonical => {
                return Err(EINVAL)
            }
            MSR_SYSENTER_ESP => self.g.sysenter_esp = v,
            MSR_SYSENTER_EIP => self.g.sysenter_eip = v,
            MSR_FS_BASE => self.g.seg[FS].base = v,
            MSR_GS_BASE => self.g.seg[GS].base = v,
            MSR_TSC => self.tsc_offset = v.wrapping_sub(cpu::rdtsc()),
            MSR_MISC_ENABLE => self.misc_enable = v,
            // The VM-entry MSR load would fail on a non-canonical address.
            MSR_KERNEL_GS_BASE | MSR_LSTAR | MSR_CSTAR if !canonical => return Err(EINVAL),
            m => match self.switched_msr(m) {
                Some(slot) => *slot = v,
                None => return Err(EINVAL),
            },
        }
        Ok(())
    }

    pub(crate) fn gpr(&self, r: u8) -> u64 {
        match r & 15 {
            4 => self.g.rsp,
            n => self.gprs[usize::from(n)],
        }
    }

    pub(crate) fn set_gpr(&mut self, r: u8, v: u64) {
        match r & 15 {
            4 => self.g.rsp = v,
            n => self.gprs[usize::from(n)] = v,
        }
    }

    pub(crate) fn rip(&self) -> u64 {
        self.g.rip
    }

    pub(crate) fn set_rip(&mut self, v: u64) {
        self.g.rip = v;
        // Skipping an instruction ends STI/MOV SS blocking.
        self.g.interruptibility &= !3;
    }

    pub(crate) fn rflags(&self) -> u64 {
        self.g.rflags
    }

    pub(crate) fn set_rflags(&mut self, v: u64) {
        self.g.rflags = v | 2;
    }

    pub(crate) fn cr0(&self) -> u64 {
        self.g.cr0
    }

    pub(crate) fn cr3(&self) -> u64 {
        self.g.cr3
    }

    pub(crate) fn cr4(&self) -> u64 {
        self.g.cr4
    }

    pub(crate) fn efer(&self) -> u64 {
        self.g.efer
    }

    pub(crate) fn set_cr2(&mut self, v: u64) {
        self.g.cr2 = v;
    }

    /// A guest MOV to CR0 that rkvm checked: long mode follows PG and LME,
    /// and the guest's translations go.
    pub(crate) fn set_cr0(&mut self, v: u64) {
        let g = &mut self.g;
        if v & CR0_PG != 0 && g.efer & EFER_LME != 0 {
            g.efer |= EFER_LMA;
        } else if v & CR0_PG == 0 {
            g.efer &= !EFER_LMA;
        }
        g.cr0 = v;
        self.flush = true;
    }

    /// A guest MOV to CR4 that rkvm checked.
    pub(crate) fn set_cr4(&mut self, v: u64) {
        self.g.cr4 = v;
        self.flush = true;
    }

    /// Whether the guest uses PAE paging outside long mode, where VM entry
    /// loads the PDPTEs from the VMCS.
    pub(crate) fn pae_paging(&self) -> bool {
        let g = &self.g;
        g.cr0 & CR0_PG != 0 && g.cr4 & CR4_PAE != 0 && g.efer & EFER_LMA == 0
    }

    /// Sets the PDPTEs (read from guest memory at CR3 by the caller, as a
    /// MOV to CR3, CR0 or CR4 does on hardware).
    pub(crate) fn set_pdptes(&mut self, p: [u64; 4]) {
        self.g.pdpte = p;
    }

    pub(crate) fn cpl(&self) -> u8 {
        AccessRights::unpack(self.g.seg[SS].ar).dpl
    }

    /// The instruction-decoding mode (CS.L/CS.D and EFER.LMA).
    pub(crate) fn mode(&self) -> Mode {
        if self.g.cr0 & 1 == 0 {
            return Mode::Bits16;
        }
        let a = AccessRights::unpack(self.g.seg[CS].ar);
        Mode::from_cs(self.g.efer & EFER_LMA != 0, a.l != 0, a.db != 0)
    }

    pub(crate) fn segment_base(&self, seg: Segment) -> u64 {
        self.g.seg[match seg {
            Segment::Es => ES,
            Segment::Cs => CS,
            Segment::Ss => SS,
            Segment::Ds => DS,
            Segment::Fs => FS,
            Segment::Gs => GS,
        }]
        .base
    }

    pub(crate) fn regs(&self) -> KvmRegs {
        let mut g = self.gprs;
        g[4] = self.g.rsp;
        KvmRegs::from_gprs(&g, self.g.rip, self.g.rflags)
    }

    pub(crate) fn set_regs(&mut self, r: &KvmRegs) {
        self.gprs = r.gprs();
        self.g.rsp = r.rsp;
        self.g.rip = r.rip;
        self.g.rflags = r.rflags | 2;
    }

    pub(crate) fn sregs(&self) -> KvmSregs {
        let g = &self.g;
        // KVM reports an unusable segment as not present, with the rest
        // of its attributes as stored.
        let seg = |s: &Seg| {
            let a = AccessRights::unpack(s.ar);
            KvmSegment {
                base: s.base,
                limit: s.limit,
                selector: s.selector,
                type_: a.type_,
                present: u8::from(!a.unusable),
                dpl: a.dpl,
                db: a.db,
                s: a.s,
                l: a.l,
                g: a.g,
                avl: a.avl,
                unusable: u8::from(a.unusable),
                padding: 0,
            }
        };
        let dt = |d: (u64, u32)| KvmDtable {
            base: d.0,
            limit: d.1 as u16,
            padding: [0; 3],
        };
        KvmSregs {
            cs: seg(&g.seg[CS]),
            ds: seg(&g.seg[DS]),
            es: seg(&g.seg[ES]),
            fs: seg(&g.seg[FS]),
            gs: seg(&g.seg[GS]),
            ss: seg(&g.seg[SS]),
            tr: seg(&g.seg[TR]),
            ldt: seg(&g.seg[LDTR]),
            gdt: dt(g.gdtr),
            idt: dt(g.idtr),
            cr0: g.cr0,
            cr2: g.cr2,
            cr3: g.cr3,
            cr4: g.cr4,
            cr8: self.cr8,
            efer: g.efer,
            apic_base: self.apic_base,
            interrupt_bitmap: [0; 4],
        }
    }

    /// Loads already-validated special registers.
    pub(crate) fn set_sregs(&mut self, r: &KvmSregs) {
        // As KVM: a not-present segment is unusable; with unrestricted
        // guest every usable segment but LDTR gets its accessed bit (older
        // VMMs leave it clear, which VM entry would refuse).
        let seg = |k: &KvmSegment, ldtr: bool| Seg {
            selector: k.selector,
            base: k.base,
            limit: k.limit,
            ar: AccessRights {
                type_: if ldtr { k.type_ } else { k.type_ | 1 },
                s: k.s,
                dpl: k.dpl,
                present: k.present,
                avl: k.avl,
                l: k.l,
                db: k.db,
                g: k.g,
                unusable: k.unusable != 0 || k.present == 0,
            }
            .pack(),
        };
        let g = &mut self.g;
        g.seg[CS] = seg(&r.cs, false);
        g.seg[DS] = seg(&r.ds, false);
        g.seg[ES] = seg(&r.es, false);
        g.seg[FS] = seg(&r.fs, false);
        g.seg[GS] = seg(&r.gs, false);
        g.seg[SS] = seg(&r.ss, false);
        g.seg[TR] = seg(&r.tr, false);
        g.seg[LDTR] = seg(&r.ldt, true);
        g.gdtr = (r.gdt.base, u32::from(r.gdt.limit));
        g.idtr = (r.idt.base, u32::from(r.idt.limit));
        g.cr0 = r.cr0;
        g.cr2 = r.cr2;
        g.cr3 = r.cr3;
        g.cr4 = r.cr4;
        g.efer = r.efer;
        self.cr8 = r.cr8;
        self.apic_base = r.apic_base;
        self.flush = true;
    }
}
