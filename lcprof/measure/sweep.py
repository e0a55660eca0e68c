"""Sweeps that lose nothing: one layer timed across backends, dtypes and lengths, row by row.

``run_sweep(model, ns, backends, dtypes, ...)`` runs every (dtype, backend, n) point of one layer:

1. **validate** everything first (model, n list, backend names, dtypes, device, phase, layer): a
   user mistake raises ``LcprofError`` before anything runs or any file is touched;
2. **pre-flight** each point: the backend's probe on (device, dtype); whether it can run the layer's
   mask in this phase (:meth:`Backend.plan`); the point's predicted memory -- activations of the
   backend's family (``cost.activation_bytes``, with the scores for eager and an explicit mask when
   one is materialized) + the layer's weights + the rotated input sets (and decode caches) + cuBLAS's
   workspace on CUDA -- against
   ``mem_cap_bytes`` or the device's free memory. A point that cannot run gets status
   ``skipped`` and the reason;
3. **correctness before timing**: each backend is compared with the float64 reference
   (:mod:`lcprof.measure.check`) once per dtype; a mismatch gives status ``error`` with the error
   values and no time;
4. **time** the rest (:func:`lcprof.measure.timer.measure`) with peak memory (reset per point). An
   out-of-memory error gives status ``oom`` (memory freed, the sweep goes on); any other exception
   gives ``error`` with its message (the sweep goes on).

Rows (``RESULT_COLUMNS``; shared/DESIGN.md's schema plus FLOPs, plan and environment columns) are
written to ``out`` the moment each completes: one ``write`` of the whole CSV line, then flush and
``os.fsync``; the header once, when the file is created. Timings are written as Python's shortest
round-trip repr: never rounded. ``resume=True`` keeps rows whose status is ok, oom or skipped, keyed
by (model, backend, dtype, device, batch, n, phase), drops error rows (and a torn last line) by an
atomic rewrite, and runs only what is missing, so nothing is duplicated. Without ``resume`` an
existing file is refused.
"""

from __future__ import annotations

import csv
import functools
import gc
import io
import os
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pandas as pd
import torch

from lcprof.cost.model import activation_bytes, cost
from lcprof.cost.ops import attention_dims
from lcprof.errors import LcprofError
from lcprof.measure import backends as B
from lcprof.measure.check import Checker, CheckResult, is_oom
from lcprof.measure.env import ENV_COLUMNS, PeakMemory, environment, free_memory_bytes
from lcprof.measure.layer import MOE_TIMINGS, DecoderLayer
from lcprof.measure.timer import Measurement, measure
from lcprof.spec import ModelSpec, load_model
from lcprof.units import dtype_bytes, fmt_bytes, fmt_seconds, parse_token_list

PHASES = ("prefill", "decode")
#: what identifies a point in a results file (a resume skips rows whose key is already done)
KEY_COLUMNS = ("model", "backend", "dtype", "device", "batch", "n", "phase", "layer", "moe_timing")
DONE_STATUSES = ("ok", "oom", "skipped")
RESULT_COLUMNS = (
    "model", "backend", "dtype", "device", "batch", "n", "time_s", "time_p10_s", "time_p90_s", "repeats",
    "peak_mem_bytes", "status", "reason", "phase",
    "predicted_flops", "useful_flops", "achieved_flops_per_s", "layer", "attention_kind", "window",
    "effective_mask", "mask_mode", "executed_family", "moe_timing", "mla_form", "ranks",
    "predicted_mem_bytes", "mem_cap_bytes", "peak_mem_source",
    "time_mean_s", "time_stdev_s", "spread_warning", "clock", "input_sets",
    "check_attn_rel_err", "check_layer_rel_err",
    *ENV_COLUMNS, "timestamp", "samples_s",
)
#: Rotate several input sets while one set is smaller than this; one larger set defeats caches by itself.
ROTATE_BELOW_BYTES = 256 << 20
N_INPUT_SETS = 3


# ----------------------------------------------------------------------------------------------
# Results file
# ----------------------------------------------------------------------------------------------

