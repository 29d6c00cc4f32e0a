//! A causal LM exported to ONNX with Hugging Face optimum's `text-generation-with-past`
//! conventions (or by kdharness, which follows them): inputs `input_ids`,
//! `attention_mask`, optional `position_ids`, `past_key_values.{i}.key|value` (fed empty:
//! scoring needs no cache) and, for merged decoders, `use_cache_branch`; output `logits`.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use ort::session::{HasSelectedOutputs, OutputSelector, RunOptions, Session, SessionInputValue};
use ort::value::{Tensor, TensorElementType, ValueType};

use super::{Device, Runtime, RuntimeError, SessionOptions};

/// A key or value cache input, fed with zero past positions.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PastInput {
    /// `past_key_values.{i}.key` or `.value`.
    pub name: String,
    /// Key/value heads (axis 1).
    pub heads: usize,
    /// Head size (axis 3).
    pub head_dim: usize,
}

/// What kdharness learned about a model's interface.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ModelInfo {
    /// Input names, in graph order.
    pub inputs: Vec<String>,
    /// Output names, in graph order.
    pub outputs: Vec<String>,
    /// Size of the logits' last axis, when the graph states it.
    pub vocab: Option<usize>,
    /// Whether positions are fed (else the graph derives them).
    pub has_position_ids: bool,
    /// Whether it is a merged decoder that takes `use_cache_branch`.
    pub has_use_cache_branch: bool,
    /// Cache inputs, fed empty.
    pub past: Vec<PastInput>,
}

/// Sequences padded into one rectangular batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LmBatch {
    /// Sequences in the batch.
    pub rows: usize,
    /// Length of the longest, which every row is padded to.
    pub columns: usize,
    /// Row-major `[rows, columns]` token ids.
    pub input_ids: Vec<i64>,
    /// 1 on real tokens, 0 on padding.
    pub attention_mask: Vec<i64>,
    /// Hugging Face's convention: `cumsum(mask) − 1` on real tokens, 1 on padding.
    pub position_ids: Vec<i64>,
    /// Column of each row's first real token (non-zero only with left padding).
    pub offsets: Vec<usize>,
}

/// Which side of a row the padding goes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PaddingSide {
    /// Padding after the tokens.
    #[default]
    Right,
    /// Padding before the tokens.
    Left,
}

impl LmBatch {
    /// Pads `sequences` to the longest with `pad_id`, masked out.
    pub fn pad<'a>(sequences: impl IntoIterator<Item = &'a [u32]>, side: PaddingSide, pad_id: u32) -> LmBatch {
        let sequences: Vec<&[u32]> = sequences.into_iter().collect();
        let columns = sequences.iter().map(|s| s.len()).max().unwrap_or(0);
        let rows = sequences.len();
        let mut batch = LmBatch {
            rows,
            columns,
            input_ids: vec![pad_id as i64; rows * columns],
            attention_mask: vec![0; rows * columns],
            position_ids: vec![1; rows * columns],
            offsets: Vec::with_capacity(rows),
        };
        for (r, seq) in sequences.iter().enumerate() {
            let offset = match side {
                PaddingSide::Right => 0,
                PaddingSide::Left => columns - seq.len(),
            };
            batch.offsets.push(offset);
            for (j, &id) in seq.iter().enumerate() {
                let at = r * columns + offset + j;
                batch.input_ids[at] = id as i64;
                batch.attention_mask[at] = 1;
                batch.position_ids[at] = j as i64;
            }
        }
        batch
    }
}

/// An opened causal LM.
pub struct CausalLm {
    path: PathBuf,
    session: Session,
    info: ModelInfo,
    run_options: RunOptions<HasSelectedOutputs>,
    run_options_with_cache: RunOptions<HasSelectedOutputs>,
}

/// Keys and values of earlier positions as the model returned them (`present.*`), to be
/// fed back as `past_key_values.*`: one row-major `[rows, heads, len, head_dim]` buffer
/// per cache input, in [`ModelInfo::past`] order.
#[derive(Clone, Debug, Default)]
pub struct PastState {
    /// Cached positions.
    pub len: usize,
    /// One buffer per cache input.
    pub values: Vec<Vec<f32>>,
}

fn model_error(path: &Path, message: impl Into<String>) -> RuntimeError {
    RuntimeError::Model { path: path.to_path_buf(), message: message.into() }
}

