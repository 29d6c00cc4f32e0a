//! The data stage (SPEC §3 step 1): the records (generated or read), the paper's split
//! with the canaries forced into the members, the teacher's training set (each canary
//! repeated), and the tokenizer, written under one directory.

use std::path::PathBuf;

use super::{Record, SplitMode, Template, check_unique_ids, load_jsonl, split, synth, vocab, write_canaries, write_jsonl};
use crate::files::write_atomic;

/// Where the records come from.
#[derive(Debug, Clone)]
pub enum DataSource {
    /// Generated fictional records with canaries (see [`synth`]).
    Synthetic {
        /// Ordinary records.
        records: usize,
        /// Canaries per repetition count.
        canaries_per_count: usize,
        /// How the records are worded.
        phrasing: synth::Phrasing,
    },
    /// A Dolly-schema JSONL file.
    File(PathBuf),
}

/// Where the tokenizer comes from.
#[derive(Debug, Clone)]
pub enum TokenizerSource {
    /// A byte-level BPE learnt from every record's prompt and response.
    Train {
        /// Vocabulary size.
        vocab_size: usize,
    },
    /// An existing tokenizer.json (e.g. a pretrained teacher's).
    File(PathBuf),
}

/// Everything the data stage needs.
#[derive(Debug, Clone)]
pub struct DataRequest {
    /// The records.
    pub source: DataSource,
    /// Paper or random split.
    pub split: SplitMode,
    /// Records held out as non-members.
    pub nonmember_count: usize,
    /// The prompt template (a trained tokenizer learns from templated prompts).
    pub template: Template,
    /// The tokenizer.
    pub tokenizer: TokenizerSource,
    /// Seeds generation and the split.
    pub seed: u64,
    /// Output directory.
    pub dir: PathBuf,
}

/// How many records went where.
#[derive(Debug, Clone, Copy)]
pub struct Prepared {
    /// Members (canaries aside).
    pub members: usize,
    /// Canaries added to the members.
    pub canaries: usize,
    /// Public records for distillation.
    pub public: usize,
    /// Non-members.
    pub nonmembers: usize,
}

/// Writes `members.jsonl`, `public.jsonl`, `nonmembers.jsonl`, `teacher_train.jsonl`,
/// `canaries.csv`, `split.json` and `tokenizer.json` into `request.dir`.
pub fn prepare(request: &DataRequest) -> anyhow::Result<Prepared> {
    use anyhow::Context;
    let (records, canaries): (Vec<Record>, Vec<(Record, usize)>) = match &request.source {
        DataSource::Synthetic { records, canaries_per_count, phrasing } => {
            let s = synth::synthesize(*records, *canaries_per_count, request.seed, *phrasing);
            (s.records, s.canaries)
        }
        DataSource::File(path) => (load_jsonl(path, "r")?, Vec::new()),
    };
    check_unique_ids(records.iter().chain(canaries.iter().map(|c| &c.0)))?;
    let source_name = match &request.source {
        DataSource::Synthetic { .. } => PathBuf::from("synthetic"),
        DataSource::File(path) => path.clone(),
    };
    let split = split(&records, request.split, request.nonmember_count, request.seed, &source_name)?;
    let [members, public, nonmembers] = split.parts(&records);
    let dir = &request.dir;
    write_jsonl(&dir.join("members.jsonl"), members.iter().copied().chain(canaries.iter().map(|c| &c.0)))?;
    write_jsonl(&dir.join("public.jsonl"), public)?;
    write_jsonl(&dir.join("nonmembers.jsonl"), nonmembers)?;
    // The teacher sees each canary `repetitions` times, under distinct ids.
    let mut teacher_train: Vec<Record> = members.into_iter().cloned().collect();
    for (c, reps) in &canaries {
        teacher_train.extend((0..*reps).map(|copy| Record { id: format!("{}_copy{copy}", c.id), ..c.clone() }));
    }
    write_jsonl(&dir.join("teacher_train.jsonl"), &teacher_train)?;
    write_canaries(&dir.join("canaries.csv"), &canaries)?;
    write_atomic(&dir.join("split.json"), serde_json::to_string_pretty(&split)?.as_bytes())?;
    let tokenizer_json = match &request.tokenizer {
        TokenizerSource::Train { vocab_size } => {
            let texts: Vec<String> = records
                .iter()
                .chain(canaries.iter().map(|c| &c.0))
                .flat_map(|r| [request.template.prompt(r), r.response.clone()])
                .collect();
            let tokenizer = vocab::train_tokenizer(&texts, *vocab_size).map_err(anyhow::Error::msg)?;
            tokenizer.to_string(true).map_err(|e| anyhow::anyhow!("cannot serialise the tokenizer: {e}"))?
        }
        TokenizerSource::File(path) => std::fs::read_to_string(path).with_context(|| format!("cannot read the tokenizer {}", path.display()))?,
    };
    write_atomic(&dir.join("tokenizer.json"), tokenizer_json.as_bytes())?;
    Ok(Prepared { members: split.members.len(), canaries: canaries.len(), public: split.public.len(), nonmembers: split.nonmembers.len() })
}
