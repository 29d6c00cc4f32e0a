//! `kdharness attack`: the practitioner's audit. Scores members and non-members with each
//! model through ONNX Runtime, runs the attack plugins, and writes `scores.csv`,
//! `summary.csv` and `manifest.json`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use kdharness_plugin_api::{OwnedSample, SignalSet};
use serde_json::json;

use super::{PluginArgs, RuntimeArgs, detail, info, progress_bar, warn};
use crate::attack::{self, AttackError};
use crate::blocks::{self, OnnxWeights, Scope};
use crate::data::{MembershipSets, Record, TokenLimits, TokenizerFile, Template, encode};
use crate::metrics::Bootstrap;
use crate::plugins::{LoadedAttack, Registry, search_dirs};
use crate::report::{self, BlockRow, ModelRole, Role, ScoreRow};
use crate::runtime::{CausalLm, PaddingSide, Runtime, SessionOptions, default_threads};
use crate::score::{self, BatchSettings, ScoredSample, SignalCache, SignalSource};
use crate::util::sha256_file;

#[derive(clap::Args, Debug)]
pub struct AttackArgs {
    /// A target model, NAME=PATH.onnx (repeatable).
    #[arg(long = "model", value_name = "NAME=PATH", required = true)]
    models: Vec<String>,
    /// A reference model for the `ref` attack, NAME=PATH.onnx (repeatable).
    #[arg(long = "reference", value_name = "NAME=PATH")]
    references: Vec<String>,
    /// tokenizer.json of the target models.
    #[arg(long, value_name = "T.json")]
    tokenizer: PathBuf,
    /// tokenizer.json of the reference models (default: --tokenizer).
    #[arg(long, value_name = "T.json")]
    reference_tokenizer: Option<PathBuf>,
    /// Members (the teacher's private training records), Dolly-schema JSONL.
    #[arg(long, value_name = "F.jsonl")]
    members: PathBuf,
    /// Non-members, Dolly-schema JSONL.
    #[arg(long, value_name = "F.jsonl")]
    nonmembers: PathBuf,
    /// Attacks to run, comma-separated (default: every loaded attack this command can feed).
    #[arg(long, value_delimiter = ',', value_name = "A,B")]
    attacks: Vec<String>,
    /// An attack parameter, ATTACK.KEY=VALUE (repeatable), e.g. mink.k=0.1.
    #[arg(long = "param", value_name = "ATTACK.KEY=VALUE")]
    params: Vec<String>,
    /// Prompt template of the target models.
    #[arg(long, value_enum, default_value_t = Template::Alpaca)]
    template: Template,
    /// Prompt template of the reference models (default: --template).
    #[arg(long, value_enum)]
    reference_template: Option<Template>,
    /// Prompts longer than this keep their last tokens.
    #[arg(long, default_value_t = TokenLimits::default().max_prompt_tokens, value_parser = at_least_one)]
    max_prompt_tokens: usize,
    /// Responses longer than this are cut at the end.
    #[arg(long, default_value_t = TokenLimits::default().max_response_tokens, value_parser = at_least_one)]
    max_response_tokens: usize,
    /// Sequences per forward pass.
    #[arg(long, default_value_t = BatchSettings::default().batch_size, value_parser = at_least_one)]
    batch_size: usize,
    /// Padding side of batched sequences (scores do not depend on it; models without a
    /// position_ids input are always padded right).
    #[arg(long, value_enum, default_value_t = PaddingSide::Right)]
    padding: PaddingSide,
    /// Seed of the bootstrap.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Bootstrap resamples for confidence intervals (0 disables them).
    #[arg(long, default_value_t = Bootstrap::default().resamples)]
    bootstrap: usize,
    /// Output directory.
    #[arg(long, default_value = "reports/attack")]
    out: PathBuf,
    /// Print the summary as JSON (one object per summary.csv row) instead of a table.
    #[arg(long)]
    json: bool,
    /// Also measure per-block risk: MoPe with only one transformer block perturbed at a
    /// time (the `mope` attack's n and sigma), AUC per block in blocks.csv.
    #[arg(long)]
    blocks: bool,
    #[command(flatten)]
    plugins: PluginArgs,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

/// A count that must be positive.
pub(super) fn at_least_one(raw: &str) -> Result<usize, String> {
    match raw.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("expected a whole number of at least 1, got `{raw}`")),
    }
}

