#!/usr/bin/env bash
# Benchmarks (SPEC §14), all at batch 8 x 128 with 2 threads unless told otherwise:
#   1. training steps (forward + backward + AdamW) of the engine for three shapes: the 5.3M-
#      weight GPT-2 shape, a SmolLM2-shaped 4-block student and all of SmolLM2-135M; beside
#      each, PyTorch eager (fp32 and bf16 autocast, same shapes) when `$PYTHON -c "import
#      torch, transformers"` works (PYTHON defaults to python3; point it at a venv);
#   2. KD steps on a SmolLM2-shaped teacher and student (kd and minillm) with the share of
#      each phase: forward, backward, AdamW, teacher, sampling, plugin;
#   3. the quickstart's wall time (`kdharness eval`, the embedded default);
#   4. greedy generation through ONNX Runtime with and without the KV cache, one per-block
#      perturbation sweep, and scoring the real SmolLM2-135M-Instruct (fetched from PyPI
#      and exported by kdharness) against the bare forward pass.
#   bench/run.sh [--batch 8] [--seq 128] [--threads 2] [--iters 3]   (options go to scoring)
#   BENCH_SKIP=quickstart,scoring bench/run.sh   skips parts (training, kd, quickstart, scoring)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
skip() { [[ ",${BENCH_SKIP:-}," == *",$1,"* ]]; }
cargo build --release --quiet --workspace
torch=0
if "$PYTHON" -c "import torch, transformers" 2>/dev/null; then torch=1; fi

if ! skip training; then
  echo "== training tok/s (forward + backward + AdamW), batch 8 x 128, 2 threads =="
  [ "$torch" = 1 ] || echo "(PyTorch baseline skipped: \`$PYTHON -c \"import torch, transformers\"\` fails)"
  for shape in "gpt2-5m 7" "smollm2-student 4 3" "smollm2-student 30 2"; do
    set -- $shape
    if [ "$1" = gpt2-5m ]; then
      echo "-- GPT-2 6 x 256, vocab 2048 (5.3M)"
      target/release/kdharness-bench-train --shape gpt2-5m --steps "$2"
      [ "$torch" = 1 ] && "$PYTHON" bench/torch_train.py --shape gpt2-5m --steps "$2"
    else
      echo "-- SmolLM2 width, $2 blocks"
      target/release/kdharness-bench-train --shape smollm2-student --layers "$2" --steps "$3"
      [ "$torch" = 1 ] && "$PYTHON" bench/torch_train.py --shape smollm2-student --layers "$2" --steps "$3"
    fi
  done
fi

if ! skip kd; then
  echo "== KD steps (SmolLM2-shaped teacher 8 blocks, student 4 blocks; plugins by dlopen) =="
  target/release/kdharness-bench-kd
fi

if ! skip quickstart; then
  echo "== quickstart (kdharness eval, the embedded default) =="
  out=$(mktemp -d)
  start=$(date +%s.%N)
  target/release/kdharness eval --out "$out/run" -q
  end=$(date +%s.%N)
  awk -v s="$start" -v e="$end" 'BEGIN { t = e - s; printf "quickstart wall time: %d:%04.1f (%.1f s)\n", t / 60, t - 60 * int(t / 60), t }'
  rm -rf "$out"
fi

if ! skip scoring; then
  model=target/bench/smollm2-135m.onnx
  if [ ! -f "$model" ]; then
    mkdir -p target/bench
    dir=$(target/release/kdharness model fetch smollm2-135m)
    target/release/kdharness model export --from "$dir" --to "$model"
  fi
  echo "== greedy generation (KV cache vs recomputation) and one per-block sweep =="
  target/release/kdharness-bench-generate --smollm2 "$model"
  echo "== scoring (ONNX Runtime) =="
  target/release/kdharness-bench --model "$model" "$@"
fi
