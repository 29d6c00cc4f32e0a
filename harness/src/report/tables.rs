//! The run's tables (SPEC §11): one row type per CSV file — `scores.csv`, `summary.csv`,
//! `memorization.csv`, `utility.csv`, `blocks.csv`, `canaries.csv`, `comparisons.csv`,
//! all tidy long format with a fixed column order — the roles models play in them, and the
//! functions that write and read them. The bottom of `report`: it uses no other part of it.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::metrics::memorization::MemorizationRow;

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
/// The columns of `memorization.csv`.
pub const MEMORIZATION_HEADER: [&str; 9] = ["model", "sample_id", "category", "member", "matched", "compared", "ratio", "exact_prefix", "extracted"];
/// The columns of `utility.csv`.
pub const UTILITY_HEADER: [&str; 3] = ["model", "sample_id", "rouge_l"];
/// The columns of `blocks.csv`.
pub const BLOCKS_HEADER: [&str; 4] = ["model", "block", "attack", "auc"];
/// The columns of `canaries.csv`.
pub const CANARIES_HEADER: [&str; 2] = ["sample_id", "repetitions"];
/// The columns of `exposure.csv`.
pub const EXPOSURE_HEADER: [&str; 9] = ["model", "sample_id", "repetitions", "secret_log_perplexity", "candidates", "estimate", "rank", "exposure", "max_exposure"];
/// The columns of `seeds.csv`.
pub const SEEDS_HEADER: [&str; 14] = ["model", "role", "kd_method", "student", "attack", "metric", "seed", "value", "ci_low", "ci_high", "n_seeds", "sd", "min", "max"];
/// The columns of `comparisons.csv`.
pub const COMPARISONS_HEADER: [&str; 9] = ["kind", "a", "b", "attack", "value", "ci_low", "ci_high", "p_value", "n"];

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

