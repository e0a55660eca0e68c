"""One set of rates everywhere: which FLOP/s and bytes/s a prediction uses, and where they came from.

``resolve_rates(gpu, calibration)`` is the single place every predicting command (``layer``,
``compare``, ``report``, ``ring``; the planner can call it too) turns its options into rates:

1. ``calibration`` given:

   * ``"datasheet"``: the GPU database entry of ``gpu`` -- an **upper bound** (no kernel reaches it);
   * a profile JSON written by ``lcprof calibrate`` (GEMM peaks per dtype, copy bandwidth,
     attention-kernel rates per backend, dtype and length);
   * a results file (``.csv``/``.jsonl``): rates **fitted from a sweep** by the cost-model fit
     (``lcprof.explain.fit``): per dtype the matmul rate and memory bandwidth (median over the file's
     groups), per backend and dtype the attention rate;

   with ``gpu`` also given, memory capacity and links stay the GPU's.
2. otherwise the best profile at hand for ``gpu``: the newest profile whose ``gpu`` field names
   that database entry, searched in ``$LCPROF_PROFILES`` (folders separated by ``os.pathsep``),
   ``~/.lcprof/profiles`` and the profiles bundled with lcprof (``lcprof/data/profiles``);
3. otherwise the datasheet, labelled as an upper bound.

The returned :class:`RateSet` carries the rates whole (a :class:`lcprof.hardware.Hardware`,
attention rates by backend and length included) and a label every command prints. No torch.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lcprof.errors import LcprofError
from lcprof.hardware import Hardware, get_gpu, load_calibration

BUNDLED_PROFILES = Path(__file__).parent / "data" / "profiles"
KINDS = ("calibration", "fitted", "datasheet")


@dataclass(frozen=True)
class RateSet:
    """Rates for a prediction and where they came from (``kind``: calibration, fitted or datasheet)."""

    hardware: Hardware
    kind: str
    source: str  # a path, "bundled ...", or the GPU key

    @property
    def upper_bound(self) -> bool:
        return self.kind == "datasheet"

    @property
    def label(self) -> str:
        hw = self.hardware
        if self.kind == "datasheet":
            return f"datasheet {hw.key} (an upper bound: no kernel reaches it)"
        what = "calibration" if self.kind == "calibration" else "rates fitted from"
        return f"{what} {self.source} ({hw.name})"


def profile_dirs() -> list[Path]:
    """Where ``resolve_rates`` looks for profiles, in order."""
    dirs = [Path(p) for p in os.environ.get("LCPROF_PROFILES", "").split(os.pathsep) if p.strip()]
    dirs.append(Path.home() / ".lcprof" / "profiles")
    dirs.append(BUNDLED_PROFILES)
    return dirs


def _profile_meta(path: Path) -> dict | None:
    try:
        with open(path) as fh:
            e = json.load(fh)
    except (OSError, ValueError):
        return None
    if not isinstance(e, dict) or "peak_flops_per_s" not in e:
        return None
    return e


def find_profile(gpu_key: str) -> Path | None:
    """The newest profile measured on ``gpu_key`` (by its ``environment.date_utc``), or None."""
    best: tuple[str, int, Path] | None = None
    for rank, d in enumerate(profile_dirs()):
        if not d.is_dir():
            continue
        for p in sorted(d.glob("*.json")):
            e = _profile_meta(p)
            if e is None or e.get("gpu") != gpu_key:
                continue
            date = str((e.get("environment") or {}).get("date_utc", ""))
            cand = (date, -rank, p)
            if best is None or cand[:2] > best[:2]:
                best = cand
    return None if best is None else best[2]


def _with_gpu(hw: Hardware, gpu: Hardware | None) -> Hardware:
    """A measured profile keeps the named GPU's memory capacity and links."""
    if gpu is None:
        return hw
    return dataclasses.replace(hw, memory_bytes=gpu.memory_bytes,
                               interconnect_bytes_per_s=hw.interconnect_bytes_per_s or gpu.interconnect_bytes_per_s,
                               interconnect=hw.interconnect or gpu.interconnect)


