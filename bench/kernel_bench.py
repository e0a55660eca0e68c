#!/usr/bin/env python3
"""Benchmark the striped ring attention kernel against torch SDPA and the composed baseline (CUDA).

For tokens-per-rank L, head dims, heads 32 with kv_heads 32 and 8, bf16, batch 1:

(a) kernel   one ring step through each implementation (``--impls``): the
             diagonal step (r = s) of a striped ring with G in {1, 2, 4, 8}
             (G=1 is plain causal attention) and an off-diagonal step
             (striped r=0, s=1: causal without the diagonal, the strict mask;
             contiguous s < r: no mask, L x L). Implementations:
               striped_kernel          our kernel, sm80 path (mma.sync)
               striped_kernel_sm90     our kernel, Hopper path (TMA + wgmma),
                                       its default pipeline; _v1/_v2/_v3 with
                                       ``--sm90-variants``
               composed_flash/_cudnn/_efficient
                                       the step through aten's fused op that
                                       returns the LSE (lcprof.ring.composed)
(b) sdpa     torch SDPA causal at the same L with the FLASH_ATTENTION and
             CUDNN_ATTENTION backends;
(c) ring     a full ring of G steps, per implementation (striped; the sm80
             kernel also contiguous): per step the slowest rank, summed over
             the steps (the LSE merges, the same for every implementation, are
             not included).

Useful FLOPs of a call = 4 * head_dim * heads * (allowed (q, k) pairs): two
matmuls, 2 FLOPs per multiply-add, masked pairs not counted. Timing: one CUDA
event pair per call, warm-up, median (and p10/p90) of >= 20 calls. One CSV row
per measurement, flushed as it is written (``--out``), with environment
columns; a summary table goes to stdout.

Every implementation is checked against the float64 reference on a small striped case
before anything is timed; one that fails is recorded as ``status=error`` and not timed.

    PYTHONPATH=. python bench/kernel_bench.py --out results.csv [--quick | --issue17]
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
        "gpu_name": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "",
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


def time_cpu(torch, fn, min_reps=20, budget_s=0.5, warmup=1):
    """Per-call wall times (s) on the CPU (the smoke run of this script); same contract."""
    for _ in range(warmup):
        fn()
    t0 = time.perf_counter()
    fn()
    est = max(time.perf_counter() - t0, 1e-6)
    reps = int(min(max(min_reps, budget_s / est), 200))
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return np.array(samples)


class Bench:
    def __init__(self, torch, out_path, env, args):
        self.torch = torch
        self.env = env
        self.args = args
        self.cuda = args.device == "cuda"
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
        row.update(model="attn-block", dtype="bf16", device=self.args.device, batch=1, phase="prefill", **self.env)
        row.update(labels)
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        timer = time_cuda if self.cuda else time_cpu
        try:
            samples = timer(torch, fn, min_reps=self.args.reps, budget_s=self.args.budget_s)
            med = float(np.median(samples))
            row.update(
                time_s=med,
                time_p10_s=float(np.percentile(samples, 10)),
                time_p90_s=float(np.percentile(samples, 90)),
                repeats=len(samples),
                peak_mem_bytes=int(torch.cuda.max_memory_allocated()) if self.cuda else "",
                status="ok",
            )
            if row.get("useful_flops") not in ("", None) and med > 0:
                row["tflops_per_s"] = row["useful_flops"] / med / 1e12
        except torch.cuda.OutOfMemoryError as exc:
            row.update(status="oom", reason=str(exc).splitlines()[0][:200])
        except Exception as exc:  # noqa: BLE001 - recorded, never silently NaN
            row.update(status="error", reason=f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}")
        if self.cuda:
            torch.cuda.synchronize()
        self.writer.writerow(row)
        self.fh.flush()
        self.rows.append(row)
        return row

    def close(self):
        self.fh.close()


# -------------------------------------------------------- implementations -----

KERNEL_SM80 = "striped_kernel"
KERNEL_SM90 = "striped_kernel_sm90"
COMPOSED = ("composed_flash", "composed_cudnn", "composed_efficient")


def build_impls(torch, ext, args):
    """{backend name: (step function or None, reason)}; a step function is
    fn(q, k, v, q_offset, q_stride, k_offset, k_stride) -> (out, lse)."""
    impls = {}
    if ext is None:  # the CPU smoke run: no kernel
        impls[KERNEL_SM80] = (None, "our kernel needs a CUDA device")
        impls[KERNEL_SM90] = (None, "our kernel needs a CUDA device")
    for variant in (args.variants if ext is not None else []):
        name = KERNEL_SM80 if variant == 0 else f"{KERNEL_SM80}_v{variant}"
        impls[name] = (lambda q, k, v, qo, qs, ko, ks, _v=variant: ext.fwd(q, k, v, qo, qs, ko, ks, True, None, _v), "")
    if ext is None:
        pass
    elif not args.sm90_variants:
        impls[KERNEL_SM90] = (None, "sm90 path not timed (--sm90-variants is empty)")
    elif ext.sm90_supported():
        for variant in args.sm90_variants:
            name = KERNEL_SM90 if variant == 0 else f"{KERNEL_SM90}_v{variant}"
            impls[name] = (lambda q, k, v, qo, qs, ko, ks, _v=variant:
                           ext.fwd_sm90(q, k, v, qo, qs, ko, ks, True, None, _v), "")
    else:
        impls[KERNEL_SM90] = (None, "sm90 path needs a compute capability 9.0 device")
    from lcprof.ring.composed import composed_block_attention, op_status

    for name in args.composed:
        op = name.split("_", 1)[1]
        ok, reason = op_status(op, args.device, torch.bfloat16)
        if not ok:
            impls[name] = (None, reason)
            continue
        impls[name] = (lambda q, k, v, qo, qs, ko, ks, _op=op: composed_block_attention(
            q, k, v, q_offset=qo, q_stride=qs, k_offset=ko, k_stride=ks, op=_op), "")
    return impls


def check_correctness(torch, impls, device="cuda"):
    """Each implementation vs the float64 reference on small striped and causal cases before
    timing; a failing one is replaced by (None, reason) and recorded, never timed."""
    from lcprof.kernels.reference import block_attention_reference

    g = torch.Generator(device=device).manual_seed(0)
    cases = []
    for head_dim in (96, 128):
        q = torch.randn(1, 333, 8, head_dim, device=device, dtype=torch.bfloat16, generator=g)
        k = torch.randn(1, 333, 2, head_dim, device=device, dtype=torch.bfloat16, generator=g)
        v = torch.randn(1, 333, 2, head_dim, device=device, dtype=torch.bfloat16, generator=g)
        for pos in ((1, 4, 2, 4), (2, 4, 1, 4), (0, 1, 0, 1)):
            ref, ref_lse = block_attention_reference(q.double(), k.double(), v.double(), q_offset=pos[0],
                                                     q_stride=pos[1], k_offset=pos[2], k_stride=pos[3], causal=True)
            cases.append((q, k, v, pos, ref, ref_lse))
    checked = {}
    for name, (fn, reason) in impls.items():
        if fn is None:
            checked[name] = (fn, reason)
            continue
        why = ""
        try:
            for q, k, v, pos, ref, ref_lse in cases:
                out, lse = fn(q, k, v, *pos)
                if device == "cuda":
                    torch.cuda.synchronize()
                err = (out.double() - ref).abs().max().item()
                finite = torch.isfinite(ref_lse)
                lse_ok = (torch.equal(torch.isfinite(lse), finite)
                          and torch.allclose(lse.double()[finite], ref_lse[finite], rtol=1e-3, atol=1e-3))
                if not err < 2e-2 or not lse_ok:
                    why = f"{FAILED_CHECK} (D={q.shape[-1]}, positions {pos}, max error {err:.3e})"
                    break
        except Exception as exc:  # noqa: BLE001 - recorded as the reason
            why = f"{FAILED_CHECK}: {type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
        checked[name] = (None, why) if why else (fn, "")
        print(f"  check {name}: {'ok' if not why else why}", flush=True)
    return checked


FAILED_CHECK = "failed the correctness check"


def _status(reason: str) -> str:
    """``error`` for an implementation that failed its check or a step, ``skipped`` for one that
    cannot run here (recorded with its reason, never as NaN)."""
    return "skipped" if reason and not reason.startswith(FAILED_CHECK) and "Error" not in reason else "error"


# ------------------------------------------------------------ sections -----


def _row(bench, **labels):
    row = {k: "" for k in FIELDS}
    row.update(model="attn-block", dtype="bf16", device=bench.args.device, batch=1, phase="prefill", **bench.env)
    row.update(labels)
    return row


def _write(bench, row):
    bench.writer.writerow(row)
    bench.fh.flush()
    bench.rows.append(row)
    return row


def run_shape(bench, torch, impls, L, head_dim, kv_heads, args):
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    heads, dev = args.heads, args.device
    g = torch.Generator(device=dev).manual_seed(L + head_dim + kv_heads)
    q = torch.randn(1, L, heads, head_dim, device=dev, dtype=torch.bfloat16, generator=g)  # (batch, L, heads, D)
    k = torch.randn(1, L, kv_heads, head_dim, device=dev, dtype=torch.bfloat16, generator=g)
    v = torch.randn(1, L, kv_heads, head_dim, device=dev, dtype=torch.bfloat16, generator=g)
    common = dict(n=L, heads=heads, kv_heads=kv_heads, head_dim=head_dim, n_q=L, n_k=L)
    cache = {}  # (backend, work class = per-row key limits) -> measured row, shared by the ring section

    def step(backend, section, layout, step_kind, G, r, s, **extra):
        if layout == "striped":
            qo, qs, ko, ks = r, G, s, G
        else:  # contiguous, L tokens per rank
            qo, qs, ko, ks = r * L, 1, s * L, 1
        lim = key_limits(L, L, qo, qs, ko, ks, True)
        key = (backend, lim.tobytes())
        pairs = int((lim + 1).sum())
        labels = dict(common, section=section, layout=layout, step=step_kind, G=G, r=r, s=s, backend=backend,
                      variant=backend.rsplit("_v", 1)[1] if "_v" in backend else 0, allowed_pairs=pairs,
                      useful_flops=useful_flops(head_dim, heads, pairs), **extra)
        if key in cache and section == "ring":
            return cache[key]
        fn, reason = impls[backend]
        if fn is None:
            row = _write(bench, _row(bench, **labels, status=_status(reason), reason=reason))
        else:
            row = bench.measure(lambda: fn(q, k, v, qo, qs, ko, ks), **labels)
        cache.setdefault(key, row)  # the ring uses the first measurement of a work class
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

    # (a) ring steps, every implementation.
    for backend, (fn, _) in impls.items():
        tuning = backend.rsplit("_v", 1)[-1].isdigit() and "_v" in backend
        for G in ([1] if tuning else args.groups):  # tuning variants: plain causal step only
            extra = {}
            if G == 1 and flash_out is not None and fn is not None:  # same causal attention as SDPA flash
                out, _ = fn(q, k, v, 0, 1, 0, 1)
                extra["max_abs_diff_vs_sdpa_flash"] = (out.float() - flash_out.float()).abs().max().item()
                del out
            step(backend, "kernel", "striped", "diag", G, 0, 0, **extra)
        if not tuning:
            step(backend, "kernel", "striped", "offdiag", max(2, max(args.groups)), 0, 1)
            if backend == KERNEL_SM80:
                step(backend, "kernel", "contiguous", "offdiag", 2, 1, 0)

    # (c) full rings: per step the slowest rank, summed over steps.
    ring_backends = [b for b in impls if not ("_v" in b and b.rsplit("_v", 1)[-1].isdigit())]
    for backend in ring_backends:
        for G in args.ring_groups:
            for layout in (("striped", "contiguous") if backend == KERNEL_SM80 else ("striped",)):
                total_s, ok, why, bad = 0.0, True, "", ""
                for t in range(G):
                    worst = 0.0
                    for r in range(G):
                        s = (r - t) % G  # the K/V block rank r holds at step t
                        row = step(backend, "ring", layout, "diag" if s == r else "offdiag", G, r, s)
                        if row["status"] != "ok":
                            ok, why, bad = False, row.get("reason") or "a step failed", row["status"]
                            break
                        worst = max(worst, row["time_s"])
                    if not ok:
                        break
                    total_s += worst
                # per-GPU share of the global causal attention over N = G * L tokens
                pairs = G * L * (G * L + 1) // 2 // G
                row = _row(bench, **common, section="ring_total", layout=layout, step="all", G=G, backend=backend,
                           variant=0, allowed_pairs=pairs, useful_flops=useful_flops(head_dim, heads, pairs),
                           repeats=args.reps)
                if ok:
                    row.update(time_s=total_s, status="ok", tflops_per_s=row["useful_flops"] / total_s / 1e12)
                else:
                    row.update(status=bad, reason=why)
                _write(bench, row)
    del q, k, v, qt, kt, vt, flash_out
    if args.device == "cuda":
        torch.cuda.empty_cache()


# -------------------------------------------------------------- summary -----


def summarize(rows, args, backends):
    def get(**kw):
        for r in rows:
            if all(str(r.get(k)) == str(v) for k, v in kw.items()) and r["status"] == "ok":
                return r
        return None

    def tf(r):
        return f"{r['tflops_per_s']:.1f}" if r and r.get("tflops_per_s") not in ("", None) else "-"

    steppers = [b for b in backends if not ("_v" in b and b.rsplit("_v", 1)[-1].isdigit())]
    print("\nRing step, causal (the diagonal step G=1), useful TFLOP/s (bf16, heads %d)" % args.heads)
    lines = [["L", "D", "kvh", "sdpa_flash", "sdpa_cudnn"] + steppers + ["sm90/flash", "sm90/cudnn", "sm90/sm80"]]
    for L in args.lengths:
        for D in args.head_dims:
            for kvh in args.kv_heads:
                base = dict(n=L, head_dim=D, kv_heads=kvh)
                flash = get(**base, section="sdpa", backend="sdpa_flash")
                cudnn = get(**base, section="sdpa", backend="sdpa_cudnn")
                line = [L, D, kvh, tf(flash), tf(cudnn)]
                found = {}
                for b in steppers:
                    found[b] = get(**base, section="kernel", layout="striped", step="diag", G=1, backend=b)
                    line.append(tf(found[b]))
                sm90, sm80 = found.get(KERNEL_SM90), found.get(KERNEL_SM80)
                for other in (flash, cudnn, sm80):
                    line.append(f"{other['time_s'] / sm90['time_s']:.2f}" if (sm90 and other) else "-")
                lines.append(line)
    _print_table(lines)

    print("\nRing step, strict mask (striped s > r), useful TFLOP/s")
    lines = [["L", "D", "kvh"] + steppers]
    for L in args.lengths:
        for D in args.head_dims:
            for kvh in args.kv_heads:
                base = dict(n=L, head_dim=D, kv_heads=kvh, section="kernel", layout="striped", step="offdiag")
                lines.append([L, D, kvh] + [tf(get(**base, backend=b)) for b in steppers])
    _print_table(lines)

    tuning = [b for b in backends if b not in steppers]
    if tuning:
        print("\nTuning variants, diagonal step G=1, useful TFLOP/s")
        lines = [["L", "D", "kvh"] + tuning]
        for L in args.lengths:
            for D in args.head_dims:
                for kvh in args.kv_heads:
                    lines.append([L, D, kvh] + [tf(get(n=L, head_dim=D, kv_heads=kvh, section="kernel", step="diag",
                                                        G=1, backend=b)) for b in tuning])
        _print_table(lines)

    if args.ring_groups:
        print("\nFull striped ring (sum over steps of the slowest rank), ms")
        lines = [["L", "D", "kvh", "G"] + steppers + ["sm90 vs best composed"]]
        for L in args.lengths:
            for D in args.head_dims:
                for kvh in args.kv_heads:
                    for G in args.ring_groups:
                        base = dict(n=L, head_dim=D, kv_heads=kvh, section="ring_total", G=G, layout="striped")
                        got = {b: get(**base, backend=b) for b in steppers}
                        line = [L, D, kvh, G] + [f"{got[b]['time_s'] * 1e3:.2f}" if got[b] else "-" for b in steppers]
                        comp = [got[b]["time_s"] for b in COMPOSED if got.get(b)]
                        sm90 = got.get(KERNEL_SM90)
                        line.append(f"{min(comp) / sm90['time_s']:.2f}x" if (comp and sm90) else "-")
                        lines.append(line)
        _print_table(lines)
        lines = [["L", "D", "kvh", "G", "sm80 striped ms", "sm80 contig ms", "contig/striped"]]
        for L in args.lengths:
            for D in args.head_dims:
                for kvh in args.kv_heads:
                    for G in args.ring_groups:
                        base = dict(n=L, head_dim=D, kv_heads=kvh, section="ring_total", G=G, backend=KERNEL_SM80)
                        st, ct = get(**base, layout="striped"), get(**base, layout="contiguous")
                        if st and ct:
                            lines.append([L, D, kvh, G, f"{st['time_s'] * 1e3:.2f}", f"{ct['time_s'] * 1e3:.2f}",
                                          f"{ct['time_s'] / st['time_s']:.2f}"])
        if len(lines) > 1:
            print("\nStriped vs contiguous layout, sm80 kernel")
            _print_table(lines)


def _print_table(lines):
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(lines[0]))]
    for line in lines:
        print("  ".join(str(c).rjust(w) for c, w in zip(line, widths)))


# ----------------------------------------------------------------- main -----


def _ints(text):
    return [int(x) for x in text.split(",") if x.strip()]


def _names(text):
    return [x.strip() for x in text.split(",") if x.strip()]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="CSV results file (one row per measurement)")
    ap.add_argument("--quick", action="store_true", help="about a minute: L 4k and 16k, G 1 and 4, ring G=4")
    ap.add_argument("--issue17", action="store_true",
                    help="issue 17's table: D=128, L 8k/16k/32k, kv_heads 32 and 8, G 1 and 8 per step, rings G=2,4,8")
    ap.add_argument("--lengths", type=_ints, default=None, help="tokens per rank, e.g. 4096,8192")
    ap.add_argument("--head-dims", type=_ints, default=None)
    ap.add_argument("--kv-heads", type=_ints, default=None)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--groups", type=_ints, default=None, help="striped G for the diagonal step")
    ap.add_argument("--ring-groups", type=_ints, default=None, help="G of the full-ring comparison")
    ap.add_argument("--variants", type=_ints, default=[0], help="sm80 tile variants to time (0 = default)")
    ap.add_argument("--sm90-variants", type=_ints, default=[0],
                    help="sm90 pipelines to time (0 = default, 1 serial, 2 overlapped, 3 + ping-pong; '' = none)")
    ap.add_argument("--composed", type=_names, default=list(COMPOSED),
                    help="composed baselines to time (composed_flash, composed_cudnn, composed_efficient)")
    ap.add_argument("--reps", type=int, default=20, help="minimum timed calls per point")
    ap.add_argument("--budget-s", type=float, default=0.5, help="timed seconds per point (more reps if fast)")
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                    help="cpu: a smoke run of this script (composed_flash and SDPA only; the tests use it)")
    args = ap.parse_args(argv)
    unknown = [c for c in args.composed if c not in COMPOSED]
    if unknown:
        ap.error(f"unknown composed baseline(s) {', '.join(unknown)}; expected {', '.join(COMPOSED)}")

    quick = args.quick
    if args.issue17:
        args.lengths = args.lengths or [8192, 16384, 32768]
        args.head_dims = args.head_dims or [128]
        args.groups = args.groups or [1, 8]
        args.ring_groups = args.ring_groups if args.ring_groups is not None else [2, 4, 8]
        args.budget_s = min(args.budget_s, 0.25)
    args.lengths = args.lengths or ([4096, 16384] if quick else [4096, 8192, 16384, 32768])
    args.head_dims = args.head_dims or [128, 96]
    args.kv_heads = args.kv_heads or [32, 8]
    args.groups = args.groups or ([1, 4] if quick else [1, 2, 4, 8])
    args.ring_groups = args.ring_groups if args.ring_groups is not None else ([4] if quick else [2, 4, 8])
    if quick:
        args.budget_s = min(args.budget_s, 0.2)

    import torch

    ext = None
    if args.device == "cuda":
        if not torch.cuda.is_available():
            print("kernel_bench: no CUDA device; nothing to measure (--device cpu for a smoke run)", file=sys.stderr)
            return 2
        from lcprof.kernels.striped_attn import is_available, load

        ok, reason = is_available()
        if not ok:
            print(f"kernel_bench: kernel unavailable: {reason}", file=sys.stderr)
            return 2
        ext = load()
    impls = check_correctness(torch, build_impls(torch, ext, args), args.device)

    env = environment(torch)
    bench = Bench(torch, args.out, env, args)
    print(f"kernel_bench: {env['gpu_name']}, torch {env['torch_version']}, CUDA {env['cuda_version']}, "
          f"driver {env['driver_version']} -> {args.out}", flush=True)
    t0 = time.perf_counter()
    try:
        for L in args.lengths:
            for D in args.head_dims:
                for kvh in args.kv_heads:
                    run_shape(bench, torch, impls, L, D, kvh, args)
                    print(f"  L={L} D={D} kv_heads={kvh} done ({time.perf_counter() - t0:.0f} s)", flush=True)
    finally:
        bench.close()
    summarize(bench.rows, args, list(impls))
    return 0


if __name__ == "__main__":
    sys.exit(main())
