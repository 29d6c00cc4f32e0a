//! KD-method plugins (SPEC §7.3): a method says where its training sequences come from
//!
//! (The `sabi_trait` expansion defines impls outside the trait's module; that is how
//! abi_stable works, hence the allowed lint below.)
//! ([`DataPolicy`]) and turns student and teacher logits into a loss and its gradient with
//! respect to the student logits ([`KdMethod::loss_and_grad`]); the harness back-propagates
//! that gradient through the student with the surrogate `Σ student_logits · G`.
//!
//! Logits cross the boundary as borrowed slices of the harness's own buffers and the
//! gradient is written into a harness-owned buffer: nothing is copied.
//!
//! ```
//! use kdharness_plugin_api::kd::{DataPolicy, KdBatch, KdLoss, KdMethod};
//! use kdharness_plugin_api::objectives::Objective;
//! use kdharness_plugin_api::{ParamList, ParamSpec};
//!
//! /// Forward KL on the ground truth, at a temperature.
//! pub struct TemperedKd { objective: Objective }
//! impl KdMethod for TemperedKd {
//!     const NAME: &'static str = "tempered_kd";
//!     const DESCRIPTION: &'static str = "forward KL on ground-truth responses";
//!     const PARAMS: &'static [ParamSpec] = &[ParamSpec::new("objective", "fkl", "divergence")];
//!     fn new(params: ParamList<'_>) -> Result<Self, String> {
//!         Ok(TemperedKd { objective: Objective::from_params(params)? })
//!     }
//!     fn data_policy(&self, _progress: f64) -> DataPolicy { DataPolicy::GROUND_TRUTH }
//!     fn loss_and_grad(&mut self, batch: &KdBatch<'_>, grad: &mut [f32]) -> Result<KdLoss, String> {
//!         Ok(self.objective.loss_and_grad(batch, grad))
//!     }
//! }
//! kdharness_plugin_api::export_plugins!(kd: [TemperedKd]);
//! ```

#![allow(non_local_definitions)]

use std::panic::{AssertUnwindSafe, catch_unwind};

use abi_stable::{
    StableAbi, sabi_trait,
    sabi_trait::TD_Opaque,
    std_types::{RBox, RResult, RSlice, RSliceMut, RStr, RString},
};

use crate::{Param, ParamList, ParamSpec, panic_message, silence_panic_messages};

/// Where a method's training sequences come from, queried before every step (SPEC §8).
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq)]
pub struct DataPolicy {
    /// Whether the method needs teacher logits at all (false for the No-KD baseline).
    pub uses_teacher: bool,
    /// Train on the teacher's sampled responses (generated once per prompt and cached)
    /// instead of the ground truth.
    pub teacher_samples: bool,
    /// Probability that a step trains on student-generated responses (on-policy).
    pub student_fraction: f64,
    /// Weight of the teacher in the sampling distribution of on-policy steps:
    /// `(1 − w)·q + w·p` (MiniLLM's teacher-mixed sampling).
    pub teacher_mix: f64,
    /// Capacity of the replay buffer of student samples (0: always fresh samples).
    pub replay_buffer: u32,
}

impl DataPolicy {
    /// Ground-truth responses, teacher logits (KD).
    pub const GROUND_TRUTH: DataPolicy =
        DataPolicy { uses_teacher: true, teacher_samples: false, student_fraction: 0.0, teacher_mix: 0.0, replay_buffer: 0 };
}

/// The logits of one training step, flattened over its `positions` trained positions
/// (each row is a `vocab`-wide distribution).
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug)]
pub struct KdBatch<'a> {
    /// Trained positions in this step.
    pub positions: u32,
    /// Width of each row.
    pub vocab: u32,
    /// Student logits, row-major `[positions, vocab]`.
    pub student_logits: RSlice<'a, f32>,
    /// Teacher logits, same layout (empty when the policy uses no teacher).
    pub teacher_logits: RSlice<'a, f32>,
    /// The token that follows each position (ground truth or sampled).
    pub targets: RSlice<'a, u32>,
    /// Weight of each position (1 for real positions, 0 for masked ones).
    pub mask: RSlice<'a, f32>,
    /// Index of the sequence each position belongs to (positions are in order).
    pub sequence: RSlice<'a, u32>,
    /// Log-probability of each target under the distribution that sampled it (on-policy
    /// steps); empty for ground-truth and teacher-sampled steps.
    pub behaviour_logprob: RSlice<'a, f32>,
    /// Whether the targets were sampled by the student (on-policy) in this step.
    pub on_policy: bool,
    /// Fraction of training done, in [0, 1].
    pub progress: f64,
}

impl KdBatch<'_> {
    /// Row `i` of the student logits.
    pub fn student_row(&self, i: usize) -> &[f32] {
        let v = self.vocab as usize;
        &self.student_logits[i * v..(i + 1) * v]
    }

    /// Row `i` of the teacher logits.
    pub fn teacher_row(&self, i: usize) -> &[f32] {
        let v = self.vocab as usize;
        &self.teacher_logits[i * v..(i + 1) * v]
    }

    /// `Σ mask`, the normaliser of the batch loss.
    pub fn mask_total(&self) -> f64 {
        self.mask.iter().map(|&m| m as f64).sum()
    }
}

