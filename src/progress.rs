//! Progress on stderr for the commands that run for more than a few
//! seconds (`reproduce`, `scenario`, `migrate`, `bench`).
//!
//! One [`Progress`] per command. It knows the command's steps (e.g. idle,
//! loaded, bench) and takes typed [`Update`]s: the phase within a step (a
//! line such as the runner's "migrating to …"), a pre-copy round (number,
//! pages remaining, rate), the benchmark row that starts.
//!
//! * On a terminal: indicatif bars: the steps, a spinner with the phase and
//!   the time in the step, a rounds bar (pages sent of those that remained
//!   when the first round was reported) and a rows bar (rows done, and the
//!   one running).
//! * Otherwise (CI logs): the same information as plain lines, at most one
//!   a second; an update that is superseded within the second is dropped,
//!   the latest one is printed when the second is up.
//!
//! [`Progress::println`] is for lines that must always appear (results,
//! failures): above the bars, or immediately.

use std::io::IsTerminal as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The shortest time between two plain progress lines.
const PLAIN_INTERVAL: Duration = Duration::from_secs(1);

/// One pre-copy round as the migration reports it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoundProgress {
    /// The round's number (0 sends all of RAM).
    pub round: u32,
    /// Dirty pages still to send.
    pub pages_remaining: u64,
    /// The round's transfer rate, Mbit/s.
    pub rate_mbps: f64,
}

/// Something that happened within the current step.
#[derive(Debug, Clone, Copy)]
pub enum Update<'a> {
    /// What the step is doing now.
    Phase(&'a str),
    /// A pre-copy round, from the runner's typed events.
    Round(RoundProgress),
    /// A benchmark row starts (its id): the rows before it are done.
    Row(&'a str),
}

/// The bars of the terminal mode.
struct Bars {
    multi: MultiProgress,
    steps: Option<ProgressBar>,
    phase: ProgressBar,
    rounds: Option<(ProgressBar, u64)>,
    rows: Option<ProgressBar>,
}

/// The throttled lines of the plain mode.
struct Plain {
    last: Option<Instant>,
    pending: Option<String>,
}

enum Mode {
    Bars(Bars),
    Plain(Plain),
}

struct State {
    steps: Vec<String>,
    current: Option<usize>,
    rows: (u64, u64),
    mode: Mode,
}

impl State {
    /// "[2/3 loaded] " in plain lines.
    fn prefix(&self) -> String {
        match self.current {
            Some(i) if !self.steps.is_empty() => format!("[{}/{} {}] ", i + 1, self.steps.len(), self.steps[i]),
            _ => String::new(),
        }
    }

    /// Print `line` now if a second has passed since the last one, else
    /// keep it for the ticker.
    fn plain(&mut self, line: String) {
        let line = format!("migbench: {}{line}", self.prefix());
        if let Mode::Plain(p) = &mut self.mode {
            if p.last.is_none_or(|t| t.elapsed() >= PLAIN_INTERVAL) {
                eprintln!("{line}");
                p.last = Some(Instant::now());
                p.pending = None;
            } else {
                p.pending = Some(line);
            }
        }
    }
}

/// Progress of one command (see the module docs).
pub struct Progress {
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    ticker: Option<JoinHandle<()>>,
}

fn style(template: &str) -> ProgressStyle {
    // The templates are constants of this file; a bad one falls back to
    // indicatif's default bar rather than failing the command.
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()).progress_chars("=> ")
}

impl Progress {
    /// Progress through `steps` (may be empty: a command of one step), as
    /// bars when stderr is a terminal, else as plain lines.
    pub fn new(steps: &[&str]) -> Self {
        Self::with_mode(steps, std::io::stderr().is_terminal())
    }

