"""What a plan is about: the deployment (hardware, layout, precision, engine) and the workload
(request lengths, targets), as frozen dataclasses validated when built. No torch.

``build_deployment(...)`` and ``build_workload(...)`` parse user input (token syntax, durations,
dtype names) and raise LcprofError with one line naming what was wrong; every planner stage
takes these two objects instead of long keyword lists.
"""

from __future__ import annotations

from dataclasses import dataclass

from lcprof.cost.weights import WeightFormat, weight_format
from lcprof.errors import LcprofError
from lcprof.plan.compute import Rates, deployment_rates
from lcprof.plan.engines import EngineLimits, EngineSettings, resolve_limits
from lcprof.plan.inputs import parse_mix, parse_seconds
from lcprof.plan.kvformat import KVFormat, kv_format
from lcprof.plan.parallel import Parallel, check_parallel
from lcprof.spec import ModelSpec, load_model
from lcprof.units import dtype_name, fmt_tokens, parse_tokens

ATTN_DTYPES = ("fp32", "bf16", "fp16", "fp8")
STATE_DTYPES = ("fp32", "bf16", "fp16")


@dataclass(frozen=True)
class Precision:
    """Weights (format per tensor class), KV cache (format with scales), the dtype attention runs
    at, the activations' dtype (bf16 unless the weights are fp32/fp16) and the dtype linear-time
    mixers keep their recurrent state in (``--state-dtype``; default the config's, e.g. Qwen3.5's
    ``mamba_ssm_dtype`` float32, else the activations'; their conv state stays in the activations'
    dtype, as vLLM's ``mamba_ssm_cache_dtype`` / ``mamba_cache_dtype`` "auto" do)."""

    weights: WeightFormat
    kv: KVFormat
    attn_dtype: str
    act_dtype: str
    state_dtype: str = "bf16"

    @property
    def gemm_dtype(self) -> str:
        return self.weights.gemm_dtype


@dataclass(frozen=True)
class Deployment:
    """A model on ``gpus`` GPUs of one kind: replicas of ``par``, an engine's limits, a precision."""

    spec: ModelSpec
    rates: Rates
    par: Parallel
    gpus: int
    precision: Precision
    limits: EngineLimits
    mask: object = None  # a what-if attention mask for every attention layer (lcprof.cost.masks.Mask)

    @property
    def replicas(self) -> int:
        return self.gpus // self.par.gpus_per_replica

    @property
    def engine(self) -> str:
        return self.limits.engine


@dataclass(frozen=True)
class Workload:
    """Request lengths (context = prompt + output) and targets. ``mix`` is ((n, share), ...)."""

    long_n: int
    short_n: int
    mix: tuple = ()
    prefix_n: int = 0
    ttft_s: float | None = None
    tpot_s: float | None = None
    decode_batch: int | None = None

    def __post_init__(self) -> None:
        if self.long_n < self.short_n:
            raise LcprofError(f"--long {fmt_tokens(self.long_n)} is shorter than --short {fmt_tokens(self.short_n)}; "
                              "the long request must be at least as long as the short one")
        if self.prefix_n >= self.shortest:
            raise LcprofError(f"--prefix {self.prefix_n} must be shorter than the shortest request "
                              f"({self.shortest} tokens)")
        if self.decode_batch is not None and self.decode_batch <= 0:
            raise LcprofError(f"--decode-batch must be positive, got {self.decode_batch}")

    @property
    def shortest(self) -> int:
        return min([self.short_n] + [n for n, _ in self.mix])

    @property
    def longest(self) -> int:
        return max([self.long_n] + [n for n, _ in self.mix])


