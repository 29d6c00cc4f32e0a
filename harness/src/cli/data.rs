//! `kdharness data split`: one dataset into members / public / non-members.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};

use super::info;
use crate::data::{SplitMode, check_unique_ids, load_jsonl, split, write_canaries, write_jsonl};
use crate::files::{sha256_file, write_atomic};

#[derive(clap::Subcommand, Debug)]
pub enum DataCommand {
    /// Generate the synthetic dataset (SPEC §4): fictional private records over seven
    /// categories, plus canaries (listed in F.canaries.csv with how often an eval repeats
    /// each among the members).
    Synth {
        /// Output JSONL file.
        #[arg(long, value_name = "F.jsonl")]
        out: PathBuf,
        /// Ordinary records.
        #[arg(long, default_value_t = 600)]
        n: usize,
        /// Canaries per repetition count (1, 2, 4, 8).
        #[arg(long, default_value_t = 2)]
        canaries: usize,
        /// Seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Free-text phrasings (natural) or the earlier fixed templates.
        #[arg(long, value_enum, default_value = "natural")]
        phrasing: crate::data::synth::Phrasing,
    },
    /// Split a Dolly-schema JSONL file (ids r{i}) into members.jsonl (the teacher's private
    /// set), public.jsonl (the students' KD data) and nonmembers.jsonl, plus split.json.
    Split {
        /// The dataset.
        #[arg(long, value_name = "F.jsonl")]
        input: PathBuf,
        /// How many records are held out as non-members.
        #[arg(long, value_name = "N")]
        nonmember_count: usize,
        #[arg(long, value_enum, default_value_t = SplitMode::Paper)]
        mode: SplitMode,
        /// Seed of the `random` mode.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
    },
}

pub fn run(command: DataCommand) -> Result<ExitCode> {
    let (input, nonmember_count, mode, seed, out) = match command {
        DataCommand::Synth { out, n, canaries, seed, phrasing } => return synth(&out, n, canaries, seed, phrasing),
        DataCommand::Split { input, nonmember_count, mode, seed, out } => (input, nonmember_count, mode, seed, out),
    };
    let records = load_jsonl(&input, "r")?;
    check_unique_ids(&records)?;
    let parts = split(&records, mode, nonmember_count, seed, &input)?;
    for (name, part) in ["members", "public", "nonmembers"].into_iter().zip(parts.parts(&records)) {
        write_jsonl(&out.join(format!("{name}.jsonl")), part)?;
    }
    let pinned = serde_json::json!({
        "source": input,
        "source_sha256": sha256_file(&input)?,
        "split": parts,
    });
    let path = out.join("split.json");
    write_atomic(&path, serde_json::to_string_pretty(&pinned)?.as_bytes()).with_context(|| format!("cannot write {}", path.display()))?;
    info(format!(
        "split {} records: {} members, {} public, {} non-members -> {}",
        records.len(),
        parts.members.len(),
        parts.public.len(),
        parts.nonmembers.len(),
        out.display()
    ));
    Ok(ExitCode::SUCCESS)
}

fn synth(out: &std::path::Path, n: usize, canaries: usize, seed: u64, phrasing: crate::data::synth::Phrasing) -> Result<ExitCode> {
    let s = crate::data::synth::synthesize(n, canaries, seed, phrasing);
    write_jsonl(out, s.records.iter().chain(s.canaries.iter().map(|c| &c.0)))?;
    let sidecar = out.with_extension("canaries.csv");
    write_canaries(&sidecar, &s.canaries)?;
    info(format!("wrote {} records and {} canaries to {} ({})", s.records.len(), s.canaries.len(), out.display(), sidecar.display()));
    Ok(ExitCode::SUCCESS)
}
