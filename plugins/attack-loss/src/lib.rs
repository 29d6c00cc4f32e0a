//! The LOSS attack (Yeom et al. 2018): members are fitted better, so their response
//! tokens get higher log-probability.

use kdharness_plugin_api::{Attack, AttackInput, SignalSet, export_plugins, mean};

/// `score = mean_t ℓ_t`, ℓ_t = log q(y_t): minus the mean negative log-likelihood.
pub struct Loss;

impl Attack for Loss {
    const NAME: &'static str = "loss";
    const DESCRIPTION: &'static str = "mean log-probability of the response tokens (minus the NLL)";
    const NEEDS: SignalSet = SignalSet::TARGET_LOGPROB;

    fn score(input: &AttackInput<'_>) -> Result<Vec<f64>, String> {
        Ok(input.samples.iter().map(|s| mean(&s.target_logprob)).collect())
    }
}

export_plugins!(attacks: [Loss]);

#[cfg(test)]
mod tests {
    use super::*;
    use kdharness_plugin_api::{OwnedSample, run_attack};

    #[test]
    fn loss_is_mean_logprob() {
        let a = OwnedSample { target_logprob: vec![-1.0, -2.0, -0.5], ..Default::default() };
        let b = OwnedSample { target_logprob: vec![-4.0], ..Default::default() };
        let scores = run_attack::<Loss>(&[a, b], &[], &[]).unwrap();
        assert_eq!(scores, vec![-3.5 / 3.0, -4.0]);
    }
}
