//! Worst-case sharpness: the largest rise of a sample's loss over `draws` Gaussian weight
//! perturbations of scale `noise`, `max_i loss(θ + ε_i) − loss(θ)`. A perturbation attack
//! that lives outside the harness, with parameter names of its own: it tells the harness
//! what to compute through `Attack::perturbation`.

use kdharness_plugin_api::{Attack, AttackInput, ParamList, ParamSpec, Perturbation, SignalSet, export_plugins, mean};

/// `score = max_i L(θ + ε_i) − L(θ)`.
pub struct Sharpness;

impl Attack for Sharpness {
    const NAME: &'static str = "sharpness";
    const DESCRIPTION: &'static str = "largest loss increase under Gaussian weight perturbations";
    const NEEDS: SignalSet = SignalSet::TARGET_LOGPROB.union(SignalSet::PERTURBED_LOSS);
    const PARAMS: &'static [ParamSpec] =
        &[ParamSpec::new("draws", "4", "perturbed passes"), ParamSpec::new("noise", "0.01", "standard deviation of the weight noise")];

    fn perturbation(params: ParamList<'_>) -> Result<Option<Perturbation>, String> {
        Ok(Some(Perturbation { draws: params.count("draws")?, sigma: params.f64("noise")? }))
    }

    fn score(input: &AttackInput<'_>) -> Result<Vec<f64>, String> {
        input
            .samples
            .iter()
            .map(|s| {
                let worst = s.perturbed_loss.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                Ok(worst + mean(&s.target_logprob))
            })
            .collect()
    }
}

export_plugins!(attacks: [Sharpness]);
