// SPDX-License-Identifier: GPL-2.0

//! The VM's interrupt plumbing for the split irqchip (local APICs in the
//! kernel; PIC, IOAPIC and PIT in userspace): `KVM_ENABLE_CAP(
//! KVM_CAP_SPLIT_IRQCHIP)`, the VM's copy of every APIC's addressing,
//! message delivery (IPIs and MSIs, KVM's delivery loop in
//! `core/src/lapic/route.rs`) and `KVM_SIGNAL_MSI`.
//!
//! A sender never touches another vCPU's state: it matches the message
//! against the VM's copies of the APICs, then posts it to each target's
//! doorbell, which wakes or kicks that vCPU.

use crate::{
    abi,
    backend::Backend,
    lapic::{self, Ipi, Lapic},
    sys::uaccess,
    uapi::{KvmEnableCap, KvmMsi, KVM_MSI_VALID_DEVID},
    vcpu::VcpuBell,
    vm::Vm,
};
use kernel::{prelude::*, sync::Arc};

/// `KVM_MAX_IRQ_ROUTES`: the most IOAPIC pins split mode may reserve.
const MAX_IRQ_ROUTES: u64 = 4096;

/// One vCPU's entry in the VM's APIC map: its doorbell and a copy of its
/// APIC, which the vCPU refreshes when its addressing changes.
pub(crate) struct MapEntry {
    pub(crate) bell: Arc<VcpuBell>,
    pub(crate) lapic: KBox<Lapic>,
}

/// The VM's irqchip mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Irqchip {
    /// `KVM_CAP_SPLIT_IRQCHIP` was enabled: vCPUs get a local APIC.
    pub(crate) split: bool,
    /// IOAPIC pins userspace reserved in the routing table (`args[0]`).
    pub(crate) reserved_pins: u32,
}

impl<B: Backend> Vm<B> {
    /// `KVM_ENABLE_CAP` on the VM: only the split irqchip; `EINVAL` for
    /// any other capability or flags, as KVM for one it cannot enable.
    pub(crate) fn enable_cap(&self, arg: usize) -> Result<isize> {
        let c: KvmEnableCap = uaccess::read(arg)?;
        if c.flags != 0 || c.cap as usize != abi::KVM_CAP_SPLIT_IRQCHIP {
            return Err(EINVAL);
        }
        if c.args[0] > MAX_IRQ_ROUTES {
            return Err(EINVAL);
        }
        // The vCPU list's lock orders this against KVM_CREATE_VCPU.
        let vcpus = self.vcpus.lock();
        let mut chip = self.irqchip.lock();
        if chip.split || !vcpus.is_empty() {
            return Err(EEXIST);
        }
        *chip = Irqchip {
            split: true,
            reserved_pins: c.args[0] as u32,
        };
        Ok(0)
    }

    /// Whether vCPUs have their local APIC in the kernel.
    pub(crate) fn split_irqchip(&self) -> bool {
        self.irqchip.lock().split
    }

    /// Delivers `ipi` to the APICs it matches (`kvm_irq_delivery_to_apic`):
    /// `sender` is the sending vCPU's index for an IPI, `None` for an MSI.
    /// Returns KVM's count of APICs that accepted it; when none matched,
    /// 0 for a message to one destination (KVM's APIC-map fast path) and
    /// -1 for a broadcast or shorthand (its slow path).
    pub(crate) fn deliver(&self, ipi: &Ipi, redirect: bool, sender: Option<usize>) -> i32 {
        let map = self.apic_map.lock();
        let broadcast = if ipi.dest_mode == lapic::DestMode::Physical {
            ipi.dest == 0xff
        } else {
            ipi.dest == 0xff || ipi.dest == u32::MAX
        };
        let mut r = if ipi.shorthand != lapic::Shorthand::None || broadcast {
            -1
        } else {
            0
        };
        lapic::deliver(
            map.iter().map(|e| &*e.lapic),
            ipi,
            redirect,
            sender,
            true,
            |i, mode| {
                let e = &map[i];
                r = r.max(0);
                if e.lapic.accepts(mode, ipi.level, ipi.trigger) {
                    r += 1;
                    e.bell.post(|m| m.put(mode, ipi.vector, ipi.trigger));
                }
            },
        );
        r
    }

    /// A vCPU's APIC addressing changed: refresh the VM's copy.
    pub(crate) fn update_apic(&self, index: usize, lapic: &Lapic) {
        if let Some(e) = self.apic_map.lock().get_mut(index) {
            *e.lapic = lapic.clone();
        }
    }

    /// `KVM_SIGNAL_MSI`: `EINVAL` without an in-kernel irqchip or with
    /// unknown flags; otherwise KVM's delivery count, which is -1 (`EPERM`
    /// to userspace) when no APIC matched, 0 when none accepted.
    pub(crate) fn signal_msi(&self, arg: usize) -> Result<isize> {
        let m: KvmMsi = uaccess::read(arg)?;
        if !self.split_irqchip() || m.flags & !KVM_MSI_VALID_DEVID != 0 {
            return Err(EINVAL);
        }
        let (ipi, redirect) = lapic::msi_to_ipi(m.address_lo, m.address_hi, m.data, false);
        match self.deliver(&ipi, redirect, None) {
            r if r < 0 => Err(EPERM),
            r => Ok(r as isize),
        }
    }
}
