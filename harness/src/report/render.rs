//! The report stage (SPEC §11, `kdharness report RUN_DIR`): everything a run wrote that
//! is derived — `summary.csv`, `comparisons.csv`, the figures and `report.html` — rebuilt
//! from the per-sample results alone (`scores.csv`, `memorization.csv`, `utility.csv`,
//! `blocks.csv`, `canaries.csv`) and the roles in `manifest.json`. No model is opened.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::Serialize;

use super::figures::{self, Figure};
use super::{BlockRow, ModelRole, ReportError, ScoreRow, SummaryRow};
use crate::memorize::{self, MemorizationRow};
use crate::metrics::{self, Bootstrap};

/// A model of the run and its role.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelEntry {
    /// Its name in every file.
    pub name: String,
    /// teacher / student / nokd / reference / target, KD method, student size.
    pub role: ModelRole,
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

/// Everything the report is made from.
#[derive(Debug, Clone, Default)]
pub struct ReportData {
    /// Models in run order.
    pub models: Vec<ModelEntry>,
    /// Attack scores.
    pub scores: Vec<ScoreRow>,
    /// Memorization per model and sample.
    pub memorization: Vec<MemorizationRow>,
    /// Utility per model and sample.
    pub utility: Vec<UtilityRow>,
    /// Per-block AUCs.
    pub blocks: Vec<BlockRow>,
    /// Canary records and how often each was repeated among the members.
    pub canaries: Vec<(String, usize)>,
    /// The summary rows computed from the above.
    pub summary: Vec<SummaryRow>,
    /// Comparison length K of the memorization rows.
    pub k: usize,
}

impl ReportData {
    /// Attacks in order of first appearance.
    pub fn attacks(&self) -> Vec<String> {
        let mut seen = Vec::new();
        for r in &self.scores {
            if !seen.contains(&r.attack) {
                seen.push(r.attack.clone());
            }
        }
        seen
    }

    /// A metric of a model over all samples (NaN when absent).
    pub fn metric(&self, model: &str, metric: &str) -> f64 {
        self.summary.iter().find(|r| r.model == model && r.category == "all" && r.metric == metric && r.attack.is_empty()).map_or(f64::NAN, |r| r.value)
    }

    /// The AUC of `attack` on `model` (NaN when absent).
    pub fn auc(&self, model: &str, attack: &str) -> f64 {
        self.auc_row(model, attack).map_or(f64::NAN, |r| r.value)
    }

    fn auc_row(&self, model: &str, attack: &str) -> Option<&SummaryRow> {
        self.summary.iter().find(|r| r.model == model && r.attack == attack && r.category == "all" && r.metric == "auc")
    }

    /// Student sizes in order of first appearance.
    pub fn student_sizes(&self) -> Vec<String> {
        let mut sizes = Vec::new();
        for m in self.models.iter().filter(|m| m.role.role == "student") {
            if !sizes.contains(&m.role.student) {
                sizes.push(m.role.student.clone());
            }
        }
        sizes
    }

    /// KD methods in order of first appearance.
    pub fn kd_methods(&self) -> Vec<String> {
        let mut methods = Vec::new();
        for m in self.models.iter().filter(|m| m.role.role == "student") {
            if !methods.contains(&m.role.kd_method) {
                methods.push(m.role.kd_method.clone());
            }
        }
        methods
    }

    /// The students of one size, in KD-method order.
    pub fn students_of_size(&self, size: &str) -> Vec<&ModelEntry> {
        let mut out: Vec<&ModelEntry> = self.models.iter().filter(|m| m.role.role == "student" && m.role.student == size).collect();
        let order = self.kd_methods();
        out.sort_by_key(|m| order.iter().position(|k| *k == m.role.kd_method));
        out
    }

    /// Models that have attack scores, in run order.
    pub fn models_with_scores(&self) -> Vec<String> {
        self.models.iter().filter(|m| self.scores.iter().any(|s| s.model == m.name)).map(|m| m.name.clone()).collect()
    }

    /// ROC curve `(FPR, TPR)` of one model and attack.
    pub fn roc(&self, model: &str, attack: &str) -> Option<Vec<(f64, f64)>> {
        let (m, n) = self.split_scores(model, attack);
        if m.is_empty() || n.is_empty() {
            return None;
        }
        let points = metrics::roc_points(&m, &n);
        Some(points.iter().map(|p| (p.fp as f64 / n.len() as f64, p.tp as f64 / m.len() as f64)).collect())
    }

