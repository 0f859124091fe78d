// SPDX-License-Identifier: GPL-2.0

//! A virtual machine: the object behind a VM file descriptor. It owns the
//! memory slots, the nested page table and the vCPUs.

use crate::{
    abi,
    memslot::{self, Change, Slot, SlotError},
    mmu::Mmu,
    sys::{
        cpu,
        file::{self, AnonFile},
        uaccess,
    },
    uapi::{KvmDirtyLog, KvmUserspaceMemoryRegion, KvmUserspaceMemoryRegion2},
    vcpu::{Vcpu, VcpuFile},
};
use core::sync::atomic::{AtomicU64, Ordering};
use kernel::{
    mm::Mm,
    new_mutex,
    prelude::*,
    rbtree::RBTree,
    sync::{aref::ARef, Arc, ArcBorrow, Mutex},
    uaccess::{UserPtr, UserSlice},
};

/// One VM. It belongs to the address space (mm) of the process that
/// created it; ioctls from any other mm fail with `EIO`, as in KVM.
///
/// Lock order: `slots`, then `mmu` or `vcpus`.
#[pin_data]
pub(crate) struct Vm {
    mm: ARef<Mm>,
    #[pin]
    slots: Mutex<SlotTable>,
    #[pin]
    mmu: Mutex<Mmu>,
    #[pin]
    vcpus: Mutex<KVec<Arc<Vcpu>>>,
    /// Bumped whenever mappings leave the nested page table; each vCPU
    /// flushes its TLB when it sees a new value.
    pub(crate) tlb_gen: AtomicU64,
    /// The second-level page table root (nCR3 or the EPT pointer's
    /// address); fixed for the VM's life.
    pub(crate) ncr3: u64,
}

impl Vm {
    /// Creates a VM owned by the calling process.
    pub(crate) fn new() -> Result<Arc<Self>> {
        let mm = ARef::<Mm>::from(&**kernel::current!().mm().ok_or(EINVAL)?);
        let vendor = crate::virt::Vendor::current();
        let (format, levels) = vendor.mmu_format();
        let mmu = Mmu::new(format, levels, vendor.huge_pages())?;
        let ncr3 = mmu.root_pa();
        Arc::pin_init(
            pin_init!(Self {
                mm,
                slots <- new_mutex!(SlotTable {
                    list: KVec::new(),
                    dirty: RBTree::new(),
                }),
                mmu <- new_mutex!(mmu),
                vcpus <- new_mutex!(KVec::new()),
                tlb_gen: AtomicU64::new(0),
                ncr3,
            }),
            GFP_KERNEL,
        )
    }

    pub(crate) fn check_owner(&self) -> Result {
        match kernel::current!().mm() {
            Some(mm) if core::ptr::eq(mm.as_raw(), self.mm.as_raw()) => Ok(()),
            _ => Err(EIO),
        }
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
        let vcpu = Vcpu::new(id as u32)?;
        vcpus.push(vcpu.clone(), GFP_KERNEL)?;
        let f = Arc::new(
            VcpuFile {
                vm: this.into(),
                vcpu,
            },
            GFP_KERNEL,
        )?;
        let mut name = [0u8; 24];
        let n = fmt_name(&mut name, id);
        let name = CStr::from_bytes_with_nul(&name[..=n]).map_err(|_| EINVAL)?;
        match file::install_fd(f, name) {
            Ok(fd) => Ok(fd as isize),
            Err(e) => {
                vcpus.pop();
                Err(e)
            }
        }
    }

