//! Sampling and greedy decoding with a KV cache (SPEC §6): teacher samples for SeqKD,
//! student samples for on-policy KD.
//!
//! Prompts of different lengths share a batch by padding on the left; each row's
//! positions count its real tokens only (`cumsum(mask) − 1`), so a padded row decodes
//! exactly as it would alone.

use candle_core::{DType, Device, Tensor};
use rand::Rng;

use super::{Forward, KvCache, Model, ops};

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

/// Continues every prompt; `rng` drives sampling (unused when greedy).
pub fn generate(
    model: &Model,
    prompts: &[Vec<u32>],
    cfg: &GenerateConfig,
    rng: &mut impl Rng,
) -> candle_core::Result<Vec<Generated>> {
    generate_mixed(model, None, prompts, cfg, rng)
}

/// Like [`generate`], but with `mix = Some((teacher, w))` each token comes from the
/// mixture `(1 − w)·q + w·p` of the model's and the teacher's (temperature-scaled)
/// distributions (MiniLLM's teacher-mixed sampling); the recorded log-probability is the
/// mixture's, the distribution that actually produced the token.
pub fn generate_mixed(
    model: &Model,
    mix: Option<(&Model, f64)>,
    prompts: &[Vec<u32>],
    cfg: &GenerateConfig,
    rng: &mut impl Rng,
) -> candle_core::Result<Vec<Generated>> {
    let device = model.device();
    let b = prompts.len();
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    if b == 0 || cfg.max_new_tokens == 0 {
        return Ok(vec![Generated { tokens: vec![], logprobs: vec![] }; b]);
    }
    if prompts.iter().any(Vec::is_empty) {
        candle_core::bail!("generation needs a non-empty prompt for every row");
    }
    // Left padding: row r's tokens end at column `longest`.
    let mut rows: Vec<Vec<u32>> = prompts.iter().map(|p| [vec![0; longest - p.len()], p.clone()].concat()).collect();
    let mut mask: Vec<Vec<u8>> = prompts.iter().map(|p| [vec![0; longest - p.len()], vec![1; p.len()]].concat()).collect();
    let mut next_pos: Vec<u32> = prompts.iter().map(|p| p.len() as u32).collect();
    let mut out = vec![Generated { tokens: vec![], logprobs: vec![] }; b];
    let mut done = vec![false; b];
    let mut cache = KvCache::new(model.config.layers);
    let mut teacher_cache = mix.map(|(teacher, _)| KvCache::new(teacher.config.layers));

    let mut step_ids = rows.clone();
    let mut step_pos: Vec<Vec<u32>> = mask.iter().map(|m| positions(m)).collect();
    for _ in 0..cfg.max_new_tokens {
        let next_logits = |m: &Model, cache: Option<&mut KvCache>| -> candle_core::Result<Vec<Vec<f32>>> {
            let logits = match cache {
                Some(cache) if cfg.use_cache => forward_step(m, &step_ids, &step_pos, &mask, device, Some(cache))?,
                _ => {
                    let pos: Vec<Vec<u32>> = mask.iter().map(|m| positions(m)).collect();
                    forward_step(m, &rows, &pos, &mask, device, None)?
                }
            };
            logits.narrow(1, logits.dim(1)? - 1, 1)?.squeeze(1)?.to_dtype(DType::F32)?.to_vec2()
        };
        let last = next_logits(model, Some(&mut cache))?;
        let teacher_last = match (mix, teacher_cache.as_mut()) {
            (Some((teacher, _)), Some(tc)) => Some(next_logits(teacher, Some(tc))?),
            _ => None,
        };
        let mut picked = Vec::with_capacity(b);
        for (r, row_logits) in last.iter().enumerate() {
            let mixture = teacher_last.as_ref().zip(mix).map(|(t, (_, w))| (t[r].as_slice(), w));
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
        for r in 0..b {
            rows[r].push(picked[r]);
            mask[r].push(1);
        }
        step_ids = picked.iter().map(|&t| vec![t]).collect();
        step_pos = next_pos.iter().map(|&p| vec![p]).collect();
        next_pos.iter_mut().for_each(|p| *p += 1);
    }
    Ok(out)
}

/// Hugging Face positions for a key mask: `cumsum(mask) − 1`, padding at 0.
fn positions(mask: &[u8]) -> Vec<u32> {
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
