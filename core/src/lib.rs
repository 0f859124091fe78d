//! Pure-logic core of rkvm, shared by the kernel module and host tests.
//!
//! Every file here is `#![no_std]`-clean, uses only `core` (no `alloc`, no
//! crates), and has no `unsafe`. The kernel module compiles the same files as
//! one module block (`mod logic` in `rust/rkvm_main.rs`, `#[path]` on the
//! block, a `pub(crate) mod` line per file). Items are `pub` so that host
//! tests and the fuzz targets can reach them; inside the module the block
//! allows `unreachable_pub`, and each item the module does not use carries
//! `#[cfg_attr(rkvm_module, expect(dead_code))]` so that unused code surfaces.
//!
//! Dependencies between files:
//!
//! * `addr.rs` — self-contained: the guest address types (`Gpa`, `Gva`,
//!   `Hva`, `Gfn`).
//! * `clock.rs` — uses `super::uapi`. The VM clock's offset arithmetic
//!   behind `KVM_GET/SET_CLOCK`.
//! * `cpuid.rs` — self-contained. The CPUID `Entry` table with KVM's
//!   `lookup`/`find`, `emulate` (what the guest's CPUID returns, with the
//!   Intel out-of-range fallback), `GuestCaps::from_entries`, and
//!   `supported(host, out)` (rkvm's `KVM_GET_SUPPORTED_CPUID` list).
//! * `debug.rs` — self-contained. Guest debugging as KVM's: what
//!   `KVM_SET_GUEST_DEBUG` keeps, the effective DR0-DR3/DR7, the hidden
//!   single-step TF, DR6 after a #DB (`deliver_db_payload`).
//! * `decode.rs` — self-contained. `decode(bytes, mode, vendor)` gives an
//!   `Insn` (length, prefixes, operands) or a `DecodeError`;
//!   `Insn::control_reg_move`/`debug_reg_move` decode MOV CR/DR.
//! * `emulate.rs` — uses `super::decode`, so it must be a sibling of `decode`.
//!   `emulate(cpu, &insn, resume)` runs one instruction against a `Cpu`
//!   and says what to do next (`Outcome`), or `EmulateError::Unsupported`.
//! * `events.rs` — self-contained. The event queue (one exception, one
//!   interrupt, NMIs) and KVM's injection order, re-injection and #DF
//!   merging.
//! * `kvmclock.rs` — uses `super::cpuid::Entry`. The guest's kvmclock:
//!   its MSRs and CPUID leaves, the pvclock images and their versions, and
//!   the TSC scale.
//! * `ioeventfd.rs` — uses `super::uapi`. KVM's `KVM_IOEVENTFD` rules:
//!   validation, collisions, deassign matching, and which ioeventfd a
//!   write hits, in a table sorted by bus and address.
//! * `lapic/` (`mod.rs`, `regs.rs`, `route.rs`, `timer.rs`) — uses
//!   `super::x86`, `super::cpuid::GuestCaps` and `super::msr`, so it must be
//!   a sibling of them. One vCPU's local APIC as KVM's: `Lapic` with its
//!   xAPIC MMIO page, x2APIC MSRs, APIC_BASE transitions, IRR/ISR/PPR,
//!   interrupt acceptance, destination matching, the timer with time as an
//!   input, and the `KVM_GET/SET_LAPIC` image; effects come back as values.
//! * `memslot.rs`, `uapi.rs`, `vmcb.rs` — self-contained: memory-slot
//!   rules, the KVM UAPI structs and the SVM VMCB, with layout asserts.
//! * `vmcs.rs` — uses `super::x86` for CR bits. The Intel VMCS model:
//!   typed field encodings, control bits and their computation from the
//!   capability MSRs (`Config::compute`), EPT entries, exit reasons and
//!   exit-qualification decoding.
//! * `msr.rs` — uses `super::cpuid` and `super::x86`. MSR numbers and KVM's
//!   rules for the MSRs generic code keeps (EFER, MISC_ENABLE, TSC_AUX, XCR0).
//! * `routing.rs` — uses `super::lapic` and `super::uapi`. `KVM_SET_GSI_ROUTING`'s
//!   rules for the split irqchip (MSI routes only) and the vectors whose EOI
//!   a vCPU reports to the userspace IOAPIC.
//! * `paging.rs` — self-contained. `translate(mem, &cfg, gva, access)` walks
//!   the guest's tables and gives a `Translation` or a `WalkError` (#PF code).
//! * `xsave.rs` — uses `super::uapi`. The guest FPU save area shown as
//!   and loaded from `struct kvm_xsave` and `struct kvm_fpu`, with KVM's
//!   checks.
//! * `x86.rs` — uses `super::cpuid::GuestCaps`, so it must be a sibling of
//!   `cpuid`. KVM's validity rules for CR0/CR3/CR4/EFER, `KVM_SET_SREGS`
//!   and `IA32_APIC_BASE`, and the vCPU RESET values (`x86::reset`).
//!
//! Host-only checks live outside `src/`: `tests/iced_diff.rs` (decoder vs
//! iced-x86), `tests/prop.rs` (proptest) and `fuzz/` (cargo-fuzz). So does
//! their shared test double of `emulate::Cpu`, `testsupport/cpu.rs`, which
//! the unit tests here include too (under `cfg(test)` only).
//! `testsupport/lapic.rs` holds what the LAPIC property test and fuzz target
//! both check after a state round trip.

#![no_std]
#![forbid(unsafe_code)]
// The kernel builds these files with the lints below; keep the host build honest.
#![warn(
    missing_docs,
    unreachable_pub,
    rust_2018_idioms,
    clippy::cast_lossless,
    clippy::as_underscore
)]

pub mod addr;
pub mod clock;
pub mod cpuid;
pub mod debug;
pub mod decode;
pub mod emulate;
pub mod events;
pub mod ioeventfd;
pub mod kvmclock;
pub mod lapic;
pub mod memslot;
pub mod msr;
pub mod paging;
pub mod routing;
pub mod uapi;
pub mod vmcb;
pub mod vmcs;
pub mod x86;
pub mod xsave;

// The test double names this crate `rkvm_core`, as the test and fuzz crates do.
#[cfg(test)]
extern crate self as rkvm_core;
#[cfg(test)]
#[path = "../testsupport/cpu.rs"]
mod testcpu;
