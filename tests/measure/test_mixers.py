"""The measured mixer layers against their step-by-step recurrences (fp64), FlopCounterMode and
the spec's parameter and state counts.

* prefill (chunked, several chunks, the last one partial) == the token-by-token recurrence of
  :mod:`lcprof.measure.mixers.reference` (the papers' equations, no chunking, its own conv);
* prefill of a prefix, then prefill or decode steps from the carried state == the recurrence over
  the whole sequence;
* ``FlopCounterMode`` (mm/bmm and convolution) == ``lcprof.cost.kinds`` FLOPs, except Gated
  DeltaNet's triangular solve, which FlopCounterMode does not count (checked by hand below);
* the layer's parameters == ``spec.params``; its carried state == ``spec.state_elements()``;
* the peak of live tensor bytes (``LiveBytes``) == ``lcprof.cost.kinds`` activation steps, to the
  byte, in fp32 and bf16, prefill, decode and after a cached prefix;
* every step, not only the peak: the layers mark their steps (``tensor_audit.mark``) and the most
  bytes live in each marked segment == that step of the cost model, with the same step names.
"""

from __future__ import annotations

import gc

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from lcprof.cost.kinds import mixer_activation_bytes, mixer_activation_steps, mixer_ops, mixer_state_bytes
from lcprof.measure.mixers import RECURRENT, build_mixer
from lcprof.measure.tensor_audit import LiveBytes
from lcprof.spec import GatedDeltaNetSpec, KimiDeltaSpec, LightningSpec, Mamba2Spec, MambaSpec

F64 = torch.float64
TORCH = {"fp32": torch.float32, "bf16": torch.bfloat16}

SPECS = {
    "mamba2": Mamba2Spec(hidden_size=32, n_heads=4, head_dim=8, d_state=6, n_groups=2, d_conv=4, chunk_size=5),
    "mamba2-gate-first-bias": Mamba2Spec(hidden_size=24, n_heads=6, head_dim=4, d_state=5, n_groups=3, d_conv=3,
                                         chunk_size=4, norm_before_gate=True, proj_bias=True, conv_bias=False),
    "mamba2-no-norm": Mamba2Spec(hidden_size=16, n_heads=2, head_dim=8, d_state=4, n_groups=1, d_conv=4,
                                 chunk_size=6, norm=False),
    "gdn": GatedDeltaNetSpec(hidden_size=32, num_k_heads=2, num_v_heads=4, head_k_dim=8, head_v_dim=6, conv_kernel=4),
    "gdn-mha": GatedDeltaNetSpec(hidden_size=16, num_k_heads=3, num_v_heads=3, head_k_dim=4, head_v_dim=5, conv_kernel=2),
    "kda": KimiDeltaSpec(hidden_size=24, n_heads=3, head_dim=8, conv_kernel=4),
    "kda-narrow": KimiDeltaSpec(hidden_size=16, n_heads=2, head_dim=3, conv_kernel=2),
    "lightning": LightningSpec(hidden_size=32, n_heads=4, head_dim=8),
    "lightning-6": LightningSpec(hidden_size=24, n_heads=6, head_dim=4),
    "mamba-jamba": MambaSpec(hidden_size=32, d_inner=64, d_state=6, d_conv=4, dt_rank=2, bcdt_norm="weighted"),
    "mamba-falcon": MambaSpec(hidden_size=16, d_inner=32, d_state=4, d_conv=3, dt_rank=3, bcdt_norm="unweighted",
                              conv_bias=False, proj_bias=True),
}
CHUNK = {"gated_deltanet": 5, "kda": 5, "lightning": 5}  # small chunks so 13 tokens span several
SUB = 2  # KDA's sub-chunks: 5-token chunks hold three (2, 2, 1), so both pair products run


def layer(name, dtype=F64):
    spec = SPECS[name]
    kw = {"chunk": CHUNK[spec.kind]} if spec.kind == "gated_deltanet" else (
        {"block": CHUNK[spec.kind]} if spec.kind == "lightning" else (
            {"chunk": CHUNK[spec.kind], "sub": SUB} if spec.kind == "kda" else {}))
    return spec, build_mixer(spec, seed=3, **kw).to(dtype).eval(), kw


def inputs(spec, b, n, seed=0, dtype=F64):
    return torch.randn(b, n, spec.hidden_size, generator=torch.Generator().manual_seed(seed)).to(dtype)


def cost_chunk(spec):
    return CHUNK.get(spec.kind)


def cost_kw(spec) -> dict:
    """The chunking the cost model is asked about: the measured layer's (KDA: its sub-chunks too)."""
    return {"chunk": cost_chunk(spec), **({"sub": SUB} if spec.kind == "kda" else {})}


@pytest.mark.parametrize("name", list(SPECS))
@pytest.mark.parametrize("n", [1, 5, 13])
def test_prefill_equals_the_recurrence(name, n):
    spec, m, _ = layer(name)
    x = inputs(spec, 2, n)
    with torch.no_grad():
        y, st = m(x)
        y_ref, conv_ref, s_ref = RECURRENT[spec.kind](m, x)
    scale = y_ref.abs().max().item()
    assert scale > 1e-3  # a real signal, not zeros
    assert torch.allclose(y, y_ref, rtol=1e-10, atol=1e-12 * scale)
    assert torch.allclose(st.ssm, s_ref, rtol=1e-10, atol=1e-12)
    if conv_ref is not None:
        assert torch.equal(st.conv, conv_ref)


@pytest.mark.parametrize("name", list(SPECS))
@pytest.mark.parametrize("split", [1, 7, 11])
def test_carried_state_then_decode_equals_the_recurrence(name, split):
    # prefill `split` tokens, then the rest as one prefill from the carried state, and as decode
    # steps one token at a time: both equal the recurrence over all 14 tokens
    spec, m, _ = layer(name)
    x = inputs(spec, 2, 14, seed=1)
    with torch.no_grad():
        y_ref, _, s_ref = RECURRENT[spec.kind](m, x)
        y0, st = m(x[:, :split])
        y1, st1 = m(x[:, split:], st)
        steps, cur = [], st
        for t in range(split, 14):
            yt, cur = m(x[:, t:t + 1], cur)
            steps.append(yt)
    tol = dict(rtol=1e-10, atol=1e-12 * y_ref.abs().max().item())
    assert torch.allclose(torch.cat([y0, y1], 1), y_ref, **tol)
    assert torch.allclose(torch.cat([y0, *steps], 1), y_ref, **tol)
    assert torch.allclose(st1.ssm, s_ref, rtol=1e-10, atol=1e-12)
    assert torch.allclose(cur.ssm, s_ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", list(SPECS))
@pytest.mark.parametrize("n,prefix", [(13, 0), (5, 0), (1, 0), (1, 6), (9, 4)])
def test_flop_counter_equals_the_cost_model(name, n, prefix):
    spec, m, _ = layer(name, torch.float32)
    with torch.no_grad():
        st = m(inputs(spec, 2, prefix, seed=2, dtype=torch.float32))[1] if prefix else None
        with FlopCounterMode(display=False) as fc:
            m(inputs(spec, 2, n, dtype=torch.float32), st)
    ops = mixer_ops(spec, n, prefix, batch=2, dtype="fp32", **cost_kw(spec))
    # not matrix products: the triangular solve; KDA's diagonal sub-chunk pairs (summed elementwise)
    counted = sum(float(op.flops) for op in ops if op.name not in ("mixer/solve", "mixer/kk_diag", "mixer/qk_diag"))
    assert fc.get_total_flops() == counted


def test_deltanet_flops_by_hand():
    # Gated DeltaNet, Hv = 4 value heads (2 key heads), dk = 8, dv = 6, hidden 32, conv 4, batch 2,
    # n = 13 in chunks of 5 (5, 5, 3): sum l^2 = 59, sum l(l+1)/2 = 36, sum l(l-1) = 46
    spec = SPECS["gdn"]
    ops = {op.name: float(op.flops) for op in mixer_ops(spec, 13, batch=2, dtype="fp32", chunk=5)}
    t = 2 * 13
    assert ops["mixer/in_proj_qkvz"] == 2 * t * 32 * (2 * 16 + 2 * 24)
    assert ops["mixer/in_proj_ba"] == 2 * t * 32 * 8
    assert ops["mixer/conv"] == 2 * t * (2 * 16 + 24) * 4
    assert ops["mixer/kk"] == ops["mixer/qk"] == 2 * 2 * 4 * 59 * 8  # K K^T, Q K^T over l^2 pairs
    assert ops["mixer/solve"] == 2 * 4 * (8 + 6) * 46  # forward substitution, unit diagonal
    assert ops["mixer/intra_v"] == 2 * 2 * 4 * 59 * 6
    assert ops["mixer/state_read"] == 2 * 2 * t * 4 * 8 * 6  # W S and (Q o e^g) S
    assert ops["mixer/state_write"] == 2 * t * 4 * 8 * 6
    assert ops["mixer/out_proj"] == 2 * t * 24 * 32
    # decode: S^T k, rank-1 update, S^T q = 6 dk dv per value head
    dec = {op.name: float(op.flops) for op in mixer_ops(spec, 1, 100, batch=2, dtype="fp32")}
    assert dec["mixer/state_read"] + dec["mixer/state_write"] == 2 * 6 * 4 * 8 * 6
    assert dec["mixer/kk"] == dec["mixer/solve"] == dec["mixer/qk"] == dec["mixer/intra_v"] == 0


def test_kda_flops_by_hand():
    # KDA, H = 3 heads of d = 8, hidden 24, conv 4, batch 2, n = 13 in chunks of 5 (5, 5, 3), sub-chunks
    # of 2: a 5-chunk's sub-chunks are (2, 2, 1) -> 4 + 4 + 1 = 9 pairs inside them, (25 - 9) / 2 = 8
    # below them; the 3-chunk's (2, 1) -> 5 inside, 2 below. Inside: 9 + 9 + 5 = 23, below: 18.
    spec = SPECS["kda"]
    ops = {op.name: op for op in mixer_ops(spec, 13, batch=2, dtype="fp32", chunk=5, sub=2)}
    fl = {k: float(v.flops) for k, v in ops.items()}
    t = 2 * 13
    assert fl["mixer/q_proj"] == fl["mixer/k_proj"] == fl["mixer/v_proj"] == 2 * t * 24 * 24
    assert fl["mixer/f_a_proj"] == fl["mixer/g_a_proj"] == 2 * t * 24 * 8
    assert fl["mixer/f_b_proj"] == fl["mixer/g_b_proj"] == 2 * t * 8 * 24
    assert fl["mixer/b_proj"] == 2 * t * 24 * 3
    assert fl["mixer/o_proj"] == 2 * t * 24 * 24
    assert fl["mixer/conv"] == 2 * t * 72 * 4
    assert fl["mixer/kk"] == fl["mixer/qk"] == 2 * 2 * 3 * 8 * 18  # below the diagonal sub-chunks: products
    assert fl["mixer/kk_diag"] == fl["mixer/qk_diag"] == 2 * 2 * 3 * 8 * 23  # inside them: elementwise
    # useful: K K^T strictly below the diagonal (5-chunk: 1 + 1 inside, 3-chunk: 1 -> 5 inside), Q K^T causal
    assert float(ops["mixer/kk_diag"].useful_flops) == 2 * 2 * 3 * 8 * 5
    assert float(ops["mixer/qk_diag"].useful_flops) == 2 * 2 * 3 * 8 * (5 + 13)
    assert fl["mixer/solve"] == 2 * 3 * (8 + 8) * (20 + 20 + 6)  # sum l (l - 1), unit diagonal
    assert fl["mixer/intra_v"] == 2 * 2 * 3 * 8 * (25 + 25 + 9)
    assert fl["mixer/state_read"] == 2 * 2 * t * 3 * 8 * 8 and fl["mixer/state_write"] == 2 * t * 3 * 8 * 8
    # decode: S^T k, rank-1 update, S^T q = 6 d^2 per head; no pair products
    dec = {op.name: float(op.flops) for op in mixer_ops(spec, 1, 100, batch=2, dtype="fp32")}
    assert dec["mixer/state_read"] + dec["mixer/state_write"] == 2 * 6 * 3 * 8 * 8
    assert dec["mixer/kk"] == dec["mixer/kk_diag"] == dec["mixer/qk"] == dec["mixer/qk_diag"] == 0
    # the default chunking is fla's chunk_kda: 64-token chunks, 16-token sub-chunks. n = 64: 4 x 16^2 =
    # 1024 pairs inside, (64^2 - 1024) / 2 = 1536 below
    one = {op.name: float(op.flops) for op in mixer_ops(spec, 64, dtype="fp32")}
    assert one["mixer/kk_diag"] == 2 * 3 * 8 * 1024 and one["mixer/kk"] == 2 * 3 * 8 * 1536


def test_kda_bytes_by_hand():
    # the fused kernels' traffic, bf16 (2 B), batch 2, n = 13 (t = 26 tokens), H = 3 heads of d = 8 (w = 24)
    spec = SPECS["kda"]
    by = {op.name: float(op.bytes) for op in mixer_ops(spec, 13, batch=2, dtype="bf16", chunk=5, sub=2)}
    t, w, H, d = 26, 24, 3, 8
    # the decay's gate: f_b's output read (2 t w), dt_bias and A_log (fp32) read, g written in fp32 (4 t w)
    assert by["mixer/gate_prep"] == 2 * t * w + 4 * w + 4 * H + 4 * t * w == 3852
    # q, k, v read and o written (2 B each: 2 t 4w), g per channel (4 t w) and beta (4 t H) read in fp32,
    # the state (b H d^2) read and written in fp32 (the engines keep KDA's state so, whatever is asked)
    assert by["mixer/core_io"] == 2 * t * 4 * w + 4 * t * w + 4 * t * H + 2 * 4 * 2 * H * d * d == 10872
    bf16_state = {op.name: float(op.bytes) for op in mixer_ops(spec, 13, batch=2, dtype="bf16", state_dtype="bf16",
                                                              chunk=5, sub=2)}
    assert bf16_state["mixer/core_io"] == 10872
    # the gated norm: o and the gate z read, y written (2 t 3w), the o_norm weight (d)
    assert by["mixer/norm"] == 2 * t * 3 * w + 2 * d == 3760


@pytest.mark.parametrize("name", list(SPECS))
def test_parameters_and_state_match_the_spec(name):
    spec, m, _ = layer(name, torch.float32)
    assert sum(p.numel() for p in m.parameters()) == spec.params
    with torch.no_grad():
        _, st = m(inputs(spec, 3, 7, dtype=torch.float32))
    el = spec.state_elements()
    assert st.ssm.numel() == 3 * sum(v for k, v in el.items() if k != "conv")
    assert (0 if st.conv is None else st.conv.numel()) == 3 * el.get("conv", 0)
    assert st.nbytes == 3 * mixer_state_bytes(spec, "fp32")
    # the state in bf16 (vLLM's default for a bf16 model) and in fp32 (mamba_ssm_cache_dtype)
    mb = build_mixer(spec).to(torch.bfloat16)
    with torch.no_grad():
        _, sb = mb(inputs(spec, 1, 3, dtype=torch.bfloat16))
        _, sf = mb(inputs(spec, 1, 3, dtype=torch.bfloat16), state_dtype=torch.float32)
    assert sb.nbytes == mixer_state_bytes(spec, "bf16")
    assert sf.nbytes == mixer_state_bytes(spec, "bf16", state_dtype="fp32")


@pytest.mark.parametrize("name", ["mamba2", "gdn", "kda", "lightning", "mamba-jamba"])
def test_bf16_layer_tracks_the_fp64_reference(name):
    # the low-precision layer (core in fp32, state carried in bf16) stays within bf16 rounding of
    # the fp64 recurrence: relative error of the output below 3 %
    spec, m64, _ = layer(name)
    _, m16, _ = layer(name, torch.bfloat16)
    x = inputs(spec, 2, 13)
    with torch.no_grad():
        ref = RECURRENT[spec.kind](m64, x)[0]
        got = m16(x.to(torch.bfloat16))[0].to(F64)
    assert ((got - ref).norm() / ref.norm()).item() < 0.03


# ----- activation memory against LiveBytes ---------------------------------------------------------

def traced_peak(spec, m, n, *, b, dtype, prefix):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(b, n, spec.hidden_size, generator=g).to(dtype)
    st = None
    with torch.no_grad():
        if prefix:
            st = m(torch.randn(b, prefix, spec.hidden_size, generator=g).to(dtype))[1]
        m(x, st)  # the cached (l x l) masks are built once, as a model builds them once per forward
    gc.collect()
    exclude = list(m.parameters()) + ([] if st is None else [t for t in (st.conv, st.ssm) if t is not None])
    with torch.no_grad(), LiveBytes(exclude=exclude) as lb:
        lb.track(x)
        m(x, st)
    return lb


@pytest.mark.parametrize("name", list(SPECS))
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("n,b,prefix", [(1, 1, 4), (3, 2, 0), (13, 2, 4), (40, 1, 0)])
def test_activation_peak_matches_the_layer_to_the_byte(name, dtype, n, b, prefix):
    spec, m, kw = layer(name, TORCH[dtype])
    lb = traced_peak(spec, m, n, b=b, dtype=TORCH[dtype], prefix=prefix)
    steps = mixer_activation_steps(spec, n, batch=b, dtype=dtype, prefix=prefix, **cost_kw(spec))
    top = max(steps, key=lambda k: float(steps[k][0]))
    assert int(steps[top][0]) == lb.peak_bytes, (top, lb.peak_step, lb.peak_tensors)
    assert int(mixer_activation_bytes(spec, n, batch=b, dtype=dtype, prefix=prefix,
                                      **cost_kw(spec))[0]) == lb.peak_bytes


def test_activation_peaks_move_between_steps():
    # the count is checked where different steps peak: the chunk loop for short inputs, the gated
    # norm or the conv for long ones, the outer-product update for decode
    seen = set()
    for name in ("mamba2", "gdn", "lightning", "mamba-jamba"):
        spec = SPECS[name]
        for n in (1, 13, 40, 4096):
            for dtype in ("fp32", "bf16"):
                steps = mixer_activation_steps(spec, n, dtype=dtype, **cost_kw(spec))
                seen.add(max(steps, key=lambda k: float(steps[k][0])))
    assert len(seen) >= 6, seen


def measured_steps(lb) -> dict[str, int]:
    """The layer's marked segments; the cost model's steps of this case are compared with them."""
    assert lb.unmarked_bytes == 0  # nothing is allocated after the last mark
    assert max(lb.steps.values()) == lb.peak_bytes  # the segments cover the whole call
    return lb.steps


def predicted_steps(steps) -> dict[str, int]:
    """The cost model's steps that run in this case (decode's steps are 0 for a prefill and the
    chunk loop's for decode: the layer does not reach them)."""
    return {k: int(v[0]) for k, v in steps.items() if float(v[0]) != 0.0}


@pytest.mark.parametrize("name", list(SPECS))
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("n,b,prefix", [(1, 1, 4), (3, 2, 0), (13, 2, 4), (40, 1, 0)])
def test_every_activation_step_matches_its_segment_of_the_layer(name, dtype, n, b, prefix):
    # the peak of each marked segment of the layer's run (e.g. mixer/chunk_cb: one chunk's x, B, C,
    # decays and C B^T, the largest over the chunks) == the cost model's bytes at that step, to the
    # byte; the names agree both ways (a renamed or missing step fails)
    spec, m, _ = layer(name, TORCH[dtype])
    lb = traced_peak(spec, m, n, b=b, dtype=TORCH[dtype], prefix=prefix)
    steps = mixer_activation_steps(spec, n, batch=b, dtype=dtype, prefix=prefix, **cost_kw(spec))
    assert predicted_steps(steps) == measured_steps(lb)


@pytest.mark.parametrize("name", list(SPECS))
def test_activation_step_defaults_are_one_bf16_sequence(name):
    # without batch, dtype or prefix the steps are those of one fresh sequence in bf16
    spec, m, _ = layer(name, torch.bfloat16)
    lb = traced_peak(spec, m, 13, b=1, dtype=torch.bfloat16, prefix=0)
    assert predicted_steps(mixer_activation_steps(spec, 13, **cost_kw(spec))) == measured_steps(lb)


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_kda_steps_where_their_rarer_terms_peak(dtype):
    # long chunks of narrow heads (40 tokens, sub-chunks of 2, d = 3): at the pair loop's fullest, a late
    # sub-chunk's decayed keys before it (i0 d) and its product with them (l_I i0) outweigh a diagonal
    # sub-chunk's (l_I, l_I, d) decays; and one token of one-channel heads: -exp(A_log)'s two (H,) tensors
    # outweigh the softplus' second (t, w) copy at the gates
    from lcprof.cost.kinds.kda import _pair_step

    spec = SPECS["kda-narrow"]
    assert float(_pair_step(40, 3, 2)) == 2 * 2 * 3 + 38 * 3 + 2 * 38 > 2 * 2 * 2 * 3 + 2 * 2
    m = build_mixer(spec, seed=3, chunk=40, sub=2).to(TORCH[dtype]).eval()
    lb = traced_peak(spec, m, 40, b=1, dtype=TORCH[dtype], prefix=0)
    assert predicted_steps(mixer_activation_steps(spec, 40, dtype=dtype, chunk=40, sub=2)) == measured_steps(lb)
    one = KimiDeltaSpec(hidden_size=2, n_heads=4, head_dim=1, conv_kernel=2)
    m1 = build_mixer(one, seed=3).to(TORCH[dtype]).eval()
    lb1 = traced_peak(one, m1, 1, b=1, dtype=TORCH[dtype], prefix=0)
    assert predicted_steps(mixer_activation_steps(one, 1, dtype=dtype)) == measured_steps(lb1)


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_long_blocks_move_the_state_step_to_its_decays(dtype):
    # blocks (chunks) longer than the state is wide: at the state update's step the per-head decays
    # to the block's end (lightning: 2 x heads x l, one sequence; Gated DeltaNet: v_heads x l) outweigh
    # the update itself (heads x d x d), and the step counts them
    for name, kw in (("lightning-6", {"block": 40}), ("gdn-mha", {"chunk": 40})):
        spec = SPECS[name]
        m = build_mixer(spec, seed=3, **kw).to(TORCH[dtype]).eval()
        lb = traced_peak(spec, m, 40, b=1, dtype=TORCH[dtype], prefix=0)
        steps = mixer_activation_steps(spec, 40, dtype=dtype, chunk=40)
        assert predicted_steps(steps) == measured_steps(lb)
