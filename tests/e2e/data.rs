//! `kdharness data split`, and attacking the parts it writes.

use crate::common::*;

#[test]
fn a_split_dataset_is_pinned_and_scores_like_its_source_records() {
    let tmp = tempfile::tempdir().unwrap();
    // 24 records: the 12 fixture members (lines 0-11) then the 12 non-members (12-23).
    let mut all = std::fs::read_to_string(fixture("members.jsonl")).unwrap();
    all.push_str(&std::fs::read_to_string(fixture("nonmembers.jsonl")).unwrap());
    let dataset = tmp.path().join("dolly.jsonl");
    std::fs::write(&dataset, all).unwrap();
    let parts = tmp.path().join("parts");
    kdharness(["data", "split", "--input", &dataset.display().to_string(), "--nonmember-count", "8", "--out", &parts.display().to_string()]).ok();

    let pinned: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(parts.join("split.json")).unwrap()).unwrap();
    let ids = |part: &str| -> Vec<String> { pinned["split"][part].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect() };
    let range = |r: std::ops::Range<usize>| -> Vec<String> { r.map(|i| format!("r{i}")).collect() };
    assert_eq!(ids("nonmembers"), range(0..8));
    assert_eq!(ids("members"), range(8..16));
    assert_eq!(ids("public"), range(16..24));
    assert_eq!(pinned["source_sha256"].as_str().unwrap().len(), 64);

    let out = tmp.path().join("out");
    kdharness(one_model_attack(
        "tiny-llama",
        &fixture("tiny-llama.onnx"),
        &fixture("tokenizer.json"),
        &parts.join("members.jsonl"),
        &parts.join("nonmembers.jsonl"),
        &out,
        &["--attacks", "loss"],
    ))
    .ok();
    let scores = read_scores(&out.join("scores.csv"));
    assert_eq!(scores.len(), 16);
    // r8 is line 8 of the combined file, i.e. fixture member m8; r0 is m0.
    let reference = reference_json();
    for (rid, fixture_id, member) in [("r8", "m8", true), ("r0", "m0", false), ("r7", "m7", false), ("r15", "n3", true)] {
        let (is_member, got) = scores[&("tiny-llama".to_string(), "loss".to_string(), rid.to_string())];
        assert_eq!(is_member, member, "{rid}");
        let want = reference["models"]["tiny-llama"]["samples"][fixture_id]["scores"]["loss"].as_f64().unwrap();
        assert_close(got, want, 1e-5, rid);
    }
}

#[test]
fn splits_refuse_duplicate_ids_and_zero_nonmembers() {
    let tmp = tempfile::tempdir().unwrap();
    let dataset = tmp.path().join("d.jsonl");
    let line = |id: &str| format!("{{\"id\":\"{id}\",\"instruction\":\"q\",\"response\":\"a\"}}\n");
    std::fs::write(&dataset, [line("a"), line("b"), line("a"), line("c")].concat()).unwrap();
    let out = tmp.path().join("out").display().to_string();
    let run = kdharness(["data", "split", "--input", &dataset.display().to_string(), "--nonmember-count", "1", "--out", &out]);
    let error = run.error_line();
    assert!(error.contains("d.jsonl:3: duplicate sample id `a`"), "{error}");
    std::fs::write(&dataset, [line("a"), line("b"), line("c")].concat()).unwrap();
    let run = kdharness(["data", "split", "--input", &dataset.display().to_string(), "--nonmember-count", "0", "--out", &out]);
    assert!(run.error_line().contains("--nonmember-count must be at least 1"));
}
