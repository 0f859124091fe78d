//! The guest's kvmclock, as KVM provides it without a master clock: the
//! paravirtual MSRs, the `pvclock_vcpu_time_info` and `pvclock_wall_clock`
//! images written into guest memory (with their version protocol), the
//! TSC-to-nanoseconds scale (`kvm_get_time_scale`), and the CPUID leaves
//! that announce it (`KVM_CPUID_SIGNATURE`, `KVM_CPUID_FEATURES`).

use crate::cpuid::Entry;

/// `MSR_KVM_WALL_CLOCK` (KVM_FEATURE_CLOCKSOURCE).
pub const MSR_WALL_CLOCK: u32 = 0x11;
/// `MSR_KVM_SYSTEM_TIME` (KVM_FEATURE_CLOCKSOURCE).
pub const MSR_SYSTEM_TIME: u32 = 0x12;
/// `MSR_KVM_WALL_CLOCK_NEW` (KVM_FEATURE_CLOCKSOURCE2).
pub const MSR_WALL_CLOCK_NEW: u32 = 0x4b56_4d00;
/// `MSR_KVM_SYSTEM_TIME_NEW` (KVM_FEATURE_CLOCKSOURCE2).
pub const MSR_SYSTEM_TIME_NEW: u32 = 0x4b56_4d01;
/// The four, in `KVM_GET_MSR_INDEX_LIST` order (KVM's `emulated_msrs`).
pub const MSRS: [u32; 4] = [
    MSR_SYSTEM_TIME,
    MSR_WALL_CLOCK,
    MSR_SYSTEM_TIME_NEW,
    MSR_WALL_CLOCK_NEW,
];

/// `KVM_CPUID_SIGNATURE` and `KVM_CPUID_FEATURES`.
pub const CPUID_SIGNATURE: u32 = 0x4000_0000;
/// The feature leaf.
pub const CPUID_FEATURES: u32 = 0x4000_0001;
/// `KVM_FEATURE_CLOCKSOURCE` and `KVM_FEATURE_CLOCKSOURCE2`: the only
/// paravirtual features rkvm offers.
pub const FEATURES: u32 = 1 << 0 | 1 << 3;

/// The size of `struct pvclock_vcpu_time_info`.
pub const TIME_INFO_SIZE: usize = 32;
/// The size of `struct pvclock_wall_clock`.
pub const WALL_CLOCK_SIZE: usize = 12;

/// The two hypervisor leaves of `KVM_GET_SUPPORTED_CPUID`: "KVMKVMKVM"
/// with 0x40000001 as the highest leaf, and the features.
pub fn cpuid_leaves() -> [Entry; 2] {
    let sig = *b"KVMKVMKVM\0\0\0";
    let w = |i: usize| u32::from_le_bytes([sig[i], sig[i + 1], sig[i + 2], sig[i + 3]]);
    [
        Entry {
            function: CPUID_SIGNATURE,
            eax: CPUID_FEATURES,
            ebx: w(0),
            ecx: w(4),
            edx: w(8),
            ..Default::default()
        },
        Entry {
            function: CPUID_FEATURES,
            eax: FEATURES,
            ..Default::default()
        },
    ]
}

/// The system-time MSR enables the clock (bit 0) at a GPA whose structure
/// does not cross a page (KVM's cache refuses one that does).
pub fn system_time_gpa(msr: u64) -> Option<u64> {
    let gpa = msr & !1;
    (msr & 1 != 0 && (gpa & 0xfff) as usize + TIME_INFO_SIZE <= 4096).then_some(gpa)
}

