//! Property tests for the LAPIC model: arbitrary access sequences never
//! panic and keep the register invariants; acknowledge picks the highest
//! deliverable vector; ack/EOI drains; `KVM_GET_LAPIC` → `KVM_SET_LAPIC`
//! → `KVM_GET_LAPIC` is the identity (but for a TMCCT that comes back 0,
//! see `same_state`).

use proptest::prelude::*;
use rkvm_core::cpuid::GuestCaps;
use rkvm_core::lapic::{
    reg, Accepted, Config, DeliveryMode, DestMode, Expiry, Lapic, Lvt, Sender, Shorthand,
    TimerModes, Trigger,
};

#[path = "../testsupport/lapic.rs"]
mod lapic_support;
use lapic_support::{exact_timers, same_state, LVT_AND_TIMER_MASKS};

/// One thing that can happen to a LAPIC.
#[derive(Clone, Debug)]
enum Op {
    MmioWrite(u32, u32, u8),
    MmioRead(u32, u8),
    Wrmsr(u32, u64),
    Rdmsr(u32),
    Accept(u32, u8, bool, bool),
    Ack,
    Eoi,
    Local(usize),
    Fire,
    Tsc(u64),
    Base(usize),
    Cr8(u64),
    Reset(bool),
    RoundTrip(bool),
    Advance(u64),
}

/// Register offsets, mostly aligned on real registers.
fn offset() -> impl Strategy<Value = u32> {
    prop_oneof![
        4 => (0u32..0x40).prop_map(|i| i * 16),
        1 => 0u32..0x1000,
    ]
}

/// Values biased towards interesting bits.
fn value() -> impl Strategy<Value = u32> {
    prop_oneof![
        any::<u32>(),
        0u32..0x100,
        Just(0x100u32),
        Just(0x1ff),
        (0u32..4, 0u32..0x100).prop_map(|(m, v)| (m << 17) | v),
        Just(u32::MAX),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (offset(), value(), prop_oneof![Just(4u8), 0u8..9]).prop_map(|(o, v, l)| Op::MmioWrite(o, v, l)),
        3 => (offset(), 0u8..9).prop_map(|(o, l)| Op::MmioRead(o, l)),
        3 => (0x7fcu32..0x904, prop_oneof![any::<u64>(), (0u64..0x400), value().prop_map(u64::from)]).prop_map(|(m, v)| Op::Wrmsr(m, v)),
        2 => (0x7fcu32..0x904).prop_map(Op::Rdmsr),
        4 => (0u32..8, any::<u8>(), any::<bool>(), any::<bool>()).prop_map(|(m, v, l, t)| Op::Accept(m, v, l, t)),
        3 => Just(Op::Ack),
        2 => Just(Op::Eoi),
        1 => (0usize..7).prop_map(Op::Local),
        2 => Just(Op::Fire),
        1 => any::<u64>().prop_map(Op::Tsc),
        1 => (0usize..BASES.len()).prop_map(Op::Base),
        1 => any::<u64>().prop_map(Op::Cr8),
        1 => any::<bool>().prop_map(Op::Reset),
        1 => any::<bool>().prop_map(Op::RoundTrip),
        2 => prop_oneof![0u64..1000, 0u64..10_000_000, any::<u64>()].prop_map(Op::Advance),
    ]
}

const BASES: [u64; 6] = [
    0xfee0_0800,
    0xfee0_0c00,
    0xfee0_0000,
    0xfee0_0900,
    0xfed0_0800,
    0xfee0_0400,
];

fn caps() -> GuestCaps {
    GuestCaps {
        x2apic: true,
        maxphyaddr: 48,
        ..GuestCaps::default()
    }
}

