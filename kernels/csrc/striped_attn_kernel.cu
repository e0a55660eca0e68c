// Forward block attention for striped (and contiguous) ring attention.
//
// FlashAttention-2 style: each CTA owns BM query rows of one (batch, head);
// each warp owns 16*MT of those rows. K/V tiles of BN rows are streamed
// through shared memory with cp.async, double-buffered (the tile for the next
// iteration is loaded while this one is computed). S = Q K^T and O += P V use
// mma.sync.m16n8k16 (fp16/bf16 in, fp32 accumulate) with ldmatrix operands;
// the softmax is online, in fp32, in registers.
//
// Masking is positional (see striped_attn.h): row i may see keys
// j <= lim(i) = floor((q_offset + i*q_stride - k_offset) / k_stride).
// lim is non-decreasing in i, so a CTA visits key tiles [0, lim(last row)/BN]
// only, and applies the per-element mask only on tiles that reach past
// lim(first row): in a striped layout that is the staircase near the diagonal.
// Key tiles are visited from the last to the first so the masked tiles come
// first and the fully visible ones run without mask code.
//
// This file includes only the params header and CUDA headers (no torch), so
// it compiles standalone: see kernels/check_compile.sh.

#include "striped_attn.h"
#include "striped_mask.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

namespace striped_attn {

// ---------------------------------------------------------------- config ----

// D: head dim. BN: keys per tile. NW: warps per CTA. MT: 16-row MMA tiles per
// warp. QREG: keep the Q fragments in registers (else re-read them from
// shared memory at every key tile). MINB: CTAs per SM for __launch_bounds__.
template <int D_, int BN_, int NW_, int MT_, bool QREG_, int MINB_>
struct Cfg {
  static constexpr int D = D_;
  static constexpr int BN = BN_;
  static constexpr int NW = NW_;
  static constexpr int MT = MT_;
  static constexpr bool QREG = QREG_;
  static constexpr int MINB = MINB_;
  static constexpr int NT = NW * 32;        // threads per CTA
  static constexpr int BM = NW * 16 * MT;   // query rows per CTA
  static constexpr int SROW = D + 8;        // padded smem row (elements): ldmatrix is conflict-free
  static constexpr int CH = D / 8;          // 16-byte chunks per row
  static constexpr int KV_TILE = BN * SROW; // elements of one K (or V) tile
  static constexpr int STAGE = 2 * KV_TILE; // K tile then V tile
  static constexpr int Q_TILE = BM * SROW;
  // Layout: [stage 0: K V][stage 1: K V][Q if not QREG]. With QREG, Q is
  // staged in the stage-1 buffers before the first prefetch overwrites them.
  static constexpr int SMEM_ELEMS = 2 * STAGE + (QREG ? 0 : Q_TILE);
  static constexpr size_t SMEM_BYTES = size_t(SMEM_ELEMS) * 2;
  static_assert(D % 16 == 0 && BN % 16 == 0, "tile shape");
  static_assert(!QREG || Q_TILE <= STAGE, "Q must fit in the stage-1 buffers");
  static_assert(Q_TILE <= SMEM_ELEMS, "output staging must fit");
};

// ---------------------------------------------------------- PTX helpers ----

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16-byte async copy global -> shared; zero-fills the destination when !pred.
__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, bool pred) {
  const int src_bytes = pred ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

template <typename T>
struct TypeOps;

template <>
struct TypeOps<__half> {
  // c (16x8 fp32) += a (16x16, row) * b (16x8, col)
  static __device__ __forceinline__ void mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
  // lo goes to the low 16 bits (the lower column index).
  static __device__ __forceinline__ uint32_t pack(float lo, float hi) {
    __half2 h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&h);
  }
};

template <>
struct TypeOps<__nv_bfloat16> {
  static __device__ __forceinline__ void mma(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
  static __device__ __forceinline__ uint32_t pack(float lo, float hi) {
    __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&h);
  }
};

