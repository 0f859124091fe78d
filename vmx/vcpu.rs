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

use super::{shared, Shared, Vpid};
use crate::{
    addr::Gpa,
    backend::{segment_from_number, ArchVcpu, Dtable, Entry, Exit, IoExit, Sreg, VcpuState},
    cpuid::{feature, GuestCaps},
    debug::{self, DR6_ACTIVE_LOW, DR6_BS},
    decode::{Mode, Segment},
    events::{Event, Kind, SHADOW_MOV_SS, SHADOW_STI},
    msr,
    sys::{
        cpu::{self, HostDrs, NoIrq},
        mem::Pages,
        vmx::{deliver_nmi, HostState, Root},
    },
    uapi::{KvmDtable, KvmSegment},
    vcpu::DebugExit,
    vmcs::{
        ept, field as f, ins_outs_info, intr, msr_bitmap_bits, proc, proc2, reason, AccessRights,
        Config, CrAccess, Field, IoQual, WNat, W16, W32,
    },
    x86::{self, CR0_PE, CR0_PG, CR0_TS, EFER_LMA, EFER_LME, RFLAGS_IF, RFLAGS_TF},
};
use kernel::{prelude::*, sync::Arc};

/// MSRs VMX does not switch, loaded for the guest by the VM-entry MSR-load
/// list and saved by the VM-exit MSR-store list (the same list), and put
/// back for the host by the VM-exit MSR-load list. `TSC_AUX` (last) only
/// where the CPU has it.
const SWITCHED_MSRS: [u32; 6] = [
    msr::KERNEL_GS_BASE,
    msr::STAR,
    msr::LSTAR,
    msr::CSTAR,
    msr::SFMASK,
    msr::TSC_AUX,
];
/// Where KERNEL_GS_BASE and TSC_AUX are in [`SWITCHED_MSRS`].
const KERNEL_GS_BASE_SLOT: usize = 0;
const TSC_AUX_SLOT: usize = 5;

/// MSRs the guest reads and writes without exiting: in the VMCS guest
/// area or in the switched list.
const PASSTHROUGH_MSRS: [u32; 10] = [
    msr::FS_BASE,
    msr::GS_BASE,
    msr::KERNEL_GS_BASE,
    msr::STAR,
    msr::LSTAR,
    msr::CSTAR,
    msr::SFMASK,
    msr::SYSENTER_CS,
    msr::SYSENTER_ESP,
    msr::SYSENTER_EIP,
];

/// Byte offset of the host list in the MSR-list page.
const HOST_MSR_LIST: usize = 2048;

const UD_VECTOR: u8 = 6;
const NMI_VECTOR: u32 = 2;
/// #UD is intercepted for VMMCALL, which KVM runs as a hypercall on Intel
/// too. #AC is intercepted so that a guest whose #AC delivery itself raises #AC
/// (CVE-2015-5307) exits instead of hanging the CPU in microcode.
const AC_VECTOR: u8 = 17;
/// #DB always exits, as in KVM: its cause comes in the exit qualification
/// (the guest's DR6 is emulated), and a guest whose #DB delivery raises
/// #DB again would hang the CPU (CVE-2015-8104). #BP exits for
/// userspace's software breakpoints.
const DB_VECTOR: u8 = 1;
const BP_VECTOR: u8 = 3;

/// The hardware never exits with this: VMLAUNCH failed.
const NOT_RUN: u32 = 0xffff;

