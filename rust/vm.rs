// SPDX-License-Identifier: GPL-2.0

//! A virtual machine: the object behind a VM file descriptor. It owns the
//! memory slots, the nested page table and the vCPUs.

use crate::{
    abi,
    addr::{Gfn, Gpa},
    backend::Backend,
    iobus::Ioeventfds,
    irq::Irq,
    memory::{Mem, MemOnce, SlotTable},
    memslot::{self, Change, Slot, SlotError},
    mmu::Mmu,
    sys::{
        cpu,
        file::{self, AnonFile},
        mem::{PinAccount, PinnedPage},
        srcu::SrcuBox,
        uaccess,
    },
    uapi::{
        KvmClockData, KvmDirtyLog, KvmIoeventfd, KvmUserspaceMemoryRegion,
        KvmUserspaceMemoryRegion2,
    },
    vclock::VmClock,
    vcpu::{Vcpu, VcpuFile},
};
use core::sync::atomic::{AtomicU64, Ordering};
use kernel::{
    new_mutex,
    prelude::*,
    sync::{Arc, ArcBorrow, Mutex},
};

/// One VM. It belongs to the address space (mm) of the process that
/// created it; ioctls from any other mm fail with `EIO`, as in KVM.
///
/// Lock order: a vCPU's own state, then `slots_lock`, then `mmu`, then
/// `vcpus`, then the irqchip mode, then the APIC map or the routing table
/// (`irq.rs`; never both); a vCPU's doorbell is innermost. The slot table itself is read under SRCU ([`Vm::mem`])
/// and needs no lock.
#[pin_data(PinnedDrop)]
pub(crate) struct Vm<B: Backend> {
    /// The VMM's address space, where pins are charged.
    pins: PinAccount,
    /// The memory slots, as vCPUs see them.
    slots: SrcuBox<SlotTable>,
    /// Held by whoever changes the slots or reads a dirty log (KVM's
    /// `slots_lock`).
    #[pin]
    slots_lock: Mutex<()>,
    #[pin]
    mmu: Mutex<Mmu>,
    /// The ioeventfds, read by vCPUs under SRCU (`iobus.rs`).
    #[pin]
    pub(crate) ioeventfds: Ioeventfds,
    #[pin]
    pub(crate) vcpus: Mutex<KVec<Arc<Vcpu<B>>>>,
    /// The irqchip, APIC map, routing table and irqfds (`irq.rs`).
    pub(crate) irq: Arc<Irq>,
    /// Bumped whenever mappings leave the nested page table; each vCPU
    /// flushes its TLB when it sees a new value.
    pub(crate) tlb_gen: AtomicU64,
    /// The second-level page table root (nCR3 or the EPT pointer's
    /// address); fixed for the VM's life.
    pub(crate) ncr3: u64,
    /// The highest frame a slot may hold (`memslot::max_gfn`).
    max_gfn: u64,
    /// The TSC offset every vCPU starts with: the guest's TSC counts from
    /// 0 at VM creation, the same on all vCPUs.
    tsc_offset: u64,
    /// The VM clock and the wall-clock MSR, shared with the vCPUs.
    clock: Arc<VmClock>,
}

impl<B: Backend> Vm<B> {
    /// Creates a VM owned by the calling process.
    pub(crate) fn new() -> Result<Arc<Self>> {
        let pins = PinAccount::current()?;
        let shape = B::mmu();
        let mmu = Mmu::new(shape.format, shape.levels, shape.huge)?;
        let ncr3 = mmu.root_pa();
        let max_gfn = memslot::max_gfn(cpu::host_maxphyaddr(), (12 + 9 * shape.levels) as u8);
        Arc::pin_init(
            try_pin_init!(Self {
                pins,
                slots: SrcuBox::new(KBox::new(SlotTable::empty(), GFP_KERNEL_ACCOUNT)?),
                slots_lock <- new_mutex!(()),
                mmu <- new_mutex!(mmu),
                ioeventfds <- Ioeventfds::new()?,
                vcpus <- new_mutex!(KVec::new()),
                irq: Irq::new()?,
                tlb_gen: AtomicU64::new(0),
                ncr3,
                max_gfn,
                tsc_offset: 0u64.wrapping_sub(cpu::rdtsc()),
                clock: VmClock::new()?,
            }),
            GFP_KERNEL_ACCOUNT,
        )
    }

    /// `KVM_GET_CLOCK`: the VM clock, without the flags of a master clock
    /// (rkvm has none), as KVM answers without one.
    fn get_clock(&self, arg: usize) -> Result<isize> {
        uaccess::write(arg, &self.clock.get())?;
        Ok(0)
    }

