//! ONNX export: ONNX Runtime on the exported file against candle, incremental decoding
//! with the KV cache against full recomputation, and the exported model through the
//! unchanged `kdharness attack`.

use candle_core::Device;
use kdharness::data::{Template, TokenLimits, TokenizerFile, encode, load_jsonl};
use kdharness::model::Model;
use kdharness::model::generate::{Decoding, GenerateConfig, generate};
use kdharness::runtime::generate::{GreedyConfig, greedy};
use kdharness::runtime::{CausalLm, LmBatch, PaddingSide, PastState, Runtime, SessionOptions};

use crate::common::{fixture, kdharness, read_scores};

const MODELS: [&str; 4] = ["llama", "llama-tied", "gpt2", "opt"];

fn exported(name: &str, dir: &std::path::Path) -> (Model, CausalLm) {
    let model = Model::load(&fixture(&format!("hf/{name}")), &Device::Cpu).unwrap();
    let path = dir.join(format!("{name}.onnx"));
    kdharness::export::export(&model, &path).unwrap();
    let lm = CausalLm::open(Runtime::get(None).unwrap(), &path, SessionOptions { threads: 1, ..Default::default() }).unwrap();
    (model, lm)
}

#[test]
fn onnx_runtime_logits_equal_candle_for_every_architecture() {
    let dir = tempfile::tempdir().unwrap();
    for name in MODELS {
        let (model, mut lm) = exported(name, dir.path());
        let info = lm.info().clone();
        assert!(info.has_position_ids, "{name}");
        assert_eq!(info.past.len(), 2 * model.config.layers, "{name}");
        let diff = kdharness::export::verify(&model, &mut lm).unwrap();
        assert!(diff <= 1e-4, "{name}: relative logit difference {diff}");
        eprintln!("{name}: ORT vs candle {diff:.1e}");
    }
}

#[test]
fn initializers_keep_hugging_face_names() {
    use prost::Message;
    let dir = tempfile::tempdir().unwrap();
    for name in MODELS {
        let (model, lm) = exported(name, dir.path());
        let bytes = std::fs::read(lm.path()).unwrap();
        let onnx = kdharness::onnx::proto::ModelProto::decode(bytes.as_slice()).unwrap();
        let graph = onnx.graph.unwrap();
        let initializers: std::collections::BTreeSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
        for (param, var) in model.params.iter() {
            assert!(initializers.contains(param), "{name}: `{param}` is not an initializer");
            let t = graph.initializer.iter().find(|t| t.name == param).unwrap();
            assert_eq!(t.dims.iter().map(|&d| d as usize).collect::<Vec<_>>(), var.dims(), "{name}: `{param}` layout");
        }
    }
}

