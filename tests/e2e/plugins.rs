//! Plugins through real dlopen: the built-ins, misbehaving and foreign libraries, and a
//! crate scaffolded by `kdharness plugins new` and built with cargo.

use std::path::Path;

use crate::common::*;

#[test]
fn plugins_list_shows_the_builtins() {
    let run = kdharness(["plugins", "list"]);
    run.ok();
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(lines[0].starts_with("NAME") && lines[0].contains("KIND") && lines[0].contains("VERSION") && lines[0].contains("SOURCE"));
    for (name, lib) in [
        ("loss", "kdh_attack_loss"),
        ("zlib", "kdh_attack_zlib"),
        ("zlib_paper", "kdh_attack_zlib"),
        ("mink", "kdh_attack_mink"),
        ("mink_paper", "kdh_attack_mink"),
        ("minkpp", "kdh_attack_minkpp"),
        ("minkpp_paper", "kdh_attack_minkpp"),
        ("ref", "kdh_attack_ref"),
        ("mope", "kdh_attack_mope"),
        ("dcpdd", "kdh_attack_dcpdd"),
        ("recall", "kdh_attack_recall"),
        ("rmia", "kdh_attack_rmia"),
        ("samia", "kdh_attack_samia"),
        ("samia_zlib", "kdh_attack_samia"),
    ] {
        let line = lines.iter().find(|l| l.split_whitespace().next() == Some(name)).unwrap_or_else(|| panic!("{name} missing:\n{}", run.stdout));
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(&cells[1..4], &["attack", env!("CARGO_PKG_VERSION"), built_library(lib).to_str().unwrap()], "{line}");
    }
    for method in ["kd", "seqkd", "gkd", "imitkd", "minillm", "distillm", "nokd"] {
        let lib = format!("kdh_kd_{method}");
        let line = lines.iter().find(|l| l.split_whitespace().next() == Some(method)).unwrap_or_else(|| panic!("{method} missing:\n{}", run.stdout));
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(&cells[1..4], &["kd", env!("CARGO_PKG_VERSION"), built_library(&lib).to_str().unwrap()], "{line}");
    }
    for (defense, lib) in [
        ("temperature", "kdh_defense_output"),
        ("topk", "kdh_defense_output"),
        ("logit_noise", "kdh_defense_output"),
        ("round_probs", "kdh_defense_output"),
        ("ngram_filter", "kdh_defense_ngram"),
        ("dpsgd", "kdh_defense_dpsgd"),
    ] {
        let line = lines.iter().find(|l| l.split_whitespace().next() == Some(defense)).unwrap_or_else(|| panic!("{defense} missing:\n{}", run.stdout));
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(&cells[1..4], &["defense", env!("CARGO_PKG_VERSION"), built_library(lib).to_str().unwrap()], "{line}");
    }
    assert!(run.stdout.contains("k=0.2"));
    assert!(run.stdout.contains("objective=jsd beta=0.9"));
    assert!(run.stdout.contains("noise_multiplier=1 max_grad_norm=1 delta=1e-5"));
    let json = kdharness(["plugins", "list", "--json"]);
    let value: serde_json::Value = serde_json::from_str(&json.ok().stdout).unwrap();
    assert_eq!(value["plugins"].as_array().unwrap().len(), 14 + 7 + 6);
    let dpsgd = value["plugins"].as_array().unwrap().iter().find(|p| p["name"] == "dpsgd").unwrap();
    assert_eq!((dpsgd["kind"].as_str(), dpsgd["acts_on"][0].as_str()), (Some("defense"), Some("teacher_training")));
    assert_eq!(value["plugins"][0]["sha256"].as_str().unwrap().len(), 64);
}

