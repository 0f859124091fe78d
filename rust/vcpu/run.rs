// SPDX-License-Identifier: GPL-2.0

//! `KVM_RUN`: the run loop, completing what the last exit to userspace
//! started, and the dispatch of vendor-neutral exits.

use super::mmio::translate;
use super::*;

impl Vcpu {
    pub(super) fn run(&self, vm: &Vm) -> Result<isize> {
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        let run = &self.pages[0];
        let mut hdr = [0u8; 16];
        run.read_shared(RUN_VALID_REGS, &mut hdr);
        if hdr.iter().any(|&b| b != 0) {
            // kvm_valid_regs/kvm_dirty_regs: no KVM_CAP_SYNC_REGS here.
            return Err(EINVAL);
        }
        let mut cr8 = [0u8; 8];
        run.read_shared(RUN_CR8, &mut cr8);
        let cr8 = u64::from_ne_bytes(cr8);
        if cr8 > 15 {
            return Err(EINVAL);
        }
        inner.arch.set_cr8(cr8);
        let r = self.run_locked(vm, inner);
        inner.staging.cr8 = inner.arch.cr8();
        inner.staging.apic_base = inner.arch.apic_base();
        inner.staging.if_flag = u8::from(inner.arch.rflags() & (1 << 9) != 0);
        self.publish(inner);
        r
    }

    pub(super) fn run_locked(&self, vm: &Vm, inner: &mut Inner) -> Result<isize> {
        if let Flow::User = self.complete_pending(vm, inner)? {
            return Ok(0);
        }
        let mut ie = [0u8; 1];
        self.pages[0].read_shared(RUN_IMMEDIATE_EXIT, &mut ie);
        if ie[0] != 0 {
            return Err(EINTR);
        }
        loop {
            if kernel::current!().signal_pending() {
                inner.staging.exit_reason = exit::INTR;
                return Err(EINTR);
            }
            cpu::cond_resched();
            let e = inner.arch.enter(vm.ncr3, &self.running, &vm.tlb_gen)?;
            inner.has_run = true;
            if let Flow::User = self.handle_exit(vm, inner, e)? {
                return Ok(0);
            }
        }
    }

    /// Finishes what the last exit to userspace started.
    pub(super) fn complete_pending(&self, vm: &Vm, inner: &mut Inner) -> Result<Flow> {
        match core::mem::replace(&mut inner.pending, Pending::None) {
            Pending::None => Ok(Flow::Resume),
            Pending::IoOut { next_rip, rip } => {
                if inner.arch.rip() == rip {
                    inner.arch.set_rip(next_rip);
                }
                Ok(Flow::Resume)
            }
            Pending::IoIn { io, count, rip } => {
                if !io.string && inner.arch.rip() != rip {
                    // KVM drops an IN whose RIP userspace changed.
                    return Ok(Flow::Resume);
                }
                if io.string {
                    let n = usize::from(io.size) * count as usize;
                    // A page of data: too big for the kernel stack.
                    let mut data = core::mem::take(&mut inner.pio_buf);
                    self.pages[1].read_shared(0, &mut data[..n]);
                    let r = self.string_io_done(vm, inner, &io, count, Some(&data[..n]));
                    inner.pio_buf = data;
                    r
                } else {
                    let mut v = [0u8; 8];
                    self.pages[1].read_shared(0, &mut v[..usize::from(io.size)]);
                    let val = u64::from_le_bytes(v);
                    let rax = inner.arch.gpr(0);
                    let new = match io.size {
                        1 => (rax & !0xff) | val,
                        2 => (rax & !0xffff) | val,
                        // A 32-bit destination zero-extends into RAX.
                        _ => val & 0xffff_ffff,
                    };
                    inner.arch.set_gpr(0, new);
                    inner.arch.set_rip(io.next_rip);
                    Ok(Flow::Resume)
                }
            }
            Pending::IoOutString { io, count } => self.string_io_done(vm, inner, &io, count, None),
            Pending::MmioRead { insn, mut frags } => {
                // Userspace left this fragment's data in kvm_run.mmio.data.
                if let Some(i) = frags.f[..frags.n].iter().position(|f| f.mmio) {
                    let f = frags.f[i];
                    let mut d = [0u8; 8];
                    self.pages[0].read_shared(RUN_MMIO_DATA, &mut d);
                    let off = usize::from(f.off);
                    frags.data[off..off + usize::from(f.len)]
                        .copy_from_slice(&d[..usize::from(f.len)]);
                    frags.f[i].mmio = false;
                }
                self.next_read_frag(vm, inner, insn, frags)
            }
            Pending::MmioWrite { frags } => Ok(self.next_write_frag(inner, frags)),
        }
    }

