"""What a GPU *is*: peak rates, memory and links, from ``lcprof/data/gpus.json`` or a calibration profile.

Rates are decimal (1 TFLOP/s = 1e12 FLOP/s); memory capacities are bytes. No torch.
"""

from __future__ import annotations

import difflib
import json
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from lcprof.errors import LcprofError
from lcprof.units import dtype_name

GPUS_FILE = Path(__file__).parent / "data" / "gpus.json"


@dataclass(frozen=True)
class Hardware:
    """A device's ceilings. ``peak_flops_per_s`` is keyed by dtype name (fp32, tf32, bf16, fp16, fp8)."""

    key: str
    name: str
    peak_flops_per_s: dict = field(hash=False)
    hbm_bytes_per_s: float
    memory_bytes: int
    interconnect_bytes_per_s: float | None = None
    interconnect: str | None = None
    source: str | None = None
    kind: str = "datasheet"  # or "calibration"
    #: Measured attention-kernel rates, {backend: {dtype: executed FLOP/s}} (calibration only):
    #: attention kernels do not reach the GEMM peak, so a calibrated roofline charges their
    #: QK^T and PV at the rate the backend itself was measured at.
    attention_flops_per_s: dict = field(default_factory=dict, hash=False, compare=False)
    #: The same measured at several lengths, {backend: {dtype: {n: FLOP/s}}}: kernels do not run at
    #: one rate for every n; between measured lengths the rate is interpolated in log n, outside
    #: them it is held at the nearest one.
    attention_flops_per_s_by_n: dict = field(default_factory=dict, hash=False, compare=False)
    #: The calibration's own spread of each attention rate, {backend: {dtype: (best - worst) / best
    #: over its rounds}} (the largest over the lengths measured); what a fit holding the rate charges.
    attention_spread: dict = field(default_factory=dict, hash=False, compare=False)
    #: The device a calibration measured ("cuda" or "cpu"; None for a datasheet entry).
    device: str | None = None

    def __post_init__(self) -> None:
        if self.hbm_bytes_per_s <= 0 or self.memory_bytes <= 0:
            raise LcprofError(f"hardware {self.key!r}: bandwidth and memory must be positive")
        if not self.peak_flops_per_s:
            raise LcprofError(f"hardware {self.key!r}: no peak FLOP/s given")

    def attention_peak(self, backend: str | None, dtype: str) -> float | None:
        """The calibrated attention rate of ``backend`` in ``dtype``, or None when not measured."""
        if not backend:
            return None
        rate = (self.attention_flops_per_s.get(backend) or {}).get(dtype_name(dtype))
        return float(rate) if rate else None

    def attention_rate(self, backend: str | None, dtype: str, n) -> np.ndarray | None:
        """The calibrated attention rate at lengths ``n`` (array): interpolated in log n between the
        lengths it was measured at, the nearest one outside them; the single rate when only one
        length was measured; None when the backend was not measured in ``dtype``."""
        import numpy as np  # here, not at import: `lcprof gpus` then never loads numpy

        n_arr = np.atleast_1d(np.asarray(n, dtype=np.float64))
        by_n = ((self.attention_flops_per_s_by_n.get(backend) or {}).get(dtype_name(dtype)) or {}) if backend else {}
        if len(by_n) >= 2:
            xs = sorted((float(k), float(v)) for k, v in by_n.items())
            return np.interp(np.log(np.maximum(n_arr, 1.0)), [np.log(x) for x, _ in xs], [r for _, r in xs])
        one = self.attention_peak(backend, dtype)
        if one is None and len(by_n) == 1:
            one = float(next(iter(by_n.values())))
        return None if one is None else np.full_like(n_arr, one)

    def peak(self, dtype: str) -> float:
        """Dense matmul peak for a compute dtype; fp32 falls back to tf32 only if asked for tf32."""
        d = dtype_name(dtype)
        if d in self.peak_flops_per_s:
            return float(self.peak_flops_per_s[d])
        if d in ("bf16", "fp16"):
            other = "fp16" if d == "bf16" else "bf16"
            if other in self.peak_flops_per_s:
                return float(self.peak_flops_per_s[other])
        raise LcprofError(
            f"{self.name} has no {d} peak rate; known: {', '.join(sorted(self.peak_flops_per_s))}"
        )


