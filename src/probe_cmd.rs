//! `migbench probe URL`: the 10 ms HTTP transfer-rate probe on its own,
//! against any `http://` server.

use crate::cli::ProbeArgs;
use anyhow::{Context, Result};
use probes::http::{run_blocking, ProbeConfig};
use std::process::ExitCode;

pub fn run(args: ProbeArgs) -> Result<ExitCode> {
    let cfg = ProbeConfig {
        url: args.url.clone(),
        interval: args.interval,
        connections: args.connections,
        duration: Some(args.duration),
        timeout: args.timeout,
        ..Default::default()
    };
    cfg.validate()?;
    eprintln!(
        "migbench: probing {} with {} connections, sampling every {:?}, for {:?}",
        cfg.url, cfg.connections, cfg.interval, args.duration
    );
    let result = run_blocking(&cfg)?;
    let s = &result.summary;
    eprintln!(
        "migbench: {} requests, {:.1} MB, mean {:.1} Mbit/s; latency p50 {} µs, p99 {} µs; {} errors, {} timeouts, {} reconnects, {} corrupted, {} unverified (no ETag)",
        s.requests,
        s.bytes as f64 / 1e6,
        s.mean_rate_mbps,
        s.latency_us.p50,
        s.latency_us.p99,
        s.errors,
        s.timeouts,
        s.reconnects,
        s.corruptions,
        s.unverified
    );
    if let Some(gap) = &s.app_downtime {
        eprintln!("migbench: longest stretch without data: {:.1} ms", gap.duration_ms());
    }
    if let Some(p) = &args.csv {
        result.save_csv(p).with_context(|| format!("writing {}", p.display()))?;
        eprintln!("migbench: samples written to {}", p.display());
    }
    if let Some(p) = &args.json {
        result.save_json(p).with_context(|| format!("writing {}", p.display()))?;
        eprintln!("migbench: result written to {}", p.display());
    }
    if s.corruptions > 0 {
        eprintln!("migbench: FAIL: {} responses did not match their ETag", s.corruptions);
        return Ok(ExitCode::from(1));
    }
    if s.bytes == 0 {
        eprintln!(
            "migbench: FAIL: no data received{}",
            s.last_error.as_ref().map(|e| format!(" (last error: {e})")).unwrap_or_default()
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}
