// SPDX-License-Identifier: GPL-2.0

//! A virtual CPU: its file descriptor, the shared `kvm_run` page, the
//! generic vCPU state and its RESET values, and the vCPU ioctls.
//!
//! The concerns live in `vcpu/`: the run loop and exit dispatch
//! (`run.rs`), event injection and the event ioctls (`events.rs`), port IO
//! (`pio.rs`), MMIO and the instruction emulator (`mmio.rs`), the register
//! and CPUID ioctls (`regs.rs`), the MSRs (`msr.rs`), the in-kernel
//! local APIC (`apic.rs`) and guest debugging (`debug.rs`).

use crate::{
    abi,
    backend::{ArchVcpu, Backend, Dtable, Sreg, VcpuState},
    cpuid,
    decode::{Insn, Mode, Segment, Vendor},
    events::Events,
    guest_cpuid::Policy,
    memory::Paging,
    sys::{cpu, file::AnonFile, fpu::GuestFpu, mem::Pages, uaccess},
    uapi::{KvmDtable, KvmRegs, KvmRun, KvmSegment, KvmSregs},
    vclock::{PvClock, VmClock},
    vm::Vm,
    x86::{self, reset, CR0_PE, EFER_LMA, RFLAGS_IF, RFLAGS_VM},
};
use kernel::{
    new_mutex,
    prelude::*,
    sync::{Arc, ArcBorrow, Mutex},
};

mod apic;
mod debug;
mod events;
mod mmio;
mod msr;
mod pio;
mod regs;
mod run;

use apic::Apic;
pub(crate) use apic::VcpuBell;
pub(crate) use debug::DebugExit;
use mmio::Frags;
pub(crate) use msr::{feature_msr_index_list, get_feature_msrs, mce_cap_supported, msr_index_list};

/// Offsets in `struct kvm_run` (asserted in core/src/uapi.rs).
const RUN_REQUEST_INTERRUPT_WINDOW: usize = 0;
const RUN_OUT_START: usize = 8;
/// The exit union's offset.
const RUN_EXIT: usize = 32;
const RUN_CR8: usize = 16;
const RUN_VALID_REGS: usize = 288;
const RUN_MMIO_DATA: usize = 40;

use crate::events::{GP_VECTOR, PF_VECTOR, UD_VECTOR};

/// What the next `KVM_RUN` must finish before entering the guest.
enum Pending {
    None,
    /// IN/INS: userspace left the data in the PIO page. `rip` is where the
    /// instruction was: if userspace moved RIP meanwhile, the IN is dropped.
    IoIn {
        io: crate::backend::IoExit,
        count: u32,
        rip: u64,
    },
    /// OUT: skip the instruction unless userspace moved RIP.
    IoOut {
        next_rip: u64,
        rip: u64,
    },
    /// OUTS: userspace consumed the data; advance the registers.
    IoOutString {
        io: crate::backend::IoExit,
        count: u32,
    },
    /// An emulated instruction's MMIO read, in up to two page fragments:
    /// when all are in, emulate again with the data.
    MmioRead {
        insn: Insn,
        frags: Frags,
    },
    /// The rest of an MMIO write that crossed a page.
    MmioWrite {
        frags: Frags,
    },
}

