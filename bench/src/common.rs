//! Pieces the benchmark binaries share.

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
