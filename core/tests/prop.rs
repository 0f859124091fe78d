//! Property tests for the decoder, the emulator's flag arithmetic, and the page walker.

use proptest::prelude::*;
use rkvm_core::decode::{decode, DecodeError, Mode, Vendor};
use rkvm_core::emulate::{self, Outcome, FLAGS_ARITH};
use rkvm_core::paging::{self, Access, GuestPhys, MemError, PagingMode, WalkConfig};

fn mode() -> impl Strategy<Value = Mode> {
    prop_oneof![Just(Mode::Bits16), Just(Mode::Bits32), Just(Mode::Bits64)]
}

fn vendor() -> impl Strategy<Value = Vendor> {
    prop_oneof![Just(Vendor::Intel), Just(Vendor::Amd)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    /// A decoded length is within bounds and depends only on the bytes it covers.
    #[test]
    fn decode_length_is_self_consistent(bytes in prop::collection::vec(any::<u8>(), 0..20), mode in mode(), vendor in vendor()) {
        if let Ok(i) = decode(&bytes, mode, vendor) {
            let len = usize::from(i.len);
            prop_assert!((1..=15).contains(&len));
            prop_assert!(len <= bytes.len());
            prop_assert_eq!(decode(&bytes[..len], mode, vendor), Ok(i));
            prop_assert_eq!(decode(&bytes[..len - 1], mode, vendor), Err(DecodeError::Truncated));
        }
    }
}

#[path = "../testsupport/cpu.rs"]
mod testcpu;
use testcpu::TestCpu;

/// Flat 8 KiB guest for the emulator properties: whatever is not RAM is
/// MMIO (at GPA = linear address), so accesses never fault.
fn flat_cpu(gprs: [u64; 16], rflags: u64) -> TestCpu {
    let mut cpu = TestCpu::new(0x2000, 0..u64::MAX);
    cpu.gprs = gprs;
    cpu.rflags = rflags;
    cpu
}

/// Reference model of the eight ALU operations on `bits`-wide operands.
fn reference(op: u8, a: u64, b: u64, cf: bool, bits: u32) -> (u64, u64) {
    let m = if bits == 64 {
        u64::MAX
    } else {
        (1 << bits) - 1
    };
    let (a, b) = (a & m, b & m);
    let sa = ((a << (64 - bits)) as i64 >> (64 - bits)) as i128;
    let sb = ((b << (64 - bits)) as i64 >> (64 - bits)) as i128;
    let (min, max) = (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1);
    let c = u64::from(cf && (op == 2 || op == 3));
    let mut f = 0;
    let res = match op {
        0 | 2 => {
            let r = u128::from(a) + u128::from(b) + u128::from(c);
            if r > u128::from(m) {
                f |= 1;
            }
            if (a & 0xf) + (b & 0xf) + c > 0xf {
                f |= 0x10;
            }
            let s = sa + sb + i128::from(c);
            if s < min || s > max {
                f |= 0x800;
            }
            r as u64 & m
        }
        3 | 5 | 7 => {
            if u128::from(a) < u128::from(b) + u128::from(c) {
                f |= 1;
            }
            if a & 0xf < (b & 0xf) + c {
                f |= 0x10;
            }
            let s = sa - sb - i128::from(c);
            if s < min || s > max {
                f |= 0x800;
            }
            a.wrapping_sub(b).wrapping_sub(c) & m
        }
        1 => a | b,
        4 => a & b,
        _ => a ^ b,
    };
    if res == 0 {
        f |= 0x40;
    }
    if res >> (bits - 1) & 1 != 0 {
        f |= 0x80;
    }
    if (res as u8).count_ones().is_multiple_of(2) {
        f |= 0x4;
    }
    (if op == 7 { a } else { res }, f)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    /// `op [mem], reg` matches the reference for every ALU op and size.
    #[test]
    fn alu_on_memory_matches_reference(op in 0u8..8, size_sel in 0usize..4, a: u64, b: u64, cf: bool) {
        let size = [1u8, 2, 4, 8][size_sel];
        let mut bytes = Vec::new();
        match size {
            2 => bytes.push(0x66),
            8 => bytes.push(0x48),
            _ => {}
        }
        // op r/m, reg with [0x100] absolute and reg = rcx.
        bytes.extend([(op << 3) | u8::from(size != 1), 0x0c, 0x25, 0x00, 0x01, 0, 0]);
        let insn = decode(&bytes, Mode::Bits64, Vendor::Intel).unwrap();
        let mut cpu = flat_cpu([0; 16], 2 | u64::from(cf));
        cpu.gprs[1] = b;
        cpu.ram[0x100..0x108].copy_from_slice(&a.to_le_bytes());
        prop_assert_eq!(emulate::emulate(&mut cpu, &insn, None), Ok(Outcome::Done { rep_remaining: 0 }));
        let bits = u32::from(size) * 8;
        let (want, flags) = reference(op, a, b, cf, bits);
        let got = u64::from_le_bytes(cpu.ram[0x100..0x108].try_into().unwrap());
        let m = if bits == 64 { u64::MAX } else { (1 << bits) - 1 };
        prop_assert_eq!(got & m, want);
        // Bytes beyond the operand are untouched.
        prop_assert_eq!(got & !m, a & !m);
        prop_assert_eq!(cpu.rflags & FLAGS_ARITH, flags);
        prop_assert_eq!(cpu.rip, insn.len as u64);
    }

    /// Any decodable bytes can be handed to the emulator without a panic,
    /// and an MMIO read can always be resumed.
    #[test]
    fn emulator_never_panics(bytes in prop::collection::vec(any::<u8>(), 1..16), mode in mode(), gprs in prop::array::uniform16(0u64..0x3000), resume in prop::collection::vec(any::<u8>(), 8)) {
        let Ok(insn) = decode(&bytes, mode, Vendor::Amd) else { return Ok(()); };
        let mut cpu = flat_cpu(gprs, 2);
        if let Ok(Outcome::MmioRead { len, .. }) = emulate::emulate(&mut cpu, &insn, None) {
            let r = emulate::emulate(&mut cpu, &insn, Some(&resume[..usize::from(len)]));
            let again = matches!(r, Ok(Outcome::MmioRead { .. }));
            prop_assert!(!again, "resumed read asked for more data: {:?}", r);
        }
    }
}

/// 32 KiB of guest memory holding random paging structures.
#[derive(Clone, Debug)]
struct Tables(Vec<u8>);

impl GuestPhys for Tables {
    fn read_u32(&mut self, gpa: u64) -> Result<u32, MemError> {
        let a = usize::try_from(gpa).map_err(|_| MemError)?;
        let b = self.0.get(a..a + 4).ok_or(MemError)?;
        Ok(u32::from_le_bytes(b.try_into().unwrap()))
    }
    fn read_u64(&mut self, gpa: u64) -> Result<u64, MemError> {
        let a = usize::try_from(gpa).map_err(|_| MemError)?;
        let b = self.0.get(a..a + 8).ok_or(MemError)?;
        Ok(u64::from_le_bytes(b.try_into().unwrap()))
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

/// Entries that mostly point back into the 8 pages, with random flag bits.
fn tables() -> impl Strategy<Value = Tables> {
    prop::collection::vec((0u64..8, any::<u16>(), any::<u8>()), 4096).prop_map(|ents| {
        let mut v = Vec::with_capacity(0x8000);
        for (page, low, high) in ents {
            let mut e = (page << 12) | u64::from(low & 0x1ff);
            // Occasionally set NX, high address or protection-key bits.
            if high & 0xf0 == 0 {
                e |= u64::from(high) << 56;
            }
            v.extend(e.to_le_bytes());
        }
        Tables(v)
    })
}

fn paging_mode() -> impl Strategy<Value = PagingMode> {
    prop_oneof![
        Just(PagingMode::Bits32),
        Just(PagingMode::Pae),
        Just(PagingMode::Long4),
        Just(PagingMode::Long5)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Walks over random tables never panic, keep the page offset, and grant
    /// permissions monotonically (a user write implies every weaker access).
    #[test]
    fn walks_are_sane(mem in tables(), mode in paging_mode(), gva: u64, nxe: bool, wp: bool, pse: bool) {
        let gva = match mode {
            PagingMode::Long4 => ((gva << 16) as i64 >> 16) as u64,
            PagingMode::Long5 => ((gva << 7) as i64 >> 7) as u64,
            _ => gva & 0xffff_ffff,
        };
        let cfg = WalkConfig {
            mode,
            cr3: 0,
            wp,
            pse,
            smep: false,
            smap: false,
            nxe,
            ac: false,
            maxphyaddr: 40,
            gbpages: true,
            amd: false,
        };
        let ok = [Access::WRITE.user(true), Access::READ.user(true), Access::WRITE, Access::READ].map(|access| {
            let r = paging::translate(&mut mem.clone(), &cfg, gva, access);
            if let Ok(t) = r {
                assert_eq!(t.gpa & 0xfff, gva & 0xfff);
                assert!(t.gpa < 1 << 40);
            }
            r.is_ok()
        });
        let [user_write, user_read, sup_write, sup_read] = ok;
        prop_assert!(!user_write || (user_read && sup_write && sup_read), "{:?}", ok);
        prop_assert!(!user_read || sup_read, "{:?}", ok);
        prop_assert!(!sup_write || sup_read, "{:?}", ok);
    }
}
