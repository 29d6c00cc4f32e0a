//! AdamW with global gradient-norm clipping, updating weights in place on all threads.
//!
//! The arithmetic is PyTorch's `torch.optim.AdamW` after `clip_grad_norm_`, in f32 and in
//! PyTorch's order (decoupled decay first, then `w −= (lr / bc₁) · m / (√v / √bc₂ + ε)`),
//! one pass over each weight. The gradients are read, never zeroed: the engine's next
//! backward pass overwrites them (the update is memory-bound, and zeroing would be one
//! more pass over memory). Work is cut into fixed
//! chunks, and the norm (f64) sums the chunks' partial sums in order, so the update never
//! depends on the thread count.

use rayon::prelude::*;

use super::zeros;

const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const EPS: f32 = 1e-8;
const CHUNK: usize = 1 << 15;

/// AdamW state for a list of weights.
pub struct AdamW {
    m: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    decay: Vec<bool>,
    weight_decay: f64,
    t: i32,
}

impl AdamW {
    /// Fresh state for weights of the given sizes; `decay[i]` says whether weight `i` is
    /// decayed (matrices and embeddings are, biases and norm gains are not).
    pub fn new(sizes: &[usize], decay: Vec<bool>, weight_decay: f64) -> Self {
        assert_eq!(sizes.len(), decay.len());
        AdamW {
            m: sizes.iter().map(|&n| zeros(n)).collect(),
            v: sizes.iter().map(|&n| zeros(n)).collect(),
            decay,
            weight_decay,
            t: 0,
        }
    }

    /// The second moment of weight `i` (tests).
    pub fn second_moment(&self, i: usize) -> &[f32] {
        &self.v[i]
    }

    /// One update with learning rate `lr` after scaling the gradients so that their global
    /// L2 norm is at most `clip` (none when `clip` ≤ 0). A weight whose gradient is empty
    /// has none and is left alone. Returns the norm before clipping.
    pub fn step(&mut self, weights: &mut [Vec<f32>], grads: &[Vec<f32>], lr: f64, clip: f64) -> f64 {
        assert_eq!(weights.len(), self.m.len());
        let norm = global_norm(grads);
        let scale = if clip > 0.0 { (clip / (norm + 1e-6)).min(1.0) } else { 1.0 };
        self.t += 1;
        let (bc1, bc2) = (1.0 - BETA1.powi(self.t), 1.0 - BETA2.powi(self.t));
        let (step_size, bc2_sqrt) = ((lr / bc1) as f32, bc2.sqrt() as f32);
        let (b1, b2, scale) = (BETA1 as f32, BETA2 as f32, scale as f32);
        let mut work = Vec::new();
        let state = self.m.iter_mut().zip(self.v.iter_mut()).zip(&self.decay);
        for ((w, g), ((m, v), &decayed)) in weights.iter_mut().zip(grads.iter()).zip(state) {
            if g.is_empty() {
                continue;
            }
            let decay = if decayed { (1.0 - lr * self.weight_decay) as f32 } else { 1.0 };
            let chunks = w.chunks_mut(CHUNK).zip(g.chunks(CHUNK)).zip(m.chunks_mut(CHUNK).zip(v.chunks_mut(CHUNK)));
            work.extend(chunks.map(|((w, g), (m, v))| (w, g, m, v, decay)));
        }
        work.into_par_iter().for_each(|(w, g, m, v, decay)| {
            for (((w, &g), m), v) in w.iter_mut().zip(g.iter()).zip(m).zip(v) {
                let grad = g * scale;
                *m += (grad - *m) * (1.0 - b1);
                *v = *v * b2 + grad * grad * (1.0 - b2);
                *w = *w * decay - step_size * *m / (v.sqrt() / bc2_sqrt + EPS);
            }
        });
        norm
    }
}

/// The L2 norm of all gradients together.
pub fn global_norm(grads: &[Vec<f32>]) -> f64 {
    let chunks: Vec<&[f32]> = grads.iter().flat_map(|g| g.chunks(CHUNK)).collect();
    let partial: Vec<f64> = chunks.par_iter().map(|c| c.iter().map(|&x| x as f64 * x as f64).sum::<f64>()).collect();
    partial.iter().sum::<f64>().sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_step_matches_pytorch_adamw() {
        // torch.optim.AdamW([w], lr=0.1, weight_decay=0.5) with w = [[1, -2]], grad [[0.5, 0.25]]:
        // w·(1 − 0.05) − 0.1·sign(g)·(1 − tiny) = [0.85, −2.0]; norm 0.559 < clip.
        let mut opt = AdamW::new(&[2], vec![true], 0.5);
        let (mut w, mut g) = (vec![vec![1f32, -2.]], vec![vec![0.5f32, 0.25]]);
        let norm = opt.step(&mut w, &mut g, 0.1, 1.0);
        assert!((norm - 0.3125f64.sqrt()).abs() < 1e-7);
        assert!((w[0][0] - 0.85).abs() < 1e-6 && (w[0][1] + 2.0).abs() < 1e-6, "{w:?}");
    }

    #[test]
    fn clipping_scales_the_gradient_to_the_given_norm() {
        // With clip 0.1 the step uses g·0.1/|g|; Adam's first step is still ±lr (sign), so
        // check the second moment instead: v = (1 − β2)·(g·scale)².
        let mut opt = AdamW::new(&[2], vec![false], 0.0);
        let (mut w, mut g) = (vec![vec![3f32, 4.]], vec![vec![3f32, 4.]]);
        assert_eq!(opt.step(&mut w, &mut g, 0.01, 0.1), 5.0);
        let scale = 0.1 / (5.0 + 1e-6);
        let want = [(0.001 * (3.0 * scale) * (3.0 * scale)) as f32, (0.001 * (4.0 * scale) * (4.0 * scale)) as f32];
        let v = opt.second_moment(0);
        assert!((v[0] - want[0]).abs() < 1e-9 && (v[1] - want[1]).abs() < 1e-9);
    }
}