def _csv_line(values: Iterable) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(["" if v is None else v for v in values])
    return buf.getvalue()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(str(path.parent or Path(".")), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class ResultsWriter:
    """Append rows to a CSV file, each one flushed and fsynced as it is written."""

    def __init__(self, path: str | Path, columns: tuple[str, ...] = RESULT_COLUMNS) -> None:
        self.path = Path(path)
        self.columns = columns
        new = not self.path.exists() or self.path.stat().st_size == 0
        if new and self.path.parent and not self.path.parent.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a", newline="")
        if new:
            self._write(_csv_line(columns))
            _fsync_dir(self.path)

    def _write(self, text: str) -> None:
        self._fh.write(text)
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def write(self, row: dict) -> None:
        self._write(_csv_line(_cell(row.get(c)) for c in self.columns))

    def close(self) -> None:
        self._fh.close()


def _cell(v):
    if isinstance(v, (np.floating,)):
        v = float(v)
    if isinstance(v, (np.integer,)):
        v = int(v)
    if isinstance(v, float):
        return repr(v)  # shortest round-trip: never rounded
    return v


def read_done(path: str | Path, columns: tuple[str, ...] = RESULT_COLUMNS) -> set[tuple[str, ...]]:
    """Prepare ``path`` for a resume; return the keys of rows already done (ok, oom, skipped).

    A torn last line (a kill between write and newline) and ``error`` rows are removed by writing a
    cleaned copy and renaming it over the file (atomic); a header that is not ours is refused.
    """
    p = Path(path)
    if not p.exists() or p.stat().st_size == 0:
        return set()
    text = p.read_text()
    torn = not text.endswith("\n")
    if torn:
        text = text[: text.rfind("\n") + 1]
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        return set()
    header = tuple(rows[0])
    if header != tuple(columns):
        missing = [c for c in columns if c not in header]
        raise LcprofError(
            f"cannot resume {str(p)!r}: its columns are not lcprof sweep's "
            f"({'missing ' + ', '.join(missing[:5]) if missing else 'different order'}); choose another --out")
    idx = {c: i for i, c in enumerate(header)}
    keep, done, dropped = [rows[0]], set(), 0
    for r in rows[1:]:
        if len(r) != len(header):
            dropped += 1
            continue
        if r[idx["status"]] in DONE_STATUSES:
            keep.append(r)
            done.add(tuple(r[idx[c]] for c in KEY_COLUMNS))
        else:
            dropped += 1
    if torn or dropped:
        tmp = p.with_name(p.name + ".tmp")
        with open(tmp, "w", newline="") as fh:
            w = csv.writer(fh, lineterminator="\n")
            w.writerows(keep)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, p)
        _fsync_dir(p)
    return done


# ----------------------------------------------------------------------------------------------
# Points, pre-flight
# ----------------------------------------------------------------------------------------------

@dataclass
class Point:
    backend: str
    dtype: str
    n: int
    row: dict = field(default_factory=dict)
    plan: B.Plan | None = None
    pre_status: str | None = None  # skipped before running, with row['reason']

    def key(self, model: str, device: str, batch: int, phase: str, layer: int, moe_timing: str) -> tuple[str, ...]:
        return (model, self.backend, self.dtype, device, str(batch), str(self.n), phase, str(layer), moe_timing)


def _work(phase: str, n: int) -> tuple[int, int]:
    """(query tokens, keys) of a point: prefill n of n; decode 1 against n cached + itself."""
    return (n, n) if phase == "prefill" else (1, n + 1)


def input_set_bytes(spec: ModelSpec, layer_idx: int, n: int, *, batch: int, dtype: str, phase: str,
                    mla_form: str = "naive") -> int:
    """Bytes of one input set: the hidden states, plus (decode) the layer's cache of n + 1 slots."""
    s = dtype_bytes(dtype)
    n_q, n_k = _work(phase, n)
    x = batch * n_q * spec.hidden_size * s
    if phase == "prefill":
        return int(x)
    if spec.mla is not None:
        per_token = spec.mla.cache_dim
    else:
        per_token = spec.n_kv_heads * (spec.head_dim + spec.v_head_dim)
    return int(x + batch * n_k * per_token * s)


