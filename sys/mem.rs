// SPDX-License-Identifier: GPL-2.0

//! Memory rkvm hands to the hardware: zeroed physically contiguous pages
//! (VMCBs, permission maps, page tables) and pinned pages of the VMM's
//! memory that back guest RAM.

use crate::addr::Hva;
use core::{ffi::c_void, ptr::NonNull};
use kernel::{bindings, error::to_result, mm::Mm, prelude::*, sync::aref::ARef};

extern "C" {
    // `struct page` and `struct mm_struct` are passed as `void *`: bindgen's
    // are not FFI-safe.
    fn rkvm_alloc_pages(order: u32) -> *mut c_void;
    fn rkvm_free_pages(page: *mut c_void, order: u32);
    fn rkvm_account_pgtable(page: *mut c_void, nr: i32);
    fn rkvm_page_to_phys(page: *mut c_void) -> u64;
    fn rkvm_page_address(page: *mut c_void) -> *mut c_void;
    fn rkvm_capable_ipc_lock() -> bool;
    fn rkvm_charge_pinned(mm: *mut c_void, n: usize, limited: bool) -> i32;
    fn rkvm_uncharge_pinned(mm: *mut c_void, n: usize);
    fn rkvm_pin_user_page(mm: *mut c_void, addr: usize, write: bool, page: *mut *mut c_void)
        -> i32;
    fn rkvm_mm_maps_2m(mm: *mut c_void, addr: usize, phys: u64) -> bool;
    fn rkvm_unpin_user_page(page: *mut c_void, dirty: bool);
    fn rkvm_page_huge_2m(page: *mut c_void) -> u64;
}

/// Size of a page.
pub(crate) const PAGE_SIZE: usize = 4096;

/// 2^order zeroed, physically contiguous pages owned by rkvm.
///
/// # Invariants
///
/// `page` was returned by `rkvm_alloc_pages(order)` and is freed only in
/// `drop`; `virt` is its direct-map address, valid for `4096 << order` bytes.
pub(crate) struct Pages {
    page: NonNull<bindings::page>,
    virt: NonNull<u8>,
    order: u32,
    /// Counted as a secondary page table (an order-0 page).
    pgtable: bool,
}

// SAFETY: the pages are owned memory; access goes through `&self`/`&mut self`.
unsafe impl Send for Pages {}
// SAFETY: shared access only reads through `&self` methods.
unsafe impl Sync for Pages {}

impl Pages {
    /// Allocates 2^order zeroed pages.
    pub(crate) fn new(order: u32) -> Result<Self> {
        // SAFETY: plain allocation call.
        let page = NonNull::new(unsafe { rkvm_alloc_pages(order) }.cast::<bindings::page>())
            .ok_or(ENOMEM)?;
        // SAFETY: `page` is a valid allocated page; lowmem on x86-64 is
        // always in the direct map, so the address is non-null.
        let virt = unsafe { rkvm_page_address(page.as_ptr().cast()) }.cast::<u8>();
        // INVARIANT: page from rkvm_alloc_pages, virt its mapping.
        Ok(Self {
            page,
            virt: NonNull::new(virt).ok_or(ENOMEM)?,
            order,
            pgtable: false,
        })
    }

    /// A zeroed page for a second-level page table, counted as a secondary
    /// page table of the allocating task's memory cgroup, as KVM counts its
    /// own (`memory.stat` `sec_pagetables`).
    pub(crate) fn new_page_table() -> Result<Self> {
        let mut p = Self::new(0)?;
        // SAFETY: `page` is a live allocated page (type invariant).
        unsafe { rkvm_account_pgtable(p.page.as_ptr().cast(), 1) };
        p.pgtable = true;
        Ok(p)
    }

    /// The physical address of the first page.
    pub(crate) fn phys(&self) -> u64 {
        // SAFETY: `page` is valid by the type invariant.
        unsafe { rkvm_page_to_phys(self.page.as_ptr().cast()) }
    }

    /// The size in bytes.
    pub(crate) fn len(&self) -> usize {
        PAGE_SIZE << self.order
    }

    /// The raw `struct page` of page `i`, for mapping into userspace.
    pub(crate) fn raw_page(&self, i: usize) -> *mut bindings::page {
        assert!(i < 1 << self.order);
        // SAFETY: within the allocation (struct pages of a high-order
        // allocation are contiguous in the memmap on x86-64).
        unsafe { self.page.as_ptr().add(i) }
    }

