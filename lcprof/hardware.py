"""What a GPU *is*: peak rates, memory and links, from ``lcprof/data/gpus.json`` or a calibration profile.

Rates are decimal (1 TFLOP/s = 1e12 FLOP/s); memory capacities are bytes. No torch.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

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
    if isinstance(name, (int, float)):
        return float(name)
    links = list_links()
    key = str(name).lower()
    if key in links:
        return float(links[key]["bytes_per_s"])
    try:
        return float(key)
    except ValueError:
        pass
    close = difflib.get_close_matches(key, list(links), n=3, cutoff=0.4)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise LcprofError(f"unknown link {name!r}{hint} (known: {', '.join(sorted(links))}, or bytes/s)")


def load_calibration(path: str | Path) -> Hardware:
    """A calibration profile written by ``lcprof calibrate`` (same fields as a database entry)."""
    p = Path(path)
    try:
        with open(p) as fh:
            e = json.load(fh)
    except FileNotFoundError:
        raise LcprofError(f"cannot read calibration {str(p)!r}: no such file") from None
    except json.JSONDecodeError as exc:
        raise LcprofError(f"cannot read calibration {str(p)!r}: not valid JSON ({exc})") from None
    for k in ("peak_flops_per_s", "hbm_bytes_per_s", "memory_bytes"):
        if k not in e:
            raise LcprofError(f"calibration {str(p)!r} is missing field {k!r}")
    return Hardware(
        key=e.get("key", p.stem),
        name=e.get("name", p.stem),
        peak_flops_per_s={k: float(v) for k, v in e["peak_flops_per_s"].items()},
        hbm_bytes_per_s=float(e["hbm_bytes_per_s"]),
        memory_bytes=int(e["memory_bytes"]),
        interconnect_bytes_per_s=e.get("interconnect_bytes_per_s"),
        source=str(p),
        kind="calibration",
        attention_flops_per_s={b: {d: float(v) for d, v in rates.items()}
                               for b, rates in (e.get("attention_flops_per_s") or {}).items()},
        attention_flops_per_s_by_n={b: {d: {int(n): float(v) for n, v in by_n.items()} for d, by_n in rates.items()}
                                    for b, rates in (e.get("attention_flops_per_s_by_n") or {}).items()},
    )
