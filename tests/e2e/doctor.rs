//! `kdharness doctor`, and fetching ONNX Runtime on a machine that has none.

use crate::common::*;
use std::ffi::OsStr;

#[test]
fn doctor_reports_library_version_providers_and_plugin_dirs() {
    let tmp = tempfile::tempdir().unwrap();
    let run = kdharness(["doctor", "--plugin-dir", &tmp.path().display().to_string()]);
    run.ok();
    let version = run.stdout.lines().find(|l| l.starts_with("ONNX Runtime version: ")).expect(&run.stdout);
    assert!(version.starts_with("ONNX Runtime version: 1.31.1 (found via "), "{version}");
    let library = run.stdout.lines().find(|l| l.starts_with("ONNX Runtime library: ")).expect(&run.stdout);
    assert!(std::path::Path::new(library.trim_start_matches("ONNX Runtime library: ")).is_file(), "{library}");
    assert!(run.stdout.contains("execution providers: ") && run.stdout.contains("CPUExecutionProvider"), "{}", run.stdout);
    assert!(run.stdout.contains(&format!("{} [--plugin-dir]", tmp.path().display())), "{}", run.stdout);
    assert!(run.stdout.contains(&format!("{} [executable directory]", bin_dir().display())), "{}", run.stdout);
    assert!(run.stdout.contains("attacks loaded: dcpdd, loss, mink, mink_paper, minkpp, minkpp_paper, mope, recall, ref, rmia, samia, samia_zlib, zlib, zlib_paper"), "{}", run.stdout);
    assert!(run.stdout.contains("KD methods loaded: distillm, gkd, imitkd, kd, minillm, nokd, seqkd"), "{}", run.stdout);
    assert!(run.stdout.contains("defenses loaded: dpsgd, logit_noise, ngram_filter, round_probs, temperature, topk"), "{}", run.stdout);
}

/// A fresh machine: no ORT_DYLIB_PATH, no onnxruntime Python package, empty cache. The
/// library is fetched with pip once, announced once, and found in the cache afterwards.
#[cfg(target_os = "linux")]
#[test]
fn a_fresh_machine_fetches_the_runtime_once() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    // A python3 that behaves as if the onnxruntime package were not installed.
    let real = String::from_utf8(std::process::Command::new("sh").args(["-c", "command -v python3"]).output().unwrap().stdout).unwrap();
    let shim_dir = tmp.path().join("bin");
    std::fs::create_dir_all(&shim_dir).unwrap();
    let shim = shim_dir.join("python3");
    std::fs::write(
        &shim,
        format!("#!/bin/sh\ncase \"$2\" in *\"import os, onnxruntime\"*) exit 1;; esac\nexec {} \"$@\"\n", real.trim()),
    )
    .unwrap();
    std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = std::env::join_paths(std::iter::once(shim_dir.clone()).chain(std::env::split_paths(&std::env::var_os("PATH").unwrap()))).unwrap();
    let cache = tmp.path().join("cache");
    let env: [(&str, &OsStr); 3] = [("PATH", &path), ("KDHARNESS_CACHE_DIR", cache.as_os_str()), ("ORT_DYLIB_PATH", OsStr::new(""))];

    let first = kdharness_env(["doctor"], &env);
    first.ok();
    assert_eq!(first.stderr.matches("fetching the onnxruntime==1.31.1 wheel with pip").count(), 1, "{}", first.stderr);
    let cached = cache.join("onnxruntime-1.31.1/libonnxruntime.so.1.31.1");
    assert!(first.stdout.contains(&format!("ONNX Runtime library: {}", cached.display())), "{}", first.stdout);
    assert!(first.stdout.contains("ONNX Runtime version: 1.31.1 (found via a pip download just now)"), "{}", first.stdout);

    let second = kdharness_env(["doctor"], &env);
    second.ok();
    assert!(!second.stderr.contains("fetching"), "{}", second.stderr);
    assert!(second.stdout.contains("ONNX Runtime version: 1.31.1 (found via the user cache)"), "{}", second.stdout);
}
