//! Teacher-output defenses: what a teacher served behind an API could do to its logits
//! before a student distils from them. Each acts on one row (one position) at a time.
//!
//! - `temperature`: the logits divided by `t` (`t > 1` flattens the distribution).
//! - `topk`: only the `k` most likely tokens keep their probability, renormalised; the
//!   rest get probability 0 (logit `-inf`).
//! - `logit_noise`: Gaussian noise `N(0, sigma²)` added to every logit, seeded.
//! - `round_probs`: each probability rounded to a multiple of `2^-bits`, then
//!   renormalised; tokens rounded to 0 get probability 0 (if every token rounds to 0,
//!   the most likely keeps probability 1).

use kdharness_plugin_api::defense::{Defense, DefenseTarget, standard_normal};
use kdharness_plugin_api::{ParamList, ParamSpec, export_plugins};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// `temperature`.
pub struct Temperature {
    t: f32,
}

impl Defense for Temperature {
    const NAME: &'static str = "temperature";
    const DESCRIPTION: &'static str = "teacher logits divided by t before the KD loss (t > 1 flattens)";
    const ACTS_ON: DefenseTarget = DefenseTarget::TEACHER_LOGITS;
    const PARAMS: &'static [ParamSpec] = &[ParamSpec::new("t", "2", "the divisor of the logits (> 0; 1 changes nothing)")];

    fn new(params: ParamList<'_>, _seed: u64) -> Result<Self, String> {
        let t = params.f64("t")?;
        if !(t > 0.0 && t.is_finite()) {
            return Err(format!("t must be a positive number, got {t}"));
        }
        Ok(Temperature { t: t as f32 })
    }

    fn teacher_logits(&mut self, logits: &mut [f32], _vocab: usize) -> Result<(), String> {
        logits.iter_mut().for_each(|z| *z /= self.t);
        Ok(())
    }
}

/// `topk`.
pub struct TopK {
    k: usize,
}

impl Defense for TopK {
    const NAME: &'static str = "topk";
    const DESCRIPTION: &'static str = "only the teacher's k most likely tokens, renormalised (the rest probability 0)";
    const ACTS_ON: DefenseTarget = DefenseTarget::TEACHER_LOGITS;
    const PARAMS: &'static [ParamSpec] = &[ParamSpec::new("k", "10", "tokens kept per position (ties: the lower token id first)")];

    fn new(params: ParamList<'_>, _seed: u64) -> Result<Self, String> {
        let k = params.count("k")? as usize;
        if k == 0 {
            return Err("k must be at least 1".into());
        }
        Ok(TopK { k })
    }

    fn teacher_logits(&mut self, logits: &mut [f32], vocab: usize) -> Result<(), String> {
        if self.k >= vocab {
            return Ok(());
        }
        let mut order: Vec<usize> = Vec::with_capacity(vocab);
        for row in logits.chunks_mut(vocab) {
            order.clear();
            order.extend(0..vocab);
            // The k largest, ties broken by the lower id: a total order, so exactly k.
            order.select_nth_unstable_by(self.k - 1, |&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
            for &j in &order[self.k..] {
                row[j] = f32::NEG_INFINITY;
            }
        }
        Ok(())
    }
}

/// `logit_noise`.
pub struct LogitNoise {
    sigma: f64,
    rng: ChaCha8Rng,
}

impl Defense for LogitNoise {
    const NAME: &'static str = "logit_noise";
    const DESCRIPTION: &'static str = "Gaussian noise N(0, sigma^2) added to every teacher logit (seeded)";
    const ACTS_ON: DefenseTarget = DefenseTarget::TEACHER_LOGITS;
    const PARAMS: &'static [ParamSpec] = &[ParamSpec::new("sigma", "1", "the noise's standard deviation, in logits")];

