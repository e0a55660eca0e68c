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
from lcprof.explain.compare import CompareResult, compare_results, compare_table
from lcprof.cost.model import cost, kv_bytes
from lcprof.cost.ops import backend_family
from lcprof.errors import LcprofError
from lcprof.explain.fit import FitResult, fit_results, fit_table, noise_figure
from lcprof.hardware import Hardware
from lcprof.explain.plotting import colors, figure, finish
from lcprof.results import GROUP_KEYS, env_columns, group_label, read_results, split_ok
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
            out.append(f"![{b[2]}]({b[1].name if isinstance(b[1], Path) else b[1]})")
        elif b[0] == "pre":
            out.append("```\n" + b[1] + "\n```")
        elif b[0] == "md":
            out.append(b[1].strip())
    return "\n\n".join(out) + "\n"


_STYLE = ("body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;line-height:1.45;"
          "color:#222}table{border-collapse:collapse;font-size:12px;margin:1em 0;display:block;overflow-x:auto;"
          "max-width:100%}td,th{border:1px solid #ccc;padding:2px 6px}th{background:#f3f3f3}"
          "img{max-width:100%;height:auto}pre{background:#f6f6f6;padding:.6em;overflow-x:auto;white-space:pre-wrap}"
          "code{background:#f3f3f3;padding:0 2px}.summary{border:1px solid #bbb;background:#fafafa;padding:.2em 1em}")


def _embed_images(html_text: str, base: Path) -> str:
    """Replace every relative <img src> with the image's bytes (one self-contained file)."""
    import re

    def repl(m):
        src = html.unescape(m.group(2))
        path = (base / src).resolve()
        if src.startswith(("data:", "http:", "https:")) or not path.is_file():
            return m.group(0)
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        return f'{m.group(1)}data:image/png;base64,{data}{m.group(3)}'

    return re.sub(r'(<img[^>]*?src=")([^"]+)(")', repl, html_text)


def _breakable_headers(html_text: str) -> str:
    """Let a table's column names wrap after their underscores (``attention_tflops_per_s``), so a
    table of many columns fits the page instead of scrolling sideways."""
    import re

    return re.sub(r"(<th[^>]*>)(.*?)(</th>)", lambda m: m.group(1) + m.group(2).replace("_", "_<wbr>") + m.group(3),
                  html_text, flags=re.S)


def _to_html(markdown_text: str, title: str, base: Path) -> str:
    """The Markdown rendered by a real Markdown library (tables, fenced code), images embedded."""
    import markdown

    body = markdown.markdown(markdown_text, extensions=["tables", "fenced_code", "md_in_html"],
                             output_format="html")
    body = _embed_images(_breakable_headers(body), base)
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style></head><body>\n{body}\n</body></html>\n")


def _plan_markdown(plan_path: Path, out: Path) -> str:
    """The plan's Markdown, its headings two levels down and its links made relative to ``out``."""
    import os
    import re

    text = plan_path.read_text()
    text = re.sub(r"^(#+) ", lambda m: "#" * min(6, len(m.group(1)) + 2) + " ", text, flags=re.M)

    def link(m):
        target = m.group(2)
        if re.match(r"^[a-z]+:", target) or target.startswith(("#", "/")):
            return m.group(0)
        rel = os.path.relpath((plan_path.parent / target).resolve(), out.resolve())
        return f"{m.group(1)}({rel})"

    return re.sub(r"(!?\[[^\]]*\])\(([^)\s]+)\)", link, text)


# ----------------------------------------------------------------------------------------------
# Plots
# ----------------------------------------------------------------------------------------------

