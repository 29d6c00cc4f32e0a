//! The attack stage (SPEC §3 steps 5, 6 and 8): every model scored through ONNX Runtime,
//! every planned attack run on its signals, optionally the per-block sweep, and the
//! results written as `scores.csv`, `summary.csv`, `blocks.csv` and `manifest.json`. The
//! `attack` command and `kdharness eval` both call [`run`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use kdharness_plugin_api::{OwnedSample, PrefixRequest, SignalSet};

use super::{AttackError, AttackParams, Feeds, Planned, check_needs, resolve};
use super::sweep;
use crate::blocks::{OnnxWeights, Scope};
use crate::data::{MembershipSets, Record, Template, TokenLimits, TokenizerFile};
use crate::manifest::{FileRecord, Manifest, ModelRecord, OrtRecord, PluginRecord};
use crate::metrics::Bootstrap;
use crate::plugins::Registry;
use crate::report::{self, BlockRow, ModelRole, Role, ScoreRow, SummaryRow};
use crate::runtime::RuntimeSettings;
use crate::score::frequency::TokenFrequency;
use crate::score::{BatchSettings, Scored, Scorer, SignalCache, Subject, Target};
use crate::status;

/// Everything the attack stage needs.
#[derive(Debug, Clone)]
pub struct AttackRequest {
    /// The models attacked.
    pub models: Vec<Target>,
    /// Reference models for attacks that need one.
    pub references: Vec<Target>,
    /// tokenizer.json of the models.
    pub tokenizer: PathBuf,
    /// tokenizer.json of the references (default: `tokenizer`).
    pub reference_tokenizer: Option<PathBuf>,
    /// Members, Dolly-schema JSONL.
    pub members: PathBuf,
    /// Non-members, Dolly-schema JSONL.
    pub nonmembers: PathBuf,
    /// Attacks to run (empty: every loaded attack this request can feed, costly ones aside).
    pub attacks: Vec<String>,
    /// Parameters given per attack.
    pub params: AttackParams,
    /// Prompt template of the models.
    pub template: Template,
    /// Prompt template of the references (default: `template`).
    pub reference_template: Option<Template>,
    /// Prompt and response cuts.
    pub limits: TokenLimits,
    /// Batching of forward passes.
    pub batch: BatchSettings,
    /// Seeds the perturbations and the bootstrap.
    pub seed: u64,
    /// Bootstrap resamples (0: no intervals).
    pub bootstrap: usize,
    /// The per-block sweep, if any.
    pub blocks: Option<BlockSweep>,
    /// ONNX Runtime library, device, threads.
    pub runtime: RuntimeSettings,
    /// Output directory.
    pub out: PathBuf,
    /// Where per-sample signals are cached (content-addressed: several runs may share it).
    pub signals: PathBuf,
    /// The reference corpus of the token frequency table (records JSONL), for attacks that
    /// need `token_frequency`.
    pub frequency_corpus: Option<PathBuf>,
    /// Known non-members (records JSONL, never scored) whose last records make the prefix
    /// of attacks that need `prefixed_logprob`.
    pub prefix_pool: Option<PathBuf>,
    /// Known non-members (records JSONL, never among the samples) scored like the samples
    /// for attacks that compare with a population (`calibration`).
    pub population: Option<PathBuf>,
}

/// The per-block sweep: which models, and the attacks' parameters in it.
#[derive(Debug, Clone)]
pub struct BlockSweep {
    /// The models swept, by name; empty: every model.
    pub models: Vec<String>,
    /// Parameters that override the attack stage's in the sweep only (`mope.n = 1`: one
    /// perturbed pass per block instead of the whole-model attack's n).
    pub params: AttackParams,
}

impl BlockSweep {
    /// Whether model `name` is swept.
    pub fn covers(&self, name: &str) -> bool {
        self.models.is_empty() || self.models.iter().any(|n| n == name)
    }
}

/// What the stage produced besides its files.
#[derive(Debug, Clone)]
pub struct AttackOutcome {
    /// The rows of `summary.csv`.
    pub summary: Vec<SummaryRow>,
    /// Attacks (or per-block sweeps) that failed while the rest went on.
    pub failures: Vec<String>,
}

/// Per-sample results gathered over the models.
#[derive(Default)]
struct Results {
    scores: Vec<ScoreRow>,
    blocks: Vec<BlockRow>,
    failures: Vec<String>,
    models: Vec<ModelRecord>,
}

