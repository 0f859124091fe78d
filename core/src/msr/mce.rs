//! Machine-check architecture as KVM emulates it: `IA32_MCG_*` and the
//! per-bank `IA32_MCi_*` MSRs (`set_msr_mce`, `get_msr_mce`),
//! `KVM_X86_SETUP_MCE` and `KVM_X86_SET_MCE` (`kvm_vcpu_ioctl_x86_setup_mce`,
//! `kvm_vcpu_ioctl_x86_set_mce`). What an injected error asks of the vCPU
//! (#MC, a triple fault, a CMCI) comes back as a value.

use super::super::uapi::KvmX86Mce;

/// `KVM_MAX_MCE_BANKS`, which `KVM_CHECK_EXTENSION(KVM_CAP_MCE)` reports.
pub const MAX_BANKS: usize = 32;

/// `IA32_P5_MC_ADDR`: reads as 0.
pub const P5_MC_ADDR: u32 = 0x0;
/// `IA32_P5_MC_TYPE`: reads as 0.
pub const P5_MC_TYPE: u32 = 0x1;
/// `IA32_MCG_CAP`: read-only; set by `KVM_X86_SETUP_MCE`.
pub const MCG_CAP: u32 = 0x179;
/// `IA32_MCG_STATUS`.
pub const MCG_STATUS: u32 = 0x17a;
/// `IA32_MCG_CTL` (present with [`MCG_CTL_P`]).
pub const MCG_CTL: u32 = 0x17b;
/// `IA32_MCG_EXT_CTL` (local machine checks, VT-x only).
pub const MCG_EXT_CTL: u32 = 0x4d0;
/// `IA32_MC0_CTL2`: bank `i`'s CMCI control is `MC0_CTL2 + i`.
pub const MC0_CTL2: u32 = 0x280;
/// `IA32_MC0_CTL`: bank `i` is `MC0_CTL + 4 * i` (CTL, STATUS, ADDR, MISC).
pub const MC0_CTL: u32 = 0x400;

/// `MCG_CAP.MCG_CTL_P`: `IA32_MCG_CTL` exists.
pub const MCG_CTL_P: u64 = 1 << 8;
/// `MCG_CAP.MCG_CMCI_P`: corrected-error interrupts (`MCi_CTL2`).
pub const MCG_CMCI_P: u64 = 1 << 10;
/// `MCG_CAP.MCG_SER_P`: software error recovery.
pub const MCG_SER_P: u64 = 1 << 24;
/// `MCG_CAP.MCG_LMCE_P`: local machine checks (`IA32_MCG_EXT_CTL`).
pub const MCG_LMCE_P: u64 = 1 << 27;
/// The `MCG_CAP` bits every KVM supports (`KVM_MCE_CAP_SUPPORTED`); VT-x
/// adds [`MCG_LMCE_P`] and [`MCG_CMCI_P`].
pub const CAP_SUPPORTED: u64 = MCG_CTL_P | MCG_SER_P;

/// The `MCG_CAP` bits `KVM_X86_GET_MCE_CAP_SUPPORTED` reports (and
/// `KVM_X86_SETUP_MCE` takes) on VT-x (`vmx`) or SVM.
pub const fn supported_cap(vmx: bool) -> u64 {
    if vmx {
        CAP_SUPPORTED | MCG_LMCE_P | MCG_CMCI_P
    } else {
        CAP_SUPPORTED
    }
}
/// `MCG_CAP` bits `KVM_X86_SETUP_MCE` takes beyond the supported ones: the
/// bank count (7:0) and the extended-register count (23:16).
const CAP_COUNTS: u64 = 0xff | 0xff_0000;

/// `MCG_STATUS.MCIP`: a machine check is in progress.
pub const MCG_STATUS_MCIP: u64 = 1 << 2;
/// `MCG_EXT_CTL.LMCE_EN`.
pub const MCG_EXT_CTL_LMCE_EN: u64 = 1;

