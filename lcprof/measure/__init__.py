"""Measurement: a real torch decoder layer, attention backends, an honest timer, sweeps that lose nothing.

This is one of the only packages that imports torch (shared/DESIGN.md, layer 4). Submodules:

  * :mod:`lcprof.measure.backends` -- attention backends (eager, sdpa*, flash-attn, striped-ring),
    a registry that fails loudly, and the mask convention;
  * :mod:`lcprof.measure.layer`    -- ``DecoderLayer``: one layer of a ModelSpec with seeded weights;
  * :mod:`lcprof.measure.timer`    -- ``measure()`` -> ``Measurement`` (CUDA events / perf_counter);
  * :mod:`lcprof.measure.check`    -- float64 references and the correctness gate before timing;
  * :mod:`lcprof.measure.env`      -- environment facts and peak memory;
  * :mod:`lcprof.measure.sweep`    -- ``run_sweep()``: pre-flight, OOM handling, fsynced CSV, resume;
  * :mod:`lcprof.measure.api`      -- ``measure_layer_vs_predicted()`` behind ``lcprof layer --measure``.

Import the submodules directly; this package's ``__init__`` imports nothing heavy.
"""
