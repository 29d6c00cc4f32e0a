//! LLaMA-style decoder: RMSNorm, rotary positions, grouped-query attention, SiLU-gated MLP.
//! This file holds all of it: the `config.json` keys, the weights, the forward pass and
//! the ONNX graph.
//!
//! ```text
//! h = embed_tokens[ids]
//! for each layer:
//!     h += o_proj(attention(rope(q_proj(rms(h))), rope(k_proj(rms(h))), v_proj(rms(h))))
//!     h += down_proj(silu(gate_proj(rms(h))) · up_proj(rms(h)))
//! logits = lm_head(rms(h))            (lm_head = embed_tokens when tied)
//! ```
//! Weight names are Hugging Face's `LlamaForCausalLM` names.

use candle_core::Tensor;
use serde_json::{Value, json};

use super::config::{Keys, ModelConfig, Shape};
use super::{Activation, Arch, Family, Forward, Init, KvCache, ModelError, Params, WeightSpec, attend, embed, linear, ops};
use super::OnnxBuilder;
use super::plan::{Block, Linear, Mlp, Norm, NormKind, Plan, Qkv, Stored};

/// The LLaMA family (`model_type` `llama`).
pub(crate) struct Llama;

impl Family for Llama {
    fn model_type(&self) -> &'static str {
        "llama"
    }

    fn config(&self, keys: &Keys) -> Result<ModelConfig, ModelError> {
        if keys.get("rope_scaling").is_some() {
            return Err(ModelError::Config(
                "`rope_scaling` is set; scaled RoPE variants are not supported".into(),
            ));
        }
        let hidden = keys.usize("hidden_size")?;
        let heads = keys.usize("num_attention_heads")?;
        Ok(ModelConfig {
            vocab_size: keys.usize("vocab_size")?,
            layers: keys.usize("num_hidden_layers")?,
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
            ..ModelConfig::new(Arch::Llama, hidden, heads)
        })
    }

    fn validate(&self, cfg: &ModelConfig) -> Result<(), ModelError> {
        if !cfg.head_dim.is_multiple_of(2) {
            return Err(ModelError::Config(format!("RoPE needs an even head width, got {}", cfg.head_dim)));
        }
        Ok(())
    }

    fn scratch_hf(&self, spec: &Shape, vocab: usize) -> Value {
        let d = spec.d_model;
        json!({
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
        })
    }

    fn is_buffer(&self, name: &str) -> bool {
        name.ends_with("rotary_emb.inv_freq")
    }

    fn block_prefix(&self, i: usize) -> String {
        format!("model.layers.{i}.")
    }

    fn weight_specs(&self, cfg: &ModelConfig) -> Vec<WeightSpec> {
        let (d, hd, v) = (cfg.hidden, cfg.head_dim, cfg.vocab_size);
        let mut specs = vec![WeightSpec::new("model.embed_tokens.weight", [v, d], Init::Normal)];
        for i in 0..cfg.layers {
            let prefix = self.block_prefix(i);
            let p = |name: &str| format!("{prefix}{name}");
            specs.push(WeightSpec::new(p("input_layernorm.weight"), [d], Init::Ones));
            for (proj, out) in [("q_proj", cfg.heads * hd), ("k_proj", cfg.kv_heads * hd), ("v_proj", cfg.kv_heads * hd)] {
                specs.push(WeightSpec::new(p(&format!("self_attn.{proj}.weight")), [out, d], Init::Normal));
                if cfg.attention_bias {
                    specs.push(WeightSpec::new(p(&format!("self_attn.{proj}.bias")), [out], Init::Zeros));
                }
            }
            specs.push(WeightSpec::new(p("self_attn.o_proj.weight"), [d, cfg.heads * hd], Init::Residual));
            if cfg.attention_bias {
                specs.push(WeightSpec::new(p("self_attn.o_proj.bias"), [d], Init::Zeros));
            }
            specs.push(WeightSpec::new(p("post_attention_layernorm.weight"), [d], Init::Ones));
            for (proj, shape, init) in [
                ("gate_proj", [cfg.ffn, d], Init::Normal),
                ("up_proj", [cfg.ffn, d], Init::Normal),
                ("down_proj", [d, cfg.ffn], Init::Residual),
            ] {
                specs.push(WeightSpec::new(p(&format!("mlp.{proj}.weight")), shape, init));
                if cfg.mlp_bias {
                    specs.push(WeightSpec::new(p(&format!("mlp.{proj}.bias")), [shape[0]], Init::Zeros));
                }
            }
        }
        specs.push(WeightSpec::new("model.norm.weight", [d], Init::Ones));
        if !cfg.tie_embeddings {
            specs.push(WeightSpec::new("lm_head.weight", [v, d], Init::Normal));
        }
        specs
    }

    fn forward(&self, cfg: &ModelConfig, p: &Params, x: &Forward, mut cache: Option<&mut KvCache>) -> candle_core::Result<Tensor> {
        let (b, s) = x.ids.dims2()?;
        let (heads, kv, hd) = (cfg.heads, cfg.kv_heads, cfg.head_dim);
        let (cos, sin) = ops::rope_tables(x.positions, hd, cfg.rope_theta)?;
        let mut h = embed(p.table("model.embed_tokens.weight")?, x.ids)?;
        for i in 0..cfg.layers {
            let prefix = self.block_prefix(i);
            let w = |name: &str| p.get(&format!("{prefix}{name}"));
            let proj = |t: &Tensor, name: &str| linear(t, w(&format!("{name}.weight"))?, p.maybe(&format!("{prefix}{name}.bias")));

            let n = ops::rms_norm(&h, w("input_layernorm.weight")?, cfg.norm_eps)?;
            let split = |t: Tensor, n_heads: usize| t.reshape((b, s, n_heads, hd))?.transpose(1, 2);
            let q = ops::rope(&split(proj(&n, "self_attn.q_proj")?, heads)?, &cos, &sin)?;
            let k = ops::rope(&split(proj(&n, "self_attn.k_proj")?, kv)?, &cos, &sin)?;
            let v = split(proj(&n, "self_attn.v_proj")?, kv)?;
            let a = attend(x, i, cache.as_deref_mut(), &q, k, v, cfg.kv_groups())?;
            h = (h + proj(&a, "self_attn.o_proj")?)?;

            let n = ops::rms_norm(&h, w("post_attention_layernorm.weight")?, cfg.norm_eps)?;
            let gate = proj(&n, "mlp.gate_proj")?.silu()?;
            h = (&h + proj(&(gate * proj(&n, "mlp.up_proj")?)?, "mlp.down_proj")?)?;
        }
        let h = ops::rms_norm(&h, p.get("model.norm.weight")?, cfg.norm_eps)?;
        let head = if cfg.tie_embeddings { "model.embed_tokens.weight" } else { "lm_head.weight" };
        linear(&h, p.get(head)?, None)
    }

    fn plan(&self, cfg: &ModelConfig) -> Result<Plan, String> {
        let blocks = (0..cfg.layers)
            .map(|i| {
                let p = self.block_prefix(i);
                let attn = |name: &str| Linear::new(&format!("{p}self_attn.{name}"), cfg.attention_bias, Stored::OutIn);
                let mlp = |name: &str| Linear::new(&format!("{p}mlp.{name}"), cfg.mlp_bias, Stored::OutIn);
                Block {
                    attn_norm: Norm::new(&format!("{p}input_layernorm"), NormKind::Rms),
                    qkv: Qkv::Separate { q: attn("q_proj"), k: attn("k_proj"), v: attn("v_proj") },
                    out: attn("o_proj"),
                    mlp_norm: Norm::new(&format!("{p}post_attention_layernorm"), NormKind::Rms),
                    mlp: Mlp::Gated { gate: mlp("gate_proj"), up: mlp("up_proj"), down: mlp("down_proj") },
                }
            })
            .collect();
        Ok(Plan {
            norm: NormKind::Rms,
            tokens: "model.embed_tokens.weight".into(),
            positions: None,
            rope: true,
            blocks,
            final_norm: Norm::new("model.norm", NormKind::Rms),
            head: if cfg.tie_embeddings { "model.embed_tokens.weight" } else { "lm_head.weight" }.into(),
        })
    }

    fn emit_onnx(&self, b: &mut OnnxBuilder, ids: &str, positions: &str) {
        let cfg = b.cfg;
        let rope = b.rope_tables(positions);
        let mut h = b.gather("model.embed_tokens.weight", ids);
        for i in 0..cfg.layers {
            let p = self.block_prefix(i);
            let n = b.rms_norm(&h, &format!("{p}input_layernorm.weight"));
            let q = b.linear(&n, &format!("{p}self_attn.q_proj"), cfg.attention_bias);
            let k = b.linear(&n, &format!("{p}self_attn.k_proj"), cfg.attention_bias);
            let v = b.linear(&n, &format!("{p}self_attn.v_proj"), cfg.attention_bias);
            let a = b.attention(i, &q, &k, &v, Some(&rope));
            let o = b.linear(&a, &format!("{p}self_attn.o_proj"), cfg.attention_bias);
            h = b.add(&h, &o);
            let n = b.rms_norm(&h, &format!("{p}post_attention_layernorm.weight"));
            let gate = b.linear(&n, &format!("{p}mlp.gate_proj"), cfg.mlp_bias);
            let gate = b.activation(&gate);
            let up = b.linear(&n, &format!("{p}mlp.up_proj"), cfg.mlp_bias);
            let m = b.mul(&gate, &up);
            let down = b.linear(&m, &format!("{p}mlp.down_proj"), cfg.mlp_bias);
            h = b.add(&h, &down);
        }
        let h = b.rms_norm(&h, "model.norm.weight");
        b.logits(&h, if cfg.tie_embeddings { "model.embed_tokens.weight" } else { "lm_head.weight" });
    }
}
