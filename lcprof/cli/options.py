"""Shared CLI options and value types: each option is defined once, here, and used everywhere.

Types refuse bad values at the option (click prints one line, exit 2), before any library code
runs: NaN and infinity, counts out of range, unknown dtypes and GPUs, output paths that cannot be
written, input files that cannot be read. Cheap to import: click and lcprof.units only (the GPU
database is read when a --gpu value is checked).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import click

from lcprof.errors import LcprofError

#: Largest --batch lcprof accepts; KV and activation bytes stay exact well beyond any real batch.
MAX_BATCH = 1 << 20
#: Largest tensor-parallel degree and tile size.
MAX_TP = 1 << 16
MAX_TILE = 1 << 20
#: Largest --repeats of a measurement.
MAX_REPEATS = 100_000
#: Dtype names, by what they describe.
COMPUTE_DTYPES = ("fp32", "tf32", "bf16", "fp16", "fp8")
KV_DTYPES = ("fp32", "bf16", "fp16", "fp8", "int8")


# ----------------------------------------------------------------------------------------------
# Value types
# ----------------------------------------------------------------------------------------------

class _LcprofType(click.ParamType):
    """A click type whose conversion may raise LcprofError; its message becomes the option's error."""

    def convert(self, value, param, ctx):
        if not isinstance(value, str):
            return value
        try:
            return self.parse(value)
        except LcprofError as exc:
            self.fail(str(exc), param, ctx)

    def parse(self, text: str):  # pragma: no cover - overridden
        raise NotImplementedError


class TokenCount(_LcprofType):
    """One token count: 131072, 128k, 1M (at most ``units.MAX_TOKENS``, or ``max_tokens``)."""

    name = "TOKENS"

    def __init__(self, max_tokens: int | None = None, allow_zero: bool = False):
        self.max_tokens, self.allow_zero = max_tokens, allow_zero

    def parse(self, text):
        from lcprof.units import parse_tokens

        if self.allow_zero and str(text).strip() == "0":
            return 0
        n = parse_tokens(text)
        if self.max_tokens is not None and n > self.max_tokens:
            raise LcprofError(f"token count {text!r} is larger than this command accepts ({self.max_tokens})")
        return n


class TokenList(_LcprofType):
    """Token counts: 4k,8k,32k or a doubling range 128..131072; converts to a sorted list of ints."""

    name = "TOKENS"

    def parse(self, text):
        from lcprof.units import parse_token_list

        return parse_token_list(text)


class FiniteFloat(_LcprofType):
    """A finite number (NaN and infinity refused), optionally bounded; ``min_open`` makes the
    lower bound strict (> min rather than >= min)."""

    name = "NUMBER"

    def __init__(self, min: float | None = None, max: float | None = None, min_open: bool = False):
        self.min, self.max, self.min_open = min, max, min_open

    def parse(self, text):
        try:
            v = float(text)
        except ValueError:
            raise LcprofError(f"{text!r} is not a number") from None
        if not math.isfinite(v):
            raise LcprofError(f"{text!r} is not a finite number")
        if self.min is not None and (v <= self.min if self.min_open else v < self.min):
            raise LcprofError(f"{text!r} must be {'>' if self.min_open else '>='} {self.min:g}")
        if self.max is not None and v > self.max:
            raise LcprofError(f"{text!r} must be <= {self.max:g}")
        return v


class DtypeName(_LcprofType):
    """A dtype name (fp32, bf16, ...; aliases such as float16 accepted), canonicalised."""

    name = "DTYPE"

    def __init__(self, allowed: tuple[str, ...]):
        self.allowed = allowed

    def parse(self, text):
        from lcprof.units import dtype_name

        return dtype_name(text, allowed=self.allowed)


class DtypeList(DtypeName):
    """Comma-separated dtype names, canonicalised, duplicates dropped (order kept)."""

    name = "DTYPES"

    def parse(self, text):
        from lcprof.units import dtype_name

        parts = [p.strip() for p in str(text).split(",")]
        if not parts or any(not p for p in parts):
            raise LcprofError(f"malformed dtype list {text!r}; use e.g. fp32,bf16")
        return list(dict.fromkeys(dtype_name(p, allowed=self.allowed) for p in parts))


class GpuName(_LcprofType):
    """A GPU from the database (key or alias, see `lcprof gpus`); the value stays as typed."""

    name = "GPU"

    def parse(self, text):
        from lcprof.hardware import get_gpu

        get_gpu(text)
        return text


class LinkSpeed(_LcprofType):
    """A link name from the database (nvlink4, pcie5, ...) or a positive finite number of bytes/s."""

    name = "LINK"

    def parse(self, text):
        from lcprof.hardware import link_bandwidth

        link_bandwidth(text)
        return text


