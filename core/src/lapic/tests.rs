//! Unit tests of the LAPIC model against KVM's behaviour.

use super::*;

const DEADLINE_CFG: Config = Config {
    timer_modes: TimerModes::TscDeadline,
    ..Config::DEFAULT
};

fn caps() -> GuestCaps {
    GuestCaps {
        x2apic: true,
        maxphyaddr: 48,
        ..GuestCaps::default()
    }
}

const XAPIC_BASE: u64 = 0xfee0_0800;
const X2APIC_BASE: u64 = 0xfee0_0c00;

/// A software-enabled xAPIC for vCPU `id`, TSC-deadline allowed.
fn xapic(id: u32) -> Lapic {
    let mut a = Lapic::new(id, DEADLINE_CFG);
    w(&mut a, reg::SPIV, 0x1ff);
    a
}

/// The same, switched to x2APIC mode by the guest.
fn x2apic(id: u32) -> Lapic {
    let mut a = xapic(id);
    let base = a.apic_base() | APIC_BASE_X2APIC;
    a.set_apic_base(base, false, &caps()).unwrap();
    a
}

fn w(a: &mut Lapic, off: u32, v: u32) -> Effects {
    a.mmio_write(off, &v.to_le_bytes(), 0)
}

fn r(a: &Lapic, off: u32) -> u32 {
    a.mmio_read(off, 4, 0) as u32
}

fn msr(off: u32) -> u32 {
    0x800 + (off >> 4)
}

// ---- reset ----

#[test]
fn reset_values_match_kvm_lapic_reset() {
    let a = Lapic::new(0, Config::DEFAULT);
    assert_eq!(a.apic_base(), 0xfee0_0900, "EN | BSP for the boot vCPU");
    assert_eq!(r(&a, reg::ID), 0);
    // Version 0x14, max LVT 5 (6 entries, no CMCI).
    assert_eq!(r(&a, reg::LVR), 0x0005_0014);
    for lvt in [
        reg::LVT_TIMER,
        reg::LVT_THERMAL,
        reg::LVT_PMC,
        reg::LVT_LINT1,
        reg::LVT_ERROR,
    ] {
        assert_eq!(r(&a, lvt), LVT_MASKED, "{lvt:#x}");
    }
    // KVM_X86_QUIRK_LINT0_REENABLED: the BSP's LINT0 is ExtINT, unmasked.
    assert_eq!(r(&a, reg::LVT_LINT0), 0x700);
    assert_eq!(r(&a, reg::DFR), u32::MAX);
    assert_eq!(r(&a, reg::SPIV), 0xff);
    assert!(!a.sw_enabled());
    for off in [reg::TPR, reg::PPR, reg::LDR, reg::ESR, reg::ICR, reg::ICR2] {
        assert_eq!(r(&a, off), 0, "{off:#x}");
    }
    assert_eq!(r(&a, reg::TDCR), 0);
    assert_eq!(a.timer_divide(), 2);
    assert_eq!(a.timer_expiry(), None);

    let b = Lapic::new(3, Config::DEFAULT);
    assert_eq!(b.apic_base(), XAPIC_BASE);
    assert_eq!(r(&b, reg::ID), 3 << 24);
    assert_eq!(r(&b, reg::LVT_LINT0), LVT_MASKED);
    assert!(!b.accepts_pic_interrupt());
    assert!(a.accepts_pic_interrupt());
}

#[test]
fn version_follows_cmci_and_directed_eoi() {
    let mut a = Lapic::new(
        1,
        Config {
            cmci: true,
            ..Config::DEFAULT
        },
    );
    assert_eq!(r(&a, reg::LVR), 0x0006_0014);
    assert_eq!(r(&a, reg::LVT_CMCI), LVT_MASKED);
    a.set_config(Config {
        directed_eoi: true,
        ..Config::DEFAULT
    });
    assert_eq!(r(&a, reg::LVR), 0x0105_0014);
    // CMCI gone: unreadable, unwritable.
    assert_eq!(r(&a, reg::LVT_CMCI), 0);
    // A new CMCI entry starts masked.
    let mut b = Lapic::new(1, Config::DEFAULT);
    b.set_config(Config {
        cmci: true,
        ..Config::DEFAULT
    });
    assert_eq!(r(&b, reg::LVT_CMCI), LVT_MASKED);
    assert_eq!(r(&b, reg::LVR), 0x0006_0014);
}

#[test]
fn lint0_quirk_off_masks_lint0() {
    let a = Lapic::new(
        0,
        Config {
            lint0_reenabled: false,
            ..Config::DEFAULT
        },
    );
    assert_eq!(r(&a, reg::LVT_LINT0), LVT_MASKED);
}

#[test]
fn init_keeps_id_and_base_reset_restores_them() {
    let mut a = xapic(2);
    w(&mut a, reg::ID, 7 << 24);
    w(&mut a, reg::LDR, 0x0100_0000);
    w(&mut a, reg::TPR, 0x20);
    a.accept(DeliveryMode::Fixed, 0x40, true, Trigger::Edge);
    a.reset(true);
    assert_eq!(r(&a, reg::ID), 7 << 24);
    assert_eq!(r(&a, reg::LDR), 0);
    assert_eq!(r(&a, reg::TPR), 0);
    assert_eq!(a.highest_irr(), None);
    assert_eq!(r(&a, reg::SPIV), 0xff);
    a.reset(false);
    assert_eq!(r(&a, reg::ID), 2 << 24);
    assert_eq!(a.apic_base(), XAPIC_BASE);
}

#[test]
fn init_in_x2apic_mode_keeps_mode_id_and_ldr_reset_leaves_it() {
    let mut a = x2apic(0x23);
    a.reset(true);
    assert!(a.x2apic_mode());
    assert_eq!(a.rdmsr(msr(reg::ID), 0), Ok(0x23));
    assert_eq!(a.rdmsr(msr(reg::LDR), 0), Ok(0x0002_0008));
    a.reset(false);
    assert!(!a.x2apic_mode());
    assert_eq!(r(&a, reg::ID), 0x23 << 24);
    assert_eq!(r(&a, reg::LDR), 0);
}

// ---- xAPIC MMIO ----

/// Offsets (of 16-byte slots below 0x400) readable in xAPIC mode.
const XAPIC_READABLE: [u32; 45] = [
    0x20, 0x30, 0x80, 0x90, 0xa0, 0xd0, 0xe0, 0xf0, 0x100, 0x110, 0x120, 0x130, 0x140, 0x150,
    0x160, 0x170, 0x180, 0x190, 0x1a0, 0x1b0, 0x1c0, 0x1d0, 0x1e0, 0x1f0, 0x200, 0x210, 0x220,
    0x230, 0x240, 0x250, 0x260, 0x270, 0x280, 0x300, 0x310, 0x320, 0x330, 0x340, 0x350, 0x360,
    0x370, 0x380, 0x390, 0x3e0, 0x2f0,
];

#[test]
fn readable_registers_as_kvm_lapic_readable_reg_mask() {
    let a = xapic(0);
    let mut want = 0u64;
    for off in XAPIC_READABLE.iter().filter(|&&o| o != 0x2f0) {
        want |= 1 << (off >> 4);
    }
    assert_eq!(a.readable_mask(), want);
    let cmci = Lapic::new(
        0,
        Config {
            cmci: true,
            ..Config::DEFAULT
        },
    );
    assert_eq!(cmci.readable_mask(), want | 1 << (0x2f0 >> 4));
    // x2APIC: no APR, DFR, ICR2.
    let x = x2apic(0);
    assert_eq!(
        x.readable_mask(),
        want & !(1 << 9) & !(1 << 0xe) & !(1 << 0x31)
    );
}

