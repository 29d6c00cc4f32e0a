use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").canonicalize().expect("tests/fixtures exists")
}

pub fn fixture(name: &str) -> PathBuf {
    fixtures().join(name)
}

/// The directory holding the kdharness binary and the workspace's plugin libraries.
pub fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_kdharness")).parent().unwrap().to_path_buf()
}

/// Path of a cdylib built by this workspace, e.g. `kdhtest_panicky`.
pub fn built_library(lib_name: &str) -> PathBuf {
    let path = bin_dir().join(format!("{}{lib_name}{}", std::env::consts::DLL_PREFIX, std::env::consts::DLL_SUFFIX));
    assert!(path.is_file(), "{} is missing: run `cargo build --workspace` before the tests", path.display());
    path
}

/// Copies a built test plugin into `dir` under the name the plugin search looks for.
pub fn install(library: &Path, dir: &Path, name: &str) -> PathBuf {
    let to = dir.join(format!("{}kdh_{name}{}", std::env::consts::DLL_PREFIX, std::env::consts::DLL_SUFFIX));
    std::fs::copy(library, &to).unwrap();
    to
}

pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn ok(&self) -> &Self {
        assert_eq!(self.code, Some(0), "kdharness failed:\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }

    /// The run failed with one clear error line and no panic trace; returns that line.
    pub fn error_line(&self) -> String {
        assert_eq!(self.code, Some(1), "expected exit code 1:\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        assert!(!self.stderr.contains("panicked at"), "panic trace in stderr:\n{}", self.stderr);
        assert!(!self.stderr.contains("RUST_BACKTRACE"), "backtrace hint in stderr:\n{}", self.stderr);
        let errors: Vec<&str> = self.stderr.lines().filter(|l| l.starts_with("error: ")).collect();
        assert_eq!(errors.len(), 1, "expected exactly one error line, stderr:\n{}", self.stderr);
        errors[0].to_string()
    }
}

pub fn kdharness<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    kdharness_env(args, &[])
}

pub fn kdharness_env<I, S>(args: I, env: &[(&str, &std::ffi::OsStr)]) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    built_library("kdh_attack_loss");
    let mut command = Command::new(env!("CARGO_BIN_EXE_kdharness"));
    command.args(args).env_remove("KDHARNESS_PLUGIN_PATH");
    for (k, v) in env {
        command.env(k, v);
    }
    let Output { status, stdout, stderr } = command.output().expect("kdharness runs");
    Run { code: status.code(), stdout: String::from_utf8_lossy(&stdout).into(), stderr: String::from_utf8_lossy(&stderr).into() }
}

/// `attack` on the fixtures: tiny-llama as the target, tiny-opt (own tokenizer) as the
/// reference. `extra` is appended.
pub fn attack_args(out: &Path, extra: &[&str]) -> Vec<String> {
    let f = |n: &str| fixture(n).display().to_string();
    let mut args: Vec<String> = vec![
        "attack".into(),
        "--model".into(),
        format!("tiny-llama={}", f("tiny-llama.onnx")),
        "--reference".into(),
        format!("tiny-opt={}", f("tiny-opt.onnx")),
        "--tokenizer".into(),
        f("tokenizer.json"),
        "--reference-tokenizer".into(),
        f("tokenizer-b.json"),
        "--members".into(),
        f("members.jsonl"),
        "--nonmembers".into(),
        f("nonmembers.jsonl"),
        "--bootstrap".into(),
        "100".into(),
        "--out".into(),
        out.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// `attack` on one model (no reference), `extra` appended.
pub fn one_model_attack(model: &str, onnx: &Path, tokenizer: &Path, members: &Path, nonmembers: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = vec!["attack".into(), "--model".into(), format!("{model}={}", onnx.display())];
    for (flag, path) in [("--tokenizer", tokenizer), ("--members", members), ("--nonmembers", nonmembers), ("--out", out)] {
        args.push(flag.into());
        args.push(path.display().to_string());
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// Parsed scores.csv rows: (model, attack, sample_id) -> (member, score).
pub fn read_scores(path: &Path) -> std::collections::BTreeMap<(String, String, String), (bool, f64)> {
    kdharness::report::read_scores(path)
        .unwrap()
        .into_iter()
        .map(|r| ((r.model, r.attack, r.sample_id), (r.member, r.score)))
        .collect()
}

pub fn reference_json() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("reference.json")).unwrap()).unwrap()
}

/// |got − want| ≤ tol · max(1, |want|).
pub fn assert_close(got: f64, want: f64, tol: f64, what: &str) {
    assert!((got - want).abs() <= tol * want.abs().max(1.0), "{what}: got {got}, want {want}");
}

/// Signals of every fixture sample (members then non-members) under `model`, computed
/// through the library with the given batching.
pub fn fixture_signals(
    model: &str,
    tokenizer: &str,
    batch: kdharness::score::BatchSettings,
) -> Vec<kdharness_plugin_api::OwnedSample> {
    use kdharness::data::{MembershipSets, Template, TokenLimits, encode};
    use kdharness::runtime::{CausalLm, Runtime, SessionOptions};
    use kdharness::score::{ScoredSample, compute_signals};

    let sets = MembershipSets::load(&fixture("members.jsonl"), &fixture("nonmembers.jsonl")).unwrap();
    let tokenizer = tokenizers::Tokenizer::from_file(fixture(tokenizer)).unwrap();
    let samples: Vec<ScoredSample<'_>> = sets
        .labelled()
        .map(|(record, _)| ScoredSample {
            record,
            encoded: encode(&tokenizer, Template::Alpaca, TokenLimits::default(), record).unwrap(),
        })
        .collect();
    let runtime = Runtime::get(None).unwrap();
    let mut lm = CausalLm::open(runtime, &fixture(model), SessionOptions::default()).unwrap();
    compute_signals(&mut lm, &tokenizer, &samples, batch, &mut |_| {}).unwrap()
}
