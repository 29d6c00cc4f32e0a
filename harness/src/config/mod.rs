//! Experiment configs (SPEC §13): one TOML file describes a whole `kdharness eval` run —
//! data, teacher, students, KD methods, attacks, memorization, per-block risk. Unknown keys
//! are errors naming the file, the line and the nearest valid key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data::{SplitMode, Template};
pub use crate::model::Shape;
use crate::train::TrainConfig;

/// The embedded default (`kdharness eval` with no config).
pub const QUICKSTART: &str = include_str!("../../../configs/quickstart.toml");

/// A whole experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The run's name (its directory under `reports/` by default).
    pub name: String,
    /// The one seed: data, initialisation, sampling, perturbations, bootstrap.
    #[serde(default)]
    pub seed: u64,
    /// Run the whole study once per seed (`seed` is then not used): each seed's run goes
    /// into `OUT/seed-S/`, and `OUT/` gets the across-seed summary (`seeds.csv`, the
    /// seed-spread figure, `report.html`). Empty: one run with `seed`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seeds: Vec<u64>,
    /// Dataset, split, tokenizer.
    pub data: DataConfig,
    /// The teacher.
    pub teacher: TeacherConfig,
    /// Student sizes (each is distilled by every method).
    pub students: Vec<StudentConfig>,
    /// KD methods and their training.
    pub distill: DistillSection,
    /// Attacks and their parameters.
    pub attacks: AttackSection,
    /// Memorization and utility.
    #[serde(default)]
    pub memorize: MemorizeSection,
    /// Per-block risk.
    #[serde(default)]
    pub blocks: BlocksSection,
    /// The base language models of `teacher.source = "base"` and `init = "base"`
    /// students.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<BaseSection>,
    /// Resources of the jobs of `--executor slurm` (not part of any result).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slurm: Option<SlurmSection>,
    /// Defenses (SPEC §18): each a defense plugin at one or several strengths; every
    /// strength makes defended students (and, for a training defense, a defended
    /// teacher), models of the study beside the undefended ones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub defenses: Vec<DefenseConfig>,
}

/// `[[defenses]]`: one defense plugin, swept over the values of one parameter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefenseConfig {
    /// The defense plugin (`kdharness plugins list`).
    pub name: String,
    /// The KD methods whose students it defends, of every student size (empty: every
    /// method of `distill.methods`). The No-KD baseline never reads the teacher.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// Parameters held fixed (`params = { n = 4 }`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, ParamValue>,
    /// At most one parameter and its values: one defended model per value
    /// (`sweep = { sigma = [0.5, 2] }`); none: the defense once, with `params`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sweep: BTreeMap<String, Vec<ParamValue>>,
    /// A training defense (one that acts on the teacher's training, e.g. `dpsgd`): the
    /// teacher is fine-tuned again under it, as `teacher+LABEL`, and the methods' students
    /// are distilled from that teacher. Must agree with the plugin (checked before any work).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub trains_teacher: bool,
    /// A training defense's fine-tuning of the teacher (default: `[teacher.train]`): DP-SGD
    /// usually wants larger batches than plain fine-tuning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teacher_train: Option<TrainConfig>,
}

/// A parameter value in a config: a string or a number, passed to the plugin as text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ParamValue {
    /// `"0.5"`.
    Text(String),
    /// `4`.
    Integer(i64),
    /// `0.5`.
    Float(f64),
}

impl std::fmt::Display for ParamValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParamValue::Text(t) => f.write_str(t),
            ParamValue::Integer(i) => write!(f, "{i}"),
            ParamValue::Float(x) => write!(f, "{x}"),
        }
    }
}

/// One defended setting of a study: a defense at one strength.
#[derive(Debug, Clone, PartialEq)]
pub struct DefenseVariant {
    /// The plugin.
    pub defense: String,
    /// Its parameters (fixed ones, then the swept one).
    pub params: Vec<(String, String)>,
    /// `NAME` or `NAME-KEYVALUE` (`logit_noise-sigma0.5`): the suffix `+LABEL` of its models.
    pub label: String,
    /// The KD methods it defends.
    pub methods: Vec<String>,
    /// Whether it makes its own teacher (`teacher+LABEL`).
    pub trains_teacher: bool,
    /// That teacher's fine-tuning.
    pub teacher_train: Option<TrainConfig>,
}

impl DefenseVariant {
    /// `MODEL+LABEL`.
    pub fn model(&self, undefended: &str) -> String {
        format!("{undefended}+{}", self.label)
    }

    /// The defended teacher's name, for a training defense.
    pub fn teacher(&self) -> Option<String> {
        self.trains_teacher.then(|| self.model("teacher"))
    }
}

/// `[slurm]`: what `kdharness eval --executor slurm` asks of the cluster. The top-level
/// keys apply to every job; `[slurm.stages.teacher]`, `[slurm.stages.students]`,
/// `[slurm.stages.score]` and `[slurm.stages.report]` override them key by key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlurmSection {
    /// `--partition` of every job.
    pub partition: Option<String>,
    /// `--time` of every job (e.g. `04:00:00`).
    pub time: Option<String>,
    /// `--cpus-per-task` of every job.
    pub cpus: Option<usize>,
    /// `--mem` of every job (e.g. `32G`).
    pub mem: Option<String>,
    /// `--gres` of every job (e.g. `gpu:1`).
    pub gres: Option<String>,
    /// Extra `#SBATCH` lines of every job, written as given.
    pub extra: Vec<String>,
    /// How many student jobs of the array run at once (`--array=…%N`; 0: no limit).
    pub array_parallelism: usize,
    /// Per-stage overrides: `teacher`, `students`, `score`, `report`.
    pub stages: BTreeMap<String, SlurmResources>,
}

impl SlurmSection {
    /// The resources of the jobs of `stage`: its overrides over the top-level keys.
    pub fn resources(&self, stage: &str) -> SlurmResources {
        let own = self.stages.get(stage).cloned().unwrap_or_default();
        SlurmResources {
            partition: own.partition.or_else(|| self.partition.clone()),
            time: own.time.or_else(|| self.time.clone()),
            cpus: own.cpus.or(self.cpus),
            mem: own.mem.or_else(|| self.mem.clone()),
            gres: own.gres.or_else(|| self.gres.clone()),
            extra: [self.extra.clone(), own.extra].concat(),
        }
    }
}

/// Resources of one Slurm job; unset keys are left to the cluster's defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlurmResources {
    /// `--partition`.
    pub partition: Option<String>,
    /// `--time` (e.g. `04:00:00`).
    pub time: Option<String>,
    /// `--cpus-per-task`.
    pub cpus: Option<usize>,
    /// `--mem` (e.g. `32G`).
    pub mem: Option<String>,
    /// `--gres` (e.g. `gpu:1`).
    pub gres: Option<String>,
    /// Extra `#SBATCH` lines, written as given (e.g. `#SBATCH --account=abc`).
    pub extra: Vec<String>,
}

/// Where the data comes from and how it is split and tokenized.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// `synthetic`, or a Dolly-schema JSONL file (relative to the config's directory).
    pub source: String,
    /// Ordinary records to generate (synthetic data).
    #[serde(default = "default_records")]
    pub synthetic_records: usize,
    /// Canaries per repetition count (1, 2, 4, 8), forced into the members (synthetic).
    #[serde(default = "default_canaries")]
    pub canaries_per_count: usize,
    /// How synthetic records are worded: `natural` (free text, the default) or
    /// `templates` (the earlier fixed templates: shorter records).
    #[serde(default, skip_serializing_if = "crate::data::synth::Phrasing::is_natural")]
    pub phrasing: crate::data::synth::Phrasing,
    /// Records held out as non-members (the first ones, with the paper's split).
    pub nonmember_count: usize,
    /// `paper` or `random`.
    #[serde(default)]
    pub split: SplitMode,
    /// Prompt template.
    #[serde(default)]
    pub template: Template,
    /// Longer prompts keep their last tokens.
    #[serde(default = "default_prompt_tokens")]
    pub max_prompt_tokens: usize,
    /// Longer responses are cut.
    #[serde(default = "default_response_tokens")]
    pub max_response_tokens: usize,
    /// `train` (byte-level BPE learnt from the data), `teacher` (the pretrained teacher's),
    /// or a tokenizer.json path.
    #[serde(default = "default_tokenizer")]
    pub tokenizer: String,
    /// Vocabulary size of a trained tokenizer.
    #[serde(default = "default_vocab")]
    pub vocab_size: usize,
}

fn default_records() -> usize {
    600
}
fn default_canaries() -> usize {
    2
}
fn default_prompt_tokens() -> usize {
    256
}
fn default_response_tokens() -> usize {
    256
}
fn default_tokenizer() -> String {
    "train".into()
}
fn default_vocab() -> usize {
    2048
}

/// A student's name in outputs: `METHOD-SIZE` (`kd-small`, `nokd-small`).
pub fn student_name(method: &str, size: &str) -> String {
    format!("{method}-{size}")
}

