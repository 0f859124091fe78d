// SPDX-License-Identifier: GPL-2.0

//! Debugging: `KVM_SET_GUEST_DEBUG` (userspace's single step, software
//! and hardware breakpoints, #DB/#BP injection), the trap flag rkvm sets
//! for the step and hides, the debug registers the guest runs with, and
//! what a #DB or #BP exit becomes: a `KVM_EXIT_DEBUG` or the guest's own
//! exception. The rules are `core/src/debug.rs`; the backends arm the
//! registers and report the exits.

use super::{Flow, Inner, Vcpu};
use crate::{
    backend::{ArchVcpu, Backend},
    debug::{self, GuestDebug},
    decode::{Mode, Segment},
    events::{BP_VECTOR, DB_VECTOR},
    sys::uaccess,
    uapi::KvmGuestDebug,
};
use kernel::prelude::*;

impl<B: Backend> Inner<B> {
    /// The linear address of RIP (`kvm_get_linear_rip`).
    pub(super) fn linear_rip(&self) -> u64 {
        debug::linear_rip(
            self.mode() == Mode::Bits64,
            self.arch.segment_base(Segment::Cs),
            self.arch.rip(),
        )
    }

    /// RFLAGS without the single step's TF (`kvm_get_rflags`).
    pub(super) fn rflags(&self) -> u64 {
        self.guest_debug.visible_rflags(self.arch.rflags())
    }

    /// Sets RFLAGS, with the single step's TF while the guest is where the
    /// step was asked (`__kvm_set_rflags`).
    pub(super) fn set_rflags(&mut self, v: u64) {
        let v = self.guest_debug.loaded_rflags(v, self.linear_rip());
        self.arch.set_rflags(v);
    }

    /// Recomputes the DR0-DR3/DR7 the guest runs with (`kvm_update_dr7`).
    pub(super) fn update_dr7(&mut self) {
        let (db, dr7) = self.guest_debug.effective(self.state.db, self.state.dr7);
        self.state.eff_db = db;
        self.state.eff_dr7 = dr7;
    }

    /// Raises #DB for the guest with `payload` as its cause, merged into
    /// DR6 now (what KVM does at delivery, and at once for userspace that
    /// reads DR6 without `KVM_CAP_EXCEPTION_PAYLOAD`).
    pub(super) fn queue_db(&mut self, payload: u64) {
        let dr6 = debug::deliver_db_payload(self.arch.dr6(), payload);
        self.arch.set_dr6(dr6);
        self.queue_exception(DB_VECTOR, None);
    }

    /// A #DB the hardware raised in the guest: a `KVM_EXIT_DEBUG` while
    /// userspace single-steps or uses hardware breakpoints, nothing for the
    /// backend's own step to an NMI window, else the guest's #DB
    /// (`db_interception`, `handle_exception_nmi`).
    pub(super) fn debug_exception(&mut self, e: DebugExit) -> Flow {
        if self.guest_debug.debug_exits() {
            let dr7 = self.state.eff_dr7;
            self.staging
                .set_debug(u32::from(DB_VECTOR), e.pc, Some(e.dr6), Some(dr7));
            return Flow::User;
        }
        if e.own_step {
            return Flow::Resume;
        }
        if let Some(rip) = e.icebp_next_rip {
            // INT1 is reported before it retired: move past it first.
            self.arch.set_rip(rip);
            self.arch.set_interrupt_shadow(0);
        }
        self.queue_db(e.payload);
        Flow::Resume
    }

    /// An intercepted #BP (only under `KVM_GUESTDBG_USE_SW_BP`): userspace
    /// decides (`bp_interception`).
    pub(super) fn breakpoint(&mut self, pc: u64) -> Flow {
        self.staging.set_debug(u32::from(BP_VECTOR), pc, None, None);
        Flow::User
    }

    /// After an exit was handled: the single-step trap of an instruction
    /// rkvm completed for the guest with TF set
    /// (`kvm_skip_emulated_instruction`, the emulator's writeback). It is
    /// lost when the exit goes to userspace for something else, as in KVM.
    pub(super) fn step_trap(&mut self, flow: Flow) -> Flow {
        if !core::mem::take(&mut self.step_trap) || matches!(flow, Flow::User) {
            return flow;
        }
        if self.guest_debug.debug_exits() {
            let pc = self.linear_rip();
            let dr6 = debug::DR6_BS | debug::DR6_ACTIVE_LOW;
            self.staging
                .set_debug(u32::from(DB_VECTOR), pc, Some(dr6), None);
            return Flow::User;
        }
        self.queue_db(debug::DR6_BS);
        Flow::Resume
    }

    /// A pending #BP of `KVM_GUESTDBG_INJECT_BP` is delivered as the trap
    /// INT3 raises: past the instruction at RIP, whose length is `len`
    /// (KVM skips it before injecting).
    pub(super) fn skip_for_bp(&mut self, len: u64) {
        let rip = self.mode_width(self.arch.rip().wrapping_add(len));
        self.arch.set_rip(rip);
    }
}

/// A #DB exit as the backend reports it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DebugExit {
    /// The cause in active-high form (VT-x's exit qualification; SVM's
    /// DR6 with the active-low bits flipped).
    pub(crate) payload: u64,
    /// DR6 as KVM reports it in `KVM_EXIT_DEBUG`.
    pub(crate) dr6: u64,
    /// The address KVM reports (`kvm_debug_exit_arch.pc`).
    pub(crate) pc: u64,
    /// The backend's own single step to an NMI window ended.
    pub(crate) own_step: bool,
    /// INT1 (ICEBP), and the RIP after it (VT-x).
    pub(crate) icebp_next_rip: Option<u64>,
}

impl<B: Backend> Vcpu<B> {
    /// `KVM_SET_GUEST_DEBUG` (`kvm_arch_vcpu_ioctl_set_guest_debug`):
    /// `EBUSY` to inject with an exception already queued; control bits
    /// x86 KVM does not know are kept and ignored, as KVM does.
    pub(super) fn set_guest_debug(&self, arg: usize) -> Result<isize> {
        let d: KvmGuestDebug = uaccess::read(arg)?;
        let mut inner = self.inner.lock();
        if d.control & (debug::INJECT_DB | debug::INJECT_BP) != 0 {
            let ex = &inner.events.exception;
            if ex.pending || ex.injected {
                return Err(EBUSY);
            }
            if d.control & debug::INJECT_DB != 0 {
                inner.queue_exception(DB_VECTOR, None);
            } else {
                inner.queue_exception(BP_VECTOR, None);
                inner.inject_bp = true;
            }
        }
        // Read while the old TF is still filtered out.
        let rflags = inner.rflags();
        let rip = inner.linear_rip();
        inner.guest_debug = GuestDebug::new(d.control, &d.debugreg, rip);
        inner.update_dr7();
        inner.set_rflags(rflags);
        Ok(0)
    }
}
