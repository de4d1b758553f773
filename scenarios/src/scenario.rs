//! Scenario files: a TOML description of one migration experiment (the VM,
//! its network, the probe, when and how to migrate, and CI limits). Parsing
//! is strict: an unknown key, a missing one or a malformed value gives an
//! error naming the file, the key and what was expected.

use crate::qemu::accel::AccelChoice;
use crate::qemu::driver::QemuConfig;
use results::{OnTimeout, Policy, PolicyOverrides};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A malformed scenario.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {msg}")]
pub struct ScenarioError {
    /// The file (or "<built-in NAME>").
    pub file: String,
    /// What is wrong, naming the key.
    pub msg: String,
}

/// The longest duration a scenario or the CLI accepts, s (a day).
pub const MAX_DURATION_S: f64 = 86_400.0;

/// Parses a duration such as `10ms`, `3s`, `1.5s` or `2m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("malformed duration '{s}': expected e.g. 10ms, 3s or 2m"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1e3,
        "us" => n / 1e6,
        "m" | "min" => n * 60.0,
        _ => return Err(format!("malformed duration '{s}': unknown unit '{unit}' (use ms, s or m)")),
    };
    // A day is far longer than any run; beyond it a typo is likelier.
    if !secs.is_finite() || !(0.0..=MAX_DURATION_S).contains(&secs) {
        return Err(format!("malformed duration '{s}': must be between 0 and 24h"));
    }
    Duration::try_from_secs_f64(secs).map_err(|e| format!("malformed duration '{s}': {e}"))
}

/// The VM.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmSection {
    /// Guest RAM, e.g. "512M".
    pub memory: String,
    /// vCPUs; default: what the workload needs.
    #[serde(default)]
    pub vcpus: Option<u32>,
    /// The workload, as `migbench run --workload` takes it.
    pub workload: String,
}

/// The guest's network.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSection {
    /// Size of the file the guest serves, e.g. "512K".
    #[serde(default = "d_file")]
    pub file_size: String,
    /// Put the source, the destination and the probe on simulated hosts of
    /// their own (a `[link]` implies it); default false: one lan namespace.
    #[serde(default)]
    pub hosts: bool,
}

/// The shaped link between the source and destination hosts (`tc`):
/// `bandwidth` with tbf, `latency`, `jitter` and `loss` with netem.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkSection {
    /// Rate, e.g. "1gbit", "100mbit".
    #[serde(default)]
    pub bandwidth: Option<String>,
    /// One-way delay added, e.g. "10ms" (needs netem).
    #[serde(default)]
    pub latency: Option<String>,
    /// Delay variation, e.g. "2ms" (needs netem and `latency`).
    #[serde(default)]
    pub jitter: Option<String>,
    /// Packet loss, e.g. "0.1%" (needs netem).
    #[serde(default)]
    pub loss: Option<String>,
    /// Shape the guest's network between the hosts too.
    #[serde(default)]
    pub guest: bool,
}

impl LinkSection {
    /// The typed link.
    pub fn link(&self) -> Result<results::Link, String> {
        let ms = |key: &str, v: &Option<String>| -> Result<Option<f64>, String> {
            v.as_deref()
                .map(|t| parse_duration(t).map(|d| d.as_secs_f64() * 1e3).map_err(|e| format!("key `link.{key}`: {e}")))
                .transpose()
        };
        let loss_pct = match &self.loss {
            Some(t) => Some(
                t.trim()
                    .trim_end_matches('%')
                    .trim()
                    .parse::<f64>()
                    .map_err(|_| format!("key `link.loss`: malformed loss '{t}': expected e.g. \"0.1%\""))?,
            ),
            None => None,
        };
        let link = results::Link {
            bandwidth_bps: self
                .bandwidth
                .as_deref()
                .map(results::link::parse_rate)
                .transpose()
                .map_err(|e| format!("key `link.bandwidth`: {e}"))?,
            latency_ms: ms("latency", &self.latency)?,
            jitter_ms: ms("jitter", &self.jitter)?,
            loss_pct,
            guest: self.guest,
        };
        crate::link::check(&link)?;
        if link == (results::Link { guest: link.guest, ..Default::default() }) {
            return Err("section `link`: set at least one of bandwidth, latency, jitter or loss".into());
        }
        Ok(link)
    }
}

