//! AdamW with global gradient-norm clipping, updating weights on the host in one pass.
//!
//! candle's own optimiser builds a dozen temporary tensors per weight and step; here each
//! weight's update is one loop over its values (in parallel across weights). The
//! arithmetic is PyTorch's `torch.optim.AdamW` (decoupled decay, bias-corrected moments).

use candle_core::{Tensor, Var, backprop::GradStore};
use rayon::prelude::*;

use crate::model::Params;

const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const EPS: f64 = 1e-8;

struct Slot {
    var: Var,
    decay: bool,
    m: Vec<f32>,
    v: Vec<f32>,
}

/// AdamW state for every weight of a model.
pub struct AdamW {
    slots: Vec<Slot>,
    weight_decay: f64,
    t: i32,
}

impl AdamW {
    /// Fresh state. Matrices and embeddings are decayed; biases and norm gains (1-D) are
    /// not, as usual for transformers.
    pub fn new(params: &Params, weight_decay: f64) -> candle_core::Result<Self> {
        let slots = params
            .iter()
            .map(|(_, var)| {
                let n = var.elem_count();
                Slot { var: var.clone(), decay: var.rank() >= 2, m: vec![0.0; n], v: vec![0.0; n] }
            })
            .collect();
        Ok(AdamW { slots, weight_decay, t: 0 })
    }

    /// One update with learning rate `lr`, after scaling the gradients so that their global
    /// L2 norm is at most `clip` (PyTorch's `clip_grad_norm_`). Returns the norm before
    /// clipping. Weights without a gradient are left alone.
    pub fn step(&mut self, params: &Params, grads: &GradStore, lr: f64, clip: f64) -> candle_core::Result<f64> {
        debug_assert_eq!(params.iter().count(), self.slots.len());
        let host: Vec<Option<Vec<f32>>> = self
            .slots
            .par_iter()
            .map(|s| grads.get(s.var.as_tensor()).map(|g| g.flatten_all()?.to_vec1::<f32>()).transpose())
            .collect::<candle_core::Result<_>>()?;
        let norm = host.iter().flatten().flat_map(|g| g.iter()).map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
        let scale = if clip > 0.0 { (clip / (norm + 1e-6)).min(1.0) } else { 1.0 };
        self.t += 1;
        let (bc1, bc2) = (1.0 - BETA1.powi(self.t), 1.0 - BETA2.powi(self.t));
        let wd = self.weight_decay;
        self.slots.par_iter_mut().zip(host).try_for_each(|(slot, grad)| -> candle_core::Result<()> {
            let Some(grad) = grad else { return Ok(()) };
            let mut theta = slot.var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
            let decay = if slot.decay { 1.0 - lr * wd } else { 1.0 };
            for (((w, g), m), v) in theta.iter_mut().zip(&grad).zip(&mut slot.m).zip(&mut slot.v) {
                let g = *g as f64 * scale;
                let m1 = BETA1 * *m as f64 + (1.0 - BETA1) * g;
                let v1 = BETA2 * *v as f64 + (1.0 - BETA2) * g * g;
                *m = m1 as f32;
                *v = v1 as f32;
                let update = (m1 / bc1) / ((v1 / bc2).sqrt() + EPS);
                *w = (*w as f64 * decay - lr * update) as f32;
            }
            let shape = slot.var.shape().clone();
            slot.var.set(&Tensor::from_vec(theta, shape, slot.var.device())?)
        })?;
        Ok(norm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn first_step_matches_pytorch_adamw() {
        // torch.optim.AdamW([w], lr=0.1, weight_decay=0.5) with w = [[1, -2]], grad [[0.5, 0.25]]:
        // w·(1 − 0.05) − 0.1·sign(g)·(1 − tiny) = [0.85, −2.0]; norm 0.559 < clip.
        let dev = Device::Cpu;
        let w = Var::from_tensor(&Tensor::new(&[[1f32, -2.]], &dev).unwrap()).unwrap();
        let mut params = Params::default();
        params.insert("w", w.clone());
        let loss = (w.as_tensor() * Tensor::new(&[[0.5f32, 0.25]], &dev).unwrap()).unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        let mut opt = AdamW::new(&params, 0.5).unwrap();
        let norm = opt.step(&params, &grads, 0.1, 1.0).unwrap();
        assert!((norm - (0.3125f64).sqrt()).abs() < 1e-7);
        let got = w.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!((got[0] - 0.85).abs() < 1e-6 && (got[1] + 2.0).abs() < 1e-6, "{got:?}");
    }

    #[test]
    fn clipping_scales_the_gradient_to_the_given_norm() {
        // With clip 0.1 the step uses g·0.1/|g|; Adam's first step is still ±lr (sign), so
        // check the second moment instead: v = (1 − β2)·(g·scale)².
        let dev = Device::Cpu;
        let w = Var::from_tensor(&Tensor::new(&[3f32, 4.], &dev).unwrap()).unwrap();
        let mut params = Params::default();
        params.insert("w", w.clone());
        let loss = (w.as_tensor().sqr().unwrap() * 0.5).unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        let mut opt = AdamW::new(&params, 0.0).unwrap();
        assert_eq!(opt.step(&params, &grads, 0.01, 0.1).unwrap(), 5.0);
        let scale = 0.1 / (5.0 + 1e-6);
        let want = [(0.001 * (3.0 * scale) * (3.0 * scale)) as f32, (0.001 * (4.0 * scale) * (4.0 * scale)) as f32];
        assert!((opt.slots[0].v[0] - want[0]).abs() < 1e-9 && (opt.slots[0].v[1] - want[1]).abs() < 1e-9);
    }
}
