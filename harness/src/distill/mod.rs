//! The distillation loop (SPEC §6, §8): one student trained from one teacher by one KD
//! method plugin.
//!
//! Each step asks the method's [`DataPolicy`] where the sequences come from — the ground
//! truth, the teacher's cached samples (SeqKD), or the student's own samples, fresh or
//! from a replay buffer, optionally mixed with the teacher (on-policy methods) — runs the
//! student (with gradients) and the teacher (without) over the same tokens, hands both
//! logits to the plugin, and back-propagates the gradient it returns with the surrogate
//! `Σ student_logits · G`, `G` constant. The logits are lent to the plugin as slices of
//! candle's own buffers and the gradient is written into ours: nothing crosses the ABI by
//! copy.

use std::collections::VecDeque;
use std::path::Path;

use abi_stable::std_types::{RSlice, RSliceMut};
use kdharness_plugin_api::defense::{DefenseInstance, DefenseTarget, PackedSeqs};
use kdharness_plugin_api::kd::{DataPolicy, KdBatch, KdInstance};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

mod inference;

pub use inference::{CandleSamples, Inference, Samples};
use inference::Forwards;

use crate::model::generate::{Decoding, GenerateConfig};
use crate::model::{Model, ModelError};
use crate::train::{Example, Passes, Targets, TrainConfig, batch_rows};

/// Distillation settings: the optimiser's, plus what KD adds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DistillConfig {
    /// Epochs, learning rate, batch size, schedule, clipping.
    #[serde(flatten)]
    pub train: TrainConfig,
    /// Weight of the KD loss; the rest, `1 − kd_ratio`, goes to cross-entropy on the
    /// ground truth of the step's examples (Hinton's hard-label term): on the step's own
    /// rows when it trains on the ground truth, in a second pass when it trains on student
    /// or teacher samples (never cross-entropy on the student's own samples: that would
    /// be self-training, not supervision).
    pub kd_ratio: f64,
    /// Longest sampled response (teacher or student samples).
    pub max_new_tokens: usize,
    /// Sampling temperature (1 = the model's distribution, as the paper).
    pub temperature: f64,
}

impl Default for DistillConfig {
    fn default() -> Self {
        DistillConfig { train: TrainConfig::default(), kd_ratio: 1.0, max_new_tokens: 64, temperature: 1.0 }
    }
}

/// What can stop a distillation.
#[derive(Debug, thiserror::Error)]
pub enum DistillError {
    /// The student, the teacher or their files.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The KD plugin returned an error (or panicked, or a non-finite gradient).
    #[error("KD method `{method}`{library}: {message} (the last good checkpoint is kept)")]
    Plugin {
        /// The method.
        method: String,
        /// ` (plugin PATH)`, once known.
        library: String,
        /// Its message.
        message: String,
    },
    /// A non-finite loss: the last good checkpoint is kept.
    #[error("KD method `{method}`{library}: the loss became {loss} at step {step}; try a lower learning rate (the last good checkpoint is kept)")]
    NonFinite {
        /// The method.
        method: String,
        /// ` (plugin PATH)`, once known.
        library: String,
        /// The loss.
        loss: f64,
        /// 1-based step.
        step: usize,
    },
    /// Bad inputs.
    #[error("{0}")]
    Input(String),
}

impl From<candle_core::Error> for DistillError {
    fn from(e: candle_core::Error) -> Self {
        DistillError::Model(ModelError::Candle(e))
    }
}

/// One epoch of a distillation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DistillEpoch {
    /// 1-based epoch.
    pub epoch: usize,
    /// Mean of the method's loss over the epoch's steps.
    pub train_loss: f64,
    /// The method's objective on the held-out public data after the epoch.
    pub val_loss: f64,
    /// Steps trained on student samples (fresh or replayed).
    pub on_policy_steps: usize,
    /// Steps in the epoch.
    pub steps: usize,
}

