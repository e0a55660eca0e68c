"""The striped ring attention CUDA kernel against a float64 reference.

Tolerance rule (flash-attention's): the kernel's max error against the float64
reference (kernel/reference.py on the same, upcast inputs) may be at most twice
the error of torch SDPA in the same dtype against that reference, plus a small
epsilon. Masks SDPA cannot express (striped, offsets) go to SDPA as the
equivalent boolean attn_mask; rows with no allowed key must give out = 0 and
lse = -inf, which SDPA cannot, so they are compared to the reference alone.

Every test runs for both device paths of the kernel (``sm80``: mma.sync, any GPU >= 8.0;
``sm90``: TMA + wgmma, compute capability 9.0 only, skipped elsewhere), through the ``ext``
fixture whose ``fwd`` is the extension's ``fwd`` or ``fwd_sm90``. The sm90-only tests at the end
compare the two paths with each other and run every sm90 pipeline variant.

Run on a GPU machine: ``pytest -m gpu tests/gpu/test_kernel_striped.py``.
"""

from __future__ import annotations

import math

import pytest

pytestmark = pytest.mark.gpu

torch = pytest.importorskip("torch")

from lcprof.kernels.reference import allowed_mask, block_attention_reference  # noqa: E402

EPS = {torch.float16: 1e-4, torch.bfloat16: 4e-4}
DTYPES = [torch.bfloat16, torch.float16]
HEAD_DIMS = [64, 96, 128]
HEADS = {"gqa": (8, 2), "mha": (4, 4)}


@pytest.fixture(scope="module")
def module():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from lcprof.kernels.striped_attn import is_available, load

    ok, reason = is_available()
    if not ok:
        pytest.skip(f"striped attention kernel unavailable: {reason}")
    return load()


class _Path:
    """The extension seen through one device path: ``fwd`` is ``fwd`` or ``fwd_sm90``."""

    def __init__(self, module, path):
        self.module, self.path = module, path
        self.fwd = module.fwd_sm90 if path == "sm90" else module.fwd


@pytest.fixture(scope="module", params=["sm80", "sm90"])
def ext(module, request):
    if request.param == "sm90" and not module.sm90_supported():
        pytest.skip("sm90 path needs a compute capability 9.0 device")
    return _Path(module, request.param)


@pytest.fixture(scope="module")
def sm90(module):
    if not module.sm90_supported():
        pytest.skip("sm90 path needs a compute capability 9.0 device")
    return _Path(module, "sm90")


def _inputs(batch, n_q, n_k, heads, kv_heads, head_dim, dtype, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    q = torch.randn(batch, n_q, heads, head_dim, generator=g, device="cuda", dtype=dtype)
    k = torch.randn(batch, n_k, kv_heads, head_dim, generator=g, device="cuda", dtype=dtype)
    v = torch.randn(batch, n_k, kv_heads, head_dim, generator=g, device="cuda", dtype=dtype)
    return q, k, v


def _sdpa(q, k, v, mask, scale):
    """SDPA in the input dtype with a boolean (n_q, n_k) mask; empty rows -> 0."""
    import torch.nn.functional as F

    group = q.shape[2] // k.shape[2]
    ke = k.repeat_interleave(group, dim=2)  # (batch, n_k, heads, head_dim)
    ve = v.repeat_interleave(group, dim=2)
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), ke.transpose(1, 2), ve.transpose(1, 2), attn_mask=mask, scale=scale
    ).transpose(1, 2)  # (batch, n_q, heads, head_dim)
    nonempty = mask.any(dim=-1) if mask is not None else torch.ones(q.shape[1], dtype=torch.bool, device=q.device)
    return torch.where(nonempty[None, :, None, None], out, torch.zeros_like(out))