    /// The kernel address of the memory.
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.virt.as_ptr()
    }

    /// The memory as 64-bit words (page tables, bitmaps).
    pub(crate) fn as_u64s(&mut self) -> &mut [u64] {
        // SAFETY: owned, aligned, zero-initialised memory of `len()` bytes.
        unsafe { core::slice::from_raw_parts_mut(self.virt.as_ptr().cast(), self.len() / 8) }
    }

    /// The memory as 64-bit words, read-only.
    pub(crate) fn u64s(&self) -> &[u64] {
        // SAFETY: owned, aligned, zero-initialised memory of `len()` bytes;
        // shared access only reads.
        unsafe { core::slice::from_raw_parts(self.virt.as_ptr().cast(), self.len() / 8) }
    }

    /// The memory as bytes, writable.
    pub(crate) fn as_bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_u64s`.
        unsafe { core::slice::from_raw_parts_mut(self.virt.as_ptr(), self.len()) }
    }
}

impl Drop for Pages {
    fn drop(&mut self) {
        if self.pgtable {
            // SAFETY: counted in `new_page_table`; the page is still live.
            unsafe { rkvm_account_pgtable(self.page.as_ptr().cast(), -1) };
        }
        // SAFETY: by the type invariant, allocated with this order.
        unsafe { rkvm_free_pages(self.page.as_ptr().cast(), self.order) };
    }
}

/// Marks a type that may live in a [`PageBox`]: all-zero is a valid value,
/// it has no drop glue, and it fits in one page.
///
/// # Safety
///
/// Implement only for plain-data `repr(C)` types of at most 4096 bytes
/// whose alignment is at most 4096 and for which all-zero bytes are valid.
pub(crate) unsafe trait ZeroPage {}

/// A zeroed page that holds a `T` (a VMCB, for example).
pub(crate) struct PageBox<T: ZeroPage> {
    pages: Pages,
    _t: core::marker::PhantomData<T>,
}

impl<T: ZeroPage> PageBox<T> {
    /// Allocates a zeroed page for a `T`.
    pub(crate) fn new() -> Result<Self> {
        const { assert!(core::mem::size_of::<T>() <= PAGE_SIZE) };
        Ok(Self {
            pages: Pages::new(0)?,
            _t: core::marker::PhantomData,
        })
    }

    /// The physical address of the `T`.
    pub(crate) fn phys(&self) -> u64 {
        self.pages.phys()
    }
}

impl<T: ZeroPage> core::ops::Deref for PageBox<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: page-aligned, zero-initialised, and `T: ZeroPage` makes
        // that a valid `T` of at most one page.
        unsafe { &*self.pages.as_ptr().cast::<T>() }
    }
}

impl<T: ZeroPage> core::ops::DerefMut for PageBox<T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`, and `&mut self` is exclusive.
        unsafe { &mut *self.pages.as_ptr().cast::<T>() }
    }
}

/// One page of the VMM's memory, pinned (FOLL_LONGTERM) while it backs a
/// guest mapping and charged to the VMM's `pinned_vm` (against
/// `RLIMIT_MEMLOCK`, as RDMA and io_uring charge their pins).
///
/// # Invariants
///
/// `page` holds one pin taken by `rkvm_pin_user_page`, and one page is
/// charged to `mm`'s `pinned_vm`; `drop` releases both.
pub(crate) struct PinnedPage {
    page: NonNull<bindings::page>,
    mm: ARef<Mm>,
    writable: bool,
}

// SAFETY: a pin is a reference count; it may be dropped on any thread.
unsafe impl Send for PinnedPage {}
// SAFETY: no interior mutability.
unsafe impl Sync for PinnedPage {}

/// Where a VM's pins are charged: its VMM's mm, and whether the VMM is held
/// to `RLIMIT_MEMLOCK`. As io_uring decides it for a ring, the
/// `CAP_IPC_LOCK` check is made once, by whoever creates the VM.
pub(crate) struct PinAccount {
    mm: ARef<Mm>,
    limited: bool,
}

impl PinAccount {
    /// The calling process's account.
    pub(crate) fn current() -> Result<Self> {
        let mm = ARef::<Mm>::from(&**kernel::current!().mm().ok_or(EINVAL)?);
        // SAFETY: a capability check of the calling task.
        let limited = !unsafe { rkvm_capable_ipc_lock() };
        Ok(Self { mm, limited })
    }

    /// The VMM's address space.
    pub(crate) fn mm(&self) -> &Mm {
        &self.mm
    }
}

