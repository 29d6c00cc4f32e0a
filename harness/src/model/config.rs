//! Model configuration, read from and written to Hugging Face `config.json`.
//!
//! Every architecture is described by one [`ModelConfig`]; the Hugging Face JSON it came
//! from is kept verbatim so that saving a trained model writes back every key a user's
//! checkpoint had (tokenizer ids, generation settings, ...), not just the ones we read.

use std::path::Path;

use serde::Serialize;
use serde_json::{Map, Value, json};

use super::ModelError;

/// The decoder families the training engine implements (SPEC §5.1).
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
    /// Hugging Face `model_type`.
    pub fn model_type(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Gpt2 => "gpt2",
            Arch::Opt => "opt",
        }
    }

    /// Every architecture by name, for messages.
    pub const ALL: [Arch; 3] = [Arch::Llama, Arch::Gpt2, Arch::Opt];
}

impl std::str::FromStr for Arch {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, ModelError> {
        Arch::ALL.into_iter().find(|a| a.model_type() == s).ok_or_else(|| {
            ModelError::Config(format!(
                "model_type `{s}` is not supported; supported: llama, gpt2, opt{}",
                crate::util::did_you_mean(s, Arch::ALL.iter().map(|a| a.model_type()))
            ))
        })
    }
}

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
    fn parse(name: &str) -> Result<Self, ModelError> {
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
        let eos_token_id = match hf.get("eos_token_id") {
            Some(Value::Number(n)) => n.as_u64().map(|n| n as u32),
            Some(Value::Array(ids)) => ids.first().and_then(Value::as_u64).map(|n| n as u32),
            _ => None,
        };
        let mut cfg = match arch {
            Arch::Llama => {
                if !matches!(hf.get("rope_scaling"), None | Some(Value::Null)) {
                    return Err(ModelError::Config(
                        "`rope_scaling` is set; scaled RoPE variants are not supported".into(),
                    ));
                }
                let hidden = keys.usize("hidden_size")?;
                let heads = keys.usize("num_attention_heads")?;
                ModelConfig {
                    arch,
                    vocab_size: keys.usize("vocab_size")?,
                    hidden,
                    layers: keys.usize("num_hidden_layers")?,
                    heads,
                    kv_heads: keys.usize_or("num_key_value_heads", heads)?,
                    head_dim: keys.usize_or("head_dim", hidden / heads.max(1))?,
                    ffn: keys.usize("intermediate_size")?,
                    max_positions: keys.usize_or("max_position_embeddings", 2048)?,
                    norm_eps: keys.f64_or("rms_norm_eps", 1e-6)?,
                    rope_theta: keys.f64_or("rope_theta", 10000.0)?,
                    tie_embeddings: keys.bool_or("tie_word_embeddings", false)?,
                    activation: Activation::parse(&keys.string_or("hidden_act", "silu")?)?,
                    attention_bias: keys.bool_or("attention_bias", false)?,
                    mlp_bias: keys.bool_or("mlp_bias", false)?,
                    pre_norm: true,
                    embed_dim: hidden,
                    eos_token_id,
                    hf: Map::new(),
                }
            }
            Arch::Gpt2 => {
                let hidden = keys.usize("n_embd")?;
                let heads = keys.usize("n_head")?;
                for (key, expected) in [
                    ("scale_attn_by_inverse_layer_idx", false),
                    ("reorder_and_upcast_attn", false),
                    ("scale_attn_weights", true),
                ] {
                    if keys.bool_or(key, expected)? != expected {
                        return Err(ModelError::Config(format!(
                            "`{key}` = {} is not supported (only {expected})",
                            !expected
                        )));
                    }
                }
                ModelConfig {
                    arch,
                    vocab_size: keys.usize("vocab_size")?,
                    hidden,
                    layers: keys.usize("n_layer")?,
                    heads,
                    kv_heads: heads,
                    head_dim: hidden / heads.max(1),
                    ffn: keys.usize_or("n_inner", 4 * hidden)?,
                    max_positions: keys.usize("n_positions")?,
                    norm_eps: keys.f64_or("layer_norm_epsilon", 1e-5)?,
                    rope_theta: 0.0,
                    tie_embeddings: true,
                    activation: Activation::parse(
                        &keys.string_or("activation_function", "gelu_new")?,
                    )?,
                    attention_bias: true,
                    mlp_bias: true,
                    pre_norm: true,
                    embed_dim: hidden,
                    eos_token_id,
                    hf: Map::new(),
                }
            }
            Arch::Opt => {
                let hidden = keys.usize("hidden_size")?;
                let heads = keys.usize("num_attention_heads")?;
                if !keys.bool_or("enable_bias", true)? {
                    return Err(ModelError::Config("OPT with `enable_bias` = false is not supported".into()));
                }
                if !keys.bool_or("layer_norm_elementwise_affine", true)? {
                    return Err(ModelError::Config(
                        "OPT with `layer_norm_elementwise_affine` = false is not supported".into(),
                    ));
                }
                ModelConfig {
                    arch,
                    vocab_size: keys.usize("vocab_size")?,
                    hidden,
                    layers: keys.usize("num_hidden_layers")?,
                    heads,
                    kv_heads: heads,
                    head_dim: hidden / heads.max(1),
                    ffn: keys.usize("ffn_dim")?,
                    max_positions: keys.usize("max_position_embeddings")?,
                    norm_eps: 1e-5,
                    rope_theta: 0.0,
                    tie_embeddings: keys.bool_or("tie_word_embeddings", true)?,
                    activation: Activation::parse(&keys.string_or("activation_function", "relu")?)?,
                    attention_bias: true,
                    mlp_bias: true,
                    pre_norm: keys.bool_or("do_layer_norm_before", true)?,
                    embed_dim: keys.usize_or("word_embed_proj_dim", hidden)?,
                    eos_token_id,
                    hf: Map::new(),
                }
            }
        };
        cfg.hf = hf;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), ModelError> {
        let bad = |msg: String| Err(ModelError::Config(msg));
        if self.vocab_size == 0 || self.hidden == 0 || self.layers == 0 || self.heads == 0 {
            return bad("vocab, hidden size, layers and heads must all be positive".into());
        }
        if self.kv_heads == 0 || self.heads % self.kv_heads != 0 {
            return bad(format!(
                "{} attention heads cannot be shared by {} key/value heads (must divide)",
                self.heads, self.kv_heads
            ));
        }
        if self.arch != Arch::Llama && self.hidden % self.heads != 0 {
            return bad(format!("hidden size {} is not divisible by {} heads", self.hidden, self.heads));
        }
        if self.arch == Arch::Llama && self.head_dim % 2 != 0 {
            return bad(format!("RoPE needs an even head width, got {}", self.head_dim));
        }
        Ok(())
    }

    /// A from-scratch config in Hugging Face form, with `vocab` tokens.
    pub fn scratch(spec: &Shape, vocab: usize) -> Result<Self, ModelError> {
        let arch: Arch = spec.arch.parse()?;
        let d = spec.d_model;
        let hf = match arch {
            Arch::Llama => json!({
                "architectures": ["LlamaForCausalLM"],
                "model_type": "llama",
                "vocab_size": vocab,
                "hidden_size": d,
                "intermediate_size": spec.ffn.unwrap_or((8 * d / 3).div_ceil(8) * 8),
                "num_hidden_layers": spec.layers,
                "num_attention_heads": spec.heads,
                "num_key_value_heads": spec.kv_heads.unwrap_or(spec.heads),
                "max_position_embeddings": spec.max_positions,
                "rms_norm_eps": 1e-5,
                "rope_theta": 10000.0,
                "hidden_act": "silu",
                "tie_word_embeddings": spec.tie_embeddings,
                "attention_bias": false,
                "mlp_bias": false,
                "bos_token_id": 0,
                "eos_token_id": 0,
                "torch_dtype": "float32",
            }),
            Arch::Gpt2 => json!({
                "architectures": ["GPT2LMHeadModel"],
                "model_type": "gpt2",
                "vocab_size": vocab,
                "n_embd": d,
                "n_layer": spec.layers,
                "n_head": spec.heads,
                "n_inner": spec.ffn.unwrap_or(4 * d),
                "n_positions": spec.max_positions,
                "layer_norm_epsilon": 1e-5,
                "activation_function": "gelu_new",
                "bos_token_id": 0,
                "eos_token_id": 0,
                "torch_dtype": "float32",
            }),
            Arch::Opt => json!({
                "architectures": ["OPTForCausalLM"],
                "model_type": "opt",
                "vocab_size": vocab,
                "hidden_size": d,
                "word_embed_proj_dim": d,
                "num_hidden_layers": spec.layers,
                "num_attention_heads": spec.heads,
                "ffn_dim": spec.ffn.unwrap_or(4 * d),
                "max_position_embeddings": spec.max_positions,
                "do_layer_norm_before": true,
                "activation_function": "relu",
                "enable_bias": true,
                "tie_word_embeddings": true,
                "bos_token_id": 0,
                "eos_token_id": 0,
                "pad_token_id": 1,
                "torch_dtype": "float32",
            }),
        };
        let Value::Object(hf) = hf else { unreachable!("json! object literal") };
        Self::from_hf(hf)
    }

    /// The same config with only `layers` blocks (a student cut from a deeper teacher).
    pub fn with_layers(&self, layers: usize) -> Self {
        let mut cfg = self.clone();
        cfg.layers = layers;
        let key = if self.arch == Arch::Gpt2 { "n_layer" } else { "num_hidden_layers" };
        cfg.hf.insert(key.into(), json!(layers));
        cfg
    }

    /// Writes `DIR/config.json` atomically.
    pub fn save(&self, dir: &Path) -> Result<(), ModelError> {
        let mut text = serde_json::to_string_pretty(&Value::Object(self.hf.clone()))
            .expect("a JSON map always serialises");
        text.push('\n');
        let path = dir.join("config.json");
        crate::util::write_atomic(&path, text.as_bytes())
            .map_err(|e| ModelError::io(format!("cannot write {}", path.display()), e))
    }

    /// How many query heads share one key/value head.
    pub fn kv_groups(&self) -> usize {
        self.heads / self.kv_heads
    }
}

/// Typed access to config keys with errors that name the key.
struct Keys<'a>(&'a Map<String, Value>);

impl Keys<'_> {
    fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key).filter(|v| !v.is_null())
    }
    fn missing(key: &str) -> ModelError {
        ModelError::Config(format!("missing key `{key}`"))
    }
    fn wrong(key: &str, what: &str, v: &Value) -> ModelError {
        ModelError::Config(format!("key `{key}` should be {what}, found {v}"))
    }
    fn usize(&self, key: &str) -> Result<usize, ModelError> {
        let v = self.get(key).ok_or_else(|| Self::missing(key))?;
        v.as_u64().map(|n| n as usize).ok_or_else(|| Self::wrong(key, "a non-negative integer", v))
    }
    fn usize_or(&self, key: &str, default: usize) -> Result<usize, ModelError> {
        if self.get(key).is_some() { self.usize(key) } else { Ok(default) }
    }
    fn f64_or(&self, key: &str, default: f64) -> Result<f64, ModelError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.as_f64().ok_or_else(|| Self::wrong(key, "a number", v)),
        }
    }
    fn bool_or(&self, key: &str, default: bool) -> Result<bool, ModelError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v.as_bool().ok_or_else(|| Self::wrong(key, "true or false", v)),
        }
    }
    fn string(&self, key: &str) -> Result<String, ModelError> {
        let v = self.get(key).ok_or_else(|| Self::missing(key))?;
        v.as_str().map(str::to_owned).ok_or_else(|| Self::wrong(key, "a string", v))
    }
    fn string_or(&self, key: &str, default: &str) -> Result<String, ModelError> {
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
