// SPDX-License-Identifier: GPL-2.0

//! Module-wide state for code that runs without a reference to its owner:
//! CPU-hotplug callbacks and vCPU entries read a backend's per-CPU tables
//! and configuration through a [`Published`] static, under RCU.

use core::{
    ptr::NonNull,
    sync::atomic::{AtomicPtr, Ordering},
};
use kernel::{prelude::*, sync::rcu};

/// A value published in a `static` while its [`Owner`] lives.
///
/// # Invariants
///
/// `ptr` is null or came from `KBox::into_raw` and is owned by the live
/// [`Owner`]; the owner frees it only after an RCU grace period that
/// began after `ptr` was cleared.
pub(crate) struct Published<T: Send + Sync + 'static> {
    ptr: AtomicPtr<T>,
}

/// Keeps a value published; dropping it unpublishes the value, waits until
/// no reader can still see it, and drops it.
pub(crate) struct Owner<T: Send + Sync + 'static> {
    slot: &'static Published<T>,
}

impl<T: Send + Sync + 'static> Published<T> {
    /// Nothing published.
    pub(crate) const fn new() -> Self {
        Self {
            ptr: AtomicPtr::new(core::ptr::null_mut()),
        }
    }

    /// Publishes `value` until the returned owner is dropped; `EBUSY` if a
    /// value is published already.
    pub(crate) fn publish(&'static self, value: KBox<T>) -> Result<Owner<T>> {
        let p = KBox::into_raw(value);
        match self.ptr.compare_exchange(
            core::ptr::null_mut(),
            p,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            // INVARIANT: from `KBox::into_raw`, owned by the new owner.
            Ok(_) => Ok(Owner { slot: self }),
            Err(_) => {
                // SAFETY: `p` came from `KBox::into_raw` above and was not
                // published.
                drop(unsafe { KBox::from_raw(p) });
                Err(EBUSY)
            }
        }
    }

    /// Runs `f` on the published value (`None` if there is none). `f` runs
    /// in an RCU read-side section: it must not sleep.
    pub(crate) fn read<R>(&self, f: impl FnOnce(&T) -> R) -> Option<R> {
        let _guard = rcu::read_lock();
        let p = NonNull::new(self.ptr.load(Ordering::Acquire))?;
        // SAFETY: a non-null `ptr` is a live `T` (invariant) that stays live
        // while `_guard` holds the RCU read side: the owner frees it only
        // after a grace period that began after it cleared `ptr`.
        Some(f(unsafe { p.as_ref() }))
    }
}

impl<T: Send + Sync + 'static> Drop for Owner<T> {
    fn drop(&mut self) {
        let p = self.slot.ptr.swap(core::ptr::null_mut(), Ordering::AcqRel);
        rcu::synchronize_rcu();
        if let Some(p) = NonNull::new(p) {
            // SAFETY: `p` came from `KBox::into_raw` in `publish` (invariant)
            // and no reader sees it after the grace period above.
            drop(unsafe { KBox::from_raw(p.as_ptr()) });
        }
    }
}
