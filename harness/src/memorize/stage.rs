//! The memorization stage (SPEC §3 steps 7 and 9): greedy extraction of every record's
//! response from every model through ONNX Runtime, and the utility (ROUGE-L) of the same
//! generations on the non-members. Writes `memorization.csv`, `utility.csv`,
//! `summary.csv` and `manifest.json`. The `memorize` command and `kdharness eval` both
//! call [`run`].

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use super::{MemorizationRow, MemorizeSettings, memorize_model};
use crate::score::Target;
use crate::data::{Encoded, MembershipSets, Record, Template, TokenLimits, TokenizerFile, encode};
use crate::manifest::{Manifest, ModelRecord, OrtRecord};
use crate::metrics::Bootstrap;
use crate::report::{self, ExposureRow, ModelEntry, ModelRole, ReportData, Role, SummaryRow, UtilityRow};
use crate::runtime::{CausalLm, RuntimeSettings};
use crate::status;

/// Everything the memorization stage needs.
#[derive(Debug, Clone)]
pub struct MemorizeRequest {
    /// The models.
    pub models: Vec<Target>,
    /// The model among `models` that is the teacher: every other model gets
    /// teacher-overlap rows.
    pub teacher: Option<String>,
    /// tokenizer.json of the models.
    pub tokenizer: PathBuf,
    /// Members, Dolly-schema JSONL.
    pub members: PathBuf,
    /// Non-members (held-out prompts; also the utility set), Dolly-schema JSONL.
    pub nonmembers: PathBuf,
    /// Prompt template.
    pub template: Template,
    /// Prompts longer than this keep their last tokens.
    pub max_prompt_tokens: usize,
    /// Generation and comparison (`eos` already resolved).
    pub settings: MemorizeSettings,
    /// Seeds the bootstrap.
    pub seed: u64,
    /// Bootstrap resamples (0: no intervals).
    pub bootstrap: usize,
    /// ONNX Runtime library, device, threads.
    pub runtime: RuntimeSettings,
    /// Output directory.
    pub out: PathBuf,
    /// Canary exposure, when the data has canaries.
    pub exposure: Option<ExposureRequest>,
}

/// What canary exposure is measured on: the canaries (`canaries.csv`: ids among the
/// members and their repetition counts) and how many candidates of each secret's space to
/// score.
#[derive(Debug, Clone)]
pub struct ExposureRequest {
    /// `canaries.csv`.
    pub canaries: PathBuf,
    /// The secret's format: a run of this many decimal digits in the canary's response.
    pub digits: usize,
    /// Candidates scored per canary (all of the space when it is no larger).
    pub candidates: usize,
}

/// Runs the memorization stage of `request`; returns the rows of `summary.csv`.
pub fn run(request: &MemorizeRequest) -> Result<Vec<SummaryRow>> {
    let started = Instant::now();
    if let Some(teacher) = &request.teacher
        && !request.models.iter().any(|m| &m.name == teacher)
    {
        let names: Vec<&str> = request.models.iter().map(|m| m.name.as_str()).collect();
        bail!("the teacher `{teacher}` is not among the models ({})", names.join(", "));
    }
    Target::check_names(&request.models)?;
    let sets = MembershipSets::load(&request.members, &request.nonmembers)?;
    let tokenizer = TokenizerFile::load(&request.tokenizer)?;
    let limits = TokenLimits { max_prompt_tokens: request.max_prompt_tokens, max_response_tokens: TokenLimits::default().max_response_tokens };
    let encoded: Vec<(&Record, bool, Encoded)> = sets
        .labelled()
        .map(|(r, member)| Ok((r, member, encode(&tokenizer.tokenizer, request.template, limits, r)?)))
        .collect::<Result<_>>()?;
    let (runtime, session) = request.runtime.open()?;
    // Each canary with its candidates, built and encoded once for every model (and checked
    // before any model is scored).
    let canaries = match &request.exposure {
        Some(e) => prepare_canaries(e, &sets, &tokenizer, request, limits)?,
        None => Vec::new(),
    };
    let mut data = ReportData { k: request.settings.k, ..Default::default() };
    let mut records = Vec::new();
    for target in &request.models {
        let t0 = Instant::now();
        let mut lm = CausalLm::open(runtime, &target.path, session)?;
        let bar = status::progress(encoded.len(), &format!("generating ({})", target.name), "prompts");
        let (rows, generations) = memorize_model(&target.name, &mut lm, &encoded, &request.settings, |n| bar.inc(n as u64))?;
        bar.finish();
        let role = ModelRole::from(if request.teacher.as_ref() == Some(&target.name) { Role::Teacher } else { Role::Target });
        data.utility.extend(utility_of(&target.name, &tokenizer, &encoded, &generations, request.settings.eos)?);
        records.push(ModelRecord { seconds: Some(t0.elapsed().as_secs_f64()), ..ModelRecord::new(&target.name, role.clone(), &target.path) });
        data.models.push(ModelEntry { name: target.name.clone(), role });
        data.memorization.extend(rows);
        if let Some(exposure) = &request.exposure {
            data.exposure.extend(exposures(&target.name, &mut lm, &tokenizer, &canaries, exposure.digits)?);
        }
    }
    // The report computes the aggregates (rates by category, teacher overlap, utility).
    let bootstrap = Bootstrap { resamples: request.bootstrap, seed: request.seed };
    let summary = report::render::summary_rows(&data, bootstrap);
    write_outputs(request, &data.memorization, &data.utility, &summary)?;
    if request.exposure.is_some() {
        report::write_exposure(&request.out.join("exposure.csv"), &data.exposure)?;
    }

    let mut manifest = Manifest::new(request.seed, bootstrap);
    manifest.template = Some(request.template);
    manifest.memorization = Some(request.settings);
    manifest.scoring(OrtRecord::of(runtime, session), (&request.members, &request.nonmembers), &sets, &tokenizer);
    manifest.models = records;
    manifest.seconds = started.elapsed().as_secs_f64();
    let path = request.out.join("manifest.json");
    manifest.write(&path).with_context(|| format!("cannot write {}", path.display()))?;
    status::info(format!("wrote {} and {}", request.out.join("memorization.csv").display(), request.out.join("summary.csv").display()));
    Ok(summary)
}

