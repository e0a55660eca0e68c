"""Correctness before timing: every backend against a float64 reference, on a small input.

Two comparisons per (layer, backend, dtype), both as relative Frobenius error
``||out - ref||_F / ||ref||_F``:

* **attention alone**: random q, k, v with the layer's real head dims and GQA group (at most two
  K/V heads), long enough to exercise a sliding window or chunk up to 1024 tokens, against
  :func:`reference_attention` in float64 on the same (rounded) inputs;
* **the whole layer**: the layer in the test dtype against a float64 copy of itself (the same,
  rounded weights upcast) whose attention is :func:`reference_attention`; prefill of ``n_check``
  tokens, or one decode step against a random cache of ``n_check`` tokens. A routed MoE layer's
  reference follows the compared run's expert choice per token (near-tied router logits would
  otherwise pick different experts in the two precisions).

* **a layer without attention** (a linear-time mixer, or an MLP-only layer): the whole layer only,
  its mixer on the backend under test against a float64 copy whose mixer runs the token-by-token
  recurrence of :mod:`lcprof.measure.mixers.reference` (``DecoderLayer.recurrent_reference``), over
  ``mixer_check_n`` tokens -- more than one chunk, so the carried state between chunks is checked --
  or one decode step from a random state. The reference for the "2x" rule below is the ``torch``
  mixer backend.

A backend passes when each error is within ``TOLERANCE[dtype]`` (fp32 1e-4, tf32 3e-3, bf16 2e-2,
fp16 5e-3), or within twice the error of the eager backend doing the same computation in the same
dtype (a kernel may be as inexact as PyTorch, but not much more). A failure becomes status
``error`` with the error values in ``reason``, and the backend is not timed.
"""

from __future__ import annotations

import copy
import functools
import warnings
from dataclasses import dataclass

import torch

from lcprof.measure.backends import AttnMask, Backend, clean_warning, eager_attention, get_backend

TOLERANCE = {"fp32": 1e-4, "tf32": 3e-3, "bf16": 2e-2, "fp16": 5e-3, "fp64": 1e-10}
CHECK_N = 64
MAX_CHECK_N = 1024


