// SPDX-License-Identifier: GPL-2.0

//! MMIO: the instruction emulator's view of a vCPU, and MMIO accesses
//! split into page fragments for userspace, as KVM splits them.

use super::{Flow, Inner, Pending, Vcpu, GP_VECTOR, PF_VECTOR};
use crate::{
    addr::{Gpa, Gva},
    backend::{ArchVcpu, Backend},
    decode::{Insn, Segment},
    emulate::{self, Cpu, MemResult, Outcome},
    iobus::Ioeventfds,
    ioeventfd::Bus,
    memory::{LinearFault, Mem, Paging},
    paging::{Access, WalkError},
    uapi::internal,
};
use kernel::prelude::*;

/// One page's part of an MMIO access.
#[derive(Clone, Copy, Default)]
pub(super) struct Frag {
    pub(super) gpa: Gpa,
    /// Offset of this part in the access's data.
    pub(super) off: u8,
    pub(super) len: u8,
    /// Still needs userspace (RAM parts are done in the kernel).
    pub(super) mmio: bool,
}

/// An MMIO access split at a page boundary, as KVM splits them: each exit
/// to userspace stays within one page.
#[derive(Clone, Copy, Default)]
pub(super) struct Frags {
    pub(super) f: [Frag; 2],
    pub(super) n: usize,
    pub(super) data: [u8; 8],
    pub(super) len: u8,
}

/// The page parts (guest-physical address, offset in the access, length)
/// of one emulated access of at most 8 bytes: at most two.
#[derive(Clone, Copy, Default)]
struct Parts {
    p: [(Gpa, usize, usize); 2],
    n: usize,
}

impl<B: Backend> Vcpu<B> {
    /// Emulates `insn` (an MMIO access); `resume` carries MMIO read data.
    pub(super) fn emulate(
        &self,
        bus: &Ioeventfds,
        mem: &Mem<'_>,
        inner: &mut Inner<B>,
        insn: &Insn,
        resume: Option<&[u8]>,
    ) -> Result<Flow> {
        let mut cpu = EmuCpu {
            mem,
            paging: inner.paging(),
            inner: &mut *inner,
            mmio: None,
        };
        let r = emulate::emulate(&mut cpu, insn, resume);
        let parts = cpu.mmio;
        Ok(match (r, parts) {
            (Ok(Outcome::Done { .. }), _) => Flow::Resume,
            (Ok(Outcome::MmioRead { len, .. }), Some(p)) => {
                return self.next_read_frag(bus, mem, inner, *insn, split(mem, p, len, None));
            }
            (Ok(Outcome::MmioWrite { len, data, .. }), Some(p)) => {
                let mut frags = split(mem, p, len, Some(data));
                // Each page's part goes to the ioeventfds first, as KVM's
                // vcpu_mmio_write does; what they take is done.
                for f in frags.f[..frags.n].iter_mut().filter(|f| f.mmio) {
                    let off = usize::from(f.off);
                    if bus.write(Bus::Mmio, f.gpa.0, &data[off..off + usize::from(f.len)]) {
                        f.mmio = false;
                    }
                }
                self.next_write_frag(inner, frags)
            }
            (Ok(Outcome::Exception(ex)), _) => {
                if let Some(a) = ex.address {
                    inner.arch.set_cr2(a);
                }
                inner.queue_exception(ex.vector, ex.error_code);
                Flow::Resume
            }
            _ => {
                let rip = inner.arch.rip();
                self.internal_error(inner, internal::EMULATION, &[rip])
            }
        })
    }

    /// Exits for the next MMIO part of a read, or finishes the instruction
    /// with the data.
    pub(super) fn next_read_frag(
        &self,
        bus: &Ioeventfds,
        mem: &Mem<'_>,
        inner: &mut Inner<B>,
        insn: Insn,
        frags: Frags,
    ) -> Result<Flow> {
        if self.exit_for_read(inner, insn, &frags) {
            return Ok(Flow::User);
        }
        let data = frags.data;
        self.emulate(
            bus,
            mem,
            inner,
            &insn,
            Some(&data[..usize::from(frags.len)]),
        )
    }