/// A vCPU's state behind its lock.
struct Inner<B: Backend> {
    /// The vendor part: the VMCB or VMCS.
    arch: B::Vcpu,
    /// The generic part of the register state.
    state: VcpuState,
    /// The guest's FPU/SSE/AVX registers.
    fpu: GuestFpu,
    /// Exceptions, the interrupt and NMIs owed to the guest.
    events: Events,
    /// The last entry had an event or a window set in the VMCB/VMCS (so
    /// the next one must clear them even with nothing owed).
    events_armed: bool,
    /// An exception came on top of a #DF: the next entry is a shutdown.
    triple_fault: bool,
    pending: Pending,
    /// The exit fields to publish in `kvm_run` (header and exit union).
    staging: KBox<KvmRun>,
    /// The guest's CPUID table (`KVM_SET_CPUID2`).
    cpuid: KVec<cpuid::Entry>,
    /// What the guest's CPUID table allows, as far as rkvm supports it
    /// (KVM's `guest_cpu_cap_has`), and the host's limits.
    policy: Policy,
    /// The guest has entered at least once: its CPUID is frozen.
    has_run: bool,
    /// The VM's TLB generation this vCPU last entered with.
    tlb_gen: u64,
    /// The guest TSC's frequency (`KVM_GET/SET_TSC_KHZ`): the host's, as
    /// rkvm has no TSC scaling.
    tsc_khz: u32,
    /// A page-sized buffer for string IO data (kept off the stack).
    pio_buf: KVec<u8>,
    /// The local APIC, in a VM with the split irqchip.
    apic: Option<KBox<Apic>>,
    /// Machine checks, MTRRs and the other emulated MSRs.
    msrs: KBox<msr::MsrState>,
    /// What `KVM_SET_GUEST_DEBUG` set.
    guest_debug: crate::debug::GuestDebug,
    /// An instruction rkvm completed for the guest ran with TF set: its
    /// single-step trap is owed (see `debug.rs`).
    step_trap: bool,
    /// The queued #BP came from `KVM_GUESTDBG_INJECT_BP`: RIP moves past
    /// the instruction when it is delivered.
    inject_bp: bool,
    /// The guest's kvmclock (`vclock.rs`).
    pvclock: PvClock,
}

/// One vCPU, owned by its VM.
#[pin_data]
pub(crate) struct Vcpu<B: Backend> {
    pub(crate) id: u32,
    /// Its place in the VM's vCPU list.
    pub(crate) index: usize,
    /// `[kvm_run, PIO data]`, mapped by userspace.
    pages: KVec<Pages>,
    #[pin]
    inner: Mutex<Inner<B>>,
    /// What others post to the APIC, the host timer, and the CPU this
    /// vCPU is in guest mode on (see `run.rs`).
    pub(crate) bell: Arc<VcpuBell>,
}

/// What a vCPU file descriptor holds: the vCPU and a reference that keeps
/// its VM alive.
pub(crate) struct VcpuFile<B: Backend> {
    pub(crate) vm: Arc<Vm<B>>,
    pub(crate) vcpu: Arc<Vcpu<B>>,
}

/// What to do after an exit was handled.
enum Flow {
    Resume,
    /// Return to userspace with the exit in `staging`.
    User,
}

impl<B: Backend> Vcpu<B> {
    /// A vCPU in KVM's RESET state, `index` in its VM's list. `tsc_offset`
    /// starts its TSC where the VM's other vCPUs have theirs (KVM
    /// synchronises vCPUs created together). `apic`: the VM has the split
    /// irqchip, so the vCPU gets a local APIC.
    /// `clock`: the VM's, for the guest's kvmclock.
    pub(crate) fn new(
        id: u32,
        index: usize,
        tsc_offset: u64,
        apic: bool,
        clock: Arc<VmClock>,
    ) -> Result<Arc<Self>> {
        let mut pages = KVec::with_capacity(abi::VCPU_MMAP_PAGES, GFP_KERNEL_ACCOUNT)?;
        for _ in 0..abi::VCPU_MMAP_PAGES {
            pages.push(Pages::new(0)?, GFP_KERNEL_ACCOUNT)?;
        }
        let mut inner: Inner<B> = Inner {
            arch: B::Vcpu::new()?,
            state: VcpuState::default(),
            fpu: GuestFpu::new()?,
            events: Events::default(),
            events_armed: false,
            triple_fault: false,
            pending: Pending::None,
            staging: KBox::new(KvmRun::default(), GFP_KERNEL_ACCOUNT)?,
            cpuid: KVec::new(),
            policy: Policy::new(&[])?,
            has_run: false,
            tlb_gen: 0,
            tsc_khz: cpu::tsc_khz(),
            pio_buf: KVec::from_elem(0, 4096, GFP_KERNEL_ACCOUNT)?,
            apic: if apic { Some(Apic::new(id)?) } else { None },
            msrs: KBox::new(
                msr::MsrState::new(B::CPU == Vendor::Amd),
                GFP_KERNEL_ACCOUNT,
            )?,
            guest_debug: Default::default(),
            step_trap: false,
            inject_bp: false,
            pvclock: PvClock::new(clock),
        };
        inner.reset(id, tsc_offset);
        inner.apic_effects(Default::default());
        inner.arch.after_set_cpuid(&inner.policy.caps);
        let bell = VcpuBell::new()?;
        Arc::pin_init(
            pin_init!(Self {
                id,
                index,
                pages,
                inner <- new_mutex!(inner),
                bell,
            }),
            GFP_KERNEL_ACCOUNT,
        )
    }

