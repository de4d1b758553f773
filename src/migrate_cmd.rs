//! `migbench migrate`: a one-shot live migration for users and CI. Starts a
//! source (`migbench run`) and a destination (`migbench vmm --incoming`) as
//! child processes, migrates after the warm-up, checks the guest is alive on
//! the destination (and, for `memcheck`, that its own verification passes),
//! prints a summary and exits non-zero on any failure.

use crate::cli::{policy, vm_config, MigrateArgs};
use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};
use vmm_min::migration::{MigrationStats, Outcome};
use vmm_min::Workload;

/// Child VMM processes, killed if still running when dropped.
struct Children {
    dir: PathBuf,
    procs: Vec<(&'static str, Child)>,
}

impl Drop for Children {
    fn drop(&mut self) {
        for (_, c) in &mut self.procs {
            if c.try_wait().ok().flatten().is_none() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Children {
    /// Waits for child `name` to exit, up to `limit`; its exit code.
    fn wait(&mut self, name: &str, limit: Duration) -> Option<i32> {
        let t = Instant::now();
        let (_, c) = self.procs.iter_mut().find(|(n, _)| *n == name)?;
        while t.elapsed() < limit {
            if let Ok(Some(s)) = c.try_wait() {
                return s.code();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

fn control(sock: &Path, req: &Value, timeout: Duration) -> Result<Value> {
    let mut s = UnixStream::connect(sock).with_context(|| format!("connecting to {}", sock.display()))?;
    s.set_read_timeout(Some(timeout)).context("setting a timeout")?;
    writeln!(s, "{req}").context("sending a control request")?;
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).context("reading a control reply")?;
    serde_json::from_str(&line).with_context(|| format!("malformed control reply '{line}'"))
}

fn wait_for(path: &Path, child: &mut Child, what: &str) -> Result<()> {
    let t = Instant::now();
    while !path.exists() {
        if let Ok(Some(s)) = child.try_wait() {
            bail!("the {what} VMM exited ({s}) before it was ready; see its messages above");
        }
        if t.elapsed() > Duration::from_secs(20) {
            bail!("the {what} VMM did not open its control socket within 20 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// Heartbeats over `span`: whether the guest made progress.
fn alive(sock: &Path, span: Duration) -> Result<(u64, u64)> {
    let a = control(sock, &json!({"cmd": "status"}), Duration::from_secs(5))?;
    std::thread::sleep(span);
    let b = control(sock, &json!({"cmd": "status"}), Duration::from_secs(5))?;
    Ok((a["heartbeat"].as_u64().unwrap_or(0), b["heartbeat"].as_u64().unwrap_or(0)))
}

pub fn run(args: MigrateArgs) -> Result<ExitCode> {
    let config = vm_config(&args.vm)?;
    let kvm = vmm_min::vstate::vm::open_kvm()?;
    config.validate(vmm_min::vstate::vm::max_vcpus(&kvm))?;
    drop(kvm);
    let policy = policy(&args.policy)?;
    let exe = std::env::current_exe().context("locating the migbench binary")?;
    let dir = std::env::temp_dir().join(format!("migbench-{}-{}", std::process::id(), vmm_min::clock::mono_ns()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut kids = Children { dir: dir.clone(), procs: Vec::new() };
    let (src_sock, dst_sock) = (dir.join("source.sock"), dir.join("destination.sock"));

    let mut dst = Command::new(&exe)
        .args(["vmm", "--incoming", "127.0.0.1:0", "--quiet", "--control"])
        .arg(&dst_sock)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the destination VMM")?;
    let mut line = String::new();
    if let Some(out) = dst.stdout.take() {
        BufReader::new(out).read_line(&mut line).context("reading the destination's address")?;
    }
    kids.procs.push(("destination", dst));
    let to = line
        .trim()
        .strip_prefix("listening on ")
        .ok_or_else(|| anyhow!("the destination VMM did not report its address (got '{}')", line.trim()))?
        .to_owned();

    let mut src = Command::new(&exe);
    src.args(["run", "--duration", "0", "--quiet", "--memory"])
        .arg(&args.vm.memory)
        .args(["--workload", &args.vm.workload, "--memory-backend", &args.vm.memory_backend])
        .args(["--vcpus", &config.vcpus.to_string(), "--control"])
        .arg(&src_sock)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    kids.procs.push(("source", src.spawn().context("starting the source VMM")?));
    if let Some((_, c)) = kids.procs.iter_mut().find(|(n, _)| *n == "source") {
        wait_for(&src_sock, c, "source")?;
    }
    eprintln!(
        "migbench: source running {} ({} RAM, {} vCPUs); warming up for {:?}",
        config.workload,
        vmm_min::config::format_size(config.memory),
        config.vcpus,
        args.warmup
    );
    std::thread::sleep(args.warmup);
    eprintln!("migbench: migrating to {to} with the {} policy", args.policy.policy);
    let reply = control(
        &src_sock,
        &json!({"cmd": "migrate", "to": to, "policy": policy, "verify": args.verify}),
        args.policy.timeout + Duration::from_secs(120),
    )?;
    let stats: MigrationStats = serde_json::from_value(reply["stats"].clone())
        .map_err(|e| anyhow!("the source answered without statistics ({e}): {reply}"))?;

    let mut failures = Vec::new();
    let mut checks = serde_json::Map::new();
    let completed = stats.outcome == Outcome::Completed;
    if completed {
        let (a, b) = alive(&dst_sock, args.after)?;
        checks.insert("destination_heartbeat".into(), json!([a, b]));
        if b <= a {
            failures.push(format!("the guest is not alive on the destination (heartbeat {a} -> {b})"));
        }
        if matches!(config.workload, Workload::Memcheck { .. }) {
            let v = control(&dst_sock, &json!({"cmd": "verify"}), Duration::from_secs(90))?;
            checks.insert("guest_memcheck".into(), v.clone());
            if v["ok"] != true {
                failures.push(format!("the guest's own memory check failed on the destination: {v}"));
            }
        }
        let _ = control(&dst_sock, &json!({"cmd": "quit"}), Duration::from_secs(5));
        let src_code = kids.wait("source", Duration::from_secs(20));
        checks.insert("source_exit_code".into(), json!(src_code));
        if src_code != Some(0) {
            failures.push(format!("the source VMM did not exit cleanly after the migration ({src_code:?})"));
        }
    } else {
        failures.push(format!(
            "migration {}: {}",
            serde_json::to_value(stats.outcome)?.as_str().unwrap_or("failed"),
            stats.reason.as_deref().unwrap_or("no reason given")
        ));
        let (a, b) = alive(&src_sock, args.after)?;
        checks.insert("source_heartbeat".into(), json!([a, b]));
        if b <= a {
            failures.push(format!("the source guest is not running after the failed migration (heartbeat {a} -> {b})"));
        } else {
            eprintln!("migbench: the source VM kept running (heartbeat {a} -> {b})");
        }
        if matches!(config.workload, Workload::Memcheck { .. }) {
            let v = control(&src_sock, &json!({"cmd": "verify"}), Duration::from_secs(90))?;
            checks.insert("guest_memcheck".into(), v.clone());
            if v["ok"] != true {
                failures.push(format!("the guest's own memory check failed on the source: {v}"));
            }
        }
        let _ = control(&src_sock, &json!({"cmd": "quit"}), Duration::from_secs(5));
    }
    if args.verify && !stats.verify.as_ref().is_some_and(|v| v.ok) && completed {
        failures.push("memory verification failed".into());
    }
    if let (Some(max), Some(d)) = (args.max_downtime_ms, stats.downtime_ms) {
        if d > max {
            failures.push(format!("downtime {d:.2} ms exceeds --max-downtime-ms {max}"));
        }
    }

    print_summary(&stats);
    let baseline = loopback_baseline(stats.transferred_bytes);
    match &baseline {
        Ok(ms) => eprintln!(
            "migbench: a plain loopback TCP socket moves the same {:.1} MB in {ms:.1} ms (migration total / loopback = {:.2})",
            stats.transferred_bytes as f64 / 1e6,
            stats.total_ms / ms.max(1e-6)
        ),
        Err(e) => eprintln!("migbench: loopback baseline not measured: {e:#}"),
    }
    if let Some(path) = &args.json {
        let out = json!({
            "config": config,
            "migration": stats,
            "baseline": {
                "loopback_tcp_ms": baseline.as_ref().ok(),
                "what": "time for a plain loopback TCP socket to move transferred_bytes, measured right after the migration",
            },
            "checks": checks,
            "failures": failures,
        });
        std::fs::write(path, serde_json::to_string_pretty(&out)?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("migbench: statistics written to {}", path.display());
    }
    for f in &failures {
        eprintln!("migbench: FAIL: {f}");
    }
    Ok(if failures.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// Times a plain loopback TCP socket moving `bytes`: the physical limit of
/// this transport, measured in the same invocation as the migration.
fn loopback_baseline(bytes: u64) -> Result<f64> {
    use std::io::Read;
    use std::net::{TcpListener, TcpStream};
    let listener = TcpListener::bind("127.0.0.1:0").context("binding a loopback socket")?;
    let addr = listener.local_addr()?;
    let reader = std::thread::spawn(move || -> std::io::Result<u64> {
        let (mut s, _) = listener.accept()?;
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0u64;
        loop {
            match s.read(&mut buf)? {
                0 => return Ok(got),
                n => got += n as u64,
            }
        }
    });
    let chunk = vec![0x5au8; 1 << 20];
    let t = Instant::now();
    let mut s = TcpStream::connect(addr).context("connecting over loopback")?;
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        s.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    drop(s);
    let got = reader.join().map_err(|_| anyhow!("loopback reader panicked"))??;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    if got != bytes {
        bail!("loopback moved {got} of {bytes} bytes");
    }
    Ok(ms)
}

fn print_summary(s: &MigrationStats) {
    let mb = |b: u64| b as f64 / 1e6;
    eprintln!("migbench: outcome: {:?}{}", s.outcome, s.reason.as_ref().map(|r| format!(" ({r})")).unwrap_or_default());
    eprintln!(
        "migbench: total {:.1} ms, {} rounds + final {} pages, {:.1} MB transferred ({} zero pages)",
        s.total_ms,
        s.rounds.len(),
        s.final_pages,
        mb(s.transferred_bytes),
        s.zero_pages
    );
    if let Some(why) = &s.stop_reason {
        eprintln!("migbench: stop-and-copy because {why}");
    }
    if let (Some(d), Some(b)) = (s.downtime_ms, &s.downtime_breakdown) {
        eprintln!(
            "migbench: downtime {d:.2} ms = pause {:.2} + final copy {:.2} + state {:.2} + restore {:.2} + resume {:.2}",
            b.pause_ms, b.final_copy_ms, b.state_ms, b.restore_ms, b.resume_ms
        );
    }
    if let Some(v) = &s.verify {
        eprintln!(
            "migbench: memory verified: {} (source {:.1} ms, destination {:.1} ms, not in the downtime)",
            if v.ok { "ok" } else { "MISMATCH" },
            v.source_ms,
            v.destination_ms
        );
    }
}
