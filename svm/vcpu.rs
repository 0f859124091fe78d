// SPDX-License-Identifier: GPL-2.0

//! An SVM vCPU: its VMCB, the world switch around VMRUN, and the decoding
//! of #VMEXIT into the vendor-neutral [`Exit`].

use super::{nr_asids, percpu, Features, EFER_SVME};
use crate::{
    decode::{Mode, Segment},
    sys::{
        cpu::{self, NoIrq, NoPreempt},
        fpu::GuestFpu,
        mem::{PageBox, Pages, ZeroPage},
        svm::vmrun,
    },
    uapi::{KvmDtable, KvmRegs, KvmSegment, KvmSregs},
    virt::{Exit, IoExit},
    vmcb::{exit, intercept, SegAttr, Vmcb, VmcbSeg},
};
use core::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use kernel::prelude::*;

// SAFETY: `Vmcb` is a repr(C) page of integers; all-zero is valid.
unsafe impl ZeroPage for Vmcb {}

/// TLB_CONTROL: flush everything.
const TLB_FLUSH_ALL: u8 = 1;
/// TLB_CONTROL: flush this guest's ASID.
const TLB_FLUSH_ASID: u8 = 3;
/// VMCB int_ctl: V_INTR_MASKING (host IF governs physical interrupts).
const V_INTR_MASKING: u32 = 1 << 24;
/// VMCB misc_ctl: nested paging enable.
const NP_ENABLE: u64 = 1;
const MSR_TSC: u32 = 0x10;
const MSR_APIC_BASE: u32 = 0x1b;
const MSR_SYSENTER_EIP: u32 = 0x176;
const MSR_MISC_ENABLE: u32 = 0x1a0;
const MSR_PAT: u32 = 0x277;
const MSR_EFER: u32 = super::MSR_EFER;
const EFER_SCE: u64 = 1 << 0;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
const EFER_NX: u64 = 1 << 11;

/// Debug-register access exits: reads 0x20-0x2f, writes 0x30-0x3f.
const READ_DR0: u64 = 0x20;
const WRITE_DR15: u64 = 0x3f;

/// An exit code VMRUN never writes: the guest did not run.
const NOT_RUN: u64 = exit::INVALID - 1;
/// Exception vectors.
const UD_VECTOR: u8 = 6;
/// EVENTINJ: valid, type exception, error code valid.
const EVTINJ_VALID: u32 = 1 << 31;
const EVTINJ_TYPE_EXEPT: u32 = 3 << 8;
const EVTINJ_TYPE_SOFT: u32 = 4 << 8;
const EVTINJ_VALID_ERR: u32 = 1 << 11;

/// MSRs the guest reads and writes directly: they are in the VMCB and
/// switched by VMLOAD/VMSAVE or VMRUN.
const PASSTHROUGH_MSRS: [u32; 9] = [
    0xc000_0100, // FS_BASE
    0xc000_0101, // GS_BASE
    0xc000_0102, // KERNEL_GS_BASE
    0xc000_0081, // STAR
    0xc000_0082, // LSTAR
    0xc000_0083, // CSTAR
    0xc000_0084, // SFMASK
    0x0000_0174, // SYSENTER_CS
    0x0000_0175, // SYSENTER_ESP
];

/// One SVM vCPU.
pub(crate) struct SvmVcpu {
    vmcb: PageBox<Vmcb>,
    /// I/O permission map: all ones, every port exits.
    _iopm: Pages,
    /// MSR permission map.
    _msrpm: Pages,
    /// GPRs by x86 number; RAX and RSP are copied to/from the VMCB.
    gprs: [u64; 16],
    fpu: GuestFpu,
    features: Features,
    /// The CPU and ASID generation the ASID in the VMCB belongs to.
    last_cpu: Option<usize>,
    asid_gen: u64,
    /// The VM's TLB generation this vCPU last flushed for.
    tlb_gen: u64,
    apic_base: u64,
    cr8: u64,
    misc_enable: u64,
    /// The guest's DR0-DR3 (DR6 and DR7 live in the VMCB).
    db: [u64; 4],
}

