"""``lcprof plan``: capacity planning for long requests (a thin click command over ``lcprof.plan``).

No torch. User mistakes raise LcprofError, which ``lcprof.cli`` prints as one line with exit code 2.
"""

from __future__ import annotations

import shlex

import click

from lcprof.cli.options import FORMAT_OPTION, MASK_OPTION, model_option
from lcprof.errors import LcprofError


def _fit_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("lcprof.explain.fit") is not None


@click.command()
@model_option()
@click.option("--gpu", default="h100-sxm", show_default=True, help="GPU kind (see lcprof/data/gpus.json).")
@click.option("--gpus", type=click.IntRange(min=1), default=None,
              help="GPUs in the deployment, a multiple of tp x dp x pp (default: one replica).")
@click.option("--engine", type=click.Choice(["vllm", "sglang", "none"]), default="vllm", show_default=True,
              help="Whose memory accounting and limits: vLLM's, SGLang's, or lcprof's own (none).")
@click.option("--tp", default="1", show_default=True, help="Tensor-parallel degree; with --what-if a list such as 1,2,4,8.")
@click.option("--dp", default="1", show_default=True,
              help="Attention data-parallel degree for MoE models (each DP rank its own KV pool); a list with --what-if.")
@click.option("--ep", default="1", show_default=True,
              help="Expert parallel: 1 (experts TP-split) or tp x dp (experts split whole, all-to-all); a list with --what-if.")
@click.option("--pp", default="1", show_default=True, help="Pipeline-parallel stages; a list with --what-if.")
@click.option("--weights", "--dtype", "weights", default="bf16", show_default=True,
              help="Weight format: bf16, fp16, fp32, fp8 (block scales), int8 (channel scales), int4 (group-128 "
                   "W4A16), nvfp4, mxfp4 (experts only). Embeddings, norms, router and LM head stay bf16.")
@click.option("--kv-dtype", default="bf16", show_default=True,
              help="KV-cache dtype: bf16, fp16, fp32, fp8, int8, int4 (scales counted as the engine stores them); "
                   "a list such as bf16,fp8 plans each.")
@click.option("--attn-dtype", default=None, help="Precision attention runs at (bf16, fp16, fp32, fp8; default: the "
                                                  "activations', bf16 for quantized weights).")
@click.option("--state-dtype", default=None,
              help="Dtype linear-time mixers keep their recurrent state in (fp32, bf16, fp16; default: the config's "
                   "mamba_ssm_dtype, e.g. Qwen3.5's float32, else the activations'). Hybrid models only.")
@click.option("--mamba-cache-mode", default=None, type=click.Choice(["none", "align"]),
              help="vLLM --mamba-cache-mode for hybrid models: none (prefix caching off; one state page per "
                   "request and state group) or align (prefix caching on; two). Default none.")
@MASK_OPTION
@click.option("--attn-backend", default=None,
              help="Attention kernel whose calibrated rate to charge (default sdpa-flash; needs --calibration).")
@click.option("--memory-utilization", "--mem-util", "memory_utilization", default=None,
              help="vLLM gpu_memory_utilization / SGLang mem_fraction_static / lcprof's share (default: the "
                   "engine's); a list with --what-if.")
@click.option("--block-size", default=None, type=click.IntRange(min=1),
              help="KV block (vLLM) or page (SGLang) size in tokens (default: the engine's).")
@click.option("--max-num-seqs", default=None, type=click.IntRange(min=1),
              help="Running-request cap per DP rank (vLLM max_num_seqs, SGLang max_running_requests).")
@click.option("--chunk", "--chunked-prefill", "--max-num-batched-tokens", "chunk", default=None,
              help="Prefill tokens per step (vLLM max_num_batched_tokens, SGLang chunked_prefill_size), e.g. 8k; "
                   "0 turns chunked prefill off (default: the engine's).")
@click.option("--no-chunk", is_flag=True, help="Chunked prefill off (vLLM then profiles max_model_len tokens).")
@click.option("--max-model-len", default=None, help="The engine's max_model_len (default: derived from the config).")
@click.option("--kv-memory", default=None,
              help="Start from a logged 'Available KV cache memory', e.g. 20.43GiB (skips the profile).")
@click.option("--gpu-memory", default=None,
              help="Total GPU memory the engine sees, e.g. 79.19GiB (vLLM logs it; default: gpus.json).")
@click.option("--non-torch-bytes", default=None, help="Non-torch memory per GPU, e.g. 0.35GiB (default: an estimate).")
@click.option("--cuda-graph-bytes", default=None,
              help="CUDA-graph pool to subtract from vLLM's budget (VLLM_MEMORY_PROFILER_ESTIMATE_CUDAGRAPHS=1).")