    fn set_memory_region(&self, req: memslot::Request) -> Result<isize> {
        let mut t = self.slots.lock();
        let change = memslot::plan(&t.list, &req, cpu::task_size()).map_err(|e| match e {
            SlotError::Inval => EINVAL,
            SlotError::Exist => EEXIST,
        })?;
        match change {
            Change::Unchanged => {}
            Change::Create(s) => {
                t.list.push(s, GFP_KERNEL)?;
                if s.logs_dirty() {
                    t.start_logging(&s)?;
                }
            }
            Change::Delete(old) => {
                self.zap(&old)?;
                t.list.retain(|s| s.id != old.id);
                t.dirty.remove(&old.id);
            }
            Change::Move { old, new } | Change::FlagsOnly { old, new } => {
                if old.base_gfn != new.base_gfn {
                    self.zap(&old)?;
                }
                if let Some(s) = t.list.iter_mut().find(|s| s.id == new.id) {
                    *s = new;
                }
                t.dirty.remove(&old.id);
                if new.logs_dirty() && !old.logs_dirty() {
                    t.start_logging(&new)?;
                    // Everything mapped before logging began (2 MiB
                    // mappings too) faults again, at 4 KiB and read-only,
                    // so every write from now on is seen.
                    self.zap(&new)?;
                } else if new.logs_dirty() {
                    t.start_logging(&new)?;
                }
            }
        }
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
        let mut t = self.slots.lock();
        let Some(slot) = t.list.iter().find(|s| s.id == id).copied() else {
            return Err(ENOENT);
        };
        let Some(bits) = t.dirty.get_mut(&id) else {
            return Err(ENOENT);
        };
        let mut snapshot = KVec::with_capacity(bits.len(), GFP_KERNEL)?;
        let mut mmu = self.mmu.lock();
        let mut changed = false;
        for (w, word) in bits.iter_mut().enumerate() {
            let mask = core::mem::take(word);
            snapshot.push(mask, GFP_KERNEL)?;
            if mask != 0 {
                changed |= mmu.write_protect(slot.base_gfn + w as u64 * 64, mask);
            }
        }
        drop(mmu);
        drop(t);
        if changed {
            self.flush_tlbs();
        }
        uaccess::write_array(log.dirty_bitmap as usize, &snapshot)?;
        Ok(0)
    }

    /// Makes every vCPU drop the guest translations it may have cached:
    /// bump the generation, then kick the CPUs running a vCPU of this VM.
    fn flush_tlbs(&self) {
        self.tlb_gen.fetch_add(1, Ordering::SeqCst);
        for v in self.vcpus.lock().iter() {
            if let Ok(c) = usize::try_from(v.running.load(Ordering::SeqCst)) {
                cpu::kick_cpu(c);
            }
        }
    }

    /// Removes a slot's pages from the nested page table, makes every vCPU
    /// drop them from its TLB, and only then unpins them.
    fn zap(&self, slot: &Slot) -> Result {
        let pins = self.mmu.lock().unmap_range(slot.base_gfn, slot.npages)?;
        if !pins.is_empty() {
            self.flush_tlbs();
        }
        drop(pins);
        Ok(())
    }

    /// The slot holding guest frame `gfn`.
    pub(crate) fn slot_of(&self, gfn: u64) -> Option<Slot> {
        memslot::find(&self.slots.lock().list, gfn).copied()
    }

    /// Handles a nested page fault at `gpa`: maps the page if a slot backs
    /// it with the access needed. `Ok(false)` means MMIO (no slot, or a
    /// write to a read-only slot).
    pub(crate) fn fault_in(&self, gpa: u64, write: bool) -> Result<bool> {
        let gfn = gpa >> 12;
        // Holding the slots lock keeps the slot from changing under the new
        // mapping; pinning may sleep, which a mutex allows.
        let mut t = self.slots.lock();
        let Some(slot) = memslot::find(&t.list, gfn).copied() else {
            return Ok(false);
        };
        if write && slot.readonly() {
            return Ok(false);
        }
        let logging = t.dirty.get(&slot.id).is_some();
        // Bound first: a guard in the match scrutinee would live through
        // the arms, which lock the MMU again.
        let mapped = self.mmu.lock().mapped(gfn);
        match mapped {
            // Mapped meanwhile by another vCPU.
            Some(true) => return Ok(true),
            Some(false) if !write => return Ok(true),
            // A write to a page dirty logging write-protected.
            Some(false) => {
                // The VMM's own mapping was read-only when the page was
                // pinned: the write cannot be done (KVM: EFAULT).
                if !self.mmu.lock().make_writable(gfn) {
                    return Err(EFAULT);
                }
                t.mark_dirty(&slot, gfn);
                return Ok(true);
            }
            None => {}
        }
        // A VMM mapping without write permission still backs reads: pin it
        // read-only then (a write fault is EFAULT, as in KVM).
        let page = match crate::sys::mem::PinnedPage::pin(slot.hva(gfn), !slot.readonly()) {
            Err(e) if !write && !slot.readonly() => {
                crate::sys::mem::PinnedPage::pin(slot.hva(gfn), false).map_err(|_| e)?
            }
            r => r?,
        };
        // While logging, map read-only until the first write, which faults
        // again and is recorded.
        let writable = !logging || write;
        if logging && write {
            t.mark_dirty(&slot, gfn);
        }
        let mut mmu = self.mmu.lock();
        if mmu.mapped(gfn).is_some() {
            return Ok(true);
        }
        // A 2 MiB mapping when the whole aligned range is in the slot, the
        // VMM's address is aligned the same way, and one huge folio backs
        // it; not while logging (dirty pages are tracked at 4 KiB).
        let base = gfn & !511;
        let aligned = slot.hva(gfn).wrapping_sub(gfn << 12) & ((2 << 20) - 1) == 0;
        let mut page = page;
        if !logging && aligned && base >= slot.base_gfn && base + 512 <= slot.base_gfn + slot.npages
        {
            if let Some(phys) = page.huge_2m_phys() {
                match mmu.map_2m(base, phys, page, writable)? {
                    None => return Ok(true),
                    Some(p) => page = p,
                }
            }
        }
        mmu.map(gfn, page, writable)?;
        Ok(true)
    }

