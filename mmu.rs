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

    /// Clears the leaf entry for `gpa`, if there is one.
    fn unmap(&mut self, level: u32, gpa: u64) {
        let i = Self::index(level, gpa);
        if level == 0 {
            self.page.as_u64s()[i] = 0;
        } else if let Some(t) = &mut self.children[i] {
            t.unmap(level - 1, gpa);
        }
    }
}

/// A VM's nested page table and the pages it maps.
pub(crate) struct Mmu {
    levels: u32,
    root: Table,
    /// Pinned VMM pages by guest frame number.
    pinned: RBTree<u64, PinnedPage>,
}

impl Mmu {
    /// An empty table with `levels` levels (4, or 5 when the host uses
    /// 5-level paging: nested paging follows the host's depth).
    pub(crate) fn new(levels: u32) -> Result<Self> {
        Ok(Self {
            levels,
            root: Table::new()?,
            pinned: RBTree::new(),
        })
    }

    /// The physical address of the top-level table (nCR3).
    pub(crate) fn root_pa(&self) -> u64 {
        self.root.page.phys()
    }

    /// Whether `gfn` is mapped writable (`Some(true)`), read-only, or not.
    pub(crate) fn mapped(&self, gfn: u64) -> Option<bool> {
        self.pinned.get(&gfn).map(|p| p.writable())
    }

    /// Maps guest frame `gfn` to the pinned page `page`, replacing any
    /// previous mapping of that frame.
    pub(crate) fn map(&mut self, gfn: u64, page: PinnedPage) -> Result {
        let leaf =
            (page.phys() & PTE_ADDR) | PTE_P | PTE_US | if page.writable() { PTE_RW } else { 0 };
        self.root.map(self.levels - 1, gfn << 12, leaf)?;
        // The old pin (if any) drops here, after its entry was replaced;
        // callers flush the guest TLB before the page can be reused.
        self.pinned.try_create_and_insert(gfn, page, GFP_KERNEL)?;
        Ok(())
    }

    /// Unmaps `npages` frames from `base_gfn` and returns their pins, which
    /// the caller drops only after every vCPU has flushed its TLB.
    pub(crate) fn unmap_range(&mut self, base_gfn: u64, npages: u64) -> Result<KVec<PinnedPage>> {
        let mut gone = KVec::new();
        let end = base_gfn + npages;
        loop {
            let next = self
                .pinned
                .cursor_lower_bound(&base_gfn)
                .map(|c| *c.current().0)
                .filter(|&g| g < end);
            let Some(gfn) = next else { break };
            self.root.unmap(self.levels - 1, gfn << 12);
            if let Some(p) = self.pinned.remove(&gfn) {
                gone.push(p, GFP_KERNEL)?;
            }
        }
        Ok(gone)
    }
}
