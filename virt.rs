// SPDX-License-Identifier: GPL-2.0

//! The vendor backend trait and the choice of backend at load time.
//!
//! The VM, vCPU and API layers only see [`Backend`]; `svm` and `vmx`
//! implement it. KVM's `kvm_x86_ops` plays this role in C.

use crate::{svm::Svm, vmx::Vmx};
use core::sync::atomic::{AtomicUsize, Ordering};
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
    /// VMMCALL/VMCALL.
    Hypercall { next_rip: Option<u64> },
    /// An instruction KVM treats as a no-op (MONITOR, MWAIT, INVD).
    Nop { next_rip: Option<u64> },
    /// Inject this exception (an instruction the guest may not run).
    Exception { vector: u8, error_code: Option<u32> },
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

/// The vCPU type of the backend in use (only SVM so far; VT-x will make
/// this an enum with static dispatch).
pub(crate) type ArchVcpu = crate::svm::vcpu::SvmVcpu;
