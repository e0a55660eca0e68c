"""Hybrid models in the planner: a request holds its mixers' constant state plus its attention KV,
paged as vLLM's hybrid allocator pages them (lcprof/plan/memory.py module docstring).

Every expected value is derived by hand from the bundled config.json (dims in the comments):

* one state page = the mixer's per-request state on one GPU (conv state bf16, recurrent state in the
  state dtype);
* attention block B = 16 x cdiv(state_page, 16 x attn_bytes_per_token_per_layer); page = B x that;
* group size g (vLLM: the smallest kind's layer count unless all are within 1.5x); one block = g pages;
* a request of n tokens holds cdiv(n, B) blocks per attention group + 1 page per state group (2 with
  --mamba-cache-mode align).
"""

import pytest

from lcprof.errors import LcprofError
from lcprof.plan import capacity_grid, plan

from support.plan_hand import GIB, cdiv

pytestmark = pytest.mark.filterwarnings("ignore:.*max_position_embeddings")

# Jamba-1.5-mini: 32 layers, attention every 8th (4 layers, 8 KV heads x 128), 28 Mamba-1 layers
# (d_inner 8192, d_state 16, d_conv 4).
JAMBA_ATTN_PER_TOKEN = 2 * 8 * 128 * 2  # K + V, bf16: 4096 B per layer
JAMBA_STATE = 3 * 8192 * 2 + 8192 * 16 * 2  # conv (d_conv - 1) x d_inner + ssm d_inner x d_state, bf16: 311,296
JAMBA_BLOCK = 16 * cdiv(JAMBA_STATE, 16 * JAMBA_ATTN_PER_TOKEN)  # 16 x cdiv(311296, 65536) = 80 tokens
JAMBA_PAGE = JAMBA_BLOCK * JAMBA_ATTN_PER_TOKEN  # 327,680 B: the state padded by 5.26%
JAMBA_BLOCK_BYTES = 4 * JAMBA_PAGE  # groups of 4 layers (4 attention vs 28 Mamba: g = 4): 1 + 7 groups

# Qwen3-Next-80B-A3B: 48 layers, 12 full attention (2 KV heads x 256), 36 Gated DeltaNet (16 key heads
# x 128, 32 value heads x 128, conv kernel 4); no mamba_ssm_dtype in its config: state in bf16.
QN_ATTN_PER_TOKEN = 2 * 2 * 256 * 2  # 2048 B per layer
QN_CONV_DIM = 2 * 16 * 128 + 32 * 128  # q, k, v channels through the conv: 8192
QN_STATE = 3 * QN_CONV_DIM * 2 + 32 * 128 * 128 * 2  # 49,152 + 1,048,576 = 1,097,728
QN_BLOCK = 16 * cdiv(QN_STATE, 16 * QN_ATTN_PER_TOKEN)  # 16 x cdiv(1097728, 32768) = 16 x 34 = 544
QN_PAGE = QN_BLOCK * QN_ATTN_PER_TOKEN  # 1,114,112 B
QN_BLOCK_BYTES = 12 * QN_PAGE  # g = 12: one attention group, three state groups


def test_hand_constants():
    assert (JAMBA_STATE, JAMBA_BLOCK, JAMBA_PAGE) == (311_296, 80, 327_680)
    assert (QN_STATE, QN_BLOCK, QN_PAGE) == (1_097_728, 544, 1_114_112)


def test_jamba_paging_displacement_and_concurrency_by_hand():
    p = plan("jamba-1.5-mini", gpu="h200", long="128k", short="4k", kv_memory_bytes=20 * GIB)
    r = p.record
    pool = 20 * GIB // JAMBA_BLOCK_BYTES  # 16,384 blocks
    long_blocks = cdiv(131072, JAMBA_BLOCK) + 7  # 1639 attention blocks + one page in each of 7 state groups
    short_blocks = cdiv(4096, JAMBA_BLOCK) + 7  # 52 + 7
    assert (r["block_size"], r["kv_block_bytes_per_gpu"], r["kv_pool_blocks"]) == (80, JAMBA_BLOCK_BYTES, pool)
    assert (r["kv_groups"], r["state_groups"], r["state_pages_per_request"]) == (8, 7, 7)
    assert (r["kv_blocks_long"], r["kv_blocks_short"]) == (long_blocks, short_blocks) == (1646, 59)
    assert r["displacement_kv"] == pytest.approx(1646 / 59)
    assert r["max_concurrent_short"] == pool // short_blocks == 277
    assert r["max_concurrent_long"] == pool // long_blocks == 9
    assert r["short_requests_lost_per_long"] == 277 - (pool - long_blocks) // short_blocks == 28
    assert r["state_bytes_per_request_per_gpu"] == 28 * JAMBA_STATE
    assert r["kv_bytes_per_token_per_gpu"] == 4 * JAMBA_ATTN_PER_TOKEN  # only the 4 attention layers
    # vLLM's startup lines: the block raised, the state padded, concurrency at max_model_len 262,144
    per_max_len = cdiv(262144, 80) + 7  # 3277 + 7
    assert p.startup_log[0] == ("Setting attention block size to 80 tokens to ensure that attention page size "
                                "is >= mamba page size.")
    assert p.startup_log[1].startswith("Padding mamba page size by 5.26% ")  # 16384 / 311296
    assert f"Maximum concurrency for 262,144 tokens per request: {pool / per_max_len:.2f}x" in p.startup_log
    assert f"{pool / per_max_len:.2f}" == "4.99"


