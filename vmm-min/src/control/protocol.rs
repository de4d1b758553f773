//! The control protocol's types. A request is one JSON object on one line,
//! tagged by `cmd`:
//!
//! ```text
//! {"cmd":"status"}            -> {"reply":"status", "phase":..., "heartbeat":..., ...}
//! {"cmd":"pause"}             -> {"reply":"paused", "pause_ms":0.4}
//! {"cmd":"resume"}            -> {"reply":"resumed"}
//! {"cmd":"verify"}            -> {"reply":"verified", "bad_pages":0}
//! {"cmd":"migrate","to":"127.0.0.1:PORT","policy":{"kind":"xen"},"verify":true}
//!                             -> {"reply":"migrated", <MigrationStats>}
//! {"cmd":"resolve","action":"resume"|"discard"}
//!                             -> {"reply":"resolved", "action":...}
//! {"cmd":"quit"}              -> {"reply":"quitting"}
//! anything refused            -> {"reply":"error", "message":"..."}
//! ```
//!
//! A destination started with `--incoming` answers `status` from its start,
//! with `phase: {"incoming": {"listen": ADDR}}`: that is how a parent
//! learns the migration address and that the child is ready.

use results::{MigrationStats, Policy};
use serde::{Deserialize, Serialize};

/// The longest request line the server reads, bytes.
pub const MAX_REQUEST_BYTES: usize = 64 << 10;
/// The longest reply line a client reads, bytes (statistics of a long
/// migration run to a few hundred KiB).
pub const MAX_REPLY_BYTES: usize = 16 << 20;

/// A request on the control socket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// What the VMM is doing.
    Status,
    /// Pause the vCPUs and devices.
    Pause,
    /// Resume them (refused while a migration owns the VM).
    Resume,
    /// Ask the guest to verify its `memcheck` region.
    Verify,
    /// Live-migrate to a destination.
    Migrate {
        /// `HOST:PORT` of the destination.
        to: String,
        /// The migration policy (default: `downtime`'s defaults).
        #[serde(default)]
        policy: Policy,
        /// Send a RAM digest for the destination to verify.
        #[serde(default)]
        verify: bool,
        /// The longest the guest may stay paused before the destination is
        /// Ready, ms (default 5000); past it the source aborts and resumes.
        #[serde(default)]
        stop_deadline_ms: Option<u64>,
        /// Auto-converge: throttle the worker vCPUs when pre-copy does not
        /// converge (default: never).
        #[serde(default)]
        throttle: Option<results::Throttle>,
    },
    /// After an `indeterminate` migration (Commit sent, no Started): the
    /// operator's decision, made after looking at the destination.
    Resolve {
        /// Resume the paused copy here, or discard it.
        action: Resolution,
    },
    /// Stop the VM and exit (refused while a migration is indeterminate).
    Quit,
}

/// An operator's answer to an indeterminate migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resolution {
    /// The destination does not run the guest: resume it here.
    Resume,
    /// The destination runs the guest: drop this copy and exit.
    Discard,
}

/// A reply on the control socket.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    /// To `status`.
    Status(Status),
    /// To `pause`: how long the pause took.
    Paused {
        /// ms.
        pause_ms: f64,
    },
    /// To `resume`.
    Resumed,
    /// To `verify`: the guest checked its memory.
    Verified {
        /// Pages whose content was wrong (0: all good).
        bad_pages: u64,
    },
    /// To `migrate`: the statistics, whatever the outcome.
    Migrated(Box<MigrationStats>),
    /// To `resolve`.
    Resolved {
        /// What was done.
        action: Resolution,
    },
    /// To `quit`.
    Quitting,
    /// The request was malformed or refused.
    Error {
        /// Why, and what to do.
        message: String,
    },
}

/// Where a served VM is in its life.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// A destination waiting for a source on `listen`.
    Incoming {
        /// The bound migration address, `HOST:PORT`.
        listen: String,
    },
    /// A source is sending the VM here.
    Receiving,
    /// The guest runs here.
    Running,
    /// The guest runs here and is being migrated away.
    Migrating,
    /// The guest was migrated away; the VMM is about to exit.
    Migrated,
    /// A migration committed the VM and never heard back: it stays paused
    /// here until `resolve`.
    Indeterminate,
    /// The guest stopped (powered off, faulted, crashed).
    Exited,
}

/// The answer to `status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// Where the VM is in its life.
    pub phase: Phase,
    /// Paused by a `pause` request.
    pub paused: bool,
    /// Paused by a migration's stop-and-copy.
    pub migration_paused: bool,
    /// vCPUs (0 before a VM exists here).
    pub vcpus: u32,
    /// The main vCPU's heartbeat counter.
    pub heartbeat: u64,
    /// The workload, as the CLI spells it.
    pub workload: Option<String>,
    /// The migration in progress, if any.
    pub migration: Option<MigrationProgress>,
    /// The NIC's counters, when the VM here has one.
    #[serde(default)]
    pub net: Option<crate::devices::net::NetStats>,
}

/// How far an outgoing migration is, after its last round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MigrationProgress {
    /// Rounds done.
    pub rounds: u32,
    /// Pages dirty at the end of the last round (to send next).
    pub dirty_pages: u64,
    /// Rate of the last round, Mbit/s.
    pub rate_mbps: f64,
    /// Page data sent so far, bytes.
    pub sent_bytes: u64,
}

impl Reply {
    /// A refusal.
    pub fn error(message: impl Into<String>) -> Reply {
        Reply::Error { message: message.into() }
    }

    /// The reply's tag, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Reply::Status(_) => "status",
            Reply::Paused { .. } => "paused",
            Reply::Resumed => "resumed",
            Reply::Verified { .. } => "verified",
            Reply::Migrated(_) => "migrated",
            Reply::Resolved { .. } => "resolved",
            Reply::Quitting => "quitting",
            Reply::Error { .. } => "error",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_strictly() {
        let r: Request = serde_json::from_str(r#"{"cmd":"migrate","to":"127.0.0.1:1"}"#).expect("migrate");
        assert_eq!(
            r,
            Request::Migrate {
                to: "127.0.0.1:1".into(),
                policy: Policy::default(),
                verify: false,
                stop_deadline_ms: None,
                throttle: None
            }
        );
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"fly"}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"migrate","to":"a","bogus":1}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"to":"a"}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"migrate","to":"a","policy":{"kind":"warp"}}"#).is_err());
    }

    #[test]
    fn replies_round_trip() {
        let s = Status {
            phase: Phase::Incoming { listen: "127.0.0.1:5".into() },
            paused: false,
            migration_paused: false,
            vcpus: 0,
            heartbeat: 0,
            workload: None,
            migration: None,
            net: Some(Default::default()),
        };
        let text = serde_json::to_string(&Reply::Status(s.clone())).expect("ser");
        match serde_json::from_str::<Reply>(&text).expect("de") {
            Reply::Status(back) => assert_eq!(back, s),
            other => panic!("{other:?}"),
        }
        let e = serde_json::to_string(&Reply::error("no")).expect("ser");
        assert_eq!(e, r#"{"reply":"error","message":"no"}"#);
    }
}
