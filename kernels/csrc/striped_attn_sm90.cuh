// Forward block attention for striped ring attention on Hopper (sm_90a).
//
// Same contract as the sm80 kernel (striped_attn.h): out and lse of a query block against one
// K/V block with the positional causal mask of striped_mask.cuh. The difference is how it runs:
//
//   CTA = 3 warpgroups (384 threads). Warpgroup 0 is the producer: one thread issues TMA loads
//   (cp.async.bulk.tensor) of K and V tiles (BN keys x D) into a STAGES-deep ring of shared
//   memory buffers; each buffer has a "full" mbarrier (the TMA's byte count completes it) and an
//   "empty" mbarrier (the 8 consumer warps arrive when their wgmmas are done reading it).
//   Warpgroups 1 and 2 are consumers, 64 query rows each (BM = 128 rows per CTA): they load
//   their Q rows once (plain loads into the swizzled layout wgmma reads), then per key tile
//     S = Q K^T     wgmma m64nBNk16, A = Q and B = K from shared memory (both K-major)
//     mask, online softmax in fp32 registers, P converted to 16 bits in place
//     O += P V      wgmma m64nDk16, A = P from registers, B = V from shared memory (MN-major)
//   setmaxnreg moves registers from the producer (24) to the consumers (240).
//
// Pipelines (VARIANT): 1 = serial (each wgmma waited for; the reference schedule);
// 2 = intra-warpgroup overlap: the QK^T of tile t and the PV of tile t-1 are issued together and
// the softmax of tile t runs while PV(t-1) is on the tensor cores; 3 = 2 plus ping-pong between
// the two consumer warpgroups (named barriers hand a token around, so one warpgroup's softmax
// overlaps the other's matrix products).
//
// GQA packing: the rows of a CTA are (query row, head) pairs of the `group = heads / kv_heads`
// query heads that share one K/V head, packed row m = i * group + g (query row i = m / group,
// head = kv_head * group + m % group), so every K/V tile a CTA loads serves all those heads.
// The key limit depends on i only and is non-decreasing in m: key tiles past lim(last row) are
// never loaded, and the element mask runs only on tiles past lim(first row of the warpgroup).
// Key tiles are visited from the last to the first, so the masked tiles come first.
//
// Shared memory layout (one 1024-byte aligned block):
//   Q  [NB column blocks][BM rows][W bytes]      W = 128 (D = 64, 128) or 64 (D = 96), swizzled
//   K  [STAGES][NB][BN rows][W bytes]              with the 128B / 64B pattern: the 16-byte
//   V  [STAGES][NB][BN rows][W bytes]              chunk c of row r sits at chunk c ^ f(r)
//   mbarriers: full_k, full_v, empty_k, empty_v per stage
// A column block holds E = W/2 head-dim elements of each row; TMA writes one box per column
// block, and the wgmma descriptors step through them (K-major: 16-element k-steps inside a
// block, SBO = 8 rows; MN-major V: LBO = one column block, SBO = 8 keys).
//
// This file includes only the params header and CUDA headers (no torch). Device code is
// compiled for sm_90a only; other targets get a body that traps (never launched: the launcher
// checks the device).
#pragma once

#include "striped_attn.h"
#include "striped_mask.cuh"

#include <cuda.h>  // CUtensorMap (a type only: the driver function comes via the runtime)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdlib>
#include <stdexcept>
#include <string>

#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ >= 900) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define STRIPED_ATTN_SM90_DEVICE 1
#include "sm90_wgmma.inc"
#endif

