//! `kdharness attack`: the practitioner's audit. Scores members and non-members with each
//! model through ONNX Runtime, runs the attack plugins, and writes `scores.csv`,
//! `summary.csv` and `manifest.json` (the library's attack stage does the work).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, bail};
use serde_json::json;

use super::{PluginArgs, RuntimeArgs};
use crate::attack::stage::{AttackRequest, BlockSweep};
use crate::score::Target;
use crate::data::{Template, TokenLimits};
use crate::metrics::Bootstrap;
use crate::report;
use crate::runtime::PaddingSide;
use crate::score::BatchSettings;

#[derive(clap::Args, Debug)]
pub struct AttackArgs {
    /// A target model, NAME=PATH.onnx (repeatable).
    #[arg(long = "model", value_name = "NAME=PATH", required = true)]
    models: Vec<String>,
    /// A reference model for the `ref` attack, NAME=PATH.onnx (repeatable).
    #[arg(long = "reference", value_name = "NAME=PATH")]
    references: Vec<String>,
    /// tokenizer.json of the target models.
    #[arg(long, value_name = "T.json")]
    tokenizer: PathBuf,
    /// tokenizer.json of the reference models (default: --tokenizer).
    #[arg(long, value_name = "T.json")]
    reference_tokenizer: Option<PathBuf>,
    /// Records (JSONL) whose token frequencies attacks that need them read (DC-PDD), e.g.
    /// public data of the target's domain that is not among the samples.
    #[arg(long, value_name = "FILE.jsonl")]
    frequency_corpus: Option<PathBuf>,
    /// Known non-members (JSONL, never among the samples) whose last records make the
    /// prefix of attacks that need one (ReCaLL).
    #[arg(long, value_name = "FILE.jsonl")]
    prefix_pool: Option<PathBuf>,
    /// Known non-members (JSONL, never among the samples) scored like the samples, for
    /// attacks that compare with a population (RMIA).
    #[arg(long, value_name = "FILE.jsonl")]
    population: Option<PathBuf>,
    /// Members (the teacher's private training records), Dolly-schema JSONL.
    #[arg(long, value_name = "F.jsonl")]
    members: PathBuf,
    /// Non-members, Dolly-schema JSONL.
    #[arg(long, value_name = "F.jsonl")]
    nonmembers: PathBuf,
    /// Attacks to run, comma-separated (default: every loaded attack this command can feed).
    #[arg(long, value_delimiter = ',', value_name = "A,B")]
    attacks: Vec<String>,
    /// An attack parameter, ATTACK.KEY=VALUE (repeatable), e.g. mink.k=0.1.
    #[arg(long = "param", value_name = "ATTACK.KEY=VALUE")]
    params: Vec<String>,
    /// Prompt template of the target models.
    #[arg(long, value_enum, default_value_t = Template::Alpaca)]
    template: Template,
    /// Prompt template of the reference models (default: --template).
    #[arg(long, value_enum)]
    reference_template: Option<Template>,
    /// Prompts longer than this keep their last tokens.
    #[arg(long, default_value_t = TokenLimits::default().max_prompt_tokens, value_parser = at_least_one)]
    max_prompt_tokens: usize,
    /// Responses longer than this are cut at the end.
    #[arg(long, default_value_t = TokenLimits::default().max_response_tokens, value_parser = at_least_one)]
    max_response_tokens: usize,
    /// Sequences per forward pass.
    #[arg(long, default_value_t = BatchSettings::default().batch_size, value_parser = at_least_one)]
    batch_size: usize,
    /// Padding side of batched sequences (scores do not depend on it; models without a
    /// position_ids input are always padded right).
    #[arg(long, value_enum, default_value_t = PaddingSide::Right)]
    padding: PaddingSide,
    /// Seed of the bootstrap.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Bootstrap resamples for confidence intervals (0 disables them).
    #[arg(long, default_value_t = Bootstrap::default().resamples)]
    bootstrap: usize,
    /// Seconds one attack plugin call may take before its worker process is stopped and
    /// the attack reported as timed out (the other attacks go on).
    #[arg(long, default_value_t = crate::config::DEFAULT_PLUGIN_TIMEOUT_S, value_parser = positive_seconds)]
    plugin_timeout: f64,
    /// Output directory.
    #[arg(long, default_value = "reports/attack")]
    out: PathBuf,
    /// Print the summary as JSON (one object per summary.csv row) instead of a table.
    #[arg(long)]
    json: bool,
    /// Also measure per-block risk: every attack that perturbs weights (e.g. mope), with
    /// only one transformer block perturbed at a time, AUC per block in blocks.csv.
    #[arg(long)]
    blocks: bool,
    /// Sweep only this model (repeatable; implies --blocks).
    #[arg(long = "blocks-of", value_name = "NAME")]
    blocks_of: Vec<String>,
    /// An attack parameter for the per-block sweep only, overriding --param there
    /// (`mope.n=1`: one perturbed pass per block; repeatable; implies --blocks).
    #[arg(long = "blocks-param", value_name = "ATTACK.KEY=VALUE")]
    blocks_params: Vec<String>,
    #[command(flatten)]
    plugins: PluginArgs,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

/// A count that must be positive.
pub(super) fn at_least_one(raw: &str) -> Result<usize, String> {
    match raw.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("expected a whole number of at least 1, got `{raw}`")),
    }
}

