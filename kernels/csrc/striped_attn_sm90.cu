// Host side of the sm90 striped attention kernel: device check, head-dim dispatch, and the
// tensor-map encoder (cuTensorMapEncodeTiled fetched from the driver through the CUDA runtime,
// so the extension needs no -lcuda). The kernel itself is in striped_attn_sm90.cuh.
#include "striped_attn_sm90.cuh"

#include <cudaTypedefs.h>  // PFN_cuTensorMapEncodeTiled

#include <mutex>

namespace striped_attn_sm90 {

void run_d64(const StripedAttnParams& p, cudaStream_t stream);
void run_d96(const StripedAttnParams& p, cudaStream_t stream);
void run_d128(const StripedAttnParams& p, cudaStream_t stream);

namespace {

PFN_cuTensorMapEncodeTiled_v12000 encoder() {
  static PFN_cuTensorMapEncodeTiled_v12000 fn = nullptr;
  static std::once_flag once;
  static std::string error;
  std::call_once(once, [] {
    void* ptr = nullptr;
    cudaDriverEntryPointQueryResult status = cudaDriverEntryPointSymbolNotFound;
#if CUDART_VERSION >= 12050
    const cudaError_t err = cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &ptr, 12000, cudaEnableDefault,
                                                             &status);
#else
    const cudaError_t err = cudaGetDriverEntryPoint("cuTensorMapEncodeTiled", &ptr, cudaEnableDefault, &status);
#endif
    if (err != cudaSuccess || status != cudaDriverEntryPointSuccess || ptr == nullptr) {
      error = std::string("cannot get cuTensorMapEncodeTiled from the driver: ") + cudaGetErrorString(err);
      return;
    }
    fn = reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(ptr);
  });
  if (fn == nullptr) throw std::runtime_error("striped_attn sm90: " + error);
  return fn;
}

}  // namespace

CUresult encode_tensor_map(CUtensorMap* map, CUtensorMapDataType dtype, void* address, const cuuint64_t* dims,
                           const cuuint64_t* strides_bytes, const cuuint32_t* box, CUtensorMapSwizzle swizzle) {
  const cuuint32_t element_strides[4] = {1, 1, 1, 1};
  return encoder()(map, dtype, 4, address, dims, strides_bytes, box, element_strides, CU_TENSOR_MAP_INTERLEAVE_NONE,
                   swizzle, CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
}

}  // namespace striped_attn_sm90

bool striped_attn_sm90_supported(int device, std::string* why) {
  int major = 0, minor = 0;
  cudaError_t err = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device);
  if (err != cudaSuccess) {
    if (why) *why = std::string("cannot read the compute capability: ") + cudaGetErrorString(err);
    return false;
  }
  if (major != 9 || minor != 0) {
    if (why) *why = "the sm90 path needs compute capability 9.0 (H100/H200), device has " + std::to_string(major) + "." +
                    std::to_string(minor);
    return false;
  }
  return true;
}

void run_striped_attn_fwd_sm90(const StripedAttnParams& p, cudaStream_t stream) {
  if (p.batch <= 0 || p.heads <= 0 || p.n_q <= 0) return;  // nothing to compute
  if (p.kv_heads <= 0 || p.heads % p.kv_heads != 0) {
    throw std::invalid_argument("striped_attn: heads must be a multiple of kv_heads");
  }
  if (p.q_stride < 1 || p.k_stride < 1) throw std::invalid_argument("striped_attn: position strides must be >= 1");
  if (static_cast<int64_t>(p.n_q) * (p.heads / p.kv_heads) >= (int64_t(1) << 31)) {
    throw std::invalid_argument("striped_attn: n_q * (heads / kv_heads) must be < 2^31 for the sm90 path");
  }
  int device = 0;
  striped_attn_sm90::check_cuda(cudaGetDevice(&device), "cudaGetDevice");
  std::string why;
  if (!striped_attn_sm90_supported(device, &why)) throw std::invalid_argument("striped_attn: " + why);
  switch (p.head_dim) {
    case 64: return striped_attn_sm90::run_d64(p, stream);
    case 96: return striped_attn_sm90::run_d96(p, stream);
    case 128: return striped_attn_sm90::run_d128(p, stream);
    default:
      throw std::invalid_argument("striped_attn: head_dim must be 64, 96 or 128, got " + std::to_string(p.head_dim));
  }
}
