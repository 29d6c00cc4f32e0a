//! `--executor slurm` on a real single-node Slurm (Debian's slurm-wlm, installed here when
//! absent: CI runs as root), started by the test without systemd (slurmctld and slurmd on
//! localhost, `auth/none`, state in a temporary directory) and stopped by PID at the end.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{Run, bin_dir, built_library, install};

/// A single-node Slurm of this test: its directory, config and daemon PIDs.
struct Cluster {
    dir: tempfile::TempDir,
    conf: PathBuf,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Cluster {
    fn start() -> Cluster {
        if Command::new("slurmctld").arg("-V").output().is_err() {
            let apt = |args: &[&str]| Command::new("apt-get").args(args).env("DEBIAN_FRONTEND", "noninteractive").status().is_ok_and(|s| s.success());
            let install = ["install", "-y", "-q", "--no-install-recommends", "slurm-wlm"];
            // Package lists may be missing or stale on a fresh machine: refresh and retry.
            let installed = apt(&install) || (apt(&["update", "-q"]) && apt(&install));
            assert!(installed, "Slurm is not installed and `apt-get install slurm-wlm` failed (it needs root)");
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for sub in ["state", "spool", "log"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        let node = String::from_utf8(Command::new("slurmd").arg("-C").output().unwrap().stdout).unwrap().lines().next().unwrap().to_string();
        let host = String::from_utf8(Command::new("hostname").output().unwrap().stdout).unwrap().trim().to_string();
        let conf = d.join("slurm.conf");
        let text = format!(
            "ClusterName=kdhtest\nSlurmctldHost={host}\nAuthType=auth/none\nCredType=cred/none\nProctrackType=proctrack/linuxproc\n\
             TaskPlugin=task/none\nSelectType=select/cons_tres\nSelectTypeParameters=CR_Core\nSlurmUser=root\nSlurmdUser=root\n\
             StateSaveLocation={0}/state\nSlurmdSpoolDir={0}/spool\nSlurmctldPidFile={0}/slurmctld.pid\nSlurmdPidFile={0}/slurmd.pid\n\
             SlurmctldLogFile={0}/log/slurmctld.log\nSlurmdLogFile={0}/log/slurmd.log\nSlurmctldPort={1}\nSlurmdPort={2}\n\
             MpiDefault=none\nReturnToService=2\nMinJobAge=600\n{node} State=UNKNOWN\n\
             PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP\n",
            d.display(),
            free_port(),
            free_port()
        );
        std::fs::write(&conf, text).unwrap();
        let cluster = Cluster { dir, conf };
        assert!(cluster.command("slurmctld").arg("-i").status().unwrap().success(), "slurmctld did not start");
        assert!(cluster.command("slurmd").status().unwrap().success(), "slurmd did not start");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let state = cluster.command("sinfo").args(["-h", "-o", "%t"]).output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default();
            if state == "idle" {
                break;
            }
            assert!(Instant::now() < deadline, "the Slurm node did not come up (state `{state}`)");
            std::thread::sleep(Duration::from_millis(300));
        }
        cluster
    }

    /// A command that talks to this cluster.
    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new(program);
        command.env("SLURM_CONF", &self.conf);
        command
    }

    fn pids(&self) -> Vec<i32> {
        ["slurmctld.pid", "slurmd.pid"].iter().filter_map(|f| std::fs::read_to_string(self.dir.path().join(f)).ok()?.trim().parse().ok()).collect()
    }
}

impl Drop for Cluster {
    /// Stops the daemons this test started, by PID, and waits until they are gone.
    fn drop(&mut self) {
        let pids = self.pids();
        for &pid in &pids {
            // SAFETY: signalling the daemons this test started.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while pids.iter().any(|p| Path::new(&format!("/proc/{p}")).exists()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        for &pid in &pids {
            if Path::new(&format!("/proc/{pid}")).exists() {
                // SAFETY: as above, for a daemon that ignored SIGTERM.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

const TABLES: [&str; 7] = ["scores.csv", "summary.csv", "memorization.csv", "utility.csv", "blocks.csv", "comparisons.csv", "canaries.csv"];

fn eval(cluster: &Cluster, config: &Path, out: &Path, extra: &[&str], env: &[(&str, &str)]) -> Run {
    let mut command = cluster.command(bin_dir().join("kdharness"));
    command.args(["eval", &config.display().to_string(), "--out", &out.display().to_string()]).args(extra).env_remove("KDHARNESS_PLUGIN_PATH");
    for (k, v) in env {
        command.env(k, v);
    }
    let output = command.output().unwrap();
    Run { code: output.status.code(), stdout: String::from_utf8_lossy(&output.stdout).into(), stderr: String::from_utf8_lossy(&output.stderr).into() }
}

#[cfg(unix)]
#[test]
fn a_study_on_slurm_equals_the_local_run_and_a_failed_cell_is_resubmitted_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let smoke = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/smoke.toml");
    let cluster = Cluster::start();
    let daemons = cluster.pids();
    assert_eq!(daemons.len(), 2);

    let local = tmp.path().join("local");
    eval(&cluster, &smoke, &local, &["-q"], &[]).ok();
    let on_slurm = tmp.path().join("slurm");
    let run = eval(&cluster, &smoke, &on_slurm, &["--executor", "slurm"], &[]);
    run.ok();
    assert!(run.stderr.contains("slurm: students job "), "{}", run.stderr);
    for f in TABLES {
        assert!(std::fs::read(on_slurm.join(f)).unwrap() == std::fs::read(local.join(f)).unwrap(), "{f} differs from the local run's");
    }

    // A study of two seeds: the teachers, scorings and reports as arrays over the seeds,
    // then the summary; seed 1's run is the one-seed run's (smoke.toml has seed = 1).
    let seeds = tmp.path().join("seeds");
    let run = eval(&cluster, &smoke, &seeds, &["--executor", "slurm", "--seeds", "1,2"], &[]);
    run.ok();
    assert!(run.stderr.contains("slurm: seeds job ") && run.stderr.contains("(seed-1/teacher, seed-2/teacher)"), "{}", run.stderr);
    for f in TABLES {
        assert!(std::fs::read(seeds.join("seed-1").join(f)).unwrap() == std::fs::read(local.join(f)).unwrap(), "seed-1/{f} differs from the local run's");
    }
    assert!(seeds.join("seeds.csv").is_file() && seeds.join("figures/fig10_seed_spread.png").is_file());

    // A cell that fails: its job id and log are named, the others' results stay, and the
    // fixed resubmission runs only it and what depends on it.
    let plugins = tmp.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    install(&built_library("kdhtest_panicky"), &plugins, "panicky");
    let config = tmp.path().join("failing.toml");
    let text = std::fs::read_to_string(&smoke).unwrap().replace(r#"methods = ["kd", "seqkd", "gkd", "imitkd", "minillm", "distillm"]"#, r#"methods = ["kd", "test_kd_env_fails"]"#);
    std::fs::write(&config, text).unwrap();
    let out = tmp.path().join("failing");
    let plugin_dir = plugins.display().to_string();
    let failed = eval(&cluster, &config, &out, &["--executor", "slurm", "--plugin-dir", &plugin_dir], &[("KDHTEST_KD_FAIL", "1")]);
    let line = failed.error_line();
    assert!(line.contains("1 cell(s) failed on Slurm: cell `test_kd_env_fails-tiny` (job "), "{line}");
    let log = line.split("log ").nth(1).and_then(|l| l.split(')').next()).unwrap();
    let log_text = std::fs::read_to_string(log).unwrap_or_else(|e| panic!("{log}: {e}"));
    assert!(log_text.contains("deliberate failure while KDHTEST_KD_FAIL is set"), "{log_text}");
    for done in ["data", "models/teacher", "models/kd-tiny", "models/nokd-tiny"] {
        assert!(out.join(done).join(".done").is_file(), "{done} was lost");
    }
    let fixed = eval(&cluster, &config, &out, &["--executor", "slurm", "--plugin-dir", &plugin_dir], &[]);
    fixed.ok();
    // The other models' scoring did not wait for the failed student: only its own and the
    // report are left.
    assert!(fixed.stderr.contains("slurm: submitting 3 cell(s): test_kd_env_fails-tiny, score-test_kd_env_fails-tiny, report"), "{}", fixed.stderr);
    assert!(out.join("scores.csv").is_file());

    drop(cluster);
    for pid in daemons {
        assert!(!Path::new(&format!("/proc/{pid}")).exists(), "daemon {pid} is still running");
    }
}