def _plot_time(fit: FitResult, ok: pd.DataFrame, path: Path) -> None:
    fig, ax = figure(height=5.8)
    lows, highs = [], []
    for g, color in zip(fit.groups, colors(len(fit.groups))):
        pts = g.points
        sel = ok
        for k in GROUP_KEYS:
            sel = sel[sel[k] == g.key[k]]
        yerr = None
        lows.append(float(pts["time_s"].min()))
        highs.append(float(pts["time_s"].max()))
        if {"time_p10_s", "time_p90_s"} <= set(sel.columns):
            q = sel.groupby("n")[["time_p10_s", "time_p90_s"]].median().reindex(pts["n"])
            lo = pts["time_s"].to_numpy() - q["time_p10_s"].to_numpy()
            hi = q["time_p90_s"].to_numpy() - pts["time_s"].to_numpy()
            if np.all(np.isfinite(lo)) and np.all(np.isfinite(hi)):
                yerr = np.vstack([np.maximum(lo, 0), np.maximum(hi, 0)])
                lows.append(float(np.nanmin(q["time_p10_s"])))
                highs.append(float(np.nanmax(q["time_p90_s"])))
        name = group_label(g.key, words=True)
        ax.errorbar(pts["n"], pts["time_s"], yerr=yerr, fmt="o", color=color, ms=4, capsize=2,
                    label=f"{name}: measured (p10 to p90)")
        n_hi = max(float(pts["n"].max()), float(fit.target_n or 0))
        grid = np.geomspace(float(pts["n"].min()), n_hi, 200)
        if g.model is not None:
            curve = g.model.predict(grid)
            ax.plot(grid, curve, "-", color=color, lw=1.2, label=f"{name}: {g.model.kind} fit")
            lows.append(float(curve.min()))
            highs.append(float(curve.max()))
        if g.power_law is not None:
            fit_pts = pts[pts["in_fit"]]
            pg = np.geomspace(float(fit_pts["n"].min()), float(fit_pts["n"].max()), 50)
            ax.plot(pg, g.power_law.predict(pg), ":", color=color, lw=1.2,
                    label=f"{name}: power law, exponent {g.power_law.exponent:.2f}")
        ex = g.extrapolation
        if fit.target_n is not None and np.isfinite(ex.get("target_time_s", np.nan)):
            lo, hi = ex["target_time_lo_s"], ex["target_time_hi_s"]
            err = None
            if np.isfinite(lo) and np.isfinite(hi):
                err = np.array([[ex["target_time_s"] - lo], [hi - ex["target_time_s"]]])
                lows.append(lo)
                highs.append(hi)
            ax.errorbar([fit.target_n], [ex["target_time_s"]], yerr=err, fmt="D", color=color, ms=5, capsize=3,
                        mfc="white", label=f"{name}: extrapolated to {fmt_tokens(fit.target_n)} (95%)")
    ylim = (min(lows) / 1.5, max(highs) * 1.5) if lows else None  # every error bar inside the axes
    finish(fig, ax, path, xlabel="n (tokens)", ylabel="time per layer (s)",
           title="Measured time vs n, with fits" + (f" and extrapolation to {fmt_tokens(fit.target_n)} (95%)"
                                                    if fit.target_n else ""), ylim=ylim, fontsize=7)


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
        ax.plot(loc["n_mid"], loc["local_exponent"], "o-", color=color, ms=4,
                label=f"{group_label(g.key, words=True)}: measured")
        if not predicted.empty:
            sel = predicted
            for k in GROUP_KEYS:
                sel = sel[sel[k] == g.key[k]]
            if len(sel):
                ax.plot(sel["n_mid"], sel["predicted_local_exponent"], "--", color=color, lw=1.2,
                        label=f"{group_label(g.key, words=True)}: predicted ({what})")
    for ref in (1.0, 2.0):
        ax.axhline(ref, color="grey", lw=0.8, alpha=0.6)
    finish(fig, ax, path, xlabel="n (geometric middle of consecutive lengths)",
           ylabel="local exponent d log t / d log n", title="Local scaling exponent: 1 = linear, 2 = quadratic",
           ylog=False, fontsize=7)


def _plot_share(fit: FitResult, path: Path) -> None:
    fig, ax = figure()
    for g, color in zip(fit.groups, colors(len(fit.groups))):
        m = g.model
        if m is None:
            continue
        n_hi = max(float(g.points["n"].max()), float(fit.target_n or 0))
        grid = np.geomspace(float(g.points["n"].min()), n_hi, 200)
        ax.plot(grid, m.growth_share(grid), "-", color=color, label=group_label(g.key, words=True))
        ax.plot(g.points["n"], g.points["quadratic_share"], "o", color=color, ms=3)
    ax.set_ylim(0, 1)
    finish(fig, ax, path, xlabel="n (tokens)", ylabel="share of the fitted time",
           title="Share of attention work (cost-model fit; c2 n² for the polynomial) in the fitted time",
           ylog=False, fontsize=7)


