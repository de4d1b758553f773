//! The migration protocol: the messages that travel in the framed stream
//! ([`super::wire`]) and the order they travel in. Every control message is
//! a serde type here, encoded as JSON inside one frame; page batches have
//! their own binary layout ([`super::wire::pages`]).
//!
//! ```text
//!  source                                   destination
//!    |                                         | listening (--incoming)
//!    |--- Hello {wire version, VmConfig, ---->| check version, image,
//!    |          image, start, verify}         | memory, vCPUs, TAP;
//!    |<-- HelloReply {ok, reason} ------------| build an empty VM
//!    |    (refused: the source runs on)       |
//!    |                                        |
//!    |=== setup ends: dirty logging on =======|
//!    |--- ZeroMap (round 0: never-populated ->| mark them received (RAM
//!    |          pages, one bitmap)            | starts zero)
//!    |--- Pages (round 0: every other page) ->| fill RAM, mark each page
//!    |--- Pages (round n: dirty pages) ------>| received (data or zero)
//!    |    ... until the policy stops ...      |
//!    |                                        |
//!    |=== stop-and-copy: vCPUs, NIC paused ===|  (deadline: 5 s default)
//!    |--- Pages (the last dirty pages) ------>|
//!    |--- State (MigrationState) ------------>|
//!    |--- Digest (only with verify) --------->|
//!    |--- Complete {timestamps} ------------->| every page covered? digest
//!    |                                        | checked? restore, PAUSED;
//!    |                                        | gratuitous ARP (frames for
//!    |                                        | the guest now queue here)
//!    |<-- Ready {ok, coverage, digest_ok} ----|
//!    |=== commitment ==========================|
//!    |--- Commit ---------------------------->| from here the destination
//!    |    (the source never resumes alone)    | owns the VM: run it, see
//!    |                                        | it execute, ask the guest
//!    |<-- Started {ok, first_run_ns, ---------| to announce itself
//!    |            priorities}                 |
//!    |    source releases the VM and exits    |
//!
//!  Failure paths:
//!    - any failure before Commit (a refusal, a bad or missing frame, a
//!      timeout, Ready {ok: false}, the stop-and-copy deadline): the source
//!      sends Abort {reason} if it can and resumes its VM, with a
//!      gratuitous ARP (the destination may have announced); the destination
//!      drops its VM, which never ran;
//!    - the destination gets no Commit within its timeout: it drops its
//!      VM (the source either resumed, or is indeterminate: see below);
//!    - Commit sent, no Started (lost, late, connection closed, or the
//!      destination saw its guest fail): the outcome is unknowable here, so
//!      the source keeps its copy PAUSED and reports `indeterminate`; an
//!      operator resolves it over the control socket (`resolve`, with
//!      `resume` or `discard`). Never two running copies, never zero
//!      without an operator's word.
//! ```
//!
//! The receiver's states: `Listening -> Hello checked -> Receiving ->
//! Complete -> Ready -> Committed -> Running -> Started`; it runs no guest
//! instruction before `Committed`.

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
    /// A RAM digest will follow; the destination is not Ready without it.
    pub verify: bool,
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

/// The destination holds a complete, restored, paused VM (or says why
/// not), with its timestamps (CLOCK_MONOTONIC).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Ready {
    /// The VM is complete and restored; the destination waits for Commit.
    pub ok: bool,
    /// Why not.
    pub reason: Option<String>,
    /// Guest pages received at least once (data or a zero marker).
    pub pages_covered: u64,
    /// Guest pages in all.
    pub ram_pages: u64,
    /// The RAM digest's verdict (`None`: no digest was asked for).
    #[serde(default)]
    pub digest_ok: Option<bool>,
    /// `Complete` received.
    pub complete_ns: u64,
    /// RAM verification started (equal to its end without verify).
    pub verify_start_ns: u64,
    /// RAM verification ended.
    pub verify_end_ns: u64,
    /// All state restored.
    pub restored_ns: u64,
}

/// The source gives the VM to the destination; from now on it never
/// resumes its own copy on its own.
#[derive(Debug, Serialize, Deserialize)]
pub struct Commit {
    /// When the source sent it.
    pub sent_ns: u64,
    /// Frames for the guest that reached the source's TAP after its state
    /// was saved, oldest first: the destination delivers them after those
    /// in the state and before anything from its own TAP.
    pub rx_frames: Vec<crate::devices::net::Frame>,
}

/// The destination runs the guest (or saw it fail to run, and stopped it).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Started {
    /// The guest executes on the destination.
    pub ok: bool,
    /// Why not.
    pub reason: Option<String>,
    /// `Commit` received.
    pub commit_ns: u64,
    /// First `KVM_RUN` entered.
    pub first_run_ns: u64,
    /// The guest was seen executing (its heartbeat advanced).
    pub running_ns: u64,
    /// The priorities this side's VMM set on its threads (the receiving
    /// thread, vCPU 0, virtio-net), for the source's statistics.
    #[serde(default)]
    pub priorities: Vec<results::ThreadPriority>,
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
