// SPDX-License-Identifier: GPL-2.0

//! An SVM vCPU: its VMCB, the world switch around VMRUN, and the decoding
//! of #VMEXIT into the vendor-neutral [`Exit`].

use super::{shared, Shared};
use crate::{
    addr::Gpa,
    backend::{segment_from_number, ArchVcpu, Dtable, Entry, Exit, IoExit, Sreg, VcpuState},
    cpuid::GuestCaps,
    debug::DR6_ACTIVE_LOW,
    decode::Segment,
    events::{self, Event, AC_VECTOR, BP_VECTOR, DB_VECTOR, SHADOW_MOV_SS, SHADOW_STI},
    msr,
    sys::{
        cpu::{self, HostDrs, NoIrq},
        mem::{PageBox, Pages},
        svm::vmrun,
    },
    uapi::{KvmDtable, KvmSegment},
    vcpu::DebugExit,
    vmcb::{exit, intercept, SegAttr, Vmcb, VmcbSeg},
    x86::{self, CR0_PE, CR0_PG, EFER_LMA, EFER_LME, EFER_SVME, RFLAGS_RF, RFLAGS_TF},
};
use core::sync::atomic::Ordering;
use kernel::{prelude::*, sync::Arc};

/// TLB_CONTROL: flush everything.
const TLB_FLUSH_ALL: u8 = 1;
/// TLB_CONTROL: flush this guest's ASID.
const TLB_FLUSH_ASID: u8 = 3;
/// VMCB int_ctl: V_INTR_MASKING (host IF governs physical interrupts).
const V_INTR_MASKING: u32 = 1 << 24;
/// VMCB int_ctl: the guest's TPR (CR8), which guest MOV to/from CR8 uses
/// under V_INTR_MASKING.
const V_TPR_MASK: u32 = 0xf;
/// VMCB int_ctl: a virtual interrupt is pending (V_IRQ), and its
/// priority field (V_INTR_PRIO).
const V_IRQ: u32 = 1 << 8;
const V_INTR_PRIO_MASK: u32 = 0xf << 16;
/// VMCB int_state: the guest is in an interrupt shadow.
const INT_SHADOW: u32 = 1;
/// VMCB misc_ctl: nested paging enable.
const NP_ENABLE: u64 = 1;

/// The exit for a MOV to CR8.
const WRITE_CR8: u64 = 0x18;
/// Debug-register access exits: reads 0x20-0x2f, writes 0x30-0x3f.
const READ_DR0: u64 = 0x20;
const WRITE_DR15: u64 = 0x3f;

/// An exit code VMRUN never writes: the guest did not run.
const NOT_RUN: u64 = exit::INVALID - 1;
/// Exception vectors.
const UD_VECTOR: u8 = 6;

/// MSRs the guest reads and writes directly: they are in the VMCB and
/// switched by VMLOAD/VMSAVE or VMRUN.
const PASSTHROUGH_MSRS: [u32; 9] = [
    msr::FS_BASE,
    msr::GS_BASE,
    msr::KERNEL_GS_BASE,
    msr::STAR,
    msr::LSTAR,
    msr::CSTAR,
    msr::SFMASK,
    msr::SYSENTER_CS,
    msr::SYSENTER_ESP,
];

/// One SVM vCPU.
pub(crate) struct SvmVcpu {
    vmcb: PageBox<Vmcb>,
    /// The VMCB's physical address.
    vmcb_pa: u64,
    /// I/O permission map: all ones, every port exits.
    _iopm: Pages,
    /// MSR permission map.
    _msrpm: Pages,
    /// The backend's per-CPU state and features.
    shared: Arc<Shared>,
    /// The CPU and ASID generation the ASID in the VMCB belongs to.
    last_cpu: Option<usize>,
    asid_gen: u64,
    /// The physical address of the entry CPU's host save page, and its
    /// `TSC_AUX` (set by `prepare`).
    host_vmcb: u64,
    host_tsc_aux: u64,
    /// NMIs are blocked: SVM does not track it for an injected NMI, so
    /// rkvm does, and intercepts IRET to learn when it ends (as KVM
    /// without vNMI).
    nmi_masked: bool,
    /// IRET was intercepted at this RIP: NMIs unblock once the guest has
    /// moved past it.
    iret_rip: Option<u64>,
    /// The guest is single-stepped to reach an NMI window; its own TF and
    /// RF, to put back after the step.
    nmi_step: Option<u64>,
    /// The guest's DR6. It runs with the VMCB's at `DR6_ACTIVE_LOW`, so
    /// that a #DB's cause reads clean from it, as KVM does.
    dr6: u64,
}