namespace striped_attn_sm90 {

// ------------------------------------------------------------------ params ----

struct KernelParams {
  CUtensorMap tma_k;  // K (batch, n_k, kv_heads, D) as a 4-D map {D, kv_heads, n_k, batch}
  CUtensorMap tma_v;  // V, same shape
  const void* q = nullptr;
  void* out = nullptr;
  float* lse = nullptr;
  int64_t q_batch_stride = 0, q_row_stride = 0, q_head_stride = 0;  // elements
  int64_t o_batch_stride = 0, o_row_stride = 0, o_head_stride = 0;
  int64_t lse_batch_stride = 0, lse_head_stride = 0;
  int n_q = 0, n_k = 0, group = 1, rows = 0;  // rows = n_q * group packed rows per kv head
  int64_t q_offset = 0, q_stride = 1, k_offset = 0, k_stride = 1;
  float softmax_scale = 0.f;
  int causal = 1;
};

// ------------------------------------------------------------------ config ----

template <int D_, int BN_, int STAGES_, int VARIANT_>
struct Cfg {
  static constexpr int D = D_;
  static constexpr int BN = BN_;          // keys per tile (the N of S = Q K^T)
  static constexpr int STAGES = STAGES_;  // K/V buffers in flight
  static constexpr int VARIANT = VARIANT_;
  static constexpr bool OVERLAP = VARIANT >= 2;
  static constexpr bool PINGPONG = VARIANT == 3;
  static constexpr int CONSUMERS = 2;     // consumer warpgroups
  static constexpr int BM = 64 * CONSUMERS;
  static constexpr int THREADS = 128 * (CONSUMERS + 1);
  static constexpr int W = (D % 64 == 0) ? 128 : 64;  // bytes of one swizzled row of a column block
  static constexpr int E = W / 2;                     // head-dim elements per column block
  static constexpr int NB = D / E;                    // column blocks
  static constexpr uint32_t DESC_SWIZZLE = W == 128 ? 1 : 2;  // wgmma descriptor layout type
  static constexpr int Q_BYTES = BM * D * 2;
  static constexpr int TILE_BYTES = BN * D * 2;  // one K (or V) tile
  static constexpr int Q_OFF = 0;
  static constexpr int K_OFF = Q_OFF + Q_BYTES;
  static constexpr int V_OFF = K_OFF + STAGES * TILE_BYTES;
  static constexpr int BAR_OFF = V_OFF + STAGES * TILE_BYTES;
  static constexpr int BAR_BYTES = 4 * STAGES * 8;
  static constexpr size_t SMEM_BYTES = size_t(BAR_OFF) + BAR_BYTES + 1024;  // + alignment slack
  static constexpr int PRODUCER_REGS = 24;
  static constexpr int CONSUMER_REGS = 240;
  static_assert(D % E == 0 && D % 16 == 0, "head dim must split into column blocks");
  static_assert(BN % 16 == 0 && BN <= 256, "key tile");
  static_assert((BM * W) % 1024 == 0 && (BN * W) % 1024 == 0, "swizzle atoms must stay 1024-byte aligned");
  static_assert(STAGES >= 2, "the schedule needs two K/V buffers");
  static_assert(PRODUCER_REGS * 128 + CONSUMER_REGS * 128 * CONSUMERS <= 65536, "register file");
  static_assert(SMEM_BYTES <= 227 * 1024, "shared memory");
};

#if defined(STRIPED_ATTN_SM90_DEVICE)

// ------------------------------------------------------------- PTX helpers ----

__device__ __forceinline__ uint32_t smem_u32(const void* p) { return static_cast<uint32_t>(__cvta_generic_to_shared(p)); }

__device__ __forceinline__ void mbar_init(uint32_t bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void fence_mbar_init() { asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory"); }
__device__ __forceinline__ void mbar_arrive_expect_tx(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
// Wait until the phase of parity `parity` has completed (a fresh barrier counts parity 1 as done).
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
  uint32_t done = 0;
  do {
    asm volatile(
        "{\n"
        ".reg .pred p;\n"
        "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
        "selp.u32 %0, 1, 0, p;\n"
        "}\n"
        : "=r"(done)
        : "r"(bar), "r"(parity)
        : "memory");
  } while (!done);
}

__device__ __forceinline__ void tma_prefetch(const CUtensorMap* map) {
  asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<uint64_t>(map)) : "memory");
}
// One box of a 4-D tensor map into shared memory; completes `bar` with its bytes.
__device__ __forceinline__ void tma_load_4d(uint32_t dst, const CUtensorMap* map, uint32_t bar, int c0, int c1, int c2,
                                            int c3) {
  asm volatile(
      "cp.async.bulk.tensor.4d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4, %5}], [%6];\n" ::
          "r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(bar)
      : "memory");
}

__device__ __forceinline__ void fence_proxy_async_smem() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
__device__ __forceinline__ void named_sync(int id, int threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}
__device__ __forceinline__ void named_arrive(int id, int threads) {
  asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

template <int R>
__device__ __forceinline__ void setmaxnreg_dec() {
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(R));
}
template <int R>
__device__ __forceinline__ void setmaxnreg_inc() {
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(R));
}

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// Register fences: the compiler may not move reads or writes of these registers across this
// point. Used around asynchronous wgmmas, whose accumulators (and register A operand) belong to
// the tensor cores from the issue until the wait.
template <int R>
__device__ __forceinline__ void fence_regs(float (&r)[R]) {
#pragma unroll
  for (int i = 0; i < R; ++i) asm volatile("" : "+f"(r[i])::"memory");
}
template <int R>
__device__ __forceinline__ void fence_regs(uint32_t (&r)[R][4]) {
#pragma unroll
  for (int i = 0; i < R; ++i)
#pragma unroll
    for (int e = 0; e < 4; ++e) asm volatile("" : "+r"(r[i][e])::"memory");
}

