//! x86 instruction decoder for guest code: instruction length and the operands exit handlers need.
//!
//! The decoder runs on bytes fetched from guest memory after an exit. It must
//! find the length of every valid instruction, because without NRIP save (QEMU
//! TCG's SVM has none) the next RIP is ours to compute, and it must decode the
//! operands of MOV to/from CR/DR (no decode assists either) and of instructions
//! that touch MMIO.
//!
//! Coverage: legacy prefixes, REX, the one-byte, 0F, 0F38 and 0F3A maps,
//! 3DNow!, and VEX, XOP and EVEX far enough to find their length. It is
//! deliberately permissive: an instruction that exited has already passed the
//! CPU's own validity checks, so we reject only encodings that have no length
//! at all (undefined opcodes, prefixes that make VEX #UD, more than 15 bytes).
//!
//! Self-contained: uses only `core`.

/// Architectural maximum length of one instruction.
pub const MAX_INSN_LEN: usize = 15;

/// Default operand and address size of the code segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Real mode, virtual-8086 mode, or a 16-bit protected-mode segment.
    Bits16,
    /// 32-bit protected mode or compatibility mode with CS.D = 1.
    Bits32,
    /// 64-bit mode (EFER.LMA = 1 and CS.L = 1).
    Bits64,
}

impl Mode {
    /// Picks the mode from EFER.LMA and the CS attributes.
    ///
    /// Pass `cs_d = false` in real and virtual-8086 mode: their code is 16-bit
    /// whatever the cached descriptor says.
    pub fn from_cs(long_mode_active: bool, cs_l: bool, cs_d: bool) -> Self {
        if long_mode_active && cs_l {
            Mode::Bits64
        } else if cs_d {
            Mode::Bits32
        } else {
            Mode::Bits16
        }
    }

    /// Mask that wraps RIP to the width of the instruction pointer.
    pub fn ip_mask(self) -> u64 {
        match self {
            Mode::Bits16 => 0xffff,
            Mode::Bits32 => 0xffff_ffff,
            Mode::Bits64 => u64::MAX,
        }
    }
}

/// CPU vendor, for the few encodings whose length or meaning differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vendor {
    /// Intel: 66h is ignored on near branches in 64-bit mode; UD0 has ModRM.
    Intel,
    /// AMD: 66h makes near branches rel16; UD0 has no ModRM; LOCK MOV CR0 is CR8.
    Amd,
}

/// Segment register, numbered as in the ModRM `sreg` field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Segment {
    /// ES.
    Es = 0,
    /// CS.
    Cs = 1,
    /// SS.
    Ss = 2,
    /// DS.
    Ds = 3,
    /// FS.
    Fs = 4,
    /// GS.
    Gs = 5,
}

/// Opcode map the opcode byte belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Map {
    /// One-byte opcodes.
    Primary,
    /// `0F xx`.
    M0F,
    /// `0F 38 xx`.
    M0F38,
    /// `0F 3A xx`.
    M0F3A,
    /// 3DNow! (`0F 0F modrm ... suffix`); the opcode is the suffix byte.
    Amd3DNow,
    /// VEX-encoded, with its map number (1 = 0F, 2 = 0F38, 3 = 0F3A).
    Vex(u8),
    /// XOP-encoded, with its map number (8, 9 or 10).
    Xop(u8),
    /// EVEX-encoded, with its map number.
    Evex(u8),
}

/// Legacy prefixes present on an instruction, as a small flags type.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Prefixes(u8);

impl Prefixes {
    /// F0.
    pub const LOCK: Self = Self(1 << 0);
    /// F3 (REP/REPE).
    pub const REP: Self = Self(1 << 1);
    /// F2 (REPNE).
    pub const REPNE: Self = Self(1 << 2);
    /// 66 (operand size).
    pub const OPSIZE: Self = Self(1 << 3);
    /// 67 (address size).
    pub const ADSIZE: Self = Self(1 << 4);

    /// No prefixes.
    pub const fn empty() -> Self {
        Self(0)
    }

    /// Whether every flag in `other` is set.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    fn insert(&mut self, other: Self) {
        self.0 |= other.0;
    }
}

/// A memory operand, as decoded from ModRM/SIB/displacement or a moffs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemOperand {
    /// Effective segment (override, or DS/SS by default).
    pub segment: Segment,
    /// Base register number (0-15).
    pub base: Option<u8>,
    /// Index register number (0-15).
    pub index: Option<u8>,
    /// Index scale: 1, 2, 4 or 8.
    pub scale: u8,
    /// Sign-extended displacement (or the moffs value).
    pub disp: i64,
    /// Address size in bytes: 2, 4 or 8.
    pub addr_size: u8,
    /// RIP-relative: the base is the address of the next instruction.
    pub rip_relative: bool,
}

