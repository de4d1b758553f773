//! `CLOCK_MONOTONIC` helpers.
//!
//! All probe timestamps come from `clock_gettime(CLOCK_MONOTONIC)` so that
//! they can be placed on one timeline with timestamps recorded by other
//! processes on the same host (which read the same clock).

use std::time::Duration;

/// Current `CLOCK_MONOTONIC` time in nanoseconds.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    debug_assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC) failed");
    (ts.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(ts.tv_nsec as u64)
}

/// Sleep until `CLOCK_MONOTONIC` reaches `deadline_ns` (absolute).
///
/// Returns immediately if the deadline has already passed. Uses
/// `clock_nanosleep(TIMER_ABSTIME)` on Linux so the wake-up does not drift.
pub fn sleep_until_monotonic(deadline_ns: u64) {
    #[cfg(target_os = "linux")]
    {
        let ts = libc::timespec {
            tv_sec: (deadline_ns / 1_000_000_000) as libc::time_t,
            tv_nsec: (deadline_ns % 1_000_000_000) as libc::c_long,
        };
        loop {
            // SAFETY: `ts` is a valid timespec; the remaining-time pointer may be null
            // with TIMER_ABSTIME.
            let rc =
                unsafe { libc::clock_nanosleep(libc::CLOCK_MONOTONIC, libc::TIMER_ABSTIME, &ts, std::ptr::null_mut()) };
            if rc != libc::EINTR {
                return;
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let now = monotonic_ns();
        if deadline_ns > now {
            std::thread::sleep(Duration::from_nanos(deadline_ns - now));
        }
    }
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
        let a = monotonic_ns();
        sleep_until_monotonic(a + 2_000_000);
        let b = monotonic_ns();
        assert!(b >= a + 2_000_000, "slept {} ns", b - a);
        // A past deadline returns at once.
        sleep_until_monotonic(a);
    }
}
