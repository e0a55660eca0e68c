"""Attention backends: one function signature, a registry that fails loudly, probes that say why not.

Every backend computes ``out = softmax(scale * q k^T + mask) v`` with the layout of FlashAttention
and of :func:`lcprof.ring.ring_attention_simulated`::

    q    (batch, n_q, heads,    qk_dim)
    k    (batch, n_k, kv_heads, qk_dim)       heads % kv_heads == 0 (GQA: query head h uses
    v    (batch, n_k, kv_heads, v_dim)        K/V head h // (heads // kv_heads))
    out  (batch, n_q, heads,    v_dim)        dtype of q

Mask convention (:class:`AttnMask`), the same as ``lcprof.cost.masks``: queries are the LAST n_q
positions of the n_k keys (bottom-right aligned), so query i sits at position ``i + n_k - n_q``.
Query at position p may attend key j iff::

    full      any j                              (decode against a global cache: n_q = 1)
    global    j <= p                             causal, diagonal included
    sliding   p - W < j <= p                     W keys, itself included
    chunked   j // C == p // C  and  j <= p      Llama-4 local chunks

    prefill n_q = n_k = 5, sliding W = 3           decode n_q = 1, n_k = 5, sliding W = 3
    p0  x . . . .                                  p4  . . x x x
    p1  x x . . .
    p2  x x x . .
    p3  . x x x .
    p4  . . x x x

A backend runs a mask either **natively** (it skips the masked work: ``is_causal``, FlashAttention's
``window_size``) or through an **explicit** boolean (n_q, n_k) mask, in which case it executes the
full n_q x n_k rectangle whatever the mask; :meth:`Backend.plan` says which, and the executed-FLOPs
family the cost model should count for it. A sliding or chunked window that covers every key is
the plain causal mask (:meth:`AttnMask.effective`), so Phi-3's W=262144 runs as causal.

Registry: :func:`register` refuses duplicate names, :func:`get_backend` refuses unknown ones and
lists what exists. :meth:`Backend.probe` runs a tiny call on (device, dtype) and returns
``(available, reason)``; it never raises.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import re
import math
import warnings
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from lcprof.cost.ops import BACKEND_FAMILY
from lcprof.errors import LcprofError
from lcprof.measure.tensor_audit import mark

MASK_KINDS = ("full", "global", "sliding", "chunked")
#: What a layer may apply to its scores besides the scale and the mask (the keyword a backend
#: takes -> words): Gemma 2's tanh soft-capping, gpt-oss's per-head sink logit.
SCORE_OPS = {"softcap": "logit soft-capping", "sinks": "sink logits"}


# ----------------------------------------------------------------------------------------------
# Masks
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AttnMask:
    """Which (query, key) pairs are allowed; see the module docstring for the drawing."""

    kind: str
    n_q: int
    n_k: int
    window: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in MASK_KINDS:
            raise ValueError(f"unknown mask kind {self.kind!r}; known: {', '.join(MASK_KINDS)}")
        if self.kind in ("sliding", "chunked") and (self.window is None or self.window <= 0):
            raise ValueError(f"a {self.kind} mask needs a positive window, got {self.window!r}")
        if not 0 < self.n_q <= self.n_k:
            raise ValueError(f"need 0 < n_q <= n_k, got n_q={self.n_q}, n_k={self.n_k}")

    @property
    def q_offset(self) -> int:
        """Position of the first query (bottom-right alignment)."""
        return self.n_k - self.n_q

    def effective(self) -> "AttnMask":
        """The simplest mask with the same allowed pairs.

        A window covering every key is causal; a causal mask whose only query is the last key
        allows everything (decode against a global cache).
        """
        kind, window = self.kind, self.window
        if kind == "sliding" and window >= self.n_k:
            kind, window = "global", None
        if kind == "chunked" and window >= self.n_k:
            kind, window = "global", None
        if kind == "global" and self.n_q == 1:
            kind = "full"
        if (kind, window) == (self.kind, self.window):
            return self
        return AttnMask(kind, self.n_q, self.n_k, window)

    def dense(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """Boolean (n_q, n_k) tensor, True = attend."""
        pos_q = torch.arange(self.n_q, device=device) + self.q_offset  # (n_q,)
        pos_k = torch.arange(self.n_k, device=device)  # (n_k,)
        if self.kind == "full":
            return torch.ones(self.n_q, self.n_k, dtype=torch.bool, device=device)
        allowed = pos_k[None, :] <= pos_q[:, None]  # (n_q, n_k)
        if self.kind == "sliding":
            allowed &= pos_k[None, :] > pos_q[:, None] - self.window
        elif self.kind == "chunked":
            allowed &= (pos_k // self.window)[None, :] == (pos_q // self.window)[:, None]
        return allowed


# Cached dense masks: a model builds its masks once per forward and shares them across layers, so
# the timed region of one layer does not pay for building them. A whole model with sliding and
# global layers needs one per kind (``MASK_CACHE_SIZE``); ``clear_mask_cache`` frees them.
_MASK_CACHE: dict = {}
MASK_CACHE_SIZE = 4


def cached_dense_mask(mask: AttnMask, device: torch.device) -> torch.Tensor:
    key = (mask, str(device))
    hit = _MASK_CACHE.get(key)
    if hit is None:
        while len(_MASK_CACHE) >= MASK_CACHE_SIZE:
            _MASK_CACHE.pop(next(iter(_MASK_CACHE)))  # the oldest
        hit = _MASK_CACHE[key] = mask.dense(device)
    return hit


def clear_mask_cache() -> None:
    _MASK_CACHE.clear()


# ----------------------------------------------------------------------------------------------
# The backend record and registry
# ----------------------------------------------------------------------------------------------

AttnFn = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class Plan:
    """How a backend runs one mask: ``mode`` native / explicit / none (no mask needed)."""

    mode: str
    executed_family: str  # cost-model family of the work actually executed
    stores_scores: bool = False  # True when the kernel materializes the score matrix (math / eager)


@dataclass(frozen=True)
class Backend:
    """An attention implementation with the signature ``fn(q, k, v, mask, scale, **options)``."""

    name: str
    fn: AttnFn = field(repr=False)
    probe_fn: Callable[[torch.device, torch.dtype], tuple[bool, str]] = field(repr=False)
    native_masks: tuple[str, ...] = ("full", "global")
    explicit_masks: bool = True
    decode: bool = True
    description: str = ""
    score_ops: tuple[str, ...] = ()  # what it applies to the scores besides scale and mask (SCORE_OPS)

    @property
    def family(self) -> str:
        """Cost-model family when every mask runs natively (``lcprof.cost.ops.BACKEND_FAMILY``)."""
        return BACKEND_FAMILY.get(self.name, "tiled")

    def plan(self, mask: AttnMask, phase: str = "prefill", needs: tuple[str, ...] = ()) -> tuple[Plan | None, str]:
        """(plan, reason): how this backend runs ``mask``; (None, why not) if it cannot. ``needs``:
        the layer's score ops (:func:`score_ops`) the backend must apply."""
        if phase == "decode" and not self.decode:
            return None, f"{self.name} has no decode step (query length 1 against a cache)"
        missing = [op for op in needs if op not in self.score_ops]
        if missing:
            able = [n for n, b in _REGISTRY.items() if set(needs) <= set(b.score_ops)]
            return None, (f"{self.name} cannot apply the layer's {' and '.join(SCORE_OPS[op] for op in missing)}"
                          f" (backends that do: {', '.join(able) or 'none'})")
        m = mask.effective()
        scores = self.family == "eager"  # eager and SDPA's math kernel materialize the scores
        if m.kind == "full":
            return Plan("none", self.family, scores), ""
        if m.kind in self.native_masks:
            return Plan("native", self.family, scores), ""
        if self.explicit_masks:
            # An explicit mask is applied to the whole rectangle: every pair is computed.
            return Plan("explicit", "eager", scores), ""
        return None, f"{self.name} cannot run a {m.kind} mask (native: {', '.join(self.native_masks)})"

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: AttnMask,
                 scale: float, **options) -> torch.Tensor:
        missing = [op for op in SCORE_OPS if options.get(op) is not None and op not in self.score_ops]
        if missing:  # never time attention without what the layer's scores need
            raise LcprofError(f"attention backend {self.name} cannot apply "
                              f"{' and '.join(SCORE_OPS[op] for op in missing)}")
        return self.fn(q, k, v, mask.effective(), scale, **options)

    def probe(self, device: torch.device | str, dtype: torch.dtype) -> tuple[bool, str]:
        """(available, reason) on this device and dtype; cached; never raises."""
        key = (self.name, str(torch.device(device)), dtype)
        if key not in _PROBES:
            try:
                _PROBES[key] = self.probe_fn(torch.device(device), dtype)
            except Exception as exc:  # noqa: BLE001 - a probe reports, it does not fail
                _PROBES[key] = (False, _one_line(exc))
        return _PROBES[key]


