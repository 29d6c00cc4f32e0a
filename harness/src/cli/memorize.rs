//! `kdharness memorize`: greedy extraction of members' responses from ONNX models
//! (SPEC §9.1), plus the utility of the generations on non-members (SPEC §9.3). Writes
//! `memorization.csv`, `utility.csv`, `summary.csv` and `manifest.json`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};

use super::RuntimeArgs;
use super::attack::{at_least_one, parse_model};
use crate::data::{Template, TokenLimits, TokenizerFile};
use crate::memorize::stage::{ExposureRequest, MemorizeRequest};
use crate::memorize::{self, DEFAULT_K, MemorizeSettings};
use crate::metrics::Bootstrap;

#[derive(clap::Args, Debug)]
pub struct MemorizeArgs {
    /// A model, NAME=PATH.onnx (repeatable).
    #[arg(long = "model", value_name = "NAME=PATH", required = true)]
    models: Vec<String>,
    /// The model among --model that is the teacher: every other model gets teacher-overlap
    /// rows (its mean ratio on the members the teacher reproduces above r).
    #[arg(long, value_name = "NAME")]
    teacher: Option<String>,
    /// tokenizer.json of the models.
    #[arg(long, value_name = "T.json")]
    tokenizer: PathBuf,
    /// Members, Dolly-schema JSONL.
    #[arg(long, value_name = "F.jsonl")]
    members: PathBuf,
    /// Non-members (held-out prompts; also the utility set), Dolly-schema JSONL.
    #[arg(long, value_name = "F.jsonl")]
    nonmembers: PathBuf,
    /// Tokens compared per response (the paper's K).
    #[arg(long, default_value_t = DEFAULT_K, value_parser = at_least_one)]
    k: usize,
    /// Tokens generated per prompt (default: K).
    #[arg(long, value_name = "N")]
    max_new_tokens: Option<usize>,
    /// Forbid repeating any n-gram of this size (0: off; the paper used 6).
    #[arg(long, default_value_t = 0)]
    no_repeat_ngram: usize,
    /// End-of-sequence token (default: the tokenizer's <|endoftext|>, <|im_end|> or </s>;
    /// `none` never stops early).
    #[arg(long, value_name = "TOKEN")]
    eos: Option<String>,
    /// Prompt template.
    #[arg(long, value_enum, default_value_t = Template::Alpaca)]
    template: Template,
    /// Prompts longer than this keep their last tokens.
    #[arg(long, default_value_t = TokenLimits::default().max_prompt_tokens, value_parser = at_least_one)]
    max_prompt_tokens: usize,
    /// Prompts per batch.
    #[arg(long, default_value_t = 8, value_parser = at_least_one)]
    batch_size: usize,
    /// Seed of the bootstrap.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Bootstrap resamples for confidence intervals (0 disables them).
    #[arg(long, default_value_t = Bootstrap::default().resamples)]
    bootstrap: usize,
    /// Output directory.
    #[arg(long, default_value = "reports/memorize")]
    out: PathBuf,
    /// Canaries among the members (`sample_id,repetitions` CSV): measure each one's
    /// exposure (exposure.csv).
    #[arg(long, value_name = "F.csv")]
    canaries: Option<PathBuf>,
    /// The canaries' secret: a run of this many decimal digits in the response.
    #[arg(long, default_value_t = 8, value_parser = at_least_one)]
    exposure_digits: usize,
    /// Candidates of each secret's space scored (all of the space when it is smaller).
    #[arg(long, default_value_t = 200, value_parser = at_least_one)]
    exposure_candidates: usize,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

pub fn run(args: MemorizeArgs) -> Result<ExitCode> {
    let eos = match args.eos.as_deref() {
        None => memorize::guess_eos(&TokenizerFile::load(&args.tokenizer)?.tokenizer),
        Some("none") => None,
        Some(token) => Some(
            TokenizerFile::load(&args.tokenizer)?
                .tokenizer
                .token_to_id(token)
                .with_context(|| format!("--eos `{token}` is not a token of {}", args.tokenizer.display()))?,
        ),
    };
    let request = MemorizeRequest {
        models: args.models.iter().map(|m| parse_model(m)).collect(),
        teacher: args.teacher,
        tokenizer: args.tokenizer,
        members: args.members,
        nonmembers: args.nonmembers,
        template: args.template,
        max_prompt_tokens: args.max_prompt_tokens,
        settings: MemorizeSettings {
            k: args.k,
            max_new_tokens: args.max_new_tokens.unwrap_or(args.k),
            no_repeat_ngram: args.no_repeat_ngram,
            batch_size: args.batch_size,
            eos,
        },
        seed: args.seed,
        bootstrap: args.bootstrap,
        runtime: args.runtime.settings(),
        out: args.out,
        exposure: args.canaries.map(|canaries| ExposureRequest { canaries, digits: args.exposure_digits, candidates: args.exposure_candidates }),
    };
    let summary = memorize::stage::run(&request)?;
    println!("{:<16} {:>12} {:>14} {:>8} {:>9}", "model", "member rate", "non-member rate", "gap", "ROUGE-L");
    for target in &request.models {
        let get = |metric: &str| {
            summary.iter().find(|r| r.model == target.name && r.category == "all" && r.metric == metric).map_or(f64::NAN, |r| r.value)
        };
        println!("{:<16} {:>12.3} {:>14.3} {:>8.3} {:>9.1}", target.name, get("mem_rate_member"), get("mem_rate_nonmember"), get("mem_gap"), get("rouge_l"));
    }
    Ok(ExitCode::SUCCESS)
}
