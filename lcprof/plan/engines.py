"""Serving engines' own accounting of GPU memory and their limits: vLLM, SGLang, or lcprof's (``none``). No torch.

Every rule here is the engine's, read from its source (files and commits cited where used):

**vLLM** (V1 engine; ``vllm/v1/worker/gpu_worker.py`` ``Worker.determine_available_memory`` and
``vllm/utils/mem_utils.py`` ``memory_profiling``, commit 35d5cda)::

    requested          = total GPU memory x gpu_memory_utilization
    non_kv_cache       = weights as loaded + torch peak of the profile run (max_num_batched_tokens
                         tokens, then the sampler) + non-torch memory the profile run adds
    available KV       = requested - non_kv_cache            ("Available KV cache memory: X GiB")
    num_blocks         = available KV // bytes per block     (``kv_cache_utils.get_kv_cache_config_from_groups``)
    max concurrency    = num_blocks / sum over KV groups of the blocks one max_model_len request needs
                         (``get_max_concurrency_for_kv_cache_config``; a sliding-window group needs
                         cdiv(min(W - 1 + max_num_batched_tokens, max_model_len), block) + 1)
    GPU KV cache size  = int(max concurrency x max_model_len) tokens  (``_report_kv_cache_config``;
                         = num_blocks x block_size for full attention when block_size divides max_model_len)

``--kv-memory`` replaces the profile (``CacheConfig.kv_cache_memory_bytes``). CUDA graphs are
captured after the KV cache is allocated and are not inside the budget
(``VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS`` defaults to 0, ``vllm/envs.py``); ``--cuda-graph-bytes``
subtracts an estimate as that flag does. Defaults: ``gpu_memory_utilization`` 0.92
(``vllm/config/cache.py``, commit 002f10e); ``block_size`` 16 (``CacheConfig.DEFAULT_BLOCK_SIZE``),
forced to 64 for MLA on Hopper (FlashMLA) and 128 on Blackwell (CUTLASS MLA)
(``vllm/platforms/cuda.py`` ``check_and_update_config``); ``max_num_batched_tokens`` /
``max_num_seqs`` 8192 / 1024 on GPUs with >= 70 GiB that are not an A100, else 2048 / 256, and
max_num_seqs <= max_num_batched_tokens (``vllm/engine/arg_utils.py`` ``EngineArgs._set_default_args``,
OpenAI server context); without chunked prefill max_num_batched_tokens = max_model_len (same
function); ``max_model_len`` the model's derived length (``vllm/config/model.py``
``_get_and_verify_max_len``: YaRN = original positions x factor, linear/dynamic = positions x factor).
The engine refuses to start when one max_model_len request does not fit (``check_enough_kv_cache_memory``).

**SGLang** (``python/sglang/srt/model_executor/model_runner.py`` ``profile_max_num_token`` and
``init_memory_pool``; ``server_args.py`` ``ServerArgs._handle_gpu_memory_settings``)::

    total              = free memory before the weights load (device total - memory already in use)
    rest               = (total - weights) - total x (1 - mem_fraction_static)
    max_total_num_tokens = rest // cell_size // page_size x page_size
    max_running_requests = min(min(max(int(tokens / context_len x 512), 2048), 4096), tokens // 2)

and mem_fraction_static, when not given, is round((gpu_mem - reserved) / gpu_mem, 3) with gpu_mem in
MiB and reserved = 512 + max(chunked_prefill_size, 2048) x 1.5 + cuda_graph_max_bs x 2 +
tp x pp / 8 x 1024 (+ cuda_graph_max_bs x dp x 3, and x 1.5 more above 300, with DP attention),
at least 10240 MiB on GPUs over 60 GiB; chunked_prefill_size / cuda_graph_max_bs come from the GPU
memory (8192 and 256, or 512 at TP >= 4, between 60 and 160 GiB). Activations and CUDA graphs live
in the (1 - mem_fraction_static) reserve, so they do not change the pool; page_size 1.

Hybrid models (a per-request mixer state beside the KV): vLLM pages the state with the attention KV
(``lcprof.plan.memory``; ``--mamba-cache-mode`` none or align); SGLang keeps it in a separate Mamba
pool (``HybridReqToTokenPool``, sized by ``--max-mamba-cache-size`` / ``--mamba-full-memory-ratio``),
which lcprof does not model, so ``--engine sglang`` refuses a hybrid model in one line.

**none**: lcprof's own: usable = datasheet memory x utilization (0.9); weights as the checkpoint
stores them; the activation reserve of the largest prefill chunk in lcprof's measured (unfused)
layout; no max_num_seqs; KV = usable - weights - reserve.

Bytes are integers; GiB = 2**30 (the engines print GiB, SGLang labelled "GB").
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lcprof.errors import LcprofError
from lcprof.hardware import Hardware
from lcprof.spec import ModelSpec

ENGINES = ("vllm", "sglang", "none")
GIB = 1 << 30
MIB = 1 << 20

VLLM_GPU_MEMORY_UTILIZATION = 0.92  # vllm/config/cache.py CacheConfig (commit 002f10e)
VLLM_BLOCK_SIZE = 16  # CacheConfig.DEFAULT_BLOCK_SIZE
VLLM_MLA_BLOCK_SIZE = {"hopper": 64, "blackwell": 128}  # vllm/platforms/cuda.py (FlashMLA / CUTLASS MLA)
NONE_MEMORY_UTILIZATION = 0.9
NONE_BLOCK_SIZE = 16
#: Estimate of non-torch memory (cuBLAS/cuDNN workspaces, NCCL and custom all-reduce buffers, the CUDA
#: context) when the engine's log is not given: vLLM counts what its profile run adds, SGLang what is in
#: use before the weights load. Pass the logged figure with --non-torch-bytes.
NON_TORCH_BYTES_ESTIMATE = 512 * MIB
SGLANG_PAGE_SIZE = 1
#: vLLM CacheConfig.mamba_cache_mode values the planner models (``vllm/config/cache.py``: "none" is set
#: when prefix caching is disabled, "align" is the default when it is enabled; "all" is not modelled).
MAMBA_CACHE_MODES = ("none", "align")
SGLANG_MAX_PREFILL_TOKENS = 16384  # ServerArgs.max_prefill_tokens


def gpu_arch(hw: Hardware) -> str:
    """``hopper``, ``blackwell`` or ``other`` from the GPU's name (for vLLM's MLA block size)."""
    name = hw.name.upper()
    if "H100" in name or "H200" in name or "H20" in name:
        return "hopper"
    if "B200" in name or "B100" in name or "GB200" in name:
        return "blackwell"
    return "other"


def derived_max_model_len(spec: ModelSpec) -> int:
    """The context length vLLM derives from the config (``_get_and_verify_max_len``); SGLang's
    ``context_len`` follows the same rule."""
    r = spec.rope
    if r is not None and r.factor != 1.0:
        if r.type == "yarn" and r.original_max_position:
            return int(r.original_max_position * r.factor)
        if r.type in ("linear", "dynamic"):
            return int(spec.max_position_embeddings * r.factor)
    return int(spec.max_position_embeddings)


@dataclass(frozen=True)
class EngineSettings:
    """What a user sets on the engine's command line; None means the engine's default."""

    engine: str = "vllm"
    memory_utilization: float | None = None  # vLLM gpu_memory_utilization, SGLang mem_fraction_static
    block_size: int | None = None  # vLLM block_size, SGLang page_size
    max_num_seqs: int | None = None  # SGLang max_running_requests
    max_num_batched_tokens: int | None = None  # the prefill chunk (SGLang chunked_prefill_size)
    chunked: bool = True
    max_model_len: int | None = None  # SGLang context_length
    kv_memory_bytes: int | None = None  # a logged "Available KV cache memory"
    gpu_memory_bytes: int | None = None  # the total the engine sees
    non_torch_bytes: int | None = None
    cuda_graph_bytes: int | None = None
    mamba_cache_mode: str | None = None  # vLLM --mamba-cache-mode (hybrid models): none | align

    def __post_init__(self) -> None:
        if self.mamba_cache_mode is not None and self.mamba_cache_mode not in MAMBA_CACHE_MODES:
            raise LcprofError(f"unknown --mamba-cache-mode {self.mamba_cache_mode!r}; accepted: "
                              f"{', '.join(MAMBA_CACHE_MODES)} (vLLM's 'all' is not modelled)")
        if self.engine not in ENGINES:
            raise LcprofError(f"unknown engine {self.engine!r}; accepted: {', '.join(ENGINES)}")
        if self.memory_utilization is not None and not 0 < self.memory_utilization <= 1:
            raise LcprofError(f"memory utilization must be in (0, 1], got {self.memory_utilization}")
        for name in ("block_size", "max_num_seqs", "max_num_batched_tokens", "max_model_len", "kv_memory_bytes",
                     "gpu_memory_bytes"):
            v = getattr(self, name)
            if v is not None and v <= 0:
                raise LcprofError(f"--{name.replace('_', '-')} must be positive, got {v}")
        for name in ("non_torch_bytes", "cuda_graph_bytes"):
            v = getattr(self, name)
            if v is not None and v < 0:
                raise LcprofError(f"--{name.replace('_', '-')} must be >= 0, got {v}")
        if not self.chunked and self.max_num_batched_tokens is not None:
            raise LcprofError("--no-chunk and --chunk/--max-num-batched-tokens contradict each other; give one")


@dataclass(frozen=True)
class EngineLimits:
    """The engine's resolved settings for one deployment (``sources`` says where each came from)."""

    engine: str
    memory_utilization: float
    block_size: int
    max_num_seqs: int | None  # per attention-DP rank; None: no cap (engine none)
    max_num_batched_tokens: int | None  # prefill tokens per step; None: unchunked (engine none)
    max_model_len: int | None
    gpu_memory_bytes: int
    non_torch_bytes: int
    cuda_graph_bytes: int
    kv_memory_bytes: int | None
    cuda_graph_max_bs: int | None = None
    mamba_cache_mode: str = "none"
    sources: dict = field(default_factory=dict, hash=False, compare=False)

    @property
    def chunk_tokens(self) -> int | None:
        return self.max_num_batched_tokens