#[test]
fn broken_libraries_get_one_line_each_and_the_rest_still_load() {
    let dir = tempfile::tempdir().unwrap();
    let incompatible = install(&built_library("kdhtest_incompatible"), dir.path(), "incompatible");
    let foreign = install(&built_library("kdhtest_not_a_plugin"), dir.path(), "foreign");
    let garbage = dir.path().join(format!("{}kdh_garbage{}", std::env::consts::DLL_PREFIX, std::env::consts::DLL_SUFFIX));
    std::fs::write(&garbage, "this is not a shared library").unwrap();
    let duplicate = install(&built_library("kdh_attack_loss"), dir.path(), "zz_duplicate_loss");
    // Not plugin-named: never loaded.
    std::fs::copy(built_library("kdhtest_not_a_plugin"), dir.path().join("libunrelated.so")).unwrap();

    let run = kdharness(["plugins", "list", "--plugin-dir", &dir.path().display().to_string()]);
    run.ok();
    let warnings: Vec<&str> = run.stderr.lines().filter(|l| l.starts_with("kdharness: warning: plugin ")).collect();
    assert_eq!(warnings.len(), 4, "{}", run.stderr);
    assert_eq!(run.stderr.lines().count(), 4, "abi_stable's long errors must be condensed:\n{}", run.stderr);
    let line_for = |p: &Path| *warnings.iter().find(|l| l.contains(&p.display().to_string())).unwrap_or_else(|| panic!("{} not named:\n{}", p.display(), run.stderr));
    let l = line_for(&incompatible);
    let rebuild = format!("rebuild it against kdharness-plugin-api {}", kdharness_plugin_api::INTERFACE_VERSION);
    assert!(l.contains("built against an incompatible plugin interface") && l.contains(&rebuild), "{l}");
    assert!(l.len() < 300, "{l}");
    assert!(line_for(&foreign).contains("is not a kdharness plugin"));
    assert!(line_for(&garbage).contains("cannot be opened as a shared library"));
    // The copy in --plugin-dir is searched first; the executable directory's is the duplicate.
    let dup = warnings.iter().find(|l| l.contains("attack `loss` is already provided by")).expect(&run.stderr);
    assert!(dup.contains(&duplicate.display().to_string()), "{dup}");
    // Every built-in still loads.
    assert_eq!(run.stdout.lines().count(), 1 + 14 + 7 + 6, "{}", run.stdout);
}

#[test]
fn a_panicking_or_misbehaving_plugin_is_an_error_and_the_harness_survives() {
    let dir = tempfile::tempdir().unwrap();
    let library = install(&built_library("kdhtest_panicky"), dir.path(), "panicky");
    let out = dir.path().join("out");
    let run = kdharness(attack_args(
        &out,
        &["--plugin-dir", &dir.path().display().to_string(), "--attacks", "test_panics,loss,test_nan,test_short,mink"],
    ));
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(!run.stderr.contains("panicked at"), "{}", run.stderr);
    let lib = library.display().to_string();
    for want in [
        format!("error: attack `test_panics` (plugin {lib}) failed: panicked: deliberate test panic"),
        format!("error: attack `test_short` (plugin {lib}) failed: returned 23 scores for 24 samples"),
        "error: 3 run(s) failed; the other results were written".to_string(),
    ] {
        assert!(run.stderr.lines().any(|l| l == want), "missing `{want}` in:\n{}", run.stderr);
    }
    // The NaN lands on whichever sample the plugin saw second; it is reported by its id.
    let nan = format!("error: attack `test_nan` (plugin {lib}) failed: returned a non-finite score (NaN) for sample `");
    assert!(run.stderr.lines().any(|l| l.starts_with(&nan)), "{}", run.stderr);
    // The attacks that worked are all there.
    let scores = read_scores(&out.join("scores.csv"));
    let attacks: std::collections::BTreeSet<&str> = scores.keys().map(|(_, a, _)| a.as_str()).collect();
    assert_eq!(attacks.into_iter().collect::<Vec<_>>(), vec!["loss", "mink"]);
    assert!(std::fs::read_to_string(out.join("summary.csv")).unwrap().lines().count() > 1);
}

/// An attack that never returns and one that aborts the process: each ends as one line
/// (timed out after the configured timeout, crashed), the other attacks' results are
/// written, and the exit code is 1.
#[test]
fn an_attack_that_hangs_or_aborts_fails_alone() {
    let dir = tempfile::tempdir().unwrap();
    let library = install(&built_library("kdhtest_panicky"), dir.path(), "panicky");
    let out = dir.path().join("out");
    let started = std::time::Instant::now();
    let run = kdharness(attack_args(
        &out,
        &["--plugin-dir", &dir.path().display().to_string(), "--attacks", "test_hangs,loss,test_aborts,mink", "--plugin-timeout", "2"],
    ));
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(started.elapsed().as_secs() < 60, "the hanging attack was not stopped");
    let lib = library.display().to_string();
    for want in [
        format!("error: attack `test_hangs` (plugin {lib}) timed out after 2 s; its worker was stopped (raise attacks.plugin_timeout_s if it is only slow)"),
        format!("error: attack `test_aborts` (plugin {lib}) crashed: its process ended on signal 6 (SIGABRT)"),
        "error: 2 run(s) failed; the other results were written".to_string(),
    ] {
        assert!(run.stderr.lines().any(|l| l == want), "missing `{want}` in:\n{}", run.stderr);
    }
    assert!(!run.stderr.contains("panicked at"), "{}", run.stderr);
    let scores = read_scores(&out.join("scores.csv"));
    let attacks: std::collections::BTreeSet<&str> = scores.keys().map(|(_, a, _)| a.as_str()).collect();
    assert_eq!(attacks.into_iter().collect::<Vec<_>>(), vec!["loss", "mink"]);
}

