//! Outputs (SPEC §11): the tables — `scores.csv` (one row per model × attack × sample),
//! `summary.csv` (one row per model × attack × category × metric), `memorization.csv`,
//! `utility.csv`, `blocks.csv`, `comparisons.csv`, all tidy long format with a fixed column
//! order — and, in [`render`], [`figures`] and `html`, the report built from them.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::metrics::{self, Bootstrap, Metrics};

pub mod figures;
mod html;
pub mod render;

pub use render::{ModelEntry, ReportData, UtilityRow, render_run};

/// Columns of `scores.csv`.
pub const SCORES_HEADER: [&str; 6] = ["model", "attack", "sample_id", "category", "member", "score"];
/// Columns of `summary.csv`.
pub const SUMMARY_HEADER: [&str; 14] = [
    "model",
    "role",
    "kd_method",
    "student",
    "category",
    "attack",
    "metric",
    "value",
    "ci_low",
    "ci_high",
    "n_members",
    "n_nonmembers",
    "realized_fpr",
    "threshold",
];

#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)] // each variant is documented by its #[error] message
pub enum ReportError {
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
    #[error("cannot read {}: {message}", path.display())]
    Read { path: PathBuf, message: String },
    #[error("{}:{line}: {message}", path.display())]
    Parse { path: PathBuf, line: u64, message: String },
}

/// One attack score of one sample under one model: a row of `scores.csv`, whose columns
/// the fields are.
#[derive(Clone, Debug, PartialEq)]
#[allow(missing_docs)]
pub struct ScoreRow {
    pub model: String,
    pub attack: String,
    pub sample_id: String,
    pub category: String,
    pub member: bool,
    pub score: f64,
}

/// How a model took part in the experiment (`summary.csv`'s `role`, `kd_method`,
/// `student`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelRole {
    /// teacher, student, nokd, reference or target.
    pub role: String,
    /// The KD method that made a student.
    #[serde(default)]
    pub kd_method: String,
    /// The student size.
    #[serde(default)]
    pub student: String,
}

/// One row of `summary.csv`.
#[derive(Clone, Debug, PartialEq)]
pub struct SummaryRow {
    /// The model attacked.
    pub model: String,
    /// Its part in the experiment.
    pub role: ModelRole,
    /// `all` or a task category.
    pub category: String,
    /// The attack (with `:REFERENCE` for reference attacks run per reference model).
    pub attack: String,
    /// One of [`crate::metrics::METRIC_NAMES`].
    pub metric: &'static str,
    /// The metric's value.
    pub value: f64,
    /// 95% bootstrap interval, when bootstrapping.
    pub ci: Option<(f64, f64)>,
    /// Members scored.
    pub n_members: usize,
    /// Non-members scored.
    pub n_nonmembers: usize,
    /// For operating-point metrics: the realised FPR and the threshold.
    pub operating_point: Option<(f64, f64)>,
}

/// Shortest text that reads back as the same f64 (exponent notation for very large or
/// small magnitudes); `inf` for +∞.
pub fn fmt_f64(x: f64) -> String {
    if x == f64::INFINITY { "inf".into() } else if x == f64::NEG_INFINITY { "-inf".into() } else { format!("{x:?}") }
}

fn csv_error(path: &Path) -> impl Fn(csv::Error) -> ReportError + '_ {
    move |e| ReportError::Write { path: path.to_path_buf(), source: std::io::Error::other(e) }
}

/// Serialises rows to CSV bytes and writes them atomically.
fn write_csv(path: &Path, header: &[&str], rows: impl Iterator<Item = Vec<String>>) -> Result<(), ReportError> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record(header).map_err(csv_error(path))?;
    for row in rows {
        writer.write_record(&row).map_err(csv_error(path))?;
    }
    let bytes = writer.into_inner().map_err(|e| ReportError::Write { path: path.to_path_buf(), source: e.into_error() })?;
    crate::util::write_atomic(path, &bytes).map_err(|source| ReportError::Write { path: path.to_path_buf(), source })
}

