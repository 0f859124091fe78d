//! `KVM_IOEVENTFD`: KVM's rules for assigning and deassigning ioeventfds
//! (validation and its errnos, the collision rule, what a deassign names)
//! and which ioeventfd a guest write hits (`virt/kvm/eventfd.c`).
//!
//! Pure logic: the module owns the eventfds and the published table; this
//! file keeps the table sorted by (bus, address) so that a write finds its
//! candidates by binary search, as KVM's `kvm_io_bus` does.

use super::uapi::KvmIoeventfd;

/// `KVM_IOEVENTFD_FLAG_DATAMATCH`.
pub const FLAG_DATAMATCH: u32 = 1 << 0;
/// `KVM_IOEVENTFD_FLAG_PIO`.
pub const FLAG_PIO: u32 = 1 << 1;
/// `KVM_IOEVENTFD_FLAG_DEASSIGN`.
pub const FLAG_DEASSIGN: u32 = 1 << 2;
/// `KVM_IOEVENTFD_FLAG_VIRTIO_CCW_NOTIFY`.
pub const FLAG_VIRTIO_CCW_NOTIFY: u32 = 1 << 3;
/// `KVM_IOEVENTFD_VALID_FLAG_MASK`: it also covers bit 4
/// (`kvm_ioeventfd_flag_nr_fast_mmio`), which has no flag macro, is
/// accepted, and changes nothing.
pub const VALID_FLAG_MASK: u32 = (1 << 5) - 1;

/// The bus an ioeventfd sits on. KVM also keeps length-0 MMIO ioeventfds
/// on a second "fast MMIO" bus; what a write hits is the same either way,
/// so one MMIO bus models both.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Bus {
    /// `KVM_MMIO_BUS`: guest-physical writes that are not RAM.
    Mmio,
    /// `KVM_PIO_BUS`: OUT and OUTS.
    Pio,
    /// `KVM_VIRTIO_CCW_NOTIFY_BUS`: s390's; x86 KVM accepts ioeventfds on
    /// it, and nothing ever writes to it.
    Ccw,
}

impl Bus {
    /// `ioeventfd_bus_from_flags`: PIO wins over CCW, MMIO otherwise.
    pub fn from_flags(flags: u32) -> Self {
        if flags & FLAG_PIO != 0 {
            Bus::Pio
        } else if flags & FLAG_VIRTIO_CCW_NOTIFY != 0 {
            Bus::Ccw
        } else {
            Bus::Mmio
        }
    }
}

/// One ioeventfd, without its eventfd.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Spec {
    /// Its bus.
    pub bus: Bus,
    /// The exact address a write must start at.
    pub addr: u64,
    /// 1, 2, 4 or 8, or 0 for a write of any length.
    pub len: u8,
    /// The value a write must carry, or `None` for any value (a wildcard).
    pub datamatch: Option<u64>,
}

/// Why a request is refused, as the errno KVM returns (before the eventfd
/// itself is looked at).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// `EINVAL`: bad length, flags, an address range that wraps, or
    /// DATAMATCH with length 0.
    Inval,
}

/// What a `KVM_IOEVENTFD` call asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// Assign an ioeventfd (to the eventfd `args.fd`).
    Assign(Spec),
    /// Deassign the ioeventfd of `args.fd` that is exactly this one.
    Deassign(Spec),
}

/// Decodes and validates `args` in KVM's order (`kvm_ioeventfd`,
/// `kvm_assign_ioeventfd`). A deassign is not validated at all: flags KVM
/// does not know and odd lengths just find nothing (`ENOENT`).
pub fn request(args: &KvmIoeventfd) -> Result<Request, Error> {
    let bus = Bus::from_flags(args.flags);
    let datamatch = (args.flags & FLAG_DATAMATCH != 0).then_some(args.datamatch);
    if args.flags & FLAG_DEASSIGN != 0 {
        // A length no assign could have made never matches; keep it out of
        // range of every real one.
        let len = u8::try_from(args.len).unwrap_or(u8::MAX);
        let len = if matches!(len, 0 | 1 | 2 | 4 | 8) {
            len
        } else {
            u8::MAX
        };
        return Ok(Request::Deassign(Spec {
            bus,
            addr: args.addr,
            len,
            datamatch,
        }));
    }
    let len = match args.len {
        0 | 1 | 2 | 4 | 8 => args.len as u8,
        _ => return Err(Error::Inval),
    };
    if args.addr.checked_add(u64::from(len)).is_none() {
        return Err(Error::Inval);
    }
    if args.flags & !VALID_FLAG_MASK != 0 {
        return Err(Error::Inval);
    }
    if len == 0 && datamatch.is_some() {
        return Err(Error::Inval);
    }
    Ok(Request::Assign(Spec {
        bus,
        addr: args.addr,
        len,
        datamatch,
    }))
}

