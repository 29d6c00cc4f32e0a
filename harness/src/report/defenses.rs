//! The defenses' trade-offs (SPEC §18): `defenses.csv`, one row per defended model and per
//! undefended twin (the model it defends, `defense = none`), each with its best attack's
//! AUC, member memorization rate and ROUGE-L, the change against its twin, what the
//! defense measured (samples dropped, ε) and whether it is a best trade-off (no model of
//! its group, twin included, leaks less by the best AUC at no less utility).

use std::path::Path;

use super::data::ReportData;
use super::tables::{self, DefenseRecord, ReportError, Role, fmt_f64};

/// The columns of `defenses.csv`.
pub const DEFENSES_HEADER: [&str; 20] = [
    "model",
    "twin",
    "kd_method",
    "student",
    "defense",
    "params",
    "best_attack",
    "best_auc",
    "mem_rate_member",
    "rouge_l",
    "delta_best_auc",
    "delta_mem_rate_member",
    "delta_rouge_l",
    "removed_samples",
    "teacher_samples",
    "epsilon",
    "delta",
    "teacher",
    "best_tradeoff",
    "figure",
];

/// One row of `defenses.csv`.
#[derive(Debug, Clone, PartialEq)]
pub struct DefenseRow {
    /// The model.
    pub model: String,
    /// The undefended model it defends (itself for a twin's own row).
    pub twin: String,
    /// Its KD method (empty for a teacher).
    pub kd_method: String,
    /// Its student size (empty for a teacher).
    pub student: String,
    /// What defended it, at what strength (`none` for a twin).
    pub record: Option<DefenseRecord>,
    /// The attack with the highest AUC on it, and that AUC.
    pub best: (String, f64),
    /// Member memorization rate.
    pub mem_rate_member: f64,
    /// Mean ROUGE-L F ×100 on the held-out prompts.
    pub rouge_l: f64,
    /// The three, minus the twin's.
    pub deltas: (f64, f64, f64),
    /// Whether no model of its group (same twin) has a lower best AUC at no less ROUGE-L,
    /// or the same best AUC at more.
    pub best_tradeoff: bool,
}

/// The undefended model a defended one defends: its name before `+`.
pub fn twin_of(model: &str) -> &str {
    model.split_once('+').map_or(model, |(twin, _)| twin)
}

/// The rows: per undefended twin with defended models, the twin's row, then its defended
/// models' in run order.
pub fn rows(d: &ReportData) -> Vec<DefenseRow> {
    let defended: Vec<&super::ModelEntry> = d.models.iter().filter(|m| m.role.role == Role::Defended).collect();
    let mut twins: Vec<&str> = Vec::new();
    for m in &defended {
        let twin = twin_of(&m.name);
        if !twins.contains(&twin) {
            twins.push(twin);
        }
    }
    let attacks = d.attacks();
    let measure = |name: &str| {
        let best = attacks.iter().map(|a| (a.clone(), d.auc(name, a))).filter(|(_, v)| v.is_finite()).fold((String::new(), f64::NAN), |b, x| if b.1.is_nan() || x.1 > b.1 { x } else { b });
        (best, d.metric(name, "mem_rate_member"), d.mean_rouge_l(name).unwrap_or(f64::NAN))
    };
    let mut out = Vec::new();
    for twin in twins {
        let (twin_best, twin_mem, twin_rouge) = measure(twin);
        let role = d.models.iter().find(|m| m.name == twin).map(|m| m.role.clone()).unwrap_or_default();
        let mut group = vec![DefenseRow {
            model: twin.into(),
            twin: twin.into(),
            kd_method: role.kd_method.clone(),
            student: role.student.clone(),
            record: None,
            best: twin_best.clone(),
            mem_rate_member: twin_mem,
            rouge_l: twin_rouge,
            deltas: (0.0, 0.0, 0.0),
            best_tradeoff: false,
        }];
        for m in defended.iter().filter(|m| twin_of(&m.name) == twin) {
            let (best, mem, rouge) = measure(&m.name);
            group.push(DefenseRow {
                model: m.name.clone(),
                twin: twin.into(),
                kd_method: m.role.kd_method.clone(),
                student: m.role.student.clone(),
                record: d.defenses.get(&m.name).cloned(),
                deltas: (best.1 - twin_best.1, mem - twin_mem, rouge - twin_rouge),
                best,
                mem_rate_member: mem,
                rouge_l: rouge,
                best_tradeoff: false,
            });
        }
        let dominated = |r: &DefenseRow, by: &DefenseRow| {
            (by.best.1 < r.best.1 && by.rouge_l >= r.rouge_l) || (by.best.1 <= r.best.1 && by.rouge_l > r.rouge_l)
        };
        let flags: Vec<bool> = group.iter().map(|r| r.best.1.is_finite() && r.rouge_l.is_finite() && !group.iter().any(|o| dominated(r, o))).collect();
        for (r, f) in group.iter_mut().zip(flags) {
            r.best_tradeoff = f;
        }
        out.extend(group);
    }
    out
}