/// Writes `scores.csv` atomically.
pub fn write_scores(path: &Path, rows: &[ScoreRow]) -> Result<(), ReportError> {
    write_csv(
        path,
        &SCORES_HEADER,
        rows.iter().map(|r| {
            vec![
                r.model.clone(),
                r.attack.clone(),
                r.sample_id.clone(),
                r.category.clone(),
                if r.member { "1" } else { "0" }.into(),
                fmt_f64(r.score),
            ]
        }),
    )
}

/// Reads a `scores.csv`, naming the line of anything malformed.
pub fn read_scores(path: &Path) -> Result<Vec<ScoreRow>, ReportError> {
    let mut rows = Vec::new();
    let mut seen: HashMap<(String, String, String), u64> = HashMap::new();
    for (line, record) in read_rows(path, &SCORES_HEADER)? {
        let parse = |message: String| ReportError::Parse { path: path.to_path_buf(), line, message };
        let member = flag(path, line, &record[4], "member")?;
        let score: f64 = field(path, line, &record, &SCORES_HEADER, 5)?;
        if !score.is_finite() {
            return Err(parse(format!("`score` must be finite, found `{}`", &record[5])));
        }
        if let Some(first) = seen.insert((record[0].into(), record[1].into(), record[2].into()), line) {
            return Err(parse(format!(
                "model `{}`, attack `{}`, sample `{}` already scored on line {first}; each sample is scored once",
                &record[0], &record[1], &record[2]
            )));
        }
        rows.push(ScoreRow {
            model: record[0].into(),
            attack: record[1].into(),
            sample_id: record[2].into(),
            category: record[3].into(),
            member,
            score,
        });
    }
    Ok(rows)
}

/// Distinct values in order of first appearance.
fn first_seen<'a>(values: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut seen = BTreeSet::new();
    values.filter(|v| seen.insert(*v)).collect()
}

/// Member scores and non-member scores of one group.
type MemberScores = (Vec<f64>, Vec<f64>);

/// Every metric for every (model, attack) in `rows`, overall (`category = all`) and per
/// category. A category lacking members or non-members has no defined metric and is left
/// out. Row order follows the first appearance of models and attacks in `rows`.
pub fn summarize(rows: &[ScoreRow], role_of: impl Fn(&str) -> ModelRole + Sync, bootstrap: Bootstrap) -> Vec<SummaryRow> {
    // (model, attack, category) -> (member scores, non-member scores); "all" gets every row.
    let mut groups: HashMap<(&str, &str, &str), MemberScores> = HashMap::new();
    for r in rows {
        for category in std::iter::once("all").chain((r.category != "all").then_some(r.category.as_str())) {
            let (members, nonmembers) = groups.entry((r.model.as_str(), r.attack.as_str(), category)).or_default();
            if r.member { members.push(r.score) } else { nonmembers.push(r.score) }
        }
    }
    let models = first_seen(rows.iter().map(|r| r.model.as_str()));
    let attacks = first_seen(rows.iter().map(|r| r.attack.as_str()));
    let mut categories: Vec<&str> = first_seen(rows.iter().map(|r| r.category.as_str()));
    categories.sort();
    let mut order = Vec::new();
    for model in &models {
        for attack in &attacks {
            for category in std::iter::once("all").chain(categories.iter().copied()) {
                if let Some((members, nonmembers)) = groups.get(&(*model, *attack, category))
                    && !members.is_empty()
                    && !nonmembers.is_empty()
                {
                    order.push(((*model, *attack, category), members, nonmembers));
                }
            }
        }
    }
    order
        .par_iter()
        .map(|&((model, attack, category), members, nonmembers)| {
            let metrics = Metrics::compute(members, nonmembers);
            let intervals = metrics::bootstrap_intervals(members, nonmembers, bootstrap, &format!("{model}/{attack}/{category}"));
            let role = role_of(model);
            metrics
                .rows()
                .into_iter()
                .zip(intervals)
                .map(|((metric, value, operating_point), ci)| SummaryRow {
                    model: model.into(),
                    role: role.clone(),
                    category: category.into(),
                    attack: attack.into(),
                    metric,
                    value,
                    ci: (bootstrap.resamples > 0).then_some(ci),
                    n_members: members.len(),
                    n_nonmembers: nonmembers.len(),
                    operating_point: operating_point.map(|o| (o.realized_fpr, o.threshold)),
                })
                .collect::<Vec<_>>()
        })
        .flatten()
        .collect()
}