fn d_file() -> String {
    "512K".into()
}

/// The HTTP probe.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeSection {
    /// Sampling interval, e.g. "10ms".
    #[serde(default = "d_interval")]
    pub interval: String,
    /// Parallel keep-alive connections.
    #[serde(default = "d_connections")]
    pub connections: usize,
}

fn d_interval() -> String {
    "10ms".into()
}
fn d_connections() -> usize {
    4
}

/// When and how to migrate. The policy keys are optional: what is left
/// out takes [`Policy`]'s own defaults.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrationSection {
    /// Probe time before the migration starts.
    pub warmup: String,
    /// Probe time after it ends.
    pub after: String,
    /// "downtime" (the default) or "xen".
    #[serde(default)]
    pub policy: Option<String>,
    /// Target downtime of the `downtime` policy, ms.
    #[serde(default)]
    pub downtime_ms: Option<f64>,
    /// Pre-copy timeout of the `downtime` policy.
    #[serde(default)]
    pub timeout: Option<String>,
    /// "cancel" or "force" (default: cancel, the source keeps running).
    #[serde(default)]
    pub on_timeout: Option<OnTimeout>,
    /// Bandwidth cap in Mbit/s.
    #[serde(default)]
    pub max_bandwidth_mbps: Option<f64>,
    /// Check the RAM digest on the destination.
    #[serde(default = "d_true")]
    pub verify: bool,
    /// Auto-converge: throttle the worker vCPUs when rounds do not converge.
    #[serde(default)]
    pub throttle: bool,
    /// The most auto-converge holds the worker vCPUs off, percent (default 99).
    #[serde(default)]
    pub throttle_max_pct: Option<f64>,
    /// Migrate to a destination started elsewhere, as `HOST:PORT`, instead
    /// of starting one: `migbench vmm --incoming ADDR` for vmm-min, the
    /// control address of `migbench qemu-incoming` for qemu. No probe runs.
    #[serde(default)]
    pub to: Option<String>,
    /// Mutual-TLS credentials for the migration (`migbench tls-init`);
    /// required for a non-loopback `to`.
    #[serde(default)]
    pub tls_dir: Option<String>,
    /// With `to`: an existing TAP on this host for the guest's NIC, bridged
    /// to the destination's LAN (vmm-min: optional, without it the guest has
    /// no NIC; qemu: required, its agent answers over HTTP).
    #[serde(default)]
    pub tap: Option<String>,
    /// With `tap`: the guest's address with its prefix, e.g. `192.168.50.20/24`.
    #[serde(default)]
    pub guest_ip: Option<String>,
    /// With `tap`: the guest's MAC (default: 02:6d:62 and the address's last three bytes).
    #[serde(default)]
    pub guest_mac: Option<String>,
}

/// The guest's NIC on an existing TAP of this host, for a remote
/// destination (`migrate --tap --guest-ip [--guest-mac]` and the scenario
/// keys `migration.tap`, `guest_ip`, `guest_mac`). `guest_ip` is
/// `A.B.C.D/PREFIX` (a bare address means /24).
pub fn host_nic(
    tap: &str,
    guest_ip: &str,
    guest_mac: Option<&str>,
    file_bytes: u64,
) -> Result<vmm_min::config::NetConfig, String> {
    let expected = || format!("'{guest_ip}': expected an IPv4 address with its prefix, e.g. 192.168.50.20/24");
    let (addr, prefix) = guest_ip.split_once('/').unwrap_or((guest_ip, "24"));
    let addr: std::net::Ipv4Addr = addr.parse().map_err(|_| expected())?;
    let prefix: u8 = prefix.parse().ok().filter(|p| (1..=30).contains(p)).ok_or_else(expected)?;
    if tap.is_empty() || tap.len() > 15 {
        return Err(format!("TAP name '{tap}': must be 1 to 15 characters (a Linux interface name)"));
    }
    let [_, b, c, d] = addr.octets();
    Ok(vmm_min::config::NetConfig {
        tap: tap.to_owned(),
        mac: guest_mac.map_or_else(|| format!("02:6d:62:{b:02x}:{c:02x}:{d:02x}"), str::to_owned),
        ip: format!("{addr}/{prefix}"),
        file_bytes,
    })
}

