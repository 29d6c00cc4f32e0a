//! One run's scoring: every model over the same labelled records, with the same runtime,
//! limits and batching, through one signal cache; also the models' losses under weight
//! perturbations for attacks that ask for them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kdharness_plugin_api::{CONTINUATION_SEPARATOR, ContinuationRequest, OwnedSample, Perturbation};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::{BatchSettings, ScoreError, ScoredSample, SignalCache, SignalSource, cache_key, check_vocab, compute_signals};
use crate::blocks::{self, OnnxWeights, Scope};
use crate::data::{DataError, Record, Template, TokenLimits, TokenizerFile, encode};
use crate::model::generate::{Decoding, GenerateConfig, OrtDecoder, generate_mixed};
use crate::runtime::{CausalLm, Runtime, SessionOptions};
use crate::status;
use crate::files::{sha256_bytes, sha256_file};

/// One model's signals over the records, and how they were obtained.
#[derive(Debug, Clone)]
pub struct Scored {
    /// The model's name in outputs.
    pub name: String,
    /// Its ONNX file.
    pub path: PathBuf,
    /// SHA-256 of that file.
    pub sha256: String,
    /// The signal cache key of these signals (perturbed signals extend it).
    pub key: String,
    /// One entry per record, in the records' order.
    pub samples: Vec<OwnedSample>,
    /// Computed now or read from the cache.
    pub source: SignalSource,
    /// Seconds spent.
    pub seconds: f64,
}

/// A model of a run: its name in every output and its ONNX file.
#[derive(Debug, Clone)]
pub struct Target {
    /// Its name in every output (no `,`, `:` or `/`).
    pub name: String,
    /// Its ONNX file.
    pub path: PathBuf,
}

impl Target {
    /// Checks that the names of `targets` are distinct and usable in file names and CSV
    /// cells.
    pub fn check_names<'a>(targets: impl IntoIterator<Item = &'a Target>) -> Result<(), ScoreError> {
        let mut names = std::collections::HashSet::new();
        for Target { name, .. } in targets {
            if name.is_empty() || name.contains([',', ':', '/']) {
                return Err(ScoreError::Name(format!("model name `{name}` must be non-empty and free of ',', ':' and '/' (give it as NAME=PATH)")));
            }
            if !names.insert(name) {
                return Err(ScoreError::Name(format!("model name `{name}` is used twice; give each model a distinct NAME")));
            }
        }
        Ok(())
    }
}

/// A model under a tokenizer and template: what [`Scorer::score`] runs.
#[derive(Clone, Copy)]
pub struct Subject<'a> {
    /// The model's name in outputs.
    pub name: &'a str,
    /// Its ONNX file.
    pub path: &'a Path,
    /// Its tokenizer.
    pub tokenizer: &'a TokenizerFile,
    /// Its prompt template.
    pub template: Template,
}

/// What every model of a run is scored with.
pub struct Scorer<'a> {
    /// The ONNX Runtime.
    pub runtime: &'static Runtime,
    /// Device and threads.
    pub session: SessionOptions,
    /// Prompt and response cuts.
    pub limits: TokenLimits,
    /// Batching of forward passes.
    pub batch: BatchSettings,
    /// Where signals are cached.
    pub cache: SignalCache,
    /// The records with their membership labels, in output order.
    pub records: &'a [(&'a Record, bool)],
}