#: cuBLAS's workspace, which torch takes from its caching allocator on CUDA (32 MiB on Hopper):
#: the constant part of every CUDA point's measured peak (reports/h100-measure/).
CUDA_WORKSPACE_BYTES = 32 << 20


def predict_point_memory(spec: ModelSpec, layer_idx: int, n: int, *, plan: B.Plan,
                         batch: int, dtype: str, phase: str, input_sets: int, mla_form: str = "naive",
                         workspace_bytes: int = 0, moe_timing: str = "dense-equivalent") -> dict:
    """Predicted peak bytes of one point, by part (all ints): activations, weights, inputs, total.

    Activations are ``cost.activation_bytes`` (the layer's own layout: the input x of the set in use
    is one of them), eager's when the plan's kernel stores the scores, else tiled's plus the boolean
    mask a tiled kernel is handed when the plan materializes one. Inputs are the other sets' hidden states and every set's KV cache
    (decode). ``workspace_bytes``: a constant the device adds (``CUDA_WORKSPACE_BYTES`` on CUDA).
    A routed MoE holds every expert's weights; its activations are counted as the dense-equivalent
    MLP's (an upper bound: each expert's intermediates cover only its share of the tokens).
    """
    store = "fp32" if dtype == "tf32" else dtype
    n_q, n_k = _work(phase, n)
    prefix = n_k - n_q
    family = "eager" if plan.stores_scores else "tiled"
    act = float(activation_bytes(spec, n_q, prefix=prefix, batch=batch, dtype=store, family=family,
                                 layer=layer_idx, materialize_mask=(plan.mode != "none"),
                                 mla_form=mla_form)[0])
    if plan.mode == "explicit" and not plan.stores_scores:
        act += n_q * n_k  # the boolean mask a tiled kernel is handed
    s = dtype_bytes(store)
    weights = DecoderLayer.param_count(spec, layer_idx, mla_form=mla_form, moe_timing=moe_timing) * s
    x_bytes = batch * n_q * spec.hidden_size * s
    one_set = input_set_bytes(spec, layer_idx, n, batch=batch, dtype=store, phase=phase)
    inputs = input_sets * one_set - x_bytes  # the x in use is counted with the activations
    total = int(act + weights + inputs + workspace_bytes)
    return {"activation_bytes": int(act), "weight_bytes": int(weights), "input_bytes": int(inputs),
            "workspace_bytes": int(workspace_bytes), "total_bytes": total}


# ----------------------------------------------------------------------------------------------
# The sweep
# ----------------------------------------------------------------------------------------------

def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def _free(device: torch.device, collect: bool = False) -> None:
    """Drop the cached mask and give cached CUDA blocks back; ``collect`` also runs the garbage
    collector (after an exception, whose traceback frames hold tensors in cycles)."""
    B.clear_mask_cache()
    if collect:
        gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


class _TF32:
    """Set TF32 matmuls on for dtype tf32 and off otherwise; restore on exit."""

    def __init__(self, on: bool) -> None:
        self.on = on

    def __enter__(self):
        self.saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        torch.backends.cuda.matmul.allow_tf32 = self.on
        torch.backends.cudnn.allow_tf32 = self.on
        return self

    def __exit__(self, *exc):
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = self.saved


def _progress_fn(progress) -> Callable[[str], None]:
    if callable(progress):
        return progress
    if progress:
        return lambda msg: print(msg, file=sys.stderr, flush=True)
    return lambda msg: None


