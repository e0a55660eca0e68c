"""Measure this device's achievable rates and save a profile that every prediction can use.

The profile is a JSON file with the fields of a GPU database entry (``key``, ``name``,
``peak_flops_per_s`` by dtype, ``hbm_bytes_per_s``, ``memory_bytes``), the database entry it is a
measurement of (``gpu``, when the device's name matches one), attention-kernel rates, how it was
measured and the environment; ``lcprof.hardware.load_calibration`` reads it and
``lcprof.rates.resolve_rates`` finds it.

Method -- one timer for everything (:func:`lcprof.measure.timer.measure`: warm-up, rotated inputs,
one CUDA event pair per repetition and one synchronize, ``perf_counter`` on the CPU):

* **matmul**: a square GEMM ``(N, N) @ (N, N)`` = ``2 * N**3`` FLOPs (2 per multiply-add) over
  three rotated input pairs; N = 8192 on a GPU (4096 with ``quick``), 2048 on the CPU (1024 with
  ``quick``), halved while one call takes over a second (a dtype the CPU has no units for);
  fp32 with TF32 off, ``tf32`` with it on (``env.tf32_mode``).
* **bandwidth**: ``dst.copy_(src)`` of a large buffer (1 GiB on a GPU, 256 MiB on the CPU; a
  quarter with ``quick``), counting the bytes read **and** written (2 x size).
* **attention**: on CUDA each tiled backend (SDPA flash, cuDNN, memory-efficient, our striped-ring
  kernel when it builds) on causal (1, n, 32, 128) inputs at each of ``attention_n`` (16384; 4096
  with ``quick``); on the CPU the two backends a CPU sweep runs, ``eager`` and ``sdpa`` (fp32,
  through the same backend functions the sweep's layer calls), at ``attention_n`` (4096; 1024 with
  ``quick``). Rate = the cost model's executed attention FLOPs for the backend's family (tiled:
  the 128 x 128 tiles not fully masked; eager: the whole n x n square) / the call's time -- for
  eager that time includes its softmax and mask passes, so the rate prices the whole attention call.
  ``lcprof fit --calibration`` holds these rates fixed (the attention work of a CPU sweep at the
  lengths minutes allow is too small a share of the time to fit its rate).

Every rate is measured in ``rounds`` rounds (5; 2 with ``quick``); a round's rate is its work over
the sum of its repetitions' times (a *sustained* rate, not one lucky repetition); the profile keeps
the **best round** -- other processes can only slow a round down -- and records every round's rate
and their spread ``(best - worst) / best``.
"""

from __future__ import annotations

import json
import os
import re
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from lcprof.errors import LcprofError
from lcprof.measure import backends as B
from lcprof.measure.env import cpu_model, environment, tf32_mode
from lcprof.measure.timer import measure

GPU_DTYPES = ("fp32", "tf32", "bf16", "fp16")
CPU_DTYPES = ("fp32", "bf16")
ROUNDS, QUICK_ROUNDS = 5, 2
SLOW_CALL_S = 1.0  # a GEMM call slower than this halves N
ATTENTION_BACKENDS = (("sdpa-flash", "bf16"), ("sdpa-cudnn", "bf16"), ("sdpa-efficient", "bf16"),
                      ("sdpa-efficient", "fp32"), ("striped-ring", "bf16"))
#: The CPU's attention backends (those bench.sh sweeps on a CPU), in fp32.
CPU_ATTENTION_BACKENDS = (("eager", "fp32"), ("sdpa", "fp32"))
#: Default attention lengths: CUDA (full, quick) and CPU (full, quick).
ATTENTION_N = {"cuda": (16384, 4096), "cpu": (4096, 1024)}


def _rounds(fn, inputs, work: float, *, device, rounds: int, budget_s: float, min_reps: int = 3,
            max_reps: int = 200) -> dict:
    """Best sustained rate (work / summed repetition time) over ``rounds`` timings of fn."""
    rates, best = [], None
    for _ in range(rounds):
        m = measure(fn, inputs, device=device, budget_s=budget_s, min_reps=min_reps, max_reps=max_reps)
        rate = work * m.repeats / float(np.sum(m.samples_s))
        rates.append(rate)
        if best is None or rate >= max(rates):
            best = m
    top = max(rates)
    return {"rate": top, "round_rates": rates, "spread": (top - min(rates)) / top, "reps": best.repeats,
            "median_s": best.median_s, "samples_s": list(best.samples_s), "rounds": rounds}


