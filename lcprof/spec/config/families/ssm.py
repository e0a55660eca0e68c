"""Pure state-space models: Mamba, Falcon-Mamba (Mamba-1 with unweighted RMSNorms over B, C and dt)
and Mamba-2. Every layer is one RMSNorm and one mixer, without attention or MLP.

Defaults: transformers' ``configuration_mamba.py``, ``configuration_falcon_mamba.py``,
``configuration_mamba2.py``. These configs state no position limit; lcprof records
``NO_POSITION_LIMIT`` (2**24 tokens) as the model's max positions, and says so.
"""

from __future__ import annotations

import math

from lcprof.errors import LcprofError
from lcprof.spec.config import common as C
from lcprof.spec.config.family import Family
from lcprof.spec.config.reader import Reader
from lcprof.spec.layers import LayerSpec
from lcprof.spec.mixers import Mamba2Spec, MambaSpec

NO_POSITION_LIMIT = 1 << 24

_INERT = frozenset({"time_step_scale", "time_step_min", "time_step_max", "time_step_init_scheme", "time_step_floor",
                    "time_step_limit", "use_mambapy", "use_falcon_mambapy", "use_associative_scan", "mixer_rms_eps"})


def _common(r: Reader, ctx: dict, mixer, kind: str, notes: list[str]):
    n_layers = r.int("num_hidden_layers")
    if r.given("max_position_embeddings"):
        max_pos = r.int("max_position_embeddings")
    else:
        r.touch("max_position_embeddings")
        max_pos = NO_POSITION_LIMIT
        notes.append(f"No position limit in the config: max positions recorded as {NO_POSITION_LIMIT} (2**24).")
    layers = [LayerSpec(mixers=(kind,), mlp=False) for _ in range(n_layers)]
    return C.make_spec(
        r, name=ctx["name"], meta=ctx["meta"], layers=layers, notes=ctx["notes"] + notes, model_type=r.model_type,
        hidden_size=mixer.hidden_size, n_heads=0, n_kv_heads=0, head_dim=0, v_head_dim=0, intermediate_size=0,
        mlp_gated=False, vocab_size=r.int("vocab_size"), tie_embeddings=r.bool("tie_word_embeddings"),
        max_position_embeddings=max_pos, norms_per_layer=1, torch_dtype=ctx["dtype"], config=ctx["config"],
        text_model_of=ctx["wrapper"], **{kind: mixer})


def build_mamba(r: Reader, ctx: dict):
    """Mamba / Falcon-Mamba: d_inner = expand x hidden unless the config states intermediate_size
    (transformers sets leftover config fields after computing it, so a stated value wins);
    dt_rank "auto" = ceil(hidden / 16)."""
    hidden = r.int("hidden_size")
    expand = r.int("expand")
    d_inner = r.int("intermediate_size") if r.given("intermediate_size") else expand * hidden
    r.touch("intermediate_size")
    rank = r.raw("time_step_rank")
    dt_rank = math.ceil(hidden / 16) if rank == "auto" else r.as_int("time_step_rank", rank)
    mixer = MambaSpec(hidden_size=hidden, d_inner=d_inner, d_state=r.int("state_size"), d_conv=r.int("conv_kernel"),
                      dt_rank=dt_rank, conv_bias=r.bool("use_conv_bias"), proj_bias=r.bool("use_bias"),
                      bcdt_norm="unweighted" if r.model_type == "falcon_mamba" else "none")
    return _common(r, ctx, mixer, "mamba", [])


def build_mamba2(r: Reader, ctx: dict):
    hidden = r.int("hidden_size")
    heads, head_dim = r.int("num_heads"), r.int("head_dim")
    expand = r.int("expand")
    if heads * head_dim != expand * hidden:
        raise LcprofError(f"{r.where}: num_heads x head_dim = {heads * head_dim} != expand x hidden_size = "
                          f"{expand * hidden} (transformers' Mamba2 requires them equal)")
    r.touch("time_step_rank", "rms_norm", "norm_before_gate")
    mixer = Mamba2Spec(hidden_size=hidden, n_heads=heads, head_dim=head_dim, d_state=r.int("state_size"),
                       n_groups=r.int("n_groups"), d_conv=r.int("conv_kernel"), chunk_size=r.int("chunk_size"),
                       conv_bias=r.bool("use_conv_bias"), proj_bias=r.bool("use_bias"))
    return _common(r, ctx, mixer, "mamba2", [])


_MAMBA = dict(expand=2, conv_kernel=4, use_bias=False, use_conv_bias=True, time_step_rank="auto",
              tie_word_embeddings=True, state_size=16)
_MAMBA2 = dict(num_heads=128, head_dim=64, state_size=128, expand=2, conv_kernel=4, n_groups=8, use_bias=False,
               use_conv_bias=True, chunk_size=256, tie_word_embeddings=False)
_REQ = frozenset({"hidden_size", "num_hidden_layers", "vocab_size"})

FAMILIES = [
    Family("mamba", "src/transformers/models/mamba/configuration_mamba.py", _MAMBA, build_mamba,
           inert=_INERT, required=_REQ),
    Family("falcon_mamba", "src/transformers/models/falcon_mamba/configuration_falcon_mamba.py", _MAMBA,
           build_mamba, inert=_INERT, required=_REQ),
    Family("mamba2", "src/transformers/models/mamba2/configuration_mamba2.py", _MAMBA2, build_mamba2,
           inert=_INERT, required=_REQ),
]