    /// A copy of the vCPU's APIC (for the VM's APIC map).
    pub(crate) fn lapic_copy(&self) -> crate::lapic::Lapic {
        let inner = self.inner.lock();
        match inner.apic.as_ref() {
            Some(a) => a.lapic.clone(),
            None => crate::lapic::Lapic::new(self.id, crate::lapic::Config::DEFAULT),
        }
    }

    fn publish(&self, inner: &Inner<B>) {
        let staging: &KvmRun = &inner.staging;
        let bytes = kernel::transmute::AsBytes::as_bytes(staging);
        // The header and the part of the exit union this exit uses.
        let end = RUN_EXIT + staging.exit_len();
        self.pages[0].write_shared(RUN_OUT_START, &bytes[RUN_OUT_START..end]);
    }
}

impl<B: Backend> Inner<B> {
    /// KVM's RESET state (`kvm_vcpu_reset(vcpu, false)` and the vendor's
    /// reset), from the table in `core/src/x86.rs`.
    fn reset(&mut self, vcpu_id: u32, tsc_offset: u64) {
        self.state = VcpuState {
            gprs: [0; 16],
            cr8: 0,
            apic_base: reset::apic_base(vcpu_id, 0),
            pat: reset::PAT,
            tsc_offset,
            tsc_aux: 0,
            misc_enable: reset::MISC_ENABLE,
            xcr0: reset::XCR0,
            db: [0; 4],
            dr7: reset::DR7,
            eff_db: [0; 4],
            eff_dr7: reset::DR7,
            changed: VcpuState::ALL,
        };
        self.update_dr7();
        self.state.gprs[2] = reset::RDX;
        let t = reset::segment_types(B::CPU == Vendor::Amd);
        let seg = |selector: u16, base: u64, type_: u8, s: u8| KvmSegment {
            base,
            limit: reset::SEG_LIMIT,
            selector,
            type_,
            present: 1,
            s,
            ..Default::default()
        };
        let a = &mut self.arch;
        a.set_efer(reset::EFER);
        a.set_cr0(reset::CR0);
        a.set_cr2(0);
        a.set_cr3(reset::CR3);
        a.set_cr4(reset::CR4);
        a.set_segment(
            Sreg::Seg(Segment::Cs),
            &seg(reset::CS_SELECTOR, reset::CS_BASE, t.cs, 1),
        );
        for s in [Segment::Ds, Segment::Es, Segment::Fs, Segment::Gs] {
            a.set_segment(Sreg::Seg(s), &seg(0, 0, t.data, 1));
        }
        a.set_segment(Sreg::Seg(Segment::Ss), &seg(0, 0, t.ss, 1));
        a.set_segment(Sreg::Ldtr, &seg(0, 0, t.ldtr, 0));
        a.set_segment(Sreg::Tr, &seg(0, 0, t.tr, 0));
        let dt = KvmDtable {
            base: 0,
            limit: reset::SEG_LIMIT as u16,
            padding: [0; 3],
        };
        a.set_dtable(Dtable::Gdt, &dt);
        a.set_dtable(Dtable::Idt, &dt);
        a.set_dr6(reset::DR6);
        a.set_rflags(reset::RFLAGS);
        a.set_rip(reset::RIP);
    }

    fn gpr(&self, r: u8) -> u64 {
        self.state.gprs[usize::from(r & 15)]
    }

    fn set_gpr(&mut self, r: u8, v: u64) {
        self.state.gprs[usize::from(r & 15)] = v;
    }

    /// The instruction-decoding mode: real and virtual-8086 mode are 16-bit,
    /// otherwise CS.L/CS.D and EFER.LMA decide.
    fn mode(&self) -> Mode {
        if self.arch.cr0() & CR0_PE == 0 || self.arch.rflags() & RFLAGS_VM != 0 {
            return Mode::Bits16;
        }
        let cs = self.arch.segment(Sreg::Seg(Segment::Cs));
        Mode::from_cs(self.arch.efer() & EFER_LMA != 0, cs.l != 0, cs.db != 0)
    }

