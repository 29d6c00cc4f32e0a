#!/usr/bin/env bash
# Scoring throughput benchmark (SPEC §14): signals over a batch vs the bare ONNX Runtime
# forward pass, on a model with SmolLM2-135M's shape and random weights.
#   bench/run.sh [--batch 8] [--seq 128] [--threads 2] [--iters 3]
set -euo pipefail
cd "$(dirname "$0")/.."
model=target/bench/smollm2-135m-shape.onnx
if [ ! -f "$model" ]; then
  python3 -c "import onnx, numpy, tokenizers" 2>/dev/null \
    || python3 -m pip install --quiet "onnx==1.17.0" numpy tokenizers
  python3 bench/make_model.py "$model"
fi
cargo build --release --quiet -p kdharness-bench
exec target/release/kdharness-bench --model "$model" "$@"