impl MemOperand {
    /// Offset within the segment, wrapped to the address size.
    ///
    /// `gpr` reads a general-purpose register; `next_rip` is RIP after this
    /// instruction, which RIP-relative addressing is relative to.
    pub fn effective_address(&self, gpr: impl Fn(u8) -> u64, next_rip: u64) -> u64 {
        let mut ea = self.disp as u64;
        if self.rip_relative {
            ea = ea.wrapping_add(next_rip);
        }
        if let Some(b) = self.base {
            ea = ea.wrapping_add(gpr(b));
        }
        if let Some(i) = self.index {
            ea = ea.wrapping_add(gpr(i).wrapping_mul(u64::from(self.scale)));
        }
        ea & size_mask(self.addr_size)
    }
}

/// The ModRM r/m operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operand {
    /// A register (number 0-15, REX.B applied).
    Reg(u8),
    /// A memory location.
    Mem(MemOperand),
}

/// A decoded MOV to or from a control or debug register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpecialRegMove {
    /// CR or DR number (REX.R and AMD's LOCK alias for CR8 applied).
    pub special: u8,
    /// General-purpose register number (0-15).
    pub gpr: u8,
    /// True for MOV to the CR/DR (0F 22 / 0F 23).
    pub to_special: bool,
}

/// A decoded instruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    /// Length in bytes (1-15).
    pub len: u8,
    /// Mode it was decoded in.
    pub mode: Mode,
    /// Vendor whose rules were used.
    pub vendor: Vendor,
    /// Legacy prefixes present.
    pub prefixes: Prefixes,
    /// The last of F2/F3, which is the one that counts for string instructions.
    pub last_rep: Option<u8>,
    /// Segment override prefix (the last one), if any and not ignored.
    pub segment: Option<Segment>,
    /// REX byte in effect, 0 if none (for VEX/XOP/EVEX, their inverted R/X/B/W).
    pub rex: u8,
    /// Opcode map.
    pub map: Map,
    /// Opcode byte within the map.
    pub opcode: u8,
    /// ModRM byte, if the instruction has one.
    pub modrm: Option<u8>,
    /// Operand size in bytes (2, 4 or 8) for instructions that are not byte-sized.
    pub op_size: u8,
    /// Address size in bytes (2, 4 or 8).
    pub addr_size: u8,
    /// The ModRM r/m operand, or the moffs of A0-A3.
    pub operand: Option<Operand>,
    /// First immediate, zero-extended raw bytes.
    pub imm: u64,
    /// Size of the first immediate in bytes (0 if none).
    pub imm_size: u8,
    /// Second immediate (ENTER, EXTRQ, INSERTQ).
    pub imm2: u8,
}

impl Insn {
    /// Whether all of `p` are present.
    pub fn has(&self, p: Prefixes) -> bool {
        self.prefixes.contains(p)
    }

    /// ModRM.reg extended by REX.R (0-15); 0 if there is no ModRM.
    pub fn reg(&self) -> u8 {
        let r = self.modrm.map_or(0, |m| (m >> 3) & 7);
        r | ((self.rex & REX_R) << 1)
    }

    /// The immediate sign-extended from its encoded size.
    pub fn imm_sext(&self) -> i64 {
        sign_extend(self.imm, self.imm_size)
    }

    #[cfg_attr(
        rkvm_module,
        expect(dead_code, reason = "used by the host tests and the fuzz target")
    )]
    /// The memory operand, if any.
    pub fn mem(&self) -> Option<MemOperand> {
        match self.operand {
            Some(Operand::Mem(m)) => Some(m),
            _ => None,
        }
    }

    /// RIP of the next instruction, wrapped to the IP width.
    pub fn next_rip(&self, rip: u64) -> u64 {
        rip.wrapping_add(u64::from(self.len)) & self.mode.ip_mask()
    }

    /// Decodes MOV to/from CRn (0F 20 / 0F 22).
    pub fn control_reg_move(&self) -> Option<SpecialRegMove> {
        self.special_move(0x20, 0x22)
    }

    /// Decodes MOV to/from DRn (0F 21 / 0F 23).
    pub fn debug_reg_move(&self) -> Option<SpecialRegMove> {
        self.special_move(0x21, 0x23)
    }

    fn special_move(&self, from: u8, to: u8) -> Option<SpecialRegMove> {
        if self.map != Map::M0F || (self.opcode != from && self.opcode != to) {
            return None;
        }
        let gpr = match self.operand {
            Some(Operand::Reg(r)) => r,
            _ => return None,
        };
        let mut special = self.reg();
        // Decode rejected LOCK everywhere else, so here it is AMD's CR8 alias.
        if self.has(Prefixes::LOCK) {
            special |= 8;
        }
        Some(SpecialRegMove {
            special,
            gpr,
            to_special: self.opcode == to,
        })
    }
}

