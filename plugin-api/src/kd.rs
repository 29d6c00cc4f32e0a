//! KD-method plugins (SPEC §7.3): a method says where its training sequences come from
//! ([`DataPolicy`]) and turns student and teacher logits into a loss and its gradient with
//! respect to the student logits ([`KdMethod::loss_and_grad`]); the harness back-propagates
//! that gradient through the student with the surrogate `Σ student_logits · G`.
//!
//! Logits cross the boundary as borrowed slices of the harness's own buffers and the
//! gradient is written into a harness-owned buffer: nothing is copied.
//!
//! A method whose loss is one of the shared [`objectives`](crate::objectives) declares the
//! shared `objective`, `beta` and `alpha` parameters with [`crate::objective_params!`],
//! reads them with [`Objective::from_params`] and tests them with
//! [`assert_objective_params`]:
//!
//! ```
//! use kdharness_plugin_api::kd::{DataPolicy, KdBatch, KdLoss, KdMethod, assert_objective_params};
//! use kdharness_plugin_api::objectives::Objective;
//! use kdharness_plugin_api::{ParamList, ParamSpec, objective_params};
//!
//! /// A divergence (forward KL unless configured) on the ground truth.
//! pub struct GroundTruthKd { objective: Objective }
//! impl KdMethod for GroundTruthKd {
//!     const NAME: &'static str = "ground_truth_kd";
//!     const DESCRIPTION: &'static str = "forward KL on ground-truth responses";
//!     const PARAMS: &'static [ParamSpec] = objective_params!("fkl");
//!     fn new(params: ParamList<'_>) -> Result<Self, String> {
//!         Ok(GroundTruthKd { objective: Objective::from_params(params)? })
//!     }
//!     fn data_policy(&self, _progress: f64) -> DataPolicy { DataPolicy::GROUND_TRUTH }
//!     fn loss_and_grad(&mut self, batch: &KdBatch<'_>, grad: &mut [f32]) -> Result<KdLoss, String> {
//!         Ok(self.objective.loss_and_grad(batch, grad))
//!     }
//! }
//! kdharness_plugin_api::export_plugins!(kd: [GroundTruthKd]);
//!
//! // The method's unit test.
//! assert_objective_params::<GroundTruthKd>(Objective::Fkl, |m| m.objective);
//! ```
//!
//! (The `sabi_trait` expansion defines impls outside the trait's module; that is how
//! abi_stable works, hence the allowed lint below.)

#![allow(non_local_definitions)]

use abi_stable::{
    StableAbi, sabi_trait,
    sabi_trait::TD_Opaque,
    std_types::{RBox, RResult, RSlice, RSliceMut, RStr, RString},
};

use crate::objectives::{self, Objective};
use crate::{Param, ParamList, ParamSpec, guarded};

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

/// The `replay_buffer` parameter of methods that train on student samples
/// ([`DataPolicy::replay_buffer`]).
pub const REPLAY_BUFFER: ParamSpec = ParamSpec::new("replay_buffer", "1000", "student samples kept for reuse");

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
    crate::with_param_list(M::PARAMS, params, M::new)
}

