//! The control socket: a Unix socket speaking line-delimited JSON, one
//! typed [`Request`] per line answered by one typed [`Reply`]. The same
//! types serve the VMM ([`server`]) and every client ([`client`]): the CLI,
//! the scenario runner and the tests.
//!
//! - [`protocol`]: the request and reply types, and the limits;
//! - [`server`]: the listening socket (mode 0600, bounded lines,
//!   connections and idle time);
//! - [`client`]: one request, one reply, with a timeout.

pub mod client;
pub mod protocol;
pub mod server;

pub use client::{Client, ControlError};
pub use protocol::{MigrationProgress, Phase, Reply, Request, Resolution, Status};
pub use server::{ControlServer, Handler};