def validate(model, ns, backends, dtypes, device, phase, batch, layer, ranks, mla_form):
    """Everything a user can get wrong, checked before anything runs (LcprofError)."""
    spec = load_model(model)
    ns = parse_token_list(ns)
    if isinstance(backends, str):
        backends = [b.strip() for b in backends.split(",") if b.strip()]
    if not backends:
        raise LcprofError("no backends given; see `lcprof backends`")
    for b in backends:
        B.get_backend(b)
    if isinstance(dtypes, str):
        dtypes = [d.strip() for d in dtypes.split(",") if d.strip()]
    from lcprof.units import dtype_name

    dtypes = [dtype_name(d, allowed=tuple(B.TORCH_DTYPES)) for d in dtypes]
    if not dtypes:
        raise LcprofError("no dtypes given; use fp32, tf32, bf16 or fp16")
    dev = B.resolve_device(device)
    if "tf32" in dtypes and dev.type != "cuda":
        raise LcprofError("dtype tf32 needs a CUDA device (TF32 is a tensor-core mode); use fp32 on the CPU")
    if phase not in PHASES:
        raise LcprofError(f"unknown phase {phase!r}; use prefill or decode")
    if int(batch) < 1:
        raise LcprofError(f"batch must be >= 1, got {batch}")
    if not 0 <= int(layer) < spec.n_layers:
        raise LcprofError(f"layer {layer} out of range 0..{spec.n_layers - 1} for {spec.name}")
    from lcprof.measure.layer import check_buildable

    check_buildable(spec, spec.layers[int(layer)])  # the measured layer is attention + MLP: refuse other kinds
    if int(ranks) < 1:
        raise LcprofError(f"ranks must be >= 1, got {ranks}")
    if mla_form is not None and mla_form not in ("naive", "absorbed"):
        raise LcprofError(f"unknown MLA form {mla_form!r}; use naive or absorbed")
    return spec, ns, list(dict.fromkeys(backends)), list(dict.fromkeys(dtypes)), dev


@dataclass(frozen=True)
class _Settings:
    """What every point of one sweep shares."""

    spec: ModelSpec
    dev: torch.device
    env: dict
    phase: str
    batch: int
    layer: int
    budget_s: float
    mem_cap_bytes: int | None
    ranks: int
    mla_form: str | None  # None for non-MLA models
    seed: int
    min_reps: int
    max_reps: int
    flush_l2: bool
    check: bool
    cuda_graph: bool = False
    moe: str = "dense-equivalent"  # how MoE layers run: dense-equivalent or routed

    @property
    def form(self) -> str:
        return self.mla_form or "naive"

    @property
    def moe_timing(self) -> str:
        lspec = self.spec.layers[self.layer]
        return self.moe if (lspec.moe and self.spec.moe is not None) else "n/a"


