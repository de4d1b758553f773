//! Pre-copy live migration between two VMM processes, after Clark et al.
//! (NSDI 2005): setup, iterative pre-copy, stop-and-copy, commitment.
//!
//! - [`wire`]: the framed, checksummed stream;
//! - [`policy`]: when to stop iterating (`xen`, `downtime`);
//! - [`page_sender`]: the page send path and dirty-bitmap helpers;
//! - [`source`]: the sending side, which owns the VM until acknowledged;
//! - [`destination`]: the receiving side, which resumes only a complete VM;
//! - [`state`]: vCPU, VM and device state;
//! - [`digest`]: RAM verification;
//! - [`stats`]: what a migration reports.

pub mod destination;
pub mod digest;
pub mod page_sender;
pub mod policy;
pub mod source;
pub mod state;
pub mod stats;
pub mod wire;

use crate::config::VmConfig;
use serde::{Deserialize, Serialize};

/// First frame: what is coming.
#[derive(Debug, Serialize, Deserialize)]
pub struct Hello {
    /// The sender's wire version.
    pub wire_version: u16,
    /// The VM's configuration.
    pub config: VmConfig,
    /// Fingerprint of the guest image the VM runs.
    pub image_fingerprint: u64,
    /// The migration's start on CLOCK_MONOTONIC.
    pub start_mono_ns: u64,
}

/// The destination's answer to [`Hello`].
#[derive(Debug, Serialize, Deserialize)]
pub struct HelloReply {
    /// Accepted.
    pub ok: bool,
    /// Why not.
    pub reason: Option<String>,
}

/// Last frame from the source.
#[derive(Debug, Serialize, Deserialize)]
pub struct Complete {
    /// When the source asked its vCPUs to pause.
    pub pause_requested_ns: u64,
    /// When this frame was built.
    pub sent_ns: u64,
}

/// The destination's acknowledgement, with its timestamps (CLOCK_MONOTONIC).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Ack {
    /// The guest runs on the destination.
    pub ok: bool,
    /// Why not.
    pub reason: Option<String>,
    /// The RAM digest's verdict (`None`: no digest was sent).
    #[serde(default)]
    pub digest_ok: Option<bool>,
    /// `Complete` received.
    pub complete_ns: u64,
    /// RAM verification started (equal to its end without `--verify`).
    pub verify_start_ns: u64,
    /// RAM verification ended.
    pub verify_end_ns: u64,
    /// All state restored.
    pub restored_ns: u64,
    /// First `KVM_RUN` entered.
    pub first_run_ns: u64,
}

pub use policy::{OnTimeout, Policy};
pub use source::{migrate, SourceOptions};
pub use stats::{MigrationStats, Outcome};
