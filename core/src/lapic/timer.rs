//! The APIC timer with time as an input: the kernel passes its monotonic
//! clock in nanoseconds (and the guest TSC where the deadline is in TSC
//! units), asks [`Lapic::timer_expiry`] when to call back, and calls
//! [`Lapic::timer_fired`] when that time has come.
//!
//! One-shot and periodic count at the bus frequency over the divider:
//! `initial count × bus_cycle_ns × divide` nanoseconds (KVM's
//! `tmict_to_ns`), periodic stretched to [`Config::min_period_ns`]. The
//! current count is what remains of the period over `bus_cycle_ns ×
//! divide` (`apic_get_tmcct`; as KVM, it reads 0 when exactly a whole
//! period remains, i.e. at the instant the count starts). TSC-deadline
//! keeps the guest's `IA32_TSC_DEADLINE`; converting it to host time needs
//! the guest TSC rate, which is the kernel's.
//!
//! Arithmetic on guest values saturates: a product of TMICT, bus cycle and
//! divider past `u64::MAX` ns, or an expiry past the end of time, means a
//! timer that never fires, not a wrap to an early one. (KVM's are signed
//! 64-bit ns and wrap instead; a host clock is far from either limit, but
//! near 2^64 ns a saturated expiry makes TMCCT, and so a `KVM_GET_LAPIC`
//! → `KVM_SET_LAPIC` round trip, inexact.)
//!
//! [`Config::min_period_ns`]: super::Config::min_period_ns

use super::{reg, Accepted, Effects, Lapic, Lvt};

/// The LVT timer mode (LVTT bits 18:17 under the CPUID mask, KVM's
/// `timer_mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TimerMode {
    /// Counts down once.
    #[default]
    OneShot,
    /// Counts down and reloads.
    Periodic,
    /// Fires when the guest TSC reaches `IA32_TSC_DEADLINE`.
    TscDeadline,
    /// Bits 18:17 = 3, reserved. As KVM: a count already running fires
    /// once; a TMICT write stops the host timer without restarting it, and
    /// TMCCT goes on reading the old count.
    Reserved,
}

impl TimerMode {
    const fn from_lvtt(bits: u32) -> TimerMode {
        match (bits >> 17) & 3 {
            0 => TimerMode::OneShot,
            1 => TimerMode::Periodic,
            2 => TimerMode::TscDeadline,
            _ => TimerMode::Reserved,
        }
    }
}

/// When the timer wants [`Lapic::timer_fired`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    /// At this host-monotonic time, in ns (one-shot, periodic).
    Ns(u64),
    /// When the guest TSC reaches this value (TSC-deadline). The kernel
    /// converts with the guest TSC rate; a deadline already passed means
    /// "now" (`start_sw_tscdeadline`).
    GuestTsc(u64),
}

/// Timer state KVM keeps beside the register page (`struct kvm_timer`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Timer {
    mode: TimerMode,
    /// One-shot/periodic length, ns; 0 = no count programmed.
    period_ns: u64,
    /// Host time the count reaches zero (KVM's `target_expiration`): 0
    /// once a one-shot fired, and kept when the timer is stopped, as TMCCT
    /// goes on reading it.
    target_ns: u64,
    /// The host timer runs for `target_ns` (KVM's hrtimer is active).
    armed: bool,
    /// `IA32_TSC_DEADLINE` in TSC-deadline mode; 0 = disarmed.
    tsc_deadline: u64,
}

impl Timer {
    /// Stop the host timer (`hrtimer_cancel`); the programmed values stay.
    pub(super) fn cancel(&mut self) {
        self.armed = false;
    }
}

impl Lapic {
    /// The timer's mode.
    pub fn timer_mode(&self) -> TimerMode {
        self.timer.mode
    }

    /// The divider TDCR selects (`update_divide_count`): bits 3 and 1:0
    /// give 2, 4, ..., 128, and 0b1011 gives 1.
    pub fn timer_divide(&self) -> u32 {
        let t = self.reg(reg::TDCR) & 0xf;
        let shift = ((t & 3) | ((t & 8) >> 1)) + 1;
        1 << (shift & 7)
    }

    /// `count` bus cycles through the divider, in ns (`tmict_to_ns`).
    fn count_to_ns(&self, count: u32) -> u64 {
        u64::from(count)
            .saturating_mul(u64::from(self.cfg.bus_cycle_ns))
            .saturating_mul(u64::from(self.timer_divide()))
    }

    /// `limit_periodic_timer_frequency`.
    fn limit_period(&mut self) {
        let t = &mut self.timer;
        if t.mode == TimerMode::Periodic && t.period_ns != 0 && t.period_ns < self.cfg.min_period_ns
        {
            t.period_ns = self.cfg.min_period_ns;
        }
    }

    /// `apic_update_lvtt`, after LVTT changed: a new mode takes effect; a
    /// move into or out of TSC-deadline stops the timer and clears TMICT
    /// and the deadline; one-shot ↔ periodic keeps a running count.
    pub(super) fn update_lvtt(&mut self) {
        let mode = TimerMode::from_lvtt(self.reg(reg::LVT_TIMER) & self.cfg.timer_modes.mask());
        if mode == self.timer.mode {
            return;
        }
        if (mode == TimerMode::TscDeadline) != (self.timer.mode == TimerMode::TscDeadline) {
            self.timer.cancel();
            self.set_reg(reg::TMICT, 0);
            self.timer.period_ns = 0;
            self.timer.tsc_deadline = 0;
        }
        self.timer.mode = mode;
        self.limit_period();
    }

    /// A TMICT write (ignored in TSC-deadline mode): restart the count, or
    /// stop it with 0 (`start_apic_timer`).
    pub(super) fn write_tmict(&mut self, v: u32, now_ns: u64) {
        if self.timer.mode == TimerMode::TscDeadline {
            return;
        }
        self.timer.cancel();
        self.set_reg(reg::TMICT, v);
        self.start(None, now_ns);
    }

    /// `__start_apic_timer` for one-shot/periodic: the count runs for the
    /// whole period, or for the stored TMCCT (`from_current`, on
    /// `KVM_SET_LAPIC`; a 0 there restarts a periodic count for a whole
    /// period and expires a one-shot at once, so that one about to fire
    /// when saved still fires).
    fn start(&mut self, from_current: Option<u32>, now_ns: u64) {
        if !matches!(self.timer.mode, TimerMode::OneShot | TimerMode::Periodic) {
            return;
        }
        self.timer.period_ns = self.count_to_ns(self.reg(reg::TMICT));
        if self.timer.period_ns == 0 {
            return;
        }
        self.limit_period();
        let period = self.timer.period_ns;
        let run = match from_current.map(|c| self.count_to_ns(c)) {
            None => period,
            Some(0) if self.timer.mode == TimerMode::Periodic => period,
            Some(0) => 0,
            Some(ns) => ns.min(period),
        };
        self.timer.target_ns = now_ns.saturating_add(run);
        self.timer.armed = true;
    }

    /// A TDCR write (`val & 0xb` is kept): a running count keeps the
    /// fraction it has left, at the new rate (`update_target_expiration`).
    ///
    /// KVM also starts the host timer when it was not running, so a divider
    /// change after a one-shot fired fires it again (its expired target
    /// becomes `now`); this model leaves a stopped timer stopped.
    pub(super) fn write_tdcr(&mut self, v: u32, now_ns: u64) {
        let old = self.timer_divide();
        self.set_reg(reg::TDCR, v & 0xb);
        let new = self.timer_divide();
        if new == old || self.timer.period_ns == 0 {
            return;
        }
        self.timer.period_ns = self.count_to_ns(self.reg(reg::TMICT));
        self.limit_period();
        let left = u128::from(self.timer.target_ns.saturating_sub(now_ns));
        // At most u64::MAX × 128 / 1: u128 cannot overflow; the result saturates.
        let scaled = left * u128::from(new) / u128::from(old);
        let scaled = u64::try_from(scaled).unwrap_or(u64::MAX);
        self.timer.target_ns = now_ns.saturating_add(scaled);
        // KVM cancels and restarts, which starts nothing without a period
        // or in the reserved mode.
        if self.timer.period_ns == 0 || self.timer.mode == TimerMode::Reserved {
            self.timer.armed = false;
        }
    }