/// Where a distillation's training time went, in seconds summed over its steps
/// (validation excluded).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct StepTiming {
    /// Generating student samples (on-policy steps; SeqKD's teacher samples are made once,
    /// before training, and not counted).
    pub sampling: f64,
    /// The student's forward passes.
    pub forward: f64,
    /// The teacher's forward passes.
    #[serde(default)]
    pub teacher: f64,
    /// The KD plugin's `loss_and_grad`, including access to the logits.
    pub plugin: f64,
    /// Back-propagation of the surrogate.
    pub backward: f64,
    /// The AdamW update.
    pub optimizer: f64,
    /// Trained positions (tokens whose logits entered the loss).
    pub tokens: usize,
}

impl StepTiming {
    /// The time of the steps in `self` that are not in `earlier` (a run of fewer steps of
    /// the same work), field by field.
    pub fn minus(&self, earlier: &StepTiming) -> StepTiming {
        StepTiming {
            sampling: self.sampling - earlier.sampling,
            forward: self.forward - earlier.forward,
            teacher: self.teacher - earlier.teacher,
            plugin: self.plugin - earlier.plugin,
            backward: self.backward - earlier.backward,
            optimizer: self.optimizer - earlier.optimizer,
            tokens: self.tokens - earlier.tokens,
        }
    }

    /// Total seconds.
    pub fn total(&self) -> f64 {
        self.sampling + self.forward + self.teacher + self.plugin + self.backward + self.optimizer
    }
}

/// The record of one student's distillation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DistillLog {
    /// The KD method.
    pub method: String,
    /// Where the training time went.
    pub timing: StepTiming,
    /// The objective on the held-out public data before training.
    pub initial_val_loss: f64,
    /// Per-epoch results.
    pub epochs: Vec<DistillEpoch>,
    /// The student's token-weighted response cross-entropy on the held-out public data
    /// after training (whatever the method's objective): its utility beside its leakage.
    #[serde(default)]
    pub heldout_ce: Option<f64>,
}

impl DistillLog {
    /// Optimiser steps taken (the training budget).
    pub fn steps(&self) -> usize {
        self.epochs.iter().map(|e| e.steps).sum()
    }

    /// The objective on the held-out data after the last epoch.
    pub fn final_val_loss(&self) -> f64 {
        self.epochs.last().map_or(self.initial_val_loss, |e| e.val_loss)
    }
}

/// One step's training sequences.
#[derive(Debug, Clone)]
pub struct StepData {
    /// Sequences (prompt, then the response to learn).
    pub examples: Vec<Example>,
    /// Per sequence, the log-probability of each response token under the distribution
    /// that sampled it (on-policy steps only).
    pub behaviour: Option<Vec<Vec<f32>>>,
    /// Whether the responses were sampled by the student.
    pub on_policy: bool,
}

/// A student sample kept for reuse.
#[derive(Debug, Clone)]
struct Replayed {
    example: Example,
    behaviour: Vec<f32>,
}

/// Where each step's sequences come from, with the state that needs: the teacher's
/// cached samples and the replay buffer.
pub struct Sampler {
    rng: ChaCha8Rng,
    replay: VecDeque<Replayed>,
    teacher_samples: Option<Vec<Example>>,
    sampling: GenerateConfig,
}

impl Sampler {
    /// A sampler drawing from `seed`; `teacher_samples` are SeqKD's sequences, one per
    /// training example, in order (see [`teacher_samples`]).
    pub fn new(seed: u64, cfg: &DistillConfig, eos: Option<u32>, teacher_samples: Option<Vec<Example>>) -> Self {
        let sampling = GenerateConfig {
            max_new_tokens: cfg.max_new_tokens,
            decoding: Decoding::Sample { temperature: cfg.temperature },
            eos,
            use_cache: true,
        };
        Sampler { rng: ChaCha8Rng::seed_from_u64(seed ^ 0x5a4d_504c), replay: VecDeque::new(), teacher_samples, sampling }
    }

