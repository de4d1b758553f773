/work/main/vmm-min/guest/target/x86_64-unknown-linux-gnu/release/deps/scopeguard-2901516db6951ce2.d: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/scopeguard-1.2.0/src/lib.rs

/work/main/vmm-min/guest/target/x86_64-unknown-linux-gnu/release/deps/libscopeguard-2901516db6951ce2.rmeta: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/scopeguard-1.2.0/src/lib.rs

/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/scopeguard-1.2.0/src/lib.rs:
