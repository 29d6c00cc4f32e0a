//! AdamW for weights held as candle variables (training through candle's autograd, on
//! devices the engine does not run on): the engine's in-place update
//! ([`crate::engine::adamw`]) on host copies of the weights and gradients.

use candle_core::{Tensor, backprop::GradStore};

use crate::engine;
use crate::model::Params;

/// AdamW state for every weight of a model.
pub struct AdamW {
    inner: engine::AdamW,
}

impl AdamW {
    /// Fresh state. Matrices and embeddings are decayed; biases and norm gains (1-D) are
    /// not, as usual for transformers.
    pub fn new(params: &Params, weight_decay: f64) -> Self {
        let sizes: Vec<usize> = params.iter().map(|(_, v)| v.elem_count()).collect();
        let decay = params.iter().map(|(_, v)| v.rank() >= 2).collect();
        AdamW { inner: engine::AdamW::new(&sizes, decay, weight_decay) }
    }

    /// One update with learning rate `lr`, after scaling the gradients so that their global
    /// L2 norm is at most `clip` (PyTorch's `clip_grad_norm_`). Returns the norm before
    /// clipping. Weights without a gradient are left alone.
    pub fn step(&mut self, params: &Params, grads: &GradStore, lr: f64, clip: f64) -> candle_core::Result<f64> {
        let host = |t: &Tensor| t.flatten_all()?.to_vec1::<f32>();
        let mut weights = Vec::new();
        let mut grad = Vec::new();
        for (_, var) in params.iter() {
            weights.push(host(var.as_tensor())?);
            grad.push(grads.get(var.as_tensor()).map(host).transpose()?.unwrap_or_default());
        }
        let norm = self.inner.step(&mut weights, &mut grad, lr, clip);
        for ((_, var), w) in params.iter().zip(weights) {
            var.set(&Tensor::from_vec(w, var.shape(), var.device())?)?;
        }
        Ok(norm)
    }
}
