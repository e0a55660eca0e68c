"""Results files: the one owner of their schema, the point key, reading, writing and normalisation.

A results file holds one row per measured point (shared/DESIGN.md): at least the eight basic
columns ``REQUIRED_COLUMNS``; ``lcprof sweep`` writes every column of ``RESULT_COLUMNS``.

**The point key** (``POINT_KEY``) is every column that changes *what* is measured: model, backend,
dtype, device, batch, n, phase, layer, MoE timing, MLA form, simulated ring ranks, CUDA-graph
replay, L2 flushing and the layer's elementwise implementation. Two rows with the same key measure
the same thing; a resume skips a point whose key is done; fits group on the key less ``n``
(``GROUP_KEYS``); ``compare`` predicts each row from its own key (its MLA form, its phase...). A
file that lacks a key column (an older file, or a table measured elsewhere) reads with the
column's default (``KEY_DEFAULTS``), so it keeps meaning what it meant when it was written.

``point_key(row)`` turns any mapping (a CSV row of strings, a dict the sweep built, a pandas row)
into the canonical tuple of strings, so keys compare equal whatever wrote them.

Writing (:class:`ResultsWriter`): one ``write`` of the whole CSV line, flush and ``os.fsync`` per
row; timings in Python's shortest round-trip repr, never rounded. One writer per file: the writer
holds an advisory ``fcntl`` lock on ``<file>.lock`` (which names the holder: pid, host, start
time); a second writer fails at once with :class:`ResultsLocked`. The kernel drops the lock when
the holder dies (even by SIGKILL), so a stale lock file never blocks.

No torch.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import socket
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import pandas as pd

from lcprof.errors import LcprofError

# ----------------------------------------------------------------------------------------------
# Schema
# ----------------------------------------------------------------------------------------------

#: Columns every results file must have (a table measured elsewhere may have only these).
REQUIRED_COLUMNS = ("model", "backend", "dtype", "device", "batch", "n", "time_s", "status")
#: The schema of shared/DESIGN.md (environment columns come on top).
SCHEMA_COLUMNS = REQUIRED_COLUMNS + ("time_p10_s", "time_p90_s", "repeats", "peak_mem_bytes", "reason", "phase")

#: Every column that changes what is measured, with the value a file without the column means.
KEY_DEFAULTS: dict[str, str | None] = {
    "model": None, "backend": None, "dtype": None, "device": None, "batch": "1", "n": None,
    "phase": "prefill", "layer": "0", "moe_timing": "n/a", "mla_form": "", "ranks": "",
    "cuda_graph": "false", "flush_l2": "false", "elementwise": "unfused",
}
POINT_KEY = tuple(KEY_DEFAULTS)
#: One fit (and one compare group) per distinct value of these: the point key less n.
GROUP_KEYS = tuple(k for k in POINT_KEY if k != "n")
_INT_KEYS = ("batch", "n", "layer")
#: Smallest value each integer key may hold (n and batch count tokens and sequences; layer is an index).
_INT_KEY_MIN = {"batch": 1, "n": 1, "layer": 0}
#: Largest integer key a results file may hold: 2**53, where float64 (pandas' reading of a column
#: with blanks) stops being exact; far beyond any sequence length or batch.
MAX_INT_KEY = 2 ** 53
_BOOL_KEYS = ("cuda_graph", "flush_l2")

#: Environment facts the measurement layer records for every row (``lcprof.measure.env``).
ENV_COLUMNS = ("torch_version", "cuda_version", "gpu_name", "driver_version", "gpu_memory_bytes",
               "gpu_sm_clock_max_mhz", "gpu_mem_clock_max_mhz", "gpu_power_limit_w", "cpu_model",
               "threads", "lcprof_version")
#: What the machine was doing while a point ran (``lcprof.measure.env.LoadProbe``): the 1-minute
#: load average, CPU seconds other processes used (all CPU time in /proc/stat less this process's),
#: their share of the machine, and on CUDA the GPU's clocks, throttle reasons and utilization
#: before and after the point (pynvml).
LOAD_COLUMNS = ("load_avg_1m", "cpu_count", "point_wall_s", "self_cpu_s", "other_cpu_s", "other_cpu_frac",
                "gpu_sm_clock_before_mhz", "gpu_sm_clock_after_mhz", "gpu_mem_clock_before_mhz",
                "gpu_mem_clock_after_mhz", "gpu_throttle_before", "gpu_throttle_after",
                "gpu_util_before_pct", "gpu_util_after_pct", "gpu_temp_before_c", "gpu_temp_after_c")
#: Every column ``lcprof sweep`` writes, in order.
RESULT_COLUMNS = (
    "model", "backend", "dtype", "device", "batch", "n", "time_s", "time_p10_s", "time_p90_s", "repeats",
    "peak_mem_bytes", "status", "reason", "phase",
    "predicted_flops", "useful_flops", "achieved_flops_per_s", "layer", "layer_kind", "attention_kind", "window",
    "effective_mask", "mask_mode", "executed_family", "moe_timing", "mla_form", "ranks",
    "cuda_graph", "flush_l2", "elementwise",
    "predicted_mem_bytes", "mem_cap_bytes", "peak_mem_source",
    "time_mean_s", "time_stdev_s", "spread_warning", "clock", "input_sets",
    "check_attn_rel_err", "check_layer_rel_err",
    "order_index", "attempt", "remeasure_reason", "earlier_times_s",
    *LOAD_COLUMNS, *ENV_COLUMNS, "timestamp", "samples_s",
)
#: Statuses a resume keeps (an ``error`` row is measured again).
DONE_STATUSES = ("ok", "oom", "skipped")
#: Environment columns of a results table: ``*_version``, ``gpu_*``/``cpu_*`` facts and these names.
ENV_NAMES = ("threads", "hostname", "platform", "clock", "timestamp", "date_utc", "data_origin", "driver",
             "device_name", "nvml")


# ----------------------------------------------------------------------------------------------
# The point key
# ----------------------------------------------------------------------------------------------

def _blank(v) -> bool:
    if v is None:
        return True
    if isinstance(v, float) and math.isnan(v):
        return True
    return isinstance(v, str) and v.strip().lower() in ("", "nan", "none")


def canonical(column: str, value) -> str:
    """The key text of ``value`` in ``column``: ints without decimals, booleans as true/false,
    strings stripped and lower-cased where case carries no meaning; a blank cell is the default."""
    if _blank(value):
        default = KEY_DEFAULTS.get(column)
        return "" if default is None else default
    if column in _INT_KEYS or column == "ranks":
        try:
            f = float(value)
        except (TypeError, ValueError):
            return str(value).strip()
        return str(int(f)) if f.is_integer() else repr(f)
    if column in _BOOL_KEYS:
        text = str(value).strip().lower()
        return "true" if text in ("true", "1", "1.0", "yes") else "false"
    text = str(value).strip()
    return text.lower() if column in ("dtype", "device", "phase") else text


def point_key(row: Mapping) -> tuple[str, ...]:
    """The canonical point key of one row (any mapping; missing columns take their defaults)."""
    return tuple(canonical(c, row.get(c)) for c in POINT_KEY)


def key_of_frame(df: pd.DataFrame) -> list[tuple[str, ...]]:
    """``point_key`` of every row of a DataFrame (columns it lacks take their defaults)."""
    cols = {c: (df[c].tolist() if c in df.columns else [None] * len(df)) for c in POINT_KEY}
    return [tuple(canonical(c, cols[c][i]) for c in POINT_KEY) for i in range(len(df))]


# ----------------------------------------------------------------------------------------------
# Reading and normalisation
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
            # key columns as text: "n/a" and "" must not turn into NaN
            df = pd.read_csv(path, keep_default_na=True,
                             dtype={c: str for c in ("moe_timing", "mla_form", "ranks", "cuda_graph", "flush_l2",
                                                     "elementwise", "reason")})
    except LcprofError:
        raise
    except pd.errors.EmptyDataError:
        raise LcprofError(f"results {str(path)!r} is empty") from None
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError, json.JSONDecodeError, OSError) as exc:
        raise LcprofError(f"cannot read results {str(path)!r}: not valid CSV/JSONL ({exc})") from None
    if df.empty:
        raise LcprofError(f"results {str(path)!r} has no rows")
    return df


def read_results(paths) -> pd.DataFrame:
    """Read one or more results files (CSV; ``.jsonl``/``.ndjson`` as JSON lines; ``.json`` a list)
    into one normalized table (see :func:`normalize_results`), with a ``source_file`` column.
    Every row is kept: a table measured elsewhere may hold several rows of one point (repeats).
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
        df = normalize_results(df)
        df["source_file"] = str(path)
        frames.append(df)
    if not frames:
        raise LcprofError("no results file given")
    return pd.concat(frames, ignore_index=True, sort=False)


def _text(series: pd.Series, default: str) -> pd.Series:
    return pd.Series([default if _blank(v) else str(v).strip() for v in series], index=series.index, dtype=object)


def normalize_results(df: pd.DataFrame) -> pd.DataFrame:
    """Defaults and types for a results table: every key column present and canonical (text, with
    ``batch``, ``n`` and ``layer`` as int64), ``time_s`` float, ``status`` lower case, ``reason`` text.

    An old file without ``cuda_graph`` whose ``clock`` says ``cuda_graph`` was timed with graphs.
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise LcprofError(f"results table is missing column(s) {', '.join(missing)}; "
                          f"a results file needs at least {', '.join(REQUIRED_COLUMNS)}")
    df = df.copy()
    if "cuda_graph" not in df.columns and "clock" in df.columns:
        df["cuda_graph"] = (df["clock"].astype(str) == "cuda_graph")
    for col in ("status", "reason"):
        if col not in df.columns:
            df[col] = ""
    df["status"] = _text(df["status"], "").str.lower()
    df["reason"] = _text(df["reason"], "")
    for col in POINT_KEY:
        if col in _INT_KEYS:
            raw = df[col] if col in df.columns else pd.Series([None] * len(df), index=df.index)
            default = KEY_DEFAULTS[col]
            vals = pd.to_numeric(raw, errors="coerce")
            if default is not None:
                vals = vals.fillna(float(default))
            bad = vals.isna() | ~np.isfinite(vals.to_numpy(dtype=np.float64, na_value=np.nan))
            if bad.any():
                first = raw[bad].iloc[0]
                raise LcprofError(f"column {col!r} holds a non-number ({first!r}) in row "
                                  f"{int(np.argmax(bad.to_numpy())) + 1}")
            lo = _INT_KEY_MIN[col]
            f = vals.to_numpy(dtype=np.float64)
            bad = (f < lo) | (f > MAX_INT_KEY) | (f != np.floor(f))
            if bad.any():
                i = int(np.argmax(bad))
                raise LcprofError(f"column {col!r} holds {str(raw.iloc[i])!r} in row {i + 1}; it must be a whole "
                                  f"number from {lo} to {MAX_INT_KEY}")
            df[col] = vals.astype(np.int64)
        else:
            raw = df[col] if col in df.columns else pd.Series([None] * len(df), index=df.index)
            df[col] = pd.Series([canonical(col, v) for v in raw], index=df.index, dtype=object)
    t = pd.to_numeric(df["time_s"], errors="coerce")
    bad = t.isna() & df["time_s"].notna() & (df["time_s"].astype(str).str.strip() != "")
    if bad.any():
        first = df.loc[bad, "time_s"].iloc[0]
        raise LcprofError(f"column 'time_s' holds a non-number ({first!r}) in row "
                          f"{int(np.argmax(bad.to_numpy())) + 1}")
    df["time_s"] = t.astype(np.float64)
    for col in ("time_p10_s", "time_p90_s", "peak_mem_bytes", "repeats", "predicted_flops", "useful_flops",
                *LOAD_COLUMNS[:6]):
        if col in df.columns:
            df[col] = pd.to_numeric(df[col], errors="coerce")
    return df


def env_columns(df: pd.DataFrame) -> list[str]:
    """Columns that describe the environment: torch/CUDA/driver/lcprof versions, GPU and CPU facts."""
    return [c for c in df.columns
            if (c.endswith("_version") or c.startswith(("gpu_", "cpu_")) or c in ENV_NAMES)
            and c not in LOAD_COLUMNS]


def split_ok(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows with status ok and a positive, finite time, the rest)."""
    ok = (df["status"] == "ok") & np.isfinite(df["time_s"]) & (df["time_s"] > 0)
    return df[ok].copy(), df[~ok].copy()


