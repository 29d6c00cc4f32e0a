//! MoPe and per-block risk through `kdharness attack`: σ = 0 gives scores of exactly 0,
//! noise is seeded (reruns are identical), blocks.csv has one row per block, and exports
//! whose weight names hide the block get a clear error while everything else is written.

use crate::common::{built_library, fixture, install, kdharness, one_model_attack, read_scores};
use crate::memorize::memorizer;

fn mope_args(model: &std::path::Path, out: &std::path::Path, extra: &[&str]) -> Vec<String> {
    one_model_attack(
        "m",
        model,
        &fixture("tokenizer.json"),
        &fixture("members.jsonl"),
        &fixture("nonmembers.jsonl"),
        out,
        &[&["--attacks", "mope,loss", "--bootstrap", "0"], extra].concat(),
    )
}

#[test]
fn mope_is_zero_without_noise_and_seeded_with_it() {
    let (model, _) = memorizer();
    let tmp = tempfile::tempdir().unwrap();
    let zero = tmp.path().join("zero");
    kdharness(mope_args(model, &zero, &["--param", "mope.sigma=0", "--param", "mope.n=2", "--blocks"])).ok();
    let scores = read_scores(&zero.join("scores.csv"));
    let mope: Vec<f64> = scores.iter().filter(|(k, _)| k.1 == "mope").map(|(_, v)| v.1).collect();
    assert_eq!(mope.len(), 24);
    assert!(mope.iter().all(|&s| s == 0.0), "σ = 0 must give exactly 0: {mope:?}");
    // Every score tied: each block's AUC is exactly 1/2 (ties count half).
    let blocks = std::fs::read_to_string(zero.join("blocks.csv")).unwrap();
    let aucs: Vec<&str> = blocks.lines().skip(1).map(|l| l.rsplit(',').next().unwrap()).collect();
    assert_eq!(aucs.len(), 2, "{blocks}");
    assert!(aucs.iter().all(|a| a.parse::<f64>().unwrap() == 0.5), "{blocks}");

    // With noise: members of a memorizing model are hurt more; a rerun (fresh cache) is
    // identical, a different seed is not.
    let runs: Vec<String> = ["a", "b", "c"]
        .iter()
        .map(|name| {
            let out = tmp.path().join(name);
            let seed = if *name == "c" { "1" } else { "0" };
            kdharness(mope_args(model, &out, &["--param", "mope.sigma=0.05", "--param", "mope.n=3", "--seed", seed, "--blocks"])).ok();
            std::fs::read_to_string(out.join("scores.csv")).unwrap()
        })
        .collect();
    assert_eq!(runs[0], runs[1], "same seed, same perturbations");
    assert_ne!(runs[0], runs[2], "another seed draws other noise");
    let scores = read_scores(&tmp.path().join("a/scores.csv"));
    let mean = |member: bool| {
        let v: Vec<f64> = scores.iter().filter(|(k, v)| k.1 == "mope" && v.0 == member).map(|(_, v)| v.1).collect();
        v.iter().sum::<f64>() / v.len() as f64
    };
    eprintln!("mean MoPe score: members {}, non-members {}", mean(true), mean(false));
    assert!(mean(true) > mean(false), "noise should raise the members' loss more");

    let blocks = std::fs::read_to_string(tmp.path().join("a/blocks.csv")).unwrap();
    let lines: Vec<&str> = blocks.lines().collect();
    assert_eq!(lines[0], "model,block,attack,auc");
    assert_eq!(lines.len(), 1 + 2, "{blocks}");
    for (i, line) in lines[1..].iter().enumerate() {
        let cells: Vec<&str> = line.split(',').collect();
        assert_eq!(&cells[..3], &["m", &i.to_string(), "mope"]);
        let auc: f64 = cells[3].parse().unwrap();
        assert!((0.0..=1.0).contains(&auc));
    }
}

