// SPDX-License-Identifier: GPL-2.0

//! The VM's interrupt plumbing for the split irqchip (local APICs in the
//! kernel; PIC, IOAPIC and PIT in userspace): `KVM_ENABLE_CAP(
//! KVM_CAP_SPLIT_IRQCHIP)`, the VM's copy of every APIC's addressing,
//! message delivery (IPIs and MSIs, KVM's delivery loop in
//! `core/src/lapic/route.rs`), the GSI routing table (MSI routes,
//! `core/src/routing.rs`), `KVM_SIGNAL_MSI`, `KVM_IRQ_LINE(_STATUS)` and
//! `KVM_IRQFD`.
//!
//! A sender never touches another vCPU's state: it matches the message
//! against the VM's copies of the APICs, then posts it to each target's
//! doorbell, which wakes or kicks that vCPU. A signalled irqfd delivers
//! from the eventfd's wake-up, in atomic context, so the map and the
//! routing table are interrupts-off spinlocks and delivery never sleeps.

use crate::{
    abi,
    backend::Backend,
    lapic::{self, Ipi, Lapic, Sender},
    routing::{self, MsiRoute},
    sys::{
        irqfd::{IrqfdOwner, Irqfds},
        uaccess,
    },
    uapi::{
        KvmEnableCap, KvmIrqLevel, KvmIrqRoutingEntry, KvmIrqRoutingHeader, KvmIrqfd, KvmMsi,
        KVM_IRQFD_FLAG_DEASSIGN, KVM_IRQFD_FLAG_RESAMPLE, KVM_MSI_VALID_DEVID,
    },
    vcpu::VcpuBell,
    vm::Vm,
};
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use kernel::{
    alloc::KVVec,
    new_mutex, new_spinlock_irq,
    prelude::*,
    sync::{Arc, Mutex, SpinLockIrq},
};

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

/// The VM's interrupt state, shared with its irqfds (which may outlive
/// the VM until their shutdown work ran).
#[pin_data]
pub(crate) struct Irq {
    #[pin]
    chip: Mutex<Irqchip>,
    /// With the split irqchip: every vCPU's doorbell and a copy of its
    /// APIC, in vCPU order (its capacity is reserved when the split
    /// irqchip is enabled, so adding a vCPU never allocates under it).
    #[pin]
    apic_map: SpinLockIrq<KVec<MapEntry>>,
    /// The GSI routing table, indexed by GSI.
    #[pin]
    routes: SpinLockIrq<KVVec<Option<MsiRoute>>>,
    /// Bumped at every routing change: vCPUs then recompute which EOIs
    /// they report to userspace.
    pub(crate) routes_gen: AtomicU64,
    /// The `KVM_CAP_X2APIC_API` flags enabled (never cleared, as KVM's);
    /// an atomic, for delivery in atomic context.
    x2apic_api: AtomicU32,
    #[pin]
    irqfds: Irqfds,
}

impl Irq {
    pub(crate) fn new() -> Result<Arc<Self>> {
        Arc::pin_init(
            pin_init!(Self {
                chip <- new_mutex!(Irqchip::default()),
                apic_map <- new_spinlock_irq!(KVec::new()),
                routes <- new_spinlock_irq!(KVVec::new()),
                routes_gen: AtomicU64::new(0),
                x2apic_api: AtomicU32::new(0),
                irqfds <- Irqfds::new(),
            }),
            GFP_KERNEL_ACCOUNT,
        )
    }

    /// The irqchip mode.
    pub(crate) fn chip(&self) -> Irqchip {
        *self.chip.lock()
    }

    /// `KVM_X2APIC_API_USE_32BIT_IDS` is on: MSI `address_hi` bits 31:8
    /// extend the destination, and `KVM_GET/SET_LAPIC` carry the x2APIC ID
    /// as it is.
    pub(crate) fn x2apic_format(&self) -> bool {
        self.x2apic_api.load(Ordering::Relaxed) & abi::X2APIC_API_USE_32BIT_IDS != 0
    }

    /// KVM's broadcast quirk (destination 0xff from a device reaches
    /// APICs in x2APIC mode too) is in force: it is unless
    /// `KVM_X2APIC_API_DISABLE_BROADCAST_QUIRK` is on.
    fn broadcast_quirk(&self) -> bool {
        self.x2apic_api.load(Ordering::Relaxed) & abi::X2APIC_API_DISABLE_BROADCAST_QUIRK == 0
    }

    /// Adds a vCPU's APIC to the map (the vCPU list's lock is held).
    pub(crate) fn add_apic(&self, bell: Arc<VcpuBell>, lapic: KBox<Lapic>) -> Result {
        self.apic_map
            .lock()
            .push_within_capacity(MapEntry { bell, lapic })
            .map_err(|_| ENOMEM)
    }

    /// Removes the APIC [`Irq::add_apic`] added last (a vCPU whose
    /// creation failed). Its entry is freed after the lock.
    pub(crate) fn remove_last_apic(&self) {
        let e = self.apic_map.lock().pop();
        drop(e);
    }