    fn with_mode(steps: &[&str], terminal: bool) -> Self {
        let mode = if terminal {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            let steps_bar = (!steps.is_empty()).then(|| {
                let b = multi.add(ProgressBar::new(steps.len() as u64));
                b.set_style(style("{prefix:.bold} [{bar:30.cyan/blue}] {pos}/{len} {msg}"));
                b.set_prefix("steps");
                b
            });
            let phase = multi.add(ProgressBar::new_spinner());
            phase.set_style(
                ProgressStyle::with_template("  {spinner:.green} {elapsed:>3} {wide_msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            phase.enable_steady_tick(Duration::from_millis(120));
            Mode::Bars(Bars { multi, steps: steps_bar, phase, rounds: None, rows: None })
        } else {
            Mode::Plain(Plain { last: None, pending: None })
        };
        let state = Arc::new(Mutex::new(State {
            steps: steps.iter().map(|s| s.to_string()).collect(),
            current: None,
            rows: (0, 0),
            mode,
        }));
        let stop = Arc::new(AtomicBool::new(false));
        // The plain mode's ticker prints a kept line once its second is up.
        let ticker = (!terminal).then(|| {
            let (state, stop) = (state.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(100));
                    let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
                    if let Mode::Plain(p) = &mut s.mode {
                        if p.last.is_none_or(|t| t.elapsed() >= PLAIN_INTERVAL) {
                            if let Some(line) = p.pending.take() {
                                eprintln!("{line}");
                                p.last = Some(Instant::now());
                            }
                        }
                    }
                }
            })
        });
        Progress { state, stop, ticker }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Begin step `i` (an index into the steps given to [`Progress::new`]).
    pub fn step(&self, i: usize) {
        let mut s = self.lock();
        s.current = Some(i);
        let name = s.steps.get(i).cloned().unwrap_or_default();
        match &mut s.mode {
            Mode::Bars(b) => {
                if let Some(bar) = &b.steps {
                    bar.set_position(i as u64);
                    bar.set_message(name);
                }
                b.phase.reset_elapsed();
                b.phase.set_message("starting");
                for bar in [b.rounds.take().map(|r| r.0), b.rows.take()].into_iter().flatten() {
                    bar.finish_and_clear();
                    b.multi.remove(&bar);
                }
            }
            Mode::Plain(_) => s.plain("starting".into()),
        }
    }

    /// Start a rows bar of `total` rows for `what` (e.g. "native rows").
    pub fn rows(&self, what: &str, total: u64) {
        let mut s = self.lock();
        s.rows = (0, total);
        match &mut s.mode {
            Mode::Bars(b) => {
                if let Some(old) = b.rows.take() {
                    old.finish_and_clear();
                    b.multi.remove(&old);
                }
                let bar = b.multi.add(ProgressBar::new(total));
                bar.set_style(style("  {prefix} [{bar:30.yellow/white}] {pos}/{len} {msg}"));
                bar.set_prefix(what.to_string());
                b.rows = Some(bar);
            }
            Mode::Plain(_) => s.plain(format!("{what}: {total} rows")),
        }
    }

    /// Report an update within the current step.
    pub fn update(&self, u: Update) {
        let mut s = self.lock();
        match u {
            Update::Phase(line) => match &mut s.mode {
                Mode::Bars(b) => b.phase.set_message(line.to_string()),
                Mode::Plain(_) => s.plain(line.to_string()),
            },
            Update::Round(r) => {
                let text =
                    format!("round {}: {} pages remaining, {:.0} Mbit/s", r.round, r.pages_remaining, r.rate_mbps);
                match &mut s.mode {
                    Mode::Bars(b) => {
                        let (bar, first) = b.rounds.get_or_insert_with(|| {
                            let bar = b.multi.add(ProgressBar::new(r.pages_remaining.max(1)));
                            bar.set_style(style("  rounds [{bar:30.red/white}] {msg}"));
                            (bar, r.pages_remaining.max(1))
                        });
                        bar.set_position(first.saturating_sub(r.pages_remaining));
                        bar.set_message(text);
                    }
                    Mode::Plain(_) => s.plain(text),
                }
            }
            Update::Row(id) => {
                s.rows.0 += 1;
                let (done, total) = s.rows;
                match &mut s.mode {
                    Mode::Bars(b) => {
                        if let Some(bar) = &b.rows {
                            bar.set_position(done - 1);
                            bar.set_message(format!("running {id}"));
                        }
                    }
                    Mode::Plain(_) => s.plain(format!("row {done}/{total}: running {id}")),
                }
            }
        }
    }

