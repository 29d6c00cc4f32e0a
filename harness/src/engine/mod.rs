//! The CPU training engine: a decoder's forward and backward passes written out by hand
//! (SPEC §6), so that a training step is its matrix products plus a few fused passes over
//! memory, and nothing else.
//!
//! candle's autograd builds a graph of small ops, each a pass over memory with a fresh
//! allocation, and its backward adds more passes and copies (transposes made contiguous
//! for its matmuls); its elementwise ops run on one thread. Here:
//! - every matrix product reads its operands in place through strides ([`gemm`]): a
//!   transposed weight, one head's columns of the fused q | k | v buffer, a gradient read
//!   as its transpose;
//! - norms ([`norm`]), activations and rotary embeddings ([`pointwise`]), attention
//!   ([`attention`]) and the head's cross-entropy ([`head`]) are one fused pass each,
//!   forward and backward, on all threads;
//! - the forward pass keeps exactly what the backward needs, in buffers reused from step
//!   to step (no allocation churn);
//! - AdamW and gradient clipping update the weights in place on all threads ([`adamw`]).
//!
//! Results never depend on how work is spread over threads except through the matrix
//! products' own blocking: sums over rows add fixed blocks in a fixed order ([`rows`]).
//! The model's families describe themselves as a [`Plan`]; a family or config without
//! one (OPT's post-norm variant) trains through candle's autograd instead, and so does
//! any device other than the CPU. Every op is tested against its composite candle form,
//! and whole-model gradients against PyTorch (`tests/e2e/engine.rs`).

pub mod adamw;
mod attention;
mod gemm;
pub mod head;
mod norm;
mod pointwise;
mod rows;
#[cfg(test)]
mod tests;

use std::collections::HashMap;

use candle_core::Tensor;
use rayon::prelude::*;

use crate::model::plan::{Block, Linear, Mlp, Norm, Plan, Qkv, Stored};
use crate::model::{Model, ModelConfig, ModelError};
pub use adamw::AdamW;
use attention::Heads;
use gemm::{Out, View, matmul_into};
use pointwise::Rope;

/// A model's weights and gradients as flat host buffers, with the forward pass's saved
/// state.
pub struct Engine {
    config: ModelConfig,
    plan: Plan,
    index: HashMap<String, usize>,
    names: Vec<String>,
    shapes: Vec<Vec<usize>>,
    weights: Vec<Vec<f32>>,
    grads: Vec<Vec<f32>>,
    /// Whether each gradient holds this step's contributions; after an optimiser step none
    /// does, and the next backward pass overwrites instead of adding (so nothing has to
    /// zero the gradients: a pass over memory saved per step).
    written: Vec<bool>,
    saved: Saved,
}

/// What the forward pass keeps, per block and after the last one, plus the backward
/// pass's scratch; all reused from step to step.
#[derive(Default)]
struct Saved {
    batch: usize,
    seq: usize,
    ids: Vec<u32>,
    rope: Option<Rope>,
    blocks: Vec<BlockState>,
    /// The residual stream after the last block, its final norm and statistics.
    out: Vec<f32>,
    normed: Vec<f32>,
    stats: Vec<f32>,
    /// Rows picked for the head and their normed states `[n, d]`.
    picked: Vec<usize>,
    head_in: Vec<f32>,
    logits: Vec<f32>,
    /// Backward scratch: the residual gradient, a norm's input gradient, and the
    /// attention's and MLP's.
    d_res: Vec<f32>,
    d_norm: Vec<f32>,
    d_attn: Vec<f32>,
    d_qkv: Vec<f32>,
    d_mlp: Vec<f32>,
}

#[derive(Default)]
struct BlockState {
    /// The block's input (the residual stream) and its attention norm.
    x: Vec<f32>,
    attn_in: Vec<f32>,
    attn_stats: Vec<f32>,
    /// q | k | v after the rotary embedding, the merged heads and each score row's
    /// log-sum-exp.
    qkv: Vec<f32>,
    attn: Vec<f32>,
    lse: Vec<f32>,
    /// The residual stream after attention and its MLP norm.
    mid: Vec<f32>,
    mlp_in: Vec<f32>,
    mlp_stats: Vec<f32>,
    /// The MLP's pre-activation (the gate's, when gated), its up projection (gated) and
    /// the input of its down projection.
    pre: Vec<f32>,
    up: Vec<f32>,
    hidden: Vec<f32>,
}

