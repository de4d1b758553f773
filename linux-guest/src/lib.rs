//! The Linux guest of the `qemu` system under test, seen from both sides.
//!
//! The host and the guest agent (`src/bin/agent`, a static binary that runs
//! as the guest's init) share these types, so every value that crosses
//! between them is typed on both ends:
//!
//! - [`params`]: what the host tells the guest, on the kernel command line
//!   (`migbench.ip=… migbench.workload=…`): rendered by the host, parsed by
//!   the agent;
//! - [`api`]: what the agent answers over HTTP (`/status`, `/memcheck`,
//!   `/bench`: the native suite run in the guest) as JSON.

pub mod api;
pub mod params;
