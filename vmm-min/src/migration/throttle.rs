//! Auto-converge on the source: a duty cycle on the worker vCPU threads
//! while pre-copy runs (QEMU's `cpu_throttle`). The decision of how much
//! is [`results::policy::Throttle::next`]; this module applies it.
//!
//! Every period the throttler thread asks each worker vCPU to stay out of
//! the guest for `pct / (100 - pct) × 10 ms` and kicks it (QEMU's
//! timeslice), so that the worker runs 10 ms and is held off for the rest
//! of a period of `10 ms / (1 - pct)`. vCPU 0 is never throttled: it runs
//! the guest's network stack and heartbeat. What the workers were really
//! held off is measured from their own threads ([`Vcpu::held_ns`]).

use crate::vstate::vcpu::Vcpu;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// The run time of one duty cycle, as QEMU's `CPU_THROTTLE_TIMESLICE_NS`.
const TIMESLICE: Duration = Duration::from_millis(10);

struct Shared {
    /// The throttle in force, percent × 100 (0: none).
    pct_x100: AtomicU64,
    stop: AtomicBool,
}

/// The throttler of one migration; stops (and lets the workers run free)
/// on drop.
pub struct Throttler {
    workers: Vec<Arc<Vcpu>>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Throttler {
    /// A throttler over `workers`, idle until [`Throttler::set`]. With no
    /// workers it never starts a thread.
    pub fn new(workers: Vec<Arc<Vcpu>>) -> Throttler {
        let shared = Arc::new(Shared { pct_x100: AtomicU64::new(0), stop: AtomicBool::new(false) });
        Throttler { workers, shared, thread: None }
    }

    /// Whether there is anything to throttle.
    pub fn has_workers(&self) -> bool {
        !self.workers.is_empty()
    }

    /// The worker vCPUs' total held-off time so far, ns, and their count.
    pub fn held_ns(&self) -> (u64, usize) {
        (self.workers.iter().map(|v| v.held_ns()).sum(), self.workers.len())
    }

    /// Sets the throttle, percent (0 to 99); starts the thread the first
    /// time it is engaged.
    pub fn set(&mut self, pct: f64) {
        let pct = pct.clamp(0.0, 99.0);
        self.shared.pct_x100.store((pct * 100.0) as u64, Ordering::Release);
        if pct > 0.0 && self.thread.is_none() && self.has_workers() {
            let (workers, shared) = (self.workers.clone(), self.shared.clone());
            let spawned = std::thread::Builder::new().name("throttle".into()).spawn(move || run(&workers, &shared));
            match spawned {
                Ok(h) => self.thread = Some(h),
                Err(e) => tracing::warn!("cannot start the throttle thread ({e}); the guest runs unthrottled"),
            }
        }
    }

    /// Ends throttling and waits for the thread.
    pub fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(h) = self.thread.take() {
            if h.join().is_err() {
                tracing::error!("the throttle thread panicked");
            }
        }
    }
}

impl Drop for Throttler {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(workers: &[Arc<Vcpu>], shared: &Shared) {
    while !shared.stop.load(Ordering::Acquire) {
        let pct = shared.pct_x100.load(Ordering::Acquire) as f64 / 100.0;
        if pct <= 0.0 {
            std::thread::sleep(TIMESLICE);
            continue;
        }
        let ratio = pct / (100.0 - pct);
        let hold = TIMESLICE.mul_f64(ratio);
        for v in workers {
            v.hold_off(hold.as_nanos() as u64);
        }
        // The period: the hold plus one timeslice of running.
        let period = hold + TIMESLICE;
        let t0 = std::time::Instant::now();
        while t0.elapsed() < period && !shared.stop.load(Ordering::Acquire) {
            std::thread::sleep((period - t0.elapsed().min(period)).min(Duration::from_millis(5)));
        }
    }
}