/// A buffer of exactly `n` values, grown (never shrunk) as needed. Its old values remain:
/// every user writes before reading.
fn buf(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if v.len() < n {
        v.resize(n, 0.0);
    }
    &mut v[..n]
}

impl Engine {
    /// The engine for `model`'s architecture with a copy of its weights, or why the engine
    /// cannot run it (then train through candle's autograd).
    pub fn new(model: &Model) -> Result<Self, String> {
        if !model.device().is_cpu() {
            return Err("the engine runs on the CPU".into());
        }
        let plan = model.plan()?;
        let config = model.config.clone();
        if config.heads % config.kv_heads != 0 {
            return Err("query heads must be a multiple of key/value heads".into());
        }
        let (mut names, mut shapes, mut weights) = (Vec::new(), Vec::new(), Vec::new());
        for (name, var) in model.params.iter() {
            names.push(name.to_owned());
            shapes.push(var.dims().to_vec());
            let values = var.as_tensor().flatten_all().and_then(|t| t.to_vec1::<f32>()).map_err(|e| e.to_string())?;
            weights.push(values);
        }
        let index = names.iter().enumerate().map(|(i, n)| (n.clone(), i)).collect();
        let grads: Vec<Vec<f32>> = weights.iter().map(|w| zeros(w.len())).collect();
        let written = vec![true; grads.len()];
        let engine = Engine { config, plan, index, names, shapes, weights, grads, written, saved: Saved::default() };
        engine.check_plan()?;
        Ok(engine)
    }

    /// Every weight the plan names exists.
    fn check_plan(&self) -> Result<(), String> {
        let mut named = vec![self.plan.tokens.clone(), self.plan.head.clone()];
        named.extend(self.plan.positions.iter().map(|(p, _)| p.clone()));
        for b in &self.plan.blocks {
            for lin in block_linears(b) {
                named.push(lin.weight.clone());
                named.extend(lin.bias.clone());
            }
            for norm in [&b.attn_norm, &b.mlp_norm] {
                named.push(norm.weight.clone());
                named.extend(norm.bias.clone());
            }
        }
        match named.iter().find(|n| !self.index.contains_key(*n)) {
            Some(missing) => Err(format!("the model has no weight `{missing}`")),
            None => Ok(()),
        }
    }

    /// Weight names, in order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The gradient of weight `name` accumulated since the last [`Engine::step`] (stale
    /// after a step, until the next backward pass).
    pub fn grad(&self, name: &str) -> Option<&[f32]> {
        self.index.get(name).map(|&i| self.grads[i].as_slice())
    }

    /// Copies the weights back into `model` (same architecture).
    pub fn store(&self, model: &mut Model) -> Result<(), ModelError> {
        for (name, var) in model.params.iter() {
            let i = self.index[name];
            let t = Tensor::from_slice(&self.weights[i], self.shapes[i].as_slice(), model.device())?;
            var.set(&t)?;
        }
        Ok(())
    }

    /// Every weight as `(name, shape, values)`, copied.
    pub fn named_weights(&self) -> Vec<(String, Vec<usize>, Vec<f32>)> {
        self.names.iter().zip(&self.shapes).zip(&self.weights).map(|((n, s), w)| (n.clone(), s.clone(), w.clone())).collect()
    }