#[test]
fn incremental_decoding_with_the_cache_equals_full_recomputation() {
    let dir = tempfile::tempdir().unwrap();
    let rows = [vec![17u32, 245, 3, 88, 131, 202, 56, 9, 10], vec![9u32, 150, 271, 44, 4, 199]];
    for name in MODELS {
        let (_, mut lm) = exported(name, dir.path());
        let full = LmBatch::pad(rows.iter().map(Vec::as_slice), PaddingSide::Left, 0);
        let (full_logits, vocab) = lm.forward(&full, |l, v| (l.to_vec(), v)).unwrap();
        // The first 5 columns at once, then one column at a time with the cache.
        let columns = full.columns;
        let mut past = PastState::default();
        let mut worst = 0f32;
        let mut start = 0;
        for end in [5, 6, 7, 8, 9] {
            let take = |v: &Vec<i64>, from: usize, to: usize| -> Vec<i64> {
                (0..2).flat_map(|r| v[r * columns + from..r * columns + to].to_vec()).collect()
            };
            let step = LmBatch {
                rows: 2,
                columns: end - start,
                input_ids: take(&full.input_ids, start, end),
                attention_mask: take(&full.attention_mask, 0, end),
                position_ids: take(&full.position_ids, start, end),
                offsets: vec![0, 0],
            };
            let (logits, state) = lm.forward_with_past(&step, &past, |l, _| l.to_vec()).unwrap();
            assert_eq!(state.len, end);
            for r in 0..2 {
                for c in start..end {
                    if full.attention_mask[r * columns + c] == 0 {
                        continue;
                    }
                    let a = &full_logits[(r * columns + c) * vocab..][..vocab];
                    let b = &logits[(r * (end - start) + c - start) * vocab..][..vocab];
                    worst = a.iter().zip(b).fold(worst, |m, (x, y)| m.max((x - y).abs()));
                }
            }
            past = state;
            start = end;
        }
        assert!(worst <= 1e-4, "{name}: cached vs full logits differ by {worst}");

        // Greedy decoding: with and without the cache, and against candle's decoder.
        let prompts = vec![rows[0][..4].to_vec(), rows[1][..2].to_vec()];
        let cfg = GreedyConfig { max_new_tokens: 10, eos: None, no_repeat_ngram: 0, use_cache: true };
        let cached = greedy(&mut lm, &prompts, &cfg).unwrap();
        let uncached = greedy(&mut lm, &prompts, &GreedyConfig { use_cache: false, ..cfg }).unwrap();
        assert_eq!(cached, uncached, "{name}");
        let model = Model::load(&fixture(&format!("hf/{name}")), &Device::Cpu).unwrap();
        let candle_cfg = GenerateConfig { max_new_tokens: 10, decoding: Decoding::Greedy, eos: None, use_cache: true };
        let candle = generate(&model, &prompts, &candle_cfg, &mut rand::rngs::mock::StepRng::new(0, 0)).unwrap();
        let candle: Vec<Vec<u32>> = candle.into_iter().map(|g| g.tokens).collect();
        assert_eq!(cached, candle, "{name}: ONNX Runtime and candle decode differently");
    }
}

#[test]
fn an_exported_model_passes_through_kdharness_attack() {
    let dir = tempfile::tempdir().unwrap();
    let onnx = dir.path().join("llama.onnx");
    kdharness(["model", "export", "--from"].map(String::from).into_iter().chain([
        fixture("hf/llama").display().to_string(),
        "--to".into(),
        onnx.display().to_string(),
    ]))
    .ok();
    let out = dir.path().join("report");
    let (members, nonmembers) = (fixture("members.jsonl"), fixture("nonmembers.jsonl"));
    let tokenizer = fixture("tokenizer.json");
    kdharness(crate::common::one_model_attack("exported", &onnx, &tokenizer, &members, &nonmembers, &out, &["--attacks", "loss"])).ok();
    let scores = read_scores(&out.join("scores.csv"));

    // The same scores from the training engine: mean log q of the response tokens.
    let model = Model::load(&fixture("hf/llama"), &Device::Cpu).unwrap();
    let tok = TokenizerFile::load(&tokenizer).unwrap();
    let mut checked = 0;
    for (path, prefix) in [(&members, "m"), (&nonmembers, "n")] {
        for record in load_jsonl(path, prefix).unwrap() {
            let enc = encode(&tok.tokenizer, Template::Alpaca, TokenLimits::default(), &record).unwrap();
            let ids: Vec<u32> = enc.input_ids().collect();
            let logits = model.forward_rows(&[ids.clone()], 0).unwrap().squeeze(0).unwrap();
            let logp = kdharness::model::ops::log_softmax(&logits).unwrap().to_vec2::<f32>().unwrap();
            let p = enc.prompt_ids.len();
            let first = if p == 0 { 1 } else { 0 };
            let lps: Vec<f64> = (first..enc.response_ids.len()).map(|t| logp[p + t - 1][ids[p + t] as usize] as f64).collect();
            let want = lps.iter().sum::<f64>() / lps.len() as f64;
            let (_, got) = scores[&("exported".to_string(), "loss".to_string(), record.id.clone())];
            assert!((got - want).abs() <= 1e-4, "{}: attack {got} vs candle {want}", record.id);
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} samples");
}
