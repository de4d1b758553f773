/work/main/vmm-min/guest/target/x86_64-unknown-linux-gnu/release/deps/cfg_if-2afba8e95a433e88.d: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/cfg-if-1.0.5/src/lib.rs

/work/main/vmm-min/guest/target/x86_64-unknown-linux-gnu/release/deps/libcfg_if-2afba8e95a433e88.rmeta: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/cfg-if-1.0.5/src/lib.rs

/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/cfg-if-1.0.5/src/lib.rs:
