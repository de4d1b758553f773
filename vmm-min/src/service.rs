//! The served VM behind a control socket: what `status`, `pause`, `resume`,
//! `verify`, `migrate` and `quit` do, for a VMM that boots a guest or
//! receives one. The process around it (`migbench run`, `migbench vmm`)
//! decides when to stop; this module owns the answers.

use crate::control::protocol::{MigrationProgress, Phase, Reply, Request, Resolution, Status};
use crate::control::Handler;
use crate::migration::tls::TlsCredentials;
use crate::migration::{self, SourceEvent, SourceOptions};
use crate::sync::lock;
use crate::vmm::Vmm;
use results::{MigrationStats, Outcome, RoundStats};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long `verify` waits for the guest's answer.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the served VM is.
enum Served {
    Incoming { listen: String },
    Receiving,
    Running(Arc<Vmm>),
}

/// A VM served over the control socket.
pub struct VmService {
    served: Mutex<Served>,
    quit: AtomicBool,
    paused: AtomicBool,
    migration_paused: AtomicBool,
    /// Held by the request that owns the VM: a migration, a pause, a resume.
    migrating: Mutex<()>,
    in_migration: AtomicBool,
    /// A migration committed the VM and never heard back.
    indeterminate: AtomicBool,
    progress: Mutex<Option<MigrationProgress>>,
    migrated: Mutex<Option<MigrationStats>>,
    /// Called after each pre-copy round (the CLI prints a line).
    on_round: Box<dyn Fn(&RoundStats) + Send + Sync>,
    /// Credentials for migrating over mutual TLS.
    tls: Option<TlsCredentials>,
}

impl VmService {
    fn new(served: Served, on_round: Box<dyn Fn(&RoundStats) + Send + Sync>, tls: Option<TlsCredentials>) -> Arc<Self> {
        Arc::new(Self {
            served: Mutex::new(served),
            quit: AtomicBool::new(false),
            paused: AtomicBool::new(false),
            migration_paused: AtomicBool::new(false),
            migrating: Mutex::new(()),
            in_migration: AtomicBool::new(false),
            indeterminate: AtomicBool::new(false),
            progress: Mutex::new(None),
            migrated: Mutex::new(None),
            on_round,
            tls,
        })
    }

    /// Serves a running VM, which migrates over TLS when `tls` is given.
    pub fn running(
        vmm: Arc<Vmm>,
        on_round: Box<dyn Fn(&RoundStats) + Send + Sync>,
        tls: Option<TlsCredentials>,
    ) -> Arc<Self> {
        Self::new(Served::Running(vmm), on_round, tls)
    }

    /// Serves a destination that listens on `listen` for a source.
    pub fn incoming(listen: String) -> Arc<Self> {
        Self::new(Served::Incoming { listen }, Box::new(|_| {}), None)
    }

    /// A source connected: the VM is on its way.
    pub fn set_receiving(&self) {
        *lock(&self.served) = Served::Receiving;
    }

    /// The VM runs here now.
    pub fn set_running(&self, vmm: Arc<Vmm>) {
        *lock(&self.served) = Served::Running(vmm);
    }

    /// The request handler for a [`crate::control::ControlServer`].
    pub fn handler(self: &Arc<Self>) -> Handler {
        let me = self.clone();
        Arc::new(move |req| me.handle(req))
    }

    /// Whether `quit` was asked for, or the VM migrated away.
    pub fn quit_requested(&self) -> bool {
        self.quit.load(Ordering::Acquire)
    }

    /// Whether the VM must be kept whatever else says stop (a `--duration`):
    /// a migration's outcome is indeterminate and only `resolve` may end it.
    pub fn must_stay(&self) -> bool {
        self.indeterminate.load(Ordering::Acquire)
    }

    /// The statistics of the last outgoing migration.
    pub fn migration(&self) -> Option<MigrationStats> {
        lock(&self.migrated).clone()
    }

    fn vmm(&self) -> Option<Arc<Vmm>> {
        match &*lock(&self.served) {
            Served::Running(v) => Some(v.clone()),
            _ => None,
        }
    }

    /// Answers one request.
    pub fn handle(&self, req: Request) -> Reply {
        if let Request::Status = req {
            return Reply::Status(self.status());
        }
        if let Request::Quit = req {
            if self.must_stay() {
                return Reply::error(
                    "a migration is indeterminate: the destination may run the guest. Look there, then send \
                     {\"cmd\":\"resolve\",\"action\":\"resume\"} or {\"cmd\":\"resolve\",\"action\":\"discard\"}",
                );
            }
            self.quit.store(true, Ordering::Release);
            return Reply::Quitting;
        }
        let Some(vmm) = self.vmm() else {
            return Reply::error("no VM runs here yet: this destination is waiting for a source");
        };
        match req {
            Request::Pause => self.pause(&vmm),
            Request::Resume => self.resume(&vmm),
            Request::Verify => verify(&vmm),
            Request::Migrate { to, policy, verify, stop_deadline_ms, throttle } => {
                let mut opts = SourceOptions { verify, tls: self.tls.clone(), throttle, ..SourceOptions::default() };
                if let Some(ms) = stop_deadline_ms {
                    if !(1..=3_600_000).contains(&ms) {
                        return Reply::error(format!("stop_deadline_ms {ms} is out of range: 1 to 3600000"));
                    }
                    opts.stop_deadline = Duration::from_millis(ms);
                }
                self.migrate(&vmm, &to, &policy, &opts)
            }
            Request::Resolve { action } => self.resolve(&vmm, action),
            Request::Status | Request::Quit => unreachable!("answered above"),
        }
    }

    fn status(&self) -> Status {
        let migrating = self.in_migration.load(Ordering::Acquire);
        let mut net = None;
        let (phase, vcpus, heartbeat, workload) = match &*lock(&self.served) {
            Served::Incoming { listen } => (Phase::Incoming { listen: listen.clone() }, 0, 0, None),
            Served::Receiving => (Phase::Receiving, 0, 0, None),
            Served::Running(v) => {
                let phase = if v.exited().is_some() {
                    Phase::Exited
                } else if self.must_stay() {
                    Phase::Indeterminate
                } else if self.quit_requested() && lock(&self.migrated).is_some() {
                    Phase::Migrated
                } else if migrating {
                    Phase::Migrating
                } else {
                    Phase::Running
                };
                net = v.machine().net.as_ref().map(|n| n.stats());
                (phase, v.config().vcpus, v.heartbeat(0), Some(v.config().workload.to_string()))
            }
        };
        Status {
            phase,
            paused: self.paused.load(Ordering::Acquire),
            migration_paused: self.migration_paused.load(Ordering::Acquire),
            vcpus,
            heartbeat,
            workload,
            migration: if migrating { lock(&self.progress).clone() } else { None },
            net,
        }
    }

    fn pause(&self, vmm: &Vmm) -> Reply {
        let Ok(_owner) = self.migrating.try_lock() else {
            return Reply::error("a migration owns the VM; wait for it to end");
        };
        match vmm.pause() {
            Ok(d) => {
                self.paused.store(true, Ordering::Release);
                Reply::Paused { pause_ms: d.as_secs_f64() * 1e3 }
            }
            Err(e) => Reply::error(e.to_string()),
        }
    }

    fn resume(&self, vmm: &Vmm) -> Reply {
        let Ok(_owner) = self.migrating.try_lock() else {
            return Reply::error("a migration owns the VM; it resumes the VM itself if it fails");
        };
        if !self.paused.load(Ordering::Acquire) {
            return Reply::error("the VM is not paused");
        }
        vmm.resume();
        self.paused.store(false, Ordering::Release);
        Reply::Resumed
    }

    fn resolve(&self, vmm: &Vmm, action: Resolution) -> Reply {
        if !self.must_stay() {
            return Reply::error("there is nothing to resolve: no migration is indeterminate");
        }
        match action {
            Resolution::Resume => vmm.resume_after_migration(),
            Resolution::Discard => self.quit.store(true, Ordering::Release),
        }
        self.migration_paused.store(false, Ordering::Release);
        self.indeterminate.store(false, Ordering::Release);
        Reply::Resolved { action }
    }

    fn migrate(&self, vmm: &Vmm, to: &str, policy: &results::Policy, opts: &SourceOptions) -> Reply {
        let Ok(_owner) = self.migrating.try_lock() else {
            return Reply::error("a migration is already running");
        };
        if self.must_stay() {
            return Reply::error("a migration is indeterminate; resolve it first");
        }
        if self.paused.load(Ordering::Acquire) {
            return Reply::error("the VM is paused; resume it before migrating");
        }
        if let Err(e) = policy.validate() {
            return Reply::error(e.to_string());
        }
        *lock(&self.progress) = Some(MigrationProgress { rounds: 0, dirty_pages: 0, rate_mbps: 0.0, sent_bytes: 0 });
        let mut events = |ev: SourceEvent| match ev {
            SourceEvent::Round(r) => {
                (self.on_round)(r);
                if let Some(p) = lock(&self.progress).as_mut() {
                    p.rounds = r.round + 1;
                    p.dirty_pages = r.dirty_pages;
                    p.rate_mbps = r.rate_mbps;
                    p.sent_bytes += r.bytes;
                }
            }
            SourceEvent::Paused => self.migration_paused.store(true, Ordering::Release),
            SourceEvent::Resumed => self.migration_paused.store(false, Ordering::Release),
            SourceEvent::Indeterminate => self.indeterminate.store(true, Ordering::Release),
        };
        self.in_migration.store(true, Ordering::Release);
        let stats = migration::migrate(vmm, to, policy, opts, &mut events);
        if !self.must_stay() {
            self.migration_paused.store(false, Ordering::Release);
        }
        self.in_migration.store(false, Ordering::Release);
        *lock(&self.migrated) = Some(stats.clone());
        if stats.outcome == Outcome::Completed {
            self.quit.store(true, Ordering::Release);
        }
        Reply::Migrated(Box::new(stats))
    }
}

impl crate::migration::destination::IncomingHooks for VmService {
    fn receiving(&self) {
        self.set_receiving();
    }

    fn running(&self, vmm: &Arc<Vmm>) {
        self.set_running(vmm.clone());
    }
}

fn verify(vmm: &Vmm) -> Reply {
    match vmm.post_request(crate::abi::request::VERIFY).map(|seq| vmm.wait_response(seq, VERIFY_TIMEOUT)) {
        Ok(Some(bad_pages)) => Reply::Verified { bad_pages },
        Ok(None) => Reply::error(format!("the guest did not answer the verify request within {VERIFY_TIMEOUT:?}")),
        Err(e) => Reply::error(e.to_string()),
    }
}
