"""Library functions behind the measuring CLI commands (each returns a DataFrame).

* :func:`measure_layer_vs_predicted` -- ``lcprof layer --measure``: one layer at one n, per dtype,
  measured next to the roofline prediction (CUDA) or next to the executed FLOPs (CPU);
* :func:`run_sweep` -- ``lcprof sweep`` (re-exported from :mod:`lcprof.measure.sweep`);
* :func:`backends_frame` -- ``lcprof backends``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lcprof.cost.model import cost, roofline
from lcprof.hardware import get_gpu
from lcprof.measure import backends as B
from lcprof.measure.execution import Execution, SweepWorkload
from lcprof.measure.sweep import run_sweep
from lcprof.spec import load_model
from lcprof.units import parse_token_list

__all__ = ["backends_frame", "measure_layer_vs_predicted", "run_sweep"]


def backends_frame(device: str | None = None, dtypes="fp32,bf16") -> pd.DataFrame:
    """Every registered backend on ``device`` for each dtype: available or not, and why."""
    dev = B.resolve_device(device)
    if isinstance(dtypes, str):
        dtypes = [d.strip() for d in dtypes.split(",") if d.strip()]
    torch_dts = list(dict.fromkeys(B.torch_dtype(d)[0] for d in dtypes))
    return pd.DataFrame(B.backends_table(dev, torch_dts))


def measure_layer_vs_predicted(model, n, *, backend: str = "sdpa", dtypes=("fp32",), device: str | None = None,
                               layer: int = 0, batch: int = 1, ranks: int = 1, phase: str = "prefill",
                               gpu: str = "h100-sxm", budget_s: float = 1.0, mla_form: str | None = None,
                               moe_timing: str = "dense-equivalent") -> pd.DataFrame:
    """Time one layer at one n for each dtype and put the prediction beside it.

    On CUDA, ``predicted_time_s`` is the roofline (``lcprof.cost.model.roofline``) of the executed
    FLOPs and bytes on ``gpu`` (a name from the GPU database; say which GPU you measured on) and
    ``ratio`` = measured / predicted. On the CPU there is no roofline (no CPU hardware spec), so
    ``predicted_time_s`` and ``ratio`` are empty and ``achieved_flops_per_s`` (executed FLOPs /
    measured time) is the number to read. A layer without attention (Mamba, Gated DeltaNet, MLP only)
    takes a mixer backend (``torch``, ``fla``, ``mamba-ssm``) as ``backend``.
    """
    spec = load_model(model)
    ns = parse_token_list(n)
    work = SweepWorkload(spec, ns, [backend], list(dtypes), phase=phase, batch=batch, layer=layer, ranks=ranks,
                         mla_form=mla_form, moe_timing=moe_timing)
    df = run_sweep(work, Execution(budget_s=budget_s), device=device)
    dev = B.resolve_device(device)
    hw = get_gpu(gpu) if dev.type == "cuda" else None
    pred, ratio, note = [], [], []
    for _, r in df.iterrows():
        fam = r.get("executed_family")
        if not spec.layers[int(layer)].has_attention:
            fam = "useful"  # a mixer or MLP-only layer: no attention family to choose
        if hw is None or not isinstance(fam, str) or not fam:
            pred.append(None)
            ratio.append(None)
            note.append("no CPU roofline: read achieved_flops_per_s" if hw is None else "")
            continue
        d = str(r["dtype"])
        store = "fp32" if d == "tf32" else d
        c = cost(spec, int(r["n"]), phase=phase, batch=batch, dtype=store, family=fam, layer=layer, mla_form=mla_form)
        try:
            t = float(roofline(c, hw, tf32=(d == "tf32"))["total"][0])
        except Exception as exc:  # noqa: BLE001 - e.g. the GPU has no peak for this dtype
            pred.append(None)
            ratio.append(None)
            note.append(str(exc))
            continue
        pred.append(t)
        ratio.append(float(r["time_s"]) / t if r["status"] == "ok" and t > 0 else None)
        note.append(f"roofline on {hw.key} ({fam} FLOPs and bytes)")
    cols = ["model", "backend", "dtype", "device", "phase", "layer", "n", "status", "time_s", "time_p10_s",
            "time_p90_s", "repeats", "predicted_time_s", "ratio", "predicted_flops", "useful_flops",
            "achieved_flops_per_s", "peak_mem_bytes", "predicted_mem_bytes", "executed_family", "mask_mode",
            "moe_timing", "reason", "prediction"]
    out = df.assign(predicted_time_s=pred, ratio=ratio, prediction=note)
    out = out.replace({np.nan: None})
    return out[[c for c in cols if c in out.columns]]
