//! Event injection as KVM's `x86.c` does it: the queue of one exception,
//! one external interrupt and the NMIs a vCPU owes its guest, the order in
//! which they are injected (`kvm_check_and_inject_events`), how an exit
//! that interrupted a delivery puts the event back (`complete_interrupts`),
//! how a second exception merges with the first (`kvm_multiple_exception`),
//! and how many NMIs may wait (`process_nmi`).
//!
//! The vendor backends only encode an [`Event`] into their VMCB or VMCS and
//! report the one an exit interrupted; both use the same type numbers.

/// Exception vectors.
pub const DE_VECTOR: u8 = 0;
/// Debug exception.
pub const DB_VECTOR: u8 = 1;
/// The NMI vector.
pub const NMI_VECTOR: u8 = 2;
/// Breakpoint (INT3).
pub const BP_VECTOR: u8 = 3;
/// Overflow (INTO).
pub const OF_VECTOR: u8 = 4;
/// Invalid opcode.
pub const UD_VECTOR: u8 = 6;
/// Double fault.
pub const DF_VECTOR: u8 = 8;
/// Invalid TSS.
pub const TS_VECTOR: u8 = 10;
/// Segment not present.
pub const NP_VECTOR: u8 = 11;
/// Stack fault.
pub const SS_VECTOR: u8 = 12;
/// General protection.
pub const GP_VECTOR: u8 = 13;
/// Page fault.
pub const PF_VECTOR: u8 = 14;
/// Alignment check.
pub const AC_VECTOR: u8 = 17;
/// Machine check.
pub const MC_VECTOR: u8 = 18;

/// `kvm_vcpu_events.interrupt.shadow`: blocking by MOV SS.
pub const SHADOW_MOV_SS: u8 = 1;
/// `kvm_vcpu_events.interrupt.shadow`: blocking by STI.
pub const SHADOW_STI: u8 = 2;

/// How an event is delivered: the type field of SVM's EVENTINJ and
/// EXITINTINFO and of VT-x's interruption information, which agree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// An external (maskable) interrupt.
    External = 0,
    /// A non-maskable interrupt.
    Nmi = 2,
    /// A hardware exception.
    Exception = 3,
    /// INT n.
    SoftInt = 4,
    /// INT1 (ICEBP), VT-x only.
    PrivSoft = 5,
    /// INT3 or INTO.
    SoftException = 6,
}

impl Kind {
    /// The kind a type field (bits 10:8) names.
    pub fn from_type(t: u32) -> Option<Self> {
        Some(match t & 7 {
            0 => Self::External,
            2 => Self::Nmi,
            3 => Self::Exception,
            4 => Self::SoftInt,
            5 => Self::PrivSoft,
            6 => Self::SoftException,
            _ => return None,
        })
    }

    /// Delivered by an instruction (RIP still points at it when the
    /// delivery is interrupted, so it is executed again, not re-injected).
    pub fn is_soft(self) -> bool {
        matches!(self, Self::SoftInt | Self::PrivSoft | Self::SoftException)
    }
}

/// One event to inject, or one whose delivery an exit interrupted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// How it is delivered.
    pub kind: Kind,
    /// The IDT vector.
    pub vector: u8,
    /// The error code pushed, if any.
    pub error_code: Option<u32>,
}

impl Event {
    /// Decodes the shared interruption-information layout (vector in bits
    /// 7:0, type in 10:8, error code valid in 11, valid in 31): `None` if
    /// not valid.
    pub fn from_info(info: u32, error_code: u32) -> Option<Self> {
        if info & INFO_VALID == 0 {
            return None;
        }
        Some(Self {
            kind: Kind::from_type(info >> 8)?,
            vector: info as u8,
            error_code: (info & INFO_ERROR_CODE != 0).then_some(error_code),
        })
    }

    /// The interruption-information word for this event.
    pub fn info(&self) -> u32 {
        let err = if self.error_code.is_some() {
            INFO_ERROR_CODE
        } else {
            0
        };
        INFO_VALID | err | ((self.kind as u32) << 8) | u32::from(self.vector)
    }
}

