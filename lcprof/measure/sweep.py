"""Sweeps that lose nothing and can be trusted on a shared machine: one layer timed across backends,
dtypes and lengths, row by row.

``run_sweep(SweepWorkload(model, ns, backends, dtypes, ...), Execution(...))`` (what is measured,
and how: :mod:`lcprof.measure.execution`) runs every (dtype, backend, n) point of one layer, of any kind :class:`lcprof.measure.layer.DecoderLayer` builds: attention (attention backends), a
linear-time mixer (mixer backends: ``torch``, ``fla``, ``mamba-ssm``; prefill from a fresh state,
decode = one recurrent step from a state, constant in n; checked against the float64 recurrence;
subnormals flushed on the CPU) or MLP only (``torch``):

1. **validate** everything first (model, n list, backend names, dtypes, device, phase, layer): a
   user mistake raises ``LcprofError`` before anything runs or any file is touched;
2. **one writer**: the results file's advisory lock (:class:`lcprof.results.ResultsLock`) is taken
   before the file is read; a second sweep on the same file stops at once, naming the holder;
3. **pre-flight** each point: the backend's probe on (device, dtype); whether it can run the layer's
   mask in this phase (:meth:`Backend.plan`); the point's predicted memory -- activations of the
   backend's family (``cost.activation_bytes``, with the scores for eager and an explicit mask when
   one is materialized) + the layer's weights + the rotated input sets (and decode caches) + cuBLAS's
   workspace on CUDA -- against ``mem_cap_bytes`` or the device's free memory. A point that cannot
   run gets status ``skipped`` and the reason;
4. **correctness before timing**: each backend is compared with the float64 reference
   (:mod:`lcprof.measure.check`) once per dtype; a mismatch gives status ``error`` and no time;
5. **time** the rest (:func:`lcprof.measure.timer.measure`) in an **interleaved, randomised order**
   (seeded by ``seed``): drift on a shared machine then touches every backend and length alike.
   Each point records what the machine was doing meanwhile (:class:`lcprof.measure.env.LoadProbe`:
   load average, CPU time of other processes, GPU clocks/throttling/utilization before and after).
   An out-of-memory error gives status ``oom``; any other exception ``error`` (the sweep goes on);
6. **re-measure** a point that breaks its group's trend (its log residual against the cost-model fit
   of the group exceeds ``max(3 sigma, 20%)``, sigma robust: 1.4826 x MAD) or whose environment
   changed (others took 25% more of the machine than the sweep's median, the GPU throttled or its
   SM clock fell 10%): up to ``max_attempts`` times, keeping the fastest median (interference only
   adds time); the kept row says why it was re-measured (``remeasure_reason``), its attempt and the
   earlier medians (``earlier_times_s``), and replaces the old row in one atomic rewrite;
7. print a **noise figure** for the sweep (:func:`lcprof.explain.fit.noise_figure`).

Rows (``lcprof.results.RESULT_COLUMNS``) are written the moment each completes: one ``write`` of the
whole CSV line, then flush and ``os.fsync``; the header once. Timings are never rounded.
``resume=True`` keeps rows whose status is ok, oom or skipped (keyed by the point key,
``lcprof.results.POINT_KEY``: a different MLA form, ranks, CUDA-graph or L2 setting is a different
point), drops error rows and a torn last line by an atomic rewrite, and runs only what is missing,
so nothing is lost or doubled -- also after ``kill -9``. Without ``resume`` an existing file is refused.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import math
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
from lcprof.measure.execution import Execution, SweepWorkload
from lcprof.explain.fit import noise_figure
from lcprof.measure import backends as B
from lcprof.measure.check import Checker, CheckResult, is_oom
from lcprof.measure.env import LoadProbe, PeakMemory, environment, flush_denormals, free_memory_bytes, tf32_mode
from lcprof.measure.layer import MOE_TIMINGS, DecoderLayer, linear_mixer, score_ops
from lcprof.measure.mixer_backends import MIXER_BACKENDS, get_mixer_backend, probe_mixer_backend
from lcprof.measure.timer import Measurement, measure
from lcprof.results import (DONE_STATUSES, POINT_KEY, RESULT_COLUMNS, ResultsLock, ResultsWriter, point_key,  # noqa: F401
                            prepare_resume, replace_row)
from lcprof.spec import ModelSpec, load_model
from lcprof.units import dtype_bytes, fmt_bytes, fmt_seconds, parse_token_list

PHASES = ("prefill", "decode")
#: what identifies a point in a results file (``lcprof.results.POINT_KEY``; kept under its old name)
KEY_COLUMNS = POINT_KEY
#: Re-measure thresholds (see the module docstring).
TREND_SIGMAS = 3.0
TREND_MIN_REL = 0.20
OTHER_CPU_JUMP = 0.25
CLOCK_DROP = 0.10
#: Rotate several input sets while one set is smaller than this; one larger set defeats caches by itself.
ROTATE_BELOW_BYTES = 256 << 20
N_INPUT_SETS = 3


def read_done(path: str | Path) -> set[tuple[str, ...]]:
    """Prepare ``path`` for a resume (``lcprof.results.prepare_resume``); the keys already done."""
    return set(prepare_resume(path))


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
    layer_obj: Callable | None = None  # builds (once) the layer of this point's dtype

    order: int = 0  # position in the randomised timing order

    def key(self, cfg: "_Settings") -> tuple[str, ...]:
        return point_key(cfg.key_fields(self.backend, self.dtype, self.n))


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
    lspec = spec.layers[layer_idx]
    if not lspec.has_attention:  # a mixer's state (constant in n), or nothing for an MLP-only layer
        kind = linear_mixer(lspec)
        if kind is None:
            return int(x)
        from lcprof.cost.kinds import mixer_state_bytes

        return int(x + batch * mixer_state_bytes(spec.mixer(kind), dtype))
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
    if not 0 <= int(layer) < spec.n_layers:
        raise LcprofError(f"layer {layer} out of range 0..{spec.n_layers - 1} for {spec.name}")
    lspec = spec.layers[int(layer)]
    if backends is None:
        backends = default_backends(lspec)
    if isinstance(backends, str):
        backends = [b.strip() for b in backends.split(",") if b.strip()]
    if not backends:
        raise LcprofError("no backends given; see `lcprof backends`")
    for b in backends:
        check_backend_for_layer(spec, int(layer), b)
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
    from lcprof.measure.layer import check_buildable

    check_buildable(spec, lspec)  # refuse, naming the layer, a kind the measured layer cannot build
    if int(ranks) < 1:
        raise LcprofError(f"ranks must be >= 1, got {ranks}")
    if mla_form is not None and mla_form not in ("naive", "absorbed"):
        raise LcprofError(f"unknown MLA form {mla_form!r}; use naive or absorbed")
    return spec, ns, list(dict.fromkeys(backends)), list(dict.fromkeys(dtypes)), dev


def default_backends(lspec) -> list[str]:
    """``eager,sdpa`` for an attention layer; the ``torch`` mixer backend for a layer without attention."""
    return ["eager", "sdpa"] if lspec.has_attention else ["torch"]


def check_backend_for_layer(spec: ModelSpec, layer: int, name: str) -> None:
    """Refuse (LcprofError) a backend that does not run this layer's kind: attention backends
    (``lcprof.measure.backends``) for attention layers, mixer backends
    (``lcprof.measure.mixer_backends``) for a linear-time mixer, ``torch`` for an MLP-only layer."""
    lspec = spec.layers[layer]
    if lspec.has_attention:
        if name in MIXER_BACKENDS and name not in B.names():
            raise LcprofError(f"{spec.name}: layer {layer} is {lspec.kind} (attention): {name!r} is a mixer backend; "
                              "use an attention backend (see `lcprof backends`)")
        B.get_backend(name)
        return
    kind = linear_mixer(lspec)
    if kind is None and name != "torch":
        raise LcprofError(f"{spec.name}: layer {layer} is MLP only: its one backend is torch, not {name!r}")
    if kind is not None and name in B.names() and name not in MIXER_BACKENDS:
        raise LcprofError(f"{spec.name}: layer {layer} is {lspec.kind}, not attention: {name!r} is an attention "
                          f"backend; use a mixer backend ({', '.join(b for b, v in MIXER_BACKENDS.items() if kind in v.kinds)})")
    get_mixer_backend(name, kind)


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
    layers: dict = field(default_factory=dict, compare=False, hash=False)  # dtype -> built layer

    @property
    def form(self) -> str:
        return self.mla_form or "naive"

    max_attempts: int = 3

    @property
    def moe_timing(self) -> str:
        lspec = self.spec.layers[self.layer]
        return self.moe if (lspec.moe and self.spec.moe is not None) else "n/a"

    def key_fields(self, backend: str, dtype: str, n: int) -> dict:
        """The point-key columns of one point of this sweep (``lcprof.results.POINT_KEY``)."""
        return {"model": self.spec.name, "backend": backend, "dtype": dtype, "device": str(self.dev),
                "batch": self.batch, "n": n, "phase": self.phase, "layer": self.layer,
                "moe_timing": self.moe_timing, "mla_form": self.mla_form,
                "ranks": self.ranks if backend.startswith("striped-ring") else None, "cuda_graph": self.cuda_graph,
                "flush_l2": self.flush_l2, "elementwise": "unfused"}


def run_sweep(workload: SweepWorkload, execution: Execution = Execution(), *, device: str | None = None,
              out: str | Path | None = None, resume: bool = False, calibration=None,
              progress: bool | Callable[[str], None] = False) -> pd.DataFrame:
    """Time one layer over the (dtype, backend, n) points of ``workload``, each as ``execution``
    says; see the module docstring.

    ``workload.ns``: token counts (``"128..2048"``, a list); ``backends``/``dtypes``: names or comma
    lists. ``layer``: any layer kind :class:`DecoderLayer` builds -- attention (attention backends,
    default ``eager,sdpa``), a linear-time mixer (mixer backends ``torch``/``fla``/``mamba-ssm``,
    default ``torch``; prefill from a fresh state, decode = one recurrent step from a state) or MLP
    only. ``mla_form`` (MLA models): ``naive`` (default for prefill) or ``absorbed`` (default for
    decode). ``moe_timing`` (MoE layers): ``dense-equivalent`` or ``routed`` (see
    :mod:`lcprof.measure.layer`). ``execution.cuda_graph`` (CUDA only): time CUDA-graph replays of
    each call (see ``timer.measure``); ``execution.seed`` seeds the weights, the inputs and the timing
    order; ``execution.max_attempts``: timings of a suspect point at most (1: never re-measure).
    ``calibration`` (a profile or results file, see :func:`lcprof.rates.resolve_rates`): rates for the
    expected duration said before the sweep. Returns the rows of this sweep's points (read back from
    ``out`` when given, so resumed rows are included), one per point.
    """
    if not isinstance(workload, SweepWorkload):
        raise LcprofError(f"run_sweep needs a SweepWorkload, got {type(workload).__name__}")
    if not isinstance(execution, Execution):
        raise LcprofError(f"run_sweep needs an Execution, got {type(execution).__name__}")
    w, x = workload, execution
    model, ns, backends, dtypes, phase, batch, layer = w.model, w.ns, w.backends, w.dtypes, w.phase, w.batch, w.layer
    ranks, mla_form, moe_timing = w.ranks, w.mla_form, w.moe_timing
    budget_s, cuda_graph, max_attempts = x.budget_s, x.cuda_graph, x.max_attempts
    spec, ns, backends, dtypes, dev = validate(model, ns, backends, dtypes, device, phase, batch, layer,
                                               ranks, mla_form)
    if cuda_graph and dev.type != "cuda":
        raise LcprofError(f"--cuda-graph needs a CUDA device; this sweep runs on {dev}")
    if moe_timing not in MOE_TIMINGS:
        raise LcprofError(f"unknown MoE timing {moe_timing!r}; use {' or '.join(MOE_TIMINGS)}")
    # the MLA form is the attention's: none for a layer without it (Kimi Linear's KDA layers)
    attends = spec.layer(int(layer)).has_attention
    mla_form = (mla_form or ("absorbed" if phase == "decode" else "naive")) if (spec.mla is not None and attends) \
        else None
    say = _progress_fn(progress)
    lock = None
    if out is not None:
        out = Path(out)
        if out.parent and not out.parent.exists():
            try:
                out.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise LcprofError(f"cannot create folder {str(out.parent)!r}: {exc.strerror or exc}") from None
            say(f"created folder {out.parent}")
        if out.exists() and out.is_dir():
            raise LcprofError(f"--out {str(out)!r} is a folder; give a results file such as {str(out / 'results.csv')!r}")
        lock = ResultsLock(out).acquire()
    # A linear-time mixer's decays reach the subnormal range on the CPU: flush them, as GPUs do
    # (:func:`lcprof.measure.env.flush_denormals`; the process's setting is restored after).
    denormals = flush_denormals() if linear_mixer(spec.layers[int(layer)]) else contextlib.nullcontext()
    try:
        with denormals:
            return _run_locked(spec, ns, backends, dtypes, dev, out, resume, say, calibration, dict(
                phase=phase, batch=int(batch), layer=int(layer), budget_s=float(budget_s),
                mem_cap_bytes=x.mem_cap_bytes, ranks=int(ranks), mla_form=mla_form, seed=int(x.seed),
                min_reps=int(x.min_reps), max_reps=int(x.max_reps), flush_l2=bool(x.flush_l2),
                check=bool(x.check), cuda_graph=bool(cuda_graph), moe=moe_timing,
                max_attempts=int(max_attempts)))
    finally:
        if lock is not None:
            lock.release()


def _run_locked(spec, ns, backends, dtypes, dev, out, resume, say, calibration, settings) -> pd.DataFrame:
    done: set = set()
    if out is not None:
        if out.exists() and out.stat().st_size > 0 and not resume:
            raise LcprofError(f"{str(out)!r} exists; pass --resume to continue it, or choose another --out")
        if resume:
            done = read_done(out)
    cfg = _Settings(spec=spec, dev=dev, env=environment(dev), **settings)
    points = [Point(b, d, n) for d in dtypes for b in backends for n in ns]
    keys = [p.key(cfg) for p in points]
    todo = [p for p, k in zip(points, keys) if k not in done]
    order = np.random.default_rng(cfg.seed).permutation(len(todo))
    for i, j in enumerate(order):
        todo[j].order = i
    if done:
        say(f"resuming {out}: {len(points) - len(todo)} of {len(points)} points already done")
    expected = estimate_duration_s(cfg, todo, calibration)
    if expected is not None and todo:
        say(f"expected duration: about {fmt_seconds(expected)} for {len(todo)} points "
            f"(predicted per-call times x warm-up and repetitions; re-measures add to it)")
    writer = ResultsWriter(out) if out is not None else None
    rows: dict[tuple, dict] = {}
    counter = [len(points) - len(todo)]

    def emit(p: Point) -> None:
        counter[0] += 1
        r = p.row
        rows[p.key(cfg)] = r
        if writer is not None:
            writer.write(r)
        say(f"[{counter[0]}/{len(points)}] {_describe(p, cfg)}")

    try:
        timed = _prepare_and_check(cfg, todo, emit)
        for p in sorted(timed, key=lambda q: q.order):
            _time_and_emit(cfg, p, emit)
        if writer is not None:
            writer.close()
            writer = None
        _remeasure_suspects(cfg, timed, rows, out, say)
    finally:
        if writer is not None:
            writer.close()
        _free(dev, collect=True)
    if out is None:
        df = pd.DataFrame(list(rows.values()), columns=list(RESULT_COLUMNS))
    else:
        df = pd.read_csv(out, keep_default_na=True, dtype={c: str for c in ("moe_timing", "mla_form", "ranks",
                                                                             "cuda_graph", "flush_l2", "reason")})
        wanted = set(keys)
        df = df[[k in wanted for k in key_of_rows(df)]].reset_index(drop=True)
    fig = noise_figure(df, specs={spec.name: spec})
    if fig["points"]:
        say(f"noise: {fig['text']}")
    return df


def key_of_rows(df: pd.DataFrame) -> list[tuple[str, ...]]:
    from lcprof.results import key_of_frame

    return key_of_frame(df)


def _describe(p: Point, cfg: "_Settings") -> str:
    r = p.row
    t = f" {fmt_seconds(r['time_s'])}" if r.get("time_s") is not None else ""
    why = f" ({r['reason']})" if r.get("reason") and r["status"] != "ok" else ""
    load = ""
    if r.get("other_cpu_frac") is not None:
        load = f"  [others {100 * r['other_cpu_frac']:.0f}% of the CPUs, load {r['load_avg_1m']:.1f}]"
    return f"{p.backend} {p.dtype} n={p.n} {cfg.phase}: {r['status']}{t}{why}{load}"


def _mask_for(spec: ModelSpec, layer: int, n_q: int, n_k: int) -> B.AttnMask:
    lspec = spec.layers[layer]
    return B.AttnMask(lspec.attn, n_q, n_k, lspec.window)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _preflight(cfg: _Settings, p: Point) -> None:
    """Fill the point's row with its plan, FLOPs and predicted memory; mark it skipped if it cannot run."""
    spec, dt, lspec = cfg.spec, p.dtype, cfg.spec.layers[cfg.layer]
    store = "fp32" if dt == "tf32" else dt
    b = B.get_backend(p.backend) if lspec.has_attention else None
    row = {c: None for c in RESULT_COLUMNS}
    row.update(cfg.env)
    row.update(cfg.key_fields(p.backend, dt, p.n))
    row.update({"attention_kind": lspec.attn, "window": lspec.window, "reason": "", "mem_cap_bytes": cfg.mem_cap_bytes,
                "layer_kind": lspec.kind})
    p.row = row
    if not lspec.has_attention:
        _preflight_mixer(cfg, p, row, store)
        return
    ok, why = b.probe(cfg.dev, B.torch_dtype(dt)[0])
    if not ok:
        p.pre_status, row["reason"] = "skipped", f"backend unavailable on {cfg.dev.type} {dt}: {why}"
        return
    n_q, n_k = _work(cfg.phase, p.n)
    mask = _mask_for(spec, cfg.layer, n_q, n_k)
    plan, why = b.plan(mask, cfg.phase, score_ops(spec, lspec))
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
    _apply_cap(cfg, p, row, mem)