impl SvmVcpu {
    fn flush_type(&self) -> u8 {
        if self.shared.features.flush_by_asid {
            TLB_FLUSH_ASID
        } else {
            TLB_FLUSH_ALL
        }
    }

    /// Gives this vCPU an ASID valid on `cpu`, flushing as the APM requires
    /// when an ASID is (re)used, and notes `cpu`'s host save page and
    /// `TSC_AUX`.
    #[inline]
    fn assign_asid(&mut self, cpu: usize) -> Result {
        let shared = &self.shared;
        let pc = shared.percpu(cpu).ok_or(EIO)?;
        let gen = pc.asid_gen.load(Ordering::Relaxed);
        if self.last_cpu == Some(cpu) && self.asid_gen == gen {
            return Ok(());
        }
        self.host_vmcb = pc.host_vmcb_pa;
        self.host_tsc_aux = pc.tsc_aux.load(Ordering::Relaxed);
        let mut asid = pc.next_asid.load(Ordering::Relaxed);
        let mut gen = gen;
        let c = &mut self.vmcb.control;
        if asid >= shared.features.nr_asids {
            // Out of ASIDs on this CPU: start a new generation and flush all.
            gen += 1;
            pc.asid_gen.store(gen, Ordering::Relaxed);
            asid = 1;
            c.tlb_ctl = TLB_FLUSH_ALL;
        } else if c.tlb_ctl == 0 {
            // A recycled ASID may hold a previous guest's translations.
            c.tlb_ctl = if shared.features.flush_by_asid {
                TLB_FLUSH_ASID
            } else {
                TLB_FLUSH_ALL
            };
        }
        pc.next_asid.store(asid + 1, Ordering::Relaxed);
        c.asid = asid;
        self.last_cpu = Some(cpu);
        self.asid_gen = gen;
        Ok(())
    }

    fn next_rip(&self) -> Option<u64> {
        self.shared
            .features
            .nrips
            .then_some(self.vmcb.control.next_rip)
    }

    fn clear_vintr(&mut self) {
        let c = &mut self.vmcb.control;
        c.clear_intercept(intercept::VINTR);
        c.int_ctl &= !(V_IRQ | V_INTR_PRIO_MASK);
    }

    fn seg(&self, s: Sreg) -> &VmcbSeg {
        let v = &self.vmcb.save;
        match s {
            Sreg::Seg(Segment::Es) => &v.es,
            Sreg::Seg(Segment::Cs) => &v.cs,
            Sreg::Seg(Segment::Ss) => &v.ss,
            Sreg::Seg(Segment::Ds) => &v.ds,
            Sreg::Seg(Segment::Fs) => &v.fs,
            Sreg::Seg(Segment::Gs) => &v.gs,
            Sreg::Ldtr => &v.ldtr,
            Sreg::Tr => &v.tr,
        }
    }

    fn seg_mut(&mut self, s: Sreg) -> &mut VmcbSeg {
        let v = &mut self.vmcb.save;
        match s {
            Sreg::Seg(Segment::Es) => &mut v.es,
            Sreg::Seg(Segment::Cs) => &mut v.cs,
            Sreg::Seg(Segment::Ss) => &mut v.ss,
            Sreg::Seg(Segment::Ds) => &mut v.ds,
            Sreg::Seg(Segment::Fs) => &mut v.fs,
            Sreg::Seg(Segment::Gs) => &mut v.gs,
            Sreg::Ldtr => &mut v.ldtr,
            Sreg::Tr => &mut v.tr,
        }
    }

    #[inline]
    fn decode_exit(&mut self) -> Exit {
        let c = &self.vmcb.control;
        let code = c.exit_code;
        let info1 = c.exit_info_1;
        let info2 = c.exit_info_2;
        let next_rip = self.next_rip();
        match code {
            exit::INTR | exit::NMI | exit::SMI | exit::INIT => Exit::Resume,
            // The interrupt window is open; the generic side injects.
            exit::VINTR => {
                self.clear_vintr();
                Exit::Resume
            }
            // The NMI handler returns: NMIs unblock after this IRET.
            exit::IRET => {
                self.vmcb.control.clear_intercept(intercept::IRET);
                self.iret_rip = Some(self.vmcb.save.rip);
                Exit::Resume
            }
            c if c == exit::EXCP_BASE + u64::from(AC_VECTOR) => Exit::Exception {
                vector: AC_VECTOR,
                error_code: Some(info1 as u32),
            },
            c if c == exit::EXCP_BASE + u64::from(DB_VECTOR) => {
                let own_step = if let Some(flags) = self.nmi_step.take() {
                    // rkvm's single step: put back the guest's TF and RF
                    // (a #DB of the guest's own TF is lost, as in KVM).
                    let keep = flags & (RFLAGS_TF | RFLAGS_RF);
                    let r = self.vmcb.save.rflags;
                    self.vmcb.save.rflags = (r & !(RFLAGS_TF | RFLAGS_RF)) | keep;
                    true
                } else {
                    false
                };
                // The VMCB's DR6 entered clean: what is set now is why.
                let dr6 = self.vmcb.save.dr6;
                Exit::Debug(DebugExit {
                    payload: dr6 ^ DR6_ACTIVE_LOW,
                    dr6,
                    pc: self.vmcb.save.cs.base.wrapping_add(self.vmcb.save.rip),
                    own_step,
                    icebp_next_rip: None,
                })
            }
            c if c == exit::EXCP_BASE + u64::from(BP_VECTOR) => Exit::Breakpoint {
                pc: self.vmcb.save.cs.base.wrapping_add(self.vmcb.save.rip),
            },
            exit::IOIO => Exit::Io(IoExit {
                port: (info1 >> 16) as u16,
                size: ((info1 >> 4) & 7) as u8,
                input: info1 & 1 != 0,
                string: info1 & 4 != 0,
                rep: info1 & 8 != 0,
                addr_size: match (info1 >> 7) & 7 {
                    1 => 2,
                    2 => 4,
                    _ => 8,
                },
                seg: segment_from_number(info1 >> 10),
                next_rip: info2,
            }),
            exit::HLT => Exit::Hlt { next_rip },
            exit::CPUID => Exit::Cpuid { next_rip },
            exit::MSR => Exit::Msr {
                write: info1 == 1,
                next_rip,
            },
            exit::RDPMC => Exit::Rdpmc,
            exit::XSETBV => Exit::Xsetbv { next_rip },
            exit::SHUTDOWN => Exit::Shutdown,
            READ_DR0..=WRITE_DR15 => Exit::DrAccess,
            WRITE_CR8 => Exit::Cr8Write,
            exit::NPF => Exit::Npf {
                gpa: Gpa(info2),
                write: info1 & 2 != 0,
                fetch: info1 & 0x10 != 0,
            },
            exit::VMMCALL => Exit::Hypercall { next_rip },
            exit::MONITOR | exit::MWAIT | exit::INVD => Exit::Nop { next_rip },
            // RDTSCP exits only while the guest's CPUID lacks it.
            exit::VMRUN
            | exit::VMLOAD
            | exit::VMSAVE
            | exit::STGI
            | exit::CLGI
            | exit::SKINIT
            | exit::INVLPGA
            | exit::RDPRU
            | exit::RDTSCP
            | exit::RSM => Exit::Exception {
                vector: UD_VECTOR,
                error_code: None,
            },
            exit::INVALID | NOT_RUN => Exit::FailEntry(code),
            other => Exit::Unexpected(other),
        }
    }
}

impl ArchVcpu for SvmVcpu {
    fn new() -> Result<Self> {
        let mut iopm = Pages::new(2)?;
        iopm.as_bytes_mut().fill(0xff);
        let mut msrpm = Pages::new(1)?;
        msrpm.as_bytes_mut().fill(0xff);
        for m in PASSTHROUGH_MSRS {
            // Two bits per MSR (read, write); three 2 KiB ranges.
            let (base, off) = match m {
                0..=0x1fff => (0, m),
                0xc000_0000..=0xc000_1fff => (0x800, m - 0xc000_0000),
                _ => continue,
            };
            let bit = off as usize * 2;
            let byte = base + bit / 8;
            msrpm.as_bytes_mut()[byte] &= !(3 << (bit % 8));
        }
        let mut vmcb = PageBox::<Vmcb>::new()?;
        let c = &mut vmcb.control;
        for i in [
            intercept::INTR,
            intercept::NMI,
            intercept::SMI,
            intercept::INIT,
            intercept::RDPMC,
            intercept::CPUID,
            intercept::RSM,
            intercept::INVD,
            intercept::HLT,
            intercept::INVLPGA,
            intercept::IOIO_PROT,
            intercept::MSR_PROT,
            intercept::SHUTDOWN,
            intercept::VMRUN,
            intercept::VMMCALL,
            intercept::VMLOAD,
            intercept::VMSAVE,
            intercept::STGI,
            intercept::CLGI,
            intercept::SKINIT,
            intercept::RDTSCP,
            intercept::MONITOR,
            intercept::MWAIT,
            intercept::XSETBV,
            intercept::RDPRU,
        ] {
            c.set_intercept(i);
        }
        // MOV to CR8: lowering the TPR exits to userspace (KVM_EXIT_SET_TPR)
        // while the local APIC is userspace's (intercept word 0, writes in
        // bits 31:16).
        c.intercepts[0] = 1 << (16 + 8);
        // Every debug-register read and write (intercept word 1).
        c.intercepts[1] = u32::MAX;
        // #AC and #DB always exit, as in KVM: a guest that makes their
        // delivery raise them again would otherwise keep the CPU in the
        // microcode forever (CVE-2015-5307, CVE-2015-8104). #DB also ends
        // the single step to an NMI window.
        c.intercepts[2] = (1 << AC_VECTOR) | (1 << DB_VECTOR);
        c.iopm_base_pa = iopm.phys();
        c.msrpm_base_pa = msrpm.phys();
        c.int_ctl = V_INTR_MASKING;
        c.misc_ctl = NP_ENABLE;
        // VMRUN requires EFER.SVME in the guest's EFER; the guest never
        // sees it (`efer`).
        vmcb.save.efer = EFER_SVME;
        // `prepare` loads the DR7 the guest runs with.
        vmcb.save.dr7 = x86::reset::DR7;
        vmcb.save.dr6 = DR6_ACTIVE_LOW;
        let vmcb_pa = vmcb.phys();
        Ok(Self {
            vmcb,
            vmcb_pa,
            _iopm: iopm,
            _msrpm: msrpm,
            shared: shared()?,
            last_cpu: None,
            asid_gen: 0,
            host_vmcb: 0,
            host_tsc_aux: 0,
            nmi_masked: false,
            iret_rip: None,
            nmi_step: None,
            dr6: x86::reset::DR6,
        })
    }

    fn after_set_cpuid(&mut self, caps: &GuestCaps) {
        // As KVM: RDTSCP runs natively only for a guest that has it.
        let c = &mut self.vmcb.control;
        if caps.rdtscp {
            c.clear_intercept(intercept::RDTSCP);
        } else {
            c.set_intercept(intercept::RDTSCP);
        }
    }

    #[inline]
    fn prepare(&mut self, s: &VcpuState, e: &Entry) -> Result {
        self.assign_asid(e.cpu)?;
        if e.flush {
            let flush = self.flush_type();
            let c = &mut self.vmcb.control;
            c.tlb_ctl = c.tlb_ctl.max(flush);
        }
        let c = &mut self.vmcb.control;
        c.nested_cr3 = e.root;
        // Stays if VMRUN never runs (SVM switched off under us).
        c.exit_code = NOT_RUN;
        if s.changed & VcpuState::TSC_OFFSET != 0 {
            c.tsc_offset = s.tsc_offset;
        }
        c.int_ctl = (c.int_ctl & !V_TPR_MASK) | (s.cr8 as u32 & V_TPR_MASK);
        // #BP exits only for userspace's software breakpoints
        // (svm_update_exception_bitmap).
        let bp = 1 << BP_VECTOR;
        if e.intercept_bp {
            c.intercepts[2] |= bp;
        } else {
            c.intercepts[2] &= !bp;
        }
        let v = &mut self.vmcb.save;
        v.dr7 = s.eff_dr7;
        v.dr6 = DR6_ACTIVE_LOW;
        if s.changed & VcpuState::PAT != 0 {
            v.g_pat = s.pat;
        }
        Ok(())
    }

    #[inline]
    fn switch(&mut self, s: &mut VcpuState, irq: &NoIrq<'_>) -> Result {
        let vmcb_pa = self.vmcb_pa;
        self.vmcb.save.rax = s.gprs[0];
        self.vmcb.save.rsp = s.gprs[4];
        // The guest's breakpoint addresses, while its DR7 arms one (VMRUN
        // switches DR7, not DR0-DR3).
        let drs = (s.eff_dr7 & crate::debug::DR7_BP_EN_MASK != 0)
            .then(|| HostDrs::load_guest(&s.eff_db, irq));
        let dr7 = cpu::read_dr7();
        let aux = self.shared.features.rdtscp && s.tsc_aux != self.host_tsc_aux;
        if aux {
            cpu::write_tsc_aux(s.tsc_aux, irq);
        }
        // SAFETY: SVM is on on every online CPU while the module is
        // loaded; the VMCB, permission maps, host page and nested page
        // table are owned pages set up in `new`, `prepare` and by the MMU.
        unsafe { vmrun(vmcb_pa, &mut s.gprs, self.host_vmcb, irq) };
        if aux {
            cpu::write_tsc_aux(self.host_tsc_aux, irq);
        }
        if let Some(d) = drs {
            d.restore(irq);
        } else if dr7 != x86::reset::DR7 as usize {
            cpu::write_dr7(dr7);
        }
        s.gprs[0] = self.vmcb.save.rax;
        s.gprs[4] = self.vmcb.save.rsp;
        Ok(())
    }

    #[inline]
    fn complete(&mut self, s: &mut VcpuState) -> Exit {
        let c = &mut self.vmcb.control;
        if c.exit_code != NOT_RUN {
            c.tlb_ctl = 0;
        }
        s.cr8 = u64::from(c.int_ctl & V_TPR_MASK);
        // Past the intercepted IRET: the NMI handler has returned.
        if self.iret_rip.is_some_and(|r| r != self.vmcb.save.rip) {
            self.iret_rip = None;
            self.nmi_masked = false;
        }
        self.decode_exit()
    }

    fn rip(&self) -> u64 {
        self.vmcb.save.rip
    }

    fn set_rip(&mut self, v: u64) {
        self.vmcb.save.rip = v;
    }

    /// While rkvm single-steps to an NMI window, TF and RF are the
    /// guest's own as saved, not the ones rkvm forced on.
    fn rflags(&self) -> u64 {
        let r = self.vmcb.save.rflags;
        match self.nmi_step {
            Some(own) => (r & !(RFLAGS_TF | RFLAGS_RF)) | (own & (RFLAGS_TF | RFLAGS_RF)),
            None => r,
        }
    }

    fn set_rflags(&mut self, v: u64) {
        let v = v | 2;
        if let Some(own) = self.nmi_step.as_mut() {
            *own = v;
            self.vmcb.save.rflags = v | RFLAGS_TF | RFLAGS_RF;
        } else {
            self.vmcb.save.rflags = v;
        }
    }

    fn cr0(&self) -> u64 {
        self.vmcb.save.cr0
    }

    fn set_cr0(&mut self, v: u64) {
        // svm_set_cr0: long mode follows paging while EFER.LME is set.
        let s = &mut self.vmcb.save;
        if s.efer & EFER_LME != 0 {
            if s.cr0 & CR0_PG == 0 && v & CR0_PG != 0 {
                s.efer |= EFER_LMA;
            }
            if s.cr0 & CR0_PG != 0 && v & CR0_PG == 0 {
                s.efer &= !EFER_LMA;
            }
        }
        s.cr0 = v;
    }

    fn cr2(&self) -> u64 {
        self.vmcb.save.cr2
    }

    fn set_cr2(&mut self, v: u64) {
        self.vmcb.save.cr2 = v;
    }

    fn cr3(&self) -> u64 {
        self.vmcb.save.cr3
    }

