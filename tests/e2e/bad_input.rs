//! Bad input: one clear error line naming the culprit, a non-zero exit, no panic trace.

use crate::common::*;

/// Runs `attack` with one argument replaced.
fn attack_with(replace: &str, value: &str) -> Run {
    let tmp = tempfile::tempdir().unwrap();
    let mut args = attack_args(tmp.path(), &[]);
    if let Some(i) = args.iter().position(|a| a == replace) {
        args[i + 1] = value.to_string();
    } else {
        args.push(replace.into());
        args.push(value.into());
    }
    kdharness(args)
}

#[test]
fn malformed_jsonl_names_file_and_line() {
    let line = attack_with("--members", &fixture("bad/malformed.jsonl").display().to_string()).error_line();
    assert!(line.contains("bad/malformed.jsonl:3: not valid JSON"), "{line}");
}

#[test]
fn missing_field_names_file_line_and_field() {
    let line = attack_with("--nonmembers", &fixture("bad/missing_field.jsonl").display().to_string()).error_line();
    assert!(line.contains("bad/missing_field.jsonl:2: missing field `response` (accepted spellings: `response` or `output`)"), "{line}");
}

#[test]
fn empty_sets_are_refused() {
    let line = attack_with("--nonmembers", &fixture("bad/empty.jsonl").display().to_string()).error_line();
    assert!(line.contains("empty.jsonl holds no records: the non-member set must not be empty"), "{line}");
    let line = attack_with("--members", &fixture("bad/empty.jsonl").display().to_string()).error_line();
    assert!(line.contains("the member set must not be empty"), "{line}");
}

#[test]
fn a_model_without_logits_lists_its_outputs() {
    let line = attack_with("--model", &format!("x={}", fixture("no-logits.onnx").display())).error_line();
    assert!(line.contains("no-logits.onnx: has no `logits` output (it has: scores, present.0.key"), "{line}");
}

#[test]
fn a_missing_tokenizer_is_named() {
    let line = attack_with("--tokenizer", "/nonexistent/tokenizer.json").error_line();
    assert!(line.contains("tokenizer file /nonexistent/tokenizer.json not found"), "{line}");
}

#[test]
fn a_tokenizer_larger_than_the_model_is_refused() {
    let line = attack_with("--model", &format!("x={}", fixture("small-vocab.onnx").display())).error_line();
    assert!(line.contains("tokenizer.json has 300 tokens but model") && line.contains("small-vocab.onnx only 100 logits"), "{line}");
}

#[test]
fn an_unknown_attack_suggests_the_nearest() {
    let line = attack_with("--attacks", "loss,minkk").error_line();
    assert!(line.contains("unknown attack `minkk` (did you mean `mink`?)"), "{line}");
    let line = attack_with("--param", "mink.kk=0.1").error_line();
    assert!(line.contains("attack `mink` has no parameter `kk` (did you mean `k`?)"), "{line}");
}

#[test]
fn missing_or_invalid_model_files_are_named() {
    let line = attack_with("--model", "x=/nonexistent/model.onnx").error_line();
    assert!(line.contains("cannot read model /nonexistent/model.onnx"), "{line}");
    let not_onnx = fixture("members.jsonl").display().to_string();
    let line = attack_with("--model", &format!("x={not_onnx}")).error_line();
    assert!(line.contains(&format!("{not_onnx}: ONNX Runtime cannot load it")), "{line}");
}

#[test]
fn repeated_attacks_run_once_and_repeated_parameters_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    kdharness(attack_args(tmp.path(), &["--attacks", "loss,loss,mink"])).ok();
    assert_eq!(read_scores(&tmp.path().join("scores.csv")).len(), 2 * 24);
    let run = kdharness(attack_args(tmp.path(), &["--param", "mink.k=0.1", "--param", "mink.k=0.3"]));
    let line = run.error_line();
    assert!(line.contains("parameter `mink.k` is given twice"), "{line}");
}

#[test]
fn a_reserved_category_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let members = tmp.path().join("m.jsonl");
    std::fs::write(&members, "{\"instruction\":\"q\",\"response\":\"a b c\",\"category\":\"all\"}\n").unwrap();
    let line = attack_with("--members", &members.display().to_string()).error_line();
    assert!(line.contains("m.jsonl:1: category `all` is reserved"), "{line}");
}

/// Truncation or padding saved in a tokenizer.json must not change what is scored.
#[test]
fn tokenizer_truncation_and_padding_settings_are_ignored() {
    let tmp = tempfile::tempdir().unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixture("tokenizer.json")).unwrap()).unwrap();
    json["truncation"] = serde_json::json!({"direction": "Right", "max_length": 5, "strategy": "LongestFirst", "stride": 0});
    json["padding"] = serde_json::json!({"strategy": {"Fixed": 300}, "direction": "Right", "pad_to_multiple_of": null, "pad_id": 0, "pad_type_id": 0, "pad_token": "<|endoftext|>"});
    let tokenizer = tmp.path().join("tokenizer.json");
    std::fs::write(&tokenizer, serde_json::to_string(&json).unwrap()).unwrap();
    let out = tmp.path().join("out");
    let mut args = attack_args(&out, &["--attacks", "loss"]);
    let i = args.iter().position(|a| a == "--tokenizer").unwrap();
    args[i + 1] = tokenizer.display().to_string();
    kdharness(args).ok();
    let reference = reference_json();
    for ((_, _, id), (_, got)) in read_scores(&out.join("scores.csv")) {
        let want = reference["models"]["tiny-llama"]["samples"][&id]["scores"]["loss"].as_f64().unwrap();
        assert_close(got, want, 1e-5, &id);
    }
}

/// The CPU build of ONNX Runtime has no CUDA provider: asking for it is an error, never a
/// silent fallback to the CPU.
#[test]
fn cuda_without_its_provider_is_an_error() {
    let line = attack_with("--device", "cuda").error_line();
    assert!(line.contains("the CUDA execution provider is not in this ONNX Runtime build"), "{line}");
    assert!(line.contains("onnxruntime-gpu"), "{line}");
}
