"""A self-contained report of results files: Markdown + HTML, PNG plots, fit and compare tables.

``build_report(files, out_dir)`` writes into ``out_dir``:

* ``report.md``   -- Markdown, images linked relatively (``![...](time_vs_n.png)``);
* ``report.html`` -- the same content, images embedded as base64 (one file you can mail);
* PNG plots (matplotlib, Agg canvas, no display needed):
  ``time_vs_n.png`` (log-log, per backend, with the power-law and c0 + c1 n + c2 n² fits and the
  extrapolation to the target), ``local_exponent.png`` (measured vs predicted),
  ``quadratic_share.png``, ``ratio.png`` (measured / predicted, when a GPU or a calibration is
  given) and ``kv_memory.png`` (KV cache vs n from the cost model, for the models in the files).

The report records the command line, the input files, the rows left out and why, and the
environment columns of the results. A planner table is included when ``plan`` is given or a
``plan.md`` sits in ``out_dir``. No torch.
"""

from __future__ import annotations

import base64
import html
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from lcprof._version import __version__
from lcprof.compare import CompareResult, compare_results, compare_table
from lcprof.cost.model import cost, kv_bytes
from lcprof.cost.ops import backend_family
from lcprof.errors import LcprofError
from lcprof.fit import (FitResult, GROUP_KEYS, env_columns, fit_results, fit_table, group_label, read_results,
                        split_ok)
from lcprof.hardware import Hardware
from lcprof.plotting import colors, figure, finish
from lcprof.render import _clean, _fmt_cell
from lcprof.spec import load_model
from lcprof.units import dtype_name, fmt_tokens

GIB = float(1 << 30)


# ----------------------------------------------------------------------------------------------
# A tiny document model rendered twice (Markdown and HTML)
# ----------------------------------------------------------------------------------------------

@dataclass
class _Doc:
    blocks: list = field(default_factory=list)

    def h(self, level: int, text: str):
        self.blocks.append(("h", level, text))

    def p(self, text: str):
        self.blocks.append(("p", text))

    def items(self, items: list[str]):
        self.blocks.append(("ul", items))

    def table(self, df: pd.DataFrame):
        self.blocks.append(("table", df))

    def img(self, path: Path, alt: str):
        self.blocks.append(("img", path, alt))

    def pre(self, text: str):
        self.blocks.append(("pre", text))

    def raw_markdown(self, text: str):
        self.blocks.append(("md", text))


def _cells(df: pd.DataFrame) -> tuple[list[str], list[list]]:
    rows = [[_fmt_cell(_clean(v)) for v in r] for r in df.itertuples(index=False)]
    rows = [["" if v is None else v for v in r] for r in rows]
    return [str(c) for c in df.columns], rows


def _to_markdown(doc: _Doc) -> str:
    from tabulate import tabulate

    out = []
    for b in doc.blocks:
        if b[0] == "h":
            out.append("#" * b[1] + " " + b[2])
        elif b[0] == "p":
            out.append(b[1])
        elif b[0] == "ul":
            out.append("\n".join(f"- {x}" for x in b[1]))
        elif b[0] == "table":
            headers, rows = _cells(b[1])
            out.append(tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True))
        elif b[0] == "img":
            out.append(f"![{b[2]}]({b[1].name})")
        elif b[0] == "pre":
            out.append("```\n" + b[1] + "\n```")
        elif b[0] == "md":
            out.append(b[1].strip())
    return "\n\n".join(out) + "\n"


def _inline_code(text: str) -> str:
    """Escape text for HTML and turn `code` spans into <code>."""
    parts = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def _to_html(doc: _Doc, title: str) -> str:
    from tabulate import tabulate

    body = []
    for b in doc.blocks:
        if b[0] == "h":
            body.append(f"<h{b[1]}>{_inline_code(b[2])}</h{b[1]}>")
        elif b[0] == "p":
            body.append(f"<p>{_inline_code(b[1])}</p>")
        elif b[0] == "ul":
            body.append("<ul>" + "".join(f"<li>{_inline_code(x)}</li>" for x in b[1]) + "</ul>")
        elif b[0] == "table":
            headers, rows = _cells(b[1])
            body.append(tabulate(rows, headers=headers, tablefmt="html", disable_numparse=True))
        elif b[0] == "img":
            data = base64.b64encode(b[1].read_bytes()).decode("ascii")
            body.append(f'<figure><img alt="{html.escape(b[2])}" src="data:image/png;base64,{data}">'
                        f"<figcaption>{html.escape(b[2])} ({html.escape(b[1].name)})</figcaption></figure>")
        elif b[0] in ("pre", "md"):
            body.append(f"<pre>{html.escape(b[1].strip())}</pre>")
    style = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;line-height:1.4}"
             "table{border-collapse:collapse;font-size:13px;margin:1em 0}td,th{border:1px solid #ccc;padding:2px 6px}"
             "th{background:#f3f3f3}img{max-width:100%}pre{background:#f6f6f6;padding:.6em;overflow-x:auto}"
             "code{background:#f3f3f3;padding:0 2px}")
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


