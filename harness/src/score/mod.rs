//! Scoring: runs a model over members and non-members and turns its logits into the
//! per-sample signals attacks read (SPEC §7.2). Signals are computed once per
//! (model, sample set) and cached on disk, keyed by the content hashes of everything they
//! depend on.

pub mod frequency;
mod scorer;
mod token_stats;

use std::path::{Path, PathBuf};
use std::time::Instant;

use kdharness_plugin_api::OwnedSample;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

use crate::data::{Encoded, Record, TokenLimits, Template};
use crate::runtime::{CausalLm, LmBatch, PaddingSide, RuntimeError};
use crate::files;

pub use scorer::{Scored, Scorer, Subject, Target};
pub use token_stats::{TokenStats, token_stats};

/// Bumped whenever the meaning or layout of cached signals changes.
const SIGNALS_FORMAT: u32 = 2;

/// How samples are laid out for the forward pass. None of this changes a score (up to
/// float rounding), so none of it is part of the cache key.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct BatchSettings {
    /// Sequences per forward pass.
    pub batch_size: usize,
    /// Where padding goes (models without `position_ids` are always padded right).
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
    /// The record (its id and response text go into the signals).
    pub record: &'a Record,
    /// Its tokens, laid out as scoring needs them.
    pub encoded: Encoded,
}

