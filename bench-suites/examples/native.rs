//! Run the native suite and print the Markdown table (a stand-in for the CLI
//! while it is being written): `cargo run --release -p bench-suites --example
//! native -- [--quick] [--only PREFIX]... [--enough-ms MS] [--json FILE]`.

use std::time::{Duration, Instant};

use bench_suites::native::{self, NativeOptions};
use bench_suites::{table, BenchReport};

fn main() {
    let mut opts = NativeOptions::default();
    let mut json = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => opts.quick = true,
            "--only" => opts.only.extend(args.next()),
            "--json" => json = args.next(),
            "--enough-ms" => {
                opts.enough =
                    args.next().and_then(|v| v.parse::<f64>().ok()).map(|ms| Duration::from_secs_f64(ms / 1e3))
            }
            other => {
                eprintln!("unknown argument {other}");
                std::process::exit(2);
            }
        }
    }
    let t = Instant::now();
    let rows = native::run(&opts, &mut |id| eprintln!("running {id}"));
    eprintln!("native suite took {:.1} s", t.elapsed().as_secs_f64());
    let report = BenchReport { env: bench_suites::env::collect(), native: rows, ..Default::default() };
    print!("{}", table::markdown(&report));
    if let Some(path) = json {
        match report.to_json() {
            Ok(j) => {
                if let Err(e) = std::fs::write(&path, j) {
                    eprintln!("cannot write {path}: {e}");
                }
            }
            Err(e) => eprintln!("cannot serialise: {e}"),
        }
    }
}