def _device(device) -> torch.device:
    if isinstance(device, torch.device):
        return device
    name = (device or ("cuda" if torch.cuda.is_available() else "cpu")).lower()
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise LcprofError("--device cuda asked for, but torch sees no CUDA device; use --device cpu")
    if not (name.startswith("cuda") or name == "cpu"):
        raise LcprofError(f"unknown device {device!r}; use cuda or cpu")
    return torch.device(name)


def measure_matmul(dtype: str, *, device=None, size: int | None = None, quick: bool = False,
                   budget_s: float | None = None, rounds: int | None = None) -> dict:
    """Best sustained FLOP/s of a square ``size``³ GEMM in ``dtype``."""
    dev = _device(device)
    cuda = dev.type == "cuda"
    if dtype == "tf32" and not cuda:
        raise LcprofError("tf32 is a CUDA matmul mode; on the CPU calibrate fp32, bf16, fp16")
    tdt, tf32 = B.torch_dtype(dtype)
    if size is None:
        size = (4096 if quick else 8192) if cuda else (1024 if quick else 2048)
    if budget_s is None:
        budget_s = (0.3 if quick else 1.0) if cuda else (0.5 if quick else 1.5)
    rounds = rounds or (QUICK_ROUNDS if quick else ROUNDS)
    gen = torch.Generator(device=dev).manual_seed(0)
    with tf32_mode(tf32), torch.inference_mode():
        while True:
            pairs = [(torch.randn(size, size, device=dev, generator=gen).to(tdt),
                      torch.randn(size, size, device=dev, generator=gen).to(tdt)) for _ in range(3)]
            c = torch.empty(size, size, device=dev, dtype=tdt)

            def step(ab, c=c):
                torch.matmul(ab[0], ab[1], out=c)  # (size, size) @ (size, size)

            probe = measure(step, pairs, device=dev, budget_s=0.0, warmup_s=0.0, min_warmup=1, min_reps=1,
                            max_reps=1)
            if probe.median_s <= SLOW_CALL_S or size <= 256:
                break
            size //= 2
        flops = 2.0 * size ** 3  # 2 FLOPs per multiply-add
        r = _rounds(step, pairs, flops, device=dev, rounds=rounds, budget_s=budget_s)
    return {"dtype": dtype, "size": size, "flops": flops, "flops_per_s": r["rate"], **r}


def measure_bandwidth(*, device=None, nbytes: int | None = None, quick: bool = False,
                      budget_s: float | None = None, rounds: int | None = None) -> dict:
    """Best sustained bytes/s of a large device-to-device copy, counting read + write (2 x nbytes)."""
    dev = _device(device)
    cuda = dev.type == "cuda"
    if nbytes is None:
        nbytes = (1 << 30 if cuda else 1 << 28) // (4 if quick else 1)
    budget_s = budget_s or (0.5 if quick else 1.0)
    rounds = rounds or (QUICK_ROUNDS if quick else ROUNDS)
    count = nbytes // 4
    src = torch.ones(count, device=dev, dtype=torch.float32)
    dst = torch.empty_like(src)
    moved = 2.0 * count * 4  # read src + write dst
    r = _rounds(lambda _: dst.copy_(src), [None], moved, device=dev, rounds=rounds, budget_s=budget_s)
    return {"bytes": int(moved), "bytes_per_s": r["rate"], **r}


