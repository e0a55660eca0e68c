#!/usr/bin/env python3
"""Benchmark the striped ring attention kernel against torch SDPA (CUDA).

For tokens-per-rank L, head dims, heads 32 with kv_heads 32 and 8, bf16, batch 1:

(a) kernel   one ring step: the diagonal step (r = s) of a striped ring with
             G in {1, 2, 4, 8} (G=1 is plain causal attention) and an
             off-diagonal step (striped r=0, s=1: causal without the diagonal;
             contiguous s < r: no mask, L x L);
(b) sdpa     torch SDPA causal at the same L with the FLASH_ATTENTION and
             CUDNN_ATTENTION backends;
(c) ring     a full ring of G steps, striped vs contiguous: per step the
             slowest rank, summed over the steps.

Useful FLOPs of a call = 4 * head_dim * heads * (allowed (q, k) pairs): two
matmuls, 2 FLOPs per multiply-add, masked pairs not counted. Timing: one CUDA
event pair per call, warm-up, median (and p10/p90) of >= 20 calls. One CSV row
per measurement, flushed as it is written (``--out``), with environment
columns; a summary table goes to stdout.

    PYTHONPATH=. python bench/kernel_bench.py --out results.csv [--quick]
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # repo root: `kernels`, `lcprof`

FIELDS = [
    "model", "backend", "dtype", "device", "batch", "n", "time_s", "time_p10_s", "time_p90_s", "repeats",
    "peak_mem_bytes", "status", "reason", "phase",
    "section", "layout", "step", "G", "r", "s", "heads", "kv_heads", "head_dim", "n_q", "n_k",
    "allowed_pairs", "useful_flops", "tflops_per_s", "variant", "max_abs_diff_vs_sdpa_flash",
    "torch_version", "cuda_version", "gpu_name", "driver_version", "lcprof_version",
]


# ------------------------------------------------------------ counting -----


def key_limits(n_q, n_k, q_offset, q_stride, k_offset, k_stride, causal):
    """Per query row, the largest allowed key index, clipped to [-1, n_k - 1]."""
    i = np.arange(n_q, dtype=np.int64)
    if not causal:
        return np.full(n_q, n_k - 1, dtype=np.int64)
    lim = np.floor_divide(q_offset + i * q_stride - k_offset, k_stride)
    return np.clip(lim, -1, n_k - 1)


def allowed_pairs(n_q, n_k, q_offset=0, q_stride=1, k_offset=0, k_stride=1, causal=True) -> int:
    return int((key_limits(n_q, n_k, q_offset, q_stride, k_offset, k_stride, causal) + 1).sum())


def useful_flops(head_dim, heads, pairs) -> int:
    return 4 * head_dim * heads * pairs  # QK^T and PV, 2 FLOPs per multiply-add


# ---------------------------------------------------------- environment -----


def environment(torch) -> dict:
    env = {
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda or "",
        "gpu_name": torch.cuda.get_device_name(0),
        "driver_version": "",
        "lcprof_version": "",
    }
    try:
        import pynvml

        pynvml.nvmlInit()
        drv = pynvml.nvmlSystemGetDriverVersion()
        env["driver_version"] = drv.decode() if isinstance(drv, bytes) else str(drv)
    except Exception:  # noqa: BLE001 - optional
        try:
            env["driver_version"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=10,
            ).stdout.strip().splitlines()[0]
        except Exception:  # noqa: BLE001
            pass
    try:
        from lcprof._version import __version__

        env["lcprof_version"] = __version__
    except Exception:  # noqa: BLE001
        pass
    return env


# --------------------------------------------------------------- timing -----


def time_cuda(torch, fn, min_reps=20, budget_s=0.5, warmup=3):
    """Per-call times (s) from CUDA event pairs; >= min_reps calls after warm-up."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    est = max(time.perf_counter() - t0, 1e-6)
    reps = int(min(max(min_reps, budget_s / est), 200))
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
    for start, end in events:
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize()
    return np.array([s.elapsed_time(e) * 1e-3 for s, e in events])


