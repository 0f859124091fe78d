// SPDX-License-Identifier: GPL-2.0
//! The guest's physical memory map, shared by the VMM (`main.rs`) and the
//! guest image: `build.rs` passes every constant in [`GUEST_SYMBOLS`] to the
//! assembler as `--defsym NAME=value`, so both sides agree by construction.

/// One memory slot (slot 0) of this many bytes at guest-physical address 0.
pub const MEM_SIZE: u64 = 2 << 20;

/// Where the VMM writes the NUL-terminated device path (`/dev/rkvm`) that the
/// guest prints; the guest gets this address in RSI.
pub const NAME_GPA: u64 = 0x0600;

/// Longest device path the VMM passes (the name must end before `CODE_GPA`).
pub const NAME_MAX: usize = (CODE_GPA - NAME_GPA) as usize - 1;

/// Where the guest image is loaded; the vCPU starts here in real mode with
/// CS.base = 0 and IP = `CODE_GPA`.
pub const CODE_GPA: u64 = 0x1000;

/// Top of the guest's stack (it grows down, below the page tables).
pub const STACK_TOP: u64 = 0x8000;

/// The guest's own 4-level page tables, which it fills itself: one PML4, one
/// PDPT and one page directory whose first entry maps the first 2 MiB (all of
/// guest memory) 1:1 with a large page.
pub const PML4_GPA: u64 = 0x9000;
pub const PDPT_GPA: u64 = 0xa000;
pub const PD_GPA: u64 = 0xb000;

/// The 16550 UART at COM1: THR (write) at +0, LSR (read) at +5.
pub const COM1: u16 = 0x3f8;

/// The constants the guest assembly uses, by the names it uses.
#[allow(dead_code)] // used by build.rs only
pub const GUEST_SYMBOLS: &[(&str, u64)] = &[
    ("CODE_GPA", CODE_GPA),
    ("STACK_TOP", STACK_TOP),
    ("PML4_GPA", PML4_GPA),
    ("PDPT_GPA", PDPT_GPA),
    ("PD_GPA", PD_GPA),
    ("COM1", COM1 as u64),
];
