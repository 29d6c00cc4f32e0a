//! Real Hugging Face optimum exports (`text-generation-with-past`) of tiny random llama,
//! gpt2 and opt models, against PyTorch float64 reference values
//! (tests/fixtures/optimum/make_optimum_fixtures.py). Their inputs come in three different
//! orders, so they also check that inputs are bound by name.

use crate::common::*;
use kdharness::runtime::PaddingSide;
use kdharness::score::BatchSettings;

const MODELS: [&str; 3] = ["llama", "gpt2", "opt"];

fn optimum_reference() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("optimum/reference.json")).unwrap()).unwrap()
}

#[test]
fn optimum_exports_score_like_pytorch() {
    let reference = optimum_reference();
    for model in MODELS {
        let signals = fixture_signals(&format!("optimum/{model}/model.onnx"), "tokenizer.json", BatchSettings::default());
        assert_eq!(signals.len(), 24);
        for sample in &signals {
            let want = &reference["models"][model]["samples"][&sample.id];
            let floats = |key: &str| -> Vec<f64> { want[key].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect() };
            let ids = |key: &str| -> Vec<u32> { want[key].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect() };
            assert_eq!(sample.token_ids, ids("token_ids"), "{model} {}", sample.id);
            assert_eq!(sample.argmax_id, ids("argmax_id"), "{model} {}", sample.id);
            for (got, key) in [(&sample.target_logprob, "target_logprob"), (&sample.dist_mean, "dist_mean"), (&sample.dist_var, "dist_var")] {
                assert_eq!(got.len(), floats(key).len(), "{model} {} {key}", sample.id);
                for (t, (g, w)) in got.iter().zip(floats(key)).enumerate() {
                    assert_close(*g, w, 1e-4, &format!("{model} {} {key}[{t}]", sample.id));
                }
            }
        }
    }
}

#[test]
fn optimum_exports_run_through_the_attack_command() {
    let reference = optimum_reference();
    let tmp = tempfile::tempdir().unwrap();
    let f = |n: &str| fixture(n).display().to_string();
    let mut args: Vec<String> = vec!["attack".into()];
    for model in MODELS {
        args.push("--model".into());
        args.push(format!("{model}={}", f(&format!("optimum/{model}/model.onnx"))));
    }
    for extra in [
        "--tokenizer",
        &f("tokenizer.json"),
        "--members",
        &f("members.jsonl"),
        "--nonmembers",
        &f("nonmembers.jsonl"),
        "--attacks",
        "loss,mink",
        "--padding",
        "left",
        "--batch-size",
        "5",
        "--out",
        &tmp.path().display().to_string(),
    ] {
        args.push(extra.to_string());
    }
    kdharness(args).ok();
    let scores = read_scores(&tmp.path().join("scores.csv"));
    assert_eq!(scores.len(), 3 * 2 * 24);
    for model in MODELS {
        for (id, want) in reference["models"][model]["samples"].as_object().unwrap() {
            for attack in ["loss", "mink"] {
                let (_, got) = scores[&(model.to_string(), attack.to_string(), id.clone())];
                assert_close(got, want["scores"][attack].as_f64().unwrap(), 1e-4, &format!("{model} {attack} {id}"));
            }
        }
    }
}

#[test]
fn optimum_exports_are_batch_and_padding_invariant() {
    for model in MODELS {
        let path = format!("optimum/{model}/model.onnx");
        let single = fixture_signals(&path, "tokenizer.json", BatchSettings { batch_size: 1, padding: PaddingSide::Right });
        for padding in [PaddingSide::Left, PaddingSide::Right] {
            let batched = fixture_signals(&path, "tokenizer.json", BatchSettings { batch_size: 7, padding });
            assert_eq!(single.len(), batched.len());
            for (a, b) in single.iter().zip(&batched) {
                assert_eq!((&a.id, a.target_logprob.len()), (&b.id, b.target_logprob.len()));
            }
            let worst = single
                .iter()
                .zip(&batched)
                .flat_map(|(a, b)| a.target_logprob.iter().zip(b.target_logprob.iter()).map(|(x, y)| (x - y).abs()))
                .fold(0f64, f64::max);
            eprintln!("optimum {model} batch 7 {padding:?}: max |difference| {worst:e}");
            assert!(worst <= 1e-5, "{model} {padding:?}: {worst}");
        }
    }
}