/// Checks a remote destination `HOST:PORT`; whether it is a loopback address.
pub fn check_remote(to: &str) -> Result<bool, String> {
    let (host, port) = to
        .rsplit_once(':')
        .ok_or_else(|| format!("'{to}' is not HOST:PORT (e.g. 192.0.2.7:4444, or [2001:db8::7]:4444)"))?;
    let port: u16 = port.parse().map_err(|_| format!("'{to}': port '{port}' is not a number from 1 to 65535"))?;
    if port == 0 || host.is_empty() {
        return Err(format!("'{to}' needs a host and a port from 1 to 65535"));
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Ok(host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|a| a.is_loopback()))
}

fn d_true() -> bool {
    true
}

impl MigrationSection {
    /// The typed auto-converge (`None` unless `throttle = true`), checked.
    pub fn throttle(&self) -> Result<Option<results::Throttle>, String> {
        if !self.throttle {
            return match self.throttle_max_pct {
                Some(_) => Err("key `migration.throttle_max_pct` needs `throttle = true`".into()),
                None => Ok(None),
            };
        }
        let t = self.throttle_max_pct.map_or_else(results::Throttle::default, results::Throttle::with_max);
        t.validate().map_err(|e| format!("key `migration.throttle_max_pct`: {e}"))?;
        Ok(Some(t))
    }

    /// The typed policy: the scenario's keys over the policy's defaults.
    pub fn policy(&self) -> Result<Policy, String> {
        let timeout_ms = match &self.timeout {
            Some(t) => {
                Some(parse_duration(t).map_err(|e| format!("key `migration.timeout`: {e}"))?.as_secs_f64() * 1e3)
            }
            None => None,
        };
        let o = PolicyOverrides {
            downtime_ms: self.downtime_ms,
            timeout_ms,
            on_timeout: self.on_timeout,
            max_bandwidth_mbps: self.max_bandwidth_mbps,
        };
        Policy::build(self.policy.as_deref().unwrap_or("downtime"), &o).map_err(|e| match e {
            results::PolicyError::UnknownKind(k) => {
                format!("key `migration.policy`: expected \"downtime\" or \"xen\", got {k:?}")
            }
            other => format!("section `migration`: {other}"),
        })
    }
}

/// Limits that fail the run (for CI).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    /// VMM downtime, ms.
    #[serde(default)]
    pub max_downtime_ms: Option<f64>,
    /// Application-visible downtime, ms.
    #[serde(default)]
    pub max_app_downtime_ms: Option<f64>,
}

/// Which system under test runs the scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum SystemKind {
    /// migbench's own VMM and built-in guest.
    #[default]
    #[serde(rename = "vmm-min")]
    VmmMin,
    /// QEMU with the Linux guest (`migbench image build`).
    #[serde(rename = "qemu")]
    Qemu,
}

impl SystemKind {
    /// Every system, in report order.
    pub const ALL: [SystemKind; 2] = [SystemKind::VmmMin, SystemKind::Qemu];

    /// Its name, as scenario files and `--systems` spell it.
    pub fn name(self) -> &'static str {
        match self {
            SystemKind::VmmMin => "vmm-min",
            SystemKind::Qemu => "qemu",
        }
    }
}

impl std::str::FromStr for SystemKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        SystemKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| format!("unknown system '{s}': expected vmm-min or qemu"))
    }
}

/// How to run QEMU (`system = "qemu"`); what is left out takes
/// [`QemuConfig::new`]'s defaults, and the kernel and initrd default to the
/// cached `migbench image build` image.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QemuSection {
    /// The binary (a path, or a name on PATH).
    #[serde(default)]
    pub binary: Option<PathBuf>,
    /// `-machine`.
    #[serde(default)]
    pub machine: Option<String>,
    /// `auto`, `kvm` or `tcg`.
    #[serde(default)]
    pub accel: Option<AccelChoice>,
    /// The guest kernel.
    #[serde(default)]
    pub kernel: Option<PathBuf>,
    /// The guest initramfs (its init must be migbench's agent).
    #[serde(default)]
    pub initrd: Option<PathBuf>,
    /// Extra arguments for both QEMUs.
    #[serde(default)]
    pub extra_args: Vec<String>,
}

