//! The training engine's models: llama, gpt2 and opt decoders in candle (SPEC §5.1).
//!
//! A [`Model`] is a [`ModelConfig`] plus named weights ([`Params`]) whose names and
//! layouts are exactly Hugging Face's, so a checkpoint directory (`config.json` +
//! `model.safetensors`) loads as is and a trained model is usable from transformers.
//! Each architecture lives in its own file — its `config.json` parsing, its weights, its
//! forward pass and its ONNX graph — and reads top to bottom like its equations; the
//! registry below ([`Arch`] and `Arch::family`) is the one place that lists them.
//! [`ops`] holds the differentiable building blocks they share.
//!
//! What it is not: scoring runs through ONNX Runtime ([`crate::runtime`]), never here.

pub mod config;
mod emit;
pub(crate) mod fused;
pub mod generate;
pub mod gpt2;
pub mod llama;
pub mod ops;
pub mod opt;
pub mod plan;
pub mod smollm2;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use serde_json::Value;

pub use config::{Activation, ModelConfig, Shape};
use config::Keys;
pub(crate) use emit::OnnxBuilder;

/// The decoder families the training engine implements (SPEC §5.1).
///
/// Adding one: a new file implementing `Family`, its `mod` line above, a variant here
/// (and in [`Arch::ALL`]) and its line in `Arch::family`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// RMSNorm, RoPE, grouped-query attention, SiLU-gated MLP (SmolLM2, LLaMA-2, OpenLLaMA).
    Llama,
    /// LayerNorm, learned positions, GELU MLP, tied head (GPT-2).
    Gpt2,
    /// LayerNorm, learned positions offset by 2, ReLU MLP (OPT).
    Opt,
}

impl Arch {
    /// Every architecture by name, for messages.
    pub const ALL: [Arch; 3] = [Arch::Llama, Arch::Gpt2, Arch::Opt];

    /// The file that implements this architecture.
    pub(crate) fn family(self) -> &'static dyn Family {
        match self {
            Arch::Llama => &llama::Llama,
            Arch::Gpt2 => &gpt2::Gpt2,
            Arch::Opt => &opt::Opt,
        }
    }

    /// Hugging Face `model_type`.
    pub fn model_type(self) -> &'static str {
        self.family().model_type()
    }
}

impl std::str::FromStr for Arch {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, ModelError> {
        Arch::ALL.into_iter().find(|a| a.model_type() == s).ok_or_else(|| {
            ModelError::Config(format!(
                "model_type `{s}` is not supported; supported: {}{}",
                Arch::ALL.map(Arch::model_type).join(", "),
                crate::suggest::did_you_mean(s, Arch::ALL.iter().map(|a| a.model_type()))
            ))
        })
    }
}

/// Everything one decoder family knows about itself, implemented in its own file: how
/// its Hugging Face `config.json` reads, which weights it has, its forward pass and its
/// ONNX graph. Weight names are the checkpoint's, in all four.
pub(crate) trait Family: Sync {
    /// Hugging Face `model_type`.
    fn model_type(&self) -> &'static str;

    /// The config from the family's `config.json` keys (`eos_token_id` and `hf` are
    /// filled in by [`ModelConfig::from_hf`]).
    fn config(&self, keys: &Keys) -> Result<ModelConfig, ModelError>;

    /// The family's own constraints, checked after the shared ones; by default, that
    /// heads of width `hidden / heads` tile the residual stream.
    fn validate(&self, cfg: &ModelConfig) -> Result<(), ModelError> {
        cfg.heads_divide_hidden()
    }

    /// A from-scratch `config.json` for `shape` with `vocab` tokens.
    fn scratch_hf(&self, shape: &Shape, vocab: usize) -> Value;