    pub(super) fn handle_exit(&self, vm: &Vm, inner: &mut Inner, e: Exit) -> Result<Flow> {
        match e {
            Exit::Resume => Ok(Flow::Resume),
            Exit::Io(io) => self.io(vm, inner, io),
            Exit::Hlt { next_rip } => {
                self.skip(vm, inner, next_rip)?;
                inner.staging.exit_reason = exit::HLT;
                Ok(Flow::User)
            }
            Exit::Cpuid { next_rip } => {
                let leaf = inner.arch.gpr(0) as u32;
                let sub = inner.arch.gpr(1) as u32;
                let [a, b, c, d] = guest_cpuid::guest_cpuid(
                    &inner.cpuid,
                    leaf,
                    sub,
                    inner.arch.cr4(),
                    inner.arch.apic_base(),
                );
                inner.arch.set_gpr(0, u64::from(a));
                inner.arch.set_gpr(3, u64::from(b));
                inner.arch.set_gpr(1, u64::from(c));
                inner.arch.set_gpr(2, u64::from(d));
                self.skip(vm, inner, next_rip)?;
                Ok(Flow::Resume)
            }
            Exit::Msr { write, next_rip } => {
                let msr = inner.arch.gpr(1) as u32;
                let ok = if write {
                    let v = (inner.arch.gpr(2) << 32) | (inner.arch.gpr(0) & 0xffff_ffff);
                    inner.arch.set_msr(msr, v).is_ok()
                } else if let Ok(v) = inner.arch.get_msr(msr) {
                    inner.arch.set_gpr(0, v & 0xffff_ffff);
                    inner.arch.set_gpr(2, v >> 32);
                    true
                } else {
                    false
                };
                if ok {
                    self.skip(vm, inner, next_rip)?;
                } else {
                    inner.arch.inject_exception(GP_VECTOR, Some(0));
                }
                Ok(Flow::Resume)
            }
            Exit::Shutdown => {
                inner.staging.exit_reason = exit::SHUTDOWN;
                Ok(Flow::User)
            }
            Exit::Npf { gpa, write, fetch } => {
                if vm.fault_in(gpa, write)? {
                    return Ok(Flow::Resume);
                }
                if fetch {
                    // Executing from MMIO: KVM cannot emulate that either.
                    return self.internal_error(inner, internal::EMULATION, &[gpa]);
                }
                let insn = match self.fetch_insn(vm, inner) {
                    Ok(i) => i,
                    Err(f) => return f,
                };
                self.emulate(vm, inner, &insn, None)
            }
            Exit::DrAccess => self.debug_register(vm, inner),
            Exit::InvalidOpcode => self.invalid_opcode(vm, inner),
            Exit::CrWrite {
                cr,
                value,
                next_rip,
            } => self.cr_write(vm, inner, cr, value, next_rip),
            Exit::CrRead { cr, gpr, next_rip } => {
                if cr != 8 {
                    return self.internal_error(inner, internal::EMULATION, &[inner.arch.rip()]);
                }
                let v = inner.arch.cr8();
                inner.arch.set_gpr(gpr, v);
                self.skip(vm, inner, next_rip)?;
                Ok(Flow::Resume)
            }
            Exit::Hypercall { next_rip } => {
                // No hypercalls are enabled: KVM answers -KVM_ENOSYS.
                let enosys = (-1000i64) as u64;
                let long = inner.arch.mode() == decode::Mode::Bits64;
                inner
                    .arch
                    .set_gpr(0, if long { enosys } else { enosys & 0xffff_ffff });
                self.skip(vm, inner, next_rip)?;
                Ok(Flow::Resume)
            }
            Exit::Nop { next_rip } => {
                self.skip(vm, inner, next_rip)?;
                Ok(Flow::Resume)
            }
            Exit::Exception { vector, error_code } => {
                inner.arch.inject_exception(vector, error_code);
                Ok(Flow::Resume)
            }
            Exit::FailEntry(reason) => {
                inner.staging.set_fail_entry(reason, self.running_cpu());
                Ok(Flow::User)
            }
            Exit::Unexpected(code) => {
                self.internal_error(inner, internal::UNEXPECTED_EXIT_REASON, &[code])
            }
        }
    }

