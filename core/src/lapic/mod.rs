//! The local APIC of one vCPU, register by register, as KVM's in-kernel
//! LAPIC behaves (arch/x86/kvm/lapic.c, lapic.h, asm/apicdef.h, and
//! `KVM_GET_LAPIC`/`KVM_SET_LAPIC`/`KVM_CAP_X2APIC_API` in api.rst).
//!
//! Pure state machine: time and delivery are inputs and outputs. The
//! kernel side owns the host timer, the locks and the other vCPUs; a
//! [`Lapic`] never sleeps, allocates or panics on guest input. What an
//! access asks the kernel to do comes back as [`Effects`] (an IPI to route,
//! an EOI to forward, "re-arm the timer", "APIC addressing changed") or as
//! [`Accepted`] (what a delivered interrupt requires of the vCPU: inject an
//! NMI, latch INIT, ...).
//!
//! Uses `super::x86` (APIC_BASE bits and validity, RESET value),
//! `super::cpuid::GuestCaps` and `super::msr` (MSR numbers), so it must be a
//! sibling of those files.
//!
//! Layout: this file holds the types, the state, reset and APIC_BASE;
//! `irq.rs` priorities (IRR/ISR/PPR), acceptance, ack and EOI; `regs.rs`
//! the xAPIC MMIO page, the x2APIC MSRs and `KVM_GET/SET_LAPIC`;
//! `route.rs` IPIs and destination matching; `timer.rs` the APIC timer.
//!
//! Choices, and where this model differs from KVM (on purpose; each is
//! also said where it happens):
//!
//! * As KVM, no ESR bit is ever set (no illegal-vector or illegal-register
//!   errors): vectors 0–15 are accepted like any other, and ESR reads what
//!   `KVM_SET_LAPIC` put there (0 after reset).
//! * As KVM, APR reads 0; lowest-priority arbitration is KVM's vector
//!   hashing ([`lowest_priority_index`]), or its per-APIC counter
//!   ([`Lapic::arbitration_priority`]).
//! * INIT and SIPI are outputs ([`Accepted::Init`], [`Accepted::Sipi`]):
//!   the vCPU keeps KVM's `pending_events`/`sipi_vector` latch.
//! * IPIs, the "self" shorthand and SELF_IPI included, are returned for
//!   the kernel to route ([`Effects::ipi`]); nothing is delivered locally.
//! * An MMIO read KVM refuses reads 0 (KVM leaves the destination buffer
//!   as it was).
//! * The x2APIC ICR is kept split in ICR/ICR2 (KVM's layout on SVM; on VMX
//!   it is one 64-bit word; `KVM_GET_LAPIC` shows both the same).
//! * A divider change does not restart a timer that is not running (KVM
//!   restarts it, firing an expired one-shot again).
//! * Time saturates at `u64::MAX` ns where KVM's signed ktime would wrap.
//! * Not modelled: APICv/AVIC, TPR-access reporting and the vAPIC page
//!   (`KVM_TPR_ACCESS_REPORTING`, `KVM_SET_VAPIC_ADDR`), PV EOI, Hyper-V
//!   SynIC, the LVT0 NMI-watchdog count the in-kernel PIT uses, KVM's
//!   optimized APIC map, timer advancement (`lapic_timer_advance`) and
//!   the hv-timer.

mod irq;
mod regs;
mod route;
#[cfg(test)]
mod tests;
mod timer;

pub use regs::MMIO_SIZE;
#[cfg_attr(rkvm_module, allow(unused_imports, reason = "host tests use them"))]
pub use route::lowest_priority_index;
pub use route::{deliver, is_broadcast, msi_to_ipi};
pub use timer::Expiry;
#[cfg_attr(rkvm_module, allow(unused_imports, reason = "host tests use them"))]
pub use timer::TimerMode;

use super::cpuid::GuestCaps;
use super::x86::{self, APIC_BASE_ENABLE, APIC_BASE_X2APIC};

