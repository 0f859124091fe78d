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
    uapi::{KvmUserspaceMemoryRegion, KvmUserspaceMemoryRegion2},
    vcpu::{Vcpu, VcpuFile},
};
use core::sync::atomic::{AtomicU64, Ordering};
use kernel::{
    mm::Mm,
    new_mutex,
    prelude::*,
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
    slots: Mutex<KVec<Slot>>,
    #[pin]
    mmu: Mutex<Mmu>,
    #[pin]
    vcpus: Mutex<KVec<Arc<Vcpu>>>,
    /// Bumped whenever mappings leave the nested page table; each vCPU
    /// flushes its TLB when it sees a new value.
    pub(crate) tlb_gen: AtomicU64,
    /// The nested page table root (nCR3); fixed for the VM's life.
    pub(crate) ncr3: u64,
}

impl Vm {
    /// Creates a VM owned by the calling process.
    pub(crate) fn new() -> Result<Arc<Self>> {
        let mm = ARef::<Mm>::from(&**kernel::current!().mm().ok_or(EINVAL)?);
        // Nested paging walks as many levels as the host's own paging.
        let levels = if cpu::read_cr4() & (1 << 12) != 0 {
            5
        } else {
            4
        };
        let mmu = Mmu::new(levels)?;
        let ncr3 = mmu.root_pa();
        Arc::pin_init(
            pin_init!(Self {
                mm,
                slots <- new_mutex!(KVec::new()),
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
        let mut slots = self.slots.lock();
        let change = memslot::plan(&slots, &req, cpu::task_size()).map_err(|e| match e {
            SlotError::Inval => EINVAL,
            SlotError::Exist => EEXIST,
        })?;
        match change {
            Change::Unchanged => {}
            Change::Create(s) => slots.push(s, GFP_KERNEL)?,
            Change::Delete(old) => {
                self.zap(&old)?;
                slots.retain(|s| s.id != old.id);
            }
            Change::Move { old, new } | Change::FlagsOnly { old, new } => {
                if old.base_gfn != new.base_gfn {
                    self.zap(&old)?;
                }
                if let Some(s) = slots.iter_mut().find(|s| s.id == new.id) {
                    *s = new;
                }
            }
        }
        Ok(0)
    }

    /// Removes a slot's pages from the nested page table, makes every vCPU
    /// drop them from its TLB, and only then unpins them.
    fn zap(&self, slot: &Slot) -> Result {
        let pins = self.mmu.lock().unmap_range(slot.base_gfn, slot.npages)?;
        if pins.is_empty() {
            return Ok(());
        }
        self.tlb_gen.fetch_add(1, Ordering::SeqCst);
        for v in self.vcpus.lock().iter() {
            if let Ok(c) = usize::try_from(v.running.load(Ordering::SeqCst)) {
                cpu::kick_cpu(c);
            }
        }
        drop(pins);
        Ok(())
    }

    /// The slot holding guest frame `gfn`.
    pub(crate) fn slot_of(&self, gfn: u64) -> Option<Slot> {
        memslot::find(&self.slots.lock(), gfn).copied()
    }

    /// Handles a nested page fault at `gpa`: maps the page if a slot backs
    /// it with the access needed. `Ok(false)` means MMIO (no slot, or a
    /// write to a read-only slot).
    pub(crate) fn fault_in(&self, gpa: u64, write: bool) -> Result<bool> {
        let gfn = gpa >> 12;
        // Holding the slots lock keeps the slot from changing under the new
        // mapping; pinning may sleep, which a mutex allows.
        let slots = self.slots.lock();
        let Some(slot) = memslot::find(&slots, gfn).copied() else {
            return Ok(false);
        };
        if write && slot.readonly() {
            return Ok(false);
        }
        if self.mmu.lock().mapped(gfn).is_some() {
            // Another vCPU mapped it meanwhile.
            return Ok(true);
        }
        let page = crate::sys::mem::PinnedPage::pin(slot.hva(gfn), !slot.readonly())?;
        let mut mmu = self.mmu.lock();
        if mmu.mapped(gfn).is_none() {
            mmu.map(gfn, page)?;
        }
        drop(slots);
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
        let mut a = gpa;
        while a < gpa + buf.len() as u64 {
            match self.slot_of(a >> 12) {
                Some(s) if !s.readonly() => a = (a & !0xfff) + 4096,
                _ => return Ok(false),
            }
        }
        let (mut gpa, mut done) = (gpa, 0);
        while done < buf.len() {
            let slot = self.slot_of(gpa >> 12).ok_or(EFAULT)?;
            let n = (4096 - (gpa & 0xfff) as usize).min(buf.len() - done);
            let hva = slot.hva(gpa >> 12) + (gpa & 0xfff);
            UserSlice::new(UserPtr::from_addr(hva as usize), n)
                .writer()
                .write_slice(&buf[done..done + n])?;
            done += n;
            gpa += n as u64;
        }
        Ok(true)
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
