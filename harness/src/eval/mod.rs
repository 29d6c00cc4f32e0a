//! `kdharness eval`: the whole experiment of SPEC §3, stage by stage, resumable.
//!
//! Every stage writes under the run directory and records, in a `.done` file, the content
//! hash of what it was made from (its config section, its upstream artifacts, the tokenizer,
//! pretrained weights and plugin libraries it used) and the hash of every file it wrote. A
//! stage whose hash is unchanged and whose outputs are intact is skipped, so a killed run resumes where it stopped (students
//! are done one by one) and a changed attack reruns only the attack and report stages.
//! Each stage calls the library function of its module with a typed request
//! (`data::prepare`, `train::train`, `distill::train_student`, `export::export`,
//! `attack::stage::run`, `memorize::stage::run`, `report::render_run`): the `attack`,
//! `memorize`, `report` and `model export` commands call the same functions.

mod lock;
mod marker;
pub mod plan;
pub mod slurm;
mod seeds;
mod stages;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde_json::json;

use crate::config::{Config, Loaded};
use crate::plugins::Registry;
use crate::report::ModelRole;
use crate::runtime::RuntimeSettings;
use crate::status;
use marker::{Marker, Outputs};

/// The stages, in order.
pub const STAGES: [&str; 8] = ["data", "teacher", "distill", "export", "attack", "memorize", "blocks", "report"];

/// Run-wide settings that are not part of the experiment.
#[derive(Debug, Clone)]
pub struct Options {
    /// The run directory.
    pub out: PathBuf,
    /// Ignore completed stages and redo everything.
    pub fresh: bool,
    /// Run only these stages (their inputs must exist).
    pub only: Vec<String>,
    /// Extra plugin directories.
    pub plugin_dirs: Vec<PathBuf>,
    /// ONNX Runtime library, device and threads of the scoring stages.
    pub runtime: RuntimeSettings,
    /// The `kdharness` executable whose `attack-worker` runs the attack plugins, each call
    /// at most `attacks.plugin_timeout_s` (None: in this process, unguarded).
    pub attack_worker: Option<PathBuf>,
    /// Run only this cell of the plan (and the cells it needs that are not done yet),
    /// sharing the run directory with other `--cell` runs.
    pub cell: Option<String>,
}

/// One model of the run.
#[derive(Debug, Clone)]
struct RunModel {
    name: String,
    role: ModelRole,
    dir: PathBuf,
    /// The hash of everything it was made from.
    key: String,
    /// Where a student started.
    init: Option<crate::manifest::InitRecord>,
}

/// The run in progress: its config, options, plugins and stage timings.
struct Pipeline<'a> {
    loaded: &'a Loaded,
    cfg: &'a Config,
    opts: &'a Options,
    registry: Registry,
    timings: serde_json::Map<String, serde_json::Value>,
    /// With `--cell`: that cell and every cell it needs; other cells are left alone.
    cells: Option<Vec<String>>,
    /// A dry run: the cells with a stage that is not done are collected here and nothing
    /// runs.
    pending: Option<std::collections::BTreeSet<String>>,
}