/// Runs the attack stage of `request` with the plugins of `registry`.
pub fn run(request: &AttackRequest, registry: &Registry) -> Result<AttackOutcome> {
    let started = Instant::now();
    Target::check_names(request.models.iter().chain(&request.references))?;
    if let Some(sweep) = &request.blocks
        && let Some(unknown) = sweep.models.iter().find(|n| !request.models.iter().any(|m| &m.name == *n))
    {
        let known: Vec<&str> = request.models.iter().map(|m| m.name.as_str()).collect();
        bail!("the per-block sweep names `{unknown}`, which is not a model of this run ({})", known.join(", "));
    }
    let sets = MembershipSets::load(&request.members, &request.nonmembers)?;
    let tokenizer = TokenizerFile::load(&request.tokenizer)?;
    let reference_tokenizer = match (&request.reference_tokenizer, request.references.is_empty()) {
        (_, true) => None,
        (Some(path), false) => Some(TokenizerFile::load(path)?),
        (None, false) => Some(tokenizer.clone()),
    };
    // Which attacks, with which parameters, before any expensive work.
    let feeds = Feeds { reference: !request.references.is_empty(), corpus: request.frequency_corpus.is_some(), pool: request.prefix_pool.is_some(), population: request.population.is_some() };
    let plan = plan(registry, &request.attacks, &request.params, feeds)?;
    // The token frequency table, when an attack reads it.
    let frequency = match &request.frequency_corpus {
        Some(corpus) if plan.iter().any(|a| a.attack.decl.needs.contains(SignalSet::TOKEN_FREQUENCY)) => {
            Some(TokenFrequency::of(corpus, &tokenizer, request.template, request.limits, &request.signals)?)
        }
        _ => None,
    };
    // The prefix of each attack that asks for one, in the target tokenizer's ids.
    let prefixes: Vec<Option<Vec<u32>>> = match &request.prefix_pool {
        Some(pool) if plan.iter().any(|a| a.prefix.is_some()) => {
            let records = crate::data::load_jsonl(pool, "pool").with_context(|| format!("the prefix pool {}", pool.display()))?;
            plan.iter().map(|a| a.prefix.map(|r| prefix_ids(&records, r, &tokenizer, request.template, request.limits)).transpose()).collect::<Result<_>>()?
        }
        _ => vec![None; plan.len()],
    };
    let (runtime, session) = request.runtime.open()?;
    let records: Vec<(&Record, bool)> = sets.labelled().collect();
    let scorer = Scorer {
        runtime,
        session,
        limits: request.limits,
        batch: request.batch,
        cache: SignalCache::new(request.signals.clone()),
        records: &records,
    };
    let reference_template = request.reference_template.unwrap_or(request.template);
    let needs = |signal: SignalSet| plan.iter().any(|a| a.attack.decl.needs.contains(signal));
    let mut references = Vec::new();
    if let Some(tokenizer) = &reference_tokenizer
        && (needs(SignalSet::REFERENCE) || needs(SignalSet::REFERENCES))
    {
        for r in &request.references {
            references.push(scorer.score(Subject { name: &r.name, path: &r.path, tokenizer, template: reference_template })?);
        }
    }
    // The population, labelled non-member, scored by every model and reference like the
    // samples.
    let population_records: Vec<Record> = match &request.population {
        Some(path) if needs(SignalSet::CALIBRATION) => crate::data::load_jsonl(path, "z").with_context(|| format!("the population {}", path.display()))?,
        _ => Vec::new(),
    };
    let population_labelled: Vec<(&Record, bool)> = population_records.iter().map(|r| (r, false)).collect();
    let population_scorer = Scorer { cache: SignalCache::new(request.signals.clone()), records: &population_labelled, ..scorer };
    let mut population_references = Vec::new();
    if !population_records.is_empty()
        && let Some(tokenizer) = &reference_tokenizer
    {
        for r in &request.references {
            population_references.push(population_scorer.score(Subject { name: &r.name, path: &r.path, tokenizer, template: reference_template })?);
        }
    }
    let population = (!population_records.is_empty()).then_some(Population { scorer: &population_scorer, references: &population_references });
    let block_attacks = match &request.blocks {
        Some(sweep) => perturbation_attacks(registry, &plan, &request.params, &sweep.params)?,
        None => Vec::new(),
    };
    let mut results = Results::default();
    for target in &request.models {
        let model = Subject { name: &target.name, path: &target.path, tokenizer: &tokenizer, template: request.template };
        let block_attacks = if request.blocks.as_ref().is_some_and(|s| s.covers(&target.name)) { &block_attacks[..] } else { &[] };
        let extras = Extras { frequency: frequency.as_ref().map(|(t, _)| t), prefixes: &prefixes, population, out: &request.out };
        attack_model(&scorer, &plan, block_attacks, &references, model, extras, request.seed, &mut results)?;
    }

    std::fs::create_dir_all(&request.out).with_context(|| format!("cannot create {}", request.out.display()))?;
    let bootstrap = Bootstrap { resamples: request.bootstrap, seed: request.seed };
    let summary = report::summarize(&results.scores, |_| ModelRole::default(), bootstrap);
    report::write_scores(&request.out.join("scores.csv"), &results.scores)?;
    report::write_summary(&request.out.join("summary.csv"), &summary)?;
    if request.blocks.is_some() {
        report::write_blocks(&request.out.join("blocks.csv"), &results.blocks)?;
    }
    let mut manifest = Manifest::new(request.seed, bootstrap);
    manifest.template = Some(request.template);
    manifest.reference_template = Some(reference_template);
    manifest.limits = Some(request.limits);
    manifest.batch = Some(request.batch);
    manifest.scoring(OrtRecord::of(runtime, session), (&request.members, &request.nonmembers), &sets, &tokenizer);
    if let Some(t) = &reference_tokenizer {
        manifest.tokenizers.insert("reference".into(), FileRecord::tokenizer(t));
    }
    manifest.models = results.models;
    manifest.references = references.iter().map(|m| model_record(m, Role::Reference)).collect();
    manifest.plugins = plan.iter().map(|a| PluginRecord::attack(a.attack, &a.params)).collect();
    manifest.token_frequency = frequency.map(|(_, record)| record);
    manifest.failures.clone_from(&results.failures);
    manifest.seconds = started.elapsed().as_secs_f64();
    let path = request.out.join("manifest.json");
    manifest.write(&path).with_context(|| format!("cannot write {}", path.display()))?;
    status::info(format!("wrote {} and {}", request.out.join("scores.csv").display(), request.out.join("summary.csv").display()));
    Ok(AttackOutcome { summary, failures: results.failures })
}

