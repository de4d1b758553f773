//! The VMM's error type: every failure names what was being done.

use std::io;

/// Errors from building, running, pausing or migrating a VM.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `/dev/kvm` cannot be opened.
    #[error("cannot open /dev/kvm: {0}; KVM must be available and you need read/write access to /dev/kvm (run as root or join the kvm group)")]
    KvmUnavailable(#[source] kvm_ioctls::Error),
    /// A KVM ioctl failed.
    #[error("KVM {what} failed: {source}")]
    Kvm {
        /// The operation.
        what: &'static str,
        /// The ioctl's error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// The configuration is invalid.
    #[error("{0}")]
    Config(String),
    /// Guest memory could not be set up or accessed.
    #[error("guest memory: {0}")]
    Memory(String),
    /// The guest image could not be loaded.
    #[error("loading the guest image: {0}")]
    Load(String),
    /// An I/O operation failed.
    #[error("{what}: {source}")]
    Io {
        /// The operation.
        what: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A vCPU thread failed.
    #[error("vCPU {vcpu}: {msg}")]
    Vcpu {
        /// The vCPU index.
        vcpu: usize,
        /// What went wrong.
        msg: String,
    },
    /// The VM is not in a state that allows the operation.
    #[error("{0}")]
    State(String),
}

impl Error {
    /// Wraps a KVM ioctl error with the operation's name.
    pub fn kvm(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> Error {
        move |source| Error::Kvm { what, source }
    }
    /// Wraps an I/O error with a description of the operation.
    pub fn io(what: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }
}

/// The VMM's result type.
pub type Result<T> = std::result::Result<T, Error>;