def build_workload(long=None, short=None, mix=None, prefix=0, ttft=None, tpot=None, decode_batch=None) -> Workload:
    """Parse a workload: lengths in token syntax (``128k``), ``mix`` as ``2k:0.8,32k:0.2`` or pairs,
    durations as ``2s``/``50ms``; without --long/--short the mix's longest/shortest lengths."""
    items = tuple(parse_mix(mix)) if mix is not None else ()
    long_n = parse_tokens(long) if long is not None else (items[-1][0] if items else None)
    short_n = parse_tokens(short) if short is not None else (items[0][0] if items else None)
    if long_n is None or short_n is None:
        raise LcprofError("give --long and --short request lengths, or a --mix of lengths")
    prefix_n = 0 if prefix in (None, 0, "0") else parse_tokens(prefix)
    return Workload(long_n=long_n, short_n=short_n, mix=items, prefix_n=prefix_n,
                    ttft_s=parse_seconds(ttft, "TTFT target"), tpot_s=parse_seconds(tpot, "TPOT target"),
                    decode_batch=None if decode_batch is None else int(decode_batch))


def build_precision(spec: ModelSpec, engine: str, weights: str = "bf16", kv_dtype: str = "bf16",
                    attn_dtype: str | None = None, state_dtype: str | None = None) -> Precision:
    fmt = weight_format(weights)
    if fmt.name == "mxfp4" and spec.moe is None:
        raise LcprofError(f"--weights mxfp4 quantizes routed experts only (vLLM Mxfp4Config) and {spec.name} has "
                          "none; use int4 or nvfp4 for a dense model")
    act = fmt.name if fmt.name in ("fp32", "fp16", "bf16") else "bf16"
    attn = act if attn_dtype is None else dtype_name(attn_dtype, allowed=ATTN_DTYPES)
    if state_dtype is not None:
        state = dtype_name(state_dtype, allowed=STATE_DTYPES)
    elif spec.state_dtype:
        state = dtype_name(spec.state_dtype, allowed=STATE_DTYPES)
    else:
        state = act
    return Precision(weights=fmt, kv=kv_format(spec, kv_dtype, engine), attn_dtype=attn, act_dtype=act,
                     state_dtype=state)


def build_mask(mask):
    """A ``--mask`` what-if (text or Mask) for the planner, or None. Infini-attention's compressive
    memory is a per-layer state no engine pages, so the planner refuses it."""
    if mask is None or mask == "":
        return None
    from lcprof.cost.masks import Infini, Mask, parse_mask

    m = mask if isinstance(mask, Mask) else parse_mask(str(mask))
    if isinstance(m, Infini):
        raise LcprofError("lcprof plan --mask infini: the compressive memory is a per-layer state no serving "
                          "engine pages; use `lcprof kv --mask` for its bytes")
    return m


def build_deployment(model: str | ModelSpec, *, gpu: str = "h100-sxm", gpus: int | None = None, tp: int = 1,
                     dp: int = 1, ep: int = 1, pp: int = 1, weights: str = "bf16", kv_dtype: str = "bf16",
                     attn_dtype: str | None = None, engine: EngineSettings | None = None,
                     calibration: str | None = None, fit: str | None = None,
                     attention_backend: str | None = None, state_dtype: str | None = None,
                     mask=None) -> Deployment:
    """Parse and check a deployment; ``engine`` carries the engine's knobs (None: vLLM's defaults);
    ``mask`` a ``--mask`` what-if on every attention layer."""
    spec = load_model(model)
    if mask is not None and fit:
        raise LcprofError("--mask with --fit: the fitted t(n) was measured without the mask; drop one of them")
    par = Parallel(int(tp), int(dp), int(ep), int(pp))
    gpus = par.gpus_per_replica if gpus is None else int(gpus)
    check_parallel(spec, par, gpus)
    settings = engine or EngineSettings()
    prec = build_precision(spec, settings.engine, weights, kv_dtype, attn_dtype, state_dtype)
    rates = deployment_rates(gpu, calibration, fit, spec=spec, dtype=prec.act_dtype,
                             attention_backend=attention_backend)
    limits = resolve_limits(settings, spec, rates.device, tp=par.tp, dp=par.dp, pp=par.pp)
    return Deployment(spec=spec, rates=rates, par=par, gpus=gpus, precision=prec, limits=limits,
                      mask=build_mask(mask))
