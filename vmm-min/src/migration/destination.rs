//! The receiving side, one function per phase (see [`super::protocol`] for
//! the message sequence): [`accept`] a source that says Hello, [`setup`]
//! the VM it offers, [`receive_memory`] its RAM and state,
//! [`verify_and_restore`] it paused and say Ready, then on Commit
//! [`start`] it. Any malformed, truncated, corrupted or incomplete stream
//! ends with an error before a single guest instruction runs here; so does
//! a missing Commit.

use super::digest::Digest;
use super::error::{Cause, MigrationError};
use super::protocol::{escape, Abort, Commit, Complete, Hello, HelloReply, Ready, Started};
use super::state::{self, MigrationState};
use super::timed::{Deadline, TimedStream};
use super::tls::{Halves, Shared, TlsCredentials};
use super::wire::{pages, parse_json, FrameReader, FrameWriter, Kind, WireError};
use crate::abi::PAGE_SIZE;
use crate::config::VmConfig;
use crate::guest_image;
use crate::machine::Machine;
use crate::memory;
use crate::vmm::{new_machine_with, Vmm};
use results::clock::mono_ns;
use std::io::{BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

const PAGE: usize = PAGE_SIZE as usize;
/// How long a new connection may take to send its Hello before the
/// destination drops it and listens again.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the destination waits for Commit after Ready.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a started guest may take to show it executes.
const RUN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long Started waits for the device thread's priority record.
const RECORD_WAIT: Duration = Duration::from_millis(100);

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
    /// The longest a whole incoming migration may take, from the Hello.
    pub deadline: Duration,
    /// The TAP this side gives an incoming VM's NIC.
    pub tap: Option<String>,
    /// Mutual TLS on the migration stream.
    pub tls: Option<TlsCredentials>,
}

/// What an incoming migration did.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct IncomingReport {
    /// Pages received, zero markers included.
    pub pages: u64,
    /// Frames read from the stream.
    pub frames: u64,
    /// Whether a digest was checked.
    pub verified: bool,
}

/// The connection to the source.
pub struct Conn {
    reader: FrameReader<BufReader<Box<dyn Read>>>,
    out: FrameWriter<Box<dyn Write>>,
    deadline: Deadline,
}

impl Conn {
    /// Best effort: tells the source why this side gives up, so that it
    /// resumes its VM at once.
    fn abort(&mut self, reason: &str) {
        let _ = self.out.send_json(Kind::Abort, &Abort { reason: reason.to_owned() });
        let _ = self.out.flush();
    }
}

/// Who wants to know how an incoming migration is doing (the control
/// socket's service), told at once, so that nobody who hears "Started"
/// from the source can find this side still "incoming".
pub trait IncomingHooks {
    /// A source said Hello: a VM is on its way.
    fn receiving(&self) {}
    /// The VM runs here (called before the source is told so).
    fn running(&self, _vmm: &Arc<Vmm>) {}
}

/// No one is listening.
impl IncomingHooks for () {}

/// Accepts one migration on `listener` and returns the running VM.
pub fn receive(
    listener: &TcpListener,
    opts: &IncomingOptions,
    hooks: &dyn IncomingHooks,
) -> Result<(Arc<Vmm>, IncomingReport), MigrationError> {
    // Receiving must keep pace with the source, whatever else runs here;
    // raised before the wait, so that the Hello is answered at once.
    let priority = crate::run_control::Priority::raise(results::ThreadRole::MigrationReceive);
    // The TAP is opened now, before any source connects, not when the VM
    // is built: a bridge forwards a new port's frames only once the
    // kernel's linkwatch work has seen its carrier, and on a busy host
    // that came late. A TAP opened at build time then dropped every frame
    // the resumed guest sent (captured: for over 190 ms after the switch),
    // and each connection waited for smoltcp's 1 s minimum RTO.
    let tap = match &opts.tap {
        Some(name) => Some(
            crate::devices::tap::Tap::open(name)
                .map_err(|e| MigrationError::Setup(Cause::io("opening the incoming VM's TAP")(e)))?,
        ),
        None => None,
    };
    let (mut conn, hello) = accept(listener, opts)?;
    hooks.receiving();
    let result = setup(&mut conn, &hello, opts, tap).and_then(|(building, mem, config)| {
        let incoming = receive_memory(&mut conn, &mem, config.memory / PAGE_SIZE, hello.verify);
        let machine = building.finish();
        let incoming = incoming?;
        let machine = machine?;
        verify_and_restore(&mut conn, &machine, &incoming)?;
        let (commit_ns, commit) = wait_commit(&mut conn)?;
        announce_before_start(&machine, commit.rx_frames);
        let vmm = start(&mut conn, machine, config, commit_ns, hooks, priority.record())?;
        Ok((vmm, incoming.report))
    });
    if let Err(e) = &result {
        if !matches!(e, MigrationError::Commitment(_)) {
            conn.deadline.clear();
            conn.abort(&e.to_string());
        }
    }
    result
}

