"""`lcprof ring`: analytic ring-attention report; with --measure, a real ring under torchrun."""

from __future__ import annotations

import os

import click

from lcprof.units import MAX_RING_GPUS

from lcprof.cli.options import (FORMAT_OPTION, MAX_REPEATS, DtypeName, LinkSpeed, emit, gpu_option,
                                model_option, n_option, tile_option, timeout_option)

#: Dtypes the analytic ring model prices, and those the measured ring runs.
RING_DTYPES = ("bf16", "fp16", "fp32", "fp8")
MEASURE_DTYPES = ("bf16", "fp16", "fp32")

SUMMARY_FIELDS = ["load_imbalance", "tokens_per_device", "total_time_s", "total_compute_time_s", "total_comm_time_s",
                  "total_exposed_comm_time_s", "overlap_min_tokens_per_device", "overlap_min_tokens_per_device_layout",
                  "comm_hidden", "memory_bytes_per_device"]


@click.command()
@model_option()
@n_option(required=True, one=True, names=("--n", "-n", "--seq-len"),
          help_text="Total sequence length (e.g. 1M, 64k). Under torchrun write -n or --seq-len "
                    "(torchrun takes --n for its own --nnodes).")
@click.option("--gpus", default=8, show_default=True, type=click.IntRange(1, MAX_RING_GPUS),
              help=f"Devices in the ring (G), 1..{MAX_RING_GPUS}.")
@click.option("--link", default="nvlink4", show_default=True, type=LinkSpeed(),
              help="Link name (nvlink4, pcie5, ib-ndr, ...; see `lcprof gpus`) or a positive number of bytes/s.")
@gpu_option(help_text="GPU whose peak prices each step's compute (see `lcprof gpus`).")
@click.option("--dtype", default="bf16", show_default=True, type=DtypeName(RING_DTYPES),
              help=f"Q/K/V dtype: {', '.join(RING_DTYPES)} (--measure: {', '.join(MEASURE_DTYPES)}).")
@tile_option()
@click.option("--steps/--no-steps", default=False, help="Also print the per-step table.")
@click.option("--measure", is_flag=True, help="Run a real torch.distributed ring (launch with torchrun).")
@click.option("--layout", type=click.Choice(["striped", "contiguous", "both"]), default="both", show_default=True,
              help="Token layout over the ring: striped (balanced), contiguous, or both side by side.")
@click.option("--repeats", default=10, show_default=True, type=click.IntRange(1, MAX_REPEATS),
              help="With --measure: timed rings per layout (after warm-up).")
@click.option("--impl", type=click.Choice(["auto", "torch", "kernel"]), default="auto", show_default=True,
              help="With --measure: block attention by torch, by lcprof's CUDA kernel, or the kernel when it loads.")
@timeout_option(help_text="With --measure: seconds process-group setup or any collective may take before the rank "
                          "gives up (default also from $LCPROF_DIST_TIMEOUT_S).")
@click.option("--calibration", default=None, metavar="PROFILE.json|RESULTS.csv|datasheet",
              help="Rates: a profile from `lcprof calibrate`, rates fitted from a sweep, or 'datasheet' (an upper "
                   "bound). Default: the best profile at hand for --gpu, else its datasheet.")