/// `NAME=PATH`, or a bare path named after its file stem.
pub(super) fn parse_model(spec: &str) -> Target {
    match spec.split_once('=') {
        Some((name, path)) => Target { name: name.to_string(), path: PathBuf::from(path) },
        None => {
            let path = PathBuf::from(spec);
            let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            Target { name, path }
        }
    }
}

pub fn run(args: AttackArgs) -> Result<ExitCode> {
    let mut registry = args.plugins.registry();
    registry.isolate_attacks(std::env::current_exe()?, std::time::Duration::from_secs_f64(args.plugin_timeout));
    let request = AttackRequest {
        models: args.models.iter().map(|m| parse_model(m)).collect(),
        references: args.references.iter().map(|m| parse_model(m)).collect(),
        tokenizer: args.tokenizer,
        reference_tokenizer: args.reference_tokenizer,
        members: args.members,
        nonmembers: args.nonmembers,
        attacks: args.attacks,
        params: crate::attack::parse_params(&args.params)?,
        template: args.template,
        reference_template: args.reference_template,
        limits: TokenLimits { max_prompt_tokens: args.max_prompt_tokens, max_response_tokens: args.max_response_tokens },
        batch: BatchSettings { batch_size: args.batch_size, padding: args.padding },
        seed: args.seed,
        bootstrap: args.bootstrap,
        blocks: match args.blocks || !args.blocks_of.is_empty() || !args.blocks_params.is_empty() {
            true => Some(BlockSweep { models: args.blocks_of, params: crate::attack::parse_params(&args.blocks_params)? }),
            false => None,
        },
        runtime: args.runtime.settings(),
        signals: args.out.join("signals"),
        frequency_corpus: args.frequency_corpus,
        prefix_pool: args.prefix_pool,
        population: args.population,
        out: args.out,
    };
    let outcome = crate::attack::stage::run(&request, &registry)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&outcome.summary.iter().map(summary_json).collect::<Vec<_>>())?);
    } else {
        print_summary(&outcome.summary);
    }
    if outcome.failures.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        bail!("{} run(s) failed; the other results were written", outcome.failures.len())
    }
}

fn summary_json(r: &report::SummaryRow) -> serde_json::Value {
    json!({
        "model": r.model, "role": r.role.role, "kd_method": r.role.kd_method, "student": r.role.student,
        "category": r.category, "attack": r.attack, "metric": r.metric, "value": r.value,
        "ci_low": r.ci.map(|c| c.0), "ci_high": r.ci.map(|c| c.1),
        "n_members": r.n_members, "n_nonmembers": r.n_nonmembers,
        "realized_fpr": r.operating_point.map(|o| o.0), "threshold": r.operating_point.map(|o| report::fmt_f64(o.1)),
    })
}

/// A short table on stdout: AUC with its interval and TPR at 1% FPR, overall.
fn print_summary(summary: &[report::SummaryRow]) {
    let overall: Vec<_> = summary.iter().filter(|r| r.category == "all").collect();
    println!("{:<16} {:<16} {:>7} {:>17} {:>12}", "model", "attack", "AUC", "95% CI", "TPR@1%FPR");
    for auc in overall.iter().filter(|r| r.metric == "auc") {
        let tpr = overall
            .iter()
            .find(|r| r.metric == "tpr_at_fpr_0.01" && r.model == auc.model && r.attack == auc.attack)
            .map(|r| r.value)
            .unwrap_or(f64::NAN);
        let ci = auc.ci.map(|(lo, hi)| format!("[{lo:.3}, {hi:.3}]")).unwrap_or_default();
        println!("{:<16} {:<16} {:>7.3} {:>17} {:>12.3}", auc.model, auc.attack, auc.value, ci, tpr);
    }
}

fn positive_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!("`{s}` is not a positive number of seconds")),
    }
}