    /// The `config.json` key holding the number of blocks (by default transformers' usual
    /// `num_hidden_layers`).
    fn layers_key(&self) -> &'static str {
        "num_hidden_layers"
    }

    /// Whether a checkpoint tensor called `name` is a buffer, not a weight (skipped on
    /// load); by default there are none.
    fn is_buffer(&self, _name: &str) -> bool {
        false
    }

    /// The name prefix shared by every weight of block `i` (ends with a dot).
    fn block_prefix(&self, i: usize) -> String;

    /// Every weight, in a fixed order.
    fn weight_specs(&self, cfg: &ModelConfig) -> Vec<WeightSpec>;

    /// Logits `[b, s, vocab]` for token ids `[b, s]`.
    fn forward(&self, cfg: &ModelConfig, p: &Params, x: &Forward, cache: Option<&mut KvCache>) -> candle_core::Result<Tensor>;

    /// The model as the training engine runs it, or why the engine cannot (training then
    /// uses candle's autograd).
    fn plan(&self, cfg: &ModelConfig) -> Result<plan::Plan, String>;

    /// Emits the graph from the token embedding to `logits`, given the `input_ids` and
    /// `position_ids` graph inputs ([`OnnxBuilder`] holds the attention bias and the shared
    /// layers).
    fn emit_onnx(&self, b: &mut OnnxBuilder, ids: &str, positions: &str);
}

/// What can go wrong with a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A bad or unsupported `config.json`.
    #[error("{0}")]
    Config(String),
    /// A weight file that does not fit the config.
    #[error("{0}")]
    Weights(String),
    /// A file that cannot be read or written.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// Why it failed.
        source: std::io::Error,
    },
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// ONNX Runtime failed (decoding through it).
    #[error(transparent)]
    Runtime(#[from] crate::runtime::RuntimeError),
}

impl ModelError {
    pub(crate) fn io(context: String, source: std::io::Error) -> Self {
        ModelError::Io { context, source }
    }
}

/// How a freshly created weight is filled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Init {
    /// N(0, 0.02²), GPT-2's and LLaMA's default.
    Normal,
    /// N(0, (0.02/√(2L))²): projections into the residual stream (GPT-2's scaling).
    Residual,
    /// All zeros (biases).
    Zeros,
    /// All ones (normalisation gains).
    Ones,
}

/// One named weight of an architecture.
#[derive(Debug, Clone)]
pub struct WeightSpec {
    /// The Hugging Face parameter name.
    pub name: String,
    /// Its shape.
    pub shape: Vec<usize>,
    /// How a scratch model fills it.
    pub init: Init,
}

impl WeightSpec {
    fn new(name: impl Into<String>, shape: impl Into<Vec<usize>>, init: Init) -> Self {
        WeightSpec { name: name.into(), shape: shape.into(), init }
    }
}

/// Every weight an architecture has, in a fixed order.
pub fn weight_specs(cfg: &ModelConfig) -> Vec<WeightSpec> {
    cfg.arch.family().weight_specs(cfg)
}

/// The name prefix shared by every weight of block `i` (ends with a dot).
pub fn block_prefix(arch: Arch, i: usize) -> String {
    arch.family().block_prefix(i)
}

/// A model's weights by Hugging Face name; each is a trainable candle [`Var`]. A
/// compute copy ([`Model::compute_copy`]) also holds lower-precision casts of the matrices,
/// which the forward pass reads instead.
#[derive(Debug, Clone, Default)]
pub struct Params {
    vars: BTreeMap<String, Var>,
    casts: BTreeMap<String, Tensor>,
}

impl Params {
    /// The weight called `name` (its cast, in a compute copy).
    pub fn get(&self, name: &str) -> candle_core::Result<&Tensor> {
        self.maybe(name).ok_or_else(|| missing_weight(name))
    }

    /// The weight called `name`, if the model has one (optional biases).
    pub fn maybe(&self, name: &str) -> Option<&Tensor> {
        self.casts.get(name).or_else(|| self.vars.get(name).map(|v| v.as_tensor()))
    }

    /// The embedding table called `name` for lookups: always the weight itself, never a
    /// cast (a mixed-precision pass looks rows up in f32, as PyTorch's autocast does; a
    /// tied output head still multiplies by the cast through [`Params::get`]).
    pub fn table(&self, name: &str) -> candle_core::Result<&Tensor> {
        self.vars.get(name).map(|v| v.as_tensor()).ok_or_else(|| missing_weight(name))
    }

    /// Every weight, by name in sorted order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Var)> {
        self.vars.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Adds (or replaces) a weight.
    pub fn insert(&mut self, name: impl Into<String>, var: Var) {
        self.vars.insert(name.into(), var);
    }

    /// Number of scalar weights.
    pub fn count(&self) -> usize {
        self.vars.values().map(|v| v.elem_count()).sum()
    }
}

