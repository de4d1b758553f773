//! The commitment protocol under faults. A fault-injecting proxy sits
//! between a real source and a real destination VMM and drops, corrupts,
//! delays, truncates or stalls one kind of frame, or kills one of the two
//! processes when it sees one. Each case checks the two invariants by
//! looking at both processes: never two running copies, never zero (a
//! source that committed keeps its copy paused and reports
//! `indeterminate` until it is resolved), and verifies the guest's memory
//! where it survives.

mod common;
mod fault_proxy;

use common::VmmProcess as Vmm;
use common::*;
use fault_proxy::{Action, Dir, Fault, Proxy};
use serde_json::Value;
use std::time::{Duration, Instant};
use vmm_min::control::{Phase, Reply, Request, Resolution};
use vmm_min::migration::wire::Kind;

/// What a case must end with.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// The migration fails; the guest runs on the source only.
    SourceKeeps,
    /// The migration completes; the guest runs on the destination only.
    DestinationTakes,
    /// Commit went out, Started did not come back: the source is paused
    /// and indeterminate; resolving it leaves exactly one copy.
    Indeterminate,
}

fn source() -> Vmm {
    Vmm::source(&["--workload", "memcheck:bytes=8M,rate=20000", "--memory", "64M"])
}

/// The destination exits without ever running the guest.
fn assert_never_ran(dst: Vmm, case: &str) {
    let (code, err) = dst.exit(Duration::from_secs(30));
    assert_ne!(code, Some(0), "{case}: the destination exited 0: {err}");
    assert!(!err.contains("incoming migration complete"), "{case}: the destination ran the guest: {err}");
}

fn run_case(case: &str, fault: impl FnOnce(&Vmm, &Vmm) -> Fault, expect: Expect) {
    let src = source();
    let mut dst = Vmm::destination(&[]);
    std::thread::sleep(Duration::from_millis(200));
    let proxy = Proxy::start(&dst.addr(), fault(&src, &dst));
    let t = Instant::now();
    let stats = src.migrate_to(&proxy.addr(), Value::Null);
    let took = t.elapsed();
    let outcome = stats["outcome"].as_str().unwrap_or("").to_owned();
    // Bounded: the stop-and-copy deadline (5 s), the Started timeout (10 s).
    assert!(took < Duration::from_secs(20), "{case}: the migration took {took:?}");
    match expect {
        Expect::SourceKeeps => {
            assert_eq!(outcome, "failed", "{case}: {stats:#}");
            assert!(src.beating(Duration::from_millis(300)), "{case}: the source does not run the guest");
            src.assert_memcheck();
            drop(proxy);
            assert_never_ran(dst, case);
        }
        Expect::DestinationTakes => {
            assert_eq!(outcome, "completed", "{case}: {stats:#}");
            assert!(dst.beating(Duration::from_millis(300)), "{case}: the destination does not run the guest");
            dst.assert_memcheck();
            let (code, err) = src.exit(Duration::from_secs(20));
            assert_eq!(code, Some(0), "{case}: {err}");
        }
        Expect::Indeterminate => {
            assert_eq!(outcome, "indeterminate", "{case}: {stats:#}");
            let st = status(&src.sock);
            assert_eq!(st.phase, Phase::Indeterminate, "{case}");
            assert!(st.migration_paused, "{case}");
            assert!(!src.beating(Duration::from_millis(300)), "{case}: an indeterminate source must stay paused");
            // It refuses to quit on its own word.
            assert!(matches!(control(&src.sock, Request::Quit), Reply::Error { .. }), "{case}");
            drop(proxy);
            // The operator looks at the destination, then resolves.
            let there = dst.running() && status_of(&dst).is_some_and(|p| p == Phase::Running);
            if there {
                assert!(dst.beating(Duration::from_millis(300)), "{case}");
                let r = control(&src.sock, Request::Resolve { action: Resolution::Discard });
                assert!(matches!(r, Reply::Resolved { action: Resolution::Discard }), "{case}: {r:?}");
                let (code, err) = src.exit(Duration::from_secs(20));
                assert_eq!(code, Some(0), "{case}: {err}");
                dst.assert_memcheck();
            } else {
                let r = control(&src.sock, Request::Resolve { action: Resolution::Resume });
                assert!(matches!(r, Reply::Resolved { action: Resolution::Resume }), "{case}: {r:?}");
                assert!(src.beating(Duration::from_millis(300)), "{case}: the resumed source does not run");
                src.assert_memcheck();
                assert_never_ran(dst, case);
            }
        }
    }
}