# ----------------------------------------------------------------------------------------------
# Plots
# ----------------------------------------------------------------------------------------------

def _plot_time(fit: FitResult, ok: pd.DataFrame, path: Path) -> None:
    fig, ax = figure()
    handles = []
    for g, color in zip(fit.groups, colors(len(fit.groups))):
        pts = g.points
        sel = ok
        for k in GROUP_KEYS:
            sel = sel[sel[k] == g.key[k]]
        yerr = None
        if {"time_p10_s", "time_p90_s"} <= set(sel.columns):
            q = sel.groupby("n")[["time_p10_s", "time_p90_s"]].median().reindex(pts["n"])
            lo = pts["time_s"].to_numpy() - q["time_p10_s"].to_numpy()
            hi = q["time_p90_s"].to_numpy() - pts["time_s"].to_numpy()
            if np.all(np.isfinite(lo)) and np.all(np.isfinite(hi)):
                yerr = np.vstack([np.maximum(lo, 0), np.maximum(hi, 0)])
        handles.append(ax.errorbar(pts["n"], pts["time_s"], yerr=yerr, fmt="o", color=color, ms=4, capsize=2,
                                   label=f"{g.label}: measured"))
        n_hi = max(float(pts["n"].max()), float(fit.target_n or 0))
        grid = np.geomspace(float(pts["n"].min()), n_hi, 200)
        if g.decomposition is not None:
            handles += ax.plot(grid, g.decomposition.predict(grid), "-", color=color, lw=1.2,
                               label="   fit c0 + c1 n + c2 n²")
        if g.power_law is not None:
            fit_pts = pts[pts["in_fit"]]
            pg = np.geomspace(float(fit_pts["n"].min()), float(fit_pts["n"].max()), 50)
            handles += ax.plot(pg, g.power_law.predict(pg), ":", color=color, lw=1.2,
                               label=f"   power law, exponent {g.power_law.exponent:.2f}")
        ex = g.extrapolation
        if fit.target_n is not None and np.isfinite(ex.get("target_time_s", np.nan)):
            lo, hi = ex["target_time_lo_s"], ex["target_time_hi_s"]
            err = None
            if np.isfinite(lo) and np.isfinite(hi):
                err = np.array([[ex["target_time_s"] - lo], [hi - ex["target_time_s"]]])
            ax.errorbar([fit.target_n], [ex["target_time_s"]], yerr=err, fmt="D", color=color, ms=5, capsize=3,
                        mfc="white")
    finish(fig, ax, path, xlabel="n (tokens)", ylabel="time per layer (s)",
           title="Measured time vs n, with fits" + (f" and extrapolation to {fmt_tokens(fit.target_n)} (95%)"
                                                    if fit.target_n else ""),
           handles=handles, fontsize=7, loc="upper left")


