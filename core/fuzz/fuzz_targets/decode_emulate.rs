//! Fuzz target: arbitrary bytes through the decoder and, if they decode, the emulator.
//!
//! Input layout: byte 0 picks mode and vendor, bytes 1..16 are the
//! instruction, the rest seeds registers, RFLAGS and MMIO read data.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rkvm_core::decode::{decode, Mode, Vendor};
use rkvm_core::emulate::{emulate, Outcome};

#[path = "../../testsupport/cpu.rs"]
mod testcpu;
use testcpu::TestCpu;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let mode = [Mode::Bits16, Mode::Bits32, Mode::Bits64][usize::from(sel % 3)];
    let vendor = if sel & 4 != 0 {
        Vendor::Amd
    } else {
        Vendor::Intel
    };
    let (code, seed) = rest.split_at(rest.len().min(15));
    let Ok(insn) = decode(code, mode, vendor) else {
        return;
    };
    assert!(usize::from(insn.len) <= code.len());

    // 4 KiB of RAM at linear 0, MMIO at 4-8 KiB, faults elsewhere; each
    // segment's base is its number << 8 (ES 0, CS 0x100, ... GS 0x500).
    let mut cpu = TestCpu::new(0x1000, 0x1000..0x2000);
    cpu.segment_bases = [0, 0x100, 0x200, 0x300, 0x400, 0x500];
    // Registers mostly point near the RAM/MMIO boundary so accesses hit both.
    for (i, chunk) in seed.chunks(2).take(17).enumerate() {
        let v = u64::from(chunk[0]) << 5 | u64::from(*chunk.get(1).unwrap_or(&0) & 0x1f);
        if i == 16 {
            cpu.rflags = 2 | (v & 0xcd5);
        } else {
            cpu.gprs[i] = v;
        }
    }
    let resume = [seed.first().copied().unwrap_or(0x5a); 8];
    if let Ok(Outcome::MmioRead { len, .. }) = emulate(&mut cpu, &insn, None) {
        let again = emulate(&mut cpu, &insn, Some(&resume[..usize::from(len)]));
        assert!(!matches!(again, Ok(Outcome::MmioRead { .. })));
    }
});
