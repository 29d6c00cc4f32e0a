#!/usr/bin/env python3
"""PyTorch eager baseline for bench/run.sh: tokens/s of one optimiser step (forward,
backward, AdamW with weight decay 0.01 and gradient clipping 1.0) of the same shapes the
kdharness training benchmark times, in fp32 and with bf16 autocast.

    python3 bench/torch_train.py --shape gpt2-5m|smollm2-student [--layers 4]
        [--batch 8] [--seq 128] [--steps 5] [--threads 2]

Prints one line per precision: `torch fp32  <tok/s> tokens/s (median of N steps)`.
Needs torch and transformers (a benchmark-only environment; never a dependency).
"""
import argparse
import statistics
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM


def build(shape: str, layers: int, seq: int):
    if shape == "gpt2-5m":
        cfg = GPT2Config(vocab_size=2048, n_embd=256, n_layer=6, n_head=8, n_inner=1024, n_positions=seq,
                         activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
        return GPT2LMHeadModel(cfg)
    if shape == "smollm2-student":
        cfg = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=layers,
                          num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192,
                          rope_theta=100000.0, rms_norm_eps=1e-5, tie_word_embeddings=True)
        return LlamaForCausalLM(cfg)
    raise SystemExit(f"unknown shape {shape}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="gpt2-5m")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build(args.shape, args.layers, args.seq).to(args.device)
    model.train()
    vocab = model.config.vocab_size
    ids = torch.randint(0, vocab, (args.batch, args.seq)).to(args.device)
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    tokens = args.batch * args.seq  # as kdharness-bench-train counts them
    for precision in ("fp32", "bf16"):
        times = []
        for step in range(args.steps + 1):
            t0 = time.perf_counter()
            with torch.autocast(args.device, dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            sync()
            if step > 0:
                times.append(time.perf_counter() - t0)
        n = sum(p.numel() for p in model.parameters())
        print(f"torch {precision}  {tokens / statistics.median(times):8.0f} tokens/s  "
              f"({args.shape}, {n} weights, {args.device}, median of {args.steps} steps)", flush=True)


if __name__ == "__main__":
    main()