// Shared-memory matrix descriptor of wgmma: start address, leading and stride byte offsets
// (all in 16-byte units), layout type in bits 62-63 (1 = 128B swizzle, 2 = 64B swizzle).
__device__ __forceinline__ uint64_t make_desc(uint32_t addr, uint32_t lbo_bytes, uint32_t sbo_bytes, uint32_t swizzle) {
  return static_cast<uint64_t>((addr & 0x3FFFF) >> 4) | (static_cast<uint64_t>((lbo_bytes >> 4) & 0x3FFF) << 16) |
         (static_cast<uint64_t>((sbo_bytes >> 4) & 0x3FFF) << 32) | (static_cast<uint64_t>(swizzle) << 62);
}

template <typename T, int N>
struct Wgmma;
#define STRIPED_SM90_WGMMA(TYPE, TAG, N)                                                                   \
  template <>                                                                                              \
  struct Wgmma<TYPE, N> {                                                                                  \
    static __device__ __forceinline__ void ss(float (&d)[N / 2], uint64_t a, uint64_t b, int scale_d) {    \
      wgmma_ss_##TAG##_n##N(d, a, b, scale_d);                                                             \
    }                                                                                                      \
    static __device__ __forceinline__ void rs(float (&d)[N / 2], const uint32_t (&a)[4], uint64_t b,       \
                                              int scale_d) {                                               \
      wgmma_rs_##TAG##_n##N(d, a, b, scale_d);                                                             \
    }                                                                                                      \
  };
STRIPED_SM90_WGMMA(__nv_bfloat16, bf16, 64)
STRIPED_SM90_WGMMA(__nv_bfloat16, bf16, 96)
STRIPED_SM90_WGMMA(__nv_bfloat16, bf16, 128)
STRIPED_SM90_WGMMA(__half, f16, 64)
STRIPED_SM90_WGMMA(__half, f16, 96)
STRIPED_SM90_WGMMA(__half, f16, 128)
#undef STRIPED_SM90_WGMMA

template <typename T>
__device__ __forceinline__ uint32_t pack2(float lo, float hi);  // lo -> low 16 bits (lower column)
template <>
__device__ __forceinline__ uint32_t pack2<__nv_bfloat16>(float lo, float hi) {
  __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&h);
}
template <>
__device__ __forceinline__ uint32_t pack2<__half>(float lo, float hi) {
  __half2 h = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&h);
}

// ----------------------------------------------------------- matrix steps ----

// S (64 x BN, this warpgroup's rows) = Q K^T over the whole head dim: D/16 wgmmas, one group.
template <typename T, typename C>
__device__ __forceinline__ void issue_qk(float (&s)[C::BN / 2], uint32_t q_rows, uint32_t k_tile) {
#pragma unroll
  for (int kk = 0; kk < C::D / 16; ++kk) {
    const int cb = (kk * 16) / C::E;               // column block
    const int within = ((kk * 16) % C::E) * 2;     // byte offset of the k-step inside the block row
    const uint64_t da = make_desc(q_rows + cb * (C::BM * C::W) + within, 16, 8 * C::W, C::DESC_SWIZZLE);
    const uint64_t db = make_desc(k_tile + cb * (C::BN * C::W) + within, 16, 8 * C::W, C::DESC_SWIZZLE);
    Wgmma<T, C::BN>::ss(s, da, db, kk > 0 ? 1 : 0);
  }
}

// O (64 x D) += P (64 x BN, registers) V (BN x D): BN/16 wgmmas, V MN-major (d contiguous).
template <typename T, typename C>
__device__ __forceinline__ void issue_pv(float (&o)[C::D / 2], const uint32_t (&pa)[C::BN / 16][4], uint32_t v_tile) {
#pragma unroll
  for (int j = 0; j < C::BN / 16; ++j) {
    // keys 16j .. 16j+15 of every column block; LBO = next column block, SBO = next 8 keys
    const uint64_t db = make_desc(v_tile + j * 16 * C::W, C::BN * C::W, 8 * C::W, C::DESC_SWIZZLE);
    Wgmma<T, C::D>::rs(o, pa[j], db, 1);
  }
}

// Element mask of key tile n: column c of this thread's row hr is key n*BN + 8*jj + 2*t4 + (e&1).
template <typename C>
__device__ __forceinline__ void mask_tile(float (&s)[C::BN / 2], int n, int t4, const int (&lim)[2]) {
#pragma unroll
  for (int jj = 0; jj < C::BN / 8; ++jj)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int col = n * C::BN + jj * 8 + 2 * t4 + (e & 1);
      if (col > lim[e >> 1]) s[4 * jj + e] = -INFINITY;
    }
}

