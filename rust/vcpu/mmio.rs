// SPDX-License-Identifier: GPL-2.0

//! MMIO: the instruction emulator's view of a vCPU, guest linear-memory
//! access through the guest's page tables, and MMIO accesses split into
//! page fragments for userspace.

use super::run::cpu_vendor;
use super::*;

/// One page's part of an MMIO access.
#[derive(Clone, Copy, Default)]
pub(super) struct Frag {
    pub(super) gpa: u64,
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

impl Vcpu {
    /// Emulates `insn` (an MMIO access); `resume` carries MMIO read data.
    pub(super) fn emulate(
        &self,
        vm: &Vm,
        inner: &mut Inner,
        insn: &Insn,
        resume: Option<&[u8]>,
    ) -> Result<Flow> {
        let mut cpu = EmuCpu {
            vm,
            arch: &mut inner.arch,
        };
        match emulate::emulate(&mut cpu, insn, resume) {
            Ok(Outcome::Done { .. }) => Ok(Flow::Resume),
            Ok(Outcome::MmioRead { gpa, gva, len }) => {
                let frags = self.split(vm, inner, gpa, gva, len, None);
                self.next_read_frag(vm, inner, *insn, frags)
            }
            Ok(Outcome::MmioWrite {
                gpa,
                gva,
                len,
                data,
                ..
            }) => {
                let frags = self.split(vm, inner, gpa, gva, len, Some(data));
                Ok(self.next_write_frag(inner, frags))
            }
            Ok(Outcome::Exception(ex)) => {
                if let Some(a) = ex.address {
                    inner.arch.set_cr2(a);
                }
                inner.arch.inject_exception(ex.vector, ex.error_code);
                Ok(Flow::Resume)
            }
            Err(_) => {
                let rip = inner.arch.rip();
                self.internal_error(inner, internal::EMULATION, &[rip])
            }
        }
    }