#: A layer without attention runs no attention kernel: its activations are counted with the tiled
#: family's layout (which then equals every family's) and its row names no executed family.
_NO_ATTENTION_PLAN = B.Plan("none", "tiled", stores_scores=False)


def _preflight_mixer(cfg: _Settings, p: Point, row: dict, store: str) -> None:
    """The pre-flight of a layer without attention (a linear-time mixer or MLP only): the mixer
    backend's probe, FLOPs of the cost model (prefill: the chunked form; decode: one recurrent step
    from the state), predicted memory with the state as the decode input."""
    ok, why = probe_mixer_backend(p.backend, cfg.dev, B.torch_dtype(p.dtype)[0])
    if not ok:
        p.pre_status, row["reason"] = "skipped", f"mixer backend unavailable on {cfg.dev.type} {p.dtype}: {why}"
        return
    p.plan = _NO_ATTENTION_PLAN
    c = cost(cfg.spec, p.n, phase=cfg.phase, batch=cfg.batch, dtype=store, family="useful", layer=cfg.layer)
    set_bytes = input_set_bytes(cfg.spec, cfg.layer, p.n, batch=cfg.batch, dtype=store, phase=cfg.phase)
    sets = N_INPUT_SETS if set_bytes < ROTATE_BELOW_BYTES else 1
    mem = predict_point_memory(cfg.spec, cfg.layer, p.n, plan=p.plan, batch=cfg.batch, dtype=p.dtype,
                               phase=cfg.phase, input_sets=sets,
                               workspace_bytes=CUDA_WORKSPACE_BYTES if cfg.dev.type == "cuda" else 0,
                               moe_timing=cfg.moe)
    row.update({"mask_mode": "", "effective_mask": "", "executed_family": "",
                "predicted_flops": float(c.flops["total"][0]), "useful_flops": float(c.useful_flops["total"][0]),
                "input_sets": sets, "predicted_mem_bytes": mem["total_bytes"]})
    _apply_cap(cfg, p, row, mem)


