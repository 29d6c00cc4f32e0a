//! `kdharness eval CONFIG --executor slurm`: the plan's unfinished cells as Slurm jobs,
//! each one `kdharness eval CONFIG --cell ID` in the same run directory: the teacher (with
//! the data), then every student (and base or healed model) as one job array, then one
//! job per model's scoring, then the report, each after exactly the jobs (or array tasks)
//! of the cells it needs (`--dependency=afterok`), so that a failed student holds back
//! only its own scoring and the report. A multi-seed study's teachers and reports are
//! arrays over its seeds, and its summary a last job. Resources come from the
//! config's `[slurm]`. It waits for the jobs (or, with `--no-wait`, prints their ids) and
//! names every cell that failed with its job id and log file; the other cells' results
//! stay, and running the same command again submits only what is not done.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::{Options, check_plugins, lock, pending};
use crate::config::{Loaded, SlurmResources};
use crate::status;

/// One submitted job: a group of cells (one cell, or an array of them).
struct Job {
    group: &'static str,
    id: String,
    cells: Vec<String>,
    array: bool,
}

/// What a job's tasks came to, read from `scontrol show job -o`.
struct Task {
    /// `ID` or `ARRAYID_TASK`.
    job: String,
    /// Index into the job's cells (0 for a single job).
    index: Option<usize>,
    state: String,
    reason: String,
    log: String,
}

/// Submits the unfinished cells of `loaded`'s plan in `opts.out` to Slurm; waits for them
/// unless `no_wait`.
pub fn submit(loaded: &Loaded, opts: &Options, exe: &Path, no_wait: bool) -> Result<()> {
    std::fs::create_dir_all(&opts.out).with_context(|| format!("cannot create {}", opts.out.display()))?;
    let out = opts.out.canonicalize().with_context(|| format!("cannot resolve {}", opts.out.display()))?;
    let _shared = lock::RunLock::share(&out)?;
    let registry = crate::plugins::load(&opts.plugin_dirs);
    check_plugins(&loaded.config, &registry)?;
    let todo = pending(loaded, opts, registry)?;
    let plan = super::plan::plan(&loaded.config);
    let cell = |id: &str| plan.iter().find(|c| c.id == id);
    // The jobs, in order: (group, resources of, cells); the cells of a group of several
    // (the students; a study's teachers or reports over its seeds) are one job array,
    // and each model's scoring is a job of its own, after exactly what it reads.
    let of_kind = |kind: &str| todo.iter().filter(|id| cell(id).is_some_and(|c| c.kind == kind)).cloned().collect::<Vec<String>>();
    let mut batches: Vec<(&'static str, &'static str, Vec<String>)> = vec![("teacher", "teacher", of_kind("teacher")), ("students", "students", of_kind("train"))];
    batches.extend(of_kind("score").into_iter().map(|id| ("score", "score", vec![id])));
    batches.extend([("report", "report", of_kind("report")), ("seeds", "report", of_kind("seeds"))]);
    batches.retain(|(_, _, cells)| !cells.is_empty());
    let all: Vec<&str> = batches.iter().flat_map(|(_, _, cells)| cells.iter().map(String::as_str)).collect();
    status::info(format!("slurm: submitting {} cell(s): {}", all.len(), all.join(", ")));
    let dir = out.join("slurm");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let config = config_path(loaded, &dir)?;
    let slurm = loaded.config.slurm.clone().unwrap_or_default();
    let mut jobs: Vec<Job> = Vec::new();
    // The job (or array task) of each cell submitted so far: `ID` or `ID_TASK`.
    let mut job_of: std::collections::HashMap<String, String> = Default::default();
    for (group, stage, cells) in batches {
        let array = group == "students" || cells.len() > 1;
        // A scoring job's files are named by its cell (`seed-S/…` flattened).
        let label = if group == "score" { cells[0].replace('/', "_") } else { group.to_string() };
        let script = dir.join(format!("{label}.sh"));
        let text = job_script(&loaded.config.name, &loaded.config.seeds, &label, &cells, array, &slurm.resources(stage), exe, &config, &out, opts);
        crate::files::write_atomic(&script, text.as_bytes()).with_context(|| format!("cannot write {}", script.display()))?;
        let mut after: Vec<&str> = cells.iter().filter_map(|c| cell(c)).flat_map(|c| c.needs.iter()).filter_map(|n| job_of.get(n).map(String::as_str)).collect();
        after.sort();
        after.dedup();
        let mut sbatch = Command::new("sbatch");
        sbatch.arg("--parsable");
        if !after.is_empty() {
            sbatch.arg(format!("--dependency=afterok:{}", after.join(":")));
        }
        if array {
            let limit = if slurm.array_parallelism > 0 { format!("%{}", slurm.array_parallelism) } else { String::new() };
            sbatch.arg(format!("--array=0-{}{limit}", cells.len() - 1));
        }
        let output = sbatch.arg(&script).output().context("cannot run sbatch: is Slurm installed and SLURM_CONF set?")?;
        if !output.status.success() {
            bail!("sbatch {} failed: {}", script.display(), String::from_utf8_lossy(&output.stderr).trim());
        }
        let id = String::from_utf8_lossy(&output.stdout).trim().split(';').next().unwrap_or_default().to_string();
        status::info(format!("slurm: {group} job {id} ({})", cells.join(", ")));
        for (i, c) in cells.iter().enumerate() {
            job_of.insert(c.clone(), if array { format!("{id}_{i}") } else { id.clone() });
        }
        jobs.push(Job { group, id, cells, array });
    }
    if no_wait {
        for job in &jobs {
            println!("{}\t{}\t{}", job.group, job.id, job.cells.join(","));
        }
        return Ok(());
    }
    wait(&jobs, &out)
}

