//! Attack plugins run in a worker process (`kdharness attack-worker`), so that one that
//! never returns or that aborts (which no `catch_unwind` can stop) costs only its own
//! results: after `timeout` the worker is killed and the attack reported as timed out; a
//! worker that dies is reported as crashed; the next attack gets a fresh worker. The
//! worker loads the same library and runs the same [`super::run`], so scores are the
//! same bit for bit as in-process ones.
//!
//! Jobs and answers travel over the worker's stdin and stdout as frames: a little-endian
//! `u64` length, then bincode.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use kdharness_plugin_api::OwnedSample;
use serde::{Deserialize, Serialize};

use super::AttackError;
use crate::plugins::{LoadedAttack, Params};

/// How attacks are run out of process: the worker executable and how long one attack
/// call may take.
#[derive(Debug)]
pub struct Isolation {
    /// The `kdharness` executable that serves `attack-worker`.
    pub worker: PathBuf,
    /// The longest one attack call may run.
    pub timeout: Duration,
    running: Mutex<Option<Worker>>,
}

/// One job: which attack of which library, on what.
#[derive(Serialize)]
struct JobRef<'a> {
    library: &'a std::path::Path,
    attack: &'a str,
    params: &'a [(String, String)],
    samples: &'a [OwnedSample],
    reference: &'a [OwnedSample],
    calibration: &'a [OwnedSample],
}

#[derive(Deserialize)]
struct Job {
    library: PathBuf,
    attack: String,
    params: Vec<(String, String)>,
    samples: Vec<OwnedSample>,
    reference: Vec<OwnedSample>,
    calibration: Vec<OwnedSample>,
}

/// A live worker and the frames it answers with.
#[derive(Debug)]
struct Worker {
    child: Child,
    stdin: ChildStdin,
    answers: Receiver<std::io::Result<Vec<u8>>>,
}

impl Isolation {
    /// Attacks run by `worker` (the `kdharness` executable), each call at most `timeout`.
    pub fn new(worker: PathBuf, timeout: Duration) -> Isolation {
        Isolation { worker, timeout, running: Mutex::new(None) }
    }

    /// Runs `attack` on `samples` in the worker; the answer of [`super::run`].
    pub(super) fn run(&self, attack: &LoadedAttack, samples: &[OwnedSample], reference: &[OwnedSample], calibration: &[OwnedSample], params: &Params) -> Result<Vec<f64>, AttackError> {
        let library = attack.library.clone();
        let name = attack.name().to_string();
        let fail = |message: String| AttackError::Failed { attack: name.clone(), library: library.clone(), message };
        let job = JobRef { library: &attack.library, attack: attack.name(), params: params.pairs(), samples, reference, calibration };
        let payload = bincode::serialize(&job).map_err(|e| fail(format!("cannot encode its inputs: {e}")))?;
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        if running.is_none() {
            *running = Some(self.spawn().map_err(|e| fail(format!("cannot start a worker process ({}): {e}", self.worker.display())))?);
        }
        let worker = running.as_mut().expect("just started");
        let sent = write_frame(&mut worker.stdin, &payload);
        let answer = match sent {
            Ok(()) => worker.answers.recv_timeout(self.timeout),
            Err(_) => Err(RecvTimeoutError::Disconnected),
        };
        match answer {
            Ok(Ok(frame)) => bincode::deserialize::<Result<Vec<f64>, String>>(&frame)
                .map_err(|e| fail(format!("its worker answered garbage: {e}")))?
                .map_err(AttackError::Worker),
            Err(RecvTimeoutError::Timeout) => {
                let mut worker = running.take().expect("running");
                let _ = worker.child.kill();
                let _ = worker.child.wait();
                Err(AttackError::TimedOut { attack: name, library, seconds: self.timeout.as_secs_f64() })
            }
            Ok(Err(_)) | Err(RecvTimeoutError::Disconnected) => {
                let mut worker = running.take().expect("running");
                let status = worker.child.wait().map(|s| describe(&s)).unwrap_or_else(|e| e.to_string());
                Err(AttackError::Crashed { attack: name, library, status })
            }
        }
    }

