//! Run control: how the VMM stops, pauses and wakes the threads that run a
//! VM (vCPUs and device threads).
//!
//! - [`RunControl`] is the one pause protocol: a worker thread calls
//!   [`RunControl::park_if_requested`] at a point where it holds no state
//!   half-changed; the controller asks with [`RunControl::request_pause`] and
//!   waits with [`RunControl::wait_parked`]. The vCPU set and each device
//!   thread own one.
//! - [`Doorbell`] is the cheap, cloneable handle a device rings when it gave
//!   the guest work; a vCPU waiting for work (the polling guest's HLT) sleeps
//!   on it. Devices get a `Doorbell`, never the machine.
//! - [`Pausable`] is what the VMM pauses and resumes for a migration's
//!   stop-and-copy: the vCPU set and every device with a thread.
//! - [`set_thread_nice`]: a thread's scheduling priority. The VMM runs the
//!   threads the guest's network depends on (vCPU 0, the virtio-net thread)
//!   and the migration's own threads at [`LATENCY_NICE`], so that busy
//!   worker vCPUs on a small host neither stall the network nor starve the
//!   page copy. [`raise_current`] and [`Priority`] keep a
//!   [`results::ThreadPriority`] of what was asked and what the kernel did,
//!   which a migration reports.

use crate::error::Result;
use crate::sync::lock;
use results::{ThreadPriority, ThreadRole};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// A component that can be stopped at a consistent point and started again.
pub trait Pausable {
    /// Returns once the component neither runs guest code nor touches guest
    /// memory or its own state, until [`Pausable::resume`]. On error nothing
    /// stays paused.
    fn pause(&self) -> Result<()>;
    /// Lets a paused component run again (a no-op when it is not paused).
    fn resume(&self);
}

/// The nice value of the latency-critical threads (vCPU 0, the virtio-net
/// thread, a migration's sending and receiving threads); worker vCPUs stay
/// at 0. Under Linux's fair scheduler a nice of -5 weighs about three
/// times a nice-0 thread.
pub const LATENCY_NICE: i32 = -5;

