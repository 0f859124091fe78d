// SPDX-License-Identifier: GPL-2.0

//! Guest memory: the VM's memory slots, and every access rkvm makes to the
//! guest's memory on its behalf (slot lookup, copies through the VMM's
//! mapping, dirty bits, the guest page walk and linear accesses).
//!
//! The slot table is read under SRCU, as KVM reads its memslots: a vCPU
//! takes one [`Mem`] view for an exit that needs guest memory and passes it
//! down, so an exit costs one SRCU read section and no lock that other
//! vCPUs wait for. The table is sorted by base frame (lookups are binary
//! searches) and never changed in place: a slot change builds a new table,
//! publishes it and waits for the readers of the old one
//! ([`crate::vm::Vm`] then unmaps what the change removed).

use crate::{
    addr::{Gfn, Gpa, Gva, Hva},
    memslot::{self, Change, Slot},
    paging::{self, Access, GuestPhys, MemError, WalkConfig, WalkError},
    sys::{
        srcu::{SrcuBox, SrcuRef},
        uaccess,
    },
};
use core::sync::atomic::{AtomicU64, Ordering};
use kernel::{prelude::*, sync::Arc};

/// A slot's dirty bitmap: one bit per page, set by vCPUs as they write.
pub(crate) struct DirtyBitmap(KVec<AtomicU64>);

impl DirtyBitmap {
    /// A clear bitmap for `slot`.
    pub(crate) fn new(slot: &Slot) -> Result<Arc<Self>> {
        let n = slot.bitmap_words();
        let mut words = KVec::with_capacity(n, GFP_KERNEL_ACCOUNT)?;
        for _ in 0..n {
            words.push(AtomicU64::new(0), GFP_KERNEL_ACCOUNT)?;
        }
        Ok(Arc::new(Self(words), GFP_KERNEL_ACCOUNT)?)
    }

    /// Marks page `index` of the slot dirty.
    pub(crate) fn mark(&self, index: u64) {
        if let Some(w) = self.0.get((index / 64) as usize) {
            w.fetch_or(1 << (index % 64), Ordering::Relaxed);
        }
    }

    /// The number of 64-bit words.
    pub(crate) fn words(&self) -> usize {
        self.0.len()
    }

    /// Takes word `w` (pages `64 * w ..`), leaving it clear.
    pub(crate) fn take(&self, w: usize) -> u64 {
        self.0[w].swap(0, Ordering::Relaxed)
    }
}

/// The memory slots at one moment: sorted by base frame, with the dirty
/// bitmap (at the same index) of each slot that logs writes.
pub(crate) struct SlotTable {
    slots: KVec<Slot>,
    dirty: KVec<Option<Arc<DirtyBitmap>>>,
}

impl SlotTable {
    /// A table without slots.
    pub(crate) fn empty() -> Self {
        Self {
            slots: KVec::new(),
            dirty: KVec::new(),
        }
    }

    /// The slots, sorted by base frame.
    pub(crate) fn slots(&self) -> &[Slot] {
        &self.slots
    }

    /// The slot holding `gfn` and its dirty bitmap (if it logs writes).
    pub(crate) fn find(&self, gfn: Gfn) -> Option<(&Slot, Option<&DirtyBitmap>)> {
        let i = memslot::position(&self.slots, gfn)?;
        Some((&self.slots[i], self.dirty[i].as_deref()))
    }

    /// Slot `id` and its dirty bitmap, if it exists and logs writes.
    pub(crate) fn logging(&self, id: u32) -> Option<(&Slot, &DirtyBitmap)> {
        let i = self.slots.iter().position(|s| s.id == id)?;
        Some((&self.slots[i], self.dirty[i].as_deref()?))
    }

