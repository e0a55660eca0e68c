"""Time a model's linear-time mixer layer over n: rows in the results schema, written as they
complete, resumable.

``lcprof sweep`` times the attention + MLP decoder layer; the mixer layers
(:mod:`lcprof.measure.mixers`) are timed here, with the same timer (:func:`lcprof.measure.timer.
measure`) and environment columns, so that ``lcprof fit`` and ``compare`` read the rows like any
others. Each point is the mixer alone (in_proj .. out_proj, the layer's own norms and MLP not
included), built from the model's spec with seeded weights: ``prefill`` of n tokens from a fresh
state, or ``decode`` of one token after a carried state of n tokens (constant in n). Before timing,
the layer is checked against the float64 step-by-step recurrence at the smallest n
(``check_rel_err``). On the CPU, subnormal floats are flushed to zero (``torch.set_flush_denormal``),
as GPUs do: the in-chunk decays reach the subnormal range and would otherwise slow the arithmetic by
orders of magnitude, at lengths that depend on the data.
"""

from __future__ import annotations

import contextlib
import csv
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from lcprof.cost.kinds import mixer_activation_bytes, mixer_ops
from lcprof.errors import LcprofError
from lcprof.measure.backends import resolve_device, torch_dtype
from lcprof.measure.env import ENV_COLUMNS, PeakMemory, environment
from lcprof.measure.mixer_backends import probe_mixer_backend
from lcprof.measure.mixers import RECURRENT, build_mixer
from lcprof.measure.timer import measure
from lcprof.spec import load_model

KEY = ("model", "backend", "dtype", "device", "batch", "n", "phase", "layer")
COLUMNS = ("model", "backend", "dtype", "device", "batch", "n", "time_s", "time_p10_s", "time_p90_s", "repeats",
           "peak_mem_bytes", "status", "reason", "phase", "layer", "layer_kind", "scope", "predicted_flops",
           "useful_flops", "achieved_flops_per_s", "predicted_mem_bytes", "peak_mem_source", "check_rel_err",
           "time_mean_s", "time_stdev_s", "spread_warning", "clock", *ENV_COLUMNS, "timestamp", "samples_s")