/// `kvm_get_time_scale(scaled_hz, base_hz)`: `(shift, mul)` such that
/// `scale_delta(ticks, mul, shift)` converts `base_hz` ticks into
/// `scaled_hz` units.
pub fn time_scale(scaled_hz: u64, base_hz: u64) -> (i8, u32) {
    let mut tps64 = base_hz;
    let mut scaled64 = scaled_hz;
    let mut shift: i32 = 0;
    while tps64 > scaled64.wrapping_mul(2) || tps64 & 0xffff_ffff_0000_0000 != 0 {
        tps64 >>= 1;
        shift -= 1;
    }
    let mut tps32 = tps64 as u32;
    while u64::from(tps32) <= scaled64 || scaled64 & 0xffff_ffff_0000_0000 != 0 {
        if scaled64 & 0xffff_ffff_0000_0000 != 0 || tps32 & 0x8000_0000 != 0 {
            scaled64 >>= 1;
        } else {
            tps32 <<= 1;
        }
        shift += 1;
    }
    // div_frac: (scaled64 << 32) / tps32, which fits as scaled64 < tps32.
    let mul = ((u128::from(scaled64) << 32) / u128::from(tps32.max(1))) as u32;
    (shift as i8, mul)
}

/// `pvclock_scale_delta`: what the guest computes from a TSC delta.
pub fn scale_delta(delta: u64, mul: u32, shift: i8) -> u64 {
    let d = if shift < 0 {
        delta >> -i32::from(shift)
    } else {
        delta << shift
    };
    ((u128::from(d) * u128::from(mul)) >> 32) as u64
}

/// One `pvclock_vcpu_time_info` snapshot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimeInfo {
    /// Odd while the structure is being written.
    pub version: u32,
    /// The guest TSC when `system_time` was taken.
    pub tsc_timestamp: u64,
    /// The VM clock (ns) at `tsc_timestamp`.
    pub system_time: u64,
    /// TSC ticks to ns: multiplier (32.32 fixed point) ...
    pub tsc_to_system_mul: u32,
    /// ... after shifting by this (left if positive).
    pub tsc_shift: i8,
    /// `PVCLOCK_*` flags.
    pub flags: u8,
}

/// `PVCLOCK_GUEST_STOPPED`: the one flag the guest's copy keeps.
pub const PVCLOCK_GUEST_STOPPED: u8 = 1 << 1;

impl TimeInfo {
    /// The snapshot `kvm_guest_time_update` takes without a master clock:
    /// the guest's TSC and the VM clock at the same instant, and the scale
    /// for a TSC of `tsc_khz`; flags 0 (no `PVCLOCK_TSC_STABLE_BIT`).
    pub fn new(guest_tsc: u64, clock_ns: u64, tsc_khz: u32) -> Self {
        let (shift, mul) = time_scale(1_000_000_000, u64::from(tsc_khz) * 1000);
        Self {
            version: 0,
            tsc_timestamp: guest_tsc,
            system_time: clock_ns,
            tsc_to_system_mul: mul,
            tsc_shift: shift,
            flags: 0,
        }
    }

    /// The structure's bytes.
    pub fn to_bytes(self) -> [u8; TIME_INFO_SIZE] {
        let mut b = [0; TIME_INFO_SIZE];
        b[0..4].copy_from_slice(&self.version.to_le_bytes());
        b[8..16].copy_from_slice(&self.tsc_timestamp.to_le_bytes());
        b[16..24].copy_from_slice(&self.system_time.to_le_bytes());
        b[24..28].copy_from_slice(&self.tsc_to_system_mul.to_le_bytes());
        b[28] = self.tsc_shift as u8;
        b[29] = self.flags;
        b
    }

    /// What the guest reads at TSC `tsc` (`__pvclock_read_cycles`).
    #[cfg_attr(rkvm_module, expect(dead_code))]
    pub fn read(&self, tsc: u64) -> u64 {
        let delta = tsc.wrapping_sub(self.tsc_timestamp);
        self.system_time
            .wrapping_add(scale_delta(delta, self.tsc_to_system_mul, self.tsc_shift))
    }

    /// The versions of an update over a guest copy at `guest_version`
    /// (`kvm_setup_guest_pvclock`): odd while the data changes, the next
    /// even one after.
    pub fn versions(guest_version: u32) -> (u32, u32) {
        let odd = guest_version.wrapping_add(1) | 1;
        (odd, odd.wrapping_add(1))
    }
}

