"""Merge partial attention results computed over disjoint key sets.

If (out_a, lse_a) is softmax attention over keys A and (out_b, lse_b) over
keys B (A and B disjoint), attention over A u B is::

    lse = log(exp(lse_a) + exp(lse_b))                       # logaddexp
    out = out_a * exp(lse_a - lse) + out_b * exp(lse_b - lse)
        = out_a * sigmoid(lse_a - lse_b) + out_b * sigmoid(lse_b - lse_a)   # as computed

Shapes: out (batch, n_q, heads, head_dim), lse (batch, heads, n_q).
An empty side (lse = -inf) contributes nothing, whatever its ``out`` holds;
when both sides are empty the result is out = 0, lse = -inf (never NaN).
Arithmetic is in float32 (float64 if either input is float64); the merged
``out`` and ``lse`` are returned in that accumulation dtype, so a running
merge keeps full precision until the caller casts at the end.
"""

from __future__ import annotations

import torch


def _acc_dtype(*tensors: torch.Tensor) -> torch.dtype:
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def merge_attention(
    out_a: torch.Tensor, lse_a: torch.Tensor, out_b: torch.Tensor, lse_b: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge two partial (out, lse) pairs; see module docstring. Returns (out, lse)."""
    if out_a.shape != out_b.shape or lse_a.shape != lse_b.shape:
        raise ValueError(
            f"cannot merge out {tuple(out_a.shape)} / {tuple(out_b.shape)} with lse "
            f"{tuple(lse_a.shape)} / {tuple(lse_b.shape)}"
        )
    acc = _acc_dtype(out_a, lse_a, out_b, lse_b)
    la, lb = lse_a.to(acc), lse_b.to(acc)  # (b, h, n_q)
    lse = torch.logaddexp(la, lb)  # -inf only when both are -inf
    # exp(lse_a - lse) == sigmoid(lse_a - lse_b): the same weight, computed from the
    # difference so it does not inherit the rounding of a large |lse| (fp32 ulp at 1e4 is 1e-3)
    both_empty = torch.isneginf(la) & torch.isneginf(lb)
    diff = torch.where(both_empty, torch.zeros_like(la), la - lb)  # +-inf when one side is empty
    wa = torch.where(both_empty, torch.zeros_like(la), torch.sigmoid(diff))  # 0 where lse_a = -inf
    wb = torch.where(both_empty, torch.zeros_like(lb), torch.sigmoid(-diff))
    # (b, h, n_q) -> (b, n_q, h, 1) to broadcast over head_dim
    wa = wa.transpose(1, 2).unsqueeze(-1)
    wb = wb.transpose(1, 2).unsqueeze(-1)
    zero = torch.zeros((), dtype=acc, device=out_a.device)
    # where() rather than a plain product so an empty side with a non-finite out stays harmless
    part_a = torch.where(wa > 0, out_a.to(acc) * wa, zero)
    part_b = torch.where(wb > 0, out_b.to(acc) * wb, zero)
    return part_a + part_b, lse


def merge_many(parts: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge a list of (out, lse) pairs left to right."""
    if not parts:
        raise ValueError("merge_many needs at least one (out, lse) pair")
    out, lse = parts[0]
    acc = _acc_dtype(out, lse)
    out, lse = out.to(acc), lse.to(acc)
    for o, l in parts[1:]:
        out, lse = merge_attention(out, lse, o, l)
    return out, lse
