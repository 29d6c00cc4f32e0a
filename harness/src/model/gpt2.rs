//! GPT-2: LayerNorm, learned positions, GELU MLP, output head tied to the embedding.
//! This file holds all of it: the `config.json` keys, the weights, the forward pass and
//! the ONNX graph.
//!
//! ```text
//! h = wte[ids] + wpe[positions]
//! for each layer:
//!     q, k, v = split(c_attn(ln_1(h)))
//!     h += attn.c_proj(attention(q, k, v))
//!     h += mlp.c_proj(gelu(c_fc(ln_2(h))))
//! logits = ln_f(h) · wteᵀ
//! ```
//! Weight names are Hugging Face's `GPT2LMHeadModel` names; its `Conv1D` layers store
//! weights as `[in, out]`, the transpose of a `Linear`.

use candle_core::{D, Tensor};
use serde_json::{Value, json};

use super::config::{Keys, ModelConfig, Shape};
use super::{Activation, Arch, Family, Forward, Init, KvCache, ModelError, Params, WeightSpec, activate, attend, conv1d, embed, linear, ops};
use super::OnnxBuilder;
use super::plan::{Block, Linear, Mlp, Norm, NormKind, Plan, Qkv, Stored};

/// The GPT-2 family (`model_type` `gpt2`).
pub(crate) struct Gpt2;