/// Why bytes did not decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Fewer bytes were given than the instruction needs (fetch more).
    Truncated,
    /// The instruction would be longer than 15 bytes (#GP on hardware).
    TooLong,
    /// No instruction has this encoding (#UD on hardware).
    Invalid,
}

/// Mask of the low `size` bytes.
pub fn size_mask(size: u8) -> u64 {
    match size {
        1 => 0xff,
        2 => 0xffff,
        4 => 0xffff_ffff,
        _ => u64::MAX,
    }
}

/// Sign-extends the low `size` bytes of `v`.
pub fn sign_extend(v: u64, size: u8) -> i64 {
    match size {
        1 => i64::from(v as u8 as i8),
        2 => i64::from(v as u16 as i16),
        4 => i64::from(v as u32 as i32),
        _ => v as i64,
    }
}

const REX_B: u8 = 1;
const REX_X: u8 = 2;
const REX_R: u8 = 4;
const REX_W: u8 = 8;

// Per-opcode attributes; the rest is handled by code in `decode`.
const M: u8 = 1 << 0; // has ModRM
const IB: u8 = 1 << 1; // imm8
const IW: u8 = 1 << 2; // imm16
const IZ: u8 = 1 << 3; // imm16/32 by operand size
const IV: u8 = 1 << 4; // imm16/32/64 by operand size (MOV r, imm)
const JZ: u8 = 1 << 5; // rel16/32 near branch
const I64: u8 = 1 << 6; // invalid in 64-bit mode
const BAD: u8 = 1 << 7; // undefined

const fn set(t: &mut [u8; 256], lo: usize, hi: usize, v: u8) {
    let mut i = lo;
    while i <= hi {
        t[i] = v;
        i += 1;
    }
}

const fn primary_table() -> [u8; 256] {
    let mut t = [0u8; 256];
    // 00-3F: the ALU rows share one layout.
    let mut i = 0;
    while i < 0x40 {
        t[i] = match i & 7 {
            0..=3 => M,
            4 => IB,
            5 => IZ,
            _ => I64, // PUSH/POP seg, DAA/DAS/AAA/AAS; prefixes never get here
        };
        i += 1;
    }
    t[0x60] = I64;
    t[0x61] = I64;
    t[0x62] = M | I64; // BOUND (EVEX is recognised before the table)
    t[0x63] = M; // ARPL / MOVSXD
    t[0x68] = IZ;
    t[0x69] = M | IZ;
    t[0x6a] = IB;
    t[0x6b] = M | IB;
    set(&mut t, 0x70, 0x7f, IB);
    t[0x80] = M | IB;
    t[0x81] = M | IZ;
    t[0x82] = M | IB | I64;
    t[0x83] = M | IB;
    set(&mut t, 0x84, 0x8f, M);
    t[0x9a] = I64; // CALL far ptr16:16/32, immediate added in code
    t[0xa8] = IB;
    t[0xa9] = IZ;
    set(&mut t, 0xb0, 0xb7, IB);
    set(&mut t, 0xb8, 0xbf, IV);
    t[0xc0] = M | IB;
    t[0xc1] = M | IB;
    t[0xc2] = IW;
    t[0xc4] = M | I64; // LES (VEX is recognised before the table)
    t[0xc5] = M | I64; // LDS
    t[0xc6] = M | IB;
    t[0xc7] = M | IZ;
    t[0xc8] = IW; // ENTER, second immediate added in code
    t[0xca] = IW;
    t[0xcd] = IB;
    t[0xce] = I64;
    set(&mut t, 0xd0, 0xd3, M);
    t[0xd4] = IB | I64;
    t[0xd5] = IB | I64;
    t[0xd6] = I64; // SALC
    set(&mut t, 0xd8, 0xdf, M);
    set(&mut t, 0xe0, 0xe7, IB);
    t[0xe8] = JZ;
    t[0xe9] = JZ;
    t[0xea] = I64; // JMP far ptr16:16/32
    t[0xeb] = IB;
    t[0xf6] = M; // TEST imm added in code
    t[0xf7] = M;
    t[0xfe] = M;
    t[0xff] = M;
    t
}

