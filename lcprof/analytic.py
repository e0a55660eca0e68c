"""Library functions behind the analytic CLI commands. Each returns a DataFrame or a dataclass.

No torch: these answer in milliseconds from a spec and the cost model.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from lcprof.cost.kinds import schedule_summary
from lcprof.cost.model import (activation_bytes, activation_steps, as_mask, attention_crossover_n, cost, kv_bytes,
                               kv_bytes_per_token, matmul_dtype, roofline, state_bytes, state_bytes_by_layer,
                               weight_bytes)
from lcprof.cost.ops import layer_pairs
from lcprof.cost.rope import rope_summary, rope_table
from lcprof.errors import LcprofError
from lcprof.hardware import get_gpu
from lcprof.spec import ModelSpec, describe, list_presets, load_model, param_counts, preset_aliases
from lcprof.units import dtype_name, parse_token_list


class ContextWarning(UserWarning):
    """n is beyond what the model was configured for; the numbers are computed anyway."""


def _check_context(spec: ModelSpec, ns) -> None:
    over = [int(n) for n in np.atleast_1d(ns) if n > spec.max_position_embeddings]
    if over:
        warnings.warn(
            f"n={max(over)} exceeds {spec.name}'s max_position_embeddings "
            f"({spec.max_position_embeddings}); computed anyway", ContextWarning, stacklevel=3)


def models_table() -> pd.DataFrame:
    rows = []
    aliases = preset_aliases()
    for nm in list_presets():
        s = load_model(nm)
        pc = param_counts(s)
        rows.append({
            "model": nm,
            "aliases": ",".join(sorted(aliases.get(nm, []))),
            "attention_type": s.attention_type,
            "layers": s.n_layers,
            "layer_kinds": ", ".join(f"{k} x{v}" for k, v in s.layer_kinds.items()),
            "max_position_embeddings": s.max_position_embeddings,
            "rope_type": s.rope.type if s.rope else "none",
            "total_params": pc["total_params"],
            "kv_bytes_per_token_bf16": kv_bytes_per_token(s, "bf16"),
        })
    return pd.DataFrame(rows)


def show(model: str | ModelSpec) -> dict:
    spec = load_model(model)
    return {**describe(spec), "schedule": schedule_summary(spec)}


def kv_table(model: str | ModelSpec, n, *, dtype: str = "bf16", batch: int = 1, tp: int = 1, mask=None,
             state_dtype: str | None = None) -> pd.DataFrame:
    """KV-cache bytes of the whole model at each n (one GPU's share under TP), the constant
    per-request state of its linear-time mixers (conv state in bf16, recurrent state in
    ``state_dtype``, default bf16: vLLM's "auto" for a bf16 model) and their sum."""
    spec = load_model(model)
    ns = parse_token_list(n)
    _check_context(spec, ns)
    dtype = dtype_name(dtype, allowed=("fp32", "bf16", "fp16", "fp8", "int8"))
    sdt = dtype_name(state_dtype, allowed=("fp32", "bf16", "fp16")) if state_dtype else "bf16"
    mask = as_mask(mask)
    kv = kv_bytes(spec, ns, batch=batch, kv_dtype=dtype, tp=tp, mask=mask)
    state = state_bytes(spec, batch=batch, dtype="bf16", state_dtype=sdt, tp=tp, mask=mask)
    per_tok = kv_bytes_per_token(spec, dtype, tp)
    full = np.asarray(ns, dtype=np.int64) * per_tok * batch
    return pd.DataFrame({
        "model": spec.name,
        "n": ns,
        "dtype": dtype,
        "batch": batch,
        "tp": tp,
        "kv_bytes_per_token": per_tok,
        "kv_bytes": kv,
        "kv_gib": kv / float(1 << 30),
        "kv_bytes_uncapped": full,
        "window_saving": np.where(full > 0, 1.0 - kv / np.where(full > 0, full, 1), 0.0),  # 0 without KV (SSM)
        "mask": "layers' own" if mask is None else mask.text(),
        "state_dtype": sdt,
        "state_bytes": state,
        "kv_plus_state_bytes": kv + state,
        "kv_plus_state_gib": (kv + state) / float(1 << 30),
    })


def flops_table(model: str | ModelSpec, n, *, phase: str = "prefill", dtype: str = "bf16", batch: int = 1,
                prefix: int = 0, layer: int | None = None, tile: int = 128, lm_head: bool = False,
                mask=None) -> pd.DataFrame:
    """FLOP breakdown (useful) per n, plus executed totals for eager and tiled backends; linear
    mixers under ``mixer_*`` (their sum ``mixer_total_flops``)."""
    spec = load_model(model)
    ns = parse_token_list(n)
    _check_context(spec, np.asarray(ns) + prefix)
    kw = dict(prefix=prefix, phase=phase, batch=batch, dtype=dtype, layer=layer, lm_head=lm_head,
              tile=(tile, tile), mask=as_mask(mask))
    useful = cost(spec, ns, family="useful", **kw)
    eager = cost(spec, ns, family="eager", **kw)
    tiled = cost(spec, ns, family="tiled", **kw)
    df = pd.DataFrame({"model": spec.name, "n": ns, "phase": phase, "prefix": prefix, "batch": batch,
                       "dtype": dtype_name(dtype), "scope": "model" if layer is None else f"layer {layer}"})
    for name, v in useful.flops.items():
        col = name.replace("/", "_")
        df[f"{col}_flops"] = np.asarray(v)
    df["attn_share"] = df["attn_total_flops"] / df["total_flops"]
    df["executed_eager_flops"] = eager.flops["total"]
    df["executed_tiled_flops"] = tiled.flops["total"]
    df["executed_attn_eager_flops"] = eager.flops["attn/total"]
    df["executed_attn_tiled_flops"] = tiled.flops["attn/total"]
    return df


def rope(model: str | ModelSpec, n=None) -> tuple[dict, pd.DataFrame]:
    spec = load_model(model)
    target = parse_token_list(n)[0] if n is not None else None
    if target:
        _check_context(spec, [target])
    return rope_summary(spec, target), rope_table(spec, target)


# ----------------------------------------------------------------------------------------------
# lcprof layer
# ----------------------------------------------------------------------------------------------

BACKEND_FAMILIES_SHOWN = ("useful", "eager", "tiled")


@dataclass
class LayerReport:
    """Everything `lcprof layer` shows for one layer at one n (and the model's KV at n)."""

    model: str
    n: int
    layer: int
    gpu: str
    attention_kind: str
    flops: pd.DataFrame  # op rows x (useful, eager, tiled) executed FLOPs
    memory: pd.DataFrame  # per backend family: activation bytes; plus model KV and weights
    timing: pd.DataFrame  # predicted per-layer time per dtype and family
    summary: dict = field(default_factory=dict)

    def records(self) -> list[dict]:
        """Flat records for JSON/CSV: one per (section, row)."""
        out = []
        for _, r in self.flops.iterrows():
            out.append({"section": "flops", "model": self.model, "n": self.n, **r.to_dict()})
        for _, r in self.memory.iterrows():
            out.append({"section": "memory", "model": self.model, "n": self.n, **r.to_dict()})
        for _, r in self.timing.iterrows():
            out.append({"section": "timing", "model": self.model, "n": self.n, **r.to_dict()})
        out.append({"section": "summary", **self.summary})
        return out


def layer_report(model: str | ModelSpec, n, *, gpu: str = "h100-sxm", dtypes=("fp32", "bf16"),
                 layer: int = 0, tile: int = 128, batch: int = 1, kv_dtype: str = "bf16",
                 tf32: bool = False, elementwise: str = "unfused", mask=None) -> LayerReport:
    spec = load_model(model)
    mask = as_mask(mask)
    ns = parse_token_list(n)
    if len(ns) != 1:
        raise LcprofError("lcprof layer takes one n; use `lcprof flops` for several")
    n_tok = ns[0]
    _check_context(spec, [n_tok])
    if not 0 <= layer < spec.n_layers:
        raise LcprofError(f"layer {layer} out of range 0..{spec.n_layers - 1} for {spec.name}")
    hw = get_gpu(gpu)
    dtypes = [dtype_name(d, allowed=("fp32", "tf32", "bf16", "fp16", "fp8")) for d in dtypes]
    lyr = spec.layers[layer]
    t = (tile, tile)
    costs = {fam: cost(spec, n_tok, layer=layer, family=fam, tile=t, batch=batch, dtype="bf16", mask=mask)
             for fam in BACKEND_FAMILIES_SHOWN}
    names = [k for k in costs["useful"].flops if k not in ("total",)]
    frows = []
    for name in names:
        frows.append({
            "op": name,
            "useful_flops": float(costs["useful"].flops[name][0]),
            "executed_eager_flops": float(costs["eager"].flops[name][0]),
            "executed_tiled_flops": float(costs["tiled"].flops[name][0]),
        })
    frows.append({"op": "total", "useful_flops": float(costs["useful"].flops["total"][0]),
                  "executed_eager_flops": float(costs["eager"].flops["total"][0]),
                  "executed_tiled_flops": float(costs["tiled"].flops["total"][0])})
    flops_df = pd.DataFrame(frows)

    mrows = []
    for d in dtypes:
        store = "fp32" if d == "tf32" else d
        for fam in ("eager", "tiled"):
            steps = activation_steps(spec, n_tok, batch=batch, dtype=store, family=fam, layer=layer)
            top = max(steps, key=lambda k: float(steps[k][0]))
            mrows.append({"item": f"activation/{fam}", "dtype": store, "bytes": int(steps[top][0]),
                          "peak_step": top})
        mrows.append({"item": "weights/layer", "dtype": store,
                      "bytes": int(round(weight_bytes(spec, store) / spec.n_layers)), "peak_step": ""})
    kv_model = int(kv_bytes(spec, n_tok, batch=batch, kv_dtype=kv_dtype, mask=mask)[0])
    mrows.append({"item": "kv_cache/model", "dtype": kv_dtype, "bytes": kv_model, "peak_step": ""})
    mrows.append({"item": "kv_cache/layer", "dtype": kv_dtype,
                  "bytes": int(kv_bytes(spec.with_layers((lyr,)), n_tok, batch=batch, kv_dtype=kv_dtype, mask=mask)[0]),
                  "peak_step": ""})
    state_model = state_bytes(spec, batch=batch, dtype="bf16", mask=mask)
    mrows.append({"item": "state/model", "dtype": "bf16", "bytes": state_model, "peak_step": ""})
    mrows.append({"item": "state/layer", "dtype": "bf16",
                  "bytes": int(round(batch * state_bytes_by_layer(spec, dtype="bf16", mask=mask)[layer])),
                  "peak_step": ""})
    mem_df = pd.DataFrame(mrows)
    mem_df["gib"] = mem_df["bytes"] / float(1 << 30)
    mem_df["fits_gpu"] = mem_df["bytes"] <= hw.memory_bytes

    trows = []
    for d in dtypes:
        store = "fp32" if d == "tf32" else d
        for fam in ("eager", "tiled"):
            c = cost(spec, n_tok, layer=layer, family=fam, tile=t, batch=batch, dtype=store, elementwise=elementwise,
                     mask=mask)
            try:
                rl = roofline(c, hw, tf32=(d == "tf32" or tf32))
            except LcprofError:
                continue
            trows.append({
                "dtype": d, "family": fam, "gpu": hw.key,
                "time_s": float(rl["total"][0]),
                "attn_time_s": float(rl["attn/total"][0]),
                "attn_time_share": float(rl["attn/total"][0] / rl["total"][0]),
                "executed_flops": float(c.flops["total"][0]),
                "bytes": float(c.bytes["total"][0]),
                "intensity_flops_per_byte": float(c.flops["total"][0] / c.bytes["total"][0]),
                "bound": "compute" if c.flops["total"][0] / c.bytes["total"][0] > hw.peak(matmul_dtype(d)) / hw.hbm_bytes_per_s else "memory",
                "activation_bytes": int(activation_bytes(spec, n_tok, batch=batch, dtype=store, family=fam, layer=layer)[0]),
            })
    timing_df = pd.DataFrame(trows)
    u = costs["useful"]
    attn_share = float(u.useful_flops["attn/total"][0] / u.useful_flops["total"][0])
    pairs = layer_pairs(spec, layer, n_tok, mask=mask)
    summary = {
        "model": spec.name, "n": n_tok, "layer": layer, "layer_kind": lyr.kind, "attention_kind": lyr.attn,
        "window": lyr.window, "mask": None if mask is None else mask.text(), "gpu": hw.key, "batch": batch,
        "useful_flops": float(u.flops["total"][0]),
        "attn_flops_share": attn_share,
        "mixer_flops_share": float(u.useful_flops["mixer/total"][0] / u.useful_flops["total"][0]),
        "causal_pairs": None if pairs is None else float(np.atleast_1d(pairs)[0]),
        "full_square_pairs": float(n_tok) * n_tok,
        "n_star_layer": attention_crossover_n(spec, layer=layer),
        "n_star_model": attention_crossover_n(spec),
        "kv_bytes_model": kv_model,
        "state_bytes_model": state_model,
        "kv_dtype": kv_dtype,
        "tile": tile,
    }
    return LayerReport(model=spec.name, n=n_tok, layer=layer, gpu=hw.key, attention_kind=lyr.attn,
                       flops=flops_df, memory=mem_df, timing=timing_df, summary=summary)


# ----------------------------------------------------------------------------------------------
# lcprof diff
# ----------------------------------------------------------------------------------------------

_DIFF_FIELDS = [
    ("n_layers", "more layers: every per-layer cost scales with it"),
    ("hidden_size", "projection and MLP FLOPs, weights"),
    ("n_heads", "attention FLOPs"),
    ("n_kv_heads", "KV-cache bytes per token"),
    ("head_dim", "attention FLOPs and KV bytes"),
    ("intermediate_size", "MLP FLOPs and weights"),
    ("vocab_size", "embedding/lm_head weights"),
    ("max_position_embeddings", "longest supported context"),
    ("original_max_position_embeddings", "context the model was trained at before scaling"),
]


def diff(model_a: str | ModelSpec, model_b: str | ModelSpec, n=None) -> pd.DataFrame:
    """Config fields that differ between two models, and what each changes in cost."""
    a, b = load_model(model_a), load_model(model_b)
    # Column names are the model names; two different configs may share a name (two folders
    # both called "model"), and then each column says which argument it came from.
    ka, kb = (a.name, b.name) if a.name != b.name else (f"{a.name} (1: {model_a})", f"{b.name} (2: {model_b})")
    rows = []

    def add(fieldname, va, vb, effect):
        if va != vb:
            rows.append({"field": fieldname, ka: str(va), kb: str(vb), "effect": effect})

    for f, effect in _DIFF_FIELDS:
        add(f, getattr(a, f), getattr(b, f), effect)
    add("attention_type", a.attention_type, b.attention_type, "KV bytes per token")
    add("layer_kinds", a.layer_kinds, b.layer_kinds, "attended pairs and KV held per layer (windows cap both)")
    add("schedule", schedule_summary(a), schedule_summary(b),
        "linear-time mixers hold a constant state instead of KV and cost linear FLOPs")
    ra, rb = a.rope, b.rope
    for f in ("type", "theta", "factor", "original_max_position", "rotary_dim"):
        add(f"rope.{f}", getattr(ra, f, None), getattr(rb, f, None),
            "position encoding only: no FLOP or byte change; changes which frequencies are stretched")
    if ra and rb and ra.type == rb.type == "longrope" and (ra.long_factor != rb.long_factor):
        add("rope.long_factor", f"{len(ra.long_factor)} values", f"{len(rb.long_factor)} values (differ)",
            "per-pair stretch beyond the original context")
    add("mla", a.mla, b.mla, "latent KV cache")
    add("moe", a.moe, b.moe, "active MLP FLOPs vs total weights")
    # cost consequences at a reference length
    n_ref = parse_token_list(n)[0] if n is not None else min(a.max_position_embeddings, b.max_position_embeddings, 131072)
    for label, fa, fb in (
        ("kv_bytes_per_token_bf16", kv_bytes_per_token(a), kv_bytes_per_token(b)),
        (f"kv_bytes_at_{n_ref}", int(kv_bytes(a, n_ref)[0]), int(kv_bytes(b, n_ref)[0])),
        ("state_bytes_bf16", state_bytes(a), state_bytes(b)),
        (f"prefill_flops_at_{n_ref}", float(cost(a, n_ref).flops["total"][0]), float(cost(b, n_ref).flops["total"][0])),
        ("total_params", param_counts(a)["total_params"], param_counts(b)["total_params"]),
    ):
        rows.append({"field": label, ka: f"{fa:.6g}" if isinstance(fa, float) else str(fa),
                     kb: f"{fb:.6g}" if isinstance(fb, float) else str(fb),
                     "effect": "same" if fa == fb else f"x{(fb / fa) if fa else float('inf'):.4g}"})
    return pd.DataFrame(rows, columns=["field", ka, kb, "effect"])
