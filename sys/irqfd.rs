// SPDX-License-Identifier: GPL-2.0

//! `KVM_IRQFD`'s eventfd side (`sys/irqfd.c`): the list of a VM's irqfds
//! and the hooks its owner (the VM's interrupt state) implements.
//!
//! A signalled eventfd calls [`IrqfdOwner::fire`] from its wake-up, in
//! atomic context under the eventfd's wait-queue lock, so delivery there
//! must not sleep. Each irqfd holds a reference to its owner until its
//! shutdown work has unhooked it: a wake-up never sees a freed owner.
//! An irqfd leaves the list in exactly one place (deassign, the eventfd's
//! release, or the VM's), and whoever takes it off queues its shutdown.

use core::ffi::c_void;
use kernel::{
    error::from_err_ptr,
    new_mutex, new_spinlock_irq,
    prelude::*,
    sync::{Arc, Mutex, SpinLockIrq},
};

/// `struct rkvm_irqfd`, opaque.
#[repr(C)]
struct RawIrqfd {
    _opaque: [u8; 0],
}

/// `struct eventfd_ctx`, opaque; only compared.
#[repr(C)]
struct EventfdCtx {
    _opaque: [u8; 0],
}

/// `struct rkvm_irqfd_ops`.
#[repr(C)]
struct Ops {
    fire: unsafe extern "C" fn(*mut c_void, u32),
    hangup: unsafe extern "C" fn(*mut c_void, *mut RawIrqfd),
    release: unsafe extern "C" fn(*mut c_void),
}

extern "C" {
    fn rkvm_irqfd_init() -> i32;
    fn rkvm_irqfd_exit();
    fn rkvm_irqfd_alloc(fd: i32, gsi: u32, owner: *mut c_void, ops: *const Ops) -> *mut RawIrqfd;
    fn rkvm_irqfd_ctx(irqfd: *mut RawIrqfd) -> *mut EventfdCtx;
    fn rkvm_irqfd_register(irqfd: *mut RawIrqfd) -> i32;
    fn rkvm_irqfd_free(irqfd: *mut RawIrqfd);
    fn rkvm_irqfd_deactivate(irqfd: *mut RawIrqfd);
    fn rkvm_irqfd_flush();
    fn rkvm_irqfd_ctx_fdget(fd: i32) -> *mut EventfdCtx;
    fn rkvm_irqfd_ctx_put(ctx: *mut EventfdCtx);
}

/// The module's irqfd shutdown workqueue, from load to unload (its drop
/// waits for every queued shutdown).
pub(crate) struct IrqfdQueue(());

impl IrqfdQueue {
    pub(crate) fn new() -> Result<Self> {
        // SAFETY: called once at module load, before any irqfd exists.
        kernel::error::to_result(unsafe { rkvm_irqfd_init() })?;
        Ok(Self(()))
    }
}

impl Drop for IrqfdQueue {
    fn drop(&mut self) {
        // SAFETY: at unload no VM exists, so nothing queues work any more;
        // destroying the queue runs what is queued.
        unsafe { rkvm_irqfd_exit() };
    }
}

/// What owns a VM's irqfds.
pub(crate) trait IrqfdOwner: Send + Sync + 'static {
    /// The eventfd of an irqfd for `gsi` was signalled. Atomic context.
    fn fire(&self, gsi: u32);
    /// The owner's list.
    fn irqfds(&self) -> &Irqfds;
}

/// One hooked irqfd.
struct Entry {
    raw: *mut RawIrqfd,
    ctx: *mut EventfdCtx,
    gsi: u32,
}

// SAFETY: the pointers are only handed back to sys/irqfd.c, whose
// functions may run on any CPU; `ctx` is only compared.
unsafe impl Send for Entry {}

/// A VM's irqfds.
#[pin_data]
pub(crate) struct Irqfds {
    /// Serialises assign, deassign and release, so that an irqfd being
    /// hooked is not also being taken off.
    #[pin]
    ioctl: Mutex<()>,
    /// Taken by an eventfd's release in atomic context too.
    #[pin]
    list: SpinLockIrq<KVec<Entry>>,
}

impl Irqfds {
    pub(crate) fn new() -> impl PinInit<Self> {
        pin_init!(Self {
            ioctl <- new_mutex!(()),
            list <- new_spinlock_irq!(KVec::new()),
        })
    }

    /// Appends under the spinlock, growing the vector outside it.
    fn push(&self, e: Entry) -> Result {
        loop {
            let cap = {
                let mut l = self.list.lock();
                if l.len() < l.capacity() {
                    l.push_within_capacity(e).map_err(|_| ENOMEM)?;
                    return Ok(());
                }
                l.capacity()
            };
            let mut bigger = KVec::with_capacity(cap * 2 + 4, GFP_KERNEL_ACCOUNT)?;
            let mut l = self.list.lock();
            if l.capacity() == cap {
                for x in l.drain_all() {
                    bigger.push_within_capacity(x).map_err(|_| ENOMEM)?;
                }
                core::mem::swap(&mut *l, &mut bigger);
            }
            drop(l);
            // `bigger` (now the old, empty vector) is freed here.
        }
    }

    /// Takes `raw` off the list; whether it was there.
    fn take(&self, raw: *mut RawIrqfd) -> bool {
        let mut l = self.list.lock();
        match l.iter().position(|e| e.raw == raw) {
            Some(i) => {
                l.remove(i).ok();
                true
            }
            None => false,
        }
    }

