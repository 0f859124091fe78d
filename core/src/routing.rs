//! `KVM_SET_GSI_ROUTING` for the split irqchip: KVM's rules for the table
//! (`kvm_set_irq_routing`, `setup_routing_entry`, `kvm_set_routing_entry`)
//! and which vectors' EOIs a vCPU must report to the userspace IOAPIC
//! (`kvm_scan_ioapic_routes`).
//!
//! With the split irqchip there are no PIC or IOAPIC pins in the kernel,
//! so the only route is an MSI; each GSI has at most one.

use crate::{
    lapic::{msi_to_ipi, DestMode, Trigger},
    uapi::KvmIrqRoutingEntry,
};

/// `KVM_MAX_IRQ_ROUTES`: GSIs are below this, and a table holds at most
/// this many entries.
pub const MAX_IRQ_ROUTES: u32 = 4096;

/// `KVM_IRQ_ROUTING_MSI`.
pub const ROUTING_MSI: u32 = 2;

/// `KVM_MSI_VALID_DEVID`: the only flag an MSI entry may carry.
const MSI_VALID_DEVID: u32 = 1;

/// One GSI's MSI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsiRoute {
    /// The message address, bits 31:0.
    pub address_lo: u32,
    /// The message address, bits 63:32.
    pub address_hi: u32,
    /// The message data.
    pub data: u32,
}

/// A table KVM refuses (`EINVAL`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Invalid;

/// The length of the table `entries` build: the highest GSI plus one (1
/// for no entries, as KVM). `Invalid` for a GSI at or above
/// [`MAX_IRQ_ROUTES`].
pub fn table_len(entries: &[KvmIrqRoutingEntry]) -> Result<usize, Invalid> {
    let mut max = 0;
    for e in entries {
        if e.gsi >= MAX_IRQ_ROUTES {
            return Err(Invalid);
        }
        max = max.max(e.gsi);
    }
    Ok(max as usize + 1)
}

/// Fills `table` (of [`table_len`] entries, all `None`) from `entries`.
/// `Invalid` for an entry that is not an MSI (the split irqchip has no
/// PIC or IOAPIC pins in the kernel), for flags other than an MSI's
/// `KVM_MSI_VALID_DEVID`, and for a second entry for one GSI. With
/// `x2apic_format`, an MSI whose `address_hi` bits 7:0 are set is refused
/// too (`kvm_msi_route_invalid`).
pub fn fill(
    entries: &[KvmIrqRoutingEntry],
    table: &mut [Option<MsiRoute>],
    x2apic_format: bool,
) -> Result<(), Invalid> {
    for e in entries {
        if e.type_ != ROUTING_MSI || e.flags & !MSI_VALID_DEVID != 0 {
            return Err(Invalid);
        }
        let slot = table.get_mut(e.gsi as usize).ok_or(Invalid)?;
        if slot.is_some() {
            return Err(Invalid);
        }
        let r = MsiRoute {
            address_lo: e.u[0],
            address_hi: e.u[1],
            data: e.u[2],
        };
        if x2apic_format && r.address_hi & 0xff != 0 {
            return Err(Invalid);
        }
        *slot = Some(r);
    }
    Ok(())
}

/// The vectors whose EOI one vCPU reports to the userspace IOAPIC, as a
/// 256-bit map, and the highest of them it reports only because an
/// interrupt from an older routing is still pending there
/// (`kvm_scan_ioapic_routes`, `kvm_scan_ioapic_irq`).
///
/// Only the first `reserved_pins` GSIs are the IOAPIC's, and only their
/// level-triggered MSIs need the EOI. `matches(dest, mode)` says whether
/// the vCPU's APIC is a destination; `pending(vector)` whether the vector
/// is in its IRR or ISR.
pub fn ioapic_vectors(
    table: &[Option<MsiRoute>],
    reserved_pins: u32,
    x2apic_format: bool,
    matches: impl Fn(u32, DestMode) -> bool,
    pending: impl Fn(u8) -> bool,
) -> ([u64; 4], Option<u8>) {
    let mut map = [0u64; 4];
    let mut stale: Option<u8> = None;
    for r in table.iter().take(reserved_pins as usize).flatten() {
        let (ipi, _) = msi_to_ipi(r.address_lo, r.address_hi, r.data, x2apic_format);
        if ipi.trigger != Trigger::Level {
            continue;
        }
        let v = ipi.vector;
        if matches(ipi.dest, ipi.dest_mode) {
            map[usize::from(v / 64)] |= 1 << (v % 64);
        } else if pending(v) {
            map[usize::from(v / 64)] |= 1 << (v % 64);
            stale = Some(stale.map_or(v, |s| s.max(v)));
        }
    }
    (map, stale)
}

