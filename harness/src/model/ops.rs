//! Differentiable building blocks.
//!
//! candle's fused `softmax_last_dim`, `layer_norm`, `rms_norm`, `rope` and `sdpa` have no
//! backward pass: gradients through them are silently dropped (SPEC §5.1). Everything
//! here is written from ops that candle differentiates, and the model tests assert that
//! every weight receives a gradient.

use candle_core::{D, DType, Device, Result, Tensor};

/// Additive attention bias for masked positions. Finite, so a row with every key masked
/// (a left-padding query) gives a uniform distribution instead of NaN.
pub const MASKED: f32 = f32::MIN;

/// `softmax(x)` over the last dimension: `exp(x − max) / Σ exp(x − max)` (fused on CPU).
pub fn softmax(x: &Tensor) -> Result<Tensor> {
    if super::fused::applies(x) { super::fused::softmax(x) } else { softmax_composite(x) }
}

/// [`softmax`] from candle primitives (other devices; the fused kernel's reference).
pub fn softmax_composite(x: &Tensor) -> Result<Tensor> {
    // The shift does not change the value, so it needs no gradient.
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

/// `log softmax(x)` over the last dimension: `x − max − log Σ exp(x − max)`.
pub fn log_softmax(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let shifted = x.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    shifted.broadcast_sub(&lse)
}

/// Per-row cross-entropy `−log softmax(logits)[target]` of `[n, vocab]` logits (fused on
/// CPU).
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    if super::fused::applies(logits) {
        return super::fused::cross_entropy(logits, targets);
    }
    log_softmax(logits)?.gather(&targets.unsqueeze(D::Minus1)?, D::Minus1)?.squeeze(D::Minus1)?.neg()
}

/// RMSNorm: `x / sqrt(mean(x²) + eps) · w`.
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    let inv = (x.sqr()?.mean_keepdim(D::Minus1)? + eps)?.sqrt()?.recip()?;
    x.broadcast_mul(&inv)?.broadcast_mul(weight)
}

/// LayerNorm: `(x − mean) / sqrt(var + eps) · w + b` (biased variance, as PyTorch).
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    let centred = x.broadcast_sub(&x.mean_keepdim(D::Minus1)?)?;
    let inv = (centred.sqr()?.mean_keepdim(D::Minus1)? + eps)?.sqrt()?.recip()?;
    centred.broadcast_mul(&inv)?.broadcast_mul(weight)?.broadcast_add(bias)
}

/// GELU, tanh approximation: `½x(1 + tanh(√(2/π)(x + 0.044715x³)))` (fused on CPU).
pub fn gelu_tanh(x: &Tensor) -> Result<Tensor> {
    if super::fused::applies(x) { super::fused::gelu_tanh(x) } else { x.gelu() }
}

/// SiLU `x·σ(x)` (fused on CPU).
pub fn silu(x: &Tensor) -> Result<Tensor> {
    if super::fused::applies(x) { super::fused::silu(x) } else { x.silu() }
}

/// `cos` and `sin` tables for rotary embeddings at the given positions:
/// `θ_j = pos · base^(−2j/d)`, each `[batch, 1, seq, d]` with the half-table repeated
/// (Hugging Face's layout, which rotates the two halves of a head against each other).
pub fn rope_tables(positions: &Tensor, head_dim: usize, base: f64) -> Result<(Tensor, Tensor)> {
    let half = head_dim / 2;
    let inv_freq: Vec<f32> =
        (0..half).map(|j| (1.0 / base.powf(2.0 * j as f64 / head_dim as f64)) as f32).collect();
    let inv_freq = Tensor::from_vec(inv_freq, (1, 1, half), positions.device())?;
    let pos = positions.to_dtype(DType::F32)?.unsqueeze(D::Minus1)?;
    let freqs = pos.broadcast_mul(&inv_freq)?;
    let freqs = Tensor::cat(&[&freqs, &freqs], D::Minus1)?.unsqueeze(1)?;
    Ok((freqs.cos()?, freqs.sin()?))
}

/// Rotary embedding `x·cos + rotate_half(x)·sin`, with `rotate_half([a, b]) = [−b, a]`.
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let half = x.dim(D::Minus1)? / 2;
    let a = x.narrow(D::Minus1, 0, half)?;
    let b = x.narrow(D::Minus1, half, half)?;
    let rotated = Tensor::cat(&[&b.neg()?, &a], D::Minus1)?;
    x.broadcast_mul(cos)? + rotated.broadcast_mul(sin)?
}

/// Scaled dot-product attention with an additive bias:
/// `softmax(q kᵀ · scale + bias) v`, where `k` and `v` have `heads / groups` heads, each
/// shared by `groups` query heads. Shapes: q `[b, h, s, d]`, k/v `[b, h/groups, t, d]`,
/// bias broadcastable to `[b, h, s, t]`.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, bias: &Tensor, scale: f64, groups: usize) -> Result<Tensor> {
    // Batched matmul wants each head's rows contiguous (heads come from a transpose).
    let (q, k, v) = (q.contiguous()?, repeat_kv(k, groups)?.contiguous()?, repeat_kv(v, groups)?.contiguous()?);
    let scores = (q.matmul(&k.t()?)? * scale)?.broadcast_add(bias)?;
    softmax(&scores)?.matmul(&v)
}

/// Repeats each key/value head `groups` times along the head axis.
fn repeat_kv(x: &Tensor, groups: usize) -> Result<Tensor> {
    if groups == 1 {
        return Ok(x.clone());
    }
    let (b, kv, t, d) = x.dims4()?;
    x.unsqueeze(2)?.expand((b, kv, groups, t, d))?.reshape((b, kv * groups, t, d))
}

