//! A study of several `seeds`: the whole run once per seed, each in `OUT/seed-S/` exactly
//! as a one-seed run with `seed = S` would make it, then the summary across seeds in `OUT/`
//! (`seeds.csv`, the seed-spread figure, `report.html`, `manifest.json`). The plan's
//! multi-seed cells (`seed-S/ID`, `seeds`) map onto the seeds' own cells here.

use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde_json::json;

use super::plan::{self, SEEDS, seed_dir, split_seed};
use super::{Options, lock, run_one};
use crate::config::Loaded;
use crate::status;

/// The config and options of seed `seed`'s run.
fn seed_run(loaded: &Loaded, opts: &Options, seed: u64, cell: Option<String>) -> (Loaded, Options) {
    let loaded = Loaded { config: loaded.config.for_seed(seed), path: loaded.path.clone(), text: loaded.text.clone() };
    let opts = Options { out: opts.out.join(seed_dir(seed)), cell, ..opts.clone() };
    (loaded, opts)
}

/// Runs the study of `loaded` (which has `seeds`) into `opts.out`, or the one cell
/// `opts.cell`.
pub(super) fn run(loaded: &Loaded, opts: &Options) -> Result<()> {
    let started = Instant::now();
    let seeds = &loaded.config.seeds;
    std::fs::create_dir_all(&opts.out).with_context(|| format!("cannot create {}", opts.out.display()))?;
    // Which cell of which seed's run, or every seed's run.
    let per_seed: Vec<(u64, Option<String>)> = match opts.cell.as_deref() {
        None => seeds.iter().map(|&s| (s, None)).collect(),
        Some(SEEDS) => seeds.iter().map(|&s| (s, Some("report".to_string()))).collect(),
        Some(id) => match split_seed(id) {
            Some((seed, cell)) if seeds.contains(&seed) => vec![(seed, Some(cell.to_string()))],
            _ => {
                let first = seed_dir(seeds[0]);
                bail!("--cell `{id}` is not a cell of this multi-seed plan: give `SEED-DIR/CELL` (e.g. `{first}/teacher`; seeds: {}) or `{SEEDS}`; `kdharness eval CONFIG --plan` lists them", seed_list(seeds))
            }
        },
    };
    let (_lock, _shared) = match opts.cell {
        None => (Some(lock::RunLock::take(&opts.out)?), None),
        Some(_) => (None, Some(lock::RunLock::share(&opts.out)?)),
    };
    let mut seconds = serde_json::Map::new();
    for (seed, cell) in per_seed {
        status::info(format!("seed {seed}: into {}", opts.out.join(seed_dir(seed)).display()));
        let (loaded, opts) = seed_run(loaded, opts, seed, cell);
        let seed_started = Instant::now();
        run_one(&loaded, &opts).with_context(|| format!("seed {seed} (run directory {})", opts.out.display()))?;
        seconds.insert(seed.to_string(), json!(seed_started.elapsed().as_secs_f64()));
    }
    match opts.cell.as_deref() {
        None => summarise(loaded, opts, started, seconds),
        Some(SEEDS) => {
            let _cell = lock::CellLock::take(&opts.out, SEEDS)?;
            summarise(loaded, opts, started, seconds)
        }
        Some(_) => Ok(()),
    }
}

/// The across-seed tables, figure, page and manifest in `opts.out`, from the seeds'
/// reports.
fn summarise(loaded: &Loaded, opts: &Options, started: Instant, seconds: serde_json::Map<String, serde_json::Value>) -> Result<()> {
    let seeds = &loaded.config.seeds;
    let manifest = json!({
        "kdharness_version": env!("CARGO_PKG_VERSION"),
        "seeds": seeds,
        "runs": seeds.iter().map(|&s| seed_dir(s)).collect::<Vec<_>>(),
        "config_file": loaded.path,
        "config": loaded.text,
        "seconds_by_seed": seconds,
        "seconds": started.elapsed().as_secs_f64(),
    });
    let path = opts.out.join("manifest.json");
    let text = serde_json::to_string_pretty(&manifest).expect("JSON values serialise");
    crate::files::write_atomic(&path, text.as_bytes()).with_context(|| format!("cannot write {}", path.display()))?;
    let rendered = crate::report::seeds::render_seeds(&opts.out, seeds)?;
    status::info(format!(
        "seeds: {} rows of seeds.csv over {} seeds, {} figure(s) and report.html in {}",
        rendered.rows,
        seeds.len(),
        rendered.figures,
        opts.out.display()
    ));
    Ok(())
}

/// The multi-seed cells that are not done in `opts.out` (`seeds` always is not).
pub(super) fn pending(loaded: &Loaded, opts: &Options) -> Result<Vec<String>> {
    let mut pending = Vec::new();
    for &seed in &loaded.config.seeds {
        let (loaded, opts) = seed_run(loaded, opts, seed, None);
        let registry = crate::plugins::load(&opts.plugin_dirs);
        pending.extend(super::pending(&loaded, &opts, registry)?.into_iter().map(|id| format!("{}/{id}", seed_dir(seed))));
    }
    pending.push(SEEDS.to_string());
    // In plan order.
    let order: Vec<String> = plan::plan(&loaded.config).into_iter().map(|c| c.id).collect();
    pending.sort_by_key(|id| order.iter().position(|o| o == id));
    Ok(pending)
}

fn seed_list(seeds: &[u64]) -> String {
    seeds.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
}