/// One row of `blocks.csv`: an attack's AUC with one block perturbed.
#[derive(Clone, Debug, PartialEq)]
pub struct BlockRow {
    /// The model.
    pub model: String,
    /// The transformer block.
    pub block: usize,
    /// The attack (`mope`).
    pub attack: String,
    /// Its AUC.
    pub auc: f64,
}

/// Writes `blocks.csv` atomically.
pub fn write_blocks(path: &Path, rows: &[BlockRow]) -> Result<(), ReportError> {
    write_csv(
        path,
        &["model", "block", "attack", "auc"],
        rows.iter().map(|r| vec![r.model.clone(), r.block.to_string(), r.attack.clone(), fmt_f64(r.auc)]),
    )
}

/// The columns of `memorization.csv`.
pub const MEMORIZATION_HEADER: [&str; 9] = ["model", "sample_id", "category", "member", "matched", "compared", "ratio", "exact_prefix", "extracted"];

/// Writes `memorization.csv` atomically.
pub fn write_memorization(path: &Path, rows: &[crate::memorize::MemorizationRow]) -> Result<(), ReportError> {
    write_csv(
        path,
        &MEMORIZATION_HEADER,
        rows.iter().map(|r| {
            vec![
                r.model.clone(),
                r.sample_id.clone(),
                r.category.clone(),
                (r.member as u8).to_string(),
                r.matched.to_string(),
                r.compared.to_string(),
                fmt_f64(r.ratio),
                r.exact_prefix.to_string(),
                (r.extracted as u8).to_string(),
            ]
        }),
    )
}

/// Summary rows (no attack, no operating point) for memorization and utility aggregates.
pub fn aggregate_rows(model: &str, role: &ModelRole, category: &str, aggregates: &[crate::memorize::Aggregate]) -> Vec<SummaryRow> {
    aggregates
        .iter()
        .map(|a| SummaryRow {
            model: model.into(),
            role: role.clone(),
            category: category.into(),
            attack: String::new(),
            metric: a.metric,
            value: a.value,
            ci: a.ci,
            n_members: a.n_members,
            n_nonmembers: a.n_nonmembers,
            operating_point: None,
        })
        .collect()
}

