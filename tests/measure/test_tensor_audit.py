"""The cost model's memory counts against the real layer, op by op, on the CPU.

* ``cost.activation_bytes`` against ``LiveBytes`` (a dispatch mode summing the storages of live
  tensors while ``DecoderLayer`` runs);
* the ``misc/elementwise`` and eager ``attn/elementwise`` bytes of ``cost`` against ``MovedBytes``
  (what every elementwise op reads and writes).

The tiled family is a stand-in kernel that allocates exactly what a flash kernel returns (the
output in (batch, n, heads, v) order and an fp32 log-sum-exp), so the counts cover the layer's own
tensors and ops; eager runs for real. Agreement is to the byte.

Every step too, not only the peak: the layer and the backends mark the steps of
``cost.activation_steps`` (``tensor_audit.mark``); the most bytes live in each marked segment equal
that step, and the step names agree both ways.
"""

from __future__ import annotations

import gc

import pytest
import torch

from support.tiny_models import TINY_CONFIGS, tiny_spec
from lcprof.cost.model import activation_bytes, activation_steps, cost
from lcprof.measure import backends as B
from lcprof.measure.layer import DecoderLayer
from lcprof.measure.tensor_audit import LiveBytes, MovedBytes, mark
from lcprof.spec import load_model

TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def flash_like(q, k, v, mask, scale, **_):
    """What a tiled kernel allocates: the output (b, n, heads, v_dim) and a (b, heads, n) fp32 LSE."""
    b, m, heads, _ = q.shape
    out = torch.zeros(b, m, heads, v.shape[-1], dtype=q.dtype)
    lse = torch.zeros(b, heads, m, dtype=torch.float32)
    mark("attn/kernel")  # the per-step oracle's step, as the eager backend marks its own
    del lse
    return out


def _setup(spec, layer_idx, *, n, family, dtype, batch, cache_slots, form):
    B.clear_mask_cache()
    attention = flash_like if family == "tiled" else B.get_backend("eager")
    layer = DecoderLayer(spec, layer_idx, attention=attention, mla_form=form).to(TORCH_DTYPES[dtype]).eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, n, spec.hidden_size, generator=g).to(TORCH_DTYPES[dtype])
    cache = None if cache_slots is None else layer.random_cache(batch, cache_slots, generator=g)
    return layer, x, cache


def traced_peak(spec, layer_idx, *, n, family, dtype, batch=1, cache_slots=None, form="naive") -> LiveBytes:
    layer, x, cache = _setup(spec, layer_idx, n=n, family=family, dtype=dtype, batch=batch,
                             cache_slots=cache_slots, form=form)
    exclude = list(layer.parameters()) + ([] if cache is None else [cache.a, cache.b])
    with torch.no_grad():
        layer(x, cache=cache)  # steady state: the RoPE tables and the mask are built once per forward
    gc.collect()
    with torch.no_grad(), LiveBytes(exclude=exclude) as lb:
        lb.track(x)
        for tables in layer._rope_cache.values():
            for t in tables:
                lb.track(t, "rope tables")
        for mask in B._MASK_CACHE.values():
            lb.track(mask, "mask")
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


def assert_steps_match(spec, lb, n, **kw):
    """Each step of the cost model that runs (non-zero) == the peak of the layer's segment of that
    name; no segment without a step. Nothing is allocated after the last mark."""
    steps = activation_steps(spec, n, **kw)
    predicted = {k: int(v[0]) for k, v in steps.items() if float(v[0]) != 0.0}
    assert lb.unmarked_bytes == 0 and max(lb.steps.values()) == lb.peak_bytes
    assert predicted == lb.steps, kw


@pytest.mark.parametrize("name,layer,dtype,family", CASES)
def test_every_prefill_step_matches_the_layer_to_the_byte(name, layer, dtype, family):
    spec = tiny_spec(name)
    lb = traced_peak(spec, layer, n=64, family=family, dtype=dtype)
    assert_steps_match(spec, lb, 64, dtype=dtype, family=family, layer=layer)


@pytest.mark.parametrize("name", list(TINY_CONFIGS))
@pytest.mark.parametrize("family", ["tiled", "eager"])
@pytest.mark.parametrize("m,slots,batch", [(1, 64, 1), (16, 64, 1), (1, 40, 3), (8, 40, 3)])
def test_every_cached_step_matches_the_layer_to_the_byte(name, family, m, slots, batch):
    # decode and a chunk after a cached prefix, one sequence and three (eager's batched products
    # copy their operands, the expanded K/V of GQA and MQA-form MLA span the batch)
    spec = tiny_spec(name)
    for form in (("naive", "absorbed") if spec.mla is not None else ("naive",)):
        lb = traced_peak(spec, 0, n=m, family=family, dtype="fp32", batch=batch, cache_slots=slots, form=form)
        assert_steps_match(spec, lb, m, batch=batch, prefix=slots - m, dtype="fp32", family=family, mla_form=form)


# ----- bytes moved by elementwise ops -----------------------------------------------------------

def moved_bytes(spec, layer_idx, *, n, family, dtype, batch=1, cache_slots=None, form="naive") -> MovedBytes:
    """The second call's traffic: the first fills the RoPE-table and mask caches (built once per
    forward and shared by every layer in a model)."""
    layer, x, cache = _setup(spec, layer_idx, n=n, family=family, dtype=dtype, batch=batch,
                             cache_slots=cache_slots, form=form)
    with torch.no_grad():
        layer(x, cache=cache)
        with MovedBytes() as mb:
            layer(x, cache=cache)
    B.clear_mask_cache()
    return mb


