//! Fuzz target: arbitrary bytes as guest paging structures for the page walker.
//!
//! Input layout: byte 0 picks the paging mode and flags, bytes 1..9 are the
//! linear address, the rest is guest memory holding the tables (CR3 = 0).

#![no_main]

use libfuzzer_sys::fuzz_target;
use rkvm_core::paging::{translate, Access, GuestPhys, MemError, PagingMode, WalkConfig};

struct Mem(Vec<u8>);

impl Mem {
    fn slice(&self, gpa: u64, n: usize) -> Result<&[u8], MemError> {
        let a = usize::try_from(gpa).map_err(|_| MemError)?;
        self.0
            .get(a..a.checked_add(n).ok_or(MemError)?)
            .ok_or(MemError)
    }
}

impl GuestPhys for Mem {
    fn read_u32(&mut self, gpa: u64) -> Result<u32, MemError> {
        Ok(u32::from_le_bytes(self.slice(gpa, 4)?.try_into().unwrap()))
    }
    fn read_u64(&mut self, gpa: u64) -> Result<u64, MemError> {
        Ok(u64::from_le_bytes(self.slice(gpa, 8)?.try_into().unwrap()))
    }
    fn cmpxchg_u32(&mut self, gpa: u64, old: u32, new: u32) -> Result<bool, MemError> {
        if self.read_u32(gpa)? != old {
            return Ok(false);
        }
        let a = gpa as usize;
        self.0[a..a + 4].copy_from_slice(&new.to_le_bytes());
        Ok(true)
    }
    fn cmpxchg_u64(&mut self, gpa: u64, old: u64, new: u64) -> Result<bool, MemError> {
        if self.read_u64(gpa)? != old {
            return Ok(false);
        }
        let a = gpa as usize;
        self.0[a..a + 8].copy_from_slice(&new.to_le_bytes());
        Ok(true)
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 9 {
        return;
    }
    let sel = data[0];
    let gva = u64::from_le_bytes(data[1..9].try_into().unwrap());
    let mode = [
        PagingMode::Off,
        PagingMode::Bits32,
        PagingMode::Pae,
        PagingMode::Long4,
        PagingMode::Long5,
    ][usize::from(sel % 5)];
    let cfg = WalkConfig {
        mode,
        cr3: 0,
        wp: sel & 8 != 0,
        pse: sel & 16 != 0,
        smep: sel & 32 != 0,
        smap: sel & 64 != 0,
        nxe: sel & 128 != 0,
        ac: false,
        maxphyaddr: 36 + (sel % 7) * 2,
        gbpages: sel & 1 != 0,
        amd: sel & 2 != 0,
    };
    let mut mem = Mem(data[9..].to_vec());
    for access in [Access::READ, Access::WRITE.user(true), Access::FETCH] {
        if let Ok(t) = translate(&mut mem, &cfg, gva, access) {
            assert_eq!(t.gpa & 0xfff, gva & 0xfff);
        }
    }
});
