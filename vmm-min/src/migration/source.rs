//! The source side: setup, iterative pre-copy, stop-and-copy, commitment.
//! Until the destination acknowledges, the source owns the VM: any failure
//! resumes it and reports why.

use super::digest::Digest;
use super::page_sender::{count, merge_into, untouched_pages, PageSender};
use super::policy::{Decision, Policy, Progress};
use super::stats::{DowntimeBreakdown, MigrationStats, Outcome, RoundStats, VerifyStats};
use super::wire::{FrameReader, FrameWriter, Kind};
use super::{state, Ack, Complete, Hello, HelloReply};
use crate::abi::PAGE_SIZE;
use crate::clock::{mono_ns, ms_between};
use crate::error::{Error, Result};
use crate::guest_image;
use crate::memory;
use crate::vmm::Vmm;
use std::io::BufWriter;
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// What the source does besides the policy.
#[derive(Debug, Clone, Default)]
pub struct SourceOptions {
    /// Send a RAM digest for the destination to check.
    pub verify: bool,
}

/// A progress line for the user, after each round.
pub type ProgressFn<'a> = &'a mut dyn FnMut(&RoundStats);

/// KVM's dirty log merged with the VMM's own writes. The log call
/// write-protects the pages it reports before returning, and the own-write
/// bitmap is reset before the pages are read, so tracking is always re-armed
/// before a page is copied, never after.
fn sync_dirty(vmm: &Vmm) -> Result<Vec<u64>> {
    let m = vmm.machine();
    let mut map = m.vm.take_dirty_log()?;
    merge_into(&mut map, &memory::take_own_writes(&m.vm.mem));
    Ok(map)
}

/// Live-migrates `vmm` to `to` (`HOST:PORT`). Never leaves the VM paused:
/// unless the outcome is `Completed`, the VM runs on here.
pub fn migrate(vmm: &Vmm, to: &str, policy: &Policy, opts: &SourceOptions, progress: ProgressFn) -> MigrationStats {
    let start = mono_ns();
    let mut stats = MigrationStats {
        outcome: Outcome::Failed,
        reason: None,
        stop_reason: None,
        policy: policy.clone(),
        start_mono_ns: start,
        total_ms: 0.0,
        ram_bytes: vmm.config().memory,
        transferred_bytes: 0,
        zero_pages: 0,
        rounds: Vec::new(),
        final_pages: 0,
        paused_at_ms: None,
        resumed_at_ms: None,
        downtime_ms: None,
        downtime_breakdown: None,
        paused_total_ms: None,
        verify: None,
    };
    let mut paused = false;
    let _owner = crate::sync::lock(&vmm.machine().vm.dirty_log_owner);
    let result = run(vmm, to, policy, opts, progress, &mut stats, &mut paused);
    let m = vmm.machine();
    match result {
        Ok(()) => {}
        Err(e) => {
            if stats.outcome != Outcome::Cancelled {
                stats.outcome = Outcome::Failed;
            }
            stats.reason = Some(e.to_string());
            if paused {
                vmm.resume();
            }
            if let Err(e) = m.vm.set_dirty_logging(false) {
                tracing::warn!("turning dirty logging off after a failed migration: {e}");
            }
        }
    }
    stats.total_ms = ms_between(start, mono_ns());
    stats
}

