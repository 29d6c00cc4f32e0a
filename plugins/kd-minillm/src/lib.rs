//! MiniLLM (Gu et al. 2024): reverse KL minimised by policy gradient on the student's own
//! samples, drawn from a teacher-mixed policy `(1 − α)q + αp` (α = 0.2) for public prompts
//! only (the released code's leak of private prompts is not copied).
//!
//! Per sampled sequence with targets `y_t`: reward `r_t = log p(y_t) − log q(y_t)`
//! (constant), length-normalised discounted return `R_t = Σ_{k≥t} γ^{k−t} r_k / (T − t)`,
//! importance ratio `ρ_t = q(y_t) / b(y_t)` against the sampling distribution `b`, and the
//! clipped surrogate `−min(ρ_t R_t, clip(ρ_t, 1 ± ε) R_t)`; plus the single-step reverse
//! KL `KL(q_t‖p_t)` at every position as a regulariser. Steps on ground-truth data (the
//! validation loss) use the reverse KL alone.

use kdharness_plugin_api::kd::{DataPolicy, KdBatch, KdLoss, KdMethod};
use kdharness_plugin_api::objectives::{Objective, log_softmax};
use kdharness_plugin_api::{ParamList, ParamSpec, export_plugins};
use rayon::prelude::*;

/// The `minillm` method.
pub struct MiniLlm {
    teacher_mix: f64,
    gamma: f64,
    clip: f64,
}

impl KdMethod for MiniLlm {
    const NAME: &'static str = "minillm";
    const DESCRIPTION: &'static str = "policy-gradient reverse KL on teacher-mixed student samples";
    const PARAMS: &'static [ParamSpec] = &[
        ParamSpec::new("teacher_mix", "0.2", "teacher weight in the sampling distribution"),
        ParamSpec::new("gamma", "0.95", "discount of future rewards"),
        ParamSpec::new("clip", "0.2", "importance-ratio clipping range"),
    ];

    fn new(params: ParamList<'_>) -> Result<Self, String> {
        Ok(MiniLlm {
            teacher_mix: params.probability("teacher_mix")?,
            gamma: params.probability("gamma")?,
            clip: params.probability("clip")?,
        })
    }

    fn data_policy(&self, _progress: f64) -> DataPolicy {
        DataPolicy { student_fraction: 1.0, teacher_mix: self.teacher_mix, ..DataPolicy::GROUND_TRUTH }
    }

    fn loss_and_grad(&mut self, batch: &KdBatch<'_>, grad: &mut [f32]) -> Result<KdLoss, String> {
        let reg = Objective::Rkl.loss_and_grad(batch, grad);
        if !batch.on_policy {
            return Ok(reg);
        }
        if batch.behaviour_logprob.len() != batch.positions as usize || batch.sequence.len() != batch.positions as usize {
            return Err("an on-policy batch must carry behaviour log-probabilities and sequence indices".into());
        }
        let total = batch.mask_total();
        if total == 0.0 {
            return Ok(reg);
        }
        let v = batch.vocab as usize;
        let n = batch.positions as usize;
        // The student's log-softmax rows with log q(y_t) and log p(y_t), on all threads.
        let mut logq_rows = vec![0.0; n * v];
        let picked: Vec<(f64, f64)> = logq_rows
            .par_chunks_mut(v)
            .enumerate()
            .map_init(
                || vec![0.0; v],
                |logp, (i, row)| {
                    log_softmax(batch.student_row(i), row);
                    log_softmax(batch.teacher_row(i), logp);
                    let y = batch.targets[i] as usize;
                    (row[y], logp[y])
                },
            )
            .collect();
        let (logq_y, logp_y): (Vec<f64>, Vec<f64>) = picked.into_iter().unzip();
        // The scale of each position's policy-gradient term in d/d log q(y_t) (zero where
        // the clipped term is the minimum).
        let mut dlogq = vec![0.0; n];
        let mut pg_loss = 0.0;
        let mut start = 0;
        while start < n {
            let seq = batch.sequence[start];
            let end = (start..n).find(|&i| batch.sequence[i] != seq).unwrap_or(n);
            // Discounted returns, from the end of the sequence backwards.
            let mut future = 0.0;
            for t in (start..end).rev() {
                let reward = (logp_y[t] - logq_y[t]) * batch.mask[t] as f64;
                future = reward + self.gamma * future;
                let ret = future / (end - t) as f64;
                let w = batch.mask[t] as f64;
                if w == 0.0 {
                    continue;
                }
                let ratio = (logq_y[t] - batch.behaviour_logprob[t] as f64).exp();
                let clipped = ratio.clamp(1.0 - self.clip, 1.0 + self.clip);
                let (unclipped_term, clipped_term) = (ratio * ret, clipped * ret);
                pg_loss -= w * unclipped_term.min(clipped_term);
                // d(−min(..))/d log q(y_t): −ρR when the unclipped term is the minimum.
                if unclipped_term <= clipped_term {
                    dlogq[t] = -ratio * ret * w / total;
                }
            }
            start = end;
        }
        // d log q(y)/d z = onehot(y) − q, into each position's gradient row.
        grad[..n * v].par_chunks_mut(v).zip(logq_rows.par_chunks(v)).enumerate().for_each(|(t, (out, row))| {
            if dlogq[t] != 0.0 {
                for (o, lq) in out.iter_mut().zip(row) {
                    *o -= (dlogq[t] * lq.exp()) as f32;
                }
                out[batch.targets[t] as usize] += dlogq[t] as f32;
            }
        });
        Ok(KdLoss { loss: reg.loss + pg_loss / total, kl: reg.kl })
    }
}

