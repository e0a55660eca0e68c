"""Scaling fits of measured times: power-law exponents, local exponents, and t(n) = c0 + c1 n + c2 n².

Reads results files in the shared/DESIGN.md schema (CSV or JSONL; the eight basic columns are
enough) and answers, per (model, backend, dtype, device, phase, batch, layer):

* **power law** ``t = A n^b`` by ordinary least squares on (log n, log t) over ``[min_n, max_n]``;
  the 95% interval of ``b`` uses the t distribution with ``points - 2`` degrees of freedom;
* **local exponents** ``log(t2/t1) / log(n2/n1)`` between consecutive lengths (median time per n);
* **decomposition** ``t(n) = c0 + c1 n + c2 n²`` with every ``c >= 0`` (``scipy.optimize.nnls``),
  weighted by ``1/t`` so each point's *relative* error counts equally, columns scaled to unit norm
  for conditioning; the crossover ``n* = c1/c2`` where the quadratic term equals the linear one,
  and the share of each term in the fitted time at each n;
* **extrapolation** to a target n with a 95% interval, by one of two methods (``interval=``):

  - ``delta`` (default): the prediction ``x0·c`` is linear in the coefficients, so its variance is
    ``x0ᵀ Cov(c) x0`` with ``Cov(c) = s² (AᵀA)⁻¹`` over the coefficients NNLS left positive
    (``A`` the 1/t-weighted design, ``s²`` the weighted residual variance), and the interval uses
    the t distribution with ``points - active terms`` degrees of freedom. Exact for the
    unconstrained weighted fit under normal relative noise; a confidence interval for the mean time.
  - ``bootstrap``: residual bootstrap. Relative residuals (inflated by sqrt(m/(m-p))) are resampled
    onto the fitted curve, the NNLS refitted, and the 2.5/97.5 percentiles of the predictions taken.
    Honours the c >= 0 constraint; with few points it is narrower than ``delta``.

  Both intervals cover only measurement noise *within the model*; when the target is far beyond
  the measured range, a term the range cannot see (a cache cliff, a kernel switch) is not in them.

Rows whose ``status`` is not ``ok`` are left out of every fit and counted. No torch.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import optimize, stats

from lcprof.errors import LcprofError
from lcprof.units import parse_tokens

#: Columns every results file must have (a table measured elsewhere may have only these).
REQUIRED_COLUMNS = ("model", "backend", "dtype", "device", "batch", "n", "time_s", "status")
#: The full schema of shared/DESIGN.md (environment columns come on top).
SCHEMA_COLUMNS = REQUIRED_COLUMNS + ("time_p10_s", "time_p90_s", "repeats", "peak_mem_bytes", "reason", "phase")
#: One fit per distinct value of these.
GROUP_KEYS = ("model", "backend", "dtype", "device", "phase", "batch", "layer", "moe_timing")

INTERVAL_METHODS = ("delta", "bootstrap")
DEFAULT_LEVEL = 0.95


# ----------------------------------------------------------------------------------------------
# Reading results files
# ----------------------------------------------------------------------------------------------

def _read_one(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise LcprofError(f"cannot read results {str(path)!r}: no such file")
    if path.is_dir():
        raise LcprofError(f"cannot read results {str(path)!r}: it is a folder; give a .csv or .jsonl file")
    suffix = path.suffix.lower()
    try:
        if suffix in (".jsonl", ".ndjson"):
            df = pd.read_json(path, lines=True, dtype=False)
        elif suffix == ".json":
            with open(path) as fh:
                data = json.load(fh)
            if not isinstance(data, list):
                raise LcprofError(f"results {str(path)!r}: a .json results file must hold a list of records")
            df = pd.DataFrame(data)
        else:
            df = pd.read_csv(path, keep_default_na=True)
    except LcprofError:
        raise
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LcprofError(f"cannot read results {str(path)!r}: not valid CSV/JSONL ({exc})") from None
    except pd.errors.EmptyDataError:
        raise LcprofError(f"results {str(path)!r} is empty") from None
    if df.empty:
        raise LcprofError(f"results {str(path)!r} has no rows")
    return df


def read_results(paths) -> pd.DataFrame:
    """Read one or more results files (CSV; ``.jsonl``/``.ndjson`` as JSON lines) into one table.

    Checks the eight basic columns (LcprofError naming the missing ones), fills the optional ones
    with their defaults (``phase`` prefill, ``layer`` 0, ``reason`` empty) and normalizes types.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    frames = []
    for p in paths:
        path = Path(p)
        df = _read_one(path)
        missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
        if missing:
            raise LcprofError(
                f"results {str(path)!r} is missing column(s) {', '.join(missing)}; a results file needs at "
                f"least {', '.join(REQUIRED_COLUMNS)}")
        df = df.copy()
        df["source_file"] = str(path)
        frames.append(df)
    if not frames:
        raise LcprofError("no results file given")
    return normalize_results(pd.concat(frames, ignore_index=True, sort=False))