// Online softmax of one tile, in place (s becomes P relative to the new running max).
// alpha[hr] rescales what was accumulated before this tile; tile_sum[hr] is this thread's part
// of the row sum of P. A row with nothing visible yet keeps max -inf; using 0 as its reference
// turns its exp() into 0 instead of NaN.
template <typename C>
__device__ __forceinline__ void softmax_tile(float (&s)[C::BN / 2], float (&row_max)[2], float scale_log2,
                                             float (&alpha)[2], float (&tile_sum)[2]) {
#pragma unroll
  for (int hr = 0; hr < 2; ++hr) {
    float mx = row_max[hr];
#pragma unroll
    for (int jj = 0; jj < C::BN / 8; ++jj) mx = fmaxf(mx, fmaxf(s[4 * jj + 2 * hr], s[4 * jj + 2 * hr + 1]));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
    const float ref = mx == -INFINITY ? 0.f : mx * scale_log2;
    alpha[hr] = row_max[hr] == -INFINITY ? 0.f : exp2f(row_max[hr] * scale_log2 - ref);
    row_max[hr] = mx;
    float sum = 0.f;
#pragma unroll
    for (int jj = 0; jj < C::BN / 8; ++jj)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const float pv = exp2f(fmaf(s[4 * jj + 2 * hr + e], scale_log2, -ref));
        s[4 * jj + 2 * hr + e] = pv;
        sum += pv;
      }
    tile_sum[hr] = sum;
  }
}

// P (fp32 accumulator layout) -> A operand of the PV wgmma, k-step j = keys 16j .. 16j+15:
// the accumulator chunks 2j, 2j+1 hold exactly the A fragment's four 16-bit pairs.
template <typename T, typename C>
__device__ __forceinline__ void convert_p(const float (&s)[C::BN / 2], uint32_t (&pa)[C::BN / 16][4]) {
#pragma unroll
  for (int j = 0; j < C::BN / 16; ++j) {
    pa[j][0] = pack2<T>(s[8 * j + 0], s[8 * j + 1]);  // row g,   keys 16j + 2*t4 + {0,1}
    pa[j][1] = pack2<T>(s[8 * j + 2], s[8 * j + 3]);  // row g+8, keys 16j + 2*t4 + {0,1}
    pa[j][2] = pack2<T>(s[8 * j + 4], s[8 * j + 5]);  // row g,   keys 16j + 8 + 2*t4 + {0,1}
    pa[j][3] = pack2<T>(s[8 * j + 6], s[8 * j + 7]);  // row g+8, keys 16j + 8 + 2*t4 + {0,1}
  }
}

template <typename C>
__device__ __forceinline__ void rescale_o(float (&o)[C::D / 2], const float (&alpha)[2]) {
#pragma unroll
  for (int i = 0; i < C::D / 2; ++i) o[i] *= alpha[(i >> 1) & 1];
}

// Barrier ids: 0 is __syncthreads; 1 + c: consumer c's Q rows are in shared memory;
// 3 + c: consumer c holds the ping-pong token.
constexpr int kBarQ = 1;
constexpr int kBarToken = 3;

template <typename C>
__device__ __forceinline__ void token_acquire(int c) {
  if constexpr (C::PINGPONG) named_sync(kBarToken + c, 256);
}
template <typename C>
__device__ __forceinline__ void token_pass(int c) {
  if constexpr (C::PINGPONG) named_arrive(kBarToken + (1 - c), 256);
}

// A consumer warp waits for a K or V buffer to be full. The lanes may leave the polling loop
// at different iterations: __syncwarp reconverges them before the .aligned wgmma instructions.
__device__ __forceinline__ void consumer_wait(uint32_t bar, uint32_t parity) {
  mbar_wait(bar, parity);
  __syncwarp();
}

// A consumer warp releases a K or V buffer once its wgmmas reading it are complete.
__device__ __forceinline__ void release(uint32_t bar, int lane) {
  __syncwarp();
  if (lane == 0) mbar_arrive(bar);
}

#endif  // STRIPED_ATTN_SM90_DEVICE

// ------------------------------------------------------------------ kernel ----

