//! The HTTP transfer-rate probe.
//!
//! `connections` workers (default 4), each with its own keep-alive HTTP/1.1
//! connection, download `url` in a loop. Body chunks are added to one shared
//! atomic byte counter as they arrive, and hashed on the fly: every complete
//! response is checked against its `ETag` ([`crate::etag`]); a mismatch
//! counts as data corruption. Request latency (request start to last body
//! byte) goes into an HDR histogram.
//!
//! A dedicated sampler thread reads the counter every `interval` (default
//! 10 ms) and records a [`Sample`] with the real `CLOCK_MONOTONIC`
//! timestamp, the bytes since the previous sample, the rate over the real
//! spacing, and the tick's jitter (actual minus nominal spacing).
//!
//! The probe runs until `duration` has passed or the stop signal fires,
//! whichever comes first. Then workers issue no new requests, but finish the
//! ones in flight for up to `drain` (so byte counts match what a server
//! sent), and the sampler records one last tick after the workers are done.
//!
//! Only plain `http://` URLs are supported (the crate is built without TLS).
//!
//! ```no_run
//! use std::time::Duration;
//! use probes::http::{run_blocking, ProbeConfig};
//!
//! let mut cfg = ProbeConfig::new("http://10.0.0.2/file");
//! cfg.duration = Some(Duration::from_secs(20));
//! let result = run_blocking(&cfg)?;
//! println!("downtime: {:?}", result.summary.app_downtime.map(|g| g.duration_ms()));
//! result.save_csv("probe.csv")?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod sampler;
mod worker;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use crate::etag::etag_of;
use results::probe::jitter_summary;
/// The probe's output types live in the results model; re-exported here
/// because [`run`] returns them.
pub use results::probe::{JitterSummary, LatencySummary, ProbeResult, Sample, Summary};
pub use results::series::{app_downtime, gap_around, phase_rates, rate_mbps, zero_runs, Gap, PhaseRate, PhaseRates};
pub use sampler::SampleRecorder;

use results::clock::{duration_ns, mono_ns as monotonic_ns};
use worker::{ConnCounter, Shared, Target};

/// Default sampling interval.
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(10);
/// Default number of parallel connections.
pub const DEFAULT_CONNECTIONS: usize = 4;
/// Default no-progress timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default time allowed to finish in-flight requests after the stop.
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(1);
/// Smallest accepted sampling interval.
pub const MIN_INTERVAL: Duration = Duration::from_micros(100);
/// Largest accepted number of connections.
pub const MAX_CONNECTIONS: usize = 1024;

/// Probe settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeConfig {
    /// `http://` URL to download repeatedly (e.g. `http://10.0.0.2/file`).
    pub url: String,
    /// Nominal sampling interval (default 10 ms, at least 100 µs).
    pub interval: Duration,
    /// Number of parallel keep-alive connections (default 4).
    pub connections: usize,
    /// How long to run; `None` runs until the stop signal.
    pub duration: Option<Duration>,
    /// No-progress timeout: a connect, the response headers, or the next
    /// body chunk taking longer than this fails the request (counted as a
    /// timeout) and the connection is dropped (default 5 s).
    pub timeout: Duration,
    /// After the stop, how long in-flight requests may take to finish
    /// before they are cut off (default 1 s).
    pub drain: Duration,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig {
            url: String::new(),
            interval: DEFAULT_INTERVAL,
            connections: DEFAULT_CONNECTIONS,
            duration: None,
            timeout: DEFAULT_TIMEOUT,
            drain: DEFAULT_DRAIN,
        }
    }
}