/// `MCi_STATUS.VAL`: the bank holds an error.
pub const MCI_STATUS_VAL: u64 = 1 << 63;
/// `MCi_STATUS.OVER`: an error was lost.
pub const MCI_STATUS_OVER: u64 = 1 << 62;
/// `MCi_STATUS.UC`: uncorrected.
pub const MCI_STATUS_UC: u64 = 1 << 61;
/// `MCi_STATUS.PCC`: processor context corrupt.
pub const MCI_STATUS_PCC: u64 = 1 << 57;
/// `MCi_STATUS.S`: signalled as a machine-check exception.
pub const MCI_STATUS_S: u64 = 1 << 56;
/// `MCi_STATUS.AR`: recovery action required.
pub const MCI_STATUS_AR: u64 = 1 << 55;

/// `MCi_CTL2.CMCI_EN`.
pub const MCI_CTL2_CMCI_EN: u64 = 1 << 30;
/// `MCi_CTL2`'s corrected-error threshold.
pub const MCI_CTL2_THRESHOLD: u64 = 0x7fff;

/// What an accepted `KVM_X86_SET_MCE` asks of the vCPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inject {
    /// The error is only recorded in the bank.
    Nothing,
    /// Raise #MC.
    MachineCheck,
    /// An uncorrected error during a machine check, or with CR4.MCE clear:
    /// the vCPU shuts down.
    TripleFault,
    /// A UCNA error in a bank with CMCI enabled: deliver the LAPIC's LVT
    /// CMCI.
    Cmci,
}

/// One vCPU's machine-check state (`vcpu->arch.mcg_*`, `mce_banks`,
/// `mci_ctl2_banks`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mce {
    /// `IA32_MCG_CAP`.
    pub cap: u64,
    /// `IA32_MCG_STATUS`.
    pub status: u64,
    /// `IA32_MCG_CTL`.
    pub ctl: u64,
    /// `IA32_MCG_EXT_CTL`.
    pub ext_ctl: u64,
    /// `MCi_CTL`, `MCi_STATUS`, `MCi_ADDR`, `MCi_MISC` for each bank.
    pub banks: [u64; MAX_BANKS * 4],
    /// `MCi_CTL2` for each bank.
    pub ctl2: [u64; MAX_BANKS],
}

impl Default for Mce {
    fn default() -> Self {
        Self::new()
    }
}

impl Mce {
    /// A new vCPU's state: all banks, no `MCG_CTL`, everything zero
    /// (`kvm_arch_vcpu_create`).
    pub const fn new() -> Self {
        Self {
            cap: MAX_BANKS as u64,
            status: 0,
            ctl: 0,
            ext_ctl: 0,
            banks: [0; MAX_BANKS * 4],
            ctl2: [0; MAX_BANKS],
        }
    }

    /// The number of banks `MCG_CAP` gives.
    pub fn bank_count(&self) -> usize {
        (self.cap & 0xff) as usize
    }

    /// `KVM_X86_SETUP_MCE` with `cap`, given the `MCG_CAP` bits this KVM
    /// supports: `false` (`EINVAL`) for no banks, more than
    /// [`MAX_BANKS`], or an unsupported bit. `MCG_CTL` and each `MCi_CTL`
    /// become all ones, each `MCi_CTL2` zero (with CMCI); the rest stays.
    /// `vmx` false: SVM then keeps only bits 8:0 of `MCG_CAP`
    /// (`svm_setup_mce`: the rest are reserved on AMD).
    pub fn setup(&mut self, cap: u64, vmx: bool) -> bool {
        let supported = supported_cap(vmx);
        let n = (cap & 0xff) as usize;
        if n == 0 || n > MAX_BANKS || cap & !(supported | CAP_COUNTS) != 0 {
            return false;
        }
        self.cap = if vmx { cap } else { cap & 0x1ff };
        if cap & MCG_CTL_P != 0 {
            self.ctl = u64::MAX;
        }
        for b in 0..n {
            self.banks[b * 4] = u64::MAX;
            if cap & MCG_CMCI_P != 0 {
                self.ctl2[b] = 0;
            }
        }
        true
    }

