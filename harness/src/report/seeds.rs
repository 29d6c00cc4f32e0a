//! A multi-seed study's summary: each seed's run in `DIR/seed-S/` (a run directory of its
//! own), and in `DIR/` the table `seeds.csv` (every model × attack × metric of the seeds'
//! `summary.csv`, category `all`: each seed's value with its bootstrap interval, then the
//! mean over the seeds with their standard deviation, minimum and maximum), the seed-spread
//! figure and `report.html` linking to each seed's report. Built from the seeds' tables
//! alone: no model is opened.

use std::path::{Path, PathBuf};

use super::tables::{self, ReportError, SeedRow};
use super::{figures, html};

/// What [`render_seeds`] wrote.
#[derive(Debug)]
pub struct RenderedSeeds {
    /// Rows of `seeds.csv`.
    pub rows: usize,
    /// Figures drawn.
    pub figures: usize,
}

/// The seed runs under `dir`: its `seed-S` directories holding a run's per-sample results
/// (`scores.csv` or `memorization.csv`), by seed.
pub fn seed_dirs(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut found: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let seed = e.file_name().to_str()?.strip_prefix("seed-")?.parse().ok()?;
            let run = ["scores.csv", "memorization.csv"].iter().any(|f| e.path().join(f).is_file());
            run.then(|| (seed, e.path()))
        })
        .collect();
    found.sort();
    found
}

/// Writes `seeds.csv`, the seed-spread figure and `report.html` in `dir` from the
/// `summary.csv` of each seed's run in `dir/seed-S/`.
pub fn render_seeds(dir: &Path, seeds: &[u64]) -> Result<RenderedSeeds, ReportError> {
    let mut per_seed = Vec::new();
    for &seed in seeds {
        let path = dir.join(format!("seed-{seed}")).join("summary.csv");
        if !path.is_file() {
            return Err(ReportError::Read { path, message: format!("seed {seed}'s run has no summary: finish it first (kdharness eval CONFIG --cell seed-{seed}/report)") });
        }
        per_seed.push(tables::read_summary_of_seed(&path, seed)?);
    }
    let rows = across(&per_seed);
    tables::write_seeds(&dir.join("seeds.csv"), &rows)?;
    let figure_dir = dir.join("figures");
    let figure = figures::render_seed_spread(&rows, &figure_dir).map_err(|message| ReportError::Read { path: figure_dir, message: format!("cannot draw: {message}") })?;
    let manifest = std::fs::read_to_string(dir.join("manifest.json")).unwrap_or_else(|_| "{}".into());
    let page = html::seeds_page(&rows, seeds, figure.as_slice(), &manifest);
    let path = dir.join("report.html");
    crate::files::write_atomic(&path, page.as_bytes()).map_err(|source| ReportError::Write { path, source })?;
    Ok(RenderedSeeds { rows: rows.len(), figures: figure.iter().count() })
}

/// Every seed's rows of each model × attack × metric (in the order the first seed that has
/// it lists it), followed by their across-seed row.
pub fn across(per_seed: &[Vec<SeedRow>]) -> Vec<SeedRow> {
    let key = |r: &SeedRow| (r.model.clone(), r.attack.clone(), r.metric.clone());
    let mut keys = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for r in per_seed.iter().flatten() {
        if seen.insert(key(r)) {
            keys.push(key(r));
        }
    }
    let mut out = Vec::new();
    for k in keys {
        let rows: Vec<&SeedRow> = per_seed.iter().filter_map(|rows| rows.iter().find(|r| key(r) == k)).collect();
        out.extend(rows.iter().map(|r| (*r).clone()));
        let values: Vec<f64> = rows.iter().map(|r| r.value).filter(|v| v.is_finite()).collect();
        let n = values.len();
        let mean = if n == 0 { f64::NAN } else { values.iter().sum::<f64>() / n as f64 };
        let sd = (n >= 2).then(|| (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt());
        let range = (n >= 1).then(|| (values.iter().copied().fold(f64::INFINITY, f64::min), values.iter().copied().fold(f64::NEG_INFINITY, f64::max)));
        out.push(SeedRow { seed: None, value: mean, ci: None, n_seeds: n, sd, range, ..rows[0].clone() });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{ModelRole, Role};

    fn row(model: &str, seed: u64, value: f64) -> SeedRow {
        SeedRow {
            model: model.into(),
            role: ModelRole::from(Role::Teacher),
            attack: "loss".into(),
            metric: "auc".into(),
            seed: Some(seed),
            value,
            ci: Some((value - 0.1, value + 0.1)),
            n_seeds: 1,
            sd: None,
            range: None,
        }
    }

    #[test]
    fn the_across_seed_row_is_the_mean_with_the_sample_sd() {
        // Hand values: 0.6, 0.8, 0.7 → mean 0.7, sd √((0.01 + 0.01 + 0) / 2) = 0.1.
        let per_seed = vec![vec![row("t", 0, 0.6), row("s", 0, 0.5)], vec![row("t", 1, 0.8)], vec![row("t", 2, 0.7), row("s", 2, f64::NAN)]];
        let rows = across(&per_seed);
        let seeds: Vec<(String, Option<u64>)> = rows.iter().map(|r| (r.model.clone(), r.seed)).collect();
        let expected = [("t", Some(0)), ("t", Some(1)), ("t", Some(2)), ("t", None), ("s", Some(0)), ("s", Some(2)), ("s", None)];
        assert_eq!(seeds, expected.map(|(m, s)| (m.to_string(), s)));
        let t = &rows[3];
        assert!((t.value - 0.7).abs() < 1e-12 && (t.sd.unwrap() - 0.1).abs() < 1e-12, "{t:?}");
        assert_eq!((t.n_seeds, t.range, t.ci), (3, Some((0.6, 0.8)), None));
        // A seed without a finite value is not counted; one seed has no sd.
        let s = &rows[6];
        assert_eq!((s.value, s.n_seeds, s.sd, s.range), (0.5, 1, None, Some((0.5, 0.5))));
    }
}
