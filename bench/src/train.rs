//! Training throughput (SPEC §14): tokens per second of one optimiser step (forward,
//! backward, AdamW) of the training engine at batch 8 × 128, split into its
//! phases, for the 5.3M-parameter GPT-2 shape and a SmolLM2-shaped student.

use std::time::Instant;

use anyhow::Result;
use candle_core::Device;
use clap::Parser;
use kdharness::model::{Model, ModelConfig, Shape};
use kdharness::train::{Example, Passes, Precision, batch_rows};
use rand::{Rng, SeedableRng};

mod common;
use common::{SMOLLM2_VOCAB, smollm2_shape};

#[derive(Parser)]
struct Args {
    /// Which shape: `gpt2-5m` (6 × 256, vocab 2048: 5.3M weights) or `smollm2-student`
    /// (SmolLM2-135M's width and vocabulary, `--layers` blocks).
    #[arg(long, default_value = "gpt2-5m")]
    shape: String,
    /// Blocks of the SmolLM2-shaped student.
    #[arg(long, default_value_t = 4)]
    layers: usize,
    #[arg(long, default_value_t = 8)]
    batch: usize,
    #[arg(long, default_value_t = 128)]
    seq: usize,
    /// Timed steps (after one warm-up step).
    #[arg(long, default_value_t = 5)]
    steps: usize,
    /// `f32` (the engine) or `bf16` (mixed precision through candle's autograd, f32
    /// master weights: what a GPU run uses, timed here on the CPU for comparison).
    #[arg(long, default_value = "f32")]
    precision: String,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let (spec, vocab) = match args.shape.as_str() {
        "gpt2-5m" => (Shape {
            arch: "gpt2".into(),
            layers: 6,
            d_model: 256,
            heads: 8,
            kv_heads: None,
            ffn: Some(1024),
            max_positions: args.seq,
            tie_embeddings: true,
        }, 2048),
        "smollm2-student" => (smollm2_shape(args.layers), SMOLLM2_VOCAB),
        other => anyhow::bail!("unknown shape `{other}` (gpt2-5m, smollm2-student)"),
    };
    let model = Model::scratch(ModelConfig::scratch(&spec, vocab)?, 0, &Device::Cpu)?;
    let vocab = model.config.vocab_size as u32;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    // One prompt token; every other position is trained on.
    let examples: Vec<Example> = (0..args.batch)
        .map(|_| Example { ids: (0..args.seq).map(|_| rng.gen_range(0..vocab)).collect(), prompt_len: 1 })
        .collect();
    let batch: Vec<&Example> = examples.iter().collect();
    let precision = match args.precision.as_str() {
        "f32" => Precision::F32,
        "bf16" => Precision::Bf16,
        other => anyhow::bail!("unknown precision `{other}` (f32, bf16)"),
    };
    let mut passes = Passes::with_precision(&model, precision);
    anyhow::ensure!(passes.uses_engine() || precision == Precision::Bf16, "the engine does not run this shape");
    let (rows, targets) = batch_rows(&batch);
    let (mut fwd, mut bwd, mut upd) = (Vec::new(), Vec::new(), Vec::new());
    let (mut cpu_start, mut wall_start) = (cpu_seconds(), Instant::now());
    for step in 0..=args.steps {
        if step == 1 {
            // The warm-up step is not timed.
            (cpu_start, wall_start) = (cpu_seconds(), Instant::now());
        }
        // Forward = the blocks and the head's logits; backward = the loss's gradient from
        // the logits back to every weight.
        let t0 = Instant::now();
        let logits = passes.logits(&model, &rows, &targets.rows)?;
        let t1 = Instant::now();
        let mut grad = logits;
        let n = targets.count();
        // The loss's gradient in the logits (the head's fused cross-entropy, on the host).
        kdharness::engine::head::cross_entropy(&mut grad, model.config.vocab_size, &targets.ids, Some(1.0 / n as f32));
        passes.backward_logits(&model, &grad)?;
        let t2 = Instant::now();
        passes.step(&model, 0.01, 1e-4, 1.0)?;
        let t3 = Instant::now();
        if step > 0 {
            fwd.push((t1 - t0).as_secs_f64());
            bwd.push((t2 - t1).as_secs_f64());
            upd.push((t3 - t2).as_secs_f64());
        }
    }
    let busy = (cpu_seconds() - cpu_start) / wall_start.elapsed().as_secs_f64();
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (f, b, u) = (median(&mut fwd), median(&mut bwd), median(&mut upd));
    let total = f + b + u;
    let tokens = (args.batch * args.seq) as f64;
    println!(
        "shape {} ({} weights), {}, batch {} x {}, median of {} steps",
        args.shape,
        model.params.count(),
        args.precision,
        args.batch,
        args.seq,
        args.steps
    );
    println!("forward  {:>8.3} s  ({:>4.1}%)", f, 100.0 * f / total);
    println!("backward {:>8.3} s  ({:>4.1}%)", b, 100.0 * b / total);
    println!("AdamW    {:>8.3} s  ({:>4.1}%)", u, 100.0 * u / total);
    println!("cores busy {busy:.2} of {} on average (CPU time / wall time)", rayon::current_num_threads());
    println!("training throughput: {:.0} tokens/s", tokens / total);
    Ok(())
}

/// CPU seconds (user + system) this process has used.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}
