/work/main/vmm-min/guest/target/x86_64-unknown-linux-gnu/release/deps/bench_suites-14cc14a366949f80.d: /work/main/bench-suites/src/lib.rs /work/main/bench-suites/src/kernels.rs

/work/main/vmm-min/guest/target/x86_64-unknown-linux-gnu/release/deps/libbench_suites-14cc14a366949f80.rmeta: /work/main/bench-suites/src/lib.rs /work/main/bench-suites/src/kernels.rs

/work/main/bench-suites/src/lib.rs:
/work/main/bench-suites/src/kernels.rs:
