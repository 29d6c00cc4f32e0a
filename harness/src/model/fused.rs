//! Fused CPU kernels with a real backward pass, for the ops that dominate a training step
//! when written from candle's elementwise primitives (each primitive is a full pass over
//! memory, and its backward several more).
//!
//! Each op is a candle `CustomOp1` whose `bwd` is itself one fused pass. They are used on
//! CPU with f32 tensors; anywhere else [`super::ops`] falls back to the composite forms,
//! which are also the reference the tests check these against.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor, bail};
use rayon::prelude::*;

/// Elements per parallel work item (big enough to amortise scheduling).
const CHUNK: usize = 1 << 14;

fn contiguous<'a>(storage: &'a CpuStorage, layout: &Layout, op: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(values) = storage else { bail!("{op}: expected f32 values") };
    let Some((start, end)) = layout.contiguous_offsets() else { bail!("{op}: expected a contiguous tensor") };
    Ok(&values[start..end])
}

/// `out[i] = f(a[i])`, in parallel.
fn map1(a: &[f32], f: impl Fn(f32) -> f32 + Sync) -> Vec<f32> {
    let mut out = vec![0f32; a.len()];
    out.par_chunks_mut(CHUNK).zip(a.par_chunks(CHUNK)).for_each(|(o, a)| {
        o.iter_mut().zip(a).for_each(|(o, &x)| *o = f(x));
    });
    out
}

/// `out[i] = f(a[i], b[i])`, in parallel.
fn map2(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) -> Vec<f32> {
    let mut out = vec![0f32; a.len()];
    out.par_chunks_mut(CHUNK).zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK))).for_each(|(o, (a, b))| {
        o.iter_mut().zip(a.iter().zip(b)).for_each(|(o, (&x, &g))| *o = f(x, g));
    });
    out
}

/// An elementwise function with its derivative (also the training engine's activations).
pub(crate) trait Pointwise: Send + Sync + Copy + 'static {
    const NAME: &'static str;
    fn value(x: f32) -> f32;
    fn derivative(x: f32) -> f32;
}

#[derive(Clone, Copy)]
struct Elementwise<F>(F);

impl<F: Pointwise> CustomOp1 for Elementwise<F> {
    fn name(&self) -> &'static str {
        F::NAME
    }
    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous(storage, layout, F::NAME)?;
        Ok((CpuStorage::F32(map1(x, F::value)), layout.shape().clone()))
    }
    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(arg.apply_op2_no_bwd(&grad.contiguous()?, &ElementwiseGrad(self.0))?))
    }
}

#[derive(Clone, Copy)]
struct ElementwiseGrad<F>(F);

impl<F: Pointwise> CustomOp2 for ElementwiseGrad<F> {
    fn name(&self) -> &'static str {
        F::NAME
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, g) = (contiguous(s1, l1, F::NAME)?, contiguous(s2, l2, F::NAME)?);
        Ok((CpuStorage::F32(map2(x, g, |x, g| g * F::derivative(x))), l1.shape().clone()))
    }
}

/// GELU, tanh approximation: `½x(1 + tanh(u))`, `u = c(x + 0.044715x³)`, `c = √(2/π)`,
/// computed as `x·σ(2u)` (the same function: `½(1 + tanh u) = σ(2u)`), which needs one
/// `exp` instead of a `tanh`.
#[derive(Clone, Copy)]
pub(crate) struct GeluTanh;

const GELU_C: f32 = 0.797_884_6;
const GELU_A: f32 = 0.044_715;

impl Pointwise for GeluTanh {
    const NAME: &'static str = "fused-gelu-tanh";
    fn value(x: f32) -> f32 {
        let u2 = 2.0 * GELU_C * (x + GELU_A * x * x * x);
        x / (1.0 + (-u2).exp())
    }
    fn derivative(x: f32) -> f32 {
        let u2 = 2.0 * GELU_C * (x + GELU_A * x * x * x);
        let s = 1.0 / (1.0 + (-u2).exp());
        s + x * s * (1.0 - s) * 2.0 * GELU_C * (1.0 + 3.0 * GELU_A * x * x)
    }
}

/// SiLU: `x · σ(x)`.
#[derive(Clone, Copy)]
pub(crate) struct Silu;

impl Pointwise for Silu {
    const NAME: &'static str = "fused-silu";
    fn value(x: f32) -> f32 {
        x / (1.0 + (-x).exp())
    }
    fn derivative(x: f32) -> f32 {
        let s = 1.0 / (1.0 + (-x).exp());
        s * (1.0 + x * (1.0 - s))
    }
}

/// Fused GELU (tanh approximation) of a contiguous f32 CPU tensor.
pub fn gelu_tanh(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(Elementwise(GeluTanh))
}

/// Fused SiLU of a contiguous f32 CPU tensor.
pub fn silu(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(Elementwise(Silu))
}

