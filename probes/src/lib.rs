//! Application-level probes for migbench.
//!
//! The main probe is the HTTP transfer-rate probe in [`http`]: N parallel
//! keep-alive connections download one URL in a loop while a dedicated
//! sampler thread records the cumulative byte count every `interval`
//! (10 ms by default) with its *real* `CLOCK_MONOTONIC` timestamp.
//!
//! * Timestamps come from [`results::clock`] (`CLOCK_MONOTONIC`), so probe
//!   timestamps line up with those of other processes on the same host
//!   (VMMs, the scenario runner).
//! * [`etag`] defines the content checksum (FNV-1a 64) that the guest HTTP
//!   server puts in its `ETag` header and the probe verifies.
//! * The result types and their analysis (application-visible downtime,
//!   the gap around a switchover, rates before/during/after) are part of
//!   the results model: [`results::probe`] and [`results::series`].

pub mod etag;
pub mod http;