    /// Whether `msr` is one of the MSRs this model owns (whatever the
    /// bank count); `MCG_EXT_CTL` is the vendor's.
    pub fn owns(msr: u32) -> bool {
        matches!(
            msr,
            P5_MC_ADDR | P5_MC_TYPE | MCG_CAP | MCG_STATUS | MCG_CTL
        ) || (MC0_CTL..MC0_CTL + 4 * MAX_BANKS as u32).contains(&msr)
            || (MC0_CTL2..MC0_CTL2 + MAX_BANKS as u32).contains(&msr)
    }

    /// The bank-register index of `msr` if it is a bank MSR of an existing
    /// bank.
    fn bank_reg(&self, msr: u32) -> Option<usize> {
        let i = msr.checked_sub(MC0_CTL)? as usize;
        (i < self.bank_count() * 4).then_some(i)
    }

    /// The bank of `msr` if it is the `MCi_CTL2` of an existing bank.
    fn ctl2_bank(&self, msr: u32) -> Option<usize> {
        let i = msr.checked_sub(MC0_CTL2)? as usize;
        (i < self.bank_count()).then_some(i)
    }

    /// Reads `msr` (one [`Mce::owns`]), or `None` for #GP: `MCG_CTL`
    /// without `MCG_CTL_P` and `MCi_CTL2` without CMCI only for the host;
    /// a bank beyond the count never.
    pub fn get(&self, msr: u32, host: bool) -> Option<u64> {
        match msr {
            P5_MC_ADDR | P5_MC_TYPE => Some(0),
            MCG_CAP => Some(self.cap),
            MCG_STATUS => Some(self.status),
            MCG_CTL => (self.cap & MCG_CTL_P != 0 || host).then_some(self.ctl),
            MC0_CTL2..MC0_CTL => {
                let b = self.ctl2_bank(msr)?;
                (self.cap & MCG_CMCI_P != 0 || host).then_some(self.ctl2[b])
            }
            _ => self.bank_reg(msr).map(|i| self.banks[i]),
        }
    }

    /// Writes `v` to `msr` (one [`Mce::owns`]); `false` means #GP
    /// (`set_msr_mce`). `mci_status_writable`: `HWCR.McStatusWrEn` in an
    /// AMD-compatible guest, which lets the guest write non-zero
    /// `MCi_STATUS` values.
    pub fn set(&mut self, msr: u32, v: u64, host: bool, mci_status_writable: bool) -> bool {
        match msr {
            MCG_STATUS => self.status = v,
            MCG_CTL => {
                if self.cap & MCG_CTL_P == 0 && (v != 0 || !host) {
                    return false;
                }
                if v != 0 && v != u64::MAX {
                    return false;
                }
                self.ctl = v;
            }
            MC0_CTL2..MC0_CTL => {
                let Some(b) = self.ctl2_bank(msr) else {
                    return false;
                };
                if self.cap & MCG_CMCI_P == 0 && (v != 0 || !host) {
                    return false;
                }
                if v & !(MCI_CTL2_CMCI_EN | MCI_CTL2_THRESHOLD) != 0 {
                    return false;
                }
                self.ctl2[b] = v;
            }
            _ => {
                let Some(i) = self.bank_reg(msr) else {
                    return false;
                };
                // Only 0 or all ones, but Linux clears bit 10 of bank 4
                // (K8 GART erratum) and UnixWare bit 0 of bank 1.
                if i % 4 == 0 && v != 0 && (v | (1 << 10) | 1) != u64::MAX {
                    return false;
                }
                // Only 0 clears a STATUS, unless AMD's McStatusWrEn.
                if i % 4 == 1 && !host && v != 0 && !mci_status_writable {
                    return false;
                }
                self.banks[i] = v;
            }
        }
        true
    }

