"""Exact counts of attended (query, key) pairs, of pairs a tiled kernel executes, and of the KV a
mask makes a cache reserve -- for the masks models use and for the seed papers' what-ifs.

Positions: a prefill of ``n`` new tokens after a cached prefix of ``p`` tokens has queries at
positions p .. p+n-1 and keys at positions 0 .. p+n-1 (bottom-right aligned, like FlashAttention
with q_len < k_len). Decode of one token with ``n`` cached tokens is the case n_new=1, p=n. Every
mask except ``full`` is causal: the query at position i never sees a key j > i.

Mask kinds (the query at position i, in head h, may attend the key at position j iff j <= i and):

    full       any j (no causality)                         bidirectional
    global     always                                        causal: n(n+1)/2 pairs for p = 0
    sliding W  i - W < j                                     W keys at most, itself included
    chunked C  j // C == i // C                              Llama-4 local chunks
    sinks S + window W (StreamingLLM)   j < S  or  i - W < j             constant KV: S + W
    longformer window W, global G       j < G  or  i - W < j             (causal: = sinks G + W)
    dilated (w_1 x r_1, ..., w_k x r_k) (LongNet) for some pattern (w, r): i // w == j // w and
               (i mod w) mod r == (j mod w) mod r == h mod r  (head h's offset in that pattern)
    bigbird B, window w, global g, random R (block-sparse; blocks of B tokens, bi = i // B):
               bi < g (global query rows), or j // B < g (global key blocks), or
               j // B >= bi - (w - 1) // 2 (the causal half of the w-block window), or
               j // B is one of the random blocks of row bi
    topk k     j is one of the k keys the indexer ranks highest among 0..i: min(i+1, k) keys
    infini S   j // S == i // S (one segment's softmax attention) + a compressive memory per head

    causal, n=4     sliding W=2     chunked C=2     sinks 1 + window 2
    q0  x . . .     x . . .         x . . .         x . . .
    q1  x x . .     x x . .         x x . .         x x . .
    q2  x x x .     . x x .         . . x .         x x x .
    q3  x x x x     . . x x         . . x x         x . x x
      10 pairs        7 pairs         6 pairs         9 pairs

    dilated (w=4, r=2), head 0 (offset 0) / head 1 (offset 1), n = 6
    q0  x . . . . .   . . . . . .        q4 and q5 start the second segment;
    q1  . . . . . .   . x . . . .        each head sees only its offset's rows
    q2  x . x . . .   . . . . . .        (LongNet: "s_j = j mod r")
    q3  . . . . . .   . x . x . .
    q4  . . . . x .   . . . . . .        3 + 0 + ... : 4 pairs per head (8 in all)
    q5  . . . . . .   . . . . . x

Counting conventions (each kind's docstring says more):
  * dilated pairs are summed over the patterns (each pattern is a separate attention whose
    outputs LongNet mixes: a pair two patterns share is computed twice) and over heads
    (``heads`` query heads; head h uses offset h mod r). Per head is that total / heads.
  * bigbird's random blocks: ``min(R, eligible)`` per query-block row, drawn without replacement
    from the eligible earlier blocks (not global, not in the window) by ``numpy.random.
    default_rng(seed)`` row after row. The *useful* count does not depend on which blocks are
    drawn (every random block lies wholly before its row, so each adds B keys to each row); the
    tiled count does when tiles do not align with blocks, and uses the seeded draw.
  * topk: the useful count is exact (min(i+1, k) per query); which keys is data-dependent, so a
    tiled count is the useful one (gather kernels -- FlashMLA's sparse kernels -- compute the
    selected keys only).
  * KV reserved (``kv_tokens``): what a cache must hold at context n so that every later query
    still finds its keys: n for global, bigbird (a later row may draw any earlier block), topk
    and dilated with a segment longer than n; min(n, W) sliding; min(n, C) chunked (the current
    chunk fills to C); min(n, S + W) sinks/longformer; min(n, max w) dilated; min(n, S) infini
    (plus its memory, counted as state by :mod:`lcprof.cost.kinds`).

All counts broadcast over numpy arrays of n and p and return float64 (exact integers up to 2**53,
i.e. any n below ~10**8). ``parse_mask`` reads the ``--mask`` strings. No torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar

import numpy as np

from lcprof.errors import LcprofError

MASK_KINDS = ("full", "global", "sliding", "chunked")


# ----------------------------------------------------------------------------------------------
# Closed-form prefix sums: pairs attended by queries at positions 0..m-1
# ----------------------------------------------------------------------------------------------

def _f(m) -> np.ndarray:
    return np.asarray(m, dtype=np.float64)


def _window_prefix(w: float, m: np.ndarray) -> np.ndarray:
    """sum_{i<m} min(i+1, W) (0 for m <= 0)."""
    m = np.maximum(_f(m), 0.0)
    inside = m * (m + 1) / 2
    beyond = w * (w + 1) / 2 + (m - w) * w
    return np.where(m <= w, inside, beyond)


def _chunk_prefix(c: float, m: np.ndarray) -> np.ndarray:
    """sum_{i<m} (i mod C) + 1 = q*C(C+1)/2 + r(r+1)/2."""
    m = _f(m)
    q = np.floor(m / c)
    r = m - q * c
    return q * c * (c + 1) / 2 + r * (r + 1) / 2


def _causal_prefix(m: np.ndarray) -> np.ndarray:
    m = _f(m)
    return m * (m + 1) / 2


def _sinks_prefix(s: float, w: float, m: np.ndarray) -> np.ndarray:
    """Queries 0..m-1 under sinks S + window W: each attends min(i+1, W) window keys plus
    min(S, max(0, i+1-W)) sinks the window does not cover; the second sum is the window sum
    with S in place of W over the m - W queries past the first W."""
    m = _f(m)
    return _window_prefix(w, m) + _window_prefix(s, m - w)


def _dilated_pattern_prefix(w: int, r: int, heads: int, m: np.ndarray) -> np.ndarray:
    """Sum over heads and queries 0..m-1 of one LongNet pattern (w, r).

    A query at in-segment position a (a = i mod w) matches the heads with h mod r == a mod r and,
    for each, attends the floor(a / r) + 1 keys b <= a of its segment with b = a (mod r). Summed
    over a < x: with K = x // r complete rounds of r offsets (every head matches exactly one offset
    per round: heads * K(K+1)/2) plus the partial round (K + 1 keys for each head whose offset is
    below x mod r: (heads // r) * (x mod r) + min(heads mod r, x mod r) heads).
    """
    m = _f(m)

    def partial(x):
        k = np.floor(x / r)
        sr = x - k * r
        matched = (heads // r) * sr + np.minimum(heads % r, sr)
        return heads * k * (k + 1) / 2 + (k + 1) * matched

    q = np.floor(m / w)
    return q * partial(float(w)) + partial(m - q * w)


# ----------------------------------------------------------------------------------------------
# Tiled kernels: every tile holding an allowed pair is executed whole
# ----------------------------------------------------------------------------------------------

def _tile_cols(first_tile, last_tile, bk: int, k_total) -> np.ndarray:
    """Columns of key tiles first..last (edge tile clipped at k_total)."""
    return np.minimum((last_tile + 1) * bk, k_total) - first_tile * bk


def _query_tiles(n: int, p: int, bq: int):
    starts = np.arange(0, n, bq, dtype=np.int64)  # query tile starts (query index)
    ends = np.minimum(starts + bq, n) - 1  # last query index in the tile
    rows = (ends - starts + 1).astype(np.float64)
    return rows, p + starts, p + ends  # rows, first and last query position


def _interval_tiled(kind: str, n: int, p: int, window: int | None, bq: int, bk: int) -> float:
    """Masks whose rows allow one interval [lo(i), i] that moves right with i (global, full,
    sliding, chunked): the union over a tile's rows is [lo(first row), last row], and exactly the
    key tiles meeting it hold an allowed pair. One point of :func:`_interval_tiled_many`."""
    return float(_interval_tiled_many(kind, np.array([n]), np.array([p]), window, bq, bk)[0])


#: Query tiles evaluated per vectorised batch (bounds the temporary arrays to a few tens of MB).
_TILE_BATCH = 1 << 21


def _interval_tiled_many(kind: str, n, p, window: int | None, bq: int, bk: int) -> np.ndarray:
    """:func:`_interval_tiled` over 1-d integer arrays of points at once: every query tile of every
    point laid end to end (``np.repeat``), its executed pairs summed per point (``np.bincount``).
    The same integers as the per-point loop, in a few numpy passes instead of one call per point."""
    n = np.asarray(n, dtype=np.int64)
    p = np.asarray(p, dtype=np.int64)
    out = np.zeros(n.shape, dtype=np.float64)
    tiles = -(-n // bq)  # query tiles per point
    start = 0
    while start < n.size:  # batches of points holding at most _TILE_BATCH tiles (one point at least)
        csum = np.cumsum(tiles[start:])
        stop = start + max(1, int(np.searchsorted(csum, _TILE_BATCH, side="right")))
        nb, pb, tb = n[start:stop], p[start:stop], tiles[start:stop]
        point = np.repeat(np.arange(nb.size), tb)
        first = np.repeat(np.cumsum(tb) - tb, tb)
        q0 = (np.arange(point.size, dtype=np.int64) - first) * bq  # query index where each tile starts
        q1 = np.minimum(q0 + bq, nb[point]) - 1
        rows = (q1 - q0 + 1).astype(np.float64)
        pos_first, pos_last = pb[point] + q0, pb[point] + q1
        k_total = pb[point] + nb[point]
        hi = pos_last if kind != "full" else k_total - 1
        if kind in ("global", "full"):
            lo = np.zeros_like(pos_first)
        elif kind == "sliding":
            lo = np.maximum(0, pos_first - window + 1)
        else:  # chunked
            lo = (pos_first // window) * window
        cols = _tile_cols(lo // bk, hi // bk, bk, k_total).astype(np.float64)
        out[start:stop] = np.bincount(point, weights=rows * cols, minlength=nb.size)
        start = stop
    return out


def _sinks_tiled(sinks: int, window: int, n: int, p: int, bq: int, bk: int) -> float:
    """Rows allow [0, S) and [i - W + 1, i]: a tile's union is [0, S) plus the window span of
    its rows; key tiles meeting either run (counted once where the two overlap)."""
    k_total = p + n
    rows, pos_first, pos_last = _query_tiles(n, p, bq)
    lo = np.maximum(0, pos_first - window + 1)
    w_first, w_last = lo // bk, pos_last // bk
    cols = _tile_cols(w_first, w_last, bk, k_total).astype(np.float64)
    s_hi = np.minimum(sinks, pos_last + 1) - 1  # last sink key any row of the tile sees
    s_last = s_hi // bk
    # sink tiles 0..s_last that lie before the window's first tile
    extra_last = np.minimum(s_last, w_first - 1)
    has = extra_last >= 0
    extra = np.where(has, _tile_cols(np.zeros_like(extra_last), np.maximum(extra_last, 0), bk, k_total), 0)
    return float(np.sum(rows * (cols + extra)))


def _broadcast_eval(fn, n, prefix) -> np.ndarray:
    """fn(n, p) -> float evaluated elementwise (cached) over broadcast integer arrays."""
    n_arr, p_arr = np.broadcast_arrays(np.asarray(n, dtype=np.int64), np.asarray(prefix, dtype=np.int64))
    out = np.empty(n_arr.shape, dtype=np.float64)
    cache: dict[tuple[int, int], float] = {}
    for idx in np.ndindex(n_arr.shape):
        key = (int(n_arr[idx]), int(p_arr[idx]))
        if key not in cache:
            cache[key] = fn(*key)
        out[idx] = cache[key]
    return out


def _check_tile(tile) -> tuple[int, int]:
    bq, bk = int(tile[0]), int(tile[1])
    if bq <= 0 or bk <= 0:
        raise LcprofError(f"tile sizes must be positive, got {tile}")
    return bq, bk


# ----------------------------------------------------------------------------------------------
# Mask specs
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Mask:
    """A causal attention mask: counts of attended pairs, tiled pairs and reserved KV.

    Subclasses define ``_prefix(m, heads)`` -- pairs summed over ``heads`` heads for queries
    0..m-1 -- or override ``head_pairs``; ``kv_tokens``; ``_tiled_one`` for the tiled count.
    """

    kind: ClassVar[str] = ""
    #: True when the reserved KV stops growing with n (StreamingLLM's point)
    bounded_kv: ClassVar[bool] = False

    def head_pairs(self, n, prefix=0, heads: int = 1) -> np.ndarray:
        """(query, key) pairs summed over ``heads`` query heads, n new tokens after ``prefix``."""
        heads = _positive(heads, "heads")
        p = _f(prefix)
        return self._prefix(p + _f(n), heads) - self._prefix(p, heads)

    def pairs(self, n, prefix=0, heads: int | None = None) -> np.ndarray:
        """Pairs per head: ``head_pairs / heads`` (head-independent masks: any ``heads``)."""
        h = self.default_heads if heads is None else heads
        return self.head_pairs(n, prefix, h) / h

    @property
    def default_heads(self) -> int:
        return 1

    def kv_tokens(self, n) -> np.ndarray:
        """Tokens a cache must reserve per KV head at context n (see the module docstring)."""
        return _f(n)

    def tiled_head_pairs(self, n, prefix=0, heads: int = 1, tile: tuple[int, int] = (128, 128)) -> np.ndarray:
        """Pairs a tiled kernel computes, summed over heads: every (tile_q x tile_k) block that
        holds an allowed pair, whole. Tiles start at query index 0 and key index 0; edge tiles are
        clipped to the matrix."""
        bq, bk = _check_tile(tile)
        heads = _positive(heads, "heads")
        if self._interval is not None:  # one interval per row: every point in a few numpy passes
            n_arr, p_arr = np.broadcast_arrays(np.asarray(n, dtype=np.int64), np.asarray(prefix, dtype=np.int64))
            keys, inverse = np.unique(np.stack([n_arr.ravel(), p_arr.ravel()]), axis=1, return_inverse=True)
            kind, window = self._interval
            vals = _interval_tiled_many(kind, keys[0], keys[1], window, bq, bk)
            return heads * vals[np.asarray(inverse).ravel()].reshape(n_arr.shape)
        return heads * _broadcast_eval(lambda n1, p1: self._tiled_one(n1, p1, bq, bk), n, prefix)

    @property
    def _interval(self) -> tuple[str, int | None] | None:
        """(kind, window) when every row allows one interval ending at the row (_interval_tiled)."""
        return None

    def _tiled_one(self, n: int, p: int, bq: int, bk: int) -> float:
        """Executed pairs of one point; interval masks count by their interval, the others override."""
        if self._interval is None:  # pragma: no cover - every other mask overrides this
            raise NotImplementedError
        kind, window = self._interval
        return _interval_tiled(kind, n, p, window, bq, bk)

    def _prefix(self, m, heads: int):  # pragma: no cover - abstract
        raise NotImplementedError

    def text(self) -> str:
        """The ``--mask`` string that parses back to this mask."""
        raise NotImplementedError  # pragma: no cover

    def describe(self) -> str:
        return self.text()


def _positive(v, what: str) -> int:
    if isinstance(v, bool) or int(v) != v or int(v) <= 0:
        raise LcprofError(f"{what} must be a positive integer, got {v!r}")
    return int(v)


@dataclass(frozen=True)
class Full(Mask):
    """Bidirectional: every query attends every key (n x (p+n) pairs)."""

    kind: ClassVar[str] = "full"

    def head_pairs(self, n, prefix=0, heads: int = 1) -> np.ndarray:
        heads = _positive(heads, "heads")
        return heads * _f(n) * (_f(prefix) + _f(n))

    @property
    def _interval(self):
        return "full", None

    def text(self):
        return "full"


@dataclass(frozen=True)
class Causal(Mask):
    """Query i attends keys 0..i."""

    kind: ClassVar[str] = "global"

    def _prefix(self, m, heads):
        return heads * _causal_prefix(m)

    @property
    def _interval(self):
        return "global", None

    def text(self):
        return "causal"


@dataclass(frozen=True)
class Sliding(Mask):
    """Query i attends i - W < j <= i: W keys, itself included."""

    window: int
    kind: ClassVar[str] = "sliding"
    bounded_kv: ClassVar[bool] = True

    def __post_init__(self):
        _positive(self.window, "a sliding window")

    def _prefix(self, m, heads):
        return heads * _window_prefix(float(self.window), m)

    def kv_tokens(self, n):
        return np.minimum(_f(n), float(self.window))

    @property
    def _interval(self):
        return "sliding", self.window

    def text(self):
        return f"sliding:{self.window}"


@dataclass(frozen=True)
class Chunked(Mask):
    """Query i attends keys of its own chunk of C up to itself (Llama 4)."""

    chunk: int
    kind: ClassVar[str] = "chunked"
    bounded_kv: ClassVar[bool] = True

    def __post_init__(self):
        _positive(self.chunk, "a chunk size")

    def _prefix(self, m, heads):
        return heads * _chunk_prefix(float(self.chunk), m)

    def kv_tokens(self, n):
        return np.minimum(_f(n), float(self.chunk))

    @property
    def _interval(self):
        return "chunked", self.chunk

    def text(self):
        return f"chunked:{self.chunk}"


@dataclass(frozen=True)
class SinksWindow(Mask):
    """StreamingLLM: the first S tokens (attention sinks) plus a window of the last W.

    Query i attends j < S or i - W < j (j <= i): min(i+1, W) + min(S, max(0, i+1-W)) keys. The
    cache holds the S sinks and the W most recent tokens: min(n, S + W), constant in n.
    """

    sinks: int
    window: int
    kind: ClassVar[str] = "sinks"
    bounded_kv: ClassVar[bool] = True

    def __post_init__(self):
        if isinstance(self.sinks, bool) or int(self.sinks) != self.sinks or self.sinks < 0:
            raise LcprofError(f"sink (global) tokens must be a whole number >= 0, got {self.sinks!r}")
        _positive(self.window, "a window")

    def _prefix(self, m, heads):
        return heads * _sinks_prefix(float(self.sinks), float(self.window), m)

    def kv_tokens(self, n):
        return np.minimum(_f(n), float(self.sinks + self.window))

    def _tiled_one(self, n, p, bq, bk):
        return _sinks_tiled(self.sinks, self.window, n, p, bq, bk)

    def text(self):
        return f"sinks:{self.sinks}+window:{self.window}"


@dataclass(frozen=True)
class Longformer(SinksWindow):
    """Longformer: a causal sliding window W plus G global tokens at the start of the sequence.

    Global tokens attend every earlier key and every query attends them. Under a causal mask a
    global token at position g < G can only attend keys 0..g, which it does anyway, so the count
    equals StreamingLLM's sinks G + window W (the two differ only in Longformer's bidirectional
    encoder form, which lcprof does not count). The window is one-sided as in Longformer's
    autoregressive language model.
    """

    kind: ClassVar[str] = "longformer"

    def text(self):
        return f"longformer:window={self.window},global={self.sinks}"


@dataclass(frozen=True)
class Dilated(Mask):
    """LongNet dilated attention: patterns (w_i, r_i) -- segments of w_i tokens, every r_i-th
    position of each segment, causal within the segment; head h uses offset h mod r_i. Pairs are
    summed over patterns (each is its own attention, mixed by LongNet afterwards) and heads.

    Per head on average (heads a multiple of r): sum over queries of (floor((i mod w)/r) + 1)/r,
    i.e. about n w / (2 r^2) per pattern for n >> w. The tiled count is the gathered form
    LongNet's implementation runs: each (segment, offset) group gathered into a dense causal
    attention of its length, tiled from index 0.
    """

    patterns: tuple[tuple[int, int], ...]
    kind: ClassVar[str] = "dilated"

    def __post_init__(self):
        if not self.patterns:
            raise LcprofError("a dilated mask needs at least one segment x rate pattern")
        for w, r in self.patterns:
            _positive(w, "a dilated segment length")
            _positive(r, "a dilation rate")
            if r > w:
                raise LcprofError(f"dilation rate {r} is larger than its segment length {w}")

    @property
    def default_heads(self) -> int:
        """Every offset of every pattern once: the lcm of the rates."""
        return math.lcm(*(r for _, r in self.patterns))

    def _prefix(self, m, heads):
        return sum(_dilated_pattern_prefix(w, r, heads, m) for w, r in self.patterns)

    def kv_tokens(self, n):
        return np.minimum(_f(n), float(max(w for w, _ in self.patterns)))

    def tiled_head_pairs(self, n, prefix=0, heads: int = 1, tile=(128, 128)):
        bq, bk = _check_tile(tile)
        heads = _positive(heads, "heads")
        return _broadcast_eval(lambda n1, p1: self._tiled_heads(n1, p1, heads, bq, bk), n, prefix)

    def _tiled_heads(self, n: int, p: int, heads: int, bq: int, bk: int) -> float:
        total = 0.0
        end = p + n
        for w, r in self.patterns:
            for s in range(min(r, heads)):
                count = (heads - 1 - s) // r + 1  # heads with offset s
                for seg_start in range((p // w) * w, end, w):
                    seg_end = min(seg_start + w, end)
                    length = _offset_count(seg_start, seg_end, s, r)  # gathered length so far
                    before = _offset_count(seg_start, max(seg_start, p), s, r)  # already cached
                    if length > before:
                        total += count * _gathered_causal_tiled(length - before, before, bq, bk)
        return total

    def text(self):
        return "dilated:" + ",".join(f"{w}x{r}" for w, r in self.patterns)


def _offset_count(seg_start: int, stop: int, s: int, r: int) -> int:
    """Positions seg_start + s + r t below ``stop``."""
    span = stop - seg_start - s
    return 0 if span <= 0 else (span - 1) // r + 1


@lru_cache(maxsize=4096)
def _gathered_causal_tiled(n: int, p: int, bq: int, bk: int) -> float:
    return _interval_tiled("global", n, p, None, bq, bk)


@dataclass(frozen=True)
class BigBird(Mask):
    """BigBird's block-sparse pattern, causal: blocks of B tokens; ``window`` blocks centred on
    the query's block (its causal half: (w - 1) // 2 earlier blocks and its own, keys <= i);
    ``global_blocks`` first blocks that every query attends and whose queries attend everything
    before them; ``random`` earlier blocks per query-block row (see the module docstring for the
    draw). The cache keeps every token (a later row may draw any block): kv_tokens = n.
    """

    block: int
    window: int = 3
    global_blocks: int = 2
    random: int = 3
    seed: int = 0
    kind: ClassVar[str] = "bigbird"

    def __post_init__(self):
        _positive(self.block, "a BigBird block size")
        _positive(self.window, "BigBird window blocks")
        if self.window % 2 == 0:
            raise LcprofError(f"BigBird window blocks must be odd (centred on the query block), got {self.window}")
        for nm in ("global_blocks", "random", "seed"):
            v = getattr(self, nm)
            if isinstance(v, bool) or int(v) != v or v < 0:
                raise LcprofError(f"BigBird {nm.replace('_', ' ')} must be a whole number >= 0, got {v!r}")

    @property
    def _left(self) -> int:
        return (self.window - 1) // 2

    def _row_blocks(self, bi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(first window block, random blocks) of query-block rows bi (global rows excluded)."""
        g = self.global_blocks
        lo = np.maximum(g, bi - self._left)
        eligible = np.maximum(0, bi - self._left - g)
        return lo, np.minimum(self.random, eligible)

    def _prefix(self, m, heads):
        return heads * _broadcast_eval(lambda m1, _p: self._prefix_one(m1), m, 0)

    def _prefix_one(self, m: int) -> float:
        if m <= 0:
            return 0.0
        B, g = self.block, self.global_blocks
        nb_full, rem = divmod(m, B)
        total = 0.0
        # rows of global query blocks (bi < g) attend all earlier keys: causal
        glob_rows = min(m, g * B)
        total += glob_rows * (glob_rows + 1) / 2
        bi = np.arange(g, nb_full + (1 if rem else 0), dtype=np.float64)
        if bi.size:
            rows = np.full(bi.shape, float(B))
            if rem:
                rows[-1] = rem
            lo, rnd = self._row_blocks(bi)
            # row t of block bi: g*B global keys + (bi - lo)*B + t + 1 window keys + rnd*B random
            per_block = rows * (g * B + (bi - lo) * B + rnd * B) + rows * (rows + 1) / 2
            total += float(np.sum(per_block))
        return total

    def head_pairs(self, n, prefix=0, heads: int = 1):
        heads = _positive(heads, "heads")
        p = _f(prefix)
        return self._prefix(p + _f(n), heads) - self._prefix(p, heads)

    def random_blocks(self, n_blocks: int) -> list[np.ndarray]:
        """The random key blocks of each query-block row 0..n_blocks-1 (seeded, see docstring)."""
        return _bigbird_draw(self.block, self.window, self.global_blocks, self.random, self.seed, int(n_blocks))

    def _tiled_one(self, n, p, bq, bk):
        B, g = self.block, self.global_blocks
        k_total = p + n
        n_blocks = -(-k_total // B)
        draws = self.random_blocks(n_blocks)
        total = 0.0
        for q0 in range(0, n, bq):
            q1 = min(q0 + bq, n) - 1
            first, last = p + q0, p + q1
            tiles: set[int] = set()
            # global key blocks (every row) and global rows (keys 0..i, i < g*B): together the
            # keys [0, min(g*B, last+1))
            glob_hi = min(g * B, last + 1) - 1
            if glob_hi >= 0:
                tiles.update(range(0, glob_hi // bk + 1))
            b_first = max(first // B, g)
            if b_first * B <= last:
                lo, _ = self._row_blocks(np.array([float(b_first)]))
                tiles.update(range(int(lo[0]) * B // bk, last // bk + 1))
                for bi in range(b_first, last // B + 1):
                    for kb in draws[bi]:
                        tiles.update(range(kb * B // bk, (min((kb + 1) * B, k_total) - 1) // bk + 1))
            cols = sum(min((t + 1) * bk, k_total) - t * bk for t in tiles)
            total += (q1 - q0 + 1) * cols
        return float(total)

    def text(self):
        return (f"bigbird:block={self.block},window={self.window},global={self.global_blocks},"
                f"random={self.random}" + (f",seed={self.seed}" if self.seed else ""))


@lru_cache(maxsize=64)
def _bigbird_draw(block: int, window: int, global_blocks: int, random: int, seed: int,
                  n_blocks: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    left = (window - 1) // 2
    out: list[np.ndarray] = []
    for bi in range(n_blocks):
        hi = bi - left  # eligible: global_blocks <= kb < bi - left
        count = hi - global_blocks
        if bi < global_blocks or count <= 0 or random == 0:
            out.append(np.zeros(0, dtype=np.int64))
            continue
        k = min(random, count)
        out.append(np.sort(global_blocks + rng.choice(count, size=k, replace=False)).astype(np.int64))
    return out


@dataclass(frozen=True)
class TopK(Mask):
    """Sparse top-k (DeepSeek Sparse Attention's main attention): each query attends the k keys
    its indexer ranks highest among 0..i, min(i+1, k) keys. The cache keeps every token."""

    k: int
    kind: ClassVar[str] = "topk"

    def __post_init__(self):
        _positive(self.k, "top-k")

    def _prefix(self, m, heads):
        return heads * _window_prefix(float(self.k), m)

    def tiled_head_pairs(self, n, prefix=0, heads: int = 1, tile=(128, 128)):
        _check_tile(tile)
        return self.head_pairs(n, prefix, heads)  # gather kernels compute the selected keys only

    def text(self):
        return f"topk:{self.k}"


@dataclass(frozen=True)
class Infini(Mask):
    """Infini-attention: softmax attention within segments of S tokens (causal) plus a
    compressive memory per head (retrieval and update are counted as the layer kind's memory
    ops and state, :mod:`lcprof.cost.kinds`). The cache keeps one segment: min(n, S)."""

    segment: int
    kind: ClassVar[str] = "infini"
    bounded_kv: ClassVar[bool] = True

    def __post_init__(self):
        _positive(self.segment, "an Infini-attention segment")

    def _prefix(self, m, heads):
        return heads * _chunk_prefix(float(self.segment), m)

    def kv_tokens(self, n):
        return np.minimum(_f(n), float(self.segment))

    @property
    def _interval(self):
        return "chunked", self.segment

    def text(self):
        return f"infini:segment={self.segment}"


# ----------------------------------------------------------------------------------------------
# The --mask grammar
# ----------------------------------------------------------------------------------------------

MASK_FORMS = ("full", "causal", "sliding:W", "chunked:C", "dilated:WxR,WxR,...", "sinks:S+window:W",
              "longformer:window=W,global=G", "bigbird:block=B,window=3,global=2,random=3[,seed=0]",
              "topk:K", "infini:segment=S")


def _tokens(text: str, what: str) -> int:
    from lcprof.units import parse_tokens

    try:
        return parse_tokens(text)
    except LcprofError:
        raise LcprofError(f"{what} {text!r} is not a token count (e.g. 4096 or 4k)") from None


def _whole(text: str, what: str) -> int:
    t = text.strip()
    if not t.isdigit():
        raise LcprofError(f"{what} {text!r} is not a whole number")
    return int(t)


def _keyvals(body: str, mask: str, keys: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in body.split(","):
        k, eq, v = part.partition("=")
        k = k.strip().lower()
        if not eq or k not in keys:
            raise LcprofError(f"mask {mask!r}: expected {', '.join(k + '=...' for k in keys)}; got {part.strip()!r}")
        if k in out:
            raise LcprofError(f"mask {mask!r}: {k} given twice")
        out[k] = v.strip()
    return out


def parse_mask(text: str) -> Mask:
    """A mask from its ``--mask`` string (``MASK_FORMS``); LcprofError naming the forms otherwise."""
    raw = str(text).strip()
    low = raw.lower()
    head, _, body = low.partition(":")
    try:
        if low in ("full", "bidirectional"):
            return Full()
        if low in ("causal", "global"):
            return Causal()
        if head in ("sliding", "window") and body:
            return Sliding(_tokens(body, "sliding window"))
        if head == "chunked" and body:
            return Chunked(_tokens(body, "chunk size"))
        if head == "topk" and body:
            return TopK(_tokens(body, "top-k"))
        if head == "dilated" and body:
            pats = []
            for part in body.split(","):
                w, x, r = part.strip().partition("x")
                if not x:
                    raise LcprofError(f"mask {raw!r}: dilated patterns are segment x rate, e.g. 2048x1,4096x2")
                pats.append((_tokens(w, "dilated segment length"), _whole(r, "dilation rate")))
            return Dilated(tuple(pats))
        if head == "sinks" and body:
            s, plus, rest = body.partition("+")
            wk, colon, w = rest.partition(":")
            if not plus or wk.strip() not in ("window", "sliding") or not colon:
                raise LcprofError(f"mask {raw!r}: write sinks:S+window:W, e.g. sinks:4+window:4096")
            return SinksWindow(_whole(s, "sink tokens"), _tokens(w, "window"))
        if head == "longformer" and body:
            kv = _keyvals(body, raw, ("window", "global"))
            if "window" not in kv:
                raise LcprofError(f"mask {raw!r}: longformer needs window=W")
            return Longformer(_whole(kv.get("global", "0"), "global tokens"), _tokens(kv["window"], "window"))
        if head == "bigbird" and body:
            kv = _keyvals(body, raw, ("block", "window", "global", "random", "seed"))
            if "block" not in kv:
                raise LcprofError(f"mask {raw!r}: bigbird needs block=B")
            return BigBird(block=_tokens(kv["block"], "block size"),
                           window=_whole(kv.get("window", "3"), "window blocks"),
                           global_blocks=_whole(kv.get("global", "2"), "global blocks"),
                           random=_whole(kv.get("random", "3"), "random blocks"),
                           seed=_whole(kv.get("seed", "0"), "seed"))
        if head == "infini" and body:
            kv = _keyvals(body, raw, ("segment",))
            if "segment" not in kv:
                raise LcprofError(f"mask {raw!r}: infini needs segment=S")
            return Infini(_tokens(kv["segment"], "segment"))
    except LcprofError as exc:
        msg = str(exc)
        raise LcprofError(msg if raw in msg else f"mask {raw!r}: {msg}") from None
    raise LcprofError(f"unknown mask {raw!r}; accepted: {'; '.join(MASK_FORMS)}")


def layer_mask(kind: str, window: int | None = None) -> Mask:
    """The Mask of a layer's attention kind (``full``, ``global``, ``sliding``, ``chunked``)."""
    _check(kind, window)
    if kind == "full":
        return Full()
    if kind == "global":
        return Causal()
    if kind == "sliding":
        return Sliding(int(window))
    return Chunked(int(window))


# ----------------------------------------------------------------------------------------------
# The functional API (kind strings) every consumer has used since the start
# ----------------------------------------------------------------------------------------------

def _check(kind: str, window: int | None) -> None:
    if kind not in MASK_KINDS:
        raise LcprofError(f"unknown mask kind {kind!r}; known: {', '.join(MASK_KINDS)}")
    if kind in ("sliding", "chunked") and (window is None or window <= 0):
        raise LcprofError(f"a {kind} mask needs a positive window, got {window!r}")


def attended_pairs(kind: str, n, prefix=0, window: int | None = None) -> np.ndarray:
    """Useful (unmasked) (query, key) pairs per head for n new tokens after a prefix."""
    return layer_mask(kind, window).head_pairs(n, prefix)


def kv_tokens_attended(kind: str, n, window: int | None = None) -> np.ndarray:
    """Tokens a layer's cache must reserve for a sequence at context n.

    Global: all n. Sliding window W: min(n, W) (the last token attends W keys). Chunked C:
    min(n, C) -- the current chunk may hold up to C tokens, and a cache sized for a growing
    sequence reserves the whole chunk (as HF's chunked cache and vLLM do); the count never
    shrinks as n grows.
    """
    return layer_mask(kind, window).kv_tokens(n)


def executed_pairs_eager(n, prefix=0) -> np.ndarray:
    """Eager attention computes the whole n x (p+n) score rectangle whatever the mask."""
    n = _f(n)
    return n * (_f(prefix) + n)


def executed_pairs_tiled(kind: str, n, prefix=0, window: int | None = None,
                         tile: tuple[int, int] = (128, 128)) -> np.ndarray:
    """Pairs a tiled kernel computes: every (tile_q x tile_k) block not fully masked, whole.

    Tiles start at query index 0 and key index 0; edge tiles are clipped to the matrix.
    """
    return layer_mask(kind, window).tiled_head_pairs(n, prefix, 1, tile)
