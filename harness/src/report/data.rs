//! What the report is made from and made of: [`ReportData`] (a run's models with their
//! roles and every table it wrote), the questions the figures and the page ask of it, and
//! a drawn [`Figure`]. Uses only [`super::tables`] from `report`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::tables::{BlockRow, DefenseRecord, ExposureRow, ModelRole, Role, ScoreRow, SummaryRow, TrainingRecord, UtilityRow};
use crate::metrics::memorization::MemorizationRow;
use crate::metrics;

/// A model of the run and its role.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelEntry {
    /// Its name in every file.
    pub name: String,
    /// Teacher / student / nokd / reference / target, KD method, student size.
    pub role: ModelRole,
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
    /// Each canary's exposure under each model.
    pub exposure: Vec<ExposureRow>,
    /// The summary rows computed from the above.
    pub summary: Vec<SummaryRow>,
    /// Comparison length K of the memorization rows.
    pub k: usize,
    /// Each trained model's budget and held-out loss, by name (from the manifest).
    pub training: BTreeMap<String, TrainingRecord>,
    /// Each defended model's defense and what it measured, by name (from the manifest).
    pub defenses: BTreeMap<String, DefenseRecord>,
    /// ROUGE-L points below its size's No-KD student at which a student did not learn
    /// (`None`: [`DEFAULT_LEARN_MARGIN`]).
    pub learn_margin: Option<f64>,
}

/// A point with a range: `(x, mean, min, max)`.
pub type RangePoint = (f64, f64, f64, f64);

/// The `did_not_learn` margin of a run that recorded none.
pub const DEFAULT_LEARN_MARGIN: f64 = 5.0;

/// A rendered figure.
#[derive(Debug, Clone)]
pub struct Figure {
    /// File stem (`fig1_student_auc` → `.png` and `.svg`).
    pub name: &'static str,
    /// One-line description, for the HTML report.
    pub title: String,
    /// What is plotted and how to read it (the caption in the HTML report).
    pub caption: &'static str,
    /// The SVG text (embedded inline in report.html).
    pub svg: String,
}

/// A figure not drawn: its name and why.
pub type Skipped = (&'static str, String);

/// Distinct values in order of first appearance.
pub(super) fn first_seen<'a>(values: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut seen = BTreeSet::new();
    values.filter(|v| seen.insert(*v)).collect()
}

fn owned(values: Vec<&str>) -> Vec<String> {
    values.into_iter().map(str::to_owned).collect()
}