def predicted_moved(spec, layer_idx, *, n, family, dtype, batch=1, prefix=0, form="naive") -> int:
    c = cost(spec, n, prefix=prefix, batch=batch, layer=layer_idx, family=family, dtype=dtype, mla_form=form)
    moved = float(c.bytes["misc/elementwise"][0])
    if family == "eager":
        moved += float(c.bytes["attn/elementwise"][0])
    else:
        assert "attn/elementwise" not in c.bytes  # a tiled kernel's softmax stays on chip
    return int(moved)


def test_movedbytes_counts_reads_and_writes():
    a, b = torch.ones(100), torch.ones(100)
    with MovedBytes() as mb:
        c = a + b  # reads 800 B, writes 400 B
        c.mul_(2)  # reads and writes c: 800 B
        a.view(10, 10).t()  # views move nothing
        torch.mm(a.view(10, 10), b.view(10, 10))  # matrix products are counted by the cost model
        b.copy_(c)  # reads c, writes b (its old contents are not read)
    assert mb.by_op == {"add": 1200, "mul_": 800, "copy_": 800}


@pytest.mark.parametrize("name,layer,dtype,family", CASES)
@pytest.mark.parametrize("m,slots", [(64, None), (1, 64), (16, 64)])
def test_elementwise_traffic_matches_the_layer_to_the_byte(name, layer, dtype, family, m, slots):
    spec = tiny_spec(name)
    prefix = 0 if slots is None else slots - m
    for form in (("naive", "absorbed") if spec.mla is not None else ("naive",)):
        mb = moved_bytes(spec, layer, n=m, family=family, dtype=dtype, cache_slots=slots, form=form)
        pred = predicted_moved(spec, layer, n=m, family=family, dtype=dtype, prefix=prefix, form=form)
        assert pred == mb.total_bytes, (form, mb.by_op)


@pytest.mark.parametrize("name", list(TINY_CONFIGS))
@pytest.mark.parametrize("family", ["tiled", "eager"])
@pytest.mark.parametrize("m,slots", [(32, None), (8, 40), (1, 40)])
def test_batch_of_three_peak_and_traffic(name, family, m, slots):
    # several sequences: RoPE tables and the mask are shared by the batch; eager's batched products
    # copy their head-major operands (one sequence needs no copy)
    spec = tiny_spec(name)
    prefix = 0 if slots is None else slots - m
    for form in (("naive", "absorbed") if spec.mla is not None else ("naive",)):
        kw = dict(n=m, family=family, dtype="fp32", batch=3, form=form)
        lb = traced_peak(spec, 0, cache_slots=slots, **kw)
        assert int(activation_bytes(spec, m, batch=3, prefix=prefix, dtype="fp32", family=family,
                                    mla_form=form)[0]) == lb.peak_bytes, (form, lb.peak_step)
        mb = moved_bytes(spec, 0, cache_slots=slots, **kw)
        assert predicted_moved(spec, 0, prefix=prefix, **kw) == mb.total_bytes, (form, mb.by_op)


def test_phi3_elementwise_traffic_is_seven_times_the_old_guess():
    # Phi-3 layer, bf16: the unfused layer moves 463,664 B per token (norms 2 x (36h + 24), RoPE
    # 10 passes over q and over k, tables, SiLU and the gate product 10 x 8192, residuals 12h) and
    # 12,288 B per call (norm weights), against 2 x (8h + 2 x 3072) = 61,440 B per token before it
    # was counted op by op.
    spec = load_model("phi3-128k")
    mb = moved_bytes(spec, 0, n=128, family="tiled", dtype="bf16")
    h, i = 3072, 8192
    per_token = 2 * (36 * h + 24) + 2 * 10 * 2 * 3072 + 12 * h + 10 * i
    tables = 2 * 2 * 2 * 96  # cos and sin, read by two ops each for q and for k, 2 B, 96 rotary dims
    weights = 2 * 2 * h  # the two norm weights, read once per call
    assert mb.total_bytes == 128 * (per_token + tables) + weights
    assert predicted_moved(spec, 0, n=128, family="tiled", dtype="bf16") == mb.total_bytes


def _mlp_only_layers():
    from support.tiny_models import TINY_HYBRID_CONFIGS, tiny_hybrid_spec

    return [(name, i) for name in TINY_HYBRID_CONFIGS for i, lyr in enumerate(tiny_hybrid_spec(name).layers)
            if not lyr.mixers and lyr.mlp]


@pytest.mark.parametrize("name,layer", _mlp_only_layers())
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("m,slots", [(16, None), (1, 64)])
def test_hybrid_mlp_only_layer_traffic_matches_to_the_byte(name, layer, dtype, m, slots):
    # Nemotron-H's MLP-only blocks: the norm, the residual add and the squared ReLU, whose square is a
    # second pass over up(x) (read + write) that the cost model once left out
    from support.tiny_models import tiny_hybrid_spec

    spec = tiny_hybrid_spec(name)
    assert spec.mlp_activation == "relu2"
    prefix = 0 if slots is None else slots - m
    mb = moved_bytes(spec, layer, n=m, family="tiled", dtype=dtype, cache_slots=slots)
    assert predicted_moved(spec, layer, n=m, family="tiled", dtype=dtype, prefix=prefix) == mb.total_bytes, mb.by_op
    s = 4 if dtype == "fp32" else 2
    assert mb.by_op["pow_"] == 2 * s * m * spec.intermediate_size  # the square, in place: read + write
