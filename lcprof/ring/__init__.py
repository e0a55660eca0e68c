"""Ring attention: striped/contiguous partitions, block attention, merging,
a single-process simulation and a real ``torch.distributed`` ring.

The analytic side (pair counts, load imbalance, per-step time model) lives in
:mod:`lcprof.cost.ring` and imports no torch. This package imports torch; the
distributed ring lives in :mod:`lcprof.ring.distributed` (imported on demand).
"""

from lcprof.ring.block import IMPLS, block_attention, block_attention_torch, kernel_status, resolve_impl
from lcprof.ring.merge import merge_attention, merge_many
from lcprof.ring.partition import (
    LAYOUTS,
    contiguous_partition,
    contiguous_unpartition,
    partition,
    positions,
    striped_partition,
    striped_unpartition,
    unpartition,
)
from lcprof.ring.simulated import RingSimStats, ring_attention_simulated

__all__ = [
    "IMPLS",
    "LAYOUTS",
    "RingSimStats",
    "block_attention",
    "block_attention_torch",
    "contiguous_partition",
    "contiguous_unpartition",
    "kernel_status",
    "merge_attention",
    "merge_many",
    "partition",
    "positions",
    "resolve_impl",
    "ring_attention_simulated",
    "striped_partition",
    "striped_unpartition",
    "unpartition",
]
