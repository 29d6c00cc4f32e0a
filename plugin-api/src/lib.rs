//! The stable ABI between `kdharness` and its plugins.
//!
//! A plugin library is a `cdylib` that exports one root module, [`PluginLibRef`], listing
//! one or more plugins. Today a plugin is a membership-inference *attack*: it receives the
//! per-sample signals the harness computed for one model (and, when it asks, for a
//! reference model) and returns one score per sample, higher meaning "more likely a
//! member of the teacher's private training set". A plugin may also be a *KD method*
//! ([`kd`]): it turns student and teacher logits into a distillation loss and its
//! gradient.
//!
//! Plugin authors never write `extern "C"` code: they implement [`Attack`] on a unit
//! struct and list it in [`export_plugins!`]. The macro generates the exported root module
//! and wraps every call in `catch_unwind`, so a panicking plugin returns an error to the
//! harness instead of taking it down.
//!
//! ```
//! use kdharness_plugin_api::{Attack, AttackInput, SignalSet, ParamSpec};
//!
//! pub struct MeanLoss;
//! impl Attack for MeanLoss {
//!     const NAME: &'static str = "my_loss";
//!     const DESCRIPTION: &'static str = "mean log-probability of the response tokens";
//!     const NEEDS: SignalSet = SignalSet::TARGET_LOGPROB;
//!     fn score(input: &AttackInput<'_>) -> Result<Vec<f64>, String> {
//!         Ok(input.samples.iter().map(|s| kdharness_plugin_api::mean(&s.target_logprob)).collect())
//!     }
//! }
//! kdharness_plugin_api::export_plugins!(attacks: [MeanLoss]);
//! ```
//!
//! What this crate is not: it holds no attack logic and no harness internals; it is the
//! contract only.
//!
//! # Interface evolution
//!
//! The root module is an `abi_stable` prefix type. The interface version is this crate's
//! version: while it is `0.x`, a harness loads plugins built against the same minor
//! version, older patch versions included (abi_stable refuses an older minor with a
//! version error, and checks the layout of every type that crosses the boundary).
//!
//! - An additive change bumps the patch version and keeps every earlier plugin of the
//!   minor working, unchanged and without a rebuild: new fields go after the last field
//!   of [`PluginLib`] (an older library lacks them and the harness reads them as absent),
//!   and new types cross the boundary only through those fields. 0.3.1 added the signals
//!   [`SignalSet::EXTENDED`] this way: [`SampleExt`] beside each [`SampleView`], read by
//!   [`Attack::score_ext`] through [`PluginLib::attacks_ext`]. abi_stable refuses a root
//!   module with fewer fields than the harness expects, so the layout of each earlier
//!   patch's root module is kept ([`v0_3_0`]) and a library that fails the current one is
//!   loaded as that (checked as strictly); its attacks are called as before (tested with
//!   a library built against 0.3.0, committed in tests/fixtures/plugins/). 0.3.2 added
//!   the third plugin kind, [`defense`], as the root field [`PluginLib::defenses`]; the
//!   layout of 0.3.1 is kept as [`v0_3_1`].
//! - A change to a type that is already on the boundary ([`SampleView`], [`AttackInput`],
//!   [`AttackDecl`], the KD types) bumps the minor version; plugins of the earlier minor are
//!   then refused with a message naming both versions and saying to rebuild.
//!
//! The interface version is independent of the harness's own version: a harness release
//! that leaves the boundary alone keeps old plugins working.
#![warn(missing_docs)]

pub mod defense;
pub mod kd;
pub mod objectives;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Once;

pub use abi_stable;
use abi_stable::{
    StableAbi, declare_root_module_statics,
    library::RootModule,
    package_version_strings,
    sabi_types::VersionStrings,
    std_types::{ROption, RResult, RSlice, RStr, RString, RVec},
};

/// Which per-sample signals an attack needs; the harness computes only those.
#[repr(transparent)]
#[derive(StableAbi, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SignalSet(pub u32);