@click.option("--long", "long_", default=None,
              help="Long request length (context: prompt + output), e.g. 128k; with --what-if a list or range 8k..1M.")
@click.option("--short", default=None, help="Short request length, e.g. 4k (default with --mix: its shortest length).")
@click.option("--mix", default=None, help="Mix of lengths with request shares summing to 1, e.g. 2k:0.8,8k:0.15,32k:0.05.")
@click.option("--ttft", default=None, help="TTFT target, e.g. 2s or 500ms.")
@click.option("--tpot", default=None, help="TPOT (time per output token) target, e.g. 50ms.")
@click.option("--prefix", default="0", show_default=True, help="Prefix shared by all requests (prefix caching), tokens.")
@click.option("--decode-batch", type=click.IntRange(min=1), default=None,
              help="Decode batch for the TPOT figure (default: as many short requests as the engine holds).")
@click.option("--calibration", default=None,
              help="Rates: a profile (`lcprof calibrate`: peaks, bandwidth, measured attention rates), a results "
                   "file (rates fitted from a sweep) or 'datasheet' (default: the best profile at hand for --gpu, "
                   "else its datasheet; the plan says which in rates_source).")
@click.option("--fit", "fit_file", default=None, type=click.Path(dir_okay=False),
              help="Results file whose fitted t(n) = c0 + c1 n + c2 n^2 (one layer) replaces the prefill roofline.")
@click.option("--what-if", "what_if", is_flag=True,
              help="Grid of --long x --kv-dtype x --tp/--dp/--ep/--pp x --memory-utilization.")
@click.option("--report", "report_dir", default=None, type=click.Path(file_okay=False),
              help="Write a Markdown report with plots to this folder.")
@FORMAT_OPTION
def plan(model, gpu, gpus, engine, tp, dp, ep, pp, weights, kv_dtype, attn_dtype, state_dtype, mamba_cache_mode, mask,
         attn_backend, memory_utilization,
         block_size, max_num_seqs, chunk, no_chunk, max_model_len, kv_memory, gpu_memory, non_torch_bytes,
         cuda_graph_bytes, long_, short, mix, ttft, tpot, prefix, decode_batch, calibration, fit_file, what_if,
         report_dir, fmt):
    """Capacity plan: what one long request displaces (KV memory, prefill compute), concurrency,
    TTFT/TPOT and quotas for long requests -- with the memory accounting and limits of the chosen
    serving engine.

    \b
    The engine's startup figures come first ("GPU KV cache size", "Maximum concurrency for L tokens
    per request"), then the capacity in requests of the given lengths or mix. vLLM: available KV =
    total x gpu_memory_utilization - weights as loaded - the profile run's activation at
    max_num_batched_tokens (one TP rank: heads and widths split, hidden-size tensors whole) - non-
    torch memory; SGLang: free memory x mem_fraction_static - weights. Prefill is chunked as the
    engine does (--no-chunk for the unchunked answer). See lcprof/plan/*.py docstrings.
    """
    from lcprof.plan.inputs import parse_float_list, parse_int_list, parse_memory_bytes
    from lcprof.render import render
    from lcprof.units import parse_tokens

    if fit_file and not _fit_available():  # pragma: no cover - lcprof.explain.fit ships with lcprof
        raise LcprofError("--fit needs lcprof.explain.fit, which this installation lacks")
    from lcprof.plan.inputs import parse_dtype_list
    from lcprof.plan.kvformat import KV_DTYPES

    kv_dtypes = parse_dtype_list(kv_dtype, KV_DTYPES)
    lists = {k: parse_int_list(v, f"--{k}") for k, v in (("tp", tp), ("dp", dp), ("ep", ep), ("pp", pp))}
    utils = parse_float_list(memory_utilization, "--memory-utilization") if memory_utilization is not None else None
    if no_chunk and chunk is not None:
        raise LcprofError("--no-chunk and --chunk contradict each other; give one")
    engine_kw = dict(engine=engine, block_size=block_size, max_num_seqs=max_num_seqs,
                     max_model_len=parse_tokens(max_model_len) if max_model_len is not None else None,
                     kv_memory_bytes=parse_memory_bytes(kv_memory, "--kv-memory"),
                     gpu_memory_bytes=parse_memory_bytes(gpu_memory, "--gpu-memory"),
                     non_torch_bytes=_nonneg_bytes(non_torch_bytes, "--non-torch-bytes"),
                     cuda_graph_bytes=_nonneg_bytes(cuda_graph_bytes, "--cuda-graph-bytes"),
                     mamba_cache_mode=mamba_cache_mode)
    chunk_arg = "0" if no_chunk else chunk
    if what_if:
        return _what_if(model, gpu, gpus, lists, weights, kv_dtypes, attn_dtype, attn_backend, utils, chunk_arg,
                        long_, short, engine_kw, calibration, fit_file, mix, report_dir, fmt, render,
                        state_dtype=state_dtype, mask=mask)
    if any(len(v) > 1 for v in lists.values()) or (utils and len(utils) > 1):
        raise LcprofError("lists of --tp/--dp/--ep/--pp or --memory-utilization need --what-if")
    from lcprof.plan.capacity import plans as make_plans, plans_table

    ps = make_plans(model, kv_dtypes=kv_dtypes, gpu=gpu, gpus=gpus, tp=lists["tp"][0], dp=lists["dp"][0],
                    ep=lists["ep"][0], pp=lists["pp"][0], weights=weights, attn_dtype=attn_dtype,
                    attention_backend=attn_backend, memory_utilization=utils[0] if utils else None, long=long_,
                    short=short, mix=mix, ttft=ttft, tpot=tpot, prefix=prefix, chunk=chunk_arg,
                    decode_batch=decode_batch, calibration=calibration, fit=fit_file, state_dtype=state_dtype,
                    mask=mask, **engine_kw)
    if report_dir:
        from lcprof.plan.report import write_report

        path = write_report(ps, report_dir, command=_command_line(click.get_current_context()))
        click.echo(f"report written to {path}", err=True)
    if fmt == "json":
        import json

        from lcprof.render import records

        click.echo(json.dumps(records([p.json_record() for p in ps]), indent=1))
        return
    if fmt == "csv":
        click.echo(render(plans_table(ps), "csv"))
        return
    from lcprof.plan.render import section_frames

    for p in ps:
        per = ", each DP rank" if p.record["dp"] > 1 else ""
        title = f"{p.record['engine']} startup ({p.record['kv_dtype']} KV{per})" if p.startup_log else None
        if title:
            click.echo(title + ":")
            for line in p.startup_log:
                click.echo(f"  {line}")
            click.echo()
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


