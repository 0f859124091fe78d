// SPDX-License-Identifier: GPL-2.0

//! The guest's second-level page table (AMD nested paging; the x86-64
//! long-mode format) and the pinned VMM pages it maps.
//!
//! Page lifetime: rkvm pins (FOLL_LONGTERM) each page of the VMM's memory
//! when the guest first touches it and unpins it when its slot is deleted or
//! moved, or the VM is destroyed. A pinned page cannot be freed under the
//! guest, so a VMM that munmaps guest memory cannot make the guest touch
//! memory it does not own (the guest keeps the old pages until the slot
//! changes); FOLL_LONGTERM makes fork() copy pinned pages for the child
//! rather than share them. KVM instead follows the VMM's page tables with
//! MMU notifiers; that is future work (Documentation/design.rst).

use crate::sys::mem::{Pages, PinnedPage};
use kernel::{prelude::*, rbtree::RBTree};

/// Present.
const PTE_P: u64 = 1 << 0;
/// Writable.
const PTE_RW: u64 = 1 << 1;
/// User: nested-paging accesses count as user accesses, so every level
/// needs it.
const PTE_US: u64 = 1 << 2;
/// Page size: a 2 MiB leaf at level 1.
const PTE_PS: u64 = 1 << 7;
/// The physical-address bits of an entry.
const PTE_ADDR: u64 = 0x000f_ffff_ffff_f000;

/// One page-table page and the tables its entries point to.
struct Table {
    page: Pages,
    children: KVec<Option<KBox<Table>>>,
}

impl Table {
    fn new() -> Result<Self> {
        let mut children = KVec::with_capacity(512, GFP_KERNEL)?;
        for _ in 0..512 {
            children.push(None, GFP_KERNEL)?;
        }
        Ok(Self {
            page: Pages::new(0)?,
            children,
        })
    }

    fn index(level: u32, gpa: u64) -> usize {
        ((gpa >> (12 + 9 * level)) & 511) as usize
    }

    /// Sets the leaf entry for `gpa`, allocating tables on the way down.
    fn map(&mut self, level: u32, gpa: u64, leaf: u64) -> Result {
        let i = Self::index(level, gpa);
        if level == 0 {
            self.page.as_u64s()[i] = leaf;
            return Ok(());
        }
        if self.children[i].is_none() {
            let t = KBox::new(Table::new()?, GFP_KERNEL)?;
            self.page.as_u64s()[i] = (t.page.phys() & PTE_ADDR) | PTE_P | PTE_RW | PTE_US;
            self.children[i] = Some(t);
        }
        match &mut self.children[i] {
            Some(t) => t.map(level - 1, gpa, leaf),
            None => Err(ENOMEM),
        }
    }

    /// Sets a 2 MiB leaf for `gpa` at level 1. `false` (nothing changed)
    /// if 4 KiB mappings already exist in that range.
    fn map_huge(&mut self, level: u32, gpa: u64, leaf: u64) -> Result<bool> {
        let i = Self::index(level, gpa);
        if level == 1 {
            if self.children[i].is_some() {
                return Ok(false);
            }
            self.page.as_u64s()[i] = leaf | PTE_PS;
            return Ok(true);
        }
        if self.children[i].is_none() {
            let t = KBox::new(Table::new()?, GFP_KERNEL)?;
            self.page.as_u64s()[i] = (t.page.phys() & PTE_ADDR) | PTE_P | PTE_RW | PTE_US;
            self.children[i] = Some(t);
        }
        match &mut self.children[i] {
            Some(t) => t.map_huge(level - 1, gpa, leaf),
            None => Err(ENOMEM),
        }
    }

    /// Clears the 2 MiB leaf for `gpa`.
    fn unmap_huge(&mut self, level: u32, gpa: u64) {
        let i = Self::index(level, gpa);
        if level == 1 {
            if self.children[i].is_none() {
                self.page.as_u64s()[i] = 0;
            }
        } else if let Some(t) = &mut self.children[i] {
            t.unmap_huge(level - 1, gpa);
        }
    }

    /// Changes the leaf entry for `gpa` with `f`, if the tables reach it.
    fn update(&mut self, level: u32, gpa: u64, f: impl FnOnce(u64) -> u64) {
        let i = Self::index(level, gpa);
        if level == 0 {
            let e = &mut self.page.as_u64s()[i];
            *e = f(*e);
        } else if let Some(t) = &mut self.children[i] {
            t.update(level - 1, gpa, f);
        }
    }
}