/// Interruption information: valid.
pub const INFO_VALID: u32 = 1 << 31;
/// Interruption information: an error code is delivered.
pub const INFO_ERROR_CODE: u32 = 1 << 11;

/// The queued exception (KVM's `kvm_queued_exception`). The vector and
/// error code stay when the exception is gone, as KVM's do (and as
/// `KVM_GET_VCPU_EVENTS` shows).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Exception {
    /// Raised, not yet delivered: delivery starts at the next entry.
    pub pending: bool,
    /// Delivery started (and an exit interrupted it): it is injected again.
    pub injected: bool,
    /// The vector.
    pub vector: u8,
    /// An error code is pushed.
    pub has_error_code: bool,
    /// The error code.
    pub error_code: u32,
}

/// The queued external interrupt (KVM's `kvm_queued_interrupt`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Interrupt {
    /// To be injected on the next entry.
    pub injected: bool,
    /// The vector.
    pub vector: u8,
    /// A software interrupt (from `KVM_SET_VCPU_EVENTS`).
    pub soft: bool,
}

/// What a new exception did to the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Queued {
    /// It (or the #DF it made) waits for the next entry.
    Queued,
    /// It came on top of a #DF: the vCPU shuts down.
    TripleFault,
}

/// What the vCPU allows now, from its RFLAGS, interrupt shadow and NMI
/// blocking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Allowed {
    /// An NMI could be delivered (not blocked by an NMI or a shadow).
    pub nmi: bool,
    /// A maskable interrupt could be delivered (IF set, no shadow).
    pub irq: bool,
}

/// What to do at this entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Decision {
    /// The event to inject, if any.
    pub inject: Option<Event>,
    /// The guest must exit when NMIs are unblocked.
    pub nmi_window: bool,
    /// The guest must exit when interrupts are unblocked.
    pub irq_window: bool,
    /// `inject` is the `external` vector [`Events::decide`] was given: the
    /// interrupt controller must now acknowledge it.
    pub took_external: bool,
}

/// A vCPU's queue of events (the part of KVM's `kvm_vcpu_arch` that
/// `KVM_GET/SET_VCPU_EVENTS` shows).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Events {
    /// The exception.
    pub exception: Exception,
    /// The external interrupt.
    pub interrupt: Interrupt,
    /// An NMI's delivery started and an exit interrupted it.
    pub nmi_injected: bool,
    /// NMIs waiting to be delivered (at most 2).
    pub nmi_pending: u8,
}

/// Exception classes for merging (SDM "Conditions for Generating a Double
/// Fault").
#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Benign,
    Contributory,
    PageFault,
}

fn class(vector: u8) -> Class {
    match vector {
        PF_VECTOR => Class::PageFault,
        DE_VECTOR | TS_VECTOR | NP_VECTOR | SS_VECTOR | GP_VECTOR => Class::Contributory,
        _ => Class::Benign,
    }
}

/// Whether an exception is fault-like (delivery sets RFLAGS.RF in the
/// pushed image, as KVM does): every vector but the traps (#BP, #OF), the
/// aborts (#DF, #MC) and #DB, which is either.
pub fn is_fault(vector: u8) -> bool {
    !matches!(
        vector,
        DB_VECTOR | NMI_VECTOR | BP_VECTOR | OF_VECTOR | DF_VECTOR | MC_VECTOR
    ) && vector < 32
}

impl Events {
    /// An event is half-delivered and must be injected again before any
    /// new one (`kvm_event_needs_reinjection`).
    pub fn needs_reinjection(&self) -> bool {
        self.exception.injected || self.interrupt.injected || self.nmi_injected
    }

    /// Nothing to deliver and nothing half delivered.
    pub fn is_idle(&self) -> bool {
        !self.needs_reinjection() && !self.exception.pending && self.nmi_pending == 0
    }

    /// Forgets what the last entry injected (it was delivered): the start
    /// of KVM's `complete_interrupts`; [`Events::requeue`] then puts back
    /// what the exit interrupted.
    pub fn clear_injected(&mut self) {
        self.nmi_injected = false;
        self.exception.pending = false;
        self.exception.injected = false;
        self.interrupt.injected = false;
    }