impl SvmVcpu {
    /// Creates a vCPU in KVM's reset state.
    pub(crate) fn new(vcpu_id: u32) -> Result<Self> {
        let mut iopm = Pages::new(2)?;
        iopm.as_bytes_mut().fill(0xff);
        let mut msrpm = Pages::new(1)?;
        msrpm.as_bytes_mut().fill(0xff);
        for msr in PASSTHROUGH_MSRS {
            // Two bits per MSR (read, write); three 2 KiB ranges.
            let (base, off) = match msr {
                0..=0x1fff => (0, msr),
                0xc000_0000..=0xc000_1fff => (0x800, msr - 0xc000_0000),
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
            intercept::MONITOR,
            intercept::MWAIT,
            intercept::XSETBV,
            intercept::RDPRU,
        ] {
            c.set_intercept(i);
        }
        // Every debug-register read and write (intercept word 1).
        c.intercepts[1] = u32::MAX;
        c.iopm_base_pa = iopm.phys();
        c.msrpm_base_pa = msrpm.phys();
        c.int_ctl = V_INTR_MASKING;
        c.misc_ctl = NP_ENABLE;
        let mut v = Self {
            vmcb,
            _iopm: iopm,
            _msrpm: msrpm,
            gprs: [0; 16],
            fpu: GuestFpu::new()?,
            features: super::SvmHost::features(),
            last_cpu: None,
            asid_gen: 0,
            tlb_gen: 0,
            apic_base: 0,
            cr8: 0,
            misc_enable: 1, // fast-strings, as KVM's reset value
            db: [0; 4],
        };
        v.reset(vcpu_id);
        Ok(v)
    }

    /// KVM's power-on state (kvm_vcpu_reset + SVM's init_vmcb).
    fn reset(&mut self, vcpu_id: u32) {
        let s = &mut self.vmcb.save;
        let seg = |sel: u16, base: u64, attrib: u16| VmcbSeg {
            selector: sel,
            attrib,
            limit: 0xffff,
            base,
        };
        s.cs = seg(0xf000, 0xffff_0000, 0x9b);
        for d in [&mut s.ds, &mut s.es, &mut s.fs, &mut s.gs, &mut s.ss] {
            *d = seg(0, 0, 0x93);
        }
        s.gdtr = seg(0, 0, 0);
        s.idtr = seg(0, 0, 0);
        s.ldtr = seg(0, 0, 0x82);
        s.tr = seg(0, 0, 0x8b);
        s.cr0 = 0x6000_0010;
        s.efer = EFER_SVME;
        s.dr6 = 0xffff_0ff0;
        s.dr7 = 0x400;
        s.rflags = 2;
        s.rip = 0xfff0;
        s.g_pat = 0x0007_0406_0007_0406;
        self.gprs = [0; 16];
        // RDX holds the CPU signature (family/model/stepping) at reset; KVM
        // uses 0x600 until userspace sets CPUID.
        self.gprs[2] = 0x600;
        self.apic_base = 0xfee0_0000 | (1 << 11) | if vcpu_id == 0 { 1 << 8 } else { 0 };
    }

    /// Flushes this guest's TLB on the next entry if the VM's nested page
    /// table lost mappings since the last one.
    fn note_tlb_gen(&mut self, gen: u64) {
        if gen != self.tlb_gen {
            self.tlb_gen = gen;
            self.vmcb.control.tlb_ctl = if self.features.flush_by_asid {
                TLB_FLUSH_ASID
            } else {
                TLB_FLUSH_ALL
            };
        }
    }

    /// Gives this vCPU an ASID valid on `cpu`, flushing as the APM requires
    /// when an ASID is (re)used.
    fn assign_asid(&mut self, cpu: usize) -> Result {
        let pc = percpu(cpu).ok_or(EIO)?;
        let gen = pc.asid_gen.load(Ordering::Relaxed);
        if self.last_cpu == Some(cpu) && self.asid_gen == gen {
            return Ok(());
        }
        let mut asid = pc.next_asid.load(Ordering::Relaxed);
        let mut gen = gen;
        if asid >= nr_asids() {
            // Out of ASIDs on this CPU: start a new generation and flush all.
            gen += 1;
            pc.asid_gen.store(gen, Ordering::Relaxed);
            asid = 1;
            self.vmcb.control.tlb_ctl = TLB_FLUSH_ALL;
        } else if self.vmcb.control.tlb_ctl == 0 {
            // A recycled ASID may hold a previous guest's translations.
            self.vmcb.control.tlb_ctl = if self.features.flush_by_asid {
                TLB_FLUSH_ASID
            } else {
                TLB_FLUSH_ALL
            };
        }
        pc.next_asid.store(asid + 1, Ordering::Relaxed);
        self.vmcb.control.asid = asid;
        self.last_cpu = Some(cpu);
        self.asid_gen = gen;
        Ok(())
    }

    /// Runs the guest once and says why it stopped. `ncr3` is the nested
    /// page table root; `running` is where the vCPU publishes the CPU it is
    /// in guest mode on (for kicks); `tlb_gen` is the VM's TLB generation.
    pub(crate) fn enter(
        &mut self,
        ncr3: u64,
        running: &AtomicI32,
        tlb_gen: &AtomicU64,
    ) -> Result<Exit> {
        self.vmcb.control.nested_cr3 = ncr3;
        // Stays if VMRUN never ran (SVM switched off under us).
        self.vmcb.control.exit_code = NOT_RUN;
        let np = NoPreempt::new();
        let cpu = np.cpu();
        // Publish before reading the generation: whoever unmaps bumps the
        // generation first and then kicks every published CPU, so either we
        // see the new generation here or we get kicked out of the guest.
        running.store(cpu as i32, Ordering::SeqCst);
        self.note_tlb_gen(tlb_gen.load(Ordering::SeqCst));
        if let Err(e) = self.assign_asid(cpu) {
            running.store(-1, Ordering::SeqCst);
            return Err(e);
        }
        let host_vmcb = percpu(cpu).ok_or(EIO)?.host_vmcb.phys();
        let vmcb_pa = self.vmcb.phys();
        let (vmcb, gprs, fpu) = (&mut self.vmcb, &mut self.gprs, &mut self.fpu);
        let entered = fpu.with_loaded(|| {
            let irq = NoIrq::new(&np);
            if cpu::exit_requested(&irq) {
                return false;
            }
            vmcb.save.rax = gprs[0];
            vmcb.save.rsp = gprs[4];
            let dr7 = cpu::read_dr7();
            // SAFETY: SVM is on on every online CPU while the module is
            // loaded; the VMCB, permission maps, host page and nested page
            // table are owned pages set up in `new` and by the MMU.
            unsafe { vmrun(vmcb_pa, gprs, host_vmcb, &irq) };
            if dr7 != 0x400 {
                cpu::write_dr7(dr7);
            }
            gprs[0] = vmcb.save.rax;
            gprs[4] = vmcb.save.rsp;
            true
        });
        running.store(-1, Ordering::SeqCst);
        drop(np);
        if !entered {
            // Called off for a pending signal or reschedule: a queued event
            // stays queued, and the loop deals with the request.
            return Ok(Exit::Resume);
        }
        self.vmcb.control.tlb_ctl = 0;
        // An event whose delivery the exit interrupted (a #PF raised while
        // the IDT was read, say) is reported in EXITINTINFO and must be
        // injected again; anything injected before was delivered.
        let c = &mut self.vmcb.control;
        let eii = c.exit_int_info;
        let ty = eii & (7 << 8);
        let vector = eii & 0xff;
        // INTn, INT3 and INTO are not re-injected: RIP still points at the
        // instruction, so the guest simply executes it again (as KVM does
        // without NRIP save).
        let soft =
            ty == EVTINJ_TYPE_SOFT || (ty == EVTINJ_TYPE_EXEPT && (vector == 3 || vector == 4));
        if eii & EVTINJ_VALID != 0 && !soft {
            c.event_inj = eii;
            c.event_inj_err = c.exit_int_info_err;
        } else {
            c.event_inj = 0;
        }
        Ok(self.decode_exit())
    }

    fn next_rip(&self) -> Option<u64> {
        self.features.nrips.then_some(self.vmcb.control.next_rip)
    }

    fn decode_exit(&mut self) -> Exit {
        let c = &self.vmcb.control;
        let code = c.exit_code;
        let info1 = c.exit_info_1;
        let info2 = c.exit_info_2;
        match code {
            exit::INTR | exit::NMI | exit::SMI | exit::INIT => Exit::Resume,
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
                seg: match (info1 >> 10) & 7 {
                    0 => Segment::Es,
                    1 => Segment::Cs,
                    2 => Segment::Ss,
                    4 => Segment::Fs,
                    5 => Segment::Gs,
                    _ => Segment::Ds,
                },
                next_rip: info2,
            }),
            exit::HLT => Exit::Hlt {
                next_rip: self.next_rip(),
            },
            exit::CPUID => Exit::Cpuid {
                next_rip: self.next_rip(),
            },
            exit::MSR => Exit::Msr {
                write: info1 == 1,
                next_rip: self.next_rip(),
            },
            exit::SHUTDOWN => Exit::Shutdown,
            READ_DR0..=WRITE_DR15 => Exit::DrAccess,
            exit::NPF => Exit::Npf {
                gpa: info2,
                write: info1 & 2 != 0,
                fetch: info1 & 0x10 != 0,
            },
            exit::VMMCALL => Exit::Hypercall {
                next_rip: self.next_rip(),
            },
            exit::MONITOR | exit::MWAIT | exit::INVD => Exit::Nop {
                next_rip: self.next_rip(),
            },
            exit::VMRUN
            | exit::VMLOAD
            | exit::VMSAVE
            | exit::STGI
            | exit::CLGI
            | exit::SKINIT
            | exit::INVLPGA
            | exit::RDPRU
            | exit::XSETBV
            | exit::RSM => Exit::Exception {
                vector: UD_VECTOR,
                error_code: None,
            },
            exit::INVALID | NOT_RUN => Exit::FailEntry(code),
            other => Exit::Unexpected(other),
        }
    }

    /// Queues an exception for the next entry.
    pub(crate) fn inject_exception(&mut self, vector: u8, error_code: Option<u32>) {
        let c = &mut self.vmcb.control;
        c.event_inj = EVTINJ_VALID
            | EVTINJ_TYPE_EXEPT
            | u32::from(vector)
            | if error_code.is_some() {
                EVTINJ_VALID_ERR
            } else {
                0
            };
        c.event_inj_err = error_code.unwrap_or(0);
    }

    /// Reads debug register `n` (0-3, 6, 7).
    pub(crate) fn dr(&self, n: u8) -> u64 {
        match n {
            0..=3 => self.db[usize::from(n)],
            6 => self.vmcb.save.dr6,
            _ => self.vmcb.save.dr7,
        }
    }

    /// Writes debug register `n` (0-3, 6, 7); the caller checked the value.
    pub(crate) fn set_dr(&mut self, n: u8, v: u64) {
        match n {
            0..=3 => self.db[usize::from(n)] = v,
            // Reserved bits read as set, as the hardware keeps them.
            6 => self.vmcb.save.dr6 = crate::x86::dr6_fixed(v),
            _ => self.vmcb.save.dr7 = crate::x86::dr7_fixed(v),
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

    /// RDMSR of an intercepted MSR; `Err` means #GP.
    pub(crate) fn get_msr(&self, msr: u32) -> Result<u64> {
        let s = &self.vmcb.save;
        Ok(match msr {
            MSR_EFER => self.efer(),
            MSR_PAT => s.g_pat,
            MSR_APIC_BASE => self.apic_base,
            MSR_SYSENTER_EIP => s.sysenter_eip,
            MSR_TSC => crate::sys::cpu::rdtsc().wrapping_add(self.vmcb.control.tsc_offset),
            MSR_MISC_ENABLE => self.misc_enable,
            _ => return Err(EINVAL),
        })
    }

    /// WRMSR of an intercepted MSR; `Err` means #GP.
    pub(crate) fn set_msr(&mut self, msr: u32, v: u64) -> Result {
        match msr {
            MSR_EFER => {
                // Only bits a guest may toggle; LMA follows LME and CR0.PG
                // in hardware.
                if v & !(EFER_SCE | EFER_LME | EFER_LMA | EFER_NX) != 0 {
                    return Err(EINVAL);
                }
                self.set_efer(v);
            }
            MSR_PAT => {
                if !crate::x86::valid_pat(v) {
                    return Err(EINVAL);
                }
                self.vmcb.save.g_pat = v;
            }
            MSR_SYSENTER_EIP => self.vmcb.save.sysenter_eip = v,
            MSR_TSC => {
                let now = crate::sys::cpu::rdtsc();
                self.vmcb.control.tsc_offset = v.wrapping_sub(now);
            }
            MSR_MISC_ENABLE => self.misc_enable = v,
            _ => return Err(EINVAL),
        }
        Ok(())
    }

    pub(crate) fn gpr(&self, r: u8) -> u64 {
        self.gprs[usize::from(r & 15)]
    }

    pub(crate) fn set_gpr(&mut self, r: u8, v: u64) {
        self.gprs[usize::from(r & 15)] = v;
    }

    pub(crate) fn rip(&self) -> u64 {
        self.vmcb.save.rip
    }

    pub(crate) fn set_rip(&mut self, v: u64) {
        self.vmcb.save.rip = v;
    }

    pub(crate) fn rflags(&self) -> u64 {
        self.vmcb.save.rflags
    }

    pub(crate) fn set_rflags(&mut self, v: u64) {
        self.vmcb.save.rflags = v | 2;
    }

    pub(crate) fn cr0(&self) -> u64 {
        self.vmcb.save.cr0
    }

    pub(crate) fn cr3(&self) -> u64 {
        self.vmcb.save.cr3
    }

    pub(crate) fn cr4(&self) -> u64 {
        self.vmcb.save.cr4
    }

    /// The guest's EFER. The VMCB's copy is the live one (the CPU sets
    /// LMA when the guest turns paging on); SVME there is rkvm's, as VMRUN
    /// requires it, and is hidden from the guest.
    pub(crate) fn efer(&self) -> u64 {
        self.vmcb.save.efer & !EFER_SVME
    }

    pub(crate) fn set_efer(&mut self, efer: u64) {
        self.vmcb.save.efer = efer | EFER_SVME;
    }

    pub(crate) fn set_cr2(&mut self, v: u64) {
        self.vmcb.save.cr2 = v;
    }

    /// A checked guest CR0 write. SVM does not intercept CR writes, so
    /// only a backend-neutral caller gets here; the hardware does the rest.
    pub(crate) fn set_cr0(&mut self, v: u64) {
        self.vmcb.save.cr0 = v;
    }

    /// A checked guest CR4 write (see `set_cr0`).
    pub(crate) fn set_cr4(&mut self, v: u64) {
        self.vmcb.save.cr4 = v;
    }

    /// Nested paging reads the guest's PDPTEs itself: never cached here.
    pub(crate) fn pae_paging(&self) -> bool {
        false
    }

    /// Nothing to cache (see `pae_paging`).
    pub(crate) fn set_pdptes(&mut self, _p: [u64; 4]) {}

    pub(crate) fn cpl(&self) -> u8 {
        self.vmcb.save.cpl
    }

    /// The instruction-decoding mode (CS.L/CS.D and EFER.LMA).
    pub(crate) fn mode(&self) -> Mode {
        let a = SegAttr::unpack(self.vmcb.save.cs.attrib);
        let pe = self.vmcb.save.cr0 & 1 != 0;
        if !pe {
            return Mode::Bits16;
        }
        Mode::from_cs(self.efer() & EFER_LMA != 0, a.l != 0, a.db != 0)
    }

    pub(crate) fn segment_base(&self, seg: Segment) -> u64 {
        let s = &self.vmcb.save;
        match seg {
            Segment::Es => s.es.base,
            Segment::Cs => s.cs.base,
            Segment::Ss => s.ss.base,
            Segment::Ds => s.ds.base,
            Segment::Fs => s.fs.base,
            Segment::Gs => s.gs.base,
        }
    }

    pub(crate) fn regs(&self) -> KvmRegs {
        KvmRegs::from_gprs(&self.gprs, self.vmcb.save.rip, self.vmcb.save.rflags)
    }

    pub(crate) fn set_regs(&mut self, r: &KvmRegs) {
        self.gprs = r.gprs();
        self.vmcb.save.rip = r.rip;
        self.vmcb.save.rflags = r.rflags | 2;
    }

    pub(crate) fn sregs(&self) -> KvmSregs {
        let s = &self.vmcb.save;
        let seg = |v: &VmcbSeg| {
            let a = SegAttr::unpack(v.attrib);
            KvmSegment {
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
                unusable: u8::from(a.present == 0),
                padding: 0,
            }
        };
        let dt = |v: &VmcbSeg| KvmDtable {
            base: v.base,
            limit: v.limit as u16,
            padding: [0; 3],
        };
        KvmSregs {
            cs: seg(&s.cs),
            ds: seg(&s.ds),
            es: seg(&s.es),
            fs: seg(&s.fs),
            gs: seg(&s.gs),
            ss: seg(&s.ss),
            tr: seg(&s.tr),
            ldt: seg(&s.ldtr),
            gdt: dt(&s.gdtr),
            idt: dt(&s.idtr),
            cr0: s.cr0,
            cr2: s.cr2,
            cr3: s.cr3,
            cr4: s.cr4,
            cr8: self.cr8,
            efer: self.efer(),
            apic_base: self.apic_base,
            interrupt_bitmap: [0; 4],
        }
    }

    /// Loads already-validated special registers.
    pub(crate) fn set_sregs(&mut self, r: &KvmSregs) {
        let seg = |k: &KvmSegment| {
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
            VmcbSeg {
                selector: k.selector,
                attrib: a.pack(),
                limit: k.limit,
                base: k.base,
            }
        };
        let dt = |d: &KvmDtable| VmcbSeg {
            selector: 0,
            attrib: 0,
            limit: u32::from(d.limit),
            base: d.base,
        };
        let s = &mut self.vmcb.save;
        s.cs = seg(&r.cs);
        s.ds = seg(&r.ds);
        s.es = seg(&r.es);
        s.fs = seg(&r.fs);
        s.gs = seg(&r.gs);
        s.ss = seg(&r.ss);
        s.tr = seg(&r.tr);
        s.ldtr = seg(&r.ldt);
        s.gdtr = dt(&r.gdt);
        s.idtr = dt(&r.idt);
        s.cr0 = r.cr0;
        s.cr2 = r.cr2;
        s.cr3 = r.cr3;
        s.cr4 = r.cr4;
        // SVM takes CPL from the VMCB, not from CS; KVM derives it from
        // SS.DPL (real mode: 0).
        s.cpl = if r.cr0 & 1 == 0 { 0 } else { r.ss.dpl & 3 };
        self.cr8 = r.cr8;
        self.apic_base = r.apic_base;
        self.set_efer(r.efer);
    }
}
