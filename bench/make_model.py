#!/usr/bin/env python3
"""Write a causal LM with SmolLM2-135M's shape and random weights as ONNX, for the
scoring benchmark (until kdharness's own exporter exists).

Shape (SPEC §5.2): llama architecture, 30 layers, hidden 576, 9 heads, 3 kv heads
(head_dim 64), ffn 1536, vocab 49152, rope theta 1e5. Inputs and outputs follow optimum's
`text-generation-with-past` conventions; the graph builder is the one that makes the test
fixtures (tests/fixtures/make_fixtures.py). Needs numpy and onnx.

    python3 bench/make_model.py target/bench/smollm2-135m-shape.onnx
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "fixtures"))
import make_fixtures as mf  # noqa: E402


def main():
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "target/bench/smollm2-135m-shape.onnx")
    out.parent.mkdir(parents=True, exist_ok=True)
    w = mf.llama_weights(135, 49152, d=576, n_layers=30, n_heads=9, n_kv=3, hd=64, ffn=1536)
    w["cfg"]["theta"] = 100000.0
    model = mf.build_llama(w)
    tmp = out.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(model.SerializeToString())
    tmp.replace(out)
    params = sum(v.size for k, v in w.items() if k != "cfg")
    print(f"wrote {out} ({params / 1e6:.1f}M parameters)")


if __name__ == "__main__":
    main()
