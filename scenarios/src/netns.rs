//! The network topology of a run: two network namespaces joined by a bridge,
//! created for the run and removed with it.
//!
//! ```text
//!  netns mb<id>-lan:   bridge mb<id>br (forward delay 0, no STP)
//!                      ├─ TAP mb<id>ts   (source VMM)
//!                      ├─ TAP mb<id>td   (destination VMM)
//!                      └─ veth mb<id>vl ─┐
//!  netns mb<id>-probe:                   └─ veth mb<id>vp  10.53.X.1/24
//!  guest:              10.53.X.2/24, MAC 02:6d:62:..
//! ```
//!
//! - **Names:** every name carries the run id (1 to 11 of `[a-z0-9]`), so
//!   runs never collide and leftovers are recognisable (`ip netns list |
//!   grep ^mb`). Interface names stay within the kernel's 15 characters.
//! - **Where the VMM runs:** a TAP must be opened in the namespace that holds
//!   it. The TAPs are created in the lan namespace, and a VMM opens its TAP
//!   from a thread that entered that namespace ([`Topology::in_lan`], using
//!   `setns`), or runs whole inside it (`ip netns exec mb<id>-lan migbench
//!   …`). Once open, the TAP's descriptor works from any namespace, so the
//!   VMM's other threads and its control socket are unaffected.
//! - **The probe** runs in the probe namespace: [`Topology::in_probe`] runs a
//!   closure on a thread inside it, so sockets it creates live there.
//! - **Cleanup:** dropping the [`Topology`] deletes both namespaces, which
//!   removes the bridge, the TAPs and the veth pair with them. A failure
//!   half-way through [`Topology::create`] removes what was already made.
//!   Traffic never leaves these namespaces.
//! - **Privileges:** all of this needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN);
//!   without it, [`Topology::create`] says so and creates nothing.
//!
//! ## Simulated hosts ([`Layout::hosts`])
//!
//! A run can instead place the source, the destination and the probe on
//! three "hosts" of their own, joined by a switch (the lan namespace) that
//! carries the guest's network like a VLAN, and a separate migration link:
//!
//! ```text
//!  netns mb<id>-src (source host)          netns mb<id>-dst (destination host)
//!   bridge mb<id>bs                         bridge mb<id>bd
//!   ├─ TAP mb<id>ts (source VMM)            ├─ TAP mb<id>td (destination VMM)
//!   └─ veth mb<id>us ─┐                     └─ veth mb<id>ud ─┐
//!   veth mb<id>ms 10.54.X.1/24 ═══ migration link ═══ veth mb<id>md 10.54.X.2/24
//!  netns mb<id>-lan (the switch):           │                  │
//!   bridge mb<id>br ── mb<id>ls ────────────┘ ── mb<id>ld ──────┘
//!                  └─ mb<id>vl ── netns mb<id>-probe: mb<id>vp 10.53.X.1/24
//! ```
//!
//! - Each side's process runs in its host's namespace
//!   ([`Names::source_ns`], [`Names::destination_ns`]); the destination
//!   listens on [`Names::migration_listen`] (10.54.X.2), so the migration
//!   stream crosses the veth pair `ms`/`md`, not loopback.
//! - The guest keeps its address and MAC wherever it runs: both host
//!   bridges hang off the switch, which relearns the MAC from the
//!   destination's gratuitous ARP; the probe reaches the guest on either
//!   host.
//! - A [`results::Link`] shapes both ends of the migration link (and, with
//!   `guest`, both ends of each uplink) with `tc` ([`crate::link`]); the
//!   qdiscs go with the namespaces.
//! - Any system under test can use this: run the source in
//!   [`Names::source_ns`] with its TAP `tap_src`, the destination in
//!   [`Names::destination_ns`] with `tap_dst`, listening on
//!   [`Names::migration_listen`]. In the flat layout the first two are the
//!   lan namespace and the last is that namespace's loopback.

