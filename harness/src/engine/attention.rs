//! Causal multi-head attention with grouped key/value heads, forward and backward, one
//! task per (sequence, key/value head).
//!
//! Queries, keys and values are columns of one `[tokens, (heads + 2·kv_heads)·d]` buffer
//! (q | k | v, head after head), read in place. The forward pass keeps only the log-sum-exp
//! of each score row; the backward pass recomputes the probabilities from it:
//! ```text
//! S = q kᵀ · scale,   P = softmax(S) over keys j ≤ i,   o = P v,   lse_i = log Σ_j exp(S_ij)
//! dv = Pᵀ do,   dP = do vᵀ,   dS = P ⊙ (dP − Σ_j P_ij dP_ij) · scale,   dq = dS k,   dk = dSᵀ q
//! ```
//! A key/value head's gradients sum over the query heads that share it, inside its task,
//! in head order.

use rayon::prelude::*;

use super::gemm::{Out, Threads, View, matmul};

/// The attention's shape.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Heads {
    /// Sequences in the batch.
    pub batch: usize,
    /// Tokens per sequence.
    pub seq: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Width of one head.
    pub dim: usize,
}

impl Heads {
    /// Values per row of the q | k | v buffer.
    pub fn qkv_width(&self) -> usize {
        (self.heads + 2 * self.kv_heads) * self.dim
    }

    /// Values per row of the output (heads merged).
    pub fn out_width(&self) -> usize {
        self.heads * self.dim
    }

    fn groups(&self) -> usize {
        self.heads / self.kv_heads
    }

    fn scale(&self) -> f32 {
        1.0 / (self.dim as f32).sqrt()
    }

    /// Head `h`'s `[seq, dim]` block of sequence `b` starting at column `col` of a buffer
    /// with `width` values per row.
    fn view<'a>(&self, data: &'a [f32], b: usize, col: usize, width: usize) -> View<'a> {
        View::strided(data, b * self.seq * width + col, self.seq, self.dim, width, 1)
    }

    fn out(&self, data: &mut [f32], b: usize, col: usize, width: usize) -> Out {
        Out::strided(data, b * self.seq * width + col, self.seq, self.dim, width)
    }

    fn q_col(&self, h: usize) -> usize {
        h * self.dim
    }
    fn k_col(&self, kv: usize) -> usize {
        (self.heads + kv) * self.dim
    }
    fn v_col(&self, kv: usize) -> usize {
        (self.heads + self.kv_heads + kv) * self.dim
    }

    /// Every (sequence, key/value head) task.
    fn tasks(&self) -> impl ParallelIterator<Item = (usize, usize)> + '_ {
        (0..self.batch * self.kv_heads).into_par_iter().map(|i| (i / self.kv_heads, i % self.kv_heads))
    }
}

/// The log-sum-exp of each score row: found by the forward pass, reused by the backward.
enum Lse<'a> {
    Write(&'a mut [f32]),
    Read(&'a [f32]),
}

/// Turns raw scores `q kᵀ` (`[seq, seq]`) into causal attention probabilities in place
/// (zero above the diagonal).
fn probabilities(p: &mut [f32], seq: usize, scale: f32, mut lse: Lse) {
    for i in 0..seq {
        let row = &mut p[i * seq..(i + 1) * seq];
        let (seen, future) = row.split_at_mut(i + 1);
        future.fill(0.0);
        match &mut lse {
            Lse::Read(lse) => seen.iter_mut().for_each(|s| *s = (*s * scale - lse[i]).exp()),
            Lse::Write(lse) => {
                let max = seen.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s * scale));
                let mut sum = 0f32;
                for s in seen.iter_mut() {
                    *s = (*s * scale - max).exp();
                    sum += *s;
                }
                let inv = 1.0 / sum;
                seen.iter_mut().for_each(|s| *s *= inv);
                lse[i] = max + sum.ln();
            }
        }
    }
}