    /// Runs the forward pass over right-padded `rows` up to the final norm, keeping what
    /// the backward pass needs. Rows are padded with `pad` to the longest; positions start
    /// at 0 and attention is causal (padding follows every real token, so no real token
    /// sees one).
    pub fn forward(&mut self, rows: &[Vec<u32>], pad: u32) {
        let (batch, seq) = (rows.len(), rows.iter().map(Vec::len).max().unwrap_or(0));
        let (d, tokens) = (self.config.hidden, batch * seq);
        let s = &mut self.saved;
        s.batch = batch;
        s.seq = seq;
        s.ids.clear();
        for r in rows {
            s.ids.extend(r.iter().copied().chain(std::iter::repeat_n(pad, seq - r.len())));
        }
        if self.plan.rope {
            let stale = s.rope.as_ref().is_none_or(|r| r.seq < seq);
            if stale {
                s.rope = Some(Rope::new(seq, self.config.head_dim, self.config.rope_theta));
            }
        }
        s.blocks.resize_with(self.plan.blocks.len(), BlockState::default);
        // The embeddings, into the first block's input (or the output of a model without blocks).
        let first = match s.blocks.first_mut() {
            Some(b) => &mut b.x,
            None => &mut s.out,
        };
        let x = buf(first, tokens * d);
        let table = &self.weights[self.index[&self.plan.tokens]];
        for (t, row) in x.chunks_mut(d).enumerate() {
            let id = s.ids[t] as usize;
            row.copy_from_slice(&table[id * d..(id + 1) * d]);
        }
        if let Some((name, offset)) = &self.plan.positions {
            let table = &self.weights[self.index[name]];
            for (t, row) in x.chunks_mut(d).enumerate() {
                let p = t % seq + offset;
                row.iter_mut().zip(&table[p * d..(p + 1) * d]).for_each(|(x, &e)| *x += e);
            }
        }
        let heads = self.shape();
        for i in 0..self.plan.blocks.len() {
            let (done, rest) = self.saved.blocks.split_at_mut(i + 1);
            let next = match rest.first_mut() {
                Some(b) => &mut b.x,
                None => &mut self.saved.out,
            };
            let rope = self.saved.rope.as_ref();
            forward_block(
                &self.plan.blocks[i],
                &self.config,
                &self.plan,
                &self.weights,
                &self.index,
                rope,
                heads,
                &mut done[i],
                next,
            );
        }
        let s = &mut self.saved;
        let eps = self.config.norm_eps as f32;
        norm_forward(&self.plan.final_norm, &self.plan, &self.weights, &self.index, eps, &s.out[..tokens * d], &mut s.normed, &mut s.stats);
    }

    fn shape(&self) -> Heads {
        Heads {
            batch: self.saved.batch,
            seq: self.saved.seq,
            heads: self.config.heads,
            kv_heads: self.config.kv_heads,
            dim: self.config.head_dim,
        }
    }

    /// [`Engine::logits`] copied out (on all threads: for a real vocabulary they are
    /// hundreds of megabytes).
    pub fn logits_owned(&mut self, rows: &[usize]) -> Vec<f32> {
        let logits = self.logits(rows);
        let mut out = vec![0f32; logits.len()];
        rows::copy(&mut out, logits);
        out
    }

    /// Logits `[n, vocab]` at token rows `rows` (row `t` of sequence `b` is `b·seq + t`) of
    /// the last forward pass; [`Engine::backward_logits`] takes their gradient.
    pub fn logits(&mut self, rows: &[usize]) -> &[f32] {
        self.pick(rows);
        let (n, d, v) = (rows.len(), self.config.hidden, self.config.vocab_size);
        let head = &self.weights[self.index[&self.plan.head]];
        let s = &mut self.saved;
        matmul_into(buf(&mut s.logits, n * v), View::rows(&s.head_in[..n * d], n, d), View::rows(head, v, d).t(), false);
        &s.logits[..n * v]
    }

    fn pick(&mut self, rows: &[usize]) {
        let d = self.config.hidden;
        let s = &mut self.saved;
        s.picked.clear();
        s.picked.extend_from_slice(rows);
        let picked = buf(&mut s.head_in, rows.len() * d);
        for (dst, &r) in picked.chunks_mut(d).zip(rows) {
            dst.copy_from_slice(&s.normed[r * d..(r + 1) * d]);
        }
    }

