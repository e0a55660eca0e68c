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

import gc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd
import torch

from lcprof.cost.model import activation_bytes, cost
from lcprof.cost.ops import attention_dims, lm_head_op
from lcprof.errors import LcprofError
from lcprof.measure import backends as B
from lcprof.measure.check import Checker, is_oom
from lcprof.measure.env import LoadProbe, PeakMemory, environment, free_memory_bytes, tf32_mode
from lcprof.measure.layer import MOE_TIMINGS
from lcprof.measure.model import (Model, build_layer, decode_capacity, distinct_layers, kind_label,
                                  layer_decode_cache)
from lcprof.measure.sweep import CUDA_WORKSPACE_BYTES, _first_line, _now, _progress_fn
from lcprof.measure.timer import Measurement, measure
from lcprof.results import ENV_COLUMNS, LOAD_COLUMNS, ResultsLock, ResultsWriter, point_key, prepare_resume
from lcprof.spec import ModelSpec, load_model
from lcprof.units import dtype_bytes, dtype_name, fmt_bytes, fmt_seconds, parse_token_list

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
#: rotate 3 input sets while one set (decode caches) is smaller than this, else one
ROTATE_BELOW_BYTES = 256 << 20
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
# Pre-flight: FLOPs and memory
# ----------------------------------------------------------------------------------------------

def _work(phase: str, n: int) -> tuple[int, int]:
    return (n, n) if phase == "prefill" else (1, n + 1)


def layer_mask(spec: ModelSpec, layer_idx: int, phase: str, n: int) -> B.AttnMask:
    """The mask layer ``layer_idx`` runs: prefill n x n, decode one query against its cache."""
    lspec = spec.layers[layer_idx]
    if phase == "prefill":
        return B.AttnMask(lspec.attn, n, n, lspec.window)
    return B.AttnMask(lspec.attn, 1, decode_capacity(lspec, n), lspec.window)


def _dense_mask(backend: str, plan: B.Plan, mask: B.AttnMask) -> bool:
    """Whether running ``mask`` materializes an (n_q, n_k) boolean mask."""
    if mask.effective().kind == "full":
        return False
    return plan.mode == "explicit" or backend == "eager"


def predict_model_memory(spec: ModelSpec, n: int, *, phase: str, dtype: str, batch: int, families: dict,
                         dense_masks: int, layers: list[tuple[int, int]], input_sets: int, weight_bytes: int,
                         cache_bytes: int, workspace_bytes: int, mla_form: str | None) -> dict:
    """Predicted peak bytes of one point, by part (ints).

    ``activation``: the largest of the timed layers' activation peaks (``cost.activation_bytes``, each
    in the family it executes; the dense mask it is handed counted once per distinct mask), plus the
    logits (batch x vocab) and their fp32 copy; ``weight``: every parameter the run holds;
    ``cache``: every layer's decode cache, times the input sets.
    """
    store = "fp32" if dtype == "tf32" else dtype
    s = dtype_bytes(store)
    n_q, n_k = _work(phase, n)
    act = 0.0
    for idx, _count in layers:
        fam = families[idx]
        a = float(activation_bytes(spec, n_q, prefix=n_k - n_q, batch=batch, dtype=store, family=fam,
                                   layer=idx, materialize_mask=False, mla_form=mla_form or "naive")[0])
        act = max(act, a)
    masks = dense_masks * n_q * n_k  # booleans, resident through the forward
    logits = batch * spec.vocab_size * (s + 4)
    caches = input_sets * cache_bytes
    total = int(act + masks + logits + weight_bytes + caches + workspace_bytes)
    return {"activation_bytes": int(act + masks + logits), "weight_bytes": int(weight_bytes),
            "cache_bytes": int(caches), "workspace_bytes": int(workspace_bytes), "total_bytes": total}


