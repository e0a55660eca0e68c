"""Library functions behind the analytic CLI commands. Each returns a Table, a dict or a dataclass.

No torch, no pandas: these answer in milliseconds from a spec and the cost model. A
:class:`lcprof.table.Table` converts to a pandas DataFrame with ``.df`` for notebook users.
Byte counts are exact Python integers.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field

import numpy as np

from lcprof.cost.kinds import schedule_summary, state_dtype_label
from lcprof.cost.model import (activation_bytes, activation_steps, as_mask, attention_crossover_n, cost, kv_bytes,
                               state_bytes, state_bytes_by_layer,
                               kv_bytes_per_token, matmul_dtype, roofline, weight_bytes)
from lcprof.cost.ops import layer_pairs
from lcprof.errors import LcprofError
from lcprof.spec import ModelSpec, describe, list_presets, load_model, param_counts, preset_aliases
from lcprof.spec.model import MIXER_FIELDS
from lcprof.table import Table
from lcprof.units import dtype_name, parse_token_list

#: dtypes a KV cache may be stored in; a compute dtype's KV is stored in the same type (tf32 as fp32).
KV_DTYPES = ("fp32", "bf16", "fp16", "fp8", "int8")
COMPUTE_DTYPES = ("fp32", "tf32", "bf16", "fp16", "fp8")


#: Most tiles per side the tiled-kernel count handles (its arrays grow with n / tile).
MAX_TILES_PER_SIDE = 1 << 22


#: Largest model dimension (hidden size, heads, layers, vocabulary, ...) lcprof computes with: products
#: of a few of them with token counts stay exact in float64 and far from int64's end.
MAX_MODEL_SIZE = 1 << 31
#: Fields measured in tokens may reach lcprof's token limit.
_TOKEN_FIELDS = ("max_position_embeddings", "original_max_position_embeddings", "original_max_position", "window")


def load(model: str | ModelSpec) -> ModelSpec:
    """:func:`lcprof.spec.load_model` for the commands, refusing in one line (LcprofError naming the file
    and field) a config.json the parser cannot read, or whose sizes lcprof cannot compute with
    (:func:`check_computable`). Whether a value the parser accepts is right is the parser's business."""
    what = f"config {str(model)!r}" if not isinstance(model, ModelSpec) else f"model {model.name!r}"
    try:
        spec = load_model(model)
    except LcprofError:
        raise
    except (RecursionError, MemoryError) as exc:
        raise LcprofError(f"cannot read {what}: too large or nested too deeply to parse "
                          f"({type(exc).__name__})") from exc
    except (ValueError, TypeError, OverflowError, ZeroDivisionError, KeyError, AttributeError, IndexError) as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise LcprofError(f"cannot use {what}: a field has a value lcprof cannot read "
                          f"({type(exc).__name__}: {detail[:200]})") from exc
    check_computable(spec, what)
    return spec


def check_computable(spec: ModelSpec, what: str = "") -> None:
    """Refuse a spec with a size beyond MAX_MODEL_SIZE (tokens: units.MAX_TOKENS) or a number that is
    not finite: the cost model would overflow, or allocate per-dimension arrays that cannot exist."""
    import dataclasses
    import math

    from lcprof.units import MAX_TOKENS

    def walk(obj, prefix):
        for f in dataclasses.fields(obj):
            if f.name in ("config", "published_params", "published_active_params", "aliases", "name", "source",
                          "notes", "model_type", "torch_dtype"):
                continue
            v = getattr(obj, f.name)
            yield from check(v, f"{prefix}{f.name}", f.name)

    def check(v, label, name):
        if dataclasses.is_dataclass(v):
            yield from walk(v, f"{label}.")
        elif isinstance(v, (tuple, list)):
            for i, x in enumerate(v):
                yield from check(x, f"{label}[{i}]", name)
        elif isinstance(v, bool) or v is None or isinstance(v, str):
            return
        elif isinstance(v, float) and not math.isfinite(v):
            yield f"{label}={v} is not a finite number"
        elif isinstance(v, int):
            limit = MAX_TOKENS if name in _TOKEN_FIELDS else MAX_MODEL_SIZE
            if v > limit:
                yield f"{label}={v} is larger than lcprof computes with ({limit})"

    problems = list(walk(spec, ""))
    if problems:
        raise LcprofError(f"cannot use {what or spec.name}: {problems[0]}"
                          + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))


