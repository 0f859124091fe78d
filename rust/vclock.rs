// SPDX-License-Identifier: GPL-2.0

//! The VM clock and the guest's kvmclock (`core/src/clock.rs`,
//! `core/src/kvmclock.rs`): the per-VM clock offset and wall-clock MSR,
//! and per vCPU the system-time MSR and the `pvclock_vcpu_time_info` it
//! points at, rewritten before an entry whenever KVM would (the MSR was
//! written, `KVM_SET_CLOCK` moved the clock, the guest's TSC offset
//! changed).

use crate::{
    addr::Gpa,
    clock,
    kvmclock::{self, TimeInfo},
    memory::Mem,
    sys::cpu::{self, NoIrq, NoPreempt},
    uapi::KvmClockData,
};
use core::sync::atomic::{AtomicU64, Ordering};
use kernel::{prelude::*, sync::Arc};

/// What the VM's vCPUs share about time.
pub(crate) struct VmClock {
    /// The VM clock's offset from the kvmclock base
    /// (`kvm->arch.kvmclock_offset`).
    offset: AtomicU64,
    /// The wall-clock MSR's value (`kvm->arch.wall_clock`).
    wall_clock: AtomicU64,
    /// Bumped by `KVM_SET_CLOCK`: every vCPU's kvmclock is rewritten.
    gen: AtomicU64,
}

impl VmClock {
    /// A clock that reads 0 now.
    pub(crate) fn new() -> Result<Arc<Self>> {
        Arc::new(
            Self {
                offset: AtomicU64::new(clock::initial_offset(cpu::kvmclock_base_ns())),
                wall_clock: AtomicU64::new(0),
                gen: AtomicU64::new(0),
            },
            GFP_KERNEL_ACCOUNT,
        )
        .map_err(Into::into)
    }

    /// The VM clock at kvmclock base `base_ns`.
    fn at(&self, base_ns: u64) -> u64 {
        base_ns.wrapping_add(self.offset.load(Ordering::Relaxed))
    }

    /// `KVM_GET_CLOCK`.
    pub(crate) fn get(&self) -> KvmClockData {
        clock::get(self.offset.load(Ordering::Relaxed), cpu::kvmclock_base_ns())
    }

    /// `KVM_SET_CLOCK`: `EINVAL` for unknown flags.
    pub(crate) fn set(&self, d: &KvmClockData) -> Result {
        let offset =
            clock::set(d, cpu::kvmclock_base_ns(), cpu::realtime_ns()).map_err(|_| EINVAL)?;
        self.offset.store(offset, Ordering::Relaxed);
        self.gen.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// One vCPU's kvmclock.
pub(crate) struct PvClock {
    vm: Arc<VmClock>,
    /// The system-time MSR's value (`vcpu->arch.time`).
    system_time: u64,
    /// The time info must be rewritten before the next entry.
    dirty: bool,
    /// A wall-clock MSR write waits for guest memory.
    wall_pending: bool,
    /// The VM's `gen` and the guest's TSC offset at the last rewrite.
    seen: (u64, u64),
}

impl PvClock {
    pub(crate) fn new(vm: Arc<VmClock>) -> Self {
        Self {
            vm,
            system_time: 0,
            dirty: false,
            wall_pending: false,
            seen: (0, 0),
        }
    }

    /// RDMSR of a kvmclock MSR (KVM does not check the guest's CPUID for
    /// them by default); `None` for any other MSR.
    pub(crate) fn rdmsr(&self, index: u32) -> Option<u64> {
        match index {
            kvmclock::MSR_WALL_CLOCK | kvmclock::MSR_WALL_CLOCK_NEW => {
                Some(self.vm.wall_clock.load(Ordering::Relaxed))
            }
            kvmclock::MSR_SYSTEM_TIME | kvmclock::MSR_SYSTEM_TIME_NEW => Some(self.system_time),
            _ => None,
        }
    }

    /// WRMSR of a kvmclock MSR (any value is accepted, as KVM); `false`
    /// for any other MSR.
    pub(crate) fn wrmsr(&mut self, index: u32, v: u64) -> bool {
        match index {
            kvmclock::MSR_WALL_CLOCK | kvmclock::MSR_WALL_CLOCK_NEW => {
                self.vm.wall_clock.store(v, Ordering::Relaxed);
                self.wall_pending = true;
            }
            kvmclock::MSR_SYSTEM_TIME | kvmclock::MSR_SYSTEM_TIME_NEW => {
                self.system_time = v;
                self.dirty = true;
            }
            _ => return false,
        }
        true
    }

    /// Writes what is owed to guest memory: the wall clock after its MSR
    /// was written, and the time info (for a guest TSC of `tsc_khz` at
    /// host TSC + `tsc_offset`) when something changed it. Guest memory
    /// that is not there is skipped, as KVM skips it.
    pub(crate) fn sync(&mut self, mem: &Mem<'_>, tsc_offset: u64, tsc_khz: u32) {
        if core::mem::take(&mut self.wall_pending) {
            self.write_wall_clock(mem);
        }
        let seen = (self.vm.gen.load(Ordering::Relaxed), tsc_offset);
        if !self.dirty && seen == self.seen {
            return;
        }
        self.dirty = false;
        self.seen = seen;
        let Some(gpa) = kvmclock::system_time_gpa(self.system_time) else {
            return;
        };
        // The guest's TSC and the VM clock at one instant.
        let (tsc, base) = {
            let np = NoPreempt::new();
            let _irq = NoIrq::new(&np);
            (cpu::rdtsc(), cpu::kvmclock_base_ns())
        };
        let mut t = TimeInfo::new(tsc.wrapping_add(tsc_offset), self.vm.at(base), tsc_khz);
        let mut old = [0u8; kvmclock::TIME_INFO_SIZE];
        if mem.read(Gpa(gpa), &mut old).is_err() {
            return;
        }
        let (odd, even) = TimeInfo::versions(u32::from_le_bytes([old[0], old[1], old[2], old[3]]));
        t.version = odd;
        t.flags |= old[29] & kvmclock::PVCLOCK_GUEST_STOPPED;
        if mem.write(Gpa(gpa), &odd.to_le_bytes()).is_err() {
            return;
        }
        let _ = mem.write(Gpa(gpa), &t.to_bytes());
        let _ = mem.write(Gpa(gpa), &even.to_le_bytes());
    }

    /// `kvm_write_wall_clock`: the wall-clock time at VM clock 0.
    fn write_wall_clock(&self, mem: &Mem<'_>) {
        let gpa = Gpa(self.vm.wall_clock.load(Ordering::Relaxed));
        if gpa.0 == 0 {
            return;
        }
        let mut v = [0u8; 4];
        if mem.read(gpa, &mut v).is_err() {
            return;
        }
        let (first, last) = kvmclock::wall_clock_versions(u32::from_le_bytes(v));
        if mem.write(gpa, &first.to_le_bytes()).is_err() {
            return;
        }
        let epoch = cpu::realtime_ns().wrapping_sub(self.vm.get().clock);
        let _ = mem.write(gpa, &kvmclock::wall_clock_bytes(first, epoch));
        let _ = mem.write(gpa, &last.to_le_bytes());
    }
}
