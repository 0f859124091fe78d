//! Emulator for the guest instructions that touch MMIO, driven through a caller-supplied `Cpu`.
//!
//! When a guest access hits MMIO (an NPF/EPT violation on a GPA with no
//! memslot), the instruction has to be finished in software. The caller
//! decodes it with `super::decode`, then calls [`emulate`] with a [`Cpu`]
//! that reads and writes registers and guest memory.
//!
//! MMIO round trips are restartable rather than stateful: nothing is committed
//! until the instruction is done, so an MMIO read returns
//! [`Outcome::MmioRead`] with no side effects, and the caller re-runs
//! [`emulate`] on the same instruction with the data from userspace as
//! `resume`. Every supported instruction does at most one memory read, which
//! precedes at most one memory write; an MMIO write is the last access, so it
//! commits the instruction and returns [`Outcome::MmioWrite`] for userspace to
//! perform. REP string instructions do one iteration per call and leave RIP
//! on the instruction while iterations remain, so the guest re-executes it.
//!
//! Not modelled: segment limit and type checks, alignment checks, and LOCK
//! atomicity (the caller's memory accessors may serialise if they need to).
//!
//! Depends on `super::decode`.

use super::decode::{sign_extend, size_mask, Insn, Map, Mode, Operand, Prefixes, Segment};

/// RFLAGS.CF.
pub const FLAG_CF: u64 = 1 << 0;
/// RFLAGS.PF.
pub const FLAG_PF: u64 = 1 << 2;
/// RFLAGS.AF.
pub const FLAG_AF: u64 = 1 << 4;
/// RFLAGS.ZF.
pub const FLAG_ZF: u64 = 1 << 6;
/// RFLAGS.SF.
pub const FLAG_SF: u64 = 1 << 7;
/// RFLAGS.DF.
pub const FLAG_DF: u64 = 1 << 10;
/// RFLAGS.OF.
pub const FLAG_OF: u64 = 1 << 11;
/// The six status flags arithmetic instructions write.
pub const FLAGS_ARITH: u64 = FLAG_CF | FLAG_PF | FLAG_AF | FLAG_ZF | FLAG_SF | FLAG_OF;

/// GPR numbers used implicitly.
const RAX: u8 = 0;
const RCX: u8 = 1;
const RSI: u8 = 6;
const RDI: u8 = 7;

/// An exception to inject into the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exception {
    /// Vector (14 for #PF, 13 for #GP, ...).
    pub vector: u8,
    /// Error code, if the vector pushes one.
    pub error_code: Option<u32>,
    /// Faulting linear address for #PF (goes to CR2).
    pub address: Option<u64>,
}

/// Result of one guest-memory access through [`Cpu`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemResult {
    /// The access was done in guest RAM.
    Done,
    /// The linear address maps to MMIO at `gpa`; nothing was transferred.
    Mmio {
        /// Guest physical address of the access.
        gpa: u64,
    },
    /// The access faults (for example #PF from the page walk).
    Fault(Exception),
}

/// Guest state the emulator works on. GPRs are numbered 0-15 (RAX..R15).
pub trait Cpu {
    /// Reads a full 64-bit GPR.
    fn gpr(&self, reg: u8) -> u64;
    /// Writes a full 64-bit GPR.
    fn set_gpr(&mut self, reg: u8, val: u64);
    /// Current RIP (of the instruction being emulated).
    fn rip(&self) -> u64;
    /// Sets RIP.
    fn set_rip(&mut self, rip: u64);
    /// Current RFLAGS.
    fn rflags(&self) -> u64;
    /// Sets RFLAGS.
    fn set_rflags(&mut self, rflags: u64);
    /// Base address of a segment register's cached descriptor.
    fn segment_base(&self, seg: Segment) -> u64;
    /// Reads `data.len()` (1-8) bytes at linear address `gva`.
    fn read_mem(&mut self, gva: u64, data: &mut [u8]) -> MemResult;
    /// Writes `data` (1-8 bytes) at linear address `gva`.
    fn write_mem(&mut self, gva: u64, data: &[u8]) -> MemResult;
}

/// What the caller has to do after [`emulate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The instruction (or one REP iteration) is complete; resume the guest.
    Done {
        /// REP iterations left (RIP was not advanced if non-zero).
        rep_remaining: u64,
    },
    /// Exit to userspace for an MMIO read, then call [`emulate`] again with
    /// the data as `resume`. Nothing was changed.
    MmioRead {
        /// Guest physical address.
        gpa: u64,
        /// Linear address.
        gva: u64,
        /// Access size in bytes (1-8).
        len: u8,
    },
    /// Exit to userspace with an MMIO write. The instruction is complete.
    MmioWrite {
        /// Guest physical address.
        gpa: u64,
        /// Linear address.
        gva: u64,
        /// Access size in bytes (1-8).
        len: u8,
        /// Little-endian data; the first `len` bytes are meaningful.
        data: [u8; 8],
        /// REP iterations left (RIP was not advanced if non-zero).
        rep_remaining: u64,
    },
    /// Inject this exception. Nothing was changed.
    Exception(Exception),
}