/// `NAME=PATH`, or a bare path named after its file stem.
pub(super) fn parse_model(spec: &str) -> Result<(String, PathBuf)> {
    let (name, path) = match spec.split_once('=') {
        Some((name, path)) => (name.to_string(), PathBuf::from(path)),
        None => {
            let path = PathBuf::from(spec);
            let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            (name, path)
        }
    };
    if name.is_empty() || name.contains([',', ':', '/']) {
        bail!("model name `{name}` in `{spec}` must be non-empty and free of ',', ':' and '/'");
    }
    Ok((name, path))
}

/// One model's signals over the sample set, and how they were obtained.
struct Scored {
    name: String,
    path: PathBuf,
    sha256: String,
    /// The signal cache key of this model's signals (perturbed signals extend it).
    key: String,
    samples: Vec<OwnedSample>,
    source: SignalSource,
    seconds: f64,
}

/// What every model of the run is scored with.
struct Scoring<'a> {
    runtime: &'static Runtime,
    session: SessionOptions,
    limits: TokenLimits,
    batch: BatchSettings,
    cache: SignalCache,
    records: &'a [(&'a Record, bool)],
}

impl Scoring<'_> {
    /// Every record, tokenized for `tokenizer` and `template`.
    fn samples(&self, tokenizer: &TokenizerFile, template: Template) -> Result<Vec<ScoredSample<'_>>, crate::data::DataError> {
        self.records
            .iter()
            .map(|(record, _)| Ok(ScoredSample { record, encoded: encode(&tokenizer.tokenizer, template, self.limits, record)? }))
            .collect()
    }

    fn score(&self, name: &str, path: &Path, tokenizer: &TokenizerFile, template: Template) -> Result<Scored> {
        let sha256 = sha256_file(path).with_context(|| format!("cannot read model {}", path.display()))?;
        let samples = self.samples(tokenizer, template)?;
        let runtime = format!("onnxruntime {} {:?}", self.runtime.library.version, self.session.device);
        let key = score::cache_key(&runtime, &sha256, &tokenizer.sha256, template, self.limits, &samples);
        let (signals, source, seconds) = self.cache.get_or_compute(name, &key, || {
            let mut lm = CausalLm::open(self.runtime, path, self.session)?;
            score::check_vocab(&lm, &tokenizer.tokenizer, &tokenizer.path)?;
            let tokens: usize = samples.iter().map(|s| s.encoded.len()).sum();
            info(format!("scoring {name}: {} samples, {tokens} tokens", samples.len()));
            detail(format!("{name} inputs: {}", lm.info().inputs.join(", ")));
            let bar = progress_bar(samples.len(), &format!("scoring {name}"), "samples");
            let signals = score::compute_signals(&mut lm, &tokenizer.tokenizer, &samples, self.batch, &mut |n| bar.inc(n as u64));
            bar.finish_and_clear();
            signals
        })?;
        match source {
            SignalSource::Computed => info(format!("scored {name} in {seconds:.2}s")),
            SignalSource::Cache => info(format!("signals of {name} loaded from cache")),
        }
        Ok(Scored { name: name.into(), path: path.into(), sha256, key, samples: signals, source, seconds })
    }

    /// The model's signals with `perturbed_loss` filled: `n` losses per sample under
    /// seeded noise of scale `sigma` on the weights in `scope` (cached like other signals).
    #[allow(clippy::too_many_arguments)]
    fn perturbed(
        &self,
        scored: &Scored,
        tokenizer: &TokenizerFile,
        template: Template,
        weights: &OnnxWeights,
        blocks: Option<&BTreeMap<usize, Vec<usize>>>,
        scope: Scope,
        (n, sigma, seed): (usize, f64, u64),
    ) -> Result<Vec<OwnedSample>> {
        let key = crate::util::sha256_bytes(format!("{}/perturbed/{scope}/{n}/{sigma}/{seed}", scored.key).as_bytes());
        let label = format!("{} ({scope}, {n} perturbations)", scored.name);
        let samples = self.samples(tokenizer, template)?;
        let (losses, _, _) = self.cache.get_or_compute(&label, &key, || {
            let mut per_sample = vec![Vec::with_capacity(n); samples.len()];
            for draw in 0..n {
                let overrides = blocks::perturbed(weights, blocks, scope, sigma, seed, draw);
                let mut lm = blocks::open_perturbed(self.runtime, &scored.path, self.session, overrides)?;
                let signals = score::compute_signals(&mut lm, &tokenizer.tokenizer, &samples, self.batch, &mut |_| {})?;
                for (losses, s) in per_sample.iter_mut().zip(signals) {
                    losses.push(-kdharness_plugin_api::mean(&s.target_logprob));
                }
            }
            Ok(per_sample.into_iter().map(|perturbed_loss| OwnedSample { perturbed_loss, ..Default::default() }).collect())
        })?;
        Ok(scored
            .samples
            .iter()
            .zip(losses)
            .map(|(s, l)| OwnedSample { perturbed_loss: l.perturbed_loss, ..s.clone() })
            .collect())
    }
}

