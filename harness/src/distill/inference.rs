//! Distillation's forward-only passes (SPEC §6): the teacher's logits, SeqKD's teacher
//! samples and on-policy student samples.
//!
//! With ONNX Runtime ([`Inference::Ort`], what runs do), the teacher's and the student's
//! graphs are exported once, in memory and without weights, when the distillation starts
//! ([`crate::export::graph_without_weights`]). The teacher's session, opened once with its
//! weights, serves every teacher pass; each round of student sampling opens the student's
//! graph with the current weights handed over in memory (nothing is written to disk) and
//! decodes with the KV cache. Without a runtime ([`Inference::Candle`]) the engine computes the teacher's logits and candle
//! decodes: the same distributions, used by tests of the training loop alone.

use std::path::Path;

use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::DistillError;
use crate::model::{Model, ModelError};
use crate::model::generate::{CandleDecoder, GenerateConfig, Generated, OrtDecoder, generate_mixed};
use crate::runtime::{CausalLm, LmBatch, PaddingSide, Runtime, SessionOptions};
use crate::train::Passes;

/// Where forward-only passes run.
#[derive(Clone, Copy)]
pub enum Inference {
    /// candle: the engine's forward pass for logits, candle's decoder for samples.
    Candle,
    /// ONNX Runtime with these session options.
    Ort(&'static Runtime, SessionOptions),
}

/// Samples for a distillation step: continuations of prompts by the student (optionally
/// mixed with the teacher) or by the teacher.
pub trait Samples {
    /// The student's continuations, each token drawn from `(1 − w)·q + w·p` when
    /// `teacher_mix` is `Some(w)`.
    fn student(&mut self, prompts: &[Vec<u32>], teacher_mix: Option<f64>, cfg: &GenerateConfig, rng: &mut ChaCha8Rng) -> Result<Vec<Generated>, DistillError>;

    /// The teacher's continuations.
    fn teacher(&mut self, prompts: &[Vec<u32>], cfg: &GenerateConfig, rng: &mut ChaCha8Rng) -> Result<Vec<Generated>, DistillError>;
}

/// Samples decoded by candle from models' own weights.
pub struct CandleSamples<'a> {
    /// The student (its weights as they are now).
    pub student: &'a Model,
    /// The teacher, if any.
    pub teacher: Option<&'a Model>,
}

fn no_teacher() -> DistillError {
    DistillError::Input("the method samples from the teacher, but there is none".into())
}

impl Samples for CandleSamples<'_> {
    fn student(&mut self, prompts: &[Vec<u32>], teacher_mix: Option<f64>, cfg: &GenerateConfig, rng: &mut ChaCha8Rng) -> Result<Vec<Generated>, DistillError> {
        let mut student = CandleDecoder::new(self.student, cfg.use_cache);
        let mut teacher = match teacher_mix {
            Some(w) => Some((CandleDecoder::new(self.teacher.ok_or_else(no_teacher)?, cfg.use_cache), w)),
            None => None,
        };
        let mix = teacher.as_mut().map(|(t, w)| (t as &mut dyn crate::model::generate::Decoder, *w));
        Ok(generate_mixed(&mut student, mix, prompts, cfg, rng)?)
    }

    fn teacher(&mut self, prompts: &[Vec<u32>], cfg: &GenerateConfig, rng: &mut ChaCha8Rng) -> Result<Vec<Generated>, DistillError> {
        let teacher = self.teacher.ok_or_else(no_teacher)?;
        Ok(generate_mixed(&mut CandleDecoder::new(teacher, cfg.use_cache), None, prompts, cfg, rng)?)
    }
}