fn missing_weight(name: &str) -> candle_core::Error {
    candle_core::Error::Msg(format!("the model has no weight `{name}`"))
}

/// One forward pass's inputs: token ids and positions `[b, s]` (u32) and the additive
/// attention bias `[b or 1, 1, s, past + s]`.
pub struct Forward<'a> {
    /// Token ids.
    pub ids: &'a Tensor,
    /// Absolute positions of the tokens.
    pub positions: &'a Tensor,
    /// 0 where a query may attend to a key, [`ops::MASKED`] elsewhere.
    pub bias: &'a Tensor,
}

/// Keys and values of earlier positions, per layer, for incremental decoding.
#[derive(Debug, Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
}

impl KvCache {
    /// An empty cache for `layers` blocks.
    pub fn new(layers: usize) -> Self {
        KvCache { layers: vec![None; layers] }
    }

    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.layers.first().and_then(|l| l.as_ref()).map_or(0, |(k, _)| k.dim(2).unwrap_or(0))
    }

    /// Whether nothing is cached yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends this step's keys and values `[b, kv_heads, s, d]` to layer `i` and returns
    /// all of them.
    pub fn append(&mut self, i: usize, k: Tensor, v: Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let (k, v) = match self.layers[i].take() {
            Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 2)?, Tensor::cat(&[&pv, &v], 2)?),
            None => (k, v),
        };
        self.layers[i] = Some((k.clone(), v.clone()));
        Ok((k, v))
    }

    /// Keeps only the given batch rows (finished sequences leave the batch).
    pub fn select_rows(&mut self, rows: &Tensor) -> candle_core::Result<()> {
        for (k, v) in self.layers.iter_mut().flatten() {
            *k = k.index_select(rows, 0)?;
            *v = v.index_select(rows, 0)?;
        }
        Ok(())
    }
}

/// `x Wᵀ + b` for a Hugging Face `Linear` weight `[out, in]`.
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> candle_core::Result<Tensor> {
    let y = matmul_last(x, &w.t()?)?;
    match b {
        Some(b) => y.broadcast_add(b),
        None => Ok(y),
    }
}

/// `x W + b` for a GPT-2 `Conv1D` weight `[in, out]`.
pub fn conv1d(x: &Tensor, w: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    matmul_last(x, w)?.broadcast_add(b)
}

/// `x · w` over the last axis of `x` (`[.., in] · [in, out]`), as one 2-D matmul, in
/// `w`'s dtype and returned in `x`'s (a mixed-precision pass multiplies in bf16 and keeps
/// its activations in f32).
fn matmul_last(x: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
    let mut dims = x.dims().to_vec();
    let inner = dims.pop().unwrap_or(1);
    let rows: usize = dims.iter().product();
    let y = if x.dtype() == w.dtype() {
        x.reshape((rows, inner))?.matmul(w)?
    } else {
        x.reshape((rows, inner))?.to_dtype(w.dtype())?.matmul(w)?.to_dtype(x.dtype())?
    };
    dims.push(w.dim(1)?);
    y.reshape(dims)
}

/// Rows of `table` `[n, d]` for ids of any shape: `[.., d]`.
pub fn embed(table: &Tensor, ids: &Tensor) -> candle_core::Result<Tensor> {
    let mut dims = ids.dims().to_vec();
    let rows = table.index_select(&ids.flatten_all()?, 0)?;
    dims.push(table.dim(1)?);
    rows.reshape(dims)
}

/// The MLP activation.
pub fn activate(act: Activation, x: &Tensor) -> candle_core::Result<Tensor> {
    match act {
        Activation::Silu => ops::silu(x),
        Activation::GeluTanh => ops::gelu_tanh(x),
        Activation::GeluErf => x.gelu_erf(),
        Activation::Relu => x.relu(),
    }
}

/// Multi-head attention of block `i`: queries `[b, h, s, d]` over keys and values
/// `[b, h/groups, s, d]` (after the cached ones of earlier positions, with a cache), with
/// `x`'s bias; returns the heads merged again, `[b, s, h·d]`.
pub fn attend(
    x: &Forward,
    i: usize,
    cache: Option<&mut KvCache>,
    q: &Tensor,
    k: Tensor,
    v: Tensor,
    groups: usize,
) -> candle_core::Result<Tensor> {
    let (k, v) = match cache {
        Some(cache) => cache.append(i, k, v)?,
        None => (k, v),
    };
    let (b, heads, s, hd) = q.dims4()?;
    let a = ops::attention(q, &k, &v, x.bias, 1.0 / (hd as f64).sqrt(), groups)?;
    a.transpose(1, 2)?.reshape((b, s, heads * hd))
}

