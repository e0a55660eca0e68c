"""`lcprof ring` on hybrid models: the ring runs only the global attention layers (each with its own
dims); the other layers say what they need under context parallelism (issue 14, deliver 3).

Configs are the bundled presets (lcprof/data/models/*.json, copies of the published config.json):

* Qwen3-Next-80B-A3B: 48 layers, full_attention_interval 4 -> 12 attention + 36 Gated DeltaNet;
  attention 16 heads, 2 KV heads, head_dim 256; Gated DeltaNet 16 key heads, 32 value heads,
  head dims 128, conv kernel 4.
* Jamba-1.5-mini: 32 layers, attn_layer_period 8 -> 4 attention + 28 Mamba; attention 32 heads,
  8 KV heads, head_dim 4096/32 = 128; Mamba d_inner 2 x 4096 = 8192, d_state 16, d_conv 4.
* MiniMax-M1: 80 layers, 10 softmax attention + 70 lightning; lightning 64 heads x 128.
* Nemotron-H-56B: 118 layers, 10 attention + 54 Mamba-2 + 54 MLP-only; Mamba-2 256 heads x 64,
  d_state 256, 8 groups, conv 4.
"""

import json

import pytest
from click.testing import CliRunner

from lcprof.cli import main
from lcprof.cost import context_parallel as cp
from lcprof.cost.kinds import mixer_ops
from lcprof.cost.model import cost
from lcprof.analytic import load
from lcprof.ring.analysis import ring_report

NVLINK4 = 450e9  # bytes/s (lcprof/data/links: nvlink4)


def _ring(model, n, gpus, *extra):
    res = CliRunner().invoke(main, ["ring", "--model", model, "--n", n, "--gpus", str(gpus), "--format", "json",
                                    "--calibration", "datasheet", *extra])
    assert res.exit_code == 0, res.output
    return json.loads(res.output)


def _sections(recs):
    out: dict = {}
    for r in recs:
        out.setdefault(r["section"], []).append(r)
    return out


