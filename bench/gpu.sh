#!/usr/bin/env bash
# The GPU build, check and benchmark (SPEC §6, §14), for a Linux machine with an NVIDIA GPU
# and its driver. Nothing here needs a system CUDA toolkit: nvcc, the CUDA runtime, cuBLAS
# and cuRAND come from PyPI wheels into a venv, which also gets onnxruntime-gpu and torch.
#   1. builds kdharness with `--features cuda` (candle's CUDA kernels compiled by that nvcc);
#   2. checks one training step's gradients on CUDA against the engine on the CPU for the
#      tiny llama, llama-tied, gpt2 and opt fixtures (at most 1e-3 relative per weight);
#   3. prints SmolLM2-135M-shaped training tokens/s on the GPU beside PyTorch eager (fp32 and
#      bf16 autocast) on the same GPU, and scoring tokens/s of the real SmolLM2-135M-Instruct
#      through ONNX Runtime's CUDA execution provider.
#   bench/gpu.sh            (VENV=path to reuse a venv; default target/gpu-venv)
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${VENV:-target/gpu-venv}
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q \
  "nvidia-cuda-nvcc-cu12" "nvidia-cuda-runtime-cu12" "nvidia-cublas-cu12" "nvidia-curand-cu12" \
  "onnxruntime-gpu[cuda,cudnn]==1.31.1" "torch==2.9.1" "transformers==4.57.6"
nvidia=$("$venv/bin/python" -c 'import nvidia, os; print(os.path.dirname(nvidia.__path__[0] + "/x"))')

# One CUDA root made of the wheels' pieces, where candle's build looks for nvcc and headers.
root=target/gpu-cuda-root
rm -rf "$root" && mkdir -p "$root/bin" "$root/include" "$root/lib64"
ln -sf "$(realpath "$nvidia/cuda_nvcc/bin")"/* "$root/bin/"
for part in "$nvidia"/*/; do
  [ -d "$part/include" ] && cp -rs "$(realpath "$part/include")"/. "$root/include/" 2>/dev/null || true
  [ -d "$part/lib" ] && ln -sf "$(realpath "$part/lib")"/* "$root/lib64/" 2>/dev/null || true
done
root=$(realpath "$root")
export CUDA_ROOT="$root" CUDA_PATH="$root" CUDA_TOOLKIT_ROOT_DIR="$root" PATH="$root/bin:$PATH"
export LD_LIBRARY_PATH="$root/lib64:${LD_LIBRARY_PATH:-}"
# The onnxruntime-gpu wheel's library (its CUDA provider finds cuDNN and CUDA beside it).
export ORT_DYLIB_PATH=$("$venv/bin/python" -c 'import onnxruntime, os, glob; print(glob.glob(os.path.join(os.path.dirname(onnxruntime.__file__), "capi", "libonnxruntime.so*"))[0])')
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

echo "== build (--features cuda, nvcc $(nvcc --version | tail -1)) =="
cargo build --release --features cuda -p kdharness -p kdharness-bench

echo "== gradients on CUDA vs the engine on the CPU; SmolLM2-135M training on CUDA =="
target/release/kdharness-bench-gpu
echo "-- PyTorch eager on the same GPU"
"$venv/bin/python" bench/torch_train.py --shape smollm2-student --layers 30 --steps 3 --device cuda

echo "== scoring SmolLM2-135M-Instruct through ONNX Runtime (CUDA execution provider) =="
model=target/bench/smollm2-135m.onnx
if [ ! -f "$model" ]; then
  mkdir -p target/bench
  dir=$(target/release/kdharness model fetch smollm2-135m)
  target/release/kdharness model export --from "$dir" --to "$model"
fi
target/release/kdharness-bench --model "$model" --device cuda --batch 32 --seq 256