def _nonneg_bytes(text, what: str) -> int | None:
    from lcprof.plan.inputs import parse_memory_bytes

    if text is None:
        return None
    if str(text).strip() in ("0", "0.0"):
        return 0
    return parse_memory_bytes(text, what)


def _what_if(model, gpu, gpus, lists, weights, kv_dtypes, attn_dtype, attn_backend, utils, chunk, long_, short,
             engine_kw, calibration, fit_file, mix, report_dir, fmt, render, state_dtype=None, mask=None) -> None:
    from lcprof.plan.grid import TABLE_COLUMNS, capacity_grid

    if long_ is None:
        raise LcprofError("--what-if needs --long (a list or range such as 8k..1M)")
    if fit_file or mix or report_dir:
        raise LcprofError("--what-if takes --long, --kv-dtype, --tp/--dp/--ep/--pp and --memory-utilization lists; "
                          "--fit, --mix and --report apply to a single plan")
    kw = {k: v for k, v in engine_kw.items() if v is not None}
    df = capacity_grid(model, gpu=gpu, gpus=gpus, tps=lists["tp"], dps=lists["dp"], eps=lists["ep"],
                       pps=lists["pp"], weights=weights, kv_dtypes=kv_dtypes, attn_dtype=attn_dtype,
                       memory_utilizations=utils, longs=long_, short=short or "4k", calibration=calibration,
                       attention_backend=attn_backend, chunk=chunk, state_dtype=state_dtype, mask=mask, **kw)
    if fmt != "table":
        click.echo(render(df, fmt))
        return
    from lcprof.plan.render import fmt_value

    view = df[TABLE_COLUMNS].copy().astype(object)
    bad = (df["status"] == "invalid").to_numpy()
    for col in view.columns:
        if "bytes" in col or col.endswith("_s"):
            view[col] = [fmt_value(col, v) if v == v else "-" for v in view[col]]
        if col not in ("long_n", "kv_dtype", "layout", "memory_utilization", "status", "reason"):
            view.loc[bad, col] = "-"
    click.echo(render(view, "table", f"{df['model'].iloc[0]} on {gpu} ({df['engine'].iloc[0]}): {len(df)} "
                                     f"scenarios (short {df['short_n'].iloc[0]} tokens)"))


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
