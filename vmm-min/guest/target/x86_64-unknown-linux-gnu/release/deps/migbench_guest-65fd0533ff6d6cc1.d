/work/main/vmm-min/guest/target/x86_64-unknown-linux-gnu/release/deps/migbench_guest-65fd0533ff6d6cc1.d: src/main.rs src/abi.rs src/bench.rs src/boot.rs src/cmdline.rs src/hw.rs src/net/mod.rs src/net/http.rs src/net/virtio.rs src/rt.rs src/workloads.rs Cargo.toml

/work/main/vmm-min/guest/target/x86_64-unknown-linux-gnu/release/deps/libmigbench_guest-65fd0533ff6d6cc1.rmeta: src/main.rs src/abi.rs src/bench.rs src/boot.rs src/cmdline.rs src/hw.rs src/net/mod.rs src/net/http.rs src/net/virtio.rs src/rt.rs src/workloads.rs Cargo.toml

src/main.rs:
src/abi.rs:
src/bench.rs:
src/boot.rs:
src/cmdline.rs:
src/hw.rs:
src/net/mod.rs:
src/net/http.rs:
src/net/virtio.rs:
src/rt.rs:
src/workloads.rs:
Cargo.toml:

# env-dep:CLIPPY_ARGS=
# env-dep:CLIPPY_CONF_DIR
