"""Exact attention-mask counts: closed forms vs explicit enumeration, and hand-computed values.

Convention under test (lcprof/cost/masks.py docstring): n new queries after a cached prefix p sit
at positions p .. p+n-1; keys at positions 0 .. p+n-1. Query at position i may attend key j iff

    full     any j
    global   j <= i
    sliding  i - W < j <= i
    chunked  j // C == i // C and j <= i

Tiled kernels: query tiles start at query index 0, key tiles at key index 0, edge tiles clipped;
a tile with at least one allowed pair is executed whole.

The reference counts below are written independently of the library: a plain double loop.
"""

from __future__ import annotations

import numpy as np
import pytest

from lcprof.cost import masks
from lcprof.errors import LcprofError

KIND_WINDOWS = (
    [("full", None), ("global", None)]
    + [("sliding", w) for w in (1, 2, 3, 5, 8)]
    + [("chunked", c) for c in (1, 2, 3, 5, 8)]
)


def allowed(kind: str, i: int, j: int, w: int | None) -> bool:
    """May the query at position i attend the key at position j? (spelled out, not shared code)"""
    if kind == "full":
        return True
    if j > i:
        return False
    if kind == "global":
        return True
    if kind == "sliding":
        return i - w < j
    if kind == "chunked":
        return j // w == i // w
    raise AssertionError(kind)


def allowed_matrix(kind: str, n: int, p: int, w: int | None) -> np.ndarray:
    """(n queries, p+n keys) boolean matrix filled by an explicit double loop."""
    out = np.zeros((n, p + n), dtype=bool)
    for qi in range(n):
        for j in range(p + n):
            out[qi, j] = allowed(kind, p + qi, j, w)
    return out


def brute_pairs(kind: str, n: int, p: int, w: int | None) -> int:
    count = 0
    for qi in range(n):
        for j in range(p + n):
            if allowed(kind, p + qi, j, w):
                count += 1
    return count


def brute_tiled(mat: np.ndarray, bq: int, bk: int) -> int:
    """Sum of clipped areas of tiles holding at least one allowed pair."""
    n, k = mat.shape
    total = 0
    for q0 in range(0, n, bq):
        for k0 in range(0, k, bk):
            block = mat[q0:q0 + bq, k0:k0 + bk]
            if block.any():
                total += block.shape[0] * block.shape[1]
    return total


# ------------------------------------------------------------------------------------------------
# Hand values
# ------------------------------------------------------------------------------------------------

def test_hand_values_n4():
    # causal n=4: 1+2+3+4 = 10
    assert masks.attended_pairs("global", 4) == 10
    # sliding W=2, n=4: min(1,2)+min(2,2)+min(3,2)+min(4,2) = 1+2+2+2 = 7
    assert masks.attended_pairs("sliding", 4, window=2) == 7
    # chunked C=2, n=4: chunk {0,1}: 1+2, chunk {2,3}: 1+2 -> 6
    assert masks.attended_pairs("chunked", 4, window=2) == 6
    # full n=4: 4*4 = 16
    assert masks.attended_pairs("full", 4) == 16


def test_causal_128k_exact():
    # 131072 * 131073 / 2 = 17180000256 / 2 = 8590000128, exactly representable in float64
    assert 131072 * 131073 // 2 == 8_590_000_128
    assert float(masks.attended_pairs("global", 131072)) == 8_590_000_128.0


def test_large_sliding_and_chunked_exact():
    # Mistral: W=4096 at n=32768: W(W+1)/2 + (n-W)*W = 4096*4097/2 + 28672*4096
    #   = 8390656 + 117440512 = 125831168
    assert float(masks.attended_pairs("sliding", 32768, window=4096)) == 125_831_168.0
    # Llama-4 chunks C=8192 at n=131072: 16 full chunks of 8192*8193/2 = 33558528 -> 536936448
    assert float(masks.attended_pairs("chunked", 131072, window=8192)) == 536_936_448.0
    # chunked with a partial last chunk: n = 8192 + 10 -> 33558528 + 10*11/2 = 33558583
    assert float(masks.attended_pairs("chunked", 8202, window=8192)) == 33_558_583.0


