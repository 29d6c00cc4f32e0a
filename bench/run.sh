#!/usr/bin/env bash
# Benchmarks (SPEC §14), all at batch 8 x 128 with 2 threads unless told otherwise:
#   1. training steps of the candle engine (forward + backward + AdamW): the 5.3M-weight
#      GPT-2 shape and a SmolLM2-shaped 4-block student;
#   2. KD steps with the teacher's forward pass, for forward KL and an on-policy method,
#      with the share of the KD plugin's call;
#   3. greedy generation through ONNX Runtime with and without the KV cache, and one
#      per-block perturbation sweep on a quickstart-sized teacher;
#   4. scoring through ONNX Runtime: the real SmolLM2-135M-Instruct, fetched from PyPI and
#      exported by kdharness (signals vs the bare forward pass).
#   bench/run.sh [--batch 8] [--seq 128] [--threads 2] [--iters 3]   (options go to scoring)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p kdharness -p kdharness-bench
echo "== training (candle, forward + backward + AdamW) =="
target/release/kdharness-bench-train --shape gpt2-5m --steps 7
target/release/kdharness-bench-train --shape smollm2-student --layers 4 --steps 3
echo "== KD steps (teacher logits + plugin + backward), plugins loaded by dlopen =="
cargo build --release --quiet --workspace
target/release/kdharness-bench-kd
echo "== scoring (ONNX Runtime) =="
model=target/bench/smollm2-135m.onnx
if [ ! -f "$model" ]; then
  mkdir -p target/bench
  dir=$(target/release/kdharness model fetch smollm2-135m)
  target/release/kdharness model export --from "$dir" --to "$model"
fi
echo "== greedy generation (KV cache vs recomputation) and one per-block sweep =="
target/release/kdharness-bench-generate --smollm2 "$model"
exec target/release/kdharness-bench --model "$model" "$@"
