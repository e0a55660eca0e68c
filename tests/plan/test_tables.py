"""The plan's tables (KV groups, mix, decode) and the grid's columns, value by value."""

import numpy as np
import pytest

from lcprof.plan import capacity_grid, plan

from support.plan_hand import BF16

pytestmark = pytest.mark.filterwarnings("ignore:.*max_position_embeddings")


def test_group_table_gemma2_by_hand():
    """gemma2-9b: 21 sliding (4096) + 21 global layers, one group of 21 each; 16-token blocks of 21 layers
    x 8 KV heads x (256 + 256) x 2 bytes."""
    p = plan("gemma2-9b", engine="none", long="8k", short="4k")
    g = p.groups
    assert list(g.columns) == ["request", "n", "kind", "layers", "groups", "layers_per_group", "tokens_held",
                               "blocks_per_group", "blocks", "kv_bytes_per_gpu"]
    block = 16 * 21 * 8 * 512 * BF16
    rows = {(r.request, r.kind): r for r in g.itertuples()}
    long_sliding, long_global = rows[("long", "sliding:4096")], rows[("long", "global")]
    assert (long_sliding.n, long_sliding.tokens_held, long_sliding.blocks_per_group) == (8192, 4096, 256)
    assert (long_global.tokens_held, long_global.blocks_per_group, long_global.layers) == (8192, 512, 21)
    assert long_global.kv_bytes_per_gpu == 512 * block and long_sliding.groups == 1
    assert rows[("short", "sliding:4096")].blocks == rows[("short", "global")].blocks == 256
    assert p.record["kv_blocks_long"] == 256 + 512


def test_mix_and_decode_tables_by_hand():
    p = plan("llama3.1-8b", long="32k", mix="2k:0.5,8k:0.3,32k:0.2", kv_memory_bytes=20 << 30, max_num_seqs=300)
    m = p.mix
    pool = (20 << 30) // (16 * 131072)
    assert list(m.columns) == ["n", "share", "kv_blocks", "kv_bytes_per_gpu", "prefill_s", "max_concurrent_alone",
                               "long_class"]
    assert list(m["n"]) == [2048, 8192, 32768] and list(m["share"]) == [0.5, 0.3, 0.2]
    assert list(m["kv_blocks"]) == [128, 512, 2048]
    assert list(m["kv_bytes_per_gpu"]) == [128 * 16 * 131072, 512 * 16 * 131072, 2048 * 16 * 131072]
    assert list(m["max_concurrent_alone"]) == [min(pool // 128, 300), pool // 512, pool // 2048]
    assert list(m["long_class"]) == [False, False, True]
    assert list(np.diff(m["prefill_s"]) > 0) == [True, True]
    assert m["prefill_s"].iloc[2] == pytest.approx(p.record["prefill_long_s"])
    d = p.decode
    assert list(d.columns) == ["n", "kv_read_bytes_per_gpu", "decode_step_batch1_s", "max_concurrent",
                               "tpot_full_pool_s"]
    assert list(d["n"]) == [1024, 2048, 4096, 8192, 16384, 32768]
    assert list(d["kv_read_bytes_per_gpu"]) == [n * 131072 for n in d["n"]]
    assert list(d["max_concurrent"]) == [min(pool // (n // 16), 300) for n in d["n"]]
    assert (d["tpot_full_pool_s"] >= d["decode_step_batch1_s"]).all()
    assert np.all(np.diff(d["decode_step_batch1_s"]) > 0)
    assert d["kv_read_bytes_per_gpu"].dtype == np.int64
    rec = p.json_record()
    assert rec["kv_groups_table"] == p.groups.to_dict(orient="records")
    assert rec["mix_table"][2]["kv_blocks"] == 2048 and rec["decode_table"][0]["n"] == 1024
    assert rec["startup_log"] == list(p.startup_log) and rec["warnings"] == list(p.warnings)


def test_sections_skip_keys_that_do_not_apply():
    p = plan("llama3.1-8b", long="32k", short="4k")
    titles = [t for t, _ in p.sections()]
    assert titles[:3] == ["Deployment", "Memory per GPU (the engine's accounting)", "Weights per GPU by tensor class"]
    assert "Mix" not in titles and "Recommendations" not in titles  # no mix, no targets
    memory = dict(p.sections())["Memory per GPU (the engine's accounting)"]
    assert "binding_stage" not in memory  # None without pipeline stages


def test_grid_columns_and_dtypes():
    df = capacity_grid("llama3.1-8b", tps=(1, 2), kv_dtypes=("bf16", "fp8"), longs="8k,16k", short="4k")
    assert len(df) == 8
    assert list(df["long_n"]) == [8192] * 4 + [16384] * 4
    assert list(df["kv_dtype"].astype(str)) == ["bf16", "bf16", "fp8", "fp8"] * 2
    assert list(df["tp"]) == [1, 2, 1, 2] * 2 and list(df["layout"].astype(str)) == ["TP1", "TP2"] * 4
    for col in ("long_n", "kv_pool_blocks", "max_concurrent_short", "kv_budget_bytes_per_gpu", "gpus", "replicas"):
        assert df[col].dtype == np.int64, col
    assert df["memory_utilization"].dtype == np.float64 and set(df["memory_utilization"]) == {0.92}
    assert set(df["status"].astype(str)) == {"ok"} and set(df["reason"].astype(str)) == {""}
    assert (df["model"].astype(str) == "llama3.1-8b").all() and (df["engine"] == "vllm").all()
    assert list(df["gpus"]) == [1, 2] * 4
    assert list(df["max_concurrent_short_deployment"]) == list(df["max_concurrent_short"])
    fp8 = df[(df["kv_dtype"] == "fp8") & (df["tp"] == 1)].iloc[0]
    bf16 = df[(df["kv_dtype"] == "bf16") & (df["tp"] == 1)].iloc[0]
    assert fp8["kv_block_bytes_per_gpu"] * 2 == bf16["kv_block_bytes_per_gpu"] == 16 * 131072
    assert fp8["kv_bytes_per_token_per_gpu"] == 65536
    assert fp8["displacement_kv"] == 2.0 and bf16["displacement_prefill"] > 1.0