/// The draws and noise scale of a MoPe-style attack, from its parameters.
fn perturbation_params(params: &[(String, String)]) -> Result<(usize, f64)> {
    let get = |key: &str| params.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    let n: usize = get("n").unwrap_or("10").parse().context("parameter `n` of a perturbation attack must be a whole number")?;
    let sigma: f64 = get("sigma").unwrap_or("0.01").parse().context("parameter `sigma` of a perturbation attack must be a number")?;
    if n == 0 || !(sigma >= 0.0 && sigma.is_finite()) {
        bail!("perturbation attacks need n >= 1 and sigma >= 0 (got n = {n}, sigma = {sigma})");
    }
    Ok((n, sigma))
}

pub fn run(args: AttackArgs) -> Result<ExitCode> {
    let started = Instant::now();
    let models = args.models.iter().map(|m| parse_model(m)).collect::<Result<Vec<_>>>()?;
    let references = args.references.iter().map(|m| parse_model(m)).collect::<Result<Vec<_>>>()?;
    let mut names = std::collections::HashSet::new();
    for (name, _) in models.iter().chain(&references) {
        if !names.insert(name) {
            bail!("model name `{name}` is used twice; give each --model / --reference a distinct NAME");
        }
    }

    let sets = MembershipSets::load(&args.members, &args.nonmembers)?;
    let tokenizer = TokenizerFile::load(&args.tokenizer)?;
    let reference_tokenizer = match (&args.reference_tokenizer, references.is_empty()) {
        (_, true) => None,
        (Some(path), false) => Some(TokenizerFile::load(path)?),
        (None, false) => Some(tokenizer.clone()),
    };

    // Which attacks, with which parameters, before any expensive work.
    let registry = Registry::discover(search_dirs(&args.plugins.plugin_dirs));
    for problem in &registry.problems {
        warn(problem);
    }
    let plan = plan_attacks(&registry, &args.attacks, &args.params, !references.is_empty())?;

    let threads = args.runtime.threads.unwrap_or_else(default_threads);
    // The signal reduction runs on rayon's pool: --threads bounds it too.
    rayon::ThreadPoolBuilder::new().num_threads(threads).build_global().ok();
    let runtime = Runtime::get(args.runtime.ort_lib.as_deref())?;
    runtime.check_device(args.runtime.device)?;
    let records: Vec<(&Record, bool)> = sets.labelled().collect();
    let scoring = Scoring {
        runtime,
        session: SessionOptions { device: args.runtime.device, threads },
        limits: TokenLimits { max_prompt_tokens: args.max_prompt_tokens, max_response_tokens: args.max_response_tokens },
        batch: BatchSettings { batch_size: args.batch_size, padding: args.padding },
        cache: SignalCache::new(args.out.join("signals")),
        records: &records,
    };
    let reference_template = args.reference_template.unwrap_or(args.template);
    let mut scored_references = Vec::new();
    if plan.iter().any(|(a, _)| a.decl.needs.contains(SignalSet::REFERENCE)) {
        let tokenizer = reference_tokenizer.as_ref().expect("loaded when references are given");
        for (name, path) in &references {
            scored_references.push(scoring.score(name, path, tokenizer, reference_template)?);
        }
    }

    let mut rows: Vec<ScoreRow> = Vec::new();
    let mut failures: Vec<AttackError> = Vec::new();
    let mut scored_models = Vec::new();
    let mut block_rows: Vec<BlockRow> = Vec::new();
    let mut block_failures: Vec<String> = Vec::new();
    for (name, path) in &models {
        let scored = scoring.score(name, path, &tokenizer, args.template)?;
        let weights = if plan.iter().any(|(a, _)| a.decl.needs.contains(SignalSet::PERTURBED_LOSS)) || args.blocks {
            Some(OnnxWeights::read(path)?)
        } else {
            None
        };
        for (a, params) in &plan {
            let perturbed;
            let samples = if a.decl.needs.contains(SignalSet::PERTURBED_LOSS) {
                let (n, sigma) = perturbation_params(params)?;
                let weights = weights.as_ref().expect("read above");
                perturbed = scoring.perturbed(&scored, &tokenizer, args.template, weights, None, Scope::All, (n, sigma, args.seed))?;
                &perturbed
            } else {
                &scored.samples
            };
            for (label, reference) in attack_runs(a, &scored_references) {
                match attack::run(a, samples, reference, params) {
                    Ok(scores) => {
                        detail(format!("{name}: {label} done"));
                        rows.extend(records.iter().zip(scores).map(|((record, member), score)| ScoreRow {
                            model: name.clone(),
                            attack: label.clone(),
                            sample_id: record.id.clone(),
                            category: record.category.clone(),
                            member: *member,
                            score,
                        }));
                    }
                    Err(e) => {
                        eprintln!("error: {e}");
                        failures.push(e);
                    }
                }
            }
        }
        if args.blocks {
            let weights = weights.as_ref().expect("read above");
            // A model that cannot be cut into blocks loses only its per-block rows.
            match block_sweep(&scoring, &registry, &plan, &scored, &tokenizer, args.template, weights, args.seed) {
                Ok(rows) => block_rows.extend(rows),
                Err(e) => {
                    eprintln!("error: per-block risk of {name}: {e:#}");
                    block_failures.push(format!("{name}: {e:#}"));
                }
            }
        }
        scored_models.push(scored);
    }

    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    let bootstrap = Bootstrap { resamples: args.bootstrap, seed: args.seed };
    let role = ModelRole::from(Role::Target);
    let summary = report::summarize(&rows, |_| role.clone(), bootstrap);
    report::write_scores(&args.out.join("scores.csv"), &rows)?;
    report::write_summary(&args.out.join("summary.csv"), &summary)?;
    if args.blocks {
        report::write_blocks(&args.out.join("blocks.csv"), &block_rows)?;
    }

    let file = |path: &Path| -> Result<serde_json::Value> {
        Ok(json!({ "path": path, "sha256": sha256_file(path).with_context(|| format!("cannot read {}", path.display()))? }))
    };
    let manifest = json!({
        "kdharness_version": env!("CARGO_PKG_VERSION"),
        "git_revision": env!("KDHARNESS_GIT_REVISION"),
        "plugin_interface": kdharness_plugin_api::INTERFACE_VERSION,
        "command": std::env::args_os().map(|a| a.to_string_lossy().into_owned()).collect::<Vec<_>>(),
        "seed": args.seed,
        "bootstrap": bootstrap,
        "template": args.template,
        "reference_template": reference_template,
        "limits": scoring.limits,
        "batch": scoring.batch,
        "onnx_runtime": { "library": runtime.library, "device": args.runtime.device, "threads": threads },
        "data": {
            "members": { "file": file(&args.members)?, "count": sets.members.len() },
            "nonmembers": { "file": file(&args.nonmembers)?, "count": sets.nonmembers.len() },
        },
        "tokenizers": {
            "target": { "path": tokenizer.path, "sha256": tokenizer.sha256 },
            "reference": reference_tokenizer.as_ref().map(|t| json!({ "path": t.path, "sha256": t.sha256 })),
        },
        "models": scored_models.iter().map(|m| model_json(m, &role)).collect::<Vec<_>>(),
        "references": scored_references.iter().map(|m| model_json(m, &ModelRole::from(Role::Reference))).collect::<Vec<_>>(),
        "plugins": plan.iter().map(|(a, params)| json!({
            "name": a.name(), "version": a.decl.version.as_str(), "library": a.library,
            "sha256": a.library_sha256, "params": params.iter().cloned().collect::<BTreeMap<_, _>>(),
        })).collect::<Vec<_>>(),
        "failures": failures.iter().map(|f| f.to_string()).chain(block_failures.iter().cloned()).collect::<Vec<_>>(),
        "perturbation_seed": args.seed,
        "seconds": started.elapsed().as_secs_f64(),
    });
    crate::util::write_atomic(&args.out.join("manifest.json"), serde_json::to_string_pretty(&manifest)?.as_bytes())
        .with_context(|| format!("cannot write {}", args.out.join("manifest.json").display()))?;

    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary.iter().map(summary_json).collect::<Vec<_>>())?);
    } else {
        print_summary(&summary);
    }
    info(format!("wrote {} and {}", args.out.join("scores.csv").display(), args.out.join("summary.csv").display()));
    if failures.is_empty() && block_failures.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("error: {} run(s) failed; the other results were written", failures.len() + block_failures.len());
        Ok(ExitCode::FAILURE)
    }
}