def measure_attention(backend: str, dtype: str, *, device=None, n: int | None = None, quick: bool = False,
                      heads: int = 32, head_dim: int = 128, budget_s: float | None = None,
                      rounds: int | None = None) -> dict:
    """Best sustained executed FLOP/s of one causal attention call of ``backend``: on CUDA the
    tiled kernels of ``ATTENTION_BACKENDS``, on the CPU the backends of ``CPU_ATTENTION_BACKENDS``.

    Raises LcprofError when the backend cannot run here (the caller records the reason).
    """
    from lcprof.cost.masks import executed_pairs_eager, executed_pairs_tiled
    from lcprof.cost.ops import backend_family

    dev = _device(device or "cuda")
    cuda = dev.type == "cuda"
    if not cuda and (backend, dtype) not in CPU_ATTENTION_BACKENDS:
        raise LcprofError(f"attention calibration of {backend} {dtype} needs CUDA "
                          f"(on the CPU: {', '.join(f'{b} {d}' for b, d in CPU_ATTENTION_BACKENDS)})")
    full_n, quick_n = ATTENTION_N["cuda" if cuda else "cpu"]
    n = n or (quick_n if quick else full_n)
    budget_s = budget_s or (0.3 if quick else 1.0)
    rounds = rounds or (QUICK_ROUNDS if quick else 3)
    tdt, _ = B.torch_dtype(dtype)
    gen = torch.Generator(device=dev).manual_seed(0)
    shape = (1, n, heads, head_dim)  # (batch, n, heads, head_dim)
    sets = 3 if 3 * 3 * np.prod(shape) * torch.finfo(tdt).bits // 8 < (1 << 30) else 1
    inputs = [tuple(torch.randn(shape, device=dev, generator=gen).to(tdt) for _ in range(3)) for _ in range(sets)]
    if not cuda:
        fn, mask, scale = B.get_backend(backend), B.AttnMask("global", n, n), B.softmax_scale(head_dim)

        def step(qkv):
            fn(*qkv, mask, scale)  # (batch, n, heads, head_dim) in and out, as the sweep's layer calls it
    elif backend == "striped-ring":
        from lcprof.kernels import striped_attn

        ok, why = striped_attn.is_available()
        if not ok:
            raise LcprofError(f"striped-ring kernel unavailable: {why}")

        def step(qkv):
            striped_attn.striped_block_attention(*qkv, causal=True)
    else:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        kind = {"sdpa-flash": SDPBackend.FLASH_ATTENTION, "sdpa-cudnn": SDPBackend.CUDNN_ATTENTION,
                "sdpa-efficient": SDPBackend.EFFICIENT_ATTENTION}[backend]
        inputs = [tuple(x.transpose(1, 2) for x in qkv) for qkv in inputs]  # (batch, heads, n, head_dim)

        def step(qkv):
            with sdpa_kernel([kind]):
                torch.nn.functional.scaled_dot_product_attention(*qkv, is_causal=True)
    family = backend_family(backend)
    pairs = float(np.asarray(executed_pairs_eager(n) if family == "eager"
                             else executed_pairs_tiled("global", n, 0, None, (128, 128))))
    flops = 4.0 * head_dim * heads * pairs  # QK^T and PV, 2 FLOPs per multiply-add each
    try:
        with torch.inference_mode():
            r = _rounds(step, inputs, flops, device=dev, rounds=rounds, budget_s=budget_s, max_reps=50)
    except RuntimeError as exc:
        raise LcprofError(f"{backend} {dtype} did not run: {str(exc).splitlines()[0]}") from None
    return {"backend": backend, "dtype": dtype, "n": n, "heads": heads, "head_dim": head_dim, "family": family,
            "executed_flops": flops, "flops_per_s": r["rate"], **r}


def _slug(text: str) -> str:
    out = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return out or "device"


def _gpu_key(device_name: str) -> str | None:
    """The GPU database entry a device name is a measurement of (``gpu`` in the profile)."""
    from lcprof.hardware import _db

    name = device_name.lower()
    for key, e in _db()["gpus"].items():
        for cand in [e.get("name", ""), *e.get("device_names", [])]:
            if cand and cand.lower() in name:
                return key
    if "h100" in name:
        return "h100-sxm" if ("hbm3" in name or "sxm" in name) else None
    if "h200" in name:
        return "h200" if "h200" in _db()["gpus"] else None
    return None


def _memory_bytes(dev) -> int:
    if dev.type == "cuda":
        return int(torch.cuda.get_device_properties(dev).total_memory)
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 1 << 34


