//! Guest memory slots: KVM's rules for `KVM_SET_USER_MEMORY_REGION(2)`
//! (validation, create, move, delete, flag changes) and GPA lookup.
//!
//! Pure logic: the module owns the storage and the pinned pages; this file
//! decides what a request means and which errno KVM would give it, and
//! finds the slot of a frame in a table sorted by base frame.

use super::addr::{Gfn, Hva, PAGE_SHIFT};

/// `KVM_MEM_LOG_DIRTY_PAGES`.
pub const KVM_MEM_LOG_DIRTY_PAGES: u32 = 1 << 0;
/// `KVM_MEM_READONLY`.
pub const KVM_MEM_READONLY: u32 = 1 << 1;
/// `KVM_MEM_GUEST_MEMFD`.
pub const KVM_MEM_GUEST_MEMFD: u32 = 1 << 2;

/// Slot ids userspace may use (`KVM_USER_MEM_SLOTS` on x86: `SHRT_MAX`
/// minus KVM's three internal slots); also `KVM_CAP_NR_MEMSLOTS`.
pub const USER_MEM_SLOTS: u32 = 32764;
/// `KVM_MEM_MAX_NR_PAGES`: a slot's largest size in pages.
pub const MAX_NR_PAGES: u64 = (1 << 31) - 1;

const PAGE_MASK: u64 = (1 << PAGE_SHIFT) - 1;

/// Why a request is refused, as the errno KVM returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotError {
    /// `EINVAL`: malformed request.
    Inval,
    /// `EEXIST`: the range overlaps another slot.
    Exist,
}

/// One guest memory slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    /// Slot id (the low 16 bits of `slot`; address space 0 only).
    pub id: u32,
    /// First guest frame number.
    pub base_gfn: u64,
    /// Size in 4 KiB pages.
    pub npages: u64,
    /// Start of the backing memory in the VMM's address space.
    pub userspace_addr: u64,
    /// `KVM_MEM_*` flags.
    pub flags: u32,
}

impl Slot {
    /// Whether `gfn` is inside this slot.
    pub fn contains(&self, gfn: Gfn) -> bool {
        gfn.0 >= self.base_gfn && gfn.0 - self.base_gfn < self.npages
    }

    /// The slot's first frame.
    pub fn base(&self) -> Gfn {
        Gfn(self.base_gfn)
    }

    /// The frame after the slot's last one.
    pub fn end(&self) -> Gfn {
        Gfn(self.base_gfn + self.npages)
    }

    /// The VMM address backing `gfn` (which must be inside the slot).
    pub fn hva(&self, gfn: Gfn) -> Hva {
        Hva(self.userspace_addr + ((gfn.0 - self.base_gfn) << PAGE_SHIFT))
    }

    /// Whether writes are logged for `KVM_GET_DIRTY_LOG`.
    pub fn logs_dirty(&self) -> bool {
        self.flags & KVM_MEM_LOG_DIRTY_PAGES != 0
    }

    /// The size of the slot's dirty bitmap in 64-bit words.
    pub fn bitmap_words(&self) -> usize {
        self.npages.div_ceil(64) as usize
    }

    /// Whether guest writes must exit to userspace as MMIO.
    pub fn readonly(&self) -> bool {
        self.flags & KVM_MEM_READONLY != 0
    }

    fn overlaps(&self, base_gfn: u64, npages: u64) -> bool {
        base_gfn < self.base_gfn + self.npages && self.base_gfn < base_gfn + npages
    }
}

/// A `kvm_userspace_memory_region2` request (v1 requests have no memfd).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Request {
    /// Address space (high 16 bits) and slot id (low 16 bits).
    pub slot: u32,
    /// `KVM_MEM_*` flags.
    pub flags: u32,
    /// First guest physical address.
    pub guest_phys_addr: u64,
    /// Size in bytes; 0 deletes the slot.
    pub memory_size: u64,
    /// Start of the backing memory in the VMM's address space.
    pub userspace_addr: u64,
}

/// What a valid request does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Add a new slot.
    Create(Slot),
    /// Remove the slot (its old value).
    Delete(Slot),
    /// Move a slot to another GPA: the old mappings must go.
    Move {
        /// The slot as it was.
        old: Slot,
        /// The slot as it will be.
        new: Slot,
    },
    /// Change only flags that need no remapping (dirty logging).
    FlagsOnly {
        /// The slot as it was.
        old: Slot,
        /// The slot as it will be.
        new: Slot,
    },
    /// Same as what is there: nothing to do.
    Unchanged,
}

