//! The distillation objectives of SPEC §8, with their gradients with respect to the
//! student logits, shared by every built-in KD method (and available to plugin authors).
//!
//! Per position, with `p = softmax(teacher)`, `q = softmax(student)`:
//! - `fkl`:  `−Σ p log q` (cross-entropy to the teacher; `KL(p‖q)` is reported too)
//! - `rkl`:  `KL(q‖p) = Σ q (log q − log p)`
//! - `jsd(β)`: `m = (1−β)p + βq`, `β·KL(q‖m) + (1−β)·KL(p‖m)`
//! - `tvd`:  `½ Σ |p − q|`
//! - `sfkl(α)`: `m = αp + (1−α)q`, `KL(p‖m)`
//! - `srkl(α)`: `m = (1−α)p + αq`, `KL(q‖m)`
//!
//! The batch loss is `Σ mask·d / Σ mask` over all positions of the batch (not a mean of
//! per-sequence means). Mixtures are formed in log space (`log m = logsumexp(log a + log p,
//! log b + log q)`), so logits of ±50 stay finite. Gradients flow through `q` everywhere,
//! mixtures included. With `b_j = q_j · ∂d/∂q_j` (computed without dividing by `q`), the
//! gradient with respect to the logits is `b_j − q_j Σ_k b_k`.

use rayon::prelude::*;

use crate::kd::{KdBatch, KdLoss};
use crate::{ParamList, ParamSpec};

/// A divergence between teacher and student distributions.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Objective {
    /// Forward KL (cross-entropy to the teacher).
    Fkl,
    /// Reverse KL.
    Rkl,
    /// Generalized Jensen–Shannon with weight β on the student.
    Jsd(f64),
    /// Total variation distance.
    Tvd,
    /// Skew forward KL with teacher weight α in the mixture.
    Sfkl(f64),
    /// Skew reverse KL with student weight α in the mixture.
    Srkl(f64),
}

/// The objective names accepted by [`Objective::parse`].
pub const NAMES: [&str; 6] = ["fkl", "rkl", "jsd", "tvd", "sfkl", "srkl"];

const OBJECTIVE: &str = "objective";

/// The `objective` parameter read by [`Objective::from_params`], defaulting to `default`
/// (one of [`NAMES`]). Methods declare it through [`crate::objective_params!`].
pub const fn objective_param(default: &'static str) -> ParamSpec {
    ParamSpec::new(OBJECTIVE, default, "divergence: fkl, rkl, jsd, tvd, sfkl, srkl")
}

/// The `beta` parameter: the student's weight β in jsd's mixture. Its default is the only
/// one: [`Objective::from_params`] falls back to it too.
pub const BETA: ParamSpec = ParamSpec::new("beta", "0.9", "student weight in jsd's mixture");

/// The `alpha` parameter: the mixture weight α of sfkl and srkl. Like [`BETA`]'s, its
/// default is the only one.
pub const ALPHA: ParamSpec = ParamSpec::new("alpha", "0.1", "mixture weight of the skew divergences");

/// The parameters of a KD method whose loss is an [`Objective`]: the shared
/// [`objective_param`] (defaulting to the first argument), [`BETA`] and [`ALPHA`], followed
/// by the method's own specs. It builds a `&'static [ParamSpec]` for
/// [`KdMethod::PARAMS`](crate::kd::KdMethod::PARAMS); the method then reads its objective
/// with [`Objective::from_params`] and tests it with
/// [`assert_objective_params`](crate::kd::assert_objective_params).
///
/// ```
/// use kdharness_plugin_api::{ParamSpec, objective_params};
///
/// const PARAMS: &[ParamSpec] = objective_params!("jsd", ParamSpec::new("lambda", "0.5", "probability of a step on student samples"));
/// let names: Vec<&str> = PARAMS.iter().map(|p| p.name.as_str()).collect();
/// assert_eq!(names, ["objective", "beta", "alpha", "lambda"]);
/// assert_eq!(PARAMS[0].default.as_str(), "jsd");
/// ```
#[macro_export]
macro_rules! objective_params {
    ($default:expr $(, $own:expr)* $(,)?) => {
        &[
            $crate::objectives::objective_param($default),
            $crate::objectives::BETA,
            $crate::objectives::ALPHA,
            $($own),*
        ]
    };
}

