//! The candle training engine against PyTorch/transformers: logits of tiny random Hugging
//! Face checkpoints (tests/fixtures/hf, made by make_hf_fixtures.py), the response loss,
//! gradients reaching every weight, save/load round trips and generation with a KV cache.

use candle_core::{Device, Tensor};
use kdharness::model::generate::{Decoding, GenerateConfig, generate};
use kdharness::model::{Forward, Model, ops};
use kdharness::train::{Example, batch_loss};
use rand::SeedableRng;
use serde_json::Value;

use crate::common::fixture;

const MODELS: [&str; 4] = ["llama", "llama-tied", "gpt2", "opt"];

fn reference() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("hf/reference.json")).unwrap()).unwrap()
}

fn load(name: &str) -> Model {
    Model::load(&fixture(&format!("hf/{name}")), &Device::Cpu).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn floats(v: &Value) -> Vec<f32> {
    let mut out = Vec::new();
    fn walk(v: &Value, out: &mut Vec<f32>) {
        match v {
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            x => out.push(x.as_f64().unwrap() as f32),
        }
    }
    walk(v, &mut out);
    out
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn logits_match_transformers() {
    let reference = reference();
    for name in MODELS {
        let r = &reference["models"][name];
        let model = load(name);
        let mut worst = 0f32;
        for (seq, want) in r["inputs"].as_array().unwrap().iter().zip(r["logits_unpadded"].as_array().unwrap()) {
            let got = model.forward_rows(&[ids(seq)], 0).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            worst = worst.max(max_diff(&got, &floats(want)));
        }
        assert!(worst <= 1e-4, "{name}: max |candle − torch| = {worst}");

        // Left padding with Hugging Face positions gives the real tokens' logits unchanged.
        let lp = &r["left_padded"];
        let rows: Vec<Vec<u32>> = lp["input_ids"].as_array().unwrap().iter().map(ids).collect();
        let mask: Vec<Vec<u8>> = lp["attention_mask"].as_array().unwrap().iter().map(|m| ids(m).iter().map(|&x| x as u8).collect()).collect();
        let pos: Vec<Vec<u32>> = lp["position_ids"].as_array().unwrap().iter().map(ids).collect();
        let (b, s) = (rows.len(), rows[0].len());
        let dev = Device::Cpu;
        let t = |v: &[Vec<u32>]| Tensor::from_vec(v.concat(), (b, s), &dev).unwrap();
        let (id_t, pos_t) = (t(&rows), t(&pos));
        let bias = ops::attention_bias(&mask, s, &dev).unwrap();
        let logits = model.forward(&Forward { ids: &id_t, positions: &pos_t, bias: &bias }, None).unwrap();
        let want = floats(&r["logits_left_padded"]);
        let got = logits.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let vocab = logits.dim(2).unwrap();
        let mut worst_padded = 0f32;
        for row in 0..b {
            for col in (0..s).filter(|&c| mask[row][c] == 1) {
                let at = (row * s + col) * vocab;
                worst_padded = worst_padded.max(max_diff(&got[at..at + vocab], &want[at..at + vocab]));
            }
        }
        assert!(got.iter().all(|x| x.is_finite()), "{name}: padded logits not finite");
        assert!(worst_padded <= 1e-4, "{name}: left-padded max diff {worst_padded}");
        eprintln!("{name}: unpadded {worst:.2e}, left-padded {worst_padded:.2e}");
    }
}

#[test]
fn response_loss_matches_transformers_float64() {
    let reference = reference();
    let spec = &reference["loss_response_only_spec"];
    let (index, prompt_len) = (spec["sequence_index"].as_u64().unwrap() as usize, spec["prompt_len"].as_u64().unwrap() as usize);
    for name in MODELS {
        let r = &reference["models"][name];
        let example = Example { ids: ids(&r["inputs"][index]), prompt_len };
        let (loss, n) = batch_loss(&load(name), &[&example]).unwrap();
        assert_eq!(n, example.ids.len() - prompt_len);
        let got = loss.to_scalar::<f32>().unwrap() as f64;
        let want = r["loss_response_only"].as_f64().unwrap();
        assert!((got - want).abs() <= 1e-5, "{name}: loss {got} vs {want}");
    }
}

#[test]
fn every_weight_receives_a_gradient() {
    let reference = reference();
    for name in MODELS {
        let model = load(name);
        let r = &reference["models"][name];
        let examples: Vec<Example> = r["inputs"].as_array().unwrap().iter().map(|s| Example { ids: ids(s), prompt_len: 2 }).collect();
        let batch: Vec<&Example> = examples.iter().collect();
        let (loss, _) = batch_loss(&model, &batch).unwrap();
        let grads = loss.backward().unwrap();
        let mut names = Vec::new();
        for (param, var) in model.params.iter() {
            let g = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("{name}: `{param}` got no gradient"));
            let norm = g.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(norm > 0.0 && norm.is_finite(), "{name}: `{param}` gradient norm² {norm}");
            names.push(param.to_owned());
        }
        let want: Vec<String> = r["param_names"].as_array().unwrap().iter().map(|p| p[0].as_str().unwrap().to_owned()).collect();
        assert_eq!(names, want, "{name}: trainable weights differ from the checkpoint's");
    }
}

#[test]
fn gradients_match_finite_differences() {
    // d loss / d w for a few single weights of each architecture, against central
    // differences in float64 arithmetic on the float32 model (step 1e-2, loose 2% bound).
    let reference = reference();
    for name in MODELS {
        let model = load(name);
        let r = &reference["models"][name];
        let example = Example { ids: ids(&r["inputs"][0]), prompt_len: 3 };
        let (loss, _) = batch_loss(&model, &[&example]).unwrap();
        let grads = loss.backward().unwrap();
        for (param, var) in model.params.iter().filter(|(n, _)| n.contains(".0.") || n.contains("norm")).take(6) {
            let g = grads.get(var.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let at = g.iter().enumerate().max_by(|a, b| a.1.abs().total_cmp(&b.1.abs())).unwrap().0;
            let original = var.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let eval = |delta: f32| {
                let mut w = original.clone();
                w[at] += delta;
                var.set(&Tensor::from_vec(w, var.shape(), &Device::Cpu).unwrap()).unwrap();
                batch_loss(&model, &[&example]).unwrap().0.to_scalar::<f32>().unwrap() as f64
            };
            let h = 1e-2;
            let numeric = (eval(h) - eval(-h)) / (2.0 * h as f64);
            var.set(&Tensor::from_vec(original, var.shape(), &Device::Cpu).unwrap()).unwrap();
            let analytic = g[at] as f64;
            assert!(
                (numeric - analytic).abs() <= 0.02 * analytic.abs().max(1e-3),
                "{name}: `{param}`[{at}] analytic {analytic} vs numeric {numeric}"
            );
        }
    }
}

#[test]
fn save_then_load_gives_identical_logits_and_hf_names() {
    let dir = tempfile::tempdir().unwrap();
    for name in MODELS {
        let model = load(name);
        let out = dir.path().join(name);
        model.save(&out).unwrap();
        let again = Model::load(&out, &Device::Cpu).unwrap();
        let rows = vec![vec![5u32, 9, 200, 3]];
        let a = model.forward_rows(&rows, 0).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let b = again.forward_rows(&rows, 0).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(a, b, "{name}");
        let original = safetensors_names(&fixture(&format!("hf/{name}/model.safetensors")));
        assert_eq!(safetensors_names(&out.join("model.safetensors")), original, "{name}");
    }
}

fn safetensors_names(path: &std::path::Path) -> Vec<String> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<String> = st.names().into_iter().map(str::to_owned).collect();
    names.sort();
    names
}

#[test]
fn students_can_start_from_a_subset_of_teacher_blocks() {
    let teacher = load("llama");
    let student = teacher.with_blocks(&[1]).unwrap();
    assert_eq!(student.config.layers, 1);
    let t = teacher.params.get("model.layers.1.mlp.up_proj.weight").unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let s = student.params.get("model.layers.0.mlp.up_proj.weight").unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(t, s);
    assert!(student.params.maybe("model.layers.1.mlp.up_proj.weight").is_none());
    let err = teacher.with_blocks(&[0, 2]).unwrap_err().to_string();
    assert!(err.contains("block 2 does not exist"), "{err}");
}

#[test]
fn cached_generation_equals_uncached() {
    let prompts = vec![vec![17u32, 245, 3, 88], vec![9, 150], vec![101, 12, 187, 260, 75, 4, 8]];
    for name in MODELS {
        let model = load(name);
        for decoding in [Decoding::Greedy, Decoding::Sample { temperature: 1.0 }] {
            let run = |use_cache| {
                let cfg = GenerateConfig { max_new_tokens: 12, decoding, eos: None, use_cache };
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
                generate(&model, &prompts, &cfg, &mut rng).unwrap()
            };
            let (cached, uncached) = (run(true), run(false));
            for (c, u) in cached.iter().zip(&uncached) {
                assert_eq!(c.tokens, u.tokens, "{name} {decoding:?}");
                assert!(max_diff(&c.logprobs, &u.logprobs) < 1e-4, "{name} {decoding:?}");
            }
            // A batched, left-padded row decodes as it would alone.
            let cfg = GenerateConfig { max_new_tokens: 12, decoding: Decoding::Greedy, eos: None, use_cache: true };
            let alone = generate(&model, &prompts[1..2], &cfg, &mut rand::rngs::mock::StepRng::new(0, 0)).unwrap();
            let batched = generate(&model, &prompts, &cfg, &mut rand::rngs::mock::StepRng::new(0, 0)).unwrap();
            assert_eq!(alone[0].tokens, batched[1].tokens, "{name}");
        }
    }
}
