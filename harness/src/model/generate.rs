//! Sampling and greedy decoding with a KV cache (SPEC §6): teacher samples for SeqKD,
//! student samples for on-policy KD.
//!
//! Prompts of different lengths share a batch by padding on the left; each row's
//! positions count its real tokens only (`cumsum(mask) − 1`), so a padded row decodes
//! exactly as it would alone.

use candle_core::{DType, Device, Tensor};
use rand::Rng;

use super::{Forward, KvCache, Model, ModelError, ops};
use crate::runtime::{CausalLm, LmBatch, PastState};

/// How to pick each next token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decoding {
    /// The most likely token (lowest id on ties).
    Greedy,
    /// A draw from `softmax(logits / temperature)`.
    Sample {
        /// Softmax temperature (1 = the model's own distribution).
        temperature: f64,
    },
}

/// Generation settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GenerateConfig {
    /// Most new tokens per prompt.
    pub max_new_tokens: usize,
    /// Greedy or sampled.
    pub decoding: Decoding,
    /// Stop a row after this token (it is kept in the output).
    pub eos: Option<u32>,
    /// Reuse keys and values of earlier positions (always on, except to test that it
    /// changes nothing).
    pub use_cache: bool,
}

/// One generated continuation.
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    /// The new tokens (ending with `eos` when it was produced).
    pub tokens: Vec<u32>,
    /// `log q(token)` under the (temperature-scaled) distribution it was drawn from.
    pub logprobs: Vec<f32>,
}

/// A model that continues a batch of left-padded rows one step at a time, keeping its own
/// cache of earlier keys and values.
pub trait Decoder {
    /// Feeds `ids` (the padded prompts first, then one new token per row) at absolute
    /// `positions`, where `mask` covers every key fed so far (1 = real token); returns each
    /// row's logits at its last position.
    fn step(&mut self, ids: &[Vec<u32>], positions: &[Vec<u32>], mask: &[Vec<u8>]) -> Result<Vec<Vec<f32>>, ModelError>;
}

/// Decoding in candle, with the KV cache or (to test that the cache changes nothing) by
/// recomputing every position each step.
pub struct CandleDecoder<'a> {
    model: &'a Model,
    cache: Option<KvCache>,
    /// Everything fed so far (recomputation only).
    fed: Vec<Vec<u32>>,
}

impl<'a> CandleDecoder<'a> {
    /// A decoder over `model`'s weights.
    pub fn new(model: &'a Model, use_cache: bool) -> Self {
        CandleDecoder { model, cache: use_cache.then(|| KvCache::new(model.config.layers)), fed: Vec::new() }
    }
}

impl Decoder for CandleDecoder<'_> {
    fn step(&mut self, ids: &[Vec<u32>], positions: &[Vec<u32>], mask: &[Vec<u8>]) -> Result<Vec<Vec<f32>>, ModelError> {
        let device = self.model.device();
        let logits = match &mut self.cache {
            Some(cache) => forward_step(self.model, ids, positions, mask, device, Some(cache))?,
            None => {
                self.fed.resize(ids.len(), Vec::new());
                self.fed.iter_mut().zip(ids).for_each(|(f, new)| f.extend_from_slice(new));
                let all: Vec<Vec<u32>> = mask.iter().map(|m| mask_positions(m)).collect();
                forward_step(self.model, &self.fed, &all, mask, device, None)?
            }
        };
        Ok(logits.narrow(1, logits.dim(1)? - 1, 1)?.squeeze(1)?.to_dtype(DType::F32)?.to_vec2()?)
    }
}

/// Decoding through ONNX Runtime, feeding `present.*` back as `past_key_values.*`.
pub struct OrtDecoder<'a> {
    lm: &'a mut CausalLm,
    past: PastState,
}

impl<'a> OrtDecoder<'a> {
    /// A decoder over an opened model (it must have cache inputs, as harness exports do).
    pub fn new(lm: &'a mut CausalLm) -> Result<Self, ModelError> {
        if lm.info().past.is_empty() {
            return Err(ModelError::Config(format!("{}: sampling needs a model with a KV cache", lm.path().display())));
        }
        Ok(OrtDecoder { lm, past: PastState::default() })
    }
}

impl Decoder for OrtDecoder<'_> {
    fn step(&mut self, ids: &[Vec<u32>], positions: &[Vec<u32>], mask: &[Vec<u8>]) -> Result<Vec<Vec<f32>>, ModelError> {
        let (rows, columns) = (ids.len(), ids.first().map_or(0, Vec::len));
        let flat = |v: &[Vec<u32>]| v.iter().flatten().map(|&x| x as i64).collect::<Vec<i64>>();
        let batch = LmBatch {
            rows,
            columns,
            input_ids: flat(ids),
            attention_mask: mask.iter().flatten().map(|&m| m as i64).collect(),
            position_ids: flat(positions),
            offsets: vec![0; rows],
        };
        let last = |logits: &[f32], vocab: usize| -> Vec<Vec<f32>> {
            (0..rows).map(|r| logits[((r + 1) * columns - 1) * vocab..(r + 1) * columns * vocab].to_vec()).collect()
        };
        let (logits, past) = self.lm.forward_with_past(&batch, &self.past, last)?;
        self.past = past;
        Ok(logits)
    }
}

/// Continues every prompt in candle; `rng` drives sampling (unused when greedy).
pub fn generate(
    model: &Model,
    prompts: &[Vec<u32>],
    cfg: &GenerateConfig,
    rng: &mut impl Rng,
) -> Result<Vec<Generated>, ModelError> {
    generate_mixed(&mut CandleDecoder::new(model, cfg.use_cache), None, prompts, cfg, rng)
}

