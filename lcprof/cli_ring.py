"""`lcprof ring`: analytic ring-attention report; with --measure, a real ring under torchrun."""

from __future__ import annotations

import os

import click

from lcprof.cli import FORMAT_OPTION, emit, model_option


@click.command()
@model_option()
@click.option("--n", "-n", "--seq-len", "n", required=True, help="Total sequence length (e.g. 1M, 64k). Under torchrun write -n or --seq-len (torchrun takes --n for its own --nnodes).")
@click.option("--gpus", default=8, show_default=True, type=click.IntRange(min=1), help="Devices in the ring (G).")
@click.option("--link", default="nvlink4", show_default=True, help="Link name (nvlink4, pcie5, ib-ndr, ...) or bytes/s.")
@click.option("--gpu", default="h100-sxm", show_default=True)
@click.option("--dtype", default="bf16", show_default=True)
@click.option("--tile", default=128, show_default=True, type=click.IntRange(min=1))
@click.option("--steps/--no-steps", default=False, help="Also print the per-step table.")
@click.option("--measure", is_flag=True, help="Run a real torch.distributed ring (launch with torchrun).")
@click.option("--layout", type=click.Choice(["striped", "contiguous", "both"]), default="both", show_default=True)
@click.option("--repeats", default=10, show_default=True, type=click.IntRange(min=1))
@click.option("--impl", type=click.Choice(["auto", "torch", "kernel"]), default="auto", show_default=True)
@click.option("--calibration", default=None, metavar="PROFILE.json|RESULTS.csv|datasheet",
              help="Rates: a profile from `lcprof calibrate`, rates fitted from a sweep, or 'datasheet' (an upper "
                   "bound). Default: the best profile at hand for --gpu, else its datasheet.")
@FORMAT_OPTION
def ring(model, n, gpus, link, gpu, dtype, tile, steps, measure, layout, repeats, impl, calibration, fmt):
    """Ring attention: load imbalance, per-step compute vs communication, overlap, memory."""
    if measure:
        _measure(model, n, dtype, layout, repeats, impl, fmt)
        return
    from lcprof.ring_analysis import ring_report

    summary, per_step = ring_report(model, n, gpus=gpus, link=link, gpu=gpu, dtype=dtype, tile=tile,
                                    calibration=calibration)
    if layout != "both":
        summary = summary[summary["layout"] == layout]
        per_step = per_step[per_step["layout"] == layout]
    if fmt == "table":
        cols = ["layout", "load_imbalance", "tokens_per_device", "total_time_s", "total_compute_time_s",
                "total_comm_time_s", "total_exposed_comm_time_s", "overlap_min_tokens_per_device",
                "overlap_min_tokens_per_device_layout", "comm_hidden", "memory_bytes_per_device"]
        cols = [c for c in cols if c in summary.columns and c != "layout"]
        r0 = summary.iloc[0]
        click.echo(f"{r0['model']}  n={r0['n']}  G={r0['gpus']}  link={r0['link']} ({r0['link_bytes_per_s']:.3g} B/s)  "
                   f"gpu={r0['gpu']}  dtype={r0['dtype']}  (one attention layer)")
        click.echo(f"rates: {r0['rates']}")
        table = summary.set_index("layout")[cols].T
        table.index.name = "field"
        emit(table.reset_index(), "table")
        if steps:
            click.echo()
            emit(per_step, "table")
        return
    emit(per_step if steps else summary, fmt)


def _measure(model, n, dtype, layout, repeats, impl, fmt):
    """One rank of a real ring; rank 0 prints. Without torchrun, a one-process ring."""
    from lcprof.errors import LcprofError
    from lcprof.ring.distributed import run_ring_worker  # imports torch
    from lcprof.ring_analysis import ring_shapes
    from lcprof.spec import load_model
    from lcprof.units import parse_tokens

    spec = load_model(model)
    heads, kv_heads, head_dim = ring_shapes(spec)
    n_tok = parse_tokens(n)
    if "WORLD_SIZE" not in os.environ:
        os.environ.update({"WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0",
                           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": os.environ.get("MASTER_PORT", "29531")})
    world = int(os.environ["WORLD_SIZE"])
    if n_tok % world:
        raise LcprofError(f"n={n_tok} must be a multiple of the ring size {world} for --measure")
    layouts = ["contiguous", "striped"] if layout == "both" else [layout]
    rows = []
    for lay in layouts:
        res = run_ring_worker(n_tok, heads, kv_heads, head_dim, dtype=dtype, layout=lay, repeats=repeats, impl=impl)
        if res is not None:
            rows.append({"model": spec.name, "n": n_tok, "dtype": dtype, "layout": lay, "world": world,
                         **{k: v for k, v in res.items() if not isinstance(v, (list, dict))}})
    if rows:
        emit(rows, fmt)


COMMANDS = [ring]
