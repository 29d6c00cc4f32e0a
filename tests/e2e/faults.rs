//! Faults caused on purpose (issue 14): a run killed while it retrains with `--fresh`, two
//! runs on one directory, a poisoned working directory for Python, a tampered runtime
//! library in the cache.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{Run, bin_dir};

fn smoke() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/smoke.toml")
}

fn run_in(command: &mut Command) -> Run {
    let out = command.output().expect("kdharness runs");
    Run { code: out.status.code(), stdout: String::from_utf8_lossy(&out.stdout).into(), stderr: String::from_utf8_lossy(&out.stderr).into() }
}

fn eval(config: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut command = Command::new(bin_dir().join("kdharness"));
    command.args(["eval", &config.display().to_string(), "--out", &out.display().to_string()]).args(extra).env_remove("KDHARNESS_PLUGIN_PATH");
    command
}

/// Polls `done` every few milliseconds until it holds, failing if `child` ends first.
fn wait_for(child: &mut std::process::Child, what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(180);
    while !done() {
        assert!(Instant::now() < deadline && child.try_wait().unwrap().is_none(), "the run ended before {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[cfg(unix)]
#[test]
fn a_run_killed_while_it_retrains_with_fresh_is_redone_not_trusted() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    run_in(&mut eval(&smoke(), &out, &["-q"])).ok();
    let tables = ["scores.csv", "summary.csv", "memorization.csv", "utility.csv", "blocks.csv", "comparisons.csv"];
    let before: Vec<Vec<u8>> = tables.iter().map(|f| std::fs::read(out.join(f)).unwrap()).collect();

    // --fresh retrains the teacher over the finished one; killed while it does, ...
    let marker = out.join("models/teacher/.done");
    let mut child = eval(&smoke(), &out, &["--fresh"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    wait_for(&mut child, "the teacher was retrained", || !marker.exists());
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(!marker.exists(), "killed too late: the teacher was done again");

    // ... the next run does not call the half-retrained teacher up to date.
    let rerun = run_in(&mut eval(&smoke(), &out, &[]));
    rerun.ok();
    assert!(rerun.stderr.contains("teacher: running"), "{}", rerun.stderr);
    assert!(!rerun.stderr.contains("teacher: up to date"), "{}", rerun.stderr);
    for (f, b) in tables.iter().zip(&before) {
        assert!(&std::fs::read(out.join(f)).unwrap() == b, "{f} differs from the first run's");
    }
}

#[cfg(unix)]
#[test]
fn a_second_eval_on_a_busy_run_directory_is_refused_and_a_dead_holders_lock_is_taken_over() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let lock = out.join(".lock");
    let mut child = eval(&smoke(), &out, &[]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let pid = child.id().to_string();
    wait_for(&mut child, "it took the lock", || std::fs::read_to_string(&lock).is_ok_and(|t| t.trim() == pid));

    let second = run_in(&mut eval(&smoke(), &out, &[]));
    let line = second.error_line();
    assert!(line.contains(&format!("run directory {} is in use by kdharness (PID {pid})", out.display())), "{line}");

    child.kill().unwrap(); // SIGKILL: the lock file keeps its PID, the lock itself is gone
    child.wait().unwrap();
    assert_eq!(std::fs::read_to_string(&lock).unwrap().trim(), pid);
    let third = run_in(&mut eval(&smoke(), &out, &["--only", "report"]));
    assert!(third.stderr.contains(&format!("took over the lock of PID {pid}, which stopped without releasing it")), "{}", third.stderr);
    assert!(!third.stderr.contains("in use by"), "{}", third.stderr);
    // A run that ends releases the lock (an empty file) and says nothing on the next take.
    assert_eq!(std::fs::read_to_string(&lock).unwrap(), "");
}

/// `kdharness doctor` from `cwd`, with only what it finds by itself (no ORT_DYLIB_PATH).
fn doctor(cwd: &Path, cache: Option<&Path>) -> Run {
    let mut command = Command::new(bin_dir().join("kdharness"));
    command.arg("doctor").current_dir(cwd).env_remove("ORT_DYLIB_PATH").env_remove("PYTHONPATH");
    if let Some(cache) = cache {
        command.env("KDHARNESS_CACHE_DIR", cache);
    }
    run_in(&mut command)
}

#[test]
fn python_never_imports_a_module_from_the_working_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let sentinel = tmp.path().join("imported");
    for module in ["onnxruntime", "os", "zipfile"] {
        std::fs::write(tmp.path().join(format!("{module}.py")), format!("open({:?}, 'a').write('{module} ')\n", sentinel.display().to_string())).unwrap();
    }
    let run = doctor(tmp.path(), None);
    run.ok();
    assert!(!sentinel.exists(), "a module of the working directory was imported: {}", std::fs::read_to_string(&sentinel).unwrap_or_default());
    assert!(run.stdout.contains("ONNX Runtime version: 1.31.1"), "{}", run.stdout);
}

#[test]
fn a_tampered_runtime_library_in_the_cache_is_refused_with_how_to_fetch_it_again() {
    let Some(_) = kdharness::runtime::pinned_library_sha256() else { return };
    let real = kdharness::runtime::locate(None).unwrap().path;
    let cache = tempfile::tempdir().unwrap();
    let cached = cache.path().join("onnxruntime-1.31.1").join(real.file_name().unwrap());
    std::fs::create_dir_all(cached.parent().unwrap()).unwrap();
    std::fs::copy(&real, &cached).unwrap();
    // The pinned library, untouched: found in this cache.
    let good = doctor(cache.path(), Some(cache.path()));
    good.ok();
    assert!(good.stdout.contains("(found via the user cache)"), "{}", good.stdout);

    let mut bytes = std::fs::read(&cached).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    std::fs::write(&cached, bytes).unwrap();
    let bad = doctor(cache.path(), Some(cache.path()));
    assert_eq!(bad.code, Some(1), "{}", bad.stdout);
    assert!(bad.stdout.contains("it changed after it was fetched: delete"), "{}", bad.stdout);
    assert!(bad.stdout.contains("and rerun to fetch it again"), "{}", bad.stdout);
}