/// Why an instruction could not be emulated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EmulateError {
    /// Not an instruction this emulator handles (KVM_INTERNAL_ERROR_EMULATION).
    Unsupported,
    /// `resume` data did not match the size of the MMIO read.
    BadResume,
}

/// Early exit from the middle of an instruction.
enum Stop {
    Exit(Outcome),
    Error(EmulateError),
}

type Step<T> = Result<T, Stop>;

fn unsupported<T>() -> Step<T> {
    Err(Stop::Error(EmulateError::Unsupported))
}

/// Emulates `insn` (decoded at the guest's current RIP) against `cpu`.
///
/// `resume` is `None` on the first call and the data userspace returned for
/// the MMIO read on the call after an [`Outcome::MmioRead`].
pub fn emulate<C: Cpu>(
    cpu: &mut C,
    insn: &Insn,
    resume: Option<&[u8]>,
) -> Result<Outcome, EmulateError> {
    let mut e = Emu {
        cpu,
        insn,
        resume,
        mmio_write: None,
        rep_remaining: 0,
    };
    match e.run() {
        Ok(()) => Ok(e.finish()),
        Err(Stop::Exit(o)) => Ok(o),
        Err(Stop::Error(err)) => Err(err),
    }
}

struct Emu<'a, C: Cpu> {
    cpu: &'a mut C,
    insn: &'a Insn,
    resume: Option<&'a [u8]>,
    /// (gpa, gva, len, data) of an MMIO write to report after committing.
    mmio_write: Option<(u64, u64, u8, [u8; 8])>,
    rep_remaining: u64,
}

/// ALU operations in ModRM.reg / opcode-row order.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Alu {
    Add,
    Or,
    Adc,
    Sbb,
    And,
    Sub,
    Xor,
    Cmp,
}

impl Alu {
    fn from_index(i: u8) -> Self {
        match i & 7 {
            0 => Alu::Add,
            1 => Alu::Or,
            2 => Alu::Adc,
            3 => Alu::Sbb,
            4 => Alu::And,
            5 => Alu::Sub,
            6 => Alu::Xor,
            _ => Alu::Cmp,
        }
    }
}

fn sign_bit(size: u8) -> u64 {
    1 << (u32::from(size) * 8 - 1)
}

/// ZF, SF and PF of a result.
fn szp(res: u64, size: u8) -> u64 {
    let mut f = 0;
    if res & size_mask(size) == 0 {
        f |= FLAG_ZF;
    }
    if res & sign_bit(size) != 0 {
        f |= FLAG_SF;
    }
    // PF looks at the low byte only, even parity sets it.
    if (res as u8).count_ones() & 1 == 0 {
        f |= FLAG_PF;
    }
    f
}

/// `a + b + carry` at `size` bytes: (result, status flags).
fn add_flags(a: u64, b: u64, carry: bool, size: u8) -> (u64, u64) {
    let m = size_mask(size);
    let (a, b) = (a & m, b & m);
    let wide = u128::from(a) + u128::from(b) + u128::from(carry);
    let res = wide as u64 & m;
    let mut f = szp(res, size);
    if wide > u128::from(m) {
        f |= FLAG_CF;
    }
    if (a ^ b ^ res) & 0x10 != 0 {
        f |= FLAG_AF;
    }
    if (a ^ res) & (b ^ res) & sign_bit(size) != 0 {
        f |= FLAG_OF;
    }
    (res, f)
}

/// `a - b - borrow` at `size` bytes: (result, status flags).
fn sub_flags(a: u64, b: u64, borrow: bool, size: u8) -> (u64, u64) {
    let m = size_mask(size);
    let (a, b) = (a & m, b & m);
    let res = a.wrapping_sub(b).wrapping_sub(u64::from(borrow)) & m;
    let mut f = szp(res, size);
    if u128::from(b) + u128::from(borrow) > u128::from(a) {
        f |= FLAG_CF;
    }
    if (a ^ b ^ res) & 0x10 != 0 {
        f |= FLAG_AF;
    }
    if (a ^ b) & (a ^ res) & sign_bit(size) != 0 {
        f |= FLAG_OF;
    }
    (res, f)
}