    /// `v` as a register of the current mode holds it: all 64 bits in
    /// 64-bit mode, the low 32 otherwise.
    fn mode_width(&self, v: u64) -> u64 {
        if self.mode() == Mode::Bits64 {
            v
        } else {
            v & 0xffff_ffff
        }
    }

    /// What a guest-linear access depends on now.
    fn paging(&self) -> Paging {
        let a = &self.arch;
        Paging::new(
            [a.cr0(), a.cr3(), a.cr4()],
            a.efer(),
            a.rflags(),
            a.cpl(),
            self.policy.caps.maxphyaddr,
            B::CPU == Vendor::Amd,
        )
    }

    /// `KVM_GET_REGS`.
    fn regs(&self) -> KvmRegs {
        KvmRegs::from_gprs(&self.state.gprs, self.arch.rip(), self.rflags())
    }

    /// `KVM_SET_REGS`.
    fn set_regs(&mut self, r: &KvmRegs) {
        // As KVM's __set_regs: a pending exception belonged to the old RIP.
        self.events.exception.pending = false;
        self.state.gprs = r.gprs();
        self.arch.set_rip(r.rip);
        self.set_rflags(r.rflags);
    }

    /// `KVM_GET_SREGS`.
    fn sregs(&self) -> KvmSregs {
        let a = &self.arch;
        let s = |seg| a.segment(Sreg::Seg(seg));
        KvmSregs {
            cs: s(Segment::Cs),
            ds: s(Segment::Ds),
            es: s(Segment::Es),
            fs: s(Segment::Fs),
            gs: s(Segment::Gs),
            ss: s(Segment::Ss),
            tr: a.segment(Sreg::Tr),
            ldt: a.segment(Sreg::Ldtr),
            gdt: a.dtable(Dtable::Gdt),
            idt: a.dtable(Dtable::Idt),
            cr0: a.cr0(),
            cr2: a.cr2(),
            cr3: a.cr3(),
            cr4: a.cr4(),
            cr8: self.state.cr8,
            efer: a.efer(),
            apic_base: self.state.apic_base,
            interrupt_bitmap: self.interrupt_bitmap(),
        }
    }

    /// `kvm_sregs.interrupt_bitmap`: the queued external interrupt's bit.
    fn interrupt_bitmap(&self) -> [u64; 4] {
        let mut b = [0u64; 4];
        let i = &self.events.interrupt;
        if i.injected && !i.soft {
            b[usize::from(i.vector / 64)] |= 1 << (i.vector % 64);
        }
        b
    }

    /// Loads special registers `KVM_SET_SREGS` validated.
    fn set_sregs(&mut self, r: &KvmSregs) {
        let a = &mut self.arch;
        a.set_cr0(r.cr0);
        a.set_cr2(r.cr2);
        a.set_cr3(r.cr3);
        a.set_cr4(r.cr4);
        for (seg, v) in [
            (Segment::Cs, &r.cs),
            (Segment::Ds, &r.ds),
            (Segment::Es, &r.es),
            (Segment::Fs, &r.fs),
            (Segment::Gs, &r.gs),
            (Segment::Ss, &r.ss),
        ] {
            a.set_segment(Sreg::Seg(seg), v);
        }
        a.set_segment(Sreg::Tr, &r.tr);
        a.set_segment(Sreg::Ldtr, &r.ldt);
        a.set_dtable(Dtable::Gdt, &r.gdt);
        a.set_dtable(Dtable::Idt, &r.idt);
        // Last: the value userspace gave (LMA included) wins over what CR0
        // implied.
        a.set_efer(r.efer);
        // Validated by `check_sregs`; with an in-kernel APIC the model
        // takes both (KVM's kvm_set_cr8 and kvm_apic_set_base).
        self.set_apic_base(r.apic_base, true);
        if self.apic.is_some() {
            self.set_tpr(r.cr8);
        } else {
            self.state.cr8 = r.cr8;
        }
        // The lowest set bit of the bitmap is queued, as KVM does without
        // an in-kernel irqchip.
        if let Some((w, bits)) = r
            .interrupt_bitmap
            .iter()
            .enumerate()
            .find(|(_, b)| **b != 0)
        {
            self.events.interrupt = crate::events::Interrupt {
                injected: true,
                vector: (w * 64) as u8 + bits.trailing_zeros() as u8,
                soft: false,
            };
        }
    }
}

