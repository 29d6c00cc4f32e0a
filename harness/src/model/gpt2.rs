//! GPT-2: LayerNorm, learned positions, GELU MLP, output head tied to the embedding.
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

use candle_core::{D, Result, Tensor};

use super::config::ModelConfig;
use super::{embed, Forward, Init, KvCache, ParamSpec, Params, conv1d, linear, ops};

/// Every weight of the model, with its shape and initialisation.
pub fn param_specs(cfg: &ModelConfig) -> Vec<ParamSpec> {
    let (d, v) = (cfg.hidden, cfg.vocab_size);
    let mut specs = vec![
        ParamSpec::new("transformer.wte.weight", [v, d], Init::Normal),
        ParamSpec::new("transformer.wpe.weight", [cfg.max_positions, d], Init::Normal),
    ];
    for i in 0..cfg.layers {
        let p = |name: &str| format!("transformer.h.{i}.{name}");
        specs.extend([
            ParamSpec::new(p("ln_1.weight"), [d], Init::Ones),
            ParamSpec::new(p("ln_1.bias"), [d], Init::Zeros),
            ParamSpec::new(p("attn.c_attn.weight"), [d, 3 * d], Init::Normal),
            ParamSpec::new(p("attn.c_attn.bias"), [3 * d], Init::Zeros),
            ParamSpec::new(p("attn.c_proj.weight"), [d, d], Init::Residual),
            ParamSpec::new(p("attn.c_proj.bias"), [d], Init::Zeros),
            ParamSpec::new(p("ln_2.weight"), [d], Init::Ones),
            ParamSpec::new(p("ln_2.bias"), [d], Init::Zeros),
            ParamSpec::new(p("mlp.c_fc.weight"), [d, cfg.ffn], Init::Normal),
            ParamSpec::new(p("mlp.c_fc.bias"), [cfg.ffn], Init::Zeros),
            ParamSpec::new(p("mlp.c_proj.weight"), [cfg.ffn, d], Init::Residual),
            ParamSpec::new(p("mlp.c_proj.bias"), [d], Init::Zeros),
        ]);
    }
    specs.push(ParamSpec::new("transformer.ln_f.weight", [d], Init::Ones));
    specs.push(ParamSpec::new("transformer.ln_f.bias", [d], Init::Zeros));
    specs
}

/// Logits `[b, s, vocab]` for token ids `[b, s]`.
pub fn forward(cfg: &ModelConfig, p: &Params, x: &Forward, mut cache: Option<&mut KvCache>) -> Result<Tensor> {
    let (b, s) = x.ids.dims2()?;
    let (heads, hd, d) = (cfg.heads, cfg.head_dim, cfg.hidden);
    let wte = p.get("transformer.wte.weight")?;
    let mut h = (embed(wte, x.ids)? + embed(p.get("transformer.wpe.weight")?, x.positions)?)?;
    for i in 0..cfg.layers {
        let w = |name: &str| p.get(&format!("transformer.h.{i}.{name}"));
        let conv = |t: &Tensor, name: &str| conv1d(t, w(&format!("{name}.weight"))?, w(&format!("{name}.bias"))?);
        let norm = |t: &Tensor, name: &str| {
            ops::layer_norm(t, w(&format!("{name}.weight"))?, w(&format!("{name}.bias"))?, cfg.norm_eps)
        };

        let qkv = conv(&norm(&h, "ln_1")?, "attn.c_attn")?;
        let split = |j: usize| qkv.narrow(D::Minus1, j * d, d)?.reshape((b, s, heads, hd))?.transpose(1, 2);
        let (q, k, v) = (split(0)?, split(1)?, split(2)?);
        let (k, v) = match cache.as_deref_mut() {
            Some(cache) => cache.append(i, k, v)?,
            None => (k, v),
        };
        let a = ops::attention(&q, &k, &v, x.bias, 1.0 / (hd as f64).sqrt(), 1)?;
        let a = a.transpose(1, 2)?.reshape((b, s, d))?;
        h = (h + conv(&a, "attn.c_proj")?)?;

        let m = super::activate(cfg.activation, &conv(&norm(&h, "ln_2")?, "mlp.c_fc")?)?;
        h = (&h + conv(&m, "mlp.c_proj")?)?;
    }
    let h = ops::layer_norm(&h, p.get("transformer.ln_f.weight")?, p.get("transformer.ln_f.bias")?, cfg.norm_eps)?;
    linear(&h, wte, None)
}
