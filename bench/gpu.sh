#!/usr/bin/env bash
# The GPU build, check and benchmark (SPEC §6, §14), for a Linux machine with an NVIDIA GPU
# and its driver. Nothing here needs a system CUDA toolkit: nvcc, the CUDA runtime, cuBLAS
# and cuRAND come from PyPI wheels (CUDA 13) into a venv, which also gets onnxruntime-gpu
# and torch.
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
# CUDA 13 (what onnxruntime-gpu 1.31.1 is built for): these wheels lay out one CUDA root,
# site-packages/nvidia/cu13 with bin/nvcc, include, lib and nvvm. (The -cu12 nvcc wheels
# ship ptxas only, no nvcc.)
"$venv/bin/pip" install -q \
  nvidia-cuda-nvcc nvidia-cuda-runtime nvidia-cuda-crt nvidia-cuda-cccl nvidia-nvvm \
  nvidia-cuda-nvrtc nvidia-cublas nvidia-curand \
  "onnxruntime-gpu[cuda,cudnn]==1.31.1" "torch==2.9.1" "transformers==4.57.6"
root=$("$venv/bin/python" -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13"))')
[ -x "$root/bin/nvcc" ] || { echo "no nvcc in $root" >&2; exit 1; }
# The linker wants unversioned names (libcublas.so, ...) and the driver's libcuda.so.
libs=$(realpath -m target/gpu-cuda-libs)
rm -rf "$libs" && mkdir -p "$libs"
for lib in "$root"/lib/lib*.so.*; do
  base=$(basename "$lib"); ln -sf "$lib" "$libs/${base%%.so.*}.so"
done
driver=$(ldconfig -p | awk '/libcuda\.so\.1 /{print $NF; exit}')
[ -n "$driver" ] && ln -sf "$driver" "$libs/libcuda.so"
export CUDA_ROOT="$root" CUDA_PATH="$root" CUDA_TOOLKIT_ROOT_DIR="$root" PATH="$root/bin:$PATH"
export LIBRARY_PATH="$libs:$root/lib:${LIBRARY_PATH:-}" LD_LIBRARY_PATH="$root/lib:${LD_LIBRARY_PATH:-}"
export RUSTFLAGS="${RUSTFLAGS:-} -L native=$libs"
# cudarc 0.19.10 (candle's CUDA bindings) knows toolkits up to 13.4; a newer nvcc gets the
# 13.4 driver bindings, which later drivers keep.
read -r major minor < <(nvcc --version | sed -n 's/.*release \([0-9]*\)\.\([0-9]*\).*/\1 \2/p')
if [ "$major" -gt 13 ] || { [ "$major" -eq 13 ] && [ "$minor" -gt 4 ]; }; then export CUDARC_CUDA_VERSION=13040; fi
# The onnxruntime-gpu wheel's library (its CUDA provider finds cuDNN and CUDA beside it).
export ORT_DYLIB_PATH=$("$venv/bin/python" -c 'import onnxruntime, os, glob; print(glob.glob(os.path.join(os.path.dirname(onnxruntime.__file__), "capi", "libonnxruntime.so*"))[0])')
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

echo "== build (--features cuda, nvcc $(nvcc --version | tail -1)) =="
cargo build --release -p kdharness --features cuda
cargo build --release -p kdharness-bench --features cuda

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
