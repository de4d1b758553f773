//! Shaping a link with `tc`: the [`results::Link`] a scenario asks for,
//! applied to the egress of interfaces inside a run's namespaces.
//!
//! - **Bandwidth** is a `tbf` root qdisc (token bucket: rate, a burst of
//!   0.5 ms at the rate but at least 64 KiB, and a queue of at most 20 ms
//!   so that the sender's rate is the link's and not a buffer's). A real
//!   link never runs above its rate; the burst of 4 ms that this was let a
//!   short round cross a 1 Gbit/s link at 1.35 Gbit/s. tbf segments a GSO
//!   packet larger than the burst.
//! - **Latency, jitter, loss** are a `netem` root qdisc, with the `tbf` as its
//!   child when a bandwidth is set too. Kernels without netem (the
//!   development machines' kernel has `tbf` but no `sch_netem`) refuse it
//!   with "Specified qdisc kind is unknown"; that becomes
//!   [`LinkError::MissingQdisc`] naming netem, never a silently unshaped link.
//! - The qdiscs live on interfaces inside the run's namespaces, so they go
//!   with them (`scenarios::netns` removes the namespaces).

use results::Link;
use std::process::Command;

/// Errors from shaping a link.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The kernel does not have the qdisc the link needs.
    #[error("shaping the link: the kernel has no `{qdisc}` qdisc, which the link's {what} needs (`tc` said: {msg}); load its module (`modprobe sch_{qdisc}`) or leave {what} out of the scenario's [link]")]
    MissingQdisc {
        /// The qdisc kind ("netem", "tbf").
        qdisc: &'static str,
        /// Which keys need it.
        what: &'static str,
        /// tc's message.
        msg: String,
    },
    /// `tc` failed otherwise.
    #[error("shaping the link: `{cmd}` failed: {msg}")]
    Command {
        /// The command line.
        cmd: String,
        /// Its error output.
        msg: String,
    },
    /// `tc` could not be run.
    #[error("shaping the link: cannot run `tc` (install iproute2)")]
    Spawn(#[source] std::io::Error),
}

/// Runs `tc -n NS ARGS…`.
fn tc(ns: &str, args: &[&str]) -> Result<(), LinkError> {
    let out = Command::new("tc").args(["-n", ns]).args(args).output().map_err(LinkError::Spawn)?;
    if out.status.success() {
        return Ok(());
    }
    Err(LinkError::Command {
        cmd: format!("tc -n {ns} {}", args.join(" ")),
        msg: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    })
}

/// Turns tc's "unknown qdisc kind" into [`LinkError::MissingQdisc`].
fn missing(qdisc: &'static str, what: &'static str) -> impl FnOnce(LinkError) -> LinkError {
    move |e| match e {
        LinkError::Command { msg, .. } if msg.contains("qdisc kind is unknown") => {
            LinkError::MissingQdisc { qdisc, what, msg }
        }
        other => other,
    }
}

/// The tbf burst for `bps`, bytes: what the link lets through at once, on
/// top of its rate, after it was idle.
pub fn tbf_burst(bps: u64) -> u64 {
    (bps / 8 / 2000).max(64 << 10)
}

/// The tbf arguments for `bps`: rate, burst and queue limit in bytes.
pub fn tbf_args(bps: u64) -> Vec<String> {
    let bytes_per_s = bps / 8;
    let burst = tbf_burst(bps);
    // 20 ms of queue at the rate, and room for at least two bursts.
    let limit = (bytes_per_s / 50).max(2 * burst);
    vec!["rate".into(), format!("{bps}bit"), "burst".into(), burst.to_string(), "limit".into(), limit.to_string()]
}

/// The netem arguments of `link` (delay, jitter, loss).
fn netem_args(link: &Link) -> Vec<String> {
    let mut a = Vec::new();
    if link.latency_ms.is_some() || link.jitter_ms.is_some() {
        a.push("delay".into());
        a.push(format!("{}ms", link.latency_ms.unwrap_or(0.0)));
        if let Some(j) = link.jitter_ms {
            a.push(format!("{j}ms"));
        }
    }
    if let Some(p) = link.loss_pct {
        a.push("loss".into());
        a.push(format!("{p}%"));
    }
    a
}

