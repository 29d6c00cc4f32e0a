//! MoPe and per-block perturbation risk (SPEC §9.2, the paper's "BLiMP").
//!
//! A model's loss on a sample is measured again with Gaussian noise `N(0, σ²)` added to
//! its weights — every weight (MoPe) or only the weights of one transformer block — over
//! `n` seeded draws. Members sit in sharper minima, so noise raises their loss more; an
//! attack plugin that asks for perturbations (`Attack::perturbation`, e.g. `mope`) turns
//! the losses into a score. The attack stage's per-block sweep (`attack::sweep`) runs
//! every such attack with one block perturbed at a time; the harness knows no attack by
//! name.
//!
//! Perturbed weights are fed to ONNX Runtime as overridden initializers of the unchanged
//! model file. Blocks are found by initializer name (`model.layers.{i}.`,
//! `transformer.h.{i}.`, `model.decoder.layers.{i}.`): harness exports keep every Hugging
//! Face name; an export whose initializers are anonymous (`onnx::MatMul_733`) or shared
//! between blocks cannot be cut into blocks, and says so.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use prost::Message;

use crate::onnx::proto::{ModelProto, data_type};
use crate::runtime::{CausalLm, Runtime, RuntimeError, SessionOptions};

/// What can go wrong reading or cutting a model's weights.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    /// The file cannot be read or parsed.
    #[error("{}: {message}", path.display())]
    Model {
        /// The ONNX file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The model runs but cannot be scored with perturbations.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// One float weight of an ONNX model.
#[derive(Debug, Clone, PartialEq)]
pub struct Initializer {
    /// Its name in the graph.
    pub name: String,
    /// Its shape.
    pub dims: Vec<usize>,
    /// Its values.
    pub values: Vec<f32>,
}

/// The perturbable weights of an ONNX model and which graph nodes read each.
#[derive(Debug, Clone)]
pub struct OnnxWeights {
    /// The model file.
    pub path: PathBuf,
    /// Who wrote it (`kdharness`, `pytorch`, ...).
    pub producer: String,
    /// Float initializers that are parameters (see [`OnnxWeights::read`]).
    pub initializers: Vec<Initializer>,
    consumers: HashMap<String, Vec<String>>,
}

/// The block index in a parameter name: the naming schemes of the training engine's
/// families (from their `block_prefix`), and GPT-NeoX's for exports scored as they are.
pub fn block_of_name(name: &str) -> Option<usize> {
    let families = crate::model::Arch::ALL.iter().map(|&arch| crate::model::block_prefix(arch, 0).trim_end_matches("0.").to_string());
    for prefix in families.chain(["gpt_neox.layers.".to_string()]) {
        if let Some(rest) = name.strip_prefix(prefix.as_str())
            && let Some((index, _)) = rest.split_once('.')
        {
            return index.parse().ok();
        }
    }
    None
}

/// The block index in a PyTorch-exported node name (`/model/layers.3/self_attn/MatMul`).
fn block_of_node(node: &str) -> Option<usize> {
    for marker in ["/layers.", "/h."] {
        if let Some(at) = node.find(marker) {
            let digits: String = node[at + marker.len()..].chars().take_while(char::is_ascii_digit).collect();
            return digits.parse().ok();
        }
    }
    None
}

impl OnnxWeights {
    /// Reads the float initializers that are parameters: everything with more than one
    /// value whose name is not a graph-internal constant (kdharness's own constants start
    /// with `/`). External-data models are refused.
    pub fn read(path: &Path) -> Result<Self, BlockError> {
        let fail = |message: String| BlockError::Model { path: path.to_owned(), message };
        let bytes = std::fs::read(path).map_err(|e| fail(format!("cannot read: {e}")))?;
        let model = ModelProto::decode(bytes.as_slice()).map_err(|e| fail(format!("not a readable ONNX model: {e}")))?;
        let graph = model.graph.ok_or_else(|| fail("the model has no graph".into()))?;
        let mut initializers = Vec::new();
        for t in graph.initializer {
            if t.data_type != data_type::FLOAT || t.name.starts_with('/') {
                continue;
            }
            if t.data_location == 1 {
                return Err(fail(format!("initializer `{}` lives in an external data file; perturbation needs a self-contained model", t.name)));
            }
            let values: Vec<f32> = if !t.raw_data.is_empty() {
                t.raw_data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
            } else {
                t.float_data
            };
            let dims: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();
            if values.len() != dims.iter().product::<usize>() {
                return Err(fail(format!("initializer `{}` holds {} values for shape {dims:?}", t.name, values.len())));
            }
            if values.len() > 1 {
                initializers.push(Initializer { name: t.name, dims, values });
            }
        }
        let mut consumers: HashMap<String, Vec<String>> = HashMap::new();
        for node in &graph.node {
            for input in &node.input {
                consumers.entry(input.clone()).or_default().push(node.name.clone());
            }
        }
        Ok(OnnxWeights { path: path.to_owned(), producer: model.producer_name, initializers, consumers })
    }

    /// The initializers of each block (indices into [`OnnxWeights::initializers`]), or a
    /// clear error when the names do not say which block a weight belongs to.
    pub fn blocks(&self) -> Result<BTreeMap<usize, Vec<usize>>, BlockError> {
        let fail = |message: String| BlockError::Model { path: self.path.clone(), message };
        let anonymous: Vec<&str> =
            self.initializers.iter().map(|i| i.name.as_str()).filter(|n| n.starts_with("onnx::") || n.contains("::")).collect();
        if !anonymous.is_empty() {
            return Err(fail(format!(
                "{} weight(s) have anonymous names (e.g. `{}`), so their block is unknown; per-block risk needs Hugging Face names: export with `kdharness model export --from HF_DIR`",
                anonymous.len(),
                anonymous[0]
            )));
        }
        let mut blocks: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for (index, init) in self.initializers.iter().enumerate() {
            let Some(block) = block_of_name(&init.name) else { continue };
            // An exporter may share one initializer between blocks (equal values are
            // deduplicated); noising it would touch several blocks at once.
            if self.producer != "kdharness" {
                let others: Vec<usize> = self
                    .consumers
                    .get(&init.name)
                    .into_iter()
                    .flatten()
                    .filter_map(|node| block_of_node(node))
                    .filter(|&b| b != block)
                    .collect();
                if let Some(other) = others.first() {
                    return Err(fail(format!(
                        "weight `{}` is shared by blocks {block} and {other} (the exporter merged equal weights); export with `kdharness model export --from HF_DIR`",
                        init.name
                    )));
                }
            }
            blocks.entry(block).or_default().push(index);
        }
        if blocks.is_empty() {
            return Err(fail("no weight name reveals a transformer block (expected e.g. `model.layers.0.…`)".into()));
        }
        Ok(blocks)
    }
}

/// Which weights a perturbation touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Every parameter (MoPe).
    All,
    /// Only block `l`.
    Block(usize),
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::All => f.write_str("all"),
            Scope::Block(l) => write!(f, "block{l}"),
        }
    }
}