/// One model: its signals, every planned attack on them, and its per-block sweep. A
/// failing attack or sweep is recorded and the rest goes on.
/// Signals of interface 0.3.1 the stage prepared once for every model: the token
/// frequency table, and each planned attack's prefix.
#[derive(Clone, Copy)]
struct Extras<'a> {
    frequency: Option<&'a TokenFrequency>,
    prefixes: &'a [Option<Vec<u32>>],
    population: Option<Population<'a>>,
    /// The stage's output directory (the sampled continuations are written there).
    out: &'a std::path::Path,
}

/// The continuations an attack read, one JSON line per sample (`id`, `second_half`,
/// `continuations`), for the record and for checking an attack's arithmetic.
fn write_continuations(path: &std::path::Path, samples: &[OwnedSample]) -> Result<()> {
    let mut text = String::new();
    for s in samples {
        let line = serde_json::json!({"id": s.id, "second_half": s.second_half, "continuations": s.ext().continuations().collect::<Vec<_>>()});
        text.push_str(&line.to_string());
        text.push('\n');
    }
    std::fs::create_dir_all(path.parent().expect("a file in a directory")).with_context(|| format!("cannot create {}", path.display()))?;
    crate::files::write_atomic(path, text.as_bytes()).with_context(|| format!("cannot write {}", path.display()))
}

/// The population's scorer and its signals under each reference model.
#[derive(Clone, Copy)]
struct Population<'a> {
    scorer: &'a Scorer<'a>,
    references: &'a [Scored],
}

/// Fills each sample's `reference_mean_logprob`: its mean log-probability under each
/// reference model, in the references' order.
fn fill_references(samples: &mut [OwnedSample], references: &[Scored]) {
    for (i, s) in samples.iter_mut().enumerate() {
        s.reference_mean_logprob = references.iter().map(|r| kdharness_plugin_api::mean(&r.samples[i].target_logprob)).collect();
    }
}

