// SPDX-License-Identifier: GPL-2.0

//! Anonymous-inode files with rkvm's own file operations: the VM and vCPU
//! file descriptors, as KVM makes them with `anon_inode_getfd`.
//!
//! Each object type implements [`AnonFile`]; [`install_fd`] hands an
//! `Arc<T>` to a new file whose `private_data` owns one reference, dropped
//! when the last user of the file closes it.

use super::mem::Pages;
use core::{ffi::c_void, marker::PhantomData};
use kernel::page::PAGE_SIZE;
use kernel::{
    bindings,
    ffi::{c_char, c_int, c_long, c_uint, c_ulong},
    prelude::*,
    sync::{Arc, ArcBorrow},
    types::ForeignOwnable,
};

extern "C" {
    // Exported by fs/anon_inodes.c but not part of the kernel crate's
    // bindings; `fops` is `*const file_operations` (taken as void to keep
    // the non-FFI-safe `file_operations` out of this signature).
    fn anon_inode_getfd(
        name: *const c_char,
        fops: *const c_void,
        private: *mut c_void,
        flags: c_int,
    ) -> c_int;
}

/// An object that lives behind an anonymous-inode file descriptor.
pub(crate) trait AnonFile: Send + Sync + Sized + 'static {
    /// Handles an ioctl on the file; the return value goes to userspace.
    fn ioctl(this: ArcBorrow<'_, Self>, cmd: u32, arg: usize) -> Result<isize>;

    /// The pages `mmap` of the file shows, by page offset; none means the
    /// file cannot be mapped (`ENODEV`, as for a file without `mmap`).
    fn mmap_pages(_this: &Self) -> &[Pages] {
        &[]
    }
}

struct Fops<T>(PhantomData<T>);

impl<T: AnonFile> Fops<T> {
    const FOPS: bindings::file_operations = bindings::file_operations {
        owner: kernel::module::this_module::<crate::LocalModule>().as_ptr(),
        unlocked_ioctl: Some(Self::ioctl),
        release: Some(Self::release),
        mmap: Some(Self::mmap),
        llseek: Some(bindings::noop_llseek),
        ..pin_init::zeroed()
    };

    /// # Safety
    ///
    /// Called by the VFS with a file created by [`install_fd::<T>`].
    unsafe extern "C" fn ioctl(file: *mut bindings::file, cmd: c_uint, arg: c_ulong) -> c_long {
        // SAFETY: the file is alive during the call and its `private_data`
        // came from `Arc::<T>::into_foreign` in `install_fd`; it is only
        // given back in `release`, which cannot run concurrently with ioctl.
        let this = unsafe { <Arc<T> as ForeignOwnable>::borrow((*file).private_data) };
        match T::ioctl(this, cmd, arg) {
            Ok(v) => v as c_long,
            Err(e) => e.to_errno() as c_long,
        }
    }

    /// # Safety
    ///
    /// Called by the VFS with a file created by [`install_fd::<T>`] and a
    /// VMA under initial setup, mmap lock held.
    unsafe extern "C" fn mmap(
        file: *mut bindings::file,
        vma: *mut bindings::vm_area_struct,
    ) -> c_int {
        // SAFETY: as in `ioctl`: the file holds a reference to `T`.
        let this = unsafe { <Arc<T> as ForeignOwnable>::borrow((*file).private_data) };
        let pages = T::mmap_pages(&this);
        if pages.is_empty() {
            return ENODEV.to_errno();
        }
        // SAFETY: the VMA is under initial setup (caller contract).
        let vma_new = unsafe { kernel::mm::virt::VmaNew::from_raw(vma) };
        // SAFETY: the VMA is valid during the call.
        let pgoff = unsafe { (*vma).vm_pgoff };
        let start = vma_new.start();
        let n = (vma_new.end() - start) / PAGE_SIZE;
        if pgoff >= pages.len() || n > pages.len() - pgoff {
            return EINVAL.to_errno();
        }
        let vma_mixed = vma_new.set_mixedmap();
        for i in 0..n {
            // SAFETY: mixed-map VMA, address inside it, an order-0 page that
            // `vm_insert_page` takes its own reference on, so it outlives
            // the mapping even after the vCPU frees it.
            let r = unsafe {
                bindings::vm_insert_page(
                    vma_mixed.as_ptr(),
                    start + i * PAGE_SIZE,
                    pages[pgoff + i].raw_page(0),
                )
            };
            if r != 0 {
                return r;
            }
        }
        0
    }

    /// # Safety
    ///
    /// Called by the VFS once, when the last reference to the file goes.
    unsafe extern "C" fn release(_inode: *mut bindings::inode, file: *mut bindings::file) -> c_int {
        // SAFETY: `private_data` came from `Arc::<T>::into_foreign` and this
        // is the last use of the file, so the reference is ours to drop.
        drop(unsafe { <Arc<T> as ForeignOwnable>::from_foreign((*file).private_data) });
        0
    }
}

/// Creates an anonymous-inode file for `obj` (O_RDWR, O_CLOEXEC), named
/// `anon_inode:<name>` in `/proc/<pid>/fd`, and returns its new file
/// descriptor in the current process.
pub(crate) fn install_fd<T: AnonFile>(obj: Arc<T>, name: &CStr) -> Result<u32> {
    let fops: &'static bindings::file_operations = &Fops::<T>::FOPS;
    let private = obj.into_foreign();
    // SAFETY: `name` is NUL-terminated (the VFS copies it); `fops` is
    // static; on success the file owns `private` and gives it back in
    // `release`.
    let fd = unsafe {
        anon_inode_getfd(
            name.as_char_ptr(),
            core::ptr::from_ref(fops).cast(),
            private,
            (bindings::O_RDWR | bindings::O_CLOEXEC) as c_int,
        )
    };
    if fd < 0 {
        // SAFETY: the file was not created, so the reference is still ours.
        drop(unsafe { <Arc<T> as ForeignOwnable>::from_foreign(private) });
        return Err(Error::from_errno(fd));
    }
    Ok(fd as u32)
}
