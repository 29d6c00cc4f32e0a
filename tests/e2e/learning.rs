//! Students that learn (issue 18): a student trained for zero steps is flagged
//! `did_not_learn` in summary.csv and the report, a trained one is not; every trained model
//! records its budget and held-out loss in the manifest; students of one size are tested
//! against each other in comparisons.csv.

use std::path::{Path, PathBuf};

use crate::common::kdharness;

/// configs/smoke.toml cut to one KD method and the loss attack, with a student size large
/// enough to learn: its base model and its students trained for `epochs` each (the KD
/// student warm-started from No-KD), with longer generations for ROUGE-L.
fn config(dir: &Path, epochs: usize) -> PathBuf {
    let smoke = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/smoke.toml")).unwrap();
    let train = format!("train = {{ epochs = {epochs}, lr = 3e-3, batch_size = 8 }}");
    let text = smoke
        .replace("synthetic_records = 70", "synthetic_records = 300")
        .replace("nonmember_count = 20", "nonmember_count = 60")
        .replace(
            "name = \"tiny\"\nshape = { arch = \"llama\", layers = 1, d_model = 32, heads = 2, kv_heads = 1, ffn = 64 }",
            "name = \"tiny\"\nshape = { arch = \"llama\", layers = 1, d_model = 64, heads = 4, kv_heads = 2, ffn = 172 }\ninit = \"base\"",
        )
        .replace(r#"methods = ["kd", "seqkd", "gkd", "imitkd", "minillm", "distillm"]"#, r#"methods = ["kd"]"#)
        .replace("train = { epochs = 1, lr = 3e-3, batch_size = 8 }", &format!("{train}\nkd_ratio = 0.5\nwarm_start = [\"kd\"]"))
        .replace(r#"names = ["loss", "zlib", "zlib_paper", "mink", "mink_paper", "minkpp", "minkpp_paper", "ref", "mope", "dcpdd", "recall", "rmia", "samia", "samia_zlib"]"#, r#"names = ["loss"]"#)
        .replace("[attacks.params]\n\"mope.n\" = \"2\"\n\"mope.sigma\" = \"0.01\"\n\"samia.n\" = \"5\"\n\"samia_zlib.n\" = \"5\"\n", "")
        .replace("[attacks]", &format!("[base]\n{train}\n\n[attacks]"))
        .replace("max_new_tokens = 8\n\n[blocks]\nenabled = true", "max_new_tokens = 24\n\n[blocks]\nenabled = false");
    for wanted in ["init = \"base\"", "warm_start", "[base]", "enabled = false", "nonmember_count = 60"] {
        assert!(text.contains(wanted), "smoke.toml changed: update this test ({wanted})");
    }
    assert!(!text.contains("mope"), "smoke.toml changed: update this test (mope)");
    let path = dir.join(format!("learn-{epochs}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn eval(config: &Path, out: &Path) {
    kdharness(["eval".to_string(), config.display().to_string(), "--out".into(), out.display().to_string(), "-q".into()]).ok();
}

fn manifest(run: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(run.join("manifest.json")).unwrap()).unwrap()
}

/// `metric`'s value for `model` in summary.csv (category `all`).
fn summary(run: &Path, model: &str, metric: &str) -> Option<f64> {
    let text = std::fs::read_to_string(run.join("summary.csv")).unwrap();
    text.lines().skip(1).map(|l| l.split(',').collect::<Vec<_>>()).find(|f| f[0] == model && f[4] == "all" && f[6] == metric).map(|f| f[7].parse().unwrap())
}

#[test]
fn a_student_trained_for_zero_steps_is_flagged_and_a_trained_one_is_not() {
    let tmp = tempfile::tempdir().unwrap();
    let (trained, untrained) = (tmp.path().join("trained"), tmp.path().join("untrained"));
    eval(&config(tmp.path(), 6), &trained);
    eval(&config(tmp.path(), 0), &untrained);

    // Budgets and held-out losses reach the manifest.
    let steps = |run: &Path, name: &str| {
        let m = manifest(run);
        let model = m["models"].as_array().unwrap().iter().find(|x| x["name"] == name).unwrap().clone();
        (model["training"]["steps"].as_u64().unwrap(), model["training"]["heldout_ce"].as_f64().unwrap())
    };
    let (kd_steps, kd_ce) = steps(&trained, "kd-tiny");
    assert!(kd_steps > 0 && steps(&trained, "nokd-tiny").0 == kd_steps, "equal budgets");
    let (zero_steps, zero_ce) = steps(&untrained, "kd-tiny");
    assert_eq!(zero_steps, 0);
    assert!(kd_ce < zero_ce, "training lowers the held-out loss: {kd_ce} vs {zero_ce}");
    assert_eq!(summary(&trained, "kd-tiny", "heldout_ce"), Some(kd_ce));

    // The trained student learned; the zero-step one (base model and student both
    // untrained), judged against the trained run's No-KD student, did not. Measured:
    // ROUGE-L 17.3 (kd-tiny), 9.8 (nokd-tiny), 0.0 (zero steps); margin 5. Its utility rows and manifest entry join the trained run
    // under another name, and the report is rebuilt from the files.
    assert_eq!(summary(&trained, "kd-tiny", "did_not_learn"), Some(0.0), "a trained student is not flagged");
    let rows: String = std::fs::read_to_string(untrained.join("utility.csv"))
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("kd-tiny,"))
        .map(|l| format!("kd0{}\n", &l[2..]))
        .collect();
    assert!(!rows.is_empty());
    let mut utility = std::fs::read_to_string(trained.join("utility.csv")).unwrap();
    utility.push_str(&rows);
    std::fs::write(trained.join("utility.csv"), utility).unwrap();
    let mut m = manifest(&trained);
    let mut zero = manifest(&untrained)["models"].as_array().unwrap().iter().find(|x| x["name"] == "kd-tiny").unwrap().clone();
    zero["name"] = "kd0-tiny".into();
    zero["role"]["kd_method"] = "kd0".into();
    m["models"].as_array_mut().unwrap().push(zero);
    std::fs::write(trained.join("manifest.json"), serde_json::to_string_pretty(&m).unwrap()).unwrap();
    kdharness(["report".to_string(), trained.display().to_string()]).ok();
    assert_eq!(summary(&trained, "kd0-tiny", "did_not_learn"), Some(1.0), "a zero-step student is flagged");
    assert_eq!(summary(&trained, "kd-tiny", "did_not_learn"), Some(0.0));
    assert_eq!(summary(&trained, "nokd-tiny", "did_not_learn"), None, "No-KD is the yardstick, never flagged");
    let html = std::fs::read_to_string(trained.join("report.html")).unwrap();
    assert!(html.contains("did not learn"));

    // Students of one size are tested against each other (the loss attack).
    let comparisons = std::fs::read_to_string(trained.join("comparisons.csv")).unwrap();
    assert!(comparisons.lines().any(|l| l.starts_with("paired_auc,kd-tiny,nokd-tiny,loss,") || l.starts_with("paired_auc,nokd-tiny,kd-tiny,loss,")), "{comparisons}");
}