    /// Puts back an event whose delivery the exit interrupted. Software
    /// events are not: their instruction runs again. An interrupted NMI
    /// leaves NMIs unblocked, so the caller clears the vendor's blocking.
    pub fn requeue(&mut self, e: Event) {
        match e.kind {
            Kind::Nmi => self.nmi_injected = true,
            Kind::Exception => {
                self.exception = Exception {
                    pending: false,
                    injected: true,
                    vector: e.vector,
                    has_error_code: e.error_code.is_some(),
                    error_code: e.error_code.unwrap_or(0),
                }
            }
            Kind::External => {
                self.interrupt = Interrupt {
                    injected: true,
                    vector: e.vector,
                    soft: false,
                }
            }
            Kind::SoftInt | Kind::PrivSoft | Kind::SoftException => {}
        }
    }

    /// Raises an exception on top of whatever is queued, as
    /// `kvm_multiple_exception`: a contributory exception on a
    /// contributory one, or anything but a benign one on a #PF, becomes
    /// #DF; anything on a #DF is a triple fault; otherwise the new one
    /// replaces the old (re-executing the instruction regenerates it).
    pub fn queue_exception(&mut self, vector: u8, error_code: Option<u32>) -> Queued {
        let ex = &mut self.exception;
        if ex.pending || ex.injected {
            if ex.vector == DF_VECTOR {
                return Queued::TripleFault;
            }
            let (old, new) = (class(ex.vector), class(vector));
            if (old == Class::Contributory && new == Class::Contributory)
                || (old == Class::PageFault && new != Class::Benign)
            {
                // The first one is replaced, so the #DF does not look
                // like a fault on top of a fault.
                ex.pending = false;
                ex.injected = false;
                return self.queue_exception(DF_VECTOR, Some(0));
            }
        }
        self.exception = Exception {
            pending: true,
            injected: false,
            vector,
            has_error_code: error_code.is_some(),
            error_code: error_code.unwrap_or(0),
        };
        Queued::Queued
    }

    /// Adds `n` NMIs (`KVM_NMI`, or `KVM_SET_VCPU_EVENTS`' count), keeping
    /// at most two waiting while NMIs are unblocked and none is half
    /// delivered, else one (`process_nmi`).
    pub fn add_nmis(&mut self, n: u32, masked: bool) {
        let limit = if masked || self.nmi_injected { 1 } else { 2 };
        let total = u32::from(self.nmi_pending).saturating_add(n);
        self.nmi_pending = total.min(limit) as u8;
    }

    /// Chooses the event to inject at this entry and which windows to
    /// open, in `kvm_check_and_inject_events`' order: first what must be
    /// injected again, then a pending exception, then an NMI, then
    /// `external` (the vector an interrupt controller would give, `None`
    /// without one). Updates the queue as if the event was injected.
    pub fn decide(&mut self, allowed: Allowed, external: Option<u8>) -> Decision {
        let mut d = Decision::default();
        let ex = self.exception;
        if ex.injected {
            d.inject = Some(ex.event());
        } else if ex.pending {
            // Injected below, ahead of any re-injected NMI or interrupt.
        } else if self.nmi_injected {
            d.inject = Some(NMI);
        } else if self.interrupt.injected {
            d.inject = Some(self.interrupt.event());
        }
        let mut can_inject = !self.needs_reinjection();
        if self.exception.pending {
            self.exception.pending = false;
            self.exception.injected = true;
            d.inject = Some(self.exception.event());
            can_inject = false;
        }
        if self.nmi_pending > 0 {
            if can_inject && allowed.nmi {
                self.nmi_pending -= 1;
                self.nmi_injected = true;
                d.inject = Some(NMI);
                can_inject = false;
            }
            d.nmi_window = self.nmi_pending > 0;
        }
        if let Some(vector) = external {
            if can_inject && allowed.irq {
                self.interrupt = Interrupt {
                    injected: true,
                    vector,
                    soft: false,
                };
                d.inject = Some(self.interrupt.event());
                d.took_external = true;
            } else {
                d.irq_window = true;
            }
        }
        d
    }
}

