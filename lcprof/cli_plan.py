"""``lcprof plan``: capacity planning for long requests (a thin click command over ``lcprof.plan``).

No torch. User mistakes raise LcprofError, which ``lcprof.cli`` prints as one line with exit code 2.
"""

from __future__ import annotations

import shlex

import click

from lcprof.cli_options import FORMAT_OPTION, model_option
from lcprof.errors import LcprofError


def _fit_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("lcprof.fit") is not None


@click.command()
@model_option()
@click.option("--gpu", default="h100-sxm", show_default=True, help="GPU kind (see lcprof/data/gpus.json).")
@click.option("--gpus", type=click.IntRange(min=1), default=None,
              help="GPUs in the deployment, a multiple of --tp (default: one replica of --tp GPUs).")
@click.option("--tp", default="1", show_default=True,
              help="Tensor-parallel degree per replica; with --what-if a list such as 1,2,4,8.")
@click.option("--dtype", default="bf16", show_default=True, help="Weight (and compute) dtype: bf16, fp16, fp8, int8, fp32.")
@click.option("--kv-dtype", default="bf16", show_default=True,
              help="KV-cache dtype; a list such as bf16,fp8 plans each (one column / record per dtype).")
@click.option("--memory-utilization", "--mem-util", "memory_utilization", default="0.9", show_default=True,
              help="Fraction of GPU memory the engine may use (vLLM gpu_memory_utilization); a list with --what-if.")
@click.option("--block-size", default=16, show_default=True, type=click.IntRange(min=1),
              help="Paged-KV block size in tokens.")
@click.option("--long", "long_", default=None,
              help="Long request length (context: prompt + output), e.g. 128k; with --what-if a list or range 8k..1M.")
@click.option("--short", default=None, help="Short request length, e.g. 4k (default with --mix: its shortest length).")
@click.option("--mix", default=None, help="Mix of lengths with request shares summing to 1, e.g. 2k:0.8,8k:0.15,32k:0.05.")
@click.option("--ttft", default=None, help="TTFT target, e.g. 2s or 500ms.")
@click.option("--tpot", default=None, help="TPOT (time per output token) target, e.g. 50ms.")
@click.option("--prefix", default="0", show_default=True, help="Prefix shared by all requests (prefix caching), tokens.")
@click.option("--chunk", "--chunked-prefill", "chunk", default=None, help="Chunked-prefill size in tokens, e.g. 8k.")
@click.option("--decode-batch", type=click.IntRange(min=1), default=None,
              help="Decode batch for the TPOT figure (default: as many short requests as the KV pool holds).")
@click.option("--calibration", default=None, type=click.Path(dir_okay=False),
              help="Calibration profile (`lcprof calibrate`) for peak rates and HBM bandwidth.")
@click.option("--fit", "fit_file", default=None, type=click.Path(dir_okay=False),
              help="Results file whose fitted t(n) = c0 + c1 n + c2 n^2 (one layer) replaces the prefill roofline.")
@click.option("--what-if", "what_if", is_flag=True, help="Grid of --long x --kv-dtype x --tp x --memory-utilization.")
@click.option("--report", "report_dir", default=None, type=click.Path(file_okay=False),
              help="Write a Markdown report with plots to this folder.")
@FORMAT_OPTION
def plan(model, gpu, gpus, tp, dtype, kv_dtype, memory_utilization, block_size, long_, short, mix, ttft, tpot, prefix,
         chunk, decode_batch, calibration, fit_file, what_if, report_dir, fmt):
    """Capacity plan: what one long request displaces (KV memory, prefill compute), concurrency,
    TTFT/TPOT and quotas for long requests.

    \b
    Memory per GPU: usable = memory x utilization; KV budget = usable - weights - activation
    reserve (largest prefill chunk, tiled attention, / TP); blocks per request summed over KV
    groups (sliding layers hold min(n, W) tokens + up to one block). Prefill: roofline of executed
    FLOPs / TP + 2 ring all-reduces per layer over the interconnect (or --calibration / --fit).
    Decode step: max((weights + KV) / bandwidth, FLOPs / peak). See lcprof/plan/*.py docstrings.
    """
    from lcprof.plan.inputs import parse_dtype_list, parse_float_list, parse_int_list
    from lcprof.render import render

    if fit_file and not _fit_available():  # pragma: no cover - lcprof.fit ships with lcprof
        raise LcprofError("--fit needs lcprof.fit, which this installation lacks")
    kv_dtypes = parse_dtype_list(kv_dtype)
    tps = parse_int_list(tp, "--tp")
    utils = parse_float_list(memory_utilization, "--memory-utilization")
    if what_if:
        from lcprof.plan.grid import TABLE_COLUMNS, capacity_grid

        if long_ is None:
            raise LcprofError("--what-if needs --long (a list or range such as 8k..1M)")
        if fit_file or mix or report_dir:
            raise LcprofError("--what-if takes --long, --kv-dtype, --tp and --memory-utilization lists; "
                              "--fit, --mix and --report apply to a single plan")
        df = capacity_grid(model, gpu=gpu, gpus=gpus, tps=tps, dtype=dtype, kv_dtypes=kv_dtypes,
                           memory_utilizations=utils, block_size=block_size, longs=long_, short=short or "4k",
                           chunk=chunk, calibration=calibration)
        if fmt == "table":
            from lcprof.plan.render import fmt_value

            view = df[TABLE_COLUMNS].copy().astype(object)
            bad = (df["status"] == "invalid").to_numpy()
            for col in view.columns:
                if "bytes" in col or col.endswith("_s"):
                    view[col] = [fmt_value(col, v) if v == v else "-" for v in view[col]]
                if col not in ("long_n", "kv_dtype", "tp", "memory_utilization", "status", "reason",
                               "displacement_kv"):
                    view.loc[bad, col] = "-"
            click.echo(render(view, "table", f"{df['model'].iloc[0]} on {gpu}: {len(df)} scenarios "
                                                f"(short {df['short_n'].iloc[0]} tokens)"))
        else:
            click.echo(render(df, fmt))
        return
    if len(tps) > 1 or len(utils) > 1:
        raise LcprofError("lists of --tp or --memory-utilization need --what-if")
    from lcprof.plan.capacity import plans as make_plans, plans_table

    ps = make_plans(model, kv_dtypes=kv_dtypes, gpu=gpu, gpus=gpus, tp=tps[0], dtype=dtype,
                    memory_utilization=utils[0], block_size=block_size, long=long_, short=short, mix=mix, ttft=ttft,
                    tpot=tpot, prefix=prefix, chunk=chunk, decode_batch=decode_batch, calibration=calibration,
                    fit=fit_file)
    if report_dir:
        from lcprof.plan.report import write_report

        command = _command_line(click.get_current_context())
        path = write_report(ps, report_dir, command=command)
        click.echo(f"report written to {path}", err=True)
    if fmt != "table":
        click.echo(render(plans_table(ps), fmt))
        return
    from lcprof.plan.render import section_frames

    for i, (title, frame) in enumerate(section_frames(ps)):
        if i:
            click.echo()
        click.echo(render(frame, "table", title))
    for p in ps[:1]:
        click.echo()
        click.echo(render(p.groups, "table", "KV blocks per request, by KV group (one block = block_size tokens "
                                             "x one group's layers)"))
        if p.mix is not None:
            click.echo()
            click.echo(render(p.mix, "table", f"Mix ({p.record['kv_dtype']} KV)"))


def _command_line(ctx: click.Context) -> str:
    """The options the user gave, as one reproducible command line (for the report)."""
    from click.core import ParameterSource

    words = ["lcprof", "plan"]
    for param in ctx.command.params:
        if ctx.get_parameter_source(param.name) != ParameterSource.COMMANDLINE:
            continue
        value = ctx.params[param.name]
        if getattr(param, "is_flag", False):
            if value:
                words.append(param.opts[0])
            continue
        words += [param.opts[0], shlex.quote(str(value))]
    return " ".join(words)


COMMANDS = [plan]