impl ReportData {
    /// The mean per-sample ROUGE-L of `model` (`None` without utility rows).
    pub fn mean_rouge_l(&self, model: &str) -> Option<f64> {
        let values: Vec<f64> = self.utility.iter().filter(|u| u.model == model).map(|u| u.rouge_l).collect();
        (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
    }

    /// The No-KD student of `size`, if the run has one.
    pub fn nokd_of(&self, size: &str) -> Option<&ModelEntry> {
        self.models.iter().find(|m| m.role.role == Role::Nokd && m.role.student == size)
    }

    /// Students of one size, in run order, grouped by size (No-KD included).
    pub fn students_by_size(&self) -> Vec<Vec<&ModelEntry>> {
        let sizes = first_seen(self.models.iter().filter(|m| matches!(m.role.role, Role::Student | Role::Nokd)).map(|m| m.role.student.as_str()));
        sizes
            .into_iter()
            .map(|size| self.models.iter().filter(|m| matches!(m.role.role, Role::Student | Role::Nokd) && m.role.student == size).collect())
            .collect()
    }

    /// Attacks in order of first appearance.
    pub fn attacks(&self) -> Vec<String> {
        owned(first_seen(self.scores.iter().map(|r| r.attack.as_str())))
    }

    /// A metric of a model over all samples (NaN when absent).
    pub fn metric(&self, model: &str, metric: &str) -> f64 {
        self.summary.iter().find(|r| r.model == model && r.category == "all" && r.metric == metric && r.attack.is_empty()).map_or(f64::NAN, |r| r.value)
    }

    /// The AUC of `attack` on `model` (NaN when absent).
    pub fn auc(&self, model: &str, attack: &str) -> f64 {
        self.auc_row(model, attack).map_or(f64::NAN, |r| r.value)
    }

    /// The summary row of the AUC of `attack` on `model` over all samples.
    pub fn auc_row(&self, model: &str, attack: &str) -> Option<&SummaryRow> {
        self.summary.iter().find(|r| r.model == model && r.attack == attack && r.category == "all" && r.metric == "auc")
    }

    /// The students, in run order.
    pub fn students(&self) -> impl Iterator<Item = &ModelEntry> {
        self.models.iter().filter(|m| m.role.role == Role::Student)
    }

    /// The teacher and the No-KD baselines, in run order.
    pub fn baselines(&self) -> impl Iterator<Item = &ModelEntry> {
        self.models.iter().filter(|m| matches!(m.role.role, Role::Teacher | Role::Nokd))
    }

    /// Student sizes in order of first appearance.
    pub fn student_sizes(&self) -> Vec<String> {
        owned(first_seen(self.students().map(|m| m.role.student.as_str())))
    }

    /// KD methods in order of first appearance.
    pub fn kd_methods(&self) -> Vec<String> {
        owned(first_seen(self.students().map(|m| m.role.kd_method.as_str())))
    }

    /// The students of one size, in KD-method order.
    pub fn students_of_size(&self, size: &str) -> Vec<&ModelEntry> {
        let mut out: Vec<&ModelEntry> = self.students().filter(|m| m.role.student == size).collect();
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
                    .students()
                    .filter(|m| m.role.kd_method == method)
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
    pub fn per_model_pairs(&self, metric: &str) -> Vec<(String, Role, f64, f64)> {
        self.models
            .iter()
            .map(|m| (m.name.clone(), m.role.role, self.mean_auc(&m.name), self.metric(&m.name, metric)))
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

    /// The model groups of the canary figures: the teacher and each No-KD baseline alone,
    /// then each student size's students together, each with its label.
    fn canary_groups(&self) -> Vec<(String, Vec<&str>)> {
        let mut groups: Vec<(String, Vec<&str>)> = Vec::new();
        for m in self.baselines() {
            groups.push((format!("{} ({})", m.name, m.role.role), vec![m.name.as_str()]));
        }
        for size in self.student_sizes() {
            let names: Vec<&str> = self.students().filter(|m| m.role.student == size).map(|m| m.name.as_str()).collect();
            groups.push((format!("students ({size}), mean"), names));
        }
        groups
    }

    /// Canary exposure by repetition count for the teacher, each No-KD baseline and each
    /// student size (each canary's exposure averaged over the size's KD methods first):
    /// per group, `(repetitions, mean, min, max)` across its canaries.
    pub fn exposure_series(&self) -> Vec<(String, Vec<RangePoint>)> {
        self.canary_groups()
            .into_iter()
            .filter_map(|(label, names)| {
                // Per canary: its repetitions and its exposure averaged over the group.
                let mut by_canary: BTreeMap<&str, (usize, Vec<f64>)> = BTreeMap::new();
                for r in self.exposure.iter().filter(|r| names.contains(&r.model.as_str())) {
                    by_canary.entry(r.sample_id.as_str()).or_insert((r.repetitions, Vec::new())).1.push(r.exposure);
                }
                let mut by_reps: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
                for (reps, values) in by_canary.into_values() {
                    by_reps.entry(reps).or_default().push(values.iter().sum::<f64>() / values.len() as f64);
                }
                let points: Vec<RangePoint> = by_reps
                    .into_iter()
                    .map(|(r, v)| (r as f64, v.iter().sum::<f64>() / v.len() as f64, v.iter().copied().fold(f64::INFINITY, f64::min), v.iter().copied().fold(f64::NEG_INFINITY, f64::max)))
                    .collect();
                (!points.is_empty()).then_some((label, points))
            })
            .collect()
    }

    /// Mean `loss` score of the canaries by repetition count, for the teacher, the No-KD
    /// baseline and each student size (mean over its KD methods).
    pub fn canary_series(&self) -> Vec<(String, Vec<(f64, f64)>)> {
        if self.canaries.is_empty() {
            return Vec::new();
        }
        let reps: HashMap<&str, usize> = self.canaries.iter().map(|(id, r)| (id.as_str(), *r)).collect();
        self.canary_groups()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn model(name: &str, role: Role, kd_method: &str, student: &str) -> ModelEntry {
        ModelEntry { name: name.into(), role: ModelRole { role, kd_method: kd_method.into(), student: student.into() } }
    }

    #[test]
    fn students_are_grouped_in_order_of_first_appearance() {
        let d = ReportData {
            models: vec![
                model("teacher", Role::Teacher, "", ""),
                model("rkl-big", Role::Student, "rkl", "big"),
                model("fkl-small", Role::Student, "fkl", "small"),
                model("nokd-small", Role::Nokd, "", "small"),
                model("rkl-small", Role::Student, "rkl", "small"),
            ],
            ..Default::default()
        };
        assert_eq!(d.student_sizes(), ["big", "small"]);
        assert_eq!(d.kd_methods(), ["rkl", "fkl"]);
        let small: Vec<&str> = d.students_of_size("small").iter().map(|m| m.name.as_str()).collect();
        assert_eq!(small, ["rkl-small", "fkl-small"]);
        let baselines: Vec<&str> = d.baselines().map(|m| m.name.as_str()).collect();
        assert_eq!(baselines, ["teacher", "nokd-small"]);
    }
}