def _apply_cap(cfg: _Settings, p: Point, row: dict, mem: dict) -> None:
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


def _prepare_and_check(cfg: _Settings, todo: list[Point], emit: Callable[[Point], None]) -> list[Point]:
    """Pre-flight every point and check each backend once per dtype; emit the points that will not
    be timed (skipped, error, oom) and return the rest, each with its dtype's layer built."""
    timed: list[Point] = []
    cfg.layers.clear()
    for dt in dict.fromkeys(p.dtype for p in todo):
        group = [p for p in todo if p.dtype == dt]
        torch_dt, tf32 = B.torch_dtype(dt)

        def layer_obj(dt=dt, torch_dt=torch_dt) -> DecoderLayer:
            if dt not in cfg.layers:
                lay = DecoderLayer(cfg.spec, cfg.layer, seed=cfg.seed, mla_form=cfg.form, moe_timing=cfg.moe)
                cfg.layers[dt] = lay.to(device=cfg.dev, dtype=torch_dt).eval()
            return cfg.layers[dt]

        for p in group:
            _preflight(cfg, p)
        with tf32_mode(tf32), torch.inference_mode():
            names = list(dict.fromkeys(p.backend for p in group if p.pre_status is None))
            checks = _check_backends(cfg, layer_obj, names, dt) if (cfg.check and names) else {}
        for p in group:
            if p.pre_status is None:
                _apply_check(p, checks.get(p.backend))
            if p.pre_status is not None:
                p.row["status"] = p.pre_status
                p.row["timestamp"] = _now()
                emit(p)
            else:
                p.layer_obj = layer_obj
                timed.append(p)
    return timed


