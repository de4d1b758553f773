//! Lmbench-style microbenchmarks: the timing harness, the `no_std` kernels shared with the guest, and the native runners.
//!
//! * [`kernels`] (always, `no_std`, no allocation): the inner loops that run
//!   both in a host process and in the guest's ring 3.
//! * With the `std` feature (the default): [`harness`] (lmbench's timing
//!   method), [`native`] (the native rows, Linux), [`env`] (the environment
//!   record), [`report`] (rows and the JSON result set) and [`table`] (the
//!   Markdown comparison in the Xen paper's shape), and on Linux
//!   [`crosscheck`] (the native rows against iperf3, perf, sysbench and
//!   lmbench 3, run alternately in one invocation), [`ttcp`] (the Xen
//!   paper's TCP bandwidth table's method) and [`macro_bench`] (the
//!   stand-ins of its relative-performance figure).
//!
//! A guest depends on this crate with `default-features = false` and uses
//! only [`kernels`].
#![cfg_attr(not(feature = "std"), no_std)]

pub mod kernels;

#[cfg(all(feature = "std", target_os = "linux"))]
pub mod crosscheck;
#[cfg(feature = "std")]
pub mod env;
#[cfg(feature = "std")]
pub mod harness;
#[cfg(all(feature = "std", target_os = "linux"))]
pub mod macro_bench;
#[cfg(all(feature = "std", target_os = "linux"))]
pub mod native;
#[cfg(feature = "std")]
pub mod report;
#[cfg(feature = "std")]
pub mod table;
#[cfg(feature = "std")]
pub mod ttcp;

#[cfg(feature = "std")]
pub use report::{BenchReport, Row, UNIT_MBS, UNIT_MIBITS, UNIT_US};