    fn set_cr3(&mut self, v: u64) {
        self.vmcb.save.cr3 = v;
    }

    fn cr4(&self) -> u64 {
        self.vmcb.save.cr4
    }

    fn set_cr4(&mut self, v: u64) {
        self.vmcb.save.cr4 = v;
    }

    /// The VMCB's EFER is the live one (the CPU sets LMA when the guest
    /// turns paging on); SVME there is rkvm's, as VMRUN requires it, and is
    /// hidden from the guest.
    fn efer(&self) -> u64 {
        self.vmcb.save.efer & !EFER_SVME
    }

    fn set_efer(&mut self, v: u64) {
        self.vmcb.save.efer = v | EFER_SVME;
    }

    fn cpl(&self) -> u8 {
        self.vmcb.save.cpl
    }

    /// As `svm_get_segment`: a not-present segment is unusable; TR reports
    /// its busy bit and usable data segments their accessed bit (always set
    /// in the descriptor cache); SS reports the CPL as its DPL, and no D/B
    /// when unusable.
    fn segment(&self, s: Sreg) -> KvmSegment {
        let v = self.seg(s);
        let a = SegAttr::unpack(v.attrib);
        let unusable = a.present == 0;
        let mut k = KvmSegment {
            base: v.base,
            limit: v.limit,
            selector: v.selector,
            type_: a.type_,
            present: a.present,
            dpl: a.dpl,
            db: a.db,
            s: a.s,
            l: a.l,
            g: a.g,
            avl: a.avl,
            unusable: u8::from(unusable),
            padding: 0,
        };
        match s {
            Sreg::Tr => k.type_ |= 2,
            Sreg::Seg(Segment::Ds | Segment::Es | Segment::Fs | Segment::Gs) if !unusable => {
                k.type_ |= 1
            }
            Sreg::Seg(Segment::Ss) => {
                if unusable {
                    k.db = 0;
                }
                k.dpl = self.vmcb.save.cpl;
            }
            _ => {}
        }
        k
    }

    fn set_segment(&mut self, s: Sreg, k: &KvmSegment) {
        let a = SegAttr {
            type_: k.type_,
            s: k.s,
            dpl: k.dpl,
            present: if k.unusable != 0 { 0 } else { k.present },
            avl: k.avl,
            l: k.l,
            db: k.db,
            g: k.g,
        };
        *self.seg_mut(s) = VmcbSeg {
            selector: k.selector,
            attrib: a.pack(),
            limit: k.limit,
            base: k.base,
        };
        // SVM takes the CPL from the VMCB, not from CS; KVM keeps it equal
        // to SS.DPL (real mode: 0).
        if s == Sreg::Seg(Segment::Ss) {
            let pe = self.vmcb.save.cr0 & CR0_PE != 0;
            self.vmcb.save.cpl = if pe { k.dpl & 3 } else { 0 };
        }
    }

    fn segment_base(&self, s: Segment) -> u64 {
        self.seg(Sreg::Seg(s)).base
    }

    fn dtable(&self, t: Dtable) -> KvmDtable {
        let v = match t {
            Dtable::Gdt => &self.vmcb.save.gdtr,
            Dtable::Idt => &self.vmcb.save.idtr,
        };
        KvmDtable {
            base: v.base,
            limit: v.limit as u16,
            padding: [0; 3],
        }
    }

    fn set_dtable(&mut self, t: Dtable, d: &KvmDtable) {
        let v = VmcbSeg {
            selector: 0,
            attrib: 0,
            limit: u32::from(d.limit),
            base: d.base,
        };
        match t {
            Dtable::Gdt => self.vmcb.save.gdtr = v,
            Dtable::Idt => self.vmcb.save.idtr = v,
        }
    }

    fn dr6(&self) -> u64 {
        self.dr6
    }

    fn set_dr6(&mut self, v: u64) {
        self.dr6 = v;
    }

    fn set_event(&mut self, e: Option<&Event>) {
        let c = &mut self.vmcb.control;
        c.event_inj = e.map_or(0, Event::info);
        c.event_inj_err = e.and_then(|e| e.error_code).unwrap_or(0);
        if e.is_some_and(|e| e.kind == events::Kind::Nmi) {
            self.set_nmi_masked(true);
        }
    }

