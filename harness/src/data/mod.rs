//! Data: Dolly-schema JSON Lines records, prompt templates, sample ids and tokenization
//! into the exact token layout that scoring uses (SPEC §4, §7.2.1).

mod prepare;
mod split;
pub mod synth;
pub mod vocab;
mod template;

use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::Value;
use tokenizers::Tokenizer;

pub use prepare::{DataRequest, DataSource, Prepared, TokenizerSource, prepare};
pub use split::{Split, SplitError, SplitMode, split};
pub use template::Template;

/// Where a record came from, for error messages and ids.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// The data file.
    pub file: PathBuf,
    /// 1-based line number.
    pub line: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// Everything that can be wrong with a data file. Each names the file and, where there is
/// one, the line, and says what to do.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)] // each variant is documented by its #[error] message
pub enum DataError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{origin}: not valid JSON ({message}); each line must be one JSON object")]
    Malformed { origin: Origin, message: String },
    #[error("{origin}: expected a JSON object, found {found}")]
    NotAnObject { origin: Origin, found: &'static str },
    #[error("{origin}: missing field `{field}` (accepted spellings: {spellings})")]
    MissingField { origin: Origin, field: &'static str, spellings: &'static str },
    #[error("{origin}: field `{field}` must be a string, found {found}")]
    WrongType { origin: Origin, field: String, found: &'static str },
    #[error("{origin}: both `{a}` and `{b}` are present with different values; keep one")]
    Ambiguous { origin: Origin, a: &'static str, b: &'static str },
    #[error("{} holds no records: the {role} set must not be empty", path.display())]
    Empty { path: PathBuf, role: &'static str },
    #[error("{origin}: duplicate sample id `{id}` (first seen at {first})")]
    DuplicateId { origin: Origin, id: String, first: Origin },
    #[error("{origin}: {message}")]
    Tokenization { origin: Origin, message: String },
    #[error("{origin}: category `all` is reserved for the overall results; rename it")]
    ReservedCategory { origin: Origin },
    #[error("tokenizer file {} not found; pass the model's tokenizer.json", .0.display())]
    TokenizerMissing(PathBuf),
    #[error("{}: not a usable Hugging Face tokenizer.json ({message})", path.display())]
    TokenizerInvalid { path: PathBuf, message: String },
}

/// One instruction-tuning record in the Dolly schema.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The record's `id` field, else `{prefix}{line index}` (SPEC §7.2.1).
    pub id: String,
    /// The task given to the model.
    pub instruction: String,
    /// `context` (Dolly) or `input` (Alpaca); empty when absent.
    pub context: String,
    /// `response` (Dolly) or `output` (Alpaca).
    pub response: String,
    /// Dolly task category; `uncategorized` when absent.
    pub category: String,
    /// Where the record was read.
    pub origin: Origin,
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Reads a string field under any of its accepted spellings (which must agree).
fn field(
    obj: &serde_json::Map<String, Value>,
    origin: &Origin,
    names: &[&'static str],
) -> Result<Option<String>, DataError> {
    let mut found: Option<(&'static str, String)> = None;
    for &name in names {
        let Some(value) = obj.get(name) else { continue };
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Null => continue,
            other => {
                return Err(DataError::WrongType { origin: origin.clone(), field: name.into(), found: json_kind(other) });
            }
        };
        match &found {
            Some((first, prev)) if *prev != text => {
                return Err(DataError::Ambiguous { origin: origin.clone(), a: first, b: name });
            }
            Some(_) => {}
            None => found = Some((name, text)),
        }
    }
    Ok(found.map(|(_, text)| text))
}

/// Parses one JSONL line. `index` is the 0-based line index used for default ids.
pub fn parse_record(line: &str, origin: Origin, id_prefix: &str, index: usize) -> Result<Record, DataError> {
    let value: Value = serde_json::from_str(line)
        .map_err(|e| DataError::Malformed { origin: origin.clone(), message: e.to_string() })?;
    let Value::Object(obj) = value else {
        return Err(DataError::NotAnObject { origin, found: json_kind(&value) });
    };
    let instruction = field(&obj, &origin, &["instruction"])?.ok_or(DataError::MissingField {
        origin: origin.clone(),
        field: "instruction",
        spellings: "`instruction`",
    })?;
    let response = field(&obj, &origin, &["response", "output"])?.ok_or(DataError::MissingField {
        origin: origin.clone(),
        field: "response",
        spellings: "`response` or `output`",
    })?;
    let context = field(&obj, &origin, &["context", "input"])?.unwrap_or_default();
    let category = field(&obj, &origin, &["category"])?
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| "uncategorized".to_string());
    if category == "all" {
        return Err(DataError::ReservedCategory { origin });
    }
    let id = match obj.get("id") {
        None | Some(Value::Null) => format!("{id_prefix}{index}"),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(other) => {
            return Err(DataError::WrongType { origin, field: "id".into(), found: json_kind(other) });
        }
    };
    Ok(Record { id, instruction, context, response, category, origin })
}

/// Loads every record of a JSONL file; blank lines are allowed and skipped (they hold no
/// record), anything else that is not a valid record is an error naming its line.
pub fn load_jsonl(path: &Path, id_prefix: &str) -> Result<Vec<Record>, DataError> {
    let text = std::fs::read_to_string(path).map_err(|source| DataError::Read { path: path.to_path_buf(), source })?;
    let mut records = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let origin = Origin { file: path.to_path_buf(), line: index + 1 };
        records.push(parse_record(line, origin, id_prefix, index)?);
    }
    Ok(records)
}

/// Writes `records` as JSON Lines in the Dolly schema (with ids), atomically.
pub fn write_jsonl<'a>(path: &Path, records: impl IntoIterator<Item = &'a Record>) -> Result<(), DataError> {
    let mut text = String::new();
    for r in records {
        text.push_str(&r.to_json().to_string());
        text.push('\n');
    }
    crate::files::write_atomic(path, text.as_bytes()).map_err(|source| DataError::Write { path: path.to_path_buf(), source })
}

