// SPDX-License-Identifier: GPL-2.0

//! The vCPU's in-kernel local APIC (a VM with the split irqchip): the
//! register model (`core/src/lapic`) wired to the vCPU — the xAPIC page and
//! x2APIC MSRs, CR8 as TPR, interrupts from the APIC into the event queue,
//! the mailbox other vCPUs and devices post to, the host timer, HLT and
//! the INIT/SIPI states — and `KVM_GET/SET_LAPIC`, `KVM_GET/SET_MP_STATE`.
//!
//! Interrupts for this APIC arrive through its doorbell (`sys/bell.rs`):
//! senders never take the vCPU's lock, which its thread holds while the
//! guest runs. The vCPU moves what was posted into the model at every
//! entry and while it is halted.

use super::{Inner, Vcpu};
use crate::{
    addr::Gpa,
    backend::{ArchVcpu, Backend, Sreg, VcpuState},
    cpuid::{self, GuestCaps},
    decode::Segment,
    events::Events,
    lapic::{self, Accepted, DeliveryMode, Effects, Expiry, Ipi, Lapic, TimerModes, Trigger},
    routing,
    sys::{
        bell::{Armed, Bell, Mail},
        cpu, uaccess,
    },
    vm::Vm,
    x86::{self, APIC_BASE_BSP, CR0_CD, CR0_ET, CR0_NW},
};
use core::sync::atomic::Ordering;
use kernel::prelude::*;

/// `KVM_MP_STATE_*` values.
pub(crate) mod mp {
    pub(crate) const RUNNABLE: u32 = 0;
    pub(crate) const UNINITIALIZED: u32 = 1;
    pub(crate) const INIT_RECEIVED: u32 = 2;
    pub(crate) const HALTED: u32 = 3;
    pub(crate) const SIPI_RECEIVED: u32 = 4;
    /// SEV-ES's AP wait state; halted-like here.
    pub(crate) const AP_RESET_HOLD: u32 = 9;
}

/// What was posted to a vCPU's APIC since it last looked.
#[derive(Default)]
pub(crate) struct Mailbox {
    /// Edge-triggered fixed vectors.
    edge: [u32; 8],
    /// Level-triggered fixed vectors (asserted).
    level: [u32; 8],
    nmis: u32,
    init: bool,
    sipi: Option<u8>,
    /// KVM's PV "kick" (remote read): wake a halted vCPU.
    unhalt: bool,
    timer: bool,
}

impl Mail for Mailbox {
    fn timer_fired(&mut self) {
        self.timer = true;
    }

    fn is_empty(&self) -> bool {
        self.edge == [0; 8]
            && self.level == [0; 8]
            && self.nmis == 0
            && !self.init
            && self.sipi.is_none()
            && !self.unhalt
            && !self.timer
    }
}

impl Mailbox {
    /// An interrupt the destination's APIC accepts (the sender checked
    /// that with [`Lapic::accepts`] on its copy of the APIC).
    pub(crate) fn put(&mut self, mode: DeliveryMode, vector: u8, trigger: Trigger) {
        let (w, b) = (usize::from(vector / 32), 1u32 << (vector % 32));
        match mode {
            DeliveryMode::Fixed | DeliveryMode::LowestPriority => match trigger {
                Trigger::Edge => self.edge[w] |= b,
                Trigger::Level => self.level[w] |= b,
            },
            DeliveryMode::Nmi => self.nmis = self.nmis.saturating_add(1),
            DeliveryMode::Init => self.init = true,
            DeliveryMode::StartUp => self.sipi = Some(vector),
            DeliveryMode::RemoteRead => self.unhalt = true,
            // No SMM; ExtINT is never accepted.
            DeliveryMode::Smi | DeliveryMode::ExtInt => {}
        }
    }
}

/// The doorbell of a vCPU.
pub(crate) type VcpuBell = Bell<Mailbox>;