/// `--blocks-of` sweeps only the named models and `--blocks-param` sets the sweep's own
/// attack parameters: with `mope.n=1` there, the block AUCs are those of a one-draw run
/// while the whole-model scores keep the stage's n = 3 (the noise of a draw does not
/// depend on how many draws are made).
#[test]
fn a_sweep_of_chosen_models_with_its_own_parameters() {
    let (model, _) = memorizer();
    let tmp = tempfile::tempdir().unwrap();
    let other = format!("other={}", model.display());
    let run = |name: &str, extra: &[&str]| {
        let out = tmp.path().join(name);
        kdharness(mope_args(model, &out, &[&["--model", other.as_str(), "--param", "mope.sigma=0.05"], extra].concat())).ok();
        let blocks = std::fs::read_to_string(out.join("blocks.csv")).unwrap_or_default();
        (std::fs::read_to_string(out.join("scores.csv")).unwrap(), blocks)
    };
    let (scores, blocks) = run("chosen", &["--param", "mope.n=3", "--blocks-of", "m", "--blocks-param", "mope.n=1"]);
    let rows: Vec<&str> = blocks.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "only m's two blocks: {blocks}");
    assert!(rows.iter().all(|r| r.starts_with("m,")), "{blocks}");
    let (one_draw_scores, one_draw_blocks) = run("one-draw", &["--param", "mope.n=1", "--blocks"]);
    let m_rows: Vec<&str> = one_draw_blocks.lines().skip(1).filter(|r| r.starts_with("m,")).collect();
    assert_eq!(rows, m_rows, "the sweep used one draw");
    let (three_draw_scores, _) = run("three-draws", &["--param", "mope.n=3"]);
    assert_eq!(scores, three_draw_scores, "the whole-model attack kept n = 3");
    assert_ne!(scores, one_draw_scores);

    let out = tmp.path().join("unknown");
    let bad = kdharness(mope_args(model, &out, &["--blocks-of", "nobody"]));
    assert_eq!(bad.code, Some(1), "{}", bad.stderr);
    assert!(bad.stderr.contains("`nobody`, which is not a model of this run (m)"), "{}", bad.stderr);
}

#[test]
fn an_export_without_block_names_gets_a_clear_error_and_keeps_its_other_results() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let run = kdharness(mope_args(&fixture("optimum/llama/model.onnx"), &out, &["--param", "mope.n=1", "--blocks"]));
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(run.stderr.contains("anonymous names (e.g. `onnx::MatMul_") && run.stderr.contains("kdharness model export"), "{}", run.stderr);
    assert!(!run.stderr.contains("panicked"));
    // Whole-model MoPe needs no block names: its scores were written.
    let scores = read_scores(&out.join("scores.csv"));
    assert_eq!(scores.iter().filter(|(k, _)| k.1 == "mope").count(), 24);
    assert_eq!(std::fs::read_to_string(out.join("blocks.csv")).unwrap().lines().count(), 1);
}

