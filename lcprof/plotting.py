"""The figure conventions every lcprof plot shares: an off-screen matplotlib Figure, tab10 colours,
log2 n axes, a grid, a legend, 110 dpi PNG. No pyplot (no global state, no display). No torch."""

from __future__ import annotations

from pathlib import Path


def figure(width: float = 7.5, height: float = 4.8):
    """(fig, ax) on the Agg canvas, constrained layout."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.subplots()


def colors(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


def finish(fig, ax, path: Path | str, *, xlabel: str, ylabel: str, title: str, ylog: bool = True,
           **legend) -> None:
    """Log2 x axis (and log y unless ``ylog=False``), labels, grid, legend (``legend`` kwargs), save."""
    ax.set_xscale("log", base=2)
    if ylog:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(**legend)
    fig.savefig(path, dpi=110)
