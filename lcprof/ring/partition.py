"""Split a sequence over G ring ranks and put it back together.

Layouts (global token index -> rank), n = 8, G = 2::

    contiguous   rank 0: 0 1 2 3      rank 1: 4 5 6 7
    striped      rank 0: 0 2 4 6      rank 1: 1 3 5 7

Padding: when G does not divide the length n, ``pad=True`` appends
``pad = G*ceil(n/G) - n`` tokens (filled with ``pad_value``) at the END of the
global sequence, so pad tokens sit at positions n .. G*m-1 in both layouts
(striped: on ranks n mod G .. G-1, one each in their last slot; contiguous:
the tail of the last rank(s)). Under the causal mask a real query at p < n
only attends keys at s <= p < n, so it never attends a pad key; pad queries
are computed and dropped by ``unpartition``. Non-causal attention would attend
pad keys, so callers must not pad there. ``pad=False`` raises a ValueError
instead.
"""

from __future__ import annotations

import torch

from lcprof.cost.ring import LAYOUTS, block_positions

__all__ = [
    "LAYOUTS",
    "contiguous_partition",
    "contiguous_unpartition",
    "partition",
    "positions",
    "striped_partition",
    "striped_unpartition",
    "unpartition",
]


def positions(layout: str, rank: int, world: int, n_local: int) -> tuple[int, int]:
    """(offset, stride): rank's local token i sits at global position offset + i*stride.

    striped: (rank, world); contiguous: (rank * n_local, 1).
    """
    return block_positions(layout, rank, world, n_local)


def _pad_to_multiple(x: torch.Tensor, world: int, dim: int, pad: bool, pad_value: float) -> tuple[torch.Tensor, int]:
    if world < 1:
        raise ValueError(f"world must be >= 1, got {world}")
    n = x.shape[dim]
    n_pad = (-n) % world
    if n_pad == 0:
        return x, 0
    if not pad:
        raise ValueError(
            f"sequence length {n} (dim {dim}) is not divisible by world size {world}; "
            f"pass pad=True to append {n_pad} pad token(s) at the end, or use a length that is a multiple of {world}"
        )
    shape = list(x.shape)
    shape[dim] = n_pad
    filler = torch.full(shape, pad_value, dtype=x.dtype, device=x.device)
    return torch.cat([x, filler], dim=dim), n_pad


def _trim(x: torch.Tensor, dim: int, n_pad: int) -> torch.Tensor:
    if not 0 <= n_pad <= x.shape[dim]:
        raise ValueError(f"cannot trim {n_pad} pad tokens from length {x.shape[dim]}")
    return x if n_pad == 0 else x.narrow(dim, 0, x.shape[dim] - n_pad)


def striped_partition(
    x: torch.Tensor, world: int, dim: int = 1, *, pad: bool = True, pad_value: float = 0.0
) -> tuple[list[torch.Tensor], int]:
    """Rank r gets tokens r, r+G, r+2G, ... of ``x`` along ``dim``.

    Returns (parts, n_pad): G contiguous tensors of ceil(n/G) tokens each and
    the number of pad tokens appended at the end (see module docstring).
    """
    dim = dim % x.dim()
    x, n_pad = _pad_to_multiple(x, world, dim, pad, pad_value)
    index = [slice(None)] * x.dim()
    parts = []
    for r in range(world):
        index[dim] = slice(r, None, world)
        parts.append(x[tuple(index)].contiguous())
    return parts, n_pad


def striped_unpartition(parts: list[torch.Tensor], dim: int = 1, n_pad: int = 0) -> torch.Tensor:
    """Inverse of :func:`striped_partition`; drops the ``n_pad`` trailing pad tokens."""
    dim = dim % parts[0].dim()
    # (..., m, G, ...) with element [j, r] = global token j*G + r
    x = torch.stack(parts, dim=dim + 1)
    x = x.flatten(dim, dim + 1)  # (..., m*G, ...)
    return _trim(x, dim, n_pad)


def contiguous_partition(
    x: torch.Tensor, world: int, dim: int = 1, *, pad: bool = True, pad_value: float = 0.0
) -> tuple[list[torch.Tensor], int]:
    """Rank r gets tokens r*m .. (r+1)*m - 1 with m = ceil(n/G). Returns (parts, n_pad)."""
    dim = dim % x.dim()
    x, n_pad = _pad_to_multiple(x, world, dim, pad, pad_value)
    m = x.shape[dim] // world
    return [p.contiguous() for p in torch.split(x, m, dim=dim)], n_pad


def contiguous_unpartition(parts: list[torch.Tensor], dim: int = 1, n_pad: int = 0) -> torch.Tensor:
    """Inverse of :func:`contiguous_partition`; drops the ``n_pad`` trailing pad tokens."""
    dim = dim % parts[0].dim()
    return _trim(torch.cat(parts, dim=dim), dim, n_pad)


def partition(
    x: torch.Tensor, world: int, layout: str, dim: int = 1, *, pad: bool = True, pad_value: float = 0.0
) -> tuple[list[torch.Tensor], int]:
    """Dispatch to :func:`striped_partition` or :func:`contiguous_partition`."""
    if layout == "striped":
        return striped_partition(x, world, dim, pad=pad, pad_value=pad_value)
    if layout == "contiguous":
        return contiguous_partition(x, world, dim, pad=pad, pad_value=pad_value)
    raise ValueError(f"unknown ring layout {layout!r}; expected one of {', '.join(LAYOUTS)}")


def unpartition(parts: list[torch.Tensor], layout: str, dim: int = 1, n_pad: int = 0) -> torch.Tensor:
    """Dispatch to :func:`striped_unpartition` or :func:`contiguous_unpartition`."""
    if layout == "striped":
        return striped_unpartition(parts, dim, n_pad)
    if layout == "contiguous":
        return contiguous_unpartition(parts, dim, n_pad)
    raise ValueError(f"unknown ring layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
