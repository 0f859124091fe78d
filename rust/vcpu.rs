// SPDX-License-Identifier: GPL-2.0

//! A virtual CPU: its file descriptor, the shared `kvm_run` page, the
//! register ioctls and `KVM_RUN` with the vendor-neutral exit handling.

use crate::{
    abi,
    decode::{self, Insn, Segment, Vendor},
    emulate::{self, Cpu, MemResult, Outcome},
    guest_cpuid,
    paging::{self, Access, GuestPhys, MemError, WalkConfig, WalkError},
    sys::{cpu, file::AnonFile, mem::Pages, uaccess},
    uapi::{
        self, exit, internal, KvmCpuid2Header, KvmCpuidEntry2, KvmMsrEntry, KvmMsrsHeader, KvmRegs,
        KvmRun, KvmSregs,
    },
    virt::{ArchVcpu, Exit, IoExit},
    vm::Vm,
    x86,
};
use core::sync::atomic::AtomicI32;
use kernel::{
    new_mutex,
    prelude::*,
    sync::{Arc, ArcBorrow, Mutex},
};

/// Offsets in `struct kvm_run` (asserted in core/src/uapi.rs).
const RUN_IMMEDIATE_EXIT: usize = 1;
const RUN_OUT_START: usize = 8;
const RUN_OUT_END: usize = 288;
const RUN_CR8: usize = 16;
const RUN_VALID_REGS: usize = 288;
const RUN_MMIO_DATA: usize = 40;

/// Vectors rkvm injects.
const UD_VECTOR: u8 = 6;
const GP_VECTOR: u8 = 13;
/// CR4.DE: DR4/DR5 do not alias DR6/DR7.
const CR4_DE: u64 = 1 << 3;
const PF_VECTOR: u8 = 14;

/// What the next `KVM_RUN` must finish before entering the guest.
enum Pending {
    None,
    /// IN/INS: userspace left the data in the PIO page. `rip` is where the
    /// instruction was: if userspace moved RIP meanwhile, the IN is dropped.
    IoIn {
        io: IoExit,
        count: u32,
        rip: u64,
    },
    /// OUT: skip the instruction unless userspace moved RIP.
    IoOut {
        next_rip: u64,
        rip: u64,
    },
    /// OUTS: userspace consumed the data; advance the registers.
    IoOutString {
        io: IoExit,
        count: u32,
    },
    /// An emulated instruction's MMIO read, in up to two page fragments:
    /// when all are in, emulate again with the data.
    MmioRead {
        insn: Insn,
        frags: Frags,
    },
    /// The rest of an MMIO write that crossed a page.
    MmioWrite {
        frags: Frags,
    },
}

/// One page's part of an MMIO access.
#[derive(Clone, Copy, Default)]
struct Frag {
    gpa: u64,
    /// Offset of this part in the access's data.
    off: u8,
    len: u8,
    /// Still needs userspace (RAM parts are done in the kernel).
    mmio: bool,
}

/// An MMIO access split at a page boundary, as KVM splits them: each exit
/// to userspace stays within one page.
#[derive(Clone, Copy, Default)]
struct Frags {
    f: [Frag; 2],
    n: usize,
    data: [u8; 8],
    len: u8,
}

struct Inner {
    arch: ArchVcpu,
    pending: Pending,
    /// The exit fields to publish in `kvm_run` (header and exit union).
    staging: KBox<KvmRun>,
    cpuid: KVec<crate::cpuid::Entry>,
    /// The guest has entered at least once: its CPUID is frozen.
    has_run: bool,
    /// A page-sized buffer for string IO data (kept off the stack).
    pio_buf: KVec<u8>,
}

/// One vCPU, owned by its VM.
#[pin_data]
pub(crate) struct Vcpu {
    pub(crate) id: u32,
    /// `[kvm_run, PIO data]`, mapped by userspace.
    pages: KVec<Pages>,
    #[pin]
    inner: Mutex<Inner>,
    /// The CPU this vCPU is in guest mode on, or -1.
    pub(crate) running: AtomicI32,
}

/// What a vCPU file descriptor holds: the vCPU and a reference that keeps
/// its VM alive.
pub(crate) struct VcpuFile {
    pub(crate) vm: Arc<Vm>,
    pub(crate) vcpu: Arc<Vcpu>,
}

/// What to do after an exit was handled.
enum Flow {
    Resume,
    /// Return to userspace with the exit in `staging`.
    User,
}