    /// The sequences of one step over training examples `indices` of `train`.
    pub fn step_data(
        &mut self,
        policy: &DataPolicy,
        train: &[Example],
        indices: &[usize],
        source: &mut dyn Samples,
    ) -> Result<StepData, DistillError> {
        let on_policy = policy.student_fraction > 0.0 && self.rng.r#gen::<f64>() < policy.student_fraction;
        if on_policy {
            let capacity = policy.replay_buffer as usize;
            if capacity > 0 && self.replay.len() >= indices.len() && self.rng.r#gen::<bool>() {
                let picked: Vec<Replayed> =
                    (0..indices.len()).map(|_| self.replay[self.rng.gen_range(0..self.replay.len())].clone()).collect();
                return Ok(StepData {
                    behaviour: Some(picked.iter().map(|r| r.behaviour.clone()).collect()),
                    examples: picked.into_iter().map(|r| r.example).collect(),
                    on_policy: true,
                });
            }
            let prompts: Vec<Vec<u32>> = indices.iter().map(|&i| train[i].ids[..train[i].prompt_len].to_vec()).collect();
            let mix = (policy.teacher_mix > 0.0).then_some(policy.teacher_mix);
            let generated = source.student(&prompts, mix, &self.sampling, &mut self.rng)?;
            let mut data = StepData { examples: Vec::new(), behaviour: Some(Vec::new()), on_policy: true };
            for (prompt, g) in prompts.into_iter().zip(generated) {
                let example = Example { prompt_len: prompt.len(), ids: [prompt, g.tokens].concat() };
                if capacity > 0 {
                    if self.replay.len() == capacity {
                        self.replay.pop_front();
                    }
                    self.replay.push_back(Replayed { example: example.clone(), behaviour: g.logprobs.clone() });
                }
                data.examples.push(example);
                data.behaviour.as_mut().expect("set above").push(g.logprobs);
            }
            return Ok(data);
        }
        if policy.teacher_samples {
            let samples = self.teacher_samples.as_ref().ok_or_else(|| {
                DistillError::Input("the method trains on teacher samples, but none were generated (no teacher?)".into())
            })?;
            return Ok(StepData { examples: indices.iter().map(|&i| samples[i].clone()).collect(), behaviour: None, on_policy: false });
        }
        Ok(StepData { examples: indices.iter().map(|&i| train[i].clone()).collect(), behaviour: None, on_policy: false })
    }
}

/// The teacher-sample cache: the samples with the SHA-256 of their JSON, so that a changed
/// file is sampled again rather than trusted.
#[derive(serde::Serialize, serde::Deserialize)]
struct SampleCache {
    sha256: String,
    samples: Vec<Example>,
}