def _flops_local(ok: pd.DataFrame) -> pd.DataFrame:
    """Local exponent of the cost model's executed FLOPs per group (a prediction that needs no hardware)."""
    frames = []
    for key_vals, g in ok.groupby(list(GROUP_KEYS), sort=True):
        key = dict(zip(GROUP_KEYS, key_vals))
        ns = np.unique(g["n"].to_numpy(np.float64))
        if len(ns) < 2:
            continue
        try:
            c = cost(load_model(key["model"]), ns, phase=key["phase"], batch=int(key["batch"]),
                     dtype=dtype_name(key["dtype"]), family=backend_family(key["backend"]), layer=int(key["layer"]))
        except LcprofError:
            continue
        f = np.asarray(c.flops["total"])
        frames.append(pd.DataFrame({**{k: key[k] for k in GROUP_KEYS}, "n_mid": np.sqrt(ns[1:] * ns[:-1]),
                                    "predicted_local_exponent": np.log(f[1:] / f[:-1]) / np.log(ns[1:] / ns[:-1])}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _plot_local(fit: FitResult, predicted: pd.DataFrame, what: str, path: Path) -> None:
    fig, ax = figure()
    for g, color in zip(fit.groups, colors(len(fit.groups))):
        loc = g.local
        if loc.empty:
            continue
        ax.plot(loc["n_mid"], loc["local_exponent"], "o-", color=color, ms=4, label=f"{g.label} measured")
        if not predicted.empty:
            sel = predicted
            for k in GROUP_KEYS:
                sel = sel[sel[k] == g.key[k]]
            if len(sel):
                ax.plot(sel["n_mid"], sel["predicted_local_exponent"], "--", color=color, lw=1.2,
                        label=f"predicted ({what})")
    for ref in (1.0, 2.0):
        ax.axhline(ref, color="grey", lw=0.8, alpha=0.6)
    finish(fig, ax, path, xlabel="n (geometric middle of consecutive lengths)",
           ylabel="local exponent d log t / d log n", title="Local scaling exponent: 1 = linear, 2 = quadratic",
           ylog=False, fontsize=7)


def _plot_share(fit: FitResult, path: Path) -> None:
    fig, ax = figure()
    for g, color in zip(fit.groups, colors(len(fit.groups))):
        d = g.decomposition
        if d is None:
            continue
        n_hi = max(float(g.points["n"].max()), float(fit.target_n or 0))
        grid = np.geomspace(float(g.points["n"].min()), n_hi, 200)
        ax.plot(grid, d.shares(grid)["quadratic_share"], "-", color=color, label=g.label)
        ax.plot(g.points["n"], g.points["quadratic_share"], "o", color=color, ms=3)
        if d.n_star is not None and grid[0] <= d.n_star <= grid[-1]:
            ax.axvline(d.n_star, color=color, ls=":", lw=1)
    ax.set_ylim(0, 1)
    finish(fig, ax, path, xlabel="n (tokens)", ylabel="c2 n² / fitted t(n)",
           title="Share of the quadratic term (dotted: crossover n* = c1/c2)", ylog=False, fontsize=7)


def _plot_ratio(cmp: CompareResult, path: Path) -> None:
    fig, ax = figure()
    rows = cmp.rows[np.isfinite(cmp.rows["ratio"])]
    groups = list(rows.groupby(list(GROUP_KEYS), sort=True))
    for (key_vals, g), color in zip(groups, colors(len(groups))):
        m = g.groupby("n")["ratio"].median()
        ax.plot(m.index, m.to_numpy(), "o-", color=color, ms=4, label=group_label(dict(zip(GROUP_KEYS, key_vals))))
        over = g[g["over_peak"]]
        if len(over):
            ax.plot(over["n"], over["ratio"], "x", color="red", ms=9, mew=2, label="OVER PEAK")
    ax.axhline(1.0, color="grey", lw=0.8)
    finish(fig, ax, path, xlabel="n (tokens)", ylabel="measured / predicted time",
           title=f"Measured over roofline prediction on {cmp.hardware.name} (1 = at the roofline)", fontsize=7)


def _plot_kv(ok: pd.DataFrame, target_n, hw: Hardware | None, path: Path) -> list[str]:
    notes = []
    fig, ax = figure()
    n_lo = float(ok["n"].min())
    n_hi = max(float(ok["n"].max()), float(target_n or 0))
    grid = np.unique(np.geomspace(n_lo, max(n_hi, 2 * n_lo), 64).round())
    pairs = sorted({(m, "fp32" if d == "tf32" else d) for m, d in zip(ok["model"], ok["dtype"])})
    for (model, dtype), color in zip(pairs, colors(len(pairs))):
        try:
            spec = load_model(model)
            kv = kv_bytes(spec, grid, kv_dtype=dtype_name(dtype)) / GIB
        except LcprofError as exc:
            notes.append(f"no KV curve for {model} {dtype}: {exc}")
            continue
        ax.plot(grid, kv, "-", color=color, label=f"{spec.name}, {dtype} KV, batch 1, all layers")
    if hw is not None:
        ax.axhline(hw.memory_bytes / GIB, color="red", lw=1, ls="--", label=f"{hw.name} memory")
    finish(fig, ax, path, xlabel="n (tokens)", ylabel="KV cache (GiB = 2^30 bytes)",
           title="KV-cache memory vs n (cost model)", fontsize=7)
    return notes


# ----------------------------------------------------------------------------------------------
# The report
# ----------------------------------------------------------------------------------------------

@dataclass
class Report:
    """What ``build_report`` wrote and the analyses behind it."""

    out_dir: Path
    markdown_path: Path
    html_path: Path
    images: dict  # name -> Path
    fit: FitResult
    compare: CompareResult | None
    notes: list = field(default_factory=list)

    def summary(self) -> pd.DataFrame:
        """One row per group: exponent, extrapolation, and (with hardware) the median ratio."""
        s = self.fit.summary
        keep = [*GROUP_KEYS, "n_min", "n_max", "exponent", "exponent_lo", "exponent_hi", "n_star"]
        if self.fit.target_n is not None:
            keep += ["target_n", "target_time_s", "target_time_lo_s", "target_time_hi_s"]
        out = s[keep].copy()
        if self.compare is not None:
            med = self.compare.rows.groupby(list(GROUP_KEYS))["ratio"].median().rename("median_ratio").reset_index()
            out = out.merge(med, on=list(GROUP_KEYS), how="left")
        return out


def _environment_table(df: pd.DataFrame) -> pd.DataFrame:
    cols = env_columns(df)
    rows = []
    for c in cols:
        vals = [str(v) for v in pd.unique(df[c].dropna()) if str(v).strip() != ""]
        rows.append({"column": c, "value": ", ".join(vals) if vals else "(empty)"})
    return pd.DataFrame(rows)


def _compare_summary(cmp: CompareResult) -> pd.DataFrame:
    rows = []
    for key_vals, g in cmp.rows.groupby(list(GROUP_KEYS), sort=True):
        key = dict(zip(GROUP_KEYS, key_vals))
        rows.append({"group": group_label(key), "rows": len(g),
                     "ratio_median": g["ratio"].median(), "ratio_min": g["ratio"].min(), "ratio_max": g["ratio"].max(),
                     "pct_of_peak_median": g["pct_of_peak"].median(),
                     "useful_pct_of_peak_median": g["useful_pct_of_peak"].median(),
                     "bound": ", ".join(sorted(set(g["bound"]) - {""})),
                     "over_peak_rows": int(g["over_peak"].sum()), "flagged_rows": int(g["flagged"].sum())})
    return pd.DataFrame(rows)


def build_report(results, out_dir, *, gpu: str | None = None, calibration=None, target=131072, min_n=None,
                 max_n=None, interval: str = "delta", plan=None, command_line: str | None = None,
                 title: str | None = None) -> Report:
    """Write report.md, report.html and the PNG plots for one or more results files into ``out_dir``."""
    paths = [results] if isinstance(results, (str, Path)) else list(results)
    df = read_results(paths)
    fit = fit_results(df, min_n=min_n, max_n=max_n, target=target, interval=interval)
    hw = None
    cmp = None
    notes: list[str] = []
    if gpu is not None or calibration is not None:
        from lcprof.compare import resolve_hardware

        hw = resolve_hardware(gpu, calibration)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            cmp = compare_results(df, hardware=hw)
        for w in caught:
            notes.append(str(w.message))
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    plan_path = Path(plan) if plan is not None else None
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise LcprofError(f"--out {str(out)!r} is a file; give a folder for the report")
    out.mkdir(parents=True, exist_ok=True)
    if plan_path is None and (out / "plan.md").exists():
        plan_path = out / "plan.md"
    if plan_path is not None and not plan_path.exists():
        raise LcprofError(f"cannot read plan {str(plan_path)!r}: no such file")

    ok, _ = split_ok(df)
    images: dict[str, Path] = {}
    images["time_vs_n"] = out / "time_vs_n.png"
    _plot_time(fit, ok, images["time_vs_n"])
    if cmp is not None:
        pred_local = cmp.exponents[[*GROUP_KEYS, "n_mid", "predicted_local_exponent"]]
        what = f"roofline on {hw.key}"
    else:
        pred_local = _flops_local(ok)
        what = "executed FLOPs"
    images["local_exponent"] = out / "local_exponent.png"
    _plot_local(fit, pred_local, what, images["local_exponent"])
    images["quadratic_share"] = out / "quadratic_share.png"
    _plot_share(fit, images["quadratic_share"])
    if cmp is not None:
        images["ratio"] = out / "ratio.png"
        _plot_ratio(cmp, images["ratio"])
    images["kv_memory"] = out / "kv_memory.png"
    notes += _plot_kv(ok, fit.target_n, hw, images["kv_memory"])

    title = title or "lcprof report: " + ", ".join(sorted(set(ok["model"])))
    doc = _Doc()
    doc.h(1, title)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    doc.p(f"Generated by lcprof {__version__} on {stamp}.")
    doc.pre(command_line or f"build_report({[str(p) for p in paths]!r}, {str(out)!r}, gpu={gpu!r}, "
                            f"calibration={None if calibration is None else str(calibration)!r}, target={target!r})")
    doc.h(2, "Inputs")
    excl = ", ".join(f"{k}: {v}" for k, v in fit.excluded_by_status.items()) or "none"
    items = [f"`{p}`" for p in paths]
    items.append(f"{len(df)} rows, {len(ok)} with status ok; left out of every fit and comparison: {fit.excluded_rows} "
                 f"({excl})")
    if fit.min_n is not None or fit.max_n is not None:
        items.append(f"fit range: n from {fit.min_n or 'the smallest'} to {fit.max_n or 'the largest'}")
    if hw is not None:
        src = "calibration profile" if hw.kind == "calibration" else "datasheet"
        peaks = ", ".join(f"{k} {v / 1e12:.4g} TFLOP/s" for k, v in hw.peak_flops_per_s.items())
        items.append(f"predictions on {hw.name} ({src}: {peaks}; {hw.hbm_bytes_per_s / 1e9:.4g} GB/s; "
                     f"{hw.memory_bytes / GIB:.4g} GiB)")
    else:
        items.append("no --gpu or --calibration given: no predicted times; the predicted exponent is that of "
                     "the executed FLOPs")
    doc.items(items)
    doc.h(3, "Environment (from the results' environment columns)")
    env = _environment_table(df)
    if env.empty:
        doc.p("The results carry no environment columns (a table measured elsewhere).")
    else:
        doc.table(env)
    skipped = df[df["status"] != "ok"]
    if len(skipped):
        doc.h(3, "Rows left out")
        doc.table(skipped[["model", "backend", "dtype", "device", "n", "status", "reason"]])

    doc.h(2, "Time vs n")
    doc.p("Markers: median measured time per layer (bars: p10..p90 when recorded). Solid: the non-negative fit "
          "t(n) = c0 + c1 n + c2 n² (weights 1/t). Dotted: the power law over the fit range. Open diamond: the "
          "extrapolation to the target with its 95% interval.")
    doc.img(images["time_vs_n"], "time vs n, log-log, with fits")
    doc.h(3, "Fits")
    doc.table(fit_table(fit))
    doc.p(f"exponent: OLS slope of log t on log n with a 95% t-interval. c0, c1, c2: non-negative least squares, "
          f"relative residuals. n* = c1/c2: where the quadratic term overtakes the linear one. Extrapolation "
          f"interval: {'delta method (linear propagation of the coefficient covariance, t quantile)' if interval == 'delta' else 'residual bootstrap (percentiles)'}; "
          "it covers measurement noise within the model, not effects the measured range cannot show.")
    notes_fit = [f"{g.label}: {'; '.join(g.notes)}" for g in fit.groups if g.notes]
    if notes_fit:
        doc.items(notes_fit)
    doc.h(3, "Share of the quadratic term")
    doc.img(images["quadratic_share"], "quadratic share of the fitted time vs n")
    doc.h(2, "Local exponents, measured and predicted")
    doc.img(images["local_exponent"], f"local exponent vs n, measured and predicted ({what})")
    if cmp is not None:
        doc.table(cmp.exponents[["model", "backend", "dtype", "device", "n_lo", "n_hi", "measured_local_exponent",
                                 "predicted_local_exponent", "flops_local_exponent", "difference"]])
    else:
        doc.table(fit.local[["model", "backend", "dtype", "device", "n_lo", "n_hi", "local_exponent"]])

    if cmp is not None:
        doc.h(2, f"Measured vs predicted on {hw.name}")
        doc.img(images["ratio"], "measured / predicted time vs n")
        if cmp.over_peak_rows:
            doc.p(f"**WARNING: {cmp.over_peak_rows} row(s) achieved more FLOP/s than the peak** -- a FLOP-counting "
                  "bug, a wrong spec or dtype, or a hardware profile slower than the device. They are marked in the "
                  "plot and the table.")
        doc.table(_compare_summary(cmp))
        doc.h(3, "Every row")
        doc.table(compare_table(cmp))
    doc.h(2, "KV-cache memory")
    doc.img(images["kv_memory"], "KV cache vs n from the cost model")
    if plan_path is not None:
        doc.h(2, "Capacity plan")
        doc.p(f"From `{plan_path}`.")
        doc.raw_markdown(plan_path.read_text())
    if notes:
        doc.h(2, "Notes")
        doc.items(notes)

    md_path, html_path = out / "report.md", out / "report.html"
    md_path.write_text(_to_markdown(doc))
    html_path.write_text(_to_html(doc, title))
    return Report(out_dir=out, markdown_path=md_path, html_path=html_path, images=images, fit=fit, compare=cmp,
                  notes=notes)