#[test]
fn unreadable_offsets_read_zero() {
    let mut a = xapic(5);
    // Make every word of the page non-zero, then check what reads hide.
    let mut page = [0xa5u8; STATE_SIZE];
    page[reg::SPIV as usize] = 0xff;
    a.set_state(&page, 0, false).unwrap();
    for off in (0..0x1000).step_by(16) {
        let readable = off < 0x400 && a.readable_mask() & (1 << (off >> 4)) != 0;
        let v = r(&a, off);
        if !readable {
            assert_eq!(v, 0, "{off:#x}");
        }
    }
    // APR reads 0 even when the page holds something.
    assert_eq!(a.register(reg::APR), 0xa5a5_a5a5);
    assert_eq!(r(&a, reg::APR), 0);
    // ESR reads what the state put there: KVM never latches errors.
    assert_eq!(r(&a, reg::ESR), 0xa5a5_a5a5);
}

#[test]
fn partial_and_misaligned_reads() {
    let mut a = xapic(0);
    w(&mut a, reg::ID, 0x1200_0000);
    w(&mut a, reg::TPR, 0xab);
    assert_eq!(a.mmio_read(reg::ID + 3, 1, 0), 0x12);
    assert_eq!(a.mmio_read(reg::ID + 2, 2, 0), 0x1200);
    assert_eq!(a.mmio_read(reg::TPR, 1, 0), 0xab);
    assert_eq!(a.mmio_read(reg::TPR, 2, 0), 0xab);
    // Crossing the 32-bit word, bytes 4..15 of a slot, odd lengths: nothing.
    assert_eq!(a.mmio_read(reg::ID + 3, 2, 0), 0);
    assert_eq!(a.mmio_read(reg::TPR + 4, 4, 0), 0);
    assert_eq!(a.mmio_read(reg::TPR + 4, 1, 0), 0);
    assert_eq!(a.mmio_read(reg::TPR, 3, 0), 0);
    assert_eq!(a.mmio_read(reg::TPR, 8, 0), 0);
    assert_eq!(a.mmio_read(reg::TPR, 0, 0), 0);
    assert_eq!(a.mmio_read(reg::TPR + 4, 0, 0), 0);
    assert_eq!(a.mmio_read(reg::TPR + 4, usize::MAX, 0), 0);
}

#[test]
fn write_masks_per_register() {
    let mut a = xapic(0);
    let cases = [
        (reg::ID, u32::MAX, 0xff00_0000),
        (reg::TPR, u32::MAX, 0xff),
        (reg::LDR, u32::MAX, 0xff00_0000),
        (reg::DFR, 0, 0x0fff_ffff),
        (reg::DFR, 0x1234_5678, 0x1fff_ffff),
        (reg::ICR2, u32::MAX, 0xff00_0000),
        // LVTT with TSC-deadline modes: vector, delivery status, mask, 18:17.
        (reg::LVT_TIMER, u32::MAX, 0x0007_10ff),
        (reg::LVT_THERMAL, u32::MAX, 0x0001_17ff),
        (reg::LVT_PMC, u32::MAX, 0x0001_17ff),
        (reg::LVT_LINT0, u32::MAX, 0x0001_f7ff),
        (reg::LVT_LINT1, u32::MAX, 0x0001_f7ff),
        (reg::LVT_ERROR, u32::MAX, 0x0001_10ff),
        (reg::TMICT, 0x1234, 0x1234),
        (reg::TDCR, u32::MAX, 0xb),
        (reg::SPIV, u32::MAX, 0x3ff),
    ];
    for (off, v, want) in cases {
        w(&mut a, off, v);
        assert_eq!(r(&a, off), want, "{off:#x}");
    }
    // The SPIV write above kept software enable, so the LVTs were not masked.
    assert!(a.sw_enabled());
}

#[test]
fn read_only_and_reserved_writes_are_dropped() {
    let mut a = xapic(0);
    let before = a.get_state(0, false);
    for off in [
        reg::LVR,
        reg::APR,
        reg::PPR,
        reg::RRR,
        reg::ISR,
        reg::TMR + 0x70,
        reg::IRR + 0x30,
        reg::TMCCT,
        reg::SELF_IPI,
        reg::LVT_CMCI,
        reg::ESR,
        0x40,
        0x3a0,
        0x400,
        0xff0,
    ] {
        let fx = w(&mut a, off, u32::MAX);
        assert_eq!(fx, Effects::default(), "{off:#x}");
    }
    assert_eq!(a.get_state(0, false), before);
    assert_eq!(r(&a, reg::ESR), 0);
}

#[test]
fn misaligned_or_short_writes_are_dropped() {
    let mut a = xapic(0);
    a.mmio_write(reg::TPR, &[0x50, 0], 0);
    a.mmio_write(reg::TPR + 4, &0x50u32.to_le_bytes(), 0);
    a.mmio_write(reg::TPR + 1, &0x50u32.to_le_bytes(), 0);
    a.mmio_write(reg::TPR, &[0x50; 8], 0);
    assert_eq!(a.tpr(), 0);
    a.mmio_write(reg::TPR, &[0x50, 0, 0, 0], 0);
    assert_eq!(a.tpr(), 0x50);
}

#[test]
fn timer_mode_bits_follow_cpuid() {
    for (modes, want) in [
        (TimerModes::OneShotOnly, 0x0001_00ff),
        (TimerModes::Periodic, 0x0003_00ff),
        (TimerModes::TscDeadline, 0x0007_00ff),
    ] {
        let mut a = Lapic::new(
            0,
            Config {
                timer_modes: modes,
                ..Config::DEFAULT
            },
        );
        w(&mut a, reg::SPIV, 0x100);
        w(&mut a, reg::LVT_TIMER, 0x0007_00ff | LVT_MASKED);
        assert_eq!(r(&a, reg::LVT_TIMER), want);
    }
    // Without TSC-deadline, 2 << 17 becomes one-shot.
    let mut a = Lapic::new(
        0,
        Config {
            timer_modes: TimerModes::Periodic,
            ..Config::DEFAULT
        },
    );
    w(&mut a, reg::LVT_TIMER, 2 << 17);
    assert_eq!(a.timer_mode(), TimerMode::OneShot);
}

#[test]
fn software_disabled_forces_lvt_mask() {
    let mut a = Lapic::new(1, DEADLINE_CFG);
    w(&mut a, reg::LVT_LINT1, 0x400);
    assert_eq!(r(&a, reg::LVT_LINT1), 0x400 | LVT_MASKED);
    w(&mut a, reg::SPIV, SPIV_ENABLED);
    w(&mut a, reg::LVT_LINT1, 0x400);
    w(&mut a, reg::LVT_TIMER, 0x30);
    assert_eq!(r(&a, reg::LVT_LINT1), 0x400);
    // Clearing the enable masks every LVT.
    let fx = w(&mut a, reg::SPIV, 0xff);
    assert!(fx.addressing_changed);
    assert_eq!(r(&a, reg::LVT_LINT1), 0x400 | LVT_MASKED);
    assert_eq!(r(&a, reg::LVT_TIMER), 0x30 | LVT_MASKED);
}

#[test]
fn directed_eoi_bit_writable_only_when_offered() {
    let mut a = xapic(0);
    w(&mut a, reg::SPIV, 0x11ff);
    assert_eq!(r(&a, reg::SPIV), 0x1ff);
    let mut b = Lapic::new(
        0,
        Config {
            directed_eoi: true,
            ..Config::DEFAULT
        },
    );
    w(&mut b, reg::SPIV, 0xffff_ffff);
    assert_eq!(r(&b, reg::SPIV), 0x13ff);
}

