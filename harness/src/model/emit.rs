//! The ONNX forms of the layers the architectures share (attention with its KV cache,
//! RoPE, norms, projections, activations), in the same operations as their candle forms
//! in [`crate::model::ops`]. Each family's `emit_onnx` composes them into its graph.

use super::{Activation, ModelConfig};

use crate::onnx::graph::{Dim, Graph, float, int, ints};
use crate::onnx::proto::data_type::FLOAT;

/// A graph under construction for one model config.
pub(crate) struct OnnxBuilder<'a> {
    /// The graph.
    pub g: Graph,
    /// The model's config.
    pub cfg: &'a ModelConfig,
    /// The `[b, 1, s, T]` additive attention bias every block uses.
    pub bias: String,
}

impl<'a> OnnxBuilder<'a> {
    /// A builder over `g` (which already holds the weights).
    pub fn new(g: Graph, cfg: &'a ModelConfig) -> Self {
        OnnxBuilder { g, cfg, bias: String::new() }
    }

    /// The dimensions of one block's cached keys or values, `seq` positions long.
    pub fn cache_dims(&self, seq: &'static str) -> [Dim; 4] {
        let (kv, hd) = (self.cfg.kv_heads as i64, self.cfg.head_dim as i64);
        [Dim::Named("batch_size"), Dim::Fixed(kv), Dim::Named(seq), Dim::Fixed(hd)]
    }

    /// Rows of `table` for the ids in `ids`.
    pub fn gather(&mut self, table: &str, ids: &str) -> String {
        self.g.op("Gather", &[table, ids], vec![])
    }

    /// `a + b` (broadcasting).
    pub fn add(&mut self, a: &str, b: &str) -> String {
        self.g.op("Add", &[a, b], vec![])
    }

    /// `a · b` elementwise (broadcasting).
    pub fn mul(&mut self, a: &str, b: &str) -> String {
        self.g.op("Mul", &[a, b], vec![])
    }

    /// The graph output `logits = h · headᵀ` for an output head weight `[vocab, e]`.
    pub fn logits(&mut self, h: &str, head: &str) {
        let head_t = self.g.op("Transpose", &[head], vec![ints("perm", &[1, 0])]);
        self.g.op_into("MatMul", &[h, &head_t], vec![], "logits");
    }

    /// `[b, 1, s, T]` additive bias: masked where the key is padding or in the future
    /// (key index > past + query index). One `Where` over the combined condition keeps the
    /// value finite, so fully masked rows (left padding) stay free of NaN.
    pub fn attention_bias(&mut self, ids: &str, mask: &str) -> String {
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
    pub fn rope_tables(&mut self, positions: &str) -> (String, String) {
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
    pub fn attention(&mut self, i: usize, q: &str, k: &str, v: &str, rope: Option<&(String, String)>) -> String {
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
        let scores = g.op("Add", &[&scores, &self.bias], vec![]);
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

    pub fn split3(&mut self, x: &str, sizes: &str) -> (String, String, String) {
        let names = (format!("{x}_q"), format!("{x}_k"), format!("{x}_v"));
        self.g.op_split(x, sizes, 2, &[&names.0, &names.1, &names.2]);
        names
    }

    /// `x Wᵀ (+ b)` for a Hugging Face Linear `{prefix}.weight` `[out, in]`.
    pub fn linear(&mut self, x: &str, prefix: &str, bias: bool) -> String {
        let wt = self.g.op("Transpose", &[&format!("{prefix}.weight")], vec![ints("perm", &[1, 0])]);
        let y = self.g.op("MatMul", &[x, &wt], vec![]);
        if bias { self.g.op("Add", &[&y, &format!("{prefix}.bias")], vec![]) } else { y }
    }

    /// `x W + b` for a GPT-2 Conv1D `[in, out]`.
    pub fn conv1d(&mut self, x: &str, prefix: &str) -> String {
        let y = self.g.op("MatMul", &[x, &format!("{prefix}.weight")], vec![]);
        self.g.op("Add", &[&y, &format!("{prefix}.bias")], vec![])
    }

    pub fn rms_norm(&mut self, x: &str, weight: &str) -> String {
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

    pub fn layer_norm(&mut self, x: &str, prefix: &str) -> String {
        let eps = self.cfg.norm_eps as f32;
        self.g.op(
            "LayerNormalization",
            &[x, &format!("{prefix}.weight"), &format!("{prefix}.bias")],
            vec![int("axis", -1), float("epsilon", eps)],
        )
    }

    pub fn activation(&mut self, x: &str) -> String {
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
