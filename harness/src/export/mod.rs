//! ONNX export of trained models (SPEC §5.3), written by the harness itself.
//!
//! The graph follows Hugging Face optimum's `text-generation-with-past` conventions, so a
//! harness export and an optimum export are interchangeable for scoring and generation:
//! inputs `input_ids`, `attention_mask`, `position_ids`, `past_key_values.{i}.key|value`;
//! outputs `logits`, `present.{i}.key|value`. Every weight is an initializer named exactly
//! as in the Hugging Face checkpoint (HF layout, untransposed), so per-block perturbation
//! finds a block's weights by name prefix.

mod graph;
pub mod proto;

use std::path::Path;

use prost::Message;

use crate::model::{Activation, Arch, Model, ModelConfig, block_prefix, opt::POSITION_OFFSET};
use graph::{Dim, Graph, float, int, ints};
use proto::data_type::{FLOAT, INT64};

/// What can go wrong while exporting.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Reading the weights.
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    /// Writing the file.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The target.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Writes `model` as ONNX to `path` (atomically).
pub fn export(model: &Model, path: &Path) -> Result<(), ExportError> {
    let bytes = to_onnx(model)?.encode_to_vec();
    crate::util::write_atomic(path, &bytes).map_err(|source| ExportError::Write { path: path.to_owned(), source })
}

/// Runs a probe batch (two rows, one left-padded) through candle and through ONNX Runtime
/// on the exported file and returns the largest logit difference on real tokens, relative
/// to `max(1, max |logit|)` (SPEC §5.3 asks for at most 1e-4).
pub fn verify(model: &Model, lm: &mut crate::runtime::CausalLm) -> Result<f32, ExportError> {
    use crate::runtime::{LmBatch, PaddingSide};
    let vocab = model.config.vocab_size as u32;
    let rows: Vec<Vec<u32>> = vec![(0..9).map(|i| (i * 37 + 11) % vocab).collect(), (0..5).map(|i| (i * 53 + 3) % vocab).collect()];
    let batch = LmBatch::pad(rows.iter().map(Vec::as_slice), PaddingSide::Left, 0);
    let onnx = lm
        .forward(&batch, |logits, _| logits.to_vec())
        .map_err(|e| crate::model::ModelError::Weights(e.to_string()))?;
    let v = model.config.vocab_size;
    let mut worst = 0f32;
    for (r, row) in rows.iter().enumerate() {
        let candle = model.forward_rows(std::slice::from_ref(row), 0).and_then(|t| t.flatten_all()?.to_vec1::<f32>()).map_err(crate::model::ModelError::from)?;
        let scale = candle.iter().fold(1f32, |m, x| m.max(x.abs()));
        for t in 0..row.len() {
            let at = (r * batch.columns + batch.offsets[r] + t) * v;
            let diff = candle[t * v..(t + 1) * v].iter().zip(&onnx[at..at + v]).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            worst = worst.max(diff / scale);
        }
    }
    Ok(worst)
}

/// The ONNX model of `model`.
pub fn to_onnx(model: &Model) -> Result<proto::ModelProto, ExportError> {
    let cfg = &model.config;
    let mut b = Builder { g: Graph::default(), cfg };
    for (name, var) in model.params.iter() {
        let t = var.as_tensor();
        let values = t.flatten_all().and_then(|t| t.to_vec1::<f32>()).map_err(crate::model::ModelError::from)?;
        b.g.weight(name, t.dims(), &values);
    }
    b.build();
    let metadata = vec![("model_type".to_owned(), cfg.arch.model_type().to_owned())];
    Ok(b.g.finish(metadata))
}

/// Graph construction for one model config.
struct Builder<'a> {
    g: Graph,
    cfg: &'a ModelConfig,
}

impl Builder<'_> {
    fn build(&mut self) {
        let cfg = self.cfg;
        let ids = self.g.input("input_ids", INT64, &[Dim::Named("batch_size"), Dim::Named("sequence_length")]);
        let mask = self.g.input("attention_mask", INT64, &[Dim::Named("batch_size"), Dim::Named("past_sequence_length + sequence_length")]);
        let positions = self.g.input("position_ids", INT64, &[Dim::Named("batch_size"), Dim::Named("sequence_length")]);
        let kv = cfg.kv_heads as i64;
        let hd = cfg.head_dim as i64;
        for i in 0..cfg.layers {
            for part in ["key", "value"] {
                self.g.input(
                    &format!("past_key_values.{i}.{part}"),
                    FLOAT,
                    &[Dim::Named("batch_size"), Dim::Fixed(kv), Dim::Named("past_sequence_length"), Dim::Fixed(hd)],
                );
            }
        }
        let bias = self.attention_bias(&ids, &mask);
        let rope = (cfg.arch == Arch::Llama).then(|| self.rope_tables(&positions));

        let mut h = match cfg.arch {
            Arch::Llama => self.g.op("Gather", &["model.embed_tokens.weight", &ids], vec![]),
            Arch::Gpt2 => {
                let tokens = self.g.op("Gather", &["transformer.wte.weight", &ids], vec![]);
                let pos = self.g.op("Gather", &["transformer.wpe.weight", &positions], vec![]);
                self.g.op("Add", &[&tokens, &pos], vec![])
            }
            Arch::Opt => {
                let mut tokens = self.g.op("Gather", &["model.decoder.embed_tokens.weight", &ids], vec![]);
                if cfg.embed_dim != cfg.hidden {
                    tokens = self.linear(&tokens, "model.decoder.project_in", false);
                }
                let offset = self.g.const_i64(&[], &[POSITION_OFFSET as i64]);
                let shifted = self.g.op("Add", &[&positions, &offset], vec![]);
                let pos = self.g.op("Gather", &["model.decoder.embed_positions.weight", &shifted], vec![]);
                self.g.op("Add", &[&tokens, &pos], vec![])
            }
        };

        for i in 0..cfg.layers {
            let p = block_prefix(cfg.arch, i);
            h = match cfg.arch {
                Arch::Llama => {
                    let n = self.rms_norm(&h, &format!("{p}input_layernorm.weight"));
                    let q = self.linear(&n, &format!("{p}self_attn.q_proj"), cfg.attention_bias);
                    let k = self.linear(&n, &format!("{p}self_attn.k_proj"), cfg.attention_bias);
                    let v = self.linear(&n, &format!("{p}self_attn.v_proj"), cfg.attention_bias);
                    let a = self.attention(i, &q, &k, &v, &bias, rope.as_ref());
                    let o = self.linear(&a, &format!("{p}self_attn.o_proj"), cfg.attention_bias);
                    let h1 = self.g.op("Add", &[&h, &o], vec![]);
                    let n = self.rms_norm(&h1, &format!("{p}post_attention_layernorm.weight"));
                    let gate = self.linear(&n, &format!("{p}mlp.gate_proj"), cfg.mlp_bias);
                    let gate = self.activation(&gate);
                    let up = self.linear(&n, &format!("{p}mlp.up_proj"), cfg.mlp_bias);
                    let m = self.g.op("Mul", &[&gate, &up], vec![]);
                    let down = self.linear(&m, &format!("{p}mlp.down_proj"), cfg.mlp_bias);
                    self.g.op("Add", &[&h1, &down], vec![])
                }
                Arch::Gpt2 => {
                    let n = self.layer_norm(&h, &format!("{p}ln_1"));
                    let qkv = self.conv1d(&n, &format!("{p}attn.c_attn"));
                    let d = cfg.hidden as i64;
                    let split = self.g.const_i64(&[3], &[d, d, d]);
                    let (q, k, v) = self.split3(&qkv, &split);
                    let a = self.attention(i, &q, &k, &v, &bias, None);
                    let o = self.conv1d(&a, &format!("{p}attn.c_proj"));
                    let h1 = self.g.op("Add", &[&h, &o], vec![]);
                    let n = self.layer_norm(&h1, &format!("{p}ln_2"));
                    let f = self.conv1d(&n, &format!("{p}mlp.c_fc"));
                    let f = self.activation(&f);
                    let down = self.conv1d(&f, &format!("{p}mlp.c_proj"));
                    self.g.op("Add", &[&h1, &down], vec![])
                }
                Arch::Opt => {
                    let pre = cfg.pre_norm;
                    let n = if pre { self.layer_norm(&h, &format!("{p}self_attn_layer_norm")) } else { h.clone() };
                    let q = self.linear(&n, &format!("{p}self_attn.q_proj"), true);
                    let k = self.linear(&n, &format!("{p}self_attn.k_proj"), true);
                    let v = self.linear(&n, &format!("{p}self_attn.v_proj"), true);
                    let a = self.attention(i, &q, &k, &v, &bias, None);
                    let o = self.linear(&a, &format!("{p}self_attn.out_proj"), true);
                    let mut h1 = self.g.op("Add", &[&h, &o], vec![]);
                    if !pre {
                        h1 = self.layer_norm(&h1, &format!("{p}self_attn_layer_norm"));
                    }
                    let n = if pre { self.layer_norm(&h1, &format!("{p}final_layer_norm")) } else { h1.clone() };
                    let f = self.linear(&n, &format!("{p}fc1"), true);
                    let f = self.activation(&f);
                    let down = self.linear(&f, &format!("{p}fc2"), true);
                    let h2 = self.g.op("Add", &[&h1, &down], vec![]);
                    if pre { h2 } else { self.layer_norm(&h2, &format!("{p}final_layer_norm")) }
                }
            };
        }

        let (final_norm, head) = match cfg.arch {
            Arch::Llama => (
                Some(self.rms_norm(&h, "model.norm.weight")),
                if cfg.tie_embeddings { "model.embed_tokens.weight" } else { "lm_head.weight" },
            ),
            Arch::Gpt2 => (Some(self.layer_norm(&h, "transformer.ln_f")), "transformer.wte.weight"),
            Arch::Opt => {
                let mut n = if cfg.pre_norm { self.layer_norm(&h, "model.decoder.final_layer_norm") } else { h.clone() };
                if cfg.embed_dim != cfg.hidden {
                    n = self.linear(&n, "model.decoder.project_out", false);
                }
                (Some(n), if cfg.tie_embeddings { "model.decoder.embed_tokens.weight" } else { "lm_head.weight" })
            }
        };
        let h = final_norm.unwrap_or(h);
        let head_t = self.g.op("Transpose", &[head], vec![ints("perm", &[1, 0])]);
        self.g.op_into("MatMul", &[&h, &head_t], vec![], "logits");
        self.g.output("logits", FLOAT, &[Dim::Named("batch_size"), Dim::Named("sequence_length"), Dim::Fixed(cfg.vocab_size as i64)]);
        for i in 0..cfg.layers {
            for part in ["key", "value"] {
                self.g.output(
                    &format!("present.{i}.{part}"),
                    FLOAT,
                    &[Dim::Named("batch_size"), Dim::Fixed(kv), Dim::Named("past_sequence_length + sequence_length"), Dim::Fixed(hd)],
                );
            }
        }
    }

    /// `[b, 1, s, T]` additive bias: masked where the key is padding or in the future
    /// (key index > past + query index). One `Where` over the combined condition keeps the
    /// value finite, so fully masked rows (left padding) stay free of NaN.
    fn attention_bias(&mut self, ids: &str, mask: &str) -> String {
        let g = &mut self.g;
        let one = g.const_i64(&[1], &[1]);
        let zero_i = g.const_i64(&[], &[0]);
        let one_i = g.const_i64(&[], &[1]);
        let ids_shape = g.op("Shape", &[ids], vec![]);
        let mask_shape = g.op("Shape", &[mask], vec![]);
        let seq = g.op("Gather", &[&ids_shape, &one_i], vec![int("axis", 0)]);
        let total = g.op("Gather", &[&mask_shape, &one_i], vec![int("axis", 0)]);
        let past = g.op("Sub", &[&total, &seq], vec![]);
        let queries = g.op("Range", &[&past, &total, &one_i], vec![]);
        let keys = g.op("Range", &[&zero_i, &total, &one_i], vec![]);
        let queries = g.op("Unsqueeze", &[&queries, &one], vec![]);
        let future = g.op("Greater", &[&keys, &queries], vec![]);
        let zero_mask = g.const_i64(&[], &[0]);
        let padding = g.op("Equal", &[mask, &zero_mask], vec![]);
        let axes = g.const_i64(&[2], &[1, 2]);
        let padding = g.op("Unsqueeze", &[&padding, &axes], vec![]);
        let masked = g.op("Or", &[&future, &padding], vec![]);
        let big = g.const_f32(&[], &[crate::model::ops::MASKED]);
        let zero = g.const_f32(&[], &[0.0]);
        g.op("Where", &[&masked, &big, &zero], vec![])
    }

    /// RoPE `cos`/`sin` tables `[b, 1, s, head_dim]` from `position_ids`.
    fn rope_tables(&mut self, positions: &str) -> (String, String) {
        let (hd, base) = (self.cfg.head_dim, self.cfg.rope_theta);
        let half = hd / 2;
        let inv: Vec<f32> = (0..half).map(|j| (1.0 / base.powf(2.0 * j as f64 / hd as f64)) as f32).collect();
        let g = &mut self.g;
        let inv = g.const_f32(&[half], &inv);
        let pos = g.op("Cast", &[positions], vec![int("to", FLOAT as i64)]);
        let last = g.const_i64(&[1], &[2]);
        let pos = g.op("Unsqueeze", &[&pos, &last], vec![]);
        let freqs = g.op("Mul", &[&pos, &inv], vec![]);
        let freqs = g.op("Concat", &[&freqs, &freqs], vec![int("axis", -1)]);
        let head_axis = g.const_i64(&[1], &[1]);
        let freqs = g.op("Unsqueeze", &[&freqs, &head_axis], vec![]);
        (g.op("Cos", &[&freqs], vec![]), g.op("Sin", &[&freqs], vec![]))
    }

    fn rope(&mut self, x: &str, (cos, sin): &(String, String)) -> String {
        let half = (self.cfg.head_dim / 2) as i64;
        let g = &mut self.g;
        let split = g.const_i64(&[2], &[half, half]);
        let (a, b) = (format!("{x}_a"), format!("{x}_b"));
        g.op_split(x, &split, 3, &[&a, &b]);
        let nb = g.op("Neg", &[&b], vec![]);
        let rotated = g.op("Concat", &[&nb, &a], vec![int("axis", -1)]);
        let xc = g.op("Mul", &[x, cos], vec![]);
        let rs = g.op("Mul", &[&rotated, sin], vec![]);
        g.op("Add", &[&xc, &rs], vec![])
    }

    /// Multi-head attention of layer `i` over `[b, s, heads·hd]` projections; writes the
    /// layer's `present.{i}.*` outputs and returns `[b, s, heads·hd]`.
    fn attention(&mut self, i: usize, q: &str, k: &str, v: &str, bias: &str, rope: Option<&(String, String)>) -> String {
        let cfg = self.cfg;
        let (h, kv, hd) = (cfg.heads as i64, cfg.kv_heads as i64, cfg.head_dim as i64);
        let mut q = self.heads(q, h);
        let mut k = self.heads(k, kv);
        let v = self.heads(v, kv);
        if let Some(tables) = rope {
            q = self.rope(&q, tables);
            k = self.rope(&k, tables);
        }
        let g = &mut self.g;
        let (pk, pv) = (format!("past_key_values.{i}.key"), format!("past_key_values.{i}.value"));
        let (ok, ov) = (format!("present.{i}.key"), format!("present.{i}.value"));
        g.op_into("Concat", &[&pk, &k], vec![int("axis", 2)], &ok);
        g.op_into("Concat", &[&pv, &v], vec![int("axis", 2)], &ov);
        let (mut k, mut v) = (ok, ov);
        let groups = cfg.kv_groups() as i64;
        if groups > 1 {
            let axis = g.const_i64(&[1], &[2]);
            let expand = g.const_i64(&[5], &[1, 1, groups, 1, 1]);
            let shape = g.const_i64(&[4], &[0, h, -1, hd]);
            for t in [&mut k, &mut v] {
                let u = g.op("Unsqueeze", &[t, &axis], vec![]);
                let e = g.op("Expand", &[&u, &expand], vec![]);
                *t = g.op("Reshape", &[&e, &shape], vec![]);
            }
        }
        let kt = g.op("Transpose", &[&k], vec![ints("perm", &[0, 1, 3, 2])]);
        let scores = g.op("MatMul", &[&q, &kt], vec![]);
        let scale = g.const_f32(&[], &[(1.0 / (hd as f64).sqrt()) as f32]);
        let scores = g.op("Mul", &[&scores, &scale], vec![]);
        let scores = g.op("Add", &[&scores, bias], vec![]);
        let probs = g.op("Softmax", &[&scores], vec![int("axis", -1)]);
        let out = g.op("MatMul", &[&probs, &v], vec![]);
        let out = g.op("Transpose", &[&out], vec![ints("perm", &[0, 2, 1, 3])]);
        let merged = g.const_i64(&[3], &[0, 0, h * hd]);
        g.op("Reshape", &[&out, &merged], vec![])
    }

    /// `[b, s, n·hd]` → `[b, n, s, hd]`.
    fn heads(&mut self, x: &str, n: i64) -> String {
        let shape = self.g.const_i64(&[4], &[0, 0, n, self.cfg.head_dim as i64]);
        let r = self.g.op("Reshape", &[x, &shape], vec![]);
        self.g.op("Transpose", &[&r], vec![ints("perm", &[0, 2, 1, 3])])
    }

    fn split3(&mut self, x: &str, sizes: &str) -> (String, String, String) {
        let names = (format!("{x}_q"), format!("{x}_k"), format!("{x}_v"));
        self.g.op_split(x, sizes, 2, &[&names.0, &names.1, &names.2]);
        names
    }

    /// `x Wᵀ (+ b)` for a Hugging Face Linear `{prefix}.weight` `[out, in]`.
    fn linear(&mut self, x: &str, prefix: &str, bias: bool) -> String {
        let wt = self.g.op("Transpose", &[&format!("{prefix}.weight")], vec![ints("perm", &[1, 0])]);
        let y = self.g.op("MatMul", &[x, &wt], vec![]);
        if bias { self.g.op("Add", &[&y, &format!("{prefix}.bias")], vec![]) } else { y }
    }

    /// `x W + b` for a GPT-2 Conv1D `[in, out]`.
    fn conv1d(&mut self, x: &str, prefix: &str) -> String {
        let y = self.g.op("MatMul", &[x, &format!("{prefix}.weight")], vec![]);
        self.g.op("Add", &[&y, &format!("{prefix}.bias")], vec![])
    }

    fn rms_norm(&mut self, x: &str, weight: &str) -> String {
        let eps = self.cfg.norm_eps as f32;
        let g = &mut self.g;
        let sq = g.op("Mul", &[x, x], vec![]);
        let mean = g.op("ReduceMean", &[&sq], vec![ints("axes", &[-1]), int("keepdims", 1)]);
        let eps = g.const_f32(&[], &[eps]);
        let var = g.op("Add", &[&mean, &eps], vec![]);
        let rms = g.op("Sqrt", &[&var], vec![]);
        let inv = g.op("Reciprocal", &[&rms], vec![]);
        let n = g.op("Mul", &[x, &inv], vec![]);
        g.op("Mul", &[&n, weight], vec![])
    }

    fn layer_norm(&mut self, x: &str, prefix: &str) -> String {
        let eps = self.cfg.norm_eps as f32;
        self.g.op(
            "LayerNormalization",
            &[x, &format!("{prefix}.weight"), &format!("{prefix}.bias")],
            vec![int("axis", -1), float("epsilon", eps)],
        )
    }

    fn activation(&mut self, x: &str) -> String {
        let g = &mut self.g;
        match self.cfg.activation {
            Activation::Silu => {
                let s = g.op("Sigmoid", &[x], vec![]);
                g.op("Mul", &[x, &s], vec![])
            }
            Activation::Relu => g.op("Relu", &[x], vec![]),
            Activation::GeluTanh => {
                // ½x(1 + tanh(√(2/π)(x + 0.044715x³)))
                let x3 = g.op("Mul", &[x, x], vec![]);
                let x3 = g.op("Mul", &[&x3, x], vec![]);
                let c = g.const_f32(&[], &[0.044715]);
                let t = g.op("Mul", &[&x3, &c], vec![]);
                let t = g.op("Add", &[x, &t], vec![]);
                let k = g.const_f32(&[], &[(2.0 / std::f64::consts::PI).sqrt() as f32]);
                let t = g.op("Mul", &[&t, &k], vec![]);
                let t = g.op("Tanh", &[&t], vec![]);
                self.half_x_one_plus(x, &t)
            }
            Activation::GeluErf => {
                let k = g.const_f32(&[], &[std::f32::consts::FRAC_1_SQRT_2]);
                let t = g.op("Mul", &[x, &k], vec![]);
                let t = g.op("Erf", &[&t], vec![]);
                self.half_x_one_plus(x, &t)
            }
        }
    }

    /// `½ x (1 + t)`.
    fn half_x_one_plus(&mut self, x: &str, t: &str) -> String {
        let g = &mut self.g;
        let one = g.const_f32(&[], &[1.0]);
        let half = g.const_f32(&[], &[0.5]);
        let t = g.op("Add", &[t, &one], vec![]);
        let hx = g.op("Mul", &[x, &half], vec![]);
        g.op("Mul", &[&hx, &t], vec![])
    }
}