template <typename T, typename C>
__global__ void __launch_bounds__(C::THREADS, 1) striped_attn_sm90_kernel(const __grid_constant__ KernelParams p) {
#if defined(STRIPED_ATTN_SM90_DEVICE)
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  const uint32_t smem = (smem_u32(smem_raw) + 1023u) & ~1023u;  // swizzle atoms need 1024-byte alignment
  const uint32_t sQ = smem + C::Q_OFF;
  const uint32_t sK = smem + C::K_OFF;
  const uint32_t sV = smem + C::V_OFF;
  const uint32_t bar = smem + C::BAR_OFF;
  auto full_k = [&](int st) { return bar + 8u * st; };
  auto full_v = [&](int st) { return bar + 8u * (C::STAGES + st); };
  auto empty_k = [&](int st) { return bar + 8u * (2 * C::STAGES + st); };
  auto empty_v = [&](int st) { return bar + 8u * (3 * C::STAGES + st); };

  // Work of this CTA: packed rows [m0, m0 + BM) of kv head hk, batch b. Heaviest blocks first.
  const int m_block = gridDim.x - 1 - blockIdx.x;
  const int hk = blockIdx.y;
  const int b = blockIdx.z;
  const int m0 = m_block * C::BM;
  const int last_row = min(m0 + C::BM, p.rows) - 1;
  const int lim_last = striped_key_limit(p.causal, p.n_k, p.q_offset, p.q_stride, p.k_offset, p.k_stride,
                                         last_row / p.group);
  const int n_tiles = lim_last >= 0 ? lim_last / C::BN + 1 : 0;  // key tiles [0, n_tiles), visited last first

  const int warp = threadIdx.x >> 5;
  const int lane = threadIdx.x & 31;
  const int wg = threadIdx.x >> 7;

  if (threadIdx.x == 0) {
#pragma unroll
    for (int st = 0; st < C::STAGES; ++st) {
      mbar_init(full_k(st), 1);  // the producer's arrive.expect_tx; the TMA bytes complete it
      mbar_init(full_v(st), 1);
      mbar_init(empty_k(st), 4 * C::CONSUMERS);  // one arrive per consumer warp
      mbar_init(empty_v(st), 4 * C::CONSUMERS);
    }
    fence_mbar_init();
  }
  __syncthreads();

  if (wg == 0) {
    // ------------------------------------------------------------ producer ----
    setmaxnreg_dec<C::PRODUCER_REGS>();
    if (warp == 0 && lane == 0 && n_tiles > 0) {
      tma_prefetch(&p.tma_k);
      tma_prefetch(&p.tma_v);
      for (int it = 0; it < n_tiles; ++it) {
        const int n = n_tiles - 1 - it;
        const int st = it % C::STAGES;
        const uint32_t ph = (it / C::STAGES) & 1;
        mbar_wait(empty_k(st), ph ^ 1);
        mbar_arrive_expect_tx(full_k(st), C::TILE_BYTES);
#pragma unroll
        for (int cb = 0; cb < C::NB; ++cb)
          tma_load_4d(sK + st * C::TILE_BYTES + cb * (C::BN * C::W), &p.tma_k, full_k(st), cb * C::E, hk, n * C::BN, b);
        mbar_wait(empty_v(st), ph ^ 1);
        mbar_arrive_expect_tx(full_v(st), C::TILE_BYTES);
#pragma unroll
        for (int cb = 0; cb < C::NB; ++cb)
          tma_load_4d(sV + st * C::TILE_BYTES + cb * (C::BN * C::W), &p.tma_v, full_v(st), cb * C::E, hk, n * C::BN, b);
      }
    }
  } else {
    // ------------------------------------------------------------ consumer ----
    setmaxnreg_inc<C::CONSUMER_REGS>();
    const int c = wg - 1;                    // consumer index
    const int tid = threadIdx.x - 128 * wg;  // 0..127 in the warpgroup
    const int cwarp = tid >> 5;
    const int g = lane >> 2;   // row within an 8-row group
    const int t4 = lane & 3;   // column pair
    const int wg_row0 = c * 64;  // first row of this warpgroup in the CTA tile

    // Q rows of this warpgroup -> swizzled shared memory (zeros past the last packed row).
    {
      const T* qg = static_cast<const T*>(p.q) + b * p.q_batch_stride;
      constexpr int CH = C::D / 8;          // 16-byte chunks per row
      constexpr int CPB = C::W / 16;        // chunks per column-block row
#pragma unroll 4
      for (int idx = tid; idx < 64 * CH; idx += 128) {
        const int r = idx / CH;
        const int ch = idx % CH;
        const int row = wg_row0 + r;       // row in the CTA tile
        const int m = m0 + row;            // packed row
        uint4 val = make_uint4(0u, 0u, 0u, 0u);
        if (m < p.rows) {
          const int i = m / p.group;
          const int h = hk * p.group + m % p.group;
          val = *reinterpret_cast<const uint4*>(qg + i * p.q_row_stride + h * p.q_head_stride + ch * 8);
        }
        const int cb = ch / CPB;
        const int cc = ch % CPB;
        const int swz = cc ^ (((row * C::W) >> 7) & (CPB - 1));  // the TMA/wgmma 128B or 64B pattern
        const uint32_t dst = sQ + cb * (C::BM * C::W) + row * C::W + swz * 16;
        asm volatile("st.shared.v4.u32 [%0], {%1, %2, %3, %4};\n" ::"r"(dst), "r"(val.x), "r"(val.y), "r"(val.z),
                     "r"(val.w)
                     : "memory");
      }
      fence_proxy_async_smem();  // the generic-proxy stores above are read by wgmma (async proxy)
      named_sync(kBarQ + c, 128);
    }
    const uint32_t q_rows = sQ + wg_row0 * C::W;

    // This thread's two rows (g and g+8 of its warp's 16) and their key limits.
    int lim[2];
    int rowm[2];
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) {
      rowm[hr] = m0 + wg_row0 + cwarp * 16 + g + hr * 8;
      lim[hr] = striped_key_limit(p.causal, p.n_k, p.q_offset, p.q_stride, p.k_offset, p.k_stride, rowm[hr] / p.group);
    }
    // Key tiles below n_full are visible to every row of this warpgroup: no element mask there.
    const int first_row = min(m0 + wg_row0, p.rows - 1);
    const int lim_first = striped_key_limit(p.causal, p.n_k, p.q_offset, p.q_stride, p.k_offset, p.k_stride,
                                            first_row / p.group);
    const int n_full = (lim_first + 1) / C::BN;

    const float scale_log2 = p.softmax_scale * 1.4426950408889634f;
    float o[C::D / 2];
#pragma unroll
    for (int i = 0; i < C::D / 2; ++i) o[i] = 0.f;
    float s[C::BN / 2];
    uint32_t pa[C::BN / 16][4];
    float row_max[2] = {-INFINITY, -INFINITY};
    float row_sum[2] = {0.f, 0.f};  // this thread's partial sums
    float alpha[2], tile_sum[2];

    if (n_tiles > 0) {
      if constexpr (C::PINGPONG) {
        if (c == 1) named_arrive(kBarToken + 0, 256);  // consumer 0 goes first
      }
      if constexpr (!C::OVERLAP) {
        // ---- serial schedule: every wgmma is waited for before the next step ----
        for (int it = 0; it < n_tiles; ++it) {
          const int n = n_tiles - 1 - it;
          const int st = it % C::STAGES;
          const uint32_t ph = (it / C::STAGES) & 1;
          consumer_wait(full_k(st), ph);
          fence_regs(s);
          wgmma_fence();
          issue_qk<T, C>(s, q_rows, sK + st * C::TILE_BYTES);
          wgmma_commit();
          wgmma_wait<0>();
          fence_regs(s);
          release(empty_k(st), lane);
          if (n >= n_full) mask_tile<C>(s, n, t4, lim);
          softmax_tile<C>(s, row_max, scale_log2, alpha, tile_sum);
          rescale_o<C>(o, alpha);
#pragma unroll
          for (int hr = 0; hr < 2; ++hr) row_sum[hr] = row_sum[hr] * alpha[hr] + tile_sum[hr];
          convert_p<T, C>(s, pa);
          consumer_wait(full_v(st), ph);
          fence_regs(o);
          wgmma_fence();
          issue_pv<T, C>(o, pa, sV + st * C::TILE_BYTES);
          wgmma_commit();
          wgmma_wait<0>();
          fence_regs(o);
          fence_regs(pa);
          release(empty_v(st), lane);
        }
      } else {
        // ---- overlapped schedule ----
        // prologue: S of the first tile
        consumer_wait(full_k(0), 0);
        token_acquire<C>(c);
        fence_regs(s);
        wgmma_fence();
        issue_qk<T, C>(s, q_rows, sK);
        wgmma_commit();
        token_pass<C>(c);
        wgmma_wait<0>();
        fence_regs(s);
        release(empty_k(0), lane);
        if (n_tiles - 1 >= n_full) mask_tile<C>(s, n_tiles - 1, t4, lim);
        softmax_tile<C>(s, row_max, scale_log2, alpha, tile_sum);
#pragma unroll
        for (int hr = 0; hr < 2; ++hr) row_sum[hr] = tile_sum[hr];
        convert_p<T, C>(s, pa);
        // steady state: S of tile `it` and O += P V of tile `it - 1` in flight together
        for (int it = 1; it < n_tiles; ++it) {
          const int n = n_tiles - 1 - it;
          const int st = it % C::STAGES;
          const uint32_t ph = (it / C::STAGES) & 1;
          const int pst = (it - 1) % C::STAGES;
          const uint32_t pph = ((it - 1) / C::STAGES) & 1;
          consumer_wait(full_k(st), ph);
          token_acquire<C>(c);
          fence_regs(s);
          fence_regs(o);
          wgmma_fence();
          issue_qk<T, C>(s, q_rows, sK + st * C::TILE_BYTES);
          wgmma_commit();
          consumer_wait(full_v(pst), pph);
          wgmma_fence();  // (S is in flight: this orders only the register operands of the PV wgmma)
          issue_pv<T, C>(o, pa, sV + pst * C::TILE_BYTES);
          wgmma_commit();
          token_pass<C>(c);
          wgmma_wait<1>();  // S done; PV(it - 1) may still run
          fence_regs(s);
          release(empty_k(st), lane);
          if (n >= n_full) mask_tile<C>(s, n, t4, lim);
          softmax_tile<C>(s, row_max, scale_log2, alpha, tile_sum);
          wgmma_wait<0>();  // PV(it - 1) done
          fence_regs(o);
          fence_regs(pa);
          release(empty_v(pst), lane);
          rescale_o<C>(o, alpha);
#pragma unroll
          for (int hr = 0; hr < 2; ++hr) row_sum[hr] = row_sum[hr] * alpha[hr] + tile_sum[hr];
          convert_p<T, C>(s, pa);
        }
        // tail: O += P V of the last tile
        {
          const int it = n_tiles - 1;
          const int st = it % C::STAGES;
          const uint32_t ph = (it / C::STAGES) & 1;
          consumer_wait(full_v(st), ph);
          token_acquire<C>(c);
          fence_regs(o);
          wgmma_fence();
          issue_pv<T, C>(o, pa, sV + st * C::TILE_BYTES);
          wgmma_commit();
          token_pass<C>(c);
          wgmma_wait<0>();
          fence_regs(o);
          fence_regs(pa);
          release(empty_v(st), lane);
        }
      }
      if constexpr (C::PINGPONG) {
        if (c == 0) named_sync(kBarToken + 0, 256);  // the token consumer 1 passed last: barriers end balanced
      }
    }

    // ---- epilogue: normalise, write out (16-bit pairs) and lse ----
    const int64_t ob = b * p.o_batch_stride;
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) {
      float l = row_sum[hr];
      l += __shfl_xor_sync(0xffffffffu, l, 1);
      l += __shfl_xor_sync(0xffffffffu, l, 2);
      const float inv = l > 0.f ? 1.f / l : 0.f;
      const int m = rowm[hr];
      if (m < p.rows) {
        const int i = m / p.group;
        const int h = hk * p.group + m % p.group;
        T* orow = static_cast<T*>(p.out) + ob + i * p.o_row_stride + h * p.o_head_stride;
#pragma unroll
        for (int jj = 0; jj < C::D / 8; ++jj) {
          *reinterpret_cast<uint32_t*>(orow + jj * 8 + 2 * t4) =
              pack2<T>(o[4 * jj + 2 * hr] * inv, o[4 * jj + 2 * hr + 1] * inv);
        }
        if (t4 == 0) {
          p.lse[b * p.lse_batch_stride + h * p.lse_head_stride + i] =
              l > 0.f ? row_max[hr] * p.softmax_scale + logf(l) : -INFINITY;
        }
      }
    }
  }
