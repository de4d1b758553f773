//! Pre-copy live migration between two VMM processes, after Clark et al.
//! (NSDI 2005): setup, iterative pre-copy, stop-and-copy, commitment.
//!
//! - [`protocol`]: the messages and their sequence, failure paths included;
//! - [`wire`]: the framed, checksummed stream and the page-batch layout;
//! - [`error`]: [`MigrationError`], one variant per phase;
//! - [`policy`]: when to stop iterating (`xen`, `downtime`);
//! - [`page_sender`]: the page send path and dirty-bitmap helpers;
//! - [`send_queue`]: the socket's unacknowledged bytes, and a round's rate
//!   from what actually left it;
//! - [`throttle`]: auto-converge, a duty cycle on the worker vCPUs;
//! - [`source`]: the sending side, one function per phase; it owns the VM
//!   until acknowledged;
//! - [`destination`]: the receiving side, one function per phase; it
//!   resumes only a complete VM;
//! - [`state`]: the versioned migration state (vCPUs, VM, devices);
//! - [`digest`]: RAM verification;
//! - [`timed`]: bounded waits on the socket, per call and per phase;
//! - [`tls`]: mutual TLS on the stream (rustls);
//! - what a migration reports is [`results::migration`].

pub mod destination;
pub mod digest;
pub mod error;
pub mod page_sender;
pub mod policy;
pub mod protocol;
pub mod send_queue;
pub mod source;
pub mod state;
pub mod throttle;
pub mod timed;
pub mod tls;
pub mod wire;

pub use error::{Cause, MigrationError};
pub use source::{migrate, SourceEvent, SourceOptions};
