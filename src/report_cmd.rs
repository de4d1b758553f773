//! `migbench report DIR [--baseline BASE_DIR]`: regenerate a results
//! folder's report from its raw JSON (`reports::write_report_from_dir`), and
//! with a baseline folder the regression view (`reports::regression`).

use crate::cli::ReportArgs;
use anyhow::{bail, Result};
use reports::regression;
use reports::report::load_results_dir;
use std::process::ExitCode;

pub fn run(args: ReportArgs) -> Result<ExitCode> {
    if !args.dir.is_dir() {
        bail!(
            "{} is not a folder: give a results folder written by `migbench reproduce` or `scenario`",
            args.dir.display()
        );
    }
    let paths = reports::write_report_from_dir(&args.dir)?;
    eprintln!("migbench: report regenerated: {} and {}", paths.markdown.display(), paths.html.display());
    let Some(base_dir) = &args.baseline else {
        println!("{}", paths.html.display());
        return Ok(ExitCode::SUCCESS);
    };
    let base: Vec<_> = load_results_dir(base_dir)?.into_iter().map(|(_, s)| s).collect();
    let new: Vec<_> = load_results_dir(&args.dir)?.into_iter().map(|(_, s)| s).collect();
    let (pairs, only_new, only_base) = regression::pair_folders(base, new);
    for n in &only_new {
        eprintln!("migbench: scenario {n} has no baseline in {}; left out of the regression view", base_dir.display());
    }
    for n in &only_base {
        eprintln!("migbench: baseline scenario {n} is not in {}; left out of the regression view", args.dir.display());
    }
    if pairs.is_empty() {
        bail!("{} and {} have no scenario in common: nothing to compare", base_dir.display(), args.dir.display());
    }
    let r = regression::write_regression(&args.dir, &pairs, None)?;
    eprintln!("migbench: regression view: {} and {}", r.markdown.display(), r.html.display());
    println!("{}", r.html.display());
    Ok(ExitCode::SUCCESS)
}
