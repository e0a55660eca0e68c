"""Measured vs predicted: each measured row beside its roofline time on a GPU or a calibration profile.

For a row the prediction is the cost model's roofline for **one layer** of that row's own point
key (``lcprof.results.POINT_KEY``: its layer, phase, batch, dtype, MLA form, elementwise
implementation) with the *executed* FLOPs and bytes of what the row recorded it ran
(``executed_family``; else the backend's family: eager computes the full score square, tiled
kernels skip fully masked tiles):

    predicted_time_s = sum over ops of max(op FLOPs / peak(dtype), op bytes / bandwidth)

Then ``ratio = time_s / predicted_time_s`` (1 = at the roofline, 3 = three times slower), achieved
rates ``executed FLOPs / time_s`` and ``useful FLOPs / time_s`` (TFLOP/s = 1e12 FLOP/s) and their
share of the peak. A row whose achieved executed rate exceeds the peak is impossible for honest
counts: it is flagged (``over_peak``), a warning is raised, and the row is kept -- it means a counting
bug, a wrong spec, a wrong dtype, or a hardware profile slower than the device.

The rates come from :func:`lcprof.rates.resolve_rates` (a calibration profile, rates fitted from a
sweep, the best profile at hand for ``--gpu``, or the datasheet -- labelled an upper bound); the
result says which. Rows naming a model (or backend, or dtype) lcprof cannot resolve are kept with
``flagged`` True and a ``note``; they get no prediction. No torch.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from lcprof.cost.model import cost, matmul_dtype, roofline
from lcprof.cost.ops import backend_family
from lcprof.errors import LcprofError
from lcprof.explain.fit import linear_time_note, local_exponents
from lcprof.hardware import Hardware
from lcprof.rates import RateSet, resolve_rates
from lcprof.results import GROUP_KEYS, excluded_summary, no_ok_rows_error, normalize_results, read_results, split_ok
from lcprof.spec import ModelSpec, load_model
from lcprof.units import dtype_name

TFLOP = 1e12


class OverPeakWarning(UserWarning):
    """A measured row achieved more FLOP/s than the hardware's peak."""


class UnresolvedRowWarning(UserWarning):
    """Rows whose model, backend or dtype could not be resolved; kept, flagged, not predicted."""


class HardwareMismatchWarning(UserWarning):
    """CPU measurements compared against a GPU datasheet (or the reverse)."""


def resolve_hardware(gpu: str | Hardware | None = None, calibration=None) -> Hardware:
    """The hardware to predict on (``lcprof.rates.resolve_rates``; kept for callers of the old name)."""
    if gpu is not None and calibration is not None and str(calibration).lower() != "datasheet":
        raise LcprofError("give either --gpu or --calibration, not both")
    return resolve_rates(gpu, calibration).hardware


@dataclass
class CompareResult:
    """``rows``: one per measured ok row; ``exponents``: measured vs predicted local exponents."""

    rows: pd.DataFrame
    exponents: pd.DataFrame
    hardware: Hardware
    excluded_rows: int
    excluded_by_status: dict = field(default_factory=dict)
    rates: RateSet | None = None

    @property
    def rates_label(self) -> str:
        return self.rates.label if self.rates is not None else self.hardware.name

    @property
    def over_peak_rows(self) -> int:
        return int(self.rows["over_peak"].sum()) if len(self.rows) else 0

    @property
    def flagged_rows(self) -> int:
        return int(self.rows["flagged"].sum()) if len(self.rows) else 0


def _spec_for(name: str, specs: dict, cache: dict) -> ModelSpec:
    if name in specs:
        return specs[name]
    if name not in cache:
        try:
            cache[name] = load_model(name)
        except LcprofError as exc:
            cache[name] = exc
    got = cache[name]
    if isinstance(got, Exception):
        raise got
    return got


_PRED_COLS = ("predicted_time_s", "predicted_compute_s", "predicted_memory_s", "executed_flops", "useful_flops",
              "peak_flops_per_s")


def _family_or_empty(backend: str) -> str:
    """The backend's cost-model family, or '' for a backend lcprof does not know (noted later)."""
    try:
        return backend_family(backend)
    except LcprofError:
        return ""


