"""Exact counts of attended (query, key) pairs, and of pairs a tiled kernel executes.

Positions: a prefill of ``n`` new tokens after a cached prefix of ``p`` tokens has queries at
positions p .. p+n-1 and keys at positions 0 .. p+n-1 (bottom-right aligned, like FlashAttention
with q_len < k_len). Decode of one token with ``n`` cached tokens is the case n_new=1, p=n.

Mask kinds (query at position i may attend key at position j iff):

    full      any j                                  (bidirectional)
    global    j <= i                                  causal:   n(n+1)/2 pairs for p = 0
    sliding   i - W < j <= i                          W keys at most, itself included
    chunked   j // C == i // C  and  j <= i           Llama-4 style local chunks

    causal, n=4          sliding W=2           chunked C=2
    q0  x . . .          x . . .               x . . .
    q1  x x . .          x x . .               x x . .
    q2  x x x .          . x x .               . . x .
    q3  x x x x          . . x x               . . x x
         10 pairs          7 pairs               6 pairs

All functions broadcast over numpy arrays of n and p and return float64 (exact integers up to
2**53, i.e. any n below ~10**8). No torch.
"""

from __future__ import annotations

import numpy as np

from lcprof.errors import LcprofError

MASK_KINDS = ("full", "global", "sliding", "chunked")


def _check(kind: str, window: int | None) -> None:
    if kind not in MASK_KINDS:
        raise LcprofError(f"unknown mask kind {kind!r}; known: {', '.join(MASK_KINDS)}")
    if kind in ("sliding", "chunked") and (window is None or window <= 0):
        raise LcprofError(f"a {kind} mask needs a positive window, got {window!r}")


def _prefix_pairs(kind: str, window: int | None, m: np.ndarray) -> np.ndarray:
    """Pairs attended by queries at positions 0..m-1 (each seeing keys up to itself)."""
    m = np.asarray(m, dtype=np.float64)
    if kind == "global":
        return m * (m + 1) / 2
    w = float(window)
    if kind == "sliding":
        # sum_{i<m} min(i+1, W)
        inside = m * (m + 1) / 2
        beyond = w * (w + 1) / 2 + (m - w) * w
        return np.where(m <= w, inside, beyond)
    if kind == "chunked":
        # sum_{i<m} (i mod C) + 1 = q*C(C+1)/2 + r(r+1)/2
        q = np.floor(m / w)
        r = m - q * w
        return q * w * (w + 1) / 2 + r * (r + 1) / 2
    raise AssertionError(kind)


def attended_pairs(kind: str, n, prefix=0, window: int | None = None) -> np.ndarray:
    """Useful (unmasked) (query, key) pairs per head for n new tokens after a prefix."""
    _check(kind, window)
    n = np.asarray(n, dtype=np.float64)
    p = np.asarray(prefix, dtype=np.float64)
    if kind == "full":
        return n * (p + n)
    return _prefix_pairs(kind, window, p + n) - _prefix_pairs(kind, window, p)


def kv_tokens_attended(kind: str, n, window: int | None = None) -> np.ndarray:
    """Tokens a layer's cache must reserve for a sequence at context n.

    Global: all n. Sliding window W: min(n, W) (the last token attends W keys). Chunked C:
    min(n, C) -- the current chunk may hold up to C tokens, and a cache sized for a growing
    sequence reserves the whole chunk (as HF's chunked cache and vLLM do); the count never
    shrinks as n grows.
    """
    _check(kind, window)
    n = np.asarray(n, dtype=np.float64)
    if kind in ("full", "global"):
        return n
    return np.minimum(n, float(window))


def executed_pairs_eager(n, prefix=0) -> np.ndarray:
    """Eager attention computes the whole n x (p+n) score rectangle whatever the mask."""
    n = np.asarray(n, dtype=np.float64)
    return n * (np.asarray(prefix, dtype=np.float64) + n)


def _executed_tiled_one(kind: str, n: int, p: int, window: int | None, bq: int, bk: int) -> float:
    k_total = p + n
    starts = np.arange(0, n, bq, dtype=np.int64)  # query tile starts (query index)
    ends = np.minimum(starts + bq, n) - 1  # last query index in the tile
    rows = (ends - starts + 1).astype(np.float64)
    pos_first = p + starts
    pos_last = p + ends
    hi = pos_last.copy() if kind != "full" else np.full_like(pos_last, k_total - 1)
    if kind in ("global", "full"):
        lo = np.zeros_like(pos_first)
    elif kind == "sliding":
        lo = np.maximum(0, pos_first - window + 1)
    else:  # chunked: the union of each row's allowed keys is [chunk start of first row, last row]
        lo = (pos_first // window) * window
    # Every key in [lo, hi] is allowed for some row of the tile, so exactly the key tiles that
    # intersect [lo, hi] hold at least one unmasked pair; a tiled kernel runs each of them whole.
    first_tile = lo // bk
    last_tile = hi // bk
    cols = np.minimum((last_tile + 1) * bk, k_total) - first_tile * bk
    return float(np.sum(rows * cols.astype(np.float64)))


def executed_pairs_tiled(kind: str, n, prefix=0, window: int | None = None,
                         tile: tuple[int, int] = (128, 128)) -> np.ndarray:
    """Pairs a tiled kernel computes: every (tile_q x tile_k) block not fully masked, whole.

    Tiles start at query index 0 and key index 0; edge tiles are clipped to the matrix.
    """
    _check(kind, window)
    bq, bk = int(tile[0]), int(tile[1])
    if bq <= 0 or bk <= 0:
        raise LcprofError(f"tile sizes must be positive, got {tile}")
    n_arr, p_arr = np.broadcast_arrays(np.asarray(n, dtype=np.int64), np.asarray(prefix, dtype=np.int64))
    out = np.empty(n_arr.shape, dtype=np.float64)
    cache: dict[tuple[int, int], float] = {}
    for idx in np.ndindex(n_arr.shape):
        key = (int(n_arr[idx]), int(p_arr[idx]))
        if key not in cache:
            cache[key] = _executed_tiled_one(kind, key[0], key[1], window, bq, bk)
        out[idx] = cache[key]
    return out

