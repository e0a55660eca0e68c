"""Capacity planning: what one long request displaces (KV memory and prefill compute), concurrency,
TTFT/TPOT, quotas for long requests, as a serving engine (vLLM, SGLang) would account for memory,
and a vectorized what-if grid. No torch.

``plan(...)`` returns a ``CapacityPlan`` (flat ``record`` with unit-suffixed keys, the engine's
startup log, tables); ``plan_deployment(Deployment, Workload)`` is the same on the frozen inputs;
``capacity_grid(...)`` a DataFrame with one row per scenario; ``write_report(...)`` Markdown + PNGs.
"""

from lcprof.plan.capacity import (SECTIONS, CapacityPlan, capacity_stage, compute_stage, mix_stage, plan,
                                  plan_deployment, plans, plans_table, recommendation_stage)
from lcprof.plan.compute import (Rates, chunked_prefill_s, comm_s, decode_parts, decode_step_s, last_chunk_s,
                                 prefill_parts, prefill_s, deployment_rates)
from lcprof.plan.engines import ENGINES, EngineLimits, EngineSettings, resolve_limits
from lcprof.plan.grid import capacity_grid, grid_arrays, grid_frame
from lcprof.plan.inputs import parse_mix, parse_seconds
from lcprof.plan.kvformat import KVFormat, kv_format
from lcprof.plan.memory import KVGroupKind, KVLayout, MemoryStage, kv_group_kinds, kv_layout, memory_stage
from lcprof.plan.parallel import Parallel, check_parallel, parallel_problem
from lcprof.plan.scenario import Deployment, Precision, Workload, build_deployment, build_workload

__all__ = [
    "ENGINES", "SECTIONS", "CapacityPlan", "Deployment", "EngineLimits", "EngineSettings", "KVFormat", "KVGroupKind",
    "KVLayout", "MemoryStage", "Parallel", "Precision", "Rates", "Workload", "build_deployment", "build_workload",
    "capacity_grid", "capacity_stage", "check_parallel", "chunked_prefill_s", "comm_s", "compute_stage",
    "decode_parts", "decode_step_s", "deployment_rates", "grid_arrays", "grid_frame", "kv_format", "kv_group_kinds", "kv_layout",
    "last_chunk_s", "memory_stage", "mix_stage", "parallel_problem", "parse_mix", "parse_seconds", "plan",
    "plan_deployment", "plans", "plans_table", "prefill_parts", "prefill_s", "recommendation_stage",
    "resolve_limits", "write_report",
]


def write_report(*args, **kwargs):
    """Markdown + PNG plots for one or more plans (imports matplotlib lazily)."""
    from lcprof.plan.report import write_report as _write

    return _write(*args, **kwargs)
