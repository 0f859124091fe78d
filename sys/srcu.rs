// SPDX-License-Identifier: GPL-2.0

//! A value that readers use under SRCU and a writer replaces: how a VM's
//! memory slots are read on every exit without a lock that all vCPUs share
//! (KVM's memslots and `kvm->srcu`). All boxes share the module's one SRCU
//! domain (`rkvm_srcu` in `helpers.c`), so creating one sets nothing up.

use core::{
    marker::PhantomData,
    ops::Deref,
    ptr::NonNull,
    sync::atomic::{AtomicPtr, Ordering},
};
use kernel::prelude::*;

extern "C" {
    fn rkvm_srcu_read_lock() -> i32;
    fn rkvm_srcu_read_unlock(idx: i32);
    fn rkvm_srcu_synchronize();
}

/// A boxed `T` that readers see through [`SrcuBox::read`] and that
/// [`SrcuBox::replace`] swaps for another, freeing the old one only once no
/// reader can still see it. Readers may sleep; they never block each other
/// or the writer's publication.
///
/// # Invariants
///
/// `ptr` always points at a live `T` that came from `KBox::into_raw` and is
/// owned by `self`. A `T` that `ptr` pointed at is only given back (and so
/// freed) after an SRCU grace period that began after `ptr` stopped
/// pointing at it.
pub(crate) struct SrcuBox<T: Send + Sync> {
    ptr: AtomicPtr<T>,
}

/// A reader's view of an [`SrcuBox`]: the value as it was when the read
/// began, valid while this lives (an SRCU read-side section).
///
/// # Invariants
///
/// `idx` came from `rkvm_srcu_read_lock` and is unlocked in `drop`.
pub(crate) struct SrcuRef<'a, T> {
    idx: i32,
    value: &'a T,
    /// The section belongs to this thread.
    _not_send: PhantomData<*const ()>,
}

impl<T: Send + Sync> SrcuBox<T> {
    /// A box that holds `value`.
    pub(crate) fn new(value: KBox<T>) -> Self {
        // INVARIANT: from `KBox::into_raw`, owned from now on.
        Self {
            ptr: AtomicPtr::new(KBox::into_raw(value)),
        }
    }

    /// The current value, until the returned view is dropped.
    pub(crate) fn read(&self) -> SrcuRef<'_, T> {
        // SAFETY: enters a read-side section of the module's SRCU domain;
        // the view unlocks it.
        let idx = unsafe { rkvm_srcu_read_lock() };
        let p = self.ptr.load(Ordering::Acquire);
        // SAFETY: `p` is live (invariant) and stays live during this read
        // section: `replace` frees a value only after a grace period that
        // began after `ptr` stopped pointing at it, and `drop` needs `&mut`.
        let value = unsafe { &*p };
        // INVARIANT: `idx` from `rkvm_srcu_read_lock`.
        SrcuRef {
            idx,
            value,
            _not_send: PhantomData,
        }
    }

    /// Publishes `new`, waits until no reader can still see the old value,
    /// and returns the old value. May sleep for a grace period; must not be
    /// called inside a read section. Writers serialise themselves (a lock
    /// of the caller's) to keep their updates in order.
    pub(crate) fn replace(&self, new: KBox<T>) -> KBox<T> {
        let old = self.ptr.swap(KBox::into_raw(new), Ordering::AcqRel);
        // SAFETY: waits for a grace period of the module's domain.
        unsafe { rkvm_srcu_synchronize() };
        // SAFETY: `old` came from `KBox::into_raw` (invariant); no reader
        // sees it any more (the grace period above began after the swap),
        // and the swap made this call its only owner.
        unsafe { KBox::from_raw(old) }
    }
}

impl<T> Deref for SrcuRef<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        self.value
    }
}

impl<T> Drop for SrcuRef<'_, T> {
    fn drop(&mut self) {
        // SAFETY: leaves the read section `read` entered (invariant).
        unsafe { rkvm_srcu_read_unlock(self.idx) };
    }
}

impl<T: Send + Sync> Drop for SrcuBox<T> {
    fn drop(&mut self) {
        if let Some(p) = NonNull::new(*self.ptr.get_mut()) {
            // SAFETY: owned by `self` (invariant), and no reader exists:
            // each borrows `self`, which is being dropped.
            drop(unsafe { KBox::from_raw(p.as_ptr()) });
        }
    }
}