// Largest key index row i may attend, clamped to [-1, n_k - 1] (-1: none); see striped_mask.cuh.
__device__ __forceinline__ int key_limit(const StripedAttnParams& p, int i) {
  return striped_key_limit(p.causal, p.n_k, p.q_offset, p.q_stride, p.k_offset, p.k_stride, i);
}

// Copy `ROWS` rows of D elements, starting at global row row0, into smem
// (row stride SROW). Rows >= n_valid are zero-filled (so padded keys give
// finite scores, masked later, and padded values contribute 0 * 0).
template <typename T, typename C, int ROWS>
__device__ __forceinline__ void load_tile(uint32_t s_addr, const T* g, int64_t row_stride, int row0, int n_valid,
                                          int tid) {
  constexpr int TOTAL = ROWS * C::CH;
  constexpr int ITERS = (TOTAL + C::NT - 1) / C::NT;
#pragma unroll
  for (int it = 0; it < ITERS; ++it) {
    const int c = tid + it * C::NT;
    if (TOTAL % C::NT == 0 || c < TOTAL) {
      const int r = c / C::CH;
      const int cc = c % C::CH;
      const int gr = row0 + r;
      const bool ok = gr < n_valid;
      const T* src = g + static_cast<int64_t>(ok ? gr : 0) * row_stride + cc * 8;
      cp_async16(s_addr + (r * C::SROW + cc * 8) * 2, src, ok);
    }
  }
}

// ---------------------------------------------------------------- kernel ----

template <typename T, typename C>
__global__ void __launch_bounds__(C::NT, C::MINB) striped_attn_fwd_kernel(const StripedAttnParams p) {
  using Ops = TypeOps<T>;
  constexpr int D = C::D, BN = C::BN, MT = C::MT, BM = C::BM, SROW = C::SROW;
  constexpr int KT = D / 16;   // k-steps of S = Q K^T
  constexpr int NTS = BN / 8;  // 8-column tiles of S
  constexpr int DT = D / 8;    // 8-column tiles of O

  extern __shared__ __align__(128) unsigned char smem_raw[];
  T* smem = reinterpret_cast<T*>(smem_raw);
  const uint32_t smem_base = smem_u32(smem_raw);

  const int tid = threadIdx.x;
  const int warp = tid >> 5;
  const int lane = tid & 31;
  const int g = lane >> 2;  // row within an 8-row group of an MMA tile
  const int t4 = lane & 3;  // column pair within an 8-column MMA tile

  // Heaviest query blocks (largest row index, most visible keys) first.
  const int m_block = gridDim.x - 1 - blockIdx.x;
  const int h = blockIdx.y;
  const int b = blockIdx.z;
  const int hk = h / (p.heads / p.kv_heads);
  const int m0 = m_block * BM;

  const T* qg = static_cast<const T*>(p.q) + b * p.q_batch_stride + h * p.q_head_stride;
  const T* kg = static_cast<const T*>(p.k) + b * p.k_batch_stride + hk * p.k_head_stride;
  const T* vg = static_cast<const T*>(p.v) + b * p.v_batch_stride + hk * p.v_head_stride;
  T* og = static_cast<T*>(p.out) + b * p.o_batch_stride + h * p.o_head_stride;
  float* lseg = p.lse + b * p.lse_batch_stride + h * p.lse_head_stride;

  // Visible key tiles for this CTA: [0, n_tiles). Tiles below n_full are
  // visible to every row of the CTA and need no mask.
  const int last_row = min(m0 + BM, p.n_q) - 1;
  const int lim_first = key_limit(p, m0);
  const int lim_last = key_limit(p, last_row);
  const int n_tiles = lim_last >= 0 ? lim_last / BN + 1 : 0;
  const int n_full = (lim_first + 1) / BN;

  const uint32_t sQ = smem_base + (C::QREG ? C::STAGE : 2 * C::STAGE) * 2;

  // Prologue: Q and the last visible K/V tile.
  load_tile<T, C, BM>(sQ, qg, p.q_row_stride, m0, p.n_q, tid);
  if (n_tiles > 0) {
    load_tile<T, C, BN>(smem_base, kg, p.k_row_stride, (n_tiles - 1) * BN, p.n_k, tid);
    load_tile<T, C, BN>(smem_base + C::KV_TILE * 2, vg, p.v_row_stride, (n_tiles - 1) * BN, p.n_k, tid);
  }
  cp_async_commit();

  // Per-lane ldmatrix offsets (elements).
  // A operand (Q, 16x16 row-major): matrices (rows 0-7|8-15) x (cols 0-7|8-15).
  const int q_lane_off = ((lane & 7) + ((lane >> 3) & 1) * 8) * SROW + (lane >> 4) * 8;
  // B operand of Q K^T from K[key][d]: two 8-key tiles x two 8-wide k halves.
  const int k_lane_off = ((lane & 7) + (lane >> 4) * 8) * SROW + ((lane >> 3) & 1) * 8;
  // B operand of P V from V[key][d] (transposed load): two 8-key halves x two 8-wide d tiles.
  const int v_lane_off = ((lane & 7) + ((lane >> 3) & 1) * 8) * SROW + (lane >> 4) * 8;
  const int warp_row0 = warp * 16 * MT;  // first row of this warp within the CTA

  uint32_t qf[C::QREG ? MT : 1][C::QREG ? KT : 1][4];
  if constexpr (C::QREG) {
    cp_async_wait<0>();
    __syncthreads();
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int kk = 0; kk < KT; ++kk)
        ldmatrix_x4(qf[mt][kk], sQ + ((warp_row0 + mt * 16) * SROW + q_lane_off + kk * 16) * 2);
    // The barrier at the top of the first iteration orders these reads
    // before the stage-1 prefetch overwrites the staged Q.
  }

  int lim[MT][2];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) lim[mt][hr] = key_limit(p, m0 + warp_row0 + mt * 16 + g + hr * 8);

  float o[MT][DT][4];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int dt = 0; dt < DT; ++dt)