/// A decoder with its weights.
#[derive(Debug, Clone)]
pub struct Model {
    /// Shape and numerics.
    pub config: ModelConfig,
    /// The weights.
    pub params: Params,
    device: Device,
}

impl Model {
    /// A model with fresh weights drawn from `seed` (each weight from its own stream, keyed
    /// by its name, so the draw does not depend on the order weights are created).
    pub fn scratch(config: ModelConfig, seed: u64, device: &Device) -> Result<Self, ModelError> {
        let specs = weight_specs(&config);
        let residual_std = 0.02 / (2.0 * config.layers as f64).sqrt();
        let mut vars = BTreeMap::new();
        for spec in &specs {
            let n: usize = spec.shape.iter().product();
            let values: Vec<f32> = match spec.init {
                Init::Zeros => vec![0.0; n],
                Init::Ones => vec![1.0; n],
                Init::Normal | Init::Residual => {
                    let std = if spec.init == Init::Normal { 0.02 } else { residual_std };
                    let mut rng = ChaCha8Rng::seed_from_u64(crate::rng::derive(seed, &spec.name));
                    (0..n).map(|_| (std * standard_normal(&mut rng)) as f32).collect()
                }
            };
            let t = Tensor::from_vec(values, spec.shape.as_slice(), device)?;
            vars.insert(spec.name.clone(), Var::from_tensor(&t)?);
        }
        Ok(Model { config, params: Params { vars, casts: BTreeMap::new() }, device: device.clone() })
    }

    /// Loads a Hugging Face checkpoint directory (`config.json` + `model.safetensors`).
    pub fn load(dir: &Path, device: &Device) -> Result<Self, ModelError> {
        let config = ModelConfig::load(dir)?;
        let path = dir.join("model.safetensors");
        if !path.exists() {
            let sharded = dir.join("model.safetensors.index.json").exists();
            return Err(ModelError::Weights(format!(
                "{} not found{}",
                path.display(),
                if sharded { " (sharded checkpoints are not supported: merge the shards into one file)" } else { "" }
            )));
        }
        let tensors = candle_core::safetensors::load(&path, device)
            .map_err(|e| ModelError::Weights(format!("{}: cannot read weights: {e}", path.display())))?;
        Self::from_tensors(config, tensors, device)
            .map_err(|e| ModelError::Weights(format!("{}: {e}", path.display())))
    }

    /// Builds a model from named tensors, checking them against the architecture.
    pub fn from_tensors(
        config: ModelConfig,
        mut tensors: HashMap<String, Tensor>,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let specs = weight_specs(&config);
        if config.tie_embeddings {
            // A tied head may be saved as a copy; the embedding is the one trained.
            tensors.remove("lm_head.weight");
        }
        let mut vars = BTreeMap::new();
        let mut missing = Vec::new();
        for spec in &specs {
            let Some(t) = tensors.remove(&spec.name) else {
                missing.push(spec.name.clone());
                continue;
            };
            if t.dims() != spec.shape.as_slice() {
                return Err(ModelError::Weights(format!(
                    "weight `{}` has shape {:?} but the config implies {:?}",
                    spec.name,
                    t.dims(),
                    spec.shape
                )));
            }
            vars.insert(spec.name.clone(), Var::from_tensor(&t.to_dtype(DType::F32)?)?);
        }
        if !missing.is_empty() {
            return Err(ModelError::Weights(format!(
                "{} weight(s) the config needs are missing: {}",
                missing.len(),
                abbreviate(&missing)
            )));
        }
        let mut unexpected: Vec<String> = tensors.into_keys().filter(|n| !config.arch.family().is_buffer(n)).collect();
        if !unexpected.is_empty() {
            unexpected.sort();
            return Err(ModelError::Weights(format!(
                "{} weight(s) do not belong to a {} model with this config: {}",
                unexpected.len(),
                config.arch.model_type(),
                abbreviate(&unexpected)
            )));
        }
        Ok(Model { config, params: Params { vars, casts: BTreeMap::new() }, device: device.clone() })
    }

