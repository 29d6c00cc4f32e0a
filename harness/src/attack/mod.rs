//! The attack stage: resolves attack names to loaded plugins, fills in parameters, calls
//! each plugin on a model's signals, and checks what comes back (one finite score per
//! sample). A failing attack is an error naming the attack and its library; the caller
//! decides whether the others go on. [`stage`] is the whole attack stage: every model
//! scored, every attack run, the per-block sweep, the output files.

pub mod isolate;
pub mod stage;
pub mod sweep;

use std::collections::BTreeMap;
use std::path::PathBuf;

use kdharness_plugin_api::{AttackInput, AttackInputExt, ContinuationRequest, OwnedSample, Perturbation, PrefixRequest, SampleExt, SampleView, SignalSet};

use crate::plugins::{LoadedAttack, Params, Registry, UnknownParam};
use crate::suggest::did_you_mean;

/// Why an attack cannot be set up or did not produce usable scores.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)] // each variant is documented by its #[error] message
pub enum AttackError {
    /// No loaded plugin has this name.
    #[error("unknown attack `{name}`{suggestion}; available: {available}")]
    Unknown { name: String, suggestion: String, available: String },
    /// A `--param` that is not `ATTACK.KEY=VALUE`.
    #[error("attack parameter `{0}`: expected ATTACK.KEY=VALUE, e.g. mink.k=0.1")]
    BadParam(String),
    /// The same parameter given twice.
    #[error("parameter `{attack}.{key}` is given twice; keep one")]
    DuplicateParam { attack: String, key: String },
    /// A parameter the attack does not declare.
    #[error(transparent)]
    UnknownParam(#[from] UnknownParam),
    /// The attack needs a reference model and none was given.
    #[error("attack `{attack}` needs a reference model; pass one with --reference NAME=PATH.onnx")]
    NeedsReference { attack: String },
    /// The attack needs signals the command cannot compute.
    #[error("attack `{attack}` needs signals this kdharness does not compute yet ({signals}); leave it out of the attack list")]
    Unsupported { attack: String, signals: String },
    /// The attack needs a token frequency table and no corpus was given.
    #[error("attack `{attack}` needs a reference corpus for its token frequency table; pass one with --frequency-corpus FILE.jsonl (eval uses the public split)")]
    NeedsCorpus { attack: String },
    /// The attack needs a prefix of known non-members and no pool was given.
    #[error("attack `{attack}` needs known non-members for its prefix; pass a pool with --prefix-pool FILE.jsonl (records never scored; eval uses the public split's held-out share)")]
    NeedsPool { attack: String },
    /// The attack compares with a population of known non-members and none was given.
    #[error("attack `{attack}` needs a population of known non-members; pass one with --population FILE.jsonl (records never scored; eval uses the public split's held-out share)")]
    NeedsPopulation { attack: String },
    /// Per-block risk was asked for and no loaded attack perturbs weights.
    #[error("per-block risk needs an attack plugin that perturbs weights (e.g. mope, in plugins/attack-mope); none is loaded")]
    NoPerturbationAttack,
    /// The plugin returned an error, panicked, or returned unusable scores.
    #[error("attack `{attack}` (plugin {}) failed: {message}", library.display())]
    Failed { attack: String, library: PathBuf, message: String },
    /// The plugin did not return within the timeout; its worker was killed.
    #[error("attack `{attack}` (plugin {}) timed out after {seconds} s; its worker was stopped (raise attacks.plugin_timeout_s if it is only slow)", library.display())]
    TimedOut { attack: String, library: PathBuf, seconds: f64 },
    /// The plugin took its worker process down (abort, segfault).
    #[error("attack `{attack}` (plugin {}) crashed: {status}", library.display())]
    Crashed { attack: String, library: PathBuf, status: String },
    /// The worker's answer: an error of the attack, already in words.
    #[error("{0}")]
    Worker(String),
}

/// Parameters given for each attack, by attack name, in the order given.
pub type AttackParams = BTreeMap<String, Vec<(String, String)>>;

/// Parameters per attack, from `ATTACK.KEY=VALUE` strings.
pub fn parse_params(raw: &[String]) -> Result<AttackParams, AttackError> {
    let pairs = raw.iter().map(|item| item.split_once('=').ok_or_else(|| AttackError::BadParam(item.clone())));
    params_by_attack(pairs.collect::<Result<Vec<_>, _>>()?)
}

/// Parameters per attack, from `(ATTACK.KEY, VALUE)` pairs (a config's `[attacks.params]`).
pub fn params_by_attack<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<AttackParams, AttackError> {
    let mut out = AttackParams::new();
    for (lhs, value) in pairs {
        let item = format!("{lhs}={value}");
        let (attack, key) = lhs.split_once('.').ok_or_else(|| AttackError::BadParam(item.clone()))?;
        if attack.is_empty() || key.is_empty() {
            return Err(AttackError::BadParam(item));
        }
        let given = out.entry(attack.to_string()).or_default();
        if given.iter().any(|(k, _)| k == key) {
            return Err(AttackError::DuplicateParam { attack: attack.into(), key: key.into() });
        }
        given.push((key.to_string(), value.to_string()));
    }
    Ok(out)
}

/// Looks up each requested attack (once, even if named twice), suggesting the nearest
/// name on a typo.
pub fn resolve<'r>(registry: &'r Registry, names: &[String]) -> Result<Vec<&'r LoadedAttack>, AttackError> {
    let mut seen = std::collections::HashSet::new();
    names
        .iter()
        .filter(|name| seen.insert(name.as_str()))
        .map(|name| {
            registry.attack(name).ok_or_else(|| AttackError::Unknown {
                name: name.clone(),
                suggestion: did_you_mean(name, registry.attack_names()),
                available: registry.attack_names().collect::<Vec<_>>().join(", "),
            })
        })
        .collect()
}