_REGISTRY: dict[str, Backend] = {}
_PROBES: dict[tuple, tuple[bool, str]] = {}


def register(backend: Backend) -> Backend:
    """Add a backend; a name that exists already is an error (unregister it first)."""
    if backend.name in _REGISTRY:
        raise ValueError(f"attention backend {backend.name!r} is registered twice")
    _REGISTRY[backend.name] = backend
    return backend


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)
    for key in [k for k in _PROBES if k[0] == name]:
        del _PROBES[key]


def names() -> list[str]:
    return list(_REGISTRY)


def get_backend(name: str) -> Backend:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise LcprofError(f"unknown backend {name!r}; known: {', '.join(_REGISTRY)}") from None


def clear_probe_cache() -> None:
    _PROBES.clear()


def clean_warning(text: str) -> str:
    """First line of a torch warning without its '(Triggered internally at file:line.)' tail."""
    lines = text.strip().splitlines()
    return re.sub(r"\s*\(Triggered internally at [^)]*\)", "", lines[0] if lines else "").strip()


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {' '.join(text[0].split()) if text else ''}".strip().rstrip(":")


# ----------------------------------------------------------------------------------------------
# Implementations
# ----------------------------------------------------------------------------------------------

LOW_PRECISION = (torch.float16, torch.bfloat16)