/// Guest interruptibility state: blocking by STI, by MOV SS, by NMI.
const BLOCK_STI: u32 = 1 << 0;
const BLOCK_MOV_SS: u32 = 1 << 1;
const BLOCK_NMI: u32 = 1 << 3;

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
    /// RSP lives in the VMCS: copied from and to the generic GPRs around
    /// each entry.
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
    /// The backend's configuration and VMXON regions.
    shared: Arc<Shared>,
    cfg: Config,
    /// The secondary controls for this guest (RDTSCP only if its CPUID has
    /// it, as KVM).
    proc2: u32,
    vmcs: Pages,
    msr_bitmap: Pages,
    /// Guest MSR list at 0 (VM-entry load, VM-exit store), host list at
    /// `HOST_MSR_LIST` (VM-exit load). 16-byte entries.
    msr_lists: Pages,
    /// How many of [`SWITCHED_MSRS`] the lists hold.
    nswitched: usize,
    vpid: Option<Vpid>,
    /// The CPU this vCPU last entered on; another one means a flush.
    last_cpu: Option<usize>,
    /// Guest translations must be flushed before the next entry (the VM's
    /// table lost mappings, another CPU, or rkvm changed the guest's paging
    /// registers behind its back).
    flush: bool,
    g: GuestState,
    /// The event to inject on the next entry (interruption-information
    /// form, error code, instruction length).
    event: (u32, u32, u32),
    /// Interrupt- and NMI-window exiting, for the next entry.
    windows: u32,
    exit: ExitInfo,
    /// Set by `prepare` for the entry: the TSC offset, this CPU's VMXON
    /// region and its host `TSC_AUX`, and the second-level table root.
    tsc_offset: u64,
    vmxon: u64,
    host_tsc_aux: u64,
    eptp: u64,
    /// DR6 as the guest wrote it (VT-x does not switch DR6; it is emulated).
    dr6: u64,
    /// The DR7 the guest runs with, and whether #BP exits (set by
    /// `prepare`).
    dr7: u64,
    intercept_bp: bool,
}

