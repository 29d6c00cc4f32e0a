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

    let mut step_ids = rows.clone();
    let mut step_pos: Vec<Vec<u32>> = mask.iter().map(|m| positions(m)).collect();
    for _ in 0..cfg.max_new_tokens {
        let logits = if cfg.use_cache {
            forward_step(model, &step_ids, &step_pos, &mask, device, Some(&mut cache))?
        } else {
            let pos: Vec<Vec<u32>> = mask.iter().map(|m| positions(m)).collect();
            forward_step(model, &rows, &pos, &mask, device, None)?
        };
        let last = logits.narrow(1, logits.dim(1)? - 1, 1)?.squeeze(1)?.to_dtype(DType::F32)?;
        let last: Vec<Vec<f32>> = last.to_vec2()?;
        let mut picked = Vec::with_capacity(b);
        for (r, row_logits) in last.iter().enumerate() {
            let (token, logprob) = choose(row_logits, cfg.decoding, rng);
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

/// Picks a token from one row of logits; returns it with its log-probability.
fn choose(logits: &[f32], decoding: Decoding, rng: &mut impl Rng) -> (u32, f32) {
    let temperature = match decoding {
        Decoding::Greedy => 1.0,
        Decoding::Sample { temperature } => temperature,
    };
    let scaled: Vec<f64> = logits.iter().map(|&l| l as f64 / temperature).collect();
    let max = scaled.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let lse = max + scaled.iter().map(|l| (l - max).exp()).sum::<f64>().ln();
    let token = match decoding {
        Decoding::Greedy => scaled.iter().position(|&l| l == max).unwrap_or(0),
        Decoding::Sample { .. } => {
            let mut u: f64 = rng.r#gen();
            let mut chosen = scaled.len() - 1;
            for (i, l) in scaled.iter().enumerate() {
                u -= (l - lse).exp();
                if u <= 0.0 {
                    chosen = i;
                    break;
                }
            }
            chosen
        }
    };
    (token as u32, (scaled[token] - lse) as f32)
}
