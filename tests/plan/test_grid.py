"""The what-if grid: the planner's own functions over arrays -- scenario by scenario what ``plan`` gives."""

import warnings

import pytest

from lcprof.plan import capacity_grid, plan

pytestmark = pytest.mark.filterwarnings("ignore:.*max_position_embeddings")

COLUMNS = ["weights_bytes_per_gpu", "activation_bytes_per_gpu", "kv_budget_bytes_per_gpu",
           "kv_bytes_per_token_per_gpu", "kv_block_bytes_per_gpu", "kv_pool_blocks", "kv_cache_tokens",
           "kv_blocks_long", "kv_blocks_short", "max_concurrent_long", "max_concurrent_short",
           "short_requests_lost_per_long", "displacement_kv", "prefill_long_s", "prefill_long_unchunked_s",
           "prefill_short_s", "displacement_prefill", "ttft_short_behind_long_s", "tpot_full_short_s",
           "max_concurrent_short_deployment"]


@pytest.mark.parametrize("model,engine,kw", [
    ("llama3.1-8b", "vllm", dict(tps=(1, 2, 8), kv_dtypes=("bf16", "fp8", "int8"))),
    ("llama3.1-8b", "sglang", dict(tps=(1, 4), kv_dtypes=("bf16", "fp8"))),
    ("llama3.1-8b", "none", dict(tps=(1, 2), pps=(1, 2), kv_dtypes=("bf16",), memory_utilizations=(0.8, 0.9))),
    ("gemma2-9b", "none", dict(tps=(1, 2), kv_dtypes=("bf16", "int4"))),
    ("deepseek-v2-lite", "vllm", dict(tps=(1, 2), dps=(1, 2), eps=(1, 2, 4), kv_dtypes=("bf16", "fp8"))),
])
def test_grid_matches_plan(model, engine, kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        df = capacity_grid(model, longs="8k,32k", short="4k", engine=engine, **kw)
        ok = df[df["status"] == "ok"]
        assert len(ok) >= len(df) // 3
        for row in ok.itertuples():
            r = plan(model, tp=row.tp, dp=row.dp, ep=row.ep, pp=row.pp, kv_dtype=row.kv_dtype,
                     memory_utilization=row.memory_utilization if "memory_utilizations" in kw else None,
                     long=row.long_n, short="4k", engine=engine).record
            for col in COLUMNS:
                assert getattr(row, col) == pytest.approx(r[col], rel=1e-12), (col, row)


def test_grid_marks_invalid_and_unfit_rows_instead_of_aborting():
    df = capacity_grid("llama3.1-70b", tps=(1, 3, 8, 16), kv_dtypes=("bf16",), longs="128k", short="4k")
    by_tp = df.set_index("tp")
    assert by_tp.loc[3, "status"] == "invalid" and "does not divide" in by_tp.loc[3, "reason"]
    assert by_tp.loc[1, "status"] == "does_not_fit" and "exceed" in by_tp.loc[1, "reason"]
    assert by_tp.loc[8, "status"] == "ok" and by_tp.loc[16, "status"] == "ok"
    # TP=16 > 8 KV heads: one head per GPU, replicated -> same KV bytes per token as TP=8
    assert by_tp.loc[16, "kv_bytes_per_token_per_gpu"] == by_tp.loc[8, "kv_bytes_per_token_per_gpu"] == 40960


def test_grid_fixed_deployment_needs_multiples_of_the_replica():
    # 6 GPUs: TP 1 -> 6 replicas, TP 2 -> 3, TP 4 cannot split 6 GPUs into whole replicas,
    # TP 8 > 6 GPUs -> the scenario is one replica of 8 GPUs (a what-if over TP degrees)
    df = capacity_grid("llama3.1-8b", gpus=6, tps=(1, 2, 4, 8), longs="32k", short="4k")
    st = dict(zip(df["tp"], df["status"]))
    assert st == {1: "ok", 2: "ok", 4: "invalid", 8: "ok"}
    ok = df[df["status"] == "ok"]
    assert list(ok["replicas"]) == [6, 3, 1] and list(ok["gpus"]) == [6, 6, 8]


def test_grid_statuses():
    df = capacity_grid("llama3.1-8b", engine="none", tps=(1,), memory_utilizations=(0.25, 0.9),
                       longs="1M,4M", short="4k")
    st = {(r.memory_utilization, r.long_n): r.status for r in df.itertuples()}
    assert st[(0.25, 4 << 20)] == "no_kv_room"
    assert st[(0.9, 1 << 20)] in ("long_does_not_fit", "no_kv_room")
    assert all(df["reason"][df["status"] != "ok"] != "")
    v = capacity_grid("llama3.1-8b", tps=(1,), longs="64k,256k", short="4k", memory_utilizations=(0.3, 0.9))
    st = {(r.memory_utilization, r.long_n): r.status for r in v.itertuples()}
    assert st[(0.9, 262144)] == "too_long"  # beyond vLLM's max_model_len 131072
    assert st[(0.3, 65536)] == "engine_refuses"  # 0.3 x 79.6 GiB: less than one 131072-token request
    assert st[(0.9, 65536)] == "ok"
    inv = capacity_grid("llama3.1-8b", tps=(1,), longs="2k", short="4k")
    assert inv["status"].iloc[0] == "invalid" and "shorter than short" in inv["reason"].iloc[0]
    sg = capacity_grid("llama3.1-8b", engine="sglang", kv_dtypes=("int8",), longs="8k", short="4k")
    assert sg["status"].iloc[0] == "invalid" and "sglang has no int8" in sg["reason"].iloc[0]