/// Per-block risk of one model: for every block, the `mope` attack's AUC with only that
/// block's weights perturbed.
#[allow(clippy::too_many_arguments)]
fn block_sweep(
    scoring: &Scoring<'_>,
    registry: &Registry,
    plan: &Plan<'_>,
    scored: &Scored,
    tokenizer: &TokenizerFile,
    template: Template,
    weights: &OnnxWeights,
    seed: u64,
) -> Result<Vec<BlockRow>> {
    let (mope, params) = match plan.iter().find(|(a, _)| a.name() == "mope") {
        Some((a, p)) => (*a, p.clone()),
        None => {
            let a = registry.attack("mope").context("--blocks needs the `mope` attack plugin, which is not loaded")?;
            (a, attack::complete_params(a, &[])?)
        }
    };
    let (n, sigma) = perturbation_params(&params)?;
    let blocks = weights.blocks()?;
    let members: Vec<bool> = scoring.records.iter().map(|(_, m)| *m).collect();
    let mut rows = Vec::new();
    for &block in blocks.keys() {
        let samples = scoring.perturbed(scored, tokenizer, template, weights, Some(&blocks), Scope::Block(block), (n, sigma, seed))?;
        let scores = attack::run(mope, &samples, &[], &params)?;
        let (m, nm): (Vec<(f64, bool)>, Vec<(f64, bool)>) = scores.into_iter().zip(members.iter().copied()).partition(|(_, member)| *member);
        let (m, nm): (Vec<f64>, Vec<f64>) = (m.into_iter().map(|x| x.0).collect(), nm.into_iter().map(|x| x.0).collect());
        let auc = crate::metrics::auc(&crate::metrics::roc_points(&m, &nm), m.len(), nm.len());
        detail(format!("{}: block {block}: mope AUC {auc:.3}", scored.name));
        rows.push(BlockRow { model: scored.name.clone(), block, attack: "mope".into(), auc });
    }
    Ok(rows)
}

