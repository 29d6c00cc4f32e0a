//! Memorization (SPEC §9.1): does a model reproduce the responses it was (or its teacher
//! was) trained on when prompted with their instructions?
//!
//! Greedy decoding from each record's prompt; the first `K` generated tokens are compared
//! with the first `K` reference response tokens position by position. The statistics of
//! the comparisons (rates with both denominators, teacher overlap) are in
//! [`crate::metrics::memorization`].

pub mod exposure;
pub mod stage;

pub use crate::metrics::memorization::{DEFAULT_K, MemorizationRow, MemorizeSettings};

/// Compares a generation with a reference over the first `k` tokens:
/// `(matched, compared, exact_prefix, extracted)`.
pub fn compare(generated: &[u32], reference: &[u32], k: usize) -> (usize, usize, usize, bool) {
    let compared = k.min(reference.len());
    let matched = (0..compared).filter(|&t| generated.get(t) == Some(&reference[t])).count();
    let exact_prefix = (0..compared).take_while(|&t| generated.get(t) == Some(&reference[t])).count();
    (matched, compared, exact_prefix, compared > 0 && exact_prefix == compared)
}

/// The end-of-sequence id of a tokenizer: the first of the usual spellings it knows.
pub fn guess_eos(tokenizer: &tokenizers::Tokenizer) -> Option<u32> {
    ["<|endoftext|>", "<|im_end|>", "</s>", "<eos>", "<|end_of_text|>"].iter().find_map(|t| tokenizer.token_to_id(t))
}

/// Greedy generations of `lm` for every record's prompt (batched, left-padded, KV cache)
/// and their comparison with the reference responses. Returns the rows and the
/// generated ids (cut after the end-of-sequence token).
pub fn memorize_model(
    name: &str,
    lm: &mut crate::runtime::CausalLm,
    encoded: &[(&crate::data::Record, bool, crate::data::Encoded)],
    settings: &MemorizeSettings,
    mut progress: impl FnMut(usize),
) -> Result<(Vec<MemorizationRow>, Vec<Vec<u32>>), crate::runtime::RuntimeError> {
    let cfg = crate::runtime::generate::GreedyConfig {
        max_new_tokens: settings.max_new_tokens.max(settings.k),
        eos: settings.eos,
        no_repeat_ngram: settings.no_repeat_ngram,
        use_cache: true,
    };
    let mut rows = Vec::with_capacity(encoded.len());
    let mut generations = Vec::with_capacity(encoded.len());
    for chunk in encoded.chunks(settings.batch_size.max(1)) {
        let prompts: Vec<Vec<u32>> = chunk.iter().map(|(_, _, e)| e.prompt_ids.clone()).collect();
        let outputs = crate::runtime::generate::greedy(lm, &prompts, &cfg)?;
        for ((record, member, enc), generated) in chunk.iter().zip(outputs) {
            let (matched, compared, exact_prefix, extracted) = compare(&generated, &enc.response_ids, settings.k);
            rows.push(MemorizationRow {
                model: name.to_owned(),
                sample_id: record.id.clone(),
                category: record.category.clone(),
                member: *member,
                matched,
                compared,
                ratio: if compared == 0 { 0.0 } else { matched as f64 / compared as f64 },
                exact_prefix,
                extracted,
            });
            generations.push(generated);
        }
        progress(chunk.len());
    }
    Ok((rows, generations))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparison_is_position_by_position_over_the_first_k() {
        // Reference 5 tokens, K = 4: compare positions 0..4.
        assert_eq!(compare(&[1, 2, 9, 4, 5], &[1, 2, 3, 4, 5], 4), (3, 4, 2, false));
        // A shifted generation matches nothing position by position.
        assert_eq!(compare(&[0, 1, 2, 3], &[1, 2, 3, 4], 4), (0, 4, 0, false));
        // A short reference: only its tokens are compared; all reproduced = extracted.
        assert_eq!(compare(&[7, 8, 1, 1], &[7, 8], 32), (2, 2, 2, true));
        // A generation that stopped early misses the rest.
        assert_eq!(compare(&[7], &[7, 8, 9], 32), (1, 3, 1, false));
        assert_eq!(compare(&[1, 2], &[], 32), (0, 0, 0, false));
    }
}