    /// Splits an MMIO access (at `gva`, first byte at `gpa`) at a page
    /// boundary. RAM parts are read or written here (a write's `data` is
    /// given); the rest are marked MMIO.
    #[allow(
        clippy::too_many_arguments,
        reason = "one access, described by its parts"
    )]
    pub(super) fn split(
        &self,
        vm: &Vm,
        inner: &mut Inner,
        gpa: u64,
        gva: u64,
        len: u8,
        data: Option<[u8; 8]>,
    ) -> Frags {
        let mut fr = Frags {
            len,
            data: data.unwrap_or([0; 8]),
            ..Default::default()
        };
        let first = (4096 - (gva & 0xfff)).min(u64::from(len)) as u8;
        if first == len {
            // Within one page, which the emulator already found is MMIO.
            fr.f[0] = Frag {
                gpa,
                off: 0,
                len,
                mmio: true,
            };
            fr.n = 1;
            return fr;
        }
        let write = data.is_some();
        let user = inner.arch.cpl() == 3;
        for (off, n) in [(0u8, first), (first, len - first)] {
            if n == 0 {
                continue;
            }
            let a = gva.wrapping_add(u64::from(off));
            let access = if write { Access::WRITE } else { Access::READ }.user(user);
            // The emulator translated the whole access already, so this
            // cannot fault.
            let gpa = translate(vm, &inner.arch, a, access).unwrap_or(a);
            let range = usize::from(off)..usize::from(off + n);
            let ram = if write {
                matches!(vm.write_guest(gpa, &fr.data[range]), Ok(true))
            } else {
                matches!(vm.read_guest(gpa, &mut fr.data[range]), Ok(true))
            };
            fr.f[fr.n] = Frag {
                gpa,
                off,
                len: n,
                mmio: !ram,
            };
            fr.n += 1;
        }
        fr
    }

    /// Exits for the next MMIO part of a read, or finishes the instruction.
    pub(super) fn next_read_frag(
        &self,
        vm: &Vm,
        inner: &mut Inner,
        insn: Insn,
        frags: Frags,
    ) -> Result<Flow> {
        if let Some(f) = frags.f[..frags.n].iter().find(|f| f.mmio) {
            inner
                .staging
                .set_mmio(f.gpa, [0; 8], u32::from(f.len), false);
            inner.pending = Pending::MmioRead { insn, frags };
            return Ok(Flow::User);
        }
        let data = frags.data;
        self.emulate(vm, inner, &insn, Some(&data[..usize::from(frags.len)]))
    }

    /// Exits with the next MMIO part of a write (the instruction itself is
    /// complete), or resumes the guest.
    pub(super) fn next_write_frag(&self, inner: &mut Inner, mut frags: Frags) -> Flow {
        let Some(i) = frags.f[..frags.n].iter().position(|f| f.mmio) else {
            return Flow::Resume;
        };
        let f = frags.f[i];
        let mut d = [0u8; 8];
        let off = usize::from(f.off);
        d[..usize::from(f.len)].copy_from_slice(&frags.data[off..off + usize::from(f.len)]);
        inner.staging.set_mmio(f.gpa, d, u32::from(f.len), true);
        frags.f[i].mmio = false;
        inner.pending = Pending::MmioWrite { frags };
        Flow::User
    }

    pub(super) fn read_linear(
        &self,
        vm: &Vm,
        inner: &mut Inner,
        lin: u64,
        out: &mut [u8],
    ) -> core::result::Result<(), Result<Flow>> {
        let user = inner.arch.cpl() == 3;
        let mut done = 0;
        while done < out.len() {
            let a = lin.wrapping_add(done as u64);
            let n = (4096 - (a & 0xfff) as usize).min(out.len() - done);
            match translate(vm, &inner.arch, a, Access::READ.user(user)) {
                Ok(gpa) => match vm.read_guest(gpa, &mut out[done..done + n]) {
                    Ok(true) => done += n,
                    _ => return Err(self.internal_error(inner, internal::EMULATION, &[a])),
                },
                Err(e) => return Err(self.walk_fault(inner, a, e)),
            }
        }
        Ok(())
    }

    pub(super) fn write_linear(
        &self,
        vm: &Vm,
        inner: &mut Inner,
        lin: u64,
        data: &[u8],
    ) -> core::result::Result<(), Result<Flow>> {
        let user = inner.arch.cpl() == 3;
        let mut done = 0;
        while done < data.len() {
            let a = lin.wrapping_add(done as u64);
            let n = (4096 - (a & 0xfff) as usize).min(data.len() - done);
            match translate(vm, &inner.arch, a, Access::WRITE.user(user)) {
                Ok(gpa) => match vm.write_guest(gpa, &data[done..done + n]) {
                    Ok(true) => done += n,
                    _ => return Err(self.internal_error(inner, internal::EMULATION, &[a])),
                },
                Err(e) => return Err(self.walk_fault(inner, a, e)),
            }
        }
        Ok(())
    }

    pub(super) fn walk_fault(&self, inner: &mut Inner, addr: u64, e: WalkError) -> Result<Flow> {
        match e {
            WalkError::PageFault { error_code } => {
                inner.arch.set_cr2(addr);
                inner.arch.inject_exception(PF_VECTOR, Some(error_code));
                Ok(Flow::Resume)
            }
            WalkError::NonCanonical => {
                inner.arch.inject_exception(GP_VECTOR, Some(0));
                Ok(Flow::Resume)
            }
            _ => self.internal_error(inner, internal::EMULATION, &[addr]),
        }
    }
}

/// Guest physical memory for the page walker, through the VMM's mapping.
struct GuestMem<'a>(&'a Vm);

impl GuestMem<'_> {
    pub(super) fn read<const N: usize>(&self, gpa: u64) -> core::result::Result<[u8; N], MemError> {
        let mut b = [0u8; N];
        match self.0.read_guest(gpa, &mut b) {
            Ok(true) => Ok(b),
            _ => Err(MemError),
        }
    }

    pub(super) fn write(&self, gpa: u64, b: &[u8]) -> core::result::Result<(), MemError> {
        match self.0.write_guest(gpa, b) {
            Ok(true) => Ok(()),
            _ => Err(MemError),
        }
    }
}

// The compare-and-exchange is not atomic against other vCPUs: a racing
// update of the same entry's accessed/dirty bits can be lost, which only
// costs the guest precision.
impl GuestPhys for GuestMem<'_> {
    fn read_u32(&mut self, gpa: u64) -> core::result::Result<u32, MemError> {
        self.read(gpa).map(u32::from_le_bytes)
    }

    fn read_u64(&mut self, gpa: u64) -> core::result::Result<u64, MemError> {
        self.read(gpa).map(u64::from_le_bytes)
    }

    fn cmpxchg_u32(
        &mut self,
        gpa: u64,
        old: u32,
        new: u32,
    ) -> core::result::Result<bool, MemError> {
        if self.read_u32(gpa)? != old {
            return Ok(false);
        }
        self.write(gpa, &new.to_le_bytes()).map(|()| true)
    }

    fn cmpxchg_u64(
        &mut self,
        gpa: u64,
        old: u64,
        new: u64,
    ) -> core::result::Result<bool, MemError> {
        if self.read_u64(gpa)? != old {
            return Ok(false);
        }
        self.write(gpa, &new.to_le_bytes()).map(|()| true)
    }
}

