//! Defense plugins (SPEC §18, interface 0.3.2): what a data owner can do to lower the
//! leakage of the teacher's private records into the students, applied by the harness at
//! one of three places ([`DefenseTarget`]):
//!
//! - **teacher outputs**: the teacher's logits are transformed, row by row, before any
//!   KD loss reads them ([`Defense::teacher_logits`]: temperature, top-k, noise, rounding);
//! - **teacher samples**: the teacher's sampled responses (SeqKD's data) are checked
//!   against the private records and the ones that repeat them are dropped
//!   ([`Defense::keep_samples`]);
//! - **teacher training**: the teacher's fine-tuning on the private records is made
//!   differentially private: the harness computes per-example gradients and the defense
//!   turns them into the step's gradient ([`Defense::private_gradient`], DP-SGD), and says
//!   what privacy that spent ([`Defense::privacy_spent`]).
//!
//! A defense is created once per defended model with its parameters and a seed derived
//! from the run's seed and the model's name, so its randomness is reproducible.
//!
//! ```
//! use kdharness_plugin_api::defense::{Defense, DefenseTarget};
//! use kdharness_plugin_api::{ParamList, ParamSpec};
//!
//! /// Divides the teacher's logits by `t`.
//! pub struct Flatten { t: f32 }
//! impl Defense for Flatten {
//!     const NAME: &'static str = "my_flatten";
//!     const DESCRIPTION: &'static str = "teacher logits divided by t";
//!     const ACTS_ON: DefenseTarget = DefenseTarget::TEACHER_LOGITS;
//!     const PARAMS: &'static [ParamSpec] = &[ParamSpec::new("t", "2", "the divisor")];
//!     fn new(params: ParamList<'_>, _seed: u64) -> Result<Self, String> {
//!         Ok(Flatten { t: params.f64("t")? as f32 })
//!     }
//!     fn teacher_logits(&mut self, logits: &mut [f32], _vocab: usize) -> Result<(), String> {
//!         logits.iter_mut().for_each(|z| *z /= self.t);
//!         Ok(())
//!     }
//! }
//! kdharness_plugin_api::export_plugins!(defenses: [Flatten]);
//! ```

#![allow(non_local_definitions)]

use abi_stable::{
    StableAbi, sabi_trait,
    sabi_trait::TD_Opaque,
    std_types::{RBox, ROption, RResult, RSlice, RSliceMut, RStr, RString, RVec},
};

use crate::{Param, ParamList, ParamSpec, guarded};

/// Where the harness applies a defense.
#[repr(transparent)]
#[derive(StableAbi, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DefenseTarget(pub u32);

impl DefenseTarget {
    /// The teacher's logits, before the KD loss reads them ([`Defense::teacher_logits`]).
    pub const TEACHER_LOGITS: DefenseTarget = DefenseTarget(1 << 0);
    /// The teacher's sampled responses ([`Defense::keep_samples`]).
    pub const TEACHER_SAMPLES: DefenseTarget = DefenseTarget(1 << 1);
    /// The teacher's fine-tuning on the private records ([`Defense::private_gradient`]).
    pub const TEACHER_TRAINING: DefenseTarget = DefenseTarget(1 << 2);

    /// Every target with its name, in bit order.
    pub const NAMED: [(DefenseTarget, &'static str); 3] =
        [(Self::TEACHER_LOGITS, "teacher_logits"), (Self::TEACHER_SAMPLES, "teacher_samples"), (Self::TEACHER_TRAINING, "teacher_training")];

    /// Whether every target of `other` is in `self`.
    pub const fn contains(self, other: DefenseTarget) -> bool {
        self.0 & other.0 == other.0 && other.0 != 0
    }

    /// The names of the targets in this set.
    pub fn names(self) -> Vec<&'static str> {
        Self::NAMED.iter().filter(|(t, _)| self.contains(*t)).map(|(_, n)| *n).collect()
    }
}

/// Token sequences packed in one buffer: sequence `i` is
/// `tokens[offsets[i]..offsets[i + 1]]` (`offsets` has one entry more than there are
/// sequences).
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug)]
pub struct TokenSeqs<'a> {
    /// Every sequence's tokens, one after another.
    pub tokens: RSlice<'a, u32>,
    /// Where each sequence starts, then the end of the last.
    pub offsets: RSlice<'a, u32>,
}