def test_hand_prefix_values():
    # 2 new queries after prefix 3 (positions 3, 4), causal: 4 + 5 = 9 keys
    assert masks.attended_pairs("global", 2, prefix=3) == 9
    # same with sliding W=2: 2 + 2 = 4
    assert masks.attended_pairs("sliding", 2, prefix=3, window=2) == 4
    # chunked C=4: position 3 is the 4th token of chunk 0 (4 keys), position 4 starts chunk 1 (1 key)
    assert masks.attended_pairs("chunked", 2, prefix=3, window=4) == 5
    # full: 2 queries x 5 keys = 10
    assert masks.attended_pairs("full", 2, prefix=3) == 10
    # decode of one token with 100 cached tokens: 101 keys (itself included)
    assert masks.attended_pairs("global", 1, prefix=100) == 101


def test_hand_tiled_values():
    # causal n=4, 2x2 tiles: (q0-1,k0-1) live, (q0-1,k2-3) fully masked, (q2-3, k0-1) and
    # (q2-3, k2-3) live -> 3 tiles * 4 = 12 executed pairs (useful 10)
    assert masks.executed_pairs_tiled("global", 4, tile=(2, 2)) == 12
    # causal n=5, 2x2 tiles, edges clipped: q[0,1]: k[0,1] -> 4; q[2,3]: k[0,1], k[2,3] -> 8;
    # q[4]: k[0,1], k[2,3], k[4] -> 1*(2+2+1) = 5; total 17 (useful 15)
    assert masks.executed_pairs_tiled("global", 5, tile=(2, 2)) == 17
    # sliding W=2, n=6, 2x2: q[0,1]: k[0,1] -> 4; q[2,3] (keys 1..3): k[0,1], k[2,3] -> 8;
    # q[4,5] (keys 3..5): k[2,3], k[4,5] -> 8; total 20 (useful 1+2+2+2+2+2 = 11)
    assert masks.executed_pairs_tiled("sliding", 6, window=2, tile=(2, 2)) == 20
    # default tile 128x128, causal n=256: tiles (0,0), (1,0), (1,1) live -> 3 * 128*128 = 49152
    assert masks.executed_pairs_tiled("global", 256) == 49152
    # eager: the whole n x (p+n) rectangle
    assert masks.executed_pairs_eager(4) == 16
    assert masks.executed_pairs_eager(2, prefix=3) == 10


def test_tiled_decode_not_monotone_with_window():
    # Executed (not useful) pairs of a window can shrink as the context grows, because tiles are
    # aligned to key 0. Decode, W=1, tile 128x128:
    #   context 1 (query at position 1, keys 0..1): live key tile [0, 128) clipped to 2 keys -> 2
    #   context 128 (query at 128, keys 0..128): live key tile [128, 256) clipped to 1 key -> 1
    assert masks.executed_pairs_tiled("sliding", 1, prefix=1, window=1) == 2
    assert masks.executed_pairs_tiled("sliding", 1, prefix=128, window=1) == 1
    assert brute_tiled(allowed_matrix("sliding", 1, 1, 1), 128, 128) == 2
    assert brute_tiled(allowed_matrix("sliding", 1, 128, 1), 128, 128) == 1


def test_chunked_decode_drops_at_chunk_start():
    # Useful pairs of a decode step with C=4: the query at position 3 sees keys 0..3 (4 pairs);
    # the query at position 4 starts chunk [4, 7] and sees only itself (1 pair).
    assert masks.attended_pairs("chunked", 1, prefix=3, window=4) == 4
    assert masks.attended_pairs("chunked", 1, prefix=4, window=4) == 1


def test_kv_tokens_hand_values():
    # cache reserve at context 10: causal 10 keys, sliding W=4 -> 4; chunked C=4 -> the last token
    # (position 9, chunk [8, 11]) attends only 8, 9, but the chunk will fill to 4 tokens, so a
    # cache reserves min(n, C) = 4 (never shrinking as n grows); n=3 < C -> 3
    assert masks.kv_tokens_attended("global", 10) == 10
    assert masks.kv_tokens_attended("sliding", 10, window=4) == 4
    assert masks.kv_tokens_attended("chunked", 10, window=4) == 4
    assert masks.kv_tokens_attended("chunked", 8, window=4) == 4
    assert masks.kv_tokens_attended("chunked", 3, window=4) == 3