#[test]
fn hardware_disabled_or_x2apic_page_reads_ones_drops_writes() {
    let mut a = xapic(0);
    a.set_apic_base(0xfee0_0000, false, &caps()).unwrap();
    assert!(!a.mmio_active());
    assert_eq!(a.mmio_read(reg::ID, 4, 0), 0xffff_ffff);
    assert_eq!(a.mmio_read(reg::ID, 1, 0), 0xff);
    assert_eq!(a.mmio_read(reg::ID, 8, 0), u64::MAX);
    assert_eq!(w(&mut a, reg::TPR, 0x50), Effects::default());
    assert_eq!(a.tpr(), 0);
    let x = x2apic(0);
    assert_eq!(x.mmio_read(reg::TPR, 2, 0), 0xffff);
}

#[test]
fn icr_write_sends_ipi_and_clears_busy() {
    let mut a = xapic(0);
    w(&mut a, reg::ICR2, 0x0512_3456);
    let fx = w(&mut a, reg::ICR, 0x000c_4c31 | (1 << 12));
    assert_eq!(
        fx.ipi,
        Some(Ipi {
            dest: 0x05,
            dest_mode: DestMode::Logical,
            shorthand: Shorthand::AllButSelf,
            delivery_mode: DeliveryMode::Nmi,
            vector: 0x31,
            level: true,
            trigger: Trigger::Edge,
        })
    );
    assert_eq!(r(&a, reg::ICR), 0x000c_4c31);
    assert_eq!(r(&a, reg::ICR2), 0x0500_0000);
    // Reserved ICR bits are stored as written (KVM does not mask them).
    w(&mut a, reg::ICR, 0xfff0_0000);
    assert_eq!(r(&a, reg::ICR), 0xfff0_0000);
}

// ---- x2APIC MSRs ----

#[test]
fn x2apic_msrs_gp_outside_x2apic_mode() {
    let mut a = xapic(0);
    assert_eq!(a.rdmsr(msr(reg::TPR), 0), Err(Gp));
    assert_eq!(a.wrmsr(msr(reg::TPR), 0, 0), Err(Gp));
    let mut x = x2apic(0);
    assert_eq!(x.rdmsr(0x7ff, 0), Err(Gp));
    assert_eq!(x.wrmsr(0x900, 0, 0), Err(Gp));
}

#[test]
fn x2apic_id_and_ldr_are_derived_and_read_only() {
    let mut x = x2apic(0x1234);
    assert_eq!(x.rdmsr(0x802, 0), Ok(0x1234));
    assert_eq!(x.rdmsr(0x80d, 0), Ok(0x0123_0010));
    assert_eq!(x2apic_ldr(0x1234), ((0x1234 >> 4) << 16) | (1 << 4));
    assert_eq!(x.wrmsr(0x802, 0, 0), Err(Gp));
    assert_eq!(x.wrmsr(0x80d, 0, 0), Err(Gp));
}

#[test]
fn x2apic_gp_table() {
    let mut x = x2apic(1);
    // Reads: write-only, xAPIC-only, reserved.
    for m in [
        0x800, 0x801, 0x804, 0x807, 0x809, 0x80b, 0x80c, 0x80e, 0x829, 0x82f, 0x831, 0x83a, 0x83d,
        0x83f, 0x840, 0x8ff,
    ] {
        assert_eq!(x.rdmsr(m, 0), Err(Gp), "rdmsr {m:#x}");
    }
    for m in [
        0x802, 0x803, 0x808, 0x80a, 0x80d, 0x80f, 0x810, 0x818, 0x820, 0x827, 0x828, 0x830, 0x832,
        0x837, 0x838, 0x839, 0x83e,
    ] {
        assert!(x.rdmsr(m, 0).is_ok(), "rdmsr {m:#x}");
    }
    // Writes: read-only, xAPIC-only, reserved.
    for m in [
        0x802, 0x803, 0x809, 0x80a, 0x80c, 0x80d, 0x80e, 0x810, 0x817, 0x818, 0x820, 0x82f, 0x831,
        0x839, 0x804, 0x840, 0x8ff,
    ] {
        assert_eq!(x.wrmsr(m, 0, 0), Err(Gp), "wrmsr {m:#x}");
    }
    // Bits 63:32 are reserved but in ICR.
    assert_eq!(x.wrmsr(0x808, 1 << 32, 0), Err(Gp));
    // ESR: only 0.
    assert!(x.wrmsr(0x828, 0, 0).is_ok());
    assert_eq!(x.wrmsr(0x828, 1, 0), Err(Gp));
    // EOI takes any value, as KVM.
    assert!(x.wrmsr(0x80b, 0x55, 0).is_ok());
    // In-range reserved bits are dropped, not #GP.
    assert!(x.wrmsr(0x808, 0xffff_ffff, 0).is_ok());
    assert_eq!(x.rdmsr(0x808, 0), Ok(0xff));
}

#[test]
fn x2apic_icr_is_64_bit_with_reserved_bits() {
    let mut x = x2apic(1);
    for b in [13, 16, 17, 20, 25, 31] {
        assert_eq!(x.wrmsr(0x830, 1 << b, 0), Err(Gp), "bit {b}");
    }
    let fx = x
        .wrmsr(
            0x830,
            (0x1234_5678 << 32) | 0x4000 | 0x800 | 0x1000 | 0x41,
            0,
        )
        .unwrap();
    assert_eq!(
        fx.ipi,
        Some(Ipi {
            dest: 0x1234_5678,
            dest_mode: DestMode::Logical,
            shorthand: Shorthand::None,
            delivery_mode: DeliveryMode::Fixed,
            vector: 0x41,
            level: true,
            trigger: Trigger::Edge,
        })
    );
    assert_eq!(x.rdmsr(0x830, 0), Ok((0x1234_5678 << 32) | 0x4841));
}

#[test]
fn self_ipi_is_x2apic_only_and_vector_only() {
    let mut x = x2apic(1);
    let fx = x.wrmsr(0x83f, 0xee, 0).unwrap();
    assert_eq!(
        fx.ipi,
        Some(Ipi {
            dest: 0,
            dest_mode: DestMode::Physical,
            shorthand: Shorthand::ToSelf,
            delivery_mode: DeliveryMode::Fixed,
            vector: 0xee,
            level: false,
            trigger: Trigger::Edge,
        })
    );
    assert_eq!(x.wrmsr(0x83f, 0x100, 0), Err(Gp));
    let mut a = xapic(1);
    assert_eq!(w(&mut a, reg::SELF_IPI, 0xee).ipi, None);
}

// ---- priorities ----

#[test]
fn irr_isr_ppr_sequence() {
    let mut a = xapic(0);
    assert_eq!(
        a.accept(DeliveryMode::Fixed, 0x31, true, Trigger::Edge),
        Accepted::Interrupt(0x31)
    );
    a.accept(DeliveryMode::Fixed, 0x52, true, Trigger::Edge);
    assert_eq!(a.pending_vector(), Some(0x52));
    assert_eq!(a.ack(), Some(0x52));
    assert_eq!(r(&a, reg::PPR), 0x50);
    assert_eq!(r(&a, reg::ISR + 0x20), 1 << (0x52 - 0x40));
    // 0x31's class is below PPR's.
    assert_eq!(a.pending_vector(), None);
    assert_eq!(a.ack(), None);
    // A higher class preempts.
    a.accept(DeliveryMode::Fixed, 0x61, true, Trigger::Edge);
    assert_eq!(a.ack(), Some(0x61));
    assert_eq!(a.ppr(), 0x60);
    // EOI retires the highest in-service vector first.
    let fx = w(&mut a, reg::EOI, 0);
    assert_eq!(
        fx.eoi,
        Some(Eoi {
            vector: 0x61,
            level: false
        })
    );
    assert_eq!(a.ppr(), 0x50);
    let fx = a.eoi();
    assert_eq!(fx.eoi.map(|e| e.vector), Some(0x52));
    assert!(fx.event, "0x31 is deliverable again");
    assert_eq!(a.pending_vector(), Some(0x31));
    assert_eq!(a.ack(), Some(0x31));
    a.eoi();
    assert_eq!(a.pending_vector(), None);
    assert_eq!(a.eoi().eoi, None, "spurious EOI");
}