def _describe(path: Path) -> str:
    return repr(str(path))


class OutputFile(_LcprofType):
    """A file path lcprof may create or overwrite: its folder exists and is writable, the path is
    not a folder. (A full disk, e.g. /dev/full, is reported when the write fails.)"""

    name = "FILE"

    def parse(self, text):
        if not str(text).strip():
            raise LcprofError("an output path cannot be empty")
        p = Path(text).expanduser()
        if p.is_dir():
            raise LcprofError(f"output {_describe(p)} is a folder; give a file path")
        parent = p.parent if str(p.parent) else Path(".")
        check_writable_folder(parent, what=f"output {_describe(p)}")
        if p.exists() and not os.access(p, os.W_OK):
            raise LcprofError(f"output {_describe(p)}: permission denied")
        return str(p)


class OutputDir(_LcprofType):
    """A folder lcprof writes into: it exists (or its parent does, and lcprof creates it) and is writable."""

    name = "DIR"

    def parse(self, text):
        if not str(text).strip():
            raise LcprofError("an output folder cannot be empty")
        p = Path(text).expanduser()
        if p.exists():
            if not p.is_dir():
                raise LcprofError(f"output folder {_describe(p)} is a file")
            check_writable_folder(p, what=f"output folder {_describe(p)}")
        else:
            check_writable_folder(p.parent if str(p.parent) else Path("."), what=f"output folder {_describe(p)}")
        return str(p)


class InputFile(_LcprofType):
    """An existing, readable regular file."""

    name = "FILE"

    def parse(self, text):
        p = Path(text).expanduser()
        if not p.exists():
            raise LcprofError(f"cannot read {_describe(p)}: no such file")
        if p.is_dir():
            raise LcprofError(f"cannot read {_describe(p)}: it is a folder")
        if not os.access(p, os.R_OK):
            raise LcprofError(f"cannot read {_describe(p)}: permission denied")
        return str(p)


def check_writable_folder(folder: Path, *, what: str) -> None:
    """Raise LcprofError unless ``folder`` exists, is a folder and is writable (one line, naming it)."""
    folder = Path(folder)
    # walk up to the first component that exists: it says why the folder is missing
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe != folder:
        if probe.exists() and not probe.is_dir():
            raise LcprofError(f"{what}: {str(probe)!r} is a file, not a folder")
        raise LcprofError(f"{what}: folder {str(folder)!r} does not exist; create it first")
    if not folder.is_dir():
        raise LcprofError(f"{what}: {str(folder)!r} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise LcprofError(f"{what}: folder {str(folder)!r} is not writable")


# ----------------------------------------------------------------------------------------------
# Options (decorators). Each is defined once; commands combine them.
# ----------------------------------------------------------------------------------------------

FORMAT_OPTION = click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table",
                             show_default=True,
                             help="Output format: a text table, JSON (a list of flat records with unit-suffixed "
                                  "keys) or CSV (the same records).")

MODEL_HELP = ("Preset name or alias (see `lcprof models`), a path to a HuggingFace config.json or its folder, "
              "or a Hugging Face id (org/name[@revision]; the local Hub cache first).")


def _set_allow_unknown(ctx, param, value):
    if value:
        from lcprof.spec import set_allow_unknown

        set_allow_unknown(True)


#: ``--allow-unknown``: load a config.json carrying fields lcprof does not understand, warning with
#: their names, instead of refusing it (lcprof.spec.config). Stacked under every model option.
ALLOW_UNKNOWN_OPTION = click.option(
    "--allow-unknown", is_flag=True, expose_value=False, is_eager=True, callback=_set_allow_unknown,
    help="Load a config.json even when it has fields lcprof does not understand (warns, naming them; "
         "costs may then be wrong).")


def model_option(required: bool = True):
    """--model/-m: a preset, a config.json or a Hub id (the library loads and validates it), with
    ``--allow-unknown``."""
    opt = click.option("--model", "-m", required=required, help=MODEL_HELP)
    return lambda f: opt(ALLOW_UNKNOWN_OPTION(f))


#: ``--mask``: a what-if attention mask for every attention layer (parsed by lcprof.cost.masks.parse_mask).
MASK_OPTION = click.option(
    "--mask", default=None,
    help="What-if attention mask for every attention layer: sliding:W, chunked:C, dilated:2048x1,4096x2, "
         "sinks:4+window:4096, longformer:window=W,global=G, bigbird:block=64,window=3,global=2,random=3, "
         "topk:2048, infini:segment=2048 (see lcprof.cost.masks).")