impl Config {
    /// Every model a run of this config makes: `teacher`, then per student size each
    /// method's student and the No-KD one, then each defense variant's teacher (training
    /// defenses) and students.
    pub fn model_names(&self) -> Vec<String> {
        let nokd = self.distill.nokd.then_some("nokd");
        let students = self.students.iter().flat_map(|s| self.distill.methods.iter().map(String::as_str).chain(nokd).map(|m| student_name(m, &s.name)));
        let mut names: Vec<String> = std::iter::once("teacher".to_string()).chain(students).collect();
        for v in self.defense_variants() {
            names.extend(v.teacher());
            for size in &self.students {
                names.extend(v.methods.iter().map(|m| v.model(&student_name(m, &size.name))));
            }
        }
        names
    }

    /// Every defended setting: each `[[defenses]]` entry once per swept value (once if it
    /// sweeps nothing), in config order.
    pub fn defense_variants(&self) -> Vec<DefenseVariant> {
        let mut out = Vec::new();
        for d in &self.defenses {
            let fixed: Vec<(String, String)> = d.params.iter().map(|(k, v)| (k.clone(), v.to_string())).collect();
            let methods = if d.methods.is_empty() { self.distill.methods.clone() } else { d.methods.clone() };
            let variant = |params: Vec<(String, String)>, label: String| DefenseVariant {
                defense: d.name.clone(),
                params,
                label,
                methods: methods.clone(),
                trains_teacher: d.trains_teacher,
                teacher_train: d.teacher_train.clone(),
            };
            match d.sweep.iter().next() {
                None => out.push(variant(fixed.clone(), d.name.clone())),
                Some((key, values)) => {
                    for value in values {
                        let mut params = fixed.clone();
                        params.push((key.clone(), value.to_string()));
                        out.push(variant(params, format!("{}-{key}{value}", d.name)));
                    }
                }
            }
        }
        out
    }
}

/// The teacher: a source and its fine-tuning on the members.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeacherConfig {
    /// `scratch`, `base` (`shape` language-modelled on public text first, see
    /// [`BaseSection`]), `smollm2-135m`, or `hf:DIR` (fine-tuned on the members), or
    /// `onnx:PATH` (taken as is: scored only).
    pub source: String,
    /// Shape of a `scratch` teacher (its vocabulary is the tokenizer's).
    #[serde(default)]
    pub shape: Option<Shape>,
    /// Fine-tuning.
    #[serde(default)]
    pub train: TrainConfig,
}

/// One student size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StudentConfig {
    /// The size's name (`small`, `tiny`, …), part of every student's name.
    pub name: String,
    /// A from-scratch shape, or
    #[serde(default)]
    pub shape: Option<Shape>,
    /// the teacher's blocks at these indices (pretrained teachers).
    #[serde(default)]
    pub teacher_blocks: Option<Vec<usize>>,
    /// Where every student of this size starts (see [`StudentInit`]); by default `scratch`
    /// for a `shape`, `teacher_blocks` for `teacher_blocks`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<String>,
    /// With `teacher_blocks`: heal the cut model first, once per size, by distilling the
    /// pretrained teacher (never the fine-tuned one) into it with forward KL on every
    /// token of the public training share; every method of the size, No-KD included,
    /// starts from the healed cut.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heal: Option<TrainConfig>,
}

/// Where the students of one size start, before any method trains them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StudentInit {
    /// Random weights of `shape`, seeded by the size.
    Scratch,
    /// `shape`, language-modelled on the public training share first (`[base]`): the
    /// analogue of the paper's pretrained students, trained once per size and shared by
    /// every method. No member record is in its data.
    Base,
    /// The teacher's blocks `teacher_blocks` (pretrained teachers).
    TeacherBlocks,
    /// A Hugging Face checkpoint directory (relative to the config).
    Hf(String),
}

impl StudentConfig {
    /// The size's initialisation (the config was validated, so it parses).
    pub fn init(&self) -> StudentInit {
        match self.init.as_deref() {
            None if self.teacher_blocks.is_some() => StudentInit::TeacherBlocks,
            None | Some("scratch") => StudentInit::Scratch,
            Some("base") => StudentInit::Base,
            Some("teacher_blocks") => StudentInit::TeacherBlocks,
            Some(other) => StudentInit::Hf(other.strip_prefix("hf:").unwrap_or(other).to_string()),
        }
    }
}

/// The base language models (`[base]`): a `base` teacher or student is its shape
/// language-modelled on every token (prompt and response) of the public training share
/// before anything else trains it, the analogue of a pretrained LM. No member or
/// non-member record, and not the validation share, is in its data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaseSection {
    /// Its training.
    pub train: TrainConfig,
}

