"""The lcprof command line: a thin click group. Logic lives in library functions.

Analytic commands never import torch or pandas; measuring commands import them lazily. User
mistakes (LcprofError, click usage errors, files that cannot be read or written) print one line
and exit with code 2. Shared options and value types live in :mod:`lcprof.cli.options`.
"""

from __future__ import annotations

import errno
import os
import sys
import warnings

import click

from lcprof._version import __version__
from lcprof.cli.options import (COMPUTE_DTYPES, FORMAT_OPTION, KV_DTYPES, MASK_OPTION, TokenCount, batch_option, device_option,
                                dtype_option, emit, gpu_option, model_argument, model_option, n_option, phase_option,
                                tile_option, tp_option)
from lcprof.errors import LcprofError, LcprofRuntimeError

#: Commands that live in their own modules, by name: a module is imported only when one of its commands
#: is run or listed (`lcprof kv` never loads the planner's or the ring's CLI). A module that fails to import,
#: or that does not define exactly these commands, is an error, never skipped (tests/cli check the map).
LAZY_COMMANDS = {
    "backends": "lcprof.cli.measure", "sweep": "lcprof.cli.measure",
    "model-sweep": "lcprof.cli.model",
    "fit": "lcprof.cli.explain", "calibrate": "lcprof.cli.explain", "compare": "lcprof.cli.explain",
    "report": "lcprof.cli.explain",
    "plan": "lcprof.cli.plan",
    "ring": "lcprof.cli.ring",
}
COMMAND_MODULES = tuple(dict.fromkeys(LAZY_COMMANDS.values()))


def _os_error_line(exc: OSError) -> str:
    where = f" {exc.filename!r}" if exc.filename else ""
    if exc.filename2:
        where += f" -> {exc.filename2!r}"
    reason = exc.strerror or str(exc)
    return f"cannot access{where}: {reason}"


def load_command_module(mod: str) -> dict[str, click.Command]:
    """The commands module ``mod`` defines (its ``COMMANDS``), by name; an import failure names the module."""
    import importlib

    try:
        m = importlib.import_module(mod)
    except Exception as exc:
        raise ImportError(f"lcprof: command module {mod} failed to import: {exc!r}") from exc
    commands = getattr(m, "COMMANDS", None)
    if not commands:
        raise ImportError(f"lcprof: command module {mod} defines no COMMANDS")
    return {cmd.name: cmd for cmd in commands}


class _Group(click.Group):
    """Turn user mistakes into one line on stderr and exit code 2; load command modules on first use."""

    def list_commands(self, ctx):
        return sorted(set(self.commands) | set(LAZY_COMMANDS))

    def get_command(self, ctx, cmd_name):
        if cmd_name not in self.commands and cmd_name in LAZY_COMMANDS:
            mod = LAZY_COMMANDS[cmd_name]
            loaded = load_command_module(mod)
            expected = {name for name, m in LAZY_COMMANDS.items() if m == mod}
            if set(loaded) != expected:
                raise ImportError(f"lcprof: command module {mod} defines {sorted(loaded)}, "
                                  f"LAZY_COMMANDS lists {sorted(expected)}")
            for name, cmd in loaded.items():
                self.commands.setdefault(name, cmd)
        return self.commands.get(cmd_name)

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        def show_warning(message, category, filename, lineno, file=None, line=None):
            click.echo(f"lcprof: warning: {message}", err=True)

        warnings.showwarning = show_warning
        if "lcprof.spec.config" in sys.modules:  # each invocation starts strict; --allow-unknown turns it off
            sys.modules["lcprof.spec.config"].set_allow_unknown(False)
        try:
            rv = super().main(args=args, prog_name=prog_name, complete_var=complete_var,
                              standalone_mode=False, **extra)
            sys.stdout.flush()
        except LcprofError as exc:
            click.echo(f"lcprof: error: {exc}", err=True)
            sys.exit(2)
        except LcprofRuntimeError as exc:
            click.echo(f"lcprof: error: {exc}", err=True)
            sys.exit(1)
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
        except BrokenPipeError:
            # the reader went away (`lcprof models | head -1`): not an error of ours; keep Python quiet
            _silence_stdout()
            sys.exit(141)
        except OSError as exc:
            # a file or stream that cannot be read or written: unwritable, a folder, a full disk
            _silence_stdout() if exc.errno in (errno.ENOSPC, errno.EPIPE) else None
            click.echo(f"lcprof: error: {_os_error_line(exc)}", err=True)
            sys.exit(2)
        except RecursionError:
            click.echo("lcprof: error: an input is nested too deeply to read (RecursionError)", err=True)
            sys.exit(2)
        if isinstance(rv, int) and standalone_mode:
            sys.exit(rv)
        return rv


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot raise again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lcprof", help="Show the version and exit.")
def main() -> None:
    """lcprof: what long-context LLM inference costs, and why."""


