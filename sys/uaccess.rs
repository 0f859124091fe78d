// SPDX-License-Identifier: GPL-2.0

//! Copying KVM's UAPI structs to and from userspace.

use crate::uapi::{
    KvmClockData, KvmCpuid2Header, KvmCpuidEntry2, KvmDebugregs, KvmDirtyLog, KvmDtable,
    KvmEnableCap, KvmFpu, KvmGuestDebug, KvmIoeventfd, KvmIrqLevel, KvmIrqRoutingEntry,
    KvmIrqRoutingHeader, KvmIrqfd, KvmMsi, KvmMsrEntry, KvmMsrsHeader, KvmRegs, KvmRun, KvmSegment,
    KvmSregs, KvmTranslation, KvmUserspaceMemoryRegion, KvmUserspaceMemoryRegion2, KvmVcpuEvents,
    KvmX86Mce, KvmXcrs,
};
use core::ffi::c_void;
use kernel::{
    ffi::c_long,
    prelude::*,
    transmute::{AsBytes, FromBytes},
    uaccess::{UserPtr, UserSlice},
};

macro_rules! plain_data {
    ($($t:ty),* $(,)?) => { $(
        // SAFETY: repr(C) structs of integers and integer arrays whose
        // layout (no padding holes) is asserted in core/src/uapi.rs.
        unsafe impl FromBytes for $t {}
        // SAFETY: as above.
        unsafe impl AsBytes for $t {}
    )* };
}

plain_data!(
    KvmRegs,
    KvmSegment,
    KvmDtable,
    KvmSregs,
    KvmUserspaceMemoryRegion,
    KvmUserspaceMemoryRegion2,
    KvmCpuidEntry2,
    KvmCpuid2Header,
    KvmDirtyLog,
    KvmMsrEntry,
    KvmMsrsHeader,
    KvmRun,
    KvmVcpuEvents,
    KvmDebugregs,
    KvmGuestDebug,
    KvmXcrs,
    KvmTranslation,
    KvmEnableCap,
    KvmMsi,
    KvmClockData,
    KvmFpu,
    KvmIoeventfd,
    KvmIrqfd,
    KvmIrqLevel,
    KvmIrqRoutingEntry,
    KvmIrqRoutingHeader,
    KvmX86Mce,
);

/// Reads a `T` from user address `arg` (`EFAULT` if unreadable).
pub(crate) fn read<T: FromBytes>(arg: usize) -> Result<T> {
    UserSlice::new(UserPtr::from_addr(arg), core::mem::size_of::<T>())
        .reader()
        .read::<T>()
}

/// Writes `val` to user address `arg` (`EFAULT` if unwritable).
pub(crate) fn write<T: AsBytes>(arg: usize, val: &T) -> Result {
    UserSlice::new(UserPtr::from_addr(arg), core::mem::size_of::<T>())
        .writer()
        .write(val)
}

/// Reads `n` `T`s from user address `arg` into a new vector.
pub(crate) fn read_array<T: FromBytes + Clone>(arg: usize, n: usize) -> Result<KVec<T>> {
    let size = n.checked_mul(core::mem::size_of::<T>()).ok_or(E2BIG)?;
    let mut r = UserSlice::new(UserPtr::from_addr(arg), size).reader();
    let mut v = KVec::with_capacity(n, GFP_KERNEL_ACCOUNT)?;
    for _ in 0..n {
        v.push(r.read::<T>()?, GFP_KERNEL_ACCOUNT)?;
    }
    Ok(v)
}

/// Writes `vals` to user address `arg`.
pub(crate) fn write_array<T: AsBytes>(arg: usize, vals: &[T]) -> Result {
    let size = core::mem::size_of_val(vals);
    let mut w = UserSlice::new(UserPtr::from_addr(arg), size).writer();
    for v in vals {
        w.write(v)?;
    }
    Ok(())
}

extern "C" {
    fn copy_from_user_nofault(dst: *mut c_void, src: *const c_void, size: usize) -> c_long;
    fn copy_to_user_nofault(dst: *mut c_void, src: *const c_void, size: usize) -> c_long;
}

/// Copies `out.len()` bytes of the calling process's memory at `addr` into
/// `out` (`EFAULT` if some byte is not readable). Guest memory is read this
/// way on every emulated access: it first tries without taking page faults
/// (the page is usually present, as the guest uses it), which skips the
/// faulting path's `might_fault` checks, and faults the page in only if
/// that fails.
pub(crate) fn read_user(addr: usize, out: &mut [u8]) -> Result {
    // SAFETY: `out` is valid for `out.len()` bytes of writes; the helper
    // checks `addr` (`access_ok`) and recovers from faults.
    let r = unsafe {
        copy_from_user_nofault(out.as_mut_ptr().cast(), addr as *const c_void, out.len())
    };
    if r == 0 {
        return Ok(());
    }
    UserSlice::new(UserPtr::from_addr(addr), out.len())
        .reader()
        .read_slice(out)
}

/// Copies `data` into the calling process's memory at `addr` (`EFAULT` if
/// some byte is not writable), first without page faults as [`read_user`].
pub(crate) fn write_user(addr: usize, data: &[u8]) -> Result {
    // SAFETY: `data` is valid for `data.len()` bytes of reads; the helper
    // checks `addr` (`access_ok`) and recovers from faults.
    let r = unsafe { copy_to_user_nofault(addr as *mut c_void, data.as_ptr().cast(), data.len()) };
    if r == 0 {
        return Ok(());
    }
    UserSlice::new(UserPtr::from_addr(addr), data.len())
        .writer()
        .write_slice(data)
}
