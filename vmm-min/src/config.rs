//! What a VM is made of: memory size and backend, vCPU count and the guest's
//! workload, parsed from the user's words and checked before anything is
//! built. The guest command line is derived from it.

use crate::abi;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Parses a size such as `512M`, `1G`, `64KiB` or `4096` (bytes).
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, suffix) = t.split_at(digits);
    let mult: u64 = match suffix.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        _ => return Err(malformed_size(s)),
    };
    let n: u64 = num.parse().map_err(|_| malformed_size(s))?;
    n.checked_mul(mult).ok_or_else(|| malformed_size(s))
}

fn malformed_size(s: &str) -> Error {
    Error::Config(format!("malformed size '{s}': expected a whole number with an optional K, M or G suffix, e.g. 512M"))
}

/// Formats a byte count the way [`parse_size`] reads it.
pub fn format_size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 && b % (1 << 30) == 0 => format!("{}G", b >> 30),
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{}M", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{}K", b >> 10),
        b => b.to_string(),
    }
}

/// What the guest runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Workload {
    /// The main vCPU keeps a heartbeat and otherwise sleeps.
    Idle,
    /// `stress --vm N --vm-bytes SIZE`: N workers each rewrite their region,
    /// one byte per 4 KiB page, forever.
    Stress {
        /// Number of worker vCPUs.
        workers: u32,
        /// Bytes per worker.
        bytes: u64,
    },
    /// Fills a region with a checkable pattern and keeps rewriting pages.
    Memcheck {
        /// Size of the region.
        bytes: u64,
        /// Pages rewritten per second.
        rate: u64,
    },
    /// Touches an unmapped address: tests fault reporting.
    Fault,
    /// Runs the guest side of the microbenchmarks, then powers off.
    Bench {
        /// Shorter runs (ENOUGH 1 ms, fewer sizes).
        quick: bool,
        /// Row-id prefixes to run (empty: all).
        only: Vec<String>,
    },
}

/// The syntax [`Workload::from_str`] accepts, for error messages and `--help`.
pub const WORKLOAD_SYNTAX: &str =
    "idle | stress[:vm=N,bytes=SIZE] | memcheck[:bytes=SIZE,rate=PAGES_PER_S] | fault | bench[:quick=1,only=ID+ID]";

impl FromStr for Workload {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let (name, args) = s.split_once(':').unwrap_or((s, ""));
        let mut kv = Vec::new();
        for part in args.split(',').filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').ok_or_else(|| {
                Error::Config(format!("workload '{s}': expected key=value, got '{part}' (syntax: {WORKLOAD_SYNTAX})"))
            })?;
            kv.push((k.trim(), v.trim()));
        }
        let unknown =
            |k: &str| Error::Config(format!("workload '{s}': unknown option '{k}' (syntax: {WORKLOAD_SYNTAX})"));
        let number = |k: &str, v: &str| {
            v.parse::<u64>()
                .map_err(|_| Error::Config(format!("workload '{s}': {k} must be a whole number, got '{v}'")))
        };
        match name {
            "idle" | "fault" => {
                if let Some((k, _)) = kv.first() {
                    return Err(unknown(k));
                }
                Ok(if name == "idle" { Workload::Idle } else { Workload::Fault })
            }
            "stress" => {
                let (mut workers, mut bytes) = (3u32, 128u64 << 20);
                for (k, v) in kv {
                    match k {
                        "vm" => {
                            workers = u32::try_from(number(k, v)?)
                                .map_err(|_| Error::Config(format!("workload '{s}': vm={v} is too large")))?
                        }
                        "bytes" => bytes = parse_size(v)?,
                        _ => return Err(unknown(k)),
                    }
                }
                if workers == 0 || bytes < abi::PAGE_SIZE {
                    return Err(Error::Config(format!("workload '{s}': needs vm >= 1 and bytes >= 4K")));
                }
                Ok(Workload::Stress { workers, bytes })
            }
            "memcheck" => {
                let (mut bytes, mut rate) = (64u64 << 20, 20_000u64);
                for (k, v) in kv {
                    match k {
                        "bytes" => bytes = parse_size(v)?,
                        "rate" => rate = number(k, v)?,
                        _ => return Err(unknown(k)),
                    }
                }
                if bytes < abi::PAGE_SIZE {
                    return Err(Error::Config(format!("workload '{s}': bytes must be at least 4K")));
                }
                Ok(Workload::Memcheck { bytes, rate })
            }
            "bench" => {
                let (mut quick, mut only) = (false, Vec::new());
                for (k, v) in kv {
                    match k {
                        "quick" => quick = number(k, v)? != 0,
                        "only" => only = v.split('+').filter(|s| !s.is_empty()).map(str::to_owned).collect(),
                        _ => return Err(unknown(k)),
                    }
                }
                Ok(Workload::Bench { quick, only })
            }
            _ => Err(Error::Config(format!("unknown workload '{name}': expected {WORKLOAD_SYNTAX}"))),
        }
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Workload::Idle => write!(f, "idle"),
            Workload::Fault => write!(f, "fault"),
            Workload::Stress { workers, bytes } => write!(f, "stress:vm={workers},bytes={}", format_size(*bytes)),
            Workload::Memcheck { bytes, rate } => write!(f, "memcheck:bytes={},rate={rate}", format_size(*bytes)),
            Workload::Bench { quick, only } => {
                write!(f, "bench:quick={}", u8::from(*quick))?;
                if !only.is_empty() {
                    write!(f, ",only={}", only.join("+"))?;
                }
                Ok(())
            }
        }
    }
}