impl Scorer<'_> {
    /// Every record, tokenized for `tokenizer` and `template`.
    fn samples(&self, tokenizer: &TokenizerFile, template: Template) -> Result<Vec<ScoredSample<'_>>, DataError> {
        self.records
            .iter()
            .map(|(record, _)| Ok(ScoredSample { record, encoded: encode(&tokenizer.tokenizer, template, self.limits, record)? }))
            .collect()
    }

    /// The signals of `model` over every record (from the cache when present).
    pub fn score(&self, model: Subject<'_>) -> Result<Scored, ScoreError> {
        let Subject { name, path, tokenizer, template } = model;
        let sha256 = sha256_file(path).map_err(|e| ScoreError::Io(format!("cannot read model {}: {e}", path.display())))?;
        let samples = self.samples(tokenizer, template)?;
        let runtime = format!("onnxruntime {} {:?}", self.runtime.library.version, self.session.device);
        let key = cache_key(&runtime, &sha256, &tokenizer.sha256, template, self.limits, &samples);
        let (signals, source, seconds) = self.cache.get_or_compute(name, &key, || {
            let mut lm = CausalLm::open(self.runtime, path, self.session)?;
            check_vocab(&lm, &tokenizer.tokenizer, &tokenizer.path)?;
            let tokens: usize = samples.iter().map(|s| s.encoded.len()).sum();
            status::info(format!("scoring {name}: {} samples, {tokens} tokens", samples.len()));
            status::detail(format!("{name} inputs: {}", lm.info().inputs.join(", ")));
            let bar = status::progress(samples.len(), &format!("scoring {name}"), "samples");
            let signals = compute_signals(&mut lm, &tokenizer.tokenizer, &samples, self.batch, &mut |n| bar.inc(n as u64));
            bar.finish();
            signals
        })?;
        match source {
            SignalSource::Computed => status::info(format!("scored {name} in {seconds:.2}s")),
            SignalSource::Cache => status::info(format!("signals of {name} loaded from cache")),
        }
        Ok(Scored { name: name.into(), path: path.into(), sha256, key, samples: signals, source, seconds })
    }

    /// `scored`'s signals with `perturbed_loss` filled: `perturbation.draws` losses per
    /// sample under seeded noise on the weights in `scope` (cached like other signals).
    pub fn perturbed(
        &self,
        scored: &Scored,
        model: Subject<'_>,
        weights: &OnnxWeights,
        scope: (Scope, Option<&BTreeMap<usize, Vec<usize>>>),
        perturbation: Perturbation,
        seed: u64,
    ) -> Result<Vec<OwnedSample>, ScoreError> {
        let (scope, blocks) = scope;
        let Perturbation { draws, sigma } = perturbation;
        let n = draws as usize;
        let key = sha256_bytes(format!("{}/perturbed/{scope}/{n}/{sigma}/{seed}", scored.key).as_bytes());
        let label = format!("{} ({scope}, {n} perturbations)", scored.name);
        let (losses, _, _) = self.cache.get_or_compute(&label, &key, || {
            let samples = self.samples(model.tokenizer, model.template)?;
            let mut per_sample = vec![Vec::with_capacity(n); samples.len()];
            for draw in 0..n {
                let overrides = blocks::perturbed(weights, blocks, scope, sigma, seed, draw);
                let mut lm = blocks::open_perturbed(self.runtime, &scored.path, self.session, overrides)?;
                let signals = compute_signals(&mut lm, &model.tokenizer.tokenizer, &samples, self.batch, &mut |_| {})?;
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

    /// The samples of `scored` with `prefixed_logprob` filled: each sample's response
    /// log-probabilities with `prefix` (token ids) before its prompt. Cached like the
    /// signals, under their key and the prefix.
    pub fn prefixed(&self, scored: &Scored, model: Subject<'_>, prefix: &[u32]) -> Result<Vec<OwnedSample>, ScoreError> {
        let ids: Vec<String> = prefix.iter().map(u32::to_string).collect();
        let key = sha256_bytes(format!("{}/prefixed/{}", scored.key, ids.join(",")).as_bytes());
        let label = format!("{} (prefix of {} tokens)", scored.name, prefix.len());
        let (signals, _, _) = self.cache.get_or_compute(&label, &key, || {
            let mut samples = self.samples(model.tokenizer, model.template)?;
            for s in &mut samples {
                s.encoded.prompt_ids.splice(0..0, prefix.iter().copied());
            }
            let mut lm = CausalLm::open(self.runtime, &scored.path, self.session)?;
            compute_signals(&mut lm, &model.tokenizer.tokenizer, &samples, self.batch, &mut |_| {})
        })?;
        Ok(scored.samples.iter().zip(signals).map(|(s, p)| OwnedSample { prefixed_logprob: p.target_logprob, ..s.clone() }).collect())
    }

    /// The samples of `scored` with `continuations` and `second_half` filled: each
    /// sample's response split in half by tokens, the prompt and first half continued
    /// `request.samples` times by the model through ONNX Runtime (KV cache), each up to the
    /// second half's length and drawn with a generator seeded by `seed` and the sample's id
    /// (so neither batching nor the other samples change a draw). Cached like the signals.
    pub fn continuations(&self, scored: &Scored, model: Subject<'_>, request: ContinuationRequest, seed: u64) -> Result<Vec<OwnedSample>, ScoreError> {
        let ContinuationRequest { samples: n, temperature } = request;
        let key = sha256_bytes(format!("{}/continuations/{n}/{temperature}/{seed}", scored.key).as_bytes());
        let label = format!("{} ({n} continuations)", scored.name);
        let (drawn, _, _) = self.cache.get_or_compute(&label, &key, || {
            let tokenizer = &model.tokenizer.tokenizer;
            let eos = crate::memorize::guess_eos(tokenizer);
            let decode = |ids: &[u32]| tokenizer.decode(ids, true).map_err(|e| ScoreError::Io(format!("cannot decode a continuation: {e}")));
            let mut lm = CausalLm::open(self.runtime, &scored.path, self.session)?;
            let mut out = Vec::new();
            for sample in self.samples(model.tokenizer, model.template)? {
                let response = &sample.encoded.response_ids;
                let half = response.len() / 2;
                let second = &response[half..];
                let context: Vec<u32> = sample.encoded.prompt_ids.iter().chain(&response[..half]).copied().collect();
                let cfg = GenerateConfig { max_new_tokens: second.len(), decoding: Decoding::Sample { temperature }, eos, use_cache: true };
                let mut rng = ChaCha8Rng::seed_from_u64(crate::rng::derive(seed, &format!("continuations/{}", sample.record.id)));
                let mut decoder = OrtDecoder::new(&mut lm).map_err(|e| ScoreError::Io(e.to_string()))?;
                let generated = generate_mixed(&mut decoder, None, &vec![context; n as usize], &cfg, &mut rng).map_err(|e| ScoreError::Io(format!("sampling continuations of `{}`: {e}", sample.record.id)))?;
                let texts: Vec<String> = generated
                    .iter()
                    .map(|g| decode(&g.tokens[..g.tokens.iter().position(|&t| Some(t) == eos).unwrap_or(g.tokens.len())]))
                    // A decoded separator would split a continuation in two.
                    .map(|t| t.map(|t| t.replace(CONTINUATION_SEPARATOR, "\u{fffd}")))
                    .collect::<Result<_, _>>()?;
                out.push(OwnedSample { continuations: texts.join(&CONTINUATION_SEPARATOR.to_string()), second_half: decode(second)?, ..Default::default() });
            }
            Ok(out)
        })?;
        Ok(scored.samples.iter().zip(drawn).map(|(s, d)| OwnedSample { continuations: d.continuations, second_half: d.second_half, ..s.clone() }).collect())
    }

    /// The membership label of each record, in order.
    pub fn members(&self) -> Vec<bool> {
        self.records.iter().map(|(_, m)| *m).collect()
    }
}