    /// Writes `config.json` and `model.safetensors` (Hugging Face layout) into `dir`.
    /// Weights that are not all finite are refused, so that whatever is in `dir` (the last
    /// good checkpoint) stays there.
    pub fn save(&self, dir: &Path) -> Result<(), ModelError> {
        std::fs::create_dir_all(dir).map_err(|e| ModelError::io(format!("cannot create {}", dir.display()), e))?;
        let tensors: Vec<(String, Tensor)> = self
            .params
            .iter()
            .map(|(n, v)| Ok((n.to_owned(), v.as_tensor().to_device(&Device::Cpu)?)))
            .collect::<candle_core::Result<_>>()?;
        for (name, t) in &tensors {
            // x − x is 0 for every finite x and NaN for NaN and ±inf.
            let residue = t.sub(t)?.sum_all()?.to_dtype(candle_core::DType::F32)?.to_scalar::<f32>()?;
            if residue != 0.0 {
                return Err(ModelError::Weights(format!("weight `{name}` is not finite; not saved to {} (what is there is kept)", dir.display())));
            }
        }
        // transformers refuses safetensors files without this metadata.
        let metadata = Some(HashMap::from([("format".to_owned(), "pt".to_owned())]));
        let bytes = safetensors::tensor::serialize(tensors, metadata)
            .map_err(|e| ModelError::Weights(format!("cannot serialise weights: {e}")))?;
        let path = dir.join("model.safetensors");
        crate::files::write_atomic(&path, &bytes)
            .map_err(|e| ModelError::io(format!("cannot write {}", path.display()), e))?;
        self.config.save(dir)
    }

    /// A model made of the chosen blocks of this one, in the given order (a student
    /// initialised from a subset of a teacher's layers); embeddings and head are copied.
    pub fn with_blocks(&self, blocks: &[usize]) -> Result<Self, ModelError> {
        if let Some(&bad) = blocks.iter().find(|&&b| b >= self.config.layers) {
            return Err(ModelError::Config(format!(
                "block {bad} does not exist: the model has {} blocks (0..{})",
                self.config.layers,
                self.config.layers
            )));
        }
        let config = self.config.with_layers(blocks.len());
        let arch = config.arch;
        let mut tensors = HashMap::new();
        for (name, var) in self.params.iter() {
            let t = var.as_tensor().copy()?;
            match (0..self.config.layers).find(|&i| name.starts_with(&block_prefix(arch, i))) {
                None => {
                    tensors.insert(name.to_owned(), t);
                }
                Some(src) => {
                    let rest = &name[block_prefix(arch, src).len()..];
                    for (dst, _) in blocks.iter().enumerate().filter(|(_, b)| **b == src) {
                        tensors.insert(format!("{}{rest}", block_prefix(arch, dst)), t.clone());
                    }
                }
            }
        }
        Self::from_tensors(config, tensors, &self.device)
    }

    /// An independent copy (new variables with the same values): training the copy leaves
    /// this model unchanged. (`Clone` shares the variables.)
    pub fn clone_weights(&self) -> Result<Self, ModelError> {
        let tensors = self.params.iter().map(|(n, v)| Ok((n.to_owned(), v.as_tensor().copy()?))).collect::<candle_core::Result<_>>()?;
        Self::from_tensors(self.config.clone(), tensors, &self.device)
    }

    /// Every weight as `(name, shape, values)` on the host, copied (for an ONNX Runtime
    /// session).
    pub fn host_weights(&self) -> Result<Vec<(String, Vec<usize>, Vec<f32>)>, ModelError> {
        self.params
            .iter()
            .map(|(name, var)| Ok((name.to_owned(), var.dims().to_vec(), var.as_tensor().flatten_all()?.to_vec1::<f32>()?)))
            .collect()
    }

    /// This model on `device` (the same variables when it is already there).
    pub fn to_device(&self, device: &Device) -> Result<Self, ModelError> {
        if device.same_device(&self.device) {
            return Ok(self.clone());
        }
        let tensors = self.params.iter().map(|(n, v)| Ok((n.to_owned(), v.as_tensor().to_device(device)?))).collect::<candle_core::Result<_>>()?;
        Self::from_tensors(self.config.clone(), tensors, device)
    }

