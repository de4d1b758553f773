//! The source side, one function per phase (see [`super::protocol`] for the
//! message sequence): [`Source::setup`], [`Source::precopy`],
//! [`Source::stop_and_copy`], [`Source::commit`]. Until the destination
//! acknowledges, the source owns the VM: any failure resumes it and reports
//! why.

use super::digest::Digest;
use super::error::{Cause, MigrationError};
use super::page_sender::{count, merge_into, untouched_pages, PageSender};
use super::policy::{self, Decision, Progress};
use super::protocol::{escape, Abort, Commit, Complete, Hello, HelloReply, Ready, Started};
use super::send_queue::{data_left, SendQueue};
use super::state;
use super::throttle::Throttler;
use super::timed::{Deadline, TimedStream};
use super::tls::{Halves, Shared, TlsCredentials};
use super::wire::{FrameReader, FrameWriter, Kind, WireError};
use crate::abi::PAGE_SIZE;
use crate::guest_image;
use crate::memory;
use crate::run_control::Priority;
use crate::vmm::Vmm;
use results::clock::{mono_ns, ms_between};
use results::migration::{DowntimeBreakdown, MigrationStats, Outcome, RoundStats, VerifyStats};
use results::{Policy, ThreadPriorities, ThreadRole, Throttle};
use std::io::{BufWriter, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest wait for one read or write on the migration socket.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the destination may take to answer Hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the destination may take to say Started after Commit.
const STARTED_TIMEOUT: Duration = Duration::from_secs(10);
/// The default bound on the paused phase, until Ready.
pub const DEFAULT_STOP_DEADLINE: Duration = Duration::from_secs(5);

/// What the source does besides the policy.
#[derive(Debug, Clone)]
pub struct SourceOptions {
    /// Send a RAM digest for the destination to check.
    pub verify: bool,
    /// Mutual TLS on the migration stream.
    pub tls: Option<TlsCredentials>,
    /// The longest the guest may stay paused before the destination is
    /// Ready; past it the source aborts and resumes.
    pub stop_deadline: Duration,
    /// Auto-converge: throttle the worker vCPUs when rounds do not
    /// converge (`None`: never).
    pub throttle: Option<Throttle>,
}

impl Default for SourceOptions {
    fn default() -> Self {
        Self { verify: false, tls: None, stop_deadline: DEFAULT_STOP_DEADLINE, throttle: None }
    }
}

/// What the source tells its caller while it works.
#[derive(Debug)]
pub enum SourceEvent<'a> {
    /// A pre-copy round ended.
    Round(&'a RoundStats),
    /// The vCPUs are paused for stop-and-copy.
    Paused,
    /// The migration failed after the pause; the VM runs here again.
    Resumed,
    /// Commit went out and no Started came back: the VM stays paused here
    /// until an operator resolves it.
    Indeterminate,
}

/// The caller's observer of [`SourceEvent`]s.
pub type EventFn<'a> = &'a mut dyn FnMut(SourceEvent);

/// Live-migrates `vmm` to `to` (`HOST:PORT`). Unless the outcome is
/// `Completed` (the destination runs the guest) or `Indeterminate` (Commit
/// sent, no Started: the VM stays paused for an operator), the VM runs on
/// here.
pub fn migrate(vmm: &Vmm, to: &str, policy: &Policy, opts: &SourceOptions, events: EventFn) -> MigrationStats {
    let mut src = Source {
        vmm,
        policy,
        opts,
        stats: new_stats(vmm, policy),
        paused: false,
        committed: false,
        deadline: Deadline::none(),
        throttler: None,
    };
    // A dirty-rate measurement that holds the log ends at once when asked.
    let vm = &vmm.machine().vm;
    vm.dirty_log_wanted.store(true, std::sync::atomic::Ordering::Release);
    let _owner = crate::sync::lock(&vm.dirty_log_owner);
    vm.dirty_log_wanted.store(false, std::sync::atomic::Ordering::Release);
    // The page copy must not starve behind busy worker vCPUs.
    let priority = Priority::raise(ThreadRole::MigrationSend);
    let result = src.run(to, events);
    let mut own = vmm.thread_priorities();
    own.push(priority.record().clone());
    src.stats.thread_priorities.get_or_insert_with(ThreadPriorities::default).source = own;
    if let Err(e) = result {
        src.stats.reason = Some(e.to_string());
        if src.committed {
            // The destination may run the guest: never resume on our own.
            src.stats.outcome = Outcome::Indeterminate;
            events(SourceEvent::Indeterminate);
        } else {
            src.stats.outcome =
                if matches!(e.cause(), Cause::Cancelled(_)) { Outcome::Cancelled } else { Outcome::Failed };
            src.recover(events);
        }
    }
    src.stats.total_ms = ms_between(src.stats.start_mono_ns, mono_ns());
    src.stats
}

fn new_stats(vmm: &Vmm, policy: &Policy) -> MigrationStats {
    MigrationStats {
        outcome: Outcome::Failed,
        reason: None,
        stop_reason: None,
        policy: policy.clone(),
        start_mono_ns: mono_ns(),
        total_ms: 0.0,
        setup_ms: None,
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
        thread_priorities: None,
    }
}

/// One outgoing migration.
struct Source<'a> {
    vmm: &'a Vmm,
    policy: &'a Policy,
    opts: &'a SourceOptions,
    stats: MigrationStats,
    paused: bool,
    /// Commit was (perhaps) sent: from here the source never resumes alone.
    committed: bool,
    /// The current phase's deadline, shared by both halves of the socket.
    deadline: Deadline,
    /// Auto-converge, from pre-copy until the pause.
    throttler: Option<Throttler>,
}

