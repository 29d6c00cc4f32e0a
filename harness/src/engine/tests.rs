//! Each fused op against its composite form (candle's autograd over `model::ops`), in
//! value and in gradient: `max |fused − composite| / max |composite| ≤ 1e-5`.

use candle_core::{D, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::attention::{self, Heads};
use super::norm::{self, NormKind};
use super::pointwise::{self, Rope};
use super::{gemm, head};
use crate::model::{Activation, activate, ops};

const TOL: f64 = 1e-5;

fn random(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.gen_range(-scale..scale)).collect()
}

fn host(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn var(values: &[f32], shape: &[usize]) -> Var {
    Var::from_tensor(&Tensor::from_slice(values, shape, &Device::Cpu).unwrap()).unwrap()
}

#[track_caller]
fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let diff = got.iter().zip(want).map(|(a, b)| (a - b).abs() as f64).fold(0.0, f64::max);
    let scale = want.iter().map(|b| b.abs() as f64).fold(0.0, f64::max).max(1e-30);
    assert!(diff / scale <= TOL, "{what}: relative difference {:.2e}", diff / scale);
}

/// `Σ y ⊙ r` for a fixed random `r`: its gradient in `y` is `r`.
fn probe(y: &Tensor, seed: u64) -> (Tensor, Vec<f32>) {
    let r = random(y.elem_count(), seed, 1.0);
    let loss = (y * Tensor::from_slice(&r, y.shape(), y.device()).unwrap()).unwrap().sum_all().unwrap();
    (loss, r)
}

#[test]
fn norms_equal_their_composite_forms() {
    let (rows, d) = (37, 24);
    let x = random(rows * d, 1, 3.0);
    let w = random(d, 2, 1.5);
    let b = random(d, 3, 0.5);
    for kind in [NormKind::Rms, NormKind::Layer] {
        let (xv, wv, bv) = (var(&x, &[rows, d]), var(&w, &[d]), var(&b, &[d]));
        let y = match kind {
            NormKind::Rms => ops::rms_norm(xv.as_tensor(), wv.as_tensor(), 1e-5).unwrap(),
            NormKind::Layer => ops::layer_norm(xv.as_tensor(), wv.as_tensor(), bv.as_tensor(), 1e-5).unwrap(),
        };
        let (loss, r) = probe(&y, 4);
        let grads = loss.backward().unwrap();
        let bias = (kind == NormKind::Layer).then_some(b.as_slice());
        let (mut got, mut stats) = (vec![0f32; rows * d], vec![0f32; 2 * rows]);
        norm::forward(kind, &x, &w, bias, 1e-5, &mut got, &mut stats);
        assert_close(&format!("{kind:?} value"), &got, &host(&y));
        let (mut dx, mut dw, mut db) = (vec![0f32; rows * d], vec![0f32; d], vec![0f32; d]);
        norm::backward(kind, &r, &x, &stats, &w, &mut dx, &mut dw, bias.map(|_| db.as_mut_slice()));
        assert_close(&format!("{kind:?} dx"), &dx, &host(grads.get(xv.as_tensor()).unwrap()));
        assert_close(&format!("{kind:?} dw"), &dw, &host(grads.get(wv.as_tensor()).unwrap()));
        if kind == NormKind::Layer {
            assert_close("LayerNorm db", &db, &host(grads.get(bv.as_tensor()).unwrap()));
        }
    }
}

#[test]
fn attention_equals_the_composite_form_with_grouped_heads() {
    // 2 sequences of 9, 4 query heads sharing 2 key/value heads of width 8.
    let s = Heads { batch: 2, seq: 9, heads: 4, kv_heads: 2, dim: 8 };
    let (tokens, w) = (s.batch * s.seq, s.qkv_width());
    let qkv = random(tokens * w, 5, 2.0);
    let qv = var(&qkv, &[s.batch, s.seq, w]);
    let split = |col: usize, n: usize| {
        qv.as_tensor().narrow(D::Minus1, col * s.dim, n * s.dim).unwrap().reshape((s.batch, s.seq, n, s.dim)).unwrap().transpose(1, 2).unwrap()
    };
    let (q, k, v) = (split(0, s.heads), split(s.heads, s.kv_heads), split(s.heads + s.kv_heads, s.kv_heads));
    let bias = ops::attention_bias(&[vec![1; s.seq]], s.seq, &Device::Cpu).unwrap();
    let y = ops::attention(&q, &k, &v, &bias, 1.0 / (s.dim as f64).sqrt(), s.heads / s.kv_heads).unwrap();
    let y = y.transpose(1, 2).unwrap().reshape((tokens, s.out_width())).unwrap();
    let (loss, r) = probe(&y, 6);
    let grads = loss.backward().unwrap();
    let (mut out, mut lse) = (vec![0f32; tokens * s.out_width()], vec![0f32; s.batch * s.heads * s.seq]);
    attention::forward(s, &qkv, &mut out, &mut lse);
    assert_close("attention value", &out, &host(&y));
    let mut dqkv = vec![0f32; tokens * w];
    attention::backward(s, &qkv, &lse, &r, &mut dqkv);
    assert_close("attention d(q|k|v)", &dqkv, &host(grads.get(qv.as_tensor()).unwrap()));
}