def _predict_group(key: dict, ns: np.ndarray, hw: Hardware, specs: dict, cache: dict, tile: int) -> dict:
    """Predictions for one group (the point key less n and device, plus the executed family) at
    lengths ns, or {'note': why not}."""
    try:
        spec = _spec_for(key["model"], specs, cache)
        if 0 <= int(key["layer"]) < spec.n_layers and not spec.layers[int(key["layer"])].has_attention:
            native = family = "useful"  # no attention (a mixer or MLP-only layer): no family to choose
        else:
            native = backend_family(key["backend"])
            family = key.get("_family") or native
        dtype = dtype_name(key["dtype"], allowed=("fp32", "tf32", "bf16", "fp16", "fp8"))
        c = cost(spec, ns, phase=key["phase"], batch=int(key["batch"]), dtype=dtype, family=family,
                 layer=int(key["layer"]), tile=(tile, tile), mla_form=key.get("mla_form") or None,
                 elementwise=key.get("elementwise", "unfused"))
        peak = hw.peak(matmul_dtype(dtype))
        # a backend's calibrated attention rate holds for its own kernel, not for a fallback
        rate_backend = key["backend"] if family == native else None
        t = roofline(c, hw, backend=rate_backend)
    except LcprofError as exc:
        return {"note": str(exc)}
    attn_rate = hw.attention_rate(rate_backend, matmul_dtype(dtype), ns)
    return {
        "predicted_time_s": np.asarray(t["total"], dtype=np.float64),
        "predicted_compute_s": (np.asarray(c.flops["total"]) - np.asarray(c.flops["attn/total"])) / peak
        + np.asarray(c.flops["attn/total"]) / (peak if attn_rate is None else attn_rate),
        "predicted_memory_s": np.asarray(c.bytes["total"]) / hw.hbm_bytes_per_s,
        "executed_flops": np.asarray(c.flops["total"], dtype=np.float64),
        "useful_flops": np.asarray(c.useful_flops["total"], dtype=np.float64),
        "peak_flops_per_s": np.full(len(ns), peak),
        "family": family,
        "why": linear_time_note(spec, int(key["layer"]), key["phase"]),
    }


def compare_results(results, *, gpu: str | Hardware | None = None, calibration=None, hardware: Hardware | None = None,
                    specs: dict | None = None, tile: int = 128) -> CompareResult:
    """Predicted vs measured for every ok row of a results file (path, list of paths, or DataFrame).

    ``specs`` maps model names used in the file to ModelSpecs (for specs built in code); other
    names are resolved with ``load_model`` (a preset, alias, or config path).
    """
    if gpu is not None and calibration is not None and str(calibration).lower() != "datasheet" \
            and not str(calibration).lower().endswith((".csv", ".jsonl", ".ndjson")):
        raise LcprofError("give either --gpu or --calibration PROFILE.json, not both")
    rates = resolve_rates(gpu, calibration if hardware is None else hardware)
    hw = rates.hardware
    df = normalize_results(results) if isinstance(results, pd.DataFrame) else read_results(results)
    ok, bad = split_ok(df)
    if ok.empty:
        raise no_ok_rows_error(df, bad, "compare")
    devices = set(ok["device"].str.lower().str.split(":").str[0])
    if devices == {"cpu"} and hardware is None and (rates.kind == "datasheet" or calibration is None):
        warnings.warn(f"comparing CPU measurements with {rates.label}; use --calibration with a "
                      "profile from `lcprof calibrate --device cpu` for a CPU roofline", HardwareMismatchWarning,
                      stacklevel=2)
    specs = dict(specs or {})
    cache: dict = {}
    # What each row executed, when the sweep recorded it (an explicit mask runs the whole rectangle;
    # SDPA's own choice may be its math kernel); otherwise the backend's family.
    recorded = ok["executed_family"] if "executed_family" in ok.columns else pd.Series("", index=ok.index)
    recorded = recorded.astype(object).where(recorded.isin(["eager", "tiled", "useful"]), "")
    ok = ok.assign(_family=[r or _family_or_empty(b) for r, b in zip(recorded, ok["backend"])])
    pred_keys = [k for k in GROUP_KEYS if k != "device"] + ["_family"]
    pieces = []
    unresolved: dict[str, int] = {}
    for key_vals, rows in ok.groupby(pred_keys, sort=True):
        key = dict(zip(pred_keys, key_vals))
        rows = rows.sort_values("n")
        ns = rows["n"].to_numpy(np.float64)
        pred = _predict_group(key, ns, hw, specs, cache, tile)
        out = rows[list(GROUP_KEYS) + ["n", "time_s"]].copy()
        if "note" in pred:
            for col in _PRED_COLS:
                out[col] = np.nan
            out["note"] = pred["note"]
            unresolved[pred["note"]] = unresolved.get(pred["note"], 0) + len(rows)
        else:
            for col in _PRED_COLS:
                out[col] = pred[col]
            out["note"] = ""
            out["why"] = pred["why"]
        pieces.append(out)
    table = pd.concat(pieces, ignore_index=True)
    t = table["time_s"].to_numpy(np.float64)
    table["ratio"] = t / table["predicted_time_s"]
    table["achieved_tflops_per_s"] = table["executed_flops"] / t / TFLOP
    table["achieved_useful_tflops_per_s"] = table["useful_flops"] / t / TFLOP
    table["peak_tflops_per_s"] = table["peak_flops_per_s"] / TFLOP
    table["pct_of_peak"] = 100.0 * table["achieved_tflops_per_s"] / table["peak_tflops_per_s"]
    table["useful_pct_of_peak"] = 100.0 * table["achieved_useful_tflops_per_s"] / table["peak_tflops_per_s"]
    table["bound"] = np.where(table["predicted_compute_s"] >= table["predicted_memory_s"], "compute", "memory")
    table.loc[table["predicted_time_s"].isna(), "bound"] = ""
    table["hardware"] = hw.key
    table["over_peak"] = (table["achieved_tflops_per_s"] > table["peak_tflops_per_s"] * (1 + 1e-9)).fillna(False)
    table["flagged"] = table["over_peak"] | (table["note"] != "")
    over = table[table["over_peak"]]
    if len(over):
        table.loc[table["over_peak"], "note"] = [
            (n + "; " if n else "") + "OVER PEAK: achieved rate exceeds the hardware peak" for n in over["note"]]
        first = over.iloc[0]
        warnings.warn(
            f"{len(over)} row(s) achieved more than the peak of {hw.name} (e.g. {first['model']} {first['backend']} "
            f"{first['dtype']} n={int(first['n'])}: {first['achieved_tflops_per_s']:.4g} TFLOP/s > "
            f"{first['peak_tflops_per_s']:.4g}); a FLOP-counting bug, a wrong spec or dtype, or a hardware "
            "profile slower than this device", OverPeakWarning, stacklevel=2)
    for note, count in unresolved.items():
        warnings.warn(f"{count} row(s) flagged and not predicted: {note}", UnresolvedRowWarning, stacklevel=2)
    cols = list(GROUP_KEYS) + ["n", "time_s", "predicted_time_s", "ratio", "achieved_tflops_per_s",
                               "achieved_useful_tflops_per_s", "peak_tflops_per_s", "pct_of_peak",
                               "useful_pct_of_peak", "executed_flops", "useful_flops", "predicted_compute_s",
                               "predicted_memory_s", "bound", "hardware", "over_peak", "flagged", "note", "why"]
    if "why" not in table.columns:
        table["why"] = ""
    table["why"] = table["why"].fillna("")
    table = table[cols].sort_values(list(GROUP_KEYS) + ["n"], kind="stable").reset_index(drop=True)
    return CompareResult(rows=table, exponents=exponent_table(table), hardware=hw, excluded_rows=len(bad),
                         excluded_by_status=excluded_summary(bad), rates=rates)


