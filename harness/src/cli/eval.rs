//! `kdharness eval [CONFIG]`: the whole experiment (SPEC §3), resumable.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use super::{PluginArgs, info};
use crate::eval::{Options, run as run_pipeline};

#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    /// The experiment config (default: the embedded configs/quickstart.toml).
    config: Option<PathBuf>,
    /// Run directory (default: reports/NAME).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Redo every stage, ignoring completed ones.
    #[arg(long)]
    fresh: bool,
    /// Run only these stages, comma-separated (data, teacher, distill, export, attack,
    /// memorize, blocks, report); the others must be complete.
    #[arg(long, value_delimiter = ',', value_name = "STAGE,...")]
    only: Vec<String>,
    /// Execution device of ONNX Runtime.
    #[arg(long, value_enum, default_value_t = crate::runtime::Device::Cpu)]
    device: crate::runtime::Device,
    /// Threads (default: all cores).
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// ONNX Runtime shared library to use (ORT_DYLIB_PATH takes precedence).
    #[arg(long, value_name = "PATH")]
    ort_lib: Option<PathBuf>,
    #[command(flatten)]
    plugins: PluginArgs,
}

pub fn run(args: EvalArgs) -> Result<ExitCode> {
    let loaded = crate::config::load(args.config.as_deref())?;
    let out = args.out.unwrap_or_else(|| PathBuf::from("reports").join(&loaded.config.name));
    let mut runtime_args = vec!["--device".to_string(), format!("{:?}", args.device).to_lowercase()];
    if let Some(threads) = args.threads {
        runtime_args.extend(["--threads".into(), threads.to_string()]);
        rayon::ThreadPoolBuilder::new().num_threads(threads).build_global().ok();
    }
    if let Some(lib) = &args.ort_lib {
        runtime_args.extend(["--ort-lib".into(), lib.display().to_string()]);
    }
    let opts = Options { out: out.clone(), fresh: args.fresh, only: args.only, plugin_dirs: args.plugins.plugin_dirs, runtime_args };
    info(format!("eval `{}` into {}", loaded.config.name, out.display()));
    run_pipeline(&loaded, &opts)?;
    Ok(ExitCode::SUCCESS)
}
