// SPDX-License-Identifier: GPL-2.0

//! The FFI quarantine: the only place in rkvm that touches `kernel::bindings`,
//! `extern "C"` and the C and assembly helpers in `sys/`.
//!
//! Everything here offers a safe interface; every `unsafe` block says why it
//! is sound. Outside `sys/`, `unsafe` appears in exactly one kind of place:
//! the world switch, whose soundness depends on the VMCB or VMCS contents
//! the backend itself builds — `svm/vcpu.rs` calls [`svm::vmrun`], and
//! `vmx/vcpu.rs` calls [`vmx::Root::enter`] and [`vmx::Root::launch`]; each
//! call says which of those contents it relies on. Module-wide state that
//! callbacks read is published through [`published::Published`], not raw
//! pointers, and no safe function writes an arbitrary MSR.

pub(crate) mod bell;
pub(crate) mod cpu;
pub(crate) mod eventfd;
pub(crate) mod file;
pub(crate) mod fpu;
pub(crate) mod hotplug;
pub(crate) mod irqfd;
pub(crate) mod mem;
pub(crate) mod published;
pub(crate) mod srcu;
pub(crate) mod svm;
pub(crate) mod uaccess;
pub(crate) mod vmx;
