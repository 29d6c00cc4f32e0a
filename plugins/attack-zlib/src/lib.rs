//! The zlib-entropy attack (Carlini et al. 2021): the model's log-likelihood normalised by
//! how compressible the text is, so that merely repetitive text does not look "member".

use std::io::Write;

use flate2::{Compression, write::ZlibEncoder};
use kdharness_plugin_api::{Attack, AttackInput, SignalSet, export_plugins, mean};

/// Length in bytes of the zlib stream (deflate level 6, zlib header and Adler-32 trailer)
/// of `text` in UTF-8: byte for byte Python's `len(zlib.compress(text.encode()))`.
///
/// This needs the classic zlib implementation (flate2's `zlib` backend, statically
/// built): the pure-Rust backends emit different, equally valid, streams.
pub fn zlib_len(text: &str) -> usize {
    let mut encoder = ZlibEncoder::new(Vec::new(), Compression::new(6));
    encoder.write_all(text.as_bytes()).expect("writing to a Vec cannot fail");
    encoder.finish().expect("finishing into a Vec cannot fail").len()
}

/// `score = mean_t ℓ_t / zbytes(response_text)`.
pub struct Zlib;

impl Attack for Zlib {
    const NAME: &'static str = "zlib";
    const DESCRIPTION: &'static str = "mean log-probability divided by the zlib length of the response text";
    const NEEDS: SignalSet = SignalSet::TARGET_LOGPROB.union(SignalSet::RESPONSE_TEXT);

    fn score(input: &AttackInput<'_>) -> Result<Vec<f64>, String> {
        Ok(input.samples.iter().map(|s| mean(&s.target_logprob) / zlib_len(&s.response_text) as f64).collect())
    }
}

/// The released code's variant: `mean_t ℓ_t / zbytes(argmax_text)`, compressing the
/// model's own argmax tokens instead of the true text.
pub struct ZlibPaper;

impl Attack for ZlibPaper {
    const NAME: &'static str = "zlib_paper";
    const DESCRIPTION: &'static str = "paper-compat zlib: divides by the zlib length of the decoded argmax tokens";
    const NEEDS: SignalSet = SignalSet::TARGET_LOGPROB.union(SignalSet::ARGMAX_TEXT);

    fn score(input: &AttackInput<'_>) -> Result<Vec<f64>, String> {
        Ok(input.samples.iter().map(|s| mean(&s.target_logprob) / zlib_len(&s.argmax_text) as f64).collect())
    }
}

export_plugins!(attacks: [Zlib, ZlibPaper]);

#[cfg(test)]
mod tests {
    use super::*;
    use kdharness_plugin_api::{OwnedSample, run_attack};

    #[test]
    fn zlib_lengths_match_python() {
        // Values of len(zlib.compress(s.encode())) from CPython 3.11's zlib module.
        assert_eq!(zlib_len(""), 8);
        assert_eq!(zlib_len("a"), 9);
        assert_eq!(zlib_len("hello hello hello hello"), 16);
        assert_eq!(zlib_len("The quick brown fox jumps over the lazy dog."), 51);
        assert_eq!(zlib_len("café ☕ 東京"), 25);
    }

    #[test]
    fn zlib_scores_divide_by_text_lengths() {
        let s = OwnedSample {
            target_logprob: vec![-1.0, -3.0],
            response_text: "a".into(),
            argmax_text: "hello hello hello hello".into(),
            ..Default::default()
        };
        assert_eq!(run_attack::<Zlib>(std::slice::from_ref(&s), &[], &[]).unwrap(), vec![-2.0 / 9.0]);
        assert_eq!(run_attack::<ZlibPaper>(&[s], &[], &[]).unwrap(), vec![-2.0 / 16.0]);
    }
}
