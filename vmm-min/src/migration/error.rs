//! The migration's error: one variant per phase (Clark et al.'s stages),
//! each keeping its typed cause, so a failure says both where it happened
//! and what went wrong.

use super::wire::WireError;
use std::io;

/// A migration that did not complete, by phase.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    /// Connecting, the Hello exchange, building the VM on the destination,
    /// arming dirty logging.
    #[error("setup: {0}")]
    Setup(#[source] Cause),
    /// The iterative pre-copy rounds (on the destination: every frame
    /// before `Complete`).
    #[error("pre-copy: {0}")]
    PreCopy(#[source] Cause),
    /// The paused phase: the final pages, state, digest (on the
    /// destination: verifying and restoring).
    #[error("stop-and-copy: {0}")]
    StopAndCopy(#[source] Cause),
    /// Starting the guest on the destination and acknowledging it.
    #[error("commitment: {0}")]
    Commitment(#[source] Cause),
}

/// What went wrong inside a phase.
#[derive(Debug, thiserror::Error)]
pub enum Cause {
    /// The framed stream failed: I/O, corruption, a malformed frame.
    #[error(transparent)]
    Wire(#[from] WireError),
    /// A socket operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// TLS could not be set up.
    #[error(transparent)]
    Tls(#[from] super::tls::TlsError),
    /// The saved state could not be taken, or does not fit this VM or host.
    #[error(transparent)]
    State(#[from] crate::error::StateError),
    /// The VMM failed (KVM, memory, pausing).
    #[error(transparent)]
    Vmm(#[from] crate::Error),
    /// The destination refused the offered VM.
    #[error("the destination refused the VM: {0}")]
    Refused(String),
    /// The peer sent an Abort (its reason, escaped for printing).
    #[error("the peer aborted: {0}")]
    Aborted(String),
    /// The policy gave up; the source keeps running.
    #[error("cancelled: {0}")]
    Cancelled(String),
    /// The guest stopped (powered off, faulted) while migrating.
    #[error("the guest stopped during the migration")]
    GuestStopped,
    /// The destination's RAM differs from the source's.
    #[error("memory digest mismatch: guest RAM differs from the source at {0:#x}")]
    DigestMismatch(u64),
    /// The destination did not start the guest.
    #[error("the destination did not start the guest: {0}")]
    NotStarted(String),
}

impl Cause {
    /// Wraps an I/O error with what was being done.
    pub fn io(what: &'static str) -> impl FnOnce(io::Error) -> Cause {
        move |source| Cause::Io { what, source }
    }
}

impl MigrationError {
    /// The cause, whatever the phase.
    pub fn cause(&self) -> &Cause {
        match self {
            MigrationError::Setup(c)
            | MigrationError::PreCopy(c)
            | MigrationError::StopAndCopy(c)
            | MigrationError::Commitment(c) => c,
        }
    }
}
