//! The MLP activations and rotary embeddings, forward and backward, in place where the
//! backward allows it.
//!
//! ```text
//! gated MLP (llama):  m = act(g) ⊙ u        dg = dm ⊙ u ⊙ act'(g),  du = dm ⊙ act(g)
//! plain MLP:          m = act(p)            dp = dm ⊙ act'(p)
//! RoPE, per head, halves a|b rotated by θ_j = pos · base^(−2j/d):
//!   forward   a' = a cos − b sin,   b' = b cos + a sin
//!   backward  da = da' cos + db' sin,  db = db' cos − da' sin   (the inverse rotation)
//! ```

use rayon::prelude::*;

use crate::model::Activation;
use crate::model::fused::{GeluTanh, Pointwise, Silu};

const CHUNK: usize = 1 << 14;

/// `act(x)` and `act'(x)`.
fn act(kind: Activation, x: f32) -> (f32, f32) {
    match kind {
        Activation::Silu => (Silu::value(x), Silu::derivative(x)),
        Activation::GeluTanh => (GeluTanh::value(x), GeluTanh::derivative(x)),
        Activation::GeluErf => {
            let cdf = 0.5 * (1.0 + libm::erff(x * std::f32::consts::FRAC_1_SQRT_2));
            let pdf = (-0.5 * x * x).exp() * 0.398_942_3;
            (x * cdf, cdf + x * pdf)
        }
        Activation::Relu => {
            if x > 0.0 {
                (x, 1.0)
            } else {
                (0.0, 0.0)
            }
        }
    }
}

/// `m = act(g) ⊙ u`.
pub(crate) fn gated_forward(kind: Activation, g: &[f32], u: &[f32], m: &mut [f32]) {
    m.par_chunks_mut(CHUNK).zip(g.par_chunks(CHUNK).zip(u.par_chunks(CHUNK))).for_each(|(m, (g, u))| {
        for ((m, &g), &u) in m.iter_mut().zip(g).zip(u) {
            *m = act(kind, g).0 * u;
        }
    });
}

/// Given `dm`, turns `g` into `dg` and `u` into `du`, in place.
pub(crate) fn gated_backward(kind: Activation, dm: &[f32], g: &mut [f32], u: &mut [f32]) {
    g.par_chunks_mut(CHUNK).zip(u.par_chunks_mut(CHUNK).zip(dm.par_chunks(CHUNK))).for_each(|(g, (u, dm))| {
        for ((g, u), &dm) in g.iter_mut().zip(u).zip(dm) {
            let (a, da) = act(kind, *g);
            *g = dm * *u * da;
            *u = dm * a;
        }
    });
}

/// `m = act(p)`.
pub(crate) fn plain_forward(kind: Activation, p: &[f32], m: &mut [f32]) {
    m.par_chunks_mut(CHUNK).zip(p.par_chunks(CHUNK)).for_each(|(m, p)| {
        for (m, &p) in m.iter_mut().zip(p) {
            *m = act(kind, p).0;
        }
    });
}

/// Given `dm`, turns `p` into `dp`, in place.
pub(crate) fn plain_backward(kind: Activation, dm: &[f32], p: &mut [f32]) {
    p.par_chunks_mut(CHUNK).zip(dm.par_chunks(CHUNK)).for_each(|(p, dm)| {
        for (p, &dm) in p.iter_mut().zip(dm) {
            *p = dm * act(kind, *p).1;
        }
    });
}

/// `cos θ` and `sin θ` per position `0..seq` and frequency `j < head_dim/2`, `[seq, half]`
/// each, computed as `ops::rope_tables` does (f32 products of f32 frequencies).
pub(crate) struct Rope {
    /// Positions covered.
    pub seq: usize,
    half: usize,
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl Rope {
    pub fn new(seq: usize, head_dim: usize, base: f64) -> Self {
        let half = head_dim / 2;
        let inv: Vec<f32> = (0..half).map(|j| (1.0 / base.powf(2.0 * j as f64 / head_dim as f64)) as f32).collect();
        let (mut cos, mut sin) = (Vec::with_capacity(seq * half), Vec::with_capacity(seq * half));
        for p in 0..seq {
            for &f in &inv {
                let theta = p as f32 * f;
                cos.push(theta.cos());
                sin.push(theta.sin());
            }
        }
        Rope { seq, half, cos, sin }
    }

    /// Rotates the first `heads` heads of every row of `x` (`[batch·seq, width]`, row `t`
    /// at position `t mod seq`) forward, or back (`inverse`, the backward pass).
    pub fn apply(&self, x: &mut [f32], width: usize, seq: usize, heads: usize, inverse: bool) {
        let (half, sign) = (self.half, if inverse { -1.0 } else { 1.0 });
        x.par_chunks_mut(width).enumerate().for_each(|(t, row)| {
            let p = t % seq;
            let (cos, sin) = (&self.cos[p * half..(p + 1) * half], &self.sin[p * half..(p + 1) * half]);
            for head in row[..heads * 2 * half].chunks_mut(2 * half) {
                let (a, b) = head.split_at_mut(half);
                for j in 0..half {
                    let (x, y, s) = (a[j], b[j], sign * sin[j]);
                    a[j] = x * cos[j] - y * s;
                    b[j] = y * cos[j] + x * s;
                }
            }
        });
    }
}