/// Register offsets in the xAPIC page (`APIC_*` in asm/apicdef.h). The
/// x2APIC MSR of a register is `0x800 + (offset >> 4)`.
pub mod reg {
    /// Local APIC ID.
    pub const ID: u32 = 0x20;
    /// Version (read-only).
    pub const LVR: u32 = 0x30;
    /// Task priority.
    pub const TPR: u32 = 0x80;
    /// Arbitration priority (xAPIC only; KVM reads it as 0).
    pub const APR: u32 = 0x90;
    /// Processor priority (read-only).
    pub const PPR: u32 = 0xa0;
    /// End of interrupt (write-only).
    pub const EOI: u32 = 0xb0;
    /// Remote read (not implemented by KVM).
    pub const RRR: u32 = 0xc0;
    /// Logical destination.
    pub const LDR: u32 = 0xd0;
    /// Destination format (xAPIC only).
    pub const DFR: u32 = 0xe0;
    /// Spurious-interrupt vector.
    pub const SPIV: u32 = 0xf0;
    /// In-service register, 8 × 32 bits at a 16-byte stride.
    pub const ISR: u32 = 0x100;
    /// Trigger-mode register, likewise.
    pub const TMR: u32 = 0x180;
    /// Interrupt-request register, likewise.
    pub const IRR: u32 = 0x200;
    /// Error status.
    pub const ESR: u32 = 0x280;
    /// LVT corrected machine-check interrupt (with `MCG_CMCI_P` only).
    pub const LVT_CMCI: u32 = 0x2f0;
    /// Interrupt command, low half (in x2APIC mode, MSR 0x830 is all 64 bits).
    pub const ICR: u32 = 0x300;
    /// Interrupt command, high half (xAPIC only).
    pub const ICR2: u32 = 0x310;
    /// LVT timer.
    pub const LVT_TIMER: u32 = 0x320;
    /// LVT thermal sensor.
    pub const LVT_THERMAL: u32 = 0x330;
    /// LVT performance-monitoring counters.
    pub const LVT_PMC: u32 = 0x340;
    /// LVT LINT0.
    pub const LVT_LINT0: u32 = 0x350;
    /// LVT LINT1.
    pub const LVT_LINT1: u32 = 0x360;
    /// LVT error.
    pub const LVT_ERROR: u32 = 0x370;
    /// Timer initial count.
    pub const TMICT: u32 = 0x380;
    /// Timer current count (read-only).
    pub const TMCCT: u32 = 0x390;
    /// Timer divide configuration.
    pub const TDCR: u32 = 0x3e0;
    /// Self IPI (x2APIC only, write-only).
    pub const SELF_IPI: u32 = 0x3f0;
}

/// LVT mask bit (`APIC_LVT_MASKED`).
pub const LVT_MASKED: u32 = 1 << 16;
/// SPIV: APIC software enable.
pub const SPIV_ENABLED: u32 = 1 << 8;
/// SPIV: suppress EOI broadcast (writable only if the LVR offers it).
pub const SPIV_DIRECTED_EOI: u32 = 1 << 12;
/// LVR: EOI-broadcast suppression supported.
pub const LVR_DIRECTED_EOI: u32 = 1 << 24;
/// The version KVM reports (`APIC_VERSION`: an integrated xAPIC).
pub const APIC_VERSION: u32 = 0x14;
/// Size of `struct kvm_lapic_state`.
pub const STATE_SIZE: usize = 1024;