/// Phase 1a: accepts connections until one sends a valid Hello in time; a
/// stray or silent connection is dropped and the destination listens on.
pub fn accept(listener: &TcpListener, opts: &IncomingOptions) -> Result<(Conn, Hello), MigrationError> {
    let fail = |what| move |e| MigrationError::Setup(Cause::io(what)(e));
    loop {
        let (stream, peer) = listener.accept().map_err(fail("accepting the migration connection"))?;
        let _ = stream.set_nodelay(true);
        let deadline = Deadline::none();
        deadline.set_in(HELLO_TIMEOUT);
        let timed = |s| TimedStream::new(s, opts.frame_timeout, deadline.clone());
        let (read_half, write_half): Halves = match &opts.tls {
            None => {
                let half = stream.try_clone().map_err(fail("cloning the socket"))?;
                (Box::new(timed(stream)), Box::new(timed(half)))
            }
            Some(creds) => {
                let session = creds.server().map_err(|e| MigrationError::Setup(e.into()))?;
                let (r, w) = Shared::new(rustls::StreamOwned::new(session, timed(stream)));
                (Box::new(r), Box::new(w))
            }
        };
        let out = FrameWriter::new(write_half);
        // Small enough that page batches (about 1 MiB) bypass it and are
        // read straight into the frame buffer.
        let mut reader = FrameReader::new(BufReader::with_capacity(64 << 10, read_half));
        match reader.recv_json::<Hello>(Kind::Hello) {
            Ok(hello) => {
                tracing::info!(%peer, "incoming migration");
                deadline.set_in(opts.deadline);
                return Ok((Conn { reader, out, deadline }, hello));
            }
            Err(e) => tracing::warn!(%peer, "ignored a connection without a valid Hello: {e}"),
        }
    }
}

/// Why this destination will not take the VM that `hello` offers.
fn refusal(hello: &Hello, config: &VmConfig, opts: &IncomingOptions) -> Option<String> {
    if hello.wire_version != super::wire::VERSION {
        Some(format!("wire version {} is not {}", hello.wire_version, super::wire::VERSION))
    } else if hello.image_fingerprint != guest_image::fingerprint() {
        Some("the source runs a different guest image".into())
    } else if let Some(m) = opts.memory.filter(|&m| m != config.memory) {
        Some(format!(
            "memory mismatch: the source VM has {} bytes, this destination was started for {m}",
            config.memory
        ))
    } else if let Some(v) = opts.vcpus.filter(|&v| v != config.vcpus) {
        Some(format!("vCPU mismatch: the source VM has {}, this destination was started for {v}", config.vcpus))
    } else if config.net.is_some() && opts.tap.is_none() {
        Some("the VM has a NIC, but this destination has no TAP for it (start it with --net-run-id)".into())
    } else {
        None
    }
}

/// The VM a destination builds while the pages arrive: registering guest
/// RAM with KVM (`KVM_SET_USER_MEMORY_REGION`) took 4–13 ms, and once
/// 514 ms, on a 2-core host whose other VM was busy, and that wait was the
/// migration's setup time; now it overlaps round 0.
struct Building(std::thread::JoinHandle<crate::Result<Machine>>);

impl Building {
    /// Starts building in a thread of its own, the NIC on `tap`.
    fn start(
        config: &VmConfig,
        console: bool,
        mem: memory::GuestMem,
        tap: Option<crate::devices::tap::Tap>,
    ) -> std::io::Result<Building> {
        let config = config.clone();
        std::thread::Builder::new()
            .name("vm-build".into())
            .spawn(move || {
                let t0 = mono_ns();
                let m = new_machine_with(&config, console, mem, tap);
                tracing::info!(build_ms = results::clock::ms_between(t0, mono_ns()), "destination: VM built");
                m
            })
            .map(Building)
    }

    /// Waits for the VM.
    fn finish(self) -> Result<Machine, MigrationError> {
        let fail = |why: String| MigrationError::Setup(Cause::NotStarted(format!("cannot build the VM here: {why}")));
        match self.0.join() {
            Ok(Ok(m)) => Ok(m),
            Ok(Err(e)) => Err(fail(e.to_string())),
            Err(_) => Err(fail("the build thread panicked".into())),
        }
    }
}

