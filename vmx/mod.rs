// SPDX-License-Identifier: GPL-2.0

//! Intel VT-x backend: capability discovery from the VMX MSRs, the per-CPU
//! VMXON regions, VPIDs, and the vCPU (`vmx/vcpu.rs`).
//!
//! VMX is on only inside the interrupts-off window around each VM entry
//! (`sys/vmx.rs`), so there is nothing to switch on at load or off at
//! unload, hotplug or reboot: the CPUs are always as Linux believes them
//! outside that window.

pub(crate) mod vcpu;

use crate::{
    backend::{Backend, MmuShape},
    cpuid::feature,
    decode,
    mmu::Format,
    sys::{
        cpu,
        mem::Pages,
        published::{Owner, Published},
    },
    vmcs::{msr, CapMsrs, Config, Missing},
    x86::CR4_VMXE,
};
use core::sync::atomic::{AtomicU64, Ordering};
use kernel::{prelude::*, sync::Arc};

/// The Intel VT-x backend.
pub(crate) struct Vmx;

impl Backend for Vmx {
    const NAME: &'static str = "Intel VT-x";
    const CPU: decode::Vendor = decode::Vendor::Intel;
    type Vcpu = vcpu::VmxVcpu;
    type Host = VmxHost;

    fn probe() -> Result {
        if cpu::cpuid(1, 0).ecx & feature::VMX.mask == 0 {
            return Err(ENODEV);
        }
        let fc = cpu::rdmsr_safe(msr::FEATURE_CONTROL)?;
        if fc & msr::FEATURE_CONTROL_LOCKED == 0 || fc & msr::FEATURE_CONTROL_VMX_OUTSIDE_SMX == 0 {
            pr_err!("rkvm: VMX is disabled by firmware (IA32_FEATURE_CONTROL {fc:#x})\n");
            return Err(ENODEV);
        }
        match Config::compute(&read_caps()?) {
            Ok(_) => Ok(()),
            Err(m) => {
                let what = match m {
                    Missing::VmcsRegion => "a write-back VMCS of at most 4 KiB",
                    Missing::Pin(_) => "external-interrupt and NMI exiting",
                    Missing::Proc(_) => "a required processor-based control",
                    Missing::Ept => "EPT",
                    Missing::UnrestrictedGuest => "unrestricted guest",
                    Missing::EptFormat => "4-level write-back EPT with INVEPT",
                    Missing::Exit(_) => "a required VM-exit control (EFER/PAT switching)",
                    Missing::Entry(_) => "a required VM-entry control (EFER/PAT loading)",
                };
                pr_err!("rkvm: this CPU's VT-x lacks {what} ({m:?}), which rkvm needs\n");
                Err(ENODEV)
            }
        }
    }

    fn enabled_on_this_cpu() -> bool {
        cpu::read_cr4() as u64 & CR4_VMXE != 0
    }

    fn init() -> Result<VmxHost> {
        VmxHost::new()
    }

    /// rkvm's EPT always has 4 levels (48-bit guest physical); 2 MiB
    /// leaves where EPT has them.
    fn mmu() -> MmuShape {
        MmuShape {
            format: Format::Ept,
            levels: 4,
            huge: shared().is_ok_and(|s| s.config.ept_2m),
        }
    }
}

/// Reads the capability MSRs `Config::compute` needs.
fn read_caps() -> Result<CapMsrs> {
    let basic = cpu::rdmsr_safe(msr::BASIC)?;
    let (pin, proc, exit, entry) = CapMsrs::control_msrs(basic);
    let proc = cpu::rdmsr_safe(proc)?;
    // The secondary controls and EPT capabilities exist only if the
    // primary controls allow "activate secondary controls".
    let (proc2, ept_vpid) = if proc & (1 << 63) != 0 {
        (
            cpu::rdmsr_safe(msr::PROCBASED_CTLS2)?,
            cpu::rdmsr_safe(msr::EPT_VPID_CAP).unwrap_or(0),
        )
    } else {
        (0, 0)
    };
    Ok(CapMsrs {
        basic,
        pin: cpu::rdmsr_safe(pin)?,
        proc,
        proc2,
        exit: cpu::rdmsr_safe(exit)?,
        entry: cpu::rdmsr_safe(entry)?,
        ept_vpid,
        misc: cpu::rdmsr_safe(msr::MISC).unwrap_or(0),
        cr0_fixed: (
            cpu::rdmsr_safe(msr::CR0_FIXED0)?,
            cpu::rdmsr_safe(msr::CR0_FIXED1)?,
        ),
        cr4_fixed: (
            cpu::rdmsr_safe(msr::CR4_FIXED0)?,
            cpu::rdmsr_safe(msr::CR4_FIXED1)?,
        ),
    })
}

