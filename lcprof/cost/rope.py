"""RoPE analysis: per dimension pair, the rotation frequency and wavelength under each scaling.

Pair k of a rotary dimension d rotates by angle position * inv_freq[k], with
inv_freq[k] = theta ** (-2k / d) before scaling; its wavelength is 2*pi / inv_freq[k] tokens.
A pair "completes a full turn" inside a context of L tokens iff its wavelength <= L. Pairs whose
wavelength exceeds the training context never saw a full turn in training; scaling methods differ
in how they stretch exactly those pairs. These formulas are the ones transformers implements
(``modeling_rope_utils``); the measurement layer takes its frequencies from here (one source).
No torch.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from lcprof.errors import LcprofError
from lcprof.spec import ModelSpec, RopeSpec


def base_inv_freq(theta: float, dim: int) -> np.ndarray:
    """theta ** (-2k/d) for k = 0 .. d/2 - 1."""
    return 1.0 / (theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim))


def _yarn_mscale(scale: float, mscale: float = 1.0) -> float:
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def _yarn_correction_dim(n_rot: float, dim: int, theta: float, max_pos: int) -> float:
    """Dimension index whose wavelength is max_pos / n_rot rotations."""
    return (dim * math.log(max_pos / (n_rot * 2 * math.pi))) / (2 * math.log(theta))


def inv_freq(rope: RopeSpec, n: int | None = None) -> tuple[np.ndarray, float]:
    """(scaled inverse frequencies, attention factor) at sequence length n.

    The attention factor multiplies cos/sin (transformers' convention), so it scales attention
    logits by its square: YaRN's temperature and LongRoPE's sqrt(1 + ln s / ln L0).
    ``n`` matters for dynamic NTK and for LongRoPE (short factors up to the original length).
    """
    d = rope.rotary_dim
    base = base_inv_freq(rope.theta, d)
    t = rope.type
    if t == "default":
        return base, 1.0
    if t == "linear":
        return base / rope.factor, 1.0
    orig = rope.original_max_position
    if t == "dynamic":
        seq = max(int(n or orig), orig)
        new_theta = rope.theta * ((rope.factor * seq / orig) - (rope.factor - 1)) ** (d / (d - 2))
        return base_inv_freq(new_theta, d), 1.0
    if t == "yarn":
        low = _yarn_correction_dim(rope.beta_fast, d, rope.theta, orig)
        high = _yarn_correction_dim(rope.beta_slow, d, rope.theta, orig)
        if rope.truncate:  # transformers rounds the range outward unless the config says truncate: false
            low, high = math.floor(low), math.ceil(high)
        low, high = max(low, 0), min(high, d - 1)
        if low == high:
            high += 0.001
        ramp = np.clip((np.arange(d // 2, dtype=np.float64) - low) / (high - low), 0.0, 1.0)
        extrapolation = 1.0 - ramp  # 1: keep original frequency (high-frequency pairs)
        scaled = base * extrapolation + (base / rope.factor) * (1.0 - extrapolation)
        if rope.attention_factor is not None:
            att = rope.attention_factor
        elif rope.mscale is not None and rope.mscale_all_dim is not None:
            att = _yarn_mscale(rope.factor, rope.mscale) / _yarn_mscale(rope.factor, rope.mscale_all_dim)
        else:
            att = _yarn_mscale(rope.factor)
        return scaled, float(att)
    if t == "longrope":
        long_ctx = n is not None and orig is not None and n > orig
        ext = np.asarray(rope.long_factor if long_ctx else rope.short_factor, dtype=np.float64)
        scale = rope.factor
        if rope.attention_factor is not None:
            att = rope.attention_factor
        elif scale <= 1.0:
            att = 1.0
        else:
            att = math.sqrt(1 + math.log(scale) / math.log(orig))
        return base / ext, float(att)
    if t == "llama3":
        low_wl = orig / rope.low_freq_factor
        high_wl = orig / rope.high_freq_factor
        wl = 2 * math.pi / base
        band = rope.high_freq_factor - rope.low_freq_factor  # 0 (Llama-4-Scout-Instruct): no smooth band
        smooth = (orig / wl - rope.low_freq_factor) / band if band > 0 else np.zeros_like(wl)
        blended = (1 - smooth) * base / rope.factor + smooth * base
        out = np.where(wl < high_wl, base, np.where(wl > low_wl, base / rope.factor, blended))
        return out, 1.0
    raise LcprofError(f"unknown rope type {t!r}")


def rope_table(spec: ModelSpec, n: int | None = None) -> pd.DataFrame:
    """One row per dimension pair: base and scaled frequency/wavelength and whether each pair
    completes a full turn inside the original context and inside the target context n."""
    if spec.rope is None:
        raise LcprofError(f"model {spec.name!r} has no rotary embedding")
    r = spec.rope
    target = int(n or spec.max_position_embeddings)
    orig = spec.original_max_position_embeddings or r.original_max_position or spec.max_position_embeddings
    base = base_inv_freq(r.theta, r.rotary_dim)
    scaled, att = inv_freq(r, target)
    wl_base = 2 * np.pi / base
    wl = 2 * np.pi / scaled
    return pd.DataFrame({
        "model": spec.name,
        "n": target,
        "pair": np.arange(len(base)),
        "inv_freq_base": base,
        "inv_freq_scaled": scaled,
        "stretch": base / scaled,
        "wavelength_base_tokens": wl_base,
        "wavelength_scaled_tokens": wl,
        "full_turn_in_original": wl_base <= orig,
        "full_turn_in_target": wl <= target,
        "attention_factor": att,
    })


def rope_summary(spec: ModelSpec, n: int | None = None) -> dict:
    """Headline facts: how many pairs complete a turn in the original vs target context."""
    tab = rope_table(spec, n)
    r = spec.rope
    orig = spec.original_max_position_embeddings or r.original_max_position or spec.max_position_embeddings
    target = int(tab["n"].iloc[0])
    return {
        "model": spec.name,
        "n": target,
        "rope_type": r.type,
        "rope_theta": r.theta,
        "rope_factor": r.factor,
        "rotary_dim": r.rotary_dim,
        "pairs": len(tab),
        "original_context_tokens": orig,
        "pairs_full_turn_in_original": int(tab["full_turn_in_original"].sum()),
        "pairs_full_turn_in_target_base": int((tab["wavelength_base_tokens"] <= target).sum()),
        "pairs_full_turn_in_target_scaled": int(tab["full_turn_in_target"].sum()),
        "pairs_stretched": int((tab["stretch"] > 1 + 1e-9).sum()),
        "max_stretch": float(tab["stretch"].max()),
        "longest_wavelength_scaled_tokens": float(tab["wavelength_scaled_tokens"].max()),
        "attention_factor": float(tab["attention_factor"].iloc[0]),
        "logit_scale": float(tab["attention_factor"].iloc[0]) ** 2,
    }