impl Objective {
    /// `name` with its mixture weight (`beta` for jsd, `alpha` for the skew divergences).
    pub fn parse(name: &str, beta: f64, alpha: f64) -> Result<Objective, String> {
        let weight = |w: f64, what: &str| {
            if (0.0..=1.0).contains(&w) { Ok(w) } else { Err(format!("{what} must be in [0, 1], got {w}")) }
        };
        Ok(match name {
            "fkl" => Objective::Fkl,
            "rkl" => Objective::Rkl,
            "jsd" => Objective::Jsd(weight(beta, "beta")?),
            "tvd" => Objective::Tvd,
            "sfkl" => Objective::Sfkl(weight(alpha, "alpha")?),
            "srkl" => Objective::Srkl(weight(alpha, "alpha")?),
            other => return Err(format!("unknown objective `{other}`; choose one of {}", NAMES.join(", "))),
        })
    }

    /// From the parameters [`objective_param`], [`BETA`] and [`ALPHA`] (declared together by
    /// [`crate::objective_params!`]); `beta` and `alpha` fall back to their specs' defaults
    /// when not given.
    pub fn from_params(params: ParamList<'_>) -> Result<Objective, String> {
        let name = params.get(OBJECTIVE).ok_or("parameter `objective` is missing")?;
        let weight = |spec: ParamSpec| match params.get(spec.name.as_str()) {
            Some(_) => params.f64(spec.name.as_str()),
            None => Ok(spec.default.parse().expect("the default of a shared weight is a number")),
        };
        Objective::parse(name, weight(BETA)?, weight(ALPHA)?)
    }

    /// The divergence at one position and `b_j = q_j ∂d/∂q_j` (written into `b`).
    /// `logq`, `logp` are log-softmaxes.
    pub fn row(self, logq: &[f64], logp: &[f64], b: &mut [f64]) -> f64 {
        let xlogy = |x: f64, y: f64| if x == 0.0 { 0.0 } else { x * y };
        let mut d = 0.0;
        match self {
            Objective::Fkl => {
                for j in 0..logq.len() {
                    let p = logp[j].exp();
                    d -= xlogy(p, logq[j]);
                    b[j] = -p;
                }
            }
            Objective::Rkl => {
                for j in 0..logq.len() {
                    let q = logq[j].exp();
                    let diff = logq[j] - logp[j];
                    d += q * diff;
                    b[j] = q * (diff + 1.0);
                }
            }
            Objective::Jsd(beta) => {
                for j in 0..logq.len() {
                    let (p, q) = (logp[j].exp(), logq[j].exp());
                    let logm = mix(1.0 - beta, logp[j], beta, logq[j]);
                    d += beta * xlogy(q, logq[j] - logm) + (1.0 - beta) * xlogy(p, logp[j] - logm);
                    b[j] = beta * xlogy(q, logq[j] - logm);
                }
            }
            Objective::Tvd => {
                for j in 0..logq.len() {
                    let (p, q) = (logp[j].exp(), logq[j].exp());
                    d += 0.5 * (p - q).abs();
                    b[j] = 0.5 * q * sign(q - p);
                }
            }
            Objective::Sfkl(alpha) => {
                for j in 0..logq.len() {
                    let p = logp[j].exp();
                    let logm = mix(alpha, logp[j], 1.0 - alpha, logq[j]);
                    d += xlogy(p, logp[j] - logm);
                    b[j] = -(1.0 - alpha) * p * (logq[j] - logm).exp();
                }
            }
            Objective::Srkl(alpha) => {
                for j in 0..logq.len() {
                    let q = logq[j].exp();
                    let logm = mix(1.0 - alpha, logp[j], alpha, logq[j]);
                    d += xlogy(q, logq[j] - logm);
                    b[j] = xlogy(q, logq[j] + 1.0 - logm) - alpha * q * (logq[j] - logm).exp();
                }
            }
        }
        d
    }

    /// The batch loss `Σ mask·d / Σ mask` and its gradient with respect to the student
    /// logits, written into `grad`; `KL(p‖q)` is reported beside it.
    pub fn loss_and_grad(self, batch: &KdBatch<'_>, grad: &mut [f32]) -> KdLoss {
        let v = batch.vocab as usize;
        let scratch = || (vec![0.0; v], vec![0.0; v], vec![0.0; v]);
        let (loss, kl) = masked_mean(batch, grad, scratch, |(logq, logp, b), i, out, scale| {
            log_softmax(batch.student_row(i), logq);
            log_softmax(batch.teacher_row(i), logp);
            let d = self.row(logq, logp, b);
            let kl = logp.iter().zip(logq.iter()).map(|(lp, lq)| if *lp == f64::NEG_INFINITY { 0.0 } else { lp.exp() * (lp - lq) }).sum::<f64>();
            logits_grad(logq, b, scale, out);
            (d, kl)
        });
        KdLoss { loss, kl }
    }
}

