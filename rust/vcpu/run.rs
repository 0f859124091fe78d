// SPDX-License-Identifier: GPL-2.0

//! `KVM_RUN`: the run loop, one guest entry (the sequence every backend's
//! world switch runs in), completing what the last exit to userspace
//! started, and the dispatch of vendor-neutral exits.

use super::{
    interrupts_enabled, Flow, Inner, Pending, Vcpu, GP_VECTOR, RUN_CR8, RUN_MMIO_DATA,
    RUN_REQUEST_INTERRUPT_WINDOW, RUN_VALID_REGS, UD_VECTOR,
};
use crate::{
    addr::{Gpa, Gva},
    backend::{ArchVcpu, Backend, Entry, Exit},
    cpuid,
    decode::{self, Insn, Segment},
    guest_cpuid,
    memory::MemOnce,
    msr,
    sys::cpu::{self, NoPreempt},
    uapi::{exit, internal},
    vm::Vm,
    x86::{self, CR0_PE, CR4_DE, CR4_OSXSAVE, RFLAGS_VM},
};
use core::sync::atomic::{AtomicI32, Ordering};
use kernel::prelude::*;

/// A vCPU's "in guest mode on CPU n" for one entry, for the kicks that make
/// it leave the guest (TLB flushes). Cleared when dropped, so that no path
/// out of an entry leaves other CPUs kicking a CPU the vCPU has left.
struct Running<'a>(&'a AtomicI32);

impl<'a> Running<'a> {
    fn publish(slot: &'a AtomicI32, cpu: usize) -> Self {
        slot.store(cpu as i32, Ordering::SeqCst);
        Self(slot)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.store(-1, Ordering::SeqCst);
    }
}

impl<B: Backend> Vcpu<B> {
    pub(super) fn run(&self, vm: &Vm<B>) -> Result<isize> {
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
        // Userspace's TPR, unless the APIC is in the kernel (KVM).
        if inner.apic.is_none() {
            if cr8 > 15 {
                return Err(EINVAL);
            }
            inner.state.cr8 = cr8;
        }
        let r = self.run_locked(vm, inner);
        inner.staging.cr8 = inner.state.cr8;
        inner.staging.apic_base = inner.state.apic_base;
        inner.staging.if_flag = u8::from(interrupts_enabled(inner.arch.rflags()));
        inner.staging.ready_for_interrupt_injection = u8::from(inner.ready_for_interrupt());
        self.publish(inner);
        r
    }

    fn run_locked(&self, vm: &Vm<B>, inner: &mut Inner<B>) -> Result<isize> {
        let flow = self.complete_pending(vm, inner)?;
        if let Flow::User = inner.step_trap(flow) {
            return Ok(0);
        }
        // request_interrupt_window and immediate_exit.
        let mut flags = [0u8; 2];
        self.pages[0].read_shared(RUN_REQUEST_INTERRUPT_WINDOW, &mut flags);
        let irq_window = flags[0] != 0;
        if flags[1] != 0 {
            return Err(EINTR);
        }
        if self.uninitialized(inner) {
            // As KVM: an AP that never saw INIT blocks once, takes what
            // woke it, and returns EAGAIN (EINTR for a signal).
            self.block_once(vm, inner);
            if kernel::current!().signal_pending() {
                inner.staging.exit_reason = exit::INTR;
                return Err(EINTR);
            }
            return Err(EAGAIN);
        }
        loop {
            if core::mem::take(&mut inner.triple_fault) {
                inner.staging.exit_reason = exit::SHUTDOWN;
                return Ok(0);
            }
            if let Some(v) = inner.apic.as_mut().and_then(|a| a.eoi_exit.take()) {
                inner.staging.set_ioapic_eoi(v);
                return Ok(0);
            }
            if kernel::current!().signal_pending() {
                inner.staging.exit_reason = exit::INTR;
                return Err(EINTR);
            }
            if inner.apic.is_some() && !self.apic_runnable(vm, inner) {
                // Halted or waiting for INIT/SIPI: sleep until something
                // is posted or a signal comes, then look again.
                self.bell.wait();
                continue;
            }
            cpu::cond_resched();
            if core::mem::take(&mut inner.inject_bp) {
                self.skip_for_injected_bp(vm, inner);
            }
            inner.pvclock_sync(vm);
            self.sync_to_vapic(vm, inner);
            let window = irq_window && inner.accepts_pic_interrupt();
            let e = self.enter(vm, inner, window)?;
            self.sync_from_vapic(vm, inner);
            let flow = self.handle_exit(vm, inner, e)?;
            if let Flow::User = inner.step_trap(flow) {
                return Ok(0);
            }
            // As KVM: once userspace may inject, it gets the chance.
            if irq_window && inner.ready_for_interrupt() {
                inner.staging.exit_reason = exit::IRQ_WINDOW_OPEN;
                return Ok(0);
            }
        }
    }