@lru_cache(maxsize=1)
def _db() -> dict:
    with open(GPUS_FILE) as fh:
        return json.load(fh)


def _index() -> dict[str, str]:
    idx: dict[str, str] = {}
    for key, entry in _db()["gpus"].items():
        for nm in [key, *entry.get("aliases", [])]:
            nm = nm.lower()
            if nm in idx and idx[nm] != key:
                raise RuntimeError(f"GPU name {nm!r} is defined twice in {GPUS_FILE.name}")
            idx[nm] = key
    return idx


def list_gpus() -> list[str]:
    return sorted(_db()["gpus"])


def get_gpu(name: str | Hardware) -> Hardware:
    """A GPU from the database by key or alias (``h100-sxm``, ``h100``, ``b200``...)."""
    if isinstance(name, Hardware):
        return name
    idx = _index()
    key = idx.get(str(name).lower())
    if key is None:
        close = difflib.get_close_matches(str(name).lower(), list(idx), n=3, cutoff=0.4)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise LcprofError(f"unknown GPU {name!r}{hint} (known: {', '.join(list_gpus())})")
    e = _db()["gpus"][key]
    ic = e.get("interconnect") or {}
    return Hardware(
        key=key,
        name=e["name"],
        peak_flops_per_s={k: float(v) for k, v in e["peak_flops_per_s"].items() if v},
        hbm_bytes_per_s=float(e["hbm_bytes_per_s"]),
        memory_bytes=int(e["memory_bytes"]),
        interconnect_bytes_per_s=float(ic["bytes_per_s"]) if ic.get("bytes_per_s") else None,
        interconnect=ic.get("name"),
        source=e.get("source"),
    )


def list_links() -> dict[str, dict]:
    return dict(_db().get("links", {}))


def link_bandwidth(name: str | float) -> float:
    """Bytes/s of a named link (``nvlink4``, ``pcie5``, ``ib-ndr``) or a number of bytes/s."""
    if isinstance(name, (int, float)) and not isinstance(name, bool):
        return _positive_rate(float(name), name)
    links = list_links()
    key = str(name).strip().lower()
    if key in links:
        return float(links[key]["bytes_per_s"])
    try:
        value = float(key)
    except ValueError:
        pass
    else:
        return _positive_rate(value, name)
    close = difflib.get_close_matches(key, list(links), n=3, cutoff=0.4)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise LcprofError(f"unknown link {name!r}{hint} (known: {', '.join(sorted(links))}, or bytes/s)")


def _positive_rate(value: float, given) -> float:
    if not math.isfinite(value) or value <= 0:
        raise LcprofError(f"link speed {given!r} must be a positive, finite number of bytes/s "
                          f"or a link name ({', '.join(sorted(list_links()))})")
    return value


def gpus_table():
    """The GPU database: one row per GPU, with its aliases, peaks (FLOP/s, decimal), HBM and links."""
    from lcprof.table import Table

    rows = []
    db = _db()["gpus"]
    dtypes = ("fp32", "tf32", "bf16", "fp16", "fp8", "int8")
    for key in list_gpus():
        e = db[key]
        ic = e.get("interconnect") or {}
        rec = {"gpu": key, "name": e["name"], "aliases": ",".join(e.get("aliases", [])),
               "memory_bytes": int(e["memory_bytes"]), "memory_gib": int(e["memory_bytes"]) / float(1 << 30),
               "hbm_bytes_per_s": float(e["hbm_bytes_per_s"])}
        for d in dtypes:
            v = e["peak_flops_per_s"].get(d)
            rec[f"peak_{d}_flops_per_s"] = float(v) if v else None
        rec["interconnect"] = ic.get("name")
        rec["interconnect_bytes_per_s"] = float(ic["bytes_per_s"]) if ic.get("bytes_per_s") else None
        rec["source"] = e.get("source")
        rows.append(rec)
    return Table.from_records(rows)


def links_table():
    """The named links of the database (`lcprof ring --link NAME`), bytes/s one way."""
    from lcprof.table import Table

    return Table.from_records([{"link": k, "bytes_per_s": float(v["bytes_per_s"]),
                                **{f: v[f] for f in v if f != "bytes_per_s"}}
                               for k, v in sorted(list_links().items())])


