//! `kdharness report RUN_DIR`: a run directory made by the real commands (attack with MoPe
//! and per-block risk, memorize) on exported models with assigned roles is turned into
//! summary.csv, comparisons.csv, nine figures (PNG + SVG) and a self-contained
//! report.html — and again, identically, after every model file is deleted.

use std::path::Path;

use candle_core::Device;
use kdharness::model::Model;

use crate::common::{fixture, kdharness};
use crate::memorize::memorizer;

const FIGURES: [&str; 9] = [
    "fig1_student_auc",
    "fig2_baseline_auc",
    "fig3_roc",
    "fig4_auc_by_method",
    "fig5_blocks",
    "fig6_membership_vs_memorization",
    "fig7_memorization",
    "fig0_privacy_vs_utility",
    "fig8_canary_likelihood",
];

/// (name, role, kd_method, student, onnx path)
fn models(dir: &Path) -> Vec<(String, &'static str, &'static str, &'static str, String)> {
    // Copies, so that the test can delete every model file.
    let (teacher, untrained) = memorizer();
    let (t, u) = (dir.join("teacher.onnx"), dir.join("untrained.onnx"));
    std::fs::copy(teacher, &t).unwrap();
    std::fs::copy(untrained, &u).unwrap();
    let mut out = vec![
        ("teacher".to_string(), "teacher", "", "", t.display().to_string()),
        ("nokd-small".to_string(), "nokd", "", "small", u.display().to_string()),
    ];
    for (hf, method, size) in [("llama", "kd", "small"), ("opt", "seqkd", "small"), ("llama-tied", "kd", "tiny"), ("gpt2", "seqkd", "tiny")] {
        let path = dir.join(format!("{hf}.onnx"));
        kdharness::export::export(&Model::load(&fixture(&format!("hf/{hf}")), &Device::Cpu).unwrap(), &path).unwrap();
        out.push((format!("{method}-{size}"), "student", method, size, path.display().to_string()));
    }
    out
}

/// The test's directory: a temporary one, or KDHARNESS_KEEP_REPORT to look at the result.
struct TmpRoot(std::path::PathBuf);

impl TmpRoot {
    fn path(&self) -> &Path {
        &self.0
    }
}

