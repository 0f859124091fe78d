//! Interrupt state: the IRR/ISR/TMR banks, task and processor priority,
//! acceptance of delivered and local interrupts, acknowledge and EOI.

use super::{
    reg, Accepted, Bank, DeliveryMode, Effects, Eoi, Lapic, Lvt, Trigger, LVT_LEVEL, LVT_MASKED,
};

impl Lapic {
    pub(super) fn test_vector(&self, bank: Bank, v: u8) -> bool {
        self.reg(bank as u32 + u32::from(v >> 5) * 0x10) & (1 << (v & 31)) != 0
    }

    pub(super) fn put_vector(&mut self, bank: Bank, v: u8, set: bool) {
        let off = bank as u32 + u32::from(v >> 5) * 0x10;
        let bit = 1 << (v & 31);
        let w = self.reg(off);
        self.set_reg(off, if set { w | bit } else { w & !bit });
    }

    pub(super) fn highest(&self, bank: Bank) -> Option<u8> {
        (0..8u8).rev().find_map(|i| {
            let w = self.reg(bank as u32 + u32::from(i) * 0x10);
            // w != 0, so leading_zeros() <= 31.
            (w != 0).then(|| i * 32 + (31 - w.leading_zeros() as u8))
        })
    }

    /// The highest vector in IRR.
    pub fn highest_irr(&self) -> Option<u8> {
        self.highest(Bank::Irr)
    }

    /// The highest vector in ISR.
    pub fn highest_isr(&self) -> Option<u8> {
        self.highest(Bank::Isr)
    }

    /// Whether `vector` is requested or in service (`kvm_apic_pending_eoi`):
    /// an EOI for it may still come.
    pub fn pending_eoi(&self, vector: u8) -> bool {
        self.test_vector(Bank::Irr, vector) || self.test_vector(Bank::Isr, vector)
    }

    /// The task priority (TPR bits 7:0).
    pub fn tpr(&self) -> u8 {
        self.reg(reg::TPR) as u8
    }

    /// The processor priority (`__apic_update_ppr`): TPR if its class is at
    /// least that of the highest in-service vector, else that vector's
    /// class with sub-class 0.
    pub fn ppr(&self) -> u8 {
        let tpr = self.reg(reg::TPR) & 0xff;
        let isr = self.highest_isr().map_or(0, u32::from);
        let ppr = if tpr & 0xf0 >= isr & 0xf0 {
            tpr
        } else {
            isr & 0xf0
        };
        ppr as u8
    }

    pub(super) fn update_ppr(&mut self) {
        let p = self.ppr();
        self.set_reg(reg::PPR, u32::from(p));
    }

    /// The interrupt the vCPU should take now (`kvm_apic_has_interrupt`):
    /// the highest IRR vector whose class is above PPR, if the APIC is
    /// hardware-enabled. As KVM, software enable is not checked here: a
    /// software-disabled APIC accepts no fixed interrupts, but keeps what
    /// its IRR already held.
    pub fn pending_vector(&self) -> Option<u8> {
        if !self.hw_enabled() {
            return None;
        }
        let v = self.highest_irr()?;
        (v & 0xf0 > self.ppr()).then_some(v)
    }

    /// Take the pending interrupt (`kvm_get_apic_interrupt` +
    /// `kvm_apic_ack_interrupt`): its IRR bit moves to ISR and PPR rises.
    /// `None` if nothing is pending.
    pub fn ack(&mut self) -> Option<u8> {
        let v = self.pending_vector()?;
        self.put_vector(Bank::Irr, v, false);
        self.put_vector(Bank::Isr, v, true);
        self.update_ppr();
        Some(v)
    }

    /// An EOI (a write to the EOI register, or the kernel's own on PV/
    /// accelerated paths): retire the highest in-service vector.
    pub fn eoi(&mut self) -> Effects {
        let before = self.before();
        let eoi = self.do_eoi();
        self.after(
            before,
            Effects {
                eoi,
                ..Effects::default()
            },
        )
    }

    /// `apic_set_eoi`; with nothing in service (e.g. a spurious EOI) it
    /// does nothing.
    pub(super) fn do_eoi(&mut self) -> Option<Eoi> {
        let vector = self.highest_isr()?;
        self.put_vector(Bank::Isr, vector, false);
        self.update_ppr();
        Some(Eoi {
            vector,
            level: self.test_vector(Bank::Tmr, vector),
        })
    }

    /// CR8 as the guest reads it: TPR bits 7:4 (`kvm_lapic_get_cr8`).
    pub fn cr8(&self) -> u64 {
        u64::from(self.reg(reg::TPR) & 0xf0) >> 4
    }

    /// A CR8 write: TPR = (cr8 & 0xf) << 4 (`kvm_lapic_set_tpr`; the rest
    /// of CR8 is the caller's to check).
    pub fn set_cr8(&mut self, cr8: u64) -> Effects {
        let before = self.before();
        self.set_reg(reg::TPR, ((cr8 & 0xf) as u32) << 4);
        self.update_ppr();
        self.after(before, Effects::default())
    }