/// The KD methods and how students are trained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistillSection {
    /// KD-method plugins to run (every student size each).
    pub methods: Vec<String>,
    /// Also train the No-KD baseline (SFT on the public split) per size.
    #[serde(default = "default_true")]
    pub nokd: bool,
    /// Optimiser settings of every student.
    #[serde(default)]
    pub train: TrainConfig,
    /// Weight of the KD loss (the rest is cross-entropy on the step's targets).
    #[serde(default = "default_kd_ratio")]
    pub kd_ratio: f64,
    /// Longest sampled response.
    #[serde(default = "default_new_tokens")]
    pub max_new_tokens: usize,
    /// Sampling temperature.
    #[serde(default = "default_temperature")]
    pub temperature: f64,
    /// Share of the public split held out to validate (and to drive DistiLLM's schedule).
    #[serde(default = "default_validation")]
    pub validation_fraction: f64,
    /// Per-method parameter overrides: `[distill.params.gkd] lambda = "0.5"`.
    #[serde(default)]
    pub params: BTreeMap<String, BTreeMap<String, String>>,
    /// Methods whose students start from the No-KD student of their size (the size's
    /// init fine-tuned on the public ground truth), as GKD's, MiniLLM's and DistiLLM's
    /// papers start from a fine-tuned student. Needs `nokd = true`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warm_start: Vec<String>,
    /// Per-method multipliers of `train.lr` (`lr_scale = { minillm = 0.3 }`): policy-
    /// gradient methods want a smaller step than supervised ones, as MiniLLM's paper
    /// trains them. The budget (epochs, batch size: the optimiser steps) stays equal.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub lr_scale: BTreeMap<String, f64>,
    /// A student whose ROUGE-L is below its size's No-KD student's by more than this many
    /// points is flagged `did_not_learn` (summary.csv and the report). Not serialized: it
    /// is not part of what made the students, so it stays out of their stage keys
    /// (changing it re-renders the report only).
    #[serde(default = "default_learn_margin", skip_serializing)]
    pub learn_margin: f64,
}

fn default_learn_margin() -> f64 {
    5.0
}

fn default_true() -> bool {
    true
}
fn default_kd_ratio() -> f64 {
    1.0
}
fn default_new_tokens() -> usize {
    64
}
fn default_temperature() -> f64 {
    1.0
}
fn default_validation() -> f64 {
    0.1
}

/// Attacks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttackSection {
    /// Attack plugins to run (`ref` needs `reference`).
    pub names: Vec<String>,
    /// The reference model of the `ref` attack: the name of a model of the run (e.g.
    /// `nokd-small`).
    #[serde(default)]
    pub reference: Option<String>,
    /// Parameters, `"ATTACK.KEY" = "VALUE"` (e.g. `"mope.sigma" = "0.01"`).
    #[serde(default)]
    pub params: BTreeMap<String, String>,
    /// Bootstrap resamples for intervals.
    #[serde(default = "default_bootstrap")]
    pub bootstrap: usize,
    /// Sequences per forward pass.
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Seconds one attack plugin call may take before its worker process is stopped and
    /// the attack reported as timed out (the other attacks go on). Not part of any stage's
    /// key: it changes no result.
    #[serde(default = "default_plugin_timeout", skip_serializing)]
    pub plugin_timeout_s: f64,
}

/// How long one attack plugin call may take, by default (seconds).
pub const DEFAULT_PLUGIN_TIMEOUT_S: f64 = 600.0;

fn default_plugin_timeout() -> f64 {
    DEFAULT_PLUGIN_TIMEOUT_S
}

fn default_bootstrap() -> usize {
    1000
}
fn default_batch() -> usize {
    8
}

/// Memorization and utility.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemorizeSection {
    /// Run it.
    pub enabled: bool,
    /// Compared tokens (the paper's K).
    pub k: usize,
    /// Generated tokens (at least K).
    pub max_new_tokens: usize,
    /// Hugging Face's no_repeat_ngram_size (0 off; the paper used 6).
    pub no_repeat_ngram: usize,
    /// Canary exposure (Carlini et al. 2019): candidates of each canary's secret scored
    /// per model (all of its space when that is smaller; 0: no exposure).
    pub exposure_candidates: usize,
    /// The canaries' secret format: a run of this many decimal digits in the response
    /// (the synthetic canaries carry an 8-digit code).
    pub exposure_digits: usize,
}

impl Default for MemorizeSection {
    fn default() -> Self {
        MemorizeSection {
            enabled: true,
            k: crate::metrics::memorization::DEFAULT_K,
            max_new_tokens: crate::metrics::memorization::DEFAULT_K,
            no_repeat_ngram: 0,
            exposure_candidates: 200,
            exposure_digits: 8,
        }
    }
}

