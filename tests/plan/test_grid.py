"""The what-if grid agrees with ``plan`` scenario by scenario, flags invalid TPs, and is fast."""

import time
import warnings

import numpy as np
import pytest

from lcprof.plan import capacity_grid, plan

pytestmark = pytest.mark.filterwarnings("ignore:.*max_position_embeddings")

COLUMNS = ["weights_bytes_per_gpu", "activation_reserve_bytes_per_gpu", "kv_budget_bytes_per_gpu",
           "kv_bytes_per_token_per_gpu", "kv_block_bytes_per_gpu", "kv_pool_blocks", "kv_blocks_long",
           "kv_blocks_short", "max_concurrent_long", "max_concurrent_short", "short_requests_lost_per_long",
           "displacement_kv", "prefill_long_s", "prefill_short_s", "displacement_prefill",
           "ttft_short_behind_long_s", "tpot_full_short_s"]


@pytest.mark.parametrize("model,longs,tps", [("llama3-8b", "8k,32k,128k", (1, 2, 8)),
                                             ("gemma2-9b", "8k,32k", (1, 2)),
                                             ("deepseek-v2-lite", "16k,64k", (1, 4))])
def test_grid_matches_plan(model, longs, tps):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        df = capacity_grid(model, tps=tps, kv_dtypes=("bf16", "fp8"), memory_utilizations=(0.8, 0.9),
                           longs=longs, short="4k", chunk="8k")
        assert (df["status"] == "ok").all()
        for row in df.itertuples():
            r = plan(model, tp=row.tp, kv_dtype=row.kv_dtype, memory_utilization=row.memory_utilization,
                     long=row.long_n, short="4k", chunk="8k").record
            for col in COLUMNS:
                assert getattr(row, col) == pytest.approx(r[col], rel=1e-9), (col, row)


def test_grid_marks_invalid_and_unfit_rows_instead_of_aborting():
    df = capacity_grid("llama3-70b", tps=(1, 3, 8, 16), kv_dtypes=("bf16",), longs="128k", short="4k")
    by_tp = df.set_index("tp")
    assert by_tp.loc[3, "status"] == "invalid" and "does not divide" in by_tp.loc[3, "reason"]
    assert by_tp.loc[1, "status"] == "does_not_fit" and "exceed usable" in by_tp.loc[1, "reason"]
    assert by_tp.loc[8, "status"] == "ok" and by_tp.loc[16, "status"] == "ok"
    # TP=16 > 8 KV heads: one head per GPU, replicated -> same KV bytes per token as TP=8
    assert by_tp.loc[16, "kv_bytes_per_token_per_gpu"] == by_tp.loc[8, "kv_bytes_per_token_per_gpu"] == 40960


def test_grid_fixed_deployment_needs_multiples_of_tp():
    # 6 GPUs: TP 1 -> 6 replicas, TP 2 -> 3, TP 4 cannot split 6 GPUs into whole replicas,
    # TP 8 > 6 GPUs -> the scenario is one replica of 8 GPUs (a what-if over TP degrees)
    df = capacity_grid("llama3-8b", gpus=6, tps=(1, 2, 4, 8), longs="32k", short="4k")
    st = dict(zip(df["tp"], df["status"]))
    assert st == {1: "ok", 2: "ok", 4: "invalid", 8: "ok"}
    ok = df[df["status"] == "ok"]
    assert list(ok["replicas"]) == [6, 3, 1] and list(ok["gpus"]) == [6, 6, 8]


def test_grid_no_kv_room_and_long_does_not_fit():
    df = capacity_grid("llama3-8b", tps=(1,), memory_utilizations=(0.25, 0.9), longs="1M,4M", short="4k")
    st = {(r.memory_utilization, r.long_n): r.status for r in df.itertuples()}
    assert st[(0.25, 4 << 20)] == "no_kv_room"
    assert st[(0.9, 1 << 20)] in ("long_does_not_fit", "no_kv_room")
    assert all(df["reason"][df["status"] != "ok"] != "")


def test_grid_throughput_over_1e5_scenarios_per_second():
    longs = sorted(set(int(x) // 16 * 16 for x in np.geomspace(8192, 1 << 20, 50)))
    utils = list(np.linspace(0.5, 0.95, 32))
    kw = dict(tps=(1, 2, 4, 8), kv_dtypes=("bf16", "fp8", "int8", "fp32"), memory_utilizations=utils, longs=longs)
    capacity_grid("llama3-8b", **kw)  # warm-up
    t0 = time.perf_counter()
    df = capacity_grid("llama3-8b", **kw)
    dt = time.perf_counter() - t0
    assert len(df) == len(longs) * 4 * 4 * 32
    assert len(df) / dt > 1e5, f"{len(df) / dt:.0f} scenarios/s"
