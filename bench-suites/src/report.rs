//! The result types every suite produces ([`Row`], [`BenchReport`]): part
//! of the results model (`results::bench`), re-exported for the suites.

pub use results::bench::*;