/// Draw `draw` of the perturbed weights in `scope`: `(name, dims, values + ε)` with
/// `ε ~ N(0, σ²)`, each weight from its own stream keyed by `(seed, scope, draw, name)`, so
/// a draw never depends on which other weights or draws were made.
pub fn perturbed(
    weights: &OnnxWeights,
    blocks: Option<&BTreeMap<usize, Vec<usize>>>,
    scope: Scope,
    sigma: f64,
    seed: u64,
    draw: usize,
) -> Vec<Initializer> {
    let chosen: Vec<usize> = match (scope, blocks) {
        (Scope::All, _) => (0..weights.initializers.len()).collect(),
        (Scope::Block(l), Some(blocks)) => blocks.get(&l).cloned().unwrap_or_default(),
        (Scope::Block(_), None) => Vec::new(),
    };
    chosen
        .into_iter()
        .map(|i| {
            let init = &weights.initializers[i];
            let key = format!("{seed}/{scope}/{draw}/{}", init.name);
            let mut rng = crate::rng::named(&key);
            let values = init.values.iter().map(|&v| (v as f64 + sigma * crate::model::standard_normal(&mut rng)) as f32).collect();
            Initializer { name: init.name.clone(), dims: init.dims.clone(), values }
        })
        .collect()
}