/// The calling thread's kernel id.
pub fn current_tid() -> libc::pid_t {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

/// Sets the nice value of thread `tid` (a Linux thread id). Lowering it
/// below 0 needs CAP_SYS_NICE: without it the thread keeps its priority and
/// the error says so.
pub fn set_thread_nice(tid: libc::pid_t, nice: i32) -> std::io::Result<()> {
    // SAFETY: setpriority takes plain integers and touches no memory.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The nice value of thread `tid`.
pub fn thread_nice(tid: libc::pid_t) -> std::io::Result<i32> {
    // SAFETY: errno is thread-local; getpriority takes plain integers.
    unsafe { *libc::__errno_location() = 0 };
    // SAFETY: as above.
    let n = unsafe { libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t) };
    let e = std::io::Error::last_os_error();
    if n == -1 && e.raw_os_error().is_some_and(|c| c != 0) {
        return Err(e);
    }
    Ok(n)
}

/// Sets the calling thread, which plays `role`, to [`LATENCY_NICE`]; the
/// record says whether the kernel let it (the log too, when not).
pub fn raise_current(role: ThreadRole) -> ThreadPriority {
    let result = set_thread_nice(current_tid(), LATENCY_NICE);
    if let Err(e) = &result {
        tracing::info!("the {} thread keeps its priority: {e}", role.describe());
    }
    ThreadPriority::new(role, LATENCY_NICE, &result)
}

/// The calling thread at [`LATENCY_NICE`] until dropped, then back at its
/// own nice value.
pub struct Priority {
    old: Option<i32>,
    record: ThreadPriority,
}

impl Priority {
    /// Raises the calling thread's priority (best effort: without
    /// CAP_SYS_NICE it stays as it is, and [`Priority::record`] says so).
    pub fn raise(role: ThreadRole) -> Priority {
        let old = thread_nice(current_tid()).ok();
        let record = raise_current(role);
        Priority { old: old.filter(|_| record.applied), record }
    }

    /// What was asked and whether it was applied.
    pub fn record(&self) -> &ThreadPriority {
        &self.record
    }
}

impl Drop for Priority {
    fn drop(&mut self) {
        if let Some(n) = self.old {
            let _ = set_thread_nice(current_tid(), n);
        }
    }
}

#[derive(Default)]
struct Flags {
    stop: bool,
    pause: bool,
    /// Workers parked now.
    parked: usize,
    /// Workers whose thread has ended: they count as parked for good.
    gone: usize,
}

/// Stop and pause coordination between a controller and its worker threads.
#[derive(Default)]
pub struct RunControl {
    attention: AtomicBool,
    flags: Mutex<Flags>,
    cv: Condvar,
}

impl RunControl {
    /// Whether a worker must call [`RunControl::park_if_requested`] before
    /// going on: a pause or a stop was requested.
    pub fn needs_attention(&self) -> bool {
        self.attention.load(Ordering::Acquire)
    }

    /// Called by a worker at a consistent point: parks while a pause is
    /// requested. Returns false when the worker must end.
    pub fn park_if_requested(&self) -> bool {
        let mut f = lock(&self.flags);
        if f.pause && !f.stop {
            f.parked += 1;
            self.cv.notify_all();
            while f.pause && !f.stop {
                f = self.cv.wait(f).unwrap_or_else(|e| e.into_inner());
            }
            f.parked -= 1;
        }
        !f.stop
    }

    /// Called by a worker whose thread ends; it no longer holds up a pause.
    pub fn leave(&self) {
        lock(&self.flags).gone += 1;
        self.cv.notify_all();
    }

    /// Asks the workers to park. The caller wakes them (kick, eventfd,
    /// doorbell), then waits with [`RunControl::wait_parked`].
    pub fn request_pause(&self) {
        lock(&self.flags).pause = true;
        self.attention.store(true, Ordering::Release);
    }

    /// Waits until `n` workers are parked or gone, or a stop was requested.
    /// Returns false on timeout.
    pub fn wait_parked(&self, n: usize, timeout: Duration) -> bool {
        let f = lock(&self.flags);
        let (_f, res) = self
            .cv
            .wait_timeout_while(f, timeout, |f| f.parked + f.gone < n && !f.stop)
            .unwrap_or_else(|e| e.into_inner());
        !res.timed_out()
    }

    /// Lets parked workers run again.
    pub fn resume(&self) {
        let mut f = lock(&self.flags);
        f.pause = false;
        self.attention.store(f.stop, Ordering::Release);
        self.cv.notify_all();
    }

    /// Asks every worker to end; parked ones wake up and end.
    pub fn request_stop(&self) {
        lock(&self.flags).stop = true;
        self.attention.store(true, Ordering::Release);
        self.cv.notify_all();
    }

    /// Whether a stop was requested.
    pub fn stopping(&self) -> bool {
        lock(&self.flags).stop
    }
}

#[derive(Default)]
struct Bell {
    rung: Mutex<u64>,
    cv: Condvar,
}

/// A doorbell: a counter that wakes whoever sleeps on it when it is rung.
/// Clones ring the same bell.
#[derive(Clone, Default)]
pub struct Doorbell(Arc<Bell>);

impl Doorbell {
    /// A new bell, never rung.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rings the bell: device work arrived, or the run flags changed.
    pub fn ring(&self) {
        *lock(&self.0.rung) += 1;
        self.0.cv.notify_all();
    }

    /// "Wait for work": returns at once if the bell rang since `seen` (or
    /// `interrupted` holds), else sleeps until it rings or `timeout` passes.
    /// Updates `seen`.
    pub fn wait(&self, seen: &mut u64, timeout: Duration, interrupted: impl Fn() -> bool) {
        let rung = lock(&self.0.rung);
        let (rung, _) = self
            .0
            .cv
            .wait_timeout_while(rung, timeout, |r| *r == *seen && !interrupted())
            .unwrap_or_else(|e| e.into_inner());
        *seen = *rung;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn workers_park_resume_and_stop() {
        let rc = Arc::new(RunControl::default());
        let spins = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let (rc, spins) = (rc.clone(), spins.clone());
                std::thread::spawn(move || {
                    loop {
                        if rc.needs_attention() && !rc.park_if_requested() {
                            break;
                        }
                        spins.fetch_add(1, Ordering::Relaxed);
                        std::thread::yield_now();
                    }
                    rc.leave();
                })
            })
            .collect();
        rc.request_pause();
        assert!(rc.wait_parked(2, Duration::from_secs(5)), "both workers park");
        let frozen = spins.load(Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(spins.load(Ordering::Relaxed), frozen, "parked workers do not run");
        rc.resume();
        let t = Instant::now();
        while spins.load(Ordering::Relaxed) == frozen {
            assert!(t.elapsed() < Duration::from_secs(5), "resumed workers run again");
            std::thread::yield_now();
        }
        rc.request_stop();
        for w in workers {
            w.join().unwrap();
        }
        assert!(rc.stopping());
        // Ended workers count as parked: a later pause does not wait for them.
        rc.request_pause();
        assert!(rc.wait_parked(2, Duration::from_millis(1)));
    }

    #[test]
    fn a_pause_nobody_answers_times_out() {
        let rc = RunControl::default();
        rc.request_pause();
        assert!(!rc.wait_parked(1, Duration::from_millis(10)));
    }

    #[test]
    fn the_doorbell_wakes_a_sleeper_and_remembers_a_ring() {
        let bell = Doorbell::new();
        let mut seen = 0;
        bell.ring();
        let t = Instant::now();
        bell.wait(&mut seen, Duration::from_secs(5), || false);
        assert!(t.elapsed() < Duration::from_secs(1), "a ring before the wait is not lost");
        assert_eq!(seen, 1);
        let other = bell.clone();
        let ringer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            other.ring();
        });
        let t = Instant::now();
        bell.wait(&mut seen, Duration::from_secs(5), || false);
        assert!(t.elapsed() < Duration::from_secs(4), "a clone's ring wakes the sleeper");
        assert_eq!(seen, 2);
        ringer.join().unwrap();
        let t = Instant::now();
        bell.wait(&mut seen, Duration::from_millis(30), || false);
        assert!(t.elapsed() >= Duration::from_millis(30), "no ring: sleeps the whole timeout");
    }
}