    /// `KVM_X86_SET_MCE`: `None` (`EINVAL`) for a bank beyond the count or
    /// a status without VAL. `cr4_mce`: the guest's CR4.MCE.
    pub fn inject(&mut self, m: &KvmX86Mce, cr4_mce: bool) -> Option<Inject> {
        let b = usize::from(m.bank);
        if b >= self.bank_count() || m.status & MCI_STATUS_VAL == 0 {
            return None;
        }
        let regs = b * 4;
        let mut status = m.status;
        if is_ucna(m) {
            self.banks[regs + 1] = status;
            self.banks[regs + 2] = m.addr;
            self.banks[regs + 3] = m.misc;
            self.status = m.mcg_status;
            let cmci = self.cap & MCG_CMCI_P != 0 && self.ctl2[b] & MCI_CTL2_CMCI_EN != 0;
            return Some(if cmci { Inject::Cmci } else { Inject::Nothing });
        }
        let uc = status & MCI_STATUS_UC != 0;
        // Uncorrected errors are reported only with MCG_CTL and the
        // bank's MCi_CTL all ones.
        if uc && self.cap & MCG_CTL_P != 0 && self.ctl != u64::MAX {
            return Some(Inject::Nothing);
        }
        if uc && self.banks[regs] != u64::MAX {
            return Some(Inject::Nothing);
        }
        let old = self.banks[regs + 1];
        if uc {
            if self.status & MCG_STATUS_MCIP != 0 || !cr4_mce {
                return Some(Inject::TripleFault);
            }
            if old & MCI_STATUS_VAL != 0 {
                status |= MCI_STATUS_OVER;
            }
            self.banks[regs + 2] = m.addr;
            self.banks[regs + 3] = m.misc;
            self.status = m.mcg_status;
            self.banks[regs + 1] = status;
            return Some(Inject::MachineCheck);
        }
        if old & MCI_STATUS_VAL == 0 || old & MCI_STATUS_UC == 0 {
            if old & MCI_STATUS_VAL != 0 {
                status |= MCI_STATUS_OVER;
            }
            self.banks[regs + 2] = m.addr;
            self.banks[regs + 3] = m.misc;
            self.banks[regs + 1] = status;
        } else {
            // A corrected error never overwrites an uncorrected one.
            self.banks[regs + 1] |= MCI_STATUS_OVER;
        }
        Some(Inject::Nothing)
    }
}

