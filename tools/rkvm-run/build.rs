// SPDX-License-Identifier: GPL-2.0
//! Assembles the guest (`src/guest.s`) into a flat binary, `$OUT_DIR/guest.bin`,
//! with GNU `as` and `objcopy` (Debian binutils). The memory-map constants
//! come from `src/layout.rs` as `--defsym`s.

use std::env;
use std::path::PathBuf;
use std::process::Command;

#[allow(dead_code)]
#[path = "src/layout.rs"]
mod layout;

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (is binutils installed?)"));
    if !out.status.success() {
        panic!(
            "{cmd:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let obj = out.join("guest.o");
    let bin = out.join("guest.bin");
    println!("cargo:rerun-if-changed=src/guest.s");
    println!("cargo:rerun-if-changed=src/layout.rs");

    let mut asm = Command::new("as");
    asm.args(["--64", "--fatal-warnings", "-o"]).arg(&obj);
    for (name, value) in layout::GUEST_SYMBOLS {
        asm.arg("--defsym").arg(format!("{name}={value:#x}"));
    }
    run(asm.arg("src/guest.s"));

    // Without a linker, a relocation would silently become zeros in the flat
    // binary: insist that the assembler resolved every address.
    let relocs = run(Command::new("readelf").arg("-r").arg(&obj));
    if !relocs.contains("There are no relocations") {
        panic!("src/guest.s needs relocations (use `label - start + CODE_GPA`):\n{relocs}");
    }
    run(Command::new("objcopy")
        .args(["-O", "binary", "-j", ".text"])
        .arg(&obj)
        .arg(&bin));
}