def run_sweep(model: str | ModelSpec, ns, backends, dtypes="fp32", *, device: str | None = None,
              phase: str = "prefill", batch: int = 1, layer: int = 0, budget_s: float = 1.0,
              mem_cap_bytes: int | None = None, out: str | Path | None = None, resume: bool = False,
              ranks: int = 1, mla_form: str | None = None, seed: int = 0, min_reps: int = 3,
              max_reps: int = 100, flush_l2: bool = False, check: bool = True, cuda_graph: bool = False,
              moe_timing: str = "dense-equivalent",
              progress: bool | Callable[[str], None] = False) -> pd.DataFrame:
    """Time one layer over (dtype, backend, n) points; see the module docstring.

    ``ns``: token counts (``"128..2048"``, a list); ``backends``/``dtypes``: names or comma lists.
    ``mla_form`` (MLA models): ``naive`` (default for prefill) or ``absorbed`` (default for decode).
    ``cuda_graph`` (CUDA only): time CUDA-graph replays of each call (see ``timer.measure``); the
    rows' ``clock`` reads ``cuda_graph``. ``moe_timing`` (MoE layers): ``dense-equivalent`` or
    ``routed`` (see :mod:`lcprof.measure.layer`).
    Returns the rows of this sweep's points (read back from ``out`` when given, so resumed rows are
    included), one per point.
    """
    spec, ns, backends, dtypes, dev = validate(model, ns, backends, dtypes, device, phase, batch, layer,
                                               ranks, mla_form)
    if cuda_graph and dev.type != "cuda":
        raise LcprofError(f"--cuda-graph needs a CUDA device; this sweep runs on {dev}")
    if moe_timing not in MOE_TIMINGS:
        raise LcprofError(f"unknown MoE timing {moe_timing!r}; use {' or '.join(MOE_TIMINGS)}")
    if spec.mla is not None:
        mla_form = mla_form or ("absorbed" if phase == "decode" else "naive")
    else:
        mla_form = None
    say = _progress_fn(progress)
    done: set = set()
    if out is not None:
        out = Path(out)
        if out.exists() and out.stat().st_size > 0 and not resume:
            raise LcprofError(f"{str(out)!r} exists; pass --resume to continue it, or choose another --out")
        if resume:
            done = read_done(out)
    cfg = _Settings(spec=spec, dev=dev, env=environment(dev), phase=phase, batch=int(batch), layer=int(layer),
                    budget_s=float(budget_s), mem_cap_bytes=mem_cap_bytes, ranks=int(ranks), mla_form=mla_form,
                    seed=int(seed), min_reps=int(min_reps), max_reps=int(max_reps), flush_l2=bool(flush_l2),
                    check=bool(check), cuda_graph=bool(cuda_graph), moe=moe_timing)
    points = [Point(b, d, n) for d in dtypes for b in backends for n in ns]
    keys = [p.key(spec.name, str(dev), cfg.batch, phase, cfg.layer, cfg.moe_timing) for p in points]
    todo = [p for p, k in zip(points, keys) if k not in done]
    if done:
        say(f"resuming {out}: {len(points) - len(todo)} of {len(points)} points already done")
    writer = ResultsWriter(out) if out is not None else None
    rows: list[dict] = []
    counter = [len(points) - len(todo)]

    def emit(p: Point) -> None:
        counter[0] += 1
        r = p.row
        rows.append(r)
        if writer is not None:
            writer.write(r)
        t = f" {fmt_seconds(r['time_s'])}" if r.get("time_s") is not None else ""
        why = f" ({r['reason']})" if r.get("reason") and r["status"] != "ok" else ""
        say(f"[{counter[0]}/{len(points)}] {p.backend} {p.dtype} n={p.n} {phase}: {r['status']}{t}{why}")

    try:
        for dt in dtypes:
            group = [p for p in todo if p.dtype == dt]
            if group:
                _run_dtype(cfg, group, dt, emit)
    finally:
        if writer is not None:
            writer.close()
        _free(dev, collect=True)
    if out is None:
        return pd.DataFrame(rows, columns=list(RESULT_COLUMNS))
    df = pd.read_csv(out, keep_default_na=True)
    key_text = pd.read_csv(out, dtype=str, keep_default_na=False, usecols=list(KEY_COLUMNS))  # "n/a" stays text
    wanted = set(keys)
    mask = [tuple(r) in wanted for r in key_text[list(KEY_COLUMNS)].itertuples(index=False)]
    return df[mask].reset_index(drop=True)