const VECTOR_MASK: u32 = 0xff;
/// LVT delivery-status bit; KVM lets it be written (`APIC_SEND_PENDING`).
const SEND_PENDING: u32 = 1 << 12;
const MODE_MASK: u32 = 0x700;
/// What every LVT keeps of a write (`LVT_MASK`).
const LVT_BASE_MASK: u32 = LVT_MASKED | SEND_PENDING | VECTOR_MASK;
/// LINT0/LINT1 also keep polarity, remote IRR and trigger (`LINT_MASK`).
const LINT_MASK: u32 = LVT_BASE_MASK | MODE_MASK | (1 << 13) | (1 << 14) | LVT_LEVEL;
const LVT_LEVEL: u32 = 1 << 15;
/// DFR cluster model (`APIC_DFR_CLUSTER`); flat is all ones.
const DFR_CLUSTER: u32 = 0x0fff_ffff;

/// A local interrupt source: one LVT entry, in KVM's `enum lapic_lvt_entry`
/// order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lvt {
    /// LVT timer.
    Timer,
    /// LVT thermal sensor.
    Thermal,
    /// LVT performance counters.
    PerfCounter,
    /// LINT0 (where the 8259 PIC's output arrives).
    Lint0,
    /// LINT1 (NMI on PCs).
    Lint1,
    /// LVT error.
    Error,
    /// LVT CMCI (present only with [`Config::cmci`]).
    Cmci,
}

impl Lvt {
    /// Every LVT entry, in index order.
    pub const ALL: [Lvt; 7] = [
        Lvt::Timer,
        Lvt::Thermal,
        Lvt::PerfCounter,
        Lvt::Lint0,
        Lvt::Lint1,
        Lvt::Error,
        Lvt::Cmci,
    ];

    /// The entry's register offset (`APIC_LVTx`).
    pub const fn offset(self) -> u32 {
        match self {
            Lvt::Cmci => reg::LVT_CMCI,
            _ => reg::LVT_TIMER + 0x10 * self.index(),
        }
    }

    const fn index(self) -> u32 {
        self as u32
    }

    /// What a write keeps (`apic_lvt_mask`); the timer also keeps the
    /// mode bits the guest's CPUID allows, added by the caller.
    const fn write_mask(self) -> u32 {
        match self {
            Lvt::Timer | Lvt::Error => LVT_BASE_MASK,
            Lvt::Thermal | Lvt::PerfCounter | Lvt::Cmci => LVT_BASE_MASK | MODE_MASK,
            Lvt::Lint0 | Lvt::Lint1 => LINT_MASK,
        }
    }

    /// The entry at register `offset`, if it is an LVT (`get_lvt_index`).
    const fn at(offset: u32) -> Option<Lvt> {
        match offset {
            reg::LVT_CMCI => Some(Lvt::Cmci),
            reg::LVT_TIMER => Some(Lvt::Timer),
            reg::LVT_THERMAL => Some(Lvt::Thermal),
            reg::LVT_PMC => Some(Lvt::PerfCounter),
            reg::LVT_LINT0 => Some(Lvt::Lint0),
            reg::LVT_LINT1 => Some(Lvt::Lint1),
            reg::LVT_ERROR => Some(Lvt::Error),
            _ => None,
        }
    }
}

/// Which LVT timer modes the guest may select: KVM's `timer_mode_mask`,
/// set from the guest's CPUID leaf 1 by `KVM_SET_CPUID2`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerModes {
    /// No CPUID leaf 1 yet: mask 0, the mode bits of LVTT are dropped.
    OneShotOnly,
    /// Leaf 1 without TSC-deadline: bit 17 (periodic) only.
    Periodic,
    /// Leaf 1 with TSC-deadline (`CPUID.1:ECX[24]`): bits 18:17.
    TscDeadline,
}

impl TimerModes {
    const fn mask(self) -> u32 {
        match self {
            TimerModes::OneShotOnly => 0,
            TimerModes::Periodic => 1 << 17,
            TimerModes::TscDeadline => 3 << 17,
        }
    }
}

