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

use crate::{
    sys::mem::{Pages, PinnedPage},
    vmcs::ept,
};
use kernel::prelude::*;

/// Present.
const PTE_P: u64 = 1 << 0;
/// Writable.
const PTE_RW: u64 = 1 << 1;
/// User: nested-paging accesses count as user accesses, so every level
/// needs it.
const PTE_US: u64 = 1 << 2;
/// Page size: a 2 MiB leaf at level 1 (the same bit in both formats).
const PTE_PS: u64 = 1 << 7;
/// The physical-address bits of an entry.
const PTE_ADDR: u64 = 0x000f_ffff_ffff_f000;

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
struct Table {
    fmt: Format,
    page: Pages,
    children: KVec<Option<KBox<Table>>>,
    pins: KVec<Option<PinnedPage>>,
}

impl Table {
    fn new(fmt: Format) -> Result<Self> {
        let mut children = KVec::with_capacity(512, GFP_KERNEL)?;
        let mut pins = KVec::with_capacity(512, GFP_KERNEL)?;
        for _ in 0..512 {
            children.push(None, GFP_KERNEL)?;
            pins.push(None, GFP_KERNEL)?;
        }
        Ok(Self {
            fmt,
            page: Pages::new(0)?,
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

    /// The table one level down for `i`, created if missing.
    fn child(&mut self, i: usize) -> Result<&mut Table> {
        if self.children[i].is_none() {
            let t = KBox::new(Table::new(self.fmt)?, GFP_KERNEL)?;
            *self.entry(i) = self.fmt.table(t.page.phys());
            self.children[i] = Some(t);
        }
        self.children[i].as_deref_mut().ok_or(ENOMEM)
    }

    /// Sets the 4 KiB leaf for `gpa` and keeps its pin.
    fn map(&mut self, level: u32, gpa: u64, leaf: u64, pin: PinnedPage) -> Result {
        let i = Self::index(level, gpa);
        if level == 0 {
            *self.entry(i) = leaf;
            self.pins[i] = Some(pin);
            return Ok(());
        }
        self.child(i)?.map(level - 1, gpa, leaf, pin)
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
        self.child(i)?.map_huge(level - 1, gpa, leaf, pin)
    }

    /// The leaf entry (4 KiB or 2 MiB) that maps `gpa`, if any.
    fn leaf(&mut self, level: u32, gpa: u64) -> Option<(u64, bool)> {
        let i = Self::index(level, gpa);
        let e = *self.entry(i);
        if level == 0 || (level == 1 && e & PTE_PS != 0) {
            let writable_pin = self.pins[i].as_ref().is_some_and(|p| p.writable());
            return self.fmt.present(e).then_some((e, writable_pin));
        }
        self.children[i].as_deref_mut()?.leaf(level - 1, gpa)
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
        match self.children[i].as_deref_mut() {
            Some(t) => t.set_rw(level - 1, gpa, rw),
            None => false,
        }
    }

    /// Clears every leaf in this table's part of `[start, end)` (GPAs; the
    /// table covers from `base`) and moves their pins to `out`.
    fn unmap_range(
        &mut self,
        level: u32,
        base: u64,
        start: u64,
        end: u64,
        out: &mut KVec<PinnedPage>,
    ) -> Result {
        let span = 1u64 << (12 + 9 * level);
        let first = if start > base {
            ((start - base) / span) as usize
        } else {
            0
        };
        for i in first..512 {
            let lo = base + i as u64 * span;
            if lo >= end {
                break;
            }
            if let Some(p) = self.pins[i].take() {
                *self.entry(i) = 0;
                out.push(p, GFP_KERNEL)?;
            } else if let Some(t) = self.children[i].as_deref_mut() {
                t.unmap_range(level - 1, lo, start, end, out)?;
            }
        }
        Ok(())
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
            root: Table::new(fmt)?,
        })
    }

    /// The physical address of the top-level table (nCR3, or the EPT
    /// pointer's address part).
    pub(crate) fn root_pa(&self) -> u64 {
        self.root.page.phys()
    }

    /// Whether `gfn` is mapped writable (`Some(true)`), read-only, or not.
    pub(crate) fn mapped(&mut self, gfn: u64) -> Option<bool> {
        self.root
            .leaf(self.levels - 1, gfn << 12)
            .map(|(e, _)| e & self.fmt.write_bit() != 0)
    }

    /// Maps guest frame `gfn` (not mapped yet) to the pinned page `page`,
    /// writable if `writable` (which needs a writable pin).
    pub(crate) fn map(&mut self, gfn: u64, page: PinnedPage, writable: bool) -> Result {
        let writable = writable && page.writable();
        let leaf = self.fmt.leaf(page.phys(), writable, false);
        self.root.map(self.levels - 1, gfn << 12, leaf, page)
    }

    /// Maps the 2 MiB of guest memory at `base_gfn` (2 MiB aligned) to the
    /// huge folio range at `phys`, kept alive by `page`'s pin. `Ok(None)`
    /// if done; `Ok(Some(page))` gives the pin back when 4 KiB mappings
    /// already exist there (the caller maps 4 KiB instead).
    pub(crate) fn map_2m(
        &mut self,
        base_gfn: u64,
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
            .map_huge(self.levels - 1, base_gfn << 12, leaf, page)
    }

    /// Lets the guest write a mapped 4 KiB frame (dirty logging saw the
    /// write). `false` if the frame is not mapped or its pin is read-only.
    pub(crate) fn make_writable(&mut self, gfn: u64) -> bool {
        match self.root.leaf(self.levels - 1, gfn << 12) {
            Some((_, true)) => {
                self.root.set_rw(self.levels - 1, gfn << 12, true);
                true
            }
            _ => false,
        }
    }

    /// Makes the frames `base_gfn + i` for each set bit `i` of `mask`
    /// read-only, so the next write to each faults and is logged. Returns
    /// whether any entry changed (then the guest TLB must be flushed).
    pub(crate) fn write_protect(&mut self, base_gfn: u64, mask: u64) -> bool {
        let mut changed = false;
        for i in 0..64 {
            if mask & (1 << i) != 0 {
                changed |= self
                    .root
                    .set_rw(self.levels - 1, (base_gfn + i) << 12, false);
            }
        }
        changed
    }

    /// Unmaps `npages` frames from `base_gfn` and returns their pins, which
    /// the caller drops only after every vCPU has flushed its TLB.
    pub(crate) fn unmap_range(&mut self, base_gfn: u64, npages: u64) -> Result<KVec<PinnedPage>> {
        let mut gone = KVec::new();
        let (start, end) = (base_gfn << 12, (base_gfn + npages) << 12);
        self.root
            .unmap_range(self.levels - 1, 0, start, end, &mut gone)?;
        Ok(gone)
    }
}