    /// Copies guest physical memory at `gpa` into `buf` through the VMM's
    /// mapping; `Ok(false)` if some byte is not in a slot.
    pub(crate) fn read_guest(&self, mut gpa: u64, buf: &mut [u8]) -> Result<bool> {
        let mut done = 0;
        while done < buf.len() {
            let Some(slot) = self.slot_of(gpa >> 12) else {
                return Ok(false);
            };
            let n = (4096 - (gpa & 0xfff) as usize).min(buf.len() - done);
            let hva = slot.hva(gpa >> 12) + (gpa & 0xfff);
            UserSlice::new(UserPtr::from_addr(hva as usize), n)
                .reader()
                .read_slice(&mut buf[done..done + n])?;
            done += n;
            gpa += n as u64;
        }
        Ok(true)
    }

    /// Copies `buf` into guest physical memory at `gpa`; `Ok(false)` if
    /// some byte is not in a writable slot (nothing is written then).
    pub(crate) fn write_guest(&self, gpa: u64, buf: &[u8]) -> Result<bool> {
        // One lock for the check, the copy and the dirty bits: the slots
        // cannot change in between, and the hot path locks once.
        let mut t = self.slots.lock();
        let end = gpa + buf.len() as u64;
        let mut a = gpa;
        while a < end {
            match memslot::find(&t.list, a >> 12) {
                Some(s) if !s.readonly() => a = (a & !0xfff) + 4096,
                _ => return Ok(false),
            }
        }
        let (mut gpa, mut done) = (gpa, 0);
        while done < buf.len() {
            let slot = *memslot::find(&t.list, gpa >> 12).ok_or(EFAULT)?;
            let n = (4096 - (gpa & 0xfff) as usize).min(buf.len() - done);
            let hva = slot.hva(gpa >> 12) + (gpa & 0xfff);
            UserSlice::new(UserPtr::from_addr(hva as usize), n)
                .writer()
                .write_slice(&buf[done..done + n])?;
            // Writes rkvm makes for the guest (emulation, string IN) are
            // guest writes for dirty logging too.
            t.mark_dirty(&slot, gpa >> 12);
            done += n;
            gpa += n as u64;
        }
        Ok(true)
    }
}

/// The memory slots and the dirty bitmaps of those that log writes.
struct SlotTable {
    list: KVec<Slot>,
    /// Dirty bitmap (one bit per page) by slot id.
    dirty: RBTree<u32, KVec<u64>>,
}

impl SlotTable {
    fn start_logging(&mut self, slot: &Slot) -> Result {
        let mut bits = KVec::with_capacity(slot.bitmap_words(), GFP_KERNEL)?;
        bits.resize(slot.bitmap_words(), 0, GFP_KERNEL)?;
        self.dirty
            .try_create_and_insert(slot.id, bits, GFP_KERNEL)?;
        Ok(())
    }

    fn mark_dirty(&mut self, slot: &Slot, gfn: u64) {
        if let Some(bits) = self.dirty.get_mut(&slot.id) {
            let i = gfn - slot.base_gfn;
            if let Some(w) = bits.get_mut((i / 64) as usize) {
                *w |= 1 << (i % 64);
            }
        }
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

impl AnonFile for Vm {
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
                this.set_memory_region(memslot::Request {
                    slot: r.slot,
                    flags: r.flags,
                    guest_phys_addr: r.guest_phys_addr,
                    memory_size: r.memory_size,
                    userspace_addr: r.userspace_addr,
                })
            }
            abi::KVM_SET_USER_MEMORY_REGION2 => {
                let r: KvmUserspaceMemoryRegion2 = uaccess::read(arg)?;
                this.set_memory_region(memslot::Request {
                    slot: r.slot,
                    flags: r.flags,
                    guest_phys_addr: r.guest_phys_addr,
                    memory_size: r.memory_size,
                    userspace_addr: r.userspace_addr,
                })
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
            _ => Err(ENOTTY),
        }
    }
}