#[test]
fn report_renders_every_table_figure_and_page_without_the_models() {
    let tmp = tempfile::tempdir().unwrap();
    let keep = std::env::var_os("KDHARNESS_KEEP_REPORT").map(std::path::PathBuf::from);
    let tmp_path = keep.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    let tmp = TmpRoot(tmp_path);
    let models_dir = tmp.path().join("models");
    std::fs::create_dir_all(&models_dir).unwrap();
    let run = tmp.path().join("run");
    let models = models(&models_dir);
    let common = |cmd: &str| -> Vec<String> {
        let mut args = vec![cmd.to_string()];
        for (name, _, _, _, path) in &models {
            args.extend(["--model".into(), format!("{name}={path}")]);
        }
        for (flag, f) in [("--tokenizer", "tokenizer.json"), ("--members", "members.jsonl"), ("--nonmembers", "nonmembers.jsonl")] {
            args.extend([flag.into(), fixture(f).display().to_string()]);
        }
        args.extend(["--out".into(), run.display().to_string(), "--bootstrap".into(), "100".into()]);
        args
    };
    let mut attack = common("attack");
    attack.extend(["--attacks", "loss,zlib,mink,minkpp,mope", "--param", "mope.n=2", "--param", "mope.sigma=0.02", "--blocks"].map(String::from));
    kdharness(attack).ok();
    let mut memorize = common("memorize");
    memorize.extend(["--teacher", "teacher"].map(String::from));
    kdharness(memorize).ok();
    // The roles an eval run would record, and four canaries repeated 1, 2, 4, 8 times.
    let roles: Vec<serde_json::Value> = models
        .iter()
        .map(|(name, role, method, size, _)| serde_json::json!({"name": name, "role": {"role": role, "kd_method": method, "student": size}}))
        .collect();
    let manifest = serde_json::json!({"models": roles, "bootstrap": {"resamples": 100, "seed": 3}, "memorization": {"k": 32}});
    std::fs::write(run.join("manifest.json"), serde_json::to_string_pretty(&manifest).unwrap()).unwrap();
    std::fs::write(run.join("canaries.csv"), "sample_id,repetitions\nm0,1\nm1,2\nm2,4\nm3,8\n").unwrap();

    // A drawing left by an earlier render of a figure this run has no data for (no
    // defended models here) is removed, not left to pass for a current one.
    std::fs::create_dir_all(run.join("figures")).unwrap();
    std::fs::write(run.join("figures/fig11_defenses.png"), b"an older drawing").unwrap();
    let first = kdharness(["report".to_string(), run.display().to_string()]);
    first.ok();
    assert!(!run.join("figures/fig11_defenses.png").exists(), "a stale figure stayed");
    let read = |f: &str| std::fs::read_to_string(run.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
    let summary = read("summary.csv");
    for metric in ["auc", "tpr_at_fpr_0.01", "mem_rate_member", "mem_gap", "rouge_l", "teacher_overlap_0.5"] {
        assert!(summary.lines().any(|l| l.split(',').nth(6) == Some(metric)), "no {metric} rows");
    }
    assert!(summary.lines().any(|l| l.starts_with("kd-small,student,kd,small,all,loss,auc,")), "roles are applied");
    let comparisons = read("comparisons.csv");
    assert_eq!(comparisons.lines().next().unwrap(), "kind,a,b,attack,value,ci_low,ci_high,p_value,n");
    assert!(comparisons.lines().any(|l| l.starts_with("paired_auc,teacher,kd-small,loss,")), "{comparisons}");
    assert!(comparisons.lines().any(|l| l.starts_with("spearman,mean_auc,mem_rate_member,")), "{comparisons}");

    for fig in FIGURES {
        let png = run.join(format!("figures/{fig}.png"));
        assert!(std::fs::metadata(&png).map(|m| m.len() > 5_000).unwrap_or(false), "{fig}.png missing or empty");
        assert!(run.join(format!("figures/{fig}.svg")).is_file(), "{fig}.svg missing");
    }
    let svg = |fig: &str| read(&format!("figures/{fig}.svg"));
    // Axis labels and model/method names are text in the SVGs.
    for (fig, needles) in [
        ("fig1_student_auc", vec!["students (small): AUC", "kd", "seqkd", "loss", "minkpp"]),
        ("fig2_baseline_auc", vec!["teacher", "nokd-small", "zlib"]),
        ("fig3_roc", vec!["FPR", "TPR", "teacher", "seqkd-tiny"]),
        ("fig4_auc_by_method", vec!["AUC", "kd", "seqkd"]),
        ("fig5_blocks", vec!["transformer block", "AUC", "teacher", "kd-small", "AUC per perturbed block"]),
        ("fig6_membership_vs_memorization", vec!["ρ = ", "mean AUC", "member rate", "teacher"]),
        ("fig7_memorization", vec!["member rate", "gap", "kd", "small", "tiny"]),
        ("fig0_privacy_vs_utility", vec!["ROUGE-L", "mean AUC", "nokd-small"]),
        ("fig8_canary_likelihood", vec!["repetitions", "teacher (teacher)", "students (small), mean"]),
    ] {
        let text = svg(fig);
        for needle in needles {
            assert!(text.contains(needle), "{fig}.svg lacks `{needle}`");
        }
    }
    // Paper sizes: each SVG says its size in inches (3.3 or 6.9 wide), every text in it is
    // at least 8 pt at that size, and the PNG is that size at 300 dpi.
    for fig in FIGURES {
        let text = svg(fig);
        let head = &text[text.find("<svg").unwrap()..];
        let attr = |name: &str| head.split(&format!(" {name}=\"")).nth(1).unwrap().split('"').next().unwrap().to_string();
        let inches: f64 = attr("width").strip_suffix("in").unwrap_or_else(|| panic!("{fig}: width not in inches")).parse().unwrap();
        let height: f64 = attr("height").strip_suffix("in").unwrap().parse().unwrap();
        let units: f64 = attr("viewBox").split(' ').nth(2).unwrap().parse().unwrap();
        assert!([3.3, 6.9].contains(&inches), "{fig}: {inches} in wide");
        let points_per_unit = inches * 72.0 / units;
        let sizes: Vec<f64> = text.split("font-size=\"").skip(1).map(|t| t.split('"').next().unwrap().parse().unwrap()).collect();
        assert!(!sizes.is_empty(), "{fig} has no text");
        let smallest = sizes.iter().copied().fold(f64::INFINITY, f64::min) * points_per_unit;
        assert!(smallest >= 8.0, "{fig}: text of {smallest:.2} pt at paper size");
        let png = std::fs::read(run.join(format!("figures/{fig}.png"))).unwrap();
        let (w, h) = (u32::from_be_bytes(png[16..20].try_into().unwrap()), u32::from_be_bytes(png[20..24].try_into().unwrap()));
        assert_eq!(w, (inches * 300.0).round() as u32, "{fig}.png width");
        assert!((h as f64 - height * 300.0).abs() <= 2.0, "{fig}.png height {h} for {height} in");
    }
    // No two series of a figure look alike: the legends drawn (in this process, the same
    // rendering as the command's) never pair one colour with one marker or dash pattern.
    kdharness::report::figures::legend_log(true);
    let check = tmp.path().join("again");
    std::fs::create_dir_all(&check).unwrap();
    for f in ["scores.csv", "summary.csv", "memorization.csv", "utility.csv", "blocks.csv", "canaries.csv", "manifest.json"] {
        if run.join(f).is_file() {
            std::fs::copy(run.join(f), check.join(f)).unwrap();
        }
    }
    kdharness::report::render_run(&check, kdharness::metrics::Bootstrap { resamples: 100, seed: 3 }).unwrap();
    let legends = kdharness::report::figures::legend_log(false);
    let with_legends: std::collections::BTreeSet<&str> = legends.iter().map(|(f, _)| f.as_str()).collect();
    for fig in ["fig0_privacy_vs_utility", "fig3_roc", "fig6_membership_vs_memorization", "fig8_canary_likelihood"] {
        assert!(with_legends.contains(fig), "{fig} drew no legend: {with_legends:?}");
    }
    for (fig, entries) in &legends {
        for (i, (a, sa)) in entries.iter().enumerate() {
            for (b, sb) in &entries[..i] {
                assert!(!sa.looks_like(sb), "{fig}: `{a}` and `{b}` look alike");
            }
        }
    }
    for fig in FIGURES {
        assert_eq!(std::fs::read(check.join(format!("figures/{fig}.svg"))).unwrap(), std::fs::read(run.join(format!("figures/{fig}.svg"))).unwrap(), "{fig}: the same drawing");
    }
    let html = read("report.html");
    assert_eq!(html.matches("<svg").count(), 9, "every figure inline");
    assert!(html.contains("Backs <a href=\"#fig0_privacy_vs_utility\">fig0_privacy_vs_utility</a>"), "tables name the figures they back");
    // Every figure has a caption that says what is plotted and how to read it.
    for figure in html.split("<figure id=\"").skip(1) {
        let name = figure.split('"').next().unwrap();
        let caption = figure.split("<figcaption>").nth(1).and_then(|c| c.split("</figcaption>").next()).unwrap_or_else(|| panic!("{name} has no caption"));
        let text = caption.split("</b>").nth(1).unwrap_or_default().trim();
        assert!(text.len() > 100, "{name}'s caption says too little: {caption}");
    }
    // Self-contained: nothing to fetch (the SVG namespace URI is a name, not a request).
    for fetch in ["<script", " src=", "href=\"http", "@import", "url(", "<link"] {
        assert!(!html.contains(fetch), "report.html would fetch something: `{fetch}`");
    }
    assert!(html.contains("Leakage and utility") && html.contains("kd-small") && html.contains("manifest.json"));

    // Without any model file the report is rebuilt from the results, identically.
    std::fs::remove_dir_all(&models_dir).unwrap();
    let before: Vec<String> = ["summary.csv", "comparisons.csv", "figures/fig1_student_auc.svg", "report.html"].iter().map(|f| read(f)).collect();
    kdharness(["report".to_string(), run.display().to_string()]).ok();
    let after: Vec<String> = ["summary.csv", "comparisons.csv", "figures/fig1_student_auc.svg", "report.html"].iter().map(|f| read(f)).collect();
    assert!(before == after, "re-rendering changed the outputs");
}

/// Copies the results of `from` (its files, as a clean checkout has them: no models, no
/// stage records) into `to`, all but the rendered report.html.
fn copy_results(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if entry.file_type().unwrap().is_file() && name != "report.html" && name != ".lock" {
            std::fs::copy(entry.path(), to.join(&name)).unwrap();
        }
    }
}