def test_qwen3_next_rings_12_attention_layers_with_head_dim_256():
    n, G = 65536, 8
    m = n // G  # 8192 tokens per device
    sec = _sections(_ring("qwen3-next-80b-a3b", "64k", G, "--steps"))
    assert len(sec["summary"]) == 2  # one attention shape, two layouts
    for rec in sec["summary"]:
        assert (rec["layers"], rec["model_layers"]) == (12, 48)
        assert (rec["heads"], rec["kv_heads"], rec["head_dim"], rec["v_head_dim"]) == (16, 2, 256, 256)
        # q.k 256 and p.v 256 multiply-adds per pair and head, 2 FLOPs each
        assert rec["flops_per_pair_per_head"] == 2 * 256 + 2 * 256 == 1024
        assert rec["attention_time_layers_s"] == pytest.approx(12 * rec["total_time_s"], rel=1e-12)
    # a K+V block: 8192 tokens x 2 KV heads x (256 + 256) dims x 2 bytes = 16 MiB, steps 0..G-2
    block = m * 2 * (256 + 256) * 2
    assert block == 16_777_216
    steps = sec["steps"]
    assert [r["comm_bytes"] for r in steps if r["layout"] == "striped"] == [block] * (G - 1) + [0]
    # step 0: every rank's own block, m(m+1)/2 causal pairs, x 1024 FLOPs x 16 heads
    (s0,) = [r for r in steps if r["layout"] == "striped" and r["step"] == 0]
    assert s0["useful_flops"] == 1024 * 16 * (8192 * 8193 // 2) == 549_822_922_752


def test_qwen3_next_gated_deltanet_passes_its_state_sequentially():
    n, G = 65536, 8
    (gdn,) = [r for r in _sections(_ring("qwen3-next-80b-a3b", "64k", G))["other_layers"]
              if r["layer_kind"] == "Gated DeltaNet"]
    assert gdn["layers"] == 36 and gdn["sequential"] is True
    # state per sequence, bf16: recurrent 32 value heads x 128 x 128 = 524,288 elements; conv window
    # (kernel - 1 = 3) x conv channels (2 x 16 x 128 + 32 x 128 = 8192) = 24,576 elements
    state = (32 * 128 * 128 + 3 * (2 * 16 * 128 + 32 * 128)) * 2
    assert state == 1_097_728 == gdn["state_bytes_per_hop"]
    assert gdn["hops_per_layer"] == G - 1 == 7
    assert gdn["hop_time_s"] == pytest.approx(state / NVLINK4, rel=1e-12)
    assert "7 sequential hops of 1097728 bytes" in gdn["needs"]
    # G divides n: every rank runs 8192 tokens, one after the other
    assert gdn["sequential_compute_time_s"] == pytest.approx(G * gdn["local_compute_time_max_s"], rel=1e-12)
    assert gdn["sequential_time_per_layer_s"] == pytest.approx(
        G * gdn["local_compute_time_max_s"] + 7 * state / NVLINK4, rel=1e-12)
    assert gdn["time_all_layers_s"] == pytest.approx(36 * gdn["sequential_time_per_layer_s"], rel=1e-12)
    # a rank's chunk costs what the kind's own cost model charges 8192 tokens (hand-checked per kind in
    # tests/cost/test_hybrid_kinds.py)
    spec = load("qwen3-next-80b-a3b")
    gdn_layer = next(i for i, lyr in enumerate(spec.layers) if "gated_deltanet" in lyr.mixers)
    assert gdn["local_flops_max"] == pytest.approx(float(cost(spec, 8192, layer=gdn_layer).flops["mixer/total"][0]),
                                                   rel=1e-12)


def test_jamba_rings_4_attention_layers_and_passes_mamba_state():
    n, G = 262144, 8  # seed 002's 256K
    m = n // G  # 32768
    sec = _sections(_ring("jamba-1.5-mini", "256k", G, "--steps"))
    for rec in sec["summary"]:
        assert (rec["layers"], rec["model_layers"]) == (4, 32)
        assert (rec["heads"], rec["kv_heads"], rec["head_dim"], rec["v_head_dim"]) == (32, 8, 128, 128)
        assert rec["flops_per_pair_per_head"] == 512
        # memory: K+V block 32768 x 8 x 256 x 2 = 128 MiB; q and out 32768 x 32 x 128 x 2 = 256 MiB each;
        # lse 32 x 32768 x 4; two more K+V buffers
        kv = m * 8 * 256 * 2
        assert kv == 134_217_728 and rec["memory_kv_bytes"] == kv
        assert rec["memory_bytes_per_device"] == 2 * (m * 32 * 128 * 2) + 3 * kv + 32 * m * 4
    (mamba,) = [r for r in sec["other_layers"] if r["layer_kind"] == "Mamba"]
    # d_inner x d_state = 8192 x 16 = 131,072 recurrent + 8192 x (d_conv - 1 = 3) = 24,576 conv, bf16
    assert mamba["state_bytes_per_hop"] == (8192 * 16 + 8192 * 3) * 2 == 311_296
    assert (mamba["layers"], mamba["hops_per_layer"]) == (28, 7)
    assert mamba["hop_time_s"] == pytest.approx(311_296 / NVLINK4, rel=1e-12)
    # 4 + 28 = every layer accounted for
    assert sec["summary"][0]["layers"] + mamba["layers"] == 32


def test_minimax_and_nemotron_state_and_mlp_only_layers():
    sec = _sections(_ring("minimax-m1", "64k", 8))
    assert {r["layers"] for r in sec["summary"]} == {10}
    (light,) = sec["other_layers"]
    # lightning attention keeps a 128 x 128 state per head, 64 heads, no conv: bf16
    assert (light["layer_kind"], light["layers"], light["state_bytes_per_hop"]) == \
        ("lightning attention", 70, 64 * 128 * 128 * 2)
    sec = _sections(_ring("nemotron-h-56b", "64k", 4))
    by = {r["layer_kind"]: r for r in sec["other_layers"]}
    # Mamba-2: 256 heads x 64 x d_state 256 recurrent; conv (4 - 1) x (256 x 64 + 2 x 8 x 256) channels; bf16
    assert by["Mamba-2"]["state_bytes_per_hop"] == (256 * 64 * 256 + 3 * (256 * 64 + 2 * 8 * 256)) * 2 == 8_511_488
    assert by["Mamba-2"]["hops_per_layer"] == 3
    assert (by["MLP only"]["layers"], by["MLP only"]["time_all_layers_s"]) == (54, 0.0)
    assert sec["summary"][0]["layers"] + by["Mamba-2"]["layers"] + by["MLP only"]["layers"] == 118


def test_sliding_layers_need_a_halo_not_a_ring():
    # Gemma 3 27B: 52 sliding (window 1024) + 10 global layers; 32 heads, 16 KV heads, head_dim 128
    n, G = 131072, 8
    m = n // G  # 16384
    sec = _sections(_ring("gemma3-27b", "128k", G))
    assert {r["layers"] for r in sec["summary"]} == {10}
    (sl,) = sec["other_layers"]
    assert sl["layers"] == 52 and sl["sequential"] is False
    # the window's W - 1 = 1023 earlier keys, K and V: 1023 x 16 x (128 + 128) x 2 bytes
    assert sl["halo_tokens_max"] == 1023 and sl["halo_bytes"] == 1023 * 16 * 256 * 2 == 8_380_416
    # ranks >= 1: every query sees exactly 1024 keys -> 16384 x 1024 pairs per head (rank 0 fewer)
    assert sl["pairs_per_head_max"] == m * 1024 == 16_777_216
    assert sl["local_flops_max"] == 16_777_216 * 512 * 32


def test_chunked_layers_halo_depends_on_chunk_alignment():
    # Llama 4 Scout: 36 chunked (C = 8192) layers. n = 96k on 8 ranks: m = 12288, rank r starts at
    # 12288 r; 12288 r mod 8192 = 4096 for odd r: 4096 earlier keys of its first chunk.
    n, G = 98304, 8
    spec = load("llama4-scout")
    lyr = next(lyr for lyr in spec.layers if lyr.attn == "chunked")
    rec = cp.window_halo(spec, lyr, n, G, dtype_bytes=2, peak_flops_per_s=1e15, link_bytes_per_s=NVLINK4)
    assert rec["halo_tokens_max"] == 4096 and rec["hops_per_layer"] == 1
    # rank 1 (queries 12288..24575): 4096 queries finishing chunk [8192, 16384) see 4097..8192 keys,
    # then 8192 queries of chunk [16384, 24576) see 1..8192
    rank1 = sum(range(4097, 8193)) + sum(range(1, 8193))
    assert rank1 == 58_726_400 == rec["pairs_per_head_max"]
    # aligned: m = 16384 is a multiple of C: no halo at all
    rec = cp.window_halo(spec, lyr, 131072, G, dtype_bytes=2, peak_flops_per_s=1e15, link_bytes_per_s=NVLINK4)
    assert (rec["halo_tokens_max"], rec["halo_bytes"], rec["hops_per_layer"]) == (0, 0, 0)


def test_state_pass_with_a_short_last_rank():
    # n = 10 on G = 4: m = 3, ranks hold 3, 3, 3, 1 real tokens; the sequential sum charges each its own
    spec = load("jamba-1.5-mini")
    mx = spec.mixer("mamba")
    rec = cp.state_pass(mx, 10, 4, peak_flops_per_s=1.0, link_bytes_per_s=1.0)
    three = float(sum(float(op.flops[0]) for op in mixer_ops(mx, [3.0])))
    one = float(sum(float(op.flops[0]) for op in mixer_ops(mx, [1.0])))
    assert rec["sequential_compute_time_s"] == pytest.approx(3 * three + one, rel=1e-12)
    assert rec["local_flops_max"] == three
    assert rec["sequential_time_per_layer_s"] == pytest.approx(3 * three + one + 3 * 311_296, rel=1e-12)
    assert cp.contiguous_real_tokens(10, 4) == [3, 3, 3, 1]


def test_sparse_dsa_is_refused_in_one_line():
    res = CliRunner().invoke(main, ["ring", "--model", "deepseek-v3.2", "--n", "64k"])
    assert res.exit_code == 2
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "sparse top-2048" in lines[0] and "indexer" in lines[0]


def test_a_model_without_global_attention_rings_nothing_but_says_what_it_needs():
    summary, steps, others = ring_report("mistral-7b", "64k", gpus=8, calibration="datasheet")
    assert len(summary) == 0 and len(steps) == 0
    (rec,) = others.records()
    assert rec["layer_kind"] == "sliding attention (window 4096)" and rec["halo_tokens_max"] == 4095
    res = CliRunner().invoke(main, ["ring", "--model", "falcon-mamba-7b", "--n", "64k"])
    assert res.exit_code == 2 and "no attention layers" in res.output