use crate::link::{self, LinkError};
use results::Link;
use std::fs::File;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// Errors from building or entering the topology.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// The process is not root.
    #[error("the network topology needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN to create namespaces, bridges and TAPs); run migbench as root, e.g. with sudo")]
    NotRoot,
    /// The run id is not usable in interface names.
    #[error("run id '{0}' is invalid: use 1 to 11 lowercase letters or digits")]
    BadRunId(String),
    /// A namespace of this run already exists.
    #[error("network namespace {0} already exists (a run with the same id is active, or a leftover: remove it with `ip netns del {0}`)")]
    Exists(String),
    /// An `ip` command failed.
    #[error("`{cmd}` failed: {msg}")]
    Command {
        /// The command line.
        cmd: String,
        /// Its error output.
        msg: String,
    },
    /// Shaping the link failed (the message says so and names the qdisc).
    #[error(transparent)]
    Link(#[from] LinkError),
    /// A system call failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// The names and addresses of one run's topology.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Names {
    /// The run id.
    pub run_id: String,
    /// Namespace with the bridge and the TAPs.
    pub lan_ns: String,
    /// Namespace of the probe.
    pub probe_ns: String,
    /// The bridge.
    pub bridge: String,
    /// TAP of the source VMM.
    pub tap_src: String,
    /// TAP of the destination VMM.
    pub tap_dst: String,
    /// The veth end on the bridge.
    pub veth_lan: String,
    /// The veth end in the probe namespace.
    pub veth_probe: String,
    /// The probe's address.
    pub probe_ip: Ipv4Addr,
    /// The guest's address.
    pub guest_ip: Ipv4Addr,
    /// Prefix length of the subnet.
    pub prefix: u8,
    /// The guest's MAC address.
    pub guest_mac: String,
    /// The simulated hosts, when the run has them ([`Layout::hosts`]).
    pub hosts: Option<HostNames>,
}

/// The names and addresses of the simulated hosts (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HostNames {
    /// The source host's namespace (source VMM, TAP `tap_src`).
    pub source_ns: String,
    /// The destination host's namespace (destination VMM, TAP `tap_dst`).
    pub destination_ns: String,
    /// The source host's bridge.
    pub bridge_src: String,
    /// The destination host's bridge.
    pub bridge_dst: String,
    /// The source host's uplink to the switch (its end on the host).
    pub uplink_src: String,
    /// The same uplink's end on the switch.
    pub uplink_src_lan: String,
    /// The destination host's uplink to the switch (its end on the host).
    pub uplink_dst: String,
    /// The same uplink's end on the switch.
    pub uplink_dst_lan: String,
    /// The migration link's end on the source host.
    pub migration_src: String,
    /// The migration link's end on the destination host.
    pub migration_dst: String,
    /// The source host's address on the migration link.
    pub migration_src_ip: Ipv4Addr,
    /// The destination host's address on the migration link.
    pub migration_dst_ip: Ipv4Addr,
}

/// How a run's topology is laid out.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Layout {
    /// MTU of every link (0: 1500).
    pub mtu: u32,
    /// Source, destination and probe on hosts of their own.
    pub hosts: bool,
    /// Shaping of the migration link (needs `hosts`).
    pub link: Option<Link>,
}

fn fnv(s: &str) -> u64 {
    probes::etag::fnv1a64(s.as_bytes())
}

