"""The planner's TTFT and TPOT held to measured whole models; lcprof's layer beside transformers'. No torch.

:func:`compare_model_results` reads the ``target=model`` rows of a whole-model results file
(``lcprof model-sweep``) and puts beside each measured time two predictions on the same hardware:

* ``planner_s`` -- what ``lcprof plan`` says, from :mod:`lcprof.plan.compute` itself, for one GPU
  (TP 1, engine ``none``: weights, KV and attention in the row's dtype): a prefill of n tokens is
  ``prefill_s(deployment, n)`` (the TTFT of a lone request: tiled attention, fused elementwise, LM
  head on the last token); a decode step at context n is ``decode_step_s`` over
  ``decode_parts(deployment, n)`` and the weights read once (the TPOT of a batch of ``batch``
  requests, all at context n);
* ``as_run_s`` -- the roofline of what the measured implementation executes: every layer in the
  family its backend ran (the row's ``kind_families``: eager computes the full score rectangle) with
  unfused elementwise traffic, plus the LM head.

``ratio = time_s / planner_s`` (1 = the planner is right; 2 = the model runs twice as long as
planned) and ``ratio_as_run = time_s / as_run_s``.

:func:`impl_ratio_table` pairs lcprof and transformers rows of the same point (model, backend, dtype,
device, batch, phase, target, n): ``lcprof_over_transformers = lcprof time / transformers time``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lcprof.cost.model import cost, roofline
from lcprof.cost.ops import lm_head_op
from lcprof.errors import LcprofError
from lcprof.hardware import Hardware
from lcprof.plan.compute import Rates, decode_parts, decode_step_s, prefill_s
from lcprof.rates import resolve_rates
from lcprof.results import MAX_INT_KEY
from lcprof.spec import ModelSpec, load_model
from lcprof.units import dtype_name

POINT_KEYS = ("model", "backend", "dtype", "device", "batch", "phase", "target", "n")
GROUP = ("model", "impl", "backend", "dtype", "device", "batch", "phase")


def read_model_results(results) -> pd.DataFrame:
    """A whole-model results file (path, list of paths) or DataFrame; refuses a per-layer sweep's file."""
    if isinstance(results, pd.DataFrame):
        df = results.copy()
    else:
        paths = [results] if isinstance(results, (str, bytes)) or not hasattr(results, "__iter__") else list(results)
        frames = []
        for p in paths:
            try:
                frames.append(pd.read_csv(p))
            except FileNotFoundError:
                raise LcprofError(f"cannot read results {str(p)!r}: no such file") from None
            except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
                raise LcprofError(f"cannot read results {str(p)!r}: not a CSV results file ({exc})") from None
        df = pd.concat(frames, ignore_index=True)
    missing = [c for c in ("model", "backend", "dtype", "n", "time_s", "status", "phase", "target") if c not in df.columns]
    if missing:
        raise LcprofError(f"not a whole-model results file (missing {', '.join(missing)}); "
                          "write one with `lcprof model-sweep`")
    for col, default in (("impl", "lcprof"), ("batch", 1), ("device", ""), ("scope", "model"), ("kind_families", "")):
        if col not in df.columns:
            df[col] = default
    for col in ("n", "batch"):  # token and sequence counts: whole, positive, exact in float64
        v = pd.to_numeric(df[col], errors="coerce").to_numpy(np.float64)
        bad = ~np.isfinite(v) | (v < 1) | (v > MAX_INT_KEY) | (v != np.floor(v))
        if bad.any():
            i = int(np.argmax(bad))
            raise LcprofError(f"column {col!r} holds {str(df[col].iloc[i])!r} in row {i + 1}; it must be a whole "
                              f"number from 1 to {MAX_INT_KEY}")
    return df


def is_model_results(columns) -> bool:
    """Whether a results file's columns are a whole-model sweep's (``target`` and ``scope``)."""
    return "target" in columns and "scope" in columns


def rates_for(gpu: str | None = None, calibration: str | Hardware | None = None) -> Rates:
    """The planner's rates from :func:`lcprof.rates.resolve_rates` (a calibration profile, rates fitted
    from a sweep, the best profile at hand for the GPU, or its datasheet -- labelled an upper bound)."""
    rs = resolve_rates(gpu, calibration)
    return Rates(hw=rs.hardware, link_bytes_per_s=rs.hardware.interconnect_bytes_per_s, source=rs.label)


def one_gpu_deployment(spec: ModelSpec, rates: Rates, dtype: str):
    """The planner's deployment of ``spec`` on one GPU: TP 1, no engine (``none``), weights, KV and
    attention all in ``dtype`` (what a whole-model sweep runs)."""
    from lcprof.plan.engines import EngineSettings, resolve_limits
    from lcprof.plan.parallel import Parallel
    from lcprof.plan.scenario import Deployment, build_precision

    prec = build_precision(spec, "none", weights=dtype, kv_dtype=dtype, attn_dtype=dtype)
    limits = resolve_limits(EngineSettings(engine="none"), spec, rates.hw, tp=1, dp=1, pp=1)
    return Deployment(spec=spec, rates=rates, par=Parallel(1, 1, 1, 1), gpus=1, precision=prec, limits=limits)