/// Opens the model with `overrides` in place of its initializers of the same names.
pub fn open_perturbed(
    runtime: &'static Runtime,
    path: &Path,
    options: SessionOptions,
    overrides: Vec<Initializer>,
) -> Result<CausalLm, RuntimeError> {
    let overrides = overrides.into_iter().map(|i| (i.name, i.dims, i.values)).collect();
    CausalLm::open_with_initializers(runtime, path, options, overrides)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weights() -> OnnxWeights {
        let init = |name: &str| Initializer { name: name.into(), dims: vec![2, 2], values: vec![1.0, 2.0, 3.0, 4.0] };
        OnnxWeights {
            path: "m.onnx".into(),
            producer: "kdharness".into(),
            initializers: vec![
                init("model.embed_tokens.weight"),
                init("model.layers.0.mlp.up_proj.weight"),
                init("model.layers.1.mlp.up_proj.weight"),
                init("model.layers.1.input_layernorm.weight"),
            ],
            consumers: HashMap::new(),
        }
    }

    #[test]
    fn perturbing_a_block_touches_exactly_its_weights() {
        let w = weights();
        let blocks = w.blocks().unwrap();
        assert_eq!(blocks[&0], vec![1]);
        assert_eq!(blocks[&1], vec![2, 3]);
        let p = perturbed(&w, Some(&blocks), Scope::Block(1), 0.1, 7, 0);
        let names: Vec<&str> = p.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["model.layers.1.mlp.up_proj.weight", "model.layers.1.input_layernorm.weight"]);
        for i in &p {
            assert!(i.values.iter().zip([1.0, 2.0, 3.0, 4.0]).all(|(a, b)| *a != b), "every value moves");
        }
        // Seeded: the same draw again is identical, another draw differs.
        assert_eq!(perturbed(&w, Some(&blocks), Scope::Block(1), 0.1, 7, 0), p);
        assert_ne!(perturbed(&w, Some(&blocks), Scope::Block(1), 0.1, 7, 1), p);
        // σ = 0 leaves the values as they are; MoPe's scope is every weight.
        let all = perturbed(&w, Some(&blocks), Scope::All, 0.0, 7, 0);
        assert_eq!(all.len(), 4);
        assert!(all.iter().all(|i| i.values == [1.0, 2.0, 3.0, 4.0]));
    }

    #[test]
    fn anonymous_or_shared_weights_cannot_be_cut_into_blocks() {
        let mut w = weights();
        w.initializers.push(Initializer { name: "onnx::MatMul_733".into(), dims: vec![2], values: vec![0.0, 1.0] });
        let err = w.blocks().unwrap_err().to_string();
        assert!(err.contains("anonymous names (e.g. `onnx::MatMul_733`)") && err.contains("kdharness model export"), "{err}");
        let mut w = weights();
        w.producer = "pytorch".into();
        w.consumers.insert("model.layers.0.mlp.up_proj.weight".into(), vec!["/model/layers.1/mlp/MatMul".into()]);
        let err = w.blocks().unwrap_err().to_string();
        assert!(err.contains("shared by blocks 0 and 1"), "{err}");
        assert_eq!(block_of_name("transformer.h.11.attn.c_attn.weight"), Some(11));
        assert_eq!(block_of_node("/model/decoder/layers.2/fc1/MatMul"), Some(2));
    }
}
