//! Differential test of the decoder against iced-x86: lengths and validity.
//!
//! For every instruction iced accepts, we must accept it too, with the same
//! length. We may accept more than iced (the decoder is permissive on
//! purpose: a guest instruction that exited already passed the CPU's own
//! checks), so iced-invalid inputs are only checked not to panic.
//!
//! Deliberate differences: none beyond that permissiveness (for example we
//! accept LOCK on any instruction and undefined 0F38/0F3A opcodes, and give
//! them the length their map implies). `RKVM_DIFF_ITERS=5000000` soaks it.

use iced_x86::{Decoder, DecoderOptions};
use rkvm_core::decode::{decode, Mode, Vendor};

/// Small deterministic PRNG so failures reproduce.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn byte(&mut self) -> u8 {
        self.next() as u8
    }

    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[(self.next() % xs.len() as u64) as usize]
    }
}

const LEGACY_PREFIXES: [u8; 11] = [
    0x66, 0x67, 0xf2, 0xf3, 0xf0, 0x2e, 0x36, 0x3e, 0x26, 0x64, 0x65,
];

/// Random bytes shaped like instructions: some prefixes, an escape, then noise.
fn gen(rng: &mut XorShift, mode: Mode) -> [u8; 16] {
    let mut b = [0u8; 16];
    for x in b.iter_mut() {
        *x = rng.byte();
    }
    let mut pos = 0;
    for _ in 0..rng.next() % 4 {
        b[pos] = rng.pick(&LEGACY_PREFIXES);
        pos += 1;
    }
    if mode == Mode::Bits64 && rng.next().is_multiple_of(3) {
        b[pos] = 0x40 | (rng.byte() & 0xf);
        pos += 1;
    }
    let escapes: [&[u8]; 9] = [
        &[],
        &[],
        &[0x0f],
        &[0x0f],
        &[0x0f, 0x38],
        &[0x0f, 0x3a],
        &[0xc4],
        &[0xc5],
        &[0x62],
    ];
    let mut esc = rng.pick(&escapes);
    if rng.next().is_multiple_of(16) {
        esc = rng.pick(&[&[0x8fu8][..], &[0x0f, 0x0f]]);
    }
    for &e in esc {
        b[pos] = e;
        pos += 1;
    }
    // Bias ModRM towards memory forms with SIB and displacements.
    if rng.next().is_multiple_of(2) && pos + 1 < b.len() {
        b[pos + 1] = (b[pos + 1] & 0xf8) | rng.pick(&[4u8, 5, 4, 6]);
    }
    b
}

fn run(mode: Mode, vendor: Vendor, seed: u64, iters: usize) {
    let bitness = match mode {
        Mode::Bits16 => 16,
        Mode::Bits32 => 32,
        Mode::Bits64 => 64,
    };
    let options = match vendor {
        Vendor::Intel => DecoderOptions::NONE,
        Vendor::Amd => DecoderOptions::AMD,
    };
    let mut rng = XorShift(seed);
    let mut failures = Vec::new();
    let mut valid = 0usize;
    for _ in 0..iters {
        let bytes = gen(&mut rng, mode);
        let ours = decode(&bytes, mode, vendor);
        let mut d = Decoder::new(bitness, &bytes, options);
        let theirs = d.decode();
        if theirs.is_invalid() {
            continue;
        }
        valid += 1;
        let ok = matches!(ours, Ok(i) if usize::from(i.len) == theirs.len());
        if !ok && failures.len() < 30 {
            failures.push(format!(
                "{mode:?} {vendor:?} {:02x?}: iced {:?} len {} / ours {:?}",
                &bytes[..theirs.len()],
                theirs.code(),
                theirs.len(),
                ours.map(|i| i.len)
            ));
        }
    }
    eprintln!(
        "{mode:?} {vendor:?}: {valid} of {iters} valid, {} mismatches",
        failures.len()
    );
    assert!(
        valid > iters / 10,
        "generator produced too few valid instructions"
    );
    assert!(failures.is_empty(), "mismatches:\n{}", failures.join("\n"));
}

const ITERS: usize = 200_000;

/// `RKVM_DIFF_ITERS` runs a longer soak; the default keeps `cargo test` fast.
fn iters() -> usize {
    std::env::var("RKVM_DIFF_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(ITERS)
}

#[test]
fn lengths_agree_with_iced_in_16bit_mode() {
    run(Mode::Bits16, Vendor::Intel, 0x1616_1616, iters());
    run(Mode::Bits16, Vendor::Amd, 0xa16a_16a1, iters());
}

#[test]
fn lengths_agree_with_iced_in_32bit_mode() {
    run(Mode::Bits32, Vendor::Intel, 0x3232_3232, iters());
    run(Mode::Bits32, Vendor::Amd, 0xa32a_32a3, iters());
}

#[test]
fn lengths_agree_with_iced_in_64bit_mode() {
    run(Mode::Bits64, Vendor::Intel, 0x6464_6464, iters());
    run(Mode::Bits64, Vendor::Amd, 0xa64a_64a6, iters());
}

#[test]
fn special_register_moves_agree_with_iced() {
    use iced_x86::{OpKind, Register};
    // Every MOV CR/DR ModRM, with and without REX.R/REX.B and LOCK.
    for vendor in [Vendor::Intel, Vendor::Amd] {
        let options = if vendor == Vendor::Amd {
            DecoderOptions::AMD
        } else {
            DecoderOptions::NONE
        };
        for rex in [None, Some(0x41u8), Some(0x44), Some(0x45)] {
            for lock in [false, true] {
                for op in 0x20u8..=0x23 {
                    for modrm in 0..=255u8 {
                        let mut b = Vec::new();
                        if lock {
                            b.push(0xf0);
                        }
                        b.extend(rex);
                        b.extend([0x0f, op, modrm]);
                        let theirs = Decoder::new(64, &b, options).decode();
                        let ours = decode(&b, Mode::Bits64, vendor);
                        if theirs.is_invalid() {
                            continue;
                        }
                        let i = ours.unwrap_or_else(|e| panic!("{b:02x?}: {e:?}"));
                        let m = if op & 1 == 0 {
                            i.control_reg_move()
                        } else {
                            i.debug_reg_move()
                        };
                        let m = m.unwrap();
                        let (spec, gpr) = if m.to_special {
                            (theirs.op0_register(), theirs.op1_register())
                        } else {
                            (theirs.op1_register(), theirs.op0_register())
                        };
                        assert_eq!(theirs.op0_kind(), OpKind::Register);
                        let spec_n = if op & 1 == 0 {
                            spec as u32 - Register::CR0 as u32
                        } else {
                            spec as u32 - Register::DR0 as u32
                        };
                        assert_eq!(u32::from(m.special), spec_n, "{b:02x?}");
                        assert_eq!(
                            u32::from(m.gpr),
                            gpr as u32 - Register::RAX as u32,
                            "{b:02x?}"
                        );
                        assert_eq!(m.to_special, op >= 0x22);
                    }
                }
            }
        }
    }
}