/// A vCPU's local APIC and the state KVM keeps beside it.
pub(super) struct Apic {
    pub(super) lapic: Lapic,
    /// The PIC's vector userspace queued with `KVM_INTERRUPT` (ExtINT).
    pub(super) extint: Option<u8>,
    /// INIT latched (`KVM_APIC_INIT`).
    init: bool,
    /// SIPI latched with its vector (`KVM_APIC_SIPI`).
    sipi: Option<u8>,
    /// The last SIPI's vector (`sipi_vector`; `KVM_SET_VCPU_EVENTS` can
    /// set it).
    pub(super) sipi_vector: u8,
    /// A PV kick arrived.
    unhalt: bool,
    pub(super) mp_state: u32,
    /// The host timer must be set again from the model.
    rearm: bool,
    /// The model's addressing changed: the VM's copy must follow.
    addressing: bool,
    /// An IPI the last access sent, to be routed.
    ipi: Option<Ipi>,
    /// The host timer, while started.
    timer: Option<Armed<Mailbox>>,
    /// Vectors whose EOI exits to the userspace IOAPIC
    /// (`ioapic_handled_vectors`), for the routing of `eoi_gen`.
    eoi_exits: [u64; 4],
    eoi_gen: u64,
    /// The highest of them only an older routing's pending interrupt
    /// needs: its EOI rescans.
    stale_eoi: Option<u8>,
    /// `eoi_exits` must be computed again (addressing changed).
    rescan: bool,
    /// An EOI to report with `KVM_EXIT_IOAPIC_EOI` before the next entry.
    pub(super) eoi_exit: Option<u8>,
    /// `KVM_SET_VAPIC_ADDR`'s guest address, or 0.
    vapic: u64,
}

impl Apic {
    /// The APIC of a new vCPU; APs wait for INIT and SIPI.
    pub(super) fn new(vcpu_id: u32) -> Result<KBox<Apic>> {
        let lapic = Lapic::new(vcpu_id, lapic::Config::DEFAULT);
        let bsp = lapic.apic_base() & APIC_BASE_BSP != 0;
        Ok(KBox::new(
            Apic {
                lapic,
                extint: None,
                init: false,
                sipi: None,
                sipi_vector: 0,
                unhalt: false,
                mp_state: if bsp { mp::RUNNABLE } else { mp::UNINITIALIZED },
                rearm: false,
                addressing: false,
                ipi: None,
                timer: None,
                eoi_exits: [0; 4],
                eoi_gen: u64::MAX,
                stale_eoi: None,
                rescan: true,
                eoi_exit: None,
                vapic: 0,
            },
            GFP_KERNEL_ACCOUNT,
        )?)
    }

    /// The vector the APIC (or, through LINT0, the PIC) would have the CPU
    /// take now (`kvm_cpu_get_interrupt` without the acknowledge).
    pub(super) fn external(&self) -> Option<u8> {
        match self.extint {
            Some(v) if self.lapic.accepts_pic_interrupt() => Some(v),
            _ => self.lapic.pending_vector(),
        }
    }

    /// The CPU took [`Apic::external`]'s vector.
    pub(super) fn acknowledge(&mut self) {
        if self.extint.is_some() && self.lapic.accepts_pic_interrupt() {
            self.extint = None;
        } else {
            self.lapic.ack();
        }
    }

    /// Records what an access asks for; routing and the timer follow
    /// before the next entry.
    fn effects(&mut self, fx: Effects) {
        if fx.ipi.is_some() {
            self.ipi = fx.ipi;
        }
        self.rearm |= fx.timer_changed;
        self.addressing |= fx.addressing_changed;
        self.rescan |= fx.addressing_changed;
        // kvm_ioapic_send_eoi with a split irqchip (which ignores the
        // guest's directed-EOI bit, KVM's quirk).
        if let Some(e) = fx.eoi {
            if routing::has_vector(&self.eoi_exits, e.vector) {
                if self.stale_eoi == Some(e.vector) {
                    self.rescan = true;
                }
                self.eoi_exit = Some(e.vector);
            }
        }
    }

    /// What an interrupt delivered to this APIC asks of the vCPU.
    fn accepted(&mut self, a: Accepted, events: &mut Events, nmi_masked: bool) {
        match a {
            Accepted::Nmi => events.add_nmis(1, nmi_masked),
            Accepted::Init => self.init = true,
            Accepted::Sipi(v) => {
                self.sipi = Some(v);
                self.sipi_vector = v;
            }
            Accepted::RemoteRead => self.unhalt = true,
            Accepted::Interrupt(_) | Accepted::Smi | Accepted::Dropped => {}
        }
    }
}

/// The LAPIC configuration the guest's CPUID implies (`kvm_apic_set_version`,
/// `apic_update_lvtt`'s timer mode mask).
pub(super) fn lapic_config(
    entries: &[cpuid::Entry],
    caps: &GuestCaps,
    intel: bool,
) -> lapic::Config {
    let leaf1 = entries.iter().find(|e| e.function == 1);
    lapic::Config {
        timer_modes: match leaf1 {
            None => TimerModes::OneShotOnly,
            Some(e) if e.ecx & (1 << 24) != 0 => TimerModes::TscDeadline,
            Some(_) => TimerModes::Periodic,
        },
        // Split irqchip: the IOAPIC is in userspace (KVM offers it then).
        directed_eoi: caps.x2apic,
        intel_compatible: intel,
        ..lapic::Config::DEFAULT
    }
}

impl<B: Backend> Inner<B> {
    /// Makes the mirrors of APIC state in the generic vCPU (CR8, APIC_BASE)
    /// follow the model, and notes what an access asked for.
    pub(super) fn apic_effects(&mut self, fx: Effects) {
        let Some(apic) = self.apic.as_mut() else {
            return;
        };
        apic.effects(fx);
        self.state.cr8 = apic.lapic.cr8();
        self.state.apic_base = apic.lapic.apic_base();
    }

    /// The guest TSC now.
    pub(super) fn guest_tsc(&self) -> u64 {
        cpu::rdtsc().wrapping_add(self.state.tsc_offset)
    }

    /// Moves what was posted to the APIC into the model.
    pub(super) fn take_mail(&mut self, bell: &VcpuBell) {
        if self.apic.is_none() || !bell.posted() {
            return;
        }
        let m = bell.take();
        let masked = self.arch.nmi_masked();
        let now = cpu::now_ns();
        let tsc = self.guest_tsc();
        let Some(apic) = self.apic.as_mut() else {
            return;
        };
        for (trigger, bits) in [(Trigger::Edge, m.edge), (Trigger::Level, m.level)] {
            for (w, mut word) in bits.into_iter().enumerate() {
                while word != 0 {
                    let v = (w * 32) as u8 + word.trailing_zeros() as u8;
                    word &= word - 1;
                    let a = apic.lapic.accept(DeliveryMode::Fixed, v, true, trigger);
                    apic.accepted(a, &mut self.events, masked);
                }
            }
        }
        if m.nmis != 0 {
            self.events.add_nmis(m.nmis, masked);
        }
        apic.init |= m.init;
        if let Some(v) = m.sipi {
            apic.accepted(Accepted::Sipi(v), &mut self.events, masked);
        }
        apic.unhalt |= m.unhalt;
        if m.timer {
            if let Some(a) = apic.lapic.timer_fired(now, tsc) {
                apic.accepted(a, &mut self.events, masked);
            }
            // A periodic count reloaded; a stale callback re-arms.
            apic.rearm = true;
        }
    }

    /// INIT and SIPI as the APIC latched them (`kvm_apic_accept_events`):
    /// INIT resets the vCPU and leaves an AP waiting for SIPI; SIPI starts
    /// a waiting AP at `vector << 12`.
    /// Whether either was latched (which wakes a halted vCPU).
    pub(super) fn accept_init_sipi(&mut self) -> bool {
        let Some(apic) = self.apic.as_mut() else {
            return false;
        };
        let init = core::mem::take(&mut apic.init);
        if init {
            self.init_reset();
        }
        let Some(apic) = self.apic.as_mut() else {
            return init;
        };
        let sipi = apic.sipi.take();
        if let Some(v) = sipi {
            if apic.mp_state == mp::INIT_RECEIVED {
                apic.mp_state = mp::RUNNABLE;
                let mut cs = self.arch.segment(Sreg::Seg(Segment::Cs));
                cs.selector = u16::from(v) << 8;
                cs.base = u64::from(v) << 12;
                self.arch.set_segment(Sreg::Seg(Segment::Cs), &cs);
                self.arch.set_rip(0);
            }
        }
        init || sipi.is_some()
    }

    /// INIT (`kvm_vcpu_reset(vcpu, true)`): RESET's registers, but PAT,
    /// MISC_ENABLE, TSC, TSC_AUX, XCR0, APIC_BASE and CR0.CD/NW stay; the
    /// APIC takes its INIT reset, queued events are dropped, the TLB is
    /// flushed.
    fn init_reset(&mut self) {
        let Some(apic) = self.apic.as_mut() else {
            return;
        };
        let fx = apic.lapic.reset(true);
        let bsp = apic.lapic.apic_base() & APIC_BASE_BSP != 0;
        apic.mp_state = if bsp { mp::RUNNABLE } else { mp::INIT_RECEIVED };
        apic.unhalt = false;
        let id = apic.lapic.vcpu_id();
        let keep = self.state;
        let cr0 = self.arch.cr0();
        self.reset(id, keep.tsc_offset);
        let s = &mut self.state;
        s.pat = keep.pat;
        s.misc_enable = keep.misc_enable;
        s.tsc_aux = keep.tsc_aux;
        s.xcr0 = keep.xcr0;
        s.changed = VcpuState::ALL;
        self.arch.set_cr0(CR0_ET | (cr0 & (CR0_CD | CR0_NW)));
        self.events = Events::default();
        self.msrs.init(B::CPU == crate::decode::Vendor::Amd);
        self.triple_fault = false;
        self.pending = super::Pending::None;
        // The next entry sees an older generation and flushes.
        self.tlb_gen = self.tlb_gen.wrapping_sub(1);
        self.apic_effects(fx);
    }

    /// Whether a halted vCPU wakes (`kvm_vcpu_has_events`; INIT and SIPI,
    /// which also wake it, are taken before).
    pub(super) fn wakes(&self) -> bool {
        let Some(apic) = self.apic.as_ref() else {
            return true;
        };
        let e = &self.events;
        let shadow = self.arch.interrupt_shadow() != 0;
        let if_on = super::interrupts_enabled(self.arch.rflags());
        apic.unhalt
            || e.exception.pending
            || (e.nmi_pending > 0 && !self.arch.nmi_masked() && !shadow)
            || (if_on && !shadow && apic.external().is_some())
    }

    /// A guest or host access to an APIC MSR: `None` when it is not one.
    /// `Some(None)` (read) or `Some(false)` (write) is #GP.
    pub(super) fn apic_rdmsr(&self, index: u32) -> Option<Option<u64>> {
        match index {
            crate::msr::TSC_DEADLINE => Some(Some(
                self.apic.as_ref().map_or(0, |a| a.lapic.tsc_deadline()),
            )),
            crate::msr::X2APIC_FIRST..=crate::msr::X2APIC_LAST => {
                let a = self.apic.as_ref()?;
                Some(a.lapic.rdmsr(index, cpu::now_ns()).ok())
            }
            _ => None,
        }
    }

    /// See [`Inner::apic_rdmsr`].
    pub(super) fn apic_wrmsr(&mut self, index: u32, v: u64) -> Option<bool> {
        let fx = match index {
            crate::msr::TSC_DEADLINE => match self.apic.as_mut() {
                None => return Some(true),
                Some(a) => a.lapic.set_tsc_deadline(v),
            },
            crate::msr::X2APIC_FIRST..=crate::msr::X2APIC_LAST => {
                let a = self.apic.as_mut()?;
                match a.lapic.wrmsr(index, v, cpu::now_ns()) {
                    Ok(fx) => fx,
                    Err(_) => return Some(false),
                }
            }
            _ => return None,
        };
        self.apic_effects(fx);
        Some(true)
    }

    /// An APIC_BASE write through the model (`kvm_apic_set_base`).
    pub(super) fn set_apic_base(&mut self, v: u64, host: bool) -> bool {
        let caps = self.policy.caps;
        let Some(apic) = self.apic.as_mut() else {
            let ok = if host {
                x86::valid_apic_base(v, self.state.apic_base, &caps)
            } else {
                x86::valid_apic_base_guest(v, self.state.apic_base, &caps)
            };
            if ok {
                self.state.apic_base = v;
            }
            return ok;
        };
        match apic.lapic.set_apic_base(v, host, &caps) {
            Ok(fx) => {
                self.apic_effects(fx);
                true
            }
            Err(_) => false,
        }
    }

    /// A guest MOV to CR8 with the APIC in the kernel.
    pub(super) fn set_tpr(&mut self, cr8: u64) {
        if let Some(apic) = self.apic.as_mut() {
            let fx = apic.lapic.set_cr8(cr8);
            self.apic_effects(fx);
        }
    }

    /// The xAPIC page, if `gpa..gpa + len` lies in it and the APIC decodes
    /// MMIO: the offset.
    pub(super) fn xapic_offset(&self, gpa: u64, len: usize) -> Option<u32> {
        // Even when the page does not decode (APIC disabled, x2APIC mode)
        // it reads as ones in the kernel (KVM_X86_QUIRK_LAPIC_MMIO_HOLE).
        let a = &self.apic.as_ref()?.lapic;
        let off = gpa.checked_sub(a.mmio_base())?;
        (off + len as u64 <= u64::from(lapic::MMIO_SIZE)).then_some(off as u32)
    }

    /// An emulated read of the xAPIC page.
    pub(super) fn xapic_read(&self, off: u32, data: &mut [u8]) {
        if let Some(a) = self.apic.as_ref() {
            let v = a.lapic.mmio_read(off, data.len(), cpu::now_ns());
            let n = data.len().min(8);
            data[..n].copy_from_slice(&v.to_le_bytes()[..n]);
        }
    }

    /// An emulated write of the xAPIC page.
    pub(super) fn xapic_write(&mut self, off: u32, data: &[u8]) {
        if let Some(a) = self.apic.as_mut() {
            let fx = a.lapic.mmio_write(off, data, cpu::now_ns());
            self.apic_effects(fx);
        }
    }

    /// `KVM_SET_CPUID2` or `KVM_X86_SETUP_MCE` changed what the APIC
    /// offers (LVT CMCI follows `MCG_CMCI_P`: `kvm_apic_after_set_mcg_cap`).
    pub(super) fn apic_after_cpuid(&mut self) {
        let intel = crate::decode::Vendor::Intel == B::CPU;
        let mut cfg = lapic_config(&self.cpuid, &self.policy.caps, intel);
        cfg.cmci = self.msrs.mce.cap & crate::msr::mce::MCG_CMCI_P != 0;
        if let Some(a) = self.apic.as_mut() {
            a.lapic.set_config(cfg);
        }
    }

    /// A local interrupt from LVT entry `lvt` (`kvm_apic_local_deliver`);
    /// nothing without an in-kernel APIC.
    pub(super) fn apic_local_interrupt(&mut self, lvt: crate::lapic::Lvt) {
        let masked = self.arch.nmi_masked();
        if let Some(a) = self.apic.as_mut() {
            let r = a.lapic.local_interrupt(lvt);
            a.accepted(r, &mut self.events, masked);
        }
    }
}

impl<B: Backend> Vcpu<B> {
    /// Before an entry (and while halted): takes the mail, runs INIT/SIPI,
    /// routes an IPI the guest sent, updates the VM's copy of this APIC
    /// and sets the host timer.
    /// Whether INIT or SIPI was latched.
    pub(super) fn service_apic(&self, vm: &Vm<B>, inner: &mut Inner<B>) -> bool {
        if inner.apic.is_none() {
            return false;
        }
        inner.take_mail(&self.bell);
        let latched = inner.accept_init_sipi();
        let tsc = inner.guest_tsc();
        let khz = inner.tsc_khz;
        let Some(apic) = inner.apic.as_mut() else {
            return latched;
        };
        if let Some(ipi) = apic.ipi.take() {
            vm.irq.deliver(&ipi, false, Some(self.index));
        }
        if core::mem::take(&mut apic.addressing) {
            vm.irq.update_apic(self.index, &apic.lapic);
        }
        let gen = vm.irq.routes_gen.load(Ordering::SeqCst);
        if core::mem::take(&mut apic.rescan) || gen != apic.eoi_gen {
            (apic.eoi_exits, apic.stale_eoi) = vm.irq.ioapic_vectors(&apic.lapic);
            apic.eoi_gen = gen;
        }
        if core::mem::take(&mut apic.rearm) {
            // Cancel first (waits for a callback that runs), then start.
            apic.timer = None;
            let ns = match apic.lapic.timer_expiry() {
                None => return latched,
                Some(Expiry::Ns(t)) => t.saturating_sub(cpu::now_ns()),
                Some(Expiry::GuestTsc(d)) => tsc_to_ns(d.saturating_sub(tsc), khz),
            };
            apic.timer = Some(Bell::arm(&self.bell, ns));
        }
        latched
    }

    /// Services the APIC, then whether the vCPU may enter the guest: it is
    /// runnable, or halted with something that wakes it (`vcpu_block`'s
    /// test and the HALTED to RUNNABLE step). INIT_RECEIVED and
    /// UNINITIALIZED wait for INIT/SIPI.
    pub(super) fn apic_runnable(&self, vm: &Vm<B>, inner: &mut Inner<B>) -> bool {
        let latched = self.service_apic(vm, inner);
        let wakes = latched || inner.wakes();
        let Some(a) = inner.apic.as_mut() else {
            return true;
        };
        match a.mp_state {
            mp::RUNNABLE => true,
            mp::HALTED | mp::AP_RESET_HOLD if wakes => {
                a.mp_state = mp::RUNNABLE;
                a.unhalt = false;
                true
            }
            _ => false,
        }
    }

    /// The vCPU is an AP that has not seen INIT yet.
    pub(super) fn uninitialized(&self, inner: &Inner<B>) -> bool {
        inner
            .apic
            .as_ref()
            .is_some_and(|a| a.mp_state == mp::UNINITIALIZED)
    }

    /// `kvm_vcpu_block` then `kvm_apic_accept_events`: sleeps until INIT,
    /// SIPI, an event the vCPU could take, or a signal.
    pub(super) fn block_once(&self, vm: &Vm<B>, inner: &mut Inner<B>) {
        loop {
            if self.service_apic(vm, inner) || inner.wakes() || kernel::current!().signal_pending()
            {
                return;
            }
            self.bell.wait();
        }
    }

    /// `KVM_GET_LAPIC`.
    pub(super) fn get_lapic(&self, vm: &Vm<B>, arg: usize) -> Result<isize> {
        let mut inner = self.inner.lock();
        inner.take_mail(&self.bell);
        let Some(a) = inner.apic.as_ref() else {
            return Err(EINVAL);
        };
        let state = a.lapic.get_state(cpu::now_ns(), vm.irq.x2apic_format());
        drop(inner);
        uaccess::write(arg, &state)?;
        Ok(0)
    }

    /// `KVM_SET_LAPIC`: the state as given (`kvm_apic_set_state`).
    pub(super) fn set_lapic(&self, vm: &Vm<B>, arg: usize) -> Result<isize> {
        let state: [u8; lapic::STATE_SIZE] = uaccess::read(arg)?;
        let mut inner = self.inner.lock();
        let Some(a) = inner.apic.as_mut() else {
            return Err(EINVAL);
        };
        let fx = a
            .lapic
            .set_state(&state, cpu::now_ns(), vm.irq.x2apic_format())
            .map_err(|_| EINVAL)?;
        // The guest's state replaces whatever was latched.
        a.rearm = true;
        inner.apic_effects(fx);
        self.service_apic(vm, &mut inner);
        Ok(0)
    }

    /// `KVM_SET_VAPIC_ADDR`: `EINVAL` without an in-kernel APIC or for an
    /// address no memory slot backs; 0 turns the page off.
    pub(super) fn set_vapic_addr(&self, vm: &Vm<B>, arg: usize) -> Result<isize> {
        if self.inner.lock().apic.is_none() {
            return Err(EINVAL);
        }
        let addr: u64 = uaccess::read(arg)?;
        if addr != 0 && !vm.mem().is_ram(Gpa(addr), 4, false) {
            return Err(EINVAL);
        }
        if let Some(a) = self.inner.lock().apic.as_mut() {
            a.vapic = addr;
        }
        Ok(0)
    }

    /// Before an entry: the APIC's priorities into the virtual-APIC page.
    pub(super) fn sync_to_vapic(&self, vm: &Vm<B>, inner: &Inner<B>) {
        // Only while the APIC is enabled (kvm_lapic_enabled()), as KVM.
        if let Some(a) = inner
            .apic
            .as_ref()
            .filter(|a| a.vapic != 0 && a.lapic.enabled())
        {
            // A page that went away is skipped, as KVM's cached write.
            let _ = vm
                .mem()
                .write(Gpa(a.vapic), &a.lapic.vapic_word().to_le_bytes());
        }
    }

    /// After an exit: the guest's TPR from the virtual-APIC page.
    pub(super) fn sync_from_vapic(&self, vm: &Vm<B>, inner: &mut Inner<B>) {
        let Some(addr) = inner.apic.as_ref().map(|a| a.vapic).filter(|&v| v != 0) else {
            return;
        };
        let mut w = [0u8; 4];
        if vm.mem().read(Gpa(addr), &mut w).is_err() {
            return;
        }
        if let Some(a) = inner.apic.as_mut() {
            let fx = a.lapic.set_tpr(w[0]);
            inner.apic_effects(fx);
        }
    }

    /// `KVM_GET_MP_STATE`: RUNNABLE without an in-kernel APIC.
    pub(super) fn get_mp_state(&self, arg: usize) -> Result<isize> {
        let mut inner = self.inner.lock();
        inner.take_mail(&self.bell);
        inner.accept_init_sipi();
        let s = inner.apic.as_ref().map_or(mp::RUNNABLE, |a| a.mp_state);
        drop(inner);
        uaccess::write(arg, &s)?;
        Ok(0)
    }

    /// `KVM_SET_MP_STATE`: only RUNNABLE without an in-kernel APIC; with
    /// one also the halted and INIT states (SIPI_RECEIVED is INIT_RECEIVED
    /// with a SIPI latched, as KVM). Others are `EINVAL`.
    pub(super) fn set_mp_state(&self, arg: usize) -> Result<isize> {
        let s: u32 = uaccess::read(arg)?;
        let mut inner = self.inner.lock();
        match s {
            mp::RUNNABLE => {
                if let Some(a) = inner.apic.as_mut() {
                    a.mp_state = s;
                }
            }
            mp::UNINITIALIZED | mp::INIT_RECEIVED | mp::HALTED | mp::AP_RESET_HOLD => {
                inner.apic.as_mut().ok_or(EINVAL)?.mp_state = s;
            }
            mp::SIPI_RECEIVED => {
                let a = inner.apic.as_mut().ok_or(EINVAL)?;
                a.mp_state = mp::INIT_RECEIVED;
                a.sipi = Some(a.sipi_vector);
            }
            _ => return Err(EINVAL),
        }
        Ok(0)
    }
}

/// Guest TSC ticks at `khz` kHz as nanoseconds (rounded up, so that a
/// deadline timer never fires early; saturating).
fn tsc_to_ns(ticks: u64, khz: u32) -> u64 {
    if khz == 0 {
        return 0;
    }
    // In two parts: no 128-bit division in the kernel.
    let khz = u64::from(khz);
    let whole = (ticks / khz).saturating_mul(1_000_000);
    whole.saturating_add(((ticks % khz) * 1_000_000).div_ceil(khz))
}