/// Phase 1b: checks the offered VM, makes its RAM and starts building an
/// empty VM like it (see [`Building`]).
fn setup(
    conn: &mut Conn,
    hello: &Hello,
    opts: &IncomingOptions,
    tap: Option<crate::devices::tap::Tap>,
) -> Result<(Building, memory::GuestMem, VmConfig), MigrationError> {
    let fail = MigrationError::Setup;
    let mut config = hello.config.clone();
    if let (Some(net), Some(tap)) = (&mut config.net, &opts.tap) {
        net.tap = tap.clone();
    }
    let built = match refusal(hello, &config, opts) {
        Some(reason) => Err(reason),
        None => memory::create(config.memory, config.backend)
            .map_err(|e| format!("cannot make the VM's RAM here: {e}"))
            .and_then(|mem| {
                let building = Building::start(&config, opts.console, mem.clone(), tap)
                    .map_err(|e| format!("cannot start building the VM: {e}"))?;
                Ok((building, mem))
            }),
    };
    let reply = match &built {
        Ok(_) => HelloReply { ok: true, reason: None },
        Err(reason) => HelloReply { ok: false, reason: Some(reason.clone()) },
    };
    let send = |e| fail(Cause::io("replying to the source")(e));
    conn.out.send_json(Kind::HelloReply, &reply).map_err(send)?;
    conn.out.flush().map_err(send)?;
    let (building, mem) = built.map_err(|reason| fail(Cause::Refused(reason)))?;
    Ok((building, mem, config))
}

/// Everything the source sent up to `Complete`.
struct Incoming {
    state: MigrationState,
    digest: Option<Digest>,
    complete_ns: u64,
    /// Pages received at least once, and in all.
    covered: (u64, u64),
    report: IncomingReport,
}

/// Phases 2 and 3 as this side sees them: pages, state and digest until
/// `Complete` (the destination cannot tell the source's rounds apart).
fn receive_memory(
    conn: &mut Conn,
    mem: &memory::GuestMem,
    ram_pages: u64,
    verify: bool,
) -> Result<Incoming, MigrationError> {
    let fail = MigrationError::PreCopy;
    let base = memory::host_base(mem).map_err(|e| fail(e.into()))?;
    // SAFETY: `base` maps this VM's `ram_pages` pages; no vCPU or device of
    // the VM runs yet (it is still being built), so nothing else touches
    // them while `ram` lives.
    let mut ram = unsafe { RamWriter::new(base, ram_pages) };
    let mut report = IncomingReport { pages: 0, frames: 0, verified: false };
    let (mut saved, mut digest) = (None, None);
    loop {
        let (kind, payload) = conn.reader.recv().map_err(|e| fail(e.into()))?;
        report.frames += 1;
        match kind {
            Kind::Pages => {
                let (entries, data) = pages::decode(payload, ram_pages).map_err(|e| fail(e.into()))?;
                report.pages += entries.len() as u64;
                ram.write_batch(&entries, data);
            }
            Kind::ZeroMap => {
                let map = pages::decode_zero_map(payload, ram_pages).map_err(|e| fail(e.into()))?;
                report.pages += map.iter().map(|w| u64::from(w.count_ones())).sum::<u64>();
                ram.zero_map(&map);
            }
            Kind::State => saved = Some(parse_json::<MigrationState>(payload, kind).map_err(|e| fail(e.into()))?),
            Kind::Digest => digest = Some(parse_json::<Digest>(payload, kind).map_err(|e| fail(e.into()))?),
            Kind::Complete => {
                let complete: Complete = parse_json(payload, kind).map_err(|e| fail(e.into()))?;
                tracing::debug!(pause_requested_ns = complete.pause_requested_ns, "migration complete frame");
                let missing = |what: &str| {
                    MigrationError::StopAndCopy(WireError::Malformed(format!("no {what} frame before Complete")).into())
                };
                let state = saved.ok_or_else(|| missing("State"))?;
                if verify && digest.is_none() {
                    return Err(missing("Digest"));
                }
                let covered = (ram.covered(), ram_pages);
                return Ok(Incoming { state, digest, complete_ns: mono_ns(), covered, report });
            }
            Kind::Abort => {
                let abort: Abort = parse_json(payload, kind).map_err(|e| fail(e.into()))?;
                return Err(fail(Cause::Aborted(escape(&abort.reason))));
            }
            other => return Err(fail(WireError::Malformed(format!("unexpected {other:?} frame")).into())),
        }
    }
}