impl ProbeConfig {
    /// Defaults for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        ProbeConfig { url: url.into(), ..ProbeConfig::default() }
    }

    /// Check the settings without running anything.
    pub fn validate(&self) -> Result<(), ProbeError> {
        self.parse_url().map(|_| ())
    }

    fn parse_url(&self) -> Result<Target, ProbeError> {
        let invalid = |reason: String| ProbeError::InvalidUrl { url: self.url.clone(), reason };
        let uri: http::Uri = self.url.parse().map_err(|e| invalid(format!("{e}")))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(other) => return Err(invalid(format!("scheme {other:?} is not supported (plain http:// only)"))),
            None => return Err(invalid("missing http:// scheme".into())),
        }
        let authority = uri.authority().ok_or_else(|| invalid("no host".into()))?;
        let host = authority.host();
        if host.is_empty() {
            return Err(invalid("no host".into()));
        }
        let target = Target {
            host: host.trim_start_matches('[').trim_end_matches(']').to_owned(),
            port: authority.port_u16().unwrap_or(80),
            authority: authority.as_str().to_owned(),
            path: uri.path_and_query().map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned()),
        };
        if self.interval < MIN_INTERVAL {
            return Err(ProbeError::InvalidConfig(format!(
                "interval {:?} is below the minimum {:?}",
                self.interval, MIN_INTERVAL
            )));
        }
        if self.connections == 0 || self.connections > MAX_CONNECTIONS {
            return Err(ProbeError::InvalidConfig(format!(
                "connections must be 1..={MAX_CONNECTIONS}, got {}",
                self.connections
            )));
        }
        if self.timeout.is_zero() {
            return Err(ProbeError::InvalidConfig("timeout must be > 0".into()));
        }
        Ok(target)
    }
}

/// Probe failures. Per-request failures are not errors of the probe: they
/// are counted in the [`Summary`].
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The URL cannot be probed.
    #[error("invalid probe URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A setting is out of range.
    #[error("invalid probe configuration: {0}")]
    InvalidConfig(String),
    /// The tokio runtime or a thread could not be started.
    #[error("failed to start the probe's runtime or threads: {0}")]
    Runtime(#[source] std::io::Error),
    /// The sampler or the probe thread panicked.
    #[error("the probe's {0} thread panicked")]
    Panicked(&'static str),
}

/// Sets the flags and aborts the workers if [`run`] is dropped early, so no
/// thread or task outlives it.
struct Guard {
    done: Arc<AtomicBool>,
    stopping: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::Release);
        for t in &self.tasks {
            t.abort();
        }
        self.done.store(true, Ordering::Release);
    }
}

/// Run the probe inside the caller's tokio runtime until `cfg.duration` has
/// passed or `stop` completes, whichever is first.
pub async fn run<F>(cfg: &ProbeConfig, stop: F) -> Result<ProbeResult, ProbeError>
where
    F: Future<Output = ()>,
{
    run_with(cfg, stop, Arc::new(Shared::new())).await
}

