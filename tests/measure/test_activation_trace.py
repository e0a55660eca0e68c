"""cost.activation_bytes against the real layer: every live tensor counted while it runs.

The oracle is ``LiveBytes`` (a dispatch mode that sums the storages of live tensors), wrapped around
``DecoderLayer`` on the CPU. The tiled family is a stand-in kernel that allocates exactly what a
flash kernel returns (the output in (batch, n, heads, v) order and an fp32 log-sum-exp), so the
count covers the layer's own tensors; eager runs for real. Agreement is to the byte.
"""

from __future__ import annotations

import gc

import pytest
import torch

from conftest import TINY_CONFIGS, tiny_spec
from lcprof.cost.model import activation_bytes, activation_steps
from lcprof.measure import backends as B
from lcprof.measure.layer import DecoderLayer
from lcprof.measure.livebytes import LiveBytes
from lcprof.spec import load_model

TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def flash_like(q, k, v, mask, scale, **_):
    """What a tiled kernel allocates: the output (b, n, heads, v_dim) and a (b, heads, n) fp32 LSE."""
    b, m, heads, _ = q.shape
    out = torch.zeros(b, m, heads, v.shape[-1], dtype=q.dtype)
    lse = torch.zeros(b, heads, m, dtype=torch.float32)
    del lse
    return out


def traced_peak(spec, layer_idx, *, n, family, dtype, batch=1, cache_slots=None, form="naive") -> LiveBytes:
    B.clear_mask_cache()
    attention = flash_like if family == "tiled" else B.get_backend("eager")
    layer = DecoderLayer(spec, layer_idx, attention=attention, mla_form=form).to(TORCH_DTYPES[dtype]).eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, n, spec.hidden_size, generator=g).to(TORCH_DTYPES[dtype])
    cache = None if cache_slots is None else layer.random_cache(batch, cache_slots, generator=g)
    exclude = list(layer.parameters()) + ([] if cache is None else [cache.a, cache.b])
    gc.collect()
    with torch.no_grad(), LiveBytes(exclude=exclude) as lb:
        lb.track(x)
        layer(x, cache=cache)
    B.clear_mask_cache()
    return lb


def test_livebytes_counts_storages_not_views():
    with LiveBytes() as lb:
        a = torch.ones(1000)  # 4000 B
        v = a.view(10, 100)  # a view: no new storage
        b = a * 2  # 4000 B more
        del a, v
        c = b + 1  # b still alive: 12000 B would need a; peak is b + c = 8000 B
        del b, c
    assert lb.peak_bytes == 8000
    assert lb.current_bytes == 0


def _layers(spec):
    return sorted({0, spec.n_layers - 1})


CASES = [(name, layer, dtype, family)
         for name in TINY_CONFIGS for layer in _layers(tiny_spec(name))
         for dtype in ("fp32", "bf16") for family in ("tiled", "eager")]


@pytest.mark.parametrize("name,layer,dtype,family", CASES)
def test_prefill_peak_matches_the_layer_to_the_byte(name, layer, dtype, family):
    spec = tiny_spec(name)
    lb = traced_peak(spec, layer, n=64, family=family, dtype=dtype)
    assert int(activation_bytes(spec, 64, dtype=dtype, family=family, layer=layer)[0]) == lb.peak_bytes, \
        (lb.peak_step, lb.peak_tensors)


@pytest.mark.parametrize("name", ["gqa", "mla", "sliding"])
@pytest.mark.parametrize("family", ["tiled", "eager"])
def test_batch_two_doubles_nothing_but_the_tokens(name, family):
    spec = tiny_spec(name)
    lb = traced_peak(spec, 0, n=48, family=family, dtype="bf16", batch=2)
    assert int(activation_bytes(spec, 48, batch=2, dtype="bf16", family=family)[0]) == lb.peak_bytes


@pytest.mark.parametrize("name", list(TINY_CONFIGS))
@pytest.mark.parametrize("m", [1, 16])
@pytest.mark.parametrize("family", ["tiled", "eager"])
def test_cached_steps_exclude_the_cache(name, m, family):
    """m new tokens at the end of a 64-slot cache (decode for m = 1): the cache is not an activation."""
    spec = tiny_spec(name)
    forms = ("naive", "absorbed") if spec.mla is not None else ("naive",)
    for form in forms:
        lb = traced_peak(spec, 0, n=m, family=family, dtype="fp32", cache_slots=64, form=form)
        pred = activation_bytes(spec, m, prefix=64 - m, dtype="fp32", family=family, mla_form=form)
        assert int(pred[0]) == lb.peak_bytes, (form, lb.peak_step)


@pytest.mark.parametrize("model,layer", [("phi3-128k", 0), ("deepseek-v2-lite", 26)])
def test_presets_peak_and_step(model, layer):
    # Phi-3 (MHA, LongRoPE) and a DeepSeek-V2-Lite MoE layer (MLA + router + shared experts), bf16
    spec = load_model(model)
    lb = traced_peak(spec, layer, n=128, family="tiled", dtype="bf16")
    steps = activation_steps(spec, 128, dtype="bf16", family="tiled", layer=layer)
    top = max(steps, key=lambda k: float(steps[k][0]))
    assert int(steps[top][0]) == lb.peak_bytes
    assert top == "mlp/act" and lb.peak_step == "aten.mul.Tensor"  # act(gate) * up
