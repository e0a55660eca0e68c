// The positional causal mask of a ring step, shared by the sm80 and sm90 kernels.
//
// Query row i sits at position q_offset + i*q_stride, key row j at k_offset + j*k_stride;
// causal attention lets row i see key j iff pos_k(j) <= pos_q(i), i.e.
//   j <= lim(i) = floor((q_offset + i*q_stride - k_offset) / k_stride),
// clamped to [-1, n_k - 1] (-1: the row sees nothing). lim is non-decreasing in i, which is
// what lets a tile of rows skip every key tile past lim(last row) and apply the element mask
// only on tiles that reach past lim(first row).
#pragma once

__device__ __forceinline__ int striped_key_limit(bool causal, int n_k, long long q_offset, long long q_stride,
                                                 long long k_offset, long long k_stride, int i) {
  if (!causal) return n_k - 1;
  const long long num = q_offset + static_cast<long long>(i) * q_stride - k_offset;
  long long j = num >= 0 ? num / k_stride : -((-num + k_stride - 1) / k_stride);  // floor division
  if (j > n_k - 1) j = n_k - 1;
  if (j < -1) j = -1;
  return static_cast<int>(j);
}