/// The figure each table row backs.
pub const FIGURE: &str = "fig11_defenses";

impl tables::Record for DefenseRow {
    const HEADER: &'static [&'static str] = &DEFENSES_HEADER;
    fn fields(&self) -> Vec<String> {
        let opt = |x: Option<f64>| x.map(fmt_f64).unwrap_or_default();
        let count = |x: Option<usize>| x.map(|n| n.to_string()).unwrap_or_default();
        let r = self.record.as_ref();
        vec![
            self.model.clone(),
            self.twin.clone(),
            self.kd_method.clone(),
            self.student.clone(),
            r.map_or("none".into(), |r| r.defense.clone()),
            r.map(|r| r.params.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(";")).unwrap_or_default(),
            self.best.0.clone(),
            fmt_f64(self.best.1),
            fmt_f64(self.mem_rate_member),
            fmt_f64(self.rouge_l),
            fmt_f64(self.deltas.0),
            fmt_f64(self.deltas.1),
            fmt_f64(self.deltas.2),
            count(r.and_then(|r| r.removed_samples)),
            count(r.and_then(|r| r.teacher_samples)),
            opt(r.and_then(|r| r.epsilon)),
            opt(r.and_then(|r| r.delta)),
            r.and_then(|r| r.teacher.clone()).unwrap_or_default(),
            (self.best_tradeoff as u8).to_string(),
            FIGURE.into(),
        ]
    }
}

/// Writes `defenses.csv` (nothing when the run has no defended model; an earlier file is
/// then removed).
pub fn write(dir: &Path, rows: &[DefenseRow]) -> Result<(), ReportError> {
    let path = dir.join("defenses.csv");
    if rows.is_empty() {
        if path.is_file() {
            std::fs::remove_file(&path).map_err(|source| ReportError::Write { path: path.clone(), source })?;
        }
        return Ok(());
    }
    tables::write_table(&path, rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tables::{ModelRole, SummaryRow};
    use crate::report::{ModelEntry, UtilityRow};

    fn auc(model: &str, attack: &str, value: f64) -> SummaryRow {
        SummaryRow { model: model.into(), role: ModelRole::default(), category: "all".into(), attack: attack.into(), metric: "auc", value, ci: None, n_members: 1, n_nonmembers: 1, operating_point: None }
    }

    #[test]
    fn rows_set_each_defense_against_its_twin_and_mark_the_best_tradeoffs() {
        let student = |name: &str, role| ModelEntry { name: name.into(), role: ModelRole { role, kd_method: "kd".into(), student: "small".into() } };
        let mut d = ReportData {
            models: vec![student("kd-small", Role::Student), student("kd-small+noise-s1", Role::Defended), student("kd-small+noise-s4", Role::Defended), student("kd-small+bad", Role::Defended)],
            ..ReportData::default()
        };
        // (loss AUC, zlib AUC, ROUGE-L): s1 lowers leakage a little at a small cost, s4 a
        // lot at a large cost, `bad` leaks more for less utility (dominated by the twin).
        for (m, a, b, rouge) in [("kd-small", 0.70, 0.74, 40.0), ("kd-small+noise-s1", 0.66, 0.65, 38.0), ("kd-small+noise-s4", 0.55, 0.52, 20.0), ("kd-small+bad", 0.80, 0.70, 39.0)] {
            d.summary.extend([auc(m, "loss", a), auc(m, "zlib", b)]);
            d.scores.push(crate::report::tables::tests::row(m, "loss", "x", "c", true, 0.0));
            d.scores.push(crate::report::tables::tests::row(m, "zlib", "x", "c", true, 0.0));
            d.utility.push(UtilityRow { model: m.into(), sample_id: "p".into(), rouge_l: rouge });
        }
        d.defenses.insert("kd-small+noise-s1".into(), DefenseRecord { defense: "noise".into(), params: [("s".to_string(), "1".to_string())].into(), ..Default::default() });
        let rows = rows(&d);
        let names: Vec<&str> = rows.iter().map(|r| r.model.as_str()).collect();
        assert_eq!(names, ["kd-small", "kd-small+noise-s1", "kd-small+noise-s4", "kd-small+bad"]);
        assert_eq!(rows[0].best, ("zlib".to_string(), 0.74));
        assert_eq!(rows[1].best, ("loss".to_string(), 0.66));
        assert!((rows[1].deltas.0 - (0.66 - 0.74)).abs() < 1e-12 && (rows[1].deltas.2 + 2.0).abs() < 1e-12);
        assert_eq!(rows.iter().map(|r| r.best_tradeoff).collect::<Vec<_>>(), [true, true, true, false]);
        let fields = tables::Record::fields(&rows[1]);
        assert_eq!((fields[4].as_str(), fields[5].as_str(), fields[19].as_str()), ("noise", "s=1", FIGURE));
        assert_eq!(tables::Record::fields(&rows[0])[4], "none");
        assert_eq!(twin_of("teacher+dpsgd-noise_multiplier1"), "teacher");
    }
}
