//! Fuzz target: arbitrary sequences of LAPIC accesses, deliveries, acks,
//! EOIs, timer events and state round trips, checking the model's
//! invariants after every step.
//!
//! Input layout: byte 0 picks the configuration, bytes 1..5 the vCPU id,
//! then each step is an opcode byte and its operands (missing bytes are 0).

#![no_main]

use libfuzzer_sys::fuzz_target;
use rkvm_core::cpuid::GuestCaps;
use rkvm_core::lapic::{
    reg, Accepted, Config, DeliveryMode, DestMode, Expiry, Lapic, Lvt, Sender, Shorthand,
    TimerModes, Trigger, STATE_SIZE,
};

#[path = "../../testsupport/lapic.rs"]
mod lapic_support;
use lapic_support::{exact_timers, same_state, LVT_AND_TIMER_MASKS};

/// Bound of the host clock in this target.
const END_OF_TIME: u64 = 1 << 62;

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn u8(&mut self) -> u8 {
        let Some((&b, rest)) = self.0.split_first() else {
            return 0;
        };
        self.0 = rest;
        b
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | u64::from(self.u32()) << 32
    }
}

const BASES: [u64; 8] = [
    0xfee0_0800,
    0xfee0_0c00,
    0xfee0_0000,
    0xfee0_0900,
    0xfed0_0800,
    0xfee0_0400,
    0xfee0_0801,
    1 << 50 | 0x800,
];

fn check(a: &Lapic, now: u64) {
    assert_eq!(a.register(reg::PPR), u32::from(a.ppr()));
    if let Some(v) = a.pending_vector() {
        assert!(a.hw_enabled());
        assert_eq!(a.highest_irr(), Some(v));
        assert!(v & 0xf0 > a.ppr());
    }
    if a.x2apic_mode() {
        assert!(a.hw_enabled());
        assert_eq!(a.register(reg::ID), a.vcpu_id());
    }
    let own = [(reg::TPR, 0xff), (reg::SPIV, 0x13ff)];
    for (off, mask) in own.into_iter().chain(LVT_AND_TIMER_MASKS) {
        assert_eq!(a.register(off) & !mask, 0, "{off:#x}");
    }
    assert_eq!(a.register(reg::DFR) | 0xf000_0000, u32::MAX);
    assert_eq!(a.register(reg::ICR) & (1 << 12), 0);
    if a.mmio_active() {
        assert_eq!(a.mmio_read(reg::APR, 4, now), 0);
    }
    let bc = if a.x2apic_mode() { u32::MAX } else { 0xff };
    let ipi = Sender::Apic { is_self: false };
    assert!(a.matches(bc, DestMode::Physical, Shorthand::None, ipi));
}

