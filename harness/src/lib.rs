//! `kdharness`: measures how much of a teacher LLM's private fine-tuning data leaks into
//! students made by knowledge distillation.
//!
//! One module per pipeline stage, in the order data flows:
//! - [`data`]: Dolly-schema JSON Lines, prompt templates, sample ids, tokenization.
//! - [`model`]: the candle training engine's llama / gpt2 / opt decoders (Hugging Face layout).
//! - [`export`]: trained models to ONNX (optimum conventions, Hugging Face initializer names).
//! - [`runtime`]: ONNX Runtime — finding the library, opening causal LMs, forward passes.
//! - [`score`]: per-sample signals (log-probabilities and distribution statistics of the
//!   response tokens), computed once per (model, sample set) and cached.
//! - [`plugins`]: discovery and loading of attack plugins through `kdharness-plugin-api`.
//! - [`attack`]: runs attack plugins over signals and validates what they return.
//! - [`metrics`]: AUC, TPR at low FPR, balanced accuracy, bootstrap intervals.
//! - [`memorize`]: greedy extraction of responses, member vs non-member rates, teacher overlap.
//! - [`utility`]: ROUGE-L of generations against references.
//! - [`blocks`]: MoPe and per-block perturbation risk (weights perturbed per transformer block).
//! - [`report`]: `scores.csv`, `summary.csv`, `manifest.json`.
//! - [`distill`]: the KD loop: one student from one teacher by one KD-method plugin.
//! - [`train`]: supervised fine-tuning (AdamW, cosine decay, clipping) of candle models.
//! - [`config`] and [`eval`]: experiment configs and the resumable `kdharness eval` pipeline.
//! - [`cli`]: the `kdharness` command line.
//!
//! What it is not: attack formulas live in the plugins under `plugins/`, never here.

#![warn(missing_docs)]

pub mod attack;
pub mod blocks;
pub mod config;
pub mod cli;
pub mod data;
pub mod distill;
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
pub mod suggest;
pub mod train;
pub mod utility;