def planner_times(spec: ModelSpec, rates: Rates, ns, *, phase: str, dtype: str, batch: int = 1) -> np.ndarray:
    """The planner's prefill time (TTFT) or decode step time (TPOT) at each n, seconds."""
    from lcprof.cost.weights import weight_bytes_per_gpu

    ns = np.asarray(ns, dtype=np.float64)
    dep = one_gpu_deployment(spec, rates, dtype)
    if phase == "prefill":
        # the planner prefills one request at a time; a batch of b prompts does b times its work
        return batch * np.asarray(prefill_s(dep, ns), dtype=np.float64)
    parts = decode_parts(dep, ns)
    return np.asarray(decode_step_s(dep, weight_bytes_per_gpu(spec, dep.precision.weights),
                                    flops_per_gpu=batch * parts.flops_per_gpu,
                                    kv_read_bytes_per_gpu=batch * parts.kv_read_bytes_per_gpu,
                                    batch=batch), dtype=np.float64)


def _families(kind_families: str, spec: ModelSpec, default: str) -> list[str]:
    """The executed family of every layer, from a row's ``kind_families`` ('0:tiled 1:eager')."""
    by_first: dict[int, str] = {}
    for part in str(kind_families or "").split():
        idx, _, fam = part.partition(":")
        if idx.isdigit() and fam:
            by_first[int(idx)] = fam
    out, seen = [], {}
    for i, lspec in enumerate(spec.layers):
        seen.setdefault(lspec, by_first.get(i, default))
        out.append(seen[lspec])
    return out


def as_run_times(spec: ModelSpec, hw: Hardware, ns, *, phase: str, dtype: str, batch: int,
                 families: list[str]) -> np.ndarray:
    """Roofline of every layer in the family it executed (unfused elementwise) plus the LM head."""
    ns = np.asarray(ns, dtype=np.float64)
    total = np.zeros(len(ns))
    counted: dict = {}
    for i, lspec in enumerate(spec.layers):
        key = (lspec, families[i])
        counted[key] = counted.get(key, 0) + 1
    for (lspec, fam), count in counted.items():
        c = cost(spec, ns, phase=phase, batch=batch, dtype=dtype, family=fam, layer=lspec, elementwise="unfused")
        total += count * np.asarray(roofline(c, hw)["total"], dtype=np.float64)
    head = lm_head_op(spec, float(batch) * np.ones_like(ns), dtype)
    peak = hw.peak(dtype)
    total += np.maximum(np.asarray(head.flops) / peak, np.asarray(head.bytes) / hw.hbm_bytes_per_s)
    return total


def _load(name: str, rows: pd.DataFrame) -> ModelSpec:
    """The row's model by name, else from the config the sweep recorded (``model_config``)."""
    try:
        return load_model(name)
    except LcprofError:
        srcs = [s for s in rows.get("model_config", pd.Series(dtype=object)).dropna().unique() if str(s)]
        if not srcs:
            raise
        return load_model(str(srcs[0]))


def compare_model_results(results, *, gpu: str | None = None, calibration=None,
                          specs: dict | None = None) -> pd.DataFrame:
    """Measured whole-model TTFT/TPOT beside the planner's and the as-run roofline, per row (see module doc)."""
    rates = rates_for(gpu, calibration)
    df = read_model_results(results)
    ok = df[(df["status"] == "ok") & (df["target"].astype(str) == "model") & (pd.to_numeric(df["time_s"]) > 0)]
    if ok.empty:
        raise LcprofError(f"no whole-model rows with status ok to compare ({len(df)} rows; "
                          f"targets {', '.join(sorted(map(str, df['target'].unique())))})")
    specs = dict(specs or {})
    pieces = []
    for key, g in ok.groupby(list(GROUP) + ["kind_families"], sort=True, dropna=False):
        rec = dict(zip(list(GROUP) + ["kind_families"], key))
        g = g.sort_values("n")
        spec = specs.get(rec["model"]) or _load(rec["model"], g)
        store = "fp32" if str(rec["dtype"]) == "tf32" else dtype_name(str(rec["dtype"]))
        ns = g["n"].to_numpy(np.float64)
        batch = int(rec["batch"])
        plan = planner_times(spec, rates, ns, phase=str(rec["phase"]), dtype=store, batch=batch)
        default = "eager" if str(rec["backend"]) in ("eager", "sdpa-math") else "tiled"
        fams = _families(rec["kind_families"], spec, default)
        run = as_run_times(spec, rates.hw, ns, phase=str(rec["phase"]), dtype=store, batch=batch, families=fams)
        out = g[list(GROUP) + ["n", "scope", "time_s"]].copy()
        out.insert(out.columns.get_loc("n"), "metric", "ttft" if rec["phase"] == "prefill" else "tpot")
        out["planner_s"] = plan
        out["ratio"] = out["time_s"].to_numpy(np.float64) / plan
        out["as_run_s"] = run
        out["ratio_as_run"] = out["time_s"].to_numpy(np.float64) / run
        out["rates"] = rates.source
        pieces.append(out)
    return pd.concat(pieces, ignore_index=True)


def impl_ratio_table(results) -> pd.DataFrame:
    """lcprof time / transformers time for every point measured by both implementations."""
    df = read_model_results(results)
    ok = df[df["status"] == "ok"]
    keys = list(POINT_KEYS)
    lc = ok[ok["impl"] == "lcprof"].groupby(keys, dropna=False)["time_s"].median()
    hf = ok[ok["impl"] == "transformers"].groupby(keys, dropna=False)["time_s"].median()
    both = pd.concat([lc.rename("lcprof_time_s"), hf.rename("transformers_time_s")], axis=1, join="inner")
    if both.empty:
        raise LcprofError("no point was measured by both lcprof and transformers (same model, backend, dtype, "
                          "device, batch, phase, target and n)")
    both["lcprof_over_transformers"] = both["lcprof_time_s"] / both["transformers_time_s"]
    return both.reset_index()