def calibrate(device: str | None = None, *, quick: bool = False, dtypes=None, key: str | None = None,
              attention_n=None, attention_shape: tuple[int, int] = (32, 128)) -> dict:
    """Measure matmul FLOP/s per dtype, copy bandwidth and attention rates (on causal inputs of
    ``attention_shape`` = (heads, head_dim) at each of ``attention_n``); the profile dict."""
    heads, head_dim = (int(v) for v in attention_shape)
    if heads < 1 or head_dim < 1:
        raise LcprofError(f"attention shape needs positive heads and head_dim, got {attention_shape!r}")
    dev = _device(device)
    cuda = dev.type == "cuda"
    wanted = tuple(dtypes) if dtypes else (GPU_DTYPES if cuda else CPU_DTYPES)
    gemms = {d: measure_matmul(d, device=dev, quick=quick) for d in wanted if cuda or d != "tf32"}
    bw = measure_bandwidth(device=dev, quick=quick)
    full_n, quick_n = ATTENTION_N["cuda" if cuda else "cpu"]
    lengths = [int(x) for x in attention_n] if attention_n else [quick_n if quick else full_n]
    by_n, attention_skipped = {}, {}
    for backend, d in (ATTENTION_BACKENDS if cuda else CPU_ATTENTION_BACKENDS):
        for n in lengths:
            try:
                by_n.setdefault(backend, {}).setdefault(d, {})[n] = measure_attention(backend, d, device=dev,
                                                                                     quick=quick, n=n, heads=heads,
                                                                                     head_dim=head_dim)
            except LcprofError as exc:
                attention_skipped[f"{backend}/{d}/{n}"] = str(exc)
            if cuda:
                torch.cuda.empty_cache()
    by_n = {b: {d: ms for d, ms in v.items() if ms} for b, v in by_n.items()}
    by_n = {b: v for b, v in by_n.items() if v}
    env = environment(dev)
    env["date_utc"] = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    dev_name = env["gpu_name"] if cuda else f"{cpu_model()} ({torch.get_num_threads()} threads)"
    keep = ("size", "flops", "reps", "median_s", "samples_s", "round_rates", "spread", "rounds")
    return {
        "key": key or f"calibrated-{_slug(dev_name)}",
        "name": f"{dev_name} (calibrated)",
        "kind": "calibration",
        "device": dev.type,
        "gpu": _gpu_key(dev_name) if cuda else None,
        "peak_flops_per_s": {d: g["flops_per_s"] for d, g in gemms.items()},
        "hbm_bytes_per_s": bw["bytes_per_s"],
        "memory_bytes": _memory_bytes(dev),
        "attention_flops_per_s": {b: {d: next(iter(ms.values()))["flops_per_s"] for d, ms in v.items()}
                                  for b, v in by_n.items()},
        "attention_flops_per_s_by_n": {b: {d: {str(n): m["flops_per_s"] for n, m in ms.items()} for d, ms in v.items()}
                                       for b, v in by_n.items()},
        "method": {
            "matmul": {d: {k: g[k] for k in keep} for d, g in gemms.items()},
            "bandwidth": {k: bw[k] for k in ("bytes", *keep[2:])},
            "attention": {f"{b}/{d}/{n}": {k: m[k] for k in ("n", "heads", "head_dim", "family", "executed_flops",
                                                                 *keep[2:])}
                          for b, v in by_n.items() for d, ms in v.items() for n, m in ms.items()},
            "attention_skipped": attention_skipped,
            "quick": quick,
            "statistic": "best sustained rate over rounds (work x repetitions / summed repetition time)",
            "timer": "lcprof.measure.timer.measure: " + ("one CUDA event pair per repetition, one synchronize"
                                                         if cuda else "time.perf_counter per repetition"),
        },
        "environment": env,
    }


def read_profile(path) -> dict:
    """The raw JSON of a profile ``lcprof calibrate`` wrote (for ``--keep-best``); one-line errors."""
    try:
        prof = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise LcprofError(f"--keep-best: cannot read the profile {str(path)!r}: {exc}") from None
    if not isinstance(prof, dict) or prof.get("kind") != "calibration":
        raise LcprofError(f"--keep-best: {str(path)!r} is not a profile written by `lcprof calibrate`")
    return prof


