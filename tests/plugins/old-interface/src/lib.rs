//! Test plugin of the previous interface: built against kdharness-plugin-api 0.3.0 by
//! tests/fixtures/plugins/build_old_interface.sh, which committed the library to
//! tests/fixtures/plugins/ (the tests load that file; this crate is not a workspace member,
//! so it is never rebuilt against the current interface). Its attack,
//! `test_old_interface`, is the mean log-probability of the response tokens (the `loss`
//! attack's score), so a test can check that it runs unchanged and scores as `loss`.

use kdharness_plugin_api::{Attack, AttackInput, SignalSet, export_plugins, mean};

pub struct OldInterface;

impl Attack for OldInterface {
    const NAME: &'static str = "test_old_interface";
    const DESCRIPTION: &'static str = "test: a plugin built against interface 0.3.0 (mean log-probability)";
    const NEEDS: SignalSet = SignalSet::TARGET_LOGPROB;

    fn score(input: &AttackInput<'_>) -> Result<Vec<f64>, String> {
        Ok(input.samples.iter().map(|s| mean(&s.target_logprob)).collect())
    }
}

export_plugins!(attacks: [OldInterface]);