/// A VM's nested page table and the pages it maps.
pub(crate) struct Mmu {
    levels: u32,
    root: Table,
    /// Pinned VMM pages by guest frame number, and whether the nested
    /// entry currently allows writes.
    pinned: RBTree<u64, (PinnedPage, bool)>,
    /// 2 MiB mappings by `gfn >> 9`: the pin that keeps the huge folio
    /// allocated, and whether the entry allows writes.
    huge: RBTree<u64, (PinnedPage, bool)>,
}

impl Mmu {
    /// An empty table with `levels` levels (4, or 5 when the host uses
    /// 5-level paging: nested paging follows the host's depth).
    pub(crate) fn new(levels: u32) -> Result<Self> {
        Ok(Self {
            levels,
            root: Table::new()?,
            pinned: RBTree::new(),
            huge: RBTree::new(),
        })
    }

    /// The physical address of the top-level table (nCR3).
    pub(crate) fn root_pa(&self) -> u64 {
        self.root.page.phys()
    }

    /// Whether `gfn` is mapped writable (`Some(true)`), read-only, or not.
    pub(crate) fn mapped(&self, gfn: u64) -> Option<bool> {
        self.pinned
            .get(&gfn)
            .or_else(|| self.huge.get(&(gfn >> 9)))
            .map(|p| p.1)
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
        let writable = writable && page.writable();
        let leaf = (phys & PTE_ADDR) | PTE_P | PTE_US | if writable { PTE_RW } else { 0 };
        if !self.root.map_huge(self.levels - 1, base_gfn << 12, leaf)? {
            return Ok(Some(page));
        }
        self.huge
            .try_create_and_insert(base_gfn >> 9, (page, writable), GFP_KERNEL)?;
        Ok(None)
    }

    /// Maps guest frame `gfn` (not mapped yet) to the pinned page `page`,
    /// writable if `writable` (which needs a writable pin).
    pub(crate) fn map(&mut self, gfn: u64, page: PinnedPage, writable: bool) -> Result {
        let writable = writable && page.writable();
        let leaf = (page.phys() & PTE_ADDR) | PTE_P | PTE_US | if writable { PTE_RW } else { 0 };
        self.root.map(self.levels - 1, gfn << 12, leaf)?;
        self.pinned
            .try_create_and_insert(gfn, (page, writable), GFP_KERNEL)?;
        Ok(())
    }

    /// Lets the guest write a mapped frame (dirty logging saw the write).
    /// `false` if the frame is not mapped or its pin is read-only.
    pub(crate) fn make_writable(&mut self, gfn: u64) -> bool {
        let Some(p) = self.pinned.get_mut(&gfn) else {
            return false;
        };
        if !p.0.writable() {
            return false;
        }
        p.1 = true;
        self.root.update(self.levels - 1, gfn << 12, |e| e | PTE_RW);
        true
    }

    /// Makes the frames `base_gfn + i` for each set bit `i` of `mask`
    /// read-only, so the next write to each faults and is logged. Returns
    /// whether any entry changed (then the guest TLB must be flushed).
    pub(crate) fn write_protect(&mut self, base_gfn: u64, mask: u64) -> bool {
        let mut changed = false;
        for i in 0..64 {
            if mask & (1 << i) == 0 {
                continue;
            }
            let gfn = base_gfn + i;
            if let Some(p) = self.pinned.get_mut(&gfn) {
                if p.1 {
                    p.1 = false;
                    self.root
                        .update(self.levels - 1, gfn << 12, |e| e & !PTE_RW);
                    changed = true;
                }
            }
        }
        changed
    }

    /// Unmaps `npages` frames from `base_gfn` and returns their pins, which
    /// the caller drops only after every vCPU has flushed its TLB.
    pub(crate) fn unmap_range(&mut self, base_gfn: u64, npages: u64) -> Result<KVec<PinnedPage>> {
        let mut gone = KVec::new();
        let end = base_gfn + npages;
        loop {
            let next = self
                .huge
                .cursor_lower_bound(&(base_gfn >> 9))
                .map(|c| *c.current().0)
                .filter(|&h| h << 9 < end);
            let Some(h) = next else { break };
            self.root.unmap_huge(self.levels - 1, h << 21);
            if let Some((p, _)) = self.huge.remove(&h) {
                gone.push(p, GFP_KERNEL)?;
            }
        }
        loop {
            let next = self
                .pinned
                .cursor_lower_bound(&base_gfn)
                .map(|c| *c.current().0)
                .filter(|&g| g < end);
            let Some(gfn) = next else { break };
            self.root.update(self.levels - 1, gfn << 12, |_| 0);
            if let Some((p, _)) = self.pinned.remove(&gfn) {
                gone.push(p, GFP_KERNEL)?;
            }
        }
        Ok(gone)
    }
}