/// SeqKD's training data: one response sampled by the teacher (T = `cfg.temperature`) for
/// each prompt of `train`, in order. Cached as JSON at `cache` when given: a rerun with
/// the same file, intact, reuses it instead of sampling again.
pub fn teacher_samples(
    source: &mut dyn Samples,
    eos: Option<u32>,
    train: &[Example],
    cfg: &DistillConfig,
    seed: u64,
    cache: Option<&Path>,
) -> Result<Vec<Example>, DistillError> {
    if let Some(path) = cache
        && let Ok(text) = std::fs::read_to_string(path)
        && let Ok(SampleCache { sha256, samples: cached }) = serde_json::from_str::<SampleCache>(&text)
        && sha256 == crate::files::sha256_bytes(serde_json::to_string(&cached).expect("examples serialise").as_bytes())
        && cached.len() == train.len()
        && cached.iter().zip(train).all(|(c, t)| c.ids[..c.prompt_len] == t.ids[..t.prompt_len])
    {
        return Ok(cached);
    }
    let sampling = GenerateConfig {
        max_new_tokens: cfg.max_new_tokens,
        decoding: Decoding::Sample { temperature: cfg.temperature },
        eos,
        use_cache: true,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x7365_716b);
    let mut out = Vec::with_capacity(train.len());
    let bar = crate::status::progress(train.len(), "teacher samples (SeqKD)", "prompts");
    for chunk in train.chunks(cfg.train.batch_size.max(1)) {
        let prompts: Vec<Vec<u32>> = chunk.iter().map(|e| e.ids[..e.prompt_len].to_vec()).collect();
        let generated = source.teacher(&prompts, &sampling, &mut rng)?;
        for (prompt, g) in prompts.into_iter().zip(generated) {
            out.push(Example { prompt_len: prompt.len(), ids: [prompt, g.tokens].concat() });
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish();
    if let Some(path) = cache {
        let sha256 = crate::files::sha256_bytes(serde_json::to_string(&out).expect("examples serialise").as_bytes());
        let text = serde_json::to_string(&SampleCache { sha256, samples: out.clone() }).expect("examples serialise");
        crate::files::write_atomic(path, text.as_bytes())
            .map_err(|e| DistillError::Input(format!("cannot write {}: {e}", path.display())))?;
    }
    Ok(out)
}

impl DistillError {
    /// Names the plugin library of a plugin's failure.
    pub fn in_library(mut self, path: &Path) -> Self {
        if let DistillError::Plugin { library, .. } | DistillError::NonFinite { library, .. } = &mut self {
            *library = format!(" (plugin {})", path.display());
        }
        self
    }
}

/// The inputs of one KD step, prepared for the plugin.
struct Prepared {
    /// Student logits at the trained positions, `[n, vocab]`.
    student: Vec<f32>,
    /// Teacher logits at the same positions, when the method uses a teacher.
    teacher: Option<Vec<f32>>,
    vocab: usize,
    targets: Targets,
    sequence: Vec<u32>,
    behaviour: Vec<f32>,
}

/// The plugin's inputs for `data`, given the student's (and teacher's) logits at the
/// trained positions `targets`.
fn prepared(data: &StepData, targets: Targets, student: Vec<f32>, teacher: Option<Vec<f32>>, vocab: usize) -> Prepared {
    let mut sequence = Vec::with_capacity(targets.count());
    let mut behaviour = Vec::new();
    for (r, ex) in data.examples.iter().enumerate() {
        let positions = ex.trained_positions();
        sequence.extend(std::iter::repeat_n(r as u32, positions.len()));
        if let Some(b) = &data.behaviour {
            // Response token k is predicted at position prompt_len − 1 + k.
            let first = ex.prompt_len.max(1) - 1;
            for p in positions {
                behaviour.push(b[r].get(p - first).copied().unwrap_or(0.0));
            }
        }
    }
    Prepared { student, teacher, vocab, targets, sequence, behaviour }
}

/// Calls the plugin on prepared logits; returns its loss and the gradient buffer.
fn call_method(
    method: &mut KdInstance,
    name: &str,
    p: &Prepared,
    on_policy: bool,
    progress: f64,
) -> Result<(f64, Vec<f32>), DistillError> {
    let (n, vocab) = (p.targets.count(), p.vocab);
    let mask = vec![1f32; n];
    let mut grad = vec![0f32; n * vocab];
    let batch = KdBatch {
        positions: n as u32,
        vocab: vocab as u32,
        student_logits: RSlice::from_slice(&p.student),
        teacher_logits: RSlice::from_slice(p.teacher.as_deref().unwrap_or(&[])),
        targets: RSlice::from_slice(&p.targets.ids),
        mask: RSlice::from_slice(&mask),
        sequence: RSlice::from_slice(&p.sequence),
        behaviour_logprob: RSlice::from_slice(&p.behaviour),
        on_policy,
        progress,
    };
    let result = method.loss_and_grad(&batch, RSliceMut::from_mut_slice(&mut grad)).into_result();
    let out = result.map_err(|e| DistillError::Plugin { method: name.into(), library: String::new(), message: e.into() })?;
    if grad.iter().any(|g| !g.is_finite()) {
        return Err(DistillError::Plugin { method: name.into(), library: String::new(), message: "returned a non-finite gradient".into() });
    }
    Ok((out.loss, grad))
}

/// The teacher, when the method uses one: it must exist and share the student's vocabulary.
fn teacher_for<'t>(uses_teacher: bool, teacher: Option<&'t Model>, student: &Model, name: &str) -> Result<Option<&'t Model>, DistillError> {
    if !uses_teacher {
        return Ok(None);
    }
    let t = teacher.ok_or_else(|| DistillError::Input(format!("KD method `{name}` needs a teacher")))?;
    if t.config.vocab_size != student.config.vocab_size {
        return Err(DistillError::Input(format!(
            "teacher and student vocabularies differ ({} vs {} logits); distillation compares distributions token by token",
            t.config.vocab_size, student.config.vocab_size
        )));
    }
    Ok(Some(t))
}

