// SPDX-License-Identifier: GPL-2.0

//! A vCPU's doorbell: the mailbox other vCPUs, devices and the vCPU's own
//! timer post to, the wait queue a halted vCPU sleeps on, the host timer
//! (an hrtimer) of its local APIC, and the CPU it is in guest mode on, so
//! that a post can kick it out of the guest.
//!
//! Posting never sleeps and may happen in any context (the timer posts
//! from hard-interrupt context), so the mailbox is an interrupts-off
//! spinlock. Sleeping checks the mailbox under that lock and a post wakes
//! the sleeper after filling it under the same lock: no wake-up is lost.

use core::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use kernel::{
    impl_has_hr_timer, new_condvar, new_spinlock_irq,
    prelude::*,
    sync::{Arc, ArcBorrow, CondVar, SpinLockIrq},
    time::{
        hrtimer::{
            ArcHrTimerHandle, HrTimer, HrTimerCallback, HrTimerCallbackContext, HrTimerPointer,
            HrTimerRestart, RelativeMode,
        },
        Delta, Monotonic,
    },
};

/// What a doorbell carries.
pub(crate) trait Mail: Default + Send + Unpin + 'static {
    /// The host timer expired.
    fn timer_fired(&mut self);
    /// Nothing was posted since the last [`Bell::take`].
    fn is_empty(&self) -> bool;
}

/// One vCPU's doorbell.
#[pin_data]
pub(crate) struct Bell<M: Mail> {
    #[pin]
    mail: SpinLockIrq<M>,
    #[pin]
    wake: CondVar,
    #[pin]
    timer: HrTimer<Bell<M>>,
    /// Something was posted and not yet taken (read without the lock on
    /// every guest entry).
    posted: AtomicBool,
    /// The CPU the vCPU is in guest mode on, or -1.
    pub(crate) running: AtomicI32,
}

impl_has_hr_timer! {
    impl{M: Mail} HasHrTimer<Bell<M>> for Bell<M> {
        mode: RelativeMode<Monotonic>,
        field: self.timer
    }
}

impl<M: Mail> HrTimerCallback for Bell<M> {
    type Pointer<'a> = Arc<Self>;

    fn run(this: ArcBorrow<'_, Self>, _ctx: HrTimerCallbackContext<'_, Self>) -> HrTimerRestart {
        this.post(M::timer_fired);
        HrTimerRestart::NoRestart
    }
}

/// A started host timer; dropping it cancels the timer (waiting for a
/// callback that is running).
pub(crate) struct Armed<M: Mail> {
    _handle: ArcHrTimerHandle<Bell<M>>,
}

impl<M: Mail> Bell<M> {
    pub(crate) fn new() -> Result<Arc<Self>> {
        Arc::pin_init(
            pin_init!(Self {
                mail <- new_spinlock_irq!(M::default()),
                wake <- new_condvar!(),
                timer <- HrTimer::new(),
                posted: AtomicBool::new(false),
                running: AtomicI32::new(-1),
            }),
            GFP_KERNEL_ACCOUNT,
        )
    }

    /// Puts something in the mailbox, then wakes the vCPU if it sleeps and
    /// kicks it out of the guest if it runs one.
    pub(crate) fn post(&self, f: impl FnOnce(&mut M)) {
        {
            let mut m = self.mail.lock();
            f(&mut m);
            self.posted.store(true, Ordering::SeqCst);
        }
        self.wake.notify_all();
        // Ordered after `posted`: a vCPU that published `running` before
        // its last look at `posted` either saw the post or is kicked.
        if let Ok(cpu) = usize::try_from(self.running.load(Ordering::SeqCst)) {
            super::cpu::kick_cpu_async(cpu);
        }
    }

    /// Whether something waits in the mailbox (cheap; no lock).
    pub(crate) fn posted(&self) -> bool {
        self.posted.load(Ordering::SeqCst)
    }

    /// Empties the mailbox.
    pub(crate) fn take(&self) -> M {
        let mut m = self.mail.lock();
        self.posted.store(false, Ordering::SeqCst);
        core::mem::take(&mut *m)
    }

    /// Sleeps until something is posted or a signal arrives. Returns at
    /// once if the mailbox is not empty; may also return spuriously.
    pub(crate) fn wait(&self) {
        let mut m = self.mail.lock();
        if m.is_empty() {
            // A signal ends the wait; the caller checks for it.
            let _ = self.wake.wait_interruptible(&mut m);
        }
    }

    /// Starts the host timer to post [`Mail::timer_fired`] in `ns`
    /// nanoseconds (at once if 0).
    pub(crate) fn arm(this: &Arc<Self>, ns: u64) -> Armed<M> {
        let ns = i64::try_from(ns).unwrap_or(i64::MAX / 2);
        Armed {
            _handle: this.clone().start(Delta::from_nanos(ns)),
        }
    }
}