#else
  // Built for a target without wgmma/TMA: must never run (the launcher checks the device).
  asm volatile("trap;");
#endif
}

// ---------------------------------------------------------------- launcher ----

// cuTensorMapEncodeTiled, fetched from the driver through the runtime (no -lcuda); in
// striped_attn_sm90.cu.
CUresult encode_tensor_map(CUtensorMap* map, CUtensorMapDataType dtype, void* address, const cuuint64_t* dims,
                           const cuuint64_t* strides_bytes, const cuuint32_t* box, CUtensorMapSwizzle swizzle);

inline void check_cuda(cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string("striped_attn sm90: ") + what + ": " + cudaGetErrorString(err));
  }
}

// K or V (batch, n_k, kv_heads, D) as {D, kv_heads, n_k, batch} (strides increase), box
// {E, 1, BN, 1}: one column block of BN key rows, written row after row into shared memory.
template <typename T, typename C>
CUtensorMap make_kv_map(const void* ptr, const StripedAttnParams& p, int64_t row_stride, int64_t head_stride,
                        int64_t batch_stride) {
  CUtensorMap map;
  const cuuint64_t dims[4] = {cuuint64_t(C::D), cuuint64_t(p.kv_heads), cuuint64_t(p.n_k), cuuint64_t(p.batch)};
  const cuuint64_t strides[3] = {cuuint64_t(head_stride) * 2, cuuint64_t(row_stride) * 2, cuuint64_t(batch_stride) * 2};
  const cuuint32_t box[4] = {cuuint32_t(C::E), 1u, cuuint32_t(C::BN), 1u};
  const CUtensorMapDataType dt =
      p.dtype == StripedAttnDtype::kBFloat16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT16;
  const CUtensorMapSwizzle swz = C::W == 128 ? CU_TENSOR_MAP_SWIZZLE_128B : CU_TENSOR_MAP_SWIZZLE_64B;
  const CUresult res = encode_tensor_map(&map, dt, const_cast<void*>(ptr), dims, strides, box, swz);
  if (res != CUDA_SUCCESS) {
    throw std::runtime_error("striped_attn sm90: cuTensorMapEncodeTiled failed with CUresult " + std::to_string(int(res)));
  }
  return map;
}

