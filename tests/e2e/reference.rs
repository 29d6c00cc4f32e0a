//! Signals and every built-in attack against values computed independently (numpy
//! float64 forward pass, Python's zlib) by tests/fixtures/make_fixtures.py.

use crate::common::*;
use kdharness::score::BatchSettings;

const ATTACKS: [&str; 7] = ["loss", "zlib", "mink", "minkpp", "mink_paper", "minkpp_paper", "zlib_paper"];

#[test]
fn signals_match_the_numpy_reference() {
    let reference = reference_json();
    for (model, onnx, tokenizer) in [("tiny-llama", "tiny-llama.onnx", "tokenizer.json"), ("tiny-opt", "tiny-opt.onnx", "tokenizer-b.json")] {
        let signals = fixture_signals(onnx, tokenizer, BatchSettings::default());
        assert_eq!(signals.len(), 24);
        for sample in &signals {
            let want = &reference["models"][model]["samples"][&sample.id];
            let ids = |key: &str| -> Vec<u32> { want[key].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect() };
            let floats = |key: &str| -> Vec<f64> { want[key].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect() };
            assert_eq!(sample.token_ids, ids("token_ids"), "{model} {}", sample.id);
            assert_eq!(sample.argmax_id, ids("argmax_id"), "{model} {}", sample.id);
            assert_eq!(sample.argmax_text, want["argmax_text"].as_str().unwrap(), "{model} {}", sample.id);
            for (got, key) in [(&sample.target_logprob, "target_logprob"), (&sample.dist_mean, "dist_mean"), (&sample.dist_var, "dist_var")] {
                let expected = floats(key);
                assert_eq!(got.len(), expected.len());
                for (t, (g, w)) in got.iter().zip(&expected).enumerate() {
                    assert_close(*g, *w, 1e-5, &format!("{model} {} {key}[{t}]", sample.id));
                }
            }
        }
    }
}

/// Relative tolerance: `mink_paper` scores are probabilities around 1e-5.
fn assert_score(got: f64, want: f64, what: &str) {
    assert!((got - want).abs() <= 1e-5 * want.abs() + 1e-12, "{what}: got {got}, want {want}");
}

#[test]
fn every_attack_matches_the_reference_through_real_plugins() {
    let reference = reference_json();
    let tmp = tempfile::tempdir().unwrap();

    // tiny-llama, with tiny-opt (its own tokenizer) as the reference model.
    let out = tmp.path().join("llama");
    kdharness(attack_args(&out, &[])).ok();
    let scores = read_scores(&out.join("scores.csv"));
    let samples = reference["models"]["tiny-llama"]["samples"].as_object().unwrap();
    for attack in ATTACKS.iter().chain(&["ref"]) {
        for (id, want) in samples {
            let (member, got) = scores[&("tiny-llama".to_string(), attack.to_string(), id.clone())];
            assert_eq!(member, want["member"].as_u64() == Some(1));
            assert_score(got, want["scores"][attack].as_f64().unwrap(), &format!("tiny-llama {attack} {id}"));
        }
    }
    assert_eq!(scores.len(), 8 * 24);

    // tiny-opt as a target (no position_ids input) with its own tokenizer; without a
    // reference model the default attack set leaves `ref` out.
    let out = tmp.path().join("opt");
    kdharness(one_model_attack(
        "tiny-opt",
        &fixture("tiny-opt.onnx"),
        &fixture("tokenizer-b.json"),
        &fixture("members.jsonl"),
        &fixture("nonmembers.jsonl"),
        &out,
        &["--bootstrap", "0"],
    ))
    .ok();
    let scores = read_scores(&out.join("scores.csv"));
    assert_eq!(scores.len(), 7 * 24);
    for attack in ATTACKS {
        for (id, want) in reference["models"]["tiny-opt"]["samples"].as_object().unwrap() {
            let (_, got) = scores[&("tiny-opt".to_string(), attack.to_string(), id.clone())];
            assert_score(got, want["scores"][attack].as_f64().unwrap(), &format!("tiny-opt {attack} {id}"));
        }
    }
}

