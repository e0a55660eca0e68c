"""The lcprof command line: a thin click group. Logic lives in library functions.

Analytic commands never import torch; measuring commands import it lazily. User mistakes
(LcprofError, click usage errors) print one line and exit with code 2.
"""

from __future__ import annotations

import sys
import warnings

import click

from lcprof._version import __version__
from lcprof.errors import LcprofError

FORMAT_OPTION = click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table",
                             show_default=True, help="Output format (JSON: a list of flat records).")


def _set_allow_unknown(ctx, param, value):
    from lcprof.spec import set_allow_unknown

    set_allow_unknown(bool(value))


#: ``--allow-unknown``: load a config.json carrying fields lcprof does not understand, warning with
#: their names, instead of refusing it (lcprof.spec.config). Stacked under every model option.
ALLOW_UNKNOWN_OPTION = click.option(
    "--allow-unknown", is_flag=True, expose_value=False, is_eager=True, callback=_set_allow_unknown,
    help="Load a config.json even when it has fields lcprof does not understand (warns, naming them; "
         "costs may then be wrong).")


def model_option(required=True):
    opt = click.option("--model", "-m", required=required,
                       help="Preset name or alias (see `lcprof models`), a path to a config.json / its folder, "
                            "or a Hugging Face id (org/name; the local Hub cache first).")
    return lambda f: opt(ALLOW_UNKNOWN_OPTION(f))


MASK_OPTION = click.option(
    "--mask", default=None,
    help="What-if attention mask for every attention layer: sliding:W, chunked:C, dilated:2048x1,4096x2, "
         "sinks:4+window:4096, longformer:window=W,global=G, bigbird:block=64,window=3,global=2,random=3, "
         "topk:2048, infini:segment=2048 (see lcprof.cost.masks).")


def n_option(default=None, required=False, help_text="Token counts: 131072, 128k, 1M, 4k,8k or 128..131072."):
    return click.option("--n", "n", default=default, required=required, help=help_text)


def emit(obj, fmt: str, title: str | None = None) -> None:
    from lcprof.render import render

    click.echo(render(obj, fmt, title))


class _Group(click.Group):
    """Turn user mistakes into one line on stderr and exit code 2."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        def show_warning(message, category, filename, lineno, file=None, line=None):
            click.echo(f"lcprof: warning: {message}", err=True)

        warnings.showwarning = show_warning
        from lcprof.spec import set_allow_unknown

        set_allow_unknown(False)  # each invocation starts strict; --allow-unknown turns it off
        try:
            rv = super().main(args=args, prog_name=prog_name, complete_var=complete_var,
                              standalone_mode=False, **extra)
        except LcprofError as exc:
            click.echo(f"lcprof: error: {exc}", err=True)
            sys.exit(2)
        except click.exceptions.NoArgsIsHelpError as exc:
            click.echo(exc.ctx.get_help() if exc.ctx else str(exc))
            sys.exit(0)
        except click.UsageError as exc:
            cmd = exc.ctx.command_path if exc.ctx else "lcprof"
            click.echo(f"lcprof: error: {exc.format_message()} (see `{cmd} --help`)", err=True)
            sys.exit(2)
        except click.exceptions.Abort:
            click.echo("lcprof: aborted", err=True)
            sys.exit(130)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(f"lcprof: error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code if exc.exit_code else 2)
        if isinstance(rv, int) and standalone_mode:
            sys.exit(rv)
        return rv


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lcprof")
def main() -> None:
    """lcprof: what long-context LLM inference costs, and why."""


# ----------------------------------------------------------------------------------------------
# Analytic commands (no torch)
# ----------------------------------------------------------------------------------------------

@main.command()
@FORMAT_OPTION
def models(fmt):
    """List the bundled model presets."""
    from lcprof.analytic import models_table

    emit(models_table(), fmt)


@main.command()
@click.argument("model")
@ALLOW_UNKNOWN_OPTION
@FORMAT_OPTION
def show(model, fmt):
    """Show a model's spec: shapes, attention kinds, RoPE, MLA/MoE, parameter counts."""
    from lcprof.analytic import show as show_fn

    emit(show_fn(model), fmt)


