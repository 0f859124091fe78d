//! The VM clock (the kvmclock base) as KVM keeps it without a master
//! clock: nanoseconds of the host's raw boot-time clock plus a per-VM
//! offset that starts at minus the creation time (`kvm_arch_init_vm`),
//! read by `KVM_GET_CLOCK` and moved by `KVM_SET_CLOCK`
//! (`kvm_vm_ioctl_get_clock` / `kvm_vm_ioctl_set_clock` in x86.c).

use crate::uapi::KvmClockData;

/// `KVM_CLOCK_TSC_STABLE`: reported only with a master clock.
pub const KVM_CLOCK_TSC_STABLE: u32 = 1 << 1;
/// `KVM_CLOCK_REALTIME`: `realtime` is valid.
pub const KVM_CLOCK_REALTIME: u32 = 1 << 2;
/// `KVM_CLOCK_HOST_TSC`: `host_tsc` is valid.
pub const KVM_CLOCK_HOST_TSC: u32 = 1 << 3;
/// `KVM_CLOCK_VALID_FLAGS`: what `KVM_SET_CLOCK` accepts, and what
/// `KVM_CHECK_EXTENSION(KVM_CAP_ADJUST_CLOCK)` answers.
pub const KVM_CLOCK_VALID_FLAGS: u32 =
    KVM_CLOCK_TSC_STABLE | KVM_CLOCK_REALTIME | KVM_CLOCK_HOST_TSC;

/// `KVM_SET_CLOCK` was refused (`EINVAL`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Invalid;

/// The offset of a VM created when the base clock read `now_base`.
pub fn initial_offset(now_base: u64) -> u64 {
    now_base.wrapping_neg()
}

/// `KVM_GET_CLOCK` without a master clock: the clock only, no flags.
pub fn get(offset: u64, now_base: u64) -> KvmClockData {
    KvmClockData {
        clock: now_base.wrapping_add(offset),
        ..Default::default()
    }
}

/// `KVM_SET_CLOCK`: the new offset. With `KVM_CLOCK_REALTIME` the clock
/// is moved forward by the wall-clock time since `realtime` (never back);
/// the other valid flags are accepted and ignored, so that what
/// `KVM_GET_CLOCK` gave can be passed back.
pub fn set(data: &KvmClockData, now_base: u64, now_real: u64) -> Result<u64, Invalid> {
    if data.flags & !KVM_CLOCK_VALID_FLAGS != 0 {
        return Err(Invalid);
    }
    let mut clock = data.clock;
    if data.flags & KVM_CLOCK_REALTIME != 0 && now_real > data.realtime {
        clock = clock.wrapping_add(now_real - data.realtime);
    }
    Ok(clock.wrapping_sub(now_base))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_at_zero_and_counts_up() {
        let off = initial_offset(1_000);
        assert_eq!(get(off, 1_000).clock, 0);
        assert_eq!(get(off, 1_500).clock, 500);
        assert_eq!(get(off, 1_500).flags, 0);
    }

    #[test]
    fn set_then_get() {
        let d = KvmClockData {
            clock: 7,
            ..Default::default()
        };
        let off = set(&d, 100, 0).unwrap();
        assert_eq!(get(off, 100).clock, 7);
        assert_eq!(get(off, 150).clock, 57);
    }

    #[test]
    fn realtime_moves_forward_only() {
        let mut d = KvmClockData {
            clock: 1_000,
            flags: KVM_CLOCK_REALTIME,
            realtime: 5_000,
            ..Default::default()
        };
        assert_eq!(get(set(&d, 0, 5_300).unwrap(), 0).clock, 1_300);
        d.realtime = 9_000;
        assert_eq!(get(set(&d, 0, 5_300).unwrap(), 0).clock, 1_000);
        // Without the flag, realtime is ignored.
        d.flags = KVM_CLOCK_TSC_STABLE | KVM_CLOCK_HOST_TSC;
        d.realtime = 0;
        assert_eq!(get(set(&d, 0, 5_300).unwrap(), 0).clock, 1_000);
    }

    #[test]
    fn unknown_flags_refused() {
        for f in [1, 1 << 4, 1 << 31] {
            let d = KvmClockData {
                flags: f,
                ..Default::default()
            };
            assert_eq!(set(&d, 0, 0), Err(Invalid));
        }
    }
}
