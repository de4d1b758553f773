/work/main/vmm-min/guest/target/x86_64-unknown-linux-gnu/release/deps/stable_deref_trait-81de3c2f70261876.d: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/stable_deref_trait-1.2.1/src/lib.rs

/work/main/vmm-min/guest/target/x86_64-unknown-linux-gnu/release/deps/libstable_deref_trait-81de3c2f70261876.rmeta: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/stable_deref_trait-1.2.1/src/lib.rs

/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/stable_deref_trait-1.2.1/src/lib.rs:
