//! The guest's parameters, carried on the kernel command line.
//!
//! The host renders a [`GuestParams`] with [`GuestParams::to_cmdline`] and
//! appends it to QEMU's `-append`; the agent parses `/proc/cmdline` with
//! [`GuestParams::parse`]. Parameters that do not start with `migbench.`
//! belong to the kernel and are skipped; an unknown `migbench.` key or a bad
//! value is an error, so a typo never silently runs the wrong experiment.
//!
//! ```text
//! migbench.ip=10.53.7.2/24 migbench.mac=02:6d:62:01:02:03
//! migbench.file_bytes=1048576 migbench.workload=stress:vm=3,bytes=128M
//! ```

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// A parameter or workload that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamsError {
    /// A `migbench.` key nobody knows.
    #[error("unknown guest parameter `{0}`")]
    UnknownKey(String),
    /// A required key is missing.
    #[error("guest parameter `migbench.{0}` is missing")]
    Missing(&'static str),
    /// A value does not parse.
    #[error("guest parameter `{key}={value}`: {why}")]
    Bad {
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// What is wrong with it.
        why: String,
    },
}

fn bad(key: &str, value: &str, why: impl Into<String>) -> ParamsError {
    ParamsError::Bad { key: key.into(), value: value.into(), why: why.into() }
}

/// What the guest runs besides its HTTP server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Workload {
    /// Nothing.
    Idle,
    /// `stress --vm N --vm-bytes SIZE` (`stress:vm=N,bytes=SIZE`).
    Stress {
        /// Worker processes.
        vm: u32,
        /// Bytes per worker, in `stress`'s notation (`128M`).
        bytes: String,
    },
    /// `stress-ng --KEY VALUE …` (`stress-ng:vm=2,vm-bytes=64M,…`), options
    /// in the order given.
    StressNg {
        /// Option names (without `--`) and values.
        options: Vec<(String, String)>,
    },
    /// The memory-verifying workload over a region of `mb` MiB
    /// (`memcheck:mb=N`).
    Memcheck {
        /// Region size in MiB.
        mb: u32,
    },
}

/// A size in `stress`'s notation: digits and an optional B, K, M or G.
fn is_size(s: &str) -> bool {
    let digits = s.strip_suffix(['B', 'K', 'M', 'G', 'b', 'k', 'm', 'g']).unwrap_or(s);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

fn key_values<'a>(key: &str, spec: &'a str) -> Result<Vec<(&'a str, &'a str)>, ParamsError> {
    spec.split(',')
        .filter(|kv| !kv.is_empty())
        .map(|kv| kv.split_once('=').ok_or_else(|| bad(key, spec, format!("`{kv}` is not KEY=VALUE"))))
        .collect()
}

impl FromStr for Workload {
    type Err = ParamsError;

    fn from_str(s: &str) -> Result<Workload, ParamsError> {
        let (kind, spec) = s.split_once(':').unwrap_or((s, ""));
        let key = "workload";
        match kind {
            "idle" if spec.is_empty() => Ok(Workload::Idle),
            "stress" => {
                let (mut vm, mut bytes) = (None, None);
                for (k, v) in key_values(key, spec)? {
                    match k {
                        "vm" => vm = Some(v.parse::<u32>().map_err(|e| bad(key, s, format!("vm: {e}")))?),
                        "bytes" if is_size(v) => bytes = Some(v.to_string()),
                        "bytes" => return Err(bad(key, s, "bytes: expected a size such as 128M")),
                        _ => return Err(bad(key, s, format!("unknown stress option `{k}` (use vm and bytes)"))),
                    }
                }
                let vm = vm.filter(|&n| n > 0).ok_or_else(|| bad(key, s, "stress needs vm=N with N > 0"))?;
                Ok(Workload::Stress { vm, bytes: bytes.unwrap_or_else(|| "256M".into()) })
            }
            "stress-ng" => {
                let ok = |t: &str| {
                    !t.is_empty() && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'%')
                };
                let mut options = Vec::new();
                for (k, v) in key_values(key, spec)? {
                    if !ok(k) || k.starts_with('-') || !ok(v) {
                        return Err(bad(
                            key,
                            s,
                            format!("stress-ng option `{k}={v}` has characters other than letters, digits, - . %"),
                        ));
                    }
                    options.push((k.to_string(), v.to_string()));
                }
                if options.is_empty() {
                    return Err(bad(key, s, "stress-ng needs at least one option, e.g. stress-ng:vm=2,vm-bytes=64M"));
                }
                Ok(Workload::StressNg { options })
            }
            "memcheck" => {
                let mut mb = 64;
                for (k, v) in key_values(key, spec)? {
                    match k {
                        "mb" => mb = v.parse::<u32>().map_err(|e| bad(key, s, format!("mb: {e}")))?,
                        _ => return Err(bad(key, s, format!("unknown memcheck option `{k}` (use mb)"))),
                    }
                }
                if mb == 0 {
                    return Err(bad(key, s, "memcheck needs mb > 0"));
                }
                Ok(Workload::Memcheck { mb })
            }
            _ => Err(bad(key, s, "expected idle, stress:vm=N,bytes=SIZE, stress-ng:OPT=VAL,… or memcheck:mb=N")),
        }
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Workload::Idle => write!(f, "idle"),
            Workload::Stress { vm, bytes } => write!(f, "stress:vm={vm},bytes={bytes}"),
            Workload::StressNg { options } => {
                write!(f, "stress-ng:")?;
                for (i, (k, v)) in options.iter().enumerate() {
                    write!(f, "{}{k}={v}", if i > 0 { "," } else { "" })?;
                }
                Ok(())
            }
            Workload::Memcheck { mb } => write!(f, "memcheck:mb={mb}"),
        }
    }
}

impl Workload {
    /// The program and arguments that run this workload, for the workloads
    /// that are a separate program (`stress`, `stress-ng`).
    pub fn command(&self) -> Option<(&'static str, Vec<String>)> {
        match self {
            Workload::Stress { vm, bytes } => {
                Some(("stress", vec!["--vm".into(), vm.to_string(), "--vm-bytes".into(), bytes.clone()]))
            }
            Workload::StressNg { options } => {
                Some(("stress-ng", options.iter().flat_map(|(k, v)| [format!("--{k}"), v.clone()]).collect()))
            }
            Workload::Idle | Workload::Memcheck { .. } => None,
        }
    }
}

/// Everything the host tells the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestParams {
    /// The guest's address.
    pub ip: Ipv4Addr,
    /// Its prefix length.
    pub prefix: u8,
    /// The MAC of the NIC to configure (QEMU sets it on the device).
    pub mac: String,
    /// Size of `/file` in bytes.
    pub file_bytes: u64,
    /// The workload.
    pub workload: Workload,
}

fn is_mac(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == 6 && parts.iter().all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()))
}

impl GuestParams {
    /// The `migbench.` parameters, space-separated, for the kernel command line.
    pub fn to_cmdline(&self) -> String {
        format!(
            "migbench.ip={}/{} migbench.mac={} migbench.file_bytes={} migbench.workload={}",
            self.ip, self.prefix, self.mac, self.file_bytes, self.workload
        )
    }