/// Attacks with their completed parameters, in the order they run.
type Plan<'r> = Vec<(&'r LoadedAttack, Vec<(String, String)>)>;

/// The attacks to run with their completed parameters: the requested ones, or every loaded
/// attack this command can feed.
fn plan_attacks<'r>(
    registry: &'r Registry,
    requested: &[String],
    raw_params: &[String],
    have_reference: bool,
) -> Result<Plan<'r>> {
    let attacks: Vec<&LoadedAttack> = if requested.is_empty() {
        registry
            .attacks()
            .filter(|a| attack::check_needs(a, have_reference).is_ok())
            .filter(|a| a.decl.needs.0 & attack::COSTLY_SIGNALS.0 == 0)
            .collect()
    } else {
        attack::resolve(registry, requested)?
    };
    if attacks.is_empty() {
        let found: Vec<String> = registry
            .attacks()
            .map(|a| format!("{} ({})", a.name(), attack::check_needs(a, have_reference).err().map(|e| e.to_string()).unwrap_or_default()))
            .collect();
        if found.is_empty() {
            bail!("no attack plugins found (searched: {}); build them with `cargo build --workspace` or pass --plugin-dir", searched(registry));
        }
        bail!("none of the loaded attacks can run here: {}", found.join("; "));
    }
    let mut params = attack::parse_params(raw_params)?;
    let mut plan = Vec::new();
    for a in attacks {
        attack::check_needs(a, have_reference)?;
        plan.push((a, attack::complete_params(a, &params.remove(a.name()).unwrap_or_default())?));
    }
    if let Some(name) = params.keys().next() {
        let used: Vec<&str> = plan.iter().map(|(a, _)| a.name()).collect();
        bail!("--param for `{name}`, which is not among the attacks run ({})", used.join(", "));
    }
    Ok(plan)
}