impl SignalSet {
    /// No signal at all.
    pub const NONE: SignalSet = SignalSet(0);
    /// Token ids of the scored response tokens.
    pub const TOKEN_IDS: SignalSet = SignalSet(1 << 0);
    /// `log q(y_t)` for each scored token (natural log).
    pub const TARGET_LOGPROB: SignalSet = SignalSet(1 << 1);
    /// `Σ_v q log q` at each scored position.
    pub const DIST_MEAN: SignalSet = SignalSet(1 << 2);
    /// `Σ_v q (log q)² − mean²` at each scored position.
    pub const DIST_VAR: SignalSet = SignalSet(1 << 3);
    /// The model's most likely token at each scored position.
    pub const ARGMAX_ID: SignalSet = SignalSet(1 << 4);
    /// The response text as it appears in the data.
    pub const RESPONSE_TEXT: SignalSet = SignalSet(1 << 5);
    /// The target tokenizer's decoding of the argmax ids (special tokens kept).
    pub const ARGMAX_TEXT: SignalSet = SignalSet(1 << 6);
    /// The same record scored by a reference model (`AttackInput::reference`).
    pub const REFERENCE: SignalSet = SignalSet(1 << 7);
    /// Losses of the model under weight perturbations (`SampleView::perturbed_loss`).
    pub const PERTURBED_LOSS: SignalSet = SignalSet(1 << 8);
    /// Known non-members (population data) in `AttackInput::calibration`.
    pub const CALIBRATION: SignalSet = SignalSet(1 << 9);
    /// (0.3.1, read by [`Attack::score_ext`]) `log f(y_t)` of each scored token in a
    /// Laplace-smoothed token frequency table of a reference corpus
    /// (`SampleExt::token_log_freq`).
    pub const TOKEN_FREQUENCY: SignalSet = SignalSet(1 << 10);
    /// (0.3.1) `log q(y_t | shots, x)`: the response's log-probabilities with known
    /// non-members prepended to the prompt (`SampleExt::prefixed_logprob`).
    pub const PREFIXED_LOGPROB: SignalSet = SignalSet(1 << 11);
    /// (0.3.1) Sampled continuations of the prompt and the first half of the response,
    /// and the true second half (`SampleExt::continuations`, `SampleExt::second_half`).
    pub const CONTINUATIONS: SignalSet = SignalSet(1 << 12);
    /// (0.3.1) The record's mean log-probability under each of several reference models
    /// (`SampleExt::reference_mean_logprob`).
    pub const REFERENCES: SignalSet = SignalSet(1 << 13);
    /// The signals of interface 0.3.1: an attack that needs one is called through
    /// [`Attack::score_ext`], which a harness older than 0.3.1 cannot do (it does not list
    /// such an attack).
    pub const EXTENDED: SignalSet = SignalSet(0b1111 << 10);

    /// Every signal with its name, in bit order.
    pub const NAMED: [(SignalSet, &'static str); 14] = [
        (Self::TOKEN_IDS, "token_ids"),
        (Self::TARGET_LOGPROB, "target_logprob"),
        (Self::DIST_MEAN, "dist_mean"),
        (Self::DIST_VAR, "dist_var"),
        (Self::ARGMAX_ID, "argmax_id"),
        (Self::RESPONSE_TEXT, "response_text"),
        (Self::ARGMAX_TEXT, "argmax_text"),
        (Self::REFERENCE, "reference"),
        (Self::PERTURBED_LOSS, "perturbed_loss"),
        (Self::CALIBRATION, "calibration"),
        (Self::TOKEN_FREQUENCY, "token_frequency"),
        (Self::PREFIXED_LOGPROB, "prefixed_logprob"),
        (Self::CONTINUATIONS, "continuations"),
        (Self::REFERENCES, "references"),
    ];

    /// Both sets together.
    pub const fn union(self, other: SignalSet) -> SignalSet {
        SignalSet(self.0 | other.0)
    }

    /// Whether every signal of `other` is in `self`.
    pub const fn contains(self, other: SignalSet) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether `self` and `other` share a signal.
    pub const fn intersects(self, other: SignalSet) -> bool {
        self.0 & other.0 != 0
    }

    /// Names of the signals in this set, for messages and `plugins list`.
    pub fn names(self) -> Vec<&'static str> {
        Self::NAMED.iter().filter(|(s, _)| self.contains(*s)).map(|(_, n)| *n).collect()
    }
}

impl std::ops::BitOr for SignalSet {
    type Output = SignalSet;
    fn bitor(self, rhs: SignalSet) -> SignalSet {
        self.union(rhs)
    }
}

/// The signals of one sample under one model, response tokens only.
///
/// Slices the attack did not ask for may be empty. The per-token slices all have one
/// entry per scored response token, in order.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug)]
pub struct SampleView<'a> {
    /// The sample id (an attack must not infer membership from it).
    pub id: RStr<'a>,
    /// Ids of the scored response tokens.
    pub token_ids: RSlice<'a, u32>,
    /// ℓ_t = log q(y_t), natural log.
    pub target_logprob: RSlice<'a, f64>,
    /// μ_t = Σ_v q log q.
    pub dist_mean: RSlice<'a, f64>,
    /// σ²_t = Σ_v q (log q)² − μ_t² (may be a hair below zero in floating point).
    pub dist_var: RSlice<'a, f64>,
    /// The model's most likely token at each scored position.
    pub argmax_id: RSlice<'a, u32>,
    /// The response text as in the data.
    pub response_text: RStr<'a>,
    /// The target tokenizer's decoding of `argmax_id`, special tokens kept.
    pub argmax_text: RStr<'a>,
    /// Loss of the model under each weight perturbation.
    pub perturbed_loss: RSlice<'a, f64>,
}

/// A `key = value` parameter from the configuration or the command line.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug)]
pub struct Param<'a> {
    /// The parameter's name, as declared in [`ParamSpec::name`].
    pub key: RStr<'a>,
    /// Its value, unparsed.
    pub value: RStr<'a>,
}