def normalize_results(df: pd.DataFrame) -> pd.DataFrame:
    """Defaults and types for a results table already in memory (see ``read_results``)."""
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise LcprofError(f"results table is missing column(s) {', '.join(missing)}; "
                          f"a results file needs at least {', '.join(REQUIRED_COLUMNS)}")
    df = df.copy()
    for col in ("model", "backend", "dtype", "device", "status"):
        df[col] = df[col].astype(str).str.strip()
    df["status"] = df["status"].str.lower()
    df["dtype"] = df["dtype"].str.lower()
    if "phase" not in df.columns:
        df["phase"] = "prefill"
    phase = df["phase"].astype(object).where(df["phase"].notna(), "prefill")
    df["phase"] = phase.astype(str).str.strip().replace({"": "prefill", "nan": "prefill"})
    if "layer" not in df.columns:
        df["layer"] = 0
    if "moe_timing" not in df.columns:
        df["moe_timing"] = "n/a"
    moe = df["moe_timing"].astype(object).where(df["moe_timing"].notna(), "n/a")  # "n/a" reads as NaN
    df["moe_timing"] = moe.astype(str).str.strip().replace({"": "n/a", "nan": "n/a"})
    if "reason" not in df.columns:
        df["reason"] = ""
    df["reason"] = df["reason"].astype(object).where(df["reason"].notna(), "").astype(str)
    for col, kind in (("n", "int"), ("batch", "int"), ("layer", "int"), ("time_s", "float")):
        vals = pd.to_numeric(df[col], errors="coerce")
        if col == "layer":
            vals = vals.fillna(0)
        if col == "batch":
            vals = vals.fillna(1)
        bad = vals.isna() if kind == "int" else (vals.isna() & df[col].notna() & (df[col].astype(str).str.strip() != ""))
        if bad.any():
            first = df.loc[bad, col].iloc[0]
            raise LcprofError(f"column {col!r} holds a non-number ({first!r}) in row {int(np.argmax(bad.to_numpy())) + 1}")
        df[col] = vals.astype(np.int64) if kind == "int" else vals.astype(np.float64)
    for col in ("time_p10_s", "time_p90_s", "peak_mem_bytes", "repeats", "predicted_flops", "useful_flops"):
        if col in df.columns:
            df[col] = pd.to_numeric(df[col], errors="coerce")
    return df


#: Environment columns: ``*_version``, ``gpu_*``, ``cpu_*`` and these names.
ENV_NAMES = ("threads", "hostname", "platform", "clock", "timestamp", "date_utc", "data_origin", "driver",
             "device_name", "nvml")


def env_columns(df: pd.DataFrame) -> list[str]:
    """Columns that describe the environment: torch/CUDA/driver/lcprof versions, GPU and CPU facts."""
    return [c for c in df.columns
            if c.endswith("_version") or c.startswith(("gpu_", "cpu_")) or c in ENV_NAMES]