    /// Parses a whole kernel command line (`/proc/cmdline`).
    pub fn parse(cmdline: &str) -> Result<GuestParams, ParamsError> {
        let (mut ip, mut mac, mut file_bytes, mut workload) = (None, None, None, None);
        for word in cmdline.split_ascii_whitespace() {
            let Some(rest) = word.strip_prefix("migbench.") else { continue };
            let (k, v) = rest.split_once('=').unwrap_or((rest, ""));
            match k {
                "ip" => {
                    let (a, p) = v.split_once('/').ok_or_else(|| bad(k, v, "expected ADDRESS/PREFIX"))?;
                    let a: Ipv4Addr = a.parse().map_err(|e| bad(k, v, format!("{e}")))?;
                    let p: u8 =
                        p.parse().ok().filter(|p| *p <= 32).ok_or_else(|| bad(k, v, "prefix must be 0..=32"))?;
                    ip = Some((a, p));
                }
                "mac" if is_mac(v) => mac = Some(v.to_ascii_lowercase()),
                "mac" => return Err(bad(k, v, "expected six hex pairs separated by colons")),
                "file_bytes" => file_bytes = Some(v.parse::<u64>().map_err(|e| bad(k, v, format!("{e}")))?),
                "workload" => workload = Some(v.parse::<Workload>()?),
                _ => return Err(ParamsError::UnknownKey(word.to_string())),
            }
        }
        let (ip, prefix) = ip.ok_or(ParamsError::Missing("ip"))?;
        Ok(GuestParams {
            ip,
            prefix,
            mac: mac.ok_or(ParamsError::Missing("mac"))?,
            file_bytes: file_bytes.unwrap_or(1 << 20),
            workload: workload.unwrap_or(Workload::Idle),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_the_command_line() {
        for w in ["idle", "stress:vm=3,bytes=128M", "stress-ng:vm=2,vm-bytes=64M,cpu=1", "memcheck:mb=32"] {
            let p = GuestParams {
                ip: Ipv4Addr::new(10, 53, 7, 2),
                prefix: 24,
                mac: "02:6d:62:01:02:03".into(),
                file_bytes: 4096,
                workload: w.parse().unwrap(),
            };
            let line = format!("console=ttyS0 quiet {} panic=-1", p.to_cmdline());
            assert_eq!(GuestParams::parse(&line).unwrap(), p, "{line}");
            assert_eq!(p.workload.to_string(), w);
        }
    }

    #[test]
    fn commands_are_what_stress_wants() {
        let w: Workload = "stress:vm=3,bytes=128M".parse().unwrap();
        assert_eq!(
            w.command().unwrap(),
            ("stress", vec!["--vm".into(), "3".into(), "--vm-bytes".into(), "128M".into()])
        );
        let w: Workload = "stress-ng:vm=2,vm-bytes=64M".parse().unwrap();
        assert_eq!(w.command().unwrap().1, ["--vm", "2", "--vm-bytes", "64M"]);
        assert!("idle".parse::<Workload>().unwrap().command().is_none());
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        for w in [
            "",
            "stress",
            "stress:vm=0",
            "stress:vm=x",
            "stress:vm=1,bytes=lots",
            "stress:cpu=1",
            "stress-ng:",
            "stress-ng:vm=$(reboot)",
            "stress-ng:--x=1",
            "memcheck:mb=0",
            "memcheck:pages=1",
            "idle:x",
            "bogus",
        ] {
            assert!(w.parse::<Workload>().is_err(), "{w:?} should be refused");
        }
        let ok = "migbench.ip=10.0.0.2/24 migbench.mac=02:00:00:00:00:01";
        assert!(GuestParams::parse(ok).is_ok());
        for line in [
            "migbench.mac=02:00:00:00:00:01",
            "migbench.ip=10.0.0.2 migbench.mac=02:00:00:00:00:01",
            "migbench.ip=10.0.0.2/33 migbench.mac=02:00:00:00:00:01",
            "migbench.ip=10.0.0.2/24 migbench.mac=02:00:00:00:00",
            "migbench.ip=10.0.0.2/24 migbench.mac=02:00:00:00:00:01 migbench.colour=red",
            "migbench.ip=10.0.0.2/24 migbench.mac=02:00:00:00:00:01 migbench.file_bytes=-1",
        ] {
            assert!(GuestParams::parse(line).is_err(), "{line}");
        }
    }
}