impl Vcpu {
    /// A vCPU in KVM's reset state.
    pub(crate) fn new(id: u32) -> Result<Arc<Self>> {
        let mut pages = KVec::with_capacity(abi::VCPU_MMAP_PAGES, GFP_KERNEL)?;
        for _ in 0..abi::VCPU_MMAP_PAGES {
            pages.push(Pages::new(0)?, GFP_KERNEL)?;
        }
        let inner = Inner {
            arch: ArchVcpu::new(id)?,
            pending: Pending::None,
            staging: KBox::new(KvmRun::default(), GFP_KERNEL)?,
            cpuid: KVec::new(),
            has_run: false,
            pio_buf: {
                let mut b = KVec::with_capacity(4096, GFP_KERNEL)?;
                b.resize(4096, 0, GFP_KERNEL)?;
                b
            },
        };
        Arc::pin_init(
            pin_init!(Self {
                id,
                pages,
                inner <- new_mutex!(inner),
                running: AtomicI32::new(-1),
            }),
            GFP_KERNEL,
        )
    }

    fn publish(&self, inner: &Inner) {
        let staging: &KvmRun = &inner.staging;
        let bytes = kernel::transmute::AsBytes::as_bytes(staging);
        self.pages[0].write_shared(RUN_OUT_START, &bytes[RUN_OUT_START..RUN_OUT_END]);
    }