/// The flags rkvm accepts. `KVM_MEM_GUEST_MEMFD` (private memory) is not
/// implemented, so it is refused.
pub const SUPPORTED_FLAGS: u32 = KVM_MEM_READONLY | KVM_MEM_LOG_DIRTY_PAGES;

/// The highest guest frame a slot may hold (KVM's `kvm_mmu_max_gfn`): the
/// host's MAXPHYADDR (CPUID 0x8000_0008 EAX[7:0]), further limited by what
/// the second-level page table reaches (`table_bits`: 48 with 4 levels, 57
/// with 5), so that no slot lies where the table's index would wrap.
pub fn max_gfn(host_maxphyaddr: u8, table_bits: u8) -> u64 {
    let bits = u32::from(host_maxphyaddr.min(table_bits)).clamp(PAGE_SHIFT + 1, 63);
    (1 << (bits - PAGE_SHIFT)) - 1
}

/// Decides what `req` does to `slots`, with KVM's checks in KVM's order.
/// `user_limit` is the end of the VMM's user address space (`access_ok`);
/// a new or moved slot may not reach beyond frame `max_gfn` ([`max_gfn`]).
pub fn plan(
    slots: &[Slot],
    req: &Request,
    user_limit: u64,
    max_gfn: u64,
) -> Result<Change, SlotError> {
    if req.flags & !SUPPORTED_FLAGS != 0 {
        return Err(SlotError::Inval);
    }
    let as_id = req.slot >> 16;
    let id = req.slot & 0xffff;
    if id >= USER_MEM_SLOTS || as_id != 0 {
        return Err(SlotError::Inval);
    }
    if req.memory_size & PAGE_MASK != 0 || req.guest_phys_addr & PAGE_MASK != 0 {
        return Err(SlotError::Inval);
    }
    if req.userspace_addr & PAGE_MASK != 0
        || req
            .userspace_addr
            .checked_add(req.memory_size)
            .is_none_or(|end| end > user_limit)
    {
        return Err(SlotError::Inval);
    }
    if req.guest_phys_addr.checked_add(req.memory_size).is_none() {
        return Err(SlotError::Inval);
    }
    let npages = req.memory_size >> PAGE_SHIFT;
    if npages > MAX_NR_PAGES {
        return Err(SlotError::Inval);
    }
    let old = slots.iter().find(|s| s.id == id).copied();
    if npages == 0 {
        return old.map(Change::Delete).ok_or(SlotError::Inval);
    }
    let new = Slot {
        id,
        base_gfn: req.guest_phys_addr >> PAGE_SHIFT,
        npages,
        userspace_addr: req.userspace_addr,
        flags: req.flags,
    };
    let change = match old {
        None => Change::Create(new),
        Some(old) => {
            if old.userspace_addr != new.userspace_addr
                || old.npages != new.npages
                || (old.flags ^ new.flags) & (KVM_MEM_READONLY | KVM_MEM_GUEST_MEMFD) != 0
            {
                return Err(SlotError::Inval);
            }
            if old.base_gfn != new.base_gfn {
                Change::Move { old, new }
            } else if old.flags != new.flags {
                Change::FlagsOnly { old, new }
            } else {
                return Ok(Change::Unchanged);
            }
        }
    };
    if matches!(change, Change::Create(_) | Change::Move { .. })
        && slots
            .iter()
            .any(|s| s.id != id && s.overlaps(new.base_gfn, new.npages))
    {
        return Err(SlotError::Exist);
    }
    // kvm_arch_prepare_memory_region, after the overlap check.
    if matches!(change, Change::Create(_) | Change::Move { .. })
        && new.base_gfn + new.npages - 1 > max_gfn
    {
        return Err(SlotError::Inval);
    }
    Ok(change)
}

/// The index of the slot holding `gfn` in `slots`, which must be sorted by
/// base frame and not overlap (as [`plan`] keeps them): a binary search.
pub fn position(slots: &[Slot], gfn: Gfn) -> Option<usize> {
    let i = slots.partition_point(|s| s.base_gfn + s.npages <= gfn.0);
    slots.get(i).filter(|s| s.contains(gfn)).map(|_| i)
}

#[cfg_attr(rkvm_module, expect(dead_code, reason = "used by the host tests"))]
/// The slot holding `gfn` in `slots` (sorted, see [`position`]).
pub fn find(slots: &[Slot], gfn: Gfn) -> Option<&Slot> {
    position(slots, gfn).map(|i| &slots[i])
}

