//! Scoring: runs a model over members and non-members and turns its logits into the
//! per-sample signals attacks read (SPEC §7.2). Signals are computed once per
//! (model, sample set) and cached on disk, keyed by the content hashes of everything they
//! depend on.

mod stats;

use std::path::{Path, PathBuf};
use std::time::Instant;

use kdharness_plugin_api::OwnedSample;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

use crate::data::{Encoded, Record, TokenLimits, Template};
use crate::runtime::{CausalLm, LmBatch, PaddingSide, RuntimeError};
use crate::util;

pub use stats::{TokenStats, token_stats};

/// Bumped whenever the meaning or layout of cached signals changes.
const SIGNALS_FORMAT: u32 = 1;

/// How samples are laid out for the forward pass. None of this changes a score (up to
/// float rounding), so none of it is part of the cache key.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct BatchSettings {
    pub batch_size: usize,
    pub padding: PaddingSide,
}

impl Default for BatchSettings {
    fn default() -> Self {
        BatchSettings { batch_size: 8, padding: PaddingSide::Right }
    }
}

/// A record ready to score.
#[derive(Clone, Debug)]
pub struct ScoredSample<'a> {
    pub record: &'a Record,
    pub encoded: Encoded,
}

#[derive(Debug, thiserror::Error)]
pub enum ScoreError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(
        "tokenizer {} has {tokenizer_vocab} tokens but model {} only {model_vocab} logits; use the tokenizer the model was trained with",
        tokenizer.display(), model.display()
    )]
    VocabMismatch { tokenizer: PathBuf, tokenizer_vocab: usize, model: PathBuf, model_vocab: usize },
    #[error("{}: sample `{id}` has token id {token} but the model has only {vocab} logits", model.display())]
    TokenOutOfRange { model: PathBuf, id: String, token: u32, vocab: usize },
}

/// Checks before any forward pass that every token id the tokenizer can produce has a
/// logit.
pub fn check_vocab(lm: &CausalLm, tokenizer: &Tokenizer, tokenizer_path: &Path) -> Result<(), ScoreError> {
    let tokenizer_vocab = tokenizer.get_vocab_size(true);
    match lm.info().vocab {
        Some(model_vocab) if tokenizer_vocab > model_vocab => Err(ScoreError::VocabMismatch {
            tokenizer: tokenizer_path.to_path_buf(),
            tokenizer_vocab,
            model: lm.path().to_path_buf(),
            model_vocab,
        }),
        _ => Ok(()),
    }
}

/// Computes the signals of every sample, in the order given. `progress` is told how many
/// samples each finished batch held.
pub fn compute_signals(
    lm: &mut CausalLm,
    tokenizer: &Tokenizer,
    samples: &[ScoredSample<'_>],
    batch: BatchSettings,
    progress: &mut dyn FnMut(usize),
) -> Result<Vec<OwnedSample>, ScoreError> {
    // Longest first, so that each batch holds similar lengths and little padding.
    let mut order: Vec<usize> = (0..samples.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(samples[i].encoded.len()));
    let mut out: Vec<Option<OwnedSample>> = vec![None; samples.len()];
    for chunk in order.chunks(batch.batch_size.max(1)) {
        let inputs: Vec<Vec<u32>> = chunk.iter().map(|&i| samples[i].encoded.input_ids().collect()).collect();
        let padded = LmBatch::pad(inputs.iter().map(Vec::as_slice), batch.padding, 0);
        let per_row = lm.forward(&padded, |logits, vocab| {
            chunk
                .par_iter()
                .enumerate()
                .map(|(row, &i)| {
                    let sample = &samples[i];
                    let start = padded.offsets[row] + row * padded.columns;
                    let rows = &logits[start * vocab..(start + sample.encoded.len()) * vocab];
                    signals_of(sample, rows, vocab)
                })
                .collect::<Vec<_>>()
        })?;
        for (&i, signals) in chunk.iter().zip(per_row) {
            out[i] = Some(signals.map_err(|(token, id)| ScoreError::TokenOutOfRange {
                model: lm.path().to_path_buf(),
                id,
                token,
                vocab: lm.info().vocab.unwrap_or(0),
            })?);
        }
        progress(chunk.len());
    }
    let mut out: Vec<OwnedSample> = out.into_iter().map(|s| s.expect("every sample is in one batch")).collect();
    for sample in &mut out {
        sample.argmax_text = tokenizer.decode(&sample.argmax_id, false).unwrap_or_default();
    }
    Ok(out)
}

/// Signals of one sample from its rows of logits (one row per input position).
/// Errors with (token, sample id) when a token has no logit.
fn signals_of(sample: &ScoredSample<'_>, rows: &[f32], vocab: usize) -> Result<OwnedSample, (u32, String)> {
    let p = sample.encoded.prompt_ids.len();
    let response = &sample.encoded.response_ids;
    let first = if p == 0 { 1 } else { 0 };
    let mut out = OwnedSample {
        id: sample.record.id.clone(),
        response_text: sample.record.response.clone(),
        ..Default::default()
    };
    for (t, &token) in response.iter().enumerate().skip(first) {
        if token as usize >= vocab {
            return Err((token, sample.record.id.clone()));
        }
        let position = p + t - 1;
        let stats = token_stats(&rows[position * vocab..(position + 1) * vocab], token as usize);
        out.token_ids.push(token);
        out.target_logprob.push(stats.logprob);
        out.dist_mean.push(stats.mean);
        out.dist_var.push(stats.var);
        out.argmax_id.push(stats.argmax);
    }
    Ok(out)
}

/// What a cache key is made of: everything that can change a signal.
#[derive(Serialize)]
struct KeyMaterial<'a> {
    format: u32,
    model_sha256: &'a str,
    tokenizer_sha256: &'a str,
    template: Template,
    limits: TokenLimits,
    samples: Vec<(&'a str, String, &'a str)>,
}

