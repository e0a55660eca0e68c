"""Capacity planning: what one long request displaces (KV memory and prefill compute), concurrency,
TTFT/TPOT, quotas for long requests, and a vectorized what-if grid. No torch.

``plan(...)`` returns a ``CapacityPlan`` (flat ``record`` with unit-suffixed keys plus tables);
``capacity_grid(...)`` a DataFrame with one row per scenario; ``write_report(...)`` Markdown + PNGs.
"""

from lcprof.plan.capacity import SECTIONS, CapacityPlan, plan, plans, plans_table
from lcprof.plan.compute import (Rates, allreduce_s, chunked_prefill_s, decode_parts, decode_step_s,
                                 last_chunk_s, prefill_1gpu_s, prefill_s, resolve_rates)
from lcprof.plan.grid import capacity_grid, grid_arrays, grid_frame
from lcprof.plan.inputs import parse_mix, parse_seconds, tp_problem
from lcprof.plan.memory import (KVGroupKind, MemoryBudget, activation_reserve_bytes_per_gpu, blocks_held_by_kind,
                                blocks_per_request, kv_block_bytes_per_gpu, kv_group_kinds, memory_budget,
                                shared_prefix_blocks)

__all__ = [
    "SECTIONS", "CapacityPlan", "KVGroupKind", "MemoryBudget", "Rates", "activation_reserve_bytes_per_gpu",
    "allreduce_s", "blocks_held_by_kind", "blocks_per_request", "capacity_grid", "chunked_prefill_s",
    "decode_parts", "decode_step_s", "grid_arrays", "grid_frame", "kv_block_bytes_per_gpu", "kv_group_kinds",
    "last_chunk_s", "memory_budget", "parse_mix", "parse_seconds", "plan", "plans", "plans_table",
    "prefill_1gpu_s", "prefill_s", "resolve_rates", "shared_prefix_blocks", "tp_problem", "write_report",
]


def write_report(*args, **kwargs):
    """Markdown + PNG plots for one or more plans (imports matplotlib lazily)."""
    from lcprof.plan.report import write_report as _write

    return _write(*args, **kwargs)
