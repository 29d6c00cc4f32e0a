//! Supervised fine-tuning in candle (SPEC §6): the teacher on the members, the No-KD
//! baseline student on the public split.
//!
//! Response-only next-token cross-entropy, AdamW (weight decay 0.01 on matrices and
//! embeddings, none on biases and norm gains), cosine decay, global gradient-norm
//! clipping, one seed for the data order. The last epoch's weights are kept, as the
//! paper's code does.

mod adamw;
mod passes;

use std::path::Path;

use candle_core::{D, Tensor};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

pub use adamw::AdamW;
pub use passes::Passes;

use kdharness_plugin_api::defense::DefenseInstance;

use crate::data::Encoded;
use crate::model::{Model, ModelError, ops};

/// One training sequence: `ids = prompt ++ response ++ [eos]`; the loss covers the
/// response and the end-of-sequence token, each predicted from everything before it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Example {
    /// The whole sequence.
    pub ids: Vec<u32>,
    /// How many leading tokens are prompt (context, never trained on).
    pub prompt_len: usize,
}

impl Example {
    /// A training example from a tokenized record, with `eos` appended when given.
    pub fn from_encoded(encoded: &Encoded, eos: Option<u32>) -> Self {
        let ids = encoded.input_ids().chain(eos).collect();
        Example { ids, prompt_len: encoded.prompt_ids.len() }
    }

    /// Positions whose next token is trained on (`t` predicts `ids[t + 1]`).
    pub fn trained_positions(&self) -> std::ops::Range<usize> {
        self.prompt_len.max(1) - 1..self.ids.len().saturating_sub(1)
    }
}

/// Training settings (defaults: the paper's teacher fine-tuning, SPEC §6).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Passes over the data.
    pub epochs: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Sequences per optimiser step.
    pub batch_size: usize,
    /// AdamW decoupled weight decay.
    pub weight_decay: f64,
    /// Global gradient-norm clip.
    pub grad_clip: f64,
    /// Linear warm-up steps before the cosine decay.
    pub warmup_steps: usize,
    /// Floor of the cosine schedule, as a fraction of `lr`.
    pub min_lr_ratio: f64,
    /// The arithmetic of the training passes.
    #[serde(skip_serializing_if = "Precision::is_f32")]
    pub precision: Precision,
}

/// The arithmetic of training passes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// f32 throughout: the CPU engine's arithmetic, and candle's elsewhere.
    #[default]
    F32,
    /// Mixed precision, as PyTorch's bf16 autocast: the matrix products run in bfloat16 on
    /// bf16 copies of the weights, cast from the f32 master weights at every pass; the
    /// residual stream, norms, softmax, logits, loss and AdamW stay in f32. Runs through
    /// candle's autograd (on a GPU: what 1–7B models need; on the CPU it is slower than
    /// the f32 engine). No fp16: it would need loss scaling, which bf16's range makes
    /// unnecessary.
    Bf16,
}

impl Precision {
    fn is_f32(&self) -> bool {
        *self == Precision::F32
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            epochs: 5,
            lr: 5e-5,
            batch_size: 4,
            weight_decay: 0.01,
            grad_clip: 1.0,
            warmup_steps: 0,
            min_lr_ratio: 0.0,
            precision: Precision::F32,
        }
    }
}

impl TrainConfig {
    /// The learning rate at optimiser step `step` (0-based) of `total`: linear warm-up,
    /// then `min + (lr − min)·½(1 + cos(π·progress))`.
    pub fn lr_at(&self, step: usize, total: usize) -> f64 {
        if step < self.warmup_steps {
            return self.lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let decay_steps = total.saturating_sub(self.warmup_steps).max(1);
        let progress = (step - self.warmup_steps) as f64 / decay_steps as f64;
        let min = self.lr * self.min_lr_ratio;
        min + (self.lr - min) * 0.5 * (1.0 + (std::f64::consts::PI * progress.min(1.0)).cos())
    }
}

/// What can stop training.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The model or its files.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// A non-finite loss: the stage stops and the last good checkpoint is kept.
    #[error("the loss became {loss} at epoch {epoch}, step {step}; try a lower learning rate (the last good checkpoint is kept)")]
    NonFinite {
        /// The loss value.
        loss: f32,
        /// 1-based epoch.
        epoch: usize,
        /// 1-based step within the run.
        step: usize,
    },
    /// Nothing to train on.
    #[error("no training example has a token to learn")]
    NoData,
    /// A training defense (DP-SGD) failed.
    #[error("the training defense failed: {0}")]
    Defense(String),
}

