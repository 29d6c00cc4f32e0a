//! The reference-model attack (Carlini et al. 2021; Mireshghallah et al. 2022): calibrate
//! the target's log-likelihood by a reference model that never saw the private data, so
//! that intrinsically easy text is not mistaken for memorised text.

use kdharness_plugin_api::{Attack, AttackInput, SignalSet, export_plugins, mean};

/// `score = mean_t ℓ_t(target) − mean_t ℓ^R_t(reference)`; the reference scores the same
/// record with its own tokenizer, so the two means may run over different token counts.
pub struct Reference;

impl Attack for Reference {
    const NAME: &'static str = "ref";
    const DESCRIPTION: &'static str = "target mean log-probability minus a reference model's";
    const NEEDS: SignalSet = SignalSet::TARGET_LOGPROB.union(SignalSet::REFERENCE);

    fn score(input: &AttackInput<'_>) -> Result<Vec<f64>, String> {
        if input.reference.len() != input.samples.len() {
            return Err(format!(
                "needs a reference model's signals for each of the {} samples, got {}",
                input.samples.len(),
                input.reference.len()
            ));
        }
        Ok(input
            .samples
            .iter()
            .zip(input.reference.iter())
            .map(|(target, reference)| mean(&target.target_logprob) - mean(&reference.target_logprob))
            .collect())
    }
}

export_plugins!(attacks: [Reference]);

#[cfg(test)]
mod tests {
    use super::*;
    use kdharness_plugin_api::{OwnedSample, run_attack};

    #[test]
    fn ref_subtracts_the_reference_mean() {
        let target = OwnedSample { target_logprob: vec![-1.0, -2.0], ..Default::default() };
        let reference = OwnedSample { target_logprob: vec![-3.0, -1.0, -2.0], ..Default::default() };
        assert_eq!(run_attack::<Reference>(std::slice::from_ref(&target), &[reference], &[]).unwrap(), vec![-1.5 + 2.0]);
        assert!(run_attack::<Reference>(&[target], &[], &[]).unwrap_err().contains("reference"));
    }
}