    /// Exits to userspace for the first MMIO part of a read still missing.
    fn exit_for_read(&self, inner: &mut Inner<B>, insn: Insn, frags: &Frags) -> bool {
        let Some(f) = frags.f[..frags.n].iter().find(|f| f.mmio) else {
            return false;
        };
        inner
            .staging
            .set_mmio(f.gpa.0, [0; 8], u32::from(f.len), false);
        inner.pending = Pending::MmioRead {
            insn,
            frags: *frags,
        };
        true
    }

    /// Exits with the next MMIO part of a write (the instruction itself is
    /// complete), or resumes the guest.
    pub(super) fn next_write_frag(&self, inner: &mut Inner<B>, mut frags: Frags) -> Flow {
        let Some(i) = frags.f[..frags.n].iter().position(|f| f.mmio) else {
            return Flow::Resume;
        };
        let f = frags.f[i];
        let mut d = [0u8; 8];
        let off = usize::from(f.off);
        d[..usize::from(f.len)].copy_from_slice(&frags.data[off..off + usize::from(f.len)]);
        inner.staging.set_mmio(f.gpa.0, d, u32::from(f.len), true);
        frags.f[i].mmio = false;
        inner.pending = Pending::MmioWrite { frags };
        Flow::User
    }

    /// A guest-linear access rkvm made for the guest failed: the guest gets
    /// the fault its page walk raised; memory that is not RAM (or cannot be
    /// read) is an emulation failure.
    pub(super) fn linear_fault(&self, inner: &mut Inner<B>, f: LinearFault) -> Flow {
        match f {
            LinearFault::Walk(gva, WalkError::PageFault { error_code }) => {
                inner.arch.set_cr2(gva.0);
                inner.queue_exception(PF_VECTOR, Some(error_code));
                Flow::Resume
            }
            LinearFault::Walk(_, WalkError::NonCanonical) => {
                inner.queue_exception(GP_VECTOR, Some(0));
                Flow::Resume
            }
            LinearFault::Walk(gva, _) | LinearFault::Mem(gva) => {
                self.internal_error(inner, internal::EMULATION, &[gva.0])
            }
        }
    }
}

/// Splits an MMIO access of `len` bytes into its page `parts` (as the
/// emulator translated them). RAM parts are read or written here (a
/// write's `data` is given); the rest are marked MMIO.
fn split(mem: &Mem<'_>, parts: Parts, len: u8, data: Option<[u8; 8]>) -> Frags {
    let mut fr = Frags {
        len,
        data: data.unwrap_or([0; 8]),
        ..Default::default()
    };
    for &(gpa, off, n) in &parts.p[..parts.n] {
        let range = off..off + n;
        let ram = if parts.n == 1 {
            // Within one page, which the emulator already found is MMIO.
            false
        } else if data.is_some() {
            mem.write(gpa, &fr.data[range]).is_ok()
        } else {
            mem.read(gpa, &mut fr.data[range]).is_ok()
        };
        fr.f[fr.n] = Frag {
            gpa,
            off: off as u8,
            len: n as u8,
            mmio: !ram,
        };
        fr.n += 1;
    }
    fr
}

/// The emulator's view of a vCPU: its registers, and guest memory through
/// its page tables.
struct EmuCpu<'m, 'a, B: Backend> {
    mem: &'m Mem<'a>,
    paging: Paging,
    inner: &'m mut Inner<B>,
    /// The page parts of the access that turned out to be MMIO.
    mmio: Option<Parts>,
}

