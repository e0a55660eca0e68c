"""Whole models and single layers, lcprof's or transformers', timed over lengths and phases, row by row.

``run_model_sweep(model, ns, phases=..., impl=..., backends=..., target=...)`` runs every
(dtype, phase, backend, n) point of one *target*:

* ``target="model"`` -- the whole model (:class:`lcprof.measure.model.Model`, or transformers' model
  class with the same weights, ``impl="transformers"``): prefill of n tokens (the time to the first
  token's logits), or one decode step at a context of n tokens (the time per output token);
* ``target="layer:i"`` -- layer i alone, lcprof's DecoderLayer or transformers' decoder layer, called
  with the arguments transformers' own model hands it (its mask, position embeddings and cache).

Each point, as :mod:`lcprof.measure.sweep` does for one layer:

1. **validate** everything first (LcprofError before anything runs or any file is touched);
2. **pre-flight**: the backend's probe; whether it runs every distinct layer's mask
   (:meth:`Backend.plan`); the executed and useful FLOPs (``cost``, per distinct layer with the family
   it executes, plus the LM head); the predicted peak memory (:func:`predict_model_memory`: weights
   + every layer's decode cache + the largest layer's activation peak from
   ``cost.activation_steps`` + the dense masks the backend is handed + logits + cuBLAS's workspace)
   against ``mem_cap_bytes`` or the device's free memory. When the whole model does not fit, lcprof's
   implementation times **one instance of each distinct layer kind** and the head (embedding, final
   norm, LM head) instead and sums them by the schedule: ``time = sum_k count_k x t_k + t_head``,
   and the row says ``scope=kinds-scaled`` (p10/p90 are summed the same way: a band, not a
   percentile). What does not fit either way is ``skipped`` with its reason;
3. **correctness before timing**, once per (dtype, phase, backend): lcprof's implementation checks each
   distinct layer kind against its float64 reference (:class:`lcprof.measure.check.Checker`);
   transformers' is checked against lcprof's float64 model on the first layers of the schedule
   (one of each kind) at 64 tokens (:func:`lcprof.measure.hf.agree_model`). A mismatch gives
   status ``error`` and no time;
4. **time** with :func:`lcprof.measure.timer.measure` (CUDA graphs for lcprof's decode steps when
   ``cuda_graph``); OOM gives ``oom``, any other exception ``error``; the sweep goes on.

Rows (``MODEL_COLUMNS``: DESIGN.md's schema plus ``impl``, ``target``, ``scope`` and the parts of the
prediction) are written and fsynced as each completes; ``resume`` keeps ok, oom and skipped rows
keyed by ``lcprof.results.POINT_KEY`` (one implementation and target per file) and runs the rest.

transformers' decode steps append to its DynamicCache (``torch.cat``), so r timed steps span contexts
n .. n + r - 1 (the row's ``reason`` says so); they are not captured in CUDA graphs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd
import torch

from lcprof.errors import LcprofError
from lcprof.measure.execution import Execution, ModelWorkload
from lcprof.measure import backends as B
from lcprof.measure.check import Checker, is_oom
from lcprof.measure.env import environment, tf32_mode
from lcprof.measure.layer import MOE_TIMINGS
from lcprof.measure.model import build_layer, distinct_layers, kind_label
from lcprof.measure.model_preflight import preflight
from lcprof.measure.model_timing import _free, _Subject, time_point
from lcprof.measure.sweep import _first_line, _now, _progress_fn
from lcprof.results import ENV_COLUMNS, LOAD_COLUMNS, ResultsLock, ResultsWriter, point_key, prepare_resume
from lcprof.spec import ModelSpec, load_model
from lcprof.units import dtype_name, fmt_seconds, parse_token_list

IMPLS = ("lcprof", "transformers")
PHASES = ("prefill", "decode")
SCOPES = ("model", "kinds-scaled", "layer")
#: what a file of one (impl, target) is keyed by: lcprof.results.POINT_KEY (its layer, MLA form and
#: CUDA-graph columns included); a file holds one implementation and one target (resume checks it)
FILE_COLUMNS = ("impl", "target")
MODEL_COLUMNS = (
    "model", "impl", "backend", "dtype", "device", "batch", "n", "time_s", "time_p10_s", "time_p90_s", "repeats",
    "peak_mem_bytes", "status", "reason", "phase", "target", "scope", "model_config", "layer", "layers",
    "scaled_parts", "executed_family", "kind_families", "moe_timing", "mla_form", "cuda_graph",
    "predicted_flops", "useful_flops", "achieved_flops_per_s",
    "predicted_mem_bytes", "weight_bytes", "cache_bytes", "activation_bytes", "mem_cap_bytes", "peak_mem_source",
    "time_mean_s", "time_stdev_s", "spread_warning", "clock", "input_sets",
    "check_rel_err", "check_ref_rel_err", "impl_version", *LOAD_COLUMNS, *ENV_COLUMNS, "timestamp", "samples_s",
)
CHECK_N = 64


# ----------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------

def _list(value) -> list[str]:
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",")]
    return list(dict.fromkeys(str(v) for v in value if str(v).strip()))


def parse_target(target: str | None, spec: ModelSpec) -> int | None:
    """``model`` -> None; ``layer`` -> 0; ``layer:i`` -> i (checked against the schedule)."""
    t = str(target or "model").strip().lower()
    if t == "model":
        return None
    if t == "layer":
        return 0
    if t.startswith("layer:"):
        try:
            i = int(t.split(":", 1)[1])
        except ValueError:
            i = -1
        if 0 <= i < spec.n_layers:
            return i
        raise LcprofError(f"target {target!r}: layer must be 0..{spec.n_layers - 1} for {spec.name}")
    raise LcprofError(f"unknown target {target!r}; use model, layer or layer:N")


def _target_name(layer_idx: int | None) -> str:
    return "model" if layer_idx is None else f"layer:{layer_idx}"


def _backends(impl: str, names: list[str]) -> list[str]:
    if not names:
        raise LcprofError("no backends given; see `lcprof backends`")
    if impl == "lcprof":
        for b in names:
            B.get_backend(b)
        return names
    from lcprof.measure.hf import BACKEND_OF

    out = []
    for b in names:
        b = BACKEND_OF.get(b, b)  # transformers' own names accepted
        if b not in BACKEND_OF.values():
            raise LcprofError(f"--impl transformers: unknown attention implementation {b!r}; use "
                              f"{', '.join(BACKEND_OF.values())} (transformers' {', '.join(BACKEND_OF)})")
        out.append(b)
    return list(dict.fromkeys(out))


@dataclass(frozen=True)
class _Settings:
    spec: ModelSpec
    source: str | None  # the preset name or config path the model came from (compare reloads it)
    impl: str
    layer_idx: int | None
    dev: torch.device
    env: dict
    batch: int
    budget_s: float
    mem_cap_bytes: int | None
    seed: int
    min_reps: int
    max_reps: int
    cuda_graph: bool
    moe: str
    check: bool
    init: str
    allow_scaled: bool

    @property
    def target(self) -> str:
        return _target_name(self.layer_idx)

    @property
    def moe_timing(self) -> str:
        return self.moe if self.spec.moe is not None else "n/a"

    def layers_timed(self) -> list[tuple[int, int]]:
        """(first index, count) of the distinct layers this target runs."""
        if self.layer_idx is not None:
            return [(self.layer_idx, 1)]
        return distinct_layers(self.spec)

    def graph(self, phase: str) -> bool:
        """CUDA graphs apply to lcprof's decode steps (transformers' cache grows; prefill is GPU-bound)."""
        return self.cuda_graph and phase == "decode" and self.impl == "lcprof"

    def mla_form(self, phase: str) -> str | None:
        if self.spec.mla is None:
            return None
        return "absorbed" if phase == "decode" else "naive"


@dataclass
class _Point:
    backend: str
    dtype: str
    phase: str
    n: int
    row: dict = field(default_factory=dict)
    families: dict = field(default_factory=dict)  # first layer index -> executed family
    scope: str = "model"
    pre_status: str | None = None

    def key_fields(self, cfg: _Settings) -> dict:
        """The point-key columns of this point (``lcprof.results.POINT_KEY``)."""
        return {"model": cfg.spec.name, "backend": self.backend, "dtype": self.dtype, "device": str(cfg.dev),
                "batch": cfg.batch, "n": self.n, "phase": self.phase, "layer": cfg.layer_idx,
                "moe_timing": cfg.moe_timing, "mla_form": cfg.mla_form(self.phase) or "",
                "cuda_graph": cfg.graph(self.phase)}

    def key(self, cfg: _Settings) -> tuple[str, ...]:
        return point_key(self.key_fields(cfg))


# ----------------------------------------------------------------------------------------------
# The sweep
# ----------------------------------------------------------------------------------------------

def run_model_sweep(workload: ModelWorkload, execution: Execution = Execution(), *, device: str | None = None,
                    out: str | Path | None = None, resume: bool = False,
                    progress: bool | Callable[[str], None] = False) -> pd.DataFrame:
    """Time a whole model (or one layer) over the (dtype, phase, backend, n) points of ``workload``,
    each as ``execution`` says; see the module docstring.

    ``impl``: ``lcprof`` or ``transformers`` (backends then name its attention implementations:
    eager, sdpa, flash-attn = flash_attention_2). ``moe_timing``: lcprof's MoE layers
    (dense-equivalent by default); transformers routes, so it gets ``routed``. ``init``: ``seeded``
    (CPU default) or ``device`` (CUDA default; see :mod:`lcprof.measure.model`). ``execution``'s
    ``flush_l2`` and ``max_attempts`` are the layer sweep's: a whole-model sweep refuses them.
    Returns the rows of this sweep's points (read back from ``out`` when given).
    """
    if not isinstance(workload, ModelWorkload):
        raise LcprofError(f"run_model_sweep needs a ModelWorkload, got {type(workload).__name__}")
    if not isinstance(execution, Execution):
        raise LcprofError(f"run_model_sweep needs an Execution, got {type(execution).__name__}")
    if execution.flush_l2 or execution.max_attempts != Execution().max_attempts:
        raise LcprofError("a whole-model sweep has no L2 flushing and no re-measuring of suspect points")
    w, x = workload, execution
    model, ns, phases, impl, backends, dtypes = w.model, w.ns, w.phases, w.impl, w.backends, w.dtypes
    target, batch, moe_timing, init, allow_scaled = w.target, w.batch, w.moe_timing, w.init, w.allow_scaled
    budget_s, mem_cap_bytes, seed, min_reps, max_reps = x.budget_s, x.mem_cap_bytes, x.seed, x.min_reps, x.max_reps
    cuda_graph, check = x.cuda_graph, x.check
    spec = load_model(model)
    ns = parse_token_list(ns)
    phases = _list(phases)
    for ph in phases:
        if ph not in PHASES:
            raise LcprofError(f"unknown phase {ph!r}; use prefill and/or decode")
    if impl not in IMPLS:
        raise LcprofError(f"unknown implementation {impl!r}; use {' or '.join(IMPLS)}")
    layer_idx = parse_target(target, spec)
    dtypes = [dtype_name(d, allowed=tuple(B.TORCH_DTYPES)) for d in _list(dtypes)]
    if not dtypes:
        raise LcprofError("no dtypes given; use fp32, tf32, bf16 or fp16")
    dev = B.resolve_device(device)
    if "tf32" in dtypes and dev.type != "cuda":
        raise LcprofError("dtype tf32 needs a CUDA device (TF32 is a tensor-core mode); use fp32 on the CPU")
    if cuda_graph and dev.type != "cuda":
        raise LcprofError(f"--cuda-graph needs a CUDA device; this sweep runs on {dev}")
    if int(batch) < 1:
        raise LcprofError(f"batch must be >= 1, got {batch}")
    if impl == "transformers":
        from lcprof.measure.hf import _require

        _require(spec)
        if moe_timing not in (None, "routed") and spec.moe is not None:
            raise LcprofError("--impl transformers routes MoE tokens: use --moe-timing routed (or leave it out)")
        moe_timing = "routed"
    moe_timing = moe_timing or "dense-equivalent"
    if moe_timing not in MOE_TIMINGS:
        raise LcprofError(f"unknown MoE timing {moe_timing!r}; use {' or '.join(MOE_TIMINGS)}")
    backends = _backends(impl, _list(backends))
    init = init or ("device" if dev.type == "cuda" else "seeded")
    for lidx in range(spec.n_layers) if layer_idx is None else [layer_idx]:
        build_layer(spec, lidx, moe_timing=moe_timing, materialize=False)  # an unmeasured kind: refused now
    say = _progress_fn(progress)
    lock = None
    if out is not None:
        out = Path(out)
        if out.exists() and out.is_dir():
            raise LcprofError(f"--out {str(out)!r} is a folder; give a results file such as {str(out / 'model.csv')!r}")
        if out.exists() and out.stat().st_size > 0 and not resume:
            raise LcprofError(f"{str(out)!r} exists; pass --resume to continue it, or choose another --out")
        if out.parent and not out.parent.exists():
            try:
                out.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise LcprofError(f"cannot create folder {str(out.parent)!r}: {exc.strerror or exc}") from None
            say(f"created folder {out.parent}")
        lock = ResultsLock(out).acquire()
    try:
        return _run_locked(model, spec, ns, phases, impl, layer_idx, dtypes, dev, batch, budget_s, mem_cap_bytes,
                           out, resume, seed, min_reps, max_reps, cuda_graph, moe_timing, check, init, allow_scaled,
                           backends, say)
    finally:
        if lock is not None:
            lock.release()


def _done_keys(out: Path, impl: str, target: str) -> set:
    """Prepare ``out`` for a resume; the point keys already done. A file holds one implementation and
    one target: rows of another are refused (their point keys would collide)."""
    rows = prepare_resume(out, MODEL_COLUMNS)
    for r in rows.values():
        if (r.get("impl") or "lcprof", r.get("target") or "model") != (impl, target):
            raise LcprofError(f"cannot resume {str(out)!r}: it holds {r.get('impl')} {r.get('target')} rows and this "
                              f"sweep is {impl} {target}; one file per implementation and target")
    return set(rows)


def _run_locked(model, spec, ns, phases, impl, layer_idx, dtypes, dev, batch, budget_s, mem_cap_bytes, out, resume,
                seed, min_reps, max_reps, cuda_graph, moe_timing, check, init, allow_scaled, backends, say):
    done = _done_keys(out, impl, _target_name(layer_idx)) if (out is not None and resume) else set()
    source = None if isinstance(model, ModelSpec) else str(model)
    cfg = _Settings(spec=spec, source=source, impl=impl, layer_idx=layer_idx, dev=dev, env=environment(dev), batch=int(batch),
                    budget_s=float(budget_s), mem_cap_bytes=mem_cap_bytes, seed=int(seed), min_reps=int(min_reps),
                    max_reps=int(max_reps), cuda_graph=bool(cuda_graph), moe=moe_timing, check=bool(check),
                    init=init, allow_scaled=bool(allow_scaled))
    points = [_Point(b, d, ph, n) for d in dtypes for ph in phases for b in backends for n in ns]
    keys = [p.key(cfg) for p in points]
    todo = [p for p, k in zip(points, keys) if k not in done]
    if len(points) > len(todo):
        say(f"resuming {out}: {len(points) - len(todo)} of {len(points)} points already done")
    writer = ResultsWriter(out, MODEL_COLUMNS) if out is not None else None
    rows: list[dict] = []
    counter = [len(points) - len(todo)]

    def emit(p: _Point) -> None:
        counter[0] += 1
        r = p.row
        rows.append(r)
        if writer is not None:
            writer.write(r)
        t = f" {fmt_seconds(r['time_s'])}" if r.get("time_s") is not None else ""
        why = f" ({r['reason']})" if r.get("reason") and r["status"] != "ok" else ""
        say(f"[{counter[0]}/{len(points)}] {impl} {cfg.target} {p.backend} {p.dtype} n={p.n} {p.phase}: "
            f"{r['status']}{t}{why}")

    try:
        for dt in dtypes:
            group = [p for p in todo if p.dtype == dt]
            if group:
                _run_dtype(cfg, group, dt, emit)
    finally:
        if writer is not None:
            writer.close()
        _free(dev)
    if out is None:
        return pd.DataFrame(rows, columns=list(MODEL_COLUMNS))
    df = pd.read_csv(out, keep_default_na=True)
    text = pd.read_csv(out, dtype=str, keep_default_na=False)
    wanted = set(keys)
    mask = [point_key(r) in wanted for r in text.to_dict("records")]
    return df[mask].reset_index(drop=True)


def _run_dtype(cfg: _Settings, group: list[_Point], dt: str, emit: Callable[[_Point], None]) -> None:
    subject = _Subject(cfg, dt)
    for p in group:
        preflight(cfg, p)
    with tf32_mode(B.torch_dtype(dt)[1]), torch.inference_mode():
        checks: dict = {}
        for p in group:
            if p.pre_status is None and cfg.check:
                k = (p.phase, p.backend)
                if k not in checks:
                    checks[k] = _check(cfg, subject, p)
                ok, err, ref_err, why = checks[k]
                p.row["check_rel_err"], p.row["check_ref_rel_err"] = err, ref_err
                if not ok:
                    p.pre_status = "oom" if why.startswith("oom") else "error"
                    p.row["reason"] = why
            if p.pre_status is not None:
                p.row["status"] = p.pre_status
            else:
                time_point(cfg, subject, p)
            p.row["scope"] = p.scope
            p.row["timestamp"] = _now()
            emit(p)
    subject.release()


# ----------------------------------------------------------------------------------------------
# Correctness
# ----------------------------------------------------------------------------------------------

def _check_spec(spec: ModelSpec) -> ModelSpec:
    """The first layers of the schedule, up to the first layer of its last distinct kind."""
    last = max(idx for idx, _ in distinct_layers(spec))
    return spec.with_layers(spec.layers[:last + 1])


def _check(cfg: _Settings, subject: _Subject, p: _Point) -> tuple[bool, float | None, float | None, str]:
    """(ok, worst rel. error, the reference's own error or None, reason) for (phase, backend)."""
    try:
        if cfg.impl == "transformers":
            from lcprof.measure.hf import IMPL_OF, agree_model

            r = agree_model(_check_spec(cfg.spec), CHECK_N, dtype=p.dtype, phase=p.phase,
                            attn_implementation=IMPL_OF[p.backend], seed=cfg.seed, device=cfg.dev)
            _free(cfg.dev)
            return r["ok"], r["transformers_rel_err"], r["lcprof_rel_err"], r["reason"]
        worst, why = 0.0, ""
        for idx, _count in cfg.layers_timed():
            layer = build_layer(cfg.spec, idx, seed=cfg.seed, moe_timing=cfg.moe,
                                mla_form=cfg.mla_form(p.phase) or "naive").to(device=cfg.dev, dtype=subject.tdt)
            # a layer without attention checks its mixer (the torch backend) against the fp64 recurrence
            res = Checker(layer, dtype=p.dtype, phase=p.phase, batch=1).check(
                p.backend if layer.lspec.has_attention else "torch")
            del layer
            err = res.layer_rel_err if res.layer_rel_err is not None else float("inf")
            worst = max(worst, err)
            if not res.ok:
                why = f"layer {idx} ({kind_label(cfg.spec, idx)}): {res.reason}"
                break
        _free(cfg.dev)
        return not why, worst, None, why
    except Exception as exc:  # noqa: BLE001 - OOM or a failing build: recorded, the sweep goes on
        _free(cfg.dev)
        return False, None, None, ("oom during correctness check: " if is_oom(exc) else
                                   "during correctness check: ") + _first_line(exc)