def _mask_for(spec: ModelSpec, layer: int, n_q: int, n_k: int) -> B.AttnMask:
    lspec = spec.layers[layer]
    return B.AttnMask(lspec.attn, n_q, n_k, lspec.window)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _preflight(cfg: _Settings, p: Point) -> None:
    """Fill the point's row with its plan, FLOPs and predicted memory; mark it skipped if it cannot run."""
    spec, dt, lspec = cfg.spec, p.dtype, cfg.spec.layers[cfg.layer]
    store = "fp32" if dt == "tf32" else dt
    b = B.get_backend(p.backend)
    row = {c: None for c in RESULT_COLUMNS}
    row.update(cfg.env)
    row.update({
        "model": spec.name, "backend": p.backend, "dtype": dt, "device": str(cfg.dev), "batch": cfg.batch,
        "n": p.n, "phase": cfg.phase, "layer": cfg.layer, "attention_kind": lspec.attn, "window": lspec.window,
        "moe_timing": cfg.moe_timing, "mla_form": cfg.mla_form,
        "ranks": cfg.ranks if p.backend == "striped-ring" else None, "reason": "",
        "mem_cap_bytes": cfg.mem_cap_bytes,
    })
    p.row = row
    ok, why = b.probe(cfg.dev, B.torch_dtype(dt)[0])
    if not ok:
        p.pre_status, row["reason"] = "skipped", f"backend unavailable on {cfg.dev.type} {dt}: {why}"
        return
    n_q, n_k = _work(cfg.phase, p.n)
    mask = _mask_for(spec, cfg.layer, n_q, n_k)
    plan, why = b.plan(mask, cfg.phase)
    if plan is None:
        p.pre_status, row["reason"] = "skipped", why
        return
    if b.name == "sdpa" and plan.executed_family != "eager":
        # PyTorch picks the kernel: when it is the math one, the whole score rectangle is computed
        # and stored (e.g. MLA's unequal q/k and v head dims on the CPU)
        kv_heads, qk_dim, v_dim = attention_dims(spec, cfg.form)
        kernel = B.sdpa_auto_kernel(cfg.dev, B.torch_dtype(dt)[0], heads=spec.n_heads, kv_heads=kv_heads,
                                    qk_dim=qk_dim, v_dim=v_dim, mask=mask)
        if kernel == "math":
            plan = B.Plan(plan.mode, "eager", stores_scores=True)
    p.plan = plan
    c = cost(spec, p.n, phase=cfg.phase, batch=cfg.batch, dtype=store, family=plan.executed_family,
             layer=cfg.layer, mla_form=cfg.mla_form)
    set_bytes = input_set_bytes(spec, cfg.layer, p.n, batch=cfg.batch, dtype=store, phase=cfg.phase)
    sets = N_INPUT_SETS if set_bytes < ROTATE_BELOW_BYTES else 1
    mem = predict_point_memory(spec, cfg.layer, p.n, plan=plan, batch=cfg.batch, dtype=dt,
                               phase=cfg.phase, input_sets=sets, mla_form=cfg.form,
                               workspace_bytes=CUDA_WORKSPACE_BYTES if cfg.dev.type == "cuda" else 0,
                               moe_timing=cfg.moe)
    row.update({
        "mask_mode": plan.mode, "effective_mask": mask.effective().kind, "executed_family": plan.executed_family,
        "predicted_flops": float(c.flops["total"][0]), "useful_flops": float(c.useful_flops["total"][0]),
        "input_sets": sets, "predicted_mem_bytes": mem["total_bytes"],
    })
    cap = cfg.mem_cap_bytes
    if cap is not None and mem["total_bytes"] > cap:
        p.pre_status = "skipped"
        row["reason"] = (f"predicted memory {fmt_bytes(mem['total_bytes'])} > cap {fmt_bytes(cap)} "
                         f"(activations {fmt_bytes(mem['activation_bytes'])}, weights "
                         f"{fmt_bytes(mem['weight_bytes'])}, inputs {fmt_bytes(mem['input_bytes'])})")


def _check_backends(cfg: _Settings, layer_obj: Callable[[], DecoderLayer], names: list[str], dt: str) -> dict:
    """name -> CheckResult, or the exception (OOM) that stopped the check; the float64 reference is
    built once for all backends and freed before any timing."""
    checks: dict[str, CheckResult | BaseException] = {}
    try:
        checker = Checker(layer_obj(), dtype=dt, phase=cfg.phase, batch=1)
        for name in names:
            try:
                checks[name] = checker.check(name, ranks=cfg.ranks)
            except Exception as exc:  # noqa: BLE001 - OOM during the check
                checks[name] = exc
        checker.release()
        del checker
    except Exception as exc:  # noqa: BLE001 - building the layer failed (OOM)
        for name in names:
            checks[name] = exc
    _free(cfg.dev, collect=True)
    return checks


def _apply_check(p: Point, res: CheckResult | BaseException | None) -> None:
    if isinstance(res, BaseException):
        p.pre_status = "oom" if is_oom(res) else "error"
        p.row["reason"] = f"during correctness check: {_first_line(res)}"
    elif res is not None:
        p.row["check_attn_rel_err"] = res.attn_rel_err
        p.row["check_layer_rel_err"] = res.layer_rel_err
        if not res.ok:
            p.pre_status, p.row["reason"] = "error", res.reason


def _fits_free_memory(cfg: _Settings, p: Point, resident_bytes: int) -> bool:
    """Without --mem-cap: compare the prediction (less the weights already resident) with free memory."""
    free = free_memory_bytes(cfg.dev)
    if free is None:
        return True
    p.row["mem_cap_bytes"] = int(free + resident_bytes)
    if p.row["predicted_mem_bytes"] - resident_bytes <= free:
        return True
    p.row["status"] = "skipped"
    p.row["reason"] = (f"predicted memory {fmt_bytes(p.row['predicted_mem_bytes'])} > "
                       f"{fmt_bytes(free + resident_bytes)} free on {cfg.dev}")
    return False