/// What one step reports besides its gradient.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug, Default, PartialEq)]
pub struct KdLoss {
    /// The objective's value: `Σ mask·d / Σ mask`, the loss whose gradient was written.
    pub loss: f64,
    /// `KL(p‖q)` averaged the same way, when the method computes it (else NaN).
    pub kl: f64,
}

/// A KD method. Implement it and list the type in [`crate::export_plugins!`] under `kd:`.
pub trait KdMethod: Sized + 'static {
    /// Unique name, used in configs and every output file.
    const NAME: &'static str;
    /// One line for `kdharness plugins list`.
    const DESCRIPTION: &'static str;
    /// Accepted parameters and their defaults.
    const PARAMS: &'static [ParamSpec] = &[];
    /// A fresh instance for one student's training (every declared parameter is given).
    fn new(params: ParamList<'_>) -> Result<Self, String>;
    /// Where the next step's sequences come from; `progress` is the fraction of training
    /// done.
    fn data_policy(&self, progress: f64) -> DataPolicy;
    /// The batch loss and, written into `grad` (`[positions, vocab]`, zeroed), its gradient
    /// with respect to `batch.student_logits`.
    fn loss_and_grad(&mut self, batch: &KdBatch<'_>, grad: &mut [f32]) -> Result<KdLoss, String>;
    /// Called after every epoch with the validation loss (adaptive schedules).
    fn on_epoch_end(&mut self, _val_loss: f64) -> Result<(), String> {
        Ok(())
    }
}

/// The ABI-stable face of a [`KdMethod`] instance.
#[sabi_trait]
pub trait KdMethodFfi {
    /// See [`KdMethod::data_policy`].
    fn data_policy(&self, progress: f64) -> RResult<DataPolicy, RString>;
    /// See [`KdMethod::loss_and_grad`].
    fn loss_and_grad(&mut self, batch: &KdBatch<'_>, grad: RSliceMut<'_, f32>) -> RResult<KdLoss, RString>;
    /// See [`KdMethod::on_epoch_end`].
    #[sabi(last_prefix_field)]
    fn on_epoch_end(&mut self, val_loss: f64) -> RResult<(), RString>;
}

/// A method instance owned by the harness.
pub type KdInstance = KdMethodFfi_TO<'static, RBox<()>>;

/// Runs `f` with panics turned into errors.
fn guarded<T>(f: impl FnOnce() -> Result<T, String>) -> RResult<T, RString> {
    silence_panic_messages();
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => RResult::ROk(v),
        Ok(Err(message)) => RResult::RErr(RString::from(message)),
        Err(payload) => RResult::RErr(RString::from(format!("panicked: {}", panic_message(&*payload)))),
    }
}

/// A [`KdMethod`] behind the ABI, every call guarded against panics.
struct Guarded<M>(M);

impl<M: KdMethod> KdMethodFfi for Guarded<M> {
    fn data_policy(&self, progress: f64) -> RResult<DataPolicy, RString> {
        guarded(|| Ok(self.0.data_policy(progress)))
    }
    fn loss_and_grad(&mut self, batch: &KdBatch<'_>, mut grad: RSliceMut<'_, f32>) -> RResult<KdLoss, RString> {
        guarded(|| self.0.loss_and_grad(batch, grad.as_mut_slice()))
    }
    fn on_epoch_end(&mut self, val_loss: f64) -> RResult<(), RString> {
        guarded(|| self.0.on_epoch_end(val_loss))
    }
}

/// A KD method as a plugin library lists it.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug)]
pub struct KdDecl {
    /// [`KdMethod::NAME`].
    pub name: RStr<'static>,
    /// The plugin crate's version.
    pub version: RStr<'static>,
    /// [`KdMethod::DESCRIPTION`].
    pub description: RStr<'static>,
    /// [`KdMethod::PARAMS`].
    pub params: RSlice<'static, ParamSpec>,
    /// Creates an instance from the parameters (every declared one given).
    pub create: extern "C" fn(RSlice<'_, Param<'_>>) -> RResult<KdInstance, RString>,
}

extern "C" fn create_shim<M: KdMethod>(params: RSlice<'_, Param<'_>>) -> RResult<KdInstance, RString> {
    guarded(|| M::new(ParamList(params.as_slice())).map(|m| KdInstance::from_value(Guarded(m), TD_Opaque)))
}

impl KdDecl {
    /// The declaration of method `M` (what [`crate::export_plugins!`] builds).
    pub fn of<M: KdMethod>(version: &'static str) -> KdDecl {
        KdDecl {
            name: RStr::from_str(M::NAME),
            version: RStr::from_str(version),
            description: RStr::from_str(M::DESCRIPTION),
            params: RSlice::from_slice(M::PARAMS),
            create: create_shim::<M>,
        }
    }
}

/// Creates method `M` in-process with its defaults overridden by `params`: what a unit
/// test of a method calls.
pub fn instance<M: KdMethod>(params: &[(&str, &str)]) -> Result<M, String> {
    let given: Vec<(String, String)> = params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let all = crate::with_defaults(M::PARAMS, &given);
    let all: Vec<Param<'_>> = all.iter().map(|(k, v)| Param { key: k.as_str().into(), value: v.as_str().into() }).collect();
    M::new(ParamList(&all))
}