fuzz_target!(|data: &[u8]| {
    let mut inp = Input(data);
    let sel = inp.u8();
    let cfg = Config {
        timer_modes: [
            TimerModes::OneShotOnly,
            TimerModes::Periodic,
            TimerModes::TscDeadline,
        ][usize::from(sel % 3)],
        directed_eoi: sel & 4 != 0,
        cmci: sel & 8 != 0,
        bus_cycle_ns: if sel & 16 != 0 {
            u32::from(sel) << 20
        } else {
            1
        },
        intel_compatible: sel & 32 != 0,
        lint0_reenabled: sel & 64 == 0,
        ..Config::DEFAULT
    };
    let caps = GuestCaps {
        x2apic: sel & 128 == 0,
        maxphyaddr: 48,
        ..GuestCaps::default()
    };
    let id = inp.u32();
    let mut a = Lapic::new(id, cfg);
    let (mut now, mut tsc) = (0u64, 0u64);
    check(&a, now);
    while !inp.0.is_empty() {
        match inp.u8() % 16 {
            0 => {
                // Mostly aligned; misaligned when the second byte says so.
                let (hi, lo) = (inp.u8(), inp.u8());
                let off = u32::from(hi) << 4
                    | if lo & 0x80 != 0 {
                        u32::from(lo & 0xf)
                    } else {
                        0
                    };
                let len = if lo & 0x40 != 0 {
                    usize::from(lo % 9)
                } else {
                    4
                };
                let v = inp.u64().to_le_bytes();
                a.mmio_write(off, &v[..len], now);
            }
            1 => {
                let off = u32::from(inp.u8()) << 4 | u32::from(inp.u8() & 0xf);
                let len = usize::from(inp.u8() % 10);
                let v = a.mmio_read(off, len, now);
                if !a.mmio_active() && (1..8).contains(&len) {
                    assert_eq!(v, (1 << (8 * len)) - 1);
                }
            }
            2 => {
                let m = 0x7f0 + u32::from(inp.u8()) + u32::from(inp.u8() & 1) * 0x100;
                let r = a.wrmsr(m, inp.u64(), now);
                assert!(r.is_err() || a.x2apic_mode());
            }
            3 => {
                let m = 0x7f0 + u32::from(inp.u8()) + u32::from(inp.u8() & 1) * 0x100;
                let r = a.rdmsr(m, now);
                assert!(r.is_err() || a.x2apic_mode());
            }
            4 => {
                let (m, v, f) = (inp.u8(), inp.u8(), inp.u8());
                let trig = if f & 1 != 0 {
                    Trigger::Level
                } else {
                    Trigger::Edge
                };
                let r = a.accept(
                    DeliveryMode::from_bits(u32::from(m) << 8),
                    v,
                    f & 2 != 0,
                    trig,
                );
                if let Accepted::Interrupt(x) = r {
                    assert_eq!(x, v);
                }
            }
            5 => {
                let want = a.pending_vector();
                assert_eq!(a.ack(), want);
            }
            6 => {
                let isr = a.highest_isr();
                assert_eq!(a.eoi().eoi.map(|e| e.vector), isr);
            }
            7 => {
                a.local_interrupt(Lvt::ALL[usize::from(inp.u8() % 7)]);
            }
            8 => {
                let exp = a.timer_expiry();
                let fired = a.timer_fired(now, tsc).is_some();
                match exp {
                    None => assert!(!fired),
                    Some(Expiry::Ns(t)) => assert_eq!(fired, now >= t),
                    Some(Expiry::GuestTsc(d)) => assert_eq!(fired, tsc >= d),
                }
            }
            9 => {
                a.set_tsc_deadline(inp.u64());
            }
            10 => {
                let b = inp.u8();
                let _ = a.set_apic_base(BASES[usize::from(b % 8)], b & 8 != 0, &caps);
            }
            11 => {
                let v = inp.u64();
                a.set_cr8(v);
                assert_eq!(a.cr8(), v & 0xf);
            }
            12 => {
                a.reset(inp.u8() & 1 != 0);
            }
            13 => {
                let fmt = inp.u8() & 1 != 0;
                let s = a.get_state(now, fmt);
                a.set_state(&s, now, fmt).expect("its own state");
                assert!(same_state(&a.get_state(now, fmt), &s) || !exact_timers(&a));
            }
            14 => {
                // An arbitrary state image: anything goes, nothing panics.
                let mut s = [0u8; STATE_SIZE];
                for (i, b) in s.iter_mut().enumerate() {
                    *b = data.get(i).copied().unwrap_or(0);
                }
                let fmt = inp.u8() & 1 != 0;
                if a.set_state(&s, now, fmt).is_ok() {
                    // Loading what was read back changes nothing more.
                    let g = a.get_state(now, fmt);
                    a.set_state(&g, now, fmt).expect("its own state");
                    assert!(same_state(&a.get_state(now, fmt), &g) || !exact_timers(&a));
                }
                // The register invariants are about what guest accesses
                // leave, not about any image the host may load: start over.
                a = Lapic::new(id, cfg);
            }
            _ => {
                // Host time stays below 2^62 ns (146 years), as a real
                // clock does; only there is "now + period" exact.
                let d = u64::from(inp.u32()) << (inp.u8() % 40);
                now = now.saturating_add(d).min(END_OF_TIME);
                tsc = tsc.saturating_add(d / 3);
            }
        }
        check(&a, now);
    }
});
