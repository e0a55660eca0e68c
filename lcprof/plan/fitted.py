"""Prefill times from a fitted results table (``lcprof.explain.fit``): t_layer(n) = c0 + c1 n + c2 n². No torch.

A results file times ONE layer (the ``layer`` column, default 0) of one model at batch 1. The
planner turns its fit into a whole-model prefill on one GPU:

    t_model(n_new, prefix) = n_layers x [c0 + c1 n_new + c2 ((prefix + n_new)^2 - prefix^2)]
                             + roofline(lm_head)

(the quadratic term of a chunk after a prefix is the difference of two causal triangles; the
constant is paid once per forward pass). The measured layer stands for every layer, so a model
whose layers differ in attention kind gets a warning. The TP split and the all-reduce term are
applied on top exactly as for the roofline (``lcprof.plan.compute``).
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np

from lcprof.cost.model import roofline
from lcprof.cost.ops import backend_family, lm_head_op
from lcprof.errors import LcprofError
from lcprof.spec import ModelSpec


def _family(backend: str) -> str:
    try:
        return backend_family(backend)
    except LcprofError:
        return "unknown"


def fitted_rates(rates, path: str, *, spec: ModelSpec, dtype: str):
    """``rates`` with its prefill replaced by the fit of ``spec``'s prefill in ``path`` (batch 1)."""
    from lcprof.cost.model import Cost
    from lcprof.explain.fit import fit_results

    fr = fit_results(path, target=None)
    cands = [g for g in fr.groups
             if g.key["model"] == spec.name and g.key["phase"] == "prefill" and g.key["dtype"] == dtype
             and int(g.key["batch"]) == 1 and g.decomposition is not None]
    if not cands:
        have = ", ".join(sorted({g.label for g in fr.groups})) or "nothing"
        raise LcprofError(f"fit file {path!r} has no batch-1 prefill fit for {spec.name} in {dtype}; it has: {have}")
    # Prefer a tiled backend (what a serving engine runs), then the backend name for determinism.
    cands.sort(key=lambda g: (_family(str(g.key["backend"])) != "tiled", str(g.key["backend"])))
    g = cands[0]
    d = g.decomposition
    if len(spec.layer_kinds) > 1:
        warnings.warn(f"{spec.name} mixes attention kinds ({', '.join(spec.layer_kinds)}); the fitted layer "
                      f"{g.key['layer']} stands for all of them", stacklevel=3)
    head = lm_head_op(spec, np.ones(1), dtype)
    c = Cost(n=np.ones(1), flops={head.name: head.flops, "total": head.flops},
             useful_flops={head.name: head.flops, "total": head.flops},
             bytes={head.name: head.bytes, "total": head.bytes}, family="tiled", dtype=dtype, phase="prefill")
    head_s = float(roofline(c, rates.hw)["total"][0])
    c0, c1, c2, layers = d.c0_s, d.c1_s_per_token, d.c2_s_per_token2, spec.n_layers

    def prefill_1gpu(n_new, prefix):
        n_new = np.asarray(n_new, dtype=np.float64)
        p = np.asarray(prefix, dtype=np.float64)
        return layers * (c0 + c1 * n_new + c2 * ((p + n_new) ** 2 - p ** 2)) + head_s

    source = (f"fitted table {path} ({g.label}, layer {g.key['layer']} x {layers} layers); "
              f"decode from the roofline on {rates.device.key}")
    return dataclasses.replace(rates, prefill_fit=prefill_1gpu, source=source)