def has_state(spec: ModelSpec) -> bool:
    """Whether a request of ``spec`` holds a constant mixer state (any non-attention token mixer)."""
    return any(m != "attention" for layer in spec.layers for m in layer.mixers)


def _default_gpu_memory(engine: str, hw: Hardware) -> tuple[int, str]:
    if engine == "none":
        return int(hw.memory_bytes), "datasheet memory_bytes"
    from lcprof.hardware import _db  # the reported (nvidia-smi) total, where the database has it

    entry = _db()["gpus"].get(hw.key, {})
    if entry.get("reported_memory_mib"):
        return int(entry["reported_memory_mib"]) * MIB, "gpus.json reported_memory_mib (nvidia-smi total)"
    return int(hw.memory_bytes), "datasheet memory_bytes"


def vllm_batch_defaults(gpu_memory_bytes: int, hw: Hardware) -> tuple[int, int]:
    """(max_num_batched_tokens, max_num_seqs) vLLM picks for the OpenAI server (``_set_default_args``)."""
    if gpu_memory_bytes >= 70 * GIB and "A100" not in hw.name.upper():
        return 8192, 1024
    return 2048, 256


def sglang_gpu_defaults(gpu_mem_mib: float, tp_size: int) -> tuple[int, int]:
    """(chunked_prefill_size, cuda_graph_max_bs) from the GPU memory (``_handle_gpu_memory_settings``)."""
    if gpu_mem_mib < 20 * 1024:
        return 2048, 8
    if gpu_mem_mib < 35 * 1024:
        return 2048, 24 if tp_size < 4 else 80
    if gpu_mem_mib < 60 * 1024:
        return 4096, 32 if tp_size < 4 else 160
    if gpu_mem_mib < 160 * 1024:
        return 8192, 256 if tp_size < 4 else 512
    return 16384, 512


