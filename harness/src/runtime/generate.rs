//! Greedy decoding through ONNX Runtime with the KV cache (memorization, utility, and
//! checking exports), batched with left padding.
//!
//! Each step feeds only the newest token with the cache returned by the previous step;
//! `use_cache: false` recomputes the whole sequence instead (to test that the cache
//! changes nothing). Positions follow Hugging Face: `cumsum(mask) − 1`, 1 on padding.

use super::{CausalLm, LmBatch, PaddingSide, PastState, RuntimeError};

/// Greedy decoding settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GreedyConfig {
    /// Most new tokens per prompt.
    pub max_new_tokens: usize,
    /// Stop a row after this token (kept in the output).
    pub eos: Option<u32>,
    /// Forbid any n-gram of this size from occurring twice in prompt + generation
    /// (Hugging Face's `no_repeat_ngram_size`; 0 turns it off).
    pub no_repeat_ngram: usize,
    /// Feed only new tokens with the cache (else recompute everything each step).
    pub use_cache: bool,
}

/// Greedy continuations of every prompt (each at most `max_new_tokens` long).
pub fn greedy(lm: &mut CausalLm, prompts: &[Vec<u32>], cfg: &GreedyConfig) -> Result<Vec<Vec<u32>>, RuntimeError> {
    let rows = prompts.len();
    let mut out: Vec<Vec<u32>> = vec![Vec::new(); rows];
    if rows == 0 || cfg.max_new_tokens == 0 {
        return Ok(out);
    }
    if let Some(r) = prompts.iter().position(Vec::is_empty) {
        return Err(RuntimeError::Model {
            path: lm.path().to_owned(),
            message: format!("prompt {r} is empty: greedy decoding needs at least one token of context"),
        });
    }
    let prompt_batch = LmBatch::pad(prompts.iter().map(Vec::as_slice), PaddingSide::Left, 0);
    let mut mask = prompt_batch.attention_mask.chunks(prompt_batch.columns).map(<[i64]>::to_vec).collect::<Vec<_>>();
    let mut sequences: Vec<Vec<u32>> = prompts.to_vec();
    let mut done = vec![false; rows];
    let mut past = PastState::default();
    let mut step = prompt_batch;
    for _ in 0..cfg.max_new_tokens {
        let pick = |logits: &[f32], vocab: usize| -> Vec<u32> {
            let columns = logits.len() / (rows * vocab);
            (0..rows)
                .map(|r| {
                    let at = (r * columns + columns - 1) * vocab;
                    let banned = banned_tokens(&sequences[r], cfg.no_repeat_ngram);
                    argmax_allowed(&logits[at..at + vocab], &banned)
                })
                .collect()
        };
        let next = if cfg.use_cache && !lm.info().past.is_empty() {
            let (next, state) = lm.forward_with_past(&step, &past, pick)?;
            past = state;
            next
        } else {
            let full = LmBatch::pad(sequences.iter().map(Vec::as_slice), PaddingSide::Left, 0);
            lm.forward(&full, pick)?
        };
        for r in 0..rows {
            if !done[r] {
                out[r].push(next[r]);
                done[r] = cfg.eos == Some(next[r]);
            }
            sequences[r].push(next[r]);
            mask[r].push(1);
        }
        if done.iter().all(|&d| d) {
            break;
        }
        step = LmBatch {
            rows,
            columns: 1,
            input_ids: next.iter().map(|&t| t as i64).collect(),
            attention_mask: mask.concat(),
            position_ids: mask.iter().map(|m| m.iter().sum::<i64>() - 1).collect(),
            offsets: vec![0; rows],
        };
    }
    Ok(out)
}

/// Tokens that would complete an n-gram already present in `sequence`.
pub fn banned_tokens(sequence: &[u32], n: usize) -> Vec<u32> {
    if n == 0 || sequence.len() + 1 < n {
        return Vec::new();
    }
    let tail = &sequence[sequence.len() + 1 - n..];
    sequence
        .windows(n)
        .filter(|w| &w[..n - 1] == tail)
        .map(|w| w[n - 1])
        .collect()
}

/// The highest-scoring token not in `banned` (lowest id on ties).
fn argmax_allowed(logits: &[f32], banned: &[u32]) -> u32 {
    let mut best = (f32::NEG_INFINITY, 0u32);
    for (i, &l) in logits.iter().enumerate() {
        if l > best.0 && !banned.contains(&(i as u32)) {
            best = (l, i as u32);
        }
    }
    best.1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_ngrams_are_banned_like_hugging_face() {
        // n = 3: the last two tokens (1, 2) already occurred followed by 3 and by 4.
        assert_eq!(banned_tokens(&[1, 2, 3, 9, 1, 2, 4, 1, 2], 3), vec![3, 4]);
        assert_eq!(banned_tokens(&[1, 2, 3], 0), Vec::<u32>::new());
        // n = 1 bans every token seen.
        assert_eq!(banned_tokens(&[5, 6], 1), vec![5, 6]);
        assert_eq!(argmax_allowed(&[0.5, 3.0, 3.0, 1.0], &[1]), 2);
        assert_eq!(argmax_allowed(&[0.5, 3.0, 3.0, 1.0], &[]), 1);
    }
}