impl Spec {
    /// `ioeventfd_check_collision`: same bus and address, and either of
    /// them takes any length, or the same length and either takes any
    /// value or both the same value.
    pub fn collides(&self, other: &Spec) -> bool {
        self.bus == other.bus
            && self.addr == other.addr
            && (self.len == 0
                || other.len == 0
                || (self.len == other.len
                    && match (self.datamatch, other.datamatch) {
                        (Some(a), Some(b)) => a == b,
                        _ => true,
                    }))
    }

    /// `ioeventfd_in_range`: whether a write of `data` at `addr` on `bus`
    /// signals this ioeventfd. The address must be exact; the length too
    /// unless this takes any; then the value unless this takes any.
    pub fn hit(&self, bus: Bus, addr: u64, data: &[u8]) -> bool {
        if self.bus != bus || self.addr != addr {
            return false;
        }
        if self.len == 0 {
            return true;
        }
        if data.len() != usize::from(self.len) {
            return false;
        }
        match self.datamatch {
            None => true,
            Some(want) => {
                let mut v = [0u8; 8];
                v[..data.len()].copy_from_slice(data);
                u64::from_le_bytes(v) == want
            }
        }
    }

    /// The table's order: by bus, then address (the key a write searches).
    fn key(&self) -> (Bus, u64) {
        (self.bus, self.addr)
    }
}

/// Where in `table` (sorted by bus and address, `spec` giving each entry's
/// ioeventfd) a new `new` goes: after every entry with the same key.
pub fn insert_at<T>(table: &[T], spec: impl Fn(&T) -> &Spec, new: &Spec) -> usize {
    table.partition_point(|e| spec(e).key() <= new.key())
}

/// The entries of `table` at `new`'s bus and address.
fn same_key<'t, T>(table: &'t [T], spec: &impl Fn(&T) -> &Spec, bus: Bus, addr: u64) -> &'t [T] {
    let lo = table.partition_point(|e| spec(e).key() < (bus, addr));
    let hi = lo + table[lo..].partition_point(|e| spec(e).key() <= (bus, addr));
    &table[lo..hi]
}

/// Whether `new` collides with an ioeventfd of `table` (KVM's `EEXIST`).
pub fn collides_any<T>(table: &[T], spec: impl Fn(&T) -> &Spec, new: &Spec) -> bool {
    same_key(table, &spec, new.bus, new.addr)
        .iter()
        .any(|e| spec(e).collides(new))
}

/// The entry a write of `data` at `addr` on `bus` signals, if any. In a
/// table without collisions at most one entry can match.
pub fn lookup<'t, T>(
    table: &'t [T],
    spec: impl Fn(&T) -> &Spec,
    bus: Bus,
    addr: u64,
    data: &[u8],
) -> Option<&'t T> {
    same_key(table, &spec, bus, addr)
        .iter()
        .find(|e| spec(e).hit(bus, addr, data))
}