    /// Mean next-token cross-entropy at `rows` against `targets` (one per row), and with
    /// `backward` its gradient into every weight. The head runs over blocks of rows small
    /// enough to keep the logits under 64 Mi values.
    pub fn cross_entropy(&mut self, rows: &[usize], targets: &[u32], backward: bool) -> f64 {
        assert_eq!(rows.len(), targets.len());
        let n = rows.len();
        if n == 0 {
            return f64::NAN;
        }
        let (d, v) = (self.config.hidden, self.config.vocab_size);
        let block = ((64 << 20) / v.max(1)).clamp(1, n);
        self.pick(rows);
        let mut total = 0.0;
        let mut d_head_in = vec![0f32; if backward { n * d } else { 0 }];
        let head_idx = self.index[&self.plan.head];
        for start in (0..n).step_by(block) {
            let m = block.min(n - start);
            let s = &mut self.saved;
            let x = View::rows(&s.head_in[..n * d], n, d).row_range(start, m);
            let w = View::rows(&self.weights[head_idx], v, d);
            let logits = buf(&mut s.logits, m * v);
            matmul_into(logits, x, w.t(), false);
            let scale = if backward { Some(1.0 / n as f32) } else { None };
            total += head::cross_entropy(logits, v, &targets[start..start + m], scale);
            if backward {
                let g = View::rows(logits, m, v);
                matmul_into(&mut d_head_in[start * d..(start + m) * d], g, w, false);
                let accumulate = first_write(&mut self.written, head_idx);
                matmul_into(&mut self.grads[head_idx], g.t(), x, accumulate);
            }
        }
        if backward {
            self.backward_from_head(&d_head_in);
        }
        total / n as f64
    }

    /// Back-propagates `d_logits` (`[n, vocab]`, the gradient of the loss with respect to
    /// the logits of the last [`Engine::logits`] call) into every weight's gradient.
    pub fn backward_logits(&mut self, d_logits: &[f32]) {
        let (n, d, v) = (self.saved.picked.len(), self.config.hidden, self.config.vocab_size);
        assert_eq!(d_logits.len(), n * v, "one gradient per logit");
        let head_idx = self.index[&self.plan.head];
        let g = View::rows(d_logits, n, v);
        let mut d_head_in = vec![0f32; n * d];
        matmul_into(&mut d_head_in, g, View::rows(&self.weights[head_idx], v, d), false);
        let accumulate = first_write(&mut self.written, head_idx);
        matmul_into(&mut self.grads[head_idx], g.t(), View::rows(&self.saved.head_in[..n * d], n, d), accumulate);
        self.backward_from_head(&d_head_in);
    }

    /// The backward pass from the gradient of the picked rows' normed states.
    fn backward_from_head(&mut self, d_head_in: &[f32]) {
        let d = self.config.hidden;
        let heads = self.shape();
        let tokens = heads.batch * heads.seq;
        let s = &mut self.saved;
        // Scatter the picked rows' gradient into the whole batch.
        let d_normed = buf(&mut s.d_norm, tokens * d);
        d_normed.fill(0.0);
        for (&r, g) in s.picked.iter().zip(d_head_in.chunks(d)) {
            d_normed[r * d..(r + 1) * d].iter_mut().zip(g).for_each(|(a, &b)| *a += b);
        }
        let d_res = buf(&mut s.d_res, tokens * d);
        d_res.fill(0.0);
        let mut params = Params { weights: &self.weights, grads: &mut self.grads, written: &mut self.written, index: &self.index };
        norm_backward(&self.plan.final_norm, &self.plan, &mut params, &s.d_norm[..tokens * d], &s.out[..tokens * d], &s.stats, d_res);
        for i in (0..self.plan.blocks.len()).rev() {
            let rope = s.rope.as_ref();
            let scratch = Scratch {
                d_res: &mut s.d_res,
                d_norm: &mut s.d_norm,
                d_attn: &mut s.d_attn,
                d_qkv: &mut s.d_qkv,
                d_mlp: &mut s.d_mlp,
            };
            let params = Params { weights: &self.weights, grads: &mut self.grads, written: &mut self.written, index: &self.index };
            backward_block(&self.plan.blocks[i], &self.config, &self.plan, params, rope, heads, &mut s.blocks[i], scratch);
        }
        // The embeddings: each token's row (and each position's) gathers its gradient.
        let d_res = &s.d_res[..tokens * d];
        let positions = self.plan.positions.as_ref().map(|(name, _)| self.index[name]);
        clear_unwritten(&mut self.grads, &mut self.written, [Some(self.index[&self.plan.tokens]), positions]);
        let table = &mut self.grads[self.index[&self.plan.tokens]];
        for (t, g) in d_res.chunks(d).enumerate() {
            let id = s.ids[t] as usize;
            table[id * d..(id + 1) * d].iter_mut().zip(g).for_each(|(a, &b)| *a += b);
        }
        if let Some((name, offset)) = &self.plan.positions {
            let table = &mut self.grads[self.index[name]];
            for (t, g) in d_res.chunks(d).enumerate() {
                let p = t % heads.seq + offset;
                table[p * d..(p + 1) * d].iter_mut().zip(g).for_each(|(a, &b)| *a += b);
            }
        }
    }