    /// One guest entry: the backend's three steps around the generic
    /// duties (TLB generation, kick publication, FPU and XCR0, and the
    /// last check for a signal or reschedule with interrupts off).
    #[inline]
    fn enter(&self, vm: &Vm<B>, inner: &mut Inner<B>, irq_window: bool) -> Result<Exit> {
        inner.inject_events(irq_window);
        let np = NoPreempt::new();
        let cpu = np.cpu();
        // Publish before reading the generation: whoever unmaps bumps the
        // generation first and then kicks every published CPU, so either we
        // see the new generation here or we get kicked out of the guest.
        let running = Running::publish(&self.bell.running, cpu);
        let gen = vm.tlb_gen.load(Ordering::SeqCst);
        let entry = Entry {
            cpu,
            root: vm.ncr3,
            flush: gen != inner.tlb_gen,
            single_step: inner.guest_debug.single_step(),
            intercept_bp: inner.guest_debug.sw_bp(),
        };
        inner.arch.prepare(&inner.state, &entry)?;
        inner.state.changed = 0;
        // The backend holds on to the flush until the guest runs.
        inner.tlb_gen = gen;
        // As KVM, the guest's XCR0 is loaded only while it can use it.
        let xcr0 = (inner.arch.cr4() & CR4_OSXSAVE != 0).then_some(inner.state.xcr0);
        let (arch, state) = (&mut inner.arch, &mut inner.state);
        let entered = inner.fpu.with_loaded(&np, xcr0, |irq| -> Result<bool> {
            // Anything that sets a signal or a reschedule, or posts to the
            // APIC, after this check also interrupts this CPU, which exits
            // the guest at once.
            if cpu::exit_requested(irq) || self.bell.posted() {
                return Ok(false);
            }
            arch.switch(state, irq)?;
            Ok(true)
        })?;
        drop(running);
        drop(np);
        if !entered {
            return Ok(Exit::Resume);
        }
        inner.has_run = true;
        let e = inner.arch.complete(&mut inner.state);
        inner.complete_events();
        Ok(e)
    }

