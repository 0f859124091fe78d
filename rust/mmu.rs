// SPDX-License-Identifier: GPL-2.0

//! The guest's second-level page table (AMD nested paging in the x86-64
//! long-mode format, or Intel EPT) and the pinned VMM pages it maps.
//!
//! Page lifetime: rkvm pins (FOLL_LONGTERM) each page of the VMM's memory
//! when the guest first touches it and unpins it when its slot is deleted or
//! moved, or the VM is destroyed. A pinned page cannot be freed under the
//! guest, so a VMM that munmaps guest memory cannot make the guest touch
//! memory it does not own (the guest keeps the old pages until the slot
//! changes); FOLL_LONGTERM makes fork() copy pinned pages for the child
//! rather than share them. KVM instead follows the VMM's page tables with
//! MMU notifiers; that is future work (Documentation/design.rst).
//!
//! Unmapping never allocates and is ordered: the entries are cleared, the
//! caller's flush makes every vCPU drop the translations it may cache, and
//! only then are the pins released ([`Mmu::unmap_range`]).

use crate::{
    addr::Gfn,
    paging::{PTE_ADDR, PTE_P, PTE_PS, PTE_RW, PTE_US},
    sys::mem::{Pages, PinnedPage},
    vmcs::ept,
};
use kernel::prelude::*;

// Nested paging uses the long-mode entry format. Every level needs US:
// nested-paging accesses count as user accesses. PS (a 2 MiB leaf at level
// 1) is the same bit in EPT.

/// The entry format of the second-level table: AMD nested paging uses the
/// ordinary long-mode format, Intel EPT its own (R/W/X and a memory type).
/// Both have the same shape: 512 entries per table, 4 KiB tables, bit 7
/// for a 2 MiB leaf.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    /// AMD nested paging.
    Npt,
    /// Intel extended page tables.
    Ept,
}

impl Format {
    /// An entry pointing at a next-level table.
    fn table(self, pa: u64) -> u64 {
        match self {
            Self::Npt => (pa & PTE_ADDR) | PTE_P | PTE_RW | PTE_US,
            Self::Ept => ept::table(pa),
        }
    }

    /// A leaf entry.
    fn leaf(self, pa: u64, writable: bool, large: bool) -> u64 {
        match self {
            Self::Npt => {
                (pa & PTE_ADDR)
                    | PTE_P
                    | PTE_US
                    | if writable { PTE_RW } else { 0 }
                    | if large { PTE_PS } else { 0 }
            }
            Self::Ept => ept::leaf(pa, writable, large),
        }
    }

    fn present(self, e: u64) -> bool {
        match self {
            Self::Npt => e & PTE_P != 0,
            Self::Ept => ept::present(e),
        }
    }

    /// The write-permission bit.
    fn write_bit(self) -> u64 {
        match self {
            Self::Npt => PTE_RW,
            Self::Ept => ept::WRITE,
        }
    }
}

/// One page-table page, the tables its entries point to, and the pins that
/// keep the pages its leaf entries map alive. The pins live beside the
/// entries (no per-fault allocation): a 4 KiB pin in the level-0 table, the
/// pin of a 2 MiB mapping in the level-1 table.
///
/// A pin beside a cleared entry belongs to a mapping that is being removed:
/// a vCPU may still hold its translation until the TLB flush, so it is
/// released only after it ([`Table::release_cleared`]).
struct Table {
    fmt: Format,
    page: Pages,
    /// Next-level tables (none at level 0).
    children: KVec<Option<KBox<Table>>>,
    /// Pins of leaf entries (levels 0 and 1 only).
    pins: KVec<Option<PinnedPage>>,
}

impl Table {
    fn new(fmt: Format, level: u32) -> Result<Self> {
        let slots = |used: bool| if used { 512 } else { 0 };
        let mut children = KVec::with_capacity(slots(level > 0), GFP_KERNEL_ACCOUNT)?;
        for _ in 0..slots(level > 0) {
            children.push(None, GFP_KERNEL_ACCOUNT)?;
        }
        let mut pins = KVec::with_capacity(slots(level <= 1), GFP_KERNEL_ACCOUNT)?;
        for _ in 0..slots(level <= 1) {
            pins.push(None, GFP_KERNEL_ACCOUNT)?;
        }
        Ok(Self {
            fmt,
            page: Pages::new_page_table()?,
            children,
            pins,
        })
    }

    fn index(level: u32, gpa: u64) -> usize {
        ((gpa >> (12 + 9 * level)) & 511) as usize
    }

