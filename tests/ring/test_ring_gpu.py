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


# ------------------------------------------------ composed baseline on CUDA -----

COMPOSED = ["composed-flash", "composed-cudnn", "composed-efficient"]


def _cuda_inputs(batch, n, heads, kv_heads, head_dim, dtype, seed):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    return tuple(torch.randn(batch, n, h, head_dim, device="cuda", dtype=dtype, generator=gen)
                 for h in (heads, kv_heads, kv_heads))


def _require_op(impl, dtype):
    if not torch.cuda.is_available():
        pytest.skip("CUDA not available")
    from lcprof.ring.composed import op_status

    ok, reason = op_status(impl.split("-", 1)[1], "cuda", dtype)
    if not ok:
        pytest.skip(f"{impl} unavailable: {reason}")


@pytest.mark.parametrize("impl", COMPOSED)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("head_dim", [64, 96, 128])
@pytest.mark.parametrize("heads", [(8, 2), (4, 4)], ids=["gqa", "mha"])
def test_composed_steps_match_reference(impl, dtype, head_dim, heads):
    """Every (rank, source) step of a G=4 striped ring (causal and strict masks) and the
    contiguous full/empty steps: out within 2x SDPA's error, LSE to 1e-3, empty rows 0 / -inf."""
    import math

    import torch.nn.functional as F

    from lcprof.kernels.reference import allowed_mask, block_attention_reference
    from lcprof.ring.composed import composed_block_attention

    _require_op(impl, dtype)
    op = impl.split("-", 1)[1]
    h, kvh = heads
    m = 301  # tokens per rank: several tiles, not a multiple of any
    steps = [(r, 4, s, 4) for r in range(4) for s in range(4)] + [(m, 1, 0, 1), (0, 1, m, 1)]
    for i, (qo, qs, ko, ks) in enumerate(steps):
        q, k, v = _cuda_inputs(1, m, h, kvh, head_dim, dtype, seed=i)
        out, lse = composed_block_attention(q, k, v, q_offset=qo, q_stride=qs, k_offset=ko, k_stride=ks, op=op)
        ref, ref_lse = block_attention_reference(q.double(), k.double(), v.double(), q_offset=qo, q_stride=qs,
                                                 k_offset=ko, k_stride=ks)
        mask = allowed_mask(m, m, q_offset=qo, q_stride=qs, k_offset=ko, k_stride=ks, device="cuda")
        empty = ~mask.any(dim=-1)
        assert torch.all(out[:, empty] == 0) and torch.all(lse[:, :, empty] == -math.inf)
        if (~empty).any():
            ke, ve = k.repeat_interleave(h // kvh, dim=2), v.repeat_interleave(h // kvh, dim=2)
            sd = F.scaled_dot_product_attention(q.transpose(1, 2), ke.transpose(1, 2), ve.transpose(1, 2),
                                                attn_mask=mask).transpose(1, 2)
            err_sdpa = (sd[:, ~empty].double() - ref[:, ~empty]).abs().max().item()
            err = (out.double() - ref).abs().max().item()
            assert err <= 2 * err_sdpa + 4e-4, (qo, qs, ko, ks, err, err_sdpa)
            torch.testing.assert_close(lse[:, :, ~empty].double(), ref_lse[:, :, ~empty], rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("impl", COMPOSED)
@pytest.mark.parametrize("world", [1, 2, 4, 8])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_composed_ring_matches_reference(impl, world, dtype):
    _require_op(impl, dtype)
    q, k, v = _cuda_inputs(2, 1003, 8, 2, 128, dtype, seed=world)  # 1003: padded for every G > 1
    ref = ring_attention_simulated(q.double(), k.double(), v.double(), world, "striped", impl="torch")
    torch_out = ring_attention_simulated(q, k, v, world, "striped", impl="torch")
    out = ring_attention_simulated(q, k, v, world, "striped", impl=impl)
    torch_err = (torch_out.double() - ref).abs().max().item()
    err = (out.double() - ref).abs().max().item()
    assert err <= 2 * torch_err + 1e-3, (err, torch_err)


@pytest.mark.parametrize("world", [1, 2, 4, 8])
@pytest.mark.parametrize("layout", ["striped", "contiguous"])
def test_sm90_kernel_in_ring(monkeypatch, world, layout):
    """The ring through the kernel with LCPROF_RING_KERNEL=sm90 (Hopper only)."""
    _require_kernel()
    import lcprof.kernels.striped_attn as ks

    if not ks.load().sm90_supported():
        pytest.skip("sm90 path needs a compute capability 9.0 device")
    monkeypatch.setenv("LCPROF_RING_KERNEL", "sm90")
    q, k, v = _cuda_inputs(1, 2000, 8, 2, 128, torch.bfloat16, seed=world)
    ref = ring_attention_simulated(q.double(), k.double(), v.double(), world, layout, impl="torch")
    torch_out = ring_attention_simulated(q, k, v, world, layout, impl="torch")
    out = ring_attention_simulated(q, k, v, world, layout, impl="kernel")
    torch_err = (torch_out.double() - ref).abs().max().item()
    assert (out.double() - ref).abs().max().item() <= 2 * torch_err + 1e-3
