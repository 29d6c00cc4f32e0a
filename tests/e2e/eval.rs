//! `kdharness eval` end to end on configs/smoke.toml: every stage and every built-in plugin,
//! every output file; a run killed with SIGKILL during distillation resumes without
//! redoing finished models and ends with the CSVs of an uninterrupted run; changing only an
//! attack parameter reruns only the attack and report stages.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{bin_dir, kdharness};

fn smoke() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/smoke.toml")
}

fn eval(config: &Path, out: &Path) -> crate::common::Run {
    kdharness(["eval".to_string(), config.display().to_string(), "--out".into(), out.display().to_string()])
}

const TABLES: [&str; 8] =
    ["scores.csv", "summary.csv", "memorization.csv", "utility.csv", "blocks.csv", "comparisons.csv", "canaries.csv", "manifest.json"];

#[test]
fn smoke_runs_every_stage_and_plugin_and_writes_every_output() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let run = eval(&smoke(), &out);
    run.ok();
    for file in TABLES.iter().chain(&["report.html"]) {
        assert!(out.join(file).is_file(), "{file} missing");
    }
    for fig in ["fig1_student_auc", "fig2_baseline_auc", "fig3_roc", "fig4_auc_by_method", "fig5_blocks", "fig6_membership_vs_memorization", "fig7_memorization", "fig0_privacy_vs_utility", "fig8_canary_likelihood", "fig9_canary_exposure"] {
        for ext in ["png", "svg"] {
            assert!(out.join(format!("figures/{fig}.{ext}")).is_file(), "{fig}.{ext} missing");
        }
    }
    // Every built-in attack ran on every model; every KD method made a student.
    let scores = std::fs::read_to_string(out.join("scores.csv")).unwrap();
    for attack in ["loss", "zlib", "zlib_paper", "mink", "mink_paper", "minkpp", "minkpp_paper", "ref", "mope", "dcpdd", "recall", "rmia", "samia", "samia_zlib"] {
        assert!(scores.lines().any(|l| l.split(',').nth(1) == Some(attack)), "attack {attack} missing");
    }
    for model in ["teacher", "kd-tiny", "seqkd-tiny", "gkd-tiny", "imitkd-tiny", "minillm-tiny", "distillm-tiny", "nokd-tiny"] {
        assert!(scores.lines().any(|l| l.starts_with(&format!("{model},"))), "model {model} missing");
        assert!(out.join(format!("models/{model}/model.onnx")).is_file());
    }
    let summary = std::fs::read_to_string(out.join("summary.csv")).unwrap();
    assert!(summary.lines().any(|l| l.starts_with("gkd-tiny,student,gkd,tiny,all,loss,auc,")));
    assert!(summary.lines().any(|l| l.starts_with("nokd-tiny,nokd,,tiny,all,,mem_rate_member,")));
    assert!(summary.lines().any(|l| l.starts_with("teacher,teacher,,,all,,rouge_l,")));
    // SaMIA: the teacher's continuations are exactly the committed ones (same seed, same
    // samples) and score as tests/fixtures/make_samia_reference.py computes them.
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
    let sampled = std::fs::read(out.join("stages/attack/teacher/continuations-teacher-samia.jsonl")).unwrap();
    assert!(sampled == std::fs::read(fixtures.join("samia_smoke_teacher.jsonl")).unwrap(), "the teacher's continuations differ from the committed ones");
    let reference: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixtures.join("samia_reference.json")).unwrap()).unwrap();
    let mut checked = 0;
    for line in scores.lines().filter(|l| l.starts_with("teacher,samia")) {
        let f: Vec<&str> = line.split(',').collect();
        let want = reference["scores"][f[1]][f[2]].as_f64().unwrap_or_else(|| panic!("no reference for {line}"));
        assert!((f[5].parse::<f64>().unwrap() - want).abs() <= 1e-12, "{line} vs {want}");
        checked += 1;
    }
    assert_eq!(checked, 2 * 49);
    // ReCaLL and RMIA point the harness's way on the model trained on the members (AUC
    // 0.729 and 0.726 here).
    for attack in ["recall", "rmia"] {
        let row = summary.lines().find(|l| l.starts_with(&format!("teacher,teacher,,,all,{attack},auc,"))).expect("teacher AUC");
        assert!(row.split(',').nth(7).unwrap().parse::<f64>().unwrap() > 0.6, "{row}");
    }
    // The manifest says how the run was made.
    let manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    assert!(manifest["config"].as_str().unwrap().contains("name = \"smoke\""));
    assert_eq!(manifest["seed"], 1);
    assert!(!manifest["git_revision"].as_str().unwrap().is_empty());
    assert!(manifest["onnx_runtime"]["library"]["path"].is_string(), "{}", manifest["onnx_runtime"]);
    assert_eq!(manifest["plugins"].as_array().unwrap().len(), 14);
    assert!(manifest["plugins"][0]["sha256"].as_str().unwrap().len() == 64);
    assert_eq!(manifest["kd_plugins"].as_array().unwrap().len(), 7);
    assert_eq!(manifest["models"].as_array().unwrap().len(), 8);
    assert!(manifest["models"][0]["onnx"]["sha256"].as_str().unwrap().len() == 64);
    // What each attack cost on each model.
    for m in manifest["models"].as_array().unwrap() {
        let costs = m["attack_seconds"].as_object().unwrap_or_else(|| panic!("no attack_seconds: {m}"));
        assert_eq!(costs.len(), 14, "{m}");
        assert!(costs.values().all(|s| s.as_f64().is_some_and(|s| s >= 0.0)), "{m}");
    }
    assert_eq!(manifest["models"][1]["role"], serde_json::json!({"role": "student", "kd_method": "kd", "student": "tiny"}));
    assert!(manifest["data"]["members.jsonl"]["sha256"].as_str().unwrap().len() == 64);
    for stage in ["data", "teacher", "distill", "export", "attack", "memorize", "report"] {
        assert!(manifest["stages"][stage]["seconds"].is_number(), "stage {stage} timing missing: {}", manifest["stages"]);
    }
    // Canaries were planted among the members, each with its repetition count.
    let canaries = std::fs::read_to_string(out.join("canaries.csv")).unwrap();
    assert_eq!(canaries.lines().skip(1).map(|l| l.split(',').nth(1).unwrap()).collect::<Vec<_>>(), ["1", "2", "4", "8"]);
    let members = std::fs::read_to_string(out.join("data/teacher_train.jsonl")).unwrap();
    assert_eq!(members.matches("canary3").count(), 8);
}