/// Writes `summary.csv` atomically.
pub fn write_summary(path: &Path, rows: &[SummaryRow]) -> Result<(), ReportError> {
    write_csv(
        path,
        &SUMMARY_HEADER,
        rows.iter().map(|r| {
            vec![
                r.model.clone(),
                r.role.role.clone(),
                r.role.kd_method.clone(),
                r.role.student.clone(),
                r.category.clone(),
                r.attack.clone(),
                r.metric.to_string(),
                fmt_f64(r.value),
                r.ci.map(|c| fmt_f64(c.0)).unwrap_or_default(),
                r.ci.map(|c| fmt_f64(c.1)).unwrap_or_default(),
                r.n_members.to_string(),
                r.n_nonmembers.to_string(),
                r.operating_point.map(|o| fmt_f64(o.0)).unwrap_or_default(),
                r.operating_point.map(|o| fmt_f64(o.1)).unwrap_or_default(),
            ]
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(model: &str, attack: &str, id: &str, category: &str, member: bool, score: f64) -> ScoreRow {
        ScoreRow { model: model.into(), attack: attack.into(), sample_id: id.into(), category: category.into(), member, score }
    }

    #[test]
    fn scores_round_trip_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("scores.csv");
        let rows = vec![row("t", "loss", "m0", "open_qa", true, -0.1 / 3.0), row("t", "loss", "n,0", "qa \"x\"", false, 1e-300)];
        write_scores(&path, &rows).unwrap();
        assert_eq!(read_scores(&path).unwrap(), rows);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("model,attack,sample_id,category,member,score\n"));
    }

    #[test]
    fn malformed_scores_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("scores.csv");
        std::fs::write(&path, "model,attack,sample_id,category,member,score\nt,loss,m0,a,1,0.5\nt,loss,n0,a,2,0.1\n").unwrap();
        let err = read_scores(&path).unwrap_err().to_string();
        assert!(err.ends_with("scores.csv:3: `member` must be 1 or 0, found `2`"), "{err}");
        std::fs::write(&path, "model,attack,sample_id,category,member,score\nt,loss,m0,a,1,0.5\nt,loss,m0,a,1,0.1\n").unwrap();
        let err = read_scores(&path).unwrap_err().to_string();
        assert!(err.ends_with("scores.csv:3: model `t`, attack `loss`, sample `m0` already scored on line 2; each sample is scored once"), "{err}");
    }

    #[test]
    fn summary_has_every_metric_per_category() {
        let rows = vec![
            row("t", "loss", "m0", "a", true, 3.0),
            row("t", "loss", "m1", "b", true, 2.0),
            row("t", "loss", "n0", "a", false, 1.0),
            row("t", "loss", "n1", "c", false, 2.5),
        ];
        let summary = summarize(&rows, |_| ModelRole { role: "target".into(), ..Default::default() }, Bootstrap { resamples: 50, seed: 1 });
        // Categories: all and a (b and c lack one class).
        assert_eq!(summary.len(), 2 * crate::metrics::METRIC_NAMES.len());
        let auc = summary.iter().find(|r| r.category == "all" && r.metric == "auc").unwrap();
        // Pairs: 3>1, 3>2.5, 2>1, 2<2.5 → 3/4.
        assert_eq!((auc.value, auc.n_members, auc.n_nonmembers), (0.75, 2, 2));
        let tpr0 = summary.iter().find(|r| r.category == "all" && r.metric == "tpr_at_fpr_0").unwrap();
        assert_eq!((tpr0.value, tpr0.operating_point), (0.5, Some((0.0, 3.0))));
        assert_eq!(fmt_f64(f64::INFINITY), "inf");
    }
}

/// Reads a CSV file whose first line must be `header`; yields each record with its line.
fn read_rows(path: &Path, header: &[&str]) -> Result<Vec<(u64, csv::StringRecord)>, ReportError> {
    let read = |e: csv::Error| ReportError::Read { path: path.to_path_buf(), message: e.to_string() };
    let mut reader = csv::Reader::from_path(path).map_err(read)?;
    let found: Vec<String> = reader.headers().map_err(read)?.iter().map(str::to_owned).collect();
    if found != header {
        return Err(ReportError::Parse {
            path: path.to_path_buf(),
            line: 1,
            message: format!("expected the header `{}`, found `{}`", header.join(","), found.join(",")),
        });
    }
    reader
        .records()
        .map(|r| {
            let r = r.map_err(read)?;
            Ok((r.position().map(|p| p.line()).unwrap_or(0), r))
        })
        .collect()
}

/// Parses field `i` of a record, naming file, line and column on failure.
fn field<T: std::str::FromStr>(path: &Path, line: u64, record: &csv::StringRecord, header: &[&str], i: usize) -> Result<T, ReportError> {
    record[i].parse().map_err(|_| ReportError::Parse {
        path: path.to_path_buf(),
        line,
        message: format!("`{}` has an unreadable value `{}`", header[i], &record[i]),
    })
}

