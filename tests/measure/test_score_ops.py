"""Score ops: Gemma 2's logit soft-capping and gpt-oss's sink logits, measured and counted.

The eager backend runs them, the float64 reference computes them independently (the sinks by their
closed form), the cost model counts their traffic (hand counts below; the tensor audit holds the
tiny "softcap" and "sinks" configs to the layer's ops byte for byte), and every backend that cannot
run them is refused -- at plan time with its reason, and at call time -- instead of timing
attention without them.
"""

from __future__ import annotations

import math

import pytest
import torch

from lcprof.cost.model import cost
from lcprof.errors import LcprofError
from lcprof.measure import backends as B
from lcprof.measure.check import TOLERANCE, reference_attention, rel_error
from lcprof.measure.execution import Execution, ModelWorkload, SweepWorkload
from lcprof.measure.layer import score_ops
from lcprof.measure.model import Model
from lcprof.measure.model_sweep import run_model_sweep
from lcprof.measure.sweep import run_sweep


def _qkv(n_q=6, n_k=6, heads=4, kv=2, d=8, seed=0, scale_up=1.0):
    g = torch.Generator().manual_seed(seed)
    q = scale_up * torch.randn(1, n_q, heads, d, generator=g, dtype=torch.float64)
    k = torch.randn(1, n_k, kv, d, generator=g, dtype=torch.float64)
    v = torch.randn(1, n_k, kv, d, generator=g, dtype=torch.float64)
    return q, k, v


def test_softcap_caps_the_scores():
    # one query, two keys: scores x_j = q.k_j * scale; capped c tanh(x_j / c); out = softmax . v
    q = torch.tensor([[[[3.0, 0.0]]]], dtype=torch.float64)  # (1, 1, 1, 2)
    k = torch.tensor([[[[1.0, 0.0]], [[-1.0, 0.0]]]], dtype=torch.float64)  # scores 3 and -3 (scale 1)
    v = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]]]], dtype=torch.float64)
    mask = B.AttnMask("full", 1, 2)
    c = 2.0
    x = c * math.tanh(3.0 / c)  # 1.8103
    p0 = math.exp(x) / (math.exp(x) + math.exp(-x))
    for fn in (B.eager_attention, reference_attention):
        out = fn(q, k, v, mask, 1.0, softcap=c)
        assert out[0, 0, 0].tolist() == pytest.approx([p0, 1 - p0], rel=1e-12)
    plain = B.eager_attention(q, k, v, mask, 1.0)
    p_plain = math.exp(3) / (math.exp(3) + math.exp(-3))
    assert float(plain[0, 0, 0, 0]) == pytest.approx(p_plain, rel=1e-12)


def test_sinks_take_their_share_of_the_softmax():
    # one query, one key (score x = 0.5), sink logit s: out = v e^x / (e^x + e^s)
    q = torch.tensor([[[[0.5]]]], dtype=torch.float64)
    k = torch.ones(1, 1, 1, 1, dtype=torch.float64)
    v = torch.full((1, 1, 1, 1), 2.0, dtype=torch.float64)
    mask = B.AttnMask("full", 1, 1)
    for s in (-1.0, 0.5, 3.0):
        want = 2.0 * math.exp(0.5) / (math.exp(0.5) + math.exp(s))
        for fn in (B.eager_attention, reference_attention):
            out = fn(q, k, v, mask, 1.0, sinks=torch.tensor([s], dtype=torch.float64))
            assert float(out) == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("kind,n_q,n_k,window", [("global", 9, 9, None), ("sliding", 9, 9, 4), ("full", 1, 9, None)])
def test_eager_equals_the_independent_reference(kind, n_q, n_k, window):
    q, k, v = _qkv(n_q, n_k, scale_up=3.0)  # scores of several units: soft-capping at 2 bites
    mask = B.AttnMask(kind, n_q, n_k, window)
    sinks = torch.tensor([0.3, -1.0, 2.0, 0.0], dtype=torch.float64)
    for opts in ({"softcap": 2.0}, {"sinks": sinks}, {"softcap": 2.0, "sinks": sinks}):
        got = B.get_backend("eager")(q, k, v, mask, 0.35, **opts)
        ref = reference_attention(q, k, v, mask, 0.35, **opts)
        assert rel_error(got, ref) < 1e-12, opts
        assert rel_error(got, reference_attention(q, k, v, mask, 0.35)) > 1e-2  # the op changes the output