def model_argument(name: str = "model"):
    """A model given as an argument (see MODEL_HELP); the first one of a command brings ``--allow-unknown``."""
    arg = click.argument(name, metavar=name.upper())

    def deco(f):
        f = arg(f)
        params = getattr(f, "__click_params__", [])
        if not any(getattr(p, "name", None) == "allow_unknown" for p in params):
            f = ALLOW_UNKNOWN_OPTION(f)
        return f
    return deco


def n_option(*, required: bool = False, one: bool = False, help_text: str | None = None, default=None,
             names: tuple[str, ...] = ("--n",), max_tokens: int | None = None):
    """--n: token counts (a list or doubling range; ``one=True`` for a single count)."""
    if help_text is None:
        help_text = ("Sequence length in tokens: 131072, 128k, 1M." if one else
                     "Token counts: 131072, 128k (=131072), 1M, a list 4k,8k or a doubling range 128..131072.")
    kw = {"default": default} if default is not None else {}  # default=None would satisfy required=True
    return click.option(*names, "n", type=TokenCount(max_tokens) if one else TokenList(), required=required,
                        help=help_text, show_default=default is not None, **kw)


def batch_option(help_text: str = "Sequences in the batch."):
    return click.option("--batch", default=1, show_default=True, type=click.IntRange(1, MAX_BATCH),
                        help=f"{help_text} (1..{MAX_BATCH}).")


def seed_option():
    return click.option("--seed", default=0, show_default=True, type=click.IntRange(0, 2 ** 63 - 1),
                        help="Seeds the weights, the inputs and (sweeps) the randomised order the points are timed in.")


def reps_options(min_default: int = 3, max_default: int = 100):
    """--min-reps and --max-reps: bounds on the timed repetitions per point."""
    return [
        click.option("--min-reps", default=min_default, show_default=True, type=click.IntRange(1, MAX_REPEATS),
                     help="Fewest timed repetitions per point, whatever the time budget."),
        click.option("--max-reps", default=max_default, show_default=True, type=click.IntRange(1, MAX_REPEATS),
                     help="Most timed repetitions per point (at least --min-reps)."),
    ]


def tp_option():
    return click.option("--tp", default=1, show_default=True, type=click.IntRange(1, MAX_TP),
                        help="Tensor-parallel degree: the numbers are one GPU's share.")


def tile_option():
    return click.option("--tile", default=128, show_default=True, type=click.IntRange(1, MAX_TILE),
                        help="Tile size (queries x keys, square) of tiled attention kernels: they skip only "
                             "fully masked tiles.")


def gpu_option(default: str | None = "h100-sxm", help_text: str = "GPU for predicted times (see `lcprof gpus`)."):
    return click.option("--gpu", default=default, show_default=default is not None, type=GpuName(), help=help_text)


def dtype_option(*, names=("--dtype",), dest: str = "dtype", default: str | None = "bf16",
                 allowed: tuple[str, ...] = KV_DTYPES, many: bool = False, help_text: str = "Dtype."):
    kw = {"default": default} if default is not None else {}
    return click.option(*names, dest, type=DtypeList(allowed) if many else DtypeName(allowed),
                        show_default=default is not None, help=f"{help_text} Accepted: {', '.join(allowed)}.", **kw)


def phase_option(help_text: str = "prefill: n new tokens; decode: one new token after n cached ones."):
    return click.option("--phase", type=click.Choice(["prefill", "decode"]), default="prefill", show_default=True,
                        help=help_text)


def device_option(help_text: str = "With --measure: cuda, cuda:N or cpu (default: cuda if available)."):
    return click.option("--device", default=None, help=help_text)


def timeout_option(default: float = 300.0, help_text: str = "Seconds before a stuck step gives up."):
    return click.option("--timeout-s", default=default, show_default=True, type=FiniteFloat(min=0, min_open=True),
                        help=help_text)


def emit(obj, fmt: str, title: str | None = None) -> None:
    """Render a table, records or a dict in ``fmt`` to stdout."""
    from lcprof.render import render

    click.echo(render(obj, fmt, title))


def with_options(options):
    """Apply a list of option decorators in the order listed."""
    def deco(f):
        for opt in reversed(options):
            f = opt(f)
        return f
    return deco


__all__ = [
    "DtypeList", "DtypeName", "FORMAT_OPTION", "FiniteFloat", "GpuName", "InputFile", "LinkSpeed", "MAX_BATCH",
    "MODEL_HELP", "OutputDir", "OutputFile", "TokenCount", "TokenList", "batch_option", "check_writable_folder",
    "MASK_OPTION", "device_option", "dtype_option", "emit", "gpu_option", "model_argument", "model_option", "n_option", "phase_option", "reps_options", "seed_option",
    "tile_option", "timeout_option", "tp_option", "with_options",
]