    fn interrupted_event(&mut self) -> Option<Event> {
        let c = &self.vmcb.control;
        let e = if c.exit_code == NOT_RUN {
            // VMRUN never ran: what was to be injected still is.
            Event::from_info(c.event_inj, c.event_inj_err)
        } else {
            Event::from_info(c.exit_int_info, c.exit_int_info_err)
        };
        // INTn, INT3 and INTO (an exception of vector 3 or 4 here) run
        // again from RIP, as in KVM without NRIP save.
        let runs_again = |e: &Event| {
            e.kind.is_soft()
                || (e.kind == events::Kind::Exception
                    && matches!(e.vector, events::BP_VECTOR | events::OF_VECTOR))
        };
        e.filter(|e| !runs_again(e))
    }

    fn interrupt_shadow(&self) -> u8 {
        if self.vmcb.control.int_state & INT_SHADOW != 0 {
            SHADOW_STI | SHADOW_MOV_SS
        } else {
            0
        }
    }

    fn set_interrupt_shadow(&mut self, shadow: u8) {
        let c = &mut self.vmcb.control;
        if shadow == 0 {
            c.int_state &= !INT_SHADOW;
        } else {
            c.int_state |= INT_SHADOW;
        }
    }

    fn nmi_masked(&self) -> bool {
        self.nmi_masked
    }

    fn set_nmi_masked(&mut self, masked: bool) {
        self.nmi_masked = masked;
        let c = &mut self.vmcb.control;
        if masked {
            c.set_intercept(intercept::IRET);
        } else {
            c.clear_intercept(intercept::IRET);
        }
    }

    fn set_windows(&mut self, irq: bool, nmi: bool) {
        if irq {
            // A dummy virtual interrupt of the highest priority: VMRUN
            // exits with VINTR as soon as the guest could take it.
            let c = &mut self.vmcb.control;
            c.set_intercept(intercept::VINTR);
            c.int_vector = 0;
            c.int_ctl = (c.int_ctl & !V_INTR_PRIO_MASK) | V_IRQ | V_INTR_PRIO_MASK;
        } else {
            self.clear_vintr();
        }
        // Blocked by an NMI whose IRET has not run: that IRET exits. Else
        // (a shadow, or the IRET is the next instruction) single-step.
        if nmi && (!self.nmi_masked || self.iret_rip.is_some()) && self.nmi_step.is_none() {
            let r = self.vmcb.save.rflags;
            self.nmi_step = Some(r);
            self.vmcb.save.rflags = r | RFLAGS_TF | RFLAGS_RF;
        }
    }

    fn get_msr(&self, m: u32) -> Option<u64> {
        let s = &self.vmcb.save;
        Some(match m {
            msr::FS_BASE => s.fs.base,
            msr::GS_BASE => s.gs.base,
            msr::KERNEL_GS_BASE => s.kernel_gs_base,
            msr::STAR => s.star,
            msr::LSTAR => s.lstar,
            msr::CSTAR => s.cstar,
            msr::SFMASK => s.sfmask,
            msr::SYSENTER_CS => s.sysenter_cs,
            msr::SYSENTER_ESP => s.sysenter_esp,
            msr::SYSENTER_EIP => s.sysenter_eip,
            _ => return None,
        })
    }

    fn set_msr(&mut self, m: u32, v: u64) -> bool {
        let s = &mut self.vmcb.save;
        match m {
            msr::FS_BASE => s.fs.base = v,
            msr::GS_BASE => s.gs.base = v,
            msr::KERNEL_GS_BASE => s.kernel_gs_base = v,
            msr::STAR => s.star = v,
            msr::LSTAR => s.lstar = v,
            msr::CSTAR => s.cstar = v,
            msr::SFMASK => s.sfmask = v,
            msr::SYSENTER_CS => s.sysenter_cs = v & 0xffff,
            // AMD keeps 32 bits of these, and so does KVM for a guest whose
            // CPUID is not Intel's (rkvm keeps no high half for one that is).
            msr::SYSENTER_ESP => s.sysenter_esp = v & 0xffff_ffff,
            msr::SYSENTER_EIP => s.sysenter_eip = v & 0xffff_ffff,
            _ => return false,
        }
        true
    }
}
