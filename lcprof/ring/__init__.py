"""Ring attention: striped/contiguous partitions, block attention, merging,
a single-process simulation and a real ``torch.distributed`` ring.

Where the ring lives: its formulas (pair counts, load imbalance, per-step time model) in
:mod:`lcprof.cost.ring`; the analytic ``lcprof ring`` report in :mod:`lcprof.ring.analysis`
(neither imports torch); the torch side here (partition, block, merge, composed, simulated) and
the real ``torch.distributed`` ring in :mod:`lcprof.ring.distributed`; the CUDA extension's
Python side in :mod:`lcprof.kernels`, its sources under ``kernels/``. Submodules load on first use: importing this package imports no torch.
"""

import importlib

#: Public name -> the submodule that defines it. Loaded on first use, so that importing
#: ``lcprof.ring.analysis`` (the analytic ``lcprof ring`` report) never imports torch.
_LAZY = {
    "IMPLS": "block", "block_attention": "block", "block_attention_torch": "block", "kernel_status": "block",
    "resolve_impl": "block", "merge_attention": "merge", "merge_many": "merge", "LAYOUTS": "partition",
    "contiguous_partition": "partition", "contiguous_unpartition": "partition", "partition": "partition",
    "positions": "partition", "striped_partition": "partition", "striped_unpartition": "partition",
    "unpartition": "partition", "RingSimStats": "simulated", "ring_attention_simulated": "simulated",
}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f"lcprof.ring.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lcprof.ring' has no attribute {name!r}")


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