impl From<candle_core::Error> for TrainError {
    fn from(e: candle_core::Error) -> Self {
        TrainError::Model(ModelError::Candle(e))
    }
}

/// The scored positions of a right-padded batch, flattened: row indices into the
/// `[b·s, vocab]` logits and the tokens they predict.
pub struct Targets {
    /// Row `b·s + t` for position `t` of example `b`.
    pub rows: Vec<usize>,
    /// The token each row predicts.
    pub ids: Vec<u32>,
}

impl Targets {
    /// The trained positions of `batch`, right-padded to `seq`.
    pub fn new(batch: &[&Example], seq: usize) -> Self {
        let (mut rows, mut ids) = (Vec::new(), Vec::new());
        for (r, ex) in batch.iter().enumerate() {
            for t in ex.trained_positions() {
                rows.push(r * seq + t);
                ids.push(ex.ids[t + 1]);
            }
        }
        Targets { rows, ids }
    }

    /// Number of scored positions.
    pub fn count(&self) -> usize {
        self.rows.len()
    }
}

/// A batch's token rows (to be right-padded) and its scored positions.
pub fn batch_rows(batch: &[&Example]) -> (Vec<Vec<u32>>, Targets) {
    let rows: Vec<Vec<u32>> = batch.iter().map(|e| e.ids.clone()).collect();
    let seq = rows.iter().map(Vec::len).max().unwrap_or(0);
    let targets = Targets::new(batch, seq);
    (rows, targets)
}

/// Mean next-token cross-entropy over the scored positions: `−Σ log q(y_t) / n`.
pub fn cross_entropy(scored_logits: &Tensor, targets: &Tensor) -> candle_core::Result<Tensor> {
    ops::cross_entropy(scored_logits, targets)?.mean_all()
}

/// [`cross_entropy`] from candle primitives (the fused kernel's reference).
pub fn cross_entropy_composite(scored_logits: &Tensor, targets: &Tensor) -> candle_core::Result<Tensor> {
    let logp = ops::log_softmax(scored_logits)?;
    let picked = logp.gather(&targets.unsqueeze(D::Minus1)?, D::Minus1)?;
    picked.neg()?.mean_all()
}

/// The model's mean response cross-entropy on a batch of examples through candle's
/// autograd (pad id 0; padding is never scored): the reference the engine is tested
/// against.
pub fn batch_loss(model: &Model, batch: &[&Example]) -> candle_core::Result<(Tensor, usize)> {
    let (rows, targets) = batch_rows(batch);
    let picked = passes::picked_logits(model, &rows, &targets.rows)?;
    let ids = Tensor::from_vec(targets.ids.clone(), targets.count(), model.device())?;
    Ok((cross_entropy(&picked, &ids)?, targets.count()))
}

/// Token-weighted mean response cross-entropy over many examples, without gradients.
pub fn evaluate(model: &Model, examples: &[Example], batch_size: usize) -> Result<f64, ModelError> {
    let mut passes = Passes::new(model);
    let (mut total, mut count) = (0.0, 0usize);
    for chunk in examples.chunks(batch_size.max(1)) {
        let batch: Vec<&Example> = chunk.iter().filter(|e| !e.trained_positions().is_empty()).collect();
        let (rows, targets) = batch_rows(&batch);
        if targets.count() == 0 {
            continue;
        }
        total += passes.cross_entropy(model, &rows, &targets.rows, &targets.ids, false)? * targets.count() as f64;
        count += targets.count();
    }
    Ok(if count == 0 { f64::NAN } else { total / count as f64 })
}

/// Per-epoch record of a training run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochLog {
    /// 1-based epoch.
    pub epoch: usize,
    /// Token-weighted mean training loss over the epoch's steps.
    pub train_loss: f64,
    /// Learning rate at the epoch's last step.
    pub lr: f64,
    /// Optimiser steps taken in the epoch.
    #[serde(default)]
    pub steps: usize,
}

/// Fine-tunes `model` in place on `examples`; `seed` fixes the data order. Progress shows
/// on a terminal under `what`; when `checkpoint` is given the model is saved there after
/// every epoch, so a failure keeps the last good epoch.
pub fn train(
    model: &mut Model,
    examples: &[Example],
    cfg: &TrainConfig,
    seed: u64,
    what: &str,
    checkpoint: Option<&Path>,
) -> Result<Vec<EpochLog>, TrainError> {
    train_loop(model, examples, cfg, seed, what, checkpoint, |passes, model, batch, lr| {
        let (rows, targets) = batch_rows(batch);
        let value = passes.cross_entropy(model, &rows, &targets.rows, &targets.ids, true)?;
        if value.is_finite() {
            passes.step(model, cfg.weight_decay, lr, cfg.grad_clip)?;
        }
        Ok((value * targets.count() as f64, targets.count()))
    })
}

