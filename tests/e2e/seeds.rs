//! A multi-seed study (issue 15): `seeds = [0, 1]` on the smoke config runs the study once
//! per seed, each seed's run byte for byte the one-seed run of that seed, and summarises
//! them across seeds (seeds.csv, the seed-spread figure, report.html); `kdharness report`
//! rebuilds all of it with the models deleted; the plan's multi-seed cells give the same.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::common::kdharness;

const TABLES: [&str; 7] = ["scores.csv", "summary.csv", "memorization.csv", "utility.csv", "blocks.csv", "comparisons.csv", "canaries.csv"];

fn smoke() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/smoke.toml")
}

fn eval(config: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["eval".to_string(), config.display().to_string(), "--out".into(), out.display().to_string(), "-q".into()];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// The rows of a CSV file as maps from column to field.
fn rows(path: &Path) -> Vec<HashMap<String, String>> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    lines.map(|l| header.iter().map(|h| h.to_string()).zip(l.split(',').map(str::to_string)).collect()).collect()
}

#[test]
fn two_seeds_give_each_seeds_run_and_a_summary_across_them_that_report_rebuilds_without_models() {
    let tmp = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(smoke()).unwrap().replacen("seed = 1\n", "seed = 1\nseeds = [0, 1]\n", 1);
    let config = tmp.path().join("smoke-seeds.toml");
    std::fs::write(&config, text).unwrap();

    let plan = kdharness(["eval", &config.display().to_string(), "--plan"]);
    let ids: Vec<&str> = plan.ok().stdout.lines().map(|l| l.split('\t').next().unwrap()).collect();
    assert_eq!(ids.len(), 2 * 18 + 1, "{}", plan.stdout);
    assert!(ids.contains(&"seed-0/teacher") && ids.contains(&"seed-1/kd-tiny"), "{ids:?}");
    assert_eq!(plan.stdout.lines().last(), Some("seeds\tseed-0/report,seed-1/report"));

    let out = tmp.path().join("study");
    kdharness(eval(&config, &out, &[])).ok();
    // Each seed's run is the one-seed run of that seed (smoke.toml has seed = 1).
    let single = tmp.path().join("single");
    kdharness(eval(&smoke(), &single, &[])).ok();
    for f in TABLES {
        assert!(std::fs::read(out.join("seed-1").join(f)).unwrap() == std::fs::read(single.join(f)).unwrap(), "seed-1/{f} differs from the one-seed run's");
    }
    assert!(std::fs::read(out.join("seed-0/scores.csv")).unwrap() != std::fs::read(out.join("seed-1/scores.csv")).unwrap(), "the seeds gave the same scores");

    // seeds.csv: each seed's run-wide values as its summary has them, then their mean,
    // sample sd, minimum and maximum.
    let seeds = rows(&out.join("seeds.csv"));
    let summary: Vec<Vec<HashMap<String, String>>> = (0..2).map(|s| rows(&out.join(format!("seed-{s}/summary.csv")))).collect();
    let mut checked = 0;
    for all in seeds.iter().filter(|r| r["seed"] == "all" && r["metric"] == "auc") {
        let of_seed = |s: usize| {
            let find = |r: &&HashMap<String, String>| r["model"] == all["model"] && r["attack"] == all["attack"] && r["metric"] == "auc";
            let row = seeds.iter().find(|r| r["seed"] == s.to_string() && find(r)).expect("a per-seed row");
            let own = summary[s].iter().find(|r| r["category"] == "all" && find(r)).expect("the seed's summary row");
            assert_eq!((&row["value"], &row["ci_low"], &row["ci_high"]), (&own["value"], &own["ci_low"], &own["ci_high"]));
            row["value"].parse::<f64>().unwrap()
        };
        let (a, b) = (of_seed(0), of_seed(1));
        let field = |k: &str| all[k].parse::<f64>().unwrap();
        assert!((field("value") - (a + b) / 2.0).abs() < 1e-12, "{all:?}");
        assert!((field("sd") - (a - b).abs() / 2f64.sqrt()).abs() < 1e-12, "{all:?}");
        assert_eq!((field("min"), field("max"), all["n_seeds"].as_str()), (a.min(b), a.max(b), "2"));
        checked += 1;
    }
    // 8 models × 10 attack columns (ref per reference model, mope…), at least.
    assert!(checked >= 8 * 9, "{checked} across-seed AUC rows");
    let png = std::fs::read(out.join("figures/fig10_seed_spread.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    let page = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(page.contains("id=\"fig10_seed_spread\"") && page.contains("href=\"seed-0/report.html\""));
    assert!(page.contains("One panel per attack: each model's AUC in each seed"), "fig10 has no caption");
    let manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["seeds"], serde_json::json!([0, 1]));

    // `kdharness report` rebuilds every seed's report and the summary without any model.
    let before: Vec<Vec<u8>> = ["seeds.csv", "seed-0/summary.csv", "seed-1/comparisons.csv"].iter().map(|f| std::fs::read(out.join(f)).unwrap()).collect();
    for s in 0..2 {
        std::fs::remove_dir_all(out.join(format!("seed-{s}/models"))).unwrap();
        std::fs::remove_file(out.join(format!("seed-{s}/summary.csv"))).unwrap();
    }
    for f in ["seeds.csv", "report.html", "figures/fig10_seed_spread.png"] {
        std::fs::remove_file(out.join(f)).unwrap();
    }
    kdharness(["report", &out.display().to_string()]).ok();
    let after: Vec<Vec<u8>> = ["seeds.csv", "seed-0/summary.csv", "seed-1/comparisons.csv"].iter().map(|f| std::fs::read(out.join(f)).unwrap()).collect();
    assert!(before == after, "the rebuilt tables differ");
    assert!(out.join("figures/fig10_seed_spread.png").is_file() && out.join("report.html").is_file());

    // The plan's cells: one seed's teacher, then the summary, which runs what it needs.
    let cells = tmp.path().join("cells");
    kdharness(eval(&config, &cells, &["--cell", "seed-0/teacher"])).ok();
    assert!(cells.join("seed-0/models/teacher/model.safetensors").is_file() && !cells.join("seed-1").exists());
    kdharness(eval(&config, &cells, &["--cell", "seeds"])).ok();
    assert!(std::fs::read(cells.join("seeds.csv")).unwrap() == before[0], "the cells' seeds.csv differs from the local run's");
    let unknown = kdharness(eval(&config, &cells, &["--cell", "seed-7/teacher"]));
    assert!(unknown.error_line().contains("--cell `seed-7/teacher` is not a cell of this multi-seed plan"), "{}", unknown.stderr);
    let twice = kdharness(eval(&smoke(), &cells, &["--seeds", "1,1"]));
    assert!(twice.error_line().contains("--seeds lists 1 twice"), "{}", twice.stderr);
}