    /// Every weight's gradient of the backward passes since the last step (or since the
    /// last call), concatenated in the engine's weight order (a weight no pass reached: 0);
    /// the next backward pass starts from zero. DP-SGD reads per-example gradients so.
    pub fn take_gradient(&mut self) -> Vec<f32> {
        let mut flat = Vec::with_capacity(self.grads.iter().map(Vec::len).sum());
        for (g, written) in self.grads.iter().zip(&self.written) {
            match written {
                true => flat.extend_from_slice(g),
                false => flat.resize(flat.len() + g.len(), 0.0),
            }
        }
        self.written.fill(false);
        flat
    }

    /// Sets every weight's gradient from `flat` (the layout of [`Engine::take_gradient`]),
    /// for the next [`Engine::step`].
    pub fn set_gradient(&mut self, flat: &[f32]) {
        assert_eq!(flat.len(), self.grads.iter().map(Vec::len).sum::<usize>(), "one value per weight");
        let mut at = 0;
        for g in &mut self.grads {
            let n = g.len();
            g.copy_from_slice(&flat[at..at + n]);
            at += n;
        }
        self.written.fill(true);
    }

    /// Fresh AdamW state for these weights: matrices and embeddings are decayed by
    /// `weight_decay`, biases and norm gains are not.
    pub fn optimizer(&self, weight_decay: f64) -> AdamW {
        let sizes: Vec<usize> = self.weights.iter().map(Vec::len).collect();
        AdamW::new(&sizes, self.shapes.iter().map(|s| s.len() >= 2).collect(), weight_decay)
    }

    /// One AdamW update from the accumulated gradients (clipped to global norm `clip`).
    /// The gradients are then stale: the next backward pass overwrites them. Returns the
    /// norm before clipping.
    pub fn step(&mut self, opt: &mut AdamW, lr: f64, clip: f64) -> f64 {
        let norm = opt.step(&mut self.weights, &self.grads, lr, clip);
        self.written.fill(false);
        norm
    }
}

/// `n` zeros written on all threads, so that the pages of a large buffer (gradients,
/// optimiser state) are faulted in when it is made, not in the first step: a zeroed
/// allocation maps them lazily, and faulting in a SmolLM2 student's AdamW state took
/// 0.4–0.9 s of one thread inside the first step.
pub(crate) fn zeros(n: usize) -> Vec<f32> {
    let mut v = Vec::new();
    (0..n).into_par_iter().map(|_| 0.0).collect_into_vec(&mut v);
    v
}

/// Whether a product into gradient `i` adds to it (it already holds this step's
/// contributions) or overwrites it (its first this step); marks it written.
fn first_write(written: &mut [bool], i: usize) -> bool {
    std::mem::replace(&mut written[i], true)
}

/// Zeroes the listed gradients that hold nothing of this step yet (before passes that add
/// into them), and marks them written.
fn clear_unwritten<const N: usize>(grads: &mut [Vec<f32>], written: &mut [bool], which: [Option<usize>; N]) {
    for i in which.into_iter().flatten() {
        if !first_write(written, i) {
            grads[i].fill(0.0);
        }
    }
}

/// Mutable gradients of a weight and of its optional bias (two different buffers).
fn two_grads(grads: &mut [Vec<f32>], w: usize, b: Option<usize>) -> (&mut [f32], Option<&mut [f32]>) {
    match b {
        None => (&mut grads[w], None),
        Some(b) => {
            assert_ne!(w, b);
            let (lo, hi) = grads.split_at_mut(w.max(b));
            let (first, second) = (&mut lo[w.min(b)], &mut hi[0]);
            if w < b { (first, Some(second)) } else { (second, Some(first)) }
        }
    }
}