#[test]
fn tpr_masks_by_class() {
    let mut a = xapic(0);
    a.accept(DeliveryMode::Fixed, 0x4f, true, Trigger::Edge);
    w(&mut a, reg::TPR, 0x45);
    assert_eq!(a.ppr(), 0x45);
    assert_eq!(a.pending_vector(), None);
    a.accept(DeliveryMode::Fixed, 0x50, true, Trigger::Edge);
    assert_eq!(a.pending_vector(), Some(0x50));
    // ISR class above TPR: PPR is the class.
    a.ack();
    assert_eq!(a.ppr(), 0x50);
    // TPR above ISR: PPR is TPR, sub-class included.
    w(&mut a, reg::TPR, 0x67);
    assert_eq!(r(&a, reg::PPR), 0x67);
    let fx = w(&mut a, reg::TPR, 0);
    assert!(!fx.event, "0x4f is below the in-service 0x50");
    a.eoi();
    assert_eq!(a.pending_vector(), Some(0x4f));
}

#[test]
fn vapic_word_and_tpr() {
    let mut a = xapic(0);
    a.set_tpr(0x25);
    assert_eq!(a.ppr(), 0x25);
    a.accept(DeliveryMode::Fixed, 0x61, true, Trigger::Edge);
    a.ack();
    a.accept(DeliveryMode::Fixed, 0x42, true, Trigger::Edge);
    assert_eq!(a.vapic_word(), 0x25 | (0x60 << 8) | (0x42 << 24));
}

#[test]
fn pending_eoi_is_irr_or_isr() {
    let mut a = xapic(0);
    assert!(!a.pending_eoi(0x40));
    a.accept(DeliveryMode::Fixed, 0x40, true, Trigger::Level);
    assert!(a.pending_eoi(0x40), "requested");
    a.ack();
    assert!(a.pending_eoi(0x40), "in service");
    a.eoi();
    assert!(!a.pending_eoi(0x40));
}

#[test]
fn cr8_is_tpr_high_nibble() {
    let mut a = xapic(0);
    a.set_cr8(0x1f);
    assert_eq!(a.tpr(), 0xf0);
    assert_eq!(a.cr8(), 0xf);
    w(&mut a, reg::TPR, 0x5a);
    assert_eq!(a.cr8(), 5);
    a.accept(DeliveryMode::Fixed, 0x80, true, Trigger::Edge);
    a.set_cr8(9);
    assert_eq!(a.pending_vector(), None);
    assert!(a.set_cr8(7).event);
}

#[test]
fn acceptance_rules() {
    let mut a = Lapic::new(1, DEADLINE_CFG);
    // Software-disabled: fixed dropped, others still reported.
    assert_eq!(
        a.accept(DeliveryMode::Fixed, 0x40, true, Trigger::Edge),
        Accepted::Dropped
    );
    assert_eq!(
        a.accept(DeliveryMode::Nmi, 0, true, Trigger::Edge),
        Accepted::Nmi
    );
    assert_eq!(
        a.accept(DeliveryMode::Init, 0, true, Trigger::Level),
        Accepted::Init
    );
    assert_eq!(
        a.accept(DeliveryMode::Init, 0, false, Trigger::Edge),
        Accepted::Init
    );
    assert_eq!(
        a.accept(DeliveryMode::Init, 0, false, Trigger::Level),
        Accepted::Dropped
    );
    assert_eq!(
        a.accept(DeliveryMode::StartUp, 0x9a, true, Trigger::Edge),
        Accepted::Sipi(0x9a)
    );
    assert_eq!(
        a.accept(DeliveryMode::Smi, 0, true, Trigger::Edge),
        Accepted::Smi
    );
    assert_eq!(
        a.accept(DeliveryMode::RemoteRead, 0, true, Trigger::Edge),
        Accepted::RemoteRead
    );
    assert_eq!(
        a.accept(DeliveryMode::ExtInt, 0x20, true, Trigger::Edge),
        Accepted::Dropped
    );
    w(&mut a, reg::SPIV, 0x1ff);
    // Level-triggered deassert dropped.
    assert_eq!(
        a.accept(DeliveryMode::Fixed, 0x40, false, Trigger::Level),
        Accepted::Dropped
    );
    // Vectors below 16 are accepted, no ESR (KVM).
    assert_eq!(
        a.accept(DeliveryMode::Fixed, 3, true, Trigger::Edge),
        Accepted::Interrupt(3)
    );
    assert_eq!(r(&a, reg::ESR), 0);
    assert_eq!(r(&a, reg::IRR), 1 << 3);
    // Lowest priority counts for arbitration even when dropped.
    a.accept(DeliveryMode::LowestPriority, 0x41, false, Trigger::Level);
    a.accept(DeliveryMode::LowestPriority, 0x41, true, Trigger::Edge);
    assert_eq!(a.arbitration_priority(), 2);
    assert_eq!(lowest_priority_index(0x41, 3), Some(2));
    assert_eq!(lowest_priority_index(0x41, 0), None);
}

#[test]
fn level_triggered_eoi_reports_tmr() {
    let mut a = xapic(0);
    a.accept(DeliveryMode::Fixed, 0x60, true, Trigger::Level);
    assert_eq!(r(&a, reg::TMR + 0x30), 1);
    a.ack();
    assert_eq!(
        a.eoi().eoi,
        Some(Eoi {
            vector: 0x60,
            level: true
        })
    );
    // An edge delivery of the same vector clears its TMR bit.
    a.accept(DeliveryMode::Fixed, 0x60, true, Trigger::Edge);
    assert_eq!(r(&a, reg::TMR + 0x30), 0);
    a.ack();
    assert_eq!(a.eoi().eoi.map(|e| e.level), Some(false));
}

#[test]
fn hardware_disabled_apic_has_nothing_pending() {
    let mut a = xapic(0);
    a.accept(DeliveryMode::Fixed, 0x60, true, Trigger::Edge);
    a.set_apic_base(0, false, &caps()).unwrap();
    assert_eq!(a.pending_vector(), None);
    assert_eq!(
        a.accept(DeliveryMode::Fixed, 0x70, true, Trigger::Edge),
        Accepted::Dropped
    );
    assert!(a.accepts_pic_interrupt());
    // Re-enabled, the IRR it kept is pending again (KVM resets nothing).
    a.set_apic_base(XAPIC_BASE, false, &caps()).unwrap();
    assert_eq!(a.pending_vector(), Some(0x60));
}

#[test]
fn local_interrupts_follow_lvt() {
    let mut a = xapic(1);
    assert_eq!(a.local_interrupt(Lvt::Lint1), Accepted::Dropped, "masked");
    w(&mut a, reg::LVT_LINT1, 0x400);
    assert_eq!(a.local_interrupt(Lvt::Lint1), Accepted::Nmi);
    w(&mut a, reg::LVT_LINT0, 0x700);
    assert!(a.accepts_pic_interrupt());
    assert_eq!(a.local_interrupt(Lvt::Lint0), Accepted::Dropped, "ExtINT");
    w(&mut a, reg::LVT_LINT0, 0x8000 | 0x45);
    assert!(!a.accepts_pic_interrupt());
    assert_eq!(a.local_interrupt(Lvt::Lint0), Accepted::Interrupt(0x45));
    assert_eq!(r(&a, reg::TMR + 0x20), 1 << 5, "level-triggered LINT0");
    assert_eq!(a.local_interrupt(Lvt::Cmci), Accepted::Dropped, "no CMCI");
    // An Intel-compatible guest's PMI masks LVTPC.
    let mut cfg = DEADLINE_CFG;
    cfg.intel_compatible = true;
    a.set_config(cfg);
    w(&mut a, reg::LVT_PMC, 0x400);
    assert_eq!(a.local_interrupt(Lvt::PerfCounter), Accepted::Nmi);
    assert_eq!(r(&a, reg::LVT_PMC), 0x400 | LVT_MASKED);
}

