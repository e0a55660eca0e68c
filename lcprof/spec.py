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

DATA_DIR = Path(__file__).parent / "data"
MODELS_DIR = DATA_DIR / "models"

ATTN_KINDS = ("global", "sliding", "chunked")
ROPE_TYPES = ("default", "linear", "dynamic", "yarn", "longrope", "llama3")


@dataclass(frozen=True)
class RopeSpec:
    """Rotary position embedding and its long-context scaling, as the config states it."""

    theta: float
    rotary_dim: int  # dimensions rotated per head (pairs = rotary_dim // 2)
    type: str = "default"
    factor: float = 1.0
    original_max_position: int | None = None
    # YaRN
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    mscale: float | None = None
    mscale_all_dim: float | None = None
    attention_factor: float | None = None
    # LongRoPE
    short_factor: tuple[float, ...] = ()
    long_factor: tuple[float, ...] = ()
    # llama3
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0

    def __post_init__(self) -> None:
        if self.type not in ROPE_TYPES:
            raise LcprofError(f"unknown rope scaling type {self.type!r}; known: {', '.join(ROPE_TYPES)}")
        if self.theta <= 1:
            raise LcprofError(f"rope_theta must be > 1, got {self.theta}")
        if self.rotary_dim <= 0 or self.rotary_dim % 2:
            raise LcprofError(f"rotary dimension must be a positive even number, got {self.rotary_dim}")
        if self.factor <= 0:
            raise LcprofError(f"rope scaling factor must be positive, got {self.factor}")
        if self.type == "longrope":
            half = self.rotary_dim // 2
            for nm, f in (("short_factor", self.short_factor), ("long_factor", self.long_factor)):
                if len(f) != half:
                    raise LcprofError(
                        f"longrope {nm} has {len(f)} entries; it needs rotary_dim/2 = {half}"
                    )
        if self.type == "llama3" and not self.high_freq_factor > self.low_freq_factor:
            raise LcprofError("llama3 rope scaling needs high_freq_factor > low_freq_factor")


@dataclass(frozen=True)
class MLASpec:
    """DeepSeek multi-head latent attention ranks."""

    q_lora_rank: int | None  # None: queries projected directly from the hidden state
    kv_lora_rank: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int

    def __post_init__(self) -> None:
        for nm in ("kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim"):
            if getattr(self, nm) <= 0:
                raise LcprofError(f"MLA {nm} must be positive, got {getattr(self, nm)}")
        if self.q_lora_rank is not None and self.q_lora_rank <= 0:
            raise LcprofError(f"MLA q_lora_rank must be positive or null, got {self.q_lora_rank}")

    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    @property
    def cache_dim(self) -> int:
        """Elements cached per token per layer: the latent plus the shared rope key."""
        return self.kv_lora_rank + self.qk_rope_head_dim


@dataclass(frozen=True)
class MoESpec:
    """Mixture-of-experts MLP (applies to the layers whose LayerSpec.moe is True)."""

    n_experts: int  # routed experts
    n_active: int  # routed experts per token
    n_shared: int  # shared experts (always active)
    expert_intermediate_size: int
    shared_intermediate_size: int  # intermediate size of ONE shared expert

    def __post_init__(self) -> None:
        if self.n_experts <= 0 or not 0 < self.n_active <= self.n_experts:
            raise LcprofError(
                f"MoE needs 0 < experts per token ({self.n_active}) <= experts ({self.n_experts})"
            )
        if self.n_shared < 0 or self.expert_intermediate_size <= 0:
            raise LcprofError("MoE shared experts must be >= 0 and expert size positive")

    @property
    def active_width(self) -> int:
        """Intermediate width one token passes through: its routed experts plus the shared ones."""
        return self.n_active * self.expert_intermediate_size + self.n_shared * self.shared_intermediate_size


@dataclass(frozen=True)
class LayerSpec:
    """One decoder layer: its attention kind and whether its MLP is MoE."""

    attn: str = "global"
    window: int | None = None  # sliding window W or chunk size C
    moe: bool = False
    rope: bool = True  # False for NoPE layers (Llama 4 global layers)

    def __post_init__(self) -> None:
        if self.attn not in ATTN_KINDS:
            raise LcprofError(f"unknown attention kind {self.attn!r}; known: {', '.join(ATTN_KINDS)}")
        if self.attn == "global":
            if self.window is not None:
                raise LcprofError("a global layer has no window")
        elif self.window is None or self.window <= 0:
            raise LcprofError(f"a {self.attn} layer needs a positive window, got {self.window}")


