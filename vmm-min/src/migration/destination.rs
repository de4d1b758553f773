//! The receiving side: accept one incoming migration, check the offered VM,
//! fill RAM, restore state, verify, and resume only a complete VM. Any
//! malformed, truncated or corrupted stream ends with an error before a
//! single guest instruction runs here.

use super::digest::Digest;
use super::wire::{pages, parse_json, FrameReader, FrameWriter, Kind, WireError};
use super::{state, Ack, Complete, Hello, HelloReply};
use crate::abi::PAGE_SIZE;
use crate::clock::mono_ns;
use crate::error::{Error, Result};
use crate::guest_image;
use crate::memory;
use crate::vmm::{new_machine, Vmm};
use std::io::BufReader;
use std::net::TcpListener;
use std::time::Duration;

const PAGE: usize = PAGE_SIZE as usize;

/// What the destination insists on, beyond the guest image.
#[derive(Debug, Clone, Default)]
pub struct IncomingOptions {
    /// Required RAM size, if the user gave one.
    pub memory: Option<u64>,
    /// Required vCPU count, if the user gave one.
    pub vcpus: Option<u32>,
    /// Copy the guest console to stderr.
    pub console: bool,
    /// How long to wait for a frame before giving up.
    pub frame_timeout: Duration,
    /// The TAP this side gives an incoming VM's NIC.
    pub tap: Option<String>,
}

/// What an incoming migration did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct IncomingReport {
    /// Pages received, zero markers included.
    pub pages: u64,
    /// Bytes read from the stream.
    pub frames: u64,
    /// Whether a digest was checked.
    pub verified: bool,
}

/// Accepts one migration on `listener` and returns the resumed VM.
pub fn receive(listener: &TcpListener, opts: &IncomingOptions) -> Result<(Vmm, IncomingReport)> {
    let (stream, peer) = listener.accept().map_err(Error::io("accepting the migration connection"))?;
    tracing::info!(%peer, "incoming migration");
    let _ = stream.set_nodelay(true);
    stream.set_read_timeout(Some(opts.frame_timeout)).map_err(Error::io("socket timeout"))?;
    let mut out = FrameWriter::new(stream.try_clone().map_err(Error::io("cloning the socket"))?);
    // Small enough that page batches (about 1 MiB) bypass it and are read
    // straight into the frame buffer.
    let mut reader = FrameReader::new(BufReader::with_capacity(64 << 10, stream));
    match receive_on(&mut reader, &mut out, opts) {
        Ok(r) => Ok(r),
        Err(e) => {
            // Best effort: tell the source, which then resumes its VM.
            let _ = out.send_json(Kind::Abort, &serde_json::json!({"reason": e.to_string()}));
            Err(e)
        }
    }
}

fn wire(e: WireError) -> Error {
    Error::State(format!("incoming migration rejected: {e}"))
}