/// One student's distillation in progress: what every step reads and updates.
struct Run<'a> {
    student: &'a mut Model,
    passes: Passes,
    forwards: Forwards<'a>,
    /// Whether the method reads the teacher's logits (validation follows the first policy).
    uses_teacher: bool,
    method: &'a mut KdInstance,
    name: &'a str,
    cfg: &'a DistillConfig,
    sampler: Sampler,
    timing: StepTiming,
    /// A defense on the teacher's logits, applied before the method reads them.
    defense: Option<&'a mut StudentDefense>,
}

impl Run<'_> {
    /// One optimiser step on training examples `indices` (step `step` of `total`): the KD
    /// loss and whether the step trained on student samples, or `None` when none of the
    /// step's sequences had a token to learn.
    fn step(&mut self, train: &[Example], indices: &[usize], progress: f64, step: usize, total: usize) -> Result<Option<(f64, bool)>, DistillError> {
        let (name, cfg, clock) = (self.name, self.cfg, std::time::Instant::now);
        let policy = self.method.data_policy(progress).into_result().map_err(|e| DistillError::Plugin { method: name.into(), library: String::new(), message: e.into() })?;
        let t0 = clock();
        if policy.student_fraction > 0.0 && self.forwards.samples_read_the_model() {
            self.passes.sync(self.student)?;
        }
        let mut source = self.forwards.samples(self.student, &self.passes);
        let data = self.sampler.step_data(&policy, train, indices, source.as_mut())?;
        drop(source);
        self.timing.sampling += t0.elapsed().as_secs_f64();
        let data = StepData { examples: data.examples.into_iter().filter(|e| !e.trained_positions().is_empty()).collect(), ..data };
        if data.examples.is_empty() {
            return Ok(None);
        }
        let (p, forward, teacher) = self.prepare(&data, policy.uses_teacher)?;
        let t0 = clock();
        let (loss, mut grad) = call_method(self.method, name, &p, data.on_policy, progress)?;
        self.timing.forward += forward;
        self.timing.teacher += teacher;
        self.timing.plugin += t0.elapsed().as_secs_f64();
        self.timing.tokens += p.targets.count();
        if !loss.is_finite() {
            return Err(DistillError::NonFinite { method: name.into(), library: String::new(), loss, step: step + 1 });
        }
        // (1 − kd_ratio)·CE on the ground truth of the step's examples: on the same rows
        // when the step trains on them, else (student or teacher samples) in a second
        // pass over the ground truth, added to the first.
        let ground_truth = !data.on_policy && !policy.teacher_samples;
        if cfg.kd_ratio < 1.0 {
            grad.iter_mut().for_each(|g| *g = (*g as f64 * cfg.kd_ratio) as f32);
            if ground_truth {
                let hard = hard_label_gradient(p.student.clone(), p.vocab, &p.targets.ids, cfg.kd_ratio);
                grad.iter_mut().zip(hard).for_each(|(g, h)| *g += h);
            }
        }
        let t0 = clock();
        self.passes.backward_logits(self.student, &grad)?;
        if !ground_truth && cfg.kd_ratio < 1.0 {
            self.ground_truth_cross_entropy(train, indices)?;
        }
        let t1 = clock();
        self.passes.step(self.student, cfg.train.weight_decay, cfg.train.lr_at(step, total), cfg.train.grad_clip)?;
        self.timing.backward += (t1 - t0).as_secs_f64();
        self.timing.optimizer += t1.elapsed().as_secs_f64();
        Ok(Some((loss, data.on_policy)))
    }

    /// Back-propagates `(1 − kd_ratio)·CE` of the student on the ground-truth examples
    /// `indices` of `train` (the hard-label term of steps that train on samples), adding
    /// to the step's gradients.
    fn ground_truth_cross_entropy(&mut self, train: &[Example], indices: &[usize]) -> Result<(), DistillError> {
        let batch: Vec<&Example> = indices.iter().map(|&i| &train[i]).filter(|e| !e.trained_positions().is_empty()).collect();
        let (rows, targets) = batch_rows(&batch);
        if targets.count() == 0 {
            return Ok(());
        }
        let logits = self.passes.logits(self.student, &rows, &targets.rows)?;
        let grad = hard_label_gradient(logits, self.student.config.vocab_size, &targets.ids, self.cfg.kd_ratio);
        self.passes.backward_logits(self.student, &grad)?;
        Ok(())
    }

    /// The plugin's inputs for `data`: the student's logits at the trained positions (and
    /// the teacher's, `with_teacher`), with the seconds each forward pass took.
    fn prepare(&mut self, data: &StepData, with_teacher: bool) -> Result<(Prepared, f64, f64), DistillError> {
        let refs: Vec<&Example> = data.examples.iter().collect();
        let (rows, targets) = batch_rows(&refs);
        let t0 = std::time::Instant::now();
        let student = self.passes.logits(self.student, &rows, &targets.rows)?;
        let t1 = std::time::Instant::now();
        let mut teacher = if with_teacher { Some(self.forwards.teacher_logits(&rows, &targets.rows)?) } else { None };
        if let (Some(logits), Some(d)) = (teacher.as_mut(), self.defense.as_deref_mut())
            && d.acts_on.contains(DefenseTarget::TEACHER_LOGITS)
        {
            let vocab = self.student.config.vocab_size as u32;
            d.instance.teacher_logits(RSliceMut::from_mut_slice(logits), vocab).into_result().map_err(|e| DistillError::Input(format!("defense `{}`: {e}", d.name)))?;
        }
        let (forward, teacher_secs) = ((t1 - t0).as_secs_f64(), t1.elapsed().as_secs_f64());
        Ok((prepared(data, targets, student, teacher, self.student.config.vocab_size), forward, teacher_secs))
    }

    /// The method's objective on ground-truth `val` examples (token-weighted), no update.
    fn validate(&mut self, val: &[Example], batch_size: usize) -> Result<f64, DistillError> {
        let (mut total, mut count) = (0.0, 0usize);
        for chunk in val.chunks(batch_size.max(1)) {
            let data = StepData {
                examples: chunk.iter().filter(|e| !e.trained_positions().is_empty()).cloned().collect(),
                behaviour: None,
                on_policy: false,
            };
            if data.examples.is_empty() {
                continue;
            }
            let (p, _, _) = self.prepare(&data, self.uses_teacher)?;
            let (loss, _) = call_method(self.method, self.name, &p, false, 1.0)?;
            total += loss * p.targets.count() as f64;
            count += p.targets.count();
        }
        Ok(if count == 0 { f64::NAN } else { total / count as f64 })
    }
}