/// Writes `canaries.csv`: each canary's id and how often the teacher sees it.
pub fn write_canaries(path: &Path, canaries: &[(Record, usize)]) -> Result<(), DataError> {
    let mut csv = String::from("sample_id,repetitions\n");
    for (c, reps) in canaries {
        csv.push_str(&format!("{},{reps}\n", c.id));
    }
    crate::files::write_atomic(path, csv.as_bytes()).map_err(|source| DataError::Write { path: path.to_path_buf(), source })
}

impl Record {
    /// The record in the Dolly schema, with its id, as `data split` writes it.
    pub fn to_json(&self) -> Value {
        serde_json::json!({
            "id": self.id,
            "instruction": self.instruction,
            "context": self.context,
            "response": self.response,
            "category": self.category,
        })
    }
}

/// Members and non-members for an attack, each set non-empty and every id unique.
#[derive(Clone, Debug)]
pub struct MembershipSets {
    /// Records the target was trained on (ids `m{i}` by default).
    pub members: Vec<Record>,
    /// Records it was not (ids `n{i}` by default).
    pub nonmembers: Vec<Record>,
}

impl MembershipSets {
    /// Loads `members` (ids `m{i}`) and `nonmembers` (ids `n{i}`).
    pub fn load(members: &Path, nonmembers: &Path) -> Result<Self, DataError> {
        let sets = MembershipSets { members: load_jsonl(members, "m")?, nonmembers: load_jsonl(nonmembers, "n")? };
        if sets.members.is_empty() {
            return Err(DataError::Empty { path: members.to_path_buf(), role: "member" });
        }
        if sets.nonmembers.is_empty() {
            return Err(DataError::Empty { path: nonmembers.to_path_buf(), role: "non-member" });
        }
        check_unique_ids(sets.members.iter().chain(&sets.nonmembers))?;
        Ok(sets)
    }