def _predicted_flops(spec: ModelSpec, n: int, phase: str, dtype: str, batch: int, layers, families: dict,
                     mla_form: str | None, with_head: bool) -> tuple[float, float]:
    """(executed, useful) FLOPs of the timed layers (times their counts) and, for a model, the LM head."""
    store = "fp32" if dtype == "tf32" else dtype
    ex = useful = 0.0
    for idx, count in layers:
        c = cost(spec, n, phase=phase, batch=batch, dtype=store, family=families[idx], layer=idx, mla_form=mla_form)
        ex += count * float(c.flops["total"][0])
        useful += count * float(c.useful_flops["total"][0])
    if with_head:
        head = float(lm_head_op(spec, float(batch), store).flops)
        ex, useful = ex + head, useful + head
    return ex, useful


def _meta_sizes(cfg: _Settings, phase: str, dtype: str, n: int) -> dict:
    """Weights and decode caches of the model, of each distinct layer and of the head, from meta modules."""
    tdt = B.torch_dtype(dtype)[0]
    s = torch.empty((), dtype=tdt).element_size()
    meta = Model(cfg.spec, moe_timing=cfg.moe, materialize=False)
    per_layer_w = {idx: sum(p.numel() for p in meta.layers[idx].parameters()) * s for idx, _ in distinct_layers(cfg.spec)}
    if cfg.layer_idx is not None:
        per_layer_w.setdefault(cfg.layer_idx, sum(p.numel() for p in meta.layers[cfg.layer_idx].parameters()) * s)
    per_layer_c = {}
    if phase == "decode":
        for idx in per_layer_w:
            c = layer_decode_cache(meta.layers[idx], cfg.batch, n, dtype=tdt, device="meta")
            per_layer_c[idx] = int(c.nbytes)
    total_w = sum(p.numel() for p in meta.parameters()) * s
    head_w = total_w - sum(sum(p.numel() for p in lay.parameters()) * s for lay in meta.layers)
    total_c = meta.decode_cache_bytes(cfg.batch, n, tdt) if phase == "decode" else 0
    return {"model_w": int(total_w), "head_w": int(head_w), "layer_w": per_layer_w, "layer_c": per_layer_c,
            "model_c": int(total_c)}


