"""Property tests (hypothesis) for the planner's block, capacity and format arithmetic and its inputs."""

import math

import numpy as np
from hypothesis import given, settings, strategies as st

from lcprof.cost.weights import WEIGHT_FORMATS
from lcprof.plan.capacity import concurrency, short_requests_lost
from lcprof.plan.inputs import parse_memory_bytes
from lcprof.plan.memory import KVGroupKind

SETTINGS = settings(max_examples=100, deadline=None)


@SETTINGS
@given(n=st.integers(1, 1 << 22), window=st.integers(1, 1 << 16), block=st.sampled_from([1, 16, 32, 64, 128]))
def test_blocks_held_bounds(n, window, block):
    g = KVGroupKind("global", None, 1, 1)
    assert int(g.blocks_held(n, block)) == math.ceil(n / block)
    s = KVGroupKind("sliding", window, 1, 1)
    held = int(s.blocks_held(n, block))
    tight = math.ceil(min(n, window) / block)
    assert tight <= held <= tight + 1  # the window, plus at most one straddling block
    c = KVGroupKind("chunked", window, 1, 1)
    in_chunk = n - window * ((n - 1) // window)
    assert math.ceil(in_chunk / block) <= int(c.blocks_held(n, block)) <= math.ceil(in_chunk / block) + 1


@SETTINGS
@given(n=st.integers(2, 1 << 20), prefix=st.integers(0, 1 << 20), block=st.sampled_from([1, 16, 64]))
def test_shared_prefix_never_adds_blocks(n, prefix, block):
    g = KVGroupKind("global", None, 4, 4)
    prefix = min(prefix, n - 1)
    shared = int(g.blocks_held(n, block, prefix))
    assert shared == math.ceil(n / block) - prefix // block
    assert 1 <= shared <= int(g.blocks_held(n, block))


@SETTINGS
@given(pool=st.integers(0, 10 ** 7), b_long=st.integers(1, 10 ** 5), b_short=st.integers(1, 10 ** 4),
       seqs=st.one_of(st.none(), st.integers(1, 4096)))
def test_concurrency_and_displacement_bounds(pool, b_long, b_short, seqs):
    c = int(concurrency(pool, b_short, seqs))
    assert c * b_short <= pool and (seqs is None or c <= seqs)
    lost = int(short_requests_lost(pool, b_long, b_short, seqs))
    assert 0 <= lost <= c
    if b_long <= pool and seqs is None:
        assert lost <= math.ceil(b_long / b_short) + 1  # a long request displaces its blocks' worth, no more


@SETTINGS
@given(d_in=st.integers(1, 20000), d_out=st.integers(1, 20000))
def test_quantized_matrices_are_smaller_than_bf16_and_at_least_their_data(d_in, d_out):
    bf16 = WEIGHT_FORMATS["bf16"].matrix_bytes(d_in, d_out, "mlp")
    for name, bits in (("fp8", 8), ("int8", 8), ("int4", 4), ("nvfp4", 4)):
        q = WEIGHT_FORMATS[name].matrix_bytes(d_in, d_out, "mlp")
        assert q >= d_in * d_out * bits / 8
        if d_in >= 128 and d_out >= 128:
            assert q < bf16


@SETTINGS
@given(value=st.integers(1, 1 << 45))
def test_parse_memory_bytes_round_trips(value):
    assert parse_memory_bytes(str(value)) == value
    assert parse_memory_bytes(f"{value}GiB") == value << 30
    assert parse_memory_bytes(value) == value


@SETTINGS
@given(frac=st.floats(0.01, 1000.0, allow_nan=False))
def test_parse_memory_bytes_rounds_logged_gib(frac):
    text = f"{frac:.2f}GiB"
    assert parse_memory_bytes(text) == round(float(f"{frac:.2f}") * (1 << 30))
    assert np.isfinite(parse_memory_bytes(text))