/// Per-block risk (MoPe with one block perturbed; n and σ are the `mope` attack's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BlocksSection {
    /// Run it.
    pub enabled: bool,
    /// The models swept, by name (`teacher`, `kd-small`, ...); empty: every model. A
    /// 30-block teacher alone costs 30 × n scoring passes, so large studies sweep fewer.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
    /// Attack parameters for the sweep only, overriding `[attacks.params]` there
    /// (`"mope.n" = "1"`: one perturbed pass per block and model).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, String>,
}

impl Default for BlocksSection {
    fn default() -> Self {
        BlocksSection { enabled: true, models: Vec::new(), params: BTreeMap::new() }
    }
}

/// A config that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Where a config came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The config.
    pub config: Config,
    /// Its file (`None` for the embedded quickstart).
    pub path: Option<PathBuf>,
    /// Its text (recorded in the manifest).
    pub text: String,
}

impl Loaded {
    /// Resolves a path written in the config against the config's directory.
    pub fn resolve(&self, path: &str) -> PathBuf {
        let p = PathBuf::from(path);
        match (&self.path, p.is_absolute()) {
            (Some(file), false) => file.parent().unwrap_or(Path::new(".")).join(p),
            _ => p,
        }
    }
}

/// Reads and checks a config file, or the embedded quickstart when `path` is `None`.
pub fn load(path: Option<&Path>) -> Result<Loaded, ConfigError> {
    let (text, label) = match path {
        Some(p) => (
            std::fs::read_to_string(p).map_err(|e| ConfigError(format!("cannot read config {}: {e}", p.display())))?,
            p.display().to_string(),
        ),
        None => (QUICKSTART.to_string(), "configs/quickstart.toml (embedded)".to_string()),
    };
    let config = parse(&text, &label)?;
    Ok(Loaded { config, path: path.map(Path::to_path_buf), text })
}

/// Parses config text; `label` names it in errors.
pub fn parse(text: &str, label: &str) -> Result<Config, ConfigError> {
    let config: Config = toml::from_str(text).map_err(|e| ConfigError(explain(&e, text, label)))?;
    validate(&config).map_err(|m| ConfigError(format!("{label}: {m}")))?;
    Ok(config)
}

/// One line: `FILE:LINE: message`, plus the nearest valid key for an unknown one.
fn explain(e: &toml::de::Error, text: &str, label: &str) -> String {
    let line = e.span().map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
    let message = e.message().trim().replace('\n', " ");
    let mut out = match line {
        Some(l) => format!("{label}:{l}: {message}"),
        None => format!("{label}: {message}"),
    };
    if let Some(rest) = message.strip_prefix("unknown field `")
        && let Some((unknown, expected)) = rest.split_once('`')
    {
        let candidates: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
        out.push_str(&crate::suggest::did_you_mean(unknown, candidates.iter().copied()));
    }
    out
}

impl Config {
    /// The config of one seed's run of a multi-seed study: `seed` set, `seeds` cleared.
    pub fn for_seed(&self, seed: u64) -> Config {
        Config { seed, seeds: Vec::new(), ..self.clone() }
    }

    /// The longest sequence any stage feeds a model, and the keys it comes from: a prompt
    /// of `data.max_prompt_tokens` followed by a response and its end token, or by the
    /// tokens the distill and memorize stages generate.
    pub fn longest_sequence(&self) -> (String, usize) {
        let prompt = self.data.max_prompt_tokens;
        [
            ("data.max_prompt_tokens + data.max_response_tokens + 1", prompt + self.data.max_response_tokens + 1),
            ("data.max_prompt_tokens + distill.max_new_tokens", prompt + self.distill.max_new_tokens),
            ("data.max_prompt_tokens + memorize.max_new_tokens", prompt + if self.memorize.enabled { self.memorize.max_new_tokens } else { 0 }),
        ]
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map(|(k, n)| (k.to_string(), n))
        .expect("three candidates")
    }
}

/// A seed listed more than once, if any.
pub fn repeated_seed(seeds: &[u64]) -> Option<u64> {
    seeds.iter().enumerate().find_map(|(i, s)| seeds[..i].contains(s).then_some(*s))
}

