//! OPT: LayerNorm, learned positions offset by 2, ReLU MLP, tied output head.
//! This file holds all of it: the `config.json` keys, the weights, the forward pass and
//! the ONNX graph.
//!
//! ```text
//! h = project_in(embed_tokens[ids]) + embed_positions[positions + 2]
//! for each layer (pre-norm; OPT-350m normalises after each sub-layer instead):
//!     h += out_proj(attention(q_proj(ln(h)) , k_proj(ln(h)), v_proj(ln(h))))
//!     h += fc2(relu(fc1(final_layer_norm(h))))
//! logits = project_out(final_layer_norm(h)) · embed_tokensᵀ
//! ```
//! Weight names are Hugging Face's `OPTForCausalLM` names.

use candle_core::Tensor;
use serde_json::{Value, json};

use super::config::{Keys, ModelConfig, Shape};
use super::{Activation, Arch, Family, Forward, Init, KvCache, ModelError, Params, WeightSpec, activate, attend, embed, linear, ops};
use super::OnnxBuilder;
use super::plan::{Block, Linear, Mlp, Norm, NormKind, Plan, Qkv, Stored};

/// OPT's learned position table starts two rows in (a fairseq legacy).
pub const POSITION_OFFSET: usize = 2;

/// The OPT family (`model_type` `opt`).
pub(crate) struct Opt;