    /// A copy of this table with `change` applied. A slot that logs writes
    /// keeps its bitmap if it logged before (KVM keeps it across a move or
    /// a flags change) and gets a clear one otherwise.
    pub(crate) fn with_change(&self, change: &Change) -> Result<KBox<Self>> {
        let (remove, add) = match *change {
            Change::Unchanged => (None, None),
            Change::Create(new) => (None, Some(new)),
            Change::Delete(old) => (Some(old), None),
            Change::Move { old, new } | Change::FlagsOnly { old, new } => (Some(old), Some(new)),
        };
        let n = self.slots.len() + 1;
        let mut t = KBox::new(
            Self {
                slots: KVec::with_capacity(n, GFP_KERNEL_ACCOUNT)?,
                dirty: KVec::with_capacity(n, GFP_KERNEL_ACCOUNT)?,
            },
            GFP_KERNEL_ACCOUNT,
        )?;
        let mut kept = None;
        for (s, d) in self.slots.iter().zip(self.dirty.iter()) {
            if remove.is_some_and(|r| r.id == s.id) {
                kept = d.clone();
                continue;
            }
            t.slots.push(*s, GFP_KERNEL_ACCOUNT)?;
            t.dirty.push(d.clone(), GFP_KERNEL_ACCOUNT)?;
        }
        if let Some(new) = add {
            let bits = match kept {
                _ if !new.logs_dirty() => None,
                Some(b) => Some(b),
                None => Some(DirtyBitmap::new(&new)?),
            };
            let i = memslot::insert_position(&t.slots, new.base_gfn);
            t.slots.insert_within_capacity(i, new).map_err(|_| ENOMEM)?;
            t.dirty
                .insert_within_capacity(i, bits)
                .map_err(|_| ENOMEM)?;
        }
        Ok(t)
    }
}

/// Why guest-physical memory could not be accessed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MemFault {
    /// Some byte is in no slot, or a write reaches a read-only slot: the
    /// access is MMIO.
    NotRam,
    /// The VMM's memory behind the slot cannot be accessed (`EFAULT`).
    Unmapped,
}

/// Why a guest-linear access failed, and where.
#[derive(Clone, Copy, Debug)]
pub(crate) enum LinearFault {
    /// The guest's page walk failed at this linear address.
    Walk(Gva, WalkError),
    /// The page was translated, but its guest-physical memory could not be
    /// accessed (it is not RAM, or the VMM's mapping is gone).
    Mem(Gva),
}

/// The vCPU state a guest-linear access depends on: its paging mode and
/// whether it runs at CPL 3.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Paging {
    cfg: WalkConfig,
    user: bool,
}

impl Paging {
    /// Paging as the registers set it up, for a guest with MAXPHYADDR
    /// `maxphyaddr`, following AMD's or Intel's reserved-bit rules.
    pub(crate) fn new(
        cr: [u64; 3],
        efer: u64,
        rflags: u64,
        cpl: u8,
        maxphyaddr: u8,
        amd: bool,
    ) -> Self {
        let [cr0, cr3, cr4] = cr;
        let mut cfg = WalkConfig::from_regs(cr0, cr3, cr4, efer, rflags);
        cfg.amd = amd;
        cfg.maxphyaddr = maxphyaddr;
        Self {
            cfg,
            user: cpl == 3,
        }
    }

    /// `access` as made by this vCPU (from CPL 3 or not).
    fn access(&self, access: Access) -> Access {
        access.user(self.user)
    }
}

/// A view of guest memory for the duration of one exit (or ioctl): the slot
/// table as it was when the view was taken.
pub(crate) struct Mem<'a> {
    table: SrcuRef<'a, SlotTable>,
}

impl<'a> Mem<'a> {
    /// The view of `table`.
    pub(crate) fn new(table: SrcuRef<'a, SlotTable>) -> Self {
        Self { table }
    }

    /// The slot table.
    pub(crate) fn table(&self) -> &SlotTable {
        &self.table
    }

    /// The slot holding `gfn`.
    pub(crate) fn slot(&self, gfn: Gfn) -> Option<&Slot> {
        self.table.find(gfn).map(|(s, _)| s)
    }