/// Polls the jobs until every task has ended; cancels what can no longer run because a
/// cell it needs failed; fails naming every failed cell.
fn wait(jobs: &[Job], out: &Path) -> Result<()> {
    loop {
        let mut running = false;
        let mut failed = Vec::new();
        for job in jobs {
            for task in tasks(&job.id)? {
                match task.state.as_str() {
                    "COMPLETED" => {}
                    "PENDING" if task.reason == "DependencyNeverSatisfied" => {
                        let _ = Command::new("scancel").arg(&task.job).status();
                    }
                    "PENDING" | "RUNNING" | "CONFIGURING" | "COMPLETING" | "SUSPENDED" | "REQUEUED" | "RESIZING" => running = true,
                    "CANCELLED" if task.reason == "DependencyNeverSatisfied" => {}
                    _ => {
                        let cell = match (job.array, task.index) {
                            (true, Some(i)) => job.cells.get(i).cloned().unwrap_or_default(),
                            _ => job.cells.join(", "),
                        };
                        failed.push(format!("cell `{cell}` (job {}, {}, log {})", task.job, task.state, task.log));
                    }
                }
            }
        }
        if !running {
            if failed.is_empty() {
                status::info(format!("slurm: every cell is done; the tables are in {}", out.display()));
                return Ok(());
            }
            bail!(
                "{} cell(s) failed on Slurm: {}; the other cells' results are kept: fix the cause and run the same command again to submit only what is not done",
                failed.len(),
                failed.join("; ")
            );
        }
        std::thread::sleep(Duration::from_millis(1500));
    }
}

/// The tasks of job `id`, as `scontrol show job -o` lists them.
fn tasks(id: &str) -> Result<Vec<Task>> {
    let output = Command::new("scontrol").args(["show", "job", "-o", id]).output().context("cannot run scontrol")?;
    if !output.status.success() {
        bail!("scontrol show job {id} failed: {}", String::from_utf8_lossy(&output.stderr).trim());
    }
    let text = String::from_utf8_lossy(&output.stdout);
    Ok(text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let field = |key: &str| line.split_whitespace().find_map(|w| w.strip_prefix(key)).unwrap_or_default().to_string();
            let task = field("ArrayTaskId=");
            let job = match task.parse::<usize>() {
                Ok(_) => format!("{}_{task}", field("ArrayJobId=")),
                Err(_) => field("JobId="),
            };
            Task { job, index: task.parse().ok(), state: field("JobState="), reason: field("Reason="), log: field("StdOut=") }
        })
        .collect())
}

/// The config file the jobs read: the given file, or the embedded one written out.
fn config_path(loaded: &Loaded, dir: &Path) -> Result<PathBuf> {
    match &loaded.path {
        Some(path) => path.canonicalize().with_context(|| format!("cannot resolve {}", path.display())),
        None => {
            let path = dir.join("config.toml");
            crate::files::write_atomic(&path, loaded.text.as_bytes()).with_context(|| format!("cannot write {}", path.display()))?;
            Ok(path)
        }
    }
}

/// A shell word in single quotes.
fn quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// The batch script of one group of cells.
#[allow(clippy::too_many_arguments)]
fn job_script(name: &str, seeds: &[u64], group: &str, cells: &[String], array: bool, resources: &SlurmResources, exe: &Path, config: &Path, out: &Path, opts: &Options) -> String {
    let mut s = String::from("#!/bin/bash\n");
    s += &format!("#SBATCH --job-name={}\n", quote(&format!("kdh-{name}-{group}")));
    let log = if array { format!("{group}-%A_%a.log") } else { format!("{group}-%j.log") };
    s += &format!("#SBATCH --output={}\n", quote(&out.join("slurm").join(log).display().to_string()));
    for (flag, value) in [
        ("partition", resources.partition.clone()),
        ("time", resources.time.clone()),
        ("cpus-per-task", resources.cpus.map(|c| c.to_string())),
        ("mem", resources.mem.clone()),
        ("gres", resources.gres.clone()),
    ] {
        // An empty value (a stage's override of a top-level key) asks for nothing.
        if let Some(value) = value.filter(|v| !v.is_empty()) {
            s += &format!("#SBATCH --{flag}={}\n", quote(&value));
        }
    }
    for line in &resources.extra {
        s += line;
        s += "\n";
    }
    s += "set -euo pipefail\n";
    s += &format!("cells=({})\n", cells.iter().map(|c| quote(c)).collect::<Vec<_>>().join(" "));
    let index = if array { "${SLURM_ARRAY_TASK_ID}" } else { "0" };
    let mut command = vec![quote(&exe.display().to_string()), "eval".into(), quote(&config.display().to_string()), "--out".into(), quote(&out.display().to_string())];
    command.push(format!("--cell \"${{cells[{index}]}}\""));
    // The seeds as this submission has them (`--seeds` may have replaced the file's).
    if !seeds.is_empty() {
        command.push(format!("--seeds {}", seeds.iter().map(u64::to_string).collect::<Vec<_>>().join(",")));
    }
    for dir in &opts.plugin_dirs {
        let dir = dir.canonicalize().unwrap_or_else(|_| dir.clone());
        command.push(format!("--plugin-dir {}", quote(&dir.display().to_string())));
    }
    if let Some(lib) = &opts.runtime.ort_lib {
        command.push(format!("--ort-lib {}", quote(&lib.display().to_string())));
    }
    if opts.runtime.device == crate::runtime::Device::Cuda {
        command.push("--device cuda".into());
    }
    if let Some(threads) = opts.runtime.threads {
        command.push(format!("--threads {threads}"));
    }
    s += &format!("exec {}\n", command.join(" "));
    s
}