    /// Every record with its membership label (members first).
    pub fn labelled(&self) -> impl Iterator<Item = (&Record, bool)> {
        self.members.iter().map(|r| (r, true)).chain(self.nonmembers.iter().map(|r| (r, false)))
    }
}

/// Every score must be attributable: ids are unique across all the records given.
pub fn check_unique_ids<'a>(records: impl IntoIterator<Item = &'a Record>) -> Result<(), DataError> {
    let mut seen: std::collections::HashMap<&str, &Origin> = std::collections::HashMap::new();
    for record in records {
        if let Some(first) = seen.insert(&record.id, &record.origin) {
            return Err(DataError::DuplicateId { origin: record.origin.clone(), id: record.id.clone(), first: first.clone() });
        }
    }
    Ok(())
}

/// A tokenizer.json, with its path and SHA-256, set up for scoring.
#[derive(Clone)]
pub struct TokenizerFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// SHA-256 of the file, for cache keys and manifests.
    pub sha256: String,
    /// The tokenizer.
    pub tokenizer: Tokenizer,
}

impl TokenizerFile {
    /// Loads `path`. Truncation and padding stored in the file are switched off: the
    /// harness applies its own limits (long prompts keep their last tokens), and padding
    /// tokens must never be scored.
    pub fn load(path: &Path) -> Result<TokenizerFile, DataError> {
        if !path.is_file() {
            return Err(DataError::TokenizerMissing(path.to_path_buf()));
        }
        let invalid = |message: String| DataError::TokenizerInvalid { path: path.to_path_buf(), message };
        let mut tokenizer = Tokenizer::from_file(path).map_err(|e| invalid(e.to_string()))?;
        tokenizer.with_truncation(None).map_err(|e| invalid(e.to_string()))?;
        tokenizer.with_padding(None);
        let sha256 = crate::files::sha256_file(path).map_err(|e| invalid(e.to_string()))?;
        Ok(TokenizerFile { path: path.to_path_buf(), sha256, tokenizer })
    }
}

/// Token limits (SPEC §7.2.1): long prompts keep their last tokens, long responses are cut
/// at the end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TokenLimits {
    /// Longer prompts keep their last tokens.
    pub max_prompt_tokens: usize,
    /// Longer responses are cut at the end.
    pub max_response_tokens: usize,
}

impl Default for TokenLimits {
    fn default() -> Self {
        // The paper's code: max length 512 with at most 256 prompt tokens.
        TokenLimits { max_prompt_tokens: 256, max_response_tokens: 256 }
    }
}

/// A record tokenized for scoring: input = `prompt_ids ++ response_ids`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoded {
    /// The prompt's tokens (context only, never scored).
    pub prompt_ids: Vec<u32>,
    /// The response's tokens (scored).
    pub response_ids: Vec<u32>,
}

impl Encoded {
    /// Number of scored positions: every response token, except the first when the prompt
    /// is empty (nothing to predict it from).
    pub fn scored_len(&self) -> usize {
        if self.prompt_ids.is_empty() { self.response_ids.len().saturating_sub(1) } else { self.response_ids.len() }
    }

    /// The model input: prompt then response.
    pub fn input_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.prompt_ids.iter().chain(&self.response_ids).copied()
    }

    /// Input length in tokens.
    pub fn len(&self) -> usize {
        self.prompt_ids.len() + self.response_ids.len()
    }

    /// Whether the input has no token.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Tokenizes prompt and response separately, without special tokens, then applies the
