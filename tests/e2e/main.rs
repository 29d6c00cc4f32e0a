//! End-to-end tests: the real `kdharness` binary, real plugin libraries loaded with
//! dlopen, the real ONNX Runtime, and small real models from `tests/fixtures` (made by
//! `tests/fixtures/make_fixtures.py`, which also computed the reference values
//! independently with numpy).
//!
//! Plugins must be built first: `cargo build --workspace` (the README's test command does).

mod common;

mod bad_input;
mod batching;
mod blocks;
mod cache;
mod cells;
mod data;
mod defenses;
mod distill;
mod engine;
mod doctor;
mod eval;
mod learning;
mod export;
mod faults;
mod memorize;
mod metrics;
mod models;
mod optimum;
mod plugins;
mod real_tokenizer;
mod reference;
mod seeds;
mod report;
mod slurm;
mod smollm2;
mod training;