/// What the rest of KVM decides about this LAPIC. [`Config::DEFAULT`] is a
/// vCPU just created, before `KVM_SET_CPUID2`, with KVM's default module
/// parameters and quirks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// The VM's boot vCPU (`KVM_SET_BOOT_CPU_ID`, default 0): it gets
    /// APIC_BASE.BSP at RESET and, with [`Config::lint0_reenabled`], an
    /// unmasked ExtINT LINT0.
    pub bsp_vcpu_id: u32,
    /// LVT timer modes the guest may select.
    pub timer_modes: TimerModes,
    /// Offer EOI-broadcast suppression (LVR bit 24, SPIV bit 12). KVM does
    /// when the guest's CPUID has x2APIC and the IOAPIC is not in the
    /// kernel (split irqchip): its in-kernel IOAPIC has no EOI register.
    pub directed_eoi: bool,
    /// `MCG_CAP.MCG_CMCI_P`: a seventh LVT, CMCI, exists. Without it KVM
    /// reports a max-LVT field of 5 (6 entries).
    pub cmci: bool,
    /// Nanoseconds per APIC bus cycle (`KVM_CAP_X86_APIC_BUS_CYCLES_NS`,
    /// default `APIC_BUS_CYCLE_NS_DEFAULT` = 1: a 1 GHz bus).
    pub bus_cycle_ns: u32,
    /// Shortest period of the periodic timer (module parameter
    /// `min_timer_period_us`, default 200 µs): shorter periods are
    /// stretched to it. One-shot and TSC-deadline are not limited.
    pub min_period_ns: u64,
    /// `KVM_X86_QUIRK_LINT0_REENABLED` (on by default): RESET and INIT
    /// leave the boot vCPU's LINT0 unmasked in ExtINT mode, so the PIC
    /// reaches it without the guest programming LINT0.
    pub lint0_reenabled: bool,
    /// The guest's CPUID is Intel-compatible: delivering a performance
    /// counter interrupt then sets LVTPC's mask, as Intel CPUs do.
    pub intel_compatible: bool,
}

impl Config {
    /// KVM's values for a new vCPU.
    pub const DEFAULT: Config = Config {
        bsp_vcpu_id: 0,
        timer_modes: TimerModes::OneShotOnly,
        directed_eoi: false,
        cmci: false,
        bus_cycle_ns: 1,
        min_period_ns: 200_000,
        lint0_reenabled: true,
        intel_compatible: false,
    };

    const fn nr_lvt(&self) -> u32 {
        if self.cmci {
            7
        } else {
            6
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config::DEFAULT
    }
}

/// An interrupt's delivery mode (ICR/LVT/MSI bits 10:8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryMode {
    /// Fixed: the vector goes to IRR.
    Fixed,
    /// Lowest priority: fixed, to one of the destinations.
    LowestPriority,
    /// System management interrupt.
    Smi,
    /// Remote read; KVM uses it for its PV "kick CPU" (`KVM_HC_KICK_CPU`).
    RemoteRead,
    /// Non-maskable interrupt.
    Nmi,
    /// INIT.
    Init,
    /// Start-up IPI (SIPI).
    StartUp,
    /// External interrupt: the vector comes from the 8259 PIC.
    ExtInt,
}

impl DeliveryMode {
    /// The mode in bits 10:8 of `v` (other bits ignored).
    pub const fn from_bits(v: u32) -> DeliveryMode {
        match (v >> 8) & 7 {
            0 => DeliveryMode::Fixed,
            1 => DeliveryMode::LowestPriority,
            2 => DeliveryMode::Smi,
            3 => DeliveryMode::RemoteRead,
            4 => DeliveryMode::Nmi,
            5 => DeliveryMode::Init,
            6 => DeliveryMode::StartUp,
            _ => DeliveryMode::ExtInt,
        }
    }
}

/// Trigger mode of an interrupt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// Edge-triggered.
    Edge,
    /// Level-triggered: the vector's TMR bit is set, and its EOI is
    /// reported to the IOAPIC.
    Level,
}

