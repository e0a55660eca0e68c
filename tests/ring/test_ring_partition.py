import pytest
import torch

from lcprof.ring.block import block_attention_torch
from lcprof.ring.partition import (
    contiguous_partition,
    contiguous_unpartition,
    partition,
    positions,
    striped_partition,
    striped_unpartition,
    unpartition,
)

LAYOUTS = ["striped", "contiguous"]


def test_striped_partition_small_example():
    x = torch.arange(8).reshape(1, 8)
    parts, n_pad = striped_partition(x, 2)
    assert n_pad == 0
    assert parts[0].tolist() == [[0, 2, 4, 6]]
    assert parts[1].tolist() == [[1, 3, 5, 7]]
    parts, _ = contiguous_partition(x, 2)
    assert parts[0].tolist() == [[0, 1, 2, 3]]
    assert parts[1].tolist() == [[4, 5, 6, 7]]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("world", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("n", [1, 7, 16, 29])
def test_roundtrip_and_positions(layout, world, n):
    x = torch.arange(n).reshape(1, n, 1).expand(2, n, 3).contiguous() + 1  # token value = position + 1
    parts, n_pad = partition(x, world, layout, dim=1, pad=True, pad_value=0)
    m = -(-n // world)
    assert n_pad == m * world - n
    assert all(p.shape == (2, m, 3) for p in parts)
    assert torch.equal(unpartition(parts, layout, dim=1, n_pad=n_pad), x)
    pad_positions = []
    for r, p in enumerate(parts):
        off, stride = positions(layout, r, world, m)
        for i in range(m):
            pos = off + i * stride
            if pos < n:
                assert int(p[0, i, 0]) == pos + 1  # real token i of rank r is global token `pos`
            else:
                assert int(p[0, i, 0]) == 0  # pad token
                pad_positions.append(pos)
    # pad tokens occupy exactly the positions n .. G*m - 1: the end of the global sequence
    assert sorted(pad_positions) == list(range(n, m * world))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("world,n", [(2, 7), (3, 7), (4, 29), (8, 29), (8, 9)])
def test_no_real_query_attends_a_pad_key(layout, world, n):
    """The padding claim, checked with the attention code itself: pad keys are NaN,
    so a real query that attended one would get a NaN score and a NaN lse."""
    torch.manual_seed(0)
    q = torch.randn(1, n, 2, 4, dtype=torch.float64)
    k = torch.randn(1, n, 2, 4, dtype=torch.float64)
    v = torch.randn(1, n, 2, 4, dtype=torch.float64)
    q_parts, n_pad = partition(q, world, layout)
    k_parts, _ = partition(k, world, layout, pad_value=float("nan"))
    v_parts, _ = partition(v, world, layout)
    assert n_pad > 0
    m = q_parts[0].shape[1]
    for r in range(world):
        q_off, q_st = positions(layout, r, world, m)
        real = torch.tensor([q_off + i * q_st < n for i in range(m)])
        for s in range(world):
            k_off, k_st = positions(layout, s, world, m)
            # positional argument: every (real query, pad key) pair is causally masked
            for i in range(m):
                for j in range(m):
                    pq, pk = q_off + i * q_st, k_off + j * k_st
                    if pq < n and pk >= n:
                        assert pk > pq
            out, lse = block_attention_torch(
                q_parts[r], k_parts[s], v_parts[s], q_offset=q_off, q_stride=q_st, k_offset=k_off, k_stride=k_st
            )
            assert not torch.isnan(lse[:, :, real]).any()
            assert not torch.isnan(out[:, real]).any()


@pytest.mark.parametrize("fn", [striped_partition, contiguous_partition])
def test_pad_false_rejects_indivisible_length(fn):
    x = torch.zeros(1, 10, 2)
    with pytest.raises(ValueError, match=r"not divisible by world size 4.*pad=True"):
        fn(x, 4, pad=False)
    parts, n_pad = fn(torch.zeros(1, 12, 2), 4, pad=False)
    assert n_pad == 0 and len(parts) == 4


def test_other_dim_and_explicit_inverses():
    x = torch.randn(3, 2, 10, 5)
    parts, n_pad = striped_partition(x, 4, dim=2)
    assert n_pad == 2 and parts[0].shape == (3, 2, 3, 5)
    assert torch.equal(striped_unpartition(parts, dim=2, n_pad=n_pad), x)
    parts, n_pad = contiguous_partition(x, 4, dim=-2)
    assert torch.equal(contiguous_unpartition(parts, dim=-2, n_pad=n_pad), x)


def test_unknown_layout():
    with pytest.raises(ValueError, match="expected one of striped, contiguous"):
        partition(torch.zeros(1, 4), 2, "zigzag")
    with pytest.raises(ValueError, match="unknown ring layout"):
        positions("zigzag", 0, 2, 4)
