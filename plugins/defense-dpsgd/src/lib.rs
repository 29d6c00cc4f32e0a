//! DP-SGD fine-tuning of the teacher (Abadi et al. 2016) with the privacy it spends
//! computed by a Rényi-DP accountant for the sampled Gaussian mechanism (Mironov, Talwar
//! and Zhang 2019), as Opacus's `RDPAccountant` computes it.
//!
//! Each step: every example's gradient is clipped to L2 norm at most `max_grad_norm` (C);
//! the clipped gradients are summed, Gaussian noise `N(0, (noise_multiplier · C)²)` is
//! added to each coordinate, and the sum is divided by the number of examples. The
//! accountant composes `steps` such steps at sampling rate `q` (batch size over the
//! private records) and converts Rényi DP to `(ε, δ)` at the given `delta` (Balle et al.
//! 2020, Theorem 21), taking the best of Opacus's default orders.
//!
//! The accountant assumes Poisson sampling of each batch, as Opacus's does; the harness
//! draws fixed-size batches from a shuffled order (Opacus's default data loader without
//! Poisson sampling does the same), which is the usual approximation.

pub mod rdp;

use kdharness_plugin_api::defense::{Defense, DefenseTarget, PrivacySpent, standard_normal};
use kdharness_plugin_api::{ParamList, ParamSpec, export_plugins};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// `dpsgd`.
pub struct DpSgd {
    noise_multiplier: f64,
    max_grad_norm: f64,
    delta: f64,
    rng: ChaCha8Rng,
}

/// Scales each of the `n` rows of `per_example` (`[n, dim]`) to L2 norm at most `c`
/// (Opacus's factor `min(1, c / (norm + 1e-6))`); returns the norms before clipping.
pub fn clip_each(per_example: &mut [f32], n: usize, c: f64) -> Vec<f64> {
    let dim = per_example.len() / n.max(1);
    per_example
        .chunks_mut(dim.max(1))
        .take(n)
        .map(|g| {
            let norm = g.iter().map(|x| (*x as f64) * (*x as f64)).sum::<f64>().sqrt();
            let factor = (c / (norm + 1e-6)).min(1.0) as f32;
            g.iter_mut().for_each(|x| *x *= factor);
            norm
        })
        .collect()
}

impl Defense for DpSgd {
    const NAME: &'static str = "dpsgd";
    const DESCRIPTION: &'static str = "DP-SGD fine-tuning of the teacher (per-example clipping, Gaussian noise, RDP accountant)";
    const ACTS_ON: DefenseTarget = DefenseTarget::TEACHER_TRAINING;
    const PARAMS: &'static [ParamSpec] = &[
        ParamSpec::new("noise_multiplier", "1", "the noise's standard deviation over max_grad_norm (sigma)"),
        ParamSpec::new("max_grad_norm", "1", "each example's gradient is clipped to this L2 norm (C)"),
        ParamSpec::new("delta", "1e-5", "the delta at which epsilon is reported"),
    ];

    fn new(params: ParamList<'_>, seed: u64) -> Result<Self, String> {
        let (noise_multiplier, max_grad_norm, delta) = (params.f64("noise_multiplier")?, params.f64("max_grad_norm")?, params.f64("delta")?);
        if !(noise_multiplier >= 0.0 && noise_multiplier.is_finite()) {
            return Err(format!("noise_multiplier must be a non-negative number, got {noise_multiplier}"));
        }
        if !(max_grad_norm > 0.0 && max_grad_norm.is_finite()) {
            return Err(format!("max_grad_norm must be a positive number, got {max_grad_norm}"));
        }
        if !(delta > 0.0 && delta < 1.0) {
            return Err(format!("delta must be in (0, 1), got {delta}"));
        }
        Ok(DpSgd { noise_multiplier, max_grad_norm, delta, rng: ChaCha8Rng::seed_from_u64(seed) })
    }

    fn private_gradient(&mut self, per_example: &mut [f32], n: usize, out: &mut [f32]) -> Result<(), String> {
        let dim = out.len();
        if n == 0 || per_example.len() != n * dim {
            return Err(format!("{} per-example values for {n} examples of {dim} coordinates", per_example.len()));
        }
        clip_each(per_example, n, self.max_grad_norm);
        let std = self.noise_multiplier * self.max_grad_norm;
        for (j, o) in out.iter_mut().enumerate() {
            let sum: f64 = (0..n).map(|i| per_example[i * dim + j] as f64).sum();
            let noise = if std > 0.0 {
                let (u1, u2): (f64, f64) = (1.0 - self.rng.r#gen::<f64>(), self.rng.r#gen());
                std * standard_normal(u1, u2)
            } else {
                0.0
            };
            *o = ((sum + noise) / n as f64) as f32;
        }
        Ok(())
    }

    fn privacy_spent(&self, steps: u64, sample_rate: f64) -> Result<Option<PrivacySpent>, String> {
        let rdp = rdp::compute_rdp(sample_rate, self.noise_multiplier, steps, &rdp::default_orders());
        let (epsilon, order) = rdp::privacy_spent(&rdp::default_orders(), &rdp, self.delta);
        Ok(Some(PrivacySpent { epsilon, delta: self.delta, order }))
    }
}