/// Softmax over the last axis; backward `dx = y ⊙ (g − Σ g ⊙ y)` row by row.
#[derive(Clone, Copy)]
struct Softmax;

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "fused-softmax"
    }
    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous(storage, layout, "fused-softmax")?;
        let n = layout.shape().dims().last().copied().unwrap_or(1).max(1);
        let mut out = vec![0f32; x.len()];
        let rows = (CHUNK / n).max(1) * n;
        out.par_chunks_mut(rows).zip(x.par_chunks(rows)).for_each(|(o, x)| {
            for (o, x) in o.chunks_mut(n).zip(x.chunks(n)) {
                let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0f32;
                for (o, &v) in o.iter_mut().zip(x) {
                    *o = (v - max).exp();
                    sum += *o;
                }
                let inv = 1.0 / sum;
                o.iter_mut().for_each(|o| *o *= inv);
            }
        });
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(res.apply_op2_no_bwd(&grad.contiguous()?, &SoftmaxGrad)?))
    }
}

#[derive(Clone, Copy)]
struct SoftmaxGrad;

impl CustomOp2 for SoftmaxGrad {
    fn name(&self) -> &'static str {
        "fused-softmax-grad"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (y, g) = (contiguous(s1, l1, "fused-softmax-grad")?, contiguous(s2, l2, "fused-softmax-grad")?);
        let n = l1.shape().dims().last().copied().unwrap_or(1).max(1);
        let mut out = vec![0f32; y.len()];
        let rows = (CHUNK / n).max(1) * n;
        out.par_chunks_mut(rows).zip(y.par_chunks(rows).zip(g.par_chunks(rows))).for_each(|(o, (y, g))| {
            for ((o, y), g) in o.chunks_mut(n).zip(y.chunks(n)).zip(g.chunks(n)) {
                let dot: f32 = y.iter().zip(g).map(|(y, g)| y * g).sum();
                for ((o, &y), &g) in o.iter_mut().zip(y).zip(g) {
                    *o = y * (g - dot);
                }
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// Fused softmax over the last axis of an f32 CPU tensor.
pub fn softmax(x: &Tensor) -> Result<Tensor> {
    x.contiguous()?.apply_op1(Softmax)
}

/// Per-row cross-entropy `−log softmax(logits)[target]` of `[n, vocab]` logits; backward
/// `(softmax − onehot(target)) · g` in the same pass structure. The targets (u32) get no
/// gradient.
#[derive(Clone, Copy)]
struct CrossEntropy;

impl CustomOp2 for CrossEntropy {
    fn name(&self) -> &'static str {
        "fused-cross-entropy"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous(s1, l1, "fused-cross-entropy")?;
        let targets = targets(s2, l2)?;
        let n = l1.shape().dims().last().copied().unwrap_or(1).max(1);
        let mut out = vec![0f32; targets.len()];
        out.par_iter_mut().zip(x.par_chunks(n).zip(targets.par_iter())).for_each(|(o, (row, &t))| {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let sum: f32 = row.iter().map(|&v| (v - max).exp()).sum();
            *o = max + sum.ln() - row[t as usize];
        });
        Ok((CpuStorage::F32(out), Shape::from(targets.len())))
    }
    fn bwd(&self, logits: &Tensor, targets: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = Tensor::cat(&[&grad.unsqueeze(1)?.to_dtype(candle_core::DType::F32)?, &targets.to_dtype(candle_core::DType::F32)?.unsqueeze(1)?], 1)?;
        Ok((Some(logits.apply_op2_no_bwd(&g, &CrossEntropyGrad)?), None))
    }
}

fn targets<'a>(storage: &'a CpuStorage, layout: &Layout) -> Result<&'a [u32]> {
    let CpuStorage::U32(values) = storage else { bail!("fused-cross-entropy: targets must be u32") };
    let Some((start, end)) = layout.contiguous_offsets() else { bail!("fused-cross-entropy: targets must be contiguous") };
    Ok(&values[start..end])
}

/// Gradient of [`CrossEntropy`]: the second input holds `[g, target]` per row.
#[derive(Clone, Copy)]
struct CrossEntropyGrad;

impl CustomOp2 for CrossEntropyGrad {
    fn name(&self) -> &'static str {
        "fused-cross-entropy-grad"
    }
    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
        let (x, gt) = (contiguous(s1, l1, "fused-cross-entropy-grad")?, contiguous(s2, l2, "fused-cross-entropy-grad")?);
        let n = l1.shape().dims().last().copied().unwrap_or(1).max(1);
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(n).zip(x.par_chunks(n).zip(gt.par_chunks(2))).for_each(|(o, (row, gt))| {
            let (g, t) = (gt[0], gt[1] as usize);
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0f32;
            for (o, &v) in o.iter_mut().zip(row) {
                *o = (v - max).exp();
                sum += *o;
            }
            let scale = g / sum;
            o.iter_mut().for_each(|o| *o *= scale);
            o[t] -= g;
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// Per-row cross-entropy of `[n, vocab]` f32 CPU logits against u32 targets `[n]`.
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    logits.contiguous()?.apply_op2(&targets.contiguous()?, CrossEntropy)
}

/// Whether the fused kernels apply to `x` (f32 on the CPU).
pub fn applies(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == candle_core::DType::F32
}