impl Workload {
    /// Guest RAM the workload uses beyond the fixed layout.
    pub fn bytes_needed(&self) -> u64 {
        match self {
            // Saturating: a peer's Hello may announce any numbers, and an
            // overflow must fail validation, not wrap past it.
            Workload::Stress { workers, bytes } => u64::from(*workers).saturating_mul(*bytes),
            Workload::Memcheck { bytes, .. } => *bytes,
            Workload::Bench { .. } => 128 << 20,
            Workload::Idle | Workload::Fault => 0,
        }
    }

    /// vCPUs the workload needs: the main one plus one per stress worker.
    pub fn vcpus_needed(&self) -> u32 {
        match self {
            Workload::Stress { workers, .. } => workers.saturating_add(1),
            _ => 1,
        }
    }
}

/// How guest RAM is backed on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum MemoryBackend {
    /// Private anonymous memory.
    #[default]
    Anon,
    /// A `memfd`, mapped shared.
    Memfd,
}

impl FromStr for MemoryBackend {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "anon" => Ok(MemoryBackend::Anon),
            "memfd" => Ok(MemoryBackend::Memfd),
            _ => Err(Error::Config(format!("unknown memory backend '{s}': expected anon or memfd"))),
        }
    }
}

/// The guest's network identity, when it has a NIC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetConfig {
    /// Host TAP device name.
    pub tap: String,
    /// Guest MAC address, `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    /// Guest IPv4 address with prefix, `10.0.0.2/24`.
    pub ip: String,
    /// Size of the file the guest's HTTP server serves, in bytes.
    pub file_bytes: u64,
}

/// A VM's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmConfig {
    /// Guest RAM in bytes.
    pub memory: u64,
    /// Number of vCPUs.
    pub vcpus: u32,
    /// The workload.
    pub workload: Workload,
    /// How RAM is backed.
    pub backend: MemoryBackend,
    /// The network, if any.
    pub net: Option<NetConfig>,
}

impl VmConfig {
    /// Checks the configuration against the layout and the workload.
    /// `max_vcpus` is what KVM allows on this host.
    pub fn validate(&self, max_vcpus: usize) -> Result<()> {
        if !self.memory.is_multiple_of(2 << 20) {
            return Err(Error::Config(format!(
                "memory {} is not a multiple of 2M; use e.g. 512M",
                format_size(self.memory)
            )));
        }
        if self.memory > abi::MAX_RAM {
            return Err(Error::Config(format!(
                "memory {} is more than the {} this VMM's layout supports",
                format_size(self.memory),
                format_size(abi::MAX_RAM)
            )));
        }
        let needed = abi::WORKLOAD_ADDR.saturating_add(self.workload.bytes_needed());
        if self.memory < needed {
            return Err(Error::Config(format!(
                "memory {} is too small for workload '{}': it needs at least {} (guest {} + workload {}); raise --memory or lower the workload's bytes",
                format_size(self.memory),
                self.workload,
                format_size(needed.div_ceil(2 << 20).saturating_mul(2 << 20)),
                format_size(abi::WORKLOAD_ADDR),
                format_size(self.workload.bytes_needed())
            )));
        }
        let limit = max_vcpus.min(abi::MAX_VCPUS as usize);
        if self.vcpus == 0 || self.vcpus as usize > limit {
            return Err(Error::Config(format!(
                "{} vCPUs requested, but this host allows 1 to {limit}; lower --vcpus",
                self.vcpus
            )));
        }
        if self.vcpus < self.workload.vcpus_needed() {
            return Err(Error::Config(format!(
                "workload '{}' needs {} vCPUs (one main vCPU plus one per worker), but --vcpus is {}",
                self.workload,
                self.workload.vcpus_needed(),
                self.vcpus
            )));
        }
        Ok(())
    }