impl VmxVcpu {
    /// Writes the whole VMCS: controls, host state and guest state.
    fn write_vmcs(&mut self, r: &Root<'_>, h: &HostState, eptp: u64) {
        let c = &self.cfg;
        // Controls.
        // The preemption timer only for entries with IF clear (see
        // `PREEMPTION_TSC_TICKS`).
        let timer = c.preemption_timer != 0 && self.g.rflags & RFLAGS_IF == 0;
        r.write(
            f::PIN_CONTROLS,
            if timer {
                c.pin
            } else {
                c.pin & !crate::vmcs::pin::PREEMPTION_TIMER
            },
        );
        r.write(f::PROC_CONTROLS, c.proc | self.windows);
        // Without a VPID of its own (all 65535 taken) the vCPU runs with
        // VPID 0: VPIDs off, so entries and exits flush its translations.
        let proc2 = if self.vpid.is_some() {
            self.proc2
        } else {
            self.proc2 & !crate::vmcs::proc2::ENABLE_VPID
        };
        r.write(f::PROC_CONTROLS2, proc2);
        r.write(f::EXIT_CONTROLS, c.exit);
        let ia32e = if self.g.efer & EFER_LMA != 0 {
            crate::vmcs::entry_ctl::IA32E_MODE
        } else {
            0
        };
        r.write(f::ENTRY_CONTROLS, c.entry | ia32e);
        let bp = if self.intercept_bp { 1 << BP_VECTOR } else { 0 };
        r.write(
            f::EXCEPTION_BITMAP,
            (1 << AC_VECTOR) | (1 << UD_VECTOR) | (1 << DB_VECTOR) | bp,
        );
        r.write(f::CR3_TARGET_COUNT, 0);
        r.write(f::MSR_BITMAP, self.msr_bitmap.phys());
        let lists = self.msr_lists.phys();
        let n = self.nswitched as u32;
        r.write(f::ENTRY_MSR_LOAD_ADDR, lists);
        r.write(f::ENTRY_MSR_LOAD_COUNT, n);
        r.write(f::EXIT_MSR_STORE_ADDR, lists);
        r.write(f::EXIT_MSR_STORE_COUNT, n);
        r.write(f::EXIT_MSR_LOAD_ADDR, lists + HOST_MSR_LIST as u64);
        r.write(f::EXIT_MSR_LOAD_COUNT, n);
        // KERNEL_GS_BASE is the host task's (its user GS base).
        let l = self.msr_lists.as_u64s();
        l[HOST_MSR_LIST / 8 + KERNEL_GS_BASE_SLOT * 2 + 1] = h.kernel_gs_base;
        // TSC_AUX is this CPU's.
        if self.nswitched > TSC_AUX_SLOT {
            l[HOST_MSR_LIST / 8 + TSC_AUX_SLOT * 2 + 1] = self.host_tsc_aux;
        }
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
        r.write(f::GUEST_DR7, self.dr7);
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
        if x86::pae_paging(self.g.cr0, self.g.cr4, self.g.efer) {
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
        if x86::pae_paging(self.g.cr0, self.g.cr4, self.g.efer) {
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

    fn decode_exit(&mut self, s: &VcpuState) -> Exit {
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
                } else if vector == u32::from(DB_VECTOR) {
                    self.debug_exit()
                } else if vector == u32::from(BP_VECTOR) {
                    Exit::Breakpoint {
                        pc: self.linear_rip(),
                    }
                } else if vector == u32::from(AC_VECTOR) {
                    Exit::Exception {
                        vector: AC_VECTOR,
                        error_code: Some(x.intr_error),
                    }
                } else {
                    Exit::Unexpected(u64::from(x.reason))
                }
            }
            // The window exits are asked for again at each entry that
            // still needs them.
            reason::EXTERNAL_INTERRUPT
            | reason::INIT
            | reason::SIPI
            | reason::PREEMPTION_TIMER
            | reason::INTERRUPT_WINDOW
            | reason::NMI_WINDOW => Exit::Resume,
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
                    seg: segment_from_number(u64::from(seg)),
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
                        value: s.gprs[usize::from(gpr & 15)],
                        next_rip,
                    },
                    CrAccess::Read { cr, gpr } => Exit::CrRead { cr, gpr, next_rip },
                    CrAccess::Clts => Exit::CrWrite {
                        cr: 0,
                        value: self.g.cr0 & !CR0_TS,
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
                    gpa: Gpa(x.gpa),
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
            reason::RDPMC => Exit::Rdpmc,
            reason::XSETBV => Exit::Xsetbv {
                next_rip: self.next_rip(),
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
            | reason::RSM => Self::ud(),
            _ => Exit::Unexpected(u64::from(x.reason)),
        }
    }

    /// A #DB exit (`handle_exception_nmi`): the cause is the exit
    /// qualification. For the guest's own TF under an STI or MOV SS
    /// shadow the CPU did not record the pending single step, which VM
    /// entry then requires: it is set, as KVM does.
    fn debug_exit(&mut self) -> Exit {
        let x = self.exit;
        let icebp = x.intr_info & intr::TYPE_MASK == intr::TYPE_PRIV_SOFT;
        if !icebp
            && self.g.rflags & RFLAGS_TF != 0
            && self.g.interruptibility & (BLOCK_STI | BLOCK_MOV_SS) != 0
        {
            self.g.pending_dbg |= DR6_BS;
        }
        Exit::Debug(DebugExit {
            payload: x.qualification,
            dr6: x.qualification | DR6_ACTIVE_LOW,
            pc: self.linear_rip(),
            own_step: false,
            icebp_next_rip: icebp.then(|| self.g.rip.wrapping_add(u64::from(x.insn_len))),
        })
    }

    /// `kvm_get_linear_rip`.
    fn linear_rip(&self) -> u64 {
        debug::linear_rip(self.mode() == Mode::Bits64, self.g.seg[CS].base, self.g.rip)
    }

    /// The instruction-decoding mode, for the address size of string IO
    /// without the instruction information.
    fn mode(&self) -> Mode {
        if self.g.cr0 & CR0_PE == 0 {
            return Mode::Bits16;
        }
        let a = AccessRights::unpack(self.g.seg[CS].ar);
        Mode::from_cs(self.g.efer & EFER_LMA != 0, a.l != 0, a.db != 0)
    }

    fn switched_msr(&mut self, m: u32) -> Option<&mut u64> {
        let i = SWITCHED_MSRS[..self.nswitched]
            .iter()
            .position(|&x| x == m)?;
        Some(&mut self.msr_lists.as_u64s()[i * 2 + 1])
    }

    fn seg_index(s: Sreg) -> usize {
        match s {
            Sreg::Seg(Segment::Es) => ES,
            Sreg::Seg(Segment::Cs) => CS,
            Sreg::Seg(Segment::Ss) => SS,
            Sreg::Seg(Segment::Ds) => DS,
            Sreg::Seg(Segment::Fs) => FS,
            Sreg::Seg(Segment::Gs) => GS,
            Sreg::Ldtr => LDTR,
            Sreg::Tr => TR,
        }
    }
}

impl ArchVcpu for VmxVcpu {
    fn new() -> Result<Self> {
        let shared = shared()?;
        let cfg = shared.config;
        let mut msr_bitmap = Pages::new(0)?;
        msr_bitmap.as_bytes_mut().fill(0xff);
        for m in PASSTHROUGH_MSRS {
            if let Some((r, w)) = msr_bitmap_bits(m) {
                let b = msr_bitmap.as_bytes_mut();
                b[r / 8] &= !(1 << (r % 8));
                b[w / 8] &= !(1 << (w % 8));
            }
        }
        let rdtscp = cpu::cpuid(0x8000_0001, 0).edx & feature::RDTSCP.mask != 0;
        let nswitched = if rdtscp {
            SWITCHED_MSRS.len()
        } else {
            TSC_AUX_SLOT
        };
        let mut msr_lists = Pages::new(0)?;
        for (i, &m) in SWITCHED_MSRS[..nswitched].iter().enumerate() {
            // The host's syscall MSRs are the same on every CPU and never
            // change; KERNEL_GS_BASE (the task's) and TSC_AUX (the CPU's)
            // are filled in per entry.
            let host = cpu::rdmsr_safe(m)?;
            let e = msr_lists.as_u64s();
            e[i * 2] = u64::from(m);
            e[HOST_MSR_LIST / 8 + i * 2] = u64::from(m);
            e[HOST_MSR_LIST / 8 + i * 2 + 1] = host;
        }
        Ok(Self {
            shared,
            cfg,
            proc2: cfg.proc2 & !proc2::ENABLE_RDTSCP,
            vmcs: super::revision_page(cfg.revision)?,
            msr_bitmap,
            msr_lists,
            nswitched,
            vpid: if cfg.vpid { Vpid::alloc() } else { None },
            last_cpu: None,
            flush: true,
            g: GuestState::default(),
            event: (0, 0, 0),
            windows: 0,
            exit: ExitInfo::default(),
            tsc_offset: 0,
            vmxon: 0,
            host_tsc_aux: 0,
            eptp: 0,
            dr6: x86::reset::DR6,
            dr7: x86::reset::DR7,
            intercept_bp: false,
        })
    }