def sglang_mem_fraction_static(gpu_mem_mib: float, *, chunked_prefill_size: int, cuda_graph_max_bs: int,
                               tp_size: int, pp_size: int, dp_size: int = 1, dp_attention: bool = False) -> float:
    """SGLang's default mem_fraction_static (``_handle_gpu_memory_settings``; reserved memory in MiB)."""
    reserved = 512 + max(chunked_prefill_size, 2048) * 1.5 + cuda_graph_max_bs * 2 + tp_size * pp_size / 8 * 1024
    if dp_attention:
        reserved += cuda_graph_max_bs * dp_size * 3
        if cuda_graph_max_bs > 300:
            reserved += cuda_graph_max_bs * dp_size * 1.5
    if gpu_mem_mib > 60 * 1024:
        reserved = max(reserved, 10 * 1024)
    return round((gpu_mem_mib - reserved) / gpu_mem_mib, 3)


def resolve_limits(settings: EngineSettings, spec: ModelSpec, hw: Hardware, *, tp: int = 1, dp: int = 1,
                   pp: int = 1) -> EngineLimits:
    """Fill every None of ``settings`` with the engine's default for this model, GPU and layout."""
    e = settings.engine
    src: dict[str, str] = {}
    if e == "sglang" and has_state(spec):
        raise LcprofError(f"--engine sglang: {spec.name} keeps a per-request mixer state, which SGLang holds in a "
                          "separate Mamba pool (HybridReqToTokenPool, sized by --max-mamba-cache-size / "
                          "--mamba-full-memory-ratio) that lcprof does not model; use --engine vllm or none")

    def pick(name, value, default, why):
        if value is not None:
            src[name] = "given"
            return value
        src[name] = why
        return default

    mem, why = _default_gpu_memory(e, hw)
    gpu_memory = pick("gpu_memory_bytes", settings.gpu_memory_bytes, mem, why)
    non_torch = pick("non_torch_bytes", settings.non_torch_bytes, 0 if e == "none" else NON_TORCH_BYTES_ESTIMATE,
                     "not counted" if e == "none" else "estimate")
    model_len = derived_max_model_len(spec)
    cg_max_bs = None
    if e == "vllm":
        util = pick("memory_utilization", settings.memory_utilization, VLLM_GPU_MEMORY_UTILIZATION,
                    "vLLM default (vllm/config/cache.py)")
        arch = gpu_arch(hw)
        block_default = VLLM_MLA_BLOCK_SIZE.get(arch, VLLM_BLOCK_SIZE) if spec.mla is not None else VLLM_BLOCK_SIZE
        block = pick("block_size", settings.block_size, block_default,
                     "vLLM default" + (f" (MLA on {arch})" if block_default != VLLM_BLOCK_SIZE else ""))
        max_len = pick("max_model_len", settings.max_model_len, model_len, "derived from the config")
        mnbt_default, seqs_default = vllm_batch_defaults(gpu_memory, hw)
        if settings.chunked:
            mnbt = pick("max_num_batched_tokens", settings.max_num_batched_tokens, mnbt_default,
                        "vLLM default (vllm/engine/arg_utils.py)")
        else:
            mnbt = max_len
            src["max_num_batched_tokens"] = "max_model_len (chunked prefill off)"
        seqs = pick("max_num_seqs", settings.max_num_seqs, min(seqs_default, mnbt), "vLLM default")
        cuda_graph = pick("cuda_graph_bytes", settings.cuda_graph_bytes, 0,
                          "not in the budget (VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS=0)")
    elif e == "sglang":
        gpu_mem_mib = gpu_memory / MIB
        chunk_default, cg_max_bs = sglang_gpu_defaults(gpu_mem_mib, tp * dp)
        if settings.chunked:
            mnbt = pick("max_num_batched_tokens", settings.max_num_batched_tokens, chunk_default,
                        "SGLang default chunked_prefill_size (server_args.py)")
        else:
            mnbt = SGLANG_MAX_PREFILL_TOKENS
            src["max_num_batched_tokens"] = "max_prefill_tokens (chunked prefill off)"
        util = pick("memory_utilization", settings.memory_utilization,
                    sglang_mem_fraction_static(gpu_mem_mib, chunked_prefill_size=mnbt if settings.chunked else
                                               SGLANG_MAX_PREFILL_TOKENS, cuda_graph_max_bs=cg_max_bs,
                                               tp_size=tp * dp, pp_size=pp, dp_size=dp, dp_attention=dp > 1),
                    "SGLang default mem_fraction_static (server_args.py)")
        block = pick("block_size", settings.block_size, SGLANG_PAGE_SIZE, "SGLang default page_size")
        max_len = pick("max_model_len", settings.max_model_len, model_len, "derived from the config")
        seqs = settings.max_num_seqs  # resolved against the pool (sglang_max_running_requests)
        src["max_num_seqs"] = "given" if seqs is not None else "SGLang default (from the pool)"
        if settings.cuda_graph_bytes is not None:
            raise LcprofError("--cuda-graph-bytes does not change SGLang's pool: its CUDA graphs live in the "
                              "(1 - mem_fraction_static) reserve; lower --memory-utilization instead")
        cuda_graph = 0
        src["cuda_graph_bytes"] = "inside the (1 - mem_fraction_static) reserve"
    else:
        util = pick("memory_utilization", settings.memory_utilization, NONE_MEMORY_UTILIZATION, "lcprof default")
        block = pick("block_size", settings.block_size, NONE_BLOCK_SIZE, "lcprof default")
        max_len = settings.max_model_len
        src["max_model_len"] = "given" if max_len is not None else "no limit"
        mnbt = settings.max_num_batched_tokens if settings.chunked else None
        src["max_num_batched_tokens"] = "given" if mnbt is not None else "unchunked"
        seqs = settings.max_num_seqs
        src["max_num_seqs"] = "given" if seqs is not None else "no limit"
        cuda_graph = pick("cuda_graph_bytes", settings.cuda_graph_bytes, 0, "not counted")
    if settings.kv_memory_bytes is not None:
        src["kv_memory_bytes"] = "given (logged Available KV cache memory)"
    mamba_mode = settings.mamba_cache_mode or "none"
    src["mamba_cache_mode"] = "given" if settings.mamba_cache_mode else "vLLM default without prefix caching"
    return EngineLimits(engine=e, memory_utilization=float(util), block_size=int(block),
                        max_num_seqs=None if seqs is None else int(seqs),
                        max_num_batched_tokens=None if mnbt is None else int(mnbt),
                        max_model_len=None if max_len is None else int(max_len), gpu_memory_bytes=int(gpu_memory),
                        non_torch_bytes=int(non_torch), cuda_graph_bytes=int(cuda_graph),
                        kv_memory_bytes=settings.kv_memory_bytes, cuda_graph_max_bs=cg_max_bs,
                        mamba_cache_mode=mamba_mode, sources=src)