    /// The guest command line for this configuration.
    pub fn cmdline(&self) -> String {
        let mut roles = vec!["main"];
        let mut parts = Vec::new();
        match &self.workload {
            Workload::Idle => parts.push("work=idle".to_string()),
            Workload::Fault => parts.push("work=fault".to_string()),
            Workload::Stress { workers, bytes } => {
                parts.push("work=idle".to_string());
                roles.extend(std::iter::repeat_n("stress", *workers as usize));
                parts.push(format!("stress.bytes={bytes}"));
            }
            Workload::Memcheck { bytes, rate } => {
                parts.push("work=memcheck".to_string());
                parts.push(format!("memcheck.bytes={bytes} memcheck.rate={rate}"));
            }
            Workload::Bench { quick, only } => {
                parts.push(format!("work=bench bench.quick={}", u8::from(*quick)));
                if !only.is_empty() {
                    parts.push(format!("bench.only={}", only.join(",")));
                }
            }
        }
        while roles.len() < self.vcpus as usize {
            roles.push("idle");
        }
        let mut line = format!("roles={} {}", roles.join(","), parts.join(" "));
        if let Some(net) = &self.net {
            line.push_str(&format!(
                " net.mac={} net.ip={} http.file_bytes={} virtio_mmio.device=4K@{:#x}:5",
                net.mac,
                net.ip,
                net.file_bytes,
                abi::VIRTIO_MMIO_ADDR
            ));
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
        assert_eq!(parse_size("64KiB").unwrap(), 64 << 10);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("M").is_err());
        assert!(parse_size("99999999999999999999G").is_err());
    }

    #[test]
    fn workloads_parse_and_print() {
        assert_eq!("idle".parse::<Workload>().unwrap(), Workload::Idle);
        let w: Workload = "stress:vm=3,bytes=128M".parse().unwrap();
        assert_eq!(w, Workload::Stress { workers: 3, bytes: 128 << 20 });
        assert_eq!(w.to_string().parse::<Workload>().unwrap(), w);
        assert_eq!("stress".parse::<Workload>().unwrap(), w);
        let m: Workload = "memcheck:bytes=16M,rate=5000".parse().unwrap();
        assert_eq!(m, Workload::Memcheck { bytes: 16 << 20, rate: 5000 });
        assert!("bogus".parse::<Workload>().is_err());
        assert!("stress:vm=x".parse::<Workload>().is_err());
        assert!("stress:bytes=12Q".parse::<Workload>().is_err());
        assert!("stress:color=red".parse::<Workload>().is_err());
    }

    #[test]
    fn absurd_workloads_from_a_peer_fail_validation() {
        let c = |workers, bytes| VmConfig {
            memory: 512 << 20,
            vcpus: 4,
            workload: Workload::Stress { workers, bytes },
            backend: MemoryBackend::Anon,
            net: None,
        };
        let e = c(4_000_000_000, 128 << 20).validate(64).unwrap_err().to_string();
        assert!(e.contains("too small"), "{e}");
        assert!(c(u32::MAX, u64::MAX).validate(64).is_err());
        assert!(c(3, u64::MAX).validate(64).is_err());
    }

    #[test]
    fn validation_catches_small_memory_and_vcpus() {
        let mut c = VmConfig {
            memory: 512 << 20,
            vcpus: 4,
            workload: "stress".parse().unwrap(),
            backend: MemoryBackend::Anon,
            net: None,
        };
        assert!(c.validate(255).is_ok());
        c.memory = 256 << 20;
        assert!(c.validate(255).unwrap_err().to_string().contains("too small"));
        c.memory = 512 << 20;
        c.vcpus = 2;
        assert!(c.validate(255).unwrap_err().to_string().contains("needs 4 vCPUs"));
        c.vcpus = 300;
        assert!(c.validate(255).unwrap_err().to_string().contains("allows 1 to"));
    }
}
