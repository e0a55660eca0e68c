"""The vectorised tiled count (every query tile of every point at once; the per-point count is one
point of it) against enumeration of every tile, and a closed form at 131072 points."""

import numpy as np
import pytest

from lcprof.cost import masks as M


def _brute_tiled(allowed, n, p, bq, bk):
    """Executed pairs by enumeration: every (bq x bk) tile holding an allowed pair, clipped."""
    total = 0
    k_total = p + n
    for q0 in range(0, n, bq):
        for k0 in range(0, k_total, bk):
            rows = range(q0, min(q0 + bq, n))
            cols = range(k0, min(k0 + bk, k_total))
            if any(allowed(p + i, j) for i in rows for j in cols):
                total += len(rows) * len(cols)
    return total


ALLOWED = [
    (M.Causal(), lambda i, j: j <= i),
    (M.Sliding(5), lambda i, j: i - 5 < j <= i),
    (M.Chunked(6), lambda i, j: j <= i and j // 6 == i // 6),
    (M.Full(), lambda i, j: True),
]


@pytest.mark.parametrize("mask,allowed", ALLOWED)
@pytest.mark.parametrize("tile", [(4, 3), (1, 1), (7, 5)])
def test_vectorised_many_random_points_against_enumeration(mask, allowed, tile):
    """Random small points at once (one numpy pass over all their tiles) against enumeration."""
    rng = np.random.default_rng(7)
    n, p = rng.integers(1, 40, 25), rng.integers(0, 40, 25)
    got = mask.tiled_head_pairs(n, p, tile=tile)
    assert list(got) == [_brute_tiled(allowed, int(a), int(b), *tile) for a, b in zip(n, p)]


@pytest.mark.parametrize("mask,allowed", ALLOWED)
def test_vectorised_against_enumeration(mask, allowed):
    pts = [(1, 0), (7, 0), (13, 5), (20, 19), (33, 2)]
    got = mask.tiled_head_pairs(np.array([a for a, _ in pts]), np.array([b for _, b in pts]), tile=(4, 3))
    assert list(got) == [_brute_tiled(allowed, a, b, 4, 3) for a, b in pts]


def test_many_one_token_chunks_by_formula():
    """131072 one-token chunks after prefixes 0..131071, causal, 128 x 128 tiles: the query at
    position p runs key tiles 0..p//128, clipped at p + 1 keys: min(128 (p//128 + 1), p + 1) = p + 1
    columns (the last tile is clipped to the keys that exist), so the sum is n (n + 1) / 2."""
    n = 131072
    got = M.Causal().tiled_head_pairs(np.ones(n, dtype=np.int64), np.arange(n), tile=(128, 128))
    assert got.sum() == n * (n + 1) // 2 == 8_590_000_128


def test_batches_of_points_give_the_same_counts(monkeypatch):
    """Points split into batches of at most _TILE_BATCH query tiles (one point at least) count alike."""
    n, p = np.array([1000, 1, 129, 4096, 5]), np.array([0, 77, 3000, 10, 4095])
    whole = M.Sliding(700).tiled_head_pairs(n, p)
    monkeypatch.setattr(M, "_TILE_BATCH", 3)  # fewer tiles than one point holds: one point per batch
    assert np.array_equal(M.Sliding(700).tiled_head_pairs(n, p), whole)
