"""Small cost-model fields that change cost: the lightning block size and LayerNorm (norm_bias) traffic.
Hand-derived values, formulas in the comments."""

import dataclasses

import numpy as np
import pytest

from lcprof.cost.kinds import lightning
from lcprof.cost.model import cost
from lcprof.spec import load_model, spec_from_config
from lcprof.spec.mixers import LightningSpec


@dataclasses.dataclass(frozen=True)
class _LightningWithBlock(LightningSpec):
    block_size: int = 256


def _flops(ops, name):
    return float(next(op for op in ops if op.name == name).flops[0])


@pytest.mark.parametrize("block", [64, 128, 256, 512])
def test_lightning_block_size_sets_the_intra_block_flops(block):
    # MiniMax-M1's lightning layer: 64 heads of 128. n = 4096 tokens = 4096 / B full blocks of B:
    # executed Q K^T and (.) V are 2 H d B^2 per block each -> 2 x 64 x 128 x 4096 x B
    base = load_model("minimax-m1").mixer("lightning")
    m = _LightningWithBlock(base.hidden_size, base.n_heads, base.head_dim, block_size=block)
    assert lightning.block_size(m) == block
    ops = lightning.ops(m, np.array([4096.0]))
    assert _flops(ops, "mixer/qk") == _flops(ops, "mixer/intra_v") == 2 * 64 * 128 * 4096 * block
    # the state products do not depend on the block: 2 n H d^2 each
    assert _flops(ops, "mixer/state_read") == 2 * 4096 * 64 * 128 * 128
    # a partial last block: n = 4096 + 10 adds 2 H d 10^2 executed
    ops = lightning.ops(m, np.array([4106.0]))
    assert _flops(ops, "mixer/qk") == 2 * 64 * 128 * (4096 * block + 100)


def test_lightning_without_a_block_field_uses_minimax_256():
    m = load_model("minimax-m1").mixer("lightning")
    assert lightning.block_size(m) == lightning.BLOCK == 256


def _neox(**kw):
    cfg = {"model_type": "gpt_neox", "hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4,
           "intermediate_size": 256, "vocab_size": 100, "max_position_embeddings": 4096, "rotary_pct": 0.25}
    cfg.update(kw)
    return spec_from_config(cfg, name="tiny-neox")


def test_layernorm_bytes_of_a_norm_bias_model():
    spec = _neox()
    assert spec.norm_bias
    rms = dataclasses.replace(spec, norm_bias=False)
    n, h = 16, 64
    # unfused: lcprof's measured layer runs RMSNorm for every model (held to the byte by
    # tests/measure/test_tensor_audit.py on this GPT-NeoX layout), so norm_bias changes nothing
    got = float(cost(spec, n, layer=0).bytes["misc/elementwise"][0])
    assert got == float(cost(rms, n, layer=0).bytes["misc/elementwise"][0])
    # fused (vLLM's GPTNeoXLayer): LayerNorm read + write and a separate residual add (read 2, write 1):
    # 5h per block, not the fused add + RMSNorm's 4h; bf16, two blocks per layer
    got = float(cost(spec, n, layer=0, elementwise="fused").bytes["misc/elementwise"][0])
    ref = float(cost(rms, n, layer=0, elementwise="fused").bytes["misc/elementwise"][0])
    assert got - ref == 2 * 2 * n * h  # 2 blocks x 2 bytes x n x (5h - 4h)
