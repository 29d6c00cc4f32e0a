//! Faults caused on purpose (issue 14): a run killed with SIGKILL inside every stage, with
//! and without `--fresh`; two runs on one directory; a poisoned working directory for
//! Python; a tampered runtime library in the cache.

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

/// The tables a run writes, compared byte for byte.
const TABLES: [&str; 7] = ["scores.csv", "summary.csv", "memorization.csv", "utility.csv", "blocks.csv", "comparisons.csv", "canaries.csv"];

/// The tables of one uninterrupted smoke run (made once for all the kill tests).
fn uninterrupted() -> &'static Vec<Vec<u8>> {
    static TABLES_OF: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    TABLES_OF.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("run");
        run_in(&mut eval(&smoke(), &out, &["-q"])).ok();
        tables(&out)
    })
}

/// The compared tables of the run in `out`.
fn tables(out: &Path) -> Vec<Vec<u8>> {
    TABLES.iter().map(|f| std::fs::read(out.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"))).collect()
}

/// The temporary files under `dir`.
fn leftovers(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(leftovers(&path));
        } else if entry.file_name().to_string_lossy().contains(".tmp.") {
            found.push(path);
        }
    }
    found
}

/// Kills a smoke run with SIGKILL in the middle of a file write of `stage` (a seeded one
/// of its first `writes`), once into an empty directory and once while `--fresh` redoes a
/// finished run; each time the rerun redoes that stage (and what follows), not the ones
/// before, and every table equals the uninterrupted run's.
#[cfg(unix)]
fn killed_in(stage: &str, writes: u64, check: impl Fn(&Path, &Run)) {
    use std::os::unix::process::ExitStatusExt;
    let stages = ["data", "teacher", "distill", "export", "attack", "memorize", "report"];
    let before = &stages[..stages.iter().position(|s| *s == stage).unwrap()];
    // The seeded kill point: splitmix64 of the stage's name.
    let mut z = stage.bytes().fold(0x9e37_79b9_7f4a_7c15u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    let n = 1 + (z ^ (z >> 31)) % writes;
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    for fresh in [false, true] {
        let extra: &[&str] = if fresh { &["--fresh"] } else { &[] };
        let killed = eval(&smoke(), &out, extra).env("KDHARNESS_KILL_AT", format!("{stage}:{n}")).output().unwrap();
        let log = String::from_utf8_lossy(&killed.stderr);
        assert_eq!(killed.status.signal(), Some(9), "not killed at write {n} of {stage} (fresh: {fresh}): {log}");
        assert!(log.contains(&format!("{stage}: running")) || stage == "report", "{log}");
        assert!(!leftovers(&out).is_empty() || stage == "data", "the kill left no half-written file: too late?");

        let rerun = run_in(&mut eval(&smoke(), &out, &[]));
        rerun.ok();
        check(&out, &rerun);
        for earlier in before {
            assert!(!rerun.stderr.contains(&format!("{earlier}: running")), "{earlier} was done again after a kill in {stage}:\n{}", rerun.stderr);
        }
        if stage != "report" {
            assert!(rerun.stderr.contains(&format!("{stage}: running")), "{stage} was not redone:\n{}", rerun.stderr);
        }
        assert!(leftovers(&out).is_empty(), "temporary files left: {:?}", leftovers(&out));
        let got = tables(&out);
        for ((f, got), want) in TABLES.iter().zip(&got).zip(uninterrupted()) {
            assert!(got == want, "{f} differs from the uninterrupted run's after a kill in {stage} (fresh: {fresh})");
        }
    }
}

#[cfg(unix)]
#[test]
fn a_run_killed_in_the_data_stage_is_redone_to_the_same_tables() {
    killed_in("data", 7, |_, _| {});
}

#[cfg(unix)]
#[test]
fn a_run_killed_while_the_teacher_trains_is_redone_to_the_same_tables() {
    killed_in("teacher", 4, |_, _| {});
}

#[cfg(unix)]
#[test]
fn a_run_killed_among_the_students_redoes_only_the_unfinished_ones() {
    killed_in("distill", 24, |_, rerun| {
        // Students finished before the kill are kept.
        assert!(rerun.stderr.contains("distill: up to date"), "{}", rerun.stderr);
    });
}

#[cfg(unix)]
#[test]
fn a_run_killed_while_it_exports_is_redone_to_the_same_tables() {
    killed_in("export", 14, |_, _| {});
}

#[cfg(unix)]
#[test]
fn a_run_killed_with_its_signal_cache_half_written_reuses_the_finished_signals() {
    killed_in("attack", 6, |out, rerun| {
        assert!(out.join("stages/signals").is_dir());
        assert!(rerun.stderr.contains("loaded from cache"), "no signal was reused:\n{}", rerun.stderr);
    });
}

#[cfg(unix)]
#[test]
fn a_run_killed_while_it_memorizes_is_redone_to_the_same_tables() {
    killed_in("memorize", 3, |_, _| {});
}

#[cfg(unix)]
#[test]
fn a_run_killed_while_it_reports_is_redone_to_the_same_tables() {
    killed_in("report", 20, |_, rerun| {
        for stage in ["data", "teacher", "attack", "memorize"] {
            assert!(rerun.stderr.contains(&format!("{stage}: up to date")), "{}", rerun.stderr);
        }
    });
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

#[cfg(unix)]
#[test]
fn ctrl_c_stops_cleanly_and_the_rerun_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let mut child = eval(&smoke(), &out, &[]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let teacher = out.join("models/teacher/.done");
    wait_for(&mut child, "the teacher was done", || teacher.exists());
    // SAFETY: sends SIGINT to the child we spawned.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let stopped = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&stopped.stderr);
    assert_eq!(stopped.status.code(), Some(130), "{log}");
    assert!(log.contains("interrupted; finished work is kept: run the same command again to resume"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    assert!(leftovers(&out).is_empty(), "temporary files left: {:?}", leftovers(&out));
    assert_eq!(std::fs::read_to_string(out.join(".lock")).unwrap(), "", "the lock still names the stopped run");

    let rerun = run_in(&mut eval(&smoke(), &out, &[]));
    rerun.ok();
    assert!(rerun.stderr.contains("teacher: up to date"), "{}", rerun.stderr);
    assert!(!rerun.stderr.contains("took over the lock"), "{}", rerun.stderr);
    for ((f, got), want) in TABLES.iter().zip(tables(&out)).zip(uninterrupted()) {
        assert!(&got == want, "{f} differs from the uninterrupted run's");
    }
}

/// A KD plugin that panics, returns a NaN loss or a NaN gradient half-way through training
/// stops its student with one error naming the method and its library; the first epoch's
/// checkpoint stays on disk, every weight finite, and the student is not marked done.
#[test]
fn a_kd_plugin_that_panics_or_returns_nan_stops_its_student_and_keeps_the_last_good_checkpoint() {
    use crate::common::{built_library, install};
    let tmp = tempfile::tempdir().unwrap();
    let plugins = tmp.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let library = install(&built_library("kdhtest_panicky"), &plugins, "panicky");
    let smoke_text = std::fs::read_to_string(smoke()).unwrap();
    for (method, what) in [
        ("test_kd_panics", "panicked: deliberate KD test panic (the last good checkpoint is kept)"),
        ("test_kd_nan_loss", "the loss became NaN at step 4; try a lower learning rate (the last good checkpoint is kept)"),
        ("test_kd_nan_grad", "returned a non-finite gradient (the last good checkpoint is kept)"),
    ] {
        let text = smoke_text
            .replace(r#"methods = ["kd", "seqkd", "gkd", "imitkd", "minillm", "distillm"]"#, &format!("methods = [\"{method}\"]"))
            .replace("train = { epochs = 1, lr = 3e-3, batch_size = 8 }", "train = { epochs = 2, lr = 3e-3, batch_size = 8 }");
        assert_ne!(text, smoke_text);
        let config = tmp.path().join(format!("{method}.toml"));
        std::fs::write(&config, text).unwrap();
        let out = tmp.path().join(method);
        let run = run_in(eval(&config, &out, &[]).args(["--plugin-dir", &plugins.display().to_string()]));
        let line = run.error_line();
        assert_eq!(line, format!("error: KD method `{method}` (plugin {}): {what}", library.display()));

        let student = out.join(format!("models/{method}-tiny"));
        assert!(!student.join(".done").exists(), "the failed student was marked done");
        let bytes = std::fs::read(student.join("model.safetensors")).expect("the first epoch's checkpoint");
        let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        assert!(tensors.len() > 5);
        for (name, view) in tensors.tensors() {
            assert_eq!(view.dtype(), safetensors::Dtype::F32);
            let finite = view.data().chunks_exact(4).all(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]).is_finite());
            assert!(finite, "{name} of the kept checkpoint is not finite");
        }
        // The No-KD student before it is kept.
        assert!(out.join("models/nokd-tiny/.done").exists());
    }
}

#[test]
fn an_unknown_kd_method_or_attack_is_refused_before_any_work() {
    let tmp = tempfile::tempdir().unwrap();
    let smoke_text = std::fs::read_to_string(smoke()).unwrap();
    for (from, to, want) in [
        (r#"methods = ["kd", "seqkd""#, r#"methods = ["kd", "seqdk""#, "error: distill.methods: no KD method `seqdk` is loaded (did you mean `seqkd`?)"),
        (r#"names = ["loss", "zlib""#, r#"names = ["los", "zlib""#, "error: attacks.names: no attack `los` is loaded (did you mean `loss`?)"),
    ] {
        let config = tmp.path().join("bad.toml");
        std::fs::write(&config, smoke_text.replace(from, to)).unwrap();
        let out = tmp.path().join("run");
        let line = run_in(&mut eval(&config, &out, &[])).error_line();
        assert!(line.starts_with(want), "{line}");
        assert!(!out.join("data").exists(), "work was done before the error");
    }
}

/// A flipped byte in a model, a deleted table, a changed tokenizer file at the same path
/// and a changed plugin library at the same path: each is noticed and exactly the stages
/// that depend on it run again, to the same tables.
#[test]
fn changed_outputs_and_changed_inputs_at_the_same_path_are_noticed() {
    use crate::common::{built_library, install};
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let plugins = tmp.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let kd = install(&built_library("kdh_kd_kd"), &plugins, "kd_kd");
    let args = ["--plugin-dir", &plugins.display().to_string()].map(str::to_string);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run_in(eval(&smoke(), &out, &args).arg("-q")).ok();
    let first = tables(&out);

    // A flipped byte in a student's weights and a deleted table.
    let weights = out.join("models/kd-tiny/model.safetensors");
    let mut bytes = std::fs::read(&weights).unwrap();
    let at = bytes.len() - 7;
    bytes[at] ^= 0x10;
    std::fs::write(&weights, bytes).unwrap();
    std::fs::remove_file(out.join("stages/memorize/kd-tiny/utility.csv")).unwrap();
    let rerun = run_in(&mut eval(&smoke(), &out, &args));
    rerun.ok();
    assert!(rerun.stderr.contains(&format!("distill: {} changed after it was written; running the stage again", weights.display())), "{}", rerun.stderr);
    assert!(rerun.stderr.contains("memorize: ") && rerun.stderr.contains("utility.csv is missing; running the stage again"), "{}", rerun.stderr);
    assert_eq!(rerun.stderr.matches("distill: running").count(), 1, "only kd-tiny: {}", rerun.stderr);
    assert!(tables(&out) == first, "the rebuilt tables differ");

    // The KD plugin's library changed at the same path: its students (and only they, and
    // what is made from every model) run again.
    let mut library = std::fs::read(&kd).unwrap();
    library.extend_from_slice(b"a changed build");
    std::fs::write(&kd, library).unwrap();
    let rerun = run_in(&mut eval(&smoke(), &out, &args));
    rerun.ok();
    assert_eq!(rerun.stderr.matches("distill: running").count(), 1, "only kd-tiny: {}", rerun.stderr);
    assert!(rerun.stderr.contains("teacher: up to date") && rerun.stderr.contains("attack: running"), "{}", rerun.stderr);

    // The tokenizer file changed at the same path: everything from the data on runs again.
    let tokenizer = tmp.path().join("tokenizer.json");
    std::fs::copy(out.join("data/tokenizer.json"), &tokenizer).unwrap();
    let config = tmp.path().join("own-tokenizer.toml");
    std::fs::write(&config, std::fs::read_to_string(smoke()).unwrap().replace("tokenizer = \"train\"", &format!("tokenizer = \"{}\"", tokenizer.display()))).unwrap();
    run_in(eval(&config, &out, &args).arg("-q")).ok();
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&tokenizer).unwrap()).unwrap();
    std::fs::write(&tokenizer, serde_json::to_string_pretty(&json).unwrap()).unwrap();
    let rerun = run_in(&mut eval(&config, &out, &args));
    rerun.ok();
    assert!(rerun.stderr.contains("data: running") && rerun.stderr.contains("teacher: running"), "{}", rerun.stderr);
}