/// [`train`] with the step's gradient made private by a training defense (DP-SGD): each
/// example's gradient is computed on its own and handed to `defense`, which returns the
/// step's gradient (clipped, summed, noised, averaged); AdamW applies it without further
/// clipping. Per-example gradients need the CPU engine's passes (f32).
pub fn train_private(
    model: &mut Model,
    examples: &[Example],
    cfg: &TrainConfig,
    seed: u64,
    what: &str,
    checkpoint: Option<&Path>,
    defense: &mut DefenseInstance,
) -> Result<Vec<EpochLog>, TrainError> {
    train_loop(model, examples, cfg, seed, what, checkpoint, |passes, model, batch, lr| {
        let (mut per_example, mut sum, mut tokens) = (Vec::new(), 0.0, 0);
        for example in batch {
            let (rows, targets) = batch_rows(std::slice::from_ref(example));
            let value = passes.cross_entropy(model, &rows, &targets.rows, &targets.ids, true)?;
            if !value.is_finite() {
                return Ok((value, targets.count()));
            }
            per_example.extend(passes.take_gradient()?);
            sum += value * targets.count() as f64;
            tokens += targets.count();
        }
        let mut step = vec![0f32; per_example.len() / batch.len()];
        defense
            .private_gradient(per_example.as_mut_slice().into(), batch.len() as u32, step.as_mut_slice().into())
            .into_result()
            .map_err(|e| TrainError::Defense(e.into()))?;
        passes.set_gradient(&step)?;
        passes.step(model, cfg.weight_decay, lr, 0.0)?;
        Ok((sum, tokens))
    })
}

