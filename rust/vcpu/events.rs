// SPDX-License-Identifier: GPL-2.0

//! Events for the guest: exceptions, the external interrupt userspace
//! queues (`KVM_INTERRUPT`), NMIs (`KVM_NMI`), their injection at each
//! entry and re-injection after an exit that interrupted a delivery, the
//! interrupt window userspace may ask for, and `KVM_GET/SET_VCPU_EVENTS`.
//! The queue and its rules are `core/src/events.rs`; the backends encode
//! and decode the events in their VMCB or VMCS.

use super::{interrupts_enabled, Inner, Vcpu};
use crate::{
    backend::{ArchVcpu, Backend},
    events::{self, Allowed, Queued},
    sys::uaccess,
    uapi::{vcpu_events as flags, KvmVcpuEvents},
    x86::{CR0_PE, RFLAGS_RF},
};
use kernel::prelude::*;

/// `KVM_NR_INTERRUPTS`.
const NR_INTERRUPTS: u32 = 256;

impl<B: Backend> Inner<B> {
    /// Raises an exception, as KVM's `kvm_queue_exception(_e)` (merging
    /// with one already queued; a triple fault ends the run with
    /// `KVM_EXIT_SHUTDOWN`).
    pub(super) fn queue_exception(&mut self, vector: u8, error_code: Option<u32>) {
        if self.events.queue_exception(vector, error_code) == Queued::TripleFault {
            self.triple_fault = true;
        }
    }

    /// Moves RIP past an instruction that completed, which ends an STI or
    /// MOV SS interrupt shadow.
    /// With TF set, the instruction's single-step trap is owed
    /// (`Inner::step_trap`).
    pub(super) fn advance_rip(&mut self, rip: u64) {
        if crate::debug::trap_flag(self.arch.rflags()) {
            self.step_trap = true;
        }
        self.arch.set_rip(rip);
        self.arch.set_interrupt_shadow(0);
    }

    /// Before an entry: hands the backend the event to deliver and the
    /// windows to open (`kvm_check_and_inject_events`). `irq_window`:
    /// userspace asked for an exit when it may inject an interrupt.
    pub(super) fn inject_events(&mut self, irq_window: bool) {
        let external = self.apic.as_ref().and_then(|a| a.external());
        // The common exit: nothing owed, nothing set in the VMCB/VMCS.
        if !irq_window && !self.events_armed && self.events.is_idle() && external.is_none() {
            return;
        }
        let shadow = self.arch.interrupt_shadow() != 0;
        // KVM_GUESTDBG_BLOCKIRQ: nothing new but exceptions.
        let block = self.guest_debug.block_irq();
        let allowed = Allowed {
            nmi: !shadow && !block && !self.arch.nmi_masked(),
            irq: !shadow && !block && interrupts_enabled(self.arch.rflags()),
        };
        let first_delivery = self.events.exception.pending;
        let d = self.events.decide(allowed, external);
        if d.took_external {
            if let Some(a) = self.apic.as_mut() {
                a.acknowledge();
            }
        }
        let mut e = d.inject;
        if let Some(ev) = e.as_mut() {
            if ev.kind == events::Kind::Exception {
                // Real mode pushes no error code (kvm_inject_exception);
                // a fault's pushed RFLAGS has RF set when it is raised.
                if self.arch.cr0() & CR0_PE == 0 {
                    ev.error_code = None;
                }
                if first_delivery && events::is_fault(ev.vector) {
                    let rf = self.arch.rflags() | RFLAGS_RF;
                    self.arch.set_rflags(rf);
                }
                // Delivering #DB clears DR7.GD (kvm_check_and_inject_events).
                if first_delivery
                    && ev.vector == events::DB_VECTOR
                    && self.state.dr7 & crate::debug::DR7_GD != 0
                {
                    self.state.dr7 &= !crate::debug::DR7_GD;
                    self.update_dr7();
                }
            }
        }
        self.arch.set_event(e.as_ref());
        let (irq, nmi) = if block {
            (irq_window, false)
        } else {
            (d.irq_window || irq_window, d.nmi_window)
        };
        self.arch.set_windows(irq, nmi);
        self.events_armed = e.is_some() || irq || nmi;
    }

    /// After an exit: what the entry injected was delivered, except what
    /// the exit reports it interrupted (KVM's `complete_interrupts`).
    pub(super) fn complete_events(&mut self) {
        self.events.clear_injected();
        if let Some(e) = self.arch.interrupted_event() {
            self.events.requeue(e);
        }
    }

    /// Whether userspace's PIC vector has a place (`kvm_cpu_accept_dm_intr`):
    /// none queued and, with the APIC in the kernel, LINT0 taking ExtINT.
    /// Only then does `request_interrupt_window` open a window: with LINT0
    /// masked, an open window would exit at once on every entry and the
    /// guest would never run.
    pub(super) fn accepts_pic_interrupt(&self) -> bool {
        self.apic
            .as_ref()
            .is_none_or(|a| a.extint.is_none() && a.lapic.accepts_pic_interrupt())
    }

    /// `kvm_run.ready_for_interrupt_injection`: interrupts are unblocked,
    /// no event is half delivered or pending, and userspace's PIC vector
    /// has a place (none queued; with the APIC in the kernel, also LINT0
    /// taking ExtINT).
    pub(super) fn ready_for_interrupt(&self) -> bool {
        self.accepts_pic_interrupt()
            && interrupts_enabled(self.arch.rflags())
            && self.arch.interrupt_shadow() == 0
            && !self.events.needs_reinjection()
            && !self.events.exception.pending
    }