    /// TMCCT as read at `now_ns` (0 in TSC-deadline mode).
    pub(super) fn current_count(&self, now_ns: u64) -> u32 {
        if self.timer.mode == TimerMode::TscDeadline {
            return 0;
        }
        let period = self.timer.period_ns;
        if self.reg(reg::TMICT) == 0 || period == 0 {
            return 0;
        }
        let left = self.timer.target_ns.saturating_sub(now_ns) % period;
        let per_count = u64::from(self.cfg.bus_cycle_ns) * u64::from(self.timer_divide());
        // A period is at most count × per_count, so this fits in u32 (it
        // saturates only if the product above did).
        let n = left.checked_div(per_count).unwrap_or(0);
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// Stop the timer and restart it from the TMCCT `KVM_SET_LAPIC` stored
    /// (or keep the TSC deadline armed).
    pub(super) fn restart_from_state(&mut self, now_ns: u64) {
        self.timer.cancel();
        self.update_lvtt();
        let current = self.reg(reg::TMCCT);
        self.start(Some(current), now_ns);
        self.set_reg(reg::TMCCT, 0);
    }

    /// When the kernel should call [`Lapic::timer_fired`]; `None` when the
    /// timer is stopped. After every [`Effects::timer_changed`] the host
    /// timer is re-armed from this.
    pub fn timer_expiry(&self) -> Option<Expiry> {
        match self.timer.mode {
            TimerMode::TscDeadline => {
                (self.timer.tsc_deadline != 0).then_some(Expiry::GuestTsc(self.timer.tsc_deadline))
            }
            _ => self.timer.armed.then_some(Expiry::Ns(self.timer.target_ns)),
        }
    }

    /// The host timer fired at `now_ns`, guest TSC `guest_tsc`. If the
    /// expiry has come, the LVT timer interrupt is delivered (unless masked
    /// or the APIC disabled: the count still completes, as KVM's
    /// `kvm_apic_inject_pending_timer_irqs`), a one-shot stops, a deadline
    /// disarms, and a periodic count reloads from its last expiry (from
    /// `now` if it fell behind: one interrupt, no catch-up). `None` if
    /// nothing was due (a stale or early callback: re-arm from
    /// [`Lapic::timer_expiry`]).
    pub fn timer_fired(&mut self, now_ns: u64, guest_tsc: u64) -> Option<Accepted> {
        match self.timer_expiry()? {
            Expiry::Ns(t) if now_ns < t => return None,
            Expiry::GuestTsc(d) if guest_tsc < d => return None,
            _ => {}
        }
        let r = self.local_interrupt(Lvt::Timer);
        let t = &mut self.timer;
        match t.mode {
            TimerMode::TscDeadline => t.tsc_deadline = 0,
            TimerMode::Periodic if t.period_ns != 0 => {
                t.target_ns = t.target_ns.saturating_add(t.period_ns).max(now_ns);
            }
            // A one-shot's target goes to 0 (KVM), so TMCCT reads 0.
            TimerMode::OneShot | TimerMode::Periodic => {
                t.target_ns = 0;
                t.armed = false;
            }
            TimerMode::Reserved => t.armed = false,
        }
        Some(r)
    }

    /// `IA32_TSC_DEADLINE` as the guest reads it: the deadline in
    /// TSC-deadline mode with the APIC hardware-enabled, else 0
    /// (`kvm_get_lapic_tscdeadline_msr`).
    pub fn tsc_deadline(&self) -> u64 {
        if self.hw_enabled() && self.timer.mode == TimerMode::TscDeadline {
            self.timer.tsc_deadline
        } else {
            0
        }
    }

    /// An `IA32_TSC_DEADLINE` write: ignored unless in TSC-deadline mode
    /// with the APIC hardware-enabled; 0 disarms
    /// (`kvm_set_lapic_tscdeadline_msr`). Never #GP.
    pub fn set_tsc_deadline(&mut self, v: u64) -> Effects {
        if !self.hw_enabled() || self.timer.mode != TimerMode::TscDeadline {
            return Effects::default();
        }
        let before = self.before();
        self.timer.tsc_deadline = v;
        self.after(before, Effects::default())
    }
}
