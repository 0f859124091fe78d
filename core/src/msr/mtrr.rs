//! The guest's MTRRs as KVM keeps them (`arch/x86/kvm/mtrr.c`): storage
//! only (the memory types have no effect on rkvm's mappings), with
//! `kvm_mtrr_valid`'s checks.

/// `IA32_MTRRCAP`: read-only.
pub const MTRRCAP: u32 = 0xfe;
/// `IA32_MTRR_PHYSBASE0`; variable range `n` is `PHYSBASE0 + 2n` (base) and
/// `+ 2n + 1` (mask).
pub const PHYSBASE0: u32 = 0x200;
/// `IA32_MTRR_FIX64K_00000`.
pub const FIX64K_00000: u32 = 0x250;
/// `IA32_MTRR_FIX16K_80000`.
pub const FIX16K_80000: u32 = 0x258;
/// `IA32_MTRR_FIX16K_A0000`.
pub const FIX16K_A0000: u32 = 0x259;
/// `IA32_MTRR_FIX4K_C0000`; the eight 4K MSRs follow it.
pub const FIX4K_C0000: u32 = 0x268;
/// `IA32_MTRR_FIX4K_F8000`.
pub const FIX4K_F8000: u32 = 0x26f;
/// `IA32_MTRR_DEF_TYPE`.
pub const DEF_TYPE: u32 = 0x2ff;

/// `KVM_NR_VAR_MTRR`.
pub const NR_VAR: usize = 8;
/// What `IA32_MTRRCAP` reads: WC and fixed ranges, no SMRR, [`NR_VAR`]
/// variable ranges.
pub const CAP_VALUE: u64 = 0x500 | NR_VAR as u64;

/// The fixed-range MSRs, in `mtrr_state` order.
pub const FIXED: [u32; 11] = [
    FIX64K_00000,
    FIX16K_80000,
    FIX16K_A0000,
    FIX4K_C0000,
    FIX4K_C0000 + 1,
    FIX4K_C0000 + 2,
    FIX4K_C0000 + 3,
    FIX4K_C0000 + 4,
    FIX4K_C0000 + 5,
    FIX4K_C0000 + 6,
    FIX4K_F8000,
];

/// A vCPU's MTRRs (`vcpu->arch.mtrr_state`): zero at creation, kept over
/// INIT.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mtrrs {
    /// `IA32_MTRR_DEF_TYPE`.
    pub def_type: u64,
    /// The fixed ranges, as [`FIXED`].
    pub fixed: [u64; 11],
    /// The variable ranges' base and mask MSRs, as numbered.
    pub var: [u64; NR_VAR * 2],
}

/// Where `msr` lives in [`Mtrrs`].
enum Slot {
    DefType,
    Fixed(usize),
    Var(usize),
}

fn slot(msr: u32) -> Option<Slot> {
    if msr == DEF_TYPE {
        return Some(Slot::DefType);
    }
    if let Some(i) = FIXED.iter().position(|&m| m == msr) {
        return Some(Slot::Fixed(i));
    }
    let v = msr.checked_sub(PHYSBASE0)? as usize;
    (v < NR_VAR * 2).then_some(Slot::Var(v))
}

/// Whether `msr` is in the range KVM sends to its MTRR code
/// (`MTRRphysBase0 ... MTRRfix4K_F8000`, `MTRRdefType`, `MTRRcap`): the
/// ones without a register there are #GP.
pub fn owns(msr: u32) -> bool {
    msr == MTRRCAP || msr == DEF_TYPE || (PHYSBASE0..=FIX4K_F8000).contains(&msr)
}

/// A memory type KVM accepts: UC, WC, WT, WP or WB.
fn valid_type(t: u64) -> bool {
    t < 8 && (1u64 << t) & 0x73 != 0
}

