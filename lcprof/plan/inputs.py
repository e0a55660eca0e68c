"""Parsing the planner's inputs: durations, request mixes, byte counts, lists. No torch.

(Parallel layouts are checked in ``lcprof.plan.parallel``, dtypes in ``kvformat`` / ``cost.weights``.)
"""

from __future__ import annotations

from lcprof.errors import LcprofError
from lcprof.units import BYTE_UNITS, dtype_name, parse_tokens, split_unit

MIX_TOLERANCE = 1e-6

_UNITS = (("ms", 1e-3), ("us", 1e-6), ("µs", 1e-6), ("s", 1.0))


def parse_seconds(text, what: str = "duration") -> float | None:
    """``2s``, ``500ms``, ``50us`` or a bare number of seconds; None passes through."""
    if text is None:
        return None
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        body, scale = split_unit(text, _UNITS)
        try:
            value = float(body) * scale
        except ValueError:
            raise LcprofError(f"malformed {what} {text!r}; use e.g. 2s, 500ms, 50us or 0.5 (seconds)") from None
    if not value > 0 or value != value or value == float("inf"):
        raise LcprofError(f"{what} must be a positive number of seconds, got {text!r}")
    return value


def parse_mix(text) -> list[tuple[int, float]]:
    """``2k:0.8,8k:0.15,32k:0.05`` -> [(2048, 0.8), (8192, 0.15), (32768, 0.05)], sorted by length.

    Shares are fractions of requests; they must sum to 1 within 1e-6.
    """
    if text is None:
        return []
    if isinstance(text, (list, tuple)):
        items = [(parse_tokens(n), float(s)) for n, s in text]
    else:
        items = []
        for part in str(text).split(","):
            if ":" not in part:
                raise LcprofError(f"malformed mix entry {part.strip()!r}; use LENGTH:SHARE, e.g. 2k:0.8,8k:0.15,32k:0.05")
            n_text, _, s_text = part.partition(":")
            try:
                share = float(s_text)
            except ValueError:
                raise LcprofError(f"malformed share {s_text.strip()!r} in mix entry {part.strip()!r}; "
                                  "use a fraction such as 0.15") from None
            items.append((parse_tokens(n_text), share))
    if not items:
        raise LcprofError("empty mix; use e.g. 2k:0.8,8k:0.15,32k:0.05")
    seen: set[int] = set()
    for n, s in items:
        if not 0 < s <= 1:
            raise LcprofError(f"mix share for {n} tokens is {s:g}; each share must be in (0, 1]")
        if n in seen:
            raise LcprofError(f"length {n} appears twice in the mix; give each length once")
        seen.add(n)
    total = sum(s for _, s in items)
    if abs(total - 1.0) > MIX_TOLERANCE:
        raise LcprofError(f"mix shares sum to {total:.6g}; they must sum to 1 (within {MIX_TOLERANCE:g})")
    return sorted(items)


def _number_list(text, what: str, convert, scalars: tuple, example: str) -> list:
    """A scalar of type ``scalars``, a list/tuple, or comma-separated text -> values via ``convert``."""
    if isinstance(text, scalars) and not isinstance(text, bool):
        return [convert(text)]
    if isinstance(text, (list, tuple)):
        return [convert(v) for v in text]
    try:
        return [convert(p) for p in str(text).split(",")]
    except ValueError:
        raise LcprofError(f"malformed {what} {text!r}; use {example}") from None


def parse_int_list(text, what: str) -> list[int]:
    """``1,2,4,8`` -> [1, 2, 4, 8] (positive, sorted, unique)."""
    values = _number_list(text, what, int, (int,), "integers such as 1,2,4,8")
    if not values or any(v <= 0 for v in values):
        raise LcprofError(f"{what} must be positive integers, got {text!r}")
    return sorted(set(values))


def parse_float_list(text, what: str, lo: float = 0.0, hi: float = 1.0) -> list[float]:
    """``0.8,0.9`` -> [0.8, 0.9]; each in (lo, hi]."""
    values = _number_list(text, what, float, (int, float), "numbers such as 0.9 or 0.8,0.9")
    for v in values:
        if not lo < v <= hi:
            raise LcprofError(f"{what} must be in ({lo:g}, {hi:g}], got {v:g}")
    return sorted(set(values))


def parse_dtype_list(text, allowed, what: str = "KV dtype") -> list[str]:
    """``bf16,fp8`` -> ['bf16', 'fp8'] (canonical names, order kept, unique)."""
    parts = text if isinstance(text, (list, tuple)) else str(text).split(",")
    out: list[str] = []
    for p in parts:
        d = dtype_name(str(p).strip(), allowed=allowed)
        if d not in out:
            out.append(d)
    if not out:
        raise LcprofError(f"no {what} given; accepted: {', '.join(allowed)}")
    return out


def parse_memory_bytes(text, what: str = "byte count") -> int | None:
    """Bytes as an engine logs them: ``20.43GiB`` (rounded to whole bytes), ``512MiB``, ``8e9``; None stays None."""
    if text is None:
        return None
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        body, scale = split_unit(text, BYTE_UNITS)
        try:
            value = float(body) * scale
        except ValueError:
            raise LcprofError(f"malformed {what} {text!r}; use e.g. 20.43GiB, 512MiB or 21936000000") from None
    if not value > 0 or value != value or value == float("inf"):
        raise LcprofError(f"{what} must be a positive number of bytes, got {text!r}")
    return int(round(value))