/// The forward-only passes of one distillation.
pub(super) enum Forwards<'a> {
    Candle { teacher: Option<(&'a Model, Passes)> },
    Ort(OrtForwards<'a>),
}

pub(super) struct OrtForwards<'a> {
    runtime: &'static Runtime,
    options: SessionOptions,
    /// The student's encoded graph, without weights.
    student_graph: Vec<u8>,
    teacher: Option<(&'a Model, CausalLm)>,
}

impl<'a> Forwards<'a> {
    /// Sets up the passes: with ONNX Runtime, exports the student's graph and opens the
    /// teacher (when there is one).
    pub fn new(inference: Inference, student: &Model, teacher: Option<&'a Model>) -> Result<Self, DistillError> {
        let Inference::Ort(runtime, options) = inference else {
            return Ok(Forwards::Candle { teacher: teacher.map(|t| (t, Passes::new(t))) });
        };
        let graph = |model: &Model| crate::export::graph_without_weights(model).map_err(|e| DistillError::Input(e.to_string()));
        let student_graph = graph(student)?;
        let teacher = match teacher {
            Some(t) => {
                let weights = t.host_weights()?;
                let lm = CausalLm::open_graph(runtime, &graph(t)?, Path::new("teacher (in memory)"), options, weights).map_err(ModelError::from)?;
                Some((t, lm))
            }
            None => None,
        };
        Ok(Forwards::Ort(OrtForwards { runtime, options, student_graph, teacher }))
    }

    /// The teacher's logits `[n, vocab]` at rows `picked` of right-padded `rows`.
    pub fn teacher_logits(&mut self, rows: &[Vec<u32>], picked: &[usize]) -> Result<Vec<f32>, DistillError> {
        match self {
            Forwards::Candle { teacher } => {
                let (model, passes) = teacher.as_mut().ok_or_else(no_teacher)?;
                Ok(passes.logits(model, rows, picked)?)
            }
            Forwards::Ort(ort) => {
                let (_, lm) = ort.teacher.as_mut().ok_or_else(no_teacher)?;
                let batch = LmBatch::pad(rows.iter().map(Vec::as_slice), PaddingSide::Right, 0);
                // Hundreds of megabytes for a real vocabulary: gathered on all threads.
                let gather = |logits: &[f32], vocab: usize| -> Vec<f32> {
                    let mut out = vec![0f32; picked.len() * vocab];
                    out.par_chunks_mut(vocab.max(1)).zip(picked.par_iter()).for_each(|(o, &r)| o.copy_from_slice(&logits[r * vocab..(r + 1) * vocab]));
                    out
                };
                Ok(lm.forward(&batch, gather).map_err(ModelError::from)?)
            }
        }
    }

    /// Samples from the student whose current weights `passes` holds (`student` is its
    /// model, synced by the caller when decoding in candle) and from the teacher.
    pub fn samples<'s>(&'s mut self, student: &'s Model, passes: &'s Passes) -> Box<dyn Samples + 's> {
        match self {
            Forwards::Candle { teacher } => Box::new(CandleSamples { student, teacher: teacher.as_ref().map(|(t, _)| *t) }),
            Forwards::Ort(ort) => Box::new(OrtSamples { ort, student, passes }),
        }
    }

    /// Whether student sampling reads the model's own weights (which must then be synced).
    pub fn samples_read_the_model(&self) -> bool {
        matches!(self, Forwards::Candle { .. })
    }
}

struct OrtSamples<'s, 'a> {
    ort: &'s mut OrtForwards<'a>,
    student: &'s Model,
    passes: &'s Passes,
}

impl Samples for OrtSamples<'_, '_> {
    fn student(&mut self, prompts: &[Vec<u32>], teacher_mix: Option<f64>, cfg: &GenerateConfig, rng: &mut ChaCha8Rng) -> Result<Vec<Generated>, DistillError> {
        let ort = &mut *self.ort;
        // The current weights, handed to the session in memory.
        let weights = self.passes.weights(self.student)?;
        let label = Path::new("student (in memory)");
        let mut lm = CausalLm::open_graph(ort.runtime, &ort.student_graph, label, ort.options, weights).map_err(ModelError::from)?;
        let mut student = OrtDecoder::new(&mut lm)?;
        match teacher_mix {
            Some(w) => {
                let (_, teacher_lm) = ort.teacher.as_mut().ok_or_else(no_teacher)?;
                let mut teacher = OrtDecoder::new(teacher_lm)?;
                Ok(generate_mixed(&mut student, Some((&mut teacher, w)), prompts, cfg, rng)?)
            }
            None => Ok(generate_mixed(&mut student, None, prompts, cfg, rng)?),
        }
    }

    fn teacher(&mut self, prompts: &[Vec<u32>], cfg: &GenerateConfig, rng: &mut ChaCha8Rng) -> Result<Vec<Generated>, DistillError> {
        let (_, lm) = self.ort.teacher.as_mut().ok_or_else(no_teacher)?;
        Ok(generate_mixed(&mut OrtDecoder::new(lm)?, None, prompts, cfg, rng)?)
    }
}