# ----------------------------------------------------------------------------------------------
# Analytic commands (no torch, no pandas)
# ----------------------------------------------------------------------------------------------

@main.command()
@FORMAT_OPTION
def models(fmt):
    """List the bundled model presets."""
    from lcprof.analytic import models_table

    emit(models_table(), fmt)


@main.command()
@FORMAT_OPTION
def gpus(fmt):
    """List the GPU database (peaks, memory, bandwidth, interconnect) and the named links."""
    from lcprof.hardware import gpus_table, links_table

    g, links = gpus_table(), links_table()
    if fmt == "table":
        view = g.select([c for c in g.columns if c not in ("memory_bytes", "source")])
        emit(view, fmt, "GPUs (`--gpu NAME`; dense peaks, decimal rates: 1 TFLOP/s = 1e12 FLOP/s; memory in GiB; "
                        "sources in --format json)")
        click.echo()
        emit(links, fmt, "Links (`lcprof ring --link NAME`; bytes/s one way)")
        return
    emit([{"section": "gpu", **r} for r in g.records()] + [{"section": "link", **r} for r in links.records()], fmt)


@main.command()
@model_argument()
@FORMAT_OPTION
def show(model, fmt):
    """Show a model's spec: shapes, attention kinds, RoPE, MLA/MoE, parameter counts."""
    from lcprof.analytic import show as show_fn

    emit(show_fn(model), fmt)


@main.command()
@model_option()
@n_option(required=True)
@dtype_option(allowed=KV_DTYPES, help_text="KV-cache dtype.")
@batch_option()
@tp_option()
@MASK_OPTION
@dtype_option(names=("--state-dtype",), dest="state_dtype", default=None, allowed=("fp32", "bf16", "fp16"),
              help_text="Dtype of the mixers' recurrent state (default bf16; vLLM's mamba_ssm_cache_dtype, e.g. fp32).")
@FORMAT_OPTION
def kv(model, n, dtype, batch, tp, mask, state_dtype, fmt):
    """KV-cache bytes at each n (sliding/chunked layers capped, MLA latent, TP share), the mixers'
    constant state, and their sum."""
    from lcprof.analytic import kv_table

    emit(kv_table(model, n, dtype=dtype, batch=batch, tp=tp, mask=mask, state_dtype=state_dtype), fmt)


@main.command()
@model_option()
@n_option(required=True)
@phase_option()
@click.option("--prefix", default="0", show_default=True, type=TokenCount(allow_zero=True),
              help="Cached prefix tokens before the n new ones (0, 4096, 128k).")
@batch_option()
@click.option("--layer", type=click.IntRange(min=0), default=None,
              help="One layer's index, from 0 (default: the whole model).")
@tile_option()
@click.option("--lm-head/--no-lm-head", default=False, show_default=True, help="Count the lm_head projection.")
@MASK_OPTION
@FORMAT_OPTION
def flops(model, n, phase, prefix, batch, layer, tile, lm_head, mask, fmt):
    """FLOP breakdown (2 per multiply-add), useful and executed, per n."""
    from lcprof.analytic import flops_table

    table = flops_table(model, n, phase=phase, batch=batch, prefix=prefix, layer=layer, tile=tile, lm_head=lm_head,
                        mask=mask)
    if fmt == "table":
        table = table.select(["n"] + [c for c in table.columns if c.endswith("_flops") or c == "attn_share"])
    emit(table, fmt)


@main.command()
@model_option()
@n_option(one=True, help_text="Target context in tokens (default: the model's max positions).")
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
        return
    recs = [{"section": "summary", **summary}]
    if pairs:
        recs += [{"section": "pairs", **r} for r in table.records()]
    emit(recs, fmt)


@main.command()
@model_argument("model_a")
@model_argument("model_b")
@n_option(one=True, help_text="Reference length for the cost rows (default: the smaller max positions, "
                              "at most 131072).")
