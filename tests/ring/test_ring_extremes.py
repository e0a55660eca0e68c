"""The ring model at extreme sizes: exact integers, no int64 wrap, a one-line refusal beyond its
tables (issue 19). Every value is derived by hand below (powers of two keep the arithmetic exact)."""

import json
from fractions import Fraction

import numpy as np
import pytest
from click.testing import CliRunner

from lcprof.cli import main
from lcprof.cost.ring import (MAX_RING_GPUS, MAX_RING_TOKENS, executed_pair_counts, load_imbalance, pair_counts,
                              ring_memory_bytes, ring_step_model)
from lcprof.errors import LcprofError

N = 1 << 31  # 2,147,483,648 tokens
G = 1024
M = N // G  # 2^21 = 2,097,152 tokens per device


def test_pair_counts_at_2_31_tokens_on_1024_devices():
    striped = pair_counts(N, G, "striped")
    # striped: t <= r (source s <= r) m(m+1)/2, t > r m(m-1)/2
    assert striped[0, 0] == M * (M + 1) // 2 == 2_199_024_304_128
    assert striped[1, 0] == M * (M - 1) // 2 == 2_199_022_206_976
    assert striped[G - 1, G - 1] == M * (M + 1) // 2
    # the total n(n+1)/2 = 2^30 (2^31 + 1) = 2^61 + 2^30, inside int64
    assert int(striped.sum()) == N * (N + 1) // 2 == (1 << 61) + (1 << 30)
    contiguous = pair_counts(N, G, "contiguous")
    assert contiguous[0, 5] == M * (M + 1) // 2  # step 0: own block
    assert contiguous[3, 5] == M * M == 1 << 42  # earlier rank's block: full square
    assert contiguous[6, 5] == 0  # a later rank's block: masked
    assert int(contiguous.sum()) == N * (N + 1) // 2


def test_executed_pairs_at_2_31_tokens():
    ex = executed_pair_counts(N, G, "striped", 128)
    # T = 2^21 / 128 = 16384 tile rows, all full: 128^2 T (T - 1) / 2 + 128 m = 2^41 + 2^27
    assert ex[0, 0] == 128 * 128 * 16384 * 16383 // 2 + 128 * M == (1 << 41) + (1 << 27)
    # the block just above the diagonal, tile >= 2: the same tiles
    assert ex[1, 0] == ex[0, 0]
    ex = executed_pair_counts(N, G, "contiguous", 128)
    assert (ex[0, 0], ex[3, 5], ex[6, 5]) == ((1 << 41) + (1 << 27), 1 << 42, 0)


def test_load_imbalance_closed_form_at_1024_devices():
    # striped, G | n: G (m + 1) / (G m + 1)
    imb = load_imbalance(N, G, "striped").imbalance
    assert imb == pytest.approx(float(Fraction(G * (M + 1), G * M + 1)), rel=1e-15)
    # contiguous: (2 G m - m + 1) / (G m + 1)
    imb = load_imbalance(N, G, "contiguous").imbalance
    assert imb == pytest.approx(float(Fraction(2 * G * M - M + 1, G * M + 1)), rel=1e-15)


def test_flops_past_2_63_stay_exact():
    # llama3-8b shapes (32 heads, 8 KV heads, head dim 128), batch 1024: per pair and head 2*128 + 2*128 = 512
    # FLOPs; the slowest striped rank runs m(m+1)/2 pairs every step:
    # 512 x 32 x 1024 x 2^20 (2^21 + 1) = 2^24 x 2^20 x (2^21 + 1) = 2^65 + 2^44 per step -- past int64
    model = ring_step_model(N, G, 32, 8, 128, 2, 1e15, 450e9, "striped", batch=1024)
    per_step = 512 * 32 * 1024 * (M * (M + 1) // 2)
    assert per_step == (1 << 65) + (1 << 44)
    assert all(f == per_step for f in model.useful_flops)
    assert isinstance(model.useful_flops[0], int) and model.useful_flops[0] > 0
    assert sum(model.useful_flops) == G * per_step
    # K+V block: 2^10 sequences x 2^21 tokens x 2^3 KV heads x 2^8 dims x 2 bytes = 2^43 bytes
    assert list(model.comm_bytes) == [1 << 43] * (G - 1) + [0]
    assert model.total_comm_time_s == pytest.approx((G - 1) * 2.0 ** 43 / 450e9, rel=1e-12)
    assert model.total_compute_time_s == pytest.approx(G * float(model.executed_flops[0]) / 1e15, rel=1e-12)
    mem = ring_memory_bytes(N, G, 32, 8, 128, 2, batch=1024)
    # q and out: 2^10 x 2^21 x 2^5 x 2^7 x 2 = 2^44 bytes each; K+V 2^43 and two more buffers;
    # lse 2^10 x 2^5 x 2^21 x 4 = 2^38
    assert mem["q_bytes"] == mem["out_bytes"] == 1 << 44 and mem["lse_bytes"] == 1 << 38
    assert mem["total_bytes"] == 2 * (1 << 44) + 3 * (1 << 43) + (1 << 38)


def test_bounds_are_what_the_int64_tables_hold():
    # n(n+1)/2 at n = 2^32 is 2^63 + 2^31: refused; one token fewer fits
    assert MAX_RING_TOKENS == (1 << 32) - 1
    assert MAX_RING_TOKENS * (MAX_RING_TOKENS + 1) // 2 < 1 << 63 <= (1 << 32) * ((1 << 32) + 1) // 2
    with pytest.raises(LcprofError, match="64-bit"):
        pair_counts(1 << 32, 8, "striped")
    assert int(pair_counts(MAX_RING_TOKENS, 8, "striped").sum()) == MAX_RING_TOKENS * (MAX_RING_TOKENS + 1) // 2
    # on one device a block is n x n: m^2 must stay below 2^63 -> m <= 3,037,000,499
    assert 3_037_000_499 ** 2 < 1 << 63 < 3_037_000_500 ** 2
    ex = executed_pair_counts(3_037_000_499, 1, "striped", 1)
    assert int(ex[0, 0]) == 3_037_000_499 * 3_037_000_500 // 2
    with pytest.raises(LcprofError, match="tokens per device"):
        pair_counts(3_037_000_500, 1, "striped")
    assert MAX_RING_GPUS == 2048
    with pytest.raises(LcprofError, match="at most 2048 devices"):
        pair_counts(1 << 20, 2049, "striped")
    assert pair_counts(1 << 20, 2048, "striped").shape == (2048, 2048)


def test_cli_at_2_31_tokens_on_1024_gpus():
    res = CliRunner().invoke(main, ["ring", "--model", "llama3-8b", "--n", "2147483648", "--gpus", "1024",
                                    "--calibration", "datasheet", "--format", "json", "--steps",
                                    "--layout", "striped"])
    assert res.exit_code == 0, res.output
    recs = json.loads(res.output)
    steps = [r for r in recs if r["section"] == "steps"]
    assert len(steps) == G
    per_step = 512 * 32 * (M * (M + 1) // 2)  # batch 1: 2^55 + 2^34
    assert per_step == (1 << 55) + (1 << 34)
    assert {r["useful_flops"] for r in steps} == {per_step}
    assert {r["tokens_per_device"] for r in steps} == {M}
    res = CliRunner().invoke(main, ["ring", "--model", "llama3-8b", "--n", "4G", "--gpus", "1024"])
    assert res.exit_code == 2 and "64-bit" in res.output and len(res.output.strip().splitlines()) == 1