/// `(1 − kd_ratio) · ∂CE/∂logits` of `logits` (`[n, vocab]`, overwritten) against
/// `targets`, CE being the mean over the `n` positions: the hard-label term of the KD loss
/// (SPEC §6: the optional cross-entropy mix).
fn hard_label_gradient(mut logits: Vec<f32>, vocab: usize, targets: &[u32], kd_ratio: f64) -> Vec<f32> {
    let scale = (1.0 - kd_ratio) / targets.len() as f64;
    crate::engine::head::cross_entropy(&mut logits, vocab, targets, Some(scale as f32));
    logits
}

/// Distils `student` in place with `method` (named `name`) on the public examples
/// `train`, reporting the method's objective on `val` before and after every epoch.
/// `teacher` is required unless the method's policy says it uses none.
#[allow(clippy::too_many_arguments)]
pub fn distill(
    student: &mut Model,
    teacher: Option<&Model>,
    method: &mut KdInstance,
    name: &str,
    train: &[Example],
    val: &[Example],
    cfg: &DistillConfig,
    seed: u64,
    inference: Inference,
    teacher_sample_cache: Option<&Path>,
    checkpoint: Option<&Path>,
    mut defense: Option<&mut StudentDefense>,
) -> Result<DistillLog, DistillError> {
    let plugin = |e: abi_stable::std_types::RString| DistillError::Plugin { method: name.into(), library: String::new(), message: e.into() };
    let train: Vec<Example> = train.iter().filter(|e| !e.trained_positions().is_empty()).cloned().collect();
    if train.is_empty() {
        return Err(DistillError::Input("no public example has a token to learn".into()));
    }
    let first_policy = method.data_policy(0.0).into_result().map_err(plugin)?;
    let teacher = teacher_for(first_policy.uses_teacher, teacher, student, name)?;
    let mut passes = Passes::with_precision(student, cfg.train.precision);
    passes.init_optimizer(student, cfg.train.weight_decay);
    let mut forwards = Forwards::new(inference, student, teacher)?;
    let mut samples = match (first_policy.teacher_samples, teacher) {
        (true, Some(t)) => {
            let mut source = forwards.samples(student, &passes);
            Some(teacher_samples(source.as_mut(), t.config.eos_token_id, &train, cfg, seed, teacher_sample_cache)?)
        }
        _ => None,
    };
    if let Some(d) = defense.as_deref_mut().filter(|d| d.acts_on.contains(DefenseTarget::TEACHER_SAMPLES)) {
        match samples.as_mut() {
            Some(samples) => filter_samples(d, samples, &train)?,
            None => crate::status::warn(format!("defense `{}` filters teacher samples, but KD method `{name}` trains on none: it changes nothing", d.name)),
        }
    }
    let batch_size = cfg.train.batch_size.max(1);
    let steps_per_epoch = train.len().div_ceil(batch_size);
    let total = steps_per_epoch * cfg.train.epochs;
    let mut run = Run {
        sampler: Sampler::new(seed, cfg, student.config.eos_token_id, samples),
        passes,
        forwards,
        uses_teacher: teacher.is_some(),
        student,
        method,
        name,
        cfg,
        timing: StepTiming::default(),
        defense,
    };
    let mut order_rng = ChaCha8Rng::seed_from_u64(seed);
    let initial_val_loss = run.validate(val, batch_size)?;
    crate::status::detail(format!("distill {name}: objective on held-out public data before training: {initial_val_loss:.4}"));
    let bar = crate::status::progress(total, &format!("distilling ({name})"), "steps");
    let mut epochs = Vec::new();
    let mut step = 0;
    for epoch in 1..=cfg.train.epochs {
        let mut order: Vec<usize> = (0..train.len()).collect();
        order.shuffle(&mut order_rng);
        let (mut loss_sum, mut on_policy_steps) = (0.0, 0);
        for indices in order.chunks(batch_size) {
            let trained = run.step(&train, indices, step as f64 / total as f64, step, total).inspect_err(|_| bar.abandon())?;
            step += 1;
            if let Some((loss, on_policy)) = trained {
                on_policy_steps += on_policy as usize;
                loss_sum += loss;
                bar.inc(1);
            }
        }
        let val_loss = run.validate(val, batch_size)?;
        run.method.on_epoch_end(val_loss).into_result().map_err(plugin)?;
        crate::status::detail(format!(
            "distill {name}: epoch {epoch}: train loss {:.4}, held-out objective {val_loss:.4} (start {initial_val_loss:.4})",
            loss_sum / steps_per_epoch as f64
        ));
        epochs.push(DistillEpoch { epoch, train_loss: loss_sum / steps_per_epoch as f64, val_loss, on_policy_steps, steps: steps_per_epoch });
        run.passes.sync(run.student)?;
        if let Some(dir) = checkpoint {
            run.student.save(dir)?;
        }
    }
    let log = DistillLog { method: name.into(), timing: run.timing, initial_val_loss, epochs, heldout_ce: None };
    bar.finish();
    let end = log.final_val_loss();
    crate::status::info(format!(
        "distill {name}: held-out objective {initial_val_loss:.4} -> {end:.4} ({})",
        if end < initial_val_loss { "lower" } else { "NOT lower" }
    ));
    Ok(log)
}