// ---- destination matching ----

const NO: Shorthand = Shorthand::None;
const IPI: Sender = Sender::Apic { is_self: false };
const DEV: Sender = Sender::Device {
    broadcast_quirk: true,
};

#[test]
fn physical_matching() {
    let mut a = xapic(3);
    let p = DestMode::Physical;
    assert!(a.matches(3, p, NO, IPI));
    assert!(!a.matches(4, p, NO, IPI));
    assert!(a.matches(0xff, p, NO, IPI), "broadcast");
    // The xAPIC ID is writable and matched as written.
    w(&mut a, reg::ID, 9 << 24);
    assert!(a.matches(9, p, NO, IPI));
    assert!(!a.matches(3, p, NO, IPI));
    // Above 0xff the x2APIC ID (vCPU id) matches even in xAPIC mode.
    let b = xapic(0x103);
    assert!(b.matches(0x103, p, NO, DEV));
    assert!(b.matches(0x03, p, NO, DEV));
    let x = x2apic(0x103);
    assert!(x.matches(0x103, p, NO, IPI));
    assert!(!x.matches(0x03, p, NO, IPI));
    assert!(x.matches(u32::MAX, p, NO, IPI));
    assert!(!x.matches(0xff, p, NO, IPI), "0xff is an ID in x2APIC mode");
    assert!(x.matches(0xff, p, NO, DEV), "broadcast quirk");
    let no_quirk = Sender::Device {
        broadcast_quirk: false,
    };
    assert!(!x.matches(0xff, p, NO, no_quirk));
}

#[test]
fn logical_flat_and_cluster_matching() {
    let mut a = xapic(0);
    let l = DestMode::Logical;
    w(&mut a, reg::LDR, 0x2400_0000);
    // Flat: any common bit.
    for (dest, want) in [
        (0x04, true),
        (0x20, true),
        (0x24, true),
        (0x81, false),
        (0xff, true),
    ] {
        assert_eq!(a.matches(dest, l, NO, IPI), want, "flat {dest:#x}");
    }
    // Cluster: cluster 2, member bit 2.
    w(&mut a, reg::DFR, 0x0fff_ffff);
    for (dest, want) in [
        (0x24, true),
        (0x2c, true),
        (0x28, false),
        (0x14, false),
        (0xff, true),
    ] {
        assert_eq!(a.matches(dest, l, NO, IPI), want, "cluster {dest:#x}");
    }
    // Another DFR model matches nothing but broadcast.
    w(&mut a, reg::DFR, 0x5000_0000);
    assert!(!a.matches(0x24, l, NO, IPI));
    assert!(a.matches(0xff, l, NO, IPI));
}

#[test]
fn logical_x2apic_cluster_matching() {
    // id 0x35: cluster 3, bit 5.
    let x = x2apic(0x35);
    let l = DestMode::Logical;
    for (dest, want) in [
        (0x0003_0020, true),
        (0x0003_ffff, true),
        (0x0003_0010, false),
        (0x0002_0020, false),
        (u32::MAX, true),
    ] {
        assert_eq!(x.matches(dest, l, NO, IPI), want, "{dest:#x}");
    }
}

#[test]
fn shorthands() {
    let a = xapic(1);
    let p = DestMode::Physical;
    let me = Sender::Apic { is_self: true };
    assert!(a.matches(7, p, Shorthand::ToSelf, me));
    assert!(!a.matches(1, p, Shorthand::ToSelf, IPI));
    assert!(!a.matches(1, p, Shorthand::ToSelf, DEV));
    assert!(a.matches(7, p, Shorthand::All, me));
    assert!(a.matches(7, p, Shorthand::All, IPI));
    assert!(!a.matches(1, p, Shorthand::AllButSelf, me));
    assert!(a.matches(7, p, Shorthand::AllButSelf, IPI));
}

// ---- timer ----

#[test]
fn one_shot_counts_and_fires_once() {
    let mut a = xapic(0);
    w(&mut a, reg::LVT_TIMER, 0xec);
    a.mmio_write(reg::TDCR, &0xbu32.to_le_bytes(), 0);
    assert_eq!(a.timer_divide(), 1);
    let fx = a.mmio_write(reg::TMICT, &1000u32.to_le_bytes(), 100);
    assert!(fx.timer_changed);
    assert_eq!(a.timer_expiry(), Some(Expiry::Ns(1100)));
    assert_eq!(a.mmio_read(reg::TMCCT, 4, 600), 500);
    assert_eq!(a.mmio_read(reg::TMCCT, 4, 1099), 1);
    assert_eq!(a.mmio_read(reg::TMCCT, 4, 5000), 0);
    // KVM's remaining % period: a whole period left reads 0.
    assert_eq!(a.mmio_read(reg::TMCCT, 4, 100), 0);
    assert_eq!(a.timer_fired(1099, 0), None, "not yet");
    assert_eq!(a.timer_fired(1100, 0), Some(Accepted::Interrupt(0xec)));
    assert_eq!(a.timer_expiry(), None);
    assert_eq!(a.timer_fired(2000, 0), None);
    assert_eq!(a.mmio_read(reg::TMCCT, 4, 1100), 0);
    assert_eq!(a.pending_vector(), Some(0xec));
    // TMICT 0 stops a running count.
    w(&mut a, reg::TMICT, 10);
    assert!(w(&mut a, reg::TMICT, 0).timer_changed);
    assert_eq!(a.timer_expiry(), None);
}

#[test]
fn divider_and_bus_cycle_scale_the_count() {
    let mut a = Lapic::new(
        0,
        Config {
            bus_cycle_ns: 10,
            ..DEADLINE_CFG
        },
    );
    // TDCR 0: divide by 2.
    a.mmio_write(reg::TMICT, &100u32.to_le_bytes(), 0);
    assert_eq!(a.timer_expiry(), Some(Expiry::Ns(2000)));
    assert_eq!(a.mmio_read(reg::TMCCT, 4, 1000), 50);
    // Divide by 128 half-way: the remaining half stretches 64-fold.
    let fx = a.mmio_write(reg::TDCR, &0xau32.to_le_bytes(), 1000);
    assert_eq!(a.timer_divide(), 128);
    assert!(fx.timer_changed);
    assert_eq!(a.timer_expiry(), Some(Expiry::Ns(1000 + 64_000)));
    assert_eq!(a.mmio_read(reg::TMCCT, 4, 1000), 50);
    // Same divider again: nothing moves.
    let fx = a.mmio_write(reg::TDCR, &0xau32.to_le_bytes(), 5000);
    assert!(!fx.timer_changed);
    for (tdcr, div) in [
        (0, 2),
        (1, 4),
        (2, 8),
        (3, 16),
        (8, 32),
        (9, 64),
        (0xa, 128),
        (0xb, 1),
    ] {
        w(&mut a, reg::TDCR, tdcr);
        assert_eq!(a.timer_divide(), div, "{tdcr:#x}");
    }
}

#[test]
fn expired_one_shot_stays_stopped_after_divider_change() {
    let mut a = xapic(0);
    a.mmio_write(reg::TMICT, &10u32.to_le_bytes(), 0);
    a.timer_fired(20, 0);
    a.mmio_write(reg::TDCR, &0xbu32.to_le_bytes(), 30);
    assert_eq!(a.timer_expiry(), None);
}