/// Where a slot starting at `base_gfn` goes in `slots` to keep them sorted.
pub fn insert_position(slots: &[Slot], base_gfn: u64) -> usize {
    slots.partition_point(|s| s.base_gfn < base_gfn)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    const LIMIT: u64 = 0x7fff_ffff_f000;
    /// MAXPHYADDR 48 (4-level tables).
    const MAX_GFN: u64 = (1 << 36) - 1;

    fn req(slot: u32, gpa: u64, size: u64, hva: u64) -> Request {
        Request {
            slot,
            flags: 0,
            guest_phys_addr: gpa,
            memory_size: size,
            userspace_addr: hva,
        }
    }

    fn apply(slots: &mut Vec<Slot>, r: &Request) -> Result<Change, SlotError> {
        let c = plan(slots, r, LIMIT, MAX_GFN)?;
        match c {
            Change::Create(s) => {
                let i = insert_position(slots, s.base_gfn);
                slots.insert(i, s)
            }
            Change::Delete(old) => slots.retain(|s| s.id != old.id),
            Change::Move { new, .. } | Change::FlagsOnly { new, .. } => {
                slots.retain(|s| s.id != new.id);
                let i = insert_position(slots, new.base_gfn);
                slots.insert(i, new)
            }
            Change::Unchanged => {}
        }
        Ok(c)
    }

    #[test]
    fn create_then_lookup() {
        let mut s = Vec::new();
        apply(&mut s, &req(0, 0x10_0000, 0x4000, 0x7000_0000)).unwrap();
        let slot = find(&s, Gfn(0x101)).unwrap();
        assert_eq!(slot.hva(Gfn(0x101)), Hva(0x7000_1000));
        assert!(find(&s, Gfn(0x104)).is_none());
        assert!(find(&s, Gfn(0xff)).is_none());
    }

    #[test]
    fn misaligned_requests_are_einval() {
        let s = Vec::new();
        assert_eq!(
            plan(&s, &req(0, 0x800, 0x1000, 0x1000), LIMIT, MAX_GFN),
            Err(SlotError::Inval)
        );
        assert_eq!(
            plan(&s, &req(0, 0, 0x800, 0x1000), LIMIT, MAX_GFN),
            Err(SlotError::Inval)
        );
        assert_eq!(
            plan(&s, &req(0, 0, 0x1000, 0x1001), LIMIT, MAX_GFN),
            Err(SlotError::Inval)
        );
    }

    #[test]
    fn bad_slot_ids_and_flags_are_einval() {
        let s = Vec::new();
        assert_eq!(
            plan(&s, &req(USER_MEM_SLOTS, 0, 0x1000, 0x1000), LIMIT, MAX_GFN),
            Err(SlotError::Inval)
        );
        assert_eq!(
            plan(&s, &req(1 << 16, 0, 0x1000, 0x1000), LIMIT, MAX_GFN),
            Err(SlotError::Inval)
        );
        let mut r = req(0, 0, 0x1000, 0x1000);
        r.flags = 1 << 7;
        assert_eq!(plan(&s, &r, LIMIT, MAX_GFN), Err(SlotError::Inval));
    }

    #[test]
    fn wrapping_or_kernel_addresses_are_einval() {
        let s = Vec::new();
        assert_eq!(
            plan(&s, &req(0, !0xfff, 0x2000, 0x1000), LIMIT, MAX_GFN),
            Err(SlotError::Inval)
        );
        assert_eq!(
            plan(&s, &req(0, 0, 0x2000, LIMIT - 0x1000), LIMIT, MAX_GFN),
            Err(SlotError::Inval)
        );
        assert_eq!(
            plan(
                &s,
                &req(0, 0, 0x1000, 0xffff_8000_0000_0000),
                LIMIT,
                MAX_GFN
            ),
            Err(SlotError::Inval)
        );
    }

    #[test]
    fn overlap_is_eexist_but_same_id_may_move_onto_itself() {
        let mut s = Vec::new();
        apply(&mut s, &req(0, 0, 0x4000, 0x1000_0000)).unwrap();
        assert_eq!(
            apply(&mut s, &req(1, 0x3000, 0x1000, 0x2000_0000)),
            Err(SlotError::Exist)
        );
        assert!(matches!(
            apply(&mut s, &req(0, 0x1000, 0x4000, 0x1000_0000)),
            Ok(Change::Move { .. })
        ));
        assert_eq!(find(&s, Gfn(1)).unwrap().base_gfn, 1);
    }

    #[test]
    fn resize_or_rebase_hva_is_einval() {
        let mut s = Vec::new();
        apply(&mut s, &req(0, 0, 0x4000, 0x1000_0000)).unwrap();
        assert_eq!(
            apply(&mut s, &req(0, 0, 0x8000, 0x1000_0000)),
            Err(SlotError::Inval)
        );
        assert_eq!(
            apply(&mut s, &req(0, 0, 0x4000, 0x2000_0000)),
            Err(SlotError::Inval)
        );
        let mut ro = req(0, 0, 0x4000, 0x1000_0000);
        ro.flags = KVM_MEM_READONLY;
        assert_eq!(apply(&mut s, &ro), Err(SlotError::Inval));
    }

    #[test]
    fn delete_needs_an_existing_slot() {
        let mut s = Vec::new();
        assert_eq!(apply(&mut s, &req(3, 0, 0, 0)), Err(SlotError::Inval));
        apply(&mut s, &req(3, 0, 0x1000, 0x1000)).unwrap();
        assert!(matches!(
            apply(&mut s, &req(3, 0, 0, 0)),
            Ok(Change::Delete(_))
        ));
        assert!(s.is_empty());
    }

    #[test]
    fn toggling_dirty_logging_is_a_flags_only_change() {
        let mut s = Vec::new();
        apply(&mut s, &req(0, 0, 0x1000, 0x1000)).unwrap();
        let mut r = req(0, 0, 0x1000, 0x1000);
        r.flags = KVM_MEM_LOG_DIRTY_PAGES;
        assert!(matches!(apply(&mut s, &r), Ok(Change::FlagsOnly { .. })));
        assert!(s[0].logs_dirty());
        assert_eq!(s[0].bitmap_words(), 1);
    }

    #[test]
    fn identical_request_is_unchanged() {
        let mut s = Vec::new();
        apply(&mut s, &req(0, 0, 0x1000, 0x1000)).unwrap();
        assert_eq!(
            apply(&mut s, &req(0, 0, 0x1000, 0x1000)),
            Ok(Change::Unchanged)
        );
    }

    #[test]
    fn max_gfn_is_the_smaller_of_maxphyaddr_and_table_reach() {
        assert_eq!(max_gfn(40, 48), (1 << 28) - 1);
        assert_eq!(max_gfn(52, 48), (1 << 36) - 1);
        assert_eq!(max_gfn(52, 57), (1 << 40) - 1);
    }

    // kvm_arch_prepare_memory_region: the last frame may be max_gfn, not
    // beyond; only creating or moving a slot is checked.
    #[test]
    fn slot_reaching_beyond_max_gfn_is_einval() {
        let mut s = Vec::new();
        let top = (MAX_GFN + 1) << PAGE_SHIFT;
        assert!(apply(&mut s, &req(0, top - 0x2000, 0x2000, 0x1000)).is_ok());
        assert_eq!(
            apply(&mut s, &req(1, top, 0x1000, 0x10_0000)),
            Err(SlotError::Inval)
        );
        assert_eq!(
            apply(&mut s, &req(1, 1 << 52, 0x1000, 0x10_0000)),
            Err(SlotError::Inval)
        );
        // Moving beyond is refused, the slot stays where it was.
        assert_eq!(
            apply(&mut s, &req(0, top - 0x1000, 0x2000, 0x1000)),
            Err(SlotError::Inval)
        );
        assert_eq!(s[0].base_gfn, MAX_GFN - 1);
        // Overlap is checked first (EEXIST before EINVAL, as KVM).
        assert_eq!(
            apply(&mut s, &req(2, top - 0x1000, 0x2000, 0x10_0000)),
            Err(SlotError::Exist)
        );
        assert!(matches!(
            apply(&mut s, &req(0, 0, 0, 0)),
            Ok(Change::Delete(_))
        ));
    }

    /// A small deterministic generator (xorshift) for table shapes.
    fn xorshift(x: &mut u64) -> u64 {
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x
    }

    // The binary search finds exactly what a linear scan finds.
    #[test]
    fn sorted_lookup_matches_linear_scan() {
        let mut x = 0x9e37_79b9_7f4a_7c15;
        for round in 0..200 {
            let mut s: Vec<Slot> = Vec::new();
            let mut gfn = xorshift(&mut x) % 8;
            for id in 0..(round % 40) {
                let npages = 1 + xorshift(&mut x) % 6;
                s.push(Slot {
                    id,
                    base_gfn: gfn,
                    npages,
                    userspace_addr: 0x1000_0000 * (u64::from(id) + 1),
                    flags: 0,
                });
                gfn += npages + xorshift(&mut x) % 4;
            }
            for g in 0..gfn + 3 {
                let linear = s.iter().find(|sl| sl.contains(Gfn(g)));
                assert_eq!(find(&s, Gfn(g)), linear, "gfn {g}");
            }
        }
    }
}