/// Result and new status flags of an ALU operation (CF/OF clear for logic ops).
fn alu(op: Alu, a: u64, b: u64, cf: bool, size: u8) -> (u64, u64) {
    let m = size_mask(size);
    match op {
        Alu::Add => add_flags(a, b, false, size),
        Alu::Adc => add_flags(a, b, cf, size),
        Alu::Sub | Alu::Cmp => sub_flags(a, b, false, size),
        Alu::Sbb => sub_flags(a, b, cf, size),
        Alu::Or | Alu::And | Alu::Xor => {
            let res = match op {
                Alu::Or => a | b,
                Alu::And => a & b,
                _ => a ^ b,
            } & m;
            (res, szp(res, size))
        }
    }
}

impl<C: Cpu> Emu<'_, C> {
    fn finish(self) -> Outcome {
        let rep_remaining = self.rep_remaining;
        if rep_remaining == 0 {
            let rip = self.insn.next_rip(self.cpu.rip());
            self.cpu.set_rip(rip);
        }
        match self.mmio_write {
            Some((gpa, gva, len, data)) => Outcome::MmioWrite {
                gpa,
                gva,
                len,
                data,
                rep_remaining,
            },
            None => Outcome::Done { rep_remaining },
        }
    }

    /// Byte registers 4-7 are AH/CH/DH/BH unless any REX prefix is present.
    fn is_high_byte(&self, reg: u8, size: u8) -> bool {
        size == 1 && self.insn.rex == 0 && (4..8).contains(&reg)
    }

    fn get_reg(&self, reg: u8, size: u8) -> u64 {
        if self.is_high_byte(reg, size) {
            (self.cpu.gpr(reg - 4) >> 8) & 0xff
        } else {
            self.cpu.gpr(reg) & size_mask(size)
        }
    }

    fn set_reg(&mut self, reg: u8, size: u8, val: u64) {
        if self.is_high_byte(reg, size) {
            let old = self.cpu.gpr(reg - 4);
            self.cpu
                .set_gpr(reg - 4, (old & !0xff00) | ((val & 0xff) << 8));
            return;
        }
        let new = match size {
            1 | 2 => (self.cpu.gpr(reg) & !size_mask(size)) | (val & size_mask(size)),
            // 32-bit writes zero-extend, as on hardware.
            4 => val & 0xffff_ffff,
            _ => val,
        };
        self.cpu.set_gpr(reg, new);
    }

    fn set_flags(&mut self, mask: u64, val: u64) {
        let f = self.cpu.rflags();
        self.cpu.set_rflags((f & !mask) | (val & mask));
    }

    fn cf(&self) -> bool {
        self.cpu.rflags() & FLAG_CF != 0
    }

    /// Linear address of segment:offset; in 64-bit mode only FS/GS have bases.
    fn linear(&self, seg: Segment, ea: u64) -> u64 {
        match self.insn.mode {
            Mode::Bits64 => match seg {
                Segment::Fs | Segment::Gs => self.cpu.segment_base(seg).wrapping_add(ea),
                _ => ea,
            },
            _ => self.cpu.segment_base(seg).wrapping_add(ea) & 0xffff_ffff,
        }
    }

    fn read(&mut self, gva: u64, size: u8) -> Step<u64> {
        let mut buf = [0u8; 8];
        let n = usize::from(size);
        match self.cpu.read_mem(gva, &mut buf[..n]) {
            MemResult::Done => {}
            MemResult::Mmio { gpa } => match self.resume.take() {
                Some(d) if d.len() == n => buf[..n].copy_from_slice(d),
                Some(_) => return Err(Stop::Error(EmulateError::BadResume)),
                None => {
                    return Err(Stop::Exit(Outcome::MmioRead {
                        gpa,
                        gva,
                        len: size,
                    }))
                }
            },
            MemResult::Fault(e) => return Err(Stop::Exit(Outcome::Exception(e))),
        }
        Ok(u64::from_le_bytes(buf))
    }

    fn write(&mut self, gva: u64, size: u8, val: u64) -> Step<()> {
        let data = val.to_le_bytes();
        match self.cpu.write_mem(gva, &data[..usize::from(size)]) {
            MemResult::Done => Ok(()),
            MemResult::Mmio { gpa } => {
                self.mmio_write = Some((gpa, gva, size, data));
                Ok(())
            }
            MemResult::Fault(e) => Err(Stop::Exit(Outcome::Exception(e))),
        }
    }

    /// Linear address of the r/m memory operand, displaced by `extra` bytes.
    fn rm_linear(&self, extra: i64) -> Step<Option<u64>> {
        match self.insn.operand {
            Some(Operand::Mem(m)) => {
                let next = self.insn.next_rip(self.cpu.rip());
                let ea = m.effective_address(|r| self.cpu.gpr(r), next);
                let ea = ea.wrapping_add(extra as u64) & size_mask(m.addr_size);
                Ok(Some(self.linear(m.segment, ea)))
            }
            Some(Operand::Reg(_)) => Ok(None),
            None => unsupported(),
        }
    }

    fn read_rm(&mut self, size: u8) -> Step<u64> {
        match self.insn.operand {
            Some(Operand::Reg(r)) => Ok(self.get_reg(r, size)),
            _ => {
                let gva = self.rm_linear(0)?.unwrap_or(0);
                self.read(gva, size)
            }
        }
    }

    fn write_rm(&mut self, size: u8, val: u64) -> Step<()> {
        match self.insn.operand {
            Some(Operand::Reg(r)) => {
                self.set_reg(r, size, val);
                Ok(())
            }
            _ => {
                let gva = self.rm_linear(0)?.unwrap_or(0);
                self.write(gva, size, val)
            }
        }
    }

    /// Operand size: 1 for the byte forms (even opcodes in most rows).
    fn size(&self, byte_form: bool) -> u8 {
        if byte_form {
            1
        } else {
            self.insn.op_size
        }
    }

    /// Immediate sign-extended to the operand size.
    fn imm(&self, size: u8) -> u64 {
        self.insn.imm_sext() as u64 & size_mask(size)
    }

    fn run(&mut self) -> Step<()> {
        let insn = self.insn;
        let op = insn.opcode;
        let reg = insn.reg();
        let ext = reg & 7;
        match insn.map {
            Map::Primary => match op {
                0x00..=0x3f if op & 7 < 6 => {
                    let alu_op = Alu::from_index(op >> 3);
                    let size = self.size(op & 1 == 0);
                    match op & 7 {
                        0 | 1 => {
                            let b = self.get_reg(reg, size);
                            self.alu_rm(alu_op, size, b)
                        }
                        2 | 3 => {
                            let b = self.read_rm(size)?;
                            self.alu_reg(alu_op, reg, size, b)
                        }
                        _ => {
                            let b = self.imm(size);
                            self.alu_reg(alu_op, RAX, size, b)
                        }
                    }
                }
                0x80..=0x83 => {
                    if op == 0x82 && insn.mode == Mode::Bits64 {
                        return unsupported();
                    }
                    let size = self.size(op != 0x81 && op != 0x83);
                    let b = self.imm(size);
                    self.alu_rm(Alu::from_index(ext), size, b)
                }
                0x84 | 0x85 => {
                    let size = self.size(op == 0x84);
                    let a = self.read_rm(size)?;
                    let b = self.get_reg(reg, size);
                    self.set_flags(FLAGS_ARITH, szp(a & b, size));
                    Ok(())
                }
                0x86 | 0x87 => {
                    let size = self.size(op == 0x86);
                    let a = self.read_rm(size)?;
                    let b = self.get_reg(reg, size);
                    self.write_rm(size, b)?;
                    self.set_reg(reg, size, a);
                    Ok(())
                }
                0x88 | 0x89 => {
                    let size = self.size(op == 0x88);
                    let v = self.get_reg(reg, size);
                    self.write_rm(size, v)
                }
                0x8a | 0x8b => {
                    let size = self.size(op == 0x8a);
                    let v = self.read_rm(size)?;
                    self.set_reg(reg, size, v);
                    Ok(())
                }
                0x63 if insn.mode == Mode::Bits64 => {
                    // MOVSXD: sign-extends only with REX.W.
                    let size = insn.op_size;
                    let src = size.min(4);
                    let v = self.read_rm(src)?;
                    self.set_reg(reg, size, sign_extend(v, src) as u64);
                    Ok(())
                }
                0xa0..=0xa3 => {
                    let size = self.size(op & 1 == 0);
                    if op < 0xa2 {
                        let v = self.read_rm(size)?;
                        self.set_reg(RAX, size, v);
                        Ok(())
                    } else {
                        let v = self.get_reg(RAX, size);
                        self.write_rm(size, v)
                    }
                }
                0xa4 | 0xa5 | 0xaa | 0xab | 0xac | 0xad => self.string(op),
                0xc6 | 0xc7 if ext == 0 => {
                    let size = self.size(op == 0xc6);
                    let v = self.imm(size);
                    self.write_rm(size, v)
                }
                0xf6 | 0xf7 => {
                    let size = self.size(op == 0xf6);
                    match ext {
                        0 | 1 => {
                            let a = self.read_rm(size)?;
                            let b = self.imm(size);
                            self.set_flags(FLAGS_ARITH, szp(a & b, size));
                            Ok(())
                        }
                        2 => {
                            let a = self.read_rm(size)?;
                            self.write_rm(size, !a & size_mask(size))
                        }
                        3 => {
                            let a = self.read_rm(size)?;
                            let (res, f) = sub_flags(0, a, false, size);
                            self.write_rm(size, res)?;
                            self.set_flags(FLAGS_ARITH, f);
                            Ok(())
                        }
                        _ => unsupported(),
                    }
                }
                0xfe | 0xff if ext < 2 => {
                    let size = self.size(op == 0xfe);
                    let a = self.read_rm(size)?;
                    let (res, f) = if ext == 0 {
                        add_flags(a, 1, false, size)
                    } else {
                        sub_flags(a, 1, false, size)
                    };
                    self.write_rm(size, res)?;
                    // INC and DEC leave CF alone.
                    self.set_flags(FLAGS_ARITH & !FLAG_CF, f);
                    Ok(())
                }
                _ => unsupported(),
            },
            Map::M0F => match op {
                0xb6 | 0xb7 | 0xbe | 0xbf => {
                    let src = if op & 1 == 0 { 1 } else { 2 };
                    let v = self.read_rm(src)?;
                    let v = if op >= 0xbe {
                        sign_extend(v, src) as u64
                    } else {
                        v
                    };
                    self.set_reg(reg, insn.op_size, v & size_mask(insn.op_size));
                    Ok(())
                }
                0xa3 | 0xab | 0xb3 | 0xbb => {
                    let bit = self.get_reg(reg, insn.op_size);
                    let kind = match op {
                        0xa3 => 4,
                        0xab => 5,
                        0xb3 => 6,
                        _ => 7,
                    };
                    self.bit_test(kind, bit, true)
                }
                0xba if ext >= 4 => {
                    let bit = insn.imm;
                    self.bit_test(ext, bit, false)
                }
                _ => unsupported(),
            },
            _ => unsupported(),
        }
    }

    /// `r/m = r/m op b` (or just flags for CMP).
    fn alu_rm(&mut self, op: Alu, size: u8, b: u64) -> Step<()> {
        let a = self.read_rm(size)?;
        let (res, f) = alu(op, a, b, self.cf(), size);
        if op != Alu::Cmp {
            self.write_rm(size, res)?;
        }
        self.set_flags(FLAGS_ARITH, f);
        Ok(())
    }

    /// `reg = reg op b` (or just flags for CMP).
    fn alu_reg(&mut self, op: Alu, reg: u8, size: u8, b: u64) -> Step<()> {
        let a = self.get_reg(reg, size);
        let (res, f) = alu(op, a, b, self.cf(), size);
        if op != Alu::Cmp {
            self.set_reg(reg, size, res);
        }
        self.set_flags(FLAGS_ARITH, f);
        Ok(())
    }

    /// BT/BTS/BTR/BTC (ModRM.reg-style `kind` 4-7) with a register or imm8 offset.
    fn bit_test(&mut self, kind: u8, offset: u64, reg_offset: bool) -> Step<()> {
        let size = self.insn.op_size;
        // Operands are 2, 4 or 8 bytes; the floor keeps the divisions below
        // free of a divide-by-zero path.
        let bits = (u64::from(size) * 8).max(16);
        // A register offset into memory is signed and may leave the operand:
        // it selects the operand-sized word containing the bit.
        let mem = self.rm_linear(0)?.is_some();
        let (gva, bit) = if mem && reg_offset {
            let off = sign_extend(offset, size);
            let word = off.div_euclid(bits as i64);
            let gva = self.rm_linear(word * i64::from(size))?.unwrap_or(0);
            (Some(gva), off.rem_euclid(bits as i64) as u64)
        } else if mem {
            (self.rm_linear(0)?, offset % bits)
        } else {
            (None, offset % bits)
        };
        let val = match gva {
            Some(a) => self.read(a, size)?,
            None => self.read_rm(size)?,
        };
        let cf = (val >> bit) & 1;
        let new = match kind {
            5 => val | (1 << bit),
            6 => val & !(1 << bit),
            7 => val ^ (1 << bit),
            _ => val,
        };
        if kind != 4 {
            match gva {
                Some(a) => self.write(a, size, new)?,
                None => self.write_rm(size, new)?,
            }
        }
        // Only CF is defined; keep the others as they were.
        self.set_flags(FLAG_CF, cf);
        Ok(())
    }

    /// One iteration of MOVS, STOS or LODS.
    fn string(&mut self, op: u8) -> Step<()> {
        let insn = self.insn;
        let size = self.size(op & 1 == 0);
        let asz = insn.addr_size;
        let amask = size_mask(asz);
        // F2 acts like F3 on these (no condition is tested).
        let rep = insn.has(Prefixes::REP) || insn.has(Prefixes::REPNE);
        let count = self.cpu.gpr(RCX) & amask;
        if rep && count == 0 {
            return Ok(());
        }
        let step = if self.cpu.rflags() & FLAG_DF != 0 {
            (u64::from(size)).wrapping_neg()
        } else {
            u64::from(size)
        };
        let src_seg = insn.segment.unwrap_or(Segment::Ds);
        let rsi = self.cpu.gpr(RSI) & amask;
        let rdi = self.cpu.gpr(RDI) & amask;
        let src = self.linear(src_seg, rsi);
        // The destination is always ES, whatever the override.
        let dst = self.linear(Segment::Es, rdi);
        match op {
            0xa4 | 0xa5 => {
                let v = self.read(src, size)?;
                self.write(dst, size, v)?;
            }
            0xaa | 0xab => {
                let v = self.get_reg(RAX, size);
                self.write(dst, size, v)?;
            }
            _ => {
                let v = self.read(src, size)?;
                self.set_reg(RAX, size, v);
            }
        }
        if op != 0xaa && op != 0xab {
            self.set_reg(RSI, asz, rsi.wrapping_add(step));
        }
        if op != 0xac && op != 0xad {
            self.set_reg(RDI, asz, rdi.wrapping_add(step));
        }
        if rep {
            let left = count - 1;
            self.set_reg(RCX, asz, left);
            self.rep_remaining = left;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::decode::{decode, Vendor};
    use super::*;
    use crate::testcpu::TestCpu;

    /// A guest with 4 KiB of RAM at linear 0 and MMIO at 0x1000..0x2000
    /// (GPA 0xfee0_1000..), executing at RIP 0x100.
    fn guest() -> TestCpu {
        let mut c = TestCpu::new(0x1000, 0x1000..0x2000);
        c.mmio_gpa_offset = 0xfee0_0000;
        c.rip = 0x100;
        c
    }

    fn run(cpu: &mut TestCpu, bytes: &[u8], resume: Option<&[u8]>) -> Outcome {
        let insn = decode(bytes, Mode::Bits64, Vendor::Amd).unwrap();
        emulate(cpu, &insn, resume).unwrap()
    }

    #[test]
    fn mov_store_to_mmio_reports_write_and_advances_rip() {
        let mut c = guest();
        c.gprs[0] = 0x1122_3344;
        c.gprs[3] = 0x1000;
        // mov [rbx], eax
        let o = run(&mut c, &[0x89, 0x03], None);
        assert_eq!(
            o,
            Outcome::MmioWrite {
                gpa: 0xfee0_1000,
                gva: 0x1000,
                len: 4,
                data: [0x44, 0x33, 0x22, 0x11, 0, 0, 0, 0],
                rep_remaining: 0
            }
        );
        assert_eq!(c.rip, 0x102);
    }

    #[test]
    fn mov_load_from_mmio_exits_then_completes_on_resume() {
        let mut c = guest();
        c.gprs[3] = 0x1008;
        c.gprs[1] = u64::MAX;
        // mov ecx, [rbx]
        let o = run(&mut c, &[0x8b, 0x0b], None);
        assert_eq!(
            o,
            Outcome::MmioRead {
                gpa: 0xfee0_1008,
                gva: 0x1008,
                len: 4
            }
        );
        assert_eq!((c.rip, c.gprs[1]), (0x100, u64::MAX));
        let o = run(&mut c, &[0x8b, 0x0b], Some(&[1, 2, 3, 4]));
        assert_eq!(o, Outcome::Done { rep_remaining: 0 });
        // 32-bit loads zero-extend.
        assert_eq!((c.rip, c.gprs[1]), (0x102, 0x0403_0201));
    }

    #[test]
    fn resume_with_wrong_size_is_an_error() {
        let mut c = guest();
        c.gprs[3] = 0x1000;
        let insn = decode(&[0x8b, 0x0b], Mode::Bits64, Vendor::Amd).unwrap();
        assert_eq!(
            emulate(&mut c, &insn, Some(&[1])),
            Err(EmulateError::BadResume)
        );
    }

    #[test]
    fn high_byte_registers_without_rex() {
        let mut c = guest();
        c.gprs[0] = 0xab00;
        // mov [0x10], ah  (88 24 25 10 00 00 00)
        run(&mut c, &[0x88, 0x24, 0x25, 0x10, 0, 0, 0], None);
        assert_eq!(c.ram[0x10], 0xab);
    }

    #[test]
    fn add_to_memory_sets_carry_zero_and_aux() {
        let mut c = guest();
        c.ram[0x20] = 0xff;
        c.gprs[0] = 1;
        // add [0x20], al
        run(&mut c, &[0x00, 0x04, 0x25, 0x20, 0, 0, 0], None);
        assert_eq!(c.ram[0x20], 0);
        assert_eq!(
            c.rflags & FLAGS_ARITH,
            FLAG_CF | FLAG_ZF | FLAG_AF | FLAG_PF
        );
    }

    #[test]
    fn signed_overflow_on_add() {
        let (res, f) = add_flags(0x7fff_ffff, 1, false, 4);
        assert_eq!(res, 0x8000_0000);
        assert_eq!(f & (FLAG_OF | FLAG_SF | FLAG_CF), FLAG_OF | FLAG_SF);
    }

    #[test]
    fn cmp_sets_flags_without_writing() {
        let mut c = guest();
        c.ram[0x30] = 5;
        // cmp byte [0x30], 7  (80 3c 25 30 00 00 00 07)
        run(&mut c, &[0x80, 0x3c, 0x25, 0x30, 0, 0, 0, 7], None);
        assert_eq!(c.ram[0x30], 5);
        assert_eq!(
            c.rflags & FLAGS_ARITH,
            FLAG_CF | FLAG_SF | FLAG_AF | (szp(0xfe, 1) & FLAG_PF)
        );
    }

    #[test]
    fn group1_imm8_is_sign_extended() {
        let mut c = guest();
        c.ram[0x40..0x48].copy_from_slice(&10u64.to_le_bytes());
        // sub qword [0x40], -1  (48 83 2c 25 40 00 00 00 ff)
        run(&mut c, &[0x48, 0x83, 0x2c, 0x25, 0x40, 0, 0, 0, 0xff], None);
        assert_eq!(
            u64::from_le_bytes(c.ram[0x40..0x48].try_into().unwrap()),
            11
        );
    }

    #[test]
    fn adc_uses_carry_in() {
        let mut c = guest();
        c.rflags |= FLAG_CF;
        c.gprs[2] = 1;
        c.ram[0x50] = 1;
        // adc dl, [0x50]
        run(&mut c, &[0x12, 0x14, 0x25, 0x50, 0, 0, 0], None);
        assert_eq!(c.gprs[2], 3);
    }

    #[test]
    fn inc_preserves_carry() {
        let mut c = guest();
        c.rflags |= FLAG_CF;
        c.ram[0x60] = 0x7f;
        // inc byte [0x60]
        run(&mut c, &[0xfe, 0x04, 0x25, 0x60, 0, 0, 0], None);
        assert_eq!(c.ram[0x60], 0x80);
        assert_ne!(c.rflags & FLAG_CF, 0);
        assert_ne!(c.rflags & FLAG_OF, 0);
    }

    #[test]
    fn neg_and_not() {
        let mut c = guest();
        c.ram[0x70] = 1;
        // neg byte [0x70]
        run(&mut c, &[0xf6, 0x1c, 0x25, 0x70, 0, 0, 0], None);
        assert_eq!(c.ram[0x70], 0xff);
        assert_ne!(c.rflags & FLAG_CF, 0);
        // not byte [0x70]
        run(&mut c, &[0xf6, 0x14, 0x25, 0x70, 0, 0, 0], None);
        assert_eq!(c.ram[0x70], 0);
    }

    #[test]
    fn movzx_and_movsx() {
        let mut c = guest();
        c.ram[0x80] = 0x80;
        // movzx eax, byte [0x80]; movsx rcx, byte [0x80]
        run(&mut c, &[0x0f, 0xb6, 0x04, 0x25, 0x80, 0, 0, 0], None);
        run(&mut c, &[0x48, 0x0f, 0xbe, 0x0c, 0x25, 0x80, 0, 0, 0], None);
        assert_eq!(c.gprs[0], 0x80);
        assert_eq!(c.gprs[1], 0xffff_ffff_ffff_ff80);
    }

    #[test]
    fn movsxd_sign_extends_with_rex_w() {
        let mut c = guest();
        c.ram[0x90..0x94].copy_from_slice(&0x8000_0000u32.to_le_bytes());
        // movsxd rdx, dword [0x90]
        run(&mut c, &[0x48, 0x63, 0x14, 0x25, 0x90, 0, 0, 0], None);
        assert_eq!(c.gprs[2], 0xffff_ffff_8000_0000);
    }

    #[test]
    fn xchg_with_mmio_reads_then_writes() {
        let mut c = guest();
        c.gprs[3] = 0x1000;
        c.gprs[0] = 7;
        let b = [0x87, 0x03]; // xchg [rbx], eax
        assert!(matches!(run(&mut c, &b, None), Outcome::MmioRead { .. }));
        let o = run(&mut c, &b, Some(&[9, 0, 0, 0]));
        assert!(matches!(
            o,
            Outcome::MmioWrite {
                data: [7, 0, 0, 0, ..],
                ..
            }
        ));
        assert_eq!(c.gprs[0], 9);
    }

    #[test]
    fn bt_with_register_offset_reaches_beyond_the_operand() {
        let mut c = guest();
        c.ram[0x104] = 0b10;
        c.gprs[1] = 33;
        // bt dword [0x100], ecx : bit 33 is bit 1 of the dword at 0x104.
        run(&mut c, &[0x0f, 0xa3, 0x0c, 0x25, 0, 1, 0, 0], None);
        assert_ne!(c.rflags & FLAG_CF, 0);
        c.gprs[1] = u64::from((-31i32) as u32);
        c.ram[0xfc] = 0;
        c.ram[0xff] = 0x80;
        // bit -31 is bit 1 of the dword at 0xfc: clear.
        run(&mut c, &[0x0f, 0xa3, 0x0c, 0x25, 0, 1, 0, 0], None);
        assert_eq!(c.rflags & FLAG_CF, 0);
    }

    #[test]
    fn bt_imm_wraps_within_operand() {
        let mut c = guest();
        c.ram[0x100] = 0b1000;
        // bt word [0x100], 19 -> bit 3
        run(
            &mut c,
            &[0x66, 0x0f, 0xba, 0x24, 0x25, 0, 1, 0, 0, 19],
            None,
        );
        assert_ne!(c.rflags & FLAG_CF, 0);
    }

    #[test]
    fn rep_stos_to_mmio_does_one_iteration_and_keeps_rip() {
        let mut c = guest();
        c.gprs[0] = 0x55;
        c.gprs[1] = 3;
        c.gprs[7] = 0x1000;
        let o = run(&mut c, &[0xf3, 0xaa], None);
        assert!(matches!(
            o,
            Outcome::MmioWrite {
                gva: 0x1000,
                len: 1,
                rep_remaining: 2,
                ..
            }
        ));
        assert_eq!((c.rip, c.gprs[1], c.gprs[7]), (0x100, 2, 0x1001));
        run(&mut c, &[0xf3, 0xaa], None);
        let o = run(&mut c, &[0xf3, 0xaa], None);
        assert!(matches!(
            o,
            Outcome::MmioWrite {
                rep_remaining: 0,
                ..
            }
        ));
        assert_eq!((c.rip, c.gprs[1]), (0x102, 0));
    }

    #[test]
    fn movs_from_mmio_with_df_set_walks_down() {
        let mut c = guest();
        c.rflags |= FLAG_DF;
        c.gprs[6] = 0x1004;
        c.gprs[7] = 0x200;
        let b = [0xa5]; // movsd
        assert!(matches!(
            run(&mut c, &b, None),
            Outcome::MmioRead { len: 4, .. }
        ));
        assert_eq!(
            run(&mut c, &b, Some(&[1, 2, 3, 4])),
            Outcome::Done { rep_remaining: 0 }
        );
        assert_eq!(&c.ram[0x200..0x204], &[1, 2, 3, 4]);
        assert_eq!((c.gprs[6], c.gprs[7]), (0x1000, 0x1fc));
    }

    #[test]
    fn rep_with_zero_count_only_advances_rip() {
        let mut c = guest();
        c.gprs[7] = 0x1000;
        assert_eq!(
            run(&mut c, &[0xf3, 0xab], None),
            Outcome::Done { rep_remaining: 0 }
        );
        assert_eq!(c.rip, 0x102);
    }

    #[test]
    fn fs_segment_base_applies_in_64bit_mode() {
        let mut c = guest();
        c.set_segment_base(Segment::Fs, 0x1000);
        // mov byte fs:[0x10], 1
        let o = run(&mut c, &[0x64, 0xc6, 0x04, 0x25, 0x10, 0, 0, 0, 1], None);
        assert!(matches!(o, Outcome::MmioWrite { gva: 0x1010, .. }));
    }

    #[test]
    fn fault_changes_nothing() {
        let mut c = guest();
        c.gprs[3] = 0x5000;
        let o = run(&mut c, &[0x89, 0x03], None);
        assert!(matches!(
            o,
            Outcome::Exception(Exception { vector: 14, .. })
        ));
        assert_eq!(c.rip, 0x100);
    }

    #[test]
    fn moffs_load_16bit_mode() {
        let mut c = guest();
        c.ram[0x34] = 0x99;
        let insn = decode(&[0xa0, 0x34, 0x00], Mode::Bits16, Vendor::Intel).unwrap();
        emulate(&mut c, &insn, None).unwrap();
        assert_eq!((c.gprs[0], c.rip), (0x99, 0x103));
    }

    #[test]
    fn unsupported_instruction_is_typed_error() {
        let mut c = guest();
        // div dword [rbx]
        let insn = decode(&[0xf7, 0x33], Mode::Bits64, Vendor::Amd).unwrap();
        assert_eq!(emulate(&mut c, &insn, None), Err(EmulateError::Unsupported));
    }
}