fn write_outputs(request: &MemorizeRequest, rows: &[MemorizationRow], utility: &[UtilityRow], summary: &[SummaryRow]) -> Result<()> {
    std::fs::create_dir_all(&request.out).with_context(|| format!("cannot create {}", request.out.display()))?;
    report::write_memorization(&request.out.join("memorization.csv"), rows)?;
    report::write_utility(&request.out.join("utility.csv"), utility)?;
    report::write_summary(&request.out.join("summary.csv"), summary)?;
    Ok(())
}

/// A canary ready to be scored by every model: the canary (first) and its candidates,
/// the secret replaced by other values of its format (seeded by the run's seed and the
/// canary), each encoded.
struct PreparedCanary {
    id: String,
    repetitions: usize,
    records: Vec<Record>,
    encoded: Vec<Encoded>,
    estimate: super::exposure::Estimate,
}

/// The canaries of `request.canaries` among the members, each with its candidates.
fn prepare_canaries(request: &ExposureRequest, sets: &MembershipSets, tokenizer: &TokenizerFile, stage: &MemorizeRequest, limits: TokenLimits) -> Result<Vec<PreparedCanary>> {
    use super::exposure::{candidates, find_secret};
    let mut prepared = Vec::new();
    for (id, repetitions) in report::read_canaries(&request.canaries)? {
        let canary = sets.members.iter().find(|r| r.id == id).with_context(|| format!("{}: canary `{id}` is not among the members", request.canaries.display()))?;
        let secret_at = find_secret(&canary.response, request.digits)
            .with_context(|| format!("canary `{id}` has no {}-digit secret in its response", request.digits))?;
        let (others, estimate) = candidates(&canary.response[secret_at.clone()], request.candidates, crate::rng::derive(stage.seed, &format!("exposure/{id}")));
        let records: Vec<Record> = std::iter::once(canary.clone())
            .chain(others.iter().map(|c| Record { response: format!("{}{c}{}", &canary.response[..secret_at.start], &canary.response[secret_at.end..]), ..canary.clone() }))
            .collect();
        let encoded = records.iter().map(|r| encode(&tokenizer.tokenizer, stage.template, limits, r)).collect::<Result<_, _>>()?;
        prepared.push(PreparedCanary { id, repetitions, records, encoded, estimate });
    }
    Ok(prepared)
}

/// Each canary's exposure under the model of `lm`: the canary and its candidates scored
/// in one pass, log-perplexities compared (see [`super::exposure`]).
fn exposures(model: &str, lm: &mut CausalLm, tokenizer: &TokenizerFile, canaries: &[PreparedCanary], digits: usize) -> Result<Vec<ExposureRow>> {
    use super::exposure::{exposure, space_size};
    let space = space_size(digits);
    let mut rows = Vec::new();
    let bar = status::progress(canaries.len(), &format!("canary exposure ({model})"), "canaries");
    for canary in canaries {
        let samples: Vec<crate::score::ScoredSample<'_>> =
            canary.records.iter().zip(&canary.encoded).map(|(record, encoded)| crate::score::ScoredSample { record, encoded: encoded.clone() }).collect();
        let signals = crate::score::compute_signals(lm, &tokenizer.tokenizer, &samples, crate::score::BatchSettings::default(), &mut |_| {})?;
        // Px = −log₂ Pr(response | prompt): every response token (and the end of the
        // response), whatever the candidate's tokenization.
        let px: Vec<f64> = signals.iter().map(|s| -s.target_logprob.iter().sum::<f64>() / std::f64::consts::LN_2).collect();
        let e = exposure(px[0], &px[1..], space, canary.estimate);
        rows.push(ExposureRow {
            model: model.into(),
            sample_id: canary.id.clone(),
            repetitions: canary.repetitions,
            secret_log_perplexity: px[0],
            candidates: canary.records.len() - 1,
            estimate: canary.estimate.as_str().into(),
            rank: e.rank,
            exposure: e.bits,
            max_exposure: space.log2(),
        });
        bar.inc(1);
    }
    bar.finish();
    Ok(rows)
}

/// ROUGE-L F ×100 of each non-member's generation (cut at the end-of-sequence token,
/// special tokens dropped) against its reference response.
fn utility_of(
    model: &str,
    tokenizer: &TokenizerFile,
    encoded: &[(&Record, bool, Encoded)],
    generations: &[Vec<u32>],
    eos: Option<u32>,
) -> Result<Vec<UtilityRow>> {
    let mut scores = Vec::new();
    for ((record, member, _), generated) in encoded.iter().zip(generations) {
        if *member {
            continue;
        }
        let end = generated.iter().position(|&t| Some(t) == eos).unwrap_or(generated.len());
        let text = tokenizer.tokenizer.decode(&generated[..end], true).map_err(|e| anyhow::anyhow!("cannot decode a generation: {e}"))?;
        scores.push(UtilityRow { model: model.into(), sample_id: record.id.clone(), rouge_l: crate::utility::rouge_l(&text, &record.response) });
    }
    Ok(scores)
}
