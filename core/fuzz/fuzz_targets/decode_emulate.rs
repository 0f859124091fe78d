//! Fuzz target: arbitrary bytes through the decoder and, if they decode, the emulator.
//!
//! Input layout: byte 0 picks mode and vendor, bytes 1..16 are the
//! instruction, the rest seeds registers, RFLAGS and MMIO read data.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rkvm_core::decode::{decode, Mode, Segment, Vendor};
use rkvm_core::emulate::{emulate, Cpu, Exception, MemResult, Outcome};

/// 4 KiB of RAM at linear 0, MMIO at 4-8 KiB, faults elsewhere.
struct FuzzCpu {
    gprs: [u64; 16],
    rip: u64,
    rflags: u64,
    ram: [u8; 0x1000],
}

impl Cpu for FuzzCpu {
    fn gpr(&self, reg: u8) -> u64 {
        self.gprs[usize::from(reg)]
    }
    fn set_gpr(&mut self, reg: u8, val: u64) {
        self.gprs[usize::from(reg)] = val;
    }
    fn rip(&self) -> u64 {
        self.rip
    }
    fn set_rip(&mut self, rip: u64) {
        self.rip = rip;
    }
    fn rflags(&self) -> u64 {
        self.rflags
    }
    fn set_rflags(&mut self, rflags: u64) {
        self.rflags = rflags;
    }
    fn segment_base(&self, seg: Segment) -> u64 {
        (seg as u64) << 8
    }
    fn read_mem(&mut self, gva: u64, data: &mut [u8]) -> MemResult {
        access(gva, data.len(), |a| {
            data.copy_from_slice(&self.ram[a..a + data.len()])
        })
    }
    fn write_mem(&mut self, gva: u64, data: &[u8]) -> MemResult {
        access(gva, data.len(), |a| {
            self.ram[a..a + data.len()].copy_from_slice(data)
        })
    }
}

fn access(gva: u64, len: usize, copy: impl FnOnce(usize)) -> MemResult {
    assert!((1..=8).contains(&len));
    match gva.checked_add(len as u64) {
        Some(end) if end <= 0x1000 => {
            copy(gva as usize);
            MemResult::Done
        }
        Some(end) if gva >= 0x1000 && end <= 0x2000 => MemResult::Mmio { gpa: gva },
        _ => MemResult::Fault(Exception {
            vector: 14,
            error_code: Some(0),
            address: Some(gva),
        }),
    }
}

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

    let mut cpu = FuzzCpu {
        gprs: [0; 16],
        rip: 0,
        rflags: 2,
        ram: [0; 0x1000],
    };
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
