"""CUDA kernel vs torch fallback inside the simulated ring (needs a GPU and kernels/)."""

import pytest
import torch

from lcprof.ring.block import kernel_status
from lcprof.ring.simulated import ring_attention_simulated

pytestmark = pytest.mark.gpu


def _require_kernel():
    if not torch.cuda.is_available():
        pytest.skip("CUDA not available")
    ok, reason = kernel_status()
    if not ok:
        pytest.skip(f"striped attention kernel unavailable: {reason}")


@pytest.mark.parametrize("layout", ["striped", "contiguous"])
@pytest.mark.parametrize("world", [1, 2, 4, 8])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_kernel_matches_torch_in_ring(layout, world, dtype):
    _require_kernel()
    gen = torch.Generator(device="cuda").manual_seed(0)
    n, heads, kv_heads, head_dim = 1000, 8, 2, 64
    q = torch.randn(2, n, heads, head_dim, device="cuda", dtype=dtype, generator=gen)
    k = torch.randn(2, n, kv_heads, head_dim, device="cuda", dtype=dtype, generator=gen)
    v = torch.randn(2, n, kv_heads, head_dim, device="cuda", dtype=dtype, generator=gen)
    ref = ring_attention_simulated(q.double(), k.double(), v.double(), world, layout, impl="torch")
    torch_out = ring_attention_simulated(q, k, v, world, layout, impl="torch")
    kernel_out = ring_attention_simulated(q, k, v, world, layout, impl="kernel")
    torch_err = (torch_out.double() - ref).abs().max().item()
    kernel_err = (kernel_out.double() - ref).abs().max().item()
    # the kernel may be at most ~2x as far from the fp64 reference as torch in the same dtype
    assert kernel_err <= 2 * torch_err + 1e-3, (kernel_err, torch_err)


def test_torch_fallback_on_cuda_matches_cpu():
    if not torch.cuda.is_available():
        pytest.skip("CUDA not available")
    gen = torch.Generator().manual_seed(1)
    q = torch.randn(1, 257, 4, 32, generator=gen)
    k = torch.randn(1, 257, 2, 32, generator=gen)
    v = torch.randn(1, 257, 2, 32, generator=gen)
    cpu = ring_attention_simulated(q, k, v, 4, "striped", impl="torch")
    gpu = ring_attention_simulated(q.cuda(), k.cuda(), v.cuda(), 4, "striped", impl="torch")
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-5, atol=1e-5)
