//! IPIs out of the ICR, and which APICs a message reaches
//! (`kvm_apic_match_dest` and its helpers).

use super::{
    reg, DeliveryMode, DestMode, Ipi, Lapic, Sender, Shorthand, Trigger, DFR_CLUSTER, VECTOR_MASK,
};

/// xAPIC broadcast destination (`APIC_BROADCAST`).
const BROADCAST: u32 = 0xff;
/// x2APIC broadcast destination (`X2APIC_BROADCAST`).
const X2APIC_BROADCAST: u32 = u32::MAX;

impl Ipi {
    /// The IPI an ICR write sends (`kvm_icr_to_lapic_irq`): `low` is ICR
    /// bits 31:0; the destination is `high` whole in x2APIC mode, its bits
    /// 31:24 in xAPIC mode (`high` being ICR2).
    pub const fn from_icr(low: u32, high: u32, x2apic: bool) -> Ipi {
        Ipi {
            dest: if x2apic { high } else { high >> 24 },
            dest_mode: if low & (1 << 11) != 0 {
                DestMode::Logical
            } else {
                DestMode::Physical
            },
            shorthand: match (low >> 18) & 3 {
                0 => Shorthand::None,
                1 => Shorthand::ToSelf,
                2 => Shorthand::All,
                _ => Shorthand::AllButSelf,
            },
            delivery_mode: DeliveryMode::from_bits(low),
            vector: (low & VECTOR_MASK) as u8,
            level: low & (1 << 14) != 0,
            trigger: if low & (1 << 15) != 0 {
                Trigger::Level
            } else {
                Trigger::Edge
            },
        }
    }
}

impl Lapic {
    /// Whether a message to `dest` in `mode` with `shorthand`, from
    /// `sender`, is for this APIC (`kvm_apic_match_dest`, KVM's slow path).
    ///
    /// * Physical: the broadcast ID (0xff, or 0xffff_ffff in x2APIC mode)
    ///   matches all; else the x2APIC ID (the vCPU id) in x2APIC mode or
    ///   when `dest` > 0xff (KVM's hotplug hack), else the xAPIC ID.
    /// * Logical, x2APIC: broadcast, or LDR's cluster (31:16) equal to
    ///   `dest`'s and a common bit in 15:0.
    /// * Logical, xAPIC: broadcast; flat DFR: a common bit with LDR 31:24;
    ///   cluster DFR: same cluster (high nibbles) and a common bit in the
    ///   low nibbles; any other DFR model matches nothing.
    /// * A device's 0xff is also a broadcast for an x2APIC-mode APIC under
    ///   KVM's broadcast quirk ([`Sender::Device`]).
    /// * Shorthands: self is the sender only (never a device's), all is
    ///   everyone, all-but-self everyone else.
    ///
    /// As KVM's delivery loop, callers skip APICs that are hardware-
    /// disabled ([`Lapic::hw_enabled`]), and for lowest priority also the
    /// software-disabled ones.
    pub fn matches(&self, dest: u32, mode: DestMode, shorthand: Shorthand, sender: Sender) -> bool {
        let is_self = matches!(sender, Sender::Apic { is_self: true });
        match shorthand {
            Shorthand::None => {}
            Shorthand::ToSelf => return is_self,
            Shorthand::All => return true,
            Shorthand::AllButSelf => return !is_self,
        }
        // kvm_apic_mda: the broadcast quirk for non-IPI messages.
        let mda = match sender {
            Sender::Device {
                broadcast_quirk: true,
            } if dest == BROADCAST && self.x2apic_mode() => X2APIC_BROADCAST,
            _ => dest,
        };
        let broadcast = if self.x2apic_mode() {
            X2APIC_BROADCAST
        } else {
            BROADCAST
        };
        if mda == broadcast {
            return true;
        }
        match mode {
            DestMode::Physical if self.x2apic_mode() || mda > 0xff => mda == self.vcpu_id,
            DestMode::Physical => mda == u32::from(self.xapic_id()),
            DestMode::Logical => self.match_logical(mda),
        }
    }

    /// `kvm_apic_match_logical_addr` after the broadcast check.
    fn match_logical(&self, mda: u32) -> bool {
        let ldr = self.reg(reg::LDR);
        if self.x2apic_mode() {
            return ldr >> 16 == mda >> 16 && ldr & mda & 0xffff != 0;
        }
        let id = ldr >> 24;
        match self.reg(reg::DFR) {
            u32::MAX => id & mda != 0,
            DFR_CLUSTER => id >> 4 == mda >> 4 && id & mda & 0xf != 0,
            _ => false,
        }
    }

    /// KVM's arbitration counter (`apic_arb_prio`): lowest-priority
    /// interrupts this APIC was offered since reset or `KVM_SET_LAPIC`.
    /// KVM picks the APIC with the smallest count only with its
    /// `vector_hashing` module parameter off; by default it uses
    /// [`lowest_priority_index`]. Neither is the SDM's arbitration by
    /// TPR/PPR, and APR reads 0.
    pub fn arbitration_priority(&self) -> u32 {
        self.arb_prio
    }
}

/// KVM's default lowest-priority choice (vector hashing,
/// `kvm_vector_to_index`): among the `candidates` matching,
/// software-enabled APICs in vCPU order, the one at index
/// `vector % candidates`; `None` if there is none. (KVM first turns a
/// lowest-priority message to physical 0xff into a fixed broadcast.)
pub fn lowest_priority_index(vector: u8, candidates: usize) -> Option<usize> {
    usize::from(vector).checked_rem(candidates)
}