/// Phase 3 on this side: checks that every page came and the digest
/// before anything runs, restores the state into the paused VM, and says
/// Ready (or why not).
fn verify_and_restore(conn: &mut Conn, machine: &Machine, incoming: &Incoming) -> Result<(), MigrationError> {
    let fail = MigrationError::StopAndCopy;
    let (covered, ram_pages) = incoming.covered;
    let mut ready =
        Ready { complete_ns: incoming.complete_ns, pages_covered: covered, ram_pages, ..Default::default() };
    ready.verify_start_ns = mono_ns();
    let complete = if covered == ram_pages {
        Ok(())
    } else {
        Err(Cause::NotStarted(format!("only {covered} of {ram_pages} guest pages arrived")))
    };
    let checked = complete.and_then(|()| match &incoming.digest {
        None => Ok(()),
        Some(want) => {
            // SAFETY: no vCPU of this VM has run yet; only this thread touches RAM.
            let ram = unsafe { memory::as_slice(&machine.vm.mem) }.map_err(Cause::from)?;
            match want.first_mismatch(&Digest::of(ram, 2)) {
                None => Ok(()),
                Some(off) => Err(Cause::DigestMismatch(off)),
            }
        }
    });
    ready.digest_ok = incoming.digest.as_ref().map(|_| checked.is_ok());
    ready.verify_end_ns = mono_ns();
    let restored = checked.and_then(|()| state::restore(machine, &incoming.state).map_err(Cause::from));
    ready.restored_ns = mono_ns();
    if restored.is_ok() {
        announce_before_ready(machine);
    }
    ready.ok = restored.is_ok();
    if let Err(cause) = &restored {
        ready.reason = Some(cause.to_string());
    }
    let sent = conn.out.send_json(Kind::Ready, &ready).and_then(|()| conn.out.flush());
    restored.map_err(fail)?;
    sent.map_err(|e| fail(Cause::io("sending Ready")(e)))
}

/// Once the VM is restored, before Ready: tells the bridge where the guest
/// will run (a gratuitous ARP from the VMM). From here frames for the guest
/// reach this TAP and wait in its kernel queue (the device reads it only
/// once the VM starts), while the source carries what reached its own TAP
/// until it sends Commit; announcing only after Commit left a window in
/// which frames reached the source's TAP after its last read and were lost
/// (a lost ACK stalls the guest's smoltcp for its 1 s minimum RTO). If the
/// source then resumes instead, it announces itself again.
fn announce_before_ready(machine: &Machine) {
    let Some(net) = &machine.net else { return };
    net.discard_queued();
    if let Err(e) = net.announce() {
        tracing::warn!("gratuitous ARP from the VMM failed: {e}");
    }
}

/// After Commit, before the vCPUs run: queues the frames that came with the
/// Commit for the guest (after those in the state, before the TAP's), and
/// asks the guest's stack to announce itself as soon as it runs.
fn announce_before_start(machine: &Machine, frames: Vec<crate::devices::net::Frame>) {
    let Some(net) = &machine.net else { return };
    net.inject(frames);
    if let Err(e) = crate::devices::net::request_guest_announce(machine) {
        tracing::warn!("asking the guest to announce itself failed: {e}");
    }
}

/// Waits for the source's Commit; without it the VM here never runs.
fn wait_commit(conn: &mut Conn) -> Result<(u64, Commit), MigrationError> {
    conn.deadline.set_in(COMMIT_TIMEOUT);
    let commit: Result<Commit, _> = conn.reader.recv_json(Kind::Commit);
    let commit_ns = mono_ns();
    conn.deadline.clear();
    match commit {
        Ok(c) => Ok((commit_ns, c)),
        Err(WireError::Aborted(reason)) => Err(MigrationError::StopAndCopy(Cause::Aborted(escape(&reason)))),
        Err(e) => Err(MigrationError::StopAndCopy(Cause::NotStarted(format!(
            "no Commit from the source ({e}); the VM here never ran and is dropped"
        )))),
    }
}

