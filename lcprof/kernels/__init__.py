"""CUDA kernels of lcprof: striped ring attention, per-step block forward.

Importing this package never imports torch and never fails on a CPU-only
machine; the extension is built on first use (see :mod:`lcprof.kernels.striped_attn`).

    from lcprof.kernels import is_available, striped_block_attention
    ok, reason = is_available()

Two device paths with one contract: ``sm80`` (mma.sync; the default) and ``sm90`` (TMA + wgmma,
compute capability 9.0; opt-in with ``path="sm90"`` or ``LCPROF_RING_KERNEL=sm90``/``auto``).
"""

from __future__ import annotations

__all__ = ["striped_block_attention", "is_available", "load", "block_attention_reference"]


def striped_block_attention(q, k, v, **kwargs):
    """See :func:`lcprof.kernels.striped_attn.striped_block_attention`."""
    from .striped_attn import striped_block_attention as _fn

    return _fn(q, k, v, **kwargs)


def is_available() -> tuple[bool, str]:
    """See :func:`lcprof.kernels.striped_attn.is_available`."""
    from .striped_attn import is_available as _fn

    return _fn()


def load():
    """See :func:`lcprof.kernels.striped_attn.load`."""
    from .striped_attn import load as _fn

    return _fn()


def block_attention_reference(q, k, v, **kwargs):
    """See :func:`lcprof.kernels.reference.block_attention_reference`."""
    from .reference import block_attention_reference as _fn

    return _fn(q, k, v, **kwargs)