impl CausalLm {
    /// Opens `path` and checks that its inputs and outputs follow the conventions.
    pub fn open(runtime: &Runtime, path: &Path, options: SessionOptions) -> Result<CausalLm, RuntimeError> {
        Self::open_with_initializers(runtime, path, options, Vec::new())
    }

    /// Like [`CausalLm::open`], with some initializers replaced by the given values
    /// (`(name, shape, values)`): the same graph with other weights (perturbations).
    ///
    /// The replaced initializers are marked external in a copy of the model held in memory
    /// (every other byte as it was; `onnx::external`) and handed over with
    /// `AddExternalInitializers`, which ONNX Runtime substitutes while it builds the graph.
    /// (Plain session initializers are applied after graph optimization, so weights folded
    /// into optimized nodes would keep their old values.)
    pub fn open_with_initializers(
        runtime: &Runtime,
        path: &Path,
        options: SessionOptions,
        overrides: Vec<(String, Vec<usize>, Vec<f32>)>,
    ) -> Result<CausalLm, RuntimeError> {
        if !path.is_file() {
            return Err(model_error(path, "no such model file"));
        }
        let fail = |e: String| model_error(path, format!("ONNX Runtime cannot load it: {e}"));
        if overrides.is_empty() {
            let session = Self::builder(runtime, options, path)?.commit_from_file(path).map_err(|e| fail(e.to_string()))?;
            return Self::finish(session, path);
        }
        let bytes = std::fs::read(path).map_err(|e| model_error(path, format!("cannot read it: {e}")))?;
        let names: std::collections::HashSet<&str> = overrides.iter().map(|(n, _, _)| n.as_str()).collect();
        let graph = crate::onnx::external::externalize(&bytes, &names).map_err(|e| model_error(path, format!("not an ONNX model: {e}")))?;
        let mut builder = Self::builder(runtime, options, path)?;
        // Initializers of the model's own external data files stay where they are.
        if let Some(folder) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            let folder = folder.to_string_lossy();
            builder = builder.with_config_entry("session.model_external_initializers_file_folder_path", folder.as_ref()).map_err(|e| fail(e.to_string()))?;
        }
        Self::commit_graph(builder, &graph, path, overrides)
    }

    /// Opens an encoded graph whose weights are external initializers
    /// ([`crate::export::graph_without_weights`]), with every weight handed over in memory
    /// (`(name, shape, values)`; ONNX Runtime substitutes them as it builds the graph, so
    /// nothing is written to or read from disk). `label` names the model in messages.
    pub fn open_graph(
        runtime: &Runtime,
        graph: &[u8],
        label: &Path,
        options: SessionOptions,
        weights: Vec<(String, Vec<usize>, Vec<f32>)>,
    ) -> Result<CausalLm, RuntimeError> {
        Self::commit_graph(Self::builder(runtime, options, label)?, graph, label, weights)
    }

    fn commit_graph(
        mut builder: ort::session::builder::SessionBuilder,
        graph: &[u8],
        label: &Path,
        weights: Vec<(String, Vec<usize>, Vec<f32>)>,
    ) -> Result<CausalLm, RuntimeError> {
        let fail = |e: String| model_error(label, format!("ONNX Runtime cannot load it: {e}"));
        for (name, dims, values) in weights {
            let value = Tensor::from_array((dims, values)).map_err(|e| fail(e.to_string()))?.into_dyn();
            builder = builder.with_external_initializer(&name, value).map_err(|e| fail(format!("cannot hand over `{name}`: {e}")))?;
        }
        let session = builder.commit_from_memory(graph).map_err(|e| fail(e.to_string()))?;
        Self::finish(session, label)
    }

    fn builder(runtime: &Runtime, options: SessionOptions, path: &Path) -> Result<ort::session::builder::SessionBuilder, RuntimeError> {
        runtime.check_device(options.device)?;
        let fail = |e: String| model_error(path, format!("ONNX Runtime cannot load it: {e}"));
        let mut builder = Session::builder(runtime.environment()).map_err(|e| fail(e.to_string()))?;
        builder = builder.with_intra_threads(options.threads.max(1)).map_err(|e| fail(e.to_string()))?;
        if options.device == Device::Cuda {
            builder = builder
                .with_execution_providers([ort::ep::CUDA::default().build().error_on_failure()])
                .map_err(|e| fail(e.to_string()))?;
        }
        Ok(builder)
    }

    fn finish(session: Session, path: &Path) -> Result<CausalLm, RuntimeError> {
        let fail = |e: String| model_error(path, format!("ONNX Runtime cannot load it: {e}"));
        let info = inspect(path, &session)?;
        let run_options = RunOptions::new()
            .map_err(|e| fail(e.to_string()))?
            .with_outputs(OutputSelector::no_default().with("logits"));
        let with_cache = info.past.iter().fold(OutputSelector::no_default().with("logits"), |sel, p| sel.with(present_name(&p.name)));
        let run_options_with_cache = RunOptions::new().map_err(|e| fail(e.to_string()))?.with_outputs(with_cache);
        Ok(CausalLm { path: path.to_path_buf(), session, info, run_options, run_options_with_cache })
    }

    /// Its interface.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// The model file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs one batch and hands `f` the logits, row-major `[rows, columns, vocab]`, with the
    /// vocabulary size.
    pub fn forward<R>(&mut self, batch: &LmBatch, f: impl FnOnce(&[f32], usize) -> R) -> Result<R, RuntimeError> {
        let (r, _) = self.run(batch, None, false, f)?;
        Ok(r)
    }

    /// Runs one batch that continues `past` (its attention mask covers past and new
    /// positions) and returns `f`'s result on the logits with the new cache. A model
    /// without cache inputs recomputes nothing and returns an empty state.
    pub fn forward_with_past<R>(
        &mut self,
        batch: &LmBatch,
        past: &PastState,
        f: impl FnOnce(&[f32], usize) -> R,
    ) -> Result<(R, PastState), RuntimeError> {
        self.run(batch, Some(past), true, f)
    }

    fn run<R>(
        &mut self,
        batch: &LmBatch,
        past: Option<&PastState>,
        want_present: bool,
        f: impl FnOnce(&[f32], usize) -> R,
    ) -> Result<(R, PastState), RuntimeError> {
        let path = self.path.clone();
        let fail = |e: String| model_error(&path, format!("forward pass failed: {e}"));
        let (rows, columns) = (batch.rows, batch.columns);
        let past_len = past.map_or(0, |p| p.len);
        let mut feed: Vec<(Cow<'_, str>, SessionInputValue<'_>)> = Vec::new();
        let ints = |data: &Vec<i64>, cols: usize| Tensor::from_array(([rows, cols], data.clone())).map(|t| t.into_dyn());
        feed.push(("input_ids".into(), ints(&batch.input_ids, columns).map_err(|e| fail(e.to_string()))?.into()));
        feed.push((
            "attention_mask".into(),
            ints(&batch.attention_mask, batch.attention_mask.len() / rows.max(1)).map_err(|e| fail(e.to_string()))?.into(),
        ));
        if self.info.has_position_ids {
            feed.push(("position_ids".into(), ints(&batch.position_ids, columns).map_err(|e| fail(e.to_string()))?.into()));
        }
        for (i, input) in self.info.past.iter().enumerate() {
            let data = past.and_then(|p| p.values.get(i).cloned()).unwrap_or_default();
            let t = Tensor::from_array(([rows, input.heads, past_len, input.head_dim], data)).map_err(|e| fail(e.to_string()))?;
            feed.push((input.name.clone().into(), t.into_dyn().into()));
        }
        if self.info.has_use_cache_branch {
            let flag = Tensor::from_array(([1usize], vec![past_len > 0])).map_err(|e| fail(e.to_string()))?;
            feed.push(("use_cache_branch".into(), flag.into_dyn().into()));
        }
        let options = if want_present { &self.run_options_with_cache } else { &self.run_options };
        let outputs = self.session.run_with_options(feed, options).map_err(|e| fail(e.to_string()))?;
        let logits = outputs.get("logits").ok_or_else(|| fail("the run returned no logits".into()))?;
        let (shape, data) = logits.try_extract_tensor::<f32>().map_err(|e| fail(e.to_string()))?;
        let dims: Vec<i64> = shape.iter().copied().collect();
        if dims.len() != 3 || dims[0] as usize != rows || dims[1] as usize != columns {
            return Err(fail(format!("logits have shape {dims:?}, expected [{rows}, {columns}, vocab]")));
        }
        let result = f(data, dims[2] as usize);
        let mut state = PastState { len: past_len + columns, values: Vec::new() };
        if want_present {
            for input in &self.info.past {
                let name = present_name(&input.name);
                let value = outputs.get(name.as_str()).ok_or_else(|| fail(format!("the run returned no `{name}`")))?;
                let (_, data) = value.try_extract_tensor::<f32>().map_err(|e| fail(e.to_string()))?;
                state.values.push(data.to_vec());
            }
        }
        Ok((result, state))
    }
}