#[test]
fn periodic_reloads_with_minimum_period() {
    let mut a = xapic(0);
    w(&mut a, reg::LVT_TIMER, (1 << 17) | 0x40);
    w(&mut a, reg::TDCR, 0xb);
    a.mmio_write(reg::TMICT, &1000u32.to_le_bytes(), 0);
    // 1 µs asked, 200 µs given.
    assert_eq!(a.timer_expiry(), Some(Expiry::Ns(200_000)));
    assert_eq!(a.timer_fired(200_000, 0), Some(Accepted::Interrupt(0x40)));
    assert_eq!(a.timer_expiry(), Some(Expiry::Ns(400_000)));
    // Late by several periods: one interrupt, next expiry "now".
    assert_eq!(a.timer_fired(1_000_000, 0), Some(Accepted::Interrupt(0x40)));
    assert_eq!(a.timer_expiry(), Some(Expiry::Ns(1_000_000)));
    a.timer_fired(1_000_000, 0);
    assert_eq!(a.timer_expiry(), Some(Expiry::Ns(1_200_000)));
    // Long enough periods are not stretched.
    a.mmio_write(reg::TMICT, &1_000_000u32.to_le_bytes(), 0);
    assert_eq!(a.timer_expiry(), Some(Expiry::Ns(1_000_000)));
    assert_eq!(a.mmio_read(reg::TMCCT, 4, 250_000), 750_000);
    // Masked: the count goes on, nothing is delivered.
    w(&mut a, reg::LVT_TIMER, (1 << 17) | LVT_MASKED | 0x40);
    assert_eq!(a.timer_fired(1_000_000, 0), Some(Accepted::Dropped));
    assert_eq!(a.timer_expiry(), Some(Expiry::Ns(2_000_000)));
    // Periodic → one-shot keeps the count; it then fires once.
    w(&mut a, reg::LVT_TIMER, 0x40);
    assert_eq!(a.timer_expiry(), Some(Expiry::Ns(2_000_000)));
    a.timer_fired(2_000_000, 0);
    assert_eq!(a.timer_expiry(), None);
}

#[test]
fn reserved_timer_mode_as_kvm() {
    let mut a = xapic(0);
    w(&mut a, reg::TDCR, 0xb);
    a.mmio_write(reg::TMICT, &1000u32.to_le_bytes(), 0);
    // One-shot → reserved (3 << 17) keeps the running count; it fires once.
    w(&mut a, reg::LVT_TIMER, (3 << 17) | 0x50);
    assert_eq!(a.timer_mode(), TimerMode::Reserved);
    assert_eq!(a.timer_expiry(), Some(Expiry::Ns(1000)));
    assert_eq!(a.timer_fired(1000, 0), Some(Accepted::Interrupt(0x50)));
    assert_eq!(a.timer_expiry(), None);
    // A TMICT write stops the host timer and starts nothing; TMCCT goes on
    // reading the old target, as KVM's.
    a.mmio_write(reg::TMICT, &1000u32.to_le_bytes(), 2000);
    assert_eq!(a.timer_expiry(), None);
    assert_eq!(r(&a, reg::TMICT), 1000);
    let mut b = xapic(0);
    w(&mut b, reg::TDCR, 0xb);
    b.mmio_write(reg::TMICT, &1000u32.to_le_bytes(), 0);
    w(&mut b, reg::LVT_TIMER, 3 << 17);
    b.mmio_write(reg::TMICT, &1000u32.to_le_bytes(), 100);
    assert_eq!(b.timer_expiry(), None);
    assert_eq!(b.mmio_read(reg::TMCCT, 4, 400), 600);
    // ... and survives KVM_SET_LAPIC.
    let s = b.get_state(400, false);
    b.set_state(&s, 400, false).unwrap();
    assert_eq!(b.get_state(400, false), s);
}

#[test]
fn tsc_deadline_mode() {
    let mut a = xapic(0);
    w(&mut a, reg::LVT_TIMER, 0x33);
    a.mmio_write(reg::TMICT, &1000u32.to_le_bytes(), 0);
    // Entering TSC-deadline stops the count and clears TMICT.
    let fx = w(&mut a, reg::LVT_TIMER, (2 << 17) | 0x33);
    assert!(fx.timer_changed);
    assert_eq!(a.timer_mode(), TimerMode::TscDeadline);
    assert_eq!(r(&a, reg::TMICT), 0);
    assert_eq!(a.timer_expiry(), None);
    // TMICT writes are ignored; TMCCT reads 0.
    w(&mut a, reg::TMICT, 50);
    assert_eq!(r(&a, reg::TMICT), 0);
    assert!(a.set_tsc_deadline(5000).timer_changed);
    assert_eq!(a.tsc_deadline(), 5000);
    assert_eq!(a.timer_expiry(), Some(Expiry::GuestTsc(5000)));
    assert_eq!(a.mmio_read(reg::TMCCT, 4, 0), 0);
    assert_eq!(a.timer_fired(u64::MAX, 4999), None);
    assert_eq!(a.timer_fired(0, 5000), Some(Accepted::Interrupt(0x33)));
    assert_eq!(a.tsc_deadline(), 0);
    assert_eq!(a.timer_expiry(), None);
    // 0 disarms; leaving the mode clears the deadline.
    a.set_tsc_deadline(7000);
    assert!(a.set_tsc_deadline(0).timer_changed);
    a.set_tsc_deadline(7000);
    w(&mut a, reg::LVT_TIMER, 0x33);
    assert_eq!(a.timer_expiry(), None);
    assert_eq!(a.tsc_deadline(), 0);
    // Outside the mode the MSR is ignored.
    assert_eq!(a.set_tsc_deadline(9), Effects::default());
    assert_eq!(a.timer_expiry(), None);
}

#[test]
fn timer_arithmetic_saturates() {
    let mut a = Lapic::new(
        0,
        Config {
            bus_cycle_ns: u32::MAX,
            ..DEADLINE_CFG
        },
    );
    w(&mut a, reg::TDCR, 0xa);
    a.mmio_write(reg::TMICT, &u32::MAX.to_le_bytes(), u64::MAX - 5);
    assert_eq!(a.timer_expiry(), Some(Expiry::Ns(u64::MAX)));
    // The period saturated to u64::MAX: all of it left reads 0 (KVM's modulo).
    assert_eq!(a.mmio_read(reg::TMCCT, 4, 0), 0);
    let per_count = u64::from(u32::MAX) * 128;
    assert_eq!(a.mmio_read(reg::TMCCT, 4, 1), (u64::MAX - 1) / per_count);
    w(&mut a, reg::TDCR, 0xb);
    a.mmio_write(reg::TDCR, &0xau32.to_le_bytes(), 0);
    assert!(a.timer_fired(u64::MAX, 0).is_some());
}

// ---- KVM_GET/SET_LAPIC ----

#[test]
fn state_round_trip_xapic() {
    let mut a = xapic(4);
    w(&mut a, reg::TPR, 0x20);
    w(&mut a, reg::LDR, 0x0800_0000);
    a.accept(DeliveryMode::Fixed, 0x70, true, Trigger::Level);
    a.ack();
    a.accept(DeliveryMode::Fixed, 0x41, true, Trigger::Edge);
    w(&mut a, reg::TDCR, 0xb);
    a.mmio_write(reg::TMICT, &1000u32.to_le_bytes(), 0);
    let s = a.get_state(400, false);
    assert_eq!(u32::from_le_bytes(s[0x390..0x394].try_into().unwrap()), 600);
    assert_eq!(
        u32::from_le_bytes(s[0x20..0x24].try_into().unwrap()),
        4 << 24
    );
    let mut b = Lapic::new(4, DEADLINE_CFG);
    let fx = b.set_state(&s, 10_000, false).unwrap();
    assert!(fx.timer_changed && fx.addressing_changed);
    assert_eq!(b.timer_expiry(), Some(Expiry::Ns(10_600)));
    assert_eq!(b.get_state(10_000, false), s);
    assert_eq!(b.highest_isr(), Some(0x70));
    assert_eq!(b.ppr(), 0x70);
    assert_eq!(b.register(reg::TMCCT), 0);
}