#[test]
fn outputs_have_exactly_the_spec_columns() {
    let tmp = tempfile::tempdir().unwrap();
    let run = kdharness(attack_args(tmp.path(), &["--attacks", "loss,ref", "--json"]));
    let printed: serde_json::Value = serde_json::from_str(&run.ok().stdout).unwrap();
    let scores = std::fs::read_to_string(tmp.path().join("scores.csv")).unwrap();
    assert_eq!(scores.lines().next().unwrap(), "model,attack,sample_id,category,member,score");
    let summary = std::fs::read_to_string(tmp.path().join("summary.csv")).unwrap();
    assert_eq!(
        summary.lines().next().unwrap(),
        "model,role,kd_method,student,category,attack,metric,value,ci_low,ci_high,n_members,n_nonmembers,realized_fpr,threshold"
    );
    assert_eq!(printed.as_array().unwrap().len(), summary.lines().count() - 1);
    assert_eq!(printed[0]["metric"], "auc");
    let metrics: std::collections::BTreeSet<&str> =
        summary.lines().skip(1).map(|l| l.split(',').nth(6).unwrap()).collect();
    let want: std::collections::BTreeSet<&str> = kdharness::metrics::METRIC_NAMES.into_iter().collect();
    assert_eq!(metrics, want);
    // Every row of the overall cut counts all 12 members and 12 non-members.
    for line in summary.lines().skip(1).filter(|l| l.contains(",all,")) {
        let cells: Vec<&str> = line.split(',').collect();
        assert_eq!((cells[1], cells[10], cells[11]), ("target", "12", "12"), "{line}");
    }
}

#[test]
fn several_reference_models_give_one_named_ref_attack_each() {
    let tmp = tempfile::tempdir().unwrap();
    let opt = fixture("tiny-opt.onnx").display().to_string();
    let second = format!("opt-b={opt}");
    kdharness(attack_args(tmp.path(), &["--reference", &second, "--attacks", "ref"])).ok();
    let scores = read_scores(&tmp.path().join("scores.csv"));
    let reference = reference_json();
    for label in ["ref:tiny-opt", "ref:opt-b"] {
        for (id, want) in reference["models"]["tiny-llama"]["samples"].as_object().unwrap() {
            let (_, got) = scores[&("tiny-llama".to_string(), label.to_string(), id.clone())];
            assert_score(got, want["scores"]["ref"].as_f64().unwrap(), &format!("{label} {id}"));
        }
    }
    assert_eq!(scores.len(), 2 * 24);
}

/// DC-PDD through its real plugin and the harness's token frequency table, against
/// tests/fixtures/make_dcpdd_reference.py (numpy and `tokenizers`, the fixture's
/// non-members as the reference corpus), for the default cap and a = 1; without a corpus
/// the attack is refused in one line.
#[test]
fn dcpdd_matches_the_numpy_reference_and_needs_a_corpus() {
    let reference: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixture("dcpdd_reference.json")).unwrap()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let corpus = fixture("nonmembers.jsonl").display().to_string();
    for (a, params) in [("0.01", vec![]), ("1.0", vec!["--param", "dcpdd.a=1"])] {
        let out = tmp.path().join(format!("a{a}"));
        let mut extra = vec!["--attacks", "dcpdd", "--frequency-corpus", &corpus, "--bootstrap", "0"];
        extra.extend(&params);
        let args = one_model_attack("tiny-llama", &fixture("tiny-llama.onnx"), &fixture("tokenizer.json"), &fixture("members.jsonl"), &fixture("nonmembers.jsonl"), &out, &extra);
        kdharness(args).ok();
        let scores = read_scores(&out.join("scores.csv"));
        assert_eq!(scores.len(), 24);
        for (id, want) in reference["scores"][a].as_object().unwrap() {
            let (_, got) = scores[&("tiny-llama".to_string(), "dcpdd".to_string(), id.clone())];
            assert_score(got, want.as_f64().unwrap(), &format!("dcpdd a={a} {id}"));
        }
        // The table the scores came from, as the manifest records it.
        let manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
        assert_eq!(manifest["token_frequency"]["tokens"], reference["tokens"]);
        assert_eq!(manifest["token_frequency"]["vocab"], reference["vocab"]);
    }
    let out = tmp.path().join("no-corpus");
    let args = one_model_attack("tiny-llama", &fixture("tiny-llama.onnx"), &fixture("tokenizer.json"), &fixture("members.jsonl"), &fixture("nonmembers.jsonl"), &out, &["--attacks", "dcpdd"]);
    let line = kdharness(args).error_line();
    assert!(line.contains("attack `dcpdd` needs a reference corpus for its token frequency table; pass one with --frequency-corpus"), "{line}");
}