impl PinnedPage {
    /// Pins the page at `addr` of the account's mm, which must be the
    /// calling process's (for writing if `write`). `ENOMEM` past
    /// `RLIMIT_MEMLOCK` (see [`PinAccount`]), `EFAULT` if it is not mapped
    /// with that access, or another process calls.
    pub(crate) fn pin(acct: &PinAccount, addr: Hva, write: bool) -> Result<Self> {
        let mm = &*acct.mm;
        // SAFETY: `mm` is a live mm (the reference keeps it).
        to_result(unsafe { rkvm_charge_pinned(mm.as_raw().cast(), 1, acct.limited) })?;
        let mut page: *mut c_void = core::ptr::null_mut();
        // SAFETY: `page` is a valid out-pointer; the helper checks that `mm`
        // is the caller's and pins only through the caller's page tables.
        let r =
            unsafe { rkvm_pin_user_page(mm.as_raw().cast(), addr.0 as usize, write, &mut page) };
        match NonNull::new(page.cast::<bindings::page>()) {
            // INVARIANT: pinned and charged.
            Some(page) if r == 0 => Ok(Self {
                page,
                mm: mm.into(),
                writable: write,
            }),
            _ => {
                // SAFETY: the page charged above, not pinned.
                unsafe { rkvm_uncharge_pinned(mm.as_raw().cast(), 1) };
                Err(if r < 0 { Error::from_errno(r) } else { EFAULT })
            }
        }
    }

    /// The physical address of the page.
    pub(crate) fn phys(&self) -> u64 {
        // SAFETY: pinned, so valid.
        unsafe { rkvm_page_to_phys(self.page.as_ptr().cast()) }
    }

    /// The start of the 2 MiB physical range around this page if a guest
    /// may map it whole: one huge folio (THP or hugetlb) backs all of it, so
    /// this pin keeps all of it allocated, and the VMM maps the 2 MiB around
    /// `addr` (where this page was pinned) with one huge entry onto exactly
    /// that range, so no part of it is memory the VMM no longer maps.
    pub(crate) fn huge_2m_phys(&self, addr: Hva) -> Option<u64> {
        // SAFETY: the page is pinned, so its folio is valid.
        let p = unsafe { rkvm_page_huge_2m(self.page.as_ptr().cast()) };
        // SAFETY: `mm` is live (held); the helper only reads its page tables,
        // with interrupts off.
        (p != 0 && unsafe { rkvm_mm_maps_2m(self.mm.as_raw().cast(), addr.0 as usize, p) })
            .then_some(p)
    }

    /// Whether the pin allows guest writes.
    pub(crate) fn writable(&self) -> bool {
        self.writable
    }
}

impl Drop for PinnedPage {
    fn drop(&mut self) {
        // SAFETY: releases the pin taken in `pin`; a writable page may have
        // been written by the guest, so it is marked dirty. Then the charge
        // `pin` took (invariant).
        unsafe {
            rkvm_unpin_user_page(self.page.as_ptr().cast(), self.writable);
            rkvm_uncharge_pinned(self.mm.as_raw().cast(), 1);
        }
    }
}

impl Pages {
    /// Copies `out.len()` bytes at `offset` out of memory that userspace
    /// also maps (the kvm_run and PIO pages): volatile, as userspace may
    /// write concurrently.
    pub(crate) fn read_shared(&self, offset: usize, out: &mut [u8]) {
        assert!(offset + out.len() <= self.len());
        for (i, b) in out.iter_mut().enumerate() {
            // SAFETY: in bounds (asserted); a byte read of owned memory.
            *b = unsafe { core::ptr::read_volatile(self.virt.as_ptr().add(offset + i)) };
        }
    }

    /// Copies `data` into memory that userspace also maps, at `offset`.
    pub(crate) fn write_shared(&self, offset: usize, data: &[u8]) {
        assert!(offset + data.len() <= self.len());
        // Whole aligned words where possible: this runs on every exit to
        // userspace.
        let mut i = 0;
        while i < data.len() && (offset + i) % 8 != 0 {
            // SAFETY: in bounds (asserted); a byte write of owned memory
            // that only userspace and this vCPU's ioctl touch.
            unsafe { core::ptr::write_volatile(self.virt.as_ptr().add(offset + i), data[i]) };
            i += 1;
        }
        while i + 8 <= data.len() {
            let mut w = [0u8; 8];
            w.copy_from_slice(&data[i..i + 8]);
            // SAFETY: in bounds and 8-byte aligned (page base plus a
            // multiple of 8); owned memory as above.
            unsafe {
                core::ptr::write_volatile(
                    self.virt.as_ptr().add(offset + i).cast::<u64>(),
                    u64::from_ne_bytes(w),
                )
            };
            i += 8;
        }
        while i < data.len() {
            // SAFETY: as in the first loop.
            unsafe { core::ptr::write_volatile(self.virt.as_ptr().add(offset + i), data[i]) };
            i += 1;
        }
    }
}
