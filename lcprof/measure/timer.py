"""An honest timer: a measurement object, not a float.

``measure(fn, inputs, device=...)`` calls ``fn(inputs[i % len(inputs)])``:

1. **warm-up** until ``warmup_s`` has passed (at least ``min_warmup`` = 2 calls: the first call pays
   lazy initialization -- cuDNN plans, allocator growth -- so it never sizes the repetitions), timing
   the last warm-up call to estimate one call's time;
2. **repetitions**: ``budget_s / estimate`` calls, clamped to ``[min_reps, max_reps]``;
   * CUDA: one pair of CUDA events around every call, all recorded on the current stream, one
     synchronize at the end (no host sync between calls); with ``flush_l2`` a 256 MiB buffer is
     zeroed before each call, outside the events, so the L2 cache does not flatter;
   * CPU: ``time.perf_counter()`` around each call (torch CPU ops return when their work is done);
3. **inputs rotate** among the given input sets, so consecutive calls do not re-read the same
   activations from cache.

``cuda_graph=True`` (CUDA only): after the warm-up, each input set's call is captured once into a
CUDA graph (one memory pool shared by the graphs, warmed on a side stream first, as capture
requires) and the repetitions time ``graph.replay()`` -- the GPU's own time without Python and
dispatch overhead, which dominates small steps such as one decode token. The clock then reads
``cuda_graph``. If capture fails (an op that synchronizes, a host copy), the call is timed
without graphs and ``note`` says why.

The :class:`Measurement` keeps every raw sample, and reports median, p10, p90, mean, stdev and a
warning when (p90 - p10) / median exceeds ``SPREAD_WARNING`` (0.1). Rendering is elsewhere.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

SPREAD_WARNING = 0.1
L2_FLUSH_BYTES = 256 << 20


@dataclass(frozen=True)
class Measurement:
    """Raw samples (seconds) of one timed point, their statistics and labels."""

    samples_s: tuple[float, ...]
    clock: str  # "cuda_event", "cuda_graph" (events around graph replays) or "perf_counter"
    warmup_calls: int
    input_sets: int
    labels: dict = field(default_factory=dict)
    note: str = ""

    @property
    def repeats(self) -> int:
        return len(self.samples_s)

    @property
    def median_s(self) -> float:
        return float(np.median(self.samples_s))

    @property
    def p10_s(self) -> float:
        return float(np.percentile(self.samples_s, 10))

    @property
    def p90_s(self) -> float:
        return float(np.percentile(self.samples_s, 90))

    @property
    def mean_s(self) -> float:
        return float(statistics.fmean(self.samples_s))

    @property
    def stdev_s(self) -> float:
        return float(statistics.stdev(self.samples_s)) if len(self.samples_s) > 1 else 0.0

    @property
    def spread(self) -> float:
        """(p90 - p10) / median."""
        med = self.median_s
        return (self.p90_s - self.p10_s) / med if med > 0 else math.inf

    @property
    def warning(self) -> str | None:
        if self.spread > SPREAD_WARNING:
            return (f"noisy: (p90 - p10) / median = {self.spread:.2f} > {SPREAD_WARNING} "
                    f"over {self.repeats} repeats")
        return None

    def summary(self) -> dict:
        return {"time_s": self.median_s, "time_p10_s": self.p10_s, "time_p90_s": self.p90_s,
                "time_mean_s": self.mean_s, "time_stdev_s": self.stdev_s, "repeats": self.repeats,
                "clock": self.clock, "spread_warning": self.warning or "", **self.labels}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def capture_graphs(fn: Callable[[Any], Any], inputs: Sequence[Any], device: torch.device) -> list:
    """One CUDA graph per input set of ``fn(input)``, sharing one memory pool (replayed one at a time)."""
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for inp in inputs:  # capture needs the call warmed on a non-default stream
            fn(inp)
    torch.cuda.current_stream(device).wait_stream(side)
    torch.cuda.synchronize(device)
    pool = torch.cuda.graph_pool_handle()
    graphs = []
    for inp in inputs:
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g, pool=pool):
            fn(inp)
        graphs.append(g)
    torch.cuda.synchronize(device)
    return graphs


def measure(fn: Callable[[Any], Any], inputs: Sequence[Any], *, device: torch.device | str = "cpu",
            budget_s: float = 1.0, warmup_s: float | None = None, min_warmup: int = 2,
            min_reps: int = 3, max_reps: int = 100, flush_l2: bool = False,
            labels: dict | None = None, cuda_graph: bool = False) -> Measurement:
    """Time ``fn(input)`` with inputs rotated; see the module docstring."""
    device = torch.device(device)
    if not inputs:
        raise ValueError("measure() needs at least one input set")
    if min_reps < 1 or max_reps < min_reps:
        raise ValueError(f"need 1 <= min_reps <= max_reps, got {min_reps}, {max_reps}")
    if cuda_graph and device.type != "cuda":
        raise ValueError(f"CUDA graphs need a CUDA device, not {device}")
    n_sets = len(inputs)
    warmup_s = 0.1 * budget_s if warmup_s is None else warmup_s
    cuda = device.type == "cuda"
    flush_buf = torch.empty(L2_FLUSH_BYTES, dtype=torch.uint8, device=device) if (cuda and flush_l2) else None

    # 1. warm-up; the last call is timed (synchronized) to size the repetitions
    calls, est = 0, 0.0
    t_start = time.perf_counter()
    while True:
        synchronize(device)
        t0 = time.perf_counter()
        fn(inputs[calls % n_sets])
        synchronize(device)
        est = time.perf_counter() - t0
        calls += 1
        if calls >= min_warmup and time.perf_counter() - t_start >= warmup_s:
            break
    note = ""
    step = fn
    if cuda_graph:
        try:
            graphs = capture_graphs(fn, inputs, device)
        except Exception as exc:  # noqa: BLE001 - any capture failure: time without graphs
            note = f"CUDA graph capture failed, timed without graphs: {str(exc).strip().splitlines()[0][:200]}"
            cuda_graph = False
        else:
            by_input = {id(inp): g for inp, g in zip(inputs, graphs)}
            step = lambda inp: by_input[id(inp)].replay()  # noqa: E731
            synchronize(device)
            t0 = time.perf_counter()
            step(inputs[0])
            synchronize(device)
            est = time.perf_counter() - t0
    reps = int(min(max(min_reps, math.floor(budget_s / max(est, 1e-9))), max_reps))

    # 2. repetitions
    samples: list[float] = []
    if cuda:
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
        for i, (start, end) in enumerate(events):
            if flush_buf is not None:
                flush_buf.zero_()
            start.record()
            step(inputs[(calls + i) % n_sets])
            end.record()
        torch.cuda.synchronize(device)
        samples = [s.elapsed_time(e) / 1e3 for s, e in events]  # ms -> s
        clock = "cuda_graph" if cuda_graph else "cuda_event"
    else:
        perf = time.perf_counter
        for i in range(reps):
            inp = inputs[(calls + i) % n_sets]
            t0 = perf()
            fn(inp)
            t1 = perf()
            samples.append(t1 - t0)
        clock = "perf_counter"
    return Measurement(samples_s=tuple(samples), clock=clock, warmup_calls=calls, input_sets=n_sets,
                       labels=dict(labels or {}), note=note)


def timer_overhead(device: torch.device | str = "cpu", reps: int = 1000) -> Measurement:
    """The timer measuring an empty region: its own per-sample overhead."""
    return measure(lambda _: None, [None], device=device, budget_s=0.0, warmup_s=0.0, min_warmup=1,
                   min_reps=reps, max_reps=reps, labels={"what": "empty region"})