def _plot_ratio(cmp: CompareResult, path: Path) -> None:
    fig, ax = figure()
    rows = cmp.rows[np.isfinite(cmp.rows["ratio"])]
    groups = list(rows.groupby(list(GROUP_KEYS), sort=True))
    for (key_vals, g), color in zip(groups, colors(len(groups))):
        m = g.groupby("n")["ratio"].median()
        ax.plot(m.index, m.to_numpy(), "o-", color=color, ms=4,
                label=group_label(dict(zip(GROUP_KEYS, key_vals)), words=True))
        over = g[g["over_peak"]]
        if len(over):
            ax.plot(over["n"], over["ratio"], "x", color="red", ms=9, mew=2, label="OVER PEAK")
    ax.axhline(1.0, color="grey", lw=0.8)
    top = float(np.nanmax(rows["ratio"])) if len(rows) else 2.0
    finish(fig, ax, path, xlabel="n (tokens)", ylabel="measured / predicted time (1 = at the roofline)",
           title=f"Measured over roofline prediction on {cmp.hardware.name}", ylog=False,
           ylim=(0, max(1.2, top * 1.1)), fontsize=7)


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


#: an environment column with more distinct values than this is summarised (its range), so that the
#: table stays one page wide (a timestamp per row would otherwise list every row's time)
ENV_VALUES_LISTED = 3


def _env_value(c: str, vals: list) -> str:
    """One environment column's values as one short cell: all of them when few; else the range
    (first to last time, min to max number) or the first few, with the count of distinct values."""
    if not vals:
        return "(empty)"
    text = [str(v) for v in vals]
    if len(text) <= ENV_VALUES_LISTED:
        return ", ".join(text)
    k = len(text)
    if c == "timestamp":
        return f"{min(text)} to {max(text)} ({k} distinct)"
    nums = pd.to_numeric(pd.Series(vals), errors="coerce")
    if nums.notna().all():
        return f"{nums.min():.6g} to {nums.max():.6g} ({k} distinct)"
    return ", ".join(text[:ENV_VALUES_LISTED]) + f", ... ({k} distinct)"


