//! Scoring throughput (SPEC §14): tokens per second of the signals attacks read
//! (log-probability of the target, mean and variance of log q, argmax — each over the
//! whole vocabulary), next to the bare ONNX Runtime forward pass on the same batch.
//! Run through `bench/run.sh`, which makes the model first.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Parser;
use kdharness::data::Encoded;
use kdharness::runtime::{CausalLm, LmBatch, PaddingSide, Runtime, SessionOptions};
use kdharness::score::{BatchSettings, ScoredSample, batch_signals, compute_signals};
use rand::{Rng, SeedableRng};

mod common;
use common::id_tokenizer;

#[derive(Parser)]
struct Args {
    /// An ONNX causal LM (optimum conventions).
    #[arg(long)]
    model: PathBuf,
    /// Sequences per batch.
    #[arg(long, default_value_t = 8, value_parser = at_least(1))]
    batch: usize,
    /// Tokens per sequence (one prompt token, the rest scored).
    #[arg(long, default_value_t = 128, value_parser = at_least(2))]
    seq: usize,
    /// Threads for ONNX Runtime and the signal reduction.
    #[arg(long, default_value_t = 2, value_parser = at_least(1))]
    threads: usize,
    /// Execution device (cuda needs onnxruntime-gpu).
    #[arg(long, value_enum, default_value_t = kdharness::runtime::Device::Cpu)]
    device: kdharness::runtime::Device,
    /// Timed repetitions of each measurement (after one warm-up).
    #[arg(long, default_value_t = 5, value_parser = at_least(1))]
    iters: usize,
}

/// A parser for counts of at least `min`.
fn at_least(min: usize) -> impl Fn(&str) -> Result<usize, String> + Clone {
    move |raw| match raw.parse::<usize>() {
        Ok(n) if n >= min => Ok(n),
        _ => Err(format!("expected a whole number of at least {min}, got `{raw}`")),
    }
}

/// Fastest of `iters` runs after one warm-up (the least disturbed by the rest of the
/// machine).
fn time(iters: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let mut best = f64::INFINITY;
    for _ in 0..iters {
        let started = Instant::now();
        f()?;
        best = best.min(started.elapsed().as_secs_f64());
    }
    Ok(best)
}

fn main() -> Result<()> {
    let args = Args::parse();
    rayon::ThreadPoolBuilder::new().num_threads(args.threads).build_global().ok();
    let runtime = Runtime::get(None)?;
    let options = SessionOptions { threads: args.threads, device: args.device };
    let mut lm = CausalLm::open(runtime, &args.model, options).context("opening the benchmark model")?;
    let vocab = lm.info().vocab.context("the model's logits must have a fixed vocabulary size")?;
    let tokenizer = id_tokenizer(vocab)?;

    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let sequences: Vec<Vec<u32>> =
        (0..args.batch).map(|_| (0..args.seq).map(|_| rng.gen_range(0..vocab as u32)).collect()).collect();
    // One prompt token, the rest scored: (seq − 1) signal positions per sequence.
    let records = common::records(args.batch);
    let samples: Vec<ScoredSample<'_>> = records
        .iter()
        .zip(&sequences)
        .map(|(record, seq)| ScoredSample {
            record,
            encoded: Encoded { prompt_ids: seq[..1].to_vec(), response_ids: seq[1..].to_vec() },
        })
        .collect();
    let batch = LmBatch::pad(sequences.iter().map(Vec::as_slice), PaddingSide::Right, 0);
    let settings = BatchSettings { batch_size: args.batch, padding: PaddingSide::Right };
    let tokens = (args.batch * args.seq) as f64;
    let scored = (args.batch * (args.seq - 1)) as f64;

    let forward = time(args.iters, || {
        lm.forward(&batch, |logits, _| std::hint::black_box(logits[0]))?;
        Ok(())
    })?;
    let scoring = time(args.iters, || {
        std::hint::black_box(compute_signals(&mut lm, &tokenizer, &samples, settings, &mut |_| {})?);
        Ok(())
    })?;
    // The signal reduction alone, on a copy of one batch's logits: free of the forward
    // pass's run-to-run noise.
    let (logits, vocab) = lm.forward(&batch, |logits, vocab| (logits.to_vec(), vocab))?;
    let rows: Vec<&ScoredSample<'_>> = samples.iter().collect();
    let signals = time(args.iters, || {
        for result in batch_signals(&rows, &batch, &logits, vocab, &args.model) {
            std::hint::black_box(result?);
        }
        Ok(())
    })?;

    println!("model: {} (vocab {vocab})", args.model.display());
    println!("batch: {} x {} tokens, {} threads, best of {} runs", args.batch, args.seq, args.threads, args.iters);
    println!("{:<44} {:>10} {:>12}", "measurement", "seconds", "tokens/s");
    println!("{:<44} {:>10.3} {:>12.1}", "ONNX Runtime forward pass (bare)", forward, tokens / forward);
    println!("{:<44} {:>10.3} {:>12.1}", "kdharness scoring (forward + signals)", scoring, tokens / scoring);
    println!("{:<44} {:>10.3} {:>12.1}", "signals alone (log-prob, mean, var, argmax)", signals, scored / signals);
    println!("signal computation on top of the forward pass: {:+.1}% (target ≤ 10%)", 100.0 * signals / forward);
    println!("end-to-end scoring vs the bare forward pass: {:+.1}% (includes run-to-run noise)", 100.0 * (scoring / forward - 1.0));
    Ok(())
}