    /// A TPR the guest wrote to its virtual-APIC page (`apic_set_tpr` from
    /// `kvm_lapic_sync_from_vapic`).
    pub fn set_tpr(&mut self, tpr: u8) -> Effects {
        let before = self.before();
        self.set_reg(reg::TPR, u32::from(tpr));
        self.update_ppr();
        self.after(before, Effects::default())
    }

    /// The word KVM writes to the guest's virtual-APIC page before each
    /// entry (`kvm_lapic_sync_to_vapic`): TPR in bits 7:0, the highest
    /// in-service vector's class in 15:12, the highest requested vector in
    /// 31:24.
    pub fn vapic_word(&self) -> u32 {
        let isr = u32::from(self.highest_isr().unwrap_or(0));
        let irr = u32::from(self.highest_irr().unwrap_or(0));
        (self.reg(reg::TPR) & 0xff) | ((isr & 0xf0) << 8) | (irr << 24)
    }

    /// An interrupt delivered to this APIC (`__apic_accept_irq`; the
    /// caller has matched the destination). Fixed and lowest-priority
    /// interrupts need the APIC enabled (both enables) and, when
    /// level-triggered, `level` asserted; they set IRR and make TMR follow
    /// the trigger. INIT needs edge or assert. NMI, SMI, SIPI and remote
    /// read are always accepted, ExtINT never (the PIC's vector arrives by
    /// [`Lapic::accepts_pic_interrupt`] instead).
    pub fn accept(
        &mut self,
        mode: DeliveryMode,
        vector: u8,
        level: bool,
        trigger: Trigger,
    ) -> Accepted {
        if mode == DeliveryMode::LowestPriority {
            // Counts even if dropped, as KVM; wraps, being only compared.
            self.arb_prio = self.arb_prio.wrapping_add(1);
        }
        if !self.accepts(mode, level, trigger) {
            return Accepted::Dropped;
        }
        match mode {
            DeliveryMode::Fixed | DeliveryMode::LowestPriority => {
                self.put_vector(Bank::Tmr, vector, trigger == Trigger::Level);
                self.put_vector(Bank::Irr, vector, true);
                Accepted::Interrupt(vector)
            }
            DeliveryMode::RemoteRead => Accepted::RemoteRead,
            DeliveryMode::Smi => Accepted::Smi,
            DeliveryMode::Nmi => Accepted::Nmi,
            DeliveryMode::Init => Accepted::Init,
            DeliveryMode::ExtInt => Accepted::Dropped,
            DeliveryMode::StartUp => Accepted::Sipi(vector),
        }
    }

    /// Whether [`Lapic::accept`] would deliver this interrupt rather than
    /// drop it (KVM's `kvm_apic_set_irq` result), without delivering it.
    pub fn accepts(&self, mode: DeliveryMode, level: bool, trigger: Trigger) -> bool {
        match mode {
            DeliveryMode::Fixed | DeliveryMode::LowestPriority => {
                (trigger == Trigger::Edge || level) && self.enabled()
            }
            DeliveryMode::Init => trigger == Trigger::Edge || level,
            DeliveryMode::ExtInt => false,
            _ => true,
        }
    }

    /// A local interrupt from one LVT source (`kvm_apic_local_deliver`):
    /// nothing if the APIC is hardware-disabled, the entry masked or
    /// absent; else the entry's vector, delivery mode and trigger (always
    /// asserted) go through [`Lapic::accept`]. An entry in ExtINT mode is
    /// dropped: that is how the PIC is wired, see
    /// [`Lapic::accepts_pic_interrupt`]. An accepted performance-counter
    /// interrupt masks LVTPC for an Intel-compatible guest.
    pub fn local_interrupt(&mut self, lvt: Lvt) -> Accepted {
        if !self.lvt_supported(lvt) || !self.hw_enabled() {
            return Accepted::Dropped;
        }
        let v = self.reg(lvt.offset());
        if v & LVT_MASKED != 0 {
            return Accepted::Dropped;
        }
        let trigger = if v & LVT_LEVEL != 0 {
            Trigger::Level
        } else {
            Trigger::Edge
        };
        let r = self.accept(DeliveryMode::from_bits(v), v as u8, true, trigger);
        if r.delivered() && lvt == Lvt::PerfCounter && self.cfg.intel_compatible {
            self.set_reg(reg::LVT_PMC, v | LVT_MASKED);
        }
        r
    }

    /// Whether the PIC's interrupt may be taken (`kvm_apic_accept_pic_intr`):
    /// the APIC is hardware-disabled, or LINT0 is unmasked in ExtINT mode.
    pub fn accepts_pic_interrupt(&self) -> bool {
        let lvt0 = self.reg(reg::LVT_LINT0);
        !self.hw_enabled()
            || (lvt0 & LVT_MASKED == 0 && DeliveryMode::from_bits(lvt0) == DeliveryMode::ExtInt)
    }
}
