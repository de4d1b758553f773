//! `migbench qemu-incoming`: the CLI edge of a QEMU destination for a
//! source on another machine ([`scenarios::qemu::incoming`]): checks the
//! addresses and credentials, binds the control channel and serves it
//! until the process is stopped (Ctrl-C; the QEMU dies with it).

use crate::cli::QemuIncomingArgs;
use anyhow::{bail, Context, Result};
use scenarios::qemu::incoming::{self, IncomingConfig};
use std::process::ExitCode;
use vmm_min::migration::tls::TlsCredentials;

/// `migbench qemu-incoming`.
pub fn run(args: QemuIncomingArgs) -> Result<ExitCode> {
    let control: std::net::SocketAddr = args
        .control
        .parse()
        .map_err(|_| anyhow::anyhow!("--control {}: expected ADDR:PORT, e.g. 192.0.2.8:4500", args.control))?;
    let listen = args.listen.clone().unwrap_or_else(|| std::net::SocketAddr::new(control.ip(), 0).to_string());
    let listen_addr: std::net::SocketAddr =
        listen.parse().map_err(|_| anyhow::anyhow!("--listen {listen}: expected ADDR:PORT"))?;
    let tls = match &args.tls_dir {
        Some(d) => Some(TlsCredentials::load(d).map_err(|e| anyhow::anyhow!("--tls-dir: {e}"))?),
        None if control.ip().is_loopback() && listen_addr.ip().is_loopback() => None,
        None => bail!(
            "--control {} / --listen {listen} is not loopback: give --tls-dir DIR with the credentials of `migbench tls-init DIR --host ADDR` (the source needs the same DIR)",
            args.control
        ),
    };
    let progress = crate::progress::Progress::new(&[]);
    let qemu = crate::systems::qemu_config(None, &args.qemu, &progress)
        .map_err(|why| anyhow::anyhow!("QEMU cannot run here: {why}"))?;
    progress.finish();
    let bind = || std::net::TcpListener::bind(control);
    let listener = match &args.netns {
        Some(ns) => scenarios::netns::run_in_netns(ns, bind).map_err(|e| anyhow::anyhow!("--netns {ns}: {e}"))?,
        None => bind(),
    }
    .with_context(|| format!("binding the control channel on {control}"))?;
    let dir = std::env::temp_dir().join(format!("migbench-qemu-incoming-{}", std::process::id()));
    eprintln!(
        "migbench: qemu-incoming: control channel on {}{}; QEMU will listen on {listen}, its NIC on TAP {}",
        listener.local_addr().map_or_else(|_| control.to_string(), |a| a.to_string()),
        if tls.is_some() { " (mutual TLS)" } else { " (loopback, no TLS)" },
        args.tap
    );
    let cfg = IncomingConfig { qemu, tap: args.tap, netns: args.netns, listen, tls, dir: dir.clone() };
    let served = incoming::serve(listener, cfg);
    let _ = std::fs::remove_dir_all(&dir);
    served.context("serving the control channel")?;
    Ok(ExitCode::SUCCESS)
}