/// `kvm_write_wall_clock`'s versions for a guest copy at `guest_version`:
/// `(first, final)`. A copy with an odd version (junk) skips one.
pub fn wall_clock_versions(guest_version: u32) -> (u32, u32) {
    let mut v = guest_version;
    if v & 1 != 0 {
        v = v.wrapping_add(1);
    }
    v = v.wrapping_add(1);
    (v, v.wrapping_add(1))
}

/// The `pvclock_wall_clock` bytes for wall-clock nanoseconds `epoch_ns`
/// at VM clock 0 (seconds truncated to 32 bits, as KVM).
pub fn wall_clock_bytes(version: u32, epoch_ns: u64) -> [u8; WALL_CLOCK_SIZE] {
    let mut b = [0; WALL_CLOCK_SIZE];
    b[0..4].copy_from_slice(&version.to_le_bytes());
    b[4..8].copy_from_slice(&((epoch_ns / 1_000_000_000) as u32).to_le_bytes());
    b[8..12].copy_from_slice(&((epoch_ns % 1_000_000_000) as u32).to_le_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_converts_ticks_to_ns() {
        for khz in [1_000u32, 999_999, 2_000_000, 2_893_123, 3_600_000, 100_000] {
            let (shift, mul) = time_scale(1_000_000_000, u64::from(khz) * 1000);
            // One second of ticks is one second, within 1 ns per 2^32.
            let ns = scale_delta(u64::from(khz) * 1000, mul, shift);
            assert!(ns.abs_diff(1_000_000_000) <= 1, "{khz}: {ns}");
            let ns = scale_delta(u64::from(khz) * 10, mul, shift);
            assert!(ns.abs_diff(10_000_000) <= 1, "{khz}: {ns}");
        }
    }

    #[test]
    fn known_scale() {
        // 1 GHz: one tick per ns, mul 2^31 with shift 1.
        assert_eq!(time_scale(1_000_000_000, 1_000_000_000), (1, 0x8000_0000));
    }

    #[test]
    fn snapshot_reads_back() {
        let t = TimeInfo::new(1_000_000, 5_000, 2_000_000);
        assert_eq!(t.read(1_000_000), 5_000);
        // 2 GHz: 2e6 ticks are 1 ms.
        assert_eq!(t.read(3_000_000), 1_005_000);
        let b = t.to_bytes();
        assert_eq!(u64::from_le_bytes(b[8..16].try_into().unwrap()), 1_000_000);
        assert_eq!(u64::from_le_bytes(b[16..24].try_into().unwrap()), 5_000);
        assert_eq!(b[28] as i8, t.tsc_shift);
    }

    #[test]
    fn versions() {
        assert_eq!(TimeInfo::versions(0), (1, 2));
        assert_eq!(TimeInfo::versions(2), (3, 4));
        assert_eq!(TimeInfo::versions(3), (5, 6));
        assert_eq!(wall_clock_versions(0), (1, 2));
        assert_eq!(wall_clock_versions(2), (3, 4));
        assert_eq!(wall_clock_versions(7), (9, 10));
    }

    #[test]
    fn system_time_gpa_rules() {
        assert_eq!(system_time_gpa(0x5000 | 1), Some(0x5000));
        assert_eq!(system_time_gpa(0x5000), None);
        assert_eq!(system_time_gpa(0x5fe0 | 1), Some(0x5fe0));
        assert_eq!(system_time_gpa(0x5fe8 | 1), None);
    }

    #[test]
    fn wall_clock_image() {
        let b = wall_clock_bytes(4, 12 * 1_000_000_000 + 345);
        assert_eq!(b[0], 4);
        assert_eq!(u32::from_le_bytes(b[4..8].try_into().unwrap()), 12);
        assert_eq!(u32::from_le_bytes(b[8..12].try_into().unwrap()), 345);
    }

    #[test]
    fn leaves() {
        let l = cpuid_leaves();
        assert_eq!(l[0].eax, CPUID_FEATURES);
        assert_eq!(&l[0].ebx.to_le_bytes(), b"KVMK");
        assert_eq!(&l[0].ecx.to_le_bytes(), b"VMKV");
        assert_eq!(&l[0].edx.to_le_bytes(), b"M\0\0\0");
        assert_eq!(l[1].eax, 0x9);
    }
}
