//! The `kdharness` command line. Each subcommand lives in its own file; this one parses
//! arguments, sets verbosity, and turns errors into one line and an exit code.

mod attack;
mod data;
mod doctor;
mod eval;
mod memorize;
mod metrics;
mod model;
mod plugins;
mod report;
mod terminal;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::status::{info, warn};

#[derive(Parser, Debug)]
#[command(name = "kdharness", version, about = "Membership and memorization leakage of LLM knowledge distillation")]
/// The command line.
pub struct Cli {
    /// Print only errors.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    /// Print more detail.
    #[arg(short, long, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run an experiment end to end (default: the embedded quickstart): data, teacher,
    /// students, export, attacks, memorization, per-block risk, report.
    Eval(Box<eval::EvalArgs>),
    /// Run membership-inference attacks on ONNX models and write scores.csv + summary.csv.
    Attack(Box<attack::AttackArgs>),
    /// Prepare datasets.
    #[command(subcommand)]
    Data(data::DataCommand),
    /// Greedy extraction of members' responses (memorization.csv) and utility (ROUGE-L).
    Memorize(Box<memorize::MemorizeArgs>),
    /// Recompute summary.csv from a scores.csv.
    Metrics(metrics::MetricsArgs),
    /// Fetch pretrained models; export checkpoints to ONNX.
    #[command(subcommand)]
    Model(model::ModelCommand),
    /// List or scaffold plugins.
    #[command(subcommand)]
    Plugins(plugins::PluginsCommand),
    /// Rebuild summary.csv, comparisons.csv, figures and report.html of a run directory
    /// from its per-sample results (no model is run).
    Report(report::ReportArgs),
    /// Show the ONNX Runtime library, its execution providers, and the plugin search path.
    Doctor(doctor::DoctorArgs),
    /// Runs attack plugin calls sent on stdin (started by `eval` and `attack`).
    #[command(hide = true)]
    AttackWorker,
}

/// Options every command that loads plugins shares.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct PluginArgs {
    /// Extra directory to load plugins from (searched first; repeatable).
    #[arg(long = "plugin-dir", value_name = "DIR")]
    pub plugin_dirs: Vec<PathBuf>,
}

/// Options of commands that run ONNX Runtime.
#[derive(clap::Args, Debug, Clone)]
pub struct RuntimeArgs {
    /// ONNX Runtime shared library to use (ORT_DYLIB_PATH takes precedence).
    #[arg(long, value_name = "PATH")]
    pub ort_lib: Option<PathBuf>,
    /// Execution device.
    #[arg(long, value_enum, default_value_t = crate::runtime::Device::Cpu)]
    pub device: crate::runtime::Device,
    /// ONNX Runtime intra-op threads (default: all cores).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
}

impl PluginArgs {
    /// The plugins found on the search path (problems with some libraries are warnings).
    pub fn registry(&self) -> crate::plugins::Registry {
        crate::plugins::load(&self.plugin_dirs)
    }
}

impl RuntimeArgs {
    /// The library's runtime settings. `--threads` also bounds rayon's global pool (the
    /// signal reduction and the training engine's elementwise work) and, through
    /// `RAYON_NUM_THREADS`, the pools of the plugins (each plugin library links its own
    /// rayon: the KD objectives run on it).
    pub fn settings(&self) -> crate::runtime::RuntimeSettings {
        if let Some(threads) = self.threads {
            // SAFETY: called while a command sets up, before this process starts any
            // other thread (rayon's pool is built next; ONNX Runtime is not loaded yet).
            unsafe { std::env::set_var("RAYON_NUM_THREADS", threads.to_string()) };
            rayon::ThreadPoolBuilder::new().num_threads(threads).build_global().ok();
        }
        crate::runtime::RuntimeSettings { ort_lib: self.ort_lib.clone(), device: self.device, threads: self.threads }
    }
}

/// Process-level behaviour of a well-mannered command-line tool.
fn install_process_handlers() {
    // `kdharness plugins list | head` must end quietly, as other Unix tools do, instead of
    // panicking on a closed stdout.
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // Ctrl-C finishes the file being written, keeps what is done and exits 130.
    crate::stop::stop_cleanly_on_interrupt();
    // A bug is still reported in one line (a backtrace on request with RUST_BACKTRACE=1).
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0") {
            default(info);
        } else {
            let location = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
            let message = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_default();
            eprintln!("error: internal error{location}: {message} (please report this)");
        }
    }));
}

/// Runs `kdharness` with the process's arguments.
pub fn main() -> ExitCode {
    install_process_handlers();
    let cli = Cli::parse();
    let verbosity = if cli.quiet {
        0
    } else if cli.verbose {
        2
    } else {
        1
    };
    crate::status::install(Arc::new(terminal::Terminal { verbosity }));
    let result = dispatch(cli.command);
    match result {
        Ok(code) => code,
        Err(error) => {
            // One line: the outermost context first, then its causes.
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Eval(args) => eval::run(*args),
        Command::Attack(args) => attack::run(*args),
        Command::Data(command) => data::run(command),
        Command::Memorize(args) => memorize::run(*args),
        Command::Metrics(args) => metrics::run(args),
        Command::Model(command) => model::run(command),
        Command::Plugins(command) => plugins::run(command),
        Command::Report(args) => report::run(args),
        Command::Doctor(args) => doctor::run(args),
        Command::AttackWorker => {
            crate::attack::isolate::serve()?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