def check_against_recurrence(layer, spec, n: int, *, seed: int = 0) -> float:
    """Relative L2 error of the layer (its dtype and device) against the float64 recurrence."""
    ref_layer = build_mixer(spec, seed=seed, **_layer_kw(layer)).to(torch.float64)
    x = torch.randn(1, n, spec.hidden_size, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    p = next(layer.parameters())
    with torch.no_grad():
        ref = RECURRENT[spec.kind](ref_layer, x)[0]
        got = layer(x.to(device=p.device, dtype=p.dtype))[0].double().cpu()
    return float((got - ref).norm() / ref.norm())


def _layer_kw(layer) -> dict:
    kw = {}
    if hasattr(layer, "chunk") and layer.spec.kind == "gated_deltanet":
        kw["chunk"] = layer.chunk
    if hasattr(layer, "block"):
        kw["block"] = layer.block
    return kw


def _done(out: Path) -> set[tuple]:
    if not out.exists():
        return set()
    with open(out, newline="") as fh:
        return {tuple(r[k] for k in KEY) for r in csv.DictReader(fh) if r.get("status") in ("ok", "skipped")}


def sweep_mixer(model: str, ns, *, layer: int | None = None, dtype: str = "fp32", device: str | None = None,
                backend: str = "torch", phase: str = "prefill", batch: int = 1, budget_s: float = 1.0,
                rounds: int = 1, out: str | Path, seed: int = 0, log=print) -> Path:
    """Time the mixer of ``layer`` (default: the model's first mixer layer) at each n; append rows to
    ``out`` (CSV) as they complete; points already in ``out`` are skipped (resume).

    ``rounds`` > 1 measures the lengths round-robin that many times and pools each length's samples
    (median over all of them), so that a machine whose load drifts (a shared CPU) shifts every
    length alike instead of a few of them."""
    spec = load_model(model)
    if layer is None:
        layer = next((i for i, lyr in enumerate(spec.layers) if set(lyr.mixers) - {"attention"}), None)
        if layer is None:
            raise LcprofError(f"{spec.name} has no linear-time mixer layer to time")
    lyr = spec.layer(layer)
    kinds = [m for m in lyr.mixers if m != "attention"]
    if len(kinds) != 1:
        raise LcprofError(f"{spec.name}: layer {layer} is {lyr.kind}; the mixer sweep times one linear mixer")
    mixer_spec = spec.mixer(kinds[0])
    if phase not in ("prefill", "decode"):
        raise LcprofError(f"unknown phase {phase!r}; use prefill or decode")
    dev = resolve_device(device)
    tdtype, tf32 = torch_dtype(dtype)
    ok, why = probe_mixer_backend(backend, dev, tdtype)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = _done(out)
    new_file = not out.exists()
    env = environment(dev)
    torch.backends.cuda.matmul.allow_tf32 = bool(tf32)
    # Denormals: the decays exp(-sum g) reach the float32 subnormal range inside long chunks, where
    # CPU arithmetic slows down by orders of magnitude (GPU kernels flush them); flush them here too.
    with _flush_denormals():
        return _run(spec, layer, lyr, mixer_spec, ns, backend, dtype, dev, tdtype, ok, why, out, done, new_file, env,
                    batch=batch, phase=phase, budget_s=budget_s, seed=seed, rounds=rounds, log=log)


@contextlib.contextmanager
def _flush_denormals():
    """Flush subnormal floats to zero inside, and put the process back as it was after (the setting is
    global processor state: left on, it changes every later float computation of the process)."""
    was_on = torch.tensor(1e-40, dtype=torch.float32).item() == 0.0  # no getter: probe a subnormal
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(was_on)


def _run(spec, layer, lyr, mixer_spec, ns, backend, dtype, dev, tdtype, ok, why, out, done, new_file, env, *,
         batch, phase, budget_s, seed, rounds, log):
    m = build_mixer(mixer_spec, seed=seed, backend=backend if ok else "torch").to(device=dev, dtype=tdtype).eval()
    check = check_against_recurrence(m, mixer_spec, min(ns)) if ok else float("nan")
    log(f"{spec.name} layer {layer} ({lyr.kind}) {backend} {dtype} {dev}: rel. error vs fp64 recurrence {check:.2e}")
    with open(out, "a", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS, extrasaction="ignore")
        if new_file:
            w.writeheader()
        todo = []
        for n in ns:
            row = {"model": spec.name, "backend": backend, "dtype": dtype, "device": str(dev), "batch": batch,
                   "n": int(n), "phase": phase, "layer": layer, "layer_kind": lyr.kind, "scope": "mixer",
                   "check_rel_err": check, "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"), **env}
            if tuple(str(row[k]) for k in KEY) in done:
                log(f"  n={n}: done already")
                continue
            new, pre = (int(n), 0) if phase == "prefill" else (1, int(n))
            ops = mixer_ops(mixer_spec, new, pre, batch=batch, dtype="fp32" if dtype == "tf32" else dtype)
            row["predicted_flops"] = sum(float(o.flops) for o in ops)
            row["useful_flops"] = sum(float(o.useful_flops) for o in ops)
            row["predicted_mem_bytes"] = int(mixer_activation_bytes(mixer_spec, new, batch=batch, prefix=pre,
                                                                    dtype="fp32" if dtype == "tf32" else dtype)[0])
            if not ok:
                row.update(status="skipped", reason=why)
                w.writerow(row)
                fh.flush()
                log(f"  n={n}: skipped ({why})")
                continue
            todo.append((n, new, pre, row))
        samples: dict[int, list] = {n: [] for n, *_ in todo}
        for rnd in range(rounds):
            last = rnd == rounds - 1
            for n, new, pre, row in todo:
                if row.get("status") == "error":
                    continue
                _time_point(m, mixer_spec, n, new, pre, row, samples[n], batch=batch, dev=dev, tdtype=tdtype,
                            budget_s=budget_s, seed=seed, first=(rnd == 0))
                if last or row.get("status") == "error":
                    w.writerow(row)
                    fh.flush()
                    log(f"  n={n}: {row.get('time_s', float('nan')):.4g} s ({row.get('repeats', 0)} samples)"
                        if row.get("status") == "ok" else f"  n={n}: {row['status']} ({row['reason']})")
    return out


def _time_point(m, mixer_spec, n, new, pre, row, pooled: list, *, batch, dev, tdtype, budget_s, seed, first):
    """One round of one length: time it, pool the samples, fill the row's timing columns."""
    try:
        g = torch.Generator().manual_seed(seed + int(n))
        xs = [torch.randn(batch, new, mixer_spec.hidden_size, generator=g).to(device=dev, dtype=tdtype)
              for _ in range(2)]
        state = None
        if pre:
            with torch.no_grad():
                state = m(torch.randn(batch, pre, mixer_spec.hidden_size, generator=g).to(dev, tdtype))[1]
        with torch.no_grad(), PeakMemory(dev) as pm:
            res = measure(lambda x: m(x, state), xs, device=dev, budget_s=budget_s, min_reps=2,
                          min_warmup=2 if first else 1, labels={"n": int(n)})
        pooled.extend(res.samples_s)
        t = np.asarray(pooled)
        med = float(np.median(t))
        spread = (np.percentile(t, 90) - np.percentile(t, 10)) / med
        peak = pm.peak_bytes if row.get("peak_mem_bytes") is None else max(row["peak_mem_bytes"], pm.peak_bytes or 0)
        row.update(status="ok", reason="", time_s=med, time_p10_s=float(np.percentile(t, 10)),
                   time_p90_s=float(np.percentile(t, 90)), repeats=len(t), time_mean_s=float(t.mean()),
                   time_stdev_s=float(statistics.stdev(t)) if len(t) > 1 else 0.0,
                   spread_warning=f"noisy: (p90 - p10) / median = {spread:.2f}" if spread > 0.1 else "",
                   clock=res.clock, peak_mem_bytes=peak, peak_mem_source=pm.source,
                   samples_s=json.dumps([float(v) for v in t]),
                   achieved_flops_per_s=row["predicted_flops"] / med)
    except torch.cuda.OutOfMemoryError as exc:  # pragma: no cover - GPU only
        row.update(status="oom", reason=str(exc).splitlines()[0])
    except RuntimeError as exc:
        row.update(status="error", reason=str(exc).splitlines()[0])