#[test]
fn rotary_embedding_equals_the_composite_form() {
    let (batch, seq, heads, dim) = (2, 7, 3, 8);
    let x = random(batch * seq * heads * dim, 7, 2.0);
    let xv = var(&x, &[batch, seq, heads, dim]);
    let positions: Vec<u32> = (0..batch).flat_map(|_| 0..seq as u32).collect();
    let positions = Tensor::from_vec(positions, (batch, seq), &Device::Cpu).unwrap();
    let (cos, sin) = ops::rope_tables(&positions, dim, 500.0).unwrap();
    let y = ops::rope(&xv.as_tensor().transpose(1, 2).unwrap(), &cos, &sin).unwrap().transpose(1, 2).unwrap();
    let (loss, r) = probe(&y, 8);
    let grads = loss.backward().unwrap();
    let rope = Rope::new(seq, dim, 500.0);
    let mut got = x.clone();
    rope.apply(&mut got, heads * dim, seq, heads, false);
    assert_close("RoPE value", &got, &host(&y));
    let mut dx = r;
    rope.apply(&mut dx, heads * dim, seq, heads, true);
    assert_close("RoPE dx", &dx, &host(grads.get(xv.as_tensor()).unwrap()));
}

/// An activation from candle primitives (SiLU's own kernel is the fused one on CPU).
fn composite(act: Activation, x: &Tensor) -> Tensor {
    match act {
        Activation::Silu => (x / (x.neg().unwrap().exp().unwrap() + 1.0).unwrap()).unwrap(),
        Activation::GeluTanh => x.gelu().unwrap(),
        other => activate(other, x).unwrap(),
    }
}

#[test]
fn activations_equal_their_composite_forms_gated_and_plain() {
    let n = 300;
    let (g, u) = (random(n, 9, 4.0), random(n, 10, 2.0));
    for act in [Activation::Silu, Activation::GeluTanh, Activation::GeluErf, Activation::Relu] {
        // Gated: m = act(g) ⊙ u.
        let (gv, uv) = (var(&g, &[n]), var(&u, &[n]));
        let y = (composite(act, gv.as_tensor()) * uv.as_tensor()).unwrap();
        let (loss, r) = probe(&y, 11);
        let grads = loss.backward().unwrap();
        let mut m = vec![0f32; n];
        pointwise::gated_forward(act, &g, &u, &mut m);
        assert_close(&format!("{act:?} gated value"), &m, &host(&y));
        let (mut dg, mut du) = (g.clone(), u.clone());
        pointwise::gated_backward(act, &r, &mut dg, &mut du);
        assert_close(&format!("{act:?} dg"), &dg, &host(grads.get(gv.as_tensor()).unwrap()));
        assert_close(&format!("{act:?} du"), &du, &host(grads.get(uv.as_tensor()).unwrap()));
        // Plain: m = act(p).
        let pv = var(&g, &[n]);
        let y = composite(act, pv.as_tensor());
        let (loss, r) = probe(&y, 12);
        let grads = loss.backward().unwrap();
        pointwise::plain_forward(act, &g, &mut m);
        assert_close(&format!("{act:?} value"), &m, &host(&y));
        let mut dp = g.clone();
        pointwise::plain_backward(act, &r, &mut dp);
        assert_close(&format!("{act:?} dp"), &dp, &host(grads.get(pv.as_tensor()).unwrap()));
    }
}

#[test]
fn head_cross_entropy_equals_the_composite_form_at_extreme_logits() {
    let (n, vocab) = (7, 50);
    let mut logits = random(n * vocab, 13, 50.0);
    let targets: Vec<u32> = vec![0, 49, 3, 3, 17, 25, 8];
    let lv = var(&logits, &[n, vocab]);
    let t = Tensor::from_slice(&targets, n, &Device::Cpu).unwrap();
    let want = crate::train::cross_entropy_composite(lv.as_tensor(), &t).unwrap();
    let grads = want.backward().unwrap();
    let loss = head::cross_entropy(&mut logits, vocab, &targets, Some(1.0 / n as f32)) / n as f64;
    let want_loss = want.to_scalar::<f32>().unwrap() as f64;
    assert!((loss - want_loss).abs() <= TOL * want_loss.abs(), "{loss} vs {want_loss}");
    assert_close("cross-entropy d logits", &logits, &host(grads.get(lv.as_tensor()).unwrap()));
}

#[test]
fn products_read_strided_operands_in_place() {
    let data = random(600, 14, 1.0);
    // a: columns 3..10 of a [20, 30] buffer; b: the transpose of a [5, 7] block.
    let a = gemm::View::strided(&data, 3, 20, 7, 30, 1);
    let b = gemm::View::strided(&data, 100, 5, 7, 9, 1).t();
    let at = Tensor::from_slice(&data, (20, 30), &Device::Cpu).unwrap().narrow(1, 3, 7).unwrap();
    let bt = Tensor::from_slice(&data[100..100 + 4 * 9 + 7], 43, &Device::Cpu).unwrap();
    let bt = Tensor::cat(&[bt, Tensor::zeros(2, candle_core::DType::F32, &Device::Cpu).unwrap()], 0).unwrap();
    let bt = bt.reshape((5, 9)).unwrap().narrow(1, 0, 7).unwrap().t().unwrap();
    let want = host(&at.contiguous().unwrap().matmul(&bt.contiguous().unwrap()).unwrap());
    let mut got = vec![1f32; 20 * 5];
    gemm::matmul_into(&mut got, a, b, false);
    assert_close("a·b", &got, &want);
    gemm::matmul_into(&mut got, a, b, true);
    let twice: Vec<f32> = want.iter().map(|x| 2.0 * x).collect();
    assert_close("a·b accumulated", &got, &twice);
}
