//! Which systems under test a command runs (`--systems`) and how QEMU runs
//! here (`QemuConfig` from a scenario's `[qemu]` table, the flags and the
//! cached Linux guest image): shared by `scenario`, `reproduce`, `migrate`,
//! `qemu-incoming` and `bench`.

use crate::cli::QemuArgs;
use crate::progress::Progress;
use anyhow::{bail, Result};
use scenarios::qemu::driver::{find_binary, QemuConfig, QemuError};
use scenarios::scenario::{QemuSection, SystemKind};
use std::path::PathBuf;
use std::sync::OnceLock;

/// The image's kernel and initrd, built (or found cached) once per process.
static IMAGE: OnceLock<std::result::Result<(PathBuf, PathBuf), String>> = OnceLock::new();

/// How QEMU runs: the scenario's `[qemu]` table, then the flags, then the
/// cached image for a kernel and initrd that neither gave. An error is the
/// reason the `qemu` system cannot run here, and what to do.
pub(crate) fn qemu_config(
    table: Option<&QemuSection>,
    a: &QemuArgs,
    progress: &Progress,
) -> std::result::Result<QemuConfig, String> {
    let mut cfg = QemuConfig::new(PathBuf::new(), PathBuf::new());
    if let Some(t) = table {
        t.apply(&mut cfg);
    }
    if let Some(b) = &a.qemu_binary {
        cfg.binary = b.clone();
    }
    if let Some(x) = a.accel {
        cfg.accel = x;
    }
    if let Some(k) = &a.kernel {
        cfg.kernel = k.clone();
    }
    if let Some(i) = &a.initrd {
        cfg.initrd = i.clone();
    }
    if find_binary(&cfg.binary).is_none() {
        return Err(QemuError::NoBinary(cfg.binary.display().to_string()).to_string());
    }
    match (cfg.kernel.as_os_str().is_empty(), cfg.initrd.as_os_str().is_empty()) {
        (false, false) => {}
        (true, true) => {
            let (k, i) = IMAGE
                .get_or_init(|| {
                    crate::image_cmd::build_cached(None, false, progress)
                        .map(|img| (img.kernel, img.initrd))
                        .map_err(|e| format!("{e:#}; on a host without apt-get, pass --kernel and --initrd"))
                })
                .clone()?;
            cfg.kernel = k;
            cfg.initrd = i;
        }
        _ => {
            return Err("give both a kernel and an initrd (--kernel and --initrd), or neither (the cached image)".into())
        }
    }
    match scenarios::system::qemu::unavailable(&cfg) {
        Some(why) => Err(why),
        None => Ok(cfg),
    }
}

/// `--systems`: names, or `all`.
pub(crate) fn parse_systems(names: &[String]) -> Result<Vec<SystemKind>> {
    let mut v = Vec::new();
    for n in names.iter().map(|n| n.trim()) {
        let add: Vec<SystemKind> = if n == "all" {
            SystemKind::ALL.to_vec()
        } else {
            vec![n.parse::<SystemKind>().map_err(|e| anyhow::anyhow!("--systems: {e}, or all"))?]
        };
        for k in add {
            if !v.contains(&k) {
                v.push(k);
            }
        }
    }
    if v.is_empty() {
        bail!("--systems: name at least one system (vmm-min, qemu) or all");
    }
    Ok(v)
}
