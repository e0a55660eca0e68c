"""The seed papers' masks (``--mask``): closed forms vs explicit enumeration, hand values, parser.

Each ``allowed_*`` below spells the paper's rule out per (query position i, key position j, head h),
independently of lcprof.cost.masks; counts are plain loops over every pair (and head).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from lcprof.cost import masks as M
from lcprof.errors import LcprofError


# ------------------------------------------------------------------------------------------------
# Brute-force rules
# ------------------------------------------------------------------------------------------------

def allowed_sinks(i, j, s, w):
    return j <= i and (j < s or j > i - w)


def allowed_dilated(i, j, h, patterns):
    """How many patterns let head h's query i see key j (LongNet, causal in the segment)."""
    hits = 0
    for w, r in patterns:
        if j > i or i // w != j // w:
            continue
        off = h % r
        if (i % w) % r == off and (j % w) % r == off:
            hits += 1
    return hits


def allowed_bigbird(i, j, block, window, glob, rand_rows):
    if j > i:
        return False
    bi, bj = i // block, j // block
    if bi < glob or bj < glob:
        return True
    if bj >= bi - (window - 1) // 2:
        return True
    return bj in rand_rows[bi]


def brute(fn, n, p, heads=1):
    return sum(fn(i, j, h) for h in range(heads) for i in range(p, p + n) for j in range(p + n))


def brute_tiled(fn, n, p, bq, bk, heads=1):
    total = 0
    for h in range(heads):
        mat = np.array([[fn(i, j, h) for j in range(p + n)] for i in range(p, p + n)], dtype=bool)
        for q0 in range(0, n, bq):
            for k0 in range(0, p + n, bk):
                blk = mat[q0:q0 + bq, k0:k0 + bk]
                if blk.any():
                    total += blk.shape[0] * blk.shape[1]
    return total


TILES = [(1, 1), (2, 3), (4, 4), (5, 2), (16, 16)]


# ------------------------------------------------------------------------------------------------
# Hand values
# ------------------------------------------------------------------------------------------------

def test_hand_values_from_the_docstring():
    # sinks 1 + window 2, n = 4: rows see 1, 2, 2 + sink, 2 + sink = 1 + 2 + 3 + 3 = 9
    assert float(M.SinksWindow(1, 2).head_pairs(4)) == 9
    # dilated (4, 2), heads 0 and 1, n = 6: head 0: q0 1, q2 2, q4 1 -> 4; head 1: q1 1, q3 2, q5 1 -> 4
    d = M.Dilated(((4, 2),))
    assert float(d.head_pairs(6, heads=2)) == 8
    assert float(d.pairs(6)) == 4  # default heads = lcm of the rates = 2


def test_deepseek_v32_topk_at_128k():
    # sum_{i<131072} min(i+1, 2048) = 2048*2049/2 + (131072 - 2048)*2048 = 2,098,176 + 264,241,152
    assert 2048 * 2049 // 2 + (131072 - 2048) * 2048 == 266_339_328
    assert float(M.TopK(2048).head_pairs(131072)) == 266_339_328
    # the cache keeps every token: the indexer ranks all of them
    assert float(M.TopK(2048).kv_tokens(131072)) == 131072
    # gather kernels compute the selected keys only
    assert float(M.TopK(2048).tiled_head_pairs(131072)) == 266_339_328


def test_streaming_llm_constant_kv():
    # StreamingLLM's 4 sinks + 1020 recent tokens: the cache never exceeds 1024 tokens
    m = M.SinksWindow(4, 1020)
    assert M.parse_mask("sinks:4+window:1020") == m
    assert m.kv_tokens(np.array([10, 1024, 1 << 20])).tolist() == [10, 1024, 1024]
    # decode at context 1M: the new query sees 1020 window keys + 4 sinks
    assert float(m.head_pairs(1, prefix=1 << 20)) == 1024


def test_longnet_large_n_per_head():
    # one pattern (w=2048, r=4), n = 8 segments: per head, each segment holds 512 offset rows
    # of its head, attending 1..512 keys: 512*513/2 = 131,328 per segment -> x8 = 1,050,624
    d = M.Dilated(((2048, 4),))
    assert float(d.head_pairs(8 * 2048, heads=4)) == 4 * 8 * 512 * 513 / 2
    assert float(d.pairs(8 * 2048, heads=4)) == 1_050_624
    # the gathered form: each (segment, offset) group is a causal attention of 512 tokens; with
    # 128 x 128 tiles: 4*5/2 = 10 live tiles of 128*128 -> 163,840 per group, 8 groups per head
    assert float(d.tiled_head_pairs(8 * 2048, heads=4)) == 4 * 8 * 10 * 128 * 128
    # the cache keeps the current segment of the longest pattern
    assert float(M.Dilated(((2048, 1), (4096, 2))).kv_tokens(1 << 20)) == 4096


