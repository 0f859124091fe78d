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

/// Whether a message to `dest` counts as a broadcast
/// (`kvm_apic_is_broadcast_dest`), which sends it down KVM's slow path (so
/// it reports -1, not 0, when no APIC takes it). `sender_x2apic` is
/// whether the sending APIC is in x2APIC mode, `None` for a device;
/// `all_x2apic` whether every software-enabled APIC of the VM is in x2APIC
/// mode (KVM's map in x2APIC logical mode), and there is one. Without the
/// quirk (`KVM_X2APIC_API_DISABLE_BROADCAST_QUIRK`) 0xff is a broadcast
/// only while some APIC is in xAPIC mode.
pub const fn is_broadcast(
    dest: u32,
    sender_x2apic: Option<bool>,
    broadcast_quirk: bool,
    all_x2apic: bool,
) -> bool {
    if !broadcast_quirk {
        return (dest == BROADCAST && !all_x2apic) || dest == X2APIC_BROADCAST;
    }
    match sender_x2apic {
        Some(true) => dest == X2APIC_BROADCAST,
        _ => dest == BROADCAST,
    }
}

/// An MSI as the interrupt it sends (`kvm_msi_to_lapic_irq`), and whether
/// its redirection hint asks for lowest-priority selection.
///
/// Address bits 19:12 are the destination, bit 3 the redirection hint,
/// bit 2 logical mode; with `x2apic_format` (`KVM_X2APIC_API_USE_32BIT_IDS`)
/// `address_hi` bits 31:8 extend the destination. Data bits 7:0 are the
/// vector, 10:8 the delivery mode, 15 the trigger. An MSI is always an
/// assert (KVM sets `level` to 1) and has no shorthand.
pub const fn msi_to_ipi(
    address_lo: u32,
    address_hi: u32,
    data: u32,
    x2apic_format: bool,
) -> (Ipi, bool) {
    let mut dest = (address_lo >> 12) & 0xff;
    if x2apic_format {
        dest |= (address_hi >> 8) << 8;
    }
    let ipi = Ipi {
        dest,
        dest_mode: if address_lo & (1 << 2) != 0 {
            DestMode::Logical
        } else {
            DestMode::Physical
        },
        shorthand: Shorthand::None,
        delivery_mode: DeliveryMode::from_bits(data),
        vector: (data & VECTOR_MASK) as u8,
        level: true,
        trigger: if data & (1 << 15) != 0 {
            Trigger::Level
        } else {
            Trigger::Edge
        },
    };
    (ipi, address_lo & (1 << 3) != 0)
}

/// Who is offered a message: KVM's slow delivery loop
/// (`__kvm_irq_delivery_to_apic` with vector hashing, its default).
///
/// `apics` are the VM's APICs in vCPU order (cloned: it is walked twice);
/// `sender` is the index of the sending APIC for an IPI, `None` for a
/// device (MSI, IOAPIC), which matches under `broadcast_quirk`. `redirect`
/// is an MSI's redirection hint. `deliver` is called with the index of
/// each APIC to receive the message and the delivery mode to use (lowest
/// priority to physical 0xff becomes a fixed broadcast, as KVM), which is
/// also returned.
///
/// Hardware-disabled APICs receive nothing. A fixed (or NMI, INIT, ...)
/// message goes to every match; a lowest-priority one (or any with
/// `redirect`) to one software-enabled match, chosen by
/// [`lowest_priority_index`].
pub fn deliver<'a, I>(
    apics: I,
    ipi: &Ipi,
    redirect: bool,
    sender: Option<usize>,
    broadcast_quirk: bool,
    mut deliver: impl FnMut(usize, DeliveryMode),
) -> DeliveryMode
where
    I: Iterator<Item = &'a Lapic> + Clone,
{
    let mut mode = ipi.delivery_mode;
    if ipi.dest_mode == DestMode::Physical
        && ipi.dest == BROADCAST
        && mode == DeliveryMode::LowestPriority
    {
        mode = DeliveryMode::Fixed;
    }
    // KVM keeps the hint after that rewrite.
    let lowest = mode == DeliveryMode::LowestPriority || redirect;
    let matching = |(i, apic): &(usize, &Lapic)| {
        let from = match sender {
            Some(s) => Sender::Apic { is_self: s == *i },
            None => Sender::Device { broadcast_quirk },
        };
        apic.hw_enabled() && apic.matches(ipi.dest, ipi.dest_mode, ipi.shorthand, from)
    };
    if !lowest {
        apics
            .enumerate()
            .filter(matching)
            .for_each(|(i, _)| deliver(i, mode));
        return mode;
    }
    let candidates = apics
        .clone()
        .enumerate()
        .filter(matching)
        .filter(|(_, a)| a.sw_enabled());
    if let Some(k) = lowest_priority_index(ipi.vector, candidates.clone().count()) {
        if let Some((i, _)) = candidates.clone().nth(k) {
            deliver(i, mode);
        }
    }
    mode
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