async fn run_with<F>(cfg: &ProbeConfig, stop: F, shared: Arc<Shared>) -> Result<ProbeResult, ProbeError>
where
    F: Future<Output = ()>,
{
    let target = Arc::new(cfg.parse_url()?);
    let interval_ns = duration_ns(cfg.interval);
    let conn_counters: Vec<Arc<ConnCounter>> = (0..cfg.connections).map(|_| Arc::new(ConnCounter::default())).collect();

    let capacity = cfg.duration.map_or(4096, |d| {
        usize::try_from((duration_ns(d) / interval_ns).saturating_add(16).min(1 << 22)).unwrap_or(4096)
    });
    let stopping = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    let start_unix_ns = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, duration_ns);
    let start_ns = monotonic_ns();
    let run_deadline = cfg.duration.map(|d| tokio::time::Instant::now() + d);
    let sampler = sampler::spawn_sampler(shared.bytes.clone(), done.clone(), start_ns, interval_ns, capacity)
        .map_err(ProbeError::Runtime)?;
    let mut guard =
        Guard { done: done.clone(), stopping: stopping.clone(), tasks: Vec::with_capacity(cfg.connections) };
    for conns in &conn_counters {
        guard.tasks.push(tokio::spawn(worker::worker(
            target.clone(),
            shared.clone(),
            conns.clone(),
            stopping.clone(),
            cfg.timeout,
        )));
    }

    match run_deadline {
        Some(deadline) => {
            tokio::select! {
                _ = stop => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
        None => stop.await,
    }

    // Drain: no new requests; finish in-flight ones until the deadline.
    stopping.store(true, Ordering::Release);
    let drain_deadline = tokio::time::Instant::now() + cfg.drain;
    let mut aborted_at_stop = 0;
    for mut task in std::mem::take(&mut guard.tasks) {
        if tokio::time::timeout_at(drain_deadline, &mut task).await.is_err() {
            task.abort();
            // Wait until the task is gone so it adds no more bytes.
            let _ = task.await;
            aborted_at_stop += 1;
        }
    }
    // All byte updates happened before this store; the sampler's next tick is the last.
    done.store(true, Ordering::Release);
    let out = tokio::task::spawn_blocking(move || sampler.join())
        .await
        .map_err(|_| ProbeError::Panicked("sampler"))?
        .map_err(|_| ProbeError::Panicked("sampler"))?;
    drop(guard);

    let summary = summarize(&shared, &conn_counters, &out.samples, interval_ns, out.missed_ticks, aborted_at_stop);
    Ok(ProbeResult {
        url: cfg.url.clone(),
        interval_ns,
        connections: cfg.connections,
        timeout_ns: duration_ns(cfg.timeout),
        start_monotonic_ns: start_ns,
        start_unix_ns,
        samples: out.samples,
        summary,
    })
}

fn summarize(
    shared: &Shared,
    conn_counters: &[Arc<ConnCounter>],
    samples: &[Sample],
    interval_ns: u64,
    missed_ticks: u64,
    aborted_at_stop: u64,
) -> Summary {
    let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Acquire);
    let bytes = get(&shared.bytes);
    let duration_ns = samples.last().map_or(0, |s| s.t_ns);
    let latency_us = match shared.latency_us.lock() {
        Ok(h) if !h.is_empty() => LatencySummary {
            count: h.len(),
            min: h.min(),
            mean: h.mean(),
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            max: h.max(),
        },
        _ => LatencySummary::default(),
    };
    Summary {
        duration_ns,
        samples: samples.len(),
        bytes,
        mean_rate_mbps: rate_mbps(bytes, duration_ns),
        requests: get(&shared.requests),
        verified: get(&shared.verified),
        corruptions: get(&shared.corruptions),
        unverified: get(&shared.unverified),
        errors: get(&shared.errors),
        http_errors: get(&shared.http_errors),
        timeouts: get(&shared.timeouts),
        connects: conn_counters.iter().map(|c| get(&c.connects)).sum(),
        reconnects: conn_counters.iter().map(|c| get(&c.connects).saturating_sub(1)).sum(),
        connect_failures: conn_counters.iter().map(|c| get(&c.failures)).sum(),
        aborted_at_stop,
        last_error: shared.last_error.lock().ok().and_then(|e| e.clone()),
        latency_us,
        jitter_us: jitter_summary(samples, interval_ns, missed_ticks),
        app_downtime: app_downtime(samples),
    }
}

fn runtime(cfg: &ProbeConfig) -> Result<tokio::runtime::Runtime, ProbeError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.connections.clamp(1, 4))
        .thread_name("probe-worker")
        .enable_all()
        .build()
        .map_err(ProbeError::Runtime)
}

/// How often the blocking variants poll the stop flag.
const STOP_POLL: Duration = Duration::from_millis(2);

async fn wait_for_flag(flag: Arc<AtomicBool>) {
    while !flag.load(Ordering::Acquire) {
        tokio::time::sleep(STOP_POLL).await;
    }
}

/// Run the probe for `cfg.duration` on its own tokio runtime, blocking the
/// calling thread. `cfg.duration` must be set (use [`run_blocking_until`]
/// or [`spawn`] to stop on demand).
pub fn run_blocking(cfg: &ProbeConfig) -> Result<ProbeResult, ProbeError> {
    if cfg.duration.is_none() {
        return Err(ProbeError::InvalidConfig(
            "run_blocking needs a duration; use run_blocking_until with a stop flag".into(),
        ));
    }
    cfg.validate()?;
    runtime(cfg)?.block_on(run(cfg, std::future::pending::<()>()))
}