def _time_and_emit(cfg: _Settings, p: Point, emit: Callable[[Point], None]) -> None:
    torch_dt, tf32 = B.torch_dtype(p.dtype)
    with tf32_mode(tf32), torch.inference_mode():
        resident = cfg.layers[p.dtype].param_bytes if p.dtype in cfg.layers else 0
        if cfg.mem_cap_bytes is not None or _fits_free_memory(cfg, p, resident):
            _time_point(cfg, p, p.layer_obj, torch_dt)
    p.row["order_index"] = p.order
    p.row["attempt"] = 1
    p.row["timestamp"] = _now()
    emit(p)


def _suspects(cfg: _Settings, timed: list[Point], rows: dict) -> list[tuple[Point, str]]:
    """Points to measure again, with why: a trend break or a changed environment (module docstring)."""
    from lcprof.explain.fit import trend_residuals

    ok = [p for p in timed if p.row.get("status") == "ok"]
    out: dict[int, str] = {}
    fracs = [p.row["other_cpu_frac"] for p in ok if p.row.get("other_cpu_frac") is not None]
    base = float(np.median(fracs)) if fracs else None
    for p in ok:
        r, why = p.row, []
        f = r.get("other_cpu_frac")
        if base is not None and f is not None and f > base + OTHER_CPU_JUMP:
            why.append(f"other processes took {100 * f:.0f}% of the CPUs (sweep median {100 * base:.0f}%)")
        thr = r.get("gpu_throttle_after") or ""
        if thr and thr != (r.get("gpu_throttle_before") or ""):
            why.append(f"GPU throttled ({thr})")
        b, a = r.get("gpu_sm_clock_before_mhz"), r.get("gpu_sm_clock_after_mhz")
        if b and a and a < (1 - CLOCK_DROP) * b:
            why.append(f"GPU SM clock fell from {b} to {a} MHz")
        if why:
            out[id(p)] = "; ".join(why)
    groups: dict[tuple, list[Point]] = {}
    for p in ok:
        groups.setdefault((p.backend, p.dtype), []).append(p)
    for (backend, dtype), ps in groups.items():
        if len({p.n for p in ps}) < 4:
            continue
        rows_df = pd.DataFrame([p.row for p in ps])
        resid = trend_residuals(rows_df, specs={cfg.spec.name: cfg.spec})
        if resid is None:
            continue
        lr = np.log1p(resid)
        sigma = 1.4826 * float(np.median(np.abs(lr - np.median(lr))))
        limit = max(TREND_SIGMAS * sigma, math.log1p(TREND_MIN_REL))
        for p, e in zip(ps, lr):
            if abs(e) > limit:
                msg = f"broke the trend ({100 * math.expm1(e):+.0f}% off the group's cost-model fit)"
                out[id(p)] = (out[id(p)] + "; " + msg) if id(p) in out else msg
    return [(p, out[id(p)]) for p in ok if id(p) in out]