/// What an interrupt delivered to this APIC asks of its vCPU
/// (`__apic_accept_irq`). Anything but [`Accepted::Dropped`] needs a
/// `KVM_REQ_EVENT` and a kick of the vCPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accepted {
    /// Discarded (KVM's 0): APIC disabled for a fixed interrupt, a
    /// level-triggered deassert, INIT deassert, ExtINT.
    Dropped,
    /// Fixed or lowest priority: the vector's IRR bit is set (and its TMR
    /// bit follows the trigger).
    Interrupt(u8),
    /// Inject an NMI.
    Nmi,
    /// Inject an SMI (if the vCPU has SMM; KVM then also counts it accepted).
    Smi,
    /// Latch INIT (`KVM_APIC_INIT`).
    Init,
    /// Latch a SIPI with this vector (`KVM_APIC_SIPI`); it starts the vCPU
    /// only in wait-for-SIPI.
    Sipi(u8),
    /// KVM's PV unhalt (`pv_unhalted`): wake the vCPU.
    RemoteRead,
}

impl Accepted {
    /// Whether KVM counts the interrupt as delivered (its return of 1).
    pub const fn delivered(self) -> bool {
        !matches!(self, Accepted::Dropped)
    }
}

/// An IPI the guest sent (ICR or SELF_IPI write), for the kernel to route
/// to every APIC that [`Lapic::matches`] it, this one included: the model
/// never delivers to itself, not even the "self" shorthand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipi {
    /// Destination: 8 bits (ICR2 31:24) in xAPIC mode, 32 in x2APIC mode.
    pub dest: u32,
    /// Physical or logical destination.
    pub dest_mode: DestMode,
    /// Destination shorthand.
    pub shorthand: Shorthand,
    /// Delivery mode.
    pub delivery_mode: DeliveryMode,
    /// Vector.
    pub vector: u8,
    /// ICR level bit (assert).
    pub level: bool,
    /// Trigger mode.
    pub trigger: Trigger,
}

/// Destination mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DestMode {
    /// The destination is an APIC ID.
    Physical,
    /// The destination is matched against LDR (and DFR in xAPIC mode).
    Logical,
}

/// ICR destination shorthand (bits 19:18).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shorthand {
    /// None: use the destination field.
    None,
    /// The sender only.
    ToSelf,
    /// All APICs, the sender included.
    All,
    /// All APICs but the sender.
    AllButSelf,
}

/// Who sends a message being matched against an APIC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sender {
    /// An IPI from a local APIC; `is_self` when that APIC is the one
    /// being matched.
    Apic {
        /// The sender is the APIC being matched.
        is_self: bool,
    },
    /// An IOAPIC or MSI message. With `broadcast_quirk` (KVM's default;
    /// off with `KVM_X2APIC_API_DISABLE_BROADCAST_QUIRK`) destination 0xff
    /// is a broadcast for APICs in x2APIC mode too.
    Device {
        /// KVM's x2APIC broadcast quirk is in force.
        broadcast_quirk: bool,
    },
}

/// An EOI that retired an in-service vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Eoi {
    /// The vector whose ISR bit was cleared.
    pub vector: u8,
    /// Its TMR bit: it was level-triggered. The in-kernel IOAPIC uses this
    /// (and SPIV's directed-EOI bit) to clear remote IRR. With a split
    /// irqchip KVM instead exits with `KVM_EXIT_IOAPIC_EOI` for every
    /// vector in the vCPU's `ioapic_handled_vectors` (those of
    /// level-triggered userspace IOAPIC routes), whatever TMR and SPIV
    /// say; that filter is the kernel's.
    pub level: bool,
}

