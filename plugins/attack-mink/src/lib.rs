//! Min-k% Prob (Shi et al. 2024): a member has few surprising tokens, so the mean of its
//! k% least likely tokens is high.

use kdharness_plugin_api::{Attack, AttackInput, ParamSpec, SignalSet, export_plugins, mean_of_smallest_fraction};

const K: ParamSpec = ParamSpec::new("k", "0.2", "fraction of tokens kept, m = max(1, floor(k·T))");

/// `score = mean of the m smallest ℓ_t`.
pub struct MinK;

impl Attack for MinK {
    const NAME: &'static str = "mink";
    const DESCRIPTION: &'static str = "mean of the k% lowest token log-probabilities";
    const NEEDS: SignalSet = SignalSet::TARGET_LOGPROB;
    const PARAMS: &'static [ParamSpec] = &[K];

    fn score(input: &AttackInput<'_>) -> Result<Vec<f64>, String> {
        let k = input.param_fraction("k")?;
        Ok(input.samples.iter().map(|s| mean_of_smallest_fraction(&s.target_logprob, k)).collect())
    }
}

/// The released code's variant: the m smallest token *probabilities* exp(ℓ_t).
pub struct MinKPaper;

impl Attack for MinKPaper {
    const NAME: &'static str = "mink_paper";
    const DESCRIPTION: &'static str = "paper-compat Min-k%: mean of the k% lowest token probabilities";
    const NEEDS: SignalSet = SignalSet::TARGET_LOGPROB;
    const PARAMS: &'static [ParamSpec] = &[K];

    fn score(input: &AttackInput<'_>) -> Result<Vec<f64>, String> {
        let k = input.param_fraction("k")?;
        Ok(input
            .samples
            .iter()
            .map(|s| {
                let probs: Vec<f64> = s.target_logprob.iter().map(|l| l.exp()).collect();
                mean_of_smallest_fraction(&probs, k)
            })
            .collect())
    }
}

export_plugins!(attacks: [MinK, MinKPaper]);

#[cfg(test)]
mod tests {
    use super::*;
    use kdharness_plugin_api::{OwnedSample, run_attack};

    fn sample() -> OwnedSample {
        OwnedSample { target_logprob: vec![-0.1, -5.0, -2.0, -0.3, -4.0, -1.0, -0.2, -3.0, -0.5, -0.4], ..Default::default() }
    }

    #[test]
    fn mink_takes_the_lowest_fifth() {
        // T = 10, k = 0.2: m = 2, the two lowest are -5 and -4.
        assert_eq!(run_attack::<MinK>(&[sample()], &[], &[]).unwrap(), vec![-4.5]);
        // k = 0.35: m = 3 -> (-5 - 4 - 3)/3.
        assert_eq!(run_attack::<MinK>(&[sample()], &[], &[("k", "0.35")]).unwrap(), vec![-4.0]);
    }

    #[test]
    fn mink_paper_uses_probabilities() {
        let want = ((-5.0f64).exp() + (-4.0f64).exp()) / 2.0;
        let got = run_attack::<MinKPaper>(&[sample()], &[], &[]).unwrap();
        assert!((got[0] - want).abs() < 1e-15);
    }

    #[test]
    fn bad_k_is_an_error() {
        let err = run_attack::<MinK>(&[sample()], &[], &[("k", "1.5")]).unwrap_err();
        assert!(err.contains("(0, 1]"), "{err}");
        let err = run_attack::<MinK>(&[sample()], &[], &[("k", "lots")]).unwrap_err();
        assert!(err.contains("must be a number"), "{err}");
    }
}