    /// `KVM_IRQFD` assign: `EBADF`/`EINVAL` for a bad fd, `EBUSY` when the
    /// eventfd already feeds an irqfd (of any VM). An eventfd already
    /// signalled fires once now, its count left as it is (as KVM).
    pub(crate) fn assign<T: IrqfdOwner>(owner: &Arc<T>, fd: i32, gsi: u32) -> Result {
        let this = owner.irqfds();
        let _g = this.ioctl.lock();
        let raw_owner = Arc::into_raw(owner.clone()).cast_mut().cast::<c_void>();
        // SAFETY: `raw_owner` is a counted reference the irqfd keeps (its
        // release hook gives it back) or that is given back below on
        // failure; `Tramp::<T>::OPS` is static.
        let raw =
            match from_err_ptr(unsafe { rkvm_irqfd_alloc(fd, gsi, raw_owner, &Tramp::<T>::OPS) }) {
                Ok(r) => r,
                Err(e) => {
                    // SAFETY: the reference taken above, not handed out.
                    drop(unsafe { Arc::from_raw(raw_owner.cast::<T>()) });
                    return Err(e);
                }
            };
        // SAFETY: `raw` is a live irqfd from alloc.
        let ctx = unsafe { rkvm_irqfd_ctx(raw) };
        let unwind = |raw| {
            // SAFETY: never hooked: freed with its eventfd references; the
            // owner reference was not handed out.
            unsafe { rkvm_irqfd_free(raw) };
            // SAFETY: as above.
            drop(unsafe { Arc::from_raw(raw_owner.cast::<T>()) });
        };
        if let Err(e) = this.push(Entry { raw, ctx, gsi }) {
            unwind(raw);
            return Err(e);
        }
        // Listed before it is hooked, so that the eventfd's release, once
        // the file is dropped, finds it. Until then nothing else takes it
        // off (`ioctl` is held, and the file keeps the eventfd open).
        // SAFETY: `raw` is a live, not yet hooked irqfd.
        let r = unsafe { rkvm_irqfd_register(raw) };
        if r < 0 {
            this.take(raw);
            unwind(raw);
            return Err(Error::from_errno(r));
        }
        if r == 1 {
            owner.fire(gsi);
        }
        Ok(())
    }

    /// `KVM_IRQFD` deassign: unhooks the irqfds of `fd` for `gsi` (none is
    /// not an error) and waits until they are gone, so that no interrupt
    /// comes from them afterwards. `EBADF`/`EINVAL` for a bad fd.
    pub(crate) fn deassign(&self, fd: i32, gsi: u32) -> Result {
        // SAFETY: the C wrapper of `eventfd_ctx_fdget`.
        let ctx = from_err_ptr(unsafe { rkvm_irqfd_ctx_fdget(fd) })?;
        let _g = self.ioctl.lock();
        {
            let mut l = self.list.lock();
            let mut i = 0;
            while i < l.len() {
                if l[i].ctx == ctx && l[i].gsi == gsi {
                    if let Ok(e) = l.remove(i) {
                        // SAFETY: taken off the list here, so ours to end.
                        unsafe { rkvm_irqfd_deactivate(e.raw) };
                    }
                } else {
                    i += 1;
                }
            }
        }
        // SAFETY: the reference from fdget above.
        unsafe { rkvm_irqfd_ctx_put(ctx) };
        // SAFETY: process context, no lock the shutdown work takes is held.
        unsafe { rkvm_irqfd_flush() };
        Ok(())
    }

    /// The VM is going away: unhooks every irqfd and waits for them.
    pub(crate) fn release(&self) {
        let _g = self.ioctl.lock();
        let all = core::mem::take(&mut *self.list.lock());
        for e in all.iter() {
            // SAFETY: taken off the list here, so ours to end.
            unsafe { rkvm_irqfd_deactivate(e.raw) };
        }
        drop(all);
        // SAFETY: process context (a file release), no lock held that the
        // work takes.
        unsafe { rkvm_irqfd_flush() };
    }
}

/// The C hooks for owners of type `T`.
struct Tramp<T>(core::marker::PhantomData<T>);

impl<T: IrqfdOwner> Tramp<T> {
    const OPS: Ops = Ops {
        fire: Self::fire,
        hangup: Self::hangup,
        release: Self::release,
    };

    /// # Safety
    ///
    /// `owner` is the reference an irqfd of this type holds.
    unsafe extern "C" fn fire(owner: *mut c_void, gsi: u32) {
        // SAFETY: the irqfd holds the reference until its release hook.
        let o = unsafe { &*owner.cast::<T>() };
        o.fire(gsi);
    }

    /// # Safety
    ///
    /// As [`Tramp::fire`]; `raw` is the irqfd.
    unsafe extern "C" fn hangup(owner: *mut c_void, raw: *mut RawIrqfd) {
        // SAFETY: as in `fire`.
        let o = unsafe { &*owner.cast::<T>() };
        if o.irqfds().take(raw) {
            // SAFETY: taken off the list here, so ours to end.
            unsafe { rkvm_irqfd_deactivate(raw) };
        }
    }

    /// # Safety
    ///
    /// `owner` is the reference the irqfd held; it is not used again.
    unsafe extern "C" fn release(owner: *mut c_void) {
        // SAFETY: the reference `assign` handed to the irqfd.
        drop(unsafe { Arc::from_raw(owner.cast::<T>()) });
    }
}