# ------------------------------------------------------------------------------------------------
# Closed form == enumeration
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind,w", KIND_WINDOWS)
def test_attended_pairs_equal_enumeration(kind, w):
    checked = 0
    for p in (0, 1, 3, 7, 16):
        for n in range(1, 25):
            expect = brute_pairs(kind, n, p, w)
            got = masks.attended_pairs(kind, n, prefix=p, window=w)
            assert float(got) == expect, (kind, w, n, p, float(got), expect)
            checked += 1
    assert checked == 5 * 24


@pytest.mark.parametrize("kind,w", KIND_WINDOWS)
def test_attended_pairs_vectorized_over_n_and_prefix(kind, w):
    ns = np.array([1, 2, 5, 9, 17])
    ps = np.array([0, 4, 1, 9, 2])
    got = masks.attended_pairs(kind, ns, prefix=ps, window=w)
    assert got.shape == ns.shape
    expect = [brute_pairs(kind, int(n), int(p), w) for n, p in zip(ns, ps)]
    assert got.tolist() == expect


@pytest.mark.parametrize("kind,w", KIND_WINDOWS)
def test_kv_tokens_equal_enumeration(kind, w):
    # global/sliding/full: keys the last of n tokens (position n-1, no prefix) may attend.
    # chunked: the most keys any of the n tokens attends (the reserve a growing sequence needs).
    for n in range(1, 30):
        if kind == "chunked":
            expect = max(sum(1 for j in range(n) if allowed(kind, i, j, w)) for i in range(n))
        else:
            expect = sum(1 for j in range(n) if allowed(kind, n - 1, j, w))
        assert float(masks.kv_tokens_attended(kind, n, window=w)) == expect, (kind, w, n)


TILES = [(1, 1), (2, 2), (3, 5), (4, 2), (5, 3), (8, 8), (16, 4), (128, 128)]


@pytest.mark.parametrize("kind,w", KIND_WINDOWS)
def test_executed_tiled_equals_enumeration(kind, w):
    for p in (0, 3, 8):
        for n in (1, 2, 3, 5, 7, 8, 9, 13, 16, 17, 31):
            mat = allowed_matrix(kind, n, p, w)
            for bq, bk in TILES:
                expect = brute_tiled(mat, bq, bk)
                got = masks.executed_pairs_tiled(kind, n, prefix=p, window=w, tile=(bq, bk))
                assert float(got) == expect, (kind, w, n, p, (bq, bk), float(got), expect)


@pytest.mark.parametrize("kind,w", KIND_WINDOWS)
def test_tiled_limits(kind, w):
    for p in (0, 5):
        for n in (1, 4, 11, 20):
            useful = brute_pairs(kind, n, p, w)
            # 1x1 tiles execute exactly the useful pairs
            assert float(masks.executed_pairs_tiled(kind, n, p, w, tile=(1, 1))) == useful
            # one tile covering everything executes the whole rectangle, like eager
            big = masks.executed_pairs_tiled(kind, n, p, w, tile=(64, 64))
            assert float(big) == n * (p + n) == float(masks.executed_pairs_eager(n, p))


def test_tiled_vectorized_over_n():
    ns = np.array([5, 17, 5, 300])
    got = masks.executed_pairs_tiled("sliding", ns, prefix=0, window=3, tile=(4, 4))
    expect = [brute_tiled(allowed_matrix("sliding", int(n), 0, 3), 4, 4) for n in ns]
    assert got.tolist() == expect


def test_bad_mask_arguments():
    with pytest.raises(LcprofError):
        masks.attended_pairs("sliding", 4)  # window missing
    with pytest.raises(LcprofError):
        masks.attended_pairs("chunked", 4, window=0)
    with pytest.raises(LcprofError):
        masks.attended_pairs("diagonal", 4)
    with pytest.raises(LcprofError):
        masks.executed_pairs_tiled("global", 4, tile=(0, 4))
