//! Brings up the NIC whose MAC the host gave, with busybox `ip`.

use linux_guest::params::GuestParams;
use std::process::Command;
use std::time::{Duration, Instant};

/// How long the NIC may take to appear after the modules were loaded.
const APPEAR_TIMEOUT: Duration = Duration::from_secs(10);

/// The interface whose MAC is `mac`, if there is one yet.
fn find(mac: &str) -> Option<String> {
    let dir = std::fs::read_dir("/sys/class/net").ok()?;
    dir.flatten().find_map(|e| {
        let addr = std::fs::read_to_string(e.path().join("address")).ok()?;
        (addr.trim().eq_ignore_ascii_case(mac)).then(|| e.file_name().to_string_lossy().into_owned())
    })
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("running `ip`: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("`ip {}`: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Configures loopback and the guest's NIC; returns the NIC's name.
pub fn configure(p: &GuestParams) -> Result<String, String> {
    let start = Instant::now();
    let nic = loop {
        if let Some(n) = find(&p.mac) {
            break n;
        }
        if start.elapsed() > APPEAR_TIMEOUT {
            return Err(format!("no interface with MAC {} after {APPEAR_TIMEOUT:?} (is virtio_net loaded?)", p.mac));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    ip(&["link", "set", "dev", "lo", "up"])?;
    ip(&["addr", "add", &format!("{}/{}", p.ip, p.prefix), "dev", &nic])?;
    ip(&["link", "set", "dev", &nic, "up"])?;
    Ok(nic)
}