fn block_linears(b: &Block) -> Vec<&Linear> {
    let mut out = match &b.qkv {
        Qkv::Separate { q, k, v } => vec![q, k, v],
        Qkv::Fused(l) => vec![l],
    };
    out.push(&b.out);
    match &b.mlp {
        Mlp::Gated { gate, up, down } => out.extend([gate, up, down]),
        Mlp::Plain { up, down } => out.extend([up, down]),
    }
    out
}

/// The weights and gradients, by name.
struct Params<'a> {
    weights: &'a [Vec<f32>],
    grads: &'a mut [Vec<f32>],
    written: &'a mut [bool],
    index: &'a HashMap<String, usize>,
}

/// The backward pass's scratch buffers.
struct Scratch<'a> {
    d_res: &'a mut Vec<f32>,
    d_norm: &'a mut Vec<f32>,
    d_attn: &'a mut Vec<f32>,
    d_qkv: &'a mut Vec<f32>,
    d_mlp: &'a mut Vec<f32>,
}

/// A projection's matrix as the right operand of `y = x·M` (`[in, out]`).
fn matrix<'a>(lin: &Linear, weights: &'a [Vec<f32>], index: &HashMap<String, usize>, inputs: usize, outputs: usize) -> View<'a> {
    let w = &weights[index[&lin.weight]];
    match lin.stored {
        Stored::OutIn => View::rows(w, outputs, inputs).t(),
        Stored::InOut => View::rows(w, inputs, outputs),
    }
}

/// `y[:, col..col + out] = x·M + b`, or `y = residual + x·M + b` (then `col` is 0 and `y`
/// has exactly `out` columns).
#[allow(clippy::too_many_arguments)]
fn linear_forward(
    lin: &Linear,
    weights: &[Vec<f32>],
    index: &HashMap<String, usize>,
    x: View,
    y: &mut [f32],
    width: usize,
    col: usize,
    outputs: usize,
    residual: Option<&[f32]>,
) {
    let tokens = y.len() / width;
    let m = matrix(lin, weights, index, x.cols(), outputs);
    let bias = lin.bias.as_ref().map(|b| weights[index[b]].as_slice());
    let accumulate = residual.is_some();
    if let Some(r) = residual {
        rows::copy_plus_row(y, r, bias);
    }
    let out = Out::strided(y, col, tokens, outputs, width);
    // SAFETY: `y` is borrowed mutably for the call.
    unsafe { gemm::matmul(out, x, m, accumulate, gemm::Threads::All) };
    if let (None, Some(b)) = (residual, bias) {
        rows::each_rows(y, width, |_, block| {
            for row in block.chunks_mut(width) {
                row[col..col + outputs].iter_mut().zip(b).for_each(|(y, &b)| *y += b);
            }
        });
    }
}

/// Given `dy` (columns `col..col + out` of a `[tokens, width]` buffer), adds the weight and
/// bias gradients, and writes (or adds, `accumulate`) `dx = dy·Mᵀ`.
#[allow(clippy::too_many_arguments)]
fn linear_backward(
    lin: &Linear,
    p: &mut Params,
    x: View,
    dy_buf: &[f32],
    width: usize,
    col: usize,
    outputs: usize,
    dx: &mut [f32],
    accumulate: bool,
) {
    let inputs = x.cols();
    let tokens = dy_buf.len() / width;
    let dy = View::strided(dy_buf, col, tokens, outputs, width, 1);
    let m = matrix(lin, p.weights, p.index, inputs, outputs);
    matmul_into(dx, dy, m.t(), accumulate);
    let wi = p.index[&lin.weight];
    let add = first_write(p.written, wi);
    let gw = &mut p.grads[wi];
    match lin.stored {
        Stored::OutIn => matmul_into(gw, dy.t(), x, add),
        Stored::InOut => matmul_into(gw, x.t(), dy, add),
    }
    if let Some(b) = &lin.bias {
        let bi = p.index[b];
        clear_unwritten(p.grads, p.written, [Some(bi)]);
        rows::sum_cols_into(&mut p.grads[bi], dy_buf, width, col);
    }
}