def _preflight(cfg: _Settings, p: _Point) -> None:
    spec = cfg.spec
    row = {c: None for c in MODEL_COLUMNS}
    row.update(cfg.env)
    row.update(p.key_fields(cfg))
    row.update({"model": spec.name, "model_config": cfg.source, "impl": cfg.impl, "backend": p.backend, "dtype": p.dtype, "device": str(cfg.dev),
                "batch": cfg.batch, "n": p.n, "phase": p.phase, "target": cfg.target, "moe_timing": cfg.moe_timing,
                "mla_form": cfg.mla_form(p.phase), "reason": "", "mem_cap_bytes": cfg.mem_cap_bytes,
                "impl_version": _impl_version(cfg.impl)})
    p.row = row
    tdt = B.torch_dtype(p.dtype)[0]
    b = B.get_backend(p.backend)
    if cfg.impl == "transformers":
        from lcprof.measure.hf import IMPL_OF, attn_impl_available

        ok, why = attn_impl_available(IMPL_OF[p.backend], cfg.dev)
    else:
        ok, why = b.probe(cfg.dev, tdt)
    if not ok:
        p.pre_status, row["reason"] = "skipped", f"backend unavailable on {cfg.dev.type} {p.dtype}: {why}"
        return
    layers = cfg.layers_timed()
    dense: set = set()
    for idx, _count in layers:
        mask = layer_mask(spec, idx, p.phase, p.n)
        plan, why = b.plan(mask, p.phase)
        if plan is None:
            p.pre_status, row["reason"] = "skipped", f"layer {idx} ({kind_label(spec, idx)}): {why}"
            return
        if p.backend == "sdpa" and plan.executed_family != "eager":
            plan = _sdpa_choice(cfg, p, idx, mask, plan, tdt)
        p.families[idx] = plan.executed_family
        if _dense_mask(p.backend, plan, mask):
            dense.add(mask.effective())
    fams = set(p.families.values())
    row["executed_family"] = fams.pop() if len(fams) == 1 else "mixed"
    row["kind_families"] = " ".join(f"{idx}:{p.families[idx]}" for idx, _ in layers)
    row["layers"] = " ".join(f"{kind_label(spec, idx)}x{count}" for idx, count in layers)
    form = cfg.mla_form(p.phase)
    ex, useful = _predicted_flops(spec, p.n, p.phase, p.dtype, cfg.batch, layers, p.families, form,
                                  with_head=cfg.layer_idx is None)
    row["predicted_flops"], row["useful_flops"] = ex, useful
    sizes = _meta_sizes(cfg, p.phase, p.dtype, p.n)
    ws = CUDA_WORKSPACE_BYTES if cfg.dev.type == "cuda" else 0
    if cfg.layer_idx is None:
        w, c = sizes["model_w"], sizes["model_c"]
        if cfg.impl == "transformers":
            from lcprof.measure.hf import dynamic_cache_bytes

            w = 2 * w  # lcprof's weights are copied into transformers' model: both live during the build
            c = dynamic_cache_bytes(spec, cfg.batch, p.n, p.dtype) if p.phase == "decode" else 0
    else:
        w, c = sizes["layer_w"][cfg.layer_idx], sizes["layer_c"].get(cfg.layer_idx, 0)
        if cfg.impl == "transformers":
            w = 2 * (w + sizes["head_w"])
    sets = 3 if (c < ROTATE_BELOW_BYTES and cfg.impl == "lcprof") else 1
    mem = predict_model_memory(spec, p.n, phase=p.phase, dtype=p.dtype, batch=cfg.batch, families=p.families,
                               dense_masks=len(dense), layers=layers, input_sets=sets, weight_bytes=w,
                               cache_bytes=c, workspace_bytes=ws, mla_form=form)
    row.update({"input_sets": sets, "predicted_mem_bytes": mem["total_bytes"], "weight_bytes": mem["weight_bytes"],
                "cache_bytes": mem["cache_bytes"], "activation_bytes": mem["activation_bytes"]})
    p.scope = "model" if cfg.layer_idx is None else "layer"
    cap = cfg.mem_cap_bytes if cfg.mem_cap_bytes is not None else free_memory_bytes(cfg.dev)
    row["mem_cap_bytes"] = cap
    if cap is None or mem["total_bytes"] <= cap:
        return
    why = (f"predicted memory {fmt_bytes(mem['total_bytes'])} > {'cap' if cfg.mem_cap_bytes else 'free'} "
           f"{fmt_bytes(cap)} (weights {fmt_bytes(mem['weight_bytes'])}, caches {fmt_bytes(mem['cache_bytes'])}, "
           f"activations {fmt_bytes(mem['activation_bytes'])})")
    if cfg.layer_idx is not None or cfg.impl != "lcprof" or not cfg.allow_scaled:
        p.pre_status, row["reason"] = "skipped", why
        return
    # one layer of each kind at a time, and the head
    one = 0
    for idx, _count in layers:
        m1 = predict_model_memory(spec, p.n, phase=p.phase, dtype=p.dtype, batch=cfg.batch, families=p.families,
                                  dense_masks=1 if dense else 0, layers=[(idx, 1)], input_sets=1,
                                  weight_bytes=sizes["layer_w"][idx], cache_bytes=sizes["layer_c"].get(idx, 0),
                                  workspace_bytes=ws, mla_form=form)["total_bytes"]
        one = max(one, m1)
    one = max(one, sizes["head_w"] + cfg.batch * p.n * spec.hidden_size * dtype_bytes(p.dtype) * 3 + ws)
    if one > cap:
        p.pre_status, row["reason"] = "skipped", why + f"; one layer of each kind needs {fmt_bytes(one)} too"
        return
    row["predicted_mem_bytes"] = int(one)
    row["input_sets"] = 1
    p.scope = "kinds-scaled"
    row["reason"] = why + ": timed one layer of each kind and the head, scaled by the schedule"


def _sdpa_choice(cfg: _Settings, p: _Point, idx: int, mask: B.AttnMask, plan: B.Plan, tdt) -> B.Plan:
    """SDPA picks its kernel itself: its math kernel computes and stores the whole score rectangle
    (e.g. MLA's unequal q/k and v head dims on the CPU), as the layer sweep records it."""
    kv_heads, qk_dim, v_dim = attention_dims(cfg.spec, cfg.mla_form(p.phase) or "naive")
    kernel = B.sdpa_auto_kernel(cfg.dev, tdt, heads=cfg.spec.n_heads, kv_heads=kv_heads, qk_dim=qk_dim,
                                v_dim=v_dim, mask=mask)
    return B.Plan(plan.mode, "eager", stores_scores=True) if kernel == "math" else plan


