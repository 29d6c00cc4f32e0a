//! The run as a plan of cells (issue 15): `--plan` lists them, and `--cell ID` for every
//! cell, in reverse topological order after data and teacher and two processes at a time
//! on one run directory, gives the local run's tables byte for byte.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{bin_dir, kdharness};

fn smoke() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/smoke.toml")
}

fn eval_args(out: &Path, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["eval".to_string(), smoke().display().to_string(), "--out".into(), out.display().to_string(), "-q".into()];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

const TABLES: [&str; 7] = ["scores.csv", "summary.csv", "memorization.csv", "utility.csv", "blocks.csv", "comparisons.csv", "canaries.csv"];

#[test]
fn every_cell_run_alone_in_reverse_order_two_at_a_time_gives_the_local_tables() {
    let tmp = tempfile::tempdir().unwrap();
    let plan = kdharness(["eval", &smoke().display().to_string(), "--plan"]);
    plan.ok();
    let ids: Vec<String> = plan.stdout.lines().map(|l| l.split('\t').next().unwrap().to_string()).collect();
    // data, teacher, 7 students, a scoring cell per model, the report.
    assert_eq!(ids.len(), 2 + 7 + 8 + 1, "{}", plan.stdout);
    assert_eq!(plan.stdout.lines().nth(1), Some("teacher\tdata"));
    let json = kdharness(["eval", &smoke().display().to_string(), "--plan", "--json"]);
    let cells: serde_json::Value = serde_json::from_str(&json.ok().stdout).unwrap();
    assert_eq!(cells.as_array().unwrap().len(), ids.len());
    assert_eq!(cells[ids.len() - 1]["kind"], "report");
    assert_eq!(cells[ids.len() - 1]["needs"].as_array().unwrap().len(), 8);
    let kd = cells.as_array().unwrap().iter().find(|c| c["id"] == "score-kd-tiny").unwrap();
    assert_eq!(kd, &serde_json::json!({"id": "score-kd-tiny", "needs": ["kd-tiny", "nokd-tiny"], "kind": "score"}));

    let local = tmp.path().join("local");
    kdharness(eval_args(&local, &[])).ok();

    let out = tmp.path().join("cells");
    for first in ["data", "teacher"] {
        kdharness(eval_args(&out, &["--cell", first])).ok();
    }
    // The rest from the report backwards, two processes at a time: a cell whose needs are
    // not done yet runs them (or waits for the process that is running them).
    let rest: Vec<&String> = ids.iter().rev().filter(|id| *id != "data" && *id != "teacher").collect();
    for pair in rest.chunks(2) {
        let children: Vec<_> = pair
            .iter()
            .map(|id| (id, Command::new(bin_dir().join("kdharness")).args(eval_args(&out, &["--cell", id])).env_remove("KDHARNESS_PLUGIN_PATH").output_spawned()))
            .collect();
        for (id, child) in children {
            let output = child.wait_with_output().unwrap();
            assert!(output.status.success(), "--cell {id}: {}", String::from_utf8_lossy(&output.stderr));
        }
    }
    for f in TABLES {
        assert!(std::fs::read(out.join(f)).unwrap() == std::fs::read(local.join(f)).unwrap(), "{f} differs from the local run's");
    }
    // Nothing is left to do.
    let again = kdharness(eval_args(&out, &["--cell", "report"]).into_iter().filter(|a| a != "-q"));
    again.ok();
    assert!(!again.stderr.contains(": running"), "{}", again.stderr);

    let unknown = kdharness(eval_args(&out, &["--cell", "kd-tinny"]));
    let line = unknown.error_line();
    assert!(line.contains("--cell `kd-tinny` is not a cell of this config's plan (did you mean `kd-tiny`?)"), "{line}");
}

/// `Command::spawn` with piped output, for `wait_with_output`.
trait SpawnPiped {
    fn output_spawned(&mut self) -> std::process::Child;
}

impl SpawnPiped for Command {
    fn output_spawned(&mut self) -> std::process::Child {
        self.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap()
    }
}