    /// An observer of the runner's events: phases and pre-copy rounds.
    pub fn runner_events(&self) -> impl FnMut(scenarios::runner::Event) + '_ {
        move |e| {
            match e {
            scenarios::runner::Event::Network(n) => self.println(&match &n.hosts {
                None => format!(
                    "migbench: network: run {}: guest {} in {}, probe in {}",
                    n.run_id, n.guest_ip, n.lan_ns, n.probe_ns
                ),
                Some(h) => format!(
                    "migbench: network: run {}: guest {} on hosts {} -> {} (migration {} -> {}), switch {}, probe in {}",
                    n.run_id,
                    n.guest_ip,
                    h.source_ns,
                    h.destination_ns,
                    h.migration_src_ip,
                    h.migration_dst_ip,
                    n.lan_ns,
                    n.probe_ns
                ),
            }),
            scenarios::runner::Event::Phase(line) => self.update(Update::Phase(line)),
            scenarios::runner::Event::Migration(m) => self.update(Update::Round(RoundProgress {
                round: m.rounds,
                pages_remaining: m.dirty_pages,
                rate_mbps: m.rate_mbps,
            })),
        }
        }
    }

    /// A line that must appear (a result, a failure): above the bars, or
    /// at once.
    pub fn println(&self, line: &str) {
        let s = self.lock();
        match &s.mode {
            Mode::Bars(b) => {
                if b.multi.println(line).is_err() {
                    eprintln!("{line}");
                }
            }
            Mode::Plain(_) => eprintln!("{line}"),
        }
    }

    /// Clear the bars (the plain mode drops a line still waiting).
    pub fn finish(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.ticker.take() {
            let _ = t.join();
        }
        let mut s = self.lock();
        if let Mode::Bars(b) = &mut s.mode {
            for bar in [b.rounds.take().map(|r| r.0), b.rows.take(), Some(b.phase.clone()), b.steps.take()]
                .into_iter()
                .flatten()
            {
                bar.finish_and_clear();
            }
            let _ = b.multi.clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_mode_keeps_only_the_latest_line_within_a_second() {
        let p = Progress::with_mode(&["idle", "loaded"], false);
        p.step(0);
        p.update(Update::Phase("first"));
        p.update(Update::Round(RoundProgress { round: 1, pages_remaining: 500, rate_mbps: 800.0 }));
        {
            let s = p.lock();
            let Mode::Plain(pl) = &s.mode else { panic!("plain mode expected") };
            // "starting" went out; the phase was superseded by the round.
            assert!(pl.last.is_some());
            assert_eq!(pl.pending.as_deref(), Some("migbench: [1/2 idle] round 1: 500 pages remaining, 800 Mbit/s"));
        }
        // The ticker prints it once the second is up.
        std::thread::sleep(Duration::from_millis(1300));
        assert!(p.lock().mode_pending().is_none());
        p.finish();
    }

    #[test]
    fn rows_count_up() {
        let p = Progress::with_mode(&[], false);
        p.rows("native rows", 3);
        p.update(Update::Row("null_call"));
        p.update(Update::Row("null_io"));
        assert_eq!(p.lock().rows, (2, 3));
        p.finish();
    }

    impl State {
        fn mode_pending(&self) -> Option<&str> {
            match &self.mode {
                Mode::Plain(p) => p.pending.as_deref(),
                Mode::Bars(_) => None,
            }
        }
    }
}
