//! Test plugin: attacks that misbehave in each way the harness must survive.

use kdharness_plugin_api::{Attack, AttackInput, SignalSet, export_plugins};

pub struct Panics;
impl Attack for Panics {
    const NAME: &'static str = "test_panics";
    const DESCRIPTION: &'static str = "panics inside score";
    const NEEDS: SignalSet = SignalSet::TARGET_LOGPROB;
    fn score(_: &AttackInput<'_>) -> Result<Vec<f64>, String> {
        panic!("deliberate test panic")
    }
}

pub struct NotFinite;
impl Attack for NotFinite {
    const NAME: &'static str = "test_nan";
    const DESCRIPTION: &'static str = "returns NaN for the second sample";
    const NEEDS: SignalSet = SignalSet::TARGET_LOGPROB;
    fn score(input: &AttackInput<'_>) -> Result<Vec<f64>, String> {
        Ok((0..input.samples.len()).map(|i| if i == 1 { f64::NAN } else { 0.0 }).collect())
    }
}

pub struct TooShort;
impl Attack for TooShort {
    const NAME: &'static str = "test_short";
    const DESCRIPTION: &'static str = "returns one score too few";
    const NEEDS: SignalSet = SignalSet::TARGET_LOGPROB;
    fn score(input: &AttackInput<'_>) -> Result<Vec<f64>, String> {
        Ok(vec![0.0; input.samples.len().saturating_sub(1)])
    }
}

export_plugins!(attacks: [Panics, NotFinite, TooShort]);