    fn run(&self, vm: &Vm) -> Result<isize> {
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

    fn run_locked(&self, vm: &Vm, inner: &mut Inner) -> Result<isize> {
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
    fn complete_pending(&self, vm: &Vm, inner: &mut Inner) -> Result<Flow> {
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

    fn handle_exit(&self, vm: &Vm, inner: &mut Inner, e: Exit) -> Result<Flow> {
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
    fn debug_register(&self, vm: &Vm, inner: &mut Inner) -> Result<Flow> {
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
    fn cr_write(
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
    fn load_pdptes(&self, vm: &Vm, inner: &mut Inner) -> Result<bool> {
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

    fn running_cpu(&self) -> u32 {
        let np = cpu::NoPreempt::new();
        np.cpu() as u32
    }

    fn internal_error(&self, inner: &mut Inner, suberror: u32, data: &[u64]) -> Result<Flow> {
        inner.staging.set_internal_error(suberror, data);
        Ok(Flow::User)
    }

    /// Moves RIP past the instruction that exited: to `next_rip` when the
    /// hardware reported it, else past the instruction decoded at RIP.
    fn skip(&self, vm: &Vm, inner: &mut Inner, next_rip: Option<u64>) -> Result {
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
    fn fetch_insn(&self, vm: &Vm, inner: &mut Inner) -> core::result::Result<Insn, Result<Flow>> {
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
    fn invalid_opcode(&self, vm: &Vm, inner: &mut Inner) -> Result<Flow> {
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

    /// Emulates `insn` (an MMIO access); `resume` carries MMIO read data.
    fn emulate(
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
    fn split(
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
    fn next_read_frag(&self, vm: &Vm, inner: &mut Inner, insn: Insn, frags: Frags) -> Result<Flow> {
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
    fn next_write_frag(&self, inner: &mut Inner, mut frags: Frags) -> Flow {
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

    /// An IN/OUT exit: data goes through the PIO page, as in KVM.
    fn io(&self, vm: &Vm, inner: &mut Inner, io: IoExit) -> Result<Flow> {
        let size = usize::from(io.size);
        let page_off = abi::PIO_PAGE_OFFSET * 4096;
        if !io.string {
            let rip = inner.arch.rip();
            if !io.input {
                let v = inner.arch.gpr(0).to_le_bytes();
                self.pages[1].write_shared(0, &v[..size]);
                // RIP moves past the OUT when the exit completes, except for
                // port 0x7e (KVM_X86_QUIRK_OUT_7E_INC_RIP, on by default).
                if io.port == 0x7e {
                    inner.arch.set_rip(io.next_rip);
                } else {
                    inner.pending = Pending::IoOut {
                        next_rip: io.next_rip,
                        rip,
                    };
                }
            }
            inner.staging.set_io(
                if io.input {
                    uapi::KVM_EXIT_IO_IN
                } else {
                    uapi::KVM_EXIT_IO_OUT
                },
                io.size,
                io.port,
                1,
                page_off,
            );
            if io.input {
                inner.pending = Pending::IoIn { io, count: 1, rip };
            }
            return Ok(Flow::User);
        }
        let amask = addr_mask(io.addr_size);
        let count = if io.rep { inner.arch.gpr(1) & amask } else { 1 };
        if count == 0 {
            inner.arch.set_rip(io.next_rip);
            return Ok(Flow::Resume);
        }
        // At most one PIO page per exit, as KVM does.
        let count = count.min((4096 / size) as u64) as u32;
        if !io.input {
            let mut data = core::mem::take(&mut inner.pio_buf);
            let n = size * count as usize;
            let base = inner.arch.segment_base(io.seg);
            let si = inner.arch.gpr(6) & amask;
            let down = inner.arch.rflags() & (1 << 10) != 0;
            for i in 0..count as usize {
                let off = if down {
                    si.wrapping_sub((i * size) as u64)
                } else {
                    si.wrapping_add((i * size) as u64)
                };
                let lin = base.wrapping_add(off & amask);
                if let Err(f) =
                    self.read_linear(vm, inner, lin, &mut data[i * size..(i + 1) * size])
                {
                    inner.pio_buf = data;
                    return f;
                }
            }
            self.pages[1].write_shared(0, &data[..n]);
            inner.pio_buf = data;
            inner.pending = Pending::IoOutString { io, count };
        } else {
            let rip = inner.arch.rip();
            inner.pending = Pending::IoIn { io, count, rip };
        }
        inner.staging.set_io(
            if io.input {
                uapi::KVM_EXIT_IO_IN
            } else {
                uapi::KVM_EXIT_IO_OUT
            },
            io.size,
            io.port,
            count,
            page_off,
        );
        Ok(Flow::User)
    }

    /// After userspace handled `count` INS/OUTS iterations: store INS data,
    /// advance RSI/RDI and RCX, and finish the instruction once RCX is 0.
    fn string_io_done(
        &self,
        vm: &Vm,
        inner: &mut Inner,
        io: &IoExit,
        count: u32,
        data: Option<&[u8]>,
    ) -> Result<Flow> {
        let size = u64::from(io.size);
        let amask = addr_mask(io.addr_size);
        let down = inner.arch.rflags() & (1 << 10) != 0;
        let step = |v: u64, n: u64| -> u64 {
            let d = size * n;
            let nv = if down {
                v.wrapping_sub(d)
            } else {
                v.wrapping_add(d)
            };
            (v & !amask) | (nv & amask)
        };
        if let Some(data) = data {
            let base = inner.arch.segment_base(Segment::Es);
            let di = inner.arch.gpr(7);
            for i in 0..u64::from(count) {
                let lin = base.wrapping_add(step(di, i) & amask);
                let chunk = &data[(i * size) as usize..((i + 1) * size) as usize];
                if let Err(f) = self.write_linear(vm, inner, lin, chunk) {
                    return f;
                }
            }
            let v = step(di, u64::from(count));
            inner.arch.set_gpr(7, v);
        } else {
            let v = step(inner.arch.gpr(6), u64::from(count));
            inner.arch.set_gpr(6, v);
        }
        let mut done = true;
        if io.rep {
            let rcx = inner.arch.gpr(1);
            let left = (rcx & amask).wrapping_sub(u64::from(count)) & amask;
            inner.arch.set_gpr(1, (rcx & !amask) | left);
            done = left == 0;
        }
        if done {
            inner.arch.set_rip(io.next_rip);
        }
        // Not done: RIP stays, so the guest runs the instruction again and
        // exits with the next chunk.
        Ok(Flow::Resume)
    }

    fn read_linear(
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

    fn write_linear(
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

    fn walk_fault(&self, inner: &mut Inner, addr: u64, e: WalkError) -> Result<Flow> {
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

    fn get_cpuid2(&self, arg: usize) -> Result<isize> {
        let hdr: KvmCpuid2Header = uaccess::read(arg)?;
        let inner = self.inner.lock();
        if (hdr.nent as usize) < inner.cpuid.len() {
            return Err(E2BIG);
        }
        let out = KvmCpuid2Header {
            nent: inner.cpuid.len() as u32,
            padding: 0,
        };
        let mut v = KVec::with_capacity(inner.cpuid.len(), GFP_KERNEL)?;
        for e in inner.cpuid.iter() {
            v.push(guest_cpuid::to_kvm(e), GFP_KERNEL)?;
        }
        uaccess::write(arg, &out)?;
        uaccess::write_array(arg + 8, &v)?;
        Ok(0)
    }

    fn set_cpuid2(&self, arg: usize) -> Result<isize> {
        let hdr: KvmCpuid2Header = uaccess::read(arg)?;
        if hdr.nent > abi::MAX_CPUID_ENTRIES {
            return Err(E2BIG);
        }
        let raw = uaccess::read_array::<KvmCpuidEntry2>(arg + 8, hdr.nent as usize)?;
        let mut entries = KVec::with_capacity(raw.len(), GFP_KERNEL)?;
        for e in raw.iter() {
            entries.push(guest_cpuid::from_kvm(e), GFP_KERNEL)?;
        }
        let mut inner = self.inner.lock();
        // After the first entry KVM only accepts the same table again.
        if inner.has_run {
            return if inner.cpuid[..] == entries[..] {
                Ok(0)
            } else {
                Err(EINVAL)
            };
        }
        inner.cpuid = entries;
        Ok(0)
    }
}

impl Vcpu {
    /// `KVM_GET_MSRS`/`KVM_SET_MSRS`: processes entries until the first
    /// one that fails and returns how many succeeded, as KVM does.
    fn msrs(&self, arg: usize, write: bool) -> Result<isize> {
        let hdr: KvmMsrsHeader = uaccess::read(arg)?;
        // KVM's MAX_IO_MSRS.
        if hdr.nmsrs >= 256 {
            return Err(E2BIG);
        }
        let mut entries = uaccess::read_array::<KvmMsrEntry>(arg + 8, hdr.nmsrs as usize)?;
        let mut inner = self.inner.lock();
        let mut n = 0;
        for e in entries.iter_mut() {
            let ok = if write {
                inner.arch.set_msr(e.index, e.data).is_ok()
            } else {
                match inner.arch.get_msr(e.index) {
                    Ok(v) => {
                        e.data = v;
                        true
                    }
                    Err(_) => false,
                }
            };
            if !ok {
                break;
            }
            n += 1;
        }
        drop(inner);
        if !write {
            uaccess::write_array(arg + 8, &entries[..n])?;
        }
        Ok(n as isize)
    }
}

/// Up to 15 instruction bytes at CS:RIP, through the guest's page tables;
/// fewer if the instruction crosses into an unmapped or non-RAM page.
fn fetch_bytes(vm: &Vm, inner: &Inner) -> ([u8; 15], usize) {
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
fn cpu_vendor() -> Vendor {
    match crate::virt::Vendor::current() {
        crate::virt::Vendor::Svm => Vendor::Amd,
        crate::virt::Vendor::Vmx => Vendor::Intel,
    }
}

fn addr_mask(addr_size: u8) -> u64 {
    match addr_size {
        2 => 0xffff,
        4 => 0xffff_ffff,
        _ => u64::MAX,
    }
}

/// Guest physical memory for the page walker, through the VMM's mapping.
struct GuestMem<'a>(&'a Vm);

impl GuestMem<'_> {
    fn read<const N: usize>(&self, gpa: u64) -> core::result::Result<[u8; N], MemError> {
        let mut b = [0u8; N];
        match self.0.read_guest(gpa, &mut b) {
            Ok(true) => Ok(b),
            _ => Err(MemError),
        }
    }

    fn write(&self, gpa: u64, b: &[u8]) -> core::result::Result<(), MemError> {
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
fn translate(
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
    fn each_part(
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
    fn pages(
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

impl AnonFile for VcpuFile {
    fn ioctl(this: ArcBorrow<'_, Self>, cmd: u32, arg: usize) -> Result<isize> {
        this.vm.check_owner()?;
        let v = &this.vcpu;
        match cmd {
            abi::KVM_RUN if arg == 0 => v.run(&this.vm),
            abi::KVM_RUN => Err(EINVAL),
            abi::KVM_GET_REGS => {
                let r = v.inner.lock().arch.regs();
                uaccess::write(arg, &r)?;
                Ok(0)
            }
            abi::KVM_SET_REGS => {
                let r: KvmRegs = uaccess::read(arg)?;
                v.inner.lock().arch.set_regs(&r);
                Ok(0)
            }
            abi::KVM_GET_SREGS => {
                let s = v.inner.lock().arch.sregs();
                uaccess::write(arg, &s)?;
                Ok(0)
            }
            abi::KVM_SET_SREGS => {
                let s: KvmSregs = uaccess::read(arg)?;
                let mut inner = v.inner.lock();
                let now = inner.arch.apic_base();
                guest_cpuid::check_sregs(&inner.cpuid, &s, now)?;
                inner.arch.set_sregs(&s);
                // As KVM, a PAE guest's PDPTEs are (re)read; bad ones are
                // not an error here.
                v.load_pdptes(&this.vm, &mut inner)?;
                Ok(0)
            }
            abi::KVM_GET_MSRS => v.msrs(arg, false),
            abi::KVM_SET_MSRS => v.msrs(arg, true),
            abi::KVM_SET_CPUID2 => v.set_cpuid2(arg),
            abi::KVM_GET_CPUID2 => v.get_cpuid2(arg),
            // KVM's default for unknown vCPU ioctls on x86.
            _ => Err(EINVAL),
        }
    }

    fn mmap_pages(this: &Self) -> &[Pages] {
        &this.vcpu.pages
    }
}