def test_backends_without_the_op_are_refused():
    mask = B.AttnMask("global", 4, 4)
    plan, why = B.get_backend("sdpa").plan(mask, "prefill", ("softcap",))
    assert plan is None and "sdpa cannot apply the layer's logit soft-capping" in why and "eager" in why
    plan, why = B.get_backend("striped-ring").plan(mask, "prefill", ("softcap", "sinks"))
    assert plan is None and "logit soft-capping and sink logits" in why
    assert B.get_backend("eager").plan(mask, "prefill", ("softcap", "sinks"))[0] is not None
    q, k, v = _qkv(4, 4)
    with pytest.raises(LcprofError, match="sdpa-math cannot apply sink logits"):
        B.get_backend("sdpa-math")(q, k, v, mask, 0.3, sinks=torch.zeros(4, dtype=torch.float64))


def test_score_ops_of_published_layers(spec_of):
    from lcprof.spec import load_model

    assert score_ops(load_model("gemma2-9b"), load_model("gemma2-9b").layers[0]) == ("softcap",)
    oss = load_model("gpt-oss-20b")
    assert {score_ops(oss, lyr) for lyr in oss.layers} == {("sinks",)}
    assert score_ops(load_model("gemma3-27b"), load_model("gemma3-27b").layers[0]) == ()  # no soft-capping
    assert score_ops(load_model("llama3-8b"), load_model("llama3-8b").layers[0]) == ()


def test_eager_attention_bytes_by_hand(spec_of):
    # tiny "softcap" / "sinks" layer 1 (global), fp32 (s = 4), n = 8, one sequence: H = 4 query heads,
    # 2 K/V heads, head dims 16. Pairs P = H n^2 = 256 (eager computes the whole rectangle).
    #   scale in place 2 s P = 2048; mask: 2 s P + 3 n^2 = 2240 (invert: read 1 B + write 1 B per pair,
    #   masked_fill reads it once more); softmax in fp32 2 s P' = 8 P'; K/V repeated to 4 heads:
    #   2 s keys H (16 + 16) = 8192; output transposed back: 2 s n H 16 = 4096.
    #   Soft-capping: / c, tanh, * c in place: 6 s P = 6144, P' = P.
    #   Sinks: P' = P + H n = 288; the concatenation reads the scores and the sink column and writes
    #   both: 2 s P' = 2304.
    base = 2048 + 2240 + 8192 + 4096
    capped = cost(spec_of("softcap"), 8, layer=1, family="eager", dtype="fp32")
    assert int(capped.bytes["attn/elementwise"][0]) == base + 6144 + 8 * 256
    plain = cost(spec_of("sliding"), 8, layer=1, family="eager", dtype="fp32")  # the same layer, no capping
    assert int(plain.bytes["attn/elementwise"][0]) == base + 8 * 256
    sunk = cost(spec_of("sinks"), 8, layer=1, family="eager", dtype="fp32")
    assert int(sunk.bytes["attn/elementwise"][0]) == base + 2304 + 8 * 288
    # bf16 (s = 2): the softmax through fp32 moves 2 s + 16 = 20 B per pair; the rest halves
    sunk16 = cost(spec_of("sinks"), 8, layer=1, family="eager", dtype="bf16")
    assert int(sunk16.bytes["attn/elementwise"][0]) == (base - 192) // 2 + 192 + 1152 + 20 * 288
    # a tiled kernel applies both on chip: no elementwise attention bytes, the same FLOPs as without
    tiled = cost(spec_of("softcap"), 8, layer=1, family="tiled", dtype="fp32")
    assert "attn/elementwise" not in tiled.bytes
    assert float(tiled.flops["total"][0]) == float(cost(spec_of("sliding"), 8, layer=1, family="tiled",
                                                        dtype="fp32").flops["total"][0])