/// The training loop: epochs of shuffled batches, `step(passes, model, batch, lr)` doing
/// one optimiser step and returning the batch's summed loss and its token count (a
/// non-finite loss stops the run before the weights change).
fn train_loop(
    model: &mut Model,
    examples: &[Example],
    cfg: &TrainConfig,
    seed: u64,
    what: &str,
    checkpoint: Option<&Path>,
    mut step_fn: impl FnMut(&mut Passes, &Model, &[&Example], f64) -> Result<(f64, usize), TrainError>,
) -> Result<Vec<EpochLog>, TrainError> {
    let examples: Vec<&Example> = examples.iter().filter(|e| !e.trained_positions().is_empty()).collect();
    if examples.is_empty() {
        return Err(TrainError::NoData);
    }
    let batch_size = cfg.batch_size.max(1);
    let steps_per_epoch = examples.len().div_ceil(batch_size);
    let total = steps_per_epoch * cfg.epochs;
    let mut passes = Passes::with_precision(model, cfg.precision);
    passes.init_optimizer(model, cfg.weight_decay);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let bar = crate::status::progress(total, what, "steps");
    let mut logs = Vec::new();
    let mut step = 0;
    for epoch in 1..=cfg.epochs {
        let mut order = examples.clone();
        order.shuffle(&mut rng);
        let (mut sum, mut tokens) = (0.0, 0usize);
        for batch in order.chunks(batch_size) {
            let (value, count) = step_fn(&mut passes, model, batch, cfg.lr_at(step, total))?;
            if !value.is_finite() {
                bar.abandon();
                return Err(TrainError::NonFinite { loss: value as f32, epoch, step: step + 1 });
            }
            sum += value;
            tokens += count;
            step += 1;
            bar.inc(1);
        }
        let log = EpochLog { epoch, train_loss: sum / tokens.max(1) as f64, lr: cfg.lr_at(step - 1, total), steps: steps_per_epoch };
        crate::status::detail(format!("{what}: epoch {epoch}: train loss {:.4}", log.train_loss));
        logs.push(log);
        passes.sync(model)?;
        if let Some(dir) = checkpoint {
            model.save(dir)?;
        }
    }
    bar.finish();
    Ok(logs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_schedule_starts_at_lr_and_ends_at_the_floor() {
        let cfg = TrainConfig { lr: 1.0, warmup_steps: 2, min_lr_ratio: 0.1, ..TrainConfig::default() };
        assert_eq!(cfg.lr_at(0, 12), 0.5);
        assert_eq!(cfg.lr_at(1, 12), 1.0);
        assert_eq!(cfg.lr_at(2, 12), 1.0);
        // Half-way through the decay: min + (1 − min)/2.
        assert!((cfg.lr_at(7, 12) - 0.55).abs() < 1e-12);
        assert!((cfg.lr_at(12, 12) - 0.1).abs() < 1e-12);
    }

    #[test]
    fn trained_positions_cover_response_and_eos() {
        let enc = Encoded { prompt_ids: vec![5, 6], response_ids: vec![7, 8] };
        let ex = Example::from_encoded(&enc, Some(0));
        assert_eq!(ex.ids, [5, 6, 7, 8, 0]);
        // Position 1 predicts 7, 2 predicts 8, 3 predicts eos.
        assert_eq!(ex.trained_positions(), 1..4);
        let no_prompt = Example::from_encoded(&Encoded { prompt_ids: vec![], response_ids: vec![7, 8] }, None);
        assert_eq!(no_prompt.trained_positions(), 0..1);
    }

    #[test]
    fn cross_entropy_matches_hand_computed_value() {
        let dev = candle_core::Device::Cpu;
        let logits = Tensor::new(&[[0f32, 1., 2.], [3., 3., 3.]], &dev).unwrap();
        let targets = Tensor::new(&[2u32, 0], &dev).unwrap();
        let z = 1f64 + 1f64.exp() + 2f64.exp();
        let want = ((z.ln() - 2.0) + 3f64.ln()) / 2.0;
        for ce in [cross_entropy, cross_entropy_composite] {
            let got = ce(&logits, &targets).unwrap().to_scalar::<f32>().unwrap() as f64;
            assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        }
    }

    /// Per-example gradients (DP-SGD's input): each is that example's alone (nothing
    /// leaks from one to the next), and weighted by their token counts they add up to the
    /// gradient of the batch's token-mean loss.
    #[test]
    fn per_example_gradients_are_each_examples_own_and_add_up_to_the_batch_gradient() {
        let shape = crate::model::Shape { arch: "llama".into(), layers: 2, d_model: 32, heads: 2, kv_heads: Some(1), ffn: Some(64), max_positions: 64, tie_embeddings: true };
        let model = Model::scratch(crate::model::ModelConfig::scratch(&shape, 50).unwrap(), 7, &candle_core::Device::Cpu).unwrap();
        let a = Example { ids: vec![3, 4, 5, 6, 7, 8], prompt_len: 2 };
        let b = Example { ids: vec![9, 10, 11, 12, 13, 14, 15, 16, 17], prompt_len: 3 };
        let gradient = |batch: &[&Example]| {
            let mut passes = Passes::new(&model);
            assert!(passes.uses_engine());
            let (rows, targets) = batch_rows(batch);
            passes.cross_entropy(&model, &rows, &targets.rows, &targets.ids, true).unwrap();
            (passes.take_gradient().unwrap(), targets.count() as f32)
        };
        let mut passes = Passes::new(&model);
        let mut each = Vec::new();
        for e in [&a, &b] {
            let (rows, targets) = batch_rows(&[e]);
            passes.cross_entropy(&model, &rows, &targets.rows, &targets.ids, true).unwrap();
            each.push((passes.take_gradient().unwrap(), targets.count() as f32));
        }
        // In one Passes after another example, and in a fresh one: the same gradient.
        assert_eq!(each[1].0, gradient(&[&b]).0);
        assert_eq!(each[0].0, gradient(&[&a]).0);
        let (batch, _) = gradient(&[&a, &b]);
        let (na, nb) = (each[0].1, each[1].1);
        let combined: Vec<f32> = each[0].0.iter().zip(&each[1].0).map(|(x, y)| (na * x + nb * y) / (na + nb)).collect();
        let scale = batch.iter().map(|x| x.abs()).fold(0f32, f32::max);
        let diff = batch.iter().zip(&combined).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        assert!(scale > 0.0 && diff / scale < 1e-5, "relative difference {}", diff / scale);
        // What a step applies is what was set.
        let mut passes = Passes::new(&model);
        passes.set_gradient(&combined).unwrap();
        assert_eq!(passes.take_gradient().unwrap(), combined);
    }

    #[test]
    fn fused_cross_entropy_gradient_matches_the_composite_one() {
        let dev = candle_core::Device::Cpu;
        let x = candle_core::Var::from_tensor(&Tensor::randn(0f32, 5.0, (6, 40), &dev).unwrap()).unwrap();
        let targets = Tensor::new(&[3u32, 0, 39, 7, 7, 21], &dev).unwrap();
        let grad = |ce: fn(&Tensor, &Tensor) -> candle_core::Result<Tensor>| {
            let loss = ce(x.as_tensor(), &targets).unwrap();
            loss.backward().unwrap().get(x.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()
        };
        let (a, b) = (grad(cross_entropy), grad(cross_entropy_composite));
        let diff = a.iter().zip(&b).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(diff < 1e-6, "max gradient difference {diff}");
    }
}