def rel_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref||_F / ||ref||_F in float64 (inf for non-finite output)."""
    o = out.detach().to(torch.float64)
    r = ref.detach().to(device=o.device, dtype=torch.float64)
    if not torch.isfinite(o).all():
        return float("inf")
    denom = torch.linalg.vector_norm(r)
    return float(torch.linalg.vector_norm(o - r) / denom) if denom > 0 else float(torch.linalg.vector_norm(o))


def reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: AttnMask, scale: float, *,
                        softcap: float | None = None, sinks: torch.Tensor | None = None,
                        **_: object) -> torch.Tensor:
    """float64 attention, written independently of the backends: GQA by head index, no expansion.

    q (b, n_q, heads, d), k (b, n_k, kv_heads, d), v (b, n_k, kv_heads, dv) -> (b, n_q, heads, dv),
    computed in float64 and returned in float64. ``softcap`` c: scores c * tanh(scores / c).
    ``sinks`` (heads,): the sink logit s_h joins each query's softmax without a value, which scales
    the plain attention output by sum_j e^{x_j} / (sum_j e^{x_j} + e^{s_h}) = sigmoid(lse - s_h)
    (the closed form, not the concatenation the eager backend runs).
    """
    b, n_q, heads, d = q.shape
    kv_heads, dv = k.shape[2], v.shape[3]
    g = heads // kv_heads
    qg = q.to(torch.float64).reshape(b, n_q, kv_heads, g, d)  # head h -> (h // g, h % g)
    scores = torch.einsum("bqkgd,bjkd->bkgqj", qg, k.to(torch.float64)) * scale  # (b, kvh, g, n_q, n_k)
    if softcap is not None:
        scores = softcap * torch.tanh(scores / softcap)
    allowed = mask.dense(q.device)  # (n_q, n_k)
    scores = scores.masked_fill(~allowed, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    out = torch.einsum("bkgqj,bjkd->bqkgd", probs, v.to(torch.float64))  # (b, n_q, kvh, g, dv)
    if sinks is not None:
        lse = torch.logsumexp(scores, dim=-1)  # (b, kvh, g, n_q)
        keep = torch.sigmoid(lse - sinks.to(torch.float64).view(1, kv_heads, g, 1))
        out = out * keep.permute(0, 3, 1, 2)[..., None]  # (b, n_q, kvh, g, 1)
    return out.reshape(b, n_q, heads, dv)


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    attn_rel_err: float | None
    layer_rel_err: float | None
    tolerance: float
    reason: str = ""
    eager_attn_rel_err: float | None = None
    eager_layer_rel_err: float | None = None


class Checker:
    """Checks backends on one built layer; the float64 reference is built once and reused.

    ``dtype`` is the lcprof name (fp32, tf32, bf16, fp16); the layer is already in that dtype.
    """

    def __init__(self, layer, *, dtype: str, phase: str = "prefill", batch: int = 1, n_check: int = CHECK_N,
                 seed: int = 1234) -> None:
        self.layer = layer
        self.dtype = dtype
        self.phase = phase
        self.batch = batch
        self.n_check = n_check
        self.seed = seed
        self.tol = TOLERANCE[dtype]
        p = next(layer.parameters())
        self.device, self.torch_dtype = p.device, p.dtype
        self._ref_layer_out: torch.Tensor | None = None
        self._eager_errs: tuple[float, float] | None = None
        self._attn_inputs = None
        self._layer_inputs = None
        self.has_attention = layer.lspec.has_attention
        if not self.has_attention:
            self.n_check = mixer_check_n(layer)

    # ----- inputs --------------------------------------------------------------------------------
    def _gen(self, offset: int) -> torch.Generator:
        return torch.Generator(device="cpu").manual_seed(self.seed + offset)

    def attention_inputs(self):
        if self._attn_inputs is None:
            sh = self.layer.attention_shapes()
            group = sh["heads"] // sh["kv_heads"]
            kvh = min(sh["kv_heads"], 2)
            heads = kvh * group
            w = self.layer.lspec.window
            n = self.n_check if w is None else min(max(self.n_check, w + self.n_check // 2), MAX_CHECK_N)
            n_q, n_k = (n, n) if self.phase == "prefill" else (1, n + 1)
            g = self._gen(1)
            q = torch.randn(self.batch, n_q, heads, sh["qk_dim"], generator=g)
            k = torch.randn(self.batch, n_k, kvh, sh["qk_dim"], generator=g)
            v = torch.randn(self.batch, n_k, kvh, sh["v_dim"], generator=g)
            to = functools.partial(torch.Tensor.to, device=self.device, dtype=self.torch_dtype)
            self._attn_inputs = (to(q), to(k), to(v), self.layer.mask_for(n_q, n_k), sh["scale"])
        return self._attn_inputs

    def score_options(self, heads: int) -> dict:
        """The layer's score ops (soft-capping, sink logits) for the check's ``heads`` query heads
        (the check keeps at most two K/V heads: the first ``heads`` sinks)."""
        opts = self.layer.score_options()
        if "sinks" in opts:
            opts["sinks"] = opts["sinks"].detach()[:heads]
        return opts

    def layer_inputs(self):
        if self._layer_inputs is None:
            g = self._gen(2)
            h = self.layer.spec.hidden_size
            if self.phase == "prefill":
                x = torch.randn(self.batch, self.n_check, h, generator=g)
                cache = None
            else:
                x = torch.randn(self.batch, 1, h, generator=g)
                cache = self.layer.random_cache(self.batch, self.n_check + 1, generator=g,
                                                dtype=self.torch_dtype, device=self.device)
            self._layer_inputs = (x.to(device=self.device, dtype=self.torch_dtype), cache)
        return self._layer_inputs

    def _run_layer(self, layer, attention, dtype=None) -> torch.Tensor:
        x, cache = self.layer_inputs()
        if dtype is not None:
            x = x.to(dtype)
            cache = None if cache is None else cache.to(dtype)
        elif cache is not None:
            cache = _copy_cache(cache)
        saved = layer.attention
        if self.has_attention:
            layer.attention = attention
        elif layer.mixer is not None and not layer.recurrent_reference:
            layer.set_mixer_backend(attention)  # a mixer backend's name
        try:
            with torch.inference_mode():
                return layer(x, cache)
        finally:
            layer.attention = saved

    def reference_layer_output(self, routing: torch.Tensor | None = None) -> torch.Tensor:
        """The float64 layer's output; with ``routing`` (a routed MoE's expert choice per token) the
        reference sends every token to the same experts as the run it is compared with."""
        if routing is None and self._ref_layer_out is not None:
            return self._ref_layer_out
        ref = copy.deepcopy(self.layer).to(torch.float64)
        ref.forced_routing = routing
        ref.recurrent_reference = ref.mixer is not None
        out = self._run_layer(ref, reference_attention, dtype=torch.float64)
        del ref
        if routing is None:
            self._ref_layer_out = out
        return out

    def release(self) -> None:
        """Free the reference output and inputs (the reference layer is already gone)."""
        self._ref_layer_out = None
        self._attn_inputs = None
        self._layer_inputs = None

    # ----- errors --------------------------------------------------------------------------------
    def errors(self, attention) -> tuple[float | None, float]:
        if not self.has_attention:  # ``attention`` is a mixer backend's name: the whole layer only
            return None, rel_error(self._run_layer(self.layer, attention), self.reference_layer_output())
        q, k, v, mask, scale = self.attention_inputs()
        opts = self.score_options(q.shape[2])
        with torch.inference_mode():
            a_out = attention(q, k, v, mask, scale, **opts)
            a_ref = reference_attention(q, k, v, mask, scale, **opts)
        attn_err = rel_error(a_out, a_ref)
        out = self._run_layer(self.layer, attention)
        routed = getattr(self.layer, "moe_timing", "n/a") == "routed"
        layer_err = rel_error(out, self.reference_layer_output(self.layer.last_routing if routed else None))
        return attn_err, layer_err

    def eager_errors(self) -> tuple[float, float]:
        if self._eager_errs is None:
            self._eager_errs = self.errors(eager_attention if self.has_attention else "torch")
        return self._eager_errs

    def check(self, backend: Backend | str, **options) -> CheckResult:
        """Compare one backend (bound with ``options``, e.g. ranks) with the float64 reference; for a
        layer without attention ``backend`` is a mixer backend's name (``torch``, ``fla``, ...)."""
        if not self.has_attention:
            return self._check_mixer(str(backend))
        b = get_backend(backend) if isinstance(backend, str) else backend
        attention = functools.partial(b, **options)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                attn_err, layer_err = self.errors(attention)
            except Exception as exc:  # noqa: BLE001 - OOM is re-raised by the caller's handler
                if is_oom(exc):
                    raise
                why = [clean_warning(str(w.message)) for w in caught]
                why = [w for w in dict.fromkeys(why) if w and not w.endswith("not used because:")]
                detail = f" ({'; '.join(why)})" if why else ""
                return CheckResult(False, None, None, self.tol,
                                   reason=f"correctness check raised {type(exc).__name__}: {_first_line(exc)}{detail}")
        if attn_err <= self.tol and layer_err <= self.tol:
            return CheckResult(True, attn_err, layer_err, self.tol)
        e_attn, e_layer = self.eager_errors()
        ok = attn_err <= max(self.tol, 2 * e_attn) and layer_err <= max(self.tol, 2 * e_layer)
        reason = "" if ok else (
            f"mismatch vs float64 reference: attention rel. error {attn_err:.3g}, layer {layer_err:.3g}; "
            f"tolerance {self.tol:g} or 2x eager in {self.dtype} (attention {e_attn:.3g}, layer {e_layer:.3g})")
        return CheckResult(ok, attn_err, layer_err, self.tol, reason, e_attn, e_layer)


    def _check_mixer(self, backend: str) -> CheckResult:
        saved = None if self.layer.mixer is None else self.layer.mixer.backend
        try:
            try:
                _, layer_err = self.errors(backend)
            except Exception as exc:  # noqa: BLE001 - OOM is re-raised by the caller's handler
                if is_oom(exc):
                    raise
                return CheckResult(False, None, None, self.tol,
                                   reason=f"correctness check raised {type(exc).__name__}: {_first_line(exc)}")
            if layer_err <= self.tol:
                return CheckResult(True, None, layer_err, self.tol)
            if backend == "torch":  # the reference implementation itself: the tolerance, no 2x rule
                return CheckResult(False, None, layer_err, self.tol,
                                   f"mismatch vs float64 recurrence: layer rel. error {layer_err:.3g} > tolerance "
                                   f"{self.tol:g} in {self.dtype}")
            _, e_layer = self.eager_errors()
            ok = layer_err <= max(self.tol, 2 * e_layer)
            reason = "" if ok else (
                f"mismatch vs float64 recurrence: layer rel. error {layer_err:.3g}; tolerance {self.tol:g} or 2x "
                f"the torch mixer in {self.dtype} ({e_layer:.3g})")
            return CheckResult(ok, None, layer_err, self.tol, reason, None, e_layer)
        finally:
            if saved is not None:
                self.layer.mixer.backend = saved


