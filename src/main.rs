//! `migbench`: the command-line front of the harness. Each subcommand lives
//! in its own module; errors reach the user through `anyhow` with context.

extern crate alloc;

mod bench_cmd;
mod bench_macro;
mod bench_net;
mod bench_qemu;
mod cli;
mod guest_http;
mod image_cmd;
mod migrate_cmd;
mod net_cmd;
mod probe_cmd;
mod progress;
mod qemu_incoming_cmd;
mod report_cmd;
mod scenario_cmd;
mod serve;
mod systems;
mod tls_cmd;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let started = std::time::Instant::now();
    // Before any thread exists: Ctrl-C and SIGTERM are taken by one thread
    // that removes this run's network namespaces, then exits with 130.
    scenarios::netns::remove_on_signal();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("MIGBENCH_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let args = cli::Cli::parse();
    let result = match args.command {
        cli::Command::Run(a) => serve::run(a, started),
        cli::Command::Vmm(a) => serve::incoming(a),
        cli::Command::Migrate(a) => migrate_cmd::run(*a),
        cli::Command::Bench(a) => bench_cmd::run(a),
        cli::Command::Probe(a) => probe_cmd::run(a),
        cli::Command::Scenario(a) => scenario_cmd::scenario(a),
        cli::Command::Reproduce(a) => scenario_cmd::reproduce(a),
        cli::Command::Check(a) => scenario_cmd::check(a),
        cli::Command::TlsInit(a) => tls_cmd::init(a),
        cli::Command::Report(a) => report_cmd::run(a),
        cli::Command::Image(a) => image_cmd::run(a),
        cli::Command::QemuIncoming(a) => qemu_incoming_cmd::run(a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("migbench: error: {}", error_chain(&e));
            ExitCode::from(1)
        }
    }
}

/// The error and its causes, joined by ": ", leaving out a cause whose text
/// the message already holds (several library errors print their source in
/// their own message, as `{e:#}` would then print it twice).
fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::error_chain;

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory");
        let wrapped = reports::error::ReportError::Io { path: "/x/bench.json".into(), source: io };
        let e = anyhow::Error::new(wrapped).context("saving the report");
        assert_eq!(error_chain(&e), "saving the report: /x/bench.json: No such file or directory");
        let plain = anyhow::anyhow!("inner").context("outer");
        assert_eq!(error_chain(&plain), "outer: inner");
    }
}