def _finite_positive(value, field: str, where: str) -> float:
    """A calibration number: finite and positive, or the load is refused naming the field."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise LcprofError(f"calibration {where!r}: {field} must be a number, got {value!r}") from None
    if not math.isfinite(v) or v <= 0:
        raise LcprofError(f"calibration {where!r}: {field} must be a positive, finite number, got {value!r}")
    return v


def load_calibration(path: str | Path) -> Hardware:
    """A calibration profile written by ``lcprof calibrate`` (same fields as a database entry)."""
    p = Path(path)
    w = str(p)
    try:
        with open(p) as fh:
            e = json.load(fh)
    except FileNotFoundError:
        raise LcprofError(f"cannot read calibration {w!r}: no such file") from None
    except IsADirectoryError:
        raise LcprofError(f"cannot read calibration {w!r}: it is a folder") from None
    except PermissionError:
        raise LcprofError(f"cannot read calibration {w!r}: permission denied") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise LcprofError(f"cannot read calibration {w!r}: not valid JSON ({exc})") from None
    except RecursionError:
        raise LcprofError(f"cannot read calibration {w!r}: JSON nested too deeply") from None
    if not isinstance(e, dict):
        raise LcprofError(f"calibration {w!r} must be a JSON object, got {type(e).__name__}")
    for k in ("peak_flops_per_s", "hbm_bytes_per_s", "memory_bytes"):
        if k not in e:
            raise LcprofError(f"calibration {w!r} is missing field {k!r}")

    def table(field, depth):
        """A {name: ...} mapping ``depth`` levels deep whose leaves are positive finite rates."""
        obj = e.get(field) or {}

        def walk(o, trail, d):
            if d == 0:
                return _finite_positive(o, f"{field}{trail}", w)
            if not isinstance(o, dict):
                raise LcprofError(f"calibration {w!r}: {field}{trail} must be a JSON object")
            return {k: walk(v, f"{trail}.{k}", d - 1) for k, v in o.items()}

        return walk(obj, "", depth)

    peaks = table("peak_flops_per_s", 1)
    by_n = table("attention_flops_per_s_by_n", 3)
    try:
        by_n = {b: {d: {int(n): v for n, v in rates.items()} for d, rates in per.items()} for b, per in by_n.items()}
    except ValueError:
        raise LcprofError(f"calibration {w!r}: attention_flops_per_s_by_n lengths must be whole numbers") from None
    memory = _finite_positive(e["memory_bytes"], "memory_bytes", w)
    ic = e.get("interconnect_bytes_per_s")
    return Hardware(
        key=str(e.get("key", p.stem)),
        name=str(e.get("name", p.stem)),
        peak_flops_per_s=peaks,
        hbm_bytes_per_s=_finite_positive(e["hbm_bytes_per_s"], "hbm_bytes_per_s", w),
        memory_bytes=int(memory),
        interconnect_bytes_per_s=None if ic is None else _finite_positive(ic, "interconnect_bytes_per_s", w),
        source=str(p),
        kind="calibration",
        attention_flops_per_s=table("attention_flops_per_s", 2),
        attention_flops_per_s_by_n=by_n,
        attention_spread=_attention_spread(e, w),
        device=str(e["device"]) if e.get("device") in ("cuda", "cpu") else None,
    )


def _attention_spread(e: dict, where: str) -> dict:
    """{backend: {dtype: largest spread}} from a profile's ``method.attention`` ("b/d/n" entries)."""
    out: dict = {}
    for k, m in ((e.get("method") or {}).get("attention") or {}).items():
        parts = str(k).split("/")
        spread = m.get("spread") if isinstance(m, dict) else None
        if len(parts) != 3 or spread is None:
            continue
        if not isinstance(spread, (int, float)) or not 0 <= float(spread) <= 1:
            raise LcprofError(f"calibration {where!r}: method.attention.{k}.spread must be a number in [0, 1]")
        per = out.setdefault(parts[0], {})
        per[parts[1]] = max(per.get(parts[1], 0.0), float(spread))
    return out
