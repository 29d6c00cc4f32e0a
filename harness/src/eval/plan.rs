//! The run as a plan of cells (issue 15): units of work that each read only what their
//! dependencies wrote into the run directory and can run in any process that sees it
//! (`kdharness eval CONFIG --cell ID`). The cells are the pipeline's resumable units:
//! `data`, `teacher`, a size's `base-SIZE` or `heal-SIZE`, one cell per student
//! (`METHOD-SIZE`, warm-started ones after their size's No-KD student; a model's cell
//! also exports it to ONNX), one `score-MODEL` per model (its attacks, per-block risk,
//! memorization and utility; after the model and the reference model of reference
//! attacks) and `report` (the models' tables gathered, the summary, figures and page). A study of several
//! `seeds` is each seed's plan with its ids under `seed-S/`, then `seeds` (the across-seed
//! summary), which needs every seed's report.

use serde::Serialize;

use crate::config::{Config, StudentInit, student_name};

/// One cell of the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cell {
    /// Its id (`--cell ID`); a model's cell is named as its directory under `models/`.
    pub id: String,
    /// The cells whose outputs it reads.
    pub needs: Vec<String>,
    /// What it does: `data`, `teacher`, `train` (a student, base or healed model),
    /// `score`, `report` or `seeds`; a scheduler groups cells by it.
    pub kind: &'static str,
}

/// The cell that summarises a multi-seed study across its seeds.
pub const SEEDS: &str = "seeds";

/// The cells of `cfg`, each after every cell it needs.
pub fn plan(cfg: &Config) -> Vec<Cell> {
    if cfg.seeds.is_empty() {
        return one_seed(cfg);
    }
    let mut cells = Vec::new();
    for &seed in &cfg.seeds {
        let prefix = |id: &str| format!("{}/{id}", seed_dir(seed));
        cells.extend(one_seed(cfg).into_iter().map(|c| Cell { id: prefix(&c.id), needs: c.needs.iter().map(|n| prefix(n)).collect(), kind: c.kind }));
    }
    cells.push(Cell { id: SEEDS.into(), needs: cfg.seeds.iter().map(|&s| format!("{}/report", seed_dir(s))).collect(), kind: "seeds" });
    cells
}

/// The directory (under the run directory) and cell-id prefix of one seed's run.
pub fn seed_dir(seed: u64) -> String {
    format!("seed-{seed}")
}

/// A multi-seed cell id split into its seed and the id within that seed's plan.
pub fn split_seed(id: &str) -> Option<(u64, &str)> {
    let (dir, rest) = id.split_once('/')?;
    Some((dir.strip_prefix("seed-")?.parse().ok()?, rest))
}

/// The cells of one seed's run.
fn one_seed(cfg: &Config) -> Vec<Cell> {
    let cell = |id: &str, needs: &[&str], kind| Cell { id: id.into(), needs: needs.iter().map(|n| n.to_string()).collect(), kind };
    let mut cells = vec![cell("data", &[], "data"), cell("teacher", &["data"], "teacher")];
    let mut models = vec!["teacher".to_string()];
    for size in &cfg.students {
        let init = size_init_cell(size);
        if let Some(init) = &init {
            cells.push(cell(init, &["data"], "train"));
        }
        let nokd = student_name("nokd", &size.name);
        let methods = cfg.distill.nokd.then_some("nokd").into_iter().chain(cfg.distill.methods.iter().map(String::as_str));
        for method in methods {
            let name = student_name(method, &size.name);
            let mut needs = vec!["teacher".to_string()];
            needs.extend(init.clone());
            if cfg.distill.warm_start.iter().any(|m| m == method) {
                needs.push(nokd.clone());
            }
            cells.push(Cell { id: name.clone(), needs, kind: "train" });
            models.push(name);
        }
    }
    // Defended models: a training defense's teacher, then the students of every setting
    // (from that teacher or the undefended one), each started as its undefended twin.
    for v in cfg.defense_variants() {
        let teacher = v.teacher().unwrap_or_else(|| "teacher".into());
        if let Some(t) = v.teacher() {
            cells.push(cell(&t, &["data"], "teacher"));
            models.push(t);
        }
        for size in &cfg.students {
            for method in &v.methods {
                let mut needs = vec![teacher.clone()];
                needs.extend(size_init_cell(size));
                if cfg.distill.warm_start.iter().any(|m| m == method) {
                    needs.push(student_name("nokd", &size.name));
                }
                let name = v.model(&student_name(method, &size.name));
                cells.push(Cell { id: name.clone(), needs, kind: "train" });
                models.push(name);
            }
        }
    }
    // Each model is scored on its own: it and the reference model of reference attacks.
    let reference = cfg.attacks.reference.as_deref();
    let scores: Vec<Cell> = models
        .iter()
        .map(|m| {
            let mut needs = vec![m.clone()];
            needs.extend(reference.filter(|r| r != m).map(str::to_string));
            Cell { id: score_cell(m), needs, kind: "score" }
        })
        .collect();
    let report = Cell { id: "report".into(), needs: scores.iter().map(|c| c.id.clone()).collect(), kind: "report" };
    cells.extend(scores);
    cells.push(report);
    cells
}

/// The cell that makes the weights every student of `size` starts from, if any.
fn size_init_cell(size: &crate::config::StudentConfig) -> Option<String> {
    match (size.init(), &size.heal) {
        (StudentInit::Base, _) => Some(format!("base-{}", size.name)),
        (StudentInit::TeacherBlocks, Some(_)) => Some(format!("heal-{}", size.name)),
        _ => None,
    }
}

/// The scoring cell of model `model`: its attacks, per-block risk, memorization and
/// utility.
pub fn score_cell(model: &str) -> String {
    format!("score-{model}")
}

/// `id` and every cell it needs, directly or not.
pub fn closure<'a>(cells: &'a [Cell], id: &'a str) -> Vec<&'a str> {
    let mut wanted = vec![id];
    let mut i = 0;
    while i < wanted.len() {
        if let Some(c) = cells.iter().find(|c| c.id == wanted[i]) {
            for n in &c.needs {
                if !wanted.contains(&n.as_str()) {
                    wanted.push(n);
                }
            }
        }
        i += 1;
    }
    wanted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quickstart_plan_orders_every_cell_after_what_it_needs() {
        let mut cfg = crate::config::load(None).unwrap().config;
        cfg.distill.warm_start = vec!["gkd".into()];
        let cells = plan(&cfg);
        let ids: Vec<&str> = cells.iter().map(|c| c.id.as_str()).collect();
        for (i, c) in cells.iter().enumerate() {
            for n in &c.needs {
                let at = ids.iter().position(|id| id == n).unwrap_or_else(|| panic!("{} needs unknown {n}", c.id));
                assert!(at < i, "{} before {n}", c.id);
            }
        }
        assert_eq!(ids.first(), Some(&"data"));
        assert_eq!(ids.last(), Some(&"report"));
        let gkd = cells.iter().find(|c| c.id.starts_with("gkd-")).unwrap();
        assert!(gkd.needs.iter().any(|n| n.starts_with("nokd-")), "{gkd:?}");
        // Every model is a cell and is scored on its own, after the reference model.
        let reference = cfg.attacks.reference.clone().unwrap();
        let mut scored: Vec<String> = cells.iter().filter(|c| c.kind == "score").map(|c| c.needs[0].clone()).collect();
        let mut models = cfg.model_names();
        scored.sort();
        models.sort();
        assert_eq!(scored, models);
        let kd = cells.iter().find(|c| c.id == score_cell("kd-small")).unwrap();
        assert_eq!(kd.needs, ["kd-small".to_string(), reference.clone()]);
        assert_eq!(cells.iter().find(|c| c.id == score_cell(&reference)).unwrap().needs, [reference]);
        assert_eq!(cells.last().unwrap().needs.len(), models.len());
        let closure = closure(&cells, &gkd.id);
        assert!(closure.contains(&"data") && closure.contains(&"teacher") && !closure.contains(&"score"), "{closure:?}");
    }

    #[test]
    fn a_multi_seed_plan_is_each_seeds_plan_then_the_summary() {
        let mut cfg = crate::config::load(None).unwrap().config;
        let one = plan(&cfg);
        cfg.seeds = vec![3, 0];
        let cells = plan(&cfg);
        assert_eq!(cells.len(), 2 * one.len() + 1);
        assert_eq!(cells[one.len() + 1], Cell { id: "seed-0/teacher".into(), needs: vec!["seed-0/data".into()], kind: "teacher" });
        assert_eq!(cells.last().unwrap(), &Cell { id: SEEDS.into(), needs: vec!["seed-3/report".into(), "seed-0/report".into()], kind: "seeds" });
        assert_eq!(split_seed("seed-3/kd-small"), Some((3, "kd-small")));
        assert_eq!(split_seed("kd-small"), None);
        assert_eq!(split_seed("seed-x/kd-small"), None);
        assert_eq!(closure(&cells, "seed-0/report").len(), one.len());
    }
}