def _environment_table(df: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for c in env_columns(df):
        vals = [v for v in pd.unique(df[c].dropna()) if str(v).strip() != ""]
        rows.append({"column": c, "value": _env_value(c, vals)})
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
    hw = None
    cmp = None
    notes: list[str] = []
    held = None
    if gpu is not None or calibration is not None:
        from lcprof.rates import resolve_rates

        rates = resolve_rates(gpu, calibration)
        hw = rates.hardware
        held = hw if rates.kind == "calibration" else None  # a measured profile's attention rates are held
    fit = fit_results(df, min_n=min_n, max_n=max_n, target=target, interval=interval, rates=held)
    if gpu is not None or calibration is not None:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            cmp = compare_results(df, hardware=hw)
        cmp.rates = rates
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
    noise = noise_figure(df)
    doc = _Doc()
    doc.h(1, title)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    doc.p(f"Generated by lcprof {__version__} on {stamp}.")
    doc.h(2, "Summary")
    doc.table(_summary_table(fit, cmp))
    lines = []
    if noise["text"]:
        lines.append(f"Noise of the measurements: {noise['text']}.")
    if cmp is not None:
        lines.append(f"Predictions use {cmp.rates_label}." + (
            f" **{cmp.over_peak_rows} row(s) OVER PEAK** (see below)." if cmp.over_peak_rows else
            " No row exceeds the peak."))
    held = [f"{group_label(g.key, words=True)} at {g.model.rate('attention') / 1e12:.3g} TFLOP/s"
            for g in fit.groups if g.model is not None and g.model.held is not None]
    if held:
        lines.append("Extrapolations hold the calibration's attention rate (fitted: the other classes): "
                     + "; ".join(held) + ".")
    if plan_path is not None:
        head = _plan_headline(plan_path)
        if head:
            lines.append(f"Capacity plan: {head}")
    if lines:
        doc.items(lines)
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
        peaks = ", ".join(f"{k} {v / 1e12:.4g} TFLOP/s" for k, v in hw.peak_flops_per_s.items())
        items.append(f"predictions on {cmp.rates_label}: {peaks}; {hw.hbm_bytes_per_s / 1e9:.4g} GB/s; "
                     f"{hw.memory_bytes / GIB:.4g} GiB")
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
    doc.p("Markers: median measured time per layer (bars: p10 to p90 of the repetitions). Solid: the cost-model fit "
          "(fixed time plus each class of counted work -- matmul FLOPs, attention FLOPs, memory-bound bytes -- at "
          "a fitted rate). Dotted: the power law over the fit range. Open diamond: the extrapolation to the target "
          "with its 95% interval.")
    doc.img(images["time_vs_n"], "time vs n, log-log, with fits")
    doc.h(3, "Fits")
    doc.table(fit_table(fit))
    doc.p("exponent: OLS slope of log t on log n with a 95% t-interval. Rates: non-negative least squares on "
          "relative residuals; a rate the data cannot separate from another is left empty. The extrapolation "
          f"interval ({'delta method' if interval == 'delta' else 'residual bootstrap'}, in log space) adds the "
          "noise of the fit and the drift its own back-tests show (at least 7% per doubling beyond the range); it "
          "cannot show a cliff past the measured range.")
    notes_fit = [f"{g.label}: {'; '.join(g.notes)}" for g in fit.groups if g.notes]
    if notes_fit:
        doc.items(notes_fit)
    doc.h(3, "Share of attention in the fitted time")
    doc.img(images["quadratic_share"], "attention share of the fitted time vs n")
    doc.h(2, "Local exponents, measured and predicted")
    doc.img(images["local_exponent"], f"local exponent vs n, measured and predicted ({what})")
    if cmp is not None:
        doc.table(cmp.exponents[["backend", "dtype", "n_lo", "n_hi", "measured_local_exponent",
                                 "predicted_local_exponent", "flops_local_exponent", "difference"]])
    else:
        doc.table(fit.local[["backend", "dtype", "n_lo", "n_hi", "local_exponent"]])

    if cmp is not None:
        doc.h(2, "Measured vs predicted")
        doc.p(f"Roofline on {cmp.rates_label}.")
        doc.img(images["ratio"], "measured / predicted time vs n")
        if cmp.over_peak_rows:
            doc.p(f"**WARNING: {cmp.over_peak_rows} row(s) achieved more FLOP/s than the peak** -- a FLOP-counting "
                  "bug, a wrong spec or dtype, or a hardware profile slower than the device. They are marked in the "
                  "plot and the table.")
        doc.table(_compare_summary(cmp))
        doc.h(3, "Every row")
        t = compare_table(cmp)
        doc.table(t[[c for c in t.columns if c not in ("model", "device", "flagged")]])
    doc.h(2, "KV-cache memory")
    doc.img(images["kv_memory"], "KV cache vs n from the cost model")
    if plan_path is not None:
        doc.h(2, "Capacity plan")
        import os

        doc.p(f"From [{plan_path.name}]({os.path.relpath(plan_path.resolve(), out.resolve())}).")
        doc.raw_markdown(_plan_markdown(plan_path, out))
    if notes:
        doc.h(2, "Notes")
        doc.items(notes)

    md_path, html_path = out / "report.md", out / "report.html"
    md_text = _to_markdown(doc)
    md_path.write_text(md_text)
    html_path.write_text(_to_html(md_text, title, out))
    return Report(out_dir=out, markdown_path=md_path, html_path=html_path, images=images, fit=fit, compare=cmp,
                  notes=notes)


def _plan_headline(plan_path: Path) -> str:
    """The first headline bullet of a plan README ('' if none)."""
    for line in plan_path.read_text().splitlines():
        if line.startswith("- **"):
            return line[2:].strip()
    return ""


def _summary_table(fit: FitResult, cmp: CompareResult | None) -> pd.DataFrame:
    """One row per group: exponent, extrapolation with its interval, and measured / predicted."""
    rows = []
    ratio = {}
    if cmp is not None:
        for key_vals, g in cmp.rows.groupby(list(GROUP_KEYS), sort=True):
            ratio[tuple(key_vals)] = (g["ratio"].min(), g["ratio"].max())
    for g in fit.groups:
        s = g.summary()
        rec = {"what": group_label(g.key, words=True), "measured n": f"{s['n_min']}..{s['n_max']}",
               "exponent (95%)": (f"{s['exponent']:.2f} [{s['exponent_lo']:.2f}, {s['exponent_hi']:.2f}]"
                                  if np.isfinite(s["exponent_lo"]) else f"{s['exponent']:.2f}")}
        if fit.target_n is not None:
            rec[f"time at {fmt_tokens(fit.target_n)} (95%)"] = (
                f"{s['target_time_s']:.3g} s [{s['target_time_lo_s']:.3g}, {s['target_time_hi_s']:.3g}]"
                if np.isfinite(s.get("target_time_lo_s", np.nan)) else
                (f"{s['target_time_s']:.3g} s" if np.isfinite(s.get("target_time_s", np.nan)) else "n/a"))
        r = ratio.get(tuple(g.key[k] for k in GROUP_KEYS))
        if r is not None:
            rec["measured / predicted"] = f"{r[0]:.2f} to {r[1]:.2f}"
        rows.append(rec)
    return pd.DataFrame(rows)
