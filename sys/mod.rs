// SPDX-License-Identifier: GPL-2.0

//! The FFI quarantine: the only place in rkvm that touches `kernel::bindings`,
//! `extern "C"` and the C and assembly helpers in `sys/`.
//!
//! Everything here offers a safe interface; every `unsafe` block says why it
//! is sound. The rest of the module never writes `unsafe`, apart from the
//! marker-trait impls that vouch for a type's layout.

pub(crate) mod cpu;
pub(crate) mod file;
pub(crate) mod fpu;
pub(crate) mod hotplug;
pub(crate) mod mem;
pub(crate) mod published;
pub(crate) mod srcu;
pub(crate) mod svm;
pub(crate) mod uaccess;
pub(crate) mod vmx;