/// The index of the entry a deassign of `want` removes, among those whose
/// eventfd is the one named (`same_fd`): all of bus, address, length and
/// wildcard-ness equal, and the value too for a datamatch
/// (`kvm_deassign_ioeventfd_idx`).
pub fn find_deassign<T>(
    table: &[T],
    spec: impl Fn(&T) -> &Spec,
    same_fd: impl Fn(&T) -> bool,
    want: &Spec,
) -> Option<usize> {
    let lo = table.partition_point(|e| spec(e).key() < want.key());
    table[lo..]
        .iter()
        .take_while(|e| spec(e).key() == want.key())
        .position(|e| {
            let s = spec(e);
            s.len == want.len && s.datamatch == want.datamatch && same_fd(e)
        })
        .map(|i| lo + i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(addr: u64, len: u32, flags: u32, datamatch: u64) -> KvmIoeventfd {
        KvmIoeventfd {
            datamatch,
            addr,
            len,
            fd: 3,
            flags,
            pad: [0; 36],
        }
    }

    fn assign(addr: u64, len: u32, flags: u32, dm: u64) -> Spec {
        match request(&args(addr, len, flags, dm)) {
            Ok(Request::Assign(s)) => s,
            r => panic!("{r:?}"),
        }
    }

    #[test]
    fn validation_in_kvm_order() {
        for len in [3, 5, 6, 7, 9, 16, u32::MAX] {
            assert_eq!(request(&args(0x1000, len, 0, 0)), Err(Error::Inval));
        }
        assert_eq!(request(&args(u64::MAX, 1, 0, 0)), Err(Error::Inval));
        assert_eq!(request(&args(u64::MAX - 7, 8, 0, 0)), Err(Error::Inval));
        assert!(request(&args(u64::MAX - 8, 8, 0, 0)).is_ok());
        // Length 0 never wraps, even at the top.
        assert!(request(&args(u64::MAX, 0, 0, 0)).is_ok());
        assert_eq!(request(&args(0, 4, 1 << 5, 0)), Err(Error::Inval));
        assert_eq!(assign(0, 4, 1 << 4, 0), assign(0, 4, 0, 0));
        assert_eq!(request(&args(0, 4, 1 << 31, 0)), Err(Error::Inval));
        assert_eq!(request(&args(0, 0, FLAG_DATAMATCH, 0)), Err(Error::Inval));
        // Length 0 on the PIO bus is accepted, as KVM does.
        assert_eq!(assign(0x80, 0, FLAG_PIO, 0).len, 0);
        assert_eq!(assign(0, 1, FLAG_VIRTIO_CCW_NOTIFY, 0).bus, Bus::Ccw);
        assert_eq!(
            assign(0, 1, FLAG_VIRTIO_CCW_NOTIFY | FLAG_PIO, 0).bus,
            Bus::Pio
        );
        assert_eq!(assign(0, 1, 0, 7).datamatch, None);
        assert_eq!(assign(0, 1, FLAG_DATAMATCH, 7).datamatch, Some(7));
    }

    #[test]
    fn deassign_is_not_validated() {
        let r = request(&args(u64::MAX, 3, FLAG_DEASSIGN | 1 << 20, 0));
        match r {
            Ok(Request::Deassign(s)) => assert_eq!(s.len, u8::MAX),
            r => panic!("{r:?}"),
        }
        // 256 does not alias length 0.
        match request(&args(0, 256, FLAG_DEASSIGN, 0)) {
            Ok(Request::Deassign(s)) => assert_eq!(s.len, u8::MAX),
            r => panic!("{r:?}"),
        }
    }

    #[test]
    fn collisions() {
        let a = assign(0x10, 4, FLAG_DATAMATCH, 1);
        assert!(a.collides(&assign(0x10, 4, FLAG_DATAMATCH, 1)));
        assert!(!a.collides(&assign(0x10, 4, FLAG_DATAMATCH, 2)));
        assert!(a.collides(&assign(0x10, 4, 0, 0)));
        assert!(a.collides(&assign(0x10, 0, 0, 0)));
        assert!(!a.collides(&assign(0x10, 2, 0, 0)));
        assert!(!a.collides(&assign(0x11, 4, FLAG_DATAMATCH, 1)));
        assert!(!a.collides(&assign(0x10, 4, FLAG_DATAMATCH | FLAG_PIO, 1)));
    }

    #[test]
    fn hits() {
        let a = assign(0x10, 2, FLAG_DATAMATCH, 0x1234);
        assert!(a.hit(Bus::Mmio, 0x10, &[0x34, 0x12]));
        assert!(!a.hit(Bus::Mmio, 0x10, &[0x34, 0x13]));
        assert!(!a.hit(Bus::Mmio, 0x10, &[0x34, 0x12, 0, 0]));
        assert!(!a.hit(Bus::Mmio, 0x11, &[0x34, 0x12]));
        assert!(!a.hit(Bus::Pio, 0x10, &[0x34, 0x12]));
        let any = assign(0x10, 0, 0, 0);
        for n in 1..=8 {
            assert!(any.hit(Bus::Mmio, 0x10, &[0xff; 8][..n]));
        }
        let w = assign(0x10, 8, 0, 0);
        assert!(w.hit(Bus::Mmio, 0x10, &[1; 8]));
        let d8 = assign(0x10, 8, FLAG_DATAMATCH, u64::MAX);
        assert!(d8.hit(Bus::Mmio, 0x10, &[0xff; 8]));
    }

    #[test]
    fn table_order_and_lookup() {
        let mut t: [Spec; 4] = [
            assign(0x20, 1, FLAG_PIO, 0),
            assign(0x10, 1, 0, 0),
            assign(0x10, 2, FLAG_DATAMATCH, 5),
            assign(0x10, 2, FLAG_DATAMATCH, 6),
        ];
        t.sort_by_key(Spec::key);
        fn id(s: &Spec) -> &Spec {
            s
        }
        assert_eq!(
            lookup(&t, id, Bus::Mmio, 0x10, &[6, 0]),
            Some(&assign(0x10, 2, FLAG_DATAMATCH, 6))
        );
        assert_eq!(lookup(&t, id, Bus::Mmio, 0x10, &[7, 0]), None);
        assert_eq!(lookup(&t, id, Bus::Pio, 0x20, &[9]), Some(&t[3]));
        assert_eq!(insert_at(&t, id, &assign(0x10, 4, 0, 0)), 3);
        assert_eq!(insert_at(&t, id, &assign(0, 4, 0, 0)), 0);
        assert!(collides_any(&t, id, &assign(0x10, 0, 0, 0)));
        assert!(!collides_any(&t, id, &assign(0x10, 4, 0, 0)));
        let want = assign(0x10, 2, FLAG_DATAMATCH, 6);
        assert_eq!(find_deassign(&t, id, |_| true, &want), Some(2));
        assert_eq!(find_deassign(&t, id, |_| false, &want), None);
        let wild = assign(0x10, 2, 0, 0);
        assert_eq!(find_deassign(&t, id, |_| true, &wild), None);
    }
}
