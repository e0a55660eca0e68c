"""Brute-force softmax attention in float64, independent of lcprof.ring (the ring tests). Imports torch."""

import torch


def full_attention_reference(q, k, v, causal=True, softmax_scale=None):
    """Explicit float64 softmax attention, independent of lcprof.ring.

    q (batch, n, heads, d), k/v (batch, n_k, kv_heads, d); GQA by repeating K/V
    heads; causal aligns query i with key i (top-left, equal lengths).
    Returns float64 (batch, n, heads, d).
    """
    group = q.shape[2] // k.shape[2]
    qd = q.double().transpose(1, 2)  # (batch, heads, n, d)
    kd = k.double().repeat_interleave(group, dim=2).transpose(1, 2)  # (batch, heads, n_k, d)
    vd = v.double().repeat_interleave(group, dim=2).transpose(1, 2)
    scale = softmax_scale if softmax_scale is not None else q.shape[-1] ** -0.5
    scores = qd @ kd.transpose(-1, -2) * scale  # (batch, heads, n, n_k)
    if causal:
        n, n_k = scores.shape[-2:]
        mask = torch.ones(n, n_k, dtype=torch.bool).tril()
        scores = scores.masked_fill(~mask, float("-inf"))
    return (torch.softmax(scores, dim=-1) @ vd).transpose(1, 2)  # (batch, n, heads, d)