/// `out = norm(x)` for `x.len() / d` rows, with each row's statistics in `stats`.
#[allow(clippy::too_many_arguments)]
fn norm_forward(
    n: &Norm,
    plan: &Plan,
    weights: &[Vec<f32>],
    index: &HashMap<String, usize>,
    eps: f32,
    x: &[f32],
    out: &mut Vec<f32>,
    stats: &mut Vec<f32>,
) {
    let w = &weights[index[&n.weight]];
    let bias = n.bias.as_ref().map(|b| weights[index[b]].as_slice());
    let tokens = x.len() / w.len();
    norm::forward(plan.norm, x, w, bias, eps, buf(out, x.len()), buf(stats, 2 * tokens));
}

#[allow(clippy::too_many_arguments)]
fn forward_block(
    b: &Block,
    cfg: &ModelConfig,
    plan: &Plan,
    weights: &[Vec<f32>],
    index: &HashMap<String, usize>,
    rope: Option<&Rope>,
    heads: Heads,
    st: &mut BlockState,
    next: &mut Vec<f32>,
) {
    let (d, f) = (cfg.hidden, cfg.ffn);
    let tokens = heads.batch * heads.seq;
    let eps = cfg.norm_eps as f32;
    norm_forward(&b.attn_norm, plan, weights, index, eps, &st.x[..tokens * d], &mut st.attn_in, &mut st.attn_stats);
    let width = heads.qkv_width();
    let qkv = buf(&mut st.qkv, tokens * width);
    let n = View::rows(&st.attn_in[..tokens * d], tokens, d);
    match &b.qkv {
        Qkv::Fused(lin) => linear_forward(lin, weights, index, n, qkv, width, 0, width, None),
        Qkv::Separate { q, k, v } => {
            let (hq, hk) = (heads.heads * heads.dim, heads.kv_heads * heads.dim);
            for (lin, col, out) in [(q, 0, hq), (k, hq, hk), (v, hq + hk, hk)] {
                linear_forward(lin, weights, index, n, qkv, width, col, out, None);
            }
        }
    }
    if let Some(rope) = rope {
        rope.apply(qkv, width, heads.seq, heads.heads + heads.kv_heads, false);
    }
    let ow = heads.out_width();
    attention::forward(heads, qkv, buf(&mut st.attn, tokens * ow), buf(&mut st.lse, heads.batch * heads.heads * heads.seq));
    let a = View::rows(&st.attn[..tokens * ow], tokens, ow);
    linear_forward(&b.out, weights, index, a, buf(&mut st.mid, tokens * d), d, 0, d, Some(&st.x[..tokens * d]));
    norm_forward(&b.mlp_norm, plan, weights, index, eps, &st.mid[..tokens * d], &mut st.mlp_in, &mut st.mlp_stats);
    let n = View::rows(&st.mlp_in[..tokens * d], tokens, d);
    match &b.mlp {
        Mlp::Gated { gate, up, .. } => {
            linear_forward(gate, weights, index, n, buf(&mut st.pre, tokens * f), f, 0, f, None);
            linear_forward(up, weights, index, n, buf(&mut st.up, tokens * f), f, 0, f, None);
            pointwise::gated_forward(
                cfg.activation,
                &st.pre[..tokens * f],
                &st.up[..tokens * f],
                buf(&mut st.hidden, tokens * f),
            );
        }
        Mlp::Plain { up, .. } => {
            linear_forward(up, weights, index, n, buf(&mut st.pre, tokens * f), f, 0, f, None);
            pointwise::plain_forward(cfg.activation, &st.pre[..tokens * f], buf(&mut st.hidden, tokens * f));
        }
    }
    let down = match &b.mlp {
        Mlp::Gated { down, .. } | Mlp::Plain { down, .. } => down,
    };
    let hidden = View::rows(&st.hidden[..tokens * f], tokens, f);
    linear_forward(down, weights, index, hidden, buf(next, tokens * d), d, 0, d, Some(&st.mid[..tokens * d]));
}