/// Every committed report, rendered again from its tables: its tables and page (with every
/// figure drawn inline) are the committed ones, so the reports are up to date with the
/// drawing code; no two series of any figure
/// share a colour and a marker or dash pattern, and every figure has a caption. Between
/// them the reports draw every figure with a legend but the seed spread (a unit test).
#[test]
fn every_committed_report_is_current_told_apart_and_captioned() {
    let reports = Path::new(env!("CARGO_MANIFEST_DIR")).join("../reports");
    let tmp = tempfile::tempdir().unwrap();
    let mut drawn = std::collections::BTreeSet::new();
    for report in ["example", "defenses", "smollm2-lite"] {
        let committed = reports.join(report);
        let run = tmp.path().join(report);
        copy_results(&committed, &run);
        let manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("manifest.json")).unwrap()).unwrap();
        let bootstrap = kdharness::metrics::Bootstrap { resamples: manifest["bootstrap"]["resamples"].as_u64().unwrap() as usize, seed: manifest["bootstrap"]["seed"].as_u64().unwrap() };
        kdharness::report::figures::legend_log(true);
        kdharness::report::render_run(&run, bootstrap).unwrap();
        let legends = kdharness::report::figures::legend_log(false);
        for (fig, entries) in &legends {
            drawn.insert(fig.clone());
            for (i, (a, sa)) in entries.iter().enumerate() {
                for (b, sb) in &entries[..i] {
                    assert!(!sa.looks_like(sb), "{report}/{fig}: `{a}` and `{b}` look alike");
                }
            }
        }
        for table in ["summary.csv", "comparisons.csv"] {
            assert!(std::fs::read(run.join(table)).unwrap() == std::fs::read(committed.join(table)).unwrap(), "reports/{report}/{table} is stale");
        }
        let html = std::fs::read_to_string(run.join("report.html")).unwrap();
        // The page holds every figure's drawing inline: the same page, the same figures.
        assert!(html == std::fs::read_to_string(committed.join("report.html")).unwrap(), "reports/{report}/report.html is stale: run `kdharness report reports/{report}`");
        let mut figures = 0;
        for figure in html.split("<figure id=\"").skip(1) {
            let name = figure.split('"').next().unwrap();
            let caption = figure.split("<figcaption>").nth(1).and_then(|c| c.split("</figcaption>").next()).unwrap_or_else(|| panic!("{report}: {name} has no caption"));
            assert!(caption.split("</b>").nth(1).unwrap_or_default().trim().len() > 100, "{report}: {name}'s caption says too little");
            assert!(committed.join(format!("figures/{name}.png")).is_file(), "reports/{report}/figures/{name}.png is not committed");
            figures += 1;
        }
        let pngs = std::fs::read_dir(committed.join("figures")).unwrap().filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "png")).count();
        assert_eq!(figures, pngs, "{report}: every committed figure is in report.html");
    }
    for fig in ["fig0_privacy_vs_utility", "fig3_roc", "fig6_membership_vs_memorization", "fig8_canary_likelihood", "fig9_canary_exposure", "fig11_defenses"] {
        assert!(drawn.contains(fig), "no committed report drew {fig}'s legend: {drawn:?}");
    }
}