@main.command()
@model_option()
@n_option(required=True)
@click.option("--dtype", default="bf16", show_default=True, help="KV-cache dtype: fp32, bf16, fp16, fp8, int8.")
@click.option("--batch", default=1, show_default=True, type=click.IntRange(min=1))
@click.option("--tp", default=1, show_default=True, type=click.IntRange(min=1), help="Tensor-parallel degree (per-GPU share).")
@MASK_OPTION
@click.option("--state-dtype", default=None, help="Dtype of the mixers' recurrent state (default bf16; vLLM's "
              "mamba_ssm_cache_dtype, e.g. fp32).")
@FORMAT_OPTION
def kv(model, n, dtype, batch, tp, mask, state_dtype, fmt):
    """KV-cache bytes at each n (sliding/chunked layers capped, MLA latent, TP share), the mixers'
    constant state, and their sum."""
    from lcprof.analytic import kv_table

    emit(kv_table(model, n, dtype=dtype, batch=batch, tp=tp, mask=mask, state_dtype=state_dtype), fmt)


@main.command()
@model_option()
@n_option(required=True)
@click.option("--phase", type=click.Choice(["prefill", "decode"]), default="prefill", show_default=True)
@click.option("--prefix", default="0", show_default=True, help="Cached prefix tokens before the n new ones.")
@click.option("--batch", default=1, show_default=True, type=click.IntRange(min=1))
@click.option("--layer", type=int, default=None, help="One layer's index (default: the whole model).")
@click.option("--tile", default=128, show_default=True, type=click.IntRange(min=1), help="Tile size of tiled kernels.")
@click.option("--lm-head/--no-lm-head", default=False, show_default=True)
@MASK_OPTION
@FORMAT_OPTION
def flops(model, n, phase, prefix, batch, layer, tile, lm_head, mask, fmt):
    """FLOP breakdown (2 per multiply-add), useful and executed, per n."""
    from lcprof.analytic import flops_table
    from lcprof.units import parse_tokens

    p = 0 if str(prefix).strip() == "0" else parse_tokens(prefix)
    df = flops_table(model, n, phase=phase, batch=batch, prefix=p, layer=layer, tile=tile, lm_head=lm_head, mask=mask)
    if fmt == "table":
        keep = ["n"] + [c for c in df.columns if c.endswith("_flops") or c == "attn_share"]
        df = df[keep]
    emit(df, fmt)


@main.command()
@model_option()
@n_option(help_text="Target context (default: the model's max positions).")
@click.option("--pairs/--no-pairs", default=False, help="Also print the per-pair table.")
@FORMAT_OPTION
def rope(model, n, pairs, fmt):
    """RoPE scaling analysis: frequencies, wavelengths, which pairs complete a turn."""
    from lcprof.analytic import rope as rope_fn

    summary, table = rope_fn(model, n)
    if fmt == "table":
        emit(summary, fmt)
        if pairs:
            click.echo()
            emit(table, fmt)
    else:
        emit(table if pairs else summary, fmt)


@main.command()
@click.argument("model_a")
@click.argument("model_b")
@ALLOW_UNKNOWN_OPTION
@n_option(help_text="Reference length for the cost rows.")
@FORMAT_OPTION
def diff(model_a, model_b, n, fmt):
    """Config fields that differ between two models and what each changes in cost."""
    from lcprof.analytic import diff as diff_fn

    emit(diff_fn(model_a, model_b, n), fmt)