/// The additive attention bias `[b, 1, s, past + s]`: query `i` (at absolute position
/// `past + i`) may see key `j` iff `j ≤ past + i` and `key_mask[j] = 1`.
pub fn attention_bias(key_mask: &[Vec<u8>], seq: usize, device: &Device) -> Result<Tensor> {
    let b = key_mask.len();
    let total = key_mask.first().map_or(seq, Vec::len);
    let past = total - seq;
    let mut bias = vec![0f32; b * seq * total];
    for (r, mask) in key_mask.iter().enumerate() {
        for i in 0..seq {
            let row = &mut bias[(r * seq + i) * total..(r * seq + i + 1) * total];
            for (j, slot) in row.iter_mut().enumerate() {
                if j > past + i || mask[j] == 0 {
                    *slot = MASKED;
                }
            }
        }
    }
    Tensor::from_vec(bias, (b, 1, seq, total), device)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &Tensor, b: &[f32], tol: f32) {
        let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= tol, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn formulas_match_hand_computed_values() {
        let dev = Device::Cpu;
        let x = Tensor::new(&[[1f32, 2., 3.], [1000., 1000., 1000.]], &dev).unwrap();
        // softmax([1,2,3]) = e^i / (e + e² + e³)
        let z = 1f32.exp() + 2f32.exp() + 3f32.exp();
        close(&softmax(&x).unwrap(), &[1f32.exp() / z, 2f32.exp() / z, 3f32.exp() / z, 1. / 3., 1. / 3., 1. / 3.], 1e-6);
        close(
            &log_softmax(&x).unwrap(),
            &[1. - z.ln(), 2. - z.ln(), 3. - z.ln(), -(3f32.ln()), -(3f32.ln()), -(3f32.ln())],
            1e-5,
        );
        // rms([1,2,3]) = sqrt(14/3)
        let w = Tensor::new(&[1f32, 2., 1.], &dev).unwrap();
        let r = (14f32 / 3.).sqrt();
        close(&rms_norm(&x.narrow(0, 0, 1).unwrap(), &w, 0.).unwrap(), &[1. / r, 4. / r, 3. / r], 1e-6);
        // layer norm of [1,2,3]: mean 2, var 2/3
        let b = Tensor::new(&[0f32, 1., 0.], &dev).unwrap();
        let s = (2f32 / 3.).sqrt();
        close(&layer_norm(&x.narrow(0, 0, 1).unwrap(), &w, &b, 0.).unwrap(), &[-1. / s, 1., 1. / s], 1e-6);
    }

    #[test]
    fn fused_kernels_match_the_composite_forms_in_value_and_gradient() {
        use candle_core::Var;
        let dev = Device::Cpu;
        let x = Var::from_tensor(&(Tensor::randn(0f32, 3.0, (4, 7, 33), &dev).unwrap())).unwrap();
        let w = Tensor::randn(0f32, 1.0, (4, 7, 33), &dev).unwrap();
        type Op = fn(&Tensor) -> Result<Tensor>;
        let pairs: [(&str, Op, Op); 3] = [
            ("softmax", super::super::fused::softmax, softmax_composite),
            ("gelu", super::super::fused::gelu_tanh, |x| x.gelu()),
            ("silu", super::super::fused::silu, |x| x.silu()),
        ];
        for (name, fused, reference) in pairs {
            let run = |f: Op| {
                let y = f(x.as_tensor()).unwrap();
                let loss = (&y * &w).unwrap().sum_all().unwrap();
                let g = loss.backward().unwrap().get(x.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
                (y.flatten_all().unwrap().to_vec1::<f32>().unwrap(), g)
            };
            let ((y1, g1), (y2, g2)) = (run(fused), run(reference));
            let diff = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(diff(&y1, &y2) < 1e-5, "{name} value {}", diff(&y1, &y2));
            assert!(diff(&g1, &g2) < 1e-4, "{name} gradient {}", diff(&g1, &g2));
        }
    }

    #[test]
    fn rope_rotates_pairs_by_position_times_frequency() {
        let dev = Device::Cpu;
        // head_dim 4, base 100: frequencies 1 and 0.1; position 2.
        let pos = Tensor::new(&[[2u32]], &dev).unwrap();
        let (cos, sin) = rope_tables(&pos, 4, 100.0).unwrap();
        let x = Tensor::new(&[1f32, 2., 3., 4.], &dev).unwrap().reshape((1, 1, 1, 4)).unwrap();
        let y = rope(&x, &cos, &sin).unwrap();
        let (a0, a1) = (2f32, 0.2f32);
        // pairs (x0, x2) and (x1, x3) rotate by a0 and a1.
        let want = [
            1. * a0.cos() - 3. * a0.sin(),
            2. * a1.cos() - 4. * a1.sin(),
            3. * a0.cos() + 1. * a0.sin(),
            4. * a1.cos() + 2. * a1.sin(),
        ];
        close(&y, &want, 1e-6);
    }

    #[test]
    fn bias_masks_future_and_padding_keys() {
        let dev = Device::Cpu;
        let bias = attention_bias(&[vec![0, 1, 1]], 2, &dev).unwrap();
        let m = MASKED;
        // past 1 (a padding key): query 0 sees keys ≤ 1, query 1 sees ≤ 2.
        close(&bias, &[m, 0., m, m, 0., 0.], 0.);
    }
}