def rates_from_results(path: str | Path, gpu: Hardware | None = None) -> Hardware:
    """Rates fitted from a sweep's results file (see the module docstring)."""
    from lcprof.explain.fit import fit_results

    fr = fit_results(path, target=None)
    by_dtype: dict[str, dict[str, list[float]]] = {}
    attention: dict[str, dict[str, float]] = {}
    for g in fr.groups:
        m = g.model
        if m is None or m.kind != "cost model":
            continue
        d = str(g.key["dtype"])
        slot = by_dtype.setdefault(d, {"matmul": [], "memory": []})
        for cls in ("matmul", "memory"):
            r = m.rate(cls)
            if np.isfinite(r):
                slot[cls].append(r)
        r = m.rate("attention")
        if np.isfinite(r):
            attention.setdefault(str(g.key["backend"]), {})[d] = r
    peaks = {d: float(np.median(v["matmul"])) for d, v in by_dtype.items() if v["matmul"]}
    mems = [r for v in by_dtype.values() for r in v["memory"]]
    if not peaks:
        raise LcprofError(f"cannot fit rates from {str(path)!r}: no group has a cost-model fit with a matmul rate "
                          "(it needs at least 3 lengths of a model lcprof knows)")
    if mems:
        bw = float(np.median(mems))
    elif gpu is not None:
        bw = gpu.hbm_bytes_per_s
    else:
        raise LcprofError(f"cannot fit rates from {str(path)!r}: its times show no memory-bound work to fit a "
                          "bandwidth to; give --gpu too (its bandwidth is used)")
    memory = gpu.memory_bytes if gpu is not None else 1 << 40
    return Hardware(key=f"fitted-{Path(path).stem}", name=f"fitted from {Path(path).name}", peak_flops_per_s=peaks,
                    hbm_bytes_per_s=bw, memory_bytes=memory, source=str(path), kind="fitted",
                    attention_flops_per_s=attention)


def resolve_rates(gpu: str | Hardware | None = None, calibration: str | Path | Hardware | None = None,
                  *, default_gpu: str | None = None) -> RateSet:
    """The rates to predict with (see the module docstring). ``default_gpu`` is used when neither
    option is given (``layer`` and ``ring`` name a GPU by default; ``compare`` does not)."""
    if isinstance(calibration, Hardware):
        return RateSet(calibration, calibration.kind if calibration.kind in KINDS else "calibration",
                       calibration.source or calibration.key)
    named = get_gpu(gpu) if gpu is not None else None
    if calibration is not None:
        text = str(calibration)
        if text.strip().lower() == "datasheet":
            if named is None and default_gpu is None:
                raise LcprofError("--calibration datasheet needs --gpu NAME")
            return RateSet(named or get_gpu(default_gpu), "datasheet", (named or get_gpu(default_gpu)).key)
        p = Path(text)
        if p.suffix.lower() in (".csv", ".jsonl", ".ndjson"):
            return RateSet(rates_from_results(p, named), "fitted", str(p))
        return RateSet(_with_gpu(load_calibration(p), named), "calibration", str(p))
    if named is None and default_gpu is not None:
        named = get_gpu(default_gpu)
    if named is None:
        raise LcprofError("predictions need rates: --gpu NAME (a datasheet, or the best profile at hand for it) "
                          "or --calibration PROFILE.json (from `lcprof calibrate`; use --device cpu for CPU rows) "
                          "or --calibration RESULTS.csv (rates fitted from a sweep)")
    found = find_profile(named.key)
    if found is not None:
        src = f"bundled {found.name}" if found.parent == BUNDLED_PROFILES else str(found)
        return RateSet(_with_gpu(load_calibration(found), named), "calibration", src)
    return RateSet(named, "datasheet", named.key)
