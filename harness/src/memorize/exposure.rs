//! Canary exposure (Carlini et al., "The Secret Sharer", USENIX Security 2019): how much
//! more likely a model finds a canary's secret than the other values of its format.
//!
//! A canary's secret is drawn from a stated space `R`: here every string of `digits`
//! decimal digits (the synthetic canaries carry an 8-digit code inside a fixed sentence,
//! |R| = 10⁸). Each candidate `r ∈ R` is the canary with its secret replaced by `r`; its
//! log-perplexity is `Px(r) = −log₂ Pr(response | prompt)` under the model. The exposure
//! of the secret `s` is `log₂|R| − log₂ rank(s)`, its rank being its place among all
//! candidates ordered by log-perplexity (1: the most likely). It is at least 0 and at
//! most `log₂|R|`.
//!
//! - Where the space is small enough to score whole ([`Estimate::Exhaustive`]), the rank
//!   is counted: one plus the candidates strictly more likely than the secret.
//! - Otherwise ([`Estimate::SkewNormal`]), from a seeded sample of candidates, by the
//!   paper's extrapolation (§4.3): a skew-normal distribution fitted to the sampled
//!   log-perplexities by the method of moments stands for all of `R`, and the exposure is
//!   `−log₂ F(Px(s))`, `F` its CDF (the share of candidates more likely than the secret),
//!   clamped to `[0, log₂|R|]`. The tail is computed in log space, so exposures far beyond
//!   `log₂` of the sample size are resolved.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

/// How an exposure was estimated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Estimate {
    /// Every candidate of the space scored; the rank counted.
    Exhaustive,
    /// A sample of candidates, extrapolated by a fitted skew-normal distribution.
    SkewNormal,
}

impl Estimate {
    /// Its name in `exposure.csv`.
    pub fn as_str(self) -> &'static str {
        match self {
            Estimate::Exhaustive => "exhaustive",
            Estimate::SkewNormal => "skew_normal",
        }
    }
}

/// The byte range of the secret in `text`: the first run of exactly `digits` decimal
/// digits.
pub fn find_secret(text: &str, digits: usize) -> Option<std::ops::Range<usize>> {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_digit() {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            if i - start == digits {
                return Some(start..i);
            }
        } else {
            i += 1;
        }
    }
    None
}

/// The size of the space of `digits`-digit secrets.
pub fn space_size(digits: usize) -> f64 {
    10f64.powi(digits as i32)
}

/// The other candidates of `secret`'s space to score: all of them when there are at most
/// `count` (exhaustive), else `count` distinct ones drawn with `seed`.
pub fn candidates(secret: &str, count: usize, seed: u64) -> (Vec<String>, Estimate) {
    let digits = secret.len();
    let space = space_size(digits);
    if space - 1.0 <= count as f64 {
        let all = (0..space as u64).map(|v| format!("{v:0digits$}")).filter(|c| c != secret).collect();
        return (all, Estimate::Exhaustive);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        let c: String = (0..digits).map(|_| char::from(b'0' + rng.gen_range(0..10u8))).collect();
        if c != secret && seen.insert(c.clone()) {
            out.push(c);
        }
    }
    (out, Estimate::SkewNormal)
}

/// One exposure: the secret's estimated rank among the `space` candidates, and the
/// exposure `log₂ space − log₂ rank`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Exposure {
    /// The rank (1: the most likely value of the space).
    pub rank: f64,
    /// `log₂|R| − log₂ rank`, in bits.
    pub bits: f64,
}

/// The exposure of a secret of log-perplexity `secret` among candidates of log-perplexities
/// `others` (every other value of the space for [`Estimate::Exhaustive`], a sample for
/// [`Estimate::SkewNormal`]) in a space of `space` values.
pub fn exposure(secret: f64, others: &[f64], space: f64, estimate: Estimate) -> Exposure {
    let max = space.log2();
    match estimate {
        Estimate::Exhaustive => {
            let rank = 1.0 + others.iter().filter(|&&p| p < secret).count() as f64;
            Exposure { rank, bits: max - rank.log2() }
        }
        Estimate::SkewNormal => {
            let fit = SkewNormal::fit(others);
            // F(Px(s)): the share of the space more likely than the secret.
            let bits = (-fit.log_cdf(secret) / std::f64::consts::LN_2).clamp(0.0, max);
            Exposure { rank: space * 2f64.powf(-bits), bits }
        }
    }
}

/// A skew-normal distribution: location `xi`, scale `omega`, shape `alpha`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SkewNormal {
    /// ξ.
    pub xi: f64,
    /// ω.
    pub omega: f64,
    /// α.
    pub alpha: f64,
}

impl SkewNormal {
    /// The method-of-moments fit to `sample`: its mean, sample standard deviation and
    /// (biased) skewness, the skewness clamped to ±0.99 (a skew-normal's is below 0.9953).
    pub fn fit(sample: &[f64]) -> SkewNormal {
        let n = sample.len() as f64;
        let mean = sample.iter().sum::<f64>() / n;
        let m2 = sample.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
        let m3 = sample.iter().map(|x| (x - mean).powi(3)).sum::<f64>() / n;
        let sd = (m2 * n / (n - 1.0)).sqrt();
        let gamma = if m2 > 0.0 { m3 / m2.powf(1.5) } else { 0.0 };
        let g = gamma.abs().min(0.99);
        let c = ((4.0 - std::f64::consts::PI) / 2.0).powf(2.0 / 3.0);
        let delta = gamma.signum() * (std::f64::consts::FRAC_PI_2 * g.powf(2.0 / 3.0) / (g.powf(2.0 / 3.0) + c)).sqrt();
        let omega = sd / (1.0 - 2.0 * delta * delta / std::f64::consts::PI).sqrt();
        SkewNormal { xi: mean - omega * delta * (2.0 / std::f64::consts::PI).sqrt(), omega: omega.max(f64::MIN_POSITIVE), alpha: delta / (1.0 - delta * delta).sqrt() }
    }

    /// `ln F(x)`, integrating the density `2 φ(t) Φ(α t)` over `(−∞, z]` (`z` the standard
    /// score) in log space on a grid of step 0.002 (trapezoid rule).
    pub fn log_cdf(&self, x: f64) -> f64 {
        let z = (x - self.xi) / self.omega;
        if z > 12.0 {
            // Everything but less than e^-70 of the mass lies below.
            return 0.0;
        }
        let log_density = |t: f64| std::f64::consts::LN_2 + log_phi(t) + log_big_phi(self.alpha * t);
        // Below z − 40 (or −40, whichever is lower) nothing is left to add.
        let (h, lower) = (0.002, z.min(0.0) - 40.0);
        let steps = ((z - lower) / h).ceil() as usize;
        let values: Vec<f64> = (0..=steps).map(|k| log_density(z - k as f64 * h) + if k == 0 || k == steps { 0.5f64.ln() } else { 0.0 }).collect();
        let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        max + values.iter().map(|v| (v - max).exp()).sum::<f64>().ln() + h.ln()
    }
}

/// `ln φ(t)`, the standard normal density.
fn log_phi(t: f64) -> f64 {
    -0.5 * t * t - 0.5 * (2.0 * std::f64::consts::PI).ln()
}

/// `ln Φ(s)`, the standard normal CDF, accurate far into the lower tail.
fn log_big_phi(s: f64) -> f64 {
    log_erfc(-s / std::f64::consts::SQRT_2) - std::f64::consts::LN_2
}

