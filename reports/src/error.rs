//! The error type of this crate.
//!
//! Every variant names what it was working on (a file, a chart, a
//! scenario), so a message printed on its own tells the user where to look.

use std::path::PathBuf;

use thiserror::Error;

/// Anything that can go wrong while building charts or writing a report.
#[derive(Debug, Error)]
pub enum ReportError {
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// plotters failed while drawing a chart.
    #[error("drawing the {chart} chart: {message}")]
    Chart {
        /// Which chart.
        chart: String,
        /// plotters' message.
        message: String,
    },
    /// Encoding a rendered chart as PNG failed.
    #[error("encoding the {chart} chart as PNG: {message}")]
    Png {
        /// Which chart.
        chart: String,
        /// The encoder's message.
        message: String,
    },
    /// A chart needs the probe's time series, and the scenario has none.
    #[error("the {chart} chart needs probe samples, and scenario `{scenario}` has none")]
    NoProbe {
        /// Which chart.
        chart: String,
        /// The scenario's name.
        scenario: String,
    },
    /// (De)serializing JSON failed.
    #[error("{what}: {source}")]
    Json {
        /// What was being read or written (usually a file name).
        what: String,
        /// serde_json's error.
        #[source]
        source: serde_json::Error,
    },
    /// A result file's schema version is not one this build reads.
    #[error(transparent)]
    Schema(#[from] crate::schema::SchemaError),
    /// A results folder holds nothing to report on.
    #[error("{}: {what}", dir.display())]
    NoResults {
        /// The folder.
        dir: PathBuf,
        /// What is missing and what to do.
        what: String,
    },
}
