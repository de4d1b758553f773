//! Builds the Linux guest agent (`linux-guest`, binary `migbench-agent`) as a
//! static executable and leaves it in `OUT_DIR`, where `src/qemu/image.rs`
//! embeds it into the guest image.
//!
//! The agent runs as init in an initramfs without a C library of its own, so
//! it is linked with `-C target-feature=+crt-static` (static-pie glibc). That
//! flag must not reach the rest of the workspace, so a nested cargo builds
//! the agent with its own target directory (which also avoids the outer
//! build's lock), as `vmm-min/build.rs` does for the built-in guest.
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo"));
    let root = manifest.join("..");
    for p in [
        "linux-guest/src",
        "linux-guest/Cargo.toml",
        "served-file/src",
        "served-file/Cargo.toml",
        "bench-suites/src",
        "bench-suites/Cargo.toml",
        "results-model/src",
        "results-model/Cargo.toml",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(p).display());
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target_dir = out.join("agent-target");
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
        .current_dir(&root)
        .args(["build", "--release", "--locked", "-p", "linux-guest", "--bin", "migbench-agent"])
        .args(["--target", "x86_64-unknown-linux-gnu", "--target-dir"])
        .arg(&target_dir)
        .env("CARGO_ENCODED_RUSTFLAGS", "-Ctarget-feature=+crt-static")
        .env("CARGO_PROFILE_RELEASE_DEBUG", "0")
        .env("CARGO_PROFILE_RELEASE_STRIP", "symbols")
        .status()
        .expect("cannot run cargo to build the Linux guest agent");
    if !status.success() {
        panic!("building the Linux guest agent failed ({status})");
    }
    let bin = target_dir.join("x86_64-unknown-linux-gnu/release/migbench-agent");
    std::fs::copy(&bin, out.join("migbench-agent")).expect("cannot copy the agent binary");
}