fn config() -> impl Strategy<Value = Config> {
    (
        prop_oneof![
            Just(TimerModes::OneShotOnly),
            Just(TimerModes::Periodic),
            Just(TimerModes::TscDeadline)
        ],
        any::<bool>(),
        any::<bool>(),
        prop_oneof![Just(1u32), 1u32..100, any::<u32>()],
        any::<bool>(),
    )
        .prop_map(
            |(timer_modes, directed_eoi, cmci, bus_cycle_ns, intel)| Config {
                timer_modes,
                directed_eoi,
                cmci,
                bus_cycle_ns,
                intel_compatible: intel,
                ..Config::DEFAULT
            },
        )
}

/// Clock state for a run: host ns and guest TSC, both monotonic.
struct Clock {
    now: u64,
    tsc: u64,
}

/// Apply `op`, checking what must hold of that one step.
fn step(a: &mut Lapic, op: &Op, clk: &mut Clock) -> Result<(), TestCaseError> {
    let now = clk.now;
    match *op {
        Op::MmioWrite(o, v, len) => {
            let bytes = v.to_le_bytes();
            let data: &[u8] = if len <= 4 {
                &bytes[..usize::from(len)]
            } else {
                &[0; 8][..usize::from(len)]
            };
            a.mmio_write(o, data, now);
        }
        Op::MmioRead(o, len) => {
            let v = a.mmio_read(o, usize::from(len), now);
            if !a.mmio_active() && len > 0 {
                prop_assert_eq!(v.count_ones(), 8 * u32::from(len.min(8)));
            } else if len < 8 {
                prop_assert!(v >> (8 * u32::from(len)) == 0);
            }
        }
        Op::Wrmsr(m, v) => {
            let r = a.wrmsr(m, v, now);
            if !a.x2apic_mode() {
                prop_assert!(r.is_err());
            }
        }
        Op::Rdmsr(m) => {
            let r = a.rdmsr(m, now);
            if !a.x2apic_mode() || !(0x800..=0x8ff).contains(&m) {
                prop_assert!(r.is_err());
            }
            if m == 0x802 && a.x2apic_mode() {
                prop_assert_eq!(r, Ok(u64::from(a.vcpu_id())));
            }
        }
        Op::Accept(m, v, level, t) => {
            let trig = if t { Trigger::Level } else { Trigger::Edge };
            let mode = DeliveryMode::from_bits(m << 8);
            let r = a.accept(mode, v, level, trig);
            if let Accepted::Interrupt(x) = r {
                prop_assert_eq!(x, v);
                prop_assert!(a.enabled());
                prop_assert!(a.register(reg::IRR + u32::from(v >> 5) * 16) & (1 << (v & 31)) != 0);
            }
        }
        Op::Ack => {
            let want = a.pending_vector();
            let got = a.ack();
            prop_assert_eq!(got, want);
            if let Some(v) = got {
                prop_assert_eq!(a.highest_isr(), Some(v));
                prop_assert_eq!(a.ppr(), v & 0xf0);
            }
        }
        Op::Eoi => {
            let isr = a.highest_isr();
            let fx = a.eoi();
            prop_assert_eq!(fx.eoi.map(|e| e.vector), isr);
        }
        Op::Local(i) => {
            a.local_interrupt(Lvt::ALL[i]);
        }
        Op::Fire => match a.timer_expiry() {
            None => prop_assert!(a.timer_fired(now, clk.tsc).is_none()),
            Some(Expiry::Ns(t)) => {
                let r = a.timer_fired(now, clk.tsc);
                prop_assert_eq!(r.is_some(), now >= t);
            }
            Some(Expiry::GuestTsc(d)) => {
                let r = a.timer_fired(now, clk.tsc);
                prop_assert_eq!(r.is_some(), clk.tsc >= d);
                if r.is_some() {
                    prop_assert_eq!(a.timer_expiry(), None);
                }
            }
        },
        Op::Tsc(v) => {
            a.set_tsc_deadline(v);
        }
        Op::Base(i) => {
            let host = i % 2 == 0;
            let _ = a.set_apic_base(BASES[i], host, &caps());
        }
        Op::Cr8(v) => {
            a.set_cr8(v);
            prop_assert_eq!(a.cr8(), v & 0xf);
        }
        Op::Reset(init) => {
            a.reset(init);
        }
        Op::RoundTrip(fmt) => {
            let s = a.get_state(now, fmt);
            a.set_state(&s, now, fmt)
                .map_err(|_| TestCaseError::fail("set_state refused its own state"))?;
            prop_assert!(same_state(&a.get_state(now, fmt), &s) || !exact_timers(a));
        }
        Op::Advance(d) => {
            // A host clock stays far below 2^64 ns; near it "now + period"
            // saturates and restored counts are no longer exact.
            clk.now = clk.now.saturating_add(d).min(1 << 62);
            clk.tsc = clk.tsc.saturating_add(d / 2);
        }
    }
    invariants(a, clk.now)
}