    /// `KVM_SET_CLOCK`: `EINVAL` for unknown flags; with
    /// `KVM_CLOCK_REALTIME` the wall-clock time since `realtime` is added.
    fn set_clock(&self, arg: usize) -> Result<isize> {
        let d: KvmClockData = uaccess::read(arg)?;
        self.clock.set(&d)?;
        Ok(0)
    }

    pub(crate) fn check_owner(&self) -> Result {
        match kernel::current!().mm() {
            Some(mm) if core::ptr::eq(mm.as_raw(), self.pins.mm().as_raw()) => Ok(()),
            _ => Err(EIO),
        }
    }

    /// A view of guest memory (the slot table under SRCU) for one exit or
    /// ioctl.
    pub(crate) fn mem(&self) -> Mem<'_> {
        Mem::new(self.slots.read())
    }

    /// A view of guest memory for one exit, taken when first needed.
    pub(crate) fn mem_once(&self) -> MemOnce<'_> {
        MemOnce::new(&self.slots)
    }

    fn create_vcpu(this: ArcBorrow<'_, Self>, id: usize) -> Result<isize> {
        if id >= abi::MAX_VCPU_IDS as usize {
            return Err(EINVAL);
        }
        let mut vcpus = this.vcpus.lock();
        if vcpus.len() >= abi::MAX_VCPUS as usize {
            return Err(EINVAL);
        }
        if vcpus.iter().any(|v| v.id == id as u32) {
            return Err(EEXIST);
        }
        let split = this.split_irqchip();
        let vcpu = Vcpu::new(
            id as u32,
            vcpus.len(),
            this.tsc_offset,
            split,
            this.clock.clone(),
        )?;
        if split {
            let lapic = KBox::new(vcpu.lapic_copy(), GFP_KERNEL_ACCOUNT)?;
            this.irq.add_apic(vcpu.bell.clone(), lapic)?;
        }
        if let Err(e) = vcpus.push(vcpu.clone(), GFP_KERNEL_ACCOUNT) {
            if split {
                this.irq.remove_last_apic();
            }
            return Err(e.into());
        }
        let f = Arc::new(
            VcpuFile {
                vm: this.into(),
                vcpu,
            },
            GFP_KERNEL_ACCOUNT,
        )?;
        let mut name = [0u8; 24];
        let n = fmt_name(&mut name, id);
        let name = CStr::from_bytes_with_nul(&name[..=n]).map_err(|_| EINVAL)?;
        match file::install_fd(f, name) {
            Ok(fd) => Ok(fd as isize),
            Err(e) => {
                vcpus.pop();
                if split {
                    this.irq.remove_last_apic();
                }
                Err(e)
            }
        }
    }

    /// `KVM_SET_USER_MEMORY_REGION(2)`: builds the new slot table, publishes
    /// it, waits until no vCPU reads the old one, then unmaps what the
    /// change took away (a deleted or moved slot's pages; a slot that starts
    /// logging writes faults again, at 4 KiB and read-only, so every write
    /// from now on is seen).
    fn set_memory_region(&self, req: memslot::Request) -> Result<isize> {
        let _w = self.slots_lock.lock();
        let (change, new) =
            {
                let cur = self.slots.read();
                let change = memslot::plan(cur.slots(), &req, cpu::task_size(), self.max_gfn)
                    .map_err(|e| match e {
                        SlotError::Inval => EINVAL,
                        SlotError::Exist => EEXIST,
                    })?;
                if change == Change::Unchanged {
                    return Ok(0);
                }
                (change, cur.with_change(&change)?)
            };
        let old = self.slots.replace(new);
        match change {
            Change::Delete(gone) | Change::Move { old: gone, .. } => self.unmap(&gone),
            Change::FlagsOnly { old, new } if new.logs_dirty() && !old.logs_dirty() => {
                self.unmap(&new)
            }
            _ => {}
        }
        drop(old);
        Ok(0)
    }

    /// `KVM_GET_DIRTY_LOG`: hands out and clears a slot's dirty bitmap and
    /// write-protects the pages it names, so new writes are caught.
    fn get_dirty_log(&self, arg: usize) -> Result<isize> {
        let log: KvmDirtyLog = uaccess::read(arg)?;
        let (as_id, id) = (log.slot >> 16, log.slot & 0xffff);
        if as_id != 0 || id >= memslot::USER_MEM_SLOTS {
            return Err(EINVAL);
        }
        let _w = self.slots_lock.lock();
        let mem = self.mem();
        let Some((slot, bits)) = mem.table().logging(id) else {
            return Err(ENOENT);
        };
        let mut snapshot = KVec::with_capacity(bits.words(), GFP_KERNEL_ACCOUNT)?;
        // Bits are taken and pages write-protected under the MMU lock, which
        // a fault holds while it marks a page dirty and maps it writable: a
        // write is either in this snapshot with its page protected, or in
        // the next one.
        let mut mmu = self.mmu.lock();
        let mut changed = false;
        for w in 0..bits.words() {
            let mask = bits.take(w);
            snapshot.push(mask, GFP_KERNEL_ACCOUNT)?;
            if mask != 0 {
                changed |= mmu.write_protect(slot.base().add(w as u64 * 64), mask);
            }
        }
        if changed {
            self.flush_tlbs();
        }
        drop(mmu);
        drop(mem);
        uaccess::write_array(log.dirty_bitmap as usize, &snapshot)?;
        Ok(0)
    }

    /// Makes every vCPU drop the guest translations it may have cached:
    /// bump the generation, then kick the CPUs running a vCPU of this VM.
    fn flush_tlbs(&self) {
        self.tlb_gen.fetch_add(1, Ordering::SeqCst);
        self.kick_all();
    }

    /// Kicks every vCPU in guest mode out, so that it looks at the VM's
    /// state again before its next entry.
    pub(crate) fn kick_all(&self) {
        for v in self.vcpus.lock().iter() {
            if let Ok(c) = usize::try_from(v.bell.running.load(Ordering::SeqCst)) {
                cpu::kick_cpu(c);
            }
        }
    }

    /// Removes a slot's pages from the nested page table, makes every vCPU
    /// drop them from its TLB, and only then unpins them.
    fn unmap(&self, slot: &Slot) {
        self.mmu
            .lock()
            .unmap_range(slot.base(), slot.npages, || self.flush_tlbs());
    }

    /// Handles a nested page fault at `gpa`: maps the page if a slot backs
    /// it with the access needed. `Ok(false)` means MMIO (no slot, or a
    /// write to a read-only slot).
    ///
    /// The VMM's page is pinned with no lock held (pinning may sleep on a
    /// page fault or a userfaultfd); `mem` keeps the slot table from being
    /// replaced meanwhile: a slot change waits for this reader before it
    /// unmaps, so whatever is mapped here for a slot that is going away is
    /// unmapped again.
    pub(crate) fn fault_in(&self, mem: &Mem<'_>, gpa: Gpa, write: bool) -> Result<bool> {
        let gfn = gpa.gfn();
        let Some((slot, dirty)) = mem.table().find(gfn) else {
            return Ok(false);
        };
        if write && slot.readonly() {
            return Ok(false);
        }
        let index = gfn.0 - slot.base_gfn;
        {
            let mut mmu = self.mmu.lock();
            match mmu.mapped(gfn) {
                // Mapped meanwhile by another vCPU.
                Some(true) => return Ok(true),
                Some(false) if !write => return Ok(true),
                // A write to a page dirty logging write-protected.
                Some(false) => {
                    // The VMM's own mapping was read-only when the page was
                    // pinned: the write cannot be done (KVM: EFAULT).
                    if !mmu.make_writable(gfn) {
                        return Err(EFAULT);
                    }
                    if let Some(d) = dirty {
                        d.mark(index);
                    }
                    return Ok(true);
                }
                None => {}
            }
        }
        // A VMM mapping without write permission still backs reads: pin it
        // read-only then (a write fault is EFAULT, as in KVM).
        let hva = slot.hva(gfn);
        let mut page = match PinnedPage::pin(&self.pins, hva, !slot.readonly()) {
            Err(e) if !write && !slot.readonly() && e != ENOMEM => {
                PinnedPage::pin(&self.pins, hva, false).map_err(|_| e)?
            }
            r => r?,
        };
        // A 2 MiB mapping when the whole aligned range is in the slot, the
        // VMM maps it with one huge entry of one huge folio (the pin keeps
        // it), and the slot does not log writes (tracked at 4 KiB).
        let base = Gfn(gfn.0 & !511);
        let huge = if dirty.is_none() && base >= slot.base() && base.add(512) <= slot.end() {
            page.huge_2m_phys(slot.hva(base))
        } else {
            None
        };
        // While logging, map read-only until the first write, which faults
        // again and is recorded.
        let writable = dirty.is_none() || write;
        let mut mmu = self.mmu.lock();
        if mmu.mapped(gfn).is_some() {
            // Another vCPU was faster; `page` is unpinned after the lock.
            drop(mmu);
            return Ok(true);
        }
        if let (true, Some(d)) = (write, dirty) {
            d.mark(index);
        }
        if let Some(phys) = huge {
            match mmu.map_2m(base, phys, page, writable)? {
                None => return Ok(true),
                Some(p) => page = p,
            }
        }
        mmu.map(gfn, page, writable)?;
        Ok(true)
    }
}