/// The destination's phase, if its control socket still answers.
fn status_of(v: &Vmm) -> Option<Phase> {
    vmm_min::control::Client::new(&v.sock).status().ok().map(|s| s.phase)
}

fn to_src(kind: Kind, action: Action) -> impl FnOnce(&Vmm, &Vmm) -> Fault {
    move |_, _| Fault { dir: Dir::ToSource, kind, action }
}

fn to_dst(kind: Kind, action: Action) -> impl FnOnce(&Vmm, &Vmm) -> Fault {
    move |_, _| Fault { dir: Dir::ToDestination, kind, action }
}

#[test]
fn ready_lost_corrupted_late_or_cut_keeps_the_source() {
    run_case("Ready dropped", to_src(Kind::Ready, Action::Drop), Expect::SourceKeeps);
    run_case("Ready corrupted", to_src(Kind::Ready, Action::Corrupt), Expect::SourceKeeps);
    run_case("Ready 7 s late", to_src(Kind::Ready, Action::Delay(Duration::from_secs(7))), Expect::SourceKeeps);
    // Ready arrived, so the source sent Commit into a closed connection: it
    // cannot know whether Commit got through.
    run_case("closed after Ready", to_src(Kind::Ready, Action::CloseAfter), Expect::Indeterminate);
    run_case("Ready truncated", to_src(Kind::Ready, Action::Truncate), Expect::SourceKeeps);
}

#[test]
fn lost_pages_digest_or_a_stalled_destination_keep_the_source() {
    run_case("every Pages frame dropped", to_dst(Kind::Pages, Action::DropAll), Expect::SourceKeeps);
    run_case("Digest dropped", to_dst(Kind::Digest, Action::Drop), Expect::SourceKeeps);
    run_case("State corrupted", to_dst(Kind::State, Action::Corrupt), Expect::SourceKeeps);
    run_case("destination stops reading at State", to_dst(Kind::State, Action::Stall), Expect::SourceKeeps);
    run_case("HelloReply dropped", to_src(Kind::HelloReply, Action::Drop), Expect::SourceKeeps);
}

#[test]
fn commit_sent_without_started_is_indeterminate_until_resolved() {
    run_case("Commit dropped", to_dst(Kind::Commit, Action::Drop), Expect::Indeterminate);
    run_case("Started dropped", to_src(Kind::Started, Action::Drop), Expect::Indeterminate);
    run_case("Started corrupted", to_src(Kind::Started, Action::Corrupt), Expect::Indeterminate);
    run_case("closed after Commit", to_dst(Kind::Commit, Action::CloseAfter), Expect::Indeterminate);
}

#[test]
fn killing_the_destination_at_each_phase() {
    let kill_dst = |kind, dir| move |_: &Vmm, d: &Vmm| Fault { dir, kind, action: Action::Kill(d.pid()) };
    for (case, kind, dir, expect) in [
        ("destination killed in setup", Kind::Hello, Dir::ToDestination, Expect::SourceKeeps),
        ("destination killed in pre-copy", Kind::Pages, Dir::ToDestination, Expect::SourceKeeps),
        ("destination killed in stop-and-copy", Kind::State, Dir::ToDestination, Expect::SourceKeeps),
        // Ready still reaches the source, which commits into a dead peer.
        ("destination killed at Ready", Kind::Ready, Dir::ToSource, Expect::Indeterminate),
        ("destination killed at Commit", Kind::Commit, Dir::ToDestination, Expect::Indeterminate),
    ] {
        run_case(case, kill_dst(kind, dir), expect);
    }
    // The source died after Commit: the destination, committed, runs it.
    run_case("sanity: no fault", to_src(Kind::Abort, Action::Drop), Expect::DestinationTakes);
}

