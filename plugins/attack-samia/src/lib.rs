//! SaMIA (Kaneko et al. 2024, "Sampling-based Pseudo-Likelihood for Membership Inference
//! Attacks"): a model that trained on a text continues its first half into something close
//! to its true second half, so the overlap of sampled continuations with the true second
//! half is evidence of membership. Needs no probabilities, only samples.

use std::collections::HashMap;
use std::io::Write;

use flate2::Compression;
use flate2::write::ZlibEncoder;
use kdharness_plugin_api::{Attack, AttackInput, AttackInputExt, ContinuationRequest, ParamList, ParamSpec, SignalSet, export_plugins};

const N: ParamSpec = ParamSpec::new("n", "10", "continuations sampled per sample");
const TEMPERATURE: ParamSpec = ParamSpec::new("temperature", "1", "sampling temperature");
const NEEDS: SignalSet = SignalSet::CONTINUATIONS;

/// ROUGE-1 recall of `candidate` against `reference`, both split on whitespace: the
/// clipped count of shared words over the reference's words (0 for an empty reference).
pub fn rouge1_recall(candidate: &str, reference: &str) -> f64 {
    let reference: Vec<&str> = reference.split_whitespace().collect();
    if reference.is_empty() {
        return 0.0;
    }
    let mut available: HashMap<&str, usize> = HashMap::new();
    for w in candidate.split_whitespace() {
        *available.entry(w).or_default() += 1;
    }
    let mut matched = 0usize;
    for w in &reference {
        if let Some(n) = available.get_mut(w).filter(|n| **n > 0) {
            *n -= 1;
            matched += 1;
        }
    }
    matched as f64 / reference.len() as f64
}

/// Byte length of zlib level 6 of `text`'s words joined by single spaces: Python's
/// `len(zlib.compress(" ".join(words).encode()))`, words split on Unicode White_Space
/// (classic zlib, as the zlib attack).
pub fn zlib_len_of_words(text: &str) -> usize {
    let words: Vec<&str> = text.split_whitespace().collect();
    let mut encoder = ZlibEncoder::new(Vec::new(), Compression::new(6));
    encoder.write_all(words.join(" ").as_bytes()).expect("writing to a Vec cannot fail");
    encoder.finish().expect("finishing into a Vec cannot fail").len()
}

fn request(params: ParamList<'_>) -> Result<Option<ContinuationRequest>, String> {
    let (samples, temperature) = (params.count("n")?, params.f64("temperature")?);
    if samples == 0 || temperature <= 0.0 {
        return Err(format!("`n` ({samples}) must be at least 1 and `temperature` ({temperature}) positive"));
    }
    Ok(Some(ContinuationRequest { samples, temperature }))
}

/// Each sample's mean over its continuations of `term(continuation, second half)`.
fn score_with(input: &AttackInputExt<'_>, term: impl Fn(&str, &str) -> f64) -> Result<Vec<f64>, String> {
    input
        .samples
        .iter()
        .zip(input.base.samples.iter())
        .map(|(ext, s)| {
            let terms: Vec<f64> = ext.continuations().map(|c| term(c, ext.second_half.as_str())).collect();
            if terms.is_empty() {
                return Err(format!("sample {}: no continuations", s.id));
            }
            Ok(terms.iter().sum::<f64>() / terms.len() as f64)
        })
        .collect()
}

/// `score = mean_i ROUGE-1 recall(c_i, y₂)`, c_i the sampled continuations of the prompt
/// and the response's first half, y₂ its true second half. Higher means member.
pub struct Samia;

impl Attack for Samia {
    const NAME: &'static str = "samia";
    const DESCRIPTION: &'static str = "SaMIA: mean ROUGE-1 recall of sampled continuations against the true second half";
    const NEEDS: SignalSet = NEEDS;
    const PARAMS: &'static [ParamSpec] = &[N, TEMPERATURE];

    fn score(_: &AttackInput<'_>) -> Result<Vec<f64>, String> {
        Err("samia reads the continuations of plugin interface 0.3.1 (score_ext)".into())
    }

    fn score_ext(input: &AttackInputExt<'_>) -> Result<Vec<f64>, String> {
        score_with(input, rouge1_recall)
    }

    fn continuations(params: ParamList<'_>) -> Result<Option<ContinuationRequest>, String> {
        request(params)
    }
}

/// `score = mean_i ROUGE-1 recall(c_i, y₂) · zlib(c_i)`: SaMIA*zlib, each continuation's
/// overlap weighted by its compressed length (its words joined by spaces), so that short or
/// repetitive continuations count less. Higher means member.
pub struct SamiaZlib;

impl Attack for SamiaZlib {
    const NAME: &'static str = "samia_zlib";
    const DESCRIPTION: &'static str = "SaMIA*zlib: SaMIA's ROUGE-1 recall times each continuation's zlib length";
    const NEEDS: SignalSet = NEEDS;
    const PARAMS: &'static [ParamSpec] = &[N, TEMPERATURE];

    fn score(_: &AttackInput<'_>) -> Result<Vec<f64>, String> {
        Err("samia_zlib reads the continuations of plugin interface 0.3.1 (score_ext)".into())
    }

    fn score_ext(input: &AttackInputExt<'_>) -> Result<Vec<f64>, String> {
        score_with(input, |c, y| rouge1_recall(c, y) * zlib_len_of_words(c) as f64)
    }

    fn continuations(params: ParamList<'_>) -> Result<Option<ContinuationRequest>, String> {
        request(params)
    }
}

export_plugins!(attacks: [Samia, SamiaZlib]);

#[cfg(test)]
mod tests {
    use super::*;
    use kdharness_plugin_api::{CONTINUATION_SEPARATOR, OwnedSample, run_attack};

    #[test]
    fn rouge1_recall_by_hand() {
        // Reference "the cat sat on the mat" (6 words): candidate "the the cat dog" shares
        // the ×2, cat ×1 → 3/6.
        assert_eq!(rouge1_recall("the the cat dog", "the cat sat on the mat"), 0.5);
        // Counts are clipped by the candidate: one "the" matches one.
        assert_eq!(rouge1_recall("the", "the cat sat on the mat"), 1.0 / 6.0);
        assert_eq!(rouge1_recall("anything", ""), 0.0);
        assert_eq!(rouge1_recall("", "a b"), 0.0);
    }

    #[test]
    fn the_mean_over_continuations_by_hand() {
        let sep = CONTINUATION_SEPARATOR.to_string();
        let s = OwnedSample { continuations: ["a b", "c d", "a c"].join(&sep), second_half: "a b c d".into(), ..Default::default() };
        // Recalls 2/4, 2/4, 2/4.
        assert_eq!(run_attack::<Samia>(std::slice::from_ref(&s), &[], &[]).unwrap(), vec![0.5]);
        // len(zlib.compress(b"a b")) is 11 in Python, as for "c d" and "a c".
        assert_eq!(zlib_len_of_words("a  b"), 11);
        assert_eq!(run_attack::<SamiaZlib>(&[s], &[], &[]).unwrap(), vec![0.5 * 11.0]);
    }
}