def check_tiles(n_max: int, tile: int) -> None:
    """Refuse a tiled count whose per-side tile count would not fit in memory and time."""
    tiles = -(-int(n_max) // int(tile))
    if tiles > MAX_TILES_PER_SIDE:
        need = -(-int(n_max) // MAX_TILES_PER_SIDE)
        raise LcprofError(f"n={n_max} with tile {tile} is {tiles} tiles per side, more than lcprof counts "
                          f"({MAX_TILES_PER_SIDE}); use --tile {1 << (need - 1).bit_length()} or a smaller n")


class ContextWarning(UserWarning):
    """n is beyond what the model was configured for; the numbers are computed anyway."""


def _check_context(spec: ModelSpec, ns) -> None:
    over = [int(n) for n in np.atleast_1d(ns) if n > spec.max_position_embeddings]
    if over:
        warnings.warn(
            f"n={max(over)} exceeds {spec.name}'s max_position_embeddings "
            f"({spec.max_position_embeddings}); computed anyway", ContextWarning, stacklevel=3)


def _one_n(n, what: str) -> int:
    ns = parse_token_list(n)
    if len(ns) != 1:
        raise LcprofError(f"{what} takes one n, got {len(ns)} ({', '.join(map(str, ns[:4]))}"
                          f"{', ...' if len(ns) > 4 else ''})")
    return ns[0]


def models_table() -> Table:
    rows = []
    aliases = preset_aliases()
    for nm in list_presets():
        s = load(nm)
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
    return Table.from_records(rows)


def show(model: str | ModelSpec) -> dict:
    spec = load(model)
    return {**describe(spec), "schedule": schedule_summary(spec)}


def kv_table(model: str | ModelSpec, n, *, dtype: str = "bf16", batch: int = 1, tp: int = 1, mask=None,
             state_dtype: str | None = None) -> Table:
    """KV-cache bytes of the whole model at each n (one GPU's share under TP; exact integers), the
    constant per-request state of its linear-time mixers (conv state in bf16, recurrent state in
    ``state_dtype``, default bf16: vLLM's "auto" for a bf16 model) and their sum."""
    spec = load(model)
    ns = parse_token_list(n)
    dtype = dtype_name(dtype, allowed=KV_DTYPES)
    sdt = dtype_name(state_dtype, allowed=("fp32", "bf16", "fp16")) if state_dtype else "bf16"
    mask = as_mask(mask)
    kv = [int(v) for v in kv_bytes(spec, ns, batch=batch, kv_dtype=dtype, tp=tp, mask=mask)]
    state = int(state_bytes(spec, batch=batch, dtype="bf16", state_dtype=sdt, tp=tp, mask=mask))
    _check_context(spec, ns)  # after the count: a refused count comes without a warning
    per_tok = kv_bytes_per_token(spec, dtype, tp)
    full = [int(x) * per_tok * int(batch) for x in ns]  # Python ints: exact, never wrap
    return Table({
        "model": spec.name,
        "n": ns,
        "dtype": dtype,
        "batch": int(batch),
        "tp": int(tp),
        "kv_bytes_per_token": per_tok,
        "kv_bytes": kv,
        "kv_gib": [v / float(1 << 30) for v in kv],
        "kv_bytes_uncapped": full,
        "window_saving": [1.0 - v / f if f > 0 else 0.0 for v, f in zip(kv, full)],  # 0 without KV (SSM)
        "mask": "layers' own" if mask is None else mask.text(),
        "state_dtype": state_dtype_label(spec, sdt),
        "state_bytes": state,
        "kv_plus_state_bytes": [v + state for v in kv],
        "kv_plus_state_gib": [(v + state) / float(1 << 30) for v in kv],
    })


def flops_table(model: str | ModelSpec, n, *, phase: str = "prefill", dtype: str = "bf16", batch: int = 1,
                prefix: int = 0, layer: int | None = None, tile: int = 128, lm_head: bool = False,
                mask=None) -> Table:
    """FLOP breakdown (useful) per n, plus executed totals for eager and tiled backends; linear
    mixers under ``mixer_*`` (their sum ``mixer_total_flops``)."""
    spec = load(model)
    ns = parse_token_list(n)
    check_tiles(max(ns) + prefix, tile)
    if layer is not None and not 0 <= layer < spec.n_layers:
        raise LcprofError(f"layer {layer} out of range 0..{spec.n_layers - 1} for {spec.name}")
    _check_context(spec, np.asarray(ns) + prefix)
    kw = dict(prefix=prefix, phase=phase, batch=batch, dtype=dtype, layer=layer, lm_head=lm_head,
              tile=(tile, tile), mask=as_mask(mask))
    useful = cost(spec, ns, family="useful", **kw)
    eager = cost(spec, ns, family="eager", **kw)
    tiled = cost(spec, ns, family="tiled", **kw)
    cols = {"model": spec.name, "n": ns, "phase": phase, "prefix": int(prefix), "batch": int(batch),
            "dtype": dtype_name(dtype), "scope": "model" if layer is None else f"layer {layer}"}
    for name, v in useful.flops.items():
        cols[f"{name.replace('/', '_')}_flops"] = np.asarray(v, dtype=np.float64).tolist()
    cols["attn_share"] = [a / t if t else 0.0 for a, t in zip(cols["attn_total_flops"], cols["total_flops"])]
    cols["executed_eager_flops"] = np.asarray(eager.flops["total"], dtype=np.float64).tolist()
    cols["executed_tiled_flops"] = np.asarray(tiled.flops["total"], dtype=np.float64).tolist()
    cols["executed_attn_eager_flops"] = np.asarray(eager.flops["attn/total"], dtype=np.float64).tolist()
    cols["executed_attn_tiled_flops"] = np.asarray(tiled.flops["attn/total"], dtype=np.float64).tolist()
    return Table(cols)


def rope(model: str | ModelSpec, n=None) -> tuple[dict, Table]:
    """(summary, per-pair table) of the model's RoPE at target length n (default: its max positions)."""
    from lcprof.cost.rope import rope_summary, rope_table

    spec = load(model)
    target = _one_n(n, "lcprof rope") if n is not None else None
    if target:
        _check_context(spec, [target])
    return rope_summary(spec, target), rope_table(spec, target)


# ----------------------------------------------------------------------------------------------
# lcprof layer
# ----------------------------------------------------------------------------------------------

BACKEND_FAMILIES_SHOWN = ("useful", "eager", "tiled")


def storage_dtype(dtype: str) -> str:
    """The dtype tensors are stored in when computing in ``dtype`` (tf32 computes on fp32 storage)."""
    return "fp32" if dtype == "tf32" else dtype


@dataclass
class LayerReport:
    """Everything `lcprof layer` shows for one layer at one n (and the model's KV at n)."""

    model: str
    n: int
    layer: int
    gpu: str
    attention_kind: str
    flops: Table  # op rows x (useful, eager, tiled) executed FLOPs
    memory: Table  # per dtype: activation bytes per backend family, weights; model and layer KV per KV dtype
    timing: Table  # predicted per-layer time per dtype and family (a row that cannot be computed says why)
    summary: dict = field(default_factory=dict)

    def records(self) -> list[dict]:
        """Flat records for JSON/CSV: one per (section, row), every table the text output prints."""
        out = []
        for section, table in (("flops", self.flops), ("memory", self.memory), ("timing", self.timing)):
            for r in table.records():
                out.append({"section": section, "model": self.model, "n": self.n, **r})
        out.append({"section": "summary", **self.summary})
        return out


def layer_report(model: str | ModelSpec, n, *, gpu: str = "h100-sxm", dtypes=("fp32", "bf16"),
                 layer: int = 0, tile: int = 128, batch: int = 1, kv_dtype: str | None = None,
                 tf32: bool = False, elementwise: str = "unfused", calibration=None,
                 backend: str | None = None, mask=None) -> LayerReport:
    """One layer at one n. The KV cache is stored in each of ``dtypes`` (tf32 as fp32) unless
    ``kv_dtype`` names one KV dtype for all of them. Times are the roofline on
    ``lcprof.rates.resolve_rates(gpu, calibration)`` (a profile, rates fitted from a sweep, the best
    profile at hand for ``gpu``, or its datasheet -- an upper bound); attention runs at ``backend``'s
    calibrated rate when the rates have one. ``summary['rates']`` says which."""
    spec = load(model)
    mask = as_mask(mask)
    n_tok = _one_n(n, "lcprof layer")
    check_tiles(n_tok, tile)
    _check_context(spec, [n_tok])
    if not 0 <= layer < spec.n_layers:
        raise LcprofError(f"layer {layer} out of range 0..{spec.n_layers - 1} for {spec.name}")
    from lcprof.rates import resolve_rates

    rates = resolve_rates(gpu, calibration)
    hw = rates.hardware
    if isinstance(dtypes, str):
        dtypes = [d for d in dtypes.split(",") if d.strip()]
    dtypes = list(dict.fromkeys(dtype_name(d, allowed=COMPUTE_DTYPES) for d in dtypes))
    if not dtypes:
        raise LcprofError("lcprof layer needs at least one dtype")
    if kv_dtype is not None:
        kv_dtypes = [dtype_name(kv_dtype, allowed=KV_DTYPES)]
        kv_source = "--kv-dtype"
    else:
        kv_dtypes = list(dict.fromkeys(storage_dtype(d) for d in dtypes))
        kv_source = "--dtype"
    lyr = spec.layers[layer]
    t = (tile, tile)
    costs = {fam: cost(spec, n_tok, layer=layer, family=fam, tile=t, batch=batch, dtype="bf16", mask=mask)
             for fam in BACKEND_FAMILIES_SHOWN}
    names = [k for k in costs["useful"].flops if k != "total"] + ["total"]
    flops_t = Table({
        "op": names,
        "useful_flops": [float(costs["useful"].flops[k][0]) for k in names],
        "executed_eager_flops": [float(costs["eager"].flops[k][0]) for k in names],
        "executed_tiled_flops": [float(costs["tiled"].flops[k][0]) for k in names],
    })

    mrows = []
    for store in dict.fromkeys(storage_dtype(d) for d in dtypes):
        for fam in ("eager", "tiled"):
            steps = activation_steps(spec, n_tok, batch=batch, dtype=store, family=fam, layer=layer)
            top = max(steps, key=lambda k: float(steps[k][0]))
            mrows.append({"item": f"activation/{fam}", "dtype": store, "bytes": int(steps[top][0]),
                          "peak_step": top})
        mrows.append({"item": "weights/layer", "dtype": store,
                      "bytes": int(round(weight_bytes(spec, store) / spec.n_layers)), "peak_step": ""})
    kv_model = {}
    for kd in kv_dtypes:
        kv_model[kd] = int(kv_bytes(spec, n_tok, batch=batch, kv_dtype=kd, mask=mask)[0])
        mrows.append({"item": "kv_cache/model", "dtype": kd, "bytes": kv_model[kd], "peak_step": ""})
        mrows.append({"item": "kv_cache/layer", "dtype": kd,
                      "bytes": int(kv_bytes(spec.with_layers((lyr,)), n_tok, batch=batch, kv_dtype=kd,
                                            mask=mask)[0]),
                      "peak_step": ""})
    state_model = int(state_bytes(spec, batch=batch, dtype="bf16", mask=mask))
    mrows.append({"item": "state/model", "dtype": "bf16", "bytes": state_model, "peak_step": ""})
    mrows.append({"item": "state/layer", "dtype": "bf16",
                  "bytes": int(round(batch * state_bytes_by_layer(spec, dtype="bf16", mask=mask)[layer])),
                  "peak_step": ""})
    for r in mrows:
        r["gib"] = r["bytes"] / float(1 << 30)
        r["fits_gpu"] = r["bytes"] <= hw.memory_bytes
    mem_t = Table.from_records(mrows)

    trows = []
    for d in dtypes:
        store = storage_dtype(d)
        for fam in ("eager", "tiled"):
            row = {"dtype": d, "family": fam, "gpu": hw.key}
            try:
                c = cost(spec, n_tok, layer=layer, family=fam, tile=t, batch=batch, dtype=store,
                         elementwise=elementwise, mask=mask)
                rl = roofline(c, hw, tf32=(d == "tf32" or tf32), backend=backend if fam == "tiled" else None)
                flops_total, bytes_total = float(c.flops["total"][0]), float(c.bytes["total"][0])
                ridge = hw.peak(matmul_dtype(d)) / hw.hbm_bytes_per_s
            except LcprofError as exc:  # e.g. no fp8 peak on this GPU: the row says so
                trows.append({**row, "status": "not computed", "reason": str(exc)})
                continue
            trows.append({
                **row,
                "time_s": float(rl["total"][0]),
                "attn_time_s": float(rl["attn/total"][0]),
                "attn_time_share": float(rl["attn/total"][0] / rl["total"][0]),
                "executed_flops": flops_total,
                "bytes": bytes_total,
                "intensity_flops_per_byte": flops_total / bytes_total,
                "bound": "compute" if flops_total / bytes_total > ridge else "memory",
                "activation_bytes": int(activation_bytes(spec, n_tok, batch=batch, dtype=store, family=fam,
                                                         layer=layer)[0]),
                "status": "ok",
                "reason": "",
            })
    timing_cols = ["dtype", "family", "gpu", "time_s", "attn_time_s", "attn_time_share", "executed_flops", "bytes",
                   "intensity_flops_per_byte", "bound", "activation_bytes", "status", "reason"]
    timing_t = Table.from_records(trows, columns=timing_cols)
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
        "kv_dtype": ",".join(kv_dtypes),
        "kv_dtype_source": kv_source,
        **{f"kv_bytes_model_{kd}": v for kd, v in kv_model.items()},
        "state_bytes_model": state_model,
        "tile": tile,
        "rates": rates.label,
    }
    return LayerReport(model=spec.name, n=n_tok, layer=layer, gpu=hw.key, attention_kind=lyr.attn,
                       flops=flops_t, memory=mem_t, timing=timing_t, summary=summary)


# ----------------------------------------------------------------------------------------------
# lcprof diff
# ----------------------------------------------------------------------------------------------

#: What a raw config.json field changes, for the fields `lcprof diff` lists first.
_CONFIG_EFFECTS = {
    "max_position_embeddings": "longest supported context",
    "original_max_position_embeddings": "context the model was trained at before scaling",
    "rope_scaling": "position encoding: which frequencies are stretched (no FLOP or byte change)",
    "rope_parameters": "position encoding: which frequencies are stretched (no FLOP or byte change)",
    "rope_theta": "position encoding: base wavelength (no FLOP or byte change)",
    "sliding_window": "sliding layers' attended pairs and KV held (capped at the window)",
    "use_sliding_window": "whether layers use the sliding window",
    "max_window_layers": "which layers slide",
    "layer_types": "attention kind per layer",
    "attention_chunk_size": "chunked layers' attended pairs and KV held",
    "num_hidden_layers": "every per-layer cost scales with it",
    "hidden_size": "projection and MLP FLOPs, weights",
    "num_attention_heads": "attention FLOPs",
    "num_key_value_heads": "KV-cache bytes per token",
    "head_dim": "attention FLOPs and KV bytes",
    "intermediate_size": "MLP FLOPs and weights",
    "vocab_size": "embedding/lm_head weights",
    "torch_dtype": "the checkpoint's dtype (lcprof takes dtypes from its options)",
    "use_qk_norm": "q/k norms: elementwise bytes over q and k",
    "qk_norm_type": "q/k norm per head or over all heads: elementwise bytes over q and k",
    "attn_temperature_tuning": "NoPE layers' query temperature: elementwise bytes over q",
    "hidden_act": "MLP activation: its elementwise passes",
    "hidden_activation": "MLP activation: its elementwise passes",
    "mlp_hidden_act": "MLP activation: its elementwise passes",
    "swiglu_limit": "gpt-oss's clamped SwiGLU bound (a value: no FLOP or byte change)",
    "attn_logit_softcapping": "eager attention: three more passes over the scores; SDPA cannot run it",
    "final_logit_softcapping": "three passes over the logits",
    "postnorm": "MiniMax: residual taken after the norm (live bytes of the residual adds)",
    **{f"layernorm_{b}_{ab}": "MiniMax residual factor: residual x alpha + output x beta (7h per block)"
       for b in ("full_attention", "linear_attention", "mlp") for ab in ("alpha", "beta")},
    **{f"{b}_{ab}_factor": "MiniMax residual factor: residual x alpha + output x beta (7h per block)"
       for b in ("full_attn", "linear_attn", "mlp") for ab in ("alpha", "beta")},
    "residual_multiplier": "Granite 4: residual + output x m (5h per block instead of 3h)",
    "attention_multiplier": "Granite 4: the softmax scale (no FLOP or byte change)",
    "embedding_multiplier": "Granite 4: embeddings x m before layer 0 (one pass, not in the per-layer cost)",
    "logits_scaling": "Granite 4: logits / s (one more pass over the logits)",
    "position_embedding_type": "Granite 4: RoPE on the attention layers or none (RoPE's elementwise bytes)",
    "partial_rotary_factor": "share of each head that RoPE rotates (RoPE's elementwise bytes)",
    "first_k_dense_replace": "which layers are dense (the rest MoE)",
    **{k: "Falcon-H1 muP multiplier: one elementwise op per layer whatever its value"
       for k in ("key_multiplier", "attention_in_multiplier", "attention_out_multiplier", "ssm_in_multiplier",
                 "ssm_out_multiplier", "mlp_multipliers", "ssm_multipliers")},
    "lm_head_multiplier": "Falcon-H1: logits x m (one more pass over the logits)",
}

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

_MISSING = object()


def _short(v, limit: int = 120) -> str:
    """A raw config value as one short line: long lists summarised by their length."""
    if v is _MISSING:
        return "(absent)"

    def shrink(o):
        if isinstance(o, list) and len(o) > 4:
            return f"<{len(o)} values>"
        if isinstance(o, list):
            return [shrink(x) for x in o]
        if isinstance(o, dict):
            return {k: shrink(x) for k, x in o.items()}
        return o

    text = json.dumps(shrink(v), sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def diff(model_a: str | ModelSpec, model_b: str | ModelSpec, n=None) -> Table:
    """What differs between two models: first the raw config.json fields, then the derived spec
    fields, then what each changes in cost at a reference length (``section`` says which)."""
    a, b = load(model_a), load(model_b)
    # Column names are the model names; two different configs may share a name (two folders
    # both called "model"), and then each column says which argument it came from.
    ka, kb = (a.name, b.name) if a.name != b.name else (f"{a.name} (1: {model_a})", f"{b.name} (2: {model_b})")
    rows = []

    def add(section, fieldname, va, vb, effect):
        if va != vb:
            rows.append({"section": section, "field": fieldname, ka: str(va), kb: str(vb), "effect": effect})

    ca, cb = a.config or {}, b.config or {}
    for key in sorted(set(ca) | set(cb)):
        va, vb = ca.get(key, _MISSING), cb.get(key, _MISSING)
        if va != vb:
            rows.append({"section": "config", "field": key, ka: _short(va), kb: _short(vb),
                         "effect": _CONFIG_EFFECTS.get(key, "")})
    for f, effect in _DIFF_FIELDS:
        add("spec", f, getattr(a, f), getattr(b, f), effect)
    add("spec", "attention_type", a.attention_type, b.attention_type, "KV bytes per token")
    add("spec", "layer_kinds", a.layer_kinds, b.layer_kinds, "attended pairs and KV held per layer (windows cap both)")
    add("spec", "schedule", schedule_summary(a), schedule_summary(b),
        "linear-time mixers hold a constant state instead of KV and cost linear FLOPs")
    ra, rb = a.rope, b.rope
    for f in ("type", "theta", "factor", "original_max_position", "rotary_dim"):
        add("spec", f"rope.{f}", getattr(ra, f, None), getattr(rb, f, None),
            "position encoding only: no FLOP or byte change; changes which frequencies are stretched")
    if ra and rb and ra.type == rb.type == "longrope" and (ra.long_factor != rb.long_factor):
        add("spec", "rope.long_factor", f"{len(ra.long_factor)} values", f"{len(rb.long_factor)} values (differ)",
            "per-pair stretch beyond the original context")
    add("spec", "qk_norm", a.qk_norm, b.qk_norm, "elementwise bytes over q and k (Llama 4's L2: RoPE layers only)")
    add("spec", "attn_temperature_tuning", a.attn_temperature_tuning, b.attn_temperature_tuning,
        "NoPE layers' query temperature: elementwise bytes over q")
    add("spec", "mlp_activation", a.mlp_activation, b.mlp_activation,
        "MLP elementwise passes (relu2: two; gpt-oss's clamped SwiGLU: 16 elements moved per width element)")
    add("spec", "post_norm_residual", a.post_norm_residual, b.post_norm_residual,
        "residual taken after the norm (live bytes of the residual adds)")
    add("spec", "residual_factors", a.residual_factors, b.residual_factors,
        "residual x alpha + output x beta: 7h elementwise per block instead of 3h (alpha None: 5h)")
    add("spec", "logits_scaling", a.logits_scaling, b.logits_scaling, "one more pass over the logits")
    add("spec", "mla", a.mla, b.mla, "latent KV cache")
    add("spec", "moe", a.moe, b.moe, "active MLP FLOPs vs total weights")
    for kind, fld in MIXER_FIELDS.items():
        add("spec", fld, getattr(a, fld), getattr(b, fld),
            f"{kind} mixer shapes: its projections, chunked core and state")
    # cost consequences at a reference length
    n_ref = _one_n(n, "lcprof diff") if n is not None else min(a.max_position_embeddings,
                                                                 b.max_position_embeddings, 131072)
    check_tiles(n_ref, 128)
    for label, fa, fb in (
        ("kv_bytes_per_token_bf16", kv_bytes_per_token(a), kv_bytes_per_token(b)),
        (f"kv_bytes_at_{n_ref}", int(kv_bytes(a, n_ref)[0]), int(kv_bytes(b, n_ref)[0])),
        ("state_bytes_bf16", int(state_bytes(a)), int(state_bytes(b))),
        (f"prefill_flops_at_{n_ref}", float(cost(a, n_ref).flops["total"][0]), float(cost(b, n_ref).flops["total"][0])),
        ("total_params", param_counts(a)["total_params"], param_counts(b)["total_params"]),
    ):
        rows.append({"section": "cost", "field": label, ka: f"{fa:.6g}" if isinstance(fa, float) else str(fa),
                     kb: f"{fb:.6g}" if isinstance(fb, float) else str(fb),
                     "effect": "same" if fa == fb else f"x{(fb / fa) if fa else float('inf'):.4g}"})
    return Table.from_records(rows, columns=["section", "field", ka, kb, "effect"])