export_plugins!(defenses: [DpSgd]);

#[cfg(test)]
mod tests {
    use super::*;
    use kdharness_plugin_api::defense::instance;

    #[test]
    fn each_examples_gradient_is_clipped_to_the_norm_before_noise() {
        // Four examples of three coordinates: norms 5, 0.5, 13, 0.
        let mut g = vec![3.0f32, 4.0, 0.0, 0.3, 0.4, 0.0, 5.0, 0.0, 12.0, 0.0, 0.0, 0.0];
        let norms = clip_each(&mut g, 4, 1.0);
        for (got, want) in norms.iter().zip([5.0, 0.5, 13.0, 0.0]) {
            assert!((got - want).abs() < 1e-6, "{norms:?}");
        }
        for (row, before) in g.chunks(3).zip(norms) {
            let after = row.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
            assert!(after <= 1.0 + 1e-6, "{after}");
            if before < 1.0 {
                assert!((after - before).abs() < 1e-7, "a gradient within the norm is left alone");
            }
        }
        assert!((g[0] - 0.6).abs() < 1e-6 && (g[1] - 0.8).abs() < 1e-6);
        // Without noise the step's gradient is the clipped mean.
        let mut d = instance::<DpSgd>(&[("noise_multiplier", "0"), ("max_grad_norm", "1")], 0).unwrap();
        let mut g = vec![3.0f32, 4.0, 0.0, 0.3, 0.4, 0.0];
        let mut out = vec![0f32; 3];
        d.private_gradient(&mut g, 2, &mut out).unwrap();
        assert!((out[0] - 0.45).abs() < 1e-6 && (out[1] - 0.6).abs() < 1e-6 && out[2] == 0.0, "{out:?}");
    }

    #[test]
    fn the_noise_is_seeded_with_standard_deviation_sigma_c_over_n() {
        let draw = |seed| {
            let mut d = instance::<DpSgd>(&[("noise_multiplier", "1.5"), ("max_grad_norm", "2")], seed).unwrap();
            let (n, dim) = (4, 50_000);
            let mut g = vec![0f32; n * dim];
            let mut out = vec![0f32; dim];
            d.private_gradient(&mut g, n, &mut out).unwrap();
            out
        };
        let (a, b) = (draw(3), draw(3));
        assert_eq!(a, b);
        assert_ne!(a, draw(4));
        let sd = (a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>() / a.len() as f64).sqrt();
        // σ·C/n = 1.5·2/4 = 0.75; standard error 0.75/√(2·50000) ≈ 0.0024.
        assert!((sd - 0.75).abs() < 0.01, "{sd}");
    }

    #[test]
    fn the_privacy_spent_is_reported_at_the_given_delta() {
        let d = instance::<DpSgd>(&[("noise_multiplier", "1"), ("delta", "1e-5")], 0).unwrap();
        let spent = d.privacy_spent(1000, 0.01).unwrap().unwrap();
        assert_eq!(spent.delta, 1e-5);
        assert!(spent.epsilon > 0.0 && spent.epsilon.is_finite());
        // More noise spends less.
        let quieter = instance::<DpSgd>(&[("noise_multiplier", "2")], 0).unwrap().privacy_spent(1000, 0.01).unwrap().unwrap();
        assert!(quieter.epsilon < spent.epsilon);
    }
}
