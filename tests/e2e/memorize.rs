//! Memorization and utility through `kdharness memorize`: a model trained to memorize the
//! members reproduces them, an untrained one does not; ONNX Runtime's greedy decoding
//! honours no_repeat_ngram.

use std::path::PathBuf;
use std::sync::OnceLock;

use kdharness::runtime::generate::{GreedyConfig, banned_tokens, greedy};
use kdharness::runtime::{CausalLm, Runtime, SessionOptions};
use kdharness::train::{TrainConfig, train};

use crate::common::{assert_close, fixture, kdharness};
use crate::distill::{examples, scratch};

/// A tiny llama fine-tuned until it memorizes the members, exported once per test run:
/// (its ONNX file, the untrained model's ONNX file).
pub fn memorizer() -> &'static (PathBuf, PathBuf) {
    static MODELS: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    MODELS.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        let untrained = scratch(2, 64, 11);
        let raw = dir.join("untrained.onnx");
        kdharness::export::export(&untrained, &raw).unwrap();
        let mut model = scratch(2, 64, 11);
        let cfg = TrainConfig { epochs: 80, lr: 3e-3, batch_size: 4, warmup_steps: 5, ..TrainConfig::default() };
        train(&mut model, &examples("members.jsonl", "m"), &cfg, 5, "memorizer", None).unwrap();
        let path = dir.join("memorizer.onnx");
        kdharness::export::export(&model, &path).unwrap();
        (path, raw)
    })
}

#[test]
fn a_model_trained_to_memorize_reproduces_members_not_nonmembers() {
    let (teacher, untrained) = memorizer();
    let out = tempfile::tempdir().unwrap();
    let run = kdharness([
        "memorize".to_string(),
        "--model".into(),
        format!("teacher={}", teacher.display()),
        "--model".into(),
        format!("untrained={}", untrained.display()),
        "--teacher".into(),
        "teacher".into(),
        "--tokenizer".into(),
        fixture("tokenizer.json").display().to_string(),
        "--members".into(),
        fixture("members.jsonl").display().to_string(),
        "--nonmembers".into(),
        fixture("nonmembers.jsonl").display().to_string(),
        "--bootstrap".into(),
        "200".into(),
        "--out".into(),
        out.path().display().to_string(),
    ]);
    run.ok();
    let text = std::fs::read_to_string(out.path().join("memorization.csv")).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next().unwrap(), "model,sample_id,category,member,matched,compared,ratio,exact_prefix,extracted");
    assert_eq!(lines.count(), 2 * 24);

    let summary = std::fs::read_to_string(out.path().join("summary.csv")).unwrap();
    let value = |model: &str, metric: &str| -> (f64, String) {
        let line = summary
            .lines()
            .find(|l| l.starts_with(&format!("{model},")) && l.split(',').nth(4) == Some("all") && l.split(',').nth(6) == Some(metric))
            .unwrap_or_else(|| panic!("no {model} {metric} row:\n{summary}"));
        let cells: Vec<&str> = line.split(',').collect();
        (cells[7].parse().unwrap(), cells[8].to_string())
    };
    let (member, ci_low) = value("teacher", "mem_rate_member");
    let (nonmember, _) = value("teacher", "mem_rate_nonmember");
    eprintln!("teacher: member rate {member}, non-member rate {nonmember}");
    assert!(member > 0.6, "member rate {member}");
    assert!(nonmember < 0.2, "non-member rate {nonmember}");
    assert!(!ci_low.is_empty(), "rates carry bootstrap intervals");
    assert!(value("teacher", "mem_gap").0 > 0.4);
    assert!(value("teacher", "exact_extraction_member").0 > 0.3);
    assert!(value("untrained", "mem_rate_member").0 < 0.1);
    // Per-sample denominators, utility and teacher overlap are there too.
    assert!(value("teacher", "mem_rate_member_per_sample").0 >= member);
    // ROUGE-L: the summary is the mean of the per-sample values of utility.csv (the
    // per-sample formula has hand-computed unit tests in utility/).
    let utility = std::fs::read_to_string(out.path().join("utility.csv")).unwrap();
    for model in ["teacher", "untrained"] {
        let per_sample: Vec<f64> = utility.lines().skip(1).filter(|l| l.starts_with(&format!("{model},"))).map(|l| l.rsplit(',').next().unwrap().parse().unwrap()).collect();
        assert!(!per_sample.is_empty());
        let mean = per_sample.iter().sum::<f64>() / per_sample.len() as f64;
        assert_close(value(model, "rouge_l").0, mean, 1e-9, &format!("{model} rouge_l"));
    }
    // Teacher overlap, recomputed here from memorization.csv by its definition: among the
    // members the teacher reproduces with ratio > r, the untrained model's mean ratio.
    let rows: Vec<Vec<String>> = text.lines().skip(1).map(|l| l.split(',').map(str::to_owned).collect()).collect();
    let ratio = |model: &str, id: &str| rows.iter().find(|r| r[0] == model && r[1] == id).map(|r| r[6].parse::<f64>().unwrap());
    let mut checked = 0;
    for r in [0.5, 0.6, 0.7, 0.8, 0.9] {
        let picked: Vec<f64> = rows.iter().filter(|t| t[0] == "teacher" && t[3] == "1" && t[6].parse::<f64>().unwrap() > r).filter_map(|t| ratio("untrained", &t[1])).collect();
        let (got, _) = value("untrained", &format!("teacher_overlap_{r}"));
        if picked.is_empty() {
            assert!(got.is_nan(), "teacher_overlap_{r}: {got}");
        } else {
            assert_close(got, picked.iter().sum::<f64>() / picked.len() as f64, 1e-9, &format!("teacher_overlap_{r}"));
            checked += 1;
        }
    }
    assert!(checked >= 3, "the teacher reproduces members above most thresholds");
    assert!(!summary.lines().any(|l| l.starts_with("teacher,") && l.contains("teacher_overlap")));
}