def merge_best(old: dict, new: dict) -> dict:
    """One profile from two calibrations of the same device: each rate the higher of the two (a
    shared machine can only slow a measurement down, so the faster one is nearer the ceiling), with
    the method entry (size, repetitions, rounds, spread) of the calibration it came from and when.

    ``old`` and ``new`` must describe the same device (``device``, ``name``); the environment and
    key are the newer one's; ``method.sessions`` lists every calibration merged, oldest first."""
    if (old.get("device"), old.get("name")) != (new.get("device"), new.get("name")):
        raise LcprofError(f"--keep-best: the existing profile is of {old.get('name')!r} ({old.get('device')}), "
                          f"this device is {new.get('name')!r} ({new.get('device')}); choose another --out")
    when_old = (old.get("environment") or {}).get("date_utc")
    when_new = (new.get("environment") or {}).get("date_utc")
    om = old.get("method") or {}
    out = json.loads(json.dumps(new))  # a deep copy
    m = out["method"]

    def stamp(entry, when):
        return dict(entry, measured_utc=entry.get("measured_utc", when))

    for d in list(m.get("matmul") or {}):
        m["matmul"][d] = stamp(m["matmul"][d], when_new)
    for d, rate in (old.get("peak_flops_per_s") or {}).items():
        if rate > out["peak_flops_per_s"].get(d, 0.0):
            out["peak_flops_per_s"][d] = rate
            m["matmul"][d] = stamp(om["matmul"][d], when_old)
    m["bandwidth"] = stamp(m["bandwidth"], when_new)
    if old.get("hbm_bytes_per_s", 0.0) > out["hbm_bytes_per_s"]:
        out["hbm_bytes_per_s"] = old["hbm_bytes_per_s"]
        m["bandwidth"] = stamp(om["bandwidth"], when_old)
    m["attention"] = {k: stamp(v, when_new) for k, v in (m.get("attention") or {}).items()}
    by_n = out.setdefault("attention_flops_per_s_by_n", {})
    for b, per in (old.get("attention_flops_per_s_by_n") or {}).items():
        for d, rates in per.items():
            for n, rate in rates.items():
                if rate > by_n.get(b, {}).get(d, {}).get(n, 0.0):
                    by_n.setdefault(b, {}).setdefault(d, {})[n] = rate
                    m["attention"][f"{b}/{d}/{n}"] = stamp(om["attention"][f"{b}/{d}/{n}"], when_old)
    # the single rate per backend and dtype is the first length's, as calibrate() writes it
    out["attention_flops_per_s"] = {b: {d: rates[min(rates, key=int)] for d, rates in per.items()}
                                    for b, per in by_n.items()}
    m["attention_skipped"] = {k: v for k, v in (m.get("attention_skipped") or {}).items() if k not in m["attention"]}
    m["sessions"] = [*(om.get("sessions") or [when_old]), when_new]
    m["statistic"] = ("best sustained rate over rounds and over the calibrations merged (--keep-best): "
                      "work x repetitions / summed repetition time")
    return out


def save_profile(profile: dict, path) -> Path:
    """Write a profile JSON (creating parent folders); ``load_calibration(path)`` reads it back."""
    p = Path(path)
    if p.exists() and p.is_dir():
        raise LcprofError(f"--out {str(p)!r} is a folder; give a file name such as {str(p / 'profile.json')!r}")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        with open(p, "w") as fh:
            json.dump(profile, fh, indent=1)
            fh.write("\n")
    except OSError as exc:
        raise LcprofError(f"cannot write {str(p)!r}: {exc.strerror or exc}") from None
    return p


def profile_table(profile: dict) -> list[dict]:
    """Flat records for the CLI: one per measured rate, with its rounds' spread."""
    m = profile["method"]
    rows = [{"what": f"matmul {d}", "dtype": d, "rate": v / 1e12, "unit": "TFLOP/s", "size": m["matmul"][d]["size"],
             "reps": m["matmul"][d]["reps"], "spread": m["matmul"][d]["spread"]}
            for d, v in profile["peak_flops_per_s"].items()]
    bw = m["bandwidth"]
    rows.append({"what": "copy bandwidth (read+write)", "dtype": "", "rate": profile["hbm_bytes_per_s"] / 1e9,
                 "unit": "GB/s", "size": bw["bytes"], "reps": bw["reps"], "spread": bw["spread"]})
    rows.append({"what": "memory", "dtype": "", "rate": profile["memory_bytes"] / float(1 << 30), "unit": "GiB",
                 "size": None, "reps": None, "spread": None})
    for k, a in (m.get("attention") or {}).items():
        rows.append({"what": f"attention {k} (causal, executed FLOPs)", "dtype": k.split("/")[1],
                     "rate": profile["attention_flops_per_s_by_n"][k.split("/")[0]][k.split("/")[1]][k.split("/")[2]] / 1e12,
                     "unit": "TFLOP/s", "size": a["n"], "reps": a["reps"], "spread": a["spread"]})
    for k, why in (m.get("attention_skipped") or {}).items():
        rows.append({"what": f"attention {k}: skipped ({why})", "dtype": k.split("/")[1], "rate": None,
                     "unit": "", "size": None, "reps": None, "spread": None})
    return rows