    /// The model as a mixed-precision forward pass sees it: every matrix (rank ≥ 2: the
    /// projections, the embeddings) cast to `dtype`, the rest as it is. The casts are
    /// differentiable, so gradients of a loss computed through the copy reach this model's
    /// f32 variables (the master weights). The forward pass keeps the residual stream,
    /// norms, attention softmax and the logits in f32: [`linear`] multiplies in the
    /// weight's dtype and returns f32, and embedding rows are looked up in the f32 tables
    /// ([`Params::table`]).
    pub fn compute_copy(&self, dtype: DType) -> candle_core::Result<Model> {
        let mut params = self.params.clone();
        params.casts = self.params.vars.iter().filter(|(_, v)| v.rank() >= 2).map(|(n, v)| Ok((n.clone(), v.as_tensor().to_dtype(dtype)?))).collect::<candle_core::Result<_>>()?;
        Ok(Model { config: self.config.clone(), params, device: self.device.clone() })
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The model as the training engine runs it, or why the engine cannot.
    pub fn plan(&self) -> Result<plan::Plan, String> {
        self.config.arch.family().plan(&self.config)
    }

    /// Logits `[b, s, vocab]`; with a cache, the inputs continue the cached positions.
    pub fn forward(&self, x: &Forward, cache: Option<&mut KvCache>) -> candle_core::Result<Tensor> {
        self.config.arch.family().forward(&self.config, &self.params, x, cache)
    }

    /// Logits `[b, s, vocab]` of right-padded rows (positions from 0, causal attention;
    /// pads come after every real token, so no real token ever sees one).
    pub fn forward_rows(&self, rows: &[Vec<u32>], pad: u32) -> candle_core::Result<Tensor> {
        let x = RowBatch::new(rows, pad, &self.device)?;
        self.forward(&x.as_forward(), None)
    }
}

/// The candle device that trains on `device`: the CPU, or the first CUDA GPU in a build
/// with the `cuda` feature.
pub fn training_device(device: crate::runtime::Device) -> Result<Device, ModelError> {
    match device {
        crate::runtime::Device::Cpu => Ok(Device::Cpu),
        #[cfg(feature = "cuda")]
        crate::runtime::Device::Cuda => Ok(Device::new_cuda(0)?),
        #[cfg(not(feature = "cuda"))]
        crate::runtime::Device::Cuda => Err(ModelError::Config(
            "this build trains on the CPU only: build with `cargo build --release --features cuda` (bench/gpu.sh shows how, with nvcc from PyPI)".into(),
        )),
    }
}

/// Right-padded rows as tensors, for training and evaluation passes.
pub struct RowBatch {
    /// `[b, s]` token ids.
    pub ids: Tensor,
    /// `[b, s]` positions `0..s`.
    pub positions: Tensor,
    /// `[1, 1, s, s]` causal bias.
    pub bias: Tensor,
}

impl RowBatch {
    /// Pads `rows` on the right to the longest one.
    pub fn new(rows: &[Vec<u32>], pad: u32, device: &Device) -> candle_core::Result<Self> {
        let s = rows.iter().map(Vec::len).max().unwrap_or(0);
        let b = rows.len();
        let ids: Vec<u32> = rows.iter().flat_map(|r| r.iter().copied().chain(std::iter::repeat_n(pad, s - r.len()))).collect();
        let positions: Vec<u32> = (0..b).flat_map(|_| 0..s as u32).collect();
        Ok(RowBatch {
            ids: Tensor::from_vec(ids, (b, s), device)?,
            positions: Tensor::from_vec(positions, (b, s), device)?,
            bias: ops::attention_bias(&[vec![1; s]], s, device)?,
        })
    }

    /// The batch as forward-pass inputs.
    pub fn as_forward(&self) -> Forward<'_> {
        Forward { ids: &self.ids, positions: &self.positions, bias: &self.bias }
    }
}

fn abbreviate(names: &[String]) -> String {
    const SHOWN: usize = 6;
    let mut s = names.iter().take(SHOWN).map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ");
    if names.len() > SHOWN {
        s.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    s
}


/// One draw from N(0, 1) (Box–Muller; `rand` 0.8 has no normal distribution of its own).
pub fn standard_normal(rng: &mut impl Rng) -> f64 {
    let u1: f64 = 1.0 - rng.r#gen::<f64>();
    let u2: f64 = rng.r#gen();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}