/// `ln erfc(x)`: libm's below 20, the asymptotic series above (where erfc underflows).
fn log_erfc(x: f64) -> f64 {
    if x < 20.0 {
        return libm::erfc(x).ln();
    }
    let y = 1.0 / (x * x);
    let series = 1.0 - y / 2.0 + 3.0 * y * y / 4.0 - 15.0 * y.powi(3) / 8.0 + 105.0 * y.powi(4) / 16.0;
    -x * x - (x * std::f64::consts::PI.sqrt()).ln() + series.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_is_the_run_of_exactly_the_stated_digits() {
        let text = "Of course, Ann: your code is 04120977. Keep it, not in 12 or 123456789.";
        assert_eq!(find_secret(text, 8).map(|r| &text[r]), Some("04120977"));
        assert_eq!(find_secret("codes 123456789 and 12", 8), None);
    }

    #[test]
    fn exhaustive_exposure_is_log_space_minus_log_rank() {
        // A space of 100 two-digit values; the secret beaten by exactly 3 of the other 99.
        let (others, estimate) = candidates("42", 1000, 0);
        assert_eq!((others.len(), estimate), (99, Estimate::Exhaustive));
        assert!(!others.contains(&"42".to_string()) && others.contains(&"00".to_string()));
        let px: Vec<f64> = (0..99).map(|i| if i < 3 { 5.0 + i as f64 * 0.1 } else { 20.0 + i as f64 }).collect();
        let e = exposure(10.0, &px, 100.0, Estimate::Exhaustive);
        assert_eq!(e.rank, 4.0);
        assert!((e.bits - (100f64.log2() - 2.0)).abs() < 1e-12, "{e:?}");
        // The most likely value: the maximum, log₂|R|; the least likely: 0.
        assert!((exposure(1.0, &px, 100.0, Estimate::Exhaustive).bits - 100f64.log2()).abs() < 1e-12);
        assert_eq!(exposure(1e9, &px, 100.0, Estimate::Exhaustive).bits, 0.0);
    }

    #[test]
    fn sampled_candidates_are_distinct_seeded_and_of_the_format() {
        let (a, estimate) = candidates("04120977", 300, 5);
        assert_eq!(estimate, Estimate::SkewNormal);
        assert_eq!(a, candidates("04120977", 300, 5).0);
        assert_ne!(a, candidates("04120977", 300, 6).0);
        assert_eq!(a.iter().collect::<std::collections::BTreeSet<_>>().len(), 300);
        assert!(a.iter().all(|c| c.len() == 8 && c.bytes().all(|b| b.is_ascii_digit()) && c != "04120977"));
    }

    #[test]
    fn the_skew_normal_matches_scipy_far_into_the_tail() {
        let reference: serde_json::Value = serde_json::from_str(include_str!("../../../tests/fixtures/exposure_reference.json")).unwrap();
        for row in reference["cdf"].as_array().unwrap() {
            let f = |k: &str| row[k].as_f64().unwrap();
            let d = SkewNormal { xi: f("loc"), omega: f("scale"), alpha: f("a") };
            let (got, want) = (d.log_cdf(f("x")), f("logcdf"));
            assert!((got - want).abs() <= 1e-5 * want.abs().max(1.0), "a {} x {}: {got} vs scipy {want}", f("a"), f("x"));
        }
        let fit = &reference["fit"];
        let sample: Vec<f64> = fit["sample"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        let d = SkewNormal::fit(&sample);
        for (got, key) in [(d.alpha, "alpha"), (d.xi, "loc"), (d.omega, "scale")] {
            let want = fit[key].as_f64().unwrap();
            assert!((got - want).abs() < 1e-9 * want.abs().max(1.0), "{key}: {got} vs {want}");
        }
        for row in fit["logcdf"].as_array().unwrap() {
            let (x, want) = (row["x"].as_f64().unwrap(), row["logcdf"].as_f64().unwrap());
            assert!((d.log_cdf(x) - want).abs() <= 1e-5 * want.abs().max(1.0), "x {x}: {} vs {want}", d.log_cdf(x));
        }
    }

    #[test]
    fn extrapolated_exposure_is_bounded_and_grows_as_the_secret_gets_likelier() {
        let sample: Vec<f64> = (0..500).map(|i| 40.0 + 6.0 * ((i as f64 + 0.5) / 500.0 - 0.5)).collect();
        let space = space_size(8);
        let mut last = -1.0;
        for secret in [60.0, 43.0, 40.0, 37.0, 30.0, 10.0, -1e6] {
            let e = exposure(secret, &sample, space, Estimate::SkewNormal);
            assert!(e.bits >= 0.0 && e.bits <= space.log2(), "{e:?}");
            assert!(e.bits >= last, "{secret}: {} after {last}", e.bits);
            last = e.bits;
        }
        assert_eq!(last, space.log2(), "a secret far likelier than every candidate has the maximum");
        assert_eq!(exposure(1e6, &sample, space, Estimate::SkewNormal).bits, 0.0);
    }
}