@main.command()
@model_option()
@n_option(required=True, help_text="Sequence length (one value).")
@click.option("--gpu", default="h100-sxm", show_default=True, help="GPU for predicted times (see data/gpus.json).")
@click.option("--dtype", "dtypes", default="fp32,bf16", show_default=True, help="Comma-separated dtypes to predict/measure.")
@click.option("--layer", "layer_idx", default=0, show_default=True, type=click.IntRange(min=0))
@click.option("--tile", default=128, show_default=True, type=click.IntRange(min=1))
@click.option("--batch", default=1, show_default=True, type=click.IntRange(min=1))
@click.option("--kv-dtype", default="bf16", show_default=True)
@click.option("--measure", is_flag=True, help="Also build the real layer in torch and time it.")
@click.option("--backend", default="sdpa", show_default=True, help="With --measure: attention backend (see `lcprof backends`).")
@click.option("--device", default=None, help="With --measure: cuda or cpu (default: cuda if available).")
@click.option("--ranks", default=1, show_default=True, type=click.IntRange(min=1), help="With --backend striped-ring: simulated ranks.")
@click.option("--phase", type=click.Choice(["prefill", "decode"]), default="prefill", show_default=True)
@click.option("--moe-timing", type=click.Choice(["dense-equivalent", "routed"]), default="dense-equivalent",
              show_default=True, help="With --measure, MoE layers: one MLP of the active width, or real top-k routing.")
@click.option("--elementwise", type=click.Choice(["unfused", "fused"]), default="unfused", show_default=True,
              help="Predicted time: elementwise ops one kernel per torch op (transformers, lcprof's layer) "
                   "or a serving engine's fused kernels.")
@MASK_OPTION
@FORMAT_OPTION
def layer(model, n, gpu, dtypes, layer_idx, tile, batch, kv_dtype, measure, backend, device, ranks, phase,
          moe_timing, elementwise, mask, fmt):
    """One layer at n: FLOPs (useful/executed), memory, predicted time; --measure times it for real."""
    from lcprof.analytic import layer_report

    dt = [d.strip() for d in dtypes.split(",") if d.strip()]
    rep = layer_report(model, n, gpu=gpu, dtypes=dt, layer=layer_idx, tile=tile, batch=batch, kv_dtype=kv_dtype,
                       elementwise=elementwise, mask=mask)
    measured = None
    if measure:
        from lcprof.measure.api import measure_layer_vs_predicted  # imports torch

        measured = measure_layer_vs_predicted(model, rep.n, backend=backend, dtypes=dt, device=device,
                                              layer=layer_idx, batch=batch, ranks=ranks, phase=phase, gpu=gpu,
                                              moe_timing=moe_timing)
    if fmt != "table":
        recs = rep.records()
        if measured is not None:
            recs += [{"section": "measured", **r} for r in measured.to_dict(orient="records")]
        emit(recs, fmt)
        return
    s = rep.summary
    kind = s["layer_kind"] if s["mask"] is None else f"{s['layer_kind']}, mask {s['mask']}"
    head = (f"{rep.model}  layer {rep.layer} ({kind})  n={rep.n}  batch={s['batch']}  gpu={rep.gpu}")
    click.echo(head)
    click.echo(f"attention share of useful FLOPs: {s['attn_flops_share']:.1%};  linear mixers: "
               f"{s['mixer_flops_share']:.1%};  n* (attention = linear FLOPs): "
               f"layer {s['n_star_layer']}, model {s['n_star_model']}")
    if s["causal_pairs"] is None:
        click.echo("attended pairs per head: none (no attention in this layer)")
    else:
        click.echo(f"attended pairs per head: {s['causal_pairs']:.6g} (full square {s['full_square_pairs']:.6g})")
    click.echo()
    emit(rep.flops, "table", "FLOPs per layer (2 per multiply-add): useful and executed per backend family")
    click.echo()
    emit(rep.memory, "table", f"Memory (activation per backend family; KV for the whole model at n, {s['kv_dtype']})")
    click.echo()
    emit(rep.timing, "table", f"Predicted per-layer time (roofline on {rep.gpu}, executed FLOPs and bytes)")
    if measured is not None:
        click.echo()
        emit(measured, "table", "Measured vs predicted")


def _register_optional() -> None:
    """Commands that live in their own modules (they import torch lazily, inside the command)."""
    import importlib

    for mod in ("lcprof.cli_measure", "lcprof.cli_explain", "lcprof.cli_plan", "lcprof.cli_ring"):
        try:
            m = importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name == mod:
                continue
            raise
        for cmd in getattr(m, "COMMANDS", []):
            main.add_command(cmd)


_register_optional()