/// Runs `row(scratch, i, grad_row, mask_i / Σ mask)` on every unmasked position (masked
/// rows get a zero gradient) and returns the mask-weighted means of the two values it
/// reports. Positions run in parallel on rayon's pool, each thread with its own
/// `scratch()`; the means add the positions' values in order, so the result never depends
/// on the thread count.
fn masked_mean<S>(
    batch: &KdBatch<'_>,
    grad: &mut [f32],
    scratch: impl Fn() -> S + Sync + Send,
    row: impl Fn(&mut S, usize, &mut [f32], f64) -> (f64, f64) + Sync + Send,
) -> (f64, f64) {
    let total = batch.mask_total();
    let v = (batch.vocab as usize).max(1);
    let positions = batch.positions as usize;
    let values: Vec<(f64, f64, f64)> = grad[..positions * batch.vocab as usize]
        .par_chunks_mut(v)
        .enumerate()
        .map_init(scratch, |s, (i, out)| {
            let w = batch.mask[i] as f64;
            if w == 0.0 || total == 0.0 {
                out.fill(0.0);
                return (0.0, 0.0, 0.0);
            }
            let (a, b) = row(s, i, out, w / total);
            (w, a, b)
        })
        .collect();
    let (mut first, mut second) = (0.0, 0.0);
    for (w, a, b) in values {
        if w != 0.0 {
            first += w * a;
            second += w * b;
        }
    }
    let n = if total == 0.0 { 1.0 } else { total };
    (first / n, second / n)
}

/// Mean next-token cross-entropy of the student against `batch.targets` (the No-KD
/// baseline's loss) and its gradient `(q − onehot)·mask/Σ mask`.
pub fn cross_entropy(batch: &KdBatch<'_>, grad: &mut [f32]) -> KdLoss {
    let v = batch.vocab as usize;
    let (loss, _) = masked_mean(batch, grad, || vec![0.0; v], |logq, i, out, scale| {
        log_softmax(batch.student_row(i), logq);
        let t = batch.targets[i] as usize;
        for (o, lq) in out.iter_mut().zip(logq.iter()) {
            *o = (lq.exp() * scale) as f32;
        }
        out[t] -= scale as f32;
        (-logq[t], 0.0)
    });
    KdLoss { loss, kl: f64::NAN }
}

/// `log softmax(z)` in f64.
pub fn log_softmax(z: &[f32], out: &mut [f64]) {
    let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = max + z.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln();
    for (o, &x) in out.iter_mut().zip(z) {
        *o = x as f64 - lse;
    }
}

/// `∂L/∂z_j = scale · (b_j − q_j Σ_k b_k)`.
pub fn logits_grad(logq: &[f64], b: &[f64], scale: f64, out: &mut [f32]) {
    let sum: f64 = b.iter().sum();
    for ((o, lq), bj) in out.iter_mut().zip(logq).zip(b) {
        *o = (scale * (bj - lq.exp() * sum)) as f32;
    }
}

/// `log(a·e^x + c·e^y)` for weights `a, c ≥ 0`, without leaving log space.
fn mix(a: f64, x: f64, c: f64, y: f64) -> f64 {
    let (u, w) = (a.ln() + x, c.ln() + y);
    let hi = u.max(w);
    if hi == f64::NEG_INFINITY {
        return hi;
    }
    hi + ((u - hi).exp() + (w - hi).exp()).ln()
}

