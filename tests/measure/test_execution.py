"""Execution (how a sweep measures) is validated when it is made; the sweeps take their workload and
execution as values and refuse anything else in one line."""

import dataclasses

import pytest

from lcprof.errors import LcprofError
from lcprof.measure.execution import Execution, ModelWorkload, SweepWorkload


@pytest.mark.parametrize("kw, msg", [
    (dict(budget_s=float("nan")), "finite number of seconds"),
    (dict(budget_s=float("inf")), "finite number of seconds"),
    (dict(budget_s=-1), "finite number of seconds"),
    (dict(budget_s="soon"), "number of seconds"),
    (dict(min_reps=0), "min reps must be >= 1"),
    (dict(min_reps=5, max_reps=4), r"max reps \(4\) must be >= min reps \(5\)"),
    (dict(max_attempts=0), "max attempts must be >= 1"),
    (dict(mem_cap_bytes=0), "memory cap must be a positive number of bytes"),
])
def test_bad_execution_is_refused_when_made(kw, msg):
    with pytest.raises(LcprofError, match=msg):
        Execution(**kw)


def test_execution_defaults_and_frozen():
    x = Execution()
    assert (x.budget_s, x.min_reps, x.max_reps, x.seed, x.mem_cap_bytes, x.check, x.cuda_graph, x.flush_l2,
            x.max_attempts) == (1.0, 3, 100, 0, None, True, False, False, 3)
    assert Execution(budget_s=0).budget_s == 0  # a zero budget: the minimum repetitions only
    with pytest.raises(dataclasses.FrozenInstanceError):
        x.budget_s = 2.0
    w = SweepWorkload("llama3-8b", "128..1024")
    assert (w.backends, w.dtypes, w.phase, w.batch, w.layer, w.ranks, w.mla_form, w.moe_timing) == (
        None, "fp32", "prefill", 1, 0, 1, None, "dense-equivalent")
    m = ModelWorkload("llama3-8b", "4k")
    assert (m.phases, m.impl, m.backends, m.target, m.allow_scaled) == ("prefill", "lcprof", "sdpa", "model", True)


def test_sweeps_take_values_not_keyword_lists(tmp_path):
    from lcprof.measure.model_sweep import run_model_sweep
    from lcprof.measure.sweep import run_sweep

    with pytest.raises(LcprofError, match="run_sweep needs a SweepWorkload, got str"):
        run_sweep("llama3-8b")
    with pytest.raises(LcprofError, match="run_sweep needs an Execution, got dict"):
        run_sweep(SweepWorkload("llama3-8b", "128"), {"budget_s": 1})
    with pytest.raises(LcprofError, match="run_model_sweep needs a ModelWorkload, got SweepWorkload"):
        run_model_sweep(SweepWorkload("llama3-8b", "128"))
    with pytest.raises(LcprofError, match="no L2 flushing and no re-measuring"):
        run_model_sweep(ModelWorkload("llama3-8b", "128"), Execution(flush_l2=True))
    assert not list(tmp_path.iterdir())