/// `past_key_values.{i}.key` → `present.{i}.key`.
fn present_name(past: &str) -> String {
    past.replacen("past_key_values.", "present.", 1)
}

fn tensor_parts(t: &ValueType) -> Option<(TensorElementType, Vec<i64>)> {
    match t {
        ValueType::Tensor { ty, shape, .. } => Some((*ty, shape.iter().copied().collect())),
        _ => None,
    }
}

/// Reads the session's inputs and outputs and checks them against the conventions.
fn inspect(path: &Path, session: &Session) -> Result<ModelInfo, RuntimeError> {
    let inputs: Vec<String> = session.inputs().iter().map(|i| i.name().to_string()).collect();
    let outputs: Vec<String> = session.outputs().iter().map(|o| o.name().to_string()).collect();
    let logits = session.outputs().iter().find(|o| o.name() == "logits").ok_or_else(|| {
        model_error(
            path,
            format!(
                "has no `logits` output (it has: {}); export it as a causal LM with optimum's text-generation(-with-past) task",
                outputs.join(", ")
            ),
        )
    })?;
    let (ty, shape) = tensor_parts(logits.dtype()).ok_or_else(|| model_error(path, "`logits` is not a tensor"))?;
    if ty != TensorElementType::Float32 {
        return Err(model_error(path, format!("`logits` are {ty:?}; kdharness scores float32 models")));
    }
    let vocab = shape.last().copied().filter(|&v| v > 0).map(|v| v as usize);

    let mut info = ModelInfo {
        inputs: inputs.clone(),
        outputs,
        vocab,
        has_position_ids: false,
        has_use_cache_branch: false,
        past: Vec::new(),
    };
    for input in session.inputs() {
        let name = input.name();
        match name {
            "input_ids" | "attention_mask" => {}
            "position_ids" => info.has_position_ids = true,
            "use_cache_branch" => info.has_use_cache_branch = true,
            _ if name.starts_with("past_key_values.") => {
                let (ty, shape) = tensor_parts(input.dtype()).unwrap_or((TensorElementType::Undefined, vec![]));
                if ty != TensorElementType::Float32 || shape.len() != 4 || shape[1] <= 0 || shape[3] <= 0 {
                    return Err(model_error(
                        path,
                        format!("input `{name}` should be float32 [batch, heads, past, head_dim] with fixed heads and head_dim, found {ty:?} {shape:?}"),
                    ));
                }
                info.past.push(PastInput { name: name.to_string(), heads: shape[1] as usize, head_dim: shape[3] as usize });
            }
            _ => {
                return Err(model_error(
                    path,
                    format!(
                        "has an input kdharness does not know how to feed: `{name}` (inputs: {}); expected input_ids, attention_mask, position_ids, past_key_values.*, use_cache_branch",
                        inputs.join(", ")
                    ),
                ));
            }
        }
    }
    for required in ["input_ids", "attention_mask"] {
        if !inputs.iter().any(|i| i == required) {
            return Err(model_error(path, format!("has no `{required}` input (inputs: {})", inputs.join(", "))));
        }
    }
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_builds_masks_and_positions() {
        let a: &[u32] = &[5, 6, 7];
        let b: &[u32] = &[8];
        let right = LmBatch::pad([a, b], PaddingSide::Right, 0);
        assert_eq!(right.input_ids, vec![5, 6, 7, 8, 0, 0]);
        assert_eq!(right.attention_mask, vec![1, 1, 1, 1, 0, 0]);
        assert_eq!(right.position_ids, vec![0, 1, 2, 0, 1, 1]);
        assert_eq!(right.offsets, vec![0, 0]);
        let left = LmBatch::pad([a, b], PaddingSide::Left, 0);
        assert_eq!(left.input_ids, vec![5, 6, 7, 0, 0, 8]);
        assert_eq!(left.attention_mask, vec![1, 1, 1, 0, 0, 1]);
        assert_eq!(left.position_ids, vec![0, 1, 2, 1, 1, 0]);
        assert_eq!(left.offsets, vec![0, 2]);
    }
}
