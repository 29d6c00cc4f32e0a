//! The token frequency table of a reference corpus (the `token_frequency` signal, read by
//! DC-PDD): every token of every record of the corpus, encoded as the models read it
//! (prompt through the template, then the response, cut to the run's limits), counted
//! per token id. `log f(t) = ln((c(t) + 1) / (N + V))`: Laplace smoothing over the
//! tokenizer's `V` ids, so a token the corpus never shows still has a finite frequency.
//! The table is kept in the signal cache under the hash of everything it is made from.

use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::data::{self, Template, TokenLimits, TokenizerFile};
use crate::files;

/// A corpus's token counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenFrequency {
    /// `counts[t]`: occurrences of token id `t` (one entry per id of the tokenizer).
    pub counts: Vec<u64>,
    /// `N`, the corpus's tokens.
    pub total: u64,
    /// The hash of what the table was made from: the corpus file, the tokenizer file, the
    /// template and the limits.
    pub key: String,
}

/// How a table was made, for the manifest.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FrequencyRecord {
    /// The corpus file.
    pub corpus: std::path::PathBuf,
    /// Its SHA-256.
    pub corpus_sha256: String,
    /// `N`.
    pub tokens: u64,
    /// `V`.
    pub vocab: usize,
    /// [`TokenFrequency::key`].
    pub key: String,
}

impl TokenFrequency {
    /// The table of `corpus` (a records JSONL file) under `tokenizer`, from `cache_dir` when
    /// it holds one made from the same inputs, else counted and stored there.
    pub fn of(corpus: &Path, tokenizer: &TokenizerFile, template: Template, limits: TokenLimits, cache_dir: &Path) -> Result<(TokenFrequency, FrequencyRecord)> {
        let corpus_sha256 = files::sha256_file(corpus).with_context(|| format!("cannot read the frequency corpus {}", corpus.display()))?;
        let template_key = serde_json::to_string(&template).expect("templates serialise");
        let limits_key = format!("{}/{}", limits.max_prompt_tokens, limits.max_response_tokens);
        let key = files::sha256_bytes([corpus_sha256.as_str(), &tokenizer.sha256, &template_key, &limits_key].join("\n").as_bytes());
        let vocab = tokenizer.tokenizer.get_vocab_size(true);
        let record = |t: &TokenFrequency| FrequencyRecord { corpus: corpus.to_path_buf(), corpus_sha256: corpus_sha256.clone(), tokens: t.total, vocab, key: key.clone() };
        let path = cache_dir.join(format!("token_frequency-{}.json", &key[..16]));
        if let Some(table) = std::fs::read(&path).ok().and_then(|b| serde_json::from_slice::<TokenFrequency>(&b).ok()).filter(|t| t.key == key && t.counts.len() == vocab) {
            let record = record(&table);
            return Ok((table, record));
        }
        let mut counts = vec![0u64; vocab];
        let records = data::load_jsonl(corpus, "f").with_context(|| format!("the frequency corpus {}", corpus.display()))?;
        for r in &records {
            let encoded = data::encode(&tokenizer.tokenizer, template, limits, r)?;
            for &id in encoded.prompt_ids.iter().chain(&encoded.response_ids) {
                // An id beyond the tokenizer's count (added tokens) widens the table.
                if id as usize >= counts.len() {
                    counts.resize(id as usize + 1, 0);
                }
                counts[id as usize] += 1;
            }
        }
        let table = TokenFrequency { total: counts.iter().sum(), counts, key: key.clone() };
        std::fs::create_dir_all(cache_dir).with_context(|| format!("cannot create {}", cache_dir.display()))?;
        let text = serde_json::to_vec(&table).expect("tables serialise");
        files::write_atomic(&path, &text).with_context(|| format!("cannot write {}", path.display()))?;
        let record = record(&table);
        Ok((table, record))
    }

    /// `ln f(t)` of token id `t`.
    pub fn log_freq(&self, t: u32) -> f64 {
        let c = self.counts.get(t as usize).copied().unwrap_or(0);
        (((c + 1) as f64) / ((self.total + self.counts.len() as u64) as f64)).ln()
    }

    /// Fills every sample's `token_log_freq` from its `token_ids`.
    pub fn fill(&self, samples: &mut [kdharness_plugin_api::OwnedSample]) {
        for s in samples {
            s.token_log_freq = s.token_ids.iter().map(|&t| self.log_freq(t)).collect();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn laplace_smoothing_by_hand() {
        // Three ids; the corpus: id 0 twice, id 2 once (N = 3, V = 3).
        let table = TokenFrequency { counts: vec![2, 0, 1], total: 3, key: String::new() };
        assert_eq!(table.log_freq(0), (3.0f64 / 6.0).ln());
        assert_eq!(table.log_freq(1), (1.0f64 / 6.0).ln());
        assert_eq!(table.log_freq(2), (2.0f64 / 6.0).ln());
        let mut samples = vec![kdharness_plugin_api::OwnedSample { token_ids: vec![2, 0, 2], ..Default::default() }];
        table.fill(&mut samples);
        assert_eq!(samples[0].token_log_freq, vec![(2.0f64 / 6.0).ln(), 0.5f64.ln(), (2.0f64 / 6.0).ln()]);
    }
}