fn sign(x: f64) -> f64 {
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use abi_stable::std_types::RSlice;

    /// The divergences straight from their definitions, in probability space.
    fn reference(objective: Objective, z: &[f32], t: &[f32]) -> f64 {
        let softmax = |x: &[f32]| {
            let m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let e: Vec<f64> = x.iter().map(|&v| (v as f64 - m).exp()).collect();
            let s: f64 = e.iter().sum();
            e.into_iter().map(|v| v / s).collect::<Vec<f64>>()
        };
        let (q, p) = (softmax(z), softmax(t));
        let kl = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(a, b)| if *a == 0.0 { 0.0 } else { a * (a / b).ln() }).sum::<f64>();
        let mixture = |wa: f64, a: &[f64], wb: f64, b: &[f64]| a.iter().zip(b).map(|(a, b)| wa * a + wb * b).collect::<Vec<f64>>();
        match objective {
            Objective::Fkl => -p.iter().zip(&q).map(|(p, q)| p * q.ln()).sum::<f64>(),
            Objective::Rkl => kl(&q, &p),
            Objective::Jsd(beta) => {
                let m = mixture(1.0 - beta, &p, beta, &q);
                beta * kl(&q, &m) + (1.0 - beta) * kl(&p, &m)
            }
            Objective::Tvd => 0.5 * p.iter().zip(&q).map(|(p, q)| (p - q).abs()).sum::<f64>(),
            Objective::Sfkl(alpha) => kl(&p, &mixture(alpha, &p, 1.0 - alpha, &q)),
            Objective::Srkl(alpha) => kl(&q, &mixture(1.0 - alpha, &p, alpha, &q)),
        }
    }

    const ALL: [Objective; 6] =
        [Objective::Fkl, Objective::Rkl, Objective::Jsd(0.9), Objective::Tvd, Objective::Sfkl(0.1), Objective::Srkl(0.1)];

    /// A small deterministic generator (the API crate has no rand dependency).
    fn random(seed: u64, n: usize, scale: f32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
            })
            .collect()
    }

    fn batch<'a>(z: &'a [f32], t: &'a [f32], mask: &'a [f32], targets: &'a [u32], vocab: usize) -> KdBatch<'a> {
        KdBatch {
            positions: (z.len() / vocab) as u32,
            vocab: vocab as u32,
            student_logits: RSlice::from_slice(z),
            teacher_logits: RSlice::from_slice(t),
            targets: RSlice::from_slice(targets),
            mask: RSlice::from_slice(mask),
            sequence: RSlice::EMPTY,
            behaviour_logprob: RSlice::EMPTY,
            on_policy: false,
            progress: 0.0,
        }
    }

    #[test]
    fn values_match_the_definitions_on_random_inputs() {
        for seed in 0..20 {
            let (z, t) = (random(seed, 3 * 11, 4.0), random(seed + 100, 3 * 11, 4.0));
            let mask = [1.0, 0.0, 1.0];
            for objective in ALL {
                let mut grad = vec![9.0; z.len()];
                let got = objective.loss_and_grad(&batch(&z, &t, &mask, &[0, 0, 0], 11), &mut grad).loss;
                let want = (reference(objective, &z[..11], &t[..11]) + reference(objective, &z[22..], &t[22..])) / 2.0;
                assert!((got - want).abs() <= 1e-5 * want.abs().max(1.0), "{objective:?}: {got} vs {want}");
                // The masked position contributes nothing, to the loss or the gradient.
                assert!(grad[11..22].iter().all(|&g| g == 0.0), "{objective:?}");
            }
        }
    }

    #[test]
    fn gradients_pass_a_finite_difference_check() {
        for seed in 0..10 {
            let (z, t) = (random(seed, 2 * 7, 3.0), random(seed + 50, 2 * 7, 3.0));
            let mask = [1.0, 0.5];
            for objective in ALL {
                let mut grad = vec![0.0; z.len()];
                objective.loss_and_grad(&batch(&z, &t, &mask, &[0, 0], 7), &mut grad);
                // Central differences of the f64 batch loss, in f64 logits.
                let loss = |zz: &[f64]| {
                    (0..2)
                        .map(|i| {
                            let (mut lq, mut lp, mut b) = (vec![0.0; 7], vec![0.0; 7], vec![0.0; 7]);
                            log_softmax_f64(&zz[i * 7..(i + 1) * 7], &mut lq);
                            log_softmax(&t[i * 7..(i + 1) * 7], &mut lp);
                            mask[i] as f64 * objective.row(&lq, &lp, &mut b)
                        })
                        .sum::<f64>()
                        / 1.5
                };
                let base: Vec<f64> = z.iter().map(|&x| x as f64).collect();
                for j in 0..z.len() {
                    let h = 1e-6;
                    let (mut up, mut down) = (base.clone(), base.clone());
                    up[j] += h;
                    down[j] -= h;
                    let numeric = (loss(&up) - loss(&down)) / (2.0 * h);
                    // TVD has kinks where p = q; random inputs avoid them almost surely.
                    assert!((numeric - grad[j] as f64).abs() <= 1e-5, "{objective:?} [{j}]: analytic {} numeric {numeric}", grad[j]);
                }
            }
        }
    }

    fn log_softmax_f64(z: &[f64], out: &mut [f64]) {
        let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let lse = max + z.iter().map(|x| (x - max).exp()).sum::<f64>().ln();
        for (o, x) in out.iter_mut().zip(z) {
            *o = x - lse;
        }
    }

    #[test]
    fn extreme_logits_stay_finite() {
        // ±50 logits, teacher and student disagreeing completely.
        let z = [50.0f32, -50.0, -50.0, -50.0, 50.0, -50.0];
        let t = [-50.0f32, -50.0, 50.0, 50.0, -50.0, -50.0];
        for objective in ALL {
            let mut grad = vec![0.0; 6];
            let out = objective.loss_and_grad(&batch(&z, &t, &[1.0, 1.0], &[0, 0], 3), &mut grad);
            assert!(out.loss.is_finite() && out.kl.is_finite(), "{objective:?}: {out:?}");
            assert!(grad.iter().all(|g| g.is_finite()), "{objective:?}: {grad:?}");
        }
        let mut grad = vec![0.0; 6];
        assert!(cross_entropy(&batch(&z, &t, &[1.0, 1.0], &[1, 2], 3), &mut grad).loss.is_finite());
    }

    #[test]
    fn hand_computed_values() {
        // Two-token vocabulary: q = (1/2, 1/2), p = (e/(1+e), 1/(1+e)).
        let z = [0.0f32, 0.0];
        let t = [1.0f32, 0.0];
        let p1 = 1f64.exp() / (1.0 + 1f64.exp());
        let p = [p1, 1.0 - p1];
        let mut grad = vec![0.0; 2];
        let fkl = Objective::Fkl.loss_and_grad(&batch(&z, &t, &[1.0], &[0], 2), &mut grad);
        assert!((fkl.loss - 2f64.ln()).abs() < 1e-12);
        assert!((grad[0] as f64 - (0.5 - p[0])).abs() < 1e-7);
        let tvd = Objective::Tvd.loss_and_grad(&batch(&z, &t, &[1.0], &[0], 2), &mut grad);
        assert!((tvd.loss - (p1 - 0.5)).abs() < 1e-12);
        let ce = cross_entropy(&batch(&z, &t, &[1.0], &[1], 2), &mut grad);
        assert!((ce.loss - 2f64.ln()).abs() < 1e-12);
        assert_eq!(grad, [0.5, -0.5]);
    }

    #[test]
    fn from_params_falls_back_to_the_shared_defaults() {
        let given = |pairs: &[(&'static str, &'static str)]| {
            pairs.iter().map(|&(k, v)| crate::Param { key: k.into(), value: v.into() }).collect::<Vec<_>>()
        };
        let jsd = given(&[("objective", "jsd")]);
        assert_eq!(Objective::from_params(ParamList(&jsd)).unwrap(), Objective::Jsd(0.9));
        let sfkl = given(&[("objective", "sfkl")]);
        assert_eq!(Objective::from_params(ParamList(&sfkl)).unwrap(), Objective::Sfkl(0.1));
        let srkl = given(&[("objective", "srkl"), ("alpha", "0.25")]);
        assert_eq!(Objective::from_params(ParamList(&srkl)).unwrap(), Objective::Srkl(0.25));
        assert!(Objective::from_params(ParamList(&given(&[("beta", "0.5")]))).unwrap_err().contains("`objective` is missing"));
    }

    #[test]
    fn the_objective_help_lists_every_name() {
        assert_eq!(objective_param("fkl").help.as_str(), format!("divergence: {}", NAMES.join(", ")));
    }

    #[test]
    fn parse_rejects_unknown_names_and_bad_weights() {
        assert_eq!(Objective::parse("jsd", 0.5, 0.1).unwrap(), Objective::Jsd(0.5));
        assert!(Objective::parse("kl", 0.9, 0.1).unwrap_err().contains("choose one of fkl"));
        assert!(Objective::parse("srkl", 0.9, 1.5).unwrap_err().contains("alpha must be in [0, 1]"));
    }
}