def _impl_version(impl: str) -> str | None:
    if impl == "lcprof":
        from lcprof._version import __version__

        return __version__
    from lcprof.measure.hf import version

    return version()


# ----------------------------------------------------------------------------------------------
# The sweep
# ----------------------------------------------------------------------------------------------

def run_model_sweep(model: str | ModelSpec, ns, *, phases="prefill", impl: str = "lcprof", backends="sdpa",
                    dtypes="fp32", device: str | None = None, target: str = "model", batch: int = 1,
                    budget_s: float = 1.0, mem_cap_bytes: int | None = None, out: str | Path | None = None,
                    resume: bool = False, seed: int = 0, min_reps: int = 3, max_reps: int = 100,
                    cuda_graph: bool = False, moe_timing: str | None = None, check: bool = True,
                    init: str | None = None, allow_scaled: bool = True,
                    progress: bool | Callable[[str], None] = False) -> pd.DataFrame:
    """Time a whole model (or one layer) over (dtype, phase, backend, n) points; see the module docstring.

    ``impl``: ``lcprof`` or ``transformers`` (backends then name its attention implementations:
    eager, sdpa, flash-attn = flash_attention_2). ``moe_timing``: lcprof's MoE layers
    (dense-equivalent by default); transformers routes, so it gets ``routed``. ``init``: ``seeded``
    (CPU default) or ``device`` (CUDA default; see :mod:`lcprof.measure.model`).
    Returns the rows of this sweep's points (read back from ``out`` when given).
    """
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
            say(f"creating folder {out.parent}")
            out.parent.mkdir(parents=True, exist_ok=True)
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
    if done:
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


def _free(dev: torch.device) -> None:
    B.clear_mask_cache()
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()


class _Subject:
    """What one dtype's points run on: the whole model (lcprof's or transformers'), built once."""

    def __init__(self, cfg: _Settings, dt: str) -> None:
        self.cfg, self.dt = cfg, dt
        self.tdt = B.torch_dtype(dt)[0]
        self.model = None
        self.hf = None
        self.layers: dict = {}

    def lcprof_layer(self, idx: int, form: str):
        """Layer ``idx`` alone (built once per MLA form)."""
        cfg = self.cfg
        if (idx, form) not in self.layers:
            self.layers.clear()
            self.layers[(idx, form)] = build_layer(cfg.spec, idx, seed=cfg.seed, moe_timing=cfg.moe, mla_form=form
                                                   ).to(device=cfg.dev, dtype=self.tdt).eval()
        return self.layers[(idx, form)]

    def lcprof_model(self, spec: ModelSpec | None = None) -> Model:
        cfg = self.cfg
        if spec is not None:
            return Model(spec, seed=cfg.seed, moe_timing=cfg.moe, init=cfg.init, device=cfg.dev, dtype=self.tdt).eval()
        if self.model is None:
            self.model = Model(cfg.spec, seed=cfg.seed, moe_timing=cfg.moe, init=cfg.init, device=cfg.dev,
                               dtype=self.tdt).eval()
        return self.model

    def hf_model(self, impl_backend: str):
        from lcprof.measure.hf import IMPL_OF, HFModel

        cfg = self.cfg
        if self.hf is None:
            spec = cfg.spec if cfg.layer_idx is None else cfg.spec.with_layers(cfg.spec.layers[:cfg.layer_idx + 1])
            ours = self.lcprof_model(spec)
            self.hf = HFModel(ours, IMPL_OF[impl_backend], device=cfg.dev, dtype=self.tdt)
            del ours
            _free(cfg.dev)
        self.hf.set_attn_implementation(IMPL_OF[impl_backend])
        return self.hf

    def release(self) -> None:
        self.model = None
        self.hf = None
        self.layers.clear()
        _free(self.cfg.dev)


def _run_dtype(cfg: _Settings, group: list[_Point], dt: str, emit: Callable[[_Point], None]) -> None:
    subject = _Subject(cfg, dt)
    for p in group:
        _preflight(cfg, p)
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
                _time_point(cfg, subject, p)
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
            res = Checker(layer, dtype=p.dtype, phase=p.phase, batch=1).check(p.backend)
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