def check(ext, q, k, v, *, q_offset=0, q_stride=1, k_offset=0, k_stride=1, causal=True, softmax_scale=None,
          variant=0):
    """Run the kernel and assert the tolerance rule, empty rows and lse."""
    batch, n_q, heads, head_dim = q.shape
    n_k = k.shape[1]
    layout = dict(q_offset=q_offset, q_stride=q_stride, k_offset=k_offset, k_stride=k_stride, causal=causal)
    out, lse = ext.fwd(q, k, v, q_offset, q_stride, k_offset, k_stride, causal, softmax_scale, variant)
    torch.cuda.synchronize()
    assert out.shape == q.shape and out.dtype == q.dtype
    assert lse.shape == (batch, heads, n_q) and lse.dtype == torch.float32
    assert not torch.isnan(out).any(), "NaN in out"
    assert not torch.isnan(lse).any(), "NaN in lse"

    ref_out, ref_lse = block_attention_reference(q.double(), k.double(), v.double(), softmax_scale=softmax_scale,
                                                 **layout)
    mask = allowed_mask(n_q, n_k, device=q.device, **layout)  # (n_q, n_k)
    nonempty = mask.any(dim=-1)  # (n_q,)

    # Empty rows: exactly 0 and -inf.
    assert torch.all(out[:, ~nonempty] == 0), "empty rows must have out = 0"
    assert torch.all(lse[:, :, ~nonempty] == -math.inf), "empty rows must have lse = -inf"

    err_kernel = (out.double() - ref_out).abs().max().item() if out.numel() else 0.0
    if nonempty.any() and n_k > 0:
        scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(head_dim)
        sdpa_out = _sdpa(q, k, v, mask if causal else None, scale)
        err_sdpa = (sdpa_out.double() - ref_out).abs().max().item()
    else:
        err_sdpa = 0.0
    bound = 2 * err_sdpa + EPS[q.dtype]
    assert err_kernel <= bound, f"kernel max error {err_kernel:.3e} > 2 * sdpa error {err_sdpa:.3e} + eps"

    torch.testing.assert_close(lse, ref_lse.float(), rtol=1e-3, atol=1e-3)
    return out, lse


# ------------------------------------------------------------- layouts -----


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("head_dim", HEAD_DIMS)
@pytest.mark.parametrize("heads", list(HEADS), ids=list(HEADS))
@pytest.mark.parametrize("r", range(4))
@pytest.mark.parametrize("s", range(4))
def test_striped_g4_every_rank_pair(ext, dtype, head_dim, heads, r, s):
    """G=4: every (rank, source) step; 200 tokens per rank is not a tile multiple."""
    h, kvh = HEADS[heads]
    q, k, v = _inputs(1, 200, 200, h, kvh, head_dim, dtype, seed=r * 4 + s)
    check(ext, q, k, v, q_offset=r, q_stride=4, k_offset=s, k_stride=4, causal=True)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("head_dim", HEAD_DIMS)
