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
