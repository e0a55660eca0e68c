// The sm90 striped attention kernel for head dim 128 (bf16 and fp16, every pipeline variant).
// One file per head dim so that the build compiles them in parallel; see striped_attn_sm90.cuh.
#include "striped_attn_sm90.cuh"

namespace striped_attn_sm90 {
void run_d128(const StripedAttnParams& p, cudaStream_t stream) { run_head_dim<128>(p, stream); }
}  // namespace striped_attn_sm90