/// Everything an attack sees in one call.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug)]
pub struct AttackInput<'a> {
    /// The samples to score: members and non-members in a seeded random order (the attack
    /// must infer membership from signals, never from position or id).
    pub samples: RSlice<'a, SampleView<'a>>,
    /// When the attack needs [`SignalSet::REFERENCE`]: the same samples, in the same
    /// order, scored by the reference model. Empty otherwise.
    pub reference: RSlice<'a, SampleView<'a>>,
    /// Known non-members (population data) for attacks that calibrate; may be empty.
    pub calibration: RSlice<'a, SampleView<'a>>,
    /// Parameters, with defaults from [`ParamSpec`] already filled in.
    pub params: RSlice<'a, Param<'a>>,
}

impl AttackInput<'_> {
    /// The parameters, with typed accessors.
    pub fn params(&self) -> ParamList<'_> {
        ParamList(self.params.as_slice())
    }

    /// The value of parameter `key`, if given.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.params().get(key)
    }

    /// Parameter `key` parsed as a float, with a message naming it when it is not one.
    pub fn param_f64(&self, key: &str) -> Result<f64, String> {
        self.params().f64(key)
    }

    /// Parameter `key` as a fraction in (0, 1], e.g. the k of Min-k%.
    pub fn param_fraction(&self, key: &str) -> Result<f64, String> {
        self.params().fraction(key)
    }
}

/// The signals of interface 0.3.1 of one sample, beside its [`SampleView`]. Slices the
/// attack did not ask for are empty; the per-token ones have one entry per scored
/// response token, like the [`SampleView`]'s.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug)]
pub struct SampleExt<'a> {
    /// `log f(y_t)`, natural log, with `f(t) = (c(t) + 1) / (N + V)`: `c(t)` the count of
    /// token `t` among the `N` tokens of the reference corpus, `V` the vocabulary size.
    pub token_log_freq: RSlice<'a, f64>,
    /// `log q(y_t | shots, x)`, natural log.
    pub prefixed_logprob: RSlice<'a, f64>,
    /// The sampled continuations' texts, separated by [`CONTINUATION_SEPARATOR`] (iterate
    /// with [`SampleExt::continuations`]; a separator the model itself produced is replaced
    /// by U+FFFD).
    pub continuations: RStr<'a>,
    /// The response's true second half, as text.
    pub second_half: RStr<'a>,
    /// The mean of `log q_ref(y_t)` over the scored tokens, one entry per reference model.
    pub reference_mean_logprob: RSlice<'a, f64>,
}

/// Separates the continuations in [`SampleExt::continuations`] (ASCII record separator).
pub const CONTINUATION_SEPARATOR: char = '\u{1e}';

impl<'a> SampleExt<'a> {
    /// No signal of 0.3.1.
    pub const EMPTY: SampleExt<'static> = SampleExt {
        token_log_freq: RSlice::EMPTY,
        prefixed_logprob: RSlice::EMPTY,
        continuations: RStr::from_str(""),
        second_half: RStr::from_str(""),
        reference_mean_logprob: RSlice::EMPTY,
    };

    /// The sampled continuations, in order.
    pub fn continuations(&self) -> impl Iterator<Item = &'a str> {
        let text = self.continuations.as_str();
        text.split(CONTINUATION_SEPARATOR).filter(move |_| !text.is_empty())
    }
}

/// Everything an attack that reads the signals of 0.3.1 sees in one call: the
/// [`AttackInput`] of earlier interfaces and, beside each of its samples (and calibration
/// samples), their [`SampleExt`].
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug)]
pub struct AttackInputExt<'a> {
    /// The samples, reference, calibration and parameters as [`Attack::score`] sees them.
    pub base: AttackInput<'a>,
    /// `samples[i]` extends `base.samples[i]`.
    pub samples: RSlice<'a, SampleExt<'a>>,
    /// `calibration[i]` extends `base.calibration[i]`.
    pub calibration: RSlice<'a, SampleExt<'a>>,
}

/// A plugin's parameters (defaults filled in), with typed accessors whose errors name the
/// parameter.
#[derive(Clone, Copy, Debug)]
pub struct ParamList<'a>(pub &'a [Param<'a>]);

impl<'a> ParamList<'a> {
    /// The value of parameter `key`, if given.
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.0.iter().find(|p| p.key.as_str() == key).map(|p| p.value.as_str())
    }

    /// Parameter `key` parsed as a float.
    pub fn f64(&self, key: &str) -> Result<f64, String> {
        let raw = self.get(key).ok_or_else(|| format!("parameter `{key}` is missing"))?;
        raw.trim()
            .parse::<f64>()
            .ok()
            .filter(|x| x.is_finite())
            .ok_or_else(|| format!("parameter `{key}` must be a number, got `{raw}`"))
    }

    /// Parameter `key` as a fraction in (0, 1].
    pub fn fraction(&self, key: &str) -> Result<f64, String> {
        let k = self.f64(key)?;
        if k > 0.0 && k <= 1.0 { Ok(k) } else { Err(format!("parameter `{key}` must be in (0, 1], got {k}")) }
    }

    /// Parameter `key` as a probability in [0, 1].
    pub fn probability(&self, key: &str) -> Result<f64, String> {
        let k = self.f64(key)?;
        if (0.0..=1.0).contains(&k) { Ok(k) } else { Err(format!("parameter `{key}` must be in [0, 1], got {k}")) }
    }

    /// Parameter `key` as a non-negative whole number.
    pub fn count(&self, key: &str) -> Result<u32, String> {
        let raw = self.get(key).ok_or_else(|| format!("parameter `{key}` is missing"))?;
        raw.trim().parse::<u32>().map_err(|_| format!("parameter `{key}` must be a whole number, got `{raw}`"))
    }
}