/// Phase 4: the VM is ours now. Runs the guest, waits until it executes,
/// announces where it is, and says Started. If the guest does not execute,
/// it is stopped here and the source is told; if Started cannot be sent,
/// the guest runs on here (the source, committed, will not resume it).
fn start(
    conn: &mut Conn,
    machine: Machine,
    config: VmConfig,
    commit_ns: u64,
    hooks: &dyn IncomingHooks,
    receiving: &results::ThreadPriority,
) -> Result<Arc<Vmm>, MigrationError> {
    let vmm = Arc::new(Vmm::start(machine, config));
    let mut started = Started { commit_ns, ..Default::default() };
    started.first_run_ns = vmm.wait_first_run(RUN_TIMEOUT).unwrap_or_else(mono_ns);
    let executing = wait_executing(&vmm);
    // The device thread records its priority as it starts, which a guest
    // that executes does not prove; it is outside the downtime by now.
    let t = std::time::Instant::now();
    while vmm.machine().net.as_ref().is_some_and(|n| n.priority().is_none()) && t.elapsed() < RECORD_WAIT {
        std::thread::sleep(Duration::from_micros(100));
    }
    started.priorities = vmm.thread_priorities();
    started.priorities.push(receiving.clone());
    match executing {
        Ok(t) => started.running_ns = t,
        Err(why) => {
            vmm.join();
            started.reason = Some(why.clone());
            let _ = conn.out.send_json(Kind::Started, &started).and_then(|()| conn.out.flush());
            return Err(MigrationError::Commitment(Cause::NotStarted(why)));
        }
    }
    started.ok = true;
    hooks.running(&vmm);
    if let Err(e) = conn.out.send_json(Kind::Started, &started).and_then(|()| conn.out.flush()) {
        tracing::warn!("could not tell the source that the guest runs here ({e}); it runs on here");
    }
    Ok(vmm)
}

/// Waits until the restored guest's heartbeat moves: proof that it executes
/// here. Returns when (CLOCK_MONOTONIC ns), or why not.
fn wait_executing(vmm: &Vmm) -> Result<u64, String> {
    let before = vmm.heartbeat(0);
    let t = std::time::Instant::now();
    while t.elapsed() < RUN_TIMEOUT {
        if let Some(exit) = vmm.exited() {
            return Err(format!("the guest stopped as it resumed here: {exit}"));
        }
        if vmm.heartbeat(0) != before {
            return Ok(mono_ns());
        }
        std::thread::sleep(Duration::from_micros(50));
    }
    Err(format!("the guest showed no progress within {RUN_TIMEOUT:?} of resuming here"))
}

/// Writes incoming pages into guest RAM, directly rather than through
/// vm-memory, so that they are not marked as the VMM's own writes.
struct RamWriter {
    base: *mut u8,
    /// Pages written so far: RAM starts zero, so a zero marker for a page
    /// never written needs no work at all.
    written: Vec<u64>,
    /// Pages received at least once, data or zero marker.
    seen: Vec<u64>,
}

impl RamWriter {
    /// # Safety
    /// `base` must map `ram_pages` writable pages that nothing else touches
    /// while the writer lives.
    unsafe fn new(base: *mut u8, ram_pages: u64) -> Self {
        let words = ram_pages.div_ceil(64) as usize;
        Self { base, written: vec![0u64; words], seen: vec![0u64; words] }
    }

    /// Pages received at least once.
    fn covered(&self) -> u64 {
        self.seen.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// Marks the pages of a decoded zero map received as zeroes (checked by
    /// [`pages::decode_zero_map`]: one bit per page, none past the last).
    fn zero_map(&mut self, map: &[u64]) {
        for (word, &m) in map.iter().enumerate() {
            self.seen[word] |= m;
            let mut stale = self.written[word] & m;
            self.written[word] &= !m;
            while stale != 0 {
                let pfn = word * 64 + stale.trailing_zeros() as usize;
                stale &= stale - 1;
                // SAFETY: the map has a bit only for pages inside the
                // mapping `new` was given.
                unsafe { std::ptr::write_bytes(self.base.add(pfn * PAGE), 0, PAGE) };
            }
        }
    }

    /// Writes one decoded batch (entries checked by [`pages::decode`]).
    fn write_batch(&mut self, entries: &[u64], data: &[u8]) {
        let mut pages_data = data.chunks_exact(PAGE);
        for &e in entries {
            let pfn = e & !pages::ZERO_PAGE;
            let (word, bit) = ((pfn / 64) as usize, 1u64 << (pfn % 64));
            self.seen[word] |= bit;
            // SAFETY (both blocks): `decode` checked pfn < ram_pages, so the
            // page lies inside the mapping `new` was given.
            let dst = unsafe { self.base.add(pfn as usize * PAGE) };
            if e & pages::ZERO_PAGE != 0 {
                if self.written[word] & bit != 0 {
                    self.written[word] &= !bit;
                    unsafe { std::ptr::write_bytes(dst, 0, PAGE) };
                }
            } else if let Some(src) = pages_data.next() {
                self.written[word] |= bit;
                unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst, PAGE) };
            }
        }
    }
}