def test_final_logit_softcap_in_the_model_and_its_bytes(spec_of):
    spec = spec_of("softcap")
    m = Model(spec, dtype=torch.float64).eval()
    ids = torch.randint(0, spec.vocab_size, (1, 12), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        raw = m.lm_head(m.hidden(ids)[:, -1, :])
        logits = m(ids)
    assert torch.allclose(logits, 30.0 * torch.tanh(raw / 30.0), rtol=1e-12, atol=0)
    assert float(logits.abs().max()) < 30.0
    # the LM head of one position in fp32: weights 4 h V + input 4 h + logits 4 V, then 6 passes of 4 V
    h, V = spec.hidden_size, spec.vocab_size
    head = cost(spec, 8, dtype="fp32", lm_head=True).bytes["lm_head"][0]
    assert int(head) == 4 * (h * V + h + V) + 6 * 4 * V
    assert int(cost(spec_of("sliding"), 8, dtype="fp32", lm_head=True).bytes["lm_head"][0]) == 4 * (h * V + h + V)


@pytest.mark.parametrize("name", ["softcap", "sinks"])
def test_whole_model_eager_against_float64(name, spec_of):
    spec = spec_of(name)
    ref = Model(spec, dtype=torch.float64).eval()
    ref.set_attention(reference_attention)
    ours = Model(spec, dtype=torch.float32).eval()
    ours.set_attention(B.get_backend("eager"))
    ids = torch.randint(0, spec.vocab_size, (1, 40), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert rel_error(ours(ids), ref(ids)) < TOLERANCE["fp32"]


@pytest.mark.parametrize("name,why", [("softcap", "logit soft-capping"), ("sinks", "sink logits")])
def test_sweeps_time_eager_and_skip_sdpa_with_the_reason(name, why, spec_of, tmp_path):
    spec = spec_of(name)
    ex = Execution(budget_s=0.01, min_reps=2, max_reps=3)
    df = run_sweep(SweepWorkload(spec, "32", backends="eager,sdpa", layer=1), ex, out=tmp_path / "l.csv")
    by = {r["backend"]: r for _, r in df.iterrows()}
    assert by["eager"]["status"] == "ok" and by["eager"]["check_layer_rel_err"] < TOLERANCE["fp32"]
    assert by["sdpa"]["status"] == "skipped" and f"sdpa cannot apply the layer's {why}" in by["sdpa"]["reason"]
    dm = run_model_sweep(ModelWorkload(spec, "32", phases="prefill,decode", backends="eager,sdpa"), ex,
                         out=tmp_path / "m.csv")
    ok = dm[dm["backend"] == "eager"]
    assert len(ok) == 2 and (ok["status"] == "ok").all() and (ok["check_rel_err"] < TOLERANCE["fp32"]).all()
    skipped = dm[dm["backend"] == "sdpa"]
    assert (skipped["status"] == "skipped").all() and skipped["reason"].str.contains(why).all()


def test_flash_attn_passes_softcap_to_the_kernel_or_refuses(monkeypatch):
    """FlashAttention 2 >= 2.6 and 3 soft-cap inside the kernel (``softcap=``): lcprof's flash-attn
    backend passes the layer's cap through (checked here with a stand-in flash_attn_func that records
    its arguments, since the package needs CUDA), and refuses a build whose function has no such
    argument instead of timing attention without it. It cannot add sink logits."""
    seen = {}

    def fake_flash(q, k, v, softmax_scale=None, causal=False, window_size=(-1, -1), softcap=0.0):
        seen.update(softmax_scale=softmax_scale, causal=causal, softcap=softcap)
        return reference_attention(q, k, v, B.AttnMask("global" if causal else "full", q.shape[1], k.shape[1]),
                                   softmax_scale, softcap=softcap or None)

    monkeypatch.setattr(B, "_flash_impl", lambda: (fake_flash, "FlashAttention 2"))
    fa = B.get_backend("flash-attn")
    mask = B.AttnMask("global", 6, 6)
    assert fa.plan(mask, "prefill", ("softcap",))[0] is not None
    plan, why = fa.plan(mask, "prefill", ("sinks",))
    assert plan is None and "flash-attn cannot apply the layer's sink logits" in why
    q, k, v = _qkv(6, 6, scale_up=3.0)
    out = fa(q, k, v, mask, 0.35, softcap=2.0)
    assert seen == {"softmax_scale": 0.35, "causal": True, "softcap": 2.0}
    assert rel_error(out, reference_attention(q, k, v, mask, 0.35, softcap=2.0)) < 1e-12
    fa(q, k, v, mask, 0.35)
    assert seen["softcap"] == 0.0  # no cap asked: the kernel's default, not passed

    def old_flash(q, k, v, softmax_scale=None, causal=False, window_size=(-1, -1)):  # flash-attn < 2.6
        raise AssertionError("must not run without the soft-capping")

    monkeypatch.setattr(B, "_flash_impl", lambda: (old_flash, "FlashAttention 2"))
    with pytest.raises(RuntimeError, match="has no softcap argument"):
        fa(q, k, v, mask, 0.35, softcap=2.0)
