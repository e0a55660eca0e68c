#!/usr/bin/env python3
"""The timer's own overhead against a real n=4096 layer point (CPU by default).

1. **Empty region**: ``lcprof.measure.timer.measure`` around a call that does nothing -- what the
   timer itself adds to every sample (perf_counter pair, Python call, input rotation; on CUDA the
   event pair).
2. **Real point**: one decoder layer at n=4096 (prefill, sdpa, fp32), timed by the same ``measure``.

Prints both and the ratio; the claim is overhead / measured < 1% for n >= 4096. The default layer
is deliberately small (hidden 512, 8 heads of 64, MLP 1376 -- a scaled-down Phi-3), so its time is
SHORT and the ratio is a pessimistic bound; ``--model phi3-128k`` times the real Phi-3 layer (about
10 s per call on 2 CPU cores).

    PYTHONPATH=. python bench/timer_overhead.py [--out reports/cpu-measure/timer_overhead.txt]
"""

from __future__ import annotations

import argparse
import platform
import sys

import torch

from lcprof.measure.backends import get_backend, resolve_device
from lcprof.measure.env import environment
from lcprof.measure.layer import DecoderLayer
from lcprof.measure.timer import measure, timer_overhead
from lcprof.spec import load_model, spec_from_config

SMALL = dict(model_type="phi3", hidden_size=512, num_hidden_layers=1, num_attention_heads=8,
             num_key_value_heads=8, intermediate_size=1376, vocab_size=32064, max_position_embeddings=131072)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="a preset (default: a scaled-down Phi-3 layer)")
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--backend", default="sdpa")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--budget-s", type=float, default=3.0)
    ap.add_argument("--out", default=None, help="also write the report to this file")
    args = ap.parse_args()

    dev = resolve_device(args.device)
    spec = load_model(args.model) if args.model else spec_from_config(SMALL, name="phi3-shaped-small")
    layer = DecoderLayer(spec, 0, attention=get_backend(args.backend)).to(dev).eval()
    g = torch.Generator().manual_seed(0)
    inputs = [torch.randn(1, args.n, spec.hidden_size, generator=g).to(dev) for _ in range(3)]

    empty = timer_overhead(dev, reps=2000)
    with torch.inference_mode():
        real = measure(lambda x: layer(x), inputs, device=dev, budget_s=args.budget_s, min_reps=5, max_reps=50)
    ratio = empty.median_s / real.median_s
    env = environment(dev)
    lines = [
        f"lcprof timer overhead ({dev}, torch {env['torch_version']}, {env['cpu_model']}, "
        f"{env['threads']} threads, python {platform.python_version()})",
        f"empty region : median {empty.median_s * 1e9:.0f} ns, p90 {empty.p90_s * 1e9:.0f} ns "
        f"over {empty.repeats} samples ({empty.clock})",
        f"real point   : {spec.name} layer 0, n={args.n}, {args.backend}, fp32 prefill: median "
        f"{real.median_s * 1e3:.3f} ms, p10 {real.p10_s * 1e3:.3f} ms, p90 {real.p90_s * 1e3:.3f} ms "
        f"over {real.repeats} samples" + (f" [{real.warning}]" if real.warning else ""),
        f"overhead     : {ratio * 100:.5f}% of the measured time ({'< 1%: OK' if ratio < 0.01 else '>= 1%: TOO HIGH'})",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")
    return 0 if ratio < 0.01 else 1


if __name__ == "__main__":
    sys.exit(main())
