"""The sm90 kernel's shared-memory addressing, checked on the CPU against the documented layouts.

No GPU here, so this models what the hardware is documented to do and checks that the kernel's
address arithmetic (kernels/csrc/striped_attn_sm90.cuh, mirrored below) reads back exactly the
element it means:

- TMA with SWIZZLE_128B / SWIZZLE_64B stores the 16-byte chunk at byte address a at
  a ^ (((a >> 7) & m) << 4), m = 7 / 3 (CUDA driver API; CUTLASS Swizzle<3,4,3> / <2,4,3>);
- a wgmma K-major swizzled descriptor (start, SBO) reads element (row r, k), k < 16, at
  start + (r // 8) * SBO + (r % 8) * W + 2k, then swizzled the same way;
- an MN-major one (start, LBO, SBO) reads (k, n) at
  start + (n // E) * LBO + 2 (n % E) + (k // 8) * SBO + (k % 8) * W, swizzled
  (CUTLASS cute/atom/mma_traits_sm90_gmma.hpp, make_gmma_desc: canonical layouts in units of
  16 bytes, B128 MN ((8,n),(8,k)):((1,LBO),(8,SBO)), B128 K ((8,n),2):((8,SBO),1));
- the accumulator and register-A fragments of m64nNk16 follow CLayout_64xN / ALayout_64x16.

With these, S = Q K^T and O = P V computed through the kernel's descriptors and fragments equal
numpy's products for every head dim (64, 96, 128: swizzle 128B, 64B, 128B).
"""

from __future__ import annotations

import numpy as np
import pytest

BM, BN = 128, 128


def cfg(D):
    W = 128 if D % 64 == 0 else 64  # Cfg::W
    E = W // 2
    return W, E, D // E, 7 if W == 128 else 3


def swz(addr, mask):
    return addr ^ (((addr >> 7) & mask) << 4)