@dataclass(frozen=True)
class ModelSpec:
    """A decoder-only transformer, exactly as much of it as cost needs."""

    name: str
    model_type: str
    n_layers: int
    hidden_size: int
    n_heads: int
    n_kv_heads: int
    head_dim: int  # query/key head dim (MLA: nope + rope)
    v_head_dim: int
    intermediate_size: int  # dense MLP width
    mlp_gated: bool
    vocab_size: int
    tie_embeddings: bool
    max_position_embeddings: int
    layers: tuple[LayerSpec, ...]
    original_max_position_embeddings: int | None = None
    rope: RopeSpec | None = None
    mla: MLASpec | None = None
    moe: MoESpec | None = None
    qkv_bias: bool = False
    norms_per_layer: int = 2
    torch_dtype: str | None = None
    source: str | None = None
    published_params: int | None = None
    published_active_params: int | None = None
    aliases: tuple[str, ...] = ()
    notes: str = ""
    config: dict = field(default_factory=dict, compare=False, repr=False, hash=False)

    def __post_init__(self) -> None:
        for nm in ("n_layers", "hidden_size", "n_heads", "n_kv_heads", "head_dim", "v_head_dim",
                   "vocab_size", "max_position_embeddings"):
            v = getattr(self, nm)
            if not isinstance(v, int) or v <= 0:
                raise LcprofError(f"model {self.name!r}: {nm} must be a positive integer, got {v!r}")
        if self.intermediate_size < 0:
            raise LcprofError(f"model {self.name!r}: intermediate_size must be >= 0")
        if self.n_heads % self.n_kv_heads:
            raise LcprofError(
                f"model {self.name!r}: {self.n_heads} query heads are not a multiple of "
                f"{self.n_kv_heads} KV heads"
            )
        if len(self.layers) != self.n_layers:
            raise LcprofError(f"model {self.name!r}: {len(self.layers)} layer specs for {self.n_layers} layers")
        if any(layer.moe for layer in self.layers) and self.moe is None:
            raise LcprofError(f"model {self.name!r}: MoE layers but no MoE spec")
        if self.mla is not None and self.mla.qk_head_dim != self.head_dim:
            raise LcprofError(f"model {self.name!r}: MLA head dims disagree with head_dim")

    # ----- derived facts -------------------------------------------------------------------
    def mlp_width(self, layer: LayerSpec) -> int:
        """The MLP's intermediate width per token in ``layer``: the MoE active width or the dense one."""
        return self.moe.active_width if (layer.moe and self.moe is not None) else self.intermediate_size

    @property
    def gqa_group(self) -> int:
        """Query heads per KV head."""
        return self.n_heads // self.n_kv_heads

    @property
    def attention_type(self) -> str:
        """MHA, GQA, MQA or MLA."""
        if self.mla is not None:
            return "MLA"
        if self.n_kv_heads == self.n_heads:
            return "MHA"
        if self.n_kv_heads == 1:
            return "MQA"
        return "GQA"

    @property
    def layer_kinds(self) -> dict[str, int]:
        """Count of layers per attention kind and window, e.g. {'sliding:4096': 21, 'global': 21}."""
        out: dict[str, int] = {}
        for layer in self.layers:
            key = layer.attn if layer.window is None else f"{layer.attn}:{layer.window}"
            out[key] = out.get(key, 0) + 1
        return out

    def with_layers(self, layers: tuple[LayerSpec, ...]) -> "ModelSpec":
        return dataclasses.replace(self, layers=tuple(layers), n_layers=len(layers))

    def replace(self, **changes: Any) -> "ModelSpec":
        return dataclasses.replace(self, **changes)


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


def param_counts(spec: ModelSpec) -> dict[str, int]:
    """Parameter counts: embeddings, lm_head, attention, mlp, norms, total and active-per-token.

    Counted from the spec's shapes (an independent check against the published totals).
    """
    h = spec.hidden_size
    attn = 0
    if spec.mla is not None:
        m = spec.mla
        if m.q_lora_rank:
            q = h * m.q_lora_rank + m.q_lora_rank + m.q_lora_rank * spec.n_heads * m.qk_head_dim
        else:
            q = h * spec.n_heads * m.qk_head_dim
        kv = h * m.cache_dim + m.kv_lora_rank + m.kv_lora_rank * spec.n_heads * (m.qk_nope_head_dim + m.v_head_dim)
        o = spec.n_heads * m.v_head_dim * h
        attn = q + kv + o
    else:
        q = h * spec.n_heads * spec.head_dim
        kv = h * spec.n_kv_heads * (spec.head_dim + spec.v_head_dim)
        o = spec.n_heads * spec.v_head_dim * h
        bias = (spec.n_heads * spec.head_dim + spec.n_kv_heads * (spec.head_dim + spec.v_head_dim)) if spec.qkv_bias else 0
        attn = q + kv + o + bias
    mats = 3 if spec.mlp_gated else 2
    dense_mlp = mats * h * spec.intermediate_size
    mlp_total = mlp_active = 0
    for layer in spec.layers:
        if layer.moe and spec.moe is not None:
            e = spec.moe
            router = h * e.n_experts
            expert = mats * h * e.expert_intermediate_size
            shared = e.n_shared * mats * h * e.shared_intermediate_size
            mlp_total += router + e.n_experts * expert + shared
            mlp_active += router + e.n_active * expert + shared
        else:
            mlp_total += dense_mlp
            mlp_active += dense_mlp
    norms = spec.n_layers * spec.norms_per_layer * h + h
    emb = spec.vocab_size * h
    head = 0 if spec.tie_embeddings else spec.vocab_size * h
    total = emb + head + spec.n_layers * attn + mlp_total + norms
    active = emb + head + spec.n_layers * attn + mlp_active + norms
    return {
        "embedding_params": emb,
        "lm_head_params": head,
        "attention_params": spec.n_layers * attn,
        "mlp_params": mlp_total,
        "norm_params": norms,
        "total_params": total,
        "active_params": active,
    }


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

