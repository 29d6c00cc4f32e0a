//! Scores must not depend on how samples are batched or padded.

use crate::common::*;
use kdharness::runtime::PaddingSide;
use kdharness::score::BatchSettings;

#[test]
fn signals_are_identical_across_batch_sizes_and_padding_sides() {
    // tiny-llama takes position_ids; tiny-opt does not, so it is always padded right
    // (its "left" runs check that this holds whatever the user asked for).
    for (model, tokenizer) in [("tiny-llama.onnx", "tokenizer.json"), ("tiny-opt.onnx", "tokenizer-b.json")] {
        let single = fixture_signals(model, tokenizer, BatchSettings { batch_size: 1, padding: PaddingSide::Right });
        for batch in [
            BatchSettings { batch_size: 5, padding: PaddingSide::Right },
            BatchSettings { batch_size: 5, padding: PaddingSide::Left },
            BatchSettings { batch_size: 24, padding: PaddingSide::Left },
            BatchSettings { batch_size: 24, padding: PaddingSide::Right },
        ] {
            let batched = fixture_signals(model, tokenizer, batch);
            let mut worst = 0f64;
            assert_eq!(single.len(), batched.len());
            for (a, b) in single.iter().zip(&batched) {
                assert_eq!(a.id, b.id);
                assert_eq!(a.token_ids, b.token_ids);
                assert_eq!(a.argmax_id, b.argmax_id, "{model} {batch:?} {}", a.id);
                for (x, y) in [(&a.target_logprob, &b.target_logprob), (&a.dist_mean, &b.dist_mean), (&a.dist_var, &b.dist_var)] {
                    assert!(!x.is_empty() && x.len() == y.len());
                    for (x, y) in x.iter().zip(y.iter()) {
                        worst = worst.max((x - y).abs());
                    }
                }
            }
            eprintln!("{model} {batch:?}: max |difference| {worst:e}");
            assert!(worst <= 1e-5, "{model} {batch:?}: max difference {worst}");
            // The batches really mix lengths, so most rows carry padding.
            assert!(single.iter().map(|s| s.token_ids.len()).collect::<std::collections::BTreeSet<_>>().len() > 5);
        }
    }
}
