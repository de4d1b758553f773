/work/main/vmm-min/guest/target/x86_64-unknown-linux-gnu/release/deps/byteorder-0f9ccf289d79a0c8.d: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/byteorder-1.5.0/src/lib.rs

/work/main/vmm-min/guest/target/x86_64-unknown-linux-gnu/release/deps/libbyteorder-0f9ccf289d79a0c8.rmeta: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/byteorder-1.5.0/src/lib.rs

/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/byteorder-1.5.0/src/lib.rs:
