//! RMIA, offline (Zarifzadeh et al. 2024, "Low-Cost High-Power Membership Inference
//! Attacks"), for LLMs as Privacy Meter runs it: a sample is likely a member when the
//! target raises its probability, relative to reference models that did not train on it,
//! by more than it raises the probabilities of most known non-members.

use kdharness_plugin_api::{Attack, AttackInput, AttackInputExt, ParamSpec, SampleExt, SampleView, SignalSet, export_plugins, mean};

const A: ParamSpec = ParamSpec::new("a", "0.3", "offline scaling: P(x) ≈ ((1+a)/2)·mean_ref P(x|ref) + (1−a)/2");
const GAMMA: ParamSpec = ParamSpec::new("gamma", "1", "likelihood-ratio threshold against each population sample");

/// `P(x|θ) / P(x)` of one sample, `P(x|θ) = exp(mean_t ℓ_t)` and
/// `P(x) = ((1+a)/2)·mean_ref exp(mean ℓ_ref) + (1−a)/2`.
fn ratio(s: &SampleView<'_>, ext: &SampleExt<'_>, a: f64) -> Result<f64, String> {
    let refs = &ext.reference_mean_logprob;
    if refs.is_empty() || s.target_logprob.is_empty() {
        return Err(format!("sample {}: needs its log-probabilities under the target and at least one reference model", s.id));
    }
    let p_ref = refs.iter().map(|l| l.exp()).sum::<f64>() / refs.len() as f64;
    Ok(mean(&s.target_logprob).exp() / ((1.0 + a) / 2.0 * p_ref + (1.0 - a) / 2.0))
}

/// `score(x) = |{z ∈ Z : (P(x|θ)/P(x)) / (P(z|θ)/P(z)) > γ}| / |Z|`, Z the population of
/// known non-members. Higher means member (the share of non-members x beats).
pub struct Rmia;

impl Attack for Rmia {
    const NAME: &'static str = "rmia";
    const DESCRIPTION: &'static str = "offline RMIA: share of population samples whose likelihood ratio x beats by more than gamma";
    const NEEDS: SignalSet = SignalSet::TARGET_LOGPROB.union(SignalSet::REFERENCES).union(SignalSet::CALIBRATION);
    const PARAMS: &'static [ParamSpec] = &[A, GAMMA];

    fn score(_: &AttackInput<'_>) -> Result<Vec<f64>, String> {
        Err("rmia reads the reference models' signals of plugin interface 0.3.1 (score_ext)".into())
    }

    fn score_ext(input: &AttackInputExt<'_>) -> Result<Vec<f64>, String> {
        let params = input.base.params();
        let (a, gamma) = (params.probability("a")?, params.f64("gamma")?);
        if input.calibration.is_empty() || input.calibration.len() != input.base.calibration.len() {
            return Err("rmia needs a population of known non-members (none was given)".into());
        }
        let population: Vec<f64> = input.base.calibration.iter().zip(input.calibration.iter()).map(|(z, ext)| ratio(z, ext, a)).collect::<Result<_, _>>()?;
        input
            .base
            .samples
            .iter()
            .zip(input.samples.iter())
            .map(|(x, ext)| {
                let rx = ratio(x, ext, a)?;
                Ok(population.iter().filter(|&&rz| rx / rz > gamma).count() as f64 / population.len() as f64)
            })
            .collect()
    }
}

export_plugins!(attacks: [Rmia]);

#[cfg(test)]
mod tests {
    use super::*;
    use kdharness_plugin_api::{AttackInput, OwnedSample, param_views, with_defaults};

    fn sample(target: f64, reference: f64) -> OwnedSample {
        OwnedSample { target_logprob: vec![target], reference_mean_logprob: vec![reference], ..Default::default() }
    }

    #[test]
    fn shares_of_the_population_by_hand() {
        // a = 0.3: P(x) = 0.65·P_ref + 0.35.
        // x: P(x|θ) = e^−1 = 0.367879, P_ref = e^−2 = 0.135335 → P(x) = 0.437968, ratio 0.839968.
        // z1: e^−2 / (0.65·e^−2 + 0.35) = 0.135335 / 0.437968 = 0.309011.
        // z2: e^−0.5 / (0.65·e^−0.5 + 0.35) = 0.606531 / 0.744245 = 0.814962.
        // z3: e^−0.1 / (0.65·e^−0.1 + 0.35) = 0.904837 / 0.938144 = 0.964497.
        // x / z: 2.718, 1.031, 0.871 → two of three exceed γ = 1.
        let x = sample(-1.0, -2.0);
        let population = [sample(-2.0, -2.0), sample(-0.5, -0.5), sample(-0.1, -0.1)];
        let views: Vec<_> = [&x].iter().map(|s| s.view()).collect();
        let exts: Vec<_> = [&x].iter().map(|s| s.ext()).collect();
        let pop_views: Vec<_> = population.iter().map(OwnedSample::view).collect();
        let pop_exts: Vec<_> = population.iter().map(OwnedSample::ext).collect();
        let score = |given: &[(String, String)]| {
            let pairs = with_defaults(Rmia::PARAMS, given);
            let params = param_views(&pairs);
            let base = AttackInput { samples: views.as_slice().into(), reference: Default::default(), calibration: pop_views.as_slice().into(), params: params.as_slice().into() };
            Rmia::score_ext(&AttackInputExt { base, samples: exts.as_slice().into(), calibration: pop_exts.as_slice().into() }).unwrap()[0]
        };
        assert_eq!(score(&[]), 2.0 / 3.0);
        // γ = 1.05: only z1 (2.718) is beaten.
        assert_eq!(score(&[("gamma".into(), "1.05".into())]), 1.0 / 3.0);
    }
}