fn receive_on<R: std::io::Read, W: std::io::Write>(
    reader: &mut FrameReader<R>,
    out: &mut FrameWriter<W>,
    opts: &IncomingOptions,
) -> Result<(Vmm, IncomingReport)> {
    let send = |e| Error::io("replying to the source")(e);
    let hello: Hello = reader.recv_json(Kind::Hello).map_err(wire)?;
    let mut config = hello.config.clone();
    let nic_without_tap = config.net.is_some() && opts.tap.is_none();
    if let (Some(net), Some(tap)) = (&mut config.net, &opts.tap) {
        net.tap = tap.clone();
    }
    let refuse = |why: String| -> Option<String> { Some(why) };
    let reason = if hello.wire_version != super::wire::VERSION {
        refuse(format!("wire version {} is not {}", hello.wire_version, super::wire::VERSION))
    } else if hello.image_fingerprint != guest_image::fingerprint() {
        refuse("the source runs a different guest image".into())
    } else if opts.memory.is_some_and(|m| m != config.memory) {
        refuse(format!(
            "memory mismatch: the source VM has {} bytes, this destination was started for {}",
            config.memory,
            opts.memory.unwrap_or(0)
        ))
    } else if opts.vcpus.is_some_and(|v| v != config.vcpus) {
        refuse(format!(
            "vCPU mismatch: the source VM has {}, this destination was started for {}",
            config.vcpus,
            opts.vcpus.unwrap_or(0)
        ))
    } else if nic_without_tap {
        refuse("the VM has a NIC, but this destination has no TAP for it (start it with --net-run-id)".into())
    } else {
        None
    };
    if let Some(reason) = reason {
        out.send_json(Kind::HelloReply, &HelloReply { ok: false, reason: Some(reason.clone()) }).map_err(send)?;
        return Err(Error::State(format!("refused the incoming VM: {reason}")));
    }
    let machine = match new_machine(&config, opts.console) {
        Ok(m) => m,
        Err(e) => {
            let reason = format!("cannot build the VM here: {e}");
            out.send_json(Kind::HelloReply, &HelloReply { ok: false, reason: Some(reason.clone()) }).map_err(send)?;
            return Err(Error::State(reason));
        }
    };
    out.send_json(Kind::HelloReply, &HelloReply { ok: true, reason: None }).map_err(send)?;
    out.flush().map_err(send)?;

    let ram_pages = config.memory / PAGE_SIZE;
    let mem = &machine.vm.mem;
    let base = memory::host_base(mem)?;
    let mut report = IncomingReport { pages: 0, frames: 0, verified: false };
    let mut saved = None;
    let mut digest = None;
    // Pages written so far: RAM starts zero, so a zero marker for a page
    // never written needs no work at all.
    let mut written = vec![0u64; ram_pages.div_ceil(64) as usize];
    let complete: Complete = loop {
        let (kind, payload) = reader.recv().map_err(wire)?;
        report.frames += 1;
        match kind {
            Kind::Pages => {
                let (entries, data) = pages::decode(payload, ram_pages).map_err(wire)?;
                let mut off = 0;
                for e in entries {
                    let pfn = e & !pages::ZERO_PAGE;
                    let (word, bit) = ((pfn / 64) as usize, 1u64 << (pfn % 64));
                    report.pages += 1;
                    // SAFETY (both blocks): `decode` checked pfn < ram_pages,
                    // so the page lies inside the VM's RAM mapping; no vCPU
                    // or device of this VM runs yet, so nothing else touches
                    // it. Written directly, not through vm-memory, so that
                    // incoming pages are not marked as the VMM's own writes.
                    let dst = unsafe { base.add(pfn as usize * PAGE) };
                    if e & pages::ZERO_PAGE != 0 {
                        if written[word] & bit != 0 {
                            written[word] &= !bit;
                            unsafe { std::ptr::write_bytes(dst, 0, PAGE) };
                        }
                    } else {
                        written[word] |= bit;
                        let src = &data[off..off + PAGE];
                        off += PAGE;
                        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst, PAGE) };
                    }
                }
            }
            Kind::State => saved = Some(parse_json::<state::MigrationState>(payload, kind).map_err(wire)?),
            Kind::Digest => digest = Some(parse_json::<Digest>(payload, kind).map_err(wire)?),
            Kind::Complete => break parse_json(payload, kind).map_err(wire)?,
            Kind::Abort => {
                let v: serde_json::Value = serde_json::from_slice(payload).unwrap_or_default();
                return Err(Error::State(format!(
                    "the source aborted the migration: {}",
                    v["reason"].as_str().unwrap_or("no reason")
                )));
            }
            other => return Err(wire(WireError::Malformed(format!("unexpected {other:?} frame")))),
        }
    };
    let mut ack = Ack { complete_ns: mono_ns(), ..Default::default() };
    tracing::debug!(pause_requested_ns = complete.pause_requested_ns, "migration complete frame");
    let saved = saved.ok_or_else(|| wire(WireError::Malformed("no State frame before Complete".into())))?;

    ack.verify_start_ns = mono_ns();
    if let Some(want) = &digest {
        // SAFETY: no vCPU of this VM has run yet; only this thread touches RAM.
        let have = Digest::of(unsafe { memory::as_slice(mem)? }, 2);
        if let Some(off) = want.first_mismatch(&have) {
            let reason = format!("memory digest mismatch: guest RAM differs from the source at {off:#x}");
            ack.reason = Some(reason.clone());
            ack.digest_ok = Some(false);
            let _ = out.send_json(Kind::Ack, &ack);
            let _ = out.flush();
            return Err(Error::State(reason));
        }
        report.verified = true;
        ack.digest_ok = Some(true);
    }
    ack.verify_end_ns = mono_ns();
    if let Err(e) = state::restore(&machine, &saved) {
        ack.reason = Some(format!("restoring state: {e}"));
        let _ = out.send_json(Kind::Ack, &ack);
        let _ = out.flush();
        return Err(e.into());
    }
    ack.restored_ns = mono_ns();
    let vmm = Vmm::start(machine, config);
    ack.first_run_ns = vmm.wait_first_run(Duration::from_secs(5)).unwrap_or_else(mono_ns);
    if let Some(net) = &vmm.machine().net {
        // Tell the bridge where the guest is now: the VMM sends a gratuitous
        // ARP at once, and asks the guest's stack to send its own.
        if let Err(e) = net.announce() {
            tracing::warn!("gratuitous ARP from the VMM failed: {e}");
        }
        if let Err(e) = crate::devices::net::request_guest_announce(vmm.machine()) {
            tracing::warn!("asking the guest to announce itself failed: {e}");
        }
    }
    ack.ok = true;
    if let Err(e) = out.send_json(Kind::Ack, &ack).and_then(|_| out.flush()) {
        // The source will resume its copy: this one must not run too.
        vmm.join();
        return Err(Error::io("acknowledging the migration; stopped the VM here so the source keeps it")(e));
    }
    Ok((vmm, report))
}
