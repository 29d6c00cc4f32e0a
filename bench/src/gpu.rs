//! The GPU check of bench/gpu.sh (build with `--features cuda`): one training step's
//! gradients on CUDA (candle's autograd over the composite ops) against the engine's on the
//! CPU for the tiny llama, gpt2 and opt fixtures (at most 1e-3 relative per weight), then
//! SmolLM2-135M-shaped training tokens/s on the GPU (batch 8 × 128, AdamW on fp32 weights), in
//! fp32 and in mixed precision (`precision = "bf16"`: bf16 products, fp32 master weights).

use std::path::Path;
use std::time::Instant;

use anyhow::{Result, ensure};
use candle_core::Device;
use kdharness::engine::Engine;
use kdharness::model::{Model, ModelConfig, training_device};
use kdharness::train::{Example, Passes, Precision, batch_loss, batch_rows};
use rand::{Rng, SeedableRng};

mod common;
use common::{SMOLLM2_VOCAB, smollm2_shape};

fn main() -> Result<()> {
    let cuda = training_device(kdharness::runtime::Device::Cuda)?;
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/hf");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    for name in ["llama", "llama-tied", "gpt2", "opt"] {
        let cpu = Model::load(&fixtures.join(name), &Device::Cpu)?;
        let examples: Vec<Example> =
            (0..3).map(|i| Example { ids: (0..7 + 3 * i).map(|_| rng.gen_range(1..300)).collect(), prompt_len: 2 }).collect();
        let batch: Vec<&Example> = examples.iter().collect();
        let mut engine = Engine::new(&cpu).map_err(anyhow::Error::msg)?;
        let (rows, targets) = batch_rows(&batch);
        engine.forward(&rows, 0);
        engine.cross_entropy(&targets.rows, &targets.ids, true);
        let gpu = cpu.to_device(&cuda)?;
        let (loss, _) = batch_loss(&gpu, &batch)?;
        let grads = loss.backward()?;
        let mut worst = 0f64;
        for (param, var) in gpu.params.iter() {
            let got = grads.get(var.as_tensor()).expect("every weight gets a gradient").flatten_all()?.to_vec1::<f32>()?;
            let want = engine.grad(param).expect("same weights");
            let diff = got.iter().zip(want).map(|(a, b)| (a - b).abs() as f64).fold(0.0, f64::max);
            let scale = want.iter().map(|b| b.abs() as f64).fold(0.0, f64::max).max(1e-6);
            worst = worst.max(diff / scale);
        }
        println!("{name}: CUDA gradients vs the CPU engine: worst relative difference {worst:.2e}");
        ensure!(worst <= 1e-3, "{name}: CUDA and CPU gradients differ by {worst:.2e} (relative)");
    }
    let model = Model::scratch(ModelConfig::scratch(&smollm2_shape(30), SMOLLM2_VOCAB)?, 0, &Device::Cpu)?.to_device(&cuda)?;
    let examples: Vec<Example> = (0..8).map(|_| Example { ids: (0..128).map(|_| rng.gen_range(0..SMOLLM2_VOCAB as u32)).collect(), prompt_len: 1 }).collect();
    let batch: Vec<&Example> = examples.iter().collect();
    let (rows, targets) = batch_rows(&batch);
    for precision in [Precision::F32, Precision::Bf16] {
        let mut passes = Passes::with_precision(&model, precision);
        let mut times = Vec::new();
        for step in 0..4 {
            let started = Instant::now();
            passes.cross_entropy(&model, &rows, &targets.rows, &targets.ids, true)?;
            passes.step(&model, 0.01, 1e-4, 1.0)?;
            cuda.synchronize()?;
            if step > 0 {
                times.push(started.elapsed().as_secs_f64());
            }
        }
        times.sort_by(f64::total_cmp);
        let label = if precision == Precision::F32 { "fp32" } else { "bf16 products, fp32 master weights" };
        println!("SmolLM2-135M training on CUDA ({label}): {:.0} tokens/s (median of 3 steps, batch 8 x 128)", 1024.0 / times[1]);
    }
    Ok(())
}