/// An attack ready to run: its completed parameters and, for an attack that reads
/// perturbed losses, the perturbations it asked for with them.
#[derive(Debug, Clone)]
pub struct Planned<'r> {
    /// The plugin.
    pub attack: &'r LoadedAttack,
    /// Its parameters, defaults filled in.
    pub params: Params,
    /// What the harness must compute for [`SignalSet::PERTURBED_LOSS`].
    pub perturbation: Option<Perturbation>,
    /// The prefix the harness must put before each sample for
    /// [`SignalSet::PREFIXED_LOGPROB`].
    pub prefix: Option<PrefixRequest>,
    /// The continuations the harness must sample for [`SignalSet::CONTINUATIONS`].
    pub continuations: Option<ContinuationRequest>,
}

impl<'r> Planned<'r> {
    /// Checks the `given` parameters and asks the plugin which perturbations they mean.
    pub fn new(attack: &'r LoadedAttack, given: &[(String, String)]) -> Result<Planned<'r>, AttackError> {
        let params = attack.params(given)?;
        let fail = |message: String| AttackError::Failed { attack: attack.name().into(), library: attack.library.clone(), message };
        let perturbation: Option<Perturbation> =
            (attack.decl.perturbation)(params.abi().as_slice().into()).into_result().map_err(|e| fail(e.into()))?.into();
        let prefix: Option<PrefixRequest> = match &attack.ext {
            Some(ext) => (ext.prefix)(params.abi().as_slice().into()).into_result().map_err(|e| fail(e.into()))?.into(),
            None => None,
        };
        let continuations: Option<ContinuationRequest> = match &attack.ext {
            Some(ext) => (ext.continuations)(params.abi().as_slice().into()).into_result().map_err(|e| fail(e.into()))?.into(),
            None => None,
        };
        match continuations {
            None if attack.decl.needs.contains(SignalSet::CONTINUATIONS) => {
                return Err(fail("it reads continuations but asked for none (implement `Attack::continuations`)".into()));
            }
            Some(c) if c.samples == 0 || !(c.temperature > 0.0 && c.temperature.is_finite()) => {
                return Err(fail(format!("it asked for {} continuations at temperature {}; need at least 1 and a positive temperature", c.samples, c.temperature)));
            }
            _ => {}
        }
        match (perturbation, prefix) {
            (None, _) if attack.decl.needs.contains(SignalSet::PERTURBED_LOSS) => {
                Err(fail("it reads perturbed losses but asked for no perturbation (implement `Attack::perturbation`)".into()))
            }
            (Some(p), _) if p.draws == 0 || !(p.sigma >= 0.0 && p.sigma.is_finite()) => {
                Err(fail(format!("it asked for {} perturbations of scale {}; need at least 1 and a finite scale >= 0", p.draws, p.sigma)))
            }
            (_, None) if attack.decl.needs.contains(SignalSet::PREFIXED_LOGPROB) => {
                Err(fail("it reads prefixed log-probabilities but asked for no prefix (implement `Attack::prefix`)".into()))
            }
            (_, Some(r)) if r.shots == 0 || r.max_tokens == 0 => Err(fail(format!("it asked for a prefix of {} shots and {} tokens; need at least 1 of each", r.shots, r.max_tokens))),
            _ => Ok(Planned { attack, params, perturbation, prefix, continuations }),
        }
    }

    /// The attack's name.
    pub fn name(&self) -> &str {
        self.attack.name()
    }
}

/// Signals the `attack` command can provide.
pub const AVAILABLE_SIGNALS: SignalSet = SignalSet::TOKEN_IDS
    .union(SignalSet::TARGET_LOGPROB)
    .union(SignalSet::DIST_MEAN)
    .union(SignalSet::DIST_VAR)
    .union(SignalSet::ARGMAX_ID)
    .union(SignalSet::RESPONSE_TEXT)
    .union(SignalSet::ARGMAX_TEXT)
    .union(SignalSet::REFERENCE)
    .union(SignalSet::PERTURBED_LOSS)
    .union(SignalSet::TOKEN_FREQUENCY)
    .union(SignalSet::PREFIXED_LOGPROB)
    .union(SignalSet::REFERENCES)
    .union(SignalSet::CALIBRATION)
    .union(SignalSet::CONTINUATIONS);

/// Signals that cost extra model passes (MoPe's perturbed losses, `n` per model; SaMIA's
/// sampled continuations): attacks needing them run only when named.
pub const COSTLY_SIGNALS: SignalSet = SignalSet::PERTURBED_LOSS.union(SignalSet::CONTINUATIONS);

/// What a request can feed beyond every model's own signals.
#[derive(Debug, Clone, Copy, Default)]
pub struct Feeds {
    /// A reference model.
    pub reference: bool,
    /// A corpus for the token frequency table.
    pub corpus: bool,
    /// A pool of known non-members for prefixes.
    pub pool: bool,
    /// A population of known non-members scored like the samples.
    pub population: bool,
}

/// Fails early when an attack needs a signal that cannot be provided: a reference model,
/// a frequency corpus or a prefix pool the request lacks, or a signal this harness does
/// not compute yet.
pub fn check_needs(attack: &LoadedAttack, feeds: Feeds) -> Result<(), AttackError> {
    let needs = attack.decl.needs;
    let missing = SignalSet(needs.0 & !AVAILABLE_SIGNALS.0);
    if missing != SignalSet::NONE {
        return Err(AttackError::Unsupported { attack: attack.name().into(), signals: missing.names().join(", ") });
    }
    if needs.contains(SignalSet::REFERENCE) && !feeds.reference {
        return Err(AttackError::NeedsReference { attack: attack.name().into() });
    }
    if needs.contains(SignalSet::TOKEN_FREQUENCY) && !feeds.corpus {
        return Err(AttackError::NeedsCorpus { attack: attack.name().into() });
    }
    if needs.contains(SignalSet::PREFIXED_LOGPROB) && !feeds.pool {
        return Err(AttackError::NeedsPool { attack: attack.name().into() });
    }
    if needs.contains(SignalSet::REFERENCES) && !feeds.reference {
        return Err(AttackError::NeedsReference { attack: attack.name().into() });
    }
    if needs.contains(SignalSet::CALIBRATION) && !feeds.population {
        return Err(AttackError::NeedsPopulation { attack: attack.name().into() });
    }
    Ok(())
}

/// A fixed permutation of `n` samples. Attacks see samples in this order, so that one
/// that (wrongly) used position instead of signals could not read membership off the
/// members-first layout; being seeded, it keeps runs reproducible.
fn presentation_order(n: usize) -> Vec<usize> {
    use rand::SeedableRng;
    use rand::seq::SliceRandom;
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(0x6b64_6861_726e_6573));
    order
}