@FORMAT_OPTION
def ring(model, n, gpus, link, gpu, dtype, tile, steps, measure, layout, repeats, impl, timeout_s, calibration, fmt):
    """Ring attention: load imbalance, per-step compute vs communication, overlap, memory."""
    if measure:
        from lcprof.procs import die_with_parent, under_torchrun

        if under_torchrun():
            die_with_parent()  # first, before torch loads: a killed torchrun leaves no rank behind
        src = click.get_current_context().get_parameter_source("timeout_s")
        explicit = src is not None and src.name == "COMMANDLINE"
        _measure(model, n, dtype, layout, repeats, impl, timeout_s if explicit else None, fmt)
        return
    from lcprof.ring.analysis import ring_report

    summary, per_step, others = ring_report(model, n, gpus=gpus, link=link, gpu=gpu, dtype=dtype, tile=tile,
                                            calibration=calibration)
    if layout != "both" and len(summary):
        summary = summary.where([lay == layout for lay in summary["layout"]])
        per_step = per_step.where([lay == layout for lay in per_step["layout"]])
    if fmt != "table":
        recs = [{"section": "summary", **r} for r in summary.records()]
        if steps:
            recs += [{"section": "steps", **r} for r in per_step.records()]
        recs += [{"section": "other_layers", **r} for r in others.records()]
        emit(recs, fmt)
        return
    if not len(summary):
        o0 = others.row(0)
        click.echo(f"{o0['model']}  n={o0['n']}  G={o0['gpus']}  dtype={o0['dtype']}: no global attention layer, "
                   "nothing is ringed")
    else:
        r0 = summary.row(0)
        click.echo(f"{r0['model']}  n={r0['n']}  G={r0['gpus']}  link={r0['link']} ({r0['link_bytes_per_s']:.3g} "
                   f"B/s)  gpu={r0['gpu']}  dtype={r0['dtype']}")
        click.echo(f"rates: {r0['rates']}")
    recs = summary.records()
    for shape in dict.fromkeys((r["heads"], r["kv_heads"], r["head_dim"], r["v_head_dim"]) for r in recs):
        group = [r for r in recs if (r["heads"], r["kv_heads"], r["head_dim"], r["v_head_dim"]) == shape]
        g0 = group[0]
        click.echo(f"ring over {g0['layers']} of {g0['model_layers']} layers (global attention, {shape[0]} heads, "
                   f"{shape[1]} KV heads, q/k {shape[2]}, v {shape[3]}); per layer:")
        fields = [f for f in SUMMARY_FIELDS + ["attention_time_layers_s"] if f in summary]
        emit([{"field": f, **{r["layout"]: r[f] for r in group}} for f in fields], "table")
    if len(others):
        click.echo()
        click.echo("not ringed (context parallel, contiguous split):")
        emit([{k: r.get(k) for k in ("layer_kind", "layers", "needs", "time_all_layers_s")}
              for r in others.records()], "table")
    if steps:
        click.echo()
        emit(per_step, "table")


def _measure(model, n, dtype, layout, repeats, impl, timeout_s, fmt):
    """One rank of a real ring; rank 0 prints. Without torchrun, a one-process ring."""
    from lcprof.errors import LcprofError

    if dtype not in MEASURE_DTYPES:
        raise LcprofError(f"--measure runs {', '.join(MEASURE_DTYPES)}, not {dtype}")
    from lcprof.ring.distributed import dist_timeout_s, run_ring_layouts  # imports torch
    from lcprof.ring.analysis import ring_shapes
    from lcprof.analytic import load

    spec = load(model)
    heads, kv_heads, head_dim, v_dim = ring_shapes(spec)
    if v_dim != head_dim:
        raise LcprofError(f"ring --measure runs K and V of one head dim; {spec.name} has q/k {head_dim} and v {v_dim} "
                          "(MLA): use the analytic `lcprof ring` without --measure")
    dist_timeout_s(timeout_s)  # a bad $LCPROF_DIST_TIMEOUT_S is refused before any rank waits
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if n % world:
        raise LcprofError(f"n={n} must be a multiple of the ring size {world} for --measure")
    layouts = ["contiguous", "striped"] if layout == "both" else [layout]
    results = run_ring_layouts(n, heads, kv_heads, head_dim, dtype=dtype, layouts=layouts, repeats=repeats,
                               impl=impl, timeout_s=timeout_s)  # one process group for every layout
    if results is not None:  # rank 0
        emit([{"model": spec.name, "n": n, "dtype": dtype, "layout": lay, "world": world,
               **{k: v for k, v in res.items() if not isinstance(v, (list, dict))}}
              for lay, res in zip(layouts, results)], fmt)


COMMANDS = [ring]
