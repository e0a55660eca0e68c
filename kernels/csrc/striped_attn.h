// Parameters of the striped ring attention block kernel (forward).
//
// One call computes attention of a query block against one key/value block
// of a ring-attention step, with a general positional causal mask:
//
//   pos_q(i) = q_offset + i * q_stride      (query row i of this rank)
//   pos_k(j) = k_offset + j * k_stride      (key row j of the visiting block)
//   causal:  query i may attend key j  iff  pos_k(j) <= pos_q(i)
//
// Striped ring with G ranks: rank r holds tokens r, r+G, ... so q_offset=r,
// q_stride=G, and a K/V block from rank s has k_offset=s, k_stride=G.
// Contiguous ring with L tokens per rank: offsets r*L and s*L, strides 1.
//
// Shapes (element strides below are in elements, not bytes):
//   q    (batch, n_q, heads,    head_dim)
//   k, v (batch, n_k, kv_heads, head_dim)
//   out  (batch, n_q, heads,    head_dim)   same dtype as q
//   lse  (batch, heads, n_q)                float32, natural log; -inf for a
//                                            row with no allowed key (out = 0)
//
// This header is deliberately free of torch: the kernel file includes only it
// and CUDA headers, so it compiles standalone.
#pragma once

#include <cstdint>
#include <cuda_runtime.h>
#include <string>

enum class StripedAttnDtype : int { kFloat16 = 0, kBFloat16 = 1 };

struct StripedAttnParams {
  // Device pointers.
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  void* out = nullptr;
  float* lse = nullptr;

  // Strides in elements: batch, sequence row, head.
  int64_t q_batch_stride = 0, q_row_stride = 0, q_head_stride = 0;
  int64_t k_batch_stride = 0, k_row_stride = 0, k_head_stride = 0;
  int64_t v_batch_stride = 0, v_row_stride = 0, v_head_stride = 0;
  int64_t o_batch_stride = 0, o_row_stride = 0, o_head_stride = 0;
  // lse is (batch, heads, n_q) with unit stride along n_q.
  int64_t lse_batch_stride = 0, lse_head_stride = 0;

  // Sizes.
  int batch = 0;
  int heads = 0;
  int kv_heads = 0;  // heads % kv_heads == 0; query head h reads kv head h / (heads / kv_heads)
  int n_q = 0;
  int n_k = 0;
  int head_dim = 0;  // 64, 96 or 128

  // Positions (see top of file). Strides must be >= 1.
  int64_t q_offset = 0, q_stride = 1;
  int64_t k_offset = 0, k_stride = 1;

  float softmax_scale = 0.f;  // usually 1 / sqrt(head_dim)
  bool causal = true;
  StripedAttnDtype dtype = StripedAttnDtype::kBFloat16;

  // Tile configuration; 0 picks the default for the head dim. Other values are
  // for tuning only (see run_striped_attn_fwd in the kernel file).
  int variant = 0;
};

// Launches the forward kernel on `stream` and checks the launch.
// Throws std::invalid_argument for unsupported parameters and
// std::runtime_error when CUDA reports an error.
void run_striped_attn_fwd(const StripedAttnParams& params, cudaStream_t stream);

// The Hopper path (sm_90a: TMA, wgmma, warp specialization; striped_attn_sm90.cuh). Same
// parameters and results; `variant` 0 picks the default pipeline, 1 serial, 2 overlapped,
// 3 overlapped with ping-pong. Throws std::invalid_argument on a device other than
// compute capability 9.0, or for unsupported parameters.
void run_striped_attn_fwd_sm90(const StripedAttnParams& params, cudaStream_t stream);

// True when `device` can run the sm90 path; otherwise false and the reason in *why.
bool striped_attn_sm90_supported(int device, std::string* why);