/// A parameter an attack accepts, with its default.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug)]
pub struct ParamSpec {
    /// The key users set, e.g. `k` in `--param mink.k=0.1`.
    pub name: RStr<'static>,
    /// The value used when the user sets none.
    pub default: RStr<'static>,
    /// One line for `kdharness plugins list`.
    pub help: RStr<'static>,
}

impl ParamSpec {
    /// A parameter declaration, usable in a `const`.
    pub const fn new(name: &'static str, default: &'static str, help: &'static str) -> Self {
        ParamSpec { name: RStr::from_str(name), default: RStr::from_str(default), help: RStr::from_str(help) }
    }
}

/// The weight perturbations an attack asks for (it needs [`SignalSet::PERTURBED_LOSS`]):
/// `draws` forward passes of the model, each with independent Gaussian noise
/// `N(0, sigma²)` added to every weight in scope (the whole model, or one transformer
/// block at a time for the per-block sweep). `SampleView::perturbed_loss[i]` is then the
/// loss `−mean_t ℓ_t` of the sample under draw `i`. The harness seeds the noise from the
/// run's seed, the scope, the draw and the weight's name, so two attacks asking for the
/// same perturbations see the same losses (and they are computed once).
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq)]
pub struct Perturbation {
    /// Perturbed passes per model and scope (at least 1).
    pub draws: u32,
    /// Standard deviation of the noise (finite, at least 0).
    pub sigma: f64,
}

/// One attack as the harness sees it across the boundary.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug)]
pub struct AttackDecl {
    /// [`Attack::NAME`].
    pub name: RStr<'static>,
    /// The plugin crate's version.
    pub version: RStr<'static>,
    /// [`Attack::DESCRIPTION`].
    pub description: RStr<'static>,
    /// [`Attack::NEEDS`].
    pub needs: SignalSet,
    /// [`Attack::PARAMS`].
    pub params: RSlice<'static, ParamSpec>,
    /// [`Attack::score`], with panics caught.
    pub score: extern "C" fn(&AttackInput<'_>) -> RResult<RVec<f64>, RString>,
    /// [`Attack::perturbation`] for the given (completed) parameters, with panics caught.
    pub perturbation: extern "C" fn(RSlice<'_, Param<'_>>) -> RResult<ROption<Perturbation>, RString>,
}

impl AttackDecl {
    /// The declaration of `A`, its calls wrapped so that panics become errors.
    pub fn of<A: Attack>(version: &'static str) -> AttackDecl {
        AttackDecl {
            name: RStr::from_str(A::NAME),
            version: RStr::from_str(version),
            description: RStr::from_str(A::DESCRIPTION),
            needs: A::NEEDS,
            params: RSlice::from_slice(A::PARAMS),
            score: score_shim::<A>,
            perturbation: perturbation_shim::<A>,
        }
    }
}

/// The prefix of known non-members an attack asks for (it needs
/// [`SignalSet::PREFIXED_LOGPROB`]): the last `shots` records of the harness's prefix pool,
/// in the pool's order, each as the models read a record (templated prompt, then
/// response), concatenated before every sample's prompt. Whole shots are dropped from the
/// front while the prefix is longer than `max_tokens` (a single shot longer than that keeps
/// its last `max_tokens` tokens).
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
pub struct PrefixRequest {
    /// Records in the prefix (at least 1).
    pub shots: u32,
    /// Most tokens of the prefix (at least 1).
    pub max_tokens: u32,
}

/// The continuations an attack asks for (it needs [`SignalSet::CONTINUATIONS`]): each
/// sample's response is split in half by tokens (the first `⌊T/2⌋` tokens and the rest);
/// the target model continues the prompt and the first half `samples` times, each up to
/// as many tokens as the second half has (stopping at the end-of-sequence token), drawn
/// from `softmax(logits / temperature)` with a generator seeded by the run's seed and the
/// sample's id; the texts are decoded without special tokens.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq)]
pub struct ContinuationRequest {
    /// Continuations per sample (at least 1).
    pub samples: u32,
    /// Sampling temperature (positive, finite).
    pub temperature: f64,
}

/// An attack of interface 0.3.1 as the harness sees it: its [`AttackDecl`] and the calls
/// of the extended signals.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug)]
pub struct AttackExtDecl {
    /// Name, version, description, signals (any of [`SignalSet::EXTENDED`] among them),
    /// parameters, and the calls of earlier interfaces.
    pub decl: AttackDecl,
    /// [`Attack::score_ext`], with panics caught.
    pub score_ext: extern "C" fn(&AttackInputExt<'_>) -> RResult<RVec<f64>, RString>,
    /// [`Attack::prefix`] for the given (completed) parameters, with panics caught.
    pub prefix: extern "C" fn(RSlice<'_, Param<'_>>) -> RResult<ROption<PrefixRequest>, RString>,
    /// [`Attack::continuations`] for the given (completed) parameters, with panics caught.
    pub continuations: extern "C" fn(RSlice<'_, Param<'_>>) -> RResult<ROption<ContinuationRequest>, RString>,
}

impl AttackExtDecl {
    /// The declaration of `A`, its calls wrapped so that panics become errors.
    pub fn of<A: Attack>(version: &'static str) -> AttackExtDecl {
        AttackExtDecl { decl: AttackDecl::of::<A>(version), score_ext: score_ext_shim::<A>, prefix: prefix_shim::<A>, continuations: continuations_shim::<A> }
    }
}

/// The root module a plugin library exports (built by [`export_plugins!`]).
///
/// Fields after `kd_methods` were added in later interface versions (a prefix type: an
/// older library simply lacks them, and the harness reads them as absent).
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginLibRef)))]
#[sabi(missing_field(panic))]
pub struct PluginLib {
    /// The plugin crate's own version.
    pub library_version: RStr<'static>,
    /// The attacks the library provides (panics caught: a panicking list is empty).
    pub attacks: extern "C" fn() -> RVec<AttackDecl>,
    /// The KD methods the library provides (panics caught likewise).
    #[sabi(last_prefix_field)]
    pub kd_methods: extern "C" fn() -> RVec<kd::KdDecl>,
    /// (0.3.1) Every attack of the library, each callable with the extended signals; a
    /// harness of 0.3.1 or later reads this list instead of `attacks`, which holds only
    /// the attacks that earlier harnesses can run.
    #[sabi(missing_field(option))]
    pub attacks_ext: extern "C" fn() -> RVec<AttackExtDecl>,
    /// (0.3.2) The defenses the library provides (panics caught likewise).
    #[sabi(missing_field(option))]
    pub defenses: extern "C" fn() -> RVec<defense::DefenseDecl>,
}

