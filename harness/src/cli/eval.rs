//! `kdharness eval [CONFIG]`: the whole experiment (SPEC §3), resumable.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use super::{PluginArgs, RuntimeArgs, info};
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
    #[command(flatten)]
    runtime: RuntimeArgs,
    #[command(flatten)]
    plugins: PluginArgs,
}

pub fn run(args: EvalArgs) -> Result<ExitCode> {
    let loaded = crate::config::load(args.config.as_deref())?;
    let out = args.out.unwrap_or_else(|| PathBuf::from("reports").join(&loaded.config.name));
    let opts = Options {
        out: out.clone(),
        fresh: args.fresh,
        only: args.only,
        plugin_dirs: args.plugins.plugin_dirs,
        runtime: args.runtime.settings(),
        attack_worker: Some(std::env::current_exe()?),
    };
    info(format!("eval `{}` into {}", loaded.config.name, out.display()));
    run_pipeline(&loaded, &opts)?;
    Ok(ExitCode::SUCCESS)
}