@pytest.mark.parametrize("G", [1, 2, 8])
def test_striped_group_sizes(ext, dtype, head_dim, G):
    h, kvh = HEADS["gqa"]
    pairs = {(0, 0), (G - 1, 0), (0, G - 1), (G // 2, G - 1)}
    for r, s in sorted(pairs):
        q, k, v = _inputs(1, 300, 300, h, kvh, head_dim, dtype, seed=G * 100 + r * 10 + s)
        check(ext, q, k, v, q_offset=r, q_stride=G, k_offset=s, k_stride=G, causal=True)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("head_dim", HEAD_DIMS)
@pytest.mark.parametrize("rs", [(0, 0), (1, 0), (2, 1), (3, 0), (0, 1), (1, 3)], ids=lambda rs: f"r{rs[0]}s{rs[1]}")
def test_contiguous_layout(ext, dtype, head_dim, rs):
    """L tokens per rank: diagonal is causal, s < r unmasked, s > r fully empty."""
    r, s = rs
    L = 257
    h, kvh = HEADS["gqa"]
    q, k, v = _inputs(1, L, L, h, kvh, head_dim, dtype, seed=r * 7 + s)
    out, lse = check(ext, q, k, v, q_offset=r * L, q_stride=1, k_offset=s * L, k_stride=1, causal=True)
    if s > r:
        assert torch.all(out == 0) and torch.all(lse == -math.inf)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("head_dim", HEAD_DIMS)
@pytest.mark.parametrize("heads", list(HEADS), ids=list(HEADS))
@pytest.mark.parametrize("n_q,n_k", [(190, 333), (1000, 65), (64, 64), (1, 1), (129, 7)])
def test_non_causal(ext, dtype, head_dim, heads, n_q, n_k):
    h, kvh = HEADS[heads]
    q, k, v = _inputs(1, n_q, n_k, h, kvh, head_dim, dtype, seed=n_q + n_k)
    check(ext, q, k, v, causal=False)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("head_dim", HEAD_DIMS)
@pytest.mark.parametrize(
    "n_q,n_k,q_offset",
    [(100, 300, 200), (300, 100, 0), (77, 500, 423), (500, 77, 0), (130, 130, 5)],
    ids=["bottom_right", "top_left_long_q", "kv_cache_tail", "long_q_short_k", "shifted"],
)
def test_causal_unequal_lengths(ext, dtype, head_dim, n_q, n_k, q_offset):
    h, kvh = HEADS["gqa"]
    q, k, v = _inputs(1, n_q, n_k, h, kvh, head_dim, dtype, seed=n_q * 3 + n_k)
    check(ext, q, k, v, q_offset=q_offset, causal=True)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("head_dim", HEAD_DIMS)
def test_mixed_position_strides(ext, dtype, head_dim):
    """q_stride != k_stride and a negative offset: the general positional rule."""
    q, k, v = _inputs(1, 211, 157, 4, 2, head_dim, dtype, seed=5)
    check(ext, q, k, v, q_offset=-40, q_stride=3, k_offset=7, k_stride=2, causal=True)


# --------------------------------------------------------- empty rows -----


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_fully_empty_rows(ext, dtype):
    """Striped r=0, s=1: query 0 sees nothing; a block in the future: all rows empty."""
    q, k, v = _inputs(2, 150, 150, 8, 2, 128, dtype, seed=1)
    out, lse = check(ext, q, k, v, q_offset=0, q_stride=4, k_offset=1, k_stride=4)
    assert torch.all(out[:, 0] == 0) and torch.all(lse[:, :, 0] == -math.inf)
    assert torch.isfinite(lse[:, :, 1:]).all()
    out, lse = check(ext, q, k, v, q_offset=0, q_stride=1, k_offset=1000, k_stride=1)
    assert torch.all(out == 0) and torch.all(lse == -math.inf)


def test_zero_keys(ext):
    q, _, _ = _inputs(1, 70, 1, 4, 2, 64, torch.bfloat16)
    k = torch.empty(1, 0, 2, 64, device="cuda", dtype=torch.bfloat16)
    out, lse = ext.fwd(q, k, k, 0, 1, 0, 1, True, None, 0)
    assert torch.all(out == 0) and torch.all(lse == -math.inf)


# ------------------------------------------------------ larger shapes -----


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("head_dim", [96, 128])
def test_long_causal_against_sdpa_flash(ext, dtype, head_dim):
    """Many tiles, GQA, batch 2: plain causal equals SDPA's is_causal."""
    import torch.nn.functional as F

    q, k, v = _inputs(2, 2048, 2048, 8, 2, head_dim, dtype, seed=11)
    out, lse = check(ext, q, k, v, causal=True)
    ke, ve = k.repeat_interleave(4, dim=2), v.repeat_interleave(4, dim=2)
    sd = F.scaled_dot_product_attention(q.transpose(1, 2), ke.transpose(1, 2), ve.transpose(1, 2), is_causal=True)
    assert (out.float() - sd.transpose(1, 2).float()).abs().max().item() < 2e-2


@pytest.mark.parametrize("G", [2, 4])
def test_striped_ring_merges_to_global_causal(ext, G):
    """Merging a rank's G steps by lse gives causal attention on the full sequence."""
    import torch.nn.functional as F

    L, heads, kv_heads, head_dim = 384, 8, 2, 128
    n = G * L
    qg, kg, vg = _inputs(1, n, n, heads, kv_heads, head_dim, torch.bfloat16, seed=G)
    ke, ve = kg.repeat_interleave(4, dim=2), vg.repeat_interleave(4, dim=2)
    full = F.scaled_dot_product_attention(qg.transpose(1, 2), ke.transpose(1, 2), ve.transpose(1, 2),
                                          is_causal=True).transpose(1, 2)  # (1, n, heads, head_dim)
    full_ref, _ = block_attention_reference(qg.double(), kg.double(), vg.double(), causal=True)
    for r in range(G):
        q = qg[:, r::G].contiguous()  # rank r's tokens r, r+G, ...
        acc = torch.zeros(1, L, heads, head_dim, device="cuda", dtype=torch.float64)
        lse_acc = torch.full((1, heads, L), -math.inf, device="cuda", dtype=torch.float64)
        for s in range(G):
            out, lse = ext.fwd(q, kg[:, s::G].contiguous(), vg[:, s::G].contiguous(), r, G, s, G, True, None, 0)
            new = torch.logaddexp(lse_acc, lse.double())
            w_old = torch.exp(lse_acc - new).nan_to_num(0.0).transpose(1, 2).unsqueeze(-1)  # (1, L, heads, 1)
            w_new = torch.exp(lse.double() - new).nan_to_num(0.0).transpose(1, 2).unsqueeze(-1)
            acc = w_old * acc + w_new * out.double()
            lse_acc = new
        err_ring = (acc - full_ref[:, r::G]).abs().max().item()
        err_sdpa = (full[:, r::G].double() - full_ref[:, r::G]).abs().max().item()
        assert err_ring <= 2 * err_sdpa + EPS[torch.bfloat16]


def test_batch_and_custom_scale(ext):
    q, k, v = _inputs(3, 333, 333, 8, 8, 64, torch.float16, seed=3)
    check(ext, q, k, v, q_offset=1, q_stride=2, k_offset=0, k_stride=2, causal=True, softmax_scale=0.05)


@pytest.mark.parametrize("variant", [1, 2, 3, 4])
@pytest.mark.parametrize("head_dim", HEAD_DIMS)
def test_tuning_variants(module, variant, head_dim):
    """Every sm80 tile configuration the benchmark may time is correct too."""
    ext = _Path(module, "sm80")
    q, k, v = _inputs(1, 700, 700, 8, 2, head_dim, torch.bfloat16, seed=variant)
    check(ext, q, k, v, q_offset=2, q_stride=4, k_offset=3, k_stride=4, variant=variant)
    check(ext, q, k, v, causal=False, variant=variant)


def test_wrapper_matches_extension(ext):
    from lcprof.kernels import striped_block_attention

    q, k, v = _inputs(1, 100, 120, 4, 2, 64, torch.bfloat16)
    out, lse = striped_block_attention(q, k, v, q_offset=1, q_stride=2, k_offset=0, k_stride=2, path=ext.path)
    out2, lse2 = ext.fwd(q, k, v, 1, 2, 0, 2, True, None, 0)
    assert torch.equal(out, out2) and torch.equal(lse, lse2)


def test_runs_on_current_stream(ext):
    q, k, v = _inputs(1, 500, 500, 4, 2, 128, torch.bfloat16)
    expected, _ = ext.fwd(q, k, v, 0, 1, 0, 1, True, None, 0)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        out, _ = ext.fwd(q, k, v, 0, 1, 0, 1, True, None, 0)
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    assert torch.equal(out, expected)


# ------------------------------------------------------------ validation -----

_VALIDATION_SCRIPT = r"""
import sys
import torch
from lcprof.kernels.striped_attn import load
module = load()
class Ext:
    fwd = module.fwd_sm90 if sys.argv[1] == "sm90" else module.fwd
ext = Ext()
bf = torch.bfloat16
def mk(hq, hk, d, n=64):
    return tuple(torch.randn(1, n, h, d, device="cuda", dtype=bf) for h in (hq, hk, hk))
q, k, v = mk(4, 2, 64)
cases = [
    ("dtype", lambda: ext.fwd(q.float(), k.float(), v.float(), 0, 1, 0, 1, True, None, 0)),
    ("CUDA", lambda: ext.fwd(q.cpu(), k.cpu(), v.cpu(), 0, 1, 0, 1, True, None, 0)),
    ("contiguous", lambda: ext.fwd(q.transpose(1, 2), k, v, 0, 1, 0, 1, True, None, 0)),
    ("head_dim must be 64, 96 or 128, got 80", lambda: ext.fwd(*mk(4, 2, 80), 0, 1, 0, 1, True, None, 0)),
    ("heads (6) must be a multiple of kv_heads (4)",
     lambda: ext.fwd(mk(6, 4, 64)[0], *mk(4, 4, 64)[1:], 0, 1, 0, 1, True, None, 0)),
    ("same shape", lambda: ext.fwd(q, k, v[:, :10].contiguous(), 0, 1, 0, 1, True, None, 0)),
    ("q_stride and k_stride must be >= 1, got 0 and 1", lambda: ext.fwd(q, k, v, 0, 0, 0, 1, True, None, 0)),
    ("softmax_scale must be finite and > 0", lambda: ext.fwd(q, k, v, 0, 1, 0, 1, True, -0.5, 0)),
    ("same dtype", lambda: ext.fwd(q, k.half(), v, 0, 1, 0, 1, True, None, 0)),
    ("sm90 variant 99" if sys.argv[1] == "sm90" else "unknown variant 99",
     lambda: ext.fwd(q, k, v, 0, 1, 0, 1, True, None, 99)),
]
for expected, call in cases:
    try:
        call()
    except RuntimeError as exc:
        msg = str(exc).splitlines()[0]
        assert expected in msg, (expected, msg)
        print("ok:", msg, flush=True)
    else:
        raise AssertionError(f"no error for {expected!r}")
"""


def test_rejects_bad_inputs(ext):
    """Bad inputs raise RuntimeError with a message naming the problem.

    Runs in a child process: formatting an error message once crashed the
    whole interpreter (see the binding), which must fail this test only.
    """
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p))
    proc = subprocess.run([sys.executable, "-c", _VALIDATION_SCRIPT, ext.path], capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, f"rc={proc.returncode}\n{proc.stdout}\n{proc.stderr[-3000:]}"
    assert proc.stdout.count("ok:") == 10


# ------------------------------------------------------ sm90 path only -----

SM90_VARIANTS = [1, 2, 3]  # serial, overlapped, overlapped + ping-pong


def _check_against_sm80(module, sm90_ext, q, k, v, variant, **layout):
    """The sm90 result passes the tolerance rule and stays as close to the sm80 kernel's as the
    two are to the float64 reference (both bf16/fp16 roundings of the same attention)."""
    out90, lse90 = check(sm90_ext, q, k, v, variant=variant, **layout)
    pos = [layout.get(n, d) for n, d in (("q_offset", 0), ("q_stride", 1), ("k_offset", 0), ("k_stride", 1),
                                         ("causal", True))]
    out80, lse80 = module.fwd(q, k, v, *pos, layout.get("softmax_scale"), 0)
    ref, _ = block_attention_reference(q.double(), k.double(), v.double(), **layout)
    err80 = (out80.double() - ref).abs().max().item()
    err90 = (out90.double() - ref).abs().max().item()
    diff = (out90.double() - out80.double()).abs().max().item()
    assert diff <= err80 + err90 + EPS[q.dtype], (diff, err80, err90)
    finite = torch.isfinite(lse80)
    assert torch.equal(finite, torch.isfinite(lse90))
    torch.testing.assert_close(lse90[finite], lse80[finite], rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("variant", SM90_VARIANTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("head_dim", HEAD_DIMS)
@pytest.mark.parametrize("heads", [(8, 2), (4, 4), (6, 2), (7, 1), (16, 2)], ids=["g4", "mha", "g3", "mqa7", "g8"])
def test_sm90_variants_striped_and_causal(module, sm90, variant, dtype, head_dim, heads):
    """Every pipeline, both dtypes, every head dim, GQA packing with group 1, 3, 4, 7 and 8:
    a striped step with the strict mask (odd length: several key tiles, a partial last tile),
    plain causal over many tiles, and a non-causal block with n_q != n_k."""
    h, kvh = heads
    q, k, v = _inputs(1, 555, 555, h, kvh, head_dim, dtype, seed=variant * 31 + head_dim + h)
    _check_against_sm80(module, sm90, q, k, v, variant, q_offset=0, q_stride=4, k_offset=3, k_stride=4, causal=True)
    _check_against_sm80(module, sm90, q, k, v, variant, causal=True)
    q2, k2, v2 = _inputs(2, 200, 333, h, kvh, head_dim, dtype, seed=variant + 7)
    _check_against_sm80(module, sm90, q2, k2, v2, variant, causal=False)


@pytest.mark.parametrize("variant", SM90_VARIANTS)
@pytest.mark.parametrize("head_dim", HEAD_DIMS)
def test_sm90_variants_long_causal_many_tiles(module, sm90, variant, head_dim):
    """4096 queries x 4096 keys: 32 key tiles per CTA at the end, K/V stages reused many times."""
    q, k, v = _inputs(1, 4096, 4096, 8, 2, head_dim, torch.bfloat16, seed=head_dim + variant)
    _check_against_sm80(module, sm90, q, k, v, variant, causal=True)


@pytest.mark.parametrize("variant", SM90_VARIANTS)
def test_sm90_variants_small_and_empty(module, sm90, variant):
    """One query row, fewer keys than a tile, and a block entirely in the future."""
    for n_q, n_k, q_offset in [(1, 1, 0), (1, 300, 299), (3, 5, 0), (129, 7, 0), (64, 64, 0)]:
        q, k, v = _inputs(1, n_q, n_k, 8, 2, 128, torch.bfloat16, seed=n_q + n_k)
        check(sm90, q, k, v, q_offset=q_offset, causal=True, variant=variant)
    q, k, v = _inputs(1, 150, 150, 8, 2, 64, torch.float16, seed=2)
    out, lse = check(sm90, q, k, v, q_offset=0, q_stride=1, k_offset=1000, k_stride=1, variant=variant)
    assert torch.all(out == 0) and torch.all(lse == -math.inf)


def test_sm90_rejected_off_hopper_or_runs_on_hopper(module):
    """On a device that is not 9.0 the sm90 entry point refuses in one line; on 9.0 it runs."""
    q, k, v = _inputs(1, 64, 64, 4, 2, 64, torch.bfloat16)
    if module.sm90_supported():
        out, _ = module.fwd_sm90(q, k, v, 0, 1, 0, 1, True, None, 0)
        assert out.shape == q.shape
    else:
        with pytest.raises(RuntimeError, match="compute capability 9.0"):
            module.fwd_sm90(q, k, v, 0, 1, 0, 1, True, None, 0)
