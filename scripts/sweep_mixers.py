"""CPU (or GPU) sweeps of a Mamba-2 and a Gated DeltaNet layer, with fits: what reports/cpu-hybrid-*/
holds. Usage: python3 scripts/sweep_mixers.py OUT_DIR [--device cpu|cuda] [--max-n 2048] [--budget 1.0]

The layers are Nemotron-3-Nano's Mamba-2 (64 heads of 64, d_state 128, 8 groups, chunk 128, hidden
2688) and Qwen3-Next-80B-A3B's Gated DeltaNet (16 key / 32 value heads of 128, chunk 64, hidden
2048), from their published configs; prefill over doubling n and decode after n cached tokens.
Rows are written as they complete (rerun to resume); then ``lcprof fit`` fits each group.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from lcprof.measure.mixer_sweep import sweep_mixer

LAYERS = [("nemotron-3-nano", None), ("qwen3-next-80b-a3b", None)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("out_dir")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32")
    ap.add_argument("--backend", default="torch")
    ap.add_argument("--min-n", type=int, default=128)
    ap.add_argument("--max-n", type=int, default=2048)
    ap.add_argument("--budget", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=3, help="round-robin passes over the lengths, samples pooled")
    a = ap.parse_args(argv)
    out = Path(a.out_dir)
    ns = []
    n = a.min_n
    while n <= a.max_n:
        ns.append(n)
        n *= 2
    csv = out / "results.csv"
    for model, layer in LAYERS:
        for phase in ("prefill", "decode"):
            sweep_mixer(model, ns, layer=layer, dtype=a.dtype, device=a.device, backend=a.backend, phase=phase,
                        budget_s=a.budget, rounds=a.rounds, out=csv)
    fit = subprocess.run([sys.executable, "-m", "lcprof", "fit", str(csv)], capture_output=True, text=True)
    (out / "fit.txt").write_text(fit.stdout + fit.stderr)
    print(fit.stdout + fit.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