/// The prefix of `request` from the pool's records: its last `shots` records in the pool's
/// order, each as the models read it (templated prompt, then response, both cut to the
/// limits), concatenated; whole shots dropped from the front while it is longer than
/// `max_tokens`, and a single shot longer than that cut to its last `max_tokens` tokens.
fn prefix_ids(pool: &[Record], request: PrefixRequest, tokenizer: &TokenizerFile, template: Template, limits: TokenLimits) -> Result<Vec<u32>> {
    let shots = pool.len().min(request.shots as usize);
    if shots == 0 {
        bail!("the prefix pool has no records");
    }
    let mut parts: Vec<Vec<u32>> = Vec::new();
    for record in &pool[pool.len() - shots..] {
        let e = crate::data::encode(&tokenizer.tokenizer, template, limits, record)?;
        parts.push(e.prompt_ids.into_iter().chain(e.response_ids).collect());
    }
    let max = request.max_tokens as usize;
    while parts.len() > 1 && parts.iter().map(Vec::len).sum::<usize>() > max {
        parts.remove(0);
    }
    let mut ids: Vec<u32> = parts.concat();
    if ids.len() > max {
        ids.drain(..ids.len() - max);
    }
    Ok(ids)
}

#[allow(clippy::too_many_arguments)]
fn attack_model(
    scorer: &Scorer<'_>,
    plan: &[Planned<'_>],
    block_attacks: &[Planned<'_>],
    references: &[Scored],
    model: Subject<'_>,
    extras: Extras<'_>,
    seed: u64,
    results: &mut Results,
) -> Result<()> {
    let mut scored = scorer.score(model)?;
    if let Some(table) = extras.frequency {
        table.fill(&mut scored.samples);
    }
    fill_references(&mut scored.samples, references);
    let population: Vec<OwnedSample> = match extras.population {
        Some(p) => {
            let mut samples = p.scorer.score(model)?.samples;
            fill_references(&mut samples, p.references);
            samples
        }
        None => Vec::new(),
    };
    let perturbs = plan.iter().chain(block_attacks).any(|a| a.perturbation.is_some());
    let weights = if perturbs { Some(OnnxWeights::read(model.path)?) } else { None };
    let mut seconds: BTreeMap<String, f64> = BTreeMap::new();
    for (a, prefix) in plan.iter().zip(extras.prefixes) {
        let started = Instant::now();
        let perturbed;
        let samples = match (a.perturbation, &weights, prefix) {
            (Some(p), Some(weights), _) => {
                perturbed = scorer.perturbed(&scored, model, weights, (Scope::All, None), p, seed)?;
                &perturbed
            }
            (_, _, Some(prefix)) => {
                perturbed = scorer.prefixed(&scored, model, prefix)?;
                &perturbed
            }
            _ if a.continuations.is_some() => {
                perturbed = scorer.continuations(&scored, model, a.continuations.expect("checked"), seed)?;
                write_continuations(&extras.out.join(format!("continuations-{}-{}.jsonl", model.name, a.name())), &perturbed)?;
                &perturbed
            }
            _ => &scored.samples,
        };
        for (label, reference) in attack_runs(a, references) {
            let calibration = if a.attack.decl.needs.contains(SignalSet::CALIBRATION) { &population[..] } else { &[] };
            match super::run(a.attack, samples, reference, calibration, &a.params) {
                Ok(scores) => {
                    status::detail(format!("{}: {label} done", model.name));
                    results.scores.extend(scorer.records.iter().zip(scores).map(|((record, member), score)| ScoreRow {
                        model: model.name.to_string(),
                        attack: label.clone(),
                        sample_id: record.id.clone(),
                        category: record.category.clone(),
                        member: *member,
                        score,
                    }));
                }
                Err(e) => record_failure(&mut results.failures, e.to_string()),
            }
        }
        seconds.insert(a.name().to_string(), started.elapsed().as_secs_f64());
    }
    let costs: Vec<String> = seconds.iter().map(|(a, s)| format!("{a} {s:.2}")).collect();
    status::info(format!("{}: seconds per attack: {}", model.name, costs.join(", ")));
    if !block_attacks.is_empty()
        && let Some(weights) = &weights
    {
        // A model that cannot be cut into blocks loses only its per-block rows.
        match sweep::sweep(scorer, block_attacks, &scored, model, weights, seed) {
            Ok(rows) => results.blocks.extend(rows),
            Err(e) => record_failure(&mut results.failures, format!("per-block risk of {}: {e:#}", model.name)),
        }
    }
    results.models.push(ModelRecord { attack_seconds: seconds, ..model_record(&scored, Role::Target) });
    Ok(())
}

fn record_failure(failures: &mut Vec<String>, message: String) {
    status::error(&message);
    failures.push(message);
}

/// The attacks of the per-block sweep: the planned attacks that perturb weights, or else
/// every loaded one with its default parameters; `overrides` (the sweep's own parameters)
/// replace the stage's `given` ones key by key.
fn perturbation_attacks<'r>(
    registry: &'r Registry,
    plan: &[Planned<'r>],
    given: &AttackParams,
    overrides: &AttackParams,
) -> Result<Vec<Planned<'r>>, AttackError> {
    let params = |name: &str| -> Vec<(String, String)> {
        let mut merged: BTreeMap<String, String> = given.get(name).into_iter().flatten().cloned().collect();
        merged.extend(overrides.get(name).into_iter().flatten().cloned());
        merged.into_iter().collect()
    };
    let planned: Vec<Planned<'r>> =
        plan.iter().filter(|a| a.perturbation.is_some()).map(|a| Planned::new(a.attack, &params(a.name()))).collect::<Result<_, _>>()?;
    if !planned.is_empty() {
        return Ok(planned);
    }
    let loaded: Vec<Planned<'r>> = registry
        .attacks()
        .filter(|a| a.decl.needs.contains(SignalSet::PERTURBED_LOSS))
        .map(|a| Planned::new(a, &params(a.name())))
        .collect::<Result<_, _>>()?;
    if loaded.is_empty() {
        return Err(AttackError::NoPerturbationAttack);
    }
    Ok(loaded)
}

/// The attacks to run with their completed parameters: the requested ones, or every loaded
/// attack this request can feed (costly ones only when named).
fn plan<'r>(registry: &'r Registry, requested: &[String], given: &AttackParams, feeds: Feeds) -> Result<Vec<Planned<'r>>> {
    let attacks = if requested.is_empty() {
        registry
            .attacks()
            .filter(|a| check_needs(a, feeds).is_ok())
            .filter(|a| a.decl.needs.0 & super::COSTLY_SIGNALS.0 == 0)
            .collect()
    } else {
        resolve(registry, requested)?
    };
    if attacks.is_empty() {
        let found: Vec<String> = registry
            .attacks()
            .map(|a| format!("{} ({})", a.name(), check_needs(a, feeds).err().map(|e| e.to_string()).unwrap_or_default()))
            .collect();
        if found.is_empty() {
            let searched: Vec<String> = registry.searched.iter().map(|d| d.path.display().to_string()).collect();
            bail!("no attack plugins found (searched: {}); build them with `cargo build --workspace` or pass --plugin-dir", searched.join(", "));
        }
        bail!("none of the loaded attacks can run here: {}", found.join("; "));
    }
    let mut plan = Vec::new();
    for a in attacks {
        check_needs(a, feeds)?;
        plan.push(Planned::new(a, given.get(a.name()).map_or(&[][..], Vec::as_slice))?);
    }
    if let Some(name) = given.keys().find(|name| !plan.iter().any(|a| a.name() == name.as_str())) {
        let used: Vec<&str> = plan.iter().map(Planned::name).collect();
        bail!("--param for `{name}`, which is not among the attacks run ({})", used.join(", "));
    }
    Ok(plan)
}

/// One run per reference model for attacks that need one (named `ATTACK:REFERENCE` when
/// there are several), else a single run under the attack's name.
fn attack_runs<'a>(attack: &Planned<'_>, references: &'a [Scored]) -> Vec<(String, &'a [OwnedSample])> {
    if !attack.attack.decl.needs.contains(SignalSet::REFERENCE) {
        return vec![(attack.name().to_string(), &[])];
    }
    references
        .iter()
        .map(|r| {
            let label = if references.len() == 1 { attack.name().to_string() } else { format!("{}:{}", attack.name(), r.name) };
            (label, r.samples.as_slice())
        })
        .collect()
}

fn model_record(m: &Scored, role: Role) -> ModelRecord {
    let onnx = FileRecord { path: m.path.clone(), sha256: Some(m.sha256.clone()), count: None };
    ModelRecord {
        name: m.name.clone(),
        role: role.into(),
        onnx,
        weights: None,
        input_key: None,
        signals: Some(m.source),
        seconds: Some(m.seconds),
        init: None,
        training: None,
        attack_seconds: BTreeMap::new(),
        defense: None,
    }
}