def soft_cap_(t: torch.Tensor, cap: float) -> torch.Tensor:
    """Gemma 2's soft-capping in place, cap * tanh(t / cap): three passes, as transformers runs it
    (the attention scores' ``attn_logit_softcapping``, the logits' ``final_logit_softcapping``)."""
    return t.div_(cap).tanh_().mul_(cap)


def eager_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: AttnMask, scale: float, *,
                    softcap: float | None = None, sinks: torch.Tensor | None = None,
                    **_: object) -> torch.Tensor:
    """Explicit QK^T -> mask -> softmax -> PV, materializing the (batch, heads, n_q, n_k) scores.

    GQA by ``repeat_interleave`` of K and V. Softmax runs in float32 for fp16/bf16 inputs (as
    transformers' eager attention does), then the probabilities are cast back.

    ``softcap`` (Gemma 2's ``attn_logit_softcapping``): the scaled scores become c * tanh(s / c),
    three passes in place before the mask, as transformers' Gemma 2 eager attention runs them.
    ``sinks`` (gpt-oss, one logit per query head): a column of the head's sink logit is appended
    to every query's scores (a new scores tensor, as transformers' gpt-oss eager attention
    concatenates them), the softmax runs over it, and P @ V reads the probabilities without it.
    """
    heads, kv_heads = q.shape[2], k.shape[2]
    if heads != kv_heads:
        k = k.repeat_interleave(heads // kv_heads, dim=2)  # (b, n_k, heads, qk_dim)
        v = v.repeat_interleave(heads // kv_heads, dim=2)  # (b, n_k, heads, v_dim)
    qh = q.transpose(1, 2)  # (b, heads, n_q, qk_dim)
    kh = k.transpose(1, 2)  # (b, heads, n_k, qk_dim)
    vh = v.transpose(1, 2)  # (b, heads, n_k, v_dim)
    scores = torch.matmul(qh, kh.transpose(-1, -2))  # (b, heads, n_q, n_k)
    scores.mul_(scale)
    if softcap is not None:
        soft_cap_(scores, softcap)
    if mask.kind != "full":
        scores.masked_fill_(~cached_dense_mask(mask, q.device), float("-inf"))
    mark("attn/qk")
    if sinks is not None:  # (heads,) -> one more column per query; the old scores are freed
        b, _, n_q, _ = scores.shape
        scores = torch.cat((scores, sinks.view(1, heads, 1, 1).expand(b, heads, n_q, 1)), dim=-1)
    if q.dtype in LOW_PRECISION:
        probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
    else:
        probs = torch.softmax(scores, dim=-1)
    mark("attn/softmax")
    if sinks is not None:
        probs = probs[..., :-1]  # a view: the sink's probability is dropped, its mass stays out of P @ V
    out = torch.matmul(probs, vh).transpose(1, 2)  # (b, n_q, heads, v_dim)
    mark("attn/pv")
    return out


def _sdpa_supports_gqa() -> bool:
    # enable_gqa arrived in torch 2.5; the docstring names it.
    doc = F.scaled_dot_product_attention.__doc__ or ""
    return "enable_gqa" in doc


_GQA = _sdpa_supports_gqa()


def _sdpa_context(kernel: str | None):
    if kernel is None:
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel(getattr(SDPBackend, kernel))


#: (kernel, device type) pairs whose kernel refused enable_gqa once: they get K/V expanded instead.
_GQA_EXPAND: set = set()


def _make_sdpa(kernel: str | None) -> AttnFn:
    """SDPA with ``kernel`` forced (None: PyTorch chooses). GQA goes through ``enable_gqa`` (torch
    >= 2.5); a forced kernel that refuses it gets K/V expanded by ``repeat_interleave``, as
    transformers' SDPA path does (more memory; remembered per kernel and device type)."""

    def sdpa_attention(q, k, v, mask: AttnMask, scale: float, **_: object) -> torch.Tensor:
        heads, kv_heads = q.shape[2], k.shape[2]
        kwargs: dict = {"scale": scale}
        if mask.kind == "global" and mask.n_q == mask.n_k:
            kwargs["is_causal"] = True  # SDPA's is_causal is top-left aligned: only for n_q == n_k
        elif mask.kind != "full":
            kwargs["attn_mask"] = cached_dense_mask(mask, q.device)  # (n_q, n_k), broadcast
        qh = q.transpose(1, 2)  # (b, heads, n_q, qk_dim)
        if heads != kv_heads:
            key = (kernel, q.device.type)
            if _GQA and key not in _GQA_EXPAND:
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        with _sdpa_context(kernel):
                            out = F.scaled_dot_product_attention(
                                qh, k.transpose(1, 2), v.transpose(1, 2), enable_gqa=True, **kwargs)
                    return out.transpose(1, 2)
                except RuntimeError as exc:
                    if kernel is None or "kernel" not in str(exc).lower() and "backend" not in str(exc).lower():
                        raise
                    _GQA_EXPAND.add(key)
            k = k.repeat_interleave(heads // kv_heads, dim=2)  # (b, n_k, heads, qk_dim)
            v = v.repeat_interleave(heads // kv_heads, dim=2)  # (b, n_k, heads, v_dim)
        with _sdpa_context(kernel):
            out = F.scaled_dot_product_attention(qh, k.transpose(1, 2), v.transpose(1, 2), **kwargs)
        return out.transpose(1, 2)  # (b, n_q, heads, v_dim)

    sdpa_attention.__name__ = f"sdpa_{(kernel or 'auto').lower()}"
    return sdpa_attention


def sdpa_auto_kernel(device: torch.device | str, dtype: torch.dtype, *, heads: int, kv_heads: int, qk_dim: int,
                     v_dim: int, mask: AttnMask) -> str | None:
    """The kernel ``F.scaled_dot_product_attention`` picks for these shapes when none is forced
    (``math``, ``flash_attention``, ``efficient_attention``, ``cudnn_attention``), or None when
    torch cannot say (``torch._fused_sdp_choice`` missing). Decided on a 16-token stand-in: the
    choice depends on device, dtype, head dims, GQA and the mask's form, not on n."""
    choose = getattr(torch, "_fused_sdp_choice", None)
    if choose is None:
        return None
    from torch.nn.attention import SDPBackend

    dev = torch.device(device)
    m = mask.effective()
    n_q, n_k = (1, 17) if m.n_q == 1 else (16, 16)  # decode: one query against a cache
    q = torch.zeros(1, heads, n_q, qk_dim, device=dev, dtype=dtype)
    k = torch.zeros(1, kv_heads, n_k, qk_dim, device=dev, dtype=dtype)
    v = torch.zeros(1, kv_heads, n_k, v_dim, device=dev, dtype=dtype)
    attn_mask, causal = None, False
    if m.kind == "global" and m.n_q == m.n_k:
        causal = True
    elif m.kind != "full":
        attn_mask = torch.ones(n_q, n_k, device=dev, dtype=torch.bool)
    kwargs = {"enable_gqa": True} if (heads != kv_heads and _GQA) else {}
    if heads != kv_heads and not kwargs:
        k, v = k.repeat_interleave(heads // kv_heads, 1), v.repeat_interleave(heads // kv_heads, 1)
    try:
        code = int(choose(q, k, v, attn_mask, 0.0, causal, scale=1.0, **kwargs))
    except (RuntimeError, TypeError):
        return None
    names = {int(getattr(SDPBackend, nm)): nm.lower() for nm in dir(SDPBackend) if nm.isupper()}
    return names.get(code)


def _probe_by_running(fn: AttnFn, device: torch.device, dtype: torch.dtype, **options) -> tuple[bool, str]:
    """Run a tiny causal call (batch 1, 32 tokens, 2 heads, head_dim 64); collect why it fails."""
    g = torch.Generator(device="cpu").manual_seed(0)
    q = torch.randn(1, 32, 2, 64, generator=g).to(device=device, dtype=dtype)
    mask = AttnMask("global", 32, 32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            out = fn(q, q, q, mask, 0.125, **options)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
        except Exception as exc:  # noqa: BLE001
            why = [clean_warning(str(w.message)) for w in caught]
            why = [w for w in why if w and not w.endswith("not used because:")]
            detail = f" ({'; '.join(dict.fromkeys(why))})" if why else ""
            return False, _one_line(exc) + detail
    if not torch.isfinite(out.float()).all():
        return False, "tiny probe call returned non-finite values"
    return True, f"{device.type} {str(dtype).replace('torch.', '')}: ran"


def _cuda_only(kernel: str) -> Callable[[torch.device, torch.dtype], tuple[bool, str]]:
    def probe(device: torch.device, dtype: torch.dtype) -> tuple[bool, str]:
        if device.type != "cuda":
            return False, f"SDPA's {kernel} kernel runs on CUDA only"
        return _probe_by_running(_make_sdpa(kernel), device, dtype)

    return probe


# flash-attn: FlashAttention 3 (flash_attn_interface), 4 (flash_attn.cute), or 2 (flash_attn).
_FLASH_MODULES = (("flash_attn_interface", "FlashAttention 3"),
                  ("flash_attn.cute", "FlashAttention 4 (cute)"),
                  ("flash_attn", "FlashAttention 2"))


def _flash_impl() -> tuple[Callable | None, str]:
    """(flash_attn_func, which) of the first importable FlashAttention, or (None, why not)."""
    errors = []
    for mod_name, label in _FLASH_MODULES:
        try:
            mod = importlib.import_module(mod_name)
        except Exception as exc:  # noqa: BLE001 - ImportError or a broken build
            errors.append(f"{mod_name}: {_one_line(exc)}")
            continue
        fn = getattr(mod, "flash_attn_func", None)
        if fn is None and mod_name == "flash_attn.cute":
            try:
                fn = importlib.import_module("flash_attn.cute.interface").flash_attn_func
            except Exception as exc:  # noqa: BLE001
                errors.append(f"flash_attn.cute.interface: {_one_line(exc)}")
                continue
        if fn is not None:
            return fn, label
        errors.append(f"{mod_name}: has no flash_attn_func")
    return None, "; ".join(errors)


def flash_attention(q, k, v, mask: AttnMask, scale: float, *, softcap: float | None = None,
                    **_: object) -> torch.Tensor:
    """FlashAttention's ``flash_attn_func``: native GQA, causal and sliding windows, and Gemma 2's
    logit soft-capping (``softcap=``: FlashAttention 2 >= 2.6 and 3 apply c * tanh(s / c) to the
    scaled scores inside the kernel; a build without the argument is refused, not run without it).

    FlashAttention aligns causal masks bottom-right (as AttnMask does); a sliding window W is
    ``window_size=(W - 1, 0)``: W - 1 keys to the left plus the query's own position.
    """
    fn, which = _flash_impl()
    if fn is None:
        raise RuntimeError(f"flash-attn is not importable: {which}")
    kwargs: dict = {"softmax_scale": scale, "causal": mask.kind in ("global", "sliding")}
    if softcap is not None:
        try:
            takes = "softcap" in inspect.signature(fn).parameters
        except (TypeError, ValueError):  # a compiled function without a signature: let it say
            takes = True
        if not takes:
            raise RuntimeError(f"{which}'s flash_attn_func has no softcap argument (FlashAttention 2 >= 2.6 "
                               "or 3 has): it cannot apply the layer's logit soft-capping")
        kwargs["softcap"] = float(softcap)
    if mask.kind == "sliding":
        kwargs["window_size"] = (mask.window - 1, 0)
    elif mask.kind == "chunked":
        raise RuntimeError("flash-attn has no chunked mask")
    out = fn(q, k, v, **kwargs)
    if isinstance(out, tuple):  # some versions return (out, lse)
        out = out[0]
    return out  # (b, n_q, heads, v_dim)


def _probe_flash(device: torch.device, dtype: torch.dtype) -> tuple[bool, str]:
    fn, which = _flash_impl()
    if fn is None:
        return False, f"not importable ({which})"
    if device.type != "cuda":
        return False, f"{which} runs on CUDA only"
    if dtype not in LOW_PRECISION:
        return False, f"{which} needs fp16 or bf16"
    ok, reason = _probe_by_running(flash_attention, device, dtype)
    return ok, f"{which}: {reason}"


def ring_attention(q, k, v, mask: AttnMask, scale: float, *, ranks: int = 1, **_: object) -> torch.Tensor:
    """Striped ring attention simulated on one device with ``world = ranks`` virtual ranks."""
    if mask.kind != "global" or mask.n_q != mask.n_k:
        raise RuntimeError("striped-ring runs causal prefill only (n_q == n_k, global mask)")
    from lcprof.ring import ring_attention_simulated

    return ring_attention_simulated(q, k, v, world=int(ranks), layout="striped", causal=True,
                                    impl="auto", softmax_scale=scale)


def _probe_ring(device: torch.device, dtype: torch.dtype) -> tuple[bool, str]:
    try:
        importlib.import_module("lcprof.ring")
    except Exception as exc:  # noqa: BLE001 - the ring package is a colleague's, maybe absent
        return False, f"lcprof.ring not importable: {_one_line(exc)}"
    return _probe_by_running(ring_attention, device, dtype, ranks=2)


def _make_composed_ring(op: str) -> AttnFn:
    """The striped ring with every step through torch's fused ``op`` (:mod:`lcprof.ring.composed`)."""

    def composed_ring(q, k, v, mask: AttnMask, scale: float, *, ranks: int = 1, **_: object) -> torch.Tensor:
        if mask.kind != "global" or mask.n_q != mask.n_k:
            raise RuntimeError(f"striped-ring-{op} runs causal prefill only (n_q == n_k, global mask)")
        from lcprof.ring import ring_attention_simulated

        return ring_attention_simulated(q, k, v, world=int(ranks), layout="striped", causal=True,
                                        impl=f"composed-{op}", softmax_scale=scale)

    composed_ring.__name__ = f"striped_ring_{op}"
    return composed_ring


def _probe_composed_ring(op: str) -> Callable[[torch.device, torch.dtype], tuple[bool, str]]:
    def probe(device: torch.device, dtype: torch.dtype) -> tuple[bool, str]:
        try:
            from lcprof.ring.composed import op_status
        except Exception as exc:  # noqa: BLE001
            return False, f"lcprof.ring not importable: {_one_line(exc)}"
        ok, reason = op_status(op, device, dtype)
        if not ok:
            return False, reason
        return _probe_by_running(_make_composed_ring(op), device, dtype, ranks=2)

    return probe


def _probe_any(fn: AttnFn) -> Callable[[torch.device, torch.dtype], tuple[bool, str]]:
    return lambda device, dtype: _probe_by_running(fn, device, dtype)


def _register_builtins() -> None:
    all_masks = MASK_KINDS
    register(Backend("eager", eager_attention, _probe_any(eager_attention), native_masks=all_masks,
                     score_ops=tuple(SCORE_OPS),
                     description="explicit QK^T, mask, softmax, PV; scores materialized"))
    register(Backend("sdpa", _make_sdpa(None), _probe_any(_make_sdpa(None)),
                     description="torch SDPA, PyTorch picks the kernel"))
    register(Backend("sdpa-math", _make_sdpa("MATH"), _probe_any(_make_sdpa("MATH")),
                     description="torch SDPA forced to the math kernel (materializes scores)"))
    register(Backend("sdpa-efficient", _make_sdpa("EFFICIENT_ATTENTION"), _cuda_only("EFFICIENT_ATTENTION"),
                     description="torch SDPA forced to the memory-efficient kernel"))
    register(Backend("sdpa-flash", _make_sdpa("FLASH_ATTENTION"), _probe_any(_make_sdpa("FLASH_ATTENTION")),
                     description="torch SDPA forced to its FlashAttention kernel (CPU has one too)"))
    register(Backend("sdpa-cudnn", _make_sdpa("CUDNN_ATTENTION"), _cuda_only("CUDNN_ATTENTION"),
                     description="torch SDPA forced to cuDNN attention"))
    register(Backend("flash-attn", flash_attention, _probe_flash, native_masks=("full", "global", "sliding"),
                     explicit_masks=False, score_ops=("softcap",),
                     description="flash_attn 2 / flash_attn_interface 3 / flash_attn.cute"))
    register(Backend("striped-ring", ring_attention, _probe_ring, native_masks=("full", "global"),
                     explicit_masks=False, decode=False,
                     description="lcprof.ring striped ring, simulated with world=--ranks"))
    for op, label in (("flash", "FlashAttention-2"), ("cudnn", "cuDNN"), ("efficient", "memory-efficient")):
        register(Backend(f"striped-ring-{op}", _make_composed_ring(op), _probe_composed_ring(op),
                         native_masks=("full", "global"), explicit_masks=False, decode=False,
                         description=f"striped ring (world=--ranks), each step torch's fused {label} op + LSE merge"))


_register_builtins()


def backends_table(device: torch.device | str, dtypes: list[torch.dtype]) -> list[dict]:
    """One record per (backend, dtype): availability on ``device`` and why; attention backends,
    then the mixer layers' (``lcprof.measure.mixer_backends``)."""
    rows = []
    for name in names():
        b = get_backend(name)
        for dt in dtypes:
            ok, reason = b.probe(device, dt)
            rows.append({
                "backend": name,
                "dtype": DTYPE_NAMES.get(dt, str(dt)),
                "device": str(torch.device(device)),
                "available": ok,
                "reason": reason,
                "family": b.family,
                "native_masks": ",".join(m for m in b.native_masks if m != "full"),
                "explicit_mask": b.explicit_masks,
                "decode": b.decode,
                "description": b.description,
            })
    from lcprof.measure.mixer_backends import mixer_backends_table  # the mixer layers' backends

    return rows + mixer_backends_table(device, dtypes)


# ----------------------------------------------------------------------------------------------
# dtypes and devices (shared by the rest of the package)
# ----------------------------------------------------------------------------------------------

#: lcprof dtype name -> (storage dtype, use tf32 matmuls)
TORCH_DTYPES: dict[str, tuple[torch.dtype, bool]] = {
    "fp32": (torch.float32, False),
    "tf32": (torch.float32, True),
    "bf16": (torch.bfloat16, False),
    "fp16": (torch.float16, False),
}
DTYPE_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16", torch.float64: "fp64"}


def torch_dtype(name: str) -> tuple[torch.dtype, bool]:
    from lcprof.units import dtype_name

    key = dtype_name(name, allowed=tuple(TORCH_DTYPES))
    return TORCH_DTYPES[key]


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` -> cuda if available else cpu; ``cpu``, ``cuda``, ``cuda:N``; anything else is an error."""
    if isinstance(device, torch.device):
        dev = device
    elif device is None or str(device).strip() == "":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        text = str(device).strip().lower()
        kind, _, idx = text.partition(":")
        if kind not in ("cpu", "cuda") or (idx and not idx.isdigit()) or (kind == "cpu" and idx):
            raise LcprofError(f"unknown device {device!r}; use cpu, cuda or cuda:N")
        dev = torch.device(text)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise LcprofError(
                f"device {str(dev)!r} requested but CUDA is not available here "
                f"(torch {torch.__version__}); use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise LcprofError(f"device {str(dev)!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
    elif dev.type != "cpu":
        raise LcprofError(f"unknown device {str(dev)!r}; use cpu, cuda or cuda:N")
    return dev


def softmax_scale(qk_dim: int) -> float:
    return 1.0 / math.sqrt(qk_dim)
