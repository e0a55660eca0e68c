"""``lcprof plan --mask``: the KV a request holds and its prefill follow a what-if mask on every
attention layer (issue 14). Hand values from the bundled configs.

Llama-3.1-8B: 32 layers x 8 KV heads x 128 x (K + V) x bf16 = 131,072 B per token; a vLLM block of
16 tokens is 2 MiB (one group of all 32 layers).
"""

import pytest

from lcprof.errors import LcprofError
from lcprof.plan import build_deployment, capacity_grid, decode_parts, plan

from support.plan_hand import GIB, MIB, cdiv

pytestmark = pytest.mark.filterwarnings("ignore:.*max_position_embeddings")

KW = dict(gpu="h100-sxm", long="128k", short="4k", kv_memory_bytes=20 * GIB)
POOL = 20 * GIB // (2 * MIB)  # 10240 blocks


def test_sinks_window_keeps_kv_constant():
    """StreamingLLM (4 sinks + a 4096 window): every request holds min(n, 4100) tokens."""
    r = plan("llama3.1-8b", mask="sinks:4+window:4096", **KW).record
    assert r["mask"] == "sinks:4+window:4096"
    assert r["kv_pool_blocks"] == POOL
    assert (r["kv_blocks_long"], r["kv_blocks_short"]) == (cdiv(4100, 16), cdiv(4096, 16)) == (257, 256)
    assert r["displacement_kv"] == pytest.approx(257 / 256)
    assert r["max_concurrent_long"] == POOL // 257 == 39
    full = plan("llama3.1-8b", **KW).record
    assert full["kv_blocks_long"] == 131072 // 16 and full["max_concurrent_long"] == POOL // 8192 == 1


def test_decode_reads_the_masked_kv():
    dep = build_deployment("llama3.1-8b", mask="sinks:4+window:4096")
    assert float(decode_parts(dep, [131072]).kv_read_bytes_per_gpu[0]) == 4100 * 131072


def test_sliding_mask_charges_what_a_natively_sliding_model_is_charged():
    """Mistral-7B has Llama-3.1-8B's attention shapes (32 layers, 32 heads, 8 KV heads, head_dim 128)
    and native 4096-token sliding layers: a sliding:4096 what-if on Llama gives its attention time
    and its KV blocks (cdiv(min(n, 4096), 16) = 256; native: 8192 - floor(126976 / 16) = 256)."""
    kw = dict(KW, engine="none", max_model_len=131072)
    masked = plan("llama3.1-8b", mask="sliding:4096", **kw).record
    native = plan("mistral-7b", **kw).record
    assert masked["attention_long_s"] == pytest.approx(native["attention_long_s"], rel=1e-12)
    assert masked["kv_blocks_long"] == native["kv_blocks_long"] == 256
    assert masked["attention_long_s"] < plan("llama3.1-8b", **kw).record["attention_long_s"] / 10


def test_grid_follows_the_mask():
    df = capacity_grid("llama3.1-8b", gpu="h100-sxm", longs="32k,128k", short="4k", kv_memory_bytes=20 * GIB,
                       mask="sinks:4+window:4096")
    assert list(df["kv_blocks_long"]) == [257, 257]


def test_mask_refusals():
    with pytest.raises(LcprofError, match="compressive memory"):
        plan("llama3.1-8b", mask="infini:segment=2048", **KW)
    with pytest.raises(LcprofError, match="bogus"):
        plan("llama3.1-8b", mask="bogus:12", **KW)


def test_cli_mask():
    from click.testing import CliRunner

    from lcprof.cli import main

    res = CliRunner().invoke(main, ["plan", "--model", "llama3.1-8b", "--long", "128k", "--short", "4k",
                                    "--kv-memory", "20GiB", "--mask", "sinks:4+window:4096", "--format", "json"])
    assert res.exit_code == 0, res.output
    import json

    rec = json.loads(res.output)[0]
    assert rec["kv_blocks_long"] == 257 and rec["mask"] == "sinks:4+window:4096"