    fn entry(&mut self, i: usize) -> &mut u64 {
        &mut self.page.as_u64s()[i]
    }

    fn pin(&self, i: usize) -> Option<&PinnedPage> {
        self.pins.get(i)?.as_ref()
    }

    fn child_mut(&mut self, i: usize) -> Option<&mut Table> {
        self.children.get_mut(i)?.as_deref_mut()
    }

    /// The table one level down for `i` (this table is at `level`), created
    /// if missing.
    fn child(&mut self, level: u32, i: usize) -> Result<&mut Table> {
        if self.children[i].is_none() {
            let t = KBox::new(Table::new(self.fmt, level - 1)?, GFP_KERNEL_ACCOUNT)?;
            *self.entry(i) = self.fmt.table(t.page.phys());
            self.children[i] = Some(t);
        }
        self.children[i].as_deref_mut().ok_or(ENOMEM)
    }

    /// Sets the 4 KiB leaf for `gpa` and keeps its pin. The entry is empty:
    /// a pin still beside it would be one awaiting its flush, which the
    /// caller's lock rules out.
    fn map(&mut self, level: u32, gpa: u64, leaf: u64, pin: PinnedPage) -> Result {
        let i = Self::index(level, gpa);
        if level == 0 {
            *self.entry(i) = leaf;
            self.pins[i] = Some(pin);
            return Ok(());
        }
        self.child(level, i)?.map(level - 1, gpa, leaf, pin)
    }

    /// Sets a 2 MiB leaf for `gpa` at level 1 and keeps its pin; gives the
    /// pin back if 4 KiB mappings already exist in that range.
    fn map_huge(
        &mut self,
        level: u32,
        gpa: u64,
        leaf: u64,
        pin: PinnedPage,
    ) -> Result<Option<PinnedPage>> {
        let i = Self::index(level, gpa);
        if level == 1 {
            if self.children[i].is_some() {
                return Ok(Some(pin));
            }
            *self.entry(i) = leaf;
            self.pins[i] = Some(pin);
            return Ok(None);
        }
        self.child(level, i)?.map_huge(level - 1, gpa, leaf, pin)
    }

    /// The leaf entry (4 KiB or 2 MiB) that maps `gpa`, if any, and whether
    /// its pin allows writes.
    fn leaf(&mut self, level: u32, gpa: u64) -> Option<(u64, bool)> {
        let i = Self::index(level, gpa);
        let e = *self.entry(i);
        if level == 0 || (level == 1 && e & PTE_PS != 0) {
            let writable_pin = self.pin(i).is_some_and(|p| p.writable());
            return self.fmt.present(e).then_some((e, writable_pin));
        }
        self.child_mut(i)?.leaf(level - 1, gpa)
    }

    /// Sets or clears RW in the 4 KiB leaf for `gpa`; whether it changed.
    fn set_rw(&mut self, level: u32, gpa: u64, rw: bool) -> bool {
        let i = Self::index(level, gpa);
        if level == 0 {
            let (fmt, w) = (self.fmt, self.fmt.write_bit());
            let e = self.entry(i);
            if !fmt.present(*e) || (*e & w != 0) == rw {
                return false;
            }
            *e = if rw { *e | w } else { *e & !w };
            return true;
        }
        match self.child_mut(i) {
            Some(t) => t.set_rw(level - 1, gpa, rw),
            None => false,
        }
    }

    /// The entries of this table (at `level`, covering GPAs from `base`)
    /// that overlap `[start, end)`.
    fn span(level: u32, base: u64, start: u64, end: u64) -> impl Iterator<Item = (usize, u64)> {
        let span = 1u64 << (12 + 9 * level);
        let first = (start.saturating_sub(base) / span) as usize;
        (first..512)
            .map(move |i| (i, base + i as u64 * span))
            .take_while(move |&(_, lo)| lo < end)
    }

    /// Clears every leaf entry in this table's part of `[start, end)`,
    /// leaving the pins beside them; whether any was mapped.
    fn clear_range(&mut self, level: u32, base: u64, start: u64, end: u64) -> bool {
        let mut cleared = false;
        for (i, lo) in Self::span(level, base, start, end) {
            if self.pin(i).is_some() {
                *self.entry(i) = 0;
                cleared = true;
            } else if let Some(t) = self.child_mut(i) {
                cleared |= t.clear_range(level - 1, lo, start, end);
            }
        }
        cleared
    }