/// Asserts that method `M` takes the shared objective parameters and forwards them, for a
/// KD plugin's unit test (see the [module example](self)): `M::PARAMS` holds the shared
/// specs of [`crate::objective_params!`]; created with its defaults, `M` asks for teacher
/// logits and `objective_of` reads `default` from it; `objective`, `beta` and `alpha`
/// given override it; an unknown objective is refused. Panics naming what differs.
#[track_caller]
pub fn assert_objective_params<M: KdMethod>(default: Objective, objective_of: impl Fn(&M) -> Objective) {
    let name = M::NAME;
    for shared in [objectives::objective_param(""), objectives::BETA, objectives::ALPHA] {
        let declared = M::PARAMS.iter().find(|p| p.name == shared.name);
        let same = declared.is_some_and(|p| p.help == shared.help && (p.name.as_str() == "objective" || p.default == shared.default));
        assert!(same, "KD method `{name}` must declare the shared `{}` parameter: build its PARAMS with objective_params!", shared.name);
    }
    let create = |params: &[(&str, &str)]| instance::<M>(params).unwrap_or_else(|e| panic!("KD method `{name}` refused {params:?}: {e}"));
    let defaulted = create(&[]);
    assert_eq!(objective_of(&defaulted), default, "the default objective of KD method `{name}`");
    assert!(defaulted.data_policy(0.3).uses_teacher, "KD method `{name}` compares the student with the teacher but asks for no teacher logits");
    let overrides: [(&[(&str, &str)], Objective); 3] = [
        (&[("objective", "tvd")], Objective::Tvd),
        (&[("objective", "jsd"), ("beta", "0.5")], Objective::Jsd(0.5)),
        (&[("objective", "srkl"), ("alpha", "0.3")], Objective::Srkl(0.3)),
    ];
    for (params, want) in overrides {
        assert_eq!(objective_of(&create(params)), want, "KD method `{name}` given {params:?}");
    }
    let refused = instance::<M>(&[("objective", "nope")]).err();
    assert!(refused.is_some_and(|e| e.contains("unknown objective `nope`")), "KD method `{name}` accepted the objective `nope`");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Forwards the shared objective parameters, reverse KL unless configured.
    struct Forwarding {
        objective: Objective,
    }

    impl KdMethod for Forwarding {
        const NAME: &'static str = "forwarding";
        const DESCRIPTION: &'static str = "a test method";
        const PARAMS: &'static [ParamSpec] = crate::objective_params!("rkl", REPLAY_BUFFER);
        fn new(params: ParamList<'_>) -> Result<Self, String> {
            Ok(Forwarding { objective: Objective::from_params(params)? })
        }
        fn data_policy(&self, _progress: f64) -> DataPolicy {
            DataPolicy::GROUND_TRUTH
        }
        fn loss_and_grad(&mut self, batch: &KdBatch<'_>, grad: &mut [f32]) -> Result<KdLoss, String> {
            Ok(self.objective.loss_and_grad(batch, grad))
        }
    }

    /// Declares a `beta` of its own, with another default.
    struct OwnBeta(Forwarding);

    impl KdMethod for OwnBeta {
        const NAME: &'static str = "own_beta";
        const DESCRIPTION: &'static str = "a test method";
        const PARAMS: &'static [ParamSpec] =
            &[objectives::objective_param("jsd"), ParamSpec::new("beta", "0.5", "student weight in jsd's mixture"), objectives::ALPHA];
        fn new(params: ParamList<'_>) -> Result<Self, String> {
            Forwarding::new(params).map(OwnBeta)
        }
        fn data_policy(&self, progress: f64) -> DataPolicy {
            self.0.data_policy(progress)
        }
        fn loss_and_grad(&mut self, batch: &KdBatch<'_>, grad: &mut [f32]) -> Result<KdLoss, String> {
            self.0.loss_and_grad(batch, grad)
        }
    }

    #[test]
    fn objective_params_puts_the_shared_specs_first() {
        let names: Vec<&str> = Forwarding::PARAMS.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["objective", "beta", "alpha", "replay_buffer"]);
        let defaults: Vec<&str> = Forwarding::PARAMS.iter().map(|p| p.default.as_str()).collect();
        assert_eq!(defaults, ["rkl", "0.9", "0.1", "1000"]);
    }

    #[test]
    fn the_objective_check_passes_a_method_that_forwards_its_parameters() {
        assert_objective_params::<Forwarding>(Objective::Rkl, |m| m.objective);
    }

    #[test]
    #[should_panic(expected = "the default objective of KD method `forwarding`")]
    fn the_objective_check_fails_on_another_default() {
        assert_objective_params::<Forwarding>(Objective::Fkl, |m| m.objective);
    }

    #[test]
    #[should_panic(expected = "KD method `own_beta` must declare the shared `beta` parameter")]
    fn the_objective_check_fails_on_a_default_of_its_own() {
        assert_objective_params::<OwnBeta>(Objective::Jsd(0.5), |m| m.0.objective);
    }
}
