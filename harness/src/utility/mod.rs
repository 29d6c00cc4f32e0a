//! Utility (SPEC §9.3): ROUGE-L F of greedy generations against references, so privacy can
//! be plotted against usefulness.
//!
//! Texts are tokenized as the `rouge_score` package's default tokenizer does (lowercase,
//! every character outside `a-z0-9` a separator); no stemming. ROUGE-L F is
//! `2PR / (P + R)` with `P = LCS / |prediction|`, `R = LCS / |reference|`, reported ×100.

/// `rouge_score`-style tokens: lowercase alphanumeric runs.
pub fn tokens(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit()))
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Length of the longest common subsequence (dynamic programming, two rows).
pub fn lcs<T: PartialEq>(a: &[T], b: &[T]) -> usize {
    let mut prev = vec![0usize; b.len() + 1];
    let mut row = vec![0usize; b.len() + 1];
    for x in a {
        for (j, y) in b.iter().enumerate() {
            row[j + 1] = if x == y { prev[j] + 1 } else { row[j].max(prev[j + 1]) };
        }
        std::mem::swap(&mut prev, &mut row);
    }
    prev[b.len()]
}

/// ROUGE-L F ×100 of `prediction` against `reference` (0 when either has no token).
pub fn rouge_l(prediction: &str, reference: &str) -> f64 {
    let (p, r) = (tokens(prediction), tokens(reference));
    let common = lcs(&p, &r) as f64;
    if common == 0.0 {
        return 0.0;
    }
    let (precision, recall) = (common / p.len() as f64, common / r.len() as f64);
    100.0 * 2.0 * precision * recall / (precision + recall)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lcs_matches_hand_computed_values() {
        assert_eq!(lcs(&[1, 2, 3, 4, 5], &[2, 4, 5, 1]), 3); // 2 4 5
        assert_eq!(lcs(b"ABCBDAB", b"BDCABA"), 4); // the textbook example: BCBA
        assert_eq!(lcs::<u8>(&[], b"abc"), 0);
        assert_eq!(lcs(b"same", b"same"), 4);
    }

    #[test]
    fn rouge_l_matches_hand_computed_values() {
        // prediction "the cat sat" vs reference "the cat is on the mat": LCS "the cat" = 2,
        // P = 2/3, R = 2/6, F = 2·(2/3)(1/3)/(2/3 + 1/3) = 4/9.
        assert!((rouge_l("The cat sat.", "the cat is on the mat") - 400.0 / 9.0).abs() < 1e-9);
        assert_eq!(rouge_l("Paris", "paris!"), 100.0);
        assert_eq!(rouge_l("", "anything"), 0.0);
        assert_eq!(tokens("Order #A-10432, 5 March"), ["order", "a", "10432", "5", "march"]);
    }
}