/// Calls the plugin (in its worker process when the registry isolates attacks) and
/// validates its answer; scores come back in the order of `samples`.
pub fn run(
    attack: &LoadedAttack,
    samples: &[OwnedSample],
    reference: &[OwnedSample],
    calibration: &[OwnedSample],
    params: &Params,
) -> Result<Vec<f64>, AttackError> {
    match &attack.isolation {
        Some(isolation) => isolation.run(attack, samples, reference, calibration, params),
        None => run_here(attack, samples, reference, calibration, params),
    }
}

/// [`run`] in this process.
fn run_here(
    attack: &LoadedAttack,
    samples: &[OwnedSample],
    reference: &[OwnedSample],
    calibration: &[OwnedSample],
    params: &Params,
) -> Result<Vec<f64>, AttackError> {
    let fail = |message: String| AttackError::Failed { attack: attack.name().into(), library: attack.library.clone(), message };
    if !reference.is_empty() && reference.len() != samples.len() {
        return Err(fail(format!("got reference signals for {} of {} samples", reference.len(), samples.len())));
    }
    let order = presentation_order(samples.len());
    let views: Vec<SampleView<'_>> = order.iter().map(|&i| samples[i].view()).collect();
    let reference_views: Vec<SampleView<'_>> = if reference.is_empty() {
        Vec::new()
    } else {
        order.iter().map(|&i| reference[i].view()).collect()
    };
    let params = params.abi();
    // Known non-members (the population), in their own order: an attack compares each
    // sample with all of them.
    let calibration_views: Vec<SampleView<'_>> = calibration.iter().map(OwnedSample::view).collect();
    let input = AttackInput {
        samples: views.as_slice().into(),
        reference: reference_views.as_slice().into(),
        calibration: calibration_views.as_slice().into(),
        params: params.as_slice().into(),
    };
    // A plugin of interface 0.3.1 or later gets the extended signals beside each sample;
    // an earlier one is called as it was built to be.
    let answer = match &attack.ext {
        Some(ext) => {
            let extended: Vec<SampleExt<'_>> = order.iter().map(|&i| samples[i].ext()).collect();
            let calibration: Vec<SampleExt<'_>> = calibration.iter().map(OwnedSample::ext).collect();
            (ext.score_ext)(&AttackInputExt { base: input, samples: extended.as_slice().into(), calibration: calibration.as_slice().into() })
        }
        None => (attack.decl.score)(&input),
    };
    let shuffled: Vec<f64> = answer.into_result().map_err(|e| fail(e.into()))?.into();
    validate_scores(&shuffled, &views).map_err(fail)?;
    let mut scores = vec![0.0; samples.len()];
    for (&i, score) in order.iter().zip(shuffled) {
        scores[i] = score;
    }
    Ok(scores)
}

