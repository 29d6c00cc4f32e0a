//! LLaMA-style decoder: RMSNorm, rotary positions, grouped-query attention, SiLU-gated MLP.
//!
//! ```text
//! h = embed_tokens[ids]
//! for each layer:
//!     h += o_proj(attention(rope(q_proj(rms(h))), rope(k_proj(rms(h))), v_proj(rms(h))))
//!     h += down_proj(silu(gate_proj(rms(h))) · up_proj(rms(h)))
//! logits = lm_head(rms(h))            (lm_head = embed_tokens when tied)
//! ```
//! Weight names are Hugging Face's `LlamaForCausalLM` names.

use candle_core::{Result, Tensor};

use super::config::ModelConfig;
use super::{embed, Forward, Init, KvCache, ParamSpec, Params, linear, ops};

/// Every weight of the model, with its shape and initialisation.
pub fn param_specs(cfg: &ModelConfig) -> Vec<ParamSpec> {
    let (d, hd, v) = (cfg.hidden, cfg.head_dim, cfg.vocab_size);
    let mut specs = vec![ParamSpec::new("model.embed_tokens.weight", [v, d], Init::Normal)];
    for i in 0..cfg.layers {
        let p = |name: &str| format!("model.layers.{i}.{name}");
        specs.push(ParamSpec::new(p("input_layernorm.weight"), [d], Init::Ones));
        for (proj, out) in [("q_proj", cfg.heads * hd), ("k_proj", cfg.kv_heads * hd), ("v_proj", cfg.kv_heads * hd)] {
            specs.push(ParamSpec::new(p(&format!("self_attn.{proj}.weight")), [out, d], Init::Normal));
            if cfg.attention_bias {
                specs.push(ParamSpec::new(p(&format!("self_attn.{proj}.bias")), [out], Init::Zeros));
            }
        }
        specs.push(ParamSpec::new(p("self_attn.o_proj.weight"), [d, cfg.heads * hd], Init::Residual));
        if cfg.attention_bias {
            specs.push(ParamSpec::new(p("self_attn.o_proj.bias"), [d], Init::Zeros));
        }
        specs.push(ParamSpec::new(p("post_attention_layernorm.weight"), [d], Init::Ones));
        for (proj, shape, init) in [
            ("gate_proj", [cfg.ffn, d], Init::Normal),
            ("up_proj", [cfg.ffn, d], Init::Normal),
            ("down_proj", [d, cfg.ffn], Init::Residual),
        ] {
            specs.push(ParamSpec::new(p(&format!("mlp.{proj}.weight")), shape, init));
            if cfg.mlp_bias {
                specs.push(ParamSpec::new(p(&format!("mlp.{proj}.bias")), [shape[0]], Init::Zeros));
            }
        }
    }
    specs.push(ParamSpec::new("model.norm.weight", [d], Init::Ones));
    if !cfg.tie_embeddings {
        specs.push(ParamSpec::new("lm_head.weight", [v, d], Init::Normal));
    }
    specs
}

/// Logits `[b, s, vocab]` for token ids `[b, s]`.
pub fn forward(cfg: &ModelConfig, p: &Params, x: &Forward, mut cache: Option<&mut KvCache>) -> Result<Tensor> {
    let (b, s) = x.ids.dims2()?;
    let (heads, kv, hd) = (cfg.heads, cfg.kv_heads, cfg.head_dim);
    let (cos, sin) = ops::rope_tables(x.positions, hd, cfg.rope_theta)?;
    let mut h = embed(p.get("model.embed_tokens.weight")?, x.ids)?;
    for i in 0..cfg.layers {
        let w = |name: &str| p.get(&format!("model.layers.{i}.{name}"));
        let proj = |t: &Tensor, name: &str| linear(t, w(&format!("{name}.weight"))?, p.maybe(&format!("model.layers.{i}.{name}.bias")));

        let n = ops::rms_norm(&h, w("input_layernorm.weight")?, cfg.norm_eps)?;
        let split = |t: Tensor, n_heads: usize| t.reshape((b, s, n_heads, hd))?.transpose(1, 2);
        let q = ops::rope(&split(proj(&n, "self_attn.q_proj")?, heads)?, &cos, &sin)?;
        let k = ops::rope(&split(proj(&n, "self_attn.k_proj")?, kv)?, &cos, &sin)?;
        let v = split(proj(&n, "self_attn.v_proj")?, kv)?;
        let (k, v) = match cache.as_deref_mut() {
            Some(cache) => cache.append(i, k, v)?,
            None => (k, v),
        };
        let a = ops::attention(&q, &k, &v, x.bias, 1.0 / (hd as f64).sqrt(), cfg.kv_groups())?;
        let a = a.transpose(1, 2)?.reshape((b, s, heads * hd))?;
        h = (h + proj(&a, "self_attn.o_proj")?)?;

        let n = ops::rms_norm(&h, w("post_attention_layernorm.weight")?, cfg.norm_eps)?;
        let gate = proj(&n, "mlp.gate_proj")?.silu()?;
        h = (&h + proj(&(gate * proj(&n, "mlp.up_proj")?)?, "mlp.down_proj")?)?;
    }
    let h = ops::rms_norm(&h, p.get("model.norm.weight")?, cfg.norm_eps)?;
    let head = if cfg.tie_embeddings { "model.embed_tokens.weight" } else { "lm_head.weight" };
    linear(&h, p.get(head)?, None)
}
