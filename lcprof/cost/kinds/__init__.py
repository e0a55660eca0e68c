"""Layer kinds of the cost model beyond softmax attention: the linear-time mixers.

The shapes are the spec's (``lcprof.spec.mixers``: ``MambaSpec``, ``Mamba2Spec``,
``GatedDeltaNetSpec``, ``KimiDeltaSpec``, ``LightningSpec``, ``ShortConvSpec`` -- their
``linears()``/``other_params()`` are the
parameters, ``state_elements()`` the state); each kind here answers, for its spec,
``ops(m, n, prefix, batch=, dtype=, state_dtype=, chunk=)`` (FLOPs executed and useful, bytes;
chunked prefill, recurrent decode), ``state_elements(m, tp)`` (constant in n; its bytes:
:func:`mixer_state_bytes`) and ``activation_steps(m, n, ...)`` (bytes live at each step of
lcprof's measured layer), so that consumers ask the kind, never the model family. No torch.
"""

from __future__ import annotations

from types import ModuleType

import numpy as np

from lcprof.cost.kinds import deltanet, kda, lightning, mamba1, mamba2, shortconv
from lcprof.errors import LcprofError

#: Mixer kind (``LayerSpec.mixers`` names) -> its module.
KINDS: dict[str, ModuleType] = {"mamba": mamba1, "mamba2": mamba2, "gated_deltanet": deltanet, "kda": kda,
                                "lightning": lightning, "short_conv": shortconv}

#: How a summary names each kind ("12 attention + 36 Gated DeltaNet").
LABELS = {"attention": "attention", "mamba": "Mamba", "mamba2": "Mamba-2", "gated_deltanet": "Gated DeltaNet",
          "kda": "KDA", "lightning": "lightning attention", "short_conv": "short conv"}


def schedule_summary(spec) -> str:
    """A model's schedule in words, most layers first: "36 Gated DeltaNet + 12 attention",
    "54 Mamba-2 + 54 MLP-only + 10 attention", "44 attention+Mamba-2" (parallel in one layer)."""
    counts: dict[str, int] = {}
    for layer in spec.layers:
        names = [("sparse attention" if (m == "attention" and layer.attn == "sparse") else LABELS.get(m, m))
                 for m in layer.mixers]
        label = "+".join(names) if names else "MLP-only"
        counts[label] = counts.get(label, 0) + 1
    return " + ".join(f"{c} {k}" for k, c in sorted(counts.items(), key=lambda kv: -kv[1]))


def kind_of(mixer) -> ModuleType:
    """The cost module of a mixer spec (by its ``kind``); unknown kinds are refused."""
    try:
        return KINDS[mixer.kind]
    except (KeyError, AttributeError):
        raise LcprofError(f"no cost model for mixer {getattr(mixer, 'kind', mixer)!r}; "
                          f"priced: {', '.join(KINDS)}") from None


def per_rank(mixer, tp: int = 1):
    """The share of a mixer one of ``tp`` tensor-parallel ranks runs, as a spec of the same kind
    (heads, groups, inner channels split; the hidden size whole): vLLM's column-parallel
    in_proj / row-parallel out_proj layout. Mamba-2 groups that tp does not divide are replicated
    (``extra_groups_for_head_shards``)."""
    if tp == 1:
        return mixer
    import dataclasses

    from lcprof.cost.kinds.common import check_tp

    if mixer.kind == "mamba":
        return dataclasses.replace(mixer, d_inner=check_tp(mixer.d_inner, tp, "Mamba inner channels"))
    if mixer.kind == "mamba2":
        groups = mixer.n_groups + (0 if mixer.n_groups % tp == 0 else tp - mixer.n_groups)
        return dataclasses.replace(mixer, n_heads=check_tp(mixer.n_heads, tp, "Mamba-2 heads"),
                                   n_groups=check_tp(groups, tp, "Mamba-2 groups"))
    if mixer.kind == "gated_deltanet":
        return dataclasses.replace(mixer, num_k_heads=check_tp(mixer.num_k_heads, tp, "Gated DeltaNet key heads"),
                                   num_v_heads=check_tp(mixer.num_v_heads, tp, "Gated DeltaNet value heads"))
    if mixer.kind == "lightning":
        return dataclasses.replace(mixer, n_heads=check_tp(mixer.n_heads, tp, "lightning-attention heads"))
    if mixer.kind == "kda":
        return dataclasses.replace(mixer, n_heads=check_tp(mixer.n_heads, tp, "KDA heads"))
    if mixer.kind == "short_conv":
        return dataclasses.replace(mixer, channels=check_tp(mixer.channels, tp, "short-conv channels"))
    kind_of(mixer)  # refuses the unknown kind
    raise AssertionError(mixer.kind)  # pragma: no cover


def mixer_ops(mixer, n, prefix=0, **kw):
    return kind_of(mixer).ops(mixer, n, prefix, **kw)


def mixer_state_bytes(mixer, dtype: str = "bf16", *, state_dtype: str | None = None, tp: int = 1) -> int:
    """Bytes of a mixer's per-request state on one of ``tp`` ranks: its kind's ``state_elements``,
    conv state in the activation dtype, the recurrent state in ``state_dtype`` (default: the same), or
    in the dtype its kind fixes (``fixed_state_dtype``: KDA's float32, as vLLM keeps it)."""
    from lcprof.cost.kinds.common import state_bytes_of

    module = kind_of(mixer)
    fixed = getattr(module, "fixed_state_dtype", None)
    return state_bytes_of(module.state_elements(mixer, tp), dtype, state_dtype if fixed is None else fixed(dtype))


def state_dtype_label(spec, state_dtype: str) -> str:
    """How a table names the state dtype: ``state_dtype``, and the kinds that keep theirs in another
    ("bf16 (KDA's recurrent: fp32)")."""
    from lcprof.spec.model import MIXER_FIELDS

    notes = []
    for kind, module in KINDS.items():
        fixed = getattr(module, "fixed_state_dtype", None)
        if fixed is not None and getattr(spec, MIXER_FIELDS[kind]) is not None and fixed(state_dtype) != state_dtype:
            notes.append(f"{LABELS[kind]}'s recurrent: {fixed(state_dtype)}")
    return state_dtype + (f" ({', '.join(notes)})" if notes else "")


def mixer_activation_steps(mixer, n, **kw):
    return kind_of(mixer).activation_steps(mixer, n, **kw)


def mixer_activation_bytes(mixer, n, **kw):
    """Peak of :func:`mixer_activation_steps` (float array over n)."""
    steps = mixer_activation_steps(mixer, n, **kw)
    return np.max(np.vstack(list(steps.values())), axis=0)


__all__ = ["KINDS", "LABELS", "kind_of", "mixer_activation_bytes", "mixer_activation_steps", "mixer_ops",
           "mixer_state_bytes", "per_rank", "schedule_summary", "state_dtype_label"]