def requested_bytes(lim: EngineLimits, util=None) -> np.ndarray:
    """The memory the engine sizes against (float array over ``util``; default the limits' own).

    vLLM: total x gpu_memory_utilization; SGLang: (total - non-torch in use) x mem_fraction_static;
    none: floor(total x utilization)."""
    u = np.asarray(lim.memory_utilization if util is None else util, dtype=np.float64)
    if lim.engine == "vllm":
        return lim.gpu_memory_bytes * u
    if lim.engine == "sglang":
        return (lim.gpu_memory_bytes - lim.non_torch_bytes) * u
    return np.floor(lim.gpu_memory_bytes * u)


def kv_budget_bytes(lim: EngineLimits, *, weights_bytes, activation_bytes, util=None) -> np.ndarray:
    """Bytes left for the KV cache on one GPU (int64 array broadcast over util and the inputs).

    vLLM: int(requested - (weights + activation peak + non-torch + CUDA graphs)), or the given
    ``--kv-memory``; SGLang: requested - weights (activations sit in the reserve); none:
    requested - weights - activation reserve."""
    if lim.kv_memory_bytes is not None:
        return np.broadcast_to(np.int64(lim.kv_memory_bytes),
                               np.broadcast_shapes(np.shape(weights_bytes), np.shape(activation_bytes),
                                                   np.shape(util) if util is not None else ()))
    req = requested_bytes(lim, util)
    w = np.asarray(weights_bytes, dtype=np.float64)
    a = np.asarray(activation_bytes, dtype=np.float64)
    if lim.engine == "vllm":
        out = np.trunc(req - (w + a + lim.non_torch_bytes + lim.cuda_graph_bytes))
    elif lim.engine == "sglang":
        out = np.floor(req - w)
    else:
        out = req - w - a - lim.non_torch_bytes - lim.cuda_graph_bytes
    return out.astype(np.int64)