    fn spawn(&self) -> std::io::Result<Worker> {
        let mut child = Command::new(&self.worker).arg("attack-worker").stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn()?;
        let stdin = child.stdin.take().expect("piped");
        let mut stdout = child.stdout.take().expect("piped");
        let (tx, answers) = std::sync::mpsc::channel();
        std::thread::Builder::new().name("kdharness-attack-worker".into()).spawn(move || {
            loop {
                let frame = read_frame(&mut stdout);
                let end = frame.is_err();
                if tx.send(frame).is_err() || end {
                    break;
                }
            }
        })?;
        Ok(Worker { child, stdin, answers })
    }
}

impl Drop for Isolation {
    fn drop(&mut self) {
        if let Some(mut worker) = self.running.get_mut().unwrap_or_else(PoisonError::into_inner).take() {
            drop(worker.stdin); // EOF: the worker ends by itself
            let _ = worker.child.wait();
        }
    }
}

/// How a worker ended, in words (`signal 6 (SIGABRT)`).
fn describe(status: &std::process::ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            let name = match signal {
                libc::SIGABRT => " (SIGABRT)",
                libc::SIGSEGV => " (SIGSEGV)",
                libc::SIGKILL => " (SIGKILL)",
                libc::SIGBUS => " (SIGBUS)",
                libc::SIGILL => " (SIGILL)",
                libc::SIGFPE => " (SIGFPE)",
                _ => "",
            };
            return format!("its process ended on signal {signal}{name}");
        }
    }
    format!("its process ended with {status}")
}

fn write_frame(to: &mut impl Write, payload: &[u8]) -> std::io::Result<()> {
    to.write_all(&(payload.len() as u64).to_le_bytes())?;
    to.write_all(payload)?;
    to.flush()
}

fn read_frame(from: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 8];
    from.read_exact(&mut len)?;
    let mut payload = vec![0u8; u64::from_le_bytes(len) as usize];
    from.read_exact(&mut payload)?;
    Ok(payload)
}

/// The worker: answers jobs from stdin on stdout until stdin ends. Libraries are loaded
/// once each.
pub fn serve() -> std::io::Result<()> {
    let mut registries: std::collections::HashMap<PathBuf, crate::plugins::Registry> = Default::default();
    let mut stdin = std::io::stdin().lock();
    let mut stdout = answers_channel()?;
    loop {
        let frame = match read_frame(&mut stdin) {
            Ok(frame) => frame,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        };
        let answer: Result<Vec<f64>, String> = (|| {
            let job: Job = bincode::deserialize(&frame).map_err(|e| format!("attack worker: a job it cannot read: {e}"))?;
            let registry = registries.entry(job.library.clone()).or_insert_with(|| crate::plugins::Registry::of_library(&job.library));
            let attack = registry.attack(&job.attack).ok_or_else(|| format!("attack `{}` is not in {}", job.attack, job.library.display()))?;
            let params = attack.params(&job.params).map_err(|e| e.to_string())?;
            super::run_here(attack, &job.samples, &job.reference, &job.calibration, &params).map_err(|e| e.to_string())
        })();
        write_frame(&mut stdout, &bincode::serialize(&answer).expect("answers encode"))?;
    }
}

/// Where the worker writes its answers: the stdout it was given, kept aside, while fd 1
/// itself goes to stderr, so that a plugin that prints cannot corrupt a frame.
#[cfg(unix)]
fn answers_channel() -> std::io::Result<std::fs::File> {
    use std::os::fd::FromRawFd;
    // SAFETY: duplicating the process's own standard descriptors; the copy is owned by the File.
    unsafe {
        let answers = libc::dup(1);
        if answers < 0 || libc::dup2(2, 1) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(std::fs::File::from_raw_fd(answers))
    }
}

#[cfg(not(unix))]
fn answers_channel() -> std::io::Result<std::io::Stdout> {
    Ok(std::io::stdout())
}