impl<B: Backend> Cpu for EmuCpu<'_, '_, B> {
    fn gpr(&self, reg: u8) -> u64 {
        self.inner.gpr(reg)
    }
    fn set_gpr(&mut self, reg: u8, val: u64) {
        self.inner.set_gpr(reg, val)
    }
    fn rip(&self) -> u64 {
        self.inner.arch.rip()
    }
    /// The instruction completed: as KVM's writeback, RFLAGS is set
    /// again at the new RIP, which drops the single step's TF.
    fn set_rip(&mut self, rip: u64) {
        let flags = self.inner.rflags();
        self.inner.advance_rip(rip);
        self.inner.set_rflags(flags);
    }
    fn rflags(&self) -> u64 {
        self.inner.rflags()
    }
    fn set_rflags(&mut self, rflags: u64) {
        self.inner.set_rflags(rflags)
    }
    fn segment_base(&self, seg: Segment) -> u64 {
        self.inner.arch.segment_base(seg)
    }
    fn read_mem(&mut self, gva: u64, data: &mut [u8]) -> MemResult {
        let parts = match self.parts(Gva(gva), data.len(), false) {
            Ok(p) => p,
            Err(MemResult::Mmio { gpa }) => {
                // The in-kernel APIC's page is MMIO that never leaves the
                // kernel.
                return match self.inner.xapic_offset(gpa, data.len()) {
                    Some(off) if self.single_part() => {
                        self.mmio = None;
                        self.inner.xapic_read(off, data);
                        MemResult::Done
                    }
                    _ => MemResult::Mmio { gpa },
                };
            }
            Err(r) => return r,
        };
        for &(gpa, off, n) in &parts.p[..parts.n] {
            if self.mem.read(gpa, &mut data[off..off + n]).is_err() {
                return self.mmio(parts);
            }
        }
        MemResult::Done
    }
    fn write_mem(&mut self, gva: u64, data: &[u8]) -> MemResult {
        let parts = match self.parts(Gva(gva), data.len(), true) {
            Ok(p) => p,
            Err(MemResult::Mmio { gpa }) => {
                return match self.inner.xapic_offset(gpa, data.len()) {
                    Some(off) if self.single_part() => {
                        self.mmio = None;
                        self.inner.xapic_write(off, data);
                        MemResult::Done
                    }
                    _ => MemResult::Mmio { gpa },
                };
            }
            Err(r) => return r,
        };
        for &(gpa, off, n) in &parts.p[..parts.n] {
            if self.mem.write(gpa, &data[off..off + n]).is_err() {
                return self.mmio(parts);
            }
        }
        MemResult::Done
    }
}

impl<B: Backend> EmuCpu<'_, '_, B> {
    /// The MMIO access just found lies in one page.
    fn single_part(&self) -> bool {
        self.mmio.is_some_and(|p| p.n == 1)
    }

    /// Remembers `parts` as the MMIO access the emulator reports.
    fn mmio(&mut self, parts: Parts) -> MemResult {
        self.mmio = Some(parts);
        MemResult::Mmio {
            gpa: parts.p[0].0 .0,
        }
    }

    /// Translates an access page by page. A fault anywhere faults the whole
    /// access; any part that is not RAM (with the access's permission)
    /// makes it MMIO, before anything is transferred.
    fn parts(
        &mut self,
        gva: Gva,
        len: usize,
        write: bool,
    ) -> core::result::Result<Parts, MemResult> {
        let access = if write { Access::WRITE } else { Access::READ };
        let mut parts = Parts::default();
        let mut done = 0;
        while done < len && parts.n < 2 {
            let a = gva.add(done as u64);
            let chunk = (a.to_page_end() as usize).min(len - done);
            match self.mem.translate(&self.paging, a, access) {
                Ok(g) => parts.p[parts.n] = (g, done, chunk),
                Err(WalkError::PageFault { error_code }) => {
                    return Err(MemResult::Fault(emulate::Exception {
                        vector: PF_VECTOR,
                        error_code: Some(error_code),
                        address: Some(a.0),
                    }))
                }
                Err(_) => {
                    return Err(MemResult::Fault(emulate::Exception {
                        vector: GP_VECTOR,
                        error_code: Some(0),
                        address: None,
                    }))
                }
            }
            parts.n += 1;
            done += chunk;
        }
        let ram = parts.p[..parts.n]
            .iter()
            .all(|&(g, _, n)| self.mem.is_ram(g, n as u64, write));
        if ram {
            Ok(parts)
        } else {
            Err(self.mmio(parts))
        }
    }
}