    /// Emulates MOV to/from DRn: DR4/5 alias DR6/7 unless CR4.DE (then
    /// #UD); high bits in DR6/DR7 are #GP, as on hardware.
    pub(super) fn debug_register(&self, vm: &Vm, inner: &mut Inner) -> Result<Flow> {
        let insn = match self.fetch_insn(vm, inner) {
            Ok(i) => i,
            Err(f) => return f,
        };
        let Some(m) = insn.debug_reg_move() else {
            return self.internal_error(inner, internal::EMULATION, &[inner.arch.rip()]);
        };
        let n = match m.special {
            4 | 5 if inner.arch.cr4() & CR4_DE != 0 => {
                inner.arch.inject_exception(UD_VECTOR, None);
                return Ok(Flow::Resume);
            }
            4 | 5 => m.special + 2,
            n @ (0..=3 | 6 | 7) => n,
            _ => {
                inner.arch.inject_exception(UD_VECTOR, None);
                return Ok(Flow::Resume);
            }
        };
        let long = inner.arch.mode() == decode::Mode::Bits64;
        if m.to_special {
            let v = inner.arch.gpr(m.gpr);
            let v = if long { v } else { v & 0xffff_ffff };
            if n >= 6 && v >> 32 != 0 {
                inner.arch.inject_exception(GP_VECTOR, Some(0));
                return Ok(Flow::Resume);
            }
            inner.arch.set_dr(n, v);
        } else {
            let v = inner.arch.dr(n);
            inner
                .arch
                .set_gpr(m.gpr, if long { v } else { v & 0xffff_ffff });
        }
        let rip = insn.next_rip(inner.arch.rip());
        inner
            .arch
            .set_rip(if long { rip } else { rip & 0xffff_ffff });
        Ok(Flow::Resume)
    }

    /// A guest MOV to CR0, CR4 or CR8 that the backend intercepted, under
    /// KVM's rules; #GP where KVM refuses.
    pub(super) fn cr_write(
        &self,
        vm: &Vm,
        inner: &mut Inner,
        cr: u8,
        value: u64,
        next_rip: Option<u64>,
    ) -> Result<Flow> {
        let value = if inner.arch.mode() == decode::Mode::Bits64 {
            value
        } else {
            value & 0xffff_ffff
        };
        let a = &inner.arch;
        let state = x86::CrState {
            cr0: a.cr0(),
            cr3: a.cr3(),
            cr4: a.cr4(),
            efer: a.efer(),
            cs_l: a.sregs().cs.l != 0,
        };
        let ok = match cr {
            8 if value & !0xf == 0 => {
                inner.arch.set_cr8(value);
                true
            }
            0 | 4 => match guest_cpuid::guest_cr_write(&inner.cpuid, cr, value, &state)? {
                x86::CrWrite::Gp => false,
                x86::CrWrite::Set { value, load_pdptes } => {
                    let old = (inner.arch.cr0(), inner.arch.cr4());
                    if cr == 0 {
                        inner.arch.set_cr0(value);
                    } else {
                        inner.arch.set_cr4(value);
                    }
                    if load_pdptes && !self.load_pdptes(vm, inner)? {
                        inner.arch.set_cr0(old.0);
                        inner.arch.set_cr4(old.1);
                        false
                    } else {
                        true
                    }
                }
            },
            _ => false,
        };
        if ok {
            self.skip(vm, inner, next_rip)?;
        } else {
            inner.arch.inject_exception(GP_VECTOR, Some(0));
        }
        Ok(Flow::Resume)
    }

