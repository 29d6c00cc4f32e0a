//! Defenses (issue 17): a defense sweep on the smoke config makes every defended model of
//! the plan (a training defense's own teacher among them), records what each defense did
//! (samples dropped, ε), and the report's `defenses.csv`, privacy–utility figure and page
//! are rebuilt from the tables alone; the sample filter, through the real ABI, drops
//! exactly the samples above its threshold; a training defense needs `trains_teacher`.

use std::path::{Path, PathBuf};

use kdharness::distill::{StudentDefense, filter_samples};
use kdharness::train::Example;

use crate::common::{bin_dir, kdharness};

fn smoke() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/smoke.toml")
}

/// The smoke study with two KD methods, three attacks, no per-block sweep, and a sweep of
/// every kind of defense.
fn defended_config(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(smoke()).unwrap();
    let text = text
        .replacen("name = \"smoke\"", "name = \"smoke-defenses\"", 1)
        .replacen("methods = [\"kd\", \"seqkd\", \"gkd\", \"imitkd\", \"minillm\", \"distillm\"]", "methods = [\"kd\", \"seqkd\"]", 1)
        .replacen("[blocks]\nenabled = true", "[blocks]\nenabled = false", 1);
    let attacks_start = text.find("names = [\"loss\"").unwrap();
    let attacks_end = text[attacks_start..].find('\n').unwrap() + attacks_start;
    let params_start = text.find("[attacks.params]").unwrap();
    let params_end = text.find("[memorize]").unwrap();
    let text = format!("{}names = [\"loss\", \"zlib\", \"ref\"]{}{}", &text[..attacks_start], &text[attacks_end..params_start], &text[params_end..]);
    let text = text
        + r#"
[[defenses]]
name = "topk"
methods = ["kd"]
sweep = { k = [1, 5] }

[[defenses]]
name = "logit_noise"
methods = ["kd"]
params = { sigma = 2 }

[[defenses]]
name = "ngram_filter"
methods = ["seqkd"]
sweep = { r = ["0"] }

[[defenses]]
name = "dpsgd"
methods = ["kd"]
trains_teacher = true
sweep = { noise_multiplier = [1.0] }
teacher_train = { epochs = 2, lr = 5e-3, batch_size = 16 }
"#;
    let path = dir.join("defenses.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

#[test]
fn a_defense_sweep_makes_every_defended_model_and_the_report_sets_each_against_its_twin() {
    let tmp = tempfile::tempdir().unwrap();
    let config = defended_config(tmp.path());
    let plan = kdharness(["eval", &config.display().to_string(), "--plan"]);
    let cells: Vec<(String, String)> = plan.ok().stdout.lines().map(|l| {
        let mut parts = l.split('\t');
        (parts.next().unwrap().to_string(), parts.next().unwrap_or("").to_string())
    }).collect();
    let needs = |id: &str| cells.iter().find(|c| c.0 == id).unwrap_or_else(|| panic!("no cell {id}: {}", plan.stdout)).1.clone();
    let defended = ["kd-tiny+topk-k1", "kd-tiny+topk-k5", "kd-tiny+logit_noise", "seqkd-tiny+ngram_filter-r0", "teacher+dpsgd-noise_multiplier1", "kd-tiny+dpsgd-noise_multiplier1"];
    for m in defended {
        assert!(!needs(&format!("score-{m}")).is_empty(), "{m} is scored");
    }
    assert_eq!(needs("teacher+dpsgd-noise_multiplier1"), "data");
    assert_eq!(needs("kd-tiny+dpsgd-noise_multiplier1"), "teacher+dpsgd-noise_multiplier1");
    assert_eq!(needs("kd-tiny+topk-k1"), "teacher");

    let out = tmp.path().join("run");
    let run = kdharness(["eval", &config.display().to_string(), "--out", &out.display().to_string()]);
    run.ok();
    // Every defended model is a model of the study, role `defended`, with its record.
    let manifest = json(&out.join("manifest.json"));
    let models = manifest["models"].as_array().unwrap();
    for m in defended {
        let record = models.iter().find(|r| r["name"] == m).unwrap_or_else(|| panic!("{m} not in the manifest"));
        assert_eq!(record["role"]["role"], "defended", "{m}");
        assert!(record["defense"]["defense"].is_string(), "{m}: {}", record["defense"]);
    }
    let student = models.iter().find(|r| r["name"] == "kd-tiny+topk-k1").unwrap();
    assert_eq!((student["role"]["kd_method"].as_str(), student["role"]["student"].as_str()), (Some("kd"), Some("tiny")));
    assert_eq!(student["defense"]["params"]["k"], "1");
    // The defended students differ from their twin only by the defense: k = 1 changes the
    // weights; a defense on the teacher's samples changes nothing for KD (not run here).
    let weights = |m: &str| std::fs::read(out.join(format!("models/{m}/model.safetensors"))).unwrap();
    assert!(weights("kd-tiny+topk-k1") != weights("kd-tiny"));
    assert!(weights("kd-tiny+logit_noise") != weights("kd-tiny"));

    // The sample filter at r = 0 drops every sample sharing a 4-gram with a private record
    // and records how many, of how many.
    let filtered = json(&out.join("models/seqkd-tiny+ngram_filter-r0/defense.json"));
    let (removed, of) = (filtered["removed_samples"].as_u64().unwrap(), filtered["teacher_samples"].as_u64().unwrap());
    assert!(of > 0 && removed <= of, "{filtered}");
    assert!(run.stderr.contains(&format!("dropped {removed} of {of} teacher samples")), "{}", run.stderr);

    // DP-SGD: the teacher's ε is the accountant's for its steps and sampling rate, and its
    // student inherits it.
    let dp = json(&out.join("models/teacher+dpsgd-noise_multiplier1/defense.json"));
    let (steps, q) = (dp["steps"].as_u64().unwrap(), dp["sample_rate"].as_f64().unwrap());
    let orders = kdh_defense_dpsgd::rdp::default_orders();
    let (eps, _) = kdh_defense_dpsgd::rdp::privacy_spent(&orders, &kdh_defense_dpsgd::rdp::compute_rdp(q, 1.0, steps, &orders), 1e-5);
    assert_eq!(dp["epsilon"].as_f64().unwrap(), eps);
    let members = std::fs::read_to_string(out.join("data/teacher_train.jsonl")).unwrap().lines().filter(|l| !l.trim().is_empty()).count();
    assert_eq!(steps, 2 * members.div_ceil(16) as u64);
    assert!((q - 16.0 / members as f64).abs() < 1e-12, "{q}");
    let inherited = json(&out.join("models/kd-tiny+dpsgd-noise_multiplier1/defense.json"));
    assert_eq!((inherited["epsilon"].as_f64(), inherited["teacher"].as_str()), (Some(eps), Some("teacher+dpsgd-noise_multiplier1")));

    // defenses.csv: each twin, then its defended models, each naming the figure it backs.
    let table = std::fs::read_to_string(out.join("defenses.csv")).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("model,twin,kd_method,student,defense,params,best_attack,best_auc,"), "{}", lines[0]);
    let names: Vec<&str> = lines[1..].iter().map(|l| l.split(',').next().unwrap()).collect();
    assert_eq!(names, ["kd-tiny", "kd-tiny+topk-k1", "kd-tiny+topk-k5", "kd-tiny+logit_noise", "kd-tiny+dpsgd-noise_multiplier1", "seqkd-tiny", "seqkd-tiny+ngram_filter-r0", "teacher", "teacher+dpsgd-noise_multiplier1"]);
    assert!(lines[1..].iter().all(|l| l.ends_with(",fig11_defenses")));
    // Each row's best AUC is the largest AUC of its model in summary.csv.
    let summary = std::fs::read_to_string(out.join("summary.csv")).unwrap();
    for line in &lines[1..] {
        let f: Vec<&str> = line.split(',').collect();
        let best = summary
            .lines()
            .filter(|l| l.starts_with(&format!("{},", f[0])) && l.contains(",all,") && l.contains(",auc,"))
            .filter_map(|l| l.split(',').nth(7).and_then(|v| v.parse::<f64>().ok()))
            .fold(f64::NEG_INFINITY, f64::max);
        assert_eq!(f[7].parse::<f64>().unwrap(), best, "{line}");
    }
    assert!(out.join("figures/fig11_defenses.png").is_file() && out.join("figures/fig11_defenses.svg").is_file());
    let page = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(page.contains("Defenses: leakage against utility") && page.contains("id=\"fig11_defenses\""));

    // The report is rebuilt from the tables and the manifest alone.
    std::fs::remove_dir_all(out.join("models")).unwrap();
    std::fs::remove_file(out.join("defenses.csv")).unwrap();
    kdharness(["report", &out.display().to_string()]).ok();
    assert_eq!(std::fs::read_to_string(out.join("defenses.csv")).unwrap(), table);

    // A training defense must say so (it makes its own teacher).
    let text = std::fs::read_to_string(&config).unwrap().replace("trains_teacher = true\n", "");
    let text = text.replace("teacher_train = { epochs = 2, lr = 5e-3, batch_size = 16 }\n", "");
    std::fs::write(&config, text).unwrap();
    let err = kdharness(["eval", &config.display().to_string(), "--out", &tmp.path().join("bad").display().to_string()]).error_line();
    assert!(err.contains("defenses[3] (`dpsgd`): the plugin acts on teacher_training; set trains_teacher = true"), "{err}");
}

#[test]
fn the_sample_filter_through_the_abi_drops_exactly_the_overlapping_samples_and_counts_them() {
    let registry = kdharness::plugins::Registry::discover(vec![kdharness::plugins::SearchDir { path: bin_dir(), origin: kdharness::plugins::SearchOrigin::PluginDirFlag }]);
    let loaded = registry.defense("ngram_filter").expect("the ngram_filter plugin is built");
    let private: Vec<Vec<u32>> = vec![(100..130).collect(), (200..230).collect()];
    // Prompts 1, 2; responses: a copy of a private record's span (overlap 1), half fresh
    // (6 of 13 grams shared), nothing shared.
    let example = |response: Vec<u32>| Example { ids: [vec![1, 2], response].concat(), prompt_len: 2 };
    let samples = vec![
        example((105..120).collect()),
        example([(200..209).collect::<Vec<u32>>(), (900..907).collect()].concat()),
        example((900..915).collect()),
    ];
    let truth: Vec<Example> = (0..3).map(|i| example(vec![50 + i, 51 + i, 52 + i])).collect();
    for (r, dropped) in [("0.9", vec![0usize]), ("0.4", vec![0, 1]), ("1", vec![])] {
        let instance = loaded.create(&[("n".into(), "4".into()), ("r".into(), r.into())], 0).unwrap();
        let mut d = StudentDefense { name: "ngram_filter".into(), instance, acts_on: loaded.decl.acts_on, private: private.clone(), removed: None };
        let mut these = samples.clone();
        filter_samples(&mut d, &mut these, &truth).unwrap();
        assert_eq!(d.removed, Some((dropped.len(), 3)), "r = {r}");
        for i in 0..3 {
            let want = if dropped.contains(&i) { &truth[i] } else { &samples[i] };
            assert_eq!(&these[i], want, "r = {r}, sample {i}");
        }
    }
}

/// `plugins new defense NAME` writes a crate whose unit test passes, that builds, is
/// listed as a defense, and transforms teacher logits through the real ABI as its
/// template says.
#[test]
fn a_scaffolded_defense_builds_tests_loads_and_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let crate_dir = tmp.path().join("smooth");
    kdharness(["plugins", "new", "defense", "uniform_mix", "--dir", &crate_dir.display().to_string()]).ok();
    let readme = std::fs::read_to_string(crate_dir.join("README.md")).unwrap();
    for target in ["TEACHER_LOGITS", "TEACHER_SAMPLES", "TEACHER_TRAINING", "[[defenses]]"] {
        assert!(readme.contains(target), "README.md does not mention {target}");
    }
    // The scaffold tests share one target dir (the workspace's is locked by `cargo test`).
    let target = bin_dir().join("../scaffold-test");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    for what in ["test", "build"] {
        let status = std::process::Command::new(&cargo)
            .args([what, "--quiet", "--manifest-path"])
            .arg(crate_dir.join("Cargo.toml"))
            .env("CARGO_TARGET_DIR", &target)
            .status()
            .unwrap();
        assert!(status.success(), "cargo {what} of the scaffolded defense crate must pass");
    }
    let plugin_dir = target.join("debug");
    let list = kdharness(["plugins", "list", "--plugin-dir", &plugin_dir.display().to_string()]);
    let line = list.ok().stdout.lines().find(|l| l.starts_with("uniform_mix ")).map(str::to_string).expect(&list.stdout);
    assert!(line.contains(" defense ") && line.contains("eps=0.1"), "{line}");

    let registry = kdharness::plugins::Registry::discover(vec![kdharness::plugins::SearchDir { path: plugin_dir, origin: kdharness::plugins::SearchOrigin::PluginDirFlag }]);
    let loaded = registry.defense("uniform_mix").expect("the scaffolded defense loads");
    assert_eq!(loaded.decl.acts_on.names(), ["teacher_logits"]);
    let mut d = loaded.create(&[("eps".into(), "0.5".into())], 0).unwrap();
    // p = softmax(0, ln 3) = (1/4, 3/4) → 0.5·p + 0.5·(1/2, 1/2) = (3/8, 5/8).
    let mut z = vec![0.0f32, 3f32.ln()];
    d.teacher_logits(z.as_mut_slice().into(), 2).into_result().unwrap();
    assert!((z[0] as f64 - 0.375f64.ln()).abs() < 1e-6 && (z[1] as f64 - 0.625f64.ln()).abs() < 1e-6, "{z:?}");
    let err = loaded.create(&[("eps".into(), "2".into())], 0).err().unwrap();
    assert!(err.contains("eps must be in [0, 1]"), "{err}");
}