export_plugins!(kd: [MiniLlm]);

#[cfg(test)]
mod tests {
    use super::*;
    use abi_stable::std_types::RSlice;
    use kdharness_plugin_api::kd::instance;

    fn batch<'a>(z: &'a [f32], t: &'a [f32], y: &'a [u32], b: &'a [f32], seq: &'a [u32], mask: &'a [f32]) -> KdBatch<'a> {
        KdBatch {
            positions: y.len() as u32,
            vocab: (z.len() / y.len()) as u32,
            student_logits: RSlice::from_slice(z),
            teacher_logits: RSlice::from_slice(t),
            targets: RSlice::from_slice(y),
            mask: RSlice::from_slice(mask),
            sequence: RSlice::from_slice(seq),
            behaviour_logprob: RSlice::from_slice(b),
            on_policy: true,
            progress: 0.0,
        }
    }

    #[test]
    fn policy_gradient_matches_finite_differences_of_the_surrogate() {
        let mut m = instance::<MiniLlm>(&[]).unwrap();
        // Two sequences (3 + 2 positions) over a 4-token vocabulary.
        let z: Vec<f32> = (0..20).map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.3).collect();
        let t: Vec<f32> = (0..20).map(|i| ((i * 5 % 13) as f32 - 6.0) * 0.25).collect();
        let y = [1u32, 3, 0, 2, 2];
        let seq = [0u32, 0, 0, 1, 1];
        let mask = [1.0f32, 1.0, 1.0, 1.0, 0.0];
        // Behaviour log-probs near the student's, so some ratios are clipped and some not.
        let b = [-1.2f32, -1.9, -1.0, -1.6, -1.3];
        let mut grad = vec![0.0; 20];
        let loss = m.loss_and_grad(&batch(&z, &t, &y, &b, &seq, &mask), &mut grad).unwrap().loss;
        assert!(loss.is_finite());
        // The returns are constants in the surrogate (rewards are detached), so the check
        // freezes them at the base point and differentiates the rest.
        for j in 0..20 {
            let h = 1e-3f32;
            let eval = |zz: &[f32]| {
                let mut g = vec![0.0; 20];
                frozen_loss(&mut m.clone_params(), zz, &z, &t, &y, &b, &seq, &mask, &mut g)
            };
            let (mut up, mut down) = (z.clone(), z.clone());
            up[j] += h;
            down[j] -= h;
            let numeric = (eval(&up) - eval(&down)) / (2.0 * h as f64);
            assert!((numeric - grad[j] as f64).abs() < 2e-3, "[{j}] analytic {} numeric {numeric}", grad[j]);
        }
        // Masked positions get no gradient.
        assert!(grad[16..20].iter().all(|&g| g == 0.0));
    }

    impl MiniLlm {
        fn clone_params(&self) -> MiniLlm {
            MiniLlm { teacher_mix: self.teacher_mix, gamma: self.gamma, clip: self.clip }
        }
    }

    /// The loss at logits `zz` with rewards computed at the base logits `z0`.
    #[allow(clippy::too_many_arguments)]
    fn frozen_loss(m: &mut MiniLlm, zz: &[f32], z0: &[f32], t: &[f32], y: &[u32], b: &[f32], seq: &[u32], mask: &[f32], g: &mut [f32]) -> f64 {
        let v = 4;
        let rkl = Objective::Rkl.loss_and_grad(&batch(zz, t, y, b, seq, mask), g).loss;
        let lq = |z: &[f32], i: usize| {
            let mut row = vec![0.0; v];
            log_softmax(&z[i * v..(i + 1) * v], &mut row);
            row[y[i] as usize]
        };
        let lp = |i: usize| {
            let mut row = vec![0.0; v];
            log_softmax(&t[i * v..(i + 1) * v], &mut row);
            row[y[i] as usize]
        };
        let total: f64 = mask.iter().map(|&w| w as f64).sum();
        let mut pg = 0.0;
        for (start, end) in [(0usize, 3usize), (3, 5)] {
            for tt in start..end {
                if mask[tt] == 0.0 {
                    continue;
                }
                let ret = (tt..end).map(|k| m.gamma.powi((k - tt) as i32) * (lp(k) - lq(z0, k)) * mask[k] as f64).sum::<f64>() / (end - tt) as f64;
                let ratio = (lq(zz, tt) - b[tt] as f64).exp();
                let clipped = ratio.clamp(1.0 - m.clip, 1.0 + m.clip);
                pg -= (ratio * ret).min(clipped * ret);
            }
        }
        rkl + pg / total
    }
}