def excluded_summary(bad: pd.DataFrame) -> dict[str, int]:
    """Rows left out, counted by status ('ok without a positive time' for an ok row with no time)."""
    if bad.empty:
        return {}
    labels = np.where(bad["status"] == "ok", "ok without a positive time", bad["status"])
    return {str(k): int(v) for k, v in pd.Series(labels).value_counts().items()}


def no_ok_rows_error(df: pd.DataFrame, bad: pd.DataFrame, what: str) -> LcprofError:
    statuses = ", ".join(f"{k}: {v}" for k, v in excluded_summary(bad).items())
    return LcprofError(f"no rows with status ok and a positive time_s to {what} ({len(df)} rows: {statuses})")


_BACKEND_WORDS = {
    "eager": "eager attention", "sdpa": "SDPA (PyTorch's choice)", "sdpa-math": "SDPA math",
    "sdpa-flash": "SDPA flash", "sdpa-efficient": "SDPA memory-efficient", "sdpa-cudnn": "SDPA cuDNN",
    "flash-attn": "FlashAttention", "striped-ring": "striped ring (our kernel)",
}


def group_label(key: Mapping, words: bool = False) -> str:
    """A group's name: ``model backend dtype device (what differs from the defaults)``; with
    ``words`` the backend in words (for legends)."""
    extra = []
    if key.get("phase", "prefill") != "prefill":
        extra.append(str(key["phase"]))
    if int(key.get("batch", 1)) != 1:
        extra.append(f"batch {key['batch']}")
    if int(key.get("layer", 0)) != 0:
        extra.append(f"layer {key['layer']}")
    if key.get("moe_timing", "n/a") not in ("n/a", "dense-equivalent"):
        extra.append(f"MoE {key['moe_timing']}")
    if key.get("mla_form"):
        extra.append(f"MLA {key['mla_form']}")
    if key.get("ranks"):
        extra.append(f"{key['ranks']} ranks")
    if key.get("cuda_graph") == "true":
        extra.append("CUDA graphs")
    if key.get("flush_l2") == "true":
        extra.append("L2 flushed")
    if key.get("elementwise", "unfused") != "unfused":
        extra.append(f"{key['elementwise']} elementwise")
    tail = f" ({', '.join(extra)})" if extra else ""
    if words:
        backend = _BACKEND_WORDS.get(str(key["backend"]), str(key["backend"]))
        return f"{backend}, {key['dtype']}{tail}"
    return f"{key['model']} {key['backend']} {key['dtype']} {key['device']}{tail}"