    fn split_scores(&self, model: &str, attack: &str) -> (Vec<f64>, Vec<f64>) {
        let mut rows: Vec<&ScoreRow> = self.scores.iter().filter(|s| s.model == model && s.attack == attack).collect();
        rows.sort_by(|a, b| a.sample_id.cmp(&b.sample_id));
        let m = rows.iter().filter(|r| r.member).map(|r| r.score).collect();
        let n = rows.iter().filter(|r| !r.member).map(|r| r.score).collect();
        (m, n)
    }

    /// Mean student AUC per KD method over attacks and sizes, with the mean of the
    /// constituent 95% intervals: `(method, mean, low, high)`.
    pub fn mean_auc_by_method(&self) -> Vec<(String, f64, f64, f64)> {
        let attacks = self.attacks();
        self.kd_methods()
            .into_iter()
            .filter_map(|method| {
                let rows: Vec<&SummaryRow> = self
                    .models
                    .iter()
                    .filter(|m| m.role.role == "student" && m.role.kd_method == method)
                    .flat_map(|m| attacks.iter().filter_map(|a| self.auc_row(&m.name, a)))
                    .collect();
                if rows.is_empty() {
                    return None;
                }
                let n = rows.len() as f64;
                let mean = rows.iter().map(|r| r.value).sum::<f64>() / n;
                let lo = rows.iter().map(|r| r.ci.map_or(r.value, |c| c.0)).sum::<f64>() / n;
                let hi = rows.iter().map(|r| r.ci.map_or(r.value, |c| c.1)).sum::<f64>() / n;
                Some((method, mean, lo, hi))
            })
            .collect()
    }

    /// Mean AUC over attacks of a model (NaN without scores).
    pub fn mean_auc(&self, model: &str) -> f64 {
        let values: Vec<f64> = self.attacks().iter().map(|a| self.auc(model, a)).filter(|v| v.is_finite()).collect();
        if values.is_empty() { f64::NAN } else { values.iter().sum::<f64>() / values.len() as f64 }
    }

    /// `(model, role, mean AUC, metric)` for every model that has both.
    pub fn per_model_pairs(&self, metric: &str) -> Vec<(String, String, f64, f64)> {
        self.models
            .iter()
            .map(|m| (m.name.clone(), m.role.role.clone(), self.mean_auc(&m.name), self.metric(&m.name, metric)))
            .filter(|p| p.2.is_finite() && p.3.is_finite())
            .collect()
    }

    /// Spearman ρ between mean AUC and `metric` across models: `(ρ, p, n)`.
    pub fn spearman_auc_vs(&self, metric: &str) -> Option<(f64, f64, usize)> {
        let pairs = self.per_model_pairs(metric);
        let (x, y): (Vec<f64>, Vec<f64>) = pairs.iter().map(|p| (p.2, p.3)).unzip();
        let (rho, p) = metrics::spearman(&x, &y);
        rho.is_finite().then_some((rho, p, pairs.len()))
    }