    fn after_set_cpuid(&mut self, caps: &GuestCaps) {
        // As KVM: RDTSCP (and RDPID) are enabled only for a guest whose
        // CPUID has RDTSCP; without it they are #UD.
        self.proc2 = if caps.rdtscp {
            self.cfg.proc2
        } else {
            self.cfg.proc2 & !proc2::ENABLE_RDTSCP
        };
    }

    fn prepare(&mut self, s: &VcpuState, e: &Entry) -> Result {
        self.vmxon = self.shared.vmxon_pa(e.cpu).ok_or(EIO)?;
        // EPT-derived translations are tagged by EPTP, which all vCPUs of
        // the VM share: flush on a new generation, on a CPU this vCPU has
        // not just run on (it may hold stale ones from an earlier visit),
        // and when rkvm changed the guest's paging state.
        self.flush |= e.flush || self.last_cpu != Some(e.cpu);
        self.last_cpu = Some(e.cpu);
        self.eptp = ept::pointer(e.root, 4);
        self.tsc_offset = s.tsc_offset;
        self.g.pat = s.pat;
        if self.nswitched > TSC_AUX_SLOT {
            self.host_tsc_aux = cpu::rdmsr_safe(msr::TSC_AUX).unwrap_or(0);
            if s.changed & VcpuState::TSC_AUX != 0 {
                self.msr_lists.as_u64s()[TSC_AUX_SLOT * 2 + 1] = s.tsc_aux;
            }
        }
        self.exit.reason = NOT_RUN;
        self.dr7 = s.eff_dr7;
        self.intercept_bp = e.intercept_bp;
        // VM entry refuses TF with an STI or MOV SS shadow unless a single
        // step is pending: userspace's step drops the shadow, as KVM's
        // vmx_vcpu_run does.
        if e.single_step {
            self.set_interrupt_shadow(0);
        }
        Ok(())
    }

