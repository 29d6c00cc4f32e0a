//! Model configuration, read from and written to Hugging Face `config.json`.
//!
//! Every architecture is described by one [`ModelConfig`]; the Hugging Face JSON it came
//! from is kept verbatim so that saving a trained model writes back every key a user's
//! checkpoint had (tokenizer ids, generation settings, ...), not just the ones we read.
//! Which keys a family reads is up to its own file (`Family::config`); this one
//! holds what they share.

use std::path::Path;

use serde::Serialize;
use serde_json::{Map, Value, json};

use super::{Arch, ModelError};

/// The MLP's activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `x · sigmoid(x)` (llama's gate).
    Silu,
    /// GELU, tanh approximation (GPT-2's `gelu_new`).
    GeluTanh,
    /// GELU with the exact error function.
    GeluErf,
    /// `max(x, 0)` (OPT).
    Relu,
}

impl Activation {
    pub(crate) fn parse(name: &str) -> Result<Self, ModelError> {
        Ok(match name {
            "silu" | "swish" => Activation::Silu,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluTanh,
            "gelu" => Activation::GeluErf,
            "relu" => Activation::Relu,
            other => {
                return Err(ModelError::Config(format!(
                    "activation `{other}` is not supported (silu, gelu_new, gelu, relu)"
                )));
            }
        })
    }
}

/// One decoder's shape and numerics, whatever its family.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    /// The family.
    pub arch: Arch,
    /// Rows of the embedding matrix and width of the logits.
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden: usize,
    /// Number of transformer blocks.
    pub layers: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (fewer than `heads` for grouped-query attention).
    pub kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Width of the MLP's hidden layer.
    pub ffn: usize,
    /// Longest sequence the position table (or RoPE setting) is meant for.
    pub max_positions: usize,
    /// Epsilon of every normalisation layer.
    pub norm_eps: f64,
    /// RoPE base (llama only).
    pub rope_theta: f64,
    /// Whether the output head shares the token embedding.
    pub tie_embeddings: bool,
    /// The MLP activation.
    pub activation: Activation,
    /// Biases on attention projections (llama's `attention_bias`; always on for gpt2/opt).
    pub attention_bias: bool,
    /// Biases on MLP projections (llama's `mlp_bias`; always on for gpt2/opt).
    pub mlp_bias: bool,
    /// OPT: normalise before (true) or after (false, OPT-350m) each sub-layer.
    pub pre_norm: bool,
    /// OPT: width of the embeddings when it differs from `hidden` (OPT-350m projects in/out).
    pub embed_dim: usize,
    /// The end-of-sequence token id, appended to training targets.
    pub eos_token_id: Option<u32>,
    /// The Hugging Face JSON this was read from (written back on save).
    pub hf: Map<String, Value>,
}

/// A from-scratch architecture (`scratch` source, SPEC §5.2); the vocabulary comes from
/// the tokenizer. Also the `shape` tables of experiment configs.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Shape {
    /// The family: llama, gpt2 or opt.
    pub arch: String,
    /// Number of blocks.
    pub layers: usize,
    /// Residual width.
    pub d_model: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (llama; defaults to `heads`).
    #[serde(default)]
    pub kv_heads: Option<usize>,
    /// MLP width (defaults to 4·d_model, or 8/3·d_model rounded up to 8 for llama).
    #[serde(default)]
    pub ffn: Option<usize>,
    /// Position table length / context length.
    #[serde(default = "default_max_positions")]
    pub max_positions: usize,
    /// Tie the output head to the embedding (always true for gpt2/opt).
    #[serde(default = "default_true")]
    pub tie_embeddings: bool,
}

fn default_max_positions() -> usize {
    512
}
fn default_true() -> bool {
    true
}

