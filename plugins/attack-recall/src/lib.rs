//! ReCaLL (Xie et al. 2024, "ReCaLL: Membership Inference via Relative Conditional
//! Log-Likelihoods"): prefixing a record with known non-members lowers its log-likelihood,
//! and lowers it more for a member, so the ratio of the conditioned to the unconditioned
//! log-likelihood is larger for members.

use kdharness_plugin_api::{Attack, AttackInput, AttackInputExt, ParamList, ParamSpec, PrefixRequest, SignalSet, export_plugins, mean};

const SHOTS: ParamSpec = ParamSpec::new("shots", "3", "known non-members in the prefix (the pool's last records)");
const MAX_PREFIX_TOKENS: ParamSpec = ParamSpec::new("max_prefix_tokens", "256", "longest prefix; whole shots are dropped from the front beyond it");

/// `score = mean_t ℓ_t(x | P) / mean_t ℓ_t(x)`, P the prefix of `shots` known non-members.
/// Both means are negative, so the ratio is positive; higher means member (the paper's
/// ReCaLL score; MIMIR reports the same ratio).
pub struct ReCaLL;

impl Attack for ReCaLL {
    const NAME: &'static str = "recall";
    const DESCRIPTION: &'static str = "ReCaLL: mean log-likelihood with a non-member prefix over the mean without";
    const NEEDS: SignalSet = SignalSet::TARGET_LOGPROB.union(SignalSet::PREFIXED_LOGPROB);
    const PARAMS: &'static [ParamSpec] = &[SHOTS, MAX_PREFIX_TOKENS];

    fn score(_: &AttackInput<'_>) -> Result<Vec<f64>, String> {
        Err("recall reads the prefixed log-probabilities of plugin interface 0.3.1 (score_ext)".into())
    }

    fn score_ext(input: &AttackInputExt<'_>) -> Result<Vec<f64>, String> {
        input
            .base
            .samples
            .iter()
            .zip(input.samples.iter())
            .map(|(s, ext)| {
                if s.target_logprob.len() != ext.prefixed_logprob.len() || s.target_logprob.is_empty() {
                    return Err(format!("sample {}: {} log-probabilities without the prefix, {} with it", s.id, s.target_logprob.len(), ext.prefixed_logprob.len()));
                }
                Ok(mean(&ext.prefixed_logprob) / mean(&s.target_logprob))
            })
            .collect()
    }

    fn prefix(params: ParamList<'_>) -> Result<Option<PrefixRequest>, String> {
        let (shots, max_tokens) = (params.count("shots")?, params.count("max_prefix_tokens")?);
        if shots == 0 || max_tokens == 0 {
            return Err(format!("`shots` ({shots}) and `max_prefix_tokens` ({max_tokens}) must be at least 1"));
        }
        Ok(Some(PrefixRequest { shots, max_tokens }))
    }
}

export_plugins!(attacks: [ReCaLL]);

#[cfg(test)]
mod tests {
    use super::*;
    use kdharness_plugin_api::{OwnedSample, run_attack};

    #[test]
    fn the_ratio_by_hand() {
        // Means −1.5 without the prefix and −2.25 with it: ratio 1.5.
        let s = OwnedSample { target_logprob: vec![-1.0, -2.0], prefixed_logprob: vec![-2.0, -2.5], ..Default::default() };
        assert_eq!(run_attack::<ReCaLL>(&[s], &[], &[]).unwrap(), vec![1.5]);
    }

    #[test]
    fn the_prefix_follows_the_parameters() {
        let specs = [("shots", "5"), ("max_prefix_tokens", "128")];
        let pairs: Vec<(String, String)> = specs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let views = kdharness_plugin_api::param_views(&pairs);
        assert_eq!(ReCaLL::prefix(ParamList(&views)).unwrap(), Some(PrefixRequest { shots: 5, max_tokens: 128 }));
        let zero = vec![("shots".to_string(), "0".to_string()), ("max_prefix_tokens".to_string(), "1".to_string())];
        assert!(ReCaLL::prefix(ParamList(&kdharness_plugin_api::param_views(&zero))).is_err());
    }
}