# ----------------------------------------------------------------------------------------------
# Writing: one fsynced line per row, one writer per file
# ----------------------------------------------------------------------------------------------

def csv_line(values: Iterable) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(["" if v is None else v for v in values])
    return buf.getvalue()


def cell(v):
    """A value as the CSV writer should see it: floats as their shortest round-trip repr."""
    if isinstance(v, np.floating):
        v = float(v)
    if isinstance(v, np.integer):
        v = int(v)
    if isinstance(v, (bool, np.bool_)):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)  # never rounded
    return v


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(str(path.parent or Path(".")), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class ResultsLocked(LcprofError):
    """Another process holds the results file's lock."""


def lock_path(path: str | Path) -> Path:
    p = Path(path)
    return p.with_name(p.name + ".lock")


class ResultsLock:
    """An exclusive advisory lock (``fcntl.flock``) on ``<results>.lock`` that names its holder.

    ``acquire`` never waits: if another process holds it, :class:`ResultsLocked` says who (pid,
    host, start time). The lock file stays behind after release; it locks nothing once its holder
    has gone (the kernel releases a dead process's locks), so SIGKILL never leaves a file blocked.
    """

    def __init__(self, results_path: str | Path) -> None:
        self.path = lock_path(results_path)
        self.results_path = Path(results_path)
        self._fd: int | None = None

    def acquire(self) -> "ResultsLock":
        import fcntl

        try:
            fd = os.open(str(self.path), os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise LcprofError(f"cannot lock {str(self.results_path)!r}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = ""
            try:
                holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
            except OSError:
                pass
            os.close(fd)
            who = _describe_holder(holder)
            raise ResultsLocked(f"{str(self.results_path)!r} is being written by another sweep ({who}); "
                                "wait for it to finish or choose another --out") from None
        stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
        info = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "start": stamp})
        os.ftruncate(fd, 0)
        os.pwrite(fd, (info + "\n").encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        import fcntl

        try:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "ResultsLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _describe_holder(text: str) -> str:
    try:
        info = json.loads(text)
        return f"pid {info['pid']} on {info['host']}, started {info['start']}"
    except (ValueError, KeyError, TypeError):
        return "holder unknown"


class ResultsWriter:
    """Append rows to a results CSV, each flushed and fsynced as it is written.

    The caller holds the file's :class:`ResultsLock`. A new (or empty) file gets the header first;
    missing parent folders are created (the sweep says so).
    """

    def __init__(self, path: str | Path, columns: tuple[str, ...] = RESULT_COLUMNS) -> None:
        self.path = Path(path)
        self.columns = columns
        new = not self.path.exists() or self.path.stat().st_size == 0
        try:
            self._fh = open(self.path, "a", newline="")
        except OSError as exc:
            raise LcprofError(f"cannot write {str(self.path)!r}: {exc.strerror or exc}") from None
        if new:
            self._write(csv_line(columns))
            _fsync_dir(self.path)

    def _write(self, text: str) -> None:
        self._fh.write(text)
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def write(self, row: Mapping) -> None:
        self._write(csv_line(cell(row.get(c)) for c in self.columns))

    def close(self) -> None:
        self._fh.close()


def _atomic_rewrite(path: Path, header: list[str], rows: list[list[str]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path)


def _read_rows(path: Path) -> tuple[list[str], list[list[str]], bool]:
    """(header, rows, torn): a last line without its newline (a kill mid-write) is dropped."""
    text = path.read_text()
    torn = bool(text) and not text.endswith("\n")
    if torn:
        text = text[: text.rfind("\n") + 1]
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        return [], [], torn
    return rows[0], rows[1:], torn


def prepare_resume(path: str | Path, columns: tuple[str, ...] = RESULT_COLUMNS) -> dict[tuple[str, ...], dict]:
    """Make ``path`` ready for a resume; return {point key: row} of the points already done.

    Removes (by one atomic rewrite) a torn last line, ``error`` rows, rows of the wrong width, and
    every row but the last of a repeated key. A file written with an older set of columns is
    rewritten with ``columns``, each missing column empty (its key default). A file that lacks the
    eight basic columns is refused. The caller holds the lock.
    """
    p = Path(path)
    if not p.exists() or p.stat().st_size == 0:
        return {}
    header, rows, torn = _read_rows(p)
    if not header:
        return {}
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise LcprofError(f"cannot resume {str(p)!r}: it is not an lcprof results file (missing "
                          f"{', '.join(missing)}); choose another --out")
    unknown = [c for c in header if c not in columns]
    if unknown:
        raise LcprofError(f"cannot resume {str(p)!r}: it has columns lcprof sweep does not write "
                          f"({', '.join(unknown[:5])}); choose another --out")
    changed = torn or tuple(header) != tuple(columns)
    by_key: dict[tuple[str, ...], dict] = {}
    for r in rows:
        if len(r) != len(header):
            changed = True
            continue
        rec = dict(zip(header, r))
        if rec["status"] not in DONE_STATUSES:
            changed = True
            continue
        k = point_key(rec)
        if k in by_key:
            changed = True
            del by_key[k]  # keep the last, in its own place
        by_key[k] = rec
    if changed:
        _atomic_rewrite(p, list(columns), [[rec.get(c, "") for c in columns] for rec in by_key.values()])
    return by_key


def replace_row(path: str | Path, row: Mapping, columns: tuple[str, ...] = RESULT_COLUMNS) -> None:
    """Put ``row`` in place of the row with the same point key (one atomic rewrite; appended if the
    key is not there). The caller holds the lock."""
    p = Path(path)
    header, rows, _ = _read_rows(p)
    header = header or list(columns)
    key = point_key(row)
    new = [str(cell(row.get(c)) if row.get(c) is not None else "") for c in header]
    out, placed = [], False
    for r in rows:
        if len(r) == len(header) and point_key(dict(zip(header, r))) == key:
            if not placed:
                out.append(new)
                placed = True
            continue
        out.append(r)
    if not placed:
        out.append(new)
    _atomic_rewrite(p, header, out)