/// What an access asks of the kernel besides its value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Effects {
    /// An IPI to route.
    pub ipi: Option<Ipi>,
    /// An EOI to forward to the IOAPIC (see [`Eoi`]).
    pub eoi: Option<Eoi>,
    /// [`Lapic::timer_expiry`] changed: cancel the host timer and arm the
    /// new expiry, if any.
    pub timer_changed: bool,
    /// What destination matching sees changed (APIC ID, LDR, DFR, software
    /// enable, APIC_BASE mode): KVM recomputes its APIC map.
    pub addressing_changed: bool,
    /// A different interrupt became deliverable ([`Lapic::pending_vector`]
    /// changed to `Some`): `KVM_REQ_EVENT`.
    pub event: bool,
}

/// An access that faults with #GP (an x2APIC MSR, or a guest APIC_BASE
/// write KVM refuses; a host write is refused rather than faulted).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gp;

/// `KVM_SET_LAPIC` refused (`EINVAL`): with the 32-bit x2APIC ID format,
/// the ID in the state is not the vCPU's x2APIC ID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidState;

/// Bank of 256 vector bits in the register page.
#[derive(Clone, Copy)]
enum Bank {
    Isr = reg::ISR as isize,
    Tmr = reg::TMR as isize,
    Irr = reg::IRR as isize,
}

/// The local APIC of one vCPU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lapic {
    vcpu_id: u32,
    cfg: Config,
    apic_base: u64,
    /// The first 1 KiB of the register page, as 32-bit words (the layout
    /// of `struct kvm_lapic_state`); KVM's page has nothing beyond it.
    regs: [u32; STATE_SIZE / 4],
    timer: timer::Timer,
    /// KVM's `apic_arb_prio`: lowest-priority deliveries received.
    arb_prio: u32,
}

/// What [`Effects`] is computed from: taken before an access, compared after.
struct Before {
    expiry: Option<Expiry>,
    addressing: (u32, u32, u32, bool, u64),
    pending: Option<u8>,
}

impl Lapic {
    /// The LAPIC of vCPU `vcpu_id` as `KVM_CREATE_VCPU` leaves it
    /// (`kvm_create_lapic`, then `kvm_lapic_reset` for RESET).
    pub fn new(vcpu_id: u32, cfg: Config) -> Lapic {
        let mut apic = Lapic {
            vcpu_id,
            cfg,
            // kvm_create_lapic stores EN so that RESET's base write sees
            // no enable transition.
            apic_base: APIC_BASE_ENABLE,
            regs: [0; STATE_SIZE / 4],
            timer: timer::Timer::default(),
            arb_prio: 0,
        };
        apic.reset(false);
        apic
    }

    /// `kvm_lapic_reset`: RESET (`init` false) or INIT. RESET also sets
    /// APIC_BASE (xAPIC mode, BSP for the boot vCPU) and the xAPIC ID; INIT
    /// keeps both, and keeps ID and LDR in x2APIC mode. Both stop the
    /// timer, mask every LVT, set DFR to flat, SPIV to 0xff (software
    /// disabled) and clear TPR, ESR, ICR, the timer registers and
    /// IRR/ISR/TMR.
    pub fn reset(&mut self, init: bool) -> Effects {
        let before = self.before();
        if !init {
            self.write_base(x86::reset::apic_base(self.vcpu_id, self.cfg.bsp_vcpu_id));
        }
        self.timer.cancel();
        if !init {
            self.set_xapic_id(self.vcpu_id);
        }
        self.set_version();
        for lvt in self.lvts() {
            self.set_reg(lvt.offset(), LVT_MASKED);
        }
        self.update_lvtt();
        if self.vcpu_id == self.cfg.bsp_vcpu_id && self.cfg.lint0_reenabled {
            self.set_reg(reg::LVT_LINT0, 0x700);
        }
        self.set_reg(reg::DFR, u32::MAX);
        self.set_reg(reg::SPIV, 0xff);
        self.set_reg(reg::TPR, 0);
        if !self.x2apic_mode() {
            self.set_reg(reg::LDR, 0);
        }
        for r in [reg::ESR, reg::ICR, reg::ICR2, reg::TDCR, reg::TMICT] {
            self.set_reg(r, 0);
        }
        for i in 0..8 {
            for bank in [Bank::Irr, Bank::Isr, Bank::Tmr] {
                self.set_reg(bank as u32 + 0x10 * i, 0);
            }
        }
        self.update_ppr();
        self.arb_prio = 0;
        self.after(before, Effects::default())
    }