def sglang_max_running_requests(tokens, context_len: int):
    """SGLang's default max_running_requests per DP worker (``_resolve_max_num_reqs``); broadcasts."""
    t = np.asarray(tokens, dtype=np.int64)
    estimated = np.maximum(np.minimum((t / context_len * 512).astype(np.int64), 4096), 2048)
    out = np.minimum(estimated, t // 2)
    return int(out) if out.ndim == 0 else out


def gib_text(nbytes: float, digits: int = 2) -> str:
    return f"{nbytes / GIB:.{digits}f}"


def vllm_startup_log(*, weights_bytes: int, available_kv_bytes: int, kv_tokens: int, max_model_len: int,
                     max_concurrency: float, profiled: bool = True) -> list[str]:
    """The lines vLLM logs at startup, in its own format (``gpu_model_runner``, ``gpu_worker``,
    ``kv_cache_utils._report_kv_cache_config``)."""
    lines = [f"Model loading took {weights_bytes / GIB:.4f} GiB"]
    lines.append(f"Available KV cache memory: {gib_text(available_kv_bytes)} GiB" if profiled else
                 f"reserved {gib_text(available_kv_bytes)} GiB memory for KV Cache as specified by "
                 f"kv_cache_memory_bytes config")
    lines.append(f"GPU KV cache size: {kv_tokens:,} tokens")
    lines.append(f"Maximum concurrency for {max_model_len:,} tokens per request: {max_concurrency:.2f}x")
    return lines


def sglang_startup_log(*, weights_bytes: int, tokens: int, kv_bytes_per_token: int, mla: bool, chunk: int,
                       max_running: int, context_len: int) -> list[str]:
    """The lines SGLang logs at startup (``model_runner``: load, KV pool; ``scheduler``: limits)."""
    total = tokens * kv_bytes_per_token
    pool = (f"KV Cache is allocated. #tokens: {tokens}, KV size: {total / GIB:.2f} GB" if mla else
            f"KV Cache is allocated. #tokens: {tokens}, K size: {total / 2 / GIB:.2f} GB, "
            f"V size: {total / 2 / GIB:.2f} GB")
    return [f"Load weight end. mem usage={weights_bytes / GIB:.2f} GB", pool,
            f"max_total_num_tokens={tokens}, chunked_prefill_size={chunk}, max_prefill_tokens="
            f"{SGLANG_MAX_PREFILL_TOKENS}, max_running_requests={max_running}, context_len={context_len}"]


def cdiv(a, b):
    return -(-np.asarray(a, dtype=np.int64) // np.asarray(b, dtype=np.int64))


def floor_div(a, b) -> np.ndarray:
    return np.asarray(a, dtype=np.int64) // np.asarray(b, dtype=np.int64)


def not_enough_for_one_request(max_model_len: int, need_bytes: int, have_bytes: int, estimated_len: int) -> str:
    """vLLM's refusal (``check_enough_kv_cache_memory``), in its words."""
    return (f"vLLM would not start: to serve at least one request with the model's max seq len ({max_model_len}), "
            f"{need_bytes / GIB:.2f} GiB KV cache is needed, which is larger than the available KV cache memory "
            f"({have_bytes / GIB:.2f} GiB); based on the available memory the estimated maximum model length is "
            f"{estimated_len}; pass a smaller --max-model-len or raise --memory-utilization")

