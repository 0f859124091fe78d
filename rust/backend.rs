// SPDX-License-Identifier: GPL-2.0

//! The vendor backend trait and the choice of backend at load time.
//!
//! The VM, vCPU and API layers only see [`Backend`]; `svm` and `vmx`
//! implement it. KVM's `kvm_x86_ops` plays this role in C.

use crate::{
    decode::{Mode, Segment},
    svm::{vcpu::SvmVcpu, Svm},
    uapi::{KvmRegs, KvmSregs},
    vmx::{vcpu::VmxVcpu, Vmx},
};
use core::sync::atomic::{AtomicI32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use kernel::prelude::*;

/// What a hardware virtualization backend provides.
pub(crate) trait Backend {
    /// The name used in kernel messages.
    const NAME: &'static str;

    /// Checks that this CPU model supports the backend and that firmware
    /// has not disabled it. `ENODEV` with a message if not.
    fn probe() -> Result;

    /// Whether virtualization is already switched on on the calling CPU
    /// (by another hypervisor such as kvm_amd or kvm_intel).
    fn enabled_on_this_cpu() -> bool;
}

/// The backends rkvm has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Vendor {
    /// AMD SVM.
    Svm,
    /// Intel VT-x.
    Vmx,
}

impl Vendor {
    /// Picks the backend this CPU supports: `ENODEV` if none.
    pub(crate) fn detect() -> Result<Self> {
        if Svm::probe().is_ok() {
            return Ok(Self::Svm);
        }
        if Vmx::probe().is_ok() {
            return Ok(Self::Vmx);
        }
        pr_err!("rkvm: this CPU has neither AMD SVM nor Intel VT-x (or firmware disabled it)\n");
        Err(ENODEV)
    }

    /// The backend's name, for messages.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Svm => Svm::NAME,
            Self::Vmx => Vmx::NAME,
        }
    }

    /// `EBUSY` if another hypervisor has virtualization switched on on any
    /// online CPU: the hardware can only serve one.
    pub(crate) fn check_not_in_use(self) -> Result {
        let busy = AtomicUsize::new(0);
        let check = || {
            let on = match self {
                Self::Svm => Svm::enabled_on_this_cpu(),
                Self::Vmx => Vmx::enabled_on_this_cpu(),
            };
            if on {
                busy.fetch_add(1, Ordering::Relaxed);
            }
        };
        crate::sys::cpu::on_each_cpu(&check);
        let n = busy.load(Ordering::Relaxed);
        if n > 0 {
            pr_err!(
                "rkvm: {} is already enabled on {} CPU(s), probably by another hypervisor (kvm_amd/kvm_intel): unload it first\n",
                self.name(),
                n
            );
            return Err(EBUSY);
        }
        Ok(())
    }
}

/// Why the guest stopped, in vendor-neutral terms. Each backend decodes its
/// hardware exit into one of these; `guest.rs` handles them.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Exit {
    /// Nothing to do (a host interrupt or NMI was taken): enter again.
    Resume,
    /// An IN/OUT/INS/OUTS instruction.
    Io(IoExit),
    /// HLT.
    Hlt { next_rip: Option<u64> },
    /// CPUID, handled in the kernel from the vCPU's CPUID table.
    Cpuid { next_rip: Option<u64> },
    /// RDMSR (`write` false) or WRMSR.
    Msr { write: bool, next_rip: Option<u64> },
    /// A triple fault: the VM is reset by userspace or killed.
    Shutdown,
    /// The guest touched a GPA with no (or a too weak) nested mapping.
    Npf { gpa: u64, write: bool, fetch: bool },
    /// MOV to or from a debug register (emulated: the guest's DR0-3 are
    /// never loaded into the hardware, which holds the host's).
    DrAccess,
    /// An intercepted #UD (VT-x: VMMCALL is emulated, as KVM does).
    InvalidOpcode,
    /// VMMCALL/VMCALL.
    Hypercall { next_rip: Option<u64> },
    /// An instruction KVM treats as a no-op (MONITOR, MWAIT, INVD).
    Nop { next_rip: Option<u64> },
    /// Inject this exception (an instruction the guest may not run).
    Exception { vector: u8, error_code: Option<u32> },
    /// MOV to CR0/CR4/CR8 (and CLTS, LMSW as CR0 writes) on a backend that
    /// intercepts them; `vcpu.rs` applies KVM's rules.
    CrWrite {
        cr: u8,
        value: u64,
        next_rip: Option<u64>,
    },
    /// MOV from CR8 (the only intercepted read).
    CrRead {
        cr: u8,
        gpr: u8,
        next_rip: Option<u64>,
    },
    /// VM entry failed; the hardware's reason.
    FailEntry(u64),
    /// An exit rkvm does not expect; the hardware's exit code.
    Unexpected(u64),
}

/// An I/O instruction exit, as the hardware reports it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct IoExit {
    pub(crate) port: u16,
    /// Operand size in bytes (1, 2 or 4).
    pub(crate) size: u8,
    pub(crate) input: bool,
    /// INS/OUTS.
    pub(crate) string: bool,
    pub(crate) rep: bool,
    /// Address size in bytes (string forms).
    pub(crate) addr_size: u8,
    /// Source segment of OUTS (INS always writes ES).
    pub(crate) seg: crate::decode::Segment,
    /// RIP after the instruction.
    pub(crate) next_rip: u64,
}