    /// Reads the PAE PDPTEs at CR3 into the backend (VMX loads them from
    /// the VMCS on entry). `false` if they cannot be read or one is
    /// invalid (#GP for the instruction that asked).
    pub(super) fn load_pdptes(&self, vm: &Vm, inner: &mut Inner) -> Result<bool> {
        if !inner.arch.pae_paging() {
            return Ok(true);
        }
        let mut b = [0u8; 32];
        if !vm.read_guest(inner.arch.cr3() & 0xffff_ffe0, &mut b)? {
            return Ok(false);
        }
        let maxphy = guest_cpuid::maxphyaddr(&inner.cpuid);
        let mut p = [0u64; 4];
        for (i, e) in p.iter_mut().enumerate() {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[i * 8..i * 8 + 8]);
            *e = u64::from_le_bytes(w);
            if !x86::pdpte_valid(*e, maxphy) {
                return Ok(false);
            }
        }
        inner.arch.set_pdptes(p);
        Ok(true)
    }

    pub(super) fn running_cpu(&self) -> u32 {
        let np = cpu::NoPreempt::new();
        np.cpu() as u32
    }

    pub(super) fn internal_error(
        &self,
        inner: &mut Inner,
        suberror: u32,
        data: &[u64],
    ) -> Result<Flow> {
        inner.staging.set_internal_error(suberror, data);
        Ok(Flow::User)
    }

    /// Moves RIP past the instruction that exited: to `next_rip` when the
    /// hardware reported it, else past the instruction decoded at RIP.
    pub(super) fn skip(&self, vm: &Vm, inner: &mut Inner, next_rip: Option<u64>) -> Result {
        let rip = match next_rip {
            Some(r) => r,
            None => match self.fetch_insn(vm, inner) {
                Ok(i) => i.next_rip(inner.arch.rip()),
                // The instruction cannot be read again: leave RIP; the
                // guest sees the instruction once more.
                Err(_) => return Ok(()),
            },
        };
        let rip = if inner.arch.mode() == decode::Mode::Bits64 {
            rip
        } else {
            rip & 0xffff_ffff
        };
        inner.arch.set_rip(rip);
        Ok(())
    }

    /// Reads and decodes the instruction at CS:RIP.
    pub(super) fn fetch_insn(
        &self,
        vm: &Vm,
        inner: &mut Inner,
    ) -> core::result::Result<Insn, Result<Flow>> {
        let (bytes, n) = fetch_bytes(vm, inner);
        match decode::decode(&bytes[..n], inner.arch.mode(), cpu_vendor()) {
            Ok(i) => Ok(i),
            Err(_) => {
                let mut data = [0u64; 3];
                data[0] = inner.arch.rip();
                data[1] = u64::from_le_bytes(bytes[..8].try_into().unwrap_or([0; 8]));
                data[2] = n as u64;
                Err(self.internal_error(inner, internal::EMULATION, &data))
            }
        }
    }

    /// An intercepted #UD: VMMCALL (AMD's hypercall, which Intel CPUs do
    /// not know) is a hypercall in protected mode, as KVM's emulator makes
    /// it (KVM also rewrites it to VMCALL in guest memory; rkvm leaves the
    /// guest's code alone); anything else gets its #UD.
    pub(super) fn invalid_opcode(&self, vm: &Vm, inner: &mut Inner) -> Result<Flow> {
        let (b, n) = fetch_bytes(vm, inner);
        let protected = inner.arch.cr0() & 1 != 0 && inner.arch.rflags() & (1 << 17) == 0;
        if protected && n >= 3 && b[..3] == [0x0f, 0x01, 0xd9] {
            let next = inner.arch.rip().wrapping_add(3);
            return self.handle_exit(
                vm,
                inner,
                Exit::Hypercall {
                    next_rip: Some(next),
                },
            );
        }
        inner.arch.inject_exception(UD_VECTOR, None);
        Ok(Flow::Resume)
    }
}

/// Up to 15 instruction bytes at CS:RIP, through the guest's page tables;
/// fewer if the instruction crosses into an unmapped or non-RAM page.
pub(super) fn fetch_bytes(vm: &Vm, inner: &Inner) -> ([u8; 15], usize) {
    let linear = inner
        .arch
        .segment_base(Segment::Cs)
        .wrapping_add(inner.arch.rip());
    let mut bytes = [0u8; 15];
    let mut n = 0;
    while n < 15 {
        let a = linear.wrapping_add(n as u64);
        let chunk = (4096 - (a & 0xfff) as usize).min(15 - n);
        match translate(
            vm,
            &inner.arch,
            a,
            Access::FETCH.user(inner.arch.cpl() == 3),
        ) {
            Ok(gpa) => match vm.read_guest(gpa, &mut bytes[n..n + chunk]) {
                Ok(true) => n += chunk,
                _ => break,
            },
            Err(_) => break,
        }
    }
    (bytes, n)
}

/// The CPU vendor whose instruction semantics the emulator follows.
pub(super) fn cpu_vendor() -> Vendor {
    match crate::virt::Vendor::current() {
        crate::virt::Vendor::Svm => Vendor::Amd,
        crate::virt::Vendor::Vmx => Vendor::Intel,
    }
}