# ----------------------------------------------------------------------------------------------
# Timing
# ----------------------------------------------------------------------------------------------

def _ids(cfg: _Settings, n: int, sets: int, salt: int = 0) -> list[torch.Tensor]:
    g = torch.Generator(device="cpu").manual_seed(cfg.seed + 7919 * n + salt)
    return [torch.randint(0, cfg.spec.vocab_size, (cfg.batch, n), generator=g).to(cfg.dev) for _ in range(sets)]


def _measure(cfg: _Settings, fn, inputs, graph: bool) -> Measurement:
    return measure(fn, inputs, device=cfg.dev, budget_s=cfg.budget_s, min_reps=cfg.min_reps, max_reps=cfg.max_reps,
                   cuda_graph=graph)


def _lcprof_layer_fn(cfg: _Settings, layer, p: _Point, tdt, sets: int):
    """(fn, inputs) for one lcprof layer: hidden states, and (decode) its cache at context n."""
    g = torch.Generator(device="cpu").manual_seed(cfg.seed + 7919 * p.n + 1)
    h = cfg.spec.hidden_size
    if p.phase == "prefill":
        xs = [torch.randn(cfg.batch, p.n, h, generator=g).to(device=cfg.dev, dtype=tdt) for _ in range(sets)]
        return (lambda x: layer(x)), xs
    inputs = [(torch.randn(cfg.batch, 1, h, generator=g).to(device=cfg.dev, dtype=tdt),
               layer_decode_cache(layer, cfg.batch, p.n, dtype=tdt, device=cfg.dev, generator=g)) for _ in range(sets)]
    return (lambda inp: layer(inp[0], inp[1], start=p.n)), inputs


def _time_lcprof(cfg: _Settings, subject: _Subject, p: _Point) -> Measurement:
    sets = int(p.row["input_sets"])
    graph = cfg.graph(p.phase)
    attention = B.get_backend(p.backend)
    if cfg.layer_idx is not None:
        layer = subject.lcprof_layer(cfg.layer_idx, cfg.mla_form(p.phase) or "naive")
        layer.attention = attention
        fn, inputs = _lcprof_layer_fn(cfg, layer, p, subject.tdt, sets)
        return _measure(cfg, fn, inputs, graph)
    model = subject.lcprof_model()
    model.set_attention(attention)
    model.set_mla_form(cfg.mla_form(p.phase) or "naive")
    if p.phase == "prefill":
        return _measure(cfg, lambda ids: model(ids), _ids(cfg, p.n, sets), graph)
    g = torch.Generator(device="cpu").manual_seed(cfg.seed + 7919 * p.n + 2)
    inputs = [(ids, model.decode_caches(cfg.batch, p.n, generator=g)) for ids in _ids(cfg, 1, sets)]
    return _measure(cfg, lambda inp: model(inp[0], inp[1], start=p.n), inputs, graph)


def _time_scaled(cfg: _Settings, subject: _Subject, p: _Point) -> Measurement:
    """One layer of each kind and the head, each timed alone; summed by the schedule."""
    attention = B.get_backend(p.backend)
    parts: list[tuple[str, int, Measurement]] = []
    for idx, count in distinct_layers(cfg.spec):
        layer = build_layer(cfg.spec, idx, seed=cfg.seed, moe_timing=cfg.moe,
                            mla_form=cfg.mla_form(p.phase) or "naive").to(device=cfg.dev, dtype=subject.tdt).eval()
        layer.attention = attention
        fn, inputs = _lcprof_layer_fn(cfg, layer, p, subject.tdt, 1)
        parts.append((kind_label(cfg.spec, idx), count, _measure(cfg, fn, inputs, cfg.graph(p.phase))))
        del layer, fn, inputs
        _free(cfg.dev)
    head = _head_module(cfg, subject.tdt)
    m_head = _measure(cfg, head, _ids(cfg, p.n if p.phase == "prefill" else 1, 1, salt=3), False)
    parts.append(("head", 1, m_head))
    med = sum(c * m.median_s for _, c, m in parts)
    p10 = sum(c * m.p10_s for _, c, m in parts)
    p90 = sum(c * m.p90_s for _, c, m in parts)
    p.row["scaled_parts"] = " ".join(f"{lab}x{c}={m.median_s!r}" for lab, c, m in parts)
    return Measurement(samples_s=(p10, med, p90), clock=parts[0][2].clock, warmup_calls=0, input_sets=1,
                       note="kinds-scaled: samples are the summed p10, median and p90 of the parts")