    fn switch(&mut self, s: &mut VcpuState, irq: &NoIrq<'_>) -> Result {
        self.g.rsp = s.gprs[4];
        let host = HostState::save(irq);
        // The guest's breakpoint addresses, while its DR7 arms one (VM
        // entry loads DR7, not DR0-DR3).
        let drs =
            (s.eff_dr7 & debug::DR7_BP_EN_MASK != 0).then(|| HostDrs::load_guest(&s.eff_db, irq));
        // SAFETY: `vmxon` is this CPU's region (interrupts are off, so no
        // other window on this CPU), the VMCS this vCPU's, which no other
        // CPU has current (every window VMCLEARs it).
        let root = unsafe { Root::enter(self.vmxon, self.vmcs.phys(), irq) }?;
        if self.flush {
            root.invept(self.cfg.invept_type, self.eptp)?;
            if let Some(v) = &self.vpid {
                root.invvpid(self.cfg.invvpid_type, v.get())?;
            }
            self.flush = false;
        }
        self.write_vmcs(&root, &host, self.eptp);
        root.write_cr2(self.g.cr2);
        // SAFETY: `write_vmcs` filled every field: host state of this CPU
        // and task, exits for interrupts and NMIs, rkvm's EPT (owned
        // tables), MSR bitmap and lists in owned pages.
        let launched = unsafe { root.launch(&mut s.gprs) };
        self.g.cr2 = root.read_cr2();
        match launched {
            Ok(()) => self.read_vmcs(&root),
            Err(_) => {
                self.exit.reason = NOT_RUN;
                self.exit.insn_error = root.read(f::VM_INSTRUCTION_ERROR);
            }
        }
        drop(root);
        if let Some(d) = drs {
            d.restore(irq);
        }
        host.restore(irq);
        if u32::from(self.exit.reason as u16) == u32::from(reason::EXCEPTION_NMI)
            && self.exit.intr_info & intr::TYPE_MASK == intr::TYPE_NMI
        {
            deliver_nmi(irq);
        }
        s.gprs[4] = self.g.rsp;
        Ok(())
    }

    fn complete(&mut self, s: &mut VcpuState) -> Exit {
        self.decode_exit(s)
    }

    fn rip(&self) -> u64 {
        self.g.rip
    }

    fn set_rip(&mut self, v: u64) {
        self.g.rip = v;
    }

    fn rflags(&self) -> u64 {
        self.g.rflags
    }

    fn set_rflags(&mut self, v: u64) {
        self.g.rflags = v | 2;
    }

    fn cr0(&self) -> u64 {
        self.g.cr0
    }

    /// Long mode follows PG and LME, and the guest's translations go.
    fn set_cr0(&mut self, v: u64) {
        let g = &mut self.g;
        if v & CR0_PG != 0 && g.efer & EFER_LME != 0 {
            g.efer |= EFER_LMA;
        } else if v & CR0_PG == 0 {
            g.efer &= !EFER_LMA;
        }
        g.cr0 = v;
        self.flush = true;
    }

    fn cr2(&self) -> u64 {
        self.g.cr2
    }

    fn set_cr2(&mut self, v: u64) {
        self.g.cr2 = v;
    }

    fn cr3(&self) -> u64 {
        self.g.cr3
    }

    fn set_cr3(&mut self, v: u64) {
        self.g.cr3 = v;
        self.flush = true;
    }

    fn cr4(&self) -> u64 {
        self.g.cr4
    }

    fn set_cr4(&mut self, v: u64) {
        self.g.cr4 = v;
        self.flush = true;
    }

    fn efer(&self) -> u64 {
        self.g.efer
    }

    fn set_efer(&mut self, v: u64) {
        self.g.efer = v;
        self.flush = true;
    }

    fn cpl(&self) -> u8 {
        AccessRights::unpack(self.g.seg[SS].ar).dpl
    }