#pragma unroll
      for (int e = 0; e < 4; ++e) o[mt][dt][e] = 0.f;
  float row_max[MT][2], row_sum[MT][2];  // raw-score running max; per-thread partial sums
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) {
      row_max[mt][hr] = -INFINITY;
      row_sum[mt][hr] = 0.f;
    }

  const float scale_log2 = p.softmax_scale * 1.4426950408889634f;

  for (int it = 0; it < n_tiles; ++it) {
    const int n = n_tiles - 1 - it;
    const int stage = it & 1;
    cp_async_wait<0>();
    __syncthreads();  // tile n is in `stage`; everyone is done with the other stage
    if (n > 0) {
      const uint32_t nxt = smem_base + (stage ^ 1) * C::STAGE * 2;
      load_tile<T, C, BN>(nxt, kg, p.k_row_stride, (n - 1) * BN, p.n_k, tid);
      load_tile<T, C, BN>(nxt + C::KV_TILE * 2, vg, p.v_row_stride, (n - 1) * BN, p.n_k, tid);
      cp_async_commit();
    }
    const uint32_t sK = smem_base + stage * C::STAGE * 2;
    const uint32_t sV = sK + C::KV_TILE * 2;

    // S = Q K^T (16*MT x BN per warp), fp32.
    float s[MT][NTS][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int nt = 0; nt < NTS; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[mt][nt][e] = 0.f;

#pragma unroll
    for (int kk = 0; kk < KT; ++kk) {
      uint32_t a[MT][4];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        if constexpr (C::QREG) {
#pragma unroll
          for (int e = 0; e < 4; ++e) a[mt][e] = qf[mt][kk][e];
        } else {
          ldmatrix_x4(a[mt], sQ + ((warp_row0 + mt * 16) * SROW + q_lane_off + kk * 16) * 2);
        }
      }
#pragma unroll
      for (int np = 0; np < BN / 16; ++np) {
        uint32_t bk[4];
        ldmatrix_x4(bk, sK + (np * 16 * SROW + k_lane_off + kk * 16) * 2);
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          Ops::mma(s[mt][2 * np], a[mt], bk[0], bk[1]);
          Ops::mma(s[mt][2 * np + 1], a[mt], bk[2], bk[3]);
        }
      }
    }

    // Positional mask (staircase), only on tiles that reach past lim(first row).
    if (n >= n_full) {
#pragma unroll
      for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int nt = 0; nt < NTS; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int col = n * BN + nt * 8 + 2 * t4 + (e & 1);
            if (col > lim[mt][e >> 1]) s[mt][nt][e] = -INFINITY;
          }
    }

    // Online softmax. A row with nothing visible yet keeps max = -inf; using
    // 0 as its reference turns its exp() into 0 instead of NaN.
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int hr = 0; hr < 2; ++hr) {
        float mx = row_max[mt][hr];
#pragma unroll
        for (int nt = 0; nt < NTS; ++nt) mx = fmaxf(mx, fmaxf(s[mt][nt][2 * hr], s[mt][nt][2 * hr + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float ref = mx == -INFINITY ? 0.f : mx * scale_log2;
        const float alpha = row_max[mt][hr] == -INFINITY ? 0.f : exp2f(row_max[mt][hr] * scale_log2 - ref);
        row_max[mt][hr] = mx;
        float sum = 0.f;
#pragma unroll
        for (int nt = 0; nt < NTS; ++nt)
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const float pv = exp2f(fmaf(s[mt][nt][2 * hr + e], scale_log2, -ref));
            s[mt][nt][2 * hr + e] = pv;
            sum += pv;
          }
        row_sum[mt][hr] = row_sum[mt][hr] * alpha + sum;
#pragma unroll
        for (int dt = 0; dt < DT; ++dt) {
          o[mt][dt][2 * hr] *= alpha;
          o[mt][dt][2 * hr + 1] *= alpha;
        }
      }

    // O += P V. The S accumulators of key tiles 2j, 2j+1 form the A operand
    // of k-step j directly (FlashAttention-2 register reuse).
#pragma unroll
    for (int j = 0; j < BN / 16; ++j) {
      uint32_t pa[MT][4];
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        pa[mt][0] = Ops::pack(s[mt][2 * j][0], s[mt][2 * j][1]);
        pa[mt][1] = Ops::pack(s[mt][2 * j][2], s[mt][2 * j][3]);
        pa[mt][2] = Ops::pack(s[mt][2 * j + 1][0], s[mt][2 * j + 1][1]);
        pa[mt][3] = Ops::pack(s[mt][2 * j + 1][2], s[mt][2 * j + 1][3]);
      }
#pragma unroll
      for (int dp = 0; dp < D / 16; ++dp) {
        uint32_t bv[4];
        ldmatrix_x4_trans(bv, sV + (j * 16 * SROW + v_lane_off + dp * 16) * 2);
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          Ops::mma(o[mt][2 * dp], pa[mt], bv[0], bv[1]);
          Ops::mma(o[mt][2 * dp + 1], pa[mt], bv[2], bv[3]);
        }
      }
    }
  }

  // Epilogue: normalise, stage the warp's rows in smem, write 16-byte vectors.
  cp_async_wait<0>();
  __syncthreads();  // all warps are done with the K/V buffers
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) {
      float l = row_sum[mt][hr];
      l += __shfl_xor_sync(0xffffffffu, l, 1);
      l += __shfl_xor_sync(0xffffffffu, l, 2);
      const float inv = l > 0.f ? 1.f / l : 0.f;
      const int r_local = warp_row0 + mt * 16 + g + hr * 8;
#pragma unroll
      for (int dt = 0; dt < DT; ++dt) {
        *reinterpret_cast<uint32_t*>(smem + r_local * SROW + dt * 8 + 2 * t4) =
            Ops::pack(o[mt][dt][2 * hr] * inv, o[mt][dt][2 * hr + 1] * inv);
      }
      const int row = m0 + r_local;
      if (t4 == 0 && row < p.n_q) {
        lseg[row] = l > 0.f ? row_max[mt][hr] * p.softmax_scale + logf(l) : -INFINITY;
      }
    }
  __syncwarp();
  constexpr int WCH = 16 * MT * C::CH;  // 16-byte chunks of this warp's rows