impl Family for Opt {
    fn model_type(&self) -> &'static str {
        "opt"
    }

    fn config(&self, keys: &Keys) -> Result<ModelConfig, ModelError> {
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
        Ok(ModelConfig {
            vocab_size: keys.usize("vocab_size")?,
            layers: keys.usize("num_hidden_layers")?,
            ffn: keys.usize("ffn_dim")?,
            max_positions: keys.usize("max_position_embeddings")?,
            tie_embeddings: keys.bool_or("tie_word_embeddings", true)?,
            activation: Activation::parse(&keys.string_or("activation_function", "relu")?)?,
            pre_norm: keys.bool_or("do_layer_norm_before", true)?,
            embed_dim: keys.usize_or("word_embed_proj_dim", hidden)?,
            ..ModelConfig::new(Arch::Opt, hidden, heads)
        })
    }

    fn scratch_hf(&self, spec: &Shape, vocab: usize) -> Value {
        let d = spec.d_model;
        json!({
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
        })
    }

    fn block_prefix(&self, i: usize) -> String {
        format!("model.decoder.layers.{i}.")
    }

    fn weight_specs(&self, cfg: &ModelConfig) -> Vec<WeightSpec> {
        let (d, e, v) = (cfg.hidden, cfg.embed_dim, cfg.vocab_size);
        let mut specs = vec![
            WeightSpec::new("model.decoder.embed_tokens.weight", [v, e], Init::Normal),
            WeightSpec::new("model.decoder.embed_positions.weight", [cfg.max_positions + POSITION_OFFSET, d], Init::Normal),
        ];
        if e != d {
            specs.push(WeightSpec::new("model.decoder.project_in.weight", [d, e], Init::Normal));
            specs.push(WeightSpec::new("model.decoder.project_out.weight", [e, d], Init::Normal));
        }
        for i in 0..cfg.layers {
            let prefix = self.block_prefix(i);
            let p = |name: &str| format!("{prefix}{name}");
            for proj in ["k_proj", "v_proj", "q_proj"] {
                specs.push(WeightSpec::new(p(&format!("self_attn.{proj}.weight")), [d, d], Init::Normal));
                specs.push(WeightSpec::new(p(&format!("self_attn.{proj}.bias")), [d], Init::Zeros));
            }
            specs.extend([
                WeightSpec::new(p("self_attn.out_proj.weight"), [d, d], Init::Residual),
                WeightSpec::new(p("self_attn.out_proj.bias"), [d], Init::Zeros),
                WeightSpec::new(p("self_attn_layer_norm.weight"), [d], Init::Ones),
                WeightSpec::new(p("self_attn_layer_norm.bias"), [d], Init::Zeros),
                WeightSpec::new(p("fc1.weight"), [cfg.ffn, d], Init::Normal),
                WeightSpec::new(p("fc1.bias"), [cfg.ffn], Init::Zeros),
                WeightSpec::new(p("fc2.weight"), [d, cfg.ffn], Init::Residual),
                WeightSpec::new(p("fc2.bias"), [d], Init::Zeros),
                WeightSpec::new(p("final_layer_norm.weight"), [d], Init::Ones),
                WeightSpec::new(p("final_layer_norm.bias"), [d], Init::Zeros),
            ]);
        }
        // OPT-350m (post-norm) has no final layer norm.
        if cfg.pre_norm {
            specs.push(WeightSpec::new("model.decoder.final_layer_norm.weight", [d], Init::Ones));
            specs.push(WeightSpec::new("model.decoder.final_layer_norm.bias", [d], Init::Zeros));
        }
        if !cfg.tie_embeddings {
            specs.push(WeightSpec::new("lm_head.weight", [v, e], Init::Normal));
        }
        specs
    }

    fn forward(&self, cfg: &ModelConfig, p: &Params, x: &Forward, mut cache: Option<&mut KvCache>) -> candle_core::Result<Tensor> {
        let (b, s) = x.ids.dims2()?;
        let (heads, hd) = (cfg.heads, cfg.head_dim);
        let mut h = embed(p.table("model.decoder.embed_tokens.weight")?, x.ids)?;
        if let Some(w) = p.maybe("model.decoder.project_in.weight") {
            h = linear(&h, w, None)?;
        }
        let positions = x.positions.affine(1.0, POSITION_OFFSET as f64)?;
        h = (h + embed(p.table("model.decoder.embed_positions.weight")?, &positions)?)?;
        for i in 0..cfg.layers {
            let prefix = self.block_prefix(i);
            let w = |name: &str| p.get(&format!("{prefix}{name}"));
            let proj = |t: &Tensor, name: &str| linear(t, w(&format!("{name}.weight"))?, Some(w(&format!("{name}.bias"))?));
            let norm = |t: &Tensor, name: &str| {
                ops::layer_norm(t, w(&format!("{name}.weight"))?, w(&format!("{name}.bias"))?, cfg.norm_eps)
            };

            let n = if cfg.pre_norm { norm(&h, "self_attn_layer_norm")? } else { h.clone() };
            let split = |t: Tensor| t.reshape((b, s, heads, hd))?.transpose(1, 2);
            let q = split(proj(&n, "self_attn.q_proj")?)?;
            let k = split(proj(&n, "self_attn.k_proj")?)?;
            let v = split(proj(&n, "self_attn.v_proj")?)?;
            let a = attend(x, i, cache.as_deref_mut(), &q, k, v, 1)?;
            h = (h + proj(&a, "self_attn.out_proj")?)?;
            if !cfg.pre_norm {
                h = norm(&h, "self_attn_layer_norm")?;
            }

            let n = if cfg.pre_norm { norm(&h, "final_layer_norm")? } else { h.clone() };
            let m = activate(cfg.activation, &proj(&n, "fc1")?)?;
            h = (&h + proj(&m, "fc2")?)?;
            if !cfg.pre_norm {
                h = norm(&h, "final_layer_norm")?;
            }
        }
        if cfg.pre_norm {
            h = ops::layer_norm(
                &h,
                p.get("model.decoder.final_layer_norm.weight")?,
                p.get("model.decoder.final_layer_norm.bias")?,
                cfg.norm_eps,
            )?;
        }
        if let Some(w) = p.maybe("model.decoder.project_out.weight") {
            h = linear(&h, w, None)?;
        }
        let head = p.get(if cfg.tie_embeddings { "model.decoder.embed_tokens.weight" } else { "lm_head.weight" })?;
        linear(&h, head, None)
    }

    fn plan(&self, cfg: &ModelConfig) -> Result<Plan, String> {
        if !cfg.pre_norm {
            return Err("OPT with post-norm blocks (`do_layer_norm_before` = false)".into());
        }
        if cfg.embed_dim != cfg.hidden {
            return Err("OPT with projected embeddings (`word_embed_proj_dim` ≠ `hidden_size`)".into());
        }
        let blocks = (0..cfg.layers)
            .map(|i| {
                let p = self.block_prefix(i);
                let linear = |name: &str| Linear::new(&format!("{p}{name}"), true, Stored::OutIn);
                Block {
                    attn_norm: Norm::new(&format!("{p}self_attn_layer_norm"), NormKind::Layer),
                    qkv: Qkv::Separate { q: linear("self_attn.q_proj"), k: linear("self_attn.k_proj"), v: linear("self_attn.v_proj") },
                    out: linear("self_attn.out_proj"),
                    mlp_norm: Norm::new(&format!("{p}final_layer_norm"), NormKind::Layer),
                    mlp: Mlp::Plain { up: linear("fc1"), down: linear("fc2") },
                }
            })
            .collect();
        Ok(Plan {
            norm: NormKind::Layer,
            tokens: "model.decoder.embed_tokens.weight".into(),
            positions: Some(("model.decoder.embed_positions.weight".into(), POSITION_OFFSET)),
            rope: false,
            blocks,
            final_norm: Norm::new("model.decoder.final_layer_norm", NormKind::Layer),
            head: if cfg.tie_embeddings { "model.decoder.embed_tokens.weight" } else { "lm_head.weight" }.into(),
        })
    }

    fn emit_onnx(&self, b: &mut OnnxBuilder, ids: &str, positions: &str) {
        let cfg = b.cfg;
        let mut tokens = b.gather("model.decoder.embed_tokens.weight", ids);
        if cfg.embed_dim != cfg.hidden {
            tokens = b.linear(&tokens, "model.decoder.project_in", false);
        }
        let offset = b.g.const_i64(&[], &[POSITION_OFFSET as i64]);
        let shifted = b.add(positions, &offset);
        let pos = b.gather("model.decoder.embed_positions.weight", &shifted);
        let mut h = b.add(&tokens, &pos);
        let pre = cfg.pre_norm;
        for i in 0..cfg.layers {
            let p = self.block_prefix(i);
            let n = if pre { b.layer_norm(&h, &format!("{p}self_attn_layer_norm")) } else { h.clone() };
            let q = b.linear(&n, &format!("{p}self_attn.q_proj"), true);
            let k = b.linear(&n, &format!("{p}self_attn.k_proj"), true);
            let v = b.linear(&n, &format!("{p}self_attn.v_proj"), true);
            let a = b.attention(i, &q, &k, &v, None);
            let o = b.linear(&a, &format!("{p}self_attn.out_proj"), true);
            h = b.add(&h, &o);
            if !pre {
                h = b.layer_norm(&h, &format!("{p}self_attn_layer_norm"));
            }
            let n = if pre { b.layer_norm(&h, &format!("{p}final_layer_norm")) } else { h.clone() };
            let f = b.linear(&n, &format!("{p}fc1"), true);
            let f = b.activation(&f);
            let down = b.linear(&f, &format!("{p}fc2"), true);
            h = b.add(&h, &down);
            if !pre {
                h = b.layer_norm(&h, &format!("{p}final_layer_norm"));
            }
        }
        if pre {
            h = b.layer_norm(&h, "model.decoder.final_layer_norm");
        }
        if cfg.embed_dim != cfg.hidden {
            h = b.linear(&h, "model.decoder.project_out", false);
        }
        b.logits(&h, if cfg.tie_embeddings { "model.decoder.embed_tokens.weight" } else { "lm_head.weight" });
    }
}
