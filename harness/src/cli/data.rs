//! `kdharness data split`: one dataset into members / public / non-members.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};

use super::info;
use crate::data::{Record, SplitMode, check_unique_ids, load_jsonl, split};
use crate::util::{sha256_file, write_atomic};

#[derive(clap::Subcommand, Debug)]
pub enum DataCommand {
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
    let DataCommand::Split { input, nonmember_count, mode, seed, out } = command;
    let records = load_jsonl(&input, "r")?;
    check_unique_ids(&records)?;
    let parts = split(&records, mode, nonmember_count, seed, &input)?;
    let by_id: std::collections::HashMap<&str, &Record> = records.iter().map(|r| (r.id.as_str(), r)).collect();
    for (name, ids) in [("members", &parts.members), ("public", &parts.public), ("nonmembers", &parts.nonmembers)] {
        let mut text = String::new();
        for id in ids {
            text.push_str(&serde_json::to_string(&by_id[id.as_str()].to_json())?);
            text.push('\n');
        }
        let path = out.join(format!("{name}.jsonl"));
        write_atomic(&path, text.as_bytes()).with_context(|| format!("cannot write {}", path.display()))?;
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