/// A defense applied while one student is distilled (SPEC §18): on the teacher's logits
/// before every KD loss reads them, or on the teacher's samples before training.
pub struct StudentDefense {
    /// Its name, for messages.
    pub name: String,
    /// The plugin's instance for this student.
    pub instance: DefenseInstance,
    /// Where it acts.
    pub acts_on: DefenseTarget,
    /// The private records (prompt and response tokens) a sample defense checks against.
    pub private: Vec<Vec<u32>>,
    /// Set by a sample defense: the teacher samples it dropped, and of how many.
    pub removed: Option<(usize, usize)>,
}

/// Drops the teacher samples `d` does not keep, each replaced by the ground truth of its
/// prompt (`train[i]`, public data), and records how many.
pub fn filter_samples(d: &mut StudentDefense, samples: &mut [Example], train: &[Example]) -> Result<(), DistillError> {
    let responses = PackedSeqs::new(samples.iter().map(|e| &e.ids[e.prompt_len..]));
    let private = PackedSeqs::new(d.private.iter().map(Vec::as_slice));
    let keep = d.instance.keep_samples(responses.view(), private.view()).into_result().map_err(|e| DistillError::Input(format!("defense `{}`: {e}", d.name)))?;
    let mut removed = 0;
    for (i, kept) in keep.iter().enumerate() {
        if !kept {
            samples[i] = train[i].clone();
            removed += 1;
        }
    }
    crate::status::info(format!("defense {}: dropped {removed} of {} teacher samples (trained on their ground truth instead)", d.name, samples.len()));
    d.removed = Some((removed, samples.len()));
    Ok(())
}

