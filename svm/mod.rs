// SPDX-License-Identifier: GPL-2.0

//! AMD SVM backend: detection, per-CPU enable (EFER.SVME and the host save
//! area), ASIDs, and the vCPU (`svm/vcpu.rs`).

pub(crate) mod vcpu;

use crate::{
    backend::{Backend, MmuShape},
    cpuid::feature,
    decode,
    mmu::Format,
    msr,
    sys::{
        cpu,
        hotplug::{CpuHotplug, PerCpuHooks, RebootHook},
        mem::Pages,
        published::{Owner, Published},
        svm,
    },
    x86::{CR4_LA57, EFER_SVME},
};
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use kernel::{prelude::*, sync::Arc};

/// `MSR_VM_CR`: firmware's SVM lock and disable bits.
const MSR_VM_CR: u32 = 0xc001_0114;
/// `VM_CR.SVMDIS`: SVM disabled (by firmware, when `VM_CR.LOCK` is set).
const VM_CR_SVMDIS: u64 = 1 << 4;
/// CPUID 0x8000_000A EDX: flush-by-ASID (TLB_CONTROL 3).
const SVM_FEATURE_FLUSHBYASID: u32 = 1 << 6;
/// CPUID 0x8000_000A EDX: NRIP save.
const SVM_FEATURE_NRIPS: u32 = 1 << 3;
/// CPUID 0x8000_000A EDX: nested paging.
const SVM_FEATURE_NPT: u32 = 1 << 0;

/// The AMD SVM backend.
pub(crate) struct Svm;

impl Backend for Svm {
    const NAME: &'static str = "AMD SVM";
    const CPU: decode::Vendor = decode::Vendor::Amd;
    type Vcpu = vcpu::SvmVcpu;
    type Host = SvmHost;

    fn probe() -> Result {
        if cpu::cpuid(0x8000_0000, 0).eax < 0x8000_000a
            || cpu::cpuid(0x8000_0001, 0).ecx & feature::SVM.mask == 0
        {
            return Err(ENODEV);
        }
        if cpu::rdmsr_safe(MSR_VM_CR)? & VM_CR_SVMDIS != 0 {
            pr_err!("rkvm: SVM is disabled by firmware (VM_CR.SVMDIS)\n");
            return Err(ENODEV);
        }
        if cpu::cpuid(0x8000_000a, 0).edx & SVM_FEATURE_NPT == 0 {
            pr_err!("rkvm: SVM without nested paging is not supported\n");
            return Err(ENODEV);
        }
        Ok(())
    }

    fn enabled_on_this_cpu() -> bool {
        cpu::rdmsr_safe(msr::EFER).is_ok_and(|efer| efer & EFER_SVME != 0)
    }

    fn init() -> Result<SvmHost> {
        SvmHost::new()
    }

    /// Nested paging walks as many levels as the host's own paging.
    fn mmu() -> MmuShape {
        MmuShape {
            format: Format::Npt,
            levels: if cpu::read_cr4() as u64 & CR4_LA57 != 0 {
                5
            } else {
                4
            },
            huge: true,
        }
    }
}

/// What the SVM of this machine offers (CPUID 0x8000_000A).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Features {
    /// Number of ASIDs (ASID 0 is the host's).
    pub(crate) nr_asids: u32,
    /// VMCB.next_rip is written on instruction intercepts.
    pub(crate) nrips: bool,
    /// TLB_CONTROL may flush one ASID.
    pub(crate) flush_by_asid: bool,
    /// The host has RDTSCP, and so `TSC_AUX`, which is switched for the
    /// guest.
    pub(crate) rdtscp: bool,
}

impl Features {
    fn read() -> Self {
        let c = cpu::cpuid(0x8000_000a, 0);
        Self {
            nr_asids: c.ebx.max(2),
            nrips: c.edx & SVM_FEATURE_NRIPS != 0,
            flush_by_asid: c.edx & SVM_FEATURE_FLUSHBYASID != 0,
            rdtscp: cpu::cpuid(0x8000_0001, 0).edx & feature::RDTSCP.mask != 0,
        }
    }
}

