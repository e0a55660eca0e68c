"""Benchmark: scenarios per second of the vectorized what-if grid (lcprof.plan.capacity_grid).

Grid: 100 long lengths (8k..1M, geometric, multiples of 16) x 4 KV dtypes x 4 TP degrees x
64 memory utilizations = 102,400 scenarios of llama3.1-8b on an H100 with vLLM's accounting
(max_model_len 1M so every length is a valid request). Times, best of ``--repeats``:

* ``grid_arrays``: the planner's stage functions over the scenario arrays (no table);
* ``capacity_grid``: end to end, including parsing, the one ``prefill_parts`` call over every
  chunk of every length, and the DataFrame of one row per scenario with status/reason.

The target (>= 100,000 scenarios/s end to end) is checked here, not by a timed unit test.

Writes the summary to reports/plan-bench/plan_grid.txt (or --out). CPU only; no torch.

    python bench/plan_grid.py [--repeats 5] [--out reports/plan-bench/plan_grid.txt]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np

from lcprof._version import __version__
from lcprof.plan.compute import deployment_rates
from lcprof.plan.engines import EngineSettings
from lcprof.plan.grid import capacity_grid, grid_arrays, layouts
from lcprof.spec import load_model

MODEL, GPU = "llama3.1-8b", "h100-sxm"
KV_DTYPES = ["fp32", "bf16", "fp8", "int8"]
MAX_MODEL_LEN = 1 << 20
TPS = [1, 2, 4, 8]
UTILS = list(np.round(np.linspace(0.50, 0.95, 64), 6))
LONGS = sorted(set(int(x) // 16 * 16 for x in np.geomspace(8192, 1 << 20, 100)))


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "reports" / "plan-bench" / "plan_grid.txt"))
    args = ap.parse_args()

    longs = LONGS
    n_scen = len(longs) * len(KV_DTYPES) * len(TPS) * len(UTILS)

    spec = load_model(MODEL)
    rates = deployment_rates(GPU)

    settings = EngineSettings(max_model_len=MAX_MODEL_LEN)

    def arrays():
        return grid_arrays(spec, rates, longs=longs, short=4096, kv_dtypes=KV_DTYPES, layouts=layouts(TPS),
                           memory_utilizations=UTILS, settings=settings)

    def full():
        return capacity_grid(MODEL, gpu=GPU, tps=TPS, kv_dtypes=KV_DTYPES, memory_utilizations=UTILS,
                             longs=longs, short="4k", max_model_len=MAX_MODEL_LEN)

    df = full()  # warm-up (imports, caches) and the table we describe
    assert len(df) == n_scen, (len(df), n_scen)
    t_arr = best_of(arrays, args.repeats)
    t_full = best_of(full, args.repeats)
    counts = {k: int(v) for k, v in df["status"].value_counts().items() if v}
    lines = [
        f"lcprof {__version__} plan what-if grid benchmark ({platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, python {platform.python_version()}, numpy {np.__version__})",
        f"model {MODEL}, gpu {GPU}: {len(longs)} long lengths ({longs[0]}..{longs[-1]}) x {len(KV_DTYPES)} KV dtypes "
        f"({','.join(KV_DTYPES)}) x {len(TPS)} TPs ({','.join(map(str, TPS))}) x {len(UTILS)} memory utilizations "
        f"({UTILS[0]}..{UTILS[-1]}) = {n_scen} scenarios",
        f"status counts: {counts}",
        f"grid_arrays (stage functions over arrays): best of {args.repeats}: {t_arr * 1e3:8.1f} ms  "
        f"= {n_scen / t_arr:12,.0f} scenarios/s",
        f"capacity_grid (end to end, DataFrame out): best of {args.repeats}: {t_full * 1e3:8.1f} ms  "
        f"= {n_scen / t_full:12,.0f} scenarios/s",
        f"target >= 100,000 scenarios/s end to end: {'met' if n_scen / t_full >= 1e5 else 'NOT met'}",
    ]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)


if __name__ == "__main__":
    main()
