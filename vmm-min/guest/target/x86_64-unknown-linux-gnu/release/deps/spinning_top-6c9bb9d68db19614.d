/work/main/vmm-min/guest/target/x86_64-unknown-linux-gnu/release/deps/spinning_top-6c9bb9d68db19614.d: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/spinning_top-0.2.5/src/lib.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/spinning_top-0.2.5/src/spinlock.rs

/work/main/vmm-min/guest/target/x86_64-unknown-linux-gnu/release/deps/libspinning_top-6c9bb9d68db19614.rmeta: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/spinning_top-0.2.5/src/lib.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/spinning_top-0.2.5/src/spinlock.rs

/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/spinning_top-0.2.5/src/lib.rs:
/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/spinning_top-0.2.5/src/spinlock.rs:
