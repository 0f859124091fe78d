// SPDX-License-Identifier: GPL-2.0

//! The FFI quarantine: the only place in rkvm that touches `kernel::bindings`,
//! `extern "C"` and the C helpers in `sys/helpers.c`.
//!
//! Everything here offers a safe interface; every `unsafe` block says why it
//! is sound. The rest of the module never writes `unsafe`.

pub(crate) mod cpu;
pub(crate) mod file;