fn validate(c: &Config) -> Result<(), String> {
    if let Some(twice) = repeated_seed(&c.seeds) {
        return Err(format!("seeds lists {twice} twice; each seed is one run of the study"));
    }
    if let Some(slurm) = &c.slurm
        && let Some(stage) = slurm.stages.keys().find(|k| !["teacher", "students", "score", "report"].contains(&k.as_str()))
    {
        return Err(format!("slurm.stages.{stage}: the stages are teacher, students, score and report"));
    }
    let plain = |n: &str| !n.is_empty() && !n.starts_with('.') && n.chars().all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch));
    if !plain(&c.name) {
        return Err(format!("name `{}` must be a plain name (letters, digits, `-`, `_`, `.`; not starting with `.`): it names the run directory reports/NAME", c.name));
    }
    if (c.teacher.source.starts_with("hf:") || c.teacher.source == "smollm2-135m") && c.data.tokenizer == "train" {
        return Err(format!(
            "data.tokenizer = \"train\" with the pretrained teacher `{}`: a tokenizer trained here numbers tokens its own way; use data.tokenizer = \"teacher\"",
            c.teacher.source
        ));
    }
    let (key, longest) = c.longest_sequence();
    let shapes = c.teacher.shape.iter().map(|s| ("teacher.shape".to_string(), s)).chain(c.students.iter().filter_map(|s| s.shape.as_ref().map(|shape| (format!("student `{}` shape", s.name), shape))));
    for (what, shape) in shapes {
        if longest > shape.max_positions {
            return Err(format!("{key} = {longest} tokens exceeds {what}.max_positions = {}; lower the limits or raise max_positions", shape.max_positions));
        }
    }
    if !(c.attacks.plugin_timeout_s > 0.0 && c.attacks.plugin_timeout_s.is_finite()) {
        return Err(format!("attacks.plugin_timeout_s = {} must be a positive number of seconds", c.attacks.plugin_timeout_s));
    }
    let source = c.teacher.source.as_str();
    let known_source = ["scratch", "base", "smollm2-135m"].contains(&source) || source.starts_with("hf:") || source.starts_with("onnx:");
    if !known_source {
        return Err(format!("teacher.source `{source}` must be scratch, base, smollm2-135m, hf:DIR or onnx:PATH"));
    }
    if (source == "scratch" || source == "base") && c.teacher.shape.is_none() {
        return Err(format!("a {source} teacher needs [teacher.shape]"));
    }
    if source == "base" && c.base.is_none() {
        return Err("teacher.source = \"base\" needs [base] with its `train` settings".into());
    }
    if c.students.is_empty() {
        return Err("[[students]] must list at least one student size".into());
    }
    for s in &c.students {
        match s.init.as_deref() {
            None | Some("scratch") | Some("base") | Some("teacher_blocks") => {}
            Some(hf) if hf.starts_with("hf:") => {}
            Some(other) => return Err(format!("student `{}`: init `{other}` must be scratch, base, teacher_blocks or hf:DIR", s.name)),
        }
        let wanted = match s.init() {
            StudentInit::Scratch | StudentInit::Base => (true, false),
            StudentInit::TeacherBlocks => (false, true),
            StudentInit::Hf(_) => (false, false),
        };
        if (s.shape.is_some(), s.teacher_blocks.is_some()) != wanted {
            let init = s.init.as_deref().unwrap_or(if s.teacher_blocks.is_some() { "teacher_blocks" } else { "scratch" });
            let needs = match wanted {
                (true, _) => "`shape` (and no `teacher_blocks`)",
                (_, true) => "`teacher_blocks` (and no `shape`)",
                _ => "neither `shape` nor `teacher_blocks`",
            };
            return Err(format!("student `{}`: init `{init}` needs {needs}", s.name));
        }
        if s.init() == StudentInit::Base && c.base.is_none() {
            return Err(format!("student `{}` has init = \"base\": add [base] with its `train` settings", s.name));
        }
        if s.heal.is_some() && s.init() != StudentInit::TeacherBlocks {
            return Err(format!("student `{}`: `heal` distils the pretrained teacher into a cut of its blocks; it needs init `teacher_blocks` (use `init = \"base\"` to pretrain a `shape`)", s.name));
        }
        if s.init() == StudentInit::TeacherBlocks && (source == "scratch" || source == "base") {
            return Err(format!("student `{}`: teacher_blocks needs a pretrained teacher (smollm2-135m or hf:DIR), not `{source}`", s.name));
        }
        if s.name.is_empty() || s.name.contains(['/', ',', ':', ' ']) {
            return Err(format!("student name `{}` must be non-empty and free of '/', ',', ':' and spaces", s.name));
        }
    }
    if c.distill.methods.iter().any(|m| m == "nokd") {
        return Err("list the No-KD baseline with `nokd = true`, not among distill.methods".into());
    }
    for m in &c.distill.warm_start {
        if !c.distill.methods.contains(m) {
            return Err(format!("distill.warm_start lists `{m}`, which is not among distill.methods"));
        }
    }
    for (m, scale) in &c.distill.lr_scale {
        if !c.distill.methods.contains(m) && m != "nokd" {
            return Err(format!("distill.lr_scale names `{m}`, which is not among distill.methods"));
        }
        if !(*scale > 0.0 && scale.is_finite()) {
            return Err(format!("distill.lr_scale.{m} must be a positive number, got {scale}"));
        }
    }
    if !c.distill.warm_start.is_empty() && !c.distill.nokd {
        return Err("distill.warm_start starts students from the No-KD student: set distill.nokd = true".into());
    }
    if !(0.0..1.0).contains(&c.distill.validation_fraction) {
        return Err(format!("distill.validation_fraction must be in [0, 1), got {}", c.distill.validation_fraction));
    }
    if c.attacks.names.iter().any(|a| a == "ref") && c.attacks.reference.is_none() {
        return Err("the `ref` attack needs attacks.reference (the name of a model of the run, e.g. nokd-small)".into());
    }
    let models = c.model_names();
    if let Some(unknown) = c.blocks.models.iter().find(|m| !models.contains(m)) {
        return Err(format!("blocks.models names `{unknown}`, which is not a model of this run ({})", models.join(", ")));
    }
    let plain_value = |v: &str| !v.is_empty() && v.chars().all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch));
    for (i, d) in c.defenses.iter().enumerate() {
        let at = format!("defenses[{i}] (`{}`)", d.name);
        if !plain_value(&d.name) {
            return Err(format!("{at}: name must be a plugin name (letters, digits, `-`, `_`, `.`)"));
        }
        if d.sweep.len() > 1 {
            return Err(format!("{at}: sweep one parameter per entry (it has {}); add another [[defenses]] entry for the next", d.sweep.len()));
        }
        if let Some((key, values)) = d.sweep.iter().next() {
            if values.is_empty() {
                return Err(format!("{at}: sweep.{key} lists no value"));
            }
            if d.params.contains_key(key) {
                return Err(format!("{at}: `{key}` is both swept and fixed in params"));
            }
            if let Some(bad) = values.iter().map(ToString::to_string).find(|v| !plain_value(v)) {
                return Err(format!("{at}: sweep.{key} value `{bad}` names models: use letters, digits, `-`, `_`, `.`"));
            }
        }
        if let Some(m) = d.methods.iter().find(|m| !c.distill.methods.contains(m)) {
            return Err(format!("{at}: methods lists `{m}`, which is not among distill.methods (the No-KD baseline never reads the teacher)"));
        }
        if d.teacher_train.is_some() && !d.trains_teacher {
            return Err(format!("{at}: teacher_train is the defended teacher's fine-tuning; it needs trains_teacher = true"));
        }
        if d.trains_teacher && c.teacher.source.starts_with("onnx:") {
            return Err(format!("{at}: a training defense fine-tunes the teacher again; teacher.source `{}` is taken as is", c.teacher.source));
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    if let Some(twice) = c.defense_variants().into_iter().find(|v| !seen.insert(v.label.clone())) {
        return Err(format!("two defense settings are both labelled `{}`: give each [[defenses]] entry of one plugin its own sweep values", twice.label));
    }
    if c.memorize.max_new_tokens < c.memorize.k {
        return Err(format!("memorize.max_new_tokens ({}) must be at least memorize.k ({})", c.memorize.max_new_tokens, c.memorize.k));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_config_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
        let mut seen = 0;
        for name in ["smoke", "quickstart", "smollm2", "smollm2-lite", "paper-gpt2", "paper-opt", "defenses"] {
            let path = dir.join(format!("{name}.toml"));
            let loaded = load(Some(&path)).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(loaded.config.name, name);
            seen += 1;
        }
        assert_eq!(seen, 7);
        assert_eq!(load(None).unwrap().config.name, "quickstart");
    }

    #[test]
    fn unknown_keys_name_the_line_and_the_nearest_key() {
        let text = QUICKSTART.replacen("nonmember_count", "nonmember_cuont", 1);
        let err = parse(&text, "q.toml").unwrap_err().to_string();
        let line = QUICKSTART.lines().position(|l| l.contains("nonmember_count")).unwrap() + 1;
        assert!(err.starts_with(&format!("q.toml:{line}: unknown field `nonmember_cuont`")), "{err}");
        assert!(err.contains("did you mean `nonmember_count`"), "{err}");
        let err = parse(&QUICKSTART.replacen("[memorize]", "[memorise]", 1), "q.toml").unwrap_err().to_string();
        assert!(err.contains("did you mean `memorize`"), "{err}");
    }

    #[test]
    fn a_sweep_of_unknown_models_is_refused_before_anything_runs() {
        let text = QUICKSTART.replacen("[blocks]", "[blocks]\nmodels = [\"teacher\", \"kd-small\"]", 1);
        let cfg = parse(&text, "q.toml").unwrap();
        assert_eq!(cfg.blocks.models, ["teacher", "kd-small"]);
        let err = parse(&text.replace("\"kd-small\"", "\"kd-large\""), "q.toml").unwrap_err().to_string();
        assert!(err.contains("blocks.models names `kd-large`, which is not a model of this run (teacher, kd-small,"), "{err}");
    }

    #[test]
    fn a_run_name_is_a_plain_directory_name() {
        for bad in ["../escape", "/abs", "a/b", "..", ".hidden", "", "two words"] {
            let text = QUICKSTART.replacen("name = \"quickstart\"", &format!("name = {bad:?}"), 1);
            let err = parse(&text, "q.toml").unwrap_err().to_string();
            assert!(err.contains("must be a plain name"), "{bad}: {err}");
        }
        assert!(parse(&QUICKSTART.replacen("name = \"quickstart\"", "name = \"study-2.v1_a\"", 1), "q.toml").is_ok());
    }

    #[test]
    fn defense_sweeps_name_one_model_per_value_and_bad_sweeps_are_refused() {
        let cfg = load(Some(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/defenses.toml"))).unwrap().config;
        let labels: Vec<String> = cfg.defense_variants().iter().map(|v| v.label.clone()).collect();
        assert_eq!(labels, [
            "temperature-t2", "temperature-t4", "topk-k1", "topk-k10", "logit_noise-sigma1", "logit_noise-sigma4", "round_probs-bits1", "round_probs-bits3",
            "ngram_filter-r0.2", "ngram_filter-r0.5", "dpsgd-noise_multiplier0.5", "dpsgd-noise_multiplier1",
        ]);
        let dp = cfg.defense_variants().pop().unwrap();
        assert_eq!(dp.params, [("delta".to_string(), "0.00001".to_string()), ("max_grad_norm".into(), "1".into()), ("noise_multiplier".into(), "1".into())]);
        assert_eq!(dp.teacher().as_deref(), Some("teacher+dpsgd-noise_multiplier1"));
        let names = cfg.model_names();
        assert_eq!(names.len(), 1 + 3 + 12 + 2, "{names:?}");
        assert!(names.contains(&"kd-small+topk-k1".to_string()) && names.contains(&"seqkd-small+ngram_filter-r0.5".to_string()));
        let base = "[[defenses]]\nname = \"topk\"\n";
        for (extra, want) in [
            ("sweep = { k = [1], j = [2] }", "sweep one parameter per entry"),
            ("sweep = { k = [] }", "sweep.k lists no value"),
            ("params = { k = 1 }\nsweep = { k = [2] }", "`k` is both swept and fixed"),
            ("methods = [\"nokd\"]", "methods lists `nokd`, which is not among distill.methods"),
            ("sweep = { k = [\"a/b\"] }", "value `a/b` names models"),
            ("teacher_train = { epochs = 1 }", "it needs trains_teacher = true"),
        ] {
            let err = parse(&format!("{QUICKSTART}\n{base}{extra}\n"), "q.toml").unwrap_err().to_string();
            assert!(err.contains(want), "{extra}: {err}");
        }
        let twice = format!("{QUICKSTART}\n{base}sweep = {{ k = [1] }}\n{base}sweep = {{ k = [1] }}\n");
        assert!(parse(&twice, "q.toml").unwrap_err().to_string().contains("both labelled `topk-k1`"));
    }

    #[test]
    fn only_a_cut_of_teacher_blocks_can_be_healed() {
        let lite = include_str!("../../../configs/smollm2-lite.toml");
        let heal = "heal = { epochs = 2, lr = 1e-3, batch_size = 8 }\n[distill]";
        let healed = parse(&lite.replacen("[distill]", heal, 1), "lite.toml").unwrap();
        assert!(healed.students.iter().all(|s| s.heal.as_ref().is_some_and(|h| h.epochs == 2 && h.lr == 1e-3)));
        let text = QUICKSTART.replacen("[[students]]", "[[students]]\nheal = { epochs = 1, lr = 1e-3, batch_size = 8 }", 1);
        let err = parse(&text, "q.toml").unwrap_err().to_string();
        assert!(err.contains("`heal` distils the pretrained teacher into a cut of its blocks; it needs init `teacher_blocks`"), "{err}");
    }
}