/// `kvm_mtrr_valid`: the types valid, no reserved bit set; the variable
/// ranges' address bits must fit `maxphyaddr` (the guest's MAXPHYADDR).
pub fn valid(msr: u32, v: u64, maxphyaddr: u8) -> bool {
    match slot(msr) {
        None => false,
        Some(Slot::DefType) => v & !0xcff == 0 && valid_type(v & 0xff),
        Some(Slot::Fixed(_)) => (0..8).all(|i| valid_type((v >> (i * 8)) & 0xff)),
        Some(Slot::Var(i)) => {
            let mut reserved = u64::MAX.checked_shl(u32::from(maxphyaddr)).unwrap_or(0);
            if i % 2 == 0 {
                if !valid_type(v & 0xff) {
                    return false;
                }
                reserved |= 0xf00;
            } else {
                reserved |= 0x7ff;
            }
            v & reserved == 0
        }
    }
}

impl Mtrrs {
    /// Reads `msr` (one [`owns`]), or `None` for #GP.
    pub fn get(&self, msr: u32) -> Option<u64> {
        if msr == MTRRCAP {
            return Some(CAP_VALUE);
        }
        Some(match slot(msr)? {
            Slot::DefType => self.def_type,
            Slot::Fixed(i) => self.fixed[i],
            Slot::Var(i) => self.var[i],
        })
    }

    /// Writes `v` to `msr` (one [`owns`]); `false` means #GP, for guest and
    /// host writes alike.
    pub fn set(&mut self, msr: u32, v: u64, maxphyaddr: u8) -> bool {
        if !valid(msr, v, maxphyaddr) {
            return false;
        }
        match slot(msr) {
            Some(Slot::DefType) => self.def_type = v,
            Some(Slot::Fixed(i)) => self.fixed[i] = v,
            Some(Slot::Var(i)) => self.var[i] = v,
            None => return false,
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_is_read_only() {
        let mut m = Mtrrs::default();
        assert_eq!(m.get(MTRRCAP), Some(0x508));
        assert!(!m.set(MTRRCAP, 0x508, 36));
    }

    #[test]
    fn def_type_rules() {
        let mut m = Mtrrs::default();
        assert!(m.set(DEF_TYPE, 0xc06, 36));
        assert_eq!(m.get(DEF_TYPE), Some(0xc06));
        assert!(!m.set(DEF_TYPE, 0x1006, 36));
        assert!(!m.set(DEF_TYPE, 0x2, 36));
        assert!(!m.set(DEF_TYPE, 0x3, 36));
        assert!(!m.set(DEF_TYPE, 0x7, 36));
        assert!(m.set(DEF_TYPE, 0x4, 36));
    }

    #[test]
    fn fixed_ranges_check_every_byte() {
        let mut m = Mtrrs::default();
        for &f in FIXED.iter() {
            assert!(m.set(f, 0x0606_0606_0505_0400, 36));
            assert!(!m.set(f, 0x0206_0606_0606_0606, 36));
        }
        assert_eq!(m.get(FIX4K_F8000), Some(0x0606_0606_0505_0400));
        // Holes in the range are #GP.
        assert!(owns(0x251));
        assert_eq!(m.get(0x251), None);
        assert!(!m.set(0x251, 0, 36));
        assert_eq!(m.get(0x210), None);
    }

    #[test]
    fn variable_ranges_honour_maxphyaddr() {
        let mut m = Mtrrs::default();
        assert!(m.set(PHYSBASE0, 0xf_ffff_f006, 36));
        assert!(!m.set(PHYSBASE0, 0x10_0000_0006, 36));
        assert!(m.set(PHYSBASE0, 0x10_0000_0006, 40));
        assert!(!m.set(PHYSBASE0, 0x106, 36));
        assert!(!m.set(PHYSBASE0, 0x2, 36));
        assert!(m.set(PHYSBASE0 + 1, 0xf_ffff_f800, 36));
        assert!(!m.set(PHYSBASE0 + 1, 0xf_ffff_f400, 36));
        assert!(m.set(PHYSBASE0 + 15, 0x800, 36));
        assert_eq!(m.get(PHYSBASE0 + 15), Some(0x800));
        assert_eq!(m.get(PHYSBASE0 + 16), None);
        assert!(m.set(PHYSBASE0, 0xf_ffff_ffff_f006, 52));
        assert!(!m.set(PHYSBASE0 + 1, 1 << 63, 52));
    }
}