def _run_dtype(cfg: _Settings, group: list[Point], dt: str, emit: Callable[[Point], None]) -> None:
    """All points of one dtype: pre-flight, one layer build, correctness checks, then timing."""
    torch_dt, tf32 = B.torch_dtype(dt)
    built: dict = {"layer": None}

    def layer_obj() -> DecoderLayer:
        if built["layer"] is None:
            lay = DecoderLayer(cfg.spec, cfg.layer, seed=cfg.seed, mla_form=cfg.form, moe_timing=cfg.moe)
            built["layer"] = lay.to(device=cfg.dev, dtype=torch_dt).eval()
        return built["layer"]

    for p in group:
        _preflight(cfg, p)
    with _TF32(tf32), torch.inference_mode():
        names = list(dict.fromkeys(p.backend for p in group if p.pre_status is None))
        checks = _check_backends(cfg, layer_obj, names, dt) if (cfg.check and names) else {}
        for p in group:
            if p.pre_status is None:
                _apply_check(p, checks.get(p.backend))
            if p.pre_status is not None:
                p.row["status"] = p.pre_status
            elif cfg.mem_cap_bytes is not None or _fits_free_memory(
                    cfg, p, built["layer"].param_bytes if built["layer"] is not None else 0):
                _time_point(cfg, p, layer_obj, torch_dt)
            p.row["timestamp"] = _now()
            emit(p)
    built["layer"] = None
    _free(cfg.dev, collect=True)


def _make_inputs(cfg: _Settings, lay: DecoderLayer, p: Point, torch_dt) -> list:
    """``input_sets`` independent inputs: (x, None) for prefill, (x, cache of n + 1 slots) for decode."""
    g = torch.Generator(device="cpu").manual_seed(cfg.seed + 7919 * p.n)
    sets = []
    for _ in range(int(p.row["input_sets"])):
        if cfg.phase == "prefill":
            x = torch.randn(cfg.batch, p.n, lay.spec.hidden_size, generator=g).to(device=cfg.dev, dtype=torch_dt)
            sets.append((x, None))
        else:
            x = torch.randn(cfg.batch, 1, lay.spec.hidden_size, generator=g).to(device=cfg.dev, dtype=torch_dt)
            cache = lay.random_cache(cfg.batch, p.n + 1, generator=g, dtype=torch_dt, device=cfg.dev)
            sets.append((x, cache))
    return sets


def _time_point(cfg: _Settings, p: Point, layer_obj: Callable[[], DecoderLayer], torch_dt) -> None:
    """Time one point; OOM -> status oom, any other exception -> status error; memory freed either way."""
    inputs = None
    failed = False
    try:
        with PeakMemory(cfg.dev) as pm:
            lay = layer_obj()
            lay.attention = functools.partial(B.get_backend(p.backend), ranks=cfg.ranks)
            inputs = _make_inputs(cfg, lay, p, torch_dt)
            m: Measurement = measure(lambda inp: lay(inp[0], inp[1]), inputs, device=cfg.dev,
                                     budget_s=cfg.budget_s, min_reps=cfg.min_reps, max_reps=cfg.max_reps,
                                     flush_l2=cfg.flush_l2, cuda_graph=cfg.cuda_graph)
        p.row.update(m.summary())
        if m.note:
            p.row["reason"] = m.note
        p.row["peak_mem_bytes"] = pm.peak_bytes
        p.row["peak_mem_source"] = pm.source
        p.row["achieved_flops_per_s"] = p.row["predicted_flops"] / m.median_s if m.median_s > 0 else None
        p.row["samples_s"] = " ".join(repr(float(s)) for s in m.samples_s)
        p.row["status"] = "ok"
    except Exception as exc:  # noqa: BLE001 - a failing point must not stop the sweep
        failed = True
        p.row["status"] = "oom" if is_oom(exc) else "error"
        p.row["reason"] = _first_line(exc)
    finally:
        inputs = None  # noqa: F841 - drop the inputs before freeing
    _free(cfg.dev, collect=failed)