@FORMAT_OPTION
def diff(model_a, model_b, n, fmt):
    """What differs between two models: raw config fields, derived spec fields, and what each costs."""
    from lcprof.analytic import diff as diff_fn

    emit(diff_fn(model_a, model_b, n), fmt)


@main.command()
@model_option()
@n_option(required=True, one=True)
@gpu_option()
@dtype_option(names=("--dtype",), dest="dtypes", default="fp32,bf16", allowed=COMPUTE_DTYPES, many=True,
              help_text="Comma-separated compute dtypes to predict (and measure).")
@click.option("--layer", "layer_idx", default=0, show_default=True, type=click.IntRange(min=0),
              help="Which layer (its attention kind, window, MoE), from 0.")
@tile_option()
@batch_option()
@dtype_option(names=("--kv-dtype",), dest="kv_dtype", default=None, allowed=KV_DTYPES,
              help_text="KV-cache dtype for every row (default: each --dtype's own, tf32 stored as fp32).")
@click.option("--measure", is_flag=True, help="Also build the real layer in torch and time it.")
@click.option("--backend", default="sdpa", show_default=True, help="With --measure: attention backend (see `lcprof backends`).")
@device_option()
@click.option("--ranks", default=1, show_default=True, type=click.IntRange(1, 1024),
              help="With --backend striped-ring: simulated ranks.")
@phase_option()
@click.option("--moe-timing", type=click.Choice(["dense-equivalent", "routed"]), default="dense-equivalent",
              show_default=True, help="With --measure, MoE layers: one MLP of the active width, or real top-k routing.")
@click.option("--elementwise", type=click.Choice(["unfused", "fused"]), default="unfused", show_default=True,
              help="Predicted time: elementwise ops one kernel per torch op (transformers, lcprof's layer) "
                   "or a serving engine's fused kernels.")
@click.option("--calibration", default=None, metavar="PROFILE.json|RESULTS.csv|datasheet",
              help="Rates for predicted times: a profile from `lcprof calibrate`, rates fitted from a sweep's results, "
                   "or 'datasheet' (an upper bound). Default: the best profile at hand for --gpu, else its datasheet.")
@MASK_OPTION
@FORMAT_OPTION
def layer(model, n, gpu, dtypes, layer_idx, tile, batch, kv_dtype, measure, backend, device, ranks, phase,
          moe_timing, elementwise, calibration, mask, fmt):
    """One layer at n: FLOPs (useful/executed), memory, predicted time; --measure times it for real."""
    from lcprof.analytic import layer_report

    rep = layer_report(model, n, gpu=gpu, dtypes=dtypes, layer=layer_idx, tile=tile, batch=batch, kv_dtype=kv_dtype,
                       elementwise=elementwise, calibration=calibration, backend=backend, mask=mask)
    measured = None
    if measure:
        from lcprof.measure.api import measure_layer_vs_predicted  # imports torch

        measured = measure_layer_vs_predicted(model, rep.n, backend=backend, dtypes=dtypes, device=device,
                                              layer=layer_idx, batch=batch, ranks=ranks, phase=phase, gpu=gpu,
                                              moe_timing=moe_timing)
    if fmt != "table":
        from lcprof.render import records

        recs = rep.records()
        if measured is not None:
            recs += [{"section": "measured", **r} for r in records(measured)]
        emit(recs, fmt)
        return
    s = rep.summary
    kv_note = (f"KV cache in {s['kv_dtype']} (--kv-dtype)" if s["kv_dtype_source"] == "--kv-dtype"
               else f"KV cache in each --dtype ({s['kv_dtype']})")
    kind = s["layer_kind"] if s["mask"] is None else f"{s['layer_kind']}, mask {s['mask']}"
    head = f"{rep.model}  layer {rep.layer} ({kind})  n={rep.n}  batch={s['batch']}  gpu={rep.gpu}  {kv_note}"
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
    emit(rep.memory, "table", f"Memory (activation per backend family; KV for the whole model and one layer at n, "
                              f"{kv_note})")
    click.echo()
    timing = rep.timing
    if all(st == "ok" for st in timing["status"]):
        timing = timing.select([c for c in timing.columns if c not in ("status", "reason")])
    emit(timing, "table", f"Predicted per-layer time (roofline on {s['rates']}; attention at "
                          f"{backend}'s calibrated rate where measured; executed FLOPs and bytes)")
    if measured is not None:
        click.echo()
        emit(measured, "table", "Measured vs predicted")