def split_ok(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows with status ok and a positive time, the rest)."""
    ok = (df["status"] == "ok") & np.isfinite(df["time_s"]) & (df["time_s"] > 0)
    return df[ok].copy(), df[~ok].copy()


def _excluded_summary(bad: pd.DataFrame) -> dict[str, int]:
    if bad.empty:
        return {}
    labels = np.where(bad["status"] == "ok", "ok without a positive time", bad["status"])
    return {str(k): int(v) for k, v in pd.Series(labels).value_counts().items()}


def group_key(row) -> tuple:
    return tuple(row[k] for k in GROUP_KEYS)


def group_label(key: dict) -> str:
    extra = []
    if key.get("phase", "prefill") != "prefill":
        extra.append(str(key["phase"]))
    if int(key.get("batch", 1)) != 1:
        extra.append(f"batch {key['batch']}")
    if int(key.get("layer", 0)) != 0:
        extra.append(f"layer {key['layer']}")
    if key.get("moe_timing", "n/a") not in ("n/a", "dense-equivalent"):
        extra.append(f"MoE {key['moe_timing']}")
    tail = f" ({', '.join(extra)})" if extra else ""
    return f"{key['model']} {key['backend']} {key['dtype']} {key['device']}{tail}"


# ----------------------------------------------------------------------------------------------
# Power law
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PowerLawFit:
    """``t = prefactor_s * n**exponent``, fitted on log-log axes by OLS."""

    exponent: float
    exponent_lo: float  # nan when there are too few points for an interval
    exponent_hi: float
    log_prefactor: float
    n_points: int
    dof: int
    residual_std_log: float  # s of the log residuals (nan when dof == 0)
    mean_log_n: float
    sxx: float
    level: float = DEFAULT_LEVEL

    @property
    def prefactor_s(self) -> float:
        return math.exp(self.log_prefactor)

    def predict(self, n) -> np.ndarray:
        x = np.log(np.asarray(n, dtype=np.float64))
        return np.exp(self.log_prefactor + self.exponent * x)

    def interval(self, n) -> tuple[np.ndarray, np.ndarray]:
        """Confidence interval of the fitted (geometric mean) time at n; nan without dof."""
        x = np.log(np.asarray(n, dtype=np.float64))
        y = self.log_prefactor + self.exponent * x
        if self.dof <= 0:
            nan = np.full_like(y, np.nan)
            return nan, nan
        se = self.residual_std_log * np.sqrt(1.0 / self.n_points + (x - self.mean_log_n) ** 2 / self.sxx)
        q = stats.t.ppf(0.5 + self.level / 2, self.dof)
        return np.exp(y - q * se), np.exp(y + q * se)


def power_law_fit(n, t, level: float = DEFAULT_LEVEL) -> PowerLawFit:
    """OLS of log t on log n; the exponent's interval from the t distribution (points - 2 dof)."""
    n = np.asarray(n, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    if n.shape != t.shape or n.ndim != 1:
        raise LcprofError("power_law_fit needs two 1-D arrays of the same length")
    if np.any(n <= 0) or np.any(t <= 0):
        raise LcprofError("power_law_fit needs positive lengths and times")
    if len(np.unique(n)) < 2:
        raise LcprofError("a power law needs at least two distinct lengths")
    x, y = np.log(n), np.log(t)
    m = len(x)
    xm, ym = x.mean(), y.mean()
    sxx = float(np.sum((x - xm) ** 2))
    b = float(np.sum((x - xm) * (y - ym)) / sxx)
    a = float(ym - b * xm)
    dof = m - 2
    if dof > 0:
        s = float(np.sqrt(np.sum((y - a - b * x) ** 2) / dof))
        q = stats.t.ppf(0.5 + level / 2, dof)
        half = q * s / math.sqrt(sxx)
        lo, hi = b - half, b + half
    else:
        s, lo, hi = float("nan"), float("nan"), float("nan")
    return PowerLawFit(exponent=b, exponent_lo=lo, exponent_hi=hi, log_prefactor=a, n_points=m, dof=dof,
                       residual_std_log=s, mean_log_n=float(xm), sxx=sxx, level=level)


def local_exponents(n, t) -> pd.DataFrame:
    """Slope of log t vs log n between consecutive distinct lengths (median time per length).

    Columns: n_lo, n_hi, n_mid (geometric mean), local_exponent.
    """
    s = pd.Series(np.asarray(t, dtype=np.float64)).groupby(np.asarray(n, dtype=np.int64)).median().sort_index()
    ns, ts = s.index.to_numpy(dtype=np.float64), s.to_numpy()
    if len(ns) < 2:
        return pd.DataFrame(columns=["n_lo", "n_hi", "n_mid", "local_exponent"])
    slope = np.log(ts[1:] / ts[:-1]) / np.log(ns[1:] / ns[:-1])
    return pd.DataFrame({"n_lo": ns[:-1].astype(np.int64), "n_hi": ns[1:].astype(np.int64),
                         "n_mid": np.sqrt(ns[:-1] * ns[1:]), "local_exponent": slope})


# ----------------------------------------------------------------------------------------------
# t(n) = c0 + c1 n + c2 n²
# ----------------------------------------------------------------------------------------------

def _design(n) -> np.ndarray:
    n = np.asarray(n, dtype=np.float64)
    return np.column_stack([np.ones_like(n), n, n * n])  # (points, 3)


def _nnls_weighted(n, t) -> np.ndarray:
    """c >= 0 minimizing sum(((c0 + c1 n + c2 n²) - t) / t)²; columns scaled to unit norm."""
    a = _design(n) / np.asarray(t, dtype=np.float64)[:, None]  # (points, 3), rows weighted by 1/t
    scale = np.linalg.norm(a, axis=0)
    scale[scale == 0] = 1.0
    x, _ = optimize.nnls(a / scale, np.ones(len(t)))
    return x / scale


@dataclass(frozen=True)
class Decomposition:
    """``t(n) = c0_s + c1_s_per_token * n + c2_s_per_token2 * n²``, all coefficients >= 0."""

    c0_s: float
    c1_s_per_token: float
    c2_s_per_token2: float
    cov: np.ndarray = field(repr=False)  # (3, 3) covariance of (c0, c1, c2); zero rows for inactive terms
    dof: int
    rms_rel_residual: float
    n_points: int
    fit_n: np.ndarray = field(repr=False)
    fit_t: np.ndarray = field(repr=False)
    level: float = DEFAULT_LEVEL

    @property
    def coefficients(self) -> np.ndarray:
        return np.array([self.c0_s, self.c1_s_per_token, self.c2_s_per_token2])

    @property
    def n_star(self) -> float | None:
        """Crossover n where the quadratic term equals the linear one (c1/c2); None if c2 == 0."""
        if self.c2_s_per_token2 <= 0:
            return None
        return self.c1_s_per_token / self.c2_s_per_token2

    def predict(self, n) -> np.ndarray:
        return _design(np.atleast_1d(n)) @ self.coefficients

    def shares(self, n) -> dict[str, np.ndarray]:
        """Share of the constant, linear and quadratic terms in the fitted time at each n."""
        d = _design(np.atleast_1d(n)) * self.coefficients  # (len(n), 3)
        tot = d.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return {"const_share": d[:, 0] / tot, "linear_share": d[:, 1] / tot, "quadratic_share": d[:, 2] / tot}

    def interval(self, n, method: str = "delta", *, n_boot: int = 1000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """95% (``level``) interval of the fitted time at n; nan when there is no dof left."""
        n = np.atleast_1d(np.asarray(n, dtype=np.float64))
        if method not in INTERVAL_METHODS:
            raise LcprofError(f"unknown interval method {method!r}; use {' or '.join(INTERVAL_METHODS)}")
        if self.dof <= 0:
            nan = np.full(n.shape, np.nan)
            return nan, nan
        if method == "delta":
            x0 = _design(n)  # (len(n), 3)
            var = np.einsum("ij,jk,ik->i", x0, self.cov, x0)
            q = stats.t.ppf(0.5 + self.level / 2, self.dof)
            mid = self.predict(n)
            half = q * np.sqrt(np.maximum(var, 0.0))
            return np.maximum(mid - half, 0.0), mid + half
        rng = np.random.default_rng(seed)
        fitted = self.predict(self.fit_n)
        rel = (self.fit_t - fitted) / fitted
        rel = (rel - rel.mean()) * math.sqrt(self.n_points / self.dof)
        preds = np.empty((n_boot, len(n)))
        for i in range(n_boot):
            t_star = fitted * (1.0 + rng.choice(rel, size=len(rel), replace=True))
            t_star = np.maximum(t_star, 1e-300)
            preds[i] = _design(n) @ _nnls_weighted(self.fit_n, t_star)
        lo_q, hi_q = 50 * (1 - self.level), 50 * (1 + self.level)
        return np.percentile(preds, lo_q, axis=0), np.percentile(preds, hi_q, axis=0)


def decompose(n, t, level: float = DEFAULT_LEVEL) -> Decomposition:
    """Non-negative least squares of t(n) = c0 + c1 n + c2 n², weights 1/t (relative error)."""
    n = np.asarray(n, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    if n.shape != t.shape or n.ndim != 1 or len(n) == 0:
        raise LcprofError("decompose needs two 1-D arrays of the same, non-zero length")
    if np.any(n <= 0) or np.any(t <= 0):
        raise LcprofError("decompose needs positive lengths and times")
    c = _nnls_weighted(n, t)
    # A term contributing less than 1e-9 of every measured time is round-off, not physics: zero it,
    # so that exactly linear data reports c2 = 0 (and no crossover) rather than c2 = 1e-21.
    c[np.max(_design(n) * c / t[:, None], axis=0) < 1e-9] = 0.0
    fitted = _design(n) @ c
    rel = (fitted - t) / t  # weighted residuals
    active = c > 0
    p = int(active.sum())
    dof = len(n) - p
    cov = np.zeros((3, 3))
    if dof > 0 and p > 0:
        a = _design(n)[:, active] / t[:, None]  # (points, active)
        s2 = float(np.sum(rel ** 2) / dof)
        scale = np.linalg.norm(a, axis=0)
        inv = np.linalg.pinv((a / scale).T @ (a / scale)) / np.outer(scale, scale)
        cov[np.ix_(active, active)] = s2 * inv
    return Decomposition(c0_s=float(c[0]), c1_s_per_token=float(c[1]), c2_s_per_token2=float(c[2]), cov=cov,
                         dof=dof, rms_rel_residual=float(np.sqrt(np.mean(rel ** 2))), n_points=len(n),
                         fit_n=n, fit_t=t, level=level)


# ----------------------------------------------------------------------------------------------
# Whole results files
# ----------------------------------------------------------------------------------------------

@dataclass
class GroupFit:
    """The fits of one (model, backend, dtype, device, phase, batch, layer) group."""

    key: dict
    power_law: PowerLawFit | None
    decomposition: Decomposition | None
    points: pd.DataFrame  # one row per distinct n (all ok lengths, in_fit marks the fit range)
    local: pd.DataFrame  # local exponents between consecutive lengths
    extrapolation: dict  # target n, decomposition and power-law estimates with intervals
    excluded_rows: int
    notes: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return group_label(self.key)

    def summary(self) -> dict:
        pl, d = self.power_law, self.decomposition
        nan = float("nan")
        in_fit = self.points[self.points["in_fit"]]
        rec = dict(self.key)
        rec.update({
            "n_points": int(in_fit["n_rows"].sum()) if len(in_fit) else 0,
            "n_lengths": int(len(in_fit)),
            "n_min": int(in_fit["n"].min()) if len(in_fit) else None,
            "n_max": int(in_fit["n"].max()) if len(in_fit) else None,
            "exponent": pl.exponent if pl else nan,
            "exponent_lo": pl.exponent_lo if pl else nan,
            "exponent_hi": pl.exponent_hi if pl else nan,
            "c0_s": d.c0_s if d else nan,
            "c1_s_per_token": d.c1_s_per_token if d else nan,
            "c2_s_per_token2": d.c2_s_per_token2 if d else nan,
            "n_star": (d.n_star if d and d.n_star is not None else None),
            "quadratic_share_at_n_max": (float(d.shares(in_fit["n"].max())["quadratic_share"][0])
                                         if d and len(in_fit) else nan),
            "rms_rel_residual": d.rms_rel_residual if d else nan,
            "powerlaw_rms_log_residual": (float(np.sqrt(np.mean(np.log(in_fit["time_s"] / in_fit["powerlaw_time_s"]) ** 2)))
                                          if pl and len(in_fit) else nan),
        })
        rec.update(self.extrapolation)
        rec["excluded_rows"] = self.excluded_rows
        rec["note"] = "; ".join(self.notes)
        return rec


@dataclass
class FitResult:
    """All groups' fits; ``summary`` has one row per group, ``points`` one row per (group, n)."""

    groups: list[GroupFit]
    excluded_rows: int
    excluded_by_status: dict
    min_n: int | None
    max_n: int | None
    target_n: int | None
    interval_method: str

    @property
    def summary(self) -> pd.DataFrame:
        return pd.DataFrame([g.summary() for g in self.groups])

    def _stacked(self, attr: str) -> pd.DataFrame:
        """One group table (``points`` or ``local``) per group, stacked, with the group keys first."""
        frames = []
        for g in self.groups:
            p = getattr(g, attr).copy()
            for k in reversed(GROUP_KEYS):
                p.insert(0, k, g.key[k])
            frames.append(p)
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    @property
    def points(self) -> pd.DataFrame:
        return self._stacked("points")

    @property
    def local(self) -> pd.DataFrame:
        return self._stacked("local")


def _fit_group(key: dict, rows: pd.DataFrame, excluded: int, min_n, max_n, target_n, interval: str,
               level: float, n_boot: int, seed: int) -> GroupFit:
    notes: list[str] = []
    per_n = rows.groupby("n")["time_s"].agg(["median", "size"]).sort_index()
    points = pd.DataFrame({"n": per_n.index.astype(np.int64), "time_s": per_n["median"].to_numpy(),
                           "n_rows": per_n["size"].to_numpy()})
    lo = min_n if min_n is not None else -np.inf
    hi = max_n if max_n is not None else np.inf
    points["in_fit"] = (points["n"] >= lo) & (points["n"] <= hi)
    fit_rows = rows[(rows["n"] >= lo) & (rows["n"] <= hi)]
    n_fit, t_fit = fit_rows["n"].to_numpy(np.float64), fit_rows["time_s"].to_numpy(np.float64)
    distinct = len(np.unique(n_fit))

    pl = decomp = None
    if distinct >= 2:
        pl = power_law_fit(n_fit, t_fit, level)
        if pl.dof <= 0:
            notes.append("2 points: exponent without interval")
    else:
        notes.append(f"{distinct} length(s) in range: no power law")
    if distinct >= 3:
        decomp = decompose(n_fit, t_fit, level)
        if decomp.dof <= 0:
            notes.append("no degrees of freedom left: decomposition without interval")
    else:
        notes.append("fewer than 3 lengths: no c0 + c1 n + c2 n² decomposition")

    local = local_exponents(rows["n"], rows["time_s"])
    points["local_exponent"] = np.nan
    if len(local):
        points.loc[points["n"].isin(local["n_hi"]), "local_exponent"] = local["local_exponent"].to_numpy()
    nan_col = np.full(len(points), np.nan)
    points["powerlaw_time_s"] = pl.predict(points["n"]) if pl else nan_col
    points["fitted_time_s"] = decomp.predict(points["n"]) if decomp else nan_col
    points["residual_rel"] = points["time_s"] / points["fitted_time_s"] - 1.0
    points["powerlaw_residual_rel"] = points["time_s"] / points["powerlaw_time_s"] - 1.0
    if decomp:
        for name, share in decomp.shares(points["n"].to_numpy()).items():
            points[name] = share
    else:
        for name in ("const_share", "linear_share", "quadratic_share"):
            points[name] = nan_col

    extra: dict = {"target_n": target_n}
    nan = float("nan")
    if target_n is not None:
        if decomp is not None:
            t_mid = float(decomp.predict(target_n)[0])
            t_lo, t_hi = decomp.interval(target_n, interval, n_boot=n_boot, seed=seed)
            share = float(decomp.shares(target_n)["quadratic_share"][0])
        else:
            t_mid, share = nan, nan
            t_lo, t_hi = np.array([nan]), np.array([nan])
        extra.update({"target_time_s": t_mid, "target_time_lo_s": float(t_lo[0]), "target_time_hi_s": float(t_hi[0]),
                      "target_quadratic_share": share, "interval_method": interval})
        if pl is not None:
            p_lo, p_hi = pl.interval(target_n)
            extra.update({"powerlaw_target_time_s": float(pl.predict(target_n)),
                          "powerlaw_target_lo_s": float(p_lo), "powerlaw_target_hi_s": float(p_hi)})
        else:
            extra.update({"powerlaw_target_time_s": nan, "powerlaw_target_lo_s": nan, "powerlaw_target_hi_s": nan})
        if len(n_fit) and target_n > 4 * n_fit.max():
            notes.append(f"target is {target_n / n_fit.max():.0f}x the largest fitted n: the interval covers noise, "
                         "not terms the range cannot see")
    return GroupFit(key=key, power_law=pl, decomposition=decomp, points=points, local=local,
                    extrapolation=extra, excluded_rows=excluded, notes=notes)


def _as_tokens(v) -> int | None:
    if v is None or (isinstance(v, str) and not v.strip()):
        return None
    return parse_tokens(v)


def fit_results(results, *, min_n=None, max_n=None, target=131072, interval: str = "delta",
                level: float = DEFAULT_LEVEL, n_boot: int = 1000, seed: int = 0) -> FitResult:
    """Fit every group of a results file (path, list of paths, or DataFrame).

    ``min_n``/``max_n`` bound the lengths used by the power law and the decomposition (token counts
    such as ``8k`` accepted); local exponents and residuals are reported at every ok length.
    ``target`` (None for none) is the length to extrapolate to; ``interval`` is ``delta`` or ``bootstrap``.
    """
    if interval not in INTERVAL_METHODS:
        raise LcprofError(f"unknown interval method {interval!r}; use {' or '.join(INTERVAL_METHODS)}")
    df = results if isinstance(results, pd.DataFrame) else read_results(results)
    if isinstance(results, pd.DataFrame):
        df = normalize_results(df)
    min_n, max_n, target_n = _as_tokens(min_n), _as_tokens(max_n), _as_tokens(target)
    if min_n is not None and max_n is not None and max_n < min_n:
        raise LcprofError(f"--max-n {max_n} is below --min-n {min_n}")
    ok, bad = split_ok(df)
    if ok.empty:
        statuses = ", ".join(f"{k}: {v}" for k, v in _excluded_summary(bad).items())
        raise LcprofError(f"no rows with status ok and a positive time_s to fit ({len(df)} rows: {statuses})")
    bad_keys = bad.groupby(list(GROUP_KEYS)).size().to_dict() if not bad.empty else {}
    groups = []
    for key_vals, rows in ok.groupby(list(GROUP_KEYS), sort=True):
        key = dict(zip(GROUP_KEYS, key_vals))
        key["batch"], key["layer"] = int(key["batch"]), int(key["layer"])
        groups.append(_fit_group(key, rows, int(bad_keys.get(key_vals, 0)), min_n, max_n, target_n, interval,
                                 level, n_boot, seed))
    return FitResult(groups=groups, excluded_rows=len(bad), excluded_by_status=_excluded_summary(bad),
                     min_n=min_n, max_n=max_n, target_n=target_n, interval_method=interval)


def fit_table(fit: FitResult) -> pd.DataFrame:
    """The compact summary the CLI prints as a table."""
    rows = []
    for g in fit.groups:
        s = g.summary()
        rec = {"group": g.label, "n_range": f"{s['n_min']}..{s['n_max']}" if s["n_min"] is not None else "",
               "exponent": s["exponent"], "exponent_95": _fmt_interval(s["exponent_lo"], s["exponent_hi"], "{:.3f}"),
               "c0_s": s["c0_s"], "c1_s_per_token": s["c1_s_per_token"], "c2_s_per_token2": s["c2_s_per_token2"],
               "n_star": s["n_star"], "rms_rel_residual": s["rms_rel_residual"]}
        if fit.target_n is not None:
            rec[f"time_s_at_{fit.target_n}"] = s.get("target_time_s")
            rec["time_95_s"] = _fmt_interval(s.get("target_time_lo_s"), s.get("target_time_hi_s"), "{:.4g}")
            rec["quadratic_share_at_target"] = s.get("target_quadratic_share")
        rec["excluded_rows"] = s["excluded_rows"]
        rows.append(rec)
    return pd.DataFrame(rows)


def _fmt_interval(lo, hi, fmt: str) -> str:
    if lo is None or hi is None or not np.isfinite(lo) or not np.isfinite(hi):
        return "n/a"
    return "[" + fmt.format(lo) + ", " + fmt.format(hi) + "]"