def exponent_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Per group and consecutive lengths: measured local exponent beside the predicted one.

    ``predicted_local_exponent`` is the slope of the roofline time, ``flops_local_exponent`` that of
    the executed FLOPs (what the exponent would be at a constant achieved rate).
    """
    frames = []
    for key_vals, g in rows.groupby(list(GROUP_KEYS), sort=True):
        meas = local_exponents(g["n"], g["time_s"])
        if meas.empty:
            continue
        first = g.groupby("n")[["predicted_time_s", "executed_flops"]].first().sort_index()
        pred = np.log(first["predicted_time_s"].to_numpy()[1:] / first["predicted_time_s"].to_numpy()[:-1])
        flops = np.log(first["executed_flops"].to_numpy()[1:] / first["executed_flops"].to_numpy()[:-1])
        dlog_n = np.log(first.index.to_numpy(np.float64)[1:] / first.index.to_numpy(np.float64)[:-1])
        out = meas.copy()
        out["predicted_local_exponent"] = pred / dlog_n
        out["flops_local_exponent"] = flops / dlog_n
        out["difference"] = out["local_exponent"] - out["predicted_local_exponent"]
        out = out.rename(columns={"local_exponent": "measured_local_exponent"})
        for k, v in reversed(list(zip(GROUP_KEYS, key_vals))):
            out.insert(0, k, v)
        frames.append(out)
    cols = list(GROUP_KEYS) + ["n_lo", "n_hi", "n_mid", "measured_local_exponent", "predicted_local_exponent",
                               "flops_local_exponent", "difference"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)


def compare_table(result: CompareResult) -> pd.DataFrame:
    """The compact view the CLI prints as a table."""
    r = result.rows
    out = pd.DataFrame({
        "model": r["model"], "backend": r["backend"], "dtype": r["dtype"], "device": r["device"], "n": r["n"],
        "time_s": r["time_s"], "predicted_time_s": r["predicted_time_s"], "ratio": r["ratio"],
        "achieved_tflops_per_s": r["achieved_tflops_per_s"], "pct_of_peak": r["pct_of_peak"],
        "bound": r["bound"], "over_peak": r["over_peak"], "flagged": r["flagged"], "note": r["note"],
    })
    if (r["phase"] != "prefill").any() or (r["batch"] != 1).any() or (r["layer"] != 0).any():
        out.insert(4, "phase", r["phase"])
        out.insert(5, "batch", r["batch"])
        out.insert(6, "layer", r["layer"])
    if (r["moe_timing"] == "routed").any():
        out.insert(list(out.columns).index("n"), "moe_timing", r["moe_timing"])
    if "why" in r.columns and r["why"].astype(bool).any():  # linear-time layers say why they scale so
        out["why"] = r["why"]
    return out