const fn map0f_table() -> [u8; 256] {
    let mut t = [M; 256];
    t[0x04] = BAD;
    set(&mut t, 0x05, 0x09, 0);
    t[0x0a] = BAD;
    t[0x0b] = 0;
    t[0x0c] = BAD;
    t[0x0e] = 0;
    t[0x25] = BAD;
    t[0x27] = BAD;
    set(&mut t, 0x30, 0x37, 0);
    t[0x39] = BAD;
    set(&mut t, 0x3b, 0x3f, BAD);
    set(&mut t, 0x70, 0x73, M | IB);
    t[0x77] = 0;
    t[0x7a] = BAD;
    t[0x7b] = BAD;
    set(&mut t, 0x80, 0x8f, JZ);
    set(&mut t, 0xa0, 0xa2, 0);
    t[0xa4] = M | IB;
    set(&mut t, 0xa8, 0xaa, 0);
    t[0xac] = M | IB;
    t[0xba] = M | IB;
    t[0xc2] = M | IB;
    set(&mut t, 0xc4, 0xc6, M | IB);
    set(&mut t, 0xc8, 0xcf, 0);
    t
}

static PRIMARY: [u8; 256] = primary_table();
static MAP0F: [u8; 256] = map0f_table();

/// Attributes of VEX/EVEX map 1 (0F): ModRM always, imm8 on a few opcodes.
fn vex_map1_attrs(op: u8, evex: bool) -> u8 {
    match op {
        0x77 if !evex => 0, // VZEROUPPER/VZEROALL
        0x70..=0x73 | 0xc2 | 0xc4..=0xc6 => M | IB,
        _ => M,
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Result<u8, DecodeError> {
        if self.pos >= MAX_INSN_LEN {
            return Err(DecodeError::TooLong);
        }
        self.bytes
            .get(self.pos)
            .copied()
            .ok_or(DecodeError::Truncated)
    }

    fn next(&mut self) -> Result<u8, DecodeError> {
        let b = self.peek()?;
        self.pos += 1;
        Ok(b)
    }

    /// Reads `n` bytes little-endian, zero-extended.
    fn take(&mut self, n: u8) -> Result<u64, DecodeError> {
        let mut v = 0u64;
        for i in 0..n {
            v |= u64::from(self.next()?) << (8 * u32::from(i));
        }
        Ok(v)
    }
}

/// Decodes one instruction from `bytes` (up to 15 are looked at).
pub fn decode(bytes: &[u8], mode: Mode, vendor: Vendor) -> Result<Insn, DecodeError> {
    let mut c = Cursor { bytes, pos: 0 };
    let mut prefixes = Prefixes::empty();
    let mut last_rep = None;
    let mut segment = None;
    let mut rex = 0u8;
    let long = mode == Mode::Bits64;

    loop {
        let b = c.peek()?;
        match b {
            0xf0 => prefixes.insert(Prefixes::LOCK),
            0xf2 => {
                prefixes.insert(Prefixes::REPNE);
                last_rep = Some(b);
            }
            0xf3 => {
                prefixes.insert(Prefixes::REP);
                last_rep = Some(b);
            }
            0x66 => prefixes.insert(Prefixes::OPSIZE),
            0x67 => prefixes.insert(Prefixes::ADSIZE),
            0x26 | 0x2e | 0x36 | 0x3e => {
                // In 64-bit mode these are ignored, and do not cancel FS/GS.
                if !long {
                    segment = Some(match b {
                        0x26 => Segment::Es,
                        0x2e => Segment::Cs,
                        0x36 => Segment::Ss,
                        _ => Segment::Ds,
                    });
                }
            }
            0x64 => segment = Some(Segment::Fs),
            0x65 => segment = Some(Segment::Gs),
            0x40..=0x4f if long => {
                c.pos += 1;
                rex = b;
                continue;
            }
            _ => break,
        }
        // REX counts only directly before the opcode.
        rex = 0;
        c.pos += 1;
    }

    let opsize = prefixes.contains(Prefixes::OPSIZE);
    let adsize = prefixes.contains(Prefixes::ADSIZE);
    let addr_size = match (mode, adsize) {
        (Mode::Bits64, false) => 8,
        (Mode::Bits64, true) | (Mode::Bits32, false) | (Mode::Bits16, true) => 4,
        (Mode::Bits32, true) | (Mode::Bits16, false) => 2,
    };

    let b = c.next()?;
    let mut imm2_size = 0u8;
    let mut forced_reg = false;
    let (map, opcode, mut attrs) = match b {
        0x0f => {
            let b2 = c.next()?;
            match b2 {
                0x38 => (Map::M0F38, c.next()?, M),
                0x3a => (Map::M0F3A, c.next()?, M | IB),
                // 3DNow!: the opcode is the imm8-position suffix.
                0x0f => (Map::Amd3DNow, 0, M | IB),
                _ => {
                    let mut a = MAP0F[usize::from(b2)];
                    match b2 {
                        // MOV CR/DR/TR ignore ModRM.mod: always a register.
                        0x20..=0x24 | 0x26 => forced_reg = true,
                        // EXTRQ / INSERTQ (SSE4a) take two imm8.
                        0x78 if prefixes.contains(Prefixes::OPSIZE)
                            || prefixes.contains(Prefixes::REPNE) =>
                        {
                            a |= IB;
                            imm2_size = 1;
                        }
                        0xff if vendor == Vendor::Amd => a = 0,
                        _ => {}
                    }
                    (Map::M0F, b2, a)
                }
            }
        }
        0xc4 | 0xc5 | 0x62 | 0x8f => {
            let next = c.peek()?;
            let is_vex = (b == 0xc4 || b == 0xc5) && (long || next & 0xc0 == 0xc0);
            let is_evex = b == 0x62 && (long || next & 0xc0 == 0xc0);
            let is_xop = b == 0x8f && next & 0x1f >= 8;
            if is_vex || is_evex || is_xop {
                // These prefixes make any VEX/XOP/EVEX instruction #UD.
                if rex != 0
                    || prefixes.contains(Prefixes::LOCK)
                    || prefixes.contains(Prefixes::OPSIZE)
                    || prefixes.contains(Prefixes::REP)
                    || prefixes.contains(Prefixes::REPNE)
                {
                    return Err(DecodeError::Invalid);
                }
                let p0 = c.next()?;
                let (map, w) = if b == 0xc5 {
                    rex = if long { (!p0 >> 5) & REX_R } else { 0 };
                    (Map::Vex(1), 0)
                } else if b == 0x62 {
                    let p1 = c.next()?;
                    c.next()?;
                    rex = if long { (!p0 >> 5) & 7 } else { 0 };
                    (Map::Evex(p0 & 7), p1 >> 7)
                } else {
                    let p1 = c.next()?;
                    rex = if long { (!p0 >> 5) & 7 } else { 0 };
                    let m = p0 & 0x1f;
                    (if b == 0x8f { Map::Xop(m) } else { Map::Vex(m) }, p1 >> 7)
                };
                if long && w != 0 {
                    rex |= REX_W;
                }
                let op = c.next()?;
                let a = match map {
                    Map::Vex(1) => vex_map1_attrs(op, false),
                    Map::Evex(1) => vex_map1_attrs(op, true),
                    Map::Vex(2) | Map::Evex(2) | Map::Evex(5) | Map::Evex(6) | Map::Xop(9) => M,
                    Map::Vex(3) | Map::Evex(3) | Map::Xop(8) => M | IB,
                    Map::Xop(10) => M,
                    _ => return Err(DecodeError::Invalid),
                };
                (map, op, a)
            } else {
                (Map::Primary, b, PRIMARY[usize::from(b)])
            }
        }
        _ => (Map::Primary, b, PRIMARY[usize::from(b)]),
    };

    if attrs & BAD != 0 || (long && attrs & I64 != 0) {
        return Err(DecodeError::Invalid);
    }
    // LOCK on MOV CR is valid only as AMD's alternate CR8 encoding.
    if map == Map::M0F && (0x20..=0x23).contains(&opcode) && prefixes.contains(Prefixes::LOCK) {
        let cr8_alias = vendor == Vendor::Amd && (opcode == 0x20 || opcode == 0x22);
        if !cr8_alias {
            return Err(DecodeError::Invalid);
        }
    }

    let w = rex & REX_W != 0;
    let op_size = if map == Map::M0F && forced_reg {
        // MOV CR/DR ignore 66h and REX.W.
        if long {
            8
        } else {
            4
        }
    } else {
        match (mode, opsize) {
            (Mode::Bits64, _) if w => 8,
            (Mode::Bits64, false) | (Mode::Bits32, false) | (Mode::Bits16, true) => 4,
            (Mode::Bits64, true) | (Mode::Bits32, true) | (Mode::Bits16, false) => 2,
        }
    };

    let mut modrm = None;
    let mut operand = None;
    if attrs & M != 0 {
        let m = c.next()?;
        modrm = Some(m);
        let md = m >> 6;
        let rm = m & 7;
        if md == 3 || forced_reg {
            operand = Some(Operand::Reg(rm | ((rex & REX_B) << 3)));
        } else {
            let mem = decode_mem(&mut c, md, rm, rex, addr_size, long, segment)?;
            operand = Some(Operand::Mem(mem));
        }
        if map == Map::Primary {
            let reg = (m >> 3) & 7;
            match opcode {
                0xf6 if reg < 2 => attrs |= IB,
                0xf7 if reg < 2 => attrs |= IZ,
                _ => {}
            }
        }
    }

    let z = if op_size == 2 { 2 } else { 4 };
    let mut imm_size = 0u8;
    if attrs & IB != 0 {
        imm_size = 1;
    } else if attrs & IW != 0 {
        imm_size = 2;
    } else if attrs & IZ != 0 {
        imm_size = z;
    } else if attrs & IV != 0 {
        imm_size = op_size;
    } else if attrs & JZ != 0 {
        imm_size = if long && (vendor == Vendor::Intel || w) {
            4
        } else {
            z
        };
    }
    if map == Map::Primary {
        match opcode {
            0x9a | 0xea => imm_size = z + 2,
            0xa0..=0xa3 => {
                imm_size = addr_size;
            }
            0xc8 => imm2_size = 1,
            _ => {}
        }
    }

    if map == Map::Xop(10) {
        imm_size = 4;
    }
    // A far pointer (at most 6 bytes) lands here whole: offset, then selector.
    let mut imm = c.take(imm_size)?;
    let imm2 = c.take(imm2_size)? as u8;

    let mut opcode = opcode;
    if map == Map::Amd3DNow {
        // The suffix was read as imm8; it is the real opcode.
        opcode = imm as u8;
        imm = 0;
        imm_size = 0;
    }

    if map == Map::Primary && (0xa0..=0xa3).contains(&opcode) {
        operand = Some(Operand::Mem(MemOperand {
            segment: segment.unwrap_or(Segment::Ds),
            base: None,
            index: None,
            scale: 1,
            disp: imm as i64,
            addr_size,
            rip_relative: false,
        }));
    }

    Ok(Insn {
        len: c.pos as u8,
        mode,
        vendor,
        prefixes,
        last_rep,
        segment,
        rex,
        map,
        opcode,
        modrm,
        op_size,
        addr_size,
        operand,
        imm,
        imm_size,
        imm2,
    })
}

fn decode_mem(
    c: &mut Cursor<'_>,
    md: u8,
    rm: u8,
    rex: u8,
    addr_size: u8,
    long: bool,
    seg_override: Option<Segment>,
) -> Result<MemOperand, DecodeError> {
    let mut mem = MemOperand {
        segment: Segment::Ds,
        base: None,
        index: None,
        scale: 1,
        disp: 0,
        addr_size,
        rip_relative: false,
    };
    let mut stack = false;
    if addr_size == 2 {
        // 16-bit forms: BX+SI, BX+DI, BP+SI, BP+DI, SI, DI, BP, BX.
        const BASE: [u8; 8] = [3, 3, 5, 5, 6, 7, 5, 3];
        const INDEX: [Option<u8>; 8] = [Some(6), Some(7), Some(6), Some(7), None, None, None, None];
        if md == 0 && rm == 6 {
            mem.disp = sign_extend(c.take(2)?, 2);
        } else {
            mem.base = Some(BASE[usize::from(rm)]);
            mem.index = INDEX[usize::from(rm)];
            stack = matches!(rm, 2 | 3 | 6);
            mem.disp = match md {
                1 => sign_extend(c.take(1)?, 1),
                2 => sign_extend(c.take(2)?, 2),
                _ => 0,
            };
        }
    } else {
        if rm == 4 {
            let sib = c.next()?;
            let index = ((sib >> 3) & 7) | ((rex & REX_X) << 2);
            if index != 4 {
                mem.index = Some(index);
                mem.scale = 1 << (sib >> 6);
            }
            let base = sib & 7;
            if base == 5 && md == 0 {
                mem.disp = sign_extend(c.take(4)?, 4);
            } else {
                let base = base | ((rex & REX_B) << 3);
                mem.base = Some(base);
                stack = base == 4 || base == 5;
            }
        } else if rm == 5 && md == 0 {
            mem.disp = sign_extend(c.take(4)?, 4);
            mem.rip_relative = long;
        } else {
            let base = rm | ((rex & REX_B) << 3);
            mem.base = Some(base);
            stack = base == 5;
        }
        match md {
            1 => mem.disp = sign_extend(c.take(1)?, 1),
            2 => mem.disp = sign_extend(c.take(4)?, 4),
            _ => {}
        }
    }
    mem.segment = match seg_override {
        Some(s) => s,
        None if stack => Segment::Ss,
        None => Segment::Ds,
    };
    Ok(mem)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn len64(b: &[u8]) -> u8 {
        decode(b, Mode::Bits64, Vendor::Intel).unwrap().len
    }

    #[test]
    fn nop_is_one_byte() {
        assert_eq!(len64(&[0x90]), 1);
    }

    #[test]
    fn mov_imm64_with_rex_w_has_eight_byte_immediate() {
        let i = decode(
            &[0x48, 0xb8, 1, 2, 3, 4, 5, 6, 7, 8],
            Mode::Bits64,
            Vendor::Intel,
        )
        .unwrap();
        assert_eq!(i.len, 10);
        assert_eq!(i.imm, 0x0807_0605_0403_0201);
    }

    #[test]
    fn rip_relative_operand_in_64bit_mode() {
        // mov eax, [rip+0x10]
        let i = decode(&[0x8b, 0x05, 0x10, 0, 0, 0], Mode::Bits64, Vendor::Intel).unwrap();
        let m = i.mem().unwrap();
        assert!(m.rip_relative);
        assert_eq!(m.effective_address(|_| 0, 0x1006), 0x1016);
    }

    #[test]
    fn disp32_is_absolute_in_32bit_mode() {
        let i = decode(&[0x8b, 0x05, 0x10, 0, 0, 0], Mode::Bits32, Vendor::Intel).unwrap();
        let m = i.mem().unwrap();
        assert!(!m.rip_relative);
        assert_eq!(m.base, None);
        assert_eq!(m.disp, 0x10);
    }

    #[test]
    fn sib_with_rex_x_and_rex_b() {
        // mov rax, [r13 + r12*8 + 0x7f]  (4b 8b 44 e5 7f)
        let i = decode(&[0x4b, 0x8b, 0x44, 0xe5, 0x7f], Mode::Bits64, Vendor::Intel).unwrap();
        assert_eq!(i.len, 5);
        let m = i.mem().unwrap();
        assert_eq!(m.base, Some(13));
        assert_eq!(m.index, Some(12));
        assert_eq!(m.scale, 8);
        assert_eq!(m.disp, 0x7f);
        assert_eq!(m.segment, Segment::Ds);
        assert_eq!(i.op_size, 8);
    }

    #[test]
    fn rbp_base_defaults_to_ss_but_r13_does_not() {
        let i = decode(&[0x8b, 0x45, 0x00], Mode::Bits64, Vendor::Intel).unwrap();
        assert_eq!(i.mem().unwrap().segment, Segment::Ss);
        let i = decode(&[0x41, 0x8b, 0x45, 0x00], Mode::Bits64, Vendor::Intel).unwrap();
        assert_eq!(i.mem().unwrap().segment, Segment::Ds);
    }

    #[test]
    fn sixteen_bit_bp_di_form_uses_ss() {
        // mov ax, [bp+di+0x1234]
        let i = decode(&[0x8b, 0x83, 0x34, 0x12], Mode::Bits16, Vendor::Intel).unwrap();
        assert_eq!(i.len, 4);
        let m = i.mem().unwrap();
        assert_eq!(
            (m.base, m.index, m.segment),
            (Some(5), Some(7), Segment::Ss)
        );
        assert_eq!(
            m.effective_address(|r| if r == 5 { 0xf000 } else { 0x1000 }, 0),
            0x1234
        );
    }

    #[test]
    fn mov_to_cr_ignores_mod_and_has_no_displacement() {
        // mov cr3, rax with mod=00: still a register, 3 bytes.
        let i = decode(&[0x0f, 0x22, 0x18], Mode::Bits64, Vendor::Amd).unwrap();
        assert_eq!(i.len, 3);
        let m = i.control_reg_move().unwrap();
        assert_eq!(
            m,
            SpecialRegMove {
                special: 3,
                gpr: 0,
                to_special: true
            }
        );
    }

    #[test]
    fn mov_from_cr8_with_rex_r() {
        // mov rcx, cr8 (44 0f 20 c1)
        let i = decode(&[0x44, 0x0f, 0x20, 0xc1], Mode::Bits64, Vendor::Intel).unwrap();
        let m = i.control_reg_move().unwrap();
        assert_eq!(
            m,
            SpecialRegMove {
                special: 8,
                gpr: 1,
                to_special: false
            }
        );
    }

    #[test]
    fn lock_mov_cr0_is_cr8_on_amd_only() {
        let b = [0xf0, 0x0f, 0x22, 0xc3];
        let i = decode(&b, Mode::Bits32, Vendor::Amd).unwrap();
        assert_eq!(i.control_reg_move().unwrap().special, 8);
        assert_eq!(i.control_reg_move().unwrap().gpr, 3);
        assert_eq!(
            decode(&b, Mode::Bits32, Vendor::Intel),
            Err(DecodeError::Invalid)
        );
    }

    #[test]
    fn mov_dr_decodes_register_numbers() {
        // mov dr7, r9 (41 0f 23 f9)
        let i = decode(&[0x41, 0x0f, 0x23, 0xf9], Mode::Bits64, Vendor::Intel).unwrap();
        assert_eq!(
            i.debug_reg_move().unwrap(),
            SpecialRegMove {
                special: 7,
                gpr: 9,
                to_special: true
            }
        );
        assert!(i.control_reg_move().is_none());
    }

    #[test]
    fn near_branch_operand_size_differs_by_vendor_in_64bit_mode() {
        let b = [0x66, 0xe8, 0, 0, 0, 0];
        assert_eq!(decode(&b, Mode::Bits64, Vendor::Intel).unwrap().len, 6);
        assert_eq!(decode(&b, Mode::Bits64, Vendor::Amd).unwrap().len, 4);
    }

    #[test]
    fn rex_before_legacy_prefix_is_ignored() {
        // 48 66 b8 imm16: REX.W is cancelled by the 66 after it.
        assert_eq!(len64(&[0x48, 0x66, 0xb8, 1, 2]), 5);
    }

    #[test]
    fn moffs_size_follows_address_size() {
        assert_eq!(len64(&[0xa1, 0, 0, 0, 0, 0, 0, 0, 0]), 9);
        assert_eq!(len64(&[0x67, 0xa1, 0, 0, 0, 0]), 6);
        let i = decode(&[0xa1, 0x34, 0x12], Mode::Bits16, Vendor::Intel).unwrap();
        assert_eq!(i.len, 3);
        assert_eq!(i.mem().unwrap().disp, 0x1234);
    }

    #[test]
    fn test_group_has_immediate_only_for_reg_0_and_1() {
        assert_eq!(len64(&[0xf7, 0x00, 1, 2, 3, 4]), 6);
        assert_eq!(len64(&[0xf7, 0x18]), 2);
    }

    #[test]
    fn vex_and_evex_lengths() {
        // vpshufd xmm0, xmm1, 0x1b (c5 f9 70 c1 1b)
        assert_eq!(len64(&[0xc5, 0xf9, 0x70, 0xc1, 0x1b]), 5);
        // vzeroupper
        assert_eq!(len64(&[0xc5, 0xf8, 0x77]), 3);
        // vaddps zmm0, zmm1, [rax+0x40] (62 f1 74 48 58 40 01)
        assert_eq!(len64(&[0x62, 0xf1, 0x74, 0x48, 0x58, 0x40, 0x01]), 7);
    }

    #[test]
    fn c4_is_les_in_32bit_mode_when_mod_is_not_3() {
        let i = decode(&[0xc4, 0x05, 0, 0, 0, 0], Mode::Bits32, Vendor::Intel).unwrap();
        assert_eq!(i.map, Map::Primary);
        assert_eq!(i.len, 6);
    }

    #[test]
    fn invalid_in_64bit_mode() {
        for op in [0x06u8, 0x27, 0x60, 0x9a, 0xce, 0xd4, 0xea] {
            assert_eq!(
                decode(&[op, 0, 0, 0, 0, 0, 0], Mode::Bits64, Vendor::Intel),
                Err(DecodeError::Invalid),
                "{op:#x}"
            );
        }
    }

    #[test]
    fn fifteen_prefixes_are_too_long() {
        let b = [0x66u8; 16];
        assert_eq!(
            decode(&b, Mode::Bits32, Vendor::Intel),
            Err(DecodeError::TooLong)
        );
    }

    #[test]
    fn short_input_is_truncated() {
        assert_eq!(
            decode(&[0xb8, 1], Mode::Bits32, Vendor::Intel),
            Err(DecodeError::Truncated)
        );
        assert_eq!(
            decode(&[], Mode::Bits32, Vendor::Intel),
            Err(DecodeError::Truncated)
        );
    }

    #[test]
    fn three_dnow_suffix_is_the_opcode() {
        // pfadd mm0, [rax] (0f 0f 00 9e)
        let i = decode(&[0x0f, 0x0f, 0x00, 0x9e], Mode::Bits64, Vendor::Amd).unwrap();
        assert_eq!((i.len, i.map, i.opcode), (4, Map::Amd3DNow, 0x9e));
    }

    #[test]
    fn extrq_has_two_immediates() {
        let i = decode(&[0x66, 0x0f, 0x78, 0xc0, 4, 8], Mode::Bits64, Vendor::Amd).unwrap();
        assert_eq!((i.len, i.imm, i.imm2), (6, 4, 8));
    }
}