    /// Replace the configuration (after `KVM_SET_CPUID2`, an `MCG_CAP`
    /// write, ...). As KVM, the version register follows at once, a new
    /// CMCI entry starts masked, and a new timer-mode mask applies from the
    /// next LVTT write.
    pub fn set_config(&mut self, cfg: Config) {
        for lvt in Lvt::ALL {
            if lvt.index() >= self.cfg.nr_lvt() && lvt.index() < cfg.nr_lvt() {
                self.set_reg(lvt.offset(), LVT_MASKED);
            }
        }
        self.cfg = cfg;
        self.set_version();
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The vCPU id, which is also the x2APIC ID.
    pub fn vcpu_id(&self) -> u32 {
        self.vcpu_id
    }

    /// `IA32_APIC_BASE`.
    pub fn apic_base(&self) -> u64 {
        self.apic_base
    }

    /// Guest-physical address of the xAPIC page (`base_address`).
    pub fn mmio_base(&self) -> u64 {
        self.apic_base & !0xfff
    }

    /// Whether the APIC is globally enabled (APIC_BASE.EN; KVM's
    /// `kvm_apic_hw_enabled`, `kvm_apic_present`).
    pub fn hw_enabled(&self) -> bool {
        self.apic_base & APIC_BASE_ENABLE != 0
    }

    /// Whether the APIC is software-enabled (SPIV bit 8).
    pub fn sw_enabled(&self) -> bool {
        self.reg(reg::SPIV) & SPIV_ENABLED != 0
    }

    /// Both enables: fixed interrupts are accepted (`apic_enabled`).
    pub fn enabled(&self) -> bool {
        self.hw_enabled() && self.sw_enabled()
    }

    /// Whether the APIC is in x2APIC mode (APIC_BASE.EXTD).
    pub fn x2apic_mode(&self) -> bool {
        self.apic_base & APIC_BASE_X2APIC != 0
    }

    /// The xAPIC ID (bits 31:24 of the ID register, `kvm_xapic_id`).
    pub fn xapic_id(&self) -> u8 {
        (self.reg(reg::ID) >> 24) as u8
    }

    /// The raw 32-bit word at `offset` of the register page (0 beyond the
    /// first 1 KiB). Unlike [`Lapic::mmio_read`], no read rules apply:
    /// TMCCT reads as stored (0), write-only and reserved words as stored.
    pub fn register(&self, offset: u32) -> u32 {
        if offset >= STATE_SIZE as u32 {
            return 0;
        }
        self.reg(offset)
    }

    fn reg(&self, offset: u32) -> u32 {
        self.regs[(offset as usize >> 2) % (STATE_SIZE / 4)]
    }

    fn set_reg(&mut self, offset: u32, v: u32) {
        self.regs[(offset as usize >> 2) % (STATE_SIZE / 4)] = v;
    }

    /// The LVT entries that exist (`nr_lvt_entries`).
    fn lvts(&self) -> impl Iterator<Item = Lvt> {
        let n = self.cfg.nr_lvt();
        Lvt::ALL.into_iter().filter(move |l| l.index() < n)
    }

    fn lvt_supported(&self, lvt: Lvt) -> bool {
        lvt.index() < self.cfg.nr_lvt()
    }

    /// `kvm_apic_set_version`.
    fn set_version(&mut self) {
        let mut v = APIC_VERSION | ((self.cfg.nr_lvt() - 1) << 16);
        if self.cfg.directed_eoi {
            v |= LVR_DIRECTED_EOI;
        }
        self.set_reg(reg::LVR, v);
    }

    /// `kvm_apic_set_xapic_id`: the id is truncated to 8 bits, as KVM's `u8`.
    fn set_xapic_id(&mut self, id: u32) {
        self.set_reg(reg::ID, (id & 0xff) << 24);
    }

    /// `kvm_apic_set_x2apic_id`: ID is the vCPU id, LDR derived from it.
    fn set_x2apic_id(&mut self) {
        self.set_reg(reg::ID, self.vcpu_id);
        self.set_reg(reg::LDR, x2apic_ldr(self.vcpu_id));
    }

    // ---- APIC_BASE ----

    /// `IA32_APIC_BASE` write (`kvm_apic_set_base`). Writing the current
    /// value always succeeds. Otherwise reserved bits (7:0, 9, at or above
    /// MAXPHYADDR, EXTD without x2APIC in `caps`) and EXTD without EN are
    /// refused, and for the guest (`host_initiated` false) also x2APIC →
    /// xAPIC and disabled → x2APIC ([`x86::valid_apic_base_guest`]).
    ///
    /// Enabling sets the xAPIC ID back to the vCPU id; entering x2APIC sets
    /// ID to the vCPU id and LDR to `((id >> 4) << 16) | (1 << (id & 0xf))`;
    /// leaving it for xAPIC sets the xAPIC ID. As in KVM, disabling resets
    /// nothing else: registers, timer and pending interrupts stay (the
    /// SDM's "state lost on disable" is not modelled).
    pub fn set_apic_base(
        &mut self,
        value: u64,
        host_initiated: bool,
        caps: &GuestCaps,
    ) -> Result<Effects, Gp> {
        let ok = if host_initiated {
            x86::valid_apic_base(value, self.apic_base, caps)
        } else {
            x86::valid_apic_base_guest(value, self.apic_base, caps)
        };
        if !ok {
            return Err(Gp);
        }
        let before = self.before();
        self.write_base(value);
        Ok(self.after(before, Effects::default()))
    }

    /// `__kvm_apic_set_base` without the checks.
    fn write_base(&mut self, value: u64) {
        let changed = self.apic_base ^ value;
        self.apic_base = value;
        if changed & APIC_BASE_ENABLE != 0 && value & APIC_BASE_ENABLE != 0 {
            self.set_xapic_id(self.vcpu_id);
        }
        if changed & APIC_BASE_X2APIC != 0 {
            if value & APIC_BASE_X2APIC != 0 {
                self.set_x2apic_id();
            } else if value & APIC_BASE_ENABLE != 0 {
                self.set_xapic_id(self.vcpu_id);
            }
        }
    }

    // ---- effects ----

    fn before(&self) -> Before {
        Before {
            expiry: self.timer_expiry(),
            addressing: self.addressing(),
            pending: self.pending_vector(),
        }
    }

    fn addressing(&self) -> (u32, u32, u32, bool, u64) {
        (
            self.reg(reg::ID),
            self.reg(reg::LDR),
            self.reg(reg::DFR),
            self.sw_enabled(),
            self.apic_base & (APIC_BASE_ENABLE | APIC_BASE_X2APIC),
        )
    }

    fn after(&self, before: Before, mut fx: Effects) -> Effects {
        fx.timer_changed = before.expiry != self.timer_expiry();
        fx.addressing_changed = before.addressing != self.addressing();
        let pending = self.pending_vector();
        fx.event |= pending.is_some() && pending != before.pending;
        fx
    }
}

/// The x2APIC LDR of APIC `id` (`kvm_apic_calc_x2apic_ldr`): cluster
/// `id >> 4` in bits 31:16, bit `id & 0xf` set in 15:0. Shifting out the
/// cluster's top bits for ids of 2^20 and above is what KVM's u32 does.
pub const fn x2apic_ldr(id: u32) -> u32 {
    ((id >> 4) << 16) | (1 << (id & 0xf))
}
