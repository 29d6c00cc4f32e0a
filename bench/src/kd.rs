//! KD step cost (SPEC §14): tokens per second of distillation steps on a SmolLM2-shaped
//! teacher and student (SmolLM2-135M's width and vocabulary), for an off-policy method
//! (forward KL on the ground truth) and an on-policy one (MiniLLM: student samples mixed
//! with the teacher), with the share of each phase: the student's forward and backward
//! passes (the engine), AdamW, the teacher's forward passes and sampling (ONNX Runtime
//! with the KV cache, as in a run), and the KD plugin's call. The plugins are the built
//! ones, loaded by dlopen as in a real run.

use anyhow::{Context, Result};
use candle_core::Device;
use clap::Parser;
use kdharness::distill::{DistillConfig, Inference, StepTiming, distill};
use kdharness::runtime::{Runtime, SessionOptions};
use kdharness::model::{Model, ModelConfig};
use kdharness::plugins::{Registry, SearchDir, SearchOrigin};
use kdharness::train::{Example, TrainConfig};
use rand::{Rng, SeedableRng};

#[derive(Parser)]
struct Args {
    /// KD methods to time.
    #[arg(long, value_delimiter = ',', default_value = "kd,minillm")]
    methods: Vec<String>,
    /// Blocks of the teacher.
    #[arg(long, default_value_t = 8)]
    teacher_layers: usize,
    /// Blocks of the student.
    #[arg(long, default_value_t = 4)]
    student_layers: usize,
    /// Threads (ONNX Runtime and the engine's pool).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    #[arg(long, default_value_t = 8)]
    batch: usize,
    #[arg(long, default_value_t = 128)]
    seq: usize,
    /// Optimiser steps to time (after one warm-up step).
    #[arg(long, default_value_t = 3)]
    steps: usize,
    /// Response tokens per sequence (ground truth, or the length of on-policy samples);
    /// the rest of the sequence is prompt.
    #[arg(long, default_value_t = 32)]
    sample_tokens: usize,
}

mod common;
use common::{SMOLLM2_VOCAB as VOCAB, smollm2_shape};

fn smollm2(layers: usize) -> Result<Model> {
    Ok(Model::scratch(ModelConfig::scratch(&smollm2_shape(layers), VOCAB)?, layers as u64, &Device::Cpu)?)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let exe_dir = std::env::current_exe()?.parent().context("executable directory")?.to_path_buf();
    let registry = Registry::discover(vec![SearchDir { path: exe_dir, origin: SearchOrigin::ExecutableDir }]);
    // SAFETY: no other thread runs yet. The plugins' own rayon pools read it.
    unsafe { std::env::set_var("RAYON_NUM_THREADS", args.threads.to_string()) };
    rayon::ThreadPoolBuilder::new().num_threads(args.threads).build_global()?;
    let runtime = Runtime::get(None)?;
    let inference = Inference::Ort(runtime, SessionOptions { threads: args.threads, ..Default::default() });
    let teacher = smollm2(args.teacher_layers)?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let examples: Vec<Example> = (0..args.batch * (args.steps + 1))
        .map(|_| Example {
            ids: (0..args.seq).map(|_| rng.gen_range(1..VOCAB as u32)).collect(),
            prompt_len: args.seq - args.sample_tokens,
        })
        .collect();
    println!(
        "teacher SmolLM2-shaped {} blocks ({} weights), student {} blocks, batch {} x {}, {} steps, on-policy samples of {} tokens",
        args.teacher_layers,
        teacher.params.count(),
        args.student_layers,
        args.batch,
        args.seq,
        args.steps,
        args.sample_tokens
    );
    println!(
        "{:<10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10}",
        "method", "forward", "backward", "AdamW", "teacher", "sampling", "plugin", "total s", "trained/s"
    );
    for name in &args.methods {
        let loaded = registry.kd_method(name).with_context(|| format!("KD plugin `{name}` not found next to the benchmark"))?;
        let cfg = DistillConfig {
            train: TrainConfig { epochs: 1, lr: 1e-4, batch_size: args.batch, ..TrainConfig::default() },
            max_new_tokens: args.sample_tokens,
            ..DistillConfig::default()
        };
        // The first step pays one-off costs (page faults of fresh gradients and optimiser
        // state, first calls into the plugin and the sessions): time it in a run of its
        // own and subtract, as the training benchmark leaves its warm-up step untimed.
        let timing = |examples: &[Example]| -> Result<StepTiming> {
            let mut student = smollm2(args.student_layers)?;
            let mut method = loaded.create(&[]).map_err(anyhow::Error::msg)?;
            Ok(distill(&mut student, Some(&teacher), &mut method, name, examples, &examples[..1], &cfg, 0, inference, None, None, None)?.timing)
        };
        let t = timing(&examples)?.minus(&timing(&examples[..args.batch])?);
        let share = |x: f64| format!("{:.1}%", 100.0 * x / t.total());
        println!(
            "{:<10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9.2} {:>10.0}",
            name,
            share(t.forward),
            share(t.backward),
            share(t.optimizer),
            share(t.teacher),
            share(t.sampling),
            share(t.plugin),
            t.total(),
            t.tokens as f64 / t.total()
        );
    }
    Ok(())
}
