//! The migration protocol: the messages that travel in the framed stream
//! ([`super::wire`]) and the order they travel in. Every control message is
//! a serde type here, encoded as JSON inside one frame; page batches have
//! their own binary layout ([`super::wire::pages`]).
//!
//! ```text
//!  source                                   destination
//!    |                                         | listening (--incoming)
//!    |--- Hello {wire version, VmConfig, ---->| check version, image,
//!    |          image fingerprint, start}     | memory, vCPUs, TAP;
//!    |<-- HelloReply {ok, reason} ------------| build an empty VM
//!    |    (refused: the source runs on)       |
//!    |                                        |
//!    |=== setup ends: dirty logging on =======|
//!    |--- Pages (round 0: every page) ------->| fill RAM; a zero marker
//!    |--- Pages (round n: dirty pages) ------>| for a page never written
//!    |    ... until the policy stops ...      | is free
//!    |                                        |
//!    |=== stop-and-copy: vCPUs, NIC paused ===|
//!    |--- Pages (the last dirty pages) ------>|
//!    |--- State (MigrationState) ------------>|
//!    |--- Digest (only with --verify) ------->|
//!    |--- Complete {timestamps} ------------->| check the digest,
//!    |                                        | restore state, start
//!    |                                        | the vCPUs, announce
//!    |<-- Ack {ok, digest_ok, timestamps} ----| the MAC (gratuitous ARP)
//!    |    source releases the VM and exits    |
//!
//!  Failure paths (each side sends Abort {reason} when it can, then stops):
//!    - a refusal, a bad frame or an I/O error before Complete: the source
//!      resumes its VM; the destination drops its empty one;
//!    - the policy cancels in pre-copy: Abort; the source runs on;
//!    - Ack {ok: false} (digest mismatch, restore failed): the destination
//!      never ran the guest; the source resumes it.
//! ```
//!
//! The receiver's states: `Listening -> Hello checked -> Receiving ->
//! Complete -> Verified -> Restored -> Running -> Acked`; any error before
//! `Running` ends it without running a guest instruction.

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

/// Either side gives up, with the reason (printed to the user escaped, see
/// [`escape`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Abort {
    /// Why.
    pub reason: String,
}

/// Makes text from a peer safe to print: control characters (terminal
/// escape sequences included) are shown escaped, and the text is cut at
/// 1000 characters.
pub fn escape(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars().take(1000) {
        if c.is_control() {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    if text.chars().count() > 1000 {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_text_cannot_reach_the_terminal() {
        let e = escape("ok\x1b[2J\x07 done\n");
        assert!(!e.chars().any(|c| c.is_control()), "{e:?}");
        assert!(e.starts_with("ok\\u{1b}[2J\\u{7} done"), "{e}");
        assert_eq!(escape(&"x".repeat(2000)).chars().count(), 1001);
    }
}
