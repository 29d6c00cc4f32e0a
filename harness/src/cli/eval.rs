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
    /// Run the study once per seed (comma-separated), in OUT/seed-S/, with the summary
    /// across seeds in OUT/ (overrides the config's `seeds`).
    #[arg(long, value_delimiter = ',', value_name = "SEED,...")]
    seeds: Vec<u64>,
    /// Print the plan's cells (one per line: ID and the cells it needs) and exit.
    #[arg(long)]
    plan: bool,
    /// With --plan: print it as JSON (a list of {"id", "needs"}).
    #[arg(long, requires = "plan")]
    json: bool,
    /// Run one cell of the plan (and any cell it needs that is not done yet); several
    /// `--cell` runs may share a run directory, each cell run by one of them at a time.
    #[arg(long, value_name = "ID", conflicts_with_all = ["plan", "only"])]
    cell: Option<String>,
    /// Where the cells run: in this process (`local`) or as Slurm jobs (`slurm`: sbatch,
    /// resources from the config's [slurm]).
    #[arg(long, value_enum, default_value_t = Executor::Local, conflicts_with_all = ["cell", "plan", "only"])]
    executor: Executor,
    /// With --executor slurm: print the job ids and return instead of waiting.
    #[arg(long)]
    no_wait: bool,
    #[command(flatten)]
    runtime: RuntimeArgs,
    #[command(flatten)]
    plugins: PluginArgs,
}

/// Where `eval` runs its cells.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Executor {
    Local,
    Slurm,
}

pub fn run(args: EvalArgs) -> Result<ExitCode> {
    let mut loaded = crate::config::load(args.config.as_deref())?;
    if !args.seeds.is_empty() {
        if let Some(twice) = crate::config::repeated_seed(&args.seeds) {
            anyhow::bail!("--seeds lists {twice} twice; each seed is one run of the study");
        }
        loaded.config.seeds = args.seeds;
    }
    if args.plan {
        let plan = crate::eval::plan::plan(&loaded.config);
        if args.json {
            println!("{}", serde_json::to_string_pretty(&plan)?);
        } else {
            for cell in &plan {
                println!("{}\t{}", cell.id, cell.needs.join(","));
            }
        }
        return Ok(ExitCode::SUCCESS);
    }
    let out = args.out.unwrap_or_else(|| PathBuf::from("reports").join(&loaded.config.name));
    let opts = Options {
        out: out.clone(),
        fresh: args.fresh,
        only: args.only,
        plugin_dirs: args.plugins.plugin_dirs,
        runtime: args.runtime.settings(),
        attack_worker: Some(std::env::current_exe()?),
        cell: args.cell,
    };
    info(format!("eval `{}` into {}", loaded.config.name, out.display()));
    if args.executor == Executor::Slurm {
        crate::eval::slurm::submit(&loaded, &opts, &std::env::current_exe()?, args.no_wait)?;
        return Ok(ExitCode::SUCCESS);
    }
    run_pipeline(&loaded, &opts)?;
    Ok(ExitCode::SUCCESS)
}