/// A perturbation attack written in a plugin crate alone (tests/plugins/sharpness, with
/// parameters the harness has never heard of) gets the perturbed losses it asks for, in
/// the whole-model attack and in the per-block sweep. With one draw, its worst case is
/// the mean: its scores and block AUCs equal MoPe's to the bit, because both asked for the
/// same perturbations.
#[test]
fn a_perturbation_attack_from_a_plugin_crate_alone() {
    let (model, _) = memorizer();
    let tmp = tempfile::tempdir().unwrap();
    let plugins = tmp.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    install(&built_library("kdhtest_sharpness"), &plugins, "sharpness");
    // Scores of mope and sharpness by sample, and blocks.csv's rows.
    let run = |name: &str, extra: &[&str]| {
        let out = tmp.path().join(name);
        let base = ["--attacks", "mope,sharpness", "--bootstrap", "0", "--plugin-dir", plugins.to_str().unwrap()];
        let f = |n: &str| fixture(n);
        kdharness(one_model_attack("m", model, &f("tokenizer.json"), &f("members.jsonl"), &f("nonmembers.jsonl"), &out, &[&base[..], extra].concat())).ok();
        let scores = read_scores(&out.join("scores.csv"));
        let of = |attack: &str| -> Vec<f64> { scores.iter().filter(|(k, _)| k.1 == attack).map(|(_, v)| v.1).collect() };
        (of("mope"), of("sharpness"), std::fs::read_to_string(out.join("blocks.csv")).unwrap_or_default())
    };

    let (mope, sharpness, blocks) =
        run("one", &["--blocks", "--param", "mope.n=1", "--param", "mope.sigma=0.05", "--param", "sharpness.draws=1", "--param", "sharpness.noise=0.05"]);
    assert_eq!(sharpness.len(), 24);
    assert_eq!(sharpness, mope);
    assert!(sharpness.iter().any(|&s| s != 0.0), "noise of 0.05 moves the loss");
    let rows: Vec<Vec<&str>> = blocks.lines().skip(1).map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 2 * 2, "two blocks × two perturbation attacks: {blocks}");
    for block in ["0", "1"] {
        let auc = |attack: &str| rows.iter().find(|r| r[1] == block && r[2] == attack).map(|r| r[3].to_string()).unwrap();
        assert_eq!(auc("sharpness"), auc("mope"), "block {block}: {blocks}");
    }

    // With three draws the worst case is at least the mean, and larger somewhere.
    let (mean, worst, _) = run("three", &["--param", "mope.n=3", "--param", "sharpness.draws=3"]);
    assert!(worst.iter().zip(&mean).all(|(w, m)| w >= m), "max >= mean");
    assert!(worst.iter().zip(&mean).any(|(w, m)| w > m), "max > mean for some sample");
}

#[test]
fn a_perturbation_reaches_every_weight_of_its_block() {
    // The ONNX Runtime session of a perturbed block computes exactly what candle computes
    // with the same noise added to that block's weights: projections, norm gains and all.
    use candle_core::{Device, Tensor};
    use kdharness::blocks::{OnnxWeights, Scope, open_perturbed, perturbed};
    use kdharness::model::Model;
    use kdharness::runtime::{CausalLm, LmBatch, PaddingSide, Runtime, SessionOptions};
    let model = crate::distill::scratch(2, 32, 21);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.onnx");
    kdharness::export::export(&model, &path).unwrap();
    let weights = OnnxWeights::read(&path).unwrap();
    let blocks = weights.blocks().unwrap();
    let rows = vec![vec![5u32, 6, 7, 8, 9], vec![10, 11, 12, 13, 14]];
    let batch = LmBatch::pad(rows.iter().map(Vec::as_slice), PaddingSide::Right, 0);
    let options = SessionOptions { threads: 1, ..Default::default() };
    let runtime = Runtime::get(None).unwrap();
    let base = CausalLm::open(runtime, &path, options).unwrap().forward(&batch, |l, _| l.to_vec()).unwrap();
    for scope in [Scope::Block(0), Scope::Block(1), Scope::All] {
        let noise = perturbed(&weights, Some(&blocks), scope, 0.05, 3, 0);
        let mut tensors: std::collections::HashMap<String, Tensor> =
            model.params.iter().map(|(n, v)| (n.to_owned(), v.as_tensor().clone())).collect();
        for init in &noise {
            tensors.insert(init.name.clone(), Tensor::from_slice(&init.values, init.dims.as_slice(), &Device::Cpu).unwrap());
        }
        let want = Model::from_tensors(model.config.clone(), tensors, &Device::Cpu).unwrap();
        let want = want.forward_rows(&rows, 0).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let got = open_perturbed(runtime, &path, options, noise).unwrap().forward(&batch, |l, _| l.to_vec()).unwrap();
        let diff = |a: &[f32], b: &[f32]| a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(diff(&got, &want) < 1e-4, "{scope:?}: ONNX Runtime and candle differ by {}", diff(&got, &want));
        assert!(diff(&got, &base) > 1e-2, "{scope:?}: the perturbation changed nothing");
    }
}
