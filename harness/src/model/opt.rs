//! OPT: LayerNorm, learned positions offset by 2, ReLU MLP, tied output head.
//!
//! ```text
//! h = project_in(embed_tokens[ids]) + embed_positions[positions + 2]
//! for each layer (pre-norm; OPT-350m normalises after each sub-layer instead):
//!     h += out_proj(attention(q_proj(ln(h)) , k_proj(ln(h)), v_proj(ln(h))))
//!     h += fc2(relu(fc1(final_layer_norm(h))))
//! logits = project_out(final_layer_norm(h)) · embed_tokensᵀ
//! ```
//! Weight names are Hugging Face's `OPTForCausalLM` names.

use candle_core::{Result, Tensor};

use super::config::ModelConfig;
use super::{embed, Forward, Init, KvCache, ParamSpec, Params, linear, ops};

/// OPT's learned position table starts two rows in (a fairseq legacy).
pub const POSITION_OFFSET: usize = 2;

/// Every weight of the model, with its shape and initialisation.
pub fn param_specs(cfg: &ModelConfig) -> Vec<ParamSpec> {
    let (d, e, v) = (cfg.hidden, cfg.embed_dim, cfg.vocab_size);
    let mut specs = vec![
        ParamSpec::new("model.decoder.embed_tokens.weight", [v, e], Init::Normal),
        ParamSpec::new("model.decoder.embed_positions.weight", [cfg.max_positions + POSITION_OFFSET, d], Init::Normal),
    ];
    if e != d {
        specs.push(ParamSpec::new("model.decoder.project_in.weight", [d, e], Init::Normal));
        specs.push(ParamSpec::new("model.decoder.project_out.weight", [e, d], Init::Normal));
    }
    for i in 0..cfg.layers {
        let p = |name: &str| format!("model.decoder.layers.{i}.{name}");
        for proj in ["k_proj", "v_proj", "q_proj"] {
            specs.push(ParamSpec::new(p(&format!("self_attn.{proj}.weight")), [d, d], Init::Normal));
            specs.push(ParamSpec::new(p(&format!("self_attn.{proj}.bias")), [d], Init::Zeros));
        }
        specs.extend([
            ParamSpec::new(p("self_attn.out_proj.weight"), [d, d], Init::Residual),
            ParamSpec::new(p("self_attn.out_proj.bias"), [d], Init::Zeros),
            ParamSpec::new(p("self_attn_layer_norm.weight"), [d], Init::Ones),
            ParamSpec::new(p("self_attn_layer_norm.bias"), [d], Init::Zeros),
            ParamSpec::new(p("fc1.weight"), [cfg.ffn, d], Init::Normal),
            ParamSpec::new(p("fc1.bias"), [cfg.ffn], Init::Zeros),
            ParamSpec::new(p("fc2.weight"), [d, cfg.ffn], Init::Residual),
            ParamSpec::new(p("fc2.bias"), [d], Init::Zeros),
            ParamSpec::new(p("final_layer_norm.weight"), [d], Init::Ones),
            ParamSpec::new(p("final_layer_norm.bias"), [d], Init::Zeros),
        ]);
    }
    // OPT-350m (post-norm) has no final layer norm.
    if cfg.pre_norm {
        specs.push(ParamSpec::new("model.decoder.final_layer_norm.weight", [d], Init::Ones));
        specs.push(ParamSpec::new("model.decoder.final_layer_norm.bias", [d], Init::Zeros));
    }
    if !cfg.tie_embeddings {
        specs.push(ParamSpec::new("lm_head.weight", [v, e], Init::Normal));
    }
    specs
}

/// Logits `[b, s, vocab]` for token ids `[b, s]`.
pub fn forward(cfg: &ModelConfig, p: &Params, x: &Forward, mut cache: Option<&mut KvCache>) -> Result<Tensor> {
    let (b, s) = x.ids.dims2()?;
    let (heads, hd, d) = (cfg.heads, cfg.head_dim, cfg.hidden);
    let tokens = p.get("model.decoder.embed_tokens.weight")?;
    let mut h = embed(tokens, x.ids)?;
    if let Some(w) = p.maybe("model.decoder.project_in.weight") {
        h = linear(&h, w, None)?;
    }
    let positions = x.positions.affine(1.0, POSITION_OFFSET as f64)?;
    h = (h + embed(p.get("model.decoder.embed_positions.weight")?, &positions)?)?;
    for i in 0..cfg.layers {
        let w = |name: &str| p.get(&format!("model.decoder.layers.{i}.{name}"));
        let proj = |t: &Tensor, name: &str| linear(t, w(&format!("{name}.weight"))?, Some(w(&format!("{name}.bias"))?));
        let norm = |t: &Tensor, name: &str| {
            ops::layer_norm(t, w(&format!("{name}.weight"))?, w(&format!("{name}.bias"))?, cfg.norm_eps)
        };

        let n = if cfg.pre_norm { norm(&h, "self_attn_layer_norm")? } else { h.clone() };
        let split = |t: Tensor| t.reshape((b, s, heads, hd))?.transpose(1, 2);
        let q = split(proj(&n, "self_attn.q_proj")?)?;
        let k = split(proj(&n, "self_attn.k_proj")?)?;
        let v = split(proj(&n, "self_attn.v_proj")?)?;
        let (k, v) = match cache.as_deref_mut() {
            Some(cache) => cache.append(i, k, v)?,
            None => (k, v),
        };
        let a = ops::attention(&q, &k, &v, x.bias, 1.0 / (hd as f64).sqrt(), 1)?;
        let a = a.transpose(1, 2)?.reshape((b, s, d))?;
        h = (h + proj(&a, "self_attn.out_proj")?)?;
        if !cfg.pre_norm {
            h = norm(&h, "self_attn_layer_norm")?;
        }

        let n = if cfg.pre_norm { norm(&h, "final_layer_norm")? } else { h.clone() };
        let m = super::activate(cfg.activation, &proj(&n, "fc1")?)?;
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
    let head = if cfg.tie_embeddings { tokens } else { p.get("lm_head.weight")? };
    linear(&h, head, None)
}