impl RootModule for PluginLibRef {
    declare_root_module_statics! {PluginLibRef}
    const BASE_NAME: &'static str = "kdharness_plugin";
    const NAME: &'static str = "kdharness_plugin";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}

/// The root module of interface 0.3.0, which had no `attacks_ext`: abi_stable checks a
/// library's root module against the layout the harness expects and refuses one with
/// fewer fields, so a harness of 0.3.1 or later loads a library that fails the current
/// layout as this one (checked just as strictly) and calls its attacks as 0.3.0 did.
pub mod v0_3_0 {
    use abi_stable::{
        StableAbi, declare_root_module_statics,
        library::RootModule,
        sabi_types::VersionStrings,
        std_types::{RStr, RVec},
    };

    /// [`super::PluginLib`] as it was in 0.3.0 (same name, same fields in the same order).
    #[repr(C)]
    #[derive(StableAbi)]
    #[sabi(kind(Prefix(prefix_ref = PluginLibRef)))]
    #[sabi(missing_field(panic))]
    pub struct PluginLib {
        /// The plugin crate's own version.
        pub library_version: RStr<'static>,
        /// The attacks the library provides.
        pub attacks: extern "C" fn() -> RVec<super::AttackDecl>,
        /// The KD methods the library provides.
        #[sabi(last_prefix_field)]
        pub kd_methods: extern "C" fn() -> RVec<super::kd::KdDecl>,
    }

    impl RootModule for PluginLibRef {
        declare_root_module_statics! {PluginLibRef}
        const BASE_NAME: &'static str = "kdharness_plugin";
        const NAME: &'static str = "kdharness_plugin";
        const VERSION_STRINGS: VersionStrings = VersionStrings::new("0.3.0");
    }
}

/// The root module of interface 0.3.1, which had no `defenses`: loaded as
/// [`v0_3_0`] is, when a library fails the current layout.
pub mod v0_3_1 {
    use abi_stable::{
        StableAbi, declare_root_module_statics,
        library::RootModule,
        sabi_types::VersionStrings,
        std_types::{RStr, RVec},
    };