/// What holds after every step.
fn invariants(a: &Lapic, now: u64) -> Result<(), TestCaseError> {
    // PPR in the page is the one computed.
    prop_assert_eq!(a.register(reg::PPR), u32::from(a.ppr()));
    if let Some(v) = a.pending_vector() {
        prop_assert!(a.hw_enabled());
        prop_assert_eq!(a.highest_irr(), Some(v));
        prop_assert!(v & 0xf0 > a.ppr());
    }
    let lvr = a.register(reg::LVR);
    prop_assert_eq!(
        lvr & 0xff_ffff,
        0x14 | if a.config().cmci { 6 << 16 } else { 5 << 16 }
    );
    prop_assert_eq!(lvr >> 24, u32::from(a.config().directed_eoi));
    if a.x2apic_mode() {
        prop_assert!(a.hw_enabled());
        prop_assert_eq!(a.register(reg::ID), a.vcpu_id());
    }
    // Write masks, through the register page (reads may be refused).
    let masks = [
        (reg::TPR, 0xff),
        (reg::SPIV, 0x13ff),
        (
            reg::ICR2,
            if a.x2apic_mode() {
                u32::MAX
            } else {
                0xff00_0000
            },
        ),
    ];
    for (off, mask) in masks.into_iter().chain(LVT_AND_TIMER_MASKS) {
        prop_assert_eq!(a.register(off) & !mask, 0, "{:#x}", off);
    }
    prop_assert_eq!(a.register(reg::DFR) | 0xf000_0000, u32::MAX);
    prop_assert_eq!(a.register(reg::ICR) & (1 << 12), 0, "ICR busy");
    if a.mmio_active() {
        prop_assert_eq!(a.mmio_read(reg::APR, 4, now), 0);
        prop_assert_eq!(a.mmio_read(reg::EOI, 4, now), 0);
    }
    // Broadcast reaches everyone.
    let bc = if a.x2apic_mode() { u32::MAX } else { 0xff };
    let ipi = Sender::Apic { is_self: false };
    prop_assert!(a.matches(bc, DestMode::Physical, Shorthand::None, ipi));
    prop_assert!(a.matches(bc, DestMode::Logical, Shorthand::None, ipi));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    /// Any access sequence keeps the invariants and never panics.
    #[test]
    fn sequences_keep_invariants(
        id in prop_oneof![0u32..4, any::<u32>()],
        cfg in config(),
        ops in prop::collection::vec(op(), 0..60),
    ) {
        let mut a = Lapic::new(id, cfg);
        let mut clk = Clock { now: 0, tsc: 0 };
        invariants(&a, 0)?;
        for op in &ops {
            step(&mut a, op, &mut clk)?;
        }
    }

    /// Accept, then ack + EOI until nothing is pending: every accepted
    /// vector of a class above TPR comes out once, highest first, and
    /// nothing stays pending or in service.
    #[test]
    fn ack_eoi_drains(
        vectors in prop::collection::vec(any::<u8>(), 0..40),
        tpr in any::<u8>(),
        level in any::<bool>(),
    ) {
        let mut a = Lapic::new(1, Config::DEFAULT);
        a.mmio_write(reg::SPIV, &0x1ffu32.to_le_bytes(), 0);
        a.mmio_write(reg::TPR, &u32::from(tpr).to_le_bytes(), 0);
        let trig = if level { Trigger::Level } else { Trigger::Edge };
        for &v in &vectors {
            prop_assert_eq!(a.accept(DeliveryMode::Fixed, v, true, trig), Accepted::Interrupt(v));
        }
        let mut want: Vec<u8> = vectors.iter().copied().filter(|v| v & 0xf0 > tpr).collect();
        want.sort_unstable_by(|x, y| y.cmp(x));
        want.dedup();
        let mut got = Vec::new();
        while let Some(v) = a.ack() {
            got.push(v);
            let fx = a.eoi();
            let eoi = fx.eoi.expect("the vector just acknowledged is in service");
            prop_assert_eq!(eoi.vector, v);
            prop_assert_eq!(eoi.level, level);
        }
        prop_assert_eq!(got, want);
        prop_assert_eq!(a.pending_vector(), None);
        prop_assert_eq!(a.highest_isr(), None);
        // What is left in IRR is exactly what TPR held back.
        let left = vectors.iter().any(|v| v & 0xf0 <= tpr);
        prop_assert_eq!(a.highest_irr().is_some(), left);
    }

    /// Nested acks: each one is the highest IRR vector above PPR, and PPR
    /// rises to its class.
    #[test]
    fn ack_takes_highest_above_ppr(
        vectors in prop::collection::vec(16u8.., 1..20),
        more in prop::collection::vec(16u8.., 0..20),
    ) {
        let mut a = Lapic::new(0, Config::DEFAULT);
        a.mmio_write(reg::SPIV, &0x1ffu32.to_le_bytes(), 0);
        for &v in &vectors {
            a.accept(DeliveryMode::Fixed, v, true, Trigger::Edge);
        }
        for &v in &more {
            let ppr = a.ppr();
            let irr = a.highest_irr();
            let want = irr.filter(|&i| i & 0xf0 > ppr);
            prop_assert_eq!(a.ack(), want);
            if let Some(w) = want {
                prop_assert_eq!(a.ppr(), w & 0xf0);
            }
            a.accept(DeliveryMode::Fixed, v, true, Trigger::Edge);
        }
    }

    /// get_state → set_state → get_state is the identity, into a fresh
    /// LAPIC of the same vCPU in the same mode, in both ID formats.
    #[test]
    fn state_round_trip(
        id in 0u32..300,
        x2 in any::<bool>(),
        fmt in any::<bool>(),
        ops in prop::collection::vec(op(), 0..30),
        later in 0u64..1_000_000,
    ) {
        let mut a = Lapic::new(id, Config { timer_modes: TimerModes::TscDeadline, ..Config::DEFAULT });
        let mut clk = Clock { now: 0, tsc: 0 };
        for op in &ops {
            if matches!(op, Op::Base(_) | Op::Reset(_)) {
                continue;
            }
            step(&mut a, op, &mut clk)?;
        }
        let base = if x2 { 0xfee0_0c00 } else { 0xfee0_0800 };
        let _ = a.set_apic_base(base, true, &caps());
        let now = clk.now.saturating_add(later);
        let s = a.get_state(now, fmt);
        let mut b = Lapic::new(id, *a.config());
        b.set_apic_base(a.apic_base(), true, &caps()).unwrap();
        b.set_state(&s, now, fmt).unwrap();
        prop_assert!(same_state(&b.get_state(now, fmt), &s));
        prop_assert_eq!(b.pending_vector(), a.pending_vector());
        // The deadline is an MSR of its own, restored after the page.
        b.set_tsc_deadline(a.tsc_deadline());
        prop_assert_eq!(b.tsc_deadline(), a.tsc_deadline());
        if a.timer_mode() == rkvm_core::lapic::TimerMode::TscDeadline {
            prop_assert_eq!(b.timer_expiry(), a.timer_expiry());
        }
    }
}
