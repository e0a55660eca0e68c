// Torch binding of the striped ring attention block kernel: validates the
// inputs, allocates out/lse, fills StripedAttnParams and launches on the
// current CUDA stream. The kernel itself lives in striped_attn_kernel.cu.
#include "striped_attn.h"

#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/extension.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <stdexcept>
#include <string>
#include <tuple>

namespace {

// Error messages are assembled here and handed to TORCH_CHECK as one string.
// Numbers must not go through std::ostream (c10::str's `<<`): on the H100
// image (torch 2.11, its g++) the extension's own copy of the ostream integer
// inserter segfaulted while formatting a TORCH_CHECK message.
std::string num(int64_t x) { return std::to_string(x); }
std::string num(double x) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%g", x);
  return buf;
}
std::string shape(const at::Tensor& t) {
  std::string s = "(";
  for (int64_t d = 0; d < t.dim(); ++d) s += (d ? ", " : "") + num(t.size(d));
  return s + ")";
}

bool aligned16(const at::Tensor& t) { return reinterpret_cast<std::uintptr_t>(t.data_ptr()) % 16 == 0; }

// 16-byte vector loads need 16-byte aligned base pointers; a contiguous view
// with an odd storage offset is copied (rare; views of fused QKV are not
// contiguous and are rejected earlier).
at::Tensor ensure_aligned(const at::Tensor& t) { return aligned16(t) ? t : t.clone(); }

}  // namespace

enum class Path { kSm80, kSm90 };

// q: (batch, n_q, heads, head_dim); k, v: (batch, n_k, kv_heads, head_dim).
// Returns (out (batch, n_q, heads, head_dim), lse float32 (batch, heads, n_q)).
std::tuple<at::Tensor, at::Tensor> striped_attn_fwd_path(Path path, const at::Tensor& q_in, const at::Tensor& k_in,
                                                         const at::Tensor& v_in, int64_t q_offset, int64_t q_stride,
                                                         int64_t k_offset, int64_t k_stride, bool causal,
                                                         std::optional<double> softmax_scale_opt, int64_t variant) {
  TORCH_CHECK(q_in.is_cuda() && k_in.is_cuda() && v_in.is_cuda(), "striped_attn: q, k, v must be CUDA tensors");
  TORCH_CHECK(q_in.device() == k_in.device() && q_in.device() == v_in.device(),
              "striped_attn: q, k, v must be on the same device");
  const auto dtype = q_in.scalar_type();
  TORCH_CHECK(dtype == at::kHalf || dtype == at::kBFloat16,
              std::string("striped_attn: dtype must be float16 or bfloat16, got ") + c10::toString(dtype));
  TORCH_CHECK(k_in.scalar_type() == dtype && v_in.scalar_type() == dtype,
              "striped_attn: q, k, v must have the same dtype");
  TORCH_CHECK(q_in.dim() == 4 && k_in.dim() == 4 && v_in.dim() == 4,
              "striped_attn: q, k, v must be 4-D (batch, n, heads, head_dim)");
  TORCH_CHECK(q_in.is_contiguous() && k_in.is_contiguous() && v_in.is_contiguous(),
              "striped_attn: q, k, v must be contiguous");

  const int64_t batch = q_in.size(0), n_q = q_in.size(1), heads = q_in.size(2), head_dim = q_in.size(3);
  const int64_t n_k = k_in.size(1), kv_heads = k_in.size(2);
  TORCH_CHECK(k_in.size(0) == batch && v_in.size(0) == batch, "striped_attn: batch sizes of q, k, v differ");
  TORCH_CHECK(v_in.sizes() == k_in.sizes(),
              "striped_attn: k and v must have the same shape, got " + shape(k_in) + " and " + shape(v_in));
  TORCH_CHECK(k_in.size(3) == head_dim,
              "striped_attn: q and k head_dim differ (" + num(head_dim) + " vs " + num(k_in.size(3)) + ")");
  TORCH_CHECK(head_dim == 64 || head_dim == 96 || head_dim == 128,
              "striped_attn: head_dim must be 64, 96 or 128, got " + num(head_dim));
  TORCH_CHECK(kv_heads >= 1 && heads % kv_heads == 0,
              "striped_attn: heads (" + num(heads) + ") must be a multiple of kv_heads (" + num(kv_heads) + ")");
  TORCH_CHECK(q_stride >= 1 && k_stride >= 1,
              "striped_attn: q_stride and k_stride must be >= 1, got " + num(q_stride) + " and " + num(k_stride));
  const double softmax_scale =
      softmax_scale_opt.has_value() ? *softmax_scale_opt : 1.0 / std::sqrt(static_cast<double>(head_dim));
  TORCH_CHECK(std::isfinite(softmax_scale) && softmax_scale > 0.0,
              "striped_attn: softmax_scale must be finite and > 0, got " + num(softmax_scale));
  TORCH_CHECK(batch <= 65535 && heads <= 65535, "striped_attn: batch and heads must be <= 65535");
  TORCH_CHECK(n_q < (int64_t(1) << 31) && n_k < (int64_t(1) << 31), "striped_attn: sequence too long");
  // Positions are computed in 64 bits per row; keep them well inside int64.
  TORCH_CHECK(std::llabs(q_offset) < (int64_t(1) << 40) && std::llabs(k_offset) < (int64_t(1) << 40) &&
                  q_stride < (int64_t(1) << 20) && k_stride < (int64_t(1) << 20),
              "striped_attn: position offsets/strides out of range");

  const c10::cuda::CUDAGuard device_guard(q_in.device());
  if (path == Path::kSm90) {
    std::string why;
    TORCH_CHECK(striped_attn_sm90_supported(q_in.device().index(), &why), "striped_attn: " + why);
    TORCH_CHECK(n_q * (heads / kv_heads) < (int64_t(1) << 31),
                "striped_attn: n_q * (heads / kv_heads) must be < 2^31 for the sm90 path");
  }
  const at::Tensor q = ensure_aligned(q_in), k = ensure_aligned(k_in), v = ensure_aligned(v_in);
  at::Tensor out = at::empty_like(q);
  at::Tensor lse = at::empty({batch, heads, n_q}, q.options().dtype(at::kFloat));
  if (batch == 0 || n_q == 0 || heads == 0) return {out, lse};

  StripedAttnParams p;
  p.q = q.data_ptr();
  p.k = k.data_ptr();
  p.v = v.data_ptr();
  p.out = out.data_ptr();
  p.lse = lse.data_ptr<float>();
  p.q_batch_stride = q.stride(0);
  p.q_row_stride = q.stride(1);
  p.q_head_stride = q.stride(2);
  p.k_batch_stride = k.stride(0);
  p.k_row_stride = k.stride(1);
  p.k_head_stride = k.stride(2);
  p.v_batch_stride = v.stride(0);
  p.v_row_stride = v.stride(1);
  p.v_head_stride = v.stride(2);
  p.o_batch_stride = out.stride(0);
  p.o_row_stride = out.stride(1);
  p.o_head_stride = out.stride(2);
  p.lse_batch_stride = lse.stride(0);
  p.lse_head_stride = lse.stride(1);
  p.batch = static_cast<int>(batch);
  p.heads = static_cast<int>(heads);
  p.kv_heads = static_cast<int>(kv_heads);
  p.n_q = static_cast<int>(n_q);
  p.n_k = static_cast<int>(n_k);
  p.head_dim = static_cast<int>(head_dim);
  p.q_offset = q_offset;
  p.q_stride = q_stride;
  p.k_offset = k_offset;
  p.k_stride = k_stride;
  p.softmax_scale = static_cast<float>(softmax_scale);
  p.causal = causal;
  p.dtype = dtype == at::kHalf ? StripedAttnDtype::kFloat16 : StripedAttnDtype::kBFloat16;
  p.variant = static_cast<int>(variant);

  try {
    if (path == Path::kSm90) {
      run_striped_attn_fwd_sm90(p, at::cuda::getCurrentCUDAStream().stream());
    } else {
      run_striped_attn_fwd(p, at::cuda::getCurrentCUDAStream().stream());
    }
  } catch (const std::exception& e) {
    TORCH_CHECK(false, std::string(e.what()));
  }
  return {out, lse};
}