class Bench:
    def __init__(self, torch, out_path, env, args):
        self.torch = torch
        self.env = env
        self.args = args
        self.rows = []
        Path(out_path).parent.mkdir(parents=True, exist_ok=True)
        self.fh = open(out_path, "w", newline="")
        self.writer = csv.DictWriter(self.fh, fieldnames=FIELDS)
        self.writer.writeheader()
        self.fh.flush()

    def measure(self, fn, **labels):
        """Time fn and write one row; failures become status oom/error with a reason."""
        torch = self.torch
        row = {k: "" for k in FIELDS}
        row.update(model="attn-block", dtype="bf16", device="cuda", batch=1, phase="prefill", **self.env)
        row.update(labels)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        try:
            samples = time_cuda(torch, fn, min_reps=self.args.reps, budget_s=self.args.budget_s)
            med = float(np.median(samples))
            row.update(
                time_s=med,
                time_p10_s=float(np.percentile(samples, 10)),
                time_p90_s=float(np.percentile(samples, 90)),
                repeats=len(samples),
                peak_mem_bytes=int(torch.cuda.max_memory_allocated()),
                status="ok",
            )
            if row.get("useful_flops") not in ("", None) and med > 0:
                row["tflops_per_s"] = row["useful_flops"] / med / 1e12
        except torch.cuda.OutOfMemoryError as exc:
            row.update(status="oom", reason=str(exc).splitlines()[0][:200])
        except Exception as exc:  # noqa: BLE001 - recorded, never silently NaN
            row.update(status="error", reason=f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}")
        torch.cuda.synchronize()
        self.writer.writerow(row)
        self.fh.flush()
        self.rows.append(row)
        return row

    def close(self):
        self.fh.close()


# ------------------------------------------------------------ sections -----


def check_correctness(torch, fwd):
    """Kernel vs the float64 reference on a small striped case before timing."""
    from kernels.reference import block_attention_reference

    g = torch.Generator(device="cuda").manual_seed(0)
    for head_dim in (96, 128):
        q = torch.randn(1, 333, 8, head_dim, device="cuda", dtype=torch.bfloat16, generator=g)
        k = torch.randn(1, 333, 2, head_dim, device="cuda", dtype=torch.bfloat16, generator=g)
        v = torch.randn(1, 333, 2, head_dim, device="cuda", dtype=torch.bfloat16, generator=g)
        out, lse = fwd(q, k, v, 1, 4, 2, 4, True)
        ref, ref_lse = block_attention_reference(q.double(), k.double(), v.double(), q_offset=1, q_stride=4,
                                                 k_offset=2, k_stride=4, causal=True)
        err = (out.double() - ref).abs().max().item()
        if not err < 2e-2 or not torch.allclose(lse.double(), ref_lse, rtol=1e-3, atol=1e-3):
            raise SystemExit(f"kernel_bench: kernel is wrong (head_dim {head_dim}, max error {err:.3e}); not timing")