fn run(
    vmm: &Vmm,
    to: &str,
    policy: &Policy,
    opts: &SourceOptions,
    progress: ProgressFn,
    stats: &mut MigrationStats,
    paused: &mut bool,
) -> Result<()> {
    let start = stats.start_mono_ns;
    let m = vmm.machine();
    let addr = to
        .to_socket_addrs()
        .map_err(|e| Error::Config(format!("bad destination address '{to}': {e}")))?
        .next()
        .ok_or_else(|| Error::Config(format!("destination '{to}' resolves to nothing")))?;
    let stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
        .map_err(Error::io(format!("connecting to the destination {to}")))?;
    let _ = stream.set_nodelay(true);
    stream.set_read_timeout(Some(REPLY_TIMEOUT)).map_err(Error::io("socket timeout"))?;
    let mut reader = FrameReader::new(stream.try_clone().map_err(Error::io("cloning the socket"))?);
    let base = memory::host_base(&m.vm.mem)? as *const u8;
    let ram_pages = stats.ram_bytes / PAGE_SIZE;
    // SAFETY: `base` maps the VM's `ram_pages` pages, which live as long as
    // `vmm`, and so longer than this sender.
    let mut tx =
        unsafe { PageSender::new(FrameWriter::new(BufWriter::with_capacity(1 << 20, stream)), base, ram_pages) };
    let wire = |e: std::io::Error| Error::io("sending to the destination")(e);
    let proto = |e: super::wire::WireError| Error::State(format!("destination: {e}"));

    // 1. Setup.
    let hello = Hello {
        wire_version: super::wire::VERSION,
        config: vmm.config().clone(),
        image_fingerprint: guest_image::fingerprint(),
        start_mono_ns: start,
    };
    tx.w.send_json(Kind::Hello, &hello).map_err(wire)?;
    tx.w.flush().map_err(wire)?;
    let reply: HelloReply = reader.recv_json(Kind::HelloReply).map_err(proto)?;
    if !reply.ok {
        return Err(Error::State(format!(
            "destination refused the VM: {}",
            reply.reason.unwrap_or_else(|| "no reason given".into())
        )));
    }

    // 2. Iterative pre-copy. Arm tracking, then round 0 sends everything.
    m.vm.set_dirty_logging(true)?;
    sync_dirty(vmm)?;
    let mut map = vec![u64::MAX; ram_pages.div_ceil(64) as usize];
    tx.untouched = untouched_pages(base, stats.ram_bytes as usize);
    let mut rate = policy.first_rate();
    let mut sent_bytes = 0u64;
    let mut prev_dirty = None;
    let pause_reason = loop {
        let round = stats.rounds.len() as u32;
        let t0 = mono_ns();
        let sent = tx.send(&map, rate).map_err(wire)?;
        tx.untouched = None;
        map = sync_dirty(vmm)?;
        let t1 = mono_ns();
        let secs = (t1 - t0) as f64 / 1e9;
        let dirty = count(&map);
        sent_bytes += sent.bytes;
        stats.zero_pages += sent.zero;
        let r = RoundStats {
            round,
            pages_sent: sent.pages,
            bytes: sent.bytes,
            zero_pages: sent.zero,
            dirty_pages: dirty,
            start_ms: ms_between(start, t0),
            duration_ms: secs * 1e3,
            rate_mbps: sent.bytes as f64 * 8.0 / secs.max(1e-9) / 1e6,
            rate_limit_mbps: rate,
            dirty_rate_pages_s: dirty as f64 / secs.max(1e-9),
        };
        progress(&r);
        stats.rounds.push(r.clone());
        if crate::sync::lock(&m.exit).is_some() {
            return Err(Error::State("the guest stopped during migration".into()));
        }
        let decision = policy.decide(&Progress {
            rounds: round + 1,
            dirty_pages: dirty,
            prev_dirty_pages: prev_dirty,
            dirty_rate_mbps: r.dirty_rate_pages_s * PAGE_SIZE as f64 * 8.0 / 1e6,
            last_rate: rate,
            measured_mbps: if r.bytes > 0 { r.rate_mbps } else { f64::INFINITY },
            sent_bytes,
            ram_bytes: stats.ram_bytes,
            elapsed_ms: ms_between(start, t1),
        });
        prev_dirty = Some(dirty);
        match decision {
            Decision::Continue(next) => rate = next,
            Decision::StopAndCopy(why) => break why,
            Decision::Cancel(why) => {
                stats.outcome = Outcome::Cancelled;
                let _ = tx.w.send_json(Kind::Abort, &serde_json::json!({"reason": why}));
                let _ = tx.w.flush();
                return Err(Error::State(format!("migration cancelled: {why}")));
            }
        }
    };
    stats.stop_reason = Some(pause_reason);

    // 3. Stop-and-copy.
    let t_pause = mono_ns();
    *paused = true;
    vmm.pause()?;
    let t_paused = mono_ns();
    merge_into(&mut map, &sync_dirty(vmm)?);
    let fin = tx.send(&map, None).map_err(wire)?;
    stats.final_pages = fin.pages;
    stats.zero_pages += fin.zero;
    let t_copied = mono_ns();
    let st = state::save(m)?;
    tx.w.send_json(Kind::State, &st).map_err(wire)?;
    let mut src_verify = (0, 0);
    if opts.verify {
        let v0 = mono_ns();
        // SAFETY: the vCPUs are paused; only the VMM touches RAM now.
        let digest = Digest::of(unsafe { memory::as_slice(&m.vm.mem)? }, 2);
        tx.w.send_json(Kind::Digest, &digest).map_err(wire)?;
        src_verify = (v0, mono_ns());
    }
    let complete = Complete { pause_requested_ns: t_pause, sent_ns: mono_ns() };
    tx.w.send_json(Kind::Complete, &complete).map_err(wire)?;
    tx.w.flush().map_err(wire)?;
    // The destination may restore before this thread returns from the
    // flush; the Complete frame's own timestamp always comes first.
    let t_sent = complete.sent_ns;
    stats.transferred_bytes = tx.w.bytes();

    // 4. Commitment: only the destination's acknowledgement releases the VM.
    let ack: Ack = reader.recv_json(Kind::Ack).map_err(proto)?;
    let dst_verify_ms = ms_between(ack.verify_start_ns, ack.verify_end_ns);
    if opts.verify {
        stats.verify = Some(VerifyStats {
            ok: ack.digest_ok == Some(true),
            source_ms: ms_between(src_verify.0, src_verify.1),
            destination_ms: dst_verify_ms,
        });
    }
    if !ack.ok {
        return Err(Error::State(format!(
            "destination failed to resume: {}",
            ack.reason.unwrap_or_else(|| "no reason given".into())
        )));
    }
    stats.outcome = Outcome::Completed;
    let src_verify_ms = ms_between(src_verify.0, src_verify.1);
    let state_ms = ms_between(t_copied, t_sent) - src_verify_ms;
    let restore_ms = ms_between(t_sent, ack.restored_ns) - dst_verify_ms;
    let breakdown = DowntimeBreakdown {
        pause_ms: ms_between(t_pause, t_paused),
        final_copy_ms: ms_between(t_paused, t_copied),
        state_ms,
        restore_ms,
        resume_ms: ms_between(ack.restored_ns, ack.first_run_ns),
    };
    let total_pause = ms_between(t_pause, ack.first_run_ns);
    stats.paused_total_ms = Some(total_pause);
    stats.downtime_ms = Some(total_pause - src_verify_ms - dst_verify_ms);
    stats.downtime_breakdown = Some(breakdown);
    stats.paused_at_ms = Some(ms_between(start, t_pause));
    stats.resumed_at_ms = Some(ms_between(start, ack.first_run_ns));
    Ok(())
}
