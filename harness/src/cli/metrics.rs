//! `kdharness metrics`: recompute summary.csv from a scores.csv (e.g. after editing or
//! merging score files, or with other bootstrap settings).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};

use super::info;
use crate::metrics::Bootstrap;
use crate::report::{self, ModelRole};

#[derive(clap::Args, Debug)]
pub struct MetricsArgs {
    /// A scores.csv written by `kdharness attack` or `eval`.
    #[arg(long, value_name = "scores.csv")]
    scores: PathBuf,
    /// Where to write summary.csv (default: beside the scores).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Bootstrap seed (default: the one in manifest.json beside the scores, else 0).
    #[arg(long)]
    seed: Option<u64>,
    /// Bootstrap resamples (default: as in manifest.json, else 1000).
    #[arg(long)]
    bootstrap: Option<usize>,
}

/// Roles and bootstrap settings recorded by the run that wrote the scores, if any.
fn manifest_settings(manifest: &std::path::Path) -> Result<(HashMap<String, ModelRole>, Option<Bootstrap>)> {
    if !manifest.is_file() {
        return Ok((HashMap::new(), None));
    }
    let text = std::fs::read_to_string(manifest).with_context(|| format!("cannot read {}", manifest.display()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", manifest.display()))?;
    let mut roles = HashMap::new();
    for model in value["models"].as_array().into_iter().flatten() {
        if let (Some(name), Ok(role)) = (model["name"].as_str(), serde_json::from_value::<ModelRole>(model["role"].clone())) {
            roles.insert(name.to_string(), role);
        }
    }
    let bootstrap = serde_json::from_value(value["bootstrap"].clone()).ok();
    Ok((roles, bootstrap))
}

pub fn run(args: MetricsArgs) -> Result<ExitCode> {
    let rows = report::read_scores(&args.scores)?;
    if rows.is_empty() {
        bail!("{} holds no scores", args.scores.display());
    }
    let dir = args.scores.parent().map(|p| p.to_path_buf()).unwrap_or_default();
    let (roles, recorded) = manifest_settings(&dir.join("manifest.json"))?;
    let recorded = recorded.unwrap_or_default();
    let bootstrap =
        Bootstrap { resamples: args.bootstrap.unwrap_or(recorded.resamples), seed: args.seed.unwrap_or(recorded.seed) };
    let summary = report::summarize(
        &rows,
        |model| roles.get(model).cloned().unwrap_or_default(),
        bootstrap,
    );
    if summary.is_empty() {
        bail!("{}: no model/attack has both members and non-members", args.scores.display());
    }
    let out = args.out.unwrap_or(dir);
    let path = out.join("summary.csv");
    report::write_summary(&path, &summary)?;
    info(format!("wrote {} ({} rows)", path.display(), summary.len()));
    Ok(ExitCode::SUCCESS)
}