/// One run per reference model for attacks that need one (named `ATTACK:REFERENCE` when
/// there are several), else a single run under the attack's name.
fn attack_runs<'a>(attack: &LoadedAttack, references: &'a [Scored]) -> Vec<(String, &'a [OwnedSample])> {
    if !attack.decl.needs.contains(SignalSet::REFERENCE) {
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

fn searched(registry: &Registry) -> String {
    registry.searched.iter().map(|d| d.path.display().to_string()).collect::<Vec<_>>().join(", ")
}

fn model_json(m: &Scored, role: &ModelRole) -> serde_json::Value {
    json!({
        "name": m.name, "path": m.path, "sha256": m.sha256, "role": role,
        "signals": m.source, "seconds": m.seconds,
    })
}

fn summary_json(r: &report::SummaryRow) -> serde_json::Value {
    json!({
        "model": r.model, "role": r.role.role, "kd_method": r.role.kd_method, "student": r.role.student,
        "category": r.category, "attack": r.attack, "metric": r.metric, "value": r.value,
        "ci_low": r.ci.map(|c| c.0), "ci_high": r.ci.map(|c| c.1),
        "n_members": r.n_members, "n_nonmembers": r.n_nonmembers,
        "realized_fpr": r.operating_point.map(|o| o.0), "threshold": r.operating_point.map(|o| report::fmt_f64(o.1)),
    })
}

/// A short table on stdout: AUC with its interval and TPR at 1% FPR, overall.
fn print_summary(summary: &[report::SummaryRow]) {
    let overall: Vec<_> = summary.iter().filter(|r| r.category == "all").collect();
    println!("{:<16} {:<16} {:>7} {:>17} {:>12}", "model", "attack", "AUC", "95% CI", "TPR@1%FPR");
    for auc in overall.iter().filter(|r| r.metric == "auc") {
        let tpr = overall
            .iter()
            .find(|r| r.metric == "tpr_at_fpr_0.01" && r.model == auc.model && r.attack == auc.attack)
            .map(|r| r.value)
            .unwrap_or(f64::NAN);
        let ci = auc.ci.map(|(lo, hi)| format!("[{lo:.3}, {hi:.3}]")).unwrap_or_default();
        println!("{:<16} {:<16} {:>7.3} {:>17} {:>12.3}", auc.model, auc.attack, auc.value, ci, tpr);
    }
}