/// ReCaLL through its real plugin and the harness's prefixed scoring (ONNX Runtime),
/// against tests/fixtures/make_recall_reference.py (numpy float64 forward pass with the
/// prefix of tests/fixtures/pool.jsonl's last records), for the default prefix and one
/// whose shots are dropped and cut; without a pool the attack is refused in one line.
#[test]
fn recall_matches_the_numpy_reference_and_needs_a_pool() {
    let reference: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixture("recall_reference.json")).unwrap()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let pool = fixture("pool.jsonl").display().to_string();
    for (setting, params) in [("3/256", vec![]), ("4/60", vec!["--param", "recall.shots=4", "--param", "recall.max_prefix_tokens=60"])] {
        let out = tmp.path().join(setting.replace('/', "-"));
        let mut extra = vec!["--attacks", "recall", "--prefix-pool", &pool, "--bootstrap", "0"];
        extra.extend(&params);
        let args = one_model_attack("tiny-llama", &fixture("tiny-llama.onnx"), &fixture("tokenizer.json"), &fixture("members.jsonl"), &fixture("nonmembers.jsonl"), &out, &extra);
        kdharness(args).ok();
        let scores = read_scores(&out.join("scores.csv"));
        assert_eq!(scores.len(), 24);
        for (id, want) in reference["settings"][setting]["scores"].as_object().unwrap() {
            let (_, got) = scores[&("tiny-llama".to_string(), "recall".to_string(), id.clone())];
            assert_score(got, want.as_f64().unwrap(), &format!("recall {setting} {id}"));
        }
    }
    let out = tmp.path().join("no-pool");
    let args = one_model_attack("tiny-llama", &fixture("tiny-llama.onnx"), &fixture("tokenizer.json"), &fixture("members.jsonl"), &fixture("nonmembers.jsonl"), &out, &["--attacks", "recall"]);
    let line = kdharness(args).error_line();
    assert!(line.contains("attack `recall` needs known non-members for its prefix; pass a pool with --prefix-pool"), "{line}");
}

/// RMIA through its real plugin, with tiny-opt (own tokenizer) as the reference model and
/// tests/fixtures/pool.jsonl as the population, against tests/fixtures/make_rmia_reference.py
/// (numpy float64 forward passes; every ratio at least 1.7e-3 from the threshold, so the
/// shares are exact); without a population the attack is refused in one line.
#[test]
fn rmia_matches_the_numpy_reference_and_needs_a_population() {
    let reference: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixture("rmia_reference.json")).unwrap()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let population = fixture("pool.jsonl").display().to_string();
    for (setting, params) in [("0.3/1.0", vec![]), ("0.3/0.9", vec!["--param", "rmia.gamma=0.9"])] {
        assert!(reference["settings"][setting]["min_margin"].as_f64().unwrap() > 1e-3);
        let out = tmp.path().join(setting.replace('/', "-"));
        let mut extra = vec!["--attacks", "rmia", "--population", &population];
        extra.extend(&params);
        kdharness(attack_args(&out, &extra)).ok();
        let scores = read_scores(&out.join("scores.csv"));
        assert_eq!(scores.len(), 24);
        for (id, want) in reference["settings"][setting]["scores"].as_object().unwrap() {
            let (_, got) = scores[&("tiny-llama".to_string(), "rmia".to_string(), id.clone())];
            assert_eq!(got, want.as_f64().unwrap(), "rmia {setting} {id}");
        }
    }
    let line = kdharness(attack_args(&tmp.path().join("no-population"), &["--attacks", "rmia"])).error_line();
    assert!(line.contains("attack `rmia` needs a population of known non-members; pass one with --population"), "{line}");
}