/// Like [`generate`], with any decoder, and with `mix = Some((teacher, w))` each token
/// comes from the mixture `(1 − w)·q + w·p` of the model's and the teacher's
/// (temperature-scaled) distributions (MiniLLM's teacher-mixed sampling); the recorded
/// log-probability is the mixture's, the distribution that actually produced the token.
pub fn generate_mixed(
    model: &mut dyn Decoder,
    mut mix: Option<(&mut dyn Decoder, f64)>,
    prompts: &[Vec<u32>],
    cfg: &GenerateConfig,
    rng: &mut impl Rng,
) -> Result<Vec<Generated>, ModelError> {
    let b = prompts.len();
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    if b == 0 || cfg.max_new_tokens == 0 {
        return Ok(vec![Generated { tokens: vec![], logprobs: vec![] }; b]);
    }
    if prompts.iter().any(Vec::is_empty) {
        return Err(ModelError::Config("generation needs a non-empty prompt for every row".into()));
    }
    // Left padding: row r's tokens end at column `longest`.
    let mut mask: Vec<Vec<u8>> = prompts.iter().map(|p| [vec![0; longest - p.len()], vec![1; p.len()]].concat()).collect();
    let mut next_pos: Vec<u32> = prompts.iter().map(|p| p.len() as u32).collect();
    let mut out = vec![Generated { tokens: vec![], logprobs: vec![] }; b];
    let mut done = vec![false; b];

    let mut step_ids: Vec<Vec<u32>> = prompts.iter().map(|p| [vec![0; longest - p.len()], p.clone()].concat()).collect();
    let mut step_pos: Vec<Vec<u32>> = mask.iter().map(|m| mask_positions(m)).collect();
    for _ in 0..cfg.max_new_tokens {
        let last = model.step(&step_ids, &step_pos, &mask)?;
        let teacher_last = match mix.as_mut() {
            Some((teacher, _)) => Some(teacher.step(&step_ids, &step_pos, &mask)?),
            None => None,
        };
        let weight = mix.as_ref().map(|(_, w)| *w);
        let mut picked = Vec::with_capacity(b);
        for (r, row_logits) in last.iter().enumerate() {
            let mixture = teacher_last.as_ref().zip(weight).map(|(t, w)| (t[r].as_slice(), w));
            let (token, logprob) = choose(row_logits, mixture, cfg.decoding, rng);
            if !done[r] {
                out[r].tokens.push(token);
                out[r].logprobs.push(logprob);
                done[r] = cfg.eos == Some(token);
            }
            picked.push(token);
        }
        if done.iter().all(|&d| d) {
            break;
        }
        mask.iter_mut().for_each(|m| m.push(1));
        step_ids = picked.iter().map(|&t| vec![t]).collect();
        step_pos = next_pos.iter().map(|&p| vec![p]).collect();
        next_pos.iter_mut().for_each(|p| *p += 1);
    }
    Ok(out)
}

/// Hugging Face positions for a key mask: `cumsum(mask) − 1`, padding at 0.
fn mask_positions(mask: &[u8]) -> Vec<u32> {
    let mut seen = 0u32;
    mask.iter()
        .map(|&m| {
            seen += m as u32;
            if m == 1 { seen - 1 } else { 0 }
        })
        .collect()
}

fn forward_step(
    model: &Model,
    ids: &[Vec<u32>],
    pos: &[Vec<u32>],
    mask: &[Vec<u8>],
    device: &Device,
    cache: Option<&mut KvCache>,
) -> candle_core::Result<Tensor> {
    let (b, s) = (ids.len(), ids[0].len());
    let flat = |v: &[Vec<u32>]| v.iter().flatten().copied().collect::<Vec<u32>>();
    let ids = Tensor::from_vec(flat(ids), (b, s), device)?;
    let positions = Tensor::from_vec(flat(pos), (b, s), device)?;
    let bias = ops::attention_bias(mask, s, device)?;
    model.forward(&Forward { ids: &ids, positions: &positions, bias: &bias }, cache)?.detach().contiguous()
}

/// Picks a token from one row of logits (mixed with a teacher's row when given); returns
/// it with its log-probability under the distribution it was drawn from.
fn choose(logits: &[f32], mixture: Option<(&[f32], f64)>, decoding: Decoding, rng: &mut impl Rng) -> (u32, f32) {
    let temperature = match decoding {
        Decoding::Greedy => 1.0,
        Decoding::Sample { temperature } => temperature,
    };
    let log_softmax = |row: &[f32]| -> Vec<f64> {
        let scaled: Vec<f64> = row.iter().map(|&l| l as f64 / temperature).collect();
        let max = scaled.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let lse = max + scaled.iter().map(|l| (l - max).exp()).sum::<f64>().ln();
        scaled.into_iter().map(|l| l - lse).collect()
    };
    let mut logp = log_softmax(logits);
    if let Some((teacher, w)) = mixture {
        let teacher = log_softmax(teacher);
        for (q, p) in logp.iter_mut().zip(teacher) {
            *q = ((1.0 - w) * q.exp() + w * p.exp()).ln();
        }
    }
    let token = match decoding {
        Decoding::Greedy => {
            let max = logp.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            logp.iter().position(|&l| l == max).unwrap_or(0)
        }
        Decoding::Sample { .. } => {
            let mut u: f64 = rng.r#gen();
            let mut chosen = logp.len() - 1;
            for (i, l) in logp.iter().enumerate() {
                u -= l.exp();
                if u <= 0.0 {
                    chosen = i;
                    break;
                }
            }
            chosen
        }
    };
    (token as u32, logp[token] as f32)
}
