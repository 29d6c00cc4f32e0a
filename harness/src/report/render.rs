//! The report stage (SPEC §11, `kdharness report RUN_DIR`): everything a run wrote that
//! is derived — `summary.csv`, `comparisons.csv`, the figures and `report.html` — rebuilt
//! from the per-sample results alone (`scores.csv`, `memorization.csv`, `utility.csv`,
//! `blocks.csv`, `canaries.csv`) and the roles in `manifest.json`. No model is opened.
//! The top of `report`: it derives the summary and comparison rows and hands the data to
//! [`super::figures`] and `html`.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use rayon::prelude::*;

use super::data::{Figure, ModelEntry, ReportData, Skipped, first_seen};
use super::tables::{self, ComparisonRow, ModelRole, ReportError, Role, ScoreRow, SummaryRow, TrainingRecord};
use super::{figures, html};
use crate::metrics::memorization::{self, MemorizationRow};
use crate::metrics::{self, Bootstrap, Metrics};

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

/// Summary rows (no attack, no operating point) for memorization and utility aggregates.
pub fn aggregate_rows(model: &str, role: &ModelRole, category: &str, aggregates: &[memorization::Aggregate]) -> Vec<SummaryRow> {
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

/// Paired tests of the teacher against every other model and attack, plus the Spearman
/// correlations between membership (mean AUC) and memorization across models.
pub fn comparisons(d: &ReportData, bootstrap: Bootstrap) -> Vec<ComparisonRow> {
    let mut rows = Vec::new();
    let teachers: Vec<&ModelEntry> = d.models.iter().filter(|m| m.role.role == Role::Teacher).collect();
    for teacher in teachers {
        for other in d.models.iter().filter(|m| m.name != teacher.name && m.role.role != Role::Reference) {
            rows.extend(d.attacks().iter().filter_map(|attack| paired_auc(d, teacher, other, attack, bootstrap)));
        }
    }
    // Student against student, within each size, on the `loss` attack: what claims
    // about the ordering of KD techniques rest on.
    for students in d.students_by_size() {
        for (i, a) in students.iter().enumerate() {
            rows.extend(students[i + 1..].iter().filter_map(|b| paired_auc(d, a, b, "loss", bootstrap)));
        }
    }
    for metric in ["mem_rate_member", "mem_gap", "rouge_l"] {
        if let Some((rho, p, n)) = d.spearman_auc_vs(metric) {
            rows.push(ComparisonRow { kind: "spearman", a: "mean_auc".into(), b: metric.into(), attack: String::new(), value: rho, ci: None, p_value: p, n });
        }
    }
    rows
}

/// The paired test of AUC(a) − AUC(b) under `attack` on the samples both scored, if any
/// member and non-member was.
fn paired_auc(d: &ReportData, a: &ModelEntry, b: &ModelEntry, attack: &str, bootstrap: Bootstrap) -> Option<ComparisonRow> {
    let (m, n) = paired_scores(d, &a.name, &b.name, attack);
    if m.0.is_empty() || n.0.is_empty() {
        return None;
    }
    let t = metrics::paired_auc_test(&m.0, &n.0, &m.1, &n.1, bootstrap, &format!("{}/{}/{attack}", a.name, b.name));
    Some(ComparisonRow {
        kind: "paired_auc",
        a: a.name.clone(),
        b: b.name.clone(),
        attack: attack.into(),
        value: t.difference,
        ci: (bootstrap.resamples > 0).then_some(t.ci),
        p_value: t.p_value,
        n: m.0.len() + n.0.len(),
    })
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
    let role_of = |name: &str| roles.get(name).map(|r| (*r).clone()).unwrap_or_default();
    let mut rows = summarize(&d.scores, role_of, bootstrap);
    let teacher = d.models.iter().find(|m| m.role.role == Role::Teacher).map(|m| m.name.as_str());
    for m in &d.models {
        let mine: Vec<MemorizationRow> = d.memorization.iter().filter(|r| r.model == m.name).cloned().collect();
        if !mine.is_empty() {
            rows.extend(aggregate_rows(&m.name, &m.role, "all", &memorization::aggregates(&mine, d.k, bootstrap, &m.name)));
            let mut categories: Vec<&str> = mine.iter().map(|r| r.category.as_str()).collect();
            categories.sort();
            categories.dedup();
            for category in categories {
                let cut: Vec<MemorizationRow> = mine.iter().filter(|r| r.category == category).cloned().collect();
                if cut.iter().any(|r| r.member) && cut.iter().any(|r| !r.member) {
                    let aggregates = memorization::aggregates(&cut, d.k, bootstrap, &format!("{}/{category}", m.name));
                    rows.extend(aggregate_rows(&m.name, &m.role, category, &aggregates));
                }
            }
            if let Some(t) = teacher.filter(|t| *t != m.name) {
                let teacher_rows: Vec<MemorizationRow> = d.memorization.iter().filter(|r| r.model == t).cloned().collect();
                if !teacher_rows.is_empty() {
                    rows.extend(aggregate_rows(&m.name, &m.role, "all", &memorization::teacher_overlap(&teacher_rows, &mine)));
                }
            }
        }
        let n_utility = d.utility.iter().filter(|u| u.model == m.name).count();
        if let Some(value) = d.mean_rouge_l(&m.name) {
            let aggregate = memorization::Aggregate { metric: "rouge_l", value, ci: None, n_members: 0, n_nonmembers: n_utility };
            rows.extend(aggregate_rows(&m.name, &m.role, "all", &[aggregate]));
        }
        if let Some(t) = d.training.get(&m.name) {
            let of = |metric, value| memorization::Aggregate { metric, value, ci: None, n_members: 0, n_nonmembers: 0 };
            rows.extend(aggregate_rows(&m.name, &m.role, "all", &[of("heldout_ce", t.heldout_ce), of("train_steps", t.steps as f64)]));
        }
        if let Some(flag) = did_not_learn(d, m) {
            let aggregate = memorization::Aggregate { metric: "did_not_learn", value: flag as u8 as f64, ci: None, n_members: 0, n_nonmembers: n_utility };
            rows.extend(aggregate_rows(&m.name, &m.role, "all", &[aggregate]));
        }
    }
    rows
}

/// Whether student `m` did not learn: its mean ROUGE-L is below its size's No-KD
/// student's by more than the run's margin. `None` for models that are not distilled
/// students, or without the ROUGE-L of both.
pub fn did_not_learn(d: &ReportData, m: &ModelEntry) -> Option<bool> {
    if m.role.role != Role::Student {
        return None;
    }
    let nokd = d.nokd_of(&m.role.student)?;
    let margin = d.learn_margin.unwrap_or(super::data::DEFAULT_LEARN_MARGIN);
    Some(d.mean_rouge_l(&m.name)? < d.mean_rouge_l(&nokd.name)? - margin)
}

/// What [`render_run`] wrote.
#[derive(Debug)]
pub struct Rendered {
    /// Figures drawn.
    pub figures: Vec<Figure>,
    /// Figures skipped, with why.
    pub skipped: Vec<Skipped>,
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
    tables::write_summary(&dir.join("summary.csv"), &d.summary)?;
    tables::write_comparisons(&dir.join("comparisons.csv"), &comparisons)?;
    super::defenses::write(dir, &super::defenses::rows(&d))?;
    let (figures, skipped) = figures::render_all(&d, &dir.join("figures"))
        .map_err(|message| ReportError::Read { path: dir.join("figures"), message: format!("cannot draw: {message}") })?;
    let manifest = std::fs::read_to_string(dir.join("manifest.json")).unwrap_or_else(|_| "{}".into());
    let html = html::page(&d, &comparisons, &figures, &skipped, &manifest);
    let path = dir.join("report.html");
    crate::files::write_atomic(&path, html.as_bytes()).map_err(|source| ReportError::Write { path, source })?;
    Ok(Rendered { summary_rows: d.summary.len(), comparisons: comparisons.len(), figures, skipped })
}

/// Reads the per-sample results of a run directory and the roles from its manifest.
pub fn load(dir: &Path) -> Result<ReportData, ReportError> {
    let mut d = ReportData { k: memorization::DEFAULT_K, ..Default::default() };
    let manifest: serde_json::Value = match std::fs::read_to_string(dir.join("manifest.json")) {
        Ok(text) => serde_json::from_str(&text)
            .map_err(|e| ReportError::Read { path: dir.join("manifest.json"), message: format!("not valid JSON: {e}") })?,
        Err(_) => serde_json::Value::Null,
    };
    if let Some(k) = manifest.pointer("/memorization/k").and_then(|v| v.as_u64()) {
        d.k = k as usize;
    }
    d.learn_margin = manifest["learn_margin"].as_f64();
    for m in manifest["models"].as_array().into_iter().flatten() {
        let name = m["name"].as_str().unwrap_or_default().to_string();
        if let Ok(t) = serde_json::from_value::<TrainingRecord>(m["training"].clone()) {
            d.training.insert(name.clone(), t);
        }
        if let Ok(record) = serde_json::from_value::<super::DefenseRecord>(m["defense"].clone()) {
            d.defenses.insert(name.clone(), record);
        }
        let role: ModelRole = serde_json::from_value(m["role"].clone()).unwrap_or_default();
        if !name.is_empty() && !d.models.iter().any(|e| e.name == name) {
            d.models.push(ModelEntry { name, role });
        }
    }
    d.scores = read_if_present(dir, "scores.csv", tables::read_scores)?;
    d.memorization = read_if_present(dir, "memorization.csv", tables::read_memorization)?;
    d.utility = read_if_present(dir, "utility.csv", tables::read_utility)?;
    d.blocks = read_if_present(dir, "blocks.csv", tables::read_blocks)?;
    d.canaries = read_if_present(dir, "canaries.csv", tables::read_canaries)?;
    d.exposure = read_if_present(dir, "exposure.csv", tables::read_exposure)?;
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
            d.models.push(ModelEntry { name, role: ModelRole::from(Role::Target) });
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

/// The rows of `dir/name` when the run wrote that file, none when it did not.
fn read_if_present<T>(dir: &Path, name: &str, read: fn(&Path) -> Result<Vec<T>, ReportError>) -> Result<Vec<T>, ReportError> {
    let path = dir.join(name);
    if path.is_file() { read(&path) } else { Ok(Vec::new()) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tables::tests::row;

    #[test]
    fn summary_has_every_metric_per_category() {
        let rows = vec![
            row("t", "loss", "m0", "a", true, 3.0),
            row("t", "loss", "m1", "b", true, 2.0),
            row("t", "loss", "n0", "a", false, 1.0),
            row("t", "loss", "n1", "c", false, 2.5),
        ];
        let summary = summarize(&rows, |_| ModelRole::default(), Bootstrap { resamples: 50, seed: 1 });
        // Categories: all and a (b and c lack one class).
        assert_eq!(summary.len(), 2 * crate::metrics::METRIC_NAMES.len());
        let auc = summary.iter().find(|r| r.category == "all" && r.metric == "auc").unwrap();
        // Pairs: 3>1, 3>2.5, 2>1, 2<2.5 → 3/4.
        assert_eq!((auc.value, auc.n_members, auc.n_nonmembers), (0.75, 2, 2));
        let tpr0 = summary.iter().find(|r| r.category == "all" && r.metric == "tpr_at_fpr_0").unwrap();
        assert_eq!((tpr0.value, tpr0.operating_point), (0.5, Some((0.0, 3.0))));
    }
}
