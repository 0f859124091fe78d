// SPDX-License-Identifier: GPL-2.0
//! `rkvm-run`: a tiny VMM that boots a guest through a KVM device and shows
//! that it reaches 64-bit long mode. It is rkvm's `make run` demo.
//!
//! ```text
//! rkvm-run [--device PATH]     (default /dev/rkvm; /dev/kvm works the same)
//! ```
//!
//! It uses rust-vmm's `kvm-ioctls` unchanged, pointed at the device with
//! `Kvm::new_with_path`, so it is also a check that an unmodified KVM client
//! runs on `/dev/rkvm`. What it does:
//!
//! 1. creates a VM with one memory slot (2 MiB of anonymous memory at
//!    guest-physical 0; the map is in `src/layout.rs`) and one vCPU;
//! 2. sets the vCPU's CPUID to `KVM_GET_SUPPORTED_CPUID` (KVM and rkvm refuse
//!    `EFER.LME` unless the guest's CPUID has LM);
//! 3. copies the guest image to `CODE_GPA`, the device path to `NAME_GPA`,
//!    and starts the vCPU in real mode at `0000:CODE_GPA` with RSI =
//!    `NAME_GPA`;
//! 4. runs it, emulating just enough of a 16550 UART at COM1 (0x3f8): bytes
//!    written to THR go to stdout, LSR (0x3fd) reads 0x60 (transmitter
//!    empty), the other UART registers read 0 and ignore writes.
//!
//! The guest (`src/guest.s`, assembled by `build.rs` with GNU `as` and
//! `objcopy`) switches itself from real mode to protected mode and then to
//! long mode (its own GDT, identity-mapped 4-level page tables, CR4.PAE,
//! EFER.LME by WRMSR, CR0.PG), prints
//!
//! ```text
//! Hello from a long-mode guest on /dev/rkvm
//! ```
//!
//! one byte at a time with `out` and halts. On `KVM_EXIT_HLT` the VMM checks
//! that the vCPU is in 64-bit mode (EFER.LMA and CS.L), prints a summary line
//! and exits 0. Any other exit (`SHUTDOWN`, `FAIL_ENTRY`, `INTERNAL_ERROR`
//! with its data, MMIO, a port other than COM1's, ...) or failed ioctl is
//! reported on stderr and exits 1.
//!
//! Build (static, for the test VM's busybox initramfs), as `make run` does:
//!
//! ```text
//! RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked \
//!     --target x86_64-unknown-linux-gnu
//! ```

mod layout;

use std::ffi::CString;
use std::io::{self, Write};
use std::process::ExitCode;
use std::ptr::NonNull;

use kvm_bindings::{
    kvm_userspace_memory_region, KVM_INTERNAL_ERROR_DELIVERY_EV, KVM_INTERNAL_ERROR_EMULATION,
    KVM_INTERNAL_ERROR_SIMUL_EX, KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON, KVM_MAX_CPUID_ENTRIES,
};
use kvm_ioctls::{Kvm, VcpuExit, VcpuFd};

use layout::{CODE_GPA, COM1, MEM_SIZE, NAME_GPA, NAME_MAX};

/// The guest image: flat binary, loaded at `CODE_GPA`, entered in real mode.
static GUEST: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/guest.bin"));

const DEFAULT_DEVICE: &str = "/dev/rkvm";
const EFER_LMA: u64 = 1 << 10;
/// Exits after which the guest is considered stuck.
const MAX_EXITS: u64 = 100_000;

type Result<T> = std::result::Result<T, String>;

/// Guest memory: an anonymous private mapping, unmapped on drop.
struct GuestMemory {
    ptr: NonNull<u8>,
    len: usize,
}

impl GuestMemory {
    fn new(len: usize) -> Result<Self> {
        // SAFETY: a fresh anonymous mapping; no existing memory is affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(format!("mmap {len} bytes: {}", io::Error::last_os_error()));
        }
        Ok(Self {
            ptr: NonNull::new(p.cast()).expect("mmap returned NULL"),
            len,
        })
    }

    /// Copies `data` to guest-physical address `gpa`.
    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<()> {
        let start = usize::try_from(gpa).map_err(|_| format!("GPA {gpa:#x} out of range"))?;
        let end = start
            .checked_add(data.len())
            .filter(|&end| end <= self.len)
            .ok_or_else(|| format!("{} bytes at GPA {gpa:#x} do not fit", data.len()))?;
        // SAFETY: the mapping is `len` bytes long, start..end lies inside it,
        // and `&mut self` means no other reference to it exists here (the
        // vCPU does not run while the VMM writes).
        let mem = unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) };
        mem[start..end].copy_from_slice(data);
        Ok(())
    }
}

