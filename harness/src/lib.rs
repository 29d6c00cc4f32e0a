//! `kdharness`: measures how much of a teacher LLM's private fine-tuning data leaks into
//! students made by knowledge distillation.
//!
//! The library is the product; the `kdharness` binary ([`cli`]) only parses arguments into
//! the typed requests of the stage functions below and prints. `docs/architecture.md`
//! draws the layers. One module per pipeline stage, in the order data flows:
//! - [`data`]: Dolly-schema JSON Lines, prompt templates, sample ids, tokenization, and the
//!   data stage ([`data::prepare`]).
//! - [`model`]: the candle training engine's llama / gpt2 / opt decoders (Hugging Face
//!   layout), one file per architecture with its config parsing, forward and ONNX layers.
//! - [`train`] and [`distill`]: supervised fine-tuning and the KD loop.
//! - [`export`] (with [`onnx`]): trained models to ONNX (optimum conventions).
//! - [`runtime`]: ONNX Runtime — finding the library, opening causal LMs, forward passes.
//! - [`score`]: per-sample signals of a model over records, computed once and cached.
//! - [`blocks`]: an export's weights by transformer block, and their perturbations.
//! - [`plugins`]: discovery and loading of plugins, and their parameters.
//! - [`attack`]: attack plugins over signals, the attack stage and the per-block sweep.
//! - [`memorize`] and [`utility`]: greedy extraction, ROUGE-L, the memorization stage.
//! - [`metrics`]: AUC, TPR at low FPR, bootstrap intervals, tests, memorization rates.
//! - [`report`] and [`manifest`]: the output tables, figures, HTML, and how they were made.
//! - [`config`] and [`eval`]: experiment configs and the resumable `kdharness eval` pipeline.
//! - [`files`], [`rng`], [`status`], [`suggest`]: hashes and atomic writes, seeds, status
//!   and progress, "did you mean".
//!
//! What it is not: attack formulas live in the plugins under `plugins/`, never here.

#![warn(missing_docs)]

pub mod attack;
pub mod blocks;
pub mod config;
pub mod cli;
pub mod data;
pub mod distill;
pub mod engine;
pub mod eval;
pub mod export;
pub mod files;
pub mod manifest;
pub mod memorize;
pub mod metrics;
pub mod model;
pub mod onnx;
pub mod plugins;
pub mod report;
pub mod rng;
pub mod runtime;
pub mod score;
pub mod status;
pub mod stop;
pub mod suggest;
pub mod train;
pub mod utility;
