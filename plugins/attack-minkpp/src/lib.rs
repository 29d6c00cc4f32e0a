//! Min-k%++ (Zhang et al. 2025): Min-k% on log-probabilities standardised by the model's
//! own distribution at each position, so that tokens that are hard for any text do not
//! dominate.

use kdharness_plugin_api::{Attack, AttackInput, ParamSpec, SampleView, SignalSet, export_plugins, mean_of_smallest_fraction};

const K: ParamSpec = ParamSpec::new("k", "0.2", "fraction of tokens kept, m = max(1, floor(k·T))");
const NEEDS: SignalSet = SignalSet::TARGET_LOGPROB.union(SignalSet::DIST_MEAN).union(SignalSet::DIST_VAR);

/// σ_t = max(sqrt(max(σ²_t, 0)), 1e-12): the variance can come out a hair below zero in
/// floating point, and a one-hot distribution has none at all.
pub fn std_dev(var: f64) -> f64 {
    var.max(0.0).sqrt().max(1e-12)
}

fn standardised(sample: &SampleView<'_>, value: impl Fn(f64) -> f64) -> Result<Vec<f64>, String> {
    let (l, mu, var) = (&sample.target_logprob, &sample.dist_mean, &sample.dist_var);
    if l.len() != mu.len() || l.len() != var.len() {
        return Err(format!("sample {}: signal lengths differ ({}, {}, {})", sample.id, l.len(), mu.len(), var.len()));
    }
    Ok(l.iter().zip(mu.iter()).zip(var.iter()).map(|((&l, &mu), &var)| (value(l) - mu) / std_dev(var)).collect())
}

fn score_with(input: &AttackInput<'_>, value: impl Fn(f64) -> f64 + Copy) -> Result<Vec<f64>, String> {
    let k = input.param_fraction("k")?;
    input.samples.iter().map(|s| Ok(mean_of_smallest_fraction(&standardised(s, value)?, k))).collect()
}

/// `score = mean of the m smallest z_t`, z_t = (ℓ_t − μ_t)/σ_t.
pub struct MinKPlusPlus;

impl Attack for MinKPlusPlus {
    const NAME: &'static str = "minkpp";
    const DESCRIPTION: &'static str = "Min-k%++: mean of the k% lowest standardised token log-probabilities";
    const NEEDS: SignalSet = NEEDS;
    const PARAMS: &'static [ParamSpec] = &[K];

    fn score(input: &AttackInput<'_>) -> Result<Vec<f64>, String> {
        score_with(input, |l| l)
    }
}

/// The released code's variant: standardises the *probability* exp(ℓ_t) with the mean and
/// deviation of the log-probabilities.
pub struct MinKPlusPlusPaper;

impl Attack for MinKPlusPlusPaper {
    const NAME: &'static str = "minkpp_paper";
    const DESCRIPTION: &'static str = "paper-compat Min-k%++: (exp(ℓ) − μ)/σ, μ and σ from log-probabilities";
    const NEEDS: SignalSet = NEEDS;
    const PARAMS: &'static [ParamSpec] = &[K];

    fn score(input: &AttackInput<'_>) -> Result<Vec<f64>, String> {
        score_with(input, f64::exp)
    }
}

export_plugins!(attacks: [MinKPlusPlus, MinKPlusPlusPaper]);

#[cfg(test)]
mod tests {
    use super::*;
    use kdharness_plugin_api::{OwnedSample, run_attack};

    fn sample() -> OwnedSample {
        OwnedSample {
            target_logprob: vec![-1.0, -3.0, -0.5, -2.0, -0.2],
            dist_mean: vec![-1.5, -1.0, -1.0, -2.5, -0.1],
            dist_var: vec![0.25, 4.0, 1.0, -1e-18, 0.01],
            ..Default::default()
        }
    }

    #[test]
    fn minkpp_standardises_then_takes_the_lowest() {
        // z = (0.5/0.5, -2/2, 0.5/1, 0.5/1e-12, -0.1/0.1) = (1, -1, 0.5, 5e11, -1).
        // T = 5, k = 0.2 -> m = 1: the minimum, -1.
        assert_eq!(run_attack::<MinKPlusPlus>(&[sample()], &[], &[]).unwrap(), vec![-1.0]);
        // k = 0.6 -> m = 3: (-1 - 1 + 0.5)/3.
        let got = run_attack::<MinKPlusPlus>(&[sample()], &[], &[("k", "0.6")]).unwrap();
        assert!((got[0] - (-0.5)).abs() < 1e-12);
    }

    #[test]
    fn minkpp_paper_standardises_probabilities() {
        let s = sample();
        let mut z: Vec<f64> = (0..5).map(|t| (s.target_logprob[t].exp() - s.dist_mean[t]) / std_dev(s.dist_var[t])).collect();
        z.sort_by(f64::total_cmp);
        let got = run_attack::<MinKPlusPlusPaper>(&[s], &[], &[]).unwrap();
        assert_eq!(got, vec![z[0]]);
        // By hand: position 1 gives (e^-3 + 1)/2 = 0.52489..., the smallest.
        assert!((got[0] - ((-3.0f64).exp() + 1.0) / 2.0).abs() < 1e-15);
    }

    #[test]
    fn mismatched_lengths_are_an_error() {
        let mut s = sample();
        s.dist_var.pop();
        assert!(run_attack::<MinKPlusPlus>(&[s], &[], &[]).unwrap_err().contains("lengths differ"));
    }
}