// The sm80 path (mma.sync, cp.async): runs on every GPU with compute capability >= 8.0.
std::tuple<at::Tensor, at::Tensor> striped_attn_fwd(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                    int64_t q_offset, int64_t q_stride, int64_t k_offset,
                                                    int64_t k_stride, bool causal, std::optional<double> softmax_scale,
                                                    int64_t variant) {
  return striped_attn_fwd_path(Path::kSm80, q, k, v, q_offset, q_stride, k_offset, k_stride, causal, softmax_scale,
                               variant);
}

// The Hopper path (TMA, wgmma, warp specialization): compute capability 9.0 only.
std::tuple<at::Tensor, at::Tensor> striped_attn_fwd_sm90(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                         int64_t q_offset, int64_t q_stride, int64_t k_offset,
                                                         int64_t k_stride, bool causal,
                                                         std::optional<double> softmax_scale, int64_t variant) {
  return striped_attn_fwd_path(Path::kSm90, q, k, v, q_offset, q_stride, k_offset, k_stride, causal, softmax_scale,
                               variant);
}

bool sm90_supported() {
  std::string why;
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) return false;
  return striped_attn_sm90_supported(device, &why);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "Striped ring attention: per-step block attention forward (CUDA)";
  m.def("fwd", &striped_attn_fwd,
        "Block attention forward with a positional causal mask. Returns (out, lse).", py::arg("q"), py::arg("k"),
        py::arg("v"), py::arg("q_offset") = 0, py::arg("q_stride") = 1, py::arg("k_offset") = 0,
        py::arg("k_stride") = 1, py::arg("causal") = true, py::arg("softmax_scale") = py::none(), py::arg("variant") = 0);
  m.def("fwd_sm90", &striped_attn_fwd_sm90,
        "Block attention forward, Hopper path (TMA + wgmma; compute capability 9.0). Returns (out, lse).",
        py::arg("q"), py::arg("k"), py::arg("v"), py::arg("q_offset") = 0, py::arg("q_stride") = 1,
        py::arg("k_offset") = 0, py::arg("k_stride") = 1, py::arg("causal") = true,
        py::arg("softmax_scale") = py::none(), py::arg("variant") = 0);
  m.def("sm90_supported", &sm90_supported, "True when the current CUDA device can run fwd_sm90.");
}