/// Checks values tc would take but that make no sense.
pub fn check(link: &Link) -> Result<(), String> {
    for (key, v) in [("latency", link.latency_ms), ("jitter", link.jitter_ms)] {
        if let Some(v) = v {
            if !v.is_finite() || !(0.0..=10_000.0).contains(&v) {
                return Err(format!("key `link.{key}`: must be between 0 and 10 s"));
            }
        }
    }
    if let Some(p) = link.loss_pct {
        if !p.is_finite() || !(0.0..=100.0).contains(&p) {
            return Err("key `link.loss`: must be between 0% and 100%".into());
        }
    }
    if link.jitter_ms.is_some() && link.latency_ms.is_none() {
        return Err("key `link.jitter`: needs `link.latency` (jitter varies the delay)".into());
    }
    Ok(())
}

/// Shapes the egress of `dev` in namespace `ns` as `link` says; does
/// nothing for a link with no key set.
pub fn shape(ns: &str, dev: &str, link: &Link) -> Result<(), LinkError> {
    let base = ["qdisc", "add", "dev", dev];
    let run = |extra: &[&str], more: &[String]| {
        let mut args: Vec<&str> = base.to_vec();
        args.extend_from_slice(extra);
        args.extend(more.iter().map(String::as_str));
        tc(ns, &args)
    };
    if link.needs_netem() {
        run(&["root", "handle", "1:", "netem"], &netem_args(link))
            .map_err(missing("netem", "latency, jitter or loss"))?;
        if let Some(bps) = link.bandwidth_bps {
            run(&["parent", "1:1", "handle", "10:", "tbf"], &tbf_args(bps)).map_err(missing("tbf", "bandwidth"))?;
        }
    } else if let Some(bps) = link.bandwidth_bps {
        run(&["root", "handle", "1:", "tbf"], &tbf_args(bps)).map_err(missing("tbf", "bandwidth"))?;
    }
    Ok(())
}

/// The qdiscs on `dev` in `ns`, as `tc qdisc show` prints them (for tests
/// and for the report's evidence).
pub fn show(ns: &str, dev: &str) -> Result<String, LinkError> {
    let out = Command::new("tc").args(["-n", ns, "qdisc", "show", "dev", dev]).output().map_err(LinkError::Spawn)?;
    if !out.status.success() {
        return Err(LinkError::Command {
            cmd: format!("tc -n {ns} qdisc show dev {dev}"),
            msg: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tbf_bursts_stay_small_and_queues_short() {
        let a = tbf_args(1_000_000_000);
        assert_eq!(a[1], "1000000000bit");
        let burst: u64 = a[3].parse().unwrap();
        let limit: u64 = a[5].parse().unwrap();
        assert_eq!(burst, 65_536);
        assert_eq!(limit, 2_500_000);
        assert_eq!(tbf_args(10_000_000_000)[3], "625000");
        let slow = tbf_args(8_000_000);
        assert_eq!(slow[3], (64u64 << 10).to_string());
    }

    #[test]
    fn netem_keys_are_checked() {
        let l = Link { latency_ms: Some(10.0), jitter_ms: Some(2.0), loss_pct: Some(1.5), ..Default::default() };
        assert_eq!(netem_args(&l), ["delay", "10ms", "2ms", "loss", "1.5%"]);
        assert!(check(&l).is_ok());
        assert!(check(&Link { jitter_ms: Some(1.0), ..Default::default() }).is_err());
        assert!(check(&Link { loss_pct: Some(101.0), ..Default::default() }).is_err());
        assert!(check(&Link { latency_ms: Some(f64::NAN), ..Default::default() }).is_err());
    }

    #[test]
    fn an_unknown_qdisc_is_named() {
        let e = missing("netem", "latency, jitter or loss")(LinkError::Command {
            cmd: "tc".into(),
            msg: "Error: Specified qdisc kind is unknown.".into(),
        });
        assert!(matches!(e, LinkError::MissingQdisc { qdisc: "netem", .. }));
        assert!(e.to_string().contains("no `netem` qdisc"), "{e}");
    }
}
