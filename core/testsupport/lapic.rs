//! What the LAPIC property tests (`tests/lapic_prop.rs`) and fuzz target
//! (`fuzz/fuzz_targets/lapic.rs`) both check after a `KVM_GET_LAPIC` /
//! `KVM_SET_LAPIC` round trip. Each includes this file with `#[path]`.

use rkvm_core::lapic::{reg, Lapic, STATE_SIZE};

/// Whether `after` (read back after loading `before`) is `before`, but
/// that TMCCT may come back 0: restoring starts the count from TMICT's
/// period, and a count read against a longer stale period (a periodic
/// timer stretched to the minimum, then switched to one-shot; KVM keeps
/// that period) exceeds it.
pub fn same_state(after: &[u8; STATE_SIZE], before: &[u8; STATE_SIZE]) -> bool {
    let t = reg::TMCCT as usize;
    after[..t] == before[..t]
        && after[t + 4..] == before[t + 4..]
        && (after[t..t + 4] == before[t..t + 4] || after[t..t + 4] == [0; 4])
}

/// Whether round trips are exact: with a bus cycle this short no timer
/// period saturates (TMICT × 4096 × 128 < 2^51 ns, and the clock stays
/// below 2^62), so "now + period" is exact. Longer ones exercise the
/// saturating paths, where only the absence of panics is checked.
pub fn exact_timers(a: &Lapic) -> bool {
    a.config().bus_cycle_ns <= 1 << 12
}

/// The bits each LVT, the divide register, TMCCT and ESR may hold in the
/// register page, whatever was written to them.
pub const LVT_AND_TIMER_MASKS: [(u32, u32); 10] = [
    (reg::LVT_TIMER, 0x0007_10ff),
    (reg::LVT_THERMAL, 0x0001_17ff),
    (reg::LVT_PMC, 0x0001_17ff),
    (reg::LVT_LINT0, 0x0001_f7ff),
    (reg::LVT_LINT1, 0x0001_f7ff),
    (reg::LVT_ERROR, 0x0001_10ff),
    (reg::LVT_CMCI, 0x0001_17ff),
    (reg::TDCR, 0xb),
    (reg::TMCCT, 0),
    (reg::ESR, 0),
];
