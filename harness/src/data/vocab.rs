//! Training a tokenizer for from-scratch models: byte-level BPE (GPT-2's scheme) learnt
//! from the experiment's own texts, with `<|endoftext|>` as id 0 (end of sequence and
//! padding). Deterministic: the same texts give the same `tokenizer.json`.

use std::collections::HashSet;

use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{
    AddedToken, DecoderWrapper, NormalizerWrapper, PostProcessorWrapper, PreTokenizerWrapper, Tokenizer, TokenizerBuilder,
};

/// The end-of-sequence token of trained tokenizers (id 0).
pub const EOS: &str = "<|endoftext|>";

/// A byte-level BPE tokenizer with at most `vocab_size` tokens learnt from `texts`.
pub fn train_tokenizer(texts: &[String], vocab_size: usize) -> Result<Tokenizer, String> {
    let alphabet: HashSet<char> = ByteLevel::alphabet().into_iter().collect();
    let mut trainer = BpeTrainerBuilder::new()
        .vocab_size(vocab_size)
        .min_frequency(2)
        .show_progress(false)
        .special_tokens(vec![AddedToken::from(EOS, true)])
        .initial_alphabet(alphabet)
        .build();
    let byte_level = ByteLevel::default().add_prefix_space(false);
    let mut tokenizer = TokenizerBuilder::<BPE, NormalizerWrapper, PreTokenizerWrapper, PostProcessorWrapper, DecoderWrapper>::new()
        .with_model(BPE::default())
        .with_normalizer(None)
        .with_pre_tokenizer(Some(PreTokenizerWrapper::ByteLevel(byte_level)))
        .with_post_processor(None)
        .with_decoder(Some(DecoderWrapper::ByteLevel(byte_level)))
        .build()
        .map_err(|e| e.to_string())?;
    tokenizer.train(&mut trainer, texts.iter()).map_err(|e| e.to_string())?;
    Ok(Tokenizer::from(tokenizer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn training_is_deterministic_and_round_trips() {
        let texts: Vec<String> = (0..200).map(|i| format!("Order #A-{i} for Mira Kostova shipped on {} March to Port Amsel.", i % 28)).collect();
        let a = train_tokenizer(&texts, 300).unwrap();
        let b = train_tokenizer(&texts, 300).unwrap();
        assert_eq!(a.to_string(false).unwrap(), b.to_string(false).unwrap());
        assert_eq!(a.token_to_id(EOS), Some(0));
        assert!(a.get_vocab_size(true) <= 300);
        let text = "Mira Kostova's order #A-17 — naïve café, 12 March.";
        let ids = a.encode(text, false).unwrap().get_ids().to_vec();
        assert_eq!(a.decode(&ids, false).unwrap(), text);
        let seen = "Order #A-5 for Mira Kostova shipped on 5 March to Port Amsel.";
        assert!(a.encode(seen, false).unwrap().get_ids().len() < seen.len() / 2, "merges were learnt");
    }
}