/// limits. A record with no scorable token is an error naming its line.
pub fn encode(tokenizer: &Tokenizer, template: Template, limits: TokenLimits, record: &Record) -> Result<Encoded, DataError> {
    let fail = |message: String| DataError::Tokenization { origin: record.origin.clone(), message };
    let ids = |text: &str| -> Result<Vec<u32>, DataError> {
        Ok(tokenizer.encode(text, false).map_err(|e| fail(format!("tokenizer failed: {e}")))?.get_ids().to_vec())
    };
    let mut prompt_ids = ids(&template.prompt(record))?;
    let mut response_ids = ids(&record.response)?;
    if prompt_ids.len() > limits.max_prompt_tokens {
        prompt_ids.drain(..prompt_ids.len() - limits.max_prompt_tokens);
    }
    response_ids.truncate(limits.max_response_tokens);
    let encoded = Encoded { prompt_ids, response_ids };
    if encoded.scored_len() == 0 {
        return Err(fail(format!(
            "sample `{}` has no response token to score (response {:?}); give it a non-empty response",
            record.id, record.response
        )));
    }
    Ok(encoded)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> Origin {
        Origin { file: "x.jsonl".into(), line: 3 }
    }

    #[test]
    fn both_spellings_are_accepted() {
        let dolly = parse_record(
            r#"{"instruction":"I","context":"C","response":"R","category":"open_qa"}"#,
            origin(),
            "m",
            2,
        )
        .unwrap();
        let alpaca = parse_record(r#"{"instruction":"I","input":"C","output":"R","category":"open_qa"}"#, origin(), "m", 2).unwrap();
        assert_eq!(dolly, alpaca);
        assert_eq!(dolly.id, "m2");
        let with_id = parse_record(r#"{"id":17,"instruction":"I","response":"R"}"#, origin(), "m", 2).unwrap();
        assert_eq!((with_id.id.as_str(), with_id.category.as_str(), with_id.context.as_str()), ("17", "uncategorized", ""));
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let err = parse_record(r#"{"instruction":"I"}"#, origin(), "m", 2).unwrap_err().to_string();
        assert_eq!(err, "x.jsonl:3: missing field `response` (accepted spellings: `response` or `output`)");
        let err = parse_record("{not json", origin(), "m", 2).unwrap_err().to_string();
        assert!(err.starts_with("x.jsonl:3: not valid JSON"), "{err}");
        let err = parse_record(r#"{"instruction":"I","response":5}"#, origin(), "m", 2).unwrap_err().to_string();
        assert_eq!(err, "x.jsonl:3: field `response` must be a string, found a number");
        let err = parse_record(r#"{"instruction":"I","response":"a","output":"b"}"#, origin(), "m", 2).unwrap_err().to_string();
        assert!(err.contains("both `response` and `output`"), "{err}");
        let err = parse_record("[1]", origin(), "m", 2).unwrap_err().to_string();
        assert_eq!(err, "x.jsonl:3: expected a JSON object, found an array");
    }

    use proptest::prelude::*;

    proptest! {
        /// Fuzzes the JSONL record parser: any line gives a record or an error naming
        /// the line, never a panic.
        #[test]
        fn any_line_parses_or_errors_with_its_origin(line in "\\PC{0,200}") {
            if let Err(e) = parse_record(&line, origin(), "m", 0) {
                prop_assert!(e.to_string().starts_with("x.jsonl:3: "));
            }
        }

        /// Objects with arbitrary values in the known fields.
        #[test]
        fn any_object_parses_or_errors_with_its_origin(
            fields in prop::collection::btree_map(
                prop::sample::select(vec!["instruction", "context", "input", "response", "output", "category", "id"]),
                prop_oneof![
                    Just(serde_json::Value::Null),
                    any::<bool>().prop_map(serde_json::Value::from),
                    any::<i64>().prop_map(serde_json::Value::from),
                    "\\PC{0,20}".prop_map(serde_json::Value::from),
                ],
                0..7,
            )
        ) {
            let line = serde_json::to_string(&fields).unwrap();
            match parse_record(&line, origin(), "m", 0) {
                Ok(record) => prop_assert!(fields.contains_key("instruction") && !record.id.is_empty()),
                Err(e) => prop_assert!(e.to_string().starts_with("x.jsonl:3: ")),
            }
        }
    }

    #[test]
    fn scored_len_skips_first_token_without_prompt() {
        let e = Encoded { prompt_ids: vec![], response_ids: vec![5, 6, 7] };
        assert_eq!(e.scored_len(), 2);
        let e = Encoded { prompt_ids: vec![1], response_ids: vec![5, 6, 7] };
        assert_eq!(e.scored_len(), 3);
    }
}