impl Pipeline<'_> {
    fn wanted(&self, stage: &str) -> bool {
        self.opts.only.is_empty() || self.opts.only.iter().any(|s| s == stage)
    }

    /// Runs `f` as stage `name` of plan cell `cell` unless its marker says `key` is done
    /// and its `outputs` are intact; records the time. With `--cell`, cells outside the
    /// selected one's needs are left alone, and each cell run holds its cell's lock.
    fn stage(&mut self, name: &str, cell: &str, marker_dir: &Path, key: &str, outputs: Outputs<'_>, f: impl FnOnce(&mut Self) -> Result<()>) -> Result<()> {
        let _cell_lock = match &self.cells {
            Some(cells) if !cells.iter().any(|c| c == cell) => return Ok(()),
            Some(_) => Some(lock::CellLock::take(&self.opts.out, cell)?),
            None => None,
        };
        let fresh = self.opts.fresh && self.cells.as_ref().is_none_or(|c| c[0] == cell);
        let marker = Marker::new(marker_dir);
        if let Some(pending) = &mut self.pending {
            if fresh || !marker.is(name, key) {
                pending.insert(cell.to_string());
            }
            return Ok(());
        }
        if !fresh && marker.is(name, key) {
            status::info(format!("{name}: up to date"));
            self.timings.insert(name.into(), json!({"seconds": 0.0, "cached": true}));
            return Ok(());
        }
        if !self.wanted(name) {
            bail!("stage `{name}` is not done and not among --only; run it first");
        }
        status::info(format!("{name}: running"));
        crate::stop::enter_stage(name);
        let started = Instant::now();
        std::fs::create_dir_all(marker_dir).with_context(|| format!("cannot create {}", marker_dir.display()))?;
        // With --fresh the stage is redone even though its marker holds: gone before the
        // stage touches its outputs, so that a killed redo is redone too. Otherwise a
        // marker of other inputs stays until this run's replaces it: a stage that fails
        // on bad input loses nothing, and outputs it changed before a kill no longer
        // match the hashes the marker holds.
        if fresh {
            marker.clear()?;
        }
        f(self)?;
        marker.set(key, outputs)?;
        let seconds = started.elapsed().as_secs_f64();
        let previous = self.timings.get(name).and_then(|t| t["seconds"].as_f64()).unwrap_or(0.0);
        self.timings.insert(name.into(), json!({"seconds": previous + seconds, "cached": false}));
        status::info(format!("{name}: done in {seconds:.1}s"));
        Ok(())
    }

    fn dir(&self, sub: &str) -> PathBuf {
        self.opts.out.join(sub)
    }

    /// Every stage before the report, in order; the data and the models.
    fn before_report(&mut self) -> Result<(stages::Data, Vec<RunModel>)> {
        let data = self.data()?;
        let teacher = self.teacher(&data)?;
        let mut models = vec![teacher.clone()];
        let students = self.distill(&data, &teacher)?;
        let defended = self.defended(&data, &teacher, &students)?;
        models.extend(students);
        models.extend(defended);
        self.export(&models)?;
        self.attack(&data, &models)?;
        self.memorize(&data, &models)?;
        Ok((data, models))
    }
}

/// Runs the experiment of `loaded` into `opts.out`: one run, or one per seed of
/// `seeds` and their summary.
pub fn run(loaded: &Loaded, opts: &Options) -> Result<()> {
    match loaded.config.seeds.is_empty() {
        true => run_one(loaded, opts),
        false => seeds::run(loaded, opts),
    }
}

/// Runs one seed's experiment into `opts.out`.
fn run_one(loaded: &Loaded, opts: &Options) -> Result<()> {
    let started = Instant::now();
    std::fs::create_dir_all(&opts.out).with_context(|| format!("cannot create {}", opts.out.display()))?;
    let plan = plan::plan(&loaded.config);
    let cells = match &opts.cell {
        Some(id) => {
            if !plan.iter().any(|c| &c.id == id) {
                let ids: Vec<&str> = plan.iter().map(|c| c.id.as_str()).collect();
                bail!("--cell `{id}` is not a cell of this config's plan{} (cells: {})", crate::suggest::did_you_mean(id, ids.iter().copied()), ids.join(", "));
            }
            Some(plan::closure(&plan, id).into_iter().map(str::to_string).collect::<Vec<_>>())
        }
        None => None,
    };
    let (_lock, _shared) = match cells {
        None => (Some(lock::RunLock::take(&opts.out)?), None),
        Some(_) => (None, Some(lock::RunLock::share(&opts.out)?)),
    };
    for stage in &opts.only {
        if !STAGES.contains(&stage.as_str()) {
            bail!("unknown stage `{stage}`{} (stages: {})", crate::suggest::did_you_mean(stage, STAGES), STAGES.join(", "));
        }
    }
    let mut registry = crate::plugins::load(&opts.plugin_dirs);
    if let Some(worker) = &opts.attack_worker {
        registry.isolate_attacks(worker.clone(), std::time::Duration::from_secs_f64(loaded.config.attacks.plugin_timeout_s));
    }
    check_plugins(&loaded.config, &registry)?;
    if opts.runtime.device != crate::runtime::Device::Cpu {
        // An accelerator asked for is there, or the run stops before any work.
        opts.runtime.open()?;
        crate::model::training_device(opts.runtime.device)?;
    }
    stages::check_inputs(loaded)?;
    let mut p = Pipeline { loaded, cfg: &loaded.config, opts, registry, timings: serde_json::Map::new(), cells, pending: None };
    let (data, models) = p.before_report()?;
    match &p.cells {
        Some(cells) if !cells.iter().any(|c| c == "report") => Ok(()),
        Some(_) => {
            let _cell = lock::CellLock::take(&opts.out, "report")?;
            p.report(&data, &models, started)
        }
        None => p.report(&data, &models, started),
    }
}

/// The cells of the plan that are not done in `opts.out` (the report always is not):
/// what a resubmission must run. Nothing is run or written.
pub fn pending(loaded: &Loaded, opts: &Options, registry: Registry) -> Result<Vec<String>> {
    if !loaded.config.seeds.is_empty() {
        return seeds::pending(loaded, opts);
    }
    let plan = plan::plan(&loaded.config);
    let all = || plan.iter().map(|c| c.id.clone()).collect::<Vec<_>>();
    let mut p = Pipeline { loaded, cfg: &loaded.config, opts, registry, timings: serde_json::Map::new(), cells: None, pending: Some(Default::default()) };
    let passed = p.before_report();
    // Without the data nothing downstream can be judged (or even read): all is to do.
    if p.pending.as_ref().is_some_and(|s| s.contains("data")) {
        return Ok(all());
    }
    passed?;
    let mut pending = p.pending.take().unwrap_or_default();
    pending.insert("report".into());
    Ok(plan.into_iter().map(|c| c.id).filter(|id| pending.contains(id)).collect())
}

/// Every KD method and attack the config names is loaded, before any work.
pub(crate) fn check_plugins(cfg: &Config, registry: &Registry) -> Result<()> {
    let heal = cfg.students.iter().any(|s| s.heal.is_some()).then_some("kd");
    let methods = cfg.distill.methods.iter().map(String::as_str).chain(cfg.distill.nokd.then_some("nokd")).chain(heal);
    // One line for a name that no loaded plugin provides.
    let not_loaded = |key: &str, kind: &str, name: &str, loaded: Vec<&str>| {
        anyhow::anyhow!(
            "{key}: no {kind} `{name}` is loaded{} (loaded: {}); build its plugin or give its directory with --plugin-dir",
            crate::suggest::did_you_mean(name, loaded.iter().copied()),
            loaded.join(", ")
        )
    };
    if let Some(method) = methods.into_iter().find(|m| registry.kd_method(m).is_none()) {
        return Err(not_loaded("distill.methods", "KD method", method, registry.kd_names().collect()));
    }
    for (method, given) in &cfg.distill.params {
        if let Some(kd) = registry.kd_method(method) {
            let given: Vec<(String, String)> = given.clone().into_iter().collect();
            kd.params(&given).map_err(|e| anyhow::anyhow!("distill.params.{method}: {e}"))?;
        }
    }
    for (key, table) in [("attacks.params", &cfg.attacks.params), ("blocks.params", &cfg.blocks.params)] {
        let by_attack = stages::attack_params(table).with_context(|| key.to_string())?;
        for (attack, given) in &by_attack {
            if let Some(a) = registry.attack(attack) {
                a.params(given).map_err(|e| anyhow::anyhow!("{key}: {e}"))?;
            }
        }
    }
    for (i, d) in cfg.defenses.iter().enumerate() {
        let key = format!("defenses[{i}].name");
        let loaded = registry.defense(&d.name).ok_or_else(|| not_loaded(&key, "defense", &d.name, registry.defense_names().collect()))?;
        let trains = loaded.decl.acts_on.contains(kdharness_plugin_api::defense::DefenseTarget::TEACHER_TRAINING);
        if trains != d.trains_teacher {
            bail!(
                "defenses[{i}] (`{}`): the plugin acts on {}; set trains_teacher = {trains}",
                d.name,
                loaded.decl.acts_on.names().join(" and ")
            );
        }
    }
    for v in cfg.defense_variants() {
        if let Some(loaded) = registry.defense(&v.defense) {
            loaded.params(&v.params).map_err(|e| anyhow::anyhow!("defenses (`{}`): {e}", v.label))?;
        }
    }
    match cfg.attacks.names.iter().find(|a| registry.attack(a).is_none()) {
        Some(attack) => Err(not_loaded("attacks.names", "attack", attack, registry.attack_names().collect())),
        None => Ok(()),
    }
}