impl QemuSection {
    /// Lays the table's keys over `cfg`.
    pub fn apply(&self, cfg: &mut QemuConfig) {
        if let Some(b) = &self.binary {
            cfg.binary = b.clone();
        }
        if let Some(m) = &self.machine {
            cfg.machine = m.clone();
        }
        if let Some(a) = self.accel {
            cfg.accel = a;
        }
        if let Some(k) = &self.kernel {
            cfg.kernel = k.clone();
        }
        if let Some(i) = &self.initrd {
            cfg.initrd = i.clone();
        }
        cfg.extra_args.extend(self.extra_args.iter().cloned());
    }
}

/// A whole scenario.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name, used in result paths.
    pub name: String,
    /// One line for the report.
    #[serde(default)]
    pub description: String,
    /// The VM.
    pub vm: VmSection,
    /// The network.
    #[serde(default = "d_network")]
    pub network: NetworkSection,
    /// The probe.
    #[serde(default = "d_probe")]
    pub probe: ProbeSection,
    /// The migration.
    pub migration: MigrationSection,
    /// The shaped link between the hosts, if any.
    #[serde(default)]
    pub link: Option<LinkSection>,
    /// CI limits.
    #[serde(default)]
    pub limits: LimitsSection,
    /// The system under test (default `vmm-min`).
    #[serde(default)]
    pub system: SystemKind,
    /// How to run QEMU (only with `system = "qemu"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qemu: Option<QemuSection>,
}

fn d_network() -> NetworkSection {
    NetworkSection { file_size: d_file(), hosts: false }
}
fn d_probe() -> ProbeSection {
    ProbeSection { interval: d_interval(), connections: d_connections() }
}

/// "line N: `the line`: message": the line names the key, the message what
/// was expected.
fn toml_error(text: &str, e: &toml::de::Error) -> String {
    let msg = e.message().trim();
    let Some(span) = e.span() else { return msg.to_owned() };
    let start = span.start.min(text.len());
    let line_no = text[..start].matches('\n').count() + 1;
    let line = text.lines().nth(line_no - 1).unwrap_or("").trim();
    format!("line {line_no}: `{line}`: {msg}")
}

/// The scenarios shipped with migbench, by name.
pub const BUILT_IN: &[(&str, &str)] = &[
    ("idle", include_str!("../files/idle.toml")),
    ("loaded", include_str!("../files/loaded.toml")),
    ("loaded-throttle", include_str!("../files/loaded-throttle.toml")),
    ("qemu-idle", include_str!("../files/qemu-idle.toml")),
    ("qemu-loaded", include_str!("../files/qemu-loaded.toml")),
    ("idle-gbit", include_str!("../files/idle-gbit.toml")),
    ("loaded-gbit", include_str!("../files/loaded-gbit.toml")),
];

