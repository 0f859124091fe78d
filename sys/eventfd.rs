// SPDX-License-Identifier: GPL-2.0

//! A counted reference to an eventfd's context (`struct eventfd_ctx`),
//! taken from a file descriptor of the calling process: what an ioeventfd
//! signals, and what an irqfd waits on. The reference keeps the context
//! alive after userspace closes its fd; dropping it puts the reference.

use core::ptr::NonNull;
use kernel::prelude::*;

#[repr(C)]
struct RawCtx {
    _opaque: [u8; 0],
}

extern "C" {
    fn rkvm_eventfd_ctx_fdget(fd: i32, ctx: *mut *mut RawCtx) -> i32;
    fn rkvm_eventfd_signal(ctx: *mut RawCtx);
    fn rkvm_eventfd_ctx_put(ctx: *mut RawCtx);
}

/// One reference to an eventfd context.
///
/// # Invariants
///
/// `ctx` came from `eventfd_ctx_fdget` and this value owns the reference
/// it took, which `drop` puts.
pub(crate) struct EventfdCtx {
    ctx: NonNull<RawCtx>,
}

// SAFETY: an eventfd context is reference counted and its signal and put
// take the context's own lock; any thread may use or drop the reference.
unsafe impl Send for EventfdCtx {}
// SAFETY: as above: signalling through a shared reference is thread-safe.
unsafe impl Sync for EventfdCtx {}

impl EventfdCtx {
    /// The eventfd behind `fd` in the calling process: `EBADF` if `fd` is
    /// not open, `EINVAL` if it is not an eventfd (KVM's errnos, which are
    /// eventfd's).
    pub(crate) fn from_fd(fd: i32) -> Result<Self> {
        let mut p = core::ptr::null_mut();
        // SAFETY: `p` is a valid place for the helper to store the context
        // in; the helper takes a reference only when it returns 0.
        let r = unsafe { rkvm_eventfd_ctx_fdget(fd, &mut p) };
        if r != 0 {
            return Err(Error::from_errno(r));
        }
        let ctx = NonNull::new(p).ok_or(EINVAL)?;
        // INVARIANT: the reference `rkvm_eventfd_ctx_fdget` took.
        Ok(Self { ctx })
    }

    /// Adds one to the eventfd's counter and wakes its readers. Does not
    /// sleep.
    pub(crate) fn signal(&self) {
        // SAFETY: `ctx` is live while this reference is held (invariant).
        unsafe { rkvm_eventfd_signal(self.ctx.as_ptr()) }
    }

    /// Whether both name the same eventfd (however many fds point at it).
    pub(crate) fn same(&self, other: &Self) -> bool {
        self.ctx == other.ctx
    }
}

impl Drop for EventfdCtx {
    fn drop(&mut self) {
        // SAFETY: puts the reference this value owns (invariant), once.
        unsafe { rkvm_eventfd_ctx_put(self.ctx.as_ptr()) }
    }
}
