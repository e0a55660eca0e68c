"""Measure this device's achievable matmul rate per dtype and its memory bandwidth; save a profile.

The profile is a JSON file with the same fields as a GPU database entry (``key``, ``name``,
``peak_flops_per_s`` by dtype, ``hbm_bytes_per_s``, ``memory_bytes``) plus how it was measured and
the environment, so ``lcprof.hardware.load_calibration`` reads it and every prediction
(``lcprof compare --calibration``) can use measured ceilings instead of a datasheet.

Method:
  * **matmul**: a square GEMM ``(N, N) @ (N, N)`` = ``2 * N**3`` FLOPs (2 per multiply-add), inputs
    rotated over a few buffers; N = 8192 on a GPU (4096 with ``quick``), 2048 on the CPU (1024 with
    ``quick``). One warm-up, then repetitions until a time budget; the **median** of the samples.
    On CUDA each repetition has its own pair of CUDA events; fp32 runs with TF32 off and ``tf32``
    with it on (restored afterwards). On the CPU each repetition is timed with ``perf_counter``.
  * **bandwidth**: ``dst.copy_(src)`` of a large buffer (1 GiB on a GPU, 256 MiB on the CPU; a
    quarter with ``quick``), counting the bytes read **and** written (2 x size).
  * **memory**: the device's total memory (CUDA properties; physical RAM on the CPU).
  * **attention** (CUDA): each tiled attention backend (SDPA flash, cuDNN, memory-efficient, and
    the striped-ring kernel when it builds) on causal (1, n, 32, 128) inputs, n = 16384 (4096 with
    ``quick``) or at each of ``attention_n``, in bf16 (and fp32 for memory-efficient); rate = the
    cost model's *executed* FLOPs (128 x 128 tiles not fully masked) / median time, stored as
    ``attention_flops_per_s`` {backend: {dtype: FLOP/s}} (the first length) and
    ``attention_flops_per_s_by_n`` {backend: {dtype: {n: FLOP/s}}} (every length). Attention
    kernels run well below the GEMM peak; a calibrated roofline charges QK^T and PV at the
    backend's own rate.

Only this module imports torch, and only inside its functions.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

from lcprof._version import __version__
from lcprof.errors import LcprofError

GPU_DTYPES = ("fp32", "tf32", "bf16", "fp16")
CPU_DTYPES = ("fp32", "bf16", "fp16")


def _torch():
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        raise LcprofError("calibrate needs torch (pip install torch)") from None
    return torch


def _torch_dtype(torch, name: str):
    return {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


def _cpu_model() -> str:
    from lcprof.measure.env import cpu_model  # imports torch, like everything here at run time

    return cpu_model()


def _cpu_memory_bytes() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 1 << 34


class _Timer:
    """Times a callable: CUDA events per repetition on a GPU, perf_counter (after sync) on the CPU."""

    def __init__(self, torch, device):
        self.torch = torch
        self.cuda = device.type == "cuda"

    def sync(self):
        if self.cuda:
            self.torch.cuda.synchronize()

    def samples(self, fn, *, budget_s: float, min_reps: int, max_reps: int) -> list[float]:
        torch = self.torch
        t0 = time.perf_counter()
        fn()  # warm-up (kernel selection, allocator, page faults)
        self.sync()
        if time.perf_counter() - t0 > budget_s:
            min_reps = 1  # a very slow path (e.g. fp16 GEMM on a CPU without fp16 units): one is enough
        out: list[float] = []
        start_all = time.perf_counter()
        while len(out) < max_reps and (len(out) < min_reps or time.perf_counter() - start_all < budget_s):
            if self.cuda:
                begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                begin.record()
                fn()
                end.record()
                end.synchronize()
                out.append(begin.elapsed_time(end) / 1e3)  # ms -> s
            else:
                t0 = time.perf_counter()
                fn()
                out.append(time.perf_counter() - t0)
        return out


def measure_matmul(dtype: str, *, device=None, size: int | None = None, quick: bool = False,
                   budget_s: float | None = None) -> dict:
    """Achieved FLOP/s of a square ``size``³ GEMM in ``dtype`` (median of repetitions)."""
    torch = _torch()
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = dev.type == "cuda"
    if dtype == "tf32" and not cuda:
        raise LcprofError("tf32 is a CUDA matmul mode; on the CPU calibrate fp32, bf16, fp16")
    if size is None:
        size = (4096 if quick else 8192) if cuda else (1024 if quick else 2048)
    if budget_s is None:
        budget_s = (0.5 if quick else 2.0) if cuda else (1.0 if quick else 4.0)
    tdt = _torch_dtype(torch, dtype)
    gen = torch.Generator(device=dev).manual_seed(0)
    bufs = 3  # rotate inputs so a repetition does not find its operands in cache

    def rand():
        return torch.randn(size, size, device=dev, generator=gen).to(tdt)

    a = [rand() for _ in range(bufs)]  # each (size, size)
    b = [rand() for _ in range(bufs)]
    c = torch.empty(size, size, device=dev, dtype=tdt)
    idx = [0]

    def step():
        i = idx[0] % bufs
        idx[0] += 1
        torch.matmul(a[i], b[i], out=c)

    prev = torch.backends.cuda.matmul.allow_tf32 if cuda else None
    try:
        if cuda:
            torch.backends.cuda.matmul.allow_tf32 = dtype == "tf32"
        samples = _Timer(torch, dev).samples(step, budget_s=budget_s, min_reps=3, max_reps=200)
    finally:
        if cuda:
            torch.backends.cuda.matmul.allow_tf32 = prev
    med = statistics.median(samples)
    flops = 2.0 * size ** 3  # 2 FLOPs per multiply-add
    return {"dtype": dtype, "size": size, "flops": flops, "reps": len(samples), "median_s": med,
            "flops_per_s": flops / med, "samples_s": samples}


def measure_bandwidth(*, device=None, nbytes: int | None = None, quick: bool = False,
                      budget_s: float | None = None) -> dict:
    """Achieved bytes/s of a large device-to-device copy, counting read + write (2 x nbytes)."""
    torch = _torch()
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = dev.type == "cuda"
    if nbytes is None:
        nbytes = (1 << 30 if cuda else 1 << 28) // (4 if quick else 1)
    if budget_s is None:
        budget_s = (0.5 if quick else 2.0) if cuda else (0.5 if quick else 2.0)
    count = nbytes // 4
    src = torch.ones(count, device=dev, dtype=torch.float32)
    dst = torch.empty_like(src)
    samples = _Timer(torch, dev).samples(lambda: dst.copy_(src), budget_s=budget_s, min_reps=3, max_reps=100)
    med = statistics.median(samples)
    moved = 2.0 * count * 4  # read src + write dst
    return {"bytes": int(moved), "reps": len(samples), "median_s": med, "bytes_per_s": moved / med,
            "samples_s": samples}


ATTENTION_BACKENDS = (("sdpa-flash", "bf16"), ("sdpa-cudnn", "bf16"), ("sdpa-efficient", "bf16"),
                      ("sdpa-efficient", "fp32"), ("striped-ring", "bf16"))


def measure_attention(backend: str, dtype: str, *, device=None, n: int | None = None, quick: bool = False,
                      heads: int = 32, head_dim: int = 128, budget_s: float | None = None) -> dict:
    """Executed FLOP/s of one causal attention call of ``backend`` (CUDA), median of repetitions.

    Raises LcprofError when the backend cannot run here (the caller records the reason).
    """
    import numpy as np

    from lcprof.cost.masks import executed_pairs_tiled

    torch = _torch()
    dev = torch.device(device or "cuda")
    if dev.type != "cuda":
        raise LcprofError("attention calibration needs CUDA")
    n = n or (4096 if quick else 16384)
    budget_s = budget_s or (0.3 if quick else 1.0)
    tdt = _torch_dtype(torch, dtype)
    gen = torch.Generator(device=dev).manual_seed(0)
    shape = (1, n, heads, head_dim)  # (batch, n, heads, head_dim)
    q, k, v = (torch.randn(shape, device=dev, generator=gen).to(tdt) for _ in range(3))
    if backend == "striped-ring":
        from kernels import striped_attn

        ok, why = striped_attn.is_available()
        if not ok:
            raise LcprofError(f"striped-ring kernel unavailable: {why}")

        def step():
            striped_attn.striped_block_attention(q, k, v, causal=True)
    else:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        kind = {"sdpa-flash": SDPBackend.FLASH_ATTENTION, "sdpa-cudnn": SDPBackend.CUDNN_ATTENTION,
                "sdpa-efficient": SDPBackend.EFFICIENT_ATTENTION}[backend]
        qt, kt, vt = (x.transpose(1, 2) for x in (q, k, v))  # (batch, heads, n, head_dim)

        def step():
            with sdpa_kernel([kind]):
                torch.nn.functional.scaled_dot_product_attention(qt, kt, vt, is_causal=True)
    try:
        step()
        torch.cuda.synchronize(dev)
        samples = _Timer(torch, dev).samples(step, budget_s=budget_s, min_reps=3, max_reps=50)
    except RuntimeError as exc:
        raise LcprofError(f"{backend} {dtype} did not run: {str(exc).splitlines()[0]}") from None
    med = statistics.median(samples)
    pairs = float(np.asarray(executed_pairs_tiled("global", n, 0, None, (128, 128))))
    flops = 4.0 * head_dim * heads * pairs  # QK^T and PV, 2 FLOPs per multiply-add each
    return {"backend": backend, "dtype": dtype, "n": n, "heads": heads, "head_dim": head_dim,
            "executed_flops": flops, "reps": len(samples), "median_s": med, "flops_per_s": flops / med,
            "samples_s": samples}


def _environment(torch, dev) -> dict:
    env = {
        "lcprof_version": __version__,
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda or "",
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "date_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "threads": torch.get_num_threads(),
        "cpu_name": _cpu_model(),
    }
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        env["gpu_name"] = props.name
        env["gpu_capability"] = f"{props.major}.{props.minor}"
        env["gpu_multiprocessors"] = props.multi_processor_count
        try:
            import pynvml

            pynvml.nvmlInit()
            env["driver_version"] = str(pynvml.nvmlSystemGetDriverVersion())
            h = pynvml.nvmlDeviceGetHandleByIndex(dev.index or 0)
            env["power_limit_w"] = pynvml.nvmlDeviceGetPowerManagementLimit(h) / 1000.0
            env["max_sm_clock_mhz"] = pynvml.nvmlDeviceGetMaxClockInfo(h, pynvml.NVML_CLOCK_SM)
        except Exception as exc:  # pynvml missing or no permission: record why, do not fail
            env["nvml"] = f"unavailable: {type(exc).__name__}"
    return env


def _slug(text: str) -> str:
    out = "".join(ch.lower() if ch.isalnum() else "-" for ch in text)
    while "--" in out:
        out = out.replace("--", "-")
    return out.strip("-") or "device"


def calibrate(device: str | None = None, *, quick: bool = False, dtypes=None, key: str | None = None,
              attention_n=None) -> dict:
    """Measure matmul FLOP/s per dtype and copy bandwidth on ``device`` (``cuda``/``cpu``, default: cuda if any).

    Returns the profile dict (see the module docstring); ``save_profile`` writes it.
    """
    torch = _torch()
    name = (device or ("cuda" if torch.cuda.is_available() else "cpu")).lower()
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise LcprofError("--device cuda asked for, but torch sees no CUDA device; use --device cpu")
    if not (name.startswith("cuda") or name == "cpu"):
        raise LcprofError(f"unknown device {device!r}; use cuda or cpu")
    dev = torch.device(name)
    cuda = dev.type == "cuda"
    wanted = tuple(dtypes) if dtypes else (GPU_DTYPES if cuda else CPU_DTYPES)
    gemms = {}
    for d in wanted:
        if d == "tf32" and not cuda:
            continue
        gemms[d] = measure_matmul(d, device=dev, quick=quick)
    bw = measure_bandwidth(device=dev, quick=quick)
    lengths = [int(x) for x in attention_n] if attention_n else [4096 if quick else 16384]
    by_n, attention_skipped = {}, {}
    if cuda:
        for backend, d in ATTENTION_BACKENDS:
            for n in lengths:
                try:
                    m = measure_attention(backend, d, device=dev, quick=quick, n=n)
                except LcprofError as exc:
                    attention_skipped[f"{backend}/{d}/{n}"] = str(exc)
                    continue
                by_n.setdefault(backend, {}).setdefault(d, {})[n] = m
                torch.cuda.empty_cache()
    if cuda:
        props = torch.cuda.get_device_properties(dev)
        dev_name, mem = props.name, int(props.total_memory)
    else:
        dev_name, mem = f"{_cpu_model()} ({torch.get_num_threads()} threads)", _cpu_memory_bytes()
    if cuda:
        torch.cuda.empty_cache()
    return {
        "key": key or f"calibrated-{_slug(dev_name)}",
        "name": f"{dev_name} (calibrated)",
        "kind": "calibration",
        "device": dev.type,
        "peak_flops_per_s": {d: g["flops_per_s"] for d, g in gemms.items()},
        "hbm_bytes_per_s": bw["bytes_per_s"],
        "memory_bytes": mem,
        # the single rate per backend and dtype: the first length measured
        "attention_flops_per_s": {b: {d: next(iter(ms.values()))["flops_per_s"] for d, ms in v.items()}
                                  for b, v in by_n.items()},
        "attention_flops_per_s_by_n": {b: {d: {str(n): m["flops_per_s"] for n, m in ms.items()}
                                           for d, ms in v.items()}
                                       for b, v in by_n.items()},
        "method": {
            "attention": {f"{b}/{d}/{n}": {k: m[k] for k in ("n", "heads", "head_dim", "executed_flops", "reps",
                                                             "median_s", "samples_s")}
                          for b, v in by_n.items() for d, ms in v.items() for n, m in ms.items()},
            "attention_skipped": attention_skipped,
            "matmul": {d: {k: g[k] for k in ("size", "flops", "reps", "median_s", "samples_s")}
                       for d, g in gemms.items()},
            "bandwidth": {k: bw[k] for k in ("bytes", "reps", "median_s", "samples_s")},
            "quick": quick,
            "statistic": "median",
            "timer": "cuda events per repetition" if cuda else "time.perf_counter per repetition",
        },
        "environment": _environment(torch, dev),
    }


def save_profile(profile: dict, path) -> Path:
    """Write a profile JSON (creating parent folders); ``load_calibration(path)`` reads it back."""
    p = Path(path)
    if p.exists() and p.is_dir():
        raise LcprofError(f"--out {str(p)!r} is a folder; give a file name such as {str(p / 'profile.json')!r}")
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "w") as fh:
        json.dump(profile, fh, indent=1)
        fh.write("\n")
    return p


def profile_table(profile: dict) -> list[dict]:
    """Flat records for the CLI: one per measured rate."""
    rows = [{"what": f"matmul {d}", "dtype": d, "rate": v / 1e12, "unit": "TFLOP/s",
             "size": profile["method"]["matmul"][d]["size"], "reps": profile["method"]["matmul"][d]["reps"]}
            for d, v in profile["peak_flops_per_s"].items()]
    bw = profile["method"]["bandwidth"]
    rows.append({"what": "copy bandwidth (read+write)", "dtype": "", "rate": profile["hbm_bytes_per_s"] / 1e9,
                 "unit": "GB/s", "size": bw["bytes"], "reps": bw["reps"]})
    rows.append({"what": "memory", "dtype": "", "rate": profile["memory_bytes"] / float(1 << 30), "unit": "GiB",
                 "size": None, "reps": None})
    for key, m in (profile["method"].get("attention") or {}).items():
        rows.append({"what": f"attention {key} (causal, executed FLOPs)", "dtype": key.split("/")[1],
                     "rate": m["executed_flops"] / m["median_s"] / 1e12, "unit": "TFLOP/s", "size": m["n"],
                     "reps": m["reps"]})
    for key, why in (profile["method"].get("attention_skipped") or {}).items():
        rows.append({"what": f"attention {key}: skipped ({why})", "dtype": key.split("/")[1], "rate": None,
                     "unit": "", "size": None, "reps": None})
    return rows