/// A model's part in the experiment, spelt in `summary.csv` and `manifest.json` as its
/// lowercase name (`teacher`, `student`, …).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Trained on the members; the students learn from it.
    Teacher,
    /// Distilled from the teacher.
    Student,
    /// The No-KD baseline: a student-sized model trained without the teacher.
    Nokd,
    /// A model attacked on its own, outside a KD experiment: what a model with no recorded
    /// role is taken to be.
    #[default]
    Target,
    /// A model reference attacks calibrate against.
    Reference,
    /// A teacher or student made under a defense (SPEC §18): a student keeps its KD
    /// method and size; which defense, at what strength, is its [`DefenseRecord`] (the
    /// manifest, `defenses.csv`) and its name's `+LABEL`.
    Defended,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad`, not `write_str`, so that width and alignment apply as they do to a `&str`.
        f.pad(match self {
            Role::Teacher => "teacher",
            Role::Student => "student",
            Role::Nokd => "nokd",
            Role::Target => "target",
            Role::Reference => "reference",
            Role::Defended => "defended",
        })
    }
}

/// How a model took part in the experiment (`summary.csv`'s `role`, `kd_method`,
/// `student`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelRole {
    /// Its part.
    pub role: Role,
    /// The KD method that made a student.
    #[serde(default)]
    pub kd_method: String,
    /// The student size.
    #[serde(default)]
    pub student: String,
}

impl From<Role> for ModelRole {
    fn from(role: Role) -> Self {
        ModelRole { role, ..Default::default() }
    }
}

/// What defended a model, at what strength, and what the defense measured (`defense.json`
/// beside the model, then the manifest).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DefenseRecord {
    /// The defense plugin.
    pub defense: String,
    /// Its parameters.
    pub params: std::collections::BTreeMap<String, String>,
    /// The suffix of the model's name (`logit_noise-sigma2`).
    pub label: String,
    /// Where it acts (`teacher_logits`, `teacher_samples`, `teacher_training`).
    pub acts_on: Vec<String>,
    /// A student of a training defense: the defended teacher it was distilled from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teacher: Option<String>,
    /// A sample defense: the teacher samples it dropped,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed_samples: Option<usize>,
    /// of this many.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teacher_samples: Option<usize>,
    /// A training defense: ε of the `(ε, δ)`-DP guarantee (its students inherit it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epsilon: Option<f64>,
    /// δ.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<f64>,
    /// The Rényi order the accountant chose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<f64>,
    /// The defended teacher's optimiser steps,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<usize>,
    /// each on this share of the private records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_rate: Option<f64>,
}

/// How much a model was trained, and how well it predicts held-out public data (recorded
/// in the manifest by `eval`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingRecord {
    /// Optimiser steps of its own training (the budget; a warm start's or base model's
    /// steps are not counted).
    pub steps: usize,
    /// Token-weighted response cross-entropy (nats) on the held-out public validation
    /// share (`NaN` when there is none).
    pub heldout_ce: f64,
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

/// One row of `exposure.csv`: a canary's exposure under one model (Carlini et al. 2019;
/// see `memorize::exposure`).
#[derive(Clone, Debug, PartialEq)]
pub struct ExposureRow {
    /// The model.
    pub model: String,
    /// The canary.
    pub sample_id: String,
    /// How often it appears among the members.
    pub repetitions: usize,
    /// `−log₂ Pr(response | prompt)` of the canary with its secret.
    pub secret_log_perplexity: f64,
    /// Candidates scored (the rest of the space, or a sample of it).
    pub candidates: usize,
    /// `exhaustive` or `skew_normal`.
    pub estimate: String,
    /// The secret's (estimated) rank among all values of its space.
    pub rank: f64,
    /// `log₂|R| − log₂ rank`, in bits.
    pub exposure: f64,
    /// `log₂|R|`: the largest exposure possible.
    pub max_exposure: f64,
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

/// Per-sample ROUGE-L of one model's generation for a held-out prompt (`utility.csv`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UtilityRow {
    /// The model.
    pub model: String,
    /// The record.
    pub sample_id: String,
    /// ROUGE-L F ×100.
    pub rouge_l: f64,
}

/// One row of `comparisons.csv`: a paired teacher-vs-model AUC test, or a correlation
/// across models.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ComparisonRow {
    /// `paired_auc` or `spearman`.
    pub kind: &'static str,
    /// First model (the teacher), or the first quantity correlated.
    pub a: String,
    /// Second model, or the second quantity.
    pub b: String,
    /// The attack (empty for correlations).
    pub attack: String,
    /// AUC(a) − AUC(b), or ρ.
    pub value: f64,
    /// 95% bootstrap interval (paired tests).
    pub ci: Option<(f64, f64)>,
    /// Two-sided p-value.
    pub p_value: f64,
    /// Samples (paired) or models (correlations).
    pub n: usize,
}

/// One row of `seeds.csv` (a multi-seed study): a model × attack × metric of `summary.csv`
/// (category `all`) in one seed's run, with its bootstrap interval, or (`seed` empty,
/// written `all`) its mean over the seeds with their standard deviation, minimum and
/// maximum.
#[derive(Debug, Clone, PartialEq)]
pub struct SeedRow {
    /// The model.
    pub model: String,
    /// Its part in the experiment.
    pub role: ModelRole,
    /// The attack (`mem_…` rows: the memorization measure).
    pub attack: String,
    /// The metric.
    pub metric: String,
    /// The seed of a per-seed row; `None` for the across-seed row.
    pub seed: Option<u64>,
    /// The seed's value, or the mean over the seeds.
    pub value: f64,
    /// A per-seed row's 95% bootstrap interval.
    pub ci: Option<(f64, f64)>,
    /// Seeds with a finite value (1 for a per-seed row).
    pub n_seeds: usize,
    /// Across-seed rows: the sample standard deviation (n − 1; none for one seed).
    pub sd: Option<f64>,
    /// Across-seed rows: the smallest and largest seed's value.
    pub range: Option<(f64, f64)>,
}

/// Shortest text that reads back as the same f64 (exponent notation for very large or
/// small magnitudes); `inf` for +∞.
pub fn fmt_f64(x: f64) -> String {
    if x == f64::INFINITY { "inf".into() } else if x == f64::NEG_INFINITY { "-inf".into() } else { format!("{x:?}") }
}

/// A flag column's text: `1` or `0`.
fn bit(flag: bool) -> String {
    u8::from(flag).to_string()
}

/// The two columns of an optional pair (an interval, an operating point): empty when absent.
fn pair(value: Option<(f64, f64)>) -> (String, String) {
    value.map(|(a, b)| (fmt_f64(a), fmt_f64(b))).unwrap_or_default()
}

/// A row type of a CSV file: its columns and its fields as the file spells them.
pub(super) trait Record {
    const HEADER: &'static [&'static str];
    fn fields(&self) -> Vec<String>;
}

impl Record for ScoreRow {
    const HEADER: &'static [&'static str] = &SCORES_HEADER;
    fn fields(&self) -> Vec<String> {
        vec![self.model.clone(), self.attack.clone(), self.sample_id.clone(), self.category.clone(), bit(self.member), fmt_f64(self.score)]
    }
}

impl Record for SummaryRow {
    const HEADER: &'static [&'static str] = &SUMMARY_HEADER;
    fn fields(&self) -> Vec<String> {
        let (ci_low, ci_high) = pair(self.ci);
        let (realized_fpr, threshold) = pair(self.operating_point);
        let role = &self.role;
        vec![
            self.model.clone(), role.role.to_string(), role.kd_method.clone(), role.student.clone(), self.category.clone(), self.attack.clone(),
            self.metric.to_string(), fmt_f64(self.value), ci_low, ci_high, self.n_members.to_string(), self.n_nonmembers.to_string(), realized_fpr, threshold,
        ]
    }
}

impl Record for MemorizationRow {
    const HEADER: &'static [&'static str] = &MEMORIZATION_HEADER;
    fn fields(&self) -> Vec<String> {
        vec![
            self.model.clone(), self.sample_id.clone(), self.category.clone(), bit(self.member),
            self.matched.to_string(), self.compared.to_string(), fmt_f64(self.ratio), self.exact_prefix.to_string(), bit(self.extracted),
        ]
    }
}

impl Record for UtilityRow {
    const HEADER: &'static [&'static str] = &UTILITY_HEADER;
    fn fields(&self) -> Vec<String> {
        vec![self.model.clone(), self.sample_id.clone(), fmt_f64(self.rouge_l)]
    }
}

impl Record for ExposureRow {
    const HEADER: &'static [&'static str] = &EXPOSURE_HEADER;
    fn fields(&self) -> Vec<String> {
        vec![
            self.model.clone(),
            self.sample_id.clone(),
            self.repetitions.to_string(),
            fmt_f64(self.secret_log_perplexity),
            self.candidates.to_string(),
            self.estimate.clone(),
            fmt_f64(self.rank),
            fmt_f64(self.exposure),
            fmt_f64(self.max_exposure),
        ]
    }
}

impl Record for BlockRow {
    const HEADER: &'static [&'static str] = &BLOCKS_HEADER;
    fn fields(&self) -> Vec<String> {
        vec![self.model.clone(), self.block.to_string(), self.attack.clone(), fmt_f64(self.auc)]
    }
}

impl Record for ComparisonRow {
    const HEADER: &'static [&'static str] = &COMPARISONS_HEADER;
    fn fields(&self) -> Vec<String> {
        let (ci_low, ci_high) = pair(self.ci);
        vec![self.kind.to_string(), self.a.clone(), self.b.clone(), self.attack.clone(), fmt_f64(self.value), ci_low, ci_high, fmt_f64(self.p_value), self.n.to_string()]
    }
}

impl Record for SeedRow {
    const HEADER: &'static [&'static str] = &SEEDS_HEADER;
    fn fields(&self) -> Vec<String> {
        let (ci_low, ci_high) = pair(self.ci);
        let (min, max) = pair(self.range);
        let role = &self.role;
        vec![
            self.model.clone(), role.role.to_string(), role.kd_method.clone(), role.student.clone(), self.attack.clone(), self.metric.clone(),
            self.seed.map_or_else(|| "all".into(), |s| s.to_string()), fmt_f64(self.value), ci_low, ci_high, self.n_seeds.to_string(),
            self.sd.map(fmt_f64).unwrap_or_default(), min, max,
        ]
    }
}

/// Serialises rows to CSV bytes and writes them atomically.
pub(super) fn write_table<R: Record>(path: &Path, rows: &[R]) -> Result<(), ReportError> {
    let failed = |e: csv::Error| ReportError::Write { path: path.to_path_buf(), source: std::io::Error::other(e) };
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record(R::HEADER).map_err(failed)?;
    for row in rows {
        writer.write_record(row.fields()).map_err(failed)?;
    }
    let bytes = writer.into_inner().map_err(|e| ReportError::Write { path: path.to_path_buf(), source: e.into_error() })?;
    crate::files::write_atomic(path, &bytes).map_err(|source| ReportError::Write { path: path.to_path_buf(), source })
}

/// Writes `scores.csv` atomically.
pub fn write_scores(path: &Path, rows: &[ScoreRow]) -> Result<(), ReportError> {
    write_table(path, rows)
}

/// Writes `summary.csv` atomically.
pub fn write_summary(path: &Path, rows: &[SummaryRow]) -> Result<(), ReportError> {
    write_table(path, rows)
}

/// Writes `memorization.csv` atomically.
pub fn write_memorization(path: &Path, rows: &[MemorizationRow]) -> Result<(), ReportError> {
    write_table(path, rows)
}

/// Writes `utility.csv` atomically.
pub fn write_utility(path: &Path, rows: &[UtilityRow]) -> Result<(), ReportError> {
    write_table(path, rows)
}

/// Writes `exposure.csv` atomically.
pub fn write_exposure(path: &Path, rows: &[ExposureRow]) -> Result<(), ReportError> {
    write_table(path, rows)
}

/// Writes `blocks.csv` atomically.
pub fn write_blocks(path: &Path, rows: &[BlockRow]) -> Result<(), ReportError> {
    write_table(path, rows)
}

/// Writes `seeds.csv` atomically.
pub fn write_seeds(path: &Path, rows: &[SeedRow]) -> Result<(), ReportError> {
    write_table(path, rows)
}

/// Writes `comparisons.csv` atomically.
pub fn write_comparisons(path: &Path, rows: &[ComparisonRow]) -> Result<(), ReportError> {
    write_table(path, rows)
}

/// One record read from a CSV file, with what it takes to name a bad field.
struct Fields<'a> {
    path: &'a Path,
    header: &'a [&'a str],
    line: u64,
    record: csv::StringRecord,
}

impl Fields<'_> {
    fn text(&self, i: usize) -> String {
        self.record[i].to_string()
    }

    fn error(&self, message: String) -> ReportError {
        ReportError::Parse { path: self.path.to_path_buf(), line: self.line, message }
    }

    /// Parses field `i`, naming file, line and column on failure.
    fn parse<T: std::str::FromStr>(&self, i: usize) -> Result<T, ReportError> {
        self.record[i].parse().map_err(|_| self.error(format!("`{}` has an unreadable value `{}`", self.header[i], &self.record[i])))
    }

    /// Reads a `1`/`0` field.
    fn flag(&self, i: usize) -> Result<bool, ReportError> {
        match &self.record[i] {
            "1" => Ok(true),
            "0" => Ok(false),
            other => Err(self.error(format!("`{}` must be 1 or 0, found `{other}`", self.header[i]))),
        }
    }
}

/// Reads a CSV file whose first line must be `header`; yields each record with its line.
fn read_rows<'a>(path: &'a Path, header: &'a [&'a str]) -> Result<Vec<Fields<'a>>, ReportError> {
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
            let record = r.map_err(read)?;
            Ok(Fields { path, header, line: record.position().map(|p| p.line()).unwrap_or(0), record })
        })
        .collect()
}

/// Reads a `scores.csv`, naming the line of anything malformed.
pub fn read_scores(path: &Path) -> Result<Vec<ScoreRow>, ReportError> {
    let mut rows = Vec::new();
    let mut seen: HashMap<(String, String, String), u64> = HashMap::new();
    for f in read_rows(path, &SCORES_HEADER)? {
        let member = f.flag(4)?;
        let score: f64 = f.parse(5)?;
        if !score.is_finite() {
            return Err(f.error(format!("`score` must be finite, found `{}`", &f.record[5])));
        }
        let row = ScoreRow { model: f.text(0), attack: f.text(1), sample_id: f.text(2), category: f.text(3), member, score };
        if let Some(first) = seen.insert((row.model.clone(), row.attack.clone(), row.sample_id.clone()), f.line) {
            return Err(f.error(format!(
                "model `{}`, attack `{}`, sample `{}` already scored on line {first}; each sample is scored once",
                row.model, row.attack, row.sample_id
            )));
        }
        rows.push(row);
    }
    Ok(rows)
}

/// Reads the run-wide (`category` = `all`) rows of a `summary.csv` as the per-seed rows
/// of seed `seed`.
pub fn read_summary_of_seed(path: &Path, seed: u64) -> Result<Vec<SeedRow>, ReportError> {
    let mut rows = Vec::new();
    for f in read_rows(path, &SUMMARY_HEADER)? {
        if &f.record[4] != "all" {
            continue;
        }
        let role: Role = serde_json::from_value(serde_json::Value::String(f.text(1)))
            .map_err(|_| f.error(format!("`role` must be teacher, student, nokd, target or reference, found `{}`", &f.record[1])))?;
        let ci = match (&f.record[8], &f.record[9]) {
            ("", "") => None,
            _ => Some((f.parse(8)?, f.parse(9)?)),
        };
        rows.push(SeedRow {
            model: f.text(0),
            role: ModelRole { role, kd_method: f.text(2), student: f.text(3) },
            attack: f.text(5),
            metric: f.text(6),
            seed: Some(seed),
            value: f.parse(7)?,
            ci,
            n_seeds: 1,
            sd: None,
            range: None,
        });
    }
    Ok(rows)
}

/// Reads `memorization.csv`.
pub fn read_memorization(path: &Path) -> Result<Vec<MemorizationRow>, ReportError> {
    read_rows(path, &MEMORIZATION_HEADER)?
        .into_iter()
        .map(|f| {
            Ok(MemorizationRow {
                model: f.text(0),
                sample_id: f.text(1),
                category: f.text(2),
                member: f.flag(3)?,
                matched: f.parse(4)?,
                compared: f.parse(5)?,
                ratio: f.parse(6)?,
                exact_prefix: f.parse(7)?,
                extracted: f.flag(8)?,
            })
        })
        .collect()
}

/// Reads `utility.csv`.
pub fn read_utility(path: &Path) -> Result<Vec<UtilityRow>, ReportError> {
    read_rows(path, &UTILITY_HEADER)?.into_iter().map(|f| Ok(UtilityRow { model: f.text(0), sample_id: f.text(1), rouge_l: f.parse(2)? })).collect()
}

/// Reads `blocks.csv`.
pub fn read_blocks(path: &Path) -> Result<Vec<BlockRow>, ReportError> {
    read_rows(path, &BLOCKS_HEADER)?.into_iter().map(|f| Ok(BlockRow { model: f.text(0), block: f.parse(1)?, attack: f.text(2), auc: f.parse(3)? })).collect()
}

/// Reads `exposure.csv`.
pub fn read_exposure(path: &Path) -> Result<Vec<ExposureRow>, ReportError> {
    read_rows(path, &EXPOSURE_HEADER)?
        .into_iter()
        .map(|f| {
            Ok(ExposureRow {
                model: f.text(0),
                sample_id: f.text(1),
                repetitions: f.parse(2)?,
                secret_log_perplexity: f.parse(3)?,
                candidates: f.parse(4)?,
                estimate: f.text(5),
                rank: f.parse(6)?,
                exposure: f.parse(7)?,
                max_exposure: f.parse(8)?,
            })
        })
        .collect()
}

/// Reads `canaries.csv` (`sample_id,repetitions`): canary records and how often each
/// appears among the members.
pub fn read_canaries(path: &Path) -> Result<Vec<(String, usize)>, ReportError> {
    read_rows(path, &CANARIES_HEADER)?.into_iter().map(|f| Ok((f.text(0), f.parse(1)?))).collect()
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A `scores.csv` row (shared with the summary tests in `render`).
    pub(in crate::report) fn row(model: &str, attack: &str, id: &str, category: &str, member: bool, score: f64) -> ScoreRow {
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
        std::fs::write(&path, "model,attack,sample_id,category,member,score\nt,loss,m0,a,1,x\n").unwrap();
        let err = read_scores(&path).unwrap_err().to_string();
        assert!(err.ends_with("scores.csv:2: `score` has an unreadable value `x`"), "{err}");
    }

    #[test]
    fn summary_and_comparison_rows_leave_absent_pairs_empty() {
        let summary = SummaryRow {
            model: "s".into(),
            role: ModelRole { role: Role::Student, kd_method: "fkl".into(), student: "tiny".into() },
            category: "all".into(),
            attack: "loss".into(),
            metric: "tpr_at_fpr_0",
            value: 0.5,
            ci: None,
            n_members: 2,
            n_nonmembers: 3,
            operating_point: Some((0.0, f64::INFINITY)),
        };
        assert_eq!(summary.fields().join(","), "s,student,fkl,tiny,all,loss,tpr_at_fpr_0,0.5,,,2,3,0.0,inf");
        let comparison = ComparisonRow { kind: "spearman", a: "mean_auc".into(), b: "mem_gap".into(), attack: String::new(), value: -1.0, ci: None, p_value: 0.0, n: 4 };
        assert_eq!(comparison.fields().join(","), "spearman,mean_auc,mem_gap,,-1.0,,,0.0,4");
        assert_eq!(fmt_f64(f64::INFINITY), "inf");
    }

    #[test]
    fn roles_read_and_print_as_their_lowercase_names() {
        for (role, name) in [(Role::Teacher, "teacher"), (Role::Student, "student"), (Role::Nokd, "nokd"), (Role::Target, "target"), (Role::Reference, "reference")] {
            assert_eq!(role.to_string(), name);
            assert_eq!(serde_json::to_value(role).unwrap(), serde_json::json!(name));
            assert_eq!(serde_json::from_value::<Role>(serde_json::json!(name)).unwrap(), role);
        }
        let role: ModelRole = serde_json::from_value(serde_json::json!({"role": "nokd", "student": "tiny"})).unwrap();
        assert_eq!(role, ModelRole { role: Role::Nokd, kd_method: String::new(), student: "tiny".into() });
        assert_eq!(ModelRole::default().role, Role::Target);
    }
}