    /// KVM reports an unusable segment as not present, with the rest of
    /// its attributes as stored.
    fn segment(&self, s: Sreg) -> KvmSegment {
        let v = &self.g.seg[Self::seg_index(s)];
        let a = AccessRights::unpack(v.ar);
        KvmSegment {
            base: v.base,
            limit: v.limit,
            selector: v.selector,
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
    }

    /// As KVM: a not-present segment is unusable; with unrestricted guest
    /// every usable segment but LDTR gets its accessed bit (older VMMs
    /// leave it clear, which VM entry would refuse).
    fn set_segment(&mut self, s: Sreg, k: &KvmSegment) {
        let ldtr = s == Sreg::Ldtr;
        self.g.seg[Self::seg_index(s)] = Seg {
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
    }

    fn segment_base(&self, s: Segment) -> u64 {
        self.g.seg[Self::seg_index(Sreg::Seg(s))].base
    }

    fn dtable(&self, t: Dtable) -> KvmDtable {
        let d = match t {
            Dtable::Gdt => self.g.gdtr,
            Dtable::Idt => self.g.idtr,
        };
        KvmDtable {
            base: d.0,
            limit: d.1 as u16,
            padding: [0; 3],
        }
    }

    fn set_dtable(&mut self, t: Dtable, d: &KvmDtable) {
        let v = (d.base, u32::from(d.limit));
        match t {
            Dtable::Gdt => self.g.gdtr = v,
            Dtable::Idt => self.g.idtr = v,
        }
    }

    fn dr6(&self) -> u64 {
        self.dr6
    }

    fn set_dr6(&mut self, v: u64) {
        self.dr6 = v;
    }

    fn set_event(&mut self, e: Option<&Event>) {
        self.event = match e {
            Some(e) => (e.info(), e.error_code.unwrap_or(0), 0),
            None => (0, 0, 0),
        };
    }

    fn interrupted_event(&mut self) -> Option<Event> {
        let x = &self.exit;
        let e = if x.reason == NOT_RUN {
            // VMLAUNCH failed: what was to be injected still is.
            Event::from_info(self.event.0, self.event.1)
        } else if intr::reinject(x.idt_vectoring) {
            Event::from_info(x.idt_vectoring, x.idt_error)
        } else {
            None
        };
        // An NMI whose delivery faulted leaves NMIs unblocked (SDM "Information
        // for VM Exits During Event Delivery"; KVM clears the bit too).
        if e.is_some_and(|e| e.kind == Kind::Nmi) {
            self.g.interruptibility &= !BLOCK_NMI;
        }
        e
    }

    fn interrupt_shadow(&self) -> u8 {
        let i = self.g.interruptibility;
        let mut v = 0;
        if i & BLOCK_STI != 0 {
            v |= SHADOW_STI;
        }
        if i & BLOCK_MOV_SS != 0 {
            v |= SHADOW_MOV_SS;
        }
        v
    }

    fn set_interrupt_shadow(&mut self, shadow: u8) {
        // VM entry refuses both at once; MOV SS wins, as in KVM.
        let i = &mut self.g.interruptibility;
        *i &= !(BLOCK_STI | BLOCK_MOV_SS);
        if shadow & SHADOW_MOV_SS != 0 {
            *i |= BLOCK_MOV_SS;
        } else if shadow & SHADOW_STI != 0 {
            *i |= BLOCK_STI;
        }
    }

    fn nmi_masked(&self) -> bool {
        self.g.interruptibility & BLOCK_NMI != 0
    }

    fn set_nmi_masked(&mut self, masked: bool) {
        if masked {
            self.g.interruptibility |= BLOCK_NMI;
        } else {
            self.g.interruptibility &= !BLOCK_NMI;
        }
    }

    fn set_windows(&mut self, irq: bool, nmi: bool) {
        let mut w = 0;
        if irq {
            w |= proc::INTR_WINDOW_EXITING;
        }
        if nmi {
            // NMI-window exiting under STI blocking fails VM entry on some
            // CPUs: wait for the interrupt window instead, as KVM does.
            w |= if self.g.interruptibility & BLOCK_STI != 0 {
                proc::INTR_WINDOW_EXITING
            } else {
                proc::NMI_WINDOW_EXITING
            };
        }
        self.windows = w;
    }

    fn get_msr(&self, m: u32) -> Option<u64> {
        let g = &self.g;
        Some(match m {
            msr::SYSENTER_CS => g.sysenter_cs,
            msr::SYSENTER_ESP => g.sysenter_esp,
            msr::SYSENTER_EIP => g.sysenter_eip,
            msr::FS_BASE => g.seg[FS].base,
            msr::GS_BASE => g.seg[GS].base,
            msr::TSC_AUX => return None,
            _ => {
                let i = SWITCHED_MSRS[..self.nswitched]
                    .iter()
                    .position(|&x| x == m)?;
                self.msr_lists.u64s()[i * 2 + 1]
            }
        })
    }

    fn set_msr(&mut self, m: u32, v: u64) -> bool {
        let g = &mut self.g;
        match m {
            msr::SYSENTER_CS => g.sysenter_cs = v & 0xffff,
            msr::SYSENTER_ESP => g.sysenter_esp = v,
            msr::SYSENTER_EIP => g.sysenter_eip = v,
            msr::FS_BASE => g.seg[FS].base = v,
            msr::GS_BASE => g.seg[GS].base = v,
            msr::TSC_AUX => return false,
            _ => match self.switched_msr(m) {
                Some(slot) => *slot = v,
                None => return false,
            },
        }
        true
    }

    fn loads_pdptes(&self) -> bool {
        true
    }

    fn set_pdptes(&mut self, p: [u64; 4]) {
        self.g.pdpte = p;
    }
}