def test_seed_002_jamba_kv_at_256k():
    """Seed 002: at 256K tokens Jamba's 4 attention layers hold 4 GiB of bf16 KV (plus the Mamba state)."""
    p = plan("jamba-1.5-mini", gpu="h200", long="256k", short="4k", kv_memory_bytes=20 * GIB, engine="none")
    r = p.record
    assert r["kv_bytes_per_token_per_gpu"] * 262144 == 4 * GIB
    g = p.groups[(p.groups["request"] == "long") & (p.groups["kind"] == "global")].iloc[0]
    assert g["tokens_held"] == 262144
    assert r["state_bytes_per_request_per_gpu"] == 28 * 311_296  # 8.3 MiB of Mamba state beside it


def test_qwen3_next_paging_displacement_and_concurrency_by_hand():
    p = plan("qwen3-next-80b-a3b", gpu="h200", long="128k", short="4k", kv_memory_bytes=20 * GIB)
    r = p.record
    pool = 20 * GIB // QN_BLOCK_BYTES  # 1606
    long_blocks = cdiv(131072, QN_BLOCK) + 3  # 241 + 3 state groups
    short_blocks = cdiv(4096, QN_BLOCK) + 3  # 8 + 3
    assert (r["block_size"], r["kv_pool_blocks"], r["kv_groups"], r["state_groups"]) == (544, pool, 4, 3)
    assert pool == 1606 and (long_blocks, short_blocks) == (244, 11)
    assert (r["kv_blocks_long"], r["kv_blocks_short"]) == (long_blocks, short_blocks)
    assert r["displacement_kv"] == pytest.approx(244 / 11)
    assert (r["max_concurrent_short"], r["max_concurrent_long"]) == (1606 // 11, 1606 // 244) == (146, 6)
    assert r["short_requests_lost_per_long"] == 146 - (1606 - 244) // 11 == 23
    assert p.startup_log[1].startswith("Padding mamba page size by 1.49% ")  # (1114112 - 1097728) / 1097728
    # max_model_len 262,144: cdiv(262144, 544) = 482 blocks + 3 state pages; int(conc x L) tokens
    assert "Maximum concurrency for 262,144 tokens per request: 3.31x" in p.startup_log  # 1606 / 485
    assert f"GPU KV cache size: {int(1606 / 485 * 262144):,} tokens" in p.startup_log


def test_tp_splits_state_and_kv_heads():
    """TP 2: 1 KV head of 256 per rank (1024 B/token) and half the DeltaNet heads (state 548,864 B):
    block 16 x cdiv(548864, 16384) = 544 again, page 557,056 B."""
    r = plan("qwen3-next-80b-a3b", gpu="h200", tp=2, long="128k", short="4k", kv_memory_bytes=20 * GIB).record
    assert r["state_page_bytes_per_gpu"] == (3 * 4096 + 16 * 128 * 128) * 2 == 548_864
    assert r["block_size"] == 544
    assert r["kv_block_bytes_per_gpu"] == 12 * 544 * 1024


def test_state_dtype_follows_the_config_and_the_option():
    # Jamba in fp32 state: ssm 8192 x 16 x 4 + conv 3 x 8192 x 2 = 573,440 B -> block 16 x cdiv(573440, 65536) = 144
    r = plan("jamba-1.5-mini", gpu="h200", long="32k", short="4k", kv_memory_bytes=20 * GIB,
             state_dtype="fp32").record
    assert (r["state_dtype"], r["state_page_bytes_per_gpu"], r["block_size"]) == ("fp32", 573_440, 144)
    # Qwen3.5-27B's config keeps mamba_ssm_dtype float32: 48 heads x 128 x 128 x 4 + 3 x 10240 x 2 = 3,207,168
    r = plan("qwen3.5-27b", gpu="h200", long="32k", short="4k", kv_memory_bytes=20 * GIB).record
    assert (r["state_dtype"], r["state_page_bytes_per_gpu"]) == ("fp32", 3_207_168)
    assert r["block_size"] == 16 * cdiv(3_207_168, 16 * 4096) == 784
    with pytest.raises(LcprofError, match="fp8"):
        plan("jamba-1.5-mini", gpu="h200", long="32k", short="4k", state_dtype="fp8")


def test_issue_40691_qwen35_27b_exact():
    """https://github.com/vllm-project/vllm/issues/40691 (vLLM 0.19.0, H20): `vllm serve Qwen3.5-27B
    --max-model-len 32768 --max-num-seqs 16 --max-num-batched-token 16384` logged
    "GPU KV cache size: 290,864 tokens" and "Maximum concurrency for 32,768 tokens per request: 33.04x".

    Qwen3.5-27B: 16 attention layers (4 KV heads x 256: 4096 B/token), 48 Gated DeltaNet (state
    3,207,168 B, float32 ssm) -> block 784, page 3,211,264 B; groups of 16: 1 attention + 3 state.
    0.19.0 printed num_blocks // 4 groups x 784 (the issue's complaint): 290,864 / 784 = 371, so
    num_blocks is 1484..1487; concurrency num_blocks / (cdiv(32768, 784) + 3) = num_blocks / 45 reads
    33.04 only for 1487. Given that pool, the planner prints the concurrency line exactly and the
    token count as vLLM now prints it, int(33.044 x 32768)."""
    page = 784 * 4096
    assert [nb for nb in range(1484, 1488) if f"{nb / (cdiv(32768, 784) + 3):.2f}" == "33.04"] == [1487]
    p = plan("qwen3.5-27b", gpu="h100-sxm", long="32k", short="4k", max_model_len=32768, max_num_seqs=16,
             max_num_batched_tokens=16384, kv_memory_bytes=1487 * 16 * page)
    r = p.record
    assert r["kv_pool_blocks"] == 1487 and r["block_size"] == 784
    assert "Maximum concurrency for 32,768 tokens per request: 33.04x" in p.startup_log
    assert r["kv_pool_blocks"] // r["kv_groups"] * r["block_size"] == 290_864  # 0.19.0's line
    assert "GPU KV cache size: 1,082,800 tokens" in p.startup_log  # int(1487 / 45 x 32768)
    assert p.startup_log[0] == ("Setting attention block size to 784 tokens to ensure that attention page size "
                                "is >= mamba page size.")
    assert p.startup_log[1].startswith("Padding mamba page size by 0.13% ")  # 4096 / 3207168


def test_qwen36_35b_a3b_align_mode_exact_from_the_logged_kv_memory():
    """https://github.com/noonghunna/club-3090/issues/612 (vLLM 0.24.0): Qwen3.6-35B-A3B (the text model of
    the bundled qwen3.5-35b-a3b config) with kv_cache_dtype fp8, enable_prefix_caching, max_model_len
    131072 logged "Available KV cache memory: 5.98 GiB", "GPU KV cache size: 567,978 tokens",
    "Maximum concurrency for 131,072 tokens per request: 4.33x".

    10 attention layers (2 KV heads x 256, fp8: 1024 B/token), 30 Gated DeltaNet (state: conv
    3 x 8192 x 2 + ssm 32 x 128 x 128 x 4 = 2,146,304 B) -> block 16 x cdiv(2146304, 16384) = 2096
    exactly (no padding); groups of 10 (1 + 3). Prefix caching on: mamba_cache_mode align, 2 pages per
    state group. 5.98 GiB (printed to 0.01) allows 298 or 299 blocks of 10 x 2,146,304 B; per request
    at 131072: cdiv(131072, 2096) + 3 x 2 = 63 + 6 = 69 blocks; 298 / 69 = 4.32, 299 / 69 = 4.33."""
    block_bytes = 10 * 2_146_304
    lo = int(5.975 * GIB) // block_bytes
    hi = (int(5.985 * GIB) - 1) // block_bytes
    assert (lo, hi) == (298, 299)
    kw = dict(gpu="h100-sxm", kv_dtype="fp8", long="128k", short="4k", max_model_len=131072,
              mamba_cache_mode="align")
    assert plan("qwen3.5-35b-a3b", kv_memory_bytes=int(5.975 * GIB), **kw).record["kv_pool_blocks"] == 298
    p = plan("qwen3.5-35b-a3b", kv_memory_bytes=299 * block_bytes, **kw)
    assert p.record["block_size"] == 2096 and p.record["kv_pool_blocks"] == 299
    assert "Maximum concurrency for 131,072 tokens per request: 4.33x" in p.startup_log
    assert "GPU KV cache size: 567,978 tokens" in p.startup_log  # int(299 / 69 x 131072)
    assert not any(line.startswith("Padding") for line in p.startup_log)  # 2096 x 1024 = the state exactly
    # the requests themselves hold 2 state pages per group in align mode
    assert p.record["kv_blocks_short"] == cdiv(4096, 2096) + 6
    none = plan("qwen3.5-35b-a3b", kv_memory_bytes=299 * block_bytes, **{**kw, "mamba_cache_mode": "none"})
    assert none.record["kv_blocks_short"] == cdiv(4096, 2096) + 3
    assert "Maximum concurrency for 131,072 tokens per request: 4.53x" in none.startup_log  # 299 / 66


def test_attention_free_model_pages_state_only():
    """Falcon-Mamba-7B: 64 Mamba-1 layers (d_inner 8192, d_state 16), no attention: one group of all 64
    layers, a block is 64 state pages of 311,296 B, one block per request whatever its length."""
    p = plan("falcon-mamba-7b", gpu="h200", long="128k", short="4k", kv_memory_bytes=20 * GIB)
    r = p.record
    pool = 20 * GIB // (64 * 311_296)  # 1077
    assert (r["kv_pool_blocks"], r["kv_blocks_long"], r["kv_blocks_short"]) == (pool, 1, 1)
    assert r["displacement_kv"] == 1.0
    assert r["kv_limited_concurrent_short"] == 1077 and r["max_concurrent_short"] == 1024  # H200 max_num_seqs
    assert r["kv_bytes_per_token_per_gpu"] == 0


def test_sglang_refuses_hybrids_in_one_line():
    with pytest.raises(LcprofError, match="SGLang holds in a separate Mamba pool"):
        plan("jamba-1.5-mini", gpu="h200", long="32k", short="4k", engine="sglang")


def test_what_if_grid_charges_the_state_like_the_plan():
    df = capacity_grid("jamba-1.5-mini", gpu="h200", longs="32k,128k", short="4k", kv_memory_bytes=20 * GIB)
    row = df[df["long_n"] == 131072].iloc[0]
    assert (row["kv_blocks_long"], row["kv_blocks_short"], row["kv_pool_blocks"]) == (1646, 59, 16384)
    assert row["max_concurrent_short"] == 277
    assert row["kv_cache_tokens"] == plan("jamba-1.5-mini", gpu="h200", long="128k", short="4k",
                                          kv_memory_bytes=20 * GIB).record["kv_cache_tokens"]


def test_decode_reads_and_writes_the_state():
    """A decode step moves each request's KV and twice its state (read, written back): Jamba at 4k,
    KV 4096 x 16384 B + 2 x 28 x 311,296 B."""
    from lcprof.plan import build_deployment, decode_parts

    dep = build_deployment("jamba-1.5-mini", gpu="h200")
    got = float(decode_parts(dep, [4096]).kv_read_bytes_per_gpu[0])
    assert got == 4096 * 4 * 4096 + 2 * 28 * 311_296


def test_cli_prints_the_hybrid_startup_lines():
    from click.testing import CliRunner

    from lcprof.cli import main

    res = CliRunner().invoke(main, ["plan", "--model", "jamba-1.5-mini", "--gpu", "h200", "--long", "128k",
                                    "--short", "4k", "--kv-memory", "20GiB", "--state-dtype", "bf16"])
    assert res.exit_code == 0, res.output
    assert "Setting attention block size to 80 tokens" in res.output
    assert "state:mamba" in res.output
    bad = CliRunner().invoke(main, ["plan", "--model", "jamba-1.5-mini", "--gpu", "h200", "--long", "32k",
                                    "--short", "4k", "--engine", "sglang"])
    assert bad.exit_code == 2 and "Traceback" not in bad.output


def test_block_unification_rule_by_hand():
    """a = max(16, block_size); block = max(block_size, a x cdiv(state, a x per_token)); no state or no
    attention: the block size unchanged."""
    from lcprof.plan.memory import hybrid_block_size

    assert hybrid_block_size(16, 4096, 311_296) == 16 * cdiv(311_296, 16 * 4096) == 80
    assert hybrid_block_size(64, 4096, 311_296) == 64 * cdiv(311_296, 64 * 4096) == 128  # --block-size 64
    assert hybrid_block_size(256, 4096, 311_296) == 256  # already larger than one state
    assert hybrid_block_size(16, 4096, 0) == 16 and hybrid_block_size(16, 0, 311_296) == 16
    assert hybrid_block_size(16, 4096, 16 * 4096) == 16  # a state of exactly one 16-token page


def test_groups_table_and_cut_of_a_hybrid():
    """Jamba's kinds: 4 global layers and 28 Mamba layers; vLLM cuts at the smaller count (4), as does
    the gcd; a state group holds no tokens."""
    from lcprof.plan import kv_group_kinds
    from lcprof.spec import load_model

    spec = load_model("jamba-1.5-mini")
    kinds = {k.label: (k.n_layers, k.layers_per_group, k.n_groups, k.pages) for k in kv_group_kinds(spec, "vllm")}
    assert kinds == {"global": (4, 4, 1, 1), "state:mamba": (28, 4, 7, 1)}
    two = kv_group_kinds(spec, "vllm", state_pages=2)
    assert [k.pages for k in two if k.kind == "state"] == [2]
    p = plan("jamba-1.5-mini", gpu="h200", long="32k", short="4k", kv_memory_bytes=20 * GIB)
    st = p.groups[(p.groups["kind"] == "state:mamba") & (p.groups["request"] == "long")].iloc[0]
    assert (st["tokens_held"], st["blocks_per_group"], st["blocks"]) == (0, 1, 7)
    assert st["kv_bytes_per_gpu"] == 7 * JAMBA_BLOCK_BYTES


def test_engine_none_counts_the_state_too():
    """lcprof's own accounting pages hybrids the same way (gcd cut: 4); its token count is what one
    request could hold over the attention group after its 7 state pages."""
    r = plan("jamba-1.5-mini", gpu="h200", long="128k", short="4k", kv_memory_bytes=20 * GIB, engine="none").record
    assert r["kv_pool_blocks"] == 16384 and r["kv_blocks_long"] == 1646
    assert r["kv_cache_tokens"] == (16384 - 7) * 80


def test_pipeline_stages_hold_their_own_state_groups():
    """PP 2 on Jamba: each stage holds 2 of the 4 attention layers and 14 of the 28 Mamba layers, so a
    block on one GPU is 2 layers' pages (half of PP 1's) and the pool doubles."""
    one = plan("jamba-1.5-mini", gpu="h200", long="32k", short="4k", kv_memory_bytes=20 * GIB).record
    two = plan("jamba-1.5-mini", gpu="h200", pp=2, long="32k", short="4k", kv_memory_bytes=20 * GIB).record
    assert two["kv_block_bytes_per_gpu"] == 2 * JAMBA_PAGE
    assert two["kv_pool_blocks"] == 2 * one["kv_pool_blocks"]
    assert two["kv_bytes_per_token_per_gpu"] == 2 * JAMBA_ATTN_PER_TOKEN


def test_block_below_the_alignment_is_raised_to_it():
    # --block-size 8 with a one-byte state: a = max(16, 8) = 16, block = max(8, 16 x cdiv(1, 16 x 4096)) = 16
    from lcprof.plan.memory import hybrid_block_size

    assert hybrid_block_size(8, 4096, 1) == 16


def test_decode_flops_count_the_mixer_ops_once():
    """A decode token costs about 2 FLOPs per active non-embedding parameter: Qwen3-Next-80B-A3B has
    3.56e9 of them, so 7.13e9, plus its 36 Gated DeltaNet state updates (32 heads x 128 x 128, a
    read and a write: ~3.1e6 FLOPs each, 1.1e8 in all) and a 12-layer attention over one key.
    The planner once added the cost model's ``mixer/total`` on top of the mixer ops: 31.6% high."""
    from lcprof.cost.model import cost
    from lcprof.plan.compute import decode_parts
    from lcprof.plan.scenario import build_deployment
    from lcprof.spec import param_counts

    dep = build_deployment("qwen3-next-80b-a3b", gpu="h200", calibration="datasheet")
    flops = float(decode_parts(dep, [1]).flops_per_gpu[0])
    pc = param_counts(dep.spec)
    per_param = 2 * (pc["active_params"] - pc["embedding_params"])
    assert 1.0 < flops / per_param < 1.02
    c = cost(dep.spec, [1.0], phase="decode", dtype="bf16", family="useful", lm_head=True, elementwise="fused")
    assert flops == pytest.approx(float(c.flops["total"][0]), rel=1e-12)
