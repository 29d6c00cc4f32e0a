//! MoPe (Li et al. 2023): members sit in sharper minima of the loss, so Gaussian noise on
//! the weights raises their loss more than a non-member's.
//!
//! The attack asks the harness, through [`Attack::perturbation`], for `n` draws of
//! `N(0, σ²)` noise on the weights (every weight, or one block for the per-block sweep);
//! the score is `mean_i loss(θ + ε_i) − loss(θ)` with `loss = −mean_t ℓ_t`.

use kdharness_plugin_api::{Attack, AttackInput, ParamList, ParamSpec, Perturbation, SignalSet, export_plugins, mean};

/// `score = mean_i L(θ + ε_i) − L(θ)`.
pub struct Mope;

impl Attack for Mope {
    const NAME: &'static str = "mope";
    const DESCRIPTION: &'static str = "loss increase under Gaussian weight perturbations";
    const NEEDS: SignalSet = SignalSet::TARGET_LOGPROB.union(SignalSet::PERTURBED_LOSS);
    const PARAMS: &'static [ParamSpec] = &[
        ParamSpec::new("n", "10", "perturbation draws (the harness computes them)"),
        ParamSpec::new("sigma", "0.01", "standard deviation of the weight noise"),
    ];

    fn perturbation(params: ParamList<'_>) -> Result<Option<Perturbation>, String> {
        let draws = params.count("n")?;
        if draws == 0 {
            return Err("parameter `n` must be at least 1".into());
        }
        let sigma = params.f64("sigma")?;
        if sigma < 0.0 {
            return Err(format!("parameter `sigma` must be at least 0, got {sigma}"));
        }
        Ok(Some(Perturbation { draws, sigma }))
    }

    fn score(input: &AttackInput<'_>) -> Result<Vec<f64>, String> {
        let draws = Self::perturbation(input.params())?.map_or(0, |p| p.draws);
        input
            .samples
            .iter()
            .map(|s| {
                if s.perturbed_loss.len() != draws as usize {
                    return Err(format!("sample `{}` has {} perturbed losses, expected n = {draws}", s.id, s.perturbed_loss.len()));
                }
                Ok(mean(&s.perturbed_loss) + mean(&s.target_logprob))
            })
            .collect()
    }
}

export_plugins!(attacks: [Mope]);

#[cfg(test)]
mod tests {
    use super::*;
    use kdharness_plugin_api::{OwnedSample, run_attack};

    #[test]
    fn score_is_mean_perturbed_loss_minus_loss() {
        // loss(θ) = −mean(−1, −3) = 2; perturbed losses 2.5 and 3.5: score 3 − 2 = 1.
        let s = OwnedSample { target_logprob: vec![-1.0, -3.0], perturbed_loss: vec![2.5, 3.5], ..Default::default() };
        assert_eq!(run_attack::<Mope>(&[s.clone()], &[], &[("n", "2")]).unwrap(), vec![1.0]);
        assert!(run_attack::<Mope>(&[s], &[], &[("n", "3")]).unwrap_err().contains("expected n = 3"));
    }

    #[test]
    fn asks_for_its_draws_and_noise() {
        let params = |n: &'static str, sigma: &'static str| {
            [kdharness_plugin_api::Param { key: "n".into(), value: n.into() }, kdharness_plugin_api::Param { key: "sigma".into(), value: sigma.into() }]
        };
        assert_eq!(Mope::perturbation(ParamList(&params("4", "0.02"))), Ok(Some(Perturbation { draws: 4, sigma: 0.02 })));
        assert!(Mope::perturbation(ParamList(&params("0", "0.02"))).unwrap_err().contains("at least 1"));
        assert!(Mope::perturbation(ParamList(&params("2", "-1"))).unwrap_err().contains("sigma"));
    }
}