impl<B: Backend> AnonFile for VcpuFile<B> {
    fn ioctl(this: ArcBorrow<'_, Self>, cmd: u32, arg: usize) -> Result<isize> {
        this.vm.check_owner()?;
        let v = &this.vcpu;
        match cmd {
            abi::KVM_RUN if arg == 0 => v.run(&this.vm),
            abi::KVM_RUN => Err(EINVAL),
            abi::KVM_GET_REGS => {
                let r = v.inner.lock().regs();
                uaccess::write(arg, &r)?;
                Ok(0)
            }
            abi::KVM_SET_REGS => {
                let r: KvmRegs = uaccess::read(arg)?;
                v.inner.lock().set_regs(&r);
                Ok(0)
            }
            abi::KVM_GET_SREGS => {
                let s = v.inner.lock().sregs();
                uaccess::write(arg, &s)?;
                Ok(0)
            }
            abi::KVM_SET_SREGS => v.set_sregs_ioctl(&this.vm, arg),
            abi::KVM_GET_MSRS => v.msrs(arg, false),
            abi::KVM_SET_MSRS => {
                let r = v.msrs(arg, true);
                // A wall-clock MSR write lands in guest memory now, as KVM.
                v.kvmclock_sync(&this.vm);
                r
            }
            abi::KVM_SET_CPUID2 => v.set_cpuid2(arg),
            abi::KVM_GET_CPUID2 => v.get_cpuid2(arg),
            abi::KVM_INTERRUPT => v.interrupt(arg),
            abi::KVM_NMI => v.nmi(),
            abi::KVM_SET_GUEST_DEBUG => v.set_guest_debug(arg),
            abi::KVM_GET_VCPU_EVENTS => v.get_events(arg),
            abi::KVM_SET_VCPU_EVENTS => v.set_events(arg),
            abi::KVM_TRANSLATE => v.translate(&this.vm, arg),
            abi::KVM_GET_TSC_KHZ => Ok(v.inner.lock().tsc_khz as isize),
            abi::KVM_SET_TSC_KHZ => v.set_tsc_khz(arg),
            abi::KVM_GET_LAPIC => v.get_lapic(&this.vm, arg),
            abi::KVM_SET_LAPIC => v.set_lapic(&this.vm, arg),
            abi::KVM_SET_VAPIC_ADDR => v.set_vapic_addr(&this.vm, arg),
            abi::KVM_GET_MP_STATE => v.get_mp_state(arg),
            abi::KVM_SET_MP_STATE => v.set_mp_state(arg),
            abi::KVM_GET_DEBUGREGS => v.get_debugregs(arg),
            abi::KVM_SET_DEBUGREGS => v.set_debugregs(arg),
            abi::KVM_GET_XCRS => v.get_xcrs(arg),
            abi::KVM_SET_XCRS => v.set_xcrs(arg),
            abi::KVM_X86_SETUP_MCE => v.setup_mce(arg),
            abi::KVM_X86_SET_MCE => v.set_mce_ioctl(arg),
            abi::KVM_GET_XSAVE | abi::KVM_GET_XSAVE2 => v.get_xsave(arg),
            abi::KVM_SET_XSAVE => v.set_xsave(arg),
            abi::KVM_GET_FPU => v.get_fpu(arg),
            abi::KVM_SET_FPU => v.set_fpu(arg),
            // KVM's default for unknown vCPU ioctls on x86.
            _ => Err(EINVAL),
        }
    }

    fn mmap_pages(this: &Self) -> &[Pages] {
        &this.vcpu.pages
    }
}

/// Whether the guest's RFLAGS.IF is set (for `kvm_run.if_flag`).
fn interrupts_enabled(rflags: u64) -> bool {
    rflags & RFLAGS_IF != 0
}

/// Host facts the generic vCPU needs: the host's virtual-address width
/// (48, or 57 with 5-level paging), for canonical checks.
fn host_va_bits() -> u32 {
    if cpu::read_cr4() as u64 & x86::CR4_LA57 != 0 {
        57
    } else {
        48
    }
}
