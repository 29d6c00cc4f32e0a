//! Each signal is computed once per (model, sample set) and cached on disk.

use crate::common::*;

fn scoring_lines(stderr: &str, model: &str) -> usize {
    stderr.lines().filter(|l| l.starts_with(&format!("kdharness: scoring {model}:"))).count()
}

#[test]
fn signals_are_computed_once_then_reused_and_corruption_is_detected() {
    let tmp = tempfile::tempdir().unwrap();
    // Eight attacks over two models: one forward pass over the sample set per model.
    let first = kdharness(attack_args(tmp.path(), &["-v"]));
    first.ok();
    assert_eq!(scoring_lines(&first.stderr, "tiny-llama"), 1, "{}", first.stderr);
    assert_eq!(scoring_lines(&first.stderr, "tiny-opt"), 1, "{}", first.stderr);
    assert_eq!(first.stderr.lines().filter(|l| l.ends_with(" done")).count(), 8, "{}", first.stderr);
    let scores = std::fs::read(tmp.path().join("scores.csv")).unwrap();

    // A second run (other attacks) reads the cache and computes nothing.
    let second = kdharness(attack_args(tmp.path(), &["--attacks", "loss,ref"]));
    second.ok();
    assert_eq!(scoring_lines(&second.stderr, "tiny-llama") + scoring_lines(&second.stderr, "tiny-opt"), 0, "{}", second.stderr);
    assert!(second.stderr.contains("signals of tiny-llama loaded from cache"));
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["models"][0]["signals"], "cache");
    assert_eq!(manifest["references"][0]["signals"], "cache");

    // Same attacks again: byte-identical scores.
    kdharness(attack_args(tmp.path(), &[])).ok();
    assert_eq!(std::fs::read(tmp.path().join("scores.csv")).unwrap(), scores);

    // A damaged cache entry is detected and recomputed, with the same result.
    for entry in std::fs::read_dir(tmp.path().join("signals")).unwrap() {
        let path = entry.unwrap().path();
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
    }
    let third = kdharness(attack_args(tmp.path(), &[]));
    third.ok();
    assert_eq!(scoring_lines(&third.stderr, "tiny-llama"), 1, "{}", third.stderr);
    assert_eq!(std::fs::read(tmp.path().join("scores.csv")).unwrap(), scores);

    // A different sample set is a different cache entry.
    let fourth = kdharness(attack_args(tmp.path(), &["--max-response-tokens", "8"]));
    fourth.ok();
    assert_eq!(scoring_lines(&fourth.stderr, "tiny-llama"), 1, "{}", fourth.stderr);
}