    /// [`super::PluginLib`] as it was in 0.3.1 (same name, same fields in the same order).
    #[repr(C)]
    #[derive(StableAbi)]
    #[sabi(kind(Prefix(prefix_ref = PluginLibRef)))]
    #[sabi(missing_field(panic))]
    pub struct PluginLib {
        /// The plugin crate's own version.
        pub library_version: RStr<'static>,
        /// The attacks earlier harnesses can feed.
        pub attacks: extern "C" fn() -> RVec<super::AttackDecl>,
        /// The KD methods the library provides.
        #[sabi(last_prefix_field)]
        pub kd_methods: extern "C" fn() -> RVec<super::kd::KdDecl>,
        /// Every attack, callable with the extended signals.
        #[sabi(missing_field(option))]
        pub attacks_ext: extern "C" fn() -> RVec<super::AttackExtDecl>,
    }

    impl RootModule for PluginLibRef {
        declare_root_module_statics! {PluginLibRef}
        const BASE_NAME: &'static str = "kdharness_plugin";
        const NAME: &'static str = "kdharness_plugin";
        const VERSION_STRINGS: VersionStrings = VersionStrings::new("0.3.1");
    }
}

/// The interface version plugins are checked against (this crate's version).
pub const INTERFACE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// A membership-inference attack. Implement it on a unit struct and list the struct in
/// [`export_plugins!`].
pub trait Attack: 'static {
    /// Unique name, used on the command line, in configs and in every output file.
    const NAME: &'static str;
    /// One line for `kdharness plugins list`.
    const DESCRIPTION: &'static str;
    /// The signals [`Attack::score`] reads.
    const NEEDS: SignalSet;
    /// Accepted parameters and their defaults.
    const PARAMS: &'static [ParamSpec] = &[];
    /// One finite score per sample of `input.samples`, in order; higher = more likely a
    /// member.
    fn score(input: &AttackInput<'_>) -> Result<Vec<f64>, String>;
    /// The same, with the signals of interface 0.3.1 beside each sample: what the harness
    /// calls. The default ignores them and calls [`Attack::score`]; an attack that needs
    /// any of [`SignalSet::EXTENDED`] implements this and gives `score` an error (a
    /// harness that cannot provide the signals never lists the attack, so never calls it).
    fn score_ext(input: &AttackInputExt<'_>) -> Result<Vec<f64>, String> {
        Self::score(&input.base)
    }
    /// The weight perturbations this attack needs for `params`, if it needs
    /// [`SignalSet::PERTURBED_LOSS`] (the harness asks before scoring and fills
    /// `perturbed_loss` accordingly); `None` otherwise.
    fn perturbation(params: ParamList<'_>) -> Result<Option<Perturbation>, String> {
        let _ = params;
        Ok(None)
    }
    /// The prefix of known non-members this attack needs for `params`, if it needs
    /// [`SignalSet::PREFIXED_LOGPROB`] (the harness asks before scoring and fills
    /// `SampleExt::prefixed_logprob` accordingly); `None` otherwise.
    fn prefix(params: ParamList<'_>) -> Result<Option<PrefixRequest>, String> {
        let _ = params;
        Ok(None)
    }
    /// The continuations this attack needs for `params`, if it needs
    /// [`SignalSet::CONTINUATIONS`] (the harness asks before scoring and fills
    /// `SampleExt::continuations` and `second_half` accordingly); `None` otherwise.
    fn continuations(params: ParamList<'_>) -> Result<Option<ContinuationRequest>, String> {
        let _ = params;
        Ok(None)
    }
}

extern "C" fn score_shim<A: Attack>(input: &AttackInput<'_>) -> RResult<RVec<f64>, RString> {
    guarded(|| A::score(input).map(RVec::from))
}

extern "C" fn score_ext_shim<A: Attack>(input: &AttackInputExt<'_>) -> RResult<RVec<f64>, RString> {
    guarded(|| A::score_ext(input).map(RVec::from))
}

/// Runs `f` with panics turned into errors: every call into a plugin goes through it.
pub(crate) fn guarded<T>(f: impl FnOnce() -> Result<T, String>) -> RResult<T, RString> {
    silence_panic_messages();
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => RResult::ROk(v),
        Ok(Err(message)) => RResult::RErr(RString::from(message)),
        Err(payload) => RResult::RErr(RString::from(format!("panicked: {}", panic_message(&*payload)))),
    }
}

extern "C" fn continuations_shim<A: Attack>(params: RSlice<'_, Param<'_>>) -> RResult<ROption<ContinuationRequest>, RString> {
    guarded(|| A::continuations(ParamList(params.as_slice())).map(ROption::from))
}

extern "C" fn prefix_shim<A: Attack>(params: RSlice<'_, Param<'_>>) -> RResult<ROption<PrefixRequest>, RString> {
    guarded(|| A::prefix(ParamList(params.as_slice())).map(ROption::from))
}

extern "C" fn perturbation_shim<A: Attack>(params: RSlice<'_, Param<'_>>) -> RResult<ROption<Perturbation>, RString> {
    guarded(|| A::perturbation(ParamList(params.as_slice())).map(ROption::from))
}

