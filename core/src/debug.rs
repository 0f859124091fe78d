//! Guest debugging as KVM does it (`kvm_arch_vcpu_ioctl_set_guest_debug`,
//! `kvm_update_dr7`, `kvm_get/set_rflags`, `kvm_deliver_exception_payload`):
//! what `KVM_SET_GUEST_DEBUG` asks for, the debug registers the guest runs
//! with, the trap flag rkvm injects and hides for userspace's single step,
//! and how a #DB's cause is merged into the guest's DR6.

/// `KVM_GUESTDBG_ENABLE`: guest debugging is on.
pub const ENABLE: u32 = 1 << 0;
/// `KVM_GUESTDBG_SINGLESTEP`: one instruction per `KVM_RUN`.
pub const SINGLESTEP: u32 = 1 << 1;
/// `KVM_GUESTDBG_USE_SW_BP`: #BP exits to userspace.
pub const USE_SW_BP: u32 = 1 << 16;
/// `KVM_GUESTDBG_USE_HW_BP`: userspace's DR0-DR3/DR7 replace the guest's.
pub const USE_HW_BP: u32 = 1 << 17;
/// `KVM_GUESTDBG_INJECT_DB`: queue a #DB for the guest.
pub const INJECT_DB: u32 = 1 << 18;
/// `KVM_GUESTDBG_INJECT_BP`: queue a #BP for the guest.
pub const INJECT_BP: u32 = 1 << 19;
/// `KVM_GUESTDBG_BLOCKIRQ`: inject no interrupts or NMIs.
pub const BLOCKIRQ: u32 = 1 << 20;
/// Every flag x86 KVM knows (`KVM_GUESTDBG_VALID_MASK`, which
/// `KVM_CAP_SET_GUEST_DEBUG2` returns). KVM stores other bits as given.
pub const VALID_MASK: u32 =
    ENABLE | SINGLESTEP | USE_HW_BP | USE_SW_BP | INJECT_BP | INJECT_DB | BLOCKIRQ;

/// DR6's bits that read as 1 when no debug condition is recorded.
pub const DR6_ACTIVE_LOW: u64 = 0xffff_0ff0;
/// DR6.BS: a single-step trap.
pub const DR6_BS: u64 = 1 << 14;
/// DR6.BD: a debug-register access with DR7.GD set.
pub const DR6_BD: u64 = 1 << 13;
/// DR6's bits that always read as 1 (`DR6_FIXED_1`).
const DR6_FIXED_1: u64 = 0xfffe_0ff0;
/// DR6.RTM (active low).
const DR6_RTM: u64 = 1 << 16;
/// DR6.B0-B3: which breakpoint matched.
const DR_TRAP_BITS: u64 = 0xf;
/// DR7's L0-G3 enable bits: some breakpoint is armed.
pub const DR7_BP_EN_MASK: u64 = 0xff;
/// DR7.GD: general detect.
pub const DR7_GD: u64 = 1 << 13;
/// RFLAGS.TF.
const TF: u64 = 1 << 8;

/// What `KVM_SET_GUEST_DEBUG` set (KVM's `guest_debug`,
/// `guest_debug_dr7`, the `USE_HW_BP` addresses and `singlestep_rip`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuestDebug {
    /// The control flags, or 0 without [`ENABLE`].
    pub control: u32,
    /// DR0-DR3 of [`USE_HW_BP`].
    pub db: [u64; 4],
    /// DR7 of [`USE_HW_BP`].
    pub dr7: u64,
    /// The linear RIP single-stepping was asked at: rkvm's TF is set only
    /// while the guest is there.
    pub singlestep_rip: u64,
}

impl GuestDebug {
    /// The state after `KVM_SET_GUEST_DEBUG(control, debugreg)` with the
    /// guest at linear address `linear_rip`.
    pub fn new(control: u32, debugreg: &[u64; 8], linear_rip: u64) -> Self {
        let control = if control & ENABLE != 0 { control } else { 0 };
        let mut db = [0; 4];
        db.copy_from_slice(&debugreg[..4]);
        Self {
            control,
            db,
            dr7: debugreg[7],
            singlestep_rip: if control & SINGLESTEP != 0 {
                linear_rip
            } else {
                0
            },
        }
    }

    /// Userspace single-steps the guest.
    pub fn single_step(&self) -> bool {
        self.control & SINGLESTEP != 0
    }

    /// #BP exits to userspace.
    pub fn sw_bp(&self) -> bool {
        self.control & USE_SW_BP != 0
    }

    /// A #DB exits to userspace instead of reaching the guest.
    pub fn debug_exits(&self) -> bool {
        self.control & (SINGLESTEP | USE_HW_BP) != 0
    }

    /// No interrupts or NMIs are injected.
    pub fn block_irq(&self) -> bool {
        self.control & BLOCKIRQ != 0
    }

    /// DR0-DR3 and DR7 the guest runs with: userspace's under
    /// [`USE_HW_BP`], else the guest's own (`eff_db`, `kvm_update_dr7`).
    pub fn effective(&self, guest_db: [u64; 4], guest_dr7: u64) -> ([u64; 4], u64) {
        if self.control & USE_HW_BP != 0 {
            (self.db, self.dr7)
        } else {
            (guest_db, guest_dr7)
        }
    }

    /// RFLAGS as userspace and the rest of rkvm see them: the TF of the
    /// single step hidden (`kvm_get_rflags`).
    pub fn visible_rflags(&self, raw: u64) -> u64 {
        if self.single_step() {
            raw & !TF
        } else {
            raw
        }
    }

    /// RFLAGS to load for a value set at linear address `linear_rip`: TF
    /// added while single-stepping at the requested RIP
    /// (`__kvm_set_rflags`).
    pub fn loaded_rflags(&self, v: u64, linear_rip: u64) -> u64 {
        if self.single_step() && linear_rip == self.singlestep_rip {
            v | TF
        } else {
            v
        }
    }
}

/// Whether RFLAGS has TF set.
pub fn trap_flag(rflags: u64) -> bool {
    rflags & TF != 0
}

/// DR6 after a #DB whose cause is `payload` (active-high bits, in VT-x's
/// pending-debug-exceptions form), as `kvm_deliver_exception_payload`: the
/// B0-B3 bits are replaced, the active-low RTM bit cleared if present,
/// BD/BS/BT accumulate, bit 12 stays clear and the fixed bits set.
pub fn deliver_db_payload(dr6: u64, payload: u64) -> u64 {
    let mut v = dr6 & !DR_TRAP_BITS;
    v |= DR6_RTM;
    v &= !(payload & DR6_ACTIVE_LOW);
    v |= payload & !DR6_ACTIVE_LOW;
    v &= !(1 << 12);
    v | DR6_FIXED_1
}

/// The linear address of RIP, as KVM computes it for debug exits
/// (`kvm_get_linear_rip`): RIP in 64-bit mode, else CS.base + RIP in 32
/// bits.
pub fn linear_rip(long_mode_64: bool, cs_base: u64, rip: u64) -> u64 {
    if long_mode_64 {
        rip
    } else {
        cs_base.wrapping_add(rip) & 0xffff_ffff
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_enable_nothing_is_kept() {
        let regs = [1, 2, 3, 4, 0, 0, 0, 0x401];
        let d = GuestDebug::new(SINGLESTEP | USE_HW_BP, &regs, 0x1000);
        assert_eq!(d.control, 0);
        assert!(!d.single_step() && !d.debug_exits());
        assert_eq!(d.effective([9; 4], 0x400), ([9; 4], 0x400));
        assert_eq!(d.singlestep_rip, 0);
    }

    #[test]
    fn hw_bp_replaces_the_guests_registers() {
        let regs = [1, 2, 3, 4, 0, 0, 0, 0x401];
        let d = GuestDebug::new(ENABLE | USE_HW_BP, &regs, 0);
        assert!(d.debug_exits() && !d.single_step());
        assert_eq!(d.effective([9; 4], 0x400), ([1, 2, 3, 4], 0x401));
    }

    #[test]
    fn unknown_bits_are_kept_as_kvm_does() {
        let d = GuestDebug::new(ENABLE | 1 << 30, &[0; 8], 0);
        assert_eq!(d.control, ENABLE | 1 << 30);
        assert_eq!(VALID_MASK, 0x1f_0003);
    }

    #[test]
    fn tf_is_added_only_at_the_step_rip_and_hidden() {
        let d = GuestDebug::new(ENABLE | SINGLESTEP, &[0; 8], 0x1000);
        assert_eq!(d.singlestep_rip, 0x1000);
        assert_eq!(d.loaded_rflags(2, 0x1000), 2 | TF);
        assert_eq!(d.loaded_rflags(2, 0x1001), 2);
        assert_eq!(d.visible_rflags(2 | TF), 2);
        let off = GuestDebug::default();
        assert_eq!(off.visible_rflags(2 | TF), 2 | TF);
        assert_eq!(off.loaded_rflags(2, 0), 2);
    }

    #[test]
    fn payload_sets_dr6_as_kvm() {
        // A single step on a clean DR6.
        assert_eq!(deliver_db_payload(DR6_ACTIVE_LOW, DR6_BS), 0xffff_4ff0);
        // B0-B3 are replaced, BS accumulates.
        assert_eq!(deliver_db_payload(0xffff_4ff2, 1), 0xffff_4ff1);
        // Bit 12 (enabled breakpoint in the payload form) never shows.
        assert_eq!(deliver_db_payload(DR6_ACTIVE_LOW, 1 << 12 | 2), 0xffff_0ff2);
        // RTM in the payload clears the active-low bit.
        assert_eq!(deliver_db_payload(DR6_ACTIVE_LOW, DR6_RTM), 0xfffe_0ff0);
    }

    #[test]
    fn linear_rip_truncates_outside_64_bit_mode() {
        assert_eq!(linear_rip(true, 0x10, 0xffff_ffff_0000), 0xffff_ffff_0000);
        assert_eq!(linear_rip(false, 0xf_0000, 0xfff0), 0xf_fff0);
        assert_eq!(linear_rip(false, 0xffff_f000, 0x2000), 0x1000);
    }
}