def _remeasure_suspects(cfg: _Settings, timed: list[Point], rows: dict, out: Path | None, say) -> None:
    """Time suspect points again (at most ``max_attempts`` timings each); keep the fastest median."""
    for attempt in range(2, cfg.max_attempts + 1):
        suspects = _suspects(cfg, timed, rows)
        if not suspects:
            return
        say(f"re-measuring {len(suspects)} point(s) (attempt {attempt} of {cfg.max_attempts})")
        for p, why in suspects:
            old = dict(p.row)
            torch_dt, tf32 = B.torch_dtype(p.dtype)
            p.row = {k: v for k, v in old.items()}
            with tf32_mode(tf32), torch.inference_mode():
                _time_point(cfg, p, p.layer_obj, torch_dt)
            earlier = [float(x) for x in str(old.get("earlier_times_s") or "").split()] + [float(old["time_s"])]
            new_ok = p.row.get("status") == "ok" and p.row.get("time_s") is not None
            keep = p.row if new_ok and p.row["time_s"] < old["time_s"] else old
            if keep is old:
                earlier = earlier[:-1] + ([float(p.row["time_s"])] if new_ok else [])
            else:
                keep["order_index"] = old.get("order_index")
            keep = dict(keep)
            keep["attempt"] = attempt
            keep["remeasure_reason"] = "; ".join(x for x in (str(old.get("remeasure_reason") or ""), why) if x)
            keep["earlier_times_s"] = " ".join(repr(x) for x in earlier)
            keep["timestamp"] = _now()
            p.row = keep
            rows[p.key(cfg)] = keep
            if out is not None:
                replace_row(out, keep)
            say(f"  re-measured {_describe(p, cfg)}: {why}")