/// Everything that can go wrong while scoring.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)] // each variant is documented by its #[error] message
pub enum ScoreError {
    /// The model could not run.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The tokenizer can produce ids the model has no logits for.
    #[error(
        "tokenizer {} has {tokenizer_vocab} tokens but model {} only {model_vocab} logits; use the tokenizer the model was trained with",
        tokenizer.display(), model.display()
    )]
    VocabMismatch { tokenizer: PathBuf, tokenizer_vocab: usize, model: PathBuf, model_vocab: usize },
    /// A token of a sample has no logit.
    #[error("{}: sample `{id}` has token id {token} but the model has only {vocab} logits", model.display())]
    TokenOutOfRange { model: PathBuf, id: String, token: u32, vocab: usize },
    /// The model's output is not a usable distribution at some position.
    #[error(
        "{}: non-finite {what} for sample `{id}` at response token {position} (NaN or infinite logits, or probability 0 for the true token); check the export, e.g. for float16 overflow",
        model.display()
    )]
    NonFinite { model: PathBuf, id: String, position: usize, what: &'static str },
    /// The tokenizer could not decode the argmax ids.
    #[error("cannot decode the argmax tokens of sample `{id}`: {message}")]
    Decode { id: String, message: String },
    /// A record could not be encoded.
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    /// A file could not be read.
    #[error("{0}")]
    Io(String),
    /// A model name that cannot appear in the outputs.
    #[error("{0}")]
    Name(String),
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
///
/// Models without a `position_ids` input are always padded on the right: some of them
/// (older GPT-2 exports) number positions from the start of the row, which left padding
/// would shift, while right padding never touches a causal model's real tokens.
pub fn compute_signals(
    lm: &mut CausalLm,
    tokenizer: &Tokenizer,
    samples: &[ScoredSample<'_>],
    batch: BatchSettings,
    progress: &mut dyn FnMut(usize),
) -> Result<Vec<OwnedSample>, ScoreError> {
    let padding = if lm.info().has_position_ids { batch.padding } else { PaddingSide::Right };
    // Longest first, so that each batch holds similar lengths and little padding.
    let mut order: Vec<usize> = (0..samples.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(samples[i].encoded.len()));
    let mut out: Vec<Option<OwnedSample>> = vec![None; samples.len()];
    let model = lm.path().to_path_buf();
    for chunk in order.chunks(batch.batch_size.max(1)) {
        let inputs: Vec<Vec<u32>> = chunk.iter().map(|&i| samples[i].encoded.input_ids().collect()).collect();
        let padded = LmBatch::pad(inputs.iter().map(Vec::as_slice), padding, 0);
        let members: Vec<&ScoredSample<'_>> = chunk.iter().map(|&i| &samples[i]).collect();
        let per_row = lm.forward(&padded, |logits, vocab| batch_signals(&members, &padded, logits, vocab, &model))?;
        for (&i, signals) in chunk.iter().zip(per_row) {
            out[i] = Some(signals?);
        }
        progress(chunk.len());
    }
    out.into_iter()
        .map(|sample| {
            let mut sample = sample.expect("every sample is in one batch");
            sample.argmax_text = tokenizer
                .decode(&sample.argmax_id, false)
                .map_err(|e| ScoreError::Decode { id: sample.id.clone(), message: e.to_string() })?;
            Ok(sample)
        })
        .collect()
}

/// Signals of each sample of a padded batch (row r holds `samples[r]`) from the batch's
/// logits, row-major `[rows, columns, vocab]`; rows are reduced in parallel.
pub fn batch_signals(
    samples: &[&ScoredSample<'_>],
    batch: &LmBatch,
    logits: &[f32],
    vocab: usize,
    model: &Path,
) -> Vec<Result<OwnedSample, ScoreError>> {
    samples
        .par_iter()
        .enumerate()
        .map(|(row, sample)| {
            let start = batch.offsets[row] + row * batch.columns;
            let rows = &logits[start * vocab..(start + sample.encoded.len()) * vocab];
            signals_of(sample, rows, vocab, model)
        })
        .collect()
}

/// Signals of one sample from its rows of logits (one row per input position, `vocab`
/// logits each).
fn signals_of(sample: &ScoredSample<'_>, rows: &[f32], vocab: usize, model: &Path) -> Result<OwnedSample, ScoreError> {
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
            return Err(ScoreError::TokenOutOfRange { model: model.to_path_buf(), id: sample.record.id.clone(), token, vocab });
        }
        // Token t sits at input position p + t and is predicted from the position before.
        let position = p + t - 1;
        let stats = token_stats(&rows[position * vocab..(position + 1) * vocab], token as usize);
        for (value, what) in [(stats.logprob, "target log-probability"), (stats.mean, "distribution mean"), (stats.var, "distribution variance")] {
            if !value.is_finite() {
                return Err(ScoreError::NonFinite { model: model.to_path_buf(), id: sample.record.id.clone(), position: t, what });
            }
        }
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
    runtime: &'a str,
    model_sha256: &'a str,
    tokenizer_sha256: &'a str,
    template: Template,
    limits: TokenLimits,
    samples: Vec<(&'a str, String, &'a str)>,
}

/// Identifies one (runtime and device, model, tokenizer, template, limits, sample set)
/// combination. `runtime` names the ONNX Runtime version and device: another device gives
/// other last bits, so its signals are its own.
pub fn cache_key(
    runtime: &str,
    model_sha256: &str,
    tokenizer_sha256: &str,
    template: Template,
    limits: TokenLimits,
    samples: &[ScoredSample<'_>],
) -> String {
    let material = KeyMaterial {
        format: SIGNALS_FORMAT,
        runtime,
        model_sha256,
        tokenizer_sha256,
        template,
        limits,
        samples: samples.iter().map(|s| (s.record.id.as_str(), template.prompt(s.record), s.record.response.as_str())).collect(),
    };
    files::sha256_bytes(&serde_json::to_vec(&material).expect("key material serialises"))
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
    /// A forward pass ran.
    Computed,
    /// Read from the signal cache.
    Cache,
}

/// A disk cache of signals under one directory, one file per key. Files carry a SHA-256
/// of their payload so a truncated or corrupted entry is detected and recomputed.
pub struct SignalCache {
    dir: PathBuf,
}

impl SignalCache {
    /// A cache in `dir` (created on first store).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        SignalCache { dir: dir.into() }
    }

    fn path(&self, label: &str, key: &str) -> PathBuf {
        let safe: String = label.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
        self.dir.join(format!("{safe}-{}.bin", &key[..16]))
    }

    /// The entry for `key`, if present and intact.
    pub fn load(&self, label: &str, key: &str) -> Option<Vec<OwnedSample>> {
        let bytes = std::fs::read(self.path(label, key)).ok()?;
        let (digest, payload) = bytes.split_at_checked(64)?;
        if digest != files::sha256_bytes(payload).as_bytes() {
            return None;
        }
        let file: CacheFile = bincode::deserialize(payload).ok()?;
        (file.format == SIGNALS_FORMAT && file.key == key).then_some(file.samples)
    }

    /// Writes the entry for `key` atomically.
    pub fn store(&self, label: &str, key: &str, samples: &[OwnedSample]) -> std::io::Result<()> {
        let file = CacheFile { format: SIGNALS_FORMAT, key: key.to_string(), samples: samples.to_vec() };
        let payload = bincode::serialize(&file).map_err(std::io::Error::other)?;
        let mut bytes = files::sha256_bytes(&payload).into_bytes();
        bytes.extend_from_slice(&payload);
        files::write_atomic(&self.path(label, key), &bytes)
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
            crate::status::warn(format!("could not cache signals in {}: {e}", self.dir.display()));
        }
        Ok((samples, SignalSource::Computed, started.elapsed().as_secs_f64()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Origin;

    fn record() -> Record {
        Record {
            id: "s".into(),
            instruction: String::new(),
            context: String::new(),
            response: "r".into(),
            category: "c".into(),
            origin: Origin { file: "f".into(), line: 1 },
        }
    }

    /// Row j of 4 logits peaks at token j, so each scored position is recognisable.
    fn logits(positions: usize) -> Vec<f32> {
        (0..positions).flat_map(|j| (0..4).map(move |v| if v == j % 4 { 3.0 } else { v as f32 * 0.1 })).collect()
    }

    #[test]
    fn each_response_token_is_predicted_from_the_position_before() {
        let record = record();
        let sample = ScoredSample { record: &record, encoded: Encoded { prompt_ids: vec![1], response_ids: vec![2, 3] } };
        let rows = logits(3);
        let got = signals_of(&sample, &rows, 4, Path::new("m")).unwrap();
        assert_eq!(got.token_ids, vec![2, 3]);
        assert_eq!(got.argmax_id, vec![0, 1]);
        assert_eq!(got.target_logprob, vec![token_stats(&rows[0..4], 2).logprob, token_stats(&rows[4..8], 3).logprob]);
        assert_eq!((got.id.as_str(), got.response_text.as_str()), ("s", "r"));

        // Without a prompt the first response token has no context and is not scored.
        let sample = ScoredSample { record: &record, encoded: Encoded { prompt_ids: vec![], response_ids: vec![1, 2, 3] } };
        let got = signals_of(&sample, &rows, 4, Path::new("m")).unwrap();
        assert_eq!(got.token_ids, vec![2, 3]);
        assert_eq!(got.argmax_id, vec![0, 1]);
    }

    #[test]
    fn impossible_tokens_and_bad_logits_are_errors() {
        let record = record();
        let sample = ScoredSample { record: &record, encoded: Encoded { prompt_ids: vec![1], response_ids: vec![7] } };
        let err = signals_of(&sample, &logits(2), 4, Path::new("m.onnx")).unwrap_err().to_string();
        assert_eq!(err, "m.onnx: sample `s` has token id 7 but the model has only 4 logits");
        let sample = ScoredSample { record: &record, encoded: Encoded { prompt_ids: vec![1], response_ids: vec![2] } };
        let mut rows = logits(2);
        rows[1] = f32::NAN;
        let err = signals_of(&sample, &rows, 4, Path::new("m.onnx")).unwrap_err().to_string();
        assert!(err.starts_with("m.onnx: non-finite target log-probability for sample `s` at response token 0"), "{err}");
    }
}