def test_bigbird_hand_values():
    # block 2, window 3 (one earlier block + its own), 1 global block, 1 random, n = 8 (blocks 0-3)
    # block 0 (global rows): 1 + 2 = 3
    # block 1: keys of block 0 (global = also window) 2 + own 1, 2 -> 3 + 4 = 7
    # block 2: global 2 + window from block 1: (2 + 1) + (2 + 2) -> 2*2 + 3 + 4 = 11; no eligible
    #          random block (eligible: 1 <= kb < 2 - 1 = 1: none)
    # block 3: global 2, window blocks 2..3: 3, 4; eligible random {1}: +2 each -> 2*(2 + 2) + 3 + 4 = 15
    bb = M.BigBird(block=2, window=3, global_blocks=1, random=1)
    assert float(bb.head_pairs(8)) == 3 + 7 + 11 + 15
    assert float(bb.kv_tokens(8)) == 8


def test_infini_segment():
    # segments of 2048: within-segment causal pairs; one segment's KV reserved
    m = M.Infini(2048)
    assert float(m.head_pairs(8192)) == 4 * 2048 * 2049 / 2
    assert float(m.kv_tokens(1 << 20)) == 2048


# ------------------------------------------------------------------------------------------------
# Enumeration
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("s,w", [(0, 1), (0, 3), (1, 1), (1, 2), (2, 3), (4, 2), (3, 7)])
def test_sinks_equal_enumeration(s, w):
    for cls in (M.SinksWindow, M.Longformer):
        m = cls(s, w)
        for p in (0, 1, 5, 9):
            for n in range(1, 18):
                expect = brute(lambda i, j, h: allowed_sinks(i, j, s, w), n, p)
                assert float(m.head_pairs(n, p)) == expect, (cls, s, w, n, p)
        for n in range(1, 20):
            # reserve: keys the last of n tokens sees (constant once n > S + W)
            assert float(m.kv_tokens(n)) == sum(allowed_sinks(n - 1, j, s, w) for j in range(n))


@pytest.mark.parametrize("s,w", [(0, 2), (1, 1), (2, 3), (3, 7), (5, 2)])
def test_sinks_tiled_equal_enumeration(s, w):
    m = M.SinksWindow(s, w)
    for p in (0, 3):
        for n in (1, 2, 5, 9, 14):
            for bq, bk in TILES:
                expect = brute_tiled(lambda i, j, h: allowed_sinks(i, j, s, w), n, p, bq, bk)
                assert float(m.tiled_head_pairs(n, p, tile=(bq, bk))) == expect, (s, w, n, p, bq, bk)


DILATED = [((4, 2),), ((3, 1),), ((4, 1), (8, 2)), ((6, 3), (4, 4)), ((5, 2), (2, 2), (9, 3))]


@pytest.mark.parametrize("patterns", DILATED)
def test_dilated_equal_enumeration(patterns):
    m = M.Dilated(patterns)
    for heads in (1, 2, 3, 4, 6):
        for p in (0, 2, 7):
            for n in range(1, 20):
                expect = brute(lambda i, j, h: allowed_dilated(i, j, h, patterns), n, p, heads)
                assert float(m.head_pairs(n, p, heads)) == expect, (patterns, heads, n, p)


@pytest.mark.parametrize("patterns", DILATED)
def test_dilated_tiled_is_the_gathered_form(patterns):
    # gathered form, spelled out: for each head, pattern, segment and offset, the group's
    # positions form a dense causal attention; tiles over the gathered indices, from index 0
    def gathered(n, p, heads, bq, bk):
        total = 0
        for h in range(heads):
            for w, r in patterns:
                s = h % r
                for seg in range(0, p + n, w):
                    pos = list(range(seg + s, min(seg + w, p + n), r))  # the group, gathered
                    new = [t for t, x in enumerate(pos) if x >= p]  # its new queries
                    # query tiles start at the first new query (as for any cached prefix)
                    for q0 in range(0, len(new), bq):
                        rows = new[q0:q0 + bq]
                        for k0 in range(0, len(pos), bk):
                            if any(t2 <= t1 for t1 in rows for t2 in range(k0, min(k0 + bk, len(pos)))):
                                total += len(rows) * len(range(k0, min(k0 + bk, len(pos))))
        return total

    m = M.Dilated(patterns)
    for heads in (1, 3, 4):
        for p in (0, 5):
            for n in (1, 4, 11, 19):
                for bq, bk in [(1, 1), (2, 2), (3, 2), (8, 8)]:
                    assert float(m.tiled_head_pairs(n, p, heads, (bq, bk))) == gathered(n, p, heads, bq, bk), \
                        (patterns, heads, n, p, bq, bk)
                # 1 x 1 tiles execute the useful pairs exactly
                assert float(m.tiled_head_pairs(n, p, heads, (1, 1))) == float(m.head_pairs(n, p, heads))


BIGBIRD = [dict(block=2, window=3, global_blocks=1, random=1), dict(block=3, window=1, global_blocks=0, random=2),
           dict(block=2, window=5, global_blocks=2, random=3), dict(block=1, window=3, global_blocks=1, random=2, seed=5),
           dict(block=4, window=3, global_blocks=0, random=0)]