/// A slot request from either version of the ioctl's struct.
fn request(slot: u32, flags: u32, gpa: u64, size: u64, hva: u64) -> memslot::Request {
    memslot::Request {
        slot,
        flags,
        guest_phys_addr: gpa,
        memory_size: size,
        userspace_addr: hva,
    }
}

/// Writes `kvm-vcpu:<id>` and a NUL into `buf`; returns the NUL's index.
fn fmt_name(buf: &mut [u8; 24], id: usize) -> usize {
    let prefix = b"kvm-vcpu:";
    buf[..prefix.len()].copy_from_slice(prefix);
    let mut digits = [0u8; 12];
    let (mut n, mut v) = (0, id);
    loop {
        digits[n] = b'0' + (v % 10) as u8;
        n += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    for i in 0..n {
        buf[prefix.len() + i] = digits[n - 1 - i];
    }
    buf[prefix.len() + n] = 0;
    prefix.len() + n
}

#[pinned_drop]
impl<B: Backend> PinnedDrop for Vm<B> {
    fn drop(self: Pin<&mut Self>) {
        // The irqfds hold the interrupt state, not the VM: unhook them.
        self.release_irqfds();
    }
}

impl<B: Backend> AnonFile for Vm<B> {
    fn ioctl(this: ArcBorrow<'_, Self>, cmd: u32, arg: usize) -> Result<isize> {
        this.check_owner()?;
        match cmd {
            abi::KVM_CHECK_EXTENSION => Ok(abi::check_extension(arg)),
            abi::KVM_CREATE_VCPU => Self::create_vcpu(this, arg),
            abi::KVM_GET_DIRTY_LOG => this.get_dirty_log(arg),
            abi::KVM_SET_USER_MEMORY_REGION => {
                let r: KvmUserspaceMemoryRegion = uaccess::read(arg)?;
                // The v1 ioctl accepts only the flags the v1 struct can carry.
                if r.flags & !(memslot::KVM_MEM_LOG_DIRTY_PAGES | memslot::KVM_MEM_READONLY) != 0 {
                    return Err(EINVAL);
                }
                this.set_memory_region(request(
                    r.slot,
                    r.flags,
                    r.guest_phys_addr,
                    r.memory_size,
                    r.userspace_addr,
                ))
            }
            abi::KVM_SET_USER_MEMORY_REGION2 => {
                let r: KvmUserspaceMemoryRegion2 = uaccess::read(arg)?;
                this.set_memory_region(request(
                    r.slot,
                    r.flags,
                    r.guest_phys_addr,
                    r.memory_size,
                    r.userspace_addr,
                ))
            }
            // SVM needs neither a real-mode TSS nor an identity map; KVM
            // accepts and ignores them there too, with the same checks.
            abi::KVM_SET_TSS_ADDR if arg > 0xffff_d000 => Err(EINVAL),
            abi::KVM_SET_TSS_ADDR => Ok(0),
            abi::KVM_SET_IDENTITY_MAP_ADDR => {
                if !this.vcpus.lock().is_empty() {
                    return Err(EINVAL);
                }
                let _addr: u64 = uaccess::read(arg)?;
                Ok(0)
            }
            abi::KVM_ENABLE_CAP => this.enable_cap(arg),
            abi::KVM_SIGNAL_MSI => this.signal_msi(arg),
            abi::KVM_GET_CLOCK => this.get_clock(arg),
            abi::KVM_SET_CLOCK => this.set_clock(arg),
            abi::KVM_IOEVENTFD => {
                let args: KvmIoeventfd = uaccess::read(arg)?;
                this.ioeventfds.ioctl(&args)
            }
            abi::KVM_SET_GSI_ROUTING => this.set_gsi_routing(arg),
            abi::KVM_IRQ_LINE => this.irq_line(arg, false),
            abi::KVM_IRQ_LINE_STATUS => this.irq_line(arg, true),
            abi::KVM_IRQFD => this.irqfd(arg),
            // No in-kernel PIC and IOAPIC: the ioctl does not exist here
            // (KVM_CREATE_IRQCHIP is ENOTTY, and clients such as the KVM
            // selftests fall back to the split irqchip), except that with
            // the split irqchip there already is one (KVM's EEXIST).
            abi::KVM_CREATE_IRQCHIP if this.split_irqchip() => Err(EEXIST),
            _ => Err(ENOTTY),
        }
    }
}