fn flag(path: &Path, line: u64, value: &str, column: &str) -> Result<bool, ReportError> {
    match value {
        "1" => Ok(true),
        "0" => Ok(false),
        other => Err(ReportError::Parse { path: path.to_path_buf(), line, message: format!("`{column}` must be 1 or 0, found `{other}`") }),
    }
}

/// Reads `memorization.csv`.
pub fn read_memorization(path: &Path) -> Result<Vec<crate::memorize::MemorizationRow>, ReportError> {
    let h = &MEMORIZATION_HEADER;
    read_rows(path, h)?
        .into_iter()
        .map(|(line, r)| {
            Ok(crate::memorize::MemorizationRow {
                model: r[0].into(),
                sample_id: r[1].into(),
                category: r[2].into(),
                member: flag(path, line, &r[3], "member")?,
                matched: field(path, line, &r, h, 4)?,
                compared: field(path, line, &r, h, 5)?,
                ratio: field(path, line, &r, h, 6)?,
                exact_prefix: field(path, line, &r, h, 7)?,
                extracted: flag(path, line, &r[8], "extracted")?,
            })
        })
        .collect()
}

/// The columns of `utility.csv`.
pub const UTILITY_HEADER: [&str; 3] = ["model", "sample_id", "rouge_l"];

/// Writes `utility.csv` atomically.
pub fn write_utility(path: &Path, rows: &[render::UtilityRow]) -> Result<(), ReportError> {
    write_csv(path, &UTILITY_HEADER, rows.iter().map(|r| vec![r.model.clone(), r.sample_id.clone(), fmt_f64(r.rouge_l)]))
}

/// Reads `utility.csv`.
pub fn read_utility(path: &Path) -> Result<Vec<render::UtilityRow>, ReportError> {
    read_rows(path, &UTILITY_HEADER)?
        .into_iter()
        .map(|(line, r)| Ok(render::UtilityRow { model: r[0].into(), sample_id: r[1].into(), rouge_l: field(path, line, &r, &UTILITY_HEADER, 2)? }))
        .collect()
}

/// Reads `blocks.csv`.
pub fn read_blocks(path: &Path) -> Result<Vec<BlockRow>, ReportError> {
    let h = ["model", "block", "attack", "auc"];
    read_rows(path, &h)?
        .into_iter()
        .map(|(line, r)| Ok(BlockRow { model: r[0].into(), block: field(path, line, &r, &h, 1)?, attack: r[2].into(), auc: field(path, line, &r, &h, 3)? }))
        .collect()
}

/// Reads `canaries.csv` (`sample_id,repetitions`): canary records and how often each
/// appears among the members.
pub fn read_canaries(path: &Path) -> Result<Vec<(String, usize)>, ReportError> {
    let h = ["sample_id", "repetitions"];
    read_rows(path, &h)?.into_iter().map(|(line, r)| Ok((r[0].to_string(), field(path, line, &r, &h, 1)?))).collect()
}

/// The columns of `comparisons.csv`.
pub const COMPARISONS_HEADER: [&str; 9] = ["kind", "a", "b", "attack", "value", "ci_low", "ci_high", "p_value", "n"];

/// Writes `comparisons.csv` atomically.
pub fn write_comparisons(path: &Path, rows: &[render::ComparisonRow]) -> Result<(), ReportError> {
    write_csv(
        path,
        &COMPARISONS_HEADER,
        rows.iter().map(|r| {
            vec![
                r.kind.to_string(),
                r.a.clone(),
                r.b.clone(),
                r.attack.clone(),
                fmt_f64(r.value),
                r.ci.map(|c| fmt_f64(c.0)).unwrap_or_default(),
                r.ci.map(|c| fmt_f64(c.1)).unwrap_or_default(),
                fmt_f64(r.p_value),
                r.n.to_string(),
            ]
        }),
    )
}
