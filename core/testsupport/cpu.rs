//! `TestCpu`: the one test double of `emulate::Cpu`, for the emulator's
//! unit tests (`src/lib.rs` includes it under `cfg(test)`), `tests/prop.rs`
//! and the fuzz target `fuzz/fuzz_targets/decode_emulate.rs`. Each includes
//! this file with `#[path]`. It lives outside `src/` because the kernel module
//! compiles the `src/` files, and test code must not end up there.
//!
//! The guest it models is flat (linear address = offset into `ram`):
//!
//! * RAM at linear `0..ram.len()`;
//! * MMIO on `mmio` (where it is not RAM), reported at GPA
//!   `gva + mmio_gpa_offset`; each MMIO read's address is logged in
//!   `mmio_reads`;
//! * #PF everywhere else, including an access that is not wholly inside
//!   RAM or wholly inside `mmio` (error code W for writes).
//!
//! Accesses must be 1-8 bytes, as `Cpu` promises; anything else panics.

// Each user needs a different part of it.
#![allow(dead_code)]

extern crate alloc;

use alloc::vec;
use alloc::vec::Vec;
use core::ops::Range;

use rkvm_core::decode::Segment;
use rkvm_core::emulate::{Cpu, Exception, MemResult};

/// Guest state and memory for the emulator under test.
pub(crate) struct TestCpu {
    /// RAX..R15.
    pub(crate) gprs: [u64; 16],
    pub(crate) rip: u64,
    pub(crate) rflags: u64,
    /// Guest RAM, at linear address 0.
    pub(crate) ram: Vec<u8>,
    /// Linear addresses that are MMIO (RAM takes precedence).
    pub(crate) mmio: Range<u64>,
    /// MMIO GPA = linear address + this (wrapping).
    pub(crate) mmio_gpa_offset: u64,
    /// Segment bases, indexed by `Segment as usize`.
    pub(crate) segment_bases: [u64; 6],
    /// Linear address of every MMIO read, in order.
    pub(crate) mmio_reads: Vec<u64>,
}

impl TestCpu {
    /// `ram_len` bytes of zeroed RAM and MMIO on `mmio`; RIP 0, RFLAGS 2,
    /// all GPRs and segment bases 0, MMIO GPA = linear address.
    pub(crate) fn new(ram_len: usize, mmio: Range<u64>) -> Self {
        TestCpu {
            gprs: [0; 16],
            rip: 0,
            rflags: 2,
            ram: vec![0; ram_len],
            mmio,
            mmio_gpa_offset: 0,
            segment_bases: [0; 6],
            mmio_reads: Vec::new(),
        }
    }

    /// Sets the cached base of `seg`.
    pub(crate) fn set_segment_base(&mut self, seg: Segment, base: u64) {
        self.segment_bases[seg as usize] = base;
    }

    /// Where an access of `len` bytes at `gva` goes: `Ok(Some(offset))` into
    /// RAM, `Ok(None)` for MMIO, `Err` for a #PF with `error_code`.
    fn locate(&self, gva: u64, len: usize, error_code: u32) -> Result<Option<usize>, MemResult> {
        assert!((1..=8).contains(&len), "access of {len} bytes at {gva:#x}");
        let end = gva.checked_add(len as u64);
        match end {
            Some(end) if end <= self.ram.len() as u64 => Ok(Some(gva as usize)),
            Some(end) if gva >= self.mmio.start && end <= self.mmio.end => Ok(None),
            _ => Err(MemResult::Fault(Exception {
                vector: 14,
                error_code: Some(error_code),
                address: Some(gva),
            })),
        }
    }

    fn mmio_result(&self, gva: u64) -> MemResult {
        MemResult::Mmio {
            gpa: gva.wrapping_add(self.mmio_gpa_offset),
        }
    }
}

impl Cpu for TestCpu {
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
        self.segment_bases[seg as usize]
    }
    fn read_mem(&mut self, gva: u64, data: &mut [u8]) -> MemResult {
        match self.locate(gva, data.len(), 0) {
            Ok(Some(a)) => {
                data.copy_from_slice(&self.ram[a..a + data.len()]);
                MemResult::Done
            }
            Ok(None) => {
                self.mmio_reads.push(gva);
                self.mmio_result(gva)
            }
            Err(fault) => fault,
        }
    }
    fn write_mem(&mut self, gva: u64, data: &[u8]) -> MemResult {
        match self.locate(gva, data.len(), 2) {
            Ok(Some(a)) => {
                self.ram[a..a + data.len()].copy_from_slice(data);
                MemResult::Done
            }
            Ok(None) => self.mmio_result(gva),
            Err(fault) => fault,
        }
    }
}
