//! Metrics against scikit-learn reference values, and `kdharness metrics`.

use crate::common::*;
use kdharness::metrics::{FPR_LEVELS, Metrics};

#[test]
fn metrics_match_sklearn_reference_values() {
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("metrics_reference.json")).unwrap()).unwrap();
    let floats = |v: &serde_json::Value| -> Vec<f64> { v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect() };
    let cases = reference["cases"].as_object().unwrap();
    for name in ["random", "ties", "separable", "inverted", "all_equal"] {
        let case = &cases[name];
        let m = Metrics::compute(&floats(&case["member_scores"]), &floats(&case["nonmember_scores"]));
        assert_close(m.auc, case["auc"].as_f64().unwrap(), 1e-12, &format!("{name} auc"));
        assert_close(m.values()[1], case["auc_flipped"].as_f64().unwrap(), 1e-12, &format!("{name} auc_flipped"));
        assert_close(m.balanced_accuracy.value, case["balanced_accuracy"].as_f64().unwrap(), 1e-12, &format!("{name} bacc"));
        // Its operating point, from an exact brute-force scan over the same thresholds.
        let (members, nonmembers) = (floats(&case["member_scores"]), floats(&case["nonmember_scores"]));
        let mut thresholds: Vec<f64> = members.iter().chain(&nonmembers).copied().collect();
        thresholds.push(f64::INFINITY);
        thresholds.sort_by(|a, b| b.total_cmp(a));
        thresholds.dedup();
        let gain = |t: f64| {
            let tp = members.iter().filter(|&&s| s >= t).count() as i64;
            let fp = nonmembers.iter().filter(|&&s| s >= t).count() as i64;
            (tp * nonmembers.len() as i64 - fp * members.len() as i64, fp)
        };
        let best = thresholds.iter().copied().fold(f64::INFINITY, |b, t| if gain(t).0 > gain(b).0 { t } else { b });
        assert_eq!(m.balanced_accuracy.threshold, best, "{name} bacc threshold");
        assert_eq!(m.balanced_accuracy.realized_fpr, gain(best).1 as f64 / nonmembers.len() as f64, "{name} bacc fpr");
        for (alpha, got) in FPR_LEVELS.iter().zip(&m.tpr_at_fpr) {
            let key = if *alpha == 0.0 { "0.0".to_string() } else { alpha.to_string() };
            let want = &case["tpr_at_fpr"][&key];
            let what = format!("{name} tpr@{key}");
            assert_close(got.value, want["tpr"].as_f64().unwrap(), 1e-12, &what);
            assert_close(got.realized_fpr, want["realized_fpr"].as_f64().unwrap(), 1e-12, &what);
            let threshold = match &want["threshold"] {
                serde_json::Value::String(s) if s == "inf" => f64::INFINITY,
                v => v.as_f64().unwrap(),
            };
            assert_eq!(got.threshold, threshold, "{what} threshold");
        }
    }
    // The inverted case really is inverted, and the flipped AUC says so.
    let inverted = &cases["inverted"];
    assert_eq!(inverted["auc"].as_f64(), Some(0.0));
    assert_eq!(inverted["auc_flipped"].as_f64(), Some(1.0));
}

#[test]
fn metrics_command_recomputes_the_same_summary() {
    let tmp = tempfile::tempdir().unwrap();
    kdharness(attack_args(tmp.path(), &["--attacks", "loss,mink,ref", "--seed", "7"])).ok();
    let written = std::fs::read(tmp.path().join("summary.csv")).unwrap();
    let again = tmp.path().join("again");
    std::fs::create_dir_all(&again).unwrap();
    let run = kdharness(["metrics", "--scores", &tmp.path().join("scores.csv").display().to_string(), "--out", &again.display().to_string()]);
    run.ok();
    assert_eq!(String::from_utf8(std::fs::read(again.join("summary.csv")).unwrap()).unwrap(), String::from_utf8(written).unwrap());

    // Another bootstrap seed moves the intervals but not the point estimates.
    kdharness(["metrics", "--scores", &tmp.path().join("scores.csv").display().to_string(), "--out", &again.display().to_string(), "--seed", "8"]).ok();
    let reseeded = std::fs::read_to_string(again.join("summary.csv")).unwrap();
    let original = std::fs::read_to_string(tmp.path().join("summary.csv")).unwrap();
    let column = |text: &str, i: usize| -> Vec<String> { text.lines().map(|l| l.split(',').nth(i).unwrap().to_string()).collect() };
    assert_eq!(column(&reseeded, 7), column(&original, 7));
    assert_ne!(column(&reseeded, 8), column(&original, 8));
}