#[test]
fn state_round_trip_x2apic_both_formats() {
    let mut a = x2apic(0x42);
    a.wrmsr(0x830, (7 << 32) | 0x30, 0).unwrap();
    let old = a.get_state(0, false);
    assert_eq!(
        u32::from_le_bytes(old[0x20..0x24].try_into().unwrap()),
        0x42 << 24
    );
    assert_eq!(u32::from_le_bytes(old[0x310..0x314].try_into().unwrap()), 7);
    let new = a.get_state(0, true);
    assert_eq!(
        u32::from_le_bytes(new[0x20..0x24].try_into().unwrap()),
        0x42
    );
    let mut b = x2apic(0x42);
    b.set_state(&old, 0, false).unwrap();
    assert_eq!(b.get_state(0, false), old);
    b.set_state(&new, 0, true).unwrap();
    assert_eq!(b.get_state(0, true), new);
    assert_eq!(b.rdmsr(0x830, 0), Ok((7 << 32) | 0x30));
    // The old format ignores the ID given; LDR is always derived.
    let mut junk = old;
    junk[0x20..0x24].copy_from_slice(&0x1234u32.to_le_bytes());
    junk[0xd0..0xd4].copy_from_slice(&0x5678u32.to_le_bytes());
    b.set_state(&junk, 0, false).unwrap();
    assert_eq!(b.rdmsr(0x802, 0), Ok(0x42));
    assert_eq!(b.rdmsr(0x80d, 0), Ok(u64::from(x2apic_ldr(0x42))));
    // The 32-bit format refuses a wrong ID, after applying SPIV (KVM).
    let mut bad = new;
    bad[0x20..0x24].copy_from_slice(&0x43u32.to_le_bytes());
    bad[0xf0..0xf4].copy_from_slice(&0xffu32.to_le_bytes());
    assert_eq!(b.set_state(&bad, 0, true), Err(InvalidState));
    assert!(!b.sw_enabled());
}

#[test]
fn set_state_recomputes_lvr_ppr_and_restarts_timer() {
    let mut a = xapic(1);
    let mut s = a.get_state(0, false);
    s[0x30..0x34].copy_from_slice(&0xdeadu32.to_le_bytes());
    s[0xa0..0xa4].copy_from_slice(&0x99u32.to_le_bytes());
    s[0x80..0x84].copy_from_slice(&0x10u32.to_le_bytes());
    // One-shot, TMICT 100, TMCCT 0: it was expired, and fires at once.
    s[0x380..0x384].copy_from_slice(&100u32.to_le_bytes());
    a.set_state(&s, 50, false).unwrap();
    assert_eq!(r(&a, reg::LVR), 0x0005_0014);
    assert_eq!(r(&a, reg::PPR), 0x10);
    assert_eq!(a.timer_expiry(), Some(Expiry::Ns(50)));
    // TMCCT larger than TMICT: the whole period.
    s[0x390..0x394].copy_from_slice(&1000u32.to_le_bytes());
    a.set_state(&s, 50, false).unwrap();
    assert_eq!(a.timer_expiry(), Some(Expiry::Ns(250)));
    // The arbitration count restarts.
    a.accept(DeliveryMode::LowestPriority, 0x30, true, Trigger::Edge);
    a.set_state(&s, 50, false).unwrap();
    assert_eq!(a.arbitration_priority(), 0);
}

#[test]
fn stale_stretched_period_as_kvm() {
    // Periodic with a 6 ns count, stretched to 200 µs; then one-shot. KVM
    // keeps the 200 µs period, so TMCCT reads past TMICT; restoring that
    // count starts from TMICT's 6 ns, and it reads 0 afterwards.
    let mut a = xapic(0);
    w(&mut a, reg::LVT_TIMER, 1 << 17);
    a.mmio_write(reg::TMICT, &3u32.to_le_bytes(), 0);
    assert_eq!(a.timer_expiry(), Some(Expiry::Ns(200_000)));
    w(&mut a, reg::LVT_TIMER, 0);
    assert_eq!(a.mmio_read(reg::TMCCT, 4, 100_000), 50_000);
    let s = a.get_state(100_000, false);
    a.set_state(&s, 100_000, false).unwrap();
    assert_eq!(a.timer_expiry(), Some(Expiry::Ns(100_006)));
    assert_eq!(a.mmio_read(reg::TMCCT, 4, 100_000), 0);
}

#[test]
fn set_state_keeps_tsc_deadline() {
    let mut a = xapic(0);
    w(&mut a, reg::LVT_TIMER, 2 << 17);
    a.set_tsc_deadline(1234);
    let s = a.get_state(0, false);
    a.set_state(&s, 99, false).unwrap();
    assert_eq!(a.timer_expiry(), Some(Expiry::GuestTsc(1234)));
}

// ---- APIC_BASE ----

#[test]
fn apic_base_transitions() {
    let c = caps();
    let mut a = xapic(0x21);
    // xAPIC → x2APIC: ID and LDR derived from the vCPU id.
    let fx = a.set_apic_base(X2APIC_BASE, false, &c).unwrap();
    assert!(fx.addressing_changed);
    assert!(a.x2apic_mode());
    assert_eq!(a.rdmsr(0x802, 0), Ok(0x21));
    assert_eq!(a.rdmsr(0x80d, 0), Ok(0x0002_0002));
    // The guest may not go back to xAPIC directly, the host may.
    assert_eq!(a.set_apic_base(XAPIC_BASE, false, &c), Err(Gp));
    let mut h = a.clone();
    h.set_apic_base(XAPIC_BASE, true, &c).unwrap();
    assert_eq!(r(&h, reg::ID), 0x21 << 24);
    // x2APIC → disabled → xAPIC.
    a.set_apic_base(0xfee0_0000, false, &c).unwrap();
    assert!(!a.hw_enabled() && !a.x2apic_mode());
    // Disabled → x2APIC is refused for the guest.
    assert_eq!(a.set_apic_base(X2APIC_BASE, false, &c), Err(Gp));
    a.set_apic_base(XAPIC_BASE, false, &c).unwrap();
    assert_eq!(r(&a, reg::ID), 0x21 << 24);
    // KVM leaves the x2APIC LDR in place.
    assert_eq!(r(&a, reg::LDR), 0x0002_0002);
    // Reserved bits, EXTD without x2APIC, EXTD without EN.
    assert_eq!(a.set_apic_base(XAPIC_BASE | 1, true, &c), Err(Gp));
    assert_eq!(a.set_apic_base(XAPIC_BASE | 1 << 9, true, &c), Err(Gp));
    assert_eq!(a.set_apic_base(XAPIC_BASE | 1 << 48, true, &c), Err(Gp));
    let no_x2 = GuestCaps { x2apic: false, ..c };
    assert_eq!(a.set_apic_base(X2APIC_BASE, true, &no_x2), Err(Gp));
    assert_eq!(a.set_apic_base(0xfee0_0400, true, &c), Err(Gp));
    // The current value is always accepted, with no effect.
    assert_eq!(
        a.set_apic_base(XAPIC_BASE, false, &no_x2),
        Ok(Effects::default())
    );
    // The page may move.
    a.set_apic_base(0xfed0_0800, false, &c).unwrap();
    assert_eq!(a.mmio_base(), 0xfed0_0000);
}