    /// Finishes what the last exit to userspace started.
    fn complete_pending(&self, vm: &Vm<B>, inner: &mut Inner<B>) -> Result<Flow> {
        let mut mem = vm.mem_once();
        match core::mem::replace(&mut inner.pending, Pending::None) {
            Pending::None => Ok(Flow::Resume),
            Pending::IoOut { next_rip, rip } => {
                if inner.arch.rip() == rip {
                    inner.advance_rip(next_rip);
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
                    let r = self.string_io_done(&mut mem, inner, &io, count, Some(&data[..n]));
                    inner.pio_buf = data;
                    r
                } else {
                    let mut v = [0u8; 8];
                    self.pages[1].read_shared(0, &mut v[..usize::from(io.size)]);
                    let val = u64::from_le_bytes(v);
                    let rax = inner.gpr(0);
                    let new = match io.size {
                        1 => (rax & !0xff) | val,
                        2 => (rax & !0xffff) | val,
                        // A 32-bit destination zero-extends into RAX.
                        _ => val & 0xffff_ffff,
                    };
                    inner.set_gpr(0, new);
                    inner.advance_rip(io.next_rip);
                    Ok(Flow::Resume)
                }
            }
            Pending::IoOutString { io, count } => {
                self.string_io_done(&mut mem, inner, &io, count, None)
            }
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
                self.next_read_frag(&vm.ioeventfds, mem.get(), inner, insn, frags)
            }
            Pending::MmioWrite { frags } => Ok(self.next_write_frag(inner, frags)),
        }
    }

    fn handle_exit(&self, vm: &Vm<B>, inner: &mut Inner<B>, e: Exit) -> Result<Flow> {
        // At most one read of the slot table for the whole exit.
        let mut mem = vm.mem_once();
        let mem = &mut mem;
        match e {
            Exit::Resume => Ok(Flow::Resume),
            Exit::Io(io) => self.io(&vm.ioeventfds, mem, inner, io),
            Exit::Hlt { next_rip } => {
                // A single step over HLT is reported only with the APIC in
                // the kernel (then the vCPU halts too); KVM_EXIT_HLT wins
                // otherwise (kvm_emulate_halt).
                self.skip(mem, inner, next_rip);
                // With the APIC in the kernel the vCPU sleeps here.
                if let Some(a) = inner.apic.as_mut() {
                    a.mp_state = super::apic::mp::HALTED;
                    return Ok(Flow::Resume);
                }
                inner.staging.exit_reason = exit::HLT;
                Ok(Flow::User)
            }
            // CPUID faulting: CPUID outside ring 0 is #GP (kvm_emulate_cpuid).
            Exit::Cpuid { .. } if inner.msrs.cpuid_faulting() && inner.arch.cpl() > 0 => {
                inner.queue_exception(GP_VECTOR, Some(0));
                Ok(Flow::Resume)
            }
            Exit::Cpuid { next_rip } => {
                let leaf = inner.gpr(0) as u32;
                let sub = inner.gpr(1) as u32;
                let rt = cpuid::Runtime {
                    xcr0: inner.state.xcr0,
                    cr4: inner.arch.cr4(),
                    apic_base: inner.state.apic_base,
                };
                let [a, b, c, d] = guest_cpuid::guest_cpuid(&inner.cpuid, leaf, sub, rt);
                inner.set_gpr(0, u64::from(a));
                inner.set_gpr(3, u64::from(b));
                inner.set_gpr(1, u64::from(c));
                inner.set_gpr(2, u64::from(d));
                self.skip(mem, inner, next_rip);
                Ok(Flow::Resume)
            }
            Exit::Msr { write, next_rip } => {
                let index = inner.gpr(1) as u32;
                let ok = if write {
                    let v = (inner.gpr(2) << 32) | (inner.gpr(0) & 0xffff_ffff);
                    inner.set_msr(index, v, false)
                } else if let Some(v) = inner.get_msr(index, false) {
                    inner.set_gpr(0, v & 0xffff_ffff);
                    inner.set_gpr(2, v >> 32);
                    true
                } else {
                    false
                };
                if ok {
                    self.skip(mem, inner, next_rip);
                } else {
                    inner.queue_exception(GP_VECTOR, Some(0));
                }
                Ok(Flow::Resume)
            }
            // No virtual PMU: every counter is #GP (kvm_emulate_rdpmc).
            Exit::Rdpmc => {
                inner.queue_exception(GP_VECTOR, Some(0));
                Ok(Flow::Resume)
            }
            Exit::Xsetbv { next_rip } => {
                if self.xsetbv(inner) {
                    self.skip(mem, inner, next_rip);
                }
                Ok(Flow::Resume)
            }
            Exit::Shutdown => {
                inner.staging.exit_reason = exit::SHUTDOWN;
                Ok(Flow::User)
            }
            Exit::Npf { gpa, write, fetch } => {
                if vm.fault_in(mem.get(), gpa, write)? {
                    return Ok(Flow::Resume);
                }
                if fetch {
                    // Executing from MMIO: KVM cannot emulate that either.
                    return Ok(self.internal_error(inner, internal::EMULATION, &[gpa.0]));
                }
                match self.fetch_insn(mem, inner) {
                    Ok(insn) => self.emulate(&vm.ioeventfds, mem.get(), inner, &insn, None),
                    Err(f) => Ok(f),
                }
            }
            Exit::DrAccess => Ok(self.debug_register(mem, inner)),
            Exit::Debug(d) => Ok(inner.debug_exception(d)),
            Exit::Breakpoint { pc } => Ok(inner.breakpoint(pc)),
            Exit::InvalidOpcode => Ok(self.invalid_opcode(mem, inner)),
            Exit::CrWrite {
                cr,
                value,
                next_rip,
            } => Ok(self.cr_write(mem, inner, cr, value, next_rip)),
            Exit::Cr8Write => {
                let insn = match self.fetch_insn(mem, inner) {
                    Ok(i) => i,
                    Err(f) => return Ok(f),
                };
                match insn.control_reg_move() {
                    Some(m) if m.to_special && m.special == 8 => {
                        let next = insn.next_rip(inner.arch.rip());
                        Ok(self.cr_write(mem, inner, 8, inner.gpr(m.gpr), Some(next)))
                    }
                    _ => {
                        let rip = inner.arch.rip();
                        Ok(self.internal_error(inner, internal::EMULATION, &[rip]))
                    }
                }
            }
            Exit::CrRead { cr, gpr, next_rip } => {
                if cr != 8 {
                    let rip = inner.arch.rip();
                    return Ok(self.internal_error(inner, internal::EMULATION, &[rip]));
                }
                inner.set_gpr(gpr, inner.state.cr8);
                self.skip(mem, inner, next_rip);
                Ok(Flow::Resume)
            }
            Exit::Hypercall { next_rip } => {
                self.hypercall(inner);
                self.skip(mem, inner, next_rip);
                Ok(Flow::Resume)
            }
            Exit::Nop { next_rip } => {
                self.skip(mem, inner, next_rip);
                Ok(Flow::Resume)
            }
            Exit::Exception { vector, error_code } => {
                inner.queue_exception(vector, error_code);
                Ok(Flow::Resume)
            }
            Exit::FailEntry(reason) => {
                inner.staging.set_fail_entry(reason, running_cpu());
                Ok(Flow::User)
            }
            Exit::Unexpected(code) => {
                Ok(self.internal_error(inner, internal::UNEXPECTED_EXIT_REASON, &[code]))
            }
        }
    }

    /// A #BP of `KVM_GUESTDBG_INJECT_BP` is about to be delivered: it is
    /// pushed with RIP past the instruction there, as KVM injects it.
    fn skip_for_injected_bp(&self, vm: &Vm<B>, inner: &mut Inner<B>) {
        let ex = &inner.events.exception;
        if !(ex.pending && ex.vector == crate::events::BP_VECTOR) {
            return;
        }
        let mut mem = vm.mem_once();
        let (bytes, n) = self.fetch_bytes(&mut mem, inner);
        if let Ok(i) = decode::decode(&bytes[..n], inner.mode(), B::CPU) {
            inner.skip_for_bp(u64::from(i.len));
        }
    }

    /// VMMCALL/VMCALL: no hypercalls are enabled, so KVM answers
    /// -KVM_ENOSYS in RAX (its low half outside 64-bit mode).
    fn hypercall(&self, inner: &mut Inner<B>) {
        let enosys = (-1000i64) as u64;
        let v = inner.mode_width(enosys);
        inner.set_gpr(0, v);
    }

    /// Emulates MOV to/from DRn: DR4/5 alias DR6/7 unless CR4.DE (then
    /// #UD); high bits in DR6/DR7 are #GP, as on hardware.
    fn debug_register(&self, mem: &mut MemOnce<'_>, inner: &mut Inner<B>) -> Flow {
        let insn = match self.fetch_insn(mem, inner) {
            Ok(i) => i,
            Err(f) => return f,
        };
        let Some(m) = insn.debug_reg_move() else {
            let rip = inner.arch.rip();
            return self.internal_error(inner, internal::EMULATION, &[rip]);
        };
        // General detect: the access faults with DR6.BD instead.
        if inner.state.dr7 & crate::debug::DR7_GD != 0 {
            inner.queue_db(crate::debug::DR6_BD);
            return Flow::Resume;
        }
        let n = match m.special {
            4 | 5 if inner.arch.cr4() & CR4_DE != 0 => {
                inner.queue_exception(UD_VECTOR, None);
                return Flow::Resume;
            }
            4 | 5 => m.special + 2,
            n @ (0..=3 | 6 | 7) => n,
            _ => {
                inner.queue_exception(UD_VECTOR, None);
                return Flow::Resume;
            }
        };
        if m.to_special {
            let v = inner.mode_width(inner.gpr(m.gpr));
            if n >= 6 && v >> 32 != 0 {
                inner.queue_exception(GP_VECTOR, Some(0));
                return Flow::Resume;
            }
            let s = &mut inner.state;
            match n {
                0..=3 => s.db[usize::from(n)] = v,
                // Reserved bits read as set, as the hardware keeps them.
                6 => inner.arch.set_dr6(x86::dr6_fixed(v)),
                _ => s.dr7 = x86::dr7_fixed(v),
            }
            inner.update_dr7();
        } else {
            let s = &inner.state;
            let v = match n {
                0..=3 => s.db[usize::from(n)],
                6 => inner.arch.dr6(),
                _ => s.dr7,
            };
            let v = inner.mode_width(v);
            inner.set_gpr(m.gpr, v);
        }
        let rip = inner.mode_width(insn.next_rip(inner.arch.rip()));
        inner.advance_rip(rip);
        Flow::Resume
    }

    /// XSETBV under KVM's rules (`kvm_emulate_xsetbv`): #GP outside CPL 0
    /// or for a value the guest may not set. (#UD with CR4.OSXSAVE clear
    /// comes from the hardware, before the intercept.) Whether it was
    /// done, so the instruction is skipped.
    fn xsetbv(&self, inner: &mut Inner<B>) -> bool {
        let index = inner.gpr(1) as u32;
        let value = (inner.gpr(2) << 32) | (inner.gpr(0) & 0xffff_ffff);
        // Only what the host enabled can be loaded for the guest.
        let allowed = inner.policy.caps.xcr0 & inner.fpu.host_xcr0().unwrap_or(0);
        if inner.arch.cpl() != 0 || !msr::xcr0_valid(index, value, allowed) {
            inner.queue_exception(GP_VECTOR, Some(0));
            return false;
        }
        inner.state.xcr0 = value;
        true
    }

    /// A guest MOV to CR0, CR4 or CR8 that the backend intercepted, under
    /// KVM's rules; #GP where KVM refuses.
    fn cr_write(
        &self,
        mem: &mut MemOnce<'_>,
        inner: &mut Inner<B>,
        cr: u8,
        value: u64,
        next_rip: Option<u64>,
    ) -> Flow {
        let value = inner.mode_width(value);
        let a = &inner.arch;
        let state = x86::CrState {
            cr0: a.cr0(),
            cr3: a.cr3(),
            cr4: a.cr4(),
            efer: a.efer(),
            cs_l: a.segment(crate::backend::Sreg::Seg(Segment::Cs)).l != 0,
        };
        let ok = match cr {
            8 if value & !0xf == 0 && inner.apic.is_some() => {
                inner.set_tpr(value);
                true
            }
            8 if value & !0xf == 0 => {
                let lowered = value < inner.state.cr8;
                inner.state.cr8 = value;
                if lowered {
                    // Userspace's local APIC may now have an interrupt
                    // to deliver (KVM's handle_cr / cr8_write_interception).
                    self.skip(mem, inner, next_rip);
                    inner.staging.exit_reason = exit::SET_TPR;
                    return Flow::User;
                }
                true
            }
            0 | 4 => match guest_cpuid::guest_cr_write(&inner.policy, cr, value, &state) {
                x86::CrWrite::Gp => false,
                x86::CrWrite::Set { value, load_pdptes } => {
                    let old = (inner.arch.cr0(), inner.arch.cr4());
                    if cr == 0 {
                        inner.arch.set_cr0(value);
                    } else {
                        inner.arch.set_cr4(value);
                    }
                    if load_pdptes && !self.load_pdptes(mem, inner) {
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
            self.skip(mem, inner, next_rip);
        } else {
            inner.queue_exception(GP_VECTOR, Some(0));
        }
        Flow::Resume
    }

    /// Reads the PAE PDPTEs at CR3 into the backend, if VM entry loads them
    /// from the VMCS. `false` if they cannot be read or one is invalid
    /// (#GP for the instruction that asked).
    pub(super) fn load_pdptes(&self, mem: &mut MemOnce<'_>, inner: &mut Inner<B>) -> bool {
        if !inner.arch.loads_pdptes()
            || !x86::pae_paging(inner.arch.cr0(), inner.arch.cr4(), inner.arch.efer())
        {
            return true;
        }
        let mut b = [0u8; 32];
        if mem
            .get()
            .read(Gpa(inner.arch.cr3() & 0xffff_ffe0), &mut b)
            .is_err()
        {
            return false;
        }
        let mut p = [0u64; 4];
        for (i, e) in p.iter_mut().enumerate() {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[i * 8..i * 8 + 8]);
            *e = u64::from_le_bytes(w);
            if !x86::pdpte_valid(*e, inner.policy.caps.maxphyaddr) {
                return false;
            }
        }
        inner.arch.set_pdptes(p);
        true
    }

    /// Reports an emulation failure or an unexpected exit to userspace.
    pub(super) fn internal_error(&self, inner: &mut Inner<B>, suberror: u32, data: &[u64]) -> Flow {
        inner.staging.set_internal_error(suberror, data);
        Flow::User
    }

    /// Moves RIP past the instruction that exited: to `next_rip` when the
    /// hardware reported it, else past the instruction decoded at RIP. If
    /// the instruction cannot be read again, RIP stays and the guest runs
    /// it once more.
    pub(super) fn skip(&self, mem: &mut MemOnce<'_>, inner: &mut Inner<B>, next_rip: Option<u64>) {
        let rip = match next_rip {
            Some(r) => r,
            None => match self.fetch_insn(mem, inner) {
                Ok(i) => i.next_rip(inner.arch.rip()),
                Err(_) => return,
            },
        };
        let rip = inner.mode_width(rip);
        inner.advance_rip(rip);
    }

    /// The instruction bytes at CS:RIP (up to 15; fewer where the
    /// instruction crosses into a page that cannot be fetched).
    fn fetch_bytes(&self, mem: &mut MemOnce<'_>, inner: &Inner<B>) -> ([u8; 15], usize) {
        let gva = Gva(inner
            .arch
            .segment_base(Segment::Cs)
            .wrapping_add(inner.arch.rip()));
        mem.get().fetch(&inner.paging(), gva)
    }

    /// Reads and decodes the instruction at CS:RIP; an emulation failure
    /// for userspace if it cannot.
    pub(super) fn fetch_insn(
        &self,
        mem: &mut MemOnce<'_>,
        inner: &mut Inner<B>,
    ) -> core::result::Result<Insn, Flow> {
        let (bytes, n) = self.fetch_bytes(mem, inner);
        match decode::decode(&bytes[..n], inner.mode(), B::CPU) {
            Ok(i) => Ok(i),
            Err(_) => {
                let mut first = [0u8; 8];
                first.copy_from_slice(&bytes[..8]);
                let data = [inner.arch.rip(), u64::from_le_bytes(first), n as u64];
                Err(self.internal_error(inner, internal::EMULATION, &data))
            }
        }
    }

    /// An intercepted #UD: VMMCALL (AMD's hypercall, which Intel CPUs do
    /// not know) is a hypercall in protected mode, as KVM's emulator makes
    /// it (KVM also rewrites it to VMCALL in guest memory; rkvm leaves the
    /// guest's code alone); anything else gets its #UD.
    fn invalid_opcode(&self, mem: &mut MemOnce<'_>, inner: &mut Inner<B>) -> Flow {
        let (b, n) = self.fetch_bytes(mem, inner);
        let protected = inner.arch.cr0() & CR0_PE != 0 && inner.arch.rflags() & RFLAGS_VM == 0;
        if protected && n >= 3 && b[..3] == [0x0f, 0x01, 0xd9] {
            self.hypercall(inner);
            let next = inner.mode_width(inner.arch.rip().wrapping_add(3));
            inner.advance_rip(next);
            return Flow::Resume;
        }
        inner.queue_exception(UD_VECTOR, None);
        Flow::Resume
    }
}

/// The CPU this code runs on now (for `KVM_EXIT_FAIL_ENTRY`).
fn running_cpu() -> u32 {
    NoPreempt::new().cpu() as u32
}

impl<B: Backend> Inner<B> {
    /// Brings the guest's kvmclock structures up to date before an entry.
    fn pvclock_sync(&mut self, vm: &Vm<B>) {
        let mem = vm.mem();
        self.pvclock.sync(&mem, self.state.tsc_offset, self.tsc_khz);
    }
}

impl<B: Backend> Vcpu<B> {
    /// `pvclock_sync` from an ioctl (`KVM_SET_MSRS`).
    pub(super) fn kvmclock_sync(&self, vm: &Vm<B>) {
        self.inner.lock().pvclock_sync(vm);
    }
}
