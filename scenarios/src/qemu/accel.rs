//! Which QEMU accelerator runs the guest, and why.
//!
//! `auto` picks KVM only where KVM runs a Linux guest at full speed: the CPU
//! has VT-x or AMD-V (`vmx`/`svm` in `/proc/cpuinfo`) **and** `kvm_intel` or
//! `kvm_amd` is loaded. On hosts whose `/dev/kvm` comes from another module
//! (such as `kvm_pvm`, which emulates guest ring 0 instruction by instruction)
//! a Linux boot would take many minutes, so `auto` picks TCG there.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// What the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccelChoice {
    /// KVM where it runs at full speed, else TCG.
    #[default]
    Auto,
    /// KVM, whatever the host.
    Kvm,
    /// TCG (QEMU's emulator).
    Tcg,
}

impl FromStr for AccelChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(AccelChoice::Auto),
            "kvm" => Ok(AccelChoice::Kvm),
            "tcg" => Ok(AccelChoice::Tcg),
            _ => Err(format!("unknown accelerator '{s}': use auto, kvm or tcg")),
        }
    }
}

/// The accelerator QEMU runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// `-accel kvm`.
    Kvm,
    /// `-accel tcg`.
    Tcg,
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        })
    }
}

/// The accelerator and the reason, for the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccelDecision {
    /// What runs.
    pub accel: Accel,
    /// Why, in a sentence.
    pub reason: String,
}

/// The KVM modules loaded on this host (from `/sys/module`, which exists
/// even where `/proc/modules` does not).
fn loaded_kvm_modules() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/sys/module")
        .map(|d| {
            d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| n.starts_with("kvm")).collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Decides for this host.
pub fn decide(choice: AccelChoice) -> AccelDecision {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    decide_from(choice, &cpuinfo, &loaded_kvm_modules(), std::path::Path::new("/dev/kvm").exists())
}

/// Decides from the host's facts (the testable part of [`decide`]).
pub fn decide_from(choice: AccelChoice, cpuinfo: &str, kvm_modules: &[String], dev_kvm: bool) -> AccelDecision {
    let hw = cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .flat_map(|l| l.split_whitespace())
        .find(|f| *f == "vmx" || *f == "svm");
    let hw_module = kvm_modules.iter().find(|m| *m == "kvm_intel" || *m == "kvm_amd");
    let mods = if kvm_modules.is_empty() { "none".to_string() } else { kvm_modules.join(", ") };
    match choice {
        AccelChoice::Tcg => AccelDecision { accel: Accel::Tcg, reason: "tcg: asked for".into() },
        AccelChoice::Kvm => AccelDecision {
            accel: Accel::Kvm,
            reason: format!("kvm: asked for (CPU virtualization flag: {}; KVM modules: {mods})", hw.unwrap_or("none")),
        },
        AccelChoice::Auto => match (hw, hw_module, dev_kvm) {
            (Some(flag), Some(m), true) => {
                AccelDecision { accel: Accel::Kvm, reason: format!("auto: kvm, the CPU has {flag} and {m} is loaded") }
            }
            _ => AccelDecision {
                accel: Accel::Tcg,
                reason: format!(
                    "auto: tcg, KVM would not run a Linux guest at full speed here (CPU virtualization flag: {}; KVM modules: {mods}; /dev/kvm: {}); TCG is an emulator, so guest figures are an emulator's",
                    hw.unwrap_or("none"),
                    if dev_kvm { "present" } else { "absent" }
                ),
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mods(m: &[&str]) -> Vec<String> {
        m.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn auto_needs_both_the_flag_and_the_module() {
        let vmx = "processor : 0\nflags\t\t: fpu vme vmx sse2\n";
        let plain = "processor : 0\nflags\t\t: fpu vme sse2\n";
        assert_eq!(decide_from(AccelChoice::Auto, vmx, &mods(&["kvm", "kvm_intel"]), true).accel, Accel::Kvm);
        let pvm = decide_from(AccelChoice::Auto, plain, &mods(&["kvm", "kvm_pvm"]), true);
        assert_eq!(pvm.accel, Accel::Tcg);
        assert!(pvm.reason.contains("kvm_pvm"), "{}", pvm.reason);
        assert_eq!(decide_from(AccelChoice::Auto, vmx, &mods(&["kvm", "kvm_pvm"]), true).accel, Accel::Tcg);
        assert_eq!(decide_from(AccelChoice::Auto, vmx, &mods(&["kvm_amd"]), false).accel, Accel::Tcg);
        assert_eq!(decide_from(AccelChoice::Kvm, plain, &[], false).accel, Accel::Kvm);
        assert_eq!(decide_from(AccelChoice::Tcg, vmx, &mods(&["kvm_intel"]), true).accel, Accel::Tcg);
        assert!("kvm2".parse::<AccelChoice>().is_err());
    }
}
