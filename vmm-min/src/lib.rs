//! `vmm-min`: a minimal KVM VMM with a built-in guest.
//!
//! The crate is split the way Firecracker and Cloud Hypervisor split theirs:
//! - [`config`]: what a VM is made of, checked before anything is built;
//! - [`arch`]: long-mode setup done by the VMM (page tables, GDT, TSS, IDT);
//! - [`memory`]: guest RAM and the VMM's own-write bitmap;
//! - [`vstate`]: the KVM VM and vCPUs, each saving its own state;
//! - [`run_control`]: stop, pause and the doorbell (one pause protocol);
//! - [`devices`]: the MMIO bus, the UART, the control device, virtio-net;
//! - [`machine`]: state shared by the VMM's threads;
//! - [`exit`]: how a guest ended;
//! - [`sync`]: the poison-ignoring lock;
//! - [`vmm`]: a running VM's lifecycle;
//! - [`control`]: the control socket: typed protocol, server, client;
//! - [`service`]: what a served VM answers on it;
//! - [`migration`]: pre-copy live migration, source and destination.
//!
//! The guest/VMM contract (memory layout, registers) is [`abi`], compiled
//! into both.

#[path = "../guest/src/abi.rs"]
pub mod abi;
pub mod arch;
pub mod config;
pub mod control;
pub mod devices;
pub mod error;
pub mod exit;
pub mod guest_image;
pub mod machine;
pub mod memory;
pub mod migration;
pub mod run_control;
pub mod service;
pub mod sync;
pub mod vmm;
pub mod vstate;

pub use config::{MemoryBackend, VmConfig, Workload};
pub use error::{Error, Result};
pub use exit::GuestExit;
pub use vmm::Vmm;