@pytest.mark.parametrize("kw", BIGBIRD)
def test_bigbird_equal_enumeration_whatever_the_draw(kw):
    m = M.BigBird(**kw)
    B, w, g, R = kw["block"], kw["window"], kw["global_blocks"], kw["random"]
    rng = np.random.default_rng(12345)  # an independent draw: the count must not depend on it
    n_blocks = 40 // B + 2
    own = []
    for bi in range(n_blocks):
        eligible = list(range(g, bi - (w - 1) // 2))
        own.append(set(rng.choice(eligible, size=min(R, len(eligible)), replace=False).tolist()) if eligible and bi >= g else set())
    lib = [set(x.tolist()) for x in m.random_blocks(n_blocks)]
    for bi, chosen in enumerate(lib):  # the library's draw obeys the rule
        eligible = set(range(g, bi - (w - 1) // 2)) if bi >= g else set()
        assert chosen <= eligible and len(chosen) == min(R, len(eligible))
    for draw in (own, lib):
        for p in (0, 3, 8):
            for n in (1, 2, 5, 9, 17, 30):
                expect = brute(lambda i, j, h: allowed_bigbird(i, j, B, w, g, draw), n, p)
                assert float(m.head_pairs(n, p)) == expect, (kw, n, p)


@pytest.mark.parametrize("kw", BIGBIRD)
def test_bigbird_tiled_equal_enumeration(kw):
    m = M.BigBird(**kw)
    B, w, g = kw["block"], kw["window"], kw["global_blocks"]
    for p in (0, 5):
        for n in (1, 6, 13, 25):
            lib = [set(x.tolist()) for x in m.random_blocks((p + n) // B + 2)]
            for bq, bk in TILES + [(B, B)]:
                expect = brute_tiled(lambda i, j, h: allowed_bigbird(i, j, B, w, g, lib), n, p, bq, bk)
                assert float(m.tiled_head_pairs(n, p, tile=(bq, bk))) == expect, (kw, n, p, bq, bk)


@pytest.mark.parametrize("k", [1, 2, 5])
def test_topk_equal_enumeration(k):
    # min(i+1, k) keys per query, whichever they are
    for p in (0, 4):
        for n in range(1, 15):
            assert float(M.TopK(k).head_pairs(n, p)) == sum(min(i + 1, k) for i in range(p, p + n))


def test_vectorized_over_n_and_prefix():
    ns, ps = np.array([1, 7, 3, 20]), np.array([0, 3, 9, 1])
    for m in (M.SinksWindow(2, 3), M.Dilated(((4, 2), (8, 4))), M.BigBird(2, 3, 1, 1), M.TopK(4), M.Infini(5)):
        got = m.head_pairs(ns, ps, 4)
        assert got.shape == ns.shape
        assert got.tolist() == [float(m.head_pairs(int(n), int(p), 4)) for n, p in zip(ns, ps)]


def test_old_kinds_are_the_same_objects():
    # the functional API (kind strings) and the Mask objects agree
    for kind, w, m in [("global", None, M.Causal()), ("sliding", 3, M.Sliding(3)), ("chunked", 4, M.Chunked(4)),
                       ("full", None, M.Full())]:
        for n, p in itertools.product((1, 5, 9), (0, 3)):
            assert float(M.attended_pairs(kind, n, p, w)) == float(m.head_pairs(n, p))
            assert float(M.executed_pairs_tiled(kind, n, p, w, (2, 2))) == float(m.tiled_head_pairs(n, p, 1, (2, 2)))


# ------------------------------------------------------------------------------------------------
# Parser
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text,expect", [
    ("sliding:4096", M.Sliding(4096)), ("window:4k", M.Sliding(4096)), ("chunked:8192", M.Chunked(8192)),
    ("causal", M.Causal()), ("full", M.Full()),
    ("sinks:4+window:4096", M.SinksWindow(4, 4096)),
    ("dilated:2048x1,4096x2,8192x4", M.Dilated(((2048, 1), (4096, 2), (8192, 4)))),
    ("bigbird:block=64,window=3,global=2,random=3", M.BigBird(64, 3, 2, 3)),
    ("bigbird:block=64,random=1,seed=7", M.BigBird(64, 3, 2, 1, 7)),
    ("longformer:window=512,global=16", M.Longformer(16, 512)),
    ("topk:2048", M.TopK(2048)), ("infini:segment=2048", M.Infini(2048)),
])
def test_parse_and_text_round_trip(text, expect):
    m = M.parse_mask(text)
    assert m == expect
    assert M.parse_mask(m.text()) == m


@pytest.mark.parametrize("text", [
    "sliding", "sliding:0", "sliding:-3", "sliding:abc", "dilated:2048", "dilated:2048x0", "dilated:4x8",
    "sinks:4", "sinks:x+window:4", "sinks:4+foo:4", "bigbird:window=3", "bigbird:block=64,window=2",
    "bigbird:block=64,colour=3", "bigbird:block=64,block=32", "topk:0", "infini:2048", "infini:segment=0",
    "longformer:global=3", "diagonal", "", "1.5k:3",
])
def test_parse_refuses_with_one_line(text):
    with pytest.raises(LcprofError) as err:
        M.parse_mask(text)
    assert "\n" not in str(err.value) and str(err.value)
