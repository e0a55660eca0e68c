"""Token counts, dtypes and byte/rate formatting.

Conventions (shared/DESIGN.md):
  * token counts: ``131072``, ``128k`` (= 131072, binary k), ``1M`` (= 1048576), lists ``4k,8k,32k``
    and doubling ranges ``128..131072`` (both ends included, powers-of-two steps from the start);
  * capacities are displayed in GiB (2**30) and rates with decimal prefixes (TFLOP/s = 1e12);
  * bytes are integers internally.
"""

from __future__ import annotations

import re

from lcprof.errors import LcprofError

# Bytes per element of each dtype name lcprof accepts.
DTYPE_BYTES: dict[str, float] = {
    "fp64": 8,
    "fp32": 4,
    "tf32": 4,  # stored as fp32; only the matmul rate differs
    "bf16": 2,
    "fp16": 2,
    "fp8": 1,
    "int8": 1,
    "int4": 0.5,
}

_DTYPE_ALIASES = {
    "float64": "fp64", "double": "fp64",
    "float32": "fp32", "float": "fp32",
    "bfloat16": "bf16",
    "float16": "fp16", "half": "fp16",
    "float8": "fp8", "fp8_e4m3": "fp8", "fp8_e5m2": "fp8", "e4m3": "fp8", "e5m2": "fp8",
}

_SUFFIX = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
_TOKEN_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([kKmMgG]?)\s*$")

#: Largest token count lcprof accepts (2**34 tokens); anything larger is a typo.
MAX_TOKENS = 1 << 34
#: Largest ring lcprof models: the ring model keeps (steps x ranks) int64 tables of G^2 entries
#: (G = 2048: 32 MiB each). Here, not in cost/ring.py, so the CLI's option can name it without numpy.
MAX_RING_GPUS = 2048


def dtype_name(name: str, *, allowed: tuple[str, ...] | None = None) -> str:
    """Canonical dtype name (``fp32``, ``bf16``, ...); raises LcprofError on anything else."""
    key = str(name).strip().lower()
    key = _DTYPE_ALIASES.get(key, key)
    choices = allowed or tuple(DTYPE_BYTES)
    if key not in choices:
        raise LcprofError(f"unknown dtype {name!r}; accepted: {', '.join(choices)}")
    return key


def dtype_bytes(name: str) -> float:
    """Bytes per element of a dtype name."""
    return DTYPE_BYTES[dtype_name(name)]


def parse_tokens(text: str | int) -> int:
    """One token count: ``131072``, ``128k`` (131072), ``1M`` (1048576), ``1.5k`` (1536)."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        m = _TOKEN_RE.match(str(text))
        if not m:
            raise LcprofError(
                f"malformed token count {text!r}; use e.g. 4096, 128k (=131072), 1M (=1048576)"
            )
        number, suffix = m.groups()
        if len(number) > 40:  # far beyond MAX_TOKENS whatever its value; keep the message short
            raise LcprofError(f"token count {text[:24]!r}... is larger than lcprof accepts ({MAX_TOKENS})")
        whole, _, frac = number.partition(".")
        # exact integer arithmetic: no float rounding, no overflow
        scaled = (int(whole) * 10 ** len(frac) + int(frac or 0)) * _SUFFIX[suffix.lower()]
        value, rest = divmod(scaled, 10 ** len(frac))
        if rest:
            raise LcprofError(f"token count {text!r} is not a whole number of tokens")
    if value <= 0:
        raise LcprofError(f"token count must be positive, got {text!r}")
    if value > MAX_TOKENS:
        raise LcprofError(f"token count {text!r} is larger than lcprof accepts ({MAX_TOKENS})")
    return value


def parse_token_list(text: str | int | list) -> list[int]:
    """Token counts: ``4k,8k,32k``, a doubling range ``128..131072``, or a mix ``1k,4k..16k``.

    A range ``a..b`` yields a, 2a, 4a, ... up to b, and b itself when b is not a power-of-two
    multiple of a. Returns sorted unique counts.
    """
    if isinstance(text, int) and not isinstance(text, bool):
        return [parse_tokens(text)]
    if isinstance(text, (list, tuple)):
        out: list[int] = []
        for item in text:
            out.extend(parse_token_list(item))
        return sorted(set(out))
    parts = [p for p in str(text).split(",")]
    if not parts or any(not p.strip() for p in parts):
        raise LcprofError(f"malformed token list {text!r}; use e.g. 4k,8k,32k or 128..131072")
    values: set[int] = set()
    for part in parts:
        if ".." in part:
            lo_text, _, hi_text = part.partition("..")
            lo, hi = parse_tokens(lo_text), parse_tokens(hi_text)
            if hi < lo:
                raise LcprofError(f"range {part.strip()!r} runs backwards; write low..high")
            v = lo
            while v <= hi:
                values.add(v)
                v *= 2
            values.add(hi)
        else:
            values.add(parse_tokens(part))
    return sorted(values)


#: Binary byte suffixes accepted by :func:`parse_bytes` (case-insensitive).
BYTE_UNITS = (("tib", 1 << 40), ("gib", 1 << 30), ("mib", 1 << 20), ("kib", 1 << 10))


def split_unit(text, units) -> tuple[str, float]:
    """``'8GiB'`` with ``units`` ((suffix, scale), ...) -> (``'8'``, 2**30): the first suffix the text
    ends with (case-insensitive; list longer suffixes first), or (text, 1.0) when none does."""
    t = str(text).strip()
    low = t.lower()
    for unit, scale in units:
        if low.endswith(unit):
            return t[: -len(unit)].strip(), float(scale)
    return t, 1.0


def parse_bytes(text) -> int | None:
    """A byte count: ``8000000000``, ``8e9``, or with a binary suffix ``8GiB`` / ``512MiB``; None stays None."""
    if text is None:
        return None
    body, scale = split_unit(text, BYTE_UNITS)
    try:
        value = float(body) * scale
    except ValueError:
        raise LcprofError(f"malformed byte count {text!r}; use e.g. 8000000000, 8e9, 8GiB or 512MiB") from None
    if value <= 0 or value != int(value):
        raise LcprofError(f"byte count must be a positive whole number, got {text!r}")
    return int(value)


def gib(nbytes: float) -> float:
    """Bytes to GiB (2**30)."""
    return nbytes / float(1 << 30)


def fmt_bytes(nbytes: float) -> str:
    """Human text for a byte count, binary units, saying which (``1.50 GiB``)."""
    n = float(nbytes)
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{int(n)} B"


def fmt_flops(flops: float) -> str:
    """Human text for a FLOP count with decimal prefixes (``1.23 TFLOP``)."""
    f = float(flops)
    for unit, scale in (("PFLOP", 1e15), ("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6)):
        if abs(f) >= scale:
            return f"{f / scale:.3g} {unit}"
    return f"{f:.0f} FLOP"


def fmt_seconds(t: float) -> str:
    """Human text for a duration."""
    t = float(t)
    if t >= 1:
        return f"{t:.3g} s"
    if t >= 1e-3:
        return f"{t * 1e3:.3g} ms"
    return f"{t * 1e6:.3g} us"


def fmt_tokens(n: int) -> str:
    """``131072`` -> ``128k``; keeps exact values (``1000`` stays ``1000``)."""
    n = int(n)
    if n >= (1 << 20) and n % (1 << 20) == 0:
        return f"{n >> 20}M"
    if n >= (1 << 10) and n % (1 << 10) == 0:
        return f"{n >> 10}k"
    return str(n)