impl Names {
    /// The names for run `run_id`.
    pub fn for_run(run_id: &str) -> Result<Names, NetnsError> {
        if run_id.is_empty()
            || run_id.len() > 11
            || !run_id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            return Err(NetnsError::BadRunId(run_id.to_string()));
        }
        let h = fnv(run_id);
        let x = (h % 254 + 1) as u8;
        let p = |s: &str| format!("mb{run_id}{s}");
        Ok(Names {
            run_id: run_id.to_string(),
            lan_ns: p("-lan"),
            probe_ns: p("-probe"),
            bridge: p("br"),
            tap_src: p("ts"),
            tap_dst: p("td"),
            veth_lan: p("vl"),
            veth_probe: p("vp"),
            probe_ip: Ipv4Addr::new(10, 53, x, 1),
            guest_ip: Ipv4Addr::new(10, 53, x, 2),
            prefix: 24,
            guest_mac: format!("02:6d:62:{:02x}:{:02x}:{:02x}", (h >> 16) as u8, (h >> 24) as u8, (h >> 32) as u8),
            hosts: None,
        })
    }

    /// The names for run `run_id` with simulated hosts.
    pub fn for_run_hosts(run_id: &str) -> Result<Names, NetnsError> {
        let mut n = Names::for_run(run_id)?;
        let x = n.guest_ip.octets()[2];
        let p = |s: &str| format!("mb{run_id}{s}");
        n.hosts = Some(HostNames {
            source_ns: p("-src"),
            destination_ns: p("-dst"),
            bridge_src: p("bs"),
            bridge_dst: p("bd"),
            uplink_src: p("us"),
            uplink_src_lan: p("ls"),
            uplink_dst: p("ud"),
            uplink_dst_lan: p("ld"),
            migration_src: p("ms"),
            migration_dst: p("md"),
            migration_src_ip: Ipv4Addr::new(10, 54, x, 1),
            migration_dst_ip: Ipv4Addr::new(10, 54, x, 2),
        });
        Ok(n)
    }

    /// The names of run `run_id`'s existing topology, with or without hosts
    /// (for a process that attaches to a topology its parent made).
    pub fn existing(run_id: &str) -> Result<Names, NetnsError> {
        let hosts = Names::for_run_hosts(run_id)?;
        let n = match &hosts.hosts {
            Some(h) if namespace_exists(&h.destination_ns) => hosts.clone(),
            _ => Names::for_run(run_id)?,
        };
        if !namespace_exists(&n.lan_ns) {
            return Err(NetnsError::Io {
                what: format!("attaching to run {run_id}'s topology"),
                source: io::Error::new(io::ErrorKind::NotFound, format!("namespace {} does not exist", n.lan_ns)),
            });
        }
        Ok(n)
    }

    /// The namespace the source runs in and holds `tap_src`.
    pub fn source_ns(&self) -> &str {
        self.hosts.as_ref().map_or(&self.lan_ns, |h| &h.source_ns)
    }

    /// The namespace the destination runs in and holds `tap_dst`.
    pub fn destination_ns(&self) -> &str {
        self.hosts.as_ref().map_or(&self.lan_ns, |h| &h.destination_ns)
    }

    /// Where the destination listens for the migration stream, inside
    /// [`Names::destination_ns`]: its address on the migration link, or
    /// loopback without hosts.
    pub fn migration_listen(&self, port: u16) -> String {
        match &self.hosts {
            Some(h) => format!("{}:{port}", h.migration_dst_ip),
            None => format!("127.0.0.1:{port}"),
        }
    }

    /// Every namespace of the topology, in the order they are created.
    pub fn namespaces(&self) -> Vec<&str> {
        let mut v = vec![self.lan_ns.as_str(), self.probe_ns.as_str()];
        if let Some(h) = &self.hosts {
            v.push(&h.source_ns);
            v.push(&h.destination_ns);
        }
        v
    }

    /// The guest's address with its prefix, as the guest's `net.ip=` wants it.
    pub fn guest_cidr(&self) -> String {
        format!("{}/{}", self.guest_ip, self.prefix)
    }

    /// The NIC of a guest on the source TAP, serving a file of `file_bytes`.
    pub fn source_nic(&self, file_bytes: u64) -> vmm_min::config::NetConfig {
        vmm_min::config::NetConfig {
            tap: self.tap_src.clone(),
            mac: self.guest_mac.clone(),
            ip: self.guest_cidr(),
            file_bytes,
        }
    }
}

/// A fresh run id: 6 hex digits from the process id and the clock.
pub fn new_run_id() -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let h = fnv(&format!("{}-{nanos}", std::process::id()));
    format!("{:06x}", h & 0xff_ffff)
}

/// Whether the process is root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn ns_path(ns: &str) -> PathBuf {
    PathBuf::from("/var/run/netns").join(ns)
}

/// Whether the named network namespace exists.
pub fn namespace_exists(ns: &str) -> bool {
    ns_path(ns).exists()
}