impl<'a> TokenSeqs<'a> {
    /// How many sequences.
    pub fn len(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sequence `i`.
    pub fn get(&self, i: usize) -> &'a [u32] {
        let (tokens, offsets) = (self.tokens.as_slice(), self.offsets.as_slice());
        &tokens[offsets[i] as usize..offsets[i + 1] as usize]
    }

    /// Every sequence, in order.
    pub fn iter(&self) -> impl Iterator<Item = &'a [u32]> + '_ {
        (0..self.len()).map(|i| self.get(i))
    }
}

/// Sequences packed for [`TokenSeqs`], owned by the caller.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PackedSeqs {
    /// Every sequence's tokens.
    pub tokens: Vec<u32>,
    /// Where each starts, then the end.
    pub offsets: Vec<u32>,
}

impl PackedSeqs {
    /// Packs `seqs`.
    pub fn new<'s>(seqs: impl IntoIterator<Item = &'s [u32]>) -> Self {
        let mut packed = PackedSeqs { tokens: Vec::new(), offsets: vec![0] };
        for s in seqs {
            packed.tokens.extend_from_slice(s);
            packed.offsets.push(packed.tokens.len() as u32);
        }
        packed
    }

    /// The view the ABI passes.
    pub fn view(&self) -> TokenSeqs<'_> {
        TokenSeqs { tokens: self.tokens.as_slice().into(), offsets: self.offsets.as_slice().into() }
    }
}

/// The privacy a training defense spent: `(ε, δ)`-differential privacy, and the Rényi
/// order the conversion chose.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq)]
pub struct PrivacySpent {
    /// ε.
    pub epsilon: f64,
    /// δ.
    pub delta: f64,
    /// The Rényi order α at which ε was smallest.
    pub order: f64,
}

/// A defense. Implement it and list the type in [`crate::export_plugins!`] under
/// `defenses:`. Only the methods of its [`Defense::ACTS_ON`] targets are called.
pub trait Defense: Sized + 'static {
    /// Unique name, used in configs and in defended models' names.
    const NAME: &'static str;
    /// One line for `kdharness plugins list`.
    const DESCRIPTION: &'static str;
    /// Where it acts.
    const ACTS_ON: DefenseTarget;
    /// Accepted parameters and their defaults.
    const PARAMS: &'static [ParamSpec] = &[];
    /// A fresh instance for one defended model (every declared parameter is given);
    /// `seed` drives its randomness.
    fn new(params: ParamList<'_>, seed: u64) -> Result<Self, String>;
    /// (`TEACHER_LOGITS`) Transforms the teacher's logits in place: `logits` is
    /// `[positions, vocab]`; a row's softmax is what the KD loss reads. A token the
    /// defense removes gets `f32::NEG_INFINITY` (probability 0).
    fn teacher_logits(&mut self, _logits: &mut [f32], _vocab: usize) -> Result<(), String> {
        Ok(())
    }
    /// (`TEACHER_SAMPLES`) Which teacher samples (their response tokens) to keep, given
    /// the private records (prompt and response tokens): one flag per sample.
    fn keep_samples(&mut self, samples: TokenSeqs<'_>, _private: TokenSeqs<'_>) -> Result<Vec<bool>, String> {
        Ok(vec![true; samples.len()])
    }
    /// (`TEACHER_TRAINING`) The step's gradient from the per-example gradients of its
    /// `n` examples (`per_example`: `[n, dim]`, the defense may overwrite it), written into
    /// `out` (`dim`): for DP-SGD, the clipped gradients' sum plus noise, over `n`.
    fn private_gradient(&mut self, _per_example: &mut [f32], _n: usize, _out: &mut [f32]) -> Result<(), String> {
        Err(format!("defense `{}` does not act on the teacher's training", Self::NAME))
    }
    /// (`TEACHER_TRAINING`) The privacy spent by `steps` steps, each on a share
    /// `sample_rate` of the private records.
    fn privacy_spent(&self, _steps: u64, _sample_rate: f64) -> Result<Option<PrivacySpent>, String> {
        Ok(None)
    }
}

