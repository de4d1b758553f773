//! The time base of every result: the host's `CLOCK_MONOTONIC` as plain
//! nanoseconds. Source VMM, destination VMM, QEMU driver and probe all read
//! it, so their timestamps lie on one timeline (`std::time::Instant` reads
//! the same clock but is opaque). The built-in guest has its own clock
//! (RDTSC), since it has no system calls.

use std::time::Duration;

/// `CLOCK_MONOTONIC`, ns.
pub fn mono_ns() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (ts.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(ts.tv_nsec as u64)
}

/// Milliseconds between two [`mono_ns`] readings (0 if `to` is earlier).
pub fn ms_between(from: u64, to: u64) -> f64 {
    to.saturating_sub(from) as f64 / 1e6
}

/// Sleeps until `CLOCK_MONOTONIC` reaches `deadline_ns` (absolute), with
/// `clock_nanosleep(TIMER_ABSTIME)`, so that periodic wake-ups do not drift.
/// Returns at once for a past deadline.
pub fn sleep_until(deadline_ns: u64) {
    let ts = rustix::time::Timespec {
        tv_sec: (deadline_ns / 1_000_000_000) as i64,
        tv_nsec: (deadline_ns % 1_000_000_000) as _,
    };
    while let Err(rustix::io::Errno::INTR) =
        rustix::thread::clock_nanosleep_absolute(rustix::thread::ClockId::Monotonic, &ts)
    {}
}

/// A `Duration` as whole nanoseconds, saturating at `u64::MAX`.
pub fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_advances_and_sleep_waits() {
        let a = mono_ns();
        sleep_until(a + 2_000_000);
        let b = mono_ns();
        assert!(b >= a + 2_000_000, "slept {} ns", b - a);
        sleep_until(a);
        assert_eq!(ms_between(b, a), 0.0);
    }
}