/// Runs `ip ARGS…` and fails with its error output.
fn ip(args: &[&str]) -> Result<(), NetnsError> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| NetnsError::Io { what: "running `ip` (install iproute2)".into(), source: e })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NetnsError::Command {
            cmd: format!("ip {}", args.join(" ")),
            msg: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Moves the calling thread into network namespace `ns`.
pub fn enter_netns(ns: &str) -> Result<(), NetnsError> {
    let f = File::open(ns_path(ns))
        .map_err(|e| NetnsError::Io { what: format!("opening network namespace {ns}"), source: e })?;
    // SAFETY: setns takes a namespace descriptor, valid for the call.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(NetnsError::Io {
            what: format!("entering network namespace {ns}"),
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Runs `f` on a new thread inside network namespace `ns` and returns its
/// result. Sockets and TAPs it opens belong to `ns`; threads it starts
/// inherit `ns`.
pub fn run_in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> Result<T, NetnsError> {
    std::thread::scope(|s| {
        s.spawn(|| {
            enter_netns(ns)?;
            Ok(f())
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// A created topology; dropping it removes everything.
#[derive(Debug)]
pub struct Topology {
    names: Names,
    created: Vec<String>,
    link: Option<Link>,
}

impl Topology {
    /// Creates the topology of run `run_id` with links of `mtu` bytes.
    pub fn create(run_id: &str, mtu: u32) -> Result<Topology, NetnsError> {
        Topology::create_with(run_id, &Layout { mtu, ..Layout::default() })
    }

    /// Creates the topology of run `run_id` as `layout` says; a link implies
    /// hosts (it joins the source and destination hosts).
    pub fn create_with(run_id: &str, layout: &Layout) -> Result<Topology, NetnsError> {
        let hosts = layout.hosts || layout.link.is_some();
        let names = if hosts { Names::for_run_hosts(run_id)? } else { Names::for_run(run_id)? };
        if !is_root() {
            return Err(NetnsError::NotRoot);
        }
        for ns in names.namespaces() {
            if namespace_exists(ns) {
                return Err(NetnsError::Exists(ns.to_string()));
            }
        }
        let mut t = Topology { names, created: Vec::new(), link: layout.link.clone() };
        let mtu = if layout.mtu == 0 { 1500 } else { layout.mtu };
        // On error `t` is dropped here, which removes what was made.
        t.build(mtu)?;
        if t.names.hosts.is_some() {
            t.build_hosts(mtu)?;
        }
        Ok(t)
    }

    fn build(&mut self, mtu: u32) -> Result<(), NetnsError> {
        let n = self.names.clone();
        remove_on_signal();
        for ns in n.namespaces() {
            // Registered first: a signal between the two steps removes it.
            live().push(ns.to_string());
            if let Err(e) = ip(&["netns", "add", ns]) {
                live().retain(|l| l != ns);
                return Err(e);
            }
            self.created.push(ns.to_string());
        }
        let mtu = mtu.to_string();
        let (lan, probe) = (n.lan_ns.as_str(), n.probe_ns.as_str());
        ip(&["-n", lan, "link", "add", &n.bridge, "type", "bridge", "forward_delay", "0", "stp_state", "0"])?;
        ip(&["-n", lan, "link", "add", &n.veth_lan, "type", "veth", "peer", "name", &n.veth_probe, "netns", probe])?;
        let mut ports = vec![&n.veth_lan];
        if n.hosts.is_none() {
            for tap in [&n.tap_src, &n.tap_dst] {
                ip(&["-n", lan, "tuntap", "add", "dev", tap, "mode", "tap", "vnet_hdr"])?;
            }
            ports.extend([&n.tap_src, &n.tap_dst]);
        }
        for port in &ports {
            ip(&["-n", lan, "link", "set", "dev", port, "mtu", &mtu, "master", &n.bridge])?;
        }
        ip(&["-n", lan, "link", "set", "dev", &n.bridge, "mtu", &mtu])?;
        for dev in ["lo", &n.bridge].into_iter().chain(ports.iter().map(|p| p.as_str())) {
            ip(&["-n", lan, "link", "set", "dev", dev, "up"])?;
        }
        ip(&["-n", probe, "link", "set", "dev", &n.veth_probe, "mtu", &mtu])?;
        let cidr = format!("{}/{}", n.probe_ip, n.prefix);
        ip(&["-n", probe, "addr", "add", &cidr, "dev", &n.veth_probe])?;
        for dev in ["lo", n.veth_probe.as_str()] {
            ip(&["-n", probe, "link", "set", "dev", dev, "up"])?;
        }
        Ok(())
    }

    /// The source and destination hosts: a bridge with the side's TAP and
    /// an uplink to the switch on each, the migration link between them,
    /// and its shaping.
    fn build_hosts(&mut self, mtu: u32) -> Result<(), NetnsError> {
        let n = self.names.clone();
        let Some(h) = &n.hosts else { return Ok(()) };
        let mtu = mtu.to_string();
        let lan = n.lan_ns.as_str();
        for (ns, bridge, tap, up, up_lan) in [
            (&h.source_ns, &h.bridge_src, &n.tap_src, &h.uplink_src, &h.uplink_src_lan),
            (&h.destination_ns, &h.bridge_dst, &n.tap_dst, &h.uplink_dst, &h.uplink_dst_lan),
        ] {
            let ns = ns.as_str();
            ip(&["-n", ns, "link", "add", bridge, "type", "bridge", "forward_delay", "0", "stp_state", "0"])?;
            ip(&["-n", ns, "tuntap", "add", "dev", tap, "mode", "tap", "vnet_hdr"])?;
            ip(&["-n", ns, "link", "add", up, "type", "veth", "peer", "name", up_lan, "netns", lan])?;
            for port in [tap, up] {
                ip(&["-n", ns, "link", "set", "dev", port, "mtu", &mtu, "master", bridge])?;
            }
            ip(&["-n", ns, "link", "set", "dev", bridge, "mtu", &mtu])?;
            for dev in ["lo", bridge, tap, up] {
                ip(&["-n", ns, "link", "set", "dev", dev, "up"])?;
            }
            ip(&["-n", lan, "link", "set", "dev", up_lan, "mtu", &mtu, "master", &n.bridge])?;
            ip(&["-n", lan, "link", "set", "dev", up_lan, "up"])?;
        }
        let (src, dst) = (h.source_ns.as_str(), h.destination_ns.as_str());
        ip(&[
            "-n",
            src,
            "link",
            "add",
            &h.migration_src,
            "type",
            "veth",
            "peer",
            "name",
            &h.migration_dst,
            "netns",
            dst,
        ])?;
        for (ns, dev, addr) in
            [(src, &h.migration_src, h.migration_src_ip), (dst, &h.migration_dst, h.migration_dst_ip)]
        {
            ip(&["-n", ns, "link", "set", "dev", dev, "mtu", &mtu])?;
            ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", dev])?;
            ip(&["-n", ns, "link", "set", "dev", dev, "up"])?;
        }
        if let Some(l) = &self.link {
            link::shape(src, &h.migration_src, l)?;
            link::shape(dst, &h.migration_dst, l)?;
            if l.guest {
                link::shape(src, &h.uplink_src, l)?;
                link::shape(dst, &h.uplink_dst, l)?;
                link::shape(lan, &h.uplink_src_lan, l)?;
                link::shape(lan, &h.uplink_dst_lan, l)?;
            }
        }
        Ok(())
    }

    /// The link's shaping, if any.
    pub fn link(&self) -> Option<&Link> {
        self.link.as_ref()
    }

    /// The qdiscs on both ends of the migration link, as `tc` shows them
    /// (empty without hosts).
    pub fn migration_qdiscs(&self) -> Result<String, NetnsError> {
        let Some(h) = &self.names.hosts else { return Ok(String::new()) };
        Ok(link::show(&h.source_ns, &h.migration_src)? + &link::show(&h.destination_ns, &h.migration_dst)?)
    }

    /// The names and addresses.
    pub fn names(&self) -> &Names {
        &self.names
    }

    /// Runs `f` on a thread inside the lan namespace (where the TAPs are
    /// without hosts).
    pub fn in_lan<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, NetnsError> {
        run_in_netns(&self.names.lan_ns, f)
    }

    /// Runs `f` on a thread inside the probe namespace.
    pub fn in_probe<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, NetnsError> {
        run_in_netns(&self.names.probe_ns, f)
    }

    /// Removes everything now (also done on drop); reports the first error.
    pub fn remove(mut self) -> Result<(), NetnsError> {
        self.teardown()
    }

    fn teardown(&mut self) -> Result<(), NetnsError> {
        let mut first = Ok(());
        while let Some(ns) = self.created.pop() {
            if let Err(e) = ip(&["netns", "del", &ns]) {
                if first.is_ok() {
                    first = Err(e);
                }
            }
            live().retain(|l| *l != ns);
        }
        first
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            eprintln!("migbench: removing the network topology: {e}");
        }
    }
}

/// The namespaces this process created and has not removed yet: what the
/// signal thread removes on Ctrl-C, whichever topology (of several made one
/// after another, as `reproduce` does) is alive then.
static LIVE: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn live() -> std::sync::MutexGuard<'static, Vec<String>> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Blocks the termination signals (SIGINT, SIGTERM, SIGHUP) in this and
/// all later threads, once, and starts one thread that removes every live
/// namespace and exits with 130 when one arrives (a signal handler could
/// not run `ip` safely). The CLI calls it first thing in `main`, before any
/// other thread exists, so no thread can take the signal's default action;
/// creating a topology calls it too, for other users of this crate.
/// Children inherit the blocked mask: [`crate::process::ChildProcess`]
/// unblocks it before `exec`.
pub fn remove_on_signal() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: sigset_t is plain data; the calls only read/write `set`.
        let set = unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
                libc::sigaddset(&mut set, s);
            }
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            set
        };
        let _ = std::thread::Builder::new().name("net-signals".into()).spawn(move || {
            let mut sig = 0;
            // SAFETY: `set` and `sig` are valid for the call.
            if unsafe { libc::sigwait(&set, &mut sig) } == 0 {
                eprintln!("migbench: signal {sig}: removing the network topology");
                let namespaces: Vec<String> = live().drain(..).collect();
                for ns in namespaces.iter().rev() {
                    let _ = ip(&["netns", "del", ns]);
                }
                std::process::exit(130);
            }
        });
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_and_carry_the_run_id() {
        let n = Names::for_run("abc123def45").unwrap();
        for i in [&n.bridge, &n.tap_src, &n.tap_dst, &n.veth_lan, &n.veth_probe] {
            assert!(i.len() <= 15, "{i} is too long");
            assert!(i.contains("abc123def45"));
        }
        assert!(n.lan_ns.contains("abc123def45") && n.probe_ns.contains("abc123def45"));
        assert_eq!(n.guest_cidr(), format!("{}/24", n.guest_ip));
        assert!(n.guest_mac.starts_with("02:6d:62:"));
        assert!(Names::for_run("").is_err());
        assert!(Names::for_run("abc123def456").is_err());
        assert!(Names::for_run("ABC").is_err());
        assert!(Names::for_run("a-b").is_err());
        let id = new_run_id();
        assert!(Names::for_run(&id).is_ok(), "{id}");
    }

    #[test]
    fn topology_is_created_and_removed_even_on_panic() {
        if !is_root() {
            assert!(matches!(Topology::create("t1", 1500), Err(NetnsError::NotRoot)));
            return;
        }
        let id = format!("u{}", &new_run_id()[..5]);
        let names = Names::for_run(&id).unwrap();
        let res = std::panic::catch_unwind(|| {
            let t = Topology::create(&id, 1500).unwrap();
            assert!(namespace_exists(&t.names().lan_ns) && namespace_exists(&t.names().probe_ns));
            let up = t.in_probe(|| std::net::UdpSocket::bind((t.names().probe_ip, 0)).is_ok()).unwrap();
            assert!(up, "the probe address is configured");
            assert!(matches!(Topology::create(&id, 1500), Err(NetnsError::Exists(_))));
            panic!("failing on purpose with the topology up");
        });
        assert!(res.is_err());
        assert!(!namespace_exists(&names.lan_ns), "lan namespace left behind");
        assert!(!namespace_exists(&names.probe_ns), "probe namespace left behind");
    }
}