/// Whether `vector` is in a map from [`ioapic_vectors`].
pub fn has_vector(map: &[u64; 4], vector: u8) -> bool {
    map[usize::from(vector / 64)] & (1 << (vector % 64)) != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msi(gsi: u32, dest: u32, vector: u32, level: bool) -> KvmIrqRoutingEntry {
        KvmIrqRoutingEntry {
            gsi,
            type_: ROUTING_MSI,
            u: [
                0xfee0_0000 | (dest << 12),
                0,
                vector | if level { 1 << 15 } else { 0 },
                0,
                0,
                0,
                0,
                0,
            ],
            ..Default::default()
        }
    }

    fn build(entries: &[KvmIrqRoutingEntry]) -> Result<[Option<MsiRoute>; 64], Invalid> {
        let n = table_len(entries)?;
        let mut t = [None; 64];
        fill(entries, &mut t[..n], false)?;
        Ok(t)
    }

    #[test]
    fn length_is_highest_gsi_plus_one() {
        assert_eq!(table_len(&[]), Ok(1));
        assert_eq!(
            table_len(&[msi(5, 0, 32, false), msi(2, 0, 33, false)]),
            Ok(6)
        );
        assert_eq!(table_len(&[msi(4095, 0, 32, false)]), Ok(4096));
        assert_eq!(table_len(&[msi(4096, 0, 32, false)]), Err(Invalid));
    }

    #[test]
    fn one_msi_per_gsi() {
        assert!(build(&[msi(1, 0, 32, false), msi(2, 0, 32, false)]).is_ok());
        assert_eq!(
            build(&[msi(1, 0, 32, false), msi(1, 1, 33, false)]),
            Err(Invalid)
        );
    }

    #[test]
    fn only_msi_with_devid_flag() {
        let mut e = msi(0, 0, 32, false);
        e.flags = MSI_VALID_DEVID;
        assert!(build(&[e]).is_ok());
        e.flags = 2;
        assert_eq!(build(&[e]), Err(Invalid));
        let mut chip = msi(0, 0, 32, false);
        chip.type_ = 1;
        assert_eq!(build(&[chip]), Err(Invalid));
    }

    #[test]
    fn x2apic_format_refuses_low_address_hi() {
        let mut e = msi(0, 0, 32, false);
        e.u[1] = 1;
        let mut t = [None; 1];
        assert_eq!(fill(&[e], &mut t, true), Err(Invalid));
        let mut t = [None; 1];
        assert_eq!(fill(&[e], &mut t, false), Ok(()));
    }

    #[test]
    fn eoi_map_takes_level_routes_of_reserved_pins() {
        let t = build(&[
            msi(0, 1, 0x30, true),
            msi(1, 1, 0x31, false),
            msi(2, 2, 0x32, true),
            msi(30, 1, 0x40, true),
        ])
        .unwrap();
        let (map, stale) = ioapic_vectors(&t, 24, false, |d, _| d == 1, |_| false);
        assert!(has_vector(&map, 0x30));
        assert!(!has_vector(&map, 0x31), "edge");
        assert!(!has_vector(&map, 0x32), "another APIC");
        assert!(!has_vector(&map, 0x40), "not an IOAPIC pin");
        assert_eq!(stale, None);
    }

    #[test]
    fn eoi_map_keeps_pending_vectors_of_old_routes() {
        let t = build(&[msi(0, 2, 0x30, true), msi(1, 2, 0x50, true)]).unwrap();
        let (map, stale) = ioapic_vectors(&t, 24, false, |_, _| false, |v| v != 0x20);
        assert!(has_vector(&map, 0x30) && has_vector(&map, 0x50));
        assert_eq!(stale, Some(0x50));
    }
}