    /// A vCPU's APIC addressing changed: refresh the VM's copy.
    pub(crate) fn update_apic(&self, index: usize, lapic: &Lapic) {
        if let Some(e) = self.apic_map.lock().get_mut(index) {
            *e.lapic = lapic.clone();
        }
    }

    /// Delivers `ipi` to the APICs it matches (`kvm_irq_delivery_to_apic`):
    /// `sender` is the sending vCPU's index for an IPI, `None` for an MSI.
    /// Returns KVM's count of APICs that accepted it; when none matched,
    /// 0 for a message to one destination (KVM's APIC-map fast path) and
    /// -1 for a broadcast or shorthand (its slow path).
    pub(crate) fn deliver(&self, ipi: &Ipi, redirect: bool, sender: Option<usize>) -> i32 {
        let map = self.apic_map.lock();
        let quirk = self.broadcast_quirk();
        let sw = || {
            map.iter()
                .filter(|e| e.lapic.hw_enabled() && e.lapic.sw_enabled())
        };
        // Only asked without the quirk, for 0xff: a walk kept off the IPI path.
        let all_x2apic = !quirk
            && ipi.dest == 0xff
            && sw().next().is_some()
            && sw().all(|e| e.lapic.x2apic_mode());
        let from_x2apic = sender
            .and_then(|i| map.get(i))
            .map(|e| e.lapic.x2apic_mode());
        let broadcast = lapic::is_broadcast(ipi.dest, from_x2apic, quirk, all_x2apic);
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
            quirk,
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

    /// Delivers an MSI; KVM's count as [`Irq::deliver`], or `-EINVAL`
    /// for one whose `address_hi` bits 7:0 are set in x2APIC format
    /// (`kvm_msi_route_invalid`; a route can be such if the format was
    /// enabled after it was set).
    fn deliver_msi(&self, r: &MsiRoute) -> i32 {
        let x2apic_format = self.x2apic_format();
        if x2apic_format && r.address_hi & 0xff != 0 {
            return EINVAL.to_errno();
        }
        let (ipi, redirect) = lapic::msi_to_ipi(r.address_lo, r.address_hi, r.data, x2apic_format);
        self.deliver(&ipi, redirect, None)
    }

    /// Raises or lowers `gsi` (`kvm_set_irq`): an MSI route fires on a
    /// raise; -1 without a route or for a lower, as KVM.
    pub(crate) fn set_irq(&self, gsi: u32, level: bool) -> i32 {
        let route = self.routes.lock().get(gsi as usize).copied().flatten();
        match route {
            Some(r) if level => self.deliver_msi(&r),
            _ => -1,
        }
    }

    /// The vectors whose EOI the vCPU with APIC `lapic` reports to the
    /// userspace IOAPIC, and the stale one ([`routing::ioapic_vectors`]).
    pub(crate) fn ioapic_vectors(&self, lapic: &Lapic) -> ([u64; 4], Option<u8>) {
        let pins = self.chip().reserved_pins;
        let routes = self.routes.lock();
        let sender = Sender::Device {
            broadcast_quirk: self.broadcast_quirk(),
        };
        routing::ioapic_vectors(
            &routes,
            pins,
            self.x2apic_format(),
            |dest, mode| {
                lapic.hw_enabled() && lapic.matches(dest, mode, lapic::Shorthand::None, sender)
            },
            |v| lapic.pending_eoi(v),
        )
    }
}

impl IrqfdOwner for Irq {
    fn fire(&self, gsi: u32) {
        self.set_irq(gsi, true);
    }

    fn irqfds(&self) -> &Irqfds {
        &self.irqfds
    }
}

impl<B: Backend> Vm<B> {
    /// `KVM_ENABLE_CAP` on the VM: the split irqchip and the x2APIC API;
    /// `EINVAL` for any other capability or flags, as KVM for one it
    /// cannot enable.
    pub(crate) fn enable_cap(&self, arg: usize) -> Result<isize> {
        let c: KvmEnableCap = uaccess::read(arg)?;
        if c.flags != 0 {
            return Err(EINVAL);
        }
        match c.cap as usize {
            abi::KVM_CAP_SPLIT_IRQCHIP => self.enable_split_irqchip(&c),
            abi::KVM_CAP_X2APIC_API => {
                // Any time, irqchip or not; the flags only accumulate.
                if c.args[0] & !u64::from(abi::X2APIC_API_VALID_FLAGS) != 0 {
                    return Err(EINVAL);
                }
                self.irq
                    .x2apic_api
                    .fetch_or(c.args[0] as u32, Ordering::Relaxed);
                Ok(0)
            }
            _ => Err(EINVAL),
        }
    }

    /// `KVM_ENABLE_CAP(KVM_CAP_SPLIT_IRQCHIP)`: `args[0]` IOAPIC pins
    /// reserved; `EEXIST` once enabled or after the first vCPU.
    fn enable_split_irqchip(&self, c: &KvmEnableCap) -> Result<isize> {
        if c.args[0] > u64::from(routing::MAX_IRQ_ROUTES) {
            return Err(EINVAL);
        }
        // The vCPU list's lock orders this against KVM_CREATE_VCPU.
        let vcpus = self.vcpus.lock();
        let mut chip = self.irq.chip.lock();
        if chip.split || !vcpus.is_empty() {
            return Err(EEXIST);
        }
        let map = KVec::with_capacity(abi::MAX_VCPUS as usize, GFP_KERNEL_ACCOUNT)?;
        let old = core::mem::replace(&mut *self.irq.apic_map.lock(), map);
        drop(old);
        *chip = Irqchip {
            split: true,
            reserved_pins: c.args[0] as u32,
        };
        Ok(0)
    }