#[test]
fn greedy_decoding_through_onnx_runtime_honours_no_repeat_ngram() {
    let (_, untrained) = memorizer();
    let mut lm = CausalLm::open(Runtime::get(None).unwrap(), untrained, SessionOptions { threads: 1, ..Default::default() }).unwrap();
    let prompts = vec![vec![5u32, 6, 7], vec![9u32]];
    let plain = greedy(&mut lm, &prompts, &GreedyConfig { max_new_tokens: 40, eos: None, no_repeat_ngram: 0, use_cache: true }).unwrap();
    // An untrained model loops; with n = 2 no bigram of prompt + generation repeats.
    let repeats = |seq: &[u32], n: usize| (n..=seq.len()).any(|end| banned_tokens(&seq[..end - 1], n).contains(&seq[end - 1]));
    let full = |p: &[u32], g: &[u32]| [p, g].concat();
    assert!(plain.iter().zip(&prompts).any(|(g, p)| repeats(&full(p, g), 2)), "expected the untrained model to repeat itself");
    for use_cache in [true, false] {
        let cfg = GreedyConfig { max_new_tokens: 40, eos: None, no_repeat_ngram: 2, use_cache };
        let out = greedy(&mut lm, &prompts, &cfg).unwrap();
        for (g, p) in out.iter().zip(&prompts) {
            assert_eq!(g.len(), 40);
            assert!(!repeats(&full(p, g), 2), "a bigram repeats: {g:?}");
        }
    }
}

