//! Pieces the benchmark binaries share (each binary uses some of them).
#![allow(dead_code)]

use anyhow::Result;

/// A tokenizer whose vocabulary covers every id, so argmax ids decode like a real one.
pub fn id_tokenizer(vocab: usize) -> Result<tokenizers::Tokenizer> {
    let words = (0..vocab).map(|i| (format!("t{i} "), i as u32)).collect();
    let model = tokenizers::models::wordlevel::WordLevel::builder()
        .vocab(words)
        .unk_token("t0 ".into())
        .build()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(tokenizers::Tokenizer::new(model))
}

/// `n` empty records (the benchmarks feed token ids directly; records only name samples).
pub fn records(n: usize) -> Vec<kdharness::data::Record> {
    (0..n)
        .map(|i| kdharness::data::Record {
            id: format!("b{i}"),
            instruction: String::new(),
            context: String::new(),
            response: String::new(),
            category: "bench".into(),
            origin: kdharness::data::Origin { file: "bench".into(), line: i + 1 },
        })
        .collect()
}

/// SmolLM2-135M's vocabulary.
pub const SMOLLM2_VOCAB: usize = 49152;

/// SmolLM2-135M's shape (width 576, 9 heads over 3 key/value heads, MLP 1536, tied head)
/// with `layers` blocks (30 is the whole model).
pub fn smollm2_shape(layers: usize) -> kdharness::model::Shape {
    kdharness::model::Shape {
        arch: "llama".into(),
        layers,
        d_model: 576,
        heads: 9,
        kv_heads: Some(3),
        ffn: Some(1536),
        max_positions: 8192,
        tie_embeddings: true,
    }
}