def mixer_check_n(layer) -> int:
    """Tokens of a mixer layer's prefill check: ``CHECK_N``, and past 1.5 chunks of the mixer so that
    a chunk boundary (the state carried between chunks) is inside the check."""
    chunk = getattr(layer.mixer, "chunk", None) or getattr(layer.mixer, "block", None) or 0
    return max(CHECK_N, int(1.5 * chunk) + 1)


def _copy_cache(cache):
    """A fresh copy of a cache (KV or mixer state), so a check's decode step does not write into
    shared inputs."""
    if cache is None:
        return None
    if hasattr(cache, "ssm"):
        return type(cache)(*(None if t is None else t.clone() for t in (cache.conv, cache.ssm)))
    return type(cache)(cache.a.clone(), cache.b.clone())


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else ""


def is_oom(exc: BaseException) -> bool:
    """True for torch's OutOfMemoryError, a RuntimeError saying 'out of memory' (CUDA) or
    "can't allocate memory" (the CPU allocator), and MemoryError."""
    oom_type = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(oom_type, type) and isinstance(exc, oom_type):
        return True
    if isinstance(exc, (RuntimeError, MemoryError)):
        msg = str(exc).lower()
        return isinstance(exc, MemoryError) or "out of memory" in msg or "can't allocate memory" in msg
    return False
