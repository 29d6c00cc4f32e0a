//! KD step cost (SPEC §14): tokens per second of distillation steps including the
//! teacher's forward pass, for an off-policy method (forward KL on the ground truth) and
//! an on-policy one (student samples), with the share of each phase — in particular the
//! KD plugin's call, which reads the logits in place and writes the gradient in place.
//! The plugins are the built ones, loaded by dlopen as in a real run.

use anyhow::{Context, Result};
use candle_core::Device;
use clap::Parser;
use kdharness::distill::{DistillConfig, distill};
use kdharness::model::{Model, ModelConfig, Shape};
use kdharness::plugins::{Registry, SearchDir, SearchOrigin};
use kdharness::train::{Example, TrainConfig};
use rand::{Rng, SeedableRng};

#[derive(Parser)]
struct Args {
    /// KD methods to time.
    #[arg(long, value_delimiter = ',', default_value = "kd,imitkd")]
    methods: Vec<String>,
    #[arg(long, default_value_t = 8)]
    batch: usize,
    #[arg(long, default_value_t = 128)]
    seq: usize,
    /// Optimiser steps to time.
    #[arg(long, default_value_t = 4)]
    steps: usize,
    /// Response tokens per sequence (ground truth, or the length of on-policy samples);
    /// the rest of the sequence is prompt.
    #[arg(long, default_value_t = 64)]
    sample_tokens: usize,
}

fn gpt2(layers: usize) -> Result<Model> {
    let spec = Shape {
        arch: "gpt2".into(),
        layers,
        d_model: 256,
        heads: 8,
        kv_heads: None,
        ffn: Some(1024),
        max_positions: 256,
        tie_embeddings: true,
    };
    Ok(Model::scratch(ModelConfig::scratch(&spec, 2048)?, layers as u64, &Device::Cpu)?)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let exe_dir = std::env::current_exe()?.parent().context("executable directory")?.to_path_buf();
    let registry = Registry::discover(vec![SearchDir { path: exe_dir, origin: SearchOrigin::ExecutableDir }]);
    let teacher = gpt2(6)?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let examples: Vec<Example> = (0..args.batch * args.steps)
        .map(|_| Example {
            ids: (0..args.seq).map(|_| rng.gen_range(1..2048)).collect(),
            prompt_len: args.seq - args.sample_tokens,
        })
        .collect();
    println!(
        "teacher gpt2 6 x 256 ({} weights), student gpt2 3 x 256, batch {} x {}, {} steps, on-policy samples of {} tokens",
        teacher.params.count(),
        args.batch,
        args.seq,
        args.steps,
        args.sample_tokens
    );
    println!("{:<10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10}", "method", "sampling", "forward", "plugin", "backward", "AdamW", "total s", "trained/s");
    for name in &args.methods {
        let loaded = registry.kd_method(name).with_context(|| format!("KD plugin `{name}` not found next to the benchmark"))?;
        let mut method = loaded.create(&[]).map_err(anyhow::Error::msg)?;
        let mut student = gpt2(3)?;
        let cfg = DistillConfig {
            train: TrainConfig { epochs: 1, lr: 1e-4, batch_size: args.batch, ..TrainConfig::default() },
            max_new_tokens: args.sample_tokens,
            ..DistillConfig::default()
        };
        let log = distill(&mut student, Some(&teacher), &mut method, name, &examples, &examples[..1], &cfg, 0, None, None)?;
        let t = log.timing;
        let share = |x: f64| format!("{:.1}%", 100.0 * x / t.total());
        println!(
            "{:<10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9.2} {:>10.0}",
            name,
            share(t.sampling),
            share(t.forward),
            share(t.plugin),
            share(t.backward),
            share(t.optimizer),
            t.total(),
            t.tokens as f64 / t.total()
        );
    }
    Ok(())
}