#[test]
fn killing_the_source_at_each_phase() {
    for (case, kind, dir, runs_on_destination) in [
        ("source killed in pre-copy", Kind::Pages, Dir::ToDestination, false),
        ("source killed in stop-and-copy", Kind::State, Dir::ToDestination, false),
        ("source killed at Ready", Kind::Ready, Dir::ToSource, false),
        ("source killed at Commit", Kind::Commit, Dir::ToDestination, true),
    ] {
        let src = source();
        let dst = Vmm::destination(&[]);
        let proxy = Proxy::start(&dst.addr(), Fault { dir, kind, action: Action::Kill(src.pid()) });
        let sock = src.sock.clone();
        let to = proxy.addr();
        // The source dies inside the request: its reply never comes.
        let migrating = std::thread::spawn(move || {
            vmm_min::control::Client::new(&sock).call(
                &Request::Migrate {
                    to,
                    policy: results::Policy::default(),
                    verify: true,
                    stop_deadline_ms: None,
                    throttle: None,
                },
                Duration::from_secs(60),
            )
        });
        assert!(migrating.join().expect("thread").is_err(), "{case}: the killed source answered");
        let (code, _) = src.exit(Duration::from_secs(10));
        assert_eq!(code, None, "{case}: the source was not killed");
        if runs_on_destination {
            assert!(dst.beating(Duration::from_millis(300)), "{case}: the committed destination does not run it");
            dst.assert_memcheck();
        } else {
            drop(proxy);
            assert_never_ran(dst, case);
        }
    }
}

#[test]
fn the_control_socket_bounds_its_clients_and_guards_a_migrating_vm() {
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::net::UnixStream;
    let src = source();
    let mode = std::fs::metadata(&src.sock).expect("socket").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "control socket mode {mode:o}");

    // A line over 64 KiB is refused and the connection closed; the VMM
    // answers the next client.
    let mut long = UnixStream::connect(&src.sock).expect("connect");
    let mut refusal = String::new();
    let writer = {
        let mut w = long.try_clone().expect("clone");
        std::thread::spawn(move || {
            let chunk = vec![b'x'; 1 << 20];
            for _ in 0..8 {
                if w.write_all(&chunk).is_err() {
                    break;
                }
            }
        })
    };
    BufReader::new(&mut long).read_line(&mut refusal).expect("a refusal");
    let _ = writer.join();
    assert!(refusal.contains("longer than 65536 bytes"), "{refusal}");
    assert_eq!(status(&src.sock).phase, Phase::Running);

    // More than 16 connections: the 17th is refused, the VMM still answers.
    // (First let the server finish with the status connections above: a
    // connection counts until its thread has seen the client close it.)
    std::thread::sleep(Duration::from_secs(1));
    let held: Vec<_> = (0..16).map(|_| UnixStream::connect(&src.sock).expect("connect")).collect();
    std::thread::sleep(Duration::from_millis(100));
    let mut extra = String::new();
    let extra_conn = UnixStream::connect(&src.sock).expect("connect");
    extra_conn.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    BufReader::new(extra_conn).read_line(&mut extra).expect("refusal");
    assert!(extra.contains("too many control connections"), "{extra}");
    drop(held);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(status(&src.sock).phase, Phase::Running);

    // While a stalled destination holds the migration in stop-and-copy,
    // status reports the migration's pause and resume is refused.
    let dst = Vmm::destination(&[]);
    let proxy = Proxy::start(&dst.addr(), Fault { dir: Dir::ToDestination, kind: Kind::State, action: Action::Stall });
    let sock = src.sock.clone();
    let to = proxy.addr();
    let migrating = std::thread::spawn(move || {
        let req = Request::Migrate {
            to,
            policy: results::Policy::default(),
            verify: false,
            stop_deadline_ms: Some(3000),
            throttle: None,
        };
        vmm_min::control::Client::new(&sock).call(&req, Duration::from_secs(60))
    });
    let t = Instant::now();
    let paused = loop {
        let st = status(&src.sock);
        if st.migration_paused || t.elapsed() > Duration::from_secs(10) {
            break st;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(paused.migration_paused && paused.phase == Phase::Migrating, "{paused:?}");
    assert!(matches!(control(&src.sock, Request::Resume), Reply::Error { .. }));
    assert!(matches!(control(&src.sock, Request::Pause), Reply::Error { .. }));
    // The stop-and-copy deadline (3 s here) ends it: the source runs again.
    let reply = migrating.join().expect("thread").expect("reply");
    match reply {
        Reply::Migrated(s) => assert_eq!(s.outcome, results::Outcome::Failed, "{s:?}"),
        other => panic!("{other:?}"),
    }
    assert!(t.elapsed() < Duration::from_secs(8), "the paused phase was not bounded: {:?}", t.elapsed());
    assert!(src.beating(Duration::from_millis(300)));
    src.assert_memcheck();
    drop(proxy);
    assert_never_ran(dst, "stalled destination");
}