/// The NMI as an event.
const NMI: Event = Event {
    kind: Kind::Nmi,
    vector: NMI_VECTOR,
    error_code: None,
};

impl Exception {
    fn event(&self) -> Event {
        Event {
            kind: Kind::Exception,
            vector: self.vector,
            error_code: self.has_error_code.then_some(self.error_code),
        }
    }
}

impl Interrupt {
    fn event(&self) -> Event {
        Event {
            // rkvm cannot re-execute a software interrupt userspace set
            // (it has no instruction length for it): it is delivered as
            // an external one, which differs only in the IDT gate's DPL
            // check.
            kind: Kind::External,
            vector: self.vector,
            error_code: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOTH: Allowed = Allowed {
        nmi: true,
        irq: true,
    };
    const NONE: Allowed = Allowed {
        nmi: false,
        irq: false,
    };

    fn ext(v: u8) -> Event {
        Event {
            kind: Kind::External,
            vector: v,
            error_code: None,
        }
    }

    #[test]
    fn info_round_trips_and_matches_both_vendors_layout() {
        let e = Event {
            kind: Kind::Exception,
            vector: GP_VECTOR,
            error_code: Some(0x1234),
        };
        assert_eq!(e.info(), 0x8000_0b0d);
        assert_eq!(Event::from_info(e.info(), 0x1234), Some(e));
        assert_eq!(ext(0x20).info(), 0x8000_0020);
        assert_eq!(NMI.info(), 0x8000_0202);
        assert_eq!(Event::from_info(0x0000_0b0d, 0), None);
        // Type 1 and 7 are reserved (or "other event" on VT-x).
        assert_eq!(Event::from_info(0x8000_0100, 0), None);
        assert_eq!(Event::from_info(0x8000_0700, 0), None);
    }

    #[test]
    fn an_interrupted_delivery_is_injected_again_before_anything_new() {
        let mut q = Events {
            nmi_pending: 1,
            ..Default::default()
        };
        q.clear_injected();
        q.requeue(ext(0x30));
        let d = q.decide(BOTH, Some(0x40));
        assert_eq!(d.inject, Some(ext(0x30)));
        // The NMI and the new interrupt wait for windows; the controller
        // keeps 0x40.
        assert!(d.nmi_window && d.irq_window && !d.took_external);
        assert_eq!(q.nmi_pending, 1);
    }

    #[test]
    fn soft_events_are_executed_again_not_requeued() {
        let mut q = Events::default();
        for kind in [Kind::SoftInt, Kind::PrivSoft, Kind::SoftException] {
            q.requeue(Event {
                kind,
                vector: 3,
                error_code: None,
            });
        }
        assert!(!q.needs_reinjection());
    }

    #[test]
    fn pending_exception_goes_first_then_nmi_then_interrupt() {
        let mut q = Events::default();
        q.queue_exception(GP_VECTOR, Some(0));
        q.add_nmis(1, false);
        let d = q.decide(BOTH, Some(0x20));
        assert_eq!(d.inject.unwrap().vector, GP_VECTOR);
        assert!(q.exception.injected && !q.exception.pending);
        assert!(d.nmi_window && d.irq_window);
        q.clear_injected();
        let d = q.decide(BOTH, Some(0x20));
        assert_eq!(d.inject, Some(NMI));
        assert!(q.nmi_injected && !d.nmi_window);
        assert!(d.irq_window);
        q.clear_injected();
        let d = q.decide(BOTH, Some(0x20));
        assert_eq!(d.inject, Some(ext(0x20)));
        assert_eq!(
            d,
            Decision {
                inject: Some(ext(0x20)),
                nmi_window: false,
                irq_window: false,
                took_external: true,
            }
        );
    }

    #[test]
    fn blocked_events_open_windows_and_inject_nothing() {
        let mut q = Events::default();
        q.add_nmis(1, false);
        let d = q.decide(NONE, Some(0x20));
        assert_eq!(d.inject, None);
        assert!(d.nmi_window && d.irq_window);
        assert_eq!(q.nmi_pending, 1);
    }

    #[test]
    fn userspace_interrupt_is_injected_whatever_if_says() {
        // KVM_INTERRUPT without an irqchip marks the interrupt injected.
        let mut q = Events {
            interrupt: Interrupt {
                injected: true,
                vector: 0x21,
                soft: false,
            },
            ..Default::default()
        };
        assert_eq!(q.decide(NONE, None).inject, Some(ext(0x21)));
    }

    #[test]
    fn exceptions_merge_as_the_sdm_says() {
        let mut q = Events::default();
        assert_eq!(q.queue_exception(GP_VECTOR, Some(0)), Queued::Queued);
        assert_eq!(q.queue_exception(NP_VECTOR, Some(8)), Queued::Queued);
        assert_eq!(q.exception.vector, DF_VECTOR);
        assert_eq!(q.exception.error_code, 0);
        assert!(q.exception.pending && !q.exception.injected);
        assert_eq!(q.queue_exception(UD_VECTOR, None), Queued::TripleFault);

        // #PF then #GP: #DF; #PF then #PF: #DF; benign on #PF: replaced.
        for (second, merged) in [
            (GP_VECTOR, DF_VECTOR),
            (PF_VECTOR, DF_VECTOR),
            (UD_VECTOR, UD_VECTOR),
        ] {
            let mut q = Events::default();
            q.queue_exception(PF_VECTOR, Some(2));
            q.queue_exception(second, None);
            assert_eq!(q.exception.vector, merged);
        }
        // Contributory on benign: replaced.
        let mut q = Events::default();
        q.queue_exception(UD_VECTOR, None);
        q.queue_exception(GP_VECTOR, Some(0));
        assert_eq!(q.exception.vector, GP_VECTOR);
        // An injected (interrupted) #GP merges too.
        let mut q = Events::default();
        q.requeue(Event {
            kind: Kind::Exception,
            vector: GP_VECTOR,
            error_code: Some(0),
        });
        q.queue_exception(SS_VECTOR, Some(0));
        assert_eq!(q.exception.vector, DF_VECTOR);
        assert!(!q.exception.injected);
    }

    #[test]
    fn at_most_two_nmis_wait_and_one_while_blocked() {
        let mut q = Events::default();
        q.add_nmis(3, false);
        assert_eq!(q.nmi_pending, 2);
        let mut q = Events::default();
        q.add_nmis(2, true);
        assert_eq!(q.nmi_pending, 1);
        let mut q = Events {
            nmi_injected: true,
            ..Default::default()
        };
        q.add_nmis(u32::MAX, false);
        assert_eq!(q.nmi_pending, 1);
    }

    #[test]
    fn idle_means_nothing_to_inject() {
        let mut q = Events::default();
        assert!(q.is_idle());
        q.add_nmis(1, false);
        assert!(!q.is_idle());
        q.decide(BOTH, None);
        assert!(!q.is_idle());
        q.clear_injected();
        assert!(q.is_idle());
        q.queue_exception(UD_VECTOR, None);
        assert!(!q.is_idle());
    }

    #[test]
    fn the_gone_exception_keeps_its_vector() {
        let mut q = Events::default();
        q.queue_exception(PF_VECTOR, Some(6));
        q.decide(BOTH, None);
        q.clear_injected();
        assert_eq!(q.exception.vector, PF_VECTOR);
        assert!(!q.exception.pending && !q.exception.injected);
        assert_eq!(q.decide(BOTH, None).inject, None);
    }

    #[test]
    fn fault_like_exceptions() {
        assert!(is_fault(GP_VECTOR) && is_fault(PF_VECTOR) && is_fault(UD_VECTOR));
        assert!(!is_fault(DB_VECTOR) && !is_fault(BP_VECTOR) && !is_fault(DF_VECTOR));
        assert!(!is_fault(NMI_VECTOR) && !is_fault(32));
    }
}