class Smem:
    def __init__(self, nbytes):
        self.mem = np.full(nbytes // 2, np.nan)  # one float per 16-bit element, NaN = never written

    def put(self, addr, mask, value):
        self.mem[swz(addr, mask) // 2] = value

    def get(self, addr, mask):
        return self.mem[swz(addr, mask) // 2]


def tma_store_tile(sm, base, tile, W, E, NB, mask):
    """One K or V tile (BN x D) as NB boxes {E, 1, BN, 1}, box cb at base + cb * BN * W."""
    for cb in range(NB):
        for row in range(tile.shape[0]):
            for e in range(E):
                sm.put(base + cb * (BN * W) + row * W + 2 * e, mask, tile[row, cb * E + e])


def kernel_store_q(sm, base, q, W, mask):
    """The consumers' Q store: chunk ch of row -> column block ch // CPB, swizzled chunk."""
    D = q.shape[1]
    CPB = W // 16
    for row in range(q.shape[0]):
        for ch in range(D // 8):
            cb, cc = divmod(ch, CPB)
            chunk = cc ^ (((row * W) >> 7) & (CPB - 1))
            for e in range(8):
                # the kernel writes the already-swizzled address: store it unswizzled here
                sm.mem[(base + cb * (BM * W) + row * W + chunk * 16 + 2 * e) // 2] = q[row, ch * 8 + e]


def read_kmajor(sm, start, sbo, rows, W, mask):
    return np.array([[sm.get(start + (r // 8) * sbo + (r % 8) * W + 2 * k, mask) for k in range(16)]
                     for r in range(rows)])  # (rows, 16)


def read_mnmajor(sm, start, lbo, sbo, n, W, E, mask):
    return np.array([[sm.get(start + (c // E) * lbo + 2 * (c % E) + (k // 8) * sbo + (k % 8) * W, mask)
                      for c in range(n)] for k in range(16)])  # (16, n)


@pytest.mark.parametrize("D", [64, 96, 128])
def test_qk_and_pv_through_the_kernel_descriptors(D):
    W, E, NB, mask = cfg(D)
    rng = np.random.default_rng(D)
    q, k, v = rng.standard_normal((BM, D)), rng.standard_normal((BN, D)), rng.standard_normal((BN, D))
    q_off, k_off = 0, BM * D * 2
    v_off = k_off + BN * D * 2
    sm = Smem(v_off + BN * D * 2)
    kernel_store_q(sm, q_off, q, W, mask)
    tma_store_tile(sm, k_off, k, W, E, NB, mask)
    tma_store_tile(sm, v_off, v, W, E, NB, mask)
    assert not np.isnan(sm.mem).any()  # every byte written once: the regions tile exactly

    for c in range(2):  # consumer warpgroup c: rows 64c .. 64c + 63
        q_rows = q_off + c * 64 * W
        s = np.zeros((64, BN))
        for kk in range(D // 16):  # issue_qk
            cb, within = (kk * 16) // E, ((kk * 16) % E) * 2
            a = read_kmajor(sm, q_rows + cb * (BM * W) + within, 8 * W, 64, W, mask)  # (64, 16)
            b = read_kmajor(sm, k_off + cb * (BN * W) + within, 8 * W, BN, W, mask)  # (BN, 16)
            np.testing.assert_array_equal(a, q[64 * c:64 * c + 64, kk * 16:kk * 16 + 16])
            s += a @ b.T
        np.testing.assert_allclose(s, q[64 * c:64 * c + 64] @ k.T, rtol=1e-12, atol=1e-12)

        p = rng.standard_normal((64, BN))
        o = np.zeros((64, D))
        for j in range(BN // 16):  # issue_pv
            b = read_mnmajor(sm, v_off + j * 16 * W, BN * W, 8 * W, D, W, E, mask)  # (16, D)
            np.testing.assert_array_equal(b, v[16 * j:16 * j + 16])
            o += p[:, 16 * j:16 * j + 16] @ b
        np.testing.assert_allclose(o, p @ v, rtol=1e-12, atol=1e-12)


def c_fragment(N):
    """CLayout_64xN: (thread, value) -> (row, col) of the accumulator; value v = 4*jj + e."""
    out = {}
    for t in range(128):
        w, lane = divmod(t, 32)
        g, t4 = divmod(lane, 4)
        for jj in range(N // 8):
            for e in range(4):
                out[(t, 4 * jj + e)] = (16 * w + g + 8 * (e >> 1), 8 * jj + 2 * t4 + (e & 1))
    return out


def a_fragment():
    """ALayout_64x16 for 16-bit A: (thread, register r, half h) -> (row, k)."""
    out = {}
    for t in range(128):
        w, lane = divmod(t, 32)
        g, t4 = divmod(lane, 4)
        for r in range(4):
            for h in range(2):
                out[(t, r, h)] = (16 * w + g + 8 * (r & 1), 8 * (r >> 1) + 2 * t4 + h)
    return out


def test_cute_layouts_match_the_fragments_used():
    """The closed forms above are CuTe's layouts: (T4,T8,W4) x (V2,V2,V(N/8)) with strides
    ((128,1,16),(64,8,512)) over a column-major 64 x N tile (index m + 64 n)."""
    for (t, val), (row, col) in c_fragment(32).items():
        t0, t1, t2 = t % 4, (t // 4) % 8, t // 32
        v0, v1, v2 = val % 2, (val // 2) % 2, val // 4
        idx = 128 * t0 + 1 * t1 + 16 * t2 + 64 * v0 + 8 * v1 + 512 * v2
        assert (row, col) == (idx % 64, idx // 64)
    for (t, r, h), (row, k) in a_fragment().items():
        t0, t1, t2 = t % 4, (t // 4) % 8, t // 32
        val = 2 * r + h  # register r holds values 2r, 2r+1
        v0, v1, v2 = val % 2, (val // 2) % 2, val // 4
        idx = 128 * t0 + 1 * t1 + 16 * t2 + 64 * v0 + 8 * v1 + 512 * v2
        assert (row, k) == (idx % 64, idx // 64)


def test_convert_p_puts_each_probability_where_the_pv_wgmma_reads_it():
    """convert_p: pa[j][r] = pack(s[8j + 2r], s[8j + 2r + 1]); the accumulator element there
    must be the A element (row, key 16j + k) of k-step j, for every thread."""
    C, A = c_fragment(BN), a_fragment()
    for t in range(128):
        for j in range(BN // 16):
            for r in range(4):
                for h in range(2):
                    row_s, col_s = C[(t, 8 * j + 2 * r + h)]
                    row_a, k_a = A[(t, r, h)]
                    assert (row_s, col_s) == (row_a, 16 * j + k_a)


def test_epilogue_and_mask_indices_match_the_accumulator():
    """mask_tile / softmax / epilogue read s[4jj + e] and o[4jj + e] as row g + 8(e>>1), column
    8jj + 2t4 + (e&1) of the thread's warp rows: the accumulator layout."""
    C = c_fragment(BN)
    for t in range(128):
        w, lane = divmod(t, 32)
        g, t4 = divmod(lane, 4)
        for jj in range(BN // 8):
            for e in range(4):
                assert C[(t, 4 * jj + e)] == (16 * w + g + 8 * (e >> 1), 8 * jj + 2 * t4 + (e & 1))
