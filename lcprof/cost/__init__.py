"""Analytic cost: exact mask counts (and the seed papers' what-if masks), FLOPs, bytes, memory,
mixer state, roofline, RoPE. Every layer kind answers for itself (attention in ``ops``, linear-time
mixers in ``kinds``). Pure numpy, no torch."""

from lcprof.cost.masks import Mask, attended_pairs, executed_pairs_eager, executed_pairs_tiled, parse_mask
from lcprof.cost.model import (Cost, activation_bytes, attention_crossover_n, cost, kv_bytes,
                               kv_bytes_per_token, kv_heads_per_gpu, roofline, state_bytes, weight_bytes)
from lcprof.cost.ops import BACKEND_FAMILY, backend_family

__all__ = [
    "BACKEND_FAMILY", "Cost", "Mask", "activation_bytes", "attended_pairs", "attention_crossover_n",
    "backend_family", "cost", "executed_pairs_eager", "executed_pairs_tiled", "kv_bytes",
    "kv_bytes_per_token", "kv_heads_per_gpu", "parse_mask", "roofline", "state_bytes", "weight_bytes",
]
