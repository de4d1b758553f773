//! Builds the built-in guest (`guest/`) with the installed stable toolchain
//! for `x86_64-unknown-linux-gnu` and leaves its ELF in `OUT_DIR`, where
//! `src/guest_image.rs` embeds it. A nested cargo with its own target
//! directory avoids the outer build's lock; the outer build's flags and
//! environment are dropped so they cannot leak into the freestanding guest.
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo"));
    let guest = manifest.join("guest");
    for p in ["src", "Cargo.toml", "Cargo.lock", "build.rs", "link.ld"] {
        println!("cargo:rerun-if-changed={}", guest.join(p).display());
    }
    println!("cargo:rerun-if-changed={}", manifest.join("../bench-suites/src").display());
    println!("cargo:rerun-if-changed={}", manifest.join("../served-file/src").display());

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target_dir = out.join("guest-target");
    let mut cmd = Command::new(cargo);
    for (key, _) in std::env::vars() {
        if (key.starts_with("CARGO") && key != "CARGO_HOME" && key != "CARGO_MAKEFLAGS")
            || key == "RUSTFLAGS"
            || key == "RUSTC_WRAPPER"
            || key == "RUSTC_WORKSPACE_WRAPPER"
        {
            cmd.env_remove(key);
        }
    }
    let status = cmd
        .current_dir(&guest)
        .args(["build", "--release", "--target", "x86_64-unknown-linux-gnu", "--target-dir"])
        .arg(&target_dir)
        .env("CARGO_ENCODED_RUSTFLAGS", "-Crelocation-model=static")
        .status()
        .expect("cannot run cargo to build the guest");
    if !status.success() {
        panic!("building the built-in guest failed ({status})");
    }
    let elf = target_dir.join("x86_64-unknown-linux-gnu/release/migbench-guest");
    std::fs::copy(&elf, out.join("migbench-guest.elf")).expect("cannot copy the guest ELF");
}