/// Per-CPU SVM state.
pub(crate) struct PerCpu {
    /// The host save area VMRUN uses (VM_HSAVE_PA).
    hsave: Pages,
    /// Where the host's VMSAVE state goes around each VMRUN (owned here;
    /// the hardware uses it by physical address).
    _host_vmcb: Pages,
    /// Its physical address.
    pub(crate) host_vmcb_pa: u64,
    /// ASID generation: bumped when ASIDs run out and are all flushed.
    pub(crate) asid_gen: AtomicU64,
    /// Next ASID to hand out on this CPU.
    pub(crate) next_asid: AtomicU32,
    /// The host's `TSC_AUX` on this CPU (Linux's CPU and node number),
    /// which it sets once as the CPU comes up.
    pub(crate) tsc_aux: AtomicU64,
}

/// What vCPU entries and the hotplug callbacks read while the module is
/// loaded: every possible CPU's state, and the features. Each vCPU holds a
/// reference (no lookup per entry); the hotplug callbacks read it through
/// [`SHARED`].
pub(crate) struct Shared {
    percpu: KVec<PerCpu>,
    pub(crate) features: Features,
}

impl Shared {
    /// `cpu`'s state.
    pub(crate) fn percpu(&self, cpu: usize) -> Option<&PerCpu> {
        self.percpu.get(cpu)
    }
}

static SHARED: Published<Arc<Shared>> = Published::new();

/// The state published at load, for a new vCPU (`ENODEV` if there is none).
pub(crate) fn shared() -> Result<Arc<Shared>> {
    SHARED.read(|s| s.clone()).ok_or(ENODEV)
}

/// SVM switched on for the module's lifetime: on every online CPU, on CPUs
/// that come online later, and off again when dropped.
pub(crate) struct SvmHost {
    // Field order is drop order: the hooks (removing them disables SVM on
    // every CPU) go before the per-CPU pages they point the CPUs at.
    _reboot: RebootHook,
    _hotplug: CpuHotplug,
    _shared: Owner<Arc<Shared>>,
}

impl SvmHost {
    /// Allocates per-CPU state and enables SVM everywhere.
    pub(crate) fn new() -> Result<Self> {
        let n = cpu::nr_cpu_ids();
        let mut percpu = KVec::with_capacity(n, GFP_KERNEL)?;
        for _ in 0..n {
            let host_vmcb = Pages::new(0)?;
            percpu.push(
                PerCpu {
                    hsave: Pages::new(0)?,
                    host_vmcb_pa: host_vmcb.phys(),
                    _host_vmcb: host_vmcb,
                    asid_gen: AtomicU64::new(1),
                    next_asid: AtomicU32::new(1),
                    tsc_aux: AtomicU64::new(0),
                },
                GFP_KERNEL,
            )?;
        }
        let shared = Arc::new(
            Shared {
                percpu,
                features: Features::read(),
            },
            GFP_KERNEL,
        )?;
        let shared = SHARED.publish(KBox::new(shared, GFP_KERNEL)?)?;
        let reboot = RebootHook::register::<Hooks>()?;
        let hotplug = CpuHotplug::register::<Hooks>()?;
        Ok(Self {
            _reboot: reboot,
            _hotplug: hotplug,
            _shared: shared,
        })
    }
}

/// SVM's per-CPU hooks.
struct Hooks;

impl PerCpuHooks for Hooks {
    /// Enables SVM on this CPU (`EBUSY` if someone else has).
    fn online(cpu_id: u32) -> Result {
        SHARED
            .read(|s| {
                let pc = s.percpu.get(cpu_id as usize).ok_or(ENOMEM)?;
                svm::enable_on_this_cpu(&pc.hsave)?;
                // A CPU coming back must not reuse ASIDs whose TLB entries
                // it may hold.
                pc.asid_gen.fetch_add(1, Ordering::Relaxed);
                pc.next_asid.store(1, Ordering::Relaxed);
                if s.features.rdtscp {
                    pc.tsc_aux.store(
                        cpu::rdmsr_safe(msr::TSC_AUX).unwrap_or(0),
                        Ordering::Relaxed,
                    );
                }
                Ok(())
            })
            .unwrap_or(Err(ENOMEM))
    }

    /// Leaves this CPU as found.
    fn offline(_cpu_id: u32) {
        svm::disable_on_this_cpu();
    }

    /// Switches SVM off everywhere so that whatever runs next (firmware, a
    /// kexec'd kernel) finds the CPUs as they were before rkvm.
    fn reboot() {
        cpu::on_each_cpu(&svm::disable_on_this_cpu);
    }
}
