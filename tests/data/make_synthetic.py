"""Regenerate the small synthetic results files in tests/data (seeded, deterministic).

    python tests/data/make_synthetic.py

They are SYNTHETIC: times come from a known model t(n) = c0 + c1 n + c2 n² with multiplicative
log-normal noise, not from a measurement (see README.md in this folder). Predicted/useful FLOPs and
peak memory come from lcprof's cost model, so the files have the full schema of shared/DESIGN.md.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from lcprof.cost.model import activation_bytes, cost, weight_bytes
from lcprof.cost.ops import backend_family
from lcprof.spec import load_model

HERE = Path(__file__).parent

# Seconds: c0 (fixed), c1 per token, c2 per token². Chosen to resemble one phi3-mini-128k layer in
# fp32 on a 2-core CPU (~0.15 TFLOP/s GEMM, ~30 GB/s copy): 226 MFLOP/token of projections+MLP.
PHI3_CPU = {
    "eager": (0.02, 1.6e-3, 1.5e-7),  # full score square + softmax passes over it
    "sdpa": (0.02, 1.6e-3, 7.5e-8),  # tiled CPU kernel skips fully masked tiles
}
# One llama3-8b layer in bf16 on an A100 (flash-attn), as a table "measured elsewhere" would be.
LLAMA_A100 = (3.0e-5, 1.96e-6, 5.5e-11)


def _noisy(c, n, rng, sigma):
    t = c[0] + c[1] * n + c[2] * n * n
    return t * np.exp(rng.normal(0.0, sigma, size=np.shape(n)))


def phi3_cpu_small(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    spec = load_model("phi3-mini-128k")
    w_layer = weight_bytes(spec, "fp32") // spec.n_layers
    rows = []
    for backend, c in PHI3_CPU.items():
        fam = backend_family(backend)
        for n in (128, 256, 512, 1024, 2048, 4096):
            t = float(_noisy(c, n, rng, 0.02))
            spread = float(np.exp(1.2816 * 0.015))
            cst = cost(spec, n, family=fam, dtype="fp32", layer=0)
            rows.append({
                "model": "phi3-mini-128k", "backend": backend, "dtype": "fp32", "device": "cpu", "batch": 1, "n": n,
                "time_s": t, "time_p10_s": t / spread, "time_p90_s": t * spread, "repeats": 5 if t < 2 else 3,
                "peak_mem_bytes": int(w_layer + activation_bytes(spec, n, dtype="fp32", family=fam)[0]),
                "status": "ok", "reason": "", "phase": "prefill", "layer": 0,
                "predicted_flops": float(cst.flops["total"][0]), "useful_flops": float(cst.useful_flops["total"][0]),
            })
        rows.append({
            "model": "phi3-mini-128k", "backend": backend, "dtype": "fp32", "device": "cpu", "batch": 1, "n": 8192,
            "time_s": np.nan, "time_p10_s": np.nan, "time_p90_s": np.nan, "repeats": 0, "peak_mem_bytes": np.nan,
            "status": "skipped", "reason": "predicted time exceeds the per-point budget of 30 s", "phase": "prefill",
            "layer": 0, "predicted_flops": np.nan, "useful_flops": np.nan,
        })
    df = pd.DataFrame(rows)
    env = {"torch_version": "2.13.0+cpu", "cuda_version": "", "gpu_name": "", "driver_version": "",
           "cpu_name": "synthetic (2-core x86 CPU model)", "threads": 2, "lcprof_version": "0.1.0",
           "data_origin": "synthetic: t = c0 + c1 n + c2 n^2, 2% log-normal noise, seed 0"}
    for k, v in env.items():
        df[k] = v
    return df


def eight_columns(seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ns = np.array([1024, 2048, 4096, 8192, 16384, 32768])
    t = _noisy(LLAMA_A100, ns, rng, 0.02)
    return pd.DataFrame({"model": "llama3-8b", "backend": "flash-attn", "dtype": "bf16", "device": "cuda",
                         "batch": 1, "n": ns, "time_s": t, "status": "ok"})


if __name__ == "__main__":
    phi3_cpu_small().to_csv(HERE / "phi3-cpu-small.csv", index=False, float_format="%.9g")
    eight_columns().to_csv(HERE / "eight-columns.csv", index=False, float_format="%.9g")
    print("wrote", HERE / "phi3-cpu-small.csv", HERE / "eight-columns.csv")
