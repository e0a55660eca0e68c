"""The figure conventions every lcprof plot shares: an off-screen matplotlib Figure, tab10 colours,
log2 n axes ticked in tokens (4k, 32k, 128k), titles wrapped so they are never clipped, a legend
in words below the plot, 110 dpi PNG. No pyplot (no global state, no display). No torch."""

from __future__ import annotations

import textwrap
from pathlib import Path


def figure(width: float = 7.5, height: float = 5.2):
    """(fig, ax) on the Agg canvas, constrained layout."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.subplots()


def colors(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


def token_label(n: float) -> str:
    """128, 4k, 32k, 128k, 1M: a tick label for a token count (k = 1024, M = 1024²)."""
    n = float(n)
    if n >= 1 << 20 and n % (1 << 20) == 0:
        return f"{int(n) >> 20}M"
    if n >= 1024 and n % 1024 == 0:
        return f"{int(n) >> 10}k"
    return f"{n:g}"


def token_axis(ax) -> None:
    """Log2 x axis with a tick at every power of two, labelled 128, 256, ..., 4k, ..., 128k."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(LogLocator(base=2, numticks=30))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: token_label(v)))
    ax.xaxis.set_minor_formatter(NullFormatter())


def finish(fig, ax, path: Path | str, *, xlabel: str, ylabel: str, title: str, ylog: bool = True,
           ylim: tuple[float, float] | None = None, **legend) -> None:
    """Token x axis, log y (unless ``ylog=False``) with plain-number ticks, labels, wrapped title,
    grid, legend below the axes (``legend`` kwargs: fontsize, ncols), save."""
    from matplotlib.ticker import LogFormatterSciNotation

    token_axis(ax)
    if ylog:
        ax.set_yscale("log")
        ax.yaxis.set_minor_formatter(LogFormatterSciNotation(labelOnlyBase=False, minor_thresholds=(2, 0.5)))
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title("\n".join(textwrap.wrap(title, 70)), fontsize=11)
    ax.grid(True, which="both", alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if legend.pop("handles", None) is not None:
        pass
    legend.pop("loc", None)
    if labels:
        fig.legend(handles, labels, loc="outside lower center", ncols=legend.pop("ncols", 2),
                   fontsize=legend.pop("fontsize", 8), frameon=False)
    fig.savefig(path, dpi=110)