/// The ABI-stable face of a [`Defense`] instance.
#[sabi_trait]
pub trait DefenseFfi {
    /// See [`Defense::teacher_logits`].
    fn teacher_logits(&mut self, logits: RSliceMut<'_, f32>, vocab: u32) -> RResult<(), RString>;
    /// See [`Defense::keep_samples`].
    fn keep_samples(&mut self, samples: TokenSeqs<'_>, private: TokenSeqs<'_>) -> RResult<RVec<bool>, RString>;
    /// See [`Defense::private_gradient`].
    fn private_gradient(&mut self, per_example: RSliceMut<'_, f32>, n: u32, out: RSliceMut<'_, f32>) -> RResult<(), RString>;
    /// See [`Defense::privacy_spent`].
    #[sabi(last_prefix_field)]
    fn privacy_spent(&self, steps: u64, sample_rate: f64) -> RResult<ROption<PrivacySpent>, RString>;
}

/// A defense instance owned by the harness.
pub type DefenseInstance = DefenseFfi_TO<'static, RBox<()>>;

/// A [`Defense`] behind the ABI, every call guarded against panics.
struct Guarded<D>(D);

impl<D: Defense> DefenseFfi for Guarded<D> {
    fn teacher_logits(&mut self, mut logits: RSliceMut<'_, f32>, vocab: u32) -> RResult<(), RString> {
        guarded(|| self.0.teacher_logits(logits.as_mut_slice(), vocab as usize))
    }
    fn keep_samples(&mut self, samples: TokenSeqs<'_>, private: TokenSeqs<'_>) -> RResult<RVec<bool>, RString> {
        guarded(|| {
            let keep = self.0.keep_samples(samples, private)?;
            if keep.len() != samples.len() {
                return Err(format!("returned {} flags for {} samples", keep.len(), samples.len()));
            }
            Ok(RVec::from(keep))
        })
    }
    fn private_gradient(&mut self, mut per_example: RSliceMut<'_, f32>, n: u32, mut out: RSliceMut<'_, f32>) -> RResult<(), RString> {
        guarded(|| self.0.private_gradient(per_example.as_mut_slice(), n as usize, out.as_mut_slice()))
    }
    fn privacy_spent(&self, steps: u64, sample_rate: f64) -> RResult<ROption<PrivacySpent>, RString> {
        guarded(|| self.0.privacy_spent(steps, sample_rate).map(ROption::from))
    }
}

/// A defense as a plugin library lists it.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug)]
pub struct DefenseDecl {
    /// [`Defense::NAME`].
    pub name: RStr<'static>,
    /// The plugin crate's version.
    pub version: RStr<'static>,
    /// [`Defense::DESCRIPTION`].
    pub description: RStr<'static>,
    /// [`Defense::ACTS_ON`].
    pub acts_on: DefenseTarget,
    /// [`Defense::PARAMS`].
    pub params: RSlice<'static, ParamSpec>,
    /// Creates an instance from the parameters (every declared one given) and a seed.
    pub create: extern "C" fn(RSlice<'_, Param<'_>>, u64) -> RResult<DefenseInstance, RString>,
}

extern "C" fn create_shim<D: Defense>(params: RSlice<'_, Param<'_>>, seed: u64) -> RResult<DefenseInstance, RString> {
    guarded(|| D::new(ParamList(params.as_slice()), seed).map(|d| DefenseInstance::from_value(Guarded(d), TD_Opaque)))
}

impl DefenseDecl {
    /// The declaration of defense `D` (what [`crate::export_plugins!`] builds).
    pub fn of<D: Defense>(version: &'static str) -> DefenseDecl {
        DefenseDecl {
            name: RStr::from_str(D::NAME),
            version: RStr::from_str(version),
            description: RStr::from_str(D::DESCRIPTION),
            acts_on: D::ACTS_ON,
            params: RSlice::from_slice(D::PARAMS),
            create: create_shim::<D>,
        }
    }
}

/// Creates defense `D` in-process with its defaults overridden by `params`: what a unit
/// test of a defense calls.
pub fn instance<D: Defense>(params: &[(&str, &str)], seed: u64) -> Result<D, String> {
    crate::with_param_list(D::PARAMS, params, |p| D::new(p, seed))
}

/// A standard normal draw from two uniform draws in (0, 1] × [0, 1) (Box–Muller), for
/// defenses that add Gaussian noise.
pub fn standard_normal(u1: f64, u2: f64) -> f64 {
    (-2.0 * u1.max(f64::MIN_POSITIVE).ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}