/// Given the gradient of the block's output in `scratch.d_res`, adds every weight's
/// gradient and leaves the gradient of the block's input in `scratch.d_res`.
#[allow(clippy::too_many_arguments)]
fn backward_block(
    b: &Block,
    cfg: &ModelConfig,
    plan: &Plan,
    mut p: Params,
    rope: Option<&Rope>,
    heads: Heads,
    st: &mut BlockState,
    s: Scratch,
) {
    let (d, f) = (cfg.hidden, cfg.ffn);
    let tokens = heads.batch * heads.seq;
    let act = cfg.activation;
    // MLP: d_hidden = d_res · downᵀ, then through the activation (in place on `pre`/`up`).
    let down = match &b.mlp {
        Mlp::Gated { down, .. } | Mlp::Plain { down, .. } => down,
    };
    let d_hidden = buf(&mut *s.d_mlp, tokens * f);
    let hidden = View::rows(&st.hidden[..tokens * f], tokens, f);
    linear_backward(down, &mut p, hidden, &s.d_res[..tokens * d], d, 0, d, d_hidden, false);
    let n = View::rows(&st.mlp_in[..tokens * d], tokens, d);
    let d_n = buf(&mut *s.d_norm, tokens * d);
    match &b.mlp {
        Mlp::Gated { gate, up, .. } => {
            pointwise::gated_backward(act, d_hidden, &mut st.pre[..tokens * f], &mut st.up[..tokens * f]);
            linear_backward(gate, &mut p, n, &st.pre[..tokens * f], f, 0, f, d_n, false);
            linear_backward(up, &mut p, n, &st.up[..tokens * f], f, 0, f, d_n, true);
        }
        Mlp::Plain { up, .. } => {
            pointwise::plain_backward(act, d_hidden, &mut st.pre[..tokens * f]);
            linear_backward(up, &mut p, n, &st.pre[..tokens * f], f, 0, f, d_n, false);
        }
    }
    norm_backward(&b.mlp_norm, plan, &mut p, d_n, &st.mid[..tokens * d], &st.mlp_stats, &mut s.d_res[..tokens * d]);

    // Attention: d_attn = d_res · outᵀ, then through attention and the rotary embedding.
    let ow = heads.out_width();
    let d_attn = buf(&mut *s.d_attn, tokens * ow);
    let a = View::rows(&st.attn[..tokens * ow], tokens, ow);
    linear_backward(&b.out, &mut p, a, &s.d_res[..tokens * d], d, 0, d, d_attn, false);
    let width = heads.qkv_width();
    let d_qkv = buf(&mut *s.d_qkv, tokens * width);
    attention::backward(heads, &st.qkv[..tokens * width], &st.lse, d_attn, d_qkv);
    if let Some(rope) = rope {
        rope.apply(d_qkv, width, heads.seq, heads.heads + heads.kv_heads, true);
    }
    let n = View::rows(&st.attn_in[..tokens * d], tokens, d);
    let d_n = buf(&mut *s.d_norm, tokens * d);
    match &b.qkv {
        Qkv::Fused(lin) => linear_backward(lin, &mut p, n, d_qkv, width, 0, width, d_n, false),
        Qkv::Separate { q, k, v } => {
            let (hq, hk) = (heads.heads * heads.dim, heads.kv_heads * heads.dim);
            for (i, (lin, col, out)) in [(q, 0, hq), (k, hq, hk), (v, hq + hk, hk)].into_iter().enumerate() {
                linear_backward(lin, &mut p, n, d_qkv, width, col, out, d_n, i > 0);
            }
        }
    }
    norm_backward(&b.attn_norm, plan, &mut p, d_n, &st.x[..tokens * d], &st.attn_stats, &mut s.d_res[..tokens * d]);
}

/// `d_res += ∂/∂x` of a norm whose output gradient is `d_out`, and its weights' gradients.
fn norm_backward(n: &Norm, plan: &Plan, p: &mut Params, d_out: &[f32], x: &[f32], stats: &[f32], d_res: &mut [f32]) {
    let (wi, bi) = (p.index[&n.weight], n.bias.as_ref().map(|b| p.index[b]));
    clear_unwritten(p.grads, p.written, [Some(wi), bi]);
    let (dw, db) = two_grads(&mut *p.grads, wi, bi);
    norm::backward(plan.norm, d_out, x, stats, &p.weights[wi], d_res, dw, db);
}
