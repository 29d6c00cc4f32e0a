//! The head's cross-entropy, fused: one pass per row turns logits into the loss and,
//! in place, into its gradient.
//!
//! ```text
//! loss_r = log Σ_j exp(z_rj) − z_r,target         ∂loss_r/∂z_r = softmax(z_r) − onehot(target)
//! ```

use rayon::prelude::*;

/// Sums the cross-entropy of each `[vocab]` row of `logits` against its target, in row
/// order. With `grad_scale`, each row becomes `scale · (softmax − onehot(target))`.
pub fn cross_entropy(logits: &mut [f32], vocab: usize, targets: &[u32], grad_scale: Option<f32>) -> f64 {
    assert_eq!(logits.len(), vocab * targets.len());
    let losses: Vec<f64> = logits
        .par_chunks_mut(vocab.max(1))
        .zip(targets.par_iter())
        .map(|(row, &t)| {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let sum: f32 = row.iter().map(|&z| (z - max).exp()).sum();
            let lse = max + sum.ln();
            let loss = (lse - row[t as usize]) as f64;
            if let Some(scale) = grad_scale {
                row.iter_mut().for_each(|z| *z = (*z - lse).exp() * scale);
                row[t as usize] -= scale;
            }
            loss
        })
        .collect();
    losses.iter().sum()
}