/// Panics inside a plugin are reported by the harness as errors; the default hook would
/// also print a backtrace notice to the user's terminal, so it is replaced once with a
/// silent one. A plugin library carries its own copy of std, so this touches the plugin
/// only, never the harness.
pub(crate) fn silence_panic_messages() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| std::panic::set_hook(Box::new(|_| {})));
}

pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a non-string panic payload".to_string()
    }
}

/// Runs `list` with panics caught (an empty list then), for [`export_plugins!`].
#[doc(hidden)]
pub fn catch_list<T>(list: impl FnOnce() -> Vec<T>) -> RVec<T> {
    silence_panic_messages();
    RVec::from(catch_unwind(AssertUnwindSafe(list)).unwrap_or_default())
}

/// Exports the root module of a plugin library: its attacks, KD methods and defenses.
///
/// ```text
/// kdharness_plugin_api::export_plugins!(attacks: [LossAttack, OtherAttack]);
/// kdharness_plugin_api::export_plugins!(kd: [MyMethod]);
/// kdharness_plugin_api::export_plugins!(defenses: [MyDefense]);
/// kdharness_plugin_api::export_plugins!(attacks: [LossAttack], kd: [MyMethod], defenses: [MyDefense]);
/// kdharness_plugin_api::export_plugins!(attacks: [LossAttack], kd: [MyMethod]);
/// ```
/// The plugin crate must depend on `abi_stable` directly (its export attribute refers to
/// it by that name).
#[macro_export]
macro_rules! export_plugins {
    (attacks: [$($attack:ty),* $(,)?] $(,)?) => {
        $crate::export_plugins!(attacks: [$($attack),*], kd: [], defenses: []);
    };
    (kd: [$($method:ty),* $(,)?] $(,)?) => {
        $crate::export_plugins!(attacks: [], kd: [$($method),*], defenses: []);
    };
    (defenses: [$($defense:ty),* $(,)?] $(,)?) => {
        $crate::export_plugins!(attacks: [], kd: [], defenses: [$($defense),*]);
    };
    (attacks: [$($attack:ty),* $(,)?], kd: [$($method:ty),* $(,)?] $(,)?) => {
        $crate::export_plugins!(attacks: [$($attack),*], kd: [$($method),*], defenses: []);
    };
    (attacks: [$($attack:ty),* $(,)?], kd: [$($method:ty),* $(,)?], defenses: [$($defense:ty),* $(,)?] $(,)?) => {
        #[::abi_stable::export_root_module]
        pub fn kdharness_plugin_root() -> $crate::PluginLibRef {
            use ::abi_stable::prefix_type::PrefixTypeTrait;
            // For harnesses before 0.3.1: the attacks they can feed.
            extern "C" fn attacks() -> ::abi_stable::std_types::RVec<$crate::AttackDecl> {
                $crate::catch_list(|| {
                    let all: ::std::vec::Vec<$crate::AttackDecl> = ::std::vec![
                        $($crate::AttackDecl::of::<$attack>(env!("CARGO_PKG_VERSION"))),*
                    ];
                    all.into_iter().filter(|d| !d.needs.intersects($crate::SignalSet::EXTENDED)).collect()
                })
            }
            extern "C" fn attacks_ext() -> ::abi_stable::std_types::RVec<$crate::AttackExtDecl> {
                $crate::catch_list(|| ::std::vec![
                    $($crate::AttackExtDecl::of::<$attack>(env!("CARGO_PKG_VERSION"))),*
                ])
            }
            extern "C" fn defenses() -> ::abi_stable::std_types::RVec<$crate::defense::DefenseDecl> {
                $crate::catch_list(|| ::std::vec![
                    $($crate::defense::DefenseDecl::of::<$defense>(env!("CARGO_PKG_VERSION"))),*
                ])
            }
            extern "C" fn kd_methods() -> ::abi_stable::std_types::RVec<$crate::kd::KdDecl> {
                $crate::catch_list(|| ::std::vec![
                    $($crate::kd::KdDecl::of::<$method>(env!("CARGO_PKG_VERSION"))),*
                ])
            }
            $crate::PluginLib {
                library_version: ::abi_stable::std_types::RStr::from_str(env!("CARGO_PKG_VERSION")),
                attacks,
                kd_methods,
                attacks_ext,
                defenses,
            }
            .leak_into_prefix()
        }
    };
}

/// Arithmetic mean; `NaN` for an empty slice (the harness rejects non-finite scores).
pub fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

/// Mean of the `m = max(1, floor(k·n))` smallest values (the "Min-k%" selection).
pub fn mean_of_smallest_fraction(values: &[f64], k: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let m = ((k * values.len() as f64).floor() as usize).clamp(1, values.len());
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    mean(&sorted[..m])
}