/// Translates a guest linear address with the vCPU's current paging mode.
pub(super) fn translate(
    vm: &Vm,
    arch: &ArchVcpu,
    gva: u64,
    access: Access,
) -> core::result::Result<u64, WalkError> {
    let mut cfg = WalkConfig::from_regs(
        arch.cr0(),
        arch.cr3(),
        arch.cr4(),
        arch.efer(),
        arch.rflags(),
    );
    cfg.amd = cpu_vendor() == Vendor::Amd;
    cfg.maxphyaddr = 48;
    paging::translate(&mut GuestMem(vm), &cfg, gva, access).map(|t| t.gpa)
}

/// The emulator's view of a vCPU.
struct EmuCpu<'a> {
    vm: &'a Vm,
    arch: &'a mut ArchVcpu,
}

impl Cpu for EmuCpu<'_> {
    fn gpr(&self, reg: u8) -> u64 {
        self.arch.gpr(reg)
    }
    fn set_gpr(&mut self, reg: u8, val: u64) {
        self.arch.set_gpr(reg, val)
    }
    fn rip(&self) -> u64 {
        self.arch.rip()
    }
    fn set_rip(&mut self, rip: u64) {
        self.arch.set_rip(rip)
    }
    fn rflags(&self) -> u64 {
        self.arch.rflags()
    }
    fn set_rflags(&mut self, rflags: u64) {
        self.arch.set_rflags(rflags)
    }
    fn segment_base(&self, seg: Segment) -> u64 {
        self.arch.segment_base(seg)
    }
    fn read_mem(&mut self, gva: u64, data: &mut [u8]) -> MemResult {
        self.each_part(gva, data.len(), false, |vm, gpa, r| {
            matches!(vm.read_guest(gpa, &mut data[r]), Ok(true))
        })
    }
    fn write_mem(&mut self, gva: u64, data: &[u8]) -> MemResult {
        self.each_part(gva, data.len(), true, |vm, gpa, r| {
            matches!(vm.write_guest(gpa, &data[r]), Ok(true))
        })
    }
}

impl EmuCpu<'_> {
    /// Runs `f` on each page part (gpa, range of the data) of an access
    /// that [`Self::pages`] found to be all RAM; MMIO or a fault otherwise.
    pub(super) fn each_part(
        &mut self,
        gva: u64,
        len: usize,
        write: bool,
        mut f: impl FnMut(&Vm, u64, core::ops::Range<usize>) -> bool,
    ) -> MemResult {
        let (parts, n) = match self.pages(gva, len, write) {
            Ok(p) => p,
            Err(r) => return r,
        };
        for &(g, off, c) in &parts[..n] {
            if !f(self.vm, g, off..off + c) {
                return MemResult::Mmio { gpa: parts[0].0 };
            }
        }
        MemResult::Done
    }

    /// Translates an access page by page: (gpa, offset, length) parts.
    /// A fault anywhere faults the whole access; any part that is not RAM
    /// (with the access's permission) makes it MMIO, before anything is
    /// written, and the caller splits it into fragments.
    #[allow(
        clippy::type_complexity,
        reason = "a fixed array of page parts and its length"
    )]
    pub(super) fn pages(
        &mut self,
        gva: u64,
        len: usize,
        write: bool,
    ) -> core::result::Result<([(u64, usize, usize); 2], usize), MemResult> {
        let user = self.arch.cpl() == 3;
        let access = if write { Access::WRITE } else { Access::READ }.user(user);
        let mut parts = [(0u64, 0usize, 0usize); 2];
        let (mut n, mut done) = (0, 0);
        while done < len && n < 2 {
            let a = gva.wrapping_add(done as u64);
            let chunk = (4096 - (a & 0xfff) as usize).min(len - done);
            match translate(self.vm, self.arch, a, access) {
                Ok(g) => parts[n] = (g, done, chunk),
                Err(WalkError::PageFault { error_code }) => {
                    return Err(MemResult::Fault(emulate::Exception {
                        vector: PF_VECTOR,
                        error_code: Some(error_code),
                        address: Some(a),
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
            n += 1;
            done += chunk;
        }
        let ram = parts[..n]
            .iter()
            .all(|&(g, _, c)| match self.vm.slot_of(g >> 12) {
                Some(s) => (!write || !s.readonly()) && s.contains((g + c as u64 - 1) >> 12),
                None => false,
            });
        if ram {
            Ok((parts, n))
        } else {
            Err(MemResult::Mmio { gpa: parts[0].0 })
        }
    }
}