#[test]
fn rdmsr_tmcct_and_timer_in_x2apic_mode() {
    let mut x = x2apic(0);
    x.wrmsr(0x83e, 0xb, 0).unwrap();
    let fx = x.wrmsr(0x838, 500, 1000).unwrap();
    assert!(fx.timer_changed);
    assert_eq!(x.rdmsr(0x839, 1200), Ok(300));
    assert_eq!(x.wrmsr(0x839, 0, 0), Err(Gp));
}

// ---- MSI and the delivery loop ----

extern crate std;
use std::{vec, vec::Vec};

#[test]
fn msi_decoding_as_kvm_msi_to_lapic_irq() {
    // Logical, redirection hint, dest 0x0f, level-triggered lowest priority.
    let (ipi, redirect) = msi_to_ipi(0xfee0_f00c, 0x1200, 0x0000_c131, false);
    assert!(redirect);
    assert_eq!(ipi.dest, 0x0f);
    assert_eq!(ipi.dest_mode, DestMode::Logical);
    assert_eq!(ipi.delivery_mode, DeliveryMode::LowestPriority);
    assert_eq!(ipi.vector, 0x31);
    assert_eq!(ipi.trigger, Trigger::Level);
    // Always an assert, never a shorthand, whatever data bit 14 says.
    assert!(ipi.level);
    assert_eq!(ipi.shorthand, Shorthand::None);
    // address_hi counts only in the 32-bit ID format.
    assert_eq!(msi_to_ipi(0xfee0_1000, 0x1200, 0x40, false).0.dest, 1);
    assert_eq!(msi_to_ipi(0xfee0_1000, 0x1200, 0x40, true).0.dest, 0x1201);
    let (p, r) = msi_to_ipi(0xfee0_2000, 0, 0x0440, false);
    assert!(!r);
    assert_eq!(p.dest_mode, DestMode::Physical);
    assert_eq!(p.delivery_mode, DeliveryMode::Nmi);
    assert_eq!(p.trigger, Trigger::Edge);
}

fn targets(
    apics: &[Lapic],
    ipi: &Ipi,
    redirect: bool,
    sender: Option<usize>,
) -> (Vec<usize>, DeliveryMode) {
    let mut got = Vec::new();
    let mode = deliver(apics.iter(), ipi, redirect, sender, true, |i, m| {
        assert_eq!(m, deliver_mode(ipi));
        got.push(i)
    });
    (got, mode)
}

/// The mode the delivery loop uses for `ipi`.
fn deliver_mode(ipi: &Ipi) -> DeliveryMode {
    let broadcast = ipi.dest_mode == DestMode::Physical && ipi.dest == 0xff;
    match ipi.delivery_mode {
        DeliveryMode::LowestPriority if broadcast => DeliveryMode::Fixed,
        m => m,
    }
}

fn fixed_to(dest: u32, dest_mode: DestMode, shorthand: Shorthand) -> Ipi {
    Ipi {
        dest,
        dest_mode,
        shorthand,
        delivery_mode: DeliveryMode::Fixed,
        vector: 0x41,
        level: true,
        trigger: Trigger::Edge,
    }
}

#[test]
fn delivery_reaches_every_match_and_skips_disabled_apics() {
    let mut apics = vec![xapic(0), xapic(1), xapic(2), xapic(3)];
    let p = |d| fixed_to(d, DestMode::Physical, Shorthand::None);
    assert_eq!(targets(&apics, &p(2), false, None).0, vec![2]);
    assert_eq!(targets(&apics, &p(0xff), false, None).0, vec![0, 1, 2, 3]);
    assert_eq!(targets(&apics, &p(9), false, None).0, Vec::<usize>::new());
    // A hardware-disabled APIC gets nothing, even a broadcast.
    let base = apics[1].apic_base() & !APIC_BASE_ENABLE;
    apics[1].set_apic_base(base, true, &caps()).unwrap();
    assert_eq!(targets(&apics, &p(0xff), false, None).0, vec![0, 2, 3]);
    // Shorthands are the sender's.
    let all_but = fixed_to(0, DestMode::Physical, Shorthand::AllButSelf);
    assert_eq!(targets(&apics, &all_but, false, Some(2)).0, vec![0, 3]);
    let me = fixed_to(0, DestMode::Physical, Shorthand::ToSelf);
    assert_eq!(targets(&apics, &me, false, Some(3)).0, vec![3]);
    // A device never matches "self".
    assert_eq!(targets(&apics, &me, false, None).0, Vec::<usize>::new());
}

#[test]
fn lowest_priority_picks_one_software_enabled_match_by_vector() {
    let mut apics = vec![xapic(0), xapic(1), xapic(2)];
    for (i, a) in apics.iter_mut().enumerate() {
        w(a, reg::LDR, 1 << (24 + i));
    }
    let mut ipi = fixed_to(0x07, DestMode::Logical, Shorthand::None);
    ipi.delivery_mode = DeliveryMode::LowestPriority;
    // 0x41 % 3 == 2.
    assert_eq!(
        targets(&apics, &ipi, false, None),
        (vec![2], DeliveryMode::LowestPriority)
    );
    // A software-disabled APIC is no candidate: 0x41 % 2 == 1, the second of [0, 1].
    w(&mut apics[2], reg::SPIV, 0xff);
    assert_eq!(targets(&apics, &ipi, false, None).0, vec![1]);
    // The MSI redirection hint makes a fixed message lowest priority.
    let fixed = fixed_to(0x07, DestMode::Logical, Shorthand::None);
    assert_eq!(
        targets(&apics, &fixed, true, None),
        (vec![1], DeliveryMode::Fixed)
    );
    // Lowest priority to physical 0xff is a fixed broadcast.
    let mut b = fixed_to(0xff, DestMode::Physical, Shorthand::None);
    b.delivery_mode = DeliveryMode::LowestPriority;
    assert_eq!(
        targets(&apics, &b, false, None),
        (vec![0, 1, 2], DeliveryMode::Fixed)
    );
    // No candidate: nobody.
    let none = fixed_to(0x08, DestMode::Logical, Shorthand::None);
    assert_eq!(targets(&apics, &none, true, None).0, Vec::<usize>::new());
}

#[test]
fn accepts_predicts_accept() {
    let modes = [
        DeliveryMode::Fixed,
        DeliveryMode::LowestPriority,
        DeliveryMode::Smi,
        DeliveryMode::RemoteRead,
        DeliveryMode::Nmi,
        DeliveryMode::Init,
        DeliveryMode::StartUp,
        DeliveryMode::ExtInt,
    ];
    for spiv in [0xff, 0x1ff] {
        for mode in modes {
            for level in [false, true] {
                for trigger in [Trigger::Edge, Trigger::Level] {
                    let mut a = xapic(0);
                    w(&mut a, reg::SPIV, spiv);
                    let predicted = a.accepts(mode, level, trigger);
                    assert_eq!(predicted, a.accept(mode, 0x50, level, trigger).delivered());
                }
            }
        }
    }
}

#[test]
fn broadcast_destinations_follow_kvms_quirk() {
    // With the quirk: 0xff from a device or an xAPIC sender, all ones from
    // an x2APIC sender.
    assert!(is_broadcast(0xff, None, true, true));
    assert!(!is_broadcast(u32::MAX, None, true, false));
    assert!(is_broadcast(0xff, Some(false), true, false));
    assert!(!is_broadcast(0xff, Some(true), true, true));
    assert!(is_broadcast(u32::MAX, Some(true), true, true));
    // Without: all ones always, 0xff only while an APIC is in xAPIC mode.
    assert!(is_broadcast(u32::MAX, None, false, true));
    assert!(is_broadcast(0xff, None, false, false));
    assert!(!is_broadcast(0xff, None, false, true));
    assert!(!is_broadcast(0xff, Some(true), false, true));
    assert!(!is_broadcast(7, Some(false), false, false));
}