def run_shape(bench, torch, ext, L, head_dim, kv_heads, args):
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    heads = args.heads
    g = torch.Generator(device="cuda").manual_seed(L + head_dim + kv_heads)
    q = torch.randn(1, L, heads, head_dim, device="cuda", dtype=torch.bfloat16, generator=g)  # (batch, L, heads, D)
    k = torch.randn(1, L, kv_heads, head_dim, device="cuda", dtype=torch.bfloat16, generator=g)
    v = torch.randn(1, L, kv_heads, head_dim, device="cuda", dtype=torch.bfloat16, generator=g)
    common = dict(n=L, heads=heads, kv_heads=kv_heads, head_dim=head_dim, n_q=L, n_k=L)
    cache = {}  # work class (per-row key limits) -> measured row, shared by the ring section

    def kernel_step(section, layout, step, G, r, s, variant=0, backend="striped_kernel", **extra):
        if layout == "striped":
            qo, qs, ko, ks = r, G, s, G
        else:  # contiguous, L tokens per rank
            qo, qs, ko, ks = r * L, 1, s * L, 1
        lim = key_limits(L, L, qo, qs, ko, ks, True)
        key = (lim.tobytes(), variant)
        pairs = int((lim + 1).sum())
        labels = dict(common, section=section, layout=layout, step=step, G=G, r=r, s=s, backend=backend,
                      variant=variant, allowed_pairs=pairs, useful_flops=useful_flops(head_dim, heads, pairs), **extra)
        if key in cache and section == "ring":
            return cache[key]
        row = bench.measure(lambda: ext.fwd(q, k, v, qo, qs, ko, ks, True, None, variant), **labels)
        cache[key] = row
        return row

    # (b) SDPA causal, flash and cuDNN. (batch, heads, L, D) views, no copies.
    qt, kt, vt = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    causal_pairs = allowed_pairs(L, L)
    flash_out = None
    for name, backend in (("sdpa_flash", SDPBackend.FLASH_ATTENTION), ("sdpa_cudnn", SDPBackend.CUDNN_ATTENTION)):
        gqa_args = {}
        kk, vv, reason = kt, vt, ""
        if kv_heads != heads:
            gqa_args = {"enable_gqa": True}
            try:
                with sdpa_kernel(backend):
                    F.scaled_dot_product_attention(qt, kt, vt, is_causal=True, **gqa_args)
            except Exception:  # noqa: BLE001 - backend lacks GQA: expand K/V instead
                gqa_args = {}
                kk = kt.repeat_interleave(heads // kv_heads, dim=1)
                vv = vt.repeat_interleave(heads // kv_heads, dim=1)
                reason = "kv heads expanded (backend has no enable_gqa)"

        def sdpa(backend=backend, kk=kk, vv=vv, gqa_args=gqa_args):
            with sdpa_kernel(backend):
                return F.scaled_dot_product_attention(qt, kk, vv, is_causal=True, **gqa_args)

        row = bench.measure(sdpa, **common, section="sdpa", layout="causal", step="diag", G=1, r=0, s=0,
                            backend=name, allowed_pairs=causal_pairs, reason=reason,
                            useful_flops=useful_flops(head_dim, heads, causal_pairs))
        if name == "sdpa_flash" and row["status"] == "ok":
            flash_out = sdpa().transpose(1, 2)  # (batch, L, heads, D)
        del kk, vv

    # (a) kernel steps.
    for variant in args.variants:
        backend = "striped_kernel" if variant == 0 else f"striped_kernel_v{variant}"
        for G in args.groups if variant == 0 else [1]:  # tuning variants: plain causal step only
            extra = {}
            if G == 1 and flash_out is not None:  # check before timing: same causal attention as SDPA flash
                out, _ = ext.fwd(q, k, v, 0, 1, 0, 1, True, None, variant)
                extra["max_abs_diff_vs_sdpa_flash"] = (out.float() - flash_out.float()).abs().max().item()
                del out
            kernel_step("kernel", "striped", "diag", G, 0, 0, variant, backend, **extra)
        if variant == 0:
            kernel_step("kernel", "striped", "offdiag", max(2, max(args.groups)), 0, 1, variant, backend)
            kernel_step("kernel", "contiguous", "offdiag", 2, 1, 0, variant, backend)

    # (c) full rings: per step the slowest rank, summed over steps.
    for G in args.ring_groups:
        ring = {}
        for layout in ("striped", "contiguous"):
            total_s, ok = 0.0, True
            for t in range(G):
                worst = 0.0
                for r in range(G):
                    s = (r - t) % G  # the K/V block rank r holds at step t
                    row = kernel_step("ring", layout, "diag" if s == r else "offdiag", G, r, s)
                    if row["status"] != "ok":
                        ok = False
                        break
                    worst = max(worst, row["time_s"])
                if not ok:
                    break
                total_s += worst
            # per-GPU share of the global causal attention over N = G * L tokens
            pairs = G * L * (G * L + 1) // 2 // G
            row = {k: "" for k in FIELDS}
            row.update(model="attn-block", dtype="bf16", device="cuda", batch=1, phase="prefill", **bench.env)
            row.update(common, section="ring_total", layout=layout, step="all", G=G, backend="striped_kernel",
                       variant=0, allowed_pairs=pairs, useful_flops=useful_flops(head_dim, heads, pairs),
                       repeats=args.reps)
            if ok:
                row.update(time_s=total_s, status="ok", tflops_per_s=row["useful_flops"] / total_s / 1e12)
            else:
                row.update(status="error", reason="a step failed")
            bench.writer.writerow(row)
            bench.fh.flush()
            bench.rows.append(row)
            ring[layout] = row
    del q, k, v, qt, kt, vt, flash_out
    torch.cuda.empty_cache()


# -------------------------------------------------------------- summary -----


def summarize(rows, args):
    def get(**kw):
        for r in rows:
            if all(str(r.get(k)) == str(v) for k, v in kw.items()) and r["status"] == "ok":
                return r
        return None

    def tf(r):
        return f"{r['tflops_per_s']:.1f}" if r and r.get("tflops_per_s") not in ("", None) else "-"

    print("\nPer-step throughput, useful TFLOP/s (bf16, heads %d)" % args.heads)
    hdr = ["L", "D", "kvh", "kernel diag G=1"] + [f"G={G}" for G in args.groups if G != 1] + [
        "offdiag strp", "offdiag contig", "sdpa flash", "sdpa cudnn", "kernel/flash"]
    lines = [hdr]
    for L in args.lengths:
        for D in args.head_dims:
            for kvh in args.kv_heads:
                base = dict(n=L, head_dim=D, kv_heads=kvh)
                k1 = get(**base, section="kernel", layout="striped", step="diag", G=1, backend="striped_kernel")
                flash = get(**base, section="sdpa", backend="sdpa_flash")
                cudnn = get(**base, section="sdpa", backend="sdpa_cudnn")
                line = [L, D, kvh, tf(k1)]
                for G in args.groups:
                    if G != 1:
                        line.append(tf(get(**base, section="kernel", layout="striped", step="diag", G=G,
                                           backend="striped_kernel")))
                line.append(tf(get(**base, section="kernel", layout="striped", step="offdiag",
                                   backend="striped_kernel")))
                line.append(tf(get(**base, section="kernel", layout="contiguous", step="offdiag",
                                   backend="striped_kernel")))
                line += [tf(flash), tf(cudnn)]
                ratio = (flash["time_s"] / k1["time_s"]) if (k1 and flash) else None
                line.append(f"{ratio:.2f}" if ratio else "-")
                lines.append(line)
    _print_table(lines)

    if len(args.variants) > 1:
        print("\nTile variants, diagonal step G=1, useful TFLOP/s")
        lines = [["L", "D", "kvh"] + [f"v{v}" for v in args.variants]]
        for L in args.lengths:
            for D in args.head_dims:
                for kvh in args.kv_heads:
                    line = [L, D, kvh]
                    for v in args.variants:
                        be = "striped_kernel" if v == 0 else f"striped_kernel_v{v}"
                        line.append(tf(get(n=L, head_dim=D, kv_heads=kvh, section="kernel", step="diag", G=1,
                                           backend=be)))
                    lines.append(line)
        _print_table(lines)

    if args.ring_groups:
        print("\nFull ring (sum over steps of the slowest rank), ms; per-GPU useful TFLOP/s")
        lines = [["L", "D", "kvh", "G", "striped ms", "contig ms", "contig/striped", "striped TF/s"]]
        for L in args.lengths:
            for D in args.head_dims:
                for kvh in args.kv_heads:
                    for G in args.ring_groups:
                        base = dict(n=L, head_dim=D, kv_heads=kvh, section="ring_total", G=G)
                        st, ct = get(**base, layout="striped"), get(**base, layout="contiguous")
                        if st and ct:
                            lines.append([L, D, kvh, G, f"{st['time_s'] * 1e3:.2f}", f"{ct['time_s'] * 1e3:.2f}",
                                          f"{ct['time_s'] / st['time_s']:.2f}", tf(st)])
        _print_table(lines)


def _print_table(lines):
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(lines[0]))]
    for line in lines:
        print("  ".join(str(c).rjust(w) for c, w in zip(line, widths)))


# ----------------------------------------------------------------- main -----


def _ints(text):
    return [int(x) for x in text.split(",") if x.strip()]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="CSV results file (one row per measurement)")
    ap.add_argument("--quick", action="store_true", help="about a minute: L 4k and 16k, G 1 and 4, ring G=4")
    ap.add_argument("--lengths", type=_ints, default=None, help="tokens per rank, e.g. 4096,8192")
    ap.add_argument("--head-dims", type=_ints, default=None)
    ap.add_argument("--kv-heads", type=_ints, default=None)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--groups", type=_ints, default=None, help="striped G for the diagonal step")
    ap.add_argument("--ring-groups", type=_ints, default=None, help="G of the full-ring comparison")
    ap.add_argument("--variants", type=_ints, default=[0], help="kernel tile variants to time (0 = default)")
    ap.add_argument("--reps", type=int, default=20, help="minimum timed calls per point")
    ap.add_argument("--budget-s", type=float, default=0.5, help="timed seconds per point (more reps if fast)")
    args = ap.parse_args(argv)

    quick = args.quick
    args.lengths = args.lengths or ([4096, 16384] if quick else [4096, 8192, 16384, 32768])
    args.head_dims = args.head_dims or [128, 96]
    args.kv_heads = args.kv_heads or [32, 8]
    args.groups = args.groups or ([1, 4] if quick else [1, 2, 4, 8])
    args.ring_groups = args.ring_groups if args.ring_groups is not None else ([4] if quick else [2, 4, 8])
    if quick:
        args.budget_s = min(args.budget_s, 0.2)

    import torch

    if not torch.cuda.is_available():
        print("kernel_bench: no CUDA device; nothing to measure", file=sys.stderr)
        return 2
    from kernels.striped_attn import is_available, load

    ok, reason = is_available()
    if not ok:
        print(f"kernel_bench: kernel unavailable: {reason}", file=sys.stderr)
        return 2
    ext = load()
    check_correctness(torch, lambda *a: ext.fwd(*a, None, 0))

    env = environment(torch)
    bench = Bench(torch, args.out, env, args)
    print(f"kernel_bench: {env['gpu_name']}, torch {env['torch_version']}, CUDA {env['cuda_version']}, "
          f"driver {env['driver_version']} -> {args.out}", flush=True)
    t0 = time.perf_counter()
    try:
        for L in args.lengths:
            for D in args.head_dims:
                for kvh in args.kv_heads:
                    run_shape(bench, torch, ext, L, D, kvh, args)
                    print(f"  L={L} D={D} kv_heads={kvh} done ({time.perf_counter() - t0:.0f} s)", flush=True)
    finally:
        bench.close()
    summarize(bench.rows, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
