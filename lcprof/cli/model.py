"""``lcprof model-sweep``: whole models (or one layer), lcprof's or transformers', over lengths and phases.

A thin click command registered by ``lcprof.cli`` (it reads ``COMMANDS``); torch is imported inside the
command. Library function: :func:`lcprof.measure.model_sweep.run_model_sweep`. Its results file is
compared with the planner by ``lcprof compare FILE`` (:func:`lcprof.explain.compare_model.compare_model_results`).
"""

from __future__ import annotations

import click

from lcprof.cli.options import (FORMAT_OPTION, FiniteFloat, batch_option, model_option, n_option, reps_options,
                                seed_option,
                                with_options)
from lcprof.errors import LcprofError
from lcprof.units import parse_bytes

_SUMMARY = ["impl", "target", "backend", "dtype", "phase", "n", "status", "scope", "time_s", "time_p10_s",
            "time_p90_s", "repeats", "peak_mem_bytes", "predicted_mem_bytes", "check_rel_err", "reason"]


@click.command("model-sweep")
@model_option()
@n_option(required=True, help_text="Token counts (prefill length, decode context): 4k,8k or 128..131072.")
@click.option("--phase", "phases", default="prefill,decode", show_default=True, help="prefill, decode or both.")
@click.option("--impl", type=click.Choice(["lcprof", "transformers"]), default="lcprof", show_default=True,
              help="Whose layers and model class run (transformers: pip install 'lcprof[hf]').")
@click.option("--target", default="model", show_default=True, help="model, layer or layer:N.")
@click.option("--backends", "backend_list", default="sdpa", show_default=True,
              help="Attention backends (lcprof: see `lcprof backends`; transformers: eager, sdpa, flash-attn).")
@click.option("--dtype", "dtypes", default="fp32", show_default=True, help="Comma-separated: fp32, tf32, bf16, fp16.")
@click.option("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available, else cpu).")
@batch_option()
@click.option("--budget-s", default=1.0, show_default=True, type=FiniteFloat(min=0.0, max=1e6),
              help="Seconds of timed repetitions per point.")
@with_options(reps_options())
@click.option("--mem-cap", default=None, help="Memory budget (8e9, 8GiB); default: the device's free memory.")
@click.option("--cuda-graph", is_flag=True, help="CUDA: time lcprof's decode steps as CUDA-graph replays.")
@click.option("--moe-timing", type=click.Choice(["dense-equivalent", "routed"]), default=None,
              help="lcprof's MoE layers (default dense-equivalent; transformers always routes).")
@click.option("--no-scale", is_flag=True, help="Skip a model that does not fit instead of timing one layer per kind.")
@click.option("--no-check", is_flag=True, help="Skip the correctness check before timing.")
@seed_option()
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Results CSV, written row by row.")
@click.option("--resume", is_flag=True, help="Keep the rows already in --out (ok/oom/skipped) and run the rest.")
@FORMAT_OPTION
def model_sweep(model, n, phases, impl, target, backend_list, dtypes, device, batch, budget_s, min_reps, max_reps,
                mem_cap, cuda_graph, moe_timing, no_scale, no_check, seed, out, resume, fmt):
    """Time a whole model (TTFT of a prefill, TPOT of a decode step at context n), row by row."""
    if max_reps < min_reps:
        raise LcprofError(f"--max-reps ({max_reps}) must be >= --min-reps ({min_reps})")
    cap = parse_bytes(mem_cap)
    from lcprof.measure.model_sweep import run_model_sweep  # imports torch
    from lcprof.measure.execution import Execution, ModelWorkload
    from lcprof.render import render

    work = ModelWorkload(model, n, phases=phases, impl=impl, backends=backend_list, dtypes=dtypes, target=target,
                         batch=batch, moe_timing=moe_timing, allow_scaled=not no_scale)
    how = Execution(budget_s=budget_s, mem_cap_bytes=cap, seed=seed, min_reps=min_reps, max_reps=max_reps,
                    cuda_graph=cuda_graph, check=not no_check)
    df = run_model_sweep(work, how, device=device, out=out, resume=resume, progress=True)
    if fmt == "table":
        df = df[[c for c in _SUMMARY if c in df.columns]]
    click.echo(render(df, fmt))


def compare_model_files(files, gpu, calibration, fmt) -> None:
    """``lcprof compare`` on whole-model results: TTFT/TPOT vs the planner, and lcprof vs transformers."""
    from lcprof.explain.compare_model import compare_model_results, impl_ratio_table, read_model_results
    from lcprof.render import render

    df = read_model_results(list(files))
    out = []
    if (df["target"].astype(str) == "model").any():
        out.append(("Measured whole model vs the planner (TTFT = prefill, TPOT = decode step)",
                    compare_model_results(df, gpu=gpu, calibration=calibration)))
    if set(df["impl"]) >= {"lcprof", "transformers"}:
        out.append(("lcprof time / transformers time", impl_ratio_table(df)))
    if not out:
        raise LcprofError("these whole-model results have no model rows and no lcprof/transformers pairs")
    if fmt != "table":
        click.echo(render(out[0][1], fmt))
        return
    for i, (title, table) in enumerate(out):
        if i:
            click.echo()
        click.echo(render(table, "table", title))





def is_model_file(files) -> bool:
    """Whether every results file given to ``lcprof compare`` is a whole-model sweep's (by its header)."""
    import csv

    from lcprof.explain.compare_model import is_model_results

    try:
        heads = []
        for f in files:
            with open(f, newline="") as fh:
                heads.append(next(csv.reader(fh), []))
    except (OSError, UnicodeDecodeError):
        return False  # compare's own reader reports the file
    return bool(heads) and all(is_model_results(h) for h in heads)

COMMANDS = [model_sweep]