/// What the module owns while VT-x is its backend: the configuration and
/// one VMXON region per possible CPU, published for vCPUs.
pub(crate) struct VmxHost {
    _shared: Owner<Arc<Shared>>,
}

/// What vCPUs use while the module is loaded; each holds a reference.
pub(crate) struct Shared {
    pub(crate) config: Config,
    vmxon: KVec<Pages>,
}

impl Shared {
    /// The physical address of `cpu`'s VMXON region.
    pub(crate) fn vmxon_pa(&self, cpu: usize) -> Option<u64> {
        self.vmxon.get(cpu).map(Pages::phys)
    }
}

static SHARED: Published<Arc<Shared>> = Published::new();

impl VmxHost {
    /// Computes the configuration and allocates the VMXON regions.
    pub(crate) fn new() -> Result<Self> {
        let config = Config::compute(&read_caps()?).map_err(|_| ENODEV)?;
        let n = cpu::nr_cpu_ids();
        let mut vmxon = KVec::with_capacity(n, GFP_KERNEL)?;
        for _ in 0..n {
            vmxon.push(revision_page(config.revision)?, GFP_KERNEL)?;
        }
        pr_info!(
            "rkvm: VT-x revision {:#x}, controls pin {:#x} proc {:#x} proc2 {:#x} exit {:#x} entry {:#x}, vpid {}\n",
            config.revision,
            config.pin,
            config.proc,
            config.proc2,
            config.exit,
            config.entry,
            config.vpid
        );
        let shared = Arc::new(Shared { config, vmxon }, GFP_KERNEL)?;
        let shared = SHARED.publish(KBox::new(shared, GFP_KERNEL)?)?;
        Ok(Self { _shared: shared })
    }
}

/// A zeroed page with the VMCS revision identifier in its first word: a
/// VMXON region or a VMCS.
pub(crate) fn revision_page(revision: u32) -> Result<Pages> {
    let mut p = Pages::new(0)?;
    p.as_bytes_mut()[..4].copy_from_slice(&(revision & 0x7fff_ffff).to_le_bytes());
    Ok(p)
}

/// The state published at load (`ENODEV` if there is none).
pub(crate) fn shared() -> Result<Arc<Shared>> {
    SHARED.read(|s| s.clone()).ok_or(ENODEV)
}

/// VPIDs in use (bit set); VPID 0 is the host's and never handed out.
static VPIDS: [AtomicU64; 1024] = [const { AtomicU64::new(0) }; 1024];

/// A virtual-processor identifier, freed when dropped.
pub(crate) struct Vpid(u16);

impl Vpid {
    /// Takes a free VPID, or `None` when all 65535 are in use (the vCPU
    /// then runs with VPID 0, and VM entries flush its translations).
    pub(crate) fn alloc() -> Option<Self> {
        for (w, word) in VPIDS.iter().enumerate() {
            let mut cur = word.load(Ordering::Relaxed);
            loop {
                let free = !cur & if w == 0 { !1 } else { !0 };
                if free == 0 {
                    break;
                }
                let bit = free.trailing_zeros();
                match word.compare_exchange(
                    cur,
                    cur | (1 << bit),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return Some(Self((w * 64) as u16 + bit as u16)),
                    Err(now) => cur = now,
                }
            }
        }
        None
    }

    /// The identifier.
    pub(crate) fn get(&self) -> u16 {
        self.0
    }
}

impl Drop for Vpid {
    fn drop(&mut self) {
        let (w, bit) = (usize::from(self.0 / 64), self.0 % 64);
        VPIDS[w].fetch_and(!(1 << bit), Ordering::AcqRel);
    }
}