/// Run the probe on its own tokio runtime until `stop` is set (checked every
/// 2 ms) or `cfg.duration` (if any) has passed, blocking the calling thread.
pub fn run_blocking_until(cfg: &ProbeConfig, stop: Arc<AtomicBool>) -> Result<ProbeResult, ProbeError> {
    cfg.validate()?;
    runtime(cfg)?.block_on(run(cfg, wait_for_flag(stop)))
}

/// A probe running on a background thread; see [`spawn`].
#[derive(Debug)]
pub struct ProbeHandle {
    stop: Arc<AtomicBool>,
    bytes: Arc<std::sync::atomic::AtomicU64>,
    thread: JoinHandle<Result<ProbeResult, ProbeError>>,
}

impl ProbeHandle {
    /// Ask the probe to stop (it then drains and finishes).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    /// The stop flag, e.g. to hand to a signal handler.
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// Body bytes received so far (live).
    pub fn bytes_total(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Whether the probe has finished (duration over, stopped, or failed).
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    /// Wait for the probe to finish (this does not stop it).
    pub fn join(self) -> Result<ProbeResult, ProbeError> {
        self.thread.join().map_err(|_| ProbeError::Panicked("probe"))?
    }

    /// [`Self::stop`], then [`Self::join`].
    pub fn stop_and_join(self) -> Result<ProbeResult, ProbeError> {
        self.stop();
        self.join()
    }
}

/// Start the probe on a background thread with its own runtime; it runs
/// until `cfg.duration` passes or [`ProbeHandle::stop`] is called.
/// Configuration errors are reported here, before anything starts.
pub fn spawn(cfg: ProbeConfig) -> Result<ProbeHandle, ProbeError> {
    cfg.validate()?;
    let rt = runtime(&cfg)?;
    let stop = Arc::new(AtomicBool::new(false));
    let shared = Arc::new(Shared::new());
    let bytes = shared.bytes.clone();
    let flag = stop.clone();
    let thread = std::thread::Builder::new()
        .name("probe".into())
        .spawn(move || rt.block_on(run_with(&cfg, wait_for_flag(flag), shared)))
        .map_err(ProbeError::Runtime)?;
    Ok(ProbeHandle { stop, bytes, thread })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_validation() {
        let t = ProbeConfig::new("http://127.0.0.1:8080/file?x=1").parse_url().expect("valid");
        assert_eq!((t.host.as_str(), t.port), ("127.0.0.1", 8080));
        assert_eq!((t.authority.as_str(), t.path.as_str()), ("127.0.0.1:8080", "/file?x=1"));
        let t = ProbeConfig::new("http://[::1]/").parse_url().expect("valid");
        assert_eq!((t.host.as_str(), t.port, t.path.as_str()), ("::1", 80, "/"));
        let t = ProbeConfig::new("http://example.com").parse_url().expect("valid");
        assert_eq!((t.port, t.path.as_str()), (80, "/"));
        for bad in ["", "not a url", "https://example.com/file", "ftp://x/file", "127.0.0.1:80/file", "/file"] {
            let e = ProbeConfig::new(bad).validate().expect_err(bad);
            assert!(matches!(e, ProbeError::InvalidUrl { .. }), "{bad}: {e}");
        }
        let mut c = ProbeConfig::new("http://127.0.0.1/file");
        c.connections = 0;
        assert!(matches!(c.validate(), Err(ProbeError::InvalidConfig(_))));
        let mut c = ProbeConfig::new("http://127.0.0.1/file");
        c.interval = Duration::from_micros(10);
        assert!(matches!(c.validate(), Err(ProbeError::InvalidConfig(_))));
        let mut c = ProbeConfig::new("http://127.0.0.1/file");
        c.timeout = Duration::ZERO;
        assert!(matches!(c.validate(), Err(ProbeError::InvalidConfig(_))));
        // run_blocking without a duration would never end
        let c = ProbeConfig::new("http://127.0.0.1/file");
        assert!(matches!(run_blocking(&c), Err(ProbeError::InvalidConfig(_))));
    }
}