#pragma unroll
  for (int c = lane; c < WCH; c += 32) {
    const int r_local = warp_row0 + c / C::CH;
    const int cc = c % C::CH;
    const int row = m0 + r_local;
    if (row < p.n_q) {
      *reinterpret_cast<uint4*>(og + row * p.o_row_stride + cc * 8) =
          *reinterpret_cast<const uint4*>(smem + r_local * SROW + cc * 8);
    }
  }
}

// -------------------------------------------------------------- launcher ----

inline void check_cuda(cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string("striped_attn: ") + what + ": " + cudaGetErrorString(err));
  }
}

template <typename T, typename C>
void launch(const StripedAttnParams& p, cudaStream_t stream) {
  auto kernel = striped_attn_fwd_kernel<T, C>;
  constexpr size_t smem_bytes = C::SMEM_BYTES;
  if (smem_bytes > 48 * 1024) {
    check_cuda(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem_bytes)),
               "cudaFuncSetAttribute");
  }
  const dim3 grid((p.n_q + C::BM - 1) / C::BM, p.heads, p.batch);
  kernel<<<grid, C::NT, smem_bytes, stream>>>(p);
  check_cuda(cudaGetLastError(), "kernel launch");
}

// Tile configurations. Variant 0 is the default; the others exist for tuning
// (bench/kernel_bench.py --variants).
//   1: BM=64,  4 warps x 16 rows, Q in registers
//   2: BM=128, 8 warps x 16 rows, Q in registers
//   3: BM=128, 4 warps x 32 rows, Q re-read from smem (FlashAttention-2's shape)
//   4: BM=128, 8 warps x 16 rows, Q re-read from smem, 2 CTAs per SM
// Defaults measured on H100 (reports/kernel-dev/): head_dim 96 is fastest with
// FlashAttention-2's shape (3), 64 and 128 with 8 warps x 16 rows, Q in registers (2).
template <int D>
constexpr int default_variant() {
  return D == 96 ? 3 : 2;
}