    /// Mean `loss` score of the canaries by repetition count, for the teacher, the No-KD
    /// baseline and each student size (mean over its KD methods).
    pub fn canary_series(&self) -> Vec<(String, Vec<(f64, f64)>)> {
        if self.canaries.is_empty() {
            return Vec::new();
        }
        let reps: HashMap<&str, usize> = self.canaries.iter().map(|(id, r)| (id.as_str(), *r)).collect();
        let mut groups: Vec<(String, Vec<&str>)> = Vec::new();
        for m in self.models.iter().filter(|m| m.role.role == "teacher" || m.role.role == "nokd") {
            groups.push((format!("{} ({})", m.name, m.role.role), vec![m.name.as_str()]));
        }
        for size in self.student_sizes() {
            let names: Vec<&str> = self.models.iter().filter(|m| m.role.role == "student" && m.role.student == size).map(|m| m.name.as_str()).collect();
            groups.push((format!("students ({size}), mean"), names));
        }
        groups
            .into_iter()
            .filter_map(|(label, names)| {
                let mut by_reps: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
                for s in self.scores.iter().filter(|s| s.attack == "loss" && names.contains(&s.model.as_str())) {
                    if let Some(&r) = reps.get(s.sample_id.as_str()) {
                        by_reps.entry(r).or_default().push(s.score);
                    }
                }
                let points: Vec<(f64, f64)> = by_reps.into_iter().map(|(r, v)| (r as f64, v.iter().sum::<f64>() / v.len() as f64)).collect();
                (!points.is_empty()).then_some((label, points))
            })
            .collect()
    }
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

/// Paired tests of the teacher against every other model and attack, plus the Spearman
/// correlations between membership (mean AUC) and memorization across models.
pub fn comparisons(d: &ReportData, bootstrap: Bootstrap) -> Vec<ComparisonRow> {
    let mut rows = Vec::new();
    let teachers: Vec<&ModelEntry> = d.models.iter().filter(|m| m.role.role == "teacher").collect();
    for teacher in teachers {
        for other in d.models.iter().filter(|m| m.name != teacher.name && m.role.role != "reference") {
            for attack in d.attacks() {
                let (tm, tn) = paired_scores(d, &teacher.name, &other.name, &attack);
                if tm.0.is_empty() || tn.0.is_empty() {
                    continue;
                }
                let stream = format!("{}/{}/{attack}", teacher.name, other.name);
                let t = metrics::paired_auc_test(&tm.0, &tn.0, &tm.1, &tn.1, bootstrap, &stream);
                rows.push(ComparisonRow {
                    kind: "paired_auc",
                    a: teacher.name.clone(),
                    b: other.name.clone(),
                    attack: attack.clone(),
                    value: t.difference,
                    ci: (bootstrap.resamples > 0).then_some(t.ci),
                    p_value: t.p_value,
                    n: tm.0.len() + tn.0.len(),
                });
            }
        }
    }
    for metric in ["mem_rate_member", "mem_gap", "rouge_l"] {
        if let Some((rho, p, n)) = d.spearman_auc_vs(metric) {
            rows.push(ComparisonRow { kind: "spearman", a: "mean_auc".into(), b: metric.into(), attack: String::new(), value: rho, ci: None, p_value: p, n });
        }
    }
    rows
}

/// Scores of two models on the samples both scored: ((a members, b members), (a non-members, b non-members)).
type Paired = ((Vec<f64>, Vec<f64>), (Vec<f64>, Vec<f64>));

fn paired_scores(d: &ReportData, a: &str, b: &str, attack: &str) -> Paired {
    let of = |model: &str| -> BTreeMap<&str, (bool, f64)> {
        d.scores.iter().filter(|s| s.model == model && s.attack == attack).map(|s| (s.sample_id.as_str(), (s.member, s.score))).collect()
    };
    let (sa, sb) = (of(a), of(b));
    let (mut m, mut n) = ((Vec::new(), Vec::new()), (Vec::new(), Vec::new()));
    for (id, (member, score)) in &sa {
        if let Some((_, other)) = sb.get(id) {
            let side = if *member { &mut m } else { &mut n };
            side.0.push(*score);
            side.1.push(*other);
        }
    }
    (m, n)
}

/// The summary rows of everything in `d` (attack metrics, memorization, utility, teacher
/// overlap).
pub fn summary_rows(d: &ReportData, bootstrap: Bootstrap) -> Vec<SummaryRow> {
    let roles: HashMap<&str, &ModelRole> = d.models.iter().map(|m| (m.name.as_str(), &m.role)).collect();
    let role_of = |name: &str| roles.get(name).map(|r| (*r).clone()).unwrap_or_else(|| ModelRole { role: "target".into(), ..Default::default() });
    let mut rows = super::summarize(&d.scores, role_of, bootstrap);
    let teacher = d.models.iter().find(|m| m.role.role == "teacher").map(|m| m.name.as_str());
    for m in &d.models {
        let mine: Vec<MemorizationRow> = d.memorization.iter().filter(|r| r.model == m.name).cloned().collect();
        if !mine.is_empty() {
            rows.extend(super::aggregate_rows(&m.name, &m.role, "all", &memorize::aggregates(&mine, d.k, bootstrap, &m.name)));
            let mut categories: Vec<&str> = mine.iter().map(|r| r.category.as_str()).collect();
            categories.sort();
            categories.dedup();
            for category in categories {
                let cut: Vec<MemorizationRow> = mine.iter().filter(|r| r.category == category).cloned().collect();
                if cut.iter().any(|r| r.member) && cut.iter().any(|r| !r.member) {
                    let aggregates = memorize::aggregates(&cut, d.k, bootstrap, &format!("{}/{category}", m.name));
                    rows.extend(super::aggregate_rows(&m.name, &m.role, category, &aggregates));
                }
            }
            if let Some(t) = teacher.filter(|t| *t != m.name) {
                let teacher_rows: Vec<MemorizationRow> = d.memorization.iter().filter(|r| r.model == t).cloned().collect();
                if !teacher_rows.is_empty() {
                    rows.extend(super::aggregate_rows(&m.name, &m.role, "all", &memorize::teacher_overlap(&teacher_rows, &mine)));
                }
            }
        }
        let utility: Vec<f64> = d.utility.iter().filter(|u| u.model == m.name).map(|u| u.rouge_l).collect();
        if !utility.is_empty() {
            let value = utility.iter().sum::<f64>() / utility.len() as f64;
            let aggregate = memorize::Aggregate { metric: "rouge_l", value, ci: None, n_members: 0, n_nonmembers: utility.len() };
            rows.extend(super::aggregate_rows(&m.name, &m.role, "all", &[aggregate]));
        }
    }
    rows
}

/// What [`render_run`] wrote.
#[derive(Debug)]
pub struct Rendered {
    /// Figures drawn.
    pub figures: Vec<Figure>,
    /// Figures skipped, with why.
    pub skipped: Vec<(&'static str, String)>,
    /// Summary rows.
    pub summary_rows: usize,
    /// Comparison rows.
    pub comparisons: usize,
}

/// Rebuilds `summary.csv`, `comparisons.csv`, `figures/` and `report.html` in `dir` from
/// the per-sample results there.
pub fn render_run(dir: &Path, bootstrap: Bootstrap) -> Result<Rendered, ReportError> {
    let mut d = load(dir)?;
    d.summary = summary_rows(&d, bootstrap);
    let comparisons = comparisons(&d, bootstrap);
    super::write_summary(&dir.join("summary.csv"), &d.summary)?;
    super::write_comparisons(&dir.join("comparisons.csv"), &comparisons)?;
    let (figures, skipped) = figures::render_all(&d, &dir.join("figures"))
        .map_err(|message| ReportError::Read { path: dir.join("figures"), message: format!("cannot draw: {message}") })?;
    let manifest = std::fs::read_to_string(dir.join("manifest.json")).unwrap_or_else(|_| "{}".into());
    let html = super::html::page(&d, &comparisons, &figures, &skipped, &manifest);
    let path = dir.join("report.html");
    crate::util::write_atomic(&path, html.as_bytes()).map_err(|source| ReportError::Write { path, source })?;
    Ok(Rendered { summary_rows: d.summary.len(), comparisons: comparisons.len(), figures, skipped })
}

/// Reads the per-sample results of a run directory and the roles from its manifest.
pub fn load(dir: &Path) -> Result<ReportData, ReportError> {
    let mut d = ReportData { k: memorize::DEFAULT_K, ..Default::default() };
    let manifest: serde_json::Value = match std::fs::read_to_string(dir.join("manifest.json")) {
        Ok(text) => serde_json::from_str(&text)
            .map_err(|e| ReportError::Read { path: dir.join("manifest.json"), message: format!("not valid JSON: {e}") })?,
        Err(_) => serde_json::Value::Null,
    };
    if let Some(k) = manifest.pointer("/memorization/k").and_then(|v| v.as_u64()) {
        d.k = k as usize;
    }
    for m in manifest["models"].as_array().into_iter().flatten() {
        let name = m["name"].as_str().unwrap_or_default().to_string();
        let role: ModelRole = serde_json::from_value(m["role"].clone()).unwrap_or_else(|_| ModelRole { role: "target".into(), ..Default::default() });
        if !name.is_empty() && !d.models.iter().any(|e| e.name == name) {
            d.models.push(ModelEntry { name, role });
        }
    }
    if dir.join("scores.csv").is_file() {
        d.scores = super::read_scores(&dir.join("scores.csv"))?;
    }
    if dir.join("memorization.csv").is_file() {
        d.memorization = super::read_memorization(&dir.join("memorization.csv"))?;
    }
    if dir.join("utility.csv").is_file() {
        d.utility = super::read_utility(&dir.join("utility.csv"))?;
    }
    if dir.join("blocks.csv").is_file() {
        d.blocks = super::read_blocks(&dir.join("blocks.csv"))?;
    }
    if dir.join("canaries.csv").is_file() {
        d.canaries = super::read_canaries(&dir.join("canaries.csv"))?;
    }
    // Models that appear only in the results (no manifest entry) are targets.
    let names: Vec<String> = d
        .scores
        .iter()
        .map(|s| s.model.clone())
        .chain(d.memorization.iter().map(|m| m.model.clone()))
        .chain(d.blocks.iter().map(|b| b.model.clone()))
        .collect();
    for name in names {
        if !d.models.iter().any(|m| m.name == name) {
            d.models.push(ModelEntry { name, role: ModelRole { role: "target".into(), ..Default::default() } });
        }
    }
    if d.scores.is_empty() && d.memorization.is_empty() {
        return Err(ReportError::Read {
            path: dir.to_path_buf(),
            message: "no scores.csv or memorization.csv: not a kdharness run directory".into(),
        });
    }
    Ok(d)
}