    /// Whether `len` bytes at `gpa` are guest RAM (and writable RAM, for a
    /// write).
    pub(crate) fn is_ram(&self, gpa: Gpa, len: u64, write: bool) -> bool {
        let mut a = gpa;
        let end = gpa.0.saturating_add(len);
        while a.0 < end {
            match self.slot(a.gfn()) {
                Some(s) if !write || !s.readonly() => a = s.end().gpa(),
                _ => return false,
            }
        }
        true
    }

    /// Each page-sized part of `len` bytes at `gpa`, with the slot (and
    /// dirty bitmap) it lies in, the VMM address behind it, and the range
    /// of the access it is; `NotRam` before anything is done if some part
    /// is not in a slot (or is read-only, for a write).
    fn parts(
        &self,
        gpa: Gpa,
        len: usize,
        write: bool,
        mut f: impl FnMut(Hva, core::ops::Range<usize>) -> core::result::Result<(), MemFault>,
    ) -> core::result::Result<(), MemFault> {
        if !self.is_ram(gpa, len as u64, write) {
            return Err(MemFault::NotRam);
        }
        let mut done = 0;
        while done < len {
            let a = gpa.add(done as u64);
            let n = (a.to_page_end() as usize).min(len - done);
            let (slot, dirty) = self.table.find(a.gfn()).ok_or(MemFault::NotRam)?;
            f(slot.hva(a.gfn()).add(a.page_offset()), done..done + n)?;
            // Writes rkvm makes for the guest (emulation, string IN) are
            // guest writes for dirty logging too.
            if let (true, Some(d)) = (write, dirty) {
                d.mark(a.gfn().0 - slot.base_gfn);
            }
            done += n;
        }
        Ok(())
    }

    /// Copies guest-physical memory at `gpa` into `buf`, through the VMM's
    /// mapping.
    pub(crate) fn read(&self, gpa: Gpa, buf: &mut [u8]) -> core::result::Result<(), MemFault> {
        self.parts(gpa, buf.len(), false, |hva, r| {
            uaccess::read_user(hva.0 as usize, &mut buf[r]).map_err(|_| MemFault::Unmapped)
        })
    }

    /// Copies `buf` into guest-physical memory at `gpa` (nothing is written
    /// if some byte is not writable RAM).
    pub(crate) fn write(&self, gpa: Gpa, buf: &[u8]) -> core::result::Result<(), MemFault> {
        self.parts(gpa, buf.len(), true, |hva, r| {
            uaccess::write_user(hva.0 as usize, &buf[r]).map_err(|_| MemFault::Unmapped)
        })
    }

    /// Translates `gva` through the guest's page tables.
    pub(crate) fn translate(
        &self,
        p: &Paging,
        gva: Gva,
        access: Access,
    ) -> core::result::Result<Gpa, WalkError> {
        paging::translate(&mut Walker(self), &p.cfg, gva.0, p.access(access)).map(|t| Gpa(t.gpa))
    }

    /// Runs `f` on each page-sized part of `len` bytes at `gva`: its
    /// guest-physical address and its range in the access.
    fn linear_parts(
        &self,
        p: &Paging,
        gva: Gva,
        len: usize,
        access: Access,
        mut f: impl FnMut(Gpa, core::ops::Range<usize>) -> core::result::Result<(), MemFault>,
    ) -> core::result::Result<(), LinearFault> {
        let mut done = 0;
        while done < len {
            let a = gva.add(done as u64);
            let n = (a.to_page_end() as usize).min(len - done);
            let gpa = self
                .translate(p, a, access)
                .map_err(|e| LinearFault::Walk(a, e))?;
            f(gpa, done..done + n).map_err(|_| LinearFault::Mem(a))?;
            done += n;
        }
        Ok(())
    }

