// SPDX-License-Identifier: GPL-2.0

//! A value that readers use under SRCU and a writer replaces: how a VM's
//! memory slots are read on every exit without a lock that all vCPUs share
//! (KVM's memslots and `kvm->srcu`).

use core::{
    ops::Deref,
    ptr::NonNull,
    sync::atomic::{AtomicPtr, Ordering},
};
use kernel::{
    new_srcu,
    prelude::*,
    sync::{srcu, Srcu},
};

/// A boxed `T` that readers see through [`SrcuBox::read`] and that
/// [`SrcuBox::replace`] swaps for another, freeing the old one only once no
/// reader can still see it. Readers may sleep; they never block each other
/// or the writer's publication.
///
/// # Invariants
///
/// `ptr` always points at a live `T` that came from `KBox::into_raw` and is
/// owned by `self`. A `T` that `ptr` pointed at is only given back (and so
/// freed) after an SRCU grace period of `srcu` that began after `ptr`
/// stopped pointing at it.
#[pin_data(PinnedDrop)]
pub(crate) struct SrcuBox<T: Send + Sync> {
    #[pin]
    srcu: Srcu,
    ptr: AtomicPtr<T>,
}

/// A reader's view of an [`SrcuBox`]: the value as it was when the read
/// began, valid while this lives.
pub(crate) struct SrcuRef<'a, T> {
    _guard: srcu::Guard<'a>,
    value: &'a T,
}

impl<T: Send + Sync> SrcuBox<T> {
    /// A box that holds `value`.
    pub(crate) fn new(value: KBox<T>) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            srcu <- new_srcu!(),
            // INVARIANT: from `KBox::into_raw`, owned from now on.
            ptr: AtomicPtr::new(KBox::into_raw(value)),
        })
    }

    /// The current value, until the returned view is dropped.
    pub(crate) fn read(&self) -> SrcuRef<'_, T> {
        let guard = self.srcu.read_lock();
        let p = self.ptr.load(Ordering::Acquire);
        // SAFETY: `p` is live (invariant) and stays live while `guard` holds
        // the SRCU read side: `replace` frees a value only after a grace
        // period that began after `ptr` stopped pointing at it, and this
        // read section began before that.
        let value = unsafe { &*p };
        SrcuRef {
            _guard: guard,
            value,
        }
    }

    /// Publishes `new`, waits until no reader can still see the old value,
    /// and returns the old value. May sleep for a grace period. Writers
    /// serialise themselves (a lock of the caller's) to keep their updates
    /// in order.
    pub(crate) fn replace(&self, new: KBox<T>) -> KBox<T> {
        let old = self.ptr.swap(KBox::into_raw(new), Ordering::AcqRel);
        self.srcu.synchronize_expedited();
        // SAFETY: `old` came from `KBox::into_raw` (invariant); no reader
        // sees it any more (the grace period above began after the swap), and
        // the swap made this call its only owner.
        unsafe { KBox::from_raw(old) }
    }
}

impl<T> Deref for SrcuRef<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        self.value
    }
}

#[pinned_drop]
impl<T: Send + Sync> PinnedDrop for SrcuBox<T> {
    fn drop(self: Pin<&mut Self>) {
        let p = self.ptr.load(Ordering::Acquire);
        if let Some(p) = NonNull::new(p) {
            // SAFETY: owned by `self` (invariant), and no reader exists: each
            // borrows `self`, which is being dropped.
            drop(unsafe { KBox::from_raw(p.as_ptr()) });
        }
    }
}
