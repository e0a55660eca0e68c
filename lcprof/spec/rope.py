"""Rotary position embedding and its long-context scaling, as the config states it. No torch."""

from __future__ import annotations

import math
from dataclasses import dataclass

from lcprof.errors import LcprofError

ROPE_TYPES = ("default", "linear", "dynamic", "yarn", "longrope", "llama3")


@dataclass(frozen=True)
class RopeSpec:
    """RoPE: base ``theta``, ``rotary_dim`` dims rotated per head (pairs = rotary_dim // 2), scaling."""

    theta: float
    rotary_dim: int
    type: str = "default"
    factor: float = 1.0
    original_max_position: int | None = None
    # YaRN
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    mscale: float | None = None
    mscale_all_dim: float | None = None
    attention_factor: float | None = None
    truncate: bool = True  # False (gpt-oss): the correction range's bounds are not rounded
    # LongRoPE
    short_factor: tuple[float, ...] = ()
    long_factor: tuple[float, ...] = ()
    # llama3
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0

    def __post_init__(self) -> None:
        if self.type not in ROPE_TYPES:
            raise LcprofError(f"unknown rope scaling type {self.type!r}; known: {', '.join(ROPE_TYPES)}")
        for nm in ("theta", "factor", "beta_fast", "beta_slow", "low_freq_factor", "high_freq_factor"):
            v = getattr(self, nm)
            if not math.isfinite(v):
                raise LcprofError(f"rope {nm} must be finite, got {v}")
        if self.theta <= 1:
            raise LcprofError(f"rope_theta must be > 1, got {self.theta}")
        if self.rotary_dim <= 0 or self.rotary_dim % 2:
            raise LcprofError(f"rotary dimension must be a positive even number, got {self.rotary_dim}")
        if self.factor <= 0:
            raise LcprofError(f"rope scaling factor must be positive, got {self.factor}")
        for nm in ("mscale", "mscale_all_dim", "attention_factor"):
            v = getattr(self, nm)
            if v is not None and not (math.isfinite(v) and v >= 0):
                raise LcprofError(f"rope {nm} must be a finite number >= 0, got {v}")
        if self.original_max_position is not None and self.original_max_position <= 0:
            raise LcprofError(f"rope original_max_position_embeddings must be positive, got {self.original_max_position}")
        if self.type == "longrope":
            half = self.rotary_dim // 2
            for nm, f in (("short_factor", self.short_factor), ("long_factor", self.long_factor)):
                if len(f) != half:
                    raise LcprofError(f"longrope {nm} has {len(f)} entries; it needs rotary_dim/2 = {half}")
                if not all(math.isfinite(x) and x > 0 for x in f):
                    raise LcprofError(f"longrope {nm} entries must be finite and positive")
        if self.type == "llama3":
            # transformers accepts high == low (Llama-4-Scout-Instruct: both 1.0): no smooth band,
            # every pair with wavelength beyond original / low is divided by the factor.
            if not (self.low_freq_factor > 0 and self.high_freq_factor > 0):
                raise LcprofError("llama3 rope scaling needs positive low_freq_factor and high_freq_factor")
            if self.high_freq_factor < self.low_freq_factor:
                raise LcprofError("llama3 rope scaling needs high_freq_factor >= low_freq_factor, got "
                                  f"{self.high_freq_factor} < {self.low_freq_factor}")
            if self.original_max_position is None:
                raise LcprofError("llama3 rope scaling needs original_max_position_embeddings")