def estimate_duration_s(cfg: _Settings, points: list[Point], calibration=None) -> float | None:
    """Seconds the points should take: per point the roofline time of one call on the rates at hand
    (``calibration``; on CUDA the best profile for the GPU, see :mod:`lcprof.rates`) times its
    warm-up and repetitions; None when no rates are at hand (a CPU without a calibration)."""
    from lcprof.cost.model import roofline
    from lcprof.rates import resolve_rates

    try:
        if calibration is not None:
            hw = resolve_rates(None, calibration).hardware
        elif cfg.dev.type == "cuda":
            name = (cfg.env.get("gpu_name") or "").lower()
            key = "h200" if "h200" in name else "h100-sxm" if "h100" in name else "a100-80gb" if "a100" in name else None
            if key is None:
                return None
            hw = resolve_rates(key).hardware
        else:
            return None
    except LcprofError:
        return None
    total = 0.0
    for p in points:
        store = "fp32" if p.dtype == "tf32" else p.dtype
        try:
            c = cost(cfg.spec, p.n, phase=cfg.phase, batch=cfg.batch, dtype=store,
                     family=_family(p.backend),
                     layer=cfg.layer, mla_form=cfg.mla_form)
            t = float(roofline(c, hw, tf32=p.dtype == "tf32", backend=p.backend)["total"][0])
        except LcprofError:
            continue
        warm = max(2, math.ceil(0.1 * cfg.budget_s / max(t, 1e-9)))
        reps = min(max(cfg.min_reps, math.floor(cfg.budget_s / max(t, 1e-9))), cfg.max_reps)
        total += (warm + reps + (1 if cfg.check else 0)) * t
    return total


def _family(backend: str) -> str:
    from lcprof.cost.ops import backend_family

    try:
        return backend_family(backend)
    except LcprofError:
        return "tiled"


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
    probe = LoadProbe(cfg.dev).start()
    try:
        with PeakMemory(cfg.dev) as pm:
            lay = layer_obj()
            if lay.mixer is not None:
                lay.set_mixer_backend(p.backend)
            elif lay.lspec.has_attention:
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
        p.row.update(probe.stop())
    _free(cfg.dev, collect=failed)
