//! `kdharness report RUN_DIR`: rebuilds summary.csv, comparisons.csv, the figures and
//! report.html from a run's per-sample results, without opening any model. For a
//! multi-seed study it rebuilds each seed's report, then seeds.csv, the seed-spread figure
//! and the study's report.html.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};

use super::info;
use crate::metrics::Bootstrap;

#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    /// The run directory (holding scores.csv and/or memorization.csv), or a multi-seed
    /// study's (holding seed-S/ run directories).
    run_dir: PathBuf,
    /// Bootstrap resamples (default: the run's, from manifest.json, else 1000).
    #[arg(long)]
    bootstrap: Option<usize>,
    /// Bootstrap seed (default: the run's, else 0; a multi-seed study's runs: each its own).
    #[arg(long)]
    seed: Option<u64>,
}

pub fn run(args: ReportArgs) -> Result<ExitCode> {
    let dir = &args.run_dir;
    let seed_dirs = crate::report::seeds::seed_dirs(dir);
    let one_run = dir.join("scores.csv").is_file() || dir.join("memorization.csv").is_file();
    if one_run || seed_dirs.is_empty() {
        rebuild(dir, &args)?;
        return Ok(ExitCode::SUCCESS);
    }
    // A multi-seed study: the seeds it records, else every seed-S directory found.
    let seeds: Vec<u64> = match manifest(dir)["seeds"].as_array() {
        Some(seeds) => seeds.iter().filter_map(serde_json::Value::as_u64).collect(),
        None => seed_dirs.iter().map(|(s, _)| *s).collect(),
    };
    for seed in &seeds {
        rebuild(&dir.join(format!("seed-{seed}")), &args)?;
    }
    let rendered = crate::report::seeds::render_seeds(dir, &seeds).with_context(|| format!("cannot build the summary of {}", dir.display()))?;
    info(format!("wrote seeds.csv ({} rows over {} seeds), {} figure(s) and report.html in {}", rendered.rows, seeds.len(), rendered.figures, dir.display()));
    Ok(ExitCode::SUCCESS)
}

/// A run directory's `manifest.json` (null when it has none or it does not parse).
fn manifest(dir: &std::path::Path) -> serde_json::Value {
    std::fs::read_to_string(dir.join("manifest.json")).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default()
}

/// Rebuilds one run's report, with the bootstrap it recorded unless told otherwise.
fn rebuild(dir: &std::path::Path, args: &ReportArgs) -> Result<()> {
    let recorded: Bootstrap = serde_json::from_value(manifest(dir)["bootstrap"].clone()).unwrap_or_default();
    let bootstrap = Bootstrap { resamples: args.bootstrap.unwrap_or(recorded.resamples), seed: args.seed.unwrap_or(recorded.seed) };
    let rendered = crate::report::render_run(dir, bootstrap).with_context(|| format!("cannot build the report of {}", dir.display()))?;
    for (name, why) in &rendered.skipped {
        info(format!("{name} not drawn: {why}"));
    }
    info(format!(
        "wrote summary.csv ({} rows), comparisons.csv ({} rows), {} figures and report.html in {}",
        rendered.summary_rows,
        rendered.comparisons,
        rendered.figures.len(),
        dir.display()
    ));
    Ok(())
}
