"""The real decoder layer: matches its float64 self through every CPU backend, produces exactly the
cost model's KV bytes, decodes consistently with prefill, and takes RoPE from lcprof.cost.rope."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lcprof.cost.model import kv_bytes_per_token_by_layer
from lcprof.cost.rope import inv_freq
from lcprof.measure import backends as B
from lcprof.measure.check import Checker, reference_attention, rel_error
from lcprof.measure.layer import DecoderLayer, score_ops

CPU_BACKENDS = ["eager", "sdpa", "sdpa-math", "sdpa-flash", "striped-ring"]


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("name,layer_idx,mla_form", [
    ("gqa", 0, "naive"), ("sliding", 0, "naive"), ("chunked", 0, "naive"), ("moe", 0, "naive"),
    ("mla", 1, "naive"), ("mla", 1, "absorbed"), ("longrope", 0, "naive"), ("softcap", 0, "naive"),
    ("softcap", 1, "naive"), ("sinks", 0, "naive"), ("sinks", 1, "naive"), ("nope", 1, "naive"),
    ("fullqk", 0, "naive"), ("olmo", 0, "naive"), ("olmo", 1, "naive"), ("exaone", 1, "naive"),
    ("parallel", 0, "naive"), ("parallel", 1, "naive"), ("qscale", 1, "naive")])
@pytest.mark.parametrize("phase", ["prefill", "decode"])
def test_layer_matches_float64_reference_for_every_cpu_backend(spec_of, name, layer_idx, mla_form, dtype, phase):
    spec = spec_of(name)
    layer = DecoderLayer(spec, layer_idx, mla_form=mla_form).to(B.torch_dtype(dtype)[0])
    checker = Checker(layer, dtype=dtype, phase=phase, n_check=48)
    checked = 0
    for bname in CPU_BACKENDS:
        backend = B.get_backend(bname)
        q, k, v, mask, _ = checker.attention_inputs()
        plan, _ = backend.plan(mask, phase, score_ops(spec, spec.layers[layer_idx]))
        if plan is None or (bname in ("sdpa-flash", "striped-ring") and q.shape[-1] != v.shape[-1]):
            continue  # cannot run this mask / needs equal q and v head dims (MLA)
        res = checker.check(backend, ranks=2)
        assert res.ok, (bname, res)
        checked += 1
    assert checked >= (1 if score_ops(spec, spec.layers[layer_idx]) else 2)  # only eager runs soft-caps, sinks


@pytest.mark.parametrize("name,layer_idx", [("mha", 0), ("gqa", 1), ("mla", 0), ("sliding", 1)])
@pytest.mark.parametrize("dtype", ["fp32", "bf16", "fp16"])
def test_kv_tensors_have_exactly_the_cost_models_bytes(spec_of, name, layer_idx, dtype):
    spec = spec_of(name)
    assert spec.layers[layer_idx].attn == "global"
    layer = DecoderLayer(spec, layer_idx).to(B.torch_dtype(dtype)[0])
    n = 37
    x = torch.randn(1, n, spec.hidden_size).to(B.torch_dtype(dtype)[0])
    with torch.inference_mode():
        _, kv = layer(x, return_kv=True)
    expected = kv_bytes_per_token_by_layer(spec, dtype)[layer_idx] * n
    assert kv.nbytes == int(expected)
    assert kv.a.shape[1] == kv.b.shape[1] == n


@pytest.mark.parametrize("name,layer_idx,mla_form", [("gqa", 0, "naive"), ("sliding", 0, "naive"),
                                                      ("chunked", 0, "naive"), ("mla", 1, "absorbed")])
def test_decode_step_equals_last_row_of_prefill(spec_of, name, layer_idx, mla_form):
    """Prefill n+1 tokens == prefill n tokens into a cache, then one cached step (float64)."""
    spec = spec_of(name)
    layer = DecoderLayer(spec, layer_idx, mla_form=mla_form, attention=reference_attention).double()
    n = 40
    x = torch.randn(2, n + 1, spec.hidden_size, dtype=torch.float64)
    with torch.inference_mode():
        full = layer(x)
        _, kv = layer(x[:, :n], return_kv=True)
        cache = layer.empty_cache(2, n + 1)
        cache.a[:, :n], cache.b[:, :n] = kv.a, kv.b
        step = layer(x[:, n:], cache)
    assert rel_error(step, full[:, n:]) < 1e-12


def test_mla_absorbed_equals_naive(spec_of):
    spec = spec_of("mla")
    naive = DecoderLayer(spec, 1, mla_form="naive", attention=reference_attention).double()
    absorbed = DecoderLayer(spec, 1, mla_form="absorbed", attention=reference_attention).double()
    x = torch.randn(1, 30, spec.hidden_size, dtype=torch.float64)
    with torch.inference_mode():
        assert rel_error(absorbed(x), naive(x)) < 1e-12


def test_rope_comes_from_the_cost_models_frequencies(spec_of):
    """LongRoPE: short factors up to the original length, long factors (and the attention factor)
    beyond it -- the same numbers lcprof.cost.rope.inv_freq gives."""
    spec = spec_of("longrope")
    layer = DecoderLayer(spec, 0)
    for n_total in (200, 1000):  # original length 256
        cos, sin = layer.rope_cos_sin(0, n_total, n_total, torch.float64, torch.device("cpu"))
        freqs, factor = inv_freq(spec.rope, n_total)
        angles = np.outer(np.arange(n_total), freqs)
        np.testing.assert_allclose(cos[:, : len(freqs)].numpy(), np.cos(angles) * factor, rtol=0, atol=1e-12)
        np.testing.assert_allclose(sin[:, len(freqs):].numpy(), np.sin(angles) * factor, rtol=0, atol=1e-12)
    assert inv_freq(spec.rope, 1000)[1] > 1.0  # attention factor applies beyond the original length


def test_partial_rotary_leaves_the_other_dims_alone(spec_of):
    spec = spec_of("plain")  # rotary_dim = head_dim / 2
    layer = DecoderLayer(spec, 0)
    cos, sin = layer.rope_cos_sin(0, 10, 10, torch.float32, torch.device("cpu"))
    assert cos.shape == (10, spec.rope.rotary_dim) and spec.rope.rotary_dim < spec.head_dim


def test_weights_are_seeded_and_softmax_is_not_degenerate(spec_of):
    spec = spec_of("gqa")
    a, b, c = DecoderLayer(spec, 0, seed=3), DecoderLayer(spec, 0, seed=3), DecoderLayer(spec, 0, seed=4)
    for (na, pa), (_, pb), (_, pc) in zip(a.named_parameters(), b.named_parameters(), c.named_parameters()):
        assert torch.equal(pa, pb), na
        if pa.dim() == 2:
            assert not torch.equal(pa, pc), na
    # attention probabilities of the real projections: neither uniform nor one-hot
    captured = {}

    def spy(q, k, v, mask, scale):
        captured["probs"] = torch.softmax(
            reference_attention_scores(q, k, mask, scale), dim=-1)
        return reference_attention(q, k, v, mask, scale).to(q.dtype)

    a.attention = spy
    with torch.inference_mode():
        a(torch.randn(1, 64, spec.hidden_size))
    top = captured["probs"][..., 32:, :].max(dim=-1).values.mean().item()  # rows with >= 33 keys
    assert 1.5 / 33 < top < 0.9


def reference_attention_scores(q, k, mask, scale):
    g = q.shape[2] // k.shape[2]
    kk = k.double().repeat_interleave(g, dim=2)
    s = torch.einsum("bqhd,bkhd->bhqk", q.double(), kk) * scale
    return s.masked_fill(~mask.dense(), float("-inf"))
