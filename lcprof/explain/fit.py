"""Fits of measured times built on the cost model, with the power law and local exponents beside them.

Reads results files through :mod:`lcprof.results` (CSV or JSONL; the eight basic columns are
enough) and answers, per group (the point key less n, ``results.GROUP_KEYS``):

* **cost-model fit** (``ModelFit``, the primary one): the layer's time is a fixed cost plus, for
  each class of work that :mod:`lcprof.cost` counts for that row (its model, layer, phase, batch,
  dtype, executed family, MLA form), the work divided by a rate fitted to the measurements::

      t(n) = fixed_s + matmul_flops(n) / R_matmul + attention_flops(n) / R_attention
                     + memory_bytes(n) / R_memory

  ``matmul_flops``: the projections and the MLP (2 FLOPs per multiply-add); ``attention_flops``:
  QK^T and PV as the backend executes them (eager the whole square, tiled kernels every tile not
  fully masked); ``memory_bytes``: the elementwise ops' traffic (norms, RoPE, activations,
  residuals, eager's score passes). The growth with n comes from the counted work -- the quadratic
  part is the attention the model counts, not a free polynomial term. Every rate is non-negative:
  non-negative least squares (``scipy.optimize.nnls``) on relative residuals (weights 1/t), so each
  point's relative error counts equally. A rate the data cannot see (its class contributes < 1e-9
  of every time) is reported as not fitted.
* **power law** ``t = A n^b`` by OLS on (log n, log t), with the 95% t-interval of b;
* **local exponents** ``log(t2/t1) / log(n2/n1)`` between consecutive lengths (median time per n);
* **polynomial** ``t = c0 + c1 n + c2 n²`` (NNLS, weights 1/t): the fallback for a model lcprof
  cannot resolve (a table measured elsewhere), and the coefficients the planner's fitted rates use.

**Extrapolation** to a target n, with a 95% interval that never contains a non-positive time: the
interval is formed in log space, ``t0 · exp(±q · s)``, where ``s²`` adds two variances:

1. *noise*: the relative variance of the fitted time at the target, by the delta method
   (``x0ᵀ Cov(c) x0 / t0²``, ``Cov(c) = s² (AᵀA)⁻¹`` over the active terms, A the 1/t-weighted
   design, s² the residual variance) or by a residual bootstrap (``interval="bootstrap"``);
2. *extrapolation*: how far this group's own fits missed when extrapolating inside the measured
   range. Back-tests fit the lengths up to each L_j and predict every longer measured length L_k;
   the squared log errors beyond what noise explains estimate a drift τ² per (log n)²
   (method of moments: ``τ² = max(0, Σ(e² - v)) / Σ log²(L_k/L_j)``), charged as
   ``τ² log²(target / largest fitted n)``. A model that extrapolates within its range as well as
   the noise allows adds nothing; one whose rates drift with n widens its own interval.

``q`` is the t quantile with the fit's residual degrees of freedom. A target more than 4x the
largest fitted n gets a note: the interval covers drift that the measured range shows, not a cliff
it cannot (a cache overflowing, a kernel switch). Rows whose ``status`` is not ok are left out and
counted. No torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd
from scipy import optimize, stats

from lcprof.errors import LcprofError
from lcprof.results import (GROUP_KEYS, REQUIRED_COLUMNS, SCHEMA_COLUMNS, env_columns, excluded_summary,  # noqa: F401
                            group_label, no_ok_rows_error, normalize_results, read_results, split_ok)
from lcprof.units import parse_tokens

INTERVAL_METHODS = ("delta", "bootstrap")
DEFAULT_LEVEL = 0.95
#: Work classes of the cost-model fit, in design-matrix order.
CLASSES = ("fixed", "matmul", "attention", "memory")
#: The polynomial fallback's terms: c0, c1 n, c2 n².
POLY_CLASSES = ("fixed", "linear", "quadratic")
#: The least drift per unit of log n charged beyond the measured range (7% per doubling, 1 sigma):
#: a range cannot show what happens past it. On the H100 sweep (reports/h100-measure), fits of
#: n <= 32768 missed the measured 131072 times by -15% (cuDNN: K and V of one head outgrow the
#: 50 MB L2 past 64k) to +42% (our ring kernel, still speeding up with block size).
DRIFT_FLOOR = 0.07 / math.log(2.0)
#: Largest log half-width of an interval: a factor 1e300 either way. Wider says "unbounded";
#: capped so the bounds stay finite and the lower one positive (no under/overflow to 0 and inf).
MAX_LOG_HALF_WIDTH = math.log(1e300)
#: A target beyond this multiple of the largest fitted n gets a note.
FAR_FACTOR = 4.0
#: A term contributing less than this share of every fitted time is round-off: dropped.
NEGLIGIBLE = 1e-9


# ----------------------------------------------------------------------------------------------
# Weighted non-negative least squares and its covariance (shared by every linear fit here)
# ----------------------------------------------------------------------------------------------

def _nnls_weighted(x: np.ndarray, t: np.ndarray, offset: np.ndarray | None = None) -> np.ndarray:
    """c >= 0 minimizing sum(((x c + offset) - t) / t)²; columns scaled to unit norm for conditioning.
    ``offset`` is a known part of each time (a held rate's work / rate), not fitted."""
    a = x / t[:, None]  # (points, terms): rows weighted by 1/t
    scale = np.linalg.norm(a, axis=0)
    scale[scale == 0] = 1.0
    rhs = np.ones(len(t)) if offset is None else 1.0 - offset / t
    c, _ = optimize.nnls(a / scale, rhs)
    c = c / scale
    # a term contributing less than NEGLIGIBLE of every measured time is round-off, not physics
    c[np.max(x * c / t[:, None], axis=0) < NEGLIGIBLE] = 0.0
    return c


@dataclass(frozen=True)
class LinearFit:
    """``t ≈ x c`` with c >= 0 fitted on relative residuals; ``cov`` over every term (zero rows
    for the terms NNLS left at zero)."""

    coef: np.ndarray
    cov: np.ndarray
    dof: int
    s2: float  # residual variance of the relative residuals (nan without dof)
    rms_rel_residual: float
    x: np.ndarray = field(repr=False)
    t: np.ndarray = field(repr=False)
    offset: np.ndarray | None = field(default=None, repr=False)  # the known part of each time, if any

    @property
    def active(self) -> np.ndarray:
        return self.coef > 0

    def rel_se(self, x0: np.ndarray, offset0: np.ndarray | None = None) -> np.ndarray:
        """Relative standard error of the fitted time (x0 c, plus ``offset0`` when a part is held)
        at design rows x0 (delta method; the held part adds no variance here)."""
        mid = x0 @ self.coef + (0.0 if offset0 is None else offset0)
        var = np.einsum("ij,jk,ik->i", x0, self.cov, x0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.sqrt(np.maximum(var, 0.0)) / mid


def fit_linear(x: np.ndarray, t: np.ndarray, offset: np.ndarray | None = None) -> LinearFit:
    """Weighted NNLS of t (less a known ``offset``) on the columns of x (see ``_nnls_weighted``) with
    the coefficients' covariance ``s² (AᵀA)⁻¹`` over the active terms (A = x / t, s² = Σ r² / (points -
    active))."""
    x = np.asarray(x, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    offset = None if offset is None else np.asarray(offset, dtype=np.float64)
    c = _nnls_weighted(x, t, offset)
    rel = (x @ c + (0.0 if offset is None else offset) - t) / t
    active = c > 0
    p = int(active.sum())
    dof = len(t) - p
    cov = np.zeros((x.shape[1], x.shape[1]))
    s2 = float("nan")
    if dof > 0 and p > 0:
        a = x[:, active] / t[:, None]  # (points, active)
        s2 = float(np.sum(rel ** 2) / dof)
        scale = np.linalg.norm(a, axis=0)
        inv = np.linalg.pinv((a / scale).T @ (a / scale)) / np.outer(scale, scale)
        cov[np.ix_(active, active)] = s2 * inv
    return LinearFit(coef=c, cov=cov, dof=dof, s2=s2, rms_rel_residual=float(np.sqrt(np.mean(rel ** 2))),
                     x=x, t=t, offset=offset)


def _bootstrap_log_se(fit: LinearFit, x0: np.ndarray, n_boot: int, seed: int,
                      offset0: np.ndarray | None = None) -> np.ndarray:
    """Standard deviation of log(predicted time at x0) over a residual bootstrap: log residuals
    (centred, inflated by sqrt(m / dof)) resampled onto the fitted curve -- positive times by
    construction -- and the NNLS refitted (a held part, ``fit.offset`` and ``offset0``, stays held)."""
    rng = np.random.default_rng(seed)
    held = 0.0 if fit.offset is None else fit.offset
    held0 = 0.0 if offset0 is None else offset0
    fitted = fit.x @ fit.coef + held
    if np.any(fitted <= 0):
        return np.full(x0.shape[0], np.nan)
    res = np.log(fit.t / fitted)
    res = (res - res.mean()) * math.sqrt(len(res) / max(fit.dof, 1))
    logs = []
    for _ in range(n_boot):
        pred = x0 @ _nnls_weighted(fit.x, fitted * np.exp(rng.choice(res, size=len(res), replace=True)),
                                   fit.offset) + held0
        if np.all(pred > 0):
            logs.append(np.log(pred))
    if len(logs) < 2:
        return np.full(x0.shape[0], np.nan)
    return np.std(np.vstack(logs), axis=0, ddof=1)


def log_interval(mid, rel_se, dof: int, level: float = DEFAULT_LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """``mid · exp(±q · rel_se)`` with q the t quantile (dof): positive whenever mid is."""
    mid = np.asarray(mid, dtype=np.float64)
    if dof <= 0:
        nan = np.full(mid.shape, np.nan)
        return nan, nan
    q = stats.t.ppf(0.5 + level / 2, dof)
    half = np.minimum(q * np.asarray(rel_se, dtype=np.float64), MAX_LOG_HALF_WIDTH)
    return mid * np.exp(-half), mid * np.exp(half)


# ----------------------------------------------------------------------------------------------
# Power law and local exponents
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
        if self.dof <= 0:
            nan = np.full_like(x, np.nan)
            return nan, nan
        se = self.residual_std_log * np.sqrt(1.0 / self.n_points + (x - self.mean_log_n) ** 2 / self.sxx)
        return log_interval(self.predict(n), se, self.dof, self.level)


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
        half = stats.t.ppf(0.5 + level / 2, dof) * s / math.sqrt(sxx)
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
# Extrapolation drift from back-tests
# ----------------------------------------------------------------------------------------------

def drift_variance(n: np.ndarray, t: np.ndarray, design: Callable[[np.ndarray], np.ndarray],
                   min_lengths: int = 3, held: Callable[[np.ndarray], np.ndarray] | None = None) -> tuple[float, int]:
    """(τ², back-tests used): the squared log error per (log n)² that this model makes, beyond its
    noise, when it extrapolates from the lengths up to L_j to each longer measured length L_k
    (``held``: the time of a class whose rate is held, not fitted)."""
    lengths = np.unique(n)
    num, den, used = 0.0, 0.0, 0
    for j in range(len(lengths) - 1):
        sel = n <= lengths[j]
        if len(np.unique(n[sel])) < min_lengths:
            continue
        f = fit_linear(design(n[sel]), t[sel], None if held is None else held(n[sel]))
        p = int(f.active.sum())
        if f.dof <= 0 or len(np.unique(n[sel])) <= p:
            continue
        for k in range(j + 1, len(lengths)):
            at = n == lengths[k]
            x0 = design(lengths[k:k + 1])
            h0 = None if held is None else held(lengths[k:k + 1])
            pred = float((x0 @ f.coef + (0.0 if h0 is None else h0))[0])
            if pred <= 0:
                continue
            e = float(np.log(np.median(t[at]) / pred))
            v = float(f.rel_se(x0, h0)[0] ** 2 + f.s2 / at.sum())
            num += e * e - v
            den += math.log(lengths[k] / lengths[j]) ** 2
            used += 1
    if den == 0:
        return 0.0, 0
    return max(0.0, num) / den, used


# ----------------------------------------------------------------------------------------------
# Polynomial t(n) = c0 + c1 n + c2 n²
# ----------------------------------------------------------------------------------------------

def _poly_design(n) -> np.ndarray:
    n = np.asarray(n, dtype=np.float64)
    return np.column_stack([np.ones_like(n), n, n * n])  # (points, 3)


@dataclass(frozen=True)
class Decomposition:
    """``t(n) = c0_s + c1_s_per_token * n + c2_s_per_token2 * n²``, all coefficients >= 0."""

    fit: LinearFit = field(repr=False)
    level: float = DEFAULT_LEVEL

    @property
    def coefficients(self) -> np.ndarray:
        return self.fit.coef

    c0_s = property(lambda self: float(self.fit.coef[0]))
    c1_s_per_token = property(lambda self: float(self.fit.coef[1]))
    c2_s_per_token2 = property(lambda self: float(self.fit.coef[2]))
    dof = property(lambda self: self.fit.dof)
    cov = property(lambda self: self.fit.cov)
    rms_rel_residual = property(lambda self: self.fit.rms_rel_residual)
    n_points = property(lambda self: len(self.fit.t))

    @property
    def n_star(self) -> float | None:
        """Crossover n where the quadratic term equals the linear one (c1/c2); None if c2 == 0."""
        if self.c2_s_per_token2 <= 0:
            return None
        return self.c1_s_per_token / self.c2_s_per_token2

    def predict(self, n) -> np.ndarray:
        return _poly_design(np.atleast_1d(n)) @ self.coefficients

    def shares(self, n) -> dict[str, np.ndarray]:
        """Share of the constant, linear and quadratic terms in the fitted time at each n."""
        d = _poly_design(np.atleast_1d(n)) * self.coefficients  # (len(n), 3)
        tot = d.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return {"const_share": d[:, 0] / tot, "linear_share": d[:, 1] / tot, "quadratic_share": d[:, 2] / tot}

    def interval(self, n, method: str = "delta", *, n_boot: int = 1000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """``level`` interval of the fitted time at n, in log space (noise only); nan without dof."""
        if method not in INTERVAL_METHODS:
            raise LcprofError(f"unknown interval method {method!r}; use {' or '.join(INTERVAL_METHODS)}")
        x0 = _poly_design(np.atleast_1d(np.asarray(n, dtype=np.float64)))
        se = self.fit.rel_se(x0) if method == "delta" else _bootstrap_log_se(self.fit, x0, n_boot, seed)
        return log_interval(x0 @ self.coefficients, se, self.dof, self.level)


def decompose(n, t, level: float = DEFAULT_LEVEL) -> Decomposition:
    """Non-negative least squares of t(n) = c0 + c1 n + c2 n², weights 1/t (relative error)."""
    n = np.asarray(n, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    if n.shape != t.shape or n.ndim != 1 or len(n) == 0:
        raise LcprofError("decompose needs two 1-D arrays of the same, non-zero length")
    if np.any(n <= 0) or np.any(t <= 0):
        raise LcprofError("decompose needs positive lengths and times")
    return Decomposition(fit=fit_linear(_poly_design(n), t), level=level)


# ----------------------------------------------------------------------------------------------
# The cost-model fit
# ----------------------------------------------------------------------------------------------

def work_by_class(spec, ns, *, phase: str, batch: int, dtype: str, family: str, layer: int,
                  mla_form: str | None = None, elementwise: str = "unfused", tile: int = 128,
                  attention_call: bool = False) -> np.ndarray:
    """(len(ns), 4) design: [1, matmul FLOPs, attention FLOPs, memory-bound bytes] that
    ``lcprof.cost.cost`` counts for one layer at each n (see the module docstring). With
    ``attention_call`` the attention's own elementwise bytes (eager's score passes) are left out of
    the memory class: a held attention rate, calibrated on the whole attention call, prices them."""
    from lcprof.cost.model import TOTAL_KEYS, cost

    store = "fp32" if dtype == "tf32" else dtype
    c = cost(spec, np.asarray(ns, dtype=np.float64), phase=phase, batch=int(batch), dtype=store, family=family,
             layer=int(layer), mla_form=mla_form or None, elementwise=elementwise, tile=(tile, tile))
    names = [k for k in c.flops if k not in TOTAL_KEYS]  # sums of other keys (mixer/total too) count once
    size = len(np.atleast_1d(ns))
    zero = np.zeros(size)

    def arr(v):
        return np.broadcast_to(np.asarray(v, dtype=np.float64), (size,))

    matmul = sum((arr(c.flops[k]) for k in names if not k.startswith("attn/")), zero)
    attention = sum((arr(c.flops[k]) for k in names if k.startswith("attn/")), zero)
    memory = sum((arr(c.bytes[k]) for k in names
                  if not np.any(arr(c.flops[k])) and not (attention_call and k.startswith("attn/"))), zero)
    return np.column_stack([np.ones(size), matmul, attention, memory])


@dataclass(frozen=True)
class ModelFit:
    """``t(n) = design(n) @ coef`` with c >= 0: the cost-model fit (``classes`` = ``CLASSES``: fixed
    seconds plus work / rate per class) or, for a model lcprof cannot resolve, the polynomial
    (``POLY_CLASSES``); with its extrapolation drift (see the module docstring)."""

    fit: LinearFit = field(repr=False)
    design: Callable[[np.ndarray], np.ndarray] = field(repr=False)
    classes: tuple[str, ...]
    n_max: float
    drift_var: float  # τ² per (log n)² from back-tests (before the floor)
    drift_tests: int
    level: float = DEFAULT_LEVEL
    #: A class whose rate is held (not fitted): its time at n, ``held(n)`` = work / calibrated rate.
    #: Its design column is zero, so its coefficient stays 0 in ``fit``; ``held_rel_sd`` is the
    #: rate's own relative uncertainty (the calibration's spread), charged in the interval.
    held: Callable[[np.ndarray], np.ndarray] | None = field(default=None, repr=False)
    held_class: str | None = None
    held_rate: Callable[[np.ndarray], np.ndarray] | None = field(default=None, repr=False)
    held_rel_sd: float = 0.0

    @property
    def kind(self) -> str:
        if self.classes != CLASSES:
            return "polynomial"
        return "cost model" if self.held is None else f"cost model, {self.held_class} rate held"

    def _held(self, n: np.ndarray) -> np.ndarray:
        return np.zeros(n.shape) if self.held is None else np.asarray(self.held(n), dtype=np.float64)

    @property
    def fixed_s(self) -> float:
        return float(self.fit.coef[0])

    def rate(self, cls: str) -> float:
        """Fitted rate of a class (FLOP/s or bytes/s); nan when the data did not fit it. A held class
        answers its held rate at the largest fitted n."""
        if cls not in self.classes:
            return float("nan")
        if cls == self.held_class and self.held_rate is not None:
            return float(np.asarray(self.held_rate(np.array([self.n_max])))[0])
        c = float(self.fit.coef[self.classes.index(cls)])
        return 1.0 / c if c > 0 else float("nan")

    @property
    def drift_per_log_n(self) -> float:
        """τ used for extrapolation: the back-tests' drift, at least ``DRIFT_FLOOR``."""
        return max(math.sqrt(self.drift_var), DRIFT_FLOOR)

    def predict(self, n) -> np.ndarray:
        n = np.atleast_1d(np.asarray(n, dtype=np.float64))
        return self.design(n) @ self.fit.coef + self._held(n)

    def shares(self, n) -> dict[str, np.ndarray]:
        """Share of each class in the fitted time at n (``<class>_share``), a held class included."""
        n = np.atleast_1d(np.asarray(n, dtype=np.float64))
        d = self.design(n) * self.fit.coef
        if self.held is not None:
            d[:, self.classes.index(self.held_class)] = self._held(n)
        tot = d.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return {f"{c}_share": d[:, i] / tot for i, c in enumerate(self.classes)}

    def growth_share(self, n) -> np.ndarray:
        """Share of the term that grows fastest (attention work, or c2 n²) in the fitted time at n."""
        return self.shares(n)[f"{self.classes[2]}_share"]

    def interval(self, n, method: str = "delta", *, n_boot: int = 1000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """``level`` interval of the time at n: ``t0 · exp(±sqrt((q se)² + (z τ L)²))`` with se the
        noise (delta or bootstrap), τ = ``drift_per_log_n``, L = log(n / largest fitted n) beyond the
        range (0 inside it), q the t quantile (dof) and z the normal one; nan without dof."""
        if method not in INTERVAL_METHODS:
            raise LcprofError(f"unknown interval method {method!r}; use {' or '.join(INTERVAL_METHODS)}")
        n = np.atleast_1d(np.asarray(n, dtype=np.float64))
        x0 = self.design(n)
        h0 = self._held(n)
        mid = x0 @ self.fit.coef + h0
        if self.fit.dof <= 0:
            nan = np.full(n.shape, np.nan)
            return nan, nan
        held0 = None if self.held is None else h0
        se = (self.fit.rel_se(x0, held0) if method == "delta"
              else _bootstrap_log_se(self.fit, x0, n_boot, seed, held0))
        q = stats.t.ppf(0.5 + self.level / 2, self.fit.dof)
        z = stats.norm.ppf(0.5 + self.level / 2)
        far = np.log(np.maximum(n / self.n_max, 1.0))
        held_sd = 0.0  # the held rate's own uncertainty, as a share of the time
        if self.held is not None:
            with np.errstate(invalid="ignore", divide="ignore"):
                held_sd = self.held_rel_sd * h0 / mid
        half = np.sqrt((q * se) ** 2 + (z * self.drift_per_log_n * far) ** 2 + (z * held_sd) ** 2)
        # A half-width beyond e^±690 (a factor 1e300) says "unbounded"; capped there so that the
        # bounds stay finite and the lower one positive instead of under/overflowing to 0 and inf.
        half = np.minimum(half, MAX_LOG_HALF_WIDTH)
        return mid * np.exp(-half), mid * np.exp(half)


def model_fit(n, t, design: Callable[[np.ndarray], np.ndarray], classes: tuple[str, ...] = CLASSES,
              level: float = DEFAULT_LEVEL, *, held: "HeldRate | None" = None) -> ModelFit:
    """Fit t(n) = design(n) @ c (c >= 0) and estimate its extrapolation drift by back-tests; with
    ``held``, one class's rate is not fitted: its work / the held rate is a known part of each time."""
    n = np.asarray(n, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    if n.shape != t.shape or n.ndim != 1 or len(n) == 0:
        raise LcprofError("a fit needs two 1-D arrays of the same, non-zero length")
    if np.any(n <= 0) or np.any(t <= 0):
        raise LcprofError("a fit needs positive lengths and times")
    if held is None:
        tau2, tests = drift_variance(n, t, design)
        return ModelFit(fit=fit_linear(design(n), t), design=design, classes=classes, n_max=float(n.max()),
                        drift_var=tau2, drift_tests=tests, level=level)
    col = classes.index(held.cls)

    def rest(ns):  # the design without the held class (its column zero: NNLS leaves it at 0)
        x = np.array(design(ns), dtype=np.float64)
        x[:, col] = 0.0
        return x

    def held_s(ns):  # seconds of the held class at each n
        ns = np.atleast_1d(np.asarray(ns, dtype=np.float64))
        return np.asarray(design(ns), dtype=np.float64)[:, col] / held.rate(ns)

    tau2, tests = drift_variance(n, t, rest, held=held_s)
    return ModelFit(fit=fit_linear(rest(n), t, held_s(n)), design=rest, classes=classes, n_max=float(n.max()),
                    drift_var=tau2, drift_tests=tests, level=level, held=held_s, held_class=held.cls,
                    held_rate=held.rate, held_rel_sd=held.rel_sd)


@dataclass(frozen=True)
class HeldRate:
    """A class rate measured elsewhere (a calibration) and held fixed in a fit: ``rate(n)`` in work
    per second at each n, its relative uncertainty ``rel_sd``, where it came from."""

    cls: str
    rate: Callable[[np.ndarray], np.ndarray]
    rel_sd: float
    source: str


# ----------------------------------------------------------------------------------------------
# Whole results files
# ----------------------------------------------------------------------------------------------

@dataclass
class GroupFit:
    """The fits of one group (``GROUP_KEYS``). ``model`` extrapolates: the cost-model fit, or the
    polynomial one when the group's model cannot be resolved (``model.kind`` says which)."""

    key: dict
    power_law: PowerLawFit | None
    model: ModelFit | None
    decomposition: Decomposition | None
    points: pd.DataFrame  # one row per distinct n (all ok lengths, in_fit marks the fit range)
    local: pd.DataFrame  # local exponents between consecutive lengths
    extrapolation: dict  # target n, estimates with intervals
    excluded_rows: int
    notes: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return group_label(self.key)

    def summary(self) -> dict:
        pl, d, m = self.power_law, self.decomposition, self.model
        nan = float("nan")
        in_fit = self.points[self.points["in_fit"]]
        rec = dict(self.key)
        rec.update({
            "fit": m.kind if m is not None else "none",
            "n_points": int(in_fit["n_rows"].sum()) if len(in_fit) else 0,
            "n_lengths": int(len(in_fit)),
            "n_min": int(in_fit["n"].min()) if len(in_fit) else None,
            "n_max": int(in_fit["n"].max()) if len(in_fit) else None,
            "exponent": pl.exponent if pl else nan,
            "exponent_lo": pl.exponent_lo if pl else nan,
            "exponent_hi": pl.exponent_hi if pl else nan,
            "fixed_s": m.fixed_s if m else nan,
            "matmul_flops_per_s": m.rate("matmul") if m else nan,
            "attention_flops_per_s": m.rate("attention") if m else nan,
            "memory_bytes_per_s": m.rate("memory") if m else nan,
            "drift_per_log_n": m.drift_per_log_n if m else nan,
            "c0_s": d.c0_s if d else nan,
            "c1_s_per_token": d.c1_s_per_token if d else nan,
            "c2_s_per_token2": d.c2_s_per_token2 if d else nan,
            "n_star": (d.n_star if d and d.n_star is not None else None),
            "quadratic_share_at_n_max": (float(m.growth_share(in_fit["n"].max())[0]) if m and len(in_fit) else nan),
            "rms_rel_residual": m.fit.rms_rel_residual if m else nan,
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


def _family_of(rows: pd.DataFrame) -> str | None:
    """The executed family the rows recorded (one for the group), else the backend's."""
    from lcprof.cost.ops import backend_family

    if "executed_family" in rows.columns:
        fams = {str(f) for f in rows["executed_family"] if str(f) in ("eager", "tiled", "useful")}
        if len(fams) == 1:
            return fams.pop()
        if len(fams) > 1:
            return None
    try:
        return backend_family(str(rows["backend"].iloc[0]))
    except LcprofError:
        return None


def linear_time_note(spec, layer: int, phase: str = "prefill") -> str:
    """Why a layer without attention scales as it does ('' for an attention layer): a linear-time
    mixer's prefill is linear in n (its chunked form is quadratic only inside each chunk of fixed
    length), its decode step reads a constant state; an MLP-only layer is linear per token."""
    if not 0 <= int(layer) < spec.n_layers or spec.layers[int(layer)].has_attention:
        return ""
    kind = spec.layers[int(layer)].kind
    what = "MLP-only" if kind == "mlp" else f"{kind} (a linear-time mixer, no attention)"
    if phase == "decode":
        return f"layer {layer} is {what}: a decode step reads a state of constant size, expect an exponent near 0"
    return f"layer {layer} is {what}: linear-time layer, expect an exponent near 1 (no n² term)"


def _has_attention(spec, key: dict) -> bool:
    layer = int(key.get("layer", 0))
    return not (0 <= layer < spec.n_layers) or spec.layers[layer].has_attention


def group_design(key: dict, rows: pd.DataFrame, specs: dict | None = None, *, attention_call: bool = False
                 ) -> tuple[Callable[[np.ndarray], np.ndarray] | None, str]:
    """(design function over n for the cost-model fit of this group, or None; why not).
    ``attention_call``: see ``work_by_class`` (for a fit that holds the attention rate)."""
    from lcprof.spec import load_model

    try:
        spec = (specs or {}).get(key["model"]) or load_model(key["model"])
    except LcprofError as exc:
        return None, f"no cost-model fit: {exc}"
    family = _family_of(rows)
    if family is None and not _has_attention(spec, key):
        family = "useful"  # no attention in the layer: the family changes nothing the model counts
    if family is None:
        return None, "no cost-model fit: the rows' executed attention family is unknown or mixed"
    kw = dict(phase=key.get("phase", "prefill"), batch=int(key.get("batch", 1)), dtype=str(key["dtype"]),
              family=family, layer=int(key.get("layer", 0)), mla_form=key.get("mla_form") or None,
              elementwise=key.get("elementwise", "unfused"), attention_call=attention_call)
    try:
        work_by_class(spec, np.array([128.0]), **kw)
    except LcprofError as exc:
        return None, f"no cost-model fit: {exc}"
    return (lambda ns: work_by_class(spec, ns, **kw)), ""


def _kind_note(key: dict, specs: dict | None) -> str:
    from lcprof.spec import load_model

    try:
        spec = (specs or {}).get(key["model"]) or load_model(key["model"])
    except LcprofError:
        return ""
    return linear_time_note(spec, int(key.get("layer", 0)), key.get("phase", "prefill"))


def held_attention(key: dict, rates, specs: dict | None = None) -> tuple[HeldRate | None, str]:
    """(the attention rate a fit of this group holds, or None; a note saying which, or why none).

    ``rates`` is a :class:`lcprof.hardware.Hardware` (a calibration) or None. The rate is held when
    the calibration measured this group's backend in its dtype on its device kind and the layer has
    attention; the calibration's spread over its rounds is the held rate's relative uncertainty.
    """
    if rates is None:
        return None, ""
    from lcprof.spec import load_model

    backend, dtype = str(key["backend"]), str(key["dtype"])
    try:
        spec = (specs or {}).get(key["model"]) or load_model(key["model"])
    except LcprofError:
        return None, ""
    if not _has_attention(spec, key):
        return None, ""
    dev = str(key.get("device") or "")
    if rates.device is not None and dev and not dev.startswith(rates.device):
        return None, f"attention rate fitted: the calibration measured {rates.device}, these rows {dev}"
    if rates.attention_rate(backend, dtype, np.array([1.0])) is None:
        return None, f"attention rate fitted: {rates.key} has no {backend} {dtype} attention rate"
    spread = float((rates.attention_spread.get(backend) or {}).get(dtype, 0.0))

    def rate(ns, _b=backend, _d=dtype):
        return rates.attention_rate(_b, _d, ns)

    by_n = (rates.attention_flops_per_s_by_n.get(backend) or {}).get(dtype) or {}
    at = f" at n = {', '.join(str(k) for k in sorted(by_n))}" if by_n else ""
    note = (f"attention rate held at {rates.key}'s {backend} {dtype} rate{at} "
            f"({float(rate(np.array([float(max(by_n) if by_n else 1)]))[0]) / 1e12:.3g} TFLOP/s, "
            f"spread {spread:.1%})")
    return HeldRate("attention", rate, spread, rates.key), note


def _fit_group(key: dict, rows: pd.DataFrame, excluded: int, min_n, max_n, target_n, interval: str,
               level: float, n_boot: int, seed: int, specs: dict | None, rates=None) -> GroupFit:
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

    pl = decomp = model = None
    if distinct >= 2:
        pl = power_law_fit(n_fit, t_fit, level)
        if pl.dof <= 0:
            notes.append("2 points: exponent without interval")
    else:
        notes.append(f"{distinct} length(s) in range: no power law")
    kind_note = _kind_note(key, specs)
    if kind_note:
        notes.append(kind_note)
    if distinct >= 3:
        decomp = decompose(n_fit, t_fit, level)
        held, held_note = held_attention(key, rates, specs)
        design, why = group_design(key, rows, specs, attention_call=held is not None)
        if held_note:
            notes.append(held_note)
        if design is not None:
            model = model_fit(n_fit, t_fit, design, CLASSES, level, held=held)
        else:
            notes.append(why + "; polynomial c0 + c1 n + c2 n² instead")
            model = model_fit(n_fit, t_fit, _poly_design, POLY_CLASSES, level)
        if model.fit.dof <= 0:
            notes.append(f"no degrees of freedom left: {model.kind} fit without interval")
    else:
        notes.append("fewer than 3 lengths: no cost-model fit and no c0 + c1 n + c2 n² decomposition")

    local = local_exponents(rows["n"], rows["time_s"])
    points["local_exponent"] = np.nan
    if len(local):
        points.loc[points["n"].isin(local["n_hi"]), "local_exponent"] = local["local_exponent"].to_numpy()
    nan_col = np.full(len(points), np.nan)
    ns = points["n"].to_numpy(np.float64)
    points["powerlaw_time_s"] = pl.predict(ns) if pl else nan_col
    points["fitted_time_s"] = model.predict(ns) if model else nan_col
    points["residual_rel"] = points["time_s"] / points["fitted_time_s"] - 1.0
    points["powerlaw_residual_rel"] = points["time_s"] / points["powerlaw_time_s"] - 1.0
    points["quadratic_share"] = model.growth_share(ns) if model else nan_col
    if model is not None:
        for name, share in model.shares(ns).items():
            points[name] = share

    extra: dict = {"target_n": target_n}
    nan = float("nan")
    if target_n is not None:
        if model is not None:
            t_mid = float(model.predict(target_n)[0])
            t_lo, t_hi = model.interval(target_n, interval, n_boot=n_boot, seed=seed)
            share = float(model.growth_share(target_n)[0])
        else:
            t_mid, share = nan, nan
            t_lo, t_hi = np.array([nan]), np.array([nan])
        extra.update({"target_time_s": t_mid, "target_time_lo_s": float(t_lo[0]), "target_time_hi_s": float(t_hi[0]),
                      "target_quadratic_share": share, "interval_method": interval})
        if pl is not None:
            p_lo, p_hi = pl.interval(np.atleast_1d(float(target_n)))
            extra.update({"powerlaw_target_time_s": float(pl.predict(np.atleast_1d(float(target_n)))[0]),
                          "powerlaw_target_lo_s": float(p_lo[0]), "powerlaw_target_hi_s": float(p_hi[0])})
        else:
            extra.update({"powerlaw_target_time_s": nan, "powerlaw_target_lo_s": nan, "powerlaw_target_hi_s": nan})
        if len(n_fit) and target_n > FAR_FACTOR * n_fit.max():
            notes.append(f"target is {target_n / n_fit.max():.0f}x the largest fitted n: the interval covers noise "
                         "and the drift the measured range shows (at least 7% per doubling), not a cliff it cannot "
                         "show (a cache overflowing, a kernel switch)")
    return GroupFit(key=key, power_law=pl, model=model, decomposition=decomp, points=points, local=local,
                    extrapolation=extra, excluded_rows=excluded, notes=notes)


def _as_tokens(v) -> int | None:
    if v is None or (isinstance(v, str) and not v.strip()):
        return None
    return parse_tokens(v)


def fit_results(results, *, min_n=None, max_n=None, target=131072, interval: str = "delta",
                level: float = DEFAULT_LEVEL, n_boot: int = 1000, seed: int = 0,
                specs: dict | None = None, rates=None) -> FitResult:
    """Fit every group of a results file (path, list of paths, or DataFrame).

    ``min_n``/``max_n`` bound the lengths used by the fits (token counts such as ``8k`` accepted);
    local exponents and residuals are reported at every ok length. ``target`` (None for none) is the
    length to extrapolate to; ``interval`` is ``delta`` or ``bootstrap``; ``specs`` maps model names
    to ModelSpecs built in code (other names are resolved with ``load_model``); ``rates`` (a
    calibration's :class:`lcprof.hardware.Hardware`) holds each group's attention rate where it
    measured the group's backend (``held_attention``).
    """
    if interval not in INTERVAL_METHODS:
        raise LcprofError(f"unknown interval method {interval!r}; use {' or '.join(INTERVAL_METHODS)}")
    df = normalize_results(results) if isinstance(results, pd.DataFrame) else read_results(results)
    min_n, max_n, target_n = _as_tokens(min_n), _as_tokens(max_n), _as_tokens(target)
    if min_n is not None and max_n is not None and max_n < min_n:
        raise LcprofError(f"--max-n {max_n} is below --min-n {min_n}")
    ok, bad = split_ok(df)
    if ok.empty:
        raise no_ok_rows_error(df, bad, "fit")
    bad_keys = bad.groupby(list(GROUP_KEYS)).size().to_dict() if not bad.empty else {}
    groups = []
    for key_vals, rows in ok.groupby(list(GROUP_KEYS), sort=True):
        key = dict(zip(GROUP_KEYS, key_vals))
        key["batch"], key["layer"] = int(key["batch"]), int(key["layer"])
        groups.append(_fit_group(key, rows, int(bad_keys.get(key_vals, 0)), min_n, max_n, target_n, interval,
                                 level, n_boot, seed, specs, rates))
    return FitResult(groups=groups, excluded_rows=len(bad), excluded_by_status=excluded_summary(bad),
                     min_n=min_n, max_n=max_n, target_n=target_n, interval_method=interval)


def fit_table(fit: FitResult) -> pd.DataFrame:
    """The compact summary the CLI prints as a table."""
    rows = []
    for g in fit.groups:
        s = g.summary()
        rec = {"group": g.label, "n_range": f"{s['n_min']}..{s['n_max']}" if s["n_min"] is not None else "",
               "fit": s["fit"],
               "exponent": s["exponent"], "exponent_95": _fmt_interval(s["exponent_lo"], s["exponent_hi"], "{:.3f}"),
               "fixed_s": s["fixed_s"], "matmul_tflops_per_s": s["matmul_flops_per_s"] / 1e12,
               "attention_tflops_per_s": s["attention_flops_per_s"] / 1e12,
               "memory_gb_per_s": s["memory_bytes_per_s"] / 1e9, "rms_rel_residual": s["rms_rel_residual"]}
        if fit.target_n is not None:
            rec[f"time_s_at_{fit.target_n}"] = s.get("target_time_s")
            rec["time_95_s"] = _fmt_interval(s.get("target_time_lo_s"), s.get("target_time_hi_s"), "{:.4g}")
            rec["attention_share_at_target"] = s.get("target_quadratic_share")
        rec["excluded_rows"] = s["excluded_rows"]
        why = [nt for nt in g.notes if "linear-time" in nt or "MLP-only" in nt or "constant size" in nt]
        rec["why"] = why[0] if why else ""
        rows.append(rec)
    df = pd.DataFrame(rows)
    if "why" in df.columns and not df["why"].astype(bool).any():
        df = df.drop(columns="why")  # attention layers only: nothing to say
    return df


def _fmt_interval(lo, hi, fmt: str) -> str:
    if lo is None or hi is None or not np.isfinite(lo) or not np.isfinite(hi):
        return "n/a"
    return "[" + fmt.format(lo) + ", " + fmt.format(hi) + "]"


# ----------------------------------------------------------------------------------------------
# Trend residuals and the noise figure of a sweep
# ----------------------------------------------------------------------------------------------

def trend_residuals(rows: pd.DataFrame, specs: dict | None = None) -> np.ndarray | None:
    """Relative residual of each row against the cost-model fit of all the rows (one group, ok rows);
    None when there is no such fit (an unknown model, fewer than 4 lengths)."""
    df = normalize_results(rows)
    if len(np.unique(df["n"])) < 4:
        return None
    key = {k: df[k].iloc[0] for k in GROUP_KEYS}
    design, _ = group_design(key, df, specs)
    if design is None:
        return None
    n, t = df["n"].to_numpy(np.float64), df["time_s"].to_numpy(np.float64)
    f = fit_linear(design(n), t)
    return t / (f.x @ f.coef) - 1.0


def noise_figure(results, specs: dict | None = None) -> dict:
    """How noisy a sweep was: the median within-point spread (p90 - p10) / median, the rms relative
    residual of the points against their groups' cost-model fits, and the median share of the CPUs
    other processes took while points ran. ``text`` says it in one line."""
    df = normalize_results(results) if isinstance(results, pd.DataFrame) else read_results(results)
    ok, _ = split_ok(df)
    out = {"points": int(len(ok)), "spread_median": float("nan"), "trend_rms": float("nan"),
           "other_cpu_frac_median": float("nan"), "text": ""}
    if ok.empty:
        return out
    if {"time_p10_s", "time_p90_s"} <= set(ok.columns):
        spread = ((ok["time_p90_s"] - ok["time_p10_s"]) / ok["time_s"]).dropna()
        if len(spread):
            out["spread_median"] = float(spread.median())
    res = []
    for _, g in ok.groupby(list(GROUP_KEYS), sort=True):
        r = trend_residuals(g, specs)
        if r is not None:
            res.extend(r.tolist())
    if res:
        out["trend_rms"] = float(np.sqrt(np.mean(np.square(res))))
    if "other_cpu_frac" in ok.columns and ok["other_cpu_frac"].notna().any():
        out["other_cpu_frac_median"] = float(ok["other_cpu_frac"].median())
    parts = [f"{out['points']} ok points"]
    if np.isfinite(out["spread_median"]):
        parts.append(f"within-point spread (p90-p10)/median {100 * out['spread_median']:.1f}% (median)")
    if np.isfinite(out["trend_rms"]):
        parts.append(f"rms residual against the cost-model fits {100 * out['trend_rms']:.1f}%")
    if np.isfinite(out["other_cpu_frac_median"]):
        parts.append(f"other processes took {100 * out['other_cpu_frac_median']:.0f}% of the CPUs (median)")
    out["text"] = "; ".join(parts)
    return out