    /// Reads guest-linear memory at `gva`.
    pub(crate) fn read_linear(
        &self,
        p: &Paging,
        gva: Gva,
        buf: &mut [u8],
    ) -> core::result::Result<(), LinearFault> {
        self.linear_parts(p, gva, buf.len(), Access::READ, |gpa, r| {
            self.read(gpa, &mut buf[r])
        })
    }

    /// Writes guest-linear memory at `gva`.
    pub(crate) fn write_linear(
        &self,
        p: &Paging,
        gva: Gva,
        buf: &[u8],
    ) -> core::result::Result<(), LinearFault> {
        self.linear_parts(p, gva, buf.len(), Access::WRITE, |gpa, r| {
            self.write(gpa, &buf[r])
        })
    }

    /// Up to 15 instruction bytes at linear `gva`; fewer if the instruction
    /// crosses into a page that cannot be fetched or is not RAM.
    pub(crate) fn fetch(&self, p: &Paging, gva: Gva) -> ([u8; 15], usize) {
        let mut bytes = [0u8; 15];
        let mut n = 0;
        while n < bytes.len() {
            let a = gva.add(n as u64);
            let chunk = (a.to_page_end() as usize).min(bytes.len() - n);
            let ok = self
                .translate(p, a, Access::FETCH)
                .is_ok_and(|gpa| self.read(gpa, &mut bytes[n..n + chunk]).is_ok());
            if !ok {
                break;
            }
            n += chunk;
        }
        (bytes, n)
    }
}

/// The view of guest memory for one exit, taken when first needed: an exit
/// takes at most one SRCU read of the slot table, and exits that touch no
/// guest memory (most port IO) take none.
pub(crate) struct MemOnce<'a> {
    slots: &'a SrcuBox<SlotTable>,
    view: Option<Mem<'a>>,
}

impl<'a> MemOnce<'a> {
    /// A view of `slots`, not taken yet.
    pub(crate) fn new(slots: &'a SrcuBox<SlotTable>) -> Self {
        Self { slots, view: None }
    }

    /// The view, taken now if it was not yet.
    pub(crate) fn get(&mut self) -> &Mem<'a> {
        let slots = self.slots;
        self.view.get_or_insert_with(|| Mem::new(slots.read()))
    }
}

/// Guest-physical memory as the page walker reads it.
struct Walker<'m, 'a>(&'m Mem<'a>);

impl Walker<'_, '_> {
    fn read<const N: usize>(&self, gpa: u64) -> core::result::Result<[u8; N], MemError> {
        let mut b = [0u8; N];
        self.0.read(Gpa(gpa), &mut b).map_err(|_| MemError)?;
        Ok(b)
    }
}

// The compare-and-exchange is not atomic against other vCPUs: a racing
// update of the same entry's accessed/dirty bits can be lost, which only
// costs the guest precision.
impl GuestPhys for Walker<'_, '_> {
    fn read_u32(&mut self, gpa: u64) -> core::result::Result<u32, MemError> {
        self.read(gpa).map(u32::from_le_bytes)
    }

    fn read_u64(&mut self, gpa: u64) -> core::result::Result<u64, MemError> {
        self.read(gpa).map(u64::from_le_bytes)
    }

    fn cmpxchg_u32(
        &mut self,
        gpa: u64,
        old: u32,
        new: u32,
    ) -> core::result::Result<bool, MemError> {
        if self.read_u32(gpa)? != old {
            return Ok(false);
        }
        self.0
            .write(Gpa(gpa), &new.to_le_bytes())
            .map_err(|_| MemError)?;
        Ok(true)
    }

    fn cmpxchg_u64(
        &mut self,
        gpa: u64,
        old: u64,
        new: u64,
    ) -> core::result::Result<bool, MemError> {
        if self.read_u64(gpa)? != old {
            return Ok(false);
        }
        self.0
            .write(Gpa(gpa), &new.to_le_bytes())
            .map_err(|_| MemError)?;
        Ok(true)
    }
}