/// Identifies one (model, tokenizer, template, limits, sample set) combination.
pub fn cache_key(
    model_sha256: &str,
    tokenizer_sha256: &str,
    template: Template,
    limits: TokenLimits,
    samples: &[ScoredSample<'_>],
) -> String {
    let material = KeyMaterial {
        format: SIGNALS_FORMAT,
        model_sha256,
        tokenizer_sha256,
        template,
        limits,
        samples: samples.iter().map(|s| (s.record.id.as_str(), template.prompt(s.record), s.record.response.as_str())).collect(),
    };
    util::sha256_bytes(&serde_json::to_vec(&material).expect("key material serialises"))
}

#[derive(Serialize, Deserialize)]
struct CacheFile {
    format: u32,
    key: String,
    samples: Vec<OwnedSample>,
}

/// Where signals came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SignalSource {
    Computed,
    Cache,
}

/// A disk cache of signals under one directory, one file per key. Files carry a SHA-256
/// of their payload so a truncated or corrupted entry is detected and recomputed.
pub struct SignalCache {
    dir: PathBuf,
}

impl SignalCache {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        SignalCache { dir: dir.into() }
    }

    fn path(&self, label: &str, key: &str) -> PathBuf {
        let safe: String = label.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
        self.dir.join(format!("{safe}-{}.bin", &key[..16]))
    }

    pub fn load(&self, label: &str, key: &str) -> Option<Vec<OwnedSample>> {
        let bytes = std::fs::read(self.path(label, key)).ok()?;
        let (digest, payload) = bytes.split_at_checked(64)?;
        if digest != util::sha256_bytes(payload).as_bytes() {
            return None;
        }
        let file: CacheFile = bincode::deserialize(payload).ok()?;
        (file.format == SIGNALS_FORMAT && file.key == key).then_some(file.samples)
    }

    pub fn store(&self, label: &str, key: &str, samples: &[OwnedSample]) -> std::io::Result<()> {
        let file = CacheFile { format: SIGNALS_FORMAT, key: key.to_string(), samples: samples.to_vec() };
        let payload = bincode::serialize(&file).map_err(std::io::Error::other)?;
        let mut bytes = util::sha256_bytes(&payload).into_bytes();
        bytes.extend_from_slice(&payload);
        util::write_atomic(&self.path(label, key), &bytes)
    }

    /// Cached signals for `key`, else computed by `compute` and stored.
    pub fn get_or_compute(
        &self,
        label: &str,
        key: &str,
        compute: impl FnOnce() -> Result<Vec<OwnedSample>, ScoreError>,
    ) -> Result<(Vec<OwnedSample>, SignalSource, f64), ScoreError> {
        let started = Instant::now();
        if let Some(samples) = self.load(label, key) {
            return Ok((samples, SignalSource::Cache, started.elapsed().as_secs_f64()));
        }
        let samples = compute()?;
        if let Err(e) = self.store(label, key, &samples) {
            eprintln!("kdharness: warning: could not cache signals in {}: {e}", self.dir.display());
        }
        Ok((samples, SignalSource::Computed, started.elapsed().as_secs_f64()))
    }
}