template <typename T, typename C>
void launch(const StripedAttnParams& p, cudaStream_t stream) {
  KernelParams kp;
  const int group = p.heads / p.kv_heads;
  if (p.n_k > 0) {
    kp.tma_k = make_kv_map<T, C>(p.k, p, p.k_row_stride, p.k_head_stride, p.k_batch_stride);
    kp.tma_v = make_kv_map<T, C>(p.v, p, p.v_row_stride, p.v_head_stride, p.v_batch_stride);
  } else {
    kp.tma_k = CUtensorMap{};  // no key tile is ever loaded (every row's limit is -1)
    kp.tma_v = CUtensorMap{};
  }
  kp.q = p.q;
  kp.out = p.out;
  kp.lse = p.lse;
  kp.q_batch_stride = p.q_batch_stride;
  kp.q_row_stride = p.q_row_stride;
  kp.q_head_stride = p.q_head_stride;
  kp.o_batch_stride = p.o_batch_stride;
  kp.o_row_stride = p.o_row_stride;
  kp.o_head_stride = p.o_head_stride;
  kp.lse_batch_stride = p.lse_batch_stride;
  kp.lse_head_stride = p.lse_head_stride;
  kp.n_q = p.n_q;
  kp.n_k = p.n_k;
  kp.group = group;
  kp.rows = p.n_q * group;
  kp.q_offset = p.q_offset;
  kp.q_stride = p.q_stride;
  kp.k_offset = p.k_offset;
  kp.k_stride = p.k_stride;
  kp.softmax_scale = p.softmax_scale;
  kp.causal = p.causal ? 1 : 0;

  auto kernel = striped_attn_sm90_kernel<T, C>;
  static int configured_device = -1;  // the attribute is per device; set it once per device
  int device = 0;
  check_cuda(cudaGetDevice(&device), "cudaGetDevice");
  if (configured_device != device) {
    check_cuda(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    static_cast<int>(C::SMEM_BYTES)),
               "cudaFuncSetAttribute");
    configured_device = device;
  }
  const dim3 grid((kp.rows + C::BM - 1) / C::BM, p.kv_heads, p.batch);
  kernel<<<grid, C::THREADS, C::SMEM_BYTES, stream>>>(kp);
  check_cuda(cudaGetLastError(), "kernel launch");
}