impl Scenario {
    /// Parses scenario text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Scenario, ScenarioError> {
        let err = |msg: String| ScenarioError { file: file.to_owned(), msg };
        let s: Scenario = toml::from_str(text).map_err(|e| err(toml_error(text, &e)))?;
        s.check().map_err(err)?;
        Ok(s)
    }

    /// Reads a scenario file, or a built-in one by name (`idle`, `loaded`).
    pub fn load(path_or_name: &str) -> Result<Scenario, ScenarioError> {
        if let Some((name, text)) = BUILT_IN.iter().find(|(n, _)| *n == path_or_name) {
            return Scenario::parse(text, &format!("<built-in {name}>"));
        }
        let text = std::fs::read_to_string(Path::new(path_or_name)).map_err(|e| ScenarioError {
            file: path_or_name.to_owned(),
            msg: format!(
                "cannot read the scenario file: {e} (built-in scenarios: {})",
                BUILT_IN.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
            ),
        })?;
        Scenario::parse(&text, path_or_name)
    }

    /// Checks values the types cannot: durations, sizes, choices.
    fn check(&self) -> Result<(), String> {
        let dur = |key: &str, v: &str| parse_duration(v).map(|_| ()).map_err(|e| format!("key `{key}`: {e}"));
        dur("probe.interval", &self.probe.interval)?;
        dur("migration.warmup", &self.migration.warmup)?;
        dur("migration.after", &self.migration.after)?;
        let size =
            |key: &str, v: &str| vmm_min::config::parse_size(v).map(|_| ()).map_err(|e| format!("key `{key}`: {e}"));
        size("vm.memory", &self.vm.memory)?;
        size("network.file_size", &self.network.file_size)?;
        match self.system {
            SystemKind::VmmMin => self.vm.workload.parse::<vmm_min::Workload>().map(|_| ()).map_err(|e| e.to_string()),
            SystemKind::Qemu => {
                self.vm.workload.parse::<linux_guest::params::Workload>().map(|_| ()).map_err(|e| e.to_string())
            }
        }
        .map_err(|e| format!("key `vm.workload` (system {}): {e}", self.system.name()))?;
        let m = &self.migration;
        match (&m.to, &m.tap, &m.guest_ip) {
            (None, None, None) if m.guest_mac.is_none() => {}
            (None, ..) => {
                return Err("keys `migration.tap`, `guest_ip`, `guest_mac`: only with `migration.to` (a remote destination); a local run makes its own TAP".into())
            }
            (Some(_), Some(tap), Some(ip)) => {
                host_nic(tap, ip, m.guest_mac.as_deref(), 0).map_err(|e| format!("keys `migration.tap`/`guest_ip`: {e}"))?;
            }
            (Some(_), None, None) if self.system == SystemKind::Qemu => {
                return Err("key `migration.to` with system = \"qemu\": set `migration.tap` (an existing TAP on this host, bridged to the LAN of the destination's `qemu-incoming --tap`) and `migration.guest_ip` (e.g. \"192.168.50.20/24\"): the Linux guest's agent answers over HTTP".into())
            }
            (Some(_), None, None) if m.guest_mac.is_none() => {}
            (Some(_), ..) => return Err("keys `migration.tap` and `migration.guest_ip`: give both (and `guest_mac` only with them)".into()),
        }
        if self.qemu.is_some() && self.system != SystemKind::Qemu {
            return Err(format!(
                "table `qemu`: only read with system = \"qemu\" (this scenario's system is {:?})",
                self.system.name()
            ));
        }
        self.migration.policy()?;
        self.migration.throttle()?;
        if let Some(l) = &self.link {
            l.link()?;
        }
        if let Some(to) = &self.migration.to {
            let loopback = check_remote(to).map_err(|e| format!("key `migration.to`: {e}"))?;
            if !loopback && self.migration.tls_dir.is_none() {
                return Err(format!(
                    "key `migration.to`: {to} is not a loopback address: set `migration.tls_dir` to the credentials of `migbench tls-init` (the destination needs them too)"
                ));
            }
            if self.link.is_some() || self.network.hosts {
                return Err("key `migration.to`: a remote destination is a real host; `[link]` and `network.hosts` shape simulated ones, leave them out".into());
            }
        }
        if self.probe.connections == 0 {
            return Err("key `probe.connections`: must be at least 1".into());
        }
        if self.name.is_empty() || !self.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(format!("key `name`: expected letters, digits, '-' or '_', got {:?}", self.name));
        }
        Ok(())
    }

    /// A duration field, already checked by `parse`.
    pub fn duration(v: &str) -> Duration {
        parse_duration(v).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_scenarios_parse() {
        for (name, _) in BUILT_IN {
            let s = Scenario::load(name).unwrap();
            // The QEMU files run the same scenarios on the other system.
            assert_eq!(s.name, name.trim_start_matches("qemu-"));
            assert_eq!(s.system == SystemKind::Qemu, name.starts_with("qemu-"));
        }
        assert_eq!(Scenario::load("loaded").unwrap().vm.workload, "stress:vm=3,bytes=128M");
    }

    #[test]
    fn malformed_scenarios_name_file_key_and_expectation() {
        let base = include_str!("../files/idle.toml");
        let cases = [
            (base.replace("interval = \"10ms\"", "intervall = \"10ms\""), "intervall"),
            (base.replace("interval = \"10ms\"", "interval = \"10 parsecs\""), "probe.interval"),
            (base.replace("connections = 4", "connections = \"four\""), "connections"),
            (base.replace("memory = \"512M\"", "memory = \"lots\""), "vm.memory"),
            (base.replace("policy = \"downtime\"", "policy = \"yolo\""), "migration.policy"),
            (base.replace("workload = \"idle\"", "workload = \"dance\""), "vm.workload"),
            (base.replace("[migration]", "[migrashun]"), "migrashun"),
            ("this is not toml".to_string(), "expected"),
        ];
        for (text, key) in cases {
            let e = Scenario::parse(&text, "x.toml").unwrap_err().to_string();
            assert!(e.starts_with("x.toml: "), "{e}");
            assert!(e.contains(key), "expected '{key}' in: {e}");
        }
        let e = Scenario::load("/nonexistent/s.toml").unwrap_err().to_string();
        assert!(e.contains("/nonexistent/s.toml") && e.contains("cannot read"), "{e}");
    }

    #[test]
    fn system_and_qemu_table() {
        let base = include_str!("../files/qemu-idle.toml");
        let s = Scenario::parse(base, "q.toml").unwrap();
        let mut cfg = QemuConfig::new("/k".into(), "/i".into());
        s.qemu.clone().unwrap_or_default().apply(&mut cfg);
        assert_eq!((cfg.accel, cfg.machine.as_str()), (AccelChoice::Auto, "pc"));
        let t = format!("{base}\nkernel = \"/boot/vmlinuz\"\naccel = \"tcg\"\nextra_args = [\"-cpu\", \"max\"]\n");
        let s = Scenario::parse(&t, "q.toml").unwrap();
        s.qemu.unwrap().apply(&mut cfg);
        assert_eq!((cfg.kernel.to_str(), cfg.accel), (Some("/boot/vmlinuz"), AccelChoice::Tcg));
        assert_eq!(cfg.extra_args, ["-cpu", "max"]);
        let cases = [
            (base.replace("system = \"qemu\"", "system = \"xen\""), "system"),
            (base.replace("[qemu]", "[qemu]\naccel = \"hvf\""), "accel"),
            (base.replace("[qemu]", "[qemu]\nbinari = \"q\""), "binari"),
            (base.replace("system = \"qemu\"", "system = \"vmm-min\""), "only read with system"),
            (base.replace("workload = \"idle\"", "workload = \"memcheck:mb=0\""), "vm.workload"),
            (base.replace("[migration]", "[migration]\nto = \"10.0.0.2:4444\""), "set `migration.tap`"),
        ];
        for (text, key) in cases {
            let e = Scenario::parse(&text, "q.toml").unwrap_err().to_string();
            assert!(e.contains(key), "expected '{key}' in: {e}");
        }
        assert_eq!("qemu".parse::<SystemKind>(), Ok(SystemKind::Qemu));
        assert!("xen".parse::<SystemKind>().is_err());
    }

    #[test]
    fn link_and_remote_keys() {
        let base = include_str!("../files/idle-gbit.toml");
        let s = Scenario::parse(base, "g.toml").unwrap();
        let l = s.link.as_ref().unwrap().link().unwrap();
        assert_eq!(l.bandwidth_bps, Some(1_000_000_000));
        let cases = [
            (base.replace("bandwidth = \"1gbit\"", "bandwidth = \"fast\""), "link.bandwidth"),
            (base.replace("bandwidth = \"1gbit\"", "bandwith = \"1gbit\""), "bandwith"),
            (base.replace("bandwidth = \"1gbit\"", "jitter = \"2ms\""), "link.jitter"),
            (base.replace("bandwidth = \"1gbit\"", "loss = \"lots\""), "link.loss"),
            (base.replace("bandwidth = \"1gbit\"", "guest = true"), "section `link`"),
        ];
        for (text, key) in cases {
            let e = Scenario::parse(&text, "g.toml").unwrap_err().to_string();
            assert!(e.contains(key), "expected '{key}' in: {e}");
        }
        let netem = base.replace("bandwidth = \"1gbit\"", "latency = \"10ms\"\njitter = \"1ms\"\nloss = \"0.5%\"");
        let l = Scenario::parse(&netem, "n.toml").unwrap().link.unwrap().link().unwrap();
        assert_eq!((l.latency_ms, l.jitter_ms, l.loss_pct), (Some(10.0), Some(1.0), Some(0.5)));
        let idle = include_str!("../files/idle.toml");
        let remote = idle.replace("verify = false", "verify = false\nto = \"192.0.2.7:4444\"");
        let e = Scenario::parse(&remote, "r.toml").unwrap_err().to_string();
        assert!(e.contains("migration.tls_dir"), "{e}");
        let ok = remote.replace("to = ", "tls_dir = \"tls\"\nto = ");
        assert_eq!(Scenario::parse(&ok, "r.toml").unwrap().migration.to.as_deref(), Some("192.0.2.7:4444"));
        assert!(Scenario::parse(&idle.replace("verify = false", "verify = false\nto = \"127.0.0.1:4444\""), "l.toml")
            .is_ok());
        let with = |keys: &str| ok.replace("to = ", &format!("{keys}\nto = "));
        let nic = Scenario::parse(&with("tap = \"tap7\"\nguest_ip = \"192.168.50.20/24\""), "n.toml").unwrap();
        assert_eq!(nic.migration.tap.as_deref(), Some("tap7"));
        for (keys, want) in [
            ("tap = \"tap7\"", "give both"),
            ("guest_ip = \"192.168.50.20/24\"", "give both"),
            ("guest_mac = \"02:00:00:00:00:01\"", "give both"),
            ("tap = \"tap7\"\nguest_ip = \"192.168.50/24\"", "expected an IPv4 address"),
            ("tap = \"tap7\"\nguest_ip = \"192.168.50.20/33\"", "expected an IPv4 address"),
            ("tap = \"a-very-long-tap-name\"\nguest_ip = \"192.168.50.20\"", "1 to 15 characters"),
        ] {
            let e = Scenario::parse(&with(keys), "n.toml").unwrap_err().to_string();
            assert!(e.contains(want), "{keys}: expected '{want}' in: {e}");
        }
        let local = idle.replace("verify = false", "verify = false\ntap = \"tap7\"\nguest_ip = \"10.0.0.2/24\"");
        assert!(Scenario::parse(&local, "l.toml").unwrap_err().to_string().contains("only with `migration.to`"));
        for bad in ["nowhere", "host:0", ":80", "h:99999"] {
            let t = idle.replace("verify = false", &format!("verify = false\nto = \"{bad}\""));
            assert!(Scenario::parse(&t, "b.toml").unwrap_err().to_string().contains("migration.to"), "{bad}");
        }
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("10ms").unwrap(), Duration::from_millis(10));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5 weeks").is_err());
        assert!(parse_duration("99999999999999999999s").is_err());
        assert!(parse_duration("999999999999999999m").is_err());
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Any text gives a scenario or an error naming the file, never a panic.
        #[test]
        fn any_text_parses_or_names_the_file(text in "(?s).{0,400}") {
            if let Err(e) = Scenario::parse(&text, "p.toml") {
                prop_assert!(e.to_string().starts_with("p.toml: "));
            }
        }

        /// A built-in scenario with one value replaced by arbitrary text.
        #[test]
        fn mutated_scenarios_never_panic(line in 0usize..40, value in "[ -~]{0,30}") {
            let base = include_str!("../files/loaded.toml");
            let text: String = base
                .lines()
                .enumerate()
                .map(|(i, l)| match l.split_once('=') {
                    Some((k, _)) if i == line => format!("{k}= {value}\n"),
                    _ => format!("{l}\n"),
                })
                .collect();
            let _ = Scenario::parse(&text, "m.toml");
        }
    }
}
