//! A model's forward and backward passes during training: the engine's
//! ([`crate::engine`]) on the CPU, candle's autograd over the composite ops elsewhere (or
//! for a family the engine has no plan for).
//!
//! With the engine, the engine's copy of the weights is the truth between steps: call
//! [`Passes::sync`] before reading the model (saving, sampling from it).

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor};

use super::{AdamW, Precision};
use crate::engine::{self, Engine};
use crate::model::{Model, ModelError, RowBatch, ops};

/// Forward and backward passes over one model's weights, and its optimiser state.
pub struct Passes {
    backend: Backend,
}

enum Backend {
    Engine { engine: Box<Engine>, opt: Option<engine::AdamW> },
    /// `compute`: the dtype of the matrix products when it is not the weights' own
    /// (mixed precision, [`Model::compute_copy`]).
    Autograd { compute: Option<DType>, picked: Option<Tensor>, grads: Option<GradStore>, opt: Option<AdamW> },
}

impl Passes {
    /// The engine's passes (f32) where it runs `model`, else candle's autograd.
    pub fn new(model: &Model) -> Self {
        Self::with_precision(model, Precision::F32)
    }

    /// Passes in `precision`: f32 as [`Passes::new`]; bf16 through candle's autograd over
    /// a compute copy of the f32 master weights.
    pub fn with_precision(model: &Model, precision: Precision) -> Self {
        let autograd = |compute| Backend::Autograd { compute, picked: None, grads: None, opt: None };
        let backend = match precision {
            Precision::Bf16 => {
                crate::status::detail("training in mixed precision (bf16 products, f32 master weights) through candle's autograd");
                autograd(Some(DType::BF16))
            }
            Precision::F32 => match Engine::new(model) {
                Ok(engine) => Backend::Engine { engine: Box::new(engine), opt: None },
                Err(why) => {
                    crate::status::detail(format!("training through candle's autograd: {why}"));
                    autograd(None)
                }
            },
        };
        Passes { backend }
    }

    /// Whether the engine runs the passes.
    pub fn uses_engine(&self) -> bool {
        matches!(self.backend, Backend::Engine { .. })
    }

    /// Logits `[n, vocab]` (host values) at rows `picked` (`b·seq + t`) of right-padded
    /// `rows`; [`Passes::backward_logits`] takes their gradient.
    pub fn logits(&mut self, model: &Model, rows: &[Vec<u32>], picked: &[usize]) -> Result<Vec<f32>, ModelError> {
        match &mut self.backend {
            Backend::Engine { engine, .. } => {
                engine.forward(rows, 0);
                Ok(engine.logits_owned(picked))
            }
            Backend::Autograd { compute, picked: kept, .. } => {
                let t = compute_logits(model, *compute, rows, picked)?;
                let host = t.flatten_all()?.to_vec1::<f32>()?;
                *kept = Some(t);
                Ok(host)
            }
        }
    }

    /// Back-propagates the gradient of the loss with respect to the last
    /// [`Passes::logits`] into every weight, adding to what earlier backward passes since
    /// the last [`Passes::step`] left there (two losses on two batches make one step).
    pub fn backward_logits(&mut self, model: &Model, grad: &[f32]) -> Result<(), ModelError> {
        match &mut self.backend {
            Backend::Engine { engine, .. } => engine.backward_logits(grad),
            Backend::Autograd { picked, grads, .. } => {
                let logits = picked.take().expect("logits before their gradient");
                let g = Tensor::from_slice(grad, logits.shape(), logits.device())?;
                // The surrogate Σ logits ⊙ g has exactly `g` as its gradient in the logits.
                let mut new = (&logits * &g)?.sum_all()?.backward()?;
                if let Some(old) = grads.take() {
                    for (_, var) in model.params.iter() {
                        if let Some(earlier) = old.get(var.as_tensor()) {
                            let sum = match new.get(var.as_tensor()) {
                                Some(g) => (g + earlier)?,
                                None => earlier.clone(),
                            };
                            new.insert(var.as_tensor(), sum);
                        }
                    }
                }
                *grads = Some(new);
            }
        }
        Ok(())
    }

    /// Mean next-token cross-entropy of `targets` at rows `picked` of right-padded `rows`;
    /// with `backward`, also its gradient into every weight.
    pub fn cross_entropy(
        &mut self,
        model: &Model,
        rows: &[Vec<u32>],
        picked: &[usize],
        targets: &[u32],
        backward: bool,
    ) -> Result<f64, ModelError> {
        match &mut self.backend {
            Backend::Engine { engine, .. } => {
                engine.forward(rows, 0);
                Ok(engine.cross_entropy(picked, targets, backward))
            }
            Backend::Autograd { compute, grads, .. } => {
                let logits = compute_logits(model, *compute, rows, picked)?;
                let targets = Tensor::from_slice(targets, targets.len(), logits.device())?;
                let loss = ops::cross_entropy(&logits, &targets)?.mean_all()?;
                if backward {
                    *grads = Some(loss.backward()?);
                }
                Ok(loss.to_dtype(DType::F64)?.to_scalar::<f64>()?)
            }
        }
    }

    /// The gradient of the backward passes since the last step or call, flat (see
    /// [`Engine::take_gradient`]); the next backward pass starts from zero. The engine's
    /// passes only (DP-SGD's per-example gradients).
    pub fn take_gradient(&mut self) -> Result<Vec<f32>, ModelError> {
        match &mut self.backend {
            Backend::Engine { engine, .. } => Ok(engine.take_gradient()),
            Backend::Autograd { .. } => Err(per_example_unsupported()),
        }
    }

    /// Sets the gradient the next [`Passes::step`] applies (the layout of
    /// [`Passes::take_gradient`]).
    pub fn set_gradient(&mut self, flat: &[f32]) -> Result<(), ModelError> {
        match &mut self.backend {
            Backend::Engine { engine, .. } => {
                engine.set_gradient(flat);
                Ok(())
            }
            Backend::Autograd { .. } => Err(per_example_unsupported()),
        }
    }

    /// Makes the AdamW state (weight decay `weight_decay`) now rather than in the first
    /// [`Passes::step`], e.g. before timing steps.
    pub fn init_optimizer(&mut self, model: &Model, weight_decay: f64) {
        match &mut self.backend {
            Backend::Engine { engine, opt } => {
                opt.get_or_insert_with(|| engine.optimizer(weight_decay));
            }
            Backend::Autograd { opt, .. } => {
                opt.get_or_insert_with(|| AdamW::new(&model.params, weight_decay));
            }
        }
    }

    /// One AdamW update (weight decay `weight_decay`, learning rate `lr`, gradients clipped
    /// to global norm `clip`) from the last backward pass. Returns the norm before clipping.
    pub fn step(&mut self, model: &Model, weight_decay: f64, lr: f64, clip: f64) -> Result<f64, ModelError> {
        self.init_optimizer(model, weight_decay);
        match &mut self.backend {
            Backend::Engine { engine, opt } => Ok(engine.step(opt.as_mut().expect("made above"), lr, clip)),
            Backend::Autograd { grads, opt, .. } => {
                let grads = grads.take().expect("a backward pass before the step");
                Ok(opt.as_mut().expect("made above").step(&model.params, &grads, lr, clip)?)
            }
        }
    }

    /// Every current weight as `(name, shape, values)`, copied (for an ONNX Runtime session).
    pub fn weights(&self, model: &Model) -> Result<Vec<(String, Vec<usize>, Vec<f32>)>, ModelError> {
        match &self.backend {
            Backend::Engine { engine, .. } => Ok(engine.named_weights()),
            Backend::Autograd { .. } => model.host_weights(),
        }
    }

    /// Writes the current weights into `model` (a no-op with autograd, which trains the
    /// model's own variables).
    pub fn sync(&self, model: &mut Model) -> Result<(), ModelError> {
        match &self.backend {
            Backend::Engine { engine, .. } => engine.store(model),
            Backend::Autograd { .. } => Ok(()),
        }
    }
}

fn per_example_unsupported() -> ModelError {
    ModelError::Config("per-example gradients (DP-SGD) need the CPU training engine in f32; this model trains through candle's autograd (another device, bf16, or a family the engine has no plan for)".into())
}

/// [`picked_logits`] of `model`, or of its compute copy in `compute`.
fn compute_logits(model: &Model, compute: Option<DType>, rows: &[Vec<u32>], picked: &[usize]) -> candle_core::Result<Tensor> {
    match compute {
        Some(dtype) => picked_logits(&model.compute_copy(dtype)?, rows, picked),
        None => picked_logits(model, rows, picked),
    }
}

/// candle logits `[n, vocab]` at rows `picked` of right-padded `rows`.
pub(super) fn picked_logits(model: &Model, rows: &[Vec<u32>], picked: &[usize]) -> candle_core::Result<Tensor> {
    let x = RowBatch::new(rows, 0, model.device())?;
    let logits = model.forward(&x.as_forward(), None)?;
    let (b, s, v) = logits.dims3()?;
    let index: Vec<u32> = picked.iter().map(|&r| r as u32).collect();
    let index = Tensor::from_vec(index, picked.len(), model.device())?;
    logits.reshape((b * s, v))?.index_select(&index, 0)
}
