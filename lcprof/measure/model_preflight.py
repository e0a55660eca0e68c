"""Pre-flight of a whole-model (or one-layer) point: FLOPs, predicted memory, and what cannot run.

:func:`preflight` fills a point's row before anything is built: the backend's probe; the plan of
every distinct layer's mask (:meth:`Backend.plan`, and SDPA's own kernel choice); executed and
useful FLOPs (``cost`` per distinct layer in the family it executes, times its count, plus the LM
head); the predicted peak memory (:func:`predict_model_memory`) against the cap or the device's
free memory; and, when the whole model does not fit, whether one layer of each kind does
(``scope=kinds-scaled``). Used by :mod:`lcprof.measure.model_sweep`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from lcprof.cost.model import activation_bytes, cost
from lcprof.cost.ops import attention_dims, lm_head_op
from lcprof.measure import backends as B
from lcprof.measure.model import Model, cache_nbytes, decode_capacity, distinct_layers, kind_label, layer_decode_cache
from lcprof.measure.sweep import CUDA_WORKSPACE_BYTES
from lcprof.measure.env import free_memory_bytes
from lcprof.measure.layer import score_ops
from lcprof.spec import ModelSpec
from lcprof.units import dtype_bytes, fmt_bytes

if TYPE_CHECKING:
    from lcprof.measure.model_sweep import _Point, _Settings

#: rotate 3 input sets while one set (decode caches) is smaller than this, else one
ROTATE_BELOW_BYTES = 256 << 20


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
            per_layer_c[idx] = cache_nbytes(c)
    total_w = sum(p.numel() for p in meta.parameters()) * s
    head_w = total_w - sum(sum(p.numel() for p in lay.parameters()) * s for lay in meta.layers)
    total_c = meta.decode_cache_bytes(cfg.batch, n, tdt) if phase == "decode" else 0
    return {"model_w": int(total_w), "head_w": int(head_w), "layer_w": per_layer_w, "layer_c": per_layer_c,
            "model_c": int(total_c)}


def preflight(cfg: _Settings, p: _Point) -> None:
    spec = cfg.spec
    row = {c: None for c in _columns()}
    row.update(cfg.env)
    row.update(p.key_fields(cfg))
    row.update({"model": spec.name, "model_config": cfg.source, "impl": cfg.impl, "backend": p.backend, "dtype": p.dtype, "device": str(cfg.dev),
                "batch": cfg.batch, "n": p.n, "phase": p.phase, "target": cfg.target, "moe_timing": cfg.moe_timing,
                "mla_form": cfg.mla_form(p.phase), "reason": "", "mem_cap_bytes": cfg.mem_cap_bytes,
                "impl_version": impl_version(cfg.impl)})
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
        if not spec.layers[idx].has_attention:  # a mixer or MLP-only layer: no attention kernel to plan
            p.families[idx] = "tiled"  # its activations are the same in every family
            continue
        mask = layer_mask(spec, idx, p.phase, p.n)
        plan, why = b.plan(mask, p.phase, score_ops(spec, spec.layers[idx]))
        if plan is None:
            p.pre_status, row["reason"] = "skipped", f"layer {idx} ({kind_label(spec, idx)}): {why}"
            return
        if p.backend == "sdpa" and plan.executed_family != "eager":
            plan = _sdpa_choice(cfg, p, idx, mask, plan, tdt)
        p.families[idx] = plan.executed_family
        if _dense_mask(p.backend, plan, mask):
            dense.add(mask.effective())
    fams = {p.families[idx] for idx, _ in layers if spec.layers[idx].has_attention}
    row["executed_family"] = fams.pop() if len(fams) == 1 else ("mixed" if fams else "")
    row["kind_families"] = " ".join(f"{idx}:{p.families[idx] if spec.layers[idx].has_attention else 'n/a'}"
                                    for idx, _ in layers)
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


def impl_version(impl: str) -> str | None:
    if impl == "lcprof":
        from lcprof._version import __version__

        return __version__
    from lcprof.measure.hf import version

    return version()


def _columns():
    from lcprof.measure.model_sweep import MODEL_COLUMNS

    return MODEL_COLUMNS