/// A slower smoke config, so that a run can be interrupted during distillation.
fn slower_smoke(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(smoke()).unwrap().replace("train = { epochs = 1, lr = 3e-3, batch_size = 8 }", "train = { epochs = 12, lr = 3e-3, batch_size = 4 }");
    assert!(text.contains("epochs = 12"));
    let path = dir.join("smoke-slow.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn read(dir: &Path, files: &[&str]) -> Vec<String> {
    files.iter().map(|f| std::fs::read_to_string(dir.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"))).collect()
}

#[cfg(unix)]
#[test]
fn a_killed_run_resumes_without_redoing_finished_models_and_matches_an_uninterrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    let config = slower_smoke(tmp.path());
    let whole = tmp.path().join("whole");
    eval(&config, &whole).ok();

    let resumed = tmp.path().join("resumed");
    let mut child = Command::new(bin_dir().join("kdharness"))
        .args(["eval", &config.display().to_string(), "--out", &resumed.display().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once the first student (No-KD: warm starts begin from it) is finished,
    // while the others train.
    let first = resumed.join("models/nokd-tiny/.done");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !first.exists() {
        assert!(Instant::now() < deadline && child.try_wait().unwrap().is_none(), "the run ended before its first student was done");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(!resumed.join("models/distillm-tiny/.done").exists(), "killed too late: every student was done");
    let first_weights = resumed.join("models/nokd-tiny/model.safetensors");
    let before = std::fs::metadata(&first_weights).unwrap().modified().unwrap();

    let rerun = eval(&config, &resumed);
    rerun.ok();
    assert!(rerun.stderr.contains("teacher: up to date"), "{}", rerun.stderr);
    assert!(rerun.stderr.contains("distill: up to date"), "finished students are not redone:\n{}", rerun.stderr);
    assert_eq!(std::fs::metadata(&first_weights).unwrap().modified().unwrap(), before, "nokd-tiny was retrained");
    let files = ["scores.csv", "summary.csv", "memorization.csv", "utility.csv", "blocks.csv", "comparisons.csv"];
    assert!(read(&whole, &files) == read(&resumed, &files), "the resumed run's CSVs differ from the uninterrupted run's");

    // Changing only an attack parameter reruns only the attack and report stages.
    let text = std::fs::read_to_string(&config).unwrap().replace("\"mope.sigma\" = \"0.01\"", "\"mope.sigma\" = \"0.02\"");
    std::fs::write(&config, text).unwrap();
    let changed = eval(&config, &whole);
    changed.ok();
    for stage in ["data", "teacher", "distill", "export", "memorize"] {
        assert!(changed.stderr.contains(&format!("{stage}: up to date")), "{stage} reran:\n{}", changed.stderr);
        assert!(!changed.stderr.contains(&format!("{stage}: running")), "{stage} reran:\n{}", changed.stderr);
    }
    assert!(changed.stderr.contains("attack: running"), "{}", changed.stderr);
    assert!(read(&whole, &["memorization.csv"]) == read(&resumed, &["memorization.csv"]));
    assert!(read(&whole, &["scores.csv"]) != read(&resumed, &["scores.csv"]), "MoPe scores should change with sigma");
}

#[test]
fn configs_with_unknown_keys_are_refused_with_a_suggestion() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("bad.toml");
    std::fs::write(&path, std::fs::read_to_string(smoke()).unwrap().replace("vocab_size", "vocab_sise")).unwrap();
    let run = eval(&path, &tmp.path().join("out"));
    let line = run.error_line();
    assert!(line.contains("unknown field `vocab_sise`") && line.contains("did you mean `vocab_size`"), "{line}");
    assert!(line.contains("bad.toml:"), "{line}");
}
