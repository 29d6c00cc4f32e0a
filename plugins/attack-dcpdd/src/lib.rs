//! DC-PDD (Zhang et al. 2024, "Pretraining Data Detection for Large Language Models: A
//! Divergence-based Calibration Method"): a token the model finds likely is evidence of
//! membership in proportion to how rare it is in general text, so each token's
//! probability is calibrated by its frequency in a reference corpus.

use kdharness_plugin_api::{Attack, AttackInput, AttackInputExt, ParamSpec, SignalSet, export_plugins};

const A: ParamSpec = ParamSpec::new("a", "0.01", "cap of each token's term min(p·log(1/f), a)");

/// `score = (1/|F|) Σ_{i∈F} min(p_i · log(1/f(t_i)), a)`, F the first occurrence of each
/// distinct response token, `p_i = exp(ℓ_i)` the model's probability of the token, `f` its
/// Laplace-smoothed frequency in the reference corpus (`token_frequency`). Higher means
/// member, as in the paper (which flags a text as training data when the score exceeds a
/// threshold).
pub struct DcPdd;

impl Attack for DcPdd {
    const NAME: &'static str = "dcpdd";
    const DESCRIPTION: &'static str = "DC-PDD: mean over first occurrences of min(p·log(1/f), a), f a reference corpus's token frequency";
    const NEEDS: SignalSet = SignalSet::TOKEN_IDS.union(SignalSet::TARGET_LOGPROB).union(SignalSet::TOKEN_FREQUENCY);
    const PARAMS: &'static [ParamSpec] = &[A];

    fn score(_: &AttackInput<'_>) -> Result<Vec<f64>, String> {
        Err("dcpdd reads the token frequency signal of plugin interface 0.3.1 (score_ext)".into())
    }

    fn score_ext(input: &AttackInputExt<'_>) -> Result<Vec<f64>, String> {
        let a = input.base.param_f64("a")?;
        if a <= 0.0 {
            return Err(format!("parameter `a` must be positive, got {a}"));
        }
        input
            .base
            .samples
            .iter()
            .zip(input.samples.iter())
            .map(|(s, ext)| {
                let (ids, logprob, log_freq) = (&s.token_ids, &s.target_logprob, &ext.token_log_freq);
                if ids.len() != logprob.len() || ids.len() != log_freq.len() {
                    return Err(format!("sample {}: signal lengths differ ({}, {}, {})", s.id, ids.len(), logprob.len(), log_freq.len()));
                }
                let mut seen = std::collections::HashSet::new();
                let terms: Vec<f64> = (0..ids.len()).filter(|&i| seen.insert(ids[i])).map(|i| (logprob[i].exp() * -log_freq[i]).min(a)).collect();
                Ok(terms.iter().sum::<f64>() / terms.len() as f64)
            })
            .collect()
    }
}

export_plugins!(attacks: [DcPdd]);

#[cfg(test)]
mod tests {
    use super::*;
    use kdharness_plugin_api::{OwnedSample, run_attack};

    #[test]
    fn first_occurrences_capped_terms_by_hand() {
        // Tokens 5, 7, 5: the second 5 is not a first occurrence.
        // p = 0.5, 0.02; f = 0.1, 0.5: terms 0.5·ln 10 = 1.1513 → capped at a = 1, and
        // 0.02·ln 2 = 0.0138629; mean (1 + 0.0138629…)/2.
        let s = OwnedSample {
            token_ids: vec![5, 7, 5],
            target_logprob: vec![0.5f64.ln(), 0.02f64.ln(), 0.9f64.ln()],
            token_log_freq: vec![0.1f64.ln(), 0.5f64.ln(), 0.1f64.ln()],
            ..Default::default()
        };
        let got = run_attack::<DcPdd>(std::slice::from_ref(&s), &[], &[("a", "1")]).unwrap()[0];
        let want = (1.0 + 0.02 * 2f64.ln()) / 2.0;
        assert!((got - want).abs() < 1e-15, "{got} vs {want}");
        // The default cap 0.01 caps both.
        assert!((run_attack::<DcPdd>(&[s], &[], &[]).unwrap()[0] - 0.01).abs() < 1e-15);
    }

    #[test]
    fn a_harness_without_the_signal_gets_an_error_not_a_score() {
        let input = AttackInput { samples: Default::default(), reference: Default::default(), calibration: Default::default(), params: Default::default() };
        assert!(DcPdd::score(&input).is_err());
    }
}