// Tile configurations (BN, STAGES) per head dim, and the three pipelines (see the top).
template <int D>
struct Tiles;
template <>
struct Tiles<64> {
  static constexpr int BN = 128, STAGES = 3;
};
template <>
struct Tiles<96> {
  static constexpr int BN = 128, STAGES = 2;
};
template <>
struct Tiles<128> {
  static constexpr int BN = 128, STAGES = 2;
};

constexpr int kDefaultVariant = 3;

// Variant 0 is the default pipeline, or $LCPROF_SM90_VARIANT when set (1, 2 or 3): a knob for
// the first GPU runs, so that a broken default can be stepped around without a rebuild.
inline int resolve_variant(int variant) {
  if (variant != 0) return variant;
  const char* env = std::getenv("LCPROF_SM90_VARIANT");
  const int v = env != nullptr ? std::atoi(env) : 0;
  return v == 0 ? kDefaultVariant : v;
}

template <typename T, int D>
void dispatch_variant(const StripedAttnParams& p, cudaStream_t stream) {
  constexpr int BN = Tiles<D>::BN, ST = Tiles<D>::STAGES;
  const int variant = resolve_variant(p.variant);
  switch (variant) {
    case 1: return launch<T, Cfg<D, BN, ST, 1>>(p, stream);
    case 2: return launch<T, Cfg<D, BN, ST, 2>>(p, stream);
    case 3: return launch<T, Cfg<D, BN, ST, 3>>(p, stream);
    default:
      throw std::invalid_argument("striped_attn: unknown sm90 variant " + std::to_string(variant) +
                                  " (1 serial, 2 overlapped, 3 overlapped + ping-pong)");
  }
}

template <int D>
void run_head_dim(const StripedAttnParams& p, cudaStream_t stream) {
  if (p.dtype == StripedAttnDtype::kBFloat16) return dispatch_variant<__nv_bfloat16, D>(p, stream);
  return dispatch_variant<__half, D>(p, stream);
}

}  // namespace striped_attn_sm90