/// The connection to the destination.
struct Link {
    reader: FrameReader<Box<dyn Read>>,
    tx: PageSender<BufWriter<Box<dyn Write>>>,
    /// The socket's send queue, for each round's rate (`None`: the kernel
    /// would not say; rounds then count what was written).
    queue: Option<SendQueue>,
}

impl Link {
    /// Bytes written into the socket and not yet acknowledged (0 when the
    /// kernel cannot say).
    fn queued(&self) -> u64 {
        self.queue.as_ref().and_then(|q| q.pending().ok()).unwrap_or(0)
    }
}

impl Link {
    /// Best effort: tells the destination why the source gives up.
    fn abort(&mut self, reason: &str) {
        let _ = self.tx.w.send_json(Kind::Abort, &Abort { reason: reason.to_owned() });
        let _ = self.tx.w.flush();
    }
}

/// Timestamps of the paused phase, for the downtime breakdown.
struct Switchover {
    pause: u64,
    paused: u64,
    copied: u64,
    sent: u64,
    verify: (u64, u64),
}

impl Source<'_> {
    fn run(&mut self, to: &str, events: EventFn) -> Result<(), MigrationError> {
        let mut link = self.setup(to)?;
        let result = self
            .precopy(&mut link, events)
            .and_then(|map| self.stop_and_copy(&mut link, map, events))
            .and_then(|sw| self.commit(&mut link, sw));
        if let Err(e) = &result {
            if !self.committed {
                self.deadline.clear();
                link.abort(&e.to_string());
            }
        }
        result
    }

    /// After a failure: the VM runs here again (dirty logging stays on, as
    /// it is for the VM's life; nobody reads it), and its NIC announces it
    /// here again (a restored destination announced it there before Ready).
    fn recover(&mut self, events: EventFn) {
        self.throttler = None;
        if self.paused {
            self.vmm.resume_after_migration();
            self.paused = false;
            events(SourceEvent::Resumed);
        }
    }

    /// KVM's dirty log merged with the VMM's own writes. The log call
    /// write-protects the pages it reports before returning, and the
    /// own-write bitmap is reset before the pages are read, so tracking is
    /// always re-armed before a page is copied, never after.
    fn sync_dirty(&self) -> crate::Result<Vec<u64>> {
        let m = self.vmm.machine();
        let mut map = m.vm.take_dirty_log()?;
        merge_into(&mut map, &memory::take_own_writes(&m.vm.mem));
        Ok(map)
    }

    /// The socket's reading and writing halves, each with bounded waits;
    /// inside a TLS session when the source has credentials.
    fn halves(&self, stream: TcpStream, to: &str) -> Result<Halves, Cause> {
        let timed = |s| TimedStream::new(s, IO_TIMEOUT, self.deadline.clone());
        match &self.opts.tls {
            None => {
                let half = stream.try_clone().map_err(Cause::io("cloning the socket"))?;
                Ok((Box::new(timed(half)), Box::new(timed(stream))))
            }
            Some(creds) => {
                let host = to.rsplit_once(':').map_or(to, |(h, _)| h).trim_start_matches('[').trim_end_matches(']');
                let session = creds.client(host)?;
                let (r, w) = Shared::new(rustls::StreamOwned::new(session, timed(stream)));
                Ok((Box::new(r), Box::new(w)))
            }
        }
    }

    /// Phase 1: connect, offer the VM, and arm dirty tracking once the
    /// destination accepted it.
    fn setup(&mut self, to: &str) -> Result<Link, MigrationError> {
        let fail = MigrationError::Setup;
        self.policy.validate().map_err(|e| fail(Cause::Refused(e.to_string())))?;
        if let Some(t) = &self.opts.throttle {
            t.validate().map_err(|e| fail(Cause::Refused(e.to_string())))?;
        }
        let addr = to
            .to_socket_addrs()
            .map_err(|e| fail(Cause::Io { what: "resolving the destination address", source: e }))?
            .next()
            .ok_or_else(|| fail(Cause::Refused(format!("destination '{to}' resolves to nothing"))))?;
        let t_start = self.stats.start_mono_ns;
        let stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
            .map_err(|e| fail(Cause::io("connecting to the destination")(e)))?;
        let t_connected = mono_ns();
        let _ = stream.set_nodelay(true);
        let queue = SendQueue::new(&stream)
            .map_err(|e| tracing::info!("round rates will count bytes written, not sent: {e}"))
            .ok();
        let (read_half, write_half) = self.halves(stream, to).map_err(fail)?;
        let reader = FrameReader::new(read_half);
        let m = self.vmm.machine();
        let base = memory::host_base(&m.vm.mem).map_err(|e| fail(e.into()))? as *const u8;
        let ram_pages = self.stats.ram_bytes / PAGE_SIZE;
        // SAFETY: `base` maps the VM's `ram_pages` pages, which live as long
        // as `vmm`, and so longer than this sender.
        let tx = unsafe {
            PageSender::new(FrameWriter::new(BufWriter::with_capacity(1 << 20, write_half)), base, ram_pages)
        };
        let mut link = Link { reader, tx, queue };
        let hello = Hello {
            wire_version: super::wire::VERSION,
            config: self.vmm.config().clone(),
            image_fingerprint: guest_image::fingerprint(),
            start_mono_ns: self.stats.start_mono_ns,
            verify: self.opts.verify,
        };
        let send = |e| fail(Cause::Wire(WireError::Io(e)));
        self.deadline.set_in(HELLO_TIMEOUT);
        link.tx.w.send_json(Kind::Hello, &hello).map_err(send)?;
        link.tx.w.flush().map_err(send)?;
        // While the destination builds its VM: arm tracking (dirty logging
        // is on from the VM's creation; this read clears what it collected
        // so far, and round 0 sends every page anyway) and find the pages
        // never touched. Both are harmless if the destination refuses.
        let t_hello = mono_ns();
        self.sync_dirty().map_err(|e| fail(e.into()))?;
        let t_synced = mono_ns();
        let untouched = untouched_pages(base, self.stats.ram_bytes as usize);
        let t_mincore = mono_ns();
        let reply: HelloReply = link.reader.recv_json(Kind::HelloReply).map_err(|e| fail(peer(e)))?;
        self.deadline.clear();
        let t_accepted = mono_ns();
        tracing::info!(
            connect_ms = ms_between(t_start, t_connected),
            hello_sent_ms = ms_between(t_connected, t_hello),
            first_sync_ms = ms_between(t_hello, t_synced),
            mincore_ms = ms_between(t_synced, t_mincore),
            reply_wait_ms = ms_between(t_mincore, t_accepted),
            "migration setup"
        );
        if !reply.ok {
            let why = reply.reason.as_deref().map_or_else(|| "no reason given".to_owned(), escape);
            return Err(fail(Cause::Refused(why)));
        }
        link.tx.untouched = untouched;
        Ok(link)
    }

    /// Phase 2: round 0 sends every page, each later round the pages
    /// dirtied during the one before, until the policy stops. Returns the
    /// pages still dirty.
    fn precopy(&mut self, link: &mut Link, events: EventFn) -> Result<Vec<u64>, MigrationError> {
        let fail = MigrationError::PreCopy;
        let start = self.stats.start_mono_ns;
        let mut map = vec![u64::MAX; (self.stats.ram_bytes / PAGE_SIZE).div_ceil(64) as usize];
        let mut rate = policy::first_rate(self.policy);
        let mut sent_bytes = 0u64;
        let mut prev_dirty = None;
        // Worker vCPUs: every one but vCPU 0, which runs the guest's network.
        let workers = self.vmm.machine().vcpus.iter().filter(|v| v.index != 0).cloned().collect();
        let mut throttler = Throttler::new(workers);
        let mut throttle: Option<f64> = None;
        loop {
            let t0 = mono_ns();
            let (wire0, queued0) = (link.tx.w.bytes(), link.queued());
            let held0 = throttler.held_ns().0;
            let sent = link.tx.send(&map, rate).map_err(|e| fail(Cause::Wire(WireError::Io(e))))?;
            if self.stats.setup_ms.is_none() {
                self.stats.setup_ms = link.tx.first_frame_ns.map(|t| ms_between(start, t));
            }
            map = self.sync_dirty().map_err(|e| fail(e.into()))?;
            let t1 = mono_ns();
            // What is still in the kernel's queue has not crossed the link.
            let left = data_left(sent.bytes, link.tx.w.bytes() - wire0, queued0, link.queued());
            let secs = ((t1 - t0) as f64 / 1e9).max(1e-9);
            let dirty = count(&map);
            let (held, workers) = throttler.held_ns();
            let throttle_pct = throttle
                .filter(|_| workers > 0)
                .map(|_| ((held - held0) as f64 / (t1 - t0).max(1) as f64 / workers as f64 * 100.0).clamp(0.0, 100.0));
            sent_bytes += sent.bytes;
            self.stats.zero_pages += sent.zero;
            let r = RoundStats {
                round: self.stats.rounds.len() as u32,
                pages_sent: sent.pages,
                bytes: sent.bytes,
                zero_pages: sent.zero,
                dirty_pages: dirty,
                start_ms: ms_between(start, t0),
                duration_ms: secs * 1e3,
                rate_mbps: left * 8.0 / secs / 1e6,
                rate_limit_mbps: rate,
                dirty_rate_pages_s: dirty as f64 / secs,
                throttle_pct,
            };
            events(SourceEvent::Round(&r));
            let decision = policy::decide(
                self.policy,
                &Progress {
                    rounds: r.round + 1,
                    dirty_pages: dirty,
                    prev_dirty_pages: prev_dirty,
                    dirty_rate_mbps: r.dirty_rate_pages_s * PAGE_SIZE as f64 * 8.0 / 1e6,
                    last_rate: rate,
                    measured_mbps: if r.bytes > 0 { r.rate_mbps } else { f64::INFINITY },
                    sent_bytes,
                    ram_bytes: self.stats.ram_bytes,
                    elapsed_ms: ms_between(start, t1),
                },
            );
            let round = r.round;
            self.stats.rounds.push(r);
            if self.vmm.exited().is_some() {
                return Err(fail(Cause::GuestStopped));
            }
            prev_dirty = Some(dirty);
            if let (Some(t), Decision::Continue(_)) = (&self.opts.throttle, &decision) {
                if throttler.has_workers() {
                    let next = t.next(throttle, sent.pages, dirty);
                    if next != throttle {
                        tracing::info!(round, pct = next, "auto-converge: throttling the worker vCPUs");
                    }
                    throttle = next;
                    throttler.set(throttle.unwrap_or(0.0));
                }
            }
            match decision {
                Decision::Continue(next) => rate = next,
                Decision::StopAndCopy(why) => {
                    self.stats.stop_reason = Some(why);
                    // Throttled until the pause, as in QEMU.
                    self.throttler = Some(throttler);
                    return Ok(map);
                }
                Decision::Cancel(why) => return Err(fail(Cause::Cancelled(why))),
            }
        }
    }

    /// Phase 3: pause, send the last dirty pages, the state, the digest
    /// (`--verify`) and Complete.
    fn stop_and_copy(
        &mut self,
        link: &mut Link,
        mut map: Vec<u64>,
        events: EventFn,
    ) -> Result<Switchover, MigrationError> {
        let fail = MigrationError::StopAndCopy;
        let wire = |e| fail(Cause::Wire(WireError::Io(e)));
        let m = self.vmm.machine();
        let pause = mono_ns();
        // From the pause until Ready: abort and resume past the deadline.
        self.deadline.set_in(self.opts.stop_deadline);
        self.paused = true;
        self.vmm.pause().map_err(|e| fail(e.into()))?;
        self.throttler = None;
        events(SourceEvent::Paused);
        let paused = mono_ns();
        merge_into(&mut map, &self.sync_dirty().map_err(|e| fail(e.into()))?);
        let fin = link.tx.send(&map, None).map_err(wire)?;
        self.stats.final_pages = fin.pages;
        self.stats.zero_pages += fin.zero;
        let copied = mono_ns();
        let st = state::save(m).map_err(|e| fail(e.into()))?;
        link.tx.w.send_json(Kind::State, &st).map_err(wire)?;
        let mut verify = (0, 0);
        if self.opts.verify {
            let v0 = mono_ns();
            // SAFETY: the vCPUs are paused; only the VMM touches RAM now.
            let ram = unsafe { memory::as_slice(&m.vm.mem) }.map_err(|e| fail(e.into()))?;
            link.tx.w.send_json(Kind::Digest, &Digest::of(ram, 2)).map_err(wire)?;
            verify = (v0, mono_ns());
        }
        let complete = Complete { pause_requested_ns: pause, sent_ns: mono_ns() };
        link.tx.w.send_json(Kind::Complete, &complete).map_err(wire)?;
        link.tx.w.flush().map_err(wire)?;
        self.stats.transferred_bytes = link.tx.w.bytes();
        // The destination may restore before this thread returns from the
        // flush; the Complete frame's own timestamp always comes first.
        Ok(Switchover { pause, paused, copied, sent: complete.sent_ns, verify })
    }

    /// Phase 4, commitment: Ready, then Commit, then Started; only Started
    /// releases the VM. A failure before Commit resumes it; after Commit
    /// the outcome is indeterminate and the VM stays paused.
    fn commit(&mut self, link: &mut Link, sw: Switchover) -> Result<(), MigrationError> {
        let fail = MigrationError::Commitment;
        let ready: Ready = link.reader.recv_json(Kind::Ready).map_err(|e| fail(peer(e)))?;
        let src_verify_ms = ms_between(sw.verify.0, sw.verify.1);
        let dst_verify_ms = ms_between(ready.verify_start_ns, ready.verify_end_ns);
        if self.opts.verify {
            self.stats.verify = Some(VerifyStats {
                ok: ready.digest_ok == Some(true),
                source_ms: src_verify_ms,
                destination_ms: dst_verify_ms,
            });
        }
        if !ready.ok {
            let why = ready.reason.as_deref().map_or_else(|| "no reason given".to_owned(), escape);
            return Err(fail(Cause::NotStarted(why)));
        }
        if ready.pages_covered != ready.ram_pages {
            return Err(fail(Cause::NotStarted(format!(
                "the destination holds {} of {} pages",
                ready.pages_covered, ready.ram_pages
            ))));
        }
        if self.opts.verify && ready.digest_ok != Some(true) {
            return Err(fail(Cause::NotStarted("the destination did not check the RAM digest".into())));
        }
        self.deadline.clear();
        self.committed = true;
        let wire = |e| fail(Cause::Wire(WireError::Io(e)));
        // Frames that reached the TAP since the state was saved go along.
        let rx_frames = self.vmm.machine().net.as_ref().map(|n| n.take_arrived()).unwrap_or_default();
        if !rx_frames.is_empty() {
            tracing::debug!(frames = rx_frames.len(), "carrying late frames with the Commit");
        }
        link.tx.w.send_json(Kind::Commit, &Commit { sent_ns: mono_ns(), rx_frames }).map_err(wire)?;
        link.tx.w.flush().map_err(wire)?;
        self.deadline.set_in(STARTED_TIMEOUT);
        let started: Started = link.reader.recv_json(Kind::Started).map_err(|e| fail(peer(e)))?;
        self.deadline.clear();
        self.stats.thread_priorities.get_or_insert_with(ThreadPriorities::default).destination = started.priorities;
        if !started.ok {
            let why = started.reason.as_deref().map_or_else(|| "no reason given".to_owned(), escape);
            return Err(fail(Cause::NotStarted(why)));
        }
        self.paused = false;
        let s = &mut self.stats;
        s.outcome = Outcome::Completed;
        s.downtime_breakdown = Some(DowntimeBreakdown {
            pause_ms: ms_between(sw.pause, sw.paused),
            final_copy_ms: ms_between(sw.paused, sw.copied),
            state_ms: ms_between(sw.copied, sw.sent) - src_verify_ms,
            restore_ms: ms_between(sw.sent, ready.restored_ns) - dst_verify_ms,
            resume_ms: ms_between(ready.restored_ns, started.first_run_ns),
        });
        let total_pause = ms_between(sw.pause, started.first_run_ns);
        s.paused_total_ms = Some(total_pause);
        s.downtime_ms = Some(total_pause - src_verify_ms - dst_verify_ms);
        s.paused_at_ms = Some(ms_between(s.start_mono_ns, sw.pause));
        s.resumed_at_ms = Some(ms_between(s.start_mono_ns, started.first_run_ns));
        Ok(())
    }
}

/// A reply that did not come: the peer's own Abort keeps its reason.
fn peer(e: WireError) -> Cause {
    match e {
        WireError::Aborted(reason) => Cause::Aborted(escape(&reason)),
        other => Cause::Wire(other),
    }
}