/// An uncorrected error that needs no action (`is_ucna`): no MCG_STATUS
/// bits, VAL and UC but none of PCC, S and AR.
fn is_ucna(m: &KvmX86Mce) -> bool {
    m.mcg_status == 0
        && m.status & (MCI_STATUS_PCC | MCI_STATUS_S | MCI_STATUS_AR) == 0
        && m.status & MCI_STATUS_VAL != 0
        && m.status & MCI_STATUS_UC != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mce(status: u64, bank: u8) -> KvmX86Mce {
        KvmX86Mce {
            status,
            addr: 0x1234,
            misc: 0x56,
            mcg_status: 1,
            bank,
            ..Default::default()
        }
    }

    #[test]
    fn new_vcpu_has_32_banks_without_mcg_ctl() {
        let m = Mce::new();
        assert_eq!(m.get(MCG_CAP, false), Some(32));
        assert_eq!(m.get(MCG_CTL, false), None);
        assert_eq!(m.get(MCG_CTL, true), Some(0));
        assert_eq!(m.get(MC0_CTL + 4 * 31 + 3, false), Some(0));
        assert_eq!(m.get(MC0_CTL + 4 * 32, false), None);
    }

    #[test]
    fn setup_checks_banks_and_bits() {
        let mut m = Mce::new();
        assert!(!m.setup(0, false));
        assert!(!m.setup(33, false));
        assert!(!m.setup(10 | MCG_CMCI_P, false));
        assert!(!m.setup(10 | (1 << 9), false));
        assert!(m.setup(10 | MCG_CMCI_P, true));
        assert!(m.setup(10 | MCG_CTL_P | MCG_SER_P | 0x30_0000, true));
        assert_eq!(
            m.get(MCG_CAP, false),
            Some(10 | MCG_CTL_P | MCG_SER_P | 0x30_0000)
        );
        // SVM keeps bits 8:0 only.
        assert!(m.setup(10 | MCG_CTL_P | MCG_SER_P | 0x30_0000, false));
        assert_eq!(m.get(MCG_CAP, false), Some(10 | MCG_CTL_P));
        assert_eq!(m.get(MCG_CTL, false), Some(u64::MAX));
        assert_eq!(m.get(MC0_CTL + 4 * 9, false), Some(u64::MAX));
        assert_eq!(m.get(MC0_CTL + 4 * 10, false), None);
        assert_eq!(m.get(MC0_CTL + 4 * 10, true), None);
        // A failed setup changes nothing.
        assert!(!m.setup(40, false));
        assert_eq!(m.bank_count(), 10);
    }

    #[test]
    fn mcg_ctl_takes_only_zero_or_ones() {
        let mut m = Mce::new();
        assert!(!m.set(MCG_CTL, 0, false, false));
        assert!(m.set(MCG_CTL, 0, true, false));
        assert!(!m.set(MCG_CTL, u64::MAX, true, false));
        m.setup(4 | MCG_CTL_P, false);
        assert!(m.set(MCG_CTL, 0, false, false));
        assert!(!m.set(MCG_CTL, 1, true, false));
        assert!(m.set(MCG_CTL, u64::MAX, false, false));
        assert!(!m.set(MCG_CAP, 4, true, false));
    }

    #[test]
    fn mci_ctl_and_status_rules() {
        let mut m = Mce::new();
        m.setup(4, false);
        let ctl = |b: u32| MC0_CTL + 4 * b;
        assert!(m.set(ctl(1), 0, false, false));
        assert!(m.set(ctl(1), !(1 << 10) & !1, false, false));
        assert!(!m.set(ctl(1), !2, false, false));
        assert!(!m.set(ctl(1), 5, true, false));
        assert!(m.set(ctl(1) + 1, 0, false, false));
        assert!(!m.set(ctl(1) + 1, 7, false, false));
        assert!(m.set(ctl(1) + 1, 7, false, true));
        assert!(m.set(ctl(1) + 1, 8, true, false));
        assert!(m.set(ctl(1) + 2, 9, false, false));
        assert!(m.set(ctl(1) + 3, 10, false, false));
        assert_eq!(m.get(ctl(1) + 2, false), Some(9));
        assert!(!m.set(ctl(4), 0, true, false));
    }

    #[test]
    fn ctl2_needs_cmci() {
        let mut m = Mce::new();
        m.setup(2, true);
        assert_eq!(m.get(MC0_CTL2, false), None);
        assert_eq!(m.get(MC0_CTL2, true), Some(0));
        assert!(!m.set(MC0_CTL2, MCI_CTL2_CMCI_EN, true, false));
        assert!(m.set(MC0_CTL2, 0, true, false));
        m.setup(2 | MCG_CMCI_P, true);
        assert!(m.set(MC0_CTL2 + 1, MCI_CTL2_CMCI_EN | 5, false, false));
        assert!(!m.set(MC0_CTL2 + 1, 1 << 31, false, false));
        assert!(!m.set(MC0_CTL2 + 2, 0, true, false));
        assert_eq!(m.get(MC0_CTL2 + 1, false), Some(MCI_CTL2_CMCI_EN | 5));
    }

    #[test]
    fn inject_checks_bank_and_val() {
        let mut m = Mce::new();
        m.setup(4 | MCG_CTL_P, false);
        assert_eq!(m.inject(&mce(MCI_STATUS_VAL, 4), true), None);
        assert_eq!(m.inject(&mce(MCI_STATUS_UC, 0), true), None);
    }

    #[test]
    fn uncorrected_error_raises_mc_or_shuts_down() {
        let mut m = Mce::new();
        m.setup(4 | MCG_CTL_P, false);
        let uc = MCI_STATUS_VAL | MCI_STATUS_UC | MCI_STATUS_PCC;
        assert_eq!(m.inject(&mce(uc, 2), false), Some(Inject::TripleFault));
        assert_eq!(m.get(MC0_CTL + 9, false), Some(0));
        assert_eq!(m.inject(&mce(uc, 2), true), Some(Inject::MachineCheck));
        assert_eq!(m.get(MC0_CTL + 9, false), Some(uc));
        assert_eq!(m.get(MC0_CTL + 10, false), Some(0x1234));
        assert_eq!(m.get(MCG_STATUS, false), Some(1));
        // A second one in the same bank overflows.
        assert_eq!(m.inject(&mce(uc, 2), true), Some(Inject::MachineCheck));
        assert_eq!(m.get(MC0_CTL + 9, false), Some(uc | MCI_STATUS_OVER));
        // MCIP set: shutdown.
        m.set(MCG_STATUS, MCG_STATUS_MCIP, false, false);
        assert_eq!(m.inject(&mce(uc, 1), true), Some(Inject::TripleFault));
    }

    #[test]
    fn uncorrected_error_is_dropped_when_disabled() {
        let mut m = Mce::new();
        m.setup(4 | MCG_CTL_P, false);
        let uc = MCI_STATUS_VAL | MCI_STATUS_UC | MCI_STATUS_S;
        m.set(MC0_CTL + 4, 0, false, false);
        assert_eq!(m.inject(&mce(uc, 1), true), Some(Inject::Nothing));
        assert_eq!(m.get(MC0_CTL + 5, false), Some(0));
        m.set(MCG_CTL, 0, false, false);
        assert_eq!(m.inject(&mce(uc, 0), true), Some(Inject::Nothing));
        assert_eq!(m.get(MC0_CTL + 1, false), Some(0));
    }

    #[test]
    fn corrected_error_is_recorded_without_mc() {
        let mut m = Mce::new();
        m.setup(4, false);
        let ce = MCI_STATUS_VAL | 0x17;
        assert_eq!(m.inject(&mce(ce, 3), false), Some(Inject::Nothing));
        assert_eq!(m.get(MC0_CTL + 13, false), Some(ce));
        // MCG_STATUS is not touched by corrected errors.
        assert_eq!(m.get(MCG_STATUS, false), Some(0));
        assert_eq!(m.inject(&mce(ce, 3), false), Some(Inject::Nothing));
        assert_eq!(m.get(MC0_CTL + 13, false), Some(ce | MCI_STATUS_OVER));
        // Over an uncorrected one: only OVER.
        let uc = MCI_STATUS_VAL | MCI_STATUS_UC | MCI_STATUS_PCC;
        m.set(MC0_CTL + 5, uc, true, false);
        assert_eq!(m.inject(&mce(ce, 1), false), Some(Inject::Nothing));
        assert_eq!(m.get(MC0_CTL + 5, false), Some(uc | MCI_STATUS_OVER));
        assert_eq!(m.get(MC0_CTL + 6, false), Some(0));
    }

    #[test]
    fn ucna_is_recorded_and_signals_cmci_if_enabled() {
        let mut m = Mce::new();
        m.setup(2 | MCG_CMCI_P, true);
        let ucna = KvmX86Mce {
            mcg_status: 0,
            ..mce(MCI_STATUS_VAL | MCI_STATUS_UC, 1)
        };
        // The bank's MCi_CTL does not matter for UCNA.
        m.set(MC0_CTL + 4, 0, false, false);
        assert_eq!(m.inject(&ucna, false), Some(Inject::Nothing));
        assert_eq!(m.get(MC0_CTL + 5, false), Some(ucna.status));
        m.set(MC0_CTL2 + 1, MCI_CTL2_CMCI_EN, false, false);
        assert_eq!(m.inject(&ucna, false), Some(Inject::Cmci));
        // Not overflowed: UCNA overwrites.
        assert_eq!(m.get(MC0_CTL + 5, false), Some(ucna.status));
    }

    #[test]
    fn owns_covers_all_32_banks() {
        assert!(Mce::owns(MC0_CTL + 127));
        assert!(!Mce::owns(MC0_CTL + 128));
        assert!(Mce::owns(MC0_CTL2 + 31));
        assert!(!Mce::owns(MC0_CTL2 + 32));
        assert!(!Mce::owns(MCG_EXT_CTL));
    }
}