/// `plugins new attack NAME` writes a crate that builds with cargo and is then picked up
/// by `plugins list` and `attack`, scoring exactly what its template says.
#[test]
fn a_scaffolded_plugin_builds_loads_and_scores() {
    let tmp = tempfile::tempdir().unwrap();
    let crate_dir = tmp.path().join("clipped");
    kdharness(["plugins", "new", "attack", "clipped_loss", "--dir", &crate_dir.display().to_string()]).ok();
    // Its README says how to ask for each signal, the extended ones with an example.
    let readme = std::fs::read_to_string(crate_dir.join("README.md")).unwrap();
    for signal in ["TOKEN_FREQUENCY", "PREFIXED_LOGPROB", "CONTINUATIONS", "REFERENCES", "PERTURBED_LOSS", "fn score_ext"] {
        assert!(readme.contains(signal), "README.md does not mention {signal}");
    }

    // Its own target dir: the workspace's is locked by the running `cargo test`.
    let target = bin_dir().join("../scaffold-test");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let build = std::process::Command::new(cargo)
        .args(["build", "--quiet", "--manifest-path"])
        .arg(crate_dir.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target)
        .status()
        .unwrap();
    assert!(build.success(), "the scaffolded crate must build");
    let built = target.join(format!("debug/{}kdh_attack_clipped_loss{}", std::env::consts::DLL_PREFIX, std::env::consts::DLL_SUFFIX));
    let plugin_dir = built.parent().unwrap().display().to_string();

    let list = kdharness(["plugins", "list", "--plugin-dir", &plugin_dir]);
    let line = list.ok().stdout.lines().find(|l| l.starts_with("clipped_loss ")).map(str::to_string).expect(&list.stdout);
    let cells: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(cells, ["clipped_loss", "attack", "0.1.0", &built.display().to_string(), "floor=-20"]);

    let out = tmp.path().join("out");
    kdharness(attack_args(&out, &["--plugin-dir", &plugin_dir, "--attacks", "clipped_loss", "--param", "clipped_loss.floor=-5"])).ok();
    let scores = read_scores(&out.join("scores.csv"));
    let reference = reference_json();
    for (id, sample) in reference["models"]["tiny-llama"]["samples"].as_object().unwrap() {
        let lp: Vec<f64> = sample["target_logprob"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap().max(-5.0)).collect();
        let want = lp.iter().sum::<f64>() / lp.len() as f64;
        let (_, got) = scores[&("tiny-llama".to_string(), "clipped_loss".to_string(), id.clone())];
        assert_close(got, want, 1e-5, id);
    }
}

/// Plugins built against earlier interfaces (0.3.0: its root module has no `attacks_ext`;
/// 0.3.1: no `defenses`), committed as built libraries by
/// tests/fixtures/plugins/build_old_interface.sh, load without a warning and run
/// unchanged: their attack scores every sample as `loss`.
#[test]
fn a_plugin_of_the_previous_interface_loads_and_runs_unchanged() {
    for version in ["0.3.0", "0.3.1"] {
        let dir = tempfile::tempdir().unwrap();
        install(&fixture(&format!("plugins/libkdhtest_old_interface-{version}.so")), dir.path(), "old_interface");
        let plugin_dir = dir.path().display().to_string();
        let list = kdharness(["plugins", "list", "--plugin-dir", &plugin_dir]);
        list.ok();
        assert!(list.stderr.is_empty(), "{version}: {}", list.stderr);
        assert!(list.stdout.lines().any(|l| l.starts_with("test_old_interface") && l.contains("0.1.0")), "{version}: {}", list.stdout);
        let out = dir.path().join("out");
        kdharness(attack_args(&out, &["--plugin-dir", &plugin_dir, "--attacks", "test_old_interface,loss"])).ok();
        let scores = read_scores(&out.join("scores.csv"));
        let old: Vec<f64> = scores.iter().filter(|((_, a, _), _)| a == "test_old_interface").map(|(_, (_, s))| *s).collect();
        let loss: Vec<f64> = scores.iter().filter(|((_, a, _), _)| a == "loss").map(|(_, (_, s))| *s).collect();
        assert_eq!(old.len(), 24, "{version}");
        assert_eq!(old, loss, "{version}");
    }
}

/// An attack that reads continuations but never says how many it needs is refused before
/// any work, in one line saying what to implement.
#[test]
fn an_attack_reading_a_signal_it_never_requests_is_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    install(&built_library("kdhtest_panicky"), dir.path(), "panicky");
    let out = dir.path().join("out");
    let run = kdharness(attack_args(&out, &["--plugin-dir", &dir.path().display().to_string(), "--attacks", "loss,test_needs_continuations"]));
    let line = run.error_line();
    assert!(line.contains("attack `test_needs_continuations` (plugin ") && line.contains("failed: it reads continuations but asked for none (implement `Attack::continuations`)"), "{line}");
    assert!(!out.join("scores.csv").exists());
}
