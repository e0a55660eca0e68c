"""What a model *is*: frozen, validated spec dataclasses built from a HuggingFace ``config.json``.

Bundled presets are ``config.json`` files too (``lcprof/data/models/*.json``, each with an extra
``_lcprof`` block naming its source), and they go through exactly the same loader as a user's file.

Attention kinds per layer (all causal):
  * ``global``  -- query i attends keys 0..i;
  * ``sliding`` -- window W: query i attends keys j with i - W < j <= i (W keys including itself);
  * ``chunked`` -- chunk C: query i attends keys j with j // C == i // C and j <= i.
No torch here.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from lcprof.errors import LcprofError
from lcprof.spec.attention import MLASpec
from lcprof.spec.layers import ATTN_KINDS, LayerSpec
from lcprof.spec.model import ModelSpec
from lcprof.spec.moe import MoESpec
from lcprof.spec.params import param_counts
from lcprof.spec.rope import ROPE_TYPES, RopeSpec

DATA_DIR = Path(__file__).parent.parent / "data"
MODELS_DIR = DATA_DIR / "models"



# ----------------------------------------------------------------------------------------------
# Loading from a HuggingFace config.json
# ----------------------------------------------------------------------------------------------

def _req(cfg: dict, key: str, where: str) -> Any:
    if key not in cfg or cfg[key] is None:
        raise LcprofError(f"{where}: config is missing required field {key!r}")
    return cfg[key]


def _int(cfg: dict, key: str, where: str, default: Any = None) -> Any:
    v = cfg.get(key, default)
    if v is None:
        if default is None and key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size"):
            raise LcprofError(f"{where}: config is missing required field {key!r}")
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or int(v) != v:
        raise LcprofError(f"{where}: field {key!r} must be an integer, got {v!r}")
    return int(v)


def _rope_from_config(cfg: dict, rotary_dim: int, where: str) -> RopeSpec | None:
    theta = cfg.get("rope_theta", 10000.0)
    rs = cfg.get("rope_scaling")
    if isinstance(cfg.get("rope_parameters"), dict):  # transformers >= 5 layout
        rp = cfg["rope_parameters"]
        theta = rp.get("rope_theta", theta)
        rs = rp if rp.get("rope_type", "default") != "default" else rs
    if rs is None:
        return RopeSpec(theta=float(theta), rotary_dim=rotary_dim)
    if not isinstance(rs, dict):
        raise LcprofError(f"{where}: rope_scaling must be an object, got {rs!r}")
    rtype = str(rs.get("rope_type", rs.get("type", "default"))).lower()
    if rtype in ("su",):  # early Phi-3 name for LongRoPE
        rtype = "longrope"
    if rtype == "dynamic" or rtype == "ntk":
        rtype = "dynamic"
    if rtype not in ROPE_TYPES:
        raise LcprofError(f"{where}: unknown rope scaling type {rtype!r}; known: {', '.join(ROPE_TYPES)}")
    orig = rs.get("original_max_position_embeddings", cfg.get("original_max_position_embeddings"))
    kwargs: dict[str, Any] = dict(theta=float(theta), rotary_dim=rotary_dim, type=rtype,
                                  original_max_position=int(orig) if orig else None)
    if rtype == "longrope":
        max_pos = int(cfg["max_position_embeddings"])
        kwargs["factor"] = float(rs.get("factor") or (max_pos / orig if orig else 1.0))
        kwargs["short_factor"] = tuple(float(x) for x in _req(rs, "short_factor", where + " rope_scaling"))
        kwargs["long_factor"] = tuple(float(x) for x in _req(rs, "long_factor", where + " rope_scaling"))
        if rs.get("attention_factor") is not None:
            kwargs["attention_factor"] = float(rs["attention_factor"])
    else:
        kwargs["factor"] = float(rs.get("factor", 1.0))
    if rtype == "yarn":
        for k in ("beta_fast", "beta_slow"):
            if rs.get(k) is not None:
                kwargs[k] = float(rs[k])
        for k in ("mscale", "mscale_all_dim", "attention_factor"):
            if rs.get(k) is not None:
                kwargs[k] = float(rs[k])
    if rtype == "llama3":
        kwargs["low_freq_factor"] = float(_req(rs, "low_freq_factor", where + " rope_scaling"))
        kwargs["high_freq_factor"] = float(_req(rs, "high_freq_factor", where + " rope_scaling"))
        if not orig:
            raise LcprofError(f"{where}: llama3 rope scaling needs original_max_position_embeddings")
    if rtype in ("yarn", "dynamic", "linear") and not orig:
        # transformers' convention: without an explicit original length, max_position_embeddings is
        # the length the model was trained at, and the scaled context is factor times that.
        kwargs["original_max_position"] = int(_req(cfg, "max_position_embeddings", where))
    return RopeSpec(**kwargs)


def _layer_types(cfg: dict, n_layers: int, where: str) -> list[tuple[str, int | None, bool]]:
    """(attention kind, window, uses rope) per layer."""
    mt = str(cfg.get("model_type", "")).lower()
    sw = cfg.get("sliding_window")
    chunk = cfg.get("attention_chunk_size")
    lt = cfg.get("layer_types")
    out: list[tuple[str, int | None, bool]] = []
    if isinstance(lt, list):
        if len(lt) != n_layers:
            raise LcprofError(f"{where}: layer_types has {len(lt)} entries for {n_layers} layers")
        for t in lt:
            t = str(t)
            if t in ("sliding_attention", "sliding"):
                if not sw:
                    raise LcprofError(f"{where}: layer_types names sliding layers but sliding_window is missing")
                out.append(("sliding", int(sw), True))
            elif t in ("chunked_attention", "chunked"):
                if not chunk:
                    raise LcprofError(f"{where}: layer_types names chunked layers but attention_chunk_size is missing")
                out.append(("chunked", int(chunk), True))
            elif t in ("full_attention", "global", "attention"):
                out.append(("global", None, True))
            else:
                raise LcprofError(f"{where}: unknown layer type {t!r} in layer_types")
        if chunk and cfg.get("no_rope_layers"):
            nrl = cfg["no_rope_layers"]
            out = [(k, w, bool(nrl[i])) for i, (k, w, _) in enumerate(out)]
        return out
    if chunk:
        # Llama 4: layers that use RoPE attend within chunks; NoPE layers attend globally.
        nrl = cfg.get("no_rope_layers") or []
        if not nrl:
            interval = int(cfg.get("no_rope_layer_interval", 4))
            nrl = [int((i + 1) % interval != 0) for i in range(n_layers)]
        if len(nrl) != n_layers:
            raise LcprofError(f"{where}: no_rope_layers has {len(nrl)} entries for {n_layers} layers")
        return [("chunked", int(chunk), True) if nrl[i] else ("global", None, False) for i in range(n_layers)]
    if mt.startswith("gemma2") or mt.startswith("gemma3"):
        if not sw:
            raise LcprofError(f"{where}: gemma2 config is missing required field 'sliding_window'")
        # Gemma 2 alternates: even layers sliding, odd layers global.
        return [("sliding", int(sw), True) if i % 2 == 0 else ("global", None, True) for i in range(n_layers)]
    if mt.startswith("qwen2") or mt.startswith("qwen3"):
        if cfg.get("use_sliding_window") and sw:
            mwl = int(cfg.get("max_window_layers", n_layers))
            # transformers' Qwen2: layers with index >= max_window_layers use the window.
            return [("sliding", int(sw), True) if i >= mwl else ("global", None, True) for i in range(n_layers)]
        return [("global", None, True)] * n_layers
    if sw and cfg.get("use_sliding_window", True) is not False and int(sw) > 0:
        return [("sliding", int(sw), True)] * n_layers
    return [("global", None, True)] * n_layers


def spec_from_config(cfg: dict, name: str | None = None, *, where: str | None = None) -> ModelSpec:
    """Build a ModelSpec from a HuggingFace ``config.json`` dict (nested ``text_config`` accepted)."""
    if not isinstance(cfg, dict):
        raise LcprofError(f"{where or name}: config must be a JSON object")
    meta = cfg.get("_lcprof", {}) or {}
    where = where or meta.get("name") or name or "config"
    if isinstance(cfg.get("text_config"), dict) and "num_hidden_layers" not in cfg:
        inner = dict(cfg["text_config"])
        inner.setdefault("model_type", cfg.get("model_type", ""))
        cfg = inner
    name = name or meta.get("name") or str(cfg.get("_name_or_path") or cfg.get("model_type") or "custom")
    mt = str(cfg.get("model_type", "")).lower()

    hidden = _int(cfg, "hidden_size", where)
    if hidden is None:
        raise LcprofError(f"{where}: config is missing required field 'hidden_size'")
    n_layers = _int(cfg, "num_hidden_layers", where)
    n_heads = _int(cfg, "num_attention_heads", where)
    vocab = _int(cfg, "vocab_size", where)
    for key, val in (("num_hidden_layers", n_layers), ("num_attention_heads", n_heads), ("vocab_size", vocab)):
        if val is None:
            raise LcprofError(f"{where}: config is missing required field {key!r}")
    n_kv = _int(cfg, "num_key_value_heads", where, n_heads)
    inter = _int(cfg, "intermediate_size", where, None)
    max_pos = _int(cfg, "max_position_embeddings", where, None)
    if max_pos is None:
        raise LcprofError(f"{where}: config is missing required field 'max_position_embeddings'")

    mla = None
    if cfg.get("kv_lora_rank"):
        mla = MLASpec(
            q_lora_rank=_int(cfg, "q_lora_rank", where, None) or None,
            kv_lora_rank=_int(cfg, "kv_lora_rank", where),
            qk_nope_head_dim=_int(cfg, "qk_nope_head_dim", where, 0) or 0,
            qk_rope_head_dim=_int(cfg, "qk_rope_head_dim", where, 0) or 0,
            v_head_dim=_int(cfg, "v_head_dim", where, 0) or 0,
        )
        head_dim = mla.qk_head_dim
        v_head_dim = mla.v_head_dim
        rotary_dim = mla.qk_rope_head_dim
    else:
        head_dim = _int(cfg, "head_dim", where, None) or (hidden // n_heads)
        v_head_dim = head_dim
        prf = float(cfg.get("partial_rotary_factor", 1.0))
        rotary_dim = int(head_dim * prf)
        rotary_dim -= rotary_dim % 2

    # MLP kind: gated (SwiGLU/GeGLU) for every family lcprof knows except classic GPT-style MLPs.
    gated = mt not in ("gpt2", "gpt_neox", "gptj", "opt", "bloom", "falcon", "phi")

    # MoE
    moe = None
    moe_layers = [False] * n_layers
    if cfg.get("n_routed_experts"):  # DeepSeek V2/V3
        moe_size = _int(cfg, "moe_intermediate_size", where)
        if moe_size is None:
            raise LcprofError(f"{where}: config is missing required field 'moe_intermediate_size'")
        n_shared = _int(cfg, "n_shared_experts", where, 0) or 0
        moe = MoESpec(
            n_experts=_int(cfg, "n_routed_experts", where),
            n_active=_int(cfg, "num_experts_per_tok", where, 1),
            n_shared=n_shared,
            expert_intermediate_size=moe_size,
            shared_intermediate_size=moe_size,
        )
        first_dense = _int(cfg, "first_k_dense_replace", where, 0) or 0
        freq = _int(cfg, "moe_layer_freq", where, 1) or 1
        moe_layers = [i >= first_dense and i % freq == 0 for i in range(n_layers)]
    elif cfg.get("num_local_experts") and mt.startswith("llama4"):
        step = _int(cfg, "interleave_moe_layer_step", where, 1) or 1
        moe = MoESpec(
            n_experts=_int(cfg, "num_local_experts", where),
            n_active=_int(cfg, "num_experts_per_tok", where, 1),
            n_shared=1,
            expert_intermediate_size=inter,
            shared_intermediate_size=inter,
        )
        moe_layers = [(i + 1) % step == 0 for i in range(n_layers)]
        if not all(moe_layers):
            inter = _int(cfg, "intermediate_size_mlp", where, inter)
    elif cfg.get("num_local_experts"):  # Mixtral-style: every layer MoE, no shared expert
        moe = MoESpec(
            n_experts=_int(cfg, "num_local_experts", where),
            n_active=_int(cfg, "num_experts_per_tok", where, 2),
            n_shared=0,
            expert_intermediate_size=inter,
            shared_intermediate_size=0,
        )
        moe_layers = [True] * n_layers
    if inter is None:
        raise LcprofError(f"{where}: config is missing required field 'intermediate_size'")

    kinds = _layer_types(cfg, n_layers, where)
    # A window or chunk at least as long as the model's context never masks anything the model
    # can be asked for (Phi-3-128k declares sliding_window 262144 > 131072): such layers are
    # global. (Beyond max positions lcprof warns anyway.)
    wide = [w for k, w, _ in kinds if w is not None and w >= max_pos]
    if wide:
        kinds = [("global", None, r) if (w is not None and w >= max_pos) else (k, w, r) for k, w, r in kinds]
        meta = dict(meta)
        meta["notes"] = (meta.get("notes", "") + f" Window {max(wide)} >= max_position_embeddings {max_pos}: "
                         "those layers are counted as global.").strip()
    layers = tuple(
        LayerSpec(attn=k, window=w, moe=moe_layers[i], rope=r) for i, (k, w, r) in enumerate(kinds)
    )
    rope = _rope_from_config(cfg, rotary_dim, where) if rotary_dim > 0 else None
    orig_max = cfg.get("original_max_position_embeddings")
    if orig_max is None and rope is not None and rope.original_max_position:
        orig_max = rope.original_max_position

    qkv_bias = bool(cfg.get("attention_bias", False)) or mt.startswith("qwen2")
    norms = 4 if mt.startswith("gemma2") or mt.startswith("gemma3") else 2
    tie = bool(cfg.get("tie_word_embeddings", mt.startswith("gemma")))
    return ModelSpec(
        name=name,
        model_type=mt,
        n_layers=n_layers,
        hidden_size=hidden,
        n_heads=n_heads,
        n_kv_heads=n_kv if mla is None else n_heads,
        head_dim=head_dim,
        v_head_dim=v_head_dim,
        intermediate_size=inter,
        mlp_gated=gated,
        vocab_size=vocab,
        tie_embeddings=tie,
        max_position_embeddings=max_pos,
        original_max_position_embeddings=int(orig_max) if orig_max else None,
        layers=layers,
        rope=rope,
        mla=mla,
        moe=moe,
        qkv_bias=qkv_bias,
        norms_per_layer=norms,
        torch_dtype=cfg.get("torch_dtype") or cfg.get("dtype"),
        source=meta.get("source"),
        published_params=meta.get("published_params"),
        published_active_params=meta.get("published_active_params"),
        aliases=tuple(meta.get("aliases", ())),
        notes=meta.get("notes", ""),
        config={k: v for k, v in cfg.items() if k != "_lcprof"},
    )


# ----------------------------------------------------------------------------------------------
# Registry of bundled presets
# ----------------------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def _preset_index() -> dict[str, Path]:
    """Preset and alias name -> file. Fails loudly on duplicate names."""
    index: dict[str, Path] = {}
    for path in sorted(MODELS_DIR.glob("*.json")):
        with open(path) as fh:
            meta = (json.load(fh).get("_lcprof") or {})
        names = [meta.get("name", path.stem), *meta.get("aliases", [])]
        if path.stem not in names:
            names.append(path.stem)
        for nm in names:
            key = nm.lower()
            if key in index and index[key] != path:
                raise RuntimeError(f"preset name {nm!r} is defined twice: {index[key].name}, {path.name}")
            index[key] = path
    return index


def list_presets() -> list[str]:
    """Canonical preset names (file stems), sorted."""
    return sorted({p.stem for p in _preset_index().values()})


def preset_aliases() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for nm, path in _preset_index().items():
        if nm != path.stem:
            out.setdefault(path.stem, []).append(nm)
    return out


def _read_config(path: Path) -> dict:
    if path.is_dir():
        path = path / "config.json"
    try:
        with open(path) as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise LcprofError(f"cannot read config {str(path)!r}: no such file") from None
    except IsADirectoryError:
        raise LcprofError(f"cannot read config {str(path)!r}: it is a directory") from None
    except PermissionError:
        raise LcprofError(f"cannot read config {str(path)!r}: permission denied") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LcprofError(f"cannot read config {str(path)!r}: not valid JSON ({exc})") from None


@lru_cache(maxsize=64)
def _load_cached(key: str) -> ModelSpec:
    return _load(key)


def _load(name_or_path: str) -> ModelSpec:
    index = _preset_index()
    key = name_or_path.lower()
    if key in index:
        path = index[key]
        return spec_from_config(_read_config(path), name=path.stem, where=f"preset {path.stem}")
    p = Path(name_or_path).expanduser()
    looks_like_path = p.suffix == ".json" or "/" in name_or_path or p.exists()
    if looks_like_path:
        cfg = _read_config(p)
        stem = p.name if p.is_dir() else (p.parent.name if p.name == "config.json" else p.stem)
        return spec_from_config(cfg, name=stem or "custom", where=str(name_or_path))
    close = difflib.get_close_matches(key, list(index), n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise LcprofError(
        f"unknown model {name_or_path!r}{hint} (see `lcprof models`, or pass a path to a config.json)"
    )


def load_model(name_or_path: str | ModelSpec) -> ModelSpec:
    """A preset name or alias, or a path to a HuggingFace ``config.json`` (or a folder holding one)."""
    if isinstance(name_or_path, ModelSpec):
        return name_or_path
    return _load_cached(str(name_or_path))


def describe(spec: ModelSpec) -> dict[str, Any]:
    """Flat record of a spec's facts (for `lcprof show`)."""
    pc = param_counts(spec)
    rec: dict[str, Any] = {
        "model": spec.name,
        "model_type": spec.model_type,
        "attention_type": spec.attention_type,
        "n_layers": spec.n_layers,
        "hidden_size": spec.hidden_size,
        "n_heads": spec.n_heads,
        "n_kv_heads": spec.n_kv_heads,
        "head_dim": spec.head_dim,
        "v_head_dim": spec.v_head_dim,
        "mlp": ("gated" if spec.mlp_gated else "plain"),
        "intermediate_size": spec.intermediate_size,
        "vocab_size": spec.vocab_size,
        "tie_embeddings": spec.tie_embeddings,
        "max_position_embeddings": spec.max_position_embeddings,
        "original_max_position_embeddings": spec.original_max_position_embeddings,
        "layer_kinds": ", ".join(f"{k} x{v}" for k, v in spec.layer_kinds.items()),
        "rope_type": spec.rope.type if spec.rope else "none",
        "rope_theta": spec.rope.theta if spec.rope else None,
        "rope_factor": spec.rope.factor if spec.rope else None,
    }
    if spec.mla:
        rec.update({f"mla_{k}": v for k, v in dataclasses.asdict(spec.mla).items()})
    if spec.moe:
        rec.update({f"moe_{k}": v for k, v in dataclasses.asdict(spec.moe).items()})
        rec["moe_layers"] = sum(1 for layer in spec.layers if layer.moe)
    rec.update(pc)
    if spec.published_params:
        rec["published_params"] = spec.published_params
        rec["params_vs_published"] = pc["total_params"] / spec.published_params - 1.0
    rec["source"] = spec.source
    return rec

