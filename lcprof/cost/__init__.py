"""Analytic cost: exact mask counts, FLOPs, bytes, memory, roofline, RoPE. Pure numpy, no torch."""

from lcprof.cost.masks import attended_pairs, executed_pairs_eager, executed_pairs_tiled
from lcprof.cost.model import (Cost, activation_bytes, attention_crossover_n, cost, kv_bytes,
                               kv_bytes_per_token, kv_heads_per_gpu, roofline, weight_bytes)
from lcprof.cost.ops import BACKEND_FAMILY, backend_family

__all__ = [
    "BACKEND_FAMILY", "Cost", "activation_bytes", "attended_pairs", "attention_crossover_n",
    "backend_family", "cost", "executed_pairs_eager", "executed_pairs_tiled", "kv_bytes",
    "kv_bytes_per_token", "kv_heads_per_gpu", "roofline", "weight_bytes",
]
