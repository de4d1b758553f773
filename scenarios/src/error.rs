//! The runner's error: an experiment that could not be carried out (a
//! migration that fails is a result, not an error).

use crate::netns::NetnsError;
use vmm_min::control::ControlError;

/// An experiment that could not be run.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// A file, directory or process could not be handled.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A control request failed.
    #[error(transparent)]
    Control(#[from] ControlError),
    /// The network topology failed.
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// The HTTP probe failed.
    #[error("the probe failed: {0}")]
    Probe(#[from] probes::http::ProbeError),
    /// A VMM-side check failed (configuration, KVM).
    #[error(transparent)]
    Vmm(#[from] vmm_min::Error),
    /// The QEMU system failed (process, QMP, guest).
    #[error("qemu: {0}")]
    Qemu(#[from] crate::qemu::driver::QemuError),
    /// A system under test did not get ready or answered nonsense.
    #[error("{system}: {message}")]
    System {
        /// The system's name.
        system: &'static str,
        /// What went wrong, and what to do.
        message: String,
    },
}

impl RunnerError {
    /// Wraps an I/O error with what was being done.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> RunnerError {
        let what = what.into();
        move |source| RunnerError::Io { what, source }
    }
}