/// Owned per-sample signals, for hosts and for plugin unit tests that need a
/// [`SampleView`] without the harness. Fields mean what they mean in [`SampleView`].
#[derive(Clone, Debug, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[allow(missing_docs)]
pub struct OwnedSample {
    pub id: String,
    pub token_ids: Vec<u32>,
    pub target_logprob: Vec<f64>,
    pub dist_mean: Vec<f64>,
    pub dist_var: Vec<f64>,
    pub argmax_id: Vec<u32>,
    pub response_text: String,
    pub argmax_text: String,
    pub perturbed_loss: Vec<f64>,
    /// The signals of 0.3.1 (see [`SampleExt`]; `continuations` joined by
    /// [`CONTINUATION_SEPARATOR`]).
    pub token_log_freq: Vec<f64>,
    pub prefixed_logprob: Vec<f64>,
    pub continuations: String,
    pub second_half: String,
    pub reference_mean_logprob: Vec<f64>,
}

impl OwnedSample {
    /// Borrows the sample's signals of 0.3.1 as the ABI sees them.
    pub fn ext(&self) -> SampleExt<'_> {
        SampleExt {
            token_log_freq: self.token_log_freq.as_slice().into(),
            prefixed_logprob: self.prefixed_logprob.as_slice().into(),
            continuations: self.continuations.as_str().into(),
            second_half: self.second_half.as_str().into(),
            reference_mean_logprob: self.reference_mean_logprob.as_slice().into(),
        }
    }

    /// Borrows the sample as the ABI sees it.
    pub fn view(&self) -> SampleView<'_> {
        SampleView {
            id: self.id.as_str().into(),
            token_ids: self.token_ids.as_slice().into(),
            target_logprob: self.target_logprob.as_slice().into(),
            dist_mean: self.dist_mean.as_slice().into(),
            dist_var: self.dist_var.as_slice().into(),
            argmax_id: self.argmax_id.as_slice().into(),
            response_text: self.response_text.as_str().into(),
            argmax_text: self.argmax_text.as_str().into(),
            perturbed_loss: self.perturbed_loss.as_slice().into(),
        }
    }
}

/// The given parameters followed by the default of every declared parameter not given.
pub fn with_defaults(specs: &[ParamSpec], given: &[(String, String)]) -> Vec<(String, String)> {
    let mut all = given.to_vec();
    for spec in specs {
        if !given.iter().any(|(k, _)| k == spec.name.as_str()) {
            all.push((spec.name.to_string(), spec.default.to_string()));
        }
    }
    all
}

/// `key = value` pairs as the ABI passes them (borrowing the pairs).
pub fn param_views(pairs: &[(String, String)]) -> Vec<Param<'_>> {
    pairs.iter().map(|(k, v)| Param { key: k.as_str().into(), value: v.as_str().into() }).collect()
}

/// Runs `f` on `given` with the defaults of `specs` filled in: the in-process route of the
/// unit-test helpers [`run_attack`] and [`kd::instance`].
pub(crate) fn with_param_list<T>(specs: &[ParamSpec], given: &[(&str, &str)], f: impl FnOnce(ParamList<'_>) -> T) -> T {
    let given: Vec<(String, String)> = given.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let all = with_defaults(specs, &given);
    f(ParamList(&param_views(&all)))
}

/// Runs attack `A` on owned samples in-process (through [`Attack::score_ext`], as the
/// harness does), parameters defaulted: what a unit test of an attack calls.
pub fn run_attack<A: Attack>(
    samples: &[OwnedSample],
    reference: &[OwnedSample],
    params: &[(&str, &str)],
) -> Result<Vec<f64>, String> {
    let views: Vec<SampleView<'_>> = samples.iter().map(OwnedSample::view).collect();
    let ext: Vec<SampleExt<'_>> = samples.iter().map(OwnedSample::ext).collect();
    let reference: Vec<SampleView<'_>> = reference.iter().map(OwnedSample::view).collect();
    with_param_list(A::PARAMS, params, |params| {
        let base = AttackInput {
            samples: views.as_slice().into(),
            reference: reference.as_slice().into(),
            calibration: RSlice::EMPTY,
            params: params.0.into(),
        };
        A::score_ext(&AttackInputExt { base, samples: ext.as_slice().into(), calibration: RSlice::EMPTY })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smallest_fraction_uses_floor_with_at_least_one() {
        let v = [5.0, -1.0, 3.0, 0.5, 2.0];
        // k = 0.2, n = 5: m = 1, the minimum.
        assert_eq!(mean_of_smallest_fraction(&v, 0.2), -1.0);
        // k = 0.5: m = floor(2.5) = 2 -> (-1 + 0.5)/2.
        assert_eq!(mean_of_smallest_fraction(&v, 0.5), -0.25);
        // k tiny: still one value.
        assert_eq!(mean_of_smallest_fraction(&v, 0.01), -1.0);
        assert!(mean_of_smallest_fraction(&[], 0.2).is_nan());
    }

    #[test]
    fn signal_names_follow_bits() {
        let s = SignalSet::TARGET_LOGPROB | SignalSet::ARGMAX_TEXT;
        assert_eq!(s.names(), vec!["target_logprob", "argmax_text"]);
        assert!(s.contains(SignalSet::TARGET_LOGPROB));
        assert!(!s.contains(SignalSet::DIST_MEAN));
    }
}
