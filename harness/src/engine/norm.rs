//! RMSNorm and LayerNorm, forward and backward, one pass over the rows each.
//!
//! ```text
//! RMSNorm:   x̂ = x · r,          r = 1/√(mean(x²) + ε),      y = x̂ ⊙ w
//! LayerNorm: x̂ = (x − μ) · r,    r = 1/√(var(x) + ε),        y = x̂ ⊙ w + b   (biased variance)
//! backward, with g = dy ⊙ w:
//!   RMSNorm:   dx = r · (g − x̂ · mean(g ⊙ x̂))
//!   LayerNorm: dx = r · (g − mean(g) − x̂ · mean(g ⊙ x̂))
//!   dw = Σ_rows dy ⊙ x̂,  db = Σ_rows dy
//! ```
//! The forward pass keeps `(r, μ)` per row; that and the input are all the backward needs.

use rayon::prelude::*;

use super::rows::{ROWS, zip_rows_sum};

pub(crate) use crate::model::plan::NormKind;

/// `y = norm(x)` for `[rows, d]` inputs; `stats` receives `(r, μ)` per row.
pub(crate) fn forward(kind: NormKind, x: &[f32], w: &[f32], b: Option<&[f32]>, eps: f32, y: &mut [f32], stats: &mut [f32]) {
    let d = w.len();
    let blocks = y.par_chunks_mut(d * ROWS).zip(stats.par_chunks_mut(2 * ROWS)).zip(x.par_chunks(d * ROWS));
    blocks.for_each(|((y, stats), x)| {
        for ((y, x), stats) in y.chunks_mut(d).zip(x.chunks(d)).zip(stats.chunks_mut(2)) {
            let mean = match kind {
                NormKind::Rms => 0.0,
                NormKind::Layer => x.iter().sum::<f32>() / d as f32,
            };
            let var = x.iter().map(|&v| (v - mean) * (v - mean)).sum::<f32>() / d as f32;
            let rstd = 1.0 / (var + eps).sqrt();
            for (i, (y, &v)) in y.iter_mut().zip(x).enumerate() {
                *y = (v - mean) * rstd * w[i] + b.map_or(0.0, |b| b[i]);
            }
            stats.copy_from_slice(&[rstd, mean]);
        }
    });
}

/// `dx += ∂L/∂x`, `dw += ∂L/∂w` and `db += ∂L/∂b` given `dy` and the forward's input and
/// statistics.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward(
    kind: NormKind,
    dy: &[f32],
    x: &[f32],
    stats: &[f32],
    w: &[f32],
    dx: &mut [f32],
    dw: &mut [f32],
    db: Option<&mut [f32]>,
) {
    let d = w.len();
    // The weight and bias gradients are summed together: [dw | db] per block.
    let mut acc = vec![0f32; 2 * d];
    zip_rows_sum(dx, d, dy, d, &mut acc, |first, dx, dy, partial| {
        let (pw, pb) = partial.split_at_mut(d);
        for (r, (dx, dy)) in dx.chunks_mut(d).zip(dy.chunks(d)).enumerate() {
            let row = first + r;
            let (rstd, mean) = (stats[2 * row], stats[2 * row + 1]);
            let x = &x[row * d..(row + 1) * d];
            let (mut sum_g, mut sum_gx) = (0f32, 0f32);
            for i in 0..d {
                let xhat = (x[i] - mean) * rstd;
                let g = dy[i] * w[i];
                sum_g += g;
                sum_gx += g * xhat;
                pw[i] += dy[i] * xhat;
                pb[i] += dy[i];
            }
            let mean_g = if kind == NormKind::Layer { sum_g / d as f32 } else { 0.0 };
            let mean_gx = sum_gx / d as f32;
            for i in 0..d {
                let xhat = (x[i] - mean) * rstd;
                dx[i] += rstd * (dy[i] * w[i] - mean_g - xhat * mean_gx);
            }
        }
    });
    for (w, a) in dw.iter_mut().zip(&acc[..d]) {
        *w += a;
    }
    if let Some(db) = db {
        for (b, a) in db.iter_mut().zip(&acc[d..]) {
            *b += a;
        }
    }
}