/// A plugin's answer is usable iff it has one finite score per sample it was shown.
pub fn validate_scores(scores: &[f64], samples: &[SampleView<'_>]) -> Result<(), String> {
    if scores.len() != samples.len() {
        return Err(format!("returned {} scores for {} samples", scores.len(), samples.len()));
    }
    match scores.iter().enumerate().find(|(_, s)| !s.is_finite()) {
        Some((i, s)) => Err(format!("returned a non-finite score ({s}) for sample `{}`", samples[i].id)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Fuzzes the validation of plugin results: accepted exactly when the length
        /// matches and every value is finite.
        #[test]
        fn validation_accepts_exactly_the_usable_results(
            scores in proptest::collection::vec(prop_oneof![any::<f64>(), Just(f64::NAN), Just(f64::INFINITY)], 0..20),
            n in 0usize..20,
        ) {
            let samples: Vec<OwnedSample> = (0..n).map(|i| OwnedSample { id: format!("s{i}"), ..Default::default() }).collect();
            let usable = scores.len() == n && scores.iter().all(|s| s.is_finite());
            let views: Vec<SampleView<'_>> = samples.iter().map(OwnedSample::view).collect();
            prop_assert_eq!(validate_scores(&scores, &views).is_ok(), usable);
        }
    }

    #[test]
    fn params_parse_and_reject_malformed() {
        let parsed = parse_params(&["mink.k=0.1".into(), "mink.x=a=b".into(), "zlib.level=6".into()]).unwrap();
        assert_eq!(parsed["mink"], vec![("k".to_string(), "0.1".to_string()), ("x".to_string(), "a=b".to_string())]);
        assert_eq!(parsed["zlib"], vec![("level".to_string(), "6".to_string())]);
        for bad in ["mink", "k=0.1", ".k=1", "mink.=1"] {
            assert!(matches!(parse_params(&[bad.into()]), Err(AttackError::BadParam(_))), "{bad}");
        }
    }
}
