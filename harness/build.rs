//! Records the git revision the binary was built from, for manifests and `doctor`.

use std::path::Path;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok().filter(|o| o.status.success())?;
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    let revision = match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(rev) if git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty()) => format!("{rev}-dirty"),
        Some(rev) => rev,
        None => "unknown".to_string(),
    };
    println!("cargo:rustc-env=KDHARNESS_GIT_REVISION={revision}");
    println!("cargo:rerun-if-changed=build.rs");
    for watched in ["../.git/HEAD", "../.git/index"] {
        if Path::new(watched).exists() {
            println!("cargo:rerun-if-changed={watched}");
        }
    }
}