/// One student to distil in a stage: a KD method (with parameter overrides) and the
/// student's initial weights, named by its size.
pub struct StudentPlan {
    /// The KD method's plugin name.
    pub method: String,
    /// Parameter overrides (the rest take the plugin's defaults).
    pub params: Vec<(String, String)>,
    /// The student size's name (e.g. `small`), part of the output directory's name.
    pub student: String,
    /// The student's initial weights (scratch, or blocks of a pretrained model).
    pub init: Model,
}

impl StudentPlan {
    /// `METHOD-STUDENT`, the student's name in outputs.
    pub fn name(&self) -> String {
        crate::config::student_name(&self.method, &self.student)
    }
}

/// The distill stage: one student per plan from one teacher on the public examples, each
/// saved to `out/NAME/` by [`train_student`]. SeqKD's teacher samples are made once and
/// shared (`out/teacher_samples.json`).
#[allow(clippy::too_many_arguments)]
pub fn stage(
    registry: &crate::plugins::Registry,
    teacher: &Model,
    plans: &[StudentPlan],
    train: &[Example],
    val: &[Example],
    cfg: &DistillConfig,
    seed: u64,
    inference: Inference,
    out: &Path,
) -> Result<Vec<DistillLog>, DistillError> {
    let samples = out.join("teacher_samples.json");
    plans
        .iter()
        .map(|plan| train_student(registry, teacher, plan, train, val, cfg, seed, inference, &samples, &out.join(plan.name()), None))
        .collect()
}

/// Distils one student: creates its KD method from the registry, trains a copy of the
/// plan's initial weights, and saves the student (Hugging Face layout) with its
/// `distill_log.json` into `dir`. Its seed is derived from `seed` and the student's name,
/// so results do not depend on the order students are made in.
#[allow(clippy::too_many_arguments)]
pub fn train_student(
    registry: &crate::plugins::Registry,
    teacher: &Model,
    plan: &StudentPlan,
    train: &[Example],
    val: &[Example],
    cfg: &DistillConfig,
    seed: u64,
    inference: Inference,
    teacher_samples: &Path,
    dir: &Path,
    defense: Option<&mut StudentDefense>,
) -> Result<DistillLog, DistillError> {
    let name = plan.name();
    let loaded = registry.kd_method(&plan.method).ok_or_else(|| {
        DistillError::Input(format!(
            "no KD method `{}` is loaded{} (loaded: {})",
            plan.method,
            crate::suggest::did_you_mean(&plan.method, registry.kd_names()),
            registry.kd_names().collect::<Vec<_>>().join(", ")
        ))
    })?;
    let mut method = loaded.create(&plan.params).map_err(DistillError::Input)?;
    let mut student = plan.init.clone_weights()?;
    let student_seed = crate::rng::derive(seed, &name);
    let mut log = distill(&mut student, Some(teacher), &mut method, &plan.method, train, val, cfg, student_seed, inference, Some(teacher_samples), Some(dir), defense)
        .map_err(|e| e.in_library(&loaded.library))?;
    log.heldout_ce = Some(crate::train::evaluate(&student, val, cfg.train.batch_size.max(1))?);
    student.save(dir)?;
    let text = serde_json::to_string_pretty(&log).expect("logs serialise");
    crate::files::write_atomic(&dir.join("distill_log.json"), text.as_bytes())
        .map_err(|e| DistillError::Input(format!("cannot write {}: {e}", dir.display())))?;
    Ok(log)
}

