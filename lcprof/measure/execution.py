"""What a sweep measures and how it measures it, as two frozen values instead of long keyword lists.

* :class:`Execution` -- how every point is timed: the time budget per point, repetitions, the seed of
  weights, inputs and timing order, the memory cap of the pre-flight check, the correctness check
  before timing, CUDA-graph replay, L2 flushing, and how often a suspect point may be timed. One
  discipline for the layer sweep (:func:`lcprof.measure.sweep.run_sweep`) and the whole-model sweep
  (:func:`lcprof.measure.model_sweep.run_model_sweep`); validated when it is made.
* :class:`SweepWorkload` -- the points of a layer sweep: the model, lengths, backends, dtypes,
  phase, batch, layer, simulated ring ranks, MLA form and MoE timing.
* :class:`ModelWorkload` -- the points of a whole-model sweep: the model, lengths, phases, the
  implementation (lcprof or transformers), its backends, dtypes, what is timed (the model or one
  layer), batch, MoE timing, weight initialisation and whether a model too large is scaled.

Both workloads keep their inputs as given (a model name or spec, "128..2048" or a list): the sweep
resolves and checks them against the device, as before. No torch here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from lcprof.errors import LcprofError


@dataclass(frozen=True)
class Execution:
    """How each point is measured (see the module docstring)."""

    budget_s: float = 1.0
    min_reps: int = 3
    max_reps: int = 100
    seed: int = 0
    mem_cap_bytes: int | None = None
    check: bool = True
    cuda_graph: bool = False
    flush_l2: bool = False
    max_attempts: int = 3

    def __post_init__(self) -> None:
        try:
            budget = float(self.budget_s)
        except (TypeError, ValueError):
            raise LcprofError(f"budget must be a number of seconds, got {self.budget_s!r}") from None
        if not (math.isfinite(budget) and budget >= 0):
            raise LcprofError(f"budget must be a finite number of seconds >= 0, got {self.budget_s}")
        if int(self.min_reps) < 1:
            raise LcprofError(f"min reps must be >= 1, got {self.min_reps}")
        if int(self.max_reps) < int(self.min_reps):
            raise LcprofError(f"max reps ({self.max_reps}) must be >= min reps ({self.min_reps})")
        if int(self.max_attempts) < 1:
            raise LcprofError(f"max attempts must be >= 1, got {self.max_attempts}")
        if self.mem_cap_bytes is not None and int(self.mem_cap_bytes) <= 0:
            raise LcprofError(f"memory cap must be a positive number of bytes, got {self.mem_cap_bytes}")


@dataclass(frozen=True)
class SweepWorkload:
    """The (dtype, backend, n) points of one layer's sweep (see the module docstring)."""

    model: Any
    ns: Any
    backends: Any = None
    dtypes: Any = "fp32"
    phase: str = "prefill"
    batch: int = 1
    layer: int = 0
    ranks: int = 1
    mla_form: str | None = None
    moe_timing: str = "dense-equivalent"


@dataclass(frozen=True)
class ModelWorkload:
    """The (dtype, phase, backend, n) points of a whole-model sweep (see the module docstring)."""

    model: Any
    ns: Any
    phases: Any = "prefill"
    impl: str = "lcprof"
    backends: Any = "sdpa"
    dtypes: Any = "fp32"
    target: str = "model"
    batch: int = 1
    moe_timing: str | None = None
    init: str | None = None
    allow_scaled: bool = True