    /// Whether vCPUs have their local APIC in the kernel.
    pub(crate) fn split_irqchip(&self) -> bool {
        self.irq.chip().split
    }

    /// `KVM_SIGNAL_MSI`: `EINVAL` without an in-kernel irqchip or with
    /// unknown flags; otherwise KVM's delivery count, which is -1 (`EPERM`
    /// to userspace) when no APIC matched, 0 when none accepted.
    pub(crate) fn signal_msi(&self, arg: usize) -> Result<isize> {
        let m: KvmMsi = uaccess::read(arg)?;
        if !self.split_irqchip() || m.flags & !KVM_MSI_VALID_DEVID != 0 {
            return Err(EINVAL);
        }
        let r = MsiRoute {
            address_lo: m.address_lo,
            address_hi: m.address_hi,
            data: m.data,
        };
        match self.irq.deliver_msi(&r) {
            r if r == EINVAL.to_errno() => Err(EINVAL),
            r if r < 0 => Err(EPERM),
            r => Ok(r as isize),
        }
    }

    /// `KVM_SET_GSI_ROUTING`: replaces the table (`EINVAL` without an
    /// in-kernel irqchip, for flags, more than `KVM_MAX_IRQ_ROUTES`
    /// entries, or an entry [`routing::fill`] refuses).
    pub(crate) fn set_gsi_routing(&self, arg: usize) -> Result<isize> {
        let h: KvmIrqRoutingHeader = uaccess::read(arg)?;
        if !self.split_irqchip() || h.nr > routing::MAX_IRQ_ROUTES || h.flags != 0 {
            return Err(EINVAL);
        }
        let entries: KVVec<KvmIrqRoutingEntry> = {
            let n = h.nr as usize;
            let start = arg + core::mem::size_of::<KvmIrqRoutingHeader>();
            let mut v = KVVec::with_capacity(n, GFP_KERNEL_ACCOUNT)?;
            for i in 0..n {
                let e = uaccess::read(start + i * core::mem::size_of::<KvmIrqRoutingEntry>())?;
                v.push(e, GFP_KERNEL_ACCOUNT)?;
            }
            v
        };
        let len = routing::table_len(&entries).map_err(|_| EINVAL)?;
        let mut table = KVVec::with_capacity(len, GFP_KERNEL_ACCOUNT)?;
        for _ in 0..len {
            table.push(None, GFP_KERNEL_ACCOUNT)?;
        }
        routing::fill(&entries, &mut table, self.irq.x2apic_format()).map_err(|_| EINVAL)?;
        let old = core::mem::replace(&mut *self.irq.routes.lock(), table);
        drop(old);
        self.irq.routes_gen.fetch_add(1, Ordering::SeqCst);
        self.kick_all();
        Ok(0)
    }

    /// `KVM_IRQ_LINE` and `KVM_IRQ_LINE_STATUS` (`status`: the count is
    /// written back). `ENXIO` without an in-kernel irqchip.
    pub(crate) fn irq_line(&self, arg: usize, status: bool) -> Result<isize> {
        let mut l: KvmIrqLevel = uaccess::read(arg)?;
        if !self.split_irqchip() {
            return Err(ENXIO);
        }
        let r = self.irq.set_irq(l.irq, l.level != 0);
        if status {
            l.irq = r as u32;
            uaccess::write(arg, &l)?;
        }
        Ok(0)
    }

    /// `KVM_IRQFD`: `EINVAL` for unknown flags, without an in-kernel
    /// irqchip, or for a resample irqfd (which needs the in-kernel IOAPIC).
    pub(crate) fn irqfd(&self, arg: usize) -> Result<isize> {
        let a: KvmIrqfd = uaccess::read(arg)?;
        if a.flags & !(KVM_IRQFD_FLAG_DEASSIGN | KVM_IRQFD_FLAG_RESAMPLE) != 0 {
            return Err(EINVAL);
        }
        if a.flags & KVM_IRQFD_FLAG_DEASSIGN != 0 {
            self.irq.irqfds.deassign(a.fd as i32, a.gsi)?;
            return Ok(0);
        }
        // kvm_arch_irqfd_allowed(): an irqchip, and resample needs the
        // in-kernel IOAPIC.
        if !self.split_irqchip() || a.flags & KVM_IRQFD_FLAG_RESAMPLE != 0 {
            return Err(EINVAL);
        }
        Irqfds::assign(&self.irq, a.fd as i32, a.gsi)?;
        Ok(0)
    }

    /// The VM is going away: its irqfds stop.
    pub(crate) fn release_irqfds(&self) {
        self.irq.irqfds.release();
    }
}