impl Family for Gpt2 {
    fn model_type(&self) -> &'static str {
        "gpt2"
    }

    fn config(&self, keys: &Keys) -> Result<ModelConfig, ModelError> {
        let hidden = keys.usize("n_embd")?;
        let heads = keys.usize("n_head")?;
        for (key, expected) in [
            ("scale_attn_by_inverse_layer_idx", false),
            ("reorder_and_upcast_attn", false),
            ("scale_attn_weights", true),
        ] {
            if keys.bool_or(key, expected)? != expected {
                return Err(ModelError::Config(format!("`{key}` = {} is not supported (only {expected})", !expected)));
            }
        }
        Ok(ModelConfig {
            vocab_size: keys.usize("vocab_size")?,
            layers: keys.usize("n_layer")?,
            ffn: keys.usize_or("n_inner", 4 * hidden)?,
            max_positions: keys.usize("n_positions")?,
            norm_eps: keys.f64_or("layer_norm_epsilon", 1e-5)?,
            activation: Activation::parse(&keys.string_or("activation_function", "gelu_new")?)?,
            ..ModelConfig::new(Arch::Gpt2, hidden, heads)
        })
    }

    fn scratch_hf(&self, spec: &Shape, vocab: usize) -> Value {
        let d = spec.d_model;
        json!({
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
        })
    }

    fn layers_key(&self) -> &'static str {
        "n_layer"
    }

    fn is_buffer(&self, name: &str) -> bool {
        name.ends_with(".attn.bias") && name.starts_with("transformer.h.") || name.ends_with(".attn.masked_bias")
    }

    fn block_prefix(&self, i: usize) -> String {
        format!("transformer.h.{i}.")
    }

    fn weight_specs(&self, cfg: &ModelConfig) -> Vec<WeightSpec> {
        let (d, v) = (cfg.hidden, cfg.vocab_size);
        let mut specs = vec![
            WeightSpec::new("transformer.wte.weight", [v, d], Init::Normal),
            WeightSpec::new("transformer.wpe.weight", [cfg.max_positions, d], Init::Normal),
        ];
        for i in 0..cfg.layers {
            let prefix = self.block_prefix(i);
            let p = |name: &str| format!("{prefix}{name}");
            specs.extend([
                WeightSpec::new(p("ln_1.weight"), [d], Init::Ones),
                WeightSpec::new(p("ln_1.bias"), [d], Init::Zeros),
                WeightSpec::new(p("attn.c_attn.weight"), [d, 3 * d], Init::Normal),
                WeightSpec::new(p("attn.c_attn.bias"), [3 * d], Init::Zeros),
                WeightSpec::new(p("attn.c_proj.weight"), [d, d], Init::Residual),
                WeightSpec::new(p("attn.c_proj.bias"), [d], Init::Zeros),
                WeightSpec::new(p("ln_2.weight"), [d], Init::Ones),
                WeightSpec::new(p("ln_2.bias"), [d], Init::Zeros),
                WeightSpec::new(p("mlp.c_fc.weight"), [d, cfg.ffn], Init::Normal),
                WeightSpec::new(p("mlp.c_fc.bias"), [cfg.ffn], Init::Zeros),
                WeightSpec::new(p("mlp.c_proj.weight"), [cfg.ffn, d], Init::Residual),
                WeightSpec::new(p("mlp.c_proj.bias"), [d], Init::Zeros),
            ]);
        }
        specs.push(WeightSpec::new("transformer.ln_f.weight", [d], Init::Ones));
        specs.push(WeightSpec::new("transformer.ln_f.bias", [d], Init::Zeros));
        specs
    }

    fn forward(&self, cfg: &ModelConfig, p: &Params, x: &Forward, mut cache: Option<&mut KvCache>) -> candle_core::Result<Tensor> {
        let (b, s) = x.ids.dims2()?;
        let (heads, hd, d) = (cfg.heads, cfg.head_dim, cfg.hidden);
        let wte = p.get("transformer.wte.weight")?;
        let mut h = (embed(p.table("transformer.wte.weight")?, x.ids)? + embed(p.table("transformer.wpe.weight")?, x.positions)?)?;
        for i in 0..cfg.layers {
            let prefix = self.block_prefix(i);
            let w = |name: &str| p.get(&format!("{prefix}{name}"));
            let conv = |t: &Tensor, name: &str| conv1d(t, w(&format!("{name}.weight"))?, w(&format!("{name}.bias"))?);
            let norm = |t: &Tensor, name: &str| {
                ops::layer_norm(t, w(&format!("{name}.weight"))?, w(&format!("{name}.bias"))?, cfg.norm_eps)
            };

            let qkv = conv(&norm(&h, "ln_1")?, "attn.c_attn")?;
            let split = |j: usize| qkv.narrow(D::Minus1, j * d, d)?.reshape((b, s, heads, hd))?.transpose(1, 2);
            let (q, k, v) = (split(0)?, split(1)?, split(2)?);
            let a = attend(x, i, cache.as_deref_mut(), &q, k, v, 1)?;
            h = (h + conv(&a, "attn.c_proj")?)?;

            let m = activate(cfg.activation, &conv(&norm(&h, "ln_2")?, "mlp.c_fc")?)?;
            h = (&h + conv(&m, "mlp.c_proj")?)?;
        }
        let h = ops::layer_norm(&h, p.get("transformer.ln_f.weight")?, p.get("transformer.ln_f.bias")?, cfg.norm_eps)?;
        linear(&h, wte, None)
    }

    fn plan(&self, cfg: &ModelConfig) -> Result<Plan, String> {
        let blocks = (0..cfg.layers)
            .map(|i| {
                let p = self.block_prefix(i);
                let conv = |name: &str| Linear::new(&format!("{p}{name}"), true, Stored::InOut);
                Block {
                    attn_norm: Norm::new(&format!("{p}ln_1"), NormKind::Layer),
                    qkv: Qkv::Fused(conv("attn.c_attn")),
                    out: conv("attn.c_proj"),
                    mlp_norm: Norm::new(&format!("{p}ln_2"), NormKind::Layer),
                    mlp: Mlp::Plain { up: conv("mlp.c_fc"), down: conv("mlp.c_proj") },
                }
            })
            .collect();
        Ok(Plan {
            norm: NormKind::Layer,
            tokens: "transformer.wte.weight".into(),
            positions: Some(("transformer.wpe.weight".into(), 0)),
            rope: false,
            blocks,
            final_norm: Norm::new("transformer.ln_f", NormKind::Layer),
            head: "transformer.wte.weight".into(),
        })
    }

    fn emit_onnx(&self, b: &mut OnnxBuilder, ids: &str, positions: &str) {
        let cfg = b.cfg;
        let tokens = b.gather("transformer.wte.weight", ids);
        let pos = b.gather("transformer.wpe.weight", positions);
        let mut h = b.add(&tokens, &pos);
        for i in 0..cfg.layers {
            let p = self.block_prefix(i);
            let n = b.layer_norm(&h, &format!("{p}ln_1"));
            let qkv = b.conv1d(&n, &format!("{p}attn.c_attn"));
            let d = cfg.hidden as i64;
            let split = b.g.const_i64(&[3], &[d, d, d]);
            let (q, k, v) = b.split3(&qkv, &split);
            let a = b.attention(i, &q, &k, &v, None);
            let o = b.conv1d(&a, &format!("{p}attn.c_proj"));
            h = b.add(&h, &o);
            let n = b.layer_norm(&h, &format!("{p}ln_2"));
            let f = b.conv1d(&n, &format!("{p}mlp.c_fc"));
            let f = b.activation(&f);
            let down = b.conv1d(&f, &format!("{p}mlp.c_proj"));
            h = b.add(&h, &down);
        }
        let h = b.layer_norm(&h, "transformer.ln_f");
        b.logits(&h, "transformer.wte.weight");
    }
}