/// Writes the merged heads `out` (`[tokens, heads·dim]`) and `lse` (`[batch, heads, seq]`).
pub(crate) fn forward(s: Heads, qkv: &[f32], out: &mut [f32], lse: &mut [f32]) {
    let (w, ow, n) = (s.qkv_width(), s.out_width(), s.seq);
    assert_eq!(qkv.len(), s.batch * n * w);
    assert_eq!(lse.len(), s.batch * s.heads * n);
    let groups = s.groups();
    // Each task owns the columns of its query heads in its sequence's rows of `out`, and
    // the matching rows of `lse`: no two tasks write the same element.
    let outs: Vec<Vec<Out>> = (0..s.batch).map(|b| (0..s.heads).map(|h| s.out(out, b, s.q_col(h), ow)).collect()).collect();
    if n == 0 {
        return;
    }
    lse.par_chunks_mut(groups * n).enumerate().for_each(|(task, lse)| {
        let (b, kv) = (task / s.kv_heads, task % s.kv_heads);
        let mut p = vec![0f32; n * n];
        let (k, v) = (s.view(qkv, b, s.k_col(kv), w), s.view(qkv, b, s.v_col(kv), w));
        for g in 0..groups {
            let h = kv * groups + g;
            let q = s.view(qkv, b, s.q_col(h), w);
            // SAFETY: `p` is this task's own; `outs[b][h]` is written by this task only.
            unsafe { matmul(Out::rows(&mut p, n, n), q, k.t(), false, Threads::One) };
            probabilities(&mut p, n, s.scale(), Lse::Write(&mut lse[g * n..(g + 1) * n]));
            unsafe { matmul(outs[b][h], View::rows(&p, n, n), v, false, Threads::One) };
        }
    });
}

/// Writes `dqkv` (`[tokens, (heads + 2·kv_heads)·dim]`, rotary embedding not yet undone)
/// from the gradient `dout` of the merged heads.
pub(crate) fn backward(s: Heads, qkv: &[f32], lse: &[f32], dout: &[f32], dqkv: &mut [f32]) {
    let (w, ow, n) = (s.qkv_width(), s.out_width(), s.seq);
    assert_eq!(dqkv.len(), qkv.len());
    let groups = s.groups();
    // A task (b, kv) writes the q columns of its query heads and its own k and v columns,
    // in sequence b's rows only: disjoint from every other task.
    let outs: Vec<Vec<Out>> =
        (0..s.batch).map(|b| (0..s.heads + 2 * s.kv_heads).map(|c| s.out(dqkv, b, c * s.dim, w)).collect()).collect();
    if n == 0 {
        return;
    }
    s.tasks().for_each(|(b, kv)| {
        let (mut p, mut dp) = (vec![0f32; n * n], vec![0f32; n * n]);
        let (k, v) = (s.view(qkv, b, s.k_col(kv), w), s.view(qkv, b, s.v_col(kv), w));
        let (dk, dv) = (outs[b][s.heads + kv], outs[b][s.heads + s.kv_heads + kv]);
        for g in 0..groups {
            let h = kv * groups + g;
            let q = s.view(qkv, b, s.q_col(h), w);
            let d_o = s.view(dout, b, s.q_col(h), ow);
            let lse = &lse[(b * s.heads + h) * n..(b * s.heads + h + 1) * n];
            let first = g == 0;
            // SAFETY: `p` and `dp` are this task's own; its `outs` are written by it alone.
            unsafe {
                matmul(Out::rows(&mut p, n, n), q, k.t(), false, Threads::One);
                probabilities(&mut p, n, s.scale(), Lse::Read(lse));
                matmul(dv, View::rows(&p, n, n).t(), d_o, !first, Threads::One);
                matmul(Out::rows(&mut dp, n, n), d_o, v.t(), false, Threads::One);
            }
            for i in 0..n {
                let (pr, dr) = (&p[i * n..(i + 1) * n], &mut dp[i * n..(i + 1) * n]);
                let dot: f32 = pr[..=i].iter().zip(&dr[..=i]).map(|(p, d)| p * d).sum();
                for (d, &p) in dr.iter_mut().zip(pr) {
                    *d = p * (*d - dot) * s.scale();
                }
            }
            let ds = View::rows(&dp, n, n);
            unsafe {
                matmul(outs[b][h], ds, k, false, Threads::One);
                matmul(dk, ds.t(), q, !first, Threads::One);
            }
        }
    });
}