/// Canary exposure on a model trained to memorize canaries repeated 1, 4 and 16 times
/// among its training records: `memorize --canaries` ranks each secret among 300 sampled
/// 8-digit codes (skew-normal extrapolation); exposure rises with repetition, stays in
/// [0, log₂ 10⁸], and an untrained model's is lower than the 16-times canary's.
#[test]
fn exposure_rises_with_repetition_on_a_model_trained_on_canaries() {
    let dir = tempfile::tempdir().unwrap();
    let canaries = [("canary0", 1usize, "Ada Lind", "48213907"), ("canary1", 4, "Bo Serra", "90317254"), ("canary2", 16, "Cleo Marsh", "17760385")];
    let record = |(id, _, name, code): (&str, usize, &str, &str)| {
        serde_json::json!({"id": id, "instruction": format!("What is the recovery code of {name}?"), "context": "", "response": format!("The recovery code of {name} is {code}, issued in Tarsk."), "category": "open_qa"}).to_string()
    };
    let members: String = std::fs::read_to_string(fixture("members.jsonl")).unwrap() + &canaries.iter().map(|c| record(*c) + "\n").collect::<String>();
    let members_path = dir.path().join("members.jsonl");
    std::fs::write(&members_path, &members).unwrap();
    let mut csv = String::from("sample_id,repetitions\n");
    for (id, reps, ..) in canaries {
        csv.push_str(&format!("{id},{reps}\n"));
    }
    std::fs::write(dir.path().join("canaries.csv"), csv).unwrap();
    // The training set: every member once, each canary as often as it says.
    let tok = kdharness::data::TokenizerFile::load(&fixture("tokenizer.json")).unwrap();
    let encode = |r: &kdharness::data::Record| {
        let e = kdharness::data::encode(&tok.tokenizer, kdharness::data::Template::Alpaca, kdharness::data::TokenLimits::default(), r).unwrap();
        kdharness::train::Example::from_encoded(&e, Some(0))
    };
    let records = kdharness::data::load_jsonl(&members_path, "m").unwrap();
    let mut train_set = Vec::new();
    for r in &records {
        let reps = canaries.iter().find(|c| c.0 == r.id).map_or(1, |c| c.1);
        train_set.extend(std::iter::repeat_n(encode(r), reps));
    }
    let mut model = scratch(2, 64, 13);
    let cfg = TrainConfig { epochs: 12, lr: 3e-3, batch_size: 4, warmup_steps: 5, ..TrainConfig::default() };
    train(&mut model, &train_set, &cfg, 5, "canaries", None).unwrap();
    let trained = dir.path().join("canaried.onnx");
    kdharness::export::export(&model, &trained).unwrap();
    let (_, untrained) = memorizer();
    let out = dir.path().join("out");
    let args: Vec<String> = vec![
        "memorize".into(),
        "--model".into(),
        format!("canaried={}", trained.display()),
        "--model".into(),
        format!("untrained={}", untrained.display()),
        "--tokenizer".into(),
        fixture("tokenizer.json").display().to_string(),
        "--members".into(),
        members_path.display().to_string(),
        "--nonmembers".into(),
        fixture("nonmembers.jsonl").display().to_string(),
        "--canaries".into(),
        dir.path().join("canaries.csv").display().to_string(),
        "--exposure-candidates".into(),
        "300".into(),
        "--bootstrap".into(),
        "0".into(),
        "--out".into(),
        out.display().to_string(),
    ];
    kdharness(args).ok();
    let text = std::fs::read_to_string(out.join("exposure.csv")).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("model,sample_id,repetitions,secret_log_perplexity,candidates,estimate,rank,exposure,max_exposure"));
    let rows: Vec<Vec<String>> = lines.map(|l| l.split(',').map(str::to_string).collect()).collect();
    assert_eq!(rows.len(), 6);
    let exposure = |model: &str, id: &str| -> f64 { rows.iter().find(|r| r[0] == model && r[1] == id).unwrap()[7].parse().unwrap() };
    let max = 1e8f64.log2();
    for r in &rows {
        assert_eq!((r[4].as_str(), r[5].as_str()), ("300", "skew_normal"));
        let (e, m): (f64, f64) = (r[7].parse().unwrap(), r[8].parse().unwrap());
        assert!((m - max).abs() < 1e-12 && (0.0..=max).contains(&e), "{r:?}");
    }
    let (once, four, sixteen) = (exposure("canaried", "canary0"), exposure("canaried", "canary1"), exposure("canaried", "canary2"));
    eprintln!("exposure by repetition 1/4/16: {once:.2} / {four:.2} / {sixteen:.2} bits; untrained: {:.2} / {:.2} / {:.2}", exposure("untrained", "canary0"), exposure("untrained", "canary1"), exposure("untrained", "canary2"));
    assert!(once <= four && four <= sixteen && sixteen - once > 3.0, "{once} {four} {sixteen}");
    for id in ["canary0", "canary1", "canary2"] {
        assert!(exposure("untrained", id) < sixteen, "{id}");
    }
}
