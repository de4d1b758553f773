//! The results model: the serde types that every system under test
//! produces and every consumer (reports, scenarios, `check`) reads, with
//! no KVM dependency, so that building the charts builds no VMM.
//!
//! - [`clock`]: the time base, `CLOCK_MONOTONIC` ns, shared by all processes;
//! - [`environment`]: the machine a result came from;
//! - [`bench`]: the microbenchmark rows and report;
//! - [`link`]: the shaped link between the simulated hosts;
//! - [`policy`]: the migration policy, one typed value with one set of defaults;
//! - [`migration`]: a migration's statistics (rounds, totals, downtime);
//! - [`probe`]: the HTTP probe's sample series and summary;
//! - [`series`]: pure analysis of a series (application-visible downtime,
//!   the gap around a switchover, rates before/during/after).

pub mod bench;
pub mod clock;
pub mod environment;
pub mod link;
pub mod migration;
pub mod policy;
pub mod probe;
pub mod series;

pub use link::Link;
pub use migration::{
    DowntimeBreakdown, MigrationStats, Outcome, RoundStats, ThreadPriorities, ThreadPriority, ThreadRole, VerifyStats,
};
pub use policy::{OnTimeout, Policy, PolicyError, PolicyOverrides, Throttle};
pub use probe::{JitterSummary, LatencySummary, ProbeResult, Sample, Summary};
pub use series::{Gap, PhaseRate, PhaseRates};