    /// `KVM_GET_VCPU_EVENTS`, as KVM reports it for a VM that enabled
    /// neither `KVM_CAP_EXCEPTION_PAYLOAD` nor the triple-fault event:
    /// a pending exception shows as injected, and rkvm has no SMM.
    fn vcpu_events(&self) -> KvmVcpuEvents {
        let q = &self.events;
        let ex = &q.exception;
        // #BP and #OF are not reported (no instruction length in the ABI:
        // the instruction raises them again), as KVM.
        let soft = matches!(ex.vector, events::BP_VECTOR | events::OF_VECTOR);
        KvmVcpuEvents {
            exception_injected: u8::from((ex.injected || ex.pending) && !soft),
            exception_nr: ex.vector,
            exception_has_error_code: u8::from(ex.has_error_code),
            exception_error_code: ex.error_code,
            interrupt_injected: u8::from(q.interrupt.injected && !q.interrupt.soft),
            interrupt_nr: q.interrupt.vector,
            interrupt_shadow: self.arch.interrupt_shadow(),
            nmi_injected: u8::from(q.nmi_injected),
            nmi_pending: q.nmi_pending,
            nmi_masked: u8::from(self.arch.nmi_masked()),
            flags: flags::VALID_NMI_PENDING | flags::VALID_SHADOW | flags::VALID_SMM,
            ..Default::default()
        }
    }

    /// `KVM_SET_VCPU_EVENTS`, with KVM's checks (`EINVAL`).
    fn set_vcpu_events(&mut self, e: &KvmVcpuEvents) -> Result {
        let known = flags::VALID_NMI_PENDING
            | flags::VALID_SIPI_VECTOR
            | flags::VALID_SHADOW
            | flags::VALID_SMM
            | flags::VALID_PAYLOAD
            | flags::VALID_TRIPLE_FAULT;
        if e.flags & !known != 0 {
            return Err(EINVAL);
        }
        // Neither KVM_CAP_EXCEPTION_PAYLOAD nor KVM_CAP_X86_TRIPLE_FAULT_EVENT
        // can be enabled here; without them, "pending" is ignored.
        if e.flags & (flags::VALID_PAYLOAD | flags::VALID_TRIPLE_FAULT) != 0 {
            return Err(EINVAL);
        }
        let injected = e.exception_injected != 0;
        if injected && (e.exception_nr > 31 || e.exception_nr == events::NMI_VECTOR) {
            return Err(EINVAL);
        }
        // No SMM: entering it or a pending SMI is refused, as KVM built
        // without CONFIG_KVM_SMM refuses them.
        if e.flags & flags::VALID_SMM != 0
            && (e.smi_smm != 0 || e.smi_pending != 0 || e.smi_smm_inside_nmi != 0)
        {
            return Err(EINVAL);
        }
        let q = &mut self.events;
        q.exception = events::Exception {
            pending: false,
            injected,
            vector: e.exception_nr,
            has_error_code: e.exception_has_error_code != 0,
            error_code: e.exception_error_code,
        };
        q.interrupt = events::Interrupt {
            injected: e.interrupt_injected != 0,
            vector: e.interrupt_nr,
            soft: e.interrupt_soft != 0,
        };
        if e.flags & flags::VALID_SHADOW != 0 {
            self.arch.set_interrupt_shadow(e.interrupt_shadow);
        }
        q.nmi_injected = e.nmi_injected != 0;
        if e.flags & flags::VALID_SIPI_VECTOR != 0 {
            if let Some(a) = self.apic.as_mut() {
                a.sipi_vector = e.sipi_vector as u8;
            }
        }
        let masked = e.nmi_masked != 0;
        if e.flags & flags::VALID_NMI_PENDING != 0 {
            q.nmi_pending = 0;
            q.add_nmis(u32::from(e.nmi_pending), masked);
        }
        self.arch.set_nmi_masked(masked);
        Ok(())
    }
}

impl<B: Backend> Vcpu<B> {
    /// `KVM_INTERRUPT` on a VM without an in-kernel irqchip: the vector is
    /// delivered at the next entry, whatever RFLAGS.IF says (userspace
    /// checks `ready_for_interrupt_injection` first). A second one before
    /// that replaces the first, as in KVM.
    ///
    /// With the APIC in the kernel it is the PIC's vector, taken through
    /// LINT0 (ExtINT); `EEXIST` while one waits, as KVM.
    pub(super) fn interrupt(&self, arg: usize) -> Result<isize> {
        let irq: u32 = uaccess::read(arg)?;
        if irq >= NR_INTERRUPTS {
            return Err(EINVAL);
        }
        let mut inner = self.inner.lock();
        if let Some(a) = inner.apic.as_mut() {
            if a.extint.is_some() {
                return Err(EEXIST);
            }
            a.extint = Some(irq as u8);
            return Ok(0);
        }
        inner.events.interrupt = events::Interrupt {
            injected: true,
            vector: irq as u8,
            soft: false,
        };
        Ok(0)
    }

    /// `KVM_NMI`: one more NMI for the guest (at most two wait).
    pub(super) fn nmi(&self) -> Result<isize> {
        let mut inner = self.inner.lock();
        let masked = inner.arch.nmi_masked();
        inner.events.add_nmis(1, masked);
        Ok(0)
    }

    /// `KVM_GET_VCPU_EVENTS`.
    pub(super) fn get_events(&self, arg: usize) -> Result<isize> {
        let mut inner = self.inner.lock();
        inner.take_mail(&self.bell);
        let e = inner.vcpu_events();
        drop(inner);
        uaccess::write(arg, &e)?;
        Ok(0)
    }

    /// `KVM_SET_VCPU_EVENTS`.
    pub(super) fn set_events(&self, arg: usize) -> Result<isize> {
        let e: KvmVcpuEvents = uaccess::read(arg)?;
        self.inner.lock().set_vcpu_events(&e)?;
        Ok(0)
    }
}
