//! Generation and per-block sweep cost (SPEC §14): greedy decoding through ONNX Runtime
//! with the KV cache against recomputing the whole sequence each step, and the time of one
//! per-block perturbation sweep (every block, `n` noise draws, all samples scored) on a
//! quickstart-sized teacher.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use candle_core::Device;
use clap::Parser;
use kdharness::blocks::{OnnxWeights, Scope, open_perturbed, perturbed};
use kdharness::data::Encoded;
use kdharness::model::{Model, ModelConfig, Shape};
use kdharness::runtime::generate::{GreedyConfig, greedy};
use kdharness::runtime::{CausalLm, Runtime, SessionOptions};
use kdharness::score::{BatchSettings, ScoredSample, compute_signals};
use rand::{Rng, SeedableRng};

mod common;
use common::id_tokenizer;

#[derive(Parser)]
struct Args {
    /// Also time SmolLM2-135M's generation (needs the export bench/run.sh makes).
    #[arg(long)]
    smollm2: Option<PathBuf>,
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Noise draws per block in the sweep.
    #[arg(long, default_value_t = 10)]
    draws: usize,
}

fn time_generation(lm: &mut CausalLm, prompts: &[Vec<u32>], new_tokens: usize, use_cache: bool) -> Result<f64> {
    let cfg = GreedyConfig { max_new_tokens: new_tokens, eos: None, no_repeat_ngram: 0, use_cache };
    greedy(lm, &prompts[..1], &GreedyConfig { max_new_tokens: 2, ..cfg })?;
    let started = Instant::now();
    let out = greedy(lm, prompts, &cfg)?;
    let tokens: usize = out.iter().map(Vec::len).sum();
    Ok(tokens as f64 / started.elapsed().as_secs_f64())
}

fn main() -> Result<()> {
    let args = Args::parse();
    let runtime = Runtime::get(None)?;
    let options = SessionOptions { threads: args.threads, ..Default::default() };
    // The quickstart teacher's shape: llama, 4 blocks of width 128, vocabulary 2048.
    let spec = Shape {
        arch: "llama".into(),
        layers: 4,
        d_model: 128,
        heads: 4,
        kv_heads: Some(2),
        ffn: Some(344),
        max_positions: 512,
        tie_embeddings: true,
    };
    let teacher = Model::scratch(ModelConfig::scratch(&spec, 2048)?, 0, &Device::Cpu)?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("teacher.onnx");
    kdharness::export::export(&teacher, &path)?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let prompts: Vec<Vec<u32>> = (0..8).map(|_| (0..32).map(|_| rng.gen_range(1..2048)).collect()).collect();

    println!("greedy decoding, 8 prompts of 32 tokens, {} threads (new tokens per second)", args.threads);
    let mut lm = CausalLm::open(runtime, &path, options)?;
    let (with, without) = (time_generation(&mut lm, &prompts, 64, true)?, time_generation(&mut lm, &prompts, 64, false)?);
    println!("  quickstart teacher ({} weights), 64 new tokens: KV cache {with:.0} tok/s, recomputing {without:.0} tok/s ({:.1}x)", teacher.params.count(), with / without);
    if let Some(smollm2) = &args.smollm2 {
        let mut lm = CausalLm::open(runtime, smollm2, options)?;
        let prompts: Vec<Vec<u32>> = prompts.iter().map(|p| p.iter().map(|t| t * 20).collect()).collect();
        let (with, without) = (time_generation(&mut lm, &prompts, 32, true)?, time_generation(&mut lm, &prompts, 32, false)?);
        println!("  SmolLM2-135M, 32 new tokens: KV cache {with:.0} tok/s, recomputing {without:.0} tok/s ({:.1}x)", with / without);
    }

    // One per-block sweep: 100 members + 100 non-members of 16 + 48 tokens.
    let records = common::records(200);
    let samples: Vec<ScoredSample<'_>> = records
        .iter()
        .map(|record| ScoredSample {
            record,
            encoded: Encoded {
                prompt_ids: (0..16).map(|_| rng.gen_range(1..2048)).collect(),
                response_ids: (0..48).map(|_| rng.gen_range(1..2048)).collect(),
            },
        })
        .collect();
    let tokenizer = id_tokenizer(2048)?;
    let weights = OnnxWeights::read(&path)?;
    let blocks = weights.blocks()?;
    let started = Instant::now();
    for &block in blocks.keys() {
        for draw in 0..args.draws {
            let overrides = perturbed(&weights, Some(&blocks), Scope::Block(block), 0.01, 0, draw);
            let mut lm = open_perturbed(runtime, &path, options, overrides)?;
            compute_signals(&mut lm, &tokenizer, &samples, BatchSettings::default(), &mut |_| {})?;
        }
    }
    let sweep = started.elapsed().as_secs_f64();
    let passes = blocks.len() * args.draws;
    println!(
        "per-block sweep on the quickstart teacher: {} blocks x {} draws x 200 samples of 64 tokens = {passes} scoring passes in {sweep:.1} s ({:.2} s per pass, {:.0} tok/s)",
        blocks.len(),
        args.draws,
        sweep / passes as f64,
        (passes * 200 * 64) as f64 / sweep
    );
    Ok(())
}
