//! `kdharness report RUN_DIR`: rebuilds summary.csv, comparisons.csv, the figures and
//! report.html from a run's per-sample results, without opening any model.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};

use super::info;
use crate::metrics::Bootstrap;

#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    /// The run directory (holding scores.csv and/or memorization.csv).
    run_dir: PathBuf,
    /// Bootstrap resamples (default: the run's, from manifest.json, else 1000).
    #[arg(long)]
    bootstrap: Option<usize>,
    /// Bootstrap seed (default: the run's, else 0).
    #[arg(long)]
    seed: Option<u64>,
}

pub fn run(args: ReportArgs) -> Result<ExitCode> {
    let manifest: serde_json::Value = std::fs::read_to_string(args.run_dir.join("manifest.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    let recorded: Bootstrap = serde_json::from_value(manifest["bootstrap"].clone()).unwrap_or_default();
    let bootstrap = Bootstrap { resamples: args.bootstrap.unwrap_or(recorded.resamples), seed: args.seed.unwrap_or(recorded.seed) };
    let rendered = crate::report::render_run(&args.run_dir, bootstrap).with_context(|| format!("cannot build the report of {}", args.run_dir.display()))?;
    for (name, why) in &rendered.skipped {
        info(format!("{name} not drawn: {why}"));
    }
    info(format!(
        "wrote summary.csv ({} rows), comparisons.csv ({} rows), {} figures and report.html in {}",
        rendered.summary_rows,
        rendered.comparisons,
        rendered.figures.len(),
        args.run_dir.display()
    ));
    Ok(ExitCode::SUCCESS)
}
