//! ONNX export of trained models (SPEC §5.3), written by the harness itself.
//!
//! The graph follows Hugging Face optimum's `text-generation-with-past` conventions, so a
//! harness export and an optimum export are interchangeable for scoring and generation:
//! inputs `input_ids`, `attention_mask`, `position_ids`, `past_key_values.{i}.key|value`;
//! outputs `logits`, `present.{i}.key|value`. Every weight is an initializer named exactly
//! as in the Hugging Face checkpoint (HF layout, untransposed), so per-block perturbation
//! finds a block's weights by name prefix.
//!
//! This module declares the graph's inputs and outputs; each architecture emits the part
//! in between from its own file in [`crate::model`] ([`crate::model::Arch`]'s family),
//! out of the shared layers in `model::emit` (written with [`crate::onnx`]).

use std::path::Path;

use prost::Message;

use crate::model::{Model, OnnxBuilder};
use crate::onnx::graph::{Dim, Graph};
use crate::onnx::proto::{self, data_type::{FLOAT, INT64}};

/// The symbolic length of the keys: cached positions plus this call's.
const TOTAL: &str = "past_sequence_length + sequence_length";

/// What can go wrong while exporting.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Reading the weights.
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    /// Writing the file.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The target.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Writes `model` as ONNX to `path` (atomically).
pub fn export(model: &Model, path: &Path) -> Result<(), ExportError> {
    let bytes = to_onnx(model)?.encode_to_vec();
    crate::files::write_atomic(path, &bytes).map_err(|source| ExportError::Write { path: path.to_owned(), source })
}

/// Runs a probe batch (two rows, one left-padded) through candle and through ONNX Runtime
/// on the exported file and returns the largest logit difference on real tokens, relative
/// to `max(1, max |logit|)` (SPEC §5.3 asks for at most 1e-4).
pub fn verify(model: &Model, lm: &mut crate::runtime::CausalLm) -> Result<f32, ExportError> {
    use crate::runtime::{LmBatch, PaddingSide};
    let vocab = model.config.vocab_size as u32;
    let rows: Vec<Vec<u32>> = vec![(0..9).map(|i| (i * 37 + 11) % vocab).collect(), (0..5).map(|i| (i * 53 + 3) % vocab).collect()];
    let batch = LmBatch::pad(rows.iter().map(Vec::as_slice), PaddingSide::Left, 0);
    let onnx = lm
        .forward(&batch, |logits, _| logits.to_vec())
        .map_err(|e| crate::model::ModelError::Weights(e.to_string()))?;
    let v = model.config.vocab_size;
    let mut worst = 0f32;
    for (r, row) in rows.iter().enumerate() {
        let candle = model.forward_rows(std::slice::from_ref(row), 0).and_then(|t| t.flatten_all()?.to_vec1::<f32>()).map_err(crate::model::ModelError::from)?;
        let scale = candle.iter().fold(1f32, |m, x| m.max(x.abs()));
        for t in 0..row.len() {
            let at = (r * batch.columns + batch.offsets[r] + t) * v;
            let diff = candle[t * v..(t + 1) * v].iter().zip(&onnx[at..at + v]).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            worst = worst.max(diff / scale);
        }
    }
    Ok(worst)
}

/// The ONNX model of `model`.
pub fn to_onnx(model: &Model) -> Result<proto::ModelProto, ExportError> {
    to_onnx_with(model, true)
}

/// The ONNX graph of `model` without its weights, encoded: every weight is an initializer
/// with external data, to be handed to ONNX Runtime in memory
/// ([`crate::runtime::CausalLm::open_graph`]). One graph serves every set of weights of
/// the architecture (a student's weights as they train).
pub fn graph_without_weights(model: &Model) -> Result<Vec<u8>, ExportError> {
    Ok(to_onnx_with(model, false)?.encode_to_vec())
}

fn to_onnx_with(model: &Model, with_weights: bool) -> Result<proto::ModelProto, ExportError> {
    let cfg = &model.config;
    let mut g = Graph::default();
    for (name, var) in model.params.iter() {
        let t = var.as_tensor();
        if with_weights {
            let values = t.flatten_all().and_then(|t| t.to_vec1::<f32>()).map_err(crate::model::ModelError::from)?;
            g.weight(name, t.dims(), &values);
        } else {
            g.external_weight(name, t.dims());
        }
    }
    let mut b = OnnxBuilder::new(g, cfg);
    let ids = b.g.input("input_ids", INT64, &[Dim::Named("batch_size"), Dim::Named("sequence_length")]);
    let mask = b.g.input("attention_mask", INT64, &[Dim::Named("batch_size"), Dim::Named(TOTAL)]);
    let positions = b.g.input("position_ids", INT64, &[Dim::Named("batch_size"), Dim::Named("sequence_length")]);
    for i in 0..cfg.layers {
        for part in ["key", "value"] {
            b.g.input(&format!("past_key_values.{i}.{part}"), FLOAT, &b.cache_dims("past_sequence_length"));
        }
    }
    b.bias = b.attention_bias(&ids, &mask);
    cfg.arch.family().emit_onnx(&mut b, &ids, &positions);
    b.g.output("logits", FLOAT, &[Dim::Named("batch_size"), Dim::Named("sequence_length"), Dim::Fixed(cfg.vocab_size as i64)]);
    for i in 0..cfg.layers {
        for part in ["key", "value"] {
            b.g.output(&format!("present.{i}.{part}"), FLOAT, &b.cache_dims(TOTAL));
        }
    }
    let metadata = vec![("model_type".to_owned(), cfg.arch.model_type().to_owned())];
    Ok(b.g.finish(metadata))
}