    fn new(params: ParamList<'_>, seed: u64) -> Result<Self, String> {
        let sigma = params.f64("sigma")?;
        if !(sigma >= 0.0 && sigma.is_finite()) {
            return Err(format!("sigma must be a non-negative number, got {sigma}"));
        }
        Ok(LogitNoise { sigma, rng: ChaCha8Rng::seed_from_u64(seed) })
    }

    fn teacher_logits(&mut self, logits: &mut [f32], _vocab: usize) -> Result<(), String> {
        for z in logits.iter_mut() {
            let (u1, u2): (f64, f64) = (1.0 - self.rng.r#gen::<f64>(), self.rng.r#gen());
            *z += (self.sigma * standard_normal(u1, u2)) as f32;
        }
        Ok(())
    }
}

/// `round_probs`.
pub struct RoundProbs {
    bits: u32,
}

impl Defense for RoundProbs {
    const NAME: &'static str = "round_probs";
    const DESCRIPTION: &'static str = "teacher probabilities rounded to multiples of 2^-bits, renormalised";
    const ACTS_ON: DefenseTarget = DefenseTarget::TEACHER_LOGITS;
    const PARAMS: &'static [ParamSpec] = &[ParamSpec::new("bits", "4", "bits per probability (1 to 24)")];

    fn new(params: ParamList<'_>, _seed: u64) -> Result<Self, String> {
        let bits = params.count("bits")?;
        if !(1..=24).contains(&bits) {
            return Err(format!("bits must be between 1 and 24, got {bits}"));
        }
        Ok(RoundProbs { bits })
    }

    fn teacher_logits(&mut self, logits: &mut [f32], vocab: usize) -> Result<(), String> {
        let levels = (1u64 << self.bits) as f64;
        let mut probs = vec![0f64; vocab];
        for row in logits.chunks_mut(vocab) {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let total: f64 = row.iter().map(|&z| (z as f64 - max).exp()).sum();
            let mut kept = 0.0;
            for (p, &z) in probs.iter_mut().zip(row.iter()) {
                *p = (((z as f64 - max).exp() / total) * levels).round() / levels;
                kept += *p;
            }
            if kept == 0.0 {
                let top = (0..vocab).fold(0, |best, j| if row[j] > row[best] { j } else { best });
                probs.iter_mut().for_each(|p| *p = 0.0);
                probs[top] = 1.0;
                kept = 1.0;
            }
            for (z, p) in row.iter_mut().zip(&probs) {
                *z = if *p == 0.0 { f32::NEG_INFINITY } else { (p / kept).ln() as f32 };
            }
        }
        Ok(())
    }
}

export_plugins!(defenses: [Temperature, TopK, LogitNoise, RoundProbs]);

#[cfg(test)]
mod tests {
    use super::*;
    use kdharness_plugin_api::defense::instance;

    fn softmax(row: &[f32]) -> Vec<f64> {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let e: Vec<f64> = row.iter().map(|&z| (z as f64 - max).exp()).collect();
        let s: f64 = e.iter().sum();
        e.iter().map(|x| x / s).collect()
    }

    #[test]
    fn temperature_divides_the_logits() {
        let mut d = instance::<Temperature>(&[("t", "4")], 0).unwrap();
        let mut z = [4.0f32, -8.0, 0.0];
        d.teacher_logits(&mut z, 3).unwrap();
        assert_eq!(z, [1.0, -2.0, 0.0]);
        // Hand value: softmax(1, -2, 0) = e / (e + e^-2 + 1).
        let p = softmax(&z);
        let e = std::f64::consts::E;
        assert!((p[0] - e / (e + (-2f64).exp() + 1.0)).abs() < 1e-7);
        assert!(instance::<Temperature>(&[("t", "0")], 0).is_err());
    }

    #[test]
    fn topk_keeps_exactly_k_tokens_and_renormalises() {
        let mut d = instance::<TopK>(&[("k", "2")], 0).unwrap();
        // Two rows; the second has a tie at the boundary (ids 1 and 3, both 2.0).
        let mut z = [1.0f32, 3.0, 0.5, 2.0, /* */ 0.0, 2.0, 5.0, 2.0];
        d.teacher_logits(&mut z, 4).unwrap();
        assert_eq!(&z[..4], &[f32::NEG_INFINITY, 3.0, f32::NEG_INFINITY, 2.0]);
        assert_eq!(&z[4..], &[f32::NEG_INFINITY, 2.0, 5.0, f32::NEG_INFINITY]);
        for row in z.chunks(4) {
            assert_eq!(row.iter().filter(|x| x.is_finite()).count(), 2);
            let p = softmax(row);
            assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        }
        // Hand value: p(1) = e^3 / (e^3 + e^2) on the first row.
        let p = softmax(&z[..4]);
        assert!((p[1] - 3f64.exp() / (3f64.exp() + 2f64.exp())).abs() < 1e-7, "{p:?}");
        // k at least the vocabulary: nothing removed.
        let mut d = instance::<TopK>(&[("k", "4")], 0).unwrap();
        let mut z = [1.0f32, 2.0, 3.0, 4.0];
        d.teacher_logits(&mut z, 4).unwrap();
        assert_eq!(z, [1.0, 2.0, 3.0, 4.0]);
        assert!(instance::<TopK>(&[("k", "0")], 0).is_err());
    }

    #[test]
    fn logit_noise_is_seeded_and_has_the_requested_scale() {
        let n = 200_000;
        let noise = |seed: u64, sigma: &str| {
            let mut d = instance::<LogitNoise>(&[("sigma", sigma)], seed).unwrap();
            let mut z = vec![1.5f32; n];
            d.teacher_logits(&mut z, 1000).unwrap();
            z.iter().map(|x| *x as f64 - 1.5).collect::<Vec<f64>>()
        };
        let (a, b, c) = (noise(7, "2"), noise(7, "2"), noise(8, "2"));
        assert_eq!(a, b, "the same seed gives the same noise");
        assert_ne!(a, c, "another seed gives other noise");
        let mean = a.iter().sum::<f64>() / n as f64;
        let sd = (a.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt();
        // Standard errors: mean 2/√n ≈ 0.0045, sd 2/√(2n) ≈ 0.0032.
        assert!(mean.abs() < 0.02, "mean {mean}");
        assert!((sd - 2.0).abs() < 0.015, "sd {sd}");
        // A normal's share within one sigma: 0.6827.
        let within = a.iter().filter(|x| x.abs() < 2.0).count() as f64 / n as f64;
        assert!((within - 0.6827).abs() < 0.005, "{within}");
        assert!(noise(1, "0").iter().all(|x| *x == 0.0));
    }

    #[test]
    fn rounding_keeps_multiples_of_the_step_and_renormalises() {
        let mut d = instance::<RoundProbs>(&[("bits", "2")], 0).unwrap();
        // p = (0.6, 0.3, 0.1) → rounded to quarters (0.5, 0.25, 0) → (2/3, 1/3, 0).
        let p: [f64; 3] = [0.6, 0.3, 0.1];
        let mut z: Vec<f32> = p.iter().map(|x| x.ln() as f32).collect();
        d.teacher_logits(&mut z, 3).unwrap();
        let q = softmax(&z);
        assert!((q[0] - 2.0 / 3.0).abs() < 1e-6 && (q[1] - 1.0 / 3.0).abs() < 1e-6 && q[2] == 0.0, "{q:?}");
        assert_eq!(z[2], f32::NEG_INFINITY);
        // A flat row over 16 tokens at 2 bits: every 1/16 rounds to 0 → the first keeps 1.
        let mut z = vec![0.0f32; 16];
        d.teacher_logits(&mut z, 16).unwrap();
        assert_eq!(z[0], 0.0);
        assert!(z[1..].iter().all(|x| *x == f32::NEG_INFINITY));
    }
}
