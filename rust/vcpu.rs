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

mod mmio;
mod pio;
mod regs;
mod run;

use mmio::Frags;

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
