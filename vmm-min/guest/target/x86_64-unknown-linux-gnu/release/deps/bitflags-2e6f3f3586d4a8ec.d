/work/main/vmm-min/guest/target/x86_64-unknown-linux-gnu/release/deps/bitflags-2e6f3f3586d4a8ec.d: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/bitflags-1.3.2/src/lib.rs

/work/main/vmm-min/guest/target/x86_64-unknown-linux-gnu/release/deps/libbitflags-2e6f3f3586d4a8ec.rmeta: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/bitflags-1.3.2/src/lib.rs

/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/bitflags-1.3.2/src/lib.rs:
