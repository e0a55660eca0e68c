"""Measuring commands: ``lcprof backends`` and ``lcprof sweep``.

Thin click commands registered by ``lcprof.cli`` (it reads ``COMMANDS``). torch is imported only
inside the command functions, so ``import lcprof.cli`` stays analytic and fast. Library functions:
:func:`lcprof.measure.api.backends_frame`, :func:`lcprof.measure.sweep.run_sweep`.
"""

from __future__ import annotations

import click

from lcprof.cli.options import (FORMAT_OPTION, FiniteFloat, batch_option, model_option, reps_options, seed_option,
                                with_options)
from lcprof.errors import LcprofError
from lcprof.units import parse_bytes


@click.command()
@click.option("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available, else cpu).")
@click.option("--dtype", "dtypes", default="fp32,bf16", show_default=True, help="Comma-separated dtypes to probe.")
@FORMAT_OPTION
def backends(device, dtypes, fmt):
    """List every attention backend: available on this machine or not, and why."""
    from lcprof.measure.api import backends_frame  # imports torch
    from lcprof.render import render

    df = backends_frame(device, dtypes)
    if fmt == "table":
        df = df[["backend", "dtype", "device", "available", "family", "native_masks", "reason"]]
    click.echo(render(df, fmt))


_SUMMARY = ["backend", "dtype", "n", "phase", "status", "time_s", "time_p10_s", "time_p90_s", "repeats",
            "achieved_flops_per_s", "peak_mem_bytes", "reason"]


@click.command()
@model_option()
@click.option("--n", "n", required=True, help="Token counts: 4096, 4k,8k or a doubling range 128..131072.")
@click.option("--backends", "backend_list", default=None,
              help="Comma-separated backends (see `lcprof backends`). Default: eager,sdpa for an attention layer, "
                   "torch for a linear-time mixer (Mamba, Gated DeltaNet...) or MLP-only layer.")
@click.option("--dtype", "dtypes", default="fp32", show_default=True, help="Comma-separated: fp32, tf32, bf16, fp16.")
@click.option("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available, else cpu).")
@click.option("--phase", type=click.Choice(["prefill", "decode"]), default="prefill", show_default=True,
              help="decode: one step of query length 1 against a cache of n tokens.")
@batch_option()
@click.option("--layer", "layer_idx", default=0, show_default=True, type=click.IntRange(min=0),
              help="Which layer of the model (its kind: attention, Mamba/Mamba-2/Gated DeltaNet, MLP only; window, MoE).")
@click.option("--budget-s", default=1.0, show_default=True, type=FiniteFloat(min=0.0, max=1e6),
              help="Seconds of timed repetitions per point (warm-up adds 10%).")
@with_options(reps_options())
@click.option("--mem-cap", default=None, help="Memory budget in bytes (8e9, 8GiB): points predicted above it are skipped. "
              "Default: the device's free memory.")
@click.option("--ranks", default=1, show_default=True, type=click.IntRange(min=1), help="striped-ring: simulated ranks.")
@click.option("--mla-form", type=click.Choice(["naive", "absorbed"]), default=None,
              help="MLA models: naive (default for prefill) or weight-absorbed (default for decode).")
@click.option("--flush-l2", is_flag=True, help="CUDA: zero a 256 MiB buffer before every timed call.")
@click.option("--cuda-graph", is_flag=True,
              help="CUDA: capture each call in a CUDA graph and time its replays (no Python/dispatch overhead; "
                   "what serving engines do for decode).")
@click.option("--moe-timing", type=click.Choice(["dense-equivalent", "routed"]), default="dense-equivalent",
              show_default=True, help="MoE layers: one MLP of the active width, or real top-k routing over every expert.")
@seed_option()
@click.option("--max-attempts", default=3, show_default=True, type=click.IntRange(min=1),
              help="Timings of a point that breaks its trend or whose environment changed, at most (1: never re-measure).")
@click.option("--calibration", default=None, metavar="PROFILE.json",
              help="Rates for the expected duration said before the sweep (a profile from `lcprof calibrate`).")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Results CSV, written row by row.")
@click.option("--resume", is_flag=True, help="Keep the rows already in --out (ok/oom/skipped) and run the rest.")
@FORMAT_OPTION
def sweep(model, n, backend_list, dtypes, device, phase, batch, layer_idx, budget_s, min_reps, max_reps, mem_cap,
          ranks, mla_form, flush_l2, cuda_graph, moe_timing, seed, max_attempts, calibration, out, resume, fmt):
    """Time one layer over lengths, backends and dtypes; each row is written (and fsynced) as it completes."""
    if max_reps < min_reps:
        raise LcprofError(f"--max-reps ({max_reps}) must be >= --min-reps ({min_reps})")
    cap = parse_bytes(mem_cap)
    from lcprof.measure.sweep import run_sweep  # imports torch
    from lcprof.measure.execution import Execution, SweepWorkload
    from lcprof.render import render

    work = SweepWorkload(model, n, backend_list, dtypes, phase=phase, batch=batch, layer=layer_idx, ranks=ranks,
                         mla_form=mla_form, moe_timing=moe_timing)
    how = Execution(budget_s=budget_s, mem_cap_bytes=cap, seed=seed, min_reps=min_reps, max_reps=max_reps,
                    flush_l2=flush_l2, cuda_graph=cuda_graph, max_attempts=max_attempts)
    df = run_sweep(work, how, device=device, out=out, resume=resume, calibration=calibration, progress=True)
    if fmt == "table":
        df = df[[c for c in _SUMMARY if c in df.columns]]
    click.echo(render(df, fmt))


COMMANDS = [backends, sweep]
