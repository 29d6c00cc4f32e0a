//! A plugin's parameters: what the user gave (a config's `[attacks.params]` or
//! `[distill.params]`, or `--param ATTACK.KEY=VALUE`), checked against what the plugin
//! declares, with the declared defaults filled in. Attacks and KD methods share this one
//! type and its one validator.

use std::collections::BTreeMap;

use kdharness_plugin_api::{Param, ParamSpec};

use crate::suggest::did_you_mean;

/// A parameter the plugin does not declare.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{kind} `{plugin}` has no parameter `{key}`{suggestion}; it accepts: {accepted}")]
pub struct UnknownParam {
    /// `attack` or `KD method`.
    pub kind: &'static str,
    /// The plugin's name.
    pub plugin: String,
    /// The key nobody declared.
    pub key: String,
    /// " (did you mean `k`?)" or nothing.
    pub suggestion: String,
    /// The declared keys, or "no parameters".
    pub accepted: String,
}

/// Complete parameters: every key given by the user (all of them declared) followed by the
/// default of every declared key the user did not give.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Params(Vec<(String, String)>);

impl Params {
    /// Checks `given` against `specs` and fills in the defaults; `kind` and `plugin` name
    /// the plugin in the error.
    pub fn complete(kind: &'static str, plugin: &str, specs: &[ParamSpec], given: &[(String, String)]) -> Result<Params, UnknownParam> {
        let declared: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        if let Some((key, _)) = given.iter().find(|(key, _)| !declared.contains(&key.as_str())) {
            return Err(UnknownParam {
                kind,
                plugin: plugin.to_string(),
                key: key.clone(),
                suggestion: did_you_mean(key, declared.iter().copied()),
                accepted: if declared.is_empty() { "no parameters".into() } else { declared.join(", ") },
            });
        }
        Ok(Params(kdharness_plugin_api::with_defaults(specs, given)))
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// The pairs, in order.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.0
    }

    /// The parameters as the plugin ABI passes them (borrowing `self`).
    pub fn abi(&self) -> Vec<Param<'_>> {
        kdharness_plugin_api::param_views(&self.0)
    }

    /// The parameters by key, for manifests.
    pub fn to_map(&self) -> BTreeMap<String, String> {
        self.0.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPECS: &[ParamSpec] = &[ParamSpec::new("k", "0.2", "fraction"), ParamSpec::new("n", "10", "draws")];

    #[test]
    fn given_values_come_first_then_defaults() {
        let p = Params::complete("attack", "mink", SPECS, &[("n".into(), "3".into())]).unwrap();
        assert_eq!(p.pairs(), [("n".to_string(), "3".to_string()), ("k".to_string(), "0.2".to_string())]);
        assert_eq!(p.get("k"), Some("0.2"));
        assert_eq!(p.abi()[0].value.as_str(), "3");
    }

    #[test]
    fn an_undeclared_key_is_named_with_a_suggestion() {
        let e = Params::complete("attack", "mink", SPECS, &[("kk".into(), "1".into())]).unwrap_err();
        assert_eq!(e.to_string(), "attack `mink` has no parameter `kk` (did you mean `k`?); it accepts: k, n");
        let e = Params::complete("KD method", "nokd", &[], &[("x".into(), "1".into())]).unwrap_err();
        assert_eq!(e.to_string(), "KD method `nokd` has no parameter `x`; it accepts: no parameters");
    }
}