template <typename T, int D>
void dispatch_variant(const StripedAttnParams& p, cudaStream_t stream) {
  const int variant = p.variant == 0 ? default_variant<D>() : p.variant;
  switch (variant) {
    case 1: return launch<T, Cfg<D, 64, 4, 1, true, 2>>(p, stream);
    case 2: return launch<T, Cfg<D, 64, 8, 1, true, 1>>(p, stream);
    case 3: return launch<T, Cfg<D, 64, 4, 2, false, 1>>(p, stream);
    case 4: return launch<T, Cfg<D, 64, 8, 1, false, 2>>(p, stream);
    default:
      throw std::invalid_argument("striped_attn: unknown variant " + std::to_string(p.variant));
  }
}

template <typename T>
void dispatch_head_dim(const StripedAttnParams& p, cudaStream_t stream) {
  switch (p.head_dim) {
    case 64: return dispatch_variant<T, 64>(p, stream);
    case 96: return dispatch_variant<T, 96>(p, stream);
    case 128: return dispatch_variant<T, 128>(p, stream);
    default:
      throw std::invalid_argument("striped_attn: head_dim must be 64, 96 or 128, got " + std::to_string(p.head_dim));
  }
}

}  // namespace striped_attn

void run_striped_attn_fwd(const StripedAttnParams& p, cudaStream_t stream) {
  if (p.batch <= 0 || p.heads <= 0 || p.n_q <= 0) return;  // nothing to compute
  if (p.kv_heads <= 0 || p.heads % p.kv_heads != 0) {
    throw std::invalid_argument("striped_attn: heads must be a multiple of kv_heads");
  }
  if (p.q_stride < 1 || p.k_stride < 1) throw std::invalid_argument("striped_attn: position strides must be >= 1");
  switch (p.dtype) {
    case StripedAttnDtype::kFloat16: return striped_attn::dispatch_head_dim<__half>(p, stream);
    case StripedAttnDtype::kBFloat16: return striped_attn::dispatch_head_dim<__nv_bfloat16>(p, stream);
  }
  throw std::invalid_argument("striped_attn: dtype must be float16 or bfloat16");
}