impl Drop for GuestMemory {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// The part of a 16550 UART the guest uses: THR and LSR.
struct Serial {
    out: io::StdoutLock<'static>,
}

impl Serial {
    const THR: u16 = 0; // transmitter holding register (write, DLAB = 0)
    const LSR: u16 = 5; // line status register
    const LSR_THRE_TEMT: u8 = 0x60; // THR empty, transmitter empty

    fn handles(port: u16) -> bool {
        (COM1..COM1 + 8).contains(&port)
    }

    fn write(&mut self, port: u16, data: &[u8]) -> Result<()> {
        if port - COM1 == Self::THR {
            self.out
                .write_all(data)
                .map_err(|e| format!("writing the guest's output: {e}"))?;
        }
        Ok(())
    }

    fn read(&mut self, port: u16, data: &mut [u8]) {
        data.fill(0);
        if port - COM1 == Self::LSR {
            data[0] = Self::LSR_THRE_TEMT;
        }
    }
}

fn internal_error(vcpu: &mut VcpuFd) -> String {
    // SAFETY: the exit reason is KVM_EXIT_INTERNAL_ERROR, so `internal` is
    // the union member the kernel filled in.
    let ie = unsafe { vcpu.get_kvm_run().__bindgen_anon_1.internal };
    let what = match ie.suberror {
        KVM_INTERNAL_ERROR_EMULATION => "emulation failure",
        KVM_INTERNAL_ERROR_SIMUL_EX => "exception while delivering an exception",
        KVM_INTERNAL_ERROR_DELIVERY_EV => "exit while delivering an event",
        KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON => "unexpected exit reason",
        _ => "unknown suberror",
    };
    let n = (ie.ndata as usize).min(ie.data.len());
    let data: Vec<String> = ie.data[..n].iter().map(|d| format!("{d:#x}")).collect();
    format!(
        "KVM_EXIT_INTERNAL_ERROR: suberror {} ({what}), data [{}]",
        ie.suberror,
        data.join(", ")
    )
}

/// After HLT: the guest must be in 64-bit mode (EFER.LMA, CS.L).
fn check_long_mode(vcpu: &VcpuFd) -> Result<String> {
    let sregs = vcpu
        .get_sregs()
        .map_err(|e| format!("KVM_GET_SREGS: {e}"))?;
    if sregs.efer & EFER_LMA == 0 || sregs.cs.l != 1 {
        return Err(format!(
            "the guest halted outside 64-bit mode: EFER {:#x}, CR0 {:#x}, CR4 {:#x}, CS.L {}",
            sregs.efer, sregs.cr0, sregs.cr4, sregs.cs.l
        ));
    }
    Ok(format!(
        "EFER {:#x}, CR0 {:#x}, CR4 {:#x}",
        sregs.efer, sregs.cr0, sregs.cr4
    ))
}

fn run(device: &str) -> Result<()> {
    let e = |what: &str| {
        let what = what.to_string();
        move |err: kvm_ioctls::Error| format!("{what}: {err}")
    };
    if device.len() > NAME_MAX {
        return Err(format!("device path longer than {NAME_MAX} bytes"));
    }
    let path = CString::new(device).map_err(|_| "device path contains NUL".to_string())?;

    // Declared before the VM, so dropped after it.
    let mut mem = GuestMemory::new(MEM_SIZE as usize)?;
    mem.write(CODE_GPA, GUEST)?;
    let mut name = device.as_bytes().to_vec();
    name.push(0);
    mem.write(NAME_GPA, &name)?;

    let kvm = Kvm::new_with_path(&path).map_err(e(&format!("open {device}")))?;
    let vm = kvm.create_vm().map_err(e("KVM_CREATE_VM"))?;
    let region = kvm_userspace_memory_region {
        slot: 0,
        flags: 0,
        guest_phys_addr: 0,
        memory_size: MEM_SIZE,
        userspace_addr: mem.ptr.as_ptr() as u64,
    };
    // SAFETY: the region is a live mapping of `memory_size` bytes that
    // outlives the VM (`mem` is dropped after `vm`).
    unsafe { vm.set_user_memory_region(region) }.map_err(e("KVM_SET_USER_MEMORY_REGION"))?;

    let mut vcpu = vm.create_vcpu(0).map_err(e("KVM_CREATE_VCPU"))?;
    let cpuid = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(e("KVM_GET_SUPPORTED_CPUID"))?;
    vcpu.set_cpuid2(&cpuid).map_err(e("KVM_SET_CPUID2"))?;

    // Real mode at 0000:CODE_GPA; everything else stays at its reset value.
    let mut sregs = vcpu.get_sregs().map_err(e("KVM_GET_SREGS"))?;
    sregs.cs.selector = 0;
    sregs.cs.base = 0;
    vcpu.set_sregs(&sregs).map_err(e("KVM_SET_SREGS"))?;
    let mut regs = vcpu.get_regs().map_err(e("KVM_GET_REGS"))?;
    regs.rip = CODE_GPA;
    regs.rflags = 0x2;
    regs.rsi = NAME_GPA;
    vcpu.set_regs(&regs).map_err(e("KVM_SET_REGS"))?;

    let mut serial = Serial {
        out: io::stdout().lock(),
    };
    let mut exits = 0u64;
    let mut interrupted = 0u64;
    let result = loop {
        if exits >= MAX_EXITS {
            break Err(format!("the guest did not halt after {MAX_EXITS} exits"));
        }
        let exit = vcpu.run();
        match exit {
            Ok(_) => exits += 1,
            Err(_) => interrupted += 1,
        }
        match exit {
            Ok(VcpuExit::IoOut(port, data)) if Serial::handles(port) => {
                if let Err(err) = serial.write(port, data) {
                    break Err(err);
                }
            }
            Ok(VcpuExit::IoIn(port, data)) if Serial::handles(port) => serial.read(port, data),
            Ok(VcpuExit::Hlt) => break Ok(()),
            Ok(VcpuExit::Shutdown) => {
                break Err("KVM_EXIT_SHUTDOWN (the guest triple-faulted)".into())
            }
            Ok(VcpuExit::FailEntry(reason, cpu)) => {
                break Err(format!(
                    "KVM_EXIT_FAIL_ENTRY: hardware entry failure reason {reason:#x} on CPU {cpu}"
                ))
            }
            Ok(VcpuExit::InternalError) => break Err(internal_error(&mut vcpu)),
            Ok(VcpuExit::IoOut(port, data)) => {
                break Err(format!("unexpected OUT to port {port:#x}: {data:x?}"))
            }
            Ok(VcpuExit::IoIn(port, data)) => {
                break Err(format!(
                    "unexpected IN from port {port:#x} ({} bytes)",
                    data.len()
                ))
            }
            Ok(other) => break Err(format!("unexpected exit: {other:?}")),
            Err(err) if err.errno() == libc::EINTR || err.errno() == libc::EAGAIN => {
                if interrupted >= MAX_EXITS {
                    break Err(format!("KVM_RUN: {err}, {interrupted} times"));
                }
            }
            Err(err) => break Err(format!("KVM_RUN: {err}")),
        }
    };
    serial.out.flush().map_err(|e| format!("stdout: {e}"))?;
    drop(serial);
    match result.and_then(|()| check_long_mode(&vcpu)) {
        Ok(state) => {
            let retries = match interrupted {
                0 => String::new(),
                n => format!(", KVM_RUN interrupted {n} times"),
            };
            println!(
                "rkvm-run: {device}: the guest halted in long mode after {exits} exits{retries} ({state})"
            );
            Ok(())
        }
        Err(err) => Err(format!("{device}: {err}; {}", vcpu_state(&vcpu))),
    }
}

/// The vCPU's mode and position, for error messages.
fn vcpu_state(vcpu: &VcpuFd) -> String {
    match (vcpu.get_regs(), vcpu.get_sregs()) {
        (Ok(r), Ok(s)) => format!(
            "vCPU at CS:RIP {:#x}:{:#x}, CR0 {:#x}, CR4 {:#x}, EFER {:#x}",
            s.cs.selector, r.rip, s.cr0, s.cr4, s.efer
        ),
        (Err(err), _) | (_, Err(err)) => format!("vCPU state unreadable: {err}"),
    }
}

fn usage() -> ExitCode {
    eprintln!("usage: rkvm-run [--device PATH]   (default {DEFAULT_DEVICE})");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let mut device = DEFAULT_DEVICE.to_string();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--device" | "-d" => match args.next() {
                Some(d) => device = d,
                None => return usage(),
            },
            "--help" | "-h" => {
                println!("usage: rkvm-run [--device PATH]   (default {DEFAULT_DEVICE})");
                return ExitCode::SUCCESS;
            }
            _ => match arg.strip_prefix("--device=") {
                Some(d) => device = d.to_string(),
                None => return usage(),
            },
        }
    }
    match run(&device) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("rkvm-run: {err}");
            ExitCode::FAILURE
        }
    }
}
