//! `kdharness memorize`: greedy extraction of members' responses from ONNX models
//! (SPEC §9.1), plus the utility of the generations on non-members (SPEC §9.3). Writes
//! `memorization.csv`, `utility.csv`, `summary.csv` and `manifest.json`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde_json::json;

use super::attack::{at_least_one, parse_model};
use super::{RuntimeArgs, info, progress_bar};
use crate::data::{Encoded, MembershipSets, Record, Template, TokenLimits, TokenizerFile, encode};
use crate::memorize::{self, DEFAULT_K, MemorizationRow, MemorizeSettings};
use crate::metrics::Bootstrap;
use crate::report::{self, ModelEntry, ModelRole, ReportData, Role, UtilityRow};
use crate::runtime::{CausalLm, Runtime, SessionOptions, default_threads};

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
    #[command(flatten)]
    runtime: RuntimeArgs,
}

pub fn run(args: MemorizeArgs) -> Result<ExitCode> {
    let started = Instant::now();
    let models: Vec<(String, PathBuf)> = args.models.iter().map(|m| parse_model(m)).collect::<Result<_>>()?;
    if let Some(teacher) = &args.teacher
        && !models.iter().any(|(n, _)| n == teacher)
    {
        bail!("--teacher `{teacher}` is not among the --model names ({})", models.iter().map(|m| m.0.as_str()).collect::<Vec<_>>().join(", "));
    }
    let sets = MembershipSets::load(&args.members, &args.nonmembers)?;
    let tokenizer = TokenizerFile::load(&args.tokenizer)?;
    let eos = match args.eos.as_deref() {
        None => memorize::guess_eos(&tokenizer.tokenizer),
        Some("none") => None,
        Some(token) => Some(tokenizer.tokenizer.token_to_id(token).with_context(|| format!("--eos `{token}` is not a token of {}", args.tokenizer.display()))?),
    };
    let limits = TokenLimits { max_prompt_tokens: args.max_prompt_tokens, max_response_tokens: TokenLimits::default().max_response_tokens };
    let encoded: Vec<(&Record, bool, Encoded)> = sets
        .labelled()
        .map(|(r, member)| Ok((r, member, encode(&tokenizer.tokenizer, args.template, limits, r)?)))
        .collect::<Result<_>>()?;
    let settings = MemorizeSettings {
        k: args.k,
        max_new_tokens: args.max_new_tokens.unwrap_or(args.k),
        no_repeat_ngram: args.no_repeat_ngram,
        batch_size: args.batch_size,
        eos,
    };
    let threads = args.runtime.threads.unwrap_or_else(default_threads);
    let runtime = Runtime::get(args.runtime.ort_lib.as_deref())?;
    let bootstrap = Bootstrap { resamples: args.bootstrap, seed: args.seed };

    let mut all_rows: Vec<MemorizationRow> = Vec::new();
    let mut model_info = Vec::new();
    let mut all_utility: Vec<UtilityRow> = Vec::new();
    let mut entries = Vec::new();
    for (name, path) in &models {
        let t0 = Instant::now();
        let mut lm = CausalLm::open(runtime, path, SessionOptions { device: args.runtime.device, threads })?;
        let bar = progress_bar(encoded.len(), &format!("generating ({name})"), "prompts");
        let (rows, generations) = memorize::memorize_model(name, &mut lm, &encoded, &settings, |n| bar.inc(n as u64))?;
        bar.finish_and_clear();
        let role = role_of(name, args.teacher.as_deref());
        all_utility.extend(utility_of(name, &tokenizer, &encoded, &generations, eos)?);
        model_info.push(json!({ "name": name, "path": path, "sha256": crate::util::sha256_file(path)?, "role": role, "seconds": t0.elapsed().as_secs_f64() }));
        entries.push(ModelEntry { name: name.clone(), role });
        all_rows.extend(rows);
    }
    // The report computes the aggregates (rates by category, teacher overlap, utility).
    let data = ReportData { models: entries, memorization: all_rows, utility: all_utility, k: args.k, ..Default::default() };
    let summary = report::render::summary_rows(&data, bootstrap);
    let (all_rows, all_utility) = (data.memorization, data.utility);

    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    report::write_memorization(&args.out.join("memorization.csv"), &all_rows)?;
    report::write_utility(&args.out.join("utility.csv"), &all_utility)?;
    report::write_summary(&args.out.join("summary.csv"), &summary)?;
    let manifest = json!({
        "kdharness_version": env!("CARGO_PKG_VERSION"),
        "git_revision": env!("KDHARNESS_GIT_REVISION"),
        "command": std::env::args_os().map(|a| a.to_string_lossy().into_owned()).collect::<Vec<_>>(),
        "seed": args.seed,
        "bootstrap": bootstrap,
        "template": args.template,
        "memorization": settings,
        "onnx_runtime": { "library": runtime.library, "device": args.runtime.device, "threads": threads },
        "data": {
            "members": { "path": args.members, "sha256": crate::util::sha256_file(&args.members)?, "count": sets.members.len() },
            "nonmembers": { "path": args.nonmembers, "sha256": crate::util::sha256_file(&args.nonmembers)?, "count": sets.nonmembers.len() },
        },
        "tokenizer": { "path": tokenizer.path, "sha256": tokenizer.sha256 },
        "models": model_info,
        "seconds": started.elapsed().as_secs_f64(),
    });
    crate::util::write_atomic(&args.out.join("manifest.json"), serde_json::to_string_pretty(&manifest)?.as_bytes())
        .with_context(|| format!("cannot write {}", args.out.join("manifest.json").display()))?;

    println!("{:<16} {:>12} {:>14} {:>8} {:>9}", "model", "member rate", "non-member rate", "gap", "ROUGE-L");
    for (name, _) in &models {
        let get = |metric: &str| summary.iter().find(|r| &r.model == name && r.category == "all" && r.metric == metric).map_or(f64::NAN, |r| r.value);
        println!("{:<16} {:>12.3} {:>14.3} {:>8.3} {:>9.1}", name, get("mem_rate_member"), get("mem_rate_nonmember"), get("mem_gap"), get("rouge_l"));
    }
    info(format!("wrote {} and {}", args.out.join("memorization.csv").display(), args.out.join("summary.csv").display()));
    Ok(ExitCode::SUCCESS)
}

fn role_of(name: &str, teacher: Option<&str>) -> ModelRole {
    let role = match teacher {
        Some(t) if t == name => Role::Teacher,
        _ => Role::Target,
    };
    ModelRole::from(role)
}

/// ROUGE-L F ×100 of each non-member's generation (cut at the end-of-sequence token,
/// special tokens dropped) against its reference response.
fn utility_of(
    model: &str,
    tokenizer: &TokenizerFile,
    encoded: &[(&Record, bool, Encoded)],
    generations: &[Vec<u32>],
    eos: Option<u32>,
) -> Result<Vec<UtilityRow>> {
    let mut scores = Vec::new();
    for ((record, member, _), generated) in encoded.iter().zip(generations) {
        if *member {
            continue;
        }
        let end = generated.iter().position(|&t| Some(t) == eos).unwrap_or(generated.len());
        let text = tokenizer.tokenizer.decode(&generated[..end], true).map_err(|e| anyhow::anyhow!("cannot decode a generation: {e}"))?;
        scores.push(UtilityRow { model: model.into(), sample_id: record.id.clone(), rouge_l: crate::utility::rouge_l(&text, &record.response) });
    }
    Ok(scores)
}