    /// Drops the pins beside cleared entries in `[start, end)`.
    fn release_cleared(&mut self, level: u32, base: u64, start: u64, end: u64) {
        for (i, lo) in Self::span(level, base, start, end) {
            let e = *self.entry(i);
            if self.pin(i).is_some() && !self.fmt.present(e) {
                self.pins[i] = None;
            } else if let Some(t) = self.child_mut(i) {
                t.release_cleared(level - 1, lo, start, end);
            }
        }
    }
}

/// A VM's second-level page table and the pages it maps.
pub(crate) struct Mmu {
    fmt: Format,
    levels: u32,
    /// 2 MiB leaves allowed.
    huge: bool,
    root: Table,
}

impl Mmu {
    /// An empty table in format `fmt` with `levels` levels (4 or 5).
    pub(crate) fn new(fmt: Format, levels: u32, huge: bool) -> Result<Self> {
        Ok(Self {
            fmt,
            levels,
            huge,
            root: Table::new(fmt, levels - 1)?,
        })
    }

    /// The physical address of the top-level table (nCR3, or the EPT
    /// pointer's address part).
    pub(crate) fn root_pa(&self) -> u64 {
        self.root.page.phys()
    }

    /// Whether `gfn` is mapped writable (`Some(true)`), read-only, or not.
    pub(crate) fn mapped(&mut self, gfn: Gfn) -> Option<bool> {
        self.root
            .leaf(self.levels - 1, gfn.gpa().0)
            .map(|(e, _)| e & self.fmt.write_bit() != 0)
    }

    /// Maps guest frame `gfn` (not mapped yet) to the pinned page `page`,
    /// writable if `writable` (which needs a writable pin).
    pub(crate) fn map(&mut self, gfn: Gfn, page: PinnedPage, writable: bool) -> Result {
        let writable = writable && page.writable();
        let leaf = self.fmt.leaf(page.phys(), writable, false);
        self.root.map(self.levels - 1, gfn.gpa().0, leaf, page)
    }

    /// Maps the 2 MiB of guest memory at `base_gfn` (2 MiB aligned) to the
    /// huge folio range at `phys`, kept alive by `page`'s pin. `Ok(None)`
    /// if done; `Ok(Some(page))` gives the pin back when 4 KiB mappings
    /// already exist there (the caller maps 4 KiB instead).
    pub(crate) fn map_2m(
        &mut self,
        base_gfn: Gfn,
        phys: u64,
        page: PinnedPage,
        writable: bool,
    ) -> Result<Option<PinnedPage>> {
        if !self.huge {
            return Ok(Some(page));
        }
        let writable = writable && page.writable();
        let leaf = self.fmt.leaf(phys, writable, true);
        self.root
            .map_huge(self.levels - 1, base_gfn.gpa().0, leaf, page)
    }

    /// Lets the guest write a mapped 4 KiB frame (dirty logging saw the
    /// write). `false` if the frame is not mapped or its pin is read-only.
    pub(crate) fn make_writable(&mut self, gfn: Gfn) -> bool {
        match self.root.leaf(self.levels - 1, gfn.gpa().0) {
            Some((_, true)) => {
                self.root.set_rw(self.levels - 1, gfn.gpa().0, true);
                true
            }
            _ => false,
        }
    }

    /// Makes the frames `base_gfn + i` for each set bit `i` of `mask`
    /// read-only, so the next write to each faults and is logged. Returns
    /// whether any entry changed (then the guest TLB must be flushed).
    pub(crate) fn write_protect(&mut self, base_gfn: Gfn, mask: u64) -> bool {
        let mut changed = false;
        for i in 0..64 {
            if mask & (1 << i) != 0 {
                changed |= self
                    .root
                    .set_rw(self.levels - 1, base_gfn.add(i).gpa().0, false);
            }
        }
        changed
    }

    /// Unmaps `npages` frames from `base_gfn`: clears their entries, calls
    /// `flush` (which must make every vCPU drop the guest translations it
    /// may cache) if any was mapped, and only then releases the pages.
    /// Allocates nothing, so it cannot fail half-way.
    pub(crate) fn unmap_range(&mut self, base_gfn: Gfn, npages: u64, flush: impl FnOnce()) {
        let (start, end) = (base_gfn.gpa().0, base_gfn.add(npages).gpa().0);
        let top = self.levels - 1;
        if self.root.clear_range(top, 0, start, end) {
            flush();
            self.root.release_cleared(top, 0, start, end);
        }
    }
}