def _head_module(cfg: _Settings, tdt):
    """embedding -> final norm -> LM head of the last position, with the model's weights' shapes."""
    from lcprof.measure.layer import RMSNorm

    eps = float(cfg.spec.config.get("rms_norm_eps", cfg.spec.config.get("layer_norm_eps", 1e-6)))
    g = torch.Generator(device="cpu").manual_seed(cfg.seed + 11)
    h, v = cfg.spec.hidden_size, cfg.spec.vocab_size
    emb = torch.randn(v, h, generator=g).to(device=cfg.dev, dtype=tdt)
    head = emb if cfg.spec.tie_embeddings else (torch.randn(v, h, generator=g) / h ** 0.5).to(device=cfg.dev, dtype=tdt)
    norm = RMSNorm(h, eps).to(device=cfg.dev, dtype=tdt)

    def run(ids):
        x = torch.nn.functional.embedding(ids, emb)
        return torch.nn.functional.linear(norm(x)[:, -1, :], head)

    return run


def _time_hf(cfg: _Settings, subject: _Subject, p: _Point) -> Measurement:
    hfm = subject.hf_model(p.backend)
    g = torch.Generator(device="cpu").manual_seed(cfg.seed + 7919 * p.n + 4)
    note = ""
    if p.phase == "decode":
        cache = hfm.decode_cache(cfg.batch, p.n, generator=g)
        note = "transformers' DynamicCache grows one token per timed step (contexts n .. n + repeats - 1)"
    else:
        cache = None
    if cfg.layer_idx is None:
        if p.phase == "prefill":
            m = _measure(cfg, lambda ids: hfm(ids), _ids(cfg, p.n, 1), False)
        else:
            m = _measure(cfg, lambda ids: hfm(ids, cache), _ids(cfg, 1, 3), False)
    else:
        ids = _ids(cfg, p.n if p.phase == "prefill" else 1, 1)[0]
        args, kwargs = hfm.capture_layer_call(cfg.layer_idx, ids, cache)
        call, x = hfm.layer_fn(cfg.layer_idx, args, kwargs, decode=p.phase == "decode")
        xs = [x] + [torch.randn(x.shape, generator=g).to(device=x.device, dtype=x.dtype) for _ in range(2)]
        m = _measure(cfg, call, xs, False)
    if note:
        p.row["reason"] = note
    return m


def _time_point(cfg: _Settings, subject: _Subject, p: _Point) -> None:
    failed = False
    probe = LoadProbe(cfg.dev).start()
    try:
        with PeakMemory(cfg.dev) as pm:
            if cfg.impl == "transformers":
                m = _time_hf(cfg, subject, p)
            elif p.scope == "kinds-scaled":
                m = _time_scaled(cfg, subject, p)
            else:
                m = _time_lcprof(cfg, subject, p)
        p.row.update(m.summary())
        if m.note:
            p.row["reason"] = (p.row["reason"] + "; " if p.row["reason"] else "") + m.note
        p.row["peak_mem_bytes"] = pm.peak_bytes
        p.row["peak_mem_source"] = pm.source
        p.row["achieved_flops_per_s"] = p.row["predicted_flops"] / m.median_s if m.median_s > 0 else None
        p.row["samples_s"] = " ".join(repr(float(s)) for s in m.samples_s)
        p.row["status"] = "ok"
    except Exception as exc:  # noqa: BLE001 - a failing point must not stop the sweep
        failed = True
        p.row["status"] = "oom" if is_oom(exc) else "error"
        p.row["reason"] = _first_line(exc)
    p.row.update(probe.stop())
    if failed or p.scope == "kinds-scaled":
        subject.model = None
    B.clear_mask_cache()
    if failed:
        _free(cfg.dev)

