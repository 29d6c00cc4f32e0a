//! Statistics for defending results (SPEC §10): a paired bootstrap test of two models'
//! AUC on the same samples, and Spearman's rank correlation with its p-value.

use rand::Rng;
use serde::Serialize;

use super::{Bootstrap, auc_of, percentile};

/// A paired comparison of two models' AUC on the same members and non-members.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PairedTest {
    /// `AUC(a) − AUC(b)` on the full sets.
    pub difference: f64,
    /// 95% percentile interval of the bootstrapped difference.
    pub ci: (f64, f64),
    /// Two-sided bootstrap p-value of "no difference": twice the smaller tail of
    /// replicates on either side of 0, counted as `(tail + 1) / (resamples + 1)` so that a
    /// finite bootstrap never claims p = 0 (at most 1).
    pub p_value: f64,
    /// Replicates drawn.
    pub resamples: usize,
}

/// Paired, stratified bootstrap of `AUC(a) − AUC(b)`: each replicate resamples member
/// indices and non-member indices (separately, with replacement) and evaluates both
/// models on the same resampled samples. `a_*[i]` and `b_*[i]` must score the same sample.
pub fn paired_auc_test(
    a_members: &[f64],
    a_nonmembers: &[f64],
    b_members: &[f64],
    b_nonmembers: &[f64],
    settings: Bootstrap,
    stream: &str,
) -> PairedTest {
    assert_eq!(a_members.len(), b_members.len(), "paired scores: same members");
    assert_eq!(a_nonmembers.len(), b_nonmembers.len(), "paired scores: same non-members");
    let difference = auc_of(a_members, a_nonmembers) - auc_of(b_members, b_nonmembers);
    let resamples = settings.resamples.max(1);
    let mut rng = crate::rng::stream(&format!("{}/paired/{stream}", settings.seed));
    let (m, n) = (a_members.len(), a_nonmembers.len());
    let mut diffs = Vec::with_capacity(resamples);
    let (mut am, mut bm, mut an, mut bn) = (vec![0.0; m], vec![0.0; m], vec![0.0; n], vec![0.0; n]);
    for _ in 0..resamples {
        for i in 0..m {
            let j = rng.gen_range(0..m);
            (am[i], bm[i]) = (a_members[j], b_members[j]);
        }
        for i in 0..n {
            let j = rng.gen_range(0..n);
            (an[i], bn[i]) = (a_nonmembers[j], b_nonmembers[j]);
        }
        diffs.push(auc_of(&am, &an) - auc_of(&bm, &bn));
    }
    diffs.sort_by(f64::total_cmp);
    let below = diffs.iter().filter(|&&d| d <= 0.0).count();
    let above = diffs.iter().filter(|&&d| d >= 0.0).count();
    let p_value = (2.0 * (below.min(above) + 1) as f64 / (resamples + 1) as f64).min(1.0);
    PairedTest { difference, ci: (percentile(&diffs, 2.5), percentile(&diffs, 97.5)), p_value, resamples }
}

/// Ranks with ties sharing their average rank (1-based).
pub fn average_ranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut ranks = vec![0.0; values.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && values[order[j + 1]] == values[order[i]] {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            ranks[k] = rank;
        }
        i = j + 1;
    }
    ranks
}

/// Spearman's ρ (Pearson correlation of average ranks) and its two-sided p-value from the
/// t distribution with n − 2 degrees of freedom (as `scipy.stats.spearmanr`). NaN when
/// fewer than 3 pairs or a constant input.
pub fn spearman(x: &[f64], y: &[f64]) -> (f64, f64) {
    assert_eq!(x.len(), y.len());
    let n = x.len();
    if n < 3 {
        return (f64::NAN, f64::NAN);
    }
    let (rx, ry) = (average_ranks(x), average_ranks(y));
    let mean = (n as f64 + 1.0) / 2.0;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in rx.iter().zip(&ry) {
        sxy += (a - mean) * (b - mean);
        sxx += (a - mean) * (a - mean);
        syy += (b - mean) * (b - mean);
    }
    if sxx == 0.0 || syy == 0.0 {
        return (f64::NAN, f64::NAN);
    }
    let rho = (sxy / (sxx * syy).sqrt()).clamp(-1.0, 1.0);
    let df = (n - 2) as f64;
    let p = if rho.abs() == 1.0 {
        0.0
    } else {
        let t2 = rho * rho * df / (1.0 - rho * rho);
        incomplete_beta(df / 2.0, 0.5, df / (df + t2))
    };
    (rho, p)
}

/// The regularized incomplete beta function `I_x(a, b)` (continued fraction, Lentz).
pub fn incomplete_beta(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let front = (ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln()).exp();
    // The continued fraction converges fast for x < (a + 1)/(a + b + 2); use symmetry otherwise.
    if x > (a + 1.0) / (a + b + 2.0) {
        return 1.0 - incomplete_beta(b, a, 1.0 - x);
    }
    const TINY: f64 = 1e-300;
    let (mut c, mut d) = (1.0, 1.0 - (a + b) * x / (a + 1.0));
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut f = d;
    for m in 1..300 {
        let m = m as f64;
        for numerator in [
            m * (b - m) * x / ((a + 2.0 * m - 1.0) * (a + 2.0 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2.0 * m) * (a + 2.0 * m + 1.0)),
        ] {
            d = 1.0 + numerator * d;
            if d.abs() < TINY {
                d = TINY;
            }
            c = 1.0 + numerator / c;
            if c.abs() < TINY {
                c = TINY;
            }
            d = 1.0 / d;
            f *= c * d;
        }
        if (c * d - 1.0).abs() < 1e-15 {
            break;
        }
    }
    front * f / a
}

/// `ln Γ(x)` (Lanczos approximation, g = 7, 9 terms; about 15 significant digits).
pub fn ln_gamma(x: f64) -> f64 {
    const COEF: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let t = x + 7.5;
    let series: f64 = COEF[0] + COEF[1..].iter().enumerate().map(|(i, c)| c / (x + i as f64 + 1.0)).sum::<f64>();
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + series.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spearman_and_paired_auc_match_scipy_and_sklearn() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/stats_reference.json");
        let reference: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let floats = |v: &serde_json::Value| v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect::<Vec<f64>>();
        for (name, case) in reference["spearman"].as_object().unwrap() {
            let (rho, p) = spearman(&floats(&case["x"]), &floats(&case["y"]));
            let (want_rho, want_p) = (case["rho"].as_f64().unwrap(), case["p"].as_f64().unwrap());
            assert!((rho - want_rho).abs() < 1e-12, "{name}: rho {rho} vs {want_rho}");
            assert!((p - want_p).abs() <= 1e-9_f64.max(1e-9 * want_p), "{name}: p {p} vs {want_p}");
        }
        for (name, case) in reference["paired"].as_object().unwrap() {
            let t = paired_auc_test(
                &floats(&case["a_members"]),
                &floats(&case["a_nonmembers"]),
                &floats(&case["b_members"]),
                &floats(&case["b_nonmembers"]),
                Bootstrap { resamples: 4000, seed: 1 },
                name,
            );
            let want = case["auc_a"].as_f64().unwrap() - case["auc_b"].as_f64().unwrap();
            assert!((t.difference - want).abs() < 1e-12, "{name}: {} vs {want}", t.difference);
            // The interval: numpy's bootstrap of the same estimator (20,000 replicates) up
            // to Monte Carlo error (an endpoint's sd, estimated from the normal density at
            // the 2.5% point, about 0.002), and DeLong's
            // analytic interval up to the bootstrap's own difference from normality. An
            // unpaired or unstratified resampling is wider by more than this.
            let (boot, delong) = (floats(&case["ci_bootstrap"]), floats(&case["ci_delong"]));
            for (got, b, d) in [(t.ci.0, boot[0], delong[0]), (t.ci.1, boot[1], delong[1])] {
                assert!((got - b).abs() < 0.01, "{name}: interval {:?} vs numpy's {boot:?}", t.ci);
                assert!((got - d).abs() < 0.015, "{name}: interval {:?} vs DeLong's {delong:?}", t.ci);
            }
        }
    }

    #[test]
    fn ranks_average_ties() {
        assert_eq!(average_ranks(&[10.0, 20.0, 10.0, 5.0]), [2.5, 4.0, 2.5, 1.0]);
    }

    #[test]
    fn special_functions_match_known_values() {
        // Γ(5) = 24, Γ(1/2) = √π.
        assert!((ln_gamma(5.0) - 24f64.ln()).abs() < 1e-12);
        assert!((ln_gamma(0.5) - std::f64::consts::PI.sqrt().ln()).abs() < 1e-12);
        // I_x(1, 1) = x; I_0.5(a, a) = 0.5.
        assert!((incomplete_beta(1.0, 1.0, 0.3) - 0.3).abs() < 1e-12);
        assert!((incomplete_beta(3.5, 3.5, 0.5) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn a_model_against_itself_differs_by_nothing() {
        let m = [0.9, 0.8, 0.4, 0.7];
        let n = [0.3, 0.5, 0.1, 0.6, 0.2];
        let t = paired_auc_test(&m, &n, &m, &n, Bootstrap { resamples: 200, seed: 0 }, "x");
        assert_eq!((t.difference, t.ci, t.p_value), (0.0, (0.0, 0.0), 1.0));
        // A perfect model against a chance one: the difference is large and significant.
        let chance_m = [0.5, 0.2, 0.8, 0.4];
        let chance_n = [0.6, 0.3, 0.7, 0.1, 0.5];
        let big = paired_auc_test(&[9.0, 8.0, 7.0, 9.5], &[1.0, 2.0, 0.5, 1.5, 2.5], &chance_m, &chance_n, Bootstrap { resamples: 500, seed: 0 }, "y");
        assert!(big.difference > 0.4 && big.ci.0 > 0.0 && big.p_value < 0.05, "{big:?}");
        // Never below the smallest p a 500-draw bootstrap can give.
        assert!(big.p_value >= 2.0 / 501.0);
    }
}