impl ModelConfig {
    /// Reads `DIR/config.json`.
    pub fn load(dir: &Path) -> Result<Self, ModelError> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path)
            .map_err(|e| ModelError::io(format!("cannot read {}", path.display()), e))?;
        let value: Value = serde_json::from_str(&text).map_err(|e| {
            ModelError::Config(format!("{}: not valid JSON: {e}", path.display()))
        })?;
        let Value::Object(hf) = value else {
            return Err(ModelError::Config(format!("{}: expected a JSON object", path.display())));
        };
        Self::from_hf(hf).map_err(|e| match e {
            ModelError::Config(msg) => ModelError::Config(format!("{}: {msg}", path.display())),
            other => other,
        })
    }

    /// Parses a Hugging Face config object.
    pub fn from_hf(hf: Map<String, Value>) -> Result<Self, ModelError> {
        let keys = Keys(&hf);
        let arch: Arch = keys.string("model_type")?.parse()?;
        let mut cfg = arch.family().config(&keys)?;
        cfg.eos_token_id = match hf.get("eos_token_id") {
            Some(Value::Number(n)) => n.as_u64().map(|n| n as u32),
            Some(Value::Array(ids)) => ids.first().and_then(Value::as_u64).map(|n| n as u32),
            _ => None,
        };
        cfg.hf = hf;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The conventions most families share, for a family's [`super::Family::config`] to
    /// override: one key/value head per query head of width `hidden / heads`, biases on,
    /// pre-norm, a tied head, no RoPE, norm epsilon 1e-5. `vocab_size`, `layers`, `ffn`,
    /// `max_positions` (0 here) and `activation` have no shared default: every family
    /// sets them.
    pub(crate) fn new(arch: Arch, hidden: usize, heads: usize) -> Self {
        ModelConfig {
            arch,
            vocab_size: 0,
            hidden,
            layers: 0,
            heads,
            kv_heads: heads,
            head_dim: hidden / heads.max(1),
            ffn: 0,
            max_positions: 0,
            norm_eps: 1e-5,
            rope_theta: 0.0,
            tie_embeddings: true,
            activation: Activation::Relu,
            attention_bias: true,
            mlp_bias: true,
            pre_norm: true,
            embed_dim: hidden,
            eos_token_id: None,
            hf: Map::new(),
        }
    }

    fn validate(&self) -> Result<(), ModelError> {
        let bad = |msg: String| Err(ModelError::Config(msg));
        if self.vocab_size == 0 || self.hidden == 0 || self.layers == 0 || self.heads == 0 {
            return bad("vocab, hidden size, layers and heads must all be positive".into());
        }
        if self.kv_heads == 0 || !self.heads.is_multiple_of(self.kv_heads) {
            return bad(format!(
                "{} attention heads cannot be shared by {} key/value heads (must divide)",
                self.heads, self.kv_heads
            ));
        }
        self.arch.family().validate(self)
    }

    /// A family constraint: heads of width `hidden / heads` must tile the residual stream.
    pub(crate) fn heads_divide_hidden(&self) -> Result<(), ModelError> {
        if !self.hidden.is_multiple_of(self.heads) {
            return Err(ModelError::Config(format!(
                "hidden size {} is not divisible by {} heads",
                self.hidden, self.heads
            )));
        }
        Ok(())
    }

    /// A from-scratch config in Hugging Face form, with `vocab` tokens.
    pub fn scratch(spec: &Shape, vocab: usize) -> Result<Self, ModelError> {
        let arch: Arch = spec.arch.parse()?;
        let hf = arch.family().scratch_hf(spec, vocab);
        let Value::Object(hf) = hf else { unreachable!("json! object literal") };
        Self::from_hf(hf)
    }

    /// The same config with only `layers` blocks (a student cut from a deeper teacher).
    pub fn with_layers(&self, layers: usize) -> Self {
        let mut cfg = self.clone();
        cfg.layers = layers;
        cfg.hf.insert(self.arch.family().layers_key().into(), json!(layers));
        cfg
    }

    /// Writes `DIR/config.json` atomically.
    pub fn save(&self, dir: &Path) -> Result<(), ModelError> {
        let mut text = serde_json::to_string_pretty(&Value::Object(self.hf.clone()))
            .expect("a JSON map always serialises");
        text.push('\n');
        let path = dir.join("config.json");
        crate::files::write_atomic(&path, text.as_bytes())
            .map_err(|e| ModelError::io(format!("cannot write {}", path.display()), e))
    }

    /// How many query heads share one key/value head.
    pub fn kv_groups(&self) -> usize {
        self.heads / self.kv_heads
    }
}

/// Typed access to config keys with errors that name the key.
pub(crate) struct Keys<'a>(&'a Map<String, Value>);

impl Keys<'_> {
    pub(crate) fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key).filter(|v| !v.is_null())
    }
    fn missing(key: &str) -> ModelError {
        ModelError::Config(format!("missing key `{key}`"))
    }
    fn wrong(key: &str, what: &str, v: &Value) -> ModelError {
        ModelError::Config(format!("key `{key}` should be {what}, found {v}"))
    }
    pub(crate) fn usize(&self, key: &str) -> Result<usize, ModelError> {
        let v = self.get(key).ok_or_else(|| Self::missing(key))?;
        v.as_u64().map(|n| n as usize).ok_or_else(|| Self::wrong(key, "a non-negative integer", v))
    }
    pub(crate) fn usize_or(&self, key: &str, default: usize) -> Result<usize, ModelError> {
        if self.get(key).is_some() { self.usize(key) } else { Ok(default) }
    }
    pub(crate) fn f64_or(&self, key: &str, default: f64) -> Result<f64, ModelError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.as_f64().ok_or_else(|| Self::wrong(key, "a number", v)),
        }
    }
    pub(crate) fn bool_or(&self, key: &str, default: bool) -> Result<bool, ModelError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.as_bool().ok_or_else(|| Self::wrong(key, "true or false", v)),
        }
    }
    pub(crate) fn string(&self, key: &str) -> Result<String, ModelError> {
        let v = self.get(key).ok_or_else(|| Self::missing(key))?;
        v.as_str().map(str::to_owned).ok_or_else(|| Self::wrong(key, "a string", v))
    }
    pub(crate) fn string_or(&self, key: &str, default: &str) -> Result<String, ModelError> {
        if self.get(key).is_some() { self.string(key) } else { Ok(default.to_owned()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_mistyped_keys_are_named() {
        let Value::Object(hf) = json!({"model_type": "llama", "hidden_size": 8}) else { panic!() };
        let err = ModelConfig::from_hf(hf).unwrap_err().to_string();
        assert!(err.contains("`num_attention_heads`"), "{err}");
        let Value::Object(hf) = json!({"model_type": "gpt2", "n_embd": "big"}) else { panic!() };
        let err = ModelConfig::from_hf(hf).unwrap_err().to_string();
        assert!(err.contains("`n_embd` should be a non-negative integer"), "{err}");
        let Value::Object(hf) = json!({"model_type": "lama"}) else { panic!() };
        let err = ModelConfig::from_hf(hf).unwrap_err().to_string();
        assert!(err.contains("did you mean `llama`"), "{err}");
    }

    #[test]
    fn scratch_configs_round_trip_through_hf_json() {
        for arch in ["llama", "gpt2", "opt"] {
            let spec = Shape { arch: arch.into(), layers: 2, d_model: 48, heads: 4, kv_heads: None, ffn: None, max_positions: 64, tie_embeddings: true };
            let cfg = ModelConfig::scratch(&spec, 100).unwrap();
            let again = ModelConfig::from_hf(cfg.hf.clone()).unwrap();
            assert_eq!((again.hidden, again.layers, again.head_dim), (48, 2, 12));
            assert_eq!(again.ffn, if arch == "llama" { 128 } else { 192 });
        }
    }
}