/// The backend chosen at load (`Vendor` as a number; 0 before).
static VENDOR: AtomicU8 = AtomicU8::new(0);

impl Vendor {
    /// Records the backend for `Vendor::current`.
    pub(crate) fn set_current(self) {
        VENDOR.store(self as u8 + 1, Ordering::Release);
    }

    /// The backend in use. Only called once the module is loaded.
    pub(crate) fn current() -> Self {
        if VENDOR.load(Ordering::Acquire) == Self::Vmx as u8 + 1 {
            Self::Vmx
        } else {
            Self::Svm
        }
    }

    /// The format and depth of the second-level page table.
    pub(crate) fn mmu_format(self) -> (crate::mmu::Format, u32) {
        match self {
            // Nested paging walks as many levels as the host's own paging.
            Self::Svm => (
                crate::mmu::Format::Npt,
                if crate::sys::cpu::read_cr4() & (1 << 12) != 0 {
                    5
                } else {
                    4
                },
            ),
            // rkvm's EPT always has 4 levels (48-bit guest physical).
            Self::Vmx => (crate::mmu::Format::Ept, 4),
        }
    }

    /// Whether the backend may map 2 MiB pages in the second-level table.
    pub(crate) fn huge_pages(self) -> bool {
        match self {
            Self::Svm => true,
            Self::Vmx => crate::vmx::config().is_some_and(|c| c.ept_2m),
        }
    }
}

/// A vCPU of the backend in use: static dispatch by `match`.
pub(crate) enum ArchVcpu {
    /// AMD SVM.
    Svm(KBox<SvmVcpu>),
    /// Intel VT-x.
    Vmx(KBox<VmxVcpu>),
}

/// Forwards each listed method to the backend's vCPU.
macro_rules! dispatch {
    ($(fn $name:ident(&self $(, $arg:ident: $ty:ty)*) $(-> $ret:ty)?;)*) => {$(
        pub(crate) fn $name(&self $(, $arg: $ty)*) $(-> $ret)? {
            match self {
                Self::Svm(v) => v.$name($($arg),*),
                Self::Vmx(v) => v.$name($($arg),*),
            }
        }
    )*};
    ($(fn $name:ident(&mut self $(, $arg:ident: $ty:ty)*) $(-> $ret:ty)?;)*) => {$(
        pub(crate) fn $name(&mut self $(, $arg: $ty)*) $(-> $ret)? {
            match self {
                Self::Svm(v) => v.$name($($arg),*),
                Self::Vmx(v) => v.$name($($arg),*),
            }
        }
    )*};
}

impl ArchVcpu {
    /// Creates a vCPU of the backend in use, in KVM's reset state.
    pub(crate) fn new(vcpu_id: u32) -> Result<Self> {
        Ok(match Vendor::current() {
            Vendor::Svm => Self::Svm(KBox::new(SvmVcpu::new(vcpu_id)?, GFP_KERNEL)?),
            Vendor::Vmx => Self::Vmx(KBox::new(VmxVcpu::new(vcpu_id)?, GFP_KERNEL)?),
        })
    }

    dispatch! {
        fn dr(&self, n: u8) -> u64;
        fn cr8(&self) -> u64;
        fn apic_base(&self) -> u64;
        fn gpr(&self, r: u8) -> u64;
        fn rip(&self) -> u64;
        fn rflags(&self) -> u64;
        fn cr0(&self) -> u64;
        fn cr3(&self) -> u64;
        fn cr4(&self) -> u64;
        fn efer(&self) -> u64;
        fn cpl(&self) -> u8;
        fn mode(&self) -> Mode;
        fn segment_base(&self, seg: Segment) -> u64;
        fn regs(&self) -> KvmRegs;
        fn sregs(&self) -> KvmSregs;
        fn pae_paging(&self) -> bool;
    }

    dispatch! {
        fn enter(&mut self, root: u64, running: &AtomicI32, tlb_gen: &AtomicU64) -> Result<Exit>;
        fn inject_exception(&mut self, vector: u8, error_code: Option<u32>);
        fn set_dr(&mut self, n: u8, v: u64);
        fn set_cr8(&mut self, v: u64);
        fn get_msr(&mut self, msr: u32) -> Result<u64>;
        fn set_msr(&mut self, msr: u32, v: u64) -> Result;
        fn set_gpr(&mut self, r: u8, v: u64);
        fn set_rip(&mut self, v: u64);
        fn set_rflags(&mut self, v: u64);
        fn set_cr2(&mut self, v: u64);
        fn set_cr0(&mut self, v: u64);
        fn set_cr4(&mut self, v: u64);
        fn set_pdptes(&mut self, p: [u64; 4]);
        fn set_regs(&mut self, r: &KvmRegs);
        fn set_sregs(&mut self, r: &KvmSregs);
    }
}
